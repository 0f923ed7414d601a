//! Parse and verify: the first stage of the full pipeline.
//!
//! Contract: [`frame`] validates the headers ([`crate::wire::parse_frame`]) and reads an SCTP
//! packet's ports from its common header (which `parse_frame` leaves to this stage, out of the
//! way of the TCP and UDP it parses for every packet; a first or only fragment without the
//! whole 12-byte header is `truncated`); [`ingress_port`]
//! finds the port the frame came in on; [`addressed_to`] accepts frames for the port's MAC
//! (the pods' gateway MAC) or broadcast; [`verify_ipv4_header`] checks the IPv4 header
//! checksum, which the pipeline does after anti-spoofing so that a spoofed frame is counted as
//! spoofed whatever its checksum. Each returns the drop reason of the first problem found.
use crate::drop_reason::DropReason;
use crate::tables::{PortConfig, PortId, Tables};
use crate::wire::{checksum, offsets, parse_frame, FrameKind, Ipv4Packet, MacAddr, ParsedFrame, SctpPacket, WireError, IPPROTO_SCTP};

impl From<WireError> for DropReason {
    fn from(e: WireError) -> Self {
        match e {
            WireError::Truncated => DropReason::Truncated,
            WireError::BadIpVersion => DropReason::BadIpVersion,
            WireError::BadIhl => DropReason::BadIhl,
            WireError::BadTotalLength => DropReason::BadIpTotalLength,
            WireError::BadArp => DropReason::BadArp,
            WireError::BadL4Length => DropReason::BadL4Length,
            WireError::BadTcpDataOffset => DropReason::BadTcpDataOffset,
        }
    }
}

/// The frame's headers, validated.
#[inline(always)]
pub fn frame(frame: &[u8]) -> Result<ParsedFrame, DropReason> {
    let mut p = parse_frame(frame)?;
    if p.ip_protocol == IPPROTO_SCTP && p.kind == FrameKind::Ipv4 && p.fragment_offset == 0 {
        sctp_ports(frame, &mut p)?;
    }
    Ok(p)
}

/// An SCTP packet's ports (rare next to TCP and UDP: out of their way).
#[cold]
#[inline(never)]
fn sctp_ports(frame: &[u8], p: &mut ParsedFrame) -> Result<(), DropReason> {
    let sctp = SctpPacket::new_checked(&frame[p.l4_range()])?;
    p.src_port = sctp.src_port();
    p.dst_port = sctp.dst_port();
    p.sctp_chunk = sctp.first_chunk_type().unwrap_or(0);
    p.l4_parsed = true;
    Ok(())
}

/// The configuration of the port the frame came in on.
#[inline(always)]
pub fn ingress_port(tables: &Tables, in_port: PortId) -> Result<&PortConfig, DropReason> {
    tables.port(in_port).ok_or(DropReason::UnknownIngressPort)
}

/// Whether the frame is for this port: `Ok(false)` addressed to its MAC, `Ok(true)` broadcast.
#[inline(always)]
pub fn addressed_to(parsed: &ParsedFrame, port: &PortConfig) -> Result<bool, DropReason> {
    if parsed.dst_mac.0 == port.mac {
        Ok(false)
    } else if parsed.dst_mac == MacAddr::BROADCAST {
        Ok(true)
    } else {
        Err(DropReason::DstMacNotSwitch)
    }
}

/// The IPv4 header checksum of a frame [`frame`] accepted as IPv4.
#[inline(always)]
pub fn verify_ipv4_header(buf: &[u8]) -> Result<(), DropReason> {
    let ip = Ipv4Packet::new_unchecked(&buf[offsets::IPV4..]);
    let ok = match <&[u8; 20]>::try_from(&buf[offsets::IPV4..offsets::L4]) {
        // The common option-less header: a fixed-size sum.
        Ok(h) if ip.header_len() == 20 => checksum::ipv4_header_checksum(h) == 0,
        _ => ip.verify_checksum(),
    };
    if ok {
        Ok(())
    } else {
        Err(DropReason::BadIpChecksum)
    }
}
