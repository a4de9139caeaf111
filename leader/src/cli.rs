//! The `toil-leader` command line. Flag names follow Toil's, so existing
//! command lines and `TOIL_*` variables carry over.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use toil_jobstore::Locator;

use crate::batch::Capacity;
use crate::batch::kubernetes::KubernetesConfig;
use crate::batch::local::LocalConfig;
use crate::config::{self, Batch, Clean, RunConfig};
use crate::run::{Failure, exit};
use crate::workflow::{self, Machine, Workflow, units};

const ABOUT: &str = "Run workflows of command-line jobs on this machine or on Kubernetes.";

const LONG_ABOUT: &str = "\
Run workflows of command-line jobs on this machine or on Kubernetes.

A workflow is a YAML file listing jobs: commands (optionally in a container
image) with their inputs, outputs, resources and dependencies. The leader
runs each job through an agent process that fetches its inputs, runs it,
streams its output back live and stores its outputs in the job store.

Start with:
  toil-leader run examples/hello.yaml

The workflow's state lives in the job store (--jobStore), so a stopped or
crashed run resumes with --restart, and `status` / `logs` work during and
after a run.";

/// The command line.
#[derive(Debug, Parser)]
#[command(name = "toil-leader", version, about = ABOUT, long_about = LONG_ABOUT)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a workflow (or resume one with --restart).
    Run(Box<RunArgs>),
    /// Show a workflow's progress and failures, from its job store.
    Status(StatusArgs),
    /// Print a job's log (all jobs' logs without JOB); --follow to stream.
    Logs(LogsArgs),
    /// Delete a job store and everything in it.
    Clean(CleanArgs),
    /// Write a self-contained HTML report of a workflow from its job store:
    /// timeline, requested vs used CPU and memory, slowest jobs, failures.
    #[command(long_about = REPORT_ABOUT)]
    Report(ReportArgs),
    /// Delete the Kubernetes Jobs (and pods) a leader left behind, by label.
    CleanupJobs(CleanupJobsArgs),
    /// Run the embedded agent (what `toil-agent` does); used by the local
    /// batch system when no separate toil-agent executable is installed.
    #[command(hide = true)]
    Agent(AgentArgs),
}

/// `toil-leader agent`.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// What the agent does.
    #[command(subcommand)]
    pub command: AgentCommand,
}

/// The embedded agent's subcommands.
#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Take jobs from the leader and run them.
    Run(Box<toil_agent::config::RunArgs>),
}

/// Where agents run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BatchSystem {
    /// Processes on this machine.
    #[value(name = "local", alias = "single_machine")]
    Local,
    /// Kubernetes Jobs in the current kubectl context.
    #[value(name = "kubernetes")]
    Kubernetes,
}

