//! The Kubernetes batch system's settings, checked from the command line
//! before anything connects (every bad value gets a message naming the flag
//! and the fix).

use std::path::Path;
use std::time::Duration;

/// A ReadWriteMany claim mounted in every agent pod so a `file:` job store
/// is the same directory for the leader and the agents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimMount {
    /// The PersistentVolumeClaim's name.
    pub claim: String,
    /// Where it is mounted in agent pods: the job store's directory or one
    /// of its parents (the claim holds the store at the same relative path).
    pub mount_path: String,
}

/// A taint that preemptible jobs tolerate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Toleration {
    /// Taint key.
    pub key: String,
    /// Taint value (empty: tolerate any value).
    pub value: String,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    pub effect: String,
}

/// Everything the batch system needs besides the workflow's identity.
#[derive(Clone, Debug)]
pub struct KubernetesConfig {
    /// The kubeconfig context; `None` uses the current one (or in-cluster).
    pub context: Option<String>,
    /// The namespace; `None` uses the context's (or the pod's own).
    pub namespace: Option<String>,
    /// The appliance image agents run in (`TOIL_APPLIANCE_SELF`).
    pub image: String,
    /// Who runs the workflow, for labels and names (`TOIL_KUBERNETES_OWNER`).
    pub owner: String,
    /// A node directory shared by the pods of one node for the cache
    /// (`TOIL_KUBERNETES_HOST_PATH`); `None` gives each pod an emptyDir.
    pub host_path: Option<String>,
    /// Where the work volume is mounted in pods (`TOIL_WORKDIR`).
    pub work_dir: String,
    /// A secret with AWS credentials, mounted at `podspec::AWS_MOUNT`.
    pub aws_secret: Option<String>,
    /// The service account agent pods run as (`None`: the namespace's
    /// default); agents never call the API, so no token is mounted.
    pub service_account: Option<String>,
    /// A scheduled pod whose container has not started after this long
    /// fails with POD_START_TIMEOUT.
    pub pod_timeout: Duration,
    /// A pod the scheduler cannot place for this long (while none of the
    /// workflow's other pods get placed either) fails with UNSCHEDULABLE.
    pub pending_timeout: Duration,
    /// Run agent containers privileged (some Singularity set-ups need it).
    pub privileged: bool,
    /// Run agent containers with the AppArmor profile `unconfined`.
    pub apparmor_unconfined: bool,
    /// The extended resource that counts GPUs.
    pub gpu_resource: String,
    /// The node label of spot/preemptible capacity (`key`, `value`).
    pub spot_label: (String, String),
    /// The taint of spot capacity, tolerated by preemptible jobs.
    pub spot_toleration: Toleration,
    /// The job store's volume, for a `file:` job store.
    pub job_store_claim: Option<ClaimMount>,
    /// Most Job creations per second (a token bucket with one second of burst).
    pub max_creates_per_second: f64,
    /// `ttlSecondsAfterFinished` of every Job.
    pub job_ttl: Duration,
    /// Added to a job's time limit for the Job's `activeDeadlineSeconds`
    /// (start-up, staging and upload happen inside the deadline too).
    pub deadline_slack: Duration,
    /// Agents take more jobs (pod reuse): no `activeDeadlineSeconds` then,
    /// since one pod runs several jobs and the agent enforces each limit.
    pub reuse_agents: bool,
    /// Extra environment for agents (cache, lease, AWS endpoint settings).
    pub env: Vec<(String, String)>,
    /// Log filter for the agents' own messages.
    pub agent_log: String,
    /// The leader pod's IP (downward API): agents dial it when no
    /// `--leaderAddress` is given.
    pub leader_pod_ip: Option<String>,
    /// How agents reach a leader outside the cluster (`--agentConnection`).
    pub agent_connection: AgentConnection,
}

/// How agents reach the leader (`--agentConnection`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum AgentConnection {
    /// Detect: a relay pod probes the direct address; the tunnel is used
    /// only when pods cannot reach it. A leader in a pod uses its pod IP.
    #[default]
    Auto,
    /// Agents dial the leader's address (`--leaderAddress`, the pod IP or
    /// the bound address) without a probe.
    Direct,
    /// Agents always go through the relay pod and the API-server tunnel.
    Tunnel,
}

