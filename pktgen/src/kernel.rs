//! The explicit kernel-socket fallback (`--fallback kernel`): an AF_PACKET raw socket
//! (`switch::afxdp::standalone::PacketSocket`) behind the same [`TxPort`] / [`RxPort`]
//! interface as AF_XDP.
//!
//! Contract: frames are built in userspace buffers that play the part of UMEM frames (built
//! once, fields rewritten in place); a submitted frame is sent with one `send()` and is done
//! at once (its index comes back from [`TxPort::reclaim`]). A full socket buffer or device
//! queue ends a submit early; the caller retries the rest. Receiving reads one frame per
//! `recv()` into a buffer lent to the closure. Only used when asked for: AF_XDP failing never
//! leads here by itself.
use std::collections::VecDeque;
use std::io;

use anyhow::{Context, Result};
use switch::afxdp::standalone::PacketSocket;

use crate::port::TxPort;
use crate::rx::RxPort;

const FRAME: usize = 2048;

pub struct KernelTx {
    sock: PacketSocket,
    bufs: Vec<u8>,
    frames: u32,
    done: VecDeque<u32>,
}

impl KernelTx {
    pub fn open(ifname: &str, frames: u32) -> Result<KernelTx> {
        let sock = PacketSocket::open(ifname, false).with_context(|| format!("opening an AF_PACKET socket on {ifname}"))?;
        // Room for a few batches in flight; the default buffer (~200 KiB) makes send() fail
        // with ENOBUFS as soon as frames queue on another core.
        let _ = sock.set_send_buffer(4 << 20);
        Ok(KernelTx { sock, bufs: vec![0; frames as usize * FRAME], frames, done: VecDeque::with_capacity(frames as usize) })
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
                Ok(true) => self.done.push_back(index),
                // Buffer full: the rest is retried. A hard error (interface gone) ends nothing
                // here; the frame counts as sent by nobody and is retried likewise.
                Ok(false) | Err(_) => return k,
            }
        }
        frames.len()
    }
    fn reclaim(&mut self, out: &mut [u32]) -> usize {
        let n = out.len().min(self.done.len());
        for o in out.iter_mut().take(n) {
            *o = self.done.pop_front().unwrap_or(0);
        }
        n
    }
    fn outstanding(&self) -> u32 {
        self.done.len() as u32
    }
    fn needs_kick(&self) -> bool {
        false
    }
    fn kick(&mut self) -> io::Result<()> {
        Ok(())
    }
    fn kick_completes(&self) -> bool {
        true
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
