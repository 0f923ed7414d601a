//! Maglev consistent hashing (Eisenbud et al., NSDI 2016): a lookup table of prime size in
//! which every backend owns about the same number of slots, and a change of one backend moves
//! only about its share of slots.
//!
//! Contract: [`build`] is deterministic in the backends' names (their order does not matter),
//! so every worker and every table version agrees; the table size is the smallest prime of the
//! [`table_size`] ladder above 100 slots per backend.
use std::sync::Arc;

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
    build_shared(names).iter().copied().collect()
}

/// [`build`], made where the tables keep it (an `Arc`) rather than copied there.
pub fn build_shared<N: AsRef<[u8]>>(names: &[N]) -> Arc<[u16]> {
    let n = names.len();
    if n == 0 {
        return Arc::from(Vec::new());
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
    let mut cursor: Vec<(u32, u32)> = order
        .iter()
        .map(|&i| {
            let name = names[i as usize].as_ref();
            let offset = hash(name, 0x6d61676c) % m as u64;
            let skip = hash(name, 0x65763121) % (m as u64 - 1) + 1;
            (offset as u32, skip as u32)
        })
        .collect();
    let m32 = m as u32;
    let step = |c: u32, skip: u32| {
        let c = c + skip;
        if c >= m32 {
            c - m32
        } else {
            c
        }
    };
    let mut shared: Arc<[u16]> = std::iter::repeat_n(u16::MAX, m).collect();
    let table = Arc::get_mut(&mut shared).expect("made just above, not shared yet");
    let mut filled = 0;
    'fill: loop {
        for (k, &i) in order.iter().enumerate() {
            let (c0, skip) = cursor[k];
            // Two preferences per step (j and j + 1, both advancing by 2 * skip, which is not
            // 0 mod the odd prime m): half the dependent additions of a walk one slot at a
            // time, and the same first free slot.
            let skip2 = step(skip, skip);
            let (mut a, mut b) = (c0, step(c0, skip));
            let c = loop {
                let (a_free, b_free) = (table[a as usize] == u16::MAX, table[b as usize] == u16::MAX);
                if a_free | b_free {
                    break if a_free { a } else { b };
                }
                a = step(a, skip2);
                b = step(b, skip2);
            };
            table[c as usize] = i;
            cursor[k].0 = step(c, skip);
            filled += 1;
            if filled == m {
                break 'fill;
            }
        }
    }
    shared
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
