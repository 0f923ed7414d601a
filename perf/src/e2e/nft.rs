//! The kernel path's Services: the nftables ruleset kube-proxy's nftables mode installs for the
//! benchmark's [`Cluster`], in its layout ([`crate::kube_proxy`], with NodePorts): per Service
//! port `NS/NAME/udp/http` a service chain and its endpoint chains, per NodePort a chain
//! `external-HASH-…` (mark for masquerade, goto the service chain).
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
use crate::kube_proxy::{self, hash8, service_chain, ServicePort, T};
use crate::sys;

fn service(w: &mut String, s: &Svc) {
    let spn = format!("{}/{}/udp/http", s.namespace, s.name);
    let p = ServicePort { spn: &spn, proto: "udp", cluster_ip: s.cluster_ip, port: s.port, endpoints: &s.endpoints, target_port: s.target_port, pod_cidr: POD_CIDR };
    let chain = service_chain(w, &p);
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
    let mut out = vec![kube_proxy::base(SERVICE_CIDR, true)];
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
