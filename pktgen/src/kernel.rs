//! The explicit kernel-socket fallback (`--fallback kernel`): an AF_PACKET raw socket
//! ([`PacketSocket`], through `nix`: no `unsafe` here) behind the same [`TxPort`] / [`RxPort`]
//! interface as AF_XDP.
//!
//! Contract: frames are built in userspace buffers that play the part of UMEM frames (built
//! once, fields rewritten in place); a submitted frame is sent with one `send()` and is done
//! at once (its index comes back from [`TxPort::reclaim`]). A full socket buffer or device
//! queue ends a submit early; the caller retries the rest. Receiving reads one frame per
//! `recv()` into a buffer lent to the closure. Only used when asked for: AF_XDP failing never
//! leads here by itself.
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    self, bind, recvfrom, setsockopt, sockopt, AddressFamily, LinkAddr, MsgFlags, SockFlag, SockProtocol, SockType,
};

use crate::port::{SentFrames, TxPort};
use crate::rx::RxPort;

const FRAME: usize = 2048;

/// `sll_pkttype` of a frame this host sent (`PACKET_OUTGOING` of <linux/if_packet.h>).
const PACKET_OUTGOING: u8 = 4;

/// An AF_PACKET raw socket bound to one interface, non-blocking.
///
/// Sending goes through the interface's queueing discipline like any packet socket; receiving
/// sees every frame arriving on the interface (frames this host sends are skipped).
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
}

impl PacketSocket {
    /// Opens a raw packet socket on `ifname`; with `receive` it gets every incoming frame
    /// (`ETH_P_ALL`), else none (send only).
    pub fn open(ifname: &str, receive: bool) -> io::Result<PacketSocket> {
        let addr = switch::afxdp::iface::link_addr(ifname)?;
        let proto = receive.then_some(SockProtocol::EthAll);
        let fd = socket::socket(AddressFamily::Packet, SockType::Raw, SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK, proto)
            .map_err(|e| io::Error::other(format!("socket(AF_PACKET): {e}")))?;
        // The address's protocol is 0: the socket's own (ETH_P_ALL or none) stays in force.
        bind(fd.as_raw_fd(), &addr)
            .map_err(|e| io::Error::other(format!("bind(AF_PACKET) to {ifname}: {e}")))?;
        Ok(PacketSocket { fd })
    }

    /// Sets the send buffer (SO_SNDBUFFORCE as root, else SO_SNDBUF).
    pub fn set_send_buffer(&self, bytes: usize) -> io::Result<()> {
        setsockopt(&self.fd, sockopt::SndBufForce, &bytes).or_else(|_| setsockopt(&self.fd, sockopt::SndBuf, &bytes))?;
        Ok(())
    }

    /// Sets the receive buffer (SO_RCVBUFFORCE as root, else SO_RCVBUF).
    pub fn set_recv_buffer(&self, bytes: usize) -> io::Result<()> {
        setsockopt(&self.fd, sockopt::RcvBufForce, &bytes).or_else(|_| setsockopt(&self.fd, sockopt::RcvBuf, &bytes))?;
        Ok(())
    }

    /// Sends one frame. `Ok(false)`: the socket's buffer or the device queue is full (retry).
    #[inline]
    pub fn send(&self, frame: &[u8]) -> io::Result<bool> {
        match socket::send(self.fd.as_raw_fd(), frame, MsgFlags::MSG_DONTWAIT) {
            Ok(_) => Ok(true),
            Err(Errno::EAGAIN | Errno::ENOBUFS | Errno::EINTR) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Receives one frame into `buf` without waiting; its length (truncated to `buf`) or None.
    /// Frames this host sent on the interface are skipped.
    #[inline]
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        loop {
            match recvfrom::<LinkAddr>(self.fd.as_raw_fd(), buf) {
                Ok((_, Some(from))) if from.pkttype() == PACKET_OUTGOING => continue,
                Ok((n, _)) => return Ok(Some(n)),
                Err(Errno::EAGAIN | Errno::EINTR) => return Ok(None),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Waits up to `timeout_ms` until a frame can be read.
    pub fn wait_readable(&self, timeout_ms: i32) -> bool {
        let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
        let timeout = PollTimeout::try_from(timeout_ms.max(0)).unwrap_or(PollTimeout::MAX);
        poll(&mut fds, timeout).is_ok_and(|n| n > 0)
    }
}

pub struct KernelTx {
    sock: PacketSocket,
    bufs: Vec<u8>,
    frames: u32,
    done: SentFrames,
}

impl KernelTx {
    pub fn open(ifname: &str, frames: u32) -> Result<KernelTx> {
        let sock = PacketSocket::open(ifname, false).with_context(|| format!("opening an AF_PACKET socket on {ifname}"))?;
        // Room for a few batches in flight; the default buffer (~200 KiB) makes send() fail
        // with ENOBUFS as soon as frames queue on another core.
        let _ = sock.set_send_buffer(4 << 20);
        Ok(KernelTx { sock, bufs: vec![0; frames as usize * FRAME], frames, done: SentFrames::with_capacity(frames as usize) })
    }
}

impl TxPort for KernelTx {
    fn frame_count(&self) -> u32 {
        self.frames
    }
    fn frame_capacity(&self) -> usize {
        FRAME
    }
    #[inline]
    fn write<R>(&mut self, index: u32, f: impl FnOnce(&mut [u8]) -> R) -> R {
        let at = index as usize * FRAME;
        f(&mut self.bufs[at..at + FRAME])
    }
    fn room(&mut self, want: usize) -> usize {
        want
    }
    fn submit(&mut self, frames: &[(u32, u32)]) -> usize {
        for (k, &(index, len)) in frames.iter().enumerate() {
            let at = index as usize * FRAME;
            match self.sock.send(&self.bufs[at..at + len as usize]) {
                Ok(true) => self.done.push(index),
                // Buffer full: the rest is retried. A hard error (interface gone) ends nothing
                // here; the frame counts as sent by nobody and is retried likewise.
                Ok(false) | Err(_) => return k,
            }
        }
        frames.len()
    }
    fn reclaim(&mut self, out: &mut [u32]) -> usize {
        self.done.reclaim(out)
    }
    fn outstanding(&self) -> u32 {
        self.done.len()
    }
}

pub struct KernelRx {
    sock: PacketSocket,
    buf: Vec<u8>,
}

impl KernelRx {
    pub fn open(ifname: &str) -> Result<KernelRx> {
        let sock = PacketSocket::open(ifname, true).with_context(|| format!("opening an AF_PACKET socket on {ifname}"))?;
        let _ = sock.set_recv_buffer(16 << 20);
        Ok(KernelRx { sock, buf: vec![0; 65536] })
    }
}

impl RxPort for KernelRx {
    fn recv(&mut self, max: usize, mut f: impl FnMut(&[u8])) -> usize {
        let mut n = 0;
        while n < max {
            match self.sock.recv(&mut self.buf) {
                Ok(Some(len)) => {
                    f(&self.buf[..len]);
                    n += 1;
                }
                _ => break,
            }
        }
        n
    }
    fn wait(&mut self, timeout_ms: i32) -> bool {
        self.sock.wait_readable(timeout_ms)
    }
    fn snapshot_batches(&self) -> bool {
        false
    }
}
