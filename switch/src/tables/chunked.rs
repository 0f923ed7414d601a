//! [`ChunkedList`]: an immutable list of shared elements whose copies share every chunk that a
//! change did not touch. The Service tables keep their frontends in one
//! ([`super::services::ServiceTables::frontends`]), and the control side the per-frontend views
//! of `show services`.
//!
//! Contract: the elements are `Arc<T>` in chunks of [`CHUNK`], each chunk an `Arc` of its own.
//! Cloning the list is one reference count. [`ChunkedList::with_replaced`] gives a list with
//! some elements replaced that shares every other chunk, and the elements in them, with the
//! original: it costs the chunk index (one reference count per [`CHUNK`] elements, all in one
//! allocation) and one copy per chunk touched. Dropping a copy costs the same.
//!
//! Why not one `Arc` per element in one flat slice (as before): a copy with one element
//! replaced takes a reference on every element, and dropping the old copy gives every one back.
//! The elements sit wherever the allocator put them when they were compiled, so at 10,000
//! frontends that is 10,000 cache lines on as many pages touched twice for each Service change
//! (measured: most of the cost of one EndpointSlice change). The price is one more pointer on
//! a lookup by index ([`ChunkedList::get`]), which the dataplane makes once per new connection.
//! Chunks are arrays of exactly [`CHUNK`] places (the last one's tail empty), held by a thin
//! pointer: that lookup checks the chunk number and whether the place is taken, and needs no
//! second bounds check.
//! Why hand-written: one operation is needed; a persistent vector crate (`imbl`) brings its own
//! dependencies for it, and its lookups are deeper.
use std::collections::BTreeMap;
use std::ops::Index;
use std::sync::Arc;

/// Elements per chunk.
pub const CHUNK: usize = 64;

/// [`CHUNK`] places of a list; only the last chunk has empty ones, at its end.
type Chunk<T> = [Option<Arc<T>>; CHUNK];

/// See the module doc.
pub struct ChunkedList<T> {
    /// Every chunk holds [`CHUNK`] elements but the last, which holds 1 to [`CHUNK`].
    chunks: Arc<[Arc<Chunk<T>>]>,
    len: usize,
}

impl<T> ChunkedList<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    pub fn get(&self, i: usize) -> Option<&Arc<T>> {
        self.chunks.get(i / CHUNK)?[i % CHUNK].as_ref()
    }

    /// The elements in order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<T>> + '_ {
        self.chunks.iter().flat_map(|c| c.iter().flatten())
    }

    /// Whether both lists are the same allocation.
    pub fn ptr_eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.chunks, &other.chunks)
    }

    /// This list with the element at each index of `replacements` replaced (a later
    /// replacement of the same index wins). Every chunk without a replacement is shared.
    ///
    /// Panics if an index is not below [`Self::len`] (a caller's bug: it replaces elements it
    /// placed in this list).
    pub fn with_replaced(&self, replacements: impl IntoIterator<Item = (usize, Arc<T>)>) -> Self {
        let mut touched: BTreeMap<usize, Chunk<T>> = BTreeMap::new();
        for (i, v) in replacements {
            assert!(i < self.len, "replacing element {i} of a list of {}", self.len);
            let chunk = touched.entry(i / CHUNK).or_insert_with(|| (*self.chunks[i / CHUNK]).clone());
            chunk[i % CHUNK] = Some(v);
        }
        if touched.is_empty() {
            return self.clone();
        }
        let mut chunks = self.chunks.to_vec();
        for (c, elements) in touched {
            chunks[c] = Arc::new(elements);
        }
        Self { chunks: Arc::from(chunks), len: self.len }
    }
}

impl<T> Clone for ChunkedList<T> {
    fn clone(&self) -> Self {
        Self { chunks: Arc::clone(&self.chunks), len: self.len }
    }
}

impl<T> Default for ChunkedList<T> {
    fn default() -> Self {
        Self { chunks: Arc::from(Vec::new()), len: 0 }
    }
}

impl<T> FromIterator<Arc<T>> for ChunkedList<T> {
    fn from_iter<I: IntoIterator<Item = Arc<T>>>(iter: I) -> Self {
        let mut chunks: Vec<Arc<Chunk<T>>> = Vec::new();
        let mut chunk: Chunk<T> = std::array::from_fn(|_| None);
        let mut len = 0;
        for v in iter {
            chunk[len % CHUNK] = Some(v);
            len += 1;
            if len % CHUNK == 0 {
                chunks.push(Arc::new(std::mem::replace(&mut chunk, std::array::from_fn(|_| None))));
            }
        }
        if len % CHUNK != 0 {
            chunks.push(Arc::new(chunk));
        }
        Self { chunks: Arc::from(chunks), len }
    }
}

