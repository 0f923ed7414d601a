//! Answers to `podswitch show ...`, filled from what the apply side published and from the
//! dataplane's counters.
//!
//! Contract: every answer is one of the [`crate::ctl::replies`] types with `"ok": true`. The
//! handler loads the published snapshot (no lock) and reads counters under the dataplane's
//! shared lock, so an answer never waits for a compile, nor an apply for an answer. Numbers
//! are totals since start.
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;
use switch::afxdp::iface;
use switch::conntrack::{flags, ConnTable, CtState};
use switch::dataplane::Dataplane;
use switch::tables::Tables;

use super::shared::{Shared, Snapshot};
use crate::ctl::replies::{self, Answer};
use crate::ctl::{Request, WAIT_PORT_MAX_MS};
use crate::memory::MemoryByTable;
use crate::naming::mac_string;

pub(crate) fn handler(shared: Arc<Shared>) -> crate::ctl::server::Handler {
    Arc::new(move |req: &Request| {
        let s = shared.snapshot();
        let dp = shared.dp();
        match req {
            Request::Status => answer(&status(&shared, &s, dp)),
            Request::Ports => answer(&ports(&s, dp)),
            Request::WaitPort { interface, key, timeout_ms } => {
                let deadline = Instant::now() + Duration::from_millis((*timeout_ms).min(WAIT_PORT_MAX_MS));
                loop {
                    let seen = shared.changes();
                    let state = port_state(&shared, dp, interface, key);
                    if state.owner.as_ref() == Some(key) || Instant::now() >= deadline {
                        return answer(&state);
                    }
                    shared.wait_for_change(seen, deadline);
                }
            }
            Request::Routes => answer(&routes(dp)),
            Request::Stats => answer(&stats(dp)),
            Request::Workers => answer(&replies::Workers { workers: dp.worker_polls().iter().map(replies::WorkerPollRow::from).collect() }),
            Request::Services => match &s.services {
                Some(c) => answer(&replies::Services { services: c.views.clone() }),
                None => answer(&replies::Services { services: [(); 0] }),
            },
            Request::Conntrack { limit } => answer(&conntrack(dp.conntrack(), &dp.tables(), limit.unwrap_or(1000))),
            Request::Policies => {
                let epoch = dp.tables().policy.epoch;
                match &s.policy {
                    Some(c) => answer(&replies::Policies { epoch, policies: &c.views }),
                    None => answer(&replies::Policies { epoch, policies: [(); 0] }),
                }
            }
            Request::Neighbours => answer(&neighbours(&shared, &s)),
            Request::Flows { since, limit } => {
                let (tables, policies) = policy_counts(dp);
                answer(&flows(&shared, &s, &tables, policies, since.unwrap_or(0), limit.unwrap_or(1000)))
            }
        }
    })
}

fn answer<T: Serialize>(reply: &T) -> Result<Value, serde_json::Error> {
    serde_json::to_value(Answer::new(reply))
}

fn status(shared: &Shared, s: &Snapshot, dp: &Dataplane) -> replies::Status {
    replies::Status {
        node: s.node.name.clone(),
        pod_cidr: s.node.pod_cidr.to_string(),
        pod_mtu: s.uplink.as_ref().map(|u| u.pod_network.pod_mtu(u.mtu)),
        internal_ip: s.node.internal_ip.to_string(),
        manifests_dir: s.dir.display().to_string(),
        applied_digest: s.applied_digest.clone(),
        tables_version: s.tables_version,
        ports_wanted: s.ports_wanted,
        ports_attached: s.port_keys.len(),
        pending_ports: s.pending.iter().map(|(k, e)| format!("{k}: {e}")).collect(),
        unreachable_nodes: s.unreachable_nodes.clone(),
        problems: s.problems.clone(),
        ignored_objects: s.ignored_kinds.clone(),
        last_error: s.last_error.clone(),
        uptime_s: shared.started.elapsed().as_secs(),
        workers: dp.worker_count(),
        kubernetes_api: shared.kube.as_ref().and_then(|k| serde_json::to_value(k.status()).ok()),
        memory: Some(MemoryByTable::of(&dp.tables(), s.objects_bytes, MemoryByTable::conntrack_of(dp.conntrack()))),
        l2_announcements: shared.l2_status(),
        conntrack_state: dp.adoption().cloned(),
    }
}

