//! The kernel path's Services: the nftables ruleset kube-proxy's nftables mode (Kubernetes
//! 1.31+, `pkg/proxy/nftables`) installs for the benchmark's [`Cluster`], in the same layout:
//!
//! - table `ip kube-proxy`; base chains `nat-prerouting` / `nat-output` (jump `services`),
//!   `nat-postrouting` (jump `masquerading`), `filter-prerouting` / `filter-forward` /
//!   `filter-input` / `filter-output` (`ct state new` checks);
//! - `services`: `ip daddr . meta l4proto . th dport vmap @service-ips`, then
//!   `fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports`;
//! - per Service port a chain `service-HASH-NS/NAME/udp/http` (masquerade mark for sources outside
//!   the cluster CIDR, then `numgen random mod N vmap { i : goto endpoint-… }`), per endpoint a
//!   chain `endpoint-HASH-NS/NAME/udp/http__IP/PORT` (mark hairpin traffic, `dnat to IP:PORT`),
//!   per NodePort a chain `external-HASH-…` (mark for masquerade, goto the service chain);
//! - sets `cluster-ips`, maps `no-endpoint-services`, `no-endpoint-nodeports`, `firewall-ips`
//!   (empty here: every Service has endpoints and no LoadBalancer).
//!
//! Contract: [`ruleset`] returns the ruleset as `nft -f` command batches (kube-proxy's own form:
//! `add table`, `add chain`, `add rule`, `add element`), the base in the first batch and the
//! Services spread over the others; [`load`] applies them in order inside a network namespace.
//! One huge transaction is much slower on this kernel (each added jump re-validates the table),
//! so the Services go in batches of `per_batch`.
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::objects::{Cluster, Svc, POD_CIDR, SERVICE_CIDR};
use crate::sys;

const T: &str = "ip kube-proxy";

/// kube-proxy's chain-name hash: the first 8 characters of base32(SHA-256(...)); SHA-1 here,
/// which only changes the letters.
fn hash8(s: &str) -> String {
    const B32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let d = sha1_smol::Sha1::from(s).digest().bytes();
    let mut bits: u64 = 0;
    for b in &d[..5] {
        bits = (bits << 8) | *b as u64;
    }
    (0..8).map(|i| B32[((bits >> (35 - 5 * i)) & 31) as usize] as char).collect()
}

fn svc_port_name(s: &Svc) -> String {
    format!("{}/{}/udp/http", s.namespace, s.name)
}

