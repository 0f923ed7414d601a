//! The plugin's configuration as the runtime passes it on standard in (CNI 1.1.0, section 3
//! "Deriving request configuration"), with podswitch's own fields.
//!
//! ```json
//! { "cniVersion": "1.1.0", "name": "podswitch", "type": "podswitch-cni",
//!   "mtu": 1450,
//!   "ipam": { "type": "host-local", "ranges": [[{ "subnet": "10.244.1.0/24" }]] },
//!   "controlSocket": "/run/podswitch/podswitch.sock",
//!   "switchWaitSeconds": 10, "waitForSwitch": true }
//! ```
//!
//! Contract:
//! - `cniVersion` must be one of [`SUPPORTED_VERSIONS`] (else code 1), `name` must be set
//!   (code 7); unknown fields are kept and passed on (the delegated IPAM plugin gets the whole
//!   configuration, as the specification says).
//! - `ipam` names the IPAM plugin (`ipam.type`). Without `ipam`, `podCIDR` (the node's pod
//!   CIDR) makes the default: `host-local` with that one range ([`NetConf::ipam_config`]); a
//!   `host-local` section without a range gets that range too. Without `podCIDR` the switch
//!   gives it ([`crate::node_defaults`]); without either the configuration is invalid (code
//!   7) for ADD, DEL, CHECK and GC.
//! - `runtimeConfig` (a runtime's capability arguments, e.g. `ips` for the address it wants)
//!   stays in the configuration the IPAM plugin gets: host-local then allocates exactly those.
//! - `mtu` is the pod interface's MTU and its host peer's; without it, the switch's pod MTU
//!   (its uplink's, less the overlay's 50 bytes in vxlan mode; [`crate::node_defaults`]), else
//!   [`DEFAULT_MTU`].
//! - `controlSocket` (default `naming::DEFAULT_CONTROL_SOCKET`) is where the switch answers;
//!   `waitForSwitch` (default true) makes ADD wait up to `switchWaitSeconds` (default
//!   [`DEFAULT_SWITCH_WAIT`]) for the switch to attach the pod's port.
//! - `prevResult` is parsed as an [`AddResult`] of any supported version.
use std::path::PathBuf;
use std::time::Duration;

use ipnet::Ipv4Net;
use podswitch_control::naming;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{code, CniError};
use crate::result::{AddResult, Dns, SUPPORTED_VERSIONS};

/// The MTU of the pod's interface unless configured.
pub const DEFAULT_MTU: u32 = 1500;
/// How long ADD waits for the switch to attach the pod's port unless configured.
pub const DEFAULT_SWITCH_WAIT: Duration = Duration::from_secs(10);

/// One still valid attachment, as GC is given them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    pub cni_version: String,
    #[serde(default)]
    pub name: String,
    #[serde(default, rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub ipam: Option<Value>,
    #[serde(default, rename = "podCIDR")]
    pub pod_cidr: Option<Ipv4Net>,
    #[serde(default)]
    pub dns: Option<Dns>,
    #[serde(default)]
    pub mtu: Option<u32>,
    #[serde(default)]
    pub control_socket: Option<PathBuf>,
    #[serde(default)]
    pub wait_for_switch: Option<bool>,
    #[serde(default)]
    pub switch_wait_seconds: Option<f64>,
    /// Where ADD records its attachments for GC (default [`DEFAULT_DATA_DIR`]/`name`).
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    #[serde(default)]
    pub prev_result: Option<Value>,
    #[serde(default, rename = "cni.dev/valid-attachments")]
    pub valid_attachments: Option<Vec<Attachment>>,
    /// The same under the name the specification first used (libcni sends both).
    #[serde(default, rename = "cni.dev/attachments")]
    pub legacy_attachments: Option<Vec<Attachment>>,
    /// The configuration as given, for delegation.
    #[serde(skip)]
    pub raw: Value,
}

pub use podswitch_control::cni_records::DEFAULT_DATA_DIR;

