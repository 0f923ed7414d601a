//! NetworkPolicy objects read into plain values, validated as the API server would
//! (`pkg/apis/networking/validation`) and defaulted as it does (`SetDefaults_NetworkPolicy`).
//!
//! Contract: pure functions; [`read_policy`] always returns a [`PolicyModel`]. What the
//! compiler needs to fail closed survives a malformed object: the pod selector when it is
//! valid (else `None`: the policy isolates every pod of its namespace), and the directions
//! (`policyTypes` as defaulted, or both when `policyTypes` itself is invalid). `rules` is
//! `None` when anything is invalid, with every reason in `errors`.
use ipnet::{IpNet, Ipv4Net};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::selector::{Selector, SelectorError};
use crate::model::L4Proto;
use crate::services::model::is_iana_port_name;

/// Which directions a policy affects (its `policyTypes`, defaulted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Directions {
    pub ingress: bool,
    pub egress: bool,
}

impl Directions {
    pub const BOTH: Self = Self { ingress: true, egress: true };

    pub fn names(self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.ingress {
            v.push("Ingress");
        }
        if self.egress {
            v.push("Egress");
        }
        v
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortSel {
    /// No `port`: every port of the protocol.
    All,
    /// `port` (and `endPort`), inclusive.
    Range(u16, u16),
    /// A named port, resolved against the destination pod's containerPorts.
    Named(String),
}

/// One entry of a rule's `ports`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    pub proto: L4Proto,
    pub port: PortSel,
}

impl PortSpec {
    /// `TCP/80`, `TCP/80-81`, `UDP/serve-80-udp`, `SCTP/*`.
    pub fn label(&self) -> String {
        let proto = self.proto.as_str().to_ascii_uppercase();
        match &self.port {
            PortSel::All => format!("{proto}/*"),
            PortSel::Range(a, b) if a == b => format!("{proto}/{a}"),
            PortSel::Range(a, b) => format!("{proto}/{a}-{b}"),
            PortSel::Named(n) => format!("{proto}/{n}"),
        }
    }
}

/// One entry of a rule's `from` or `to`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PeerSpec {
    /// `podSelector` and/or `namespaceSelector` (at least one is set). Pod selector alone: pods
    /// of the policy's namespace; namespace selector alone: every pod of the selected
    /// namespaces; both: the selected pods of the selected namespaces.
    Pods { pods: Option<Selector>, namespaces: Option<Selector> },
    /// An IPv4 `ipBlock` (host bits cleared); every `except` is a strict subset of `cidr`.
    IpBlock { cidr: Ipv4Net, except: Vec<Ipv4Net> },
    /// An IPv6 `ipBlock`: valid, but this switch forwards IPv4 only, so it matches nothing.
    Ipv6Block { cidr: String },
}

impl PeerSpec {
    /// For views: what the peer says, in the policy's terms.
    pub fn describe(&self, policy_ns: &str) -> String {
        match self {
            PeerSpec::Pods { pods: Some(p), namespaces: None } => format!("pods {p} in namespace {policy_ns}"),
            PeerSpec::Pods { pods: None, namespaces: Some(n) } => format!("all pods in namespaces {n}"),
            PeerSpec::Pods { pods: Some(p), namespaces: Some(n) } => format!("pods {p} in namespaces {n}"),
            PeerSpec::Pods { pods: None, namespaces: None } => "nothing".into(),
            PeerSpec::IpBlock { cidr, except } if except.is_empty() => format!("ipBlock {cidr}"),
            PeerSpec::IpBlock { cidr, except } => format!(
                "ipBlock {cidr} except {}",
                except.iter().map(std::string::ToString::to_string).collect::<Vec<_>>().join(", ")
            ),
            PeerSpec::Ipv6Block { cidr } => format!("ipBlock {cidr} (IPv6: matches nothing here)"),
        }
    }
}

