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
