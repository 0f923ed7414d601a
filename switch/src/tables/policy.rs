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
//! - Size and cost: a rule's peers ([`Rule::peers`], and the [`IdSet`]s in them) are shared
//!   by every pod the rule is written for, so the tables grow with the local pods' rules and
//!   the distinct peer sets, not with pods times peers. [`PolicyTables::judge`] costs
//!   O(rules of the two pods), each peer test O(1) or O(log n) (see [`IdSet`]).
//! - The maps are behind `Arc`s so that a snapshot published with unchanged policy shares
//!   them with the previous one (a copy of them would cost the control side about a
//!   millisecond per publish at 10,000 pods); `epoch`, which every established packet reads,
//!   stays inline.
use std::fmt;
use std::net::Ipv4Addr;
use std::sync::Arc;

use rustc_hash::FxHashMap;

/// Stable id of a NetworkPolicy (for counters and the flow log); its name is in
/// [`PolicyTables::policy_names`].
pub type PolicyId = u32;

/// An identity: a set of pods with the same namespace and labels.
pub type Identity = u32;

/// An immutable set of `u32` (identities, or addresses in host order), built once by the
/// compiler and shared (cheap to clone) by every rule of every pod that uses it.
///
/// Membership is O(1) when the values are dense enough (a bitmap over `min..=max`, chosen
/// when it is at most twice the size of the sorted list), else O(log n) (binary search in a
/// sorted list). The representation is a function of the contents, so equal sets compare
/// equal.
#[derive(Clone)]
pub struct IdSet(Arc<Repr>);

#[derive(PartialEq, Eq)]
enum Repr {
    /// Sorted, without duplicates.
    Sorted(Box<[u32]>),
    /// Bit `v - base` of `words` is set for each member `v`; `len` members.
    Bits { base: u32, len: usize, words: Box<[u64]> },
}

impl IdSet {
    /// The set of `values` (any order, duplicates allowed).
    pub fn new(mut values: Vec<u32>) -> Self {
        values.sort_unstable();
        values.dedup();
        Self::from_sorted(values)
    }

    /// The set of `values`, which must be sorted and without duplicates.
    pub fn from_sorted(values: Vec<u32>) -> Self {
        debug_assert!(values.windows(2).all(|w| w[0] < w[1]));
        let (Some(&min), Some(&max)) = (values.first(), values.last()) else {
            return Self(Arc::new(Repr::Sorted(Box::default())));
        };
        let words = ((max - min) as usize >> 6) + 1;
        // A bitmap costs 8 bytes a word, the sorted list 4 a value: bitmap when at most 2x.
        if words <= values.len() {
            let mut w = vec![0u64; words].into_boxed_slice();
            for v in &values {
                let off = (v - min) as usize;
                w[off >> 6] |= 1 << (off & 63);
            }
            Self(Arc::new(Repr::Bits { base: min, len: values.len(), words: w }))
        } else {
            Self(Arc::new(Repr::Sorted(values.into_boxed_slice())))
        }
    }

    #[inline]
    pub fn contains(&self, v: u32) -> bool {
        match &*self.0 {
            Repr::Bits { base, words, .. } => {
                let off = v.wrapping_sub(*base) as usize;
                words.get(off >> 6).is_some_and(|w| (w >> (off & 63)) & 1 != 0)
            }
            Repr::Sorted(s) => s.binary_search(&v).is_ok(),
        }
    }

    pub fn len(&self) -> usize {
        match &*self.0 {
            Repr::Bits { len, .. } => *len,
            Repr::Sorted(s) => s.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The members, in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        let (sorted, bits): (&[u32], Option<(u32, &[u64])>) = match &*self.0 {
            Repr::Sorted(s) => (s, None),
            Repr::Bits { base, words, .. } => (&[], Some((*base, words))),
        };
        sorted.iter().copied().chain(bits.into_iter().flat_map(|(base, words)| {
            words.iter().enumerate().flat_map(move |(i, &w)| {
                (0..64u32).filter(move |b| (w >> b) & 1 != 0).map(move |b| base + (i as u32) * 64 + b)
            })
        }))
    }
}

impl Default for IdSet {
    fn default() -> Self {
        Self::from_sorted(Vec::new())
    }
}

impl PartialEq for IdSet {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0
    }
}

impl Eq for IdSet {}

impl FromIterator<u32> for IdSet {
    fn from_iter<I: IntoIterator<Item = u32>>(iter: I) -> Self {
        Self::new(iter.into_iter().collect())
    }
}

impl fmt::Debug for IdSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// Any pod whose identity is in the set (podSelector / namespaceSelector / both).
    Identities(IdSet),
    /// `ipBlock`: addresses in `cidr` (network, prefix length) but in none of `except`.
    IpBlock { cidr: (u32, u8), except: Vec<(u32, u8)> },
    /// An empty `from`/`to` list, or a missing one: every source or destination.
    Any,
    /// Exactly these addresses (host order): the pods an egress rule with a named port reaches
    /// on the rule's port number (see the module contract).
    Addresses(IdSet),
}

