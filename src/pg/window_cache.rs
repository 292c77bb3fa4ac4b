//! The window cache in shared memory, and this backend's uncommitted events.
//!
//! With `shared_preload_libraries = 'pg_cep'`, scoring reads a key's committed events from
//! shared memory instead of querying the table; a miss loads the key once. The events this
//! transaction inserted are kept here, per (sub)transaction, and added to the shared entries when
//! it commits; an abort forgets them. A relation whose rows this transaction updated or deleted, or
//! whose definition changed, bypasses the cache and is dropped from it at commit. See
//! `engine::window_cache` for the rules that keep concurrent loaders and committers exact.

use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;

use crate::engine::evaluate::WindowStats;
use crate::engine::window::window_from;
use crate::engine::window_cache::{key_hash, location_hash, region_size, stats_from_events, CacheView, CachedEvent, KeyId, KeyMap};
use crate::error::CepResult;
use crate::pg::shmem::Region;
use crate::pg::watched::Watch;
use crate::pg::xact::{xact_local, XactBuffer};

/// One transaction to score: its key, amount, location and time.
pub struct Event<'a> {
    pub key: &'a str,
    pub amount: Option<f64>,
    pub location: Option<&'a str>,
    pub at: pgrx::pg_sys::TimestampTz,
}

static REGION: Region = Region::new(
    c"pg_cep_window_cache",
    || {
        let (keys, events) = sizes();
        region_size(keys, events)
    },
    |base| {
        let (keys, events) = sizes();
        // SAFETY: the region was just created, with room for these sizes.
        let _ = unsafe { CacheView::new(base, keys, events, true) };
    },
);

struct Pending {
    event: CachedEvent,
    subxact: pg_sys::SubTransactionId,
}

#[derive(Default)]
struct Local {
    /// This transaction's rows per key, so a 1,000-row statement looks up each key directly.
    pending: KeyMap<Vec<Pending>>,
    /// Relations whose rows this transaction updated, deleted or truncated.
    dirty: Vec<u32>,
}

xact_local! {
    static LOCAL: Local = Local::default();
}

fn sizes() -> (usize, usize) {
    // SAFETY: read once the server's settings are loaded (shared_preload_libraries comes after).
    let shared_buffers = unsafe { pg_sys::NBuffers } as u64 * pg_sys::BLCKSZ as u64;
    let (keys, events) = crate::engine::window_cache::auto_size(shared_buffers);
    let pick = |set: i32, auto: usize| if set < 0 { auto } else { set as usize };
    (pick(crate::gucs::window_cache_keys(), keys), pick(crate::gucs::window_cache_events(), events))
}

/// Called from `_PG_init`: settings always, shared memory only while the postmaster preloads us.
pub fn init() {
    // A watched table whose definition changes (a partition dropped or detached) leaves the cache.
    crate::pg::cache::on_watched_table_change(invalidate);
    // Shared memory can only be asked for while the postmaster preloads us.
    // SAFETY: plain read of a postmaster global, set while libraries are preloaded.
    if !unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        return;
    }
    let (keys, events) = sizes();
    if keys > 0 {
        REGION.request();
        pgrx::log!(
            "pg_cep: window cache of {keys} keys and {events} events ({} MB of shared memory); set cep.window_cache_keys and cep.window_cache_events to change it",
            region_size(keys, events) >> 20
        );
    }
}

pub fn enabled() -> bool {
    REGION.exists()
}

/// Runs `f` on the cache under its lock, released however `f` ends.
fn with_cache<R>(f: impl FnOnce(&mut CacheView) -> R) -> Option<R> {
    let (keys, events) = sizes();
    // SAFETY: the region holds a cache of these sizes, and the lock is ours while `f` runs.
    REGION.locked(|base| f(&mut unsafe { CacheView::new(base, keys, events, false) }))
}

fn database() -> u32 {
    // SAFETY: plain read of a backend global.
    unsafe { pg_sys::MyDatabaseId }.to_u32()
}

fn key_id(root: pg_sys::Oid, key: &str) -> KeyId {
    KeyId { database: database(), relid: root.to_u32(), hash: key_hash(key) }
}

fn cached_event(e: &Event, xid: u32) -> CachedEvent {
    CachedEvent { t: e.at, amount: e.amount.unwrap_or(f64::NAN), loc: location_hash(e.location), xid }
}

/// Records a row this transaction stored (or is about to store) in a watched table.
pub fn remember(watch: &Watch, event: &Event) {
    if !enabled() {
        return;
    }
    // SAFETY: inside the writing transaction: its xid, assigned now if it has none (it stores rows anyway).
    let xid = unsafe { pg_sys::GetCurrentTransactionId() };
    // SAFETY: plain read of the current subtransaction's id.
    let subxact = unsafe { pg_sys::GetCurrentSubTransactionId() };
    let p = Pending { event: cached_event(event, u32::from(xid)), subxact };
    LOCAL.with_mut(|l| l.pending.entry(key_id(watch.root, event.key)).or_default().push(p));
}

