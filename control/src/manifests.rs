//! The manifest source: Kubernetes YAML read from a directory.
//!
//! Contract:
//! - Every `*.yaml`/`*.yml`/`*.json` file directly in the directory is read, in name order;
//!   a file may hold several documents separated by `---`. `List` objects are flattened.
//! - Kinds understood: those of [`kinds`] (Namespace, Pod, Node, Service (v1), EndpointSlice
//!   (discovery.k8s.io/v1), NetworkPolicy and ServiceCIDR (networking.k8s.io/v1)), each at its one
//!   apiVersion. Other kinds are kept aside as [`Manifests::ignored`] so that a caller can say
//!   what it did not use.
//! - Objects are kept reduced to what the compilers read ([`reduced`]), as the API source
//!   keeps them.
//! - YAML is read with serde-saphyr (the YAML crate kube uses), within its limits against
//!   alias bombs and the like, widened for the document counts of a whole cluster.
//! - Any error (unreadable file, bad YAML, a known kind that does not deserialize, a duplicate
//!   object) fails the whole load with a message naming the file and line (of the bad YAML, or
//!   where the bad object's document starts): the caller keeps the tables it has (nothing is
//!   half-applied).
//! - [`dir_digest`] is a content hash over the same files; the switch reports the digest it has
//!   applied so that tools (the lab's probe) can wait until it is in force.
//! - A view may carry [`Changes`]: the keys of every object that differs from the view whose
//!   digest is [`Changes::since`]. Consumers that applied exactly that view may look at those
//!   keys only ([`Manifests::changes_since`]); any other consumer compares everything. A view
//!   without changes (the directory source, a first view, a relist) says nothing about them.
use std::fs;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub mod footprint;
pub mod kinds;
pub mod reduced;

pub use kinds::{ByKind, Collection, EachKind, Keys, Kind, Objects};

/// Objects of one manifest directory (or of the API source's stores), keyed by
/// `namespace/name` (or `name` when cluster-scoped), one [`Collection`] per [`Kind`].
/// Objects are shared (`Arc`): a source that keeps them (the API source's stores) hands them
/// over without copying them, and a clone of a view copies no object.
#[derive(Debug, Default, Clone)]
pub struct Manifests {
    pub objects: ByKind<Objects>,
    /// `kind namespace/name (file)` of documents of kinds this version does not use.
    pub ignored: Vec<String>,
    /// Digest of the directory content this view was read from (see [`dir_digest`]).
    pub digest: String,
    /// What changed since an earlier view, when the source knows it (see the module contract).
    pub changes: Option<Changes>,
    /// Bytes of the objects per kind, in list order ([`footprint`]): kept by the sources (the
    /// reader adds each object's, the API source's views total a whole view and follow a
    /// delta's objects). Code that edits `objects` by hand does not update it.
    pub footprint: [u64; kinds::COUNT],
}

/// A view reads as its objects (`m.pods`, `m.services`, ...): the other fields say where they
/// came from.
impl Deref for Manifests {
    type Target = ByKind<Objects>;

    fn deref(&self) -> &ByKind<Objects> {
        &self.objects
    }
}

impl DerefMut for Manifests {
    fn deref_mut(&mut self) -> &mut ByKind<Objects> {
        &mut self.objects
    }
}

impl Manifests {
    /// The keys changed since the view with digest `digest`, if this view knows them. An
    /// empty `digest` (a consumer that applied nothing yet) never matches.
    pub fn changes_since(&self, digest: &str) -> Option<&Changes> {
        self.changes.as_ref().filter(|c| !digest.is_empty() && c.since == digest)
    }
}

/// Keys (as [`Manifests`] keys them), per kind, of the objects that were added, modified or
/// removed since the view whose digest is `since`. A key may be listed whose object did not
/// change in the end (changed and changed back): consumers compare what they read of it.
///
/// The one account of what changed, from the source to the compilers: the API source's
/// watches record keys into it, its updates carry it, and the view hands it on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pub since: String,
    pub keys: ByKind<Keys>,
}

