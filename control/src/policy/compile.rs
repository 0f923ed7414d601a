//! The NetworkPolicy compiler: namespaces, pods and policies to [`PolicyTables`]; the semantics
//! are in the contract of [`super`].
//!
//! Order of work, deterministic (pods in view order, policies in `namespace/name` order):
//! 1. the view: namespace labels, the pods that take part, their label groups (pods of one
//!    namespace with equal labels) and identities (`build_view`);
//! 2. policy ids;
//! 3. per policy: read it ([`super::model`]), select pods (its podSelector evaluated once per
//!    label group of its namespace), resolve each rule's peers once (each namespaceSelector
//!    evaluated once per namespace, each podSelector once per label group; peers equal to one
//!    resolved before share its identity set), then give every selected local pod its
//!    isolation and rules: the rules share their peers, only ingress named ports are resolved
//!    per pod;
//! 4. the resident node's rule; the epoch.
//!
//! Views list pods through [`PodList`]s, which spell out their strings on demand.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;

use ipnet::Ipv4Net;
use rustc_hash::FxHashMap;
use switch::tables::policy::{IdSet, Identity, IdentityMap, Peer, PodPolicies, PolicyId, PolicyNames, PolicyTables, PortRange, Rule};

use super::lists::{Directory, PodList};
use super::model::{self, PeerSpec, PolicyModel, PortSel, PortSpec, RuleSpec};
use super::selector::{Labels, Selector};
use super::{
    CompiledPolicy, PeerView, PolicyInputs, PolicyState, PolicyView, PortView, RuleView, NAMESPACE_NAME_LABEL,
    RESIDENT_NODE_NAME, RESIDENT_NODE_POLICY,
};
use crate::model::{L4Proto, NodeInfo, PodInfo};
use crate::naming;


/// A pod that takes part in policy (see the module contract of [`super`]).
struct Pod<'a> {
    info: &'a PodInfo,
    ip: Ipv4Addr,
    /// Its label group.
    group: u32,
    /// No other pod of the view has its address: it has its group's identity and peers match it.
    addressable: bool,
    /// A local pod whose address no other local pod has: it gets an entry in the tables.
    gets_entry: bool,
    local: bool,
}

/// Pods of one namespace with equal labels.
struct Group<'a> {
    labels: &'a Labels,
    /// `Some` when one of its pods is addressable.
    identity: Option<Identity>,
}

struct Namespace {
    name: String,
    labels: Labels,
    /// Its label groups, increasing.
    groups: Vec<u32>,
}

struct View<'a> {
    /// By name.
    namespaces: Vec<Namespace>,
    pods: Vec<Pod<'a>>,
    groups: Vec<Group<'a>>,
    dir: Arc<Directory>,
}

impl View<'_> {
    fn ns_index(&self, ns: &str) -> Option<u32> {
        self.namespaces.binary_search_by(|n| n.name.as_str().cmp(ns)).ok().map(|i| i as u32)
    }

    /// Indices of the addressable pods (the only ones peers match as pods).
    fn addressable(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.pods.len() as u32).filter(|i| self.pods[*i as usize].addressable)
    }
}

