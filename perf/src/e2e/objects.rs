//! The cluster the e2e benchmark loads: one model of Services, endpoints, pods and policies from
//! which both the switch's manifests ([`Cluster::manifests_yaml`]) and the kernel's kube-proxy
//! ruleset (`nft.rs`) are written, so that both paths hold the same Services.
//!
//! Contract (shapes follow `sync_bench.rs`, with UDP where the benchmark's traffic is UDP):
//! - Node `node-1` (this node): podCIDR 10.244.0.0/24, InternalIP 172.18.0.2.
//! - Pods `ns0/a` (10.244.0.10, the sender) and `ns0/b` (10.244.0.11, the receiver) on this node;
//!   `background` more pods (10.250.0.1 + i) on nodes `node-2`..`node-11`, in 100 namespaces
//!   `ns0`..`ns99` (labels `team: t{n % 10}`), pod labels `app: app{i % 50}`, `tier: t{i % 3}`.
//! - `services` Services in all: one measured Service `ns0/e2e` (ClusterIP 10.96.0.10, UDP
//!   80 -> 8080, NodePort 30080, externalTrafficPolicy Cluster) whose only endpoint is pod b, and
//!   `services - 1` background Services (ClusterIP 10.96.1.0 + s, UDP 80 -> 8080) with
//!   `endpoints` endpoints each among the background pods, one EndpointSlice per Service.
//! - `policies` NetworkPolicies in all: `policies - 1` in the shape of the sync benchmark (pods of
//!   `app{p % 50}` in `ns{p % 100}` accept UDP `http` from pods of tier `t{p % 3}` in namespaces of
//!   team `t{p % 10}`; ten of them select pod b, four of those admit pod a), and `ns0/e2e-external`
//!   admitting the node's network 172.18.0.0/24 to pod b (the NodePort case).
use std::fmt::Write as _;
use std::net::Ipv4Addr;

pub const NODE_NAME: &str = "node-1";
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 2);
pub const NODE_PREFIX: u8 = 24;
pub const POD_CIDR: &str = "10.244.0.0/24";
pub const EXTERNAL_IP: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 100);
pub const POD_NS: &str = "ns0";
pub const POD_A_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 10);
pub const POD_B_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 11);
pub const SVC_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
pub const SVC_PORT: u16 = 80;
pub const TARGET_PORT: u16 = 8080;
pub const NODE_PORT: u16 = 30080;
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
const NAMESPACES: u32 = 100;

/// One Service port with its endpoints, as both paths see it.
#[derive(Debug, Clone)]
pub struct Svc {
    pub namespace: String,
    pub name: String,
    pub cluster_ip: Ipv4Addr,
    pub port: u16,
    pub node_port: Option<u16>,
    pub endpoints: Vec<Ipv4Addr>,
    pub target_port: u16,
}

#[derive(Debug, Clone)]
pub struct Cluster {
    pub services: Vec<Svc>,
    pub background_pods: u32,
    pub policies: u32,
}

fn background_pod_ip(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 250, 0, 1)) + i)
}