/// `toil-leader run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The workflow file (YAML).
    pub workflow: PathBuf,

    /// Where the workflow keeps its state and files: file:PATH (or a plain
    /// path) or aws:REGION:NAME (S3 bucket NAME--toil). Default:
    /// ./WORKFLOW.jobstore.
    #[arg(long = "jobStore", env = "TOIL_JOBSTORE")]
    pub job_store: Option<String>,

    /// Where jobs run.
    #[arg(
        long = "batchSystem",
        env = "TOIL_BATCH_SYSTEM",
        value_enum,
        default_value = "local"
    )]
    pub batch_system: BatchSystem,

    /// Resume the workflow in the job store: finished jobs are not run again.
    #[arg(long)]
    pub restart: bool,

    /// Show job output on the terminal as it is written.
    #[arg(
        long = "realTimeLogging",
        env = "TOIL_REAL_TIME_LOGGING",
        default_value_t = true,
        num_args = 0..=1,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub real_time_logging: bool,

    /// Most bytes of one attempt's log the leader keeps, e.g. 500Mi. Past
    /// it the log (stored, followed and on the terminal) ends with a line
    /// saying so and the rest of the job's output is counted, not kept: a
    /// job that prints without end cannot fill the job store. The agent's
    /// own spool is not affected.
    #[arg(
        long = "maxLogBytesPerAttempt",
        env = "TOIL_MAX_LOG_BYTES_PER_ATTEMPT",
        default_value = "4Gi"
    )]
    pub max_log_bytes_per_attempt: String,

    /// Log the leader's own progress messages.
    #[arg(long = "logInfo")]
    pub log_info: bool,

    /// Log everything, including each agent report.
    #[arg(long = "logDebug")]
    pub log_debug: bool,

    /// How many times to retry a job that fails by itself (non-zero exit,
    /// out of memory, time limit). Platform failures (lost agent, evicted
    /// or preempted pod) have a separate budget (--infraRetryCount).
    /// Default: 1. On --restart, given only to change it (the workflow
    /// keeps the value it ran with otherwise).
    #[arg(long = "retryCount", env = "TOIL_RETRY_COUNT")]
    pub retry_count: Option<u32>,

    /// How many times to retry a job lost to the platform. Default: 5.
    #[arg(long = "infraRetryCount")]
    pub infra_retry_count: Option<u32>,

    /// Most CPU cores used at once (local), e.g. 4 or 0.5. Default: all.
    #[arg(long = "maxCores", env = "TOIL_MAX_CORES")]
    pub max_cores: Option<String>,

    /// Most memory used at once (local), e.g. 8Gi. Default: all.
    #[arg(long = "maxMemory", env = "TOIL_MAX_MEMORY")]
    pub max_memory: Option<String>,

    /// Most disk used at once (local), e.g. 100G. Default: not limited.
    #[arg(long = "maxDisk", env = "TOIL_MAX_DISK")]
    pub max_disk: Option<String>,

    /// Cores for jobs that do not say. Default: 1. Like every default and
    /// retry count, a restart keeps the workflow's value unless given.
    #[arg(long = "defaultCores")]
    pub default_cores: Option<String>,

    /// Memory for jobs that do not say. Default: 2Gi.
    #[arg(long = "defaultMemory")]
    pub default_memory: Option<String>,

    /// Disk for jobs that do not say. Default: 2Gi.
    #[arg(long = "defaultDisk")]
    pub default_disk: Option<String>,

    /// When to delete the job store at the end.
    #[arg(long, value_enum, default_value = "onSuccess")]
    pub clean: Clean,

    /// Where the workflow's outputs are copied when it succeeds. Default:
    /// ./WORKFLOW-output.
    #[arg(long = "outputDir")]
    pub output_dir: Option<PathBuf>,

    /// Write an HTML report of the run to this file when it ends, whether
    /// it succeeded or not (the same file `toil-leader report` writes:
    /// timeline, requested vs used CPU and memory, slowest jobs, failures
    /// with their log tails). Written before the job store is cleaned up.
    #[arg(long = "report", value_name = "FILE")]
    pub report: Option<PathBuf>,

    /// Work directory for agents: job directories and the shared input
    /// cache. Default: $TMPDIR/toil-UID.
    #[arg(long = "workDir", env = "TOIL_WORKDIR")]
    pub work_dir: Option<PathBuf>,

    /// The toil-agent executable. Default: next to toil-leader, or on PATH.
    #[arg(long = "agentBinary", env = "TOIL_AGENT_BINARY")]
    pub agent_binary: Option<PathBuf>,

    /// Address to listen on for agents and clients.
    #[arg(
        long = "leaderBind",
        env = "TOIL_LEADER_BIND",
        default_value = "127.0.0.1:0"
    )]
    pub listen: SocketAddr,

    /// Address agents and clients use to reach this leader, if not the bind
    /// address (for example https://10.0.0.5:7070). The leader serves TLS
    /// only. Local agents use the leader's Unix socket unless this is given.
    #[arg(long = "leaderAddress", env = "TOIL_LEADER_ADVERTISE")]
    pub advertise: Option<String>,

    /// The live web view: jobs, graph, timeline and logs in a browser,
    /// updated as the workflow runs, plus /metrics for Prometheus. The
    /// leader prints its URL with a token at start (open it as printed).
    /// Default: loopback, any free port. An address other than loopback
    /// (for example 0.0.0.0:8443) is served over HTTPS only, with the
    /// leader's own certificate. `off` turns it off.
    #[arg(
        long = "webUI",
        env = "TOIL_WEB_UI",
        default_value = "127.0.0.1:0",
        value_name = "ADDR|off"
    )]
    pub web_ui: String,

    /// A file holding the web view's token, so that it stays the same
    /// across starts (for Prometheus, or a bookmark). Only its owner may
    /// read it (chmod 600), and it holds one line of at least 32
    /// characters. Default: a new token at every start. Give it again with
    /// --restart.
    #[arg(
        long = "webTokenFile",
        env = "TOIL_WEB_TOKEN_FILE",
        value_name = "FILE"
    )]
    pub web_token_file: Option<PathBuf>,

    /// A directory of your own on the leader's machine for the client token
    /// and the leader's Unix socket (kept out of the job store, which jobs
    /// can read). Default: $XDG_RUNTIME_DIR/toil, else
    /// $XDG_STATE_HOME/toil, else ~/.local/state/toil.
    #[arg(long = "stateDir", env = "TOIL_STATE_DIR")]
    pub state_dir: Option<PathBuf>,

    /// An agent that stops reporting for this long is lost and its job is
    /// retried; an agent that cannot reach the leader this long kills its
    /// job and exits.
    #[arg(long = "agentLease", default_value = "30s", value_parser = humantime::parse_duration)]
    pub agent_lease: Duration,

    /// Let an agent whose job finished take another queued job that fits
    /// its slot instead of exiting. Default: on for the local batch system,
    /// where starting an agent costs more CPU than a short job (it triples
    /// throughput on trivial jobs); off for Kubernetes, where an agent is a
    /// pod sized for one job. --reuseAgents=false starts one agent per job.
    #[arg(
        long = "reuseAgents",
        env = "TOIL_REUSE_AGENTS",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new(),
    )]
    pub reuse_agents: Option<bool>,

    /// Turn off the shared input cache: each job downloads its own inputs.
    #[arg(long = "disableCaching")]
    pub disable_caching: bool,

    /// Most disk the shared input cache may use, e.g. 50G. Default: keep a
    /// safety margin of the free space.
    #[arg(long = "cacheMaxSize")]
    pub cache_max_size: Option<String>,

    /// Longest wait of an agent for any one node cache lock, e.g. 2m
    /// (agents' default: 120s). A job can hold the cache's lock files;
    /// past this, staging fails (STAGING_FAILED) naming the lock and its
    /// holder.
    #[arg(long = "cacheLockTimeout", value_parser = humantime::parse_duration)]
    pub cache_lock_timeout: Option<Duration>,

    /// Longest time an agent spends staging one job's inputs, downloads
    /// included, e.g. 2h (agents' default: 1h).
    #[arg(long = "stagingTimeout", value_parser = humantime::parse_duration)]
    pub staging_timeout: Option<Duration>,

    /// Longest time an agent's pull of one container image may take, e.g.
    /// 2h (agents' default: 1h). Past it the pull is stopped and the job
    /// fails (IMAGE_PULL); a job waiting for the same image pulls it next.
    #[arg(long = "imagePullTimeout", value_parser = humantime::parse_duration)]
    pub image_pull_timeout: Option<Duration>,

    /// Container engine for jobs with an image: singularity or apptainer.
    /// Default: whichever is on PATH.
    #[arg(long = "containerEngine", env = "TOIL_CONTAINER_ENGINE")]
    pub container_engine: Option<String>,

    /// The kubeconfig context to use. Default: the current context, or the
    /// pod's service account when the leader runs in the cluster.
    #[arg(
        long = "kubernetesContext",
        env = "TOIL_KUBERNETES_CONTEXT",
        help_heading = "Kubernetes"
    )]
    pub kubernetes_context: Option<String>,

    /// The namespace for the workflow's Jobs. Default: the context's
    /// namespace (the pod's own in the cluster).
    #[arg(
        long = "kubernetesNamespace",
        env = "TOIL_KUBERNETES_NAMESPACE",
        help_heading = "Kubernetes"
    )]
    pub kubernetes_namespace: Option<String>,

    /// The appliance image every job's pod runs (it holds toil-agent; jobs
    /// with their own image run inside it through Singularity/Apptainer).
    #[arg(
        long = "kubernetesImage",
        env = "TOIL_APPLIANCE_SELF",
        help_heading = "Kubernetes"
    )]
    pub kubernetes_image: Option<String>,

    /// Who runs the workflow: labels and names its Jobs, for
    /// `cleanup-jobs --owner`. Default: your user name.
    #[arg(
        long = "kubernetesOwner",
        env = "TOIL_KUBERNETES_OWNER",
        help_heading = "Kubernetes"
    )]
    pub kubernetes_owner: Option<String>,

    /// A directory on each node, mounted at the work directory (--workDir,
    /// default /var/lib/toil) so the pods of a node share the input cache.
    /// Each owner (--kubernetesOwner) gets its own subdirectory, so
    /// workflows of different owners share nothing. A hostPath volume is
    /// refused in namespaces that enforce the Pod Security Standard
    /// "baseline" or "restricted", and agents run as root with it (the
    /// kubelet creates host directories owned by root). Default: each pod
    /// gets its own emptyDir.
    #[arg(
        long = "kubernetesHostPath",
        env = "TOIL_KUBERNETES_HOST_PATH",
        help_heading = "Kubernetes"
    )]
    pub kubernetes_host_path: Option<String>,

    /// A secret holding an AWS `credentials` file, mounted at
    /// /var/run/secrets/toil/aws in every pod (for an aws: job store).
    #[arg(
        long = "awsSecretName",
        env = "TOIL_AWS_SECRET_NAME",
        help_heading = "Kubernetes"
    )]
    pub aws_secret_name: Option<String>,

    /// The service account job pods run as (no API token is mounted: agents
    /// never call the API). Default: the namespace's `default`.
    #[arg(
        long = "kubernetesServiceAccount",
        env = "TOIL_KUBERNETES_SERVICE_ACCOUNT",
        help_heading = "Kubernetes"
    )]
    pub kubernetes_service_account: Option<String>,

    /// A pod on a node whose container has not started after this long
    /// (a volume that never mounts, an image pull that never ends), or a
    /// Job that made no pod, fails the attempt as POD_START_TIMEOUT.
    #[arg(long = "kubernetesPodTimeout", default_value = "5m", value_parser = humantime::parse_duration, help_heading = "Kubernetes")]
    pub kubernetes_pod_timeout: Duration,

    /// A pod the scheduler cannot place for this long, while no other pod
    /// of the workflow gets placed either, fails its job as UNSCHEDULABLE
    /// with the scheduler's message.
    #[arg(long = "kubernetesPendingTimeout", default_value = "15m", value_parser = humantime::parse_duration, help_heading = "Kubernetes")]
    pub kubernetes_pending_timeout: Duration,

    /// Run job containers privileged. Jobs with their own `image:` run
    /// through Singularity/Apptainer inside the agent's pod, which needs
    /// user namespaces or setuid and FUSE mounts: the default pods (no
    /// capabilities, no privilege escalation, seccomp RuntimeDefault, a
    /// non-root user) refuse those. Pods are then no longer accepted in a
    /// namespace that enforces the Pod Security Standard "baseline" or
    /// "restricted".
    #[arg(long = "kubernetesPrivileged", help_heading = "Kubernetes")]
    pub kubernetes_privileged: bool,

    /// Run job containers with the AppArmor profile `unconfined` (lets
    /// Singularity mount inside pods on AppArmor hosts; Toil's #4331).
    #[arg(long = "kubernetesAppArmorUnconfined", help_heading = "Kubernetes")]
    pub kubernetes_apparmor_unconfined: bool,

    /// The extended resource that counts GPUs on the nodes.
    #[arg(
        long = "kubernetesGpuResource",
        default_value = "nvidia.com/gpu",
        help_heading = "Kubernetes"
    )]
    pub kubernetes_gpu_resource: String,

    /// The node label (KEY=VALUE) of spot/preemptible nodes: preemptible
    /// jobs prefer them, the others never run there.
    #[arg(
        long = "kubernetesSpotLabel",
        default_value = "cloud.google.com/gke-spot=true",
        help_heading = "Kubernetes"
    )]
    pub kubernetes_spot_label: String,

    /// The taint (KEY=VALUE:EFFECT) of spot nodes that preemptible jobs
    /// tolerate. Default: the spot label with effect NoSchedule.
    #[arg(long = "kubernetesSpotToleration", help_heading = "Kubernetes")]
    pub kubernetes_spot_toleration: Option<String>,

    /// For a file: job store: CLAIM[:PATH] mounts the ReadWriteMany
    /// PersistentVolumeClaim CLAIM at PATH (default: the job store's
    /// directory) in every pod, so agents see the store the leader sees.
    #[arg(
        long = "kubernetesJobStoreClaim",
        env = "TOIL_KUBERNETES_JOBSTORE_CLAIM",
        help_heading = "Kubernetes"
    )]
    pub kubernetes_job_store_claim: Option<String>,

    /// Most Jobs created per second.
    #[arg(
        long = "kubernetesMaxCreatesPerSecond",
        default_value_t = 20.0,
        help_heading = "Kubernetes"
    )]
    pub kubernetes_max_creates: f64,

    /// How long a finished Job stays (ttlSecondsAfterFinished), so
    /// `kubectl logs` works for a while; the leader deletes its remaining
    /// Jobs when it stops.
    #[arg(long = "kubernetesJobTtl", default_value = "10m", value_parser = humantime::parse_duration, help_heading = "Kubernetes")]
    pub kubernetes_job_ttl: Duration,

    /// Added to a job's time_limit for its Job's activeDeadlineSeconds
    /// (start-up, staging and upload count too). Not used with
    /// --reuseAgents, where a pod runs several jobs.
    #[arg(long = "kubernetesDeadlineSlack", default_value = "5m", value_parser = humantime::parse_duration, help_heading = "Kubernetes")]
    pub kubernetes_deadline_slack: Duration,

    /// The leader pod's IP (set from the downward API in
    /// deploy/leader-job.yaml): agents dial http://IP:PORT when
    /// --leaderAddress is not given.
    #[arg(
        long = "leaderPodIP",
        env = "TOIL_LEADER_POD_IP",
        help_heading = "Kubernetes"
    )]
    pub leader_pod_ip: Option<String>,

    /// How agents reach a leader outside the cluster: `auto` (a relay pod
    /// probes the leader's address; agents go through a tunnel over the API
    /// server only when pods cannot reach it), `direct` (agents dial the
    /// address, no probe) or `tunnel` (always through the relay pod). The
    /// tunnel needs `pods/portforward` and `services` in the leader's RBAC
    /// (deploy/rbac.yaml).
    #[arg(
        long = "agentConnection",
        env = "TOIL_KUBERNETES_AGENT_CONNECTION",
        value_enum,
        default_value = "auto",
        help_heading = "Kubernetes"
    )]
    pub agent_connection: crate::batch::kubernetes::settings::AgentConnection,
}

