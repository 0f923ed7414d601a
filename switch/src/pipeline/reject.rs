//! REJECT as Kubernetes Services define it: a TCP RST for TCP, ICMP port unreachable for UDP
//! and SCTP, sent from the address the client addressed, written in place into the frame that
//! is rejected and sent back out the port it came in on.
//!
//! Contract: returns the verdict to send the answer (counted in [`Counters`]), or the drop
//! [`DropReason::ServiceRejected`] when none may be sent (a RST is never answered; ICMP errors
//! are never answered with ICMP errors).
use std::net::Ipv4Addr;

use crate::counters::Counter;
use crate::drop_reason::DropReason;
use crate::tables::{PortConfig, PortId};
use crate::wire::icmpv4;
use crate::wire::tcp_flags::{ACK, FIN, RST, SYN};
use crate::wire::{offsets, tcp, EthernetFrame, MacAddr, ParsedFrame, TcpPacket, ETHERTYPE_IPV4, IPPROTO_TCP};

use super::icmp::{self, write_ipv4_header};
use super::{Ctx, Verdict};

/// What this stage did.
#[derive(Debug, Default)]
pub struct Counters {
    /// TCP RSTs sent (answers).
    pub tcp_resets: Counter,
    /// ICMP port unreachable sent (answers).
    pub port_unreachables: Counter,
}

pub fn reject(buf: &mut [u8], len: usize, parsed: &ParsedFrame, in_port: PortId, port: &PortConfig, ctx: &Ctx) -> Result<Verdict, DropReason> {
    if parsed.ip_protocol == IPPROTO_TCP && parsed.l4_parsed {
        return tcp_reset(buf, len, parsed, in_port, port, ctx);
    }
    match icmp::error(buf, len, parsed, port, parsed.dst_ip, icmpv4::TYPE_DEST_UNREACHABLE, icmpv4::CODE_PORT_UNREACHABLE) {
        Ok(new_len) => {
            ctx.stages.reject.port_unreachables.add(1);
            Ok(Verdict::Forward { port: in_port, len: new_len })
        }
        Err(_) => Err(DropReason::ServiceRejected),
    }
}

/// RFC 793 reset generation: if the segment had ACK, the RST takes its sequence number from
/// that ACK; otherwise it has sequence 0 and acknowledges everything the segment occupied.
fn tcp_reset(buf: &mut [u8], len: usize, parsed: &ParsedFrame, in_port: PortId, port: &PortConfig, ctx: &Ctx) -> Result<Verdict, DropReason> {
    if parsed.tcp_flags & RST != 0 {
        return Err(DropReason::ServiceRejected);
    }
    let l4 = parsed.l4_offset as usize;
    let seg = TcpPacket::new_unchecked(&buf[l4..len]);
    let (seq, ack) = (seg.seq_number(), seg.ack_number());
    let payload = (parsed.l4_len as usize).saturating_sub(seg.header_len()) as u32;
    let seg_len = payload + (parsed.tcp_flags & SYN != 0) as u32 + (parsed.tcp_flags & FIN != 0) as u32;
    let (rst_seq, rst_ack, flags) =
        if parsed.tcp_flags & ACK != 0 { (ack, 0, RST) } else { (0, seq.wrapping_add(seg_len), RST | ACK) };
    let (sport, dport) = (parsed.dst_port, parsed.src_port);
    let (src, dst): (Ipv4Addr, Ipv4Addr) = (parsed.dst_ip, parsed.src_ip);
    const RST_LEN: usize = offsets::TCP_END;
    // Ethernet: back to the sender.
    let mut eth = EthernetFrame::new_unchecked(&mut buf[..RST_LEN]);
    eth.set_dst_addr(parsed.src_mac);
    eth.set_src_addr(MacAddr(port.mac));
    eth.set_ethertype(ETHERTYPE_IPV4);
    write_ipv4_header(&mut buf[offsets::IPV4..RST_LEN], (RST_LEN - offsets::IPV4) as u16, IPPROTO_TCP, src, dst);
    buf[offsets::L4..RST_LEN].fill(0); // window, urgent pointer and reserved bits stay 0
    let mut t = TcpPacket::new_unchecked(&mut buf[offsets::L4..RST_LEN]);
    t.set_src_port(sport);
    t.set_dst_port(dport);
    t.set_seq_number(rst_seq);
    t.set_ack_number(rst_ack);
    t.set_header_len(tcp::MIN_HEADER_LEN as u8);
    t.set_flags(flags);
    t.fill_checksum(src, dst);
    ctx.stages.reject.tcp_resets.add(1);
    Ok(Verdict::Forward { port: in_port, len: RST_LEN })
}
