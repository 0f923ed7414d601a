//! Anti-spoofing: a pod port accepts only frames from its pod's own MAC and IPv4 address.
//!
//! Contract: ports without a [`SourceGuard`](crate::tables::SourceGuard) (the node's own stack,
//! the uplink) are trusted as the kernel trusts its own interfaces. ARP counts as a source
//! claim: its sender MAC and IP must be the pod's too ([`check_arp_sender`]), or a pod could
//! poison others' caches.
use std::net::Ipv4Addr;

use crate::drop_reason::DropReason;
use crate::tables::PortConfig;
use crate::wire::ParsedFrame;

/// The Ethernet source of any frame.
#[inline]
pub fn check_mac(parsed: &ParsedFrame, port: &PortConfig) -> Result<(), DropReason> {
    match &port.source_guard {
        Some(g) if parsed.src_mac.0 != g.mac => Err(DropReason::SpoofedSourceMac),
        _ => Ok(()),
    }
}

/// The IPv4 source of an IPv4 packet.
#[inline]
pub fn check_ipv4(parsed: &ParsedFrame, port: &PortConfig) -> Result<(), DropReason> {
    match &port.source_guard {
        Some(g) if parsed.src_ip != g.ip => Err(DropReason::SpoofedSourceIp),
        _ => Ok(()),
    }
}

/// The sender of an ARP packet (hardware and protocol address).
#[inline]
pub fn check_arp_sender(sender_mac: [u8; 6], sender_ip: Ipv4Addr, port: &PortConfig) -> Result<(), DropReason> {
    match &port.source_guard {
        Some(g) if sender_mac != g.mac || sender_ip != g.ip => Err(DropReason::SpoofedSourceIp),
        _ => Ok(()),
    }
}
