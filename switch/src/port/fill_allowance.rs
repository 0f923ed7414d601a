//! How many frames a socket's fill ring may hold: a small allowance that grows while the port
//! is busy, up to the dataplane's per-socket target.
//!
//! Why: frames handed to a fill ring stay with the kernel until a packet arrives on that port.
//! A port that stays idle never gives them back, so every socket filled to the full target at
//! attach (as before) emptied a worker's pool after about ten pod ports (16,384 frames, 2,048
//! per ring), and the kernel then dropped everything arriving on the ports attached after.
//! Now a new socket gets [`START`] frames; whenever a receive finds that the kernel has used
//! a quarter or more of what the fill ring was given (a burst of one receive, 64 frames, on a
//! new ring), the allowance goes to the target at once. A TCP stream's slow start doubles its
//! burst every round trip (tens of microseconds here), and a worker that loses its core for a
//! moment sees two rounds' bursts at once: doubling the allowance a receive at a time lost
//! frames to it (bench apps: 139 frames in the first half second of a stream with doubling
//! alone; then, doubling until a receive found the ring empty, 158 in one round of three, a
//! fresh port's first burst, and 4 to 40 on CI's `lab_door`, a fresh port too). Going to the
//! target when half was used still lost ~20 frames at a stream's start in about one
//! `lab_door` run of five here; at a quarter, none in 8 (and none in 7 with a start of 1,024
//! frames, which idle ports cannot afford). So a busy
//! port has the deep ring its bursts need while idle ports hold only [`START`] each: a worker's default 16,384 frames
//! serve about 85 idle ports sharing it (bench cni: the 89th got none). Pod ports therefore
//! have UMEMs of their own by default ([`crate::afxdp::own_umem`]); this governs the uplink,
//! and pod ports under `--pod-umem-frames 0`.
//! [`START`] is what a port needs before it has grown: the lab's NetworkPolicy matrices (864
//! probes in under 2 s) lost packets with 64 and 128, none with 256.
//! A port that was busy and then idles keeps what it had grown to: the frames cannot be taken
//! back without a packet. So, on a pool shared by several ports, a ring grows beyond [`START`]
//! only out of what the pool holds above half of its frames when it grows ([`growth_cap`]): a
//! few ports that once had a burst can never park every frame in their idle rings, and a new
//! port still finds its first frames. (The per-socket target alone, a quarter of the worker's
//! frames for a busy port, would let four such ports take all of them.) The bound is taken
//! when the allowance grows, not at every top-up: under a stream the port's own frames fill
//! its RX ring and the egress port's TX ring, the pool falls below half, and a cap read at
//! each top-up let the fill ring drain to what it still held (`lab_door`: 152 frames lost in
//! a stream's first second, the sender's window never above 2,200 frames of the ring's 4,096).
//!
//! The signal is what is left in the fill ring, read from the ring's consumer position, not
//! the size of a receive: a receive takes at most a worker's burst (64), so "a receive took
//! half of what the ring held" never held above 128 frames, and under a sustained TCP stream
//! the allowance stayed at 256 while the kernel dropped a sixth of the frames for want of a
//! fill frame (`KERNEL_LOST`, bench apps, issue #13 part 4).
//!
//! Contract: [`FillAllowance::received`] after a receive that took frames, with the frames
//! still in the fill ring; [`FillAllowance::limit`] is what the ring is topped up to; plain
//! arithmetic, no allocation.

/// Frames a new socket's fill ring holds before it has grown.
pub const START: u32 = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FillAllowance {
    now: u32,
}

impl Default for FillAllowance {
    fn default() -> Self {
        Self { now: START }
    }
}

impl FillAllowance {
    /// The whole `target` from the start: for a socket that shares its frames with no other
    /// (pktgen's endpoint), where nothing is kept from anyone.
    pub fn whole(target: u32) -> Self {
        Self { now: target }
    }

    /// Takes in a receive of `n` frames after which `left` frames were still in the fill ring
    /// (given to the kernel and not yet used by it); a busy ring's allowance goes to `grow_to`:
    /// the per-socket target, or on a shared pool what [`growth_cap`] allows now.
    #[inline]
    pub fn received(&mut self, n: u32, left: u32, grow_to: u32) {
        if n == 0 || self.now >= grow_to {
            return;
        }
        if left.saturating_mul(4) <= self.now.saturating_mul(3) {
            self.now = grow_to;
        }
    }

    /// Whether it can still grow under `target` (whether [`Self::received`] needs the fill
    /// ring's level).
    #[inline]
    pub fn can_grow(&self, target: u32) -> bool {
        self.now < target
    }

    /// What the ring is topped up to under the dataplane's per-socket `target`.
    #[inline]
    pub fn limit(&self, target: u32) -> u32 {
        self.now.min(target)
    }
}