/// What `wait_port` answers: whether `interface` has a port, its owner in the tables in force,
/// and why `key` has no port when the last snapshot says.
fn port_state(shared: &Shared, dp: &Dataplane, interface: &str, key: &str) -> replies::PortState {
    let id = dp.attached().into_iter().find(|(_, name)| name == interface).map(|(id, _)| id);
    replies::PortState {
        attached: id.is_some(),
        owner: id.and_then(|id| dp.tables().port(id).map(|c| c.name.clone())),
        pending: shared.snapshot().pending.get(key).cloned(),
    }
}

fn ports(s: &Snapshot, dp: &Dataplane) -> replies::Ports {
    let tables = dp.tables();
    let door = dp.door_sizes();
    let ports = dp
        .reports()
        .into_iter()
        .map(|report| {
            let cfg = tables.port(report.id);
            let interface_present = iface::exists(&report.name);
            replies::PortRow {
                owner: cfg.map(|c| c.name.clone()),
                kind: cfg.map(|c| c.kind),
                mac: cfg.map(|c| mac_string(c.mac)),
                pod_ip: cfg.and_then(|c| c.source_guard).map(|g| g.ip.to_string()),
                interface_present,
                kernel_lost_reasons: switch::port::loss_reason::kernel_loss_reasons(
                    &report.kernel,
                    switch::port::loss_reason::DoorSizes { own_rx_frames: report.own_umem.map(|o| o.rx_frames), ..door },
                ),
                uplink_filter: dp
                    .uplink_filter(report.id)
                    .map(|(filter, counters)| replies::UplinkFilterView { filter, counters }),
                report,
            }
        })
        .collect();
    replies::Ports { ports, pending: s.pending.clone() }
}

fn routes(dp: &Dataplane) -> replies::Routes {
    let tables = dp.tables();
    let routes = tables
        .routes
        .entries()
        .into_iter()
        .map(|(prefix, len, hop)| replies::Route {
            prefix: format!("{}/{}", std::net::Ipv4Addr::from(prefix), len),
            port_id: hop.port,
            port: tables.port(hop.port).map(|p| p.name.clone()),
            dst_mac: mac_string(hop.dst_mac),
            tunnel: tables.overlay.tunnel(hop.tunnel).map(|t| replies::RouteTunnel {
                remote: t.dst_ip.to_string(),
                next_hop_mac: mac_string(t.dst_mac.0),
                vni: t.vni,
                udp_port: t.dst_port,
            }),
        })
        .collect();
    replies::Routes { tables_version: tables.version, gateway: tables.gateway_ip.to_string(), routes }
}

fn conntrack(ct: &ConnTable, tables: &Tables, limit: usize) -> replies::Conntrack {
    let now = ct.now_ms();
    let mut connections = Vec::new();
    let mut total = 0usize;
    ct.for_each_live(0..ct.capacity(), |_, e, snap| {
        total += 1;
        if connections.len() >= limit {
            return;
        }
        let Some(state) = e.state() else { return };
        let fl = e.flags();
        let mut service = (snap.frontend > 0)
            .then(|| tables.services.frontends.get(snap.frontend as usize - 1).map(|f| f.name.clone()))
            .flatten();
        // An affinity record is keyed by client and Service port (its affinity id, protocol,
        // port), not by addresses, and keeps its backend's address and port: show the client,
        // the backend and the Service port's name.
        let (original, reply) = if state == CtState::Affinity {
            let k = snap.orig;
            service = tables
                .services
                .frontends
                .iter()
                .find(|f| f.affinity_id == k.dst && f.service_port == k.dport && u16::from(f.key.proto) == k.sport)
                .map(|f| f.name.clone());
            let who = format!("{} (client affinity)", std::net::Ipv4Addr::from(k.src));
            (who, format!("{}:{} (backend)", std::net::Ipv4Addr::from(snap.endpoint), e.policy_rule()))
        } else if state == CtState::Fragments {
            // A fragmented datagram: addresses as sent and as forwarded, IP id and protocol.
            let (o, r) = (snap.orig, snap.reply);
            let ip = std::net::Ipv4Addr::from;
            let text = |src: u32, dst: u32| format!("{} -> {} id {} proto {}", ip(src), ip(dst), o.sport, o.dport);
            (text(o.src, o.dst), text(r.src, r.dst))
        } else {
            (snap.orig.to_string(), snap.reply.to_string())
        };
        connections.push(replies::Connection {
            original,
            reply,
            state: state.name().to_string(),
            age_s: now.wrapping_sub(snap.created) / 1000,
            idle_s: now.wrapping_sub(e.last_seen()) / 1000,
            dnat: fl & flags::DNAT != 0,
            snat: fl & flags::SNAT != 0,
            seen_reply: fl & flags::SEEN_REPLY != 0,
            from_uplink: fl & flags::FROM_UPLINK != 0,
            service,
            endpoint_id: (snap.endpoint != u32::MAX).then_some(snap.endpoint),
        });
    });
    let c = &ct.counters;
    replies::Conntrack {
        entries: total,
        capacity: ct.capacity(),
        bytes_per_entry: ct.bytes_per_entry(),
        inserted: c.inserted.load(Relaxed),
        insert_failed_full: c.insert_failed_full.load(Relaxed),
        insert_failed_no_slot: c.insert_failed_slot.load(Relaxed),
        removed: c.removed.load(Relaxed),
        shown: connections.len(),
        connections,
    }
}

