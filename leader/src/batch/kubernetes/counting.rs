//! Counts every request the leader's Kubernetes clients send, by verb,
//! resource and HTTP status, for `/metrics` ([`ApiRequests`]).
//!
//! A tower layer under kube's client, so that every call is counted once
//! per HTTP request whatever sent it (a retried call counts each try; a
//! watch counts when its response starts, a port-forward when it is
//! upgraded). The verb is the one RBAC and the API server's audit log use,
//! derived from the method and the path as the API server derives it; the
//! resource is the path's resource (with its subresource, `pods/log`),
//! never an object's name, so the labels stay bounded.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Method, Request, Response};
use tower::{Layer, Service};

use crate::metrics::ApiRequests;

/// The layer: wraps a client's service so that it counts into `requests`.
#[derive(Clone, Debug)]
pub struct CountingLayer(pub ApiRequests);

impl<S> Layer<S> for CountingLayer {
    type Service = Counting<S>;

    fn layer(&self, inner: S) -> Counting<S> {
        Counting {
            inner,
            requests: self.0.clone(),
        }
    }
}

/// A service that counts the requests it passes on.
#[derive(Clone, Debug)]
pub struct Counting<S> {
    inner: S,
    requests: ApiRequests,
}

impl<S, B, R> Service<Request<B>> for Counting<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<R>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let (verb, resource) = classify(req.method(), req.uri().path(), req.uri().query());
        let requests = self.requests.clone();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let r = fut.await;
            let code = r.as_ref().ok().map(|resp| resp.status().as_u16());
            requests.record(verb, &resource, code);
            r
        })
    }
}

/// The verb and resource of a request: `GET /api/v1/namespaces/ns/pods`
/// is (`list`, `pods`); with `watch=true`, `watch`; `DELETE` of a
/// collection is `deletecollection`. Paths that name no resource (`/api`,
/// `/apis/batch/v1`, `/version`) are (`get`, `discovery`).
pub fn classify(method: &Method, path: &str, query: Option<&str>) -> (&'static str, String) {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    // After `api/v1` or `apis/GROUP/VERSION`.
    let rest: &[&str] = match parts.as_slice() {
        ["api", _version, rest @ ..] => rest,
        ["apis", _group, _version, rest @ ..] => rest,
        _ => &[],
    };
    // `namespaces/NS/RESOURCE...` is namespaced; `namespaces` and
    // `namespaces/NS` are the namespaces themselves.
    let rest = match rest {
        ["namespaces", _ns, inner @ ..] if !inner.is_empty() => inner,
        other => other,
    };
    let (resource, collection) = match rest {
        [] => return (verb_of(method, false, query), "discovery".to_string()),
        [r] => (r.to_string(), true),
        [r, _name] => (r.to_string(), false),
        [r, _name, sub, ..] => (format!("{r}/{sub}"), false),
    };
    let bounded = resource.len() <= 64
        && resource
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'/' || b == b'-');
    let resource = if bounded {
        resource
    } else {
        "other".to_string()
    };
    (verb_of(method, collection, query), resource)
}

fn verb_of(method: &Method, collection: bool, query: Option<&str>) -> &'static str {
    let watching = query.is_some_and(|q| {
        q.split('&')
            .any(|kv| kv == "watch=true" || kv == "watch=1" || kv == "watch")
    });
    match *method {
        Method::GET if watching => "watch",
        Method::GET if collection => "list",
        Method::GET | Method::HEAD => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if collection => "deletecollection",
        Method::DELETE => "delete",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(method: Method, uri: &str) -> (&'static str, String) {
        let (path, query) = match uri.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (uri, None),
        };
        classify(&method, path, query)
    }

    #[test]
    fn requests_are_classified_as_the_api_server_does() {
        let t = |v: &str, r: &str| (v.to_string(), r.to_string());
        let got = |m, u| {
            let (v, r) = c(m, u);
            (v.to_string(), r)
        };
        assert_eq!(
            got(Method::POST, "/apis/batch/v1/namespaces/ns/jobs"),
            t("create", "jobs")
        );
        assert_eq!(
            got(
                Method::GET,
                "/api/v1/namespaces/ns/pods?labelSelector=a%3Db&limit=1"
            ),
            t("list", "pods")
        );
        assert_eq!(
            got(
                Method::GET,
                "/api/v1/namespaces/ns/pods?resourceVersion=5&watch=true&allowWatchBookmarks=true"
            ),
            t("watch", "pods")
        );
        assert_eq!(
            got(
                Method::GET,
                "/api/v1/namespaces/ns/pods/p-1/log?follow=true"
            ),
            t("get", "pods/log")
        );
        assert_eq!(
            got(
                Method::DELETE,
                "/apis/batch/v1/namespaces/ns/jobs/toil-x?propagationPolicy=Background"
            ),
            t("delete", "jobs")
        );
        assert_eq!(
            got(
                Method::DELETE,
                "/apis/batch/v1/namespaces/ns/jobs?labelSelector=x"
            ),
            t("deletecollection", "jobs")
        );
        assert_eq!(got(Method::GET, "/api/v1/nodes"), t("list", "nodes"));
        assert_eq!(
            got(Method::GET, "/api/v1/namespaces/ns"),
            t("get", "namespaces")
        );
        assert_eq!(got(Method::GET, "/apis/batch/v1"), t("get", "discovery"));
        assert_eq!(got(Method::GET, "/version"), t("get", "discovery"));
        assert_eq!(
            got(
                Method::GET,
                "/api/v1/namespaces/ns/pods/p/portforward?ports=1"
            ),
            t("get", "pods/portforward")
        );
        // Object names never become labels.
        assert_eq!(
            got(Method::PATCH, "/api/v1/namespaces/ns/pods/WEIRD_Name"),
            t("patch", "pods")
        );
        assert_eq!(
            got(Method::GET, "/api/v1/namespaces/ns/Odd_Things"),
            t("list", "other")
        );
    }
}
