//! The neighbour table: the MAC addresses of next hops on the uplink (the gateway, the other
//! nodes of the underlay), learned from ARP, shared by every worker.
//!
//! Contract:
//! - [`Neighbours::learn`] records (IPv4 → MAC) at a time; a worker calls it for the sender of
//!   every ARP request or reply it receives on the uplink (RFC 826: a receiver updates the
//!   sender's entry). [`Neighbours::lookup`] gives the MAC of a next hop, or says what to do:
//!   [`Resolution::Known`] (fresh), [`Resolution::Refresh`] (usable, but older than
//!   [`Timers::refresh_after_s`]: send one ARP request to confirm it), [`Resolution::Request`]
//!   (unknown or older than [`Timers::expire_after_s`]: not usable; send an ARP request), or
//!   [`Resolution::Wait`] (a request went out less than [`Timers::retry_after_s`] ago; not
//!   usable). So each next hop is asked for at most once per retry interval whatever the
//!   packet rate, and a neighbour that stops answering expires.
//! - The table holds a fixed number of addresses ([`Neighbours::new`], rounded up to a power
//!   of two); a slot once given to an address (by `learn`, or by `lookup`, which remembers the
//!   request) keeps it: next hops are few and stable (nodes and gateways), and only next hops
//!   of routes are looked up, never arbitrary destinations. When every slot is taken, an address not in the table is [`Resolution::Full`]
//!   (counted by the caller; not usable) and `learn` of it does nothing.
//! - Lock-free, no allocation after `new`, no panic: a slot is an address word (claimed once
//!   by compare-and-swap) and one 64-bit word holding the MAC and the time it was learned,
//!   plus a word with the time of the last request. Readers never see a MAC of another
//!   address, nor half of one. Times are whole seconds of the caller's clock
//!   ([`crate::conntrack`]'s); comparisons wrap.
//! - [`Neighbours::entries`] lists the learned entries with their age, for `show neighbours`.
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// When entries need confirming, expire, and when an unanswered request may be repeated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// Older than this, an entry is still used but confirmed by one request.
    pub refresh_after_s: u32,
    /// Older than this, an entry is not used until answered again.
    pub expire_after_s: u32,
    /// Requests for one address go out at most this often.
    pub retry_after_s: u32,
}

impl Default for Timers {
    /// Linux's neighbour defaults, rounded: reachable for 30 s, then stale (used and
    /// confirmed), and gone after 5 minutes without an answer; a request per second.
    fn default() -> Self {
        Timers { refresh_after_s: 30, expire_after_s: 300, retry_after_s: 1 }
    }
}

/// What [`Neighbours::lookup`] says about a next hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// Use this MAC.
    Known([u8; 6]),
    /// Use this MAC, and send one ARP request for the address (the caller was chosen to).
    Refresh([u8; 6]),
    /// Not usable: send an ARP request for the address (the caller was chosen to).
    Request,
    /// Not usable; a request is already on its way.
    Wait,
    /// Not usable; the table has no slot for the address.
    Full,
}

/// One learned entry, for listings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NeighbourEntry {
    pub ip: Ipv4Addr,
    pub mac: [u8; 6],
    /// Seconds since it was learned or last confirmed.
    pub age_s: u32,
}

/// Bit 63 of the MAC word: a MAC was learned (a learned MAC may be all zeros in theory).
const LEARNED: u64 = 1 << 63;

struct Slot {
    /// The address (host order) + 1; 0 is a free slot.
    key: AtomicU32,
    /// [`LEARNED`] | seconds (bits 48..63, 15 bits are enough for the timers' ranges) | MAC.
    mac_time: AtomicU64,
    /// Seconds of the last request + 1; 0 is never.
    requested: AtomicU32,
}

/// See the module contract.
pub struct Neighbours {
    slots: Box<[Slot]>,
    mask: usize,
    timers: Timers,
}

impl std::fmt::Debug for Neighbours {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Neighbours").field("capacity", &self.slots.len()).field("timers", &self.timers).finish()
    }
}

/// 15 bits of seconds: differences are taken modulo 2^15 (about 9 hours, far above the timers).
const TIME_BITS: u32 = 15;
const TIME_MASK: u32 = (1 << TIME_BITS) - 1;

fn age(now_s: u32, then_s: u32) -> u32 {
    now_s.wrapping_sub(then_s) & TIME_MASK
}

