//! The view of one compiled frontend ([`ServiceView`]) that `show services` prints: the
//! Service's settings, its endpoints with their conditions and set membership, and the sets.
use std::net::Ipv4Addr;

use switch::tables::services::Frontend;

use super::address::AddressText;
use super::derive::Candidate;
use super::model::{PortSpec, ServiceModel, TargetPort};
use super::sets::SetChoice;
use super::{EndpointView, ServiceView, SetView};

#[allow(clippy::too_many_arguments)]
pub(super) fn frontend_view(
    svc: &ServiceModel,
    port: &PortSpec,
    f: &Frontend,
    cands: &[Candidate],
    ids: &[u32],
    internal: &SetChoice,
    external: &SetChoice,
    from: &'static str,
) -> ServiceView {
    let ip = Ipv4Addr::from(f.key.ip);
    // Members are indices in ascending order.
    let member = |s: &SetChoice, i: usize| s.members.binary_search(&i).is_ok();
    let set = |s: &SetChoice| SetView {
        backends: s.members.len(),
        on_empty: s.on_empty,
        masquerade: s.masquerade,
        local_only: s.local_only,
    };
    ServiceView {
        service: svc.key.clone(),
        name: f.name.clone(),
        service_id: f.service_id,
        service_type: svc.type_,
        kind: f.kind,
        frontend: [AddressText::new(ip, f.key.port).as_str(), "/", port.proto.as_str()].concat(),
        ip,
        port: f.key.port,
        protocol: port.proto,
        target_port: match &port.target {
            TargetPort::Number(n) => n.to_string(),
            TargetPort::Name(s) => s.clone(),
        },
        endpoints_from: from,
        endpoints: cands
            .iter()
            .enumerate()
            .map(|(i, c)| EndpointView {
                endpoint_id: ids[i],
                endpoint: c.clone(),
                internal: member(internal, i),
                external: member(external, i),
            })
            .collect(),
        internal: set(internal),
        external: set(external),
        affinity_timeout_s: svc.affinity_timeout_s,
        external_traffic_policy: svc.external_policy,
        internal_traffic_policy: svc.internal_policy,
        source_ranges: f.source_ranges.iter().map(|(n, l)| format!("{}/{l}", Ipv4Addr::from(*n))).collect(),
    }
}
