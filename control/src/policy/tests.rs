//! Tests of the NetworkPolicy compiler, with fixtures written as manifests: the 9-pod lab model
//! (namespaces x, y, z labelled `ns: <name>`; pods a, b, c labelled `pod: <name>`, serving TCP
//! and UDP on 80 and 81 under the names serve-80-tcp etc.) and the upstream conformance
//! scenarios (`test/e2e/network/netpol/network_policy.go`) as full reachability matrices.
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::Path;

use switch::tables::policy::{Decision, Peer, PortRange};

use super::*;
use crate::manifests::{add_documents, Manifests};
use crate::services::all_pods;

const TCP: u8 = 6;
const UDP: u8 = 17;
const SCTP: u8 = 132;
const NODE_IP: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 2);

fn node() -> NodeInfo {
    NodeInfo { name: "node-1".into(), pod_cidr: "10.244.0.0/24".parse().unwrap(), internal_ip: NODE_IP }
}

fn load(yaml: &str) -> Manifests {
    let mut m = Manifests::default();
    add_documents(&mut m, Path::new("test.yaml"), yaml).unwrap();
    m
}

fn compile_in(state: &mut PolicyState, yaml: &str) -> CompiledPolicy {
    let m = load(yaml);
    let (pods, problems) = all_pods(&m);
    assert!(problems.is_empty(), "{problems:?}");
    let n = node();
    compile_policy(&PolicyInputs { manifests: &m, node: &n, all_pods: &pods }, state)
}

fn compile(yaml: &str) -> CompiledPolicy {
    compile_in(&mut PolicyState::default(), yaml)
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn has_problem(c: &CompiledPolicy, needle: &str) -> bool {
    c.problems.iter().any(|p| p.contains(needle))
}

fn namespace(name: &str, labels: &str) -> String {
    format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}, labels: {labels}}}\n---\n")
}

/// A pod in flow-style YAML; `node` "" leaves spec.nodeName unset, `ip` "" status.podIP.
fn pod(ns: &str, name: &str, labels: &str, ip: &str, node: &str, ports: &str) -> String {
    let node = if node.is_empty() { String::new() } else { format!("nodeName: {node}, ") };
    let ip = if ip.is_empty() { String::new() } else { format!("podIP: {ip}") };
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, labels: {labels}}}\n\
         spec: {{{node}containers: [{{name: c, image: i, ports: {ports}}}]}}\nstatus: {{{ip}}}\n---\n"
    )
}

fn np(ns: &str, name: &str, spec: &str) -> String {
    format!("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {spec}\n---\n")
}

const LAB_PORTS: &str = "[{name: serve-80-tcp, containerPort: 80, protocol: TCP}, {name: serve-80-udp, containerPort: 80, protocol: UDP}, \
                         {name: serve-81-tcp, containerPort: 81, protocol: TCP}, {name: serve-81-udp, containerPort: 81, protocol: UDP}]";

const NAMESPACES: [&str; 3] = ["x", "y", "z"];
const NAMES: [&str; 3] = ["a", "b", "c"];

/// `ns/pod` -> 10.244.0.(10 * namespace number + pod number): x/a .10, y/b .21, z/c .32.
fn lab_ip(p: &str) -> Ipv4Addr {
    let (ns, name) = p.split_once('/').unwrap();
    let n = NAMESPACES.iter().position(|x| *x == ns).unwrap() as u8 + 1;
    let k = NAMES.iter().position(|x| *x == name).unwrap() as u8;
    Ipv4Addr::new(10, 244, 0, 10 * n + k)
}

fn lab_pods() -> Vec<String> {
    NAMESPACES.iter().flat_map(|ns| NAMES.iter().map(move |n| format!("{ns}/{n}"))).collect()
}

/// The 9-pod lab model, every pod on this node.
fn lab9() -> String {
    let mut s = String::new();
    for ns in NAMESPACES {
        s += &namespace(ns, &format!("{{ns: {ns}}}"));
    }
    for p in lab_pods() {
        let (ns, name) = p.split_once('/').unwrap();
        s += &pod(ns, name, &format!("{{pod: {name}}}"), &lab_ip(&p).to_string(), "node-1", LAB_PORTS);
    }
    s
}

fn judge(c: &CompiledPolicy, from: &str, to: &str, proto: u8, port: u16) -> Decision {
    c.tables.judge(lab_ip(from), lab_ip(to), proto, port)
}

// ---------------------------------------------------------------------------------------------
// The reachability matrix, as the upstream tests write it: start from "everything allowed" and
// state the exceptions, later statements overriding earlier ones. A pod reaching itself is
// loopback (it never crosses the switch) and is not judged, as upstream ignores it.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Probe {
    proto: u8,
    port: u16,
}

const TCP80: Probe = Probe { proto: TCP, port: 80 };
const TCP81: Probe = Probe { proto: TCP, port: 81 };
const UDP80: Probe = Probe { proto: UDP, port: 80 };
const UDP81: Probe = Probe { proto: UDP, port: 81 };
const PROBES: [Probe; 4] = [TCP80, TCP81, UDP80, UDP81];

impl std::fmt::Display for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", if self.proto == TCP { "TCP" } else { "UDP" }, self.port)
    }
}

struct Reach {
    pods: Vec<String>,
    /// [from][to]
    allowed: Vec<Vec<bool>>,
}

fn pattern_matches(pattern: &str, pod: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    let (pns, pname) = pattern.split_once('/').expect("pattern is *, ns/pod, ns/* or */pod");
    let (ns, name) = pod.split_once('/').unwrap();
    (pns == "*" || pns == ns) && (pname == "*" || pname == name)
}

impl Reach {
    fn all_allowed() -> Self {
        let pods = lab_pods();
        let n = pods.len();
        Self { pods, allowed: vec![vec![true; n]; n] }
    }

    /// Connections from pods matching `from` to pods matching `to` (`*`, `x/*`, `*/a`, `x/a`).
    fn expect(&mut self, from: &str, to: &str, allowed: bool) -> &mut Self {
        for (i, f) in self.pods.iter().enumerate() {
            for (j, t) in self.pods.iter().enumerate() {
                if pattern_matches(from, f) && pattern_matches(to, t) {
                    self.allowed[i][j] = allowed;
                }
            }
        }
        self
    }

    /// Judges every ordered pair of distinct pods; `None` when all agree with the expectation,
    /// else a readable report: both matrices (rows: from, columns: to; `.` allowed, `X` denied,
    /// `-` loopback, `!` where the judged value differs) and one line per difference.
    #[allow(clippy::needless_range_loop)] // square matrices indexed [from][to]
    fn diff(&self, c: &CompiledPolicy, probe: Probe) -> Option<String> {
        let n = self.pods.len();
        let mut got = vec![vec![true; n]; n];
        let mut lines = Vec::new();
        for i in 0..n {
            for j in 0..n {
                if i == j {
                    continue;
                }
                let d = judge(c, &self.pods[i], &self.pods[j], probe.proto, probe.port);
                got[i][j] = d.allowed();
                if got[i][j] != self.allowed[i][j] {
                    lines.push(format!(
                        "  {} -> {}: expected {}, judged {d:?}",
                        self.pods[i],
                        self.pods[j],
                        if self.allowed[i][j] { "allowed" } else { "denied" }
                    ));
                }
            }
        }
        if lines.is_empty() {
            return None;
        }
        let table = |m: &Vec<Vec<bool>>, mark: bool| {
            let mut s = format!("{:>6}", "");
            for p in &self.pods {
                let _ = write!(s, " {p:>4}");
            }
            s.push('\n');
            for i in 0..n {
                let _ = write!(s, "{:>6}", self.pods[i]);
                for j in 0..n {
                    let cell = if i == j {
                        "-".to_string()
                    } else {
                        let v = if m[i][j] { "." } else { "X" };
                        if mark && got[i][j] != self.allowed[i][j] {
                            format!("!{v}")
                        } else {
                            v.to_string()
                        }
                    };
                    let _ = write!(s, " {cell:>4}");
                }
                s.push('\n');
            }
            s
        };
        Some(format!(
            "{probe}: {} pair(s) differ\nexpected:\n{}judged:\n{}{}\n",
            lines.len(),
            table(&self.allowed, false),
            table(&got, true),
            lines.join("\n")
        ))
    }
}

/// Compiles the lab model with `policies` and checks the whole matrix on every probe;
/// `expect` states, per probe, the exceptions to "everything allowed".
fn scenario(name: &str, policies: &str, expect: impl Fn(Probe, &mut Reach)) {
    let c = compile(&(lab9() + policies));
    assert!(c.problems.is_empty(), "scenario {name}: {:?}", c.problems);
    let mut report = String::new();
    for probe in PROBES {
        let mut r = Reach::all_allowed();
        expect(probe, &mut r);
        if let Some(d) = r.diff(&c, probe) {
            report += &d;
        }
    }
    assert!(report.is_empty(), "scenario {name:?}:\n{report}");
}

const POD_A: &str = "{matchLabels: {pod: a}}";

// ---------------------------------------------------------------------------------------------
// The 9-pod model: upstream conformance scenarios.

#[test]
fn matrix_default_deny_ingress() {
    scenario("deny-ingress (policyTypes given)", &np("x", "deny-ingress", "{podSelector: {}, policyTypes: [Ingress]}"), |_, r| {
        r.expect("*", "x/*", false);
    });
    scenario("deny-ingress (nothing but a podSelector)", &np("x", "deny-ingress", "{podSelector: {}}"), |_, r| {
        r.expect("*", "x/*", false);
    });
    scenario("deny-ingress (no spec at all)", "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: d, namespace: x}\n", |_, r| {
        r.expect("*", "x/*", false);
    });
}

#[test]
fn matrix_default_deny_all() {
    scenario("deny-all", &np("x", "deny-all", "{podSelector: {}, policyTypes: [Ingress, Egress]}"), |_, r| {
        r.expect("*", "x/*", false).expect("x/*", "*", false);
    });
}

#[test]
fn matrix_allow_from_same_namespace() {
    // "should deny ingress from pods on other namespaces"
    let p = np("x", "same-ns", "{podSelector: {}, ingress: [{from: [{podSelector: {}}]}]}");
    scenario("allow from own namespace", &p, |_, r| {
        r.expect("y/*", "x/*", false).expect("z/*", "x/*", false);
    });
    // "should enforce policy to allow traffic from pods within server namespace based on PodSelector"
    let p = np("x", "x-a-allows-x-b", &format!("{{podSelector: {POD_A}, ingress: [{{from: [{{podSelector: {{matchLabels: {{pod: b}}}}}}]}}]}}"));
    scenario("x/a from x/b only", &p, |_, r| {
        r.expect("*", "x/a", false).expect("x/b", "x/a", true);
    });
}

#[test]
fn matrix_allow_from_namespace_y() {
    for (what, sel) in [
        ("matchLabels ns: y", "{matchLabels: {ns: y}}"),
        ("default label", "{matchLabels: {kubernetes.io/metadata.name: y}}"),
        ("matchExpressions In", "{matchExpressions: [{key: kubernetes.io/metadata.name, operator: In, values: [y]}]}"),
    ] {
        let p = np("x", "from-y", &format!("{{podSelector: {POD_A}, ingress: [{{from: [{{namespaceSelector: {sel}}}]}}]}}"));
        scenario(what, &p, |_, r| {
            r.expect("*", "x/a", false).expect("y/*", "x/a", true);
        });
    }
    // "should enforce policy to allow ingress traffic from pods in all namespaces"
    let p = np("x", "from-all-ns", &format!("{{podSelector: {POD_A}, ingress: [{{from: [{{namespaceSelector: {{}}}}]}}]}}"));
    scenario("namespaceSelector {}", &p, |_, _| {});
}

