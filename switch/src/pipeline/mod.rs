//! What the switch does with one frame: named stages, one concern per file, called in the
//! order a frame meets them from RX to TX.
//!
//! Contract: [`process`] takes a received frame (the whole buffer of its UMEM frame, and its
//! length), the port it came in on and the tables in force, and returns where the (possibly
//! rewritten) frame goes, or why it is dropped. It never allocates, locks or panics, whatever
//! the bytes. Every stage returns a typed outcome: `Err(DropReason)` is always a drop (the
//! worker counts it under its reason), never "forward"; an answer the switch sends back (ARP
//! reply, echo reply, time exceeded, REJECT) is a [`Verdict::Forward`] out the ingress port,
//! counted by the stage that wrote it in [`StageCounters`].
//!
//! ```text
//!  RX
//!   │  fast ─────────── established, steady, allowed flows: one pass over fixed offsets ──┐
//!   ▼                                                                                      │
//!  parse ............ headers valid, ingress port known, addressed to the port's MAC      │
//!  antispoof ........ pod ports: source MAC (and below: source IP / ARP sender)           │
//!  arp .............. answers ARP for the gateway (and the uplink's ARP set) ────► answer │
//!  parse (verify) ... IPv4 unicast, header checksum                                        │
//!  icmp (echo) ...... addressed to the gateway: echo reply ─────────────────────► answer  │
//!  conntrack ........ which connection, if any: untracked / ICMP error / known / new      │
//!   ├ known: policy (epoch check, re-judge) → state, idle time → rewrite (its NAT)        │
//!   ├ ICMP error: icmp_translate (RFC 5508, back to the other side's view)                │
//!   └ new: load_balance (Service frontend: Maglev or affinity) ──► reject ──────► answer  │
//!          masquerade (SNAT port; a port on reply-tuple clash)                            │
//!          policy (judge, flow log) → conntrack (record) → rewrite (DNAT/SNAT)             │
//!  route ............ next hop by the translated destination                              │
//!  icmp (errors) .... TTL ≤ 1: time exceeded ───────────────────────────────────► answer  │
//!  rewrite .......... MACs, TTL − 1, header checksum                                       │
//!   ▼                                                                                      │
//!  TX ◄────────────────────────────────────────────────────────────────────────────────────┘
//! ```
//!
//! - [`parse`]: parse and verify ([`crate::wire::parse_frame`], port, MAC, header checksum).
//! - [`antispoof`]: a pod port accepts only its pod's MAC and IPv4 address.
//! - [`arp`]: the ARP responder.
//! - [`conntrack`]: connection lookup, TCP/UDP state, recording new connections.
//! - [`load_balance`]: Service frontends and the backend choice (Maglev, client affinity).
//! - [`masquerade`]: SNAT port allocation.
//! - [`policy`]: NetworkPolicy at setup and after a policy change; the flow log.
//! - [`reject`]: TCP RST or ICMP port unreachable for Services that REJECT.
//! - [`route`]: next hop by destination.
//! - [`rewrite`]: addresses and ports (NAT), MACs and TTL, with incremental checksums.
//! - [`icmp`]: echo replies and ICMP errors the switch originates;
//!   [`icmp_translate`]: ICMP errors about translated connections.
//! - [`fast`]: the same verdict as the stages above for steady established flows, in one pass
//!   over the fixed offsets of [`crate::wire::offsets`]; [`warm`]: the burst's table warm-up.
pub mod antispoof;
pub mod arp;
pub mod conntrack;
pub mod fast;
pub mod fragments;
pub mod icmp;
pub mod icmp_translate;
pub mod load_balance;
pub mod masquerade;
pub mod parse;
pub mod policy;
pub mod reject;
pub mod rewrite;
pub mod route;
pub mod tunnel;
pub mod warm;

use crate::conntrack::{flags, ConnTable, FlowKey};
use crate::counters::DropCounters;
use crate::drop_reason::DropReason;
use crate::tables::{PortConfig, PortId, PortKind, Tables};
use crate::wire::{FrameKind, ParsedFrame};

/// Where a frame goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Transmit the frame (with its new length) on `port`.
    Forward { port: PortId, len: usize },
    Drop(DropReason),
}

/// The stages' own counters (what they did besides dropping: answers sent, connections made,
/// choices taken), one block per stage. Single writer: the worker that owns them.
#[derive(Debug, Default)]
pub struct StageCounters {
    pub arp: arp::Counters,
    pub icmp: icmp::Counters,
    pub icmp_translate: icmp_translate::Counters,
    pub conntrack: conntrack::Counters,
    pub fragments: fragments::Counters,
    pub load_balance: load_balance::Counters,
    pub masquerade: masquerade::Counters,
    pub policy: policy::Counters,
    pub reject: reject::Counters,
    pub tunnel: tunnel::Counters,
}

