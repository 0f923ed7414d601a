//! A tower layer under the kube client that records whether the API server answers: every
//! request that gets a response (whatever its status) marks the source (and the kind of the
//! request's path) connected, every request that fails below HTTP (refused, reset, TLS,
//! timeout) marks them disconnected with the error.
//!
//! The watchers alone cannot tell: kube-runtime swallows bookmarks, so a watch that was
//! re-established after an outage produces nothing until an object changes.
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_layer::Layer;
use tower_service::Service;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Told about each request's outcome.
pub(crate) trait Observer: Send + Sync + 'static {
    /// `path` is the request's URL path (`/api/v1/pods`, ...).
    fn answered(&self, path: &str);
    fn failed(&self, path: &str, error: String);
}

#[derive(Clone)]
pub(crate) struct TrackLayer(pub Arc<dyn Observer>);

impl<S> Layer<S> for TrackLayer {
    type Service = Track<S>;

    fn layer(&self, inner: S) -> Track<S> {
        Track { inner, observer: Arc::clone(&self.0) }
    }
}

#[derive(Clone)]
pub(crate) struct Track<S> {
    inner: S,
    observer: Arc<dyn Observer>,
}

impl<S, B> Service<http::Request<B>> for Track<S>
where
    S: Service<http::Request<B>>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let path = req.uri().path().to_string();
        let fut = self.inner.call(req);
        let observer = Arc::clone(&self.observer);
        Box::pin(async move {
            let r = fut.await.map_err(Into::into);
            match &r {
                Ok(_) => observer.answered(&path),
                Err(e) => observer.failed(&path, error_chain(e.as_ref())),
            }
            r
        })
    }
}

/// `outer: inner: innermost`, without repeating a message its cause already says.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let m = s.to_string();
        if !out.contains(&m) {
            out.push_str(": ");
            out.push_str(&m);
        }
        cur = s.source();
    }
    out
}
