//! Job creation: a queue of Jobs to create, drained at the rate limit
//! (`--kubernetesMaxCreatesPerSecond`, a token bucket) with a bound on the
//! creations in flight; kills and deletions.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
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
        self.queue.push_back((l.agent_id, job));
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
            let Some((agent_id, job)) = self.queue.pop_front() else {
                break;
            };
            let Some(t) = self.tracked.get_mut(&agent_id) else {
                continue;
            };
            t.creation = Creation::InFlight;
            self.in_flight += 1;
            let s = self.shared.clone();
            self.tasks.spawn(async move {
                let result = create(&s, &agent_id, &job).await;
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
            Creation::Queued => self.queue.retain(|(a, _)| a != agent_id),
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

/// Creates a Job; a 409 for a Job this agent already owns (a create that
/// succeeded but whose answer was lost, then retried) counts as created.
async fn create(s: &Shared, agent_id: &str, job: &Job) -> Result<(), ApiError> {
    let jobs = s.jobs();
    let name = job.name_any();
    let target = Target::new("create", "jobs", "batch", &s.ns);
    let pp = PostParams::default();
    let r = api::call(&s.policy, &target, &format!("creating Job {name}"), || {
        jobs.create(&pp, job)
    })
    .await;
    match r {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some(409) => {
            let get = Target::new("get", "jobs", "batch", &s.ns);
            let existing = api::call(&s.policy, &get, &format!("reading Job {name}"), || {
                jobs.get_opt(&name)
            })
            .await
            .ok()
            .flatten();
            let ours = existing.is_some_and(|j| {
                j.labels().get(names::AGENT) == Some(&names::label_value(agent_id))
                    && j.labels().get(names::WORKFLOW) == Some(&s.naming.workflow_id)
                    && j.labels().get(names::EPOCH) == Some(&s.naming.epoch.to_string())
            });
            if ours { Ok(()) } else { Err(e) }
        }
        Err(e) => Err(e),
    }
}
