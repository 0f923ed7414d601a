//! `podswitch cni install` and `podswitch cni uninstall`: put the CNI plugin where container
//! runtimes look for it, and take it away again.
//!
//! A runtime (containerd, CRI-O) reads the first network configuration in its configuration
//! directory (`/etc/cni/net.d`, files sorted by name) and, for every pod sandbox, runs the
//! plugins that configuration lists, in order, each found by its `type` in its binary
//! directory (`/opt/cni/bin`): ADD when the sandbox starts, CHECK now and then, DEL when it
//! goes. [`install`] writes those two files: the plugin binary `BIN_DIR/podswitch-cni` and the
//! `.conflist` `CONF_DIR/CONF_FILE` ([`conflist`] says what is in it).
//!
//! Contract (the DaemonSet's init container and the lab call the same two functions;
//! `InstallOptions::new(plugin)` and `UninstallOptions::default()` give the command's defaults):
//! - `install(&InstallOptions) -> Result<Installed, InstallError>`: checks everything first
//!   (options, the source binary, every chained plugin present in `bin_dir` and speaking
//!   `cni_version`, an existing file at the conflist's path being podswitch's) and writes
//!   nothing when a check fails (missing directories may have been created by then). Then the binary (mode 0755), then the conflist (0644): the
//!   conflist never names a binary that is not there yet. Each is written to a temporary file
//!   in its own directory and renamed over the old one, so a runtime reads the old file or the
//!   new one, never half of one; a file whose content is already the same is not rewritten
//!   (runtimes watching the directory see no change). Missing directories are created.
//!   Installing twice is the same as once.
//! - `uninstall(&UninstallOptions) -> Result<Removed, InstallError>`: removes the conflist
//!   (only if it is podswitch's: first plugin `podswitch-cni`), then the binary; what is
//!   already gone is not an error. [`Removed`] says what was removed.
//! - Every error names the file or directory and what to do ([`InstallError`]).
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use ipnet::Ipv4Net;
use serde::Serialize;
use serde_json::{json, Value};

/// The plugin's file name in the binary directory: the `type` of its entry in the conflist.
pub const PLUGIN_TYPE: &str = "podswitch-cni";
pub const DEFAULT_BIN_DIR: &str = "/opt/cni/bin";
pub const DEFAULT_CONF_DIR: &str = "/etc/cni/net.d";
pub const DEFAULT_CONF_FILE: &str = "10-podswitch.conflist";
pub const DEFAULT_NAME: &str = "podswitch";
/// The configuration version written unless asked otherwise: the newest that runtimes built
/// on libcni before 1.2 (containerd 1.7, Debian 12's libcni) and the reference plugins before
/// 1.2 read. 1.1.0 adds STATUS and GC, for runtimes that speak it.
pub const DEFAULT_CNI_VERSION: &str = "1.0.0";
/// The configuration versions podswitch-cni accepts.
pub const CNI_VERSIONS: [&str; 3] = ["0.4.0", "1.0.0", "1.1.0"];

/// A reference meta plugin chained after podswitch-cni.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Chained {
    /// hostPort: DNAT from the node's ports to the pod (capability `portMappings`).
    Portmap,
    /// Traffic shaping from the pod's bandwidth annotations (capability `bandwidth`).
    Bandwidth,
    /// Sysctls and interface settings in the pod's namespace.
    Tuning,
}

impl Chained {
    /// The plugin's `type` (and binary name).
    pub fn kind(self) -> &'static str {
        match self {
            Chained::Portmap => "portmap",
            Chained::Bandwidth => "bandwidth",
            Chained::Tuning => "tuning",
        }
    }

    /// Its entry in the conflist: the capabilities a runtime fills in for it.
    fn entry(self) -> Value {
        match self {
            Chained::Portmap => json!({ "type": "portmap", "capabilities": { "portMappings": true } }),
            Chained::Bandwidth => json!({ "type": "bandwidth", "capabilities": { "bandwidth": true } }),
            Chained::Tuning => json!({ "type": "tuning" }),
        }
    }
}

/// What to install where (see the module contract).
#[derive(Debug, Clone, PartialEq)]
pub struct InstallOptions {
    pub bin_dir: PathBuf,
    pub conf_dir: PathBuf,
    /// The podswitch-cni binary to copy.
    pub plugin: PathBuf,
    /// The network's `name`.
    pub name: String,
    /// The conflist's file name in `conf_dir` (ends in `.conflist`).
    pub conf_file: String,
    pub cni_version: String,
    /// Chained after podswitch-cni, in this order.
    pub chain: Vec<Chained>,
    /// Written into podswitch-cni's entry only when set.
    pub mtu: Option<u32>,
    pub pod_cidr: Option<Ipv4Net>,
    pub control_socket: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    /// host-local's `dataDir` (its leases; default /var/lib/cni/networks), written into the
    /// `ipam` section only when set (the lab keeps each node's under its run directory).
    pub ipam_data_dir: Option<PathBuf>,
    /// False writes `"waitForSwitch": false` (tests and runtimes without a switch).
    pub wait_for_switch: bool,
}

