//! The cluster as this node sees it: its Node (name, pod CIDR, InternalIP) and its pods, read
//! out of Kubernetes objects into plain values that the compiler and the lab share.
//!
//! Contract: pure functions of a [`Manifests`] view; errors are sentences naming the object.
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use ipnet::Ipv4Net;
use crate::manifests::kinds::Pod;
use k8s_openapi::api::core::v1::Node;

use crate::manifests::Manifests;
use crate::naming;

pub const DEFAULT_NODE_NAME: &str = "node-1";
pub const DEFAULT_POD_CIDR: &str = "10.244.0.0/24";
/// InternalIP of the default node (kind's nodes use this range too). Only ever used inside
/// network namespaces the lab builds.
pub const DEFAULT_INTERNAL_IP: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 2);

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodeInfo {
    pub name: String,
    pub pod_cidr: Ipv4Net,
    pub internal_ip: Ipv4Addr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum L4Proto {
    Tcp,
    Udp,
    Sctp,
}

impl L4Proto {
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_uppercase().as_str() {
            "TCP" => Some(Self::Tcp),
            "UDP" => Some(Self::Udp),
            "SCTP" => Some(Self::Sctp),
            _ => None,
        }
    }
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Self::Tcp => 6,
            Self::Udp => 17,
            Self::Sctp => 132,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Sctp => "sctp",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ContainerPort {
    pub name: Option<String>,
    pub port: u16,
    pub protocol: L4Proto,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    /// The pod's IPv4 address: the first of `status.podIPs` (else `status.podIP`) that is
    /// IPv4. `None` while it has none (pending, or IPv6 only).
    pub ip: Option<Ipv4Addr>,
    /// The pod object's labels, shared with it and with every pod of the same labels
    /// ([`crate::manifests::reduced::intern_labels`]).
    pub labels: Arc<BTreeMap<String, String>>,
    pub ports: Vec<ContainerPort>,
    /// `spec.nodeName`; `None` means "not bound", which the manifest source takes as this node.
    /// Shared with every other pod and endpoint on that node ([`crate::manifests::reduced::intern_node`]).
    pub node_name: Option<Arc<str>>,
    pub host_network: bool,
    /// `status.phase` is Succeeded or Failed: its containers have ended and its address is
    /// released (another pod may get it), so it is not wired and serves no Service.
    pub completed: bool,
}

impl PodInfo {
    /// Whether the pod is wired by this node's switch: it runs on `node` (or names no node),
    /// has its own network namespace (not hostNetwork) and has not completed.
    pub fn is_local_to(&self, node: &NodeInfo) -> bool {
        !self.host_network && !self.completed && self.node_name.as_deref().is_none_or(|n| n == node.name)
    }

    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Host-side veth name of the pod (see [`naming::pod_interface`]); written when asked
    /// for, as only this node's pods have one.
    pub fn interface(&self) -> String {
        naming::pod_interface(&self.namespace, &self.name)
    }

    /// A bare pod (no labels, ports or node) for unit tests, here and in other crates (the
    /// lab's); panics on an `ip` that is not an IPv4 address.
    pub fn for_test(ns: &str, name: &str, ip: Option<&str>) -> Self {
        PodInfo {
            namespace: ns.into(),
            name: name.into(),
            ip: ip.map(|i| i.parse().expect("test IP")),
            labels: Default::default(),
            ports: vec![],
            node_name: None,
            host_network: false,
            completed: false,
        }
    }
}

/// Why the Node this switch serves cannot be read ([`node_info`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    #[error("no Node named {wanted:?} among the manifests ({nodes} Nodes)")]
    NotFound { wanted: String, nodes: usize },
    #[error("the manifests hold {nodes} Nodes ({names}); say which one this is with --node-name")]
    WhichOne { nodes: usize, names: String },
    #[error("Node {node}: spec.podCIDR {text:?} is not an IPv4 CIDR")]
    PodCidr { node: String, text: String },
}

/// Why a Pod cannot be read ([`pod_info`]); `pod` is its `namespace/name`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PodError {
    #[error("Pod {pod}: status.podIP(s) {ip:?} is not an IP address")]
    PodIp { pod: String, ip: String },
    #[error("Pod {pod}: containerPort protocol {protocol:?} is not TCP, UDP or SCTP")]
    Protocol { pod: String, protocol: String },
    #[error("Pod {pod}: containerPort {port} is not in 1-65535")]
    Port { pod: String, port: i32 },
}

