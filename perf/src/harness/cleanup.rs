//! The guard a benchmark run holds from its first namespace to its report.
//!
//! Contract: [`Cleanup::install`] makes SIGINT/SIGTERM set the interrupt flag (every wait in
//! [`crate::sys`] then fails with `Interrupted`, so the run unwinds to the guard), creates the
//! run's work directory, and adds a panic hook that runs the run's `destroy` (a panic with
//! `panic = "abort"` never reaches Drop). Dropping the guard runs `destroy`, then removes the
//! work directory and every path given to [`Cleanup::remove_also`]. `destroy` must be
//! idempotent: it may run twice (hook, then Drop).
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

pub struct Cleanup {
    destroy: fn(),
    workdir: PathBuf,
    also: Vec<PathBuf>,
}

impl Cleanup {
    /// See the module contract. `destroy` removes the run's namespaces and processes.
    pub fn install(workdir: PathBuf, destroy: fn()) -> Result<Cleanup> {
        crate::sys::install_interrupt_flag()?;
        std::fs::create_dir_all(&workdir).with_context(|| format!("creating {}", workdir.display()))?;
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            destroy();
            hook(info);
        }));
        Ok(Cleanup { destroy, workdir, also: Vec::new() })
    }

    /// Also removes `path` (a file or a directory) when the guard drops.
    pub fn remove_also(mut self, path: impl AsRef<Path>) -> Cleanup {
        self.also.push(path.as_ref().to_path_buf());
        self
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        (self.destroy)();
        let _ = std::fs::remove_dir_all(&self.workdir);
        for p in &self.also {
            if p.is_dir() {
                let _ = std::fs::remove_dir_all(p);
            } else {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}
