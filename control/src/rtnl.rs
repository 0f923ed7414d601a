//! A blocking rtnetlink request socket: one request, its answers until the acknowledgement
//! (`NLM_F_ACK`) or the end of a dump. The neighbour tracker ([`crate::neighbours`]) and the
//! CNI plugin (crate `cni/`, which opens it inside a pod's namespace) use it.
//!
//! Contract: [`Rtnl::request`] sends one message and returns the inner messages of the answers
//! with its sequence number; a kernel error answer is [`RtnlError::Kernel`] (its errno by
//! [`RtnlError::errno`]); a message that cannot be decoded is skipped (logged at debug), a
//! length that does not fit is [`RtnlError::Decode`]. A receive waits at most
//! [`REQUEST_TIMEOUT`].
use std::io;
use std::time::Duration;

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_REQUEST};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// How long a request waits for the kernel's answer (the kernel answers at once; this only
/// keeps a stop from waiting forever).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum RtnlError {
    #[error("opening a netlink socket")]
    Socket(#[source] io::Error),
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

/// Sets how long a receive on `sock` waits.
pub fn set_receive_timeout(sock: &Socket, t: Duration) -> io::Result<()> {
    let timeout = nix::sys::time::TimeVal::new(t.as_secs() as i64, i64::from(t.subsec_micros()));
    nix::sys::socket::setsockopt(sock, nix::sys::socket::sockopt::ReceiveTimeout, &timeout).map_err(io::Error::from)
}

/// See the module contract.
pub struct Rtnl {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Rtnl {
    /// A socket in the calling thread's network namespace.
    pub fn open() -> Result<Self, RtnlError> {
        let mut sock = Socket::new(NETLINK_ROUTE).map_err(RtnlError::Socket)?;
        sock.bind_auto().map_err(RtnlError::Socket)?;
        sock.connect(&SocketAddr::new(0, 0)).map_err(RtnlError::Socket)?;
        set_receive_timeout(&sock, REQUEST_TIMEOUT).map_err(RtnlError::Socket)?;
        Ok(Self { sock, seq: 0, buf: Vec::with_capacity(64 * 1024) })
    }

    /// Sends `msg` with `flags` (besides `NLM_F_REQUEST`); `what` names it in errors.
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
                let m = match NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes) {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::debug!("skipping a netlink message: {e}");
                        continue;
                    }
                };
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
