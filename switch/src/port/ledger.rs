//! Who holds each frame of a worker's memory, and the pool of free frames.
//!
//! Contract: a [`FrameLedger`] knows every frame of one memory (by index = offset / frame
//! size) and records for each whether the worker holds it (in the pool or in hand) or which
//! port's rings do. The pool is a stack (the most recently freed frame is warm in cache) that
//! never holds more than the memory's frame count and never allocates after creation. Devices
//! record every move ([`FrameLedger::to_port`], [`FrameLedger::to_worker`]), so the frames of
//! a port that goes away can be found again ([`FrameLedger::reclaim_port`]).
use super::Frame;
use crate::tables::PortId;

const WITH_WORKER: u16 = 0;
/// A frame of another part of the same memory ([`FrameLedger::part`]): never touched here.
const FOREIGN: u16 = u16::MAX;

/// The frames of one memory, the pool, and the holder of each frame.
#[derive(Debug)]
pub struct FrameLedger<F> {
    free: Vec<F>,
    /// Descriptor of every frame, by frame index, to re-create lost ones on port removal.
    all: Vec<F>,
    /// `WITH_WORKER`, or 1 + the id of the port whose rings hold the frame.
    owner: Vec<u16>,
    frame_size: usize,
    /// Frames this ledger owns (the pool's size when every frame is back).
    pooled: usize,
    at: FrameIndex,
}

/// A frame's index from its offset. Frame sizes are powers of two wherever the kernel is
/// involved (AF_XDP requires it): then a shift, not a 64-bit division, for each of the four
/// moves of every forwarded frame (fill, receive, transmit, completion).
#[derive(Debug, Clone, Copy)]
struct FrameIndex {
    shift: Option<u32>,
    size: usize,
}

impl FrameIndex {
    fn new(size: usize) -> Self {
        Self { shift: size.is_power_of_two().then(|| size.trailing_zeros()), size }
    }

    #[inline(always)]
    fn of(self, offset: usize) -> usize {
        match self.shift {
            Some(s) => offset >> s,
            None => offset / self.size,
        }
    }
}

impl<F: Frame> FrameLedger<F> {
    /// A ledger of `all` (frame `i` at offset `i * frame_size`), every frame in the pool.
    pub fn new(all: Vec<F>, frame_size: usize) -> Self {
        let owner = vec![WITH_WORKER; all.len()];
        let mut free = Vec::with_capacity(all.len());
        free.extend_from_slice(&all);
        let pooled = all.len();
        Self { free, all, owner, frame_size, pooled, at: FrameIndex::new(frame_size) }
    }

    /// A ledger owning only frames `mine` of `all`: those start in the pool, the others belong
    /// to another part of the same memory and are never pooled or reclaimed here.
    pub fn part(all: Vec<F>, frame_size: usize, mine: std::ops::Range<usize>) -> Self {
        let owner = (0..all.len()).map(|i| if mine.contains(&i) { WITH_WORKER } else { FOREIGN }).collect();
        let mut free = Vec::with_capacity(mine.len());
        let pooled = mine.len();
        free.extend_from_slice(&all[mine]);
        Self { free, all, owner, frame_size, pooled, at: FrameIndex::new(frame_size) }
    }

    /// The descriptor of frame `index`, as made when the memory was created.
    #[inline]
    pub fn frame(&self, index: usize) -> Option<F> {
        self.all.get(index).copied()
    }

    pub fn frame_count(&self) -> usize {
        self.all.len()
    }

    pub fn frame_size(&self) -> usize {
        self.frame_size
    }

    /// The index of a frame (its slot in the memory).
    #[inline(always)]
    pub fn index(&self, frame: &F) -> usize {
        self.at.of(frame.offset())
    }

    /// Whether the worker holds `frame` (pool or hand), i.e. no port's rings do.
    #[inline(always)]
    pub fn with_worker(&self, frame: &F) -> bool {
        self.owner.get(self.index(frame)) == Some(&WITH_WORKER)
    }

    /// Records that port `id`'s rings took `frames`.
    #[inline]
    pub fn to_port(&mut self, id: PortId, frames: &[F]) {
        let tag = id + 1;
        for f in frames {
            let i = self.at.of(f.offset());
            self.owner[i] = tag;
        }
    }

