//! The desired lab, computed from the manifest directory: the nodes, their pods and the IPs.
//!
//! Contract:
//! - [`plan`] validates everything before the caller changes anything: the directory loads
//!   (`manifests::load_dir`), the nodes are known (`model::node_info`), pods read
//!   (`model::pod_info`), and IPs are unique. Errors are one sentence.
//! - The lab's nodes: with `--node-name`, or with at most one Node object in the directory,
//!   exactly one (`model::node_info`: the named or only Node, else `node-1`, 10.244.0.0/24,
//!   172.18.0.2). With several Node objects and no `--node-name`: one lab node per Node, in the
//!   order of their names (the first is the lab's first node: `psl-node`, `lab exec node`).
//!   Their names must be DNS labels/subdomains (lower-case letters, digits, `-`, `.`), their
//!   InternalIPs distinct and in the first node's /24 (the underlay they share with `external`).
//! - A pod goes to the lab node named in its `spec.nodeName`; without one, to the first node.
//!   A pod naming a node the lab does not have is not built (it is another node's), nor are
//!   hostNetwork and completed pods (`PodInfo::is_local_to`).
//! - A pod's IP is its `status.podIP` when set; otherwise it keeps the IP it had in the lab's
//!   state (edits never renumber a pod), else it gets the lowest free address of the node's pod
//!   CIDR, skipping the network address, the first address (.1) and the broadcast address.
//!   Each pod is allocated from the pod CIDR of its node.
//! - A pod another runtime attached through the lab's CNI network (a test's own ADD) has the
//!   address of that attachment and is marked `attached_elsewhere` (the lab does not build it);
//!   those addresses are never handed out, also while their Pod object is not written yet.
//! - Two pods with the same IP (on any lab nodes) are an error naming both.
//! - The `external` host gets the `.100` address of the /24 that holds the node's InternalIP
//!   ([`external_ip`]); that address must not be the InternalIP, the gateway or a local pod's
//!   `status.podIP` (allocation skips it).
//! - The raw objects of the directory are read from the same content the digest covers (the
//!   read is retried if the directory changes meanwhile), for the API view.
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::{anyhow, bail};
use ipnet::Ipv4Net;

use super::apiview;
use super::state::{self, ExternalState, PodState, PortSpec};
use podswitch_control::manifests;
use podswitch_control::model::{self, NodeInfo, PodInfo};
use podswitch_control::naming;

#[derive(Debug, Clone)]
pub struct PlannedPod {
    pub info: PodInfo,
    pub ip: Ipv4Addr,
    /// True when the IP is the lab's choice (no status.podIP).
    pub allocated: bool,
    /// The name of the lab node it runs on.
    pub node: String,
    /// True when another runtime than the lab attached it (a test's own ADD): the lab does not
    /// build it, and its IP is the attachment's ([`super::cni_network::foreign_attachments`]).
    pub attached_elsewhere: bool,
}

impl PlannedPod {
    /// The ports its server answers on (deduplicated, sorted).
    pub fn ports(&self) -> Vec<PortSpec> {
        let mut v: Vec<PortSpec> =
            self.info.ports.iter().map(|p| PortSpec { port: p.port, protocol: p.protocol }).collect();
        v.sort_by_key(|p| (p.port, p.protocol));
        v.dedup();
        v
    }
}

#[derive(Debug, Clone)]
pub struct Plan {
    /// `manifests::dir_digest` of the content planned from.
    pub digest: String,
    /// The first node (`nodes[0]`).
    pub node: NodeInfo,
    /// Every node of the lab, the first first (see the module contract).
    pub nodes: Vec<NodeInfo>,
    /// The pods of the lab's nodes keyed `namespace/name`.
    pub pods: BTreeMap<String, PlannedPod>,
    /// Every object of the directory (Lists flattened), unchanged, for the API view.
    pub objects: Vec<serde_json::Value>,
    /// The `external` host's address (see [`external_ip`]).
    pub external_ip: Ipv4Addr,
}

