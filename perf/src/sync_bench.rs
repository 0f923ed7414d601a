//! `podswitch-perf sync`: from Kubernetes objects to tables in force, at cluster scale.
//!
//! What it measures, on one core, with the code `podswitch run` uses for every view it applies
//! (Service compile, NetworkPolicy compile, table build, publish into an `ArcSwap` as the
//! dataplane's is):
//! - full sync: 10,000 Services with 10 endpoints each (one EndpointSlice per Service) and
//!   1,000 NetworkPolicies over 10,000 pods in 100 namespaces;
//! - one change: an EndpointSlice loses one endpoint and gains another; the delay from the
//!   changed view to the new tables being published (p50, p99 over `--changes` changes).
//!
//! Views are built as the API source builds them (`podswitch run --kubeconfig`): objects sit in
//! reflector stores (filled before the clock starts, as watch events fill them). The full
//! sync's view is made from all the stores (`kube_source::ViewBuilder::full`: keys, maps,
//! digest; objects are shared, not copied); a change's update carries only the objects whose
//! keys the watch reported (`ViewBuilder::delta`), which the consumer applies to the view it
//! holds (`ViewKeeper`). The figures include that as their first step ("view"). Objects carry a
//! `metadata.resourceVersion`, and the compilers are told to trust it. `--content-hash` leaves
//! the versions out, so that every object is fingerprinted by content: the manifest source,
//! whose views come from files (reading them is not timed; the view step is then 0).
//! Each changed view lists the keys that changed since the previous one, as the API source's
//! views do (`Manifests::changes`); `--no-changes` leaves that out, so that every step compares
//! every object (by resourceVersion, or by content with `--content-hash`).
//!
//! Not included: the watch event's way from the API server into the store (a local HTTP
//! stream), and the source's batching window (`kube_source::Options::debounce`): a change
//! after a quiet window goes out at once, further changes within the window wait for its end
//! and go out together. `update_from_view_*` give the figures without the view step.
//!
//! Memory: `max_rss_mb` is the process's peak resident set (`VmHWM`), which is the agent's:
//! the generator makes one object's YAML at a time and hands it over as a watch event would
//! (the whole cluster's text or parsed input is never held), so what the process holds is what
//! `podswitch run` holds for these objects: the source's stores (or the manifest source's view),
//! the view, the compilers' state and the tables, plus the program itself (`rss_mb.start`).
//! `rss_mb` gives the resident set at each stage: at start, with the objects stored, after the
//! full sync (and after each of its steps: `after_full_sync_step`, read between the steps and
//! left out of their times), at the end (after the changes), and `memory_by_table_mb`
//! what `show status` reports by table after the full sync (estimates from what each table
//! holds, `podswitch_control::memory`; the compilers' caches are in the resident set only).
//!
//! Time: `full_sync_ms` is wall time; `full_sync_cpu_ms` the process's CPU time over the same
//! span (every thread, including the reading of the resident set between steps; 10 ms ticks):
//! the Services step compiles on every core the process may use (`services::compile`, step
//! 4), so on an idle machine the CPU time exceeds the wall time, and on a loaded one it shows
//! the work when the wall time also shows the wait. `cores` is how many cores the process may
//! use (`taskset` narrows it): `podswitch run` keeps its control threads off the workers'
//! cores, so an agent with one control core compiles on one (`taskset -c 0` gives that figure).
//! As in `podswitch run`, a whole view (the full sync) compiles the policy on a second thread
//! while the Services compile (`podswitch_control::side_by_side`): then the `services` step is
//! the wall time of both, `policy` the policy compile's own time (within it), and the memory
//! read after `services` includes the policy's. A change compiles them one after the other.
//!
//! Output: a report, or with `--json` one JSON object as the last line:
//! `{"full_sync_ms":…,"update_p50_us":…,"update_p99_us":…}` and more keys after.
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use podswitch_control::compile;
use podswitch_control::side_by_side;
use podswitch_control::kube_source::{StoreWriters, Update, ViewBuilder, ViewKeeper};
use podswitch_control::manifests::{add_documents, ByKind, Changes, Keys, Manifests};
use podswitch_control::memory::MemoryByTable;
use podswitch_control::model::{self, NodeInfo};
use podswitch_control::pods::PodCache;
use podswitch_control::policy::{compile_policy_unless_unchanged, CompiledPolicy, PolicyInputs, PolicyState};
use podswitch_control::services::{compile_services, ServiceInputs, ServiceState};
use switch::tables::Tables;

