//! Views of the API source, sent as whole views or as the objects that changed.
//!
//! Contract:
//! - [`ViewBuilder`] (the source's side) makes an [`Update`] from the reflector stores: after a
//!   list, a [`Update::Full`] view of every object; while watching, a [`Delta`] with only the
//!   objects whose keys the watches reported (`None`: deleted). Its cost is that of the
//!   changed objects, not of the cluster: a view of 30,000 objects took ~10 ms to build, so a
//!   whole view per change could not follow one EndpointSlice change within a millisecond.
//! - The digest of a view is the sum (modulo 2^64) of a hash of (kind, key, resourceVersion)
//!   per object: independent of order, and updated by a delta in the time of its objects. Equal
//!   content gives an equal digest; a delta that changes nothing (changed and changed back)
//!   gives the digest it starts from.
//! - Updates merge ([`Update::merge`]): a consumer that did not take one gets the merged
//!   update, never a backlog, and nothing in between is lost.
//! - [`ViewKeeper`] (the consumer's side) holds the view and applies updates to it in place;
//!   a delta lists its keys as the view's [`Manifests::changes`], exactly as the consumer's
//!   compilers expect. A delta that does not start from the view held is refused (the source
//!   then sends a whole view).
use std::hash::{Hash, Hasher};

use kube::runtime::reflector::ObjectRef;
use rustc_hash::FxHashMap;

use super::Stores;
use crate::manifests::kinds::{self, key_of, ByKind, EachKind, Family, Keys, Kind, Objects};
use crate::manifests::{Changes, Manifests};

/// The objects that changed between the view with digest `changes.since` and the one with
/// `digest`: the keys ([`Changes`], which the consumer's view then lists as they are) and the
/// objects of those keys that exist now; a key without object was deleted.
#[derive(Debug, Clone, Default)]
pub struct Delta {
    pub changes: Changes,
    pub digest: String,
    pub objects: ByKind<Objects>,
}

impl Delta {
    /// Applies the delta to `m` (whose digest must be `changes.since`): objects set or
    /// removed; the digest and, if `list_changes`, the list of changes follow.
    fn apply_to(self, m: &mut Manifests, list_changes: bool) {
        let Delta { changes, digest, objects } = self;
        let before = footprint_of(&m.objects, &changes.keys);
        overlay(&mut m.objects, &changes.keys, objects);
        let after = footprint_of(&m.objects, &changes.keys);
        for (total, (b, a)) in m.footprint.iter_mut().zip(before.into_iter().zip(after)) {
            *total = (*total + a).saturating_sub(b);
        }
        m.changes = list_changes.then_some(changes);
        m.digest = digest;
    }

    /// This delta followed by `later` (which starts where this one ends).
    fn then(mut self, later: Delta) -> Delta {
        let Delta { changes, digest, objects } = later;
        overlay(&mut self.objects, &changes.keys, objects);
        self.changes.keys.extend(changes.keys);
        self.digest = digest;
        self
    }
}

/// Bytes per kind of the objects of `keys` that `objects` holds.
fn footprint_of(objects: &ByKind<Objects>, keys: &ByKind<Keys>) -> [u64; kinds::COUNT] {
    struct Sum<'a>(&'a ByKind<Objects>, &'a ByKind<Keys>, [u64; kinds::COUNT]);
    impl EachKind for Sum<'_> {
        fn kind<K: Kind>(&mut self) {
            let objects = K::of(self.0);
            self.2[K::INDEX] = K::of(self.1).iter().filter_map(|k| objects.get(k)).map(|o| o.footprint() as u64).sum();
        }
    }
    let mut s = Sum(objects, keys, [0; kinds::COUNT]);
    kinds::each_kind(&mut s);
    s.2
}

