//! REJECT as Kubernetes Services define it: a TCP RST for TCP, ICMP port unreachable for UDP
//! and SCTP, sent from the address the client addressed, written in place into the frame that
//! is rejected and sent back out the port it came in on.
//!
//! Contract: returns the verdict to send the answer, or a drop when none may be sent (a RST is
//! never answered; ICMP errors are never answered with ICMP errors).
use std::net::Ipv4Addr;

use crate::drop_reason::DropReason;
use crate::tables::{PortConfig, PortId};
use crate::wire::tcp_flags::{ACK, FIN, RST, SYN};
use crate::wire::{checksum, ParsedFrame, IPPROTO_TCP};

use super::icmp::{self, write_ipv4_header, CODE_PORT_UNREACHABLE, ICMP_DEST_UNREACHABLE};
use super::Verdict;

const IP: usize = 14;

pub fn reject(buf: &mut [u8], len: usize, parsed: &ParsedFrame, in_port: PortId, port: &PortConfig) -> Verdict {
    if parsed.ip_protocol == IPPROTO_TCP && parsed.l4_parsed {
        return tcp_reset(buf, len, parsed, in_port, port);
    }
    match icmp::error(buf, len, parsed, port, parsed.dst_ip, ICMP_DEST_UNREACHABLE, CODE_PORT_UNREACHABLE) {
        Ok(new_len) => Verdict::Forward { port: in_port, len: new_len },
        Err(_) => Verdict::Drop(DropReason::ServiceRejected),
    }
}

/// RFC 793 reset generation: if the segment had ACK, the RST takes its sequence number from
/// that ACK; otherwise it has sequence 0 and acknowledges everything the segment occupied.
fn tcp_reset(buf: &mut [u8], len: usize, parsed: &ParsedFrame, in_port: PortId, port: &PortConfig) -> Verdict {
    if parsed.tcp_flags & RST != 0 {
        return Verdict::Drop(DropReason::ServiceRejected);
    }
    let l4 = parsed.l4_offset as usize;
    let seq = u32::from_be_bytes(buf[l4 + 4..l4 + 8].try_into().expect("TCP header parsed"));
    let ack = u32::from_be_bytes(buf[l4 + 8..l4 + 12].try_into().expect("TCP header parsed"));
    let data_off = ((buf[l4 + 12] >> 4) as usize) * 4;
    let payload = (parsed.l4_len as usize).saturating_sub(data_off) as u32;
    let seg_len = payload + (parsed.tcp_flags & SYN != 0) as u32 + (parsed.tcp_flags & FIN != 0) as u32;
    let (rst_seq, rst_ack, flags) =
        if parsed.tcp_flags & ACK != 0 { (ack, 0, RST) } else { (0, seq.wrapping_add(seg_len), RST | ACK) };
    let (sport, dport) = (parsed.dst_port, parsed.src_port);
    let (src, dst) = (parsed.dst_ip, parsed.src_ip);
    let _ = len;
    // Ethernet: back to the sender.
    let (d, s) = buf[0..12].split_at_mut(6);
    d.copy_from_slice(s);
    buf[6..12].copy_from_slice(&port.mac);
    buf[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    write_ipv4_header(&mut buf[IP..IP + 20], 40, IPPROTO_TCP, src, dst);
    let t = IP + 20;
    buf[t..t + 2].copy_from_slice(&sport.to_be_bytes());
    buf[t + 2..t + 4].copy_from_slice(&dport.to_be_bytes());
    buf[t + 4..t + 8].copy_from_slice(&rst_seq.to_be_bytes());
    buf[t + 8..t + 12].copy_from_slice(&rst_ack.to_be_bytes());
    buf[t + 12] = 5 << 4;
    buf[t + 13] = flags;
    buf[t + 14..t + 20].fill(0); // window, checksum, urgent
    let sum = tcp_checksum(&buf[t..t + 20], src, dst);
    buf[t + 16..t + 18].copy_from_slice(&sum.to_be_bytes());
    Verdict::Forward { port: in_port, len: t + 20 }
}

fn tcp_checksum(segment: &[u8], src: Ipv4Addr, dst: Ipv4Addr) -> u16 {
    let pseudo = checksum::pseudo_header_v4(src, dst, IPPROTO_TCP, segment.len() as u32);
    !checksum::combine(&[pseudo, checksum::data(segment)])
}
