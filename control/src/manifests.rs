//! The manifest source: Kubernetes YAML read from a directory.
//!
//! Contract:
//! - Every `*.yaml`/`*.yml`/`*.json` file directly in the directory is read, in name order;
//!   a file may hold several documents separated by `---`. `List` objects are flattened.
//! - Kinds understood: Namespace, Pod, Node, Service (v1), EndpointSlice
//!   (discovery.k8s.io/v1) and NetworkPolicy (networking.k8s.io/v1). Other kinds are kept aside as
//!   [`Manifests::ignored`] so that a caller can say what it did not use.
//! - Any error (unreadable file, bad YAML, a known kind that does not deserialize, a duplicate
//!   object) fails the whole load with a message naming the file and document: the caller keeps
//!   the tables it has (nothing is half-applied).
//! - [`dir_digest`] is a content hash over the same files; the switch reports the digest it has
//!   applied so that tools (the lab's probe) can wait until it is in force.
//! - A view may carry [`Changes`]: the keys of every object that differs from the view whose
//!   digest is [`Changes::since`]. Consumers that applied exactly that view may look at those
//!   keys only ([`Manifests::changes_since`]); any other consumer compares everything. A view
//!   without changes (the directory source, a first view, a relist) says nothing about them.
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde::Deserialize;

/// Objects of one manifest directory, keyed by `namespace/name` (or `name` when cluster-scoped).
/// Objects are shared (`Arc`): a source that keeps them (the API source's stores) hands them
/// over without copying them, and a clone of a view copies no object.
#[derive(Debug, Default, Clone)]
pub struct Manifests {
    pub namespaces: BTreeMap<String, Arc<Namespace>>,
    pub pods: BTreeMap<String, Arc<Pod>>,
    pub nodes: BTreeMap<String, Arc<Node>>,
    pub services: BTreeMap<String, Arc<Service>>,
    pub endpoint_slices: BTreeMap<String, Arc<EndpointSlice>>,
    pub network_policies: BTreeMap<String, Arc<NetworkPolicy>>,
    /// `kind namespace/name (file)` of documents of kinds this version does not use.
    pub ignored: Vec<String>,
    /// Digest of the directory content this view was read from (see [`dir_digest`]).
    pub digest: String,
    /// What changed since an earlier view, when the source knows it (see the module contract).
    pub changes: Option<Changes>,
}

impl Manifests {
    /// The keys changed since the view with digest `digest`, if this view knows them. An
    /// empty `digest` (a consumer that applied nothing yet) never matches.
    pub fn changes_since(&self, digest: &str) -> Option<&Changes> {
        self.changes.as_ref().filter(|c| !digest.is_empty() && c.since == digest)
    }
}

/// Keys (as [`Manifests`] keys them) of the objects that were added, modified or removed
/// since the view whose digest is `since`. A key may be listed whose object did not change in
/// the end (changed and changed back): consumers compare what they read of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pub since: String,
    pub namespaces: BTreeSet<String>,
    pub pods: BTreeSet<String>,
    pub nodes: BTreeSet<String>,
    pub services: BTreeSet<String>,
    pub endpoint_slices: BTreeSet<String>,
    pub network_policies: BTreeSet<String>,
}