impl Changes {
    /// The keys whose object differs between `old` and `new` (by content), leading from `old`.
    pub fn between(old: &Manifests, new: &Manifests) -> Changes {
        struct Diff<'a> {
            old: &'a Manifests,
            new: &'a Manifests,
            keys: ByKind<Keys>,
        }
        impl EachKind for Diff<'_> {
            fn kind<K: Kind>(&mut self) {
                let (a, b) = (K::of(&self.old.objects), K::of(&self.new.objects));
                let out = K::of_mut(&mut self.keys);
                out.extend(a.iter().filter(|(k, v)| b.get(*k) != Some(*v)).map(|(k, _)| k.clone()));
                out.extend(b.keys().filter(|k| !a.contains_key(*k)).cloned());
            }
        }
        let mut d = Diff { old, new, keys: ByKind::default() };
        kinds::each_kind(&mut d);
        Changes { since: old.digest.clone(), keys: d.keys }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read manifest directory {dir}: {source}")]
    ReadDir { dir: PathBuf, source: std::io::Error },
    #[error("cannot read {file}: {source}")]
    ReadFile { file: PathBuf, source: std::io::Error },
    #[error("{file}: file is not UTF-8 text")]
    NotUtf8 { file: PathBuf },
    #[error("{file}, line {line}: invalid YAML: {message}")]
    Yaml { file: PathBuf, line: u64, message: String },
    /// `line` is where the document (or the List item) holding the object starts.
    #[error("{file}, line {line}: {source}")]
    Object { file: PathBuf, line: u64, source: ObjectError },
}

/// What is wrong with one object of a manifest.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error("object has no `kind`")]
    NoKind,
    #[error("{kind} has no metadata.name")]
    NoName { kind: String },
    #[error("{kind} name {name:?} is not a valid Kubernetes name (lowercase DNS label)")]
    BadName { kind: String, name: String },
    #[error("{kind} {name}: apiVersion must be {want}, not {got:?}")]
    ApiVersion { kind: String, name: String, want: &'static str, got: String },
    #[error("{kind} {name}: {source}")]
    Decode { kind: String, name: String, source: serde_json::Error },
    #[error("duplicate {kind} {key}")]
    Duplicate { kind: String, key: String },
}

/// The manifest files of `dir`, sorted by name.
pub fn manifest_files(dir: &Path) -> Result<Vec<PathBuf>, ManifestError> {
    let rd = fs::read_dir(dir).map_err(|source| ManifestError::ReadDir { dir: dir.into(), source })?;
    let mut files = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|source| ManifestError::ReadDir { dir: dir.into(), source })?;
        let path = entry.path();
        let is_manifest = matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml") | Some("yml") | Some("json")
        );
        let hidden = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'));
        if is_manifest && !hidden && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Per manifest file: path, size, modification time (seconds, nanoseconds) and inode.
pub type DirSignature = Vec<(PathBuf, u64, i64, i64, u64)>;

/// A cheap stand-in for [`dir_digest`]: each manifest file's name, size, modification time (to
/// the nanosecond) and inode, from `stat` alone. Equal signatures mean the digest has not
/// changed (short of an edit that keeps size and nanosecond mtime, which is why the caller
/// still digests now and then); a changed one means "digest again".
pub fn dir_signature(dir: &Path) -> Result<DirSignature, ManifestError> {
    use std::os::unix::fs::MetadataExt;
    manifest_files(dir)?
        .into_iter()
        .map(|f| {
            let m = fs::metadata(&f).map_err(|source| ManifestError::ReadFile { file: f.clone(), source })?;
            Ok((f, m.len(), m.mtime(), m.mtime_nsec(), m.ino()))
        })
        .collect()
}

/// A hex digest over the names and contents of the manifest files of `dir`.
pub fn dir_digest(dir: &Path) -> Result<String, ManifestError> {
    let mut h = sha1_smol::Sha1::new();
    for file in manifest_files(dir)? {
        let bytes = fs::read(&file).map_err(|source| ManifestError::ReadFile { file: file.clone(), source })?;
        digest_file(&mut h, &file, &bytes);
    }
    Ok(h.digest().to_string())
}

