//! A safe AF_XDP endpoint for one-interface tools (the packet generator `pktgen`), built on
//! the switch's own layer: [`create_umem`], [`socket::bind`] and [`XdpAttachment`].
//!
//! Contract:
//! - [`Xsk::open`] makes one UMEM and binds one socket to (interface, queue). Frame indices
//!   `0..tx_frames` belong to the TX half ([`XskTx`]), the last `rx_frames` to the RX half
//!   ([`XskRx`]); the halves never touch each other's frames, so they can be moved to two
//!   threads ([`Xsk::take_tx`], [`Xsk::take_rx`]).
//! - RX needs an XDP program: with `rx_frames > 0` podswitch's program is attached to the
//!   interface (native, generic where native is refused, or the forced mode) and the socket is
//!   registered for `queue`; every frame of that queue then goes to this socket, none to the
//!   kernel, until the [`Xsk`] (which holds the attachment) is dropped. An interface that
//!   already has an XDP program is refused ([`OpenError::XdpBusy`]) unless `replace_xdp`.
//!   With `rx_frames == 0` nothing is attached (AF_XDP TX needs no program).
//! - Every TX frame is either the caller's (writable with [`XskTx::write`]) or the kernel's
//!   (submitted and not yet reclaimed); the state is checked on every access, so no safe call
//!   can reach a frame the kernel may be reading. RX frames are only ever lent to a closure
//!   ([`XskRx::recv`]) and go straight back to the fill ring.
//! - Nothing here allocates after `open` (scratch arrays are sized then).
//! - [`PacketSocket`] is the explicit kernel fallback (AF_PACKET raw socket on one interface)
//!   for the same tools: it lives here because it needs `unsafe` for its system calls.
//!
//! Interface facts come from `/sys/class/net` ([`iface`]): a thread that entered another
//! network namespace must also see that namespace's sysfs (as `ip netns exec` arranges).
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

use libbpf_rs::{Xdp, XdpFlags};
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, TxQueue, Umem};

use super::frames::{create_umem, UmemSpec};
use super::socket::{self, BoundQueue, CopyPolicy};
use super::xdp::{XdpAttachment, XdpMode};
use super::{iface, AfXdpError};

/// `setsockopt(SOL_XDP, XDP_MAX_TX_SKB_BUDGET)` (Linux 6.17+): frames the kernel sends per
/// `sendto()` in copy mode (default 32).
const XDP_MAX_TX_SKB_BUDGET: libc::c_int = 9;

/// What to open.
#[derive(Debug, Clone)]
pub struct XskConfig {
    pub ifname: String,
    pub queue: u32,
    /// UMEM geometry; `frames` = TX frames + `rx_frames`.
    pub umem: UmemSpec,
    /// Entries of the socket's RX and TX rings (a power of two).
    pub ring_size: u32,
    pub copy: CopyPolicy,
    /// Frames lent to the kernel for RX (at most `umem.fill_ring`); 0: TX only, no XDP program.
    pub rx_frames: u32,
    /// Forced XDP mode; `None`: native, generic where native is refused.
    pub xdp_mode: Option<XdpMode>,
    /// Replace an XDP program already attached to the interface instead of refusing.
    pub replace_xdp: bool,
    /// Copy mode: ask the kernel to send up to this many frames per `sendto()` (Linux 6.17+;
    /// the kernel's default is 32). Ignored where unsupported (see [`XskInfo::tx_budget`]).
    pub tx_budget: Option<u32>,
}

impl XskConfig {
    /// TX-only defaults: 4096 frames of 2048 bytes, rings of 2048, zero-copy where offered.
    pub fn new(ifname: &str, queue: u32) -> Self {
        XskConfig {
            ifname: ifname.into(),
            queue,
            umem: UmemSpec { frames: 4096, frame_size: 2048, fill_ring: 2048, comp_ring: 2048 },
            ring_size: 2048,
            copy: CopyPolicy::PreferZeroCopy,
            rx_frames: 0,
            xdp_mode: None,
            replace_xdp: false,
            tx_budget: None,
        }
    }
}

