//! What the Kubernetes end-to-end tests share: an emulated cluster loaded
//! with the shipped RBAC, a ReadWriteMany claim over a scratch directory
//! (so a `file:` job store is the same directory for the leader on this
//! machine and for the agents in pods), and the real `toil-leader` run
//! against it under the leader's service account.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job as KubeJob;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;
use toil_jobstore::{JobStore, Locator, layout};
use toil_proto::v1::workflow_service_client::WorkflowServiceClient;
use toil_proto::v1::{Job, ListJobsRequest};
use toil_tests::emulator::{Emulator, EmulatorConfig, Identity, NodeConfig};
use toil_tests::harness::{bin, bin_dir, repo_root, scratch};
use tokio::process::{Child, Command};

/// The appliance image: maps to target/debug, where toil-agent is.
pub const IMAGE: &str = "toil-appliance:dev";
/// The namespace of deploy/rbac.yaml.
pub const NS: &str = "toil";
/// The claim over the scratch directory.
pub const CLAIM: &str = "jobstore";
/// The owner label the tests' leaders use.
pub const OWNER: &str = "tester";
/// Label selector of everything a test's leaders made.
pub const SELECTOR: &str = "app.kubernetes.io/managed-by=toil-leader,toil.io/owner=tester";

/// An emulated cluster and a scratch directory shared with its pods.
pub struct Cluster {
    /// The emulator.
    pub emu: Emulator,
    /// Kubeconfig of the leader's service account.
    pub kubeconfig: PathBuf,
    /// Scratch directory: job stores, workflows, outputs (the claim).
    pub dir: tempfile::TempDir,
}

/// Emulator settings every test starts from: the appliance image, the
/// shipped RBAC, quick retries.
pub fn config(nodes: Vec<NodeConfig>) -> EmulatorConfig {
    let mut cfg = EmulatorConfig::default()
        .with_nodes(nodes)
        .with_image(IMAGE, Some(bin_dir()))
        .with_rbac_file(repo_root().join("deploy/rbac.yaml"))
        .with_namespace(NS);
    cfg.timing.mount_retry = Duration::from_millis(300);
    cfg.timing.scheduler_retry = Duration::from_millis(300);
    cfg
}

