//! The public face of the emulator: [`Emulator::start`] runs a cluster on
//! its own thread and runtime (so a test that blocks on `kubectl` cannot
//! starve it), and the handle offers URLs, kubeconfigs, fault injection,
//! counters and shutdown.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::bootstrap;
use super::cluster::{Cluster, StallRule, lock};
use super::config::{EmulatorConfig, Identity};
use super::error::EmulatorError;
use super::faults::{RequestCounts, RequestFault};
use super::kubeconfig;
use super::kubelet::{self, KubeletState, sandbox};
use super::server::{self, tls};
use super::{jobs, netns, proxy, scheduler};

/// A running emulated cluster. Dropping it shuts it down (kills every pod
/// process).
pub struct Emulator {
    /// The shared cluster state.
    cluster: Arc<Cluster>,
    /// `https://127.0.0.1:PORT`.
    url: String,
    /// `http://127.0.0.1:PORT`.
    http_url: String,
    /// Token of the RBAC-exempt admin identity.
    admin_token: String,
    /// The thread running the cluster's runtime.
    thread: Option<std::thread::JoinHandle<()>>,
    /// The temporary state directory, if none was configured.
    _tempdir: Option<tempfile::TempDir>,
    /// How late the runtime woke a 5 ms timer, in microseconds, one sample
    /// per wakeup ([`Emulator::scheduling_lag_ms`]).
    lag: Arc<Mutex<Vec<u32>>>,
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Emulator {
    /// Starts a cluster and returns once it serves requests.
    pub fn start(config: EmulatorConfig) -> Result<Emulator, EmulatorError> {
        config.validate().map_err(EmulatorError::Config)?;
        let (state_dir, tempdir) = match &config.state_dir {
            Some(d) => {
                std::fs::create_dir_all(d)
                    .map_err(|e| EmulatorError::io(format!("cannot create {}", d.display()), e))?;
                (d.clone(), None)
            }
            None => {
                let t = tempfile::Builder::new()
                    .prefix("toil-k8s-emulator-")
                    .tempdir()
                    .map_err(|e| EmulatorError::io("cannot create a state directory", e))?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        let material = tls::generate()?;
        std::fs::write(state_dir.join("ca.crt"), &material.ca_pem)
            .map_err(|e| EmulatorError::io("cannot write ca.crt", e))?;
        let memory = sandbox::detect_memory_mode(config.memory_enforcement)
            .map_err(EmulatorError::Config)?;
        let kubelet_state = KubeletState::new(memory);
        let network = netns::PodNetwork::new(config.pod_network).map_err(EmulatorError::Config)?;
        let http_addr = config.http_listen;
        let https_addr = config.https_listen;
        let tokens = config.tokens.clone();
        let cluster = Arc::new(Cluster::new(
            config,
            state_dir,
            material.ca_pem.clone(),
            kubelet_state,
        ));
        cluster.set_pod_network(network);
        let admin_token = cluster.token_for(&Identity::Admin);
        for (t, id) in tokens {
            cluster.add_token(&t, id);
        }

        let lag = Arc::new(Mutex::new(Vec::new()));
        let lag_samples = lag.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let c = cluster.clone();
        let server_config = material.server_config.clone();
        let thread = std::thread::Builder::new()
            .name("k8s-emulator".into())
            .spawn(move || {
                // More workers than this machine has cores, as the API
                // server's Go runtime preempts: a long pass of a controller
                // or a large list then delays Service and port-forward
                // bytes by an OS time slice, not by the whole pass.
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(6)
                    .max_blocking_threads(64)
                    .thread_name("k8s-emulator-rt")
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(EmulatorError::io("cannot build a runtime", e)));
                        return;
                    }
                };
                rt.block_on(async {
                    if let Err(e) = bootstrap::bootstrap(&c) {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                    let addrs = match server::start(
                        c.clone(),
                        http_addr,
                        https_addr,
                        server_config.clone(),
                    )
                    .await
                    {
                        Ok(a) => a,
                        Err(e) => {
                            let _ = ready_tx
                                .send(Err(EmulatorError::io("cannot bind the API listeners", e)));
                            return;
                        }
                    };
                    let _ = c.http_port.set(addrs.0.port());
                    let _ = c.https_port.set(addrs.1.port());
                    if let Err(e) = netns::start_in_cluster_api(&c, server_config) {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                    let tasks = vec![
                        tokio::spawn(kubelet::run(c.clone())),
                        tokio::spawn(scheduler::run(c.clone())),
                        tokio::spawn(jobs::run(c.clone())),
                        tokio::spawn(proxy::run(c.clone())),
                    ];
                    tokio::spawn(probe_lag(lag_samples.clone()));
                    let _ = ready_tx.send(Ok(addrs));
                    c.shutdown.cancelled().await;
                    c.kubelet.kill_everything();
                    // Let workers reap their processes and remove cgroups.
                    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
                    while c.kubelet.process_count() > 0 && tokio::time::Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    for t in tasks {
                        t.abort();
                    }
                });
                sandbox::remove_parent(&c.kubelet.memory);
                rt.shutdown_timeout(Duration::from_secs(1));
            })
            .map_err(|e| EmulatorError::io("cannot start the emulator thread", e))?;
        let (http, https) = match ready_rx.recv() {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(EmulatorError::Config(
                    "the emulator thread died while starting".into(),
                ));
            }
        };
        Ok(Emulator {
            cluster,
            url: format!("https://{https}"),
            http_url: format!("http://{http}"),
            admin_token,
            thread: Some(thread),
            _tempdir: tempdir,
            lag,
        })
    }

    /// The HTTPS URL (what kubeconfigs and pods use).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The plain-HTTP URL (same API, no TLS).
    pub fn http_url(&self) -> &str {
        &self.http_url
    }

    /// The CA certificate (PEM) that signed the HTTPS certificate.
    pub fn ca_pem(&self) -> &str {
        &self.cluster.ca_pem
    }

    /// The state directory (nodes' hostPaths, pod dirs, logs, kubeconfigs).
    pub fn state_dir(&self) -> &Path {
        &self.cluster.state_dir
    }

    /// The RBAC-exempt admin token (for test set-up).
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// The bearer token of an identity (minted on first use).
    pub fn token_for(&self, identity: &Identity) -> String {
        self.cluster.token_for(identity)
    }

    /// A kubeconfig for an identity, as text, with the given default
    /// namespace.
    pub fn kubeconfig_yaml(&self, identity: &Identity, namespace: &str) -> String {
        kubeconfig::render(
            &self.url,
            &self.cluster.ca_pem,
            identity,
            &self.token_for(identity),
            namespace,
        )
    }

    /// Writes a kubeconfig for an identity under the state directory and
    /// returns its path (default namespace: the service account's, else
    /// `default`).
    pub fn kubeconfig_for(&self, identity: &Identity) -> Result<PathBuf, EmulatorError> {
        let ns = kubeconfig::default_namespace(identity);
        let name = identity.user_name().replace([':', '/'], "_");
        let path = self
            .cluster
            .state_dir
            .join(format!("kubeconfig-{name}.yaml"));
        std::fs::write(&path, self.kubeconfig_yaml(identity, &ns))
            .map_err(|e| EmulatorError::io(format!("cannot write {}", path.display()), e))?;
        Ok(path)
    }

    /// A kube-rs client authenticated as an identity, over HTTPS.
    pub async fn client(&self, identity: &Identity) -> Result<kube::Client, EmulatorError> {
        let ns = kubeconfig::default_namespace(identity);
        let kc = kube::config::Kubeconfig::from_yaml(&self.kubeconfig_yaml(identity, &ns))
            .map_err(|e| EmulatorError::Config(e.to_string()))?;
        let cfg =
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| EmulatorError::Config(e.to_string()))?;
        kube::Client::try_from(cfg).map_err(|e| EmulatorError::Config(e.to_string()))
    }

