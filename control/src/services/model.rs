//! Service and EndpointSlice objects read into plain values, validated as the API server would.
//!
//! Contract: pure functions. A problem that makes the whole object unusable (a bad address, an
//! unknown type or policy, a bad source range) returns `None` after pushing one sentence naming
//! the object; a problem confined to one port pushes a sentence and drops that port only.
//! IPv6 addresses are skipped silently (this switch serves IPv4; a dual-stack Service keeps
//! its IPv4 side).
//! Every field these functions read is also hashed by [`super::fingerprint`]: a field read here
//! and not there would not trigger a recompile when it changes.
use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use ipnet::{IpNet, Ipv4Net};
use k8s_openapi::api::core::v1::{Service, ServiceSpec};
use crate::manifests::kinds::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::allocate;
use super::ServiceConfig;
use crate::model::L4Proto;

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// A Service (and the EndpointSlices the controller copies its labels to) with this label,
/// whatever its value, is another proxy's: kube-proxy's informers select
/// `!service.kubernetes.io/service-proxy-name`, and so does podswitch.
pub const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";
/// The label the EndpointSlice controller puts on a headless Service's slices; kube-proxy's
/// informers select `!service.kubernetes.io/headless` (on Services and slices alike).
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";

/// The label, of [`SERVICE_PROXY_NAME_LABEL`] and [`HEADLESS_LABEL`], that leaves an object to
/// another proxy (as kube-proxy's informers' label selector leaves it out), if it has one.
pub fn left_to_other_proxy(labels: Option<&BTreeMap<String, String>>) -> Option<&'static str> {
    let labels = labels?;
    left_to_other_proxy_by(|l| labels.contains_key(l))
}

/// [`left_to_other_proxy`] for labels kept otherwise (an EndpointSlice's): `has(label)`.
pub fn left_to_other_proxy_by(has: impl Fn(&str) -> bool) -> Option<&'static str> {
    [SERVICE_PROXY_NAME_LABEL, HEADLESS_LABEL].into_iter().find(|l| has(l))
}

/// `sessionAffinityConfig.clientIP.timeoutSeconds` when unset (3 hours).
pub const DEFAULT_AFFINITY_TIMEOUT_S: u32 = 10_800;
/// The largest timeout the API server accepts (1 day).
pub const MAX_AFFINITY_TIMEOUT_S: u32 = 86_400;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum ServiceType {
    ClusterIP,
    NodePort,
    LoadBalancer,
    ExternalName,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub enum TrafficPolicy {
    #[default]
    Cluster,
    Local,
}

/// What the Service says about its ClusterIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterIpSpec {
    /// Neither `clusterIP` nor an IPv4 entry of `clusterIPs`: one is allocated.
    Auto,
    /// `clusterIP: None`.
    Headless,
    /// Only IPv6 ClusterIPs (or `ipFamilies` without IPv4): nothing for an IPv4 proxy.
    Ipv6Only,
    Ip(Ipv4Addr),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetPort {
    Number(u16),
    Name(String),
}

impl std::fmt::Display for TargetPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Number(n) => write!(f, "{n}"),
            Self::Name(s) => write!(f, "{s:?}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    /// `ports[].name`, `""` when unset.
    pub name: String,
    pub port: u16,
    pub proto: L4Proto,
    pub target: TargetPort,
    /// `nodePort` as the manifest sets it (never for type ClusterIP).
    pub node_port: Option<u16>,
}

impl PortSpec {
    /// `80/TCP`, for sentences.
    pub fn label(&self) -> String {
        format!("{}/{}", self.port, self.proto.as_str().to_ascii_uppercase())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceModel {
    pub namespace: String,
    pub name: String,
    /// `namespace/name`.
    pub key: String,
    pub type_: ServiceType,
    pub cluster_ip: ClusterIpSpec,
    pub ports: Vec<PortSpec>,
    /// A non-empty `selector`.
    pub selector: Option<BTreeMap<String, String>>,
    pub external_ips: Vec<Ipv4Addr>,
    /// `status.loadBalancer.ingress[].ip` (type LoadBalancer only, `ipMode: Proxy` excluded).
    pub lb_ips: Vec<Ipv4Addr>,
    /// `loadBalancerSourceRanges` (type LoadBalancer only), host bits cleared.
    pub source_ranges: Vec<Ipv4Net>,
    pub external_policy: TrafficPolicy,
    pub internal_policy: TrafficPolicy,
    pub affinity_timeout_s: Option<u32>,
    pub allocate_lb_node_ports: bool,
    pub publish_not_ready: bool,
    /// `spec.trafficDistribution` when it is one this switch knows; it matters only for
    /// endpoints derived from the selector (for EndpointSlices, the hints the controller wrote
    /// from it are what counts, as in kube-proxy).
    pub traffic_distribution: Option<TrafficDistribution>,
    /// A LoadBalancer Service with `externalTrafficPolicy: Local` (kube-proxy's
    /// `NeedsHealthCheck`): this node answers load balancers' health checks on its
    /// `healthCheckNodePort`.
    pub needs_health_check: bool,
    /// `healthCheckNodePort` as the manifest sets it (when the Service needs a health check;
    /// without one, one is allocated from the NodePort range, as the API server does).
    pub health_check_node_port: Option<u16>,
    /// The label that leaves the Service to another proxy ([`left_to_other_proxy`]): it gets
    /// nothing here, as kube-proxy never sees it.
    pub other_proxy: Option<&'static str>,
}

/// `spec.trafficDistribution`: how the EndpointSlice controller hints a Service's endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum TrafficDistribution {
    /// The older name of `PreferSameZone`.
    PreferClose,
    PreferSameZone,
    PreferSameNode,
}

impl TrafficDistribution {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "PreferClose" => Some(Self::PreferClose),
            "PreferSameZone" => Some(Self::PreferSameZone),
            "PreferSameNode" => Some(Self::PreferSameNode),
            _ => None,
        }
    }
}

