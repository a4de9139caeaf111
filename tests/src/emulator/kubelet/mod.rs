//! The emulated kubelets: one manager loop for all emulated nodes, starting
//! a worker per pod bound to a node and stopping it when the pod is
//! deleted.
//!
//! - [`worker`]: one pod's lifecycle.
//! - [`container`]: one container process.
//! - [`exec`]: `pods/exec` processes in a container's context.
//! - [`dial`]: connections to a pod's ports.
//! - [`sandbox`]: mount namespace, volumes, memory cgroup.
//! - [`rootfs`]: images with a root filesystem (runtime bundles).
//! - [`volumes`], [`env`]: what the container sees.
//! - [`logs`]: CRI-format log files.
//! - [`status`]: pod status helpers and phase rules.

pub mod container;
pub mod dial;
pub mod env;
pub mod exec;
pub mod logs;
pub mod rootfs;
pub mod sandbox;
pub mod spawn;
pub mod status;
pub mod volumes;
pub mod worker;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;
use tokio::sync::watch;

use self::container::{ProcHandle, StopRequest};
use self::sandbox::MemoryMode;
use super::cluster::{Cluster, lock};
use super::resources;
use super::store::key_of;

/// A running pod worker.
#[derive(Debug)]
struct Worker {
    /// Sends the stop request.
    stop: watch::Sender<Option<StopRequest>>,
}

/// Kubelet-side state shared with the API (deletion) and fault injection.
#[derive(Debug)]
pub struct KubeletState {
    /// How memory limits are enforced here.
    pub memory: MemoryMode,
    /// Whether pods can get private mount namespaces (the error otherwise).
    pub mount_ns_ok: Result<(), String>,
    /// Workers by pod uid.
    workers: Mutex<HashMap<String, Worker>>,
    /// Pods whose worker has ended, by uid; they are never started again.
    finished: Mutex<HashSet<String>>,
    /// Live container processes by (pod uid, container name).
    procs: Mutex<HashMap<(String, String), ProcHandle>>,
    /// Nodes that were lost (their kubelets are gone).
    lost_nodes: Mutex<HashSet<String>>,
}

impl KubeletState {
    /// Decides the memory mode and checks mount namespaces once.
    pub fn new(memory: MemoryMode) -> Self {
        Self {
            memory,
            mount_ns_ok: sandbox::check_mount_namespaces(),
            workers: Mutex::new(HashMap::new()),
            finished: Mutex::new(HashSet::new()),
            procs: Mutex::new(HashMap::new()),
            lost_nodes: Mutex::new(HashSet::new()),
        }
    }

    /// Whether a pod has a live worker.
    pub fn has_worker(&self, pod: &Value) -> bool {
        let uid = pod
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or_default();
        lock(&self.workers).contains_key(uid)
    }

    /// Records a live container process.
    pub fn register_proc(&self, uid: &str, container: &str, h: ProcHandle) {
        lock(&self.procs).insert((uid.into(), container.into()), h);
    }

    /// Forgets a container process.
    pub fn unregister_proc(&self, uid: &str, container: &str) {
        lock(&self.procs).remove(&(uid.to_string(), container.to_string()));
    }

    /// The live processes of a pod.
    pub fn procs_of(&self, uid: &str) -> Vec<(String, ProcHandle)> {
        lock(&self.procs)
            .iter()
            .filter(|((u, _), _)| u == uid)
            .map(|((_, c), h)| (c.clone(), h.clone()))
            .collect()
    }

    /// Number of live container processes.
    pub fn process_count(&self) -> usize {
        lock(&self.procs).len()
    }

    /// Asks a pod's worker to stop; false if it has none.
    pub fn request_stop(&self, uid: &str, req: StopRequest) -> bool {
        match lock(&self.workers).get(uid) {
            Some(w) => {
                w.stop.send_if_modified(|cur| {
                    if cur.is_none() {
                        *cur = Some(req);
                        true
                    } else {
                        false
                    }
                });
                true
            }
            None => false,
        }
    }

    /// Marks a node lost or back.
    pub fn set_node_lost(&self, node: &str, lost: bool) {
        let mut l = lock(&self.lost_nodes);
        if lost {
            l.insert(node.into());
        } else {
            l.remove(node);
        }
    }

    /// Whether a node is lost.
    pub fn is_node_lost(&self, node: &str) -> bool {
        lock(&self.lost_nodes).contains(node)
    }

    /// SIGKILLs every container process (shutdown).
    pub fn kill_everything(&self) {
        for h in lock(&self.procs).values() {
            h.kill(Signal::SIGKILL);
        }
        for w in lock(&self.workers).values() {
            w.stop.send_replace(Some(StopRequest {
                grace: Duration::ZERO,
                node_lost: true,
            }));
        }
    }
}

fn str_at<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or_default()
}