/// One ingress or egress rule. Empty `peers`: every peer (`from`/`to` missing or empty);
/// empty `ports`: every port and protocol.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RuleSpec {
    pub peers: Vec<PeerSpec>,
    pub ports: Vec<PortSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rules {
    /// Rules of the directions the policy affects; a direction it does not affect has none.
    pub ingress: Vec<RuleSpec>,
    pub egress: Vec<RuleSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyModel {
    /// `namespace/name`.
    pub key: String,
    pub namespace: String,
    pub name: String,
    /// `spec.podSelector` (missing reads as `{}`); `None` when it is invalid.
    pub pod_selector: Option<Selector>,
    pub directions: Directions,
    /// `None` when the object is invalid (see `errors`).
    pub rules: Option<Rules>,
    /// Why the object is invalid: field path and reason, one per problem.
    pub errors: Vec<String>,
    /// Warnings that do not make the object invalid (IPv6 blocks).
    pub warnings: Vec<String>,
    /// Facts worth showing (rules of a direction that `policyTypes` leaves out are ignored).
    pub notes: Vec<String>,
}

/// Reads one NetworkPolicy (`key` is `namespace/name`); see the module contract.
pub fn read_policy(key: &str, np: &NetworkPolicy) -> PolicyModel {
    let (namespace, name) = key.split_once('/').unwrap_or(("default", key));
    let spec = np.spec.clone().unwrap_or_default();
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let mut notes = Vec::new();

    let pod_selector = match spec.pod_selector.as_ref().map(Selector::parse).transpose() {
        Ok(s) => Some(s.unwrap_or_default()),
        Err(e) => {
            errors.push(format!("spec.podSelector: {e}"));
            None
        }
    };

    // policyTypes, defaulted as SetDefaults_NetworkPolicy: when unset (or empty) it is Ingress,
    // plus Egress when the policy has at least one egress rule (`len(spec.Egress) != 0`: an
    // empty `egress: []` does not make it an egress policy).
    let has_egress_rules = spec.egress.as_ref().is_some_and(|e| !e.is_empty());
    let directions = match spec.policy_types.as_deref() {
        None | Some([]) => Directions { ingress: true, egress: has_egress_rules },
        Some(types) => {
            let mut d = Directions::default();
            let mut bad = false;
            if types.len() > 2 {
                errors.push(format!("spec.policyTypes: at most 2 entries, got {}", types.len()));
                bad = true;
            }
            for (i, t) in types.iter().enumerate() {
                match t.as_str() {
                    "Ingress" => d.ingress = true,
                    "Egress" => d.egress = true,
                    other => {
                        errors.push(format!("spec.policyTypes[{i}]: {other:?} is not Ingress or Egress"));
                        bad = true;
                    }
                }
            }
            if bad {
                Directions::BOTH
            } else {
                d
            }
        }
    };

    let mut rules = Rules::default();
    for (i, r) in spec.ingress.iter().flatten().enumerate() {
        let at = format!("spec.ingress[{i}]");
        let rule = read_rule(&at, "from", r.from.as_deref(), r.ports.as_deref(), &mut errors, &mut warnings);
        if directions.ingress {
            rules.ingress.push(rule);
        }
    }
    for (i, r) in spec.egress.iter().flatten().enumerate() {
        let at = format!("spec.egress[{i}]");
        let rule = read_rule(&at, "to", r.to.as_deref(), r.ports.as_deref(), &mut errors, &mut warnings);
        if directions.egress {
            rules.egress.push(rule);
        }
    }
    let n_in = spec.ingress.as_ref().map_or(0, Vec::len);
    let n_eg = spec.egress.as_ref().map_or(0, Vec::len);
    if !directions.ingress && n_in > 0 {
        notes.push(format!("{n_in} ingress rule(s) ignored: policyTypes does not include Ingress"));
    }
    if !directions.egress && n_eg > 0 {
        notes.push(format!("{n_eg} egress rule(s) ignored: policyTypes does not include Egress"));
    }
    if spec.policy_types.as_ref().is_none_or(Vec::is_empty) && spec.egress.as_ref().is_some_and(Vec::is_empty) {
        notes.push("`egress: []` without policyTypes does not make this an egress policy (the API server defaults policyTypes to [Ingress])".into());
    }

    PolicyModel {
        key: key.to_string(),
        namespace: namespace.to_string(),
        name: name.to_string(),
        rules: if errors.is_empty() { Some(rules) } else { None },
        pod_selector,
        directions,
        errors,
        warnings,
        notes,
    }
}

fn read_rule(
    at: &str,
    peers_field: &str,
    peers: Option<&[NetworkPolicyPeer]>,
    ports: Option<&[NetworkPolicyPort]>,
    errors: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> RuleSpec {
    let mut rule = RuleSpec::default();
    for (j, p) in peers.unwrap_or_default().iter().enumerate() {
        let at = format!("{at}.{peers_field}[{j}]");
        match read_peer(p) {
            Ok(peer) => {
                if let PeerSpec::Ipv6Block { cidr } = &peer {
                    warnings.push(format!(
                        "{at}: ipBlock {cidr} is IPv6; this switch forwards IPv4 only, so this peer matches nothing here"
                    ));
                }
                rule.peers.push(peer);
            }
            Err(e) => errors.push(format!("{at}: {e}")),
        }
    }
    for (j, p) in ports.unwrap_or_default().iter().enumerate() {
        match read_port(p) {
            Ok(port) => rule.ports.push(port),
            Err(e) => errors.push(format!("{at}.ports[{j}]: {e}")),
        }
    }
    rule
}

/// What is wrong with a NetworkPolicy peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    #[error("must specify a peer (podSelector, namespaceSelector or ipBlock)")]
    Empty,
    #[error("may not specify both ipBlock and another peer")]
    IpBlockAndOther,
    #[error("podSelector: {0}")]
    PodSelector(SelectorError),
    #[error("namespaceSelector: {0}")]
    NamespaceSelector(SelectorError),
    #[error("ipBlock.cidr is required")]
    NoCidr,
    #[error("ipBlock.cidr {0:?} is not a CIDR (address/prefix-length)")]
    Cidr(String),
    #[error("ipBlock.except[{at}] {except:?} is not a CIDR (address/prefix-length)")]
    ExceptCidr { at: usize, except: String },
    #[error("ipBlock.except[{at}] {except:?} must be a strict subset of cidr {cidr}")]
    ExceptNotSubset { at: usize, except: String, cidr: String },
}

/// What is wrong with a NetworkPolicy port.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    #[error("protocol {0:?} is not TCP, UDP or SCTP")]
    Protocol(String),
    #[error("endPort needs a port")]
    EndPortAlone,
    #[error("port {0} is not in 1-65535")]
    Port(i32),
    #[error("endPort {0} is not in 1-65535")]
    EndPort(i32),
    #[error("endPort {end} must be greater than or equal to port {port}")]
    EndBeforePort { port: i32, end: i32 },
    #[error("endPort may not be used with the named port {0:?}")]
    EndPortNamed(String),
    #[error("port {0:?} is not a valid port name (at most 15 lowercase alphanumerics or '-', with a letter, no '--', not beginning or ending with '-')")]
    Name(String),
}

