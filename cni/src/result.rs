//! The results of a plugin (CNI 1.1.0, section 5): the ADD success result (also what an IPAM
//! plugin returns, abbreviated) and the VERSION result.
//!
//! Contract: [`AddResult`] reads every result of versions 0.4.0 to 1.1.0 (unknown fields are
//! ignored, absent optional ones stay `None`) and [`AddResult::to_version`] writes it in the
//! shape of the version the configuration asked for: 0.4.0 gives each IP its `version`
//! (`"4"`/`"6"`), 1.0.0 drops it; interface `mtu` and the route fields `mtu`, `advmss`,
//! `priority`, `table`, `scope` appear from 1.1.0 on. Empty lists and empty `dns` are omitted.
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// The versions of the specification this plugin speaks, oldest first.
pub const SUPPORTED_VERSIONS: [&str; 3] = ["0.4.0", "1.0.0", "1.1.0"];
/// The version this plugin is written to.
pub const CURRENT_VERSION: &str = "1.1.0";

/// `(major, minor, patch)` of a version string; None when it is not `N.N.N`.
pub fn parse_version(v: &str) -> Option<(u32, u32, u32)> {
    let mut it = v.split('.').map(|p| p.parse::<u32>().ok());
    let r = (it.next()??, it.next()??, it.next()??);
    it.next().is_none().then_some(r)
}

