//! Integration tests of `podswitch run` on namespaces built by hand (no lab): start-up
//! errors, ports coming and going under traffic, anti-spoofing with real sockets, several
//! workers. Each needs root: without it, it prints `SKIPPED: <test> needs root` and passes, or fails
//! when `CI` is set ([`support::root_or_skip`]).
mod support;

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::*;

/// Namespace tests in this file run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs the switch to completion (it must fail) and returns its stderr.
fn run_failing(t: &Topo, extra: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", &t.node(), BIN, "run", "--manifests"])
        .arg(&t.dir)
        .arg("--control-socket")
        .arg(t.socket())
        .args(if extra.contains(&"--cores") { &[][..] } else { &["--cores", "1"][..] })
        .args(extra)
        .output()
        .unwrap();
    assert!(!out.status.success(), "switch should have failed; stdout: {}", String::from_utf8_lossy(&out.stdout));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("podswitch:")).collect();
    assert_eq!(lines.len(), 1, "one clear line expected:\n{err}");
    // Nothing is left behind.
    assert!(!sh(&["ip", "-n", &t.node(), "link"]).contains("psw-host"), "host port left behind");
    assert!(!t.socket().exists(), "control socket left behind");
    lines[0].to_string()
}

#[test]
fn startup_errors_are_one_clear_line_and_leave_nothing_behind() {
    if !root_or_skip("startup_errors_are_one_clear_line_and_leave_nothing_behind") {
        return;
    }
    let _g = serial();
    let mut t = Topo::new("psr1");
    // Bad YAML.
    write_atomic(&t.dir.join("bad.yaml"), "apiVersion: v1\nkind: Pod\nmetadata: [\n");
    let e = run_failing(&t, &[]);
    assert!(e.contains("bad.yaml, line 3: invalid YAML: unclosed bracket"), "{e}");
    std::fs::remove_file(t.dir.join("bad.yaml")).unwrap();
    // A pod whose interface does not exist.
    t.add_pod("x", "a", "10.244.0.10", false);
    let e = run_failing(&t, &[]);
    assert!(e.contains(&pod_interface("x", "a")) && e.contains("pod x/a") && e.contains("does not exist"), "{e}");
    t.remove_pod("x", "a");
    // Zero-copy demanded where the driver (veth) has none: no silent fallback.
    t.add_pod("x", "b", "10.244.0.11", true);
    let e = run_failing(&t, &["--require-zerocopy"]);
    assert!(e.contains("copy mode") && e.contains("--require-zerocopy"), "{e}");
    // A core that does not exist.
    let e = run_failing(&t, &["--cores", "97"]);
    assert!(e.contains("core 97 is not available"), "{e}");
    let e = run_failing(&t, &["--cores", "1,1"]);
    assert!(e.contains("core 1 is listed twice"), "{e}");
    // Two workers need two queues on every port.
    let e = run_failing(&t, &["--cores", "0,1"]);
    assert!(e.contains("1 rx queue(s)") && e.contains("numrxqueues 2"), "{e}");
    // Not root.
    if sh_ok(&["which", "setpriv"]) {
        let out = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN, "run", "--manifests"])
            .arg(&t.dir)
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("needs root"), "{}", String::from_utf8_lossy(&out.stderr));
    }
}