#[derive(Debug, clap::Args)]
pub struct SyncArgs {
    #[arg(long, default_value_t = 10_000)]
    services: u32,
    #[arg(long, default_value_t = 10)]
    endpoints: u32,
    #[arg(long, default_value_t = 10_000)]
    pods: u32,
    #[arg(long, default_value_t = 1000)]
    policies: u32,
    #[arg(long, default_value_t = 100)]
    namespaces: u32,
    /// EndpointSlice changes to time.
    #[arg(long, default_value_t = 20)]
    changes: u32,
    /// Objects without resourceVersion: the Service compiler hashes what it reads of each one.
    #[arg(long)]
    content_hash: bool,
    /// Views without the list of changed keys: every object is compared.
    #[arg(long)]
    no_changes: bool,
    #[arg(long)]
    json: bool,
}

fn pod_ip(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 244, 0, 2)) + i)
}

/// `resourceVersion: "N", ` unless `--content-hash`.
fn rv(a: &SyncArgs, n: u32) -> String {
    if a.content_hash {
        String::new()
    } else {
        format!("resourceVersion: \"{n}\", ")
    }
}

fn slice_yaml(a: &SyncArgs, s: u32, shift: u32) -> String {
    let ns = s % a.namespaces;
    let mut eps = String::new();
    for k in 0..a.endpoints {
        let p = (s * a.endpoints + k + shift) % a.pods;
        eps += &format!("- addresses: [\"{}\"]\n  conditions: {{ready: true}}\n  nodeName: node-{}\n", pod_ip(p), 1 + p % 10);
    }
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{{}name: svc{s}-abc, namespace: ns{ns}, labels: {{kubernetes.io/service-name: svc{s}}}}}\n\
         addressType: IPv4\nports: [{{name: http, port: 8080, protocol: TCP}}]\nendpoints:\n{eps}---\n",
        rv(a, 1 + shift)
    )
}

/// Every object of the cluster, one YAML document at a time, in the order a list gives them
/// (Node, Namespaces, Pods, Services with their EndpointSlices, NetworkPolicies): the whole
/// text is never held, so that the process's memory is the agent's, not the generator's.
fn each_object(a: &SyncArgs, mut f: impl FnMut(&str) -> anyhow::Result<()>) -> anyhow::Result<()> {
    let v = rv(a, 1);
    f("apiVersion: v1\nkind: Node\nmetadata: {name: node-1}\nspec: {podCIDR: 10.244.0.0/16}\nstatus: {addresses: [{type: InternalIP, address: 172.18.0.2}]}\n")?;
    for n in 0..a.namespaces {
        f(&format!("apiVersion: v1\nkind: Namespace\nmetadata: {{{v}name: ns{n}, labels: {{team: t{}}}}}\n", n % 10))?;
    }
    for i in 0..a.pods {
        f(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{{v}name: p{i}, namespace: ns{}, labels: {{app: app{}, tier: t{}}}}}\n\
             spec: {{nodeName: node-{}, containers: [{{name: c, image: i, ports: [{{name: http, containerPort: 8080}}]}}]}}\nstatus: {{podIP: {}}}\n",
            i % a.namespaces,
            i % 50,
            i % 3,
            1 + i % 10,
            pod_ip(i)
        ))?;
    }
    for s in 0..a.services {
        let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 1, 0)) + s);
        f(&format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{{v}name: svc{s}, namespace: ns{}}}\nspec: {{clusterIP: {ip}, ports: [{{name: http, port: 80, targetPort: 8080}}]}}\n",
            s % a.namespaces
        ))?;
        f(&slice_yaml(a, s, 0))?;
    }
    for p in 0..a.policies {
        f(&format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{{v}name: pol{p}, namespace: ns{}}}\n\
             spec:\n  podSelector: {{matchLabels: {{app: app{}}}}}\n  ingress:\n  - from:\n    - namespaceSelector: {{matchLabels: {{team: t{}}}}}\n      podSelector: {{matchLabels: {{tier: t{}}}}}\n    ports: [{{port: http}}]\n",
            p % a.namespaces,
            p % 50,
            p % 10,
            p % 3
        ))?;
    }
    Ok(())
}