/// The `external` host the lab builds for `plan`.
pub fn external_state(plan: &Plan) -> ExternalState {
    ExternalState {
        netns: state::EXTERNAL_NETNS.to_string(),
        ip: plan.external_ip,
        prefix_len: EXTERNAL_PREFIX_LEN,
        mac: naming::mac_string(naming::pod_mac(plan.external_ip)),
        uplink: state::UPLINK_IF.to_string(),
        gateway: plan.node.internal_ip,
    }
}

/// `.100` of the node InternalIP's /24, unchecked.
fn external_address(node: &NodeInfo) -> Ipv4Addr {
    let o = node.internal_ip.octets();
    Ipv4Addr::new(o[0], o[1], o[2], EXTERNAL_HOST)
}

/// The host part of the `external` host's address in the InternalIP's /24.
pub const EXTERNAL_HOST: u8 = 100;
/// The prefix length of the network the node and `external` share.
pub const EXTERNAL_PREFIX_LEN: u8 = 24;

/// The `external` host's address: `.100` of the /24 holding the node's InternalIP (172.18.0.100
/// for the default 172.18.0.2). Fails when that address is taken by the node, the gateway or
/// one of `pods`.
/// With several nodes the first decides the address, and it must not be any node's InternalIP
/// either.
pub fn external_ip_of(nodes: &[NodeInfo], pods: &BTreeMap<String, PlannedPod>) -> anyhow::Result<Ipv4Addr> {
    let node = &nodes[0];
    let ip = external_address(node);
    if let Some(n) = nodes[1..].iter().find(|n| n.internal_ip == ip) {
        bail!(
            "Node {}'s InternalIP {ip} is the address the lab gives its `external` host (.{EXTERNAL_HOST} of the \
             first node's /{EXTERNAL_PREFIX_LEN}): give the Node another InternalIP",
            n.name
        );
    }
    if ip == node.internal_ip {
        bail!(
            "the node's InternalIP {ip} is the address the lab gives its `external` host (.{EXTERNAL_HOST} of the \
             InternalIP's /{EXTERNAL_PREFIX_LEN}): give the Node another InternalIP"
        );
    }
    if ip == naming::GATEWAY_IP {
        bail!("the `external` host's address {ip} would be the pods' gateway address");
    }
    if let Some((key, _)) = pods.iter().find(|(_, p)| p.ip == ip) {
        bail!("Pod {key} has IP {ip}, the address the lab gives its `external` host (.{EXTERNAL_HOST} of the node's /{EXTERNAL_PREFIX_LEN})");
    }
    Ok(ip)
}

/// Plans the lab for manifest directory `dir`; `previous` holds the pods the lab has now,
/// `foreign` the pods other runtimes attached, with their addresses.
pub fn plan(
    dir: &Path,
    node_name: Option<&str>,
    previous: &BTreeMap<String, PodState>,
    foreign: &BTreeMap<String, Ipv4Addr>,
) -> anyhow::Result<Plan> {
    for _ in 0..10 {
        let m = manifests::load_dir(dir)?;
        let objects = apiview::read_objects(dir)?;
        if manifests::dir_digest(dir)? != m.digest {
            std::thread::sleep(std::time::Duration::from_millis(50));
            continue; // changed while being read: read again
        }
        let nodes = lab_nodes(&m, node_name)?;
        let infos = m.pods.values().map(|p| model::pod_info(p)).collect::<Result<Vec<_>, _>>().map_err(|e| anyhow!(e))?;
        let mut pods = BTreeMap::new();
        for (i, node) in nodes.iter().enumerate() {
            // The first node also takes the pods that name no node.
            let mine: Vec<PodInfo> =
                infos.iter().filter(|p| p.is_local_to(node) && (i == 0 || p.node_name.is_some())).cloned().collect();
            for (key, mut p) in assign_ips(node, mine, previous, foreign)? {
                p.node.clone_from(&node.name);
                pods.insert(key, p);
            }
        }
        let mut by_ip: BTreeMap<Ipv4Addr, &str> = BTreeMap::new();
        for (key, p) in &pods {
            if let Some(other) = by_ip.insert(p.ip, key) {
                bail!("Pods {other} and {key} both have IP {}: pod IPs must be unique", p.ip);
            }
        }
        let external_ip = external_ip_of(&nodes, &pods)?;
        let node = nodes[0].clone();
        return Ok(Plan { digest: m.digest, node, nodes, pods, objects, external_ip });
    }
    bail!("the manifest directory {} keeps changing while being read", dir.display())
}