fn read_peer(p: &NetworkPolicyPeer) -> Result<PeerSpec, PeerError> {
    let set = [p.pod_selector.is_some(), p.namespace_selector.is_some(), p.ip_block.is_some()];
    match set {
        [false, false, false] => Err(PeerError::Empty),
        [_, _, true] if set.iter().filter(|b| **b).count() > 1 => Err(PeerError::IpBlockAndOther),
        [_, _, true] => read_ip_block(p.ip_block.as_ref().expect("checked")),
        _ => {
            let pods = p.pod_selector.as_ref().map(Selector::parse).transpose().map_err(PeerError::PodSelector)?;
            let namespaces =
                p.namespace_selector.as_ref().map(Selector::parse).transpose().map_err(PeerError::NamespaceSelector)?;
            Ok(PeerSpec::Pods { pods, namespaces })
        }
    }
}

fn read_ip_block(b: &k8s_openapi::api::networking::v1::IPBlock) -> Result<PeerSpec, PeerError> {
    if b.cidr.is_empty() {
        return Err(PeerError::NoCidr);
    }
    let cidr: IpNet = b.cidr.parse().map_err(|_| PeerError::Cidr(b.cidr.clone()))?;
    let cidr = cidr.trunc();
    let mut except = Vec::new();
    for (k, e) in b.except.iter().flatten().enumerate() {
        let net: IpNet = e.parse().map_err(|_| PeerError::ExceptCidr { at: k, except: e.clone() })?;
        let net = net.trunc();
        // The API server's rule: `cidr` contains the except's network and the except's prefix is
        // longer ("must be a strict subset of `cidr`").
        let strict_subset = match (cidr, net) {
            (IpNet::V4(c), IpNet::V4(n)) => c.contains(&n.network()) && n.prefix_len() > c.prefix_len(),
            (IpNet::V6(c), IpNet::V6(n)) => c.contains(&n.network()) && n.prefix_len() > c.prefix_len(),
            _ => false,
        };
        if !strict_subset {
            return Err(PeerError::ExceptNotSubset { at: k, except: e.clone(), cidr: b.cidr.clone() });
        }
        except.push(net);
    }
    match cidr {
        IpNet::V4(c) => Ok(PeerSpec::IpBlock {
            cidr: c,
            except: except
                .into_iter()
                .map(|e| match e {
                    IpNet::V4(e) => e,
                    IpNet::V6(_) => unreachable!("same family checked above"),
                })
                .collect(),
        }),
        IpNet::V6(_) => Ok(PeerSpec::Ipv6Block { cidr: b.cidr.clone() }),
    }
}