/// Whether `v` is at least `min` (both `N.N.N`; false when `v` is not).
pub fn at_least(v: &str, min: &str) -> bool {
    matches!((parse_version(v), parse_version(min)), (Some(a), Some(b)) if a >= b)
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The network namespace's path for an interface in the container; absent on the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_path: Option<String>,
    #[serde(default, rename = "pciID", skip_serializing_if = "Option::is_none")]
    pub pci_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// Address and prefix, e.g. `10.1.0.5/16`.
    pub address: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces` (absent in an IPAM plugin's result).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advmss: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    /// Global 0, link 253, host 254.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<u8>,
}

impl Route {
    pub fn via(dst: IpNet, gw: Option<IpAddr>) -> Self {
        Self { dst, gw, mtu: None, advmss: None, priority: None, table: None, scope: None }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty() && self.domain.is_empty() && self.search.is_empty() && self.options.is_empty()
    }
}

/// The ADD success result (and, without interfaces, an IPAM plugin's).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AddResult {
    #[serde(default)]
    pub cni_version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    #[serde(default, skip_serializing_if = "Dns::is_empty")]
    pub dns: Dns,
}

impl AddResult {
    /// The result as JSON in the shape of version `v` (see the module contract).
    pub fn to_version(&self, v: &str) -> serde_json::Value {
        let mut r = self.clone();
        r.cni_version = v.to_string();
        let v11 = at_least(v, "1.1.0");
        if !v11 {
            for i in &mut r.interfaces {
                i.mtu = None;
                i.socket_path = None;
                i.pci_id = None;
            }
            for rt in &mut r.routes {
                *rt = Route::via(rt.dst, rt.gw);
            }
        }
        let mut json = serde_json::to_value(&r).expect("results serialize");
        if !at_least(v, "1.0.0") {
            if let Some(ips) = json.get_mut("ips").and_then(serde_json::Value::as_array_mut) {
                for (ip, cfg) in ips.iter_mut().zip(&r.ips) {
                    let family = if cfg.address.addr().is_ipv4() { "4" } else { "6" };
                    ip["version"] = serde_json::Value::from(family);
                }
            }
        }
        json
    }
}

/// The VERSION result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionResult {
    pub cni_version: String,
    pub supported_versions: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// The bridge plugin's result in the specification's ADD example (section "Add example").
    const SPEC_ADD_RESULT: &str = r#"{
        "ips": [ { "address": "10.1.0.5/16", "gateway": "10.1.0.1", "interface": 2 } ],
        "routes": [ { "dst": "0.0.0.0/0" } ],
        "interfaces": [
            { "name": "cni0", "mac": "00:11:22:33:44:55" },
            { "name": "veth3243", "mac": "55:44:33:22:11:11" },
            { "name": "eth0", "mac": "99:88:77:66:55:44", "sandbox": "/var/run/netns/blue" }
        ],
        "dns": { "nameservers": [ "10.1.0.1" ] }
    }"#;

    /// host-local's result in the same example: no interfaces, no `interface` index.
    const SPEC_IPAM_RESULT: &str = r#"{
        "ips": [ { "address": "10.1.0.5/16", "gateway": "10.1.0.1" } ],
        "routes": [ { "dst": "0.0.0.0/0" } ],
        "dns": { "nameservers": [ "10.1.0.1" ] }
    }"#;

    #[test]
    fn the_specifications_add_result_reads_and_writes_back_the_same() {
        let r: AddResult = serde_json::from_str(SPEC_ADD_RESULT).unwrap();
        assert_eq!(r.interfaces.len(), 3);
        assert_eq!(r.interfaces[2].sandbox.as_deref(), Some("/var/run/netns/blue"));
        assert_eq!(r.ips[0].interface, Some(2));
        assert_eq!(r.ips[0].address, "10.1.0.5/16".parse::<IpNet>().unwrap());
        assert_eq!(r.dns.nameservers, ["10.1.0.1"]);
        let mut expected: Value = serde_json::from_str(SPEC_ADD_RESULT).unwrap();
        expected["cniVersion"] = json!("1.1.0");
        assert_eq!(r.to_version("1.1.0"), expected);
    }

    #[test]
    fn the_specifications_ipam_result_reads() {
        let r: AddResult = serde_json::from_str(SPEC_IPAM_RESULT).unwrap();
        assert!(r.interfaces.is_empty());
        assert_eq!(r.ips[0].interface, None);
        assert_eq!(r.ips[0].gateway, Some("10.1.0.1".parse().unwrap()));
        assert_eq!(r.routes, [Route::via("0.0.0.0/0".parse().unwrap(), None)]);
    }

    #[test]
    fn older_versions_get_their_own_shape() {
        let mut r: AddResult = serde_json::from_str(SPEC_ADD_RESULT).unwrap();
        r.interfaces[2].mtu = Some(1450);
        r.routes[0].scope = Some(0);
        r.dns = Dns::default();
        let v11 = r.to_version("1.1.0");
        assert_eq!(v11["interfaces"][2]["mtu"], json!(1450));
        assert_eq!(v11["routes"][0]["scope"], json!(0));
        assert!(v11.get("dns").is_none(), "empty dns is omitted");
        let v10 = r.to_version("1.0.0");
        assert_eq!(v10["cniVersion"], json!("1.0.0"));
        assert!(v10["interfaces"][2].get("mtu").is_none() && v10["routes"][0].get("scope").is_none());
        assert!(v10["ips"][0].get("version").is_none());
        let v04 = r.to_version("0.4.0");
        assert_eq!(v04["ips"][0]["version"], json!("4"));
        // A 0.4.0 result (with `version`) reads back.
        let back: AddResult = serde_json::from_value(v04).unwrap();
        assert_eq!(back.ips, r.ips);
    }

    #[test]
    fn versions_compare_as_numbers() {
        assert!(at_least("1.10.0", "1.1.0"));
        assert!(at_least("1.1.0", "1.1.0") && !at_least("1.0.0", "1.1.0"));
        assert!(!at_least("1.1", "0.4.0"), "not N.N.N");
        assert_eq!(parse_version("0.4.0"), Some((0, 4, 0)));
    }

    #[test]
    fn the_version_result_is_the_specifications_shape() {
        let v = VersionResult { cni_version: "1.1.0".into(), supported_versions: SUPPORTED_VERSIONS.iter().map(ToString::to_string).collect() };
        assert_eq!(serde_json::to_value(&v).unwrap(), json!({"cniVersion": "1.1.0", "supportedVersions": ["0.4.0", "1.0.0", "1.1.0"]}));
    }
}
