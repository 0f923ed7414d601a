//! The IPv4 route table: longest-prefix match in at most three array reads.
//!
//! Layout (DIR-16-8-8, the scheme of DPDK's `rte_lpm` with one more level): a top array of
//! 2^16 cells indexed by the address's first 16 bits; a cell holds either a route (index + 1
//! into `hops`; 0: none) or, with [`GROUP`] set, a group of 256 cells for the next 8 bits,
//! whose cells may again point to a group for the last 8 bits. A route of length `len` is
//! painted into every cell it covers that no longer route covers; each cell remembers the
//! length of the route it holds (`depth`, read only by inserts and removals), so that adding
//! and removing routes in any order gives the same table as building it at once.
//!
//! Contract: [`Routes::lookup`] returns the hop of the longest prefix that contains the
//! address (as [`super::LpmTable`] does, which keeps the prefixes for removal and listing).
//! It never allocates and reads at most three cells and one hop; the control side builds and
//! changes the table before publishing it. Memory: 320 KiB for the top level, 1.25 KiB per
//! group (a /16 that holds longer routes, and a /24 that holds routes longer than /24). Groups
//! are not reclaimed when their routes go; the table is rebuilt from scratch with every
//! compile (see `podswitch_control::compile`), which bounds that.
//!
//! Why hand-written: the route lookup runs for every forwarded packet, and the per-length hash
//! probes it replaces cost ~70 instructions per packet for a pod route behind a default route.
use super::lpm::{LpmTable, V4};
use super::NextHop;

/// A cell that points to a group (the low 31 bits are its index) rather than to a route.
const GROUP: u32 = 1 << 31;
const TOP_CELLS: usize = 1 << 16;
const GROUP_CELLS: usize = 256;

#[derive(Clone)]
pub struct Routes {
    /// The routes by prefix: their index in `hops`, for removal, listing and the covering route.
    prefixes: LpmTable<V4, u32>,
    hops: Vec<NextHop>,
    free_hops: Vec<u32>,
    top: Box<[u32]>,
    top_depth: Box<[u8]>,
    /// Groups of [`GROUP_CELLS`] cells, one after the other.
    groups: Vec<u32>,
    group_depth: Vec<u8>,
}

impl std::fmt::Debug for Routes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.entries().into_iter().map(|(p, l, h)| (format!("{}/{l}", std::net::Ipv4Addr::from(p)), h))).finish()
    }
}

impl PartialEq for Routes {
    fn eq(&self, other: &Self) -> bool {
        self.entries() == other.entries()
    }
}

impl Default for Routes {
    fn default() -> Self {
        Self::new()
    }
}

/// Which cells a painting pass changes.
#[derive(Clone, Copy)]
enum Paint {
    /// Set cells held by routes no longer than `len` (a new route of length `len`).
    Add { cell: u32, len: u8 },
    /// Give cells held by the removed route of length `len` back to its covering route.
    Remove { len: u8, cover: u32, cover_len: u8 },
}

impl Routes {
    pub fn new() -> Self {
        Self {
            prefixes: LpmTable::new(),
            hops: Vec::new(),
            free_hops: Vec::new(),
            top: vec![0; TOP_CELLS].into_boxed_slice(),
            top_depth: vec![0; TOP_CELLS].into_boxed_slice(),
            groups: Vec::new(),
            group_depth: Vec::new(),
        }
    }

    /// The hop of the longest prefix containing `addr`. Always inlined: a handful of loads,
    /// which the full pipeline otherwise called out of line for every packet.
    #[inline(always)]
    pub fn lookup(&self, addr: u32) -> Option<&NextHop> {
        let mut cell = *self.top.get((addr >> 16) as usize)?;
        if cell & GROUP != 0 {
            cell = *self.groups.get((cell & !GROUP) as usize * GROUP_CELLS + ((addr >> 8) & 0xff) as usize)?;
            if cell & GROUP != 0 {
                cell = *self.groups.get((cell & !GROUP) as usize * GROUP_CELLS + (addr & 0xff) as usize)?;
            }
        }
        self.hops.get((cell as usize).checked_sub(1)?)
    }

    /// Adds (or replaces) the route `prefix/len` (host bits are ignored); returns the hop it
    /// replaced.
    pub fn insert(&mut self, prefix: u32, len: u8, hop: NextHop) -> Option<NextHop> {
        assert!(len <= 32, "prefix length {len} exceeds 32");
        if let Some(&i) = self.prefixes.get(prefix, len) {
            return Some(std::mem::replace(&mut self.hops[i as usize], hop));
        }
        let i = match self.free_hops.pop() {
            Some(i) => {
                self.hops[i as usize] = hop;
                i
            }
            None => {
                self.hops.push(hop);
                (self.hops.len() - 1) as u32
            }
        };
        self.prefixes.insert(prefix, len, i);
        self.paint(prefix, len, Paint::Add { cell: i + 1, len });
        None
    }