/// The node label that names a node's zone.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// An endpoint's `hints`: the zones and nodes it is meant for (empty lists when unset), names
/// shared with the other endpoints that carry them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Hints {
    #[serde(rename = "for_zones", skip_serializing_if = "<[_]>::is_empty")]
    pub zones: Box<[Arc<str>]>,
    #[serde(rename = "for_nodes", skip_serializing_if = "<[_]>::is_empty")]
    pub nodes: Box<[Arc<str>]>,
}

impl Hints {
    pub fn for_zone(&self, zone: &str) -> bool {
        self.zones.iter().any(|z| &**z == zone)
    }
    pub fn for_node(&self, node: &str) -> bool {
        self.nodes.iter().any(|n| &**n == node)
    }
}

impl ServiceModel {
    /// Whether the Service gets frontends at all (not ExternalName, not headless, not IPv6-only,
    /// not another proxy's).
    pub fn has_frontends(&self) -> bool {
        self.other_proxy.is_none()
            && self.type_ != ServiceType::ExternalName
            && matches!(self.cluster_ip, ClusterIpSpec::Auto | ClusterIpSpec::Ip(_))
    }

    /// Whether ports without a `nodePort` get one allocated.
    pub fn allocates_node_ports(&self) -> bool {
        match self.type_ {
            ServiceType::NodePort => true,
            ServiceType::LoadBalancer => self.allocate_lb_node_ports,
            _ => false,
        }
    }

    /// The Service's ports grouped as the API server allocates NodePorts: ports with the same
    /// `port` number (e.g. 53/TCP and 53/UDP) share one NodePort; a requested `nodePort` on
    /// any of them is the group's. Returns (port number, requested nodePort) in spec order.
    pub fn node_port_groups(&self) -> Vec<(u16, Option<u16>)> {
        let mut out: Vec<(u16, Option<u16>)> = Vec::new();
        for p in &self.ports {
            match out.iter_mut().find(|(port, _)| *port == p.port) {
                Some(g) => g.1 = g.1.or(p.node_port),
                None => out.push((p.port, p.node_port)),
            }
        }
        out
    }

