//! End-to-end tests, benchmarks and test servers for the toil workspace.
//!
//! - [`harness`]: finding binaries and the test virtualenv, scratch dirs.

pub mod emulator;
pub mod harness;
pub mod moto;