    /// Kills a running container; it reports `exit_code`.
    pub fn kill_container(
        &self,
        namespace: &str,
        pod: &str,
        container: Option<&str>,
        exit_code: i32,
    ) -> Result<(), EmulatorError> {
        self.cluster
            .kill_container(namespace, pod, container, exit_code)
    }

    /// Kubelet eviction for node pressure on `resource` (`memory`,
    /// `ephemeral-storage`).
    pub fn evict_pod(
        &self,
        namespace: &str,
        pod: &str,
        resource: &str,
    ) -> Result<(), EmulatorError> {
        self.cluster.evict_pod(namespace, pod, resource)
    }

    /// Scheduler preemption of a pod.
    pub fn preempt_pod(&self, namespace: &str, pod: &str) -> Result<(), EmulatorError> {
        self.cluster.preempt_pod(namespace, pod)
    }

    /// Loses a node and everything running on it.
    pub fn lose_node(&self, node: &str) -> Result<(), EmulatorError> {
        self.cluster.lose_node(node)
    }

    /// Brings a lost node back.
    pub fn restore_node(&self, node: &str) -> Result<(), EmulatorError> {
        self.cluster.restore_node(node)
    }

    /// Fails the next matching API requests.
    pub fn fail_requests(&self, fault: RequestFault) {
        lock(&self.cluster.faults).add(fault);
    }

