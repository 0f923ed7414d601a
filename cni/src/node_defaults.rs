//! What the plugin takes from the switch when its configuration leaves it out: the node's pod
//! CIDR (host-local's range) and the pods' MTU. So the `.conflist` that `podswitch cni
//! install` writes is the same on every node: `"ipam": {"type": "host-local"}`, no MTU.
//!
//! Contract:
//! - [`NodeDefaults::needed`]: only with `waitForSwitch` (the switch is there to ask), when no
//!   range is set (neither `podCIDR` nor an `ipam` section other than host-local without
//!   `ranges`/`range`/`subnet`), or, for ADD and CHECK (which set and compare it), no `mtu`.
//! - [`NodeDefaults::for_command`]: the switch's `status` answer (`pod_cidr`, `pod_mtu`), kept
//!   in `DATA_DIR/node.json` at every answer. ADD asks until `switchWaitSeconds` have passed
//!   (then code 50: nothing is made before). DEL, CHECK and GC ask once and then use the
//!   kept answer, so that they work while the switch is not running.
//! - [`NodeDefaults::fill`] puts what the configuration lacks into it (`podCIDR` for the range,
//!   `mtu`); a switch without an uplink gives no MTU, and [`crate::config::DEFAULT_MTU`] stays.
use std::path::Path;
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use podswitch_control::ctl::{client, Request};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::NetConf;
use crate::error::{chain, code, CniError};

/// What the plugin reads of the switch's `status` answer (`ctl::replies::Status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeDefaults {
    pub pod_cidr: Ipv4Net,
    #[serde(default)]
    pub pod_mtu: Option<u32>,
}

/// The file the last answer is kept in.
const KEPT: &str = "node.json";

impl NodeDefaults {
    /// Whether `conf` leaves out something the switch knows that a command needs (see the
    /// module contract); `mtu_too` for ADD and CHECK.
    pub fn needed(conf: &NetConf, mtu_too: bool) -> bool {
        if !conf.wait_for_switch() {
            return false;
        }
        let ranged = |ipam: &Value| {
            ipam.get("type").and_then(Value::as_str) != Some("host-local") || ["ranges", "range", "subnet"].iter().any(|k| ipam.get(k).is_some())
        };
        let range_known = conf.pod_cidr.is_some() || conf.ipam.as_ref().is_some_and(ranged);
        (mtu_too && conf.mtu.is_none()) || !range_known
    }

    /// The switch's answer for `conf` (see the module contract); `wait` for ADD.
    pub fn for_command(conf: &NetConf, wait: bool) -> Result<Self, CniError> {
        let socket = conf.control_socket();
        let kept = conf.data_dir().join(KEPT);
        let deadline = Instant::now() + if wait { conf.switch_wait() } else { Duration::ZERO };
        let last_error = loop {
            match ask(&socket) {
                Ok(d) => {
                    keep(&kept, &d);
                    return Ok(d);
                }
                Err(e) if Instant::now() >= deadline => break e,
                Err(_) => std::thread::sleep(crate::switch_port::POLL_EVERY),
            }
        };
        if !wait {
            if let Some(d) = std::fs::read(&kept).ok().and_then(|b| serde_json::from_slice(&b).ok()) {
                return Ok(d);
            }
        }
        Err(CniError::new(
            code::NOT_AVAILABLE,
            "the switch is not running",
            format!(
                "the configuration leaves the pod CIDR or the MTU to the switch, which did not answer on {}{}: {last_error}",
                socket.display(),
                if wait { format!(" within {:?}", conf.switch_wait()) } else { format!(" (and {} holds no earlier answer)", kept.display()) }
            ),
        ))
    }

    /// Fills in what `conf` leaves out.
    pub fn fill(self, conf: &mut NetConf) {
        conf.pod_cidr.get_or_insert(self.pod_cidr);
        if conf.mtu.is_none() {
            conf.mtu = self.pod_mtu;
        }
    }
}

fn ask(socket: &Path) -> Result<NodeDefaults, String> {
    let answer = client::request(socket, &Request::Status).map_err(|e| chain(&e))?;
    client::read(&answer).map_err(|e| chain(&e))
}

/// Keeps the answer for DEL, CHECK and GC; a failure only costs that.
fn keep(path: &Path, d: &NodeDefaults) {
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(d).expect("serializes"))?;
        std::fs::rename(&tmp, path)
    };
    if let Err(e) = write() {
        eprintln!("podswitch-cni: keeping the switch's answer in {}: {e}", path.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(extra: Value) -> NetConf {
        let mut v = serde_json::json!({"cniVersion": "1.1.0", "name": "n", "type": "podswitch-cni"});
        v.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        NetConf::parse(v.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn only_what_the_configuration_leaves_out_is_asked_for() {
        let host_local = serde_json::json!({"type": "host-local"});
        assert!(NodeDefaults::needed(&conf(serde_json::json!({"ipam": host_local, "mtu": 1450})), false), "no range");
        assert!(NodeDefaults::needed(&conf(serde_json::json!({"podCIDR": "10.244.1.0/24"})), true), "no MTU");
        assert!(!NodeDefaults::needed(&conf(serde_json::json!({"podCIDR": "10.244.1.0/24"})), false), "DEL needs no MTU");
        assert!(NodeDefaults::needed(&conf(serde_json::json!({})), false));
        assert!(!NodeDefaults::needed(&conf(serde_json::json!({"podCIDR": "10.244.1.0/24", "mtu": 1450})), true));
        let ranged = serde_json::json!({"type": "host-local", "ranges": [[{"subnet": "10.1.0.0/24"}]]});
        assert!(!NodeDefaults::needed(&conf(serde_json::json!({"ipam": ranged, "mtu": 1450})), true));
        let other = serde_json::json!({"type": "whereabouts"});
        assert!(!NodeDefaults::needed(&conf(serde_json::json!({"ipam": other, "mtu": 1450})), true), "another IPAM has its own ranges");
        assert!(!NodeDefaults::needed(&conf(serde_json::json!({"waitForSwitch": false})), true), "no switch to ask");
    }

    #[test]
    fn the_switch_fills_the_range_of_host_local_and_the_mtu() {
        let mut c = conf(serde_json::json!({"ipam": {"type": "host-local", "dataDir": "/x"}}));
        NodeDefaults { pod_cidr: "10.244.3.0/24".parse().unwrap(), pod_mtu: Some(1450) }.fill(&mut c);
        assert_eq!(c.mtu(), 1450);
        let (kind, raw) = c.ipam_config().unwrap();
        assert_eq!(kind, "host-local");
        assert_eq!(raw["ipam"], serde_json::json!({"type": "host-local", "dataDir": "/x", "ranges": [[{"subnet": "10.244.3.0/24"}]]}));
        // A switch without an uplink gives no MTU; a configured one stays.
        let mut c = conf(serde_json::json!({"mtu": 9000}));
        NodeDefaults { pod_cidr: "10.244.3.0/24".parse().unwrap(), pod_mtu: Some(1450) }.fill(&mut c);
        assert_eq!(c.mtu(), 9000);
        let mut c = conf(serde_json::json!({}));
        NodeDefaults { pod_cidr: "10.244.3.0/24".parse().unwrap(), pod_mtu: None }.fill(&mut c);
        assert_eq!(c.mtu(), crate::config::DEFAULT_MTU);
    }
}
