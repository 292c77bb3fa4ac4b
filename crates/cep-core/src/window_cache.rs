//! A cache of committed events per key, so the monitor scores a row without querying the table.
//!
//! The cache lives in one flat memory region (shared memory in the server, a `Vec` in tests):
//! a header, a set-associative table of keys, and a pool of fixed-size chunks of events. Each key's
//! entry holds every committed event of that key with a time at or after `from`, oldest first.
//! Scoring reads it only when `from` reaches back far enough; otherwise the caller falls back to
//! SQL. Everything here is plain data: no pointers, no allocation, so the region can be shared
//! between processes.
//!
//! Correctness rests on three rules, kept by the caller under one lock:
//! - committing transactions append their events ([`CacheView::append_committed`]), and bump the
//!   version of the key's bucket, whether or not the key is cached;
//! - a loader reads the bucket version before it queries the table, and stores what it read only if
//!   the version is unchanged ([`CacheView::insert_loaded`]), so no commit can slip between;
//! - an event whose transaction the loader already saw is not appended twice (same xid).
//!
//! A read costs about the same however busy the key is. It frees the chunks that left the
//! longest window (raising `from`), starts each window from a cursor where the last read of that
//! window stopped, and sums whole chunks as a difference of the prefix totals every chunk
//! carries. Location figures come from counts as long as the window lies in one run of events at
//! the same place; only then, or for a `max_amount` rule, does it look at each chunk in the window.

use super::clock::{clock_step, ClockEntry};
use super::evaluate::{WindowPlan, WindowStats};

pub const WAYS: usize = 8;
pub const BUCKETS: usize = 4096;
pub const CHUNK_EVENTS: usize = 16;
const RELATIONS: usize = 256;
const NONE: u32 = u32::MAX;

/// One committed row, as much as the rules read of it.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CachedEvent {
    pub t: i64,
    /// NaN for a null amount.
    pub amount: f64,
    /// A hash of the location, 0 for null.
    pub loc: u32,
    pub xid: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Totals {
    count: i64,
    /// Events with a location.
    located: i64,
    sum: f64,
    sum_sq: f64,
}

/// The stretch of a key's latest events that were all at one place (null locations aside): every
/// located event at or after `from` is at `loc`. A window inside it needs no per-event look at
/// locations. `loc` is 0 while no event had a location, `MIXED` when a chunk saw two places.
#[repr(C)]
#[derive(Clone, Copy)]
struct Run {
    loc: u32,
    from: i64,
}

const MIXED: u32 = u32::MAX;
const NO_RUN: Run = Run { loc: MIXED, from: i64::MAX };

/// Where a window of `window` microseconds started at the last read that reached back to `lo`:
/// every chunk before `chunk` ended before `lo`. Later reads with the same window move it on,
/// so finding a window's first chunk does not walk the expired ones again.
#[repr(C)]
#[derive(Clone, Copy)]
struct Cursor {
    window: i64,
    lo: i64,
    chunk: u32,
}

const CURSORS: usize = 3;
const NO_CURSORS: [Cursor; CURSORS] = [Cursor { window: 0, lo: i64::MIN, chunk: NONE }; CURSORS];

/// A key's events are a list of chunks. A window read walks the list to its first chunk and
/// reads the sums of two more: the fields those look at come first, in one cache line (chunks
/// are aligned to lines), so each chunk passed costs one memory read. With the last event's time
/// read from the events, a step read two lines, and the walks and sums were most of a storm's
/// window reads (dense keys hold thousands of events, mostly out of the CPU's caches).
#[repr(C, align(64))]
#[derive(Clone, Copy)]
pub struct Chunk {
    next: u32,
    len: u32,
    /// The first and the newest event's times (events are held in time order); meaningless
    /// while `len` is 0.
    first: i64,
    last: i64,
    /// The same sums as `sum` and `sum_sq` over every earlier chunk of the entry: the sums of a
    /// run of whole chunks are a difference of two of these, so a long window costs no more
    /// than a short one.
    before: Totals,
    /// The one location of the chunk's located events (0 while it has none), and how many they
    /// are; `mixed` once two locations were seen. A key mostly stays at one place, so location
    /// figures too are usually added a chunk at a time.
    loc: u32,
    located: u16,
    mixed: u16,
    /// Sums over the chunk's events, so a window that covers the whole chunk adds them at once.
    sum: f64,
    sum_sq: f64,
    max: f64,
    /// The previous chunk's run and its last event's time, to extend the run with this chunk.
    prev_run: Run,
    prev_last: i64,
    events: [CachedEvent; CHUNK_EVENTS],
}

impl Chunk {
    fn reset(&mut self) {
        self.before = Totals::default();
        self.prev_run = Run { loc: 0, from: i64::MIN };
        self.prev_last = i64::MIN;
        self.len = 0;
        self.loc = 0;
        self.located = 0;
        self.mixed = 0;
        self.sum = 0.0;
        self.sum_sq = 0.0;
        self.max = f64::NEG_INFINITY;
    }

    /// The run of same-place events that ends with this chunk.
    fn run(&self) -> Run {
        let prev = self.prev_run;
        match () {
            _ if self.mixed == 1 => NO_RUN,
            _ if self.located == 0 => prev,
            _ if prev.loc == 0 || prev.loc == self.loc => Run { loc: self.loc, from: prev.from },
            // A new place: the run starts after the previous chunk's events.
            _ => Run { loc: self.loc, from: self.prev_last.saturating_add(1) },
        }
    }

    /// The first and newest event's times, from the chunk's first cache line; `None` when empty.
    fn span(&self) -> Option<(i64, i64)> {
        (self.len > 0).then_some((self.first, self.last))
    }

    fn last_t(&self) -> Option<i64> {
        self.span().map(|(_, last)| last)
    }

    fn add(&mut self, ev: CachedEvent) {
        if self.len == 0 {
            self.first = ev.t;
        }
        self.events[self.len as usize] = ev;
        self.len += 1;
        self.last = ev.t;
        if ev.loc != 0 {
            if self.loc != 0 && self.loc != ev.loc {
                self.mixed = 1;
            }
            self.loc = ev.loc;
            self.located += 1;
        }
        if !ev.amount.is_nan() {
            self.sum += ev.amount;
            self.sum_sq += ev.amount * ev.amount;
            self.max = self.max.max(ev.amount);
        }
    }
}

