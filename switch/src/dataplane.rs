//! The dataplane as the control side sees it: start pinned workers, attach and detach ports
//! while traffic runs, publish tables, read counters.
//!
//! Contract:
//! - One worker per core in [`DataplaneConfig::cores`], pinned; every rx queue of every port
//!   is served: worker `w` owns queues `w`, `w + W`, `w + 2W`... of a port with W workers
//!   ([`queue_plan`]), so each (port, queue) pair belongs to exactly one worker, and every port
//!   needs at least as many queues as there are workers (each transmits on its first).
//! - The uplink ([`Dataplane::attach_uplink`]) stays the node's: its program redirects only
//!   what the filter written with [`Dataplane::set_uplink_filter`] says the switch owns.
//! - The first port attached is bound first on every worker's UMEM; it must stay attached
//!   while the switch runs (the control side attaches the node's host port first), because a
//!   UMEM's later sockets share it through that first socket.
//! - A UMEM's copy or zero-copy mode is decided by its first socket (a kernel rule); each
//!   port reports the mode it actually got, and [`CopyPolicy::RequireZeroCopy`] refuses any
//!   port that did not get zero-copy.
//! - [`Dataplane::publish`] swaps the whole table snapshot; workers pick it up within a round.
//! - Attach and detach wait for the worker to apply them (bounded), so a detached port's
//!   interface can be deleted right after.
//! - Per-worker counters ([`Dataplane::worker_reports`]) are the sums of the queues each worker
//!   owns, detached ports' final counts included, so they never go down.
//! - Every method takes `&self`: attach and detach serialize among themselves, and readers
//!   (reports, counters, the verdict log) only take the port map's lock for the moment they
//!   read it, never while a port is being attached (XDP attach, socket binds, waiting for the
//!   workers) or detached. So `show` and `/metrics` answer during port changes.
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use arc_swap::ArcSwap;
use crossbeam::channel::{bounded, Sender};
use serde::Serialize;
use xsk_rs::Umem;

use crate::afxdp::frames::UmemSpec;
use crate::afxdp::rings::{PortRings, WorkerUmem};
use crate::afxdp::own_umem::{bind_own, OwnUmemSpec};
use crate::afxdp::socket::{bind, CopyPolicy, RingSizes};
use crate::afxdp::stats::{self, XskStats};
use crate::afxdp::filter::{FilterError, RuleCounters, UplinkFilter};
use crate::afxdp::xdp::{XdpAttachment, XdpMode, XdpProgram, XdpRole};
use crate::afxdp::{iface, AfXdpError};
use crate::conntrack::state_file::{self, Adoption};
use crate::conntrack::{reaper::Reaper, ConnTable, KeyHasher, Timeouts};
use crate::counters::{PortQueueCounters, PortTotals};
use crate::drop_reason::DropReason;
use crate::port::PortDevice;
use crate::tables::{PortId, Tables};
use crate::worker::doorbell::Doorbell;
use crate::worker::{Worker, WorkerCmd, WorkerShared};

#[derive(Debug, Clone)]
pub struct DataplaneConfig {
    /// Cores to run one worker each on.
    pub cores: Vec<usize>,
    /// Never sleep when idle.
    pub busy_poll: bool,
    pub umem: UmemSpec,
    /// TX ring entries per socket.
    pub ring_size: u32,
    /// RX ring entries per socket (the UMEM's fill rings are as deep: `umem.fill_ring`).
    pub rx_ring: u32,
    pub copy_policy: CopyPolicy,
    /// Force an XDP mode instead of native-then-generic.
    pub xdp_mode: Option<XdpMode>,
    /// Pod ports (every port but the uplink) bind on a UMEM of their own of these sizes
    /// ([`crate::afxdp::own_umem`]); None: on their worker's UMEM.
    pub pod_umem: Option<OwnUmemSpec>,
    /// Connections the shared connection table holds (fixed at start).
    pub conntrack_capacity: u32,
    /// Where the connection table lives: a state file adopted from (and left for) another
    /// process ([`crate::conntrack::state_file`]); None: this process's memory only.
    pub conntrack_state: Option<std::path::PathBuf>,
    pub timeouts: Timeouts,
    /// The cores the process may run on, when the calling thread's own mask no longer says so
    /// (the control side keeps its threads off the worker cores before starting the workers);
    /// None: the calling thread's mask.
    pub allowed_cores: Option<Vec<usize>>,
}

