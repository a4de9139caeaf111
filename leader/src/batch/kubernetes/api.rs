//! API hygiene: how the leader connects, retries and paces its calls.
//!
//! - The client comes from the same places kubectl reads (`KUBECONFIG`,
//!   `~/.kube/config` with its current context and namespace, or the pod's
//!   service account), with kube's own retry layer off so that every retry
//!   decision is made here, once.
//! - 429 waits as long as the server asks (`Retry-After`, which the API
//!   server also puts in the Status as `details.retryAfterSeconds`); 5xx
//!   and broken connections back off exponentially with jitter (the
//!   workspace's one backoff, [`toil_jobstore::backoff`]); every other
//!   4xx fails at once with a message that says what to fix (a 403 names
//!   the RBAC rule that is missing).
//! - Job creations pass a token bucket (`--kubernetesMaxCreatesPerSecond`).

use std::future::Future;
use std::time::Duration;

use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use toil_jobstore::backoff::{Backoff, Budget, Verdict};
use tokio::time::Instant;

use super::counting::CountingLayer;
use crate::metrics::ApiRequests;

/// A call's target, for error messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The RBAC verb (`create`, `list`, `deletecollection`).
    pub verb: &'static str,
    /// The resource (`jobs`, `pods/log`).
    pub resource: &'static str,
    /// Its API group (`batch`, or empty for the core group).
    pub group: &'static str,
    /// The namespace, empty for cluster-scoped resources.
    pub namespace: String,
}

impl Target {
    /// A namespaced target.
    pub fn new(verb: &'static str, resource: &'static str, group: &'static str, ns: &str) -> Self {
        Target {
            verb,
            resource,
            group,
            namespace: ns.to_string(),
        }
    }
}

/// A call that failed for good.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The server refused; retrying cannot help.
    #[error("{message}")]
    Refused {
        /// HTTP status.
        code: u16,
        /// The Status reason (`Forbidden`, `AlreadyExists`).
        reason: String,
        /// What happened and what to do.
        message: String,
    },
    /// The server or the network kept failing past the retry budget, or
    /// the response could not be read.
    #[error("{message}")]
    Unavailable {
        /// What happened.
        message: String,
    },
}

impl ApiError {
    /// The HTTP status of a refusal.
    pub fn code(&self) -> Option<u16> {
        match self {
            ApiError::Refused { code, .. } => Some(*code),
            ApiError::Unavailable { .. } => None,
        }
    }
}

/// Retry settings.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// The waits after a 5xx, a broken connection or a 429 without
    /// `Retry-After`, and how many calls in all (a `Retry-After` spends the
    /// same budget).
    pub backoff: Backoff,
    /// Longest `Retry-After` honoured as given (longer ones are capped).
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            // Ten calls ride out an API server restart (about a minute of
            // waiting) without hiding a cluster that is really gone.
            backoff: Backoff::new(
                Duration::from_millis(200),
                Duration::from_secs(10),
                Budget::Attempts(10),
            ),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// How a failed call is treated: 429 and 5xx (but 501, which will not
    /// change) are retried, after the server's `Retry-After` when it gave
    /// one; so are broken connections; every other error is final.
    pub fn judge(&self, err: &kube::Error) -> Verdict {
        match err {
            kube::Error::Api(s)
                if s.code == 429 || ((500..=599).contains(&s.code) && s.code != 501) =>
            {
                let asked = s
                    .details
                    .as_ref()
                    .map(|d| d.retry_after_seconds)
                    .filter(|&s| s > 0)
                    .map(|s| Duration::from_secs(u64::from(s)).min(self.max_retry_after));
                asked.map_or(Verdict::Retry, Verdict::RetryAfter)
            }
            kube::Error::Api(_) => Verdict::Fail,
            kube::Error::HyperError(_) | kube::Error::Service(_) => Verdict::Retry,
            _ => Verdict::Fail,
        }
    }
}

