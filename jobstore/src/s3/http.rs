//! The HTTP client under the S3 SDK: the SDK's own client, wrapped to count
//! requests (S3 bills per request, and benchmarks report requests per
//! operation) and, in tests, to inject failures ([`FaultConfig`]).
//!
//! Faults are injected here, below the SDK, so that the real retry paths run:
//! the SDK's retry loop, the backend's conditional-write loop and its
//! resumption of downloads cut half-way.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::{
    RuntimeComponents, RuntimeComponentsBuilder,
};
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::config_bag::ConfigBag;
use bytes::Bytes;

use super::options::FaultConfig;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Counts of HTTP requests (every attempt, retries included), by kind, plus
/// the failures injected. Cheap to clone; clones share the counters.
#[derive(Clone, Debug, Default)]
pub struct RequestStats {
    inner: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    get: AtomicU64,
    list: AtomicU64,
    head: AtomicU64,
    put: AtomicU64,
    post: AtomicU64,
    delete: AtomicU64,
    faults: AtomicU64,
}

/// A snapshot of [`RequestStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestCounts {
    /// `GET` of an object (whole or a range).
    pub get: u64,
    /// `GET` of a listing (`ListObjectsV2`, `ListMultipartUploads`).
    pub list: u64,
    /// `HEAD` of an object or a bucket.
    pub head: u64,
    /// `PUT`: objects, upload parts, bucket creation.
    pub put: u64,
    /// `POST`: multipart create/complete, batched deletes.
    pub post: u64,
    /// `DELETE`: objects, aborted uploads, the bucket.
    pub delete: u64,
    /// Attempts failed on purpose by fault injection (included above).
    pub faults_injected: u64,
}

impl RequestCounts {
    /// All requests sent (or failed by injection before being sent).
    pub fn total(&self) -> u64 {
        self.get + self.list + self.head + self.put + self.post + self.delete
    }

    /// The requests between `earlier` and `self`.
    pub fn since(&self, earlier: &RequestCounts) -> RequestCounts {
        RequestCounts {
            get: self.get - earlier.get,
            list: self.list - earlier.list,
            head: self.head - earlier.head,
            put: self.put - earlier.put,
            post: self.post - earlier.post,
            delete: self.delete - earlier.delete,
            faults_injected: self.faults_injected - earlier.faults_injected,
        }
    }
}

impl RequestStats {
    /// The counts so far.
    pub fn snapshot(&self) -> RequestCounts {
        let c = &self.inner;
        RequestCounts {
            get: c.get.load(Ordering::Relaxed),
            list: c.list.load(Ordering::Relaxed),
            head: c.head.load(Ordering::Relaxed),
            put: c.put.load(Ordering::Relaxed),
            post: c.post.load(Ordering::Relaxed),
            delete: c.delete.load(Ordering::Relaxed),
            faults_injected: c.faults.load(Ordering::Relaxed),
        }
    }

    fn count(&self, req: &HttpRequest) {
        let c = &self.inner;
        let query = req.uri().split_once('?').map_or("", |(_, q)| q);
        let counter = match req.method() {
            "GET" if query.contains("list-type=") || query.contains("uploads") => &c.list,
            "GET" => &c.get,
            "HEAD" => &c.head,
            "PUT" => &c.put,
            "POST" => &c.post,
            "DELETE" => &c.delete,
            _ => &c.get,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The HTTP client the SDK would build for itself: hyper 1 with rustls
/// (aws-lc), the connector settings (timeouts) the SDK asks for, and the
/// proxy from `HTTPS_PROXY`/`NO_PROXY`.
pub(crate) fn sdk_default_client() -> SharedHttpClient {
    use aws_smithy_http_client::proxy::ProxyConfig;
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    use aws_smithy_http_client::{Builder, ConnectorBuilder};
    Builder::new().build_with_connector_fn(|settings, components| {
        let mut conn =
            ConnectorBuilder::default().tls_provider(Provider::Rustls(CryptoMode::AwsLc));
        conn.set_connector_settings(settings.cloned());
        if let Some(components) = components {
            conn.set_sleep_impl(components.sleep_impl());
        }
        conn.set_proxy_config(Some(ProxyConfig::from_env()));
        conn.build()
    })
}

/// Wraps the SDK's HTTP client.
#[derive(Debug)]
pub(crate) struct InstrumentedClient {
    inner: SharedHttpClient,
    stats: RequestStats,
    faults: Option<Arc<FaultState>>,
}

impl InstrumentedClient {
    pub(crate) fn wrap(
        inner: SharedHttpClient,
        stats: RequestStats,
        faults: Option<FaultConfig>,
    ) -> SharedHttpClient {
        SharedHttpClient::new(InstrumentedClient {
            inner,
            stats,
            faults: faults.map(|config| {
                Arc::new(FaultState {
                    config,
                    attempts: Mutex::new(HashMap::new()),
                })
            }),
        })
    }
}

impl HttpClient for InstrumentedClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(InstrumentedConnector {
            inner: self.inner.http_connector(settings, components),
            stats: self.stats.clone(),
            faults: self.faults.clone(),
        })
    }

    fn validate_base_client_config(
        &self,
        runtime_components: &RuntimeComponentsBuilder,
        cfg: &ConfigBag,
    ) -> Result<(), BoxError> {
        self.inner
            .validate_base_client_config(runtime_components, cfg)
    }

    fn validate_final_config(
        &self,
        runtime_components: &RuntimeComponents,
        cfg: &ConfigBag,
    ) -> Result<(), BoxError> {
        self.inner.validate_final_config(runtime_components, cfg)
    }
}

#[derive(Debug)]
struct InstrumentedConnector {
    inner: SharedHttpConnector,
    stats: RequestStats,
    faults: Option<Arc<FaultState>>,
}

/// Which failure an attempt gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// `503 SlowDown` without sending.
    SlowDown,
    /// Sent and carried out; the answer replaced by a reset.
    ResetAfterSend,
    /// Object bodies cut half-way (else as `ResetAfterSend`).
    TruncateBody,
}