impl Neighbours {
    /// A table for `capacity` addresses (at least 16, rounded up to a power of two).
    pub fn new(capacity: usize, timers: Timers) -> Self {
        let n = capacity.max(16).next_power_of_two();
        let slots = (0..n).map(|_| Slot { key: AtomicU32::new(0), mac_time: AtomicU64::new(0), requested: AtomicU32::new(0) }).collect();
        // The timers must fit the 15-bit clock's range to compare correctly.
        let clamp = |s: u32| s.min(TIME_MASK / 2);
        let timers = Timers {
            refresh_after_s: clamp(timers.refresh_after_s),
            expire_after_s: clamp(timers.expire_after_s),
            retry_after_s: clamp(timers.retry_after_s),
        };
        Neighbours { slots, mask: n - 1, timers }
    }

    pub fn timers(&self) -> Timers {
        self.timers
    }

    fn start(&self, ip: Ipv4Addr) -> usize {
        // Fibonacci hashing of the address: neighbours are often consecutive addresses.
        (u32::from(ip).wrapping_mul(0x9e37_79b9) >> 7) as usize & self.mask
    }

    /// The slot of `ip`, claiming a free one when `claim`.
    fn slot(&self, ip: Ipv4Addr, claim: bool) -> Option<&Slot> {
        let key = u32::from(ip).wrapping_add(1);
        if key == 0 {
            return None; // 255.255.255.255 is no neighbour
        }
        let mut i = self.start(ip);
        for _ in 0..self.slots.len() {
            let s = &self.slots[i];
            match s.key.load(Ordering::Acquire) {
                k if k == key => return Some(s),
                0 if claim => match s.key.compare_exchange(0, key, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => return Some(s),
                    Err(k) if k == key => return Some(s),
                    Err(_) => {}
                },
                0 => return None,
                _ => {}
            }
            i = (i + 1) & self.mask;
        }
        None
    }

    /// Records that `ip` is at `mac`, at `now_s`.
    pub fn learn(&self, ip: Ipv4Addr, mac: [u8; 6], now_s: u32) {
        let Some(s) = self.slot(ip, true) else { return };
        let mut m = [0u8; 8];
        m[2..].copy_from_slice(&mac);
        let word = LEARNED | (u64::from(now_s & TIME_MASK) << 48) | u64::from_be_bytes(m);
        s.mac_time.store(word, Ordering::Release);
    }

    /// What to do for next hop `ip` at `now_s` (see the module contract). A `Request` or
    /// `Refresh` answer is given to one caller per retry interval.
    pub fn lookup(&self, ip: Ipv4Addr, now_s: u32) -> Resolution {
        let Some(s) = self.slot(ip, true) else { return Resolution::Full };
        let word = s.mac_time.load(Ordering::Acquire);
        let learned = word & LEARNED != 0;
        let mac = {
            let b = word.to_be_bytes();
            [b[2], b[3], b[4], b[5], b[6], b[7]]
        };
        let learned_age = age(now_s, ((word >> 48) as u32) & TIME_MASK);
        if learned && learned_age < self.timers.refresh_after_s {
            return Resolution::Known(mac);
        }
        let usable = learned && learned_age < self.timers.expire_after_s;
        if self.claim_request(s, now_s) {
            return if usable { Resolution::Refresh(mac) } else { Resolution::Request };
        }
        if usable {
            Resolution::Known(mac)
        } else {
            Resolution::Wait
        }
    }

