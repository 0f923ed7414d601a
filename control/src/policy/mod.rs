//! NetworkPolicy: Kubernetes `networking.k8s.io/v1` NetworkPolicy objects, Namespaces and Pods
//! compiled into the switch's [`PolicyTables`], with the semantics of the Kubernetes
//! documentation and of the upstream network-policy conformance tests
//! (`test/e2e/network/netpol`).
//!
//! Contract:
//! - [`compile_policy`] is a pure function of its inputs and the [`PolicyState`] it is given,
//!   which keeps identity ids, policy ids and the epoch stable across recompiles. Nothing
//!   panics on malformed input; every problem is a sentence in [`CompiledPolicy::problems`].
//! - Pods: a pod takes part (can be selected, has an identity, is matched by peers) when it has
//!   `status.podIP`, is not `hostNetwork` (such pods are not subject to NetworkPolicy and, like
//!   the node, are matched by `ipBlock` only), is not in phase Succeeded or Failed (its IP
//!   may already be another pod's) and does not claim the node's InternalIP or the gateway's
//!   address (it would stand for the node; reported). Pods of one namespace with equal labels share an identity.
//!   Pods whose IP another pod of the view also has get no identity (the address is
//!   ambiguous: no pod selector matches it, only `ipBlock`s do) and are reported.
//! - Namespaces: their labels, plus `kubernetes.io/metadata.name: <name>`, which the API server
//!   sets on every namespace (overriding any other value). A namespace that pods use but that
//!   has no Namespace object has that label only.
//! - Selection: `spec.podSelector` selects pods of the policy's namespace (`{}` or missing: all
//!   of them). A pod is isolated for ingress iff some policy selecting it has Ingress in its
//!   policyTypes, and likewise for egress; the directions are independent. Only local pods (on
//!   this node, or not yet bound) get entries: other nodes enforce their own pods.
//! - policyTypes: when unset or empty, the API server's default: `[Ingress]`, plus `Egress` when
//!   `egress` has at least one rule (`len(spec.Egress) != 0`: `egress: []` alone does not make
//!   an egress policy). When set, it wins: rules of a direction it leaves out are ignored.
//! - Rules: no rules (`ingress: []` or missing) in an isolated direction allow nothing; a rule
//!   `{}` allows everything; `from`/`to` missing or empty means every peer, `ports` missing or
//!   empty every port and protocol. Allows of every rule of every policy selecting a pod add up.
//! - Peers: `podSelector` alone selects pods of the policy's namespace; `namespaceSelector`
//!   alone every pod of the selected namespaces; both in one entry, the selected pods of the
//!   selected namespaces (AND); separate entries add up (OR). `ipBlock` (`except` strict subsets
//!   of `cidr`) matches by address, pod addresses included (as the conformance tests expect and
//!   Calico and Cilium do; the documentation leaves it open). IPv6 blocks match nothing here
//!   (the switch forwards IPv4) and are reported.
//! - Ports: `protocol` defaults to TCP (TCP, UDP, SCTP, case-sensitive as the API); no `port`
//!   means every port of the protocol; `endPort` makes a range. A named port is resolved
//!   against the destination pod's containerPorts with the same name and protocol: for an
//!   ingress rule, the selected pod; for an egress rule, each destination pod, so one rule per
//!   resolved number holds exactly the peer pods that declare the name at that number. A name
//!   that resolves to nothing matches nothing (never "every port"). Destinations that are not
//!   pods (ipBlock addresses of no pod, hostNetwork pods) never match a named port.
//! - Malformed policies fail closed: an object the API server would refuse (bad selector
//!   operator or label, bad CIDR, an except outside its cidr, bad protocol or port, `endPort`
//!   below `port` or with a named port, an empty peer, ipBlock with a selector, a bad
//!   policyType) still isolates the local pods its podSelector selects in its directions
//!   (both when `policyTypes` itself is bad) and contributes no rule, so it allows nothing.
//!   When the podSelector itself is invalid, the policy isolates every pod of its namespace.
//!   Skipping the policy instead would turn an intended isolation into an allow.
//! - The resident node: the documentation says pods cannot block access from the node they run
//!   on (kubelet probes). Every ingress-isolated local pod gets, after its policies' rules, a
//!   rule allowing the node's InternalIP (the source the node's stack uses toward its pods)
//!   under the pseudo-policy [`RESIDENT_NODE_POLICY`]. The dataplane judges the original
//!   source, so masqueraded Service traffic does not ride on it.
//! - Ids and epoch: a policy keeps its id while its `namespace/name` exists; a new policy gets
//!   the lowest free id from 1 (ids stay below the dataplane's per-policy counter slots). The
//!   epoch changes whenever the identities or the local pods' entries (what verdicts depend
//!   on) differ from the previous compile's, and only then (a Service edit keeps it).
pub mod compile;
pub mod identity;
pub mod lists;
pub mod model;
pub mod selector;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use switch::tables::policy::{PolicyId, PolicyTables};

