//! [`ChunkedList`]: an immutable list of shared elements whose copies share every chunk that a
//! change did not touch. The Service tables keep their frontends in one
//! ([`super::services::ServiceTables::frontends`]), and the control side the per-frontend views
//! of `show services`.
//!
//! Contract: the elements are `Arc<T>` in chunks of [`CHUNK`], each chunk an `Arc` of its own,
//! the chunks in groups of [`GROUP`], each group an `Arc` of its own. Cloning the list is one
//! reference count. [`ChunkedList::with_replaced`] gives a list with some elements replaced
//! that shares every other chunk and group, and the elements in them, with the original: it
//! costs the group index (one reference count per [`GROUP`] chunks) and one copy per group and
//! per chunk touched, about 150 reference counts for one element of 50,000. Dropping a copy
//! costs the same.
//!
//! Why not one `Arc` per element in one flat slice (as before): a copy with one element
//! replaced takes a reference on every element, and dropping the old copy gives every one back.
//! The elements sit wherever the allocator put them when they were compiled, so at 10,000
//! frontends that is 10,000 cache lines on as many pages touched twice for each Service change
//! (measured: most of the cost of one EndpointSlice change). Why groups: with one flat index of
//! chunks, a copy still took a reference on every chunk (782 at 50,000 frontends, for the
//! frontends and again for the views): a quarter of one EndpointSlice change there, in
//! `with_replaced` and in dropping the list it replaced, and the part that grew with the
//! cluster. The price is two more pointers on a lookup by index ([`ChunkedList::get`]), which
//! the dataplane makes once per new connection.
//! Why hand-written: one operation is needed; a persistent vector crate (`imbl`) brings its own
//! dependencies for it, and its lookups are deeper.
use std::collections::BTreeMap;
use std::ops::Index;
use std::sync::Arc;

/// Elements per chunk.
pub const CHUNK: usize = 64;
/// Chunks per group.
pub const GROUP: usize = 64;

type Chunk<T> = Arc<[Arc<T>]>;
type Group<T> = Arc<[Chunk<T>]>;

/// See the module doc.
pub struct ChunkedList<T> {
    /// Every chunk holds [`CHUNK`] elements but the last, which holds 1 to [`CHUNK`]; every
    /// group holds [`GROUP`] chunks but the last, which holds 1 to [`GROUP`].
    groups: Arc<[Group<T>]>,
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
        let c = i / CHUNK;
        self.groups.get(c / GROUP)?.get(c % GROUP)?.get(i % CHUNK)
    }

    /// Chunk `c` (the elements from `c * CHUNK`).
    fn chunk(&self, c: usize) -> &Chunk<T> {
        &self.groups[c / GROUP][c % GROUP]
    }

    /// The elements in order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<T>> + '_ {
        self.into_iter()
    }

    /// Whether both lists are the same allocation.
    pub fn ptr_eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.groups, &other.groups)
    }

    /// This list with the element at each index of `replacements` replaced (a later
    /// replacement of the same index wins). Every chunk and group without a replacement is
    /// shared.
    ///
    /// Panics if an index is not below [`Self::len`] (a caller's bug: it replaces elements it
    /// placed in this list).
    pub fn with_replaced(&self, replacements: impl IntoIterator<Item = (usize, Arc<T>)>) -> Self {
        let mut touched: BTreeMap<usize, Vec<Arc<T>>> = BTreeMap::new();
        for (i, v) in replacements {
            assert!(i < self.len, "replacing element {i} of a list of {}", self.len);
            let chunk = touched.entry(i / CHUNK).or_insert_with(|| self.chunk(i / CHUNK).to_vec());
            chunk[i % CHUNK] = v;
        }
        if touched.is_empty() {
            return self.clone();
        }
        let mut groups: BTreeMap<usize, Vec<Chunk<T>>> = BTreeMap::new();
        for (c, elements) in touched {
            let group = groups.entry(c / GROUP).or_insert_with(|| self.groups[c / GROUP].to_vec());
            group[c % GROUP] = Arc::from(elements);
        }
        let mut top = self.groups.to_vec();
        for (g, chunks) in groups {
            top[g] = Arc::from(chunks);
        }
        Self { groups: Arc::from(top), len: self.len }
    }
}

