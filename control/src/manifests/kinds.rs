//! The Kubernetes kinds podswitch reads, listed once.
//!
//! Contract:
//! - [`Kind`] is what every watched kind offers: its place in the list ([`Kind::INDEX`]), its
//!   scope, and its slot in a [`ByKind`]. The list itself is the one `kinds!` invocation below:
//!   adding a kind (Gateway API, ...) is one line there (`[optional]` for kinds a cluster may
//!   not serve); the manifest reader, the
//!   API source's watches, stores, views and digests, and the change lists follow from it.
//! - [`ByKind<F>`] holds one `F::Of<K>` per kind: the objects of a view ([`Objects`]), the keys
//!   that changed ([`Keys`]), the API source's stores, ... Code that does the same for every
//!   kind implements [`EachKind`] (or [`MakeEach`] to build a `ByKind`) once, generic over `K`.
//! - Pods and EndpointSlices are podswitch's reduced types ([`super::reduced`]), the other
//!   kinds k8s-openapi's; every kind is reduced ([`Reduce`]) before it is kept.
//! - Keys are `namespace/name` for namespaced kinds and `name` for cluster-scoped ones
//!   ([`key_of`]).
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Node, Service};
use k8s_openapi::api::networking::v1::{NetworkPolicy, ServiceCIDR};

pub use super::footprint::Footprint;
pub use super::reduced::{EndpointSlice, Pod, Reduce};
use serde::de::DeserializeOwned;

/// One kind of Kubernetes object that podswitch reads.
pub trait Kind:
    kube::Resource<DynamicType = ()> + k8s_openapi::Resource + Reduce + Footprint + Clone + Debug + PartialEq + DeserializeOwned + Send + Sync + 'static
{
    /// The kind's place in the list (status listings, arrays of [`COUNT`]).
    const INDEX: usize;
    /// Objects live in namespaces (keys `namespace/name`); else keys are `name`.
    const NAMESPACED: bool;
    /// The API's plural resource name (`pods`, `endpointslices`, ...).
    const PLURAL: &'static str = <Self as k8s_openapi::Resource>::URL_PATH_SEGMENT;
    /// Clusters may not serve this kind (a newer API): the API source takes a list that
    /// finds no such resource (404) as an empty list instead of waiting for it.
    const OPTIONAL: bool;

    /// This kind's slot of `all`.
    fn of<F: Family>(all: &ByKind<F>) -> &F::Of<Self>;
    fn of_mut<F: Family>(all: &mut ByKind<F>) -> &mut F::Of<Self>;
}

/// What a [`ByKind`] holds per kind: `Of<K>` for kind `K`.
pub trait Family {
    type Of<K: Kind>;
}

/// A [`Family`] whose slots are collections: they can be counted ([`ByKind::counts`]).
pub trait Counted: Family {
    /// How many entries one kind's slot holds.
    fn len<K: Kind>(of: &Self::Of<K>) -> usize;
}

/// Something done for every kind, in list order ([`each_kind`]).
pub trait EachKind {
    fn kind<K: Kind>(&mut self);
}

/// Builds one kind's slot of a [`ByKind`] ([`ByKind::make`]).
pub trait MakeEach<F: Family> {
    fn make<K: Kind>(&mut self) -> F::Of<K>;
}

/// One kind's objects of a view, by key, shared (`Arc`) with whoever else holds them.
pub type Collection<K> = BTreeMap<String, Arc<K>>;

/// The objects of a view: a [`Collection`] per kind.
pub struct Objects;
impl Family for Objects {
    type Of<K: Kind> = Collection<K>;
}
impl Counted for Objects {
    fn len<K: Kind>(of: &Collection<K>) -> usize {
        of.len()
    }
}

/// Keys of objects per kind (those that changed, see [`super::Changes`]).
pub struct Keys;
impl Family for Keys {
    type Of<K: Kind> = BTreeSet<String>;
}
impl Counted for Keys {
    fn len<K: Kind>(of: &BTreeSet<String>) -> usize {
        of.len()
    }
}

/// Whether a k8s-openapi scope is a namespace.
trait Scope {
    const NAMESPACED: bool;
}
impl Scope for k8s_openapi::NamespaceResourceScope {
    const NAMESPACED: bool = true;
}
impl Scope for k8s_openapi::ClusterResourceScope {
    const NAMESPACED: bool = false;
}

