//! The rollups of watched tables, kept in shared memory (`engine::rollup_store`).
//!
//! The monitor sums this transaction's rows here, per table, minute and key, per subtransaction;
//! they are added to the shared rollups when it commits, and an abort (or a rolled-back savepoint)
//! forgets them. The readers, `cep.realtime_stats` and `cep.streaming_performance`, use the shared
//! figures when they are exact for the window asked, and read the table's rows otherwise: after a
//! restart, memory is exact from the first commit on, and `cep.rollup_rebuild` makes it exact
//! further back.

use std::cell::RefCell;

use pgrx::prelude::*;

use crate::engine::rollup::Rollup;
use crate::engine::rollup_store::{epoch_unlocked, region_size, Anchor, Folder, Owner, StoreView, Totals, Window};
use crate::pg::shmem::Region;
use crate::pg::watched::Watch;
use crate::pg::xact::{xact_local, XactBuffer};

static REGION: Region = Region::new(
    c"pg_cep_rollups",
    || region_size(records()),
    |base| {
        // SAFETY: the region was just created, with room for this many records.
        let _ = unsafe { StoreView::new(base, records(), true) };
    },
);

/// This transaction's rows of one table in one subtransaction.
struct Pending {
    owner: Owner,
    subxact: pg_sys::SubTransactionId,
    rollup: Rollup,
    /// What the table held before memory had it, when this transaction asked (see `Anchor`).
    anchor: Option<Anchor>,
}

/// What `cep.rollup_rebuild` read, put in place at commit.
struct Load {
    subxact: pg_sys::SubTransactionId,
    owner: Owner,
    totals_from: i64,
    keys_from: i64,
    rollup: Rollup,
}

#[derive(Default)]
struct Local {
    pending: Vec<Pending>,
    loads: Vec<Load>,
    /// Tables whose memory must start over at commit: a rebuild in a savepoint that rolled back
    /// took this transaction's rows out of `pending` for a load that will not happen.
    forget: Vec<Owner>,
}

xact_local! {
    static LOCAL: Local = Local::default();
}

thread_local! {
    /// The tables this backend found in memory, and at which epoch.
    static KNOWN: RefCell<(u64, Vec<Owner>)> = const { RefCell::new((u64::MAX, Vec::new())) };
    /// Scratch space of the readers, kept between calls.
    static FOLDER: RefCell<Folder> = RefCell::new(Folder::default());
}

fn records() -> usize {
    crate::gucs::rollup_records().max(0) as usize
}

/// Called from `_PG_init`: the region exists only while the postmaster preloads us.
pub fn init() {
    // SAFETY: plain read of a postmaster global, set while libraries are preloaded.
    if !unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        return;
    }
    if crate::gucs::rollup_records() > 0 {
        REGION.request();
    }
}

pub fn owner(watch: &Watch) -> Owner {
    Owner {
        // SAFETY: plain read of a backend global.
        database: unsafe { pg_sys::MyDatabaseId }.to_u32(),
        relid: watch.root.to_u32(),
        generation: watch.generation,
        mapping: watch.mapping_hash,
    }
}

fn view(base: *mut u8) -> StoreView<'static> {
    // SAFETY: the region holds a store of this size, and the caller holds its lock.
    unsafe { StoreView::new(base, records(), false) }
}