    /// `namespace/name` or `namespace/name:port-name`, as kube-proxy names a Service port.
    pub fn port_name(&self, p: &PortSpec) -> String {
        if p.name.is_empty() {
            self.key.clone()
        } else {
            [self.key.as_str(), ":", p.name.as_str()].concat()
        }
    }
}

/// One endpoint of an EndpointSlice (its first address: kube-proxy ignores the others).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceEndpoint {
    pub ip: Ipv4Addr,
    /// `conditions.ready`, nil read as true.
    pub ready: bool,
    /// `conditions.serving`, nil read as true (API reference and kube-proxy).
    pub serving: bool,
    /// `conditions.terminating`, nil read as false.
    pub terminating: bool,
    /// `nodeName`, else the deprecated `topology["kubernetes.io/hostname"]` (shared with the
    /// endpoints compiled from it).
    pub node: Option<Arc<str>>,
    /// `targetRef` of kind Pod as `namespace/name`.
    pub pod: Option<String>,
    /// `hints` (`forZones`, `forNodes`), None when it has none.
    pub hints: Option<Arc<Hints>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlicePort {
    pub name: String,
    pub port: u16,
    pub proto: L4Proto,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceModel {
    /// `namespace/name` of the slice.
    pub key: String,
    /// `namespace/name` of the Service it belongs to.
    pub service: String,
    pub ports: Vec<SlicePort>,
    pub endpoints: Vec<SliceEndpoint>,
}

/// DNS-1123 label: what `ports[].name` must be.
pub(crate) fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
}

/// IANA service name: what a named `targetPort` and `containerPorts[].name` must be.
pub fn is_iana_port_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.bytes().any(|b| b.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}

/// A port's protocol that is not one podswitch carries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("protocol {0:?} is not TCP, UDP or SCTP")]
pub struct ProtocolError(pub String);

fn parse_proto(p: Option<&str>) -> Result<L4Proto, ProtocolError> {
    match p {
        None | Some("") => Ok(L4Proto::Tcp),
        Some(s) => L4Proto::parse(s).ok_or_else(|| ProtocolError(s.to_string())),
    }
}

fn port_number(n: i32) -> Option<u16> {
    u16::try_from(n).ok().filter(|p| *p != 0)
}