fn digest_file(h: &mut sha1_smol::Sha1, file: &Path, bytes: &[u8]) {
    let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    h.update(name.as_bytes());
    h.update(&[0]);
    h.update(&(bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

/// Reads every manifest of `dir`; see the module contract.
pub fn load_dir(dir: &Path) -> Result<Manifests, ManifestError> {
    let mut out = Manifests::default();
    let mut h = sha1_smol::Sha1::new();
    for file in manifest_files(dir)? {
        let bytes = fs::read(&file).map_err(|source| ManifestError::ReadFile { file: file.clone(), source })?;
        digest_file(&mut h, &file, &bytes);
        let text = String::from_utf8(bytes).map_err(|_| ManifestError::NotUtf8 { file: file.clone() })?;
        add_documents(&mut out, &file, &text)?;
    }
    out.digest = h.digest().to_string();
    Ok(out)
}

/// The YAML reader's limits: those of serde-saphyr (against alias bombs and the like), with
/// room for the document and node counts of a whole cluster's objects in one file (the sync
/// benchmark's 30,000 documents). Scalars are read as YAML 1.2 (as serde_yaml did): `y`, `yes`,
/// `on` stay strings (a Namespace named `y` is not `true`), so do `0755` and `1_000`.
fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        strict_booleans: true,
        leading_zero_numbers_as_strings: true,
        underscored_numbers_as_strings: true,
        budget: serde_saphyr::budget! {
            max_documents: 10_000_000,
            max_nodes: 1_000_000_000,
            max_events: 1_000_000_000,
            max_total_scalar_bytes: 4 << 30,
        },
    }
}

/// Parses the documents of one file's `text` into `out`.
pub fn add_documents(out: &mut Manifests, file: &Path, text: &str) -> Result<(), ManifestError> {
    // JSON values: what k8s-openapi's types read best, and the form of the API's own objects.
    let docs: Vec<serde_saphyr::Spanned<serde_json::Value>> =
        serde_saphyr::from_multiple_with_options(text, yaml_options()).map_err(|e| ManifestError::Yaml {
            file: file.into(),
            line: e.location().map_or(0, |l| l.line()),
            message: yaml_message(&e),
        })?;
    for doc in docs {
        if doc.value.is_null() {
            continue; // empty document, e.g. a trailing `---`
        }
        let line = doc.referenced.line();
        add_object(out, file, doc.value).map_err(|source| ManifestError::Object { file: file.into(), line, source })?;
    }
    Ok(())
}

/// The reader's message without the location it renders (the error says file and line).
fn yaml_message(e: &serde_saphyr::Error) -> String {
    let full = e.to_string();
    let first = full.lines().next().unwrap_or_default().trim();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    match first.split_once(": ") {
        Some((at, message)) if at.starts_with("line ") => message.to_string(),
        _ => first.to_string(),
    }
}

fn add_object(out: &mut Manifests, file: &Path, value: serde_json::Value) -> Result<(), ObjectError> {
    let kind = value.get("kind").and_then(|k| k.as_str()).ok_or(ObjectError::NoKind)?.to_string();
    if kind == "List" || kind.ends_with("List") {
        let items = match value {
            serde_json::Value::Object(mut o) => o.remove("items"),
            _ => None,
        };
        if let Some(serde_json::Value::Array(items)) = items {
            for item in items {
                add_object(out, file, item)?;
            }
        }
        return Ok(());
    }
    let api_version = value.get("apiVersion").and_then(|k| k.as_str()).unwrap_or("").to_string();
    let meta = value.get("metadata");
    let Some(name) = meta.and_then(|m| m.get("name")).and_then(|n| n.as_str()).map(str::to_string) else {
        return Err(ObjectError::NoName { kind });
    };
    validate_name(&kind, &name)?;
    let namespace = meta.and_then(|m| m.get("namespace")).and_then(|n| n.as_str()).unwrap_or("default").to_string();
    let mut add = AddObject { out, kind, api_version, name, namespace, value: Some(value), result: None };
    kinds::each_kind(&mut add);
    match add.result {
        Some(r) => r,
        None => {
            let AddObject { out, kind, namespace, name, .. } = add;
            out.ignored.push(format!("{kind} {namespace}/{name} ({})", file.display()));
            Ok(())
        }
    }
}

/// Adds the object to the collection of its kind, if it is of one (else `result` stays None).
struct AddObject<'a> {
    out: &'a mut Manifests,
    kind: String,
    api_version: String,
    name: String,
    namespace: String,
    value: Option<serde_json::Value>,
    result: Option<Result<(), ObjectError>>,
}