impl NetConf {
    /// Parses and validates standard in (see the module contract).
    pub fn parse(stdin: &[u8]) -> Result<Self, CniError> {
        let raw: Value = serde_json::from_slice(stdin)
            .map_err(|e| CniError::new(code::DECODING_FAILURE, "the network configuration is not JSON", e.to_string()))?;
        let mut conf: NetConf = serde_json::from_value(raw.clone())
            .map_err(|e| CniError::new(code::DECODING_FAILURE, "the network configuration cannot be read", e.to_string()))?;
        conf.raw = raw;
        if !SUPPORTED_VERSIONS.contains(&conf.cni_version.as_str()) {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                "incompatible CNI versions",
                format!("config is {:?}, plugin supports {:?}", conf.cni_version, SUPPORTED_VERSIONS),
            ));
        }
        if conf.name.is_empty() {
            return Err(CniError::new(code::INVALID_CONFIG, "missing network name", "the configuration has no `name`"));
        }
        if conf.mtu == Some(0) || conf.mtu.is_some_and(|m| m < 68) {
            return Err(CniError::new(code::INVALID_CONFIG, "invalid mtu", format!("mtu {:?} is below IPv4's minimum of 68", conf.mtu)));
        }
        Ok(conf)
    }

    pub fn mtu(&self) -> u32 {
        self.mtu.unwrap_or(DEFAULT_MTU)
    }

    pub fn control_socket(&self) -> PathBuf {
        self.control_socket.clone().unwrap_or_else(|| PathBuf::from(naming::DEFAULT_CONTROL_SOCKET))
    }

    pub fn wait_for_switch(&self) -> bool {
        self.wait_for_switch.unwrap_or(true)
    }

    pub fn switch_wait(&self) -> Duration {
        self.switch_wait_seconds.filter(|s| s.is_finite() && *s >= 0.0).map_or(DEFAULT_SWITCH_WAIT, Duration::from_secs_f64)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR).join(&self.name))
    }

    /// The IPAM plugin's name and the configuration to give it: the whole configuration, with
    /// the default `ipam` section filled in from `podCIDR` when there is none.
    pub fn ipam_config(&self) -> Result<(String, Value), CniError> {
        let mut raw = self.raw.clone();
        let ipam = match (&self.ipam, self.pod_cidr) {
            // host-local without a range takes the node's pod CIDR (`podCIDR`, or the switch's:
            // `crate::node_defaults`).
            (Some(ipam), Some(cidr))
                if ipam.get("type").and_then(Value::as_str) == Some("host-local") && !["ranges", "range", "subnet"].iter().any(|k| ipam.get(k).is_some()) =>
            {
                let mut section = ipam.clone();
                section["ranges"] = json!([[{ "subnet": cidr.trunc().to_string() }]]);
                raw["ipam"] = section.clone();
                section
            }
            (Some(ipam), _) => ipam.clone(),
            (None, Some(cidr)) => {
                let section = json!({ "type": "host-local", "ranges": [[{ "subnet": cidr.trunc().to_string() }]] });
                raw["ipam"] = section.clone();
                section
            }
            (None, None) => {
                return Err(CniError::new(code::INVALID_CONFIG, "no IPAM configured", "the configuration has neither `ipam` nor `podCIDR`"));
            }
        };
        let kind = ipam.get("type").and_then(Value::as_str).unwrap_or_default();
        if kind.is_empty() || kind.contains('/') {
            return Err(CniError::new(code::INVALID_CONFIG, "invalid ipam.type", format!("ipam.type is {:?}", ipam.get("type"))));
        }
        Ok((kind.to_string(), raw))
    }

    /// GC's still valid attachments (none when the runtime sent none, or `null`).
    pub fn valid_attachments(&self) -> Vec<Attachment> {
        self.valid_attachments.clone().or_else(|| self.legacy_attachments.clone()).unwrap_or_default()
    }

    /// `prevResult`, parsed; None when there is none.
    pub fn prev_result(&self) -> Result<Option<AddResult>, CniError> {
        match &self.prev_result {
            None | Some(Value::Null) => Ok(None),
            Some(v) => AddResult::deserialize(v)
                .map(Some)
                .map_err(|e| CniError::new(code::DECODING_FAILURE, "prevResult cannot be read", e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bridge plugin's request configuration in the specification's ADD example.
    const SPEC_ADD_CONF: &str = r#"{
        "cniVersion": "1.1.0",
        "name": "dbnet",
        "type": "bridge",
        "bridge": "cni0",
        "keyA": ["some more", "plugin specific", "configuration"],
        "ipam": { "type": "host-local", "subnet": "10.1.0.0/16", "gateway": "10.1.0.1" },
        "dns": { "nameservers": [ "10.1.0.1" ] }
    }"#;

    #[test]
    fn the_specifications_request_configuration_reads_and_is_delegated_whole() {
        let c = NetConf::parse(SPEC_ADD_CONF.as_bytes()).unwrap();
        assert_eq!((c.name.as_str(), c.kind.as_str()), ("dbnet", "bridge"));
        assert_eq!(c.dns.as_ref().unwrap().nameservers, ["10.1.0.1"]);
        let (kind, conf) = c.ipam_config().unwrap();
        assert_eq!(kind, "host-local");
        assert_eq!(conf, serde_json::from_str::<Value>(SPEC_ADD_CONF).unwrap(), "unknown fields pass through unchanged");
        assert_eq!(c.prev_result().unwrap(), None);
        assert_eq!(c.mtu(), DEFAULT_MTU);
        assert!(c.wait_for_switch());
        assert_eq!(c.control_socket(), PathBuf::from(naming::DEFAULT_CONTROL_SOCKET));
    }

    #[test]
    fn the_check_example_carries_a_prev_result() {
        let mut v: Value = serde_json::from_str(SPEC_ADD_CONF).unwrap();
        v["prevResult"] = json!({
            "ips": [{ "address": "10.1.0.5/16", "gateway": "10.1.0.1", "interface": 2 }],
            "routes": [{ "dst": "0.0.0.0/0" }],
            "interfaces": [{ "name": "cni0", "mac": "00:11:22:33:44:55" }, { "name": "veth3243", "mac": "55:44:33:22:11:11" },
                           { "name": "eth0", "mac": "00:11:22:33:44:66", "sandbox": "/var/run/netns/blue" }],
            "dns": { "nameservers": [ "10.1.0.1" ] }
        });
        let c = NetConf::parse(v.to_string().as_bytes()).unwrap();
        let prev = c.prev_result().unwrap().unwrap();
        assert_eq!(prev.interfaces[2].mac.as_deref(), Some("00:11:22:33:44:66"));
    }

    #[test]
    fn older_versions_are_accepted_and_unknown_ones_refused_with_code_1() {
        for v in ["0.4.0", "1.0.0", "1.1.0"] {
            let c = NetConf::parse(format!(r#"{{"cniVersion":"{v}","name":"n","type":"podswitch-cni","podCIDR":"10.244.1.0/24"}}"#).as_bytes());
            assert!(c.is_ok(), "{v}");
        }
        let e = NetConf::parse(br#"{"cniVersion":"0.3.1","name":"n"}"#).unwrap_err();
        assert_eq!(e.code, code::INCOMPATIBLE_VERSION);
        assert_eq!(NetConf::parse(b"{not json").unwrap_err().code, code::DECODING_FAILURE);
        assert_eq!(NetConf::parse(br#"{"cniVersion":"1.1.0"}"#).unwrap_err().code, code::INVALID_CONFIG);
    }

    #[test]
    fn the_default_ipam_is_host_local_over_the_pod_cidr() {
        let c = NetConf::parse(br#"{"cniVersion":"1.1.0","name":"podswitch","type":"podswitch-cni","podCIDR":"10.244.1.0/24","mtu":1450}"#).unwrap();
        let (kind, conf) = c.ipam_config().unwrap();
        assert_eq!(kind, "host-local");
        assert_eq!(conf["ipam"], json!({"type": "host-local", "ranges": [[{"subnet": "10.244.1.0/24"}]]}));
        assert_eq!(conf["mtu"], json!(1450));
        assert_eq!(c.mtu(), 1450);
        let none = NetConf::parse(br#"{"cniVersion":"1.1.0","name":"podswitch"}"#).unwrap();
        assert_eq!(none.ipam_config().unwrap_err().code, code::INVALID_CONFIG);
    }

    #[test]
    fn a_host_local_section_without_a_range_gets_the_pod_cidr_and_keeps_the_runtimes_ips() {
        // As `podswitch cni install` writes it, with what libcni adds for capability `ips`.
        let c = NetConf::parse(br#"{"cniVersion":"1.0.0","name":"podswitch","type":"podswitch-cni","capabilities":{"ips":true},
            "ipam":{"type":"host-local","dataDir":"/tmp/x"},"podCIDR":"10.244.1.0/24","runtimeConfig":{"ips":["10.244.1.42/24"]}}"#).unwrap();
        let (kind, conf) = c.ipam_config().unwrap();
        assert_eq!(kind, "host-local");
        assert_eq!(conf["ipam"], json!({"type": "host-local", "dataDir": "/tmp/x", "ranges": [[{"subnet": "10.244.1.0/24"}]]}));
        assert_eq!(conf["runtimeConfig"], json!({"ips": ["10.244.1.42/24"]}), "the runtime's address reaches host-local");
        // A section with its own range, or another IPAM plugin, is left as it is.
        for ipam in [json!({"type": "host-local", "subnet": "10.1.0.0/16"}), json!({"type": "host-local", "ranges": [[{"subnet": "10.2.0.0/16"}]]}), json!({"type": "static"})] {
            let c = NetConf::parse(json!({"cniVersion": "1.0.0", "name": "n", "ipam": ipam, "podCIDR": "10.244.1.0/24"}).to_string().as_bytes()).unwrap();
            assert_eq!(c.ipam_config().unwrap().1["ipam"], ipam);
        }
    }

    #[test]
    fn gc_gets_its_valid_attachments() {
        let c = NetConf::parse(br#"{"cniVersion":"1.1.0","name":"n","podCIDR":"10.0.0.0/24",
            "cni.dev/valid-attachments":[{"containerID":"abc","ifname":"eth0"}]}"#).unwrap();
        assert_eq!(c.valid_attachments(), [Attachment { container_id: "abc".into(), ifname: "eth0".into() }]);
        // libcni sends the list under both names, and `null` when it has none.
        let both = NetConf::parse(br#"{"cniVersion":"1.1.0","name":"n","cni.dev/valid-attachments":null,"cni.dev/attachments":null}"#).unwrap();
        assert!(both.valid_attachments().is_empty());
        let legacy = NetConf::parse(br#"{"cniVersion":"1.1.0","name":"n","cni.dev/attachments":[{"containerID":"x","ifname":"eth0"}]}"#).unwrap();
        assert_eq!(legacy.valid_attachments().len(), 1);
    }
}
