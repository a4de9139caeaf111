//! The toil leader: runs a workflow's jobs through agents, on this machine
//! or on Kubernetes, and keeps the workflow's state in the job store.
//!
//! A tour of the modules, from the command line inwards:
//! - [`cli`], [`config`]: flags (Toil's names, `TOIL_*` fallbacks) checked
//!   into a [`config::RunConfig`] before anything starts;
//! - [`run`]: start-up (job store, lease, restore, epoch claim), the tasks
//!   of a run and their shutdown, the stored records and exit codes;
//!   [`commands`]: `status`, `logs`, `clean` ([`status_json`]: `status
//!   --json`); [`report`]: the HTML report;
//! - [`workflow`]: the workflow file, parsed and validated with positions;
//! - [`cwl`]: `toil-cwl-runner`, the CWL front end (jobs added as a CWL
//!   document runs);
//! - [`core`]: the pure scheduler (graph, retries, dynamic jobs, journal);
//! - [`driver`]: the one task that owns the core and talks to everything;
//! - [`persist`]: the journal and snapshots in the job store, and fencing;
//! - [`versions`]: resuming against an edited workflow file (what reruns);
//! - [`server`]: the gRPC services for agents and clients;
//! - [`batch`]: where agents run (local processes; Kubernetes Jobs);
//! - [`logs`], [`events`]: job output and workflow events for followers;
//!   [`metrics`]: what `/metrics` serves;
//! - [`progress`], [`summary`]: what the terminal shows; [`terminal`]: log
//!   lines and the status line on one stderr, and [`say!`] for messages
//!   meant for the user.

pub mod batch;
pub mod cli;
pub mod commands;
pub mod config;
pub mod core;
pub mod cwl;
pub mod driver;
pub mod events;
pub mod logs;
pub mod metrics;
pub mod persist;
pub mod progress;
pub mod report;
pub mod run;
pub mod server;
pub mod status_json;
pub mod summary;
pub mod terminal;
pub mod versions;
pub mod web;
pub mod workflow;
