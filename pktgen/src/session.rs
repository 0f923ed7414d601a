//! Runs a command: the sending and receiving threads, the once-a-second reporter, trials, and
//! the final report.
//!
//! Contract:
//! - Sending and receiving each run on their own thread, which enters the interface's network
//!   namespace itself ([`crate::netns::enter`]); the main thread only orchestrates and
//!   reports. When both use the same interface and namespace there is one AF_XDP socket: the
//!   receiving thread opens it and hands the TX half over.
//! - The traffic is resolved (interface addresses, next-hop MAC) before any XDP program is
//!   attached, so that resolving is not cut off by the program taking every frame.
//! - Ctrl-C (SIGINT) or SIGTERM stops sending, waits for the drain, and still reports.
//! - A failure on any thread ends the command with that error (exit status 1).
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::cli::{IoArgs, OutputArgs, PaceArgs, RecvArgs, Rfc2544Args, RunArgs, RxArgs, SendArgs, TrafficArgs, TxTuning};
use crate::netns;
use crate::port::{self, IoConfig, PortDesc, RxIo, TxIo};
use crate::rate::{monotonic_ns, Monotonic};
use crate::report::{self, FlowReport, LatencyReport, Report, RxSummary, Tick, TrafficDesc, TxSummary};
use crate::rfc2544::{self, SearchConfig, TrialOutcome};
use crate::rx::{rx_loop, KernelDrops, Matcher, ReplyMatcher, RxEnd, RxLimits, RxPort, SendLog};
use crate::spec::{self, Defaults, Pace, Rate, Traffic, TrafficSettings};
use crate::template::{min_stamped_size, Templates};
use crate::tx::{choose_tx_frames, TxEngine, TxResult, TxRun, TxShared};

const TARGET_FRAMES: u32 = 4096;
const MAX_FRAMES: u32 = 16384;

enum Event {
    TxResolved(Box<(Traffic, TrafficDesc, Option<Arc<SendLog>>)>),
    TxReady(Option<PortDesc>),
    TxDone(TxResult),
    RxReady(PortDesc),
    RxDone(RxEnd, Option<KernelDrops>),
    Failed(String),
}

enum TxCmd {
    Run(TxRun),
    Quit,
}

fn io_config(io: &IoArgs, ifname: &str, queue: u32, tx_budget: u32) -> IoConfig {
    IoConfig {
        ifname: ifname.to_string(),
        queue,
        xdp_mode: io.xdp_mode.map(Into::into),
        require_zerocopy: io.require_zerocopy,
        fallback: io.fallback,
        replace_xdp: io.replace_xdp,
        tx_budget: (tx_budget > 0).then_some(tx_budget),
        ring_size: io.ring,
    }
}

fn pin(core: Option<usize>) -> Result<()> {
    if let Some(c) = core {
        if !core_affinity::set_for_current(core_affinity::CoreId { id: c }) {
            bail!("cannot pin to core {c}");
        }
    }
    Ok(())
}

fn mac_str(m: [u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// Settings from the traffic file (if any) overridden by the flags.
fn settings(t: &TrafficArgs, pace: Option<&PaceArgs>) -> Result<TrafficSettings> {
    let file = match &t.file {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading traffic file {}", p.display()))?;
            TrafficSettings::parse_file(&text).with_context(|| format!("traffic file {}", p.display()))?
        }
        None => TrafficSettings::default(),
    };
    let mut flags = t.settings();
    if let Some(p) = pace {
        p.apply(&mut flags);
    }
    Ok(file.overridden_by(&flags))
}

struct TxSetup {
    io: IoConfig,
    netns: Option<String>,
    core: Option<usize>,
    settings: TrafficSettings,
    frames: Option<u32>,
    batch: usize,
    /// Log send times so that replies without a stamp can be timed (same-interface runs).
    log_sends: bool,
}

fn spawn_tx(
    setup: TxSetup,
    shared: Arc<TxShared>,
    events: Sender<Event>,
    cmds: Receiver<TxCmd>,
    from_rx: Option<Receiver<TxIo>>,
) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name("pktgen-tx".into())
        .spawn(move || {
            let ev = events.clone();
            if let Err(e) = tx_thread(setup, &shared, &events, cmds, from_rx) {
                let _ = ev.send(Event::Failed(format!("{e:#}")));
            }
        })
        .expect("spawning a thread")
}