/// Sends numbered UDP datagrams at `pps` from a thread in `from` until `stop`; the receiver
/// counts what arrives. Returns (sent, received) counters.
fn udp_stream(t: &Topo, from: (&str, &str), to: (&str, &str, &str), pps: u64, stop: Arc<AtomicBool>) -> (Arc<AtomicU64>, Arc<AtomicU64>, Vec<std::thread::JoinHandle<()>>) {
    let sent = Arc::new(AtomicU64::new(0));
    let recv = Arc::new(AtomicU64::new(0));
    let (r, st) = (Arc::clone(&recv), Arc::clone(&stop));
    let rx = in_netns(&t.pod_ns(to.0, to.1), move || {
        let s = UdpSocket::bind("0.0.0.0:7000").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let mut buf = [0u8; 64];
        let mut quiet_after_stop = 0;
        loop {
            match s.recv(&mut buf) {
                Ok(_) => {
                    r.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) if st.load(Ordering::Relaxed) => {
                    quiet_after_stop += 1;
                    if quiet_after_stop > 3 {
                        return;
                    }
                }
                Err(_) => {}
            }
        }
    });
    std::thread::sleep(Duration::from_millis(200));
    let (s2, st2) = (Arc::clone(&sent), Arc::clone(&stop));
    let dst: SocketAddr = format!("{}:7000", to.2).parse().unwrap();
    let tx = in_netns(&t.pod_ns(from.0, from.1), move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        let gap = Duration::from_nanos(1_000_000_000 / pps);
        let start = Instant::now();
        let mut n = 0u64;
        while !st2.load(Ordering::Relaxed) {
            s.send_to(&n.to_be_bytes(), dst).unwrap();
            n += 1;
            s2.store(n, Ordering::Relaxed);
            let due = start + gap * n as u32;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
    });
    (sent, recv, vec![rx, tx])
}

fn ping(t: &Topo, from: (&str, &str), ip: &str) -> bool {
    sh_ok(&["ip", "netns", "exec", &t.pod_ns(from.0, from.1), "ping", "-c", "1", "-W", "1", ip])
}

#[test]
fn ports_come_and_go_without_disturbing_other_traffic() {
    if !root_or_skip("ports_come_and_go_without_disturbing_other_traffic") {
        return;
    }
    let _g = serial();
    let mut t = Topo::new("psr2");
    t.add_pod("x", "a", "10.244.0.10", true);
    t.add_pod("x", "b", "10.244.0.11", true);
    let sw = t.start_switch(&[]);
    t.wait_ready();
    // ARP for the gateway first, so the stream's first datagrams do not wait on it.
    assert!(ping(&t, ("x", "a"), "10.244.0.11"));
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, recv, threads) = udp_stream(&t, ("x", "a"), ("x", "b", "10.244.0.11"), 2000, Arc::clone(&stop));
    std::thread::sleep(Duration::from_millis(500));
    // A pod arrives: its port is attached while a -> b runs.
    t.add_pod("x", "c", "10.244.0.12", true);
    t.wait_ready();
    assert!(ping(&t, ("x", "c"), "10.244.0.10"), "new pod reachable");
    // And leaves.
    t.remove_pod("x", "c");
    t.wait_ready();
    assert!(!ping(&t, ("x", "a"), "10.244.0.12"), "removed pod unreachable");
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    for th in threads {
        th.join().unwrap();
    }
    let (s, r) = (sent.load(Ordering::Relaxed), recv.load(Ordering::Relaxed));
    assert!(s > 1000, "stream too short: {s}");
    assert_eq!(r, s, "datagrams of the unrelated flow a -> b were lost while ports changed");
    let ports = t.show("ports").unwrap();
    assert_eq!(ports["ports"].as_array().unwrap().len(), 3, "host, a, b");
    assert!(stop_ok(sw));
}

fn stop_ok(sw: std::process::Child) -> bool {
    stop(sw).success()
}

