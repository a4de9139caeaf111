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
    /// Job defaults from the flags.
    pub defaults: ResolvedDefaults,
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
    /// Hand finished agents new jobs.
    pub reuse_agents: bool,
    /// Show job output live.
    pub real_time_logging: bool,
    /// Where workflow outputs are exported.
    pub output_dir: PathBuf,
    /// Job-store clean-up policy.
    pub clean: Clean,
    /// The batch system.
    pub batch: Batch,
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

/// The agent binary: the flag, else next to this executable, else on PATH.
pub fn find_agent(flag: Option<PathBuf>) -> Result<PathBuf, String> {
    if let Some(p) = flag {
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!(
                "--agentBinary {} does not exist; point it at the toil-agent executable",
                p.display()
            ))
        };
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        let p = dir.join("toil-agent");
        if p.is_file() {
            return Ok(p);
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("toil-agent");
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    Err("cannot find the toil-agent executable next to toil-leader or on PATH; set --agentBinary or TOIL_AGENT_BINARY".into())
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
    }
}
