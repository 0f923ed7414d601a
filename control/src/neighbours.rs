//! The uplink's next hops and their MACs, as the kernel resolves them.
//!
//! The uplink stays the kernel's interface: the kernel speaks ARP on it, the switch does not.
//! This module asks the kernel over rtnetlink which next hops to use and what their MACs are,
//! and keeps a copy with an expiry for the dataplane's tables.
//!
//! Contract:
//! - [`next_hop_for`] asks the kernel (RTM_GETROUTE, the lookup `ip route get` does) which next
//!   hop a destination takes: the route's gateway, or the destination itself when it is
//!   on-link. [`default_gateway`] reads the gateway of the main table's default route through
//!   an interface.
//! - [`Neighbours::start`] follows the kernel's IPv4 neighbour table of one interface on a
//!   thread of its own. For every needed next hop ([`Neighbours::set_needed`], and the default
//!   gateway with [`NeighbourConfig::follow_default_gateway`]) it makes the kernel resolve it
//!   and keep resolving it:
//!   - where the kernel has no entry, it creates a *managed* one (`NTF_EXT_MANAGED`, Linux
//!     5.16 and later; created with `NLM_F_EXCL`, so the tracker knows which entries are its
//!     own). The kernel resolves a managed entry at once and re-probes it by itself (every
//!     `net.ipv4.neigh.IF.interval_probe_time_ms`, 5 s by default) although no traffic of
//!     the kernel uses it: the switch's traffic never goes through the kernel, so an ordinary
//!     entry would go stale and stay so.
//!   - an entry someone else made (the node's own traffic, an operator, a CNI) is not taken
//!     over. When it is stale or failed the tracker marks it used (`NTF_USE`, with the entry's
//!     own flags, at most every [`POKE_EVERY`]), as a packet of the kernel's own would: the
//!     kernel revalidates it. Permanent and noarp entries are never touched.
//!   - `NTF_USE` alone was the other choice: it needs the same poke for every entry forever and
//!     leaves entries that cannot be told apart from the kernel's own, so none could be
//!     removed at the end.
//!
//!   Entries it created are deleted when no longer needed and when the tracker stops (drop),
//!   and only while they are still its own (still managed, not permanent): an operator who
//!   replaced one keeps it. No other entry is ever deleted.
//! - It reads the table (a dump) after every change notification (`RTNLGRP_NEIGH`, and
//!   `RTNLGRP_IPV4_ROUTE` for the default route), when the needs change, and at least every
//!   [`PASS_EVERY`], so a change reaches [`Neighbours::snapshot`] within about a second
//!   (usually at once). [`NeighbourReader::generation`] increases whenever the snapshot's
//!   resolved MACs or gateway change, so the apply side republishes only then.
//! - A needed next hop is *resolved* when the kernel has a MAC for it in a valid state:
//!   reachable, delay and probe (the kernel is confirming it, and says failed if that fails),
//!   permanent and noarp always, stale only if confirmed within the expiry time
//!   ([`DEFAULT_EXPIRY`] unless configured): a stale entry nobody confirmed for that long goes
//!   from the tables until it is confirmed again. Failed, incomplete, missing and expired
//!   entries are unresolved.
//!   The snapshot lists every needed next hop, resolved or not, with what needs it.
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourExtFlags, NeighbourFlags, NeighbourMessage, NeighbourState as Nud,
};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteType};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket};
use serde::Serialize;

use crate::rtnl::Rtnl;

/// How long an entry the kernel has not confirmed stays usable.
pub const DEFAULT_EXPIRY: Duration = Duration::from_secs(60);
/// The tracker reads the kernel's table at least this often.
pub const PASS_EVERY: Duration = Duration::from_secs(1);
/// A stale or failed entry of someone else is marked used at most this often.
pub const POKE_EVERY: Duration = Duration::from_secs(5);
/// The default route is read again at least this often (and after every route change).
const GATEWAY_EVERY: Duration = Duration::from_secs(30);
/// How long the tracker's thread waits for a notification before it looks at its flags.
const WAKE_EVERY: Duration = Duration::from_millis(200);
/// What the default gateway is needed by, in [`Neighbour::needed_by`].
pub const GATEWAY_NEED: &str = "gateway";

