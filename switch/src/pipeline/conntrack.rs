//! The connection-tracking stage: which connection a packet belongs to, its state and idle
//! time, and recording a new one once the later stages have decided how it is translated.
//!
//! Contract:
//! - [`lookup`] classifies a packet: TCP, UDP and SCTP flows, ICMP echo and every other
//!   protocol (by addresses) are tracked ([`Lookup::Tracked`]: its key and hash); ICMP errors
//!   go to [`super::icmp_translate`] ([`Lookup::IcmpError`]); later fragments (offset > 0)
//!   follow their datagram's first fragment ([`Lookup::LaterFragment`], [`super::fragments`]).
//!   [`find`] then finds a tracked packet's connection, if it has
//!   one (a [`Hit`]), or it is the first packet of a new one. The hit is returned by itself,
//!   not inside [`Lookup`]: it is the size of a whole connection snapshot, and carried through
//!   an enum and a `Result` it was copied three times per packet.
//! - [`advance`] moves a known connection's TCP/UDP state, notes the reply direction and its
//!   idle time, and says how the packet is to be rewritten (the connection's NAT), if at all.
//! - [`initial_state`] is the state a new connection starts in; a TCP segment that cannot
//!   open one (a lone RST) is forwarded untracked between pods and dropped to a Service.
//! - [`record`] inserts the new connection (the table full: dropped).
//!
//! The state word is read once per packet and decoded through
//! [`StateWord`](crate::conntrack::StateWord).
use crate::conntrack::{flags, sctp, tcp, CtState, Dir, Entry, EntryInit, FlowKey, Hit, InsertError, StateWord};
use crate::counters::Counter;
use crate::drop_reason::DropReason;
use crate::wire::tcp_flags::{FIN, RST, SYN};
use crate::wire::{icmpv4, ParsedFrame, IPPROTO_ICMP, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP};

use super::Ctx;

/// What this stage did (on the full path; the fast path counts nothing per packet).
#[derive(Debug, Default)]
pub struct Counters {
    /// Connections recorded.
    pub created: Counter,
    /// Packets of known connections that took the full path (state changes, first replies,
    /// ICMP echo, re-judged policy).
    pub known: Counter,
    /// Packets forwarded without tracking (a stray RST between pods).
    pub untracked: Counter,
}

/// Which connection, if any, a packet belongs to.
#[derive(Debug, Clone, Copy)]
pub enum Lookup {
    /// An ICMP error: translated back if it is about a translated connection.
    IcmpError,
    /// A later fragment of a datagram (offset > 0): see [`super::fragments`].
    LaterFragment,
    /// A tracked packet: its connection's key in this direction and the key's hash in the
    /// table ([`find`] looks it up).
    Tracked { key: FlowKey, hash: u64 },
}

#[inline(always)]
pub fn lookup(parsed: &ParsedFrame, ctx: &Ctx) -> Lookup {
    let proto = parsed.ip_protocol;
    if parsed.fragment_offset != 0 {
        // A later fragment carries no ports: it follows its datagram's first fragment.
        return Lookup::LaterFragment;
    }
    let key = match proto {
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP => {
            FlowKey::new(parsed.src_ip, parsed.dst_ip, parsed.src_port, parsed.dst_port, proto)
        }
        IPPROTO_ICMP if icmpv4::is_error_type(parsed.icmp_type) => return Lookup::IcmpError,
        IPPROTO_ICMP if matches!(parsed.icmp_type, icmpv4::TYPE_ECHO_REQUEST | icmpv4::TYPE_ECHO_REPLY) => {
            FlowKey::new(parsed.src_ip, parsed.dst_ip, parsed.icmp_id, 0, proto)
        }
        // Every other protocol (GRE, ESP, IPIP, ICMP's informational types, ...): by its
        // addresses, as netfilter's generic tracker, so that NetworkPolicy judges its first
        // packet and the answers belong to it. Never translated (they have no ports).
        _ => FlowKey::new(parsed.src_ip, parsed.dst_ip, 0, 0, proto),
    };
    Lookup::Tracked { key, hash: ctx.ct.hash(&key) }
}

/// The connection of a tracked packet ([`Lookup::Tracked`]), or None: the packet opens a new
/// one.
#[inline(always)]
pub fn find(key: &FlowKey, hash: u64, ctx: &Ctx) -> Option<Hit> {
    ctx.ct.lookup_hashed(key, hash)
}

