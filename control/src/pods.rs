//! The pods step of a sync: every Pod object of a view read into a [`PodInfo`], kept across
//! views so that a view re-reads only the pods that changed.
//!
//! Contract:
//! - After [`PodCache::update`] with a view, [`PodCache::all`] is exactly what
//!   [`crate::services::all_pods`] gives for that view (the readable pods in key order),
//!   [`PodCache::problems`] its sentences, [`PodCache::local_pods`] what
//!   [`crate::model::local_pods`] gives, and [`PodCache::names`] maps every pod address to the
//!   last pod (in key order) that has it.
//! - What a view costs: with [`Changes`](crate::manifests::Changes) leading from the view the
//!   cache saw last, only the listed pods are read; otherwise every pod is compared, by
//!   `metadata.resourceVersion` when the cache trusts them ([`PodCache::with_resource_versions`],
//!   objects from the API) and else by reading it (without copying its spec).
//! - [`PodCache::generation`] changes exactly when a pod's [`PodInfo`] or `status.phase` (what
//!   the Service and NetworkPolicy compilers read of pods) or a read error changed, or a pod
//!   came or went; later steps skip their pod work while it stays.
//! - The CNI plugin's attachments on this node ([`PodCache::set_attachments`], from
//!   [`crate::cni_records`]) complete the view: a pod of this node (or of no node) that has an
//!   attachment has the attachment's address, whatever its `status.podIP` says (the
//!   attachment is what its interface has; a disagreement is listed in
//!   [`PodCache::problems`]); an attachment without a Pod object is a pod of its own, with no
//!   labels, on this node, until the object comes. [`with_attachments`] says the same of a
//!   whole list, and the cache always equals it.
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use crate::manifests::kinds::Pod;

use crate::manifests::Manifests;
use crate::model::{self, NodeInfo, PodInfo};

/// Kept per pod (150,000 of them in a large cluster): boxed strings and a boxed error (which
/// almost no pod has) keep an entry at 48 bytes instead of 112.
#[derive(Debug, Clone)]
struct Entry {
    /// `metadata.resourceVersion` when trusted and set.
    rv: Option<Box<str>>,
    phase: Option<Box<str>>,
    /// The pod cannot be read (it is not in `all`).
    error: Option<Box<model::PodError>>,
    /// The address its object gives (before an attachment's).
    status_ip: Option<Ipv4Addr>,
}

/// See the module contract.
#[derive(Debug, Clone, Default)]
pub struct PodCache {
    resource_versions: bool,
    /// Digest of the last view.
    seen: String,
    entries: BTreeMap<String, Entry>,
    /// The readable pods, in key order.
    all: Vec<PodInfo>,
    /// Pods by address (host order), each list sorted (almost always one key: a list, not a
    /// set, keeps that to one small allocation). The last key of each is the address's name
    /// ([`Self::names`]).
    ip_keys: BTreeMap<u32, Vec<String>>,
    generation: u64,
    /// The node the attachments are on, and the CNI plugin's attachments by pod key.
    node: String,
    attachments: BTreeMap<String, Ipv4Addr>,
    /// The pods in `all` that an attachment alone makes (no Pod object).
    attachment_only: BTreeSet<String>,
}

/// `pods` (every readable pod, in key order) completed by the CNI plugin's `attachments` on
/// node `node` (see the module contract); `objects` holds the keys of every Pod object,
/// readable or not (an unreadable one is a problem, not a pod its attachment makes).
pub fn with_attachments(
    mut pods: Vec<PodInfo>,
    objects: &BTreeSet<String>,
    node: &str,
    attachments: &BTreeMap<String, Ipv4Addr>,
) -> Vec<PodInfo> {
    for p in &mut pods {
        if let Some(ip) = attachments.get(&p.key()).filter(|_| is_on(p, node)) {
            p.ip = Some(*ip);
        }
    }
    for (key, ip) in attachments {
        if !objects.contains(key) {
            pods.push(attachment_pod(key, *ip, node));
        }
    }
    pods.sort_by_key(PodInfo::key);
    pods
}

/// Whether an attachment on `node` is the interface of `p`.
fn is_on(p: &PodInfo, node: &str) -> bool {
    !p.host_network && p.node_name.as_deref().is_none_or(|n| n == node)
}