/// Which key an entry belongs to: database, relation, and a 128-bit hash of the key's text.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct KeyId {
    pub database: u32,
    pub relid: u32,
    pub hash: [u64; 2],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Entry {
    id: KeyId,
    live: u32,
    recently_used: u32,
    generation: u64,
    from: i64,
    head: u32,
    tail: u32,
    /// The head chunk held an event this recent when last looked at: no need to look at it
    /// again for expiry until the window passes that time.
    head_last: i64,
    cursors: [Cursor; CURSORS],
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Relation {
    database: u32,
    relid: u32,
    generation: u64,
}

/// Prepared transactions that wrote rows of a relation and are not decided yet.
const HELD: usize = 64;

/// A relation a prepared transaction holds (see `CacheView::hold_for_prepared`).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Held {
    database: u32,
    relid: u32,
    xid: u32,
}

#[repr(C)]
pub struct Header {
    pub sets: u32,
    pub chunks: u32,
    free_chunk: u32,
    clock: u32,
    /// Reads answered from the cache, reads that were not, and loads refused because a commit raced.
    pub hits: u64,
    pub misses: u64,
    pub refused: u64,
    versions: [u64; BUCKETS],
    relations: [Relation; RELATIONS],
    held_count: u32,
    held: [Held; HELD],
}

/// Bytes a region needs for `keys` entries and `events` events.
impl ClockEntry for Entry {
    fn in_use(&self) -> bool {
        self.live == 1
    }
    fn take_recent_use(&mut self) -> bool {
        std::mem::replace(&mut self.recently_used, 0) == 1
    }
}

/// The cache's size when the settings say -1: about a sixteenth of `shared_buffers` for events
/// (at least a million), and a key for every eight events (at least 131,072). The default 128 MB
/// of shared buffers gives 131,072 keys and 1M events (about 50 MB in all); 1 GB gives 2.2M events
/// and 280k keys. A dense table's windows (1,000 keys of 1,000 events an hour) or a sparse one's
/// (100k+ keys) then fit without evicting each other.
pub fn auto_size(shared_buffers: u64) -> (usize, usize) {
    let events = (shared_buffers / 16 / 30).clamp(1_000_000, 100_000_000) as usize;
    let keys = (events / 8).clamp(131_072, 10_000_000);
    (keys, events)
}

pub fn region_size(keys: usize, events: usize) -> usize {
    let sets = keys.div_ceil(WAYS).max(1);
    let chunks = events.div_ceil(CHUNK_EVENTS).max(1);
    // Room to align the chunks to a cache line (`CacheView::new`).
    let align = std::mem::align_of::<Chunk>();
    std::mem::size_of::<Header>() + sets * WAYS * (std::mem::size_of::<Entry>() + 8) + align + chunks * std::mem::size_of::<Chunk>()
}

pub struct CacheView<'a> {
    header: &'a mut Header,
    entries: &'a mut [Entry],
    /// A few bits of each entry's key hash (0 when free), side by side: a lookup reads one
    /// cache line for the whole set and touches only the entry that matches.
    tags: &'a mut [u64],
    chunks: &'a mut [Chunk],
}