/// Runs `f` until it succeeds or `policy` gives up; `what` says what the
/// call does (`creating Job x`) for the error message.
pub async fn call<T, F, Fut>(
    policy: &RetryPolicy,
    target: &Target,
    what: &str,
    f: F,
) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    policy
        .backoff
        .retry(
            f,
            |e| policy.judge(e),
            |e, attempt, wait| {
                tracing::debug!(%what, attempt, wait_ms = wait.as_millis() as u64, error = %short(e), "retrying a Kubernetes API call");
            },
        )
        .await
        .map_err(|g| explain(&g.error, target, what, g.attempts))
}

/// The part of a kube error worth showing.
pub fn short(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} ({} {})", s.message, s.code, s.reason),
        other => other.to_string(),
    }
}

/// Turns a final failure into a message naming the problem and the fix.
pub fn explain(e: &kube::Error, t: &Target, what: &str, attempts: u32) -> ApiError {
    let ns = if t.namespace.is_empty() {
        String::new()
    } else {
        format!(" in namespace {:?}", t.namespace)
    };
    let group = if t.group.is_empty() {
        "\"\" (core)".to_string()
    } else {
        format!("{:?}", t.group)
    };
    match e {
        kube::Error::Api(s) if s.code == 429 || s.code >= 500 => ApiError::Unavailable {
            message: format!(
                "{what}: the API server kept failing ({} {}: {}) after {attempts} attempts",
                s.code, s.reason, s.message
            ),
        },
        kube::Error::Api(s) => {
            let hint = match s.code {
                401 => " — the cluster rejected the credentials of the kubeconfig context (an expired token?); log in again (`kubectl get pods` shows the same error)".to_string(),
                403 => format!(
                    " — the leader's Kubernetes identity may not `{}` `{}` (apiGroup {group}){ns}: apply deploy/rbac.yaml, or add this verb to the {} bound to that identity",
                    t.verb,
                    t.resource,
                    if t.namespace.is_empty() { "ClusterRole" } else { "Role" }
                ),
                404 if t.namespace.is_empty() => String::new(),
                404 => format!(
                    " — check that namespace {:?} exists (kubectl get namespace {}) or choose another with --kubernetesNamespace",
                    t.namespace, t.namespace
                ),
                422 => " — the cluster rejected the object the leader built; this is a bug or a bad setting (image name, resource name, volume), see the message".to_string(),
                _ => String::new(),
            };
            ApiError::Refused {
                code: s.code,
                reason: s.reason.clone(),
                message: format!("{what}: {} ({} {}){hint}", s.message, s.code, s.reason),
            }
        }
        other => ApiError::Unavailable {
            message: format!("{what}: {other} (after {attempts} attempts)"),
        },
    }
}

/// The connection: a client, its namespace and where it points.
pub struct Connection {
    /// The client (no built-in retries; see [`call`]).
    pub client: Client,
    /// The namespace objects go in.
    pub namespace: String,
    /// The API server's URL, for messages.
    pub server: String,
    /// How the configuration was found (`context NAME`, `in-cluster`).
    pub source: String,
    /// A second client for long-lived streams (the tunnels'
    /// port-forwards); see [`stream_client`].
    pub streams: Client,
    /// What both clients have sent, by verb, resource and status.
    pub requests: ApiRequests,
}

/// A client for long-lived streams such as the tunnels' port-forwards.
/// kube's own client leaves Nagle's algorithm on, so a small frame (a log
/// line, an HTTP/2 acknowledgement) sent while an earlier one is not yet
/// acknowledged waits for the API server's delayed ACK, about 40 ms each
/// time; this one sets TCP_NODELAY. It also has no read timeout: an idle
/// tunnel is not a dead one (the tunnels keep themselves alive).
fn stream_client(config: &kube::Config, requests: &ApiRequests) -> Result<Client, String> {
    use hyper_util::client::legacy::connect::HttpConnector;
    use kube::client::ConfigExt;
    let server = &config.cluster_url;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(config.connect_timeout);
    let https = config
        .rustls_https_connector_with_connector(http)
        .map_err(|e| format!("cannot build a TLS connector for {server}: {e}"))?;
    let hyper = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(https);
    let auth = config
        .auth_layer()
        .map_err(|e| format!("cannot authenticate to {server}: {e}"))?;
    let headers = config
        .extra_headers_layer()
        .map_err(|e| format!("cannot use the configured headers for {server}: {e}"))?;
    let service = tower::ServiceBuilder::new()
        .layer(CountingLayer(requests.clone()))
        .layer(config.base_uri_layer())
        .option_layer(auth)
        .layer(headers)
        .map_err(|e: hyper_util::client::legacy::Error| {
            Box::new(e) as Box<dyn std::error::Error + Send + Sync>
        })
        .service(hyper);
    Ok(Client::new(service, config.default_namespace.clone()))
}