/// What went wrong talking to the kernel.
#[derive(Debug, thiserror::Error)]
pub enum NeighbourError {
    #[error("interface {0} does not exist in this network namespace")]
    NoInterface(String),
    #[error("opening a netlink socket")]
    Socket(#[source] io::Error),
    #[error(transparent)]
    Netlink(#[from] crate::rtnl::RtnlError),
    #[error("the kernel has no route to {0}")]
    NoRoute(Ipv4Addr),
    #[error("the kernel's route to {dst} is of type {kind}, not a unicast route")]
    NotUnicast { dst: Ipv4Addr, kind: String },
    #[error("starting the neighbour thread")]
    Thread(#[source] io::Error),
}

/// The kernel's state of a neighbour entry (`ip neigh`'s names), or `missing` when the kernel
/// has no entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NeighbourState {
    Reachable,
    Stale,
    Delay,
    Probe,
    Failed,
    Incomplete,
    Permanent,
    Noarp,
    /// An entry in no state yet (just created).
    None,
    /// The kernel has no entry for the address.
    Missing,
}

impl NeighbourState {
    fn from_kernel(s: Nud) -> Self {
        match s {
            Nud::Reachable => Self::Reachable,
            Nud::Stale => Self::Stale,
            Nud::Delay => Self::Delay,
            Nud::Probe => Self::Probe,
            Nud::Failed => Self::Failed,
            Nud::Incomplete => Self::Incomplete,
            Nud::Permanent => Self::Permanent,
            Nud::Noarp => Self::Noarp,
            _ => Self::None,
        }
    }

    /// The name `show neighbours` prints.
    pub fn name(self) -> &'static str {
        match self {
            Self::Reachable => "reachable",
            Self::Stale => "stale",
            Self::Delay => "delay",
            Self::Probe => "probe",
            Self::Failed => "failed",
            Self::Incomplete => "incomplete",
            Self::Permanent => "permanent",
            Self::Noarp => "noarp",
            Self::None => "none",
            Self::Missing => "missing",
        }
    }

    /// The kernel holds a MAC it will use.
    fn valid(self) -> bool {
        matches!(self, Self::Reachable | Self::Stale | Self::Delay | Self::Probe | Self::Permanent | Self::Noarp)
    }

    /// Reachable (confirmed within the kernel's reachable time), or being confirmed right now
    /// (delay, probe): the kernel goes on using the MAC and says failed if the probes go
    /// unanswered. Whatever the entry's confirmation time says: an entry the kernel learned
    /// passively (from the neighbour's own request) starts out "confirmed" twice the base
    /// reachable time ago (60 s by default) until its first probe is answered.
    fn confirming(self) -> bool {
        matches!(self, Self::Reachable | Self::Delay | Self::Probe)
    }

    /// Static: no confirmation expected, never touched.
    fn fixed(self) -> bool {
        matches!(self, Self::Permanent | Self::Noarp)
    }
}

/// A neighbour entry as the kernel reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KernelEntry {
    pub mac: Option<[u8; 6]>,
    pub state: NeighbourState,
    /// How long ago the kernel last confirmed the neighbour reachable.
    pub confirmed_ago: Option<Duration>,
    pub managed: bool,
    pub ext_learned: bool,
}

/// A needed next hop as the tables see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    /// The kernel's MAC for it (also when the entry is not usable).
    pub mac: Option<[u8; 6]>,
    pub state: NeighbourState,
    /// When the kernel last confirmed it reachable (as this process's clock reads it).
    pub updated: Option<Instant>,
    /// The MAC may be used: see the module contract.
    pub resolved: bool,
    /// What needs it: [`GATEWAY_NEED`], node names, ...
    pub needed_by: BTreeSet<String>,
    /// The kernel's entry is the switch's own (a managed entry it created).
    pub created_by_switch: bool,
}

/// The needed next hops of one interface at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NeighbourSnapshot {
    pub ifname: String,
    /// The gateway of the default route through the interface, when followed and present.
    pub gateway: Option<Ipv4Addr>,
    pub entries: BTreeMap<Ipv4Addr, Neighbour>,
    pub expiry: Duration,
}

impl NeighbourSnapshot {
    /// The MAC to send to `ip` with, when resolved.
    pub fn mac(&self, ip: Ipv4Addr) -> Option<[u8; 6]> {
        self.entries.get(&ip).filter(|n| n.resolved).and_then(|n| n.mac)
    }

    /// The default gateway's MAC, when there is a gateway and it is resolved.
    pub fn gateway_mac(&self) -> Option<[u8; 6]> {
        self.gateway.and_then(|g| self.mac(g))
    }

    /// What the tables use of this snapshot: the gateway and every resolved MAC.
    fn in_force(&self) -> (Option<Ipv4Addr>, Vec<(Ipv4Addr, [u8; 6])>) {
        (self.gateway, self.entries.keys().filter_map(|ip| self.mac(*ip).map(|m| (*ip, m))).collect())
    }
}

/// What the tracker works with.
#[derive(Debug, Clone)]
pub struct NeighbourConfig {
    pub ifname: String,
    pub expiry: Duration,
    /// Read the default route's gateway through the interface and keep it resolved.
    pub follow_default_gateway: bool,
}

impl NeighbourConfig {
    pub fn new(ifname: &str) -> Self {
        Self { ifname: ifname.into(), expiry: DEFAULT_EXPIRY, follow_default_gateway: false }
    }
}

/// What the tracker's thread and its readers share.
struct Inner {
    snapshot: ArcSwap<NeighbourSnapshot>,
    generation: AtomicU64,
    needs: Mutex<BTreeMap<Ipv4Addr, BTreeSet<String>>>,
    needs_version: AtomicU64,
    stop: AtomicBool,
}

/// A reader of a tracker's snapshots (for `show`; cheap to clone).
#[derive(Clone)]
pub struct NeighbourReader(Arc<Inner>);

impl NeighbourReader {
    pub fn snapshot(&self) -> Arc<NeighbourSnapshot> {
        self.0.snapshot.load_full()
    }

    /// Increases whenever what the tables use of the snapshot changes.
    pub fn generation(&self) -> u64 {
        self.0.generation.load(Ordering::Acquire)
    }
}