/// The tables in force and the connections allowed per policy, by name.
fn policy_counts(dp: &Dataplane) -> (Arc<Tables>, Vec<replies::PolicyCount>) {
    let tables = dp.tables();
    let mut policies: Vec<replies::PolicyCount> = tables
        .policy
        .policy_names
        .iter()
        .map(|(id, name)| replies::PolicyCount { policy: name.clone(), id: *id, allowed_connections: dp.policy_allowed(*id) })
        .collect();
    policies.sort_by(|a, b| a.policy.cmp(&b.policy));
    (tables, policies)
}

fn flows(shared: &Shared, s: &Snapshot, tables: &Tables, policies: Vec<replies::PolicyCount>, since: u64, limit: usize) -> replies::Flows {
    let names = |id: u32| tables.policy.policy_names.get(&id).cloned();
    let (next, lost, recs) = {
        let history = shared.flows();
        (history.next_seq(), history.lost, history.since(since, limit))
    };
    let flows = recs.iter().map(|(seq, r)| super::flows::render(*seq, r, &s.pod_names, &names)).collect();
    replies::Flows { next, lost, policy_epoch: tables.policy.epoch, policies, flows }
}

fn stats(dp: &Dataplane) -> replies::Stats {
    replies::Stats {
        drops: dp
            .drops()
            .into_iter()
            .map(|(r, n)| replies::DropCount { number: r as u8, reason: r.name().to_string(), count: n, description: r.description().to_string() })
            .collect(),
        workers: dp
            .worker_stats()
            .into_iter()
            .map(|(worker, core, rounds, idle_sleeps, free_frames)| replies::WorkerStats { worker, core, rounds, idle_sleeps, free_frames })
            .collect(),
        ports: dp
            .reports()
            .into_iter()
            .map(|r| replies::PortCounts {
                name: r.name,
                rx_packets: r.totals.rx_packets,
                tx_packets: r.totals.tx_packets,
                rx_dropped: r.totals.rx_dropped,
                tx_dropped: r.totals.tx_dropped,
            })
            .collect(),
    }
}

fn neighbours(shared: &Shared, s: &Snapshot) -> replies::Neighbours {
    let snap = shared.neighbours.as_ref().map(crate::neighbours::NeighbourReader::snapshot);
    let now = std::time::Instant::now();
    let neighbours = snap
        .iter()
        .flat_map(|n| n.entries.iter())
        .map(|(ip, n)| replies::NeighbourRow {
            ip: ip.to_string(),
            mac: n.mac.map(mac_string),
            state: n.state.name().to_string(),
            resolved: n.resolved,
            age_s: n.updated.map(|t| now.saturating_duration_since(t).as_secs()),
            needed_by: n.needed_by.iter().cloned().collect(),
            created_by_switch: n.created_by_switch,
        })
        .collect();
    replies::Neighbours {
        interface: s.uplink.as_ref().map(|u| u.ifname.clone()),
        gateway: snap.as_ref().and_then(|n| n.gateway).map(|g| g.to_string()),
        gateway_mac: s.uplink.as_ref().and_then(|u| u.gateway_mac).map(mac_string),
        gateway_mac_from: if s.gateway_given { "--uplink-gateway-mac" } else { "neighbour table" }.to_string(),
        expiry_s: snap.as_ref().map_or(0, |n| n.expiry.as_secs()),
        neighbours,
    }
}
