//! The NetworkPolicy compiler: namespaces, pods and policies to [`PolicyTables`]; the semantics
//! are in the contract of [`super`].
//!
//! Order of work, deterministic (pods in view order, policies in `namespace/name` order):
//! 1. the view: namespace labels, the pods that take part, identities ([`build_view`]);
//! 2. policy ids;
//! 3. per policy: read it ([`super::model`]), select pods, resolve each rule's peers once,
//!    then give every selected local pod its isolation and rules;
//! 4. the resident node's rule; the epoch.
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use switch::tables::policy::{Identity, Peer, PodPolicy, PolicyId, PolicyTables, PortRange, Rule};

use super::model::{self, PeerSpec, PolicyModel, PortSel, PortSpec, RuleSpec};
use super::selector::Labels;
use super::{
    CompiledPolicy, PeerView, PolicyInputs, PolicyState, PolicyView, PortView, RuleView, NAMESPACE_NAME_LABEL,
    RESIDENT_NODE_NAME, RESIDENT_NODE_POLICY,
};
use crate::model::{L4Proto, PodInfo};
use crate::naming;

fn proto_number(p: L4Proto) -> u8 {
    match p {
        L4Proto::Tcp => 6,
        L4Proto::Udp => 17,
        L4Proto::Sctp => 132,
    }
}

/// A pod that takes part in policy (see the module contract of [`super`]).
struct Pod<'a> {
    info: &'a PodInfo,
    ip: Ipv4Addr,
    /// `None` when another pod of the view has the same address.
    identity: Option<Identity>,
    /// A local pod whose address no other local pod has: it gets an entry in the tables.
    gets_entry: bool,
    local: bool,
}

impl Pod<'_> {
    fn label(&self) -> String {
        format!("{}/{} {}", self.info.namespace, self.info.name, self.ip)
    }
}

struct View<'a> {
    namespaces: BTreeMap<String, Labels>,
    pods: Vec<Pod<'a>>,
}

impl View<'_> {
    fn ns_labels(&self, ns: &str) -> &Labels {
        self.namespaces.get(ns).expect("every pod's namespace is in the view")
    }

    /// Pods with an unambiguous address (the only ones peers match as pods).
    fn addressable(&self) -> impl Iterator<Item = (usize, &Pod<'_>)> {
        self.pods.iter().enumerate().filter(|(_, p)| p.identity.is_some())
    }
}

fn build_view<'a>(inp: &PolicyInputs<'a>, state: &mut PolicyState, problems: &mut Vec<String>) -> View<'a> {
    let m = inp.manifests;
    let mut namespaces: BTreeMap<String, Labels> = BTreeMap::new();
    for (name, ns) in &m.namespaces {
        let mut labels = ns.metadata.labels.clone().unwrap_or_default();
        labels.insert(NAMESPACE_NAME_LABEL.to_string(), name.clone());
        namespaces.insert(name.clone(), labels);
    }
    let mut taking_part: Vec<(&PodInfo, Ipv4Addr)> = Vec::new();
    for p in inp.all_pods {
        let Some(ip) = p.ip else { continue };
        if p.host_network {
            continue;
        }
        if ip == inp.node.internal_ip || ip == naming::GATEWAY_IP {
            problems.push(format!(
                "pod {} has IP {ip}, the node's or the gateway's address: NetworkPolicy ignores it (it would stand for the node)",
                p.key()
            ));
            continue;
        }
        let phase = m.pods.get(&p.key()).and_then(|o| o.status.as_ref()).and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed")) {
            continue;
        }
        taking_part.push((p, ip));
    }
    let mut by_ip: BTreeMap<Ipv4Addr, Vec<&PodInfo>> = BTreeMap::new();
    for (p, ip) in &taking_part {
        by_ip.entry(*ip).or_default().push(p);
    }
    for (ip, pods) in by_ip.iter().filter(|(_, v)| v.len() > 1) {
        let names: Vec<String> = pods.iter().map(|p| p.key()).collect();
        problems.push(format!(
            "pods {} all have IP {ip}: the address is ambiguous, so no pod or namespace selector of a NetworkPolicy matches it (ipBlocks still do)",
            names.join(", ")
        ));
    }
    let is_local = |p: &PodInfo| p.node_name.as_deref().is_none_or(|n| n == inp.node.name);
    let mut local_count: BTreeMap<Ipv4Addr, usize> = BTreeMap::new();
    for (p, ip) in &taking_part {
        if is_local(p) {
            *local_count.entry(*ip).or_default() += 1;
        }
    }
    for (p, _) in &taking_part {
        namespaces.entry(p.namespace.clone()).or_insert_with(|| {
            Labels::from([(NAMESPACE_NAME_LABEL.to_string(), p.namespace.clone())])
        });
    }
    state.identities.assign(
        taking_part.iter().filter(|(_, ip)| by_ip[ip].len() == 1).map(|(p, _)| (p.namespace.as_str(), &p.labels)),
    );
    let pods = taking_part
        .into_iter()
        .map(|(p, ip)| {
            let local = is_local(p);
            Pod {
                info: p,
                ip,
                identity: if by_ip[&ip].len() == 1 { state.identities.get(&p.namespace, &p.labels) } else { None },
                gets_entry: local && local_count[&ip] == 1,
                local,
            }
        })
        .collect();
    View { namespaces, pods }
}