impl StageCounters {
    /// Every counter with its name (`stage.counter`), in pipeline order.
    pub fn values(&self) -> [(&'static str, u64); 21] {
        [
            ("tunnel.decapsulated", self.tunnel.decapsulated.get()),
            ("arp.replies", self.arp.replies.get()),
            ("icmp.echo_replies", self.icmp.echo_replies.get()),
            ("conntrack.untracked", self.conntrack.untracked.get()),
            ("conntrack.known", self.conntrack.known.get()),
            ("fragments.followed", self.fragments.followed.get()),
            ("icmp_translate.translated", self.icmp_translate.translated.get()),
            ("load_balance.maglev_picks", self.load_balance.maglev_picks.get()),
            ("load_balance.affinity_hits", self.load_balance.affinity_hits.get()),
            ("reject.tcp_resets", self.reject.tcp_resets.get()),
            ("reject.port_unreachables", self.reject.port_unreachables.get()),
            ("masquerade.masqueraded", self.masquerade.masqueraded.get()),
            ("masquerade.clashes", self.masquerade.clashes.get()),
            ("masquerade.egress", self.masquerade.egress.get()),
            ("policy.rejudged", self.policy.rejudged.get()),
            ("conntrack.created", self.conntrack.created.get()),
            ("fragments.datagrams", self.fragments.datagrams.get()),
            ("icmp.time_exceeded", self.icmp.time_exceeded.get()),
            ("icmp.fragmentation_needed", self.icmp.fragmentation_needed.get()),
            ("tunnel.encapsulated", self.tunnel.encapsulated.get()),
            ("answered", self.answered()),
        ]
    }

    /// Answers the switch sent back out the ingress port instead of forwarding: ARP replies,
    /// echo replies, time exceeded, fragmentation needed and REJECTs (RST or port unreachable).
    pub fn answered(&self) -> u64 {
        self.arp.replies.get()
            + self.icmp.echo_replies.get()
            + self.icmp.time_exceeded.get()
            + self.icmp.fragmentation_needed.get()
            + self.reject.tcp_resets.get()
            + self.reject.port_unreachables.get()
    }
}

/// What the pipeline reads besides the frame: the tables in force, the shared connection
/// table, the time, and the worker's counters.
pub struct Ctx<'a> {
    pub tables: &'a Tables,
    pub ct: &'a ConnTable,
    /// The connection table's clock ([`ConnTable::now_ms`]), read once per burst.
    pub now: u32,
    /// Drops the pipeline counts itself (a TTL-expired frame answered with time exceeded);
    /// every other drop is returned as [`Verdict::Drop`] for the worker to count.
    pub drops: &'a DropCounters,
    /// The worker's verdict log.
    pub flows: &'a crate::flowlog::FlowRing,
    pub policy_counters: &'a crate::counters::PolicyCounters,
    /// The stages' counters.
    pub stages: &'a StageCounters,
}

/// Runs the pipeline on one frame; see the module contract. `buf` is the frame's whole data
/// area (replies may be longer than the frame), `len` its received length.
#[inline]
pub fn process(buf: &mut [u8], len: usize, in_port: PortId, ctx: &Ctx) -> Verdict {
    process_hinted(buf, len, in_port, ctx, warm::Hint::NONE)
}

/// [`process`] with what [`warm::burst`] learned of the frame (or [`warm::Hint::NONE`]); the
/// verdict is the same whatever the hint.
#[inline]
pub fn process_hinted(buf: &mut [u8], len: usize, in_port: PortId, ctx: &Ctx, hint: warm::Hint) -> Verdict {
    if ctx.tables.overlay.enabled {
        return tunnel::process(buf, len, in_port, ctx, hint);
    }
    untunnelled(buf, len, in_port, ctx, hint)
}

/// The fast path, else the full pipeline: every frame's way but for the tunnel stage around it
/// ([`tunnel::process`]).
#[inline(always)]
fn untunnelled(buf: &mut [u8], len: usize, in_port: PortId, ctx: &Ctx, hint: warm::Hint) -> Verdict {
    match fast::established(buf, len, in_port, ctx, hint) {
        Some(v) => v,
        None => slow(buf, len, in_port, ctx),
    }
}

/// The full pipeline (see the module contract); [`process`] comes here for everything the
/// fast path ([`fast`]) does not take.
#[inline(never)]
pub fn slow(buf: &mut [u8], len: usize, in_port: PortId, ctx: &Ctx) -> Verdict {
    match stages(buf, len, in_port, ctx) {
        Ok(v) => v,
        Err(r) => Verdict::Drop(r),
    }
}

