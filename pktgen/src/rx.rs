//! The receiver: finds pktgen's stamp in received frames and matches them per flow.
//!
//! Contract:
//! - [`Matcher::on_frame`] looks at every frame read: IPv4 UDP, TCP or ICMP echo (request or
//!   reply) whose L4 payload starts with a [`Stamp`] is "matched" and goes to the flow table
//!   and the latency histograms (receive time minus the stamp's time); anything else counts as
//!   `other`. With a run filter ([`Matcher::expect_run`]) stamps of another run count as
//!   `stale` (late frames of an earlier RFC 2544 trial).
//! - Latency is one-way when the frames come from the sender, round-trip when they are
//!   replies echoing the payload (ICMP echo replies, echo servers): the same arithmetic, the
//!   report names which ([`crate::report`]). Stamps from the future (another machine's clock)
//!   count as `bad_time` and are not recorded.
//! - Replies that do not echo the payload (the lab pod servers' UDP answers, a stack's SYN-ACK
//!   or RST to a SYN) are matched when a [`ReplyMatcher`] is set (same-interface runs of UDP
//!   and TCP): a frame from one of the destinations back to one of the sources is the reply of
//!   its flow's oldest unanswered request (first in, first out per flow), and its round-trip
//!   time comes from the send times the sender logs ([`SendLog`]). Exact while nothing is
//!   lost; after a loss later replies pair with the wrong requests of that flow.
//! - [`rx_loop`] reads batches under the matcher's lock (uncontended except when the reporter
//!   takes a snapshot once a second) and never allocates.
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hdrhistogram::Histogram;
use switch::wire::{parse_frame, FrameKind, ParsedFrame, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP};

use crate::rate::Clock;
use crate::spec::{IpRange, PortRange, Proto, Traffic};
use crate::stats::{new_histogram, record_latency, FlowTable, Latency};
use crate::template::Stamp;

/// Frames read per batch.
pub const RX_BATCH: usize = 64;

/// Send times of the last `depth` frames of every flow, written by the sender (one store per
/// frame), read by the receiver to time replies that carry no stamp.
pub struct SendLog {
    depth: u32,
    ts: Vec<AtomicU64>,
    sent: Vec<AtomicU32>,
}

impl SendLog {
    /// A log of `flows` flows keeping about 2^20 times in all (at least 8, at most 256 per flow).
    pub fn new(flows: usize) -> SendLog {
        let depth = ((1usize << 20) / flows.max(1)).clamp(8, 256) as u32;
        SendLog {
            depth,
            ts: (0..flows * depth as usize).map(|_| AtomicU64::new(0)).collect(),
            sent: (0..flows).map(|_| AtomicU32::new(0)).collect(),
        }
    }

    /// Frame `nth` (from 0) of `flow` left at `ts_ns`.
    #[inline]
    pub fn record(&self, flow: usize, nth: u32, ts_ns: u64) {
        let i = flow * self.depth as usize + (nth % self.depth) as usize;
        self.ts[i].store(ts_ns, Ordering::Relaxed);
        self.sent[flow].store(nth.wrapping_add(1), Ordering::Release);
    }

    /// Starts every flow over (a new run).
    pub fn reset(&self) {
        for s in &self.sent {
            s.store(0, Ordering::Release);
        }
    }

    /// When frame `nth` of `flow` left, if it did and its time is still kept.
    #[inline]
    pub fn lookup(&self, flow: usize, nth: u32) -> Option<u64> {
        let sent = self.sent.get(flow)?.load(Ordering::Acquire);
        if nth >= sent || sent - nth > self.depth {
            return None;
        }
        let t = self.ts[flow * self.depth as usize + (nth % self.depth) as usize].load(Ordering::Relaxed);
        // The sender may have moved past this slot meanwhile.
        let again = self.sent[flow].load(Ordering::Acquire);
        (again >= sent && again - nth <= self.depth).then_some(t)
    }
}

