//! Writing a run's results: `NAME.json` (the summary, pretty-printed, one trailing newline),
//! `NAME.md` and any further files, into the results directory (created if missing).
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

/// The summary as the `.json` file holds it.
pub fn json<S: Serialize>(summary: &S) -> Result<String> {
    Ok(serde_json::to_string_pretty(summary)? + "\n")
}

/// Writes `files` (name, text) into `dir`; returns their paths in order.
pub fn save(dir: &Path, files: &[(&str, String)]) -> Result<Vec<String>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut names = Vec::new();
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        names.push(path.display().to_string());
    }
    Ok(names)
}
