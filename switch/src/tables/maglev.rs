//! Maglev consistent hashing (Eisenbud et al., NSDI 2016): a lookup table of prime size in
//! which every backend owns about the same number of slots, and a change of one backend moves
//! only about its share of slots.
//!
//! Contract: [`build`] is deterministic in the backends' names (their order does not matter),
//! so every worker and every table version agrees; the table size is the smallest prime of the
//! [`table_size`] ladder above 100 slots per backend.

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
///
/// The fill is the paper's: backends take turns in name order, each taking the next free slot
/// of its own permutation (`offset + j * skip` mod m). It runs in two phases with the same
/// result: while many slots are free, each backend walks its permutation; for the last
/// ~sqrt(m) free slots (where walking costs ~m / free steps per slot), each backend takes the
/// free slot that comes first in its permutation, found by the slot's rank in it.
pub fn build<N: AsRef<[u8]>>(names: &[N]) -> Box<[u16]> {
    let n = names.len();
    if n == 0 {
        return Box::new([]);
    }
    assert!(n <= u16::MAX as usize, "at most 65535 backends per Service");
    let m = table_size(n);
    let m32 = m as u32;
    // Fill in name order so that the result does not depend on the caller's order (a stable
    // sort: equal names keep the caller's order, as they always did).
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
    let step = |c: u32, skip: u32| {
        let c = c + skip;
        if c >= m32 {
            c - m32
        } else {
            c
        }
    };
    let mut table = vec![u16::MAX; m];
    // Phase 1: walk while more than `tail` slots are free.
    let tail = isqrt(m).clamp(1, m);
    let mut k = 0;
    for _ in 0..m - tail {
        let (mut c, skip) = cursor[k];
        while table[c as usize] != u16::MAX {
            c = step(c, skip);
        }
        table[c as usize] = order[k];
        cursor[k].0 = step(c, skip);
        k += 1;
        if k == n {
            k = 0;
        }
    }
    // Phase 2: every slot before a backend's cursor in its permutation is taken, so its next
    // slot is the free slot of least rank j = (slot - cursor) / skip mod m.
    let mut free: Vec<u32> = (0..m32).filter(|&s| table[s as usize] == u16::MAX).collect();
    let modm = Barrett::new(m as u64);
    let mut inverse: Vec<u64> = vec![0; n];
    let mut inverted = vec![false; n];
    while !free.is_empty() {
        let (c, skip) = cursor[k];
        if !inverted[k] {
            inverse[k] = inverse_mod(skip as u64, m as u64);
            inverted[k] = true;
        }
        let inv = inverse[k];
        let mut best = (u64::MAX, 0);
        for (j, &s) in free.iter().enumerate() {
            let d = if s >= c { s - c } else { s + m32 - c };
            let rank = modm.reduce(d as u64 * inv);
            if rank < best.0 {
                best = (rank, j);
            }
        }
        let s = free.swap_remove(best.1);
        table[s as usize] = order[k];
        k += 1;
        if k == n {
            k = 0;
        }
    }
    table.into_boxed_slice()
}

/// The integer square root of `x` (floor).
fn isqrt(x: usize) -> usize {
    let mut r = (x as f64).sqrt() as usize;
    while r * r > x {
        r -= 1;
    }
    while (r + 1) * (r + 1) <= x {
        r += 1;
    }
    r
}

/// `a`'s inverse modulo the prime `m` (0 < a < m), by the extended Euclidean algorithm.
fn inverse_mod(a: u64, m: u64) -> u64 {
    let (mut r0, mut r1) = (m as i64, a as i64);
    let (mut t0, mut t1) = (0i64, 1i64);
    while r1 != 0 {
        let q = r0 / r1;
        (r0, r1) = (r1, r0 - q * r1);
        (t0, t1) = (t1, t0 - q * t1);
    }
    debug_assert_eq!(r0, 1, "m is prime and a < m");
    t0.rem_euclid(m as i64) as u64
}

/// `x mod m` without a division (Barrett reduction), for x < 2^64 / 2 and m < 2^32.
struct Barrett {
    m: u64,
    /// floor(2^64 / m).
    inv: u64,
}

impl Barrett {
    fn new(m: u64) -> Self {
        Barrett { m, inv: (u128::from(u64::MAX) + 1).div_euclid(u128::from(m)) as u64 }
    }

    fn reduce(&self, x: u64) -> u64 {
        let q = ((u128::from(x) * u128::from(self.inv)) >> 64) as u64;
        let r = x - q * self.m;
        if r >= self.m {
            r - self.m
        } else {
            r
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
        }
    }

    #[test]
    fn duplicate_names_fill_as_the_paper_does() {
        let mut names: Vec<String> = (0..12).map(|i| format!("10.1.0.{}:80", i % 5)).collect();
        names.push("10.1.0.1:80".into());
        assert_eq!(build(&names), build_by_modulo(&names));
    }

    #[test]
    fn modular_helpers() {
        for &m in SIZES.iter() {
            let b = Barrett::new(m as u64);
            for x in [0u64, 1, m as u64 - 1, m as u64, m as u64 * 7 + 3, (m as u64 - 1) * (m as u64 - 1), 1 << 50, u64::MAX / 2] {
                assert_eq!(b.reduce(x), x % m as u64, "x={x} m={m}");
            }
            for a in [1u64, 2, 3, 1000, m as u64 - 1] {
                assert_eq!(a * inverse_mod(a, m as u64) % m as u64, 1, "a={a} m={m}");
            }
        }
        for x in [0, 1, 2, 3, 4, 15, 16, 17, 1021, 2_097_143] {
            let r = isqrt(x);
            assert!(r * r <= x && (r + 1) * (r + 1) > x, "x={x}");
        }
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
            for &s in t.iter() {
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
