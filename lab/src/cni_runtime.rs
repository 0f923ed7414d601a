//! The runtime side of CNI 1.1.0, as libcni (the library containerd and CRI-O use) does it: load
//! a network configuration list and run its plugins for ADD, CHECK and DEL.
//!
//! Contract:
//! - [`ConfList::load`] reads a `.conflist`: `cniVersion`, `name` and a non-empty `plugins`
//!   array whose entries each have a `type` (else [`CniRuntimeError::InvalidConfList`]).
//! - Each plugin is the executable named by its `type`, found in the first directory of
//!   [`Runtime::cni_path`] that has it; it runs with the caller's environment plus
//!   `CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME`, `CNI_ARGS` (`K=V;K=V`) and
//!   `CNI_PATH` (the directories joined by `:`), its configuration on standard in, its standard
//!   error inherited. It runs in the network namespace of the calling thread (the caller picks
//!   it: the lab runs its runtime on a thread inside the node's namespace).
//! - A plugin's configuration is its entry of the list with `name` and `cniVersion` of the list
//!   injected, `prevResult` (the previous plugin's result for ADD; the cached result of the last
//!   ADD for CHECK and DEL) when there is one, and `runtimeConfig` holding only the capability
//!   arguments of [`Attachment::capability_args`] whose key the plugin declares in its
//!   `capabilities` with `true` (none: no `runtimeConfig` key at all).
//! - ADD runs the plugins in order, each getting the previous one's result; the last result is
//!   cached (`CACHE_DIR/results/NAME-CONTAINERID-IFNAME`, libcni's layout) and returned. A
//!   failing plugin stops the chain; as in libcni nothing is undone: the caller runs DEL.
//! - DEL runs the plugins in reverse order, each with the cached result as `prevResult` (none
//!   cached: none passed), then removes the cache entry. A failing plugin stops the chain and
//!   the cache entry stays (a retried DEL gets it again).
//! - CHECK needs the cached result (a list older than 0.4.0 cannot CHECK) and runs the plugins
//!   in order with it.
//! - A plugin that exits non-zero is [`CniRuntimeError::Plugin`] with the code, msg and
//!   details of the error object it printed, or [`CniRuntimeError::PluginExit`] with its exit
//!   status and standard out when it printed none.
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, thiserror::Error)]
pub enum CniRuntimeError {
    #[error("cannot read the network configuration list {path}")]
    ReadConfList { path: String, source: std::io::Error },
    #[error("the network configuration list {path} is not JSON")]
    ParseConfList { path: String, source: serde_json::Error },
    #[error("the network configuration list {path} is invalid: {why}")]
    InvalidConfList { path: String, why: String },
    #[error("CNI plugin {kind:?} is in none of the CNI_PATH directories {path}")]
    PluginNotFound { kind: String, path: String },
    #[error("cannot run CNI plugin {plugin}")]
    Spawn { plugin: String, source: std::io::Error },
    #[error("CNI plugin {kind} failed ({command}): code {code}: {msg}{}", if details.is_empty() { String::new() } else { format!(" ({details})") })]
    Plugin { kind: String, command: &'static str, code: u64, msg: String, details: String },
    #[error("CNI plugin {kind} failed ({command}) without an error object: {status}; standard out: {stdout:?}")]
    PluginExit { kind: String, command: &'static str, status: std::process::ExitStatus, stdout: String },
    #[error("CNI plugin {kind}'s {command} result is not JSON")]
    BadResult { kind: String, command: &'static str, source: serde_json::Error },
    #[error("cannot {what} the cached result {path}")]
    Cache { what: &'static str, path: String, source: std::io::Error },
    #[error("cannot CHECK network {network} for container {container_id}: {why}")]
    CannotCheck { network: String, container_id: String, why: String },
}

/// A network configuration list (`.conflist`).
#[derive(Debug, Clone)]
pub struct ConfList {
    pub cni_version: String,
    pub name: String,
    /// The plugins' entries, in order, as written.
    pub plugins: Vec<Value>,
}

impl ConfList {
    pub fn load(path: &Path) -> Result<Self, CniRuntimeError> {
        let p = path.display().to_string();
        let text = fs::read(path).map_err(|source| CniRuntimeError::ReadConfList { path: p.clone(), source })?;
        let v: Value = serde_json::from_slice(&text).map_err(|source| CniRuntimeError::ParseConfList { path: p.clone(), source })?;
        Self::from_value(&v).map_err(|why| CniRuntimeError::InvalidConfList { path: p, why })
    }

    pub fn from_value(v: &Value) -> Result<Self, String> {
        let field = |k: &str| v.get(k).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
        let cni_version = field("cniVersion").ok_or("no cniVersion")?;
        let name = field("name").ok_or("no name")?;
        let plugins = v.get("plugins").and_then(Value::as_array).filter(|p| !p.is_empty()).ok_or("no plugins")?.clone();
        if let Some(i) = plugins.iter().position(|p| !p.get("type").and_then(Value::as_str).is_some_and(|t| !t.is_empty() && !t.contains('/'))) {
            return Err(format!("plugin {i} has no valid type"));
        }
        Ok(Self { cni_version, name, plugins })
    }
}

/// One attachment of a container to the network (libcni's `RuntimeConf`).
#[derive(Debug, Clone, Default)]
pub struct Attachment {
    pub container_id: String,
    /// The container's network namespace (a path).
    pub netns: PathBuf,
    pub ifname: String,
    /// `CNI_ARGS`, in order.
    pub args: Vec<(String, String)>,
    /// Capability arguments (`ips`, `portMappings`, ...), given to the plugins that declare them.
    pub capability_args: Map<String, Value>,
}

impl Attachment {
    /// The attachment of a Kubernetes pod sandbox, with the `CNI_ARGS` kubelet's runtimes pass
    /// (`IgnoreUnknown=1`, so that the reference plugins accept the Kubernetes keys).
    pub fn for_pod(container_id: &str, netns: &Path, ifname: &str, namespace: &str, name: &str) -> Self {
        let args = [
            ("IgnoreUnknown", "1"),
            ("K8S_POD_NAMESPACE", namespace),
            ("K8S_POD_NAME", name),
            ("K8S_POD_INFRA_CONTAINER_ID", container_id),
        ];
        Self {
            container_id: container_id.to_string(),
            netns: netns.to_path_buf(),
            ifname: ifname.to_string(),
            args: args.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            capability_args: Map::new(),
        }
    }

    fn cni_args(&self) -> String {
        self.args.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(";")
    }
}

/// What is cached of an ADD (the fields of libcni's `cniCacheV1` this runtime uses).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Cached {
    kind: String,
    container_id: String,
    if_name: String,
    network_name: String,
    cni_args: Vec<[String; 2]>,
    capability_args: Map<String, Value>,
    result: Value,
}

/// Where plugins are found and results cached.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub cni_path: Vec<PathBuf>,
    pub cache_dir: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmd {
    Add,
    Check,
    Del,
}

impl Cmd {
    fn name(self) -> &'static str {
        match self {
            Cmd::Add => "ADD",
            Cmd::Check => "CHECK",
            Cmd::Del => "DEL",
        }
    }
}

impl Runtime {
    /// ADD: every plugin in order; returns (and caches) the last result.
    pub fn add(&self, list: &ConfList, a: &Attachment) -> Result<Value, CniRuntimeError> {
        let mut prev: Option<Value> = None;
        for plugin in &list.plugins {
            let out = self.invoke(Cmd::Add, list, plugin, prev.as_ref(), a)?;
            prev = Some(out.unwrap_or(Value::Null));
        }
        let result = prev.unwrap_or(Value::Null);
        self.write_cache(list, a, &result)?;
        Ok(result)
    }

    /// CHECK: every plugin in order, with the cached result.
    pub fn check(&self, list: &ConfList, a: &Attachment) -> Result<(), CniRuntimeError> {
        let cannot = |why: String| CniRuntimeError::CannotCheck { network: list.name.clone(), container_id: a.container_id.clone(), why };
        if !version_at_least(&list.cni_version, (0, 4, 0)) {
            return Err(cannot(format!("configuration version {} does not allow CHECK", list.cni_version)));
        }
        let Some(cached) = self.read_cache(list, a)? else {
            return Err(cannot("no cached result of an ADD".into()));
        };
        for plugin in &list.plugins {
            self.invoke(Cmd::Check, list, plugin, Some(&cached), a)?;
        }
        Ok(())
    }

    /// DEL: every plugin in reverse order, with the cached result; then forgets it.
    pub fn del(&self, list: &ConfList, a: &Attachment) -> Result<(), CniRuntimeError> {
        let cached = if version_at_least(&list.cni_version, (0, 4, 0)) { self.read_cache(list, a)? } else { None };
        for plugin in list.plugins.iter().rev() {
            self.invoke(Cmd::Del, list, plugin, cached.as_ref(), a)?;
        }
        let path = self.cache_path(list, a);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(CniRuntimeError::Cache { what: "remove", path: path.display().to_string(), source: e })
            }
            _ => Ok(()),
        }
    }