#[test]
fn spoofed_sources_reach_nobody_and_are_counted() {
    if !root_or_skip("spoofed_sources_reach_nobody_and_are_counted") {
        return;
    }
    let _g = serial();
    let mut t = Topo::new("psr3");
    t.add_pod("x", "a", "10.244.0.10", true);
    t.add_pod("x", "b", "10.244.0.11", true);
    t.add_pod("x", "c", "10.244.0.12", true);
    let sw = t.start_switch(&[]);
    t.wait_ready();
    assert!(ping(&t, ("x", "a"), "10.244.0.12"));
    // a takes b's address as a second address and sends from it to c and to the node.
    sh(&["ip", "-n", &t.pod_ns("x", "a"), "addr", "add", "10.244.0.11/32", "dev", "eth0"]);
    let before = t.drop_count("spoofed_source_ip");
    let got = Arc::new(AtomicU64::new(0));
    let g2 = Arc::clone(&got);
    let listener = in_netns(&t.pod_ns("x", "c"), move || {
        let s = UdpSocket::bind("0.0.0.0:7001").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(1500))).unwrap();
        let mut buf = [0u8; 16];
        while s.recv(&mut buf).is_ok() {
            g2.fetch_add(1, Ordering::Relaxed);
        }
    });
    std::thread::sleep(Duration::from_millis(200));
    in_netns(&t.pod_ns("x", "a"), || {
        let s = UdpSocket::bind("10.244.0.11:0").unwrap();
        for _ in 0..20 {
            s.send_to(b"spoof", "10.244.0.12:7001").unwrap();
            s.send_to(b"spoof", "172.18.0.2:7001").unwrap();
        }
    })
    .join()
    .unwrap();
    listener.join().unwrap();
    assert_eq!(got.load(Ordering::Relaxed), 0, "a spoofed datagram reached c");
    let after = t.drop_count("spoofed_source_ip");
    assert!(after - before >= 40, "anti-spoof counter rose by {} (want >= 40)", after - before);
    // A forged source MAC is caught too.
    sh(&["ip", "-n", &t.pod_ns("x", "a"), "addr", "del", "10.244.0.11/32", "dev", "eth0"]);
    let before_mac = t.drop_count("spoofed_source_mac");
    sh(&["ip", "-n", &t.pod_ns("x", "a"), "link", "set", "eth0", "address", "02:00:00:00:00:99"]);
    assert!(!ping(&t, ("x", "a"), "10.244.0.12"), "forged MAC got through");
    assert!(t.drop_count("spoofed_source_mac") > before_mac);
    assert!(stop_ok(sw));
}

#[test]
fn two_workers_forward_between_two_queue_ports() {
    if !root_or_skip("two_workers_forward_between_two_queue_ports") {
        return;
    }
    let _g = serial();
    let mut t = Topo::new("psr4");
    t.add_pod_queues("x", "a", "10.244.0.10", true, 2);
    t.add_pod_queues("x", "b", "10.244.0.11", true, 2);
    let sw = t.start_switch(&["--cores", "0,1"]);
    t.wait_ready();
    assert!(ping(&t, ("x", "a"), "10.244.0.11"));
    let ports = t.show("ports").unwrap();
    for p in ports["ports"].as_array().unwrap() {
        assert_eq!(p["queues"].as_array().unwrap().len(), 2, "{p}");
    }
    // TCP, many connections (spread over queues by the pods' kernels).
    let server = in_netns(&t.pod_ns("x", "b"), || {
        let l = std::net::TcpListener::bind("0.0.0.0:80").unwrap();
        for _ in 0..20 {
            let (mut c, _) = l.accept().unwrap();
            std::io::Write::write_all(&mut c, b"ok").unwrap();
        }
    });
    std::thread::sleep(Duration::from_millis(200));
    in_netns(&t.pod_ns("x", "a"), || {
        for _ in 0..20 {
            let mut c = std::net::TcpStream::connect_timeout(&"10.244.0.11:80".parse().unwrap(), Duration::from_secs(2)).unwrap();
            let mut s = String::new();
            std::io::Read::read_to_string(&mut c, &mut s).unwrap();
            assert_eq!(s, "ok");
        }
    })
    .join()
    .unwrap();
    server.join().unwrap();
    // /metrics counts per worker what the ports count: both workers, each with its core,
    // and the same frames in total (traffic has stopped).
    let body = in_netns(&t.node(), || {
        let mut c = std::net::TcpStream::connect("127.0.0.1:9090").unwrap();
        std::io::Write::write_all(&mut c, b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut s = String::new();
        std::io::Read::read_to_string(&mut c, &mut s).unwrap();
        s
    })
    .join()
    .unwrap();
    let sum = |prefix: &str| -> u64 {
        body.lines().filter(|l| l.starts_with(prefix)).map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap()).sum()
    };
    for (w, core) in [(0, 0), (1, 1)] {
        let line = format!("podswitch_worker_rx_packets_total{{worker=\"{w}\",core=\"{core}\"}} ");
        assert!(body.contains(&line), "no {line} in\n{body}");
    }
    let worker_rx = sum("podswitch_worker_rx_packets_total{");
    assert!(worker_rx > 40, "{worker_rx} frames over the workers\n{body}");
    assert_eq!(worker_rx, sum("podswitch_port_rx_packets_total{"), "{body}");
    assert_eq!(sum("podswitch_worker_tx_bytes_total{"), sum("podswitch_port_tx_bytes_total{"), "{body}");
    assert!(body.contains("podswitch_worker_drops_total{worker=\"1\",reason=\"no_route\"} "), "{body}");
    assert!(stop_ok(sw));
}

