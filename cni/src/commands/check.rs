//! CHECK (see the module contract of [`super`]).
use super::*;

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
    let mut r = rtnl::open_in(Path::new(&p.netns)).map_err(netlink_err("opening netlink in the container's namespace"))?;
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
    let mut host = rtnl::open().map_err(netlink_err("opening netlink"))?;
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
