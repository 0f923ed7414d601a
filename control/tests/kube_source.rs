//! The Kubernetes API source against a fake API server speaking the list/watch protocol on
//! 127.0.0.1 (tests/support_fakeapi). No root, no real cluster.
mod support_fakeapi;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use podswitch_control::kube_source::{self, KubeSource, Options, Retry};
use podswitch_control::manifests::{self, Manifests};
use serde_json::{json, Value};
use support_fakeapi::{FakeApi, Res};

fn opts() -> Options {
    Options {
        debounce: Duration::from_millis(20),
        page_size: Some(500),
        retry: Retry::Exponential { min: Duration::from_millis(50), max: Duration::from_millis(300) },
        watch_timeout_secs: 290,
        resume_settle: Duration::from_millis(250),
    }
}

fn namespace(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels},
           "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}})
}

fn node(name: &str, cidr: &str, ip: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
           "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
           "status": {"addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}]}})
}

fn pod(ns: &str, name: &str, ip: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns, "labels": labels},
           "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "busybox",
                    "ports": [{"name": "http", "containerPort": 80, "protocol": "TCP"}]}]},
           "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}})
}

fn service(ns: &str, name: &str, ip: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
           "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip], "selector": {"app": name},
                    "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]}})
}

fn slice(ns: &str, svc: &str, ips: &[&str]) -> Value {
    let endpoints: Vec<Value> = ips.iter().map(|ip| json!({"addresses": [ip], "conditions": {"ready": true}})).collect();
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
           "metadata": {"name": format!("{svc}-abcde"), "namespace": ns, "labels": {"kubernetes.io/service-name": svc}},
           "addressType": "IPv4", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}], "endpoints": endpoints})
}

fn policy(ns: &str, name: &str) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": name, "namespace": ns},
           "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}})
}

/// Two namespaces, a node, three pods, a Service with its slice, a policy: 9 objects.
fn seed(api: &FakeApi) {
    api.apply(namespace("x", json!({"ns": "x"})));
    api.apply(namespace("y", json!({"ns": "y"})));
    api.apply(node("node-1", "10.244.0.0/24", "172.18.0.2"));
    api.apply(pod("x", "a", "10.244.0.10", json!({"app": "web"})));
    api.apply(pod("x", "b", "10.244.0.11", json!({"app": "web"})));
    api.apply(pod("y", "c", "10.244.0.12", json!({"app": "db"})));
    api.apply(service("x", "web", "10.96.0.10"));
    api.apply(slice("x", "web", &["10.244.0.10", "10.244.0.11"]));
    api.apply(policy("y", "deny"));
}

fn keys<T>(m: &std::collections::BTreeMap<String, T>) -> Vec<&str> {
    m.keys().map(String::as_str).collect()
}

fn recv(src: &mut KubeSource, within: Duration, what: &str) -> Manifests {
    if let Ok(m) = src.recv_timeout(within) {
        return m.clone();
    }
    panic!("no view within {within:?} ({what}); status: {:#?}", src.status())
}

fn assert_no_view(src: &mut KubeSource, during: Duration, what: &str) {
    if let Ok(m) = src.recv_timeout(during) {
        panic!("unexpected view ({what}): pods {:?}, namespaces {:?}", keys(&m.pods), keys(&m.namespaces));
    }
}