fn tx_thread(setup: TxSetup, shared: &TxShared, events: &Sender<Event>, cmds: Receiver<TxCmd>, from_rx: Option<Receiver<TxIo>>) -> Result<()> {
    if let Some(ns) = &setup.netns {
        netns::enter(ns)?;
    }
    crate::rate::precise_sleeps();
    pin(setup.core)?;
    let ifname = setup.io.ifname.clone();
    if !switch::afxdp::iface::exists(&ifname) {
        bail!("interface {ifname} not found{}", setup.netns.as_deref().map(|n| format!(" in netns {n}")).unwrap_or_default());
    }
    let defaults = Defaults { src_mac: netns::iface_mac(&ifname).ok(), src_ip: netns::iface_ipv4(&ifname) };
    let mut traffic = Traffic::resolve(&setup.settings, &defaults)?;
    let dst_mac = match traffic.dst_mac {
        Some(m) => m,
        None => netns::resolve_dst_mac(&ifname, traffic.dst_ip.first)?,
    };
    traffic.dst_mac = Some(dst_mac);
    let frames = setup
        .frames
        .unwrap_or_else(|| choose_tx_frames(traffic.flow_count(), traffic.sizes.pattern.len(), TARGET_FRAMES, MAX_FRAMES));
    let pace = Pace::resolve(&setup.settings)?;
    let desc = TrafficDesc {
        proto: traffic.proto.name(),
        flows: traffic.flow_count(),
        src_ip: traffic.src_ip.to_string(),
        dst_ip: traffic.dst_ip.to_string(),
        src_port: if traffic.proto.has_ports() { traffic.src_port.to_string() } else { "-".into() },
        dst_port: if traffic.proto.has_ports() { traffic.dst_port.to_string() } else { "-".into() },
        sizes: traffic.sizes.text.clone(),
        mean_size: traffic.sizes.mean(),
        rate: pace.rate.to_string(),
        src_mac: mac_str(traffic.src_mac),
        dst_mac: mac_str(dst_mac),
        frames,
    };
    let log = (setup.log_sends && traffic.proto != crate::spec::Proto::Icmp).then(|| Arc::new(SendLog::new(traffic.flow_count())));
    let _ = events.send(Event::TxResolved(Box::new((traffic.clone(), desc, log.clone()))));
    let tmpl = Templates::new(&traffic, dst_mac);
    let sizes = traffic.sizes.pattern.clone();
    let (io, keep) = match from_rx {
        Some(rx) => (rx.recv().map_err(|_| anyhow!("the receiving thread did not hand over the socket"))?, None),
        None => {
            let o = port::open(&setup.io, frames, false, setup.netns.as_deref())?;
            let _ = events.send(Event::TxReady(Some(o.desc.clone())));
            (o.tx.ok_or_else(|| anyhow!("no TX half"))?, o.keep)
        }
    };
    match io {
        TxIo::Xdp(p) => {
            let mut e = TxEngine::new(*p, tmpl, &sizes, setup.batch);
            if let Some(l) = log {
                e.log_sends(l);
            }
            serve_tx(e, shared, events, cmds);
        }
        TxIo::Kernel(p) => {
            let mut e = TxEngine::new(p, tmpl, &sizes, setup.batch);
            if let Some(l) = log {
                e.log_sends(l);
            }
            serve_tx(e, shared, events, cmds);
        }
    }
    drop(keep);
    Ok(())
}

fn serve_tx<P: port::TxPort>(mut engine: TxEngine<P>, shared: &TxShared, events: &Sender<Event>, cmds: Receiver<TxCmd>) {
    let _ = events.send(Event::TxReady(None));
    while let Ok(cmd) = cmds.recv() {
        match cmd {
            TxCmd::Run(run) => {
                let r = engine.run(&run, shared, &Monotonic);
                let _ = events.send(Event::TxDone(r));
            }
            TxCmd::Quit => break,
        }
    }
}

struct RxSetup {
    io: IoConfig,
    netns: Option<String>,
    core: Option<usize>,
    limits: RxLimits,
    /// Frames of a TX half to open on the same socket and hand over.
    share_tx: Option<(u32, Sender<TxIo>)>,
}

fn spawn_rx(setup: RxSetup, matcher: Arc<Mutex<Matcher>>, stop: Arc<AtomicBool>, events: Sender<Event>) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name("pktgen-rx".into())
        .spawn(move || {
            if let Err(e) = rx_thread(setup, &matcher, &stop, &events) {
                let _ = events.send(Event::Failed(format!("{e:#}")));
            }
        })
        .expect("spawning a thread")
}