/// Maps replies (destination -> source) back to the flow they answer.
pub struct ReplyMatcher {
    log: Arc<SendLog>,
    proto: u8,
    src_ip: IpRange,
    src_port: PortRange,
    dst_ip: IpRange,
    dst_port: PortRange,
    replies: Vec<u32>,
}

impl ReplyMatcher {
    /// For UDP and TCP traffic (ICMP echo replies carry the stamp anyway).
    pub fn new(t: &Traffic, log: Arc<SendLog>) -> Option<ReplyMatcher> {
        let proto = match t.proto {
            Proto::Udp => IPPROTO_UDP,
            Proto::Tcp | Proto::TcpSyn => IPPROTO_TCP,
            Proto::Icmp => return None,
        };
        Some(ReplyMatcher {
            log,
            proto,
            src_ip: t.src_ip,
            src_port: t.src_port,
            dst_ip: t.dst_ip,
            dst_port: t.dst_port,
            replies: vec![0; t.flow_count()],
        })
    }

    fn reset(&mut self) {
        self.replies.iter_mut().for_each(|r| *r = 0);
    }

    /// The flow a reply answers (see [`Traffic::flow`] for the numbering).
    #[inline]
    pub fn flow_of(&self, p: &ParsedFrame) -> Option<usize> {
        if p.kind != FrameKind::Ipv4 || !p.l4_parsed || p.ip_protocol != self.proto {
            return None;
        }
        fn ip_index(r: &IpRange, a: std::net::Ipv4Addr) -> Option<usize> {
            let (a, f, l) = (u32::from(a), u32::from(r.first), u32::from(r.last));
            (f..=l).contains(&a).then(|| (a - f) as usize)
        }
        fn port_index(r: &PortRange, p: u16) -> Option<usize> {
            (r.first..=r.last).contains(&p).then(|| usize::from(p - r.first))
        }
        let dip = ip_index(&self.dst_ip, p.src_ip)?;
        let dport = port_index(&self.dst_port, p.src_port)?;
        let sip = ip_index(&self.src_ip, p.dst_ip)?;
        let sport = port_index(&self.src_port, p.dst_port)?;
        Some(((dip * self.dst_port.len() + dport) * self.src_ip.len() + sip) * self.src_port.len() + sport)
    }
}

/// The stamp of a received frame, if it carries one.
#[cfg(test)]
pub fn find_stamp(frame: &[u8]) -> Option<Stamp> {
    let p = parse_frame(frame).ok()?;
    stamp_of(frame, &p)
}

#[inline]
fn stamp_of(frame: &[u8], p: &ParsedFrame) -> Option<Stamp> {
    if p.kind != FrameKind::Ipv4 || !p.l4_parsed || p.is_fragment {
        return None;
    }
    let l4 = usize::from(p.l4_offset);
    let end = l4 + usize::from(p.l4_len);
    let payload = match p.ip_protocol {
        IPPROTO_UDP => l4 + 8,
        IPPROTO_ICMP if p.icmp_type == 0 || p.icmp_type == 8 => l4 + 8,
        IPPROTO_TCP => l4 + usize::from(frame.get(l4 + 12)? >> 4) * 4,
        _ => return None,
    };
    Stamp::read(frame.get(payload..end)?)
}

/// Everything the receiver counts.
pub struct Matcher {
    pub table: FlowTable,
    pub total: Histogram<u64>,
    interval: Histogram<u64>,
    /// Frames read, matched or not.
    pub frames: u64,
    pub bytes: u64,
    /// Frames with a stamp of the expected run.
    pub matched: u64,
    pub matched_bytes: u64,
    pub other: u64,
    pub stale: u64,
    pub bad_time: u64,
    run: Option<u16>,
    pub first_ns: Option<u64>,
    pub last_ns: u64,
    replies: Option<ReplyMatcher>,
    /// Replies without a stamp matched first-in-first-out per flow.
    pub fifo_matched: u64,
    /// Of those, replies whose request's send time was no longer (or not yet) known.
    pub fifo_untimed: u64,
}

