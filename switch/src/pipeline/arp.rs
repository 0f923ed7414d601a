//! The ARP responder: every port answers ARP requests for the pods' gateway (169.254.1.1)
//! with the port's own MAC, in place, back out the port the request came in on.
//!
//! Contract: only requests for the gateway address are answered, and on uplink ports also
//! requests for the addresses of `Tables::uplink_arp` (not the node's own addresses: the uplink
//! stays the node's, and its kernel answers for them); others and non-requests are dropped with
//! their reason. On pod
//! ports the sender must be the pod itself ([`super::antispoof::check_arp_sender`]). Every
//! reply sent is counted in [`Counters::replies`].
use crate::counters::Counter;
use crate::drop_reason::DropReason;
use crate::tables::{PortConfig, PortId, PortKind};
use crate::wire::{offsets, ArpPacket, EthernetFrame, MacAddr};

use super::{antispoof, Ctx, Verdict};

const OP_REQUEST: u16 = 1;
const OP_REPLY: u16 = 2;

/// What this stage did.
#[derive(Debug, Default)]
pub struct Counters {
    /// ARP replies sent (answers).
    pub replies: Counter,
}

pub fn answer(buf: &mut [u8], len: usize, in_port: PortId, port: &PortConfig, ctx: &Ctx) -> Result<Verdict, DropReason> {
    let tables = ctx.tables;
    let arp = ArpPacket::new_checked(&buf[offsets::IPV4..len]).map_err(|_| DropReason::BadArp)?;
    let sender_mac = arp.sender_hw_addr().0;
    let sender_ip = arp.sender_proto_addr();
    let target_ip = arp.target_proto_addr();
    antispoof::check_arp_sender(sender_mac, sender_ip, port)?;
    if arp.operation() != OP_REQUEST {
        return Err(DropReason::ArpNotRequest);
    }
    let node_address = port.kind == PortKind::Uplink && tables.uplink_arp.contains(&target_ip);
    if target_ip != tables.gateway_ip && !node_address {
        return Err(DropReason::ArpNotForGateway);
    }
    // Turn the request into the reply, in place.
    let mut eth = EthernetFrame::new_unchecked(&mut buf[..len]);
    eth.set_dst_addr(MacAddr(sender_mac));
    eth.set_src_addr(MacAddr(port.mac));
    let mut reply = ArpPacket::new_unchecked(&mut buf[offsets::IPV4..len]);
    reply.set_operation(OP_REPLY);
    reply.set_target_hw_addr(MacAddr(sender_mac));
    reply.set_target_proto_addr(sender_ip);
    reply.set_sender_hw_addr(MacAddr(port.mac));
    reply.set_sender_proto_addr(target_ip);
    ctx.stages.arp.replies.add(1);
    Ok(Verdict::Forward { port: in_port, len })
}
