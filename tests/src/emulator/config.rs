//! Emulator configuration: nodes, images, identities and timings.
//!
//! The same types are built by tests in Rust and parsed from the standalone
//! binary's flags (`--node worker-1:cpu=4,memory=8Gi,gpu=1,preemptible`), so
//! both front-ends describe clusters identically.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use super::quantity::Quantity;

/// A node taint (`key=value:Effect`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaintConfig {
    /// Taint key.
    pub key: String,
    /// Taint value, possibly empty.
    pub value: String,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    pub effect: String,
}

impl FromStr for TaintConfig {
    type Err = String;

    /// Parses `key=value:Effect` or `key:Effect`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (kv, effect) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("taint {s:?} must look like key=value:NoSchedule"))?;
        if !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&effect) {
            return Err(format!("taint {s:?}: unknown effect {effect:?}"));
        }
        let (key, value) = kv.split_once('=').unwrap_or((kv, ""));
        if key.is_empty() {
            return Err(format!("taint {s:?} has an empty key"));
        }
        Ok(Self {
            key: key.into(),
            value: value.into(),
            effect: effect.into(),
        })
    }
}

/// One emulated node.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeConfig {
    /// Node name (also its `kubernetes.io/hostname` label).
    pub name: String,
    /// Allocatable CPU.
    pub cpu: Quantity,
    /// Allocatable memory.
    pub memory: Quantity,
    /// Allocatable ephemeral storage.
    pub ephemeral_storage: Quantity,
    /// Number of GPUs, published under [`EmulatorConfig::gpu_resource`].
    pub gpus: i64,
    /// Maximum number of pods (the kubelet default is 110).
    pub max_pods: i64,
    /// Spot/preemptible capacity: gets [`EmulatorConfig::preemptible_labels`]
    /// and [`EmulatorConfig::preemptible_taints`].
    pub preemptible: bool,
    /// Extra labels.
    pub labels: BTreeMap<String, String>,
    /// Extra taints.
    pub taints: Vec<TaintConfig>,
}

impl NodeConfig {
    /// A node with 4 CPUs, 8Gi memory, 50Gi ephemeral storage and no GPU.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            cpu: Quantity::from_units(4),
            memory: Quantity::from_units(8 << 30),
            ephemeral_storage: Quantity::from_units(50 << 30),
            gpus: 0,
            max_pods: 110,
            preemptible: false,
            labels: BTreeMap::new(),
            taints: Vec::new(),
        }
    }

    /// Sets the CPU (panics on a malformed literal: for tests).
    pub fn cpu(mut self, q: &str) -> Self {
        self.cpu = parse_q(q);
        self
    }

    /// Sets the memory (panics on a malformed literal: for tests).
    pub fn memory(mut self, q: &str) -> Self {
        self.memory = parse_q(q);
        self
    }

    /// Sets the ephemeral storage (panics on a malformed literal: for tests).
    pub fn ephemeral_storage(mut self, q: &str) -> Self {
        self.ephemeral_storage = parse_q(q);
        self
    }

    /// Sets the GPU count.
    pub fn gpus(mut self, n: i64) -> Self {
        self.gpus = n;
        self
    }

    /// Marks the node as spot/preemptible capacity.
    pub fn preemptible(mut self) -> Self {
        self.preemptible = true;
        self
    }

    /// Adds a label.
    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.labels.insert(k.into(), v.into());
        self
    }

    /// Adds a taint.
    pub fn taint(mut self, t: TaintConfig) -> Self {
        self.taints.push(t);
        self
    }
}

fn parse_q(q: &str) -> Quantity {
    q.parse()
        .unwrap_or_else(|e| panic!("bad quantity {q:?} in a test node: {e}"))
}

impl FromStr for NodeConfig {
    type Err = String;

