//! The interface's surroundings: entering a network namespace (per thread), the interface's
//! own addresses, and the MAC address of the next hop.
//!
//! Contract:
//! - [`enter`] moves the calling thread (only) into a named network namespace the way
//!   `ip netns exec` does: a private mount namespace for the thread with that namespace's
//!   sysfs on /sys (the AF_XDP layer reads interface facts from /sys/class/net). Other threads
//!   and the machine's own mounts are untouched.
//! - Everything else reads the calling thread's namespace (`/proc/thread-self/net`, netlink).
//! - [`resolve_dst_mac`] finds the next hop of a destination on the interface (longest-prefix
//!   match over the IPv4 routes of that interface) and its MAC in the neighbour table; when it
//!   is missing it sends one UDP datagram to the destination's discard port through the kernel
//!   (which makes the kernel resolve it) and waits up to 2 s.
use std::fs::File;
use std::net::{Ipv4Addr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

/// Moves this thread into network namespace `name` (a name under /run/netns or a path).
pub fn enter(name: &str) -> Result<()> {
    let path = if name.contains('/') { name.to_string() } else { format!("/run/netns/{name}") };
    let f = File::open(&path).with_context(|| format!("network namespace {name} ({path})"))?;
    setns(&f, CloneFlags::CLONE_NEWNET).with_context(|| format!("entering network namespace {name} (needs root)"))?;
    unshare(CloneFlags::CLONE_FS | CloneFlags::CLONE_NEWNS).context("a private mount namespace for this thread")?;
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_SLAVE | MsFlags::MS_REC, None::<&str>)
        .context("making / a slave mount")?;
    let _ = umount2("/sys", MntFlags::MNT_DETACH);
    mount(Some(name), "/sys", Some("sysfs"), MsFlags::empty(), None::<&str>).context("mounting the namespace's sysfs")?;
    Ok(())
}

/// The interface's MAC address.
pub fn iface_mac(ifname: &str) -> Result<[u8; 6]> {
    switch::afxdp::iface::mac(ifname).map_err(|e| anyhow!("{e}"))
}

/// The interface's first IPv4 address, if it has one.
pub fn iface_ipv4(ifname: &str) -> Option<Ipv4Addr> {
    let addrs = nix::ifaddrs::getifaddrs().ok()?;
    for a in addrs {
        if a.interface_name != ifname {
            continue;
        }
        if let Some(sin) = a.address.as_ref().and_then(|s| s.as_sockaddr_in()) {
            return Some(sin.ip());
        }
    }
    None
}

fn hex_addr(s: &str) -> Option<Ipv4Addr> {
    // /proc/net/route prints the network-order address as a host-order u32.
    u32::from_str_radix(s, 16).ok().map(|v| Ipv4Addr::from(v.to_ne_bytes()))
}

/// Next hop of `dst` through `ifname` from a /proc/net/route text: the gateway of the longest
/// matching route, or `dst` itself for a directly connected one.
pub fn next_hop(route_table: &str, ifname: &str, dst: Ipv4Addr) -> Option<Ipv4Addr> {
    let mut best: Option<(u32, Ipv4Addr)> = None;
    for line in route_table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 || f[0] != ifname {
            continue;
        }
        let (Some(dest), Some(gw), Some(mask)) = (hex_addr(f[1]), hex_addr(f[2]), hex_addr(f[7])) else { continue };
        let flags = u32::from_str_radix(f[3], 16).unwrap_or(0);
        if flags & 1 == 0 {
            continue; // RTF_UP
        }
        let (m, d) = (u32::from(mask), u32::from(dest));
        if u32::from(dst) & m != d & m {
            continue;
        }
        if best.is_none_or(|(bm, _)| m.count_ones() > bm) {
            let hop = if gw.is_unspecified() { dst } else { gw };
            best = Some((m.count_ones(), hop));
        }
    }
    best.map(|(_, h)| h)
}