/// Adds rows (time, key, amount) to this transaction's rollups of a watched table.
pub fn add<'r>(watch: &Watch, rows: impl Iterator<Item = (i64, &'r str, Option<f64>)>) {
    if !REGION.exists() {
        return;
    }
    let owner = owner(watch);
    // SAFETY: plain read of the current subtransaction's id.
    let subxact = unsafe { pg_sys::GetCurrentSubTransactionId() };
    // Memory starts with the first commit after a start; rows committed before may be stamped
    // later than that (in the future): the table is asked, until memory has it.
    let anchor = match known(owner) {
        (true, _) => None,
        (false, epoch) => latest_time(watch).map(|latest| Anchor { latest, epoch }),
    };
    LOCAL.with_mut(|l| {
        let pending = &mut l.pending;
        let i = match pending.iter().position(|p| p.owner == owner && p.subxact == subxact) {
            Some(i) => i,
            None => {
                pending.push(Pending { owner, subxact, rollup: Rollup::default(), anchor: None });
                pending.len() - 1
            }
        };
        if anchor.is_some() {
            pending[i].anchor = anchor;
        }
        for (at, key, amount) in rows {
            pending[i].rollup.add(at, key, amount);
        }
    });
}

/// Whether memory has the table anchored, and the store's epoch. Asked under the lock only
/// when the epoch moved since this backend last found the table there: not on every statement.
fn known(owner: Owner) -> (bool, u64) {
    // SAFETY: the region holds a store; the epoch is an atomic.
    let Some(epoch) = REGION.unlocked(|base| unsafe { epoch_unlocked(base) }) else { return (true, 0) };
    if KNOWN.with(|k| k.borrow().0 == epoch && k.borrow().1.contains(&owner)) {
        return (true, epoch);
    }
    let Some((has, epoch)) = REGION.locked_shared(|base| {
        let store = view(base);
        (store.has(owner), store.epoch())
    }) else {
        return (true, 0);
    };
    KNOWN.with(|k| {
        let mut k = k.borrow_mut();
        if k.0 != epoch {
            *k = (epoch, Vec::new());
        }
        if has && !k.1.contains(&owner) {
            k.1.push(owner);
        }
    });
    (has, epoch)
}

/// The table's latest time (`i64::MIN` when it has no rows; this transaction's rows included,
/// which is harmless: later only). Only under READ COMMITTED, where the query's snapshot is
/// taken now: an older one could miss rows committed before memory had the table.
fn latest_time(watch: &Watch) -> Option<i64> {
    // SAFETY: plain read of the transaction's isolation level.
    if unsafe { pg_sys::XactIsoLevel } != pg_sys::XACT_READ_COMMITTED as i32 {
        return None;
    }
    // A session that may not read the table, or reads it through row security, cannot tell:
    // the INSERT goes on, and a session that can will anchor memory.
    // SAFETY: catalog lookups on a relation that exists (its trigger is running).
    let readable = unsafe {
        pg_sys::pg_class_aclcheck(watch.root, pg_sys::GetUserId(), pg_sys::ACL_SELECT as pg_sys::AclMode) == pg_sys::AclResult::ACLCHECK_OK
            && pg_sys::check_enable_rls(watch.root, pg_sys::InvalidOid, true) != pg_sys::CheckEnableRlsResult::RLS_ENABLED as i32
    };
    if !readable {
        return None;
    }
    let sql = watch.latest_time_sql.as_deref()?;
    Spi::get_one::<pgrx::datum::TimestampWithTimeZone>(sql).ok().map(|t| t.map_or(i64::MIN, i64::from))
}

/// Replaces a table's rollups, at commit, with what was read from its rows (totals from
/// `totals_from` on, per key from `keys_from` on). The rows this transaction added before are in
/// what was read.
pub fn load(watch: &Watch, totals_from: i64, keys_from: i64, rollup: Rollup) {
    let owner = owner(watch);
    // SAFETY: plain read of the current subtransaction's id.
    let subxact = unsafe { pg_sys::GetCurrentSubTransactionId() };
    LOCAL.with_mut(|l| {
        l.pending.retain(|p| p.owner != owner);
        l.loads.push(Load { subxact, owner, totals_from, keys_from, rollup });
    });
}

/// Drops a table's shared rollups now (its mapping changed, or they were turned off or on).
pub fn forget(relid: pg_sys::Oid) {
    // SAFETY: plain read of a backend global.
    let database = unsafe { pg_sys::MyDatabaseId }.to_u32();
    REGION.locked(|base| view(base).forget(database, relid.to_u32()));
}