    /// Parses `NAME[:key=value,...]` with keys `cpu`, `memory`,
    /// `ephemeral-storage`, `gpu`, `pods`, `label=k=v`, `taint=k=v:Effect`
    /// and the flag `preemptible`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, rest) = s.split_once(':').unwrap_or((s, ""));
        if name.is_empty() {
            return Err(format!("node {s:?} has no name"));
        }
        let mut node = NodeConfig::new(name);
        for item in rest.split(',').filter(|i| !i.is_empty()) {
            let (k, v) = item.split_once('=').unwrap_or((item, ""));
            let q = || {
                v.parse::<Quantity>()
                    .map_err(|e| format!("node {name}: {k}={v}: {e}"))
            };
            let n = || {
                v.parse::<i64>()
                    .map_err(|e| format!("node {name}: {k}={v}: {e}"))
            };
            match k {
                "cpu" => node.cpu = q()?,
                "memory" => node.memory = q()?,
                "ephemeral-storage" | "disk" => node.ephemeral_storage = q()?,
                "gpu" | "gpus" => node.gpus = n()?,
                "pods" => node.max_pods = n()?,
                "preemptible" | "spot" => node.preemptible = v.is_empty() || v == "true",
                "label" => {
                    let (lk, lv) = v
                        .split_once('=')
                        .ok_or_else(|| format!("node {name}: label {v:?} must be k=v"))?;
                    node.labels.insert(lk.into(), lv.into());
                }
                "taint" => node.taints.push(v.parse()?),
                other => return Err(format!("node {name}: unknown key {other:?}")),
            }
        }
        Ok(node)
    }
}

/// A container image the emulated nodes can "pull".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageConfig {
    /// Image reference as pods name it (`toil-appliance:dev`). A reference
    /// without a tag also matches `NAME:latest`.
    pub name: String,
    /// Directory put first on the container's PATH, standing for the image's
    /// contents (`target/debug` makes `toil-agent` resolvable).
    pub path_dir: Option<PathBuf>,
}

impl FromStr for ImageConfig {
    type Err = String;

    /// Parses `NAME[=DIR]`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, dir) = match s.split_once('=') {
            Some((n, d)) => (n, Some(PathBuf::from(d))),
            None => (s, None),
        };
        if name.is_empty() {
            return Err(format!("image {s:?} has no name"));
        }
        Ok(Self {
            name: name.into(),
            path_dir: dir,
        })
    }
}

/// Who a bearer token authenticates as.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Identity {
    /// Bypasses RBAC (member of `system:masters`), for test set-up.
    Admin,
    /// A plain user.
    User(String),
    /// `system:serviceaccount:NAMESPACE:NAME`.
    ServiceAccount {
        /// The service account's namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
}

impl Identity {
    /// A service-account identity.
    pub fn service_account(namespace: &str, name: &str) -> Self {
        Identity::ServiceAccount {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// The user name RBAC and error messages use.
    pub fn user_name(&self) -> String {
        match self {
            Identity::Admin => "kubernetes-admin".into(),
            Identity::User(u) => u.clone(),
            Identity::ServiceAccount { namespace, name } => {
                format!("system:serviceaccount:{namespace}:{name}")
            }
        }
    }

    /// The groups the identity belongs to.
    pub fn groups(&self) -> Vec<String> {
        let mut g = match self {
            Identity::Admin => vec!["system:masters".to_string()],
            Identity::User(_) => vec![],
            Identity::ServiceAccount { namespace, .. } => vec![
                "system:serviceaccounts".to_string(),
                format!("system:serviceaccounts:{namespace}"),
            ],
        };
        g.push("system:authenticated".into());
        g
    }
}

impl FromStr for Identity {
    type Err = String;

    /// Parses `admin`, `user:NAME`, `serviceaccount:NS:NAME` or
    /// `system:serviceaccount:NS:NAME`.
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "admin" {
            return Ok(Identity::Admin);
        }
        let sa = s
            .strip_prefix("system:serviceaccount:")
            .or_else(|| s.strip_prefix("serviceaccount:"));
        if let Some(rest) = sa {
            let (ns, name) = rest
                .split_once(':')
                .ok_or_else(|| format!("identity {s:?}: expected serviceaccount:NS:NAME"))?;
            return Ok(Identity::service_account(ns, name));
        }
        match s.strip_prefix("user:") {
            Some(u) if !u.is_empty() => Ok(Identity::User(u.into())),
            _ => Err(format!(
                "identity {s:?}: expected admin, user:NAME or serviceaccount:NS:NAME"
            )),
        }
    }
}

/// How container memory limits are enforced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryEnforcement {
    /// A memory cgroup if one can be made here, else RSS polling.
    Auto,
    /// A memory cgroup, or fail the container (CreateContainerError).
    Cgroup,
    /// Poll the process group's RSS and SIGKILL past the limit.
    Poll,
    /// Do not enforce limits.
    Off,
}