fn build_view<'a>(inp: &PolicyInputs<'a>, state: &mut PolicyState, problems: &mut Vec<String>) -> View<'a> {
    let m = inp.manifests;
    let mut ns_labels: BTreeMap<String, Labels> = BTreeMap::new();
    for (name, ns) in &m.namespaces {
        let mut labels = ns.metadata.labels.clone().unwrap_or_default();
        labels.insert(NAMESPACE_NAME_LABEL.to_string(), name.clone());
        ns_labels.insert(name.clone(), labels);
    }
    let mut taking_part: Vec<(&PodInfo, Ipv4Addr)> = Vec::new();
    let mut key = String::new();
    // The pods of the view in key order, walked along with `all_pods` (in the same order when
    // it comes from the pod cache): a pod's object is then found without a lookup by name in a
    // map of every pod (a third of this step at 150,000 pods); a pod the walk does not meet is
    // looked up.
    let mut objects = m.pods.iter().peekable();
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
        key.clear();
        key.push_str(&p.namespace);
        key.push('/');
        key.push_str(&p.name);
        while objects.next_if(|(k, _)| k.as_str() < key.as_str()).is_some() {}
        let object = match objects.peek() {
            Some((k, o)) if k.as_str() == key.as_str() => Some(&***o),
            _ => m.pods.get(key.as_str()).map(|o| &**o),
        };
        let phase = object.and_then(|o| o.status.as_ref()).and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed")) {
            continue;
        }
        taking_part.push((p, ip));
    }
    let is_local = |p: &PodInfo| p.node_name.as_deref().is_none_or(|n| n == inp.node.name);
    // Per address: how many pods of the view, and how many local ones, have it.
    let mut count: FxHashMap<Ipv4Addr, (u32, u32)> = FxHashMap::default();
    count.reserve(taking_part.len());
    for (p, ip) in &taking_part {
        let c = count.entry(*ip).or_default();
        c.0 += 1;
        c.1 += u32::from(is_local(p));
    }
    let mut shared: BTreeMap<Ipv4Addr, Vec<String>> = BTreeMap::new();
    for (p, ip) in &taking_part {
        if count[ip].0 > 1 {
            shared.entry(*ip).or_default().push(p.key());
        }
    }
    for (ip, names) in &shared {
        problems.push(format!(
            "pods {} all have IP {ip}: the address is ambiguous, so no pod or namespace selector of a NetworkPolicy matches it (ipBlocks still do)",
            names.join(", ")
        ));
    }
    // Pods come by namespace: each namespace is looked up once per run of its pods.
    let mut last_ns: Option<&str> = None;
    for (p, _) in &taking_part {
        if last_ns == Some(p.namespace.as_str()) {
            continue;
        }
        last_ns = Some(p.namespace.as_str());
        if !ns_labels.contains_key(&p.namespace) {
            ns_labels.insert(p.namespace.clone(), Labels::from([(NAMESPACE_NAME_LABEL.to_string(), p.namespace.clone())]));
        }
    }
    let mut namespaces: Vec<Namespace> =
        ns_labels.into_iter().map(|(name, labels)| Namespace { name, labels, groups: Vec::new() }).collect();

    // Label groups, numbered in order of first appearance.
    let mut group_of: FxHashMap<(&str, &Labels), u32> = FxHashMap::default();
    group_of.reserve(taking_part.len());
    let mut groups: Vec<Group> = Vec::new();
    let mut pods: Vec<Pod> = Vec::with_capacity(taking_part.len());
    for (p, ip) in taking_part {
        let group = *group_of.entry((p.namespace.as_str(), &p.labels)).or_insert_with(|| {
            let g = groups.len() as u32;
            groups.push(Group { labels: &p.labels, identity: None });
            let ns = namespaces.binary_search_by(|n| n.name.as_str().cmp(&p.namespace)).expect("every pod's namespace is in the view");
            namespaces[ns].groups.push(g);
            g
        });
        let (all, local) = count[&ip];
        pods.push(Pod { info: p, ip, group, addressable: all == 1, gets_entry: is_local(p) && local == 1, local: is_local(p) });
    }
    // Identities for the groups with an addressable pod, in order of the first such pod.
    let mut first = vec![false; groups.len()];
    let with_identity: Vec<&Pod> = pods
        .iter()
        .filter(|p| p.addressable && !std::mem::replace(&mut first[p.group as usize], true))
        .collect();
    let ids = state.identities.assign(with_identity.iter().map(|p| (p.info.namespace.as_str(), &*p.info.labels)));
    for (p, id) in with_identity.iter().zip(ids) {
        groups[p.group as usize].identity = Some(id);
    }
    let dir = Arc::new(Directory::new(
        pods.iter().map(|p| (p.info.namespace.as_str(), p.info.name.as_str(), p.ip, p.addressable, p.group)),
        groups.len(),
    ));
    View { namespaces, pods, groups, dir }
}

/// What one peer entry matches.
#[derive(Clone)]
enum PeerMatch {
    /// The addressable pods of these label groups.
    Groups(Arc<[u32]>),
    /// The addresses in the block.
    Block(Ipv4Net, Vec<Ipv4Net>),
    Nothing,
}

