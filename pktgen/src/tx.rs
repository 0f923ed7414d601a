//! The transmit loop.
//!
//! Contract:
//! - [`TxEngine::new`] builds every frame once: frame `i` gets size `pattern[i % sizes]` for
//!   good and starts as flow `i % flows`. [`choose_tx_frames`] picks a frame count that is a
//!   multiple of lcm(flows, sizes) when it can, so that with frames coming back in order (they
//!   do: copy mode completes in order) a frame is always reused for the same flow and only its
//!   stamp changes; otherwise the flow fields are rewritten too (incrementally).
//! - [`TxEngine::run`] sends until the count, the duration or the stop flag, at the rate asked
//!   (token bucket) or as fast as the port takes frames, in batches. Per frame it rewrites only
//!   the stamp (and the flow when it differs); it never allocates. Sequence numbers are per
//!   flow, from 0 in every run, given only to frames that carry a stamp, and only to frames
//!   that are submitted (the ring's room is asked first), so a receiver's gaps are real losses.
//! - Copy mode sends only inside `sendto()`, at most the kernel's TX budget a call (32 by
//!   default): the loop kicks until the ring is drained (bounded, as the switch's worker does).
//!   Zero-copy kicks only when the ring asks.
//! - Progress is published in [`TxShared`] after every batch (plain stores, one writer).
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use std::sync::Arc;

use crate::port::TxPort;
use crate::rate::{pace_wait, Clock, TokenBucket};
use crate::rx::SendLog;
use crate::spec::{Pace, Rate};
use crate::template::Templates;

/// Kicks per batch at most in copy mode (the switch's worker uses the same bound).
const MAX_KICKS: u32 = 8;

/// Frames a TX socket gets: a multiple of lcm(flows, sizes) near `target` when that is at
/// most `max`, else a multiple of the size pattern (flows are then rewritten per frame).
pub fn choose_tx_frames(flows: usize, sizes: usize, target: u32, max: u32) -> u32 {
    fn gcd(a: u64, b: u64) -> u64 {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }
    let (f, s) = (flows.max(1) as u64, sizes.max(1) as u64);
    let lcm = f / gcd(f, s) * s;
    let (target, max) = (u64::from(target), u64::from(max));
    let unit = if lcm <= max { lcm } else if s <= max { s } else { 1 };
    let k = (target / unit).max(1);
    (unit * k).min(max.max(unit)) as u32
}

/// Shared with the reporter.
#[derive(Debug, Default)]
pub struct TxShared {
    pub sent: AtomicU64,
    pub bytes: AtomicU64,
    pub kicks: AtomicU64,
    pub stop: AtomicBool,
}

/// One run of the engine.
#[derive(Debug, Clone, Copy)]
pub struct TxRun {
    pub pace: Pace,
    pub run_id: u16,
    pub batch: usize,
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct TxResult {
    pub sent: u64,
    pub bytes: u64,
    pub start_ns: u64,
    pub end_ns: u64,
    pub kicks: u64,
    /// Stamped frames sent per flow (= the next sequence number of each flow); frames too
    /// small for a stamp are not counted here.
    pub per_flow: Vec<u64>,
    /// All frames sent per flow.
    pub per_flow_all: Vec<u64>,
    /// Times the loop found no frame or ring room and had to wait for the kernel.
    pub stalls: u64,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    len: u32,
    flow: u32,
}

pub struct TxEngine<P: TxPort> {
    port: P,
    tmpl: Templates,
    slots: Vec<Slot>,
    free: VecDeque<u32>,
    seq: Vec<u32>,
    /// Frames sent per flow in this run (stamped or not).
    nth: Vec<u32>,
    /// Send times for matching replies that carry no stamp.
    log: Option<Arc<SendLog>>,
    next_flow: u32,
    batch: Vec<(u32, u32)>,
    reclaimed: Vec<u32>,
}

impl<P: TxPort> TxEngine<P> {
    /// Builds every frame of the port from the templates; `sizes` are frame sizes with FCS.
    pub fn new(mut port: P, tmpl: Templates, sizes: &[u32], max_batch: usize) -> TxEngine<P> {
        let n = port.frame_count();
        let flows = tmpl.flow_count().max(1) as u32;
        let mut slots = Vec::with_capacity(n as usize);
        for i in 0..n {
            let len = (sizes[i as usize % sizes.len()] - 4).min(port.frame_capacity() as u32);
            let flow = i % flows;
            port.write(i, |buf| tmpl.build(buf, flow, len as usize, 0));
            slots.push(Slot { len, flow });
        }
        TxEngine {
            port,
            tmpl,
            slots,
            free: (0..n).collect(),
            seq: vec![0; flows as usize],
            nth: vec![0; flows as usize],
            log: None,
            next_flow: 0,
            batch: vec![(0, 0); max_batch.max(1)],
            reclaimed: vec![0; n as usize],
        }
    }

