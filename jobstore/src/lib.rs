//! Job stores: where a workflow keeps its state and its files.
//!
//! A job store is a flat namespace of keys (`/`-separated, like object-store
//! keys) on one of two backends:
//!
//! - [`file::FileBackend`] for `file:PATH` (or a bare path): a directory tree;
//! - [`s3::S3Backend`] for `aws:REGION:NAME`: the S3 bucket `NAME--toil`.
//!
//! [`JobStore`] dispatches to the backend. On top of the raw key operations
//! this crate provides what both the leader and the agent need:
//!
//! - [`locator`]: parsing `--jobStore` values;
//! - [`backoff`]: the one retry backoff of the workspace (the S3 loops, and
//!   the leader's and agent's retries), each caller naming its budget;
//! - [`JobStore::put_file`] / [`JobStore::get_file`]: streaming file transfer
//!   that hashes the content (SHA-256) in the same pass, so every copy can be
//!   verified end to end;
//! - [`state`]: the leader's durable state (a journal with one linearizable
//!   sequence used for fencing, snapshots, and a liveness lease).
//!
//! Only the leader writes state; agents read and write files directly, so
//! the leader never carries data.

pub mod backoff;
pub mod beneath;
pub mod error;
pub mod file;
pub mod layout;
pub mod locator;
pub mod s3;
pub mod state;
mod store;
mod types;

pub use backoff::{Backoff, Budget};
pub use error::{Error, Result};
pub use locator::Locator;
pub use store::{JobStore, OpCounts};
pub use types::{Condition, Object, Transfer, Version};
