//! Every Kubernetes manifest of the project (examples/**, scripts/deploy/) validates against
//! the API schemas of Kubernetes 1.33 (scripts/validate-manifests.sh, kubernetes-validate from
//! PyPI, installed when missing). If the validator cannot be installed, this test fails: it
//! never passes without having validated.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn run(args: &[&Path]) -> Output {
    let script = root().join("scripts/validate-manifests.sh");
    Command::new("bash")
        .arg(&script)
        .args(args)
        .current_dir(root())
        .env("K8S_VERSION", "1.33.0")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()))
}

fn text(o: &Output) -> String {
    format!("stdout:\n{}\nstderr:\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn every_project_manifest_validates_against_the_kubernetes_schemas() {
    let o = run(&[]);
    match o.status.code() {
        Some(0) => {}
        Some(2) => panic!("the manifest validator could not be installed or run, so nothing was validated:\n{}", text(&o)),
        _ => panic!("manifests do not validate against Kubernetes 1.33:\n{}", text(&o)),
    }
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("resources valid against Kubernetes 1.33.0"), "{}", text(&o));
    // The deploy manifests are among them.
    let n: usize = out.split(" files,").next().and_then(|s| s.rsplit(' ').next()).and_then(|s| s.parse().ok()).unwrap_or(0);
    assert!(n >= 10, "too few files validated: {}", text(&o));

    // And the validator does reject what the API would: a wrong type, an unknown field, an
    // unknown apiVersion.
    let dir = std::env::temp_dir().join(format!("podswitch-validate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases = [
        ("wrong-type.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: [{name: c, image: i, ports: [{containerPort: http}]}]}\n"),
        ("unknown-field.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 80}], selectr: {a: b}}\n"),
        ("old-api.yaml", "apiVersion: discovery.k8s.io/v1beta1\nkind: EndpointSlice\nmetadata: {name: e}\naddressType: IPv4\nendpoints: []\n"),
    ];
    for (name, body) in cases {
        let f = dir.join(name);
        std::fs::write(&f, body).unwrap();
        let o = run(&[&f]);
        assert_eq!(o.status.code(), Some(1), "{name} should be rejected:\n{}", text(&o));
        assert!(String::from_utf8_lossy(&o.stderr).contains(name), "{name}: the validator's message names the file:\n{}", text(&o));
    }
    let _ = std::fs::remove_dir_all(&dir);
}
