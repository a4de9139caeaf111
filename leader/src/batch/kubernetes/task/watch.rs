//! The pod watch and the lookups that explain a failure: one watch on every
//! pod of this leader, each event read by `Tracked::read` and acted on
//! (a placement, a report, a lookup of the Job's deadline, the agent's log
//! or the pod's events).

use std::collections::HashSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event as KubeEvent, Pod};
use kube::ResourceExt;
use kube::api::{Api, ListParams, LogParams};
use kube::runtime::watcher::{self, Event};
use toil_proto::v1::{Cause, CauseKind};
use tokio::time::Instant;

use super::pods::{DeadlineCheck, Next};
use super::{Batch, Done};
use crate::batch::kubernetes::api::{self, Target};
use crate::batch::kubernetes::podspec::{self, CONTAINER};
use crate::batch::kubernetes::{diagnose, names};

/// Lines of an agent's log kept to explain its failure.
const LOG_TAIL: i64 = 10;
/// Watch errors are shown at most this often.
const WATCH_WARN_EVERY: Duration = Duration::from_secs(10);

impl Batch {
    pub(super) async fn on_watch(&mut self, ev: Event<Pod>) {
        match ev {
            Event::Init => self.relist = Some(HashSet::new()),
            Event::InitApply(p) => {
                if let (Some(seen), Some(a)) = (self.relist.as_mut(), p.labels().get(names::AGENT))
                {
                    seen.insert(a.clone());
                }
                self.on_pod(p, false).await;
            }
            Event::InitDone => {
                let Some(seen) = self.relist.take() else {
                    return;
                };
                let vanished: Vec<(String, String)> = self
                    .tracked
                    .iter()
                    .filter(|(id, t)| {
                        t.pod.is_some() && !t.explaining && !seen.contains(&names::label_value(id))
                    })
                    .map(|(id, t)| (id.clone(), t.whereabouts()))
                    .collect();
                for (id, w) in vanished {
                    self.report(
                        &id,
                        None,
                        format!(
                            "its {w} disappeared while the leader's pod watch was reconnecting"
                        ),
                        false,
                    )
                    .await;
                }
            }
            Event::Apply(p) => self.on_pod(p, false).await,
            Event::Delete(p) => self.on_pod(p, true).await,
        }
    }

    pub(super) fn on_watch_error(&mut self, e: &watcher::Error) {
        if let watcher::Error::WatchError(s) = e
            && s.code == 410
        {
            // The history the watch could resume from is gone: the watcher
            // relists, and pods that vanished meanwhile show at InitDone.
            tracing::debug!("the pod watch expired (410 Gone); relisting");
            return;
        }
        let now = Instant::now();
        if self
            .last_watch_warning
            .is_some_and(|t| now.duration_since(t) < WATCH_WARN_EVERY)
        {
            return;
        }
        self.last_watch_warning = Some(now);
        let inner = match e {
            watcher::Error::InitialListFailed(k)
            | watcher::Error::WatchStartFailed(k)
            | watcher::Error::WatchFailed(k) => Some(k),
            _ => None,
        };
        let forbidden = matches!(inner, Some(kube::Error::Api(s)) if s.code == 403);
        let what = match inner {
            Some(k) => api::short(k),
            None => e.to_string(),
        };
        if forbidden {
            tracing::error!(
                "the pod watch is refused: {what}; the leader's identity needs `list` and `watch` on `pods` in namespace {:?} (apply deploy/rbac.yaml); retrying",
                self.shared.ns
            );
        } else {
            tracing::warn!("the pod watch failed, retrying with back-off: {what}");
        }
    }

