//! Creating a UMEM: its geometry ([`UmemSpec`]) and the descriptors of all its frames.
//!
//! Contract: [`create_umem`] returns the UMEM with one descriptor per frame, frame `i` at
//! offset `i * frame_size`; who holds which frame afterwards is tracked by the user
//! ([`crate::port::ledger`]).
use std::num::NonZeroU32;

use xsk_rs::config::{FrameSize, QueueSize, UmemConfig};
use xsk_rs::{FrameDesc, Umem};

use super::AfXdpError;

/// Sizes of a worker's UMEM.
#[derive(Debug, Clone, Copy)]
pub struct UmemSpec {
    pub frames: u32,
    pub frame_size: u32,
    pub fill_ring: u32,
    pub comp_ring: u32,
}

impl Default for UmemSpec {
    fn default() -> Self {
        Self { frames: 16384, frame_size: 2048, fill_ring: 4096, comp_ring: 2048 }
    }
}

/// Creates a UMEM and the descriptors of all its frames.
pub fn create_umem(spec: UmemSpec) -> Result<(Umem, Vec<FrameDesc>), AfXdpError> {
    let err = |e: &dyn std::fmt::Display| AfXdpError::Umem(e.to_string());
    let config = UmemConfig::builder()
        .frame_size(FrameSize::new(spec.frame_size).map_err(|e| err(&e))?)
        .fill_queue_size(QueueSize::new(spec.fill_ring).map_err(|e| err(&e))?)
        .comp_queue_size(QueueSize::new(spec.comp_ring).map_err(|e| err(&e))?)
        .build()
        .map_err(|e| err(&e))?;
    let frames = NonZeroU32::new(spec.frames).ok_or_else(|| AfXdpError::Umem("zero frames".into()))?;
    Umem::new(config, frames, false).map_err(|e| {
        let source = std::error::Error::source(&e).map(|s| format!(": {s}")).unwrap_or_default();
        AfXdpError::Umem(format!("{e}{source} (locked memory limit? `ulimit -l`)"))
    })
}