/// Handles one pod: start, stop or finalize.
fn reconcile_pod(cluster: &Arc<Cluster>, pod: &Value, our_nodes: &HashSet<String>) {
    let node = str_at(pod, "/spec/nodeName");
    if node.is_empty() || !our_nodes.contains(node) {
        return;
    }
    let uid = str_at(pod, "/metadata/uid").to_string();
    let (ns, name) = key_of(pod);
    let deleting = pod.pointer("/metadata/deletionTimestamp").is_some();
    let k = &cluster.kubelet;
    let has_worker = lock(&k.workers).contains_key(&uid);
    if has_worker {
        if deleting {
            let grace = pod
                .pointer("/metadata/deletionGracePeriodSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(30)
                .max(0) as u64;
            let running: Vec<String> = k.procs_of(&uid).into_iter().map(|(c, _)| c).collect();
            let newly = lock(&k.workers)
                .get(&uid)
                .is_some_and(|w| w.stop.borrow().is_none());
            if newly {
                for c in running {
                    cluster.record_event(
                        pod,
                        "Normal",
                        "Killing",
                        &format!("Stopping container {c}"),
                        "kubelet",
                        Some(node),
                    );
                }
            }
            k.request_stop(
                &uid,
                StopRequest {
                    grace: Duration::from_secs(grace),
                    node_lost: false,
                },
            );
        }
        return;
    }
    if k.is_node_lost(node) {
        return;
    }
    let finished = lock(&k.finished).contains(&uid);
    let phase = str_at(pod, "/status/phase");
    if deleting {
        // Nothing runs for it here: the kubelet confirms the deletion.
        cluster.remove(resources::core("pods"), &ns, &name);
        return;
    }
    if finished || phase == "Succeeded" || phase == "Failed" {
        return;
    }
    let (tx, rx) = watch::channel(None);
    lock(&k.workers).insert(uid.clone(), Worker { stop: tx });
    let ctx = worker::PodCtx {
        cluster: cluster.clone(),
        ns,
        name,
        uid: uid.clone(),
        node: node.to_string(),
        dir: cluster.state_dir.join("pods").join(&uid),
        stop: rx,
    };
    let c = cluster.clone();
    tokio::spawn(async move {
        worker::run(ctx).await;
        // The sandbox is gone: its pod IP is free again.
        c.pod_network().release_pod_ip(&uid);
        lock(&c.kubelet.finished).insert(uid.clone());
        lock(&c.kubelet.workers).remove(&uid);
        // Let the manager see the worker is gone (deletions wait on it).
        let rv = c.store().current_rv();
        c.notify(rv);
    });
}

/// The kubelet manager loop.
pub async fn run(cluster: Arc<Cluster>) {
    let our_nodes: HashSet<String> = cluster
        .config
        .nodes
        .iter()
        .map(|n| n.name.clone())
        .collect();
    let pods = resources::core("pods");
    let mut changed = cluster.subscribe();
    let mut cursor = 0u64;
    let mut full = true;
    let mut resync = tokio::time::interval(Duration::from_secs(1));
    loop {
        let (batch, current, deleted) = {
            let store = cluster.store();
            let current = store.current_rv();
            let mut deleted = Vec::new();
            let batch = match (full, store.changes_since(cursor)) {
                (false, Ok(ch)) => {
                    let mut keys: Vec<(String, String)> = Vec::new();
                    for c in ch.iter().filter(|c| c.resource.plural == "pods") {
                        if c.kind == super::store::ChangeKind::Deleted {
                            deleted.push(str_at(&c.object, "/metadata/uid").to_string());
                        } else {
                            keys.push(key_of(&c.object));
                        }
                    }
                    keys.sort();
                    keys.dedup();
                    keys.iter()
                        .filter_map(|(ns, n)| store.get(pods, ns, n))
                        .collect()
                }
                _ => {
                    full = true;
                    store.list(pods, None)
                }
            };
            (batch, current, deleted)
        };
        for uid in deleted {
            cluster.kubelet.request_stop(
                &uid,
                StopRequest {
                    grace: Duration::ZERO,
                    node_lost: false,
                },
            );
        }
        for p in &batch {
            reconcile_pod(&cluster, p, &our_nodes);
        }
        if full {
            // Workers whose pod vanished (force deletion): kill at once.
            let uids: Vec<String> = lock(&cluster.kubelet.workers).keys().cloned().collect();
            let live: HashSet<String> = batch
                .iter()
                .map(|p| str_at(p, "/metadata/uid").to_string())
                .collect();
            for uid in uids.into_iter().filter(|u| !live.contains(u)) {
                cluster.kubelet.request_stop(
                    &uid,
                    StopRequest {
                        grace: Duration::ZERO,
                        node_lost: false,
                    },
                );
            }
            let mut fin = lock(&cluster.kubelet.finished);
            fin.retain(|u| live.contains(u));
        }
        cursor = current;
        full = false;
        tokio::select! {
            _ = cluster.shutdown.cancelled() => return,
            _ = changed.changed() => {}
            _ = resync.tick() => full = true,
        }
    }
}