/// The Node this switch serves: `wanted` by name, else the only Node of the view, else the
/// defaults (`node-1`, 10.244.0.0/24).
pub fn node_info(m: &Manifests, wanted: Option<&str>) -> Result<NodeInfo, NodeError> {
    let node = match wanted {
        Some(w) => match m.nodes.get(w) {
            Some(n) => Some(n),
            None if m.nodes.is_empty() => None,
            None => return Err(NodeError::NotFound { wanted: w.to_string(), nodes: m.nodes.len() }),
        },
        None if m.nodes.len() > 1 => {
            return Err(NodeError::WhichOne { nodes: m.nodes.len(), names: m.nodes.keys().cloned().collect::<Vec<_>>().join(", ") })
        }
        None => m.nodes.values().next(),
    };
    let Some(node) = node else {
        return Ok(NodeInfo {
            name: wanted.unwrap_or(DEFAULT_NODE_NAME).to_string(),
            pod_cidr: DEFAULT_POD_CIDR.parse().expect("valid default CIDR"),
            internal_ip: DEFAULT_INTERNAL_IP,
        });
    };
    let name = node.metadata.name.clone().unwrap_or_default();
    let cidr_text = pod_cidr_text(node).unwrap_or_else(|| DEFAULT_POD_CIDR.to_string());
    let pod_cidr: Ipv4Net = cidr_text
        .parse()
        .map_err(|_| NodeError::PodCidr { node: name.clone(), text: cidr_text.clone() })?;
    let internal_ip = ipv4_internal_ip(node).unwrap_or(DEFAULT_INTERNAL_IP);
    Ok(NodeInfo { name, pod_cidr: pod_cidr.trunc(), internal_ip })
}

/// The text of a Node's pod CIDR: the first IPv4 entry of `spec.podCIDRs`, else
/// `spec.podCIDR` (whatever it holds).
fn pod_cidr_text(node: &Node) -> Option<String> {
    let spec = node.spec.as_ref()?;
    spec.pod_cidrs.as_ref().and_then(|c| c.iter().find(|c| c.parse::<Ipv4Net>().is_ok()).cloned()).or_else(|| spec.pod_cidr.clone())
}

/// A Node's first IPv4 InternalIP in `status.addresses`.
pub fn ipv4_internal_ip(node: &Node) -> Option<Ipv4Addr> {
    let addresses = node.status.as_ref().and_then(|s| s.addresses.as_ref());
    addresses.into_iter().flatten().filter(|a| a.type_ == "InternalIP").find_map(|a| a.address.parse().ok())
}

/// Why the Node named `name` cannot be served yet when objects come from the API, or None
/// when it can: it exists, with an IPv4 pod CIDR (`spec.podCIDRs`/`podCIDR`) and an IPv4
/// InternalIP. [`node_info`] falls back to the lab's defaults (a pod CIDR of 10.244.0.0/24)
/// where these are missing, which a real cluster must never get: another node may hold it.
pub fn own_node_incomplete(m: &Manifests, name: &str) -> Option<String> {
    let Some(node) = m.nodes.get(name) else {
        return Some(format!("no Node object named {name:?} yet (--node-name, the DaemonSet's spec.nodeName)"));
    };
    if pod_cidr_text(node).is_none_or(|t| t.parse::<Ipv4Net>().is_err()) {
        return Some(format!(
            "Node {name} has no IPv4 spec.podCIDR yet (kube-controller-manager assigns one with --allocate-node-cidrs; or set it)"
        ));
    }
    if ipv4_internal_ip(node).is_none() {
        return Some(format!("Node {name} has no IPv4 InternalIP in status.addresses yet (the kubelet reports it)"));
    }
    None
}