#[test]
fn a_bad_manifest_at_runtime_is_reported_and_the_tables_stay() {
    if !root_or_skip("a_bad_manifest_at_runtime_is_reported_and_the_tables_stay") {
        return;
    }
    let _g = serial();
    let mut t = Topo::new("psr5");
    t.add_pod("x", "a", "10.244.0.10", true);
    t.add_pod("x", "b", "10.244.0.11", true);
    let sw = t.start_switch(&[]);
    t.wait_ready();
    let version = t.show("status").unwrap()["tables_version"].as_u64().unwrap();
    // A broken file, and in the same edit x/b's removal: neither may take effect.
    write_atomic(&t.dir.join("zz-bad.yaml"), "apiVersion: v1\nkind: Pod\nmetadata: {name: [\n");
    std::fs::remove_file(t.dir.join("x-b.yaml")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        let s = t.show("status").unwrap();
        if !s["last_error"].is_null() {
            break s;
        }
        assert!(Instant::now() < deadline, "error never reported: {s}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status["last_error"].as_str().unwrap().contains("zz-bad.yaml"), "{status}");
    assert_eq!(status["tables_version"].as_u64().unwrap(), version, "tables changed");
    assert!(ping(&t, ("x", "a"), "10.244.0.11"), "x/b must stay reachable: the edit was not applied");
    // Fixing the file applies the whole directory: x/b goes.
    std::fs::remove_file(t.dir.join("zz-bad.yaml")).unwrap();
    t.wait_ready();
    assert!(t.show("status").unwrap()["last_error"].is_null());
    assert!(!ping(&t, ("x", "a"), "10.244.0.11"), "x/b removed");
    assert!(stop_ok(sw));
}

#[test]
fn table_updates_do_not_disturb_unrelated_flows() {
    if !root_or_skip("table_updates_do_not_disturb_unrelated_flows") {
        return;
    }
    let _g = serial();
    let mut t = Topo::new("psr6");
    t.add_pod("x", "a", "10.244.0.10", true);
    t.add_pod("x", "b", "10.244.0.11", true);
    t.add_pod("x", "c", "10.244.0.12", true);
    let sw = t.start_switch(&[]);
    t.wait_ready();
    assert!(ping(&t, ("x", "a"), "10.244.0.11"));
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, recv, threads) = udp_stream(&t, ("x", "a"), ("x", "b", "10.244.0.11"), 2000, Arc::clone(&stop));
    // While a -> b runs: Services come and go (some select b and c), endpoints change, policies
    // that do not concern a -> b come and go, and pod labels change.
    for round in 0..6u32 {
        let mut y = String::new();
        for s in 0..40u32 {
            y += &format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: s{s}, namespace: x}}\n\
                 spec: {{clusterIP: 10.96.1.{}, selector: {{app: app{}}}, ports: [{{port: 80, protocol: UDP}}]}}\n---\n",
                s + 1,
                (s + round) % 3
            );
        }
        y += &format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: p{round}, namespace: x}}\n\
             spec: {{podSelector: {{matchLabels: {{app: app9}}}}, ingress: []}}\n"
        );
        write_atomic(&t.dir.join("churn.yaml"), &y);
        t.wait_ready();
        std::thread::sleep(Duration::from_millis(150));
    }
    std::fs::remove_file(t.dir.join("churn.yaml")).unwrap();
    t.wait_ready();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    for th in threads {
        th.join().unwrap();
    }
    let (s, r) = (sent.load(Ordering::Relaxed), recv.load(Ordering::Relaxed));
    let version = t.show("status").unwrap()["tables_version"].as_u64().unwrap();
    assert!(version >= 7, "the tables changed only {version} times");
    assert!(s > 1000, "stream too short: {s}");
    assert_eq!(r, s, "datagrams of the unrelated flow a -> b were lost while the tables changed {version} times");
    assert!(stop_ok(sw));
}

