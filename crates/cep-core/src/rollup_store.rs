//! The rollups of watched tables, in one flat memory region (shared memory in the server, a
//! `Vec` in tests), added to by committed transactions only.
//!
//! Per table: per-minute totals (count, sum, min, max) for its last `TOTAL_MINUTES` minutes, and
//! for its last `KEY_MINUTES` minutes, per minute, an append-only list of (key hash, count, sum)
//! records, one per key and committing transaction. Appending is O(1) at commit; a reader folds the
//! records of its window by key, which costs the records of the window (about one per active key
//! and minute), not its rows. Key names live in a separate set-associative table, looked up only
//! for the top keys.
//!
//! Memory is never the only copy: the table's rows are. Whatever cannot be kept (a minute that
//! left its ring, records stolen when the pool ran out, a row stamped in the future, a key name too
//! long) raises the table's `totals_from` or `keys_from`: the minute from which on the figures here
//! are exact. A window `[since, ∞)` is answered from here only if `since` is at or after both, and
//! the caller answers it from the rows otherwise. A table first seen here is exact from the minute
//! after that commit; `load` (rebuild from the rows) makes it exact from earlier.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use super::rollup::{minute_of, Agg, Rollup, MINUTE};
use super::window_cache::key_hash;

pub const TABLES: usize = 64;
pub const TOTAL_MINUTES: usize = 64;
pub const KEY_MINUTES: usize = 8;
pub const NAME_BYTES: usize = 56;
const CHUNK_RECORDS: usize = 128;
const NAME_WAYS: usize = 8;
const NONE: u32 = u32::MAX;
const EMPTY: i64 = i64::MIN;

/// Whose rollups: a database's table, and the generation of pg_cep's catalog in that database (a
/// recreated extension must not read what an earlier one kept for a table with the same OID).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Owner {
    pub database: u32,
    pub relid: u32,
    pub generation: u32,
    /// The watch's mapping (key, amount and time columns): sums under another are another table's.
    pub mapping: u32,
}

/// What a committing transaction learnt about the rows committed before memory had its table:
/// their latest time (`i64::MIN` for none), read when the store was at `epoch`. It anchors a
/// new slot only if no slot was made or dropped since, so that the read saw every row the slot
/// lacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Anchor {
    pub latest: i64,
    pub epoch: u64,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Total {
    minute: i64,
    count: i64,
    sum: f64,
    /// NaN while no row of the minute had an amount.
    min: f64,
    max: f64,
}

const NO_TOTAL: Total = Total { minute: EMPTY, count: 0, sum: 0.0, min: f64::NAN, max: f64::NAN };

/// One minute's records: a chain of chunks, appended at the tail.
#[repr(C)]
#[derive(Clone, Copy)]
struct KeyMinute {
    minute: i64,
    head: u32,
    tail: u32,
}

const NO_KEY_MINUTE: KeyMinute = KeyMinute { minute: EMPTY, head: NONE, tail: NONE };

/// A key's rows of one minute, from one or more committing transactions.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Record {
    pub hash: u64,
    pub count: u64,
    pub sum: f64,
}

#[repr(C)]
struct Chunk {
    next: u32,
    len: u32,
    /// The table slot and minute the chunk was taken for, so a name's pointer to its key's
    /// latest record can be checked before it is followed.
    table: u32,
    _pad: u32,
    minute: i64,
    records: [Record; CHUNK_RECORDS],
}

/// Which table a slot holds; apart from the slots, so that finding one reads 1 kB, not 64 slots.
#[repr(C)]
#[derive(Clone, Copy)]
struct Id {
    owner: Owner,
    used: u32,
    /// Whether what the table held before this slot was made is known (see `Anchor`): until then
    /// nothing here is exact.
    anchored: u32,
}

#[repr(C)]
struct Table {
    totals_from: i64,
    keys_from: i64,
    last_used: i64,
    totals: [Total; TOTAL_MINUTES],
    keys: [KeyMinute; KEY_MINUTES],
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Name {
    hash: u64,
    table: u32,
    len: u32,
    used_at: i64,
    /// Where the key's latest record is: a later commit of the key in the same minute adds to
    /// it, so a minute holds about one record per key, not one per transaction.
    last_chunk: u32,
    last_at: u32,
    bytes: [u8; NAME_BYTES],
}

#[repr(C)]
struct Header {
    /// Bumped whenever a table's slot is made, reset or dropped: a reader that saw a table here
    /// at some epoch knows it is still here while the epoch is unchanged, without the lock.
    epoch: AtomicU64,
    free_chunk: u32,
    _pad: u32,
    /// Key minutes dropped because the pool ran out (raised `keys_from`).
    stolen: u64,
}

/// Chunks and name slots for a pool of `records` key-minute records.
fn counts(records: usize) -> (usize, usize) {
    let chunks = records.div_ceil(CHUNK_RECORDS).max(KEY_MINUTES);
    let sets = (records / 4).div_ceil(NAME_WAYS).max(1);
    (chunks, sets * NAME_WAYS)
}

/// The epoch (see `Header`) of the store at `base`, read without its lock.
///
/// # Safety
/// `base` points to a store made by `StoreView::new`.
pub unsafe fn epoch_unlocked(base: *const u8) -> u64 {
    (*(base as *const Header)).epoch.load(Ordering::Acquire)
}

pub fn region_size(records: usize) -> usize {
    let (chunks, names) = counts(records);
    std::mem::size_of::<Header>()
        + TABLES * (std::mem::size_of::<Id>() + std::mem::size_of::<Table>())
        + chunks * std::mem::size_of::<Chunk>()
        + names * std::mem::size_of::<Name>()
}

/// The totals of a window.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Totals {
    pub count: i64,
    pub sum: f64,
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// Σ count × (now − the minute's middle), in microseconds: the rows' mean age times count.
    pub age_sum: f64,
}

