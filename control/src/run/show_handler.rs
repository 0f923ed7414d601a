//! Answers to `podswitch show ...`, built from the running switch's state.
//!
//! Contract: every answer is a JSON object with `"ok": true`; the field names are stable
//! (documented in the README under "podswitch show"). Numbers are totals since start.
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use switch::afxdp::iface;

use super::Switch;
use crate::ctl::Request;
use crate::naming::mac_string;

pub(crate) fn handler(sw: Arc<Mutex<Switch>>) -> crate::ctl::server::Handler {
    Arc::new(move |req: &Request| {
        let s = match sw.lock() {
            Ok(s) => s,
            Err(_) => return json!({"ok": false, "error": "switch state is poisoned (a control thread panicked)"}),
        };
        match req {
            Request::Status => status(&s),
            Request::Ports => ports(&s),
            Request::Routes => routes(&s),
            Request::Stats => stats(&s),
            Request::Services => services(&s),
            Request::Conntrack { limit } => conntrack(&s, limit.unwrap_or(1000)),
            Request::Policies => {
                let views = s.policy.as_ref().map(|c| serde_json::to_value(&c.views).unwrap_or(Value::Null)).unwrap_or(json!([]));
                let epoch = s.dp.tables().policy.epoch;
                json!({"ok": true, "epoch": epoch, "policies": views})
            }
            Request::Flows { since, limit } => flows(&s, since.unwrap_or(0), limit.unwrap_or(1000)),
        }
    })
}

fn status(s: &Switch) -> Value {
    json!({
        "ok": true,
        "node": s.node.name,
        "pod_cidr": s.node.pod_cidr.to_string(),
        "internal_ip": s.node.internal_ip.to_string(),
        "manifests_dir": s.dir.display().to_string(),
        "applied_digest": s.applied_digest,
        "tables_version": s.version,
        "ports_wanted": s.desired.len(),
        "ports_attached": s.attached.len(),
        "pending_ports": s.pending.iter().map(|(k, e)| format!("{k}: {e}")).collect::<Vec<_>>(),
        "problems": s.problems,
        "ignored_objects": s.ignored_kinds,
        "last_error": s.last_error,
        "uptime_s": s.started.elapsed().as_secs(),
        "workers": s.dp.worker_count(),
        "kubernetes_api": s.kube.as_ref().map(|k| k.status()),
    })
}

fn ports(s: &Switch) -> Value {
    let tables = s.dp.tables();
    let mut out = Vec::new();
    for r in s.dp.reports() {
        let cfg = tables.port(r.id);
        let mut v = serde_json::to_value(&r).unwrap_or(Value::Null);
        if let Value::Object(o) = &mut v {
            o.insert("owner".into(), json!(cfg.map(|c| c.name.clone())));
            o.insert("kind".into(), json!(cfg.map(|c| c.kind)));
            o.insert("mac".into(), json!(cfg.map(|c| mac_string(c.mac))));
            o.insert("pod_ip".into(), json!(cfg.and_then(|c| c.source_guard).map(|g| g.ip.to_string())));
            o.insert("interface_present".into(), json!(iface::exists(&r.name)));
        }
        out.push(v);
    }
    json!({"ok": true, "ports": out, "pending": s.pending})
}

fn routes(s: &Switch) -> Value {
    let tables = s.dp.tables();
    let routes: Vec<Value> = tables
        .routes
        .entries()
        .into_iter()
        .map(|(prefix, len, hop)| {
            let port = tables.port(hop.port);
            json!({
                "prefix": format!("{}/{}", std::net::Ipv4Addr::from(prefix), len),
                "port_id": hop.port,
                "port": port.map(|p| p.name.clone()),
                "dst_mac": mac_string(hop.dst_mac),
            })
        })
        .collect();
    json!({"ok": true, "tables_version": tables.version, "gateway": tables.gateway_ip.to_string(), "routes": routes})
}

