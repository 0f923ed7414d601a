//! Longest-prefix-match table, generic over the address family.
//!
//! Contract: one hash map ([`FlatMap`]) per prefix length in use, searched from the longest
//! length down, so a lookup costs one hash probe per distinct prefix length present. It is the
//! prefix store behind [`super::routes::Routes`] (listing, removal, the route that covers a
//! removed one) and the reference its tests compare with; the per-packet lookup is Routes',
//! which reads at most three array cells instead of probing once per length.
use std::fmt::Debug;
use std::hash::Hash;

use super::flatmap::{FlatKey, FlatMap};

/// An address family: its address as an integer and its width.
pub trait AddressFamily: 'static + Clone {
    type Addr: Copy + Eq + Hash + Debug + Ord + FlatKey;
    const BITS: u8;
    /// `addr` with all but the first `len` bits cleared.
    fn mask(addr: Self::Addr, len: u8) -> Self::Addr;
}

/// IPv4, addresses as host-order `u32`.
#[derive(Debug, Clone, Copy)]
pub enum V4 {}

impl AddressFamily for V4 {
    type Addr = u32;
    const BITS: u8 = 32;
    #[inline(always)]
    fn mask(addr: u32, len: u8) -> u32 {
        if len == 0 {
            0
        } else {
            addr & (u32::MAX << (32 - len as u32))
        }
    }
}

/// A longest-prefix-match table from prefixes of family `F` to values `V`.
#[derive(Debug, Clone)]
pub struct LpmTable<F: AddressFamily, V: Clone> {
    /// (prefix length, prefixes of that length), longest first.
    levels: Vec<(u8, FlatMap<F::Addr, V>)>,
}

impl<F: AddressFamily, V: Clone> Default for LpmTable<F, V> {
    fn default() -> Self {
        Self { levels: Vec::new() }
    }
}

impl<F: AddressFamily, V: Clone> LpmTable<F, V> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Inserts or replaces `prefix/len`. Panics if `len` exceeds the family's width (a control
    /// plane bug, never wire input).
    pub fn insert(&mut self, prefix: F::Addr, len: u8, value: V) -> Option<V> {
        assert!(len <= F::BITS, "prefix length {len} exceeds {}", F::BITS);
        let key = F::mask(prefix, len);
        let pos = match self.levels.iter().position(|(l, _)| *l <= len) {
            Some(p) if self.levels[p].0 == len => p,
            Some(p) => {
                self.levels.insert(p, (len, FlatMap::default()));
                p
            }
            None => {
                self.levels.push((len, FlatMap::default()));
                self.levels.len() - 1
            }
        };
        self.levels[pos].1.insert(key, value)
    }

    pub fn remove(&mut self, prefix: F::Addr, len: u8) -> Option<V> {
        let pos = self.levels.iter().position(|(l, _)| *l == len)?;
        let v = self.levels[pos].1.remove(&F::mask(prefix, len));
        if self.levels[pos].1.is_empty() {
            self.levels.remove(pos);
        }
        v
    }

    /// The value of the longest prefix containing `addr`.
    #[inline]
    pub fn lookup(&self, addr: F::Addr) -> Option<&V> {
        for (len, map) in &self.levels {
            if let Some(v) = map.get(&F::mask(addr, *len)) {
                return Some(v);
            }
        }
        None
    }

    /// The value stored for exactly `prefix/len`.
    pub fn get(&self, prefix: F::Addr, len: u8) -> Option<&V> {
        let (_, map) = self.levels.iter().find(|(l, _)| *l == len)?;
        map.get(&F::mask(prefix, len))
    }

    /// The longest entry shorter than `len` that contains `prefix/len`: its length and value.
    pub fn covering(&self, prefix: F::Addr, len: u8) -> Option<(u8, &V)> {
        self.levels.iter().filter(|(l, _)| *l < len).find_map(|(l, map)| map.get(&F::mask(prefix, *l)).map(|v| (*l, v)))
    }

    /// Every entry as (prefix, length, value), longest prefixes first, then by address.
    pub fn entries(&self) -> Vec<(F::Addr, u8, &V)> {
        let mut out = Vec::new();
        for (len, map) in &self.levels {
            let mut level: Vec<_> = map.iter().map(|(k, v)| (*k, *len, v)).collect();
            level.sort_by_key(|e| e.0);
            out.extend(level);
        }
        out
    }

    pub fn len(&self) -> usize {
        self.levels.iter().map(|(_, m)| m.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.levels.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn a(s: &str) -> u32 {
        u32::from(s.parse::<Ipv4Addr>().unwrap())
    }

    #[test]
    fn longest_prefix_wins_and_removal_falls_back() {
        let mut t = LpmTable::<V4, &str>::new();
        t.insert(0, 0, "default");
        t.insert(a("10.244.0.0"), 24, "cidr");
        t.insert(a("10.244.0.11"), 32, "pod");
        t.insert(a("10.244.0.99"), 16, "wide"); // masked to 10.244.0.0/16
        assert_eq!(t.lookup(a("10.244.0.11")), Some(&"pod"));
        assert_eq!(t.lookup(a("10.244.0.12")), Some(&"cidr"));
        assert_eq!(t.lookup(a("10.244.7.1")), Some(&"wide"));
        assert_eq!(t.lookup(a("8.8.8.8")), Some(&"default"));
        assert_eq!(t.remove(a("10.244.0.11"), 32), Some("pod"));
        assert_eq!(t.lookup(a("10.244.0.11")), Some(&"cidr"));
        t.remove(0, 0);
        assert_eq!(t.lookup(a("8.8.8.8")), None);
        assert_eq!(t.len(), 2);
        let lens: Vec<u8> = t.entries().iter().map(|e| e.1).collect();
        assert_eq!(lens, vec![24, 16]);
    }

    #[test]
    fn mask_edges() {
        assert_eq!(V4::mask(u32::MAX, 0), 0);
        assert_eq!(V4::mask(u32::MAX, 32), u32::MAX);
        assert_eq!(V4::mask(u32::MAX, 1), 0x8000_0000);
    }
}
