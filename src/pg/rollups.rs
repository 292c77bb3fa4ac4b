//! The rollups of watched tables, kept in shared memory (`engine::rollup_store`).
//!
//! The monitor sums this transaction's rows here, per table, minute and key, per subtransaction;
//! they are added to the shared rollups when it commits, and an abort (or a rolled-back savepoint)
//! forgets them. The readers, `cep.realtime_stats` and `cep.streaming_performance`, use the shared
//! figures when they are exact for the window asked, and read the table's rows otherwise: after a
//! restart, memory is exact from the first commit on, and `cep.rollup_rebuild` makes it exact
//! further back.

use std::cell::RefCell;

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::prelude::*;

use crate::engine::rollup::Rollup;
use crate::engine::rollup_store::{epoch_unlocked, region_size, Folder, Owner, StoreView, Totals, Window};
use crate::pg::shmem::Region;
use crate::pg::watched::Watch;

static RECORDS: GucSetting<i32> = GucSetting::<i32>::new(262_144);

static REGION: Region = Region::new(c"pg_cep_rollups", || region_size(records()), |base| {
    // SAFETY: the region was just created, with room for this many records.
    drop(unsafe { StoreView::new(base, records(), true) });
});

/// This transaction's rows of one table in one subtransaction.
struct Pending {
    owner: Owner,
    subxact: pg_sys::SubTransactionId,
    rollup: Rollup,
    /// The table's latest time when memory did not have it yet (see `StoreView::add`).
    latest: Option<i64>,
}

/// What `cep.rollup_rebuild` read, put in place at commit.
struct Load {
    owner: Owner,
    totals_from: i64,
    keys_from: i64,
    rollup: Rollup,
}

#[derive(Default)]
struct Local {
    pending: Vec<Pending>,
    loads: Vec<Load>,
}

thread_local! {
    static LOCAL: RefCell<Local> = RefCell::new(Local::default());
    /// The tables this backend found in memory, and at which epoch.
    static KNOWN: RefCell<(u64, Vec<Owner>)> = const { RefCell::new((u64::MAX, Vec::new())) };
    /// Scratch space of the readers, kept between calls.
    static FOLDER: RefCell<Folder> = RefCell::new(Folder::default());
}

fn records() -> usize {
    RECORDS.get().max(0) as usize
}

/// Called from `_PG_init`: the setting and the region exist only while the postmaster preloads us.
pub fn init() {
    if !unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        return;
    }
    GucRegistry::define_int_guc(
        c"cep.rollup_records",
        c"Per-key, per-minute records the shared rollups hold (about 45 bytes each; 0 turns them off).",
        c"Needs pg_cep in shared_preload_libraries; takes effect at server start. Without them, cep.realtime_stats reads the rows.",
        &RECORDS,
        0,
        100_000_000,
        GucContext::Postmaster,
        GucFlags::default(),
    );
    if RECORDS.get() > 0 {
        REGION.request();
    }
}

pub fn owner(watch: &Watch) -> Owner {
    Owner { database: unsafe { pg_sys::MyDatabaseId }.to_u32(), relid: watch.root.to_u32(), generation: watch.generation }
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
    let subxact = unsafe { pg_sys::GetCurrentSubTransactionId() };
    // The first commit after a start makes memory exact from the next minute, unless rows
    // committed before (stamped in the future) reach further: the table is asked, once.
    let latest = if known(owner) { None } else { latest_time(watch) };
    LOCAL.with(|l| {
        let pending = &mut l.borrow_mut().pending;
        let i = match pending.iter().position(|p| p.owner == owner && p.subxact == subxact) {
            Some(i) => i,
            None => {
                pending.push(Pending { owner, subxact, rollup: Rollup::default(), latest: None });
                pending.len() - 1
            }
        };
        pending[i].latest = pending[i].latest.max(latest);
        for (at, key, amount) in rows {
            pending[i].rollup.add(at, key, amount);
        }
    });
}

