//! Where the announcement Leases live: the Kubernetes API (`coordination.k8s.io/v1` Leases,
//! [`super::kube_leases`]) or, for a cluster read from a manifest directory (the lab), a
//! directory the nodes share ([`FileLeases`]).
//!
//! Contract:
//! - A [`LeaseStore`] gets, creates and updates one Lease by name, with the API server's
//!   optimistic concurrency: every stored Lease has a version (`metadata.resourceVersion`), an
//!   update names the version it read, and a create of an existing Lease or an update of a
//!   version no longer current is a [`StoreError::Conflict`] (HTTP 409), never a silent
//!   overwrite. Two nodes can therefore never both believe they took the same Lease.
//! - What is stored is a `coordination.k8s.io/v1` Lease in both stores ([`to_lease`],
//!   [`from_lease`]): holder, duration, acquire and renew times (microseconds, RFC 3339) and
//!   transitions, so `kubectl get lease` (or reading the file) shows who announces what.
//! - [`FileLeases`] keeps each Lease as `DIR/NAME.json` (the API's JSON), written atomically
//!   (a temporary file, then a rename); creates and updates hold an exclusive lock on
//!   `DIR/.lock` from the read of the current version to the rename. A file that does not
//!   parse is an error naming it ([`StoreError::Unavailable`]), never taken as absent.
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;

/// What an election reads and writes of a Lease (the `LeaseSpec` fields client-go's leader
/// election uses).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LeaseRecord {
    /// `holderIdentity`: the node announcing the address; None or empty: nobody.
    pub holder: Option<String>,
    /// `leaseDurationSeconds`.
    pub duration_s: u32,
    pub acquire_time: Option<SystemTime>,
    pub renew_time: Option<SystemTime>,
    /// `leaseTransitions`: how many times the holder changed.
    pub transitions: u32,
}

impl LeaseRecord {
    /// The holder, if there is one (an empty `holderIdentity` is none).
    pub fn holder(&self) -> Option<&str> {
        self.holder.as_deref().filter(|h| !h.is_empty())
    }
}

/// A Lease as stored: its record and version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub record: LeaseRecord,
    /// `metadata.resourceVersion`.
    pub version: String,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Someone else wrote the Lease first (409): the attempt lost.
    #[error("the Lease was changed by someone else (conflict)")]
    Conflict,
    /// The store could not be asked or did not answer sensibly.
    #[error("{0}")]
    Unavailable(String),
}

/// Gets, creates and updates Leases by name (see the module contract).
pub trait LeaseStore: Send {
    fn get(&mut self, name: &str) -> Result<Option<Stored>, StoreError>;
    fn create(&mut self, name: &str, record: &LeaseRecord) -> Result<Stored, StoreError>;
    fn update(&mut self, name: &str, record: &LeaseRecord, version: &str) -> Result<Stored, StoreError>;
    /// Where the Leases are, for messages (`namespace kube-system of https://...`, a directory).
    fn describe(&self) -> String;
}

fn micro_time(t: SystemTime) -> Option<MicroTime> {
    Timestamp::try_from(t).ok().map(|ts| MicroTime(ts.round(k8s_openapi::jiff::Unit::Microsecond).unwrap_or(ts)))
}

/// The Lease object of `record` (namespace, name; no version).
pub fn to_lease(namespace: &str, name: &str, record: &LeaseRecord) -> Lease {
    Lease {
        metadata: ObjectMeta { name: Some(name.to_string()), namespace: Some(namespace.to_string()), ..Default::default() },
        spec: Some(LeaseSpec {
            holder_identity: record.holder.clone(),
            lease_duration_seconds: Some(i32::try_from(record.duration_s).unwrap_or(i32::MAX)),
            acquire_time: record.acquire_time.and_then(micro_time),
            renew_time: record.renew_time.and_then(micro_time),
            lease_transitions: Some(i32::try_from(record.transitions).unwrap_or(i32::MAX)),
            ..Default::default()
        }),
    }
}

/// The record and version of a stored Lease; a Lease without a version is an error (every
/// stored object has one).
pub fn from_lease(lease: &Lease) -> Result<Stored, StoreError> {
    let version = lease
        .metadata
        .resource_version
        .clone()
        .ok_or_else(|| StoreError::Unavailable(format!("Lease {} has no resourceVersion", lease.metadata.name.as_deref().unwrap_or("?"))))?;
    let spec = lease.spec.clone().unwrap_or_default();
    let time = |t: Option<MicroTime>| t.map(|t| SystemTime::from(t.0));
    Ok(Stored {
        record: LeaseRecord {
            holder: spec.holder_identity,
            duration_s: spec.lease_duration_seconds.map_or(0, |d| d.max(0) as u32),
            acquire_time: time(spec.acquire_time),
            renew_time: time(spec.renew_time),
            transitions: spec.lease_transitions.map_or(0, |t| t.max(0) as u32),
        },
        version,
    })
}

/// Leases as files in a directory the nodes share (see the module contract).
#[derive(Debug)]
pub struct FileLeases {
    dir: PathBuf,
    namespace: String,
}