impl<'a> CacheView<'a> {
    /// Views a region of `region_size(keys, events)` bytes.
    ///
    /// # Safety
    /// `base` must point to such a region, aligned to 8 bytes, and no one else may use it while the
    /// view lives. With `init`, the region is (re)initialised; otherwise it must have been before.
    pub unsafe fn new(base: *mut u8, keys: usize, events: usize, init: bool) -> CacheView<'a> {
        let sets = keys.div_ceil(WAYS).max(1);
        let nchunks = events.div_ceil(CHUNK_EVENTS).max(1);
        let header = &mut *(base as *mut Header);
        let entries_ptr = base.add(std::mem::size_of::<Header>()) as *mut Entry;
        let tags_ptr = (entries_ptr as *mut u8).add(sets * WAYS * std::mem::size_of::<Entry>()) as *mut u64;
        let tags_end = tags_ptr.add(sets * WAYS) as *mut u8;
        let chunks_ptr = tags_end.add(tags_end.align_offset(std::mem::align_of::<Chunk>())) as *mut Chunk;
        if init {
            std::ptr::write_bytes(base, 0, region_size(keys, events));
            header.sets = sets as u32;
            header.chunks = nchunks as u32;
            header.free_chunk = 0;
            for i in 0..nchunks {
                (*chunks_ptr.add(i)).next = if i + 1 < nchunks { (i + 1) as u32 } else { NONE };
            }
        }
        let entries = std::slice::from_raw_parts_mut(entries_ptr, sets * WAYS);
        let tags = std::slice::from_raw_parts_mut(tags_ptr, sets * WAYS);
        let chunks = std::slice::from_raw_parts_mut(chunks_ptr, nchunks);
        CacheView { header, entries, tags, chunks }
    }

    fn bucket(id: &KeyId) -> usize {
        (id.hash[0] as usize ^ id.relid as usize) % BUCKETS
    }

    /// The version a loader reads before querying the table.
    pub fn version(&self, id: &KeyId) -> u64 {
        self.header.versions[Self::bucket(id)]
    }

    /// Every bucket's version, for a loader that reads many keys in one query.
    pub fn versions(&self) -> Vec<u64> {
        self.header.versions.to_vec()
    }

    /// The version `id` had in a `versions()` copy.
    pub fn version_in(versions: &[u64], id: &KeyId) -> u64 {
        versions[Self::bucket(id)]
    }

    fn generation(&self, database: u32, relid: u32) -> u64 {
        // Slots are taken in order and never given back: the used ones are a prefix.
        self.header.relations.iter().take_while(|r| r.relid != 0).find(|r| r.database == database && r.relid == relid).map_or(0, |r| r.generation)
    }

    /// Forgets every entry of a relation (its rows changed in a way the cache cannot follow).
    pub fn invalidate_relation(&mut self, database: u32, relid: u32) {
        let rels = &mut self.header.relations;
        if let Some(r) = rels.iter_mut().find(|r| r.database == database && r.relid == relid) {
            r.generation += 1;
        } else if let Some(r) = rels.iter_mut().find(|r| r.relid == 0) {
            *r = Relation { database, relid, generation: 1 };
        } else {
            // No room to track it: forget everything.
            for i in 0..self.entries.len() {
                self.free_entry(i);
            }
        }
    }

    /// A prepared transaction wrote rows of the relation. Whether they count is decided later,
    /// by COMMIT PREPARED or ROLLBACK PREPARED, in a transaction that calls no hook of ours: until
    /// then the relation is read from its table (see `held`), and what was cached is forgotten.
    /// Slots of decided transactions are freed first; false when none is free.
    pub fn hold_for_prepared(&mut self, database: u32, relid: u32, xid: u32, running: impl Fn(u32) -> bool) -> bool {
        for i in 0..HELD {
            let h = self.header.held[i];
            if h.relid != 0 && !running(h.xid) {
                self.release(i);
            }
        }
        let Some(i) = self.header.held.iter().position(|h| h.relid == 0) else { return false };
        self.header.held[i] = Held { database, relid, xid };
        self.header.held_count += 1;
        self.invalidate_relation(database, relid);
        true
    }

    /// Whether an undecided prepared transaction holds the relation: its reads must then go to the
    /// table. A decided one is let go, and the relation forgotten once more (its rows now count,
    /// or never will, and a load in between may have cached either).
    pub fn held(&mut self, database: u32, relid: u32, running: impl Fn(u32) -> bool) -> bool {
        if self.header.held_count == 0 {
            return false;
        }
        let mut held = false;
        for i in 0..HELD {
            let h = self.header.held[i];
            if h.relid != relid || h.database != database {
                continue;
            }
            if running(h.xid) {
                held = true;
            } else {
                self.release(i);
            }
        }
        held
    }

    /// `COMMIT PREPARED` has committed: a load begun before it read the table without the
    /// transaction's rows, and must not be cached (every key's version moves on). With
    /// `forget_database`, the database's entries go too: a transaction prepared before the server
    /// started was never held (the registry is in shared memory, lost with the restart), so keys
    /// loaded since may lack its rows.
    pub fn prepared_committed(&mut self, forget_database: Option<u32>) {
        for v in self.header.versions.iter_mut() {
            *v += 1;
        }
        if let Some(database) = forget_database {
            for i in 0..self.entries.len() {
                if self.entries[i].live == 1 && self.entries[i].id.database == database {
                    self.free_entry(i);
                }
            }
        }
    }

    fn release(&mut self, i: usize) {
        let h = std::mem::take(&mut self.header.held[i]);
        self.header.held_count -= 1;
        self.invalidate_relation(h.database, h.relid);
    }

    /// A key may live in either of two sets (two-choice hashing). With one set per key, a cache
    /// half full left about 1% of keys without room, and those evicted each other on every visit
    /// (a table load for each). A key now goes to the emptier of its two sets.
    fn sets_of(&self, id: &KeyId) -> [std::ops::Range<usize>; 2] {
        let sets = self.header.sets as u64;
        let (a, b) = ((id.hash[1] % sets) as usize, ((id.hash[1] >> 32 ^ id.hash[0].rotate_left(17)) % sets) as usize);
        [a * WAYS..(a + 1) * WAYS, b * WAYS..(b + 1) * WAYS]
    }

    fn tag(id: &KeyId) -> u64 {
        id.hash[0] | 1
    }

    fn find(&self, id: &KeyId) -> Option<usize> {
        let generation = self.generation(id.database, id.relid);
        let tag = Self::tag(id);
        self.sets_of(id).into_iter().flatten().find(|&i| {
            self.tags[i] == tag && {
                let e = &self.entries[i];
                e.live == 1 && e.id == *id && e.generation == generation
            }
        })
    }

    fn free_entry(&mut self, i: usize) {
        if self.entries[i].live == 1 {
            let mut c = self.entries[i].head;
            while c != NONE {
                let next = self.chunks[c as usize].next;
                self.chunks[c as usize].next = self.header.free_chunk;
                self.chunks[c as usize].len = 0;
                self.header.free_chunk = c;
                c = next;
            }
        }
        self.entries[i].live = 0;
        self.tags[i] = 0;
        self.entries[i].head = NONE;
        self.entries[i].tail = NONE;
        self.entries[i].cursors = NO_CURSORS;
    }

    fn alloc_chunk(&mut self, keep: usize) -> Option<u32> {
        for _ in 0..2 * self.entries.len() {
            let c = self.header.free_chunk;
            if c != NONE {
                self.header.free_chunk = self.chunks[c as usize].next;
                self.chunks[c as usize].next = NONE;
                self.chunks[c as usize].reset();
                return Some(c);
            }
            // Out of chunks: evict an entry the clock finds unused since it last passed.
            if let Some(i) = clock_step(&mut self.header.clock, self.entries, keep) {
                self.free_entry(i);
            }
        }
        None
    }

    fn push(&mut self, i: usize, ev: CachedEvent) -> bool {
        let tail = self.entries[i].tail;
        if tail != NONE && (self.chunks[tail as usize].len as usize) < CHUNK_EVENTS {
            self.chunks[tail as usize].add(ev);
            return true;
        }
        let Some(new) = self.alloc_chunk(i) else { return false };
        self.chunks[new as usize].add(ev);
        if tail == NONE {
            self.entries[i].head = new;
        } else {
            let t = &self.chunks[tail as usize];
            let before = Totals {
                count: t.before.count + t.len as i64,
                located: t.before.located + t.located as i64,
                sum: t.before.sum + t.sum,
                sum_sq: t.before.sum_sq + t.sum_sq,
            };
            let (prev_run, prev_last) = (t.run(), t.last_t().unwrap_or(i64::MIN));
            self.chunks[tail as usize].next = new;
            let n = &mut self.chunks[new as usize];
            (n.before, n.prev_run, n.prev_last) = (before, prev_run, prev_last);
        }
        self.entries[i].tail = new;
        true
    }

    /// Stores what a loader read: every committed event of the key at or after `from`, sorted by
    /// time. Refused (false) if a commit touched the key's bucket since `version` was read.
    pub fn insert_loaded(&mut self, id: KeyId, from: i64, events: &[CachedEvent], version: u64) -> bool {
        if self.version(&id) != version {
            self.header.refused += 1;
            return false;
        }
        let slot = match self.find(&id) {
            Some(i) => i,
            None => {
                // The emptier of the two sets; when both are full, an entry not used lately.
                let is_free = |i: &usize| {
                    self.entries[*i].live == 0
                        || self.entries[*i].generation != self.generation(self.entries[*i].id.database, self.entries[*i].id.relid)
                };
                let [a, b] = self.sets_of(&id);
                let (fa, fb) = (a.clone().filter(is_free).count(), b.clone().filter(is_free).count());
                let set = if fb > fa { b } else { a };
                let victim = set.clone().find(is_free).or_else(|| set.clone().find(|&i| self.entries[i].recently_used == 0));
                victim.unwrap_or(set.start)
            }
        };
        self.free_entry(slot);
        let generation = self.generation(id.database, id.relid);
        self.entries[slot] =
            Entry { id, live: 1, recently_used: 1, generation, from, head: NONE, tail: NONE, head_last: i64::MIN, cursors: NO_CURSORS };
        self.tags[slot] = Self::tag(&id);
        for ev in events {
            if !self.push(slot, *ev) {
                self.free_entry(slot);
                return false;
            }
        }
        true
    }

    /// A committed transaction's events for one key (sorted by time; each with the xid that inserted
    /// it). Always bumps the bucket's version; appends only when the key is cached and its loader
    /// did not already see the transaction.
    /// Events older than the entry's newest are inserted in order.
    pub fn append_committed(&mut self, id: KeyId, events: &[CachedEvent]) {
        let b = Self::bucket(&id);
        self.header.versions[b] = self.header.versions[b].wrapping_add(1);
        let Some(i) = self.find(&id) else { return };
        let (Some(first), Some(last)) = (events.first(), events.last()) else { return };
        // Did the loader see this transaction? Only events in our time range can tell, and the
        // chunks around it are found without copying the key's events.
        let ours = |e: &CachedEvent| events.iter().any(|n| n.xid == e.xid);
        let tail = self.entries[i].tail;
        let newest = if tail == NONE { None } else { self.chunks[tail as usize].last_t() };
        // Usually every held event is older than ours and none can be ours. Otherwise look from
        // the furthest cursor that cannot have passed an event at or after `first`.
        if newest.is_some_and(|n| n >= first.t) {
            let e = &self.entries[i];
            let mut c = e.cursors.iter().filter(|k| k.chunk != NONE && k.lo <= first.t).max_by_key(|k| k.lo).map_or(e.head, |k| k.chunk);
            while c != NONE {
                let chunk = &self.chunks[c as usize];
                if chunk.span().is_some_and(|(from, to)| to >= first.t && from <= last.t)
                    && chunk.events[..chunk.len as usize].iter().any(|e| e.t >= first.t && e.t <= last.t && ours(e))
                {
                    return;
                }
                c = chunk.next;
            }
        }
        let from = self.entries[i].from;
        // The usual case: the new events are the newest. Append them in place.
        if newest.is_none_or(|n| first.t >= n) {
            for ev in events.iter().filter(|e| e.t >= from) {
                if !self.push(i, *ev) {
                    self.free_entry(i);
                    return;
                }
            }
            return;
        }
        let mut all = self.events(i);
        all.extend(events.iter().filter(|e| e.t >= from));
        all.sort_by_key(|e| e.t);
        let (entry_id, recently_used, generation) = (self.entries[i].id, self.entries[i].recently_used, self.entries[i].generation);
        self.free_entry(i);
        self.entries[i] =
            Entry { id: entry_id, live: 1, recently_used, generation, from, head: NONE, tail: NONE, head_last: i64::MIN, cursors: NO_CURSORS };
        self.tags[i] = Self::tag(&entry_id);
        for ev in all {
            if !self.push(i, ev) {
                self.free_entry(i);
                return;
            }
        }
    }

    fn events(&self, i: usize) -> Vec<CachedEvent> {
        let mut out = Vec::new();
        let mut c = self.entries[i].head;
        while c != NONE {
            let chunk = &self.chunks[c as usize];
            out.extend_from_slice(&chunk.events[..chunk.len as usize]);
            c = chunk.next;
        }
        out
    }

    /// Frees the chunks whose events are all older than `keep_from`, and raises the entry's
    /// `from` past them: without this a busy key's list would grow with its traffic, and every
    /// read would walk chunks no window needs. An older window than that reloads from the table.
    pub fn prune(&mut self, id: &KeyId, keep_from: i64) {
        if let Some(i) = self.find(id) {
            self.drop_expired(i, keep_from);
        }
    }

    fn drop_expired(&mut self, i: usize, keep_from: i64) {
        if self.entries[i].head_last >= keep_from {
            return;
        }
        loop {
            let head = self.entries[i].head;
            if head == NONE {
                return;
            }
            let chunk = &self.chunks[head as usize];
            let Some(last) = chunk.last_t() else { return };
            if last >= keep_from {
                self.entries[i].head_last = last;
                return;
            }
            let next = chunk.next;
            self.chunks[head as usize].next = self.header.free_chunk;
            self.chunks[head as usize].len = 0;
            self.header.free_chunk = head;
            let e = &mut self.entries[i];
            e.head = next;
            if next == NONE {
                e.tail = NONE;
            }
            for cursor in e.cursors.iter_mut().filter(|c| c.chunk == head) {
                *cursor = NO_CURSORS[0];
            }
            // Sorted chunks: every event after `last` is still held.
            e.from = e.from.max(last + 1);
        }
    }

    /// The cached events of a key if they reach back to `need_from`, else `None`.
    #[cfg(test)]
    pub fn read(&mut self, id: &KeyId, need_from: i64) -> Option<Vec<CachedEvent>> {
        let i = self.lookup(id, need_from)?;
        Some(self.events(i))
    }

    /// The entry of a key that reaches back to `need_from`, counted as a hit (and marked used) or
    /// a miss.
    fn lookup(&mut self, id: &KeyId, need_from: i64) -> Option<usize> {
        let Some(i) = self.find(id).filter(|&i| self.entries[i].from <= need_from) else {
            self.header.misses += 1;
            return None;
        };
        self.header.hits += 1;
        self.entries[i].recently_used = 1;
        Some(i)
    }

    /// The window stats of a cached key, computed in place together with `extra` events (this
    /// transaction's own), if the entry reaches back to `need_from`.
    pub fn window_stats(
        &mut self,
        id: &KeyId,
        need_from: i64,
        plan: &WindowPlan,
        t: i64,
        loc: u32,
        extra: &[CachedEvent],
    ) -> Option<Vec<WindowStats>> {
        let i = self.lookup(id, need_from)?;
        self.drop_expired(i, need_from);
        let mut stats = vec![WindowStats::default(); plan.windows.len()];
        let tail = self.entries[i].tail;
        let tail_in_time = tail != NONE && self.chunks[tail as usize].last_t().is_some_and(|l| l <= t);
        for (w, (window, needs)) in plan.windows.iter().zip(&plan.needs).enumerate() {
            let (lo, s) = (crate::window::window_from(t, *window), &mut stats[w]);
            let mut places = Vec::new();
            let start = self.window_start(i, *window, lo);
            // Location figures depend on this row's location: those windows look at each chunk.
            let per_event = needs.distinct_locations || needs.other_locations;
            // Location figures come from counts too while the whole window lies in one run.
            let run = if tail == NONE { NO_RUN } else { self.chunks[tail as usize].run() };
            let one_place = !per_event || (run.loc != MIXED && run.from <= lo);
            if one_place && !needs.max && tail_in_time && start != NONE {
                // The usual read: the window runs from a chunk to the newest event. The first
                // chunk may start before the window; the whole chunks after it are one difference.
                let first = &self.chunks[start as usize];
                let whole = if first.first >= lo {
                    start
                } else {
                    first.events[..first.len as usize].iter().for_each(|e| add_event(s, &mut places, e, lo, t, loc));
                    first.next
                };
                if whole != NONE {
                    let (from, to) = (&self.chunks[whole as usize].before, &self.chunks[tail as usize]);
                    s.count += to.before.count + to.len as i64 - from.count;
                    s.sum += to.before.sum + to.sum - from.sum;
                    s.sum_sq += to.before.sum_sq + to.sum_sq - from.sum_sq;
                    let located = to.before.located + to.located as i64 - from.located;
                    if per_event && located > 0 {
                        add_place(s, &mut places, run.loc, located, loc);
                    }
                }
                extra.iter().for_each(|e| add_event(s, &mut places, e, lo, t, loc));
                s.distinct_locations = places.len() as i64;
                continue;
            }
            let mut c = start;
            while c != NONE {
                let chunk = &self.chunks[c as usize];
                c = chunk.next;
                let events = &chunk.events[..chunk.len as usize];
                let Some((first, last)) = chunk.span() else { continue };
                if first > t {
                    break;
                }
                if first >= lo && last <= t && !(per_event && chunk.mixed == 1) {
                    s.count += events.len() as i64;
                    s.sum += chunk.sum;
                    s.sum_sq += chunk.sum_sq;
                    if chunk.max > f64::NEG_INFINITY {
                        s.max = Some(s.max.map_or(chunk.max, |m| m.max(chunk.max)));
                    }
                    if per_event && chunk.located > 0 {
                        add_place(s, &mut places, chunk.loc, chunk.located as i64, loc);
                    }
                } else {
                    events.iter().for_each(|e| add_event(s, &mut places, e, lo, t, loc));
                }
            }
            extra.iter().for_each(|e| add_event(s, &mut places, e, lo, t, loc));
            s.distinct_locations = places.len() as i64;
        }
        Some(stats)
    }

    /// The first chunk holding an event at or after `lo`, found from where the last read of the
    /// same window stopped (or from the head when `lo` moved back or the window is new).
    fn window_start(&mut self, i: usize, window: i64, lo: i64) -> u32 {
        let cursors = self.entries[i].cursors;
        let slot = cursors.iter().position(|c| c.chunk != NONE && c.window == window);
        let mut c = match slot {
            Some(k) if cursors[k].lo <= lo => cursors[k].chunk,
            _ => self.entries[i].head,
        };
        while c != NONE && self.chunks[c as usize].last_t().is_none_or(|l| l < lo) {
            c = self.chunks[c as usize].next;
        }
        if c != NONE {
            let k = slot.or_else(|| cursors.iter().position(|c| c.chunk == NONE)).unwrap_or(window.unsigned_abs() as usize % CURSORS);
            self.entries[i].cursors[k] = Cursor { window, lo, chunk: c };
        }
        c
    }

    /// Live entries and the events they hold.
    pub fn usage(&self) -> (u64, u64) {
        let live: Vec<usize> = (0..self.entries.len()).filter(|&i| self.entries[i].live == 1).collect();
        let events = live.iter().map(|&i| self.events(i).len() as u64).sum();
        (live.len() as u64, events)
    }

    pub fn header(&self) -> &Header {
        self.header
    }
}