#[derive(Debug)]
struct FaultState {
    config: FaultConfig,
    /// Failed attempts so far per request (method and URI), removed when an
    /// attempt is let through.
    attempts: Mutex<HashMap<String, u32>>,
}

impl FaultState {
    fn next(&self, req: &HttpRequest) -> Option<Fault> {
        if let Some(only) = &self.config.only_uri_containing
            && !req.uri().contains(only.as_str())
        {
            return None;
        }
        let id = format!("{} {}", req.method(), req.uri());
        let mut attempts = self.attempts.lock().unwrap_or_else(|e| e.into_inner());
        let failed = attempts.get(&id).copied().unwrap_or(0);
        if failed >= self.config.fail_first_n {
            attempts.remove(&id);
            return None;
        }
        attempts.insert(id, failed + 1);
        Some(match failed % 3 {
            0 => Fault::SlowDown,
            1 => Fault::ResetAfterSend,
            _ => Fault::TruncateBody,
        })
    }
}

fn injected_reset() -> ConnectorError {
    ConnectorError::io(Box::new(std::io::Error::new(
        std::io::ErrorKind::ConnectionReset,
        "connection reset by peer (injected by TOIL_JOBSTORE_FAIL_FIRST_N fault injection)",
    )))
}

fn slow_down() -> Result<HttpResponse, ConnectorError> {
    const BODY: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code><Message>Please reduce your request rate. (injected fault)</Message><RequestId>toil-fault</RequestId></Error>";
    let status = StatusCode::try_from(503u16).map_err(|_| injected_reset())?;
    let mut resp = HttpResponse::new(status, SdkBody::from(BODY));
    resp.headers_mut().insert("content-type", "application/xml");
    resp.headers_mut()
        .insert("content-length", BODY.len().to_string());
    Ok(resp)
}

impl HttpConnector for InstrumentedConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        self.stats.count(&request);
        let fault = self.faults.as_ref().and_then(|f| f.next(&request));
        let Some(fault) = fault else {
            return self.inner.call(request);
        };
        self.stats.inner.faults.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            method = request.method(),
            uri = request.uri(),
            ?fault,
            "injecting a fault"
        );
        if fault == Fault::SlowDown {
            return HttpConnectorFuture::ready(slow_down());
        }
        let is_get = request.method() == "GET";
        let inner = self.inner.call(request);
        HttpConnectorFuture::new(async move {
            let mut resp = inner.await?;
            let status = resp.status().as_u16();
            let len: u64 = resp
                .headers()
                .get("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let object_body =
                is_get && (status == 200 || status == 206) && resp.headers().contains_key("etag");
            if fault == Fault::TruncateBody && object_body && len > 0 {
                let body = resp.take_body();
                *resp.body_mut() = SdkBody::from_body_1_x(Truncated {
                    inner: body,
                    remaining: len / 2,
                });
                return Ok(resp);
            }
            drop(resp);
            Err(injected_reset())
        })
    }
}

/// A body that ends with a reset after `remaining` bytes.
struct Truncated {
    inner: SdkBody,
    remaining: u64,
}

impl http_body::Body for Truncated {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.remaining == 0 {
            return Poll::Ready(Some(Err(Box::new(injected_reset()))));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(mut data) => {
                    if data.len() as u64 > this.remaining {
                        data.truncate(this.remaining as usize);
                    }
                    this.remaining -= data.len() as u64;
                    Poll::Ready(Some(Ok(http_body::Frame::data(data))))
                }
                Err(frame) => Poll::Ready(Some(Ok(frame))),
            },
            // The real body ended early: still end with the reset.
            Poll::Ready(None) => {
                this.remaining = 0;
                Poll::Ready(Some(Err(Box::new(injected_reset()))))
            }
            other => other,
        }
    }
}