/// Waits up to `secs` for `cond` on `show WHAT --json`; returns the answer it held for.
fn wait_show(t: &Topo, what: &str, secs: u64, cond: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        let v = t.show(what).unwrap();
        if cond(&v) {
            return v;
        }
        assert!(Instant::now() < end, "show {what}: not as expected within {secs} s: {v}\nlog:\n{}", t.switch_log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn has_default_route(routes: &serde_json::Value) -> Option<String> {
    routes["routes"].as_array().unwrap().iter().find(|r| r["prefix"] == "0.0.0.0/0").map(|r| r["dst_mac"].as_str().unwrap().to_string())
}

#[test]
fn without_a_gateway_mac_the_default_route_waits_for_the_kernel_to_resolve_the_gateway() {
    if !root_or_skip("without_a_gateway_mac_the_default_route_waits_for_the_kernel_to_resolve_the_gateway") {
        return;
    }
    let _g = serial();
    let mut t = Topo::new("psr7");
    t.add_pod("x", "a", "10.244.0.10", true);
    // The uplink `up0` to a router namespace `ext`, and the node's default route through it.
    // The router does not hold its address 192.0.2.1 yet: nobody answers for the gateway.
    let ext = format!("{}-ext", t.prefix);
    let node = t.node();
    sh(&["ip", "netns", "add", &ext]);
    sh(&["ip", "-n", &node, "link", "add", "up0", "type", "veth", "peer", "name", "eth0", "netns", &ext]);
    for (ns, ifname) in [(&node, "up0"), (&ext, "eth0")] {
        sh(&["ip", "netns", "exec", ns, "sysctl", "-qw", &format!("net.ipv6.conf.{ifname}.disable_ipv6=1")]);
        sh(&["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0"]);
        sh(&["ip", "netns", "exec", ns, "ethtool", "-K", ifname, "tx", "off"]);
        sh(&["ip", "-n", ns, "link", "set", ifname, "up"]);
    }
    sh(&["ip", "-n", &node, "addr", "add", "192.0.2.2/24", "dev", "up0"]);
    sh(&["ip", "-n", &node, "route", "add", "default", "via", "192.0.2.1", "dev", "up0"]);
    sh(&["ip", "-n", &ext, "link", "set", "lo", "up"]);
    sh(&["ip", "-n", &ext, "addr", "add", "203.0.113.5/32", "dev", "lo"]);
    sh(&["ip", "netns", "exec", &ext, "sysctl", "-qw", "net.ipv4.conf.eth0.rp_filter=0"]);
    let ext_mac = sh(&["ip", "netns", "exec", &ext, "cat", "/sys/class/net/eth0/address"]).trim().to_string();

    let sw = t.start_switch(&["--uplink", "up0"]);
    t.wait_ready();
    // Unresolved: no default route, the gateway listed as needed and not resolved, and a
    // datagram for the world counted as no_route.
    let n = wait_show(&t, "neighbours", 10, |v| {
        v["neighbours"].as_array().is_some_and(|a| a.iter().any(|e| e["ip"] == "192.0.2.1" && matches!(e["state"].as_str(), Some("failed" | "incomplete"))))
    });
    assert_eq!((n["interface"].as_str(), n["gateway"].as_str()), (Some("up0"), Some("192.0.2.1")), "{n}");
    assert!(n["gateway_mac"].is_null() && n["gateway_mac_from"] == "neighbour table", "{n}");
    let gw = &n["neighbours"][0];
    assert_eq!((gw["resolved"].as_bool(), gw["created_by_switch"].as_bool()), (Some(false), Some(true)), "{n}");
    assert_eq!(gw["needed_by"], serde_json::json!(["gateway"]));
    assert_eq!(has_default_route(&t.show("routes").unwrap()), None);
    assert!(t.switch_log().contains("no default route in the tables until the kernel resolves gateway 192.0.2.1"), "{}", t.switch_log());
    let before = t.drop_count("no_route");
    in_netns(&t.pod_ns("x", "a"), || UdpSocket::bind("0.0.0.0:0").unwrap().send_to(b"world", "203.0.113.5:7002").unwrap()).join().unwrap();
    wait_show(&t, "stats", 3, |_| t.drop_count("no_route") > before);

    // The router takes its address and the kernel's entry for it becomes reachable: the test
    // writes the kernel's entry as an operator would (a managed entry takes no MAC from
    // outside: the entry becomes an ordinary one, no longer the switch's). The default route
    // follows within about a second, and the datagram reaches the router.
    sh(&["ip", "-n", &ext, "addr", "add", "192.0.2.1/24", "dev", "eth0"]);
    sh(&["ip", "-n", &node, "neigh", "replace", "192.0.2.1", "lladdr", &ext_mac, "dev", "up0", "nud", "reachable"]);
    let t0 = Instant::now();
    let routes = wait_show(&t, "routes", 3, |v| has_default_route(v).is_some());
    assert!(t0.elapsed() < Duration::from_millis(2000), "took {:?}", t0.elapsed());
    assert_eq!(has_default_route(&routes).as_deref(), Some(ext_mac.as_str()));
    let n = t.show("neighbours").unwrap();
    assert_eq!(n["gateway_mac"].as_str(), Some(ext_mac.as_str()), "{n}");
    assert_eq!(n["neighbours"][0]["state"], "reachable", "{n}");
    assert_eq!(n["neighbours"][0]["created_by_switch"], false, "{n}");
    let got = in_netns(&ext, || {
        let s = UdpSocket::bind("203.0.113.5:7002").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 16];
        s.recv_from(&mut buf).map(|(n, from)| (buf[..n].to_vec(), from.ip().to_string())).ok()
    });
    std::thread::sleep(Duration::from_millis(200));
    in_netns(&t.pod_ns("x", "a"), || UdpSocket::bind("0.0.0.0:0").unwrap().send_to(b"world", "203.0.113.5:7002").unwrap()).join().unwrap();
    let got = got.join().unwrap();
    // Outside the cluster's pod CIDRs: masqueraded to the node's InternalIP (ip-masq-agent's rule).
    assert_eq!(got, Some((b"world".to_vec(), "172.18.0.2".to_string())), "log:\n{}", t.switch_log());
    // The table form prints.
    let out = Command::new(BIN).args(["show", "neighbours", "--socket"]).arg(t.socket()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("192.0.2.1") && text.contains(&ext_mac) && text.contains("gateway"), "{text}");

    // Stopped: the entry that is no longer the switch's own stays as it is.
    assert!(stop_ok(sw));
    let left = sh(&["ip", "-n", &node, "neigh", "show", "dev", "up0"]);
    assert!(left.contains(&format!("192.0.2.1 lladdr {ext_mac}")), "the operator's entry went: {left}");
}

/// Holds the machine-wide lab lock (/run/podswitch-lab-tests.lock) so that a measurement of
/// CPU time is not taken beside another helper's lab.
fn machine_lock() -> nix::fcntl::Flock<std::fs::File> {
    let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open("/run/podswitch-lab-tests.lock").unwrap();
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| e).unwrap()
}

