//! SCTP association states as the tracker follows them (a small model of Linux's
//! nf_conntrack_proto_sctp), by the type of each packet's first chunk.
//!
//! Contract: INIT opens (`COOKIE_WAIT`); COOKIE_ECHO moves it to `COOKIE_ECHOED` and the other
//! side's COOKIE_ACK establishes it; SHUTDOWN or SHUTDOWN_ACK from either side is `SHUTDOWN`;
//! SHUTDOWN_COMPLETE or ABORT closes it (`CLOSED`, short-lived so the ports can be reused at
//! once by a new INIT). A packet that is not an INIT opens an association picked up in the
//! middle (after a restart) as `ESTABLISHED`, as TCP is picked up. Packets are never dropped
//! for an unexpected chunk; the state only decides how long an idle entry lives (Linux's
//! timeouts: [`super::Timeouts`]). An established association sends HEARTBEATs (every 30 s by
//! default), so its 210 s idle timeout outlives a quiet but healthy association.
use crate::wire::sctp::chunk;

use super::CtState;

/// The state a new association's entry starts in, from the first chunk of its first packet.
pub fn sctp_initial(first_chunk: u8) -> CtState {
    if first_chunk == chunk::INIT {
        CtState::SctpCookieWait
    } else {
        CtState::SctpEstablished
    }
}

/// The next state after a packet whose first chunk is `first_chunk`, in direction `reply`
/// (false: the opener's).
pub fn sctp_next(state: CtState, first_chunk: u8, reply: bool) -> CtState {
    use CtState::*;
    match first_chunk {
        chunk::ABORT | chunk::SHUTDOWN_COMPLETE => SctpClosed,
        chunk::SHUTDOWN | chunk::SHUTDOWN_ACK => SctpShutdown,
        chunk::INIT if state == SctpClosed && !reply => SctpCookieWait,
        chunk::COOKIE_ECHO if matches!(state, SctpCookieWait | SctpCookieEchoed) => SctpCookieEchoed,
        chunk::COOKIE_ACK if state == SctpCookieEchoed => SctpEstablished,
        _ => state,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conntrack::Timeouts;

    #[test]
    fn an_association_from_init_to_shutdown_complete() {
        let t = Timeouts::default();
        let mut s = sctp_initial(chunk::INIT);
        assert_eq!((s.name(), t.of(s)), ("COOKIE_WAIT", 3_000));
        s = sctp_next(s, chunk::INIT_ACK, true);
        assert_eq!(s, CtState::SctpCookieWait);
        s = sctp_next(s, chunk::COOKIE_ECHO, false);
        assert_eq!((s.name(), t.of(s)), ("COOKIE_ECHOED", 3_000));
        s = sctp_next(s, chunk::COOKIE_ACK, true);
        assert_eq!((s.name(), t.of(s)), ("ESTABLISHED", 210_000));
        for c in [chunk::DATA, 3 /* SACK */, 4 /* HEARTBEAT */, 5 /* HEARTBEAT ACK */, chunk::COOKIE_ACK, chunk::INIT] {
            assert_eq!(sctp_next(s, c, false), CtState::SctpEstablished, "chunk {c}");
        }
        s = sctp_next(s, chunk::SHUTDOWN, false);
        assert_eq!((s.name(), t.of(s)), ("SHUTDOWN", 3_000));
        s = sctp_next(s, chunk::SHUTDOWN_ACK, true);
        assert_eq!(s, CtState::SctpShutdown);
        s = sctp_next(s, chunk::SHUTDOWN_COMPLETE, false);
        assert_eq!((s.name(), t.of(s)), ("CLOSED", 10_000));
        // The same ports again: a new INIT from the opener starts over.
        assert_eq!(sctp_next(s, chunk::INIT, false), CtState::SctpCookieWait);
    }

    #[test]
    fn abort_closes_and_a_mid_association_packet_is_picked_up_established() {
        for s in [CtState::SctpCookieWait, CtState::SctpCookieEchoed, CtState::SctpEstablished, CtState::SctpShutdown] {
            assert_eq!(sctp_next(s, chunk::ABORT, true), CtState::SctpClosed);
        }
        assert_eq!(sctp_initial(chunk::DATA), CtState::SctpEstablished);
        assert_eq!(sctp_initial(4), CtState::SctpEstablished);
        // COOKIE_ACK out of turn does not establish a half-open association.
        assert_eq!(sctp_next(CtState::SctpCookieWait, chunk::COOKIE_ACK, true), CtState::SctpCookieWait);
    }
}
