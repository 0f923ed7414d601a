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
//!   rules hold port numbers only. For an ingress rule the destination is the local pod itself;
//!   an egress rule's destinations are many pods that may map one name to different numbers
//!   (or not declare it), so the compiler writes one rule per resolved number `N` whose only
//!   peer is [`Peer::Addresses`]: the peer pods that declare the name at `N`.
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
    /// Exactly these addresses (host order): the pods an egress rule with a named port reaches
    /// on the rule's port number (see the module contract).
    Addresses(FxHashSet<u32>),
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
                Peer::Addresses(set) => set.contains(&peer_u32),
            })
    })
}

#[inline]
fn in_cidr(a: u32, (net, len): (u32, u8)) -> bool {
    len == 0 || (a ^ net) >> (32 - len as u32) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: u8 = 6;
    const UDP: u8 = 17;
    const A: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 10);
    const B: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 11);
    const C: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 12);
    const OUTSIDE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

    fn one(proto: u8, port: u16) -> PortRange {
        PortRange { proto, port, end_port: port }
    }

    /// A may send only to TCP/8080 of B (B declares the name there) and to TCP/9090 of C (C
    /// declares the same name there): an egress rule with a named port whose number differs
    /// per destination pod.
    fn named_egress() -> PolicyTables {
        let mut t = PolicyTables { epoch: 1, ..Default::default() };
        t.identities.extend([(u32::from(A), 1), (u32::from(B), 2), (u32::from(C), 2)]);
        let rule = |port: u16, ip: Ipv4Addr| Rule {
            policy: 3,
            index: 0,
            peers: vec![Peer::Addresses([u32::from(ip)].into_iter().collect())],
            ports: vec![one(TCP, port)],
        };
        t.pods.insert(
            u32::from(A),
            PodPolicy { egress_isolated: true, egress: vec![rule(8080, B), rule(9090, C)], ..Default::default() },
        );
        t
    }

    #[test]
    fn addresses_peer_restricts_each_number_to_the_pods_that_declare_it() {
        let t = named_egress();
        assert_eq!(t.judge(A, B, TCP, 8080), Decision::Allowed { policy: 3, index: 0 });
        assert_eq!(t.judge(A, C, TCP, 9090), Decision::Allowed { policy: 3, index: 0 });
        // Same identity, but the other pod's number: no.
        assert_eq!(t.judge(A, B, TCP, 9090), Decision::DeniedEgress);
        assert_eq!(t.judge(A, C, TCP, 8080), Decision::DeniedEgress);
        assert_eq!(t.judge(A, B, UDP, 8080), Decision::DeniedEgress);
        assert_eq!(t.judge(A, OUTSIDE, TCP, 8080), Decision::DeniedEgress);
        // B is not isolated: its own egress is free.
        assert_eq!(t.judge(B, C, TCP, 1), Decision::NotIsolated);
    }

    #[test]
    fn empty_peer_list_matches_nothing_and_empty_ports_match_everything() {
        let mut t = PolicyTables::default();
        t.pods.insert(
            u32::from(B),
            PodPolicy {
                ingress_isolated: true,
                ingress: vec![
                    Rule { policy: 1, index: 0, peers: vec![], ports: vec![] },
                    Rule { policy: 1, index: 1, peers: vec![Peer::Addresses(Default::default())], ports: vec![] },
                ],
                ..Default::default()
            },
        );
        assert_eq!(t.judge(A, B, TCP, 80), Decision::DeniedIngress);
        t.pods.get_mut(&u32::from(B)).unwrap().ingress.push(Rule { policy: 2, index: 0, peers: vec![Peer::Any], ports: vec![] });
        assert_eq!(t.judge(A, B, TCP, 80), Decision::Allowed { policy: 2, index: 0 });
        assert_eq!(t.judge(A, B, 1, 0), Decision::Allowed { policy: 2, index: 0 });
    }

    #[test]
    fn ip_blocks_ranges_and_both_directions() {
        let mut t = PolicyTables::default();
        let block = Peer::IpBlock { cidr: (u32::from(Ipv4Addr::new(10, 244, 0, 0)), 16), except: vec![(u32::from(B), 32)] };
        t.pods.insert(
            u32::from(A),
            PodPolicy {
                egress_isolated: true,
                egress: vec![Rule { policy: 1, index: 0, peers: vec![block], ports: vec![PortRange { proto: TCP, port: 80, end_port: 81 }] }],
                ..Default::default()
            },
        );
        t.pods.insert(
            u32::from(C),
            PodPolicy {
                ingress_isolated: true,
                ingress: vec![Rule { policy: 2, index: 4, peers: vec![Peer::Any], ports: vec![PortRange { proto: TCP, port: 0, end_port: 0 }] }],
                ..Default::default()
            },
        );
        assert_eq!(t.judge(A, C, TCP, 81), Decision::Allowed { policy: 2, index: 4 });
        assert_eq!(t.judge(A, C, TCP, 82), Decision::DeniedEgress);
        assert_eq!(t.judge(A, B, TCP, 80), Decision::DeniedEgress);
        assert_eq!(t.judge(A, OUTSIDE, TCP, 80), Decision::DeniedEgress);
        assert_eq!(t.judge(B, C, UDP, 81), Decision::DeniedIngress);
        assert_eq!(t.judge(B, C, TCP, 5000), Decision::Allowed { policy: 2, index: 4 });
        let all = Peer::IpBlock { cidr: (0, 0), except: vec![] };
        t.pods.get_mut(&u32::from(A)).unwrap().egress[0].peers = vec![all];
        assert_eq!(t.judge(A, OUTSIDE, TCP, 80), Decision::Allowed { policy: 1, index: 0 });
    }
}