/// The tracker (see the module contract). Dropping it stops its thread, which deletes the
/// entries it created.
pub struct Neighbours {
    reader: NeighbourReader,
    thread: Option<JoinHandle<()>>,
}

impl Neighbours {
    /// Starts following `cfg.ifname`; the first snapshot is taken before this returns.
    pub fn start(cfg: NeighbourConfig) -> Result<Self, NeighbourError> {
        let ifindex = nix::net::if_::if_nametoindex(cfg.ifname.as_str()).map_err(|_| NeighbourError::NoInterface(cfg.ifname.clone()))?;
        let notify = Notifications::open()?;
        let rtnl = Rtnl::open()?;
        let inner = Arc::new(Inner {
            snapshot: ArcSwap::from_pointee(NeighbourSnapshot { ifname: cfg.ifname.clone(), expiry: cfg.expiry, ..Default::default() }),
            generation: AtomicU64::new(0),
            needs: Mutex::new(BTreeMap::new()),
            needs_version: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let mut tracker = Tracker::new(cfg, ifindex, rtnl, Arc::clone(&inner));
        tracker.pass(true);
        let thread = std::thread::Builder::new()
            .name("neighbours".into())
            .spawn(move || tracker.run(notify))
            .map_err(NeighbourError::Thread)?;
        Ok(Self { reader: NeighbourReader(inner), thread: Some(thread) })
    }

    /// The next hops needed besides the default gateway, each with what needs it. The tracker
    /// takes them in at once (within [`WAKE_EVERY`]).
    pub fn set_needed(&self, needs: BTreeMap<Ipv4Addr, BTreeSet<String>>) {
        let inner = &self.reader.0;
        let mut current = inner.needs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if *current != needs {
            *current = needs;
            inner.needs_version.fetch_add(1, Ordering::Release);
        }
    }

    pub fn snapshot(&self) -> Arc<NeighbourSnapshot> {
        self.reader.snapshot()
    }

    pub fn reader(&self) -> NeighbourReader {
        self.reader.clone()
    }
}

impl Drop for Neighbours {
    fn drop(&mut self) {
        self.reader.0.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The tracker's thread state.
struct Tracker {
    cfg: NeighbourConfig,
    ifindex: u32,
    rtnl: Rtnl,
    inner: Arc<Inner>,
    /// Entries this tracker created and still owns.
    created: BTreeSet<Ipv4Addr>,
    poked: BTreeMap<Ipv4Addr, Instant>,
    gateway: Option<Ipv4Addr>,
    gateway_read: Option<Instant>,
    /// Addresses whose last failure to create or poke was logged (so it is logged once).
    warned: BTreeSet<Ipv4Addr>,
    clock_ticks: u64,
}

impl Tracker {
    fn new(cfg: NeighbourConfig, ifindex: u32, rtnl: Rtnl, inner: Arc<Inner>) -> Self {
        let clock_ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().filter(|t| *t > 0).unwrap_or(100) as u64;
        Self {
            cfg,
            ifindex,
            rtnl,
            inner,
            created: BTreeSet::new(),
            poked: BTreeMap::new(),
            gateway: None,
            gateway_read: None,
            warned: BTreeSet::new(),
            clock_ticks,
        }
    }

    fn run(mut self, mut notify: Notifications) {
        let mut last_pass = Instant::now();
        let mut needs_seen = u64::MAX;
        while !self.inner.stop.load(Ordering::Acquire) {
            let event = notify.wait();
            let needs_version = self.inner.needs_version.load(Ordering::Acquire);
            if event.route {
                self.gateway_read = None;
            }
            if event.any || needs_version != needs_seen || last_pass.elapsed() >= PASS_EVERY {
                needs_seen = needs_version;
                last_pass = Instant::now();
                self.pass(false);
            }
        }
        self.remove_own();
    }

    /// Reads the table, acts on it, publishes the snapshot.
    fn pass(&mut self, first: bool) {
        if self.cfg.follow_default_gateway && self.gateway_read.is_none_or(|t| t.elapsed() >= GATEWAY_EVERY) {
            self.gateway_read = Some(Instant::now());
            match default_gateway_on(&mut self.rtnl, self.ifindex) {
                Ok(g) => {
                    if g != self.gateway {
                        match g {
                            Some(g) => tracing::info!(interface = %self.cfg.ifname, "default gateway {g}"),
                            None => tracing::warn!(interface = %self.cfg.ifname, "no default route through the interface"),
                        }
                    }
                    self.gateway = g;
                }
                Err(e) => tracing::warn!(interface = %self.cfg.ifname, "reading the default route: {e}"),
            }
        }
        let mut needs = self.inner.needs.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        if let Some(g) = self.gateway {
            needs.entry(g).or_default().insert(GATEWAY_NEED.to_string());
        }
        let now = Instant::now();
        let mut kernel = match self.dump() {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(interface = %self.cfg.ifname, "reading the neighbour table: {e}");
                return;
            }
        };
        let needed: BTreeSet<Ipv4Addr> = needs.keys().copied().collect();
        let plan = plan(&kernel, &needed, &mut self.created, &self.poked, now);
        let acted = !plan.is_empty();
        for ip in plan.create {
            match self.create(ip) {
                Ok(true) => {
                    self.created.insert(ip);
                    self.warned.remove(&ip);
                }
                Ok(false) => {}
                Err(e) => self.warn_once(ip, &e),
            }
        }
        for (ip, entry) in plan.poke {
            self.poked.insert(ip, now);
            if let Err(e) = self.poke(ip, &entry) {
                self.warn_once(ip, &e);
            }
        }
        for ip in plan.delete {
            self.created.remove(&ip);
            if let Err(e) = self.delete(ip) {
                tracing::warn!(interface = %self.cfg.ifname, "removing the neighbour entry for {ip}: {e}");
            }
        }
        self.poked.retain(|ip, _| needed.contains(ip));
        if acted {
            // The snapshot shows the entries just made (notifications bring what follows).
            if let Ok(k) = self.dump() {
                kernel = k;
            }
        }
        let entries = snapshot_entries(&kernel, &needs, &self.created, self.cfg.expiry, Instant::now());
        let snap = NeighbourSnapshot { ifname: self.cfg.ifname.clone(), gateway: self.gateway, entries, expiry: self.cfg.expiry };
        let old = self.inner.snapshot.load();
        if first || old.in_force() != snap.in_force() {
            log_changes(&old, &snap);
            self.inner.snapshot.store(Arc::new(snap));
            self.inner.generation.fetch_add(1, Ordering::AcqRel);
        } else if **old != snap {
            self.inner.snapshot.store(Arc::new(snap));
        }
    }

    fn warn_once(&mut self, ip: Ipv4Addr, e: &NeighbourError) {
        if self.warned.insert(ip) {
            tracing::warn!(interface = %self.cfg.ifname, "making the kernel resolve {ip}: {e} ({})", error_chain(e));
        }
    }

    fn dump(&mut self) -> Result<BTreeMap<Ipv4Addr, KernelEntry>, NeighbourError> {
        let mut req = NeighbourMessage::default();
        req.header.family = AddressFamily::Inet;
        let answers = self.rtnl.request(RouteNetlinkMessage::GetNeighbour(req), NLM_F_DUMP, "a neighbour dump")?;
        let mut out = BTreeMap::new();
        for a in answers {
            if let RouteNetlinkMessage::NewNeighbour(m) = a {
                if let Some((ip, e)) = parse_entry(&m, self.ifindex, self.clock_ticks) {
                    out.insert(ip, e);
                }
            }
        }
        Ok(out)
    }

    fn message(&self, ip: Ipv4Addr) -> NeighbourMessage {
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.ifindex = self.ifindex;
        m.attributes.push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
        m
    }

    /// Creates a managed entry; false when one exists already (someone else's).
    fn create(&mut self, ip: Ipv4Addr) -> Result<bool, NeighbourError> {
        let mut m = self.message(ip);
        m.header.state = Nud::None;
        m.attributes.push(NeighbourAttribute::ExtFlags(NeighbourExtFlags::Managed));
        match self.rtnl.request(RouteNetlinkMessage::NewNeighbour(m), NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, &format!("a managed neighbour entry for {ip}")) {
            Ok(_) => {
                tracing::info!(interface = %self.cfg.ifname, "resolving {ip} (managed neighbour entry created)");
                Ok(true)
            }
            Err(e) if e.errno() == Some(libc::EEXIST) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Marks someone else's entry used, keeping its flags.
    fn poke(&mut self, ip: Ipv4Addr, entry: &KernelEntry) -> Result<(), NeighbourError> {
        let mut m = self.message(ip);
        m.header.state = Nud::None;
        m.header.flags = NeighbourFlags::Use;
        if entry.ext_learned {
            m.header.flags |= NeighbourFlags::ExtLearned;
        }
        if entry.managed {
            m.attributes.push(NeighbourAttribute::ExtFlags(NeighbourExtFlags::Managed));
        }
        self.rtnl.request(RouteNetlinkMessage::NewNeighbour(m), NLM_F_ACK, &format!("marking the neighbour entry for {ip} used"))?;
        Ok(())
    }

    fn delete(&mut self, ip: Ipv4Addr) -> Result<(), NeighbourError> {
        let m = self.message(ip);
        match self.rtnl.request(RouteNetlinkMessage::DelNeighbour(m), NLM_F_ACK, &format!("deleting the neighbour entry for {ip}")) {
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(()),
            other => other.map(|_| ()).map_err(NeighbourError::from),
        }
    }

    /// At the end: deletes the entries still the tracker's own.
    fn remove_own(&mut self) {
        if self.created.is_empty() {
            return;
        }
        let kernel = self.dump().unwrap_or_default();
        let own: Vec<Ipv4Addr> = std::mem::take(&mut self.created).into_iter().filter(|ip| kernel.get(ip).is_some_and(still_own)).collect();
        for ip in own {
            match self.delete(ip) {
                Ok(()) => tracing::info!(interface = %self.cfg.ifname, "managed neighbour entry for {ip} removed"),
                Err(e) => tracing::warn!(interface = %self.cfg.ifname, "removing the neighbour entry for {ip}: {e}"),
            }
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = Vec::new();
    let mut cur = e.source();
    while let Some(s) = cur {
        parts.push(s.to_string());
        cur = s.source();
    }
    parts.join(": ")
}

/// Logs each needed next hop that became resolved or unresolved, once per change.
fn log_changes(old: &NeighbourSnapshot, new: &NeighbourSnapshot) {
    for (ip, n) in &new.entries {
        let before = old.mac(*ip);
        let now = new.mac(*ip);
        if before == now {
            continue;
        }
        let needs: Vec<&str> = n.needed_by.iter().map(String::as_str).collect();
        match now {
            Some(mac) => tracing::info!(interface = %new.ifname, needed_by = ?needs, "neighbour {ip} resolved: {}", crate::naming::mac_string(mac)),
            None => tracing::warn!(interface = %new.ifname, needed_by = ?needs, state = n.state.name(), "neighbour {ip} unresolved"),
        }
    }
}

/// An entry still the tracker's own: managed, not made static by someone since.
fn still_own(e: &KernelEntry) -> bool {
    e.managed && !e.state.fixed()
}

/// What one pass does to the kernel's table.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    pub create: Vec<Ipv4Addr>,
    pub poke: Vec<(Ipv4Addr, KernelEntry)>,
    pub delete: Vec<Ipv4Addr>,
}

impl Plan {
    fn is_empty(&self) -> bool {
        self.create.is_empty() && self.poke.is_empty() && self.delete.is_empty()
    }
}

/// Decides a pass (see the module contract); forgets in `created` the entries that are gone or
/// no longer the tracker's own.
pub(crate) fn plan(
    kernel: &BTreeMap<Ipv4Addr, KernelEntry>,
    needed: &BTreeSet<Ipv4Addr>,
    created: &mut BTreeSet<Ipv4Addr>,
    poked: &BTreeMap<Ipv4Addr, Instant>,
    now: Instant,
) -> Plan {
    created.retain(|ip| kernel.get(ip).is_some_and(still_own));
    let mut p = Plan::default();
    for ip in needed {
        match kernel.get(ip) {
            None => p.create.push(*ip),
            Some(e) if created.contains(ip) || e.managed || e.state.fixed() => {}
            Some(e) => {
                let due = poked.get(ip).is_none_or(|t| now.duration_since(*t) >= POKE_EVERY);
                if due && matches!(e.state, NeighbourState::Stale | NeighbourState::Failed | NeighbourState::None) {
                    p.poke.push((*ip, e.clone()));
                }
            }
        }
    }
    p.delete = created.iter().filter(|ip| !needed.contains(ip)).copied().collect();
    p
}

/// The snapshot's entries: every needed next hop with the kernel's view of it.
pub(crate) fn snapshot_entries(
    kernel: &BTreeMap<Ipv4Addr, KernelEntry>,
    needs: &BTreeMap<Ipv4Addr, BTreeSet<String>>,
    created: &BTreeSet<Ipv4Addr>,
    expiry: Duration,
    now: Instant,
) -> BTreeMap<Ipv4Addr, Neighbour> {
    needs
        .iter()
        .map(|(ip, by)| {
            let n = match kernel.get(ip) {
                None => Neighbour {
                    mac: None,
                    state: NeighbourState::Missing,
                    updated: None,
                    resolved: false,
                    needed_by: by.clone(),
                    created_by_switch: false,
                },
                Some(e) => {
                    let fresh = e.state.fixed() || e.state.confirming() || e.confirmed_ago.is_some_and(|a| a <= expiry);
                    Neighbour {
                        mac: e.mac,
                        state: e.state,
                        updated: e.confirmed_ago.and_then(|a| now.checked_sub(a)),
                        resolved: e.state.valid() && e.mac.is_some() && fresh,
                        needed_by: by.clone(),
                        created_by_switch: created.contains(ip),
                    }
                }
            };
            (*ip, n)
        })
        .collect()
}

/// An IPv4 entry of interface `ifindex` from a neighbour message.
pub(crate) fn parse_entry(m: &NeighbourMessage, ifindex: u32, clock_ticks: u64) -> Option<(Ipv4Addr, KernelEntry)> {
    if m.header.family != AddressFamily::Inet || m.header.ifindex != ifindex {
        return None;
    }
    let mut ip = None;
    let mut e = KernelEntry {
        mac: None,
        state: NeighbourState::from_kernel(m.header.state),
        confirmed_ago: None,
        managed: false,
        ext_learned: m.header.flags.contains(NeighbourFlags::ExtLearned),
    };
    for a in &m.attributes {
        match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(v)) => ip = Some(*v),
            NeighbourAttribute::LinkLayerAddress(b) => e.mac = <[u8; 6]>::try_from(b.as_slice()).ok(),
            NeighbourAttribute::CacheInfo(c) => {
                e.confirmed_ago = Some(Duration::from_millis(u64::from(c.confirmed) * 1000 / clock_ticks.max(1)));
            }
            NeighbourAttribute::ExtFlags(f) => e.managed = f.contains(NeighbourExtFlags::Managed),
            _ => {}
        }
    }
    Some((ip?, e))
}

/// The next hop the kernel uses for a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelNextHop {
    /// The gateway, or the destination itself when it is on-link.
    pub addr: Ipv4Addr,
    /// The interface the route leaves by.
    pub ifindex: u32,
    /// Whether `addr` is a gateway (false: on-link).
    pub via_gateway: bool,
}

/// Asks the kernel which next hop `dst` takes (see the module contract).
pub fn next_hop_for(dst: Ipv4Addr) -> Result<KernelNextHop, NeighbourError> {
    let mut rtnl = Rtnl::open()?;
    let mut req = RouteMessage::default();
    req.header.address_family = AddressFamily::Inet;
    req.header.destination_prefix_length = 32;
    req.attributes.push(RouteAttribute::Destination(RouteAddress::Inet(dst)));
    let answers = match rtnl.request(RouteNetlinkMessage::GetRoute(req), NLM_F_ACK, &format!("a route lookup for {dst}")) {
        Err(e) if matches!(e.errno(), Some(libc::ENETUNREACH | libc::EHOSTUNREACH)) =>
        {
            return Err(NeighbourError::NoRoute(dst));
        }
        other => other?,
    };
    let route = answers
        .into_iter()
        .find_map(|a| if let RouteNetlinkMessage::NewRoute(r) = a { Some(r) } else { None })
        .ok_or(NeighbourError::NoRoute(dst))?;
    next_hop_of(dst, &route)
}

pub(crate) fn next_hop_of(dst: Ipv4Addr, route: &RouteMessage) -> Result<KernelNextHop, NeighbourError> {
    if route.header.kind != RouteType::Unicast {
        return Err(NeighbourError::NotUnicast { dst, kind: format!("{:?}", route.header.kind).to_lowercase() });
    }
    let mut hop = KernelNextHop { addr: dst, ifindex: 0, via_gateway: false };
    for a in &route.attributes {
        match a {
            RouteAttribute::Gateway(RouteAddress::Inet(g)) => {
                hop.addr = *g;
                hop.via_gateway = true;
            }
            RouteAttribute::Oif(i) => hop.ifindex = *i,
            _ => {}
        }
    }
    Ok(hop)
}

/// The gateway of the main table's default route through interface `ifname`, if any.
pub fn default_gateway(ifname: &str) -> Result<Option<Ipv4Addr>, NeighbourError> {
    let ifindex = nix::net::if_::if_nametoindex(ifname).map_err(|_| NeighbourError::NoInterface(ifname.into()))?;
    default_gateway_on(&mut Rtnl::open()?, ifindex)
}

fn default_gateway_on(rtnl: &mut Rtnl, ifindex: u32) -> Result<Option<Ipv4Addr>, NeighbourError> {
    let mut req = RouteMessage::default();
    req.header.address_family = AddressFamily::Inet;
    let answers = rtnl.request(RouteNetlinkMessage::GetRoute(req), NLM_F_DUMP, "a route dump")?;
    Ok(answers.iter().find_map(|a| match a {
        RouteNetlinkMessage::NewRoute(r) => default_gateway_of(r, ifindex),
        _ => None,
    }))
}

/// The gateway through `ifindex` of `r` when it is a default route of the main table.
pub(crate) fn default_gateway_of(r: &RouteMessage, ifindex: u32) -> Option<Ipv4Addr> {
    let table = r
        .attributes
        .iter()
        .find_map(|a| if let RouteAttribute::Table(t) = a { Some(*t) } else { None })
        .unwrap_or(u32::from(r.header.table));
    if r.header.address_family != AddressFamily::Inet
        || r.header.destination_prefix_length != 0
        || r.header.kind != RouteType::Unicast
        || table != u32::from(RouteHeader::RT_TABLE_MAIN)
    {
        return None;
    }
    let gateway = |attrs: &[RouteAttribute]| attrs.iter().find_map(|a| if let RouteAttribute::Gateway(RouteAddress::Inet(g)) = a { Some(*g) } else { None });
    let oif = r.attributes.iter().find_map(|a| if let RouteAttribute::Oif(i) = a { Some(*i) } else { None });
    if oif == Some(ifindex) {
        return gateway(&r.attributes);
    }
    r.attributes.iter().find_map(|a| match a {
        RouteAttribute::MultiPath(hops) => hops.iter().filter(|h| h.interface_index == ifindex).find_map(|h| gateway(&h.attributes)),
        _ => None,
    })
}

fn set_receive_timeout(sock: &Socket, t: Duration) -> Result<(), NeighbourError> {
    crate::rtnl::set_receive_timeout(sock, t).map_err(NeighbourError::Socket)
}

/// What a wait for notifications saw.
#[derive(Debug, Default, Clone, Copy)]
struct Event {
    any: bool,
    route: bool,
}

/// A netlink socket subscribed to neighbour and IPv4 route changes.
struct Notifications {
    sock: Socket,
    buf: Vec<u8>,
}

impl Notifications {
    fn open() -> Result<Self, NeighbourError> {
        let mut sock = Socket::new(NETLINK_ROUTE).map_err(NeighbourError::Socket)?;
        sock.bind_auto().map_err(NeighbourError::Socket)?;
        for group in [libc::RTNLGRP_NEIGH, libc::RTNLGRP_IPV4_ROUTE] {
            sock.add_membership(group).map_err(NeighbourError::Socket)?;
        }
        set_receive_timeout(&sock, WAKE_EVERY)?;
        Ok(Self { sock, buf: Vec::with_capacity(64 * 1024) })
    }

    /// Waits up to [`WAKE_EVERY`]; drains what has come.
    fn wait(&mut self) -> Event {
        let mut ev = Event::default();
        let mut flags = 0;
        loop {
            self.buf.clear();
            match self.sock.recv(&mut self.buf, flags) {
                Ok(_) => {
                    ev.any = true;
                    ev.route |= has_route_message(&self.buf);
                }
                // Notifications were lost: read everything again.
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    ev.any = true;
                    ev.route = true;
                }
                Err(_) => return ev,
            }
            flags = libc::MSG_DONTWAIT;
        }
    }
}

/// Whether a buffer of netlink messages holds a route message.
fn has_route_message(buf: &[u8]) -> bool {
    let mut off = 0;
    while off + 16 <= buf.len() {
        let len = u32::from_ne_bytes(buf[off..off + 4].try_into().expect("4 bytes")) as usize;
        let kind = u16::from_ne_bytes(buf[off + 4..off + 6].try_into().expect("2 bytes"));
        if kind == libc::RTM_NEWROUTE || kind == libc::RTM_DELROUTE {
            return true;
        }
        if len < 16 {
            return false;
        }
        off += (len + 3) & !3;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::neighbour::NeighbourCacheInfo;

    fn entry(state: NeighbourState, mac: Option<[u8; 6]>, confirmed_s: u64) -> KernelEntry {
        KernelEntry { mac, state, confirmed_ago: Some(Duration::from_secs(confirmed_s)), managed: false, ext_learned: false }
    }

    const MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn a_kernel_message_becomes_an_entry_of_its_interface_only() {
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.ifindex = 7;
        m.header.state = Nud::Stale;
        m.attributes.push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip("192.0.2.1"))));
        m.attributes.push(NeighbourAttribute::LinkLayerAddress(MAC.to_vec()));
        // The kernel's cache info counts in clock ticks (USER_HZ).
        let mut bytes = [0u8; 16];
        bytes[..4].copy_from_slice(&250u32.to_ne_bytes());
        m.attributes.push(NeighbourAttribute::CacheInfo(NeighbourCacheInfo::parse(&bytes).unwrap()));
        m.attributes.push(NeighbourAttribute::ExtFlags(NeighbourExtFlags::Managed));
        let (a, e) = parse_entry(&m, 7, 100).unwrap();
        assert_eq!(a, ip("192.0.2.1"));
        assert_eq!(e, KernelEntry { mac: Some(MAC), state: NeighbourState::Stale, confirmed_ago: Some(Duration::from_millis(2500)), managed: true, ext_learned: false });
        assert!(parse_entry(&m, 8, 100).is_none(), "another interface's entry");
        // What the wire carries parses back the same.
        let mut buf = vec![0u8; netlink_packet_core::Emitable::buffer_len(&m)];
        netlink_packet_core::Emitable::emit(&m, &mut buf);
        let back = <NeighbourMessage as netlink_packet_core::Parseable<[u8]>>::parse(&buf[..]).unwrap();
        assert_eq!(parse_entry(&back, 7, 100).unwrap().1, e);
    }

