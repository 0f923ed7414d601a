//! What a benchmark checks before it touches anything: root, the cores it is given, the
//! programs it runs, and the lock that keeps two runs (or a run and the lab tests) from building
//! namespaces at once.
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::fcntl::Flock;

use crate::sys;

use super::cleanup::Cleanup;
use super::host::Start;
use super::progress;

/// The lab tests' machine lock: one lab (or benchmark topology) at a time on this machine.
pub const LAB_LOCK: &str = "/run/podswitch-lab-tests.lock";

/// True as root; otherwise prints `bench NAME: must run as root (WHY)` (the run then exits 1).
pub fn root(bench: &str, why: &str) -> bool {
    if sys::is_root() {
        return true;
    }
    eprintln!("bench {bench}: must run as root ({why})");
    false
}

/// Fails unless `core` (the value of option `--OPTION`) is an online core.
pub fn online_core(option: &str, core: usize) -> Result<()> {
    let cpus = sys::online_cpus();
    if core >= cpus {
        bail!("--{option} must be one of the {cpus} online cores");
    }
    Ok(())
}

/// Fails unless `--gen-core` and `--fwd-core` are two different online cores.
pub fn gen_and_fwd_cores(gen_core: usize, fwd_core: usize) -> Result<()> {
    let cpus = sys::online_cpus();
    if fwd_core == gen_core || fwd_core >= cpus || gen_core >= cpus {
        bail!("--gen-core and --fwd-core must be two different cores among the {cpus} online");
    }
    Ok(())
}

/// Fails naming the first program of `built` (its path, its name, the workspace crate that
/// builds it) that is not there.
pub fn built(built: &[(&Path, &str, &str)]) -> Result<()> {
    for (path, name, krate) in built {
        if !path.is_file() {
            bail!("no {name} (cargo build --release -p {krate}) at {}", path.display());
        }
    }
    Ok(())
}

/// A run of the lab-sized benchmarks (crossnode, e2e, apps, cni, portkinds) from its checks to
/// its report: see [`begin`].
pub struct LabRun {
    /// `PREFIX-bench-PID` in the temporary directory, removed with `guard`.
    pub workdir: PathBuf,
    /// Takes the run's namespaces, processes and work directory down when dropped.
    pub guard: Cleanup,
    pub start: Start,
    /// [`LAB_LOCK`], held while this lives.
    _lock: Flock<File>,
}

/// Where a lab-sized run begins once its checks passed: the clock of the timed progress lines
/// starts, SIGINT/SIGTERM set the interrupt flag, the run waits for [`LAB_LOCK`] (saying so as
/// `bench NAME [t s]: ...`), then installs its cleanup guard with `destroy` over its work
/// directory `PREFIX-bench-PID` and notes its start.
pub fn begin(bench: &str, prefix: &str, destroy: fn()) -> Result<LabRun> {
    progress::start_clock();
    sys::install_interrupt_flag()?;
    let lock = lock_blocking(LAB_LOCK, |m| progress::say_timed(bench, m))?;
    let workdir = std::env::temp_dir().join(format!("{prefix}-bench-{}", std::process::id()));
    let guard = Cleanup::install(workdir.clone(), destroy)?;
    Ok(LabRun { workdir, guard, start: Start::now(), _lock: lock })
}

/// Fails naming every program of `need` not found on PATH; `hint` says what installs them.
pub fn programs(need: &[&str], hint: &str) -> Result<()> {
    let missing: Vec<&str> = need.iter().copied().filter(|p| !sys::have(p)).collect();
    if !missing.is_empty() {
        bail!("missing programs: {} ({hint})", missing.join(", "));
    }
    Ok(())
}

/// The program a run drives: `given` (its command-line option) or `name` next to this program
/// (where `cargo build` puts every binary of the workspace). Whether it exists is the caller's
/// check, with its own hint.
pub fn program_beside(given: &Option<PathBuf>, name: &str) -> Result<PathBuf> {
    Ok(match given {
        Some(p) => p.clone(),
        None => std::env::current_exe().context("locating this program")?.with_file_name(name),
    })
}

/// Waits (up to 30 minutes, interruptible) for the exclusive lock on `path` that lab tests and
/// other runs take, saying once through `say` that it waits.
pub fn lock_blocking(path: &str, say: impl Fn(String)) -> Result<Flock<File>> {
    let end = Instant::now() + Duration::from_secs(1800);
    let mut said = false;
    loop {
        match sys::lock_file(path) {
            Ok(f) => return Ok(f),
            Err(_) if Instant::now() < end => {
                if !said {
                    say(format!("waiting for {path} (a lab test or benchmark holds it)"));
                    said = true;
                }
                sys::nap(Duration::from_millis(500))?;
            }
            Err(e) => return Err(e),
        }
    }
}