#[inline(always)]
fn stages(buf: &mut [u8], len: usize, in_port: PortId, ctx: &Ctx) -> Result<Verdict, DropReason> {
    let len = len.min(buf.len());
    let parsed = parse::frame(&buf[..len])?;
    let port = parse::ingress_port(ctx.tables, in_port)?;
    let broadcast = parse::addressed_to(&parsed, port)?;
    antispoof::check_mac(&parsed, port)?;
    match parsed.kind {
        FrameKind::Arp => arp::answer(buf, len, in_port, port, ctx),
        FrameKind::Ipv4 => {
            antispoof::check_ipv4(&parsed, port)?;
            if broadcast {
                return Err(DropReason::DstNotUnicast);
            }
            parse::verify_ipv4_header(buf)?;
            ipv4(buf, len, &parsed, in_port, port, ctx)
        }
        FrameKind::Other(_) => Err(DropReason::UnsupportedEthertype),
    }
}

/// An IPv4 packet that passed parsing and anti-spoofing: local delivery, connection
/// tracking (and what a new connection needs), routing, rewriting.
#[inline(always)]
fn ipv4(buf: &mut [u8], len: usize, parsed: &ParsedFrame, in_port: PortId, port: &PortConfig, ctx: &Ctx) -> Result<Verdict, DropReason> {
    if parsed.dst_ip == ctx.tables.gateway_ip {
        return icmp::answer_echo(buf, len, parsed, in_port, port, ctx);
    }
    match conntrack::lookup(parsed, ctx) {
        conntrack::Lookup::LaterFragment => fragments::follow(buf, parsed, ctx)?,
        conntrack::Lookup::IcmpError => icmp_translate::relate(buf, len, parsed, ctx)?,
        conntrack::Lookup::Tracked { key, hash } => match conntrack::find(&key, hash, ctx) {
            Some(hit) => {
                let e = ctx.ct.entry(hit.idx);
                let word = e.state_word();
                policy::check_established(ctx, e, &hit.snap, word.verdict())?;
                if let Some(to) = conntrack::advance(parsed, e, word, &hit, ctx) {
                    rewrite::to_tuple(buf, parsed, &to);
                }
            }
            None => {
                if let Some(answer) = new_connection(buf, len, parsed, key, hash, in_port, port, ctx)? {
                    return Ok(answer);
                }
            }
        },
    }
    if fragments::is_first(parsed) {
        fragments::remember(buf, parsed, ctx);
    }
    let hop = route::next_hop(ctx.tables, buf)?;
    if !route::ttl_allows_forwarding(buf) {
        return icmp::time_exceeded(buf, len, parsed, in_port, port, ctx);
    }
    if hop.next.tunnel != 0 {
        if let Some(answer) = tunnel::too_big(buf, len, parsed, in_port, port, ctx) {
            return answer;
        }
    }
    rewrite::forward_l2(buf, hop.next, hop.out_mac);
    Ok(Verdict::Forward { port: hop.next.port, len })
}

/// The first packet of a connection: Service translation, masquerade, policy, recording it
/// and rewriting the packet. `Ok(Some(answer))`: the switch answers instead (REJECT);
/// `Ok(None)`: the packet goes on to routing.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn new_connection(
    buf: &mut [u8],
    len: usize,
    parsed: &ParsedFrame,
    key: FlowKey,
    hash: u64,
    in_port: PortId,
    port: &PortConfig,
    ctx: &Ctx,
) -> Result<Option<Verdict>, DropReason> {
    let from_uplink = port.kind == PortKind::Uplink;
    let Some(state) = conntrack::initial_state(parsed, &key, ctx)? else {
        return Ok(None); // a stray RST between pods: forwarded, not tracked
    };
    let mut init = conntrack::entry_for(key, state, from_uplink);
    match load_balance::translate(parsed, &key, hash, from_uplink, ctx)? {
        load_balance::Translation::NotAService => {
            if port.kind == PortKind::Pod && masquerade::leaves_cluster(key.dst, parsed, ctx) {
                masquerade::apply(&mut init, hash, ctx)?;
                ctx.stages.masquerade.egress.add(1);
            }
        }
        load_balance::Translation::Reject => return reject::reject(buf, len, parsed, in_port, port, ctx).map(Some),
        load_balance::Translation::Backend(b) => {
            init.flags |= flags::DNAT;
            init.reply = FlowKey { src: u32::from(b.ip), dst: key.src, sport: b.port, dport: key.sport, proto: key.proto };
            init.frontend = b.frontend + 1;
            init.endpoint = b.endpoint;
            if b.masquerade {
                masquerade::apply(&mut init, hash, ctx)?;
            }
        }
    }
    masquerade::resolve_clash(&mut init, hash, ctx)?;
    let decision = policy::judge_new(ctx, parsed.src_ip, key.sport, key.dst, key.dport, init.reply.src, init.reply.sport, key.proto);
    policy::admit(&mut init, decision, ctx)?;
    conntrack::record(&init, ctx)?;
    if init.flags & (flags::DNAT | flags::SNAT) != 0 {
        rewrite::to_tuple(buf, parsed, &init.reply.reverse());
    }
    Ok(None)
}

#[cfg(test)]
mod test_worker;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_policy;
#[cfg(test)]
mod tests_services;
#[cfg(test)]
mod tests_tunnel;
