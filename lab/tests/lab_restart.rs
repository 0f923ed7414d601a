//! Integration test of a switch restart that keeps connections (issue #15, parts 1 and 3): the
//! connection table lives in a state file the next `podswitch run` adopts.
//!
//! Contract:
//! - As the other lab tests: root (else SKIPPED, a failure under CI), one lab per machine
//!   ([`labkit::Hold`]), the lab torn down when the hold drops, also on failure.
//! - On `examples/lab-9pods`, Service x/keep (ClusterIP 10.96.0.40:9100) selects x/a, x/b and
//!   x/c, where the test runs its own line servers (each answers every line with its pod's
//!   name). Twelve TCP connections from y/a, each asked once, spread over the backends.
//! - The switch is killed (SIGKILL: it writes nothing on its way out) and started again: every
//!   connection answers its next line from the same backend, and `show status` reports
//!   generation 2 with the connections adopted.
//! - Control: killed again, this time with its state file removed before the start (as with
//!   `--state-file none`), the same connections do not all survive: the test can tell a kept
//!   table from a lucky one.
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use serde_json::Value;

mod labkit;
use labkit::{ok, Hold};

const VIP: &str = "10.96.0.40:9100";
const BACKENDS: [(&str, &str); 3] = [("x/a", "psl_x_a"), ("x/b", "psl_x_b"), ("x/c", "psl_x_c")];
const CONNECTIONS: usize = 12;
const STATE_FILE: &str = "/run/podswitch/podswitch.conntrack";

/// Serves port 9100 in `netns`: every line read is answered with `name`.
fn line_server(name: &'static str, netns: &'static str) {
    let l = labkit::in_netns(netns, || TcpListener::bind("0.0.0.0:9100").expect("bind 9100"));
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut w = s.try_clone().unwrap();
                for line in BufReader::new(s).lines() {
                    if line.is_err() || w.write_all(format!("{name}\n").as_bytes()).is_err() {
                        break;
                    }
                }
            });
        }
    });
}

/// One connection's exchange: sends a line, returns the answer (or why there is none).
fn ask(r: &mut BufReader<TcpStream>, within: Duration) -> String {
    r.get_ref().set_read_timeout(Some(within)).unwrap();
    if let Err(e) = r.get_mut().write_all(b"which\n") {
        return format!("write: {e}");
    }
    let mut line = String::new();
    match r.read_line(&mut line) {
        Ok(0) => "closed".into(),
        Ok(_) => line.trim().to_string(),
        Err(e) => format!("read: {e}"),
    }
}

fn status() -> Value {
    serde_json::from_str(ok(&["show", "status", "--json"]).trim()).unwrap()
}

fn restart(remove_state: bool) {
    ok(&["lab", "switch", "stop", "--node", "node-1", "--kill"]);
    if remove_state {
        std::fs::remove_file(STATE_FILE).expect("the killed switch left its state file");
    }
    ok(&["lab", "switch", "start", "--node", "node-1"]);
}

#[test]
fn connections_through_a_service_keep_their_backend_across_a_kill_and_restart() {
    let test = "connections_through_a_service_keep_their_backend_across_a_kill_and_restart";
    let Some(lab) = Hold::new("restart", test, "lab-9pods") else { return };
    for (pod, _) in BACKENDS {
        let name = &pod[2..];
        lab.replace_labels("pods-x.yaml", &format!("  name: {name}\n  namespace: x\n  labels:\n"), &[format!("pod: {name}"), "app: keep".into()]);
    }
    lab.write(
        "svc.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: keep, namespace: x}\nspec:\n  clusterIP: 10.96.0.40\n  \
         selector: {app: keep}\n  ports:\n  - {name: k, port: 9100, targetPort: 9100}\n",
    );
    ok(&["lab", "up", "--manifests", lab.dir()]);
    for (pod, netns) in BACKENDS {
        line_server(pod, netns);
    }
    // Wait until the Service is served (the switch applied the directory).
    let conns: Vec<(BufReader<TcpStream>, String)> = labkit::in_netns("psl_y_a", || {
        let mut out = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while out.len() < CONNECTIONS {
            let Ok(s) = TcpStream::connect_timeout(&VIP.parse().unwrap(), Duration::from_secs(1)) else {
                assert!(std::time::Instant::now() < deadline, "the Service never answered");
                std::thread::sleep(Duration::from_millis(200));
                continue;
            };
            let mut r = BufReader::new(s);
            let first = ask(&mut r, Duration::from_secs(2));
            assert!(first.starts_with("x/"), "first answer: {first}");
            out.push((r, first));
        }
        out
    });
    let mut conns = conns;
    let backends: std::collections::BTreeSet<&String> = conns.iter().map(|(_, b)| b).collect();
    assert!(backends.len() >= 2, "12 connections over 3 backends should use more than one: {backends:?}");

    restart(false);
    let st = status();
    let cs = &st["conntrack_state"];
    assert_eq!(cs["generation"], 2, "{cs}");
    assert!(cs["fresh"].is_null() && cs["adopted"].as_u64().unwrap_or(0) >= CONNECTIONS as u64, "{cs}");
    let after: Vec<(String, String)> = conns.iter_mut().map(|(r, b)| (b.clone(), ask(r, Duration::from_secs(10)))).collect();
    let moved: Vec<_> = after.iter().filter(|(before, now)| before != now).collect();
    assert!(moved.is_empty(), "after kill -9 and restart, every connection answers from its backend (before, after): {moved:?} of {after:?}");

    // Control: without the state file the same restart loses connections.
    restart(true);
    assert_eq!(status()["conntrack_state"]["fresh"], "new_file");
    let lost = conns.iter_mut().map(|(r, b)| (b.clone(), ask(r, Duration::from_secs(3)))).filter(|(b, now)| b != now).count();
    assert!(lost > 0, "without the state file some connection must break or move, else this test proves nothing");
}