    /// Applies one pod event (`deleted`: the pod object is gone).
    pub(super) async fn on_pod(&mut self, pod: Pod, deleted: bool) {
        let Some(agent_id) = self.agent_of(&pod) else {
            return;
        };
        let Some(t) = self.tracked.get_mut(&agent_id) else {
            return;
        };
        match t.read(pod, deleted, Instant::now()) {
            Next::Nothing => {}
            Next::Place(node) => self.place(&agent_id, &node).await,
            Next::Doomed { cause, stuck } => {
                self.report(&agent_id, Some(cause), String::new(), stuck)
                    .await
            }
            Next::CheckDeadline(stashed) => self.check_deadline(&agent_id, stashed),
            Next::Gone(detail) => self.report(&agent_id, None, detail, false).await,
            Next::ExplainLog(what) => self.explain_with_log(&agent_id, what),
            Next::Verdict(c) => self.report(&agent_id, Some(c), String::new(), false).await,
        }
    }

    fn agent_of(&self, pod: &Pod) -> Option<String> {
        let label = pod.labels().get(names::AGENT)?;
        if self.tracked.contains_key(label) {
            return Some(label.clone());
        }
        // Label values are sanitized agent ids; agent ids are label-safe
        // already, so this only matters for unusual ids.
        self.tracked
            .keys()
            .find(|k| &names::label_value(k) == label)
            .cloned()
    }

    // === lookups that explain a failure ===

    /// Reads the Job's conditions: did it pass its activeDeadlineSeconds?
    /// Pod events that arrive meanwhile are kept and applied afterwards.
    pub(super) fn check_deadline(&mut self, agent_id: &str, stashed: Option<(Box<Pod>, bool)>) {
        let Some(t) = self.tracked.get_mut(agent_id) else {
            return;
        };
        t.deadline_check = DeadlineCheck::Running { stashed };
        let s = self.shared.clone();
        let name = t.job_name.clone();
        let agent_id = agent_id.to_string();
        self.tasks.spawn(async move {
            let jobs = s.jobs();
            let target = Target::new("get", "jobs", "batch", &s.ns);
            let got = api::call(&s.policy, &target, &format!("reading Job {name}"), || {
                jobs.get_opt(&name)
            })
            .await;
            let message = got.ok().flatten().and_then(|j| {
                j.status?.conditions?.into_iter().find_map(|c| {
                    ((c.type_ == "Failed" || c.type_ == "FailureTarget")
                        && c.reason.as_deref() == Some("DeadlineExceeded"))
                    .then(|| c.message.unwrap_or_else(|| "DeadlineExceeded".into()))
                })
            });
            Done::Deadline { agent_id, message }
        });
    }

    /// Reports an agent that failed on its own, with the end of its log.
    fn explain_with_log(&mut self, agent_id: &str, what: String) {
        let Some(t) = self.tracked.get_mut(agent_id) else {
            return;
        };
        t.explaining = true;
        let s = self.shared.clone();
        let pod = t.pod.clone().unwrap_or_default();
        let agent_id = agent_id.to_string();
        self.tasks.spawn(async move {
            let pods: Api<Pod> = Api::namespaced(s.client.clone(), &s.ns);
            let lp = LogParams {
                container: Some(CONTAINER.into()),
                tail_lines: Some(LOG_TAIL),
                ..Default::default()
            };
            let target = Target::new("get", "pods/log", "", &s.ns);
            let log = api::call(
                &s.policy,
                &target,
                &format!("reading the log of {pod}"),
                || pods.logs(&pod, &lp),
            )
            .await;
            let detail = match log {
                Ok(text) if !text.trim().is_empty() => {
                    let lines: Vec<&str> = text.trim_end().lines().collect();
                    format!("{what}; its last output: {}", lines.join(" | "))
                }
                Ok(_) => what,
                Err(e) => format!("{what} (its log could not be read: {e})"),
            };
            Done::Report {
                agent_id,
                cause: None,
                detail,
                delete: false,
            }
        });
    }

