//! No loss at the door (#13 part 4): under one long TCP stream pod -> pod the kernel drops
//! nothing before the switch sees it, on a one-node lab (examples/lab-2pods).
//!
//! Contract:
//! - As the other lab tests: root (else SKIPPED), one lab per machine ([`labkit::Hold`]), the
//!   lab torn down when the hold drops.
//! - A server in pod x/b reads everything one connection from x/a sends as fast as it can for
//!   [`SECONDS`] seconds (128 KiB writes, the pods' TCP defaults: what iperf3 does). Every port's
//!   kernel counters of `podswitch show ports --json` (receive ring full, no fill frame,
//!   invalid descriptors: `KERNEL_LOST`) are the same after as before, and at least
//!   [`MIN_BYTES`] crossed (the stream was bulk, not a trickle the rings absorb anyway).
//!   Before #13 part 4 the client's port lost about a sixth of the stream's frames (fill
//!   allowance stuck at 256 frames; rings of 2,048).
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;

mod labkit;
use labkit::{in_netns, ok, pod_ips, Hold};

const SECONDS: u64 = 4;
const MIN_BYTES: u64 = 200 << 20;
const PORT: u16 = 5999;

/// owner -> frames the kernel lost on that port so far.
fn kernel_lost() -> Vec<(String, u64)> {
    let v: Value = serde_json::from_str(&ok(&["show", "ports", "--json"])).unwrap();
    v["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let k = &p["kernel"];
            let n = |f: &str| k[f].as_u64().unwrap_or_else(|| panic!("no kernel.{f} in {p}"));
            let lost = n("rx_dropped") + n("rx_ring_full") + n("rx_invalid_descs") + n("tx_invalid_descs");
            (p["owner"].as_str().unwrap_or("?").to_string(), lost)
        })
        .collect()
}

#[test]
fn one_tcp_stream_pod_to_pod_loses_nothing_at_the_door() {
    let test = "one_tcp_stream_pod_to_pod_loses_nothing_at_the_door";
    let Some(hold) = Hold::new("door", test, "lab-2pods") else { return };
    ok(&["lab", "up", "--manifests", hold.dir()]);
    let ips = pod_ips();
    let to: SocketAddr = format!("{}:{PORT}", ips["x/b"]).parse().unwrap();
    let before = kernel_lost();
    assert!(before.len() >= 2, "both pods' ports: {before:?}");

    let listener = in_netns("psl_x_b", || TcpListener::bind(to).unwrap());
    let (sent, received) = std::thread::scope(|s| {
        let server = s.spawn(|| {
            let (mut c, _) = listener.accept().unwrap();
            let mut buf = vec![0u8; 256 << 10];
            let mut total = 0u64;
            loop {
                match c.read(&mut buf) {
                    Ok(0) => break total,
                    Ok(n) => total += n as u64,
                    Err(e) => panic!("x/b read: {e} after {total} bytes"),
                }
            }
        });
        let sent = in_netns("psl_x_a", || {
            let mut c = TcpStream::connect_timeout(&to, Duration::from_secs(3)).unwrap();
            let buf = vec![0x5au8; 128 << 10];
            let end = Instant::now() + Duration::from_secs(SECONDS);
            let mut total = 0u64;
            while Instant::now() < end {
                c.write_all(&buf).unwrap_or_else(|e| panic!("x/a write: {e} after {total} bytes"));
                total += buf.len() as u64;
            }
            c.shutdown(std::net::Shutdown::Write).unwrap();
            total
        });
        (sent, server.join().unwrap())
    });
    assert_eq!(sent, received, "x/b read what x/a wrote");
    eprintln!("door: {} MiB in {SECONDS} s ({:.2} Gbit/s)", received >> 20, received as f64 * 8.0 / SECONDS as f64 / 1e9);
    assert!(received >= MIN_BYTES, "a bulk stream: {} MiB in {SECONDS} s", received >> 20);
    let after = kernel_lost();
    let grew: Vec<String> = after
        .iter()
        .filter_map(|(owner, n)| {
            let b = before.iter().find(|(o, _)| o == owner).map_or(0, |(_, b)| *b);
            (*n > b).then(|| format!("{owner}: {}", n - b))
        })
        .collect();
    assert!(
        grew.is_empty(),
        "the kernel dropped frames before the switch saw them ({} MiB sent): {}\n{}",
        received >> 20,
        grew.join(", "),
        ok(&["show", "ports"])
    );
    drop(hold);
}
