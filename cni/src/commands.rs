//! The six commands: what each does, in order, and what it undoes on failure.
//!
//! Contract:
//! - ADD: the Pod comes from `CNI_ARGS` (`K8S_POD_NAMESPACE`, `K8S_POD_NAME`; code 4 without
//!   them). The IPAM plugin gives the address (only IPv4: the switch is IPv4-only), then the
//!   veth pair is made: host side `naming::pod_interface(ns, name)`, pod side `CNI_IFNAME` in
//!   `CNI_NETNS` with MAC `naming::pod_mac(ip)`, `ip/32`, the configured MTU on both ends, TX
//!   checksum offload off and IPv6 off, routes `169.254.1.1 scope link` and `default via
//!   169.254.1.1` (IPAM's other routes also via 169.254.1.1: the switch is the only next hop);
//!   both ends up. With `waitForSwitch` it then waits for the switch to attach the port
//!   (code 50 when the switch never answered, 11 when it answered without attaching). Any
//!   failure after IPAM's ADD deletes the pair and runs IPAM's DEL before the error is
//!   returned: nothing is left behind. The result lists the host interface, then the pod's,
//!   after those of a `prevResult` (whose IPs and routes are kept).
//! - DEL: IPAM's DEL, then `CNI_IFNAME` in `CNI_NETNS` is deleted (which removes the pair).
//!   A missing namespace or interface is success; so is a second DEL. The host side is never
//!   deleted by name: a newer sandbox of the same Pod may own that name by then.
//! - CHECK: needs `prevResult`; verifies the pod interface (in `CNI_NETNS`, up, MAC, MTU), its
//!   addresses and routes as listed, the host side (present, up), IPAM's CHECK, and with
//!   `waitForSwitch` that the switch has the port attached.
//! - STATUS: success when the switch answers on its control socket, else code 50; also
//!   IPAM's STATUS when that plugin speaks 1.1.0.
//! - GC: every attachment recorded by ADD ([`crate::attachments`]) that is not in
//!   `cni.dev/valid-attachments` is removed as DEL would (interface if its namespace still
//!   exists, IPAM's DEL for its container ID and ifname, the record); then IPAM's GC when that
//!   plugin speaks 1.1.0. It goes on past errors and reports them all at the end.
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use ipnet::{IpNet, Ipv4Net};
use netlink_packet_route::route::RouteScope;
use podswitch_control::naming;

use crate::attachments::{self, Record};
use crate::config::NetConf;
use crate::env::Params;
use crate::error::{chain, code, CniError};
use crate::ipam::Ipam;
use crate::link;
use crate::netns::NetnsError;
use crate::offloads;
use crate::result::{AddResult, Interface, IpConfig, Route, VersionResult, SUPPORTED_VERSIONS};
use crate::rtnl::{Rtnl, RtnlError};
use crate::switch_port::{self, PortWait};

fn netlink_err(what: &str) -> impl Fn(RtnlError) -> CniError + '_ {
    move |e| match e {
        RtnlError::Netns(NetnsError::Missing(p)) => CniError::new(code::UNKNOWN_CONTAINER, "the container's network namespace does not exist", p),
        e => CniError::from_source(code::NETLINK, what, &e),
    }
}

fn ipam_of(conf: &NetConf, p: &Params) -> Result<Ipam, CniError> {
    let (kind, raw) = conf.ipam_config()?;
    Ipam::find(&kind, &p.path, raw)
}

fn pod_of(p: &Params) -> Result<(String, String), CniError> {
    p.pod().map(|(n, m)| (n.to_string(), m.to_string())).ok_or_else(|| {
        CniError::new(code::INVALID_ENVIRONMENT, "CNI_ARGS lacks K8S_POD_NAMESPACE or K8S_POD_NAME", "podswitch names the port after the Pod: both are needed")
    })
}