fn base() -> String {
    let mut o = String::new();
    let w = &mut o;
    let _ = writeln!(w, "add table {T} {{ comment \"rules for kube-proxy\" ; }}");
    let _ = writeln!(w, "add set {T} cluster-ips {{ type ipv4_addr ; comment \"Active ClusterIPs\" ; }}");
    let _ = writeln!(w, "add map {T} service-ips {{ type ipv4_addr . inet_proto . inet_service : verdict ; comment \"ClusterIP, ExternalIP and LoadBalancer IP traffic\" ; }}");
    let _ = writeln!(w, "add map {T} service-nodeports {{ type inet_proto . inet_service : verdict ; comment \"NodePort traffic\" ; }}");
    let _ = writeln!(w, "add map {T} no-endpoint-services {{ type ipv4_addr . inet_proto . inet_service : verdict ; }}");
    let _ = writeln!(w, "add map {T} no-endpoint-nodeports {{ type inet_proto . inet_service : verdict ; }}");
    let _ = writeln!(w, "add map {T} firewall-ips {{ type ipv4_addr . inet_proto . inet_service : verdict ; }}");
    for (c, hook) in [
        ("filter-prerouting", "type filter hook prerouting priority -110"),
        ("filter-input", "type filter hook input priority -110"),
        ("filter-forward", "type filter hook forward priority -110"),
        ("filter-output", "type filter hook output priority -110"),
        ("filter-output-post-dnat", "type filter hook output priority -90"),
        ("nat-prerouting", "type nat hook prerouting priority -100"),
        ("nat-output", "type nat hook output priority -100"),
        ("nat-postrouting", "type nat hook postrouting priority 100"),
    ] {
        let _ = writeln!(w, "add chain {T} {c} {{ {hook} ; }}");
    }
    for c in ["services", "masquerading", "mark-for-masquerade", "reject-chain", "firewall-check", "service-endpoints-check", "nodeport-endpoints-check", "cluster-ips-check"] {
        let _ = writeln!(w, "add chain {T} {c}");
    }
    let _ = writeln!(w, "add rule {T} filter-prerouting ct state new jump firewall-check");
    let _ = writeln!(w, "add rule {T} filter-input ct state new jump nodeport-endpoints-check");
    let _ = writeln!(w, "add rule {T} filter-input ct state new jump service-endpoints-check");
    let _ = writeln!(w, "add rule {T} filter-forward ct state new jump service-endpoints-check");
    let _ = writeln!(w, "add rule {T} filter-forward ct state new jump cluster-ips-check");
    let _ = writeln!(w, "add rule {T} filter-output ct state new jump service-endpoints-check");
    let _ = writeln!(w, "add rule {T} filter-output ct state new jump firewall-check");
    let _ = writeln!(w, "add rule {T} filter-output-post-dnat ct state new jump cluster-ips-check");
    let _ = writeln!(w, "add rule {T} nat-prerouting jump services");
    let _ = writeln!(w, "add rule {T} nat-output jump services");
    let _ = writeln!(w, "add rule {T} nat-postrouting jump masquerading");
    let _ = writeln!(w, "add rule {T} masquerading meta mark & 0x4000 == 0 return");
    let _ = writeln!(w, "add rule {T} masquerading meta mark set meta mark ^ 0x4000");
    let _ = writeln!(w, "add rule {T} masquerading masquerade fully-random");
    let _ = writeln!(w, "add rule {T} mark-for-masquerade meta mark set meta mark | 0x4000");
    let _ = writeln!(w, "add rule {T} reject-chain reject");
    let _ = writeln!(w, "add rule {T} firewall-check ip daddr . meta l4proto . th dport vmap @firewall-ips");
    let _ = writeln!(w, "add rule {T} service-endpoints-check ip daddr . meta l4proto . th dport vmap @no-endpoint-services");
    let _ = writeln!(w, "add rule {T} nodeport-endpoints-check fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @no-endpoint-nodeports");
    let _ = writeln!(w, "add rule {T} cluster-ips-check ip daddr @cluster-ips reject comment \"Reject traffic to invalid ports of ClusterIPs\"");
    let _ = writeln!(w, "add rule {T} cluster-ips-check ip daddr {SERVICE_CIDR} drop comment \"Drop traffic to unallocated ClusterIPs\"");
    let _ = writeln!(w, "add rule {T} services ip daddr . meta l4proto . th dport vmap @service-ips");
    let _ = writeln!(
        w,
        "add rule {T} services fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports"
    );
    o
}