    /// Records that a port's rings gave `frames` back to the worker.
    #[inline]
    pub fn to_worker(&mut self, frames: &[F]) {
        for f in frames {
            let i = self.at.of(f.offset());
            self.owner[i] = WITH_WORKER;
        }
    }

    /// Frames in the pool.
    #[inline]
    pub fn free_len(&self) -> usize {
        self.free.len()
    }

    /// Frames the pool holds when every one is back: all this ledger owns.
    #[inline]
    pub fn pool_size(&self) -> usize {
        self.pooled
    }

    /// Returns a frame the worker holds to the pool. The pool never holds more than it was
    /// created with, so this never reallocates.
    #[inline]
    pub fn put(&mut self, frame: F) {
        debug_assert!(self.free.len() < self.free.capacity());
        self.free.push(frame);
    }

    #[inline]
    pub fn put_all(&mut self, frames: &[F]) {
        debug_assert!(self.free.len() + frames.len() <= self.free.capacity());
        self.free.extend_from_slice(frames);
    }

    /// The last `n` free frames (or fewer), for handing to a ring; call [`Self::consumed_by`]
    /// with how many the ring took.
    #[inline]
    pub fn peek_top(&self, n: usize) -> &[F] {
        let n = n.min(self.free.len());
        &self.free[self.free.len() - n..]
    }

    /// Forgets the top `n` frames after port `id`'s ring took them.
    #[inline]
    pub fn consumed_by(&mut self, id: PortId, n: usize) {
        let keep = self.free.len() - n.min(self.free.len());
        let tag = id + 1;
        for f in &self.free[keep..] {
            let i = self.at.of(f.offset());
            self.owner[i] = tag;
        }
        self.free.truncate(keep);
    }

    /// Takes the top free frame out of the pool into the worker's hands.
    pub fn take(&mut self) -> Option<F> {
        self.free.pop()
    }

    /// Puts back into the pool every frame that port `id`'s rings held (as freshly made
    /// descriptors); returns how many.
    pub fn reclaim_port(&mut self, id: PortId) -> usize {
        let tag = id + 1;
        let mut n = 0;
        for i in 0..self.owner.len() {
            if self.owner[i] == tag {
                self.owner[i] = WITH_WORKER;
                self.free.push(self.all[i]);
                n += 1;
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, Default, PartialEq)]
    struct F(usize);
    impl Frame for F {
        fn offset(&self) -> usize {
            self.0 * 64
        }
        fn data_len(&self) -> usize {
            0
        }
    }

    #[test]
    fn frames_taken_by_a_port_come_back_when_it_is_reclaimed() {
        let mut l = FrameLedger::new((0..8).map(F).collect(), 64);
        assert_eq!(l.free_len(), 8);
        assert_eq!(l.peek_top(3), &[F(5), F(6), F(7)]);
        l.consumed_by(2, 3);
        assert_eq!(l.free_len(), 5);
        assert!(!l.with_worker(&F(7)));
        // The port hands one back (received), the worker keeps it in hand.
        l.to_worker(&[F(6)]);
        assert!(l.with_worker(&F(6)));
        assert_eq!(l.reclaim_port(2), 2, "frames 5 and 7 were still in port 2's rings");
        assert_eq!(l.free_len(), 7);
        l.put(F(6));
        assert_eq!(l.free_len(), 8);
        assert_eq!(l.reclaim_port(2), 0);
    }

    #[test]
    fn a_part_pools_only_its_own_frames() {
        let mut l = FrameLedger::part((0..8).map(F).collect(), 64, 2..5);
        assert_eq!(l.free_len(), 3);
        assert!(l.with_worker(&F(3)));
        assert!(!l.with_worker(&F(6)), "another part's frame");
        l.consumed_by(1, 3);
        assert_eq!(l.reclaim_port(1), 3);
        assert_eq!(l.free_len(), 3, "only its own frames came back");
    }

    #[test]
    fn frame_index_shifts_for_powers_of_two_and_divides_otherwise() {
        let two_k = FrameIndex::new(2048);
        assert_eq!(two_k.shift, Some(11));
        assert_eq!((two_k.of(0), two_k.of(2048), two_k.of(4095), two_k.of(7 * 2048)), (0, 1, 1, 7));
        let odd = FrameIndex::new(3000);
        assert_eq!(odd.shift, None);
        assert_eq!((odd.of(0), odd.of(2999), odd.of(3000), odd.of(9000)), (0, 0, 1, 3));
    }
}