/// Sets in `onto` the object of every key in `keys` that `objects` has, and removes those it
/// has not (deleted): a delta's effect, on a view or on an earlier delta's objects.
fn overlay(onto: &mut ByKind<Objects>, keys: &ByKind<Keys>, objects: ByKind<Objects>) {
    struct Overlay<'a> {
        onto: &'a mut ByKind<Objects>,
        keys: &'a ByKind<Keys>,
        objects: ByKind<Objects>,
    }
    impl EachKind for Overlay<'_> {
        fn kind<K: Kind>(&mut self) {
            let (onto, new) = (K::of_mut(self.onto), K::of_mut(&mut self.objects));
            for key in K::of(self.keys) {
                match new.remove(key) {
                    Some(o) => onto.insert(key.clone(), o),
                    None => onto.remove(key),
                };
            }
        }
    }
    kinds::each_kind(&mut Overlay { onto, keys, objects });
}

/// What the source sends.
#[derive(Debug, Clone)]
pub enum Update {
    /// A whole view (after a list, or when the consumer asked for one); it lists no changes.
    Full(Manifests),
    Delta(Delta),
}

impl Update {
    /// The digest of the view the update leads to.
    pub fn digest(&self) -> &str {
        match self {
            Update::Full(m) => &m.digest,
            Update::Delta(d) => &d.digest,
        }
    }

    /// This update followed by `later`: what a consumer that took neither should get.
    pub fn merge(self, later: Update) -> Update {
        match (self, later) {
            (_, Update::Full(m)) => Update::Full(m),
            (Update::Full(mut m), Update::Delta(d)) => {
                d.apply_to(&mut m, false);
                Update::Full(m)
            }
            (Update::Delta(a), Update::Delta(b)) => Update::Delta(a.then(b)),
        }
    }
}

/// The hash of one object in the digest (SipHash-1-3: 64 bits are plenty to tell views apart).
fn object_hash(plural: &str, key: &str, rv: &str) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    (plural, key, rv).hash(&mut h);
    h.finish()
}

fn digest_text(sum: u64) -> String {
    format!("api-{sum:016x}")
}

/// Each object's part of the digest, by key, per kind.
#[derive(Debug, Default)]
struct Hashes;
impl Family for Hashes {
    type Of<K: Kind> = FxHashMap<String, u64>;
}

/// The source's side: the digest of the view last made and each object's part of it.
#[derive(Debug, Default)]
pub struct ViewBuilder {
    sum: u64,
    hashes: ByKind<Hashes>,
    made: bool,
}

impl ViewBuilder {
    /// The digest of the view last made ("" before the first).
    pub fn digest(&self) -> String {
        if self.made {
            digest_text(self.sum)
        } else {
            String::new()
        }
    }

