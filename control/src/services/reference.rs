//! The Service compiler as it was before it became incremental: one pass over every object,
//! kept for tests only, as the reference the incremental compiler must agree with.
#![allow(clippy::all)]
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

use switch::tables::maglev;
use switch::tables::services::{Backend, BackendSet, Frontend, FrontendKey, FrontendKind, ServiceTables};
use std::sync::Arc;

use super::allocate::{cluster_ip_order, node_port_order, valid_cluster_ip, Allocator};
use super::derive;
use super::model::{self, ClusterIpSpec, ServiceModel, SliceModel};
use super::address::AddressText;
use super::sets::{SetChoice, Sets};
use super::view::frontend_view;
use super::{CompiledServices, EndpointKey, ServiceConfig, ServiceInputs, ServiceView};

/// The most backends one set holds (Maglev entries are 16-bit indices).
const MAX_BACKENDS: usize = u16::MAX as usize;

/// The state the reference compiler keeps (the original `ServiceState`).
#[derive(Debug, Clone, Default)]
pub struct RefState {
    pub config: ServiceConfig,
    pub cluster_ips: BTreeMap<String, Ipv4Addr>,
    pub node_ports: BTreeMap<(String, u16), u16>,
    pub service_ids: BTreeMap<String, u32>,
    pub next_service_id: u32,
    pub endpoint_ids: BTreeMap<EndpointKey, u32>,
    pub next_endpoint_id: u32,
    pub in_use: BTreeSet<u32>,
    pub removed: Vec<u32>,
}

impl RefState {
    pub fn new(config: ServiceConfig) -> Self {
        Self { config, next_service_id: 1, next_endpoint_id: 1, ..Self::default() }
    }
}