/// How far the allowance of a ring that shares its pool may grow now, toward `limit` (the
/// per-socket target), from `in_fill` frames: beyond [`START`] only as far as the pool's `free`
/// frames exceed half of its `size` (see the module doc). Passed as the target of
/// [`FillAllowance::received`].
#[inline]
pub fn growth_cap(limit: u32, in_fill: u32, free: u32, size: u32) -> u32 {
    let spare = free.saturating_sub(size / 2);
    limit.min(START.max(in_fill.saturating_add(spare)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_beyond_the_start_leaves_half_the_pool_to_the_others() {
        // A new ring fills to START from whatever is free, even from a nearly empty pool.
        assert_eq!(growth_cap(START, 0, 300, 16_384), START);
        assert_eq!(growth_cap(64, 0, 300, 16_384), 64, "never above the limit");
        // A grown ring (limit 4,096) with 256 in it: plenty free, it tops up to its limit.
        assert_eq!(growth_cap(4096, 256, 15_000, 16_384), 4096);
        // Only 1,000 free above half the pool: it grows by those alone.
        assert_eq!(growth_cap(4096, 256, 8_192 + 1_000, 16_384), 1_256);
        // At or below half: no growth beyond what it holds (never below START).
        assert_eq!(growth_cap(4096, 2_000, 8_000, 16_384), 2_000);
        assert_eq!(growth_cap(4096, 100, 8_000, 16_384), START);
        // Four rings that each had a burst: beyond their START frames, together they park at
        // most half the pool.
        let (size, mut free, mut rings) = (16_384u32, 16_384u32, [0u32; 4]);
        for _ in 0..10 {
            for r in &mut rings {
                let cap = growth_cap(4096, *r, free, size);
                let add = cap.saturating_sub(*r).min(free);
                *r += add;
                free -= add;
            }
        }
        assert!(free + 4 * START >= size / 2, "free {free}, rings {rings:?}");
        assert_eq!(rings[0], 4096, "the first busy ring still gets its full depth");
    }

    #[test]
    fn a_grown_ring_is_topped_up_to_its_allowance_while_its_own_frames_are_in_flight() {
        // One busy port on a pool of 16,384: it grows to the target when the pool is full.
        let (size, target) = (16_384u32, 4096u32);
        let mut a = FillAllowance::default();
        a.received(64, START / 2, growth_cap(target, START, size - 4 * START, size));
        assert_eq!(a.limit(target), target);
        // Then its stream holds 4,096 frames in its RX ring and 2,048 in the egress TX ring:
        // the pool is below half, and the fill ring, drained to 500 by the kernel, is still
        // topped up to the whole allowance (growth_cap no longer applies once grown).
        let free = size - target - 4096 - 2048 - 3 * START;
        assert!(free < size / 2);
        a.received(64, 500, growth_cap(target, 500, free, size));
        assert_eq!(a.limit(target), target, "the allowance stays");
        // A second port that bursts now finds no spare above half the pool: it stays at START.
        let mut b = FillAllowance::default();
        b.received(64, 0, growth_cap(target, START, free, size));
        assert_eq!(b.limit(target), START);
    }

    #[test]
    fn a_new_port_holds_little_and_a_busy_one_grows_to_the_target() {
        let mut a = FillAllowance::default();
        assert_eq!(a.limit(2048), START);
        assert_eq!(a.limit(32), 32, "never above the target");
        // Light traffic (the kernel used less than a quarter of the ring's frames): no growth.
        a.received(3, START - 3, 2048);
        a.received(60, START - 60, 2048);
        assert_eq!(a.limit(2048), START);
        // The kernel used a quarter of the ring in one round: the target at once, with a receive
        // of a worker's burst (64), not a step at a time behind a slow start.
        a.received(64, START - 64, 2048);
        assert_eq!(a.limit(2048), 2048);
        a.received(64, 0, 2048);
        assert_eq!(a.limit(2048), 2048);
        // A lowered target (more sockets) caps it at once.
        assert_eq!(a.limit(256), 256);
    }

    #[test]
    fn a_ring_the_kernel_empties_grows_although_each_receive_takes_one_burst() {
        // A sustained stream: the kernel uses every fill frame, the worker takes 64 a round
        // from a full RX ring. The former rule (receive >= half of what the ring held) kept
        // this port at 256 for good.
        let mut a = FillAllowance::default();
        a.received(64, 1, 2048);
        assert_eq!(a.limit(2048), 2048);
    }

    #[test]
    fn a_ring_found_empty_goes_to_the_target_at_once() {
        let mut a = FillAllowance::default();
        a.received(64, 0, 4096);
        assert_eq!(a.limit(4096), 4096);
    }

    #[test]
    fn an_empty_receive_never_grows() {
        let mut a = FillAllowance::default();
        a.received(0, 0, 2048);
        a.received(0, 1, 2048);
        assert_eq!(a.limit(2048), START);
    }

    #[test]
    fn fifty_idle_ports_fit_in_a_default_pool() {
        let per_port = FillAllowance::default().limit(2048);
        assert!(50 * per_port <= 16384 * 4 / 5, "50 idle ports take {} of 16384 frames", 50 * per_port);
    }
}
