//! The tunnel stage: VXLAN (RFC 7348) between the nodes' switches, as the tables'
//! [`crate::tables::overlay::Overlay`] describes it. It runs around the rest of the pipeline:
//! decapsulation before it, encapsulation after it.
//!
//! Contract:
//! - [`is_tunnel_frame`]: a frame on the uplink that is option-less IPv4/UDP to this node's
//!   address and the tunnel's UDP port (a few fixed-offset reads for every uplink frame).
//! - [`receive`] decapsulates it and runs the pipeline on the inner frame as come in on the
//!   tunnel port. It takes the frame only when the outer headers hold (IPv4 header checksum,
//!   not a fragment, lengths, the VNI flag: else `tunnel_malformed`; the outer destination MAC
//!   is the uplink's: else `dst_mac_not_switch`), it comes from a node of the cluster
//!   (`tunnel_unknown_peer`) with the pod network's VNI (`tunnel_bad_vni`), its inner frame is
//!   IPv4 (`tunnel_malformed`), and the inner source belongs to the sending node: an address
//!   whose route is that node's tunnel (one of its pods), or the node's own address
//!   (masqueraded traffic). Anything else is `tunnel_spoofed_source`: a node cannot speak for
//!   another node's pods, nor for this node's, nor for the world.
//! - [`too_big`]: a packet routed into a tunnel whose IPv4 length exceeds the tunnel's MTU is
//!   answered with ICMP fragmentation-needed (next-hop MTU = the tunnel's) when DF is set, and
//!   dropped as `fragmentation_needed` otherwise (pods' MTU leaves room for the tunnel, so only
//!   a misconfigured pod sends such packets). The check comes after translation: the error
//!   quotes the packet as translated.
//! - [`encapsulate`]: a frame the pipeline sends to the tunnel port (routed to a remote pod, or
//!   an answer to a frame that came through a tunnel) gets the outer headers of the tunnel its
//!   inner destination routes to and leaves by the uplink; the outer UDP source port comes
//!   from the inner flow's addresses and ports (RFC 7348 §5), so a flow stays on one RSS queue
//!   and flows spread.
//!
//! No allocation; the frame moves within its own buffer (50 bytes forward or back).
use crate::counters::Counter;
use crate::drop_reason::DropReason;
use crate::tables::overlay::Overlay;
use crate::wire::offsets::*;
use crate::wire::vxlan::{self, OVERHEAD};
use crate::wire::{ethernet, ipv4, ETHERTYPE_IPV4, IPPROTO_TCP, IPPROTO_UDP};
use crate::wire::{EthernetFrame, Ipv4Packet, ParsedFrame, UdpPacket};

use super::parse::verify_ipv4_header;
use super::{icmp, untunnelled, warm, Ctx, Verdict};
use crate::tables::{PortConfig, PortId};

/// What this stage did.
#[derive(Debug, Default)]
pub struct Counters {
    /// Frames taken out of a tunnel.
    pub decapsulated: Counter,
    /// Frames put into a tunnel.
    pub encapsulated: Counter,
}

/// Where the VXLAN header of an option-less outer packet starts.
const VXLAN_AT: usize = UDP_END;

/// Whether a frame from the uplink is a tunnel frame for this node (see the module contract).
#[inline(always)]
pub fn is_tunnel_frame(buf: &[u8], len: usize, o: &Overlay) -> bool {
    let Some(f) = buf.get(..len).filter(|f| f.len() >= VXLAN_AT) else { return false };
    let ip = Ipv4Packet::new_unchecked(&f[IPV4..]);
    EthernetFrame::new_unchecked(f).ethertype() == ETHERTYPE_IPV4
        && f[IPV4_VER_IHL] == VER_IHL_NO_OPTIONS
        && ip.protocol() == IPPROTO_UDP
        && UdpPacket::new_unchecked(&f[L4..]).dst_port() == o.udp_port
        && ip.dst_addr() == o.node_ip
}

/// [`super::process_hinted`] with tunnels: a tunnel frame from the uplink is decapsulated
/// ([`receive`]); any other frame goes through the pipeline, and out of a tunnel if routed into
/// one ([`finish`]). Out of line, so that a switch without tunnels pays one test per frame.
#[inline(never)]
pub fn process(buf: &mut [u8], len: usize, in_port: PortId, ctx: &Ctx, hint: warm::Hint) -> Verdict {
    let o = &ctx.tables.overlay;
    if in_port == o.uplink && is_tunnel_frame(buf, len, o) {
        return receive(buf, len, ctx);
    }
    let v = untunnelled(buf, len, in_port, ctx, hint);
    finish(buf, v, ctx)
}

/// Decapsulates a tunnel frame and runs the pipeline on its inner frame (see the module
/// contract).
#[inline(never)]
pub fn receive(buf: &mut [u8], len: usize, ctx: &Ctx) -> Verdict {
    let inner_len = match decapsulate(buf, len, ctx) {
        Ok(n) => n,
        Err(r) => return Verdict::Drop(r),
    };
    ctx.stages.tunnel.decapsulated.add(1);
    let v = untunnelled(buf, inner_len, ctx.tables.overlay.tunnel_port, ctx, warm::Hint::NONE);
    finish(buf, v, ctx)
}