/// Builds a client the way kubectl finds its configuration, with kube's
/// retry layer off.
pub async fn connect(context: Option<&str>, namespace: Option<&str>) -> Result<Connection, String> {
    let (mut config, source) = match context {
        Some(ctx) => {
            let opts = KubeConfigOptions {
                context: Some(ctx.to_string()),
                ..Default::default()
            };
            let cfg = kube::Config::from_kubeconfig(&opts).await.map_err(|e| {
                format!(
                    "cannot use kubeconfig context {ctx:?}: {e}; list the contexts with `kubectl config get-contexts`"
                )
            })?;
            (cfg, format!("context {ctx}"))
        }
        None => {
            let cfg = kube::Config::infer().await.map_err(|e| {
                format!(
                    "cannot find a Kubernetes configuration: {e}; set KUBECONFIG, create ~/.kube/config (for example with your provider's `get-credentials` command), or run the leader inside the cluster"
                )
            })?;
            let source = if std::env::var_os("KUBECONFIG").is_some() || Kubeconfig::read().is_ok() {
                match Kubeconfig::read().ok().and_then(|k| k.current_context) {
                    Some(c) => format!("context {c}"),
                    None => "kubeconfig".to_string(),
                }
            } else {
                "in-cluster service account".to_string()
            };
            (cfg, source)
        }
    };
    config.default_retry = false;
    let ns = namespace
        .map(str::to_string)
        .unwrap_or_else(|| config.default_namespace.clone());
    let server = config.cluster_url.to_string();
    let requests = ApiRequests::default();
    let streams = stream_client(&config, &requests)?;
    let client = kube::client::ClientBuilder::try_from(config)
        .map_err(|e| format!("cannot build a Kubernetes client for {server}: {e}"))?
        .with_layer(&CountingLayer(requests.clone()))
        .build();
    Ok(Connection {
        client,
        namespace: ns,
        server,
        source,
        streams,
        requests,
    })
}