/// A packet of a known connection (its policy verdict already checked): state, idle time, and
/// the tuple to rewrite the packet to when the connection is translated.
#[inline(always)]
pub fn advance(parsed: &ParsedFrame, e: &Entry, word: StateWord, hit: &Hit, ctx: &Ctx) -> Option<FlowKey> {
    ctx.stages.conntrack.known.add(1);
    let reply = hit.dir == Dir::Reply;
    let seen_reply = word.has(flags::SEEN_REPLY);
    if let Some(st) = word.state() {
        // Data of an established TCP flow, or a UDP flow already answered: no state change.
        let steady = (st == CtState::TcpEstablished && parsed.tcp_flags & (FIN | RST | SYN) == 0)
            || st == CtState::UdpReplied;
        if !steady {
            let next = match st {
                s if parsed.ip_protocol == IPPROTO_TCP => tcp::tcp_next(s, parsed.tcp_flags, reply),
                s if parsed.ip_protocol == IPPROTO_SCTP => sctp::sctp_next(s, parsed.sctp_chunk, reply),
                CtState::UdpUnreplied if reply => CtState::UdpReplied,
                s => s,
            };
            let seen = if reply && !seen_reply { flags::SEEN_REPLY } else { 0 };
            if next != st || seen != 0 {
                e.transition(st, next, seen);
            }
        } else if reply && !seen_reply {
            e.transition(st, st, flags::SEEN_REPLY);
        }
    }
    e.touch(ctx.now);
    // Of ICMP, only echo is ever translated (masqueraded pings; its identifier is its port):
    // another ICMP message that shares an echo's key (identifier 0) is left as it is.
    if !word.has(flags::DNAT | flags::SNAT)
        || (parsed.ip_protocol == IPPROTO_ICMP && !matches!(parsed.icmp_type, icmpv4::TYPE_ECHO_REQUEST | icmpv4::TYPE_ECHO_REPLY))
    {
        return None;
    }
    let s = &hit.snap;
    Some(match hit.dir {
        Dir::Orig => s.reply.reverse(),
        Dir::Reply => s.orig.reverse(),
    })
}

/// The state a new connection starts in, or `Ok(None)` for a TCP segment that cannot open
/// one between pods (forwarded untracked); to a Service such a segment is invalid.
#[inline(always)]
pub fn initial_state(parsed: &ParsedFrame, key: &FlowKey, ctx: &Ctx) -> Result<Option<CtState>, DropReason> {
    Ok(Some(match key.proto {
        IPPROTO_TCP => match tcp::tcp_initial(parsed.tcp_flags) {
            Some(s) => s,
            None if ctx.tables.services.frontend(parsed.dst_ip, key.dport, key.proto).is_some() => {
                return Err(DropReason::CtInvalid);
            }
            None => {
                ctx.stages.conntrack.untracked.add(1);
                return Ok(None);
            }
        },
        IPPROTO_UDP => CtState::UdpUnreplied,
        IPPROTO_ICMP => CtState::Icmp,
        IPPROTO_SCTP => sctp::sctp_initial(parsed.sctp_chunk),
        _ => CtState::Other,
    }))
}

/// The entry of a new, untranslated connection `key` (the later stages add the translation
/// and the policy verdict).
#[inline(always)]
pub fn entry_for(key: FlowKey, state: CtState, from_uplink: bool) -> EntryInit {
    EntryInit {
        orig: key,
        reply: key.reverse(),
        state,
        flags: if from_uplink { flags::FROM_UPLINK } else { 0 },
        frontend: 0,
        endpoint: u32::MAX,
        policy_epoch: 0,
        policy_rule: 0,
        verdict: 0,
        timeout_ms: 0,
    }
}

/// Records the new connection.
#[inline(always)]
pub fn record(init: &EntryInit, ctx: &Ctx) -> Result<(), DropReason> {
    match ctx.ct.insert(init, ctx.now) {
        Ok(_) => {
            ctx.stages.conntrack.created.add(1);
            Ok(())
        }
        Err(InsertError::Full | InsertError::NoSlot) => Err(DropReason::ConntrackFull),
    }
}
