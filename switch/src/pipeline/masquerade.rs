//! Masquerade: source translation of a new connection to the node's address, with a port
//! chosen so that the connection's reply tuple is unique in the connection table.
//!
//! Contract:
//! - [`apply`] masquerades a connection the load balancer asked it for: the reply comes back
//!   to the node's SNAT address on a free port in [`PORTS`] (no SNAT address known: drop;
//!   no free port within 64 probes: drop).
//! - [`leaves_cluster`]: a new connection from a pod that is not to a Service and leaves the
//!   cluster ([`crate::tables::egress`]) is masqueraded the same way ([`apply`]), counted
//!   apart: TCP, UDP and SCTP, and ICMP echo (its identifier is translated as a port: the
//!   replies come back on an identifier in [`PORTS`], which the uplink's filter redirects);
//!   the protocols tracked by addresses alone keep the pod's address.
//! - [`resolve_clash`]: when another connection already answers on the reply tuple of one that
//!   is not masqueraded (the client used the same source port toward another Service with this
//!   backend, or toward the backend directly), the client's address stays but the connection
//!   gets another source port, as netfilter does on such a clash, so both stay apart here and
//!   at the backend.
use crate::conntrack::{flags, EntryInit, FlowKey};
use crate::counters::Counter;
use crate::drop_reason::DropReason;
use crate::wire::{icmpv4, ParsedFrame, IPPROTO_ICMP};

use super::Ctx;

/// The ports masqueraded connections get on the node's address: 61000-65535, just above the
/// kernel's default ephemeral range (`net.ipv4.ip_local_port_range` 32768-60999) and the
/// NodePort range (30000-32767), so that replies to the node's own connections are never taken
/// for the switch's (the uplink's filter redirects this range on the node address to the switch;
/// `podswitch run` refuses to start where the kernel's ephemeral range overlaps it).
pub const PORTS: std::ops::RangeInclusive<u16> = SNAT_PORT_FIRST..=u16::MAX;
const SNAT_PORT_FIRST: u16 = 61000;
const SNAT_PORTS: u16 = u16::MAX - SNAT_PORT_FIRST + 1;
const SNAT_PORT_TRIES: u16 = 64;

/// What this stage did.
#[derive(Debug, Default)]
pub struct Counters {
    /// Connections masqueraded to the node's address.
    pub masqueraded: Counter,
    /// Connections given another source port because their reply tuple was taken.
    pub clashes: Counter,
    /// Of the masqueraded connections, those from pods leaving the cluster.
    pub egress: Counter,
}

/// Whether a new connection from a pod (not to a Service) to `dst` leaves the cluster
/// masqueraded: TCP, UDP, SCTP, and ICMP echo requests.
#[inline(always)]
pub fn leaves_cluster(dst: u32, parsed: &ParsedFrame, ctx: &Ctx) -> bool {
    let proto = parsed.ip_protocol;
    let translatable = FlowKey::has_ports(proto) || (proto == IPPROTO_ICMP && parsed.icmp_type == icmpv4::TYPE_ECHO_REQUEST);
    translatable && ctx.tables.egress.applies_to(dst)
}

/// Masquerades `init` (translated to a backend already) to the node's address: the reply
/// comes back to a free port, or for ICMP echo a free identifier
/// ([`FlowKey::with_destination_port`]).
#[inline(always)]
pub fn apply(init: &mut EntryInit, h: u64, ctx: &Ctx) -> Result<(), DropReason> {
    let snat = ctx.tables.services.snat_ip.ok_or(DropReason::NoSnatAddress)?;
    init.reply.dst = u32::from(snat);
    init.reply = init.reply.with_destination_port(free_port(&init.reply, h, ctx)?);
    init.flags |= flags::SNAT;
    ctx.stages.masquerade.masqueraded.add(1);
    Ok(())
}

/// Gives a connection that is not masqueraded another source port if its reply tuple is taken.
#[inline(always)]
pub fn resolve_clash(init: &mut EntryInit, h: u64, ctx: &Ctx) -> Result<(), DropReason> {
    if init.flags & flags::SNAT == 0 && FlowKey::has_ports(init.orig.proto) && ctx.ct.lookup(&init.reply).is_some() {
        init.reply.dport = free_port(&init.reply, h, ctx)?;
        init.flags |= flags::SNAT;
        ctx.stages.masquerade.clashes.add(1);
    }
    Ok(())
}

/// A port for which the reply key `reply` (its destination port to be chosen:
/// [`FlowKey::with_destination_port`]) is unused.
fn free_port(reply: &FlowKey, h: u64, ctx: &Ctx) -> Result<u16, DropReason> {
    let start = (h >> 17) as u16 % SNAT_PORTS;
    for i in 0..SNAT_PORT_TRIES {
        let p = SNAT_PORT_FIRST + (start.wrapping_add(i.wrapping_mul(7919)) % SNAT_PORTS);
        let candidate = reply.with_destination_port(p);
        if ctx.ct.lookup(&candidate).is_none() {
            return Ok(p);
        }
    }
    Err(DropReason::SnatPortsExhausted)
}