fn rx_thread(setup: RxSetup, matcher: &Mutex<Matcher>, stop: &AtomicBool, events: &Sender<Event>) -> Result<()> {
    if let Some(ns) = &setup.netns {
        netns::enter(ns)?;
    }
    pin(setup.core)?;
    let ifname = &setup.io.ifname;
    if !switch::afxdp::iface::exists(ifname) {
        bail!("interface {ifname} not found{}", setup.netns.as_deref().map(|n| format!(" in netns {n}")).unwrap_or_default());
    }
    let tx_frames = setup.share_tx.as_ref().map_or(0, |(f, _)| *f);
    let o = port::open(&setup.io, tx_frames, true, setup.netns.as_deref())?;
    if let Some((_, hand)) = setup.share_tx {
        let tx = o.tx.ok_or_else(|| anyhow!("no TX half"))?;
        hand.send(tx).map_err(|_| anyhow!("the sending thread is gone"))?;
    }
    let _ = events.send(Event::RxReady(o.desc.clone()));
    let (end, drops) = match o.rx.ok_or_else(|| anyhow!("no RX half"))? {
        RxIo::Xdp(mut p) => (rx_loop(&mut *p, matcher, stop, setup.limits, &Monotonic), p.kernel_drops()),
        RxIo::Kernel(mut p) => (rx_loop(&mut p, matcher, stop, setup.limits, &Monotonic), p.kernel_drops()),
    };
    drop(o.keep);
    let _ = events.send(Event::RxDone(end, drops));
    Ok(())
}

/// Ctrl-C / SIGTERM flag.
fn interrupt_flag() -> Result<Arc<AtomicBool>> {
    let f = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&f)).context("installing signal handlers")?;
    }
    Ok(f)
}

/// The main thread's view of a running command.
struct Session {
    events: Receiver<Event>,
    tx_shared: Arc<TxShared>,
    matcher: Arc<Mutex<Matcher>>,
    rx_stop: Arc<AtomicBool>,
    interrupted: Arc<AtomicBool>,
    quiet: bool,
    sending: bool,
    receiving: bool,
    start: Instant,
    next_tick: Instant,
    last_sent: u64,
    last_matched: u64,
    timeline: Vec<Tick>,
    tx_done: Option<TxResult>,
    rx_done: Option<RxEnd>,
    rx_drops: Option<KernelDrops>,
    /// Commands to the sending thread; dropping it ends that thread.
    cmd: Option<Sender<TxCmd>>,
    handles: Vec<JoinHandle<()>>,
}