#[test]
fn matrix_pod_and_namespace_selectors_and_vs_or() {
    let not_x = "{matchExpressions: [{key: ns, operator: NotIn, values: [x]}]}";
    let b = "{matchLabels: {pod: b}}";
    // One entry with both selectors: AND.
    let and = np("x", "and", &format!("{{podSelector: {POD_A}, ingress: [{{from: [{{namespaceSelector: {not_x}, podSelector: {b}}}]}}]}}"));
    scenario("podSelector AND namespaceSelector", &and, |_, r| {
        r.expect("*", "x/a", false).expect("y/b", "x/a", true).expect("z/b", "x/a", true);
    });
    // Two entries: OR.
    let or = np("x", "or", &format!("{{podSelector: {POD_A}, ingress: [{{from: [{{namespaceSelector: {not_x}}}, {{podSelector: {b}}}]}}]}}"));
    scenario("podSelector OR namespaceSelector", &or, |_, r| {
        r.expect("x/c", "x/a", false);
    });
    // "Multiple PodSelectors and NamespaceSelectors": pods b, c of namespaces other than x.
    let multi = np(
        "x",
        "multi",
        &format!("{{podSelector: {POD_A}, ingress: [{{from: [{{namespaceSelector: {not_x}, podSelector: {{matchExpressions: [{{key: pod, operator: In, values: [b, c]}}]}}}}]}}]}}"),
    );
    scenario("pods b,c of other namespaces", &multi, |_, r| {
        r.expect("x/*", "x/a", false).expect("y/a", "x/a", false).expect("z/a", "x/a", false);
    });
}

#[test]
fn matrix_ip_block_with_except() {
    // "should enforce except clause while egress access to server in CIDR block"
    let p = np(
        "x",
        "except-b",
        &format!("{{podSelector: {POD_A}, policyTypes: [Egress], egress: [{{to: [{{ipBlock: {{cidr: 10.0.0.0/8, except: [10.244.0.11/32]}}}}]}}]}}"),
    );
    scenario("egress ipBlock except x/b", &p, |_, r| {
        r.expect("x/a", "x/b", false);
    });
    // An except of two pods (z/a .30, z/b .31) on ingress; the cidr written with host bits.
    let p = np(
        "y",
        "except-z-ab",
        &format!("{{podSelector: {POD_A}, ingress: [{{from: [{{ipBlock: {{cidr: 10.244.7.7/16, except: [10.244.0.30/31]}}}}]}}]}}"),
    );
    scenario("ingress ipBlock except z/a,z/b", &p, |_, r| {
        r.expect("z/a", "y/a", false).expect("z/b", "y/a", false);
    });
    // "should ensure an IP overlapping both IPBlock.CIDR and IPBlock.Except is allowed": a
    // second policy allowing the excepted address adds up.
    let p2 = np("x", "allow-b", &format!("{{podSelector: {POD_A}, policyTypes: [Egress], egress: [{{to: [{{ipBlock: {{cidr: 10.244.0.11/32}}}}]}}]}}"));
    let p1 = np(
        "x",
        "except-b",
        &format!("{{podSelector: {POD_A}, policyTypes: [Egress], egress: [{{to: [{{ipBlock: {{cidr: 10.0.0.0/8, except: [10.244.0.11/32]}}}}]}}]}}"),
    );
    scenario("except overlapped by another policy", &(p1 + &p2), |_, _| {});
    // "should allow egress access to server in CIDR block"
    scenario("egress to y/b's /32 only", &p2.replace("10.244.0.11", "10.244.0.21"), |_, r| {
        r.expect("x/a", "*", false).expect("x/a", "y/b", true);
    });
}

#[test]
fn matrix_named_ports() {
    // "should allow ingress access on one named port"
    scenario("ingress named port serve-81-tcp", &np("x", "named", "{podSelector: {}, ingress: [{ports: [{port: serve-81-tcp}]}]}"), |p, r| {
        if p != TCP81 {
            r.expect("*", "x/*", false);
        }
    });
    // "should allow ingress access from namespace on one named port"
    let p = np(
        "x",
        "named-from-y",
        &format!("{{podSelector: {POD_A}, ingress: [{{from: [{{namespaceSelector: {{matchLabels: {{ns: y}}}}}}], ports: [{{port: serve-80-tcp, protocol: TCP}}]}}]}}"),
    );
    scenario("ingress named port from namespace y", &p, |p, r| {
        r.expect("*", "x/a", false);
        if p == TCP80 {
            r.expect("y/*", "x/a", true);
        }
    });
    // "should allow egress access on one named port", with a UDP name besides.
    let p = np(
        "x",
        "named-egress",
        "{podSelector: {}, policyTypes: [Egress], egress: [{ports: [{port: serve-80-tcp}, {port: serve-81-udp, protocol: UDP}]}]}",
    );
    scenario("egress named ports", &p, |p, r| {
        if p != TCP80 && p != UDP81 {
            r.expect("x/*", "*", false);
        }
    });
    // A name with the wrong protocol resolves to nothing: nothing is allowed.
    scenario("named port of another protocol", &np("x", "named", "{podSelector: {}, ingress: [{ports: [{port: serve-81-tcp, protocol: UDP}]}]}"), |_, r| {
        r.expect("*", "x/*", false);
    });
}

#[test]
fn matrix_end_port() {
    let p = np(
        "x",
        "ranges",
        &format!("{{podSelector: {POD_A}, ingress: [{{ports: [{{protocol: TCP, port: 80, endPort: 81}}, {{protocol: UDP, port: 81, endPort: 65535}}]}}]}}"),
    );
    scenario("endPort ranges", &p, |p, r| {
        if p == UDP80 {
            r.expect("*", "x/a", false);
        }
    });
    let p = np("x", "range-egress", "{podSelector: {}, policyTypes: [Egress], egress: [{ports: [{port: 81, endPort: 81}, {protocol: UDP, port: 1, endPort: 80}]}]}");
    scenario("endPort on egress", &p, |p, r| {
        if p == TCP80 || p == UDP81 {
            r.expect("x/*", "*", false);
        }
    });
}

#[test]
fn matrix_egress() {
    // "should deny egress from all pods in a namespace"
    scenario("egress deny all", &np("x", "deny-egress", "{podSelector: {}, policyTypes: [Egress]}"), |_, r| {
        r.expect("x/*", "*", false);
    });
    // "should enforce egress policy allowing traffic to a server in a different namespace based
    // on PodSelector and NamespaceSelector"
    let p = np(
        "x",
        "to-y-a",
        &format!("{{podSelector: {POD_A}, policyTypes: [Egress], egress: [{{to: [{{namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: y}}}}, podSelector: {POD_A}}}]}}]}}"),
    );
    scenario("egress to y/a only", &p, |_, r| {
        r.expect("x/a", "*", false).expect("x/a", "y/a", true);
    });
    // "should enforce policy based on NamespaceSelector with MatchExpressions using default ns label"
    let p = np(
        "x",
        "not-y",
        &format!("{{podSelector: {POD_A}, policyTypes: [Egress], egress: [{{to: [{{namespaceSelector: {{matchExpressions: [{{key: kubernetes.io/metadata.name, operator: NotIn, values: [y]}}]}}}}]}}]}}"),
    );
    scenario("egress to namespaces other than y", &p, |_, r| {
        r.expect("x/a", "y/*", false);
    });
    // "should support denying of egress traffic on the client side (even if the server
    // explicitly allows this traffic)"
    let from_xa = "{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: x}}, podSelector: {matchLabels: {pod: a}}}]}";
    let p = [
        np("x", "to-y-a", &format!("{{podSelector: {POD_A}, policyTypes: [Egress], egress: [{{to: [{{namespaceSelector: {{matchLabels: {{ns: y}}}}, podSelector: {POD_A}}}]}}]}}")),
        np("y", "a-from-x-a", &format!("{{podSelector: {POD_A}, ingress: [{from_xa}]}}")),
        np("y", "b-from-x-a", &format!("{{podSelector: {{matchLabels: {{pod: b}}}}, ingress: [{from_xa}]}}")),
    ]
    .concat();
    scenario("client-side egress deny", &p, |_, r| {
        r.expect("x/a", "*", false).expect("*", "y/a", false).expect("x/a", "y/a", true).expect("*", "y/b", false);
    });
}

#[test]
fn matrix_policy_types() {
    // Omitted, with an egress section: Ingress and Egress.
    let p = np("x", "both", &format!("{{podSelector: {POD_A}, egress: [{{to: [{{podSelector: {{matchLabels: {{pod: b}}}}}}]}}]}}"));
    scenario("policyTypes omitted, egress section", &p, |_, r| {
        r.expect("*", "x/a", false).expect("x/a", "*", false).expect("x/a", "x/b", true);
    });
    // Omitted, with `egress: []`: Ingress only (the API server's default).
    scenario("policyTypes omitted, egress: []", &np("x", "in", &format!("{{podSelector: {POD_A}, egress: []}}")), |_, r| {
        r.expect("*", "x/a", false);
    });
    // Explicit policyTypes wins: egress rules of a policy of type Ingress are ignored.
    let p = np("x", "in-only", &format!("{{podSelector: {POD_A}, policyTypes: [Ingress], egress: [{{to: [{{podSelector: {{matchLabels: {{pod: b}}}}}}]}}]}}"));
    scenario("policyTypes [Ingress] with egress rules", &p, |_, r| {
        r.expect("*", "x/a", false);
    });
    // ... and ingress rules of a policy of type Egress.
    let p = np("x", "eg-only", &format!("{{podSelector: {POD_A}, policyTypes: [Egress], ingress: [{{}}], egress: [{{to: [{{podSelector: {{}}}}]}}]}}"));
    scenario("policyTypes [Egress] with ingress rules", &p, |_, r| {
        r.expect("x/a", "y/*", false).expect("x/a", "z/*", false);
    });
    // "should enforce policies to check ingress and egress policies can be controlled
    // independently based on PodSelector"
    let p = [
        np("x", "allow-egress", &format!("{{podSelector: {POD_A}, policyTypes: [Egress], egress: [{{}}]}}")),
        np("x", "deny-ingress", &format!("{{podSelector: {POD_A}, policyTypes: [Ingress]}}")),
    ]
    .concat();
    scenario("directions are independent", &p, |_, r| {
        r.expect("*", "x/a", false);
    });
    // "should work with Ingress, Egress specified together"
    let p = np(
        "x",
        "together",
        &format!("{{podSelector: {POD_A}, policyTypes: [Egress, Ingress], ingress: [{{from: [{{podSelector: {{matchLabels: {{pod: b}}}}}}]}}], egress: [{{ports: [{{port: 80}}]}}]}}"),
    );
    scenario("Ingress and Egress together", &p, |p, r| {
        r.expect("*", "x/a", false).expect("x/b", "x/a", true);
        if p != TCP80 {
            r.expect("x/a", "*", false);
        }
    });
}

