//! Shared copies of partial-match states (`engine::pattern::state_cache`), so the pattern
//! trigger reads a busy key's state from memory instead of `cep.pattern_state`. Needs pg_cep in
//! `shared_preload_libraries`; sized by `cep.pattern_state_copies`. Without it, every key's row
//! is read, as before.
//!
//! Every write of a state row goes through `touch` (in `pg::patterns::save_states`), under the
//! key's lock; at commit, still holding the locks, this backend updates the copies.

use pgrx::prelude::*;

use crate::engine::pattern::state_cache::{region_size, Outcome, Owner, Slots, Touched};
use crate::pg::shmem::Region;
use crate::pg::xact::{xact_local, XactBuffer};

static REGION: Region = Region::new(
    c"pg_cep_pattern_states",
    || region_size(slots()),
    |base| {
        // SAFETY: the region was just created, with room for this many copies.
        let _ = unsafe { Slots::new(base, slots(), true) };
    },
);

xact_local! {
    static TOUCHED: Touched = Touched::default();
}

/// Called from `_PG_init`: shared memory, only while the postmaster preloads us.
pub fn init() {
    // SAFETY: plain read of a postmaster global, set while libraries are preloaded.
    if !unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        return;
    }
    if crate::gucs::pattern_state_copies() > 0 {
        REGION.request();
    }
}

fn slots() -> usize {
    crate::gucs::pattern_state_copies().max(0) as usize
}

fn enabled() -> bool {
    REGION.exists()
}

/// Runs `f` on the copies under their lock, released however `f` ends.
fn with_slots<R>(f: impl FnOnce(&mut Slots) -> R) -> Option<R> {
    // SAFETY: the region holds this many copies, and the lock is ours while `f` runs.
    REGION.locked(|base| f(&mut unsafe { Slots::new(base, slots(), false) }))
}

/// A pattern's copies, named by database, pattern id and generation (see `LivePattern`).
#[derive(Clone, Copy)]
pub struct PatternId {
    pub id: i32,
    pub generation: u32,
}

fn owner(pattern: PatternId) -> Owner {
    // SAFETY: plain read of a backend global.
    Owner { database: unsafe { pg_sys::MyDatabaseId }.to_u32(), pattern: pattern.id, generation: pattern.generation }
}

/// Under READ COMMITTED each statement sees every committed row; with a transaction snapshot,
/// a read may be older than the row (and the copy).
fn read_committed() -> bool {
    // SAFETY: plain read of the transaction's isolation level.
    unsafe { pg_sys::XactIsoLevel == pg_sys::XACT_READ_COMMITTED as i32 }
}

/// The copy of the key's row text (`Some(None)`: no row), when there is one and this
/// transaction has not touched the key yet. The caller holds the key's lock.
pub fn get(pattern: PatternId, key: &str) -> Option<Option<String>> {
    if !enabled() || !read_committed() {
        return None;
    }
    let owner = owner(pattern);
    if TOUCHED.with(|t| t.contains(owner, key)) {
        return None;
    }
    with_slots(|s| s.get(&owner, key)).flatten()
}

/// What the key's row holds now in this transaction (`text`), and whether this call wrote it.
/// Every write of a state row must come here, under the key's lock.
pub fn touch(pattern: PatternId, key: &str, text: Option<&str>, wrote: bool) {
    if !enabled() {
        return;
    }
    // SAFETY: plain read of the current subtransaction's id.
    let subxact = unsafe { pg_sys::GetCurrentSubTransactionId() };
    let trusted = read_committed();
    TOUCHED.with_mut(|t| t.touch(owner(pattern), key, text.map(str::to_string), wrote, trusted, subxact));
}

/// A pattern's states were deleted without taking their keys' locks.
pub fn forget_pattern(pattern: i32) {
    // SAFETY: plain read of a backend global.
    with_slots(|s| s.drop_pattern(unsafe { pg_sys::MyDatabaseId }.to_u32(), pattern));
}

fn apply(outcomes: Vec<(Owner, String, Outcome)>) {
    if outcomes.is_empty() {
        return;
    }
    with_slots(|s| {
        for (owner, key, outcome) in outcomes {
            match outcome {
                Outcome::Put(text) => s.put(&owner, &key, text.as_deref()),
                Outcome::Drop => s.drop_copy(&owner, &key),
            }
        }
    });
}

/// The pattern states this transaction wrote: their copies become valid (or are dropped) when it ends.
pub struct TouchedStates;

impl XactBuffer for TouchedStates {
    fn pre_commit(&self) {
        // Nothing to write: the states themselves are rows of cep.pattern_state.
    }
    fn commit(&self) {
        // Still holding the keys' locks: no other session reads or writes them before this.
        apply(TOUCHED.with_mut(|t| t.commit()));
    }
    fn abort(&self) {
        TOUCHED.with_mut(|t| t.abort());
    }
    fn pre_prepare(&self) {
        // Nothing to write: the states themselves are rows of cep.pattern_state.
    }
    fn prepare(&self) {
        apply(TOUCHED.with_mut(|t| t.prepare()));
    }
    fn subxact_commit(&self, mine: pg_sys::SubTransactionId, parent: pg_sys::SubTransactionId) {
        TOUCHED.with_mut(|t| t.subxact_commit(mine, parent));
    }
    fn subxact_abort(&self, mine: pg_sys::SubTransactionId) {
        TOUCHED.with_mut(|t| t.subxact_abort(mine));
    }
}