    #[test]
    fn only_valid_entries_confirmed_within_the_expiry_are_resolved() {
        let now = Instant::now();
        let needs: BTreeMap<Ipv4Addr, BTreeSet<String>> = ["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4", "192.0.2.5", "192.0.2.6", "192.0.2.7", "192.0.2.8", "192.0.2.9"]
            .iter()
            .map(|a| (ip(a), BTreeSet::from([GATEWAY_NEED.to_string()])))
            .collect();
        let kernel = BTreeMap::from([
            (ip("192.0.2.1"), entry(NeighbourState::Reachable, Some(MAC), 5)),
            (ip("192.0.2.2"), entry(NeighbourState::Stale, Some(MAC), 59)),
            (ip("192.0.2.3"), entry(NeighbourState::Stale, Some(MAC), 61)),
            (ip("192.0.2.4"), entry(NeighbourState::Failed, Some(MAC), 5)),
            (ip("192.0.2.5"), entry(NeighbourState::Incomplete, None, 5)),
            (ip("192.0.2.6"), entry(NeighbourState::Permanent, Some(MAC), 3600)),
            // Being confirmed: usable whatever the confirmation time (a passively learned
            // entry reads 60 s until its first probe is answered).
            (ip("192.0.2.8"), entry(NeighbourState::Delay, Some(MAC), 61)),
            (ip("192.0.2.9"), entry(NeighbourState::Probe, Some(MAC), 61)),
        ]);
        let s = NeighbourSnapshot {
            entries: snapshot_entries(&kernel, &needs, &BTreeSet::from([ip("192.0.2.1")]), Duration::from_secs(60), now),
            gateway: Some(ip("192.0.2.3")),
            ..Default::default()
        };
        let resolved: Vec<Ipv4Addr> = s.entries.iter().filter(|(_, n)| n.resolved).map(|(a, _)| *a).collect();
        assert_eq!(resolved, [ip("192.0.2.1"), ip("192.0.2.2"), ip("192.0.2.6"), ip("192.0.2.8"), ip("192.0.2.9")]);
        assert_eq!(s.mac(ip("192.0.2.1")), Some(MAC));
        assert_eq!(s.mac(ip("192.0.2.4")), None, "failed: the stale MAC is not used");
        assert_eq!(s.entries[&ip("192.0.2.7")].state, NeighbourState::Missing);
        assert_eq!(s.gateway_mac(), None, "the gateway's entry expired");
        assert!(s.entries[&ip("192.0.2.1")].created_by_switch && !s.entries[&ip("192.0.2.2")].created_by_switch);
        assert_eq!(s.entries[&ip("192.0.2.1")].updated, now.checked_sub(Duration::from_secs(5)));
    }

