//! The clock that picks what a full shared pool evicts (the window cache, the pattern-state
//! copies): the hand passes over the entries, clears the use mark of each recently used one, and
//! stops at the first in use that was not used since the hand last came by.

pub trait ClockEntry {
    fn in_use(&self) -> bool;
    /// Whether it was used since the hand last passed; clears the mark.
    fn take_recent_use(&mut self) -> bool;
}

/// Moves the hand one entry on; the index of the entry to evict, if this step found one.
/// `keep` (the entry being filled) is never chosen.
pub fn clock_step<E: ClockEntry>(hand: &mut u32, entries: &mut [E], keep: usize) -> Option<usize> {
    let i = *hand as usize % entries.len();
    *hand = hand.wrapping_add(1);
    let e = &mut entries[i];
    (i != keep && e.in_use() && !e.take_recent_use()).then_some(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct E(bool, bool);
    impl ClockEntry for E {
        fn in_use(&self) -> bool {
            self.0
        }
        fn take_recent_use(&mut self) -> bool {
            std::mem::replace(&mut self.1, false)
        }
    }

    #[test]
    fn the_hand_spares_recent_entries_once_and_never_the_kept_one() {
        let mut entries = vec![E(true, true), E(false, false), E(true, false), E(true, false)];
        let mut hand = 0;
        let picks: Vec<_> = (0..6).map(|_| clock_step(&mut hand, &mut entries, 3)).collect();
        // 0 was recent (spared, mark cleared), 1 is free, 2 is evictable, 3 is kept; then 0 again.
        assert_eq!(picks, [None, None, Some(2), None, Some(0), None]);
    }
}
