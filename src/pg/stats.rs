//! Monitor counters per watched table: in shared memory when pg_cep is in
//! `shared_preload_libraries` (so `cep.stats()` sees every session), else in this backend only.
//! Counters are not transactional: a rolled-back insert was still seen and still took time.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};

use pgrx::lwlock::PgLwLock;
use pgrx::pg_shmem_init;
use pgrx::prelude::*;
use pgrx::shmem::PGRXSharedMemory;

use crate::engine::counters::MonitorCounters;

/// How many watched tables the shared counters can follow, cluster-wide.
pub const SLOTS: usize = 512;

#[derive(Clone, Copy)]
pub struct Slot {
    database: u32,
    relid: u32,
    counters: MonitorCounters,
}

#[derive(Clone, Copy)]
pub struct Slots {
    slots: [Slot; SLOTS],
}

// SAFETY: plain integers (`Copy`, no pointers): the same bytes mean the same in every process.
unsafe impl PGRXSharedMemory for Slots {}

const EMPTY: Slot = Slot { database: 0, relid: 0, counters: MonitorCounters::ZERO };

// SAFETY: the name is pg_cep's own (prefixed `pg_cep_`) and used for no other lock.
static SHARED: PgLwLock<Slots> = unsafe { PgLwLock::new(c"pg_cep_monitor_stats") };
static SHARED_READY: AtomicBool = AtomicBool::new(false);

thread_local! {
    static LOCAL: RefCell<Vec<Slot>> = const { RefCell::new(Vec::new()) };
}

/// Called from `_PG_init`: reserves shared memory only while the postmaster preloads us.
pub fn init() {
    // SAFETY: plain read of a postmaster global, set while libraries are preloaded.
    if unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        pg_shmem_init!(SHARED = Slots { slots: [EMPTY; SLOTS] });
        SHARED_READY.store(true, Ordering::Relaxed);
    }
}

pub fn is_shared() -> bool {
    SHARED_READY.load(Ordering::Relaxed)
}

fn add_to(slots: &mut [Slot], database: u32, relid: u32, call: &MonitorCounters) -> bool {
    if let Some(s) = slots.iter_mut().find(|s| s.database == database && s.relid == relid) {
        s.counters.add(call);
        return true;
    }
    if let Some(s) = slots.iter_mut().find(|s| s.relid == 0) {
        *s = Slot { database, relid, counters: MonitorCounters::ZERO };
        s.counters.add(call);
        return true;
    }
    false
}

/// Adds one trigger call's counters to its table.
pub fn record(relid: pg_sys::Oid, call: &MonitorCounters) {
    // SAFETY: plain read of a backend global.
    let database = unsafe { pg_sys::MyDatabaseId }.to_u32();
    if is_shared() {
        let mut guard = SHARED.exclusive();
        if !add_to(&mut guard.slots, database, relid.to_u32(), call) {
            drop(guard);
            pgrx::warning!("pg_cep: all {SLOTS} monitor statistics slots are in use; cep.stats_reset() frees them");
        }
    } else {
        LOCAL.with(|l| {
            let mut l = l.borrow_mut();
            if !add_to(&mut l, database, relid.to_u32(), call) {
                l.push(Slot { database, relid: relid.to_u32(), counters: *call });
            }
        });
    }
}

/// Counters of this database's tables.
pub fn snapshot() -> Vec<(pg_sys::Oid, MonitorCounters)> {
    // SAFETY: plain read of a backend global.
    let database = unsafe { pg_sys::MyDatabaseId }.to_u32();
    let pick = |slots: &[Slot]| -> Vec<(pg_sys::Oid, MonitorCounters)> {
        slots.iter().filter(|s| s.relid != 0 && s.database == database).map(|s| (pg_sys::Oid::from(s.relid), s.counters)).collect()
    };
    if is_shared() {
        pick(&SHARED.share().slots)
    } else {
        LOCAL.with(|l| pick(&l.borrow()))
    }
}

/// Forgets this database's counters.
pub fn reset() {
    // SAFETY: plain read of a backend global.
    let database = unsafe { pg_sys::MyDatabaseId }.to_u32();
    let clear = |slots: &mut [Slot]| {
        for s in slots.iter_mut().filter(|s| s.database == database) {
            *s = EMPTY;
        }
    };
    if is_shared() {
        clear(&mut SHARED.exclusive().slots);
    } else {
        LOCAL.with(|l| l.borrow_mut().retain(|s| s.database != database));
    }
}