    /// Removes the route `prefix/len`; the addresses it held fall back to the next longest
    /// route that contains them.
    pub fn remove(&mut self, prefix: u32, len: u8) -> Option<NextHop> {
        let i = self.prefixes.remove(prefix, len)?;
        let hop = self.hops[i as usize];
        self.free_hops.push(i);
        let (cover, cover_len) = match self.prefixes.covering(prefix, len) {
            Some((l, &c)) => (c + 1, l),
            None => (0, 0),
        };
        self.paint(prefix, len, Paint::Remove { len, cover, cover_len });
        Some(hop)
    }

    /// Every route as (prefix, length, hop), longest prefixes first, then by address.
    pub fn entries(&self) -> Vec<(u32, u8, &NextHop)> {
        self.prefixes.entries().into_iter().map(|(p, l, &i)| (p, l, &self.hops[i as usize])).collect()
    }

    pub fn len(&self) -> usize {
        self.prefixes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.prefixes.is_empty()
    }

    /// Bytes of heap the table holds: its cell arrays and hops by capacity, the prefix index
    /// at two words per route (an estimate: it is a hash map per prefix length).
    pub fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        self.top.len() * size_of::<u32>()
            + self.top_depth.len()
            + self.groups.capacity() * size_of::<u32>()
            + self.group_depth.capacity()
            + self.hops.capacity() * size_of::<NextHop>()
            + self.free_hops.capacity() * size_of::<u32>()
            + self.prefixes.len() * 2 * size_of::<u64>()
    }

    /// Applies `paint` to the cells `prefix/len` covers, making groups on the way as needed.
    fn paint(&mut self, prefix: u32, len: u8, paint: Paint) {
        let prefix = if len == 0 { 0 } else { prefix & (u32::MAX << (32 - len as u32)) };
        let top = (prefix >> 16) as usize;
        if len <= 16 {
            for t in top..top + (1 << (16 - len)) {
                if self.top[t] & GROUP != 0 {
                    self.paint_group(self.top[t] & !GROUP, 0, GROUP_CELLS, paint);
                } else {
                    paint_cell(&mut self.top[t], &mut self.top_depth[t], paint);
                }
            }
            return;
        }
        let g = self.group_at_top(top);
        let mid = ((prefix >> 8) & 0xff) as usize;
        if len <= 24 {
            self.paint_group(g, mid, 1 << (24 - len), paint);
            return;
        }
        let g2 = self.group_in_group(g, mid);
        self.paint_group(g2, (prefix & 0xff) as usize, 1 << (32 - len), paint);
    }

    /// Applies `paint` to cells `from..from + n` of group `g`, and to every cell of the groups
    /// they point to.
    fn paint_group(&mut self, g: u32, from: usize, n: usize, paint: Paint) {
        let base = g as usize * GROUP_CELLS;
        for c in base + from..base + from + n {
            if self.groups[c] & GROUP != 0 {
                self.paint_group(self.groups[c] & !GROUP, 0, GROUP_CELLS, paint);
            } else {
                paint_cell(&mut self.groups[c], &mut self.group_depth[c], paint);
            }
        }
    }

    /// A new group whose cells all hold `cell` (of route length `depth`).
    fn new_group(&mut self, cell: u32, depth: u8) -> u32 {
        let g = (self.groups.len() / GROUP_CELLS) as u32;
        assert!(g < GROUP, "route groups exhausted");
        self.groups.extend(std::iter::repeat_n(cell, GROUP_CELLS));
        self.group_depth.extend(std::iter::repeat_n(depth, GROUP_CELLS));
        g
    }

    fn group_at_top(&mut self, t: usize) -> u32 {
        if self.top[t] & GROUP != 0 {
            return self.top[t] & !GROUP;
        }
        let g = self.new_group(self.top[t], self.top_depth[t]);
        self.top[t] = GROUP | g;
        g
    }

    fn group_in_group(&mut self, g: u32, i: usize) -> u32 {
        let c = g as usize * GROUP_CELLS + i;
        if self.groups[c] & GROUP != 0 {
            return self.groups[c] & !GROUP;
        }
        let inner = self.new_group(self.groups[c], self.group_depth[c]);
        self.groups[c] = GROUP | inner;
        inner
    }
}

