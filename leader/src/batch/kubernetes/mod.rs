//! The Kubernetes batch system: one batch/v1 Job per agent, followed
//! through one watch on the workflow's pods.
//!
//! A tour:
//! - [`settings`]: the flags and environment, checked before anything runs;
//! - [`api`]: connecting like kubectl, retries (429 `Retry-After`, 5xx
//!   back-off, no retry of other 4xx) and the creation rate limit;
//! - [`names`]: Job names within 63 characters, labels and selectors;
//! - [`podspec`]: the Job that runs `toil-agent run` in the appliance image;
//! - [`nodes`]: node shapes for the fit check and the cluster's capacity;
//! - [`diagnose`]: a pod's status read into a typed cause, in the cluster's
//!   own words;
//! - `task`: the batch task itself: Job creation at a bounded rate
//!   (`launch`), pod tracking and verdicts (`pods`), the watch and the
//!   lookups that explain a failure (`watch`), timeouts and kills;
//! - [`cleanup`]: deletion by label at shutdown, on restart and for
//!   `toil-leader cleanup-jobs`;
//! - [`tunnel`]: the relay pod and the tunnels over the API server that
//!   join agents to a leader the pods cannot route to.
//!
//! Cost per job: one `create` of its Job, plus one `delete` only when the
//! pod cannot end by itself (unschedulable, image or volume never ready) or
//! the leader kills it, plus a `get` of a log, an event list or the Job only
//! to explain a failure. Everything else comes from the shared watch;
//! finished Jobs go with `ttlSecondsAfterFinished`, and the leader deletes
//! its remaining Jobs with one call when it stops.

pub mod api;
pub mod cleanup;
pub mod counting;
pub mod diagnose;
pub mod names;
pub mod nodes;
pub mod podspec;
pub mod settings;
mod task;
pub mod tunnel;

use k8s_openapi::api::core::v1::{Node, PersistentVolumeClaim, Pod};
use kube::api::{Api, ListParams};

pub use settings::{ClaimMount, KubernetesConfig, Toleration};
pub use task::run;

use self::api::{Connection, RetryPolicy, Target};
use self::nodes::NodeShape;
use crate::batch::Capacity;
use crate::workflow::Machine;

/// Which workflow and leader the batch task works for.
#[derive(Clone, Debug)]
pub struct Identity {
    /// The workflow's id (labels).
    pub workflow_id: String,
    /// This leader's epoch (labels; older epochs are cleaned up).
    pub epoch: u64,
    /// The address agents dial.
    pub leader_address: String,
}

/// A cluster the leader has connected to and checked.
pub struct Cluster {
    /// The client and namespace.
    pub(crate) conn: Connection,
    /// The settings.
    pub(crate) cfg: KubernetesConfig,
    /// The nodes, if they could be listed.
    nodes: Option<Vec<NodeShape>>,
}

impl Cluster {
    /// Connects and checks what can be checked before the workflow starts:
    /// that pods can be listed (the watch needs it), that the job store's
    /// claim exists, and what the nodes offer (a warning, not an error,
    /// when the nodes cannot be listed).
    pub async fn connect(cfg: KubernetesConfig) -> Result<Cluster, String> {
        let conn = api::connect(cfg.context.as_deref(), cfg.namespace.as_deref()).await?;
        let ns = conn.namespace.clone();
        let policy = RetryPolicy::default();

        let pods: Api<Pod> = Api::namespaced(conn.client.clone(), &ns);
        let lp = ListParams::default()
            .labels(&names::owner_selector(&cfg.owner, None))
            .limit(1);
        api::call(
            &policy,
            &Target::new("list", "pods", "", &ns),
            &format!("listing pods in namespace {ns:?} on {}", conn.server),
            || pods.list(&lp),
        )
        .await
        .map_err(|e| e.to_string())?;

        if let Some(c) = &cfg.job_store_claim {
            let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(conn.client.clone(), &ns);
            let got = api::call(
                &policy,
                &Target::new("get", "persistentvolumeclaims", "", &ns),
                &format!("reading the job store's claim {:?}", c.claim),
                || pvcs.get_opt(&c.claim),
            )
            .await;
            match got {
                Ok(Some(pvc)) => {
                    let modes = pvc.spec.and_then(|s| s.access_modes).unwrap_or_default();
                    if !modes.iter().any(|m| m == "ReadWriteMany") {
                        crate::say!(
                            "warning: the claim {:?} is not ReadWriteMany (access modes {modes:?}); pods on different nodes may fail to mount the job store",
                            c.claim
                        );
                    }
                }
                Ok(None) => {
                    return Err(format!(
                        "--kubernetesJobStoreClaim: there is no PersistentVolumeClaim {:?} in namespace {ns:?}; create a ReadWriteMany claim that holds the job store (and mount it at the same path for the leader)",
                        c.claim
                    ));
                }
                Err(e) if e.code() == Some(403) => {
                    crate::say!("warning: cannot check the job store's claim: {e}");
                }
                Err(e) => return Err(e.to_string()),
            }
        }

        let node_api: Api<Node> = Api::all(conn.client.clone());
        let all = ListParams::default();
        let listed = api::call(
            &policy,
            &Target::new("list", "nodes", "", ""),
            "listing the cluster's nodes",
            || node_api.list(&all),
        )
        .await;
        let nodes = match listed {
            Ok(list) => Some(
                list.items
                    .iter()
                    .map(|n| nodes::shape(n, &cfg.gpu_resource))
                    .collect(),
            ),
            Err(e) => {
                crate::say!(
                    "warning: cannot list the cluster's nodes, so jobs are not checked against node sizes and the leader does not limit how many pods it queues: {e}"
                );
                None
            }
        };
        Ok(Cluster { conn, cfg, nodes })
    }

