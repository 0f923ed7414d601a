//! The cluster as this node sees it: its Node (name, pod CIDR, InternalIP) and its pods, read
//! out of Kubernetes objects into plain values that the compiler and the lab share.
//!
//! Contract: pure functions of a [`Manifests`] view; errors are sentences naming the object.
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Pod;

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
    /// `status.podIP`, when set.
    pub ip: Option<Ipv4Addr>,
    pub labels: BTreeMap<String, String>,
    pub ports: Vec<ContainerPort>,
    /// `spec.nodeName`; `None` means "not bound", which the manifest source takes as this node.
    pub node_name: Option<String>,
    pub host_network: bool,
}

impl PodInfo {
    /// Whether the pod is wired by this node's switch: it runs on `node` (or names no node)
    /// and has its own network namespace (not hostNetwork).
    pub fn is_local_to(&self, node: &NodeInfo) -> bool {
        !self.host_network && self.node_name.as_deref().is_none_or(|n| n == node.name)
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
    #[error("Pod {pod}: status.podIP {ip:?} is not an IPv4 address")]
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
    let spec = node.spec.clone().unwrap_or_default();
    let cidr_text = spec
        .pod_cidrs
        .as_ref()
        .and_then(|c| c.iter().find(|c| c.parse::<Ipv4Net>().is_ok()).cloned())
        .or(spec.pod_cidr.clone())
        .unwrap_or_else(|| DEFAULT_POD_CIDR.to_string());
    let pod_cidr: Ipv4Net = cidr_text
        .parse()
        .map_err(|_| NodeError::PodCidr { node: name.clone(), text: cidr_text.clone() })?;
    let internal_ip = match node.status.as_ref().and_then(|s| s.addresses.as_ref()) {
        Some(addrs) => match addrs.iter().find(|a| a.type_ == "InternalIP" && a.address.parse::<Ipv4Addr>().is_ok()) {
            Some(a) => a.address.parse().expect("checked above"),
            None => DEFAULT_INTERNAL_IP,
        },
        None => DEFAULT_INTERNAL_IP,
    };
    Ok(NodeInfo { name, pod_cidr: pod_cidr.trunc(), internal_ip })
}

/// Reads one Pod object.
pub fn pod_info(pod: &Pod) -> Result<PodInfo, PodError> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let name = pod.metadata.name.clone().unwrap_or_default();
    // Only sentences name the pod: its key is written when one is.
    let key = || format!("{namespace}/{name}");
    let ip = match pod.status.as_ref().and_then(|s| s.pod_ip.as_ref()) {
        Some(ip) if !ip.is_empty() => {
            Some(ip.parse::<Ipv4Addr>().map_err(|_| PodError::PodIp { pod: key(), ip: ip.clone() })?)
        }
        _ => None,
    };
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
        labels: pod.metadata.labels.clone().unwrap_or_default(),
        node_name: spec.and_then(|s| s.node_name.clone()),
        host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
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
