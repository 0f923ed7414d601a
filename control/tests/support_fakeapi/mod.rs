//! A fake Kubernetes API server for tests: the list and watch protocol of the real one, over
//! HTTP on 127.0.0.1, for the seven kinds the switch watches ([`FakeApi::unserve`] makes one
//! answer 404, as an older server does for ServiceCIDRs).
//!
//! - `GET /api/v1/pods` (and namespaces, nodes, services,
//!   `/apis/discovery.k8s.io/v1/endpointslices`, `/apis/networking.k8s.io/v1/networkpolicies`):
//!   a `PodList` with `metadata.resourceVersion`, items as the API writes them (no per-item
//!   apiVersion/kind). `limit`/`continue` page a consistent snapshot (`remainingItemCount`,
//!   410 Expired once the snapshot's revision is compacted), except with `resourceVersion=0`,
//!   which the real server answers whole from its cache, ignoring `limit`.
//! - `?watch=1&resourceVersion=N[&allowWatchBookmarks=true][&timeoutSeconds=S]`: a chunked
//!   stream of `{"type":"ADDED|MODIFIED|DELETED|BOOKMARK","object":{...}}` lines, first every
//!   event after N from the history, then live ones. N older than the compacted revision (or a
//!   forced 410) gives one `ERROR` event with a `Status` of code 410 "too old resource version",
//!   and the stream ends, as the real server does.
//! - Objects get `resourceVersion` (one counter for all kinds), `uid`, `creationTimestamp`.
//! - `coordination.k8s.io/v1` Leases: GET, POST and PUT of one Lease with the API server's
//!   optimistic concurrency (409 AlreadyExists, 409 Conflict on a stale resourceVersion).
//!
//! The test drives it: [`FakeApi::apply`]/[`FakeApi::delete`], [`FakeApi::compact`],
//! [`FakeApi::force_gone`], [`FakeApi::close_watches`], [`FakeApi::bookmarks`],
//! [`FakeApi::stop`] and [`FakeApi::start`] (same port), [`FakeApi::requests`].
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::sync::broadcast;

/// The resources served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Res {
    Namespaces,
    Pods,
    Nodes,
    Services,
    EndpointSlices,
    NetworkPolicies,
    ServiceCidrs,
}

impl Res {
    pub const ALL: [Res; 7] =
        [Res::Namespaces, Res::Pods, Res::Nodes, Res::Services, Res::EndpointSlices, Res::NetworkPolicies, Res::ServiceCidrs];

    pub fn path(self) -> &'static str {
        match self {
            Res::Namespaces => "/api/v1/namespaces",
            Res::Pods => "/api/v1/pods",
            Res::Nodes => "/api/v1/nodes",
            Res::Services => "/api/v1/services",
            Res::EndpointSlices => "/apis/discovery.k8s.io/v1/endpointslices",
            Res::NetworkPolicies => "/apis/networking.k8s.io/v1/networkpolicies",
            Res::ServiceCidrs => "/apis/networking.k8s.io/v1/servicecidrs",
        }
    }

    pub fn kind(self) -> &'static str {
        match self {
            Res::Namespaces => "Namespace",
            Res::Pods => "Pod",
            Res::Nodes => "Node",
            Res::Services => "Service",
            Res::EndpointSlices => "EndpointSlice",
            Res::NetworkPolicies => "NetworkPolicy",
            Res::ServiceCidrs => "ServiceCIDR",
        }
    }

    pub fn api_version(self) -> &'static str {
        match self {
            Res::EndpointSlices => "discovery.k8s.io/v1",
            Res::NetworkPolicies | Res::ServiceCidrs => "networking.k8s.io/v1",
            _ => "v1",
        }
    }

    pub fn namespaced(self) -> bool {
        !matches!(self, Res::Namespaces | Res::Nodes | Res::ServiceCidrs)
    }

    pub fn from_kind(kind: &str) -> Option<Res> {
        Res::ALL.into_iter().find(|r| r.kind() == kind)
    }

    fn from_path(path: &str) -> Option<Res> {
        Res::ALL.into_iter().find(|r| r.path() == path)
    }
}

#[derive(Clone, Debug)]
enum Live {
    Event { rv: u64, res: Res, line: Bytes },
    Bookmark,
    CloseAll,
}

struct Snapshot {
    res: Res,
    rv: u64,
    items: Vec<Value>,
}

