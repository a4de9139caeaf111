//! Settings of the S3 backend that do not come from the AWS configuration
//! chain: transfer sizes, retry pacing, request accounting, and the
//! fault-injection test aid.

use std::time::Duration;

use crate::backoff::{Backoff, Budget};
use crate::error::{Error, Result};

use super::http::RequestStats;

/// Environment variable that turns on fault injection for every `aws:` job
/// store the process opens with [`crate::JobStore::open`]. A test aid only;
/// see [`FaultConfig`].
pub const FAIL_FIRST_N_ENV: &str = "TOIL_JOBSTORE_FAIL_FIRST_N";

/// Environment variable naming the AWS account that must own the job
/// store's bucket (12 digits). Every S3 request then carries it as
/// `ExpectedBucketOwner`, and S3 refuses the request if someone else owns
/// the bucket (say, one deleted and re-created under the same name by
/// another account). Unset, the account of the credentials in use is looked
/// up (`sts:GetCallerIdentity`); the leader hands the result to its agents
/// in this variable so that they do not each look it up.
pub const BUCKET_OWNER_ENV: &str = "TOIL_AWS_BUCKET_OWNER";

/// Which account must own the bucket.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum BucketOwner {
    /// Not checked (S3Options::default, for tests and benchmarks that talk
    /// to a local S3).
    #[default]
    Unchecked,
    /// This account id.
    Account(String),
    /// The account of the credentials in use, asked of STS when the store
    /// is opened. On an S3-compatible endpoint that has no STS, the check
    /// is skipped with a warning.
    CallerAccount,
}

impl BucketOwner {
    /// Parses an account id as given in [`BUCKET_OWNER_ENV`].
    pub fn account(v: &str) -> Result<Self> {
        let v = v.trim();
        if v.len() == 12 && v.bytes().all(|b| b.is_ascii_digit()) {
            Ok(BucketOwner::Account(v.to_string()))
        } else {
            Err(Error::Permanent {
                message: format!(
                    "{BUCKET_OWNER_ENV}={v:?} is not an AWS account id; give the 12 digits of the account that owns the job store's bucket (`aws sts get-caller-identity` shows yours), or unset it to use the account of your credentials"
                ),
            })
        }
    }
}

/// How an `aws:` job store reaches S3, beyond what the standard AWS
/// configuration (environment, `~/.aws`, web identity) already says.
///
/// [`S3Options::from_env`] is what [`crate::JobStore::open`] uses; tests and
/// benchmarks build one by hand and pass it to
/// [`crate::JobStore::open_with`].
#[derive(Clone, Debug, Default)]
pub struct S3Options {
    /// Endpoint of an S3-compatible store (MinIO, Ceph, moto). `None` keeps
    /// the SDK's own resolution: `AWS_ENDPOINT_URL_S3`, then
    /// `AWS_ENDPOINT_URL`, then the profile's `endpoint_url`, then AWS.
    pub endpoint_url: Option<String>,
    /// Fixed credentials. `None` uses the standard chain: environment,
    /// `~/.aws/credentials` (on Kubernetes, the `TOIL_AWS_SECRET_NAME` secret
    /// mounted at `/root/.aws`), web identity (EKS), ECS, instance metadata.
    pub credentials: Option<StaticCredentials>,
    /// Path-style addressing (`http://host/bucket/key`). `None` turns it on
    /// exactly when a custom endpoint is configured, which is what
    /// S3-compatible stores need; AWS itself prefers virtual-hosted style.
    pub force_path_style: Option<bool>,
    /// Sizes and parallelism of streaming transfers.
    pub transfer: TransferOptions,
    /// Retry pacing for transient failures.
    pub retry: RetryOptions,
    /// Injected failures, for tests only. `None` in production.
    pub faults: Option<FaultConfig>,
    /// Counts of HTTP requests this store sends (shared: keep a clone to read
    /// them while the store is in use).
    pub stats: RequestStats,
    /// The account that must own the bucket (sent as `ExpectedBucketOwner`).
    pub bucket_owner: BucketOwner,
}

