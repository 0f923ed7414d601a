//! NetworkPolicy tables: what the dataplane needs to judge a new connection, compiled by the
//! control side so that the work per connection does not grow with the number of pods.
//!
//! Contract:
//! - Every pod address of the cluster maps to an identity ([`PolicyTables::identity_of`]):
//!   pods of one namespace with equal labels share one. Addresses that are no pod have none
//!   and can only be matched by `ipBlock` peers.
//! - Each local pod (by IP) has a [`PodPolicy`]: whether it is isolated for ingress and for
//!   egress, and the rules that allow traffic in each direction. Rules of every policy that
//!   selects the pod are listed together ("policies add up"). A pod with no entry, or with
//!   `*_isolated == false`, is not isolated in that direction.
//! - A connection passes when the source's egress allows it (or the source is not an isolated
//!   local pod) AND the destination's ingress allows it (or the destination is not an isolated
//!   local pod). It is judged on the translated destination: the backend pod and its port.
//! - Named ports are resolved by the compiler against the destination pod's containerPorts, so
//!   rules hold port numbers only.
//! - `epoch` changes with every policy-relevant change (policies, pod or namespace labels);
//!   connections judged under another epoch are judged again on their next packet.
use std::net::Ipv4Addr;

use rustc_hash::{FxHashMap, FxHashSet};

/// Stable id of a NetworkPolicy (for counters and the flow log); its name is in
/// [`PolicyTables::policy_names`].
pub type PolicyId = u32;

/// An identity: a set of pods with the same namespace and labels.
pub type Identity = u32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// Any pod whose identity is in the set (podSelector / namespaceSelector / both).
    Identities(FxHashSet<Identity>),
    /// `ipBlock`: addresses in `cidr` (network, prefix length) but in none of `except`.
    IpBlock { cidr: (u32, u8), except: Vec<(u32, u8)> },
    /// An empty `from`/`to` list, or a missing one: every source or destination.
    Any,
}

/// One entry of a rule's `ports`: protocol and a port range (`port` .. `endPort`, inclusive).
/// `port == 0` means every port of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub proto: u8,
    pub port: u16,
    pub end_port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub policy: PolicyId,
    /// Index of the rule in its policy's `ingress` or `egress` list.
    pub index: u16,
    /// The rule matches a peer in any of these (an empty list matches nothing: the compiler
    /// writes [`Peer::Any`] for "all peers").
    pub peers: Vec<Peer>,
    /// The rule matches any of these ports; empty means every port and protocol.
    pub ports: Vec<PortRange>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodPolicy {
    pub ingress_isolated: bool,
    pub egress_isolated: bool,
    pub ingress: Vec<Rule>,
    pub egress: Vec<Rule>,
}

#[derive(Debug, Clone, Default)]
pub struct PolicyTables {
    pub epoch: u32,
    /// Pod address (host order) -> identity, for every pod of the cluster.
    pub identities: FxHashMap<u32, Identity>,
    /// Local pod address (host order) -> its policy.
    pub pods: FxHashMap<u32, PodPolicy>,
    /// `namespace/name` of each policy, by id.
    pub policy_names: FxHashMap<PolicyId, String>,
}

/// Why a connection was allowed or denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Neither side is isolated in the direction concerned.
    NotIsolated,
    /// Allowed by rule `index` of `policy` (ingress rule if the destination was isolated,
    /// else the egress rule).
    Allowed { policy: PolicyId, index: u16 },
    /// Denied: the source's egress allowed nothing.
    DeniedEgress,
    /// Denied: the destination's ingress allowed nothing.
    DeniedIngress,
}

impl Decision {
    pub fn allowed(self) -> bool {
        matches!(self, Decision::NotIsolated | Decision::Allowed { .. })
    }
}

impl PolicyTables {
    #[inline]
    pub fn identity_of(&self, ip: Ipv4Addr) -> Option<Identity> {
        self.identities.get(&u32::from(ip)).copied()
    }

    /// Judges a connection from `src` to `dst`:`dport` over `proto` (ports 0 for ICMP).
    #[inline]
    pub fn judge(&self, src: Ipv4Addr, dst: Ipv4Addr, proto: u8, dport: u16) -> Decision {
        let mut allowed_by = None;
        if let Some(p) = self.pods.get(&u32::from(src)).filter(|p| p.egress_isolated) {
            match first_match(&p.egress, self, dst, proto, dport) {
                Some(r) => allowed_by = Some(r),
                None => return Decision::DeniedEgress,
            }
        }
        if let Some(p) = self.pods.get(&u32::from(dst)).filter(|p| p.ingress_isolated) {
            match first_match(&p.ingress, self, src, proto, dport) {
                Some(r) => allowed_by = Some(r),
                None => return Decision::DeniedIngress,
            }
        }
        match allowed_by {
            Some(r) => Decision::Allowed { policy: r.policy, index: r.index },
            None => Decision::NotIsolated,
        }
    }
}

fn first_match<'a>(rules: &'a [Rule], t: &PolicyTables, peer: Ipv4Addr, proto: u8, port: u16) -> Option<&'a Rule> {
    let peer_id = t.identity_of(peer);
    let peer_u32 = u32::from(peer);
    rules.iter().find(|r| {
        let port_ok = r.ports.is_empty()
            || r.ports.iter().any(|p| p.proto == proto && (p.port == 0 || (port >= p.port && port <= p.end_port.max(p.port))));
        port_ok
            && r.peers.iter().any(|peer| match peer {
                Peer::Any => true,
                Peer::Identities(set) => peer_id.is_some_and(|id| set.contains(&id)),
                Peer::IpBlock { cidr, except } => {
                    in_cidr(peer_u32, *cidr) && !except.iter().any(|e| in_cidr(peer_u32, *e))
                }
            })
    })
}

#[inline]
fn in_cidr(a: u32, (net, len): (u32, u8)) -> bool {
    len == 0 || (a ^ net) >> (32 - len as u32) == 0
}