/// After `COMMIT PREPARED` of a transaction prepared before the server started (`pg::two_phase`):
/// its minutes were never marked unsure (that was in shared memory, lost with the restart), and a
/// rebuild since may lack its rows. The database's rollups go; answers come from the rows.
pub fn forget_database() {
    // SAFETY: plain read of a backend global.
    let database = unsafe { pg_sys::MyDatabaseId }.to_u32();
    REGION.locked(|base| view(base).forget_database(database));
}

/// The table's totals, active keys and top keys from `since` on, when memory is exact for them.
pub fn window(owner: Owner, since: i64, top: usize) -> Option<Window> {
    let now = crate::pg::time::now();
    FOLDER.with(|f| REGION.locked_shared(|base| view(base).window(owner, since, now, top, &mut f.borrow_mut())).flatten())
}

pub fn totals(owner: Owner, since: i64) -> Option<Totals> {
    let now = crate::pg::time::now();
    REGION.locked_shared(|base| view(base).totals(owner, since, now)).flatten()
}

/// (tables, records, record capacity, key minutes dropped for room), `None` when off.
pub fn usage() -> Option<(u64, u64, u64, u64)> {
    REGION.locked_shared(|base| view(base).usage())
}

/// This transaction's rows of tables with rollups: into shared memory once it commits.
pub struct PendingRollups;

impl XactBuffer for PendingRollups {
    fn pre_commit(&self) {
        // Nothing to write: memory takes the rows after commit, in commit order.
    }
    fn commit(&self) {
        let local = LOCAL.with_mut(std::mem::take);
        if local.pending.is_empty() && local.loads.is_empty() && local.forget.is_empty() {
            return;
        }
        // Commit order is what readers see: the time is taken under the lock.
        REGION.locked(|base| {
            let mut store = view(base);
            let now = crate::pg::time::wall_clock();
            for o in &local.forget {
                store.forget(o.database, o.relid);
            }
            for l in &local.loads {
                store.load(l.owner, now, l.totals_from, l.keys_from, &l.rollup);
            }
            for p in &local.pending {
                store.add(p.owner, now, &p.rollup, p.anchor);
            }
        });
    }
    fn abort(&self) {
        LOCAL.with_mut(|l| *l = Local::default());
    }
    fn pre_prepare(&self) {
        // Nothing to write: what PREPARE leaves undecided is marked unsure when it is done.
    }
    fn prepare(&self) {
        // Whether it commits is decided later, elsewhere: its minutes are no longer exact.
        let local = LOCAL.with_mut(std::mem::take);
        REGION.locked(|base| {
            let mut store = view(base);
            let now = crate::pg::time::wall_clock();
            for l in &local.loads {
                store.forget(l.owner.database, l.owner.relid);
            }
            for p in &local.pending {
                if let Some(&last) = p.rollup.minutes.keys().next_back() {
                    store.unsure(p.owner, now, last);
                }
            }
        });
    }
    fn subxact_commit(&self, mine: pg_sys::SubTransactionId, parent: pg_sys::SubTransactionId) {
        LOCAL.with_mut(|l| {
            for p in l.pending.iter_mut().filter(|p| p.subxact == mine) {
                p.subxact = parent;
            }
            for x in l.loads.iter_mut().filter(|x| x.subxact == mine) {
                x.subxact = parent;
            }
        });
    }
    fn subxact_abort(&self, mine: pg_sys::SubTransactionId) {
        LOCAL.with_mut(|l| {
            l.pending.retain(|p| p.subxact != mine);
            let aborted: Vec<Owner> = l.loads.iter().filter(|x| x.subxact == mine).map(|x| x.owner).collect();
            l.loads.retain(|x| x.subxact != mine);
            l.forget.extend(aborted);
        });
    }
}
