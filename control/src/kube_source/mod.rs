//! The Kubernetes API source: the same [`Manifests`] view the directory source gives, from
//! watches on the API server.
//!
//! Contract:
//! - [`start`] spawns a thread with its own tokio runtime. It watches Namespaces, Pods, Nodes,
//!   Services, EndpointSlices (discovery.k8s.io/v1), NetworkPolicies and ServiceCIDRs
//!   (networking.k8s.io/v1) of the whole cluster with kube-runtime watchers, each feeding a
//!   reflector store. An optional kind ([`kinds::Kind::OPTIONAL`]: ServiceCIDR, Kubernetes
//!   1.33+) whose list finds no such resource (404), or is forbidden (403, also recorded as an
//!   error), counts as listed and empty ([`KindStatus::absent`]); its watcher keeps asking
//!   after its backoff.
//! - A view is the content of all the kinds' stores, keyed as the directory source keys them
//!   (`namespace/name`, or `name` for Namespaces and Nodes), with a `digest` over
//!   (kind, key, resourceVersion) of every object ([`view`]). `ignored` is always empty.
//! - No view is emitted before every kind has completed its initial list. A relist (after 410
//!   Gone, a failed list, ...) keeps the old content in its store and holds every view back
//!   until it has completed; then the fresh, complete view goes out. So the consumer never sees
//!   a partial view, and the tables in force stay until a complete one replaces them.
//! - Changes are batched without delaying a lone one: a change that arrives when no view went
//!   out during the last window ([`Options::debounce`], 20 ms) goes out at once; changes that
//!   arrive within a window after a view wait for its end and go out together. So one change
//!   takes effect without waiting, and a stream of changes gives at most one view per window.
//!   A view whose digest equals the last one sent is not sent (bookmarks, relists that found
//!   nothing new).
//! - What goes over the channel is an update ([`view`]): after a list, the whole view; while
//!   watching, only the objects that changed, which the consumer's [`KubeSource`] applies to
//!   the view it holds (so a change costs its objects, not the cluster). The channel keeps
//!   only the newest update, merged with any the consumer did not take: a slow consumer gets
//!   the latest view, never a backlog.
//! - API outages are retried with exponential backoff and jitter ([`Options::retry`]: kube's
//!   `DefaultBackoff`, as client-go's reflector, unless a test asks for shorter delays). Views
//!   are also held while any kind's last request failed (a tower layer under the client sees
//!   every request's outcome): nothing goes out while the server is away, and when it is back
//!   one view follows once every watch has resumed (or relisted, after 410 Gone) and had
//!   [`Options::resume_settle`] to deliver what it missed. [`KubeSource::status`] says whether the last request got an
//!   answer, the last error, what each kind holds and how many relists happened.
//! - Objects are stored reduced to what the compilers read ([`crate::manifests::reduced`]):
//!   Pods and EndpointSlices are read from the API's JSON into podswitch's own smaller types,
//!   and every object loses the metadata nobody reads (`managedFields`, often most of a Pod,
//!   annotations, ownerReferences, ...) before its store takes it.
//! - [`KubeSource::on_change`] lets the health check hear of every change as a watch brings it
//!   ([`SourceChange::Changed`], before any view carries it) and of batches that came to
//!   nothing ([`SourceChange::Settled`]: no view follows, the last one sent stands).
//! - Every view but the first lists the keys its watches changed since the view sent before it
//!   ([`Manifests::changes`]); a view that replaces one the consumer did not take lists the
//!   changes of both. A view after a list (initial or relist), whose store was replaced
//!   wholesale, lists none: the consumer compares everything.
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use crossbeam::channel::{self, Receiver, RecvTimeoutError, Sender};
use futures::StreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::utils::ResetTimerBackoff;
use kube::runtime::watcher::{self, watcher, DefaultBackoff, Event, ExponentialBackoff};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use serde::Serialize;
use tokio::sync::Notify;

use crate::manifests::kinds::{self, key_of, ByKind, EachKind, Family, Keys, Kind, MakeEach, COUNT, PLURALS};
use crate::manifests::Manifests;

mod track;
pub mod view;

pub use view::{Delta, Update, ViewBuilder, ViewKeeper};