/// The pod an attachment alone makes.
fn attachment_pod(key: &str, ip: Ipv4Addr, node: &str) -> PodInfo {
    let (namespace, name) = key.split_once('/').unwrap_or(("", key));
    PodInfo {
        namespace: namespace.into(),
        name: name.into(),
        ip: Some(ip),
        labels: Default::default(),
        ports: Vec::new(),
        node_name: Some(node.into()),
        host_network: false,
        completed: false,
    }
}

/// `namespace/name` of `p` against `key` (as `str` orders them), without building the string.
fn cmp_key(p: &PodInfo, key: &str) -> Ordering {
    let (ns, k) = (p.namespace.as_bytes(), key.as_bytes());
    if k.len() < ns.len() {
        return ns[..k.len()].cmp(k).then(Ordering::Greater);
    }
    match ns.cmp(&k[..ns.len()]) {
        Ordering::Equal => {}
        o => return o,
    }
    match k[ns.len()..].split_first() {
        None => Ordering::Greater,
        Some((&c, rest)) => b'/'.cmp(&c).then_with(|| p.name.as_bytes().cmp(rest)),
    }
}

fn phase_of(pod: &Pod) -> Option<Box<str>> {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()).map(Box::from)
}

impl PodCache {
    /// Whether a pod with a `metadata.resourceVersion` is known unchanged by it (see
    /// [`crate::services::ServiceState::with_resource_versions`]).
    pub fn with_resource_versions(mut self, on: bool) -> Self {
        self.resource_versions = on;
        self
    }

    /// Takes in view `m`; true when [`Self::generation`] changed.
    pub fn update(&mut self, m: &Manifests) -> bool {
        let before = self.generation;
        let changes = m.changes_since(&self.seen).map(|c| &c.keys.pods);
        match changes {
            Some(keys) => {
                for k in keys {
                    self.refresh(k, m.pods.get(k).map(|p| &**p));
                }
            }
            None => {
                let gone: Vec<String> = self.entries.keys().filter(|k| !m.pods.contains_key(*k)).cloned().collect();
                for k in gone {
                    self.refresh(&k, None);
                }
                // A first view adds every pod: room for them at once, not by doublings.
                self.all.reserve(m.pods.len().saturating_sub(self.all.len()));
                for (k, pod) in &m.pods {
                    self.refresh(k, Some(pod));
                }
            }
        }
        self.seen = m.digest.clone();
        self.generation != before
    }

    /// Every readable pod, in key order.
    pub fn all(&self) -> &[PodInfo] {
        &self.all
    }

    /// Changes whenever what the compilers read of pods changes (see the module contract).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The sentences of the pods that cannot be read, in key order.
    pub fn problems(&self) -> Vec<String> {
        let mut out: Vec<String> = self.entries.values().filter_map(|e| e.error.as_ref().map(ToString::to_string)).collect();
        for (key, ip) in &self.attachments {
            let Some(e) = self.entries.get(key) else { continue };
            if let Some(status) = e.status_ip.filter(|s| s != ip) {
                if self.position(key).is_ok_and(|i| self.all[i].ip == Some(*ip)) {
                    out.push(format!("pod {key}: status.podIP says {status}, but the CNI plugin gave its interface {ip}; the switch uses {ip}"));
                }
            }
        }
        out
    }

    /// Takes in the CNI plugin's attachments on node `node` (pod key → address); true when
    /// [`Self::generation`] changed.
    pub fn set_attachments(&mut self, node: &str, attachments: BTreeMap<String, Ipv4Addr>) -> bool {
        let before = self.generation;
        let mut changed: BTreeSet<String> = BTreeSet::new();
        if node != self.node {
            node.clone_into(&mut self.node);
            changed.extend(self.attachments.keys().cloned());
        }
        for (k, ip) in &attachments {
            if self.attachments.get(k) != Some(ip) {
                changed.insert(k.clone());
            }
        }
        changed.extend(self.attachments.keys().filter(|k| !attachments.contains_key(*k)).cloned());
        self.attachments = attachments;
        for key in changed {
            let status_ip = match self.entries.get(&key) {
                Some(e) if e.error.is_some() => continue,
                Some(e) => e.status_ip,
                None => {
                    if self.attachment_only.remove(&key) {
                        self.remove_info(&key);
                        self.generation += 1;
                    }
                    if let Some(ip) = self.attachments.get(&key) {
                        let p = attachment_pod(&key, *ip, &self.node);
                        self.insert_info(&key, p);
                        self.attachment_only.insert(key);
                        self.generation += 1;
                    }
                    continue;
                }
            };
            let Ok(i) = self.position(&key) else { continue };
            let p = &self.all[i];
            let ip = if is_on(p, &self.node) { self.attachments.get(&key).copied().or(status_ip) } else { status_ip };
            if ip != p.ip {
                let mut p = p.clone();
                p.ip = ip;
                self.remove_info(&key);
                self.insert_info(&key, p);
                self.generation += 1;
            }
        }
        self.generation != before
    }

