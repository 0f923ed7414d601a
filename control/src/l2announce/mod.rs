//! L2 announcements (`--l2-announce`): the LoadBalancer ingress IPs and externalIPs answered
//! with ARP on the uplink by exactly one node per address, chosen through a
//! `coordination.k8s.io/v1` Lease per address, so a bare-metal cluster needs no MetalLB speaker.
//!
//! Contract:
//! - The apply side offers the addresses this node may announce after every publish that
//!   changed the frontends or the nodes ([`L2Announcer::offer`], computed by
//!   [`candidates::announceable`]: never a node's address); the announcer's thread
//!   runs one election per offered address ([`election::Election`], Lease
//!   `podswitch-l2-A-B-C-D` in `--l2-lease-namespace`, holder = the node's name) every
//!   `--l2-lease-retry-period`, and at once when the offer changes.
//! - The addresses it holds ([`L2Announcer::held`], with a [`L2Announcer::generation`] that
//!   changes with them) are the tables' `uplink_arp`: the uplink's filter redirects ARP
//!   requests for them to the switch, which answers with the uplink's MAC; other nodes'
//!   filters pass such requests to their kernels, which do not answer (the address is none of
//!   theirs). On taking an address the node sends gratuitous ARP ([`garp`]), again one round
//!   later, so neighbours move to it at once.
//! - Failover: a node that stops renewing (its switch killed, the node gone; its store
//!   failing: every request to the store has at most one retry period, and the held set is
//!   checked after each) stops answering after `--l2-lease-renew-deadline`, and another node that can serve the address
//!   takes it once the Lease has gone unrenewed for `--l2-lease-duration` (5 s by default), so
//!   within the duration plus one retry period. A switch that stops normally releases its
//!   Leases ([`election::Election::release`]): the next node takes them at its next round.
//! - An address no longer offered (Service gone, no endpoint this node could use) is released.
//! - The Leases live in the Kubernetes API when the switch reads it, else in `--l2-lease-dir`,
//!   a directory every node's switch shares ([`lease_store::FileLeases`]). A store that fails
//!   is retried every round; its error is in `show status` (`l2_announcements.error`).
//! - `show status` lists every offered address with its holder as last seen and whether this
//!   node announces it ([`L2Status`]).
pub mod candidates;
pub mod election;
pub mod garp;
pub mod kube_leases;
pub mod lease_store;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use election::{Election, Timing};
use lease_store::LeaseStore;

