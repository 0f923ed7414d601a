//! The rule every test that needs root follows, in one place for every test crate of the
//! workspace (each includes this file with `#[path]`: test crates cannot share a module
//! otherwise, and a crate for six lines is more than it is worth).
//!
//! As root the test runs. Without root it prints `SKIPPED: <test> needs root` and passes, except
//! when `CI` is set (non-empty): then it fails, so that a CI run cannot pass without the tests
//! it was meant to run. [`skip_or_fail`] is the same rule for any other missing prerequisite
//! (a package, a built binary).

/// True when the test may run (see the module contract); panics without root under CI.
pub fn root_or_skip(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
        panic!("{test} needs root, and CI is set: a CI run must not skip it");
    }
    eprintln!("SKIPPED: {test} needs root");
    false
}

/// Says that `test` skips because of `why`, or fails with it when `CI` is set.
#[allow(dead_code)] // Not every test crate that includes this file has other prerequisites.
pub fn skip_or_fail(test: &str, why: &str) {
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
        panic!("{test}: {why}, and CI is set: a CI run must not skip it");
    }
    eprintln!("SKIPPED: {test}: {why}");
}