/// An access key pair, for tests and S3-compatible stores with fixed keys.
#[derive(Clone)]
pub struct StaticCredentials {
    /// The access key id (`AWS_ACCESS_KEY_ID`).
    pub access_key_id: String,
    /// The secret access key (`AWS_SECRET_ACCESS_KEY`).
    pub secret_access_key: String,
}

impl std::fmt::Debug for StaticCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"** redacted **")
            .finish()
    }
}

/// Streaming transfer settings. Peak memory of one `put_file` is about
/// `part_size * concurrency`; of one `get_file`, about 2 MiB when streamed
/// and `part_size * (download_concurrency + 1)` when ranged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferOptions {
    /// Files up to this size go in one `PutObject`; larger ones in parts of
    /// this size (raised when a file would need more than S3's 10,000
    /// parts). At least 5 MiB, S3's minimum part size. Also the size of the
    /// ranges of a ranged download.
    pub part_size: u64,
    /// Parts uploaded at the same time.
    pub concurrency: usize,
    /// 1 (the default): a download is one streamed `GetObject`, resumed with
    /// a ranged request from the last byte received if it breaks off; one
    /// request per file and constant memory. More: ranges of `part_size`,
    /// this many at a time, which is faster on AWS for big files but costs
    /// a request per range, and is slow on servers that read the whole
    /// object for every range (moto does).
    pub download_concurrency: usize,
}

/// 8 MiB: with four parts in flight a transfer holds about 32 MiB.
pub const DEFAULT_PART_SIZE: u64 = 8 << 20;
/// S3 refuses parts smaller than this (except the last one).
pub const MIN_PART_SIZE: u64 = 5 << 20;
/// S3's limit on the number of parts of one multipart upload.
pub const MAX_PARTS: u64 = 10_000;

impl Default for TransferOptions {
    fn default() -> Self {
        TransferOptions {
            part_size: DEFAULT_PART_SIZE,
            concurrency: 4,
            download_concurrency: 1,
        }
    }
}

impl TransferOptions {
    /// The part size for a file of `size` bytes: the configured size, at
    /// least [`MIN_PART_SIZE`], raised (to whole MiB) so the file fits in
    /// [`MAX_PARTS`] parts.
    pub fn part_size_for(&self, size: u64) -> u64 {
        let base = self.part_size.max(MIN_PART_SIZE);
        let needed = size.div_ceil(MAX_PARTS).next_multiple_of(1 << 20);
        base.max(needed)
    }
}

/// Retry pacing. The SDK retries failed requests (5xx, throttling such as
/// `SlowDown`, timeouts, connection errors) with exponential backoff and
/// jitter up to `max_attempts`; the backend's own loops (conditional writes,
/// response bodies that fail half-way) wait as [`RetryOptions::backoff`]
/// says, with the same numbers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryOptions {
    /// Attempts per request, the first included.
    pub max_attempts: u32,
    /// Delay before the first retry; doubled for each further one.
    pub initial_backoff: Duration,
    /// Upper bound of one delay.
    pub max_backoff: Duration,
}

impl Default for RetryOptions {
    fn default() -> Self {
        RetryOptions {
            max_attempts: 6,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(20),
        }
    }
}

impl RetryOptions {
    /// The backend's loops as a [`Backoff`]: `max_attempts` calls in all.
    pub fn backoff(&self) -> Backoff {
        Backoff::new(
            self.initial_backoff,
            self.max_backoff,
            Budget::Attempts(self.max_attempts),
        )
    }
}

