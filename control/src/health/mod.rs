//! Health checks as kube-proxy serves them (pkg/proxy/healthcheck): the proxy's own `/healthz`
//! and `/livez` ([`proxy`]), and one HTTP server per LoadBalancer Service with
//! `externalTrafficPolicy: Local` on its `healthCheckNodePort`, which tells load balancers
//! whether this node has endpoints of it ([`service`]). [`server`] serves both.
//!
//! Contract:
//! - `--healthz-bind-address` ([`HealthzAddr`]) is kube-proxy's flag: `IP:PORT`, or an IP alone
//!   (port 10256); default `0.0.0.0:10256`; empty disables the endpoint, and so does port 0
//!   (kube-proxy's deprecated `--healthz-port 0`).
//! - Where the pieces come from: `podswitch run` marks the source's changes
//!   ([`ProxyHealth::queued_update`]: the API source's watch events, a manifest directory
//!   that digests differently) and every applied view, or batch of changes that came to
//!   nothing ([`ProxyHealth::updated`]), reads the
//!   node's eligibility from its Node object on every view ([`proxy::node_eligible`]), and hands
//!   the compiled Services' health checks ([`crate::services::HealthCheck`]) to the server
//!   after every apply, so servers open and close with the tables published.
pub mod proxy;
pub mod server;
pub mod service;

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

pub use proxy::{node_eligible, Answer, Moment, ProxyHealth, TO_BE_DELETED_TAINT};
pub use server::{HealthServer, HealthServerError};

/// kube-proxy's healthz port, when `--healthz-bind-address` gives an IP alone.
pub const DEFAULT_HEALTHZ_PORT: u16 = 10256;

/// `--healthz-bind-address`: where `/healthz` and `/livez` are served, or nowhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthzAddr {
    Off,
    At(SocketAddr),
}

/// A `--healthz-bind-address` that is neither `IP`, `IP:PORT` nor empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an IP or IP:PORT (e.g. 0.0.0.0:10256, [::]:10256), nor empty (off)")]
pub struct BadHealthzAddr(String);

impl FromStr for HealthzAddr {
    type Err = BadHealthzAddr;

    fn from_str(s: &str) -> Result<Self, BadHealthzAddr> {
        let s = s.trim();
        if s.is_empty() {
            return Ok(HealthzAddr::Off);
        }
        // As kube-proxy's IPPortVar: an IP alone first, then IP:PORT.
        let addr = match s.parse::<IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, DEFAULT_HEALTHZ_PORT),
            Err(_) => s.parse::<SocketAddr>().map_err(|_| BadHealthzAddr(s.to_string()))?,
        };
        Ok(if addr.port() == 0 { HealthzAddr::Off } else { HealthzAddr::At(addr) })
    }
}

impl std::fmt::Display for HealthzAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HealthzAddr::Off => Ok(()),
            HealthzAddr::At(a) => write!(f, "{a}"),
        }
    }
}

impl HealthzAddr {
    pub fn addr(self) -> Option<SocketAddr> {
        match self {
            HealthzAddr::Off => None,
            HealthzAddr::At(a) => Some(a),
        }
    }
}

/// The health options of `podswitch run` (flattened into `RunArgs`).
#[derive(Debug, Clone, clap::Args)]
pub struct HealthArgs {
    /// Serve the proxy's health, kube-proxy's `/healthz` and `/livez`, at IP:PORT (an IP alone:
    /// port 10256); empty (`--healthz-bind-address=`) disables it. Unhealthy (503) when a
    /// change of the objects has waited more than 60 s for the tables; `/healthz` is also 503
    /// while the node is being deleted or tainted ToBeDeletedByClusterAutoscaler.
    #[arg(long, value_name = "IP:PORT", default_value = "0.0.0.0:10256")]
    pub healthz_bind_address: HealthzAddr,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthz_bind_address_reads_as_kube_proxys() {
        let at = |s: &str| HealthzAddr::At(s.parse().unwrap());
        assert_eq!("0.0.0.0:10256".parse(), Ok(at("0.0.0.0:10256")));
        assert_eq!("127.0.0.1".parse(), Ok(at("127.0.0.1:10256")));
        assert_eq!("::".parse(), Ok(at("[::]:10256")));
        assert_eq!("[::1]:9999".parse(), Ok(at("[::1]:9999")));
        assert_eq!("".parse(), Ok(HealthzAddr::Off));
        assert_eq!("0.0.0.0:0".parse(), Ok(HealthzAddr::Off));
        assert!("localhost:10256".parse::<HealthzAddr>().is_err());
        assert!("0".parse::<HealthzAddr>().is_err());
        assert_eq!(at("0.0.0.0:10256").to_string(), "0.0.0.0:10256");
    }
}
