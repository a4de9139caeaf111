//! The job-store handle that dispatches to a backend, and counts what it
//! was asked to do.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::file::FileBackend;
use crate::locator::Locator;
use crate::s3::{S3Backend, S3Options};
use crate::types::{Condition, Object, Transfer, Version};

/// Counts of operations, by kind, since the store was opened. Benchmarks read
/// these to report requests per job (S3 requests cost money).
#[derive(Debug, Default)]
pub struct OpCounters {
    /// `put_bytes` and `put_file` calls.
    pub writes: AtomicU64,
    /// `get_bytes`, `get_file` and `size` calls.
    pub reads: AtomicU64,
    /// `list` calls.
    pub lists: AtomicU64,
    /// `delete` and `delete_prefix` calls.
    pub deletes: AtomicU64,
    /// Writes that returned an error (a refused condition included).
    pub write_errors: AtomicU64,
    /// Reads that returned an error (a missing key is not one).
    pub read_errors: AtomicU64,
    /// Lists that returned an error.
    pub list_errors: AtomicU64,
    /// Deletes that returned an error.
    pub delete_errors: AtomicU64,
}

/// A snapshot of [`OpCounters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpCounts {
    /// Writes so far.
    pub writes: u64,
    /// Reads so far.
    pub reads: u64,
    /// Lists so far.
    pub lists: u64,
    /// Deletes so far.
    pub deletes: u64,
    /// Writes that failed (included in `writes`).
    pub write_errors: u64,
    /// Reads that failed (included in `reads`).
    pub read_errors: u64,
    /// Lists that failed (included in `lists`).
    pub list_errors: u64,
    /// Deletes that failed (included in `deletes`).
    pub delete_errors: u64,
}

#[derive(Debug)]
enum Backend {
    File(FileBackend),
    S3(S3Backend),
}

/// A handle on one job store. Cheap to clone; clones share the backend's
/// connections and the operation counters.
#[derive(Clone, Debug)]
pub struct JobStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    locator: Locator,
    backend: Backend,
    counters: OpCounters,
}

macro_rules! dispatch {
    ($self:ident, $b:ident => $e:expr) => {
        match &$self.inner.backend {
            Backend::File($b) => $e,
            Backend::S3($b) => $e,
        }
    };
}

impl JobStore {
    /// Opens a handle for `locator`. Does not create anything; for S3 it
    /// builds the client from the standard AWS configuration chain.
    pub async fn open(locator: &Locator) -> Result<Self> {
        Self::open_with(locator, S3Options::from_env()?).await
    }

    /// Like [`JobStore::open`], with explicit settings for an `aws:` store
    /// (ignored for `file:`): an endpoint and credentials (tests on moto),
    /// transfer sizes, request counting (benchmarks), fault injection.
    pub async fn open_with(locator: &Locator, s3: S3Options) -> Result<Self> {
        let backend = match locator {
            Locator::File(path) => Backend::File(FileBackend::new(path.clone())),
            Locator::Aws { region, name } => {
                Backend::S3(S3Backend::connect(region, name, locator, s3).await?)
            }
        };
        Ok(JobStore {
            inner: Arc::new(Inner {
                locator: locator.clone(),
                backend,
                counters: OpCounters::default(),
            }),
        })
    }

    /// The locator this store was opened with.
    pub fn locator(&self) -> &Locator {
        &self.inner.locator
    }

    /// The AWS account that must own an `aws:` store's bucket, when checked
    /// (every request on it carries `ExpectedBucketOwner`). Agents get it in
    /// [`crate::s3::BUCKET_OWNER_ENV`] so that they need not look it up.
    pub fn bucket_owner(&self) -> Option<&str> {
        match &self.inner.backend {
            Backend::File(_) => None,
            Backend::S3(b) => b.bucket_owner(),
        }
    }

    /// Operation counts since the store was opened.
    pub fn op_counts(&self) -> OpCounts {
        let c = &self.inner.counters;
        OpCounts {
            writes: c.writes.load(Ordering::Relaxed),
            reads: c.reads.load(Ordering::Relaxed),
            lists: c.lists.load(Ordering::Relaxed),
            deletes: c.deletes.load(Ordering::Relaxed),
            write_errors: c.write_errors.load(Ordering::Relaxed),
            read_errors: c.read_errors.load(Ordering::Relaxed),
            list_errors: c.list_errors.load(Ordering::Relaxed),
            delete_errors: c.delete_errors.load(Ordering::Relaxed),
        }
    }

    /// The HTTP requests an `aws:` store has sent since it was opened, by
    /// method (retries included); `None` for a `file:` store.
    pub fn http_requests(&self) -> Option<crate::s3::RequestCounts> {
        match &self.inner.backend {
            Backend::File(_) => None,
            Backend::S3(b) => Some(b.request_counts()),
        }
    }

    /// Creates the store if it does not exist. Returns true if it was
    /// created, false if it was already there.
    pub async fn initialize(&self) -> Result<bool> {
        dispatch!(self, b => b.initialize().await)
    }

    /// True if the store exists.
    pub async fn exists(&self) -> Result<bool> {
        dispatch!(self, b => b.exists().await)
    }