/// One rule's peers, resolved against the view (independent of the pod the rule is for).
struct ResolvedPeers {
    /// For the tables; `None` when the rule matches no peer at all (every entry was IPv6).
    peers: Option<Vec<Peer>>,
    /// Indices of the addressable pods the peers match (for named egress ports).
    pods: BTreeSet<usize>,
    all_peers: bool,
    views: Vec<PeerView>,
}

fn resolve_peers(view: &View, policy_ns: &str, spec: &RuleSpec) -> ResolvedPeers {
    if spec.peers.is_empty() {
        return ResolvedPeers {
            peers: Some(vec![Peer::Any]),
            pods: view.addressable().map(|(i, _)| i).collect(),
            all_peers: true,
            views: Vec::new(),
        };
    }
    let mut peers = Vec::new();
    let mut pods = BTreeSet::new();
    let mut views = Vec::new();
    for p in &spec.peers {
        let (peer, matched): (Option<Peer>, Vec<usize>) = match p {
            PeerSpec::Pods { pods: psel, namespaces: nsel } => {
                let matched: Vec<usize> = view
                    .addressable()
                    .filter(|(_, q)| match nsel {
                        None => q.info.namespace == policy_ns,
                        Some(n) => n.matches(view.ns_labels(&q.info.namespace)),
                    })
                    .filter(|(_, q)| psel.as_ref().is_none_or(|s| s.matches(&q.info.labels)))
                    .map(|(i, _)| i)
                    .collect();
                let ids = matched.iter().filter_map(|i| view.pods[*i].identity).collect();
                (Some(Peer::Identities(ids)), matched)
            }
            PeerSpec::IpBlock { cidr, except } => {
                let matched =
                    view.addressable().filter(|(_, q)| model::block_contains(cidr, except, q.ip)).map(|(i, _)| i).collect();
                let peer = Peer::IpBlock {
                    cidr: (u32::from(cidr.network()), cidr.prefix_len()),
                    except: except.iter().map(|e| (u32::from(e.network()), e.prefix_len())).collect(),
                };
                (Some(peer), matched)
            }
            PeerSpec::Ipv6Block { .. } => (None, Vec::new()),
        };
        views.push(PeerView { peer: p.describe(policy_ns), pods: matched.iter().map(|i| view.pods[*i].label()).collect() });
        pods.extend(matched);
        peers.extend(peer);
    }
    ResolvedPeers { peers: if peers.is_empty() { None } else { Some(peers) }, pods, all_peers: false, views }
}

fn range(proto: L4Proto, sel: &PortSel) -> Option<PortRange> {
    let proto = proto_number(proto);
    match sel {
        PortSel::All => Some(PortRange { proto, port: 0, end_port: 0 }),
        PortSel::Range(a, b) => Some(PortRange { proto, port: *a, end_port: *b }),
        PortSel::Named(_) => None,
    }
}

/// The numbers `name`/`proto` has among `pod`'s containerPorts.
fn named_numbers<'a>(pod: &'a PodInfo, name: &'a str, proto: L4Proto) -> impl Iterator<Item = u16> + 'a {
    pod.ports.iter().filter(move |c| c.name.as_deref() == Some(name) && c.protocol == proto).map(|c| c.port)
}

/// An ingress rule's ports for the selected pod `pod`; `None` when the rule lists ports and
/// none of them exists on the pod (the rule matches nothing).
fn ingress_ports(spec: &[PortSpec], pod: &PodInfo) -> Option<Vec<PortRange>> {
    if spec.is_empty() {
        return Some(Vec::new());
    }
    let mut out = Vec::new();
    for p in spec {
        match &p.port {
            PortSel::Named(n) => {
                for port in named_numbers(pod, n, p.proto) {
                    out.push(PortRange { proto: proto_number(p.proto), port, end_port: port });
                }
            }
            sel => out.extend(range(p.proto, sel)),
        }
    }
    dedup(&mut out);
    if out.is_empty() {
        None
    } else {
        Some(out)
    }
}

