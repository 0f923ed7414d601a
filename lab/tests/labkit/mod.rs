//! What the lab integration tests (`lab.rs`, `lab_services.rs`, `lab_policy.rs`) share: running
//! `podswitch lab` as users do (the built `podswitch`, which execs the built `podswitch-lab`
//! next to it), the hold on the machine's one lab, the lab's pods and `lab probe`.
//!
//! Contract:
//! - [`podswitch_bin`] is the `podswitch` of this build's target directory, beside
//!   `podswitch-lab`; `cargo test` builds only this package's binary, so the first call runs
//!   `cargo build -p podswitch-control --bin podswitch -p podswitch-cni` (same profile) to make
//!   them current (the lab wires its pods through `podswitch-cni`, which it finds beside it).
//! - [`root_or_skip`]: a test that needs root runs as root; without root it prints
//!   `SKIPPED: <test> needs root` and passes, except when `CI` is set: then it fails.
//! - [`Hold::new`] returns None (after [`root_or_skip`]'s SKIPPED line) unless root.
//!   Otherwise it holds this binary's [`LAB`] mutex and the machine-wide flock on
//!   [`MACHINE_LOCK`] (every lab test of every test binary, and the benchmarks that build
//!   namespaces, take turns on it), removes a lab left over (`lab down`), and copies an
//!   example manifest directory into a fresh temporary directory the test may edit.
//! - Dropping the hold runs `lab down` and removes the directory, also when the test fails.
//! - [`podswitch`] runs the binary with `PODSWITCH_LAB_NO_SWITCH` removed (a `lab up` starts
//!   the switch); [`podswitch_env`] sets it when asked.
//! - [`sh`] runs any other command and asserts it succeeded; [`in_netns`] runs a closure on a
//!   thread inside a lab namespace (sockets it makes live there); [`skip_or_fail`] is
//!   [`root_or_skip`]'s rule for another missing prerequisite.
#![allow(dead_code)]
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard, OnceLock};

use serde_json::Value;

/// This package's binary, `podswitch-lab`.
pub const LAB_BIN: &str = env!("CARGO_BIN_EXE_podswitch-lab");
/// One lab per test binary at a time (tests of one binary run on threads).
pub static LAB: Mutex<()> = Mutex::new(());
/// Held (flock, exclusive) by every lab test of every test binary while its lab is up.
pub const MACHINE_LOCK: &str = "/run/podswitch-lab-tests.lock";

#[path = "../../../test-support/needs_root.rs"]
mod needs_root;
#[allow(unused_imports)] // Not every test binary uses both.
pub use needs_root::{root_or_skip, skip_or_fail};

/// Runs `cmd args`, asserts it succeeded, returns its standard out.
pub fn sh(cmd: &str, args: &[&str]) -> String {
    let o = Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(o.status.success(), "{cmd} {} failed: {}", args.join(" "), describe(&o));
    text(&o.stdout)
}

/// Runs `f` on a thread that entered network namespace `netns` (sockets it makes live there).
pub fn in_netns<T: Send>(netns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let ns = fs::File::open(format!("/run/netns/{netns}")).unwrap_or_else(|e| panic!("{netns}: {e}"));
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
        .join()
        .unwrap()
    })
}

/// The `podswitch` binary beside [`LAB_BIN`], built (or brought up to date) on first use.
pub fn podswitch_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let dir = Path::new(LAB_BIN).parent().expect("the lab binary is in a directory");
        let mut build = Command::new(option_env!("CARGO").unwrap_or("cargo"));
        // The lab wires its pods through podswitch-cni, found next to it.
        build.args(["build", "--quiet", "-p", "podswitch-control", "--bin", "podswitch", "-p", "podswitch-cni", "--bin", "podswitch-cni"]);
        // target/debug or target/release: the profile this test was built with.
        if dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build.current_dir(env!("CARGO_MANIFEST_DIR")).status().expect("run cargo build");
        assert!(status.success(), "cargo build -p podswitch-control --bin podswitch -p podswitch-cni failed");
        let bin = dir.join("podswitch");
        assert!(bin.exists(), "{} was not built", bin.display());
        bin
    })
}

/// Runs `podswitch ARGS`; with `no_switch` a `lab up` does not start the switch.
pub fn podswitch_env(args: &[&str], no_switch: bool) -> Output {
    let mut c = Command::new(podswitch_bin());
    c.args(args);
    if no_switch {
        c.env("PODSWITCH_LAB_NO_SWITCH", "1");
    } else {
        c.env_remove("PODSWITCH_LAB_NO_SWITCH");
    }
    c.output().expect("run podswitch")
}

