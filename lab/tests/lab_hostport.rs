//! A hostPort made by the reference `portmap` plugin (#12 part 3: podswitch-cni chained with
//! portmap) is reachable from `external`, on a one-node lab (examples/lab-2pods).
//!
//! Contract:
//! - As the other lab tests: root (else SKIPPED), one lab per machine ([`labkit::Hold`]), the
//!   lab torn down when the hold drops; needs /usr/lib/cni/portmap (Debian's
//!   containernetworking-plugins; else SKIPPED, or failed under CI).
//! - portmap ADD runs in the node's namespace as a runtime runs it after podswitch-cni (pod
//!   x/b's address in `prevResult`, hostPort 8080 → containerPort 80 in `runtimeConfig`).
//!   `external` connects to the node's InternalIP:8080 and gets x/b's answer, which names the
//!   node as the client (the kernel masquerades what it DNATs to a pod, so the reply returns
//!   through it: `podswitch run`'s DNAT return rule). Without that rule the connection gets no
//!   answer; after portmap DEL nothing answers on 8080; the switch's stop keeps the rule (once)
//!   for the next switch (#15: a restart does not cut the node's connections).
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;

mod labkit;
use labkit::{in_netns, ok, pod_ips, skip_or_fail, Hold};

const NODE_NETNS: &str = "psl-node";
const EXTERNAL_NETNS: &str = "psl-external";
const HOST_PORT: u16 = 8080;
const PORTMAP: &str = "/usr/lib/cni/portmap";
const RULE_COMMENT: &str = "podswitch: DNATed connections to pods return through the node";

/// Connects from `external` to `to`, sends a line and returns the pod server's answer line,
/// or the error.
fn ask(to: SocketAddr) -> Result<String, String> {
    let s = in_netns(EXTERNAL_NETNS, || TcpStream::connect_timeout(&to, Duration::from_secs(2))).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut w = s.try_clone().unwrap();
    writeln!(w, "hello").map_err(|e| format!("send: {e}"))?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).map_err(|e| format!("read: {e}"))?;
    Ok(line.trim().to_string())
}

/// Runs portmap `command` in the node's namespace for pod x/b at `ip`.
fn portmap(command: &str, ip: &str) {
    let conf = json!({
        "cniVersion": "1.0.0",
        "name": "podswitch",
        "type": "portmap",
        "capabilities": { "portMappings": true },
        "runtimeConfig": { "portMappings": [{ "hostPort": HOST_PORT, "containerPort": 80, "protocol": "tcp" }] },
        "prevResult": {
            "cniVersion": "1.0.0",
            "interfaces": [{ "name": "eth0", "sandbox": "/run/netns/psl_x_b" }],
            "ips": [{ "address": format!("{ip}/32"), "interface": 0 }]
        }
    });
    let mut child = Command::new("ip")
        .args(["netns", "exec", NODE_NETNS, PORTMAP])
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", "hostport-test-b")
        .env("CNI_NETNS", "/run/netns/psl_x_b")
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/usr/lib/cni")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(conf.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "portmap {command}: {} {}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

fn nat_rules() -> String {
    ok(&["lab", "exec", "node", "--", "iptables", "-w", "5", "-t", "nat", "-S", "POSTROUTING"])
}

#[test]
fn a_portmap_hostport_is_reachable_from_external() {
    let test = "a_portmap_hostport_is_reachable_from_external";
    if !std::path::Path::new(PORTMAP).is_file() {
        return skip_or_fail(test, &format!("{PORTMAP} is missing (Debian package containernetworking-plugins)"));
    }
    let Some(hold) = Hold::new("hostport", test, "lab-2pods") else { return };
    ok(&["lab", "up", "--manifests", hold.dir()]);
    let b = pod_ips()["x/b"].clone();
    let node_ip = "172.18.0.2";
    let to: SocketAddr = format!("{node_ip}:{HOST_PORT}").parse().unwrap();
    assert!(nat_rules().contains(RULE_COMMENT), "the switch added its rule: {}", nat_rules());
    assert!(ask(to).is_err(), "nothing answers on {HOST_PORT} before portmap");

    portmap("ADD", &b);
    let answer = ask(to).unwrap_or_else(|e| panic!("external -> {to} (hostPort of x/b): {e}; nat rules: {}", nat_rules()));
    assert!(answer.starts_with(&format!("x/b {node_ip}:")), "x/b answers and sees the node as the client: {answer}");

    // The rule is what brings the answer back: without it the pod's reply leaves by the
    // uplink from the pod's address, which external does not expect.
    let rule = ["-t", "nat", "-D", "POSTROUTING", "-o", "psw-host", "-m", "conntrack", "--ctstate", "DNAT", "-m", "comment", "--comment", RULE_COMMENT, "-j", "MASQUERADE", "--random-fully"];
    let mut del = vec!["lab", "exec", "node", "--", "iptables", "-w", "5"];
    del.extend(rule);
    ok(&del);
    assert!(ask(to).is_err(), "without the DNAT return rule the hostPort gets no answer");
    ok(&["lab", "switch", "stop"]);
    ok(&["lab", "switch", "start"]);
    assert!(ask(to).is_ok(), "the restarted switch adds its rule again");

    portmap("DEL", &b);
    assert!(ask(to).is_err(), "after portmap DEL nothing answers on {HOST_PORT}");
    ok(&["lab", "switch", "stop"]);
    assert_eq!(nat_rules().matches(RULE_COMMENT).count(), 1, "a stopped switch keeps its rule for the next one, once: {}", nat_rules());
    drop(hold);
}