#[derive(Default)]
struct State {
    rv: u64,
    objects: BTreeMap<Res, BTreeMap<(String, String), Value>>,
    /// (rv, resource, event line) of every change after `compacted`.
    history: Vec<(u64, Res, Bytes)>,
    /// Watches from a revision below this get 410.
    compacted: u64,
    /// The next N watches of a resource get 410 whatever they ask.
    force_gone: HashMap<Res, u32>,
    snapshots: HashMap<u64, Snapshot>,
    next_snapshot: u64,
    requests: Vec<String>,
    uid: u64,
    list_delay: HashMap<Res, Duration>,
    /// Resources answered with 404 (a server that does not serve them).
    unserved: std::collections::BTreeSet<Res>,
    /// coordination.k8s.io/v1 Leases by (namespace, name), with their resourceVersion.
    leases: BTreeMap<(String, String), Value>,
    /// Watches that are streaming now.
    open_watches: usize,
}

struct Shared {
    state: Mutex<State>,
    live: broadcast::Sender<Live>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

pub struct FakeApi {
    shared: Arc<Shared>,
    addr: SocketAddr,
    rt: Option<tokio::runtime::Runtime>,
}

type Body = BoxBody<Bytes, Infallible>;

impl FakeApi {
    /// Starts on a free port of 127.0.0.1.
    pub fn start_new() -> FakeApi {
        let (live, _) = broadcast::channel(4096);
        let shared = Arc::new(Shared { state: Mutex::new(State { rv: 1, ..State::default() }), live });
        let mut api = FakeApi { shared, addr: "127.0.0.1:0".parse().unwrap(), rt: None };
        api.start();
        api
    }

