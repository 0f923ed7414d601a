//! Open vSwitch's userspace datapath with AF_XDP ports, started by the benchmark in a private
//! directory (database, sockets, logs, pid files; nothing under /var/run/openvswitch or /etc).
//!
//! Contract: [`Ovs::start`] creates a fresh database there, runs `ovsdb-server` and
//! `ovs-vswitchd --disable-system` inside the node namespace (no kernel datapath exists here),
//! with the PMD thread on the forwarding core (`pmd-cpu-mask`) and the daemon's other threads
//! pinned there too, a `datapath_type=netdev` bridge whose two ports are the pods' host-side
//! veths as `type=afxdp` (native XDP; copy mode on veth), and OpenFlow rules that route pod a ->
//! pod b as the switch does (rewrite both MACs, decrement the TTL, output), dropping the rest.
//! [`Ovs::stop`] (also on drop) stops both daemons and removes the directory; the XDP programs
//! go with `ovs-vswitchd` (the caller checks and detaches leftovers).
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::sys::{self, Proc};

pub const SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";
const BRIDGE: &str = "pse-br";

pub struct Ovs {
    dir: PathBuf,
    db: Option<Proc>,
    vswitchd: Option<Proc>,
}

/// Where A sends and what B receives: ofports 1 and 2.
pub struct Route<'a> {
    pub a_if: &'a str,
    pub b_if: &'a str,
    pub gw_mac_b: &'a str,
    pub b_mac: &'a str,
    pub b_ip: std::net::Ipv4Addr,
}

impl Ovs {
    fn env(&self, c: &mut Command) {
        for k in ["OVS_RUNDIR", "OVS_LOGDIR", "OVS_DBDIR", "OVS_SYSCONFDIR"] {
            c.env(k, &self.dir);
        }
    }