pub struct StoreView<'a> {
    header: &'a mut Header,
    ids: &'a mut [Id],
    tables: &'a mut [Table],
    chunks: &'a mut [Chunk],
    names: &'a mut [Name],
}

impl<'a> StoreView<'a> {
    /// # Safety
    /// `base` points to `region_size(records)` bytes, 8-aligned, that nothing else uses while the
    /// view lives; `init` is true the first time (it formats the region).
    pub unsafe fn new(base: *mut u8, records: usize, init: bool) -> StoreView<'a> {
        let (nchunks, nnames) = counts(records);
        let header = &mut *(base as *mut Header);
        let ids_ptr = base.add(std::mem::size_of::<Header>()) as *mut Id;
        let tables_ptr = ids_ptr.add(TABLES) as *mut Table;
        let chunks_ptr = tables_ptr.add(TABLES) as *mut Chunk;
        let names_ptr = chunks_ptr.add(nchunks) as *mut Name;
        let view = StoreView {
            header,
            ids: std::slice::from_raw_parts_mut(ids_ptr, TABLES),
            tables: std::slice::from_raw_parts_mut(tables_ptr, TABLES),
            chunks: std::slice::from_raw_parts_mut(chunks_ptr, nchunks),
            names: std::slice::from_raw_parts_mut(names_ptr, nnames),
        };
        if init {
            view.header.epoch = AtomicU64::new(0);
            view.header.free_chunk = NONE;
            view.header.stolen = 0;
            for (id, t) in view.ids.iter_mut().zip(view.tables.iter_mut()) {
                id.used = 0;
                t.keys = [NO_KEY_MINUTE; KEY_MINUTES];
            }
            for i in (0..nchunks).rev() {
                view.chunks[i].next = view.header.free_chunk;
                view.chunks[i].len = 0;
                view.chunks[i].table = NONE;
                view.header.free_chunk = i as u32;
            }
            for n in view.names.iter_mut() {
                n.table = NONE;
            }
        }
        view
    }

    fn find(&self, owner: Owner) -> Option<usize> {
        self.ids.iter().position(|t| t.used != 0 && t.owner == owner)
    }

    /// Whether memory has the table, anchored: only then is there nothing to ask the table.
    pub fn has(&self, owner: Owner) -> bool {
        self.find(owner).is_some_and(|i| self.ids[i].anchored != 0)
    }

    pub fn epoch(&self) -> u64 {
        self.header.epoch.load(Ordering::Acquire)
    }

    /// The table's slot, made when it has none yet. A new slot holds only what commits from now
    /// on: it can be exact from the minute after `now` at best, and after the latest time among
    /// the rows committed before, which only an `anchor` tells. Without one, the slot waits for a
    /// later commit's.
    fn table_for(&mut self, owner: Owner, now: i64, anchor: Option<Anchor>) -> usize {
        let anchor = anchor.filter(|a| a.epoch == self.epoch());
        let same_relation = self.ids.iter().position(|t| t.used != 0 && t.owner.database == owner.database && t.owner.relid == owner.relid);
        let i = match same_relation.filter(|&i| self.ids[i].owner == owner) {
            Some(i) => i,
            None => {
                let i = same_relation
                    .or_else(|| self.ids.iter().position(|t| t.used == 0))
                    .unwrap_or_else(|| (0..TABLES).min_by_key(|&i| self.tables[i].last_used).unwrap_or(0));
                self.reset(i, owner, minute_of(now).saturating_add(MINUTE), now);
                self.ids[i].anchored = 0;
                i
            }
        };
        if let (0, Some(a)) = (self.ids[i].anchored, anchor) {
            self.ids[i].anchored = 1;
            self.lose(i, minute_of(a.latest));
        }
        i
    }

    fn reset(&mut self, i: usize, owner: Owner, exact_from: i64, now: i64) {
        for slot in 0..KEY_MINUTES {
            self.free_minute(i, slot);
        }
        self.ids[i] = Id { owner, used: 1, anchored: 1 };
        self.header.epoch.fetch_add(1, Ordering::Release);
        let t = &mut self.tables[i];
        t.totals_from = exact_from;
        t.keys_from = exact_from;
        t.last_used = now;
        t.totals = [NO_TOTAL; TOTAL_MINUTES];
    }

    fn free_minute(&mut self, i: usize, slot: usize) {
        let mut c = self.tables[i].keys[slot].head;
        while c != NONE {
            let next = self.chunks[c as usize].next;
            self.chunks[c as usize].table = NONE;
            self.chunks[c as usize].next = self.header.free_chunk;
            self.header.free_chunk = c;
            c = next;
        }
        self.tables[i].keys[slot] = NO_KEY_MINUTE;
    }

    /// Adds one committed transaction's rows of a table, summed per minute and per key.
    /// `anchor` is for a table not kept here yet (see `table_for`).
    pub fn add(&mut self, owner: Owner, now: i64, rollup: &Rollup, anchor: Option<Anchor>) {
        if rollup.is_empty() {
            return;
        }
        let i = self.table_for(owner, now, anchor);
        self.tables[i].last_used = now;
        // A row stamped after the next minute would push out minutes still being read.
        let latest = minute_of(now).saturating_add(MINUTE);
        for (&minute, agg) in &rollup.minutes {
            if minute > latest {
                self.lose(i, minute);
            } else {
                self.add_total(i, minute, agg);
            }
        }
        for ((minute, key), agg) in &rollup.keys {
            if *minute <= latest {
                self.add_key(i, *minute, key, agg, now);
            }
        }
    }

    /// Rows of `minute` and before may be committed without being added here (a prepared
    /// transaction): a slot is made for the table if need be, to remember it.
    pub fn unsure(&mut self, owner: Owner, now: i64, minute: i64) {
        let i = self.table_for(owner, now, None);
        self.lose(i, minute);
    }

    fn lose(&mut self, i: usize, minute: i64) {
        let t = &mut self.tables[i];
        t.totals_from = t.totals_from.max(minute.saturating_add(MINUTE));
        t.keys_from = t.keys_from.max(minute.saturating_add(MINUTE));
    }

    fn add_total(&mut self, i: usize, minute: i64, agg: &Agg) {
        let t = &mut self.tables[i];
        let slot = &mut t.totals[(minute / MINUTE).rem_euclid(TOTAL_MINUTES as i64) as usize];
        if slot.minute > minute {
            t.totals_from = t.totals_from.max(minute.saturating_add(MINUTE));
            return;
        }
        if slot.minute != minute {
            if slot.minute != EMPTY {
                t.totals_from = t.totals_from.max(slot.minute.saturating_add(MINUTE));
            }
            *slot = Total { minute, ..NO_TOTAL };
        }
        slot.count += agg.count;
        slot.sum += agg.sum;
        if let Some(lo) = agg.min {
            slot.min = if slot.min.is_nan() { lo } else { slot.min.min(lo) };
        }
        if let Some(hi) = agg.max {
            slot.max = if slot.max.is_nan() { hi } else { slot.max.max(hi) };
        }
    }

    fn add_key(&mut self, i: usize, minute: i64, key: &str, agg: &Agg, now: i64) {
        let lose_keys = |t: &mut Table, from: i64| t.keys_from = t.keys_from.max(from);
        if key.len() > NAME_BYTES {
            lose_keys(&mut self.tables[i], minute.saturating_add(MINUTE));
            return;
        }
        let slot = (minute / MINUTE).rem_euclid(KEY_MINUTES as i64) as usize;
        let held = self.tables[i].keys[slot].minute;
        if held > minute {
            lose_keys(&mut self.tables[i], minute.saturating_add(MINUTE));
            return;
        }
        if held != minute {
            if held != EMPTY {
                self.free_minute(i, slot);
                lose_keys(&mut self.tables[i], held.saturating_add(MINUTE));
            }
            self.tables[i].keys[slot].minute = minute;
        }
        let hash = key_hash(key)[0];
        let name = self.name(i, hash, key, now);
        let (c, at) = (self.names[name].last_chunk, self.names[name].last_at as usize);
        if c != NONE {
            let chunk = &mut self.chunks[c as usize];
            if chunk.table == i as u32 && chunk.minute == minute && at < chunk.len as usize && chunk.records[at].hash == hash {
                chunk.records[at].count += agg.count as u64;
                chunk.records[at].sum += agg.sum;
                return;
            }
        }
        let tail = self.tables[i].keys[slot].tail;
        let tail = if tail != NONE && (self.chunks[tail as usize].len as usize) < CHUNK_RECORDS {
            tail
        } else {
            let Some(c) = self.new_chunk(i, slot) else {
                lose_keys(&mut self.tables[i], minute.saturating_add(MINUTE));
                return;
            };
            let km = &mut self.tables[i].keys[slot];
            if km.tail == NONE {
                km.head = c;
            } else {
                self.chunks[km.tail as usize].next = c;
            }
            km.tail = c;
            c
        };
        let chunk = &mut self.chunks[tail as usize];
        chunk.table = i as u32;
        chunk.minute = minute;
        chunk.records[chunk.len as usize] = Record { hash, count: agg.count as u64, sum: agg.sum };
        self.names[name].last_chunk = tail;
        self.names[name].last_at = chunk.len;
        chunk.len += 1;
    }

    /// A free chunk; when there is none, the oldest key minute of any table but `(i, slot)` is
    /// dropped (its table is no longer exact before the minute after it).
    fn new_chunk(&mut self, i: usize, slot: usize) -> Option<u32> {
        if self.header.free_chunk == NONE {
            let oldest = (0..TABLES)
                .filter(|&t| self.ids[t].used != 0)
                .flat_map(|t| (0..KEY_MINUTES).map(move |s| (t, s)))
                .filter(|&(t, s)| (t, s) != (i, slot) && self.tables[t].keys[s].head != NONE)
                .min_by_key(|&(t, s)| self.tables[t].keys[s].minute)?;
            let (t, s) = oldest;
            let minute = self.tables[t].keys[s].minute;
            self.free_minute(t, s);
            self.tables[t].keys_from = self.tables[t].keys_from.max(minute.saturating_add(MINUTE));
            self.header.stolen += 1;
        }
        let c = self.header.free_chunk;
        let chunk = &mut self.chunks[c as usize];
        self.header.free_chunk = chunk.next;
        chunk.next = NONE;
        chunk.len = 0;
        Some(c)
    }

    fn name_set(&self, i: usize, hash: u64) -> std::ops::Range<usize> {
        let sets = self.names.len() / NAME_WAYS;
        let set = ((hash ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)) % sets as u64) as usize;
        set * NAME_WAYS..(set + 1) * NAME_WAYS
    }

    /// Remembers a key's name; the least recently used name of its set makes room.
    fn name(&mut self, i: usize, hash: u64, key: &str, now: i64) -> usize {
        let range = self.name_set(i, hash);
        let start = range.start;
        let set = &mut self.names[range];
        let way = set
            .iter()
            .position(|n| n.table == i as u32 && n.hash == hash)
            .unwrap_or_else(|| (0..NAME_WAYS).min_by_key(|&w| if set[w].table == NONE { i64::MIN } else { set[w].used_at }).unwrap_or(0));
        let n = &mut set[way];
        if n.table != i as u32 || n.hash != hash {
            n.table = i as u32;
            n.hash = hash;
            n.len = key.len() as u32;
            n.bytes[..key.len()].copy_from_slice(key.as_bytes());
            n.last_chunk = NONE;
        }
        n.used_at = now;
        start + way
    }

    /// The names of `hashes` in the table's records, or `None` if one was pushed out.
    fn names(&self, owner: Owner, hashes: &[u64]) -> Option<Vec<String>> {
        let i = self.find(owner)?;
        hashes
            .iter()
            .map(|&h| {
                let n = self.names[self.name_set(i, h)].iter().find(|n| n.table == i as u32 && n.hash == h)?;
                Some(String::from_utf8_lossy(&n.bytes[..n.len as usize]).into_owned())
            })
            .collect()
    }

    /// The table's totals from `since` (a minute) on, if they are exact here.
    pub fn totals(&self, owner: Owner, since: i64, now: i64) -> Option<Totals> {
        let i = self.find(owner).filter(|&i| self.ids[i].anchored != 0)?;
        let t = &self.tables[i];
        if since < t.totals_from || since != minute_of(since) {
            return None;
        }
        let mut out = Totals::default();
        for s in t.totals.iter().filter(|s| s.minute != EMPTY && s.minute >= since) {
            out.count += s.count;
            out.sum += s.sum;
            if !s.min.is_nan() {
                out.min = Some(out.min.map_or(s.min, |m| m.min(s.min)));
                out.max = Some(out.max.map_or(s.max, |m| m.max(s.max)));
            }
            out.age_sum += s.count as f64 * (now - (s.minute + MINUTE / 2)) as f64;
        }
        Some(out)
    }

    /// The table's totals, active keys and `top` keys by sum (then name) from `since` on, if
    /// they are exact here. `folder` is scratch space, kept by the caller between reads.
    pub fn window(&self, owner: Owner, since: i64, now: i64, top: usize, folder: &mut Folder) -> Option<Window> {
        let i = self.find(owner)?;
        if since < self.tables[i].keys_from {
            return None;
        }
        // Unanchored slots and minutes cut in two are refused by `totals`.
        let totals = self.totals(owner, since, now)?;
        let minutes = self.tables[i].keys.iter().filter(|k| k.minute != EMPTY && k.minute >= since);
        let records = minutes.flat_map(|km| {
            std::iter::successors(Some(km.head).filter(|&c| c != NONE), |&c| Some(self.chunks[c as usize].next).filter(|&n| n != NONE))
                .flat_map(|c| self.chunks[c as usize].records[..self.chunks[c as usize].len as usize].iter())
        });
        let (active, candidates) = folder.fold(records, top);
        let names = self.names(owner, &candidates.iter().map(|k| k.hash).collect::<Vec<_>>())?;
        Some(Window { totals, active, top: rank(candidates, names, top) })
    }

    /// Forgets a table (any generation): it is exact again only from the commit after this.
    pub fn forget(&mut self, database: u32, relid: u32) {
        if let Some(i) = self.ids.iter().position(|t| t.used != 0 && t.owner.database == database && t.owner.relid == relid) {
            for slot in 0..KEY_MINUTES {
                self.free_minute(i, slot);
            }
            self.ids[i].used = 0;
            self.header.epoch.fetch_add(1, Ordering::Release);
        }
    }

    /// Forgets every table of a database (a prepared transaction of it, prepared before the
    /// server started, committed: which tables it wrote is not known).
    pub fn forget_database(&mut self, database: u32) {
        let relids: Vec<u32> = self.ids.iter().filter(|t| t.used != 0 && t.owner.database == database).map(|t| t.owner.relid).collect();
        for relid in relids {
            self.forget(database, relid);
        }
    }

    /// Replaces a table's rollups with `rollup`, read from its rows: totals from `totals_from`
    /// on, per-key figures from `keys_from` on (minutes).
    pub fn load(&mut self, owner: Owner, now: i64, totals_from: i64, keys_from: i64, rollup: &Rollup) {
        let i = self.table_for(owner, now, None);
        self.reset(i, owner, totals_from, now);
        self.tables[i].keys_from = keys_from.max(totals_from);
        self.add(owner, now, rollup, None);
    }

    /// (tables kept, records kept, record capacity, key minutes dropped for room).
    pub fn usage(&self) -> (u64, u64, u64, u64) {
        let tables = self.ids.iter().filter(|t| t.used != 0).count() as u64;
        let records: u64 = self
            .ids
            .iter()
            .zip(self.tables.iter())
            .filter(|(id, _)| id.used != 0)
            .flat_map(|(_, t)| t.keys.iter())
            .map(|k| {
                std::iter::successors(Some(k.head).filter(|&c| c != NONE), |&c| Some(self.chunks[c as usize].next).filter(|&n| n != NONE))
                    .map(|c| self.chunks[c as usize].len as u64)
                    .sum::<u64>()
            })
            .sum();
        (tables, records, (self.chunks.len() * CHUNK_RECORDS) as u64, self.header.stolen)
    }
}