/// Where `podswitch run` gets its objects from the Kubernetes API (flattened into `RunArgs`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct KubeArgs {
    /// Watch the Kubernetes API with this kubeconfig (its current context) instead of reading
    /// a manifest directory. Without --manifests and --kubeconfig, a switch running in a pod
    /// uses the pod's service account.
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// Reach the API server at this address instead of the one the kubeconfig or the pod's
    /// environment names: `HOST:PORT` (HTTPS; `[v6]:PORT` for IPv6) or a URL. On a cluster
    /// where podswitch is the Service proxy, the in-cluster address is a ClusterIP that
    /// nothing serves until podswitch has read the API: give the API server's own address
    /// (kubeadm: the control plane's advertise address, port 6443). The pod's service
    /// account token and CA are still used. Setting KUBERNETES_SERVICE_HOST and
    /// KUBERNETES_SERVICE_PORT in the DaemonSet does the same.
    #[arg(long, value_name = "HOST:PORT")]
    pub k8s_api_server: Option<String>,
}

/// Where the objects come from.
pub enum ObjectSource {
    Directory(PathBuf),
    Api(Box<kube::Config>),
}

impl std::fmt::Debug for ObjectSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ObjectSource::Directory(d) => write!(f, "Directory({})", d.display()),
            ObjectSource::Api(c) => write!(f, "Api({})", c.cluster_url),
        }
    }
}

impl KubeArgs {
    /// Chooses the object source: `--manifests DIR`, `--kubeconfig PATH`, or the in-cluster
    /// configuration when neither is given and `KUBERNETES_SERVICE_HOST`/`_PORT` are set.
    pub fn source(&self, manifests: Option<&Path>) -> Result<ObjectSource, SourceChoiceError> {
        let source = self.config_source(manifests)?;
        match (source, &self.k8s_api_server) {
            (ObjectSource::Directory(_), Some(_)) => Err(SourceChoiceError::ServerWithManifests),
            (ObjectSource::Api(mut config), Some(server)) => {
                config.cluster_url = api_server_url(server)?;
                Ok(ObjectSource::Api(config))
            }
            (source, None) => Ok(source),
        }
    }

    fn config_source(&self, manifests: Option<&Path>) -> Result<ObjectSource, SourceChoiceError> {
        match (manifests, &self.kubeconfig) {
            (Some(_), Some(_)) => Err(SourceChoiceError::Both),
            (Some(dir), None) => Ok(ObjectSource::Directory(dir.to_path_buf())),
            (None, Some(path)) => Ok(ObjectSource::Api(Box::new(kubeconfig(path)?))),
            (None, None) => {
                if std::env::var_os("KUBERNETES_SERVICE_HOST").is_none() || std::env::var_os("KUBERNETES_SERVICE_PORT").is_none() {
                    return Err(SourceChoiceError::None);
                }
                kube::Config::incluster()
                    .map(|c| ObjectSource::Api(Box::new(c)))
                    .map_err(|e| SourceChoiceError::InCluster(track::error_chain(&e)))
            }
        }
    }
}

/// The URL of `--k8s-api-server`: `HOST:PORT` is `https://HOST:PORT`; a URL is taken as it is.
fn api_server_url(text: &str) -> Result<http::Uri, SourceChoiceError> {
    let bad = |why: &str| SourceChoiceError::ApiServer { text: text.to_string(), why: why.to_string() };
    let url = if text.contains("://") { text.to_string() } else { format!("https://{text}") };
    let uri: http::Uri = url.parse().map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
    if !matches!(uri.scheme_str(), Some("https" | "http")) {
        return Err(bad("the scheme is not https or http"));
    }
    if uri.port_u16().is_none() {
        return Err(bad("no port (HOST:PORT, e.g. 192.0.2.10:6443)"));
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    Ok(uri)
}

/// Why no object source could be chosen.
#[derive(Debug, thiserror::Error)]
pub enum SourceChoiceError {
    #[error("--k8s-api-server {text:?}: {why}")]
    ApiServer { text: String, why: String },
    #[error("--k8s-api-server needs the Kubernetes API as the object source, not --manifests")]
    ServerWithManifests,
    #[error("--manifests and --kubeconfig exclude each other: give one")]
    Both,
    #[error(
        "no object source: give --manifests DIR or --kubeconfig PATH, or run the switch in a pod \
         (KUBERNETES_SERVICE_HOST/KUBERNETES_SERVICE_PORT are not set)"
    )]
    None,
    #[error("in-cluster Kubernetes configuration: {0}")]
    InCluster(String),
    #[error(transparent)]
    Kubeconfig(#[from] KubeconfigError),
}

/// Why a kubeconfig file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    /// The file or its current context; the text is the whole error chain.
    #[error("kubeconfig {path}: {chain}")]
    Read { path: PathBuf, chain: String },
    #[error("starting a runtime to read the kubeconfig: {0}")]
    Runtime(#[source] std::io::Error),
}

/// Reads a kubeconfig file (its current context).
pub fn kubeconfig(path: &Path) -> Result<kube::Config, KubeconfigError> {
    let read = |chain: String| KubeconfigError::Read { path: path.to_path_buf(), chain };
    let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| read(track::error_chain(&e)))?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(KubeconfigError::Runtime)?;
    rt.block_on(kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default()))
        .map_err(|e| read(track::error_chain(&e)))
}

