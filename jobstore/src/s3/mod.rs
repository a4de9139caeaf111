//! The `aws:` backend: a job store in the S3 bucket `NAME--toil`.
//!
//! - The bucket is created by [`S3Backend::initialize`] in the locator's
//!   region, and marked as a job store by the object [`MARKER`] (the same
//!   name the file backend uses), which `exists` and `destroy` look for.
//! - Configuration comes from the standard AWS chain (environment,
//!   `~/.aws/config` and `~/.aws/credentials`, web identity on EKS, ECS,
//!   instance metadata); `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_S3` point it
//!   at an S3-compatible store, and then path-style addressing is used.
//!   [`S3Options`] adds what the chain does not say.
//! - Conditional writes map to `If-None-Match: *` and `If-Match: ETag`;
//!   versions are ETags. A conditional write whose first attempt may have
//!   landed is resolved by reading the object back (see
//!   [`S3Backend::put_bytes`]).
//! - Files stream ([`upload`], [`download`]): multipart uploads and
//!   streamed or ranged downloads, never the whole file in memory, hashed in
//!   the same pass.
//! - Transient failures are retried with backoff (the SDK's retry loop, plus
//!   the backend's own where the SDK cannot: conditional writes and response
//!   bodies that break off, which wait as [`crate::backoff`] says); permanent ones become [`Error::Permanent`] with
//!   a message naming the fix ([`errors`]).
//! - [`http`] counts requests and, for tests, injects faults
//!   ([`FaultConfig`]).

mod bucket;
mod download;
mod errors;
mod http;
mod options;
mod upload;

use std::path::Path;