/// Makes `dir` the contents of an appliance image that also holds a
/// container engine: every program of target/debug (linked), and a
/// `singularity` that runs the tests' stand-in (tests/fixtures/bin), its
/// pulls recorded in `dir/pulls.jsonl` and each of its command lines in
/// `dir/engine.log`. Give it to [`config_with_image_dir`].
pub fn appliance_with_singularity(dir: &Path) {
    let entries = std::fs::read_dir(bin_dir()).unwrap_or_else(|e| panic!("{e}"));
    for e in entries.flatten() {
        let p = e.path();
        let is_program = p.is_file()
            && p.extension().is_none()
            && std::os::unix::fs::PermissionsExt::mode(
                &p.metadata().unwrap_or_else(|e| panic!("{e}")).permissions(),
            ) & 0o111
                != 0;
        if is_program {
            std::os::unix::fs::symlink(&p, dir.join(e.file_name()))
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }
    let stand_in = repo_root().join("tests/fixtures/bin/singularity");
    let script = format!(
        "#!/bin/sh\nprintf '%s\\n' \"$*\" >> '{log}'\nFAKE_SINGULARITY_LOG='{pulls}' FAKE_SINGULARITY_PULL_SECONDS=0.2 exec '{stand_in}' \"$@\"\n",
        log = dir.join("engine.log").display(),
        pulls = dir.join("pulls.jsonl").display(),
        stand_in = stand_in.display(),
    );
    let engine = dir.join("singularity");
    std::fs::write(&engine, script).unwrap_or_else(|e| panic!("{e}"));
    std::fs::set_permissions(&engine, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .unwrap_or_else(|e| panic!("{e}"));
}

/// [`config`], with the appliance image's contents in `image_dir` (see
/// [`appliance_with_singularity`]) instead of target/debug.
pub fn config_with_image_dir(nodes: Vec<NodeConfig>, image_dir: &Path) -> EmulatorConfig {
    let mut cfg = config(nodes);
    for i in cfg.images.iter_mut().filter(|i| i.name == IMAGE) {
        i.path_dir = Some(image_dir.to_path_buf());
    }
    cfg
}

impl Cluster {
    /// Starts `cfg` and makes the claim.
    pub async fn start(cfg: EmulatorConfig) -> Cluster {
        let dir = scratch("k8s-");
        let emu = Emulator::start(cfg).unwrap_or_else(|e| panic!("emulator: {e}"));
        let kubeconfig = emu
            .kubeconfig_for(&Identity::service_account(NS, "toil-leader"))
            .unwrap_or_else(|e| panic!("{e}"));
        let c = Cluster {
            emu,
            kubeconfig,
            dir,
        };
        c.make_claim(CLAIM, c.dir.path()).await;
        c
    }

    /// An admin client (test set-up and checks, outside the Role).
    pub async fn admin(&self) -> kube::Client {
        self.emu
            .client(&Identity::Admin)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// A ReadWriteMany claim bound to a volume over `host_dir` (an NFS
    /// export in real life; every emulated node sees the same directory).
    pub async fn make_claim(&self, name: &str, host_dir: &Path) {
        let client = self.admin().await;
        let pv: PersistentVolume = serde_json::from_value(json!({
            "metadata": {"name": format!("{name}-pv")},
            "spec": {"capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteMany"],
                "nfs": {"server": "nfs.example.org", "path": host_dir}}
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        Api::<PersistentVolume>::all(client.clone())
            .create(&PostParams::default(), &pv)
            .await
            .unwrap_or_else(|e| panic!("creating the volume: {e}"));
        let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"accessModes": ["ReadWriteMany"], "volumeName": format!("{name}-pv"),
                "resources": {"requests": {"storage": "10Gi"}}}
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        Api::<PersistentVolumeClaim>::namespaced(client, NS)
            .create(&PostParams::default(), &pvc)
            .await
            .unwrap_or_else(|e| panic!("creating the claim: {e}"));
    }

    /// Writes a workflow file into the scratch directory.
    pub fn workflow(&self, name: &str, yaml: &str) -> PathBuf {
        let p = self.dir.path().join(format!("{name}.yaml"));
        std::fs::write(&p, yaml).unwrap_or_else(|e| panic!("{e}"));
        p
    }

    /// The job store of a workflow in the scratch directory.
    pub fn job_store(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.jobstore"))
    }

    /// `toil-leader run WF --batchSystem kubernetes` with the job store on
    /// the claim, as the leader's service account; `extra` flags last.
    pub fn leader(&self, name: &str, extra: &[&str]) -> Command {
        let mut cmd = Command::new(bin("toil-leader"));
        cmd.arg("run")
            .arg(self.dir.path().join(format!("{name}.yaml")))
            .args(["--batchSystem", "kubernetes", "--jobStore"])
            .arg(self.job_store(name))
            .arg("--kubernetesJobStoreClaim")
            .arg(format!("{CLAIM}:{}", self.dir.path().display()))
            .arg("--outputDir")
            .arg(self.dir.path().join(format!("{name}-output")))
            .args(["--clean", "never", "--agentLease", "10s"])
            .args(extra);
        self.leader_env(&mut cmd);
        cmd
    }

    /// `toil-cwl-runner --batchSystem kubernetes` on `document` and `job`
    /// with the same job store, claim, flags and environment as
    /// [`Cluster::leader`] (containers left on: a DockerRequirement runs
    /// through the agent's Singularity path), outputs to `--outdir
    /// SCRATCH/NAME-output`; `extra` flags before the document.
    pub fn cwl_runner(&self, name: &str, document: &Path, job: &Path, extra: &[&str]) -> Command {
        let mut cmd = Command::new(bin("toil-cwl-runner"));
        cmd.args(["--batchSystem", "kubernetes", "--jobStore"])
            .arg(self.job_store(name))
            .arg("--kubernetesJobStoreClaim")
            .arg(format!("{CLAIM}:{}", self.dir.path().display()))
            .arg("--outdir")
            .arg(self.dir.path().join(format!("{name}-output")))
            .args(["--clean", "never", "--agentLease", "10s"])
            .args(extra)
            .arg(document)
            .arg(job);
        self.leader_env(&mut cmd);
        cmd
    }

    /// The environment (and working directory, stdin) of a leader run by
    /// a test: the leader's service account, the appliance image, the
    /// tests' owner, and none of the caller's TOIL_* settings.
    fn leader_env(&self, cmd: &mut Command) {
        cmd.current_dir(self.dir.path())
            .env("KUBECONFIG", &self.kubeconfig)
            .env("TOIL_APPLIANCE_SELF", IMAGE)
            .env("TOIL_KUBERNETES_OWNER", OWNER)
            .env("HOME", self.dir.path())
            .env("TOIL_STATE_DIR", self.dir.path().join("state"))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        for var in [
            "TOIL_JOBSTORE",
            "TOIL_BATCH_SYSTEM",
            "TOIL_WORKDIR",
            "TOIL_KUBERNETES_HOST_PATH",
            "TOIL_AWS_SECRET_NAME",
            "TOIL_KUBERNETES_NAMESPACE",
            "TOIL_KUBERNETES_CONTEXT",
            "TOIL_REUSE_AGENTS",
            "TOIL_CLIENT_TOKEN",
            "RUST_LOG",
        ] {
            cmd.env_remove(var);
        }
    }

    /// Runs a leader to the end; returns (exit code, stdout + stderr).
    pub async fn run(&self, name: &str, extra: &[&str], limit: Duration) -> (i32, String) {
        let mut cmd = self.leader(name, extra);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let child = cmd.spawn().unwrap_or_else(|e| panic!("toil-leader: {e}"));
        let out = tokio::time::timeout(limit, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("toil-leader run {name} took longer than {limit:?}"))
            .unwrap_or_else(|e| panic!("{e}"));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), text)
    }

    /// Starts a leader in the background, its output going to a file in
    /// the scratch directory (read it with [`Cluster::output_of`]).
    pub fn spawn(&self, name: &str, extra: &[&str]) -> Child {
        let log = std::fs::File::create(self.dir.path().join(format!("{name}.leader.log")))
            .unwrap_or_else(|e| panic!("{e}"));
        let mut cmd = self.leader(name, extra);
        cmd.stdout(log.try_clone().unwrap_or_else(|e| panic!("{e}")))
            .stderr(log);
        cmd.spawn().unwrap_or_else(|e| panic!("toil-leader: {e}"))
    }

    /// What a spawned leader printed.
    pub fn output_of(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.leader.log")))
            .unwrap_or_default()
    }

    /// `toil-leader status --jobs` on a workflow's job store.
    pub async fn status(&self, name: &str) -> String {
        let out = Command::new(bin("toil-leader"))
            .arg("status")
            .arg(self.job_store(name))
            .arg("--jobs")
            .output()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// The Kubernetes Jobs matching `selector`, by name.
    pub async fn kube_jobs(&self, selector: &str) -> Vec<String> {
        let api: Api<KubeJob> = Api::namespaced(self.admin().await, NS);
        list(&api, selector)
            .await
            .into_iter()
            .filter_map(|j| j.metadata.name)
            .collect()
    }

    /// The pods matching `selector`.
    pub async fn pods(&self, selector: &str) -> Vec<Pod> {
        let api: Api<Pod> = Api::namespaced(self.admin().await, NS);
        list(&api, selector).await
    }

    /// Waits until the pod of job `job` runs; returns (pod, node).
    pub async fn running_pod(&self, job: &str, limit: Duration) -> (String, String) {
        let sel = format!("{SELECTOR},toil.io/job={job}");
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            for p in self.pods(&sel).await {
                let running = p
                    .status
                    .as_ref()
                    .and_then(|s| s.phase.as_deref())
                    .is_some_and(|ph| ph == "Running");
                if running && p.metadata.deletion_timestamp.is_none() {
                    let node = p.spec.and_then(|s| s.node_name).unwrap_or_default();
                    return (p.metadata.name.unwrap_or_default(), node);
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no running pod for job {job} within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until nothing labelled by the tests' leaders is left.
    pub async fn wait_all_gone(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let jobs = self.kube_jobs(SELECTOR).await;
            let pods = self.pods(SELECTOR).await;
            if jobs.is_empty() && pods.is_empty() {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                let pods: Vec<String> = pods
                    .iter()
                    .map(|p| {
                        format!(
                            "{} ({:?}, node {:?}, deleting {})",
                            p.metadata.name.clone().unwrap_or_default(),
                            p.status.as_ref().and_then(|s| s.phase.clone()),
                            p.spec.as_ref().and_then(|s| s.node_name.clone()),
                            p.metadata.deletion_timestamp.is_some()
                        )
                    })
                    .collect();
                let api: Api<Pod> = Api::namespaced(self.admin().await, NS);
                let mut logs = String::new();
                for p in self.pods(SELECTOR).await {
                    let name = p.metadata.name.unwrap_or_default();
                    let log = api
                        .logs(&name, &Default::default())
                        .await
                        .unwrap_or_default();
                    logs.push_str(&format!("\n--- {name}:\n{log}"));
                }
                panic!("left behind after {limit:?}: Jobs {jobs:?}, pods {pods:?}{logs}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until no Job is left and every pod left is being deleted (its
    /// agent may take the pod's grace period to stop when its leader is
    /// gone).
    pub async fn wait_jobs_gone(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let jobs = self.kube_jobs(SELECTOR).await;
            let live = self
                .pods(SELECTOR)
                .await
                .into_iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .filter_map(|p| p.metadata.name)
                .collect::<Vec<_>>();
            if jobs.is_empty() && live.is_empty() {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "left behind after {limit:?}: Jobs {jobs:?}, pods not being deleted {live:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The jobs of a running leader, through its WorkflowService (address
    /// and client token from the job store).
    pub async fn jobs_of(&self, name: &str) -> Vec<Job> {
        let store = JobStore::open(&Locator::File(self.job_store(name)))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let info = store
            .get_bytes(layout::LEADER_KEY)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("no leader.json in the job store"));
        let info =
            toil_tests::local::LeaderInfo::parse(&info.data).unwrap_or_else(|e| panic!("{e}"));
        let token = format!("Bearer {}", info.client_token);
        let mut client = WorkflowServiceClient::new(info.channel().await);
        let mut req = tonic::Request::new(ListJobsRequest {
            states: vec![],
            page_size: 1000,
            page_token: String::new(),
        });
        req.metadata_mut().insert(
            "authorization",
            token.parse().unwrap_or_else(|e| panic!("{e:?}")),
        );
        client
            .list_jobs(req)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .into_inner()
            .jobs
    }
}

/// Lists objects, riding out the faults a test injects (they hit every
/// client, the test's own included).
async fn list<K>(api: &Api<K>, selector: &str) -> Vec<K>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut last = String::new();
    for _ in 0..50 {
        match api.list(&ListParams::default().labels(selector)).await {
            Ok(l) => return l.items,
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("listing {selector}: {last}");
}

/// The line of `status` output about job `job`.
pub fn status_line<'a>(status: &'a str, job: &str) -> &'a str {
    status
        .lines()
        .find(|l| l.split_whitespace().next() == Some(job))
        .unwrap_or_else(|| panic!("no line for job {job} in:\n{status}"))
}

/// Sends a signal to a child process.
pub fn signal(child: &Child, sig: nix::sys::signal::Signal) {
    let pid = child
        .id()
        .unwrap_or_else(|| panic!("the process has exited"));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig)
        .unwrap_or_else(|e| panic!("kill: {e}"));
}
