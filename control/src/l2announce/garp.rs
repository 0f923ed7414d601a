//! Gratuitous ARP: telling the uplink's segment at once that an address moved to this node.
//!
//! Contract: [`Announcer::announce`] sends, on the uplink interface, from the uplink's MAC,
//! two broadcast ARP frames for the address: an ARP announcement (a request whose sender and
//! target address are both the address, RFC 5227 section 2.3) and an unsolicited reply (what
//! older stacks and switches update on). Neighbours that had the address under another MAC
//! take the new one (Linux updates an existing entry on either, whatever `arp_accept` says).
//! They go through an AF_PACKET socket of the kernel (control plane, a few frames per
//! takeover): the uplink's AF_XDP sockets only receive what its filter redirects, and the
//! kernel's transmit path reaches the same wire.
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{self, AddressFamily, LinkAddr, MsgFlags, SockFlag, SockType};
use switch::wire::arp::{ArpPacket, OP_REPLY, OP_REQUEST};
use switch::wire::ethernet::{EthernetFrame, HEADER_LEN};
use switch::wire::{MacAddr, ETHERTYPE_ARP};

/// An Ethernet frame carrying ARP, before padding (the NIC pads to 60 bytes).
const FRAME_LEN: usize = HEADER_LEN + ArpPacket::<&[u8]>::PACKET_LEN;

/// Sends gratuitous ARP on one interface (see the module contract).
#[derive(Debug)]
pub struct Announcer {
    fd: OwnedFd,
    addr: LinkAddr,
    mac: [u8; 6],
}

impl Announcer {
    /// A send-only packet socket on `ifname`.
    pub fn open(ifname: &str) -> io::Result<Self> {
        let addr = switch::afxdp::iface::link_addr(ifname)?;
        let mac = addr.addr().ok_or_else(|| io::Error::other(format!("{ifname} has no MAC address")))?;
        let fd = socket::socket(AddressFamily::Packet, SockType::Raw, SockFlag::SOCK_CLOEXEC, None)
            .map_err(|e| io::Error::other(format!("socket(AF_PACKET): {e}")))?;
        Ok(Self { fd, addr, mac })
    }

    /// Sends the two frames for `ip` (see the module contract).
    pub fn announce(&self, ip: Ipv4Addr) -> io::Result<()> {
        for (op, target_mac) in [(OP_REQUEST, MacAddr::ZERO), (OP_REPLY, MacAddr::BROADCAST)] {
            let frame = frame(self.mac, ip, op, target_mac);
            socket::sendto(self.fd.as_raw_fd(), &frame, &self.addr, MsgFlags::empty())
                .map_err(|e| io::Error::other(format!("sending gratuitous ARP for {ip}: {e}")))?;
        }
        Ok(())
    }
}

/// A broadcast ARP frame from `mac` saying `ip` is at `mac`.
fn frame(mac: [u8; 6], ip: Ipv4Addr, op: u16, target_mac: MacAddr) -> [u8; FRAME_LEN] {
    let mut buf = [0u8; FRAME_LEN];
    let mut eth = EthernetFrame::new_unchecked(&mut buf[..]);
    eth.set_dst_addr(MacAddr::BROADCAST);
    eth.set_src_addr(MacAddr(mac));
    eth.set_ethertype(ETHERTYPE_ARP);
    let mut arp = ArpPacket::new_unchecked(&mut buf[HEADER_LEN..]);
    arp.set_ethernet_ipv4();
    arp.set_operation(op);
    arp.set_sender_hw_addr(MacAddr(mac));
    arp.set_sender_proto_addr(ip);
    arp.set_target_hw_addr(target_mac);
    arp.set_target_proto_addr(ip);
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_announcement_says_the_address_is_at_the_uplinks_mac() {
        let mac = [2, 0, 0, 0, 0, 7];
        let ip = Ipv4Addr::new(172, 18, 0, 200);
        let f = frame(mac, ip, OP_REQUEST, MacAddr::ZERO);
        assert_eq!(&f[..6], &[0xff; 6]);
        assert_eq!(&f[6..12], &mac);
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        let arp = ArpPacket::new_checked(&f[HEADER_LEN..]).unwrap();
        assert_eq!(arp.operation(), OP_REQUEST);
        assert_eq!((arp.sender_hw_addr(), arp.sender_proto_addr()), (MacAddr(mac), ip));
        assert_eq!((arp.target_hw_addr(), arp.target_proto_addr()), (MacAddr::ZERO, ip));
        let reply = frame(mac, ip, OP_REPLY, MacAddr::BROADCAST);
        assert_eq!(ArpPacket::new_checked(&reply[HEADER_LEN..]).unwrap().operation(), OP_REPLY);
    }
}