impl Drop for Session {
    /// Whatever ended the command, the threads stop and are joined, so that the receiving
    /// thread detaches its XDP program before the process exits.
    fn drop(&mut self) {
        self.cmd.take();
        self.tx_shared.stop.store(true, Ordering::Relaxed);
        self.rx_stop.store(true, Ordering::Relaxed);
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

impl Session {
    fn new(events: Receiver<Event>, quiet: bool, sending: bool, receiving: bool, flows: usize) -> Result<Session> {
        let now = Instant::now();
        Ok(Session {
            events,
            tx_shared: Arc::new(TxShared::default()),
            matcher: Arc::new(Mutex::new(Matcher::new(flows))),
            rx_stop: Arc::new(AtomicBool::new(false)),
            interrupted: interrupt_flag()?,
            quiet,
            sending,
            receiving,
            start: now,
            next_tick: now + Duration::from_secs(1),
            last_sent: 0,
            last_matched: 0,
            timeline: Vec::new(),
            tx_done: None,
            rx_done: None,
            rx_drops: None,
            cmd: None,
            handles: Vec::new(),
        })
    }

    fn send(&self, c: TxCmd) -> Result<()> {
        self.cmd.as_ref().and_then(|s| s.send(c).ok()).ok_or_else(|| anyhow!("the sending thread is gone"))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Matcher> {
        self.matcher.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Handles events and ticks until `until` says stop; returns on a failure.
    fn pump(&mut self, mut until: impl FnMut(&Session) -> bool) -> Result<()> {
        loop {
            if until(self) {
                return Ok(());
            }
            if self.interrupted.load(Ordering::Relaxed) {
                self.tx_shared.stop.store(true, Ordering::Relaxed);
                if !self.sending || self.tx_done.is_some() {
                    self.rx_stop.store(true, Ordering::Relaxed);
                }
            }
            let wait = self.next_tick.saturating_duration_since(Instant::now()).min(Duration::from_millis(50));
            match self.events.recv_timeout(wait) {
                Ok(Event::TxDone(r)) => self.tx_done = Some(r),
                Ok(Event::RxDone(e, d)) => {
                    self.rx_done = Some(e);
                    self.rx_drops = d;
                }
                Ok(Event::Failed(e)) => {
                    self.tx_shared.stop.store(true, Ordering::Relaxed);
                    self.rx_stop.store(true, Ordering::Relaxed);
                    bail!("{e}");
                }
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => bail!("the worker threads ended unexpectedly"),
            }
            if Instant::now() >= self.next_tick {
                self.tick();
            }
        }
    }

    fn tick(&mut self) {
        self.next_tick += Duration::from_secs(1);
        let sent = self.tx_shared.sent.load(Ordering::Relaxed);
        let (matched, received, lost_inferred, p99) = {
            let mut m = self.lock();
            let p = m.take_interval_p99();
            (m.matched, m.table.received, m.table.lost_inferred(), p)
        };
        // A new trial starts the counters over.
        if sent < self.last_sent {
            self.last_sent = 0;
        }
        if matched < self.last_matched {
            self.last_matched = 0;
        }
        let lost = if self.sending && self.receiving { sent.saturating_sub(received) } else { lost_inferred };
        let t = Tick {
            t_s: (self.start.elapsed().as_secs_f64()).round(),
            tx_pps: sent - self.last_sent,
            rx_pps: matched - self.last_matched,
            lost,
            p99_ns: p99,
        };
        self.last_sent = sent;
        self.last_matched = matched;
        if !self.quiet {
            eprintln!("{}", report::progress_line(&t, self.receiving, self.sending));
        }
        self.timeline.push(t);
    }

    fn wait_for(&mut self, mut what: impl FnMut(&Event) -> bool, timeout: Duration) -> Result<Event> {
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("timed out while setting up");
            }
            match self.events.recv_timeout(left.min(Duration::from_millis(100))) {
                Ok(Event::Failed(e)) => bail!("{e}"),
                Ok(e) if what(&e) => return Ok(e),
                Ok(_) | Err(RecvTimeoutError::Timeout) => {
                    if self.interrupted.load(Ordering::Relaxed) {
                        bail!("interrupted");
                    }
                }
                Err(RecvTimeoutError::Disconnected) => bail!("the worker threads ended unexpectedly"),
            }
        }
    }
}

fn tx_summary(r: &TxResult) -> TxSummary {
    let d = (r.end_ns.saturating_sub(r.start_ns)) as f64 / 1e9;
    let d = if d > 0.0 { d } else { 1e-9 };
    TxSummary {
        sent: r.sent,
        bytes: r.bytes,
        duration_s: (d * 1e4).round() / 1e4,
        pps: (r.sent as f64 / d).round() as u64,
        wire_bps: ((r.bytes + r.sent * 24) as f64 * 8.0 / d).round() as u64,
        kicks: r.kicks,
        frames_per_kick: (r.kicks > 0).then(|| ((r.sent as f64 / r.kicks as f64) * 10.0).round() / 10.0),
        stalls: r.stalls,
    }
}

/// What the receiver's counts are compared with: stamped frames per flow, or every frame per
/// flow when replies were matched in order (each request may get an answer).
fn sent_basis<'a>(m: &Matcher, t: &'a TxResult) -> &'a [u64] {
    if m.fifo_matched > 0 {
        &t.per_flow_all
    } else {
        &t.per_flow
    }
}

fn rx_summary(m: &Matcher, sent: Option<&TxResult>, drops: Option<KernelDrops>) -> RxSummary {
    let (lost, basis, base) = match sent {
        Some(t) if m.fifo_matched > 0 => (m.table.lost_given(&t.per_flow_all), "requests", t.sent),
        Some(t) if t.per_flow.iter().any(|&n| n > 0) || t.sent == 0 => (m.table.lost_given(&t.per_flow), "sent", t.per_flow.iter().sum()),
        Some(_) => (0, "none", 0),
        None => (m.table.lost_inferred(), "inferred", m.table.expected_at_least),
    };
    let span = m.first_ns.map_or(0, |f| m.last_ns.saturating_sub(f));
    RxSummary {
        frames: m.frames,
        matched: m.matched,
        received: m.table.received,
        lost,
        loss_ratio: if base > 0 { lost as f64 / base as f64 } else { 0.0 },
        loss_basis: basis,
        duplicates: m.table.duplicates,
        reordered: m.table.reordered,
        stale: m.stale,
        other: m.other,
        bad_time: m.bad_time,
        unknown_flow: m.table.unknown_flow,
        pps: if span > 0 { (m.matched.saturating_sub(1) as f64 * 1e9 / span as f64).round() as u64 } else { 0 },
        kernel_drops: drops,
        replies_in_order: m.fifo_matched,
        replies_untimed: m.fifo_untimed,
    }
}