impl Default for DataplaneConfig {
    fn default() -> Self {
        Self {
            cores: vec![0],
            busy_poll: false,
            umem: UmemSpec::default(),
            ring_size: 2048,
            rx_ring: 4096,
            copy_policy: CopyPolicy::PreferZeroCopy,
            xdp_mode: None,
            pod_umem: None,
            conntrack_capacity: 262_144,
            conntrack_state: None,
            timeouts: Timeouts::default(),
            allowed_cores: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error(transparent)]
    AfXdp(#[from] AfXdpError),
    #[error("core {core} is not available to this process (available: {available})")]
    NoSuchCore { core: usize, available: String },
    #[error("core {0} is listed twice in --cores (one worker per core)")]
    DuplicateCore(usize),
    #[error("no cores given")]
    NoCores,
    #[error("port id {0} is already attached")]
    PortInUse(PortId),
    #[error("worker {0} did not answer within 5 s (stopped?)")]
    WorkerGone(usize),
    #[error("port id {0} is not attached")]
    NoSuchPort(PortId),
    #[error("port id {0} is not the uplink (it has no filter)")]
    NotUplink(PortId),
    #[error(transparent)]
    Filter(#[from] FilterError),
    #[error("creating a worker's doorbell (eventfd): {0}")]
    Doorbell(nix::Error),
    #[error(transparent)]
    State(#[from] crate::conntrack::state_file::StateError),
}

/// Which worker serves each rx queue of an interface with `queues` queues: queue `q` goes to
/// worker `q % workers`, so every queue is served and each worker has at least one (its first,
/// the lowest, is where it transmits on this port). Fewer queues than workers is refused: each
/// worker needs a queue of every port to transmit on.
pub fn queue_plan(ifname: &str, queues: u32, workers: usize) -> Result<Vec<(u32, usize)>, AfXdpError> {
    if (queues as usize) < workers {
        return Err(AfXdpError::TooFewQueues { ifname: ifname.into(), have: queues, need: workers as u32 });
    }
    Ok((0..queues).map(|q| (q, q as usize % workers)).collect())
}

/// Frames one socket's fill ring may hold at most, on a worker with `frames` UMEM frames and
/// `sockets` sockets, fill rings of `fill_ring` entries: the larger of an even share that
/// leaves the pool half full when every socket is busy, and a quarter of the pool. Ports start
/// with 256 and grow only while busy ([`crate::port::fill_allowance`]), so on a node of many
/// mostly idle pods the busy one still gets a ring deep enough for a TCP stream's window
/// (about 4,300 frames of 1,500 bytes at Linux's default 6 MB `tcp_rmem`); an even share
/// alone gave it 16,384 / (2 x 3) = 2,730 frames with just two pods and the node's port, and
/// the kernel dropped at the door under one iperf3 stream (#13 part 4).
pub fn fill_target(frames: u32, fill_ring: u32, sockets: usize) -> u32 {
    let even = frames as usize / (2 * sockets.max(1));
    let quarter = frames as usize / 4;
    even.max(quarter).clamp(64, fill_ring as usize) as u32
}

struct WorkerHandle {
    core: usize,
    cmds: Sender<WorkerCmd<PortRings>>,
    shared: Arc<WorkerShared>,
    umem: Umem,
    join: Mutex<Option<JoinHandle<()>>>,
}

impl WorkerHandle {
    /// Sends `cmd` and wakes the worker if it sleeps.
    fn order(&self, cmd: WorkerCmd<PortRings>) -> Result<(), crossbeam::channel::SendError<WorkerCmd<PortRings>>> {
        self.cmds.send(cmd)?;
        if let Some(bell) = &self.shared.doorbell {
            bell.ring();
        }
        Ok(())
    }
}

/// One queue of an attached port.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct QueueInfo {
    pub queue: u32,
    pub worker: usize,
    pub core: usize,
    pub zerocopy: bool,
}

struct AttachedPort {
    /// Bound on a UMEM of its own (its frames are not the worker's).
    own_umem: Option<OwnUmemSpec>,
    name: String,
    xdp: XdpAttachment,
    queues: Vec<(QueueInfo, Arc<PortQueueCounters>)>,
    /// The sockets' fds, for the kernel's counters ([`crate::afxdp::stats`]).
    socket_fds: Vec<std::os::fd::RawFd>,
}

/// A port's state and counters, as `show ports` reports it.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct PortReport {
    pub id: PortId,
    pub name: String,
    pub xdp_mode: XdpMode,
    /// Why native XDP was not used, if it was refused.
    pub native_refused: Option<String>,
    pub zerocopy: bool,
    /// Frames of each of its sockets' own UMEM (receive and transmit), where it has one; absent
    /// where it shares its workers' UMEMs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub own_umem: Option<OwnUmemFrames>,
    pub queues: Vec<QueueInfo>,
    #[serde(flatten)]
    pub totals: PortTotals,
    /// Frames the XDP program redirected to the switch's sockets / passed to the kernel.
    pub xdp_redirected: u64,
    pub xdp_passed: u64,
    /// The kernel's counters of the port's sockets, summed: frames lost before the switch saw
    /// them (no drop reason can count those).
    pub kernel: XskStats,
}

/// The frames of a port's own UMEM, per socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct OwnUmemFrames {
    pub rx_frames: u32,
    pub tx_frames: u32,
}

/// One worker's counters, as `/metrics` reports them.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerReport {
    pub worker: usize,
    pub core: usize,
    /// Over the queues this worker owns, of every port attached now or before.
    pub totals: PortTotals,
    /// This worker's drops by reason (every reason, zeros included).
    pub drops: Vec<(DropReason, u64)>,
}