    #[test]
    fn a_pass_creates_the_missing_pokes_others_stale_ones_and_deletes_only_its_own_unneeded() {
        let now = Instant::now();
        let managed = |state| KernelEntry { managed: true, ..entry(state, Some(MAC), 1) };
        let kernel = BTreeMap::from([
            // Someone else's, stale: poked. Failed: poked. Reachable, permanent: left alone.
            (ip("10.0.0.2"), entry(NeighbourState::Stale, Some(MAC), 40)),
            (ip("10.0.0.3"), entry(NeighbourState::Failed, None, 40)),
            (ip("10.0.0.4"), entry(NeighbourState::Reachable, Some(MAC), 1)),
            (ip("10.0.0.5"), entry(NeighbourState::Permanent, Some(MAC), 400)),
            // Ours and needed; ours and no longer needed; ours once, now made permanent by someone.
            (ip("10.0.0.6"), managed(NeighbourState::Stale)),
            (ip("10.0.0.7"), managed(NeighbourState::Reachable)),
            (ip("10.0.0.8"), KernelEntry { managed: false, ..entry(NeighbourState::Permanent, Some(MAC), 1) }),
            // Someone else's managed entry, not needed: never deleted.
            (ip("10.0.0.9"), managed(NeighbourState::Reachable)),
        ]);
        let needed: BTreeSet<Ipv4Addr> = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"].iter().map(|a| ip(a)).collect();
        let mut created: BTreeSet<Ipv4Addr> = ["10.0.0.6", "10.0.0.7", "10.0.0.8", "10.0.0.10"].iter().map(|a| ip(a)).collect();
        let p = plan(&kernel, &needed, &mut created, &BTreeMap::new(), now);
        assert_eq!(p.create, [ip("10.0.0.1")]);
        assert_eq!(p.poke.iter().map(|(a, _)| *a).collect::<Vec<_>>(), [ip("10.0.0.2"), ip("10.0.0.3")]);
        assert_eq!(p.delete, [ip("10.0.0.7")]);
        assert_eq!(created, BTreeSet::from([ip("10.0.0.6"), ip("10.0.0.7")]), "the replaced and the vanished ones are no longer ours");
        // A poke is not repeated before POKE_EVERY.
        let poked = BTreeMap::from([(ip("10.0.0.2"), now)]);
        let p = plan(&kernel, &needed, &mut created, &poked, now + Duration::from_secs(1));
        assert_eq!(p.poke.iter().map(|(a, _)| *a).collect::<Vec<_>>(), [ip("10.0.0.3")]);
        let p = plan(&kernel, &needed, &mut created, &poked, now + POKE_EVERY);
        assert_eq!(p.poke.len(), 2);
    }