/// The window aggregates of `events` for a transaction at `t` with location hash `loc`, as the
/// window query computes them over stored rows in `[t - window, t]`.
pub fn stats_from_events(events: &[CachedEvent], plan: &WindowPlan, t: i64, loc: u32) -> Vec<WindowStats> {
    plan.windows
        .iter()
        .map(|window| {
            let mut s = WindowStats::default();
            let mut places = Vec::new();
            events.iter().for_each(|e| add_event(&mut s, &mut places, e, crate::window::window_from(t, *window), t, loc));
            s.distinct_locations = places.len() as i64;
            s
        })
        .collect()
}

/// Adds one event to a window's stats if it lies in `[lo, t]`; `places` collects distinct locations.
fn add_event(s: &mut WindowStats, places: &mut Vec<u32>, e: &CachedEvent, lo: i64, t: i64, loc: u32) {
    if e.t < lo || e.t > t {
        return;
    }
    s.count += 1;
    if !e.amount.is_nan() {
        s.sum += e.amount;
        s.sum_sq += e.amount * e.amount;
        s.max = Some(s.max.map_or(e.amount, |m| m.max(e.amount)));
    }
    if e.loc != 0 {
        add_place(s, places, e.loc, 1, loc);
    }
}

/// Adds `n` events, all at `place`, to a window's location figures for a row at `loc`.
fn add_place(s: &mut WindowStats, places: &mut Vec<u32>, place: u32, n: i64, loc: u32) {
    if loc != 0 && place != loc {
        s.other_locations += n;
    }
    if loc != 0 && place == loc {
        s.same_location += n;
    }
    if !places.contains(&place) {
        places.push(place);
    }
}