/// `VmRSS` and `VmHWM` (the peak) of this process, in MiB, from /proc/self/status.
fn rss_mib() -> anyhow::Result<(f64, f64)> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let field = |name: &str| -> anyhow::Result<f64> {
        let line = status.lines().find(|l| l.starts_with(name)).ok_or_else(|| anyhow::anyhow!("/proc/self/status has no {name}"))?;
        let kib: f64 = line[name.len()..].trim().trim_end_matches("kB").trim().parse()?;
        Ok(kib / 1024.0)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// CPU time of this process so far (every thread, user and system), in ms, from
/// /proc/self/stat (clock ticks of 10 ms: Linux's USER_HZ is 100).
fn cpu_ms() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the command name (which is in parentheses and may hold spaces): state is
    // the first, utime the 12th, stime the 13th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).ok_or_else(|| anyhow::anyhow!("/proc/self/stat: no command name"))?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<f64> { Ok(f.get(i).ok_or_else(|| anyhow::anyhow!("/proc/self/stat: short"))?.parse::<f64>()?) };
    Ok((ticks(11)? + ticks(12)?) * 10.0)
}

/// Everything `Switch::apply` does with a view, from objects to the published snapshot
/// (the dataplane's port attachment aside, which a view of unchanged pods does not touch).
/// Time spent per step of one apply.
#[derive(Debug, Default, Clone, Copy)]
struct Steps {
    view: Duration,
    pods: Duration,
    services: Duration,
    policy: Duration,
    publish: Duration,
    /// Time spent reading the resident set between steps (not part of any step).
    reading: Duration,
}

/// What `Switch` keeps between views.
struct State {
    pods: PodCache,
    /// The port part of the tables and the pod generation it was built from (no port is
    /// attached here, so it holds no pod route: the part is what `run` rebuilds on pod changes).
    ports: Option<(u64, compile::PortTables)>,
    svc: ServiceState,
    pol: PolicyState,
    policy: Option<CompiledPolicy>,
}

