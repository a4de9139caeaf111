//! Errors from staging inputs through the node cache.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use toil_proto::v1::CauseKind;

/// What went wrong while staging an input or inserting an output.
///
/// Every variant names the file involved. [`CacheError::is_retryable`] says
/// whether another attempt (here or on another node) may succeed, and
/// [`CacheError::cause_kind`] gives the attempt's cause.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The job store could not deliver the file: unreachable, throttled,
    /// access denied, or the file is not there.
    #[error("{file_id}: reading from the job store failed: {error}")]
    JobStore {
        /// The file id (job-store key).
        file_id: String,
        /// The job store's error (in the message, not chained again); its
        /// `is_retryable` decides ours.
        error: toil_jobstore::Error,
    },

    /// The downloaded bytes do not match the checksum recorded with the
    /// file. The copy was discarded and nothing entered the cache.
    #[error(
        "{file_id}: checksum mismatch (expected sha256 {expected}, got {actual}); the download was discarded"
    )]
    Checksum {
        /// The file id.
        file_id: String,
        /// The recorded checksum.
        expected: String,
        /// The checksum of what arrived.
        actual: String,
    },

    /// Not enough local disk for the file, even after evicting every cache
    /// entry that no job holds.
    #[error("{file_id}: not enough disk space to stage {needed} bytes: {detail}")]
    NoSpace {
        /// The file id.
        file_id: String,
        /// Bytes the file needs.
        needed: u64,
        /// Free space, margin and reservations as measured.
        detail: String,
    },

    /// The input description is unusable (a destination path that escapes
    /// the work directory, two inputs on one path, no file reference).
    #[error("input {dest_path:?}: {reason}")]
    BadInput {
        /// The destination as given.
        dest_path: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A node cache lock stayed held past its deadline
    /// (`--cacheLockTimeout`): a process on the node, most likely a job
    /// (which runs as the agent's user and can open the lock files), holds
    /// it and does not let go.
    #[error(
        "{file_id}: node cache lock {} held for more than {} by {}; another job on this node may be holding it (the wait is set by --cacheLockTimeout / TOIL_CACHE_LOCK_TIMEOUT)",
        lock.display(),
        super::lock::seconds(*waited),
        holder.as_deref().unwrap_or("another process")
    )]
    LockTimeout {
        /// The file id being staged (empty for node-wide work).
        file_id: String,
        /// The lock file.
        lock: PathBuf,
        /// The deadline that passed.
        waited: Duration,
        /// The holding process, when visible from here.
        holder: Option<String>,
    },

    /// Staging all of an attempt's inputs took longer than
    /// `--stagingTimeout`.
    #[error(
        "staging the inputs took longer than {} (the limit is set by --stagingTimeout / TOIL_STAGING_TIMEOUT)",
        super::lock::seconds(*limit)
    )]
    StagingTimeout {
        /// The limit.
        limit: Duration,
    },

    /// A local filesystem operation failed.
    #[error("{context}: {error}")]
    Io {
        /// What was being done, naming the path.
        context: String,
        /// The underlying error (in the message, not chained again).
        error: io::Error,
    },
}

impl CacheError {
    /// True when trying again (later, or on another node) may succeed: a
    /// transient job-store failure, a corrupted transfer, a full disk.
    /// False for bad input and for missing files or denied access.
    pub fn is_retryable(&self) -> bool {
        match self {
            CacheError::JobStore { error, .. } => error.is_retryable(),
            CacheError::Checksum { .. }
            | CacheError::NoSpace { .. }
            | CacheError::LockTimeout { .. }
            | CacheError::StagingTimeout { .. } => true,
            CacheError::BadInput { .. } => false,
            CacheError::Io { error, .. } => matches!(
                error.kind(),
                io::ErrorKind::Interrupted | io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            ),
        }
    }

    /// The cause an attempt that failed with this error ends with:
    /// `CONFIG_ERROR` for bad input, `STAGING_FAILED` otherwise.
    pub fn cause_kind(&self) -> CauseKind {
        match self {
            CacheError::BadInput { .. } => CauseKind::ConfigError,
            _ => CauseKind::StagingFailed,
        }
    }

    /// Wraps a local I/O error; a full disk (`ENOSPC`, or the space check's
    /// own `StorageFull`) becomes [`CacheError::NoSpace`].
    pub(crate) fn io(file_id: &str, context: impl Into<String>, source: io::Error) -> Self {
        if let Some(t) = super::lock::Timeout::of(&source) {
            return CacheError::LockTimeout {
                file_id: file_id.to_string(),
                lock: t.path.clone(),
                waited: t.waited,
                holder: t.holder.clone(),
            };
        }
        if source.kind() == io::ErrorKind::StorageFull {
            return CacheError::NoSpace {
                file_id: file_id.to_string(),
                needed: 0,
                detail: format!("{}: {source}", context.into()),
            };
        }
        CacheError::Io {
            context: context.into(),
            error: source,
        }
    }

    /// Classifies a job-store error for `file_id`.
    pub(crate) fn from_store(file_id: &str, e: toil_jobstore::Error) -> Self {
        match e {
            toil_jobstore::Error::Checksum {
                expected, actual, ..
            } => CacheError::Checksum {
                file_id: file_id.to_string(),
                expected,
                actual,
            },
            toil_jobstore::Error::Io { context, source }
                if source.kind() == io::ErrorKind::StorageFull =>
            {
                CacheError::io(file_id, context, source)
            }
            other => CacheError::JobStore {
                file_id: file_id.to_string(),
                error: other,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        let missing = CacheError::from_store(
            "f",
            toil_jobstore::Error::NotFound {
                store: "file:/js".into(),
                key: "f".into(),
            },
        );
        assert!(!missing.is_retryable());
        assert_eq!(missing.cause_kind(), CauseKind::StagingFailed);

        let flaky = CacheError::from_store(
            "f",
            toil_jobstore::Error::Transient {
                message: "503".into(),
            },
        );
        assert!(flaky.is_retryable());

        let sum = CacheError::from_store(
            "f",
            toil_jobstore::Error::Checksum {
                key: "f".into(),
                expected: "aa".into(),
                actual: "bb".into(),
            },
        );
        assert!(matches!(sum, CacheError::Checksum { .. }) && sum.is_retryable());

        let full = CacheError::io("f", "writing x", io::Error::from_raw_os_error(libc::ENOSPC));
        assert!(matches!(full, CacheError::NoSpace { .. }) && full.is_retryable());

        let held = CacheError::io(
            "files/a",
            "locking",
            io::Error::new(
                io::ErrorKind::TimedOut,
                super::super::lock::Timeout {
                    path: "/c/locks/space.lock".into(),
                    waited: Duration::from_secs(120),
                    holder: Some("process 42 (sleep 999)".into()),
                },
            ),
        );
        assert!(held.is_retryable());
        assert_eq!(held.cause_kind(), CauseKind::StagingFailed);
        assert_eq!(
            held.to_string(),
            "files/a: node cache lock /c/locks/space.lock held for more than 120 s by process 42 (sleep 999); \
             another job on this node may be holding it (the wait is set by --cacheLockTimeout / TOIL_CACHE_LOCK_TIMEOUT)"
        );

        let bad = CacheError::BadInput {
            dest_path: "../x".into(),
            reason: "escapes".into(),
        };
        assert!(!bad.is_retryable());
        assert_eq!(bad.cause_kind(), CauseKind::ConfigError);
    }
}