    /// Every object of the stores, shared with them (an `Arc` each, not copied).
    pub fn full(&mut self, s: &Stores) -> Manifests {
        struct Collect<'a> {
            stores: &'a Stores,
            hashes: &'a mut ByKind<Hashes>,
            sum: u64,
            out: ByKind<Objects>,
            footprint: [u64; kinds::COUNT],
        }
        impl EachKind for Collect<'_> {
            fn kind<K: Kind>(&mut self) {
                let store = K::of(self.stores);
                let hashes = K::of_mut(self.hashes);
                hashes.clear();
                hashes.reserve(store.len());
                let mut objects: Vec<_> = store.state().into_iter().map(|o| (key_of(o.as_ref()), o)).collect();
                // Sorted first: the map is then built in one pass.
                objects.sort_unstable_by(|a, b| a.0.cmp(&b.0));
                for (key, o) in &objects {
                    let h = object_hash(K::PLURAL, key, o.meta().resource_version.as_deref().unwrap_or_default());
                    self.sum = self.sum.wrapping_add(h);
                    hashes.insert(key.clone(), h);
                    self.footprint[K::INDEX] += o.footprint() as u64;
                }
                *K::of_mut(&mut self.out) = objects.into_iter().collect();
            }
        }
        let mut c = Collect { stores: s, hashes: &mut self.hashes, sum: 0, out: ByKind::default(), footprint: [0; kinds::COUNT] };
        kinds::each_kind(&mut c);
        self.sum = c.sum;
        self.made = true;
        Manifests { objects: c.out, ignored: Vec::new(), digest: digest_text(self.sum), changes: None, footprint: c.footprint }
    }

    /// The objects of `keys` as the stores hold them now, from the view last made. Call
    /// [`Self::full`] first.
    pub fn delta(&mut self, s: &Stores, keys: ByKind<Keys>) -> Delta {
        struct Look<'a> {
            stores: &'a Stores,
            keys: &'a ByKind<Keys>,
            hashes: &'a mut ByKind<Hashes>,
            sum: u64,
            out: ByKind<Objects>,
        }
        impl EachKind for Look<'_> {
            fn kind<K: Kind>(&mut self) {
                let (store, hashes, out) = (K::of(self.stores), K::of_mut(self.hashes), K::of_mut(&mut self.out));
                for key in K::of(self.keys) {
                    let r = match key.split_once('/') {
                        Some((ns, name)) => ObjectRef::<K>::new(name).within(ns),
                        None => ObjectRef::<K>::new(key),
                    };
                    let o = store.get(&r);
                    let new = o.as_ref().map(|o| object_hash(K::PLURAL, key, o.meta().resource_version.as_deref().unwrap_or_default()));
                    let old = match new {
                        Some(h) => hashes.insert(key.clone(), h),
                        None => hashes.remove(key),
                    };
                    self.sum = self.sum.wrapping_sub(old.unwrap_or(0)).wrapping_add(new.unwrap_or(0));
                    if let Some(o) = o {
                        out.insert(key.clone(), o);
                    }
                }
            }
        }
        let since = self.digest();
        let mut l = Look { stores: s, keys: &keys, hashes: &mut self.hashes, sum: self.sum, out: ByKind::default() };
        kinds::each_kind(&mut l);
        self.sum = l.sum;
        let objects = l.out;
        Delta { changes: Changes { since, keys }, digest: digest_text(self.sum), objects }
    }
}

/// A delta that does not start from the view held.
#[derive(Debug, thiserror::Error)]
#[error("an update from view {from:?} does not apply to view {held:?}")]
pub struct ViewMismatch {
    pub from: String,
    pub held: String,
}

/// The consumer's side: the view, kept up to date by the updates applied to it.
#[derive(Debug, Default)]
pub struct ViewKeeper {
    view: Manifests,
}

impl ViewKeeper {
    /// Applies `u`; a delta must start from the view held (else it is refused and nothing
    /// changes: ask the source for a whole view).
    pub fn apply(&mut self, u: Update) -> Result<&Manifests, ViewMismatch> {
        match u {
            Update::Full(m) => self.view = m,
            Update::Delta(d) => {
                if d.changes.since.is_empty() || d.changes.since != self.view.digest {
                    return Err(ViewMismatch { from: d.changes.since, held: self.view.digest.clone() });
                }
                d.apply_to(&mut self.view, true);
            }
        }
        Ok(&self.view)
    }

    pub fn view(&self) -> &Manifests {
        &self.view
    }