/// One entry of a rule's `ports`: protocol and a port range (`port` .. `endPort`, inclusive).
/// `port == 0` means every port of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub proto: u8,
    pub port: u16,
    pub end_port: u16,
}

impl PortRange {
    #[inline]
    fn matches(&self, proto: u8, port: u16) -> bool {
        self.proto == proto && (self.port == 0 || (port >= self.port && port <= self.end_port.max(self.port)))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub policy: PolicyId,
    /// Index of the rule in its policy's `ingress` or `egress` list.
    pub index: u16,
    /// The rule matches a peer in any of these (an empty list matches nothing: the compiler
    /// writes [`Peer::Any`] for "all peers"). Shared by every pod the rule is written for.
    pub peers: Arc<[Peer]>,
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

/// Pod address (host order) -> identity.
pub type IdentityMap = FxHashMap<u32, Identity>;
/// Local pod address (host order) -> its policy.
pub type PodPolicies = FxHashMap<u32, PodPolicy>;
/// Policy id -> `namespace/name`.
pub type PolicyNames = FxHashMap<PolicyId, String>;

#[derive(Debug, Clone, Default)]
pub struct PolicyTables {
    pub epoch: u32,
    /// Pod address (host order) -> identity, for every pod of the cluster.
    pub identities: Arc<IdentityMap>,
    /// Local pod address (host order) -> its policy.
    pub pods: Arc<PodPolicies>,
    /// `namespace/name` of each policy, by id.
    pub policy_names: Arc<PolicyNames>,
}

/// Why a connection was allowed or denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Neither side is isolated in the direction concerned.
    NotIsolated,
    /// Allowed by rule `index` of `policy`: the destination's ingress rule (`ingress`) if the
    /// destination was isolated for ingress, else the source's egress rule.
    Allowed { policy: PolicyId, index: u16, ingress: bool },
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
    /// O(rules of the two pods): each peer test is O(1) or O(log n).
    #[inline(always)]
    pub fn judge(&self, src: Ipv4Addr, dst: Ipv4Addr, proto: u8, dport: u16) -> Decision {
        // Each verdict is built where it is known, with the deciding direction as a constant:
        // no (rule, direction) pair carried to the end (this is per new connection).
        let mut egress_rule = None;
        if let Some(p) = self.pods.get(&u32::from(src)).filter(|p| p.egress_isolated) {
            match first_match(&p.egress, self, dst, proto, dport) {
                Some(r) => egress_rule = Some(r),
                None => return Decision::DeniedEgress,
            }
        }
        if let Some(p) = self.pods.get(&u32::from(dst)).filter(|p| p.ingress_isolated) {
            return match first_match(&p.ingress, self, src, proto, dport) {
                Some(r) => Decision::Allowed { policy: r.policy, index: r.index, ingress: true },
                None => Decision::DeniedIngress,
            };
        }
        match egress_rule {
            Some(r) => Decision::Allowed { policy: r.policy, index: r.index, ingress: false },
            None => Decision::NotIsolated,
        }
    }
}

fn first_match<'a>(rules: &'a [Rule], t: &PolicyTables, peer: Ipv4Addr, proto: u8, port: u16) -> Option<&'a Rule> {
    let peer_u32 = u32::from(peer);
    // Looked up on the first identity peer only.
    let mut peer_id: Option<Option<Identity>> = None;
    rules.iter().find(|r| {
        let port_ok = r.ports.is_empty() || r.ports.iter().any(|p| p.matches(proto, port));
        port_ok
            && r.peers.iter().any(|p| match p {
                Peer::Any => true,
                Peer::Identities(set) => {
                    (*peer_id.get_or_insert_with(|| t.identity_of(peer))).is_some_and(|id| set.contains(id))
                }
                Peer::IpBlock { cidr, except } => {
                    in_cidr(peer_u32, *cidr) && !except.iter().any(|e| in_cidr(peer_u32, *e))
                }
                Peer::Addresses(set) => set.contains(peer_u32),
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
        Arc::make_mut(&mut t.identities).extend([(u32::from(A), 1), (u32::from(B), 2), (u32::from(C), 2)]);
        let rule = |port: u16, ip: Ipv4Addr| Rule {
            policy: 3,
            index: 0,
            peers: vec![Peer::Addresses([u32::from(ip)].into_iter().collect())].into(),
            ports: vec![one(TCP, port)],
        };
        Arc::make_mut(&mut t.pods).insert(
            u32::from(A),
            PodPolicy { egress_isolated: true, egress: vec![rule(8080, B), rule(9090, C)], ..Default::default() },
        );
        t
    }

    #[test]
    fn addresses_peer_restricts_each_number_to_the_pods_that_declare_it() {
        let t = named_egress();
        assert_eq!(t.judge(A, B, TCP, 8080), Decision::Allowed { policy: 3, index: 0, ingress: false });
        assert_eq!(t.judge(A, C, TCP, 9090), Decision::Allowed { policy: 3, index: 0, ingress: false });
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
        Arc::make_mut(&mut t.pods).insert(
            u32::from(B),
            PodPolicy {
                ingress_isolated: true,
                ingress: vec![
                    Rule { policy: 1, index: 0, peers: vec![].into(), ports: vec![] },
                    Rule { policy: 1, index: 1, peers: vec![Peer::Addresses(Default::default())].into(), ports: vec![] },
                ],
                ..Default::default()
            },
        );
        assert_eq!(t.judge(A, B, TCP, 80), Decision::DeniedIngress);
        Arc::make_mut(&mut t.pods).get_mut(&u32::from(B)).unwrap().ingress.push(Rule { policy: 2, index: 0, peers: vec![Peer::Any].into(), ports: vec![] });
        assert_eq!(t.judge(A, B, TCP, 80), Decision::Allowed { policy: 2, index: 0, ingress: true });
        assert_eq!(t.judge(A, B, 1, 0), Decision::Allowed { policy: 2, index: 0, ingress: true });
    }

    #[test]
    fn ip_blocks_ranges_and_both_directions() {
        let mut t = PolicyTables::default();
        let block = Peer::IpBlock { cidr: (u32::from(Ipv4Addr::new(10, 244, 0, 0)), 16), except: vec![(u32::from(B), 32)] };
        Arc::make_mut(&mut t.pods).insert(
            u32::from(A),
            PodPolicy {
                egress_isolated: true,
                egress: vec![Rule { policy: 1, index: 0, peers: vec![block].into(), ports: vec![PortRange { proto: TCP, port: 80, end_port: 81 }] }],
                ..Default::default()
            },
        );
        Arc::make_mut(&mut t.pods).insert(
            u32::from(C),
            PodPolicy {
                ingress_isolated: true,
                ingress: vec![Rule { policy: 2, index: 4, peers: vec![Peer::Any].into(), ports: vec![PortRange { proto: TCP, port: 0, end_port: 0 }] }],
                ..Default::default()
            },
        );
        assert_eq!(t.judge(A, C, TCP, 81), Decision::Allowed { policy: 2, index: 4, ingress: true });
        assert_eq!(t.judge(A, C, TCP, 82), Decision::DeniedEgress);
        assert_eq!(t.judge(A, B, TCP, 80), Decision::DeniedEgress);
        assert_eq!(t.judge(A, OUTSIDE, TCP, 80), Decision::DeniedEgress);
        assert_eq!(t.judge(B, C, UDP, 81), Decision::DeniedIngress);
        assert_eq!(t.judge(B, C, TCP, 5000), Decision::Allowed { policy: 2, index: 4, ingress: true });
        let all = Peer::IpBlock { cidr: (0, 0), except: vec![] };
        Arc::make_mut(&mut t.pods).get_mut(&u32::from(A)).unwrap().egress[0].peers = vec![all].into();
        assert_eq!(t.judge(A, OUTSIDE, TCP, 80), Decision::Allowed { policy: 1, index: 0, ingress: false });
    }

    #[test]
    fn id_sets_are_bitmaps_when_dense_and_sorted_lists_when_sparse() {
        let dense: IdSet = (100..300).chain([99, 150, 1000]).collect();
        assert!(matches!(&*dense.0, Repr::Bits { base: 99, len: 202, .. }));
        let sparse: IdSet = [7, 1_000_000, 3, 70_000, 7].into_iter().collect();
        assert!(matches!(&*sparse.0, Repr::Sorted(_)));
        for (set, members) in [(&dense, (99..300).chain([1000]).collect::<Vec<u32>>()), (&sparse, vec![3, 7, 70_000, 1_000_000])] {
            assert_eq!(set.iter().collect::<Vec<_>>(), members);
            assert_eq!(set.len(), members.len());
            for v in [0, 1, 2, 3, 7, 8, 98, 99, 100, 299, 300, 999, 1000, 1001, 69_999, 70_000, 1_000_000, u32::MAX] {
                assert_eq!(set.contains(v), members.contains(&v), "{v}");
            }
        }
        let empty = IdSet::default();
        assert!(empty.is_empty() && !empty.contains(0) && !empty.contains(u32::MAX));
        // Equal contents, built apart: equal.
        assert_eq!(dense, (99..300).rev().chain([1000]).collect::<IdSet>());
        assert_ne!(dense, (99..300).collect::<IdSet>());
        assert_eq!(format!("{sparse:?}"), "{3, 7, 70000, 1000000}");
        let top: IdSet = [u32::MAX - 1, u32::MAX].into_iter().collect();
        assert!(top.contains(u32::MAX) && !top.contains(0));
    }
}
