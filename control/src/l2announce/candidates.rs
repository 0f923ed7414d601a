//! Which addresses this node may announce: the LoadBalancer ingress IPs and externalIPs it
//! can serve, read from the Service tables in force.
//!
//! Contract: [`announceable`] gives every address of a LoadBalancer or externalIP frontend
//! (`ipMode: Proxy` ingress IPs have none: see `crate::services`) for which this node has an
//! endpoint to send traffic from outside to: a frontend whose external backend set is not
//! empty. That set is the Service's local endpoints under `externalTrafficPolicy: Local` and
//! all of them under `Cluster`, so, as MetalLB's layer 2 mode does, only nodes with a local
//! endpoint compete for a `Local` Service's address, any node for a `Cluster` one, and none
//! for a Service without endpoints. One frontend of an address that qualifies is enough (an
//! address serves every port of every Service that has it). Node addresses (`node_ips`: this
//! node's and every other node's) are never announced: their kernels answer ARP for them, and
//! a second answer would take the node's own traffic.
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use switch::tables::services::{FrontendKind, ServiceTables};

/// The addresses this node may announce (see the module contract).
pub fn announceable(services: &ServiceTables, node_ips: &[Ipv4Addr]) -> BTreeSet<Ipv4Addr> {
    services
        .frontends
        .iter()
        .filter(|f| matches!(f.kind, FrontendKind::LoadBalancer | FrontendKind::ExternalIp))
        .filter(|f| !f.external.backends.is_empty())
        .map(|f| Ipv4Addr::from(f.key.ip))
        .filter(|ip| !node_ips.contains(ip))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    use crate::manifests::{add_documents, Manifests};
    use crate::model::{self, NodeInfo};
    use crate::services::{all_pods, compile_services, ServiceInputs, ServiceState};

    const SERVICES: &str = "\
apiVersion: v1
kind: Service
metadata: {name: cluster, namespace: x}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.10
  selector: {app: a}
  externalIPs: [198.51.100.1]
  ports: [{port: 80, targetPort: 80, nodePort: 30080}]
status: {loadBalancer: {ingress: [{ip: 192.0.2.1}, {ip: 192.0.2.9, ipMode: Proxy}]}}
---
apiVersion: v1
kind: Service
metadata: {name: local-here, namespace: x}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.11
  externalTrafficPolicy: Local
  selector: {app: a}
  ports: [{port: 80, targetPort: 80, nodePort: 30081}]
status: {loadBalancer: {ingress: [{ip: 192.0.2.2}]}}
---
apiVersion: v1
kind: Service
metadata: {name: local-elsewhere, namespace: x}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.12
  externalTrafficPolicy: Local
  selector: {app: b}
  ports: [{port: 80, targetPort: 80, nodePort: 30082}]
status: {loadBalancer: {ingress: [{ip: 192.0.2.3}]}}
---
apiVersion: v1
kind: Service
metadata: {name: empty, namespace: x}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.13
  selector: {app: nobody}
  externalIPs: [172.18.0.2]
  ports: [{port: 80, targetPort: 80, nodePort: 30083}]
status: {loadBalancer: {ingress: [{ip: 192.0.2.4}]}}
---
apiVersion: v1
kind: Service
metadata: {name: on-the-node, namespace: x}
spec:
  clusterIP: 10.96.0.14
  selector: {app: a}
  externalIPs: [172.18.0.2, 172.18.0.3]
  ports: [{port: 81, targetPort: 80}]
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, labels: {app: a}}
spec: {nodeName: here, containers: [{name: c}]}
status: {podIP: 10.244.0.5, conditions: [{type: Ready, status: 'True'}]}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: x, labels: {app: b}}
spec: {nodeName: there, containers: [{name: c}]}
status: {podIP: 10.244.1.5, conditions: [{type: Ready, status: 'True'}]}
";

    #[test]
    fn only_addresses_this_node_can_serve_from_outside_are_announceable() {
        let mut m = Manifests::default();
        add_documents(&mut m, Path::new("test.yaml"), SERVICES).unwrap();
        let node = NodeInfo { name: "here".into(), pod_cidr: "10.244.0.0/24".parse().unwrap(), internal_ip: model::DEFAULT_INTERNAL_IP };
        let (pods, problems) = all_pods(&m);
        assert!(problems.is_empty(), "{problems:?}");
        let c = compile_services(&ServiceInputs { manifests: &m, node: &node, all_pods: &pods }, &mut ServiceState::default());
        assert!(c.problems.is_empty(), "{:?}", c.problems);
        let other_node = "172.18.0.3".parse().unwrap();
        let got: Vec<String> = announceable(&c.tables, &[node.internal_ip, other_node]).iter().map(ToString::to_string).collect();
        // cluster: its ingress IP and externalIP (not the ipMode Proxy one); local-here: a local
        // endpoint; not local-elsewhere (its endpoint is on another node), not empty (no
        // endpoints), not this node's address nor another node's.
        assert_eq!(got, ["192.0.2.1", "192.0.2.2", "198.51.100.1"]);
        // Without the other node's address in the list, it would be announced: the list is
        // what keeps it out.
        let got: Vec<String> = announceable(&c.tables, &[node.internal_ip]).iter().map(ToString::to_string).collect();
        assert_eq!(got, ["172.18.0.3", "192.0.2.1", "192.0.2.2", "198.51.100.1"]);
    }
}
