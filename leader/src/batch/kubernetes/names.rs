//! Names and labels of the objects the leader creates.
//!
//! Every Job (and, through its template, every pod) carries the owner, the
//! workflow id, the epoch of the leader that made it and the agent it runs,
//! so the one pod watch, shutdown, `--restart` and `cleanup-jobs` all find
//! their objects by label selector and never by listing and filtering.
//! Job names stay within 63 characters (the Job controller copies the name
//! into the `job-name` label of its pods, and label values stop at 63).

use std::collections::BTreeMap;

/// `app.kubernetes.io/managed-by`: set to [`MANAGER`] on everything we make.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The value of [`MANAGED_BY`].
pub const MANAGER: &str = "toil-leader";
/// Who ran the workflow (`TOIL_KUBERNETES_OWNER`, default the user name).
pub const OWNER: &str = "toil.io/owner";
/// The workflow's id (a UUID, stored in the job store's `meta.json`).
pub const WORKFLOW: &str = "toil.io/workflow";
/// The epoch of the leader that created the object.
pub const EPOCH: &str = "toil.io/epoch";
/// The agent the pod runs (`agent-EPOCH-N`), which maps a pod back to it.
pub const AGENT: &str = "toil.io/agent";
/// The first job the agent runs, made label-safe (for `kubectl get -l`).
pub const JOB: &str = "toil.io/job";
/// Annotation with the exact job id (ids like `count[3]` are not labels).
pub const JOB_ID_ANNOTATION: &str = "toil.io/job-id";

/// Longest Job name: the pods' `job-name` label repeats it.
pub const MAX_NAME: usize = 63;
/// Longest owner part in a Job name.
const OWNER_IN_NAME: usize = 16;

/// A label value: at most 63 of `[A-Za-z0-9._-]`, starting and ending with
/// a letter or digit; other characters become `-`. Empty input gives `x`.
pub fn label_value(s: &str) -> String {
    let mapped: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let trimmed = trim_to(&mapped, 63, |c| c.is_ascii_alphanumeric());
    if trimmed.is_empty() {
        "x".into()
    } else {
        trimmed
    }
}

/// A DNS-1123 label fragment: lowercase `[a-z0-9-]`, runs of other
/// characters folded into one `-`, no `-` at either end, at most `max`.
pub fn dns_fragment(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    trim_to(&out, max, |c| c.is_ascii_alphanumeric())
}

/// Cuts `s` to `max` characters, then drops characters at both ends until
/// `ok` holds for the first and last.
fn trim_to(s: &str, max: usize, ok: impl Fn(char) -> bool) -> String {
    let cut: String = s.chars().take(max).collect();
    let start = cut.find(&ok).unwrap_or(cut.len());
    let end = cut.rfind(&ok).map_or(start, |i| i + 1);
    cut[start..end.max(start)].to_string()
}

/// The owner used when `TOIL_KUBERNETES_OWNER` is not set: the user name
/// (`USER`, `LOGNAME`, else the account of this process's uid).
pub fn default_owner() -> String {
    for var in ["USER", "LOGNAME"] {
        if let Ok(v) = std::env::var(var)
            && !v.trim().is_empty()
        {
            return v;
        }
    }
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| format!("uid{}", nix::unistd::getuid()))
}

/// A label selector for an owner's Jobs, optionally one workflow's.
pub fn owner_selector(owner: &str, workflow: Option<&str>) -> String {
    let mut s = format!("{MANAGED_BY}={MANAGER},{OWNER}={}", label_value(owner));
    if let Some(w) = workflow {
        s.push_str(&format!(",{WORKFLOW}={}", label_value(w)));
    }
    s
}

/// Names and labels for one leader of one workflow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Naming {
    /// The owner, already label-safe.
    pub owner: String,
    /// The workflow id.
    pub workflow_id: String,
    /// This leader's epoch.
    pub epoch: u64,
}

impl Naming {
    /// Naming for `owner` (any text; made label-safe here).
    pub fn new(owner: &str, workflow_id: &str, epoch: u64) -> Self {
        Naming {
            owner: label_value(owner),
            workflow_id: label_value(workflow_id),
            epoch,
        }
    }

    /// The Job name of an agent: `toil-OWNER-WF8-AGENT-JOB`, cut to 63
    /// characters by shortening the job part (the parts before it are what
    /// makes the name unique).
    pub fn job_name(&self, agent_id: &str, job_id: &str) -> String {
        let owner = dns_fragment(&self.owner, OWNER_IN_NAME);
        let wf = dns_fragment(&self.workflow_id, 8);
        let agent = dns_fragment(agent_id.strip_prefix("agent-").unwrap_or(agent_id), 24);
        let mut name = String::from("toil");
        for part in [owner.as_str(), wf.as_str(), agent.as_str()] {
            if !part.is_empty() {
                name.push('-');
                name.push_str(part);
            }
        }
        let room = MAX_NAME.saturating_sub(name.len() + 1);
        let job = dns_fragment(job_id, room);
        if !job.is_empty() {
            name.push('-');
            name.push_str(&job);
        }
        // The unique prefix alone always fits: owner 16 + wf 8 + agent 24.
        trim_to(&name, MAX_NAME, |c| c.is_ascii_alphanumeric())
    }

