//! The `toil-leader` command line. Flag names follow Toil's, so existing
//! command lines and `TOIL_*` variables carry over.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use toil_jobstore::Locator;

use crate::batch::Capacity;
use crate::batch::local::LocalConfig;
use crate::config::{self, Batch, Clean, RunConfig};
use crate::run::{Failure, exit};
use crate::workflow::{self, Machine, ResolvedDefaults, units};

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

    /// Log the leader's own progress messages.
    #[arg(long = "logInfo")]
    pub log_info: bool,

    /// Log everything, including each agent report.
    #[arg(long = "logDebug")]
    pub log_debug: bool,

    /// How many times to retry a job that fails by itself (non-zero exit,
    /// out of memory, time limit). Platform failures (lost agent, evicted
    /// or preempted pod) have a separate budget (--infraRetryCount).
    #[arg(long = "retryCount", env = "TOIL_RETRY_COUNT", default_value_t = 1)]
    pub retry_count: u32,

    /// How many times to retry a job lost to the platform.
    #[arg(long = "infraRetryCount", default_value_t = 5)]
    pub infra_retry_count: u32,

    /// Most CPU cores used at once (local), e.g. 4 or 0.5. Default: all.
    #[arg(long = "maxCores", env = "TOIL_MAX_CORES")]
    pub max_cores: Option<String>,

    /// Most memory used at once (local), e.g. 8Gi. Default: all.
    #[arg(long = "maxMemory", env = "TOIL_MAX_MEMORY")]
    pub max_memory: Option<String>,

    /// Most disk used at once (local), e.g. 100G. Default: not limited.
    #[arg(long = "maxDisk", env = "TOIL_MAX_DISK")]
    pub max_disk: Option<String>,

    /// Cores for jobs that do not say.
    #[arg(long = "defaultCores", default_value = "1")]
    pub default_cores: String,

    /// Memory for jobs that do not say.
    #[arg(long = "defaultMemory", default_value = "2Gi")]
    pub default_memory: String,

    /// Disk for jobs that do not say.
    #[arg(long = "defaultDisk", default_value = "2Gi")]
    pub default_disk: String,

    /// When to delete the job store at the end.
    #[arg(long, value_enum, default_value = "onSuccess")]
    pub clean: Clean,

    /// Where the workflow's outputs are copied when it succeeds. Default:
    /// ./WORKFLOW-output.
    #[arg(long = "outputDir")]
    pub output_dir: Option<PathBuf>,

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
    /// address (for example http://10.0.0.5:7070).
    #[arg(long = "leaderAddress", env = "TOIL_LEADER_ADVERTISE")]
    pub advertise: Option<String>,

    /// An agent that stops reporting for this long is lost and its job is
    /// retried; an agent that cannot reach the leader this long kills its
    /// job and exits.
    #[arg(long = "agentLease", default_value = "30s", value_parser = humantime::parse_duration)]
    pub agent_lease: Duration,

    /// Let an agent whose job finished take another queued job that fits
    /// its slot instead of exiting.
    #[arg(long = "reuseAgents", env = "TOIL_REUSE_AGENTS")]
    pub reuse_agents: bool,

    /// Turn off the shared input cache: each job downloads its own inputs.
    #[arg(long = "disableCaching")]
    pub disable_caching: bool,

    /// Most disk the shared input cache may use, e.g. 50G. Default: keep a
    /// safety margin of the free space.
    #[arg(long = "cacheMaxSize")]
    pub cache_max_size: Option<String>,

    /// Container engine for jobs with an image: singularity or apptainer.
    /// Default: whichever is on PATH.
    #[arg(long = "containerEngine", env = "TOIL_CONTAINER_ENGINE")]
    pub container_engine: Option<String>,
}

/// `toil-leader status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The job store.
    pub job_store: String,
    /// List every job, not only the failed ones.
    #[arg(long)]
    pub jobs: bool,
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
        let cwd = std::env::current_dir()?;
        let locator = match &self.job_store {
            Some(s) => Locator::parse_in(s, &cwd).map_err(|e| bad(e.to_string()))?,
            None => config::default_job_store(&self.workflow, &cwd),
        };
        let defaults = ResolvedDefaults {
            millicores: cores("--defaultCores", &self.default_cores)?,
            memory: size("--defaultMemory", &self.default_memory)?,
            disk: size("--defaultDisk", &self.default_disk)?,
            retries: self.retry_count,
        };
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
        if self.batch_system == BatchSystem::Kubernetes {
            return Err(bad(
                "--batchSystem kubernetes is not available in this build yet; use --batchSystem local",
            ));
        }
        let workflow = if self.restart {
            None
        } else {
            let wf = workflow::load(&self.workflow).map_err(|d| bad(d.to_string()))?;
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
            workflow::check_fits(&wf, &defaults, &[machine]).map_err(|d| bad(d.to_string()))?;
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
        let work_dir = self.work_dir.unwrap_or_else(config::default_work_dir);
        std::fs::create_dir_all(&work_dir).map_err(|e| {
            bad(format!(
                "cannot create the work directory {}: {e}; set --workDir or TOIL_WORKDIR",
                work_dir.display()
            ))
        })?;
        let agent_bin = config::find_agent(self.agent_binary).map_err(bad)?;
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
        if let Some(v) = &self.container_engine {
            if !matches!(v.as_str(), "singularity" | "apptainer") {
                return Err(bad(format!(
                    "--containerEngine {v:?}: use singularity or apptainer"
                )));
            }
            env.push(("TOIL_CONTAINER_ENGINE".into(), v.clone()));
        }
        if self.agent_lease < Duration::from_secs(1) {
            return Err(bad("--agentLease must be at least 1s"));
        }
        env.push((
            "TOIL_AGENT_LEASE".into(),
            humantime::format_duration(self.agent_lease).to_string(),
        ));
        let agent_log = if self.log_debug { "debug" } else { "warn" };
        Ok(RunConfig {
            workflow,
            locator,
            restart: self.restart,
            defaults,
            capacity: Capacity {
                millicores: max_mc,
                memory: max_mem,
                disk: max_disk,
                gpus: 0,
                max_jobs: None,
            },
            infra_retries: self.infra_retry_count,
            agent_lease: self.agent_lease,
            leader_lease: Duration::from_secs(30),
            journal_interval: Duration::from_millis(10),
            listen: self.listen,
            advertise: self.advertise,
            reuse_agents: self.reuse_agents,
            real_time_logging: self.real_time_logging,
            output_dir,
            clean: self.clean,
            batch: Batch::Local(LocalConfig {
                agent_bin,
                leader_address: String::new(),
                work_dir,
                env,
                agent_log: agent_log.into(),
            }),
        })
    }

    /// The log filter for the leader's own messages.
    pub fn log_filter(&self) -> &'static str {
        if self.log_debug {
            "debug,h2=info,hyper=info,tower=info"
        } else if self.log_info {
            "info"
        } else {
            "warn"
        }
    }
}
