//! The uplink stays the node's (#11 part 4), on a one-node lab (examples/lab-2pods plus a
//! NodePort Service): the node's own stack has its InternalIP on `psw-uplink`, and the switch's
//! XDP program there takes only what the switch owns.
//!
//! Contract:
//! - As the other lab tests: root (else SKIPPED), one lab per machine ([`labkit::Hold`]), the
//!   lab torn down when the hold drops.
//! - One TCP connection from `external` to an echo server in the node's own stack (on its
//!   InternalIP), opened before the switch starts, carries data while the switch starts, runs
//!   and stops; in each of the three states a new connection works both ways (external → node
//!   and node → external: the node's own ephemeral ports are never taken for the switch's), and
//!   ARP (neighbour entries flushed first), ICMP and link-local IPv6 between `external` and the
//!   node's uplink pass. While the switch runs, NodePort and pod traffic from `external` still
//!   reach it, and `show ports` reports the uplink's filter and its counters.
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use serde_json::Value;

mod labkit;
use labkit::{describe, in_netns, ok, ok_env, podswitch, probe, Hold};

const NODE_IP: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 2);
const EXTERNAL_IP: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 100);
const NODE_NETNS: &str = "psl-node";
const EXTERNAL_NETNS: &str = "psl-external";
/// The echo server's port in the node's stack, and external's.
const ECHO_PORT: u16 = 7007;

const NODEPORT_SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: np\n  namespace: x\nspec:\n  type: NodePort\n  \
     clusterIP: 10.96.0.31\n  selector: {pod: a}\n  ports:\n  - {name: tcp, port: 80, targetPort: 80, nodePort: 30080}\n";

/// A line-echo server on `addr` in `netns`, serving until the test ends.
fn echo_server(netns: &str, addr: SocketAddr) {
    let listener = in_netns(netns, || TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr} in {netns}: {e}")));
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut w = conn.try_clone().unwrap();
                for line in BufReader::new(conn).lines() {
                    let Ok(line) = line else { return };
                    if writeln!(w, "{line}").is_err() {
                        return;
                    }
                }
            });
        }
    });
}