/// The MAC of `ip` on `ifname` in a /proc/net/arp text (complete entries only).
pub fn arp_lookup(arp_table: &str, ifname: &str, ip: Ipv4Addr) -> Option<[u8; 6]> {
    for line in arp_table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 6 || f[5] != ifname || f[0].parse::<Ipv4Addr>().ok() != Some(ip) {
            continue;
        }
        let flags = u32::from_str_radix(f[2].trim_start_matches("0x"), 16).unwrap_or(0);
        if flags & 0x2 == 0 {
            continue; // ATF_COM
        }
        return switch::afxdp::iface::parse_mac(f[3]).filter(|m| m != &[0; 6]);
    }
    None
}

/// The destination MAC for `dst` sent on `ifname`; see the module contract.
pub fn resolve_dst_mac(ifname: &str, dst: Ipv4Addr) -> Result<[u8; 6]> {
    let routes = std::fs::read_to_string("/proc/thread-self/net/route").context("reading the routing table")?;
    let hop = next_hop(&routes, ifname, dst)
        .ok_or_else(|| anyhow!("no route to {dst} through {ifname}: give --dst-mac"))?;
    let read_arp = || std::fs::read_to_string("/proc/thread-self/net/arp").unwrap_or_default();
    if let Some(m) = arp_lookup(&read_arp(), ifname, hop) {
        return Ok(m);
    }
    if let Ok(s) = UdpSocket::bind("0.0.0.0:0") {
        let _ = s.send_to(b"pktgen: resolving the next hop", (dst, 9));
    }
    let end = Instant::now() + Duration::from_secs(2);
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
        if let Some(m) = arp_lookup(&read_arp(), ifname, hop) {
            return Ok(m);
        }
    }
    bail!(
        "the MAC address of next hop {hop} (for {dst}) on {ifname} is unknown (not in the neighbour table after 2 s): give --dst-mac \
         (a pktgen receiving on {hop}'s interface takes every frame, ARP included, so its host cannot answer)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTES: &str = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
        eth0\t00000000\t0101FEA9\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
        eth0\t0101FEA9\t00000000\t0005\t0\t0\t0\tFFFFFFFF\t0\t0\t0\n\
        eth1\t0000630A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";

    #[test]
    fn routes() {
        // Pod style: default via 169.254.1.1 (a link-scope host route).
        assert_eq!(next_hop(ROUTES, "eth0", Ipv4Addr::new(10, 244, 0, 11)), Some(Ipv4Addr::new(169, 254, 1, 1)));
        assert_eq!(next_hop(ROUTES, "eth0", Ipv4Addr::new(169, 254, 1, 1)), Some(Ipv4Addr::new(169, 254, 1, 1)));
        // Connected /24.
        assert_eq!(next_hop(ROUTES, "eth1", Ipv4Addr::new(10, 99, 0, 2)), Some(Ipv4Addr::new(10, 99, 0, 2)));
        assert_eq!(next_hop(ROUTES, "eth1", Ipv4Addr::new(10, 98, 0, 2)), None);
        assert_eq!(next_hop(ROUTES, "eth9", Ipv4Addr::new(10, 99, 0, 2)), None);
    }

    #[test]
    fn arp() {
        let t = "IP address       HW type     Flags       HW address            Mask     Device\n\
                 169.254.1.1      0x1         0x2         ee:ee:ee:ee:ee:ee     *        eth0\n\
                 10.99.0.2        0x1         0x0         00:00:00:00:00:00     *        eth1\n";
        assert_eq!(arp_lookup(t, "eth0", Ipv4Addr::new(169, 254, 1, 1)), Some([0xee; 6]));
        assert_eq!(arp_lookup(t, "eth1", Ipv4Addr::new(10, 99, 0, 2)), None, "incomplete");
        assert_eq!(arp_lookup(t, "eth1", Ipv4Addr::new(169, 254, 1, 1)), None, "other device");
    }
}
