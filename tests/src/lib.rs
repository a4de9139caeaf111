//! End-to-end tests, benchmarks and test servers for the toil workspace.
//!
//! - [`harness`]: finding binaries and the test virtualenv, scratch dirs;
//! - [`local`]: running the real leader in a sandbox, gRPC clients;
//! - [`moto`]: an S3 server (moto) for job-store tests;
//! - [`emulator`]: the Kubernetes API emulator.

pub mod emulator;
pub mod harness;
pub mod local;
pub mod moto;