use aws_config::BehaviorVersion;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::{RetryConfig, RetryPartition, TokenBucket};
use aws_sdk_s3::config::{Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use bytes::{Bytes, BytesMut};

use crate::error::{Error, Result};
use crate::file::MARKER;
use crate::locator::Locator;
use crate::types::{Condition, Object, Transfer, Version};

pub use errors::NO_CREDENTIALS;
pub use http::{RequestCounts, RequestStats};
pub use options::{
    BUCKET_OWNER_ENV, BucketOwner, DEFAULT_PART_SIZE, FAIL_FIRST_N_ENV, FaultConfig, MIN_PART_SIZE,
    RetryOptions, S3Options, StaticCredentials, TransferOptions,
};

use errors::{Failure, Target};

/// Object metadata key (`x-amz-meta-sha256`) holding the SHA-256 of objects
/// stored in one request.
pub const SHA256_METADATA: &str = "sha256";

/// S3's limit on keys per `DeleteObjects` request.
const DELETE_BATCH: usize = 1000;

/// A job store in an S3 bucket.
#[derive(Debug)]
pub struct S3Backend {
    /// The SDK client (connection pool, credentials cache, retry policy).
    client: Client,
    /// `NAME--toil`.
    bucket: String,
    /// The locator's region, where the bucket is created.
    region: String,
    /// The job store name (for messages suggesting a corrected locator).
    name: String,
    /// The locator as written, for messages.
    locator: String,
    /// Streaming transfer settings.
    transfer: TransferOptions,
    /// Pacing of the backend's own retry loops.
    retry: RetryOptions,
    /// The account that must own the bucket, sent with every request on it
    /// (`ExpectedBucketOwner`); `None` when not checked.
    owner: Option<String>,
    /// The HTTP requests sent, shared with the client's connector.
    stats: RequestStats,
}

impl S3Backend {
    pub(crate) async fn connect(
        region: &str,
        name: &str,
        locator: &Locator,
        opts: S3Options,
    ) -> Result<Self> {
        let bucket = locator
            .bucket()
            .unwrap_or_else(|| format!("{name}{}", crate::locator::BUCKET_SUFFIX));
        let locator = locator.to_string();
        errors::check_bucket_name(&bucket, &locator)?;

        let retry = RetryConfig::standard()
            .with_max_attempts(opts.retry.max_attempts.max(1))
            .with_initial_backoff(opts.retry.initial_backoff)
            .with_max_backoff(opts.retry.max_backoff);
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(region.to_string()))
            .retry_config(retry.clone());
        if let Some(url) = &opts.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        if let Some(c) = &opts.credentials {
            loader = loader.credentials_provider(Credentials::new(
                &c.access_key_id,
                &c.secret_access_key,
                None,
                None,
                "toil-jobstore",
            ));
        }
        let sdk = loader.load().await;

        let endpoint_set =
            opts.endpoint_url.is_some() || sdk.endpoint_url().is_some() || s3_endpoint_in_env();
        let inner_http = sdk.http_client().unwrap_or_else(http::sdk_default_client);
        if let Some(f) = &opts.faults {
            tracing::warn!(
                fail_first_n = f.fail_first_n,
                "fault injection is on for job store {locator}: every S3 request fails its first attempts (a test aid)"
            );
        }
        let conf = aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(opts.force_path_style.unwrap_or(endpoint_set))
            .http_client(http::InstrumentedClient::wrap(
                inner_http,
                opts.stats.clone(),
                opts.faults.clone(),
            ))
            .retry_config(retry)
            // No client-side retry quota: attempts are bounded per request,
            // there are few clients per store, and a leader that gives up on
            // its journal because a quota ran dry in a brownout is worse than
            // a few more backed-off retries.
            .retry_partition(
                RetryPartition::custom("toil-jobstore")
                    .token_bucket(TokenBucket::unlimited())
                    .build(),
            )
            .build();
        let mut backend = S3Backend {
            owner: None,
            client: Client::from_conf(conf),
            bucket,
            region: region.to_string(),
            name: name.to_string(),
            locator,
            transfer: opts.transfer,
            retry: opts.retry,
            stats: opts.stats.clone(),
        };
        backend.owner = match opts.bucket_owner {
            BucketOwner::Unchecked => None,
            BucketOwner::Account(a) => Some(a),
            BucketOwner::CallerAccount => backend.caller_account(&sdk).await?,
        };
        Ok(backend)
    }

    /// The account of the credentials in use, for `ExpectedBucketOwner`.
    ///
    /// The lookup needs no permission. When it fails for want of working
    /// credentials, the store's first request would fail the same way: no
    /// credentials at all is that error now; a key that is refused is left
    /// to the first S3 request, whose message names S3's complaint. An
    /// S3-compatible endpoint with no STS (MinIO, Ceph) skips the check
    /// with a warning saying how to turn it on; on AWS any other failure is
    /// an error.
    async fn caller_account(&self, sdk: &aws_config::SdkConfig) -> Result<Option<String>> {
        let custom_endpoint = sdk.endpoint_url().is_some() || s3_endpoint_in_env();
        let sts = aws_sdk_sts::Client::new(sdk);
        let e = match sts.get_caller_identity().send().await {
            Ok(out) => {
                return match out.account().map(BucketOwner::account) {
                    Some(Ok(BucketOwner::Account(a))) => Ok(Some(a)),
                    Some(Err(e)) => Err(e),
                    _ => Err(Error::Permanent {
                        message: format!(
                            "sts:GetCallerIdentity named no account for job store {}; set {BUCKET_OWNER_ENV} to the 12-digit account id that owns its bucket",
                            self.locator
                        ),
                    }),
                };
            }
            Err(e) => e,
        };
        let f = Failure::from_sdk(e);
        if f.credentials.is_some() {
            return Err(self.err(f, "sts:GetCallerIdentity", None));
        }
        let refused_key = [
            "InvalidClientTokenId",
            "SignatureDoesNotMatch",
            "InvalidAccessKeyId",
            "AccessDenied",
            "ExpiredToken",
        ]
        .iter()
        .any(|c| f.code_is(c))
            || matches!(f.status, Some(401 | 403));
        if refused_key {
            tracing::debug!(detail = %f.detail, "account lookup refused the credentials; the first S3 request will say why");
            return Ok(None);
        }
        if custom_endpoint {
            tracing::warn!(
                "the S3 endpoint of job store {} does not say which account you are (sts:GetCallerIdentity: {}), so bucket ownership is not checked; set {BUCKET_OWNER_ENV} to check it",
                self.locator,
                f.detail
            );
            return Ok(None);
        }
        Err(Error::Permanent {
            message: format!(
                "cannot find your AWS account for job store {} (sts:GetCallerIdentity: {}); check your AWS credentials and network, or set {BUCKET_OWNER_ENV} to the 12-digit account id that owns the bucket",
                self.locator, f.detail
            ),
        })
    }

    /// The bucket name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The HTTP requests sent so far, by kind (retries included).
    pub fn request_counts(&self) -> RequestCounts {
        self.stats.snapshot()
    }

    /// The account that must own the bucket, if checked.
    pub fn bucket_owner(&self) -> Option<&str> {
        self.owner.as_deref()
    }

    fn target<'a>(&'a self, key: Option<&'a str>) -> Target<'a> {
        Target {
            locator: &self.locator,
            bucket: &self.bucket,
            region: &self.region,
            name: &self.name,
            key,
        }
    }

    /// Maps a failure of `op` on `key` (or on the bucket).
    fn err(&self, f: Failure, op: &str, key: Option<&str>) -> Error {
        errors::to_error(f, op, self.target(key))
    }

    fn sdk_err<E>(
        &self,
        e: aws_sdk_s3::error::SdkError<
            E,
            aws_smithy_runtime_api::client::orchestrator::HttpResponse,
        >,
        op: &str,
        key: Option<&str>,
    ) -> Error
    where
        E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        self.err(Failure::from_sdk(e), op, key)
    }

    /// Writes a small object whole.
    ///
    /// `Always` writes are retried by the SDK. Conditional writes are retried
    /// here instead, because a retry after an attempt that may have landed
    /// (a timeout, a reset connection, a 5xx) can be refused by our *own*
    /// earlier write. So when such an attempt preceded a refusal, the object
    /// is read back: if it holds exactly these bytes, the write succeeded.
    pub(crate) async fn put_bytes(
        &self,
        key: &str,
        data: Bytes,
        cond: Condition,
    ) -> Result<Version> {
        let op = "s3:PutObject";
        let mut ambiguous = false;
        let mut delays = self.retry.backoff().delays();
        loop {
            let mut req = self
                .client
                .put_object()
                .bucket(&self.bucket)
                .set_expected_bucket_owner(self.owner.clone())
                .key(key)
                .content_length(data.len() as i64)
                .body(ByteStream::from(data.clone()));
            req = match &cond {
                Condition::Always => req,
                Condition::IfAbsent => req.if_none_match("*"),
                Condition::IfMatch(v) => req.if_match(&v.0),
            };
            let res = if cond == Condition::Always {
                req.send().await
            } else {
                req.customize()
                    .config_override(
                        aws_sdk_s3::config::Builder::default()
                            .retry_config(RetryConfig::disabled()),
                    )
                    .send()
                    .await
            };
            let f = match res {
                Ok(out) => return Ok(Version(out.e_tag().unwrap_or_default().to_string())),
                Err(e) => Failure::from_sdk(e),
            };
            let refused = f.status == Some(412)
                || (matches!(cond, Condition::IfMatch(_)) && f.is_not_found());
            if refused {
                if ambiguous
                    && let Some(obj) = self.get_bytes(key).await?
                    && obj.data == data
                {
                    tracing::debug!(key, "conditional write landed on an earlier attempt");
                    return Ok(obj.version);
                }
                return Err(Error::PreconditionFailed {
                    store: self.locator.clone(),
                    key: key.to_string(),
                });
            }
            if cond != Condition::Always
                && f.is_transient()
                && let Some(delay) = delays.next()
            {
                ambiguous = true;
                tracing::debug!(key, error = %f.detail, ?delay, "retrying a conditional write");
                tokio::time::sleep(delay).await;
                continue;
            }
            return Err(self.err(f, op, Some(key)));
        }
    }

    pub(crate) async fn get_bytes(&self, key: &str) -> Result<Option<Object>> {
        let mut delays = self.retry.backoff().delays();
        loop {
            let out = match self
                .client
                .get_object()
                .bucket(&self.bucket)
                .set_expected_bucket_owner(self.owner.clone())
                .key(key)
                .send()
                .await
            {
                Ok(out) => out,
                Err(e) => {
                    let f = Failure::from_sdk(e);
                    if f.is_not_found() && !f.code_is("NoSuchBucket") {
                        return Ok(None);
                    }
                    return Err(self.err(f, "s3:GetObject", Some(key)));
                }
            };
            let version = Version(out.e_tag().unwrap_or_default().to_string());
            let expected = out.content_length().map(|n| n.max(0) as usize);
            let mut buf = BytesMut::with_capacity(expected.unwrap_or(0));
            let mut body = out.body;
            let read = drain(&mut body, &mut buf, expected.unwrap_or(usize::MAX)).await;
            let failure = match read {
                Ok(()) if expected.is_none_or(|n| n == buf.len()) => {
                    return Ok(Some(Object {
                        data: buf.freeze(),
                        version,
                    }));
                }
                Ok(()) => format!(
                    "short body: {} of {} bytes",
                    buf.len(),
                    expected.unwrap_or_default()
                ),
                Err(e) => e,
            };
            let Some(delay) = delays.next() else {
                return Err(self.err(Failure::transport(failure), "s3:GetObject", Some(key)));
            };
            tracing::debug!(key, error = %failure, ?delay, "object body broke off; reading it again");
            tokio::time::sleep(delay).await;
        }
    }

    pub(crate) async fn put_file(&self, key: &str, src: &Path) -> Result<Transfer> {
        upload::put_file(self, key, src).await
    }

    pub(crate) async fn get_file(&self, key: &str, dest: &Path) -> Result<Transfer> {
        download::get_file(self, key, dest).await
    }

    pub(crate) async fn size(&self, key: &str) -> Result<Option<u64>> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .set_expected_bucket_owner(self.owner.clone())
            .key(key)
            .send()
            .await
        {
            Ok(out) => Ok(Some(out.content_length().unwrap_or(0).max(0) as u64)),
            Err(e) => {
                let f = Failure::from_sdk(e);
                if f.is_not_found() {
                    // HEAD cannot tell a missing bucket from a missing key.
                    Ok(None)
                } else {
                    Err(self.err(f, "s3:GetObject", Some(key)))
                }
            }
        }
    }

    /// Every key under `prefix`, the marker included, sorted.
    async fn list_raw(&self, prefix: &str) -> Result<Vec<String>> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .set_expected_bucket_owner(self.owner.clone())
            .prefix(prefix)
            .into_paginator()
            .send();
        let mut keys = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.sdk_err(e, "s3:ListBucket", None))?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_string)),
            );
        }
        keys.sort();
        Ok(keys)
    }

    pub(crate) async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let mut keys = self.list_raw(prefix).await?;
        keys.retain(|k| k != MARKER);
        Ok(keys)
    }

    pub(crate) async fn delete(&self, key: &str) -> Result<()> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .set_expected_bucket_owner(self.owner.clone())
            .key(key)
            .send()
            .await
            .map_err(|e| self.sdk_err(e, "s3:DeleteObject", Some(key)))?;
        Ok(())
    }

    /// Deletes `keys` in batches of up to 1000.
    async fn delete_keys(&self, keys: &[String]) -> Result<u64> {
        let mut n = 0;
        for batch in keys.chunks(DELETE_BATCH) {
            let objects = batch
                .iter()
                .map(|k| ObjectIdentifier::builder().key(k).build())
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| Error::Permanent {
                    message: format!("building a delete request: {e}"),
                })?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| Error::Permanent {
                    message: format!("building a delete request: {e}"),
                })?;
            let out = self
                .client
                .delete_objects()
                .bucket(&self.bucket)
                .set_expected_bucket_owner(self.owner.clone())
                .delete(delete)
                .send()
                .await
                .map_err(|e| self.sdk_err(e, "s3:DeleteObject", None))?;
            if let Some(first) = out.errors().first() {
                let f = Failure {
                    status: None,
                    code: first.code().map(str::to_string),
                    message: first.message().map(str::to_string),
                    bucket_region: None,
                    transport: false,
                    credentials: None,
                    detail: format!("{} of {} keys not deleted", out.errors().len(), batch.len()),
                };
                return Err(self.err(f, "s3:DeleteObject", first.key()));
            }
            n += batch.len() as u64;
        }
        Ok(n)
    }

    pub(crate) async fn delete_prefix(&self, prefix: &str) -> Result<u64> {
        let keys = self.list(prefix).await?;
        self.delete_keys(&keys).await
    }
}

/// True when the environment names an S3-specific endpoint, which the SDK
/// honours but does not report back through `SdkConfig::endpoint_url`.
fn s3_endpoint_in_env() -> bool {
    let ignored = std::env::var("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")
        .is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    !ignored && std::env::var("AWS_ENDPOINT_URL_S3").is_ok_and(|v| !v.is_empty())
}

/// Appends a response body to `buf`, failing if it breaks off or exceeds
/// `limit` bytes. The error is a description, for a retry decision.
async fn drain(
    body: &mut ByteStream,
    buf: &mut BytesMut,
    limit: usize,
) -> std::result::Result<(), String> {
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| errors::chain(&e))?;
        if buf.len() + chunk.len() > limit {
            return Err(format!(
                "the server sent more than the {limit} bytes asked for"
            ));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(())
}

/// Runs blocking filesystem work off the async threads.
pub(super) async fn blocking<T, F>(f: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Permanent {
            message: format!("job-store worker thread failed: {e}"),
        })?
}