impl InstallOptions {
    /// The defaults for everything but the plugin binary to copy.
    pub fn new(plugin: impl Into<PathBuf>) -> Self {
        Self {
            bin_dir: DEFAULT_BIN_DIR.into(),
            conf_dir: DEFAULT_CONF_DIR.into(),
            plugin: plugin.into(),
            name: DEFAULT_NAME.into(),
            conf_file: DEFAULT_CONF_FILE.into(),
            cni_version: DEFAULT_CNI_VERSION.into(),
            chain: Vec::new(),
            mtu: None,
            pod_cidr: None,
            control_socket: None,
            data_dir: None,
            ipam_data_dir: None,
            wait_for_switch: true,
        }
    }

    pub fn binary_path(&self) -> PathBuf {
        self.bin_dir.join(PLUGIN_TYPE)
    }

    pub fn conflist_path(&self) -> PathBuf {
        self.conf_dir.join(&self.conf_file)
    }
}

/// What to uninstall: the same directories and file name as the install.
#[derive(Debug, Clone, PartialEq)]
pub struct UninstallOptions {
    pub bin_dir: PathBuf,
    pub conf_dir: PathBuf,
    pub conf_file: String,
}

impl Default for UninstallOptions {
    fn default() -> Self {
        Self { bin_dir: DEFAULT_BIN_DIR.into(), conf_dir: DEFAULT_CONF_DIR.into(), conf_file: DEFAULT_CONF_FILE.into() }
    }
}

/// What [`install`] wrote.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Installed {
    pub binary: PathBuf,
    /// False when the binary there was the same already (not rewritten).
    pub binary_written: bool,
    pub conflist: PathBuf,
    pub conflist_written: bool,
    /// The conflist's content.
    pub config: Value,
    /// Network configurations in `conf_dir` that sort before ours: a runtime uses the first
    /// one, so while these are there it does not use podswitch.
    pub shadowed_by: Vec<PathBuf>,
}

/// What [`uninstall`] removed (None: it was not there).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Removed {
    pub conflist: Option<PathBuf>,
    pub binary: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("invalid network name {0:?}: it must be non-empty and without '/'")]
    Name(String),
    #[error("invalid conflist file name {0:?}: a file name without '/' ending in .conflist (runtimes read .conflist files as plugin lists)")]
    ConfFile(String),
    #[error("CNI version {0:?} is not one podswitch-cni speaks ({versions})", versions = CNI_VERSIONS.join(", "))]
    CniVersion(String),
    #[error("mtu {0} is below IPv4's minimum of 68")]
    Mtu(u32),
    #[error("{0} is chained twice")]
    ChainedTwice(&'static str),
    #[error("cannot find the running executable (to find podswitch-cni next to it): give --plugin PATH")]
    CurrentExe(#[source] io::Error),
    #[error("cannot read the plugin binary {}: build it with `cargo build -p podswitch-cni` or give --plugin PATH", path.display())]
    Plugin { path: PathBuf, source: io::Error },
    #[error("the chained plugin {plugin} is not in {}: install the CNI reference plugins there (Debian: containernetworking-plugins, which puts them in /usr/lib/cni; or a release of github.com/containernetworking/plugins), or leave {plugin} out of --chain", bin_dir.display())]
    ChainedMissing { plugin: &'static str, bin_dir: PathBuf },
    #[error("the chained plugin {} does not answer VERSION: {detail}", path.display())]
    ChainedBroken { path: PathBuf, detail: String },
    #[error("the chained plugin {} speaks CNI {}, not {cni_version}: install newer reference plugins or give --cni-version with one of those", path.display(), supported.join(", "))]
    ChainedVersion { path: PathBuf, cni_version: String, supported: Vec<String> },
    #[error("{} exists and is not podswitch's (its first plugin is not podswitch-cni): left alone", path.display())]
    NotOurs { path: PathBuf },
    #[error("cannot create the directory {}", path.display())]
    Dir { path: PathBuf, source: io::Error },
    #[error("cannot read {}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write {}", path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot remove {}", path.display())]
    Remove { path: PathBuf, source: io::Error },
}

/// The conflist [`install`] writes for `o` (see `BRIEF`/README): podswitch-cni first, with
/// capability `ips` (a runtime's requested address reaches the IPAM plugin) and `host-local`
/// IPAM, its optional fields only when set; then the chained plugins in order.
pub fn conflist(o: &InstallOptions) -> Value {
    let mut ours = json!({ "type": PLUGIN_TYPE, "capabilities": { "ips": true }, "ipam": { "type": "host-local" } });
    if let Some(cidr) = o.pod_cidr {
        ours["podCIDR"] = json!(cidr.trunc().to_string());
    }
    if let Some(mtu) = o.mtu {
        ours["mtu"] = json!(mtu);
    }
    if let Some(s) = &o.control_socket {
        ours["controlSocket"] = json!(s);
    }
    if let Some(d) = &o.data_dir {
        ours["dataDir"] = json!(d);
    }
    if let Some(d) = &o.ipam_data_dir {
        ours["ipam"]["dataDir"] = json!(d);
    }
    if !o.wait_for_switch {
        ours["waitForSwitch"] = json!(false);
    }
    let plugins: Vec<Value> = std::iter::once(ours).chain(o.chain.iter().map(|c| c.entry())).collect();
    json!({ "cniVersion": o.cni_version, "name": o.name, "plugins": plugins })
}

fn validate(o: &InstallOptions) -> Result<(), InstallError> {
    if o.name.is_empty() || o.name.contains('/') {
        return Err(InstallError::Name(o.name.clone()));
    }
    check_conf_file(&o.conf_file)?;
    if !CNI_VERSIONS.contains(&o.cni_version.as_str()) {
        return Err(InstallError::CniVersion(o.cni_version.clone()));
    }
    if let Some(m) = o.mtu.filter(|m| *m < 68) {
        return Err(InstallError::Mtu(m));
    }
    for (i, c) in o.chain.iter().enumerate() {
        if o.chain[..i].contains(c) {
            return Err(InstallError::ChainedTwice(c.kind()));
        }
    }
    Ok(())
}

fn check_conf_file(f: &str) -> Result<(), InstallError> {
    if f.contains('/') || f.starts_with('.') || !f.ends_with(".conflist") || f.len() == ".conflist".len() {
        return Err(InstallError::ConfFile(f.to_string()));
    }
    Ok(())
}

/// A chained plugin is in `bin_dir` and speaks `cni_version` (its VERSION answer).
fn check_chained(c: Chained, bin_dir: &Path, cni_version: &str) -> Result<(), InstallError> {
    let path = bin_dir.join(c.kind());
    if !path.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0) {
        return Err(InstallError::ChainedMissing { plugin: c.kind(), bin_dir: bin_dir.to_path_buf() });
    }
    let broken = |detail: String| InstallError::ChainedBroken { path: path.clone(), detail };
    let mut child = Command::new(&path)
        .env("CNI_COMMAND", "VERSION")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| broken(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A plugin may exit without reading: a closed pipe is not an error.
        let _ = stdin.write_all(json!({ "cniVersion": cni_version }).to_string().as_bytes());
    }
    let out = child.wait_with_output().map_err(|e| broken(e.to_string()))?;
    let answer: Value = serde_json::from_slice(&out.stdout)
        .map_err(|_| broken(format!("{}; standard out {:?}, standard error {:?}", out.status, String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))))?;
    let supported: Vec<String> = answer
        .get("supportedVersions")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(String::from).collect())
        .ok_or_else(|| broken(format!("no supportedVersions in {answer}")))?;
    if !supported.iter().any(|v| v == cni_version) {
        return Err(InstallError::ChainedVersion { path, cni_version: cni_version.to_string(), supported });
    }
    Ok(())
}

