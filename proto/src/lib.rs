//! The `toil.v1` gRPC API: the contract between the leader, its agents and
//! any client a developer writes.
//!
//! The `.proto` files under `proto/toil/v1/` are the source of truth; this
//! crate compiles them with prost and tonic. `FILE_DESCRIPTOR_SET` lets the
//! leader serve gRPC reflection, so `grpcurl` works without the files.
//!
//! Beside the generated code: the one way to build and word a
//! [`v1::Cause`] (`Cause::exit_code`, `Cause::agent_lost`, ..., and its
//! `Display`), and jobs counted per state ([`StateCounts`]).

/// Generated messages, clients and servers for package `toil.v1`.
#[allow(clippy::all, clippy::unwrap_used, clippy::expect_used, missing_docs)]
pub mod v1 {
    tonic::include_proto!("toil.v1");
}

mod cause;
mod counts;
pub use counts::{JOB_STATES, StateCounts};

/// The encoded `FileDescriptorSet` of every `toil.v1` file, for reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("toil_descriptor");
