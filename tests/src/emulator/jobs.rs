//! The Job controller (batch/v1): pods from the template, status counts,
//! backoffLimit, activeDeadlineSeconds, ttlSecondsAfterFinished, and the
//! conditions a real controller sets (`SuccessCriteriaMet`/`Complete`,
//! `FailureTarget`/`Failed` with `BackoffLimitExceeded` or
//! `DeadlineExceeded`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use serde_json::{Value, json};

use crate::emulator::cluster::{Cluster, parse_time, random_suffix, typed};
use crate::emulator::crud::DeleteOpts;
use crate::emulator::defaults::CONTROLLER_UID_LABEL;
use crate::emulator::kubelet::status::now;
use crate::emulator::resources;
use crate::emulator::store::key_of;

/// What the controller remembers about a Job between passes (the real one
/// keeps this in `uncountedTerminatedPods` and pod finalizers).
#[derive(Debug, Default)]
struct Memory {
    /// Pods already counted as succeeded.
    succeeded: HashSet<String>,
    /// Pods already counted as failed.
    failed: HashSet<String>,
    /// Pods seen active, to notice ones that vanish before finishing.
    active: HashSet<String>,
    /// When the last failure was counted (pod re-creation backoff).
    last_failure: Option<Instant>,
}

fn has_condition(status: &JobStatus, type_: &str) -> bool {
    status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == type_ && c.status == "True")
}

fn add_condition(status: &mut JobStatus, type_: &str, reason: &str, message: &str) {
    if has_condition(status, type_) {
        return;
    }
    let t = now();
    status
        .conditions
        .get_or_insert_with(Vec::new)
        .push(JobCondition {
            type_: type_.into(),
            status: "True".into(),
            reason: Some(reason.into()),
            message: Some(message.into()),
            last_probe_time: t.clone(),
            last_transition_time: t,
        });
}