/// `podswitch run`'s L2 announcement flags.
#[derive(Debug, Clone, clap::Args)]
pub struct L2AnnounceArgs {
    /// Answer ARP on --uplink for the LoadBalancer ingress IPs (`status.loadBalancer.ingress[].ip`)
    /// and externalIPs of the Services this node can serve, each address from exactly one node
    /// chosen through a Lease, failing over to another node when that one goes (what MetalLB's
    /// layer 2 mode does). Off by default: the router must then route those addresses to the nodes.
    #[arg(long, requires = "uplink")]
    pub l2_announce: bool,
    /// Namespace of the announcement Leases (`podswitch-l2-A-B-C-D`, one per address).
    #[arg(long, value_name = "NAMESPACE", default_value = "kube-system")]
    pub l2_lease_namespace: String,
    /// With --manifests: the directory, shared by every node's switch, that holds the Leases
    /// (with the Kubernetes API they are API objects).
    #[arg(long, value_name = "DIR")]
    pub l2_lease_dir: Option<PathBuf>,
    /// How long a Lease nobody renews keeps its holder (whole seconds): how long failover takes.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    pub l2_lease_duration: Duration,
    /// How long the holder keeps announcing while it cannot renew its Lease; less than --l2-lease-duration.
    #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = humantime::parse_duration)]
    pub l2_lease_renew_deadline: Duration,
    /// How often each node tries to take or renew the Leases; less than --l2-lease-renew-deadline.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = humantime::parse_duration)]
    pub l2_lease_retry_period: Duration,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ArgsError {
    #[error("--l2-lease-duration must be whole seconds, at least 1s (a Lease counts seconds), not {0:?}")]
    Duration(Duration),
    #[error("--l2-lease-retry-period ({retry:?}) must be shorter than --l2-lease-renew-deadline ({renew:?}), and that shorter than --l2-lease-duration ({duration:?})")]
    Order { retry: Duration, renew: Duration, duration: Duration },
    #[error("--l2-announce with --manifests needs --l2-lease-dir: a directory every node's switch shares, where they keep the Leases that choose who announces each address")]
    NoLeaseDir,
    #[error("--l2-lease-namespace {0:?} is not a namespace name (a DNS label)")]
    Namespace(String),
}

impl L2AnnounceArgs {
    /// The election timing, checked (client-go's rule: retry < renew deadline < duration).
    pub fn timing(&self) -> Result<(Timing, Duration), ArgsError> {
        let (d, renew, retry) = (self.l2_lease_duration, self.l2_lease_renew_deadline, self.l2_lease_retry_period);
        if d.subsec_nanos() != 0 || d < Duration::from_secs(1) {
            return Err(ArgsError::Duration(d));
        }
        if retry.is_zero() || retry >= renew || renew >= d {
            return Err(ArgsError::Order { retry, renew, duration: d });
        }
        if !crate::services::model::is_dns_label(&self.l2_lease_namespace) {
            return Err(ArgsError::Namespace(self.l2_lease_namespace.clone()));
        }
        Ok((Timing { lease_duration: d, renew_deadline: renew }, retry))
    }
}

/// The Lease of address `ip`.
pub fn lease_name(ip: Ipv4Addr) -> String {
    format!("podswitch-l2-{}", ip.to_string().replace('.', "-"))
}

/// One offered address in `show status`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct L2Address {
    pub address: Ipv4Addr,
    pub lease: String,
    /// The holder as this node last read or wrote the Lease.
    pub holder: Option<String>,
    /// This node answers ARP for it.
    pub announced_here: bool,
}

/// The announcer's state for `show status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct L2Status {
    /// Where the Leases are.
    pub leases: String,
    pub addresses: Vec<L2Address>,
    /// The last round's store errors, if any.
    pub error: Option<String>,
}

#[derive(Debug, Default)]
struct State {
    offered: BTreeSet<Ipv4Addr>,
    offer_changed: bool,
    held: BTreeSet<Ipv4Addr>,
    status: L2Status,
    stop: bool,
}

#[derive(Debug, Default)]
struct Inner {
    state: Mutex<State>,
    wake: Condvar,
    generation: AtomicU64,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Reads the announcer's status from another thread (`show status`).
#[derive(Debug, Clone)]
pub struct L2StatusHandle(Arc<Inner>);

impl L2StatusHandle {
    pub fn status(&self) -> L2Status {
        self.0.lock().status.clone()
    }
}

/// What the announcer's thread needs.
pub struct AnnounceConfig {
    /// The holder identity: the node's name.
    pub node: String,
    pub uplink: String,
    pub timing: Timing,
    pub retry_period: Duration,
}

/// The announcer: its thread and what it shares with the apply side (see the module contract).
#[derive(Debug)]
pub struct L2Announcer {
    inner: Arc<Inner>,
    thread: Option<JoinHandle<()>>,
}

impl L2Announcer {
    /// Starts the thread; fails when the uplink cannot send ARP.
    pub fn start(cfg: AnnounceConfig, store: Box<dyn LeaseStore>) -> std::io::Result<Self> {
        let garp = garp::Announcer::open(&cfg.uplink)?;
        let inner = Arc::new(Inner::default());
        inner.lock().status.leases = store.describe();
        let thread = {
            let inner = Arc::clone(&inner);
            std::thread::Builder::new().name("l2-announce".into()).spawn(move || run(&inner, &cfg, store, &garp))?
        };
        Ok(Self { inner, thread: Some(thread) })
    }

