//! The validated settings of a `toil-leader run`, built from the command
//! line before anything is opened or bound.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toil_jobstore::Locator;

use crate::batch::Capacity;
use crate::batch::local::LocalConfig;
use crate::workflow::{ResolvedDefaults, Workflow};

/// What to do with the job store at the end (Toil's `--clean`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Clean {
    /// Always delete it.
    #[value(name = "always")]
    Always,
    /// Never delete it.
    #[value(name = "never")]
    Never,
    /// Delete it when the workflow succeeded (the default).
    #[value(name = "onSuccess")]
    OnSuccess,
    /// Delete it when the workflow failed.
    #[value(name = "onError")]
    OnError,
}

/// Where agents run.
#[derive(Clone, Debug)]
pub enum Batch {
    /// Local processes.
    Local(LocalConfig),
    /// Kubernetes Jobs.
    Kubernetes(Box<crate::batch::kubernetes::KubernetesConfig>),
}

/// Everything `run` needs.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// The parsed workflow (`None` on restart: the stored one is used).
    pub workflow: Option<Workflow>,
    /// The job store.
    pub locator: Locator,
    /// Resume from the job store.
    pub restart: bool,
    /// Job defaults from the flags (built-in values where a flag is absent).
    pub defaults: ResolvedDefaults,
    /// The run settings the command line set explicitly; on a restart these
    /// replace the stored ones and the rest are kept.
    pub given: GivenSettings,
    /// What the batch system offers.
    pub capacity: Capacity,
    /// Retries for infrastructure causes.
    pub infra_retries: u32,
    /// An agent silent this long is lost.
    pub agent_lease: Duration,
    /// The leader's lease on the job store.
    pub leader_lease: Duration,
    /// Group-commit interval of the journal.
    pub journal_interval: Duration,
    /// Where to listen for gRPC.
    pub listen: SocketAddr,
    /// The address agents and jobs use, when not the listen address.
    pub advertise: Option<String>,
    /// Where the web view listens (`--webUI`; `None`: off).
    pub web_ui: Option<crate::web::WebBind>,
    /// The web token from `--webTokenFile`; `None`: a new one per start.
    pub web_token: Option<String>,
    /// Where the client token and the Unix socket go (`--stateDir`).
    pub state_dir: PathBuf,
    /// Hand finished agents new jobs.
    pub reuse_agents: bool,
    /// Show job output live.
    pub real_time_logging: bool,
    /// Most bytes of one attempt's log kept (`--maxLogBytesPerAttempt`).
    pub max_log_bytes_per_attempt: u64,
    /// Where workflow outputs are exported.
    pub output_dir: PathBuf,
    /// Where to write the HTML report when the run ends (`--report`).
    pub report: Option<PathBuf>,
    /// Job-store clean-up policy.
    pub clean: Clean,
    /// The batch system.
    pub batch: Batch,
    /// The workflow is a CWL document run by `toil-cwl-runner` (its jobs
    /// are added as it runs; `workflow` holds none).
    pub cwl: bool,
}

/// Run settings given explicitly on the command line (or through their
/// environment variables). `None` means "not given": a fresh run uses the
/// built-in default, a restart keeps what the workflow ran with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GivenSettings {
    /// `--defaultCores`, in millicores.
    pub millicores: Option<u32>,
    /// `--defaultMemory`, in bytes.
    pub memory: Option<u64>,
    /// `--defaultDisk`, in bytes.
    pub disk: Option<u64>,
    /// `--retryCount`.
    pub retries: Option<u32>,
    /// `--infraRetryCount`.
    pub infra_retries: Option<u32>,
}

/// Built-in `--defaultCores` (one core).
pub const DEFAULT_MILLICORES: u32 = 1000;
/// Built-in `--defaultMemory` and `--defaultDisk` (2 GiB).
pub const DEFAULT_SIZE: u64 = 2 << 30;
/// Built-in `--retryCount`.
pub const DEFAULT_RETRIES: u32 = 1;
/// Built-in `--infraRetryCount`.
pub const DEFAULT_INFRA_RETRIES: u32 = 5;

impl GivenSettings {
    /// `base` with every given setting put in its place.
    pub fn over(&self, base: (ResolvedDefaults, u32)) -> (ResolvedDefaults, u32) {
        let (d, infra) = base;
        let d = ResolvedDefaults {
            millicores: self.millicores.unwrap_or(d.millicores),
            memory: self.memory.unwrap_or(d.memory),
            disk: self.disk.unwrap_or(d.disk),
            retries: self.retries.unwrap_or(d.retries),
        };
        (d, self.infra_retries.unwrap_or(infra))
    }

