//! Errors from job-store operations, classified so callers can act on them.

/// Result alias for job-store operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong with a job-store operation.
///
/// Messages are written for the person running the workflow: they name the
/// store or key involved and, for permanent problems, what to change.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The `--jobStore` value could not be understood.
    #[error("invalid job store locator {locator:?}: {reason}")]
    BadLocator {
        /// The value as given.
        locator: String,
        /// What is wrong with it and what the forms are.
        reason: String,
    },

    /// A key that must exist does not.
    #[error("{key}: not found in job store {store}")]
    NotFound {
        /// The store's locator.
        store: String,
        /// The missing key.
        key: String,
    },

    /// A conditional write lost: the key exists (for `IfAbsent`) or changed
    /// (for `IfMatch`). Another writer got there first.
    #[error(
        "{key}: conditional write refused in job store {store}: another writer changed it first"
    )]
    PreconditionFailed {
        /// The store's locator.
        store: String,
        /// The key written.
        key: String,
    },

    /// Content did not match its recorded checksum.
    #[error(
        "{key}: checksum mismatch (expected sha256 {expected}, got {actual}); the copy was discarded"
    )]
    Checksum {
        /// The key read.
        key: String,
        /// The checksum recorded when the file was stored.
        expected: String,
        /// The checksum of what was read.
        actual: String,
    },

    /// A local filesystem operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, naming the path.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A problem that retrying will not fix: missing credentials, access
    /// denied, a bucket owned by someone else, a wrong region. The message
    /// says what to change.
    #[error("{message}")]
    Permanent {
        /// What is wrong and how to fix it.
        message: String,
    },

    /// A problem that may go away on its own (throttling, a 5xx answer, a
    /// reset connection). Already retried with backoff by the backend.
    #[error("{message}")]
    Transient {
        /// What failed.
        message: String,
    },
}

impl Error {
    /// True when the same call may succeed if tried again later.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Transient { .. } => true,
            Error::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::Interrupted
                    | std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::WouldBlock
            ),
            _ => false,
        }
    }

    /// True for [`Error::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }

    /// True for [`Error::PreconditionFailed`].
    pub fn is_precondition_failed(&self) -> bool {
        matches!(self, Error::PreconditionFailed { .. })
    }

    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}
