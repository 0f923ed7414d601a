//! Maglev consistent hashing (Eisenbud et al., NSDI 2016): a lookup table of prime size in
//! which every backend owns about the same number of slots, and a change of one backend moves
//! only about its share of slots.
//!
//! Contract: [`build`] is deterministic in the backends' names (their order does not matter),
//! so every worker and every table version agrees; the table size is the smallest prime of the
//! [`table_size`] ladder above 100 slots per backend. [`MaglevTable`] is the form the Service
//! tables keep: one byte per entry while there are at most [`NARROW_MAX`] backends (at 10
//! backends, 1,021 bytes instead of 2,042), two bytes beyond. [`MaglevTable::slot`] maps a
//! flow hash to an entry by its high bits (`hash * len >> 64`), not by a division.
use std::sync::Arc;

/// The most backends a table of one-byte entries ([`MaglevTable::Narrow`]) holds.
pub const NARROW_MAX: usize = 256;

/// A Maglev lookup table as the Service tables keep it: entries are indices into the backend
/// list, one byte each for at most [`NARROW_MAX`] backends, else two. Empty for no backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MaglevTable {
    Narrow(Arc<[u8]>),
    Wide(Arc<[u16]>),
}

impl Default for MaglevTable {
    fn default() -> Self {
        Self::Narrow(Arc::from([]))
    }
}

impl MaglevTable {
    /// The entry for a flow hash: slot `hash * len >> 64` (the hash's high bits pick the slot,
    /// so no division), None for an empty table.
    #[inline(always)]
    pub fn slot(&self, flow_hash: u64) -> Option<usize> {
        #[inline(always)]
        fn at(flow_hash: u64, len: usize) -> usize {
            ((u128::from(flow_hash) * len as u128) >> 64) as usize
        }
        match self {
            Self::Narrow(t) => t.get(at(flow_hash, t.len())).map(|&e| usize::from(e)),
            Self::Wide(t) => t.get(at(flow_hash, t.len())).map(|&e| usize::from(e)),
        }
    }

