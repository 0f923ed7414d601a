//! Processes the lab starts: detached spawning, identity, liveness and termination.
//!
//! Contract:
//! - [`spawn_detached`] starts a program in its own process group with stdin from /dev/null
//!   and stdout/stderr appended to a log file, so it outlives the command that started it, gets
//!   no signal meant for that command's foreground job (Ctrl-C), and never holds its pipes.
//!   (A process group rather than a session: std sets it without `unsafe` pre-exec code.)
//! - A process is recorded as a [`ProcRef`]: pid plus start time (from `/proc/PID/stat`), so a
//!   recycled pid is never mistaken for a lab process and never signalled.
//! - [`ProcRef::terminate`] sends SIGTERM, waits, then SIGKILL; a zombie counts as exited.
use std::fs::{self, OpenOptions};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcRef {
    pub pid: i32,
    /// Start time in clock ticks since boot (field 22 of /proc/PID/stat).
    pub start: u64,
}

/// (state letter, start time) of a process, if it exists.
fn stat(pid: i32) -> Option<(char, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: parse after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?; // field 22 overall
    Some((state, start))
}

impl ProcRef {
    /// Identifies a running process.
    pub fn of(pid: i32) -> Option<ProcRef> {
        stat(pid).map(|(_, start)| ProcRef { pid, start })
    }

    /// True while the process runs (not exited, not a zombie, pid not recycled).
    pub fn alive(&self) -> bool {
        matches!(stat(self.pid), Some((s, start)) if start == self.start && s != 'Z' && s != 'X')
    }

    /// Stops the process: SIGTERM, up to `grace` to exit, then SIGKILL. Returns whether it
    /// was running.
    pub fn terminate(&self, grace: Duration) -> bool {
        if !self.alive() {
            return false;
        }
        let pid = Pid::from_raw(self.pid);
        let _ = kill(pid, Signal::SIGTERM);
        if wait_gone(self, grace) {
            return true;
        }
        let _ = kill(pid, Signal::SIGKILL);
        wait_gone(self, Duration::from_secs(3));
        true
    }
}

impl ProcRef {
    /// Kills the process (SIGKILL) and waits up to 3 s for it to go. Returns whether it was
    /// running.
    pub fn kill(&self) -> bool {
        if !self.alive() {
            return false;
        }
        let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
        wait_gone(self, Duration::from_secs(3));
        true
    }
}

fn wait_gone(p: &ProcRef, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while p.alive() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// Starts `program args...` detached (see the module contract), output appended to `log`.
pub fn spawn_detached(program: &Path, args: &[String], log: &Path) -> anyhow::Result<(Child, ProcRef)> {
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot open log {}", log.display()))?;
    let err = out.try_clone().with_context(|| format!("cannot open log {}", log.display()))?;
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
    cmd.process_group(0);
    let child = cmd.spawn().with_context(|| format!("cannot start {} {}", program.display(), args.join(" ")))?;
    let pid = child.id() as i32;
    // The child exists (possibly as a zombie) until it is waited for, so its stat is readable.
    let proc_ref = ProcRef::of(pid).unwrap_or(ProcRef { pid, start: 0 });
    Ok((child, proc_ref))
}

/// Kills every process in `pids` except this one (SIGTERM, then SIGKILL). Returns how many.
pub fn terminate_pids(pids: &[i32], grace: Duration) -> usize {
    let me = std::process::id() as i32;
    let refs: Vec<ProcRef> = pids.iter().filter(|p| **p != me).filter_map(|p| ProcRef::of(*p)).collect();
    for r in &refs {
        let _ = kill(Pid::from_raw(r.pid), Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while refs.iter().any(ProcRef::alive) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    for r in refs.iter().filter(|r| r.alive()) {
        let _ = kill(Pid::from_raw(r.pid), Signal::SIGKILL);
        wait_gone(r, Duration::from_secs(3));
    }
    refs.len()
}