/// How one worker polls, as `show workers` and `/metrics` report it.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerPoll {
    pub worker: usize,
    pub core: usize,
    /// Started with `busy_poll` (it never sleeps).
    pub busy_poll: bool,
    pub totals: crate::worker::poll_stats::PollTotals,
}

pub struct Dataplane {
    cfg: DataplaneConfig,
    tables: Arc<ArcSwap<Tables>>,
    ct: Arc<ConnTable>,
    reaper: Reaper,
    workers: Vec<WorkerHandle>,
    /// Held through a whole attach or detach (they are never concurrent); holds the one XDP
    /// instance every port but the uplink is attached to, once the first one was.
    changing: Mutex<Option<Arc<XdpProgram>>>,
    ports: Mutex<BTreeMap<PortId, AttachedPort>>,
    /// Per worker: the final counts of the queues of ports detached since the start.
    retired: Mutex<Vec<PortTotals>>,
    adoption: Option<Adoption>,
}

/// Says what the connection table's state file gave (adopted connections, or why none).
fn log_adoption(a: &Adoption) {
    match &a.fresh {
        None => tracing::info!(
            path = %a.path.display(),
            generation = a.generation,
            adopted = a.adopted,
            incomplete = a.incomplete,
            no_slot = a.no_slot,
            "connection table adopted from the previous process"
        ),
        Some(why) => tracing::info!(path = %a.path.display(), "connection table starts empty: {why}"),
    }
    if !a.in_memory {
        tracing::warn!(path = %a.path.display(), "the connection table's state file is not on tmpfs or hugetlbfs: its changes are also written back to disk");
    }
}

