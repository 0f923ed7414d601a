//! Process and /proc helpers shared by the benchmarks: running commands, spawning long-lived
//! children with a log file, signalling and reaping them by pid, an interrupt flag (SIGINT /
//! SIGTERM) that every wait checks, CPU-time readers, and reading callgrind totals.
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use nix::fcntl::{Flock, FlockArg};
pub use nix::sys::signal::Signal;

static INTERRUPTED: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// Makes SIGINT and SIGTERM set a flag instead of killing us, so that cleanup runs.
pub fn install_interrupt_flag() -> Result<()> {
    let flag = INTERRUPTED.get_or_init(|| Arc::new(AtomicBool::new(false)));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(flag)).context("installing signal handlers")?;
    }
    Ok(())
}

pub fn interrupted() -> bool {
    INTERRUPTED.get().is_some_and(|f| f.load(Ordering::Relaxed))
}

/// The error a run ends with when it was interrupted.
#[derive(Debug)]
pub struct Interrupted;
impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted")
    }
}
impl std::error::Error for Interrupted {}

/// Sleeps `d`, waking early (with an error) when interrupted.
pub fn nap(d: Duration) -> Result<()> {
    let end = Instant::now() + d;
    loop {
        if interrupted() {
            return Err(Interrupted.into());
        }
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Cores online (not only those this process may run on), at least 1.
pub fn online_cpus() -> usize {
    use nix::unistd::{sysconf, SysconfVar};
    match sysconf(SysconfVar::_NPROCESSORS_ONLN) {
        Ok(Some(n)) if n >= 1 => n as usize,
        _ => 1,
    }
}

/// Whether `prog` is found on PATH (or is an existing path).
pub fn have(prog: &str) -> bool {
    if prog.contains('/') {
        return Path::new(prog).is_file();
    }
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
}

/// Runs a command to completion; its stdout on success, an error naming it and its stderr otherwise.
pub fn run<S: AsRef<str>>(args: &[S]) -> Result<String> {
    let args: Vec<&str> = args.iter().map(std::convert::AsRef::as_ref).collect();
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run `{}`", args.join(" ")))?;
    if !out.status.success() {
        bail!("`{}` failed ({}): {}", args.join(" "), out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs a command and ignores how it went (cleanup paths).
pub fn run_quiet<S: AsRef<str>>(args: &[S]) {
    let args: Vec<&str> = args.iter().map(std::convert::AsRef::as_ref).collect();
    let _ = Command::new(args[0]).args(&args[1..]).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).status();
}

/// Reads an integer file (e.g. an interface counter) as seen from inside network namespace `ns`.
pub fn ns_read_u64(ns: &str, path: &str) -> Result<u64> {
    let s = run(&["ip", "netns", "exec", ns, "cat", path])?;
    s.trim().parse().with_context(|| format!("{path} in {ns} is not a number: {s:?}"))
}

/// Sends `sig` to `pid` (one of our children or a process found in one of our own namespaces);
/// a process already gone is not an error.
pub fn signal(pid: u32, sig: Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
}

pub fn alive(pid: u32) -> bool {
    // A zombie still has /proc/PID; look at its state.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()) != Some("Z"),
        Err(_) => false,
    }
}

/// Direct children of `pid` (all its threads).
pub fn children(pid: u32) -> Vec<u32> {
    let mut v = Vec::new();
    if let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in rd.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                v.extend(s.split_whitespace().filter_map(|x| x.parse::<u32>().ok()));
            }
        }
    }
    v
}

/// CPU time used so far by all threads of `pid`, in ns (from /proc/PID/task/*/schedstat).
pub fn process_cpu_ns(pid: u32) -> Option<u64> {
    let rd = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut sum = 0u64;
    let mut any = false;
    for t in rd.flatten() {
        if let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) {
            if let Some(ns) = s.split_whitespace().next().and_then(|x| x.parse::<u64>().ok()) {
                sum += ns;
                any = true;
            }
        }
    }
    any.then_some(sum)
}

/// Per-core jiffies from /proc/stat, indexed by core number.
#[derive(Debug, Clone, Copy, Default)]
pub struct Jiffies {
    pub busy: u64,
    pub user: u64,
    pub softirq: u64,
    pub total: u64,
}

/// Shares of one core's time in a window.
#[derive(Debug, Clone, Copy, Default)]
pub struct CoreShare {
    pub busy: f64,
    /// User space (user + nice).
    pub user: f64,
    pub softirq: f64,
}

#[derive(Debug, Clone, Default)]
pub struct CoreTimes(pub Vec<Jiffies>);