pub use compile::{compile_policy, compile_policy_unless_unchanged};
pub use lists::PodList;

use crate::manifests::Manifests;
use crate::model::{NodeInfo, PodInfo};

/// The label the API server puts on every namespace, with the namespace's name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";
/// Pseudo-policy id of the rule that lets the resident node reach its pods.
pub const RESIDENT_NODE_POLICY: PolicyId = 0;
/// Its name in [`PolicyTables::policy_names`].
pub const RESIDENT_NODE_NAME: &str = "(resident node: always allowed to reach its pods)";

/// What [`compile_policy`] reads.
#[derive(Debug, Clone, Copy)]
pub struct PolicyInputs<'a> {
    pub manifests: &'a Manifests,
    pub node: &'a NodeInfo,
    /// Every pod of the cluster view (any node), e.g. [`crate::services::all_pods`].
    pub all_pods: &'a [PodInfo],
}

/// The result of one compile.
#[derive(Debug, Clone, Default)]
pub struct CompiledPolicy {
    pub tables: PolicyTables,
    /// Sentences naming the object; warnings: the tables hold everything else.
    pub problems: Vec<String>,
    /// One per NetworkPolicy, in `namespace/name` order, for `podswitch show policies`.
    pub views: Vec<PolicyView>,
}

/// One NetworkPolicy as compiled, for `podswitch show policies`. Its pod lists are
/// [`PodList`]s: they serialize, print and compare as lists of strings, spelled out on demand.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PolicyView {
    /// `namespace/name`.
    pub policy: String,
    pub policy_id: PolicyId,
    /// `podSelector` in Kubernetes' selector syntax (`(all)` for `{}`), or `invalid`.
    pub pod_selector: String,
    /// The directions it isolates (policyTypes as defaulted).
    pub policy_types: Vec<&'static str>,
    /// `ok`, or `invalid` (enforced fail-closed: isolates, allows nothing; see `errors`).
    pub status: &'static str,
    pub errors: Vec<String>,
    /// IPv6 blocks, ignored sections.
    pub notes: Vec<String>,
    /// Local pods it selects, `namespace/name ip`.
    pub selected_local_pods: PodList,
    /// How many pods on other nodes it selects (enforced there).
    pub selected_remote_pods: usize,
    pub ingress: Vec<RuleView>,
    pub egress: Vec<RuleView>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RuleView {
    /// Index in the policy's `ingress` or `egress` list.
    pub index: u16,
    /// No `from`/`to` (or an empty one): every peer.
    pub all_peers: bool,
    pub peers: Vec<PeerView>,
    /// No `ports` (or an empty one): every port and protocol.
    pub all_ports: bool,
    pub ports: Vec<PortView>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PeerView {
    /// What the entry says: `pods pod=b in namespace x`, `ipBlock 10.0.0.0/8 except ...`.
    pub peer: String,
    /// The pods it matches now, `namespace/name ip` (for ipBlocks: pods whose address is in it).
    pub pods: PodList,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PortView {
    /// `TCP/80`, `TCP/80-81`, `UDP/*`, `TCP/serve-80-tcp`.
    pub port: String,
    /// For a named port, where it resolves: `namespace/name port` per selected local pod
    /// (ingress) or per destination pod (egress); empty for numbers.
    pub resolved: PodList,
}

/// What stays stable across recompiles; see the module contract.
#[derive(Debug, Clone, Default)]
pub struct PolicyState {
    pub(crate) identities: identity::IdentityState,
    pub(crate) policy_ids: BTreeMap<String, PolicyId>,
    pub(crate) epoch: u32,
    /// What the previous compile's verdicts depended on: its `identities` and `pods` (the
    /// other fields are left empty).
    pub(crate) last: Option<PolicyTables>,
    /// What the last [`compile_policy_unless_unchanged`] read and gave.
    pub(crate) seen: Option<Box<compile::Seen>>,
}

impl PolicyState {
    /// The id of policy `key` (`namespace/name`) while it exists.
    pub fn policy_id(&self, key: &str) -> Option<PolicyId> {
        self.policy_ids.get(key).copied()
    }

    /// The epoch of the last compile's tables.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }
}