impl<T> Clone for ChunkedList<T> {
    fn clone(&self) -> Self {
        Self { groups: Arc::clone(&self.groups), len: self.len }
    }
}

impl<T> Default for ChunkedList<T> {
    fn default() -> Self {
        Self { groups: Arc::from(Vec::new()), len: 0 }
    }
}

impl<T> FromIterator<Arc<T>> for ChunkedList<T> {
    fn from_iter<I: IntoIterator<Item = Arc<T>>>(iter: I) -> Self {
        let mut groups: Vec<Group<T>> = Vec::new();
        let mut group: Vec<Chunk<T>> = Vec::with_capacity(GROUP);
        let mut chunk: Vec<Arc<T>> = Vec::with_capacity(CHUNK);
        let mut len = 0;
        for v in iter {
            chunk.push(v);
            len += 1;
            if chunk.len() == CHUNK {
                group.push(Arc::from(std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK))));
                if group.len() == GROUP {
                    groups.push(Arc::from(std::mem::replace(&mut group, Vec::with_capacity(GROUP))));
                }
            }
        }
        if !chunk.is_empty() {
            group.push(Arc::from(chunk));
        }
        if !group.is_empty() {
            groups.push(Arc::from(group));
        }
        Self { groups: Arc::from(groups), len }
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

/// The elements of one group, in order.
type GroupIter<'a, T> = std::iter::FlatMap<std::slice::Iter<'a, Chunk<T>>, &'a [Arc<T>], fn(&'a Chunk<T>) -> &'a [Arc<T>]>;

impl<'a, T> IntoIterator for &'a ChunkedList<T> {
    type Item = &'a Arc<T>;
    type IntoIter = std::iter::FlatMap<std::slice::Iter<'a, Group<T>>, GroupIter<'a, T>, fn(&'a Group<T>) -> GroupIter<'a, T>>;

    fn into_iter(self) -> Self::IntoIter {
        fn chunk<T>(c: &Chunk<T>) -> &[Arc<T>] {
            c
        }
        fn group<T>(g: &Group<T>) -> GroupIter<'_, T> {
            g.iter().flat_map(chunk as fn(&Chunk<T>) -> &[Arc<T>])
        }
        self.groups.iter().flat_map(group as fn(&Group<T>) -> GroupIter<'_, T>)
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
        let g = CHUNK * GROUP;
        for n in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 5, g - 1, g, g + 1, 2 * g + CHUNK + 3] {
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
            assert_eq!(Arc::ptr_eq(l.chunk(c), r.chunk(c)), c == 0 || c == 2, "chunk {c}");
        }
        assert!(Arc::ptr_eq(l.get(CHUNK + 2).unwrap(), r.get(CHUNK + 2).unwrap()), "untouched elements of a copied chunk are shared");
        assert_ne!(l, r);
    }

    #[test]
    fn a_replacement_copies_only_the_groups_it_touches() {
        let g = CHUNK * GROUP;
        let l = list(3 * g + 10);
        let at = g + 5 * CHUNK + 7;
        let r = l.with_replaced([(at, Arc::new(7))]);
        assert_eq!(r[at], 7);
        assert_eq!(r.iter().enumerate().filter(|(i, v)| ***v != *i).count(), 1, "one element differs");
        for k in 0..4 {
            assert_eq!(Arc::ptr_eq(&l.groups[k], &r.groups[k]), k != 1, "group {k}");
        }
        for c in 0..=(3 * GROUP) {
            assert_eq!(Arc::ptr_eq(l.chunk(c), r.chunk(c)), c != GROUP + 5, "chunk {c}");
        }
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
