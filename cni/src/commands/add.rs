//! ADD (see the module contract of [`super`]).
use super::*;

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
    /// The attachment record: data directory, container ID, interface.
    record: Option<(std::path::PathBuf, String, String)>,
}

impl Made<'_> {
    fn undo(mut self) {
        if let Some((dir, container_id, ifname)) = &self.record {
            cni_records::remove(dir, container_id, ifname);
        }
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
    let mut pod_rtnl = rtnl::open_in(netns_path).map_err(netlink_err("opening netlink in the container's namespace"))?;
    if link::link(&mut pod_rtnl, &p.ifname).map_err(netlink_err("looking up the container's interface"))?.is_some() {
        return Err(CniError::new(code::INVALID_CONFIG, "the interface already exists in the container", format!("{} in {}", p.ifname, p.netns)));
    }
    let prev = conf.prev_result()?;
    let ipam = ipam_of(conf, p)?;
    // The specification: when a delegated plugin fails on ADD, run its DEL before failing.
    let ipam_result = ipam.add().inspect_err(|_| {
        if let Err(e) = ipam.del() {
            eprintln!("podswitch-cni: IPAM DEL after its failed ADD: {e}");
        }
    })?;
    let mut made = Made { ipam: &ipam, host_rtnl: None, host_if: None, record: None };
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

    let mut host = rtnl::open().map_err(netlink_err("opening netlink"))?;
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
    let nl = netlink_err("configuring the pod's interface");
    let host_state = link::link(host, host_if).map_err(&nl)?.ok_or_else(|| CniError::new(code::NETLINK, "the pod's host interface vanished", host_if.to_string()))?;
    let offload = |e: offloads::OffloadError| CniError::from_source(code::NETLINK, "setting up the pod's interface", &e);
    offloads::disable_ipv6(host_if).map_err(offload)?;
    link::set_up(host, host_state.index, host_if).map_err(&nl)?;

    // The record as soon as the host side is up: it is what the switch wires the port from
    // (the Pod object may not have status.podIP, or not be there, before ADD returns), and the
    // switch attaches the port while the pod's side is being set up (nothing in the pod sends
    // before ADD returns).
    let address = Ipv4Net::new(ip, 32).expect("a /32");
    let data_dir = conf.data_dir();
    cni_records::write(
        &data_dir,
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
    made.record = Some((data_dir, p.container_id.clone(), p.ifname.clone()));

    offloads::disable_ipv6_in(netns_path, &p.ifname).map_err(offload)?;
    offloads::tx_checksum_off(netns_path, &p.ifname).map_err(offload)?;

    let pod = link::link(pod_rtnl, &p.ifname).map_err(&nl)?.ok_or_else(|| {
        CniError::new(code::NETLINK, "the pod's interface vanished", format!("{} in {}", p.ifname, p.netns))
    })?;
    link::add_address(pod_rtnl, pod.index, ip, 32).map_err(&nl)?;
    link::set_up(pod_rtnl, pod.index, &p.ifname).map_err(&nl)?;
    // The gateway's MAC is the switch port's, the host side's: a permanent entry, so that a
    // pod that sends before the switch has attached its port (it cannot answer ARP yet) does
    // not wait for the kernel's ARP retry, a second later, once it has.
    let host_mac = host_state.mac.ok_or_else(|| CniError::new(code::NETLINK, "the pod's host interface has no MAC", host_if.to_string()))?;
    link::set_permanent_neighbour(pod_rtnl, pod.index, gw, host_mac).map_err(&nl)?;
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