/// Tuning; [`Options::default`] is what `podswitch run` uses.
#[derive(Debug, Clone)]
pub struct Options {
    /// The batching window: a change arriving within this time after a view waits for the
    /// window to end and goes out with everything else that arrived; one after a quiet window
    /// goes out at once.
    pub debounce: Duration,
    /// Objects per list page (`limit`); `None` lists everything at once.
    pub page_size: Option<u32>,
    /// How a watch waits before retrying after an error.
    pub retry: Retry,
    /// `timeoutSeconds` of each watch request (the server ends the watch then; it is resumed).
    pub watch_timeout_secs: u32,
    /// After an outage, how long views stay held once a watch is answered again. A resumed
    /// watch sends what happened meanwhile only after its request is answered, and nothing
    /// marks the end of that backlog; this lets every kind's backlog arrive so that one view
    /// carries the whole outage instead of one view per kind. Each kind's return restarts it.
    pub resume_settle: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            debounce: Duration::from_millis(20),
            page_size: Some(500),
            retry: Retry::Default,
            watch_timeout_secs: 290,
            resume_settle: Duration::from_millis(250),
        }
    }
}

/// How a watch waits before retrying after an error (the delay is reset by the next success).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// kube's `DefaultBackoff`, client-go's reflector's: 800 ms doubling with jitter up to 30 s,
    /// started over after two minutes without error.
    Default,
    /// Exponential with jitter from `min`, doubling up to `max` (tests: outages of a second).
    Exponential { min: Duration, max: Duration },
}

