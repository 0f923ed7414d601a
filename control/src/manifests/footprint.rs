//! What the kept objects take in memory, estimated object by object.
//!
//! Contract:
//! - [`Footprint::footprint`] is an object's bytes: its inline size, the heap of its strings
//!   and lists (by capacity), and the bookkeeping of its key in the view and the API source's
//!   store and digest table ([`KEY_COPIES`] copies of the key, with their map slots). Shared
//!   parts are not counted per object: a pod's labels (one map per distinct set) and node names
//!   (one per node). Each heap block is counted as glibc's allocator places it (at least 24
//!   bytes, in steps of 16, plus an 8-byte header): objects are mostly small strings, for
//!   which that is most of the cost. The sync benchmark shows the estimate next to the
//!   resident memory the objects cause.
//! - It costs the object's size: the views keep a running total per kind
//!   ([`super::Manifests::footprint`]), updated by the objects that change.
use std::collections::BTreeMap;
use std::mem::size_of;

use k8s_openapi::api::core::v1::{Namespace, Node, Service};
use k8s_openapi::api::networking::v1::{NetworkPolicy, ServiceCIDR};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::reduced::{EndpointHints, EndpointSlice, ForName, ObjectReference, Pod};

/// Bytes an object takes (see the module contract).
pub trait Footprint {
    fn footprint(&self) -> usize;
}

/// Copies of an object's key: the view's map, the API source's store (its object reference:
/// name and namespace) and its table of digests.
pub const KEY_COPIES: usize = 3;

/// Bytes of one entry in a B-tree map (std's nodes hold 11 entries; ~2/3 full on average).
fn map_slot<K, V>() -> usize {
    (size_of::<K>() + size_of::<V>()) * 3 / 2
}

/// What a heap block of `n` bytes takes (glibc: 8 bytes of header, at least 32 in all, in
/// steps of 16); nothing for no block.
pub fn block(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        (n + 8).max(32).next_multiple_of(16)
    }
}

fn s(x: &String) -> usize {
    block(x.capacity())
}

fn os(x: &Option<String>) -> usize {
    x.as_ref().map_or(0, s)
}

fn labels(l: &BTreeMap<String, String>) -> usize {
    l.iter().map(|(k, v)| map_slot::<String, String>() + s(k) + s(v)).sum()
}

/// The metadata's strings and labels, and the key's copies (`namespace/name`).
fn meta(m: &ObjectMeta) -> usize {
    let key = block(m.namespace.as_ref().map_or(0, String::len) + 1 + m.name.as_ref().map_or(0, String::len));
    os(&m.name)
        + os(&m.namespace)
        + os(&m.generate_name)
        + os(&m.resource_version)
        + os(&m.uid)
        + m.labels.as_ref().map_or(0, labels)
        + KEY_COPIES * (map_slot::<String, usize>() + key)
}

fn vec<T>(v: &[T], cap: usize, each: impl Fn(&T) -> usize) -> usize {
    block(cap * size_of::<T>()) + v.iter().map(each).sum::<usize>()
}

/// The `Arc`'s two counts.
const ARC: usize = 16;

/// An object in its `Arc`'s block.
fn arc_of<T>() -> usize {
    block(ARC + size_of::<T>())
}

impl Footprint for Pod {
    fn footprint(&self) -> usize {
        let spec = self.spec.as_ref().map_or(0, |sp| {
            vec(&sp.containers, sp.containers.capacity(), |c| {
                s(&c.name) + c.ports.as_ref().map_or(0, |p| vec(p, p.capacity(), |p| os(&p.name) + os(&p.protocol)))
            })
        });
        let status = self.status.as_ref().map_or(0, |st| {
            os(&st.phase)
                + os(&st.pod_ip)
                + st.pod_ips.as_ref().map_or(0, |ips| vec(ips, ips.capacity(), |i| s(&i.ip)))
                + st.conditions.as_ref().map_or(0, |c| vec(c, c.capacity(), |c| s(&c.type_) + s(&c.status)))
        });
        arc_of::<Self>() + meta(&self.metadata) + spec + status
    }
}

