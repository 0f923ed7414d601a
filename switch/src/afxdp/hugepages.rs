//! Backing the dataplane's large tables with 2 MiB pages.
//!
//! Contract: [`advise`] asks the kernel (`madvise(MADV_HUGEPAGE)`) to back the 2 MiB-aligned
//! part of a memory region with transparent huge pages, before anything is written there, and
//! says whether that can work: the kernel accepted the advice and its transparent huge pages
//! are on for advised memory (`/sys/kernel/mm/transparent_hugepage/enabled` is `always` or
//! `madvise`; with `never` the kernel accepts the advice and ignores it). It never changes the
//! region's contents or validity. The caller reports the answer
//! ([`crate::conntrack::ConnTable::huge_pages`]).
//!
//! Why: the connection table is ~100 bytes per connection, 100 MiB and more at a million
//! connections, and every packet touches two random lines of it. With 4 KiB pages each of those
//! is also a TLB miss (and under virtualisation a two-dimensional page walk); with 2 MiB pages
//! the walks mostly vanish. `scripts/bench.sh pipeline` (1,000,000 connections) ran 5-10%
//! faster with them, side by side on the same machine. The system call needs `unsafe`, so it lives in
//! the project's `unsafe` layer, beside the UMEM.
use std::mem::MaybeUninit;

const HUGE_PAGE: usize = 2 << 20;

/// Whether the kernel backs advised memory with transparent huge pages.
pub fn offered() -> bool {
    let mode = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
    mode.contains("[always]") || mode.contains("[madvise]")
}

/// Advises huge pages for the 2 MiB-aligned whole pages inside `region` (memory not yet
/// written, e.g. a `Vec`'s spare capacity). Returns whether there was such a page, the kernel
/// accepted the advice and it offers huge pages ([`offered`]).
pub fn advise<T>(region: &[MaybeUninit<T>]) -> bool {
    let start = region.as_ptr() as usize;
    let end = start + std::mem::size_of_val(region);
    let aligned_start = start.next_multiple_of(HUGE_PAGE);
    let aligned_end = end / HUGE_PAGE * HUGE_PAGE;
    if aligned_end <= aligned_start {
        return false;
    }
    // SAFETY: the range lies inside `region`, memory this process owns and that stays mapped
    // for the duration of the call (it is borrowed). MADV_HUGEPAGE is advice about how to back
    // the pages: it neither frees nor changes their contents, so nothing Rust assumes about
    // that memory changes.
    let rc = unsafe { libc::madvise(aligned_start as *mut libc::c_void, aligned_end - aligned_start, libc::MADV_HUGEPAGE) };
    rc == 0 && offered()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_regions_are_left_alone_and_large_ones_are_advised_when_the_kernel_has_thp() {
        let mut small: Vec<u64> = Vec::with_capacity(16);
        assert!(!advise(small.spare_capacity_mut()), "no whole 2 MiB page inside 128 bytes");
        let n = 3 * HUGE_PAGE / 8;
        let mut big: Vec<u64> = Vec::with_capacity(n);
        let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
        let expected = thp.contains("[always]") || thp.contains("[madvise]");
        assert_eq!(advise(big.spare_capacity_mut()), expected, "THP setting: {thp}");
        big.extend(std::iter::repeat_n(7u64, n));
        assert!(big.iter().all(|&x| x == 7), "the advice changes nothing the program sees");
    }
}