#[test]
fn matrix_policies_add_up() {
    let from_y = |port: u16, proto: &str| {
        format!("{{podSelector: {POD_A}, ingress: [{{from: [{{namespaceSelector: {{matchLabels: {{ns: y}}}}}}], ports: [{{port: {port}, protocol: {proto}}}]}}]}}")
    };
    let p81 = np("x", "y-81", &from_y(81, "TCP"));
    // "should enforce multiple, stacked policies with overlapping podSelectors", first step.
    scenario("one policy: y on TCP/81", &p81, |p, r| {
        r.expect("*", "x/a", false);
        if p == TCP81 {
            r.expect("y/*", "x/a", true);
        }
    });
    let p80 = np("x", "y-80", &from_y(80, "TCP"));
    let z_udp = np("x", "z-udp-80", &format!("{{podSelector: {POD_A}, ingress: [{{from: [{{namespaceSelector: {{matchLabels: {{ns: z}}}}}}], ports: [{{port: 80, protocol: UDP}}]}}]}}"));
    scenario("three policies add up", &[p81, p80, z_udp].concat(), |p, r| {
        r.expect("*", "x/a", false);
        match p {
            TCP80 | TCP81 => {
                r.expect("y/*", "x/a", true);
            }
            UDP80 => {
                r.expect("z/*", "x/a", true);
            }
            _ => {}
        }
    });
    // "should enforce multiple ingress policies with ingress allow-all policy taking precedence"
    let p = [
        np("x", "only-80", "{podSelector: {}, ingress: [{ports: [{port: 80}]}]}"),
        np("x", "allow-all", "{podSelector: {}, ingress: [{}]}"),
    ]
    .concat();
    scenario("allow-all adds up with a narrower policy", &p, |_, _| {});
    // "should enforce policy to allow ingress traffic for a target"
    let p = [
        np("x", "deny-all", "{podSelector: {}}"),
        np("x", "allow-all-to-a", &format!("{{podSelector: {POD_A}, ingress: [{{from: [{{podSelector: {{}}, namespaceSelector: {{}}}}]}}]}}")),
    ]
    .concat();
    scenario("deny namespace, allow one target", &p, |_, r| {
        r.expect("*", "x/*", false).expect("*", "x/a", true);
    });
}

#[test]
fn matrix_ingress_empty_list_vs_empty_rule() {
    let deny = np("x", "deny", "{podSelector: {}, ingress: []}");
    let allow = np("x", "allow", "{podSelector: {}, ingress: [{}]}");
    scenario("ingress: []", &deny, |_, r| {
        r.expect("*", "x/*", false);
    });
    scenario("ingress: [{}]", &allow, |_, _| {});
    scenario("both", &(deny + &allow), |_, _| {});
    scenario("rule with from: [] and ports: []", &np("x", "allow", "{podSelector: {}, ingress: [{from: [], ports: []}]}"), |_, _| {});
}

#[test]
fn matrix_protocols() {
    // "should not mistakenly treat 'protocol: SCTP' as 'protocol: TCP'"
    let p = [
        np("x", "deny-ingress", "{podSelector: {}}"),
        np("x", "sctp-81", &format!("{{podSelector: {POD_A}, ingress: [{{ports: [{{port: 81, protocol: SCTP}}]}}]}}")),
    ]
    .concat();
    scenario("SCTP is not TCP", &p, |_, r| {
        r.expect("*", "x/*", false);
    });
    // "should not allow access by TCP when a policy specifies only UDP"
    scenario("UDP only", &np("x", "udp-81", &format!("{{podSelector: {POD_A}, ingress: [{{ports: [{{port: 81, protocol: UDP}}]}}]}}")), |p, r| {
        if p != UDP81 {
            r.expect("*", "x/a", false);
        }
    });
    // "should enforce ingress policy allowing any port traffic to a server on a specific protocol"
    scenario("any TCP port", &np("x", "tcp", &format!("{{podSelector: {POD_A}, ingress: [{{ports: [{{protocol: TCP}}]}}]}}")), |p, r| {
        if p.proto == UDP {
            r.expect("*", "x/a", false);
        }
    });
}

#[test]
fn matrix_helper_reports_differences_readably() {
    let c = compile(&(lab9() + &np("x", "deny-ingress", "{podSelector: {}}")));
    let mut r = Reach::all_allowed();
    r.expect("*", "x/a", false);
    let d = r.diff(&c, TCP80).expect("x/b and x/c are denied too");
    assert!(d.contains("x/a -> x/b: expected allowed, judged DeniedIngress"), "{d}");
    assert!(d.contains("TCP/80: 16 pair(s) differ"), "{d}");
    assert!(d.contains("!X"), "{d}");
    r.expect("*", "x/*", false);
    assert!(r.diff(&c, TCP80).is_none());
}

// ---------------------------------------------------------------------------------------------
// Selectors

#[test]
fn selectors_match_as_kubernetes_does() {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
    let labels: selector::Labels = [("pod", "a"), ("tier", "web"), ("empty", "")].iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let cases = [
        ("{}", true),
        ("{matchLabels: {}}", true),
        ("{matchLabels: {pod: a}}", true),
        ("{matchLabels: {pod: b}}", false),
        ("{matchLabels: {pod: a, tier: web}}", true),
        ("{matchLabels: {pod: a, tier: db}}", false),
        ("{matchLabels: {empty: ''}}", true),
        ("{matchExpressions: [{key: pod, operator: In, values: [b, a]}]}", true),
        ("{matchExpressions: [{key: pod, operator: In, values: [b]}]}", false),
        ("{matchExpressions: [{key: missing, operator: In, values: [a]}]}", false),
        ("{matchExpressions: [{key: pod, operator: NotIn, values: [b]}]}", true),
        ("{matchExpressions: [{key: pod, operator: NotIn, values: [a]}]}", false),
        ("{matchExpressions: [{key: missing, operator: NotIn, values: [a]}]}", true),
        ("{matchExpressions: [{key: tier, operator: Exists}]}", true),
        ("{matchExpressions: [{key: missing, operator: Exists}]}", false),
        ("{matchExpressions: [{key: missing, operator: DoesNotExist}]}", true),
        ("{matchExpressions: [{key: tier, operator: DoesNotExist}]}", false),
        ("{matchExpressions: [{key: tier, operator: Exists, values: []}]}", true),
        ("{matchLabels: {pod: a}, matchExpressions: [{key: tier, operator: NotIn, values: [web]}]}", false),
    ];
    for (yaml, want) in cases {
        let sel: LabelSelector = serde_saphyr::from_str(yaml).unwrap();
        let s = selector::Selector::parse(&sel).unwrap_or_else(|e| panic!("{yaml}: {e}"));
        assert_eq!(s.matches(&labels), want, "{yaml}");
    }
    let errors = [
        ("{matchExpressions: [{key: pod, operator: in, values: [a]}]}", "is not In, NotIn, Exists or DoesNotExist"),
        ("{matchExpressions: [{key: pod, operator: Equals, values: [a]}]}", "is not In, NotIn"),
        ("{matchExpressions: [{key: pod, operator: In, values: []}]}", "needs at least one value"),
        ("{matchExpressions: [{key: pod, operator: NotIn}]}", "needs at least one value"),
        ("{matchExpressions: [{key: pod, operator: Exists, values: [a]}]}", "takes no values"),
        ("{matchExpressions: [{key: pod, operator: DoesNotExist, values: [a]}]}", "takes no values"),
        ("{matchLabels: {'bad key': a}}", "matchLabels key"),
        ("{matchLabels: {pod: 'a b'}}", "value"),
        ("{matchLabels: {'Example.COM/x': a}}", "prefix"),
        ("{matchExpressions: [{key: '', operator: Exists}]}", "key"),
    ];
    for (yaml, needle) in errors {
        let sel: LabelSelector = serde_saphyr::from_str(yaml).unwrap();
        let e = selector::Selector::parse(&sel).unwrap_err().to_string();
        assert!(e.contains(needle), "{yaml}: {e}");
    }
    let sel: LabelSelector = serde_saphyr::from_str(
        "{matchLabels: {pod: a}, matchExpressions: [{key: ns, operator: In, values: [y, x]}, {key: t, operator: DoesNotExist}, {key: k8s.io/u, operator: Exists}]}",
    )
    .unwrap();
    assert_eq!(selector::Selector::parse(&sel).unwrap().to_string(), "pod=a,ns in (x,y),!t,k8s.io/u");
    assert_eq!(selector::Selector::everything().to_string(), "(all)");
}

// ---------------------------------------------------------------------------------------------
// Reading and validating policies

fn read(spec: &str) -> model::PolicyModel {
    let m = load(&np("x", "p", spec));
    model::read_policy("x/p", &m.network_policies["x/p"])
}

#[test]
fn policy_types_default_as_the_api_server_does() {
    let cases = [
        ("{podSelector: {}}", true, false),
        ("{podSelector: {}, ingress: [{}]}", true, false),
        ("{podSelector: {}, egress: [{}]}", true, true),
        ("{podSelector: {}, egress: []}", true, false),
        ("{podSelector: {}, policyTypes: [], egress: [{}]}", true, true),
        ("{podSelector: {}, policyTypes: [Egress]}", false, true),
        ("{podSelector: {}, policyTypes: [Egress], ingress: [{}]}", false, true),
        ("{podSelector: {}, policyTypes: [Ingress], egress: [{}]}", true, false),
        ("{podSelector: {}, policyTypes: [Ingress, Egress]}", true, true),
        ("{podSelector: {}, policyTypes: [Ingress, Ingress]}", true, false),
        // Invalid: fail closed in both directions.
        ("{podSelector: {}, policyTypes: [Ingres]}", true, true),
        ("{podSelector: {}, policyTypes: [Ingress, Egress, Ingress]}", true, true),
    ];
    for (spec, ingress, egress) in cases {
        let m = read(spec);
        assert_eq!((m.directions.ingress, m.directions.egress), (ingress, egress), "{spec}");
    }
    let m = read("{podSelector: {}, policyTypes: [Egress], ingress: [{}, {}]}");
    assert!(m.rules.as_ref().unwrap().ingress.is_empty());
    assert!(m.notes.iter().any(|n| n.contains("2 ingress rule(s) ignored")), "{:?}", m.notes);
    assert!(read("{podSelector: {}, egress: []}").notes.iter().any(|n| n.contains("egress: []")));
}