impl Matcher {
    pub fn new(flows: usize) -> Matcher {
        Matcher {
            table: FlowTable::new(flows),
            total: new_histogram(),
            interval: new_histogram(),
            frames: 0,
            bytes: 0,
            matched: 0,
            matched_bytes: 0,
            other: 0,
            stale: 0,
            bad_time: 0,
            run: None,
            first_ns: None,
            last_ns: 0,
            replies: None,
            fifo_matched: 0,
            fifo_untimed: 0,
        }
    }

    /// Also match replies without a stamp (see the module contract).
    pub fn match_replies(&mut self, r: ReplyMatcher) {
        self.replies = Some(r);
    }

    /// Starts over, accepting only stamps of `run` (or any).
    pub fn expect_run(&mut self, run: Option<u16>) {
        let flows = self.table.len();
        let mut replies = self.replies.take();
        if let Some(r) = replies.as_mut() {
            r.reset();
        }
        *self = Matcher::new(flows);
        self.run = run;
        self.replies = replies;
    }

    #[inline]
    fn count_match(&mut self, len: usize, now_ns: u64) {
        self.matched += 1;
        self.matched_bytes += len as u64;
        if self.first_ns.is_none() {
            self.first_ns = Some(now_ns);
        }
        self.last_ns = now_ns;
    }

    #[inline]
    fn on_reply(&mut self, p: &ParsedFrame, len: usize, now_ns: u64) -> bool {
        let Some(r) = self.replies.as_mut() else { return false };
        let Some(flow) = r.flow_of(p) else { return false };
        let k = r.replies[flow];
        r.replies[flow] = k.wrapping_add(1);
        let sent_at = r.log.lookup(flow, k);
        if self.table.record(flow as u16, k).is_none() {
            return true;
        }
        self.count_match(len, now_ns);
        self.fifo_matched += 1;
        match sent_at {
            Some(t) if t <= now_ns => {
                record_latency(&mut self.total, now_ns - t);
                record_latency(&mut self.interval, now_ns - t);
            }
            _ => self.fifo_untimed += 1,
        }
        true
    }

    #[inline]
    pub fn on_frame(&mut self, frame: &[u8], now_ns: u64) {
        self.frames += 1;
        self.bytes += frame.len() as u64;
        let Ok(p) = parse_frame(frame) else {
            self.other += 1;
            return;
        };
        let Some(s) = stamp_of(frame, &p) else {
            if !self.on_reply(&p, frame.len(), now_ns) {
                self.other += 1;
            }
            return;
        };
        if self.run.is_some_and(|r| r != s.run) {
            self.stale += 1;
            return;
        }
        if self.table.record(s.flow, s.seq).is_none() {
            return;
        }
        self.count_match(frame.len(), now_ns);
        if s.ts_ns > now_ns {
            self.bad_time += 1;
            return;
        }
        let lat = now_ns - s.ts_ns;
        record_latency(&mut self.total, lat);
        record_latency(&mut self.interval, lat);
    }

    /// p99 of the latencies since the last call (None if none), and starts a new interval.
    pub fn take_interval_p99(&mut self) -> Option<u64> {
        let p = (!self.interval.is_empty()).then(|| self.interval.value_at_quantile(0.99));
        self.interval.reset();
        p
    }

    pub fn latency(&self) -> Latency {
        Latency::of(&self.total)
    }
}

/// When the receive loop ends (besides its stop flag).
#[derive(Debug, Clone, Copy, Default)]
pub struct RxLimits {
    /// After this many matched frames.
    pub count: Option<u64>,
    /// At this CLOCK_MONOTONIC time.
    pub deadline_ns: Option<u64>,
    /// When nothing was matched for this long after the first matched frame.
    pub idle_ns: Option<u64>,
    /// Spin instead of sleeping in poll() when there is nothing to read.
    pub busy_poll: bool,
}