/// Checks a tunnel frame and moves its inner frame to the front of `buf`; returns the inner
/// frame's length.
fn decapsulate(buf: &mut [u8], len: usize, ctx: &Ctx) -> Result<usize, DropReason> {
    let tables = ctx.tables;
    let o = &tables.overlay;
    let frame = &buf[..len.min(buf.len())];
    let uplink_mac = tables.port(o.uplink).map(|p| p.mac).ok_or(DropReason::UnknownIngressPort)?;
    if EthernetFrame::new_unchecked(frame).dst_addr().0 != uplink_mac {
        return Err(DropReason::DstMacNotSwitch);
    }
    let ip = Ipv4Packet::new_checked(&frame[IPV4..]).map_err(|_| DropReason::TunnelMalformed)?;
    let outer_end = IPV4 + usize::from(ip.total_len());
    if verify_ipv4_header(frame).is_err()
        || ip.is_fragment()
        || outer_end < OVERHEAD + ethernet::HEADER_LEN + ipv4::MIN_HEADER_LEN
        || usize::from(UdpPacket::new_unchecked(&frame[L4..]).len()) != outer_end - L4
    {
        return Err(DropReason::TunnelMalformed);
    }
    let outer_src = ip.src_addr();
    let peer = o.peer(u32::from(outer_src)).ok_or(DropReason::TunnelUnknownPeer)?;
    let (vni, inner_at) = vxlan::inner(&frame[..outer_end], VXLAN_AT).map_err(|_| DropReason::TunnelMalformed)?;
    if vni != o.vni {
        return Err(DropReason::TunnelBadVni);
    }
    let inner = &frame[inner_at..outer_end];
    if EthernetFrame::new_unchecked(inner).ethertype() != ETHERTYPE_IPV4 {
        return Err(DropReason::TunnelMalformed);
    }
    let inner_src = Ipv4Packet::new_unchecked(&inner[ethernet::HEADER_LEN..]).src_addr();
    let from_peer = inner_src == outer_src
        || tables.route(inner_src).is_some_and(|h| h.tunnel == peer && h.port == o.tunnel_port);
    if !from_peer {
        return Err(DropReason::TunnelSpoofedSource);
    }
    buf.copy_within(inner_at..outer_end, 0);
    Ok(outer_end - inner_at)
}

/// A packet routed into a tunnel that the tunnel cannot carry: the fragmentation-needed
/// answer, or the drop (see the module contract). `None`: it fits.
#[inline(always)]
pub fn too_big(buf: &mut [u8], len: usize, parsed: &ParsedFrame, in_port: PortId, port: &PortConfig, ctx: &Ctx) -> Option<Result<Verdict, DropReason>> {
    let mtu = ctx.tables.overlay.inner_mtu;
    let ip = Ipv4Packet::new_unchecked(&buf[IPV4..]);
    if ip.total_len() <= mtu {
        return None;
    }
    if !ip.dont_frag() {
        return Some(Err(DropReason::FragmentationNeeded));
    }
    Some(icmp::fragmentation_needed(buf, len, parsed, in_port, port, mtu, ctx))
}

/// The last step of a pipeline with tunnels: a frame for the tunnel port is encapsulated;
/// every other verdict stays as it is.
#[inline(always)]
pub fn finish(buf: &mut [u8], v: Verdict, ctx: &Ctx) -> Verdict {
    let o = &ctx.tables.overlay;
    match v {
        Verdict::Forward { port, len } if port == o.tunnel_port => encapsulate(buf, len, ctx),
        v => v,
    }
}

/// Puts the (IPv4) frame into the tunnel its destination routes to; see the module contract.
#[inline(never)]
fn encapsulate(buf: &mut [u8], len: usize, ctx: &Ctx) -> Verdict {
    let o = &ctx.tables.overlay;
    if len < L4 || buf.len() < len + OVERHEAD {
        return Verdict::Drop(DropReason::FragmentationNeeded);
    }
    let dst = Ipv4Packet::new_unchecked(&buf[IPV4..len]).dst_addr();
    let Some(tunnel) = ctx.tables.route(dst).and_then(|h| o.tunnel(h.tunnel)) else {
        return Verdict::Drop(DropReason::NoRoute);
    };
    let hash = flow_hash(buf, len);
    buf.copy_within(0..len, OVERHEAD);
    if tunnel.write_outer(&mut buf[..len + OVERHEAD], vxlan::source_port(hash)).is_err() {
        return Verdict::Drop(DropReason::FragmentationNeeded);
    }
    ctx.stages.tunnel.encapsulated.add(1);
    Verdict::Forward { port: o.uplink, len: len + OVERHEAD }
}

/// A hash of the inner flow (addresses, protocol, and the ports of unfragmented TCP and UDP)
/// for the outer source port.
#[inline(always)]
fn flow_hash(buf: &[u8], len: usize) -> u64 {
    let ip = Ipv4Packet::new_unchecked(&buf[IPV4..len]);
    let proto = ip.protocol();
    let l4 = IPV4 + ip.header_len();
    let ports = if (proto == IPPROTO_TCP || proto == IPPROTO_UDP) && !ip.is_fragment() && len >= l4 + 4 {
        // TCP and UDP both start with the two ports.
        let p = UdpPacket::new_unchecked(&buf[l4..len]);
        u32::from(p.src_port()) << 16 | u32::from(p.dst_port())
    } else {
        0
    };
    let a = (u64::from(u32::from(ip.src_addr())) << 32 | u64::from(u32::from(ip.dst_addr()))).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let b = (u64::from(ports) << 8 | u64::from(proto)).wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
    (a ^ b ^ (a >> 29)).wrapping_mul(0x1656_67b1_9e37_79f9)
}
