//! Which pod traffic leaves the cluster masqueraded to the node's address (what ip-masq-agent
//! does with iptables).
//!
//! Contract: when `masquerade` is set, a new connection from a pod port to an address outside
//! every `exempt` prefix (the cluster's pod CIDRs, the node's own address and the operator's
//! `--non-masquerade-cidr`s; the control side fills it), and that is not a Service, gets the
//! node's address ([`super::services::ServiceTables::snat_ip`]) and a free port as its source,
//! so that the reply comes back to this node whatever the outside network knows of pod
//! addresses. TCP, UDP and SCTP are masqueraded, and ICMP echo (its identifier translated as a
//! port: [`crate::pipeline::masquerade`]).
use super::lpm::{LpmTable, V4};

#[derive(Debug, Clone, Default)]
pub struct EgressMasquerade {
    pub masquerade: bool,
    pub exempt: LpmTable<V4, ()>,
}

impl EgressMasquerade {
    /// Whether a new connection from a pod to `dst` is masqueraded.
    #[inline]
    pub fn applies_to(&self, dst: u32) -> bool {
        self.masquerade && self.exempt.lookup(dst).is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_outside_the_exempt_prefixes_is_masqueraded_when_on() {
        let mut e = EgressMasquerade::default();
        assert!(!e.applies_to(0x0808_0808), "off by default");
        e.masquerade = true;
        e.exempt.insert(0x0af4_0000, 16, ());
        e.exempt.insert(0xac12_0002, 32, ());
        assert!(e.applies_to(0x0808_0808));
        assert!(e.applies_to(0xac12_0003));
        assert!(!e.applies_to(0x0af4_0105));
        assert!(!e.applies_to(0xac12_0002));
    }
}
