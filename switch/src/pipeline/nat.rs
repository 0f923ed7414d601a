//! Connection tracking and Service translation: the stage between anti-spoofing and routing.
//!
//! Contract, for an IPv4 packet that passed the earlier stages:
//! - TCP, UDP and SCTP flows and ICMP echo are tracked; an established flow is translated as
//!   its entry says (DNAT to the chosen backend, masquerade), in both directions, and its TCP
//!   state and idle time are updated. ICMP errors about translated flows are translated back
//!   ([`super::icmp_nat`]). Other protocols pass untracked.
//! - The first packet of a flow to a Service frontend picks a backend (the client's affinity
//!   record if it has a live one, else Maglev over the flow's hash), decides masquerade
//!   (the set says so, or hairpin: a pod reaching itself), allocates a masquerade port, and
//!   records the connection. No backend: REJECT or drop as the set says.
//! - A ClusterIP on a port or protocol no frontend has is rejected; any other address inside
//!   the Service CIDRs is dropped.
//! - On `Ok(())` the packet (possibly rewritten) goes on to routing by its destination.
use std::net::Ipv4Addr;

use crate::conntrack::{flags, tcp, CtState, Dir, EntryInit, FlowKey, InsertError};
use crate::drop_reason::DropReason;
use crate::tables::services::{BackendSet, Frontend, OnEmpty};
use crate::tables::{PortConfig, PortId, PortKind};
use crate::wire::{ParsedFrame, IPPROTO_ICMP, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP};

use super::{policy, reject, rewrite, Ctx, Verdict};

const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_ECHO_REQUEST: u8 = 8;
const ICMP_ERRORS: [u8; 5] = [3, 4, 5, 11, 12];
/// Protocol number of affinity records in the connection table (never on the wire: 253 is
/// reserved for experimentation, RFC 3692).
const AFFINITY_PROTO: u8 = 253;
const SNAT_PORT_FIRST: u16 = 32768;
const SNAT_PORTS: u16 = 28232;
const SNAT_PORT_TRIES: u16 = 64;

/// Where the packet goes from here.
#[inline]
pub fn track(buf: &mut [u8], len: usize, parsed: &ParsedFrame, in_port: PortId, port: &PortConfig, ctx: &Ctx) -> Result<(), Verdict> {
    let proto = parsed.ip_protocol;
    if !parsed.l4_parsed {
        // Non-first fragments (and unknown protocols) carry no ports to translate or track.
        if parsed.is_fragment && ctx.tables.services.in_service_cidr(parsed.dst_ip) {
            return Err(Verdict::Drop(DropReason::ServiceFragment));
        }
        return Ok(());
    }
    let key = match proto {
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP => {
            FlowKey::new(parsed.src_ip, parsed.dst_ip, parsed.src_port, parsed.dst_port, proto)
        }
        IPPROTO_ICMP if ICMP_ERRORS.contains(&parsed.icmp_type) => {
            super::icmp_nat::translate(buf, len, parsed, ctx.ct);
            return Ok(());
        }
        IPPROTO_ICMP if matches!(parsed.icmp_type, ICMP_ECHO_REQUEST | ICMP_ECHO_REPLY) => {
            FlowKey::new(parsed.src_ip, parsed.dst_ip, parsed.icmp_id, 0, proto)
        }
        _ => return Ok(()),
    };
    let h = ctx.ct.hash(&key);
    if let Some(hit) = ctx.ct.lookup_hashed(&key, h) {
        return established(buf, parsed, hit, ctx);
    }
    new_flow(buf, len, parsed, key, h, in_port, port, ctx)
}