/// The resident set after each step of an apply (`memory`), read between the steps: the time
/// spent reading it is left out of the steps' times and returned (`Steps::reading`).
fn apply(
    m: &Manifests,
    node: &NodeInfo,
    st: &mut State,
    version: u64,
    published: &ArcSwap<Tables>,
    mut memory: Option<&mut Vec<(&'static str, f64)>>,
) -> anyhow::Result<Steps> {
    let mut reading = Duration::ZERO;
    // Records the resident set after `step`; the clock restarts after the reading.
    let mut mark = |step: &'static str| -> anyhow::Result<Instant> {
        if let Some(mem) = memory.as_deref_mut() {
            let t = Instant::now();
            mem.push((step, rss_mib()?.0));
            reading += t.elapsed();
        }
        Ok(Instant::now())
    };
    let t0 = Instant::now();
    st.pods.update(m);
    let generation = st.pods.generation();
    if st.ports.as_ref().is_none_or(|(g, _)| *g != generation) {
        let local = st.pods.local_pods(node).map_err(|e| anyhow::anyhow!(e))?;
        let desired = compile::desired_ports(node, &local, None).0;
        st.ports = Some((generation, compile::PortTables::build(node, &desired, &Default::default(), [0; 6], None)));
    }
    let all_pods = st.pods.all();
    let pods = t0.elapsed();
    let t1 = mark("pods")?;
    let whole_view = st.policy.is_none() || m.changes.is_none();
    let (svc, pol) = (&mut st.svc, &mut st.pol);
    let (s, (p, policy)) = side_by_side::both(
        whole_view,
        || compile_services(&ServiceInputs { manifests: m, node, all_pods }, svc),
        || {
            let t = Instant::now();
            let p = compile_policy_unless_unchanged(&PolicyInputs { manifests: m, node, all_pods }, generation, pol);
            (p, t.elapsed())
        },
    );
    if let Some(p) = p {
        st.policy = Some(p);
    }
    // Side by side, the Services step is the wall time of both; else the policy's own time is
    // left out of it.
    let services = if whole_view { t1.elapsed() } else { t1.elapsed().saturating_sub(policy) };
    mark("services")?;
    let t3 = mark("policy")?;
    let t = compile::assemble(compile::Parts {
        version,
        ports: &st.ports.as_ref().expect("made above").1,
        services: &s.tables,
        policy: &st.policy.as_ref().expect("the first view compiles").tables,
    });
    published.store(Arc::new(t));
    let publish = t3.elapsed();
    mark("tables_and_publish")?;
    Ok(Steps { view: Duration::ZERO, pods, services, policy, publish, reading })
}

