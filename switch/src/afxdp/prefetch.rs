//! Cache hints for the worker's hot memory: start fetching a cache line that will be read soon.
//!
//! Contract: [`read`] never changes what the program computes; it only asks the CPU to start
//! loading the cache line that holds `*r`, and returns at once. On CPUs without a prefetch
//! instruction it does nothing.
//!
//! Why it is here: a worker warms the connection table for a whole burst before processing it
//! ([`crate::pipeline::warm`]). A plain load whose value is unused does start the fetch, but the
//! CPU cannot retire it (nor anything after it) until the line arrives, so only about ten of a
//! burst's misses overlap before the reorder buffer fills. A prefetch instruction retires at
//! once, so all of a burst's misses are in flight together: with 1,000,000 tracked connections
//! `scripts/bench.sh pipeline` went from 9.4-10.2 to 18.0-18.4 Mpps per core, side by side in the
//! same run. Rust offers prefetching only as an `unsafe` intrinsic, and no well-kept crate wraps
//! it, so this one line of `unsafe` lives in the project's `unsafe` layer, beside the UMEM.

/// Starts fetching the cache line of `*r` into all cache levels.
#[inline(always)]
pub fn read<T>(r: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 is a hint: it neither reads nor writes memory as far as the program is
    // concerned, and it never faults, whatever the address (here that of a live reference).
    // SSE, which has it, is part of the x86_64 baseline, so every CPU this binary runs on has it.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>((r as *const T).cast::<i8>());
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = r;
}