fn flow_reports(m: &Matcher, traffic: Option<&Traffic>, sent: Option<&TxResult>, all: bool) -> Vec<FlowReport> {
    let n = match traffic {
        Some(t) => t.flow_count(),
        None => (0..m.table.len()).rev().find(|&i| m.table.flow(i).is_some_and(|f| f.next > 0)).map_or(0, |i| i + 1),
    };
    if n == 0 || (!all && n > 16) {
        return Vec::new();
    }
    (0..n)
        .map(|i| {
            let f = m.table.flow(i).cloned().unwrap_or_default();
            let s = sent.and_then(|t| sent_basis(m, t).get(i).copied());
            let (src, dst) = match traffic {
                Some(t) => {
                    let (sa, sp, da, dp) = t.flow(i);
                    if t.proto.has_ports() {
                        (format!("{sa}:{sp}"), format!("{da}:{dp}"))
                    } else {
                        (sa.to_string(), format!("{da} (echo id {i})"))
                    }
                }
                None => ("-".into(), "-".into()),
            };
            FlowReport {
                flow: i,
                src,
                dst,
                sent: s,
                received: f.received,
                lost: s.unwrap_or(f.next).saturating_sub(f.received),
                reordered: f.reordered,
                duplicates: f.duplicates,
            }
        })
        .collect()
}

fn emit(report: &Report, out: &OutputArgs, hist: Option<&hdrhistogram::Histogram<u64>>) -> Result<()> {
    if let Some(path) = &out.plot {
        let kind = report.latency.as_ref().map_or("one-way", |l| l.kind);
        let title = match &report.traffic {
            Some(t) => format!("pktgen {}: {} {} -> {}, sizes {}, rate {}", report.mode, t.proto, t.src_ip, t.dst_ip, t.sizes, t.rate),
            None => format!("pktgen {}", report.mode),
        };
        std::fs::write(path, report::svg(&title, hist, kind, &report.timeline)).with_context(|| format!("writing {}", path.display()))?;
    }
    if out.json {
        println!("{}", serde_json::to_string(report)?);
    } else {
        print!("{}", report.text());
    }
    Ok(())
}

fn check_stamp_room(traffic: &Traffic, notes: &mut Vec<String>) {
    let min = min_stamped_size(traffic.proto);
    if traffic.sizes.pattern.iter().any(|&s| s < min) {
        let n = format!(
            "{} frames smaller than {min} bytes carry no stamp (no sequence number or time): a receiver matches them only as replies, in order per flow",
            traffic.proto.name()
        );
        notes.push(n);
    }
}

fn run_id() -> u16 {
    ((monotonic_ns() >> 10) as u16).max(1)
}

/// `pktgen send`.
pub fn send(a: SendArgs) -> Result<i32> {
    let s = settings(&a.traffic, Some(&a.pace))?;
    let pace = Pace::resolve(&s)?;
    let (ev_tx, ev_rx) = channel();
    let mut sess = Session::new(ev_rx, a.out.quiet, true, false, 1)?;
    let (cmd_tx, cmd_rx) = channel();
    let setup = TxSetup {
        io: io_config(&a.io, &a.io.iface, a.io.queue, a.tuning.tx_budget),
        netns: a.io.netns.clone(),
        core: a.io.core,
        settings: s,
        frames: a.tuning.frames,
        batch: a.tuning.batch as usize,
        log_sends: false,
    };
    sess.handles.push(spawn_tx(setup, Arc::clone(&sess.tx_shared), ev_tx, cmd_rx, None));
    sess.cmd = Some(cmd_tx);
    let Event::TxResolved(res) = sess.wait_for(|e| matches!(e, Event::TxResolved(_)), Duration::from_secs(30))? else { unreachable!() };
    let (traffic, desc, _) = *res;
    let Event::TxReady(Some(port)) = sess.wait_for(|e| matches!(e, Event::TxReady(Some(_))), Duration::from_secs(30))? else { unreachable!() };
    sess.wait_for(|e| matches!(e, Event::TxReady(None)), Duration::from_secs(60))?;
    eprintln!("pktgen: sending on {} ({} frames built)", port.summary(), desc.frames);
    let mut notes = Vec::new();
    check_stamp_room(&traffic, &mut notes);
    sess.start = Instant::now();
    sess.next_tick = sess.start + Duration::from_secs(1);
    sess.send(TxCmd::Run(TxRun { pace, run_id: run_id(), batch: a.tuning.batch as usize }))?;
    sess.pump(|s| s.tx_done.is_some())?;
    let _ = sess.send(TxCmd::Quit);
    let r = sess.tx_done.take().expect("pumped until done");
    let report = Report {
        mode: "send",
        tx_port: Some(port),
        rx_port: None,
        traffic: Some(desc),
        tx: Some(tx_summary(&r)),
        rx: None,
        latency: None,
        flows: Vec::new(),
        timeline: std::mem::take(&mut sess.timeline),
        rfc2544: None,
        interrupted: sess.interrupted.load(Ordering::Relaxed),
        notes,
    };
    emit(&report, &a.out, None)?;
    Ok(0)
}