/// A token bucket: `rate` tokens a second, holding at most one second's
/// worth (and at least one).
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: f64, now: Instant) -> Self {
        let rate = rate.max(0.001);
        let burst = rate.max(1.0);
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        self.last = now;
    }

    /// Takes a token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// How long until a token is there.
    pub fn wait(&mut self, now: Instant) -> Duration {
        self.refill(now);
        if self.tokens >= 1.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - self.tokens) / self.rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use kube::core::Status;
    use kube::core::response::StatusDetails;

    use super::*;

    fn api(code: u16, reason: &str, retry_after: u32) -> kube::Error {
        kube::Error::Api(Box::new(Status {
            status: None,
            code,
            message: format!("{reason} message"),
            metadata: None,
            reason: reason.into(),
            details: (retry_after > 0).then(|| StatusDetails {
                name: String::new(),
                group: String::new(),
                kind: String::new(),
                uid: String::new(),
                causes: vec![],
                retry_after_seconds: retry_after,
            }),
        }))
    }

    #[test]
    fn what_is_retried() {
        let p = RetryPolicy::default();
        assert_eq!(
            p.judge(&api(429, "TooManyRequests", 3)),
            Verdict::RetryAfter(Duration::from_secs(3))
        );
        assert_eq!(
            p.judge(&api(429, "TooManyRequests", 3600)),
            Verdict::RetryAfter(Duration::from_secs(60)),
            "long Retry-After values are capped"
        );
        assert_eq!(p.judge(&api(429, "TooManyRequests", 0)), Verdict::Retry);
        assert_eq!(
            p.judge(&api(503, "ServiceUnavailable", 5)),
            Verdict::RetryAfter(Duration::from_secs(5))
        );
        for code in [500, 502, 503, 504] {
            assert_eq!(p.judge(&api(code, "X", 0)), Verdict::Retry, "{code}");
        }
        for code in [400, 401, 403, 404, 409, 410, 422, 501] {
            assert_eq!(p.judge(&api(code, "X", 0)), Verdict::Fail, "{code}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_server_that_keeps_failing_spends_the_budget() {
        let n = AtomicU32::new(0);
        let t0 = Instant::now();
        let target = Target::new("list", "pods", "", "toil");
        let p = RetryPolicy::default();
        let r: Result<(), ApiError> = call(&p, &target, "listing pods", || {
            n.fetch_add(1, Ordering::SeqCst);
            async { Err(api(500, "InternalError", 0)) }
        })
        .await;
        assert_eq!(n.load(Ordering::SeqCst), 10);
        let msg = r.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.ends_with("after 10 attempts"), "{msg}");
        // Nine waits: up to 0.2, 0.4, ... 6.4 s, then the 10 s cap three
        // times; each at least half of that.
        let waited = t0.elapsed();
        let full = Duration::from_millis(200 * 63) + Duration::from_secs(30);
        assert!(waited >= full / 2 && waited <= full, "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn call_honours_retry_after_then_succeeds() {
        let n = AtomicU32::new(0);
        let t0 = Instant::now();
        let target = Target::new("create", "jobs", "batch", "toil");
        let r: Result<u32, ApiError> =
            call(&RetryPolicy::default(), &target, "creating Job x", || {
                let i = n.fetch_add(1, Ordering::SeqCst);
                async move {
                    match i {
                        0 | 1 => Err(api(429, "TooManyRequests", 2)),
                        2 => Err(api(500, "InternalError", 0)),
                        _ => Ok(7),
                    }
                }
            })
            .await;
        assert_eq!(r.ok(), Some(7));
        assert_eq!(n.load(Ordering::SeqCst), 4);
        let waited = t0.elapsed();
        assert!(
            waited >= Duration::from_secs(4) && waited < Duration::from_secs(5),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn forbidden_fails_at_once_naming_the_rule() {
        let n = AtomicU32::new(0);
        let target = Target::new("create", "jobs", "batch", "toil");
        let r: Result<(), ApiError> =
            call(&RetryPolicy::default(), &target, "creating Job x", || {
                n.fetch_add(1, Ordering::SeqCst);
                async { Err(api(403, "Forbidden", 0)) }
            })
            .await;
        assert_eq!(n.load(Ordering::SeqCst), 1);
        let e = r.err().map(|e| (e.code(), e.to_string()));
        let (code, msg) = e.unwrap_or_default();
        assert_eq!(code, Some(403));
        assert!(
            msg.starts_with("creating Job x: Forbidden message (403 Forbidden)"),
            "{msg}"
        );
        assert!(
            msg.contains("may not `create` `jobs` (apiGroup \"batch\") in namespace \"toil\": apply deploy/rbac.yaml"),
            "{msg}"
        );
        let e = explain(&api(500, "InternalError", 0), &target, "listing", 10);
        assert!(matches!(e, ApiError::Unavailable { .. }));
        assert!(e.to_string().contains("after 10 attempts"));
    }

    #[test]
    fn bucket_paces_creations() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(5.0, t0);
        for _ in 0..5 {
            assert!(b.try_take(t0));
        }
        assert!(!b.try_take(t0), "a second's burst, no more");
        assert_eq!(b.wait(t0), Duration::from_millis(200));
        assert!(b.try_take(t0 + Duration::from_millis(200)));
        let mut slow = TokenBucket::new(0.5, t0);
        assert!(slow.try_take(t0));
        assert!(!slow.try_take(t0 + Duration::from_secs(1)));
        assert!(slow.try_take(t0 + Duration::from_secs(2)));
    }
}