pub fn version(conf_version: Option<&str>) -> VersionResult {
    VersionResult {
        cni_version: conf_version.unwrap_or(crate::result::CURRENT_VERSION).to_string(),
        supported_versions: SUPPORTED_VERSIONS.iter().map(ToString::to_string).collect(),
    }
}

/// Whether `f` and the file at `other` are the same (device and inode): a namespace is its
/// nsfs inode.
fn same_file(f: &File, other: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (f.metadata(), std::fs::metadata(other)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// What ADD made so far, for the undo.
struct Made<'a> {
    ipam: &'a Ipam,
    host_rtnl: Option<Rtnl>,
    host_if: Option<String>,
}

impl Made<'_> {
    fn undo(mut self) {
        if let (Some(r), Some(h)) = (self.host_rtnl.as_mut(), self.host_if.as_deref()) {
            if let Err(e) = link::delete(r, h) {
                eprintln!("podswitch-cni: undoing ADD: deleting {h}: {}", chain(&e));
            }
        }
        if let Err(e) = self.ipam.del() {
            eprintln!("podswitch-cni: undoing ADD: IPAM DEL: {e}");
        }
    }
}

pub fn add(conf: &NetConf, p: &Params) -> Result<AddResult, CniError> {
    let (pod_ns, pod_name) = pod_of(p)?;
    let key = format!("{pod_ns}/{pod_name}");
    let host_if = naming::pod_interface(&pod_ns, &pod_name);
    let netns_path = Path::new(&p.netns);
    let netns = File::open(netns_path).map_err(|e| CniError::from_source(code::UNKNOWN_CONTAINER, "cannot open the container's network namespace", &e))?;
    if same_file(&netns, Path::new("/proc/thread-self/ns/net")) {
        return Err(CniError::new(code::INVALID_ENVIRONMENT, "CNI_NETNS is the plugin's own network namespace", format!("CNI_NETNS={}", p.netns)));
    }
    let mut pod_rtnl = Rtnl::open_in(netns_path).map_err(netlink_err("opening netlink in the container's namespace"))?;
    if link::link(&mut pod_rtnl, &p.ifname).map_err(netlink_err("looking up the container's interface"))?.is_some() {
        return Err(CniError::new(code::INVALID_CONFIG, "the interface already exists in the container", format!("{} in {}", p.ifname, p.netns)));
    }
    let prev = conf.prev_result()?;
    let ipam = ipam_of(conf, p)?;
    let ipam_result = ipam.add()?;
    let mut made = Made { ipam: &ipam, host_rtnl: None, host_if: None };
    match add_after_ipam(conf, p, &key, &host_if, &netns, &mut pod_rtnl, &ipam_result, &mut made, prev) {
        Ok(r) => Ok(r),
        Err(e) => {
            made.undo();
            Err(e)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn add_after_ipam(
    conf: &NetConf,
    p: &Params,
    key: &str,
    host_if: &str,
    netns: &File,
    pod_rtnl: &mut Rtnl,
    ipam_result: &AddResult,
    made: &mut Made<'_>,
    prev: Option<AddResult>,
) -> Result<AddResult, CniError> {
    let mut v4 = ipam_result.ips.iter().filter_map(|c| match c.address {
        IpNet::V4(a) => Some(a.addr()),
        IpNet::V6(_) => None,
    });
    let ip = v4.next().ok_or_else(|| CniError::new(code::INVALID_CONFIG, "the IPAM plugin gave no IPv4 address", format!("{:?}", ipam_result.ips)))?;
    if v4.next().is_some() || ipam_result.ips.iter().any(|c| c.address.addr().is_ipv6()) {
        return Err(CniError::new(code::INVALID_CONFIG, "podswitch takes one IPv4 address per pod", format!("the IPAM plugin gave {:?}", ipam_result.ips)));
    }
    let mtu = conf.mtu();
    let mac = naming::pod_mac(ip);
    let gw = naming::GATEWAY_IP;
    let netns_path = Path::new(&p.netns);

    let mut host = Rtnl::open().map_err(netlink_err("opening netlink"))?;
    link::create_veth(&mut host, host_if, &p.ifname, netns, mtu, mac).map_err(|e| match e.errno() {
        Some(libc::EEXIST) => CniError::new(
            code::TRY_AGAIN_LATER,
            "the pod's host interface exists already",
            format!("{host_if} (of {key}) is still there: another sandbox of this Pod has not been deleted yet"),
        ),
        _ => netlink_err("creating the veth pair")(e),
    })?;
    made.host_rtnl = Some(host);
    made.host_if = Some(host_if.to_string());
    let host = made.host_rtnl.as_mut().expect("just set");

    let offload = |e: offloads::OffloadError| CniError::from_source(code::NETLINK, "setting up the pod's interface", &e);
    offloads::disable_ipv6(host_if).map_err(offload)?;
    offloads::disable_ipv6_in(netns_path, &p.ifname).map_err(offload)?;
    offloads::tx_checksum_off(netns_path, &p.ifname).map_err(offload)?;

    let nl = netlink_err("configuring the pod's interface");
    let pod = link::link(pod_rtnl, &p.ifname).map_err(&nl)?.ok_or_else(|| {
        CniError::new(code::NETLINK, "the pod's interface vanished", format!("{} in {}", p.ifname, p.netns))
    })?;
    link::add_address(pod_rtnl, pod.index, ip, 32).map_err(&nl)?;
    link::set_up(pod_rtnl, pod.index, &p.ifname).map_err(&nl)?;
    link::add_route(pod_rtnl, pod.index, gw, 32, None, RouteScope::Link).map_err(&nl)?;
    link::add_route(pod_rtnl, pod.index, Ipv4Addr::UNSPECIFIED, 0, Some(gw), RouteScope::Universe).map_err(&nl)?;
    let mut routes = vec![Route::via("0.0.0.0/0".parse().expect("a prefix"), Some(IpAddr::V4(gw)))];
    for r in &ipam_result.routes {
        if let IpNet::V4(dst) = r.dst {
            if dst.prefix_len() == 0 {
                continue;
            }
            link::add_route(pod_rtnl, pod.index, dst.network(), dst.prefix_len(), Some(gw), RouteScope::Universe).map_err(&nl)?;
            routes.push(Route::via(IpNet::V4(dst.trunc()), Some(IpAddr::V4(gw))));
        }
    }
    let host_state = link::link(host, host_if).map_err(&nl)?.ok_or_else(|| CniError::new(code::NETLINK, "the pod's host interface vanished", host_if.to_string()))?;
    link::set_up(host, host_state.index, host_if).map_err(&nl)?;

    if conf.wait_for_switch() {
        let socket = conf.control_socket();
        match switch_port::wait_attached(&socket, host_if, key, conf.switch_wait()) {
            PortWait::Attached => {}
            PortWait::Pending(why) => {
                return Err(CniError::new(
                    code::TRY_AGAIN_LATER,
                    "the switch did not attach the pod's port in time",
                    format!(
                        "{host_if} of {key} not attached after {:?} (switch at {}): {}",
                        conf.switch_wait(),
                        socket.display(),
                        why.unwrap_or_else(|| "the switch gave no reason (is the Pod object on this node yet?)".into())
                    ),
                ));
            }
            PortWait::Unreachable(e) => {
                return Err(CniError::new(code::NOT_AVAILABLE, "the switch is not running", format!("no answer on {} within {:?}: {e}", socket.display(), conf.switch_wait())));
            }
        }
    }

    let address = Ipv4Net::new(ip, 32).expect("a /32");
    attachments::write(
        &conf.data_dir(),
        &Record {
            container_id: p.container_id.clone(),
            ifname: p.ifname.clone(),
            netns: p.netns.clone(),
            host_interface: host_if.to_string(),
            pod: key.to_string(),
            address: address.to_string(),
        },
    )
    .map_err(|e| CniError::from_source(code::IO_FAILURE, "recording the attachment", &e))?;

    let mut result = prev.unwrap_or_default();
    result.interfaces.push(Interface { name: host_if.to_string(), mac: host_state.mac.map(naming::mac_string), ..Default::default() });
    result.interfaces.push(Interface {
        name: p.ifname.clone(),
        mac: Some(naming::mac_string(mac)),
        mtu: Some(mtu),
        sandbox: Some(p.netns.clone()),
        ..Default::default()
    });
    result.ips.push(IpConfig { address: IpNet::V4(address), gateway: Some(IpAddr::V4(gw)), interface: Some(result.interfaces.len() - 1) });
    result.routes.extend(routes);
    match &conf.dns {
        Some(d) if !d.is_empty() => result.dns = d.clone(),
        _ if result.dns.is_empty() => result.dns = ipam_result.dns.clone(),
        _ => {}
    }
    Ok(result)
}

pub fn del(conf: &NetConf, p: &Params) -> Result<(), CniError> {
    // IPAM first, as the reference plugins do; its failure is reported after the rest is done.
    let ipam = ipam_of(conf, p).and_then(|i| i.del());
    if !p.netns.is_empty() {
        match Rtnl::open_in(Path::new(&p.netns)) {
            Ok(mut r) => {
                link::delete(&mut r, &p.ifname).map_err(netlink_err("deleting the pod's interface"))?;
            }
            Err(RtnlError::Netns(NetnsError::Missing(_))) => {}
            Err(e) => return Err(netlink_err("opening netlink in the container's namespace")(e)),
        }
    }
    attachments::remove(&conf.data_dir(), &p.container_id, &p.ifname);
    ipam
}

fn check_failed(what: impl Into<String>, details: impl Into<String>) -> CniError {
    CniError::new(code::CHECK_FAILED, what, details)
}

pub fn check(conf: &NetConf, p: &Params) -> Result<(), CniError> {
    let prev = conf.prev_result()?.ok_or_else(|| CniError::new(code::INVALID_CONFIG, "CHECK needs prevResult", "the configuration has no prevResult"))?;
    let ipam = ipam_of(conf, p)?;
    ipam.check()?;
    let (idx, want) = prev
        .interfaces
        .iter()
        .enumerate()
        .find(|(_, i)| i.name == p.ifname && i.sandbox.as_deref() == Some(p.netns.as_str()))
        .ok_or_else(|| check_failed("prevResult lists no such interface", format!("{} in {}", p.ifname, p.netns)))?;
    let mut r = Rtnl::open_in(Path::new(&p.netns)).map_err(netlink_err("opening netlink in the container's namespace"))?;
    let nl = netlink_err("reading the pod's interface");
    let got = link::link(&mut r, &p.ifname).map_err(&nl)?.ok_or_else(|| check_failed("the pod's interface is missing", format!("{} in {}", p.ifname, p.netns)))?;
    if !got.up {
        return Err(check_failed("the pod's interface is down", p.ifname.clone()));
    }
    if let Some(mac) = &want.mac {
        let have = got.mac.map(naming::mac_string).unwrap_or_default();
        if !have.eq_ignore_ascii_case(mac) {
            return Err(check_failed("the pod's interface has another MAC", format!("{} has {have}, prevResult says {mac}", p.ifname)));
        }
    }
    if got.mtu != Some(conf.mtu()) {
        return Err(check_failed("the pod's interface has another MTU", format!("{} has {:?}, the configuration says {}", p.ifname, got.mtu, conf.mtu())));
    }
    let addrs = link::addresses(&mut r, got.index).map_err(&nl)?;
    for ipc in prev.ips.iter().filter(|c| c.interface == Some(idx)) {
        if let IpNet::V4(a) = ipc.address {
            if !addrs.contains(&(a.addr(), a.prefix_len())) {
                return Err(check_failed("the pod's interface lacks an address", format!("{a} not on {} (has {addrs:?})", p.ifname)));
            }
        }
    }
    let routes = link::routes(&mut r).map_err(&nl)?;
    for rt in &prev.routes {
        let IpNet::V4(dst) = rt.dst else { continue };
        let gw = match rt.gw {
            Some(IpAddr::V4(g)) => Some(g),
            _ => None,
        };
        let found = routes.iter().any(|k| k.dst == dst.network() && k.prefix_len == dst.prefix_len() && (gw.is_none() || k.gateway == gw) && k.oif == Some(got.index));
        if !found {
            return Err(check_failed("the pod lacks a route", format!("{dst} via {gw:?} dev {}", p.ifname)));
        }
    }
    let (pod_ns, pod_name) = pod_of(p)?;
    let host_if = naming::pod_interface(&pod_ns, &pod_name);
    let mut host = Rtnl::open().map_err(netlink_err("opening netlink"))?;
    match link::link(&mut host, &host_if).map_err(netlink_err("reading the pod's host interface"))? {
        Some(h) if h.up => {}
        Some(_) => return Err(check_failed("the pod's host interface is down", host_if)),
        None => return Err(check_failed("the pod's host interface is missing", host_if)),
    }
    if conf.wait_for_switch() {
        let key = format!("{pod_ns}/{pod_name}");
        match switch_port::wait_attached(&conf.control_socket(), &host_if, &key, conf.switch_wait()) {
            PortWait::Attached => {}
            PortWait::Pending(why) => return Err(check_failed("the switch has not attached the pod's port", format!("{host_if} of {key}: {}", why.unwrap_or_default()))),
            PortWait::Unreachable(e) => return Err(CniError::new(code::NOT_AVAILABLE, "the switch is not running", e)),
        }
    }
    Ok(())
}

pub fn status(conf: &NetConf, p: &Params) -> Result<(), CniError> {
    let socket = conf.control_socket();
    switch_port::answers(&socket).map_err(|e| CniError::from_source(code::NOT_AVAILABLE, "the switch is not running", &e))?;
    // Without an IPAM section there is no delegate to ask.
    if let Ok((kind, raw)) = conf.ipam_config() {
        Ipam::find(&kind, &p.path, raw)?.status()?;
    }
    Ok(())
}

pub fn gc(conf: &NetConf, p: &Params) -> Result<(), CniError> {
    let ipam = ipam_of(conf, p)?;
    let valid = conf.valid_attachments();
    let dir = conf.data_dir();
    let records = attachments::list(&dir).map_err(|e| CniError::from_source(code::IO_FAILURE, "reading the attachment records", &e))?;
    let mut errors = Vec::new();
    for r in records.iter().filter(|r| !valid.iter().any(|v| v.container_id == r.container_id && v.ifname == r.ifname)) {
        match Rtnl::open_in(Path::new(&r.netns)) {
            Ok(mut nl) => {
                if let Err(e) = link::delete(&mut nl, &r.ifname) {
                    errors.push(format!("{}:{}: deleting {}: {}", r.container_id, r.ifname, r.ifname, chain(&e)));
                }
            }
            Err(RtnlError::Netns(NetnsError::Missing(_))) => {}
            Err(e) => errors.push(format!("{}:{}: {}", r.container_id, r.ifname, chain(&e))),
        }
        match ipam.del_for(&r.container_id, &r.ifname) {
            Ok(()) => attachments::remove(&dir, &r.container_id, &r.ifname),
            Err(e) => errors.push(format!("{}:{}: IPAM DEL: {e}", r.container_id, r.ifname)),
        }
    }
    if let Err(e) = ipam.gc() {
        errors.push(format!("IPAM GC: {e}"));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(CniError::new(code::TRY_AGAIN_LATER, "GC left stale attachments", errors.join("; ")))
    }
}