    /// Pod address (host order) -> `namespace/name` (the last pod in key order that has it),
    /// made when asked (the caller keeps it until pods change; the cache does not keep a copy).
    pub fn names(&self) -> BTreeMap<u32, String> {
        self.ip_keys.iter().filter_map(|(ip, keys)| Some((*ip, keys.last()?.clone()))).collect()
    }

    /// The pods that run on `node` with their own network namespace, as
    /// [`model::local_pods`] gives them: an error if any pod of the view cannot be read.
    pub fn local_pods(&self, node: &NodeInfo) -> Result<Vec<PodInfo>, model::PodError> {
        if let Some(e) = self.entries.values().find_map(|e| e.error.as_deref().cloned()) {
            return Err(e);
        }
        Ok(self
            .all
            .iter()
            .filter(|p| p.is_local_to(node))
            .cloned()
            .collect())
    }

    fn position(&self, key: &str) -> Result<usize, usize> {
        // A walk in key order (a first view) appends: look at the end first.
        match self.all.last().map(|p| cmp_key(p, key)) {
            None | Some(Ordering::Less) => Err(self.all.len()),
            Some(_) => self.all.binary_search_by(|p| cmp_key(p, key)),
        }
    }

    fn refresh(&mut self, key: &str, pod: Option<&Pod>) {
        let Some(pod) = pod else {
            if let Some(e) = self.entries.remove(key) {
                if e.error.is_none() {
                    self.remove_info(key);
                }
                self.generation += 1;
                if let Some(ip) = self.attachments.get(key) {
                    let p = attachment_pod(key, *ip, &self.node);
                    self.insert_info(key, p);
                    self.attachment_only.insert(key.to_string());
                }
            }
            return;
        };
        if self.attachment_only.remove(key) {
            // The object came: it replaces the pod its attachment made.
            self.remove_info(key);
            self.generation += 1;
        }
        let old = self.entries.get(key);
        let rv = if self.resource_versions { pod.metadata.resource_version.as_deref() } else { None };
        if rv.is_some() && old.is_some_and(|e| e.rv.as_deref() == rv) {
            return;
        }
        let rv = rv.map(Box::from);
        let phase = phase_of(pod);
        let mut read = model::pod_info(pod);
        let status_ip = read.as_ref().ok().and_then(|p| p.ip);
        if let Ok(p) = &mut read {
            if let Some(ip) = self.attachments.get(key).filter(|_| is_on(p, &self.node)) {
                p.ip = Some(*ip);
            }
        }
        if let Some(e) = old {
            let same = e.phase == phase
                && match (&read, &e.error) {
                    (Err(a), Some(b)) => a == &**b,
                    (Ok(p), None) => self.position(key).is_ok_and(|i| self.all[i] == *p),
                    _ => false,
                };
            if same {
                let e = self.entries.get_mut(key).expect("present");
                e.rv = rv;
                e.status_ip = status_ip;
                return;
            }
            if e.error.is_none() {
                self.remove_info(key);
            }
        }
        let error = match read {
            Ok(p) => {
                self.insert_info(key, p);
                None
            }
            Err(e) => Some(Box::new(e)),
        };
        self.entries.insert(key.to_string(), Entry { rv, phase, error, status_ip });
        self.generation += 1;
    }

