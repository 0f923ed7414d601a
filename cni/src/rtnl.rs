//! rtnetlink for the plugin: `podswitch_control::rtnl`'s request socket, opened in the
//! plugin's namespace ([`open`]) or in a container's ([`open_in`]).
use std::path::Path;

pub use podswitch_control::rtnl::Rtnl;

use crate::netns::{Entered, NetnsError};

#[derive(Debug, thiserror::Error)]
pub enum RtnlError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    Netlink(#[from] podswitch_control::rtnl::RtnlError),
}

impl RtnlError {
    /// The errno the kernel answered with, if it refused.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Netlink(e) => e.errno(),
            Self::Netns(_) => None,
        }
    }
}

/// A socket in the current network namespace.
pub fn open() -> Result<Rtnl, RtnlError> {
    Ok(Rtnl::open()?)
}

/// A socket in the network namespace at `netns` (the thread returns at once).
pub fn open_in(netns: &Path) -> Result<Rtnl, RtnlError> {
    let _inside = Entered::enter(netns)?;
    Ok(Rtnl::open()?)
}
