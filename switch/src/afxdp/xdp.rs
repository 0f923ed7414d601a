//! podswitch's XDP program: instances ([`XdpProgram`]) and the interfaces they serve
//! ([`XdpAttachment`]).
//!
//! Contract: [`XdpProgram::load`] loads one instance (verified once, its own maps) in a role
//! ([`XdpRole`], set before any interface is attached). [`XdpProgram::attach`] attaches the
//! instance to one more interface: it gives the interface its slot in the instance's maps
//! ([`super::slots`]: socket entries for its rx queues, a row of counters), then attaches in
//! native mode, or in generic mode where native is refused (the reason is kept and shown), or
//! in the mode the operator forced. Attaching an instance the kernel already runs costs neither
//! a verification nor a change of the kernel's XDP dispatcher (and its RCU grace period): the
//! switch runs one instance for all its pod ports and its host port, so a new pod's port is
//! quick to attach. Dropping the attachment detaches it and frees its slot. Frames on queues
//! with no registered socket pass to the kernel. [`XdpAttachment::attach`] is the one-interface
//! shorthand (a fresh instance of its own, as pktgen uses).
//!
//! On the uplink (role `Uplink`) the program redirects only what the switch owns
//! ([`super::filter`]), and until the first [`XdpAttachment::set_filter`] nothing (everything
//! stays the node's); the filter is the instance's, so each uplink has an instance of its own.
use std::os::fd::{AsFd, RawFd};
use std::sync::{Arc, Mutex, PoisonError};

use libbpf_rs::{MapCore, MapFlags, Object, ObjectBuilder, Xdp, XdpFlags};
use serde::Serialize;

use super::filter::{self, FilterError, FilterMaps, RuleCounters, UplinkFilter};
use super::slots::{Slot, SlotSpace};
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

/// One loaded instance of the program, and the places in its maps.
pub struct XdpProgram {
    object: Object,
    role: XdpRole,
    /// Control path only (attach and detach), never a packet's.
    slots: Mutex<SlotSpace>,
    possible_cpus: usize,
}

impl std::fmt::Debug for XdpProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpProgram").field("role", &self.role).finish_non_exhaustive()
    }
}

impl XdpProgram {
    /// Loads (and has the kernel verify) an instance in role `role`.
    pub fn load(role: XdpRole) -> Result<Arc<Self>, AfXdpError> {
        let object = ObjectBuilder::default()
            .open_memory(PROGRAM)
            .and_then(libbpf_rs::OpenObject::load)
            .map_err(|e| AfXdpError::ProgramLoad(format!("{e:#}")))?;
        let mode = match role {
            XdpRole::All => filter::MODE_ALL,
            XdpRole::Uplink => filter::MODE_UPLINK,
        };
        let program = XdpProgram {
            object,
            role,
            slots: Mutex::new(SlotSpace::default()),
            possible_cpus: libbpf_rs::num_possible_cpus().map_err(|e| AfXdpError::ProgramLoad(format!("counting CPUs: {e}")))?,
        };
        program
            .map("filter_config")
            .update(&0u32.to_ne_bytes(), &filter::config_value(mode, &UplinkFilter::default()), MapFlags::ANY)
            .map_err(|e| AfXdpError::ProgramLoad(format!("setting the program's role: {e}")))?;
        Ok(Arc::new(program))
    }

    pub fn role(&self) -> XdpRole {
        self.role
    }

    fn map(&self, name: &str) -> libbpf_rs::Map<'_> {
        self.object.maps().find(|m| m.name() == name).expect("maps are part of the embedded object")
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, SlotSpace> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Frees interface `ifindex`'s place: its socket entries, its slot, its run and row.
    fn release(&self, ifindex: i32, slot: Slot) {
        for q in 0..slot.queues {
            let _ = self.map("xsks_map").delete(&(slot.xsk_base + q).to_ne_bytes());
        }
        let _ = self.map("port_slots").delete(&ifindex.to_ne_bytes());
        self.slots().give_back(slot);
    }