/// Whether memory has the table. Asked under the lock only when its epoch moved since this
/// backend last found it there: not on every statement.
fn known(owner: Owner) -> bool {
    // SAFETY: the region holds a store; the epoch is an atomic.
    let Some(epoch) = REGION.unlocked(|base| unsafe { epoch_unlocked(base) }) else { return true };
    if KNOWN.with(|k| k.borrow().0 == epoch && k.borrow().1.contains(&owner)) {
        return true;
    }
    let Some((has, epoch)) = REGION.locked_shared(|base| {
        let store = view(base);
        (store.has(owner), store.epoch())
    }) else {
        return true;
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
    has
}

/// The table's latest time (this transaction's rows included, which is harmless: later only).
fn latest_time(watch: &Watch) -> Option<i64> {
    let sql = watch.latest_time_sql.as_deref()?;
    match Spi::get_one::<pgrx::datum::TimestampWithTimeZone>(sql) {
        Ok(t) => t.map(i64::from),
        // An unreadable table is not trusted beyond what it shows: never exact.
        Err(_) => Some(i64::MAX - 2 * crate::engine::rollup::MINUTE),
    }
}

/// Replaces a table's rollups, at commit, with what was read from its rows (totals from
/// `totals_from` on, per key from `keys_from` on). The rows this transaction added before are in
/// what was read.
pub fn load(watch: &Watch, totals_from: i64, keys_from: i64, rollup: Rollup) {
    let owner = owner(watch);
    LOCAL.with(|l| {
        let mut l = l.borrow_mut();
        l.pending.retain(|p| p.owner != owner);
        l.loads.push(Load { owner, totals_from, keys_from, rollup });
    });
}

/// Drops a table's shared rollups now (its mapping changed, or they were turned off or on).
pub fn forget(relid: pg_sys::Oid) {
    let database = unsafe { pg_sys::MyDatabaseId }.to_u32();
    REGION.locked(|base| view(base).forget(database, relid.to_u32()));
}

/// The table's totals, active keys and top keys from `since` on, when memory is exact for them.
pub fn window(owner: Owner, since: i64, top: usize) -> Option<Window> {
    let now = unsafe { pg_sys::GetCurrentTransactionStartTimestamp() };
    FOLDER.with(|f| REGION.locked_shared(|base| view(base).window(owner, since, now, top, &mut f.borrow_mut())).flatten())
}

pub fn totals(owner: Owner, since: i64) -> Option<Totals> {
    let now = unsafe { pg_sys::GetCurrentTransactionStartTimestamp() };
    REGION.locked_shared(|base| view(base).totals(owner, since, now)).flatten()
}

/// (tables, records, record capacity, key minutes dropped for room), `None` when off.
pub fn usage() -> Option<(u64, u64, u64, u64)> {
    REGION.locked_shared(|base| view(base).usage())
}

/// This module's part of `pg::xact`'s transaction callback.
pub fn on_xact(event: pg_sys::XactEvent::Type) {
    match event {
        pg_sys::XactEvent::XACT_EVENT_COMMIT => {
            let local = LOCAL.with(|l| std::mem::take(&mut *l.borrow_mut()));
            if local.pending.is_empty() && local.loads.is_empty() {
                return;
            }
            // Commit order is what readers see: the time is taken under the lock.
            REGION.locked(|base| {
                let mut store = view(base);
                let now = unsafe { pg_sys::GetCurrentTimestamp() };
                for l in &local.loads {
                    store.load(l.owner, now, l.totals_from, l.keys_from, &l.rollup);
                }
                for p in &local.pending {
                    store.add(p.owner, now, &p.rollup, p.latest);
                }
            });
        }
        pg_sys::XactEvent::XACT_EVENT_PREPARE => {
            // Whether it commits is decided later, elsewhere: its minutes are no longer exact.
            let local = LOCAL.with(|l| std::mem::take(&mut *l.borrow_mut()));
            REGION.locked(|base| {
                let mut store = view(base);
                for p in &local.pending {
                    if let Some(&last) = p.rollup.minutes.keys().next_back() {
                        store.unsure(p.owner, last);
                    }
                }
                for l in &local.loads {
                    store.forget(l.owner.database, l.owner.relid);
                }
            });
        }
        pg_sys::XactEvent::XACT_EVENT_ABORT => {
            LOCAL.with(|l| *l.borrow_mut() = Local::default());
        }
        _ => {}
    }
}

/// This module's part of `pg::xact`'s subtransaction callback.
pub fn on_subxact(event: pg_sys::SubXactEvent::Type, mine: pg_sys::SubTransactionId, parent: pg_sys::SubTransactionId) {
    match event {
        pg_sys::SubXactEvent::SUBXACT_EVENT_ABORT_SUB => {
            LOCAL.with(|l| l.borrow_mut().pending.retain(|p| p.subxact != mine));
        }
        pg_sys::SubXactEvent::SUBXACT_EVENT_COMMIT_SUB => {
            LOCAL.with(|l| {
                for p in l.borrow_mut().pending.iter_mut().filter(|p| p.subxact == mine) {
                    p.subxact = parent;
                }
            });
        }
        _ => {}
    }
}