/// The file at `path`, None when there is none.
fn read_if_there(path: &Path) -> Result<Option<Vec<u8>>, InstallError> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(InstallError::Read { path: path.to_path_buf(), source }),
    }
}

/// Whether `bytes` is a conflist podswitch wrote (first plugin podswitch-cni).
fn is_ours(bytes: &[u8]) -> bool {
    serde_json::from_slice::<Value>(bytes).is_ok_and(|v| v.pointer("/plugins/0/type").and_then(Value::as_str) == Some(PLUGIN_TYPE))
}

fn ensure_dir(dir: &Path) -> Result<(), InstallError> {
    fs::create_dir_all(dir).map_err(|source| InstallError::Dir { path: dir.to_path_buf(), source })?;
    if !dir.is_dir() {
        return Err(InstallError::Dir { path: dir.to_path_buf(), source: io::Error::from(io::ErrorKind::NotADirectory) });
    }
    Ok(())
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename.
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), InstallError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    // A leading dot and a suffix no runtime reads (.conflist/.conf/.json; a plugin `type`);
    // unique to this call, so that installs running at once (threads, processes) never share one.
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let tmp = dir.join(format!(".{name}.podswitch-tmp-{}-{}", std::process::id(), CALLS.fetch_add(1, Ordering::Relaxed)));
    let write = || -> io::Result<()> {
        let mut f = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp)?;
        f.write_all(bytes)?;
        // The umask may have taken bits off the mode asked at creation.
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        // The rename itself, durable.
        fs::File::open(dir)?.sync_all()
    };
    write().map_err(|source| {
        let _ = fs::remove_file(&tmp);
        InstallError::Write { path: path.to_path_buf(), source }
    })
}

/// The network configuration files (what runtimes read) in `dir` that sort before `ours`.
fn configs_before(dir: &Path, ours: &str) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else { return Vec::new() };
    let mut before: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.') && [".conflist", ".conf", ".json"].iter().any(|x| n.ends_with(x)) && n.as_str() < ours)
        .map(|n| dir.join(n))
        .collect();
    before.sort();
    before
}