/// What the kernel gave.
#[derive(Debug, Clone)]
pub struct XskInfo {
    pub ifname: String,
    pub queue: u32,
    pub zerocopy: bool,
    /// XDP mode of the attached program (RX only).
    pub xdp_mode: Option<XdpMode>,
    /// Why native XDP was refused, when generic was used instead.
    pub native_refused: Option<String>,
    pub tx_frames: u32,
    pub rx_frames: u32,
    /// Bytes a frame can hold.
    pub frame_capacity: usize,
    /// The copy-mode TX budget the kernel accepted, if one was asked for and accepted.
    pub tx_budget: Option<u32>,
}

/// Why [`Xsk::open`] failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    AfXdp(#[from] AfXdpError),
    #[error("{ifname} already has an XDP program (id {prog_id}); receiving would replace it (refused; the owner may be podswitch)")]
    XdpBusy { ifname: String, prog_id: u32 },
    #[error("bad AF_XDP configuration: {0}")]
    Config(String),
}

/// Misuse of a frame index (a bug in the caller, reported instead of undefined behaviour).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame {0} is not a TX frame of this socket")]
    OutOfRange(u32),
    #[error("frame {0} is with the kernel (submitted, not reclaimed)")]
    Busy(u32),
    #[error("frame {index}: length {len} is 0 or beyond the frame's {capacity} bytes")]
    BadLength { index: u32, len: u32, capacity: usize },
}

pub use super::stats::XskStats;

/// One bound socket with its UMEM, and the XDP attachment when it receives.
pub struct Xsk {
    tx: Option<XskTx>,
    rx: Option<XskRx>,
    /// Dropped last (fields drop in order): the socket halves first, then the program.
    xdp: Option<XdpAttachment>,
    info: XskInfo,
    fd: RawFd,
}

impl std::fmt::Debug for Xsk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Xsk").field("info", &self.info).finish()
    }
}

/// The id of the XDP program attached to `ifname` in any mode, if one is.
pub fn attached_xdp_program(ifname: &str) -> Result<Option<u32>, AfXdpError> {
    let ifindex = iface::ifindex(ifname)?;
    // `Xdp::query_id` only uses the interface index; libbpf-rs wants some fd to build the
    // handle, and any open file will do.
    let any = std::fs::File::open("/dev/null").map_err(|e| AfXdpError::ProgramLoad(format!("opening /dev/null: {e}")))?;
    let xdp = Xdp::new(any.as_fd());
    for flags in [XdpFlags::DRV_MODE, XdpFlags::SKB_MODE] {
        if let Ok(id) = xdp.query_id(ifindex, flags) {
            if id != 0 {
                return Ok(Some(id));
            }
        }
    }
    Ok(None)
}