/// How the loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxEnd {
    Stopped,
    Count,
    Deadline,
    Idle,
}

/// A source of received frames.
pub trait RxPort {
    /// Reads up to `max` frames, lending each to `f`; how many were read.
    fn recv(&mut self, max: usize, f: impl FnMut(&[u8])) -> usize;
    /// Waits up to `timeout_ms` for frames.
    fn wait(&mut self, timeout_ms: i32) -> bool;
    /// Whether a batch is a snapshot of frames that had all arrived when `recv` began (an
    /// AF_XDP ring): one receive time serves the batch. Otherwise every frame gets its own.
    fn snapshot_batches(&self) -> bool {
        true
    }
    /// Frames the kernel dropped before pktgen could read them, if it says.
    fn kernel_drops(&self) -> Option<KernelDrops> {
        None
    }
}

/// Drops the kernel counted on an AF_XDP socket (XDP_STATISTICS).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct KernelDrops {
    /// The RX ring was full (pktgen did not read fast enough).
    pub rx_ring_full: u64,
    /// No free frame in the fill ring.
    pub fill_ring_empty: u64,
    pub other: u64,
}

/// Reads frames into `matcher` until `stop` or a limit.
pub fn rx_loop<P: RxPort, C: Clock>(port: &mut P, matcher: &Mutex<Matcher>, stop: &AtomicBool, limits: RxLimits, clock: &C) -> RxEnd {
    const SPIN_NS: u64 = 50_000;
    let mut empty_since: Option<u64> = None;
    loop {
        if stop.load(Ordering::Relaxed) {
            return RxEnd::Stopped;
        }
        // The receive time is read after the ring was read (when the first frame is handed
        // over): read before, a frame stamped in between would look as if from the future.
        let mut at: Option<u64> = None;
        let per_frame = !port.snapshot_batches();
        let (n, matched, last) = {
            let mut m = matcher.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let n = port.recv(RX_BATCH, |f| {
                let t = match at {
                    Some(t) if !per_frame => t,
                    _ => clock.now_ns(),
                };
                at = Some(t);
                m.on_frame(f, t);
            });
            (n, m.matched, m.last_ns)
        };
        let now = at.unwrap_or_else(|| clock.now_ns());
        if limits.count.is_some_and(|c| matched >= c) {
            return RxEnd::Count;
        }
        if limits.deadline_ns.is_some_and(|d| now >= d) {
            return RxEnd::Deadline;
        }
        if n > 0 {
            empty_since = None;
            continue;
        }
        if let Some(idle) = limits.idle_ns {
            if matched > 0 && now.saturating_sub(last) >= idle {
                return RxEnd::Idle;
            }
        }
        let since = *empty_since.get_or_insert(now);
        if limits.busy_poll || now - since < SPIN_NS {
            std::hint::spin_loop();
        } else {
            port.wait(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Defaults, Traffic, TrafficSettings};
    use crate::template::Templates;

    fn templates(proto: &str) -> Templates {
        let s = TrafficSettings {
            proto: Some(proto.into()),
            dst_ip: Some("10.0.0.2".into()),
            src_port: if proto == "icmp" { None } else { Some("1000-1003".into()) },
            ..Default::default()
        };
        let d = Defaults { src_mac: Some([2, 0, 0, 0, 0, 1]), src_ip: Some("10.0.0.1".parse().unwrap()) };
        Templates::new(&Traffic::resolve(&s, &d).unwrap(), [2, 0, 0, 0, 0, 2])
    }

    fn frame(t: &Templates, flow: u32, len: usize, run: u16, seq: u32, ts: u64) -> Vec<u8> {
        let mut b = vec![0u8; 2048];
        t.build(&mut b, flow, len, run);
        t.stamp(&mut b, len, run, seq, ts);
        b.truncate(len);
        b
    }

    #[test]
    fn stamps_are_found_for_every_protocol() {
        for proto in ["udp", "icmp", "tcp", "tcp-syn"] {
            let t = templates(proto);
            let f = frame(&t, 0, 200, 3, 42, 1000);
            assert_eq!(find_stamp(&f), Some(Stamp { run: 3, flow: 0, seq: 42, ts_ns: 1000 }), "{proto}");
        }
        // An ICMP echo reply (type 0) echoing the payload matches too.
        let t = templates("icmp");
        let mut f = frame(&t, 0, 100, 1, 5, 10);
        f[34] = 0;
        assert!(find_stamp(&f).is_some());
        // Truncated or foreign frames do not.
        assert_eq!(find_stamp(&f[..50]), None);
        assert_eq!(find_stamp(&[0u8; 60]), None);
        let mut g = frame(&templates("udp"), 0, 100, 1, 5, 10);
        g[42] = 0;
        assert_eq!(find_stamp(&g), None, "bad magic");
    }

    #[test]
    fn matcher_counts_loss_reorder_duplicates_and_latency() {
        let t = templates("udp");
        let mut m = Matcher::new(4);
        m.expect_run(Some(7));
        // Flow 0: 0..100 with 10 and 11 swapped, 50 lost, 60 twice.
        let mut seqs: Vec<u32> = (0..100).filter(|&s| s != 50).collect();
        seqs.swap(10, 11);
        seqs.insert(61, 60);
        for &s in &seqs {
            m.on_frame(&frame(&t, 0, 64, 7, s, 1_000), 1_000 + 2_000);
        }
        // Flow 1: a stale frame of run 6, and a frame from the future.
        m.on_frame(&frame(&t, 1, 64, 6, 0, 0), 5_000);
        m.on_frame(&frame(&t, 1, 64, 7, 0, 9_000), 5_000);
        m.on_frame(&[0u8; 64], 5_000);
        assert_eq!(m.frames, 100 + 3);
        assert_eq!(m.table.received, 99 + 1);
        assert_eq!(m.table.duplicates, 1);
        assert_eq!(m.table.reordered, 1);
        assert_eq!(m.table.lost_inferred(), 1);
        assert_eq!(m.table.lost_given(&[100, 1]), 1);
        assert_eq!((m.stale, m.other, m.bad_time), (1, 1, 1));
        let l = m.latency();
        assert_eq!(l.samples, 100, "duplicates still measure latency; bad times do not");
        assert!((1_999..=2_001).contains(&l.p50_ns), "{l:?}");
        assert!(m.take_interval_p99().is_some());
        assert_eq!(m.take_interval_p99(), None);
    }

    #[test]
    fn replies_without_a_stamp_are_matched_in_order() {
        let s = TrafficSettings {
            dst_ip: Some("10.0.0.2".into()),
            src_port: Some("1000-1003".into()),
            dst_port: Some("80".into()),
            ..Default::default()
        };
        let d = Defaults { src_mac: Some([2, 0, 0, 0, 0, 1]), src_ip: Some("10.0.0.1".parse().unwrap()) };
        let tr = Traffic::resolve(&s, &d).unwrap();
        let log = Arc::new(SendLog::new(tr.flow_count()));
        let mut m = Matcher::new(4);
        m.match_replies(ReplyMatcher::new(&tr, Arc::clone(&log)).unwrap());
        // Requests 0..3 of flow 2 (port 1002) left at 100, 200, 300.
        for (k, t) in [100u64, 200, 300].iter().enumerate() {
            log.record(2, k as u32, *t);
        }
        // A server's answer: 10.0.0.2:80 -> 10.0.0.1:1002, no stamp.
        let answer = |sport: u16, dport: u16| -> Vec<u8> {
            let rs = TrafficSettings {
                src_ip: Some("10.0.0.2".into()),
                dst_ip: Some("10.0.0.1".into()),
                src_port: Some(sport.to_string()),
                dst_port: Some(dport.to_string()),
                ..Default::default()
            };
            let t = Templates::new(&Traffic::resolve(&rs, &d).unwrap(), [2, 0, 0, 0, 0, 1]);
            let mut b = frame(&t, 0, 100, 0, 0, 0);
            b[42] = 0; // not a stamp: "x/b 10.0.0.1:1002" in the lab
            b
        };
        m.on_frame(&answer(80, 1002), 1_000);
        m.on_frame(&answer(80, 1002), 1_000);
        m.on_frame(&answer(81, 1002), 1_000); // not from a destination port
        m.on_frame(&answer(80, 999), 1_000); // not to a source port
        assert_eq!((m.fifo_matched, m.other, m.fifo_untimed), (2, 2, 0));
        assert_eq!(m.table.flow(2).unwrap().received, 2);
        let l = m.latency();
        assert_eq!((l.samples, l.min_ns, l.max_ns), (2, 800, 900));
        // A fourth reply has no request: counted, untimed.
        m.on_frame(&answer(80, 1002), 1_000);
        m.on_frame(&answer(80, 1002), 1_000);
        assert_eq!(m.fifo_untimed, 1);
        m.expect_run(Some(1));
        log.reset();
        m.on_frame(&answer(80, 1002), 1_000);
        assert_eq!((m.fifo_matched, m.fifo_untimed), (1, 1), "a new run starts the flows over");
    }

    #[test]
    fn send_log_forgets_old_times() {
        let log = SendLog::new(1 << 20);
        assert_eq!(log.depth, 8);
        for k in 0..20u32 {
            log.record(5, k, u64::from(k) * 10);
        }
        assert_eq!(log.lookup(5, 19), Some(190));
        assert_eq!(log.lookup(5, 12), Some(120));
        assert_eq!(log.lookup(5, 11), None, "overwritten");
        assert_eq!(log.lookup(5, 20), None, "not sent yet");
        assert_eq!(log.lookup(6, 0), None);
    }

    struct FakeRx {
        frames: Vec<Vec<u8>>,
        pos: usize,
    }

    impl RxPort for FakeRx {
        fn recv(&mut self, max: usize, mut f: impl FnMut(&[u8])) -> usize {
            let n = max.min(self.frames.len() - self.pos);
            for fr in &self.frames[self.pos..self.pos + n] {
                f(fr);
            }
            self.pos += n;
            n
        }
        fn wait(&mut self, _: i32) -> bool {
            false
        }
    }

    struct FakeClock(std::cell::Cell<u64>);
    impl Clock for FakeClock {
        fn now_ns(&self) -> u64 {
            let v = self.0.get();
            self.0.set(v + 1_000);
            v
        }
    }

    #[test]
    fn loop_ends_on_count_and_idle() {
        let t = templates("udp");
        let frames: Vec<Vec<u8>> = (0..200).map(|s| frame(&t, s % 4, 64, 1, s / 4, 0)).collect();
        let m = Mutex::new(Matcher::new(4));
        let stop = AtomicBool::new(false);
        let mut port = FakeRx { frames: frames.clone(), pos: 0 };
        let lim = RxLimits { count: Some(100), ..Default::default() };
        assert_eq!(rx_loop(&mut port, &m, &stop, lim, &FakeClock(std::cell::Cell::new(1))), RxEnd::Count);
        assert!(m.lock().unwrap().matched >= 100);
        let m = Mutex::new(Matcher::new(4));
        let mut port = FakeRx { frames, pos: 0 };
        let lim = RxLimits { idle_ns: Some(1_000_000), ..Default::default() };
        assert_eq!(rx_loop(&mut port, &m, &stop, lim, &FakeClock(std::cell::Cell::new(1))), RxEnd::Idle);
        let m = m.into_inner().unwrap();
        assert_eq!((m.matched, m.table.lost_inferred()), (200, 0));
    }
}