/// A connection from `netns` to `to`, reading with a timeout.
fn connect(netns: &str, to: SocketAddr) -> BufReader<TcpStream> {
    let s = in_netns(netns, || TcpStream::connect_timeout(&to, Duration::from_secs(5)))
        .unwrap_or_else(|e| panic!("connect {to} from {netns}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    BufReader::new(s)
}

/// Sends `line` and expects it back.
fn echo(c: &mut BufReader<TcpStream>, line: &str, when: &str) {
    writeln!(c.get_mut(), "{line}").unwrap_or_else(|e| panic!("{when}: writing {line:?}: {e}"));
    let mut back = String::new();
    c.read_line(&mut back).unwrap_or_else(|e| panic!("{when}: reading the echo of {line:?}: {e}"));
    assert_eq!(back.trim_end(), line, "{when}");
}

fn exec(netns_name: &str, cmd: &[&str]) -> std::process::Output {
    let mut args = vec!["lab", "exec", netns_name, "--"];
    args.extend(cmd);
    podswitch(&args)
}

/// The IPv6 link-local address of `ifname` as `lab exec WHO` sees it.
fn link_local(who: &str, ifname: &str) -> String {
    let out = ok(&["lab", "exec", who, "--", "ip", "-6", "-o", "addr", "show", "dev", ifname, "scope", "link"]);
    let addr = out.split_whitespace().skip_while(|w| *w != "inet6").nth(1).unwrap_or_else(|| panic!("no link-local on {ifname}: {out}"));
    addr.split('/').next().unwrap().to_string()
}

/// The node's own traffic in one state of the switch: a new connection each way, ARP after a
/// flush on both sides, ICMP and IPv6 link-local.
fn own_traffic_passes(when: &str) {
    let mut c = connect(EXTERNAL_NETNS, SocketAddr::from((NODE_IP, ECHO_PORT)));
    echo(&mut c, &format!("new connection external → node {when}"), when);
    let mut c = connect(NODE_NETNS, SocketAddr::from((EXTERNAL_IP, ECHO_PORT)));
    echo(&mut c, &format!("new connection node → external {when}"), when);
    for (who, dev) in [("external", "eth0"), ("node", "psw-uplink")] {
        ok(&["lab", "exec", who, "--", "ip", "neigh", "flush", "dev", dev]);
    }
    let o = exec("external", &["ping", "-c", "2", "-i", "0.2", "-W", "2", &NODE_IP.to_string()]);
    assert!(o.status.success(), "{when}: external → node ICMP: {}", describe(&o));
    // Identifiers in the masquerade range (pods' pings leave with those) included: while the
    // switch runs, such a reply that no pod's ping was given goes to the node's stack.
    for id in ["1234", "61234"] {
        let o = exec("node", &["ping", "-c", "2", "-i", "0.2", "-W", "2", "-e", id, &EXTERNAL_IP.to_string()]);
        assert!(o.status.success(), "{when}: node → external ICMP, identifier {id}: {}", describe(&o));
    }
    // The node's kernel answered ARP for its address, with the uplink's MAC.
    let neigh = ok(&["lab", "exec", "external", "--", "ip", "neigh", "show", &NODE_IP.to_string()]);
    let mac = ok(&["lab", "exec", "node", "--", "cat", "/sys/class/net/psw-uplink/address"]);
    assert!(neigh.contains(mac.trim()), "{when}: {NODE_IP} resolved to {neigh}; the uplink is {mac}");
    let node_ll = link_local("node", "psw-uplink");
    let o = exec("external", &["ping", "-6", "-c", "2", "-i", "0.2", "-W", "2", &format!("{node_ll}%eth0")]);
    assert!(o.status.success(), "{when}: external → node IPv6 link-local: {}", describe(&o));
}

#[test]
fn the_nodes_own_traffic_on_the_uplink_passes_while_its_switch_starts_runs_and_stops() {
    let Some(hold) = Hold::new("uplink", "the_nodes_own_traffic_on_the_uplink_passes", "lab-2pods") else { return };
    hold.write("np.yaml", NODEPORT_SERVICE);
    // The lab without its switch: the node's stack alone on its uplink.
    let out = ok_env(&["lab", "up", "--manifests", hold.dir()], true);
    assert!(out.contains("not started"), "{out}");
    let addrs = ok(&["lab", "exec", "node", "--", "ip", "-o", "-4", "addr", "show", "dev", "psw-uplink"]);
    assert!(addrs.contains(&format!("{NODE_IP}/24")), "the InternalIP is on the uplink: {addrs}");
    echo_server(NODE_NETNS, SocketAddr::from((NODE_IP, ECHO_PORT)));
    echo_server(EXTERNAL_NETNS, SocketAddr::from((EXTERNAL_IP, ECHO_PORT)));

    let mut long = connect(EXTERNAL_NETNS, SocketAddr::from((NODE_IP, ECHO_PORT)));
    echo(&mut long, "before the switch", "no switch");
    own_traffic_passes("before the switch starts");

    let out = ok(&["lab", "switch", "start"]);
    assert!(out.contains("in sync"), "{out}");
    echo(&mut long, "while the switch runs", "switch running");
    own_traffic_passes("while the switch runs");
    // What the switch owns still reaches it: a NodePort and a pod from external.
    let r = probe(&["--from", "external", "--timeout-ms", "2000", "--to", &format!("{NODE_IP}:30080"), "pod/x/b:80", "pod/x/b:81/udp"]);
    for p in &r {
        assert_eq!(p["result"], "connected", "{r:?}");
    }
    assert_eq!(r[0]["answered_by"], "x/a", "{r:?}");
    // `show ports`: the uplink's filter and its counters.
    let v: Value = serde_json::from_str(&ok(&["show", "ports", "--json"])).unwrap();
    let ports = v["ports"].as_array().unwrap();
    let uplink = ports.iter().find(|p| p["owner"] == "uplink").unwrap_or_else(|| panic!("no uplink port: {v}"));
    let f = &uplink["uplink_filter"];
    assert_eq!(f["filter"]["node_ip"], NODE_IP.to_string(), "{f}");
    let prefixes = f["filter"]["prefixes"].to_string();
    assert!(prefixes.contains("10.244.0.0") && prefixes.contains("10.96.0.0"), "pod CIDR and Service range: {f}");
    assert!(f["filter"]["ports"].to_string().contains("30080"), "{f}");
    assert!(f["counters"]["passed"].as_u64().unwrap() > 0, "the node's own frames passed: {f}");
    assert!(f["counters"]["redirected"].as_u64().unwrap() > 0, "the probes were redirected: {f}");
    assert!(f["counters"]["owned_port"].as_u64().unwrap() > 0 && f["counters"]["owned_prefix"].as_u64().unwrap() > 0, "{f}");
    // Every queue of the uplink is served; the lab gives it more queues than the switch has
    // workers, so a worker serves several.
    let queues = uplink["queues"].as_array().unwrap();
    let listing = ok(&["lab", "exec", "node", "--", "ls", "/sys/class/net/psw-uplink/queues"]);
    let n = listing.split_whitespace().filter(|q| q.starts_with("rx-")).count();
    assert_eq!(queues.len(), n, "one socket per rx queue: {uplink}");
    let workers = labkit::state()["switch"]["cores"].as_str().unwrap().split(',').count();
    assert!(n > workers, "{n} queues, {workers} worker(s)");
    let mut served: Vec<u64> = queues.iter().map(|q| q["queue"].as_u64().unwrap()).collect();
    served.sort_unstable();
    assert_eq!(served, (0..n as u64).collect::<Vec<_>>(), "{uplink}");
    let log = std::fs::read_to_string("/run/podswitch/lab/logs/switch.log").unwrap_or_default();
    assert!(log.contains("psw-uplink (uplink): XDP") && log.contains("q1 w"), "the start-up log names each queue's worker: {log}");
    let text = ok(&["show", "ports"]);
    assert!(text.contains("uplink psw-uplink: XDP redirected") && text.contains("owned ports"), "{text}");
    echo(&mut long, "still while the switch runs", "switch running");

    let out = ok(&["lab", "switch", "stop"]);
    assert!(out.contains("stopped the switch"), "{out}");
    echo(&mut long, "after the switch stopped", "switch stopped");
    own_traffic_passes("after the switch stopped");
    echo(&mut long, "the end", "switch stopped");
    drop(hold);
    assert_eq!(labkit::lab_namespaces(), Vec::<String>::new(), "lab down left namespaces");
}