/// The lab's nodes (see the module contract), the first first.
fn lab_nodes(m: &manifests::Manifests, node_name: Option<&str>) -> anyhow::Result<Vec<NodeInfo>> {
    if node_name.is_some() || m.nodes.len() <= 1 {
        return Ok(vec![model::node_info(m, node_name).map_err(|e| anyhow!(e))?]);
    }
    let mut nodes = Vec::new();
    for name in m.nodes.keys() {
        let valid = !name.is_empty()
            && name.len() <= 63
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !valid {
            bail!("Node {name:?}: the lab wants node names of at most 63 lower-case letters, digits, `-` and `.`");
        }
        nodes.push(model::node_info(m, Some(name)).map_err(|e| anyhow!(e))?);
    }
    let first = Ipv4Net::new(nodes[0].internal_ip, EXTERNAL_PREFIX_LEN).expect("valid prefix").trunc();
    for (i, n) in nodes.iter().enumerate() {
        if !first.contains(&n.internal_ip) {
            bail!(
                "Node {}'s InternalIP {} is not in {first}, the underlay of the first node {} that the lab's nodes share",
                n.name, n.internal_ip, nodes[0].name
            );
        }
        if let Some(o) = nodes[..i].iter().find(|o| o.internal_ip == n.internal_ip) {
            bail!("Nodes {} and {} both have InternalIP {}", o.name, n.name, n.internal_ip);
        }
    }
    Ok(nodes)
}

/// Gives every pod an IP (see the module contract).
pub fn assign_ips(
    node: &NodeInfo,
    pods: Vec<PodInfo>,
    previous: &BTreeMap<String, PodState>,
    foreign: &BTreeMap<String, Ipv4Addr>,
) -> anyhow::Result<BTreeMap<String, PlannedPod>> {
    let cidr = node.pod_cidr;
    // Addresses other runtimes hold are taken, Pod object or not (yet).
    let mut taken: BTreeMap<Ipv4Addr, String> = foreign.iter().map(|(k, ip)| (*ip, k.clone())).collect();
    let mut out = BTreeMap::new();
    let mut rest = Vec::new();
    for p in pods {
        let key = p.key();
        if let Some(ip) = foreign.get(&key) {
            out.insert(key, PlannedPod { info: p, ip: *ip, allocated: false, node: node.name.clone(), attached_elsewhere: true });
            continue;
        }
        match p.ip {
            Some(ip) => {
                if ip == naming::GATEWAY_IP {
                    bail!("Pod {key}: status.podIP {ip} is the pods' gateway address");
                }
                if let Some(other) = taken.insert(ip, key.clone()) {
                    bail!("Pods {other} and {key} both have IP {ip}: pod IPs must be unique");
                }
                out.insert(key, PlannedPod { info: p, ip, allocated: false, node: node.name.clone(), attached_elsewhere: false });
            }
            None => rest.push(p),
        }
    }
    let mut new = Vec::new();
    for p in rest {
        let key = p.key();
        match previous.get(&key).map(|s| s.ip) {
            Some(ip) if usable(cidr, ip) && !taken.contains_key(&ip) && ip != external_address(node) => {
                taken.insert(ip, key.clone());
                out.insert(key, PlannedPod { info: p, ip, allocated: true, node: node.name.clone(), attached_elsewhere: false });
            }
            _ => new.push(p),
        }
    }
    let external = external_address(node);
    let mut candidates =
        hosts(cidr).filter(|ip| *ip != node.internal_ip && *ip != naming::GATEWAY_IP && *ip != external);
    for p in new {
        let key = p.key();
        let ip = candidates
            .by_ref()
            .find(|ip| !taken.contains_key(ip))
            .ok_or_else(|| anyhow!("no free address left in pod CIDR {cidr} for Pod {key}"))?;
        taken.insert(ip, key.clone());
        out.insert(key, PlannedPod { info: p, ip, allocated: true, node: node.name.clone(), attached_elsewhere: false });
    }
    Ok(out)
}