    /// `CNI_PATH`.
    pub fn cni_path_var(&self) -> String {
        self.cni_path.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(":")
    }

    fn cache_path(&self, list: &ConfList, a: &Attachment) -> PathBuf {
        self.cache_dir.join("results").join(format!("{}-{}-{}", list.name, a.container_id, a.ifname))
    }

    fn write_cache(&self, list: &ConfList, a: &Attachment, result: &Value) -> Result<(), CniRuntimeError> {
        let path = self.cache_path(list, a);
        let err = |source| CniRuntimeError::Cache { what: "write", path: path.display().to_string(), source };
        let cached = Cached {
            kind: "cniCacheV1".into(),
            container_id: a.container_id.clone(),
            if_name: a.ifname.clone(),
            network_name: list.name.clone(),
            cni_args: a.args.iter().map(|(k, v)| [k.clone(), v.clone()]).collect(),
            capability_args: a.capability_args.clone(),
            result: result.clone(),
        };
        fs::create_dir_all(path.parent().expect("in results/")).map_err(err)?;
        let tmp = path.with_extension("tmp");
        fs::write(&tmp, serde_json::to_vec(&cached).expect("serializes")).map_err(err)?;
        fs::rename(&tmp, &path).map_err(err)
    }

    fn read_cache(&self, list: &ConfList, a: &Attachment) -> Result<Option<Value>, CniRuntimeError> {
        let path = self.cache_path(list, a);
        match fs::read(&path) {
            Ok(bytes) => Ok(serde_json::from_slice::<Cached>(&bytes).ok().map(|c| c.result).filter(|r| !r.is_null())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(CniRuntimeError::Cache { what: "read", path: path.display().to_string(), source: e }),
        }
    }

    /// The executable of plugin type `kind`.
    fn find(&self, kind: &str) -> Result<PathBuf, CniRuntimeError> {
        self.cni_path.iter().map(|d| d.join(kind)).find(|p| p.is_file()).ok_or_else(|| CniRuntimeError::PluginNotFound {
            kind: kind.to_string(),
            path: self.cni_path_var(),
        })
    }

    /// Runs one plugin; its result for ADD (None when it printed nothing).
    fn invoke(&self, cmd: Cmd, list: &ConfList, plugin: &Value, prev: Option<&Value>, a: &Attachment) -> Result<Option<Value>, CniRuntimeError> {
        let kind = plugin.get("type").and_then(Value::as_str).unwrap_or_default().to_string();
        let binary = self.find(&kind)?;
        let conf = plugin_config(list, plugin, prev, &a.capability_args);
        let mut child = Command::new(&binary)
            .env("CNI_COMMAND", cmd.name())
            .env("CNI_CONTAINERID", &a.container_id)
            .env("CNI_NETNS", &a.netns)
            .env("CNI_IFNAME", &a.ifname)
            .env("CNI_ARGS", a.cni_args())
            .env("CNI_PATH", self.cni_path_var())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|source| CniRuntimeError::Spawn { plugin: binary.display().to_string(), source })?;
        if let Some(mut stdin) = child.stdin.take() {
            // A plugin may exit without reading all of it; its exit status says what happened.
            let _ = stdin.write_all(&serde_json::to_vec(&conf).expect("serializes"));
        }
        let out = child.wait_with_output().map_err(|source| CniRuntimeError::Spawn { plugin: binary.display().to_string(), source })?;
        if !out.status.success() {
            return Err(plugin_error(&kind, cmd.name(), out.status, &out.stdout));
        }
        if cmd != Cmd::Add || out.stdout.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        serde_json::from_slice(&out.stdout).map(Some).map_err(|source| CniRuntimeError::BadResult { kind, command: cmd.name(), source })
    }
}

