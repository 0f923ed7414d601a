//! The links, addresses and routes of a pod's attachment, over rtnetlink.
//!
//! Contract: every function acts through the [`Rtnl`] it is given, so in that socket's
//! network namespace. [`create_veth`] makes the pair in one request (the peer is created
//! directly in the pod's namespace with its name, MAC and MTU, as `ip link add ... peer name
//! eth0 netns NS address MAC` does); nothing else creates links. Lookups answer `None` for
//! what is not there instead of failing.
use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;

use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use netlink_packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use podswitch_control::rtnl::{Rtnl, RtnlError};

/// A link as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkState {
    pub index: u32,
    pub mac: Option<[u8; 6]>,
    pub mtu: Option<u32>,
    pub up: bool,
}

/// An IPv4 route of the main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteState {
    pub dst: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Option<Ipv4Addr>,
    pub oif: Option<u32>,
    pub scope: RouteScope,
}

/// Creates the veth pair `host` (here) – `pod` (in the namespace `pod_netns`, with `pod_mac`).
pub fn create_veth(rtnl: &mut Rtnl, host: &str, pod: &str, pod_netns: &File, mtu: u32, pod_mac: [u8; 6]) -> Result<(), RtnlError> {
    let mut peer = LinkMessage::default();
    peer.attributes.push(LinkAttribute::IfName(pod.to_string()));
    peer.attributes.push(LinkAttribute::Mtu(mtu));
    peer.attributes.push(LinkAttribute::Address(pod_mac.to_vec()));
    peer.attributes.push(LinkAttribute::NetNsFd(pod_netns.as_raw_fd()));
    let mut m = LinkMessage::default();
    m.attributes.push(LinkAttribute::IfName(host.to_string()));
    m.attributes.push(LinkAttribute::Mtu(mtu));
    m.attributes.push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Veth), LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer)))]));
    rtnl.request(RouteNetlinkMessage::NewLink(m), NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, &format!("creating the veth pair {host} - {pod}"))
        .map(drop)
}

/// The link called `name`, if there is one.
pub fn link(rtnl: &mut Rtnl, name: &str) -> Result<Option<LinkState>, RtnlError> {
    let mut m = LinkMessage::default();
    m.attributes.push(LinkAttribute::IfName(name.to_string()));
    match rtnl.request(RouteNetlinkMessage::GetLink(m), NLM_F_ACK, &format!("looking up link {name}")) {
        Ok(answers) => Ok(answers.into_iter().find_map(|a| match a {
            RouteNetlinkMessage::NewLink(l) => Some(link_state(&l)),
            _ => None,
        })),
        Err(e) if e.errno() == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(e),
    }
}

fn link_state(l: &LinkMessage) -> LinkState {
    let mut s = LinkState { index: l.header.index, mac: None, mtu: None, up: l.header.flags.contains(LinkFlags::Up) };
    for a in &l.attributes {
        match a {
            LinkAttribute::Address(b) if b.len() == 6 => s.mac = b.as_slice().try_into().ok(),
            LinkAttribute::Mtu(m) => s.mtu = Some(*m),
            _ => {}
        }
    }
    s
}

/// Sets link `index` up.
pub fn set_up(rtnl: &mut Rtnl, index: u32, what: &str) -> Result<(), RtnlError> {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m.header.flags = LinkFlags::Up;
    m.header.change_mask = LinkFlags::Up;
    rtnl.request(RouteNetlinkMessage::SetLink(m), NLM_F_ACK, &format!("setting {what} up")).map(drop)
}