/// Delays of the emulated control plane. Real clusters use the larger
/// values noted on each field; tests want the smaller defaults.
#[derive(Clone, Debug)]
pub struct Timing {
    /// How long `ErrImagePull` shows before `ImagePullBackOff`, and the base
    /// of the pull retry backoff (real: about 10 s).
    pub image_pull_backoff: Duration,
    /// How often the scheduler retries unschedulable pods (real: 1–10 s
    /// backoff, plus on cluster changes).
    pub scheduler_retry: Duration,
    /// Base of the Job controller's pod re-creation backoff (real: 10 s,
    /// doubling per failure).
    pub job_backoff: Duration,
    /// Base of the container restart backoff (CrashLoopBackOff; real: 10 s).
    pub crash_loop_backoff: Duration,
    /// Interval between BOOKMARK events on watches that allow them (real:
    /// about a minute).
    pub bookmark_interval: Duration,
    /// How often controllers re-examine everything for time-based work
    /// (deadlines, TTLs).
    pub resync: Duration,
    /// How often FailedMount is re-reported for a volume that cannot mount.
    pub mount_retry: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            image_pull_backoff: Duration::from_millis(500),
            scheduler_retry: Duration::from_secs(1),
            job_backoff: Duration::from_secs(1),
            crash_loop_backoff: Duration::from_millis(500),
            bookmark_interval: Duration::from_secs(5),
            resync: Duration::from_millis(200),
            mount_retry: Duration::from_secs(2),
        }
    }
}

/// Everything needed to start an emulator.
#[derive(Clone, Debug)]
pub struct EmulatorConfig {
    /// The nodes; at least one.
    pub nodes: Vec<NodeConfig>,
    /// Plain-HTTP listen address (127.0.0.1:0 picks a port).
    pub http_listen: SocketAddr,
    /// HTTPS listen address; pods reach the API here.
    pub https_listen: SocketAddr,
    /// Where node and pod directories, logs and kubeconfigs go; a temporary
    /// directory removed at shutdown if unset.
    pub state_dir: Option<PathBuf>,
    /// Images the nodes can pull.
    pub images: Vec<ImageConfig>,
    /// RBAC manifests (and ServiceAccounts, Namespaces) to load at start.
    pub rbac_files: Vec<PathBuf>,
    /// Namespaces to create at start besides `default` and `kube-system`.
    pub namespaces: Vec<String>,
    /// Extended resource name of GPUs.
    pub gpu_resource: String,
    /// Labels given to preemptible nodes.
    pub preemptible_labels: BTreeMap<String, String>,
    /// Taints given to preemptible nodes.
    pub preemptible_taints: Vec<TaintConfig>,
    /// How many changes watches can be resumed from.
    pub watch_history: usize,
    /// Memory limit enforcement.
    pub memory_enforcement: MemoryEnforcement,
    /// Host environment variables copied into every container (a real
    /// container sees none; `RUST_LOG` or coverage settings are handy).
    pub passthrough_env: Vec<String>,
    /// Extra fixed tokens (for example from a file given to the binary).
    pub tokens: Vec<(String, Identity)>,
    /// Delays.
    pub timing: Timing,
    /// How pods are networked: the host's network (default) or one network
    /// namespace of their own (see [`super::netns`]).
    pub pod_network: super::netns::PodNetworkMode,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        Self {
            nodes: vec![NodeConfig::new("node-1")],
            http_listen: loopback,
            https_listen: loopback,
            state_dir: None,
            images: Vec::new(),
            rbac_files: Vec::new(),
            namespaces: Vec::new(),
            gpu_resource: "nvidia.com/gpu".into(),
            preemptible_labels: BTreeMap::from([(
                "cloud.google.com/gke-spot".to_string(),
                "true".to_string(),
            )]),
            preemptible_taints: Vec::new(),
            watch_history: 20_000,
            memory_enforcement: MemoryEnforcement::Auto,
            passthrough_env: Vec::new(),
            tokens: Vec::new(),
            timing: Timing::default(),
            pod_network: super::netns::PodNetworkMode::Host,
        }
    }
}

