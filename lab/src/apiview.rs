//! The API view: what the lab, playing kubelet and API server, shows the switch.
//!
//! Contract:
//! - The view is the directory `/run/podswitch/lab/api/` holding one file, `cluster.yaml`: every
//!   object of the manifest directory (all kinds, `List`s flattened into their items, otherwise
//!   unchanged) as YAML documents, except that each Pod the lab builds has `spec.nodeName` (its
//!   lab node), `status.podIP` and `status.podIPs` set as the lab assigned them. Every node's
//!   switch reads the same view.
//! - Objects are held as `serde_json::Value` (maps keep their key order), read and written with
//!   `serde-saphyr`; manifests are JSON-compatible YAML (string keys), as the API server's are.
//! - It is written atomically (`.cluster.yaml.tmp`, ignored by `manifests::manifest_files`, then
//!   a rename), and only when its content changes.
//! - [`service_cluster_ip`], [`service_node_port`] and [`service_lb_ip`] read what the view's
//!   Services say (used by `lab probe`, which asks the switch for what the view leaves to it).
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::Value;

type Mapping = serde_json::Map<String, Value>;

use super::plan::Plan;
use super::state::{api_dir, write_atomic};
use podswitch_control::manifests;

pub const VIEW_FILE: &str = "cluster.yaml";

pub fn view_path() -> PathBuf {
    api_dir().join(VIEW_FILE)
}

/// Every object of the manifest files of `dir`, in file and document order, `List`s flattened.
pub fn read_objects(dir: &Path) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    for file in manifests::manifest_files(dir)? {
        let text = fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
        let docs: Vec<Value> = serde_saphyr::from_multiple_with_options(&text, read_options())
            .with_context(|| format!("{}: invalid YAML", file.display()))?;
        for v in docs {
            flatten(v, &mut out);
        }
    }
    Ok(out)
}

/// YAML read as the switch reads it (YAML 1.2 scalars, as serde_yaml did): `y`, `yes`, `on` stay
/// strings (a Namespace named `y` is not `true`), so do `0755` and `1_000`.
fn read_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        strict_booleans: true,
        leading_zero_numbers_as_strings: true,
        underscored_numbers_as_strings: true,
    }
}

fn flatten(v: Value, out: &mut Vec<Value>) {
    if v.is_null() {
        return;
    }
    let kind = v.get("kind").and_then(Value::as_str).unwrap_or("");
    if kind == "List" || kind.ends_with("List") {
        for item in v.get("items").and_then(Value::as_array).cloned().unwrap_or_default() {
            flatten(item, out);
        }
    } else {
        out.push(v);
    }
}

/// `namespace/name` of a Pod object (v1), if it is one.
fn pod_key(v: &Value) -> Option<String> {
    if v.get("kind").and_then(Value::as_str) != Some("Pod") || v.get("apiVersion").and_then(Value::as_str) != Some("v1")
    {
        return None;
    }
    let meta = v.get("metadata")?;
    let name = meta.get("name")?.as_str()?;
    let ns = meta.get("namespace").and_then(Value::as_str).unwrap_or("default");
    Some(format!("{ns}/{name}"))
}

/// The sub-mapping `key` of mapping `v`, created if missing (or not a mapping).
fn submap<'a>(v: &'a mut Value, key: &str) -> &'a mut Mapping {
    let m = v.as_object_mut().expect("objects are mappings");
    if !m.get(key).is_some_and(Value::is_object) {
        m.insert(key.to_string(), Value::Object(Mapping::new()));
    }
    m.get_mut(key).and_then(Value::as_object_mut).expect("just inserted")
}

/// The text of `cluster.yaml` for `plan`.
pub fn render(plan: &Plan, source: &Path) -> String {
    // No digest here: the view changes only when objects do, so the switch re-applies only then.
    let mut text = format!(
        "# The API view of podswitch lab: the objects of {}, with the IP and node the lab\n\
         # assigned to each local Pod. Rewritten when they change.\n",
        source.display()
    );
    for obj in &plan.objects {
        let mut obj = obj.clone();
        if let Some(p) = pod_key(&obj).and_then(|k| plan.pods.get(&k)) {
            if obj.is_object() {
                submap(&mut obj, "spec").insert("nodeName".into(), p.node.clone().into());
                let status = submap(&mut obj, "status");
                status.insert("podIP".into(), p.ip.to_string().into());
                let mut ip = Mapping::new();
                ip.insert("ip".into(), p.ip.to_string().into());
                status.insert("podIPs".into(), Value::Array(vec![Value::Object(ip)]));
            }
        }
        text.push_str("---\n");
        text.push_str(&serde_saphyr::to_string(&obj).expect("JSON values serialize as YAML"));
    }
    text
}

