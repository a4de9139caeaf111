//! The agent's settings: from flags, with environment fallbacks, because the
//! leader (local processes) and the pod template (Kubernetes) configure the
//! agent through its environment.

use std::path::PathBuf;
use std::time::Duration;

/// Arguments of `toil-agent run`.
#[derive(Clone, Debug, clap::Args)]
pub struct RunArgs {
    /// The leader's address: `https://HOST:PORT`, or `unix:PATH` of its
    /// socket on the leader's machine.
    #[arg(long, env = "TOIL_LEADER_ADDRESS")]
    pub leader: String,
    /// The SHA-256 fingerprint of the leader's certificate, which the agent
    /// pins (needed for https://; not a secret).
    #[arg(long = "leaderCertSha256", env = "TOIL_LEADER_CERT_SHA256")]
    pub leader_cert_sha256: Option<String>,
    /// This agent's identity, issued by the leader.
    #[arg(long, env = "TOIL_AGENT_ID")]
    pub agent_id: String,
    /// This agent's secret, issued by the leader.
    #[arg(long, env = "TOIL_AGENT_TOKEN", hide_env_values = true)]
    pub agent_token: String,
    /// Work directory: job directories and the node cache live under it. On
    /// Kubernetes this is where TOIL_KUBERNETES_HOST_PATH is mounted, so
    /// every pod on a node shares the cache.
    #[arg(long, env = "TOIL_WORKDIR", default_value = "/var/lib/toil")]
    pub work_dir: PathBuf,
    /// CPU this slot offers, in millicores (for pod reuse).
    #[arg(long, env = "TOIL_AGENT_MILLICORES", default_value_t = 1000)]
    pub millicores: u32,
    /// Memory this slot offers, in bytes.
    #[arg(long, env = "TOIL_AGENT_MEMORY", default_value_t = 2 << 30)]
    pub memory: u64,
    /// Disk this slot offers, in bytes.
    #[arg(long, env = "TOIL_AGENT_DISK", default_value_t = 2 << 30)]
    pub disk: u64,
    /// GPUs this slot offers.
    #[arg(long, env = "TOIL_AGENT_GPUS", default_value_t = 0)]
    pub gpus: u32,
    /// The slot is on preemptible capacity.
    #[arg(long, env = "TOIL_AGENT_PREEMPTIBLE", default_value_t = false)]
    pub preemptible: bool,
    /// Turn the shared node cache off: each job downloads its own inputs.
    #[arg(
        long = "disableCaching",
        env = "TOIL_DISABLE_CACHING",
        default_value_t = false
    )]
    pub disable_caching: bool,
    /// Most bytes the node cache may hold (default: leave a margin of the
    /// filesystem's free space).
    #[arg(long = "cacheMaxSize", env = "TOIL_CACHE_MAX_SIZE")]
    pub cache_max_size: Option<u64>,
    /// Longest wait for any one node cache lock, e.g. `120s`. The cache's
    /// lock files can be opened (and held) by a job running as the agent's
    /// user; past this wait staging fails with a cause naming the lock and
    /// the process holding it. A download lock is waited for as long as the
    /// download it guards keeps growing.
    #[arg(
        long = "cacheLockTimeout",
        env = "TOIL_CACHE_LOCK_TIMEOUT",
        default_value = "120s",
        value_parser = parse_timeout
    )]
    pub cache_lock_timeout: Duration,
    /// Longest time to stage one job's inputs, downloads included, e.g.
    /// `1h`; past it the attempt fails (STAGING_FAILED) and is retried.
    #[arg(
        long = "stagingTimeout",
        env = "TOIL_STAGING_TIMEOUT",
        default_value = "1h",
        value_parser = parse_timeout
    )]
    pub staging_timeout: Duration,
    /// Longest time one image pull may take, e.g. `2h`; past it the engine
    /// and every process it started are killed and the attempt fails
    /// (IMAGE_PULL). Another job waiting for the same image then pulls it.
    #[arg(
        long = "imagePullTimeout",
        env = "TOIL_IMAGE_PULL_TIMEOUT",
        default_value = "1h",
        value_parser = parse_timeout
    )]
    pub image_pull_timeout: Duration,
    /// `singularity` or `apptainer` (default: whichever is on PATH).
    #[arg(long = "containerEngine", env = "TOIL_CONTAINER_ENGINE")]
    pub container_engine: Option<String>,
    /// Also write job output, prefixed with the job id, to this process's
    /// stdout (so `kubectl logs POD` shows what ran there).
    #[arg(long, env = "TOIL_AGENT_ECHO", default_value_t = true, action = clap::ArgAction::Set)]
    pub echo: bool,
    /// Keep attempt work directories after the attempt (for debugging).
    #[arg(long, env = "TOIL_KEEP_WORKDIR", default_value_t = false)]
    pub keep_work_dir: bool,
    /// Give up on an unreachable leader after this long (default: the
    /// lease the leader announces).
    #[arg(long, env = "TOIL_AGENT_LEASE", value_parser = humantime::parse_duration)]
    pub lease: Option<Duration>,
    /// Kubernetes pod name (downward API), for the leader's records.
    #[arg(long, env = "TOIL_POD_NAME", default_value = "")]
    pub pod_name: String,
    /// Kubernetes node name (downward API).
    #[arg(long, env = "TOIL_NODE_NAME", default_value = "")]
    pub node_name: String,
}

/// A duration for a timeout: `humantime` (`120s`, `2m`, `1h 30m`), more
/// than zero and at most 30 days.
pub fn parse_timeout(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration ({e}): write it like 120s, 2m or 1h"))?;
    if d.is_zero() {
        return Err(format!("{s:?}: a timeout must be more than zero"));
    }
    if d > Duration::from_secs(30 * 86_400) {
        return Err(format!("{s:?}: a timeout may be at most 30 days"));
    }
    Ok(d)
}

impl RunArgs {
    /// Checks values that clap cannot, before anything connects.
    pub fn validate(&self) -> Result<(), String> {
        crate::transport::Target::parse(&self.leader, self.leader_cert_sha256.as_deref())?;
        if self.agent_id.is_empty() || self.agent_token.is_empty() {
            return Err(
                "TOIL_AGENT_ID and TOIL_AGENT_TOKEN must be set (the leader sets them when it starts an agent)"
                    .into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_parse_with_clear_errors() {
        assert_eq!(parse_timeout("120s"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_timeout("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_timeout("250ms"), Ok(Duration::from_millis(250)));
        let zero = parse_timeout("0s").err().unwrap_or_default();
        assert!(zero.contains("more than zero"), "{zero}");
        let huge = parse_timeout("1000days").err().unwrap_or_default();
        assert!(huge.contains("at most 30 days"), "{huge}");
        let junk = parse_timeout("soon").err().unwrap_or_default();
        assert!(junk.contains("write it like 120s"), "{junk}");
    }
}