impl Retry {
    fn backoff(self) -> Box<dyn kube::runtime::utils::Backoff> {
        match self {
            Retry::Default => Box::new(DefaultBackoff::default()),
            Retry::Exponential { min, max } => {
                let b = backon::ExponentialBuilder::default()
                    .with_min_delay(min)
                    .with_max_delay(max.max(min))
                    .with_factor(2.0)
                    .with_jitter()
                    .without_max_times();
                Box::new(ResetTimerBackoff::new(ExponentialBackoff::from(b), Duration::from_secs(120)))
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KubeSourceError {
    #[error("starting the Kubernetes API source runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("creating the Kubernetes API client: {0}")]
    Client(String),
}

/// What one watched kind is doing.
#[derive(Debug, Clone, Default, Serialize)]
pub struct KindStatus {
    /// Objects in the store (the last complete list plus the changes since).
    pub objects: usize,
    /// The initial list has completed.
    pub listed: bool,
    /// A list is under way (initial or relist); no view goes out meanwhile.
    pub listing: bool,
    /// The last request for this kind got an answer. Views are held while some kind is cut
    /// off, so that a server coming back gives one view once every watch has resumed.
    pub connected: bool,
    /// Lists started after the first completed one (410 Gone, failed watches, ...).
    pub relists: u64,
    /// An optional kind the API server does not serve (its list found no such resource) or
    /// forbids: it counts as listed and empty.
    pub absent: bool,
    /// Watch or list errors seen.
    pub errors: u64,
    pub last_error: Option<String>,
}

/// The source's state, for `show status` and logs.
#[derive(Debug, Clone, Default, Serialize)]
pub struct KubeStatus {
    /// The API server URL.
    pub server: String,
    /// The last request to the API server got an answer.
    pub connected: bool,
    /// The last error (transport or API), kept after recovery; see `connected`.
    pub last_error: Option<String>,
    #[serde(serialize_with = "unix_seconds")]
    pub last_error_time: Option<SystemTime>,
    /// Errors so far: failed requests and watcher errors (one outage usually counts both).
    pub errors: u64,
    /// Every kind has completed its list, none is relisting and every kind's last request got
    /// an answer: views go out only then.
    pub synced: bool,
    /// Views sent so far, and when and with which digest the last one went.
    pub views: u64,
    #[serde(serialize_with = "unix_seconds")]
    pub last_view_time: Option<SystemTime>,
    pub last_digest: Option<String>,
    /// Relists seen, all kinds together.
    pub relists: u64,
    /// Per kind, by plural name (`pods`, `endpointslices`, ...).
    pub kinds: BTreeMap<String, KindStatus>,
}

fn unix_seconds<S: serde::Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok()) {
        Some(d) => s.serialize_some(&d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

#[derive(Default)]
struct State {
    connected: bool,
    errors: u64,
    last_error: Option<String>,
    last_error_time: Option<SystemTime>,
    views: u64,
    last_view_time: Option<SystemTime>,
    last_digest: Option<String>,
    /// Per kind, in [`kinds`] order.
    kinds: [KindStatus; COUNT],
    /// Keys of the objects each kind's watch changed since the last view was built.
    changed: ByKind<Keys>,
    /// A list (initial or relist) replaced some store since then: the keys above do not say
    /// everything that changed.
    changed_unknown: bool,
    /// The consumer could not apply an update: the next one is a whole view.
    need_full: bool,
    /// A kind's watch came back after an outage: views are held until then
    /// ([`Options::resume_settle`]).
    resume_hold_until: Option<tokio::time::Instant>,
}

struct Shared {
    server: String,
    state: Mutex<State>,
    changed: Notify,
    resume_settle: Duration,
    /// Told of every change a watch brings ([`KubeSource::on_change`]).
    on_change: std::sync::OnceLock<ChangeHook>,
}

/// What [`KubeSource::on_change`] calls.
type ChangeHook = Box<dyn Fn(SourceChange) + Send + Sync>;

/// What the [`KubeSource::on_change`] hook hears.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceChange {
    /// A watch brought a change (an object added, changed or deleted, a list completed): the
    /// views sent so far do not have it yet.
    Changed,
    /// The source looked and found nothing new since the last view sent (changes undone, a
    /// relist that found nothing new, a wake-up for nothing): no view follows, the last one
    /// sent is still the source's.
    Settled,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records an error, of the kind with this index if it is one kind's.
    fn error(&self, kind: Option<usize>, e: String) {
        let mut st = self.lock();
        if let Some(k) = kind {
            let ks = &mut st.kinds[k];
            ks.errors += 1;
            ks.last_error = Some(e.clone());
        }
        if st.last_error.as_ref() != Some(&e) {
            tracing::warn!(kind = kind.map_or("-", |k| PLURALS[k]), "Kubernetes API: {e}");
        }
        st.last_error = Some(e);
        st.last_error_time = Some(SystemTime::now());
        st.errors += 1;
    }
}

/// The index of the kind a request is about, from the last segment of its path (`.../v1/pods`).
fn kind_of_path(path: &str) -> Option<usize> {
    let last = path.trim_end_matches('/').rsplit('/').next()?;
    PLURALS.iter().position(|p| *p == last)
}

impl track::Observer for Shared {
    fn answered(&self, path: &str) {
        let mut st = self.lock();
        if !st.connected {
            tracing::info!(server = %self.server, "Kubernetes API reachable");
        }
        st.connected = true;
        let mut reconnected = false;
        if let Some(k) = kind_of_path(path) {
            let ks = &mut st.kinds[k];
            reconnected = !ks.connected && ks.listed;
            ks.connected = true;
        }
        if reconnected {
            st.resume_hold_until = Some(tokio::time::Instant::now() + self.resume_settle);
        }
        drop(st);
        if reconnected {
            // Views were held while this kind was cut off; its watch is back (and its backlog
            // on the way: the aggregator waits for it).
            self.changed.notify_one();
        }
    }

    fn failed(&self, path: &str, error: String) {
        let mut st = self.lock();
        st.connected = false;
        if let Some(k) = kind_of_path(path) {
            st.kinds[k].connected = false;
        }
        drop(st);
        self.error(None, error);
    }
}

/// The running source; dropping it stops the watches.
pub struct KubeSource {
    rx: Receiver<Update>,
    keeper: ViewKeeper,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// Starts watching with [`Options::default`].
pub fn start(config: kube::Config) -> Result<KubeSource, KubeSourceError> {
    start_with(config, Options::default())
}

/// Starts watching; returns once the client is built (the first view comes later, see
/// [`KubeSource::recv_timeout`]).
pub fn start_with(config: kube::Config, opts: Options) -> Result<KubeSource, KubeSourceError> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(KubeSourceError::Runtime)?;
    let shared = Arc::new(Shared {
        server: config.cluster_url.to_string(),
        state: Mutex::default(),
        changed: Notify::new(),
        resume_settle: opts.resume_settle,
        on_change: std::sync::OnceLock::new(),
    });
    let client = {
        let _guard = rt.enter();
        kube::client::ClientBuilder::try_from(config)
            .map_err(|e| KubeSourceError::Client(track::error_chain(&e)))?
            .with_layer(&track::TrackLayer(Arc::clone(&shared) as Arc<dyn track::Observer>))
            .build()
    };
    // Capacity one, and the sender drains before sending: the consumer finds the newest view.
    let (tx, rx) = channel::bounded(1);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let sh = Arc::clone(&shared);
    let drain = rx.clone();
    let thread = std::thread::Builder::new()
        .name("podswitch-kube".into())
        .spawn(move || {
            rt.block_on(async move {
                let stores = ByKind::make(&mut SpawnWatches { client: &client, shared: &sh, opts: &opts });
                tokio::select! {
                    _ = aggregate(Arc::clone(&sh), stores, tx, drain, opts.debounce) => {}
                    _ = stop_rx => {}
                }
            });
            // Dropping the runtime here cancels the watch tasks and closes their connections.
        })
        .map_err(KubeSourceError::Runtime)?;
    Ok(KubeSource { rx, keeper: ViewKeeper::default(), shared, stop: Some(stop_tx), thread: Some(thread) })
}

impl KubeSource {
    /// The next complete view, waiting at most `timeout`: the view held, updated by what the
    /// source sent (see [`view`]).
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<&Manifests, RecvTimeoutError> {
        let u = self.rx.recv_timeout(timeout)?;
        self.take(u).ok_or(RecvTimeoutError::Timeout)
    }

    /// As [`Self::recv_timeout`], but also returns (`Timeout`) as soon as `wake` fires (what
    /// `wake` carries is left for its owner to take).
    pub fn recv_timeout_or(&mut self, timeout: Duration, wake: &crossbeam::channel::Receiver<()>) -> Result<&Manifests, RecvTimeoutError> {
        let mut sel = crossbeam::channel::Select::new();
        let updates = sel.recv(&self.rx);
        sel.recv(wake);
        match sel.ready_timeout(timeout) {
            Ok(i) if i == updates => self.recv_timeout(Duration::ZERO),
            _ => Err(RecvTimeoutError::Timeout),
        }
    }

    /// The view held: the last complete view with every update taken in since.
    pub fn view(&self) -> &Manifests {
        self.keeper.view()
    }

    /// The next view if an update is waiting.
    pub fn try_recv(&mut self) -> Option<&Manifests> {
        let u = self.rx.try_recv().ok()?;
        self.take(u)
    }

    /// Applies an update to the view held; if it does not apply, asks the source for a whole
    /// view and returns None.
    fn take(&mut self, u: Update) -> Option<&Manifests> {
        if let Err(e) = self.keeper.apply(u) {
            tracing::warn!("{e}; asking the API source for a whole view");
            self.shared.lock().need_full = true;
            self.shared.changed.notify_one();
            return None;
        }
        Some(self.keeper.view())
    }

    pub fn status(&self) -> KubeStatus {
        self.status_handle().status()
    }

    /// Has `f` called, on the source's runtime, with [`SourceChange::Changed`] whenever a watch
    /// brings a change (before any view carries it), and with [`SourceChange::Settled`] when
    /// changes came to nothing and no view follows them. The health check marks the tables
    /// stale from the first and up to date at the second ([`crate::health::ProxyHealth`]).
    /// Only the first hook set is kept.
    pub fn on_change(&self, f: impl Fn(SourceChange) + Send + Sync + 'static) {
        let _ = self.shared.on_change.set(Box::new(f));
    }

    /// A handle that reads the status from elsewhere (`show status`, metrics) while the
    /// source itself stays with the loop that receives its views.
    pub fn status_handle(&self) -> StatusHandle {
        StatusHandle(Arc::clone(&self.shared))
    }

    /// Stops the watches and joins the thread.
    pub fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads a [`KubeSource`]'s status; cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct StatusHandle(Arc<Shared>);

impl std::fmt::Debug for StatusHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StatusHandle({})", self.0.server)
    }
}

impl StatusHandle {
    pub fn status(&self) -> KubeStatus {
        let shared = &self.0;
        let st = shared.lock();
        let kinds: BTreeMap<String, KindStatus> = PLURALS.iter().map(std::string::ToString::to_string).zip(st.kinds.iter().cloned()).collect();
        KubeStatus {
            server: shared.server.clone(),
            connected: st.connected,
            last_error: st.last_error.clone(),
            last_error_time: st.last_error_time,
            errors: st.errors,
            synced: synced(&st),
            views: st.views,
            last_view_time: st.last_view_time,
            last_digest: st.last_digest.clone(),
            relists: st.kinds.iter().map(|k| k.relists).sum(),
            kinds,
        }
    }

    /// Errors seen so far (transport and watch/list), for the metrics.
    pub fn errors(&self) -> u64 {
        self.0.lock().errors
    }
}

impl Drop for KubeSource {
    fn drop(&mut self) {
        self.stop();
    }
}

fn synced(st: &State) -> bool {
    st.kinds.iter().all(|k| k.listed && !k.listing && k.connected)
}

/// A reflector store per kind ([`Stores`]).
pub struct StoreOf;
impl Family for StoreOf {
    type Of<K: Kind> = Store<K>;
}

/// A reflector store's writing end per kind ([`StoreWriters`]).
pub struct WriterOf;
impl Family for WriterOf {
    type Of<K: Kind> = reflector::store::Writer<K>;
}

/// The reflector stores, one per kind, which the watchers fill; views are built from them
/// ([`ViewBuilder`]).
pub type Stores = ByKind<StoreOf>;

/// The writing ends of a [`Stores`] filled by hand instead of by watchers: for tests and the
/// sync benchmark, which build views from stores as this source does.
pub struct StoreWriters(ByKind<WriterOf>);

impl StoreWriters {
    /// Empty stores and their writers.
    pub fn new() -> (Self, Stores) {
        struct Readers<'a>(&'a ByKind<WriterOf>);
        impl MakeEach<StoreOf> for Readers<'_> {
            fn make<K: Kind>(&mut self) -> Store<K> {
                K::of(self.0).as_reader()
            }
        }
        let w = ByKind::<WriterOf>::default();
        let s = ByKind::make(&mut Readers(&w));
        (StoreWriters(w), s)
    }

    /// Applies every object of `m` as a watch event (`Apply`) would: added, or replacing the
    /// object of the same key.
    pub fn apply(&mut self, m: &Manifests) {
        self.events(m, false);
    }

    /// Removes every object of `m` as a watch event (`Delete`) would.
    pub fn delete(&mut self, m: &Manifests) {
        self.events(m, true);
    }

    /// One `Apply` (or `Delete`) event per object of `m`.
    fn events(&mut self, m: &Manifests, delete: bool) {
        struct Events<'a>(&'a mut ByKind<WriterOf>, &'a Manifests, bool);
        impl EachKind for Events<'_> {
            fn kind<K: Kind>(&mut self) {
                let w = K::of_mut(self.0);
                for o in K::of(&self.1.objects).values() {
                    let mut o = (**o).clone();
                    o.reduce();
                    w.apply_watcher_event(&if self.2 { Event::Delete(o) } else { Event::Apply(o) });
                }
            }
        }
        kinds::each_kind(&mut Events(&mut self.0, m, delete));
    }
}