/// Installs the binary and the conflist (see the module contract).
pub fn install(o: &InstallOptions) -> Result<Installed, InstallError> {
    validate(o)?;
    let binary = read_if_there(&o.plugin)?
        .ok_or_else(|| InstallError::Plugin { path: o.plugin.clone(), source: io::Error::from(io::ErrorKind::NotFound) })?;
    for c in &o.chain {
        check_chained(*c, &o.bin_dir, &o.cni_version)?;
    }
    let config = conflist(o);
    let mut text = serde_json::to_string_pretty(&config).expect("JSON values serialize");
    text.push('\n');
    let (bin_path, conf_path) = (o.binary_path(), o.conflist_path());
    ensure_dir(&o.bin_dir)?;
    ensure_dir(&o.conf_dir)?;
    let old_conf = read_if_there(&conf_path)?;
    if old_conf.as_deref().is_some_and(|b| !is_ours(b)) {
        return Err(InstallError::NotOurs { path: conf_path });
    }
    // Read the old binary only when it may be the same (debug builds are hundreds of MB).
    let same_size = bin_path.metadata().is_ok_and(|m| m.len() == binary.len() as u64);
    let old_bin = if same_size { read_if_there(&bin_path)? } else { None };
    let binary_written = old_bin.as_deref() != Some(&binary[..])
        || !bin_path.metadata().is_ok_and(|m| m.permissions().mode() & 0o777 == 0o755);
    if binary_written {
        write_atomic(&bin_path, &binary, 0o755)?;
    }
    let conflist_written = old_conf.as_deref() != Some(text.as_bytes());
    if conflist_written {
        write_atomic(&conf_path, text.as_bytes(), 0o644)?;
    }
    Ok(Installed {
        binary: bin_path,
        binary_written,
        conflist: conf_path,
        conflist_written,
        config,
        shadowed_by: configs_before(&o.conf_dir, &o.conf_file),
    })
}

fn remove_if_there(path: &Path) -> Result<Option<PathBuf>, InstallError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(Some(path.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(InstallError::Remove { path: path.to_path_buf(), source }),
    }
}

/// Removes what [`install`] wrote (see the module contract).
pub fn uninstall(o: &UninstallOptions) -> Result<Removed, InstallError> {
    check_conf_file(&o.conf_file)?;
    let conf_path = o.conf_dir.join(&o.conf_file);
    if read_if_there(&conf_path)?.is_some_and(|b| !is_ours(&b)) {
        return Err(InstallError::NotOurs { path: conf_path });
    }
    let conflist = remove_if_there(&conf_path)?;
    let binary = remove_if_there(&o.bin_dir.join(PLUGIN_TYPE))?;
    Ok(Removed { conflist, binary })
}

/// `podswitch cni`: install or remove the CNI plugin for the node's container runtime.
#[derive(Debug, clap::Args)]
pub struct CniArgs {
    #[command(subcommand)]
    pub cmd: CniCmd,
}

#[derive(Debug, clap::Subcommand)]
pub enum CniCmd {
    Install(InstallArgs),
    Uninstall(UninstallArgs),
}

/// Write the podswitch-cni binary and its .conflist where the container runtime looks.
///
/// A container runtime (containerd, CRI-O) reads the first network configuration in its
/// configuration directory (files sorted by name) and, for every pod sandbox, runs the plugins
/// that .conflist lists, in order, each found by its `type` in the binary directory: ADD when
/// the sandbox starts (podswitch-cni makes the pod's interface and address and waits for the
/// switch to attach it; the chained plugins then add hostPorts, shaping, sysctls), CHECK now
/// and then, DEL when it goes. This writes BIN_DIR/podswitch-cni (mode 0755) and
/// CONF_DIR/CONF_FILE, each atomically (a runtime never reads half a file), binary first;
/// running it again changes nothing. The DaemonSet's init container runs it with the host's
/// /opt/cni/bin and /etc/cni/net.d.
#[derive(Debug, clap::Args)]
pub struct InstallArgs {
    /// Where the runtime looks for plugin binaries (its CNI bin dir).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_BIN_DIR)]
    pub bin_dir: PathBuf,
    /// Where the runtime reads network configurations (its CNI conf dir).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_CONF_DIR)]
    pub conf_dir: PathBuf,
    /// The podswitch-cni binary to install [default: podswitch-cni next to this program].
    #[arg(long, value_name = "PATH")]
    pub plugin: Option<PathBuf>,
    /// The network's name (runtimes and host-local key their state by it).
    #[arg(long, default_value = DEFAULT_NAME)]
    pub name: String,
    /// The .conflist's file name in --conf-dir (runtimes use the first in name order).
    #[arg(long, value_name = "FILE", default_value = DEFAULT_CONF_FILE)]
    pub conf_file: String,
    /// Meta plugins to chain after podswitch-cni, in order; their binaries must already be in
    /// --bin-dir (the CNI reference plugins).
    #[arg(long, value_enum, value_name = "LIST", value_delimiter = ',')]
    pub chain: Vec<Chained>,
    /// The configuration's cniVersion. 1.1.0 adds STATUS and GC, but runtimes built on libcni
    /// before 1.2 (containerd 1.7, for one) fail on it ("unsupported CNI result version"), and
    /// older reference plugins (Debian 12's) speak at most 1.0.0: give 1.1.0 only where the
    /// runtime and the chained plugins speak it.
    #[arg(long, value_name = "VERSION", default_value = DEFAULT_CNI_VERSION, value_parser = clap::builder::PossibleValuesParser::new(CNI_VERSIONS))]
    pub cni_version: String,
    /// The pods' MTU (in vxlan mode the uplink's less 50) [default: the plugin's].
    #[arg(long)]
    pub mtu: Option<u32>,
    /// The node's pod CIDR, host-local's range [default: the plugin's].
    #[arg(long, value_name = "CIDR")]
    pub pod_cidr: Option<Ipv4Net>,
    /// The switch's control socket [default: the plugin's, /run/podswitch/podswitch.sock].
    #[arg(long, value_name = "PATH")]
    pub control_socket: Option<PathBuf>,
    /// Where the plugin records its attachments [default: the plugin's].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Where host-local keeps its leases [default: host-local's, /var/lib/cni/networks].
    #[arg(long, value_name = "DIR")]
    pub ipam_data_dir: Option<PathBuf>,
    /// ADD does not wait for the switch to attach the port (for tests and runtimes without a
    /// switch; a real node wants the wait).
    #[arg(long)]
    pub no_wait_for_switch: bool,
    /// Print one JSON object: what was written.
    #[arg(long)]
    pub json: bool,
}

