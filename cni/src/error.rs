//! The error a plugin reports (CNI 1.1.0, section 5 "Error"): `{cniVersion, code, msg,
//! details}` on standard out and a non-zero exit status.
//!
//! Contract: every failure of the plugin ends as one [`CniError`] with a well-known code of the
//! specification where one fits ([`code`]); the modules' own error enums say which
//! (`From` impls next to them). `msg` is short, `details` says what failed and with what.
use serde::{Deserialize, Serialize};

/// The specification's well-known error codes (0-99 are reserved for these).
pub mod code {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in the network configuration (the message names key and value).
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Container unknown or does not exist.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid necessary environment variables (the message names them).
    pub const INVALID_ENVIRONMENT: u32 = 4;
    /// I/O failure (reading the configuration from standard in, ...).
    pub const IO_FAILURE: u32 = 5;
    /// Failed to decode content.
    pub const DECODING_FAILURE: u32 = 6;
    /// Invalid network configuration.
    pub const INVALID_CONFIG: u32 = 7;
    /// Try again later: a transient condition.
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// The plugin is not available (cannot service ADD).
    pub const NOT_AVAILABLE: u32 = 50;
    /// Not available, and existing containers may have limited connectivity.
    pub const LIMITED_CONNECTIVITY: u32 = 51;
    /// Plugin-specific (100 and up): the kernel refused a change to links, addresses or routes.
    pub const NETLINK: u32 = 100;
    /// Plugin-specific: a delegated plugin (IPAM) failed without a code of its own.
    pub const DELEGATE: u32 = 101;
    /// Plugin-specific: CHECK found the attachment not as the previous result says.
    pub const CHECK_FAILED: u32 = 102;
}

/// An error as the specification defines it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "camelCase")]
#[error("{msg} ({details}; code {code})")]
pub struct CniError {
    /// Set by the caller from the configuration's version when it prints the error.
    #[serde(default)]
    pub cni_version: String,
    pub code: u32,
    pub msg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self { cni_version: String::new(), code, msg: msg.into(), details: details.into() }
    }

    /// With `details` the error's chain of sources.
    pub fn from_source(code: u32, msg: impl Into<String>, e: &dyn std::error::Error) -> Self {
        Self::new(code, msg, chain(e))
    }
}

/// `e: cause: cause...`, as one line.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_specifications_example_round_trips() {
        let spec = r#"{
          "cniVersion": "1.1.0",
          "code": 7,
          "msg": "Invalid Configuration",
          "details": "Network 192.168.0.0/31 too small to allocate from."
        }"#;
        let e: CniError = serde_json::from_str(spec).unwrap();
        assert_eq!(e.code, code::INVALID_CONFIG);
        assert_eq!(e.cni_version, "1.1.0");
        let back: serde_json::Value = serde_json::to_value(&e).unwrap();
        assert_eq!(back, serde_json::from_str::<serde_json::Value>(spec).unwrap());
    }

    #[test]
    fn an_error_of_a_plugin_without_version_or_details_reads() {
        // What the reference plugins (libcni's types.Error) print: no cniVersion, details omitted.
        let e: CniError = serde_json::from_str(r#"{"code": 11, "msg": "busy"}"#).unwrap();
        assert_eq!(e, CniError::new(code::TRY_AGAIN_LATER, "busy", ""));
        assert!(!serde_json::to_string(&e).unwrap().contains("details"));
    }
}