impl EmulatorConfig {
    /// Replaces the node list.
    pub fn with_nodes(mut self, nodes: Vec<NodeConfig>) -> Self {
        self.nodes = nodes;
        self
    }

    /// Adds a known image, optionally with a directory put first on PATH.
    pub fn with_image(mut self, name: &str, path_dir: Option<PathBuf>) -> Self {
        self.images.push(ImageConfig {
            name: name.into(),
            path_dir,
        });
        self
    }

    /// Adds an RBAC manifest file.
    pub fn with_rbac_file(mut self, path: PathBuf) -> Self {
        self.rbac_files.push(path);
        self
    }

    /// Adds a namespace created at start.
    pub fn with_namespace(mut self, ns: &str) -> Self {
        self.namespaces.push(ns.into());
        self
    }

    /// Chooses the pod network: `Isolated` puts every pod in one network
    /// namespace of its own, where the host's `127.0.0.1` is unreachable.
    pub fn with_pod_network(mut self, mode: super::netns::PodNetworkMode) -> Self {
        self.pod_network = mode;
        self
    }

    /// Checks values that would only fail later.
    pub fn validate(&self) -> Result<(), String> {
        if self.nodes.is_empty() {
            return Err("at least one node is needed".into());
        }
        let mut names: Vec<&str> = self.nodes.iter().map(|n| n.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        if names.len() != self.nodes.len() {
            return Err("node names must be unique".into());
        }
        for n in &self.nodes {
            if !super::validation::is_dns1123_subdomain(&n.name) {
                return Err(format!(
                    "node name {:?} is not a DNS-1123 subdomain",
                    n.name
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_node_flags() {
        let n: NodeConfig = "worker-1:cpu=2,memory=4Gi,ephemeral-storage=10Gi,gpu=1,preemptible,label=zone=a,taint=dedicated=gpu:NoSchedule"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(n.name, "worker-1");
        assert_eq!(n.cpu, Quantity::from_units(2));
        assert_eq!(n.memory.ceil_units(), 4 << 30);
        assert_eq!(n.gpus, 1);
        assert!(n.preemptible);
        assert_eq!(n.labels.get("zone").map(String::as_str), Some("a"));
        assert_eq!(n.taints[0].effect, "NoSchedule");
        assert!("w:cpu=lots".parse::<NodeConfig>().is_err());
        assert!("w:colour=red".parse::<NodeConfig>().is_err());
    }

    #[test]
    fn parses_identities_and_images() {
        assert_eq!(
            "system:serviceaccount:toil:toil-leader".parse::<Identity>(),
            Ok(Identity::service_account("toil", "toil-leader"))
        );
        assert_eq!(
            "user:alice".parse::<Identity>(),
            Ok(Identity::User("alice".into()))
        );
        assert!("bob".parse::<Identity>().is_err());
        let img: ImageConfig = "toil-appliance:dev=/opt/bin"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(img.name, "toil-appliance:dev");
        assert_eq!(img.path_dir, Some(PathBuf::from("/opt/bin")));
    }
}
