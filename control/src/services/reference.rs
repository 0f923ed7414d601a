//! The Service compiler as it was before it became incremental: one pass over every object,
//! kept for tests only, as the reference the incremental compiler must agree with.
#![allow(clippy::all)]
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

use switch::tables::maglev;
use switch::tables::services::{Backend, BackendSet, FrontendKey, ServiceTables};
use std::sync::Arc;

use super::derive;
use super::model::{self, ServiceModel, SliceModel};
use super::sets::{SetChoice, Sets, Topology};
use super::view::frontend_view;
use super::{CompiledServices, EndpointKey, ServiceConfig, ServiceInputs, ServiceView};

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

    // 2-3. Allocations (the compiler's: they are not incremental).
    let (allocs, alloc_problems) = super::compile::allocate(
        parsed.values().flatten(),
        |k| parsed.get(k).map(Option::as_ref),
        &cfg,
        &mut state.cluster_ips,
        &mut state.node_ports,
    );
    problems.extend(alloc_problems.into_iter().map(|(_, p)| p));
    let ok: Vec<&ServiceModel> = parsed.values().flatten().filter(|s| allocs.contains_key(&s.key)).collect();

    // 4. Frontends.
    let mut node_ips = if cfg.internal_ip_serves_node_ports { vec![inp.node.internal_ip] } else { Vec::new() };
    for a in &cfg.extra_node_ips {
        if !node_ips.contains(a) {
            node_ips.push(*a);
        }
    }
    let mut tables = ServiceTables {
        snat_ip: Some(inp.node.internal_ip),
        ..Default::default()
    };
    let mut views: Vec<ServiceView> = Vec::new();
    let mut seen_endpoints: BTreeSet<EndpointKey> = BTreeSet::new();
    let mut maglevs: HashMap<Vec<(Ipv4Addr, u16)>, switch::tables::maglev::MaglevTable> = HashMap::new();
    let no_slices = Vec::new();
    for svc in ok {
        let alloc = &allocs[&svc.key];
        let cip = alloc.cluster_ip;
        Arc::make_mut(&mut tables.cluster_ips).insert(u32::from(cip));
        let service_id = state.service_ids[&svc.key];
        let own_slices: Vec<&SliceModel> = slices.get(&svc.key).unwrap_or(&no_slices).iter().collect();
        for port in &svc.ports {
            let all_pods: Vec<&crate::model::PodInfo> = inp.all_pods.iter().collect();
            let pods = svc.selector.is_some().then_some(all_pods.as_slice());
            let (cands, from) = derive::endpoints(svc, port, &own_slices, pods, m, inp.node, &mut problems);
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
            let topology = super::compile::NodeTopology::of(m, &inp.node.name);
            let sets = Sets::categorize(&cands, Topology { node: &inp.node.name, zone: &topology.zone });
            for (kind, ip, fport) in super::compile::port_frontends(svc, port, alloc, &node_ips) {
                let key = FrontendKey { ip: u32::from(ip), port: fport, proto: port.proto.number() };
                if let Some(i) = tables.by_key.get(&key) {
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
                    let backends: Vec<Backend> = s.backends(&cands, &ids).collect();
                    let addrs: Vec<(Ipv4Addr, u16)> = backends.iter().map(|b| (b.ip, b.port)).collect();
                    let table = maglevs
                        .entry(addrs)
                        .or_insert_with_key(|a| {
                            let names: Vec<String> = a.iter().map(|(ip, p)| format!("{ip}:{p}")).collect();
                            maglev::build_table(&names)
                        })
                        .clone();
                    BackendSet { backends: backends.into(), maglev: table, on_empty: s.on_empty, masquerade: s.masquerade }
                };
                let ranges = super::compile::lb_source_ranges(svc, inp.node.internal_ip);
                let f = super::compile::frontend(svc, port, service_id, key, kind, [build(&internal), build(&external)], &ranges);
                views.push(frontend_view(svc, port, &f, &cands, &ids, &internal, &external, from));
                tables.push(f);
            }
        }
    }

    // Ids of endpoints no longer listed go; ids that left every set are reported.
    state.endpoint_ids.retain(|k, _| seen_endpoints.contains(k));
    tables.service_cidrs = super::compile::service_ranges(&cfg.service_cidrs, &tables.cluster_ips);
    let out = CompiledServices { tables, problems, views: views.into_iter().map(Arc::new).collect(), ..CompiledServices::default() };
    let now = out.endpoint_ids();
    state.removed = state.in_use.difference(&now).copied().collect();
    state.in_use = now;
    out
}