fn pod_ready(p: &Value) -> bool {
    p.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// The controller's state.
struct Controller {
    cluster: Arc<Cluster>,
    memory: HashMap<String, Memory>,
    /// Pods by the uid of their controlling owner, built once per pass (a
    /// pass looks at each Job once, so the index cannot go stale for it);
    /// without it every Job's pass listed every pod.
    by_owner: Option<HashMap<String, Vec<Arc<Value>>>>,
}

impl Controller {
    fn owned_pods(&mut self, ns: &str, uid: &str) -> Vec<Arc<Value>> {
        let index = self.by_owner.get_or_insert_with(|| {
            let mut m: HashMap<String, Vec<Arc<Value>>> = HashMap::new();
            for p in self.cluster.store().list(resources::core("pods"), None) {
                let owner = p
                    .pointer("/metadata/ownerReferences")
                    .and_then(Value::as_array)
                    .and_then(|refs| {
                        refs.iter()
                            .find(|o| o["controller"] == json!(true))
                            .and_then(|o| o["uid"].as_str())
                            .map(String::from)
                    });
                if let Some(o) = owner {
                    m.entry(o).or_default().push(p);
                }
            }
            m
        });
        index
            .get(uid)
            .into_iter()
            .flatten()
            .filter(|p| key_of(p).0 == ns)
            .cloned()
            .collect()
    }

    fn create_pod(&self, job: &Job, job_v: &Value) {
        let ns = job.metadata.namespace.clone().unwrap_or_default();
        let name = job.metadata.name.clone().unwrap_or_default();
        let uid = job.metadata.uid.clone().unwrap_or_default();
        let template = job
            .spec
            .as_ref()
            .map(|s| s.template.clone())
            .unwrap_or_default();
        let meta = template.metadata.unwrap_or_default();
        let prefix: String = format!("{name}-").chars().take(58).collect();
        let pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": format!("{prefix}{}", random_suffix(5)),
                "labels": meta.labels,
                "annotations": meta.annotations,
                "ownerReferences": [{
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": name,
                    "uid": uid,
                    "controller": true,
                    "blockOwnerDeletion": true,
                }],
            },
            "spec": template.spec,
        });
        match self.cluster.create(resources::core("pods"), &ns, pod) {
            Ok(p) => {
                let pname = p
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                self.cluster.record_event(
                    job_v,
                    "Normal",
                    "SuccessfulCreate",
                    &format!("Created pod: {pname}"),
                    "job-controller",
                    None,
                );
            }
            Err(e) => {
                self.cluster.record_event(
                    job_v,
                    "Warning",
                    "FailedCreate",
                    &format!("Error creating: {}", e.message),
                    "job-controller",
                    None,
                );
            }
        }
    }

    /// One pass over one Job.
    fn reconcile(&mut self, ns: &str, name: &str) {
        let jobs = resources::core("jobs");
        let Some(job_v) = self.cluster.get(jobs, ns, name) else {
            return;
        };
        let Some(job) = typed::<Job>(&job_v) else {
            return;
        };
        let uid = job.metadata.uid.clone().unwrap_or_default();
        let spec = job.spec.clone().unwrap_or_default();
        let mut status = job.status.clone().unwrap_or_default();
        let finished = has_condition(&status, "Complete") || has_condition(&status, "Failed");
        if finished && job.metadata.deletion_timestamp.is_none() {
            // Finished Jobs only wait for their TTL: no need for their pods.
            self.check_ttl(&job, &status);
            return;
        }
        let pods = self.owned_pods(ns, &uid);

        if job.metadata.deletion_timestamp.is_some() {
            // Foreground deletion: the Job goes once its pods are gone.
            if pods.is_empty() {
                self.cluster.remove(jobs, ns, name);
                self.memory.remove(&uid);
            }
            return;
        }

        let mem = self.memory.entry(uid.clone()).or_default();
        let mut active = Vec::new();
        let mut terminating = 0;
        let mut present = HashSet::new();
        for p in &pods {
            let puid = p
                .pointer("/metadata/uid")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            present.insert(puid.clone());
            match p.pointer("/status/phase").and_then(Value::as_str) {
                Some("Succeeded") => {
                    mem.succeeded.insert(puid.clone());
                    mem.active.remove(&puid);
                }
                Some("Failed") => {
                    if mem.failed.insert(puid.clone()) {
                        mem.last_failure = Some(Instant::now());
                    }
                    mem.active.remove(&puid);
                }
                _ if p.pointer("/metadata/deletionTimestamp").is_some() => terminating += 1,
                _ => {
                    mem.active.insert(puid.clone());
                    active.push(p.clone());
                }
            }
        }
        // Active pods that vanished without finishing count as failed.
        let vanished: Vec<String> = mem
            .active
            .iter()
            .filter(|u| !present.contains(*u))
            .cloned()
            .collect();
        for u in vanished {
            mem.active.remove(&u);
            if mem.failed.insert(u) {
                mem.last_failure = Some(Instant::now());
            }
        }
        let succeeded = mem.succeeded.len() as i32;
        let failed = mem.failed.len() as i32;
        let last_failure = mem.last_failure;

        if status.start_time.is_none() && spec.suspend != Some(true) {
            status.start_time = now();
        }
        let completions = spec.completions.unwrap_or(1);
        let parallelism = spec.parallelism.unwrap_or(1);
        let backoff_limit = spec.backoff_limit.unwrap_or(6);
        let started = status
            .start_time
            .as_ref()
            .and_then(|t| parse_time(&t.0.to_string()))
            .unwrap_or_else(chrono::Utc::now);
        let deadline_hit = spec
            .active_deadline_seconds
            .is_some_and(|d| (chrono::Utc::now() - started).num_seconds() >= d);

        let failure = if has_condition(&status, "FailureTarget") {
            None
        } else if failed > backoff_limit {
            Some((
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            ))
        } else if deadline_hit {
            Some((
                "DeadlineExceeded",
                "Job was active longer than specified deadline",
            ))
        } else {
            None
        };
        if let Some((reason, message)) = failure {
            add_condition(&mut status, "FailureTarget", reason, message);
            self.cluster
                .record_event(&job_v, "Warning", reason, message, "job-controller", None);
            for p in &active {
                let (pns, pname) = key_of(p);
                self.cluster.delete_pod(&pns, &pname, p, None);
                self.cluster.record_event(
                    &job_v,
                    "Normal",
                    "SuccessfulDelete",
                    &format!("Deleted pod: {pname}"),
                    "job-controller",
                    None,
                );
            }
            active.clear();
        }
        let failing = has_condition(&status, "FailureTarget");
        if !failing && succeeded >= completions && !has_condition(&status, "SuccessCriteriaMet") {
            add_condition(
                &mut status,
                "SuccessCriteriaMet",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
            );
        }
        let succeeding = has_condition(&status, "SuccessCriteriaMet");
        let idle = active.is_empty() && terminating == 0;
        if failing && idle {
            let target = status
                .conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == "FailureTarget")
                .cloned();
            let (reason, message) = target
                .map(|c| (c.reason.unwrap_or_default(), c.message.unwrap_or_default()))
                .unwrap_or_default();
            add_condition(&mut status, "Failed", &reason, &message);
        } else if succeeding && idle {
            add_condition(
                &mut status,
                "Complete",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
            );
            status.completion_time = now();
            self.cluster.record_event(
                &job_v,
                "Normal",
                "Completed",
                "Job completed",
                "job-controller",
                None,
            );
        } else if !failing && !succeeding && spec.suspend != Some(true) {
            let wanted = parallelism.min(completions - succeeded).max(0);
            let missing = wanted - active.len() as i32 - terminating;
            let backoff = self.cluster.config.timing.job_backoff
                * 2u32.saturating_pow((failed - 1).clamp(0, 6) as u32);
            let backoff = backoff.min(Duration::from_secs(360));
            let ready_to_create = last_failure.is_none_or(|t| t.elapsed() >= backoff);
            if missing > 0 && ready_to_create {
                for _ in 0..missing {
                    self.create_pod(&job, &job_v);
                }
            }
        }
        let now_active = self.owned_pods(ns, &uid);
        let live: Vec<&Arc<Value>> = now_active
            .iter()
            .filter(|p| {
                !matches!(
                    p.pointer("/status/phase").and_then(Value::as_str),
                    Some("Succeeded") | Some("Failed")
                ) && p.pointer("/metadata/deletionTimestamp").is_none()
            })
            .collect();
        status.active = Some(live.len() as i32).filter(|n| *n > 0);
        status.ready = Some(live.iter().filter(|p| pod_ready(p)).count() as i32);
        status.terminating = Some(terminating);
        status.succeeded = Some(succeeded).filter(|n| *n > 0);
        status.failed = Some(failed).filter(|n| *n > 0);
        status.uncounted_terminated_pods = Some(Default::default());
        self.cluster.mutate_typed::<Job>(jobs, ns, name, |j| {
            if j.metadata.uid.as_deref() == Some(uid.as_str()) {
                j.status = Some(status);
            }
        });
    }

    /// ttlSecondsAfterFinished: the TTL controller deletes finished Jobs
    /// (foreground, so their pods go too).
    fn check_ttl(&self, job: &Job, status: &JobStatus) {
        let Some(ttl) = job.spec.as_ref().and_then(|s| s.ttl_seconds_after_finished) else {
            return;
        };
        let finished_at = status
            .conditions
            .iter()
            .flatten()
            .filter(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
            .filter_map(|c| c.last_transition_time.as_ref())
            .filter_map(|t| parse_time(&t.0.to_string()))
            .next();
        let Some(at) = finished_at else { return };
        if (chrono::Utc::now() - at).num_milliseconds() >= ttl as i64 * 1000 {
            let ns = job.metadata.namespace.clone().unwrap_or_default();
            let name = job.metadata.name.clone().unwrap_or_default();
            let opts = DeleteOpts {
                propagation: Some("Foreground".into()),
                ..Default::default()
            };
            let _ = self
                .cluster
                .delete(resources::core("jobs"), &ns, &name, &opts);
        }
    }
}