/// `toil-leader cleanup-jobs`.
#[derive(Debug, Args)]
pub struct CleanupJobsArgs {
    /// Whose Jobs: the TOIL_KUBERNETES_OWNER the leader ran with. Default:
    /// your user name.
    #[arg(long, env = "TOIL_KUBERNETES_OWNER")]
    pub owner: Option<String>,
    /// Only this workflow's Jobs (its id, the `toil.io/workflow` label,
    /// printed when the leader starts).
    #[arg(long)]
    pub workflow: Option<String>,
    /// The kubeconfig context. Default: the current one.
    #[arg(long = "kubernetesContext", env = "TOIL_KUBERNETES_CONTEXT")]
    pub context: Option<String>,
    /// The namespace. Default: the context's.
    #[arg(long = "kubernetesNamespace", env = "TOIL_KUBERNETES_NAMESPACE")]
    pub namespace: Option<String>,
}

impl CleanupJobsArgs {
    /// Runs `cleanup-jobs`.
    pub async fn run(self) -> anyhow::Result<u8> {
        let owner = self
            .owner
            .filter(|o| !o.trim().is_empty())
            .unwrap_or_else(crate::batch::kubernetes::names::default_owner);
        crate::batch::kubernetes::cleanup::cleanup_jobs(
            &owner,
            self.workflow.as_deref(),
            self.context.as_deref(),
            self.namespace.as_deref(),
        )
        .await
    }
}