impl FileLeases {
    /// The store in `dir` (created if missing), for Leases of `namespace`.
    pub fn open(dir: &Path, namespace: &str) -> Result<Self, StoreError> {
        fs::create_dir_all(dir).map_err(|e| StoreError::Unavailable(format!("cannot create the lease directory {}: {e}", dir.display())))?;
        Ok(Self { dir: dir.to_path_buf(), namespace: namespace.to_string() })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    fn io(&self, what: &str, e: std::io::Error) -> StoreError {
        StoreError::Unavailable(format!("{what} in {}: {e}", self.dir.display()))
    }

    /// The exclusive lock creates and updates hold (released when the file closes).
    fn lock(&self) -> Result<File, StoreError> {
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.dir.join(".lock"))
            .map_err(|e| self.io("cannot open .lock", e))?;
        f.lock().map_err(|e| self.io("cannot lock .lock", e))?;
        Ok(f)
    }

    fn write(&self, name: &str, record: &LeaseRecord, version: u64) -> Result<Stored, StoreError> {
        let mut lease = to_lease(&self.namespace, name, record);
        lease.metadata.resource_version = Some(version.to_string());
        let mut json = serde_json::to_value(&lease).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        if let Some(o) = json.as_object_mut() {
            o.insert("apiVersion".into(), "coordination.k8s.io/v1".into());
            o.insert("kind".into(), "Lease".into());
        }
        let tmp = self.dir.join(format!(".{name}.json.tmp"));
        let text = serde_json::to_string_pretty(&json).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        fs::write(&tmp, text).map_err(|e| self.io(&format!("cannot write {name}"), e))?;
        fs::rename(&tmp, self.path(name)).map_err(|e| self.io(&format!("cannot write {name}"), e))?;
        from_lease(&lease)
    }
}

impl LeaseStore for FileLeases {
    fn get(&mut self, name: &str) -> Result<Option<Stored>, StoreError> {
        let path = self.path(name);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io(&format!("cannot read {name}.json"), e)),
        };
        let lease: Lease = serde_json::from_str(&text)
            .map_err(|e| StoreError::Unavailable(format!("{} is not a Lease: {e}", path.display())))?;
        from_lease(&lease).map(Some)
    }

    fn create(&mut self, name: &str, record: &LeaseRecord) -> Result<Stored, StoreError> {
        let _lock = self.lock()?;
        if self.path(name).exists() {
            return Err(StoreError::Conflict);
        }
        self.write(name, record, 1)
    }

    fn update(&mut self, name: &str, record: &LeaseRecord, version: &str) -> Result<Stored, StoreError> {
        let _lock = self.lock()?;
        let current = self.get(name)?.ok_or(StoreError::Conflict)?;
        if current.version != version {
            return Err(StoreError::Conflict);
        }
        let next = current.version.parse::<u64>().map_err(|_| {
            StoreError::Unavailable(format!("{}: resourceVersion {:?} is not a number", self.path(name).display(), current.version))
        })?;
        self.write(name, record, next + 1)
    }

    fn describe(&self) -> String {
        format!("directory {}", self.dir.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn record(holder: &str) -> LeaseRecord {
        let t = SystemTime::UNIX_EPOCH + Duration::from_micros(1_765_000_000_123_456);
        LeaseRecord { holder: Some(holder.into()), duration_s: 5, acquire_time: Some(t), renew_time: Some(t), transitions: 2 }
    }

    #[test]
    fn a_lease_goes_through_the_api_object_unchanged() {
        let r = record("node-1");
        let mut lease = to_lease("kube-system", "podswitch-l2-a", &r);
        lease.metadata.resource_version = Some("7".into());
        let json = serde_json::to_string(&lease).unwrap();
        assert!(json.contains(r#""holderIdentity":"node-1""#), "{json}");
        assert!(json.contains(r#""renewTime":"2025-12-06T05:46:40.123456Z""#), "{json}");
        let back: Lease = serde_json::from_str(&json).unwrap();
        assert_eq!(from_lease(&back).unwrap(), Stored { record: r, version: "7".into() });
    }

    #[test]
    fn the_file_store_refuses_stale_versions_and_double_creates() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = FileLeases::open(dir.path(), "kube-system").unwrap();
        let mut b = FileLeases::open(dir.path(), "kube-system").unwrap();
        assert_eq!(a.get("l").unwrap(), None);
        let first = a.create("l", &record("node-1")).unwrap();
        assert!(matches!(b.create("l", &record("node-2")), Err(StoreError::Conflict)));
        let seen = b.get("l").unwrap().unwrap();
        assert_eq!(seen, first);
        let second = b.update("l", &record("node-2"), &seen.version).unwrap();
        assert_ne!(second.version, first.version);
        // node-1 still holds the version it read: its update loses.
        assert!(matches!(a.update("l", &record("node-1"), &first.version), Err(StoreError::Conflict)));
        assert_eq!(a.get("l").unwrap().unwrap().record.holder(), Some("node-2"));
        // The file is the API's object.
        let text = fs::read_to_string(dir.path().join("l.json")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["kind"], "Lease");
        assert_eq!(v["apiVersion"], "coordination.k8s.io/v1");
        assert_eq!(v["metadata"]["namespace"], "kube-system");
    }

    #[test]
    fn a_file_that_is_not_a_lease_is_an_error_not_an_absent_lease() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("l.json"), "{not json").unwrap();
        let mut s = FileLeases::open(dir.path(), "kube-system").unwrap();
        let e = s.get("l").unwrap_err().to_string();
        assert!(e.contains("l.json") && e.contains("not a Lease"), "{e}");
        assert!(matches!(s.create("l", &record("n")), Err(StoreError::Conflict)));
    }
}
