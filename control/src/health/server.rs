//! The HTTP side of the health checks: kube-proxy's `/healthz` and `/livez` on
//! `--healthz-bind-address`, and one server per Service health check port.
//!
//! Contract:
//! - [`HealthServer::start`] starts a thread (it inherits the control threads' cores, never a
//!   worker's) with a current-thread tokio runtime, on which hyper serves every connection
//!   (HTTP/1.1, keep-alive; a client has 5 s to send its request head).
//! - `/healthz` and `/livez` answer as [`ProxyHealth`] says; any other path is 404 with Go's
//!   `404 page not found` (kube-proxy's mux). If the address cannot be bound, that is logged
//!   and kept as a problem ([`HealthServer::problems`]) and binding is tried again every 5 s, as
//!   kube-proxy does (it does not stop the switch).
//! - [`HealthServer::sync_services`] takes the Services whose health checks this node serves
//!   (with their local endpoint counts): the counts are in force at once; servers of Services
//!   gone, or moved to another port, are closed (the port is released at once), new ones
//!   opened on `0.0.0.0:PORT` (kube-proxy's default: every node address). A port that cannot
//!   be bound is logged and kept as a problem naming the Service and the port, and tried again
//!   with every sync and at most every 5 s by [`HealthServer::retry`]; never silently dropped.
//! - A Service's server answers with [`super::service::answer`] for any method and path.
//! - Dropping the server stops the runtime: every listener and connection closes.
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};

use super::proxy::{Answer, Moment, ProxyHealth};
use super::service;
use crate::services::HealthCheck;

/// How long a client may take to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// How often an address that could not be bound is tried again (kube-proxy: 5 s).
pub const RETRY_EVERY: Duration = Duration::from_secs(5);