#[test]
fn malformed_policies_are_refused_as_the_api_server_would() {
    let cases = [
        ("{podSelector: {matchExpressions: [{key: a, operator: Bad}]}}", "spec.podSelector: matchExpressions[0]: operator \"Bad\""),
        ("{podSelector: {}, policyTypes: [ingress]}", "spec.policyTypes[0]: \"ingress\" is not Ingress or Egress"),
        ("{podSelector: {}, policyTypes: [Ingress, Egress, Egress]}", "at most 2 entries"),
        ("{podSelector: {}, ingress: [{from: [{}]}]}", "spec.ingress[0].from[0]: must specify a peer"),
        ("{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}]}]}", "may not specify both ipBlock and another peer"),
        ("{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8}, namespaceSelector: {}}]}]}", "may not specify both ipBlock"),
        ("{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0}}]}]}", "is not a CIDR"),
        ("{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/33}}]}]}", "is not a CIDR"),
        ("{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: ''}}]}]}", "ipBlock.cidr is required"),
        ("{podSelector: {}, egress: [{to: [{ipBlock: {cidr: 10.0.0.0/16, except: [10.1.0.0/24]}}]}]}", "spec.egress[0].to[0]: ipBlock.except[0] \"10.1.0.0/24\" must be a strict subset"),
        ("{podSelector: {}, egress: [{to: [{ipBlock: {cidr: 10.0.0.0/16, except: [10.0.0.0/16]}}]}]}", "strict subset"),
        ("{podSelector: {}, egress: [{to: [{ipBlock: {cidr: 10.0.0.0/16, except: [10.0.0.0/8]}}]}]}", "strict subset"),
        ("{podSelector: {}, egress: [{to: [{ipBlock: {cidr: 10.0.0.0/16, except: ['fd00::/64']}}]}]}", "strict subset"),
        ("{podSelector: {}, egress: [{to: [{ipBlock: {cidr: 10.0.0.0/16, except: [nonsense]}}]}]}", "is not a CIDR"),
        ("{podSelector: {}, egress: [{to: [{namespaceSelector: {matchExpressions: [{key: ns, operator: In}]}}]}]}", "namespaceSelector: matchExpressions[0]: operator In needs"),
        ("{podSelector: {}, ingress: [{ports: [{port: 81, endPort: 80}]}]}", "spec.ingress[0].ports[0]: endPort 80 must be greater than or equal to port 81"),
        ("{podSelector: {}, ingress: [{ports: [{port: http, endPort: 80}]}]}", "endPort may not be used with the named port"),
        ("{podSelector: {}, ingress: [{ports: [{endPort: 80}]}]}", "endPort needs a port"),
        ("{podSelector: {}, ingress: [{ports: [{port: 0}]}]}", "port 0 is not in 1-65535"),
        ("{podSelector: {}, ingress: [{ports: [{port: 65536}]}]}", "port 65536 is not in 1-65535"),
        ("{podSelector: {}, ingress: [{ports: [{port: 80, endPort: 70000}]}]}", "endPort 70000 is not in 1-65535"),
        ("{podSelector: {}, ingress: [{ports: [{port: 80, protocol: tcp}]}]}", "protocol \"tcp\" is not TCP, UDP or SCTP"),
        ("{podSelector: {}, ingress: [{ports: [{protocol: ICMP}]}]}", "protocol \"ICMP\""),
        ("{podSelector: {}, ingress: [{ports: [{port: '80'}]}]}", "is not a valid port name"),
        ("{podSelector: {}, ingress: [{ports: [{port: Serve-80}]}]}", "is not a valid port name"),
        ("{podSelector: {}, ingress: [{ports: [{port: serve-80-tcp-too-long}]}]}", "is not a valid port name"),
    ];
    for (spec, needle) in cases {
        let m = read(spec);
        assert!(m.rules.is_none(), "{spec} should be invalid");
        assert!(m.errors.iter().any(|e| e.contains(needle)), "{spec}: {:?}", m.errors);
    }
    // Valid edge cases.
    for spec in [
        "{podSelector: {}, ingress: [{ports: [{port: 80, endPort: 80}, {port: 65535}, {protocol: SCTP, port: serve-sctp}]}]}",
        "{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 0.0.0.0/0, except: [10.0.0.0/8, 10.1.2.3/32]}}]}]}",
        "{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: '2001:db8::/32', except: ['2001:db8:1::/48']}}]}]}",
        "{podSelector: {}, ingress: [{from: [{podSelector: {}, namespaceSelector: {}}]}]}",
        "{ingress: [{}]}",
    ] {
        let m = read(spec);
        assert!(m.errors.is_empty(), "{spec}: {:?}", m.errors);
    }
}

// ---------------------------------------------------------------------------------------------
// Fail closed

#[test]
fn a_malformed_policy_isolates_what_it_selects_and_allows_nothing() {
    // Meant to allow x/a from y on port 80, but the except is outside the cidr: x/a is isolated
    // for ingress with no rule of this policy.
    let bad = np(
        "x",
        "bad",
        &format!("{{podSelector: {POD_A}, ingress: [{{from: [{{namespaceSelector: {{matchLabels: {{ns: y}}}}}}, {{ipBlock: {{cidr: 10.0.0.0/16, except: [10.1.0.0/24]}}}}]}}]}}"),
    );
    let c = compile(&(lab9() + &bad));
    assert!(has_problem(&c, "NetworkPolicy x/bad is invalid (spec.ingress[0].from[1]: ipBlock.except[0]"), "{:?}", c.problems);
    assert!(has_problem(&c, "the 1 local pod(s) it selects are isolated for ingress and it allows nothing"), "{:?}", c.problems);
    assert_eq!(judge(&c, "y/a", "x/a", TCP, 80), Decision::DeniedIngress);
    assert_eq!(judge(&c, "y/a", "x/b", TCP, 80), Decision::NotIsolated);
    let pa = &c.tables.pods[&u32::from(lab_ip("x/a"))];
    assert!(pa.ingress_isolated && !pa.egress_isolated);
    assert!(pa.ingress.iter().all(|r| r.policy == RESIDENT_NODE_POLICY), "{:?}", pa.ingress);
    assert_eq!(c.views[0].status, "invalid");
    // Another valid policy selecting the same pod still adds its allows.
    let ok = np("x", "ok", &format!("{{podSelector: {POD_A}, ingress: [{{from: [{{namespaceSelector: {{matchLabels: {{ns: z}}}}}}]}}]}}"));
    let c = compile(&(lab9() + &bad + &ok));
    assert_eq!(judge(&c, "y/a", "x/a", TCP, 80), Decision::DeniedIngress);
    assert!(judge(&c, "z/a", "x/a", TCP, 80).allowed());
}

#[test]
fn a_malformed_pod_selector_isolates_the_whole_namespace() {
    let bad = np("x", "bad-sel", "{podSelector: {matchExpressions: [{key: pod, operator: Equals, values: [a]}]}, policyTypes: [Egress], egress: [{}]}");
    let c = compile(&(lab9() + &bad));
    assert!(has_problem(&c, "its podSelector is invalid, so every pod of namespace x (3 local) are isolated for egress"), "{:?}", c.problems);
    for p in ["x/a", "x/b", "x/c"] {
        assert_eq!(judge(&c, p, "y/a", TCP, 80), Decision::DeniedEgress, "{p}");
    }
    assert_eq!(judge(&c, "y/a", "x/a", TCP, 80), Decision::NotIsolated);
    assert_eq!(c.views[0].pod_selector, "invalid");
}

#[test]
fn a_bad_policy_type_isolates_both_directions() {
    let c = compile(&(lab9() + &np("x", "bad-type", &format!("{{podSelector: {POD_A}, policyTypes: [Ingress, Egres], ingress: [{{}}]}}"))));
    assert!(has_problem(&c, "isolated for ingress and egress and it allows nothing"), "{:?}", c.problems);
    assert_eq!(judge(&c, "y/a", "x/a", TCP, 80), Decision::DeniedIngress);
    assert_eq!(judge(&c, "x/a", "y/a", TCP, 80), Decision::DeniedEgress);
    assert_eq!(judge(&c, "x/b", "y/a", TCP, 80), Decision::NotIsolated);
}

// ---------------------------------------------------------------------------------------------
// Peers, blocks, named ports

#[test]
fn ipv6_blocks_match_nothing_and_never_everything() {
    let only_v6 = np("x", "v6", &format!("{{podSelector: {POD_A}, ingress: [{{from: [{{ipBlock: {{cidr: '::/0'}}}}]}}]}}"));
    let c = compile(&(lab9() + &only_v6));
    assert!(has_problem(&c, "NetworkPolicy x/v6: spec.ingress[0].from[0]: ipBlock ::/0 is IPv6"), "{:?}", c.problems);
    assert_eq!(judge(&c, "y/a", "x/a", TCP, 80), Decision::DeniedIngress);
    let pa = &c.tables.pods[&u32::from(lab_ip("x/a"))];
    assert!(pa.ingress.iter().all(|r| r.policy == RESIDENT_NODE_POLICY), "no rule from the IPv6-only peer list: {:?}", pa.ingress);
    // Next to an IPv4 peer, the IPv4 peer works.
    let mixed = np("x", "mixed", &format!("{{podSelector: {POD_A}, ingress: [{{from: [{{ipBlock: {{cidr: 'fd00::/8'}}}}, {{ipBlock: {{cidr: 10.244.0.20/32}}}}]}}]}}"));
    let c = compile(&(lab9() + &mixed));
    assert!(judge(&c, "y/a", "x/a", TCP, 80).allowed());
    assert_eq!(judge(&c, "y/b", "x/a", TCP, 80), Decision::DeniedIngress);
    assert_eq!(c.views[0].notes.len(), 1, "{:?}", c.views[0].notes);
}

#[test]
fn ip_blocks_match_pods_and_other_addresses() {
    let p = np(
        "x",
        "blocks",
        &format!("{{podSelector: {POD_A}, policyTypes: [Ingress, Egress], ingress: [{{from: [{{ipBlock: {{cidr: 192.0.2.0/24, except: [192.0.2.128/25]}}}}]}}], egress: [{{to: [{{ipBlock: {{cidr: 10.244.0.0/27}}}}]}}]}}"),
    );
    let c = compile(&(lab9() + &p));
    let xa = lab_ip("x/a");
    assert!(c.tables.judge(ip("192.0.2.1"), xa, TCP, 1).allowed());
    assert_eq!(c.tables.judge(ip("192.0.2.200"), xa, TCP, 1), Decision::DeniedIngress);
    assert_eq!(c.tables.judge(ip("198.51.100.1"), xa, UDP, 53), Decision::DeniedIngress);
    // .0-.31: x and y pods and z/a .30, z/b .31, not z/c .32.
    assert!(judge(&c, "x/a", "z/b", TCP, 80).allowed());
    assert_eq!(judge(&c, "x/a", "z/c", TCP, 80), Decision::DeniedEgress);
    assert_eq!(c.tables.judge(xa, ip("8.8.8.8"), UDP, 53), Decision::DeniedEgress);
    let peers = &c.views[0].egress[0].peers;
    assert_eq!(peers[0].peer, "ipBlock 10.244.0.0/27");
    assert_eq!(peers[0].pods.len(), 8, "{peers:?}");
}

