//! What kube-proxy's service health server answers for one Service
//! (pkg/proxy/healthcheck/service_health.go), and which servers to open and close.
//!
//! Contract:
//! - [`answer`]: 200 when the node has at least one ready local endpoint of the Service and the
//!   proxy is healthy ([`super::ProxyHealth::is_healthy`]), else 503; headers `Content-Type:
//!   application/json`, `X-Content-Type-Options: nosniff` and `X-Load-Balancing-Endpoint-Weight:
//!   N`; the body byte for byte kube-proxy's (tab-indented, no final newline), whatever the
//!   request's method and path.
//! - [`plan`]: from the servers open (key and port) and the wanted ones, which to close (gone,
//!   or on another port) and which to open, in key order, as kube-proxy's `SyncServices`.
use std::collections::BTreeMap;

use super::proxy::Answer;

/// The answer for Service `namespace/name` with `local_endpoints` ready local endpoints.
pub fn answer(namespace: &str, name: &str, local_endpoints: usize, proxy_healthy: bool) -> Answer {
    let q = |s: &str| serde_json::to_string(s).expect("a string serializes");
    let body = format!(
        "{{\n\t\"service\": {{\n\t\t\"namespace\": {},\n\t\t\"name\": {}\n\t}},\n\t\"localEndpoints\": {local_endpoints},\n\t\"serviceProxyHealthy\": {proxy_healthy}\n}}",
        q(namespace),
        q(name)
    );
    let mut a = Answer::json(if local_endpoints != 0 && proxy_healthy { 200 } else { 503 }, body);
    a.headers.push(("X-Load-Balancing-Endpoint-Weight", local_endpoints.to_string()));
    a
}

/// What to do to go from the servers `open` to the `wanted` ones (both: key → port).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub close: Vec<String>,
    pub open: Vec<(String, u16)>,
}

pub fn plan(open: &BTreeMap<String, u16>, wanted: &BTreeMap<String, u16>) -> Plan {
    let close: Vec<String> = open.iter().filter(|(k, p)| wanted.get(*k) != Some(*p)).map(|(k, _)| k.clone()).collect();
    let open = wanted.iter().filter(|(k, p)| open.get(*k) != Some(*p)).map(|(k, p)| (k.clone(), *p)).collect();
    Plan { close, open }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_is_kube_proxys() {
        let a = answer("x", "lb", 2, true);
        assert_eq!(a.status, 200);
        assert_eq!(
            a.body,
            "{\n\t\"service\": {\n\t\t\"namespace\": \"x\",\n\t\t\"name\": \"lb\"\n\t},\n\t\"localEndpoints\": 2,\n\t\"serviceProxyHealthy\": true\n}"
        );
        assert_eq!(
            a.headers,
            vec![
                ("Content-Type", "application/json".to_string()),
                ("X-Content-Type-Options", "nosniff".to_string()),
                ("X-Load-Balancing-Endpoint-Weight", "2".to_string())
            ]
        );
        let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
        assert_eq!(v["service"]["name"], "lb");
        // No local endpoint, or an unhealthy proxy: 503, the body says which.
        let a = answer("x", "lb", 0, true);
        assert_eq!(a.status, 503);
        assert!(a.body.contains("\"localEndpoints\": 0,") && a.headers[2].1 == "0", "{a:?}");
        let a = answer("x", "lb", 3, false);
        assert_eq!(a.status, 503);
        assert!(a.body.ends_with("\"serviceProxyHealthy\": false\n}"), "{}", a.body);
    }

    #[test]
    fn servers_open_and_close_as_services_come_go_and_move() {
        let m = |v: &[(&str, u16)]| v.iter().map(|(k, p)| (k.to_string(), *p)).collect::<BTreeMap<_, _>>();
        let p = plan(&m(&[("x/a", 30001), ("x/b", 30002), ("x/c", 30003)]), &m(&[("x/a", 30001), ("x/b", 30009), ("x/d", 30004)]));
        assert_eq!(p.close, vec!["x/b".to_string(), "x/c".to_string()]);
        assert_eq!(p.open, vec![("x/b".to_string(), 30009), ("x/d".to_string(), 30004)]);
        assert_eq!(plan(&m(&[("x/a", 1)]), &m(&[("x/a", 1)])), Plan::default());
    }
}