/// Addresses the lab may hand out in `cidr`, lowest first.
fn hosts(cidr: Ipv4Net) -> impl Iterator<Item = Ipv4Addr> {
    let net = u32::from(cidr.network());
    let bcast = u32::from(cidr.broadcast());
    (net.saturating_add(2)..bcast).map(Ipv4Addr::from)
}

fn usable(cidr: Ipv4Net, ip: Ipv4Addr) -> bool {
    let (n, b, i) = (u32::from(cidr.network()), u32::from(cidr.broadcast()), u32::from(ip));
    cidr.contains(&ip) && i >= n.saturating_add(2) && i < b
}

#[cfg(test)]
mod tests {
    use super::*;
    use podswitch_control::model::L4Proto;

    fn pod(ns: &str, name: &str, ip: Option<&str>) -> PodInfo {
        PodInfo::for_test(ns, name, ip)
    }

    fn node() -> NodeInfo {
        NodeInfo {
            name: "n".into(),
            pod_cidr: "10.244.0.0/24".parse().unwrap(),
            internal_ip: "172.18.0.2".parse().unwrap(),
        }
    }

    fn prev(key: &str, ip: &str) -> (String, PodState) {
        let (ns, name) = key.split_once('/').unwrap();
        (
            key.to_string(),
            PodState {
                namespace: ns.into(),
                name: name.into(),
                netns: String::new(),
                interface: String::new(),
                ip: ip.parse().unwrap(),
                mac: String::new(),
                allocated: true,
                ports: vec![PortSpec { port: 80, protocol: L4Proto::Tcp }],
                server: None,
                node: "n".into(),
                node_netns: String::new(),
            },
        )
    }

    #[test]
    fn allocates_skipping_reserved_and_static() {
        let pods = vec![pod("x", "a", None), pod("x", "b", Some("10.244.0.2")), pod("x", "c", None)];
        let got = assign_ips(&node(), pods, &BTreeMap::new(), &BTreeMap::new()).unwrap();
        assert_eq!(got["x/b"].ip.to_string(), "10.244.0.2");
        assert!(!got["x/b"].allocated);
        assert_eq!(got["x/a"].ip.to_string(), "10.244.0.3");
        assert_eq!(got["x/c"].ip.to_string(), "10.244.0.4");
    }

    #[test]
    fn keeps_previous_allocations() {
        let previous: BTreeMap<_, _> = [prev("x/b", "10.244.0.9")].into_iter().collect();
        let got = assign_ips(&node(), vec![pod("x", "a", None), pod("x", "b", None)], &previous, &BTreeMap::new()).unwrap();
        assert_eq!(got["x/b"].ip.to_string(), "10.244.0.9");
        assert_eq!(got["x/a"].ip.to_string(), "10.244.0.2");
        // An allocation outside the CIDR is replaced.
        let previous: BTreeMap<_, _> = [prev("x/a", "10.9.0.9")].into_iter().collect();
        let got = assign_ips(&node(), vec![pod("x", "a", None)], &previous, &BTreeMap::new()).unwrap();
        assert_eq!(got["x/a"].ip.to_string(), "10.244.0.2");
    }