pub fn main(a: SyncArgs) -> anyhow::Result<i32> {
    eprintln!("sync: generating {} Services x {} endpoints, {} policies over {} pods", a.services, a.endpoints, a.policies, a.pods);
    let (rss_start, _) = rss_mib()?;
    // The objects arrive one at a time, as a watch's list delivers them: into the API source's
    // stores (copied there as its watches' events copy them), or, with `--content-hash`, into
    // the manifest source's view (which is what that source holds). Not timed.
    let api = !a.content_hash;
    let (mut writers, stores) = StoreWriters::new();
    let mut m = Manifests::default();
    let mut node = None;
    each_object(&a, |doc| {
        if api {
            let mut one = Manifests::default();
            add_documents(&mut one, Path::new("sync.yaml"), doc).map_err(|e| anyhow::anyhow!("{e}"))?;
            if !one.nodes.is_empty() {
                node = Some(model::node_info(&one, None).map_err(|e| anyhow::anyhow!(e))?);
            }
            writers.apply(&one);
        } else {
            add_documents(&mut m, Path::new("sync.yaml"), doc).map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        Ok(())
    })?;
    let node = match node {
        Some(n) => n,
        None => model::node_info(&m, None).map_err(|e| anyhow::anyhow!(e))?,
    };
    if !api {
        m.digest = "full".into();
    }
    let (rss_objects, _) = rss_mib()?;
    let published = ArcSwap::from_pointee(Tables::new(Ipv4Addr::new(169, 254, 1, 1)));
    let mut st = State {
        pods: PodCache::default().with_resource_versions(!a.content_hash),
        ports: None,
        svc: ServiceState::default().with_resource_versions(!a.content_hash),
        pol: PolicyState::default(),
        policy: None,
    };
    // The API source's two sides: the builder makes updates from the stores, the keeper holds
    // the consumer's view and applies them (`kube_source::view`).
    let mut builder = ViewBuilder::default();
    let mut keeper = ViewKeeper::default();
    let cpu_before = cpu_ms()?;
    let t = Instant::now();
    if api {
        keeper.apply(Update::Full(builder.full(&stores))).map_err(|e| anyhow::anyhow!(e))?;
    }
    let view = t.elapsed();
    let (rss_view, _) = rss_mib()?;
    let mut memory = vec![("view", rss_view)];
    // The clock goes on from where the view was made, without the reading.
    let t = Instant::now() - view;
    let mut steps = apply(if api { keeper.view() } else { &m }, &node, &mut st, 1, &published, Some(&mut memory))?;
    let full = t.elapsed() - steps.reading;
    let full_cpu = cpu_ms()? - cpu_before;
    steps.view = view;
    let (rss_synced, _) = rss_mib()?;
    // What `show status` and the metrics report (no connection table here).
    let objects_bytes = if api { keeper.view() } else { &m }.footprint.iter().sum();
    let by_table = MemoryByTable::of(&published.load(), objects_bytes, 0);
    let frontends = published.load().services.frontends.len();
    eprintln!("sync: full sync {:.1} ms ({frontends} frontends); timing {} EndpointSlice changes", full.as_secs_f64() * 1e3, a.changes);
    let mut times: Vec<Duration> = Vec::new();
    let mut update_steps: Vec<Steps> = Vec::new();
    // From the view in hand to the tables in force.
    let mut from_view: Vec<Duration> = Vec::new();
    for c in 0..a.changes {
        let s = (c * 7919) % a.services;
        let mut one = Manifests::default();
        add_documents(&mut one, Path::new("change.yaml"), &slice_yaml(&a, s, c + 1)).map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut changes = Changes { since: m.digest.clone(), ..Changes::default() };
        changes.keys.endpoint_slices.extend(one.endpoint_slices.keys().cloned());
        let changes = (!a.no_changes).then_some(changes);
        let slice_keys: std::collections::BTreeSet<String> = one.endpoint_slices.keys().cloned().collect();
        if api {
            writers.apply(&one); // the watch event (not timed)
        } else {
            m.endpoint_slices.extend(one.objects.endpoint_slices);
            m.digest = format!("change {c}");
            m.changes = changes.clone();
        }
        let t = Instant::now();
        if api {
            // What the watch reported: the slice's key; the update carries that object only.
            let keys = ByKind::<Keys> { endpoint_slices: slice_keys, ..Default::default() };
            keeper.apply(Update::Delta(builder.delta(&stores, keys))).map_err(|e| anyhow::anyhow!(e))?;
            if a.no_changes {
                keeper.forget_changes();
            }
        }
        let view = t.elapsed();
        let mut s = apply(if api { keeper.view() } else { &m }, &node, &mut st, 2 + c as u64, &published, None)?;
        times.push(t.elapsed());
        from_view.push(t.elapsed() - view);
        s.view = view;
        update_steps.push(s);
    }
    let (rss_end, max_rss) = rss_mib()?;
    times.sort();
    let at = |v: &[Duration], p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1e6;
    let pct = |p: f64| at(&times, p);
    from_view.sort();
    let (fv50, fv99) = (at(&from_view, 0.5), at(&from_view, 0.99));
    // Per step of an update: (p50, p99) in us.
    let step = |f: fn(&Steps) -> Duration| {
        let mut v: Vec<Duration> = update_steps.iter().map(f).collect();
        v.sort();
        (at(&v, 0.5), at(&v, 0.99))
    };
    let (u_view, u_pods, u_svc, u_pol, u_pub) =
        (step(|s| s.view), step(|s| s.pods), step(|s| s.services), step(|s| s.policy), step(|s| s.publish));
    let report = serde_json::json!({
        "full_sync_ms": (full.as_secs_f64() * 1e4).round() / 10.0,
        "full_sync_cpu_ms": full_cpu,
        "cores": std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
        "update_p50_us": pct(0.5).round(),
        "update_p99_us": pct(0.99).round(),
        "update_from_view_p50_us": fv50.round(),
        "update_from_view_p99_us": fv99.round(),
        "services": a.services,
        "endpoints": a.services * a.endpoints,
        "policies": a.policies,
        "pods": a.pods,
        "changes": a.changes,
        "frontends": frontends,
        "incremental": true,
        "resource_versions": !a.content_hash,
        "changed_keys": !a.no_changes,
        "views_from_stores": api,
        "max_rss_mb": max_rss.round(),
        "memory_by_table_mb": by_table.by_table().iter().filter(|(t, _)| *t != "conntrack").map(|(t, b)| (t.to_string(), serde_json::json!((*b as f64 / (1u64 << 20) as f64).round()))).collect::<serde_json::Map<_, _>>(),
        "rss_mb": {
            "start": rss_start.round(),
            "objects": rss_objects.round(),
            "after_full_sync": rss_synced.round(),
            "after_full_sync_step": memory.iter().map(|(k, v)| (k.to_string(), serde_json::json!(v.round()))).collect::<serde_json::Map<_, _>>(),
            "end": rss_end.round(),
        },
        "full_sync_steps_ms": {
            "view": steps.view.as_secs_f64() * 1e3,
            "pods": steps.pods.as_secs_f64() * 1e3,
            "services": steps.services.as_secs_f64() * 1e3,
            "policy": steps.policy.as_secs_f64() * 1e3,
            "tables_and_publish": steps.publish.as_secs_f64() * 1e3,
        },
        "update_steps_p50_us": {"view": u_view.0.round(), "pods": u_pods.0.round(), "services": u_svc.0.round(), "policy": u_pol.0.round(), "tables_and_publish": u_pub.0.round()},
        "update_steps_p99_us": {"view": u_view.1.round(), "pods": u_pods.1.round(), "services": u_svc.1.round(), "policy": u_pol.1.round(), "tables_and_publish": u_pub.1.round()},
    });
    if a.json {
        println!("{report}");
    } else {
        println!("sync: {} Services x {} endpoints, {} policies over {} pods", a.services, a.endpoints, a.policies, a.pods);
        println!(
            "  full sync, objects to tables in force: {:.1} ms (view {:.0}, pods {:.0}, Services {:.0}, policies {:.0}, tables and publish {:.0})",
            full.as_secs_f64() * 1e3,
            steps.view.as_secs_f64() * 1e3,
            steps.pods.as_secs_f64() * 1e3,
            steps.services.as_secs_f64() * 1e3,
            steps.policy.as_secs_f64() * 1e3,
            steps.publish.as_secs_f64() * 1e3
        );
        println!("    CPU time of the full sync, every thread: {full_cpu:.0} ms (the Services step runs on every core this process may use)");
        println!(
            "  one EndpointSlice change to tables in force: p50 {:.0} us, p99 {:.0} us ({} changes); from the view in hand: p50 {:.0} us, p99 {:.0} us",
            pct(0.5),
            pct(0.99),
            a.changes,
            fv50,
            fv99
        );
        println!(
            "    per step, p50/p99 us: view {:.0}/{:.0}, pods {:.0}/{:.0}, Services {:.0}/{:.0}, policies {:.0}/{:.0}, tables and publish {:.0}/{:.0}",
            u_view.0,
            u_view.1,
            u_pods.0, u_pods.1, u_svc.0, u_svc.1, u_pol.0, u_pol.1, u_pub.0, u_pub.1
        );
        println!(
            "  memory (RSS, MiB): peak {max_rss:.0}; at start {rss_start:.0}, with the objects {rss_objects:.0}, after the full sync {rss_synced:.0}, at the end {rss_end:.0}"
        );
        if api {
            println!("  view: the API source's view built from its stores (objects shared with them, not copied)");
        } else {
            println!("  view: not timed (manifest source: views are read from files)");
        }
        println!(
            "  (each step redoes only what changed; {}, else by {})",
            if a.no_changes { "views do not list changed keys: every object is compared" } else { "objects looked at: the keys a view lists as changed" },
            if a.content_hash { "a hash or comparison of what is read of them" } else { "resourceVersion" }
        );
    }
    Ok(0)
}
