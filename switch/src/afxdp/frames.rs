//! A worker's UMEM and the pool of frames that are neither in a ring nor in flight.
//!
//! Contract: [`FramePool`] holds at most the UMEM's frame count and never allocates after
//! creation. Every frame is always in exactly one place: the pool, a fill ring, an RX ring
//! being read, a TX ring, or a completion ring; the worker moves it between them.
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
        Self { frames: 16384, frame_size: 2048, fill_ring: 2048, comp_ring: 2048 }
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

/// Free frames of one UMEM, as a stack (the most recently freed frame is warm in cache).
#[derive(Debug)]
pub struct FramePool {
    free: Vec<FrameDesc>,
}

impl FramePool {
    pub fn new(all: Vec<FrameDesc>) -> Self {
        Self { free: all }
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.free.len()
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.free.is_empty()
    }

    /// Returns a frame to the pool. The pool never holds more than it was created with, so
    /// this never reallocates.
    #[inline]
    pub fn put(&mut self, desc: FrameDesc) {
        debug_assert!(self.free.len() < self.free.capacity());
        self.free.push(desc);
    }

    #[inline]
    pub fn put_all(&mut self, descs: &[FrameDesc]) {
        debug_assert!(self.free.len() + descs.len() <= self.free.capacity());
        self.free.extend_from_slice(descs);
    }

    /// The last `n` free frames (or fewer), for handing to a ring; call [`Self::consumed`]
    /// with how many the ring took.
    #[inline]
    pub fn peek_top(&self, n: usize) -> &[FrameDesc] {
        let n = n.min(self.free.len());
        &self.free[self.free.len() - n..]
    }

    /// Forgets the top `n` frames after a ring took them.
    #[inline]
    pub fn consumed(&mut self, n: usize) {
        let keep = self.free.len() - n.min(self.free.len());
        self.free.truncate(keep);
    }
}