    /// The addresses this node may announce now; the thread runs a round at once if they changed.
    pub fn offer(&self, offered: BTreeSet<Ipv4Addr>) {
        let mut s = self.inner.lock();
        if s.offered != offered {
            s.offered = offered;
            s.offer_changed = true;
            self.inner.wake.notify_all();
        }
    }

    /// Changes whenever [`Self::held`] does.
    pub fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
    }

    /// The addresses this node announces (answers ARP for).
    pub fn held(&self) -> Vec<Ipv4Addr> {
        self.inner.lock().held.iter().copied().collect()
    }

    pub fn status_handle(&self) -> L2StatusHandle {
        L2StatusHandle(Arc::clone(&self.inner))
    }
}

impl Drop for L2Announcer {
    /// Stops the thread, which releases the Leases this node holds first.
    fn drop(&mut self) {
        self.inner.lock().stop = true;
        self.inner.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The announcer's thread: a round every retry period or when the offer changes.
fn run(inner: &Inner, cfg: &AnnounceConfig, mut store: Box<dyn LeaseStore>, garp: &garp::Announcer) {
    let mut elections: BTreeMap<Ipv4Addr, Election> = BTreeMap::new();
    let mut held: BTreeSet<Ipv4Addr> = BTreeSet::new();
    // Addresses taken last round: their gratuitous ARP goes out once more.
    let mut announce_again: BTreeSet<Ipv4Addr> = BTreeSet::new();
    let mut next_round = Instant::now();
    loop {
        let offered = {
            let mut s = inner.lock();
            while !s.stop && !s.offer_changed && Instant::now() < next_round {
                let wait = next_round.saturating_duration_since(Instant::now());
                s = inner.wake.wait_timeout(s, wait).unwrap_or_else(std::sync::PoisonError::into_inner).0;
            }
            if s.stop {
                drop(s);
                release_all(&mut elections, store.as_mut(), &cfg.node);
                set_held(inner, &mut held, BTreeSet::new());
                return;
            }
            s.offer_changed = false;
            s.offered.clone()
        };
        let mut errors = Vec::new();
        drop_expired(inner, &elections, &mut held, &cfg.timing);
        for &ip in &offered {
            let e = elections.entry(ip).or_insert_with(|| Election::new(&lease_name(ip)));
            if let Err(err) = e.attempt(store.as_mut(), &cfg.node, &cfg.timing, Instant::now(), SystemTime::now()) {
                errors.push(format!("Lease {} in {}: {err}", e.lease(), store.describe()));
            }
            // A slow store (each request may take a retry period) must not keep an address
            // answered past its renew deadline while the round goes on.
            drop_expired(inner, &elections, &mut held, &cfg.timing);
        }
        let gone: Vec<Ipv4Addr> = elections.keys().filter(|ip| !offered.contains(ip)).copied().collect();
        for ip in gone {
            let mut e = elections.remove(&ip).expect("listed above");
            if e.holder() == Some(cfg.node.as_str()) {
                if let Err(err) = e.release(store.as_mut(), &cfg.node, SystemTime::now()) {
                    errors.push(format!("releasing Lease {} in {}: {err}", e.lease(), store.describe()));
                }
            }
        }
        let now = Instant::now();
        let now_held: BTreeSet<Ipv4Addr> = elections.iter().filter(|(_, e)| e.holds(now, &cfg.timing)).map(|(ip, _)| *ip).collect();
        let taken: BTreeSet<Ipv4Addr> = now_held.difference(&held).copied().collect();
        for ip in taken.iter().chain(announce_again.intersection(&now_held)) {
            if let Err(e) = garp.announce(*ip) {
                errors.push(e.to_string());
            }
        }
        announce_again = taken;
        let error = (!errors.is_empty()).then(|| errors.join("; "));
        if error.is_some() && error != inner.lock().status.error {
            tracing::warn!(error = error.as_deref().unwrap_or_default(), "L2 announcements");
        }
        {
            let mut s = inner.lock();
            s.status.error = error;
            s.status.addresses = elections
                .iter()
                .map(|(ip, e)| L2Address {
                    address: *ip,
                    lease: e.lease().to_string(),
                    holder: e.holder().map(str::to_string),
                    announced_here: now_held.contains(ip),
                })
                .collect();
        }
        set_held(inner, &mut held, now_held);
        next_round = now + cfg.retry_period;
    }
}

/// Makes `next` the held set, logging and counting a change.
fn set_held(inner: &Inner, held: &mut BTreeSet<Ipv4Addr>, next: BTreeSet<Ipv4Addr>) {
    if *held == next {
        return;
    }
    for ip in next.difference(held) {
        tracing::info!(address = %ip, "announcing (ARP on the uplink): this node holds its Lease");
    }
    for ip in held.difference(&next) {
        tracing::info!(address = %ip, "no longer announcing");
    }
    *held = next;
    let mut s = inner.lock();
    s.held = held.clone();
    for a in &mut s.status.addresses {
        a.announced_here = held.contains(&a.address);
    }
    drop(s);
    inner.generation.fetch_add(1, Ordering::AcqRel);
}

/// Stops announcing, at once, the held addresses whose renew deadline has passed.
fn drop_expired(inner: &Inner, elections: &BTreeMap<Ipv4Addr, Election>, held: &mut BTreeSet<Ipv4Addr>, timing: &Timing) {
    let now = Instant::now();
    let still: BTreeSet<Ipv4Addr> = held.iter().copied().filter(|ip| elections.get(ip).is_some_and(|e| e.holds(now, timing))).collect();
    if still.len() != held.len() {
        set_held(inner, held, still);
    }
}

fn release_all(elections: &mut BTreeMap<Ipv4Addr, Election>, store: &mut dyn LeaseStore, me: &str) {
    for e in elections.values_mut().filter(|e| e.holder() == Some(me)) {
        match e.release(store, me, SystemTime::now()) {
            Ok(()) => tracing::info!(lease = e.lease(), "released"),
            Err(err) => tracing::warn!(lease = e.lease(), %err, "cannot release the Lease; it runs out by itself"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[arg(long)]
        uplink: Option<String>,
        #[command(flatten)]
        l2: L2AnnounceArgs,
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("t").chain(args.iter().copied()))
    }

    #[test]
    fn flags_default_to_a_five_second_lease_and_need_the_uplink() {
        let c = parse(&["--uplink", "eth0", "--l2-announce"]).unwrap();
        let (t, retry) = c.l2.timing().unwrap();
        assert_eq!((t.lease_duration, t.renew_deadline, retry), (Duration::from_secs(5), Duration::from_secs(3), Duration::from_secs(1)));
        assert_eq!(c.l2.l2_lease_namespace, "kube-system");
        assert!(parse(&["--l2-announce"]).is_err(), "--l2-announce without --uplink");
    }

    #[test]
    fn bad_timing_is_refused_with_the_rule() {
        let c = parse(&["--uplink", "e", "--l2-announce", "--l2-lease-duration", "2500ms"]).unwrap();
        assert_eq!(c.l2.timing().unwrap_err(), ArgsError::Duration(Duration::from_millis(2500)));
        let c = parse(&["--uplink", "e", "--l2-announce", "--l2-lease-duration", "3s"]).unwrap();
        assert!(matches!(c.l2.timing().unwrap_err(), ArgsError::Order { .. }));
        let c = parse(&["--uplink", "e", "--l2-lease-namespace", "Kube_System"]).unwrap();
        assert!(matches!(c.l2.timing().unwrap_err(), ArgsError::Namespace(_)));
    }

    #[test]
    fn lease_names_are_dns_names() {
        assert_eq!(lease_name(Ipv4Addr::new(172, 18, 0, 200)), "podswitch-l2-172-18-0-200");
    }
}