macro_rules! kinds {
    (@impl $i:expr;) => {};
    (@optional) => { false };
    (@optional optional) => { true };
    (@impl $i:expr; $ty:ty => $field:ident $([$optional:ident])?, $($rest:tt)*) => {
        impl Kind for $ty {
            const INDEX: usize = $i;
            const OPTIONAL: bool = kinds!(@optional $($optional)?);
            const NAMESPACED: bool = <<$ty as k8s_openapi::Resource>::Scope as Scope>::NAMESPACED;
            fn of<F: Family>(all: &ByKind<F>) -> &F::Of<Self> {
                &all.$field
            }
            fn of_mut<F: Family>(all: &mut ByKind<F>) -> &mut F::Of<Self> {
                &mut all.$field
            }
        }
        kinds!(@impl $i + 1; $($rest)*);
    };
    ($($ty:ty => $field:ident $([$optional:ident])?),* $(,)?) => {
        /// One `F::Of<K>` per kind, in list order.
        pub struct ByKind<F: Family> {
            $(pub $field: F::Of<$ty>,)*
        }

        /// How many kinds there are.
        pub const COUNT: usize = [$(stringify!($field)),*].len();

        /// The kinds' plural names, in list order.
        pub const PLURALS: [&str; COUNT] = [$(<$ty as k8s_openapi::Resource>::URL_PATH_SEGMENT),*];

        /// Calls `v` for every kind, in list order.
        pub fn each_kind(v: &mut impl EachKind) {
            $(v.kind::<$ty>();)*
        }

        impl<F: Family> ByKind<F> {
            /// A `ByKind` whose slots `m` makes, in list order.
            pub fn make(m: &mut impl MakeEach<F>) -> Self {
                ByKind { $($field: m.make::<$ty>(),)* }
            }
        }

        impl<F: Family> Default for ByKind<F> where $(F::Of<$ty>: Default),* {
            fn default() -> Self {
                ByKind { $($field: Default::default(),)* }
            }
        }

        impl<F: Family> Clone for ByKind<F> where $(F::Of<$ty>: Clone),* {
            fn clone(&self) -> Self {
                ByKind { $($field: self.$field.clone(),)* }
            }
        }

        impl<F: Family> PartialEq for ByKind<F> where $(F::Of<$ty>: PartialEq),* {
            fn eq(&self, other: &Self) -> bool {
                true $(&& self.$field == other.$field)*
            }
        }

        impl<F: Family> Eq for ByKind<F> where $(F::Of<$ty>: Eq),* {}

        impl<F: Family> Debug for ByKind<F> where $(F::Of<$ty>: Debug),* {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct("ByKind")$(.field(stringify!($field), &self.$field))*.finish()
            }
        }

        kinds!(@impl 0usize; $($ty => $field $([$optional])?,)*);
    };
}

// The kinds, in the order status listings show them.
kinds! {
    Namespace => namespaces,
    Pod => pods,
    Node => nodes,
    Service => services,
    EndpointSlice => endpoint_slices,
    NetworkPolicy => network_policies,
    // networking.k8s.io/v1 since Kubernetes 1.33: the cluster's Service ranges.
    ServiceCIDR => service_cidrs [optional],
}

impl<F: Counted> ByKind<F> {
    /// Entries per kind (objects, keys), in list order.
    pub fn counts(&self) -> [usize; COUNT] {
        struct Count<'a, F: Counted>(&'a ByKind<F>, [usize; COUNT]);
        impl<F: Counted> EachKind for Count<'_, F> {
            fn kind<K: Kind>(&mut self) {
                self.1[K::INDEX] = F::len::<K>(K::of(self.0));
            }
        }
        let mut c = Count(self, [0; COUNT]);
        each_kind(&mut c);
        c.1
    }
}

impl ByKind<Keys> {
    /// Adds every key of `other`.
    pub fn extend(&mut self, other: ByKind<Keys>) {
        struct Extend<'a>(&'a mut ByKind<Keys>, ByKind<Keys>);
        impl EachKind for Extend<'_> {
            fn kind<K: Kind>(&mut self) {
                let more = std::mem::take(K::of_mut(&mut self.1));
                K::of_mut(self.0).extend(more);
            }
        }
        each_kind(&mut Extend(self, other));
    }

    /// No key of any kind.
    pub fn is_empty(&self) -> bool {
        self.counts().iter().all(|n| *n == 0)
    }
}

/// An object's key: `namespace/name`, or `name` when it has no namespace. As
/// `ResourceExt::name_any`, the name is `generateName` where `name` is not set.
pub fn key_of<K: kube::Resource>(o: &K) -> String {
    let meta = o.meta();
    let name = meta.name.as_deref().or(meta.generate_name.as_deref()).unwrap_or_default();
    match meta.namespace.as_deref() {
        Some(ns) => {
            let mut k = String::with_capacity(ns.len() + 1 + name.len());
            k.push_str(ns);
            k.push('/');
            k.push_str(name);
            k
        }
        None => name.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_in_order_with_scopes_and_names() {
        assert_eq!(PLURALS, ["namespaces", "pods", "nodes", "services", "endpointslices", "networkpolicies", "servicecidrs"]);
        const { assert!(ServiceCIDR::OPTIONAL && !ServiceCIDR::NAMESPACED && !Pod::OPTIONAL) };
        assert_eq!((Pod::INDEX, NetworkPolicy::INDEX), (1, 5));
        const { assert!(Pod::NAMESPACED && EndpointSlice::NAMESPACED && !Node::NAMESPACED && !Namespace::NAMESPACED) };
        assert_eq!((<EndpointSlice as k8s_openapi::Resource>::KIND, <EndpointSlice as k8s_openapi::Resource>::API_VERSION), ("EndpointSlice", "discovery.k8s.io/v1"));
    }

    #[test]
    fn each_kind_visits_every_slot_once() {
        struct Mark<'a>(&'a mut ByKind<Keys>);
        impl EachKind for Mark<'_> {
            fn kind<K: Kind>(&mut self) {
                K::of_mut(self.0).insert(K::PLURAL.to_string());
            }
        }
        let mut keys = ByKind::<Keys>::default();
        each_kind(&mut Mark(&mut keys));
        assert_eq!(keys.counts(), [1; COUNT]);
        assert!(keys.pods.contains("pods") && keys.network_policies.contains("networkpolicies"));
    }
}