impl Changes {
    /// The keys whose object differs between `old` and `new` (by content), leading from `old`.
    pub fn between(old: &Manifests, new: &Manifests) -> Changes {
        fn diff<T: PartialEq>(a: &BTreeMap<String, T>, b: &BTreeMap<String, T>) -> BTreeSet<String> {
            let mut out: BTreeSet<String> = a.iter().filter(|(k, v)| b.get(*k) != Some(*v)).map(|(k, _)| k.clone()).collect();
            out.extend(b.keys().filter(|k| !a.contains_key(*k)).cloned());
            out
        }
        Changes {
            since: old.digest.clone(),
            namespaces: diff(&old.namespaces, &new.namespaces),
            pods: diff(&old.pods, &new.pods),
            nodes: diff(&old.nodes, &new.nodes),
            services: diff(&old.services, &new.services),
            endpoint_slices: diff(&old.endpoint_slices, &new.endpoint_slices),
            network_policies: diff(&old.network_policies, &new.network_policies),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read manifest directory {dir}: {source}")]
    ReadDir { dir: PathBuf, source: std::io::Error },
    #[error("cannot read {file}: {source}")]
    ReadFile { file: PathBuf, source: std::io::Error },
    #[error("{file}, document {doc}: {message}")]
    Document { file: PathBuf, doc: usize, message: String },
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
        let text = String::from_utf8(bytes).map_err(|_| ManifestError::Document {
            file: file.clone(),
            doc: 1,
            message: "file is not UTF-8 text".into(),
        })?;
        add_documents(&mut out, &file, &text)?;
    }
    out.digest = h.digest().to_string();
    Ok(out)
}

/// Parses the documents of one file's `text` into `out`.
pub fn add_documents(out: &mut Manifests, file: &Path, text: &str) -> Result<(), ManifestError> {
    for (i, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let doc = i + 1;
        let err = |message: String| ManifestError::Document { file: file.into(), doc, message };
        let value = serde_yaml::Value::deserialize(de).map_err(|e| err(format!("invalid YAML: {e}")))?;
        if value.is_null() {
            continue; // empty document, e.g. a trailing `---`
        }
        add_object(out, file, value).map_err(err)?;
    }
    Ok(())
}

fn add_object(out: &mut Manifests, file: &Path, value: serde_yaml::Value) -> Result<(), String> {
    let kind = value
        .get("kind")
        .and_then(|k| k.as_str())
        .ok_or_else(|| "object has no `kind`".to_string())?
        .to_string();
    let api_version = value.get("apiVersion").and_then(|k| k.as_str()).unwrap_or("").to_string();
    if kind == "List" || kind.ends_with("List") {
        let items = value.get("items").and_then(|i| i.as_sequence()).cloned().unwrap_or_default();
        for item in items {
            add_object(out, file, item)?;
        }
        return Ok(());
    }
    let meta_name = value
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(|n| n.as_str())
        .map(str::to_string);
    let Some(name) = meta_name else {
        return Err(format!("{kind} has no metadata.name"));
    };
    validate_name(&kind, &name)?;
    let namespace = value
        .get("metadata")
        .and_then(|m| m.get("namespace"))
        .and_then(|n| n.as_str())
        .unwrap_or("default")
        .to_string();
    macro_rules! typed {
        ($ty:ty) => {
            serde_yaml::from_value::<$ty>(value.clone()).map_err(|e| format!("{kind} {name}: {e}"))?
        };
    }
    match (api_version.as_str(), kind.as_str()) {
        ("v1", "Namespace") => insert_unique(&mut out.namespaces, name.clone(), typed!(Namespace), &kind)?,
        ("v1", "Node") => insert_unique(&mut out.nodes, name.clone(), typed!(Node), &kind)?,
        ("v1", "Pod") => {
            validate_name("Namespace", &namespace)?;
            let mut pod = typed!(Pod);
            pod.metadata.namespace = Some(namespace.clone());
            insert_unique(&mut out.pods, format!("{namespace}/{name}"), pod, &kind)?
        }
        ("v1", "Service") => {
            validate_name("Namespace", &namespace)?;
            let mut svc = typed!(Service);
            svc.metadata.namespace = Some(namespace.clone());
            insert_unique(&mut out.services, format!("{namespace}/{name}"), svc, &kind)?
        }
        ("discovery.k8s.io/v1", "EndpointSlice") => {
            validate_name("Namespace", &namespace)?;
            let mut slice = typed!(EndpointSlice);
            slice.metadata.namespace = Some(namespace.clone());
            insert_unique(&mut out.endpoint_slices, format!("{namespace}/{name}"), slice, &kind)?
        }
        ("networking.k8s.io/v1", "NetworkPolicy") => {
            validate_name("Namespace", &namespace)?;
            let mut np = typed!(NetworkPolicy);
            np.metadata.namespace = Some(namespace.clone());
            insert_unique(&mut out.network_policies, format!("{namespace}/{name}"), np, &kind)?
        }
        (_, "Namespace" | "Node" | "Pod" | "Service") => {
            return Err(format!("{kind} {name}: apiVersion must be v1, not {api_version:?}"));
        }
        (_, "EndpointSlice") => {
            return Err(format!("{kind} {name}: apiVersion must be discovery.k8s.io/v1, not {api_version:?}"));
        }
        (_, "NetworkPolicy") => {
            return Err(format!("{kind} {name}: apiVersion must be networking.k8s.io/v1, not {api_version:?}"));
        }
        _ => out.ignored.push(format!("{kind} {namespace}/{name} ({})", file.display())),
    }
    Ok(())
}

fn insert_unique<T>(map: &mut BTreeMap<String, Arc<T>>, key: String, v: T, kind: &str) -> Result<(), String> {
    if map.contains_key(&key) {
        return Err(format!("duplicate {kind} {key}"));
    }
    map.insert(key, Arc::new(v));
    Ok(())
}

/// Object names must be DNS-1123 labels (Namespaces, Pods as used here) or subdomains (Nodes).
fn validate_name(kind: &str, name: &str) -> Result<(), String> {
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
        Err(format!("{kind} name {name:?} is not a valid Kubernetes name (lowercase DNS label)"))
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
    fn errors_name_file_and_document() {
        let mut m = Manifests::default();
        let e = add_documents(&mut m, Path::new("bad.yaml"), "kind: Pod\napiVersion: v1\nmetadata: {name: a}\n---\n: : :\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("bad.yaml, document 2: invalid YAML"), "{e}");
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
