//! Job creation: a queue of Jobs to create, drained at the rate limit
//! (`--kubernetesMaxCreatesPerSecond`, a token bucket) with a bound on the
//! creations in flight; kills and deletions.
//!
//! Each creation is two calls: the Job, then the Secret with the agent's
//! token, owned by the Job (its uid is only known once the Job exists). The
//! pod may look for the Secret before it lands: the kubelet retries a
//! missing `secretKeyRef` (`CreateContainerConfigError`), and the diagnosis
//! treats the pod's own token Secret as not there yet rather than as a
//! configuration error (see `diagnose::own_secret_missing`).

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{DeleteParams, PostParams};
use toil_proto::v1::Cause;
use tokio::time::Instant;

use super::pods::{Creation, Tracked};
use super::{Batch, Done, Shared};
use crate::batch::kubernetes::api::{self, ApiError, Target};
use crate::batch::kubernetes::{names, podspec};
use crate::batch::{AgentLaunch, BatchEvent};

/// Most Job creations in flight at once.
pub(super) const MAX_IN_FLIGHT: usize = 32;

impl Batch {
    /// Queues the Job of a new agent (or fails it at once after a 403).
    pub(super) async fn launch(&mut self, l: AgentLaunch) {
        if let Some(why) = self.refused.clone() {
            let _ = self
                .events
                .send(BatchEvent::AgentGone {
                    agent_id: l.agent_id,
                    cause: Some(Cause::config_error(why)),
                    detail: String::new(),
                })
                .await;
            return;
        }
        let s = &self.shared;
        let job = podspec::build_job(&s.cfg, &s.naming, &self.leader_address, &l);
        // The owner's uid is filled in once the Job exists.
        let secret = podspec::token_secret(&s.naming, &l, "");
        let deadline = (!s.cfg.reuse_agents).then_some(l.time_limit).flatten();
        self.tracked.insert(
            l.agent_id.clone(),
            Tracked::new(
                l.job_id.clone(),
                job.name_any(),
                l.request.memory,
                deadline,
                Instant::now(),
            ),
        );
        self.queue.push_back((l.agent_id, job, Box::new(secret)));
    }

    /// How long until the next creation may start, if one waits.
    pub(super) fn pump_wait(&mut self) -> Option<Duration> {
        if self.queue.is_empty() || self.in_flight >= MAX_IN_FLIGHT {
            return None;
        }
        Some(self.bucket.wait(Instant::now()))
    }

    /// Starts creations while the rate limit and the in-flight bound allow.
    pub(super) fn pump(&mut self) {
        while !self.queue.is_empty()
            && self.in_flight < MAX_IN_FLIGHT
            && self.bucket.try_take(Instant::now())
        {
            let Some((agent_id, job, secret)) = self.queue.pop_front() else {
                break;
            };
            let Some(t) = self.tracked.get_mut(&agent_id) else {
                continue;
            };
            t.creation = Creation::InFlight;
            self.in_flight += 1;
            let s = self.shared.clone();
            self.tasks.spawn(async move {
                let result = create(&s, &agent_id, &job, *secret).await;
                Done::Created { agent_id, result }
            });
        }
    }

    /// Stops an agent: drops its queued Job, or deletes it once created.
    pub(super) async fn kill(&mut self, agent_id: &str) {
        let Some(t) = self.tracked.remove(agent_id) else {
            return;
        };
        match t.creation {
            Creation::Queued => self.queue.retain(|(a, _, _)| a != agent_id),
            Creation::InFlight => {
                self.kill_after_create
                    .insert(agent_id.to_string(), t.job_name.clone());
            }
            Creation::Created => self.delete_job(&t.job_name),
        }
        let _ = self
            .events
            .send(BatchEvent::AgentGone {
                agent_id: agent_id.to_string(),
                cause: None,
                detail: format!("the leader stopped it ({})", t.whereabouts()),
            })
            .await;
    }

    /// Deletes a Job in the background (a 404 is success).
    pub(super) fn delete_job(&mut self, name: &str) {
        let s = self.shared.clone();
        let job = name.to_string();
        self.tasks.spawn(async move {
            let jobs = s.jobs();
            let target = Target::new("delete", "jobs", "batch", &s.ns);
            let dp = DeleteParams::background();
            let r = api::call(&s.policy, &target, &format!("deleting Job {job}"), || {
                jobs.delete(&job, &dp)
            })
            .await;
            let result = match r {
                Ok(_) => Ok(()),
                Err(e) if e.code() == Some(404) => Ok(()),
                Err(e) => Err(e),
            };
            Done::Deleted { job, result }
        });
    }
}

/// Creates a Job, then the Secret with its agent's token, owned by the Job.
/// A 409 for a Job this agent already owns (a create that succeeded but
/// whose answer was lost, then retried) counts as created, and so does a
/// 409 for the Secret (the same retried create). When the Secret cannot be
/// made, the Job is deleted (its pod could never start) and the error is
/// the Secret's.
async fn create(s: &Shared, agent_id: &str, job: &Job, mut secret: Secret) -> Result<(), ApiError> {
    let jobs = s.jobs();
    let name = job.name_any();
    let target = Target::new("create", "jobs", "batch", &s.ns);
    let pp = PostParams::default();
    let r = api::call(&s.policy, &target, &format!("creating Job {name}"), || {
        jobs.create(&pp, job)
    })
    .await;
    let created = match r {
        Ok(j) => j,
        Err(e) if e.code() == Some(409) => {
            let get = Target::new("get", "jobs", "batch", &s.ns);
            let existing = api::call(&s.policy, &get, &format!("reading Job {name}"), || {
                jobs.get_opt(&name)
            })
            .await
            .ok()
            .flatten();
            match existing {
                Some(j)
                    if j.labels().get(names::AGENT) == Some(&names::label_value(agent_id))
                        && j.labels().get(names::WORKFLOW) == Some(&s.naming.workflow_id)
                        && j.labels().get(names::EPOCH) == Some(&s.naming.epoch.to_string()) =>
                {
                    j
                }
                _ => return Err(e),
            }
        }
        Err(e) => return Err(e),
    };
    let uid = created.uid().unwrap_or_default();
    for owner in secret.metadata.owner_references.iter_mut().flatten() {
        owner.uid = uid.clone();
    }
    let secrets = s.secrets();
    let target = Target::new("create", "secrets", "", &s.ns);
    let r = api::call(
        &s.policy,
        &target,
        &format!("creating the Secret {name} with the agent's token"),
        || secrets.create(&pp, &secret),
    )
    .await;
    match r {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some(409) => Ok(()),
        Err(e) => {
            let del = Target::new("delete", "jobs", "batch", &s.ns);
            let dp = DeleteParams::background();
            let _ = api::call(&s.policy, &del, &format!("deleting Job {name}"), || {
                jobs.delete(&name, &dp)
            })
            .await;
            Err(e)
        }
    }
}