#[test]
fn peer_selectors_reach_the_documented_pods() {
    let cases = [
        // podSelector alone: the policy's namespace only.
        ("[{podSelector: {matchLabels: {pod: b}}}]", vec!["x/b"]),
        ("[{podSelector: {}}]", vec!["x/a", "x/b", "x/c"]),
        // namespaceSelector alone: every pod of those namespaces.
        ("[{namespaceSelector: {matchLabels: {ns: z}}}]", vec!["z/a", "z/b", "z/c"]),
        ("[{namespaceSelector: {}}]", vec!["x/b", "x/c", "y/a", "y/b", "y/c", "z/a", "z/b", "z/c"]),
        // Both: AND.
        ("[{namespaceSelector: {matchLabels: {ns: z}}, podSelector: {matchLabels: {pod: c}}}]", vec!["z/c"]),
        ("[{namespaceSelector: {}, podSelector: {matchLabels: {pod: c}}}]", vec!["x/c", "y/c", "z/c"]),
        // Separate entries: OR.
        ("[{namespaceSelector: {matchLabels: {ns: z}}}, {podSelector: {matchLabels: {pod: c}}}]", vec!["x/c", "z/a", "z/b", "z/c"]),
        // Matching nothing.
        ("[{namespaceSelector: {matchLabels: {ns: nowhere}}}]", vec![]),
    ];
    for (from, want) in cases {
        let c = compile(&(lab9() + &np("x", "p", &format!("{{podSelector: {{matchLabels: {{pod: a}}}}, ingress: [{{from: {from}}}]}}"))));
        let allowed: Vec<String> =
            lab_pods().into_iter().filter(|p| p != "x/a" && judge(&c, p, "x/a", TCP, 80).allowed()).collect();
        let want: Vec<String> = want.into_iter().filter(|p| *p != "x/a").map(String::from).collect();
        assert_eq!(allowed, want, "from {from}");
    }
}

#[test]
fn named_ports_resolve_per_pod_and_never_to_everything() {
    // Pods with the same labels (one identity) but different numbers for `http`; one pod
    // without the name; the name on UDP elsewhere.
    let web = "{app: web}";
    let yaml = [
        namespace("x", "{}"),
        namespace("y", "{}"),
        pod("x", "client", "{app: client}", "10.244.0.5", "node-1", "[]"),
        pod("y", "w1", web, "10.244.0.11", "node-1", "[{name: http, containerPort: 8080}]"),
        pod("y", "w2", web, "10.244.1.12", "node-2", "[{name: http, containerPort: 9090}]"),
        pod("y", "w3", web, "10.244.1.13", "node-2", "[{containerPort: 8080}]"),
        pod("y", "w4", "{app: other}", "10.244.1.14", "node-2", "[{name: http, containerPort: 8080, protocol: UDP}]"),
        np("x", "client-http", "{podSelector: {matchLabels: {app: client}}, policyTypes: [Egress], egress: [{to: [{namespaceSelector: {}}], ports: [{port: http}]}]}"),
        np("y", "web-http", "{podSelector: {matchLabels: {app: web}}, ingress: [{ports: [{port: http}]}]}"),
    ]
    .concat();
    let c = compile(&yaml);
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    let t = &c.tables;
    let (client, w1, w2, w3, w4) = (ip("10.244.0.5"), ip("10.244.0.11"), ip("10.244.1.12"), ip("10.244.1.13"), ip("10.244.1.14"));
    assert_eq!(t.identity_of(w1), t.identity_of(w2), "one identity for equal labels");
    assert!(t.judge(client, w1, TCP, 8080).allowed());
    assert!(t.judge(client, w2, TCP, 9090).allowed());
    assert_eq!(t.judge(client, w1, TCP, 9090), Decision::DeniedEgress, "9090 is w2's http, not w1's");
    assert_eq!(t.judge(client, w2, TCP, 8080), Decision::DeniedEgress);
    assert_eq!(t.judge(client, w3, TCP, 8080), Decision::DeniedEgress, "w3 has no port named http");
    assert_eq!(t.judge(client, w4, TCP, 8080), Decision::DeniedEgress, "w4's http is UDP");
    assert_eq!(t.judge(client, w4, UDP, 8080), Decision::DeniedEgress, "the rule's protocol is TCP");
    assert_eq!(t.judge(client, ip("192.0.2.1"), TCP, 8080), Decision::DeniedEgress, "no pod: no named port");
    // Ingress on w1 (local): its own number only.
    assert!(t.judge(client, w1, TCP, 8080).allowed());
    assert_eq!(t.judge(w3, w1, TCP, 9090), Decision::DeniedIngress);
    // The views say where the name resolves.
    let v = c.views.iter().find(|v| v.policy == "x/client-http").unwrap();
    assert_eq!(v.egress[0].ports[0].resolved, ["y/w1 8080", "y/w2 9090"]);
    let v = c.views.iter().find(|v| v.policy == "y/web-http").unwrap();
    assert_eq!(v.ingress[0].ports[0].resolved, ["y/w1 8080"]);
    assert_eq!((v.selected_local_pods.len(), v.selected_remote_pods), (1, 2));
    // The egress rules: one per resolved number, with exactly the pods declaring it there.
    let rules = &t.pods[&u32::from(client)].egress;
    assert_eq!(rules.len(), 2, "{rules:?}");
    assert_eq!(rules[0].ports, [PortRange { proto: TCP, port: 8080, end_port: 8080 }]);
    assert_eq!(*rules[0].peers, [Peer::Addresses([u32::from(w1)].into_iter().collect())]);
    // A name no pod has: the rule allows nothing (ingress and egress).
    let none = [
        lab9(),
        np("x", "nothing-in", "{podSelector: {}, ingress: [{ports: [{port: no-such-port}]}]}"),
        np("y", "nothing-out", "{podSelector: {}, policyTypes: [Egress], egress: [{ports: [{port: no-such-port}]}]}"),
    ]
    .concat();
    let c = compile(&none);
    for probe in PROBES {
        assert_eq!(judge(&c, "z/a", "x/a", probe.proto, probe.port), Decision::DeniedIngress);
        assert_eq!(judge(&c, "y/a", "z/a", probe.proto, probe.port), Decision::DeniedEgress);
    }
    // Named and numbered ports in one egress rule add up.
    let c = compile(&(lab9() + &np("x", "mix", "{podSelector: {}, policyTypes: [Egress], egress: [{ports: [{port: 81}, {port: serve-80-udp, protocol: UDP}]}]}")));
    assert!(judge(&c, "x/a", "y/a", TCP, 81).allowed());
    assert!(judge(&c, "x/a", "y/a", UDP, 80).allowed());
    assert_eq!(judge(&c, "x/a", "y/a", TCP, 80), Decision::DeniedEgress);
    assert_eq!(judge(&c, "x/a", "y/a", UDP, 81), Decision::DeniedEgress);
}

#[test]
fn rules_restricted_to_ports_do_not_match_icmp_and_sctp_is_its_own_protocol() {
    let c = compile(&(lab9() + &np("x", "p", &format!("{{podSelector: {POD_A}, ingress: [{{ports: [{{port: 80}}, {{port: 80, protocol: SCTP}}]}}]}}"))));
    assert!(judge(&c, "y/a", "x/a", TCP, 80).allowed());
    assert!(judge(&c, "y/a", "x/a", SCTP, 80).allowed());
    assert_eq!(judge(&c, "y/a", "x/a", SCTP, 81), Decision::DeniedIngress);
    assert_eq!(judge(&c, "y/a", "x/a", 1, 0), Decision::DeniedIngress);
    let c = compile(&(lab9() + &np("x", "p", &format!("{{podSelector: {POD_A}, ingress: [{{from: [{{podSelector: {{}}}}]}}]}}"))));
    assert!(judge(&c, "x/b", "x/a", 1, 0).allowed(), "a rule without ports allows ICMP");
}

// ---------------------------------------------------------------------------------------------
// Namespaces and pods

#[test]
fn namespaces_carry_the_automatic_name_label() {
    let yaml = [
        namespace("x", "{}"),
        // A manifest trying to set the label to something else: the API server overrides it.
        namespace("y", "{kubernetes.io/metadata.name: x}"),
        // Namespace z has no object at all.
        pod("x", "a", "{pod: a}", "10.244.0.10", "", "[]"),
        pod("y", "a", "{pod: a}", "10.244.0.20", "", "[]"),
        pod("z", "a", "{pod: a}", "10.244.0.30", "", "[]"),
        np("x", "p", "{podSelector: {}, ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: z}}}, {namespaceSelector: {matchExpressions: [{key: kubernetes.io/metadata.name, operator: In, values: [x]}]}}]}]}"),
    ]
    .concat();
    let c = compile(&yaml);
    let xa = ip("10.244.0.10");
    assert!(c.tables.judge(ip("10.244.0.30"), xa, TCP, 80).allowed(), "z has the label without an object");
    assert_eq!(c.tables.judge(ip("10.244.0.20"), xa, TCP, 80), Decision::DeniedIngress, "y's label says y");
}

#[test]
fn only_pods_that_take_part_get_identities_and_entries() {
    let yaml = [
        lab9(),
        pod("x", "noip", "{pod: a}", "", "node-1", "[]"),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: hostnet, namespace: x, labels: {pod: a}}\n\
         spec: {nodeName: node-1, hostNetwork: true, containers: [{name: c, image: i}]}\nstatus: {podIP: 172.18.0.2}\n---\n"
            .to_string(),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: done, namespace: x, labels: {pod: a}}\n\
         spec: {nodeName: node-1, containers: [{name: c, image: i}]}\nstatus: {podIP: 10.244.0.99, phase: Succeeded}\n---\n"
            .to_string(),
        pod("x", "remote", "{pod: a}", "10.244.1.10", "node-2", "[]"),
        pod("x", "unbound", "{pod: a}", "10.244.0.50", "", "[]"),
        np("x", "deny", "{podSelector: {matchLabels: {pod: a}}, policyTypes: [Ingress, Egress]}"),
    ]
    .concat();
    let c = compile(&yaml);
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    let t = &c.tables;
    assert_eq!(t.identities.len(), 9 + 2, "lab pods, remote and unbound");
    assert!(t.identity_of(NODE_IP).is_none(), "hostNetwork pods have no identity");
    assert!(t.identity_of(ip("10.244.0.99")).is_none(), "finished pods take no part");
    assert_eq!(t.identity_of(ip("10.244.1.10")), t.identity_of(lab_ip("x/a")), "same namespace and labels");
    let isolated: Vec<Ipv4Addr> = {
        let mut v: Vec<Ipv4Addr> = t.pods.keys().map(|k| Ipv4Addr::from(*k)).collect();
        v.sort();
        v
    };
    assert_eq!(isolated, [lab_ip("x/a"), ip("10.244.0.50")], "local pods only (unbound counts as local)");
    // The remote pod is isolated on its own node: here only the local side is judged.
    assert_eq!(c.tables.judge(lab_ip("y/a"), ip("10.244.1.10"), TCP, 80), Decision::NotIsolated);
    assert_eq!(c.views[0].selected_local_pods, ["x/a 10.244.0.10", "x/unbound 10.244.0.50"]);
    assert_eq!(c.views[0].selected_remote_pods, 1);
}

#[test]
fn ambiguous_pod_addresses_get_no_identity() {
    let yaml = [
        lab9(),
        pod("z", "twin", "{pod: twin}", "10.244.0.10", "node-2", "[]"),
        np("y", "from-x-a", &format!("{{podSelector: {POD_A}, ingress: [{{from: [{{namespaceSelector: {{}}, podSelector: {POD_A}}}]}}]}}")),
        np("x", "deny", &format!("{{podSelector: {POD_A}}}")),
    ]
    .concat();
    let c = compile(&yaml);
    assert!(has_problem(&c, "pods x/a, z/twin all have IP 10.244.0.10"), "{:?}", c.problems);
    assert!(c.tables.identity_of(lab_ip("x/a")).is_none());
    assert_eq!(judge(&c, "x/a", "y/a", TCP, 80), Decision::DeniedIngress, "not matched by a pod selector");
    assert!(judge(&c, "z/a", "y/a", TCP, 80).allowed());
    // The local x/a is still isolated by the policy selecting it.
    assert_eq!(judge(&c, "y/b", "x/a", TCP, 80), Decision::DeniedIngress);
}