/// `toil-leader status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The job store.
    pub job_store: String,
    /// List every job, not only the failed ones.
    #[arg(long)]
    pub jobs: bool,
    /// Print one JSON object instead of text, for scripts: the state,
    /// counts by state, usage totals and every job with its attempts
    /// (causes, times, CPU, peak memory against the memory given,
    /// placement). Its fields are described in docs/metrics.md.
    #[arg(long)]
    pub json: bool,
}

/// `toil-leader logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The job store.
    pub job_store: String,
    /// The job; without it, every job's latest log.
    pub job: Option<String>,
    /// Which attempt (1 for the first); default the latest.
    #[arg(long)]
    pub attempt: Option<u32>,
    /// Keep printing as the job writes (needs the leader running).
    #[arg(long, short = 'f')]
    pub follow: bool,
}

/// The long help of `toil-leader report`.
const REPORT_ABOUT: &str = "Write one self-contained HTML file about a workflow, read from its job \
store: a timeline with one bar per attempt, requested versus used CPU and memory per job name \
(to right-size requests), the slowest attempts, the failures with their causes and log tails, and \
cache and job-store figures. It needs no leader: run it after the workflow ended (keep the store \
with --clean never) or while it runs (a snapshot). The file loads nothing from the network; open \
it in any browser, mail it, or keep it with the results.\n\nExample:\n  toil-leader report \
./wf.jobstore -o report.html\n  toil-leader report aws:us-west-2:my-run -o report.html";