    /// Logs every frame's send time in `log` (one store per frame).
    pub fn log_sends(&mut self, log: Arc<SendLog>) {
        self.log = Some(log);
    }

    #[cfg(test)]
    pub fn port(&self) -> &P {
        &self.port
    }

    #[inline]
    fn reclaim(&mut self) -> usize {
        let n = self.port.reclaim(&mut self.reclaimed);
        for &i in &self.reclaimed[..n] {
            self.free.push_back(i);
        }
        n
    }

    /// Kicks until the kernel has sent what was submitted (copy mode), or once (zero-copy).
    #[inline]
    fn flush(&mut self) -> u64 {
        let mut kicks = 0;
        while self.port.needs_kick() {
            let _ = self.port.kick();
            kicks += 1;
            if !self.port.kick_completes() || kicks >= u64::from(MAX_KICKS) {
                break;
            }
            if self.reclaim() == 0 {
                break;
            }
        }
        self.reclaim();
        kicks
    }

    /// Gives back frames `from..to` of the current batch that were never submitted: their
    /// sequence numbers (the newest of their flows) and the flow rotation are rewound.
    fn unassign(&mut self, from: usize, to: usize) {
        for k in (from..to).rev() {
            let (slot, _) = self.batch[k];
            let s = self.slots[slot as usize];
            if self.tmpl.has_stamp(s.len as usize) {
                self.seq[s.flow as usize] = self.seq[s.flow as usize].wrapping_sub(1);
            }
            self.nth[s.flow as usize] = self.nth[s.flow as usize].wrapping_sub(1);
            let flow = s.flow;
            self.next_flow = flow;
            self.free.push_front(slot);
        }
    }

