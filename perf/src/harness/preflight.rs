//! What a benchmark checks before it touches anything: root, the programs it runs, and the
//! lock that keeps two runs (or a run and the lab tests) from building namespaces at once.
use std::fs::File;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::fcntl::Flock;

use crate::sys;

/// True as root; otherwise prints `bench NAME: must run as root (WHY)` (the run then exits 1).
pub fn root(bench: &str, why: &str) -> bool {
    if sys::is_root() {
        return true;
    }
    eprintln!("bench {bench}: must run as root ({why})");
    false
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
