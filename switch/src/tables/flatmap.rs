//! A small open-addressing hash map from addresses (integers) to values: one multiply, one
//! shift and a short linear probe per lookup.
//!
//! Contract: it holds one prefix length's routes in [`super::lpm::LpmTable`], the prefix store
//! behind [`super::routes::Routes`] (listing, removal, finding the route that covers a removed
//! one) and the reference that Routes' tests compare with. It is changed and read by the control
//! side only: the per-packet route lookup reads Routes' arrays, not this map. Inserts grow it
//! (it stays at most half full, so probes are short); a removal rebuilds it. Keys are addresses
//! the control side put there, not attacker-chosen, so a fixed multiplicative hash suffices.
//! It was written for the per-packet lookup it no longer serves; a general-purpose map (e.g.
//! `rustc-hash`'s, already a dependency) would now do as well.

/// A key the map can hold: an address as an integer.
pub trait FlatKey: Copy + Eq + std::fmt::Debug {
    fn mix(self) -> u64;
}

impl FlatKey for u32 {
    #[inline(always)]
    fn mix(self) -> u64 {
        (self as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }
}

impl FlatKey for u128 {
    #[inline(always)]
    fn mix(self) -> u64 {
        ((self as u64) ^ ((self >> 64) as u64)).wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }
}

#[derive(Debug, Clone)]
pub struct FlatMap<K: FlatKey, V: Clone> {
    slots: Vec<Option<(K, V)>>,
    shift: u32,
    len: usize,
}

impl<K: FlatKey, V: Clone> Default for FlatMap<K, V> {
    fn default() -> Self {
        Self::with_slots(8)
    }
}

impl<K: FlatKey, V: Clone> FlatMap<K, V> {
    fn with_slots(n: usize) -> Self {
        let n = n.next_power_of_two().max(8);
        Self { slots: vec![None; n], shift: 64 - n.trailing_zeros(), len: 0 }
    }

    #[inline(always)]
    fn home(&self, k: K) -> usize {
        (k.mix() >> self.shift) as usize
    }

    #[inline]
    pub fn get(&self, k: &K) -> Option<&V> {
        let mask = self.slots.len() - 1;
        let mut i = self.home(*k);
        loop {
            match &self.slots[i] {
                Some((key, v)) if key == k => return Some(v),
                Some(_) => i = (i + 1) & mask,
                None => return None,
            }
        }
    }

    pub fn insert(&mut self, k: K, v: V) -> Option<V> {
        if (self.len + 1) * 2 > self.slots.len() {
            let mut bigger = Self::with_slots(self.slots.len() * 2);
            for (key, val) in self.slots.drain(..).flatten() {
                bigger.insert(key, val);
            }
            *self = bigger;
        }
        let mask = self.slots.len() - 1;
        let mut i = self.home(k);
        loop {
            match &mut self.slots[i] {
                Some((key, val)) if *key == k => return Some(std::mem::replace(val, v)),
                Some(_) => i = (i + 1) & mask,
                slot @ None => {
                    *slot = Some((k, v));
                    self.len += 1;
                    return None;
                }
            }
        }
    }

    pub fn remove(&mut self, k: &K) -> Option<V> {
        let old = self.get(k).cloned()?;
        let mut rebuilt = Self::with_slots(self.slots.len());
        for (key, val) in self.slots.drain(..).flatten() {
            if key != *k {
                rebuilt.insert(key, val);
            }
        }
        *self = rebuilt;
        Some(old)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.slots.iter().flatten().map(|(k, v)| (k, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_get_remove_grow() {
        let mut m = FlatMap::<u32, u32>::default();
        for i in 0..10_000u32 {
            assert!(m.insert(i.wrapping_mul(2654435761), i).is_none());
        }
        assert_eq!(m.len(), 10_000);
        for i in 0..10_000u32 {
            assert_eq!(m.get(&i.wrapping_mul(2654435761)), Some(&i));
        }
        assert_eq!(m.get(&7), None);
        assert_eq!(m.insert(0, 5), Some(0));
        assert_eq!(m.remove(&0), Some(5));
        assert_eq!(m.get(&0), None);
        assert_eq!(m.len(), 9_999);
        assert_eq!(m.iter().count(), 9_999);
    }
}
