//! podswitch's control side: where Kubernetes objects come from (the manifest directory now,
//! the Kubernetes API later), how they become the switch's tables, and the control socket that
//! `podswitch show` talks to. The lab that builds a cluster of network namespaces is its own
//! binary, `podswitch-lab` (crate `lab/`), which uses this library; `podswitch lab` execs it.
//!
//! - [`manifests`]: Kubernetes YAML from a directory.
//! - [`model`]: the node and its pods as plain values.
//! - [`pods`]: the pods of a view, re-read only where they changed.
//! - [`naming`]: interface and MAC names shared with the lab.
//! - [`ctl`]: the control socket protocol, client and server.
//! - [`sibling`]: finding `podswitch-lab` and `podswitch` next to each other (or on PATH).
pub mod compile;
pub mod ctl;
pub mod kube_source;
pub mod manifests;
pub mod metrics;
pub mod model;
pub mod naming;
pub mod pods;
pub mod policy;
pub mod run;
pub mod services;
pub mod show;
pub mod sibling;