/// Starts the watch of every kind ([`spawn_kind`]).
struct SpawnWatches<'a> {
    client: &'a Client,
    shared: &'a Arc<Shared>,
    opts: &'a Options,
}

impl MakeEach<StoreOf> for SpawnWatches<'_> {
    fn make<K: Kind>(&mut self) -> Store<K> {
        spawn_kind::<K>(self.client, self.shared, self.opts)
    }
}

/// Starts the watcher of one kind; returns its store (which changes only as a whole on a
/// completed list, or by single Apply/Delete events while watching).
fn spawn_kind<K: Kind>(client: &Client, shared: &Arc<Shared>, opts: &Options) -> Store<K> {
    let (store, mut writer) = reflector::store::<K>();
    let api: Api<K> = Api::all(client.clone());
    let wc = watcher::Config { page_size: opts.page_size, timeout: Some(opts.watch_timeout_secs), ..watcher::Config::default() };
    let backoff = opts.retry.backoff();
    let shared = Arc::clone(shared);
    let reader = store.clone();
    tokio::spawn(async move {
        let mut events = watcher(api, wc)
            .modify(|o: &mut K| o.reduce())
            .backoff(backoff)
            .boxed();
        while let Some(ev) = events.next().await {
            match ev {
                Ok(ev) => {
                    writer.apply_watcher_event(&ev);
                    let mut guard = shared.lock();
                    let st = &mut *guard;
                    let ks = &mut st.kinds[K::INDEX];
                    let changed = match &ev {
                        Event::Init => {
                            if ks.listed {
                                ks.relists += 1;
                                tracing::info!(kind = K::PLURAL, "relisting; views are held until the list completes");
                            }
                            ks.listing = true;
                            st.changed_unknown = true;
                            false
                        }
                        Event::InitApply(_) => false,
                        Event::InitDone => {
                            ks.listing = false;
                            ks.listed = true;
                            ks.absent = false;
                            st.changed_unknown = true;
                            true
                        }
                        Event::Apply(o) | Event::Delete(o) => {
                            // Recorded after the store has the change: a view built after the
                            // aggregator took these keys has it, one built before lists it next.
                            K::of_mut(&mut st.changed).insert(key_of(o));
                            true
                        }
                    };
                    st.kinds[K::INDEX].objects = reader.len();
                    drop(guard);
                    if changed {
                        if let Some(f) = shared.on_change.get() {
                            f(SourceChange::Changed);
                        }
                        shared.changed.notify_one();
                    }
                }
                Err(watcher::Error::InitialListFailed(kube::Error::Api(status))) if K::OPTIONAL && matches!(status.code, 403 | 404) => {
                    // The cluster does not serve this kind (404), or the switch may not read
                    // it (403: an RBAC role from before the kind was added; said as an error):
                    // an empty list. The watcher asks again after its backoff, and a later
                    // answer lists it as any list.
                    if status.code == 403 {
                        shared.error(Some(K::INDEX), format!("{}: forbidden ({}); taken as empty", K::PLURAL, status.message));
                    }
                    writer.apply_watcher_event(&Event::Init);
                    writer.apply_watcher_event(&Event::InitDone);
                    let mut guard = shared.lock();
                    let st = &mut *guard;
                    let ks = &mut st.kinds[K::INDEX];
                    let news = !ks.listed || ks.listing || !ks.absent || ks.objects != 0;
                    if !ks.absent {
                        tracing::info!(kind = K::PLURAL, "the API server does not serve this kind; taken as empty");
                    }
                    (ks.listed, ks.listing, ks.absent, ks.objects) = (true, false, true, 0);
                    if news {
                        st.changed_unknown = true;
                        drop(guard);
                        shared.changed.notify_one();
                    }
                }
                Err(e) => {
                    // These errors send the watcher back to a fresh list (its next event is
                    // Init, after the backoff): hold views from now, not from then.
                    let relist = match &e {
                        watcher::Error::WatchError(s) => s.code == 410,
                        watcher::Error::InitialListFailed(_) | watcher::Error::NoResourceVersion => true,
                        watcher::Error::WatchStartFailed(_) | watcher::Error::WatchFailed(_) => false,
                    };
                    if relist {
                        shared.lock().kinds[K::INDEX].listing = true;
                    }
                    shared.error(Some(K::INDEX), format!("{}: {}", K::PLURAL, describe(&e)));
                    if matches!(&e, watcher::Error::WatchError(s) if s.code == 410) {
                        tracing::info!(kind = K::PLURAL, "410 Gone: the watch's resourceVersion is too old, relisting");
                    }
                }
            }
        }
    });
    store
}