fn read_port(p: &NetworkPolicyPort) -> Result<PortSpec, PortError> {
    // Protocol names are case-sensitive in the API (`tcp` is refused).
    let proto = match p.protocol.as_deref() {
        None => L4Proto::Tcp,
        Some("TCP") => L4Proto::Tcp,
        Some("UDP") => L4Proto::Udp,
        Some("SCTP") => L4Proto::Sctp,
        Some(other) => return Err(PortError::Protocol(other.to_string())),
    };
    let valid_num = |n: i32| u16::try_from(n).ok().filter(|n| *n != 0);
    let port = match (&p.port, p.end_port) {
        (None, None) => PortSel::All,
        (None, Some(_)) => return Err(PortError::EndPortAlone),
        (Some(IntOrString::Int(n)), end) => {
            let a = valid_num(*n).ok_or(PortError::Port(*n))?;
            let b = match end {
                None => a,
                Some(e) => {
                    let b = valid_num(e).ok_or(PortError::EndPort(e))?;
                    if b < a {
                        return Err(PortError::EndBeforePort { port: *n, end: e });
                    }
                    b
                }
            };
            PortSel::Range(a, b)
        }
        (Some(IntOrString::String(s)), end) => {
            if end.is_some() {
                return Err(PortError::EndPortNamed(s.clone()));
            }
            if !is_iana_port_name(s) {
                return Err(PortError::Name(s.clone()));
            }
            PortSel::Named(s.clone())
        }
    };
    Ok(PortSpec { proto, port })
}

/// Whether an IPv4 address is in an IPv4 peer block.
pub fn block_contains(cidr: &Ipv4Net, except: &[Ipv4Net], ip: std::net::Ipv4Addr) -> bool {
    cidr.contains(&ip) && !except.iter().any(|e| e.contains(&ip))
}
