//! A Kubernetes API emulator for tests and benchmarks: a real HTTP(S)
//! apiserver speaking k8s-openapi JSON, with RBAC, a Job controller, a
//! scheduler over emulated nodes, and kubelets that run containers as local
//! processes. No kube-apiserver can run on this machine, so code that passes
//! here must also pass on a real cluster: the emulator reproduces the
//! shapes real clusters produce (see `shared/testing.md`).
//!
//! A tour:
//! - [`handle`]: [`Emulator`], the public API (start, kubeconfigs, faults,
//!   counters, shutdown);
//! - [`config`]: nodes, images, identities, timings;
//! - [`server`]: HTTP(S), discovery, CRUD, watch, logs, kubectl tables,
//!   the `/emulator/...` admin endpoints;
//! - [`store`], [`selector`], [`patch`], [`crud`], [`validation`],
//!   [`defaults`], [`fieldvalidation`]: the apiserver's storage and semantics;
//! - [`rbac`]: authorization from Role/ClusterRole bindings;
//! - [`podsecurity`]: Pod Security admission from namespace labels;
//! - [`jobs`], [`scheduler`], [`kubelet`], [`disruption`]: the control plane
//!   and nodes;
//! - [`netns`], [`services`], [`proxy`]: the pod network (optionally a
//!   network namespace of its own), Service clusterIPs and kube-proxy;
//! - [`faults`]: request faults and counters;
//! - [`quantity`]: resource quantities; [`yaml`]: manifests and YAML bodies;
//!   [`protobuf`]: the protobuf bodies of `kubectl create secret|configmap`;
//! - [`testkit`]: waits and object builders for tests.
//!
//! Typical use in a test (the emulator runs on its own thread and runtime;
//! dropping the handle kills every pod process):
//!
//! ```no_run
//! use toil_tests::emulator::{Emulator, EmulatorConfig, Identity, NodeConfig, RequestFault};
//! # async fn demo() -> anyhow::Result<()> {
//! let cfg = EmulatorConfig::default()
//!     .with_nodes(vec![NodeConfig::new("n1").cpu("4").memory("8Gi"), "spot-1:cpu=8,preemptible".parse().map_err(anyhow::Error::msg)?])
//!     .with_image("toil-appliance:dev", Some("target/debug".into()))
//!     .with_rbac_file("deploy/rbac.yaml".into())
//!     .with_namespace("toil");
//! let emu = Emulator::start(cfg)?;
//! let leader = Identity::service_account("toil", "toil-leader");
//! let kubeconfig = emu.kubeconfig_for(&leader)?; // for a leader process (KUBECONFIG=...)
//! let client = emu.client(&leader).await?; // or a kube-rs client in the test
//! emu.fail_requests(RequestFault::too_many_requests(3).verb("create").resource("jobs"));
//! let creates = emu.request_counts().get("create", "jobs");
//! # let _ = (kubeconfig, client, creates);
//! emu.shutdown();
//! # Ok(()) }
//! ```

pub mod bootstrap;
pub mod cluster;
pub mod config;
pub mod crud;
pub mod defaults;
pub mod disruption;
pub mod error;
pub mod faults;
pub mod fieldvalidation;
pub mod handle;
pub mod jobs;
pub mod kubeconfig;
pub mod kubelet;
pub mod netns;
pub mod patch;
pub mod podsecurity;
pub mod protobuf;
pub mod proxy;
pub mod quantity;
pub mod rbac;
pub mod resources;
pub mod scheduler;
pub mod selector;
pub mod server;
pub mod services;
pub mod store;
pub mod testkit;
pub mod validation;
pub mod yaml;

pub use cluster::StallRule;
pub use config::{
    EmulatorConfig, Identity, ImageConfig, MemoryEnforcement, NodeConfig, TaintConfig, Timing,
};
pub use error::{ApiError, EmulatorError};
pub use faults::{RequestCounts, RequestFault};
pub use handle::Emulator;
pub use netns::{PodNetwork, PodNetworkMode};
pub use quantity::Quantity;
