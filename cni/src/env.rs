//! The protocol parameters a runtime passes in the environment (CNI 1.1.0, section 2).
//!
//! Contract: [`Params::from_env`] reads `CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`,
//! `CNI_IFNAME`, `CNI_ARGS`, `CNI_PATH` and checks that each command has what the
//! specification requires of it (ADD and CHECK: container ID, netns, ifname; DEL: container ID
//! and ifname; the others nothing), naming every missing one in one code-4 error.
//! `CNI_ARGS` is `K=V;K=V`; podswitch reads `K8S_POD_NAMESPACE` and `K8S_POD_NAME` from it
//! and ignores the rest.
use crate::error::{code, CniError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Gc,
    Version,
}

impl Command {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ADD" => Self::Add,
            "DEL" => Self::Del,
            "CHECK" => Self::Check,
            "STATUS" => Self::Status,
            "GC" => Self::Gc,
            "VERSION" => Self::Version,
            _ => return None,
        })
    }
}

/// The parameters of one invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    pub command: Command,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub args: String,
    pub path: String,
}

impl Params {
    /// From the process's environment.
    pub fn from_env() -> Result<Self, CniError> {
        Self::from_lookup(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    /// From any lookup (tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, CniError> {
        let command = get("CNI_COMMAND")
            .ok_or_else(|| CniError::new(code::INVALID_ENVIRONMENT, "required env variables [CNI_COMMAND] missing", ""))?;
        let command = Command::parse(&command)
            .ok_or_else(|| CniError::new(code::INVALID_ENVIRONMENT, format!("unknown CNI_COMMAND: {command}"), "CNI_COMMAND"))?;
        let required: &[&str] = match command {
            Command::Add | Command::Check => &["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"],
            Command::Del => &["CNI_CONTAINERID", "CNI_IFNAME"],
            Command::Status | Command::Gc | Command::Version => &[],
        };
        let missing: Vec<&str> = required.iter().copied().filter(|k| get(k).is_none()).collect();
        if !missing.is_empty() {
            return Err(CniError::new(
                code::INVALID_ENVIRONMENT,
                format!("required env variables [{}] missing", missing.join(",")),
                "",
            ));
        }
        let p = Self {
            command,
            container_id: get("CNI_CONTAINERID").unwrap_or_default(),
            netns: get("CNI_NETNS").unwrap_or_default(),
            ifname: get("CNI_IFNAME").unwrap_or_default(),
            args: get("CNI_ARGS").unwrap_or_default(),
            path: get("CNI_PATH").unwrap_or_default(),
        };
        if !p.ifname.is_empty() && !valid_ifname(&p.ifname) {
            return Err(CniError::new(code::INVALID_ENVIRONMENT, "invalid CNI_IFNAME", format!("CNI_IFNAME={:?} is not a valid interface name", p.ifname)));
        }
        if !p.container_id.is_empty() && !valid_container_id(&p.container_id) {
            return Err(CniError::new(code::INVALID_ENVIRONMENT, "invalid CNI_CONTAINERID", format!("CNI_CONTAINERID={:?}", p.container_id)));
        }
        Ok(p)
    }

    /// The value of `key` in `CNI_ARGS`.
    pub fn arg(&self, key: &str) -> Option<&str> {
        self.args.split(';').filter_map(|kv| kv.split_once('=')).find(|(k, _)| *k == key).map(|(_, v)| v).filter(|v| !v.is_empty())
    }

    /// The Pod this attachment is for, from `K8S_POD_NAMESPACE` and `K8S_POD_NAME`.
    pub fn pod(&self) -> Option<(&str, &str)> {
        Some((self.arg("K8S_POD_NAMESPACE")?, self.arg("K8S_POD_NAME")?))
    }
}

/// The kernel's rule: 1-15 bytes, not `.` or `..`, no `/`, `:` or whitespace.
pub fn valid_ifname(s: &str) -> bool {
    !s.is_empty() && s.len() < 16 && s != "." && s != ".." && !s.chars().any(|c| c == '/' || c == ':' || c.is_whitespace())
}

/// The specification's rule: alphanumeric first, then alphanumerics, `_`, `.`, `-`.
pub fn valid_container_id(s: &str) -> bool {
    let mut cs = s.chars();
    cs.next().is_some_and(|c| c.is_ascii_alphanumeric()) && cs.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn params(vars: &[(&str, &str)]) -> Result<Params, CniError> {
        let m: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Params::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn each_command_requires_what_the_specification_says() {
        let e = params(&[("CNI_COMMAND", "ADD"), ("CNI_IFNAME", "eth0")]).unwrap_err();
        assert_eq!(e.code, code::INVALID_ENVIRONMENT);
        assert!(e.msg.contains("CNI_CONTAINERID,CNI_NETNS"), "{}", e.msg);
        assert!(params(&[("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "c1"), ("CNI_IFNAME", "eth0")]).is_ok(), "DEL needs no netns");
        assert!(params(&[("CNI_COMMAND", "VERSION")]).is_ok());
        assert!(params(&[("CNI_COMMAND", "STATUS")]).is_ok());
        assert_eq!(params(&[("CNI_COMMAND", "FROB")]).unwrap_err().code, code::INVALID_ENVIRONMENT);
        assert_eq!(params(&[]).unwrap_err().code, code::INVALID_ENVIRONMENT);
        let bad = params(&[("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "-x"), ("CNI_IFNAME", "eth0")]).unwrap_err();
        assert!(bad.msg.contains("CNI_CONTAINERID"));
        let long = params(&[("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "c"), ("CNI_IFNAME", "a-name-too-long-for-linux")]).unwrap_err();
        assert!(long.msg.contains("CNI_IFNAME"));
    }

    #[test]
    fn the_pod_comes_from_cni_args() {
        let p = params(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=c1"),
        ])
        .unwrap();
        assert_eq!(p.pod(), Some(("default", "web-0")));
        assert_eq!(p.arg("IgnoreUnknown"), Some("1"));
        let p = Params { args: "K8S_POD_NAMESPACE=default".into(), ..p };
        assert_eq!(p.pod(), None);
    }
}