fn wait_for(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < within, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn started(api: &FakeApi, o: Options) -> (KubeSource, Manifests) {
    let mut src = kube_source::start_with(api.config(), o).unwrap();
    let first = recv(&mut src, Duration::from_secs(10), "initial sync");
    (src, first)
}

#[test]
fn initial_sync_produces_one_complete_view() {
    let api = FakeApi::start_new();
    seed(&api);
    let (mut src, m) = started(&api, opts());
    assert_eq!(keys(&m.namespaces), ["x", "y"]);
    assert_eq!(keys(&m.nodes), ["node-1"]);
    assert_eq!(keys(&m.pods), ["x/a", "x/b", "y/c"]);
    assert_eq!(keys(&m.services), ["x/web"]);
    assert_eq!(keys(&m.endpoint_slices), ["x/web-abcde"]);
    assert_eq!(keys(&m.network_policies), ["y/deny"]);
    assert!(m.ignored.is_empty());
    assert!(!m.digest.is_empty());
    // The objects are the API's, typed.
    let a = &m.pods["x/a"];
    assert_eq!(a.status.as_ref().unwrap().pod_ip.as_deref(), Some("10.244.0.10"));
    assert_eq!(a.metadata.namespace.as_deref(), Some("x"));
    assert!(a.metadata.resource_version.is_some() && a.metadata.uid.is_some());
    assert_eq!(m.endpoint_slices["x/web-abcde"].endpoints.len(), 2);
    let st = src.status();
    assert!(st.connected && st.synced, "{st:#?}");
    assert_eq!(st.views, 1);
    assert_eq!(st.last_digest.as_deref(), Some(m.digest.as_str()));
    assert!(st.last_view_time.is_some());
    assert_eq!(st.kinds["pods"].objects, 3);
    assert_eq!(st.kinds["namespaces"].objects, 2);
    assert_eq!(st.relists, 0);
    // Nothing changes: no more views.
    assert_no_view(&mut src, Duration::from_millis(300), "nothing changed");
    // The source speaks JSON status for `show status`.
    let j = serde_json::to_value(&st).unwrap();
    assert_eq!(j["kinds"]["pods"]["objects"], 3);
    assert!(j["last_view_time"].as_f64().unwrap() > 1.6e9);
}

#[test]
fn no_view_before_every_kind_has_listed() {
    let api = FakeApi::start_new();
    seed(&api);
    api.set_list_delay(Res::NetworkPolicies, Duration::from_millis(700));
    let mut src = kube_source::start_with(api.config(), opts()).unwrap();
    wait_for("the pods list", Duration::from_secs(5), || src.status().kinds["pods"].listed);
    assert_no_view(&mut src, Duration::from_millis(200), "network policies not listed yet");
    let st = src.status();
    assert!(!st.synced && !st.kinds["networkpolicies"].listed, "{st:#?}");
    let m = recv(&mut src, Duration::from_secs(5), "after the slow list");
    assert_eq!(m.pods.len(), 3);
    assert_eq!(keys(&m.network_policies), ["y/deny"]);
}

/// The batching window does not delay a lone change: with a 3 s window, a change after a
/// quiet window arrives at once, and a second one within the window waits for its end.
#[test]
fn a_lone_change_goes_out_at_once_and_a_following_one_waits_for_the_window() {
    let api = FakeApi::start_new();
    seed(&api);
    let window = Duration::from_secs(3);
    let (mut src, _) = started(&api, Options { debounce: window, ..opts() });
    std::thread::sleep(window); // a quiet window after the first view
    let t = Instant::now();
    api.apply(pod("x", "lone", "10.244.0.70", json!({})));
    let m = recv(&mut src, window * 2, "a lone change");
    let lone = t.elapsed();
    assert!(m.pods.contains_key("x/lone"));
    assert!(lone < window / 3, "a lone change waited {lone:?} (window {window:?})");
    let t = Instant::now();
    api.apply(pod("x", "next", "10.244.0.71", json!({})));
    let m = recv(&mut src, window * 2, "a change within the window");
    assert!(m.pods.contains_key("x/next"));
    assert!(t.elapsed() > window / 2, "a change within the window went out after {:?}", t.elapsed());
}

/// The change hook (what marks the health check's tables stale) hears of a change before the
/// view that carries it is taken, of no change while nothing changes, and that changes which
/// came to nothing (a pod added and deleted within one batching window) settled without a view.
#[test]
fn the_change_hook_hears_each_change_before_its_view_and_changes_that_settle() {
    use kube_source::SourceChange;
    let api = FakeApi::start_new();
    seed(&api);
    let window = Duration::from_millis(500);
    let (mut src, _) = started(&api, Options { debounce: window, ..opts() });
    let heard = std::sync::Arc::new(std::sync::Mutex::new(Vec::<SourceChange>::new()));
    let h = std::sync::Arc::clone(&heard);
    src.on_change(move |c| h.lock().unwrap().push(c));
    assert_no_view(&mut src, Duration::from_millis(600), "nothing changed");
    let h = heard.lock().unwrap().clone();
    assert!(!h.contains(&SourceChange::Changed), "{h:?}");
    heard.lock().unwrap().clear();
    api.apply(pod("x", "hooked", "10.244.0.80", json!({})));
    let m = recv(&mut src, Duration::from_secs(2), "after adding a pod");
    assert!(m.pods.contains_key("x/hooked"));
    assert_eq!(heard.lock().unwrap().first(), Some(&SourceChange::Changed));
    // Within the window after that view: added and deleted, one batch that changes nothing.
    heard.lock().unwrap().clear();
    api.apply(pod("x", "brief", "10.244.0.81", json!({})));
    assert!(api.delete("Pod", "x", "brief"));
    assert_no_view(&mut src, window * 2, "a change undone");
    let h = heard.lock().unwrap().clone();
    assert_eq!(h.first(), Some(&SourceChange::Changed), "{h:?}");
    assert_eq!(h.last(), Some(&SourceChange::Settled), "{h:?}");
}

/// A change goes out at once: a few milliseconds on a quiet machine. The bound (1 s) is one a
/// loaded 2-core machine keeps; it still catches a change that waits for a retry, a relist or
/// a watch timeout. That a lone change does not wait for the batching window is the test above.
const AT_ONCE: Duration = Duration::from_secs(1);

#[test]
fn a_change_produces_a_new_view_at_once() {
    let api = FakeApi::start_new();
    seed(&api);
    let (mut src, first) = started(&api, opts());
    let mut digest = first.digest.clone();
    for i in 0..5 {
        let t = Instant::now();
        api.apply(pod("x", &format!("new{i}"), &format!("10.244.0.{}", 50 + i), json!({"app": "web"})));
        let m = recv(&mut src, Duration::from_secs(2), "after adding a pod");
        let took = t.elapsed();
        assert!(took < AT_ONCE, "view took {took:?}");
        assert!(m.pods.contains_key(&format!("x/new{i}")));
        assert_eq!(m.pods.len(), 4 + i);
        assert_ne!(m.digest, digest);
        digest = m.digest;
    }
    // Modify and delete, each at once too.
    let t = Instant::now();
    api.apply(service("x", "web", "10.96.0.99"));
    let m = recv(&mut src, Duration::from_secs(2), "after modifying a service");
    assert!(t.elapsed() < AT_ONCE, "{:?}", t.elapsed());
    assert_eq!(m.services["x/web"].spec.as_ref().unwrap().cluster_ip.as_deref(), Some("10.96.0.99"));
    let t = Instant::now();
    assert!(api.delete("Pod", "x", "a"));
    let m = recv(&mut src, Duration::from_secs(2), "after deleting a pod");
    assert!(t.elapsed() < AT_ONCE, "{:?}", t.elapsed());
    assert!(!m.pods.contains_key("x/a"));
    // A burst within the debounce window: few views, the last has everything.
    for i in 0..20 {
        api.apply(namespace(&format!("burst{i}"), json!({})));
    }
    let mut last = recv(&mut src, Duration::from_secs(2), "burst");
    let mut views = 1;
    while let Ok(m) = src.recv_timeout(Duration::from_millis(200)) {
        last = m.clone();
        views += 1;
    }
    assert_eq!(last.namespaces.len(), 22);
    assert!(views <= 3, "{views} views for one burst");
}

#[test]
fn relist_after_410_gone_gives_a_fresh_complete_view_and_no_partial_one() {
    let api = FakeApi::start_new();
    seed(&api);
    for i in 0..5 {
        api.apply(pod("y", &format!("p{i}"), &format!("10.244.0.{}", 100 + i), json!({})));
    }
    // One object per page: the pods list takes 8 pages.
    let (mut src, first) = started(&api, Options { page_size: Some(1), ..opts() });
    assert_eq!(first.pods.len(), 8);
    let before = src.status().kinds["pods"].relists;

    // The pods watch comes back with 410; its relist is slow (8 pages of 120 ms).
    api.set_list_delay(Res::Pods, Duration::from_millis(120));
    api.force_gone(Res::Pods, 1);
    api.clear_requests();
    api.close_watches();
    wait_for("the pods relist", Duration::from_secs(5), || src.status().kinds["pods"].listing);
    // Changes during the relist: another kind changes (its watch is fine) and pods change.
    api.apply(namespace("x", json!({"ns": "x", "changed": "yes"})));
    api.apply(pod("x", "late", "10.244.0.77", json!({})));
    assert!(api.delete("Pod", "y", "p0"));
    // No view while the pods are being relisted, although the namespace change arrived.
    assert_no_view(&mut src, Duration::from_millis(300), "pods relist under way");
    let st = src.status();
    assert!(!st.synced && st.kinds["pods"].listing, "{st:#?}");
    assert!(st.kinds["pods"].last_error.as_deref().unwrap_or("").contains("410"), "{st:#?}");

    // Then only complete views: every pod of the final state (or of the state the relist took,
    // which the watch then brings up to date); never a subset of a list.
    let want: BTreeSet<String> = first.pods.keys().filter(|k| *k != "y/p0").cloned().chain(["x/late".to_string()]).collect();
    let t = Instant::now();
    let mut views = 0;
    loop {
        let m = recv(&mut src, Duration::from_secs(5), "after the relist");
        views += 1;
        let pods: BTreeSet<String> = m.pods.keys().cloned().collect();
        let old: BTreeSet<String> = first.pods.keys().cloned().collect();
        let complete = [old.clone(), want.clone(), &old | &want].contains(&pods)
            || (pods.is_superset(&want) && pods.is_subset(&(&old | &want)));
        assert!(complete, "partial view: {pods:?}");
        assert_eq!(m.namespaces["x"].metadata.labels.as_ref().unwrap()["changed"], "yes");
        assert_eq!(m.nodes.len(), 1);
        assert_eq!(m.services.len(), 1);
        if pods == want {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(5));
    }
    assert!(views <= 2, "{views} views");
    let st = src.status();
    assert!(st.synced);
    assert_eq!(st.kinds["pods"].relists, before + 1);
    assert_eq!(st.kinds["namespaces"].relists, 0);
    // The relist paged (limit=1 and continue tokens).
    let reqs = api.requests();
    assert!(reqs.iter().any(|r| r.starts_with("GET /api/v1/pods?") && r.contains("continue=")), "{reqs:?}");
}

#[test]
fn compaction_relists_every_kind_into_one_fresh_view() {
    let api = FakeApi::start_new();
    seed(&api);
    let (mut src, _) = started(&api, opts());
    // While the server is away, things change and the history is compacted: every watch gets
    // 410 Gone when it comes back and every kind relists.
    let mut api = api;
    api.stop();
    api.delete("Pod", "x", "a");
    api.apply(pod("y", "d", "10.244.0.20", json!({})));
    api.delete("NetworkPolicy", "y", "deny");
    api.apply(policy("x", "allow"));
    api.compact();
    api.start();
    let m = recv(&mut src, Duration::from_secs(10), "after the compaction");
    assert_eq!(keys(&m.pods), ["x/b", "y/c", "y/d"]);
    assert_eq!(keys(&m.network_policies), ["x/allow"]);
    assert_eq!(m.namespaces.len(), 2);
    assert_eq!(m.endpoint_slices.len(), 1);
    let st = src.status();
    assert!(st.connected && st.synced, "{st:#?}");
    assert!(st.relists >= 2, "{st:#?}");
    assert_no_view(&mut src, Duration::from_millis(300), "settled");
}

#[test]
fn server_away_and_back() {
    let mut api = FakeApi::start_new();
    seed(&api);
    let (mut src, first) = started(&api, opts());
    assert!(src.status().connected);
    api.stop();
    wait_for("disconnected", Duration::from_secs(5), || !src.status().connected);
    let st = src.status();
    let err = st.last_error.clone().unwrap_or_default();
    assert!(err.to_lowercase().contains("connect"), "{st:#?}");
    assert!(st.last_error_time.is_some());
    assert!(st.errors > 0 && src.status_handle().errors() == st.errors || src.status_handle().errors() > st.errors);
    // Changes made while it is away (the history is kept: watches resume without relisting).
    api.apply(pod("x", "while-away", "10.244.0.30", json!({})));
    api.delete("Pod", "y", "c");
    api.apply(slice("x", "web", &["10.244.0.11"]));
    assert_no_view(&mut src, Duration::from_millis(800), "server away");
    assert!(!src.status().connected);
    api.start();
    let m = recv(&mut src, Duration::from_secs(10), "server back");
    // One view, complete, with every change made while it was away.
    assert_eq!(keys(&m.pods), ["x/a", "x/b", "x/while-away"]);
    assert_eq!(m.endpoint_slices["x/web-abcde"].endpoints.len(), 1);
    assert_eq!(m.namespaces.len(), first.namespaces.len());
    assert_eq!(m.nodes.len(), 1);
    let st = src.status();
    assert!(st.connected, "{st:#?}");
    assert!(st.synced);
    let m = src.recv_timeout(Duration::from_millis(300));
    assert!(m.is_err(), "a second view after the return: {:?}", m.map(|m| m.digest.clone()));
    // And it goes on following changes.
    api.apply(pod("x", "after", "10.244.0.31", json!({})));
    let m = recv(&mut src, Duration::from_secs(2), "change after the return");
    assert!(m.pods.contains_key("x/after"));
}

#[test]
fn bookmarks_do_not_produce_views() {
    let api = FakeApi::start_new();
    seed(&api);
    let (mut src, first) = started(&api, opts());
    wait_for("seven open watches", Duration::from_secs(5), || api.open_watches() == 7);
    let reqs = api.requests();
    assert!(reqs.iter().filter(|r| r.contains("watch=true") && r.contains("allowWatchBookmarks=true")).count() >= 7, "{reqs:?}");
    for _ in 0..3 {
        api.bookmarks();
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_no_view(&mut src, Duration::from_millis(400), "bookmarks only");
    // The watches are alive and resume from the bookmark's revision after a clean close.
    api.clear_requests();
    api.close_watches();
    wait_for("re-watches", Duration::from_secs(5), || api.open_watches() == 7);
    assert_no_view(&mut src, Duration::from_millis(200), "watches re-established");
    let rv = api.resource_version();
    let reqs = api.requests();
    assert!(reqs.iter().all(|r| r.contains("watch=true")), "relisted after a clean close: {reqs:?}");
    assert!(reqs.iter().all(|r| r.contains(&format!("resourceVersion={rv}"))), "{reqs:?}");
    api.apply(pod("x", "z", "10.244.0.40", json!({})));
    let m = recv(&mut src, Duration::from_secs(2), "a change");
    assert_eq!(m.pods.len(), first.pods.len() + 1);
    assert_eq!(src.status().relists, 0);
}

#[test]
fn paged_lists() {
    let api = FakeApi::start_new();
    seed(&api);
    for i in 0..7 {
        api.apply(pod("y", &format!("p{i}"), &format!("10.244.0.{}", 100 + i), json!({})));
    }
    let (src, m) = started(&api, Options { page_size: Some(2), ..opts() });
    assert_eq!(m.pods.len(), 10);
    assert_eq!(m.namespaces.len(), 2);
    let reqs = api.requests();
    let pod_lists: Vec<&String> = reqs.iter().filter(|r| r.starts_with("GET /api/v1/pods?") && !r.contains("watch=")).collect();
    assert_eq!(pod_lists.len(), 5, "{pod_lists:?}");
    assert!(pod_lists.iter().all(|r| r.contains("limit=2")), "{pod_lists:?}");
    assert_eq!(pod_lists.iter().filter(|r| r.contains("continue=")).count(), 4, "{pod_lists:?}");
    drop(src);

    // A continue token that expires mid-list (compaction): the list starts over, and the
    // first view is still complete.
    api.set_list_delay(Res::Pods, Duration::from_millis(100));
    api.clear_requests();
    let mut src = kube_source::start_with(api.config(), Options { page_size: Some(3), ..opts() }).unwrap();
    wait_for("a first pods page", Duration::from_secs(5), || {
        api.requests().iter().any(|r| r.starts_with("GET /api/v1/pods?") && r.contains("limit=3"))
    });
    std::thread::sleep(Duration::from_millis(150));
    api.apply(pod("x", "added-mid-list", "10.244.0.90", json!({})));
    api.compact();
    let m = recv(&mut src, Duration::from_secs(10), "after an expired continue token");
    assert!(m.pods.len() == 11 || m.pods.len() == 10, "{:?}", keys(&m.pods));
    let m = if m.pods.len() == 10 { recv(&mut src, Duration::from_secs(2), "the pod added mid-list") } else { m };
    assert!(m.pods.contains_key("x/added-mid-list"));
    let st = src.status();
    assert!(st.kinds["pods"].errors >= 1 || st.kinds["pods"].objects == 11, "{st:#?}");
}

#[test]
fn a_slow_consumer_gets_the_newest_view() {
    let api = FakeApi::start_new();
    seed(&api);
    let (mut src, _) = started(&api, opts());
    for i in 0..4 {
        api.apply(pod("x", &format!("s{i}"), &format!("10.244.0.{}", 60 + i), json!({})));
        std::thread::sleep(Duration::from_millis(80));
    }
    let m = recv(&mut src, Duration::from_secs(1), "queued");
    assert_eq!(m.pods.len(), 7, "{:?}", keys(&m.pods));
    assert!(src.try_recv().is_none());
    assert!(src.status().views >= 3);
}

#[test]
fn the_api_view_matches_the_directory_view_of_the_same_objects() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/services");
    let from_dir = manifests::load_dir(&dir).unwrap();
    let api = FakeApi::start_new();
    let mut n = 0;
    for f in manifests::manifest_files(&dir).unwrap() {
        let text = std::fs::read_to_string(&f).unwrap();
        // Scalars as the switch reads them (YAML 1.2: a name `y` or `0755` is a string).
        let opts = serde_saphyr::options! {
            strict_booleans: true,
            leading_zero_numbers_as_strings: true,
            underscored_numbers_as_strings: true,
        };
        for v in serde_saphyr::from_multiple_with_options::<Value>(&text, opts).unwrap() {
            if Res::from_kind(v["kind"].as_str().unwrap_or("")).is_some() {
                api.apply(v);
                n += 1;
            }
        }
    }
    assert!(n > 5);
    let (_src, m) = started(&api, opts());
    assert_eq!(keys(&m.namespaces), keys(&from_dir.namespaces));
    assert_eq!(keys(&m.pods), keys(&from_dir.pods));
    assert_eq!(keys(&m.nodes), keys(&from_dir.nodes));
    assert_eq!(keys(&m.services), keys(&from_dir.services));
    assert_eq!(keys(&m.endpoint_slices), keys(&from_dir.endpoint_slices));
    assert_eq!(keys(&m.network_policies), keys(&from_dir.network_policies));
    for (k, p) in &from_dir.pods {
        assert_eq!(m.pods[k].spec, p.spec, "{k}");
        assert_eq!(m.pods[k].metadata.labels, p.metadata.labels, "{k}");
    }
    for (k, s) in &from_dir.services {
        assert_eq!(m.services[k].spec, s.spec, "{k}");
    }
    for (k, s) in &from_dir.endpoint_slices {
        assert_eq!(m.endpoint_slices[k].endpoints, s.endpoints, "{k}");
    }
}

#[test]
fn an_unreachable_server_gives_no_view_and_says_why() {
    // A port nothing listens on (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let cfg = kube::Config::new(format!("http://127.0.0.1:{port}").parse().unwrap());
    let mut src = kube_source::start_with(cfg, opts()).unwrap();
    wait_for("an error", Duration::from_secs(5), || src.status().last_error.is_some());
    assert_no_view(&mut src, Duration::from_millis(300), "no server");
    let st = src.status();
    assert!(!st.connected && !st.synced, "{st:#?}");
    assert!(st.kinds.values().all(|k| !k.listed));
}

#[test]
fn an_https_server_gets_a_rustls_client() {
    // The TLS client (rustls with ring) builds, and a server that does not speak TLS is an
    // error of the status, not a panic.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = std::sync::Arc::clone(&stop);
    listener.set_nonblocking(true).unwrap();
    let t = std::thread::spawn(move || {
        use std::io::Write;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            match listener.accept() {
                Ok((mut s, _)) => {
                    let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    let cfg = kube::Config::new(format!("https://127.0.0.1:{port}").parse().unwrap());
    let mut src = kube_source::start_with(cfg, opts()).unwrap();
    wait_for("a TLS error", Duration::from_secs(5), || src.status().last_error.is_some());
    let st = src.status();
    assert!(!st.connected && !st.synced, "{st:#?}");
    eprintln!("TLS error: {:?}", st.last_error);
    assert_no_view(&mut src, Duration::from_millis(100), "no TLS server");
    drop(src);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    t.join().unwrap();
}

/// Every key that differs between `prev` and `m` is among the changes `m` lists from `prev`.
fn lists_every_change(prev: &Manifests, m: &Manifests, what: &str) {
    let c = m.changes_since(&prev.digest).unwrap_or_else(|| panic!("{what}: no changes from the previous view: {:?}", m.changes));
    let d = manifests::Changes::between(prev, m);
    let (d, c) = (&d.keys, &c.keys);
    for (kind, diff, listed) in [
        ("namespaces", &d.namespaces, &c.namespaces),
        ("pods", &d.pods, &c.pods),
        ("nodes", &d.nodes, &c.nodes),
        ("services", &d.services, &c.services),
        ("endpointslices", &d.endpoint_slices, &c.endpoint_slices),
        ("networkpolicies", &d.network_policies, &c.network_policies),
    ] {
        assert!(diff.is_subset(listed), "{what}: {kind} changed {diff:?}, listed {listed:?}");
    }
}

#[test]
fn views_list_the_keys_that_changed_and_a_relist_lists_none() {
    let api = FakeApi::start_new();
    seed(&api);
    let (mut src, first) = started(&api, opts());
    assert!(first.changes.is_none(), "a first view has nothing to lead from");
    let mut prev = first;
    type Edit = Box<dyn Fn(&FakeApi)>;
    let edits: Vec<(&str, Edit)> = vec![
        ("add a pod", Box::new(|a| {
            a.apply(pod("x", "n", "10.244.0.60", json!({})));
        })),
        ("modify a Service", Box::new(|a| {
            a.apply(service("x", "web", "10.96.0.99"));
        })),
        ("modify an EndpointSlice", Box::new(|a| {
            a.apply(slice("x", "web", &["10.244.0.10"]));
        })),
        ("delete a pod", Box::new(|a| assert!(a.delete("Pod", "x", "a")))),
        ("relabel a namespace and add a policy", Box::new(|a| {
            a.apply(namespace("y", json!({"ns": "y", "t": "1"})));
            a.apply(policy("x", "p2"));
        })),
    ];
    for (what, edit) in &edits {
        edit(&api);
        let m = recv(&mut src, Duration::from_secs(2), what);
        lists_every_change(&prev, &m, what);
        let c = m.changes.as_ref().unwrap();
        let listed: usize = c.keys.counts().iter().sum();
        assert!(listed <= 2, "{what}: {c:?}");
        prev = m;
    }
    // A consumer that did not take views in time gets the changes since the one it took.
    for i in 0..4 {
        api.apply(pod("x", &format!("s{i}"), &format!("10.244.0.{}", 70 + i), json!({})));
        std::thread::sleep(Duration::from_millis(80));
    }
    let m = recv(&mut src, Duration::from_secs(1), "queued");
    lists_every_change(&prev, &m, "views not taken in time");
    assert_eq!(m.changes.as_ref().unwrap().keys.pods.len(), 4);
    // After a relist, no list of changes (the list replaced the store).
    api.force_gone(Res::Pods, 1);
    api.close_watches();
    api.apply(pod("y", "after", "10.244.0.90", json!({})));
    let m = recv(&mut src, Duration::from_secs(5), "after the relist");
    assert!(src.status().kinds["pods"].relists >= 1);
    assert!(m.pods.contains_key("y/after"), "{:?}", keys(&m.pods));
    assert!(m.changes.is_none(), "a view after a relist lists changes: {:?}", m.changes);
}

fn service_cidr(name: &str, cidrs: &[&str]) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "ServiceCIDR", "metadata": {"name": name},
           "spec": {"cidrs": cidrs}})
}

#[test]
fn service_cidrs_are_watched_where_the_server_has_them() {
    let api = FakeApi::start_new();
    seed(&api);
    api.apply(service_cidr("kubernetes", &["10.96.0.0/12", "fd00:10:96::/112"]));
    let (mut src, m) = started(&api, opts());
    assert_eq!(keys(&m.service_cidrs), ["kubernetes"]);
    assert!(!src.status().kinds["servicecidrs"].absent);
    api.apply(service_cidr("extra", &["10.200.0.0/16"]));
    let m = recv(&mut src, Duration::from_secs(5), "a new ServiceCIDR");
    assert_eq!(keys(&m.service_cidrs), ["extra", "kubernetes"]);
}

#[test]
fn a_server_without_service_cidrs_syncs_without_them_and_lists_them_once_it_has_them() {
    let api = FakeApi::start_new();
    api.unserve(Res::ServiceCidrs);
    seed(&api);
    // Views are not held back for a kind the server does not have.
    let (mut src, m) = started(&api, opts());
    assert!(m.service_cidrs.is_empty());
    assert_eq!(keys(&m.pods), ["x/a", "x/b", "y/c"]);
    let st = src.status();
    let k = &st.kinds["servicecidrs"];
    assert!(st.synced && k.absent && k.listed && !k.listing, "{st:#?}");
    assert_eq!(st.errors, 0, "a kind the server does not have is not an error: {st:#?}");
    // Its list is asked again (after the backoff) and produces no views while still absent.
    wait_for("another list of servicecidrs", Duration::from_secs(5), || {
        api.requests().iter().filter(|r| r.starts_with("GET /apis/networking.k8s.io/v1/servicecidrs?")).count() >= 2
    });
    assert_no_view(&mut src, Duration::from_millis(300), "servicecidrs still absent");
    // The server gets them (an upgrade): listed and followed like any kind.
    api.apply(service_cidr("kubernetes", &["10.96.0.0/12"]));
    api.serve(Res::ServiceCidrs);
    let m = recv(&mut src, Duration::from_secs(10), "servicecidrs served");
    assert_eq!(keys(&m.service_cidrs), ["kubernetes"]);
    assert!(!src.status().kinds["servicecidrs"].absent);
}