/// The records' keys are hashes already: one multiply-xorshift spreads them over the table,
/// where SipHash would cost more than the rest of the fold.
#[derive(Default)]
struct Mix(u64);

impl Hasher for Mix {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ *b as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn write_u64(&mut self, n: u64) {
        let x = (n ^ (n >> 31)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        self.0 = x ^ (x >> 29);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A key's figures in a window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KeyTotal {
    pub hash: u64,
    pub count: u64,
    pub sum: f64,
}

/// What a window holds: totals, the number of active keys, and the top keys with their names.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub totals: Totals,
    pub active: usize,
    pub top: Vec<(String, KeyTotal)>,
}

/// Scratch space to fold a window's records by key, reused so that a read allocates nothing
/// (a fresh megabyte per read costs more in page faults than the fold itself).
#[derive(Default)]
pub struct Folder {
    by_key: HashMap<u64, (u64, f64), BuildHasherDefault<Mix>>,
    all: Vec<KeyTotal>,
}

impl Folder {
    /// The number of active keys, and the keys that can be among the `top` by sum (every key tied
    /// with the last of them too, since ties are ordered by name, which only the names table
    /// knows), largest sum first.
    pub fn fold<'r>(&mut self, records: impl Iterator<Item = &'r Record>, top: usize) -> (usize, Vec<KeyTotal>) {
        self.by_key.clear();
        for r in records {
            let e = self.by_key.entry(r.hash).or_insert((0, 0.0));
            e.0 += r.count;
            e.1 += r.sum;
        }
        let active = self.by_key.len();
        if top == 0 {
            return (active, Vec::new());
        }
        self.all.clear();
        self.all.extend(self.by_key.iter().map(|(&hash, &(count, sum))| KeyTotal { hash, count, sum }));
        let desc = |a: &KeyTotal, b: &KeyTotal| b.sum.total_cmp(&a.sum);
        let mut out: Vec<KeyTotal> = if self.all.len() > top {
            self.all.select_nth_unstable_by(top - 1, desc);
            let last = self.all[top - 1].sum;
            let (head, rest) = self.all.split_at(top);
            head.iter().chain(rest.iter().filter(|k| k.sum == last)).copied().collect()
        } else {
            self.all.clone()
        };
        out.sort_by(desc);
        (active, out)
    }
}