/// Marks a watched relation as changed by UPDATE, DELETE or TRUNCATE in this transaction.
pub fn mark_dirty(relid: pg_sys::Oid) {
    if enabled() {
        LOCAL.with_mut(|l| {
            if !l.dirty.contains(&relid.to_u32()) {
                l.dirty.push(relid.to_u32());
            }
        });
    }
}

/// (keys, events, hits, misses, refused loads), or `None` when the cache is off.
pub fn usage() -> Option<(u64, u64, u64, u64, u64)> {
    with_cache(|c| {
        let (keys, events) = c.usage();
        let h = c.header();
        (keys, events, h.hits, h.misses, h.refused)
    })
}

/// Drops a relation from the cache now (its definition changed).
pub fn invalidate(relid: pg_sys::Oid) {
    let database = database();
    with_cache(|c| c.invalidate_relation(database, relid.to_u32()));
}

/// Window stats of one statement's rows (or one row) from the cache, under one lock per
/// `LOCK_BATCH` rows; a key that misses is loaded from the table once. `None` for a row the cache
/// cannot answer (turned off, relation changed in this transaction, or the key's window does
/// not fit): the caller reads it with SQL.
pub fn window_stats(watch: &Watch, events: &[Event]) -> CepResult<Vec<Option<Vec<WindowStats>>>> {
    const LOCK_BATCH: usize = 64;
    let usable = enabled() && !LOCAL.with(|l| l.dirty.contains(&watch.root.to_u32()));
    let (Some(&longest), true) = (watch.plan.windows.first(), usable) else { return Ok(vec![None; events.len()]) };
    let mut out = Vec::with_capacity(events.len());
    // Keys loaded by this call, with how far back: later rows of the same key reuse them.
    let mut loaded: KeyMap<(i64, Vec<CachedEvent>)> = KeyMap::default();
    for part in events.chunks(LOCK_BATCH) {
        // This transaction's own rows of each key; they are not in the shared entries yet.
        let asked: Vec<(KeyId, Vec<CachedEvent>)> = LOCAL.with(|local| {
            part.iter()
                .map(|e| {
                    let id = key_id(watch.root, e.key);
                    (id, local.pending.get(&id).map(|v| v.iter().map(|p| p.event).collect()).unwrap_or_default())
                })
                .collect()
        });
        let found = with_cache(|c| {
            // A prepared transaction's rows of this table may count any moment now: ask the table.
            if c.held(database(), watch.root.to_u32(), running) {
                return None;
            }
            Some(
                asked
                    .iter()
                    .zip(part)
                    .map(|((id, own), e)| c.window_stats(id, window_from(e.at, longest), &watch.plan, e.at, location_hash(e.location), own))
                    .collect(),
            )
        })
        .flatten()
        .unwrap_or_else(|| vec![None; part.len()]);
        for (((id, own), e), stats) in asked.into_iter().zip(part).zip(found) {
            if stats.is_some() {
                out.push(stats);
                continue;
            }
            let need_from = window_from(e.at, longest);
            if loaded.get(&id).is_none_or(|(from, _)| *from > need_from) {
                match load(watch, e.key, id, need_from)? {
                    Some(committed) => loaded.insert(id, (need_from, committed)),
                    None => loaded.remove(&id),
                };
            }
            out.push(loaded.get(&id).map(|(_, committed)| {
                let mut all = committed.clone();
                all.extend(own);
                stats_from_events(&all, &watch.plan, e.at, location_hash(e.location))
            }));
        }
    }
    Ok(out)
}

/// After `COMMIT PREPARED`: loads under way read the table without the transaction's rows; a
/// transaction prepared before the server started also takes its database's keys with it.
pub fn prepared_committed(before_start: bool) {
    let database = database();
    with_cache(|c| c.prepared_committed(before_start.then_some(database)));
}

/// Reads a key's committed rows from `need_from` on, and caches them unless a commit raced.
fn load(watch: &Watch, key: &str, id: KeyId, need_from: i64) -> CepResult<Option<Vec<CachedEvent>>> {
    let Some(query) = watch.cache_load.as_ref() else { return Ok(None) };
    let Some(version) = with_cache(|c| c.version(&id)) else { return Ok(None) };
    let from = TimestampWithTimeZone::try_from(need_from).ok();
    let mut events = crate::pg::privileges::as_table_owner(watch.owner, || {
        Spi::connect(|client| -> CepResult<Vec<CachedEvent>> {
            let mut out = Vec::new();
            for r in client.select(query, None, &[key.into(), from.into()])? {
                let xid: i64 = r.get(4)?.unwrap_or(0);
                // This transaction's own rows are not committed: they come from the pending list.
                // SAFETY: inside a transaction: compares an xid with this transaction's own.
                if unsafe { pg_sys::TransactionIdIsCurrentTransactionId(pg_sys::TransactionId::from(xid as u32)) } {
                    continue;
                }
                let Some(t) = r.get::<TimestampWithTimeZone>(1)? else { continue };
                let location: Option<String> = r.get(3)?;
                out.push(CachedEvent {
                    t: t.into(),
                    amount: r.get::<f64>(2)?.unwrap_or(f64::NAN),
                    loc: location_hash(location.as_deref()),
                    xid: xid as u32,
                });
            }
            Ok(out)
        })
    })?;
    events.sort_by_key(|e| e.t);
    with_cache(|c| c.insert_loaded(id, need_from, &events, version));
    Ok(Some(events))
}

