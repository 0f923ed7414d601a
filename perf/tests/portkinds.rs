//! `podswitch-perf portkinds` once, briefly (1 round, 1 s per kind): both candidate pod-port
//! mechanisms carry one TCP stream between pods at default offloads, the frames they carry are
//! GSO super-frames (above 1,514 bytes: the offloads were kept end to end), and pod b's kernel
//! receives one skb per frame the forwarder wrote (a super-frame is not segmented on the way
//! in). Needs root, iperf3 and nft: without root it prints `SKIPPED` and passes, or fails when `CI`
//! is set; the benchmark takes the lab lock and removes its `pk-` namespaces itself.
use std::process::Command;

use serde_json::Value;

#[path = "../../test-support/needs_root.rs"]
mod needs_root;
use needs_root::{root_or_skip, skip_or_fail};

const PERF: &str = env!("CARGO_BIN_EXE_podswitch-perf");

#[test]
fn both_mechanisms_carry_super_frames_whole() {
    let name = "both_mechanisms_carry_super_frames_whole";
    if !root_or_skip(name) {
        return;
    }
    for prog in ["iperf3", "nft"] {
        if Command::new(prog).arg("--version").output().is_err() {
            skip_or_fail(name, &format!("{prog} is not installed (scripts/test.sh installs it)"));
            return;
        }
    }
    let out = Command::new(PERF)
        .args(["portkinds", "--rounds", "1", "--seconds", "1", "--kinds", "packet_vnet,tap_vnet", "--json", "--no-save"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "portkinds failed ({}):\n{stderr}", out.status);
    let v: Value = stdout.lines().rev().find_map(|l| serde_json::from_str(l).ok()).unwrap_or_else(|| panic!("no JSON in {stdout}\n{stderr}"));
    for kind in ["packet_vnet", "tap_vnet"] {
        let gbps = v[format!("{kind}_gbps")].as_f64().unwrap_or(0.0);
        assert!(gbps > 0.0, "{kind} carried nothing:\n{stderr}");
        let max = v[format!("{kind}_max_frame")].as_u64().unwrap_or(0);
        assert!(max > 1514, "{kind}: largest frame {max} bytes, so GSO was not kept:\n{stderr}");
        let row = v["rows"].as_array().unwrap().iter().find(|r| r["kind"] == kind).unwrap();
        let per_frame = row["pod_b_skbs_per_frame"].as_f64().unwrap();
        assert!((0.98..=1.02).contains(&per_frame), "{kind}: pod b got {per_frame} skbs per frame written:\n{row}");
    }
    let left = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&left.stdout).lines().any(|l| l.starts_with("pk-")), "namespaces left behind");
}