/// Why the health server did not start.
#[derive(Debug, thiserror::Error)]
pub enum HealthServerError {
    #[error("starting the health check server's runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// What the handlers read: the proxy's health and each Service's local endpoints.
struct Inner {
    proxy: Arc<ProxyHealth>,
    /// `namespace/name` → ready local endpoints.
    endpoints: Mutex<BTreeMap<String, usize>>,
    /// Why `--healthz-bind-address` is not served (None: it is, or it is off).
    healthz_error: Mutex<Option<String>>,
}

/// One Service's open server.
struct Open {
    port: u16,
    task: tokio::task::AbortHandle,
}

/// See the module contract.
pub struct HealthServer {
    inner: Arc<Inner>,
    rt: tokio::runtime::Handle,
    open: BTreeMap<String, Open>,
    /// Services whose port could not be bound: port and why.
    failed: BTreeMap<String, (u16, String)>,
    /// The Services wanted at the last sync: key → port.
    wanted: BTreeMap<String, u16>,
    last_try: Instant,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl HealthServer {
    /// Starts the runtime, and `/healthz` and `/livez` on `healthz` unless None.
    pub fn start(healthz: Option<SocketAddr>, proxy: Arc<ProxyHealth>) -> Result<Self, HealthServerError> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(HealthServerError::Runtime)?;
        let handle = rt.handle().clone();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("podswitch-health".into())
            .spawn(move || {
                rt.block_on(async move {
                    let _ = stop_rx.await;
                });
                // Dropping the runtime cancels every listener and connection task.
            })
            .map_err(HealthServerError::Runtime)?;
        let inner = Arc::new(Inner { proxy, endpoints: Mutex::default(), healthz_error: Mutex::default() });
        if let Some(addr) = healthz {
            handle.spawn(serve_healthz(addr, Arc::clone(&inner)));
        }
        Ok(HealthServer {
            inner,
            rt: handle,
            open: BTreeMap::new(),
            failed: BTreeMap::new(),
            wanted: BTreeMap::new(),
            last_try: Instant::now(),
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// Takes in the Services whose health checks this node serves (see the module contract).
    pub fn sync_services(&mut self, checks: &[HealthCheck]) {
        let key = |c: &HealthCheck| format!("{}/{}", c.namespace, c.name);
        *self.inner.endpoints.lock().unwrap_or_else(PoisonError::into_inner) =
            checks.iter().map(|c| (key(c), c.local_endpoints)).collect();
        self.wanted = checks.iter().map(|c| (key(c), c.port)).collect();
        self.reconcile();
    }

    /// Tries again the ports that could not be bound, at most every [`RETRY_EVERY`].
    pub fn retry(&mut self) {
        if !self.failed.is_empty() && self.last_try.elapsed() >= RETRY_EVERY {
            self.reconcile();
        }
    }

    fn reconcile(&mut self) {
        self.last_try = Instant::now();
        let open: BTreeMap<String, u16> = self.open.iter().map(|(k, o)| (k.clone(), o.port)).collect();
        let plan = service::plan(&open, &self.wanted);
        for k in plan.close {
            if let Some(o) = self.open.remove(&k) {
                o.task.abort();
                tracing::info!(service = %k, port = o.port, "health check closed");
            }
        }
        self.failed.retain(|k, (port, _)| self.wanted.get(k) == Some(port));
        for (k, port) in plan.open {
            let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
            match bind(addr) {
                Ok(listener) => {
                    let task = {
                        let _guard = self.rt.enter();
                        match tokio::net::TcpListener::from_std(listener) {
                            Ok(l) => self.rt.spawn(serve_service(l, k.clone(), Arc::clone(&self.inner))).abort_handle(),
                            Err(e) => {
                                self.fail(&k, port, &e.to_string());
                                continue;
                            }
                        }
                    };
                    if self.failed.remove(&k).is_some() {
                        tracing::info!(service = %k, port, "health check port bound after all");
                    }
                    tracing::info!(service = %k, port, "health check opened");
                    self.open.insert(k, Open { port, task });
                }
                Err(e) => self.fail(&k, port, &e.to_string()),
            }
        }
    }

    fn fail(&mut self, key: &str, port: u16, error: &str) {
        let again = self.failed.get(key).is_some_and(|(p, e)| *p == port && e == error);
        if !again {
            tracing::error!(service = %key, port, "cannot serve the Service's health check: {error} (tried again every {}s)", RETRY_EVERY.as_secs());
        }
        self.failed.insert(key.to_string(), (port, error.to_string()));
    }

    /// Sentences for `show status`: ports that could not be bound.
    pub fn problems(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .failed
            .iter()
            .map(|(k, (port, e))| format!("Service {k}: cannot serve its health check on port {port}: {e}"))
            .collect();
        if let Some(e) = self.inner.healthz_error.lock().unwrap_or_else(PoisonError::into_inner).clone() {
            out.push(e);
        }
        out
    }

    /// The Services whose health check server is open, with their port.
    pub fn open_ports(&self) -> BTreeMap<String, u16> {
        self.open.iter().map(|(k, o)| (k.clone(), o.port)).collect()
    }
}

impl Drop for HealthServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A listening socket on `addr` (non-blocking, for tokio), with SO_REUSEADDR as Go sets it.
fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    // std sets SO_REUSEADDR on Unix, as Go's net.Listen does: a port just closed (TIME_WAIT
    // connections) can be bound again at once.
    let l = std::net::TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    Ok(l)
}

fn response(a: Answer) -> Response<Full<Bytes>> {
    let mut r = Response::builder().status(a.status);
    for (k, v) in a.headers {
        r = r.header(k, v);
    }
    r.body(Full::new(Bytes::from(a.body))).expect("valid status and headers")
}

/// Serves HTTP/1.1 on each connection `listener` accepts, answering with `answer`.
async fn serve<F>(listener: tokio::net::TcpListener, answer: F)
where
    F: Fn(&Request<hyper::body::Incoming>) -> Answer + Clone + Send + Sync + 'static,
{
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!("health check server: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let answer = answer.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let a = answer(&req);
                async move { Ok::<_, Infallible>(response(a)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                // Header names as Go's net/http writes them (`Content-Type`, not `content-type`):
                // the same bytes as kube-proxy's answers, for clients that match them as text.
                .title_case_headers(true)
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc);
            if let Err(e) = conn.await {
                tracing::debug!("health check connection: {e}");
            }
        });
    }
}

async fn serve_service(listener: tokio::net::TcpListener, key: String, inner: Arc<Inner>) {
    let (namespace, name) = key.split_once('/').map(|(n, s)| (n.to_string(), s.to_string())).unwrap_or_default();
    serve(listener, move |_req: &Request<hyper::body::Incoming>| {
        let n = inner.endpoints.lock().unwrap_or_else(PoisonError::into_inner).get(&key).copied().unwrap_or(0);
        service::answer(&namespace, &name, n, inner.proxy.is_healthy())
    })
    .await;
}

/// The answer of the proxy's own server to `path`.
pub fn proxy_answer(proxy: &ProxyHealth, path: &str, now: Moment) -> Answer {
    match path {
        "/healthz" => proxy.healthz(now),
        "/livez" => proxy.livez(now),
        // Go's http.NotFound, as kube-proxy's mux answers any other path.
        _ => Answer {
            status: 404,
            headers: vec![("Content-Type", "text/plain; charset=utf-8".into()), ("X-Content-Type-Options", "nosniff".into())],
            body: "404 page not found\n".into(),
        },
    }
}

/// Keeps why `--healthz-bind-address` is not served; logs it when it is new.
fn record_healthz_error(inner: &Inner, text: String) {
    let mut err = inner.healthz_error.lock().unwrap_or_else(PoisonError::into_inner);
    if err.as_deref() != Some(text.as_str()) {
        tracing::error!("{text}");
    }
    *err = Some(text);
}

async fn serve_healthz(addr: SocketAddr, inner: Arc<Inner>) {
    let listener = loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => {
                if inner.healthz_error.lock().unwrap_or_else(PoisonError::into_inner).take().is_some() {
                    tracing::info!(%addr, "healthz server started after all");
                }
                break l;
            }
            Err(e) => {
                let text = format!("--healthz-bind-address {addr}: cannot listen: {e} (tried again every {}s)", RETRY_EVERY.as_secs());
                record_healthz_error(&inner, text);
                tokio::time::sleep(RETRY_EVERY).await;
            }
        }
    };
    tracing::info!(%addr, "healthz server: /healthz and /livez");
    let proxy = Arc::clone(&inner.proxy);
    serve(listener, move |req: &Request<hyper::body::Incoming>| proxy_answer(&proxy, req.uri().path(), Moment::now())).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;

