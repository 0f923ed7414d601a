//! The CNI plugin's attachment records: how `podswitch-cni` tells the switch which pod it wired,
//! and what GC works from.
//!
//! Contract:
//! - ADD writes one JSON file per attachment, `DIR/CONTAINERID:IFNAME.json` (neither part can
//!   hold a `:`), atomically (a temporary file renamed), before it waits for the switch: the
//!   record is what the switch wires the pod's port from, so the port exists before the Pod
//!   object has `status.podIP` (kubelet writes that only after ADD returned). A failed ADD and
//!   DEL remove it; a record missing is not an error for DEL.
//! - The switch (`podswitch run --cni-data-dir DIR`) reads [`pod_addresses`] of `DIR` and of
//!   its subdirectories one level down (the plugin's default data directory is
//!   `DIR/NETWORKNAME`), then keeps them in a [`RecordFiles`] and reads again only the files
//!   that changed (inotify names them), so that one ADD costs the switch one file whatever the
//!   number of pods.
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// Where the plugin records its attachments, `DEFAULT_DATA_DIR/NETWORKNAME`, unless its
/// configuration's `dataDir` says otherwise; the switch's default `--cni-data-dir`.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/podswitch";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
    pub netns: String,
    pub host_interface: String,
    /// `namespace/name` of the Pod.
    pub pod: String,
    /// The pod's address with its prefix length (`10.244.1.5/32`).
    pub address: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("cannot write the attachment record {path}")]
    Write { path: String, source: io::Error },
    #[error("cannot read the attachment records in {path}")]
    List { path: String, source: io::Error },
}

fn path(dir: &Path, container_id: &str, ifname: &str) -> PathBuf {
    dir.join(format!("{container_id}:{ifname}.json"))
}

pub fn write(dir: &Path, r: &Record) -> Result<(), RecordError> {
    let p = path(dir, &r.container_id, &r.ifname);
    let err = |source| RecordError::Write { path: p.display().to_string(), source };
    fs::create_dir_all(dir).map_err(err)?;
    let tmp = p.with_extension("tmp");
    fs::write(&tmp, serde_json::to_vec(r).expect("records serialize")).map_err(err)?;
    fs::rename(&tmp, &p).map_err(err)
}

/// Removes the record of an attachment, if there is one.
pub fn remove(dir: &Path, container_id: &str, ifname: &str) {
    let _ = fs::remove_file(path(dir, container_id, ifname));
}

/// Every readable record in `dir` (none when `dir` does not exist).
pub fn list(dir: &Path) -> Result<Vec<Record>, RecordError> {
    Ok(read_dir(dir)?.into_iter().filter_map(|(_, r, _)| r.ok()).collect())
}

/// The `.json` files of `dir`: path, record or why it cannot be read, modification time.
type Entry = (PathBuf, Result<Record, String>, SystemTime);

fn is_record_file(p: &Path) -> bool {
    p.extension().is_some_and(|x| x == "json")
}

/// The record in file `p`, or None when there is no such file (any more).
fn read_entry(p: &Path) -> Option<(Result<Record, String>, SystemTime)> {
    let modified = fs::metadata(p).and_then(|m| m.modified()).ok()?;
    let record = fs::read(p).map_err(|e| e.to_string()).and_then(|b| serde_json::from_slice::<Record>(&b).map_err(|e| e.to_string()));
    Some((record, modified))
}

fn read_dir(dir: &Path) -> Result<Vec<Entry>, RecordError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(RecordError::List { path: dir.display().to_string(), source }),
    };
    Ok(entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| is_record_file(p))
        .filter_map(|p| read_entry(&p).map(|(record, modified)| (p, record, modified)))
        .collect())
}

/// What the switch reads of the records: pod key → address (the host interface is the
/// pod's by `naming::pod_interface`), and sentences about the records it cannot use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodAddresses {
    pub pods: BTreeMap<String, Ipv4Addr>,
    pub problems: Vec<String>,
}

