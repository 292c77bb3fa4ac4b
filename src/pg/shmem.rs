//! Named shared-memory regions, each with one LWLock, requested while the postmaster preloads
//! pg_cep (the window cache, the pattern-state copies, the rollups). One pair of hooks serves them all.

use std::ffi::CStr;
use std::sync::atomic::{AtomicPtr, Ordering};

use pgrx::prelude::*;

pub struct Region {
    name: &'static CStr,
    size: fn() -> usize,
    /// Sets up the region the first time it is created (not when a backend attaches to it).
    init: unsafe fn(*mut u8),
    base: AtomicPtr<u8>,
    lock: AtomicPtr<pg_sys::LWLock>,
}

const MAX_REGIONS: usize = 6;
static REGIONS: [AtomicPtr<Region>; MAX_REGIONS] = [const { AtomicPtr::new(std::ptr::null_mut()) }; MAX_REGIONS];
static mut PREV_REQUEST: pg_sys::shmem_request_hook_type = None;
static mut PREV_STARTUP: pg_sys::shmem_startup_hook_type = None;

impl Region {
    pub const fn new(name: &'static CStr, size: fn() -> usize, init: unsafe fn(*mut u8)) -> Region {
        Region { name, size, init, base: AtomicPtr::new(std::ptr::null_mut()), lock: AtomicPtr::new(std::ptr::null_mut()) }
    }

    /// From `_PG_init`, while preloading: the region is created at server start.
    pub fn request(&'static self) {
        let first = REGIONS[0].load(Ordering::Acquire).is_null();
        let slot = REGIONS.iter().find(|r| r.load(Ordering::Acquire).is_null()).expect("pg_cep requests at most MAX_REGIONS regions");
        slot.store(self as *const Region as *mut Region, Ordering::Release);
        if first {
            // SAFETY: from `_PG_init`, while the postmaster preloads us and runs no other thread: the hooks are chained as
            // Postgres expects, the previous ones kept to be called first.
            unsafe {
                PREV_REQUEST = pg_sys::shmem_request_hook;
                pg_sys::shmem_request_hook = Some(request_shmem);
                PREV_STARTUP = pg_sys::shmem_startup_hook;
                pg_sys::shmem_startup_hook = Some(startup_shmem);
            }
        }
    }

    /// Whether this backend has the region (pg_cep was preloaded with it on).
    pub fn exists(&self) -> bool {
        !self.base.load(Ordering::Acquire).is_null()
    }

    /// Runs `f` on the region under its lock, released however `f` ends.
    pub fn locked<R>(&self, f: impl FnOnce(*mut u8) -> R) -> Option<R> {
        self.locked_in(pg_sys::LWLockMode::LW_EXCLUSIVE, f)
    }

    /// Runs `f` under the lock in shared mode: `f` must only read.
    pub fn locked_shared<R>(&self, f: impl FnOnce(*mut u8) -> R) -> Option<R> {
        self.locked_in(pg_sys::LWLockMode::LW_SHARED, f)
    }

    /// Runs `f` on the region without its lock: only for atomics, or values a stale read
    /// cannot make wrong.
    pub fn unlocked<R>(&self, f: impl FnOnce(*mut u8) -> R) -> Option<R> {
        let base = self.base.load(Ordering::Acquire);
        (!base.is_null()).then(|| f(base))
    }

    fn locked_in<R>(&self, mode: pg_sys::LWLockMode::Type, f: impl FnOnce(*mut u8) -> R) -> Option<R> {
        let base = self.base.load(Ordering::Acquire);
        if base.is_null() {
            return None;
        }
        struct Release(*mut pg_sys::LWLock);
        impl Drop for Release {
            fn drop(&mut self) {
                // SAFETY: the lock `locked_in` acquired just before making this guard.
                unsafe { pg_sys::LWLockRelease(self.0) };
            }
        }
        let lock = self.lock.load(Ordering::Acquire);
        // SAFETY: the region's own LWLock in shared memory (set with `base` at startup); released by the guard however `f` ends.
        unsafe {
            acquire(lock, mode);
            let _release = Release(lock);
            Some(f(base))
        }
    }
}

/// How long a backend spins for a region's lock before it sleeps on it.
const SPIN_FOR: std::time::Duration = std::time::Duration::from_micros(20);

/// Takes the lock, spinning briefly first. The regions' locks are held for a microsecond or two
/// (a window read, a commit's events), while an LWLock that is taken sleeps at once: a futex wait,
/// a wake-up from the holder and two context switches, several times the wait itself. Under a
/// storm from two sessions the window cache's lock was contended on about 2% of INSERTs, and
/// sleeping and waking for it cost more CPU per INSERT than reading the window did. Spinning for
/// up to 5 µs cut futex calls per INSERT from about 0.19 to 0.07, up to 20 µs to 0.03, a bare
/// table's level (the rest were commits waiting for a holder that was descheduled); from 8
/// sessions on 2 cores the longer spin cost no throughput that could be seen.
///
/// # Safety
/// `lock` must be an initialised LWLock in shared memory.
unsafe fn acquire(lock: *mut pg_sys::LWLock, mode: pg_sys::LWLockMode::Type) {
    // SAFETY: the caller's promise: an initialised LWLock.
    if unsafe { pg_sys::LWLockConditionalAcquire(lock, mode) } {
        return;
    }
    let started = std::time::Instant::now();
    while started.elapsed() < SPIN_FOR {
        for _ in 0..16 {
            std::hint::spin_loop();
        }
        // SAFETY: as above.
        if unsafe { pg_sys::LWLockConditionalAcquire(lock, mode) } {
            return;
        }
    }
    // SAFETY: as above.
    unsafe { pg_sys::LWLockAcquire(lock, mode) };
}

fn regions() -> impl Iterator<Item = &'static Region> {
    // SAFETY: the slots hold only `&'static Region`s stored by `request`.
    REGIONS.iter().map(|r| r.load(Ordering::Acquire)).take_while(|r| !r.is_null()).map(|r| unsafe { &*r })
}

#[pg_guard]
unsafe extern "C-unwind" fn request_shmem() {
    if let Some(prev) = PREV_REQUEST {
        prev();
    }
    for r in regions() {
        pg_sys::RequestAddinShmemSpace((r.size)() + 64);
        pg_sys::RequestNamedLWLockTranche(r.name.as_ptr(), 1);
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn startup_shmem() {
    if let Some(prev) = PREV_STARTUP {
        prev();
    }
    // AddinShmemInitLock is MainLWLockArray[21], as pgrx's own shared memory uses it.
    let init_lock = &raw mut (*pg_sys::MainLWLockArray.add(21)).lock;
    pg_sys::LWLockAcquire(init_lock, pg_sys::LWLockMode::LW_EXCLUSIVE);
    for r in regions() {
        let mut found = false;
        let base = pg_sys::ShmemInitStruct(r.name.as_ptr(), (r.size)() + 64, &mut found) as *mut u8;
        let aligned = base.add(base.align_offset(8));
        if !found {
            (r.init)(aligned);
        }
        r.lock.store(&raw mut (*pg_sys::GetNamedLWLockTranche(r.name.as_ptr())).lock, Ordering::Release);
        r.base.store(aligned, Ordering::Release);
    }
    pg_sys::LWLockRelease(init_lock);
}
