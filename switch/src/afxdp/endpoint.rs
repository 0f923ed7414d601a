//! A one-socket AF_XDP endpoint for one-interface tools (the packet generator `pktgen`), on the
//! switch's own ring layer: [`create_umem`], [`socket::bind`], [`XdpAttachment`] and the
//! [`TxRings`] / [`RxRings`] halves that the switch's port device ([`super::rings::PortRings`])
//! is made of, over two parts of one UMEM ([`WorkerUmem::part`]).
//!
//! Contract:
//! - [`Xsk::open`] makes one UMEM and binds one socket to (interface, queue). Frame indices
//!   `0..tx_frames` belong to the TX half ([`XskTx`]), the last `rx_frames` to the RX half
//!   ([`XskRx`]); each half's ledger owns only its own frames, so the halves can be moved to
//!   two threads ([`Xsk::take_tx`], [`Xsk::take_rx`]).
//! - RX needs an XDP program: with `rx_frames > 0` podswitch's program is attached to the
//!   interface (native, generic where native is refused, or the forced mode) and the socket is
//!   registered for `queue`; every frame of that queue then goes to this socket, none to the
//!   kernel, until the [`Xsk`] (which holds the attachment) is dropped. An interface that
//!   already has an XDP program is refused ([`OpenError::XdpBusy`]) unless `replace_xdp`.
//!   With `rx_frames == 0` nothing is attached (AF_XDP TX needs no program).
//! - Every TX frame is either the caller's (writable with [`XskTx::write`]) or the kernel's
//!   (submitted and not yet reclaimed), as the TX half's ledger records; the state is checked
//!   on every access, so no safe call can reach a frame the kernel may be reading. RX frames
//!   are only ever lent to a closure ([`XskRx::recv`]) and go straight back to the fill ring.
//! - Nothing here allocates after `open` (scratch arrays are sized then).
//!
//! Interface facts come from `/sys/class/net` ([`iface`]): a thread that entered another
//! network namespace must also see that namespace's sysfs (as `ip netns exec` arranges).
use std::io;
use std::os::fd::{AsFd, RawFd};

use libbpf_rs::{Xdp, XdpFlags};
use xsk_rs::FrameDesc;

use super::frames::{create_umem, UmemSpec};
use super::rings::{RxRings, TxRings, WorkerUmem};
use super::socket::{self, BoundQueue, CopyPolicy, RingSizes};
use super::xdp::{XdpAttachment, XdpMode};
use super::{iface, AfXdpError};
use crate::port::FrameMemory;
use crate::tables::PortId;

/// The port id the halves record their frames under in their ledgers (one port per ledger).
const SELF: PortId = 0;

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
        let bound = socket::bind(&umem, &cfg.ifname, cfg.queue, RingSizes::both(cfg.ring_size), cfg.copy)?;
        let BoundQueue { tx, rx, fill, comp, zerocopy, fd, .. } = bound;
        let tx_budget = match cfg.tx_budget {
            Some(b) if !zerocopy => set_tx_budget(fd, b).then_some(b),
            _ => None,
        };
        let tx_count = (spec.frames - cfg.rx_frames) as usize;
        let all = descs.len();
        let mut tx_mem = WorkerUmem::part(umem.clone(), descs.clone(), spec.frame_size, 0..tx_count);
        let capacity = {
            let mut d = descs[0];
            tx_mem.modify(&mut d, |buf, len| (buf.len(), len))
        };
        let tx_half = XskTx {
            mem: tx_mem,
            rings: TxRings::new(tx, comp, zerocopy),
            count: tx_count as u32,
            capacity,
            scratch: vec![FrameDesc::default(); cfg.ring_size.max(spec.comp_ring) as usize],
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
                mem: WorkerUmem::part(umem, descs, spec.frame_size, tx_count..all),
                rings: RxRings::owning_its_frames(rx, fill, cfg.rx_frames),
                scratch: vec![FrameDesc::default(); cfg.ring_size as usize],
                fd,
            };
            let n = half.rings.refill(&mut half.mem, SELF);
            if n != cfg.rx_frames as usize {
                return Err(OpenError::Config(format!("the fill ring took {n} of {} RX frames", cfg.rx_frames)));
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
        self.xdp.as_ref().map(super::xdp::XdpAttachment::counters)
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
            (&raw const budget).cast(),
            std::mem::size_of::<u32>() as libc::socklen_t,
        )
    };
    rc == 0
}

/// The TX half: frames `0..frame_count()`, the TX ring and the completion ring.
pub struct XskTx {
    mem: WorkerUmem,
    rings: TxRings,
    count: u32,
    capacity: usize,
    /// Descriptors of a batch being submitted, then of frames being reclaimed.
    scratch: Vec<FrameDesc>,
    fd: RawFd,
}

impl XskTx {
    /// TX frames (indices `0..frame_count()`).
    pub fn frame_count(&self) -> u32 {
        self.count
    }

