//! Anti-spoofing: a pod port accepts only frames from its pod's own MAC and IPv4 address.
//!
//! Contract: ports without a [`SourceGuard`](crate::tables::SourceGuard) (the node's own stack,
//! the uplink) are trusted as the kernel trusts its own interfaces. ARP counts as a source
//! claim: its sender MAC and IP must be the pod's too, or a pod could poison others' caches.
use crate::drop_reason::DropReason;
use crate::tables::PortConfig;
use crate::wire::ParsedFrame;

#[inline]
pub fn check_mac(frame: &[u8], port: &PortConfig) -> Result<(), DropReason> {
    match &port.source_guard {
        Some(g) if frame[6..12] != g.mac => Err(DropReason::SpoofedSourceMac),
        _ => Ok(()),
    }
}

#[inline]
pub fn check_ipv4(parsed: &ParsedFrame, port: &PortConfig) -> Result<(), DropReason> {
    match &port.source_guard {
        Some(g) if parsed.src_ip != g.ip => Err(DropReason::SpoofedSourceIp),
        _ => Ok(()),
    }
}