    /// A port nothing listens on (bound and let go).
    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    /// One HTTP/1.1 request to 127.0.0.1:`port`: (status, head, body), or the connect error.
    fn get(port: u16, path: &str) -> std::io::Result<(u16, String, String)> {
        let mut s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        let (head, body) = out.split_once("\r\n\r\n").expect("a head and a body");
        let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).expect("a status line");
        Ok((status, head.to_ascii_lowercase(), body.to_string()))
    }

    /// The response head to `GET /` on 127.0.0.1:`port`, as sent.
    fn head_as_sent(port: u16) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(s, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out.split("\r\n\r\n").next().unwrap().to_string() + "\r\n"
    }

    fn check(name: &str, port: u16, local_endpoints: usize) -> HealthCheck {
        HealthCheck { namespace: "x".into(), name: name.into(), port, local_endpoints }
    }

    /// Retries `f` for up to 5 s until it holds (a listener's task starts on the runtime).
    fn eventually(mut f: impl FnMut() -> bool) -> bool {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(5) {
            if f() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    #[test]
    fn services_health_checks_open_answer_and_close_over_real_sockets() {
        let proxy = Arc::new(ProxyHealth::new(Duration::from_secs(60)));
        let hz = free_port();
        let mut s = HealthServer::start(Some(SocketAddr::from(([127, 0, 0, 1], hz))), Arc::clone(&proxy)).unwrap();
        let (a, b) = (free_port(), free_port());
        s.sync_services(&[check("a", a, 2), check("b", b, 0)]);
        assert!(s.problems().is_empty(), "{:?}", s.problems());
        let (status, head, body) = get(a, "/").unwrap();
        assert_eq!(status, 200, "{head}{body}");
        assert!(head_as_sent(a).contains("\r\nContent-Type: application/json\r\n"), "header names as Go writes them");
        assert!(head_as_sent(a).contains("\r\nX-Load-Balancing-Endpoint-Weight: 2\r\n"));
        assert!(head.contains("content-type: application/json") && head.contains("x-content-type-options: nosniff"), "{head}");
        assert!(head.contains("x-load-balancing-endpoint-weight: 2"), "{head}");
        assert_eq!(body, service::answer("x", "a", 2, true).body);
        let (status, _, body) = get(b, "/any/path").unwrap();
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("\"localEndpoints\": 0"), "{body}");

        // The counts follow at once; a Service gone closes its port.
        s.sync_services(&[check("b", b, 1)]);
        assert_eq!(get(b, "/").unwrap().0, 200);
        assert!(eventually(|| get(a, "/").is_err()), "port {a} still open");
        assert_eq!(s.open_ports(), BTreeMap::from([("x/b".to_string(), b)]));

        // A port taken by someone else: reported, retried, served once free.
        let squatter = std::net::TcpListener::bind(("0.0.0.0", a)).unwrap();
        s.sync_services(&[check("b", b, 1), check("a", a, 1)]);
        let p = s.problems();
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].starts_with(&format!("Service x/a: cannot serve its health check on port {a}: ")), "{p:?}");
        drop(squatter);
        s.last_try = Instant::now() - RETRY_EVERY;
        s.retry();
        assert!(s.problems().is_empty(), "{:?}", s.problems());
        assert_eq!(get(a, "/").unwrap().0, 200);

        // The proxy's own endpoints; an unhealthy proxy fails the Services' checks too.
        let (status, head, body) = get(hz, "/healthz").unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(head.contains("content-type: application/json") && head.contains("x-content-type-options: nosniff"), "{head}");
        assert!(body.contains("\"nodeEligible\":true"), "{body}");
        assert_eq!(get(hz, "/livez").unwrap().0, 200);
        let (status, _, body) = get(hz, "/").unwrap();
        assert_eq!((status, body.as_str()), (404, "404 page not found\n"));
        proxy.set_node_eligible(false);
        assert_eq!(get(hz, "/healthz").unwrap().0, 503);
        assert_eq!(get(hz, "/livez").unwrap().0, 200);
        assert_eq!(get(a, "/").unwrap().0, 200, "node eligibility does not fail a Service's check");
        let now = Moment::now();
        proxy.updated_at(now);
        proxy.queued_update_at(Moment { mono: now.mono - Duration::from_secs(61), ..now });
        assert_eq!(get(hz, "/livez").unwrap().0, 503);
        let (status, _, body) = get(a, "/").unwrap();
        assert_eq!(status, 503);
        assert!(body.ends_with("\"serviceProxyHealthy\": false\n}"), "{body}");

        // Dropped: every port closes.
        drop(s);
        assert!(get(b, "/").is_err() && get(hz, "/healthz").is_err());
    }

    #[test]
    fn a_healthz_address_in_use_is_reported_and_retried() {
        let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = squatter.local_addr().unwrap();
        let s = HealthServer::start(Some(addr), Arc::new(ProxyHealth::new(Duration::from_secs(60)))).unwrap();
        assert!(eventually(|| s.problems().iter().any(|p| p.starts_with(&format!("--healthz-bind-address {addr}: cannot listen")))), "{:?}", s.problems());
        drop(squatter);
        // Tried again within RETRY_EVERY.
        let t0 = Instant::now();
        while !get(addr.port(), "/livez").is_ok_and(|a| a.0 == 200) {
            assert!(t0.elapsed() < RETRY_EVERY * 2, "not served after the address was free: {:?}", s.problems());
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(s.problems().is_empty(), "{:?}", s.problems());
    }
}