    #[test]
    fn route_answers_give_the_gateway_or_the_destination_itself() {
        let mut r = RouteMessage::default();
        r.header.address_family = AddressFamily::Inet;
        r.header.kind = RouteType::Unicast;
        r.header.table = RouteHeader::RT_TABLE_MAIN;
        r.attributes.push(RouteAttribute::Oif(3));
        let on_link = next_hop_of(ip("192.0.2.9"), &r).unwrap();
        assert_eq!(on_link, KernelNextHop { addr: ip("192.0.2.9"), ifindex: 3, via_gateway: false });
        assert_eq!(default_gateway_of(&r, 3), None, "a default route without a gateway has none");
        r.attributes.push(RouteAttribute::Gateway(RouteAddress::Inet(ip("192.0.2.1"))));
        assert_eq!(next_hop_of(ip("198.51.100.1"), &r).unwrap(), KernelNextHop { addr: ip("192.0.2.1"), ifindex: 3, via_gateway: true });
        assert_eq!(default_gateway_of(&r, 3), Some(ip("192.0.2.1")));
        assert_eq!(default_gateway_of(&r, 4), None, "through another interface");
        r.header.destination_prefix_length = 24;
        assert_eq!(default_gateway_of(&r, 3), None, "not a default route");
        r.header.kind = RouteType::Local;
        assert!(matches!(next_hop_of(ip("192.0.2.2"), &r), Err(NeighbourError::NotUnicast { .. })));
    }

    #[test]
    fn route_notifications_are_told_from_neighbour_ones() {
        let msg = |kind: u16| {
            let mut b = vec![0u8; 20];
            b[..4].copy_from_slice(&20u32.to_ne_bytes());
            b[4..6].copy_from_slice(&kind.to_ne_bytes());
            b
        };
        assert!(!has_route_message(&msg(libc::RTM_NEWNEIGH)));
        let mut both = msg(libc::RTM_NEWNEIGH);
        both.extend(msg(libc::RTM_DELROUTE));
        assert!(has_route_message(&both));
    }
}