/// Parses `--kubernetesJobStoreClaim CLAIM[:PATH]` for a job store at
/// `store` (PATH defaults to the store's directory).
pub fn parse_claim(value: &str, store: &Path) -> Result<ClaimMount, String> {
    let (claim, path) = match value.split_once(':') {
        Some((c, p)) => (c, Path::new(p).to_path_buf()),
        None => (value, store.to_path_buf()),
    };
    if claim.is_empty() || !is_dns_subdomain(claim) {
        return Err(format!(
            "--kubernetesJobStoreClaim {value:?}: {claim:?} is not a valid claim name (lowercase letters, digits, '-' and '.')"
        ));
    }
    if !path.is_absolute() {
        return Err(format!(
            "--kubernetesJobStoreClaim {value:?}: the mount path {} must be absolute",
            path.display()
        ));
    }
    if !store.starts_with(&path) {
        return Err(format!(
            "--kubernetesJobStoreClaim {value:?}: the job store {} is not under the mount path {}; mount the claim at the job store's directory or one of its parents",
            store.display(),
            path.display()
        ));
    }
    Ok(ClaimMount {
        claim: claim.to_string(),
        mount_path: path.to_string_lossy().into_owned(),
    })
}

/// Parses `KEY=VALUE` for `--kubernetesSpotLabel`.
pub fn parse_label(flag: &str, value: &str) -> Result<(String, String), String> {
    match value.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!(
            "{flag} {value:?}: write KEY=VALUE, for example cloud.google.com/gke-spot=true"
        )),
    }
}

/// Parses `KEY[=VALUE]:EFFECT` for `--kubernetesSpotToleration`.
pub fn parse_toleration(flag: &str, value: &str) -> Result<Toleration, String> {
    let bad = || {
        format!(
            "{flag} {value:?}: write KEY=VALUE:EFFECT with EFFECT NoSchedule, PreferNoSchedule or NoExecute"
        )
    };
    let (kv, effect) = value.rsplit_once(':').ok_or_else(bad)?;
    if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
        return Err(bad());
    }
    let (key, v) = kv.split_once('=').unwrap_or((kv, ""));
    if key.is_empty() {
        return Err(bad());
    }
    Ok(Toleration {
        key: key.into(),
        value: v.into(),
        effect: effect.into(),
    })
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// AWS settings agents need to reach an `aws:` job store the way the
/// leader does (credentials come from the secret, never from here).
pub const AWS_PASSTHROUGH: &[&str] = &[
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_PROFILE",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_mount_at_the_store_or_a_parent() {
        let store = Path::new("/data/runs/wf.jobstore");
        assert_eq!(
            parse_claim("shared", store),
            Ok(ClaimMount {
                claim: "shared".into(),
                mount_path: "/data/runs/wf.jobstore".into()
            })
        );
        assert_eq!(
            parse_claim("shared:/data", store).map(|c| c.mount_path),
            Ok("/data".into())
        );
        assert!(parse_claim("shared:/elsewhere", store).is_err());
        assert!(parse_claim("shared:relative", store).is_err());
        assert!(parse_claim("Bad_Name", store).is_err());
        assert!(parse_claim(":/data", store).is_err());
    }

    #[test]
    fn spot_flags_parse() {
        assert_eq!(
            parse_label("--f", "cloud.google.com/gke-spot=true"),
            Ok(("cloud.google.com/gke-spot".into(), "true".into()))
        );
        assert!(parse_label("--f", "novalue").is_err());
        assert_eq!(
            parse_toleration("--f", "spot=yes:NoSchedule"),
            Ok(Toleration {
                key: "spot".into(),
                value: "yes".into(),
                effect: "NoSchedule".into()
            })
        );
        assert_eq!(
            parse_toleration("--f", "spot:NoExecute").map(|t| t.value),
            Ok(String::new())
        );
        assert!(parse_toleration("--f", "spot=yes:Sometimes").is_err());
        assert!(parse_toleration("--f", "spot=yes").is_err());
    }
}