/// CPU time (utime + stime, clock ticks) of the switch's thread named `name`.
fn thread_cpu_ticks(pid: u32, name: &str) -> u64 {
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = task.unwrap().path();
        if std::fs::read_to_string(dir.join("comm")).unwrap_or_default().trim() == name {
            let stat = std::fs::read_to_string(dir.join("stat")).unwrap();
            // Fields after the parenthesised comm: state is field 3, utime 14, stime 15.
            let rest: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
            return rest[11].parse::<u64>().unwrap() + rest[12].parse::<u64>().unwrap();
        }
    }
    panic!("no thread {name} in process {pid}");
}

/// Round-trip times (microseconds) of `count` pings, one every `interval` seconds.
fn ping_rtts_us(t: &Topo, from: (&str, &str), ip: &str, count: u32, interval: &str) -> Vec<f64> {
    let out = sh(&["ip", "netns", "exec", &t.pod_ns(from.0, from.1), "ping", "-c", &count.to_string(), "-i", interval, "-W", "1", ip]);
    let mut rtts: Vec<f64> = out.split("time=").skip(1).map(|s| s.split_whitespace().next().unwrap().parse::<f64>().unwrap() * 1000.0).collect();
    rtts.sort_by(f64::total_cmp);
    rtts
}

#[test]
fn an_idle_worker_sleeps_gives_its_core_back_and_wakes_on_a_packet() {
    if !root_or_skip("an_idle_worker_sleeps_gives_its_core_back_and_wakes_on_a_packet") {
        return;
    }
    let _g = serial();
    let _machine = machine_lock();
    let mut t = Topo::new("psr8");
    t.add_pod("x", "a", "10.244.0.10", true);
    t.add_pod("x", "b", "10.244.0.11", true);
    let sw = t.start_switch(&[]);
    t.wait_ready();
    assert!(ping(&t, ("x", "a"), "10.244.0.11"));
    let pid = sw.id();
    let worker = |v: &serde_json::Value| v["workers"][0].clone();
    std::thread::sleep(Duration::from_millis(300));
    // Idle: the worker sleeps nearly all the time, and its thread uses almost no CPU.
    let (w0, cpu0) = (worker(&t.show("workers").unwrap()), thread_cpu_ticks(pid, "podswitch-w0"));
    std::thread::sleep(Duration::from_secs(2));
    let (w1, cpu1) = (worker(&t.show("workers").unwrap()), thread_cpu_ticks(pid, "podswitch-w0"));
    assert_eq!(w1["mode"], "adaptive");
    let slept = w1["sleeping_seconds"].as_f64().unwrap() - w0["sleeping_seconds"].as_f64().unwrap();
    assert!(slept > 1.6, "slept {slept:.3} s of 2 s: {w1}");
    let ticks_per_s = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).unwrap().unwrap() as u64;
    assert!((cpu1 - cpu0) * 10 <= 2 * ticks_per_s, "the idle worker thread used {} ticks in 2 s ({ticks_per_s}/s)", cpu1 - cpu0);
    // Pings 20 ms apart each find the worker asleep; each request wakes it at once through its
    // socket's fd (not at the end of a 5 ms sleep), and the answer crosses too.
    let rtts = ping_rtts_us(&t, ("x", "a"), "10.244.0.11", 20, "0.02");
    assert_eq!(rtts.len(), 20, "every ping answered");
    let w2 = worker(&t.show("workers").unwrap());
    let woke = |w: &serde_json::Value| w["wakeups"]["data"].as_u64().unwrap();
    assert!(woke(&w2) - woke(&w1) >= 20, "each request woke the worker: {w1} -> {w2}");
    assert!(w2["rx_packets"].as_u64().unwrap() - w1["rx_packets"].as_u64().unwrap() >= 40, "{w2}");
    let median = rtts[rtts.len() / 2];
    assert!(median < 1000.0, "median round trip {median:.0} us through a sleeping worker: {rtts:?}");
    assert!(stop_ok(sw));

    // With --busy-poll the worker never sleeps.
    let sw = t.start_switch(&["--busy-poll"]);
    t.wait_ready();
    assert!(ping(&t, ("x", "a"), "10.244.0.11"));
    std::thread::sleep(Duration::from_millis(500));
    let w = worker(&t.show("workers").unwrap());
    assert_eq!((w["mode"].as_str(), w["sleeps"].as_u64(), w["sleeping_seconds"].as_f64()), (Some("busy_poll"), Some(0), Some(0.0)), "{w}");
    assert!(w["polling_seconds"].as_f64().unwrap() > 0.3, "{w}");
    assert!(stop_ok(sw));
}

