//! What the pod's interface needs besides addresses: TX checksum offload off, no IPv6.
//!
//! Contract:
//! - [`tx_checksum_off`] runs `ethtool -K IFNAME tx off` inside the pod's namespace, as the
//!   lab does. veth leaves TCP/UDP checksums to offload and frames read through AF_XDP would
//!   carry partial checksums (TCP across the switch stalls). The ethtool command was chosen
//!   over the SIOCETHTOOL ioctl (needs `unsafe`, which the workspace keeps in switch/src/afxdp/)
//!   and over ethtool's generic netlink family (no crate for it in the lock file); the
//!   `ethtool` Debian package is a dependency of the plugin.
//! - [`disable_ipv6`] sets `net.ipv6.conf.IFNAME.disable_ipv6=1` in the current namespace
//!   before the link comes up (the switch is IPv4-only; as in the lab, no RS/MLD/DAD noise).
//!   Absent IPv6 (`/proc/sys/net/ipv6` missing) is not an error.
use std::io;
use std::path::Path;
use std::process::Command;

use crate::netns::{Entered, NetnsError};

#[derive(Debug, thiserror::Error)]
pub enum OffloadError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("cannot run `ethtool` (is the ethtool package installed?)")]
    Spawn(#[source] io::Error),
    #[error("`ethtool -K {ifname} tx off` failed ({status}): {stderr}")]
    Ethtool { ifname: String, status: String, stderr: String },
    #[error("cannot set {path}")]
    Sysctl { path: String, source: io::Error },
}

/// `ethtool -K ifname tx off` in the namespace at `netns`.
pub fn tx_checksum_off(netns: &Path, ifname: &str) -> Result<(), OffloadError> {
    let _inside = Entered::enter(netns)?;
    let out = Command::new("ethtool").args(["-K", ifname, "tx", "off"]).output().map_err(OffloadError::Spawn)?;
    if !out.status.success() {
        return Err(OffloadError::Ethtool {
            ifname: ifname.into(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// Disables IPv6 on `ifname` in the current network namespace.
pub fn disable_ipv6(ifname: &str) -> Result<(), OffloadError> {
    if !Path::new("/proc/sys/net/ipv6").exists() {
        return Ok(());
    }
    let path = format!("/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6");
    std::fs::write(&path, "1").map_err(|source| OffloadError::Sysctl { path, source })
}

/// [`disable_ipv6`] inside the namespace at `netns`.
pub fn disable_ipv6_in(netns: &Path, ifname: &str) -> Result<(), OffloadError> {
    let _inside = Entered::enter(netns)?;
    disable_ipv6(ifname)
}