/// The records in `dir` and its subdirectories one level down (see the module contract). Of
/// two records for one pod (a sandbox not yet deleted and its successor) the newer counts.
pub fn pod_addresses(dir: &Path) -> Result<PodAddresses, RecordError> {
    Ok(RecordFiles::read(dir)?.addresses())
}

/// The record files of a directory and its subdirectories one level down, as last read.
#[derive(Debug, Clone)]
pub struct RecordFiles {
    dir: PathBuf,
    files: BTreeMap<PathBuf, (Result<Record, String>, SystemTime)>,
}

impl RecordFiles {
    /// Reads every record of `dir` (see [`pod_addresses`]).
    pub fn read(dir: &Path) -> Result<Self, RecordError> {
        let mut files = read_dir(dir)?;
        let subdirs = match fs::read_dir(dir) {
            Ok(e) => e.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.is_dir()).collect(),
            Err(_) => Vec::new(),
        };
        for sub in subdirs {
            files.extend(read_dir(&sub)?);
        }
        Ok(Self { dir: dir.to_path_buf(), files: files.into_iter().map(|(p, r, m)| (p, (r, m))).collect() })
    }

    /// Reads again what `changed` names (paths an inotify event gave): a record file of the
    /// directory or of a subdirectory one level down is read again (or forgotten when it is
    /// gone), a subdirectory is read again whole; other paths are ignored.
    pub fn refresh<'a>(&mut self, changed: impl IntoIterator<Item = &'a Path>) -> Result<(), RecordError> {
        for p in changed {
            let Some(parent) = p.parent() else { continue };
            let in_dir = parent == self.dir;
            let in_subdir = parent.parent() == Some(self.dir.as_path());
            if in_dir && p.is_dir() || in_dir && !is_record_file(p) && !p.exists() {
                // A subdirectory came, changed or went: its records as they are now.
                self.files.retain(|f, _| f.parent() != Some(p));
                self.files.extend(read_dir(p)?.into_iter().map(|(f, r, m)| (f, (r, m))));
            } else if (in_dir || in_subdir) && is_record_file(p) {
                match read_entry(p) {
                    Some(e) => self.files.insert(p.to_path_buf(), e),
                    None => self.files.remove(p),
                };
            }
        }
        Ok(())
    }

    /// Pod key → address, newer records first, and the records that cannot be used.
    pub fn addresses(&self) -> PodAddresses {
        let mut files: Vec<_> = self.files.iter().collect();
        files.sort_by_key(|(_, (_, modified))| *modified);
        let mut out = PodAddresses::default();
        for (path, (record, _)) in files {
            let r = match record {
                Ok(r) => r,
                Err(e) => {
                    out.problems.push(format!("CNI attachment record {} cannot be read: {e}", path.display()));
                    continue;
                }
            };
            let ip = r.address.split_once('/').map_or(r.address.as_str(), |(a, _)| a).parse::<Ipv4Addr>();
            let (Ok(ip), Some((ns, name))) = (ip, r.pod.split_once('/')) else {
                out.problems.push(format!("CNI attachment record {}: pod {:?} address {:?} is not namespace/name and an IPv4 address", path.display(), r.pod, r.address));
                continue;
            };
            if ns.is_empty() || name.is_empty() {
                out.problems.push(format!("CNI attachment record {}: pod {:?} is not namespace/name", path.display(), r.pod));
                continue;
            }
            out.pods.insert(r.pod.clone(), ip);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(pod: &str, address: &str) -> Record {
        Record {
            container_id: "c-1.x".into(),
            ifname: "eth0".into(),
            netns: "/run/netns/a".into(),
            host_interface: "ps0123".into(),
            pod: pod.into(),
            address: address.into(),
        }
    }

    #[test]
    fn records_are_written_listed_and_removed() {
        let dir = std::env::temp_dir().join(format!("podswitch-cni-records-{}", std::process::id()));
        let r = record("default/a", "10.0.0.2/32");
        assert!(list(&dir).unwrap().is_empty());
        write(&dir, &r).unwrap();
        write(&dir, &Record { ifname: "net1".into(), ..r.clone() }).unwrap();
        let mut all = list(&dir).unwrap();
        all.sort_by(|a, b| a.ifname.cmp(&b.ifname));
        assert_eq!(all, [r.clone(), Record { ifname: "net1".into(), ..r.clone() }]);
        remove(&dir, "c-1.x", "eth0");
        remove(&dir, "c-1.x", "eth0");
        assert_eq!(list(&dir).unwrap().len(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_switch_reads_pod_addresses_from_the_directory_and_its_subdirectories() {
        let dir = std::env::temp_dir().join(format!("podswitch-cni-addresses-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        assert_eq!(pod_addresses(&dir).unwrap(), PodAddresses::default(), "no directory: no pods");
        write(&dir.join("podswitch"), &record("default/a", "10.244.0.5/32")).unwrap();
        write(&dir, &Record { container_id: "c-2".into(), ..record("kube-system/b", "10.244.0.6") }).unwrap();
        write(&dir, &Record { container_id: "c-3".into(), ..record("nonsense", "10.244.0.7/32") }).unwrap();
        fs::write(dir.join("broken.json"), "{").unwrap();
        let got = pod_addresses(&dir).unwrap();
        assert_eq!(got.pods.keys().collect::<Vec<_>>(), ["default/a", "kube-system/b"]);
        assert_eq!(got.pods["default/a"], Ipv4Addr::new(10, 244, 0, 5));
        assert_eq!(got.pods["kube-system/b"], Ipv4Addr::new(10, 244, 0, 6));
        assert_eq!(got.problems.len(), 2, "{:?}", got.problems);
        // A newer sandbox of the same pod wins.
        std::thread::sleep(std::time::Duration::from_millis(20));
        write(&dir, &Record { container_id: "c-9".into(), ..record("default/a", "10.244.0.9/32") }).unwrap();
        assert_eq!(pod_addresses(&dir).unwrap().pods["default/a"], Ipv4Addr::new(10, 244, 0, 9));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refreshing_the_changed_paths_gives_what_a_full_read_gives() {
        let dir = std::env::temp_dir().join(format!("podswitch-cni-refresh-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        write(&dir, &record("default/a", "10.244.0.5/32")).unwrap();
        let mut kept = RecordFiles::read(&dir).unwrap();
        let sub = dir.join("podswitch");
        // A record added, one in a new subdirectory, one removed, a stray file.
        write(&dir, &Record { container_id: "c-2".into(), ..record("default/b", "10.244.0.6/32") }).unwrap();
        write(&sub, &Record { container_id: "c-3".into(), ..record("default/c", "10.244.0.7/32") }).unwrap();
        remove(&dir, "c-1.x", "eth0");
        fs::write(dir.join("notes.txt"), "x").unwrap();
        let changed = [dir.join("c-2:eth0.json"), sub.clone(), sub.join("c-3:eth0.json"), dir.join("c-1.x:eth0.json"), dir.join("notes.txt")];
        kept.refresh(changed.iter().map(PathBuf::as_path)).unwrap();
        assert_eq!(kept.addresses(), pod_addresses(&dir).unwrap());
        assert_eq!(kept.addresses().pods.keys().collect::<Vec<_>>(), ["default/b", "default/c"]);
        // The subdirectory goes: its records with it.
        fs::remove_dir_all(&sub).unwrap();
        kept.refresh([sub.as_path()]).unwrap();
        assert_eq!(kept.addresses().pods.keys().collect::<Vec<_>>(), ["default/b"]);
        // A path outside the directory changes nothing.
        kept.refresh([Path::new("/etc/hostname")]).unwrap();
        assert_eq!(kept.addresses(), pod_addresses(&dir).unwrap());
        fs::remove_dir_all(&dir).unwrap();
    }
}