/// Fault injection, neon style: every distinct HTTP request (method and
/// URI) fails its first `fail_first_n` attempts, then the next attempt goes
/// through and the count starts again, so each logical call has to retry.
///
/// A test aid: it proves that every S3 code path survives transient errors.
/// The failures cycle through three kinds, one per attempt:
/// 1. a `503 SlowDown` answer, without the request reaching the server;
/// 2. the request reaches the server and is carried out, but the client sees
///    a reset connection instead of the answer (the ambiguous case a
///    conditional write must resolve);
/// 3. for object downloads, the body is cut half-way with a reset (other
///    requests get kind 2).
///
/// Set it with [`S3Options::faults`] or, for child processes, with the
/// environment variable `TOIL_JOBSTORE_FAIL_FIRST_N=N` read once when the
/// store is opened. Keep `fail_first_n` below [`RetryOptions::max_attempts`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultConfig {
    /// Attempts of each request that fail before one succeeds.
    pub fail_first_n: u32,
    /// Only requests whose URI contains this string fail (for example
    /// `"partNumber=2"` to break one part of a multipart upload); `None`:
    /// every request.
    pub only_uri_containing: Option<String>,
}

impl FaultConfig {
    /// Every request fails its first `n` attempts.
    pub fn fail_first(n: u32) -> Self {
        FaultConfig {
            fail_first_n: n,
            only_uri_containing: None,
        }
    }
}

impl S3Options {
    /// The defaults plus what the process environment adds beyond the AWS
    /// chain: [`FAIL_FIRST_N_ENV`] (fault injection for tests).
    pub fn from_env() -> Result<Self> {
        let mut opts = S3Options {
            bucket_owner: match std::env::var(BUCKET_OWNER_ENV) {
                Ok(v) if !v.trim().is_empty() => BucketOwner::account(&v)?,
                _ => BucketOwner::CallerAccount,
            },
            ..S3Options::default()
        };
        if let Ok(v) = std::env::var(FAIL_FIRST_N_ENV) {
            let n: u32 = v.trim().parse().map_err(|_| Error::Permanent {
                message: format!(
                    "{FAIL_FIRST_N_ENV}={v:?} is not a number; unset it (it is a test aid) or give a small count like 2"
                ),
            })?;
            if n > 0 {
                opts.faults = Some(FaultConfig::fail_first(n));
                opts.retry.max_attempts = opts.retry.max_attempts.max(n + 2);
            }
        }
        Ok(opts)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn an_account_id_is_twelve_digits() {
        assert_eq!(
            BucketOwner::account(" 123456789012\n").unwrap(),
            BucketOwner::Account("123456789012".into())
        );
        for bad in [
            "12345678901",
            "1234567890123",
            "arn:aws:iam::123456789012:root",
            "",
        ] {
            let e = BucketOwner::account(bad).unwrap_err().to_string();
            assert!(
                e.contains(BUCKET_OWNER_ENV) && e.contains("12 digits"),
                "{e}"
            );
        }
    }

    #[test]
    fn part_size_grows_to_fit_the_part_limit() {
        let t = TransferOptions::default();
        assert_eq!(t.part_size_for(1 << 30), DEFAULT_PART_SIZE);
        // 1 TiB needs parts of at least 1 TiB / 10,000, rounded up to a MiB.
        let big = 1u64 << 40;
        let p = t.part_size_for(big);
        assert!(p * MAX_PARTS >= big && p % (1 << 20) == 0, "{p}");
        let tiny = TransferOptions {
            part_size: 1,
            ..TransferOptions::default()
        };
        assert_eq!(tiny.part_size_for(100), MIN_PART_SIZE);
    }

    #[test]
    fn retries_wait_as_the_shared_backoff_with_these_numbers() {
        let r = RetryOptions {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(250),
        };
        let waits: Vec<Duration> = r.backoff().delays().collect();
        // Four calls, three waits: up to 100, 200, then capped at 250 ms.
        let full = [100, 200, 250].map(Duration::from_millis);
        assert_eq!(waits.len(), full.len(), "{waits:?}");
        for (w, f) in waits.iter().zip(full) {
            assert!(*w >= f / 2 && *w <= f, "{w:?} outside [{:?}, {f:?}]", f / 2);
        }
    }
}