/// A map keyed by cache keys. Their hash is already a strong one, so the map mixes its words
/// cheaply instead of running SipHash over them for every row of a batch.
pub type KeyMap<V> = std::collections::HashMap<KeyId, V, std::hash::BuildHasherDefault<KeyHasher>>;

#[derive(Default)]
pub struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// A location's hash as the cache stores it (never 0, which means null).
pub fn location_hash(loc: Option<&str>) -> u32 {
    match loc {
        None => 0,
        Some(s) => {
            let h = fnv64(s.as_bytes(), 0xcbf2_9ce4_8422_2325);
            ((h ^ (h >> 32)) as u32).max(1)
        }
    }
}

/// Two independent 64-bit hashes of a key's text.
pub fn key_hash(key: &str) -> [u64; 2] {
    [fnv64(key.as_bytes(), 0xcbf2_9ce4_8422_2325), fnv64(key.as_bytes(), 0x8422_2325_cbf2_9ce4)]
}

fn fnv64(bytes: &[u8], seed: u64) -> u64 {
    let mut h = seed;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^ (h >> 29)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{parse_condition, Rule};
    use serde_json::json;

    struct Region(Vec<u64>, usize, usize);

    impl Region {
        fn new(keys: usize, events: usize) -> Region {
            Region(vec![0u64; region_size(keys, events) / 8 + 1], keys, events)
        }
        fn view(&mut self, init: bool) -> CacheView<'_> {
            // SAFETY: the vector holds the region's bytes, aligned for u64; `&mut self` keeps it to this view.
            unsafe { CacheView::new(self.0.as_mut_ptr() as *mut u8, self.1, self.2, init) }
        }
    }

    fn plan_of(rules: &[(&str, serde_json::Value)]) -> WindowPlan {
        let rules: Vec<Rule> = rules.iter().enumerate().map(|(i, (t, c))| Rule::new(i as i32, 1, 0.5, parse_condition(t, c).unwrap())).collect();
        WindowPlan::for_rules(&rules)
    }

    fn id(key: &str) -> KeyId {
        KeyId { database: 1, relid: 100, hash: key_hash(key) }
    }

    fn ev(t: i64, amount: f64, xid: u32) -> CachedEvent {
        CachedEvent { t, amount, loc: location_hash(Some("A")), xid }
    }

    #[test]
    fn loaded_entries_are_read_back_and_commits_append() {
        let mut r = Region::new(64, 200);
        let mut c = r.view(true);
        let v = c.version(&id("k"));
        let loaded: Vec<_> = (0..40).map(|i| ev(i * 10, 1.0, 7)).collect();
        assert!(c.insert_loaded(id("k"), 0, &loaded, v));
        assert_eq!(c.read(&id("k"), 0).unwrap().len(), 40);
        assert_eq!(c.read(&id("k"), -1), None, "not reaching back far enough");
        c.append_committed(id("k"), &[ev(500, 2.0, 9), ev(505, 3.0, 9)]);
        assert_eq!(c.read(&id("k"), 0).unwrap().len(), 42);
        // The same transaction again (the loader had seen it): not appended twice.
        c.append_committed(id("k"), &[ev(500, 2.0, 9), ev(505, 3.0, 9)]);
        assert_eq!(c.read(&id("k"), 0).unwrap().len(), 42);
        // A transaction with a savepoint inserts under two xids; the loader saw one of them.
        let v = c.version(&id("s"));
        assert!(c.insert_loaded(id("s"), 0, &[ev(600, 1.0, 20)], v));
        c.append_committed(id("s"), &[ev(590, 1.0, 19), ev(600, 1.0, 20)]);
        assert_eq!(c.read(&id("s"), 0).unwrap().len(), 1);
        // An out-of-order event lands in time order.
        c.append_committed(id("k"), &[ev(15, 5.0, 11)]);
        let all = c.read(&id("k"), 0).unwrap();
        assert!(all.windows(2).all(|w| w[0].t <= w[1].t));
        assert_eq!(all.len(), 43);
    }

    #[test]
    fn a_prepared_transaction_holds_its_relation_until_decided_and_then_it_is_reloaded() {
        let mut r = Region::new(64, 200);
        let mut c = r.view(true);
        let v = c.version(&id("k"));
        assert!(c.insert_loaded(id("k"), 0, &[ev(5, 1.0, 3)], v));
        assert!(!c.held(1, 100, |_| true), "nothing prepared");
        // PREPARE of transaction 50, which wrote rows of relation 100: what was cached goes.
        assert!(c.hold_for_prepared(1, 100, 50, |_| true));
        assert_eq!(c.read(&id("k"), 0), None);
        assert!(c.held(1, 100, |xid| xid == 50), "undecided: read the table");
        assert!(!c.held(1, 200, |_| true), "another relation is not held");
        // A load while it is undecided is cached, then forgotten once it is decided.
        let v = c.version(&id("k"));
        assert!(c.insert_loaded(id("k"), 0, &[ev(5, 1.0, 3)], v));
        assert!(!c.held(1, 100, |_| false));
        assert_eq!(c.read(&id("k"), 0), None, "reloaded after COMMIT PREPARED");
        // Slots are bounded; decided transactions free theirs.
        for xid in 0..HELD as u32 {
            assert!(c.hold_for_prepared(1, 100, 1000 + xid, |_| true));
        }
        assert!(!c.hold_for_prepared(1, 100, 2000, |_| true), "no slot free");
        assert!(c.hold_for_prepared(1, 100, 2000, |xid| xid != 1000));
    }

    /// COMMIT PREPARED refuses the loads under way, and, for a transaction prepared before the
    /// server started, forgets its database's keys (and only those).
    #[test]
    fn commit_prepared_refuses_loads_under_way_and_can_forget_a_database() {
        let mut r = Region::new(64, 200);
        let mut c = r.view(true);
        let other = KeyId { database: 2, ..id("k") };
        for key in [id("k"), id("j"), other] {
            let v = c.version(&key);
            assert!(c.insert_loaded(key, 0, &[ev(5, 1.0, 3)], v));
        }
        let under_way = c.version(&id("m"));
        c.prepared_committed(None);
        assert!(!c.insert_loaded(id("m"), 0, &[ev(5, 1.0, 3)], under_way), "read before the commit");
        assert!(c.read(&id("k"), 0).is_some(), "a transaction held while prepared forgets nothing more");
        c.prepared_committed(Some(1));
        assert_eq!((c.read(&id("k"), 0), c.read(&id("j"), 0)), (None, None));
        assert_eq!(c.read(&other, 0).map(|e| e.len()), Some(1), "another database's keys stay");
    }

    #[test]
    fn the_automatic_size_follows_shared_buffers_within_bounds() {
        assert_eq!(auto_size(128 << 20), (131_072, 1_000_000));
        let (keys, events) = auto_size(1 << 30);
        assert_eq!((keys, events), (279_620, 2_236_962));
        assert_eq!(auto_size(1 << 50), (10_000_000, 100_000_000));
    }

    #[test]
    fn a_commit_between_version_and_insert_refuses_the_load() {
        let mut r = Region::new(64, 200);
        let mut c = r.view(true);
        let v = c.version(&id("k"));
        c.append_committed(id("k"), &[ev(5, 1.0, 3)]);
        assert!(!c.insert_loaded(id("k"), 0, &[], v));
        assert_eq!(c.read(&id("k"), 0), None);
        // Other keys in other buckets are not affected.
        let v = c.version(&id("other"));
        assert!(c.insert_loaded(id("other"), 0, &[], v));
    }

    #[test]
    fn invalidation_and_pruning() {
        let mut r = Region::new(64, 200);
        let mut c = r.view(true);
        let v = c.version(&id("k"));
        // Three chunks: t 0..150, 160..310, 320..420.
        assert_eq!(CHUNK_EVENTS, 16);
        let loaded: Vec<_> = (0..43).map(|i| ev(i * 10, 1.0, 1)).collect();
        assert!(c.insert_loaded(id("k"), 0, &loaded, v));
        c.prune(&id("k"), 200);
        assert_eq!(c.read(&id("k"), 150), None, "the first chunk is gone: from is now 151");
        assert_eq!(c.read(&id("k"), 151).unwrap().len(), 27, "the chunk holding 200 stays whole");
        c.prune(&id("k"), 1000);
        assert_eq!(c.read(&id("k"), 421).unwrap().len(), 0, "all expired, still exact from 421");
        c.append_committed(id("k"), &[ev(430, 1.0, 2)]);
        assert_eq!(c.read(&id("k"), 421).unwrap().len(), 1);
        c.invalidate_relation(1, 100);
        assert_eq!(c.read(&id("k"), 421), None);
        let v = c.version(&id("k"));
        assert!(c.insert_loaded(id("k"), 0, &[ev(1, 1.0, 1)], v), "reloadable after invalidation");
        assert_eq!(c.read(&id("k"), 0).unwrap().len(), 1);
    }

    #[test]
    fn a_full_pool_evicts_cold_entries_and_stays_consistent() {
        let mut r = Region::new(64, 60);
        let mut c = r.view(true);
        for k in 0..50 {
            let key = format!("k{k}");
            let v = c.version(&id(&key));
            let events: Vec<_> = (0..10).map(|i| ev(i, 1.0, 1)).collect();
            c.insert_loaded(id(&key), 0, &events, v);
            // Whatever is cached is complete.
            if let Some(got) = c.read(&id(&key), 0) {
                assert_eq!(got.len(), 10);
            }
        }
        let cached = (0..50).filter(|k| c.read(&id(&format!("k{k}")), 0).is_some()).count();
        assert!((1..=4).contains(&cached), "{cached}");
        // A key too big for the whole pool is not cached at all.
        let v = c.version(&id("huge"));
        let events: Vec<_> = (0..100).map(|i| ev(i, 1.0, 1)).collect();
        assert!(!c.insert_loaded(id("huge"), 0, &events, v));
        assert_eq!(c.read(&id("huge"), 0), None);
    }

    #[test]
    fn a_cache_half_full_keeps_every_key() {
        // 40,000 slots in sets of 8, 20,000 keys: with a single set per key, 180 of them found
        // their set full.
        let mut r = Region::new(40_000, 20_000 * CHUNK_EVENTS);
        let mut c = r.view(true);
        for k in 0..20_000 {
            let key = format!("k{k}");
            let v = c.version(&id(&key));
            assert!(c.insert_loaded(id(&key), 0, &[ev(k, 1.0, 1)], v));
        }
        let missing = (0..20_000).filter(|k| c.read(&id(&format!("k{k}")), 0).is_none()).count();
        assert_eq!(missing, 0);
    }

    #[test]
    fn in_place_stats_equal_a_scan_of_all_events() {
        let plan = plan_of(&[
            ("threshold", json!({"metric": "total_amount", "value": 1, "window": "1 hour"})),
            ("threshold", json!({"metric": "max_amount", "value": 1, "window": "10 minutes"})),
            ("pattern", json!({"pattern": "location_change", "time_window": "5 minutes"})),
            ("anomaly", json!({"threshold": 3, "window": "24 hours"})),
        ]);
        let mut r = Region::new(64, 5000);
        let mut c = r.view(true);
        let s = 1_000_000i64;
        let mut rng = 7u64;
        let mut events = Vec::new();
        for i in 0..1000 {
            rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1);
            let amount = if rng.is_multiple_of(10) { f64::NAN } else { (rng >> 40) as f64 / 1000.0 };
            let loc = location_hash(Some(["A", "B", "C"][(rng >> 20) as usize % 3]));
            events.push(CachedEvent { t: i * 7 * s, amount, loc, xid: 1 });
        }
        let v = c.version(&id("k"));
        assert!(c.insert_loaded(id("k"), 0, &events, v));
        let extra = [CachedEvent { t: 6000 * s, amount: 5.0, loc: location_hash(Some("B")), xid: 2 }];
        for t in [0, 601 * s, 3600 * s, 6993 * s, 7100 * s] {
            let mut all = events.clone();
            all.extend(extra);
            let want = stats_from_events(&all, &plan, t, location_hash(Some("B")));
            let got = c.window_stats(&id("k"), 0, &plan, t, location_hash(Some("B")), &extra).unwrap();
            for ((g, w), needs) in got.iter().zip(&want).zip(&plan.needs) {
                assert_eq!(g.count, w.count, "at {t}");
                // Like the location figures, the maximum is computed where a rule reads it.
                if needs.max {
                    assert_eq!(g.max, w.max, "at {t}");
                }
                // Location figures are computed for the windows whose rules read them.
                if needs.other_locations {
                    assert_eq!(g.other_locations, w.other_locations, "at {t}");
                }
                assert!((g.sum - w.sum).abs() < 1e-6 && (g.sum_sq - w.sum_sq).abs() < 1e-3, "at {t}");
            }
        }
    }

    /// A key that stays busy for hours keeps about one window of events: reads drop what has
    /// expired, so neither memory nor the cost of a read grows with the key's traffic.
    #[test]
    fn a_busy_key_holds_one_window_and_its_stats_stay_exact() {
        let plan = plan_of(&[
            ("anomaly", json!({"threshold": 3, "window": "2 hours"})),
            ("threshold", json!({"metric": "transaction_count", "value": 1, "window": "1 hour"})),
            ("pattern", json!({"pattern": "location_change", "time_window": "30 minutes"})),
        ]);
        let longest = plan.windows[0];
        let s = 1_000_000i64;
        let mut r = Region::new(64, 2000);
        let mut c = r.view(true);
        let v = c.version(&id("k"));
        assert!(c.insert_loaded(id("k"), -longest, &[], v));
        let mut all = Vec::new();
        let mut past_hits = 0;
        // One event every 5 s for 10 hours: 7,200 events, 1,440 in the longest window.
        for i in 0..7200i64 {
            let t = i * 5 * s;
            // Long stretches at home, single trips away, a while of moving back and forth, and a
            // move to a new home on a chunk's first event.
            let place = match i {
                5400.. => "new home",
                _ if i % 997 == 0 || ((3000..3300).contains(&i) && i % 7 == 0) => "away",
                _ => "home",
            };
            let amount = if i % 31 == 0 { f64::NAN } else { (i % 13) as f64 };
            let e = CachedEvent { t, amount, loc: location_hash(Some(place)), xid: i as u32 + 10 };
            c.append_committed(id("k"), &[e]);
            all.push(e);
            if i % 10 == 0 {
                // Now and then a row from the past: its windows reach back before the cursors,
                // and further back than the key still holds once it is older than a chunk.
                let past = i % 70 == 0;
                let t = if past { t - 20 * s } else { t };
                let here = location_hash(Some(if i % 20 == 0 { "away" } else { "home" }));
                let Some(got) = c.window_stats(&id("k"), t - longest, &plan, t, here, &[]) else {
                    assert!(past, "a current read misses at {i}");
                    continue;
                };
                past_hits += past as u32;
                let want = stats_from_events(&all, &plan, t, here);
                for ((g, w), needs) in got.iter().zip(&want).zip(&plan.needs) {
                    assert_eq!(g.count, w.count, "at {i}");
                    if needs.other_locations {
                        assert_eq!(
                            (g.other_locations, g.same_location, g.distinct_locations),
                            (w.other_locations, w.same_location, w.distinct_locations),
                            "at {i}"
                        );
                    }
                    assert!((g.sum - w.sum).abs() < 1e-6 && (g.sum_sq - w.sum_sq).abs() < 1e-6, "at {i}");
                }
            }
        }
        assert!(past_hits > 10, "{past_hits} reads from the past were answered");
        let (_, held) = c.usage();
        assert!(held <= 1440 + 2 * CHUNK_EVENTS as u64, "holds {held} events for a 1,440-event window");
    }

    /// The sizes the settings' documentation gives (README, `cep.window_cache_events`).
    #[test]
    fn documented_sizes() {
        assert_eq!(std::mem::size_of::<Entry>() + 8, 144);
        assert_eq!(std::mem::size_of::<Chunk>() / CHUNK_EVENTS, 32);
        // The fields a window read walks and sums are in the chunk's first cache line.
        assert_eq!(std::mem::offset_of!(Chunk, mixed) + 2, 64);
        assert_eq!(std::mem::align_of::<Chunk>(), 64);
    }

    #[test]
    fn stats_match_the_window_query() {
        let plan = plan_of(&[
            ("threshold", json!({"metric": "transaction_count", "value": 1, "window": "10 seconds"})),
            ("threshold", json!({"metric": "distinct_locations", "value": 1, "window": "1 minute"})),
            ("pattern", json!({"pattern": "location_change", "time_window": "1 minute"})),
            ("anomaly", json!({"threshold": 3, "window": "1 minute"})),
        ]);
        let s = 1_000_000;
        let b = location_hash(Some("B"));
        let events = vec![
            CachedEvent { t: 0, amount: 10.0, loc: location_hash(Some("A")), xid: 1 },
            CachedEvent { t: 55 * s, amount: 20.0, loc: b, xid: 1 },
            CachedEvent { t: 60 * s, amount: f64::NAN, loc: 0, xid: 1 },
            CachedEvent { t: 61 * s, amount: 5.0, loc: b, xid: 2 },
        ];
        let st = stats_from_events(&events, &plan, 60 * s, b);
        // The minute [0, 60 s] holds the first three events: the one at exactly 0 is inside.
        assert_eq!(
            st[0],
            WindowStats { count: 3, sum: 30.0, max: Some(20.0), sum_sq: 500.0, distinct_locations: 2, other_locations: 1, same_location: 1 }
        );
        // Ten seconds: two events, only the count is needed but everything is computed.
        assert_eq!(st[1].count, 2);
    }
}
