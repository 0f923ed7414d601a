//! The first-packet probe: when does a pod's first packet reach its peer?
//!
//! Contract:
//! - [`Peer::start`] binds a UDP socket on [`PORT`] inside the peer's namespace and records,
//!   per pod, the instant (this process's monotonic clock, the same in every namespace) the
//!   first datagram of the turn's `tag` from that pod arrived. Datagrams are 8 bytes: `tag`
//!   and the pod's index, both u32 big-endian; others are ignored.
//! - [`Sender::start`] opens a UDP socket inside the pod's namespace (before its ADD: the
//!   socket exists from the first instant the pod could send) and, from [`Sender::go`] on
//!   (at once when started with `go`), sends one datagram to the peer every [`SEND_EVERY`]
//!   until the peer has seen one from the pod, the sender is stopped, or [`SEND_FOR`] passed.
//!   Failed sends (no route yet: ENETUNREACH) are retried on the same schedule. The probe's
//!   resolution is thus [`SEND_EVERY`] plus scheduling delay, the same for every setup.
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};

use super::topo;

/// The peer's UDP port.
pub const PORT: u16 = 7777;
/// How often a pod's sender tries.
pub const SEND_EVERY: Duration = Duration::from_micros(200);
/// How long a pod's sender tries at most.
pub const SEND_FOR: Duration = Duration::from_secs(30);

type Seen = Arc<Mutex<HashMap<u32, Instant>>>;

/// The peer's receiver (stopped on drop).
pub struct Peer {
    seen: Seen,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl Peer {
    /// Starts receiving inside namespace `ns` (see the module contract).
    pub fn start(ns: &str, tag: u32) -> Result<Peer> {
        let seen: Seen = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<()>>();
        let path = topo::netns_path(ns);
        let (seen2, stop2) = (Arc::clone(&seen), Arc::clone(&stop));
        let thread = std::thread::spawn(move || -> Result<()> {
            let sock = (|| -> Result<UdpSocket> {
                topo::enter(&path)?;
                let s = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, PORT)).context("binding the peer's UDP socket")?;
                s.set_read_timeout(Some(Duration::from_millis(20)))?;
                Ok(s)
            })();
            let sock = match sock {
                Ok(s) => {
                    let _ = ready_tx.send(Ok(()));
                    s
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return Ok(());
                }
            };
            let mut buf = [0u8; 64];
            while !stop2.load(Ordering::Relaxed) {
                match sock.recv_from(&mut buf) {
                    Ok((8, _)) => {
                        let now = Instant::now();
                        let t = u32::from_be_bytes(buf[..4].try_into().expect("4 bytes"));
                        let pod = u32::from_be_bytes(buf[4..8].try_into().expect("4 bytes"));
                        if t == tag {
                            seen2.lock().expect("not poisoned").entry(pod).or_insert(now);
                        }
                    }
                    Ok(_) => {}
                    Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut | std::io::ErrorKind::Interrupted) => {}
                    Err(e) => return Err(anyhow!("the peer's receiver failed: {e}")),
                }
            }
            Ok(())
        });
        ready_rx.recv().map_err(|_| anyhow!("the peer's receiver thread ended before it was ready"))??;
        Ok(Peer { seen, stop, thread: Some(thread) })
    }

    /// When the first datagram of pod `pod` arrived, if one did.
    pub fn first_seen(&self, pod: u32) -> Option<Instant> {
        self.seen.lock().expect("not poisoned").get(&pod).copied()
    }

    /// Waits up to `timeout` for the first datagram of pod `pod` (None on timeout); fails
    /// when interrupted.
    pub fn wait_first(&self, pod: u32, timeout: Duration) -> Result<Option<Instant>> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(t) = self.first_seen(pod) {
                return Ok(Some(t));
            }
            if Instant::now() >= end {
                return Ok(None);
            }
            crate::sys::nap(Duration::from_micros(100))?;
        }
    }

    /// Stops the receiver; its error, if it failed.
    pub fn stop(mut self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().map_or(Ok(()), |t| t.join().map_err(|_| anyhow!("the peer's receiver panicked"))?)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One pod's sender (stopped on drop).
pub struct Sender {
    stop: Arc<AtomicBool>,
    go: Arc<AtomicBool>,
    thread: Option<JoinHandle<u64>>,
}

impl Sender {
    /// Starts sending from inside namespace `ns` as pod `pod` of turn `tag` to `peer` (see
    /// the module contract); returns once the socket is open. Sends at once with `go`, else
    /// from [`Sender::go`] on.
    pub fn start(ns: &str, tag: u32, pod: u32, peer_ip: Ipv4Addr, p: &Peer, go: bool) -> Result<Sender> {
        let stop = Arc::new(AtomicBool::new(false));
        let go = Arc::new(AtomicBool::new(go));
        let go2 = Arc::clone(&go);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<()>>();
        let path: PathBuf = topo::netns_path(ns);
        let seen = Arc::clone(&p.seen);
        let stop2 = Arc::clone(&stop);
        let thread = std::thread::spawn(move || -> u64 {
            let sock = (|| -> Result<UdpSocket> {
                topo::enter(&path)?;
                UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)).context("opening the pod's UDP socket")
            })();
            let sock = match sock {
                Ok(s) => {
                    let _ = ready_tx.send(Ok(()));
                    s
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return 0;
                }
            };
            let mut msg = [0u8; 8];
            msg[..4].copy_from_slice(&tag.to_be_bytes());
            msg[4..].copy_from_slice(&pod.to_be_bytes());
            let to = SocketAddrV4::new(peer_ip, PORT);
            let end = Instant::now() + SEND_FOR;
            let mut sent = 0u64;
            while !stop2.load(Ordering::Relaxed) && Instant::now() < end && !seen.lock().expect("not poisoned").contains_key(&pod) {
                if go2.load(Ordering::Relaxed) && sock.send_to(&msg, to).is_ok() {
                    sent += 1;
                }
                std::thread::sleep(SEND_EVERY);
            }
            sent
        });
        ready_rx.recv().map_err(|_| anyhow!("the sender thread of pod {pod} ended before it was ready"))??;
        Ok(Sender { stop, go, thread: Some(thread) })
    }

    /// Starts sending (the runtime would start the pod's containers now).
    pub fn go(&self) {
        self.go.store(true, Ordering::Relaxed);
    }

    /// Stops sending; how many datagrams the kernel took (sent without error).
    pub fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().and_then(|t| t.join().ok()).unwrap_or(0)
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
