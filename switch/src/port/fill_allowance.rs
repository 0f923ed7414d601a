//! How many frames a socket's fill ring may hold: a small allowance that grows while the port
//! is busy, up to the dataplane's per-socket target.
//!
//! Why: frames handed to a fill ring stay with the kernel until a packet arrives on that port.
//! A port that stays idle never gives them back, so every socket filled to the full target at
//! attach (as before) emptied a worker's pool after about ten pod ports (16,384 frames, 2,048
//! per ring), and the kernel then dropped everything arriving on the ports attached after.
//! Now a new socket gets [`START`] frames; whenever one receive takes at least half of what its
//! ring held, the allowance doubles (up to the target), so a busy port soon has the deep ring
//! its bursts need while idle ports hold only [`START`] each: a worker's default 16,384 frames
//! serve about 85 idle pod ports (bench cni: the 89th got none; more need `podswitch run --frames` or more workers).
//! [`START`] is what a port needs before it has grown: the lab's NetworkPolicy matrices (864
//! probes in under 2 s) lost packets with 64 and 128, none with 256.
//! A port that was busy and then idles keeps what it had grown to: the frames cannot be taken
//! back without a packet.
//!
//! Contract: [`FillAllowance::received`] after every receive, [`FillAllowance::limit`] is what
//! the ring is topped up to; plain arithmetic, no allocation.

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

    /// Takes in a receive of `n` frames from a ring that held `held` before it.
    #[inline]
    pub fn received(&mut self, n: u32, held: u32, target: u32) {
        if n > 0 && n.saturating_mul(2) >= held && self.now < target {
            self.now = self.now.saturating_mul(2).min(target);
        }
    }

    /// What the ring is topped up to under the dataplane's per-socket `target`.
    #[inline]
    pub fn limit(&self, target: u32) -> u32 {
        self.now.min(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_port_holds_little_and_a_busy_one_grows_to_the_target() {
        let mut a = FillAllowance::default();
        assert_eq!(a.limit(2048), START);
        assert_eq!(a.limit(32), 32, "never above the target");
        // Light traffic (a few frames out of a full ring): no growth.
        a.received(3, START, 2048);
        assert_eq!(a.limit(2048), START);
        // Bursts that drain half the ring or more: doubling up to the target.
        let mut steps = 0;
        while a.limit(2048) < 2048 {
            let held = a.limit(2048);
            a.received(held, held, 2048);
            steps += 1;
        }
        assert_eq!(steps, 3, "256 -> 2048 in three busy receives");
        a.received(2048, 2048, 2048);
        assert_eq!(a.limit(2048), 2048);
        // A lowered target (more sockets) caps it at once.
        assert_eq!(a.limit(256), 256);
    }

    #[test]
    fn fifty_idle_ports_fit_in_a_default_pool() {
        let per_port = FillAllowance::default().limit(2048);
        assert!(50 * per_port <= 16384 * 4 / 5, "50 idle ports take {} of 16384 frames", 50 * per_port);
    }
}
