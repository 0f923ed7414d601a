//! Load balancing: whether a new connection is addressed to a Service, and which backend it
//! gets.
//!
//! Contract of [`translate`], for the first packet of a tracked connection (not ICMP):
//! - To a Service frontend (VIP, port, protocol): a client outside the LoadBalancer's source
//!   ranges is dropped, wherever it comes from (the uplink, a pod, the node's own stack, a
//!   tunnel), as kube-proxy's firewall chain sees every packet to a LoadBalancer IP; an SCTP fragment is dropped (it cannot be translated); otherwise the
//!   backend is the client's affinity record's if the frontend has affinity and the record's
//!   endpoint is still in the set (one record per client and Service port, whichever of the
//!   port's frontends the client used), else Maglev's pick over the flow's hash (over the client
//!   alone with affinity, recording it). The backend set is the external one for connections
//!   from the uplink, else the internal one. Masquerade is asked when the set says so, or for
//!   hairpin (a pod reaching itself through its Service). No backend: REJECT or drop, as the
//!   set says.
//! - A ClusterIP on a port or protocol no frontend has is rejected; any other address inside
//!   the Service CIDRs is dropped.
//! - Anything else is not a Service.
use std::net::Ipv4Addr;

use crate::conntrack::{CtState, EntryInit, FlowKey};
use crate::counters::Counter;
use crate::drop_reason::DropReason;
use crate::tables::services::{BackendSet, Frontend, OnEmpty};
use crate::wire::{ParsedFrame, IPPROTO_ICMP, IPPROTO_SCTP};

use super::Ctx;

/// Protocol number of affinity records in the connection table (never on the wire: 253 is
/// reserved for experimentation, RFC 3692).
const AFFINITY_PROTO: u8 = 253;

/// What this stage did.
#[derive(Debug, Default)]
pub struct Counters {
    /// Backends chosen by Maglev (new connections to a Service without a live affinity).
    pub maglev_picks: Counter,
    /// Backends chosen by a live client-affinity record.
    pub affinity_hits: Counter,
}

/// The backend a new connection to a Service goes to.
#[derive(Debug, Clone, Copy)]
pub struct Backend {
    /// Index of the frontend in the Service tables.
    pub frontend: u32,
    pub ip: Ipv4Addr,
    pub port: u16,
    pub endpoint: u32,
    /// Masquerade the client (the set says so, or hairpin).
    pub masquerade: bool,
}

/// What a new connection's destination means.
#[derive(Debug, Clone, Copy)]
pub enum Translation {
    NotAService,
    /// Translated to this backend.
    Backend(Backend),
    /// Answered with a REJECT (no usable backend, or a port the ClusterIP does not expose).
    Reject,
}

#[inline(always)]
pub fn translate(parsed: &ParsedFrame, key: &FlowKey, hash: u64, from_uplink: bool, ctx: &Ctx) -> Result<Translation, DropReason> {
    let svc = &ctx.tables.services;
    let frontend = if key.proto != IPPROTO_ICMP { svc.lookup(parsed.dst_ip, key.dport, key.proto) } else { None };
    let Some((index, f)) = frontend else {
        if svc.in_service_cidr(parsed.dst_ip) {
            if svc.cluster_ips.contains(&u32::from(parsed.dst_ip)) {
                return Ok(Translation::Reject);
            }
            return Err(DropReason::ServiceIpUnallocated);
        }
        return Ok(Translation::NotAService);
    };
    if !f.source_allowed(parsed.src_ip) {
        return Err(DropReason::LbSourceDenied);
    }
    if parsed.is_fragment && key.proto == IPPROTO_SCTP {
        return Err(DropReason::ServiceFragment);
    }
    let set = if from_uplink { &f.external } else { &f.internal };
    let Some((ip, port, endpoint)) = choose_backend(f, set, parsed.src_ip, hash, ctx) else {
        return match set.on_empty {
            OnEmpty::Reject => Ok(Translation::Reject),
            OnEmpty::Drop => Err(DropReason::NoLocalEndpoint),
        };
    };
    let hairpin = ip == parsed.src_ip;
    Ok(Translation::Backend(Backend { frontend: index, ip, port, endpoint, masquerade: set.masquerade || hairpin }))
}

/// The connection-table key of `client`'s affinity record for `f`'s Service port: the client,
/// the Service port's [`Frontend::affinity_id`], the protocol and the Service port, under
/// [`AFFINITY_PROTO`]. The record keeps its backend by address (in the entry's `endpoint`) and
/// port (in its `policy_rule`, which a record has no use for): both mean the same to the next
/// process, which adopts the record with the connection table.
#[inline(always)]
pub fn affinity_key(client: Ipv4Addr, f: &Frontend) -> FlowKey {
    FlowKey { src: u32::from(client), dst: f.affinity_id, sport: f.key.proto as u16, dport: f.service_port, proto: AFFINITY_PROTO }
}

/// The client's affinity backend if it is still in the set, else Maglev's pick (recording the
/// affinity when the frontend has one). Returns (address, port, endpoint id).
#[inline(always)]
fn choose_backend(f: &Frontend, set: &BackendSet, client: Ipv4Addr, h: u64, ctx: &Ctx) -> Option<(Ipv4Addr, u16, u32)> {
    let counters = &ctx.stages.load_balance;
    let Some(timeout_s) = f.affinity_timeout_s else {
        let b = set.pick(h)?;
        counters.maglev_picks.add(1);
        return Some((b.ip, b.port, b.endpoint_id));
    };
    // Per client and Service port, shared by all of the port's frontends (kube-proxy keeps one
    // affinity set per Service port's endpoint, whichever address the client used).
    let aff_key = affinity_key(client, f);
    if let Some(hit) = ctx.ct.lookup(&aff_key) {
        let (ip, port) = (hit.snap.endpoint, ctx.ct.entry(hit.idx).policy_rule());
        if let Some(b) = set.backends.iter().find(|b| u32::from(b.ip) == ip && u32::from(b.port) == port) {
            ctx.ct.entry(hit.idx).touch(ctx.now);
            counters.affinity_hits.add(1);
            return Some((b.ip, b.port, b.endpoint_id));
        }
        ctx.ct.remove(hit.idx); // its backend is gone: choose again
    }
    // Affinity is per client: hash the client alone, so that concurrent first connections of
    // one client agree even before the record exists.
    let b = set.pick(ctx.ct.hash(&aff_key))?;
    counters.maglev_picks.add(1);
    let rec = EntryInit {
        orig: aff_key,
        reply: aff_key,
        state: CtState::Affinity,
        flags: 0,
        frontend: 0,
        endpoint: u32::from(b.ip),
        policy_epoch: 0,
        policy_rule: u32::from(b.port),
        verdict: 0,
        timeout_ms: timeout_s.saturating_mul(1000),
    };
    let _ = ctx.ct.insert(&rec, ctx.now); // a full table only costs stickiness
    Some((b.ip, b.port, b.endpoint_id))
}