/// `toil-leader report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The job store: a path (or file:PATH) or aws:REGION:NAME.
    pub job_store: String,
    /// Where to write the HTML file.
    #[arg(short = 'o', long = "output", default_value = "report.html")]
    pub output: PathBuf,
}

/// `toil-leader clean`.
#[derive(Debug, Args)]
pub struct CleanArgs {
    /// The job store to delete.
    pub job_store: String,
}

fn bad(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Failure {
        code: exit::BAD_INPUT,
        message: message.into(),
    })
}

fn size(flag: &str, v: &str) -> anyhow::Result<u64> {
    units::parse_size(v).map_err(|e| bad(format!("{flag} {v:?}: {e}")))
}

fn cores(flag: &str, v: &str) -> anyhow::Result<u32> {
    units::parse_cores(v).map_err(|e| bad(format!("{flag} {v:?}: {e}")))
}

impl RunArgs {
    /// Checks every option and the workflow file, and builds the run's
    /// settings. Nothing is opened or bound yet.
    pub fn into_config(self) -> anyhow::Result<RunConfig> {
        self.into_config_for(None)
    }

    /// The settings for a CWL run (`toil-cwl-runner`): `workflow` names the
    /// CWL document, which is not parsed here; `wf` is the (jobless)
    /// workflow the leader runs, `None` on a restart.
    pub fn into_cwl_config(self, wf: Option<Workflow>) -> anyhow::Result<RunConfig> {
        self.into_config_for(Some(wf))
    }