impl<T> Index<usize> for ChunkedList<T> {
    type Output = T;

    fn index(&self, i: usize) -> &T {
        match self.get(i) {
            Some(v) => v,
            None => panic!("index {i} out of a list of {}", self.len),
        }
    }
}

impl<'a, T> IntoIterator for &'a ChunkedList<T> {
    type Item = &'a Arc<T>;
    type IntoIter = std::iter::FlatMap<
        std::slice::Iter<'a, Arc<Chunk<T>>>,
        std::iter::Flatten<std::slice::Iter<'a, Option<Arc<T>>>>,
        fn(&'a Arc<Chunk<T>>) -> std::iter::Flatten<std::slice::Iter<'a, Option<Arc<T>>>>,
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.chunks.iter().flat_map(|c| c.iter().flatten())
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for ChunkedList<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<T: PartialEq> PartialEq for ChunkedList<T> {
    fn eq(&self, other: &Self) -> bool {
        self.ptr_eq(other) || (self.len == other.len && self.iter().eq(other.iter()))
    }
}

impl<T: Eq> Eq for ChunkedList<T> {}

impl<T: serde::Serialize> serde::Serialize for ChunkedList<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter().map(|t| &**t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(n: usize) -> ChunkedList<usize> {
        (0..n).map(Arc::new).collect()
    }

    #[test]
    fn holds_its_elements_in_order_across_chunk_boundaries() {
        for n in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 5] {
            let l = list(n);
            assert_eq!(l.len(), n);
            assert_eq!(l.is_empty(), n == 0);
            assert_eq!(l.iter().map(|v| **v).collect::<Vec<_>>(), (0..n).collect::<Vec<_>>());
            assert_eq!((&l).into_iter().count(), n);
            assert!(l.get(n).is_none());
            if n > 0 {
                assert_eq!(l[n - 1], n - 1);
            }
        }
    }

    #[test]
    fn a_replacement_copies_only_the_chunks_it_touches() {
        let l = list(3 * CHUNK + 5);
        let r = l.with_replaced([(CHUNK + 3, Arc::new(1000)), (3 * CHUNK + 4, Arc::new(2000))]);
        let want: Vec<usize> = (0..l.len())
            .map(|i| match i {
                i if i == CHUNK + 3 => 1000,
                i if i == 3 * CHUNK + 4 => 2000,
                i => i,
            })
            .collect();
        assert_eq!(r.iter().map(|v| **v).collect::<Vec<_>>(), want);
        assert_eq!(l.iter().map(|v| **v).collect::<Vec<_>>(), (0..l.len()).collect::<Vec<_>>(), "the original stays");
        for c in 0..4 {
            assert_eq!(Arc::ptr_eq(&l.chunks[c], &r.chunks[c]), c == 0 || c == 2, "chunk {c}");
        }
        assert!(Arc::ptr_eq(l.get(CHUNK + 2).unwrap(), r.get(CHUNK + 2).unwrap()), "untouched elements of a copied chunk are shared");
        assert_ne!(l, r);
    }

    #[test]
    fn no_replacement_is_the_same_list_and_the_last_replacement_of_an_index_wins() {
        let l = list(10);
        assert!(l.with_replaced([]).ptr_eq(&l));
        let r = l.with_replaced([(4, Arc::new(40)), (4, Arc::new(41))]);
        assert_eq!(r[4], 41);
    }

    #[test]
    #[should_panic(expected = "replacing element 10 of a list of 10")]
    fn replacing_past_the_end_is_a_bug() {
        let _ = list(10).with_replaced([(10, Arc::new(0))]);
    }

    #[test]
    fn equal_contents_are_equal_lists_and_serialize_as_a_sequence() {
        assert_eq!(list(CHUNK + 1), list(CHUNK + 1));
        assert_ne!(list(CHUNK + 1), list(CHUNK));
        assert_eq!(ChunkedList::<usize>::default(), list(0));
        assert_eq!(serde_json::to_string(&list(3)).unwrap(), "[0,1,2]");
        assert_eq!(format!("{:?}", list(2)), "[0, 1]");
    }
}