    /// Deletes the store and everything in it. Refuses to delete something
    /// that is not a job store.
    pub async fn destroy(&self) -> Result<()> {
        self.inner.counters.deletes.fetch_add(1, Ordering::Relaxed);
        let r = dispatch!(self, b => b.destroy().await);
        failed(&self.inner.counters.delete_errors, r)
    }

    /// Writes a small object whole, subject to `cond`.
    pub async fn put_bytes(&self, key: &str, data: Bytes, cond: Condition) -> Result<Version> {
        check_key(key)?;
        self.inner.counters.writes.fetch_add(1, Ordering::Relaxed);
        let r = dispatch!(self, b => b.put_bytes(key, data, cond).await);
        failed(&self.inner.counters.write_errors, r)
    }

    /// Reads a small object whole; `None` if it does not exist.
    pub async fn get_bytes(&self, key: &str) -> Result<Option<Object>> {
        check_key(key)?;
        self.inner.counters.reads.fetch_add(1, Ordering::Relaxed);
        let r = dispatch!(self, b => b.get_bytes(key).await);
        failed(&self.inner.counters.read_errors, r)
    }

    /// Stores the local file `src` under `key`, streaming (never holding the
    /// whole file in memory), and returns its size and SHA-256.
    pub async fn put_file(&self, key: &str, src: &Path) -> Result<Transfer> {
        check_key(key)?;
        self.inner.counters.writes.fetch_add(1, Ordering::Relaxed);
        let r = dispatch!(self, b => b.put_file(key, src).await);
        failed(&self.inner.counters.write_errors, r)
    }

    /// Streams `key` into the local file `dest` (created or truncated) and
    /// returns its size and SHA-256. Does not fsync `dest`; callers that
    /// rename it into a shared place do that themselves.
    pub async fn get_file(&self, key: &str, dest: &Path) -> Result<Transfer> {
        check_key(key)?;
        self.inner.counters.reads.fetch_add(1, Ordering::Relaxed);
        let r = dispatch!(self, b => b.get_file(key, dest).await);
        failed(&self.inner.counters.read_errors, r)
    }

    /// Like [`JobStore::get_file`], then checks the content against
    /// `expected_sha256`; on a mismatch `dest` is removed and
    /// [`Error::Checksum`] returned.
    pub async fn get_file_verified(
        &self,
        key: &str,
        dest: &Path,
        expected_sha256: &str,
    ) -> Result<Transfer> {
        let t = self.get_file(key, dest).await?;
        if !expected_sha256.is_empty() && !t.sha256.eq_ignore_ascii_case(expected_sha256) {
            let _ = tokio::fs::remove_file(dest).await;
            return Err(Error::Checksum {
                key: key.to_string(),
                expected: expected_sha256.to_string(),
                actual: t.sha256,
            });
        }
        Ok(t)
    }

    /// The size of `key`, or `None` if it does not exist.
    pub async fn size(&self, key: &str) -> Result<Option<u64>> {
        check_key(key)?;
        self.inner.counters.reads.fetch_add(1, Ordering::Relaxed);
        let r = dispatch!(self, b => b.size(key).await);
        failed(&self.inner.counters.read_errors, r)
    }

    /// Every key that starts with `prefix`, sorted.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        self.inner.counters.lists.fetch_add(1, Ordering::Relaxed);
        let r = dispatch!(self, b => b.list(prefix).await);
        failed(&self.inner.counters.list_errors, r)
    }

    /// Deletes `key`; deleting a missing key is not an error.
    pub async fn delete(&self, key: &str) -> Result<()> {
        check_key(key)?;
        self.inner.counters.deletes.fetch_add(1, Ordering::Relaxed);
        let r = dispatch!(self, b => b.delete(key).await);
        failed(&self.inner.counters.delete_errors, r)
    }

    /// Deletes every key under `prefix`; returns how many were deleted.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<u64> {
        self.inner.counters.deletes.fetch_add(1, Ordering::Relaxed);
        let r = dispatch!(self, b => b.delete_prefix(prefix).await);
        failed(&self.inner.counters.delete_errors, r)
    }
}

/// Counts a failed operation in `errors`, and passes its result on.
fn failed<T>(errors: &AtomicU64, r: Result<T>) -> Result<T> {
    if r.is_err() {
        errors.fetch_add(1, Ordering::Relaxed);
    }
    r
}

/// Keys are relative, `/`-separated, with no empty, `.` or `..` components
/// and no component starting with `.tmp-` (reserved for in-flight writes).
pub(crate) fn check_key(key: &str) -> Result<()> {
    let bad = key.is_empty()
        || key.starts_with('/')
        || key.ends_with('/')
        || key
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == ".." || c.starts_with(".tmp-"));
    if bad {
        return Err(Error::Permanent {
            message: format!("invalid job-store key {key:?} (this is a bug in the caller)"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked() {
        for good in ["a", "files/x/y.txt", "state/journal/00000000000000000001"] {
            assert!(check_key(good).is_ok(), "{good}");
        }
        for bad in ["", "/a", "a/", "a//b", "a/../b", "./a", "a/.tmp-1"] {
            assert!(check_key(bad).is_err(), "{bad}");
        }
    }
}