impl Cluster {
    pub fn generate(services: u32, endpoints: u32, background_pods: u32, policies: u32) -> Cluster {
        let mut v = Vec::with_capacity(services as usize);
        v.push(Svc {
            namespace: POD_NS.into(),
            name: "e2e".into(),
            cluster_ip: SVC_IP,
            port: SVC_PORT,
            node_port: Some(NODE_PORT),
            endpoints: vec![POD_B_IP],
            target_port: TARGET_PORT,
        });
        for s in 0..services.saturating_sub(1) {
            let eps = (0..endpoints).map(|k| background_pod_ip((s * endpoints + k) % background_pods.max(1))).collect();
            v.push(Svc {
                namespace: format!("ns{}", s % NAMESPACES),
                name: format!("svc{s}"),
                cluster_ip: Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 1, 0)) + s),
                port: SVC_PORT,
                node_port: None,
                endpoints: eps,
                target_port: TARGET_PORT,
            });
        }
        Cluster { services: v, background_pods, policies }
    }

    pub fn endpoint_count(&self) -> usize {
        self.services.iter().map(|s| s.endpoints.len()).sum()
    }

    /// Every object as Kubernetes YAML (one file, many documents) for `podswitch run --manifests`.
    pub fn manifests_yaml(&self) -> String {
        let mut y = String::with_capacity(8 << 20);
        let _ = write!(
            y,
            "apiVersion: v1\nkind: Node\nmetadata: {{name: {NODE_NAME}}}\nspec: {{podCIDR: {POD_CIDR}}}\n\
             status: {{addresses: [{{type: InternalIP, address: {NODE_IP}}}]}}\n---\n"
        );
        for n in 0..NAMESPACES {
            let _ = write!(y, "apiVersion: v1\nkind: Namespace\nmetadata: {{name: ns{n}, labels: {{team: t{}}}}}\n---\n", n % 10);
        }
        for (name, ip, app) in [("a", POD_A_IP, "app1"), ("b", POD_B_IP, "app0")] {
            let _ = write!(
                y,
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {POD_NS}, labels: {{app: {app}, tier: t0}}}}\n\
                 spec: {{nodeName: {NODE_NAME}, containers: [{{name: c, image: bench, ports: [{{name: http, containerPort: {TARGET_PORT}, protocol: UDP}}]}}]}}\n\
                 status: {{podIP: {ip}}}\n---\n"
            );
        }
        for i in 0..self.background_pods {
            let _ = write!(
                y,
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: p{i}, namespace: ns{}, labels: {{app: app{}, tier: t{}}}}}\n\
                 spec: {{nodeName: node-{}, containers: [{{name: c, image: i, ports: [{{name: http, containerPort: {TARGET_PORT}, protocol: UDP}}]}}]}}\n\
                 status: {{podIP: {}}}\n---\n",
                i % NAMESPACES,
                i % 50,
                i % 3,
                2 + i % 10,
                background_pod_ip(i)
            );
        }
        for s in &self.services {
            let (ty, np) = match s.node_port {
                Some(p) => ("NodePort", format!(", nodePort: {p}")),
                None => ("ClusterIP", String::new()),
            };
            let _ = write!(
                y,
                "apiVersion: v1\nkind: Service\nmetadata: {{name: {}, namespace: {}}}\n\
                 spec: {{type: {ty}, clusterIP: {}, ports: [{{name: http, port: {}, targetPort: {}, protocol: UDP{np}}}]}}\n---\n",
                s.name, s.namespace, s.cluster_ip, s.port, s.target_port
            );
            let _ = write!(
                y,
                "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {}-abc, namespace: {}, labels: {{kubernetes.io/service-name: {}}}}}\n\
                 addressType: IPv4\nports: [{{name: http, port: {}, protocol: UDP}}]\nendpoints:\n",
                s.name, s.namespace, s.name, s.target_port
            );
            for ep in &s.endpoints {
                let node = if *ep == POD_B_IP { NODE_NAME.to_string() } else { format!("node-{}", 2 + (u32::from(*ep) % 10)) };
                let _ = write!(y, "- addresses: [\"{ep}\"]\n  conditions: {{ready: true}}\n  nodeName: {node}\n");
            }
            y.push_str("---\n");
        }
        for p in 0..self.policies.saturating_sub(1) {
            let _ = write!(
                y,
                "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: pol{p}, namespace: ns{}}}\n\
                 spec:\n  podSelector: {{matchLabels: {{app: app{}}}}}\n  ingress:\n  - from:\n    - namespaceSelector: {{matchLabels: {{team: t{}}}}}\n      podSelector: {{matchLabels: {{tier: t{}}}}}\n    ports: [{{port: http, protocol: UDP}}]\n---\n",
                p % NAMESPACES,
                p % 50,
                p % 10,
                p % 3
            );
        }
        if self.policies > 0 {
            let _ = write!(
                y,
                "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: e2e-external, namespace: {POD_NS}}}\n\
                 spec:\n  podSelector: {{matchLabels: {{app: app0}}}}\n  ingress:\n  - from:\n    - ipBlock: {{cidr: {}/{NODE_PREFIX}}}\n    ports: [{{port: http, protocol: UDP}}]\n---\n",
                Ipv4Addr::from(u32::from(NODE_IP) & !((1u32 << (32 - NODE_PREFIX)) - 1))
            );
        }
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use podswitch_control::manifests::{add_documents, Manifests};

    #[test]
    fn manifests_parse_with_the_counts_asked_for() {
        let c = Cluster::generate(50, 3, 40, 20);
        assert_eq!(c.services.len(), 50);
        assert_eq!(c.endpoint_count(), 1 + 49 * 3);
        let mut m = Manifests::default();
        add_documents(&mut m, std::path::Path::new("e2e.yaml"), &c.manifests_yaml()).unwrap();
        assert_eq!(m.services.len(), 50);
        assert_eq!(m.network_policies.len(), 20);
        assert_eq!(m.pods.len(), 42);
        assert!(m.pods.contains_key("ns0/b"));
    }
}