    /// Cancels pending request faults.
    pub fn clear_request_faults(&self) {
        lock(&self.cluster.faults).clear();
    }

    /// Drops every open watch connection (clients must re-watch).
    pub fn drop_watches(&self) {
        self.cluster.watch_generation.send_modify(|g| *g += 1);
    }

    /// Forgets the watch history: any watch from an older resourceVersion
    /// gets 410 Expired and must relist.
    pub fn expire_watch_history(&self) {
        let mut store = self.cluster.store();
        store.compact();
        let rv = store.current_rv();
        drop(store);
        self.cluster.notify(rv);
    }

    /// Keeps matching pods in ContainerCreating (a volume never mounts).
    pub fn stall_pods(&self, rule: StallRule) {
        self.cluster.add_stall_rule(rule);
    }

    /// Lifts all stall rules.
    pub fn clear_stall_rules(&self) {
        lock(&self.cluster.stall_rules).clear();
    }

    /// API requests by verb and resource since start or the last reset.
    pub fn request_counts(&self) -> RequestCounts {
        lock(&self.cluster.faults).counts()
    }

    /// How late the emulator's runtime has been, in milliseconds, since the
    /// last call: one sample per 5 ms timer. Tail values of hundreds of ms
    /// mean the test bed itself was saturated, and every byte through a
    /// Service or a port-forward waited that long.
    pub fn scheduling_lag_ms(&self) -> Vec<f64> {
        std::mem::take(&mut *lock(&self.lag))
            .into_iter()
            .map(|us| f64::from(us) / 1000.0)
            .collect()
    }

    /// Zeroes the request counters.
    pub fn reset_request_counts(&self) {
        lock(&self.cluster.faults).reset_counts();
    }

    /// Number of container processes alive right now.
    pub fn running_containers(&self) -> usize {
        self.cluster.kubelet.process_count()
    }

    /// The directory a hostPath maps to on an emulated node.
    pub fn host_path(&self, node: &str, path: &str) -> PathBuf {
        kubelet::volumes::host_path_dir(&self.cluster.state_dir, node, path)
    }

    /// The pod network (isolated or the host's): sockets inside it, pod
    /// IPs, and the in-cluster API address.
    pub fn pod_network(&self) -> &Arc<netns::PodNetwork> {
        self.cluster.pod_network()
    }

    /// The shared cluster state (for in-crate helpers).
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    fn stop(&mut self) {
        self.cluster.shutdown.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Stops the cluster: kills every pod process, closes the listeners.
    pub fn shutdown(mut self) {
        self.stop();
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Samples the runtime's scheduling lag: how much later than asked a 5 ms
/// timer fires. At most one hour of samples is kept.
async fn probe_lag(samples: Arc<Mutex<Vec<u32>>>) {
    const TICK: Duration = Duration::from_millis(5);
    loop {
        let t = std::time::Instant::now();
        tokio::time::sleep(TICK).await;
        let late = t.elapsed().saturating_sub(TICK);
        let mut s = lock(&samples);
        if s.len() < 720_000 {
            s.push(u32::try_from(late.as_micros()).unwrap_or(u32::MAX));
        }
    }
}