impl Xsk {
    /// Opens the socket as `cfg` says; see the module contract.
    pub fn open(cfg: &XskConfig) -> Result<Xsk, OpenError> {
        let spec = cfg.umem;
        if cfg.rx_frames >= spec.frames {
            return Err(OpenError::Config(format!("{} RX frames leave no TX frame of {}", cfg.rx_frames, spec.frames)));
        }
        if cfg.rx_frames > spec.fill_ring {
            return Err(OpenError::Config(format!("{} RX frames do not fit the fill ring of {}", cfg.rx_frames, spec.fill_ring)));
        }
        if !spec.frame_size.is_power_of_two() {
            return Err(OpenError::Config(format!("frame size {} is not a power of two", spec.frame_size)));
        }
        let receive = cfg.rx_frames > 0;
        if receive && !cfg.replace_xdp {
            if let Some(prog_id) = attached_xdp_program(&cfg.ifname)? {
                return Err(OpenError::XdpBusy { ifname: cfg.ifname.clone(), prog_id });
            }
        }
        let (umem, descs) = create_umem(spec)?;
        let bound = socket::bind(&umem, &cfg.ifname, cfg.queue, cfg.ring_size, cfg.copy)?;
        let BoundQueue { tx, rx, fill, comp, zerocopy, fd, .. } = bound;
        let tx_budget = match cfg.tx_budget {
            Some(b) if !zerocopy => set_tx_budget(fd, b).then_some(b),
            _ => None,
        };
        let frame_size = spec.frame_size as usize;
        let tx_count = (spec.frames - cfg.rx_frames) as usize;
        let capacity = {
            let mut d = descs[0];
            // SAFETY: frame 0 belongs to this UMEM and no ring holds it yet (the socket was
            // just bound and nothing was produced), so nobody else accesses it.
            let mut data = unsafe { umem.data_mut(&mut d) };
            data.cursor().buf_len()
        };
        let tx_half = XskTx {
            umem: umem.clone(),
            tx,
            comp,
            descs: descs[..tx_count].to_vec(),
            in_kernel: vec![false; tx_count],
            frame_size,
            capacity,
            scratch: vec![FrameDesc::default(); cfg.ring_size.max(spec.comp_ring) as usize],
            outstanding: 0,
            zerocopy,
            fd,
        };
        let mut xdp = None;
        let mut info = XskInfo {
            ifname: cfg.ifname.clone(),
            queue: cfg.queue,
            zerocopy,
            xdp_mode: None,
            native_refused: None,
            tx_frames: tx_count as u32,
            rx_frames: cfg.rx_frames,
            frame_capacity: capacity,
            tx_budget,
        };
        let rx_half = if receive {
            let mut half = XskRx {
                umem,
                rx,
                fill,
                descs: descs[tx_count..].to_vec(),
                first: tx_count,
                frame_size,
                scratch: vec![FrameDesc::default(); cfg.ring_size as usize],
                refill: vec![FrameDesc::default(); cfg.ring_size as usize],
                fd,
            };
            // SAFETY: the RX frames belong to this UMEM and are held by nobody: they were
            // never produced to any ring, and the TX half owns only indices below them.
            let n = unsafe { half.fill.produce(&half.descs) };
            if n != half.descs.len() {
                return Err(OpenError::Config(format!("the fill ring took {n} of {} RX frames", half.descs.len())));
            }
            let att = XdpAttachment::attach(&cfg.ifname, cfg.xdp_mode)?;
            att.register_socket(cfg.queue, fd)?;
            info.xdp_mode = Some(att.mode());
            info.native_refused = att.native_refused().map(String::from);
            xdp = Some(att);
            Some(half)
        } else {
            drop((rx, fill));
            None
        };
        Ok(Xsk { tx: Some(tx_half), rx: rx_half, xdp, info, fd })
    }

    pub fn info(&self) -> &XskInfo {
        &self.info
    }

    /// The socket's fd (for poll).
    pub fn fd(&self) -> RawFd {
        self.fd
    }

    pub fn tx(&mut self) -> Option<&mut XskTx> {
        self.tx.as_mut()
    }

    pub fn rx(&mut self) -> Option<&mut XskRx> {
        self.rx.as_mut()
    }

    /// Takes the TX half out (e.g. to move it to another thread).
    pub fn take_tx(&mut self) -> Option<XskTx> {
        self.tx.take()
    }

    /// Takes the RX half out; frames keep arriving as long as this [`Xsk`] (which holds the
    /// XDP attachment) lives.
    pub fn take_rx(&mut self) -> Option<XskRx> {
        self.rx.take()
    }

    /// (frames the XDP program redirected to sockets, frames it passed to the kernel).
    pub fn xdp_counters(&self) -> Option<(u64, u64)> {
        self.xdp.as_ref().map(|x| x.counters())
    }
}

impl Drop for Xsk {
    fn drop(&mut self) {
        // Stop redirecting before the socket goes, so no frame is redirected to a dead socket.
        if let Some(x) = &self.xdp {
            x.unregister_socket(self.info.queue);
        }
    }
}

fn set_tx_budget(fd: RawFd, budget: u32) -> bool {
    // SAFETY: `fd` is the AF_XDP socket just bound; the option value is a valid u32 of the
    // size given. An older kernel answers ENOPROTOOPT and nothing changes.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_XDP,
            XDP_MAX_TX_SKB_BUDGET,
            (&budget as *const u32).cast(),
            std::mem::size_of::<u32>() as libc::socklen_t,
        )
    };
    rc == 0
}

fn read_stats(fd: &xsk_rs::socket::Fd) -> XskStats {
    super::stats::read(fd.as_raw_fd()).unwrap_or_default()
}

