//! Where frames go out and come in: AF_XDP through `switch::afxdp::endpoint`, or the
//! explicit kernel fallback ([`crate::kernel`]).
//!
//! Contract:
//! - [`open`] opens AF_XDP on (interface, queue). If that fails it is an error naming the
//!   interface and the kernel's reason, and suggesting `--fallback kernel`; pktgen never falls
//!   back by itself. With `--fallback kernel` it opens an AF_PACKET socket instead.
//! - One socket serves both directions when pktgen sends and receives on the same interface
//!   (AF_XDP allows one socket per queue); its halves go to the TX and RX threads.
//! - [`TxPort`] and [`RxPort`] are what the loops see; both implementations are
//!   allocation-free after opening.
use std::collections::VecDeque;
use std::io;

use anyhow::{anyhow, Result};
use serde::Serialize;
use switch::afxdp::frames::UmemSpec;
use switch::afxdp::socket::CopyPolicy;
use switch::afxdp::endpoint::{OpenError, Xsk, XskConfig, XskRx, XskTx};
use switch::afxdp::xdp::XdpMode;

use crate::kernel::{KernelRx, KernelTx};
use crate::rx::{KernelDrops, RxPort};

/// A sink of frames built in place.
pub trait TxPort {
    /// Frames pktgen may build in (indices `0..frame_count()`).
    fn frame_count(&self) -> u32;
    fn frame_capacity(&self) -> usize;
    /// Runs `f` on frame `index` (which must be pktgen's: never submitted, or reclaimed).
    fn write<R>(&mut self, index: u32, f: impl FnOnce(&mut [u8]) -> R) -> R;
    /// How many of `want` frames could be submitted now.
    fn room(&mut self, want: usize) -> usize;
    /// Submits `(index, length)` frames; how many were taken (a prefix).
    fn submit(&mut self, frames: &[(u32, u32)]) -> usize;
    /// Indices of frames done with; how many were written to `out`.
    fn reclaim(&mut self, out: &mut [u32]) -> usize;
    fn outstanding(&self) -> u32;
    /// Whether a kick is due for submitted frames to go out. The default is a port whose
    /// `submit` sends at once (kernel socket, tests' recorders): never.
    fn needs_kick(&self) -> bool {
        false
    }
    /// Asks the kernel to transmit (by default there is nothing to ask).
    fn kick(&mut self) -> io::Result<()> {
        Ok(())
    }
    /// Whether a kick transmits and completes synchronously (copy mode, kernel socket; the
    /// default).
    fn kick_completes(&self) -> bool {
        true
    }
}

/// The frames a port that sends in `submit` has sent and pktgen has not reclaimed yet, in
/// order: what such a port's [`TxPort::reclaim`] and [`TxPort::outstanding`] report.
#[derive(Debug, Default)]
pub struct SentFrames(VecDeque<u32>);

impl SentFrames {
    pub fn with_capacity(frames: usize) -> SentFrames {
        SentFrames(VecDeque::with_capacity(frames))
    }
    /// Frame `index` went out.
    pub fn push(&mut self, index: u32) {
        self.0.push_back(index);
    }
    /// Moves the oldest sent indices into `out`; how many.
    pub fn reclaim(&mut self, out: &mut [u32]) -> usize {
        let n = out.len().min(self.0.len());
        for (o, index) in out.iter_mut().zip(self.0.drain(..n)) {
            *o = index;
        }
        n
    }
    pub fn len(&self) -> u32 {
        self.0.len() as u32
    }
}

impl TxPort for XskTx {
    fn frame_count(&self) -> u32 {
        XskTx::frame_count(self)
    }
    fn frame_capacity(&self) -> usize {
        XskTx::frame_capacity(self)
    }
    #[inline]
    fn write<R>(&mut self, index: u32, f: impl FnOnce(&mut [u8]) -> R) -> R {
        XskTx::write(self, index, f).expect("pktgen writes only frames it holds")
    }
    #[inline]
    fn room(&mut self, want: usize) -> usize {
        XskTx::room(self, want as u32) as usize
    }
    #[inline]
    fn submit(&mut self, frames: &[(u32, u32)]) -> usize {
        XskTx::submit(self, frames).expect("pktgen submits only frames it holds")
    }
    #[inline]
    fn reclaim(&mut self, out: &mut [u32]) -> usize {
        XskTx::reclaim(self, out)
    }
    fn outstanding(&self) -> u32 {
        XskTx::outstanding(self)
    }
    #[inline]
    fn needs_kick(&self) -> bool {
        XskTx::needs_kick(self)
    }
    #[inline]
    fn kick(&mut self) -> io::Result<()> {
        XskTx::kick(self)
    }
    fn kick_completes(&self) -> bool {
        !self.zerocopy()
    }
}

impl RxPort for XskRx {
    #[inline]
    fn recv(&mut self, max: usize, f: impl FnMut(&[u8])) -> usize {
        XskRx::recv(self, max, f)
    }
    fn wait(&mut self, timeout_ms: i32) -> bool {
        XskRx::wait(self, timeout_ms)
    }
    fn kernel_drops(&self) -> Option<KernelDrops> {
        let s = self.stats();
        Some(KernelDrops { rx_ring_full: s.rx_ring_full, fill_ring_empty: s.rx_fill_ring_empty, other: s.rx_dropped })
    }
}

/// How frames are sent and received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Fallback {
    /// A raw AF_PACKET socket (one send() per frame).
    Kernel,
}

/// Where and how to open.
#[derive(Debug, Clone)]
pub struct IoConfig {
    pub ifname: String,
    pub queue: u32,
    pub xdp_mode: Option<XdpMode>,
    pub require_zerocopy: bool,
    pub fallback: Option<Fallback>,
    pub replace_xdp: bool,
    /// Copy-mode frames per sendto() to ask the kernel for (Linux 6.17+).
    pub tx_budget: Option<u32>,
    pub ring_size: u32,
}