    fn into_config_for(self, cwl: Option<Option<Workflow>>) -> anyhow::Result<RunConfig> {
        let is_cwl = cwl.is_some();
        let cwd = std::env::current_dir()?;
        let locator = match &self.job_store {
            Some(s) => Locator::parse_in(s, &cwd).map_err(|e| bad(e.to_string()))?,
            None => config::default_job_store(&self.workflow, &cwd),
        };
        let given = config::GivenSettings {
            millicores: self
                .default_cores
                .as_deref()
                .map(|v| cores("--defaultCores", v))
                .transpose()?,
            memory: self
                .default_memory
                .as_deref()
                .map(|v| size("--defaultMemory", v))
                .transpose()?,
            disk: self
                .default_disk
                .as_deref()
                .map(|v| size("--defaultDisk", v))
                .transpose()?,
            retries: self.retry_count,
            infra_retries: self.infra_retry_count,
        };
        let (defaults, infra_retries) = given.resolved();
        let machine_mc = config::machine_millicores();
        let max_mc = match &self.max_cores {
            Some(v) => u64::from(cores("--maxCores", v)?),
            None => machine_mc,
        };
        let max_mem = match &self.max_memory {
            Some(v) => size("--maxMemory", v)?,
            None => config::machine_memory().unwrap_or(u64::MAX),
        };
        let max_disk = match &self.max_disk {
            Some(v) => Some(size("--maxDisk", v)?),
            None => None,
        };
        let kubernetes = self.batch_system == BatchSystem::Kubernetes;
        let reuse_agents = self.reuse_agents();
        let mut k8s = if kubernetes {
            Some(self.kubernetes_config(&locator)?)
        } else {
            None
        };
        // On --restart the file as it is now is compared with the stored
        // one (edited jobs run again); without the file, the stored one runs.
        let workflow = if let Some(wf) = cwl {
            wf
        } else if self.restart && !self.workflow.exists() {
            None
        } else {
            let machine = Machine {
                name: format!(
                    "this machine (--maxCores {}, --maxMemory {})",
                    units::format_cores(max_mc as u32),
                    units::format_size(max_mem)
                ),
                millicores: max_mc,
                memory: max_mem,
                disk: max_disk,
                gpus: 0,
            };
            // On Kubernetes the nodes are the machines; they are listed
            // when the leader connects, before anything runs. Locally the
            // fit is checked with the rest, so every mistake shows at once.
            let wf = workflow::load_checked(&self.workflow, |wf| {
                if kubernetes {
                    Ok(())
                } else {
                    workflow::check_fits(wf, &defaults, &[machine])
                }
            })
            .map_err(|d| bad(d.to_string()))?;
            Some(wf)
        };
        let stem = self
            .workflow
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "workflow".into());
        let output_dir = self
            .output_dir
            .unwrap_or_else(|| cwd.join(format!("{stem}-output")));
        let report = match self.report {
            Some(p) => {
                let p = if p.is_absolute() { p } else { cwd.join(p) };
                crate::report::check_path(&p).map_err(|e| bad(format!("--report: {e:#}")))?;
                Some(p)
            }
            None => None,
        };
        let mut env = Vec::new();
        if self.disable_caching {
            env.push(("TOIL_DISABLE_CACHING".into(), "true".into()));
        }
        if let Some(v) = &self.cache_max_size {
            env.push((
                "TOIL_CACHE_MAX_SIZE".into(),
                size("--cacheMaxSize", v)?.to_string(),
            ));
        }
        for (flag, var, v) in [
            (
                "--cacheLockTimeout",
                "TOIL_CACHE_LOCK_TIMEOUT",
                self.cache_lock_timeout,
            ),
            (
                "--stagingTimeout",
                "TOIL_STAGING_TIMEOUT",
                self.staging_timeout,
            ),
            (
                "--imagePullTimeout",
                "TOIL_IMAGE_PULL_TIMEOUT",
                self.image_pull_timeout,
            ),
        ] {
            let Some(d) = v else { continue };
            if d.is_zero() || d > Duration::from_secs(30 * 86_400) {
                return Err(bad(format!(
                    "{flag} must be more than zero and at most 30 days (e.g. 120s, 2m, 1h)"
                )));
            }
            env.push((var.into(), humantime::format_duration(d).to_string()));
        }
        if let Some(v) = &self.container_engine {
            if !matches!(v.as_str(), "singularity" | "apptainer") {
                return Err(bad(format!(
                    "--containerEngine {v:?}: use singularity or apptainer"
                )));
            }
            env.push(("TOIL_CONTAINER_ENGINE".into(), v.clone()));
        }
        let max_log_bytes_per_attempt =
            size("--maxLogBytesPerAttempt", &self.max_log_bytes_per_attempt)?;
        if max_log_bytes_per_attempt == 0 {
            return Err(bad(
                "--maxLogBytesPerAttempt 0 would keep no log at all: give a size such as 100Mi",
            ));
        }
        if let Some(a) = &self.advertise
            && (!a.starts_with("https://") || a.len() == "https://".len())
        {
            return Err(bad(format!(
                "--leaderAddress / TOIL_LEADER_ADVERTISE {a:?}: the leader serves TLS only, so agents and clients dial https://HOST:PORT (for example https://10.0.0.5:7070)"
            )));
        }
        let web_ui = crate::web::WebBind::parse(&self.web_ui).map_err(bad)?;
        let web_token = self
            .web_token_file
            .as_deref()
            .map(crate::web::read_token_file)
            .transpose()
            .map_err(bad)?;
        if self.agent_lease < Duration::from_secs(1) {
            return Err(bad("--agentLease must be at least 1s"));
        }
        env.push((
            "TOIL_AGENT_LEASE".into(),
            humantime::format_duration(self.agent_lease).to_string(),
        ));
        let agent_log = if self.log_debug { "debug" } else { "warn" };
        let (batch, capacity) = match k8s.take() {
            Some(mut k) => {
                k.env.extend(env);
                k.agent_log = agent_log.into();
                // The nodes' total is applied on connecting; these are the
                // user's own limits, if any.
                let capacity = Capacity {
                    millicores: self.max_cores.as_ref().map_or(u64::MAX, |_| max_mc),
                    memory: self.max_memory.as_ref().map_or(u64::MAX, |_| max_mem),
                    disk: max_disk,
                    gpus: u32::MAX,
                    max_jobs: None,
                };
                (Batch::Kubernetes(Box::new(k)), capacity)
            }
            None => {
                let work_dir = self.work_dir.unwrap_or_else(config::default_work_dir);
                std::fs::create_dir_all(&work_dir).map_err(|e| {
                    bad(format!(
                        "cannot create the work directory {}: {e}; set --workDir or TOIL_WORKDIR",
                        work_dir.display()
                    ))
                })?;
                let (agent_bin, agent_args) = config::find_agent(self.agent_binary).map_err(bad)?;
                let local = Batch::Local(LocalConfig {
                    agent_bin,
                    agent_args,
                    leader_address: String::new(),
                    leader_cert_sha256: String::new(),
                    work_dir,
                    env,
                    agent_log: agent_log.into(),
                });
                let capacity = Capacity {
                    millicores: max_mc,
                    memory: max_mem,
                    disk: max_disk,
                    gpus: 0,
                    max_jobs: None,
                };
                (local, capacity)
            }
        };
        Ok(RunConfig {
            workflow,
            locator,
            restart: self.restart,
            defaults,
            given,
            capacity,
            infra_retries,
            agent_lease: self.agent_lease,
            leader_lease: Duration::from_secs(30),
            journal_interval: Duration::from_millis(10),
            listen: self.listen,
            advertise: self.advertise,
            web_ui,
            web_token,
            state_dir: self
                .state_dir
                .unwrap_or_else(crate::run::private::default_state_dir),
            reuse_agents,
            real_time_logging: self.real_time_logging,
            max_log_bytes_per_attempt,
            output_dir,
            report,
            clean: self.clean,
            batch,
            cwl: is_cwl,
        })
    }

    /// The Kubernetes settings, checked (the agents' environment and log
    /// filter are added by the caller).
    fn kubernetes_config(&self, locator: &Locator) -> anyhow::Result<KubernetesConfig> {
        use crate::batch::kubernetes::settings::{self, AWS_PASSTHROUGH};
        let image = match &self.kubernetes_image {
            Some(i) if !i.trim().is_empty() => i.trim().to_string(),
            _ => {
                return Err(bad(
                    "--batchSystem kubernetes needs the appliance image that holds toil-agent: set TOIL_APPLIANCE_SELF (or --kubernetesImage), for example registry.example.org/toil-appliance:0.1.0 built from deploy/Dockerfile",
                ));
            }
        };
        let job_store_claim = match (locator, &self.kubernetes_job_store_claim) {
            (Locator::File(path), Some(c)) => Some(settings::parse_claim(c, path).map_err(bad)?),
            (Locator::File(path), None) => {
                return Err(bad(format!(
                    "job store {locator} is a directory on this machine, which pods cannot see. On Kubernetes use an aws: job store (with TOIL_AWS_SECRET_NAME), or keep the job store on a ReadWriteMany volume and pass --kubernetesJobStoreClaim CLAIM (mounted at {} in every pod)",
                    path.display()
                )));
            }
            (Locator::Aws { .. }, Some(_)) => {
                return Err(bad(
                    "--kubernetesJobStoreClaim is for file: job stores; an aws: job store needs no volume",
                ));
            }
            (Locator::Aws { .. }, None) => None,
        };
        let spot_label =
            settings::parse_label("--kubernetesSpotLabel", &self.kubernetes_spot_label)
                .map_err(bad)?;
        let spot_toleration = match &self.kubernetes_spot_toleration {
            Some(t) => settings::parse_toleration("--kubernetesSpotToleration", t).map_err(bad)?,
            None => settings::Toleration {
                key: spot_label.0.clone(),
                value: spot_label.1.clone(),
                effect: "NoSchedule".into(),
            },
        };
        let creates = self.kubernetes_max_creates;
        if !(creates.is_finite() && creates > 0.0) {
            return Err(bad(format!(
                "--kubernetesMaxCreatesPerSecond {creates}: give a number above 0, for example 20"
            )));
        }
        for (flag, d) in [
            ("--kubernetesPodTimeout", self.kubernetes_pod_timeout),
            (
                "--kubernetesPendingTimeout",
                self.kubernetes_pending_timeout,
            ),
            ("--kubernetesJobTtl", self.kubernetes_job_ttl),
        ] {
            if d.is_zero() {
                return Err(bad(format!("{flag} must be more than 0 (for example 5m)")));
            }
        }
        let work_dir = self
            .work_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("/var/lib/toil"));
        if !work_dir.is_absolute() {
            return Err(bad(format!(
                "--workDir / TOIL_WORKDIR {} must be an absolute path inside the pods (default /var/lib/toil)",
                work_dir.display()
            )));
        }
        if let Some(p) = &self.kubernetes_host_path
            && !p.starts_with('/')
        {
            return Err(bad(format!(
                "TOIL_KUBERNETES_HOST_PATH {p:?} must be an absolute path on the nodes, such as /data/scratch"
            )));
        }
        if self.leader_pod_ip.is_some()
            && self.advertise.is_none()
            && self.listen.ip().is_loopback()
        {
            return Err(bad(format!(
                "TOIL_LEADER_POD_IP is set, so agents dial the leader's pod IP, but --leaderBind {} only listens on loopback; bind 0.0.0.0:PORT (as deploy/leader-job.yaml does)",
                self.listen
            )));
        }
        let env = AWS_PASSTHROUGH
            .iter()
            .filter_map(|var| std::env::var(var).ok().map(|v| ((*var).to_string(), v)))
            .collect();
        Ok(KubernetesConfig {
            context: self.kubernetes_context.clone(),
            namespace: self.kubernetes_namespace.clone(),
            image,
            owner: self
                .kubernetes_owner
                .clone()
                .filter(|o| !o.trim().is_empty())
                .unwrap_or_else(crate::batch::kubernetes::names::default_owner),
            host_path: self.kubernetes_host_path.clone(),
            work_dir: work_dir.to_string_lossy().into_owned(),
            aws_secret: self.aws_secret_name.clone().filter(|s| !s.is_empty()),
            service_account: self.kubernetes_service_account.clone(),
            pod_timeout: self.kubernetes_pod_timeout,
            pending_timeout: self.kubernetes_pending_timeout,
            privileged: self.kubernetes_privileged,
            apparmor_unconfined: self.kubernetes_apparmor_unconfined,
            gpu_resource: self.kubernetes_gpu_resource.clone(),
            spot_label,
            spot_toleration,
            job_store_claim,
            max_creates_per_second: creates,
            job_ttl: self.kubernetes_job_ttl,
            deadline_slack: self.kubernetes_deadline_slack,
            reuse_agents: self.reuse_agents(),
            env,
            agent_log: String::new(),
            leader_pod_ip: self.leader_pod_ip.clone(),
            agent_connection: self.agent_connection,
        })
    }

    /// Whether finished agents take more jobs: as asked, else on for local
    /// processes (cheap slots, costly starts) and off for pods (each sized
    /// for the job it was created for).
    pub fn reuse_agents(&self) -> bool {
        self.reuse_agents
            .unwrap_or(self.batch_system == BatchSystem::Local)
    }

    /// The log filter for the leader's own messages.
    pub fn log_filter(&self) -> &'static str {
        // kube's client logs every non-2xx answer as an error, retried or
        // not; the Kubernetes batch system reports what matters itself.
        if self.log_debug {
            "debug,h2=info,hyper=info,tower=info"
        } else if self.log_info {
            "info,kube_client=off"
        } else {
            "warn,kube_client=off"
        }
    }
}

