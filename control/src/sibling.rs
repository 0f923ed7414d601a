//! The project's other executables, found as an installation lays them out.
//!
//! Contract:
//! - [`find`] looks for `NAME` next to the running executable first (as `cargo build` and the
//!   release archives place `podswitch` and `podswitch-lab` side by side), then in each directory
//!   of `PATH`; a match must be a regular file with an execute bit.
//! - [`exec`] replaces this process by `NAME ARGS...` (the exit code becomes that program's);
//!   it returns only on failure.
//! - Errors say which name was looked for and where ([`SiblingError`]).
use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SiblingError {
    #[error("{name} is not installed: it is neither next to {exe} nor on PATH ({hint})")]
    NotFound { name: String, exe: String, hint: &'static str },
    #[error("cannot run {}: {source}", path.display())]
    Exec { path: PathBuf, source: std::io::Error },
}

/// How to get `name` when it is missing (the lab is a separate binary of the workspace).
fn install_hint(name: &str) -> &'static str {
    match name {
        "podswitch-lab" => "build it with `cargo build -p podswitch-lab` and keep it next to podswitch",
        "podswitch" => "build it with `cargo build -p podswitch-control` and keep it next to podswitch-lab",
        // The lab wires its pods through the CNI plugin.
        "podswitch-cni" => "build it with `cargo build -p podswitch-cni` and keep it next to podswitch-lab",
        _ => "install it next to this program",
    }
}

fn is_executable(p: &Path) -> bool {
    p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The path of the executable `name` (see the module contract).
pub fn find(name: &str) -> Result<PathBuf, SiblingError> {
    let exe = std::env::current_exe().ok();
    let beside = exe.as_deref().and_then(Path::parent).map(|d| d.join(name));
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join(name)).collect::<Vec<_>>())
        .unwrap_or_default();
    beside.into_iter().chain(on_path).find(|p| is_executable(p)).ok_or_else(|| SiblingError::NotFound {
        name: name.to_string(),
        exe: exe.map_or_else(|| "this program".to_string(), |e| e.display().to_string()),
        hint: install_hint(name),
    })
}

/// Replaces this process by `name args...`; returns only the reason it could not.
pub fn exec(name: &str, args: &[OsString]) -> SiblingError {
    match find(name) {
        Ok(path) => {
            let source = std::process::Command::new(&path).args(args).exec();
            SiblingError::Exec { path, source }
        }
        Err(e) => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_program_is_a_clear_error() {
        let e = find("podswitch-no-such-program").unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("podswitch-no-such-program is not installed: it is neither next to "), "{msg}");
        assert!(msg.contains("nor on PATH"), "{msg}");
    }

    #[test]
    fn finds_a_program_on_path() {
        // `sh` is on PATH on every machine this runs on, never next to the test binary.
        let p = find("sh").unwrap();
        assert!(p.ends_with("sh") && p.is_absolute(), "{}", p.display());
    }
}