    /// Reads, once for each agent, the events of its Job if it has made
    /// no pod yet: a `FailedCreate` from Pod Security admission fails the
    /// agent now with the policy and the fix. Anything else waits for the
    /// pod timeout. One list covers every agent of a tick, so a cluster
    /// slow to make pods costs one request per tick, not one per Job.
    pub(super) fn check_admission(&mut self, agent_ids: Vec<String>) {
        let mut jobs = Vec::new();
        for agent_id in agent_ids {
            let Some(t) = self.tracked.get_mut(&agent_id) else {
                continue;
            };
            // Not `explaining`: pod events keep flowing meanwhile, and a pod
            // that appears after all wins over what the events said.
            t.admission_checked = true;
            jobs.push((agent_id, t.job_name.clone()));
        }
        if jobs.is_empty() {
            return;
        }
        let s = self.shared.clone();
        self.tasks.spawn(async move {
            let evs: Api<KubeEvent> = Api::namespaced(s.client.clone(), &s.ns);
            let fields = match jobs.as_slice() {
                // One Job: the server filters by its name too.
                [(_, job)] => {
                    format!("involvedObject.kind=Job,involvedObject.name={job},reason=FailedCreate")
                }
                _ => "involvedObject.kind=Job,reason=FailedCreate".to_string(),
            };
            let lp = ListParams::default().fields(&fields);
            let target = Target::new("list", "events", "", &s.ns);
            let what = match jobs.as_slice() {
                [(_, job)] => format!("reading the events of Job {job}"),
                _ => format!("reading the FailedCreate events of {} Jobs", jobs.len()),
            };
            let got = api::call(&s.policy, &target, &what, || evs.list(&lp)).await;
            let (level, why) = podspec::security_level(&s.cfg);
            let events = got.map(|l| l.items).unwrap_or_default();
            let checked = jobs
                .into_iter()
                .map(|(agent_id, job)| {
                    let refusal = events
                        .iter()
                        .filter(|e| e.involved_object.name.as_deref() == Some(job.as_str()))
                        .find_map(|e| {
                            diagnose::pod_security_refusal(
                                e.message.as_deref().unwrap_or_default(),
                                &s.ns,
                                level,
                                &why,
                            )
                        });
                    (agent_id, refusal)
                })
                .collect();
            Done::Admission { checked }
        });
    }

    /// Fails an agent whose pod did not start, with the latest warning
    /// event of `object` (the pod, or the Job when no pod appeared).
    pub(super) fn explain_start_timeout(&mut self, agent_id: &str, object: String, what: String) {
        let Some(t) = self.tracked.get_mut(agent_id) else {
            return;
        };
        t.explaining = true;
        let s = self.shared.clone();
        let agent_id = agent_id.to_string();
        self.tasks.spawn(async move {
            let evs: Api<KubeEvent> = Api::namespaced(s.client.clone(), &s.ns);
            let lp = ListParams::default().fields(&format!("involvedObject.name={object}"));
            let target = Target::new("list", "events", "", &s.ns);
            let got = api::call(
                &s.policy,
                &target,
                &format!("reading the events of {object}"),
                || evs.list(&lp),
            )
            .await;
            let last = got.ok().and_then(|l| {
                l.items
                    .into_iter()
                    .filter(|e| e.type_.as_deref() == Some("Warning"))
                    .max_by_key(|e| {
                        e.last_timestamp
                            .as_ref()
                            .map(|t| t.0.to_string())
                            .or_else(|| e.event_time.as_ref().map(|t| t.0.to_string()))
                            .unwrap_or_default()
                    })
            });
            let message = match last {
                Some(e) => format!(
                    "{what}; the last warning: {}: {}",
                    e.reason.unwrap_or_default(),
                    e.message.unwrap_or_default()
                ),
                None => format!("{what}; the cluster gave no warning event"),
            };
            Done::Report {
                agent_id,
                cause: Some(Cause::new(CauseKind::PodStartTimeout, message)),
                detail: String::new(),
                delete: true,
            }
        });
    }
}