/// One rule's peers, resolved against the view (independent of the pod the rule is for).
struct ResolvedPeers {
    /// For the tables; `None` when the rule matches no peer at all (every entry was IPv6).
    peers: Option<Arc<[Peer]>>,
    /// What each entry matches (for named egress ports); empty when `all_peers`.
    matches: Vec<PeerMatch>,
    all_peers: bool,
    views: Vec<PeerView>,
}

impl ResolvedPeers {
    /// The addressable pods the peers match, in view order.
    fn pods(&self, view: &View) -> Vec<u32> {
        if self.all_peers {
            return view.addressable().collect();
        }
        let mut out: Vec<u32> = Vec::new();
        for m in &self.matches {
            match m {
                PeerMatch::Groups(g) => out.extend(view.dir.addressable_in_groups(g)),
                PeerMatch::Block(cidr, except) => out.extend(view.dir.addressable_in_block(cidr, except)),
                PeerMatch::Nothing => {}
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// A podSelector/namespaceSelector peer: the namespace it is relative to (when it has no
/// namespaceSelector), its pod selector, its namespace selector.
type PodsPeerKey = (Option<u32>, Option<Selector>, Option<Selector>);

/// Resolves peers, each distinct one once.
struct Resolver<'v, 'a> {
    view: &'v View<'a>,
    memo: HashMap<PodsPeerKey, (Arc<[u32]>, IdSet)>,
}

impl<'v, 'a> Resolver<'v, 'a> {
    /// The label groups with an identity that a podSelector/namespaceSelector peer of a policy
    /// in namespace `policy_ns` matches, and their identities.
    fn pods_peer(&mut self, policy_ns: Option<u32>, pods: &Option<Selector>, namespaces: &Option<Selector>) -> (Arc<[u32]>, IdSet) {
        let key = (if namespaces.is_none() { policy_ns } else { None }, pods.clone(), namespaces.clone());
        if let Some(r) = self.memo.get(&key) {
            return r.clone();
        }
        let view = self.view;
        let nss: Vec<u32> = match namespaces {
            None => policy_ns.into_iter().collect(),
            Some(sel) => (0..view.namespaces.len() as u32).filter(|n| sel.matches(&view.namespaces[*n as usize].labels)).collect(),
        };
        let mut groups = Vec::new();
        let mut ids = Vec::new();
        for n in nss {
            for &g in &view.namespaces[n as usize].groups {
                let grp = &view.groups[g as usize];
                let Some(id) = grp.identity else { continue };
                if pods.as_ref().is_none_or(|s| s.matches(grp.labels)) {
                    groups.push(g);
                    ids.push(id);
                }
            }
        }
        let r: (Arc<[u32]>, IdSet) = (groups.into(), IdSet::new(ids));
        self.memo.insert(key, r.clone());
        r
    }

    fn resolve(&mut self, policy_ns: &str, policy_ns_index: Option<u32>, spec: &RuleSpec) -> ResolvedPeers {
        if spec.peers.is_empty() {
            return ResolvedPeers { peers: Some(Arc::new([Peer::Any])), matches: Vec::new(), all_peers: true, views: Vec::new() };
        }
        let dir = &self.view.dir;
        let mut peers = Vec::new();
        let mut matches = Vec::new();
        let mut views = Vec::new();
        for p in &spec.peers {
            let (peer, matched, pods) = match p {
                PeerSpec::Pods { pods, namespaces } => {
                    let (groups, ids) = self.pods_peer(policy_ns_index, pods, namespaces);
                    (Some(Peer::Identities(ids)), PeerMatch::Groups(groups.clone()), PodList::groups(dir, groups))
                }
                PeerSpec::IpBlock { cidr, except } => {
                    let peer = Peer::IpBlock {
                        cidr: (u32::from(cidr.network()), cidr.prefix_len()),
                        except: except.iter().map(|e| (u32::from(e.network()), e.prefix_len())).collect(),
                    };
                    (Some(peer), PeerMatch::Block(*cidr, except.clone()), PodList::block(dir, *cidr, except))
                }
                PeerSpec::Ipv6Block { .. } => (None, PeerMatch::Nothing, PodList::empty(dir)),
            };
            views.push(PeerView { peer: p.describe(policy_ns), pods });
            matches.push(matched);
            peers.extend(peer);
        }
        ResolvedPeers { peers: if peers.is_empty() { None } else { Some(peers.into()) }, matches, all_peers: false, views }
    }
}

fn range(proto: L4Proto, sel: &PortSel) -> Option<PortRange> {
    let proto = proto.number();
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

/// An ingress rule's ports for the selected pod `pod` (`None` only when the rule has no named
/// port: the result is then the same for every pod); `None` when the rule lists ports and
/// none of them exists on the pod (the rule matches nothing).
fn ingress_ports(spec: &[PortSpec], pod: Option<&PodInfo>) -> Option<Vec<PortRange>> {
    if spec.is_empty() {
        return Some(Vec::new());
    }
    let mut out = Vec::new();
    for p in spec {
        match &p.port {
            PortSel::Named(n) => {
                for port in pod.into_iter().flat_map(|pod| named_numbers(pod, n, p.proto)) {
                    out.push(PortRange { proto: p.proto.number(), port, end_port: port });
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
    let dir = &view.dir;
    let numbered_view = |p: &PortSpec| PortView { port: p.label(), resolved: PodList::empty(dir) };
    let Some(peers) = &rp.peers else { return (Vec::new(), spec.ports.iter().map(numbered_view).collect()) };
    if spec.ports.is_empty() {
        return (vec![Rule { policy: id, index, peers: peers.clone(), ports: Vec::new() }], Vec::new());
    }
    let mut out = Vec::new();
    let mut numbered: Vec<PortRange> = spec.ports.iter().filter_map(|p| range(p.proto, &p.port)).collect();
    dedup(&mut numbered);
    if !numbered.is_empty() {
        out.push(Rule { policy: id, index, peers: peers.clone(), ports: numbered });
    }
    let has_named = spec.ports.iter().any(|p| matches!(p.port, PortSel::Named(_)));
    let pods = if has_named { rp.pods(view) } else { Vec::new() };
    let mut by_number: BTreeMap<(u8, u16), Vec<u32>> = BTreeMap::new();
    let mut port_views = Vec::with_capacity(spec.ports.len());
    for p in &spec.ports {
        let PortSel::Named(name) = &p.port else {
            port_views.push(numbered_view(p));
            continue;
        };
        let mut resolved = Vec::new();
        for &i in &pods {
            let q = &view.pods[i as usize];
            for port in named_numbers(q.info, name, p.proto) {
                by_number.entry((p.proto.number(), port)).or_default().push(u32::from(q.ip));
                resolved.push((i, port));
            }
        }
        port_views.push(PortView { port: p.label(), resolved: PodList::ports(dir, resolved) });
    }
    for ((proto, port), addrs) in by_number {
        out.push(Rule {
            policy: id,
            index,
            peers: Arc::new([Peer::Addresses(IdSet::new(addrs))]),
            ports: vec![PortRange { proto, port, end_port: port }],
        });
    }
    (out, port_views)
}

/// An ingress rule of a policy, ready to be written for each pod the policy selects.
struct IngressRule<'m> {
    index: u16,
    spec: &'m RuleSpec,
    peers: Arc<[Peer]>,
    /// The ports when they are the same for every pod (no named port), as [`ingress_ports`].
    shared_ports: Option<Option<Vec<PortRange>>>,
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
    state.seen = None;
    compile_everything(inp, state)
}

/// What [`compile_policy_unless_unchanged`] keeps of the last compile.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    digest: String,
    node: NodeInfo,
    pods_generation: u64,
    namespaces: BTreeMap<String, Arc<k8s_openapi::api::core::v1::Namespace>>,
    policies: BTreeMap<String, Arc<k8s_openapi::api::networking::v1::NetworkPolicy>>,
}

/// What [`compile_policy`] gives, or None when nothing it reads changed since the last call
/// with `state` (so the result of that call stands: a compile would give it again). What it
/// reads: the node, the Namespaces, the NetworkPolicies, and the pods,
/// for which the caller vouches with `pods_generation`: a number that changes whenever
/// `inp.all_pods` or the `status.phase` of a pod of the view changes
/// ([`crate::pods::PodCache::generation`]). Namespaces and policies are compared by the
/// view's [`crate::manifests::Changes`] when it leads from the last view, else by content.
pub fn compile_policy_unless_unchanged(inp: &PolicyInputs, pods_generation: u64, state: &mut PolicyState) -> Option<CompiledPolicy> {
    let m = inp.manifests;
    let unchanged = match state.seen.as_deref_mut() {
        Some(seen) => {
            let same_objects = match m.changes_since(&seen.digest) {
                Some(c) => {
                    // Bring the copies up to date with the listed keys, comparing as they go.
                    let mut same = true;
                    for k in &c.keys.namespaces {
                        same &= sync_key(&mut seen.namespaces, &m.namespaces, k);
                    }
                    for k in &c.keys.network_policies {
                        same &= sync_key(&mut seen.policies, &m.network_policies, k);
                    }
                    same
                }
                None => {
                    let same_ns = seen.namespaces == m.namespaces;
                    if !same_ns {
                        seen.namespaces = m.namespaces.clone();
                    }
                    let same_np = seen.policies == m.network_policies;
                    if !same_np {
                        seen.policies = m.network_policies.clone();
                    }
                    same_ns && same_np
                }
            };
            let same = same_objects && seen.node == *inp.node && seen.pods_generation == pods_generation;
            seen.digest = m.digest.clone();
            seen.node = inp.node.clone();
            seen.pods_generation = pods_generation;
            same
        }
        None => {
            state.seen = Some(Box::new(Seen {
                digest: m.digest.clone(),
                node: inp.node.clone(),
                pods_generation,
                namespaces: m.namespaces.clone(),
                policies: m.network_policies.clone(),
            }));
            false
        }
    };
    if unchanged {
        return None;
    }
    Some(compile_everything(inp, state))
}

/// Makes `copy[key]` what `now[key]` is; true when it already was.
fn sync_key<T: Clone + PartialEq>(copy: &mut BTreeMap<String, T>, now: &BTreeMap<String, T>, key: &str) -> bool {
    match (copy.get_mut(key), now.get(key)) {
        (Some(a), Some(b)) if a == b => true,
        (Some(a), Some(b)) => {
            *a = b.clone();
            false
        }
        (None, None) => true,
        (Some(_), None) => {
            copy.remove(key);
            false
        }
        (None, Some(b)) => {
            copy.insert(key.to_string(), b.clone());
            false
        }
    }
}

fn compile_everything(inp: &PolicyInputs, state: &mut PolicyState) -> CompiledPolicy {
    let mut problems = Vec::new();
    let view = build_view(inp, state, &mut problems);
    let dir = &view.dir;
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
    let mut policy_names = PolicyNames::default();
    let mut pods = PodPolicies::default();
    let mut resolver = Resolver { view: &view, memo: HashMap::new() };
    let mut views = Vec::new();
    for (key, np) in policies {
        let m = model::read_policy(key, np);
        let id = state.policy_ids[key];
        policy_names.insert(id, key.clone());
        problems.extend(m.warnings.iter().map(|w| format!("NetworkPolicy {key}: {w}")));

        // The podSelector, once per label group of the policy's namespace.
        let ns = view.ns_index(&m.namespace);
        let mut selected: Vec<u32> = Vec::new();
        for &g in ns.map_or(&[][..], |n| &view.namespaces[n as usize].groups) {
            if m.pod_selector.as_ref().is_none_or(|s| s.matches(view.groups[g as usize].labels)) {
                selected.extend(dir.group(g));
            }
        }
        selected.sort_unstable();
        let local: Vec<u32> = selected.iter().copied().filter(|i| view.pods[*i as usize].gets_entry).collect();
        if !m.errors.is_empty() {
            problems.push(fail_closed_sentence(&m, local.len()));
        }

        let to_index = |i: usize| u16::try_from(i).unwrap_or(u16::MAX);
        let mut ingress_views = Vec::new();
        let mut egress_views = Vec::new();
        // Ingress: peers resolved once, ports per selected pod only when named (the pod's own).
        let mut ingress: Vec<IngressRule> = Vec::new();
        for (i, r) in m.rules.iter().flat_map(|r| r.ingress.iter()).enumerate() {
            let rp = resolver.resolve(&m.namespace, ns, r);
            let ports = r
                .ports
                .iter()
                .map(|p| PortView {
                    port: p.label(),
                    resolved: match &p.port {
                        PortSel::Named(n) => PodList::ports(
                            dir,
                            local
                                .iter()
                                .flat_map(|&q| named_numbers(view.pods[q as usize].info, n, p.proto).map(move |port| (q, port)))
                                .collect(),
                        ),
                        _ => PodList::empty(dir),
                    },
                })
                .collect();
            ingress_views.push(RuleView {
                index: to_index(i),
                all_peers: rp.all_peers,
                peers: rp.views,
                all_ports: r.ports.is_empty(),
                ports,
            });
            let Some(peers) = rp.peers else { continue };
            let has_named = r.ports.iter().any(|p| matches!(p.port, PortSel::Named(_)));
            let shared_ports = if has_named { None } else { Some(ingress_ports(&r.ports, None)) };
            ingress.push(IngressRule { index: to_index(i), spec: r, peers, shared_ports });
        }
        // Egress: the same rules for every selected pod.
        let mut egress: Vec<Rule> = Vec::new();
        for (i, r) in m.rules.iter().flat_map(|r| r.egress.iter()).enumerate() {
            let rp = resolver.resolve(&m.namespace, ns, r);
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

        for &q in &local {
            let pod = &view.pods[q as usize];
            let e = pods.entry(u32::from(pod.ip)).or_default();
            if m.directions.ingress {
                e.ingress_isolated = true;
                for r in &ingress {
                    let ports = match &r.shared_ports {
                        Some(p) => p.clone(),
                        None => ingress_ports(&r.spec.ports, Some(pod.info)),
                    };
                    let Some(ports) = ports else { continue };
                    e.ingress.push(Rule { policy: id, index: r.index, peers: r.peers.clone(), ports });
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
            pod_selector: m.pod_selector.as_ref().map_or_else(|| "invalid".to_string(), std::string::ToString::to_string),
            policy_types: m.directions.names(),
            status: if m.errors.is_empty() { "ok" } else { "invalid" },
            errors: m.errors.clone(),
            notes: m.warnings.iter().chain(m.notes.iter()).cloned().collect(),
            selected_remote_pods: selected.iter().filter(|p| !view.pods[**p as usize].local).count(),
            selected_local_pods: PodList::pods(dir, local),
            ingress: ingress_views,
            egress: egress_views,
        });
    }

    // The resident node reaches its pods whatever their ingress policies say.
    let node_peer: Arc<[Peer]> = Arc::new([Peer::IpBlock { cidr: (u32::from(inp.node.internal_ip), 32), except: Vec::new() }]);
    let mut node_rule_used = false;
    for e in pods.values_mut().filter(|e| e.ingress_isolated) {
        e.ingress.push(Rule { policy: RESIDENT_NODE_POLICY, index: 0, peers: node_peer.clone(), ports: Vec::new() });
        node_rule_used = true;
    }
    if node_rule_used {
        policy_names.insert(RESIDENT_NODE_POLICY, RESIDENT_NODE_NAME.to_string());
    }

    let mut identities = IdentityMap::default();
    identities.reserve(view.pods.len());
    for p in view.pods.iter().filter(|p| p.addressable) {
        if let Some(id) = view.groups[p.group as usize].identity {
            identities.insert(u32::from(p.ip), id);
        }
    }
    tables.identities = Arc::new(identities);
    tables.pods = Arc::new(pods);
    tables.policy_names = Arc::new(policy_names);
    let same = state.last.as_ref().is_some_and(|l| l.identities == tables.identities && l.pods == tables.pods);
    if !same {
        state.epoch = state.epoch.wrapping_add(1).max(1);
    }
    tables.epoch = state.epoch;
    state.last =
        Some(PolicyTables { identities: Arc::clone(&tables.identities), pods: Arc::clone(&tables.pods), ..PolicyTables::default() });
    CompiledPolicy { tables, problems, views }
}