    /// Attaches this instance to `ifname` as well; `forced` pins the mode (no fallback).
    pub fn attach(self: &Arc<Self>, ifname: &str, forced: Option<XdpMode>) -> Result<XdpAttachment, AfXdpError> {
        let ifindex = iface::ifindex(ifname)?;
        let queues = iface::rx_queues(ifname)?;
        let slot = self.slots().take(queues).ok_or_else(|| AfXdpError::ProgramFull { ifname: ifname.into(), queues })?;
        // The slot goes in first, with its counters from zero: a frame seen the instant the
        // program is attached finds its place.
        let zeros = vec![vec![0u8; 8]; self.possible_cpus];
        let written = (0..filter::COUNTERS)
            .try_for_each(|i| self.map("xdp_counters").update_percpu(&(slot.row * filter::COUNTERS + i).to_ne_bytes(), &zeros, MapFlags::ANY))
            .and_then(|()| self.map("port_slots").update(&ifindex.to_ne_bytes(), &slot.map_value(), MapFlags::ANY));
        if let Err(e) = written {
            self.slots().give_back(slot);
            return Err(AfXdpError::ProgramLoad(format!("giving {ifname} its place in the program's maps: {e}")));
        }
        let try_mode = |mode: XdpMode| -> Result<(), AttachError> {
            let prog = self.object.progs().find(|p| p.name() == PROG_NAME).ok_or(AttachError::ProgramMissing)?;
            // Replaces a program a previous, crashed instance left behind.
            Xdp::new(prog.as_fd()).attach(ifindex, mode.flags()).map_err(AttachError::Kernel)
        };
        let attached = match forced {
            Some(mode) => try_mode(mode)
                .map(|()| (mode, None))
                .map_err(|detail| AfXdpError::AttachForced { ifname: ifname.into(), mode: mode.as_str(), detail }),
            None => match try_mode(XdpMode::Native) {
                Ok(()) => Ok((XdpMode::Native, None)),
                Err(native) => match try_mode(XdpMode::Generic) {
                    Ok(()) => Ok((XdpMode::Generic, Some(native.to_string()))),
                    Err(generic) => Err(AfXdpError::Attach { ifname: ifname.into(), native, generic }),
                },
            },
        };
        match attached {
            Ok((mode, native_refused)) => Ok(XdpAttachment {
                program: Arc::clone(self),
                ifname: ifname.into(),
                ifindex,
                mode,
                native_refused,
                slot,
                filter: FilterMaps::default(),
            }),
            Err(e) => {
                self.release(ifindex, slot);
                Err(e)
            }
        }
    }
}

/// The program attached to one interface.
pub struct XdpAttachment {
    program: Arc<XdpProgram>,
    ifname: String,
    ifindex: i32,
    mode: XdpMode,
    /// Why native mode was not used, when it was refused.
    native_refused: Option<String>,
    slot: Slot,
    filter: FilterMaps,
}

impl std::fmt::Debug for XdpAttachment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpAttachment").field("ifname", &self.ifname).field("mode", &self.mode).finish()
    }
}

impl XdpAttachment {
    /// A fresh instance of its own attached to `ifname`; `forced` pins the mode (no fallback).
    pub fn attach(ifname: &str, forced: Option<XdpMode>) -> Result<Self, AfXdpError> {
        Self::attach_as(ifname, forced, XdpRole::All)
    }

    /// [`Self::attach`] in role `role`, set before the program sees a frame.
    pub fn attach_as(ifname: &str, forced: Option<XdpMode>, role: XdpRole) -> Result<Self, AfXdpError> {
        XdpProgram::load(role)?.attach(ifname, forced)
    }

    pub fn mode(&self) -> XdpMode {
        self.mode
    }

    pub fn native_refused(&self) -> Option<&str> {
        self.native_refused.as_deref()
    }

    /// The socket entry of rx queue `queue`.
    fn xsk_key(&self, queue: u32) -> Option<[u8; 4]> {
        (queue < self.slot.queues).then(|| (self.slot.xsk_base + queue).to_ne_bytes())
    }

    /// Sends frames of rx queue `queue` to the AF_XDP socket `fd`.
    pub fn register_socket(&self, queue: u32, fd: RawFd) -> Result<(), AfXdpError> {
        let err = |detail: String| AfXdpError::MapUpdate { ifname: self.ifname.clone(), queue, detail };
        let key = self.xsk_key(queue).ok_or_else(|| err(format!("the interface had {} rx queue(s) when attached", self.slot.queues)))?;
        self.program.map("xsks_map").update(&key, &(fd as u32).to_ne_bytes(), MapFlags::ANY).map_err(|e| err(e.to_string()))
    }

    /// Stops redirecting queue `queue` (its frames pass to the kernel again).
    pub fn unregister_socket(&self, queue: u32) {
        if let Some(key) = self.xsk_key(queue) {
            let _ = self.program.map("xsks_map").delete(&key);
        }
    }

    /// (frames redirected to sockets, frames passed to the kernel), summed over CPUs.
    pub fn counters(&self) -> (u64, u64) {
        let c = self.rule_counters();
        (c.redirected, c.passed)
    }

    /// Every counter of the interface, summed over CPUs.
    pub fn rule_counters(&self) -> RuleCounters {
        let map = self.program.map("xdp_counters");
        let sum = |idx: u32| -> u64 {
            map.lookup_percpu(&(self.slot.row * filter::COUNTERS + idx).to_ne_bytes(), MapFlags::ANY)
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
        self.program.role
    }

    /// Writes the uplink filter to the program's maps (an attachment in role
    /// [`XdpRole::Uplink`], whose instance is its own; in role `All` the maps are not read).
    pub fn set_filter(&mut self, f: &UplinkFilter) -> Result<(), FilterError> {
        self.filter.write(&self.program.object, &self.ifname, f)
    }

    /// The filter in the program's maps, when known (see [`super::filter`]).
    pub fn filter(&self) -> Option<&UplinkFilter> {
        self.filter.written()
    }
}

impl Drop for XdpAttachment {
    fn drop(&mut self) {
        if let Some(prog) = self.program.object.progs().find(|p| p.name() == PROG_NAME) {
            // The interface may already be gone with its pod; nothing to undo then.
            let _ = Xdp::new(prog.as_fd()).detach(self.ifindex, self.mode.flags());
        }
        self.program.release(self.ifindex, self.slot);
    }
}
