//! kube-proxy's nftables mode (Kubernetes 1.31+, `pkg/proxy/nftables/proxier.go`) as the
//! kernel setups of `bench e2e` and `bench apps` load it, written in kube-proxy's own form
//! (`add table`, `add chain`, `add rule`, `add element`):
//!
//! - [`base`]: table `ip kube-proxy`; base chains `nat-prerouting` / `nat-output` (jump
//!   `services`), `nat-postrouting` (jump `masquerading`), `filter-prerouting` /
//!   `filter-forward` / `filter-output` / `filter-output-post-dnat` (`ct state new` checks);
//!   `services` looks up `ip daddr . meta l4proto . th dport` in the `service-ips` verdict map;
//!   the set `cluster-ips` and the maps `no-endpoint-services`, `firewall-ips` (empty here: every
//!   Service has endpoints and no LoadBalancer). With NodePorts also `filter-input`, the map
//!   `service-nodeports` (looked up for local destinations), `no-endpoint-nodeports` and
//!   `reject-chain`.
//! - [`service_chain`]: one Service port: a chain `service-HASH-NS/NAME/PROTO/PORTNAME`
//!   (masquerade mark for sources outside the pod CIDR, then `numgen random mod N vmap { i :
//!   goto endpoint-… }`) and per endpoint a chain `endpoint-HASH-…__IP/PORT` (mark hairpin
//!   traffic, `dnat to IP:PORT`). The caller adds the map elements that lead there.
use std::fmt::Write as _;
use std::net::Ipv4Addr;

/// The table every rule goes into.
pub const T: &str = "ip kube-proxy";

/// kube-proxy's chain-name hash: the first 8 characters of base32(SHA-256(...)); SHA-1 here,
/// which only changes the letters.
pub fn hash8(s: &str) -> String {
    const B32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let d = sha1_smol::Sha1::from(s).digest().bytes();
    let bits = d[..5].iter().fold(0u64, |b, x| (b << 8) | u64::from(*x));
    (0..8).map(|i| B32[((bits >> (35 - 5 * i)) & 31) as usize] as char).collect()
}

/// The table, sets, maps, base chains and fixed rules, for ClusterIPs in `service_cidr`, with
/// what NodePorts need when `nodeports`.
pub fn base(service_cidr: &str, nodeports: bool) -> String {
    let mut o = String::new();
    let w = &mut o;
    let _ = writeln!(w, "add table {T} {{ comment \"rules for kube-proxy\" ; }}");
    let _ = writeln!(w, "add set {T} cluster-ips {{ type ipv4_addr ; comment \"Active ClusterIPs\" ; }}");
    let _ = writeln!(w, "add map {T} service-ips {{ type ipv4_addr . inet_proto . inet_service : verdict ; comment \"ClusterIP, ExternalIP and LoadBalancer IP traffic\" ; }}");
    if nodeports {
        let _ = writeln!(w, "add map {T} service-nodeports {{ type inet_proto . inet_service : verdict ; comment \"NodePort traffic\" ; }}");
    }
    let _ = writeln!(w, "add map {T} no-endpoint-services {{ type ipv4_addr . inet_proto . inet_service : verdict ; }}");
    if nodeports {
        let _ = writeln!(w, "add map {T} no-endpoint-nodeports {{ type inet_proto . inet_service : verdict ; }}");
    }
    let _ = writeln!(w, "add map {T} firewall-ips {{ type ipv4_addr . inet_proto . inet_service : verdict ; }}");
    let hooks = [
        ("filter-prerouting", "type filter hook prerouting priority -110", true),
        ("filter-input", "type filter hook input priority -110", nodeports),
        ("filter-forward", "type filter hook forward priority -110", true),
        ("filter-output", "type filter hook output priority -110", true),
        ("filter-output-post-dnat", "type filter hook output priority -90", true),
        ("nat-prerouting", "type nat hook prerouting priority -100", true),
        ("nat-output", "type nat hook output priority -100", true),
        ("nat-postrouting", "type nat hook postrouting priority 100", true),
    ];
    for (c, hook, _) in hooks.iter().filter(|h| h.2) {
        let _ = writeln!(w, "add chain {T} {c} {{ {hook} ; }}");
    }
    let chains = [
        ("services", true),
        ("masquerading", true),
        ("mark-for-masquerade", true),
        ("reject-chain", nodeports),
        ("firewall-check", true),
        ("service-endpoints-check", true),
        ("nodeport-endpoints-check", nodeports),
        ("cluster-ips-check", true),
    ];
    for (c, _) in chains.iter().filter(|c| c.1) {
        let _ = writeln!(w, "add chain {T} {c}");
    }
    let _ = writeln!(w, "add rule {T} filter-prerouting ct state new jump firewall-check");
    if nodeports {
        let _ = writeln!(w, "add rule {T} filter-input ct state new jump nodeport-endpoints-check");
        let _ = writeln!(w, "add rule {T} filter-input ct state new jump service-endpoints-check");
    }
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
    if nodeports {
        let _ = writeln!(w, "add rule {T} reject-chain reject");
    }
    let _ = writeln!(w, "add rule {T} firewall-check ip daddr . meta l4proto . th dport vmap @firewall-ips");
    let _ = writeln!(w, "add rule {T} service-endpoints-check ip daddr . meta l4proto . th dport vmap @no-endpoint-services");
    if nodeports {
        let _ = writeln!(w, "add rule {T} nodeport-endpoints-check fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @no-endpoint-nodeports");
    }
    let _ = writeln!(w, "add rule {T} cluster-ips-check ip daddr @cluster-ips reject comment \"Reject traffic to invalid ports of ClusterIPs\"");
    let _ = writeln!(w, "add rule {T} cluster-ips-check ip daddr {service_cidr} drop comment \"Drop traffic to unallocated ClusterIPs\"");
    let _ = writeln!(w, "add rule {T} services ip daddr . meta l4proto . th dport vmap @service-ips");
    if nodeports {
        let _ = writeln!(w, "add rule {T} services fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports");
    }
    o
}

