//! Copies of partial-match states in shared memory, so that advancing a key need not read the
//! key's row from `cep.pattern_state` again.
//!
//! The rule that keeps a copy right: a key's row and its copy change only under the key's lock.
//! A transaction that writes a key's row puts its new text in the copy when it commits, before
//! it releases the lock; a reader takes the lock first. So a copy is either the row's committed
//! text, or absent. What a transaction cannot vouch for (a key written in a savepoint that
//! rolled back, or in a PREPAREd transaction, which commits later without us) drops the copy.
//!
//! `Slots` is the shared table: sets of `WAYS` entries, each holding the key and the state's
//! text in a chain of blocks from a shared pool. `Touched` is one transaction's list of what it
//! read and wrote.

use std::collections::HashMap;

use crate::clock::{clock_step, ClockEntry};

pub const WAYS: usize = 4;
/// States are stored in a pool of blocks, four per copy on average (about 1 kB); a busy key's
/// state, which grows with its open runs, takes as many as it needs.
pub const BLOCKS_PER_COPY: usize = 4;
const BLOCK_BYTES: usize = 248;
const NONE: u32 = u32::MAX;
const NO_ROW: u32 = u32::MAX;

/// Which definition a key belongs to.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Owner {
    pub database: u32,
    pub pattern: i32,
    /// Which install of pg_cep (the OID of `cep.patterns`): pattern ids restart after DROP and
    /// CREATE EXTENSION.
    pub generation: u32,
}

#[repr(C)]
struct Header {
    free: u32,
    clock: u32,
}

#[repr(C)]
struct Entry {
    used: u32,
    database: u32,
    pattern: i32,
    generation: u32,
    hash: u64,
    key_len: u32,
    /// `NO_ROW`: the key has no row (no partial match).
    text_len: u32,
    head: u32,
    recently_used: u32,
}

#[repr(C)]
struct Block {
    next: u32,
    data: [u8; BLOCK_BYTES],
}

fn layout(copies: usize) -> (usize, usize) {
    let entries = copies.div_ceil(WAYS).max(1) * WAYS;
    (entries, entries * BLOCKS_PER_COPY)
}

impl ClockEntry for Entry {
    fn in_use(&self) -> bool {
        self.used == 1
    }
    fn take_recent_use(&mut self) -> bool {
        std::mem::replace(&mut self.recently_used, 0) == 1
    }
}

pub fn region_size(copies: usize) -> usize {
    let (entries, blocks) = layout(copies);
    std::mem::size_of::<Header>().next_multiple_of(8) + entries * std::mem::size_of::<Entry>() + blocks * std::mem::size_of::<Block>()
}

pub struct Slots<'a> {
    header: &'a mut Header,
    entries: &'a mut [Entry],
    blocks: &'a mut [Block],
}

