//! What a report records about the machine and the checkout it measured: [`Start`] when a run
//! begins, [`Host`] (kernel, CPU, load average at start and end) and [`Stamp`] (commit, start,
//! duration) when it ends.
use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use crate::sys;

/// The machine a run measured, as every report records it (flattened into the benchmarks'
/// `env`, or as `host`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Host {
    pub kernel: String,
    pub cpu: String,
    pub online_cpus: usize,
    pub loadavg_start: String,
    pub loadavg_end: String,
}

/// When and from which checkout a run was made, and how long it took: how every report ends
/// (flattened: `git`, `started_utc`, `elapsed_s`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stamp {
    pub git: Option<String>,
    pub started_utc: String,
    pub elapsed_s: f64,
}

impl Stamp {
    /// Reads the checkout's commit now; `elapsed` (seconds) to one decimal.
    pub fn new(started_utc: String, elapsed: f64) -> Stamp {
        Stamp { git: git_describe(), started_utc, elapsed_s: crate::stats::round_to(elapsed, 1) }
    }
}

/// When a run started: the clock of its elapsed time, the UTC time and the load average then.
pub struct Start {
    pub at: Instant,
    pub utc: String,
    pub loadavg: String,
}

impl Start {
    pub fn now() -> Start {
        Start { at: Instant::now(), utc: utc_now(), loadavg: loadavg() }
    }

    /// Seconds since the start.
    pub fn elapsed_s(&self) -> f64 {
        self.at.elapsed().as_secs_f64()
    }

    /// The machine, with the load average now as the end's.
    pub fn host(&self) -> Host {
        Host {
            kernel: first_line_of(&["uname", "-r"]),
            cpu: cpu_model(),
            online_cpus: sys::online_cpus(),
            loadavg_start: self.loadavg.clone(),
            loadavg_end: loadavg(),
        }
    }
}

/// The first line of what `cmd` prints (a program's version, the kernel's release), trimmed;
/// empty if it cannot be run.
pub fn first_line_of(cmd: &[&str]) -> String {
    sys::run(cmd).map(|s| s.lines().next().unwrap_or("").trim().to_string()).unwrap_or_default()
}

/// The 1, 5 and 15 minute load averages, as `/proc/loadavg` writes them ("" if unreadable).
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")).unwrap_or_default()
}

/// The CPU's model name from `/proc/cpuinfo` ("" if unknown).
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split_once(':')).map(|(_, m)| m.trim().to_string()))
        .unwrap_or_default()
}

/// The checkout's short commit, `+dirty` when tracked files differ from it (None outside git).
pub fn git_describe() -> Option<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent()?.to_str()?.to_string();
    let head = sys::run(&["git", "-C", &root, "rev-parse", "--short", "HEAD"]).ok()?.trim().to_string();
    let dirty = sys::run(&["git", "-C", &root, "status", "--porcelain", "--untracked-files=no"]).is_ok_and(|s| !s.trim().is_empty());
    Some(if dirty { format!("{head}+dirty") } else { head })
}

/// Now in UTC, `2026-12-06T14:00:00Z` ("" if `date` fails).
pub fn utc_now() -> String {
    sys::run(&["date", "-u", "+%Y-%m-%dT%H:%M:%SZ"]).map(|s| s.trim().to_string()).unwrap_or_default()
}
