//! podswitch's XDP program on one interface.
//!
//! Contract: [`XdpAttachment::attach`] loads a fresh instance of the program (its own XSKMAP)
//! and attaches it in native mode, or in generic mode where native is refused (the reason is
//! kept and shown), or in the mode the operator forced. Dropping the attachment detaches it.
//! Frames on queues with no registered socket pass to the kernel.
//!
//! The program's role is set before it is attached ([`XdpRole`]): on a pod or host port it
//! redirects every frame; on the uplink only what the switch owns ([`super::filter`]), and
//! until the first [`XdpAttachment::set_filter`] nothing (everything stays the node's).
use std::os::fd::{AsFd, AsRawFd, RawFd};

use libbpf_rs::{MapCore, MapFlags, Object, ObjectBuilder, Xdp, XdpFlags};
use serde::Serialize;

use super::filter::{self, FilterError, FilterMaps, RuleCounters, UplinkFilter};
use super::{iface, AfXdpError};

/// What the program on an interface redirects to the switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpRole {
    /// Every frame (pod ports, the host port, one-interface tools).
    All,
    /// Only what the filter says the switch owns (the uplink, which stays the node's).
    Uplink,
}

static PROGRAM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/xsk_redirect.bpf.o"));
const PROG_NAME: &str = "podswitch_xsk_redirect";

/// The XDP mode in effect on an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// In the driver (XDP_FLAGS_DRV_MODE).
    Native,
    /// On the kernel's generic SKB path (XDP_FLAGS_SKB_MODE).
    Generic,
}

impl XdpMode {
    pub fn as_str(self) -> &'static str {
        match self {
            XdpMode::Native => "native",
            XdpMode::Generic => "generic",
        }
    }
    fn flags(self) -> XdpFlags {
        match self {
            XdpMode::Native => XdpFlags::DRV_MODE,
            XdpMode::Generic => XdpFlags::SKB_MODE,
        }
    }
}

/// Why attaching the program in one mode failed.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("program {PROG_NAME} missing from the object")]
    ProgramMissing,
    #[error("{0}")]
    Kernel(libbpf_rs::Error),
}

/// The program attached to one interface.
pub struct XdpAttachment {
    object: Object,
    ifname: String,
    ifindex: i32,
    mode: XdpMode,
    /// Why native mode was not used, when it was refused.
    native_refused: Option<String>,
    role: XdpRole,
    filter: FilterMaps,
}

impl std::fmt::Debug for XdpAttachment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpAttachment").field("ifname", &self.ifname).field("mode", &self.mode).finish()
    }
}

impl XdpAttachment {
    /// Loads and attaches the program to `ifname`; `forced` pins the mode (no fallback).
    pub fn attach(ifname: &str, forced: Option<XdpMode>) -> Result<Self, AfXdpError> {
        Self::attach_as(ifname, forced, XdpRole::All)
    }