/// Deletes the link called `name`; false when there was none.
pub fn delete(rtnl: &mut Rtnl, name: &str) -> Result<bool, RtnlError> {
    let mut m = LinkMessage::default();
    m.attributes.push(LinkAttribute::IfName(name.to_string()));
    match rtnl.request(RouteNetlinkMessage::DelLink(m), NLM_F_ACK, &format!("deleting link {name}")) {
        Ok(_) => Ok(true),
        Err(e) if e.errno() == Some(libc::ENODEV) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Adds `ip/prefix_len` to link `index`.
pub fn add_address(rtnl: &mut Rtnl, index: u32, ip: Ipv4Addr, prefix_len: u8) -> Result<(), RtnlError> {
    let mut m = AddressMessage::default();
    m.header.family = AddressFamily::Inet;
    m.header.prefix_len = prefix_len;
    m.header.index = index;
    m.attributes.push(AddressAttribute::Local(ip.into()));
    m.attributes.push(AddressAttribute::Address(ip.into()));
    rtnl.request(RouteNetlinkMessage::NewAddress(m), NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, &format!("adding address {ip}/{prefix_len}"))
        .map(drop)
}

/// The IPv4 addresses of link `index`.
pub fn addresses(rtnl: &mut Rtnl, index: u32) -> Result<Vec<(Ipv4Addr, u8)>, RtnlError> {
    let mut m = AddressMessage::default();
    m.header.family = AddressFamily::Inet;
    let answers = rtnl.request(RouteNetlinkMessage::GetAddress(m), NLM_F_DUMP, "an address dump")?;
    Ok(answers
        .into_iter()
        .filter_map(|a| match a {
            RouteNetlinkMessage::NewAddress(m) if m.header.index == index => m.attributes.iter().find_map(|at| match at {
                AddressAttribute::Local(std::net::IpAddr::V4(ip)) => Some((*ip, m.header.prefix_len)),
                _ => None,
            }),
            _ => None,
        })
        .collect())
}

/// Sets a permanent neighbour entry `ip` → `mac` on link `index` (replacing one there).
pub fn set_permanent_neighbour(rtnl: &mut Rtnl, index: u32, ip: Ipv4Addr, mac: [u8; 6]) -> Result<(), RtnlError> {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Inet;
    m.header.ifindex = index;
    m.header.state = NeighbourState::Permanent;
    m.attributes.push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
    m.attributes.push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
    rtnl.request(RouteNetlinkMessage::NewNeighbour(m), NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE, &format!("a permanent neighbour entry for {ip}"))
        .map(drop)
}

/// Adds a route to `dst/prefix_len` through link `index`, via `gateway` or on-link (`scope`).
pub fn add_route(rtnl: &mut Rtnl, index: u32, dst: Ipv4Addr, prefix_len: u8, gateway: Option<Ipv4Addr>, scope: RouteScope) -> Result<(), RtnlError> {
    let mut m = RouteMessage::default();
    m.header.address_family = AddressFamily::Inet;
    m.header.destination_prefix_length = prefix_len;
    m.header.table = RouteHeader::RT_TABLE_MAIN;
    m.header.protocol = RouteProtocol::Boot;
    m.header.scope = scope;
    m.header.kind = RouteType::Unicast;
    if prefix_len > 0 {
        m.attributes.push(RouteAttribute::Destination(RouteAddress::Inet(dst)));
    }
    if let Some(g) = gateway {
        m.attributes.push(RouteAttribute::Gateway(RouteAddress::Inet(g)));
    }
    m.attributes.push(RouteAttribute::Oif(index));
    rtnl.request(RouteNetlinkMessage::NewRoute(m), NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, &format!("adding the route to {dst}/{prefix_len}"))
        .map(drop)
}

/// The main table's IPv4 unicast routes.
pub fn routes(rtnl: &mut Rtnl) -> Result<Vec<RouteState>, RtnlError> {
    let mut m = RouteMessage::default();
    m.header.address_family = AddressFamily::Inet;
    let answers = rtnl.request(RouteNetlinkMessage::GetRoute(m), NLM_F_DUMP, "a route dump")?;
    Ok(answers
        .into_iter()
        .filter_map(|a| match a {
            RouteNetlinkMessage::NewRoute(r) if r.header.table == RouteHeader::RT_TABLE_MAIN && r.header.kind == RouteType::Unicast => {
                let mut s = RouteState { dst: Ipv4Addr::UNSPECIFIED, prefix_len: r.header.destination_prefix_length, gateway: None, oif: None, scope: r.header.scope };
                for at in &r.attributes {
                    match at {
                        RouteAttribute::Destination(RouteAddress::Inet(d)) => s.dst = *d,
                        RouteAttribute::Gateway(RouteAddress::Inet(g)) => s.gateway = Some(*g),
                        RouteAttribute::Oif(o) => s.oif = Some(*o),
                        _ => {}
                    }
                }
                Some(s)
            }
            _ => None,
        })
        .collect())
}