/// `pktgen recv`.
pub fn recv(a: RecvArgs) -> Result<i32> {
    let count = a.count.as_deref().map(spec::parse_count).transpose().context("--count")?;
    let duration = a.duration.as_deref().map(spec::parse_duration).transpose().context("--duration")?;
    let idle = a.idle_timeout.as_deref().map(spec::parse_duration).transpose().context("--idle-timeout")?;
    let (ev_tx, ev_rx) = channel();
    let mut sess = Session::new(ev_rx, a.out.quiet, false, true, a.flows as usize)?;
    let limits = RxLimits {
        count,
        deadline_ns: None,
        idle_ns: idle.map(|d| d.as_nanos() as u64),
        busy_poll: a.busy_poll,
    };
    let setup = RxSetup {
        io: io_config(&a.io, &a.io.iface, a.io.queue, 0),
        netns: a.io.netns.clone(),
        core: a.io.core,
        limits,
        share_tx: None,
    };
    let h = spawn_rx(setup, Arc::clone(&sess.matcher), Arc::clone(&sess.rx_stop), ev_tx);
    sess.handles.push(h);
    let Event::RxReady(port) = sess.wait_for(|e| matches!(e, Event::RxReady(_)), Duration::from_secs(30))? else { unreachable!() };
    eprintln!("pktgen: receiving on {}", port.summary());
    sess.start = Instant::now();
    sess.next_tick = sess.start + Duration::from_secs(1);
    let deadline = duration.map(|d| Instant::now() + d);
    let rx_stop = Arc::clone(&sess.rx_stop);
    sess.pump(|s| {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            rx_stop.store(true, Ordering::Relaxed);
        }
        s.rx_done.is_some()
    })?;
    let m = sess.lock();
    let rx = rx_summary(&m, None, sess.rx_drops);
    let report = Report {
        mode: "recv",
        tx_port: None,
        rx_port: Some(port),
        traffic: None,
        tx: None,
        rx: Some(rx),
        latency: Some(LatencyReport { kind: "one-way", l: m.latency() }),
        flows: flow_reports(&m, None, None, a.out.per_flow),
        timeline: sess.timeline.clone(),
        rfc2544: None,
        interrupted: sess.interrupted.load(Ordering::Relaxed),
        notes: Vec::new(),
    };
    emit(&report, &a.out, Some(&m.total))?;
    Ok(0)
}

/// The threads of `run` and `rfc2544`, ready to send trials.
struct Duplex {
    sess: Session,
    traffic: Traffic,
    desc: TrafficDesc,
    tx_port: PortDesc,
    rx_port: PortDesc,
    latency_kind: &'static str,
    drain: Duration,
    batch: usize,
}