    /// [`Self::attach`] in role `role`, set before the program sees a frame.
    pub fn attach_as(ifname: &str, forced: Option<XdpMode>, role: XdpRole) -> Result<Self, AfXdpError> {
        let ifindex = iface::ifindex(ifname)?;
        let object = ObjectBuilder::default()
            .open_memory(PROGRAM)
            .and_then(libbpf_rs::OpenObject::load)
            .map_err(|e| AfXdpError::ProgramLoad(format!("{e:#}")))?;
        let mode = match role {
            XdpRole::All => filter::MODE_ALL,
            XdpRole::Uplink => filter::MODE_UPLINK,
        };
        object
            .maps()
            .find(|m| m.name() == "filter_config")
            .ok_or_else(|| AfXdpError::ProgramLoad("map filter_config missing from the program".into()))?
            .update(&0u32.to_ne_bytes(), &filter::config_value(mode, &UplinkFilter::default()), MapFlags::ANY)
            .map_err(|e| AfXdpError::ProgramLoad(format!("setting the program's role: {e}")))?;
        let try_mode = |mode: XdpMode| -> Result<(), AttachError> {
            let prog = object.progs().find(|p| p.name() == PROG_NAME).ok_or(AttachError::ProgramMissing)?;
            // Replaces a program a previous, crashed instance left behind.
            Xdp::new(prog.as_fd()).attach(ifindex, mode.flags()).map_err(AttachError::Kernel)
        };
        let (mode, native_refused) = match forced {
            Some(mode) => {
                try_mode(mode).map_err(|detail| AfXdpError::AttachForced { ifname: ifname.into(), mode: mode.as_str(), detail })?;
                (mode, None)
            }
            None => match try_mode(XdpMode::Native) {
                Ok(()) => (XdpMode::Native, None),
                Err(native) => match try_mode(XdpMode::Generic) {
                    Ok(()) => (XdpMode::Generic, Some(native.to_string())),
                    Err(generic) => return Err(AfXdpError::Attach { ifname: ifname.into(), native, generic }),
                },
            },
        };
        Ok(Self { object, ifname: ifname.into(), ifindex, mode, native_refused, role, filter: FilterMaps::default() })
    }

    pub fn mode(&self) -> XdpMode {
        self.mode
    }

    pub fn native_refused(&self) -> Option<&str> {
        self.native_refused.as_deref()
    }

    fn map(&self, name: &str) -> libbpf_rs::Map<'_> {
        self.object.maps().find(|m| m.name() == name).expect("maps are part of the embedded object")
    }

    /// Sends frames of rx queue `queue` to the AF_XDP socket `fd`.
    pub fn register_socket(&self, queue: u32, fd: RawFd) -> Result<(), AfXdpError> {
        self.map("xsks_map")
            .update(&queue.to_ne_bytes(), &(fd as u32).to_ne_bytes(), MapFlags::ANY)
            .map_err(|e| AfXdpError::MapUpdate { ifname: self.ifname.clone(), queue, detail: e.to_string() })
    }

    /// Stops redirecting queue `queue` (its frames pass to the kernel again).
    pub fn unregister_socket(&self, queue: u32) {
        let _ = self.map("xsks_map").delete(&queue.to_ne_bytes());
    }

    /// (frames redirected to sockets, frames passed to the kernel), summed over CPUs.
    pub fn counters(&self) -> (u64, u64) {
        let c = self.rule_counters();
        (c.redirected, c.passed)
    }

    /// Every counter of the program, summed over CPUs.
    pub fn rule_counters(&self) -> RuleCounters {
        let map = self.map("xdp_counters");
        let sum = |idx: u32| -> u64 {
            map.lookup_percpu(&idx.to_ne_bytes(), MapFlags::ANY)
                .ok()
                .flatten()
                .map_or(0, |per_cpu| {
                    per_cpu.iter().map(|v| u64::from_ne_bytes(v[..8].try_into().unwrap_or([0; 8]))).sum()
                })
        };
        let all: Vec<u64> = (0..filter::COUNTERS).map(sum).collect();
        RuleCounters::from_array(&all)
    }

    pub fn role(&self) -> XdpRole {
        self.role
    }

    /// Writes the uplink filter to the program's maps (an attachment in role
    /// [`XdpRole::Uplink`]; in role `All` the maps are not read).
    pub fn set_filter(&mut self, f: &UplinkFilter) -> Result<(), FilterError> {
        self.filter.write(&self.object, &self.ifname, f)
    }

    /// The filter in the program's maps, when known (see [`super::filter`]).
    pub fn filter(&self) -> Option<&UplinkFilter> {
        self.filter.written()
    }
}

impl Drop for XdpAttachment {
    fn drop(&mut self) {
        if let Some(prog) = self.object.progs().find(|p| p.name() == PROG_NAME) {
            // The interface may already be gone with its pod; nothing to undo then.
            let _ = Xdp::new(prog.as_fd()).detach(self.ifindex, self.mode.flags());
            let _ = prog.as_fd().as_raw_fd();
        }
    }
}
