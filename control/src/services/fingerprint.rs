//! Fingerprints of what the Service compiler reads from an object, so that an object whose
//! fingerprint did not change since the last compile is not read again.
//!
//! Contract:
//! - A fingerprint is a 128-bit hash of exactly the fields [`super::model::read_service`],
//!   [`super::model::read_slice`] and [`super::derive::from_selector`] read (the object's key is
//!   the cache's key, so it is not hashed). Whoever makes those functions read another field
//!   adds it here. Fields nothing reads (annotations, managedFields, ...) do not count, so an
//!   edit of them recompiles nothing.
//! - With `resource_versions` (objects from the Kubernetes API, where every change of an object
//!   gets a new `metadata.resourceVersion`), an object that has a resourceVersion is
//!   fingerprinted by it alone, which is cheaper; an object without one is hashed.
//! - The hash is not cryptographic: it is two 64-bit folded-multiply lanes, for inputs that
//!   nobody chooses to collide (a collision would keep a stale compile of one object).
use std::hash::{Hash, Hasher};

use k8s_openapi::api::core::v1::Service;

use crate::manifests::kinds::{EndpointSlice, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::derive;
use super::model::{left_to_other_proxy, left_to_other_proxy_by, SERVICE_NAME_LABEL};
use crate::model::PodInfo;

/// A fingerprint.
pub type Fp = u128;

const K1: u64 = 0x9e37_79b9_7f4a_7c15;
const K2: u64 = 0xc2b2_ae3d_27d4_eb4f;
const K3: u64 = 0x1656_67b1_9e37_79f9;
const K4: u64 = 0xd6e8_feb8_6659_fd93;

#[inline]
fn fold(x: u64, k: u64) -> u64 {
    let p = (x as u128).wrapping_mul(k as u128);
    (p as u64) ^ ((p >> 64) as u64)
}

/// The hasher behind fingerprints: `Hash` values go in, [`FpHasher::fp`] comes out.
#[derive(Debug, Clone)]
pub struct FpHasher {
    a: u64,
    b: u64,
}

impl Default for FpHasher {
    fn default() -> Self {
        Self { a: 0x243f_6a88_85a3_08d3, b: 0x1319_8a2e_0370_7344 }
    }
}

impl FpHasher {
    pub fn fp(&self) -> Fp {
        let a = fold(self.a ^ K3, K4) ^ self.b;
        let b = fold(self.b ^ K4, K3) ^ self.a;
        ((a as u128) << 64) | b as u128
    }
}

impl Hasher for FpHasher {
    #[inline]
    fn write_u64(&mut self, w: u64) {
        self.a = fold(self.a ^ w, K1);
        self.b = fold(self.b.rotate_left(29) ^ w, K2);
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.write_u64(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        let mut tail = [0u8; 8];
        tail[..rest.len()].copy_from_slice(rest);
        // The length makes "ab" + "" differ from "a" + "b" whatever the padding.
        self.write_u64(u64::from_le_bytes(tail) ^ ((bytes.len() as u64) << 56));
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.write_u64(i as u64);
    }
    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.write_u64(i as u64);
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.write_u64(i as u64);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }

    fn finish(&self) -> u64 {
        (self.fp() >> 64) as u64
    }
}

/// Hashes the resourceVersion when it is to be trusted and present; says whether it did.
fn by_version(h: &mut FpHasher, meta: &ObjectMeta, resource_versions: bool) -> bool {
    match meta.resource_version.as_deref() {
        Some(rv) if resource_versions && !rv.is_empty() => {
            1u8.hash(h);
            rv.hash(h);
            true
        }
        _ => {
            0u8.hash(h);
            false
        }
    }
}

fn int_or_string(h: &mut FpHasher, v: &Option<IntOrString>) {
    match v {
        None => 0u8.hash(h),
        Some(IntOrString::Int(n)) => {
            1u8.hash(h);
            n.hash(h);
        }
        Some(IntOrString::String(s)) => {
            2u8.hash(h);
            s.hash(h);
        }
    }
}

/// What [`super::model::read_service`] reads of a Service.
pub fn service(svc: &Service, resource_versions: bool) -> Fp {
    let mut h = FpHasher::default();
    if by_version(&mut h, &svc.metadata, resource_versions) {
        return h.fp();
    }
    match &svc.spec {
        None => 0u8.hash(&mut h),
        Some(s) => {
            1u8.hash(&mut h);
            s.type_.hash(&mut h);
            s.cluster_ip.hash(&mut h);
            s.cluster_ips.hash(&mut h);
            s.ip_families.hash(&mut h);
            s.external_ips.hash(&mut h);
            s.load_balancer_source_ranges.hash(&mut h);
            s.external_traffic_policy.hash(&mut h);
            s.internal_traffic_policy.hash(&mut h);
            s.session_affinity.hash(&mut h);
            s.session_affinity_config.as_ref().and_then(|c| c.client_ip.as_ref()).map(|c| c.timeout_seconds).hash(&mut h);
            s.selector.hash(&mut h);
            s.allocate_load_balancer_node_ports.hash(&mut h);
            s.publish_not_ready_addresses.hash(&mut h);
            s.traffic_distribution.hash(&mut h);
            s.health_check_node_port.hash(&mut h);
            hash_opt_list(&mut h, s.ports.as_ref(), |h, p| {
                p.name.hash(h);
                p.port.hash(h);
                p.protocol.hash(h);
                int_or_string(h, &p.target_port);
                p.node_port.hash(h);
            });
        }
    }
    left_to_other_proxy(svc.metadata.labels.as_ref()).hash(&mut h);
    hash_opt_list(&mut h, svc.status.as_ref().and_then(|s| s.load_balancer.as_ref()).and_then(|l| l.ingress.as_ref()), |h, i| {
        i.ip.hash(h);
        i.ip_mode.hash(h);
    });
    h.fp()
}

/// What [`super::model::read_slice`] reads of an EndpointSlice.
pub fn slice(s: &EndpointSlice, resource_versions: bool) -> Fp {
    let mut h = FpHasher::default();
    if by_version(&mut h, &s.metadata, resource_versions) {
        return h.fp();
    }
    s.address_type.hash(&mut h);
    s.labels.get(SERVICE_NAME_LABEL).hash(&mut h);
    left_to_other_proxy_by(|l| s.labels.contains_key(l)).hash(&mut h);
    hash_opt_list(&mut h, s.ports.as_ref(), |h, p| {
        p.name.hash(h);
        p.protocol.hash(h);
        p.port.hash(h);
    });
    s.endpoints.len().hash(&mut h);
    for e in &s.endpoints {
        e.addresses.hash(&mut h);
        hash_opt(&mut h, e.conditions.as_ref(), |h, c| {
            c.ready.hash(h);
            c.serving.hash(h);
            c.terminating.hash(h);
        });
        e.node_name.hash(&mut h);
        e.deprecated_topology.as_ref().and_then(|t| t.get("kubernetes.io/hostname")).hash(&mut h);
        hash_opt(&mut h, e.target_ref.as_ref(), |h, r| {
            r.kind.hash(h);
            r.name.hash(h);
            r.namespace.hash(h);
        });
        hash_opt(&mut h, e.hints.as_ref(), |h, hints| {
            hash_opt_list(h, hints.for_zones.as_ref(), |h, z| z.name.hash(h));
            hash_opt_list(h, hints.for_nodes.as_ref(), |h, n| n.name.hash(h));
        });
    }
    h.fp()
}

/// Adds what [`super::derive::from_selector`] reads of one selected pod: its [`PodInfo`]
/// (except the labels, which only decide whether it is selected) and its object's status.
pub fn add_pod(h: &mut FpHasher, p: &PodInfo, obj: Option<&Pod>, resource_versions: bool) {
    p.namespace.hash(h);
    p.name.hash(h);
    if let Some(o) = obj {
        if by_version(h, &o.metadata, resource_versions) {
            return;
        }
    }
    p.ip.hash(h);
    p.node_name.hash(h);
    p.ports.len().hash(h);
    for c in &p.ports {
        c.name.hash(h);
        c.port.hash(h);
        c.protocol.hash(h);
    }
    obj.is_some().hash(h);
    derive::pod_status(obj).hash(h);
}

/// Hashes whether `v` is there (0 or 1) and, when it is, what `f` hashes of it: an absent field
/// and an empty one hash apart.
fn hash_opt<T>(h: &mut FpHasher, v: Option<&T>, f: impl FnOnce(&mut FpHasher, &T)) {
    match v {
        None => 0u8.hash(h),
        Some(x) => {
            1u8.hash(h);
            f(h, x);
        }
    }
}

/// [`hash_opt`] of a list: presence, length, then `f` of each item in order.
fn hash_opt_list<T>(h: &mut FpHasher, v: Option<&Vec<T>>, mut f: impl FnMut(&mut FpHasher, &T)) {
    hash_opt(h, v, |h, items| {
        items.len().hash(h);
        for item in items {
            f(h, item);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp_of(parts: &[&str]) -> Fp {
        let mut h = FpHasher::default();
        for p in parts {
            p.hash(&mut h);
        }
        h.fp()
    }

    #[test]
    fn boundaries_and_order_count() {
        assert_ne!(fp_of(&["ab", ""]), fp_of(&["a", "b"]));
        assert_ne!(fp_of(&["a", "b"]), fp_of(&["b", "a"]));
        assert_ne!(fp_of(&["12345678"]), fp_of(&["1234567", "8"]));
        assert_ne!(fp_of(&["x"; 9]), fp_of(&["x"; 8]));
        assert_eq!(fp_of(&["a", "b"]), fp_of(&["a", "b"]));
    }

    #[test]
    fn resource_versions_only_when_asked() {
        let mut a: Service = serde_saphyr::from_str("metadata: {name: s, resourceVersion: '7'}\nspec: {ports: [{port: 80}]}").unwrap();
        let b = a.clone();
        a.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].port = 81;
        // Same version, different content: only the content hash sees it.
        assert_eq!(service(&a, true), service(&b, true));
        assert_ne!(service(&a, false), service(&b, false));
        // Nothing read changed: same fingerprint.
        let mut c = b.clone();
        c.metadata.annotations = Some([("x".to_string(), "y".to_string())].into());
        assert_eq!(service(&c, false), service(&b, false));
    }
}

