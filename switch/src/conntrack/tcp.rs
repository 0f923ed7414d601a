//! The tracker's connection states (TCP's follow here; SCTP's in [`super::sctp`]), and the
//! timeout of every state.
//!
//! Contract: a deliberately small model of RFC 793 (the one Linux conntrack uses, without
//! window tracking): SYN opens, SYN-ACK from the other side and the final ACK establish, FINs
//! close, RST ends at once. Packets never get dropped for an "impossible" transition; the state
//! only decides how long an idle entry lives.
//!
//! Closing, per side: a FIN from one side is `FIN_WAIT` until the other side acknowledges it,
//! then `CLOSE_WAIT`: the connection is half-closed and the other side may go on sending for as
//! long as it likes (kube-proxy sets Linux's `nf_conntrack_tcp_timeout_close_wait` to 1 h for
//! this: `--conntrack-tcp-timeout-close-wait`). The other side's FIN ends it (`TIME_WAIT`). The
//! states remember which side closed first, so that a retransmitted FIN from the same side does
//! not end a half-closed connection.
use crate::wire::tcp_flags::{ACK, FIN, RST, SYN};

/// Connection state, stored in the entry's state byte. 0 is a free entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[repr(u8)]
pub enum CtState {
    TcpSynSent = 1,
    TcpSynRecv = 2,
    TcpEstablished = 3,
    TcpFinWait = 4,
    TcpTimeWait = 5,
    TcpClose = 6,
    UdpUnreplied = 7,
    UdpReplied = 8,
    Icmp = 9,
    /// Other trackable protocols: no state machine, one timeout.
    Other = 10,
    /// Not a connection: a `sessionAffinity: ClientIP` record (client, Service port) ->
    /// endpoint, with its own timeout in the entry.
    Affinity = 11,
    /// As [`CtState::TcpFinWait`], the replier having sent the FIN.
    TcpFinWaitReply = 12,
    /// The opener's FIN was acknowledged: half-closed, the replier may still send.
    TcpCloseWait = 13,
    /// The replier's FIN was acknowledged: half-closed, the opener may still send.
    TcpCloseWaitReply = 14,
    /// SCTP: INIT seen.
    SctpCookieWait = 15,
    /// SCTP: COOKIE_ECHO seen.
    SctpCookieEchoed = 16,
    /// SCTP: COOKIE_ACK seen (or picked up in the middle).
    SctpEstablished = 17,
    /// SCTP: SHUTDOWN or SHUTDOWN_ACK seen.
    SctpShutdown = 18,
    /// SCTP: SHUTDOWN_COMPLETE or ABORT seen.
    SctpClosed = 19,
    /// Not a connection: a fragmented datagram's record (its later fragments follow its
    /// first one's addresses), with its own timeout in the entry.
    Fragments = 20,
}

impl CtState {
    pub fn from_u8(v: u8) -> Option<Self> {
        use CtState::*;
        Some(match v {
            1 => TcpSynSent,
            2 => TcpSynRecv,
            3 => TcpEstablished,
            4 => TcpFinWait,
            5 => TcpTimeWait,
            6 => TcpClose,
            7 => UdpUnreplied,
            8 => UdpReplied,
            9 => Icmp,
            10 => Other,
            11 => Affinity,
            12 => TcpFinWaitReply,
            13 => TcpCloseWait,
            14 => TcpCloseWaitReply,
            15 => SctpCookieWait,
            16 => SctpCookieEchoed,
            17 => SctpEstablished,
            18 => SctpShutdown,
            19 => SctpClosed,
            20 => Fragments,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        use CtState::*;
        match self {
            TcpSynSent => "SYN_SENT",
            TcpSynRecv => "SYN_RECV",
            TcpEstablished => "ESTABLISHED",
            TcpFinWait | TcpFinWaitReply => "FIN_WAIT",
            TcpCloseWait | TcpCloseWaitReply => "CLOSE_WAIT",
            TcpTimeWait => "TIME_WAIT",
            TcpClose => "CLOSE",
            UdpUnreplied => "UNREPLIED",
            UdpReplied => "ASSURED",
            Icmp => "ICMP",
            Other => "OTHER",
            Affinity => "AFFINITY",
            SctpCookieWait => "COOKIE_WAIT",
            SctpCookieEchoed => "COOKIE_ECHOED",
            SctpEstablished => "ESTABLISHED",
            SctpShutdown => "SHUTDOWN",
            SctpClosed => "CLOSED",
            Fragments => "FRAGMENTS",
        }
    }

    pub fn is_udp(self) -> bool {
        matches!(self, CtState::UdpUnreplied | CtState::UdpReplied)
    }
}

/// Idle timeouts in milliseconds, per state (Linux's defaults, with kube-proxy's 24 h for
/// established TCP and 1 h for half-closed TCP; SCTP's are nf_conntrack_proto_sctp's).
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub tcp_syn_sent: u32,
    pub tcp_syn_recv: u32,
    pub tcp_established: u32,
    pub tcp_fin_wait: u32,
    pub tcp_close_wait: u32,
    pub tcp_time_wait: u32,
    pub tcp_close: u32,
    pub udp_unreplied: u32,
    pub udp_replied: u32,
    pub icmp: u32,
    pub other: u32,
    pub sctp_cookie_wait: u32,
    pub sctp_cookie_echoed: u32,
    pub sctp_established: u32,
    pub sctp_shutdown: u32,
    pub sctp_closed: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            tcp_syn_sent: 120_000,
            tcp_syn_recv: 60_000,
            tcp_established: 86_400_000,
            tcp_fin_wait: 120_000,
            tcp_close_wait: 3_600_000,
            tcp_time_wait: 120_000,
            tcp_close: 10_000,
            udp_unreplied: 30_000,
            udp_replied: 120_000,
            icmp: 30_000,
            other: 120_000,
            sctp_cookie_wait: 3_000,
            sctp_cookie_echoed: 3_000,
            sctp_established: 210_000,
            sctp_shutdown: 3_000,
            sctp_closed: 10_000,
        }
    }
}