/// The TX half: frames `0..frame_count()`, the TX ring and the completion ring.
pub struct XskTx {
    umem: Umem,
    tx: TxQueue,
    comp: CompQueue,
    descs: Vec<FrameDesc>,
    in_kernel: Vec<bool>,
    frame_size: usize,
    capacity: usize,
    scratch: Vec<FrameDesc>,
    outstanding: u32,
    zerocopy: bool,
    fd: RawFd,
}

impl XskTx {
    /// TX frames (indices `0..frame_count()`).
    pub fn frame_count(&self) -> u32 {
        self.descs.len() as u32
    }

    /// Bytes a frame can hold.
    pub fn frame_capacity(&self) -> usize {
        self.capacity
    }

    pub fn zerocopy(&self) -> bool {
        self.zerocopy
    }

    /// Frames submitted and not yet reclaimed.
    pub fn outstanding(&self) -> u32 {
        self.outstanding
    }

    pub fn fd(&self) -> RawFd {
        self.fd
    }

    /// Free TX ring entries, up to `want`.
    #[inline]
    pub fn room(&mut self, want: u32) -> u32 {
        self.tx.nb_free(want).min(want)
    }

    /// Whether frame `index` is the caller's (not with the kernel).
    pub fn is_free(&self, index: u32) -> bool {
        self.in_kernel.get(index as usize).is_some_and(|k| !k)
    }

    /// Runs `f` on the whole data area of frame `index` (its earlier contents intact).
    #[inline]
    pub fn write<R>(&mut self, index: u32, f: impl FnOnce(&mut [u8]) -> R) -> Result<R, FrameError> {
        let i = index as usize;
        match self.in_kernel.get(i) {
            None => return Err(FrameError::OutOfRange(index)),
            Some(true) => return Err(FrameError::Busy(index)),
            Some(false) => {}
        }
        let desc = &mut self.descs[i];
        // SAFETY: `desc` is a frame of this UMEM (made by `create_umem` for it) that only this
        // half owns (RX frames have other indices), and it is not on the TX ring or awaiting
        // completion (`in_kernel` is false), so neither the kernel nor other code accesses it.
        let mut data = unsafe { self.umem.data_mut(desc) };
        let len = data.contents().len();
        let cap = data.cursor().buf_len();
        data.cursor().set_pos(cap);
        let r = f(data.contents_mut());
        data.cursor().set_pos(len);
        Ok(r)
    }

    /// Queues frames `(index, length)` for transmission. Returns how many the TX ring took (a
    /// prefix of `frames`; the rest stay the caller's). A bad index or length fails the whole
    /// call and queues nothing.
    #[inline]
    pub fn submit(&mut self, frames: &[(u32, u32)]) -> Result<usize, FrameError> {
        let room = self.tx.nb_free(frames.len() as u32) as usize;
        let n = room.min(frames.len()).min(self.scratch.len());
        if n == 0 {
            return Ok(0);
        }
        for (k, &(index, len)) in frames[..n].iter().enumerate() {
            let i = index as usize;
            let problem = match self.in_kernel.get(i) {
                None => Some(FrameError::OutOfRange(index)),
                Some(true) => Some(FrameError::Busy(index)),
                Some(false) if len == 0 || len as usize > self.capacity => {
                    Some(FrameError::BadLength { index, len, capacity: self.capacity })
                }
                Some(false) => None,
            };
            if let Some(e) = problem {
                for &(j, _) in &frames[..k] {
                    self.in_kernel[j as usize] = false;
                }
                return Err(e);
            }
            // Marked now so that a duplicate index later in `frames` is caught.
            self.in_kernel[i] = true;
            let desc = &mut self.descs[i];
            // SAFETY: as in `write`: this half's frame, not with the kernel (checked above,
            // and marked only now); only the length in the descriptor is set.
            let mut data = unsafe { self.umem.data_mut(desc) };
            data.cursor().set_pos(len as usize);
            self.scratch[k] = *desc;
        }
        // SAFETY: the descriptors are this UMEM's frames, owned by this half and now marked as
        // the kernel's; the ring has room for all `n` (`nb_free`), so all are produced.
        let sent = unsafe { self.tx.produce(&self.scratch[..n]) };
        if sent != n {
            for &(j, _) in &frames[sent..n] {
                self.in_kernel[j as usize] = false;
            }
        }
        self.outstanding += sent as u32;
        Ok(sent)
    }