/// Remove the .conflist and the podswitch-cni binary that `cni install` wrote.
///
/// Give the same --bin-dir, --conf-dir and --conf-file as to install. The conflist goes first
/// (so a runtime stops using podswitch before the binary goes), and only if it is podswitch's;
/// what is already gone is not an error.
#[derive(Debug, clap::Args)]
pub struct UninstallArgs {
    /// Where install put podswitch-cni.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_BIN_DIR)]
    pub bin_dir: PathBuf,
    /// Where install put the .conflist.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_CONF_DIR)]
    pub conf_dir: PathBuf,
    /// The .conflist's file name in --conf-dir.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_CONF_FILE)]
    pub conf_file: String,
    /// Print one JSON object: what was removed.
    #[arg(long)]
    pub json: bool,
}

impl InstallArgs {
    /// The options these flags give; the default plugin is podswitch-cni next to this program.
    pub fn options(&self) -> Result<InstallOptions, InstallError> {
        let plugin = match &self.plugin {
            Some(p) => p.clone(),
            None => {
                let exe = std::env::current_exe().map_err(InstallError::CurrentExe)?;
                exe.parent().unwrap_or(Path::new("/")).join(PLUGIN_TYPE)
            }
        };
        Ok(InstallOptions {
            bin_dir: self.bin_dir.clone(),
            conf_dir: self.conf_dir.clone(),
            plugin,
            name: self.name.clone(),
            conf_file: self.conf_file.clone(),
            cni_version: self.cni_version.clone(),
            chain: self.chain.clone(),
            mtu: self.mtu,
            pod_cidr: self.pod_cidr,
            control_socket: self.control_socket.clone(),
            data_dir: self.data_dir.clone(),
            ipam_data_dir: self.ipam_data_dir.clone(),
            wait_for_switch: !self.no_wait_for_switch,
        })
    }
}

impl UninstallArgs {
    pub fn options(&self) -> UninstallOptions {
        UninstallOptions { bin_dir: self.bin_dir.clone(), conf_dir: self.conf_dir.clone(), conf_file: self.conf_file.clone() }
    }
}