impl Timeouts {
    pub fn of(&self, s: CtState) -> u32 {
        use CtState::*;
        match s {
            TcpSynSent => self.tcp_syn_sent,
            TcpSynRecv => self.tcp_syn_recv,
            TcpEstablished => self.tcp_established,
            TcpFinWait | TcpFinWaitReply => self.tcp_fin_wait,
            TcpCloseWait | TcpCloseWaitReply => self.tcp_close_wait,
            TcpTimeWait => self.tcp_time_wait,
            TcpClose => self.tcp_close,
            UdpUnreplied => self.udp_unreplied,
            UdpReplied => self.udp_replied,
            Icmp => self.icmp,
            Other => self.other,
            SctpCookieWait => self.sctp_cookie_wait,
            SctpCookieEchoed => self.sctp_cookie_echoed,
            SctpEstablished => self.sctp_established,
            SctpShutdown => self.sctp_shutdown,
            SctpClosed => self.sctp_closed,
            // The entry carries its own (see `Entry::timeout_override`).
            Affinity | Fragments => u32::MAX / 2,
        }
    }
}

/// The state a new TCP flow starts in, from its first packet's flags; None for a packet that
/// must not open a connection (a lone RST).
pub fn tcp_initial(flags: u8) -> Option<CtState> {
    if flags & RST != 0 {
        None
    } else if flags & SYN != 0 && flags & ACK == 0 {
        Some(CtState::TcpSynSent)
    } else {
        // Picked up mid-stream (after a restart), as Linux does with nf_conntrack_tcp_loose.
        Some(CtState::TcpEstablished)
    }
}

/// The next state after a packet with `flags` in direction `reply` (false: the opener's).
pub fn tcp_next(state: CtState, flags: u8, reply: bool) -> CtState {
    use CtState::*;
    if flags & RST != 0 {
        return TcpClose;
    }
    match state {
        TcpSynSent if reply && flags & SYN != 0 && flags & ACK != 0 => TcpSynRecv,
        TcpSynRecv if !reply && flags & ACK != 0 && flags & SYN == 0 => TcpEstablished,
        TcpEstablished if flags & FIN != 0 => {
            if reply {
                TcpFinWaitReply
            } else {
                TcpFinWait
            }
        }
        // The other side: its FIN closes the second half, its ACK acknowledges the first.
        TcpFinWait | TcpCloseWait if reply && flags & FIN != 0 => TcpTimeWait,
        TcpFinWaitReply | TcpCloseWaitReply if !reply && flags & FIN != 0 => TcpTimeWait,
        TcpFinWait if reply && flags & ACK != 0 => TcpCloseWait,
        TcpFinWaitReply if !reply && flags & ACK != 0 => TcpCloseWaitReply,
        TcpClose if flags & SYN != 0 && !reply => TcpSynSent,
        TcpTimeWait if flags & SYN != 0 && flags & ACK == 0 && !reply => TcpSynSent,
        s => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_data_and_close() {
        let mut s = tcp_initial(SYN).unwrap();
        assert_eq!(s, CtState::TcpSynSent);
        s = tcp_next(s, SYN | ACK, true);
        assert_eq!(s, CtState::TcpSynRecv);
        s = tcp_next(s, ACK, false);
        assert_eq!(s, CtState::TcpEstablished);
        s = tcp_next(s, ACK, true);
        assert_eq!(s, CtState::TcpEstablished);
        s = tcp_next(s, FIN | ACK, false);
        assert_eq!(s, CtState::TcpFinWait);
        s = tcp_next(s, FIN | ACK, true);
        assert_eq!(s, CtState::TcpTimeWait);
        // A half-close by either side: CLOSE_WAIT once acknowledged, for as long as the other
        // side sends; a retransmitted FIN of the closing side changes nothing; the other
        // side's FIN ends it.
        for (closer, other) in [(false, true), (true, false)] {
            let mut s = tcp_next(CtState::TcpEstablished, FIN | ACK, closer);
            assert_eq!(s.name(), "FIN_WAIT");
            s = tcp_next(s, FIN | ACK, closer);
            assert_eq!(s.name(), "FIN_WAIT", "retransmitted FIN");
            s = tcp_next(s, ACK, other);
            assert_eq!(s.name(), "CLOSE_WAIT");
            for _ in 0..3 {
                s = tcp_next(s, ACK, other); // data one way
                s = tcp_next(s, ACK, closer); // its acknowledgements
                s = tcp_next(s, FIN | ACK, closer);
                assert_eq!(s.name(), "CLOSE_WAIT");
            }
            assert_eq!(Timeouts::default().of(s), 3_600_000, "kube-proxy's close-wait timeout");
            assert_eq!(tcp_next(s, FIN | ACK, other), CtState::TcpTimeWait);
        }
        assert_eq!(tcp_next(CtState::TcpEstablished, RST, true), CtState::TcpClose);
        assert_eq!(tcp_initial(RST), None);
        assert_eq!(tcp_initial(ACK), Some(CtState::TcpEstablished));
        for v in 1..=20 {
            assert_eq!(CtState::from_u8(v).unwrap() as u8, v);
        }
        assert!(CtState::from_u8(0).is_none());
    }
}
