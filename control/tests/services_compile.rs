//! The example Services (examples/services) compiled as the switch compiles them.
use std::net::Ipv4Addr;
use std::path::PathBuf;

use podswitch_control::manifests;
use podswitch_control::model;
use podswitch_control::services::{self, CompiledServices, ServiceInputs, ServiceState};
use switch::tables::services::{FrontendKind, OnEmpty};

fn examples() -> (CompiledServices, ServiceState) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/services");
    let m = manifests::load_dir(&dir).unwrap();
    assert!(m.ignored.is_empty(), "{:?}", m.ignored);
    let node = model::node_info(&m, None).unwrap();
    let (pods, problems) = services::all_pods(&m);
    assert!(problems.is_empty(), "{problems:?}");
    let mut state = ServiceState::default();
    let c = services::compile_services(&ServiceInputs { manifests: &m, node: &node, all_pods: &pods }, &mut state);
    (c, state)
}

fn backends(c: &CompiledServices, ip: &str, port: u16, proto: u8) -> (Vec<String>, Vec<String>) {
    let f = c.tables.frontend(ip.parse().unwrap(), port, proto).unwrap_or_else(|| panic!("{ip}:{port}/{proto}"));
    let list =
        |s: &switch::tables::services::BackendSet| s.backends.iter().map(|b| format!("{}:{}", b.ip, b.port)).collect();
    (list(&f.internal), list(&f.external))
}

#[test]
fn services_examples_compile_without_problems() {
    let (c, _) = examples();
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    let frontends: Vec<&str> = c.views.iter().map(|v| v.frontend.as_str()).collect();
    assert_eq!(
        frontends,
        [
            "10.96.0.41:8000/tcp",
            "10.96.0.40:8000/tcp",
            "10.96.0.20:80/tcp",
            "10.96.0.20:80/udp",
            "10.96.0.21:8080/tcp",
            "172.18.0.2:30080/tcp",
            "10.96.0.30:80/tcp",
            "172.18.0.2:30090/tcp",
            "192.0.2.10:80/tcp",
            "192.0.2.20:80/tcp",
            "10.96.0.30:80/udp",
            "172.18.0.2:30090/udp",
            "192.0.2.10:80/udp",
            "192.0.2.20:80/udp",
        ]
    );
}

#[test]
fn services_examples_backends() {
    let (c, _) = examples();
    let two = vec!["10.244.0.11:80".to_string(), "10.244.0.12:80".to_string()];
    assert_eq!(backends(&c, "10.96.0.20", 80, 6).0, two);
    assert_eq!(backends(&c, "10.96.0.20", 80, 17).0, two);
    // Named targetPort, resolved per pod.
    let named = vec!["10.244.0.11:80".to_string(), "10.244.0.12:81".to_string()];
    assert_eq!(backends(&c, "10.96.0.21", 8080, 6), (named.clone(), named.clone()));
    assert_eq!(backends(&c, "172.18.0.2", 30080, 6).1, named);
    // Hand-written slices: ready first, serving+terminating only when nothing is ready.
    assert_eq!(backends(&c, "10.96.0.40", 8000, 6).0, ["10.244.0.11:80"]);
    assert_eq!(backends(&c, "10.96.0.41", 8000, 6).0, ["10.244.0.13:80"]);
    // LoadBalancer: source ranges, eTP Local (local endpoint, source preserved), affinity.
    let lb = c.tables.frontend(Ipv4Addr::new(192, 0, 2, 10), 80, 6).unwrap();
    assert_eq!(lb.kind, FrontendKind::LoadBalancer);
    assert!(lb.source_allowed(Ipv4Addr::new(192, 0, 2, 99)) && !lb.source_allowed(Ipv4Addr::new(198, 51, 100, 1)));
    assert_eq!(lb.affinity_timeout_s, Some(600));
    assert!(!lb.external.masquerade);
    assert_eq!(lb.external.on_empty, OnEmpty::Drop);
    for (ip, port, proto) in [("192.0.2.10", 80, 17), ("192.0.2.20", 80, 6), ("172.18.0.2", 30090, 17)] {
        assert_eq!(backends(&c, ip, port, proto).1, ["10.244.0.21:80"]);
    }
    // Its health check: this node has that one ready endpoint (serving two ports: counted once).
    assert_eq!(
        c.health_checks,
        [services::HealthCheck { namespace: "y".into(), name: "api-lb".into(), port: 30091, local_endpoints: 1 }]
    );
}