    /// Sends as `run` says until done or `shared.stop`.
    pub fn run<C: Clock>(&mut self, run: &TxRun, shared: &TxShared, clock: &C) -> TxResult {
        self.seq.iter_mut().for_each(|s| *s = 0);
        self.nth.iter_mut().for_each(|s| *s = 0);
        if let Some(l) = &self.log {
            l.reset();
        }
        self.next_flow = 0;
        let flows = self.seq.len() as u32;
        let batch = run.batch.clamp(1, self.batch.len());
        let start = clock.now_ns();
        let deadline = run.pace.duration.map(|d| start.saturating_add(d.as_nanos() as u64));
        let limit = run.pace.count.unwrap_or(u64::MAX);
        let mut bucket = match run.pace.rate {
            Rate::Max => None,
            Rate::Pps(r) => Some(TokenBucket::new(r, TokenBucket::default_burst(r, batch as u64), start)),
        };
        let chunk = run.pace.rate.pps().map_or(1, |r| TokenBucket::chunk(r, batch as u64));
        let (mut sent, mut bytes, mut kicks, mut stalls) = (0u64, 0u64, 0u64, 0u64);
        shared.sent.store(0, Ordering::Relaxed);
        shared.bytes.store(0, Ordering::Relaxed);
        loop {
            if shared.stop.load(Ordering::Relaxed) || sent >= limit {
                break;
            }
            let now = clock.now_ns();
            if deadline.is_some_and(|d| now >= d) {
                break;
            }
            self.reclaim();
            let mut want = (batch as u64).min(limit - sent).min(self.free.len() as u64) as usize;
            want = self.port.room(want);
            if want == 0 {
                stalls += 1;
                kicks += self.flush();
                continue;
            }
            if let Some(tb) = bucket.as_mut() {
                want = tb.take_chunk(now, chunk, want as u64) as usize;
                if want == 0 {
                    pace_wait(tb.wait_for(now, chunk).min(Duration::from_millis(10)));
                    continue;
                }
            }
            let run_id = run.run_id;
            for k in 0..want {
                let slot = self.free.pop_front().expect("want <= free frames");
                let flow = self.next_flow;
                self.next_flow = if flow + 1 == flows { 0 } else { flow + 1 };
                let s = &mut self.slots[slot as usize];
                let (len, old) = (s.len, s.flow);
                // Only stamped frames take a sequence number: the receiver sees only those.
                let seq = self.seq[flow as usize];
                if self.tmpl.has_stamp(len as usize) {
                    self.seq[flow as usize] = seq.wrapping_add(1);
                }
                let nth = self.nth[flow as usize];
                self.nth[flow as usize] = nth.wrapping_add(1);
                if let Some(l) = &self.log {
                    l.record(flow as usize, nth, now);
                }
                s.flow = flow;
                let tmpl = &self.tmpl;
                self.port.write(slot, |buf| {
                    tmpl.rewrite_flow(buf, len as usize, old, flow);
                    tmpl.stamp(buf, len as usize, run_id, seq, now);
                });
                self.batch[k] = (slot, len);
            }
            let mut done = 0;
            while done < want {
                let n = self.port.submit(&self.batch[done..want]);
                done += n;
                if done < want {
                    stalls += 1;
                    kicks += self.flush();
                    if n == 0 && shared.stop.load(Ordering::Relaxed) {
                        self.unassign(done, want);
                        break;
                    }
                }
            }
            sent += done as u64;
            for &(_, len) in &self.batch[..done] {
                bytes += u64::from(len);
            }
            kicks += self.flush();
            shared.sent.store(sent, Ordering::Relaxed);
            shared.bytes.store(bytes, Ordering::Relaxed);
            shared.kicks.store(kicks, Ordering::Relaxed);
        }
        // Let the last frames go out.
        let drain_end = clock.now_ns() + 100_000_000;
        while self.port.outstanding() > 0 && clock.now_ns() < drain_end {
            kicks += self.flush();
            if self.port.outstanding() > 0 {
                std::thread::sleep(Duration::from_micros(50));
                self.reclaim();
            }
        }
        let end = clock.now_ns();
        shared.sent.store(sent, Ordering::Relaxed);
        shared.bytes.store(bytes, Ordering::Relaxed);
        shared.kicks.store(kicks, Ordering::Relaxed);
        TxResult {
            sent,
            bytes,
            start_ns: start,
            end_ns: end,
            kicks,
            per_flow: self.seq.iter().map(|&s| u64::from(s)).collect(),
            per_flow_all: self.nth.iter().map(|&s| u64::from(s)).collect(),
            stalls,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::port::SentFrames;
    use crate::rx::find_stamp;
    use crate::spec::{Defaults, Traffic, TrafficSettings};
    use crate::template::Stamp;

    #[test]
    fn frame_counts() {
        assert_eq!(choose_tx_frames(1, 1, 4096, 16384), 4096);
        assert_eq!(choose_tx_frames(256, 1, 4096, 16384), 4096);
        assert_eq!(choose_tx_frames(1000, 1, 4096, 16384), 4000);
        assert_eq!(choose_tx_frames(1000, 12, 4096, 16384), 3000);
        assert_eq!(choose_tx_frames(10000, 1, 4096, 16384), 10000);
        assert_eq!(choose_tx_frames(65536, 12, 4096, 16384), 4092, "too many flows: keep sizes, rewrite flows");
        assert_eq!(choose_tx_frames(65536, 1, 4096, 16384), 4096);
    }

    /// A port that records what it was given, completing every frame at once.
    struct Recorder {
        bufs: Vec<Vec<u8>>,
        out: Vec<Vec<u8>>,
        done: SentFrames,
        ring: usize,
    }

    impl TxPort for Recorder {
        fn frame_count(&self) -> u32 {
            self.bufs.len() as u32
        }
        fn frame_capacity(&self) -> usize {
            2048
        }
        fn write<R>(&mut self, index: u32, f: impl FnOnce(&mut [u8]) -> R) -> R {
            f(&mut self.bufs[index as usize])
        }
        fn room(&mut self, want: usize) -> usize {
            want.min(self.ring)
        }
        fn submit(&mut self, frames: &[(u32, u32)]) -> usize {
            let n = frames.len().min(self.ring);
            for &(i, len) in &frames[..n] {
                self.out.push(self.bufs[i as usize][..len as usize].to_vec());
                self.done.push(i);
            }
            n
        }
        fn reclaim(&mut self, out: &mut [u32]) -> usize {
            self.done.reclaim(out)
        }
        fn outstanding(&self) -> u32 {
            self.done.len()
        }
    }

    struct Sim(std::cell::Cell<u64>);
    impl Clock for Sim {
        fn now_ns(&self) -> u64 {
            let v = self.0.get();
            self.0.set(v + 1000);
            v
        }
    }

    fn engine(flows: &str, sizes: &[u32], frames: usize) -> TxEngine<Recorder> {
        let s = TrafficSettings { dst_ip: Some("10.0.0.2".into()), src_port: Some(flows.into()), ..Default::default() };
        let d = Defaults { src_mac: Some([2, 0, 0, 0, 0, 1]), src_ip: Some("10.0.0.1".parse().unwrap()) };
        let t = Templates::new(&Traffic::resolve(&s, &d).unwrap(), [2, 0, 0, 0, 0, 2]);
        let port = Recorder { bufs: vec![vec![0; 2048]; frames], out: Vec::new(), done: SentFrames::default(), ring: 48 };
        TxEngine::new(port, t, sizes, 64)
    }

    #[test]
    fn sends_count_with_per_flow_sequences() {
        // 3 flows on 7 frames: frames get reused for other flows (rewritten), sizes cycle.
        let mut e = engine("1000-1002", &[64, 100], 7);
        let shared = TxShared::default();
        let run = TxRun { pace: Pace { rate: Rate::Max, duration: None, count: Some(1000) }, run_id: 9, batch: 64 };
        let r = e.run(&run, &shared, &Sim(std::cell::Cell::new(1)));
        assert_eq!(r.sent, 1000);
        assert_eq!(r.per_flow, vec![334, 333, 333]);
        let out = &e.port().out;
        assert_eq!(out.len(), 1000);
        let mut next = [0u32; 3];
        for (k, f) in out.iter().enumerate() {
            let s: Stamp = find_stamp(f).expect("stamped");
            assert_eq!(s.run, 9);
            assert_eq!(usize::from(s.flow), k % 3, "flows round robin");
            assert_eq!(s.seq, next[k % 3]);
            next[k % 3] += 1;
            let sport = u16::from_be_bytes([f[34], f[35]]);
            assert_eq!(sport, 1000 + s.flow, "flow fields follow the flow");
            let ip = switch::wire::Ipv4Packet::new_checked(&f[14..]).unwrap();
            let udp = switch::wire::UdpPacket::new_checked(&f[34..]).unwrap();
            assert!(ip.verify_checksum() && udp.verify_checksum(ip.src_addr(), ip.dst_addr()));
            assert!(f.len() == 60 || f.len() == 96);
        }
        // A second run starts sequences over.
        let r2 = e.run(&TxRun { run_id: 10, ..run }, &shared, &Sim(std::cell::Cell::new(1)));
        assert_eq!(r2.sent, 1000);
        assert_eq!(find_stamp(&e.port().out[1000]).unwrap(), Stamp { run: 10, flow: 0, seq: 0, ts_ns: find_stamp(&e.port().out[1000]).unwrap().ts_ns });
        assert_eq!(shared.sent.load(Ordering::Relaxed), 1000);
    }

    #[test]
    fn rate_and_duration() {
        let mut e = engine("1000", &[64], 64);
        let shared = TxShared::default();
        // Simulated clock: 1 µs per reading; 100k pps for 10 ms simulated = 1000 frames.
        let run = TxRun {
            pace: Pace { rate: Rate::Pps(100_000), duration: Some(Duration::from_millis(10)), count: None },
            run_id: 1,
            batch: 16,
        };
        let r = e.run(&run, &shared, &Sim(std::cell::Cell::new(1)));
        assert!((990..=1001).contains(&r.sent), "sent {}", r.sent);
    }

    #[test]
    fn stop_flag_ends_a_run() {
        let mut e = engine("1000", &[64], 64);
        let shared = TxShared::default();
        shared.stop.store(true, Ordering::Relaxed);
        let run = TxRun { pace: Pace { rate: Rate::Max, duration: None, count: None }, run_id: 1, batch: 64 };
        assert_eq!(e.run(&run, &shared, &Sim(std::cell::Cell::new(1))).sent, 0);
    }
}