pub fn podswitch(args: &[&str]) -> Output {
    podswitch_env(args, false)
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub fn describe(o: &Output) -> String {
    format!("status {}\nstdout:\n{}\nstderr:\n{}", o.status, text(&o.stdout), text(&o.stderr))
}

/// Runs `podswitch ARGS` (see [`podswitch_env`]), asserts success, returns stdout.
pub fn ok_env(args: &[&str], no_switch: bool) -> String {
    let o = podswitch_env(args, no_switch);
    assert!(o.status.success(), "podswitch {} failed: {}", args.join(" "), describe(&o));
    text(&o.stdout)
}

pub fn ok(args: &[&str]) -> String {
    ok_env(args, false)
}

/// The network namespaces a lab made (`psl-` and `psl_` prefixes), sorted.
pub fn lab_namespaces() -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir("/run/netns")
        .map(|rd| {
            rd.filter_map(std::result::Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.starts_with("psl-") || n.starts_with("psl_"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

pub fn examples(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("examples").join(name)
}

/// The machine has one lab: test binaries (and people running them) take turns on this lock.
pub fn machine_lock() -> nix::fcntl::Flock<fs::File> {
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(MACHINE_LOCK)
        .unwrap_or_else(|e| panic!("{MACHINE_LOCK}: {e}"));
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .unwrap_or_else(|e| panic!("flock {MACHINE_LOCK}: {e}"))
}

/// A test's lab in `lab.rs` and `lab_services.rs`: a [`Hold`] (it derefs to one), with each file's
/// own ways up in an `impl Lab` of that file.
pub struct Lab(pub Hold);

impl std::ops::Deref for Lab {
    type Target = Hold;
    fn deref(&self) -> &Hold {
        &self.0
    }
}

/// A test's hold on the machine's one lab and its manifest directory (see the module contract).
pub struct Hold {
    pub dir: PathBuf,
    _machine_lock: nix::fcntl::Flock<fs::File>,
    _lock: MutexGuard<'static, ()>,
}

impl Hold {
    /// `kind` names the test file in the directory's name (`psl-KIND-test-PID-TEST`);
    /// `example` is the directory of `examples/` to copy.
    pub fn new(kind: &str, test: &str, example: &str) -> Option<Hold> {
        if !root_or_skip(test) {
            return None;
        }
        let lock = LAB.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let machine = machine_lock();
        let dir = std::env::temp_dir().join(format!("psl-{kind}-test-{}-{test}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        for e in fs::read_dir(examples(example)).unwrap() {
            let e = e.unwrap();
            fs::copy(e.path(), dir.join(e.file_name())).unwrap();
        }
        let hold = Hold { dir, _machine_lock: machine, _lock: lock };
        ok_env(&["lab", "down"], true);
        Some(hold)
    }

    pub fn dir(&self) -> &str {
        self.dir.to_str().unwrap()
    }

    /// Writes `name` in the manifest directory at once (temporary file and rename), so that a
    /// running lab never reads half of it.
    pub fn write(&self, name: &str, content: &str) {
        let tmp = self.dir.join(format!(".{name}.tmp"));
        fs::write(&tmp, content).unwrap();
        fs::rename(&tmp, self.dir.join(name)).unwrap();
    }

    /// Replaces the label lines (indented by 4) that follow `anchor` in `file` by `labels`
    /// (`"key: value"`), written at once.
    pub fn replace_labels(&self, file: &str, anchor: &str, labels: &[String]) {
        let yaml = fs::read_to_string(self.dir.join(file)).unwrap();
        let start = yaml.find(anchor).unwrap_or_else(|| panic!("no {anchor:?} in {file}")) + anchor.len();
        let mut end = start;
        while yaml[end..].starts_with("    ") {
            end += yaml[end..].find('\n').unwrap() + 1;
        }
        let block: String = labels.iter().map(|l| format!("    {l}\n")).collect();
        self.write(file, &format!("{}{block}{}", &yaml[..start], &yaml[end..]));
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        let o = podswitch_env(&["lab", "down"], true);
        if !o.status.success() {
            eprintln!("lab down failed: {}", describe(&o));
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The lab's state file as JSON.
pub fn state() -> Value {
    serde_json::from_str(&fs::read_to_string("/run/podswitch/lab/state.json").unwrap()).unwrap()
}

/// `ns/name` → IP of the lab's pods.
pub fn pod_ips() -> BTreeMap<String, String> {
    state()["pods"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), v["ip"].as_str().unwrap().to_string())).collect()
}

/// Runs `lab probe --json` with `args`; returns the results.
pub fn probe(args: &[&str]) -> Vec<Value> {
    let mut a = vec!["lab", "probe", "--json"];
    a.extend_from_slice(args);
    let out = ok(&a);
    let v: Value =
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("probe output is not one JSON object ({e}): {out}"));
    v["results"].as_array().unwrap().clone()
}