#[test]
fn the_resident_node_reaches_its_pods() {
    let c = compile(&(lab9() + &np("x", "deny-all", "{podSelector: {}, policyTypes: [Ingress, Egress]}")));
    let xa = lab_ip("x/a");
    assert_eq!(c.tables.judge(NODE_IP, xa, TCP, 8080), Decision::Allowed { policy: RESIDENT_NODE_POLICY, index: 0, ingress: true });
    assert_eq!(c.tables.judge(ip("172.18.0.3"), xa, TCP, 8080), Decision::DeniedIngress, "another node");
    assert_eq!(c.tables.judge(xa, NODE_IP, TCP, 10250), Decision::DeniedEgress, "egress to the node is policy's");
    assert_eq!(c.tables.policy_names[&RESIDENT_NODE_POLICY], RESIDENT_NODE_NAME);
    let c = compile(&(lab9() + &np("x", "deny-egress", "{podSelector: {}, policyTypes: [Egress]}")));
    assert!(!c.tables.policy_names.contains_key(&RESIDENT_NODE_POLICY), "no ingress isolation, no rule");
    // A pod claiming the node's address takes no part (it would give the node its identity).
    let c = compile(&[lab9(), pod("y", "impostor", "{pod: a}", "172.18.0.2", "node-2", "[]"), np("x", "from-pod-a", "{podSelector: {}, ingress: [{from: [{namespaceSelector: {}, podSelector: {matchLabels: {pod: a}}}], ports: [{port: 80}]}]}")].concat());
    assert!(has_problem(&c, "pod y/impostor has IP 172.18.0.2, the node's or the gateway's address"), "{:?}", c.problems);
    assert!(c.tables.identity_of(NODE_IP).is_none());
    assert!(c.tables.judge(NODE_IP, xa, TCP, 81).allowed(), "the node, by the resident-node rule");
    assert!(judge(&c, "y/a", "x/b", TCP, 80).allowed() && !judge(&c, "y/a", "x/b", TCP, 81).allowed());
}

// ---------------------------------------------------------------------------------------------
// Ids, epoch, views

#[test]
fn ids_and_epoch_follow_what_verdicts_depend_on() {
    let mut s = PolicyState::default();
    let p1 = np("x", "p1", "{podSelector: {}}");
    let p2 = np("y", "p2", &format!("{{podSelector: {POD_A}, ingress: [{{from: [{{namespaceSelector: {{matchLabels: {{team: blue}}}}}}]}}]}}"));
    let base = lab9() + &p1 + &p2;
    let c0 = compile_in(&mut s, &base);
    assert_eq!(c0.tables.epoch, 1);
    assert_eq!((s.policy_id("x/p1"), s.policy_id("y/p2")), (Some(1), Some(2)));
    assert_eq!(c0.tables.policy_names[&2], "y/p2");
    let ids0 = c0.tables.identities.clone();

    // Nothing relevant changes: same epoch, same ids.
    let svc = "apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: x}\nspec: {selector: {pod: a}, ports: [{port: 80}]}\n---\n";
    let c = compile_in(&mut s, &(base.clone() + svc));
    assert_eq!(c.tables.epoch, 1);
    assert_eq!(c.tables.identities, ids0);
    let c = compile_in(&mut s, &base);
    assert_eq!(c.tables.epoch, 1);

    // A namespace label that changes what p2 allows.
    let relabelled = base.replace("{name: z, labels: {ns: z}}", "{name: z, labels: {ns: z, team: blue}}");
    assert_ne!(relabelled, base);
    let c = compile_in(&mut s, &relabelled);
    assert_eq!(c.tables.epoch, 2);
    assert!(judge(&c, "z/a", "y/a", TCP, 80).allowed());
    assert_eq!(c.tables.identities, ids0, "pod identities do not depend on namespace labels");

    // A pod label: its identity changes, the others keep theirs.
    let c = compile_in(&mut s, &relabelled.replace("{name: b, namespace: z, labels: {pod: b}}", "{name: b, namespace: z, labels: {pod: b, v: '2'}}"));
    assert_eq!(c.tables.epoch, 3);
    let zb = u32::from(lab_ip("z/b"));
    assert_ne!(c.tables.identities[&zb], ids0[&zb]);
    assert!(c.tables.identities.iter().filter(|(k, _)| **k != zb).all(|(k, v)| ids0[k] == *v));

    // A pod IP.
    let c = compile_in(&mut s, &relabelled.replace("podIP: 10.244.0.32", "podIP: 10.244.0.42"));
    assert!(c.tables.epoch == 4 && c.tables.identity_of(ip("10.244.0.42")).is_some());

    // A policy removed and another added: ids stay for the kept one, the lowest free is reused.
    let p3 = np("z", "p3", "{podSelector: {}}");
    let c = compile_in(&mut s, &(lab9() + &p2 + &p3));
    assert_eq!(c.tables.epoch, 5);
    assert_eq!((s.policy_id("x/p1"), s.policy_id("y/p2"), s.policy_id("z/p3")), (None, Some(2), Some(1)));
    assert_eq!(c.tables.policy_names[&1], "z/p3");
    assert_eq!(s.epoch(), 5);
}

#[test]
fn views_show_selection_peers_and_ports() {
    let p = np(
        "x",
        "web",
        "{podSelector: {matchExpressions: [{key: pod, operator: In, values: [a, b]}]}, policyTypes: [Ingress, Egress], \
         ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}, podSelector: {matchLabels: {pod: c}}}, {ipBlock: {cidr: 10.244.0.30/31}}], \
         ports: [{port: serve-80-tcp}, {port: 81, endPort: 82, protocol: UDP}]}], egress: [{}]}",
    );
    let c = compile(&(lab9() + &p));
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    let v = &c.views[0];
    assert_eq!(v.policy, "x/web");
    assert_eq!(v.policy_id, 1);
    assert_eq!(v.pod_selector, "pod in (a,b)");
    assert_eq!(v.policy_types, ["Ingress", "Egress"]);
    assert_eq!(v.status, "ok");
    assert_eq!(v.selected_local_pods, ["x/a 10.244.0.10", "x/b 10.244.0.11"]);
    let r = &v.ingress[0];
    assert!(!r.all_peers && !r.all_ports);
    assert_eq!(r.peers[0].peer, "pods pod=c in namespaces ns=y");
    assert_eq!(r.peers[0].pods, ["y/c 10.244.0.22"]);
    assert_eq!(r.peers[1].peer, "ipBlock 10.244.0.30/31");
    assert_eq!(r.peers[1].pods, ["z/a 10.244.0.30", "z/b 10.244.0.31"]);
    assert_eq!(r.ports[0].port, "TCP/serve-80-tcp");
    assert_eq!(r.ports[0].resolved, ["x/a 80", "x/b 80"]);
    assert_eq!(r.ports[1].port, "UDP/81-82");
    assert!(v.egress[0].all_peers && v.egress[0].all_ports);
    let json = serde_json::to_value(&c.views).unwrap();
    assert_eq!(json[0]["ingress"][0]["peers"][1]["pods"][1], "z/b 10.244.0.31");
    // And the tables agree.
    assert!(judge(&c, "y/c", "x/b", TCP, 80).allowed());
    assert!(judge(&c, "z/b", "x/a", UDP, 82).allowed());
    assert_eq!(judge(&c, "y/b", "x/a", TCP, 80), Decision::DeniedIngress);
    assert_eq!(judge(&c, "z/a", "x/a", TCP, 81), Decision::DeniedIngress);
}

// ---------------------------------------------------------------------------------------------
// examples/policies

#[test]
fn example_policies_compile_cleanly_over_the_lab() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/policies");
    let lab = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/lab-9pods");
    let files = crate::manifests::manifest_files(&dir).unwrap();
    assert!(files.len() >= 5, "{files:?}");
    for f in files {
        let mut m = crate::manifests::load_dir(&lab).unwrap();
        // The lab allocates IPs; give the pods the ones the tests use.
        for (k, p) in &mut m.pods {
            std::sync::Arc::make_mut(p).status.get_or_insert_with(Default::default).pod_ip = Some(lab_ip(k).to_string());
        }
        let text = std::fs::read_to_string(&f).unwrap();
        add_documents(&mut m, &f, &text).unwrap();
        assert!(!m.network_policies.is_empty(), "{}", f.display());
        let (pods, _) = all_pods(&m);
        let n = node();
        let c = compile_policy(&PolicyInputs { manifests: &m, node: &n, all_pods: &pods }, &mut PolicyState::default());
        assert!(c.problems.is_empty(), "{}: {:?}", f.display(), c.problems);
        assert!(c.views.iter().all(|v| v.status == "ok" && !v.selected_local_pods.is_empty()), "{}: {:?}", f.display(), c.views);
        assert!(!c.tables.pods.is_empty(), "{}", f.display());
    }
}

// ---------------------------------------------------------------------------------------------
// At scale, against a reference evaluation
//
// The compiler groups pods into identities, shares rules and peer sets between pods and
// evaluates selectors once per identity or namespace. This checks its verdicts on a random
// sample of connections through a benchmark-sized cluster (perf/src/policy_bench.rs, with more
// variety) against a straightforward reading of the module contract: selectors applied to the
// labels of the pods and namespaces concerned, nothing precomputed.

struct Scale {
    namespaces: u32,
    pods: u32,
    local: u32,
    policies: u32,
}

fn scale_pod_ip(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 244, 0, 2)) + i)
}