fn hash(owner: &Owner, key: &str) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    let bytes = owner.database.to_le_bytes().into_iter().chain(owner.pattern.to_le_bytes()).chain(owner.generation.to_le_bytes());
    for b in bytes.chain(key.bytes()) {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl<'a> Slots<'a> {
    /// # Safety
    /// `base` is 8-byte aligned and points to `region_size(copies)` bytes that nothing else
    /// accesses while the view lives. With `init`, they are set up as an empty table.
    pub unsafe fn new(base: *mut u8, copies: usize, init: bool) -> Slots<'a> {
        let (n_entries, n_blocks) = layout(copies);
        let header = &mut *(base as *mut Header);
        let entries_ptr = base.add(std::mem::size_of::<Header>().next_multiple_of(8)) as *mut Entry;
        let blocks_ptr = entries_ptr.add(n_entries) as *mut Block;
        let entries = std::slice::from_raw_parts_mut(entries_ptr, n_entries);
        let blocks = std::slice::from_raw_parts_mut(blocks_ptr, n_blocks);
        if init {
            for e in entries.iter_mut() {
                e.used = 0;
            }
            for (i, b) in blocks.iter_mut().enumerate() {
                b.next = if i + 1 < n_blocks { i as u32 + 1 } else { NONE };
            }
            (header.free, header.clock) = (0, 0);
        }
        Slots { header, entries, blocks }
    }

    fn set(&self, h: u64) -> std::ops::Range<usize> {
        let s = (h % (self.entries.len() / WAYS) as u64) as usize;
        s * WAYS..(s + 1) * WAYS
    }

    /// The stored bytes (the key's, then the text's), a slice per block.
    fn pieces(&self, i: usize) -> impl Iterator<Item = &[u8]> + '_ {
        let e = &self.entries[i];
        let mut left = e.key_len as usize + if e.text_len == NO_ROW { 0 } else { e.text_len as usize };
        let mut b = e.head;
        std::iter::from_fn(move || {
            if left == 0 || b == NONE {
                return None;
            }
            let block = &self.blocks[b as usize];
            let take = left.min(BLOCK_BYTES);
            (left, b) = (left - take, block.next);
            Some(&block.data[..take])
        })
    }

    /// Whether the entry's key is `key`, of the same length; compared in place, without a copy.
    fn key_is(&self, i: usize, key: &str) -> bool {
        key.as_bytes().chunks(BLOCK_BYTES).zip(self.pieces(i)).all(|(k, piece)| piece.starts_with(k))
    }

    fn find(&self, owner: &Owner, key: &str) -> Option<usize> {
        let h = hash(owner, key);
        self.set(h).find(|&i| {
            let e = &self.entries[i];
            e.used == 1
                && e.hash == h
                && (e.database, e.pattern, e.generation, e.key_len as usize) == (owner.database, owner.pattern, owner.generation, key.len())
                && self.key_is(i, key)
        })
    }

    /// The copy of the key's row: `Some(None)` when it is known to have none.
    pub fn get(&mut self, owner: &Owner, key: &str) -> Option<Option<String>> {
        let i = self.find(owner, key)?;
        self.entries[i].recently_used = 1;
        if self.entries[i].text_len == NO_ROW {
            return Some(None);
        }
        let data = self.pieces(i).collect::<Vec<_>>().concat();
        Some(Some(String::from_utf8_lossy(&data[key.len()..]).into_owned()))
    }

    fn free_entry(&mut self, i: usize) {
        if self.entries[i].used == 1 {
            let mut b = self.entries[i].head;
            while b != NONE {
                let next = self.blocks[b as usize].next;
                self.blocks[b as usize].next = self.header.free;
                self.header.free = b;
                b = next;
            }
        }
        self.entries[i].used = 0;
        self.entries[i].head = NONE;
    }

    /// A free block; when there is none, frees copies the clock finds unused since it last came by.
    fn alloc(&mut self, keep: usize) -> Option<u32> {
        for _ in 0..2 * self.entries.len() + 1 {
            let b = self.header.free;
            if b != NONE {
                self.header.free = self.blocks[b as usize].next;
                self.blocks[b as usize].next = NONE;
                return Some(b);
            }
            if let Some(i) = clock_step(&mut self.header.clock, self.entries, keep) {
                self.free_entry(i);
            }
        }
        None
    }

    /// Sets the copy to the row's committed text; one that finds no room is dropped.
    pub fn put(&mut self, owner: &Owner, key: &str, text: Option<&str>) {
        let bytes: Vec<u8> = key.bytes().chain(text.unwrap_or("").bytes()).collect();
        // A state too big to share the pool fairly is not copied: it would evict many others.
        if bytes.len() > self.blocks.len() * BLOCK_BYTES / 8 {
            self.drop_copy(owner, key);
            return;
        }
        let h = hash(owner, key);
        let i = self.find(owner, key).unwrap_or_else(|| {
            let set = self.set(h);
            let free = set.clone().find(|&i| self.entries[i].used == 0);
            free.or_else(|| set.clone().find(|&i| self.entries[i].recently_used == 0)).unwrap_or(set.start)
        });
        self.free_entry(i);
        let mut tail = NONE;
        for piece in bytes.chunks(BLOCK_BYTES) {
            let Some(b) = self.alloc(i) else {
                // Out of room: give back what this copy took.
                self.entries[i].used = 1;
                self.free_entry(i);
                return;
            };
            self.blocks[b as usize].data[..piece.len()].copy_from_slice(piece);
            if tail == NONE {
                self.entries[i].head = b;
            } else {
                self.blocks[tail as usize].next = b;
            }
            tail = b;
        }
        let e = &mut self.entries[i];
        (e.database, e.pattern, e.generation, e.hash) = (owner.database, owner.pattern, owner.generation, h);
        (e.key_len, e.text_len, e.recently_used, e.used) = (key.len() as u32, text.map_or(NO_ROW, |t| t.len() as u32), 1, 1);
    }

    pub fn drop_copy(&mut self, owner: &Owner, key: &str) {
        if let Some(i) = self.find(owner, key) {
            self.free_entry(i);
        }
    }

    /// Drops every copy of a pattern (its states were deleted without their keys' locks).
    pub fn drop_pattern(&mut self, database: u32, pattern: i32) {
        for i in 0..self.entries.len() {
            if self.entries[i].used == 1 && self.entries[i].database == database && self.entries[i].pattern == pattern {
                self.free_entry(i);
            }
        }
    }

    /// Blocks in the free list, for tests of the pool's bookkeeping.
    #[cfg(test)]
    fn free_blocks(&self) -> usize {
        let (mut n, mut b) = (0, self.header.free);
        while b != NONE {
            n += 1;
            b = self.blocks[b as usize].next;
        }
        n
    }
}