    /// Moves completed frames back to the caller; writes their indices to `out` and returns
    /// how many.
    #[inline]
    pub fn reclaim(&mut self, out: &mut [u32]) -> usize {
        if self.outstanding == 0 {
            return 0;
        }
        let max = out.len().min(self.scratch.len());
        // SAFETY: `scratch` only receives descriptors; the completion ring of this UMEM
        // holds only frames this half submitted, which the kernel is done with.
        let n = unsafe { self.comp.consume(&mut self.scratch[..max]) };
        let mut k = 0;
        for d in &self.scratch[..n] {
            let i = d.addr() / self.frame_size;
            if let Some(s) = self.in_kernel.get_mut(i) {
                if *s {
                    *s = false;
                    out[k] = i as u32;
                    k += 1;
                }
            }
        }
        self.outstanding -= n as u32;
        k
    }

    /// Whether the kernel must be kicked to transmit: always in copy mode (it sends only
    /// inside `sendto()`), when the ring asks in zero-copy mode.
    #[inline]
    pub fn needs_kick(&self) -> bool {
        self.outstanding > 0 && (!self.zerocopy || self.tx.needs_wakeup())
    }

    /// One `sendto()`: in copy mode the kernel sends up to its TX budget (32 frames by
    /// default) and completes them before returning.
    #[inline]
    pub fn kick(&mut self) -> io::Result<()> {
        self.tx.wakeup()
    }

    /// Kernel counters of the socket.
    pub fn stats(&self) -> XskStats {
        read_stats(self.tx.fd())
    }
}

/// The RX half: the RX and fill rings and the last `rx_frames` frames.
pub struct XskRx {
    umem: Umem,
    rx: RxQueue,
    fill: FillQueue,
    descs: Vec<FrameDesc>,
    first: usize,
    frame_size: usize,
    scratch: Vec<FrameDesc>,
    refill: Vec<FrameDesc>,
    fd: RawFd,
}

impl XskRx {
    pub fn fd(&self) -> RawFd {
        self.fd
    }

    /// Reads up to `max` received frames, lending each one's bytes to `f`, and gives the
    /// frames back to the kernel. Returns how many were read.
    #[inline]
    pub fn recv(&mut self, max: usize, mut f: impl FnMut(&[u8])) -> usize {
        let max = max.min(self.scratch.len());
        // SAFETY: `scratch` only receives descriptors; frames on this RX ring came from this
        // UMEM's fill ring, which is only ever given this half's frames.
        let n = unsafe { self.rx.consume(&mut self.scratch[..max]) };
        if n == 0 {
            if self.fill.needs_wakeup() {
                let _ = self.fill.wakeup(self.rx.fd_mut(), 0);
            }
            return 0;
        }
        let mut k = 0;
        for d in &self.scratch[..n] {
            // SAFETY: the kernel handed this frame over on the RX ring and gets it back only
            // below, after `f` returned; it is only read here.
            let data = unsafe { self.umem.data(d) };
            f(data.contents());
            let i = d.addr() / self.frame_size;
            if let Some(canon) = i.checked_sub(self.first).and_then(|j| self.descs.get(j)) {
                self.refill[k] = *canon;
                k += 1;
            }
        }
        // SAFETY: these frames came off the RX ring just now and nothing holds them; the fill
        // ring has room, since it was sized for all RX frames and these were out of it.
        let put = unsafe { self.fill.produce(&self.refill[..k]) };
        debug_assert_eq!(put, k);
        if self.fill.needs_wakeup() {
            let _ = self.fill.wakeup(self.rx.fd_mut(), 0);
        }
        n
    }

    /// Copies the next received frame into `buf` (truncated to it); its length, or `None`.
    pub fn recv_copy(&mut self, buf: &mut [u8]) -> Option<usize> {
        let mut got = None;
        self.recv(1, |frame| {
            let n = frame.len().min(buf.len());
            buf[..n].copy_from_slice(&frame[..n]);
            got = Some(n);
        });
        got
    }

    /// Waits up to `timeout_ms` for a frame to read; true if there is one.
    pub fn wait(&mut self, timeout_ms: i32) -> bool {
        self.rx.poll(timeout_ms).unwrap_or(false)
    }