fn service(w: &mut String, s: &Svc) {
    let spn = svc_port_name(s);
    let chain = format!("service-{}-{spn}", hash8(&spn));
    let mut vmap = Vec::with_capacity(s.endpoints.len());
    for (i, ep) in s.endpoints.iter().enumerate() {
        let epn = format!("{spn}__{ep}/{}", s.target_port);
        let ec = format!("endpoint-{}-{epn}", hash8(&epn));
        let _ = writeln!(w, "add chain {T} {ec}");
        let _ = writeln!(w, "add rule {T} {ec} ip saddr {ep} jump mark-for-masquerade");
        let _ = writeln!(w, "add rule {T} {ec} meta l4proto udp dnat to {ep}:{}", s.target_port);
        vmap.push(format!("{i} : goto {ec}"));
    }
    let _ = writeln!(w, "add chain {T} {chain}");
    let _ = writeln!(w, "add rule {T} {chain} ip daddr {} udp dport {} ip saddr != {POD_CIDR} jump mark-for-masquerade", s.cluster_ip, s.port);
    let _ = writeln!(w, "add rule {T} {chain} numgen random mod {} vmap {{ {} }}", s.endpoints.len(), vmap.join(" , "));
    let _ = writeln!(w, "add element {T} cluster-ips {{ {} }}", s.cluster_ip);
    let _ = writeln!(w, "add element {T} service-ips {{ {} . udp . {} : goto {chain} }}", s.cluster_ip, s.port);
    if let Some(np) = s.node_port {
        let ext = format!("external-{}-{spn}", hash8(&spn));
        let _ = writeln!(w, "add chain {T} {ext}");
        let _ = writeln!(w, "add rule {T} {ext} jump mark-for-masquerade comment \"masquerade traffic from external sources\"");
        let _ = writeln!(w, "add rule {T} {ext} goto {chain}");
        let _ = writeln!(w, "add element {T} service-nodeports {{ udp . {np} : goto {ext} }}");
    }
}

/// The ruleset as batches: the base first, then the Services, `per_batch` per batch.
pub fn ruleset(c: &Cluster, per_batch: usize) -> Vec<String> {
    let mut out = vec![base()];
    for chunk in c.services.chunks(per_batch.max(1)) {
        let mut w = String::with_capacity(chunk.len() * 2048);
        for s in chunk {
            service(&mut w, s);
        }
        out.push(w);
    }
    out
}

/// Applies the batches with `nft -f` inside network namespace `ns`; calls `progress` after each.
pub fn load(ns: &str, batches: &[String], dir: &Path, mut progress: impl FnMut(usize, usize)) -> Result<Duration> {
    let t0 = Instant::now();
    for (i, b) in batches.iter().enumerate() {
        let f = dir.join(format!("kube-proxy-{i:03}.nft"));
        std::fs::write(&f, b).with_context(|| format!("writing {}", f.display()))?;
        sys::run(&["ip", "netns", "exec", ns, "nft", "-f", f.to_str().context("path")?])
            .with_context(|| format!("loading nftables batch {} of {}", i + 1, batches.len()))?;
        let _ = std::fs::remove_file(&f);
        progress(i + 1, batches.len());
        if sys::interrupted() {
            return Err(sys::Interrupted.into());
        }
    }
    Ok(t0.elapsed())
}

/// Chains in table `ip kube-proxy` of `ns` (to check the load).
pub fn chain_count(ns: &str) -> Result<usize> {
    let out = sys::run(&["ip", "netns", "exec", ns, "nft", "list", "chains", "ip"])?;
    Ok(out.lines().filter(|l| l.trim_start().starts_with("chain ")).count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_of_the_measured_service() {
        let c = Cluster::generate(3, 2, 10, 0);
        let b = ruleset(&c, 2);
        assert_eq!(b.len(), 3);
        let all = b.concat();
        assert!(all.contains("vmap @service-ips"));
        assert!(all.contains("add element ip kube-proxy service-ips { 10.96.0.10 . udp . 80 : goto service-"));
        assert!(all.contains("add element ip kube-proxy service-nodeports { udp . 30080 : goto external-"));
        assert!(all.contains("numgen random mod 1 vmap { 0 : goto endpoint-"));
        assert!(all.contains("meta l4proto udp dnat to 10.244.0.11:8080"));
        assert!(all.contains("numgen random mod 2 vmap"));
        // 1 + 2 Service chains, 1 + 2 x 2 endpoint chains, 1 external chain
        let chains = |prefix: &str| all.lines().filter(|l| l.starts_with(&format!("add chain ip kube-proxy {prefix}")) && l.contains("/udp/http")).count();
        assert_eq!(chains("service-"), 3);
        assert_eq!(chains("endpoint-"), 5);
        assert_eq!(chains("external-"), 1);
        assert_eq!(hash8("ns0/e2e/udp/http").len(), 8);
    }
}