    /// Bytes a frame can hold.
    pub fn frame_capacity(&self) -> usize {
        self.capacity
    }

    pub fn zerocopy(&self) -> bool {
        self.rings.zerocopy()
    }

    /// Frames submitted and not yet reclaimed.
    pub fn outstanding(&self) -> u32 {
        self.rings.outstanding()
    }

    pub fn fd(&self) -> RawFd {
        self.fd
    }

    /// Free TX ring entries, up to `want`.
    #[inline]
    pub fn room(&mut self, want: u32) -> u32 {
        self.rings.room(want)
    }

    /// The descriptor of frame `index` if it is the caller's.
    #[inline]
    fn held(&self, index: u32) -> Result<FrameDesc, FrameError> {
        if index >= self.count {
            return Err(FrameError::OutOfRange(index));
        }
        self.mem.held(index as usize).ok_or(FrameError::Busy(index))
    }

    /// Whether frame `index` is the caller's (not with the kernel).
    pub fn is_free(&self, index: u32) -> bool {
        self.held(index).is_ok()
    }

    /// Runs `f` on the whole data area of frame `index` (its earlier contents intact).
    #[inline]
    pub fn write<R>(&mut self, index: u32, f: impl FnOnce(&mut [u8]) -> R) -> Result<R, FrameError> {
        let mut desc = self.held(index)?;
        Ok(self.mem.modify(&mut desc, |buf, len| (f(buf), len)))
    }

    /// Queues frames `(index, length)` for transmission. Returns how many the TX ring took (a
    /// prefix of `frames`; the rest stay the caller's). A bad index or length fails the whole
    /// call and queues nothing.
    #[inline]
    pub fn submit(&mut self, frames: &[(u32, u32)]) -> Result<usize, FrameError> {
        let room = self.rings.room(frames.len() as u32) as usize;
        let n = room.min(frames.len()).min(self.scratch.len());
        if n == 0 {
            return Ok(0);
        }
        for (k, &(index, len)) in frames[..n].iter().enumerate() {
            let checked = self.held(index).and_then(|d| {
                if len == 0 || len as usize > self.capacity {
                    Err(FrameError::BadLength { index, len, capacity: self.capacity })
                } else {
                    Ok(d)
                }
            });
            let mut desc = match checked {
                Ok(d) => d,
                Err(e) => {
                    self.mem.ledger_mut().to_worker(&self.scratch[..k]);
                    return Err(e);
                }
            };
            self.mem.modify(&mut desc, |_, _| ((), len as usize));
            self.scratch[k] = desc;
            // Marked now so that a duplicate index later in `frames` is caught.
            self.mem.ledger_mut().to_port(SELF, &self.scratch[k..=k]);
        }
        let sent = self.rings.transmit(&mut self.mem, SELF, &self.scratch[..n]);
        self.mem.ledger_mut().to_worker(&self.scratch[sent..n]);
        Ok(sent)
    }

    /// Moves completed frames back to the caller; writes their indices to `out` and returns
    /// how many.
    #[inline]
    pub fn reclaim(&mut self, out: &mut [u32]) -> usize {
        let max = out.len().min(self.scratch.len());
        let n = self.rings.complete(&mut self.mem, &mut self.scratch[..max]);
        for (o, d) in out.iter_mut().zip(&self.scratch[..n]) {
            *o = self.mem.ledger().index(d) as u32;
        }
        n
    }

    /// Whether the kernel must be kicked to transmit: always in copy mode (it sends only
    /// inside `sendto()`), when the ring asks in zero-copy mode.
    #[inline]
    pub fn needs_kick(&self) -> bool {
        self.rings.outstanding() > 0 && (!self.rings.zerocopy() || self.rings.needs_wakeup())
    }

    /// One `sendto()`: in copy mode the kernel sends up to its TX budget (32 frames by
    /// default) and completes them before returning.
    #[inline]
    pub fn kick(&mut self) -> io::Result<()> {
        self.rings.wakeup()
    }

    /// Kernel counters of the socket.
    pub fn stats(&self) -> XskStats {
        self.rings.stats()
    }
}

/// The RX half: the RX and fill rings and the last `rx_frames` frames.
pub struct XskRx {
    mem: WorkerUmem,
    rings: RxRings,
    scratch: Vec<FrameDesc>,
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
        let n = self.rings.receive(&mut self.mem, &mut self.scratch[..max]);
        if n > 0 {
            for d in &self.scratch[..n] {
                self.mem.read(d, &mut f);
            }
            self.mem.release_all(&self.scratch[..n]);
            self.rings.refill(&mut self.mem, SELF);
        }
        self.rings.wake();
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
        self.rings.wait(timeout_ms)
    }

    /// Kernel counters of the socket (drops for a full RX ring or an empty fill ring).
    pub fn stats(&self) -> XskStats {
        self.rings.stats()
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