/// Namespaces (the last one without a Namespace object; `env` on two thirds), pods (labels
/// app/tier/shard, some without `shard`; `http` at 8080-8082 or missing, `metrics`, sometimes
/// UDP `dns` at 53 or 54), a few odd pods, and policies of ten kinds mixed over the namespaces
/// (named ports both ways, ranges, blocks with excepts, AND/OR peers, NotIn/Exists/DoesNotExist,
/// deny-all, fail-closed ones, an IPv6 peer, default policyTypes).
fn scale_yaml(s: &Scale) -> String {
    const TIERS: [&str; 3] = ["web", "api", "db"];
    let mut y = String::new();
    for n in 0..s.namespaces - 1 {
        let env = ["env: prod, ", "env: dev, ", ""][(n % 3) as usize];
        y += &namespace(&format!("ns{n}"), &format!("{{{env}team: t{}}}", n % 10));
    }
    for i in 0..s.pods {
        let mut labels = format!("app: app{}, tier: {}", i % 50, TIERS[(i % 3) as usize]);
        if i % 97 != 0 {
            labels += &format!(", shard: s{}", i % 7);
        }
        let mut ports = Vec::new();
        if i % 13 != 0 {
            ports.push(format!("{{name: http, containerPort: {}}}", 8080 + i % 3));
        }
        ports.push("{name: metrics, containerPort: 9100}".to_string());
        if i % 5 == 0 {
            ports.push(format!("{{name: dns, containerPort: {}, protocol: UDP}}", 53 + (i / 5) % 2));
        }
        let node = match i {
            i if i < s.local && i % 29 == 7 => "",
            i if i < s.local => "node-1",
            _ => ["node-2", "node-3", "node-4"][(i % 3) as usize],
        };
        let ip = scale_pod_ip(i).to_string();
        y += &pod(&format!("ns{}", i % s.namespaces), &format!("p{i}"), &format!("{{{labels}}}"), &ip, node, &format!("[{}]", ports.join(", ")));
    }
    let l = "{app: app3, tier: db, shard: s3}";
    let http = "[{name: http, containerPort: 8080}]";
    // Two local pods with one address (neither gets an entry or an identity); a remote pod
    // sharing a local pod's address (the local one keeps its entry, loses its identity).
    y += &pod("ns0", "twin-local", l, &scale_pod_ip(3).to_string(), "node-1", http);
    y += &pod("ns1", "twin-remote", l, &scale_pod_ip(5).to_string(), "node-2", http);
    y += &pod("ns2", "unbound", l, "10.244.250.2", "", http);
    y += &pod(&format!("ns{}", s.namespaces - 1), "no-ns-object", l, "10.244.250.3", "node-1", http);
    y += &pod("ns0", "no-ip", l, "", "node-1", http);
    y += &pod("ns1", "on-node-ip", l, &NODE_IP.to_string(), "node-2", http);
    y += "apiVersion: v1\nkind: Pod\nmetadata: {name: hostnet, namespace: ns0, labels: {app: app3, tier: db}}\n\
          spec: {nodeName: node-1, hostNetwork: true, containers: [{name: c, image: i}]}\nstatus: {podIP: 172.18.0.9}\n---\n";
    y += "apiVersion: v1\nkind: Pod\nmetadata: {name: done, namespace: ns0, labels: {app: app3, tier: db}}\n\
          spec: {nodeName: node-1, containers: [{name: c, image: i}]}\nstatus: {podIP: 10.244.250.1, phase: Succeeded}\n---\n";

    for p in 0..s.policies {
        let ns = (p * 7 + p / 10) % s.namespaces;
        let (t, a, b, sh, k) = (TIERS[(p % 3) as usize], p % 50, (p * 3 + 1) % 50, p % 7, p % 10);
        let spec = match p % 10 {
            0 => format!("{{podSelector: {{matchLabels: {{tier: {t}}}}}, ingress: [{{from: [{{namespaceSelector: {{matchLabels: {{team: t{k}}}}}, podSelector: {{matchLabels: {{tier: web}}}}}}], ports: [{{port: http}}]}}]}}"),
            1 => format!("{{podSelector: {{matchExpressions: [{{key: app, operator: In, values: [app{a}, app{b}]}}]}}, ingress: [{{from: [{{podSelector: {{matchLabels: {{shard: s{sh}}}}}}}], ports: [{{protocol: TCP, port: 8080, endPort: 8082}}]}}]}}"),
            2 => "{podSelector: {matchLabels: {tier: db}}, policyTypes: [Ingress, Egress], ingress: [{from: [{podSelector: {matchLabels: {tier: api}}}]}], egress: [{to: [{ipBlock: {cidr: 10.244.0.0/16, except: [10.244.1.0/24]}}]}]}".to_string(),
            3 => format!("{{podSelector: {{matchExpressions: [{{key: shard, operator: NotIn, values: [s{sh}]}}]}}, ingress: [{{from: [{{namespaceSelector: {{matchExpressions: [{{key: env, operator: Exists}}]}}}}], ports: [{{port: metrics}}, {{port: 8081}}]}}]}}"),
            4 => format!("{{podSelector: {{matchLabels: {{app: app{a}}}}}, ingress: [{{}}]}}"),
            5 => "{podSelector: {matchLabels: {tier: api}}, policyTypes: [Egress], egress: [{to: [{namespaceSelector: {}, podSelector: {matchLabels: {tier: db}}}], ports: [{port: http}, {port: dns, protocol: UDP}]}, {to: [{ipBlock: {cidr: 10.244.0.0/22}}], ports: [{port: metrics}, {port: 9100, protocol: UDP}]}]}".to_string(),
            6 => format!("{{podSelector: {{matchLabels: {{shard: s{sh}}}}}, ingress: [{{from: [{{ipBlock: {{cidr: 10.244.0.0/20, except: [10.244.1.0/24, 10.244.2.128/25]}}}}, {{namespaceSelector: {{matchLabels: {{env: prod}}}}, podSelector: {{matchExpressions: [{{key: shard, operator: DoesNotExist}}]}}}}, {{ipBlock: {{cidr: 'fd00::/8'}}}}], ports: [{{protocol: UDP}}, {{protocol: SCTP, port: 9100}}]}}]}}"),
            7 => format!("{{podSelector: {{matchLabels: {{tier: web, shard: s{sh}}}}}, policyTypes: [Ingress, Egress]}}"),
            8 if p / 10 % 2 == 0 => format!("{{podSelector: {{matchLabels: {{app: app{a}}}}}, ingress: [{{from: [{{ipBlock: {{cidr: 10.0.0.0/16, except: [10.1.0.0/24]}}}}]}}]}}"),
            8 => "{podSelector: {matchExpressions: [{key: tier, operator: Equals, values: [api]}]}, policyTypes: [Egress], egress: [{}]}".to_string(),
            _ => "{podSelector: {matchLabels: {tier: web}}, egress: [{to: [{podSelector: {matchExpressions: [{key: tier, operator: NotIn, values: [db]}]}}]}, {ports: [{port: 53, protocol: UDP}]}], ingress: [{from: [{namespaceSelector: {matchLabels: {env: dev}}}], ports: [{port: http}, {port: 5432, protocol: SCTP}]}]}".to_string(),
        };
        y += &np(&format!("ns{ns}"), &format!("pol{p}"), &spec);
    }
    y
}

/// The module contract, read literally.
struct Reference<'a> {
    node: NodeInfo,
    /// Namespace -> labels, with the automatic name label.
    ns_labels: BTreeMap<String, selector::Labels>,
    /// Pods that take part, by address.
    by_ip: BTreeMap<Ipv4Addr, Vec<&'a crate::model::PodInfo>>,
    /// In `namespace/name` order, with their ids.
    policies: Vec<(PolicyId, model::PolicyModel)>,
}

impl<'a> Reference<'a> {
    fn new(m: &Manifests, pods: &'a [crate::model::PodInfo], state: &PolicyState) -> Self {
        let node = node();
        let mut ns_labels = BTreeMap::new();
        for (name, ns) in &m.namespaces {
            let mut l = ns.metadata.labels.clone().unwrap_or_default();
            l.insert(NAMESPACE_NAME_LABEL.to_string(), name.clone());
            ns_labels.insert(name.clone(), l);
        }
        let mut by_ip: BTreeMap<Ipv4Addr, Vec<&crate::model::PodInfo>> = BTreeMap::new();
        for p in pods {
            let Some(ip) = p.ip else { continue };
            let phase = m.pods[&p.key()].status.as_ref().and_then(|s| s.phase.clone());
            if p.host_network || ip == node.internal_ip || ip == crate::naming::GATEWAY_IP || matches!(phase.as_deref(), Some("Succeeded" | "Failed")) {
                continue;
            }
            ns_labels.entry(p.namespace.clone()).or_insert_with(|| [(NAMESPACE_NAME_LABEL.to_string(), p.namespace.clone())].into());
            by_ip.entry(ip).or_default().push(p);
        }
        let policies = m.network_policies.iter().map(|(k, np)| (state.policy_id(k).unwrap(), model::read_policy(k, np))).collect();
        Reference { node, ns_labels, by_ip, policies }
    }

    fn is_local(&self, p: &crate::model::PodInfo) -> bool {
        p.node_name.as_deref().is_none_or(|n| n == self.node.name)
    }

    /// The pod a peer selector can match at `ip`: the only pod taking part with that address.
    fn pod_at(&self, ip: Ipv4Addr) -> Option<&'a crate::model::PodInfo> {
        match self.by_ip.get(&ip).map(Vec::as_slice) {
            Some([p]) => Some(p),
            _ => None,
        }
    }

    /// The local pod that has an entry at `ip`: the only local pod taking part with it.
    fn local_at(&self, ip: Ipv4Addr) -> Option<&'a crate::model::PodInfo> {
        let local: Vec<_> = self.by_ip.get(&ip)?.iter().filter(|p| self.is_local(p)).collect();
        match local.as_slice() {
            [p] => Some(**p),
            _ => None,
        }
    }

    fn selects(m: &model::PolicyModel, p: &crate::model::PodInfo) -> bool {
        p.namespace == m.namespace && m.pod_selector.as_ref().is_none_or(|s| s.matches(&p.labels))
    }

    fn peer_matches(&self, m: &model::PolicyModel, peers: &[model::PeerSpec], ip: Ipv4Addr) -> bool {
        peers.is_empty()
            || peers.iter().any(|peer| match peer {
                model::PeerSpec::Pods { pods, namespaces } => self.pod_at(ip).is_some_and(|q| {
                    let ns_ok = match namespaces {
                        None => q.namespace == m.namespace,
                        Some(sel) => sel.matches(&self.ns_labels[&q.namespace]),
                    };
                    ns_ok && pods.as_ref().is_none_or(|s| s.matches(&q.labels))
                }),
                model::PeerSpec::IpBlock { cidr, except } => model::block_contains(cidr, except, ip),
                model::PeerSpec::Ipv6Block { .. } => false,
            })
    }

    /// Whether one of `ports` allows `proto`/`port` to `dst_pod` (named ports are its own).
    fn port_matches(ports: &[model::PortSpec], dst_pod: Option<&crate::model::PodInfo>, proto: u8, port: u16) -> bool {
        let num = |p: crate::model::L4Proto| match p {
            crate::model::L4Proto::Tcp => TCP,
            crate::model::L4Proto::Udp => UDP,
            crate::model::L4Proto::Sctp => SCTP,
        };
        ports.is_empty()
            || ports.iter().any(|p| {
                num(p.proto) == proto
                    && match &p.port {
                        model::PortSel::All => true,
                        model::PortSel::Range(a, b) => (*a..=*b).contains(&port),
                        model::PortSel::Named(n) => dst_pod.is_some_and(|q| {
                            q.ports.iter().any(|c| c.name.as_deref() == Some(n.as_str()) && c.protocol == p.proto && c.port == port)
                        }),
                    }
            })
    }

    fn judge(&self, src: Ipv4Addr, dst: Ipv4Addr, proto: u8, port: u16) -> Decision {
        let mut allowed_by = None;
        if let Some(sp) = self.local_at(src) {
            let selecting: Vec<&(PolicyId, model::PolicyModel)> =
                self.policies.iter().filter(|(_, m)| m.directions.egress && Self::selects(m, sp)).collect();
            if !selecting.is_empty() {
                let hit = selecting.iter().find_map(|(id, m)| {
                    let rules = m.rules.as_ref().map_or(&[][..], |r| &r.egress);
                    rules.iter().position(|r| {
                        self.peer_matches(m, &r.peers, dst) && Self::port_matches(&r.ports, self.pod_at(dst), proto, port)
                    })
                    .map(|i| (*id, i as u16))
                });
                match hit {
                    Some((id, i)) => allowed_by = Some((id, i, false)),
                    None => return Decision::DeniedEgress,
                }
            }
        }
        if let Some(dp) = self.local_at(dst) {
            let selecting: Vec<&(PolicyId, model::PolicyModel)> =
                self.policies.iter().filter(|(_, m)| m.directions.ingress && Self::selects(m, dp)).collect();
            if !selecting.is_empty() {
                let hit = selecting
                    .iter()
                    .find_map(|(id, m)| {
                        let rules = m.rules.as_ref().map_or(&[][..], |r| &r.ingress);
                        rules.iter().position(|r| {
                            self.peer_matches(m, &r.peers, src) && Self::port_matches(&r.ports, Some(dp), proto, port)
                        })
                        .map(|i| (*id, i as u16))
                    })
                    .or((src == self.node.internal_ip).then_some((RESIDENT_NODE_POLICY, 0)));
                match hit {
                    Some((id, i)) => allowed_by = Some((id, i, true)),
                    None => return Decision::DeniedIngress,
                }
            }
        }
        match allowed_by {
            Some((policy, index, ingress)) => Decision::Allowed { policy, index, ingress },
            None => Decision::NotIsolated,
        }
    }
}