/// The `top` keys by sum, then by name, from `fold`'s candidates and their names.
fn rank(candidates: Vec<KeyTotal>, names: Vec<String>, top: usize) -> Vec<(String, KeyTotal)> {
    let mut out: Vec<(String, KeyTotal)> = names.into_iter().zip(candidates).collect();
    out.sort_by(|a, b| b.1.sum.total_cmp(&a.1.sum).then_with(|| a.0.cmp(&b.0)));
    out.truncate(top);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const RECORDS: usize = 4096;
    const NOW: i64 = 1_000 * MINUTE + 30_000_000;
    const T: Owner = Owner { database: 1, relid: 100, generation: 7, mapping: 3 };

    fn region(records: usize) -> Vec<u64> {
        vec![0u64; region_size(records) / 8 + 1]
    }

    fn view(mem: &mut [u64], records: usize, init: bool) -> StoreView<'_> {
        // SAFETY: the tests pass a vector from `region(records)`: enough u64s (so 8-aligned), borrowed mutably while the view lives.
        unsafe { StoreView::new(mem.as_mut_ptr() as *mut u8, records, init) }
    }

    fn rows(rows: &[(i64, &str, f64)]) -> Rollup {
        let mut r = Rollup::default();
        for &(at, key, amount) in rows {
            r.add(at, key, Some(amount));
        }
        r
    }

    /// A window as a reader gets it: totals, active keys, ranked top keys (key, count, sum).
    type Read = (Totals, usize, Vec<(String, u64, f64)>);

    /// Window totals and ranked top keys, as a reader gets them.
    fn read(s: &StoreView, owner: Owner, since: i64, top: usize) -> Option<Read> {
        let w = s.window(owner, since, NOW, top, &mut Folder::default())?;
        Some((w.totals, w.active, w.top.into_iter().map(|(n, k)| (n, k.count, k.sum)).collect()))
    }

    #[test]
    fn a_new_table_is_exact_only_once_anchored_and_from_the_minute_after_its_first_commit() {
        let mut mem = region(RECORDS);
        let mut s = view(&mut mem, RECORDS, true);
        let anchor = |s: &StoreView, latest| Some(Anchor { latest, epoch: s.epoch() });
        // A commit that did not ask the table: its rows are kept, but nothing is claimed.
        s.add(T, NOW, &rows(&[(NOW, "a", 5.0)]), None);
        assert!(!s.has(T));
        assert!(s.totals(T, minute_of(NOW) + 5 * MINUTE, NOW).is_none());
        // An anchor read before the last slot was made or dropped proves nothing either.
        let stale = Some(Anchor { latest: i64::MIN, epoch: s.epoch() - 1 });
        s.add(T, NOW, &rows(&[(NOW, "b", 1.0)]), stale);
        assert!(!s.has(T));
        s.add(T, NOW, &rows(&[(NOW, "c", 1.0)]), anchor(&s, i64::MIN));
        assert!(s.has(T));
        // This minute may hold rows committed before anything was kept here.
        assert!(s.window(T, minute_of(NOW), NOW, 0, &mut Folder::default()).is_none());
        let (totals, active, top) = read(&s, T, minute_of(NOW) + MINUTE, 10).unwrap();
        assert_eq!((totals.count, active), (0, 0));
        assert!(top.is_empty());
        // A window that starts inside a minute is not answered from whole minutes.
        assert!(s.totals(T, minute_of(NOW) + MINUTE + 1, NOW).is_none());
        // Rows stamped later than that, committed before (before a restart, say), push it further.
        let other = Owner { relid: 101, ..T };
        s.add(other, NOW, &rows(&[(NOW, "a", 5.0)]), anchor(&s, NOW + 10 * MINUTE));
        assert!(s.window(other, minute_of(NOW) + 10 * MINUTE, NOW, 0, &mut Folder::default()).is_none());
        assert!(s.window(other, minute_of(NOW) + 11 * MINUTE, NOW, 0, &mut Folder::default()).is_some());
        // Another generation of the catalog, or another mapping, is another table.
        assert!(s.window(Owner { generation: 8, ..T }, minute_of(NOW) + MINUTE, NOW, 0, &mut Folder::default()).is_none());
        assert!(s.window(Owner { mapping: 9, ..T }, minute_of(NOW) + MINUTE, NOW, 0, &mut Folder::default()).is_none());
    }

    #[test]
    fn infinite_times_neither_overflow_nor_claim_anything() {
        let mut mem = region(RECORDS);
        let mut s = view(&mut mem, RECORDS, true);
        s.load(T, NOW, minute_of(NOW) - 5 * MINUTE, minute_of(NOW) - 5 * MINUTE, &Rollup::default());
        s.add(T, NOW, &rows(&[(i64::MIN, "a", 1.0), (i64::MAX, "b", 1.0)]), None);
        // 'infinity' is in every window: none is exact now.
        assert!(s.totals(T, minute_of(NOW), NOW).is_none());
        let other = Owner { relid: 101, ..T };
        s.add(other, NOW, &rows(&[(NOW, "a", 1.0)]), Some(Anchor { latest: i64::MAX, epoch: s.epoch() }));
        assert!(s.totals(other, minute_of(NOW) + MINUTE, NOW).is_none());
    }

    #[test]
    fn loaded_and_committed_rows_add_up_per_key_and_rank_by_sum_then_name() {
        let mut mem = region(RECORDS);
        let mut s = view(&mut mem, RECORDS, true);
        let m = minute_of(NOW);
        s.load(T, NOW, m - 5 * MINUTE, m - 5 * MINUTE, &rows(&[(m - 4 * MINUTE, "b", 10.0), (m - 2 * MINUTE, "a", 4.0)]));
        s.add(T, NOW, &rows(&[(NOW, "a", 6.0), (NOW, "c", 10.0)]), None);
        s.add(T, NOW, &rows(&[(NOW - 1, "d", 1.0)]), None);
        let (totals, active, top) = read(&s, T, m - 5 * MINUTE, 2).unwrap();
        assert_eq!((totals.count, totals.sum, totals.min, totals.max), (5, 31.0, Some(1.0), Some(10.0)));
        assert_eq!(active, 4);
        // a, b and c all have 10: the first two by name.
        assert_eq!(top, vec![("a".to_string(), 2, 10.0), ("b".to_string(), 1, 10.0)]);
        // A later window leaves b out.
        let (totals, active, _) = read(&s, T, m - 3 * MINUTE, 10).unwrap();
        assert_eq!((totals.count, active), (4, 3));
        // Before the load's start it is not exact.
        assert!(s.window(T, m - 6 * MINUTE, NOW, 0, &mut Folder::default()).is_none());
        // Totals read from further back than the keys are exact further back.
        s.load(T, NOW, m - 30 * MINUTE, m - 5 * MINUTE, &rows(&[(m - 20 * MINUTE, "e", 1.0)]));
        assert_eq!(s.totals(T, m - 30 * MINUTE, NOW).unwrap().count, 1);
        assert!(s.window(T, m - 6 * MINUTE, NOW, 0, &mut Folder::default()).is_none());
        assert!(s.window(T, m - 5 * MINUTE, NOW, 0, &mut Folder::default()).is_some());
    }

    #[test]
    fn a_minute_that_leaves_the_key_ring_moves_the_exact_start_past_it() {
        let mut mem = region(RECORDS);
        let mut s = view(&mut mem, RECORDS, true);
        let m = minute_of(NOW);
        s.load(T, NOW, m - 20 * MINUTE, m - 20 * MINUTE, &Rollup::default());
        s.add(T, NOW, &rows(&[(m - 9 * MINUTE, "a", 1.0)]), None);
        assert!(s.window(T, m - 10 * MINUTE, NOW, 0, &mut Folder::default()).is_some());
        s.add(T, NOW, &rows(&[(m - MINUTE, "a", 1.0)]), None); // same slot as m - 9 minutes
        assert!(s.window(T, m - 9 * MINUTE, NOW, 0, &mut Folder::default()).is_none());
        assert_eq!(read(&s, T, m - 8 * MINUTE, 1).unwrap().0.count, 1);
        // The totals ring is longer: the table's totals still reach back.
        assert_eq!(s.totals(T, m - 10 * MINUTE, NOW).unwrap().count, 2);
        // A late row for a minute the key ring has moved past is not kept per key; only windows
        // that reach back to it lose exactness.
        s.add(T, NOW, &rows(&[(m - 17 * MINUTE, "z", 1.0)]), None);
        assert!(s.totals(T, m - 10 * MINUTE, NOW).is_some());
        assert!(s.window(T, m - 8 * MINUTE, NOW, 0, &mut Folder::default()).is_some());
    }

    #[test]
    fn rows_stamped_in_the_future_and_overlong_keys_are_not_kept_and_not_claimed() {
        let mut mem = region(RECORDS);
        let mut s = view(&mut mem, RECORDS, true);
        let m = minute_of(NOW);
        s.load(T, NOW, m - 5 * MINUTE, m - 5 * MINUTE, &Rollup::default());
        s.add(T, NOW, &rows(&[(m + 10 * MINUTE, "a", 1.0)]), None);
        // Every window that reaches minute m+10 would miss the row.
        assert!(s.totals(T, m, NOW).is_none());
        assert!(s.totals(T, m + 11 * MINUTE, NOW).is_some());
        s.load(T, NOW, m - 5 * MINUTE, m - 5 * MINUTE, &Rollup::default());
        s.add(T, NOW, &rows(&[(NOW, &"k".repeat(NAME_BYTES + 1), 1.0)]), None);
        assert_eq!(s.totals(T, m, NOW).unwrap().count, 1);
        assert!(s.window(T, m, NOW, 0, &mut Folder::default()).is_none());
    }

    #[test]
    fn when_the_pool_runs_out_the_oldest_key_minute_goes_and_is_not_claimed() {
        let records = CHUNK_RECORDS * KEY_MINUTES;
        let mut mem = region(records);
        let mut s = view(&mut mem, records, true);
        let m = minute_of(NOW);
        s.load(T, NOW, m - 7 * MINUTE, m - 7 * MINUTE, &Rollup::default());
        for back in (0..KEY_MINUTES as i64).rev() {
            let keys: Vec<String> = (0..CHUNK_RECORDS).map(|k| format!("k{k}")).collect();
            let mut r = Rollup::default();
            for k in &keys {
                r.add(m - back * MINUTE, k, Some(1.0));
            }
            s.add(T, NOW, &r, None);
        }
        assert_eq!(s.usage().3, 0);
        assert!(s.window(T, m - 7 * MINUTE, NOW, 0, &mut Folder::default()).is_some());
        // One more record needs a chunk: minute m-7 is dropped for it.
        s.add(T, NOW, &rows(&[(NOW, "late", 1.0)]), None);
        assert_eq!(s.usage().3, 1);
        assert!(s.window(T, m - 7 * MINUTE, NOW, 0, &mut Folder::default()).is_none());
        let (totals, active, _) = read(&s, T, m - 6 * MINUTE, 0).unwrap();
        assert_eq!((totals.count as usize, active), (7 * CHUNK_RECORDS + 1, CHUNK_RECORDS + 1));
    }

    #[test]
    fn a_key_committed_again_in_the_same_minute_adds_to_its_record() {
        let mut mem = region(RECORDS);
        let mut s = view(&mut mem, RECORDS, true);
        let m = minute_of(NOW);
        s.load(T, NOW, m - 5 * MINUTE, m - 5 * MINUTE, &Rollup::default());
        for _ in 0..1000 {
            s.add(T, NOW, &rows(&[(NOW, "a", 1.0), (NOW, "b", 2.0)]), None);
        }
        s.add(T, NOW, &rows(&[(NOW - MINUTE, "a", 1.0)]), None);
        assert_eq!(s.usage().1, 3, "one record per key and minute");
        let (totals, active, top) = read(&s, T, m - MINUTE, 2).unwrap();
        assert_eq!((totals.count, active), (2001, 2));
        assert_eq!(top, vec![("b".to_string(), 1000, 2000.0), ("a".to_string(), 1001, 1001.0)]);
    }

    #[test]
    fn forgetting_a_table_frees_its_records_for_others() {
        let mut mem = region(RECORDS);
        let mut s = view(&mut mem, RECORDS, true);
        s.add(T, NOW, &rows(&[(NOW, "a", 1.0)]), None);
        assert_eq!(s.usage().0, 1);
        let epoch = s.epoch();
        s.forget(T.database, T.relid);
        assert!(s.epoch() > epoch, "a reader that knew the table must look again");
        assert_eq!(s.usage().0..=s.usage().1, 0..=0);
        assert!(s.totals(T, 0, NOW).is_none());
        // A database at once, and only it.
        let (u, other) = (Owner { relid: T.relid + 1, ..T }, Owner { database: T.database + 1, ..T });
        for owner in [T, u, other] {
            s.add(owner, NOW, &rows(&[(NOW, "a", 1.0)]), None);
        }
        assert!([T, u, other].iter().all(|&o| s.find(o).is_some()));
        s.forget_database(T.database);
        assert_eq!([T, u, other].map(|o| s.find(o).is_some()), [false, false, true]);
    }

    /// Against the plain computation over random rows: any window inside what is exact gives the
    /// same totals, active keys and top keys.
    #[test]
    fn random_rows_agree_with_a_direct_computation() {
        let mut seed = 42u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut mem = region(RECORDS);
        let mut s = view(&mut mem, RECORDS, true);
        let m = minute_of(NOW);
        s.load(T, NOW, m - 6 * MINUTE, m - 6 * MINUTE, &Rollup::default());
        let mut all: Vec<(i64, String, f64)> = Vec::new();
        for _ in 0..300 {
            let mut r = Rollup::default();
            for _ in 0..(next() % 5 + 1) {
                let at = m - 6 * MINUTE + (next() % (7 * MINUTE as u64)) as i64;
                let key = format!("u{}", next() % 40);
                let amount = (next() % 1000) as f64 / 4.0;
                r.add(at, &key, Some(amount));
                all.push((at, key, amount));
            }
            s.add(T, NOW, &r, None);
        }
        for back in 0..=6 {
            let since = m - back * MINUTE;
            let (totals, active, top) = read(&s, T, since, 5).unwrap();
            let rows: Vec<_> = all.iter().filter(|r| r.0 >= since).collect();
            let mut per: HashMap<&str, (u64, f64)> = HashMap::new();
            for r in &rows {
                let e = per.entry(&r.1).or_default();
                e.0 += 1;
                e.1 += r.2;
            }
            let mut want: Vec<(String, u64, f64)> = per.iter().map(|(k, v)| (k.to_string(), v.0, v.1)).collect();
            want.sort_by(|a, b| b.2.total_cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
            want.truncate(5);
            assert_eq!(totals.count as usize, rows.len());
            assert!((totals.sum - rows.iter().map(|r| r.2).sum::<f64>()).abs() < 1e-6);
            assert_eq!(active, per.len());
            assert_eq!(top.iter().map(|t| (&t.0, t.1)).collect::<Vec<_>>(), want.iter().map(|t| (&t.0, t.1)).collect::<Vec<_>>());
        }
    }
}