/// Fills the cache with every key's rows in the watch's longest window; returns the keys cached.
pub fn warm(watch: &Watch) -> CepResult<i64> {
    let (Some(sql), Some(&longest)) = (watch.cache_warm_sql.as_deref(), watch.plan.windows.first()) else { return Ok(0) };
    let Some(versions) = with_cache(|c| c.versions()) else { return Ok(0) };
    let now = crate::pg::time::now();
    let from = window_from(now, longest);
    let mut keys: Vec<(String, Vec<CachedEvent>)> = Vec::new();
    Spi::connect(|client| -> CepResult<()> {
        for r in client.select(sql, None, &[TimestampWithTimeZone::try_from(from).ok().into()])? {
            let xid: i64 = r.get(5)?.unwrap_or(0);
            // SAFETY: inside a transaction: compares an xid with this transaction's own.
            if unsafe { pg_sys::TransactionIdIsCurrentTransactionId(pg_sys::TransactionId::from(xid as u32)) } {
                continue;
            }
            let (Some(key), Some(t)) = (r.get::<String>(1)?, r.get::<TimestampWithTimeZone>(2)?) else { continue };
            let location: Option<String> = r.get(4)?;
            let event =
                CachedEvent { t: t.into(), amount: r.get::<f64>(3)?.unwrap_or(f64::NAN), loc: location_hash(location.as_deref()), xid: xid as u32 };
            match keys.last_mut() {
                Some((k, events)) if *k == key => events.push(event),
                _ => keys.push((key, vec![event])),
            }
        }
        Ok(())
    })?;
    let ids: Vec<(KeyId, Vec<CachedEvent>)> = keys.into_iter().map(|(k, e)| (key_id(watch.root, &k), e)).collect();
    let cached = with_cache(|c| ids.iter().filter(|(id, events)| c.insert_loaded(*id, from, events, CacheView::version_in(&versions, id))).count());
    Ok(cached.unwrap_or(0) as i64)
}

/// This transaction's rows of watched tables: into the shared cache once it commits.
pub struct PendingEvents;

impl XactBuffer for PendingEvents {
    fn pre_commit(&self) {
        // Nothing to write: the rows are in their table; the cache takes them after commit.
    }
    fn commit(&self) {
        let local = LOCAL.with_mut(std::mem::take);
        if local.pending.is_empty() && local.dirty.is_empty() {
            return;
        }
        let database = database();
        let pending = local.pending;
        with_cache(|c| {
            for relid in &local.dirty {
                c.invalidate_relation(database, *relid);
            }
            for (id, rows) in &pending {
                if local.dirty.contains(&id.relid) {
                    continue;
                }
                let mut events: Vec<CachedEvent> = rows.iter().map(|p| p.event).collect();
                events.sort_by_key(|e| e.t);
                c.append_committed(*id, &events);
            }
        });
    }
    fn abort(&self) {
        LOCAL.with_mut(|l| *l = Local::default());
    }
    fn pre_prepare(&self) {
        // The rows' fate is decided by COMMIT PREPARED or ROLLBACK PREPARED, which call no hook
        // of ours: hold their relations until then (reads go to the table), or refuse to prepare.
        let relids: Vec<u32> = LOCAL.with(|l| {
            let mut r: Vec<u32> = l.pending.keys().map(|id| id.relid).chain(l.dirty.iter().copied()).collect();
            r.sort_unstable();
            r.dedup();
            r
        });
        if relids.is_empty() {
            return;
        }
        // SAFETY: the transaction has an id: it wrote the rows.
        let xid = unsafe { pg_sys::GetTopTransactionIdIfAny() }.into_inner();
        let database = database();
        let held = with_cache(|c| relids.iter().all(|relid| c.hold_for_prepared(database, *relid, xid, running)));
        if held == Some(false) {
            pgrx::error!(
                "pg_cep cannot prepare this transaction: too many prepared transactions hold watched tables' window cache (at most 64 at a time)"
            );
        }
    }
    fn prepare(&self) {
        LOCAL.with_mut(|l| *l = Local::default());
    }
    fn subxact_commit(&self, mine: pg_sys::SubTransactionId, parent: pg_sys::SubTransactionId) {
        LOCAL.with_mut(|l| {
            for p in l.pending.values_mut().flatten().filter(|p| p.subxact == mine) {
                p.subxact = parent;
            }
        });
    }
    fn subxact_abort(&self, mine: pg_sys::SubTransactionId) {
        LOCAL.with_mut(|l| {
            for rows in l.pending.values_mut() {
                rows.retain(|p| p.subxact != mine);
            }
        });
    }
}

/// Whether a transaction is still undecided (running, or prepared and not yet committed or rolled back).
fn running(xid: u32) -> bool {
    // SAFETY: a proc-array lookup; a prepared transaction counts as in progress.
    unsafe { pg_sys::TransactionIdIsInProgress(pg_sys::TransactionId::from(xid)) }
}