fn dedup(v: &mut Vec<PortRange>) {
    let mut seen = Vec::with_capacity(v.len());
    v.retain(|p| {
        if seen.contains(p) {
            false
        } else {
            seen.push(*p);
            true
        }
    });
}

/// An egress rule's table rules (the same for every pod the policy selects): the numbered
/// ports with the rule's peers, and per number a named port resolves to on some peer pod, a
/// rule whose only peer is exactly those pods.
fn egress_rules(id: PolicyId, index: u16, spec: &RuleSpec, rp: &ResolvedPeers, view: &View) -> (Vec<Rule>, Vec<PortView>) {
    let mut port_views: Vec<PortView> =
        spec.ports.iter().map(|p| PortView { port: p.label(), resolved: Vec::new() }).collect();
    let Some(peers) = &rp.peers else { return (Vec::new(), port_views) };
    if spec.ports.is_empty() {
        return (vec![Rule { policy: id, index, peers: peers.clone(), ports: Vec::new() }], port_views);
    }
    let mut out = Vec::new();
    let mut numbered: Vec<PortRange> = spec.ports.iter().filter_map(|p| range(p.proto, &p.port)).collect();
    dedup(&mut numbered);
    if !numbered.is_empty() {
        out.push(Rule { policy: id, index, peers: peers.clone(), ports: numbered });
    }
    let mut by_number: BTreeMap<(u8, u16), BTreeSet<u32>> = BTreeMap::new();
    for (p, pv) in spec.ports.iter().zip(port_views.iter_mut()) {
        let PortSel::Named(name) = &p.port else { continue };
        for &i in &rp.pods {
            let q = &view.pods[i];
            for port in named_numbers(q.info, name, p.proto) {
                by_number.entry((proto_number(p.proto), port)).or_default().insert(u32::from(q.ip));
                pv.resolved.push(format!("{}/{} {port}", q.info.namespace, q.info.name));
            }
        }
    }
    for ((proto, port), addrs) in by_number {
        out.push(Rule {
            policy: id,
            index,
            peers: vec![Peer::Addresses(addrs.into_iter().collect())],
            ports: vec![PortRange { proto, port, end_port: port }],
        });
    }
    (out, port_views)
}

fn fail_closed_sentence(m: &PolicyModel, local: usize) -> String {
    let dirs = m.directions.names().join(" and ").to_lowercase();
    let selection = match m.pod_selector {
        Some(_) => format!("the {local} local pod(s) it selects"),
        None => format!("its podSelector is invalid, so every pod of namespace {} ({local} local)", m.namespace),
    };
    format!(
        "NetworkPolicy {} is invalid ({}); enforced fail-closed: {selection} are isolated for {dirs} and it allows nothing",
        m.key,
        m.errors.join("; ")
    )
}

