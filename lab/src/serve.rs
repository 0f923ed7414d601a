//! The pod server (`podswitch lab serve`, hidden): what runs inside each pod's namespace.
//!
//! Contract:
//! - Serves every given port on 0.0.0.0: TCP (`--tcp PORT`) and UDP (`--udp PORT`). SCTP ports
//!   (`--sctp PORT`) are logged as not served (this kernel cannot terminate SCTP).
//! - Every TCP connection gets the line `NAMESPACE/NAME CLIENTIP:CLIENTPORT\n` (the client
//!   address as this server sees it), then the server shuts down its sending side, drains
//!   what the client sent (up to 1 s) and closes. Every UDP datagram is answered to its sender
//!   with the same line.
//! - Once every socket is bound it writes its pid to `--ready-file` (atomically), so the lab
//!   knows the pod serves. A port that cannot be bound is an error (exit 1) before that.
//! - It runs until killed; it logs one line per port at start and nothing per request.
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use super::state::write_atomic;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The pod this server plays, NAMESPACE/NAME (the name in every answer).
    #[arg(long)]
    pub pod: String,
    /// A TCP port to serve (repeatable).
    #[arg(long)]
    pub tcp: Vec<u16>,
    /// A UDP port to serve (repeatable).
    #[arg(long)]
    pub udp: Vec<u16>,
    /// An SCTP port (repeatable): noted, not served.
    #[arg(long)]
    pub sctp: Vec<u16>,
    /// Where to write this process's pid once every socket is bound.
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
}

/// The answer to a client at `client`.
pub fn answer(pod: &str, client: SocketAddr) -> String {
    format!("{pod} {client}\n")
}

pub fn run(a: ServeArgs) -> anyhow::Result<i32> {
    let mut tcp = Vec::new();
    for port in &a.tcp {
        tcp.push(
            TcpListener::bind(("0.0.0.0", *port))
                .with_context(|| format!("pod {}: cannot listen on TCP port {port}", a.pod))?,
        );
    }
    let mut udp = Vec::new();
    for port in &a.udp {
        udp.push(
            UdpSocket::bind(("0.0.0.0", *port))
                .with_context(|| format!("pod {}: cannot bind UDP port {port}", a.pod))?,
        );
    }
    for port in &a.sctp {
        eprintln!("pod {}: SCTP port {port} is not served (no SCTP sockets in this kernel)", a.pod);
    }
    eprintln!("pod {}: serving tcp {:?} udp {:?} (pid {})", a.pod, a.tcp, a.udp, std::process::id());
    let mut threads = Vec::new();
    for l in tcp {
        let pod = a.pod.clone();
        threads.push(std::thread::spawn(move || serve_tcp(&pod, l)));
    }
    for s in udp {
        let pod = a.pod.clone();
        threads.push(std::thread::spawn(move || serve_udp(&pod, s)));
    }
    if let Some(f) = &a.ready_file {
        write_atomic(f, format!("{}\n", std::process::id()).as_bytes())?;
    }
    if threads.is_empty() {
        loop {
            std::thread::park();
        }
    }
    for t in threads {
        let _ = t.join();
    }
    anyhow::bail!("pod {}: every server thread ended", a.pod)
}

fn serve_tcp(pod: &str, l: TcpListener) {
    loop {
        match l.accept() {
            Ok((s, peer)) => {
                let line = answer(pod, peer);
                std::thread::spawn(move || reply_tcp(s, line));
            }
            Err(e) => {
                eprintln!("pod {pod}: accept: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn reply_tcp(mut s: TcpStream, line: String) {
    let _ = s.write_all(line.as_bytes());
    let _ = s.shutdown(Shutdown::Write);
    // Drain what the client sent, so closing does not turn into a reset.
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
    }
}

fn serve_udp(pod: &str, s: UdpSocket) {
    let mut buf = [0u8; 65536];
    loop {
        match s.recv_from(&mut buf) {
            Ok((_, peer)) => {
                let _ = s.send_to(answer(pod, peer).as_bytes(), peer);
            }
            Err(e) => {
                // e.g. ECONNREFUSED left by an ICMP error for an earlier reply: keep serving.
                if e.kind() != std::io::ErrorKind::ConnectionRefused {
                    eprintln!("pod {pod}: recv: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }
}