/// The error of a plugin that exited with `status` after printing `stdout`.
fn plugin_error(kind: &str, command: &'static str, status: std::process::ExitStatus, stdout: &[u8]) -> CniRuntimeError {
    #[derive(Deserialize)]
    struct ErrorObject {
        code: u64,
        #[serde(default)]
        msg: String,
        #[serde(default)]
        details: String,
    }
    match serde_json::from_slice::<ErrorObject>(stdout) {
        Ok(e) => CniRuntimeError::Plugin { kind: kind.to_string(), command, code: e.code, msg: e.msg, details: e.details },
        Err(_) => CniRuntimeError::PluginExit {
            kind: kind.to_string(),
            command,
            status,
            stdout: String::from_utf8_lossy(stdout).trim().to_string(),
        },
    }
}

/// The configuration one plugin of `list` gets (see the module contract).
fn plugin_config(list: &ConfList, plugin: &Value, prev: Option<&Value>, capability_args: &Map<String, Value>) -> Value {
    let mut conf = plugin.as_object().cloned().unwrap_or_default();
    conf.insert("name".into(), list.name.clone().into());
    conf.insert("cniVersion".into(), list.cni_version.clone().into());
    if let Some(p) = prev {
        conf.insert("prevResult".into(), p.clone());
    }
    let declared: BTreeMap<&str, bool> = plugin
        .get("capabilities")
        .and_then(Value::as_object)
        .map(|c| c.iter().map(|(k, v)| (k.as_str(), v.as_bool() == Some(true))).collect())
        .unwrap_or_default();
    let runtime: Map<String, Value> =
        capability_args.iter().filter(|(k, _)| declared.get(k.as_str()) == Some(&true)).map(|(k, v)| (k.clone(), v.clone())).collect();
    if runtime.is_empty() {
        conf.remove("runtimeConfig");
    } else {
        conf.insert("runtimeConfig".into(), Value::Object(runtime));
    }
    Value::Object(conf)
}