fn start_duplex(io: &IoArgs, rxa: &RxArgs, tuning: &TxTuning, s: TrafficSettings, quiet: bool) -> Result<Duplex> {
    let rx_if = rxa.rx_iface.clone().unwrap_or_else(|| io.iface.clone());
    let rx_ns = rxa.rx_netns.clone().or_else(|| io.netns.clone());
    let rx_queue = rxa.rx_queue.unwrap_or(io.queue);
    let shared = rx_if == io.iface && rx_ns == io.netns && rx_queue == io.queue;
    let drain = spec::parse_duration(&rxa.drain).context("--drain")?;
    let (ev_tx, ev_rx) = channel();
    let mut sess = Session::new(ev_rx, quiet, true, true, spec::MAX_FLOWS)?;
    let (cmd_tx, cmd_rx) = channel();
    let (hand_tx, hand_rx) = channel();
    let setup = TxSetup {
        io: io_config(io, &io.iface, io.queue, tuning.tx_budget),
        netns: io.netns.clone(),
        core: io.core,
        settings: s,
        frames: tuning.frames,
        batch: tuning.batch as usize,
        log_sends: shared,
    };
    sess.handles.push(spawn_tx(setup, Arc::clone(&sess.tx_shared), ev_tx.clone(), cmd_rx, shared.then_some(hand_rx)));
    sess.cmd = Some(cmd_tx);
    let Event::TxResolved(res) = sess.wait_for(|e| matches!(e, Event::TxResolved(_)), Duration::from_secs(30))? else { unreachable!() };
    let (traffic, desc, log) = *res;
    {
        let mut m = sess.lock();
        *m = Matcher::new(traffic.flow_count());
        if let Some(r) = log.and_then(|l| ReplyMatcher::new(&traffic, l)) {
            m.match_replies(r);
        }
    }
    let rx_setup = RxSetup {
        io: io_config(io, &rx_if, rx_queue, if shared { tuning.tx_budget } else { 0 }),
        netns: rx_ns,
        core: rxa.rx_core,
        limits: RxLimits { busy_poll: rxa.busy_poll, ..Default::default() },
        share_tx: shared.then_some((desc.frames, hand_tx)),
    };
    let h = spawn_rx(rx_setup, Arc::clone(&sess.matcher), Arc::clone(&sess.rx_stop), ev_tx);
    sess.handles.push(h);
    let mut tx_port = None;
    let mut rx_port = None;
    let mut engine_ready = false;
    while !(engine_ready && rx_port.is_some() && (tx_port.is_some() || shared)) {
        match sess.wait_for(|e| matches!(e, Event::TxReady(_) | Event::RxReady(_)), Duration::from_secs(60))? {
            Event::TxReady(Some(p)) => tx_port = Some(p),
            Event::TxReady(None) => engine_ready = true,
            Event::RxReady(p) => rx_port = Some(p),
            _ => {}
        }
    }
    let rx_port = rx_port.expect("waited for");
    let tx_port = tx_port.unwrap_or_else(|| rx_port.clone());
    if shared {
        eprintln!("pktgen: sending and receiving on {} ({} frames built)", tx_port.summary(), desc.frames);
    } else {
        eprintln!("pktgen: sending on {} ({} frames built)", tx_port.summary(), desc.frames);
        eprintln!("pktgen: receiving on {}", rx_port.summary());
    }
    Ok(Duplex {
        sess,
        traffic,
        desc,
        tx_port,
        rx_port,
        latency_kind: if shared { "round-trip" } else { "one-way" },
        drain,
        batch: tuning.batch as usize,
    })
}

impl Duplex {
    /// One run of the sender with the receiver matching only its frames; returns when the
    /// sender is done and the drain time passed.
    fn trial(&mut self, pace: Pace) -> Result<TxResult> {
        let id = run_id();
        self.sess.lock().expect_run(Some(id));
        self.sess.tx_shared.stop.store(false, Ordering::Relaxed);
        self.sess.tx_done = None;
        self.sess.send(TxCmd::Run(TxRun { pace, run_id: id, batch: self.batch }))?;
        self.sess.pump(|s| s.tx_done.is_some())?;
        let drain_end = Instant::now() + self.drain;
        self.sess.pump(|_| Instant::now() >= drain_end)?;
        Ok(self.sess.tx_done.take().expect("pumped until done"))
    }

    fn finish(mut self) -> Session {
        self.sess.rx_stop.store(true, Ordering::Relaxed);
        let _ = self.sess.send(TxCmd::Quit);
        let _ = self.sess.pump(|s| s.rx_done.is_some());
        for h in self.sess.handles.drain(..) {
            let _ = h.join();
        }
        self.sess
    }
}

/// `pktgen run`.
pub fn run(args: RunArgs) -> Result<i32> {
    let RunArgs { send: a, rx } = args;
    let s = settings(&a.traffic, Some(&a.pace))?;
    let pace = Pace::resolve(&s)?;
    if pace.duration.is_none() && pace.count.is_none() && !a.out.quiet {
        eprintln!("pktgen: no --duration or --count: sending until Ctrl-C");
    }
    let mut d = start_duplex(&a.io, &rx, &a.tuning, s, a.out.quiet)?;
    let mut notes = Vec::new();
    check_stamp_room(&d.traffic, &mut notes);
    d.sess.start = Instant::now();
    d.sess.next_tick = d.sess.start + Duration::from_secs(1);
    let r = d.trial(pace)?;
    let (traffic, desc, tx_port, rx_port, kind) = (d.traffic.clone(), d.desc.clone(), d.tx_port.clone(), d.rx_port.clone(), d.latency_kind);
    let sess = d.finish();
    let m = sess.lock();
    let report = Report {
        mode: "run",
        tx_port: Some(tx_port),
        rx_port: Some(rx_port),
        traffic: Some(desc),
        tx: Some(tx_summary(&r)),
        rx: Some(rx_summary(&m, Some(&r), sess.rx_drops)),
        latency: Some(LatencyReport { kind, l: m.latency() }),
        flows: flow_reports(&m, Some(&traffic), Some(&r), a.out.per_flow),
        timeline: sess.timeline.clone(),
        rfc2544: None,
        interrupted: sess.interrupted.load(Ordering::Relaxed),
        notes,
    };
    emit(&report, &a.out, Some(&m.total))?;
    Ok(0)
}

