//! The six commands: what each does, in order, and what it undoes on failure.
//!
//! Contract:
//! - ADD: the Pod comes from `CNI_ARGS` (`K8S_POD_NAMESPACE`, `K8S_POD_NAME`; code 4 without
//!   them). The IPAM plugin gives the address (only IPv4: the switch is IPv4-only), then the
//!   veth pair is made: host side `naming::pod_interface(ns, name)`, pod side `CNI_IFNAME` in
//!   `CNI_NETNS` with MAC `naming::pod_mac(ip)`, `ip/32`, the configured MTU on both ends, TX
//!   checksum offload off and IPv6 off, routes `169.254.1.1 scope link` and `default via
//!   169.254.1.1` (IPAM's other routes also via 169.254.1.1: the switch is the only next hop);
//!   a permanent neighbour entry for 169.254.1.1 with the host side's MAC (the switch port's: a
//!   pod that sends before its port is attached does not wait out an ARP retry), both ends
//!   up. It records the attachment (`podswitch_control::cni_records`: what the
//!   switch wires the port from); with `waitForSwitch` it then waits for the switch to attach the port
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
//! - GC: every attachment recorded by ADD ((`podswitch_control::cni_records`)) that is not in
//!   `cni.dev/valid-attachments` is removed as DEL would (interface if its namespace still
//!   exists, IPAM's DEL for its container ID and ifname, the record); then IPAM's GC when that
//!   plugin speaks 1.1.0. It goes on past errors and reports them all at the end.
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use ipnet::{IpNet, Ipv4Net};
use netlink_packet_route::route::RouteScope;
use podswitch_control::naming;

use podswitch_control::cni_records::{self, Record};
use crate::config::NetConf;
use crate::env::Params;
use crate::error::{chain, code, CniError};
use crate::ipam::Ipam;
use crate::link;
use crate::netns::NetnsError;
use crate::offloads;
use crate::result::{AddResult, Interface, IpConfig, Route, VersionResult, SUPPORTED_VERSIONS};
use crate::rtnl::{self, Rtnl, RtnlError};
use crate::switch_port::{self, PortWait};

mod add;
mod check;
mod del;
mod gc;
mod status;

pub use add::add;
pub use check::check;
pub use del::del;
pub use gc::gc;
pub use status::status;

fn netlink_err<E: Into<RtnlError>>(what: &str) -> impl Fn(E) -> CniError + '_ {
    move |e| match e.into() {
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

