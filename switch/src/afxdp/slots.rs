//! Places in one XDP program instance's maps, handed to the interfaces it serves.
//!
//! Contract: an instance has [`MAX_XSKS`] socket entries and [`MAX_PORTS`] counter rows (the
//! sizes compiled into `xsk_redirect.bpf.c`). [`SlotSpace::take`] gives an interface with `queues`
//! rx queues a run of `queues` consecutive socket entries (first fit) and one row, or None when
//! either is used up; [`SlotSpace::give_back`] returns them (adjacent free runs merge, so a long
//! run is found again after many short ones came and went). Pure bookkeeping: the maps
//! themselves are written by [`super::xdp`].
use std::collections::BTreeMap;

/// Socket entries of an instance (`xsks_map`).
pub const MAX_XSKS: u32 = 8192;
/// Interfaces of an instance (`port_slots`, rows of `xdp_counters`).
pub const MAX_PORTS: u32 = 1024;

/// An interface's place: `xsks_map[xsk_base .. xsk_base + queues]` and counter row `row`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub xsk_base: u32,
    pub queues: u32,
    pub row: u32,
}

impl Slot {
    /// The value of the interface's `port_slots` entry (`struct port_slot`).
    pub fn map_value(&self) -> [u8; 16] {
        let mut v = [0u8; 16];
        v[0..4].copy_from_slice(&self.xsk_base.to_ne_bytes());
        v[4..8].copy_from_slice(&self.queues.to_ne_bytes());
        v[8..12].copy_from_slice(&self.row.to_ne_bytes());
        v
    }
}

/// The free places of one instance.
#[derive(Debug)]
pub struct SlotSpace {
    /// Free runs of socket entries: start → length.
    free_xsks: BTreeMap<u32, u32>,
    /// Free counter rows, lowest first out.
    free_rows: std::collections::BTreeSet<u32>,
}

impl Default for SlotSpace {
    fn default() -> Self {
        Self { free_xsks: [(0, MAX_XSKS)].into(), free_rows: (0..MAX_PORTS).collect() }
    }
}

impl SlotSpace {
    /// A place for an interface with `queues` rx queues (at least one entry).
    pub fn take(&mut self, queues: u32) -> Option<Slot> {
        let queues = queues.max(1);
        let (&start, &len) = self.free_xsks.iter().find(|(_, &len)| len >= queues)?;
        let row = *self.free_rows.first()?;
        self.free_rows.remove(&row);
        self.free_xsks.remove(&start);
        if len > queues {
            self.free_xsks.insert(start + queues, len - queues);
        }
        Some(Slot { xsk_base: start, queues, row })
    }

    /// Returns `slot`'s place.
    pub fn give_back(&mut self, slot: Slot) {
        self.free_rows.insert(slot.row);
        let (mut start, mut len) = (slot.xsk_base, slot.queues);
        if let Some((&before, &before_len)) = self.free_xsks.range(..start).next_back() {
            if before + before_len == start {
                self.free_xsks.remove(&before);
                start = before;
                len += before_len;
            }
        }
        if let Some(after_len) = self.free_xsks.remove(&(start + len)) {
            len += after_len;
        }
        self.free_xsks.insert(start, len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_consecutive_and_merge_again_when_given_back() {
        let mut s = SlotSpace::default();
        let a = s.take(1).unwrap();
        let b = s.take(4).unwrap();
        let c = s.take(2).unwrap();
        assert_eq!((a.xsk_base, b.xsk_base, c.xsk_base), (0, 1, 5));
        assert_eq!((a.row, b.row, c.row), (0, 1, 2));
        s.give_back(a);
        s.give_back(c);
        // A run of 3 does not fit in the hole of 1: it goes after c's merged tail.
        let d = s.take(3).unwrap();
        assert_eq!(d.xsk_base, 5);
        assert_eq!(d.row, 0, "the lowest free row comes back first");
        s.give_back(b);
        s.give_back(d);
        assert_eq!(s.free_xsks, [(0, MAX_XSKS)].into(), "every run merged back into one");
        assert_eq!(s.free_rows.len() as u32, MAX_PORTS);
    }

    #[test]
    fn a_full_space_says_so() {
        let mut s = SlotSpace::default();
        for _ in 0..MAX_PORTS {
            assert!(s.take(1).is_some());
        }
        assert_eq!(s.take(1), None, "no counter row left");
        let mut s = SlotSpace::default();
        assert!(s.take(MAX_XSKS).is_some());
        assert_eq!(s.take(1), None, "no socket entry left");
    }

    #[test]
    fn the_map_value_has_the_programs_layout() {
        let v = Slot { xsk_base: 7, queues: 2, row: 3 }.map_value();
        assert_eq!(&v[0..4], &7u32.to_ne_bytes());
        assert_eq!(&v[4..8], &2u32.to_ne_bytes());
        assert_eq!(&v[8..12], &3u32.to_ne_bytes());
        assert_eq!(&v[12..16], &[0; 4]);
    }
}