    /// The built-in settings with the given ones in their place.
    pub fn resolved(&self) -> (ResolvedDefaults, u32) {
        let builtin = ResolvedDefaults {
            millicores: DEFAULT_MILLICORES,
            memory: DEFAULT_SIZE,
            disk: DEFAULT_SIZE,
            retries: DEFAULT_RETRIES,
        };
        self.over((builtin, DEFAULT_INFRA_RETRIES))
    }
}

/// What differs between two sets of run settings, as flags:
/// `["--retryCount 1 -> 3"]`.
pub fn describe_changes(old: (ResolvedDefaults, u32), new: (ResolvedDefaults, u32)) -> Vec<String> {
    use crate::workflow::units::{format_cores, format_size};
    let (a, b) = (old.0, new.0);
    let flags = [
        (
            "--defaultCores",
            a.millicores != b.millicores,
            format_cores(a.millicores),
            format_cores(b.millicores),
        ),
        (
            "--defaultMemory",
            a.memory != b.memory,
            format_size(a.memory),
            format_size(b.memory),
        ),
        (
            "--defaultDisk",
            a.disk != b.disk,
            format_size(a.disk),
            format_size(b.disk),
        ),
        (
            "--retryCount",
            a.retries != b.retries,
            a.retries.to_string(),
            b.retries.to_string(),
        ),
        (
            "--infraRetryCount",
            old.1 != new.1,
            old.1.to_string(),
            new.1.to_string(),
        ),
    ];
    flags
        .into_iter()
        .filter(|(_, changed, _, _)| *changed)
        .map(|(flag, _, from, to)| format!("{flag} {from} -> {to}"))
        .collect()
}

/// The job store used when `--jobStore` is not given: `STEM.jobstore` in
/// the current directory, from the workflow file's name.
pub fn default_job_store(workflow: &Path, cwd: &Path) -> Locator {
    let stem = workflow
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "workflow".into());
    Locator::File(cwd.join(format!("{stem}.jobstore")))
}

/// This machine's memory, from /proc/meminfo.
pub fn machine_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// This machine's CPUs, in millicores.
pub fn machine_millicores() -> u64 {
    std::thread::available_parallelism().map_or(1, |n| n.get()) as u64 * 1000
}

/// How to start an agent: the program and the arguments before its own
/// (`run`). The flag, else `toil-agent` next to this executable when it was
/// built together with it, else this executable's embedded agent
/// (`toil-leader agent run`).
///
/// A separate agent starts a little faster (a smaller program to load, which
/// matters at hundreds of jobs per second), but one left over from an older
/// build would speak an older protocol: after `cargo run --bin toil-leader`
/// rebuilt only the leader, the embedded agent is the right one.
pub fn find_agent(flag: Option<PathBuf>) -> Result<(PathBuf, Vec<String>), String> {
    let run = || vec!["run".to_string()];
    if let Some(p) = flag {
        return if p.is_file() {
            Ok((p, run()))
        } else {
            Err(format!(
                "--agentBinary {} does not exist; point it at the toil-agent executable",
                p.display()
            ))
        };
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if let Some(dir) = exe.parent() {
        let p = dir.join("toil-agent");
        let same_build = match (modified(&p), modified(&exe)) {
            (Some(agent), Some(leader)) => agent + std::time::Duration::from_secs(120) >= leader,
            _ => false,
        };
        if p.is_file() && same_build {
            return Ok((p, run()));
        }
    }
    Ok((exe, vec!["agent".to_string(), "run".to_string()]))
}

/// The default work directory: `$TMPDIR/toil-UID`.
pub fn default_work_dir() -> PathBuf {
    std::env::temp_dir().join(format!("toil-{}", nix::unistd::getuid()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_derived_from_the_machine_and_file() {
        assert_eq!(
            default_job_store(Path::new("examples/hello.yaml"), Path::new("/w")),
            Locator::File("/w/hello.jobstore".into())
        );
        assert!(machine_memory().unwrap_or(0) > 0);
        assert!(machine_millicores() >= 1000);
        assert!(find_agent(Some("/nonexistent/toil-agent".into())).is_err());
        // Without a flag there is always a way: at worst the embedded agent.
        let (_, args) = find_agent(None).expect("an agent");
        assert_eq!(args.last().map(String::as_str), Some("run"));
    }
}
