//! What the plugin's integration tests share: running a command, and the rule for a missing
//! prerequisite (`test-support/needs_root.rs`, included here once).
#![allow(dead_code)] // Each test file uses some of it.
#[path = "../../../test-support/needs_root.rs"]
pub mod needs_root;

use std::process::Command;

pub use needs_root::skip_or_fail;

/// Runs `args` (a command and its arguments), asserts it succeeded, returns its standard out.
pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}
