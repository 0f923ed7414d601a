//! Identities: pods of one namespace with equal labels share one id, so that a rule's peers are
//! a small set of ids however many pods they stand for.
//!
//! Contract: [`IdentityState::assign`] gives every (namespace, labels) pair of the current
//! view an id; a pair that had one in the previous view keeps it; a new pair gets the next
//! unused id (ids start at 1 and are never handed out twice, so an id in a table always means
//! the same pods' labels). Pairs no longer present are forgotten.
use std::collections::{BTreeMap, HashMap};

use switch::tables::policy::Identity;

use super::selector::Labels;

#[derive(Debug, Clone)]
pub struct IdentityState {
    /// Namespace -> labels -> id (nested so that lookups borrow: no key is built to look up).
    ids: BTreeMap<String, HashMap<Labels, Identity>>,
    next: Identity,
}

impl Default for IdentityState {
    fn default() -> Self {
        Self { ids: BTreeMap::new(), next: 1 }
    }
}

impl IdentityState {
    /// Ids for the pairs of `pairs` (duplicates allowed); see the module contract. Returns the
    /// id of each pair, in order.
    pub fn assign<'a>(&mut self, pairs: impl IntoIterator<Item = (&'a str, &'a Labels)>) -> Vec<Identity> {
        let mut old = std::mem::take(&mut self.ids);
        let mut now: BTreeMap<String, HashMap<Labels, Identity>> = BTreeMap::new();
        let mut out = Vec::new();
        for (ns, labels) in pairs {
            if let Some(id) = now.get(ns).and_then(|m| m.get(labels)) {
                out.push(*id);
                continue;
            }
            // A pair seen before keeps its id (and its key moves over: no clone).
            let (labels, id) = match old.get_mut(ns).and_then(|m| m.remove_entry(labels)) {
                Some(kept) => kept,
                None => {
                    let id = self.next;
                    self.next = self.next.checked_add(1).expect("fewer than 2^32 identities over the switch's life");
                    (labels.clone(), id)
                }
            };
            out.push(id);
            match now.get_mut(ns) {
                Some(m) => {
                    m.insert(labels, id);
                }
                None => {
                    now.insert(ns.to_string(), HashMap::from([(labels, id)]));
                }
            }
        }
        self.ids = now;
        out
    }

    /// The id of `(namespace, labels)` after the last [`Self::assign`].
    pub fn get(&self, namespace: &str, labels: &Labels) -> Option<Identity> {
        self.ids.get(namespace).and_then(|m| m.get(labels)).copied()
    }

    pub fn len(&self) -> usize {
        self.ids.values().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn equal_labels_in_one_namespace_share_an_id_and_ids_stay() {
        let a = l(&[("pod", "a")]);
        let b = l(&[("pod", "b")]);
        let mut s = IdentityState::default();
        let ids = s.assign([("x", &a), ("x", &a), ("y", &a), ("x", &b)]);
        assert_eq!(s.len(), 3);
        let (xa, ya, xb) = (s.get("x", &a).unwrap(), s.get("y", &a).unwrap(), s.get("x", &b).unwrap());
        assert_eq!(ids, [xa, xa, ya, xb]);
        assert!(xa != ya && xa != xb && ya != xb);
        // x/b goes, z/a comes: the others keep their ids, the new one gets a fresh id.
        s.assign([("z", &a), ("y", &a), ("x", &a)]);
        assert_eq!((s.get("x", &a), s.get("y", &a), s.get("x", &b)), (Some(xa), Some(ya), None));
        let za = s.get("z", &a).unwrap();
        assert!(![xa, ya, xb].contains(&za));
        // A pair that comes back gets a new id, never an id used before.
        s.assign([("x", &b)]);
        assert!(![xa, ya, xb, za].contains(&s.get("x", &b).unwrap()));
        assert!(s.get("x", &a).is_none());
    }
}