/// Compiles the NetworkPolicies of `inp` into tables; see the module contract of [`super`].
pub fn compile_policy(inp: &PolicyInputs, state: &mut PolicyState) -> CompiledPolicy {
    let mut problems = Vec::new();
    let view = build_view(inp, state, &mut problems);
    let policies = &inp.manifests.network_policies;
    state.policy_ids.retain(|k, _| policies.contains_key(k));
    let used: BTreeSet<PolicyId> = state.policy_ids.values().copied().collect();
    let mut free = (1..).filter(|i| !used.contains(i));
    for k in policies.keys() {
        if !state.policy_ids.contains_key(k) {
            state.policy_ids.insert(k.clone(), free.next().expect("fewer policies than ids"));
        }
    }

    let mut tables = PolicyTables::default();
    let mut entries: BTreeMap<u32, PodPolicy> = BTreeMap::new();
    let mut views = Vec::new();
    for (key, np) in policies {
        let m = model::read_policy(key, np);
        let id = state.policy_ids[key];
        tables.policy_names.insert(id, key.clone());
        problems.extend(m.warnings.iter().map(|w| format!("NetworkPolicy {key}: {w}")));

        let selected: Vec<&Pod> = view
            .pods
            .iter()
            .filter(|p| p.info.namespace == m.namespace && m.pod_selector.as_ref().is_none_or(|s| s.matches(&p.info.labels)))
            .collect();
        let local: Vec<&Pod> = selected.iter().copied().filter(|p| p.gets_entry).collect();
        if !m.errors.is_empty() {
            problems.push(fail_closed_sentence(&m, local.len()));
        }

        let to_index = |i: usize| u16::try_from(i).unwrap_or(u16::MAX);
        let mut ingress_views = Vec::new();
        let mut egress_views = Vec::new();
        // Ingress: peers resolved once, ports per selected pod (named ports are its own).
        let mut ingress: Vec<(u16, &RuleSpec, ResolvedPeers)> = Vec::new();
        for (i, r) in m.rules.iter().flat_map(|r| r.ingress.iter()).enumerate() {
            let rp = resolve_peers(&view, &m.namespace, r);
            let ports = r
                .ports
                .iter()
                .map(|p| PortView {
                    port: p.label(),
                    resolved: match &p.port {
                        PortSel::Named(n) => local
                            .iter()
                            .flat_map(|q| {
                                named_numbers(q.info, n, p.proto).map(|port| format!("{}/{} {port}", q.info.namespace, q.info.name))
                            })
                            .collect(),
                        _ => Vec::new(),
                    },
                })
                .collect();
            ingress_views.push(RuleView {
                index: to_index(i),
                all_peers: rp.all_peers,
                peers: rp.views.clone(),
                all_ports: r.ports.is_empty(),
                ports,
            });
            ingress.push((to_index(i), r, rp));
        }
        // Egress: the same rules for every selected pod.
        let mut egress: Vec<Rule> = Vec::new();
        for (i, r) in m.rules.iter().flat_map(|r| r.egress.iter()).enumerate() {
            let rp = resolve_peers(&view, &m.namespace, r);
            let (rules, ports) = egress_rules(id, to_index(i), r, &rp, &view);
            egress.extend(rules);
            egress_views.push(RuleView {
                index: to_index(i),
                all_peers: rp.all_peers,
                peers: rp.views,
                all_ports: r.ports.is_empty(),
                ports,
            });
        }

        for pod in &local {
            let e = entries.entry(u32::from(pod.ip)).or_default();
            if m.directions.ingress {
                e.ingress_isolated = true;
                for (index, r, rp) in &ingress {
                    let Some(peers) = &rp.peers else { continue };
                    let Some(ports) = ingress_ports(&r.ports, pod.info) else { continue };
                    e.ingress.push(Rule { policy: id, index: *index, peers: peers.clone(), ports });
                }
            }
            if m.directions.egress {
                e.egress_isolated = true;
                e.egress.extend(egress.iter().cloned());
            }
        }

        views.push(PolicyView {
            policy: key.clone(),
            policy_id: id,
            pod_selector: m.pod_selector.as_ref().map_or_else(|| "invalid".to_string(), |s| s.to_string()),
            policy_types: m.directions.names(),
            status: if m.errors.is_empty() { "ok" } else { "invalid" },
            errors: m.errors.clone(),
            notes: m.warnings.iter().chain(m.notes.iter()).cloned().collect(),
            selected_local_pods: local.iter().map(|p| p.label()).collect(),
            selected_remote_pods: selected.iter().filter(|p| !p.local).count(),
            ingress: ingress_views,
            egress: egress_views,
        });
    }

    // The resident node reaches its pods whatever their ingress policies say.
    let node_ip = u32::from(inp.node.internal_ip);
    let mut node_rule_used = false;
    for e in entries.values_mut().filter(|e| e.ingress_isolated) {
        e.ingress.push(Rule {
            policy: RESIDENT_NODE_POLICY,
            index: 0,
            peers: vec![Peer::IpBlock { cidr: (node_ip, 32), except: Vec::new() }],
            ports: Vec::new(),
        });
        node_rule_used = true;
    }
    if node_rule_used {
        tables.policy_names.insert(RESIDENT_NODE_POLICY, RESIDENT_NODE_NAME.to_string());
    }

    let identities: BTreeMap<u32, Identity> =
        view.pods.iter().filter_map(|p| p.identity.map(|id| (u32::from(p.ip), id))).collect();
    let now = (identities, entries);
    if state.last.as_ref() != Some(&now) {
        state.epoch = state.epoch.wrapping_add(1).max(1);
    }
    tables.epoch = state.epoch;
    tables.identities = now.0.iter().map(|(k, v)| (*k, *v)).collect();
    tables.pods = now.1.iter().map(|(k, v)| (*k, v.clone())).collect();
    state.last = Some(now);
    CompiledPolicy { tables, problems, views }
}
