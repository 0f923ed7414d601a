//! `podswitch cni install` and `uninstall` as a user and the DaemonSet's init container run
//! them: exit codes, `--json` output, the error a missing chained plugin gives, and that the
//! plugin defaults to `podswitch-cni` next to `podswitch`. No root needed (temporary
//! directories; a fake plugin binary).
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};

const PODSWITCH: &str = env!("CARGO_BIN_EXE_podswitch");

struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn podswitch(args: &[&str]) -> Output {
    Command::new(PODSWITCH).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("status {}\nstdout:\n{}\nstderr:\n{}", o.status, String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn install_and_uninstall_from_the_command_line() {
    let s = Scratch(std::env::temp_dir().join(format!("podswitch-cni-cli-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&s.0);
    std::fs::create_dir_all(&s.0).unwrap();
    let plugin = s.0.join("podswitch-cni-build");
    std::fs::write(&plugin, b"#!/bin/sh\nexit 0\n").unwrap();
    let (bin, conf) = (s.0.join("bin"), s.0.join("net.d"));
    let dirs = |extra: &[&str]| -> Vec<String> {
        let mut v = vec![format!("--bin-dir={}", bin.display()), format!("--conf-dir={}", conf.display())];
        v.extend(extra.iter().map(ToString::to_string));
        v
    };
    let run = |cmd: &str, args: Vec<String>| {
        let mut all = vec!["cni".to_string(), cmd.to_string()];
        all.extend(args);
        podswitch(&all.iter().map(String::as_str).collect::<Vec<_>>())
    };

    // A chained plugin that is not there: exit 1, the error names it, nothing written.
    let o = run("install", dirs(&[&format!("--plugin={}", plugin.display()), "--chain=portmap"]));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.starts_with("podswitch: the chained plugin portmap is not in ") && err.contains("containernetworking-plugins"), "{}", text(&o));
    assert!(!bin.join("podswitch-cni").exists() && !conf.join("10-podswitch.conflist").exists());

    let o = run("install", dirs(&[&format!("--plugin={}", plugin.display()), "--mtu=1450", "--json"]));
    assert!(o.status.success(), "{}", text(&o));
    let done: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    assert_eq!(done["binary"], json!(bin.join("podswitch-cni")));
    assert_eq!(done["conflist"], json!(conf.join("10-podswitch.conflist")));
    assert_eq!((done["binary_written"].clone(), done["conflist_written"].clone()), (json!(true), json!(true)));
    assert_eq!(done["config"]["plugins"][0]["mtu"], json!(1450));
    let on_disk: Value = serde_json::from_slice(&std::fs::read(conf.join("10-podswitch.conflist")).unwrap()).unwrap();
    assert_eq!(on_disk, done["config"]);
    let o = run("install", dirs(&[&format!("--plugin={}", plugin.display()), "--mtu=1450"]));
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        format!("unchanged {}\nunchanged {}\n", bin.join("podswitch-cni").display(), conf.join("10-podswitch.conflist").display())
    );

    let o = run("uninstall", dirs(&["--json"]));
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        serde_json::from_slice::<Value>(&o.stdout).unwrap(),
        json!({ "conflist": conf.join("10-podswitch.conflist"), "binary": bin.join("podswitch-cni") })
    );
    let o = run("uninstall", dirs(&["--json"]));
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(serde_json::from_slice::<Value>(&o.stdout).unwrap(), json!({ "conflist": null, "binary": null }));
}

#[test]
fn the_plugin_defaults_to_podswitch_cni_next_to_podswitch() {
    let s = Scratch(std::env::temp_dir().join(format!("podswitch-cni-cli-default-{}", std::process::id())));
    let beside = Path::new(PODSWITCH).parent().unwrap().join("podswitch-cni");
    let o = podswitch(&["cni", "install", &format!("--bin-dir={}", s.0.join("bin").display()), &format!("--conf-dir={}", s.0.join("net.d").display())]);
    if beside.is_file() {
        assert!(o.status.success(), "{}", text(&o));
        assert_eq!(std::fs::read(s.0.join("bin/podswitch-cni")).unwrap(), std::fs::read(&beside).unwrap());
    } else {
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        assert!(String::from_utf8_lossy(&o.stderr).contains(&format!("cannot read the plugin binary {}", beside.display())), "{}", text(&o));
    }
}

#[test]
fn help_says_what_a_runtime_does_with_the_files() {
    let o = podswitch(&["cni", "install", "--help"]);
    assert!(o.status.success(), "{}", text(&o));
    let help = String::from_utf8_lossy(&o.stdout);
    for says in ["container runtime", "/opt/cni/bin", "/etc/cni/net.d", "ADD when the sandbox starts", "--chain", "--no-wait-for-switch", "--cni-version"] {
        assert!(help.contains(says), "help lacks {says:?}:\n{help}");
    }
}
