//! A blocking rtnetlink request socket (the same scheme as control/src/neighbours.rs: one
//! request, answers until the acknowledgement or the end of a dump).
use std::io;
use std::path::Path;
use std::time::Duration;

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_REQUEST};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use crate::netns::{Entered, NetnsError};

/// How long a request waits for the kernel's answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum RtnlError {
    #[error("opening a netlink socket")]
    Socket(#[source] io::Error),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("netlink {what}")]
    Io { what: &'static str, source: io::Error },
    #[error("the kernel refused {what}")]
    Kernel { what: String, source: io::Error },
    #[error("the kernel's answer to {what} cannot be read: {detail}")]
    Decode { what: String, detail: String },
}

impl RtnlError {
    /// The errno the kernel answered with, if it refused.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Kernel { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

pub struct Rtnl {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Rtnl {
    /// A socket in the current network namespace.
    pub fn open() -> Result<Self, RtnlError> {
        let mut sock = Socket::new(NETLINK_ROUTE).map_err(RtnlError::Socket)?;
        sock.bind_auto().map_err(RtnlError::Socket)?;
        sock.connect(&SocketAddr::new(0, 0)).map_err(RtnlError::Socket)?;
        let t = nix::sys::time::TimeVal::new(REQUEST_TIMEOUT.as_secs() as i64, 0);
        nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::ReceiveTimeout, &t).map_err(|e| RtnlError::Socket(e.into()))?;
        Ok(Self { sock, seq: 0, buf: Vec::with_capacity(64 * 1024) })
    }

    /// A socket in the network namespace at `netns` (the thread returns at once).
    pub fn open_in(netns: &Path) -> Result<Self, RtnlError> {
        let _inside = Entered::enter(netns)?;
        Self::open()
    }

    pub fn request(&mut self, msg: RouteNetlinkMessage, flags: u16, what: &str) -> Result<Vec<RouteNetlinkMessage>, RtnlError> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        let mut out = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut out);
        self.sock.send(&out, 0).map_err(|source| RtnlError::Io { what: "send", source })?;
        let mut answers = Vec::new();
        loop {
            self.buf.clear();
            self.sock.recv(&mut self.buf, 0).map_err(|source| RtnlError::Io { what: "receive", source })?;
            let mut off = 0;
            while off + 16 <= self.buf.len() {
                let len = u32::from_ne_bytes(self.buf[off..off + 4].try_into().expect("4 bytes")) as usize;
                if len < 16 || off + len > self.buf.len() {
                    return Err(RtnlError::Decode { what: what.into(), detail: format!("message length {len}") });
                }
                let bytes = &self.buf[off..off + len];
                off += (len + 3) & !3;
                let Ok(m) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes) else { continue };
                if m.header.sequence_number != self.seq {
                    continue;
                }
                match m.payload {
                    NetlinkPayload::Done(_) => return Ok(answers),
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(answers),
                            Some(_) => Err(RtnlError::Kernel { what: what.into(), source: e.to_io() }),
                        };
                    }
                    NetlinkPayload::InnerMessage(i) => answers.push(i),
                    _ => {}
                }
            }
        }
    }
}