    /// Whether this caller sends the next request for the slot's address (none in the last
    /// retry interval; the caller that wins the swap sends it).
    fn claim_request(&self, s: &Slot, now_s: u32) -> bool {
        let last = s.requested.load(Ordering::Relaxed);
        if last != 0 && age(now_s, last - 1) < self.timers.retry_after_s {
            return false;
        }
        let stamp = (now_s & TIME_MASK) + 1;
        s.requested.compare_exchange(last, stamp, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    }

    /// The learned entries that have not expired, by address.
    pub fn entries(&self, now_s: u32) -> Vec<NeighbourEntry> {
        let mut out: Vec<NeighbourEntry> = self
            .slots
            .iter()
            .filter_map(|s| {
                let key = s.key.load(Ordering::Acquire);
                let word = s.mac_time.load(Ordering::Acquire);
                if key == 0 || word & LEARNED == 0 {
                    return None;
                }
                let age_s = age(now_s, ((word >> 48) as u32) & TIME_MASK);
                if age_s >= self.timers.expire_after_s {
                    return None;
                }
                let b = word.to_be_bytes();
                Some(NeighbourEntry { ip: Ipv4Addr::from(key - 1), mac: [b[2], b[3], b[4], b[5], b[6], b[7]], age_s })
            })
            .collect();
        out.sort_by_key(|e| e.ip);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GW: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 1);
    const MAC: [u8; 6] = [0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee];

    #[test]
    fn unknown_next_hops_are_requested_once_per_interval() {
        let t = Neighbours::new(16, Timers::default());
        assert_eq!(t.lookup(GW, 100), Resolution::Request);
        assert_eq!(t.lookup(GW, 100), Resolution::Wait, "one request per interval, whatever the packet rate");
        assert_eq!(t.lookup(GW, 100), Resolution::Wait);
        assert_eq!(t.lookup(GW, 101), Resolution::Request, "asked again after the retry interval");
        t.learn(GW, MAC, 101);
        assert_eq!(t.lookup(GW, 101), Resolution::Known(MAC));
        assert_eq!(t.entries(105), [NeighbourEntry { ip: GW, mac: MAC, age_s: 4 }]);
    }

    #[test]
    fn old_entries_are_confirmed_then_expire() {
        let t = Neighbours::new(16, Timers { refresh_after_s: 30, expire_after_s: 300, retry_after_s: 1 });
        t.learn(GW, MAC, 1000);
        assert_eq!(t.lookup(GW, 1029), Resolution::Known(MAC));
        // Stale: still used, and confirmed by one request.
        assert_eq!(t.lookup(GW, 1030), Resolution::Refresh(MAC));
        assert_eq!(t.lookup(GW, 1030), Resolution::Known(MAC));
        // The answer makes it fresh again.
        t.learn(GW, MAC, 1031);
        assert_eq!(t.lookup(GW, 1040), Resolution::Known(MAC));
        // No answer for 300 s: not used any more, and asked for.
        assert_eq!(t.lookup(GW, 1331), Resolution::Request);
        assert_eq!(t.lookup(GW, 1331), Resolution::Wait);
        assert!(t.entries(1331).is_empty());
    }

    #[test]
    fn a_new_mac_replaces_the_old_one() {
        let t = Neighbours::new(16, Timers::default());
        t.learn(GW, MAC, 5);
        let moved = [0x02, 1, 2, 3, 4, 5];
        t.learn(GW, moved, 6);
        assert_eq!(t.lookup(GW, 6), Resolution::Known(moved));
    }

    #[test]
    fn a_full_table_says_so_and_keeps_its_entries() {
        let t = Neighbours::new(16, Timers::default());
        for i in 0..16u8 {
            t.learn(Ipv4Addr::new(10, 0, 0, i), [2, 0, 0, 0, 0, i], 1);
        }
        let other = Ipv4Addr::new(10, 0, 1, 1);
        assert_eq!(t.lookup(other, 1), Resolution::Full);
        t.learn(other, MAC, 1);
        assert_eq!(t.lookup(other, 1), Resolution::Full);
        for i in 0..16u8 {
            assert_eq!(t.lookup(Ipv4Addr::new(10, 0, 0, i), 1), Resolution::Known([2, 0, 0, 0, 0, i]));
        }
        assert_eq!(t.entries(1).len(), 16);
    }

    #[test]
    fn the_clock_wraps() {
        let t = Neighbours::new(16, Timers::default());
        let before_wrap = u32::MAX - 2;
        t.learn(GW, MAC, before_wrap);
        assert_eq!(t.lookup(GW, before_wrap.wrapping_add(10)), Resolution::Known(MAC));
        assert_eq!(t.lookup(GW, before_wrap.wrapping_add(31)), Resolution::Refresh(MAC));
    }

    #[test]
    fn workers_learning_and_looking_up_at_once_never_see_a_torn_entry() {
        let t = std::sync::Arc::new(Neighbours::new(64, Timers::default()));
        let macs: Vec<[u8; 6]> = (0..4u8).map(|i| [i; 6]).collect();
        std::thread::scope(|sc| {
            for w in 0..4usize {
                let (t, macs) = (&t, &macs);
                sc.spawn(move || {
                    for n in 0..20_000u32 {
                        let ip = Ipv4Addr::new(10, 0, 0, (n % 32) as u8);
                        t.learn(ip, macs[w], 1);
                        if let Resolution::Known(m) | Resolution::Refresh(m) = t.lookup(ip, 1) {
                            assert!(macs.contains(&m), "torn MAC {m:?}");
                        }
                    }
                });
            }
        });
        assert_eq!(t.entries(1).len(), 32);
    }
}
