//! The values a job store's operations take and return, shared by the
//! [`JobStore`](crate::JobStore) handle and every backend.
//!
//! They live apart from the handle so that a backend (`file`, `s3`) depends
//! only on these and never on the handle that dispatches to it.

use bytes::Bytes;

/// An opaque version of a small object, used for compare-and-swap writes.
/// On S3 it is the ETag; on a file store, a hash of the content.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Version(pub String);

/// When a [`JobStore::put_bytes`](crate::JobStore::put_bytes) may take effect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Condition {
    /// Unconditionally (create or replace).
    Always,
    /// Only if the key does not exist (S3 `If-None-Match: *`; an atomic
    /// link on a file store). Otherwise [`Error::PreconditionFailed`](crate::Error::PreconditionFailed).
    IfAbsent,
    /// Only if the key exists with this version (S3 `If-Match`). A missing
    /// key or a different version gives [`Error::PreconditionFailed`](crate::Error::PreconditionFailed).
    IfMatch(Version),
}

/// A small object read whole.
#[derive(Clone, Debug)]
pub struct Object {
    /// The content.
    pub data: Bytes,
    /// Its version, for a later [`Condition::IfMatch`].
    pub version: Version,
}

/// What a streaming file transfer moved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transfer {
    /// Bytes transferred.
    pub size: u64,
    /// Lowercase hex SHA-256 of the bytes, computed in the same pass.
    pub sha256: String,
}