/// What was opened, for reports.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PortDesc {
    pub ifname: String,
    pub netns: Option<String>,
    /// "af_xdp" or "kernel".
    pub io: &'static str,
    pub queue: u32,
    pub zerocopy: bool,
    pub xdp_mode: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub native_refused: Option<String>,
    pub tx_frames: u32,
    pub rx_frames: u32,
    /// Frames the kernel sends per sendto() in copy mode, when raised from its default of 32.
    pub tx_budget: Option<u32>,
}

impl PortDesc {
    pub fn summary(&self) -> String {
        let ns = self.netns.as_deref().map(|n| format!(" (netns {n})")).unwrap_or_default();
        match self.io {
            "kernel" => format!("{}{ns}: kernel AF_PACKET socket (--fallback kernel)", self.ifname),
            _ => format!(
                "{}{ns} queue {}: AF_XDP {}{}{}",
                self.ifname,
                self.queue,
                if self.zerocopy { "zero-copy" } else { "copy mode" },
                self.xdp_mode.map(|m| format!(", XDP {m}")).unwrap_or_default(),
                self.tx_budget.map(|b| format!(", {b} frames per sendto")).unwrap_or_default()
            ),
        }
    }
}

pub enum TxIo {
    /// Boxed, as in [`RxIo`]: one pointer per burst, not per frame.
    Xdp(Box<XskTx>),
    Kernel(KernelTx),
}

pub enum RxIo {
    /// Boxed: the AF_XDP half is several times the size of the kernel one.
    Xdp(Box<XskRx>),
    Kernel(KernelRx),
}

/// What [`open`] returns. `keep` must outlive the halves' use (it holds the XDP program).
pub struct Opened {
    pub tx: Option<TxIo>,
    pub rx: Option<RxIo>,
    pub keep: Option<Xsk>,
    pub desc: PortDesc,
}

/// RX frames of an AF_XDP socket (also the fill and RX rings' size): ~27 ms of frames at
/// 300,000 frames/s, for a receiving thread that does not get the core at once.
pub const RX_FRAMES: u32 = 8192;

/// Opens `cfg.ifname` for sending (`tx_frames > 0`) and/or receiving.
pub fn open(cfg: &IoConfig, tx_frames: u32, receive: bool, netns: Option<&str>) -> Result<Opened> {
    if cfg.fallback == Some(Fallback::Kernel) {
        let tx = if tx_frames > 0 { Some(TxIo::Kernel(KernelTx::open(&cfg.ifname, tx_frames)?)) } else { None };
        let rx = if receive { Some(RxIo::Kernel(KernelRx::open(&cfg.ifname)?)) } else { None };
        let desc = PortDesc {
            ifname: cfg.ifname.clone(),
            netns: netns.map(String::from),
            io: "kernel",
            queue: cfg.queue,
            tx_frames,
            ..Default::default()
        };
        return Ok(Opened { tx, rx, keep: None, desc });
    }
    let rx_frames = if receive { RX_FRAMES } else { 0 };
    let tx_count = tx_frames.max(1);
    let xc = XskConfig {
        ifname: cfg.ifname.clone(),
        queue: cfg.queue,
        umem: UmemSpec { frames: tx_count + rx_frames, frame_size: 2048, fill_ring: RX_FRAMES, comp_ring: cfg.ring_size },
        ring_size: if receive { cfg.ring_size.max(RX_FRAMES) } else { cfg.ring_size },
        copy: if cfg.require_zerocopy { CopyPolicy::RequireZeroCopy } else { CopyPolicy::PreferZeroCopy },
        rx_frames,
        xdp_mode: cfg.xdp_mode,
        replace_xdp: cfg.replace_xdp,
        tx_budget: cfg.tx_budget,
    };
    // A socket just closed on this queue (an earlier run) is released by the kernel a moment
    // later; binding meanwhile fails with EBUSY.
    let mut attempt = 0;
    let opened = loop {
        match Xsk::open(&xc) {
            Err(e) if attempt < 20 && e.to_string().contains("os error 16") => {
                attempt += 1;
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            r => break r,
        }
    };
    let mut xsk = opened.map_err(|e| {
        let hint = if matches!(e, OpenError::XdpBusy { .. }) {
            "\n(if it is a leftover of an earlier pktgen, --replace-xdp replaces it)"
        } else {
            ""
        };
        anyhow!(
            "AF_XDP on {}{} failed: {e}{hint}\n(pktgen does not fall back by itself: `--fallback kernel` uses an AF_PACKET socket instead)",
            cfg.ifname,
            netns.map(|n| format!(" in netns {n}")).unwrap_or_default()
        )
    })?;
    let info = xsk.info().clone();
    let desc = PortDesc {
        ifname: cfg.ifname.clone(),
        netns: netns.map(String::from),
        io: "af_xdp",
        queue: cfg.queue,
        zerocopy: info.zerocopy,
        xdp_mode: info.xdp_mode.map(switch::afxdp::xdp::XdpMode::as_str),
        native_refused: info.native_refused.clone(),
        tx_frames: if tx_frames > 0 { info.tx_frames } else { 0 },
        rx_frames: info.rx_frames,
        tx_budget: info.tx_budget,
    };
    let tx = if tx_frames > 0 { xsk.take_tx().map(|t| TxIo::Xdp(Box::new(t))) } else { None };
    let rx = xsk.take_rx().map(|r| RxIo::Xdp(Box::new(r)));
    Ok(Opened { tx, rx, keep: Some(xsk), desc })
}