/// One Service port: its name as kube-proxy makes it (`spn`: `NS/NAME/PROTO/PORTNAME`), `proto`
/// (`tcp` or `udp`), its ClusterIP and port, its endpoints and their port.
pub struct ServicePort<'a> {
    pub spn: &'a str,
    pub proto: &'a str,
    pub cluster_ip: Ipv4Addr,
    pub port: u16,
    pub endpoints: &'a [Ipv4Addr],
    pub target_port: u16,
    /// Sources outside it get the masquerade mark.
    pub pod_cidr: &'a str,
}

/// Writes the endpoint chains and the service chain of `s` to `w`; returns the service chain's
/// name (for the map elements that lead there).
pub fn service_chain(w: &mut String, s: &ServicePort) -> String {
    let (spn, proto) = (s.spn, s.proto);
    let chain = format!("service-{}-{spn}", hash8(spn));
    let mut vmap = Vec::with_capacity(s.endpoints.len());
    for (i, ep) in s.endpoints.iter().enumerate() {
        let epn = format!("{spn}__{ep}/{}", s.target_port);
        let ec = format!("endpoint-{}-{epn}", hash8(&epn));
        let _ = writeln!(w, "add chain {T} {ec}");
        let _ = writeln!(w, "add rule {T} {ec} ip saddr {ep} jump mark-for-masquerade");
        let _ = writeln!(w, "add rule {T} {ec} meta l4proto {proto} dnat to {ep}:{}", s.target_port);
        vmap.push(format!("{i} : goto {ec}"));
    }
    let _ = writeln!(w, "add chain {T} {chain}");
    let _ = writeln!(w, "add rule {T} {chain} ip daddr {} {proto} dport {} ip saddr != {} jump mark-for-masquerade", s.cluster_ip, s.port, s.pod_cidr);
    let _ = writeln!(w, "add rule {T} {chain} numgen random mod {} vmap {{ {} }}", s.endpoints.len(), vmap.join(" , "));
    chain
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodeports_add_their_maps_chains_and_rules() {
        let plain = base("10.96.0.0/16", false);
        let full = base("10.96.0.0/16", true);
        assert!(!plain.contains("nodeport") && !plain.contains("filter-input") && !plain.contains("reject-chain"));
        for l in plain.lines() {
            assert!(full.contains(l), "{l}");
        }
        assert_eq!(full.lines().count() - plain.lines().count(), 10);
        assert!(full.contains("vmap @service-nodeports"));
    }

    #[test]
    fn a_service_port_chains_to_each_endpoint() {
        let mut w = String::new();
        let eps = [Ipv4Addr::new(10, 244, 0, 11), Ipv4Addr::new(10, 244, 0, 12)];
        let p = ServicePort { spn: "ns/s/tcp/http", proto: "tcp", cluster_ip: Ipv4Addr::new(10, 96, 0, 10), port: 80, endpoints: &eps, target_port: 8080, pod_cidr: "10.244.0.0/24" };
        let chain = service_chain(&mut w, &p);
        assert_eq!(chain, format!("service-{}-ns/s/tcp/http", hash8("ns/s/tcp/http")));
        assert!(w.contains("meta l4proto tcp dnat to 10.244.0.12:8080"));
        assert!(w.contains(&format!("add rule ip kube-proxy {chain} ip daddr 10.96.0.10 tcp dport 80 ip saddr != 10.244.0.0/24 jump mark-for-masquerade")));
        assert!(w.contains("numgen random mod 2 vmap { 0 : goto endpoint-"));
        assert_eq!(hash8("x").len(), 8);
    }
}
