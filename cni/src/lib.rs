//! `podswitch-cni`: the CNI plugin (specification 1.1.0; 0.4.0 and 1.0.0 configurations
//! accepted) that wires a pod into podswitch: the veth pair named by podswitch's convention,
//! the pod's MAC, address, MTU, routes via 169.254.1.1 and offloads, IPAM delegated to a
//! standard IPAM plugin, and a wait for the switch to attach the port.
//!
//! - [`env`]: the protocol parameters (`CNI_*` environment variables).
//! - [`config`]: the configuration on standard in, with podswitch's fields.
//! - [`result`]: ADD and VERSION results in each version's shape.
//! - [`error`]: the error object and the well-known codes.
//! - [`ipam`]: delegation to the IPAM plugin.
//! - [`commands`]: ADD, DEL, CHECK, STATUS, GC, VERSION.
//! - [`link`], [`rtnl`], [`netns`], [`offloads`]: the kernel side (rtnetlink, setns, ethtool).
//! - [`switch_port`]: asking the switch's control socket about the pod's port.
//! - [`node_defaults`]: the pod CIDR and MTU from the switch when the configuration has none.
//! - `podswitch_control::cni_records`: the attachment records the switch wires pods from and
//!   GC works from.
pub mod commands;
pub mod config;
pub mod env;
pub mod error;
pub mod ipam;
pub mod link;
pub mod netns;
pub mod node_defaults;
pub mod offloads;
pub mod result;
pub mod rtnl;
pub mod switch_port;

use std::io::Read;

use env::{Command, Params};
use error::{code, CniError};

/// What the plugin prints on standard out on success (nothing for DEL, CHECK, STATUS, GC).
pub fn run(params: &Params, stdin: &[u8]) -> Result<Option<serde_json::Value>, CniError> {
    if params.command == Command::Version {
        let v = serde_json::from_slice::<serde_json::Value>(stdin).ok();
        let asked = v.as_ref().and_then(|v| v.get("cniVersion")).and_then(serde_json::Value::as_str);
        return Ok(Some(serde_json::to_value(commands::version(asked)).expect("serializes")));
    }
    let mut conf = config::NetConf::parse(stdin)?;
    let v = conf.cni_version.clone();
    let with_version = |e: CniError| CniError { cni_version: v.clone(), ..e };
    if matches!(params.command, Command::Status | Command::Gc) && !result::at_least(&conf.cni_version, "1.1.0") {
        return Err(with_version(CniError::new(code::INCOMPATIBLE_VERSION, "incompatible CNI versions", format!("config version {} does not allow STATUS or GC", conf.cni_version))));
    }
    if params.command == Command::Check && !result::at_least(&conf.cni_version, "0.4.0") {
        return Err(with_version(CniError::new(code::INCOMPATIBLE_VERSION, "config version does not allow CHECK", "")));
    }
    let mtu_too = matches!(params.command, Command::Add | Command::Check);
    if params.command != Command::Status && node_defaults::NodeDefaults::needed(&conf, mtu_too) {
        node_defaults::NodeDefaults::for_command(&conf, params.command == Command::Add).map_err(with_version)?.fill(&mut conf);
    }
    let out = match params.command {
        Command::Add => commands::add(&conf, params).map(|r| Some(r.to_version(&conf.cni_version))),
        Command::Del => commands::del(&conf, params).map(|()| None),
        Command::Check => commands::check(&conf, params).map(|()| None),
        Command::Status => commands::status(&conf, params).map(|()| None),
        Command::Gc => commands::gc(&conf, params).map(|()| None),
        Command::Version => unreachable!("answered above"),
    };
    out.map_err(with_version)
}

/// Reads the parameters and standard in, runs, prints; the process's exit status.
pub fn main_exit_code() -> i32 {
    let result = Params::from_env().and_then(|p| {
        let mut stdin = Vec::new();
        if p.command != Command::Version {
            std::io::stdin().read_to_end(&mut stdin).map_err(|e| CniError::from_source(code::IO_FAILURE, "error reading from stdin", &e))?;
        } else {
            let _ = std::io::stdin().read_to_end(&mut stdin);
        }
        run(&p, &stdin)
    });
    match result {
        Ok(Some(v)) => {
            println!("{}", serde_json::to_string(&v).expect("serializes"));
            0
        }
        Ok(None) => 0,
        Err(mut e) => {
            if e.cni_version.is_empty() {
                e.cni_version = result::CURRENT_VERSION.to_string();
            }
            println!("{}", serde_json::to_string(&e).expect("serializes"));
            1
        }
    }
}