    #[test]
    fn pods_attached_by_another_runtime_keep_their_address_and_hold_it() {
        let foreign: BTreeMap<String, Ipv4Addr> =
            [("x/own".to_string(), "10.244.0.2".parse().unwrap()), ("x/later".to_string(), "10.244.0.3".parse().unwrap())].into();
        let got = assign_ips(&node(), vec![pod("x", "a", None), pod("x", "own", None)], &BTreeMap::new(), &foreign).unwrap();
        assert_eq!(got["x/own"].ip.to_string(), "10.244.0.2");
        assert!(got["x/own"].attached_elsewhere && !got["x/own"].allocated);
        // x/later has no Pod object yet: its address is taken all the same.
        assert_eq!(got["x/a"].ip.to_string(), "10.244.0.4");
        assert!(!got["x/a"].attached_elsewhere);
        let e = assign_ips(&node(), vec![pod("x", "b", Some("10.244.0.3"))], &BTreeMap::new(), &foreign).unwrap_err().to_string();
        assert!(e.contains("both have IP 10.244.0.3"), "{e}");
    }

    #[test]
    fn duplicate_and_exhaustion_errors() {
        let e = assign_ips(
            &node(),
            vec![pod("x", "a", Some("10.244.0.5")), pod("x", "b", Some("10.244.0.5"))],
            &BTreeMap::new(),
            &BTreeMap::new(),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(e, "Pods x/a and x/b both have IP 10.244.0.5: pod IPs must be unique");
        let mut n = node();
        n.pod_cidr = "10.1.0.0/30".parse().unwrap();
        let e =
            assign_ips(&n, vec![pod("x", "a", None), pod("x", "b", None)], &BTreeMap::new(), &BTreeMap::new()).unwrap_err().to_string();
        assert!(e.contains("no free address left in pod CIDR 10.1.0.0/30 for Pod x/b"), "{e}");
    }

    /// A manifest directory of `docs` in a fresh temporary directory named after `test`.
    fn dir_with(test: &str, docs: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("psl-plan-test-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.yaml"), docs).unwrap();
        dir
    }