/// Runs the embedded agent (`toil-leader agent run`, and the same for
/// `toil-cwl-runner`), on the single-threaded runtime the agent uses.
pub fn run_agent(a: AgentArgs) -> std::process::ExitCode {
    // As `toil-agent run` does: non-dumpable and the token out of the
    // environment before anything runs, so a job cannot read the token.
    if let Err(e) = toil_agent::harden::make_undumpable() {
        eprintln!("toil-leader agent: {e}");
        return std::process::ExitCode::from(70);
    }
    // SAFETY: no runtime yet, so this is the only thread.
    unsafe { toil_agent::harden::forget_token() };
    let AgentCommand::Run(args) = a.command;
    let filter = std::env::var("TOIL_AGENT_LOG").unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .init();
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => std::process::ExitCode::from(rt.block_on(toil_agent::run::main(*args))),
        Err(e) => {
            eprintln!("toil-leader agent: cannot start the async runtime: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reuse(args: &[&str]) -> bool {
        let cli = Cli::try_parse_from(["toil-leader", "run", "wf.yaml"].iter().chain(args))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        match cli.command {
            Command::Run(r) => r.reuse_agents(),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn agents_are_reused_by_default_only_locally() {
        assert!(reuse(&[]));
        assert!(!reuse(&["--reuseAgents=false"]));
        assert!(!reuse(&["--batchSystem", "kubernetes"]));
        assert!(reuse(&["--batchSystem", "kubernetes", "--reuseAgents"]));
        assert!(reuse(&["--batchSystem", "kubernetes", "--reuseAgents=yes"]));
        // A bare flag must not swallow the workflow that follows it.
        let cli = Cli::try_parse_from(["toil-leader", "run", "--reuseAgents", "wf.yaml"])
            .expect("a bare --reuseAgents before the workflow");
        assert!(
            matches!(cli.command, Command::Run(r) if r.workflow == std::path::Path::new("wf.yaml"))
        );
    }
}