    /// Kernel counters of the socket (drops for a full RX ring or an empty fill ring).
    pub fn stats(&self) -> XskStats {
        read_stats(self.rx.fd())
    }
}

/// The explicit kernel fallback: an AF_PACKET raw socket bound to one interface.
///
/// Sending goes through the interface's queueing discipline like any packet socket; receiving
/// sees every frame arriving on the interface (not the ones this host sends).
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    ifindex: i32,
}

fn last_err(what: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

impl PacketSocket {
    /// Opens a raw packet socket on `ifname`; with `receive` it gets every incoming frame
    /// (`ETH_P_ALL`), else none (send only).
    pub fn open(ifname: &str, receive: bool) -> io::Result<PacketSocket> {
        let ifindex = iface::ifindex(ifname).map_err(|e| io::Error::new(io::ErrorKind::NotFound, e.to_string()))?;
        let proto = if receive { (libc::ETH_P_ALL as u16).to_be() } else { 0 };
        // SAFETY: plain socket(2) call; the result is checked before use.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, i32::from(proto)) };
        if raw < 0 {
            return Err(last_err("socket(AF_PACKET)"));
        }
        // SAFETY: `raw` is a freshly created socket that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = ifindex;
        // SAFETY: `sll` is a valid sockaddr_ll and the length given is its size.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(last_err(&format!("bind(AF_PACKET) to {ifname}")));
        }
        let s = PacketSocket { fd, ifindex };
        if receive {
            // Frames this host sends on the interface are not wanted (best effort: 4.20+).
            let _ = s.set_int(libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, 1);
        }
        Ok(s)
    }

    fn set_int(&self, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
        // SAFETY: our open socket; the value is a valid c_int of the size given.
        let rc = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                level,
                name,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(last_err("setsockopt"));
        }
        Ok(())
    }

    /// Sets the send buffer (SO_SNDBUFFORCE as root, else SO_SNDBUF).
    pub fn set_send_buffer(&self, bytes: i32) -> io::Result<()> {
        self.set_int(libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, bytes)
            .or_else(|_| self.set_int(libc::SOL_SOCKET, libc::SO_SNDBUF, bytes))
    }

    /// Sets the receive buffer (SO_RCVBUFFORCE as root, else SO_RCVBUF).
    pub fn set_recv_buffer(&self, bytes: i32) -> io::Result<()> {
        self.set_int(libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, bytes)
            .or_else(|_| self.set_int(libc::SOL_SOCKET, libc::SO_RCVBUF, bytes))
    }

    /// Bypasses the interface's queueing discipline (PACKET_QDISC_BYPASS).
    pub fn bypass_qdisc(&self) -> io::Result<()> {
        self.set_int(libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, 1)
    }

    pub fn ifindex(&self) -> i32 {
        self.ifindex
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Sends one frame. `Ok(false)`: the socket's buffer or the device queue is full (retry).
    #[inline]
    pub fn send(&self, frame: &[u8]) -> io::Result<bool> {
        // SAFETY: `frame` is a valid readable buffer of the length given; the socket is ours.
        let rc = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), libc::MSG_DONTWAIT) };
        if rc >= 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::ENOBUFS) | Some(libc::EINTR) => Ok(false),
            _ => Err(e),
        }
    }

    /// Receives one frame into `buf` without waiting; its length (truncated to `buf`) or None.
    #[inline]
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        // SAFETY: `buf` is a valid writable buffer of the length given; the socket is ours.
        let rc = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        if rc >= 0 {
            return Ok(Some(rc as usize));
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(None),
            _ => Err(e),
        }
    }

    /// Waits up to `timeout_ms` until a frame can be read.
    pub fn wait_readable(&self, timeout_ms: i32) -> bool {
        let mut p = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid, exclusively borrowed pollfd.
        let rc = unsafe { libc::poll(&mut p, 1, timeout_ms) };
        rc > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_checked_before_anything_is_opened() {
        let mut c = XskConfig::new("lo", 0);
        c.rx_frames = c.umem.frames;
        assert!(matches!(Xsk::open(&c), Err(OpenError::Config(_))));
        let mut c = XskConfig::new("lo", 0);
        c.rx_frames = c.umem.fill_ring + 1;
        assert!(matches!(Xsk::open(&c), Err(OpenError::Config(_))));
    }
}