/// Sends `bytes` of a counting pattern from pod a to pod b over TCP and has b check every byte;
/// then echoes UDP datagrams of every size class through b and checks each answer byte for
/// byte. Returns what b received over TCP.
fn pattern_traffic(t: &Topo, bytes: usize) -> usize {
    let server = in_netns(&t.pod_ns("x", "b"), move || {
        let l = std::net::TcpListener::bind("0.0.0.0:5001").unwrap();
        let u = UdpSocket::bind("0.0.0.0:5002").unwrap();
        let echo = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            u.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            while let Ok((n, from)) = u.recv_from(&mut buf) {
                u.send_to(&buf[..n], from).unwrap();
                if n == 1 {
                    break; // the last size
                }
            }
        });
        let (mut c, _) = l.accept().unwrap();
        let mut got = 0usize;
        let mut buf = vec![0u8; 65536];
        loop {
            let n = std::io::Read::read(&mut c, &mut buf).unwrap();
            if n == 0 {
                break;
            }
            for (i, b) in buf[..n].iter().enumerate() {
                assert_eq!(*b, ((got + i) % 251) as u8, "byte {} changed on the way", got + i);
            }
            got += n;
        }
        echo.join().unwrap();
        got
    });
    std::thread::sleep(Duration::from_millis(200));
    in_netns(&t.pod_ns("x", "a"), move || {
        let mut c = std::net::TcpStream::connect_timeout(&"10.244.0.11:5001".parse().unwrap(), Duration::from_secs(2)).unwrap();
        let data: Vec<u8> = (0..bytes).map(|i| (i % 251) as u8).collect();
        std::io::Write::write_all(&mut c, &data).unwrap();
        drop(c);
        let u = UdpSocket::bind("0.0.0.0:0").unwrap();
        u.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 2048];
        for size in [1472usize, 1400, 1024, 577, 64, 18, 2, 1] {
            let msg: Vec<u8> = (0..size).map(|i| (i * 7 + size) as u8).collect();
            let answer = (0..5).find_map(|_| {
                u.send_to(&msg, "10.244.0.11:5002").unwrap();
                u.recv(&mut buf).ok()
            });
            assert_eq!(answer.map(|n| &buf[..n]), Some(&msg[..]), "{size}-byte datagram");
        }
    })
    .join()
    .unwrap();
    server.join().unwrap()
}