/// A watcher error in one line; API statuses with their code (`410 Expired: too old ...`).
fn describe(e: &watcher::Error) -> String {
    match e {
        watcher::Error::WatchError(s) => format!("watch error {} {}: {}", s.code, s.reason, s.message),
        e => track::error_chain(e),
    }
}

async fn aggregate(shared: Arc<Shared>, stores: Stores, tx: Sender<Update>, drain: Receiver<Update>, debounce: Duration) {
    let mut builder = ViewBuilder::default();
    let mut window_start: Option<tokio::time::Instant> = None;
    loop {
        shared.changed.notified().await;
        // Within a window after the last view: wait for its end, taking in what else arrives.
        if let Some(start) = window_start {
            tokio::time::sleep_until(start + debounce).await;
        }
        // After an outage: until every returned watch's backlog had time to arrive.
        loop {
            let hold = shared.lock().resume_hold_until; // the guard goes before the sleep
            match hold {
                Some(until) if until > tokio::time::Instant::now() => tokio::time::sleep_until(until).await,
                _ => break,
            }
        }
        if !synced(&shared.lock()) {
            continue; // the list under way notifies again when it completes
        }
        // The keys first, then the stores (see where they are recorded).
        let (keys, full, asked) = {
            let mut st = shared.lock();
            let keys = std::mem::take(&mut st.changed);
            let unknown = std::mem::replace(&mut st.changed_unknown, false);
            let asked = std::mem::replace(&mut st.need_full, false);
            (keys, unknown || asked || st.last_digest.is_none(), asked)
        };
        let mut update = if full { Update::Full(builder.full(&stores)) } else { Update::Delta(builder.delta(&stores, keys)) };
        // Nothing new (bookmarks, relists that found nothing, changes undone), unless the
        // consumer asked for a whole view.
        if !asked && shared.lock().last_digest.as_deref() == Some(update.digest()) {
            if let Some(f) = shared.on_change.get() {
                f(SourceChange::Settled);
            }
            continue;
        }
        let digest = update.digest().to_string();
        let counts = match &update {
            Update::Full(m) => m.objects.counts(),
            Update::Delta(d) => d.changes.keys.counts(),
        };
        // The status says what the consumer is about to get, before it can get it.
        let mut st = shared.lock();
        st.views += 1;
        st.last_view_time = Some(SystemTime::now());
        st.last_digest = Some(digest.clone());
        drop(st);
        while let Ok(old) = drain.try_recv() {
            // Not taken: the consumer gets both in one.
            update = old.merge(update);
        }
        let whole = matches!(update, Update::Full(_));
        window_start = Some(tokio::time::Instant::now());
        if tx.try_send(update).is_err() {
            return; // cannot happen: we hold a receiver and just emptied the channel
        }
        tracing::debug!(%digest, ?counts, whole, "Kubernetes API update");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_retry_grows_from_min_to_max() {
        let min = Duration::from_millis(100);
        let max = Duration::from_millis(1000);
        let d: Vec<Duration> = Retry::Exponential { min, max }.backoff().take(8).collect();
        assert!(d[0] >= min && d[0] <= 2 * min, "{d:?}");
        assert!(d.iter().all(|x| *x <= 2 * max), "{d:?}");
        assert!(d[7] >= max, "{d:?}");
    }

    #[test]
    fn request_paths_map_to_kinds() {
        use crate::manifests::kinds::{EndpointSlice, Pod};
        use k8s_openapi::api::networking::v1::NetworkPolicy;
        assert_eq!(kind_of_path("/api/v1/pods"), Some(Pod::INDEX));
        assert_eq!(kind_of_path("/k8s/clusters/c-1/apis/discovery.k8s.io/v1/endpointslices"), Some(EndpointSlice::INDEX));
        assert_eq!(kind_of_path("/apis/networking.k8s.io/v1/networkpolicies/"), Some(NetworkPolicy::INDEX));
        assert_eq!(kind_of_path("/version"), None);
    }

    #[test]
    fn source_choice() {
        let none = KubeArgs::default();
        assert!(matches!(none.source(Some(Path::new("/d"))), Ok(ObjectSource::Directory(_))));
        let both = KubeArgs { kubeconfig: Some("/k".into()), ..KubeArgs::default() };
        assert!(both.source(Some(Path::new("/d"))).unwrap_err().to_string().contains("exclude each other"));
        let missing = KubeArgs { kubeconfig: Some("/nonexistent/kubeconfig".into()), ..KubeArgs::default() };
        assert!(missing.source(None).unwrap_err().to_string().contains("/nonexistent/kubeconfig"));
    }

    #[test]
    fn api_server_address_replaces_the_configured_one() {
        assert_eq!(api_server_url("192.0.2.10:6443").unwrap().to_string(), "https://192.0.2.10:6443/");
        assert_eq!(api_server_url("[2001:db8::1]:6443").unwrap().to_string(), "https://[2001:db8::1]:6443/");
        assert_eq!(api_server_url("http://127.0.0.1:8080").unwrap().to_string(), "http://127.0.0.1:8080/");
        for (bad, why) in [("192.0.2.10", "no port"), ("ftp://h:21", "scheme"), ("a b:1", "invalid"), (":6443", "")] {
            let e = api_server_url(bad).unwrap_err().to_string();
            assert!(e.starts_with(&format!("--k8s-api-server {bad:?}: ")) && e.contains(why), "{bad}: {e}");
        }
        let dir = std::env::temp_dir().join(format!("podswitch-apiserver-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config");
        std::fs::write(
            &path,
            "apiVersion: v1\nkind: Config\ncurrent-context: lab\n\
             clusters: [{name: lab, cluster: {server: 'https://10.96.0.1:443'}}]\n\
             users: [{name: u, user: {token: abc}}]\n\
             contexts: [{name: lab, context: {cluster: lab, user: u}}]\n",
        )
        .unwrap();
        let args = KubeArgs { kubeconfig: Some(path), k8s_api_server: Some("192.0.2.10:6443".into()) };
        match args.source(None).unwrap() {
            ObjectSource::Api(c) => assert_eq!(c.cluster_url.to_string(), "https://192.0.2.10:6443/"),
            other @ ObjectSource::Directory(_) => panic!("{other:?}"),
        }
        let with_dir = KubeArgs { kubeconfig: None, k8s_api_server: Some("192.0.2.10:6443".into()) };
        assert!(with_dir.source(Some(Path::new("/d"))).unwrap_err().to_string().contains("not --manifests"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn kubeconfig_file_is_read() {
        let dir = std::env::temp_dir().join(format!("podswitch-kubeconfig-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config");
        std::fs::write(
            &path,
            "apiVersion: v1\nkind: Config\ncurrent-context: lab\n\
             clusters: [{name: lab, cluster: {server: 'http://127.0.0.1:6443'}}]\n\
             users: [{name: u, user: {token: abc}}]\n\
             contexts: [{name: lab, context: {cluster: lab, user: u, namespace: x}}]\n",
        )
        .unwrap();
        let c = kubeconfig(&path).unwrap();
        assert_eq!(c.cluster_url.to_string(), "http://127.0.0.1:6443/");
        assert_eq!(c.default_namespace, "x");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