/// Whether version `v` (`X.Y.Z`) is at least `min`.
fn version_at_least(v: &str, min: (u32, u32, u32)) -> bool {
    let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let got = (parts.next().unwrap_or(0), parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    got >= min
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::os::unix::fs::PermissionsExt;

    /// A plugin that logs its command, environment and configuration and answers as `answer`
    /// says (a shell snippet printing its output and exiting).
    fn fake_plugin(dir: &Path, kind: &str, answer: &str) {
        let script = format!(
            "#!/bin/sh\nconf=$(cat)\nlog={log}\necho \"$CNI_COMMAND {kind}\" >> $log/order\n\
             printf '%s' \"$conf\" > $log/{kind}.$CNI_COMMAND.json\n\
             env | grep '^CNI_' | sort > $log/{kind}.$CNI_COMMAND.env\n{answer}\n",
            log = dir.display()
        );
        let path = dir.join(kind);
        fs::write(&path, script).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn tmp(test: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("psl-cni-runtime-{}-{test}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn read_json(p: PathBuf) -> Value {
        serde_json::from_slice(&fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
    }

    fn list() -> ConfList {
        ConfList::from_value(&json!({"cniVersion": "1.1.0", "name": "net", "plugins": [
            {"type": "first", "capabilities": {"ips": true}, "ipam": {"type": "host-local"}},
            {"type": "second", "capabilities": {"portMappings": true, "ips": false}},
        ]}))
        .unwrap()
    }

    #[test]
    fn add_chains_results_and_gives_each_plugin_only_its_capabilities() {
        let d = tmp("add");
        fake_plugin(&d, "first", r#"[ "$CNI_COMMAND" = ADD ] && echo '{"cniVersion":"1.1.0","interfaces":[{"name":"eth0"}]}'; exit 0"#);
        fake_plugin(&d, "second", r#"[ "$CNI_COMMAND" = ADD ] && echo '{"cniVersion":"1.1.0","interfaces":[{"name":"eth0"}],"ips":[]}'; exit 0"#);
        let rt = Runtime { cni_path: vec![d.join("none"), d.clone()], cache_dir: d.join("cache") };
        let mut a = Attachment::for_pod("c1", Path::new("/run/netns/x"), "eth0", "default", "web");
        a.capability_args.insert("ips".into(), json!(["10.0.0.5/24"]));
        a.capability_args.insert("portMappings".into(), json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]));
        let result = rt.add(&list(), &a).unwrap();
        assert_eq!(result, json!({"cniVersion":"1.1.0","interfaces":[{"name":"eth0"}],"ips":[]}), "the last plugin's result");
        let first = read_json(d.join("first.ADD.json"));
        assert_eq!((first["name"].as_str(), first["cniVersion"].as_str()), (Some("net"), Some("1.1.0")));
        assert_eq!(first["runtimeConfig"], json!({"ips": ["10.0.0.5/24"]}));
        assert_eq!(first["ipam"], json!({"type": "host-local"}), "the plugin's own fields pass unchanged");
        assert!(first.get("prevResult").is_none());
        let second = read_json(d.join("second.ADD.json"));
        assert_eq!(second["prevResult"], json!({"cniVersion":"1.1.0","interfaces":[{"name":"eth0"}]}));
        assert_eq!(second["runtimeConfig"], json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}), "ips: false is not declared");
        let env = fs::read_to_string(d.join("first.ADD.env")).unwrap();
        for line in [
            "CNI_COMMAND=ADD",
            "CNI_CONTAINERID=c1",
            "CNI_NETNS=/run/netns/x",
            "CNI_IFNAME=eth0",
            "CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=c1",
        ] {
            assert!(env.lines().any(|l| l == line), "{line} in {env}");
        }
        assert!(env.contains(&format!("CNI_PATH={}:{}", d.join("none").display(), d.display())), "{env}");
        assert_eq!(rt.read_cache(&list(), &a).unwrap(), Some(result.clone()));
        assert!(d.join("cache/results/net-c1-eth0").is_file(), "libcni's cache layout");

        // CHECK: in order, with the cached result.
        rt.check(&list(), &a).unwrap();
        assert_eq!(read_json(d.join("first.CHECK.json"))["prevResult"], result);
        // DEL: in reverse order, with the cached result; then the cache is gone.
        rt.del(&list(), &a).unwrap();
        assert_eq!(read_json(d.join("first.DEL.json"))["prevResult"], result);
        assert_eq!(read_json(d.join("second.DEL.json"))["prevResult"], result);
        let order = fs::read_to_string(d.join("order")).unwrap();
        assert_eq!(order, "ADD first\nADD second\nCHECK first\nCHECK second\nDEL second\nDEL first\n");
        assert_eq!(rt.read_cache(&list(), &a).unwrap(), None);
        // A second DEL runs without prevResult; CHECK without an ADD cannot run.
        rt.del(&list(), &a).unwrap();
        assert!(read_json(d.join("first.DEL.json")).get("prevResult").is_none());
        assert!(matches!(rt.check(&list(), &a), Err(CniRuntimeError::CannotCheck { .. })));
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn plugin_errors_carry_code_msg_and_details_and_stop_the_chain() {
        let d = tmp("errors");
        fake_plugin(&d, "first", r#"echo '{"cniVersion":"1.1.0","code":50,"msg":"the switch is not running","details":"no answer on /x.sock"}'; exit 1"#);
        fake_plugin(&d, "second", "exit 0");
        let rt = Runtime { cni_path: vec![d.clone()], cache_dir: d.join("cache") };
        let a = Attachment::for_pod("c1", Path::new("/run/netns/x"), "eth0", "default", "web");
        let e = rt.add(&list(), &a).unwrap_err();
        match &e {
            CniRuntimeError::Plugin { kind, command, code, msg, details } => {
                assert_eq!((kind.as_str(), *command, *code), ("first", "ADD", 50));
                assert_eq!((msg.as_str(), details.as_str()), ("the switch is not running", "no answer on /x.sock"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(e.to_string(), "CNI plugin first failed (ADD): code 50: the switch is not running (no answer on /x.sock)");
        assert!(!d.join("second.ADD.json").exists(), "the chain stops");
        assert!(!d.join("cache/results/net-c1-eth0").exists(), "nothing cached");
        fake_plugin(&d, "first", "echo oops; exit 3");
        let e = rt.add(&list(), &a).unwrap_err();
        assert!(matches!(&e, CniRuntimeError::PluginExit { stdout, .. } if stdout == "oops"), "{e:?}");
        let rt = Runtime { cni_path: vec![d.join("none")], cache_dir: d.join("cache") };
        assert!(matches!(rt.add(&list(), &a), Err(CniRuntimeError::PluginNotFound { kind, .. }) if kind == "first"));
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn conflists_are_validated() {
        assert!(ConfList::from_value(&json!({"cniVersion": "1.1.0", "name": "n", "plugins": []})).is_err());
        assert!(ConfList::from_value(&json!({"cniVersion": "1.1.0", "plugins": [{"type": "x"}]})).is_err());
        assert!(ConfList::from_value(&json!({"cniVersion": "1.1.0", "name": "n", "plugins": [{"type": "../x"}]})).is_err());
        assert!(version_at_least("1.1.0", (0, 4, 0)) && version_at_least("0.4.0", (0, 4, 0)) && !version_at_least("0.3.1", (0, 4, 0)));
    }
}
