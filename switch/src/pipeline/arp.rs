//! The ARP responder: every port answers ARP requests for the pods' gateway (169.254.1.1)
//! with the port's own MAC, in place, back out the port the request came in on.
//!
//! Contract: only requests for the gateway address are answered, and on uplink ports also
//! requests for the node's own addresses (`Tables::uplink_arp`), so that clients outside reach
//! the node through the switch; others and non-requests are dropped with their reason. On pod ports the sender must be the pod itself (anti-spoofing).
use crate::drop_reason::DropReason;
use crate::tables::{PortConfig, PortId, Tables};
use crate::wire::ArpPacket;

use super::Verdict;

const OP_REQUEST: u16 = 1;
const OP_REPLY: u16 = 2;

pub fn answer(buf: &mut [u8], len: usize, in_port: PortId, port: &PortConfig, tables: &Tables) -> Verdict {
    let Ok(arp) = ArpPacket::new_checked(&buf[14..len]) else {
        return Verdict::Drop(DropReason::BadArp);
    };
    let sender_mac = arp.sender_hw_addr().0;
    let sender_ip = arp.sender_proto_addr();
    let target_ip = arp.target_proto_addr();
    if let Some(g) = &port.source_guard {
        if sender_mac != g.mac || sender_ip != g.ip {
            return Verdict::Drop(DropReason::SpoofedSourceIp);
        }
    }
    if arp.operation() != OP_REQUEST {
        return Verdict::Drop(DropReason::ArpNotRequest);
    }
    let node_address = port.kind == crate::tables::PortKind::Uplink && tables.uplink_arp.contains(&target_ip);
    if target_ip != tables.gateway_ip && !node_address {
        return Verdict::Drop(DropReason::ArpNotForGateway);
    }
    // Turn the request into the reply, in place.
    buf[0..6].copy_from_slice(&sender_mac);
    buf[6..12].copy_from_slice(&port.mac);
    let mut reply = ArpPacket::new_unchecked(&mut buf[14..len]);
    reply.set_operation(OP_REPLY);
    reply.set_target_hw_addr(crate::wire::MacAddr(sender_mac));
    reply.set_target_proto_addr(sender_ip);
    reply.set_sender_hw_addr(crate::wire::MacAddr(port.mac));
    reply.set_sender_proto_addr(target_ip);
    Verdict::Forward { port: in_port, len }
}