/// The original one-pass compile.
pub fn compile_services(inp: &ServiceInputs, state: &mut RefState) -> CompiledServices {
    let cfg = state.config.clone();
    let m = inp.manifests;
    let mut problems = Vec::new();

    // 1. Read.
    let parsed: BTreeMap<&str, Option<ServiceModel>> =
        m.services.iter().map(|(k, s)| (k.as_str(), model::read_service(k, s, &cfg, &mut problems))).collect();
    let mut slices: BTreeMap<String, Vec<SliceModel>> = BTreeMap::new();
    for (k, s) in &m.endpoint_slices {
        if let Some(sl) = model::read_slice(k, s, &mut problems) {
            slices.entry(sl.service.clone()).or_default().push(sl);
        }
    }
    state.service_ids.retain(|k, _| m.services.contains_key(k));
    for k in m.services.keys() {
        if !state.service_ids.contains_key(k) {
            state.service_ids.insert(k.clone(), state.next_service_id);
            state.next_service_id = state.next_service_id.wrapping_add(1).max(1);
        }
    }

    // 2. Values set by hand.
    let mut ip_owner: BTreeMap<Ipv4Addr, &str> = BTreeMap::new();
    let mut np_owner: BTreeMap<u16, &str> = BTreeMap::new();
    let mut requested_ips: BTreeSet<Ipv4Addr> = BTreeSet::new();
    let mut requested_nps: BTreeSet<u16> = BTreeSet::new();
    let mut ok: Vec<&ServiceModel> = Vec::new();
    for svc in parsed.values().flatten().filter(|s| s.has_frontends()) {
        let ip = match svc.cluster_ip {
            ClusterIpSpec::Ip(a) => Some(a),
            _ => None,
        };
        let nps: BTreeSet<u16> = svc.ports.iter().filter_map(|p| p.node_port).collect();
        requested_ips.extend(ip);
        requested_nps.extend(nps.iter().copied());
        if let Some(o) = ip.and_then(|a| ip_owner.get(&a)) {
            problems.push(format!(
                "Service {}: clusterIP {} is already Service {o}'s; Service skipped",
                svc.key,
                ip.expect("checked")
            ));
            continue;
        }
        if let Some((np, o)) = nps.iter().find_map(|np| np_owner.get(np).map(|o| (np, o))) {
            problems.push(format!("Service {}: nodePort {np} is already Service {o}'s; Service skipped", svc.key));
            continue;
        }
        if let Some(a) = ip {
            ip_owner.insert(a, &svc.key);
        }
        for np in nps {
            np_owner.insert(np, &svc.key);
        }
        ok.push(svc);
    }

    // 3a. ClusterIPs to allocate. An allocation stays while its Service exists and needs one;
    // a Service that cannot be read keeps its allocation reserved.
    let needs_ip = |k: &str| match parsed.get(k) {
        None => false,
        Some(None) => true,
        Some(Some(s)) => s.has_frontends() && s.cluster_ip == ClusterIpSpec::Auto,
    };
    state.cluster_ips.retain(|k, a| needs_ip(k) && valid_cluster_ip(&cfg.service_cidrs, *a));
    let mut lost: BTreeMap<String, String> = BTreeMap::new();
    state.cluster_ips.retain(|k, a| match ip_owner.get(a) {
        Some(o) => {
            lost.insert(k.clone(), format!("its allocated ClusterIP {a} is now Service {o}'s clusterIP"));
            false
        }
        None => true,
    });
    let mut alloc = Allocator::new(
        cluster_ip_order(&cfg.service_cidrs),
        requested_ips.iter().copied().chain(state.cluster_ips.values().copied()).collect(),
    );
    let mut cluster_ip: BTreeMap<&str, Ipv4Addr> = BTreeMap::new();
    let mut keep = Vec::with_capacity(ok.len());
    for svc in ok {
        let a = match svc.cluster_ip {
            ClusterIpSpec::Ip(a) => a,
            _ => match state.cluster_ips.get(&svc.key) {
                Some(a) => *a,
                None => match alloc.next_free() {
                    Some(a) => {
                        if let Some(why) = lost.get(&svc.key) {
                            problems.push(format!("Service {}: {why}; allocated {a} instead", svc.key));
                        }
                        state.cluster_ips.insert(svc.key.clone(), a);
                        a
                    }
                    None => {
                        problems.push(format!(
                            "Service {}: the Service CIDR has no free ClusterIP; Service skipped",
                            svc.key
                        ));
                        continue;
                    }
                },
            },
        };
        cluster_ip.insert(&svc.key, a);
        keep.push(svc);
    }
    let ok = keep;

    // 3b. NodePorts to allocate, one per group of ports sharing a `port` number.
    let needs_np = |k: &str, port: u16| match parsed.get(k) {
        None => false,
        Some(None) => true,
        Some(Some(s)) => {
            s.has_frontends()
                && s.allocates_node_ports()
                && s.node_port_groups().iter().any(|&(p, req)| p == port && req.is_none())
        }
    };
    state.node_ports.retain(|(k, port), np| needs_np(k, *port) && cfg.node_port_range.contains(np));
    let mut lost_np: BTreeMap<(String, u16), String> = BTreeMap::new();
    state.node_ports.retain(|k, np| match np_owner.get(np) {
        Some(o) => {
            lost_np.insert(k.clone(), format!("its allocated NodePort {np} is now Service {o}'s nodePort"));
            false
        }
        None => true,
    });
    let mut alloc = Allocator::new(
        node_port_order(cfg.node_port_range.clone()),
        requested_nps.iter().copied().chain(state.node_ports.values().copied()).collect(),
    );
    let mut node_ports: BTreeMap<(&str, u16), u16> = BTreeMap::new();
    let mut keep = Vec::with_capacity(ok.len());
    'svc: for svc in ok {
        for (port, requested) in svc.node_port_groups() {
            let np = match requested {
                Some(np) => np,
                None if !svc.allocates_node_ports() => continue,
                None => match state.node_ports.get(&(svc.key.clone(), port)) {
                    Some(np) => *np,
                    None => match alloc.next_free() {
                        Some(np) => {
                            if let Some(why) = lost_np.get(&(svc.key.clone(), port)) {
                                problems.push(format!("Service {}: {why}; allocated {np} instead", svc.key));
                            }
                            state.node_ports.insert((svc.key.clone(), port), np);
                            np
                        }
                        None => {
                            problems.push(format!(
                                "Service {}: the NodePort range has no free port; Service skipped",
                                svc.key
                            ));
                            continue 'svc;
                        }
                    },
                },
            };
            node_ports.insert((&svc.key, port), np);
        }
        keep.push(svc);
    }
    let ok = keep;

    // 4. Frontends.
    let mut node_ips = vec![inp.node.internal_ip];
    for a in &cfg.extra_node_ips {
        if !node_ips.contains(a) {
            node_ips.push(*a);
        }
    }
    let mut tables = ServiceTables {
        service_cidrs: cfg.service_cidrs.iter().map(|c| (u32::from(c.network()), c.prefix_len())).collect(),
        snat_ip: Some(inp.node.internal_ip),
        ..Default::default()
    };
    let mut views: Vec<ServiceView> = Vec::new();
    let mut seen_endpoints: BTreeSet<EndpointKey> = BTreeSet::new();
    let mut maglevs: HashMap<Vec<(Ipv4Addr, u16)>, Arc<[u16]>> = HashMap::new();
    let no_slices = Vec::new();
    for svc in ok {
        let cip = cluster_ip[svc.key.as_str()];
        Arc::make_mut(&mut tables.cluster_ips).insert(u32::from(cip));
        let service_id = state.service_ids[&svc.key];
        let own_slices: Vec<&SliceModel> = slices.get(&svc.key).unwrap_or(&no_slices).iter().collect();
        for port in &svc.ports {
            let (mut cands, from) = if !own_slices.is_empty() {
                (derive::from_slices(svc, port, &own_slices, inp.node, &mut problems), "endpointslices")
            } else if svc.selector.is_some() {
                (derive::from_selector(svc, port, &inp.all_pods.iter().collect::<Vec<_>>(), m, inp.node, &mut problems), "selector")
            } else {
                (Vec::new(), "none")
            };
            if cands.len() > MAX_BACKENDS {
                problems.push(format!(
                    "Service {}: port {} has {} endpoints; only the first {MAX_BACKENDS} are used",
                    svc.key,
                    port.label(),
                    cands.len()
                ));
                cands.truncate(MAX_BACKENDS);
            }
            let ids: Vec<u32> = cands
                .iter()
                .map(|c| {
                    let key = EndpointKey {
                        service: svc.key.clone(),
                        port_name: port.name.clone(),
                        proto: port.proto,
                        ip: c.ip,
                        port: c.port,
                    };
                    let id = *state.endpoint_ids.entry(key.clone()).or_insert_with(|| {
                        let id = state.next_endpoint_id;
                        state.next_endpoint_id = state.next_endpoint_id.wrapping_add(1).max(1);
                        id
                    });
                    seen_endpoints.insert(key);
                    id
                })
                .collect();
            let sets = Sets::categorize(&cands);
            let mut frontends: Vec<(FrontendKind, Ipv4Addr, u16)> = vec![(FrontendKind::ClusterIp, cip, port.port)];
            if let Some(np) = node_ports.get(&(svc.key.as_str(), port.port)) {
                frontends.extend(node_ips.iter().map(|a| (FrontendKind::NodePort, *a, *np)));
            }
            frontends.extend(svc.lb_ips.iter().map(|a| (FrontendKind::LoadBalancer, *a, port.port)));
            frontends.extend(svc.external_ips.iter().map(|a| (FrontendKind::ExternalIp, *a, port.port)));
            for (kind, ip, fport) in frontends {
                let key = FrontendKey { ip: u32::from(ip), port: fport, proto: port.proto.number() };
                if let Some(&i) = tables.by_key.get(&key) {
                    problems.push(format!(
                        "Service {}: {ip}:{fport}/{} is already a frontend of {}; this one skipped",
                        svc.key,
                        port.proto.as_str().to_ascii_uppercase(),
                        tables.frontends[i as usize].name
                    ));
                    continue;
                }
                let (internal, external) = sets.for_kind(kind, svc);
                let mut build = |s: &SetChoice| {
                    let backends: Vec<Backend> = s
                        .members
                        .iter()
                        .map(|&i| Backend {
                            ip: cands[i].ip,
                            port: cands[i].port,
                            endpoint_id: ids[i],
                            local: cands[i].local,
                        })
                        .collect();
                    let addrs: Vec<(Ipv4Addr, u16)> = backends.iter().map(|b| (b.ip, b.port)).collect();
                    let table = maglevs
                        .entry(addrs)
                        .or_insert_with_key(|a| {
                            let names: Vec<String> = a.iter().map(|(ip, p)| format!("{ip}:{p}")).collect();
                            maglev::build(&names).into()
                        })
                        .clone();
                    BackendSet { backends: backends.into(), maglev: table, on_empty: s.on_empty, masquerade: s.masquerade }
                };
                let f = Frontend {
                    name: svc.port_name(port),
                    service_id,
                    kind,
                    key,
                    internal: build(&internal),
                    external: build(&external),
                    affinity_timeout_s: svc.affinity_timeout_s,
                    source_ranges: if kind == FrontendKind::LoadBalancer {
                        svc.source_ranges.iter().map(|n| (u32::from(n.network()), n.prefix_len())).collect()
                    } else {
                        Vec::new()
                    },
                };
                let addrs: Vec<AddressText> = cands.iter().map(|c| AddressText::new(c.ip, c.port)).collect();
                views.push(frontend_view(svc, port, &f, &cands, &addrs, &ids, &internal, &external, from));
                tables.push(f);
            }
        }
    }

    // Ids of endpoints no longer listed go; ids that left every set are reported.
    state.endpoint_ids.retain(|k, _| seen_endpoints.contains(k));
    let out = CompiledServices { tables, problems, views: views.into_iter().map(Arc::new).collect() };
    let now = out.endpoint_ids();
    state.removed = state.in_use.difference(&now).copied().collect();
    state.in_use = now;
    out
}
