//! IPAM by delegation (CNI 1.1.0, section 4): the plugin named in `ipam.type`, found in
//! `CNI_PATH`, run with this plugin's environment (`CNI_COMMAND` set to the delegated
//! command) and the whole configuration on standard in; its standard error is ours.
//!
//! Contract:
//! - [`Ipam::add`] returns the IPAM plugin's (abbreviated) result; [`Ipam::del`],
//!   [`Ipam::check`] expect none. A failing plugin's error object is passed on as it is (its
//!   code and message); one that printed no error object gives code 101 with its exit status.
//! - Version: an IPAM plugin older than the configuration (Debian 12's reference plugins speak
//!   up to 1.0.0) refuses it with code 1. Then the plugin's VERSION is asked and the same
//!   command is run again with `cniVersion` set to the highest version both speak: the
//!   result types of 1.0.0 and 1.1.0 are the same for IPAM. The first try always uses the
//!   configuration's own version, so a current plugin costs no extra run.
//! - STATUS and GC exist from 1.1.0 on: [`Ipam::status`] and [`Ipam::gc`] delegate them only to
//!   a plugin whose VERSION lists 1.1.0, and report `false` (not delegated) otherwise.
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::error::{code, CniError};
use crate::result::{at_least, AddResult, VersionResult, SUPPORTED_VERSIONS};

/// A delegated IPAM plugin and the configuration it is given.
pub struct Ipam {
    pub kind: String,
    pub binary: PathBuf,
    conf: Value,
}

impl Ipam {
    /// Finds `kind` in `cni_path` (`:`-separated).
    pub fn find(kind: &str, cni_path: &str, conf: Value) -> Result<Self, CniError> {
        let binary = cni_path
            .split(':')
            .filter(|d| !d.is_empty())
            .map(|d| Path::new(d).join(kind))
            .find(|p| p.is_file())
            .ok_or_else(|| CniError::new(code::INVALID_CONFIG, format!("failed to find plugin {kind:?} in path"), format!("CNI_PATH={cni_path:?}")))?;
        Ok(Self { kind: kind.to_string(), binary, conf })
    }

    pub fn add(&self) -> Result<AddResult, CniError> {
        let out = self.run_negotiated("ADD")?;
        serde_json::from_slice(&out).map_err(|e| {
            CniError::new(code::DECODING_FAILURE, format!("the IPAM plugin {}'s result cannot be read", self.kind), e.to_string())
        })
    }

    pub fn del(&self) -> Result<(), CniError> {
        self.run_negotiated("DEL").map(drop)
    }

    pub fn check(&self) -> Result<(), CniError> {
        self.run_negotiated("CHECK").map(drop)
    }

    /// DEL for another attachment than this invocation's (GC of a stale one).
    pub fn del_for(&self, container_id: &str, ifname: &str) -> Result<(), CniError> {
        let env = [("CNI_CONTAINERID", container_id), ("CNI_IFNAME", ifname), ("CNI_NETNS", "")];
        self.run_with("DEL", &self.conf, &env).or_else(|e| match self.fallback(&e)? {
            Some(conf) => self.run_with("DEL", &conf, &env),
            None => Err(e),
        })
        .map(drop)
    }

    /// STATUS, when the plugin knows it (see the module contract).
    pub fn status(&self) -> Result<bool, CniError> {
        if !self.speaks("1.1.0")? {
            return Ok(false);
        }
        self.run("STATUS", &self.conf).map(|_| true)
    }

    /// GC, when the plugin knows it (see the module contract).
    pub fn gc(&self) -> Result<bool, CniError> {
        if !self.speaks("1.1.0")? {
            return Ok(false);
        }
        self.run("GC", &self.conf).map(|_| true)
    }

    /// The plugin's VERSION result.
    pub fn version(&self) -> Result<VersionResult, CniError> {
        let out = self.run("VERSION", &serde_json::json!({ "cniVersion": "1.1.0" }))?;
        serde_json::from_slice(&out).map_err(|e| CniError::new(code::DECODING_FAILURE, format!("the IPAM plugin {}'s VERSION cannot be read", self.kind), e.to_string()))
    }

    fn speaks(&self, v: &str) -> Result<bool, CniError> {
        Ok(self.version()?.supported_versions.iter().any(|s| s == v))
    }

    fn run_negotiated(&self, command: &str) -> Result<Vec<u8>, CniError> {
        match self.run(command, &self.conf) {
            Ok(out) => Ok(out),
            Err(e) => match self.fallback(&e)? {
                Some(conf) => self.run(command, &conf),
                None => Err(e),
            },
        }
    }

    /// After a code-1 refusal: the configuration at the highest version both speak.
    fn fallback(&self, e: &CniError) -> Result<Option<Value>, CniError> {
        if e.code != code::INCOMPATIBLE_VERSION {
            return Ok(None);
        }
        let theirs = self.version()?.supported_versions;
        let want = self.conf.get("cniVersion").and_then(Value::as_str).unwrap_or("1.1.0").to_string();
        let best = SUPPORTED_VERSIONS.iter().rev().find(|v| theirs.iter().any(|t| t == *v) && at_least(&want, v));
        Ok(best.filter(|v| **v != want).map(|v| {
            let mut c = self.conf.clone();
            c["cniVersion"] = Value::from(*v);
            c
        }))
    }

    fn run(&self, command: &str, conf: &Value) -> Result<Vec<u8>, CniError> {
        self.run_with(command, conf, &[])
    }

    fn run_with(&self, command: &str, conf: &Value, env: &[(&str, &str)]) -> Result<Vec<u8>, CniError> {
        let what = format!("{} {command}", self.binary.display());
        let mut cmd = Command::new(&self.binary);
        cmd.env("CNI_COMMAND", command).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().map_err(|e| CniError::from_source(code::IO_FAILURE, format!("cannot run the IPAM plugin {}", self.kind), &e))?;
        let input = serde_json::to_vec(conf).expect("configurations serialize");
        if let Some(mut stdin) = child.stdin.take() {
            // A plugin that exits without reading (VERSION) closes the pipe: not an error.
            let _ = stdin.write_all(&input);
        }
        let out = child.wait_with_output().map_err(|e| CniError::from_source(code::IO_FAILURE, format!("waiting for {what}"), &e))?;
        if out.status.success() {
            return Ok(out.stdout);
        }
        match serde_json::from_slice::<CniError>(&out.stdout) {
            Ok(e) => Err(CniError { cni_version: String::new(), ..e }),
            Err(_) => Err(CniError::new(
                code::DELEGATE,
                format!("the IPAM plugin {} failed", self.kind),
                format!("{what}: {}; standard out: {:?}", out.status, String::from_utf8_lossy(&out.stdout)),
            )),
        }
    }
}