pub type SubXact = u32;

struct Touch {
    /// The row's text as this transaction left it (`None`: no row).
    text: Option<String>,
    wrote: bool,
    /// The savepoint that last touched it; `spoiled` once that savepoint rolled back.
    subxact: SubXact,
    spoiled: bool,
}

/// One transaction's reads and writes of states, turned into copies when it commits.
#[derive(Default)]
pub struct Touched {
    keys: HashMap<(Owner, String), Touch>,
}

/// What a commit does to a key's copy.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// Set it to this text (`None`: the key has no row).
    Put(Option<String>),
    Drop,
}

impl Touched {
    /// Records what the key's row holds now in this transaction, and whether this call wrote it.
    /// `trusted` is false where a read may not have seen the latest commit (a transaction
    /// snapshot): such a read is not copied, a write is.
    pub fn touch(&mut self, owner: Owner, key: &str, text: Option<String>, wrote: bool, trusted: bool, subxact: SubXact) {
        let t = self.keys.entry((owner, key.to_string())).or_insert(Touch { text: None, wrote: false, subxact, spoiled: false });
        // An untrusted read after a write in this transaction still knows the row: it wrote it.
        let known = trusted || wrote || (t.wrote && !t.spoiled);
        (t.text, t.wrote, t.subxact, t.spoiled) = (text, t.wrote || wrote, subxact, !known);
    }

    /// Whether this transaction touched the key (then its row is read, not the copy).
    pub fn contains(&self, owner: Owner, key: &str) -> bool {
        self.keys.contains_key(&(owner, key.to_string()))
    }

    pub fn subxact_abort(&mut self, subxact: SubXact) {
        for t in self.keys.values_mut().filter(|t| t.subxact == subxact) {
            t.spoiled = true;
        }
    }

    pub fn subxact_commit(&mut self, subxact: SubXact, parent: SubXact) {
        for t in self.keys.values_mut().filter(|t| t.subxact == subxact) {
            t.subxact = parent;
        }
    }

    /// At COMMIT: what to do with each touched key's copy. A read-only touch that cannot be
    /// trusted leaves the copy alone: the row did not change.
    pub fn commit(&mut self) -> Vec<(Owner, String, Outcome)> {
        let mut out = Vec::new();
        for ((owner, key), t) in self.keys.drain() {
            match (t.spoiled, t.wrote) {
                (false, _) => out.push((owner, key, Outcome::Put(t.text))),
                (true, true) => out.push((owner, key, Outcome::Drop)),
                (true, false) => {}
            }
        }
        out
    }

    /// At PREPARE: the transaction commits later, without us; drop the copies of what it wrote.
    pub fn prepare(&mut self) -> Vec<(Owner, String, Outcome)> {
        self.keys.drain().filter(|(_, t)| t.wrote).map(|((owner, key), _)| (owner, key, Outcome::Drop)).collect()
    }

    /// A rolled-back transaction changed nothing.
    pub fn abort(&mut self) {
        self.keys.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Region(Vec<u64>, usize);

    impl Region {
        fn new(copies: usize) -> Region {
            let mut r = Region(vec![0u64; region_size(copies) / 8 + 1], copies);
            // SAFETY: the vector holds the region's bytes, aligned for u64.
            let _ = unsafe { Slots::new(r.0.as_mut_ptr() as *mut u8, copies, true) };
            r
        }
        fn view(&mut self) -> Slots<'_> {
            // SAFETY: the vector holds the region's bytes, aligned for u64, set up by `new`; `&mut self` keeps it to this view.
            unsafe { Slots::new(self.0.as_mut_ptr() as *mut u8, self.1, false) }
        }
    }

    const P: Owner = Owner { database: 1, pattern: 1, generation: 100 };

    fn apply(slots: &mut Slots, outcomes: Vec<(Owner, String, Outcome)>) {
        for (owner, key, o) in outcomes {
            match o {
                Outcome::Put(text) => slots.put(&owner, &key, text.as_deref()),
                Outcome::Drop => slots.drop_copy(&owner, &key),
            }
        }
    }

    #[test]
    fn copies_are_found_by_owner_and_key() {
        let mut r = Region::new(64);
        let mut s = r.view();
        s.put(&P, "k", Some("state"));
        s.put(&P, "none", None);
        assert_eq!(s.get(&P, "k"), Some(Some("state".into())));
        assert_eq!(s.get(&P, "none"), Some(None), "known to have no row");
        assert_eq!(s.get(&P, "other"), None);
        // The same pattern id from another definition (after DROP and CREATE EXTENSION).
        assert_eq!(s.get(&Owner { generation: 101, ..P }, "k"), None);
        assert_eq!(s.get(&Owner { database: 2, ..P }, "k"), None);
        s.put(&P, "k", Some("newer"));
        assert_eq!(s.get(&P, "k"), Some(Some("newer".into())));
        // A big state spans blocks.
        let big = "0123456789".repeat(100);
        s.put(&P, "k", Some(&big));
        assert_eq!(s.get(&P, "k"), Some(Some(big)));
        s.drop_pattern(1, 1);
        assert_eq!(s.get(&P, "none"), None);
    }