impl Footprint for EndpointSlice {
    fn footprint(&self) -> usize {
        let endpoints = vec(&self.endpoints, self.endpoints.capacity(), |e| {
            (if e.addresses.spilled() { block(e.addresses.capacity() * size_of::<String>()) } else { 0 }) + e.addresses.iter().map(s).sum::<usize>()
                + e.deprecated_topology.as_ref().map_or(0, |t| block(size_of::<BTreeMap<String, String>>()) + labels(t))
                + e.target_ref.as_ref().map_or(0, |r| block(size_of::<ObjectReference>()) + os(&r.kind) + os(&r.name) + os(&r.namespace))
                + e.hints.as_ref().map_or(0, |h| {
                    block(size_of::<EndpointHints>())
                        + [&h.for_zones, &h.for_nodes].into_iter().flatten().map(|l| block(l.capacity() * size_of::<ForName>())).sum::<usize>()
                })
        });
        let ports = self.ports.as_ref().map_or(0, |p| vec(p, p.capacity(), |p| os(&p.name) + os(&p.protocol) + os(&p.app_protocol)));
        let labels = block(self.labels.iter().count() * size_of::<(String, String)>()) + self.labels.iter().map(|(k, v)| s(k) + s(v)).sum::<usize>();
        arc_of::<Self>() + meta(&self.metadata) + labels + s(&self.address_type) + endpoints + ports
    }
}

impl Footprint for Service {
    fn footprint(&self) -> usize {
        let spec = self.spec.as_ref().map_or(0, |sp| {
            os(&sp.cluster_ip)
                + os(&sp.type_)
                + sp.cluster_ips.as_ref().map_or(0, |v| vec(v, v.capacity(), s))
                + sp.external_ips.as_ref().map_or(0, |v| vec(v, v.capacity(), s))
                + sp.selector.as_ref().map_or(0, labels)
                + sp.ports.as_ref().map_or(0, |p| vec(p, p.capacity(), |p| os(&p.name) + os(&p.protocol) + os(&p.app_protocol)))
        });
        arc_of::<Self>() + meta(&self.metadata) + spec
    }
}

impl Footprint for NetworkPolicy {
    fn footprint(&self) -> usize {
        // Rules are counted by their inline size: their selectors and peers are small next to it.
        let spec = self.spec.as_ref().map_or(0, |sp| {
            sp.ingress.as_ref().map_or(0, |r| r.capacity() * size_of::<k8s_openapi::api::networking::v1::NetworkPolicyIngressRule>())
                + sp.egress.as_ref().map_or(0, |r| r.capacity() * size_of::<k8s_openapi::api::networking::v1::NetworkPolicyEgressRule>())
        });
        arc_of::<Self>() + meta(&self.metadata) + spec
    }
}

macro_rules! inline_and_meta {
    ($($ty:ty),*) => {$(
        impl Footprint for $ty {
            fn footprint(&self) -> usize {
                arc_of::<Self>() + meta(&self.metadata)
            }
        }
    )*};
}
inline_and_meta!(Namespace, Node, ServiceCIDR);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_slice_grows_with_its_endpoints() {
        let slice = |n: usize| -> EndpointSlice {
            let eps: Vec<serde_json::Value> = (0..n).map(|i| serde_json::json!({"addresses": [format!("10.0.0.{i}")], "nodeName": "n"})).collect();
            serde_json::from_value(serde_json::json!({"metadata": {"name": "s", "namespace": "x"}, "addressType": "IPv4", "endpoints": eps})).unwrap()
        };
        let (one, ten) = (slice(1).footprint(), slice(10).footprint());
        // Its inline part and its address's text (the one address is inline, not a list).
        let per_endpoint = size_of::<super::super::reduced::Endpoint>() + block(8);
        assert!(ten - one >= 9 * per_endpoint, "{one} {ten}");
        assert!(one > size_of::<EndpointSlice>(), "{one}");
        assert_eq!((block(0), block(1), block(24), block(25), block(100)), (0, 32, 32, 48, 112));
    }
}
