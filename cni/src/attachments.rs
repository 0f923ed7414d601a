//! The plugin's record of its attachments, for GC.
//!
//! Contract: ADD writes one JSON file per attachment, `DIR/CONTAINERID:IFNAME.json` (neither
//! part can hold a `:`), after the attachment is complete; DEL removes it; GC lists them all.
//! A record missing or unreadable is not an error for DEL.
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

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
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(RecordError::List { path: dir.display().to_string(), source }),
    };
    Ok(entries
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| serde_json::from_slice(&fs::read(e.path()).ok()?).ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_written_listed_and_removed() {
        let dir = std::env::temp_dir().join(format!("podswitch-cni-records-{}", std::process::id()));
        let r = Record {
            container_id: "c-1.x".into(),
            ifname: "eth0".into(),
            netns: "/run/netns/a".into(),
            host_interface: "ps0123".into(),
            pod: "default/a".into(),
            address: "10.0.0.2/32".into(),
        };
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
}