#[test]
fn pod_ports_forward_on_their_own_umem_and_on_the_workers_umem() {
    if !root_or_skip("pod_ports_forward_on_their_own_umem_and_on_the_workers_umem") {
        return;
    }
    let _g = serial();
    for (frames, own) in [("2048", true), ("64", true), ("0", false)] {
        let mut t = Topo::new("psr7");
        t.add_pod("x", "a", "10.244.0.10", true);
        t.add_pod("x", "b", "10.244.0.11", true);
        let sw = t.start_switch(&["--pod-umem-frames", frames]);
        t.wait_ready();
        let ports = t.show("ports").unwrap();
        for p in ports["ports"].as_array().unwrap() {
            match own {
                true => assert_eq!(p["own_umem"]["rx_frames"].as_u64(), Some(frames.parse().unwrap()), "{p}"),
                false => assert!(p.get("own_umem").is_none(), "--pod-umem-frames 0 shares the worker's UMEM: {p}"),
            }
        }
        let sent = 8 << 20;
        assert_eq!(pattern_traffic(&t, sent), sent, "--pod-umem-frames {frames}");
        // Every frame of the worker's UMEM is back in its pool once traffic stops: with every
        // port on its own UMEM, all of them; shared, all but the fill rings' (256 per port).
        let stats = wait_show(&t, "stats", 5, |v| v["workers"][0]["free_frames"].as_u64() == Some(16384) || !own);
        let free = stats["workers"][0]["free_frames"].as_u64().unwrap();
        match own {
            true => assert_eq!(free, 16384, "frames of the worker's pool lost with --pod-umem-frames {frames}"),
            false => assert!(free < 16384, "shared ports hold the worker's frames in their fill rings: {free}"),
        }
        eprintln!("--pod-umem-frames {frames}: {} B checked, {} frames dropped on a full TX ring", sent, t.drop_count("tx_ring_full"));
        assert!(stop_ok(sw));
    }
}