/// Whether a Job needs looking at on a timer (deadline, TTL, backoff).
fn timed(j: &Value) -> bool {
    let conds = j.pointer("/status/conditions").and_then(Value::as_array);
    let finished = conds.is_some_and(|c| {
        c.iter()
            .any(|c| (c["type"] == "Complete" || c["type"] == "Failed") && c["status"] == "True")
    });
    if finished {
        j.pointer("/spec/ttlSecondsAfterFinished").is_some()
    } else {
        true
    }
}

/// The controller loop.
pub async fn run(cluster: Arc<Cluster>) {
    let mut ctl = Controller {
        cluster: cluster.clone(),
        memory: HashMap::new(),
        by_owner: None,
    };
    let mut changed = cluster.subscribe();
    let mut cursor = 0u64;
    let mut full = true;
    let mut tick = tokio::time::interval(cluster.config.timing.resync);
    loop {
        let (keys, current) = {
            let store = cluster.store();
            let current = store.current_rv();
            let mut keys: Vec<(String, String)> = Vec::new();
            match (full, store.changes_since(cursor)) {
                (false, Ok(changes)) => {
                    for c in changes {
                        match c.resource.plural {
                            "jobs" if c.kind != crate::emulator::store::ChangeKind::Deleted => {
                                keys.push(key_of(&c.object))
                            }
                            "pods" => {
                                let (ns, _) = key_of(&c.object);
                                let owner = c
                                    .object
                                    .pointer("/metadata/ownerReferences/0/name")
                                    .and_then(Value::as_str)
                                    .or_else(|| {
                                        c.previous.as_ref().and_then(|p| {
                                            p.pointer("/metadata/ownerReferences/0/name")
                                                .and_then(Value::as_str)
                                        })
                                    });
                                let is_job = c
                                    .object
                                    .pointer(&format!(
                                        "/metadata/labels/{}",
                                        CONTROLLER_UID_LABEL.replace('/', "~1")
                                    ))
                                    .is_some();
                                if let (Some(o), true) = (owner, is_job) {
                                    keys.push((ns, o.to_string()));
                                }
                            }
                            _ => {}
                        }
                    }
                }
                _ => {
                    for j in store.list(resources::core("jobs"), None) {
                        if full && timed(&j) {
                            keys.push(key_of(&j));
                        }
                    }
                }
            }
            keys.sort();
            keys.dedup();
            (keys, current)
        };
        ctl.by_owner = None;
        for (ns, name) in keys {
            ctl.reconcile(&ns, &name);
            // A pass over thousands of Jobs must not hold a worker.
            tokio::task::yield_now().await;
        }
        ctl.by_owner = None;
        // Forget Jobs that are gone.
        if full {
            let live: HashSet<String> = cluster
                .store()
                .list(resources::core("jobs"), None)
                .iter()
                .filter_map(|j| {
                    j.pointer("/metadata/uid")
                        .and_then(Value::as_str)
                        .map(String::from)
                })
                .collect();
            ctl.memory.retain(|u, _| live.contains(u));
        }
        cursor = current;
        full = false;
        tokio::select! {
            _ = cluster.shutdown.cancelled() => return,
            _ = changed.changed() => {}
            _ = tick.tick() => full = true,
        }
    }
}