impl CoreTimes {
    pub fn read() -> CoreTimes {
        let mut v: Vec<Jiffies> = Vec::new();
        let Ok(s) = std::fs::read_to_string("/proc/stat") else { return CoreTimes(v) };
        for line in s.lines() {
            let mut it = line.split_whitespace();
            let Some(name) = it.next() else { continue };
            let Some(idx) = name.strip_prefix("cpu").and_then(|n| n.parse::<usize>().ok()) else { continue };
            let f: Vec<u64> = it.filter_map(|x| x.parse().ok()).collect();
            if f.len() < 8 {
                continue;
            }
            // user nice system idle iowait irq softirq steal [guest guest_nice: already in user]
            let total: u64 = f[..8].iter().sum();
            let idle = f[3] + f[4];
            if v.len() <= idx {
                v.resize(idx + 1, Jiffies::default());
            }
            v[idx] = Jiffies { busy: total - idle, user: f[0] + f[1], softirq: f[6], total };
        }
        CoreTimes(v)
    }

    /// Per-core shares between `self` (earlier) and `later`.
    pub fn shares(&self, later: &CoreTimes) -> Vec<CoreShare> {
        self.0
            .iter()
            .zip(later.0.iter())
            .map(|(a, b)| {
                let total = b.total.saturating_sub(a.total).max(1) as f64;
                let f = |x: u64, y: u64| y.saturating_sub(x) as f64 / total;
                CoreShare { busy: f(a.busy, b.busy), user: f(a.user, b.user), softirq: f(a.softirq, b.softirq) }
            })
            .collect()
    }
}

/// A long-running child whose stdout and stderr go to a log file.
pub struct Proc {
    pub name: String,
    child: Child,
    pub log: PathBuf,
    status: Option<ExitStatus>,
}

impl Proc {
    pub fn spawn<S: AsRef<str>>(name: &str, args: &[S], log: PathBuf) -> Result<Proc> {
        let args: Vec<&str> = args.iter().map(std::convert::AsRef::as_ref).collect();
        let f = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let f2 = f.try_clone()?;
        let child = Command::new(args[0])
            .args(&args[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::from(f))
            .stderr(Stdio::from(f2))
            .spawn()
            .with_context(|| format!("cannot start `{}`", args.join(" ")))?;
        Ok(Proc { name: name.to_string(), child, log, status: None })
    }

    /// The pid (`ip netns exec`, `taskset` and `stdbuf` all exec, so it is the program's own).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if it has exited (reaps it).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `n` lines of its log, for error messages.
    pub fn log_tail(&self, n: usize) -> String {
        let t = self.log_text();
        let lines: Vec<&str> = t.lines().filter(|l| !l.trim().is_empty()).collect();
        lines[lines.len().saturating_sub(n)..].join("\n    ")
    }

    /// Waits until its log contains `needle`; fails if it exits first, on timeout or interrupt.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        let end = Instant::now() + timeout;
        loop {
            if self.log_text().contains(needle) {
                return Ok(());
            }
            if let Some(st) = self.exited() {
                bail!("{} exited ({st}) before it was ready:\n    {}", self.name, self.log_tail(12));
            }
            if Instant::now() >= end {
                bail!("{} was not ready after {:?} (no {needle:?} in its output):\n    {}", self.name, timeout, self.log_tail(12));
            }
            nap(Duration::from_millis(50))?;
        }
    }

    /// Waits up to `timeout` for it to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(st) = self.exited() {
                return Some(st);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `sig` (to it and, with `tree`, its children), waits up to `grace`, then SIGKILLs
    /// whatever is left. Returns the exit status and whether it had to be killed.
    pub fn stop(&mut self, sig: Signal, tree: bool, grace: Duration) -> (Option<ExitStatus>, bool) {
        if let Some(st) = self.exited() {
            return (Some(st), false);
        }
        let pid = self.pid();
        let kids = if tree { children(pid) } else { Vec::new() };
        signal(pid, sig);
        for &k in &kids {
            signal(k, sig);
        }
        if let Some(st) = self.wait_timeout(grace) {
            for &k in &kids {
                if alive(k) {
                    signal(k, Signal::SIGKILL);
                }
            }
            return (Some(st), false);
        }
        for &k in &kids {
            signal(k, Signal::SIGKILL);
        }
        signal(pid, Signal::SIGKILL);
        (self.wait_timeout(Duration::from_secs(5)), true)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.exited().is_none() {
            for k in children(self.pid()) {
                signal(k, Signal::SIGKILL);
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Takes a non-blocking exclusive lock on `path`, held until the returned value drops.
pub fn lock_file(path: &str) -> Result<Flock<File>> {
    let f = File::options().create(true).truncate(false).write(true).open(path).with_context(|| format!("opening {path}"))?;
    Flock::lock(f, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| match e {
        nix::errno::Errno::EWOULDBLOCK => anyhow!("another benchmark run holds {path}; wait for it to finish"),
        e => anyhow!("cannot lock {path}: {e}"),
    })
}

/// The instruction total of a callgrind output file's text (its `totals:` or `summary:` line).
pub fn callgrind_total(text: &str) -> Result<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("totals: ").or_else(|| l.strip_prefix("summary: ")))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .context("no totals in the callgrind output")
}