    fn node_yaml(name: &str, cidr: &str, ip: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Node\nmetadata: {{name: {name}}}\nspec: {{podCIDR: {cidr}}}\n\
             status: {{addresses: [{{type: InternalIP, address: {ip}}}]}}\n---\n"
        )
    }

    fn pod_yaml(name: &str, node: Option<&str>, ip: Option<&str>) -> String {
        let node = node.map(|n| format!("nodeName: {n}, ")).unwrap_or_default();
        let status = ip.map(|i| format!("status: {{podIP: {i}}}\n")).unwrap_or_default();
        format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: x}}\nspec: {{{node}containers: []}}\n{status}---\n")
    }

    #[test]
    fn several_nodes_in_name_order_pods_on_their_node_else_the_first() {
        let docs = [
            node_yaml("node-2", "10.244.1.0/24", "172.18.0.3"),
            node_yaml("node-1", "10.244.0.0/24", "172.18.0.2"),
            pod_yaml("a", None, None),
            pod_yaml("b", Some("node-2"), None),
            pod_yaml("c", Some("node-1"), None),
            pod_yaml("r", Some("elsewhere"), None),
        ]
        .concat();
        let dir = dir_with("several", &docs);
        let plan = plan(&dir, None, &BTreeMap::new(), &BTreeMap::new()).unwrap();
        let names: Vec<&str> = plan.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["node-1", "node-2"]);
        assert_eq!(plan.node.name, "node-1");
        let got: Vec<(&str, &str, String)> =
            plan.pods.iter().map(|(k, p)| (k.as_str(), p.node.as_str(), p.ip.to_string())).collect();
        assert_eq!(
            got,
            [("x/a", "node-1", "10.244.0.2".into()), ("x/b", "node-2", "10.244.1.2".into()), ("x/c", "node-1", "10.244.0.3".into())]
        );
        assert_eq!(plan.external_ip.to_string(), "172.18.0.100");
        // --node-name: one node, as before.
        let one = super::plan(&dir, Some("node-2"), &BTreeMap::new(), &BTreeMap::new()).unwrap();
        assert_eq!((one.nodes.len(), one.node.name.as_str()), (1, "node-2"));
        assert_eq!(one.pods.keys().collect::<Vec<_>>(), ["x/a", "x/b"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn several_nodes_refuse_shared_addresses() {
        let two = [node_yaml("n1", "10.244.0.0/24", "172.18.0.2"), node_yaml("n2", "10.244.0.0/24", "172.18.0.3")].concat();
        let dir = dir_with("shared-pod-ip", &[two.clone(), pod_yaml("a", Some("n1"), None), pod_yaml("b", Some("n2"), None)].concat());
        let e = plan(&dir, None, &BTreeMap::new(), &BTreeMap::new()).unwrap_err().to_string();
        assert_eq!(e, "Pods x/a and x/b both have IP 10.244.0.2: pod IPs must be unique");
        std::fs::remove_dir_all(&dir).unwrap();
        let same_ip = [node_yaml("n1", "10.244.0.0/24", "172.18.0.2"), node_yaml("n2", "10.244.1.0/24", "172.18.0.2")].concat();
        let dir = dir_with("shared-node-ip", &same_ip);
        let e = plan(&dir, None, &BTreeMap::new(), &BTreeMap::new()).unwrap_err().to_string();
        assert_eq!(e, "Nodes n1 and n2 both have InternalIP 172.18.0.2");
        std::fs::remove_dir_all(&dir).unwrap();
        let external = [node_yaml("n1", "10.244.0.0/24", "172.18.0.2"), node_yaml("n2", "10.244.1.0/24", "172.18.0.100")].concat();
        let dir = dir_with("external-ip", &external);
        let e = plan(&dir, None, &BTreeMap::new(), &BTreeMap::new()).unwrap_err().to_string();
        assert!(e.starts_with("Node n2's InternalIP 172.18.0.100 is the address the lab gives its `external` host"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
        let bad = [node_yaml("n1", "10.244.0.0/24", "172.18.0.2"), node_yaml("N_2", "10.244.1.0/24", "172.18.0.3")].concat();
        let dir = dir_with("bad-name", &bad);
        let e = plan(&dir, None, &BTreeMap::new(), &BTreeMap::new()).unwrap_err().to_string();
        // The manifest loader refuses it already (the lab's own check guards its names too).
        assert!(e.contains("Node name \"N_2\" is not a valid Kubernetes name"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn external_address_is_dot_100_of_the_node_network() {
        let got = external_ip_of(&[node()], &BTreeMap::new()).unwrap();
        assert_eq!(got.to_string(), "172.18.0.100");
        let mut n = node();
        n.internal_ip = "172.18.0.100".parse().unwrap();
        let e = external_ip_of(&[n], &BTreeMap::new()).unwrap_err().to_string();
        assert!(e.contains("InternalIP 172.18.0.100 is the address the lab gives its `external` host"), "{e}");
        // A pod CIDR around the node's network: allocation skips .100, a static podIP there fails.
        let mut n = node();
        n.internal_ip = "10.244.0.1".parse().unwrap();
        let pods: Vec<PodInfo> = (0..120).map(|i| pod("x", &format!("p{i}"), None)).collect();
        let got = assign_ips(&n, pods, &BTreeMap::new(), &BTreeMap::new()).unwrap();
        assert!(got.values().all(|p| p.ip.to_string() != "10.244.0.100"));
        let got = assign_ips(&n, vec![pod("x", "s", Some("10.244.0.100"))], &BTreeMap::new(), &BTreeMap::new()).unwrap();
        let e = external_ip_of(&[n], &got).unwrap_err().to_string();
        assert!(e.starts_with("Pod x/s has IP 10.244.0.100"), "{e}");
    }
}
