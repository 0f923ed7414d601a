//! podswitch's control side, the node agent: where the Kubernetes objects come from, how they
//! become the switch's tables, and how the running switch is observed. The lab that builds a
//! cluster of network namespaces is its own binary, `podswitch-lab` (crate `lab/`), which uses
//! this library; `podswitch lab` execs it.
//!
//! Objects come from one of two sources, which give the same [`manifests::Manifests`] view:
//! a directory of YAML ([`manifests`]) or watches on the Kubernetes API ([`kube_source`]).
//! Each view is compiled into the dataplane's tables ([`compile`], [`services`], [`policy`],
//! with [`model`] and [`pods`]) and published to the workers by `podswitch run` ([`run`]).
//!
//! - [`manifests`]: Kubernetes YAML from a directory, and the view every source gives.
//! - [`kube_source`]: the same view from watches on the Kubernetes API server.
//! - [`model`]: the node and its pods as plain values.
//! - [`pods`]: the pods of a view, re-read only where they changed.
//! - [`nodes`]: the other nodes (pod CIDRs, InternalIP), for the multi-node pod network
//!   (not yet routed: #11).
//! - [`compile`]: the switch's ports and routes for the node and its pods.
//! - [`services`]: Services and EndpointSlices compiled into service tables.
//! - [`policy`]: NetworkPolicies compiled into policy tables.
//! - [`side_by_side`]: two pieces of control-side work at once (the Service and policy
//!   compiles of a whole view), on the control cores.
//! - [`uplink_filter`]: what the uplink's XDP program redirects to the switch (the rest stays
//!   the node's).
//! - [`naming`]: interface and MAC names shared by the switch, the CNI side and the lab.
//! - [`neighbours`]: the uplink's next hops and their MACs, from the kernel's tables (rtnetlink).
//! - [`run`]: `podswitch run`, the switch process.
//! - [`metrics`]: the Prometheus endpoint of `podswitch run`.
//! - [`health`]: kube-proxy's health checks: `/healthz`, `/livez` and the Services'
//!   `healthCheckNodePort` servers.
//! - [`l2announce`]: `--l2-announce`, ARP for LoadBalancer and external IPs from one node per
//!   address, chosen through a Lease.
//! - [`memory`]: the agent's memory by table (objects, Services, Maglev, policy, routes,
//!   conntrack), for `show status` and the metrics.
//! - [`ctl`]: the control socket protocol, client and server.
//! - [`cni_install`]: `podswitch cni install|uninstall`, the CNI plugin's binary and
//!   `.conflist` where container runtimes look for them.
//! - [`show`]: `podswitch show`, the client that prints what the switch reports.
//! - [`sibling`]: finding `podswitch-lab` and `podswitch` next to each other (or on PATH).
pub mod cni_install;
pub mod cni_records;
pub mod compile;
pub mod ctl;
pub mod health;
pub mod kube_source;
pub mod manifests;
pub mod l2announce;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod naming;
pub mod neighbours;
pub mod nodes;
pub mod pod_network;
pub mod pods;
pub mod policy;
pub mod rtnl;
pub mod run;
pub mod services;
pub mod show;
pub mod side_by_side;
pub mod sibling;
pub mod uplink_filter;