    fn cmd(&self, args: &[&str]) -> Result<String> {
        let mut c = Command::new(args[0]);
        c.args(&args[1..]).stdin(std::process::Stdio::null());
        self.env(&mut c);
        let out = c.output().with_context(|| format!("cannot run `{}`", args.join(" ")))?;
        if !out.status.success() {
            bail!("`{}` failed ({}): {}", args.join(" "), out.status, String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn vsctl(&self, args: &[&str]) -> Result<String> {
        let db = format!("--db=unix:{}", self.dir.join("db.sock").display());
        let mut v = vec!["ovs-vsctl", db.as_str(), "--timeout=20"];
        v.extend_from_slice(args);
        self.cmd(&v)
    }

    fn ofctl(&self, args: &[&str]) -> Result<String> {
        let mut v = vec!["ovs-ofctl"];
        v.extend_from_slice(args);
        self.cmd(&v)
    }

    pub fn start(netns: &str, dir: &Path, fwd_core: usize, r: &Route) -> Result<Ovs> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir)?;
        let mut o = Ovs { dir: dir.to_path_buf(), db: None, vswitchd: None };
        let d = |f: &str| dir.join(f).display().to_string();
        o.cmd(&["ovsdb-tool", "create", &d("conf.db"), SCHEMA])?;
        let mut db = o.spawn(
            "ovsdb-server",
            &[
                "ip", "netns", "exec", netns, "ovsdb-server", &d("conf.db"), &format!("--remote=punix:{}", d("db.sock")),
                &format!("--pidfile={}", d("ovsdb-server.pid")), &format!("--unixctl={}", d("ovsdb-server.ctl")),
            ],
            &d("ovsdb-server.out"),
        )?;
        let end = Instant::now() + Duration::from_secs(10);
        while !dir.join("db.sock").exists() {
            if let Some(st) = db.exited() {
                bail!("ovsdb-server exited ({st}):\n    {}", db.log_tail(10));
            }
            if Instant::now() > end {
                bail!("ovsdb-server did not create its socket in 10 s");
            }
            sys::nap(Duration::from_millis(50))?;
        }
        o.db = Some(db);
        o.vsctl(&["--no-wait", "init"])?;
        let mask = format!("other_config:pmd-cpu-mask=0x{:x}", 1u64 << fwd_core);
        o.vsctl(&["--no-wait", "set", "Open_vSwitch", ".", &mask])?;
        let core = fwd_core.to_string();
        let vswitchd = o.spawn(
            "ovs-vswitchd",
            &[
                "ip", "netns", "exec", netns, "taskset", "-c", &core, "ovs-vswitchd", &format!("unix:{}", d("db.sock")), "--disable-system",
                &format!("--pidfile={}", d("ovs-vswitchd.pid")), &format!("--unixctl={}", d("ovs-vswitchd.ctl")),
                &format!("--log-file={}", d("ovs-vswitchd.log")),
            ],
            &d("ovs-vswitchd.out"),
        )?;
        o.vswitchd = Some(vswitchd);
        // ovs-vswitchd fills in iface_types once it has connected to the database.
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            let types = o.vsctl(&["get", "Open_vSwitch", ".", "iface_types"])?;
            if types.contains("afxdp") {
                break;
            }
            if let Some(v) = o.vswitchd.as_mut() {
                if let Some(st) = v.exited() {
                    bail!("ovs-vswitchd exited ({st}):\n    {}", v.log_tail(10));
                }
            }
            if Instant::now() > end && types.trim() != "[]" {
                bail!("this ovs-vswitchd offers no afxdp interface type (iface_types: {})", types.trim());
            }
            if Instant::now() > end + Duration::from_secs(10) {
                bail!("ovs-vswitchd did not report its interface types in 30 s");
            }
            sys::nap(Duration::from_millis(100))?;
        }
        o.vsctl(&["add-br", BRIDGE, "--", "set", "bridge", BRIDGE, "datapath_type=netdev", "fail_mode=secure"])?;
        for (ifname, port) in [(r.a_if, "1"), (r.b_if, "2")] {
            o.vsctl(&[
                "add-port", BRIDGE, ifname, "--", "set", "interface", ifname, "type=afxdp", "options:xdp-mode=native",
                &format!("ofport_request={port}"),
            ])?;
        }
        for ifname in [r.a_if, r.b_if] {
            let st = o.vsctl(&["get", "interface", ifname, "error"])?;
            if st.trim() != "[]" {
                bail!("OVS could not open {ifname} as an afxdp port: {}", st.trim());
            }
        }
        o.ofctl(&["del-flows", BRIDGE])?;
        o.ofctl(&[
            "add-flow",
            BRIDGE,
            &format!(
                "priority=100,ip,in_port=1,nw_dst={},actions=mod_dl_src:{},mod_dl_dst:{},dec_ttl,output:2",
                r.b_ip, r.gw_mac_b, r.b_mac
            ),
        ])?;
        o.ofctl(&["add-flow", BRIDGE, "priority=0,actions=drop"])?;
        Ok(o)
    }

    fn spawn(&self, name: &str, args: &[&str], log: &str) -> Result<Proc> {
        // Proc::spawn takes no environment: pass ours through `env`.
        let mut v: Vec<String> = vec!["env".into()];
        for k in ["OVS_RUNDIR", "OVS_LOGDIR", "OVS_DBDIR", "OVS_SYSCONFDIR"] {
            v.push(format!("{k}={}", self.dir.display()));
        }
        v.extend(args.iter().map(std::string::ToString::to_string));
        Proc::spawn(name, &v, PathBuf::from(log))
    }

    /// pid of ovs-vswitchd (its CPU time is the forwarder's).
    pub fn vswitchd_pid(&self) -> Option<u32> {
        self.vswitchd.as_ref().map(super::super::sys::Proc::pid)
    }

    /// Stops both daemons (SIGTERM, then SIGKILL) and removes the directory. Returns problems.
    pub fn stop(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(mut v) = self.vswitchd.take() {
            if let Some(st) = v.exited() {
                problems.push(format!("ovs-vswitchd had exited ({st}): {}", v.log_tail(5)));
            }
            let (_, killed) = v.stop(sys::Signal::SIGTERM, false, Duration::from_secs(10));
            if killed {
                problems.push("ovs-vswitchd did not stop on SIGTERM and was killed".into());
            }
        }
        if let Some(mut d) = self.db.take() {
            d.stop(sys::Signal::SIGTERM, false, Duration::from_secs(5));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        problems
    }
}

impl Drop for Ovs {
    fn drop(&mut self) {
        self.stop();
    }
}