#[inline]
fn paint_cell(cell: &mut u32, depth: &mut u8, paint: Paint) {
    match paint {
        Paint::Add { cell: v, len } if *depth <= len => {
            *cell = v;
            *depth = len;
        }
        Paint::Remove { len, cover, cover_len } if *depth == len => {
            *cell = cover;
            *depth = cover_len;
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn a(s: &str) -> u32 {
        u32::from(s.parse::<Ipv4Addr>().unwrap())
    }

    fn hop(port: u16) -> NextHop {
        NextHop::direct(port, [2, 0, 0, 0, 0, port as u8])
    }

    fn port_of(r: &Routes, addr: &str) -> Option<u16> {
        r.lookup(a(addr)).map(|h| h.port)
    }

    #[test]
    fn longest_prefix_wins_at_every_level_and_removal_falls_back() {
        let mut r = Routes::new();
        r.insert(0, 0, hop(1));
        r.insert(a("10.0.0.0"), 8, hop(2));
        r.insert(a("10.244.0.0"), 16, hop(3));
        r.insert(a("10.244.1.0"), 24, hop(4));
        r.insert(a("10.244.1.7"), 32, hop(5));
        r.insert(a("10.244.1.64"), 26, hop(6));
        assert_eq!(port_of(&r, "8.8.8.8"), Some(1));
        assert_eq!(port_of(&r, "10.1.2.3"), Some(2));
        assert_eq!(port_of(&r, "10.244.9.9"), Some(3));
        assert_eq!(port_of(&r, "10.244.1.8"), Some(4));
        assert_eq!(port_of(&r, "10.244.1.7"), Some(5));
        assert_eq!(port_of(&r, "10.244.1.100"), Some(6));
        assert_eq!(port_of(&r, "10.244.1.128"), Some(4));
        assert_eq!(r.remove(a("10.244.1.0"), 24), Some(hop(4)));
        assert_eq!(port_of(&r, "10.244.1.8"), Some(3), "falls back to the /16");
        assert_eq!(port_of(&r, "10.244.1.7"), Some(5), "the /32 stays");
        assert_eq!(port_of(&r, "10.244.1.100"), Some(6), "the /26 stays");
        r.remove(a("10.244.0.0"), 16);
        assert_eq!(port_of(&r, "10.244.1.8"), Some(2));
        r.remove(0, 0);
        assert_eq!(port_of(&r, "8.8.8.8"), None);
        assert_eq!(r.len(), 3);
        assert_eq!(r.insert(a("10.244.1.7"), 32, hop(9)), Some(hop(5)), "replacing keeps one route");
        assert_eq!(port_of(&r, "10.244.1.7"), Some(9));
        assert_eq!(r.len(), 3);
    }

    #[test]
    fn a_shorter_route_added_later_does_not_cover_longer_ones() {
        let mut r = Routes::new();
        r.insert(a("10.244.1.7"), 32, hop(5));
        r.insert(a("10.244.1.0"), 24, hop(4));
        r.insert(0, 0, hop(1));
        assert_eq!(port_of(&r, "10.244.1.7"), Some(5));
        assert_eq!(port_of(&r, "10.244.1.6"), Some(4));
        assert_eq!(port_of(&r, "10.244.2.6"), Some(1));
    }

    /// Random routes added and removed in random order: every lookup agrees with the
    /// per-length hash table ([`LpmTable`]), which is simple enough to trust.
    #[test]
    fn agrees_with_the_reference_table_under_random_changes() {
        let mut rng = fastrand::Rng::with_seed(0x2545_f491_4f6c_dd1d);
        let mut next = move || rng.u64(..);
        let mut r = Routes::new();
        let mut reference = LpmTable::<V4, NextHop>::new();
        let mut live: Vec<(u32, u8)> = Vec::new();
        // Addresses from a few /16s so that routes overlap at every level.
        let addr = |x: u64| -> u32 { (10 << 24) | (((x >> 40) as u32 % 3) << 16) | (x as u32 & 0xffff) };
        for step in 0..4000u32 {
            let x = next();
            if x % 3 == 0 && !live.is_empty() {
                let (p, l) = live.swap_remove((x >> 8) as usize % live.len());
                assert_eq!(r.remove(p, l), reference.remove(p, l), "remove {p:#x}/{l}");
            } else {
                let l = [0u8, 8, 12, 16, 20, 24, 26, 28, 30, 32][(x >> 4) as usize % 10];
                let p = addr(next());
                let h = hop((step % 4000) as u16);
                assert_eq!(r.insert(p, l, h), reference.insert(p, l, h), "insert {p:#x}/{l}");
                let masked = if l == 0 { 0 } else { p & (u32::MAX << (32 - l as u32)) };
                if !live.contains(&(masked, l)) {
                    live.push((masked, l));
                }
            }
            for _ in 0..20 {
                let q = addr(next());
                assert_eq!(r.lookup(q), reference.lookup(q), "lookup {} after step {step}", Ipv4Addr::from(q));
            }
        }
        assert_eq!(r.len(), reference.len());
    }
}