/// Writes the view if its content differs; returns whether it changed.
pub fn write(text: &str) -> anyhow::Result<bool> {
    let path = view_path();
    if fs::read_to_string(&path).is_ok_and(|old| old == text) {
        return Ok(false);
    }
    fs::create_dir_all(api_dir()).with_context(|| format!("cannot create {}", api_dir().display()))?;
    write_atomic(&path, text.as_bytes())?;
    Ok(true)
}

/// Service `namespace/name` of the API view, if it has one.
pub fn service(namespace: &str, name: &str) -> Option<Value> {
    read_objects(&api_dir()).unwrap_or_default().into_iter().find(|o| {
        o.get("kind").and_then(Value::as_str) == Some("Service")
            && o.get("metadata").and_then(|m| m.get("name")).and_then(Value::as_str) == Some(name)
            && o.get("metadata").and_then(|m| m.get("namespace")).and_then(Value::as_str).unwrap_or("default")
                == namespace
    })
}

/// The `spec.clusterIP` of Service `namespace/name` in the API view (None: no such Service, or
/// no IPv4 clusterIP written in it: then only the switch knows the one it allocated).
pub fn service_cluster_ip(namespace: &str, name: &str) -> Option<Ipv4Addr> {
    service(namespace, name)?.get("spec")?.get("clusterIP")?.as_str()?.parse().ok()
}

/// The `nodePort` written in the API view for port `port`/`protocol` (`"TCP"`, `"UDP"`) of
/// Service `namespace/name` (a hand-set one; allocated ones only the switch knows).
pub fn service_node_port(namespace: &str, name: &str, port: u16, protocol: &str) -> Option<u16> {
    let svc = service(namespace, name)?;
    svc.get("spec")?.get("ports")?.as_array()?.iter().find_map(|p| {
        let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
        (p.get("port")?.as_u64()? == u64::from(port) && proto.eq_ignore_ascii_case(protocol))
            .then(|| p.get("nodePort")?.as_u64()?.try_into().ok())
            .flatten()
    })
}

/// The first `status.loadBalancer.ingress[].ip` (IPv4) of Service `namespace/name` in the view.
pub fn service_lb_ip(namespace: &str, name: &str) -> Option<Ipv4Addr> {
    let svc = service(namespace, name)?;
    svc.get("status")?
        .get("loadBalancer")?
        .get("ingress")?
        .as_array()?
        .iter()
        .find_map(|i| i.get("ip")?.as_str()?.parse().ok())
}

/// The podIP the view gives Pod `namespace/name` (for pods of other nodes).
pub fn pod_ip(namespace: &str, name: &str) -> Option<Ipv4Addr> {
    let key = format!("{namespace}/{name}");
    read_objects(&api_dir())
        .ok()?
        .iter()
        .find(|o| pod_key(o).as_deref() == Some(key.as_str()))?
        .get("status")?
        .get("podIP")?
        .as_str()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use podswitch_control::model;
    use std::collections::BTreeMap;

    #[test]
    fn view_round_trips_and_fills_pod_ips() {
        let dir = std::env::temp_dir().join(format!("psl-apiview-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            dir.join("a.yaml"),
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: x, labels: {ns: x}}\n---\n\
             apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Pod\n  metadata: {name: a, namespace: x}\n  \
             spec: {containers: [{name: c, image: i, ports: [{containerPort: 80}]}]}\n---\n\
             apiVersion: v1\nkind: Pod\nmetadata: {name: r, namespace: x}\nspec: {nodeName: other, containers: []}\n---\n\
             apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: x}\nspec: {clusterIP: 10.96.0.10, ports: [{port: 80}]}\n---\n\
             apiVersion: v1\nkind: Namespace\nmetadata: {name: y, labels: {ns: y, on: yes, mode: 0755}}\n",
        )
        .unwrap();
        let plan = super::super::plan::plan(&dir, None, &BTreeMap::new(), &BTreeMap::new()).unwrap();
        let text = render(&plan, &dir);
        let out = dir.join("out");
        fs::create_dir_all(&out).unwrap();
        fs::write(out.join("cluster.yaml"), &text).unwrap();
        let m = manifests::load_dir(&out).unwrap();
        assert_eq!(m.pods.len(), 2);
        assert_eq!(m.namespaces.len(), 2, "YAML 1.1 words stay strings: {text}");
        // Written quoted: read back as the same strings by any YAML reader.
        assert!(text.contains("name: \"y\"\n") && text.contains("\"on\": \"yes\"\n") && text.contains("mode: \"0755\"\n"), "{text}");
        assert_eq!(m.services.len(), 1, "the Service is kept");
        let a = model::pod_info(&m.pods["x/a"]).unwrap();
        assert_eq!(a.ip, Some("10.244.0.2".parse().unwrap()));
        assert_eq!(a.node_name.as_deref(), Some("node-1"));
        let r = model::pod_info(&m.pods["x/r"]).unwrap();
        assert_eq!((r.ip, r.node_name.as_deref()), (None, Some("other")));
        assert!(text.contains("podIPs:\n  - ip: \"10.244.0.2\""), "{text}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