impl AddObject<'_> {
    fn add<K: Kind>(&mut self) -> Result<(), ObjectError> {
        let (kind, name) = (&self.kind, &self.name);
        if self.api_version != K::API_VERSION {
            return Err(ObjectError::ApiVersion {
                kind: kind.clone(),
                name: name.clone(),
                want: K::API_VERSION,
                got: self.api_version.clone(),
            });
        }
        let value = self.value.take().expect("one kind matches");
        let mut obj: K = serde_json::from_value(value)
            .map_err(|source| ObjectError::Decode { kind: kind.clone(), name: name.clone(), source })?;
        obj.reduce();
        let bytes = obj.footprint() as u64;
        let key = if K::NAMESPACED {
            validate_name("Namespace", &self.namespace)?;
            obj.meta_mut().namespace = Some(self.namespace.clone());
            format!("{}/{name}", self.namespace)
        } else {
            name.clone()
        };
        let objects = K::of_mut(&mut self.out.objects);
        if objects.contains_key(&key) {
            return Err(ObjectError::Duplicate { kind: kind.clone(), key });
        }
        objects.insert(key, Arc::new(obj));
        self.out.footprint[K::INDEX] += bytes;
        Ok(())
    }
}

impl EachKind for AddObject<'_> {
    fn kind<K: Kind>(&mut self) {
        if self.result.is_none() && self.kind == K::KIND {
            self.result = Some(self.add::<K>());
        }
    }
}