    /// The namespace Jobs go in.
    pub fn namespace(&self) -> &str {
        &self.conn.namespace
    }

    /// The Kubernetes API requests the leader has sent, for `/metrics`.
    pub fn api_requests(&self) -> &crate::metrics::ApiRequests {
        &self.conn.requests
    }

    /// One line for the terminal: where the workflow runs.
    pub fn describe(&self) -> String {
        let nodes = match &self.nodes {
            Some(n) => format!(
                ", {} node(s), {} schedulable",
                n.len(),
                n.iter().filter(|n| n.schedulable).count()
            ),
            None => String::new(),
        };
        format!(
            "namespace {} on {} ({}{nodes}), image {}",
            self.conn.namespace, self.conn.server, self.conn.source, self.cfg.image
        )
    }

    /// True when the API server is on this machine's loopback (the
    /// emulator, or a port-forward): then pods may share this host's network.
    pub fn server_is_loopback(&self) -> bool {
        self.conn
            .server
            .parse::<http::Uri>()
            .ok()
            .and_then(|u| u.host().map(|h| h.trim_matches(['[', ']']).to_string()))
            .is_some_and(|h| {
                h == "localhost"
                    || h.parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            })
    }

    /// The nodes as machines for the fit check, if they could be listed.
    pub fn machines(&self) -> Option<Vec<Machine>> {
        self.nodes.as_deref().map(nodes::machines)
    }

    /// What the workflow may use at once: the schedulable nodes' total
    /// within `limits`, or `limits` when the nodes are unknown.
    pub fn capacity(&self, limits: &Capacity) -> Capacity {
        match &self.nodes {
            Some(n) if n.iter().any(|n| n.schedulable) => nodes::capacity(n, limits),
            _ => limits.clone(),
        }
    }

    /// The most memory one job can get: the largest node's, less its
    /// agent's share of the pod (the cap of out-of-memory retries).
    pub fn largest_memory(&self) -> Option<u64> {
        self.nodes
            .as_ref()?
            .iter()
            .map(|n| n.memory.saturating_sub(podspec::AGENT_MEMORY))
            .max()
    }

    /// Deletes the Jobs of this workflow's other epochs (a previous leader's,
    /// on `--restart`), and their orphaned pods. Returns how many Jobs.
    pub async fn delete_other_epochs(
        &self,
        workflow_id: &str,
        epoch: u64,
    ) -> Result<usize, String> {
        let naming = names::Naming::new(&self.cfg.owner, workflow_id, epoch);
        let sel = naming.other_epochs_selector();
        let jobs = cleanup::delete_jobs(&self.conn.client, &self.conn.namespace, &sel)
            .await
            .map_err(|e| e.to_string())?;
        cleanup::delete_pods(&self.conn.client, &self.conn.namespace, &sel)
            .await
            .map_err(|e| e.to_string())?;
        cleanup::delete_secrets(&self.conn.client, &self.conn.namespace, &sel)
            .await
            .map_err(|e| e.to_string())?;
        match cleanup::delete_services(&self.conn.client, &self.conn.namespace, &sel).await {
            // RBAC without `services`: there was no relay to remove.
            Err(e) if e.code() != Some(403) => return Err(e.to_string()),
            _ => {}
        }
        Ok(jobs.len())
    }
}