/// A poisoned lock's data is still consistent here (every critical section is a map or
/// counter update that cannot stop half-way): go on with it.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Dataplane {
    /// Creates one UMEM per worker and starts the workers, pinned, with `tables` in force.
    pub fn start(cfg: DataplaneConfig, tables: Tables) -> Result<Self, DataplaneError> {
        if cfg.cores.is_empty() {
            return Err(DataplaneError::NoCores);
        }
        let available: Vec<usize> = match &cfg.allowed_cores {
            Some(c) => c.clone(),
            None => core_affinity::get_core_ids().unwrap_or_default().into_iter().map(|c| c.id).collect(),
        };
        for (i, &core) in cfg.cores.iter().enumerate() {
            if cfg.cores[..i].contains(&core) {
                return Err(DataplaneError::DuplicateCore(core));
            }
            if !available.contains(&core) {
                let available = available.iter().map(std::string::ToString::to_string).collect::<Vec<_>>().join(",");
                return Err(DataplaneError::NoSuchCore { core, available });
            }
        }
        let tables = Arc::new(ArcSwap::from_pointee(tables));
        let (ct, adoption) = match &cfg.conntrack_state {
            Some(path) => {
                let (ct, a) = state_file::open(path, cfg.conntrack_capacity)?;
                log_adoption(&a);
                (ct, Some(a))
            }
            None => (ConnTable::new(cfg.conntrack_capacity, KeyHasher::random()), None),
        };
        let ct = Arc::new(ct);
        tracing::info!(
            capacity = ct.capacity(),
            bytes_per_entry = ct.bytes_per_entry(),
            huge_pages = ct.huge_pages(),
            "connection table allocated (huge_pages=false: 4 KiB pages, slower at scale; see /sys/kernel/mm/transparent_hugepage/enabled)"
        );
        let reaper = Reaper::start(Arc::clone(&ct), cfg.timeouts);
        let mut workers = Vec::new();
        for (index, &core) in cfg.cores.iter().enumerate() {
            let mem = WorkerUmem::new(cfg.umem)?;
            let umem = mem.umem().clone();
            let doorbell = Doorbell::new().map_err(DataplaneError::Doorbell)?;
            let shared = Arc::new(WorkerShared { doorbell: Some(doorbell), ..WorkerShared::default() });
            let (tx, rx) = bounded(1024);
            let worker = Worker::new(index, mem, Arc::clone(&tables), Arc::clone(&ct), Arc::clone(&shared), rx, cfg.busy_poll);
            let join = std::thread::Builder::new()
                .name(format!("podswitch-w{index}"))
                .spawn(move || {
                    let pinned = core_affinity::set_for_current(core_affinity::CoreId { id: core });
                    if !pinned {
                        tracing::error!(worker = index, core, "could not pin worker to its core");
                    }
                    worker.run();
                })
                .expect("spawning a worker thread");
            workers.push(WorkerHandle { core, cmds: tx, shared, umem, join: Mutex::new(Some(join)) });
        }
        let retired = vec![PortTotals::default(); workers.len()];
        Ok(Self {
            cfg,
            tables,
            ct,
            reaper,
            workers,
            changing: Mutex::new(None),
            ports: Mutex::new(BTreeMap::new()),
            retired: Mutex::new(retired),
            adoption,
        })
    }

    /// What the connection table took over from a previous process (None: no state file).
    pub fn adoption(&self) -> Option<&Adoption> {
        self.adoption.as_ref()
    }

    pub fn worker_count(&self) -> usize {
        self.workers.len()
    }

    pub fn config(&self) -> &DataplaneConfig {
        &self.cfg
    }

    /// The tables in force.
    pub fn tables(&self) -> Arc<Tables> {
        self.tables.load_full()
    }

    /// The connection table shared by the workers.
    pub fn conntrack(&self) -> &Arc<ConnTable> {
        &self.ct
    }

    /// Removes the UDP connections of endpoints that are gone, at once (rather than leaving
    /// them to time out, which strands clients of a removed UDP backend). Returns the count.
    pub fn flush_udp_endpoints(&self, endpoints: Vec<u32>) -> usize {
        self.reaper.flush_udp_endpoints(endpoints)
    }

    /// Swaps in a new table snapshot.
    pub fn publish(&self, tables: Tables) {
        self.tables.store(Arc::new(tables));
    }

    /// Attaches interface `ifname` as port `id`: XDP program redirecting every frame, one
    /// socket per queue ([`queue_plan`]).
    pub fn attach_port(&self, id: PortId, ifname: &str) -> Result<PortReport, DataplaneError> {
        self.attach_as(id, ifname, XdpRole::All)
    }

    /// Attaches the uplink `ifname` as port `id`: its program redirects only what
    /// [`Self::set_uplink_filter`] says the switch owns (nothing until then).
    pub fn attach_uplink(&self, id: PortId, ifname: &str) -> Result<PortReport, DataplaneError> {
        self.attach_as(id, ifname, XdpRole::Uplink)
    }

    /// Writes the filter of the uplink attached as port `id` (see [`crate::afxdp::filter`]).
    pub fn set_uplink_filter(&self, id: PortId, filter: &UplinkFilter) -> Result<(), DataplaneError> {
        let mut ports = lock(&self.ports);
        let port = ports.get_mut(&id).ok_or(DataplaneError::NoSuchPort(id))?;
        if port.xdp.role() != XdpRole::Uplink {
            return Err(DataplaneError::NotUplink(id));
        }
        port.xdp.set_filter(filter).map_err(DataplaneError::Filter)
    }

    /// The filter in force on the uplink attached as port `id` (None where it is no uplink or
    /// its maps' contents are unknown after a failed write) and the program's counters.
    pub fn uplink_filter(&self, id: PortId) -> Option<(Option<UplinkFilter>, RuleCounters)> {
        let ports = lock(&self.ports);
        let port = ports.get(&id).filter(|p| p.xdp.role() == XdpRole::Uplink)?;
        Some((port.xdp.filter().cloned(), port.xdp.rule_counters()))
    }

    fn attach_as(&self, id: PortId, ifname: &str, role: XdpRole) -> Result<PortReport, DataplaneError> {
        let mut shared_program = lock(&self.changing);
        if lock(&self.ports).contains_key(&id) {
            return Err(DataplaneError::PortInUse(id));
        }
        let plan = queue_plan(ifname, iface::rx_queues(ifname)?, self.workers.len())?;
        let xdp = match role {
            // Each uplink's filter is its own: an instance of its own.
            XdpRole::Uplink => XdpAttachment::attach_as(ifname, self.cfg.xdp_mode, role)?,
            XdpRole::All => {
                let program = match &*shared_program {
                    Some(p) => Arc::clone(p),
                    None => Arc::clone(shared_program.insert(XdpProgram::load(XdpRole::All)?)),
                };
                program.attach(ifname, self.cfg.xdp_mode)?
            }
        };
        let own_umem = match role {
            XdpRole::All => self.cfg.pod_umem,
            XdpRole::Uplink => None,
        };
        let rings = RingSizes { rx: self.cfg.rx_ring, tx: self.cfg.ring_size };
        let fill_target = self.fill_target(self.sockets_per_worker() + plan.len().div_ceil(self.workers.len()));
        let mut bound = Vec::new();
        for &(queue, w) in &plan {
            let device = match own_umem {
                Some(spec) => PortRings::own(id, bind_own(spec, ifname, queue, rings, self.cfg.copy_policy, crate::worker::BURST)?),
                None => PortRings::new(id, bind(&self.workers[w].umem, ifname, queue, rings, self.cfg.copy_policy)?, fill_target),
            };
            bound.push((device, queue, w));
        }
        let mut queues = Vec::new();
        let mut sockets = Vec::new();
        for (rings, queue, w) in bound {
            let info = QueueInfo { queue, worker: w, core: self.workers[w].core, zerocopy: rings.mode().zerocopy };
            let counters = Arc::new(PortQueueCounters::default());
            sockets.push((queue, rings.wait_fd().unwrap_or(-1)));
            let (ready_tx, ready_rx) = bounded(1);
            self.workers[w]
                .order(WorkerCmd::AddPort { device: Box::new(rings), counters: Arc::clone(&counters), ready: ready_tx })
                .map_err(|_| DataplaneError::WorkerGone(w))?;
            queues.push((info, counters, ready_rx));
        }
        // Redirect to a socket only once its worker polls it with a filled fill ring: until
        // then the port's frames pass to the kernel rather than die on an empty fill ring.
        let mut result = Ok(());
        for (info, _, ready) in &queues {
            if ready.recv_timeout(Duration::from_secs(5)).is_err() {
                result = Err(DataplaneError::WorkerGone(info.worker));
            }
        }
        let queues: Vec<_> = queues.into_iter().map(|(info, counters, _)| (info, counters)).collect();
        if result.is_ok() {
            for &(queue, fd) in &sockets {
                if let Err(e) = xdp.register_socket(queue, fd) {
                    result = Err(e.into());
                    break;
                }
            }
        }
        let socket_fds = sockets.iter().map(|(_, fd)| *fd).collect();
        lock(&self.ports).insert(id, AttachedPort { name: ifname.into(), own_umem, xdp, queues, socket_fds });
        if let Err(e) = result {
            let _ = self.detach_locked(id);
            return Err(e);
        }
        self.rebalance_fill();
        Ok(self.report(id).expect("just inserted"))
    }

    /// Detaches port `id`: its frames pass to the kernel again and its sockets close.
    pub fn detach_port(&self, id: PortId) -> Result<(), DataplaneError> {
        let _changing = lock(&self.changing);
        self.detach_locked(id)
    }

    /// [`Self::detach_port`] with `changing` held.
    fn detach_locked(&self, id: PortId) -> Result<(), DataplaneError> {
        let Some(port) = lock(&self.ports).remove(&id) else {
            return Ok(());
        };
        for (info, _) in &port.queues {
            port.xdp.unregister_socket(info.queue);
        }
        let mut result = Ok(());
        for (w, worker) in self.workers.iter().enumerate() {
            let (done_tx, done_rx) = bounded(1);
            if worker.order(WorkerCmd::RemovePort { id, done: done_tx }).is_err()
                || done_rx.recv_timeout(Duration::from_secs(5)).is_err()
            {
                result = Err(DataplaneError::WorkerGone(w));
            }
        }
        // The workers no longer count on these queues: their counts are final.
        let mut retired = lock(&self.retired);
        for (info, c) in &port.queues {
            if let Some(t) = retired.get_mut(info.worker) {
                t.add(c);
            }
        }
        drop(retired);
        drop(port); // detaches XDP
        self.rebalance_fill();
        result
    }

    /// Frames each socket's fill ring may hold at most (see [`fill_target`]).
    fn fill_target(&self, sockets: usize) -> u32 {
        fill_target(self.cfg.umem.frames, self.cfg.umem.fill_ring, sockets)
    }

    /// The sockets on a worker's UMEM of the busiest worker, over the attached ports (a port
    /// with its own UMEM takes nothing from its worker's).
    fn sockets_per_worker(&self) -> usize {
        let ports = lock(&self.ports);
        (0..self.workers.len())
            .map(|w| ports.values().filter(|p| p.own_umem.is_none()).flat_map(|p| p.queues.iter()).filter(|(q, _)| q.worker == w).count())
            .max()
            .unwrap_or(0)
    }

    fn rebalance_fill(&self) {
        let t = self.fill_target(self.sockets_per_worker());
        for w in &self.workers {
            let _ = w.order(WorkerCmd::SetFillTarget(t));
        }
    }

    /// The sizes that bound every port's door now (for naming the kernel's losses).
    pub fn door_sizes(&self) -> crate::port::loss_reason::DoorSizes {
        crate::port::loss_reason::DoorSizes { rx_ring: self.cfg.rx_ring, fill_target: self.fill_target(self.sockets_per_worker()), frames: self.cfg.umem.frames, own_rx_frames: None }
    }

    /// The attached ports' ids and interfaces.
    pub fn attached(&self) -> Vec<(PortId, String)> {
        lock(&self.ports).iter().map(|(id, p)| (*id, p.name.clone())).collect()
    }

    pub fn report(&self, id: PortId) -> Option<PortReport> {
        Some(Self::report_of(id, lock(&self.ports).get(&id)?))
    }

    fn report_of(id: PortId, p: &AttachedPort) -> PortReport {
        let mut totals = PortTotals::default();
        for (_, c) in &p.queues {
            totals.add(c);
        }
        let (xdp_redirected, xdp_passed) = p.xdp.counters();
        let mut kernel = XskStats::default();
        for fd in &p.socket_fds {
            kernel.add(&stats::read(*fd).unwrap_or_default());
        }
        PortReport {
            id,
            name: p.name.clone(),
            xdp_mode: p.xdp.mode(),
            native_refused: p.xdp.native_refused().map(str::to_string),
            zerocopy: p.queues.iter().all(|(q, _)| q.zerocopy),
            own_umem: p.own_umem.map(|s| OwnUmemFrames { rx_frames: s.rx_frames, tx_frames: s.tx_frames }),
            queues: p.queues.iter().map(|(q, _)| q.clone()).collect(),
            totals,
            xdp_redirected,
            xdp_passed,
            kernel,
        }
    }

    pub fn reports(&self) -> Vec<PortReport> {
        lock(&self.ports).iter().map(|(id, p)| Self::report_of(*id, p)).collect()
    }

    /// Drops by reason, summed over workers (every reason, zeros included).
    pub fn drops(&self) -> Vec<(DropReason, u64)> {
        DropReason::ALL
            .iter()
            .map(|r| (*r, self.workers.iter().map(|w| w.shared.drops.get(*r)).sum()))
            .collect()
    }

    /// The pipeline stages' counters by name (`stage.counter`: answers sent, connections made,
    /// backends chosen), summed over workers, in pipeline order.
    pub fn stage_counters(&self) -> Vec<(&'static str, u64)> {
        let mut sums = crate::pipeline::StageCounters::default().values();
        for w in &self.workers {
            for (sum, (_, n)) in sums.iter_mut().zip(w.shared.stages.values()) {
                sum.1 += n;
            }
        }
        sums.to_vec()
    }

    /// Per worker: frames and bytes over the queues it owns, and its drops by reason.
    pub fn worker_reports(&self) -> Vec<WorkerReport> {
        let (ports, retired) = (lock(&self.ports), lock(&self.retired));
        self.workers
            .iter()
            .enumerate()
            .map(|(w, h)| {
                let mut totals = retired[w];
                for (_, c) in ports.values().flat_map(|p| p.queues.iter()).filter(|(q, _)| q.worker == w) {
                    totals.add(c);
                }
                let drops = DropReason::ALL.iter().map(|r| (*r, h.shared.drops.get(*r))).collect();
                WorkerReport { worker: w, core: h.core, totals, drops }
            })
            .collect()
    }

    /// Moves every worker's verdict records into `out` (oldest first per worker).
    pub fn drain_flows(&self, out: &mut Vec<crate::flowlog::FlowRecord>) -> u64 {
        let mut overwritten = 0;
        for w in &self.workers {
            w.shared.flows.drain(out);
            overwritten += w.shared.flows.overwritten.load(std::sync::atomic::Ordering::Relaxed);
        }
        overwritten
    }

    /// Connections allowed by NetworkPolicy `policy`, summed over workers.
    pub fn policy_allowed(&self, policy: u32) -> u64 {
        self.workers.iter().map(|w| w.shared.policy.get(policy)).sum()
    }

    /// Per worker: how it spent its time, its bursts and wake-ups (`show workers`, `/metrics`).
    pub fn worker_polls(&self) -> Vec<WorkerPoll> {
        self.workers
            .iter()
            .enumerate()
            .map(|(i, w)| WorkerPoll { worker: i, core: w.core, busy_poll: self.cfg.busy_poll, totals: w.shared.poll.totals() })
            .collect()
    }

    /// Per worker: (index, core, rounds, idle sleeps, free frames).
    pub fn worker_stats(&self) -> Vec<(usize, usize, u64, u64, u64)> {
        self.workers
            .iter()
            .enumerate()
            .map(|(i, w)| (i, w.core, w.shared.poll.rounds.get(), w.shared.poll.sleeps.get(), w.shared.free_frames.get()))
            .collect()
    }

    /// Detaches every port and stops the workers: the sockets leave the XSKMAPs, the workers
    /// close them, then the XDP programs go. Idempotent.
    pub fn stop(&self) {
        let _changing = lock(&self.changing);
        // Every port at once, not one detach (a worker round trip and a fill rebalance each)
        // after another: a restart's gap starts here. The sockets leave the XSKMAPs first (the
        // programs then pass frames to the kernel), the workers stop and close every socket,
        // then the programs are detached.
        let ports = std::mem::take(&mut *lock(&self.ports));
        for port in ports.values() {
            for (info, _) in &port.queues {
                port.xdp.unregister_socket(info.queue);
            }
        }
        for w in &self.workers {
            let _ = w.order(WorkerCmd::Stop);
        }
        for w in &self.workers {
            let join = lock(&w.join).take();
            if let Some(j) = join {
                let _ = j.join();
            }
        }
        drop(ports); // detaches XDP
    }
}

