//! What a report records about the machine and the checkout it measured.
use std::path::Path;

use crate::sys;

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
