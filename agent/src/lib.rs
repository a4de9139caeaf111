//! The toil agent: runs inside each pod (or as a local process) and does the
//! work of one slot.
//!
//! - [`run`]: the main loop (report idle, take an assignment, report done);
//! - [`attempt`]: one attempt: stage, pull, run, upload, record;
//! - [`exec`]: the command in its own process group, measured;
//! - [`harden`]: non-dumpable at start, token out of the environment, so
//!   the job cannot read the agent's credential;
//! - [`logstream`]: output to the leader in acknowledged, spooled chunks;
//! - [`outputs`]: declared outputs into the job store;
//! - [`cache`]: the node-wide input cache shared by every agent on a node;
//! - [`images`]: Singularity/Apptainer images, one pull per image per node;
//! - [`client`]: the lease-aware connection to the leader;
//! - [`transport`]: a Unix socket or TLS with a pinned certificate to it;
//! - [`tunnel`]: many streams over one connection (the relay's tunnels);
//! - [`relay`]: `toil-agent relay`, the pod that carries agents' TLS to a
//!   leader the pods cannot reach, through tunnels over the API server;
//! - [`signals`]: SIGINT and SIGTERM as a clean stop (the leader's too);
//! - [`stage_cmd`]: `toil-agent stage` / `pull-image` for tests and debugging;
//! - [`workdir`]: attempts' work directories, emptied and reused by a reused agent.
//! - [`cwl`]: one CWL tool invocation: staging its files, its command, its outputs.
pub mod attempt;
pub mod cache;
pub mod client;
pub mod config;
pub mod cwl;
pub mod exec;
pub mod harden;
pub mod images;
pub mod logstream;
pub mod outputs;
pub mod relay;
pub mod run;
pub mod signals;
pub mod stage_cmd;
pub mod transport;
pub mod tunnel;
pub mod workdir;