fn services(s: &Switch) -> Value {
    let views = s.services.as_ref().map(|c| serde_json::to_value(&c.views).unwrap_or(Value::Null)).unwrap_or(json!([]));
    json!({"ok": true, "services": views})
}

fn conntrack(s: &Switch, limit: usize) -> Value {
    let ct = s.dp.conntrack();
    let now = ct.now_ms();
    let tables = s.dp.tables();
    let mut out = Vec::new();
    let mut total = 0usize;
    ct.for_each_live(0..ct.capacity(), |_, e, snap| {
        total += 1;
        if out.len() >= limit {
            return;
        }
        let Some(state) = e.state() else { return };
        let fl = e.flags();
        let frontend = (snap.frontend > 0)
            .then(|| tables.services.frontends.get(snap.frontend as usize - 1).map(|f| f.name.clone()))
            .flatten();
        out.push(json!({
            "original": snap.orig.to_string(),
            "reply": snap.reply.to_string(),
            "state": state.name(),
            "age_s": now.wrapping_sub(snap.created) / 1000,
            "idle_s": now.wrapping_sub(e.last_seen()) / 1000,
            "dnat": fl & switch::conntrack::flags::DNAT != 0,
            "snat": fl & switch::conntrack::flags::SNAT != 0,
            "seen_reply": fl & switch::conntrack::flags::SEEN_REPLY != 0,
            "from_uplink": fl & switch::conntrack::flags::FROM_UPLINK != 0,
            "service": frontend,
            "endpoint_id": (snap.endpoint != u32::MAX).then_some(snap.endpoint),
        }));
    });
    let c = &ct.counters;
    use std::sync::atomic::Ordering::Relaxed;
    json!({
        "ok": true,
        "entries": total,
        "capacity": ct.capacity(),
        "bytes_per_entry": ct.bytes_per_entry(),
        "inserted": c.inserted.load(Relaxed),
        "insert_failed_full": c.insert_failed_full.load(Relaxed),
        "insert_failed_no_slot": c.insert_failed_slot.load(Relaxed),
        "removed": c.removed.load(Relaxed),
        "shown": out.len(),
        "connections": out,
    })
}

fn flows(s: &Switch, since: u64, limit: usize) -> Value {
    let tables = s.dp.tables();
    let names = |id: u32| tables.policy.policy_names.get(&id).cloned();
    let recs: Vec<Value> = s.flows.since(since, limit).iter().map(|(seq, r)| super::flows::render(*seq, r, s.pods.names(), &names)).collect();
    let mut counts: Vec<Value> = tables
        .policy
        .policy_names
        .iter()
        .map(|(id, name)| json!({"policy": name, "id": id, "allowed_connections": s.dp.policy_allowed(*id)}))
        .collect();
    counts.sort_by(|a, b| a["policy"].as_str().cmp(&b["policy"].as_str()));
    json!({
        "ok": true,
        "next": s.flows.next_seq(),
        "lost": s.flows.lost,
        "policy_epoch": tables.policy.epoch,
        "policies": counts,
        "flows": recs,
    })
}

fn stats(s: &Switch) -> Value {
    let drops: Vec<Value> = s
        .dp
        .drops()
        .into_iter()
        .map(|(r, n)| json!({"number": r as u8, "reason": r.name(), "count": n, "description": r.description()}))
        .collect();
    let workers: Vec<Value> = s
        .dp
        .worker_stats()
        .into_iter()
        .map(|(i, core, rounds, sleeps, free)| json!({"worker": i, "core": core, "rounds": rounds, "idle_sleeps": sleeps, "free_frames": free}))
        .collect();
    let ports: Vec<Value> = s
        .dp
        .reports()
        .into_iter()
        .map(|r| json!({"name": r.name, "rx_packets": r.totals.rx_packets, "tx_packets": r.totals.tx_packets, "rx_dropped": r.totals.rx_dropped, "tx_dropped": r.totals.tx_dropped}))
        .collect();
    json!({"ok": true, "drops": drops, "workers": workers, "ports": ports})
}