/// Reads one Pod object.
pub fn pod_info(pod: &Pod) -> Result<PodInfo, PodError> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let name = pod.metadata.name.clone().unwrap_or_default();
    // Only sentences name the pod: its key is written when one is.
    let key = || format!("{namespace}/{name}");
    let status = pod.status.as_ref();
    // podIPs lists podIP first; a dual-stack pod's IPv4 address may come second.
    let texts = status.and_then(|s| s.pod_ips.as_ref()).into_iter().flatten().map(|p| &p.ip).chain(status.and_then(|s| s.pod_ip.as_ref()));
    let mut ip = None;
    for text in texts.filter(|t| !t.is_empty()) {
        match text.parse::<IpAddr>() {
            Ok(IpAddr::V4(a)) => {
                ip = ip.or(Some(a));
            }
            Ok(IpAddr::V6(_)) => {} // served once IPv6 is
            Err(_) => return Err(PodError::PodIp { pod: key(), ip: text.clone() }),
        }
    }
    let completed = matches!(status.and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"));
    let spec = pod.spec.as_ref();
    let mut ports = Vec::new();
    for c in spec.iter().flat_map(|s| &s.containers) {
        for p in c.ports.iter().flatten() {
            let protocol = match p.protocol.as_deref() {
                None => L4Proto::Tcp,
                Some(s) => {
                    L4Proto::parse(s).ok_or_else(|| PodError::Protocol { pod: key(), protocol: s.to_string() })?
                }
            };
            let port = u16::try_from(p.container_port)
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| PodError::Port { pod: key(), port: p.container_port })?;
            ports.push(ContainerPort { name: p.name.clone(), port, protocol });
        }
    }
    Ok(PodInfo {
        labels: Arc::clone(&pod.labels),
        node_name: spec.and_then(|s| s.node_name.clone()),
        host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
        completed,
        namespace,
        name,
        ip,
        ports,
    })
}

/// Every pod of the view that runs on `node` with its own network namespace (not hostNetwork).
pub fn local_pods(m: &Manifests, node: &NodeInfo) -> Result<Vec<PodInfo>, PodError> {
    let mut out = Vec::new();
    for pod in m.pods.values() {
        let p = pod_info(pod)?;
        if p.is_local_to(node) {
            out.push(p);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "x"},
            "spec": {"containers": [{"name": "c"}]},
            "status": status,
        }))
        .unwrap()
    }

    fn node() -> NodeInfo {
        NodeInfo { name: "n".into(), pod_cidr: "10.244.0.0/24".parse().unwrap(), internal_ip: DEFAULT_INTERNAL_IP }
    }

    #[test]
    fn the_ipv4_address_of_a_dual_stack_pod_is_its_address_whichever_comes_first() {
        let v6_first = pod(serde_json::json!({"podIP": "fd00::5", "podIPs": [{"ip": "fd00::5"}, {"ip": "10.244.0.5"}]}));
        assert_eq!(pod_info(&v6_first).unwrap().ip, Some(Ipv4Addr::new(10, 244, 0, 5)));
        let v4_first = pod(serde_json::json!({"podIP": "10.244.0.6", "podIPs": [{"ip": "10.244.0.6"}, {"ip": "fd00::6"}]}));
        assert_eq!(pod_info(&v4_first).unwrap().ip, Some(Ipv4Addr::new(10, 244, 0, 6)));
        let only_pod_ip = pod(serde_json::json!({"podIP": "10.244.0.7"}));
        assert_eq!(pod_info(&only_pod_ip).unwrap().ip, Some(Ipv4Addr::new(10, 244, 0, 7)));
    }

    #[test]
    fn an_ipv6_only_pod_has_no_address_and_is_no_error() {
        let p = pod_info(&pod(serde_json::json!({"podIP": "fd00::9", "podIPs": [{"ip": "fd00::9"}]}))).unwrap();
        assert_eq!(p.ip, None);
    }

    #[test]
    fn an_address_that_is_no_ip_is_an_error() {
        let e = pod_info(&pod(serde_json::json!({"podIP": "10.244.0.300"}))).unwrap_err();
        assert_eq!(e.to_string(), "Pod x/p: status.podIP(s) \"10.244.0.300\" is not an IP address");
        let e = pod_info(&pod(serde_json::json!({"podIPs": [{"ip": "10.244.0.8"}, {"ip": "nonsense"}]}))).unwrap_err();
        assert!(e.to_string().contains("\"nonsense\""), "{e}");
    }

    #[test]
    fn completed_pods_are_not_wired() {
        for (phase, completed) in [("Running", false), ("Pending", false), ("Succeeded", true), ("Failed", true)] {
            let p = pod_info(&pod(serde_json::json!({"podIP": "10.244.0.5", "phase": phase}))).unwrap();
            assert_eq!(p.completed, completed, "{phase}");
            assert_eq!(p.is_local_to(&node()), !completed, "{phase}");
        }
    }
}