/// Reads one Service (`key` is `namespace/name`); see the module contract.
pub fn read_service(key: &str, svc: &Service, cfg: &ServiceConfig, problems: &mut Vec<String>) -> Option<ServiceModel> {
    let (namespace, name) = key.split_once('/').unwrap_or(("default", key));
    let default_spec;
    let spec = match &svc.spec {
        Some(s) => s,
        None => {
            default_spec = ServiceSpec::default();
            &default_spec
        }
    };
    fn fail(problems: &mut Vec<String>, key: &str, what: String) -> Option<ServiceModel> {
        problems.push(format!("Service {key}: {what}; Service skipped"));
        None
    }
    let type_ = match spec.type_.as_deref() {
        None | Some("") | Some("ClusterIP") => ServiceType::ClusterIP,
        Some("NodePort") => ServiceType::NodePort,
        Some("LoadBalancer") => ServiceType::LoadBalancer,
        Some("ExternalName") => ServiceType::ExternalName,
        Some(t) => {
            return fail(problems, key, format!("type {t:?} is not ClusterIP, NodePort, LoadBalancer or ExternalName"))
        }
    };
    let mut out = ServiceModel {
        namespace: namespace.to_string(),
        name: name.to_string(),
        key: key.to_string(),
        type_,
        cluster_ip: ClusterIpSpec::Headless,
        ports: Vec::with_capacity(spec.ports.as_ref().map_or(0, Vec::len)),
        selector: spec.selector.clone().filter(|s| !s.is_empty()),
        external_ips: Vec::new(),
        lb_ips: Vec::new(),
        source_ranges: Vec::new(),
        external_policy: TrafficPolicy::Cluster,
        internal_policy: TrafficPolicy::Cluster,
        affinity_timeout_s: None,
        allocate_lb_node_ports: spec.allocate_load_balancer_node_ports.unwrap_or(true),
        publish_not_ready: spec.publish_not_ready_addresses.unwrap_or(false),
        traffic_distribution: None,
        needs_health_check: false,
        health_check_node_port: None,
        other_proxy: left_to_other_proxy(svc.metadata.labels.as_ref()),
    };
    if out.other_proxy.is_some() {
        return Some(out); // kube-proxy's informers never list it
    }
    if type_ == ServiceType::ExternalName {
        return Some(out); // a DNS alias: no proxying at all
    }

    // ClusterIP: `clusterIP` is the primary of `clusterIPs`; one address per family.
    let primary = spec.cluster_ip.as_deref().filter(|s| !s.is_empty());
    let cips: Vec<&str> = spec.cluster_ips.iter().flatten().map(String::as_str).filter(|s| !s.is_empty()).collect();
    if let (Some(p), Some(first)) = (primary, cips.first()) {
        if p != *first {
            return fail(problems, key, format!("clusterIP {p:?} is not the first of clusterIPs {cips:?}"));
        }
    }
    out.cluster_ip = match primary.or(cips.first().copied()) {
        Some("None") => ClusterIpSpec::Headless,
        None => {
            let families = spec.ip_families.clone().unwrap_or_default();
            if families.is_empty() || families.iter().any(|f| f == "IPv4") {
                ClusterIpSpec::Auto
            } else {
                ClusterIpSpec::Ipv6Only
            }
        }
        Some(_) => {
            let mut v4 = Vec::new();
            for c in primary.into_iter().chain(cips.iter().copied()) {
                match c.parse::<IpAddr>() {
                    Ok(IpAddr::V4(a)) => {
                        if !v4.contains(&a) {
                            v4.push(a);
                        }
                    }
                    Ok(IpAddr::V6(_)) => {}
                    Err(_) => return fail(problems, key, format!("clusterIP {c:?} is not an IP address")),
                }
            }
            match v4.as_slice() {
                [] => ClusterIpSpec::Ipv6Only,
                [a] => {
                    // Outside every range: the API server checked it against its own ranges,
                    // which --service-cidr may not know all of (ServiceCIDR objects add ranges
                    // at run time). Inside one: its network or broadcast address is no address.
                    if !allocate::valid_cluster_ip(&cfg.service_cidrs, *a) {
                        let cidrs: Vec<String> = cfg.service_cidrs.iter().map(std::string::ToString::to_string).collect();
                        let what = format!("clusterIP {a} is not a usable address of the Service CIDR ({})", cidrs.join(", "));
                        if cfg.service_cidrs.iter().any(|c| c.contains(a)) {
                            return fail(problems, key, what);
                        }
                        problems.push(format!("Service {key}: {what}; proxied all the same"));
                    }
                    ClusterIpSpec::Ip(*a)
                }
                _ => return fail(problems, key, format!("clusterIPs {cips:?} hold more than one IPv4 address")),
            }
        }
    };
    match out.cluster_ip {
        ClusterIpSpec::Headless if type_ != ServiceType::ClusterIP => {
            return fail(problems, key, format!("clusterIP None (headless) is not allowed with type {type_:?}"));
        }
        ClusterIpSpec::Headless => return Some(out),
        ClusterIpSpec::Ipv6Only => {
            problems.push(format!("Service {key} is IPv6-only; podswitch serves IPv4 only, so it gets no frontends"));
            return Some(out);
        }
        _ => {}
    }

    // Addresses and policies: any error here makes the Service unusable.
    for e in spec.external_ips.iter().flatten() {
        match e.trim().parse::<IpAddr>() {
            Ok(IpAddr::V4(a)) if !out.external_ips.contains(&a) => out.external_ips.push(a),
            Ok(_) => {}
            Err(_) => return fail(problems, key, format!("externalIPs entry {e:?} is not an IP address")),
        }
    }
    if type_ == ServiceType::LoadBalancer {
        let ingress = svc.status.as_ref().and_then(|s| s.load_balancer.as_ref()).and_then(|l| l.ingress.as_ref());
        for ing in ingress.into_iter().flatten() {
            let Some(ip) = ing.ip.as_deref().filter(|s| !s.is_empty()) else { continue }; // hostname only
            match ip.parse::<IpAddr>() {
                // ipMode Proxy: the load balancer delivers to the NodePort, not to this address.
                Ok(IpAddr::V4(_)) if ing.ip_mode.as_deref() == Some("Proxy") => {}
                Ok(IpAddr::V4(a)) if !out.lb_ips.contains(&a) => out.lb_ips.push(a),
                Ok(_) => {}
                Err(_) => {
                    return fail(problems, key, format!("status.loadBalancer.ingress ip {ip:?} is not an IP address"))
                }
            }
        }
        for r in spec.load_balancer_source_ranges.iter().flatten() {
            match r.trim().parse::<IpNet>() {
                Ok(IpNet::V4(n)) => out.source_ranges.push(n.trunc()),
                Ok(IpNet::V6(_)) => {}
                Err(_) => return fail(problems, key, format!("loadBalancerSourceRanges entry {r:?} is not a CIDR")),
            }
        }
    } else if spec.load_balancer_source_ranges.as_ref().is_some_and(|r| !r.is_empty()) {
        problems.push(format!("Service {key}: loadBalancerSourceRanges only apply to type LoadBalancer; ignored"));
    }
    let policy = |field: &str, v: Option<&str>| match v {
        None | Some("") | Some("Cluster") => Ok(TrafficPolicy::Cluster),
        Some("Local") => Ok(TrafficPolicy::Local),
        Some(o) => Err(format!("{field} {o:?} is not Cluster or Local")),
    };
    match policy("externalTrafficPolicy", spec.external_traffic_policy.as_deref()) {
        Ok(p) => out.external_policy = p,
        Err(e) => return fail(problems, key, e),
    }
    // kube-proxy's NeedsHealthCheck: a LoadBalancer with externalTrafficPolicy Local. The API
    // server allocates its port when the Service does not ask for one; so does the compiler.
    if type_ == ServiceType::LoadBalancer && out.external_policy == TrafficPolicy::Local {
        out.needs_health_check = true;
        out.health_check_node_port = spec.health_check_node_port.and_then(port_number);
    }
    match policy("internalTrafficPolicy", spec.internal_traffic_policy.as_deref()) {
        Ok(p) => out.internal_policy = p,
        Err(e) => return fail(problems, key, e),
    }
    match spec.traffic_distribution.as_deref() {
        None | Some("") => {}
        Some(t) => match TrafficDistribution::parse(t) {
            Some(d) => out.traffic_distribution = Some(d),
            None => problems.push(format!(
                "Service {key}: trafficDistribution {t:?} is not PreferClose, PreferSameZone or PreferSameNode; ignored"
            )),
        },
    }
    match spec.session_affinity.as_deref() {
        None | Some("") | Some("None") => {}
        Some("ClientIP") => {
            let t = spec
                .session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds);
            out.affinity_timeout_s = match t {
                None => Some(DEFAULT_AFFINITY_TIMEOUT_S),
                Some(t) if t > 0 && t as u32 <= MAX_AFFINITY_TIMEOUT_S => Some(t as u32),
                Some(t) => {
                    return fail(
                        problems,
                        key,
                        format!(
                            "sessionAffinityConfig.clientIP.timeoutSeconds {t} is not in 1-{MAX_AFFINITY_TIMEOUT_S}"
                        ),
                    )
                }
            };
        }
        Some(o) => return fail(problems, key, format!("sessionAffinity {o:?} is not None or ClientIP")),
    }

    // Ports: a bad port is dropped alone.
    let (lo, hi) = (*cfg.node_port_range.start(), *cfg.node_port_range.end());
    for (i, p) in spec.ports.iter().flatten().enumerate() {
        let name = p.name.clone().unwrap_or_default();
        let what = if name.is_empty() { format!("port #{}", i + 1) } else { format!("port {name:?}") };
        macro_rules! skip {
            ($why:expr) => {
                problems.push(format!("Service {key}: {what} {}; port skipped", $why))
            };
        }
        if !name.is_empty() && !is_dns_label(&name) {
            skip!("has a name that is not a DNS label");
            continue;
        }
        let Some(port) = port_number(p.port) else {
            skip!(format!("has port {} (not in 1-65535)", p.port));
            continue;
        };
        let proto = match parse_proto(p.protocol.as_deref()) {
            Ok(x) => x,
            Err(e) => {
                skip!(format!("has {e}"));
                continue;
            }
        };
        // The API server defaults a missing, 0 or "" targetPort to `port`.
        let target = match &p.target_port {
            None | Some(IntOrString::Int(0)) => TargetPort::Number(port),
            Some(IntOrString::String(s)) if s.is_empty() => TargetPort::Number(port),
            Some(IntOrString::Int(n)) => match port_number(*n) {
                Some(t) => TargetPort::Number(t),
                None => {
                    skip!(format!("has targetPort {n} (not in 1-65535)"));
                    continue;
                }
            },
            Some(IntOrString::String(s)) if is_iana_port_name(s) => TargetPort::Name(s.clone()),
            Some(IntOrString::String(s)) => {
                skip!(format!("has targetPort {s:?}, neither a number nor a valid port name"));
                continue;
            }
        };
        let node_port = match p.node_port {
            None | Some(0) => None,
            Some(_) if type_ == ServiceType::ClusterIP => {
                problems
                    .push(format!("Service {key}: {what} sets nodePort but the type is ClusterIP; nodePort ignored"));
                None
            }
            Some(n) => match port_number(n).filter(|n| (lo..=hi).contains(n)) {
                Some(n) => Some(n),
                None => {
                    skip!(format!("has nodePort {n}, outside the NodePort range {lo}-{hi}"));
                    continue;
                }
            },
        };
        if out.ports.iter().any(|q| q.name == name) {
            skip!(format!("repeats the port name {name:?}"));
            continue;
        }
        if out.ports.iter().any(|q| q.port == port && q.proto == proto) {
            skip!(format!("repeats port {port}/{}", proto.as_str().to_ascii_uppercase()));
            continue;
        }
        if let Some(np) = node_port {
            if out.ports.iter().any(|q| q.node_port == Some(np) && q.proto == proto) {
                skip!(format!("repeats nodePort {np}/{}", proto.as_str().to_ascii_uppercase()));
                continue;
            }
        }
        out.ports.push(PortSpec { name, port, proto, target, node_port });
    }
    // Ports sharing a `port` number share one NodePort: two different requests conflict.
    for (port, _) in out.node_port_groups() {
        let requested: Vec<u16> = out.ports.iter().filter(|p| p.port == port).filter_map(|p| p.node_port).collect();
        if requested.windows(2).any(|w| w[0] != w[1]) {
            return fail(problems, key, format!("ports with port {port} request different nodePorts {requested:?}"));
        }
    }
    Some(out)
}