/// Compiles `yaml` with `state` and checks `samples` random connections against [`Reference`];
/// returns how many of each kind of decision the sample had.
fn check_against_reference(yaml: &str, state: &mut PolicyState, samples: u32, seed: u64) -> BTreeMap<&'static str, u32> {
    let m = load(yaml);
    let (pods, _) = all_pods(&m);
    let n = node();
    let c = compile_policy(&PolicyInputs { manifests: &m, node: &n, all_pods: &pods }, state);
    let r = Reference::new(&m, &pods, state);
    let addrs: Vec<Ipv4Addr> = pods.iter().filter_map(|p| p.ip).collect();
    // The node, addresses of no pod (in and out of blocks and excepts), the odd pods'.
    let special: Vec<Ipv4Addr> = [NODE_IP, ip("172.18.0.3"), ip("172.18.0.9"), ip("10.244.1.5"), ip("10.244.2.200"), ip("10.244.255.254")]
        .into_iter()
        .chain([ip("192.0.2.1"), ip("10.245.0.1"), scale_pod_ip(3), scale_pod_ip(5), ip("10.244.250.1"), ip("10.244.250.2"), ip("10.244.250.3")])
        .collect();
    let local: Vec<Ipv4Addr> = pods.iter().filter(|p| r.is_local(p)).filter_map(|p| p.ip).collect();
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut next = move |n: usize| rng.usize(..n);
    const PORTS: [u16; 10] = [53, 54, 80, 8080, 8081, 8082, 8083, 9100, 5432, 1];
    let mut kinds = BTreeMap::new();
    let mut wrong = Vec::new();
    for _ in 0..samples {
        // Mostly from local pods (only they have egress entries), to anything.
        let src = match next(20) {
            0 => special[next(special.len())],
            1..=4 => addrs[next(addrs.len())],
            _ => local[next(local.len())],
        };
        let dst = match next(20) {
            0 => special[next(special.len())],
            1..=6 => local[next(local.len())],
            _ => addrs[next(addrs.len())],
        };
        let (proto, port) = match next(10) {
            0..=4 => (TCP, PORTS[next(PORTS.len())]),
            5..=7 => (UDP, PORTS[next(PORTS.len())]),
            8 => (SCTP, PORTS[next(PORTS.len())]),
            _ => (1, 0),
        };
        let want = r.judge(src, dst, proto, port);
        let got = c.tables.judge(src, dst, proto, port);
        if got != want && wrong.len() < 10 {
            wrong.push(format!("{src} -> {dst} proto {proto} port {port}: compiled {got:?}, reference {want:?}"));
        }
        let kind = match want {
            Decision::NotIsolated => "not isolated",
            Decision::Allowed { policy: RESIDENT_NODE_POLICY, .. } => "resident node",
            Decision::Allowed { .. } => "allowed by a rule",
            Decision::DeniedEgress => "denied egress",
            Decision::DeniedIngress => "denied ingress",
        };
        *kinds.entry(kind).or_default() += 1;
    }
    assert!(wrong.is_empty(), "verdicts differ from the reference:\n{}", wrong.join("\n"));
    kinds
}

#[test]
fn verdicts_at_scale_agree_with_a_reference_evaluation() {
    // The benchmark's size in release builds; a fifth of it in debug builds.
    let s = if cfg!(debug_assertions) {
        Scale { namespaces: 20, pods: 2_000, local: 200, policies: 200 }
    } else {
        Scale { namespaces: 100, pods: 10_000, local: 1_000, policies: 1_000 }
    };
    let samples = if cfg!(debug_assertions) { 20_000 } else { 100_000 };
    let yaml = scale_yaml(&s);
    let mut state = PolicyState::default();
    let kinds = check_against_reference(&yaml, &mut state, samples, 0x9e37_79b9_7f4a_7c15);
    for k in ["not isolated", "allowed by a rule", "denied egress", "denied ingress", "resident node"] {
        assert!(kinds.get(k).copied().unwrap_or(0) >= samples / 1000, "too few {k:?} in the sample: {kinds:?}");
    }
    // Recompiled with the same state after pods change labels and a namespace its labels
    // (identities kept, some new, some gone): still the reference's verdicts.
    let epoch = state.epoch();
    let changed = yaml
        .replace("app: app7, tier: web", "app: app7, tier: api")
        .replace("shard: s4}", "shard: s4, extra: x}")
        .replace("{name: ns3, labels: {env: prod, ", "{name: ns3, labels: {");
    assert_ne!(changed, yaml);
    check_against_reference(&changed, &mut state, samples / 2, 0x2545_f491_4f6c_dd1d);
    assert_ne!(state.epoch(), epoch);
}

// --- compile_policy_unless_unchanged: skipping a compile is exactly keeping its result ---

fn same_compile(a: &CompiledPolicy, b: &CompiledPolicy, what: &str) {
    assert_eq!(a.tables.epoch, b.tables.epoch, "{what}: epoch");
    assert_eq!(a.tables.identities, b.tables.identities, "{what}: identities");
    assert_eq!(a.tables.pods, b.tables.pods, "{what}: pod entries");
    assert_eq!(a.tables.policy_names, b.tables.policy_names, "{what}: policy names");
    assert_eq!(a.problems, b.problems, "{what}: problems");
    assert_eq!(a.views, b.views, "{what}: views");
}

/// Random edits of namespaces, pods (labels, address, phase, node, ports), policies and of
/// nothing policy-relevant (a Service); each view compiled by a fresh-state-free compile and by
/// the skipping one (fed the pod cache's generation, and now and then the view's changes).
#[test]
fn skipping_unchanged_inputs_gives_what_a_compile_gives_over_random_edits() {
    use crate::manifests::Changes;
    use crate::pods::PodCache;
    let policies = [
        "{podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}]}]}",
        "{podSelector: {}, policyTypes: [Ingress, Egress]}",
        "{podSelector: {}, ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}], ports: [{port: serve-80-tcp}]}]}",
        "{podSelector: {matchLabels: {pod: c}}, egress: [{to: [{ipBlock: {cidr: 10.244.0.0/24, except: [10.244.0.20/32]}}]}]}",
    ];
    let mut rng = fastrand::Rng::with_seed(0x9e37_79b9_7f4a_7c15);
    let mut next = move |n: u64| rng.u64(..n);
    // Per object, its knob(s); None: absent.
    let mut ns_labels = [Some(0u64), Some(1), None];
    let mut pods: [[Option<[u64; 5]>; 3]; 3] = [[Some([0, 0, 0, 0, 0]); 3]; 3];
    let mut pols: [Option<u64>; 4] = [Some(0), None, Some(2), None];
    let mut svc_port = 80;
    let (mut cache, mut skipping, mut plain) = (PodCache::default(), PolicyState::default(), PolicyState::default());
    let mut previous: Option<Manifests> = None;
    let mut last: Option<CompiledPolicy> = None;
    let (mut skipped, mut compiled) = (0, 0);
    let n = node();
    for step in 0..400 {
        match next(5) {
            0 => ns_labels[next(3) as usize] = if next(5) == 0 { None } else { Some(next(3)) },
            1 | 2 => {
                let p = &mut pods[next(3) as usize][next(3) as usize];
                match p {
                    Some(k) if next(8) > 0 => k[next(5) as usize] = next(3),
                    _ => *p = if p.is_some() { None } else { Some([0; 5]) },
                }
            }
            3 => pols[next(4) as usize] = if next(4) == 0 { None } else { Some(next(4)) },
            _ => svc_port += 1,
        }
        let mut y = String::new();
        for (i, l) in ns_labels.iter().enumerate() {
            if let Some(l) = l {
                y += &namespace(NAMESPACES[i], ["{ns: x}", "{ns: y}", "{}"][*l as usize]);
            }
        }
        for (i, row) in pods.iter().enumerate() {
            for (j, p) in row.iter().enumerate() {
                let Some(k) = p else { continue };
                let labels = [format!("{{pod: {}}}", NAMES[j]), "{pod: a}".into(), "{}".into()][k[0] as usize].clone();
                let ip = [format!("10.244.0.{}", 10 * i + j + 10), "10.244.0.99".into(), String::new()][k[1] as usize].clone();
                let node = ["", "node-1", "node-2"][k[3] as usize];
                let ports = [LAB_PORTS, "[{name: serve-80-tcp, containerPort: 8080}]", "[]"][k[4] as usize];
                let mut doc = pod(NAMESPACES[i], NAMES[j], &labels, &ip, node, ports);
                if k[2] > 0 {
                    let phase = ["", "Running", "Succeeded"][k[2] as usize];
                    doc = if ip.is_empty() {
                        doc.replace("status: {}", &format!("status: {{phase: {phase}}}"))
                    } else {
                        doc.replace("status: {", &format!("status: {{phase: {phase}, "))
                    };
                }
                y += &doc;
            }
        }
        for (i, p) in pols.iter().enumerate() {
            if let Some(p) = p {
                y += &np(NAMESPACES[i % 3], &format!("p{i}"), policies[*p as usize]);
            }
        }
        y += &format!("apiVersion: v1\nkind: Service\nmetadata: {{name: s, namespace: x}}\nspec: {{ports: [{{port: {svc_port}}}]}}\n---\n");
        let mut m = load(&y);
        m.digest = format!("view {step}");
        if let Some(p) = previous.as_ref().filter(|_| next(10) > 0) {
            m.changes = Some(Changes::between(p, &m));
        }
        let what = format!("step {step}");
        cache.update(&m);
        let (all, _) = all_pods(&m);
        assert_eq!(cache.all(), &all[..], "{what}: pods");
        let want = compile_policy(&PolicyInputs { manifests: &m, node: &n, all_pods: &all }, &mut plain);
        match compile_policy_unless_unchanged(&PolicyInputs { manifests: &m, node: &n, all_pods: cache.all() }, cache.generation(), &mut skipping) {
            Some(c) => {
                compiled += 1;
                last = Some(c);
            }
            None => skipped += 1,
        }
        same_compile(last.as_ref().expect("the first view compiles"), &want, &what);
        assert_eq!(skipping.epoch(), plain.epoch(), "{what}: epoch");
        previous = Some(m);
    }
    assert!(skipped > 60 && compiled > 200, "skipped {skipped}, compiled {compiled}");
}