    /// Drops the view's list of changes, so that its consumer compares every object (the sync
    /// benchmark's `--no-changes`, which measures that path).
    pub fn forget_changes(&mut self) {
        self.view.changes = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube_source::StoreWriters;
    use std::sync::Arc;
    use crate::manifests::kinds::Pod;
    use k8s_openapi::api::core::v1::Namespace;

    fn pod(ns: Option<&str>, name: &str, rv: &str) -> Pod {
        let mut p = Pod::default();
        p.metadata.namespace = ns.map(str::to_string);
        p.metadata.name = Some(name.to_string());
        p.metadata.resource_version = Some(rv.to_string());
        p
    }

    fn manifests(pods: &[Pod], namespaces: &[&str]) -> Manifests {
        let mut m = Manifests::default();
        for p in pods {
            m.pods.insert(key_of(p), Arc::new(p.clone()));
        }
        for n in namespaces {
            let mut ns = Namespace::default();
            ns.metadata.name = Some(n.to_string());
            ns.metadata.resource_version = Some("1".into());
            m.namespaces.insert(n.to_string(), Arc::new(ns));
        }
        m
    }

    fn pod_keys(keys: &[&str]) -> ByKind<Keys> {
        ByKind::<Keys> { pods: keys.iter().map(std::string::ToString::to_string).collect(), ..Default::default() }
    }

    /// What a view holds, objects compared by identity (they are shared, never copied).
    fn content(m: &Manifests) -> Vec<(String, usize)> {
        let mut v: Vec<(String, usize)> = m.pods.iter().map(|(k, o)| (format!("pod {k}"), Arc::as_ptr(o) as usize)).collect();
        v.extend(m.namespaces.iter().map(|(k, o)| (format!("ns {k}"), Arc::as_ptr(o) as usize)));
        v
    }

    #[test]
    fn digest_depends_on_content_not_order() {
        let (a, b) = (pod(Some("x"), "a", "5"), pod(Some("x"), "b", "7"));
        let (mut w1, s1) = StoreWriters::new();
        w1.apply(&manifests(std::slice::from_ref(&a), &["x"]));
        w1.apply(&manifests(std::slice::from_ref(&b), &[]));
        let (mut w2, s2) = StoreWriters::new();
        w2.apply(&manifests(&[b.clone(), a.clone()], &["x"]));
        let (v1, v2) = (ViewBuilder::default().full(&s1), ViewBuilder::default().full(&s2));
        assert_eq!(v1.digest, v2.digest);
        assert!(v1.digest.starts_with("api-"), "{}", v1.digest);
        assert_eq!(v1.pods.keys().collect::<Vec<_>>(), ["x/a", "x/b"]);
        // Another resourceVersion, another digest.
        let (mut w3, s3) = StoreWriters::new();
        w3.apply(&manifests(&[pod(Some("x"), "a", "6"), b.clone()], &["x"]));
        assert_ne!(v1.digest, ViewBuilder::default().full(&s3).digest);
        // No ambiguity between ("ab", "c") and ("a", "bc").
        assert_ne!(object_hash("pods", "ab", "c"), object_hash("pods", "a", "bc"));
        assert_ne!(object_hash("pods", "a", "1"), object_hash("namespaces", "a", "1"));
    }

    #[test]
    fn views_share_objects_with_the_stores() {
        let (mut w, s) = StoreWriters::new();
        w.apply(&manifests(&[pod(Some("x"), "a", "5")], &["x"]));
        let (v1, v2) = (ViewBuilder::default().full(&s), ViewBuilder::default().full(&s));
        assert!(Arc::ptr_eq(&v1.pods["x/a"], &v2.pods["x/a"]), "the store's object, not a copy");
        assert!(Arc::ptr_eq(&v1.namespaces["x"], &s.namespaces.state()[0]));
    }

    /// Deltas applied to the consumer's view give exactly the view and digest a whole view
    /// of the stores would, through additions, changes and deletions.
    #[test]
    fn deltas_lead_to_the_same_view_as_a_whole_one() {
        let (mut w, s) = StoreWriters::new();
        w.apply(&manifests(&[pod(Some("x"), "a", "1"), pod(Some("x"), "b", "1")], &["x"]));
        let mut builder = ViewBuilder::default();
        let mut keeper = ViewKeeper::default();
        let first = builder.full(&s);
        let d0 = first.digest.clone();
        keeper.apply(Update::Full(first)).unwrap();
        // a changes, c is added, b is deleted.
        w.apply(&manifests(&[pod(Some("x"), "a", "2"), pod(Some("x"), "c", "1")], &[]));
        w.delete(&manifests(&[pod(Some("x"), "b", "1")], &[]));
        let d = builder.delta(&s, pod_keys(&["x/a", "x/b", "x/c"]));
        assert_eq!(d.changes.since, d0);
        assert_eq!(d.changes.keys.pods.len(), 3);
        assert_eq!(d.objects.pods.len(), 2);
        assert!(!d.objects.pods.contains_key("x/b"), "a deletion is a key without object");
        let m = keeper.apply(Update::Delta(d)).unwrap();
        let whole = ViewBuilder::default().full(&s);
        assert_eq!(m.digest, whole.digest);
        assert_eq!(content(m), content(&whole));
        let c = m.changes_since(&d0).expect("a delta lists its keys");
        assert_eq!(c.keys.pods.iter().map(String::as_str).collect::<Vec<_>>(), ["x/a", "x/b", "x/c"]);
        assert!(c.keys.namespaces.is_empty());
        // A key reported whose object did not change in the end: same digest.
        let same = builder.delta(&s, pod_keys(&["x/a"]));
        assert_eq!(same.digest, same.changes.since);
    }

    #[test]
    fn merged_updates_equal_the_updates_applied_one_by_one() {
        let (mut w, s) = StoreWriters::new();
        w.apply(&manifests(&[pod(Some("x"), "a", "1")], &["x"]));
        let mut builder = ViewBuilder::default();
        let first = Update::Full(builder.full(&s));
        w.apply(&manifests(&[pod(Some("x"), "b", "1")], &[]));
        let d1 = Update::Delta(builder.delta(&s, pod_keys(&["x/b"])));
        w.apply(&manifests(&[pod(Some("x"), "a", "2")], &[]));
        w.delete(&manifests(&[pod(Some("x"), "b", "1")], &[]));
        let d2 = Update::Delta(builder.delta(&s, pod_keys(&["x/a", "x/b"])));
        let mut one_by_one = ViewKeeper::default();
        for u in [first.clone(), d1.clone(), d2.clone()] {
            one_by_one.apply(u).unwrap();
        }
        // Full then both deltas, merged before the consumer took any.
        let mut merged = ViewKeeper::default();
        merged.apply(first.clone().merge(d1.clone()).merge(d2.clone())).unwrap();
        assert_eq!(merged.view().digest, one_by_one.view().digest);
        assert_eq!(content(merged.view()), content(one_by_one.view()));
        assert!(merged.view().changes.is_none(), "a whole view lists no changes");
        // The consumer took the full view, not the deltas: one delta with both.
        let mut late = ViewKeeper::default();
        late.apply(first).unwrap();
        let m = late.apply(d1.merge(d2)).unwrap();
        assert_eq!(content(m), content(one_by_one.view()));
        assert_eq!(m.changes.as_ref().unwrap().keys.pods.len(), 2);
    }

    #[test]
    fn a_delta_from_another_view_is_refused_and_changes_nothing() {
        let (mut w, s) = StoreWriters::new();
        w.apply(&manifests(&[pod(Some("x"), "a", "1")], &["x"]));
        let mut builder = ViewBuilder::default();
        let first = builder.full(&s);
        let mut keeper = ViewKeeper::default();
        w.apply(&manifests(&[pod(Some("x"), "b", "1")], &[]));
        let d = Update::Delta(builder.delta(&s, pod_keys(&["x/b"])));
        assert!(keeper.apply(d.clone()).is_err(), "no view held yet");
        keeper.apply(Update::Full(first.clone())).unwrap();
        let mut skipped = builder.delta(&s, pod_keys(&["x/a"]));
        skipped.changes.since = "api-other".into();
        assert!(keeper.apply(Update::Delta(skipped)).is_err());
        assert_eq!(keeper.view().digest, first.digest);
        assert!(keeper.apply(d).is_ok());
    }
}