/// `pktgen rfc2544`.
pub fn rfc2544(a: Rfc2544Args) -> Result<i32> {
    let s = settings(&a.traffic, None)?;
    let trial_len = spec::parse_duration(&a.trial).context("--trial")?;
    let cfg = SearchConfig {
        max_rate: a.max_rate.as_deref().map(Rate::parse).transpose().context("--max-rate")?.and_then(Rate::pps),
        min_rate: spec::parse_scaled(&a.min_rate).context("--min-rate")? as u64,
        resolution: spec::parse_fraction(&a.resolution).context("--resolution")?,
        max_trials: a.max_trials.max(1),
        loss_tolerance: spec::parse_fraction(&a.loss_tolerance).context("--loss-tolerance")?,
    };
    let mut d = start_duplex(&a.io, &a.rx, &a.tuning, s, a.out.quiet)?;
    let mut notes = Vec::new();
    check_stamp_room(&d.traffic, &mut notes);
    let min = min_stamped_size(d.traffic.proto);
    if d.traffic.sizes.pattern.iter().all(|&s| s < min) {
        let proto = d.traffic.proto.name();
        d.finish();
        bail!("rfc2544 counts loss from the stamps in the frames: {proto} frames need at least {min} bytes (--size)");
    }
    d.sess.start = Instant::now();
    d.sess.next_tick = d.sess.start + Duration::from_secs(1);
    let quiet = a.out.quiet;
    let mut best_hist: Option<hdrhistogram::Histogram<u64>> = None;
    let mut best_rate = 0u64;
    let tol = cfg.loss_tolerance;
    let result = rfc2544::search(&cfg, |rate| {
        if d.sess.interrupted.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        if !quiet {
            eprintln!("pktgen: trial at {rate} for {:?}", trial_len);
        }
        let r = d.trial(Pace { rate, duration: Some(trial_len), count: None })?;
        let m = d.sess.lock();
        let dsec = (r.end_ns.saturating_sub(r.start_ns)) as f64 / 1e9;
        let o = TrialOutcome {
            offered_pps: rate.pps(),
            sent_pps: if dsec > 0.0 { (r.sent as f64 / dsec).round() as u64 } else { 0 },
            // Loss is counted over the frames that carry a stamp (or every request, when
            // replies are matched in order).
            sent: sent_basis(&m, &r).iter().sum(),
            received: m.table.received,
            lost: m.table.lost_given(sent_basis(&m, &r)),
            duplicates: m.table.duplicates,
            reordered: m.table.reordered,
            latency: m.latency(),
        };
        if o.passed(tol) && o.rate() >= best_rate {
            best_rate = o.rate();
            best_hist = Some(m.total.clone());
        }
        if !quiet {
            eprintln!(
                "pktgen: trial at {rate}: sent {} pps, lost {} of {} ({:.4}%): {}",
                report::thousands(o.sent_pps),
                report::thousands(o.lost),
                report::thousands(o.sent),
                o.loss_ratio() * 100.0,
                if o.passed(tol) { "pass" } else { "FAIL" }
            );
        }
        Ok(o)
    });
    let (traffic, desc, tx_port, rx_port, kind) = (d.traffic.clone(), d.desc.clone(), d.tx_port.clone(), d.rx_port.clone(), d.latency_kind);
    let _ = traffic;
    let interrupted = d.sess.interrupted.load(Ordering::Relaxed);
    let sess = d.finish();
    let result = result?;
    let at: Option<&TrialOutcome> = result.at_throughput.as_ref();
    let report = Report {
        mode: "rfc2544",
        tx_port: Some(tx_port),
        rx_port: Some(rx_port),
        traffic: Some(desc),
        tx: None,
        rx: None,
        latency: Some(LatencyReport { kind, l: at.map(|t| t.latency).unwrap_or_default() }),
        flows: Vec::new(),
        timeline: sess.timeline.clone(),
        rfc2544: Some(result),
        interrupted,
        notes,
    };
    emit(&report, &a.out, best_hist.as_ref())?;
    Ok(0)
}