    /// The relay Job's name (also its Secret's and Service's):
    /// `toil-OWNER-WF8-relay-EPOCH`, so `kubectl get jobs | grep OWNER`
    /// finds it with the agents' Jobs.
    pub fn relay_name(&self) -> String {
        let owner = dns_fragment(&self.owner, OWNER_IN_NAME);
        let wf = dns_fragment(&self.workflow_id, 8);
        let mut name = String::from("toil");
        for part in [owner.as_str(), wf.as_str()] {
            if !part.is_empty() {
                name.push('-');
                name.push_str(part);
            }
        }
        name.push_str(&format!("-relay-{}", self.epoch));
        trim_to(&name, MAX_NAME, |c| c.is_ascii_alphanumeric())
    }

    /// The labels of an agent's Job and pod.
    pub fn labels(&self, agent_id: &str, job_id: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            (MANAGED_BY.to_string(), MANAGER.to_string()),
            (OWNER.to_string(), self.owner.clone()),
            (WORKFLOW.to_string(), self.workflow_id.clone()),
            (EPOCH.to_string(), self.epoch.to_string()),
            (AGENT.to_string(), label_value(agent_id)),
            (JOB.to_string(), label_value(job_id)),
        ])
    }

    /// Everything this workflow made, any epoch (whoever the owner was: a
    /// restart may run under another name).
    pub fn workflow_selector(&self) -> String {
        format!("{MANAGED_BY}={MANAGER},{WORKFLOW}={}", self.workflow_id)
    }

    /// What this leader made: the selector of the one pod watch.
    pub fn epoch_selector(&self) -> String {
        format!("{},{EPOCH}={}", self.workflow_selector(), self.epoch)
    }

    /// What earlier (or other) leaders of this workflow made.
    pub fn other_epochs_selector(&self) -> String {
        format!("{},{EPOCH}!={}", self.workflow_selector(), self.epoch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_dns_label(s: &str) -> bool {
        !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-')
    }

    #[test]
    fn names_are_dns_labels_within_63_characters() {
        let n = Naming::new(
            "Jane.Doe@EXAMPLE.org",
            "3f0c2a9e-8b1d-4c55-9e0f-1a2b3c4d5e6f",
            12,
        );
        for (agent, job) in [
            ("agent-12-1", "hello"),
            ("agent-12-345678", "count[4]"),
            ("agent-12-9", &"a_very_long_job_name_".repeat(10)),
            ("agent-12-10", "---"),
            ("agent-12-11", "UPPER.case/with spaces"),
        ] {
            let name = n.job_name(agent, job);
            assert!(is_dns_label(&name), "{name:?}");
            assert!(
                name.starts_with("toil-jane-doe-example-3f0c2a9e-12-"),
                "{name}"
            );
        }
        assert_eq!(
            n.job_name("agent-12-1", "count[4]"),
            "toil-jane-doe-example-3f0c2a9e-12-1-count-4"
        );
        // Distinct agents give distinct names even when the job part is cut.
        let long = "x".repeat(100);
        assert_ne!(
            n.job_name("agent-12-1", &long),
            n.job_name("agent-12-2", &long)
        );
    }

    #[test]
    fn label_values_are_valid() {
        assert_eq!(label_value("count[4]"), "count-4");
        assert_eq!(label_value("_x_"), "x");
        assert_eq!(label_value("***"), "x");
        assert_eq!(label_value(&"a".repeat(80)).len(), 63);
        assert_eq!(label_value("a.b_c-D"), "a.b_c-D");
        let n = Naming::new("bob", "wf-1", 3);
        let labels = n.labels("agent-3-7", "align[0]");
        assert_eq!(labels[AGENT], "agent-3-7");
        assert_eq!(labels[JOB], "align-0");
        assert_eq!(labels[EPOCH], "3");
        assert_eq!(
            n.epoch_selector(),
            "app.kubernetes.io/managed-by=toil-leader,toil.io/workflow=wf-1,toil.io/epoch=3"
        );
        assert!(n.other_epochs_selector().ends_with("toil.io/epoch!=3"));
        assert_eq!(
            owner_selector("Bob Smith", Some("wf-1")),
            "app.kubernetes.io/managed-by=toil-leader,toil.io/owner=Bob-Smith,toil.io/workflow=wf-1"
        );
        assert!(!default_owner().is_empty());
    }
}