/// Object names must be DNS-1123 labels (Namespaces, Pods as used here) or subdomains (Nodes).
fn validate_name(kind: &str, name: &str) -> Result<(), ObjectError> {
    let max = if kind == "Namespace" { 63 } else { 253 };
    let ok = !name.is_empty()
        && name.len() <= max
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric()
        && (kind != "Namespace" || !name.contains('.'));
    if ok {
        Ok(())
    } else {
        Err(ObjectError::BadName { kind: kind.to_string(), name: name.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_document_file_with_lists_and_unknown_kinds() {
        let mut m = Manifests::default();
        let text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n---\n\
                    apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: x, labels: {pod: a}}\n\
                    spec: {containers: [{name: c, image: i, ports: [{containerPort: 80}]}]}\n---\n\
                    apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Node\n  metadata: {name: n1}\n---\n\
                    apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\n---\n";
        add_documents(&mut m, Path::new("f.yaml"), text).unwrap();
        assert_eq!(m.namespaces.len(), 1);
        assert_eq!(m.pods.keys().collect::<Vec<_>>(), vec!["x/a"]);
        assert_eq!(m.nodes.len(), 1);
        assert_eq!(m.ignored.len(), 1);
    }

    #[test]
    fn scalars_are_yaml_1_2_as_serde_yaml_read_them() {
        let mut m = Manifests::default();
        let text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: y}\n---\n\
                    apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: y, labels: {on: yes, mode: 0755, n: 1_000}}\n";
        add_documents(&mut m, Path::new("f.yaml"), text).unwrap();
        assert_eq!(m.namespaces.keys().collect::<Vec<_>>(), vec!["y"]);
        let labels = &m.pods["y/a"].labels;
        assert_eq!(labels["on"], "yes");
        assert_eq!(labels["mode"], "0755");
        assert_eq!(labels["n"], "1_000");
    }

    #[test]
    fn errors_name_file_and_document() {
        let mut m = Manifests::default();
        let e = add_documents(&mut m, Path::new("bad.yaml"), "kind: Pod\napiVersion: v1\nmetadata: {name: a}\n---\n: : :\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("bad.yaml, line 5: invalid YAML: "), "{e}");
        assert!(!e.contains("line 5 column"), "the location once: {e}");
        let e = add_documents(&mut Manifests::default(), Path::new("f.yaml"), "kind: Pod\napiVersion: v1\nmetadata: {name: A_b}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a valid Kubernetes name"), "{e}");
        let e = add_documents(&mut Manifests::default(), Path::new("f.yaml"), "kind: Pod\napiVersion: v1\nmetadata: {name: a}\nspec: {containers: 3}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("Pod a:"), "{e}");
        let dup = "kind: Pod\napiVersion: v1\nmetadata: {name: a}\n---\nkind: Pod\napiVersion: v1\nmetadata: {name: a}\n";
        let e = add_documents(&mut Manifests::default(), Path::new("f.yaml"), dup).unwrap_err().to_string();
        assert!(e.contains("duplicate Pod default/a"), "{e}");
    }

    #[test]
    fn services_and_endpoint_slices_are_read() {
        let mut m = Manifests::default();
        let text = "apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: x}\n\
                    spec: {selector: {pod: a}, ports: [{port: 80, targetPort: http}]}\n---\n\
                    apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
                    metadata: {name: s-1, namespace: x, labels: {kubernetes.io/service-name: s}}\n\
                    addressType: IPv4\nports: [{name: '', port: 8080}]\n\
                    endpoints: [{addresses: [10.244.0.5], conditions: {ready: true}}]\n---\n\
                    apiVersion: v1\nkind: Service\nmetadata: {name: t}\nspec: {ports: [{port: 53, protocol: UDP}]}\n";
        add_documents(&mut m, Path::new("f.yaml"), text).unwrap();
        assert_eq!(m.services.keys().collect::<Vec<_>>(), vec!["default/t", "x/s"]);
        assert_eq!(m.services["default/t"].metadata.namespace.as_deref(), Some("default"));
        assert_eq!(m.endpoint_slices.keys().collect::<Vec<_>>(), vec!["x/s-1"]);
        assert_eq!(m.endpoint_slices["x/s-1"].endpoints.len(), 1);
        assert!(m.ignored.is_empty(), "{:?}", m.ignored);
        let e = add_documents(&mut m, Path::new("f.yaml"), "apiVersion: discovery.k8s.io/v1beta1\nkind: EndpointSlice\nmetadata: {name: e}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("apiVersion must be discovery.k8s.io/v1"), "{e}");
        let e = add_documents(&mut m, Path::new("f.yaml"), "apiVersion: v1\nkind: Service\nmetadata: {name: t}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("duplicate Service default/t"), "{e}");
    }

    #[test]
    fn network_policies_are_read() {
        let mut m = Manifests::default();
        let text = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny, namespace: x}\n\
                    spec: {podSelector: {}, policyTypes: [Ingress]}\n---\n\
                    apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: allow}\n\
                    spec: {podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{podSelector: {}}], ports: [{port: serve-80-tcp}]}]}\n";
        add_documents(&mut m, Path::new("f.yaml"), text).unwrap();
        assert_eq!(m.network_policies.keys().collect::<Vec<_>>(), vec!["default/allow", "x/deny"]);
        assert_eq!(m.network_policies["default/allow"].metadata.namespace.as_deref(), Some("default"));
        let spec = m.network_policies["default/allow"].spec.clone().unwrap();
        assert_eq!(spec.ingress.unwrap()[0].from.as_ref().unwrap().len(), 1);
        assert!(m.ignored.is_empty(), "{:?}", m.ignored);
        let e = add_documents(&mut m, Path::new("f.yaml"), "apiVersion: extensions/v1beta1\nkind: NetworkPolicy\nmetadata: {name: e}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("apiVersion must be networking.k8s.io/v1"), "{e}");
        let e = add_documents(&mut m, Path::new("f.yaml"), "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny, namespace: x}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("duplicate NetworkPolicy x/deny"), "{e}");
        let e = add_documents(&mut m, Path::new("f.yaml"), "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p}\nspec: {podSelector: 3}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("NetworkPolicy p:"), "{e}");
    }
}