#[cfg(test)]
mod queue_plan_tests {
    use super::*;

    #[test]
    fn every_queue_is_served_and_each_worker_first_gets_its_own_index() {
        assert_eq!(queue_plan("eth0", 2, 2).unwrap(), vec![(0, 0), (1, 1)]);
        assert_eq!(queue_plan("eth0", 5, 2).unwrap(), vec![(0, 0), (1, 1), (2, 0), (3, 1), (4, 0)]);
        assert_eq!(queue_plan("eth0", 8, 1).unwrap().len(), 8);
        let e = queue_plan("eth0", 1, 2).unwrap_err().to_string();
        assert!(e.contains("eth0 has 1 rx queue(s) but the switch runs 2 worker(s)"), "{e}");
    }
}

#[cfg(test)]
mod fill_target_tests {
    use super::fill_target;

    #[test]
    fn a_busy_port_gets_a_quarter_of_the_pool_however_many_sockets() {
        // Two pods and the node's port: the even share (2,730) would be below a TCP window.
        assert_eq!(fill_target(16384, 4096, 3), 4096);
        assert_eq!(fill_target(16384, 4096, 100), 4096);
        assert_eq!(fill_target(32768, 8192, 3), 8192);
        assert_eq!(fill_target(65536, 8192, 3), 8192, "never above the ring");
        // One socket: the even share (half the pool) is the larger.
        assert_eq!(fill_target(16384, 16384, 1), 8192);
        assert_eq!(fill_target(128, 2048, 10), 64, "at least 64");
    }
}