    /// Slots in the table.
    pub fn len(&self) -> usize {
        match self {
            Self::Narrow(t) => t.len(),
            Self::Wide(t) => t.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the entries take (the `Arc` header aside).
    pub fn entry_bytes(&self) -> usize {
        match self {
            Self::Narrow(t) => t.len(),
            Self::Wide(t) => t.len() * 2,
        }
    }

    /// The entries, widened (for tests and inspection).
    pub fn entries(&self) -> Vec<u16> {
        match self {
            Self::Narrow(t) => t.iter().map(|&e| u16::from(e)).collect(),
            Self::Wide(t) => t.to_vec(),
        }
    }

    /// Address of the entries: equal for two handles of one table (to count shared tables
    /// once).
    pub fn as_ptr(&self) -> *const u8 {
        match self {
            Self::Narrow(t) => t.as_ptr(),
            Self::Wide(t) => t.as_ptr().cast(),
        }
    }

    /// Whether both are the same allocation.
    pub fn ptr_eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Narrow(a), Self::Narrow(b)) => Arc::ptr_eq(a, b),
            (Self::Wide(a), Self::Wide(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

/// Primes used as table sizes: at least 100 slots per backend up to the largest.
const SIZES: [usize; 10] = [251, 1_021, 4_093, 16_381, 65_521, 131_071, 262_139, 524_287, 1_048_573, 2_097_143];

/// The table size for `n` backends.
pub fn table_size(n: usize) -> usize {
    SIZES.iter().copied().find(|&m| m >= n.saturating_mul(100)).unwrap_or(SIZES[SIZES.len() - 1])
}

fn hash(name: &[u8], seed: u64) -> u64 {
    // FNV-1a with a seed, then a 64-bit finalizer (splitmix64): stable across versions.
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for &b in name {
        h ^= b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Builds the table for backends named `names` (e.g. `"10.244.0.5:8080"`, as bytes); entries
/// are indices into `names`. Empty input gives an empty table.
pub fn build<N: AsRef<[u8]>>(names: &[N]) -> Box<[u16]> {
    let mut table = Vec::new();
    fill(names, &mut table);
    table.into_boxed_slice()
}

/// [`build`] in the form the Service tables keep ([`MaglevTable`]): one-byte entries for at
/// most [`NARROW_MAX`] backends.
pub fn build_table<N: AsRef<[u8]>>(names: &[N]) -> MaglevTable {
    if names.len() > NARROW_MAX {
        return MaglevTable::Wide(build_shared(names));
    }
    // Filled in a scratch table of this thread, then narrowed: one allocation, the one kept.
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<u16>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    SCRATCH.with_borrow_mut(|table| {
        fill(names, table);
        // Entries are indices below NARROW_MAX: each fits in a byte.
        MaglevTable::Narrow(table.iter().map(|&e| e as u8).collect())
    })
}

/// [`build`], made where the tables keep it (an `Arc`) rather than copied there.
pub fn build_shared<N: AsRef<[u8]>>(names: &[N]) -> Arc<[u16]> {
    let mut table = Vec::new();
    fill(names, &mut table);
    Arc::from(table)
}

/// Fills `table` (emptied first) with the table of `names`.
fn fill<N: AsRef<[u8]>>(names: &[N], table: &mut Vec<u16>) {
    table.clear();
    let n = names.len();
    if n == 0 {
        return;
    }
    assert!(n <= u16::MAX as usize, "at most 65535 backends per Service");
    let m = table_size(n);
    // Fill in name order so that the result does not depend on the caller's order (a stable
    // sort: equal names keep the caller's order).
    let mut order: Vec<u16> = (0..n as u16).collect();
    order.sort_by(|&a, &b| names[a as usize].as_ref().cmp(names[b as usize].as_ref()));
    // Backend k's j-th preference is (offset + j * skip) mod m. Each backend keeps its current
    // slot and steps by `skip` with one conditional subtraction (offset, skip < m), which gives
    // exactly that sequence without a division per step.
    let m32 = m as u32;
    let step = |c: u32, skip: u32| {
        let c = c + skip;
        if c >= m32 {
            c - m32
        } else {
            c
        }
    };
    // Per backend in fill order: its index, its next preference, skip, and 2 * skip mod m
    // (made once here rather than at every turn).
    let mut backends: Vec<(u16, u32, u32, u32)> = order
        .iter()
        .map(|&i| {
            let name = names[i as usize].as_ref();
            let offset = (hash(name, 0x6d61676c) % m as u64) as u32;
            let skip = (hash(name, 0x65763121) % (m as u64 - 1) + 1) as u32;
            (i, offset, skip, step(skip, skip))
        })
        .collect();
    table.resize(m, u16::MAX);
    let mut left = m;
    'fill: loop {
        for (i, next, skip, skip2) in &mut backends {
            // Two preferences per step (j and j + 1, both advancing by 2 * skip, which is not
            // 0 mod the odd prime m): half the dependent additions of a walk one slot at a
            // time, and the same first free slot.
            let (mut a, mut b) = (*next, step(*next, *skip));
            let c = loop {
                let (a_free, b_free) = (table[a as usize] == u16::MAX, table[b as usize] == u16::MAX);
                if a_free | b_free {
                    break if a_free { a } else { b };
                }
                a = step(a, *skip2);
                b = step(b, *skip2);
            };
            table[c as usize] = *i;
            *next = step(c, *skip);
            left -= 1;
            if left == 0 {
                break 'fill;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table as the paper writes it: preference j of backend k is `(offset + j * skip) % m`.
    fn build_by_modulo(names: &[String]) -> Box<[u16]> {
        let n = names.len();
        if n == 0 {
            return Box::new([]);
        }
        let m = table_size(n);
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| names[a].cmp(&names[b]));
        let perms: Vec<(u64, u64)> = order
            .iter()
            .map(|&i| {
                let offset = hash(names[i].as_bytes(), 0x6d61676c) % m as u64;
                let skip = hash(names[i].as_bytes(), 0x65763121) % (m as u64 - 1) + 1;
                (offset, skip)
            })
            .collect();
        let mut next = vec![0u64; n];
        let mut table = vec![u16::MAX; m];
        let mut filled = 0;
        'fill: loop {
            for (k, &i) in order.iter().enumerate() {
                let (offset, skip) = perms[k];
                let mut c = (offset + next[k] * skip) % m as u64;
                while table[c as usize] != u16::MAX {
                    next[k] += 1;
                    c = (offset + next[k] * skip) % m as u64;
                }
                table[c as usize] = i as u16;
                next[k] += 1;
                filled += 1;
                if filled == m {
                    break 'fill;
                }
            }
        }
        table.into_boxed_slice()
    }

    #[test]
    fn same_table_as_the_modulo_permutation() {
        // Every size of the ladder up to 655 backends, and odd counts in between.
        for n in [1, 2, 3, 5, 10, 11, 40, 41, 163, 164, 655, 1000] {
            let names: Vec<String> = (0..n).map(|i| format!("10.{}.{}.{}:{}", i % 7, i / 250, i % 250, 80 + i % 3)).collect();
            assert_eq!(build(&names), build_by_modulo(&names), "n={n}");
            assert_eq!(*build_shared(&names), *build_by_modulo(&names), "n={n}");
        }
    }

    #[test]
    fn tables_kept_narrow_up_to_256_backends_hold_the_same_entries() {
        for n in [0, 1, 10, 255, 256, 257, 1000] {
            let names: Vec<String> = (0..n).map(|i| format!("10.{}.{}.{}:80", i % 7, i / 250, i % 250)).collect();
            let t = build_table(&names);
            assert_eq!(matches!(t, MaglevTable::Narrow(_)), n <= NARROW_MAX, "n={n}");
            assert_eq!(t.entries(), build(&names).to_vec(), "n={n}");
            assert_eq!(t.len(), if n == 0 { 0 } else { table_size(n) });
            assert_eq!(t.entry_bytes(), t.len() * if n <= NARROW_MAX { 1 } else { 2 });
        }
        // The scratch table of the thread is reused: a smaller table after a larger one.
        let (big, small) = (names(300), names(3));
        let _ = build_table(&big);
        assert_eq!(build_table(&small).entries(), build(&small).to_vec());
    }

    #[test]
    fn a_flow_hash_picks_the_slot_of_its_high_bits() {
        let t = build_table(&names(10));
        let e = t.entries();
        let m = e.len() as u64;
        assert_eq!(t.slot(0), Some(usize::from(e[0])));
        assert_eq!(t.slot(u64::MAX), Some(usize::from(e[e.len() - 1])));
        // Slot k covers the hashes [k * 2^64 / m, (k + 1) * 2^64 / m).
        for k in [1u64, 17, 500, m - 2] {
            let first = ((u128::from(k) << 64).div_ceil(u128::from(m))) as u64;
            assert_eq!(t.slot(first), Some(usize::from(e[k as usize])), "k={k}");
            assert_eq!(t.slot(first - 1), Some(usize::from(e[k as usize - 1])), "k={k}");
        }
        let wide = build_table(&names(300));
        assert!(matches!(wide, MaglevTable::Wide(_)));
        assert_eq!(wide.slot(u64::MAX), Some(usize::from(*wide.entries().last().unwrap())));
        assert_eq!(MaglevTable::default().slot(12345), None, "an empty table picks nothing");
        assert!(MaglevTable::default().is_empty());
    }

    #[test]
    fn duplicate_names_fill_as_the_paper_does() {
        let mut names: Vec<String> = (0..12).map(|i| format!("10.1.0.{}:80", i % 5)).collect();
        names.push("10.1.0.1:80".into());
        assert_eq!(build(&names), build_by_modulo(&names));
    }

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.244.{}.{}:8080", i / 250, i % 250 + 1)).collect()
    }

    #[test]
    fn balanced_and_complete() {
        for n in [1, 2, 3, 10, 100] {
            let t = build(&names(n));
            assert_eq!(t.len(), table_size(n));
            let mut count = vec![0usize; n];
            for &s in &t {
                count[s as usize] += 1;
            }
            let (min, max) = (*count.iter().min().unwrap(), *count.iter().max().unwrap());
            assert!(max - min <= t.len() / n / 10 + 1, "n={n} min={min} max={max}");
        }
        assert!(build::<String>(&[]).is_empty());
    }

    #[test]
    fn order_does_not_matter() {
        let a = names(7);
        let mut b = a.clone();
        b.reverse();
        let (ta, tb) = (build(&a), build(&b));
        for (x, y) in ta.iter().zip(tb.iter()) {
            assert_eq!(a[*x as usize], b[*y as usize]);
        }
    }

    #[test]
    fn removing_one_backend_moves_about_its_share() {
        let before = names(10);
        let after: Vec<String> = before.iter().filter(|n| *n != &before[3]).cloned().collect();
        let (tb, ta) = (build(&before), build(&after));
        assert_eq!(tb.len(), ta.len());
        let moved = tb
            .iter()
            .zip(ta.iter())
            .filter(|(b, a)| before[**b as usize] != before[3] && before[**b as usize] != after[**a as usize])
            .count();
        // Slots of surviving backends that changed owner: Maglev keeps this small.
        assert!(moved * 100 / tb.len() < 5, "{moved} of {} slots of surviving backends moved", tb.len());
    }
}