    #[test]
    fn a_full_table_evicts_and_what_stays_is_exact() {
        let mut r = Region::new(8);
        let mut s = r.view();
        let text = |k: usize| format!("state of {k} ").repeat(k % 70);
        for k in 0..100 {
            s.put(&P, &format!("k{k}"), Some(&text(k)));
        }
        let kept: Vec<_> = (0..100).filter_map(|k| s.get(&P, &format!("k{k}")).map(|t| (k, t))).collect();
        assert!(!kept.is_empty() && kept.len() <= 8);
        assert!(kept.iter().all(|(k, t)| *t == Some(text(*k))));
        // A state bigger than an eighth of the pool is not copied, and evicts nothing.
        let before = (0..100).filter(|k| s.get(&P, &format!("k{k}")).is_some()).count();
        s.put(&P, "huge", Some(&"x".repeat(5 * BLOCK_BYTES)));
        assert_eq!(s.get(&P, "huge"), None);
        assert_eq!((0..100).filter(|k| s.get(&P, &format!("k{k}")).is_some()).count(), before);
        s.drop_pattern(1, 1);
        assert_eq!(s.free_blocks(), 8 * BLOCKS_PER_COPY);
    }

    #[test]
    fn commits_copy_what_they_can_vouch_for() {
        let mut r = Region::new(64);
        let mut s = r.view();
        let mut t = Touched::default();
        t.touch(P, "read", Some("a".into()), false, true, 1);
        t.touch(P, "wrote", Some("b".into()), true, true, 1);
        t.touch(P, "deleted", None, true, true, 1);
        assert!(t.contains(P, "read"));
        apply(&mut s, t.commit());
        assert!(!t.contains(P, "read"), "the next transaction starts afresh");
        assert_eq!(s.get(&P, "read"), Some(Some("a".into())));
        assert_eq!(s.get(&P, "wrote"), Some(Some("b".into())));
        assert_eq!(s.get(&P, "deleted"), Some(None));
        // Rolled back: nothing changes.
        t.touch(P, "wrote", Some("c".into()), true, true, 1);
        t.abort();
        apply(&mut s, t.commit());
        assert_eq!(s.get(&P, "wrote"), Some(Some("b".into())));
    }

    #[test]
    fn savepoints_snapshots_and_prepare() {
        let mut r = Region::new(64);
        let mut s = r.view();
        s.put(&P, "k", Some("old"));
        let mut t = Touched::default();
        // Written in a savepoint that rolled back: the row is what it was before, unknown here.
        t.touch(P, "k", Some("new".into()), true, true, 2);
        t.subxact_abort(2);
        apply(&mut s, t.commit());
        assert_eq!(s.get(&P, "k"), None);
        // Touched again after the rollback: known again.
        t.touch(P, "k", Some("x".into()), true, true, 3);
        t.subxact_abort(3);
        t.touch(P, "k", Some("y".into()), true, true, 1);
        apply(&mut s, t.commit());
        assert_eq!(s.get(&P, "k"), Some(Some("y".into())));
        // A committed savepoint hands its touches to its parent, whose rollback spoils them.
        t.touch(P, "k", Some("z".into()), true, true, 5);
        t.subxact_commit(5, 4);
        t.subxact_abort(4);
        apply(&mut s, t.commit());
        assert_eq!(s.get(&P, "k"), None);
        // A read under a transaction snapshot may be stale: not copied, the copy is left as is.
        s.put(&P, "k", Some("current"));
        t.touch(P, "k", Some("stale".into()), false, false, 1);
        apply(&mut s, t.commit());
        assert_eq!(s.get(&P, "k"), Some(Some("current".into())));
        // ...but what it wrote is the row.
        t.touch(P, "k", Some("w".into()), true, false, 1);
        apply(&mut s, t.commit());
        assert_eq!(s.get(&P, "k"), Some(Some("w".into())));
        // PREPARE TRANSACTION: the copies of what it wrote go.
        t.touch(P, "k", Some("p".into()), true, true, 1);
        t.touch(P, "r", Some("q".into()), false, true, 1);
        s.put(&P, "r", Some("q"));
        apply(&mut s, t.prepare());
        assert_eq!((s.get(&P, "k"), s.get(&P, "r")), (None, Some(Some("q".into()))));
    }
}