/// Runs `podswitch cni ...`; the exit code.
pub fn main(args: CniArgs) -> anyhow::Result<i32> {
    match args.cmd {
        CniCmd::Install(a) => {
            let done = install(&a.options()?)?;
            if a.json {
                println!("{}", serde_json::to_string(&done)?);
            } else {
                let said = |w: bool| if w { "wrote" } else { "unchanged" };
                println!("{} {}", said(done.binary_written), done.binary.display());
                println!("{} {}", said(done.conflist_written), done.conflist.display());
            }
            for p in &done.shadowed_by {
                eprintln!("podswitch: warning: {} sorts before {}: a runtime uses the first network configuration, so not podswitch's while it is there", p.display(), done.conflist.display());
            }
            Ok(0)
        }
        CniCmd::Uninstall(a) => {
            let done = uninstall(&a.options())?;
            if a.json {
                println!("{}", serde_json::to_string(&done)?);
            } else {
                for (what, p) in [(&done.conflist, a.conf_dir.join(&a.conf_file)), (&done.binary, a.bin_dir.join(PLUGIN_TYPE))] {
                    println!("{} {}", if what.is_some() { "removed" } else { "already gone:" }, p.display());
                }
            }
            Ok(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// A scratch directory, removed on drop (also when the test fails).
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Self {
            let d = std::env::temp_dir().join(format!("podswitch-cni-install-{}-{tag}", std::process::id()));
            let _ = fs::remove_dir_all(&d);
            fs::create_dir_all(&d).unwrap();
            Self(d)
        }

        /// Options installing a fake plugin binary from the scratch directory into bin/ and conf/.
        fn options(&self) -> InstallOptions {
            let plugin = self.0.join("build/podswitch-cni");
            fs::create_dir_all(plugin.parent().unwrap()).unwrap();
            fs::write(&plugin, b"#!/bin/sh\necho the plugin\n").unwrap();
            InstallOptions { bin_dir: self.0.join("bin"), conf_dir: self.0.join("conf"), ..InstallOptions::new(plugin) }
        }

        /// A fake chained plugin in `dir` whose VERSION lists `versions`.
        fn chained(&self, dir: &Path, kind: &str, versions: &str) {
            fs::create_dir_all(dir).unwrap();
            let p = dir.join(kind);
            fs::write(&p, format!("#!/bin/sh\ncat >/dev/null\necho '{{\"cniVersion\":\"1.0.0\",\"supportedVersions\":[{versions}]}}'\n")).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        }

        /// Every file under the scratch directory's bin/ and conf/ (what an install wrote).
        fn installed(&self) -> Vec<String> {
            let mut all = Vec::new();
            for d in ["bin", "conf"] {
                if let Ok(rd) = fs::read_dir(self.0.join(d)) {
                    all.extend(rd.map(|e| format!("{d}/{}", e.unwrap().file_name().to_string_lossy())));
                }
            }
            all.sort();
            all
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: CniCmd,
    }

    fn install_args(args: &[&str]) -> InstallArgs {
        match Cli::try_parse_from(std::iter::once("cni").chain(std::iter::once("install")).chain(args.iter().copied())).unwrap().cmd {
            CniCmd::Install(a) => a,
            CniCmd::Uninstall(_) => unreachable!(),
        }
    }

    #[test]
    fn the_default_conflist_is_podswitch_cni_alone_with_host_local_and_the_ips_capability() {
        let o = InstallOptions::new("/x/podswitch-cni");
        assert_eq!(
            conflist(&o),
            json!({ "cniVersion": "1.0.0", "name": "podswitch", "plugins": [
                { "type": "podswitch-cni", "capabilities": { "ips": true }, "ipam": { "type": "host-local" } }
            ]})
        );
        assert_eq!(o.binary_path(), Path::new("/opt/cni/bin/podswitch-cni"));
        assert_eq!(o.conflist_path(), Path::new("/etc/cni/net.d/10-podswitch.conflist"));
    }

    #[test]
    fn every_flag_goes_into_the_conflist_and_the_chain_keeps_its_order() {
        let a = install_args(&[
            "--plugin", "/build/podswitch-cni", "--bin-dir", "/b", "--conf-dir", "/c", "--name", "net1",
            "--conf-file", "20-x.conflist", "--chain", "tuning,portmap", "--chain", "bandwidth", "--cni-version", "1.0.0",
            "--mtu", "1450", "--pod-cidr", "10.244.1.7/24", "--control-socket", "/run/s.sock", "--data-dir", "/var/lib/d",
            "--no-wait-for-switch",
        ]);
        let o = a.options().unwrap();
        assert_eq!((o.bin_dir.as_path(), o.conf_dir.as_path(), o.plugin.as_path()), (Path::new("/b"), Path::new("/c"), Path::new("/build/podswitch-cni")));
        assert_eq!(o.conflist_path(), Path::new("/c/20-x.conflist"));
        assert_eq!(
            conflist(&o),
            json!({ "cniVersion": "1.0.0", "name": "net1", "plugins": [
                { "type": "podswitch-cni", "capabilities": { "ips": true }, "ipam": { "type": "host-local" },
                  "podCIDR": "10.244.1.0/24", "mtu": 1450, "controlSocket": "/run/s.sock", "dataDir": "/var/lib/d", "waitForSwitch": false },
                { "type": "tuning" },
                { "type": "portmap", "capabilities": { "portMappings": true } },
                { "type": "bandwidth", "capabilities": { "bandwidth": true } }
            ]})
        );
        // Each optional field alone appears alone.
        let only_mtu = install_args(&["--plugin", "/p", "--mtu", "9000"]).options().unwrap();
        assert_eq!(conflist(&only_mtu)["plugins"][0], json!({ "type": "podswitch-cni", "capabilities": { "ips": true }, "ipam": { "type": "host-local" }, "mtu": 9000 }));
        let only_cidr = install_args(&["--plugin", "/p", "--pod-cidr", "10.1.0.0/16"]).options().unwrap();
        assert_eq!(conflist(&only_cidr)["plugins"][0]["podCIDR"], json!("10.1.0.0/16"));
        assert_eq!(conflist(&only_cidr)["plugins"][0].as_object().unwrap().len(), 4);
        let only_leases = install_args(&["--plugin", "/p", "--ipam-data-dir", "/run/leases"]).options().unwrap();
        assert_eq!(conflist(&only_leases)["plugins"][0]["ipam"], json!({ "type": "host-local", "dataDir": "/run/leases" }));
        assert!(Cli::try_parse_from(["cni", "install", "--chain", "flannel"]).is_err(), "only the reference meta plugins chain");
        assert!(Cli::try_parse_from(["cni", "install", "--cni-version", "0.3.1"]).is_err(), "only the versions podswitch-cni speaks");
    }

    #[test]
    fn the_default_plugin_is_podswitch_cni_next_to_the_running_program() {
        let o = install_args(&[]).options().unwrap();
        assert_eq!(o, InstallOptions::new(std::env::current_exe().unwrap().parent().unwrap().join("podswitch-cni")));
    }

    #[test]
    fn install_writes_the_binary_and_the_conflist_and_twice_is_once() {
        let s = Scratch::new("twice");
        let o = InstallOptions { mtu: Some(1450), ..s.options() };
        let first = install(&o).unwrap();
        assert!(first.binary_written && first.conflist_written);
        assert_eq!(first.binary, s.0.join("bin/podswitch-cni"));
        assert_eq!(fs::read(&first.binary).unwrap(), fs::read(&o.plugin).unwrap());
        assert_eq!(fs::metadata(&first.binary).unwrap().permissions().mode() & 0o7777, 0o755);
        let written: Value = serde_json::from_slice(&fs::read(&first.conflist).unwrap()).unwrap();
        assert_eq!(written, conflist(&o));
        assert_eq!(first.config, written);
        assert!(first.shadowed_by.is_empty());
        assert_eq!(s.installed(), ["bin/podswitch-cni", "conf/10-podswitch.conflist"], "no temporary file left");

        let second = install(&o).unwrap();
        assert!(!second.binary_written && !second.conflist_written, "{second:?}");
        assert_eq!(second.config, first.config);

        // A new binary or new options are written again, in place.
        fs::write(&o.plugin, b"#!/bin/sh\necho a newer plugin\n").unwrap();
        let o2 = InstallOptions { mtu: Some(1400), ..o.clone() };
        let third = install(&o2).unwrap();
        assert!(third.binary_written && third.conflist_written);
        assert_eq!(fs::read(&third.binary).unwrap(), b"#!/bin/sh\necho a newer plugin\n");
        assert_eq!(third.config["plugins"][0]["mtu"], json!(1400));
        assert_eq!(s.installed(), ["bin/podswitch-cni", "conf/10-podswitch.conflist"]);
    }

    #[test]
    fn chained_plugins_must_be_in_the_bin_dir_and_speak_the_version() {
        let s = Scratch::new("chain");
        let o = InstallOptions { chain: vec![Chained::Bandwidth, Chained::Tuning], ..s.options() };
        s.chained(&o.bin_dir, "bandwidth", r#""0.4.0","1.0.0","1.1.0""#);
        let e = install(&o).unwrap_err();
        assert!(matches!(e, InstallError::ChainedMissing { plugin: "tuning", .. }), "{e:?}");
        let msg = e.to_string();
        assert!(msg.contains("tuning is not in") && msg.contains(&o.bin_dir.display().to_string()) && msg.contains("containernetworking-plugins"), "{msg}");
        assert_eq!(s.installed(), ["bin/bandwidth"], "nothing written");

        // Debian 12's reference plugins speak up to 1.0.0: a 1.1.0 configuration is refused.
        s.chained(&o.bin_dir, "tuning", r#""0.3.1","0.4.0","1.0.0""#);
        let e = install(&InstallOptions { cni_version: "1.1.0".into(), ..o.clone() }).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, InstallError::ChainedVersion { .. }), "{e:?}");
        assert!(msg.contains("tuning speaks CNI 0.3.1, 0.4.0, 1.0.0, not 1.1.0") && msg.contains("--cni-version"), "{msg}");
        assert_eq!(s.installed(), ["bin/bandwidth", "bin/tuning"], "nothing written");

        let done = install(&o).unwrap();
        assert_eq!(done.config["cniVersion"], "1.0.0", "the default version");
        assert_eq!(done.config["plugins"].as_array().unwrap().iter().map(|p| p["type"].as_str().unwrap()).collect::<Vec<_>>(), ["podswitch-cni", "bandwidth", "tuning"]);

        // A file that is not a plugin.
        fs::write(o.bin_dir.join("portmap"), b"#!/bin/sh\necho nonsense\n").unwrap();
        fs::set_permissions(o.bin_dir.join("portmap"), fs::Permissions::from_mode(0o755)).unwrap();
        let e = install(&InstallOptions { chain: vec![Chained::Portmap], ..o }).unwrap_err();
        assert!(matches!(e, InstallError::ChainedBroken { .. }) && e.to_string().contains("does not answer VERSION"), "{e}");
    }

    #[test]
    fn invalid_options_are_refused_before_anything_is_written() {
        let s = Scratch::new("invalid");
        let o = s.options();
        let cases: Vec<(InstallOptions, &str)> = vec![
            (InstallOptions { name: String::new(), ..o.clone() }, "invalid network name"),
            (InstallOptions { conf_file: "10-podswitch.conf".into(), ..o.clone() }, "ending in .conflist"),
            (InstallOptions { conf_file: "../10-podswitch.conflist".into(), ..o.clone() }, "without '/'"),
            (InstallOptions { cni_version: "0.3.1".into(), ..o.clone() }, "CNI version \"0.3.1\" is not one podswitch-cni speaks (0.4.0, 1.0.0, 1.1.0)"),
            (InstallOptions { mtu: Some(60), ..o.clone() }, "mtu 60 is below"),
            (InstallOptions { chain: vec![Chained::Tuning, Chained::Tuning], ..o.clone() }, "tuning is chained twice"),
            (InstallOptions { plugin: s.0.join("no-such-binary"), ..o.clone() }, "cannot read the plugin binary"),
        ];
        for (bad, says) in cases {
            let msg = install(&bad).unwrap_err().to_string();
            assert!(msg.contains(says), "{bad:?}: {msg}");
        }
        assert!(s.installed().is_empty(), "{:?}", s.installed());
    }

    #[test]
    fn a_directory_that_cannot_be_made_is_a_clear_error() {
        let s = Scratch::new("dirs");
        fs::write(s.0.join("a-file"), b"").unwrap();
        let o = InstallOptions { conf_dir: s.0.join("a-file/net.d"), ..s.options() };
        let e = install(&o).unwrap_err();
        assert!(matches!(e, InstallError::Dir { .. }), "{e:?}");
        assert_eq!(e.to_string(), format!("cannot create the directory {}", s.0.join("a-file/net.d").display()));
    }

    #[test]
    fn a_conflist_path_that_cannot_be_read_is_a_clear_error() {
        let s = Scratch::new("unreadable");
        let o = s.options();
        fs::create_dir_all(o.conflist_path()).unwrap();
        let e = install(&o).unwrap_err();
        assert_eq!(e.to_string(), format!("cannot read {}", o.conflist_path().display()));
        assert!(!o.binary_path().exists(), "nothing written");
        let u = UninstallOptions { bin_dir: o.bin_dir.clone(), conf_dir: o.conf_dir.clone(), conf_file: o.conf_file.clone() };
        assert!(matches!(uninstall(&u), Err(InstallError::Read { .. })));
    }

    #[test]
    fn a_conflist_that_is_not_podswitchs_is_left_alone() {
        let s = Scratch::new("foreign");
        let o = s.options();
        fs::create_dir_all(&o.conf_dir).unwrap();
        let foreign = br#"{"cniVersion":"1.0.0","name":"other","plugins":[{"type":"bridge"}]}"#;
        fs::write(o.conflist_path(), foreign).unwrap();
        let e = install(&o).unwrap_err();
        assert!(e.to_string().ends_with("is not podswitch's (its first plugin is not podswitch-cni): left alone"), "{e}");
        let u = UninstallOptions { bin_dir: o.bin_dir.clone(), conf_dir: o.conf_dir.clone(), conf_file: o.conf_file.clone() };
        assert!(matches!(uninstall(&u), Err(InstallError::NotOurs { .. })));
        assert_eq!(fs::read(o.conflist_path()).unwrap(), foreign);
        assert!(!o.binary_path().exists());
    }

    #[test]
    fn configurations_sorting_first_are_reported() {
        let s = Scratch::new("shadow");
        let o = s.options();
        fs::create_dir_all(&o.conf_dir).unwrap();
        for f in ["05-other.conflist", "09-x.conf", "99-later.conflist", "README"] {
            fs::write(o.conf_dir.join(f), b"{}").unwrap();
        }
        let done = install(&o).unwrap();
        assert_eq!(done.shadowed_by, [o.conf_dir.join("05-other.conflist"), o.conf_dir.join("09-x.conf")]);
    }

    #[test]
    fn uninstall_removes_what_install_wrote_and_then_finds_it_gone() {
        let s = Scratch::new("uninstall");
        let o = s.options();
        s.chained(&o.bin_dir, "tuning", r#""1.0.0","1.1.0""#);
        install(&InstallOptions { chain: vec![Chained::Tuning], ..o.clone() }).unwrap();
        let u = UninstallOptions { bin_dir: o.bin_dir.clone(), conf_dir: o.conf_dir.clone(), conf_file: o.conf_file.clone() };
        assert_eq!(uninstall(&u).unwrap(), Removed { conflist: Some(o.conflist_path()), binary: Some(o.binary_path()) });
        assert_eq!(s.installed(), ["bin/tuning"], "the chained plugin stays");
        assert_eq!(uninstall(&u).unwrap(), Removed { conflist: None, binary: None });
        let nowhere = UninstallOptions { bin_dir: s.0.join("none/bin"), conf_dir: s.0.join("none/conf"), ..u };
        assert_eq!(uninstall(&nowhere).unwrap(), Removed { conflist: None, binary: None });
        assert_eq!(serde_json::to_value(uninstall(&nowhere).unwrap()).unwrap(), json!({ "conflist": null, "binary": null }));
    }
}