    /// The Lease `namespace/name` as stored, if any.
    pub fn lease(&self, namespace: &str, name: &str) -> Option<Value> {
        self.shared.lock().leases.get(&(namespace.to_string(), name.to_string())).cloned()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kube config for this server.
    pub fn config(&self) -> kube::Config {
        let mut c = kube::Config::new(self.url().parse().unwrap());
        c.connect_timeout = Some(Duration::from_secs(2));
        c
    }

    /// (Re)starts serving on the same address (the first time: a free port).
    pub fn start(&mut self) {
        assert!(self.rt.is_none(), "already running");
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let shared = Arc::clone(&self.shared);
        let addr = self.addr;
        let listener = rt.block_on(async move {
            // The old listener may take a moment to go away after a stop.
            let mut tries = 0;
            loop {
                match tokio::net::TcpListener::bind(addr).await {
                    Ok(l) => break l,
                    Err(e) if tries < 100 => {
                        tries += 1;
                        let _ = e;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(e) => panic!("fake API: bind {addr}: {e}"),
                }
            }
        });
        self.addr = listener.local_addr().unwrap();
        rt.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let shared = Arc::clone(&shared);
                        async move { Ok::<_, Infallible>(handle(shared, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        });
        self.rt = Some(rt);
    }

    /// Stops serving: the listener closes and every connection is cut, watches mid-stream.
    pub fn stop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
        self.shared.lock().open_watches = 0;
    }

    /// Adds or replaces an object (by kind, namespace, name); returns its new resourceVersion.
    pub fn apply(&self, mut obj: Value) -> u64 {
        let kind = obj["kind"].as_str().expect("object has a kind").to_string();
        let res = Res::from_kind(&kind).unwrap_or_else(|| panic!("fake API does not serve {kind}"));
        obj["apiVersion"] = json!(res.api_version());
        let name = obj["metadata"]["name"].as_str().expect("object has a name").to_string();
        let ns = if res.namespaced() {
            let ns = obj["metadata"]["namespace"].as_str().unwrap_or("default").to_string();
            obj["metadata"]["namespace"] = json!(ns);
            ns
        } else {
            String::new()
        };
        let mut st = self.shared.lock();
        st.rv += 1;
        let rv = st.rv;
        let old = st.objects.entry(res).or_default().get(&(ns.clone(), name.clone())).cloned();
        let (ty, uid, created) = match &old {
            Some(o) => ("MODIFIED", o["metadata"]["uid"].clone(), o["metadata"]["creationTimestamp"].clone()),
            None => {
                st.uid += 1;
                ("ADDED", json!(format!("00000000-0000-4000-8000-{:012x}", st.uid)), json!("2025-01-01T00:00:00Z"))
            }
        };
        obj["metadata"]["uid"] = uid;
        obj["metadata"]["creationTimestamp"] = created;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        st.objects.get_mut(&res).unwrap().insert((ns, name), obj.clone());
        record(&self.shared, &mut st, rv, res, ty, obj);
        rv
    }

    /// Deletes an object; false if there was none.
    pub fn delete(&self, kind: &str, namespace: &str, name: &str) -> bool {
        let res = Res::from_kind(kind).unwrap();
        let ns = if res.namespaced() { namespace.to_string() } else { String::new() };
        let mut st = self.shared.lock();
        let Some(mut obj) = st.objects.entry(res).or_default().remove(&(ns, name.to_string())) else {
            return false;
        };
        st.rv += 1;
        let rv = st.rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        record(&self.shared, &mut st, rv, res, "DELETED", obj);
        true
    }

    /// Forgets the history: a watch resuming from any revision before now gets 410 Gone, and
    /// continue tokens of lists taken before now expire.
    pub fn compact(&self) {
        let mut st = self.shared.lock();
        st.compacted = st.rv;
        st.history.clear();
        let rv = st.rv;
        st.snapshots.retain(|_, s| s.rv >= rv);
    }

    /// The next `n` watch requests of `res` get an ERROR event 410 whatever revision they ask.
    pub fn force_gone(&self, res: Res, n: u32) {
        *self.shared.lock().force_gone.entry(res).or_default() += n;
    }

    /// Ends every open watch stream cleanly (as the server does at timeoutSeconds).
    pub fn close_watches(&self) {
        let _ = self.shared.live.send(Live::CloseAll);
    }

    /// Sends a BOOKMARK with the current revision on every open watch that asked for them.
    pub fn bookmarks(&self) {
        let _ = self.shared.live.send(Live::Bookmark);
    }

    /// Delays every list response (each page) of `res` (to make a list span time).
    pub fn set_list_delay(&self, res: Res, d: Duration) {
        self.shared.lock().list_delay.insert(res, d);
    }

    /// From now on `res` is answered with 404, as a server that does not serve it (an older
    /// Kubernetes for ServiceCIDRs); `serve` undoes it.
    pub fn unserve(&self, res: Res) {
        self.shared.lock().unserved.insert(res);
    }

    pub fn serve(&self, res: Res) {
        self.shared.lock().unserved.remove(&res);
    }

    /// Every request so far, as `GET path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.shared.lock().requests.clone()
    }

    pub fn clear_requests(&self) {
        self.shared.lock().requests.clear();
    }

    pub fn open_watches(&self) -> usize {
        self.shared.lock().open_watches
    }

    pub fn resource_version(&self) -> u64 {
        self.shared.lock().rv
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

fn record(shared: &Shared, st: &mut State, rv: u64, res: Res, ty: &str, obj: Value) {
    let mut line = serde_json::to_vec(&json!({"type": ty, "object": obj})).unwrap();
    line.push(b'\n');
    let line = Bytes::from(line);
    st.history.push((rv, res, line.clone()));
    // Sent under the lock: a watch subscribes under it too, so it sees every event exactly once.
    let _ = shared.live.send(Live::Event { rv, res, line });
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

fn json_response(code: StatusCode, v: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("Content-Type", "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(v).unwrap())).boxed())
        .unwrap()
}

fn query(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let h = std::str::from_utf8(&b[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                match h {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn handle(shared: Arc<Shared>, req: Request<hyper::body::Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let q = query(req.uri().query().unwrap_or(""));
    shared.lock().requests.push(format!("{} {}", req.method(), req.uri()));
    if let Some(rest) = path.strip_prefix("/apis/coordination.k8s.io/v1/namespaces/") {
        let rest = rest.to_string();
        return lease(&shared, req, &rest).await;
    }
    if req.method() != hyper::Method::GET {
        return json_response(StatusCode::METHOD_NOT_ALLOWED, &status(405, "MethodNotAllowed", "the fake API only reads"));
    }
    let Some(res) = Res::from_path(&path).filter(|r| !shared.lock().unserved.contains(r)) else {
        return json_response(StatusCode::NOT_FOUND, &status(404, "NotFound", "the server could not find the requested resource"));
    };
    if matches!(q.get("watch").map(String::as_str), Some("1" | "true")) {
        watch(shared, res, &q)
    } else {
        let delay = shared.lock().list_delay.get(&res).copied().unwrap_or_default();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        list(&shared, res, &q)
    }
}

/// Leases, as the API server treats them: GET one (404 when absent), POST (409 AlreadyExists
/// when it exists), PUT with `metadata.resourceVersion` (409 Conflict unless it is the
/// current one). `rest` is the path after `/apis/coordination.k8s.io/v1/namespaces/`.
async fn lease(shared: &Shared, req: Request<hyper::body::Incoming>, rest: &str) -> Response<Body> {
    let parts: Vec<&str> = rest.split('/').collect();
    let (ns, name) = match parts.as_slice() {
        [ns, "leases"] => (ns.to_string(), None),
        [ns, "leases", name] => (ns.to_string(), Some(name.to_string())),
        _ => return json_response(StatusCode::NOT_FOUND, &status(404, "NotFound", "the server could not find the requested resource")),
    };
    let method = req.method().clone();
    let body: Option<Value> = match method {
        hyper::Method::POST | hyper::Method::PUT => {
            let bytes = req.into_body().collect().await.map(http_body_util::Collected::to_bytes).unwrap_or_default();
            match serde_json::from_slice(&bytes) {
                Ok(v) => Some(v),
                Err(e) => return json_response(StatusCode::BAD_REQUEST, &status(400, "BadRequest", &e.to_string())),
            }
        }
        _ => None,
    };
    let mut st = shared.lock();
    let not_found = |n: &str| json_response(StatusCode::NOT_FOUND, &status(404, "NotFound", &format!("leases.coordination.k8s.io \"{n}\" not found")));
    match (method, name, body) {
        (hyper::Method::GET, Some(n), None) => match st.leases.get(&(ns, n.clone())) {
            Some(l) => json_response(StatusCode::OK, l),
            None => not_found(&n),
        },
        (hyper::Method::POST, None, Some(mut l)) => {
            let n = l["metadata"]["name"].as_str().unwrap_or_default().to_string();
            if st.leases.contains_key(&(ns.clone(), n.clone())) {
                return json_response(StatusCode::CONFLICT, &status(409, "AlreadyExists", &format!("leases.coordination.k8s.io \"{n}\" already exists")));
            }
            st.rv += 1;
            l["metadata"]["resourceVersion"] = json!(st.rv.to_string());
            l["metadata"]["namespace"] = json!(ns.clone());
            l["apiVersion"] = json!("coordination.k8s.io/v1");
            l["kind"] = json!("Lease");
            st.leases.insert((ns, n), l.clone());
            json_response(StatusCode::CREATED, &l)
        }
        (hyper::Method::PUT, Some(n), Some(mut l)) => {
            let Some(current) = st.leases.get(&(ns.clone(), n.clone())) else { return not_found(&n) };
            if l["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"] {
                let msg = format!("Operation cannot be fulfilled on leases.coordination.k8s.io \"{n}\": the object has been modified; please apply your changes to the latest version and try again");
                return json_response(StatusCode::CONFLICT, &status(409, "Conflict", &msg));
            }
            st.rv += 1;
            l["metadata"]["resourceVersion"] = json!(st.rv.to_string());
            l["apiVersion"] = json!("coordination.k8s.io/v1");
            l["kind"] = json!("Lease");
            st.leases.insert((ns, n), l.clone());
            json_response(StatusCode::OK, &l)
        }
        _ => json_response(StatusCode::METHOD_NOT_ALLOWED, &status(405, "MethodNotAllowed", "not a Lease request the fake API serves")),
    }
}

fn list(shared: &Shared, res: Res, q: &HashMap<String, String>) -> Response<Body> {
    let mut st = shared.lock();
    let limit: Option<usize> = q.get("limit").and_then(|l| l.parse().ok()).filter(|l| *l > 0);
    let rv_param = q.get("resourceVersion").map_or("", String::as_str);
    let (snap_id, offset, snap_rv, items) = if let Some(token) = q.get("continue").filter(|t| !t.is_empty()) {
        let Some((id, offset)) = token.split_once(':').and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<usize>().ok()?)))
        else {
            return json_response(StatusCode::BAD_REQUEST, &status(400, "BadRequest", "continue key is not valid"));
        };
        let Some(s) = st.snapshots.get(&id).filter(|s| s.res == res) else {
            return json_response(
                StatusCode::GONE,
                &status(410, "Expired", "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list."),
            );
        };
        (id, offset, s.rv, s.items.clone())
    } else {
        let items: Vec<Value> = st.objects.get(&res).map(|m| m.values().cloned().collect()).unwrap_or_default();
        st.next_snapshot += 1;
        (st.next_snapshot, 0, st.rv, items)
    };
    // resourceVersion=0 is served whole from the watch cache: limit is ignored.
    let limit = if rv_param == "0" && !q.contains_key("continue") { None } else { limit };
    let end = limit.map_or(items.len(), |l| (offset + l).min(items.len()));
    let page: Vec<Value> = items[offset.min(end)..end]
        .iter()
        .map(|o| {
            let mut o = o.clone();
            let m = o.as_object_mut().unwrap();
            m.remove("apiVersion");
            m.remove("kind");
            o
        })
        .collect();
    let mut meta = json!({"resourceVersion": snap_rv.to_string()});
    if end < items.len() {
        meta["continue"] = json!(format!("{snap_id}:{end}"));
        meta["remainingItemCount"] = json!(items.len() - end);
        if offset == 0 {
            st.snapshots.insert(snap_id, Snapshot { res, rv: snap_rv, items });
        }
    } else {
        st.snapshots.remove(&snap_id);
    }
    let body = json!({"kind": format!("{}List", res.kind()), "apiVersion": res.api_version(), "metadata": meta, "items": page});
    json_response(StatusCode::OK, &body)
}

fn watch(shared: Arc<Shared>, res: Res, q: &HashMap<String, String>) -> Response<Body> {
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|v| v == "true" || v == "1");
    let timeout = q.get("timeoutSeconds").and_then(|t| t.parse::<u64>().ok()).map(Duration::from_secs);
    let rv_param = q.get("resourceVersion").cloned().unwrap_or_default();
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1024);
    let mut st = shared.lock();
    let forced = st.force_gone.get_mut(&res).filter(|n| **n > 0).map(|n| *n -= 1).is_some();
    let from: Option<u64> = rv_param.parse().ok().filter(|v| *v != 0);
    let too_old = from.is_some_and(|v| v < st.compacted);
    let mut initial: Vec<Bytes> = Vec::new();
    let mut live = None;
    if forced || too_old {
        let asked = from.unwrap_or(0);
        let msg = format!("too old resource version: {asked} ({})", st.compacted.max(asked) + 1);
        let mut line = serde_json::to_vec(&json!({"type": "ERROR", "object": status(410, "Expired", &msg)})).unwrap();
        line.push(b'\n');
        initial.push(Bytes::from(line));
    } else {
        match from {
            // Resume: every change after the revision asked for, then live ones.
            Some(v) => initial.extend(st.history.iter().filter(|(rv, r, _)| *rv > v && *r == res).map(|(_, _, l)| l.clone())),
            // No revision (or 0): the current state as ADDED events, then live ones.
            None => {
                for o in st.objects.get(&res).map(|m| m.values().cloned().collect::<Vec<_>>()).unwrap_or_default() {
                    let mut line = serde_json::to_vec(&json!({"type": "ADDED", "object": o})).unwrap();
                    line.push(b'\n');
                    initial.push(Bytes::from(line));
                }
            }
        }
        live = Some(shared.live.subscribe());
        st.open_watches += 1;
    }
    let start_rv = st.rv;
    drop(st);
    let sh = Arc::clone(&shared);
    tokio::spawn(async move {
        for l in initial {
            if tx.send(l).await.is_err() {
                break;
            }
        }
        if let Some(mut live) = live {
            let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
            let mut last_rv = start_rv;
            loop {
                let next = async {
                    match deadline {
                        Some(d) => tokio::time::timeout_at(d, live.recv()).await.ok(),
                        None => Some(live.recv().await),
                    }
                };
                let msg = tokio::select! {
                    m = next => m,
                    _ = tx.closed() => None,
                };
                let line = match msg {
                    None | Some(Err(broadcast::error::RecvError::Closed)) => break,
                    Some(Err(broadcast::error::RecvError::Lagged(_))) => break, // the client relists, as after a lost watch
                    Some(Ok(Live::CloseAll)) => break,
                    Some(Ok(Live::Event { rv, res: r, line })) => {
                        if r != res || rv <= start_rv {
                            continue;
                        }
                        last_rv = rv;
                        line
                    }
                    Some(Ok(Live::Bookmark)) => {
                        if !bookmarks {
                            continue;
                        }
                        let rv = sh.lock().rv.max(last_rv);
                        let bm = json!({"type": "BOOKMARK", "object": {"kind": res.kind(), "apiVersion": res.api_version(),
                                         "metadata": {"resourceVersion": rv.to_string()}}});
                        let mut l = serde_json::to_vec(&bm).unwrap();
                        l.push(b'\n');
                        Bytes::from(l)
                    }
                };
                if tx.send(line).await.is_err() {
                    break;
                }
            }
            let mut st = sh.lock();
            st.open_watches = st.open_watches.saturating_sub(1);
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx)) });
    Response::builder()
        .status(StatusCode::OK)
        .header("Content-Type", "application/json")
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .unwrap()
}