/// Node (and zone) names shared between the endpoints that name the same node, across slices
/// and compiles: a cluster has few nodes and many endpoints, so the names are kept once.
#[derive(Debug, Clone, Default)]
pub struct NodeNames(HashSet<Arc<str>>);

impl NodeNames {
    /// More names than this (a churn of nodes) starts the set afresh: it holds names, not
    /// meaning, so forgetting them only costs allocations.
    const MAX: usize = 65_536;

    /// The shared copy of `name`.
    pub fn get(&mut self, name: &str) -> Arc<str> {
        if let Some(n) = self.0.get(name) {
            return n.clone();
        }
        if self.0.len() >= Self::MAX {
            self.0.clear();
        }
        let n: Arc<str> = Arc::from(name);
        self.0.insert(n.clone());
        n
    }
}

/// Reads one EndpointSlice (`key` is `namespace/name`). `None` for slices this switch does not
/// use: not IPv4, without the `kubernetes.io/service-name` label, or left to another proxy
/// ([`left_to_other_proxy`]).
pub fn read_slice(key: &str, slice: &EndpointSlice, problems: &mut Vec<String>) -> Option<SliceModel> {
    read_slice_sharing(key, slice, &mut NodeNames::default(), problems)
}

/// [`read_slice`], with node names taken from (and added to) `nodes`.
pub fn read_slice_sharing(
    key: &str,
    slice: &EndpointSlice,
    nodes: &mut NodeNames,
    problems: &mut Vec<String>,
) -> Option<SliceModel> {
    if slice.address_type != "IPv4" {
        return None;
    }
    let namespace = key.split_once('/').map_or("default", |(ns, _)| ns);
    if left_to_other_proxy_by(|l| slice.labels.contains_key(l)).is_some() {
        return None;
    }
    let service = slice.labels.get(SERVICE_NAME_LABEL)?;
    let mut out = SliceModel {
        key: key.to_string(),
        service: [namespace, "/", service.as_str()].concat(),
        ports: Vec::with_capacity(slice.ports.as_ref().map_or(0, Vec::len)),
        endpoints: Vec::with_capacity(slice.endpoints.len()),
    };
    for p in slice.ports.iter().flatten() {
        let name = p.name.clone().unwrap_or_default();
        let mut skip = |why: String| problems.push(format!("EndpointSlice {key}: port {name:?} {why}; port ignored"));
        let proto = match parse_proto(p.protocol.as_deref()) {
            Ok(x) => x,
            Err(e) => {
                skip(format!("has {e}"));
                continue;
            }
        };
        let port = match p.port {
            None => {
                skip("has no port number (\"all ports\" is not supported, as in kube-proxy)".into());
                continue;
            }
            Some(n) => match port_number(n) {
                Some(n) => n,
                None => {
                    skip(format!("has port {n} (not in 1-65535)"));
                    continue;
                }
            },
        };
        if out.ports.iter().any(|q| q.name == name) {
            skip("repeats a port name".into());
            continue;
        }
        out.ports.push(SlicePort { name, port, proto });
    }
    let mut distinct_hints: Vec<Arc<Hints>> = Vec::new();
    for (i, e) in slice.endpoints.iter().enumerate() {
        let Some(first) = e.addresses.first() else {
            problems.push(format!("EndpointSlice {key}: endpoint #{} has no address; skipped", i + 1));
            continue;
        };
        let Ok(ip) = first.parse::<Ipv4Addr>() else {
            problems.push(format!("EndpointSlice {key}: endpoint address {first:?} is not an IPv4 address; skipped"));
            continue;
        };
        let c = e.conditions.clone().unwrap_or_default();
        let node = e
            .node_name
            .as_deref()
            .or_else(|| e.deprecated_topology.as_ref().and_then(|t| t.get("kubernetes.io/hostname")).map(String::as_str))
            .map(|n| nodes.get(n));
        let pod = e.target_ref.as_ref().filter(|r| r.kind.as_deref() == Some("Pod")).and_then(|r| {
            let name = r.name.as_deref()?;
            Some(format!("{}/{name}", r.namespace.as_deref().unwrap_or(namespace)))
        });
        let hints = e.hints.as_ref().map(|h| {
            let zones: Box<[Arc<str>]> = h.for_zones.iter().flatten().map(|z| nodes.get(&z.name)).collect();
            let for_nodes: Box<[Arc<str>]> = h.for_nodes.iter().flatten().map(|n| nodes.get(&n.name)).collect();
            let h = Hints { zones, nodes: for_nodes };
            // The endpoints of a slice mostly carry one of a few hints: kept once each.
            match distinct_hints.iter().find(|d| ***d == h) {
                Some(d) => d.clone(),
                None => {
                    let d = Arc::new(h);
                    distinct_hints.push(d.clone());
                    d
                }
            }
        });
        out.endpoints.push(SliceEndpoint {
            ip,
            ready: c.ready.unwrap_or(true),
            serving: c.serving.unwrap_or(true),
            terminating: c.terminating.unwrap_or(false),
            node,
            pod,
            hints,
        });
    }
    Some(out)
}
