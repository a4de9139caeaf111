//! End-to-end tests, benchmarks and test servers for the toil workspace.
//!
//! - [`bench`]: dispatch latencies and percentiles from a run's journal;
//! - [`harness`]: finding binaries and the test virtualenv, scratch dirs;
//! - [`wait`]: waiting for a condition, never for a guessed time;
//! - [`local`]: running the real leader in a sandbox, gRPC clients;
//! - [`procfs`]: peak memory, liveness and lock waits of processes;
//! - [`data`]: reproducible pseudo-random files and their SHA-256;
//! - [`moto`]: an S3 server (moto) for job-store tests;
//! - [`relay`]: a TCP relay that records what crosses the wire;
//! - [`token_probe`]: a job that looks for its agent's token;
//! - [`restart`]: the kill -9 restart scenarios, run on every job store;
//! - [`emulator`]: the Kubernetes API emulator;
//! - [`appliance`]: the appliance image's root filesystem, built without Docker.

pub mod appliance;
pub mod bench;
pub mod browser;
pub mod data;
pub mod emulator;
pub mod harness;
pub mod kubectl;
pub mod local;
pub mod moto;
pub mod procfs;
pub mod python;
pub mod relay;
pub mod restart;
pub mod token_probe;
pub mod wait;
pub mod web;