/// A packet of a known connection: policy verdict, state, idle time, translation.
#[inline]
fn established(buf: &mut [u8], parsed: &ParsedFrame, hit: crate::conntrack::Hit, ctx: &Ctx) -> Result<(), Verdict> {
    let e = ctx.ct.entry(hit.idx);
    let reply = hit.dir == Dir::Reply;
    let word = e.state_word();
    let entry_flags = (word >> 8) as u8;
    if !policy::check_established(ctx, e, &hit.snap, (word >> 16) as u8) {
        return Err(Verdict::Drop(DropReason::PolicyDenied));
    }
    if let Some(st) = CtState::from_u8(word as u8) {
        use crate::wire::tcp_flags::{FIN, RST, SYN};
        // Fast path: data of an established TCP flow, or a UDP flow already answered.
        let steady = (st == CtState::TcpEstablished && parsed.tcp_flags & (FIN | RST | SYN) == 0)
            || st == CtState::UdpReplied;
        if !steady {
            let next = match st {
                s if parsed.ip_protocol == IPPROTO_TCP => tcp::tcp_next(s, parsed.tcp_flags, reply),
                CtState::UdpUnreplied if reply => CtState::UdpReplied,
                s => s,
            };
            let seen = if reply && entry_flags & flags::SEEN_REPLY == 0 { flags::SEEN_REPLY } else { 0 };
            if next != st || seen != 0 {
                e.transition(st, next, seen);
            }
        } else if reply && entry_flags & flags::SEEN_REPLY == 0 {
            e.transition(st, st, flags::SEEN_REPLY);
        }
    }
    e.touch(ctx.now);
    if entry_flags & (flags::DNAT | flags::SNAT) != 0 && parsed.ip_protocol != IPPROTO_ICMP {
        let s = &hit.snap;
        let to = match hit.dir {
            Dir::Orig => s.reply.reverse(),
            Dir::Reply => s.orig.reverse(),
        };
        rewrite::to_tuple(buf, parsed, &to);
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn new_flow(
    buf: &mut [u8],
    len: usize,
    parsed: &ParsedFrame,
    key: FlowKey,
    h: u64,
    in_port: PortId,
    port: &PortConfig,
    ctx: &Ctx,
) -> Result<(), Verdict> {
    let svc = &ctx.tables.services;
    let state = match key.proto {
        IPPROTO_TCP => match tcp::tcp_initial(parsed.tcp_flags) {
            Some(s) => s,
            None if svc.frontend(parsed.dst_ip, key.dport, key.proto).is_some() => {
                return Err(Verdict::Drop(DropReason::CtInvalid));
            }
            None => return Ok(()), // a stray RST between pods: forward, do not track
        },
        IPPROTO_UDP => CtState::UdpUnreplied,
        IPPROTO_ICMP => CtState::Icmp,
        _ => CtState::Other,
    };
    let from_uplink = port.kind == PortKind::Uplink;
    let mut init = EntryInit {
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
    };
    let frontend = if key.proto != IPPROTO_ICMP { svc.lookup(parsed.dst_ip, key.dport, key.proto) } else { None };
    if let Some((index, f)) = frontend {
        if from_uplink && !f.source_allowed(parsed.src_ip) {
            return Err(Verdict::Drop(DropReason::LbSourceDenied));
        }
        if parsed.is_fragment && key.proto == IPPROTO_SCTP {
            return Err(Verdict::Drop(DropReason::ServiceFragment));
        }
        let set = if from_uplink { &f.external } else { &f.internal };
        let Some((backend_ip, backend_port, endpoint)) = choose_backend(f, set, parsed.src_ip, h, ctx) else {
            return Err(match set.on_empty {
                OnEmpty::Reject => reject::reject(buf, len, parsed, in_port, port),
                OnEmpty::Drop => Verdict::Drop(DropReason::NoLocalEndpoint),
            });
        };
        let hairpin = backend_ip == parsed.src_ip;
        let masquerade = set.masquerade || hairpin;
        let mut reply = FlowKey { src: u32::from(backend_ip), dst: key.src, sport: backend_port, dport: key.sport, proto: key.proto };
        init.flags |= flags::DNAT;
        if masquerade {
            let Some(snat) = svc.snat_ip else { return Err(Verdict::Drop(DropReason::NoSnatAddress)) };
            reply.dst = u32::from(snat);
            reply.dport = free_snat_port(&reply, h, ctx).ok_or(Verdict::Drop(DropReason::SnatPortsExhausted))?;
            init.flags |= flags::SNAT;
        }
        init.reply = reply;
        init.frontend = index + 1;
        init.endpoint = endpoint;
    } else if svc.in_service_cidr(parsed.dst_ip) {
        if svc.cluster_ips.contains(&u32::from(parsed.dst_ip)) {
            return Err(reject::reject(buf, len, parsed, in_port, port));
        }
        return Err(Verdict::Drop(DropReason::ServiceIpUnallocated));
    }
    if init.flags & flags::SNAT == 0 && key.proto != IPPROTO_ICMP && ctx.ct.lookup(&init.reply).is_some() {
        // Another connection already answers on this reply tuple (the client used the same
        // source port toward another Service with this backend, or toward the backend
        // directly): keep the client's address but give this connection another source
        // port, as netfilter does on such a clash, so both stay apart here and at the backend.
        init.reply.dport = free_snat_port(&init.reply, h, ctx).ok_or(Verdict::Drop(DropReason::SnatPortsExhausted))?;
        init.flags |= flags::SNAT;
    }
    // NetworkPolicy, on the translated destination (the backend pod and its port).
    let decision = policy::judge_new(ctx, parsed.src_ip, key.sport, key.dst, key.dport, init.reply.src, init.reply.sport, key.proto);
    if !decision.allowed() {
        return Err(Verdict::Drop(DropReason::PolicyDenied));
    }
    init.verdict = policy::VERDICT_ALLOW;
    init.policy_epoch = ctx.tables.policy.epoch;
    init.policy_rule = policy::rule_word(decision);
    match ctx.ct.insert(&init, ctx.now) {
        Ok(_) => {}
        Err(InsertError::Full | InsertError::NoSlot) => return Err(Verdict::Drop(DropReason::ConntrackFull)),
    }
    if init.flags & (flags::DNAT | flags::SNAT) != 0 {
        rewrite::to_tuple(buf, parsed, &init.reply.reverse());
    }
    Ok(())
}

/// The client's affinity backend if it is still in the set, else Maglev's pick (recording the
/// affinity when the frontend has one). Returns (address, port, endpoint id).
fn choose_backend(f: &Frontend, set: &BackendSet, client: Ipv4Addr, h: u64, ctx: &Ctx) -> Option<(Ipv4Addr, u16, u32)> {
    let Some(timeout_s) = f.affinity_timeout_s else {
        let b = set.pick(h)?;
        return Some((b.ip, b.port, b.endpoint_id));
    };
    let aff_key = FlowKey { src: u32::from(client), dst: f.key.ip, sport: f.key.proto as u16, dport: f.key.port, proto: AFFINITY_PROTO };
    if let Some(hit) = ctx.ct.lookup(&aff_key) {
        if let Some(b) = set.backends.iter().find(|b| b.endpoint_id == hit.snap.endpoint) {
            ctx.ct.entry(hit.idx).touch(ctx.now);
            return Some((b.ip, b.port, b.endpoint_id));
        }
        ctx.ct.remove(hit.idx); // its backend is gone: choose again
    }
    // Affinity is per client: hash the client alone, so that concurrent first connections of
    // one client agree even before the record exists.
    let b = set.pick(ctx.ct.hash(&aff_key))?;
    let rec = EntryInit {
        orig: aff_key,
        reply: aff_key,
        state: CtState::Affinity,
        flags: 0,
        frontend: 0,
        endpoint: b.endpoint_id,
        policy_epoch: 0,
        policy_rule: 0,
        verdict: 0,
        timeout_ms: timeout_s.saturating_mul(1000),
    };
    let _ = ctx.ct.insert(&rec, ctx.now); // a full table only costs stickiness
    Some((b.ip, b.port, b.endpoint_id))
}

/// A masquerade port for which the reply key `reply` (with `dport` to be chosen) is unused.
fn free_snat_port(reply: &FlowKey, h: u64, ctx: &Ctx) -> Option<u16> {
    let start = (h >> 17) as u16 % SNAT_PORTS;
    for i in 0..SNAT_PORT_TRIES {
        let p = SNAT_PORT_FIRST + (start.wrapping_add(i.wrapping_mul(7919)) % SNAT_PORTS);
        let candidate = FlowKey { dport: p, ..*reply };
        if ctx.ct.lookup(&candidate).is_none() {
            return Some(p);
        }
    }
    None
}