    /// Adds `p`, whose key is `key`.
    fn insert_info(&mut self, key: &str, p: PodInfo) {
        if let Some(ip) = p.ip {
            let keys = self.ip_keys.entry(u32::from(ip)).or_default();
            if let Err(i) = keys.binary_search_by(|k| k.as_str().cmp(key)) {
                keys.insert(i, key.to_string());
            }
        }
        match self.position(key) {
            Ok(i) => self.all[i] = p,
            Err(i) => self.all.insert(i, p),
        }
    }

    fn remove_info(&mut self, key: &str) {
        let Ok(i) = self.position(key) else { return };
        let p = self.all.remove(i);
        if let Some(ip) = p.ip {
            let ip = u32::from(ip);
            if let Some(set) = self.ip_keys.get_mut(&ip) {
                if let Ok(i) = set.binary_search_by(|k| k.as_str().cmp(key)) {
                    set.remove(i);
                }
                if set.is_empty() {
                    self.ip_keys.remove(&ip);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::manifests::{add_documents, Changes};

    /// Pod `i` of namespace `ns` with knobs `k`; `rv` its resourceVersion (None: none).
    fn pod_yaml(ns: &str, i: u64, k: [u64; 6], rv: Option<u64>) -> String {
        let rv = rv.map(|v| format!("resourceVersion: \"{v}\", ")).unwrap_or_default();
        let labels = ["{}", "{app: a}", "{app: b, tier: x}"][k[0] as usize];
        // Shared addresses now and then, a bad one, none.
        let ip = match k[1] {
            0 => "".to_string(),
            1 => "podIP: 10.244.0.99, ".to_string(),
            2 => "podIP: not-an-ip, ".to_string(),
            _ => format!("podIP: 10.244.{}.{}, ", ns.len(), i + 2),
        };
        let phase = ["", "phase: Running, ", "phase: Succeeded, "][k[2] as usize];
        let node = ["", "nodeName: node-1, ", "nodeName: node-2, "][k[3] as usize];
        let host = ["", "hostNetwork: true, "][k[4] as usize];
        let port = [8080, 9090, 0][k[5] as usize];
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{{rv}name: p{i}, namespace: {ns}, labels: {labels}}}\n\
             spec: {{{node}{host}containers: [{{name: c, image: i, ports: [{{name: http, containerPort: {port}}}]}}]}}\n\
             status: {{{ip}{phase}}}\n---\n"
        )
    }

    type World = BTreeMap<(&'static str, u64), ([u64; 6], u64)>;

    fn view(w: &World, versions: bool, digest: String) -> Manifests {
        let mut text = String::new();
        for ((ns, i), (k, rv)) in w {
            text += &pod_yaml(ns, *i, *k, versions.then_some(*rv));
        }
        let mut m = Manifests::default();
        add_documents(&mut m, Path::new("pods.yaml"), &text).unwrap();
        m.digest = digest;
        m
    }

    fn check(c: &PodCache, m: &Manifests, node: &NodeInfo, attachments: &BTreeMap<String, Ipv4Addr>, what: &str) {
        let (all, problems) = crate::services::all_pods(m);
        let objects: BTreeSet<String> = m.pods.keys().cloned().collect();
        let all = with_attachments(all, &objects, &node.name, attachments);
        assert_eq!(c.all(), &all[..], "{what}: pods");
        let mismatched = c.problems().len() - problems.len();
        assert_eq!(c.problems()[..problems.len()], problems[..], "{what}: problems");
        let expect_mismatched = attachments
            .iter()
            .filter(|(k, ip)| {
                let object = m.pods.get(*k).and_then(|p| model::pod_info(p).ok());
                object.is_some_and(|o| o.ip.is_some_and(|s| s != **ip) && all.iter().any(|p| p.key() == **k && p.ip == Some(**ip)))
            })
            .count();
        assert_eq!(mismatched, expect_mismatched, "{what}: disagreements listed");
        let local = model::local_pods(m, node).map(|_| all.iter().filter(|p| p.is_local_to(node)).cloned().collect::<Vec<_>>());
        assert_eq!(c.local_pods(node), local, "{what}: local pods");
        let names: BTreeMap<u32, String> = all.iter().filter_map(|p| p.ip.map(|ip| (u32::from(ip), p.key()))).collect();
        assert_eq!(c.names(), names, "{what}: names");
    }

    /// Random edits (add, change one knob, remove; pods whose resourceVersion does not move
    /// with an edit of nothing the compilers read): each cache kind against a read of everything.
    #[test]
    fn keys_compare_as_the_strings_do() {
        let names = ["a", "a-b", "a.b", "ab", "b", "a0", "", "z"];
        for ns in names {
            for name in names {
                let p = PodInfo::for_test(ns, name, None);
                for k in ["a/a", "a/", "a", "a-b/x", "ab/", "a/b/c", "", "b/a", "a0/a", "z/z", "a.b/a.b"] {
                    assert_eq!(cmp_key(&p, k), format!("{ns}/{name}").as_str().cmp(k), "{ns}/{name} vs {k}");
                }
            }
        }
    }

    #[test]
    fn incremental_equals_a_read_of_everything_over_random_edits() {
        let node = NodeInfo { name: "node-1".into(), pod_cidr: "10.244.0.0/16".parse().unwrap(), internal_ip: "172.18.0.2".parse().unwrap() };
        let sizes = [3u64, 4, 3, 3, 2, 3];
        for seed in 1..=4u64 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut w: World = BTreeMap::new();
            let mut by_changes = PodCache::default().with_resource_versions(true);
            let mut by_rv = PodCache::default().with_resource_versions(true);
            let mut by_content = PodCache::default();
            let mut prev: Option<Manifests> = None;
            let mut rv = 1;
            let mut generations = 0;
            let mut attachments: BTreeMap<String, Ipv4Addr> = BTreeMap::new();
            for step in 0..300 {
                // The CNI plugin adds and deletes attachments now and then, of pods with or
                // without objects, with addresses that agree with status.podIP or not.
                if rng.u64(..3) == 0 {
                    let key = format!("{}/p{}", ["a", "a-b", "b", "c"][rng.u64(..4) as usize], rng.u64(..8));
                    match rng.u64(..3) {
                        0 => drop(attachments.remove(&key)),
                        _ => drop(attachments.insert(key, Ipv4Addr::new(10, 244, 9, rng.u8(1..4)))),
                    }
                }
                for _ in 0..=rng.u64(..3) {
                    let ns = ["a", "a-b", "b"][rng.u64(..3) as usize];
                    let i = rng.u64(..8);
                    rv += 1;
                    match w.get_mut(&(ns, i)) {
                        Some(_) if rng.u64(..10) == 0 => drop(w.remove(&(ns, i))),
                        Some((k, v)) => {
                            let j = rng.u64(..6) as usize;
                            k[j] = rng.u64(..sizes[j]);
                            *v = rv;
                        }
                        None => {
                            let k = [0, 1, 2, 3, 4, 5].map(|j| rng.u64(..sizes[j]));
                            w.insert((ns, i), (k, rv));
                        }
                    }
                }
                let what = format!("seed {seed} step {step}");
                let mut m = view(&w, true, format!("v{step}"));
                if let Some(p) = &prev {
                    if rng.u64(..10) != 0 {
                        m.changes = Some(Changes::between(p, &m));
                    }
                }
                let g = by_changes.generation();
                let moved = by_changes.update(&m) | by_changes.set_attachments(&node.name, attachments.clone());
                assert_eq!(moved, g != by_changes.generation(), "{what}");
                generations += u64::from(moved);
                check(&by_changes, &m, &node, &attachments, &format!("{what}, by changes"));
                let mut plain = m.clone();
                plain.changes = None;
                // Attachments first here: the order does not matter.
                by_rv.set_attachments(&node.name, attachments.clone());
                by_rv.update(&plain);
                check(&by_rv, &plain, &node, &attachments, &format!("{what}, by resourceVersion"));
                let unversioned = view(&w, false, String::new());
                by_content.update(&unversioned);
                by_content.set_attachments(&node.name, attachments.clone());
                check(&by_content, &unversioned, &node, &attachments, &format!("{what}, by content"));
                // The same view and attachments again change nothing.
                assert!(!by_content.update(&unversioned), "{what}: same view again");
                assert!(!by_content.set_attachments(&node.name, attachments.clone()), "{what}: same attachments again");
                prev = Some(m);
            }
            assert!(generations > 200, "the edits exercise little: {generations} generations");
        }
    }
}
