//! The cluster's other nodes, as the pod network needs them: where each one's pods live (its
//! IPv4 pod CIDRs) and how to reach it (its IPv4 InternalIP).
//!
//! Contract: [`remote_nodes`] is a pure function of a view and this node. Every Node but this
//! one with an IPv4 InternalIP and at least one IPv4 pod CIDR (`spec.podCIDRs`, else
//! `spec.podCIDR`; IPv6 ones are left for dual-stack) is a [`RemoteNode`], in name order. A
//! Node is left out, with a sentence, when it has no IPv4 InternalIP, or when one of its pod
//! CIDRs overlaps this node's or an earlier (by name) node's; a Node without a pod CIDR yet
//! (just joined, not yet given one by the controller manager) is left out silently until it has
//! one. Changing a Node's CIDR or address changes the result; nothing else is kept.
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::manifests::Manifests;
use crate::model::NodeInfo;

/// Another node of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RemoteNode {
    pub name: String,
    /// Its IPv4 pod CIDRs (most clusters: one).
    pub pod_cidrs: Vec<Ipv4Net>,
    /// Its InternalIP: the tunnel's far end (vxlan) or the next hop (routed).
    pub internal_ip: Ipv4Addr,
}

/// The other nodes and the sentences about those left out (see the module contract).
pub fn remote_nodes(m: &Manifests, this: &NodeInfo) -> (Vec<RemoteNode>, Vec<String>) {
    let mut out: Vec<RemoteNode> = Vec::new();
    let mut problems = Vec::new();
    for (name, node) in &m.nodes {
        if *name == this.name {
            continue;
        }
        let spec = node.spec.as_ref();
        let texts: Vec<&String> = match spec.and_then(|s| s.pod_cidrs.as_ref()) {
            Some(list) if !list.is_empty() => list.iter().collect(),
            _ => spec.and_then(|s| s.pod_cidr.as_ref()).into_iter().collect(),
        };
        let pod_cidrs: Vec<Ipv4Net> = texts.iter().filter_map(|t| t.parse::<Ipv4Net>().ok()).map(|n| n.trunc()).collect();
        if pod_cidrs.is_empty() {
            continue;
        }
        let Some(internal_ip) = crate::model::ipv4_internal_ip(node) else {
            problems.push(format!("Node {name}: no IPv4 InternalIP; its pods ({}) are not reachable from here", list(&pod_cidrs)));
            continue;
        };
        let overlap = pod_cidrs.iter().find_map(|c| {
            if overlaps(c, &this.pod_cidr) {
                return Some(format!("this node's ({})", this.pod_cidr));
            }
            out.iter().find(|o| o.pod_cidrs.iter().any(|oc| overlaps(c, oc))).map(|o| format!("Node {}'s", o.name))
        });
        if let Some(whose) = overlap {
            problems.push(format!("Node {name}: pod CIDR {} overlaps {whose}; Node left out", list(&pod_cidrs)));
            continue;
        }
        out.push(RemoteNode { name: name.clone(), pod_cidrs, internal_ip });
    }
    (out, problems)
}

fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

fn list(cidrs: &[Ipv4Net]) -> String {
    cidrs.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifests::add_documents;
    use std::path::Path;

    fn view(nodes: &[(&str, &str, &str)]) -> Manifests {
        let mut m = Manifests::default();
        let text: String = nodes
            .iter()
            .map(|(name, spec, addresses)| {
                format!("apiVersion: v1\nkind: Node\nmetadata: {{name: {name}}}\nspec: {spec}\nstatus: {{addresses: {addresses}}}\n---\n")
            })
            .collect();
        add_documents(&mut m, Path::new("nodes.yaml"), &text).unwrap();
        m
    }

    fn this() -> NodeInfo {
        NodeInfo { name: "node-1".into(), pod_cidr: "10.244.0.0/24".parse().unwrap(), internal_ip: Ipv4Addr::new(172, 18, 0, 2) }
    }

    const V4: &str = "[{type: InternalIP, address: 172.18.0.3}]";

    #[test]
    fn other_nodes_with_ipv4_cidrs_and_addresses_are_remote_nodes() {
        let m = view(&[
            ("node-1", "{podCIDR: 10.244.0.0/24}", "[{type: InternalIP, address: 172.18.0.2}]"),
            ("node-2", "{podCIDR: 10.244.1.0/24, podCIDRs: [10.244.1.0/24, 'fd00:10:244:1::/64']}", V4),
            // Dual-stack with the IPv6 CIDR and address first; a hostname address too.
            (
                "node-3",
                "{podCIDRs: ['fd00:10:244:2::/64', 10.244.2.7/24]}",
                "[{type: Hostname, address: node-3}, {type: InternalIP, address: 'fd00::4'}, {type: InternalIP, address: 172.18.0.4}]",
            ),
            // Not given a CIDR yet: left out without a word.
            ("node-4", "{}", "[{type: InternalIP, address: 172.18.0.5}]"),
        ]);
        let (nodes, problems) = remote_nodes(&m, &this());
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            nodes,
            [
                RemoteNode { name: "node-2".into(), pod_cidrs: vec!["10.244.1.0/24".parse().unwrap()], internal_ip: Ipv4Addr::new(172, 18, 0, 3) },
                RemoteNode { name: "node-3".into(), pod_cidrs: vec!["10.244.2.0/24".parse().unwrap()], internal_ip: Ipv4Addr::new(172, 18, 0, 4) },
            ]
        );
    }

    #[test]
    fn nodes_without_an_address_or_with_overlapping_cidrs_are_left_out_with_a_sentence() {
        let m = view(&[
            ("node-2", "{podCIDR: 10.244.1.0/24}", "[{type: ExternalIP, address: 192.0.2.1}]"),
            ("node-3", "{podCIDR: 10.244.0.128/25}", V4),
            ("node-4", "{podCIDR: 10.244.4.0/24}", V4),
            ("node-5", "{podCIDR: 10.244.0.0/16}", "[{type: InternalIP, address: 172.18.0.6}]"),
        ]);
        let (nodes, problems) = remote_nodes(&m, &this());
        assert_eq!(nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(), ["node-4"]);
        assert_eq!(
            problems,
            [
                "Node node-2: no IPv4 InternalIP; its pods (10.244.1.0/24) are not reachable from here",
                "Node node-3: pod CIDR 10.244.0.128/25 overlaps this node's (10.244.0.0/24); Node left out",
                "Node node-5: pod CIDR 10.244.0.0/16 overlaps this node's (10.244.0.0/24); Node left out",
            ]
        );
        let m = view(&[("node-2", "{podCIDR: 10.244.8.0/22}", V4), ("node-3", "{podCIDR: 10.244.9.0/24}", V4)]);
        let (_, problems) = remote_nodes(&m, &this());
        assert_eq!(problems, ["Node node-3: pod CIDR 10.244.9.0/24 overlaps Node node-2's; Node left out"]);
    }
}
