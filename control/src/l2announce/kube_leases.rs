//! Announcement Leases in the Kubernetes API: `coordination.k8s.io/v1` Leases of one
//! namespace, through kube-rs, on a current-thread tokio runtime owned by the caller's thread.
//!
//! Contract: [`KubeLeases`] is a [`LeaseStore`]: `get` is a GET (404: none), `create` a POST,
//! `update` a PUT carrying the `resourceVersion` read, so the API server refuses a stale write
//! with 409 Conflict ([`StoreError::Conflict`], as is 409 AlreadyExists on create). Every request
//! has the timeout given to [`KubeLeases::new`] (the retry period: a round never waits
//! on the API longer than it waits between rounds); any other failure is [`StoreError::Unavailable`] with the API's
//! message. The switch's service account needs `get`, `create` and `update` on `leases` in
//! the namespace (the DaemonSet's Role in `scripts/deploy/` grants them).
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams};

use super::lease_store::{from_lease, to_lease, LeaseRecord, LeaseStore, StoreError, Stored};

pub struct KubeLeases {
    rt: tokio::runtime::Runtime,
    /// How long one request may take.
    timeout: Duration,
    api: Api<Lease>,
    namespace: String,
    server: String,
}

impl KubeLeases {
    /// The store for Leases of `namespace` on the API server of `config`; each request gets
    /// `timeout`.
    pub fn new(config: kube::Config, namespace: &str, timeout: Duration) -> Result<Self, StoreError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StoreError::Unavailable(format!("cannot start a runtime for the Lease client: {e}")))?;
        let server = config.cluster_url.to_string();
        let client = {
            let _in_runtime = rt.enter();
            kube::Client::try_from(config).map_err(|e| StoreError::Unavailable(format!("Lease client for {server}: {e}")))?
        };
        Ok(Self { rt, timeout, api: Api::namespaced(client, namespace), namespace: namespace.to_string(), server })
    }

    fn call<T>(&self, what: &str, f: impl std::future::Future<Output = Result<T, kube::Error>>) -> Result<T, StoreError> {
        // The timer is made inside the runtime (a Sleep made outside it has no reactor).
        match self.rt.block_on(async { tokio::time::timeout(self.timeout, f).await }) {
            Err(_) => Err(StoreError::Unavailable(format!("{what}: no answer from {} within {:?}", self.server, self.timeout))),
            Ok(Err(kube::Error::Api(s))) if s.code == 409 => Err(StoreError::Conflict),
            Ok(Err(e)) => Err(StoreError::Unavailable(format!("{what}: {e}"))),
            Ok(Ok(v)) => Ok(v),
        }
    }
}

impl LeaseStore for KubeLeases {
    fn get(&mut self, name: &str) -> Result<Option<Stored>, StoreError> {
        let lease = self.call(&format!("get Lease {}/{name}", self.namespace), self.api.get_opt(name))?;
        lease.as_ref().map(from_lease).transpose()
    }

    fn create(&mut self, name: &str, record: &LeaseRecord) -> Result<Stored, StoreError> {
        let lease = to_lease(&self.namespace, name, record);
        let made = self.call(&format!("create Lease {}/{name}", self.namespace), self.api.create(&PostParams::default(), &lease))?;
        from_lease(&made)
    }

    fn update(&mut self, name: &str, record: &LeaseRecord, version: &str) -> Result<Stored, StoreError> {
        let mut lease = to_lease(&self.namespace, name, record);
        lease.metadata.resource_version = Some(version.to_string());
        let put = self.call(&format!("update Lease {}/{name}", self.namespace), self.api.replace(name, &PostParams::default(), &lease))?;
        from_lease(&put)
    }

    fn describe(&self) -> String {
        format!("namespace {} of {}", self.namespace, self.server)
    }
}
