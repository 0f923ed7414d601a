//! Building the libcni driver (main.go next to this file) for the tests that drive the plugin
//! as a runtime does; each such test (here and in lab/tests) includes this file with `#[path]`.
//! Built offline with Debian's Go against golang-github-appc-cni-dev
//! (`GOPATH=/usr/share/gocode GO111MODULE=off`), next to the test's binary.
use std::path::{Path, PathBuf};
use std::process::Command;

const GOPATH: &str = "/usr/share/gocode";

/// Builds the driver; Err says what is missing.
pub fn build_driver() -> Result<PathBuf, String> {
    if !Path::new(GOPATH).join("src/github.com/containernetworking/cni/libcni").is_dir() {
        return Err("libcni is not installed (Debian package golang-github-appc-cni-dev)".into());
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out_dir = exe.parent().unwrap().to_path_buf();
    let driver = out_dir.join("podswitch-cni-libcni-driver");
    // The including crate's directory is cni/ or a sibling of it.
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cni/tests/libcni_driver");
    let out = Command::new("go")
        .args(["build", "-o"])
        .arg(&driver)
        .arg(".")
        .current_dir(&src)
        .env("GOPATH", GOPATH)
        .env("GO111MODULE", "off")
        .env("GOCACHE", out_dir.join("podswitch-cni-gocache"))
        .output()
        .map_err(|e| format!("cannot run go (Debian package golang-go): {e}"))?;
    if !out.status.success() {
        return Err(format!("go build of the libcni driver failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(driver)
}
