//! The agent protocol on the leader's side: checking tokens and answering
//! `Synchronize` reports.

use std::collections::HashMap;
use std::sync::RwLock;

use toil_jobstore::layout;
use toil_proto::v1::{
    AgentPhase, Assignment, CauseKind, Resources, SynchronizeRequest, SynchronizeResponse,
    synchronize_response::Action,
};
use tokio::sync::oneshot;
use tonic::Status;

use super::Driver;
use super::messages::{self, SyncReply};
use crate::core::Request;

/// What to answer an idle agent.
pub(crate) enum Next {
    /// Answer now.
    Reply(Box<SyncReply>),
    /// Hand it this attempt once the attempt's launch is durable.
    Defer(String),
}

/// How long an AGENT_LOST report waits for the batch system's diagnosis
/// (a pod's deletion and the watch event that explains it arrive together;
/// this only bounds a batch system that never says).
pub const DIAGNOSIS_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

/// True for results whose real cause the platform may know better than
/// the agent: AGENT_LOST (the agent was stopped from outside), and a job
/// killed by SIGKILL directly or through its shell (exit 137), which is how
/// a container's memory limit ends a process.
fn platform_may_know(result: &toil_proto::v1::AttemptResult) -> bool {
    let Some(c) = &result.cause else {
        return false;
    };
    c.kind == CauseKind::AgentLost as i32
        || (c.kind == CauseKind::ExitCode as i32 && c.code == 137)
        || (c.kind == CauseKind::Signaled as i32 && c.code == 9)
}

/// A fresh random secret (128 bits, hex).
pub fn new_token() -> String {
    let bytes: [u8; 16] = rand::random();
    hex::encode(bytes)
}

/// Compares secrets in time independent of where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Who holds which token, readable by the gRPC handlers without going
/// through the driver (log chunks and client calls are checked here).
pub struct TokenTable {
    client: String,
    attempts: RwLock<HashMap<String, (String, String)>>,
}

/// What a bearer token allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Grant {
    /// The workflow's client token: everything.
    Client,
    /// A running attempt's token: read, and add jobs under its job.
    Attempt {
        /// The attempt.
        attempt_id: String,
        /// Its job.
        job_id: String,
    },
}

impl TokenTable {
    /// A table with this client token.
    pub fn new(client: String) -> Self {
        TokenTable {
            client,
            attempts: RwLock::new(HashMap::new()),
        }
    }

    /// The client token.
    pub fn client_token(&self) -> &str {
        &self.client
    }

    pub(crate) fn insert_attempt(&self, attempt_id: &str, token: &str, job_id: &str) {
        self.attempts
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                attempt_id.to_string(),
                (token.to_string(), job_id.to_string()),
            );
    }

    pub(crate) fn remove_attempt(&self, attempt_id: &str) {
        self.attempts
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(attempt_id);
    }

    /// True if `token` is the current secret of `attempt_id`.
    pub fn check_attempt(&self, attempt_id: &str, token: &str) -> bool {
        self.attempts
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(attempt_id)
            .is_some_and(|(t, _)| same_secret(t, token))
    }

    /// What a bearer token allows, if anything.
    pub fn grant(&self, token: &str) -> Option<Grant> {
        if same_secret(&self.client, token) {
            return Some(Grant::Client);
        }
        let map = self.attempts.read().unwrap_or_else(|p| p.into_inner());
        map.iter()
            .find(|(_, (t, _))| same_secret(t, token))
            .map(|(a, (_, j))| Grant::Attempt {
                attempt_id: a.clone(),
                job_id: j.clone(),
            })
    }
}

impl Driver {
    /// Handles one `Synchronize` report. The reply is sent now, or later for
    /// a held (long-poll) report of a running attempt.
    pub(crate) fn on_sync(&mut self, req: SynchronizeRequest, reply: oneshot::Sender<SyncReply>) {
        let now = super::now();
        let Some(agent) = self.agents.get_mut(&req.agent_id) else {
            let _ = reply.send(Err(Status::permission_denied(format!(
                "unknown agent {:?}: it was not started by this leader (an agent of a previous leader must exit)",
                req.agent_id
            ))));
            return;
        };
        if !same_secret(&agent.token, &req.agent_token) {
            let _ = reply.send(Err(Status::permission_denied("wrong agent token")));
            return;
        }
        agent.connected = true;
        agent.last_report = now;
        if let Some(info) = &req.info
            && agent.placement.is_empty()
        {
            agent.placement = if info.pod_name.is_empty() {
                format!("local pid {}", info.pid)
            } else {
                format!("pod {} on {}", info.pod_name, info.node_name)
            };
        }
        if let Some(cap) = &req.capacity
            && req.phase == AgentPhase::Idle as i32
        {
            agent.capacity = Request {
                millicores: cap.millicores,
                memory: cap.memory_bytes,
                disk: cap.disk_bytes,
                gpus: cap.gpus,
                preemptible: cap.preemptible,
            };
        }
        // A newer report supersedes a held one.
        if let Some(h) = agent.held.take() {
            let _ = h.send(Ok(messages::keep_going(self.cfg.lease)));
        }
        let phase = AgentPhase::try_from(req.phase).unwrap_or(AgentPhase::Unspecified);
        let agent_id = req.agent_id.clone();
        let answer = match phase {
            AgentPhase::Idle => match self.on_idle(&agent_id) {
                Next::Reply(r) => *r,
                Next::Defer(attempt_id) => return self.defer(agent_id, attempt_id, false, reply),
            },
            AgentPhase::Staging | AgentPhase::Running | AgentPhase::Uploading => {
                match self.check_attempt(&req) {
                    Err(s) => Err(s),
                    Ok(()) => {
                        let agent = self.agents.get_mut(&req.agent_id);
                        match agent {
                            Some(a) if a.kill.is_some() => Ok(messages::kill(
                                a.kill.clone().unwrap_or_default(),
                                self.cfg.lease,
                            )),
                            Some(a) => {
                                a.held = Some(reply);
                                a.held_until = now + self.cfg.hold;
                                return;
                            }
                            None => Err(Status::internal("agent vanished")),
                        }
                    }
                }
            }
            AgentPhase::Done => match self.on_done(req) {
                Ok(Next::Reply(r)) => match *r {
                    // The agent keeps no copy of a result the leader has
                    // confirmed, so confirm it only once its journal entry
                    // is durable.
                    Ok(mut r) => {
                        r.result_recorded = true;
                        let pos = self.launch_position();
                        self.pending.push_back((
                            pos,
                            super::Pending::Reply {
                                answer: Box::new(r),
                                reply,
                            },
                        ));
                        return;
                    }
                    Err(s) => Err(s),
                },
                Ok(Next::Defer(attempt_id)) => {
                    return self.defer(agent_id, attempt_id, true, reply);
                }
                Err(s) => Err(s),
            },
            AgentPhase::Unspecified => Err(Status::invalid_argument(
                "phase is missing: send IDLE, STAGING, RUNNING, UPLOADING or DONE",
            )),
        };
        let _ = reply.send(answer);
    }

    /// Checks that a report about an attempt carries its token and that the
    /// attempt is the agent's and still running.
    fn check_attempt(&self, req: &SynchronizeRequest) -> Result<(), Status> {
        let Some(entry) = self.attempts.get(&req.attempt_id) else {
            return Err(Status::failed_precondition(format!(
                "attempt {:?} is not running (it ended, or belongs to a previous leader)",
                req.attempt_id
            )));
        };
        if !same_secret(&entry.token, &req.attempt_token) {
            return Err(Status::permission_denied("wrong attempt token"));
        }
        if entry.agent_id != req.agent_id {
            return Err(Status::permission_denied(
                "this attempt was assigned to another agent",
            ));
        }
        Ok(())
    }

    /// Answers a reused agent with its next attempt once that attempt's
    /// launch is durable in the journal.
    fn defer(
        &mut self,
        agent_id: String,
        attempt_id: String,
        recorded: bool,
        reply: oneshot::Sender<SyncReply>,
    ) {
        let pos = self.launch_position();
        self.pending.push_back((
            pos,
            super::Pending::Assign {
                agent_id,
                attempt_id,
                recorded,
                reply,
            },
        ));
    }

    fn on_idle(&mut self, agent_id: &str) -> Next {
        let bound = self
            .agents
            .get(agent_id)
            .and_then(|a| a.attempt.clone().map(|id| (id, a.assigned)));
        if let Some((attempt_id, assigned)) = bound {
            if !assigned {
                return Next::Reply(Box::new(self.assign(agent_id, &attempt_id)));
            }
            // The agent forgot its attempt (it restarted): that attempt is lost.
            self.end_attempt(
                &attempt_id,
                messages::lost("the agent restarted and lost its attempt"),
                None,
            );
        }
        if self.cfg.reuse_agents && !self.draining {
            let cap = self
                .agents
                .get(agent_id)
                .map(|a| a.capacity.clone())
                .unwrap_or(Request {
                    millicores: 0,
                    memory: 0,
                    disk: 0,
                    gpus: 0,
                    preemptible: false,
                });
            let usage = &self.usage;
            let limit = &self.cfg.capacity;
            let picked = self.core.take_ready(self.cfg.window, |_, req| {
                req.millicores <= cap.millicores
                    && req.memory <= cap.memory
                    && req.disk <= cap.disk
                    && req.gpus <= cap.gpus
                    // A slot that may be preempted only takes jobs that
                    // may be; any slot takes those.
                    && (!cap.preemptible || req.preemptible)
                    && usage.fits(req, limit)
            });
            if let Some(j) = picked
                && let Some(attempt_id) = self.start_attempt(j, Some(agent_id))
            {
                if let Some(a) = self.agents.get_mut(agent_id) {
                    a.attempt = Some(attempt_id.clone());
                }
                return Next::Defer(attempt_id);
            }
        }
        self.agents.remove(agent_id);
        Next::Reply(Box::new(Ok(messages::exit("no more work for this agent"))))
    }

    /// Delivers the assignment of `attempt_id` to `agent_id`.
    pub(crate) fn assign(&mut self, agent_id: &str, attempt_id: &str) -> SyncReply {
        let Some(entry) = self.attempts.get(attempt_id) else {
            return Ok(messages::exit("the attempt was cancelled"));
        };
        let placement = self
            .agents
            .get(agent_id)
            .map(|a| a.placement.clone())
            .unwrap_or_default();
        if let Some(a) = self.agents.get_mut(agent_id) {
            // Once per attempt, when its assignment is first delivered.
            if !a.assigned
                && let Some(at) = self.core.attempts(entry.job).get(entry.n as usize - 1)
            {
                let waited = toil_jobstore::state::now_ms() - at.launched_ms;
                self.metrics
                    .dispatched(std::time::Duration::from_millis(waited.max(0) as u64));
            }
            a.assigned = true;
        }
        let s = &entry.spec;
        if !placement.is_empty() {
            self.core.place(entry.job, entry.n, &placement);
        }
        let mut env: std::collections::HashMap<String, String> =
            s.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        env.insert("TOIL_JOB_ID".into(), s.job_id.clone());
        env.insert("TOIL_ATTEMPT_ID".into(), s.attempt_id.clone());
        env.insert("TOIL_ATTEMPT_TOKEN".into(), entry.token.clone());
        env.insert(
            "TOIL_LEADER_ADDRESS".into(),
            self.cfg.workflow_address.clone(),
        );
        // Not secrets: what a job's own client needs to trust the leader
        // when the address is https:// (a pod's job).
        env.insert("TOIL_LEADER_CERT".into(), self.cfg.leader_cert_pem.clone());
        env.insert(
            toil_agent::transport::PIN_ENV.into(),
            self.cfg.leader_cert_sha256.clone(),
        );
        let assignment = Assignment {
            attempt_id: s.attempt_id.clone(),
            attempt_token: entry.token.clone(),
            job_id: s.job_id.clone(),
            argv: s.argv.clone(),
            env,
            image: s.image.clone().unwrap_or_default(),
            resources: Some(Resources {
                millicores: s.request.millicores,
                memory_bytes: s.request.memory,
                disk_bytes: s.request.disk,
                gpus: s.request.gpus,
                preemptible: s.request.preemptible,
            }),
            time_limit: s
                .time_limit
                .and_then(|d| prost_types::Duration::try_from(d).ok()),
            inputs: s.inputs.clone(),
            outputs: s.outputs.clone(),
            job_store: self.cfg.job_store.clone(),
            workflow_address: self.cfg.workflow_address.clone(),
            output_prefix: layout::output_prefix(&s.job_id, s.attempt),
            cwl_invocation: s.cwl_invocation.clone().unwrap_or_default(),
        };
        Ok(SynchronizeResponse {
            action: Some(Action::Assignment(assignment)),
            next_report_within: messages::within(self.cfg.lease),
            result_recorded: false,
        })
    }

    fn on_done(&mut self, mut req: SynchronizeRequest) -> Result<Next, Status> {
        let Some(entry) = self.attempts.get(&req.attempt_id) else {
            // Already recorded (a resent report) or superseded: either way
            // the agent can forget it.
            let known = layout::split_attempt_id(&req.attempt_id)
                .and_then(|(job, _)| self.core.lookup(job))
                .is_some();
            if !known {
                return Err(Status::permission_denied(format!(
                    "attempt {:?} is not part of this workflow",
                    req.attempt_id
                )));
            }
            return Ok(self.on_idle_after_done(&req.agent_id));
        };
        if !same_secret(&entry.token, &req.attempt_token) {
            return Err(Status::permission_denied("wrong attempt token"));
        }
        if entry.agent_id != req.agent_id {
            return Err(Status::permission_denied(
                "this attempt was assigned to another agent",
            ));
        }
        let result = req.result.take().unwrap_or_default();
        if let Err(why) = super::checks::check_outputs(&entry.spec, &result) {
            // The attempt goes on: its real agent reports in due course.
            crate::say!(
                "refused a result for attempt {} (it names outputs the job cannot have made): {why}",
                req.attempt_id
            );
            return Err(Status::invalid_argument(format!("result refused: {why}")));
        }
        if platform_may_know(&result) {
            // Stopped from outside (SIGTERM), or killed the way the kernel
            // kills at a memory limit: the batch system usually knows why
            // (preempted, evicted, deadline, OOMKilled). Hold the result
            // until it reports the agent gone, and give this agent no more
            // work.
            if let Some(a) = self.agents.get_mut(&req.agent_id) {
                a.deferred = Some((result, super::now() + DIAGNOSIS_WAIT));
            }
            return Ok(Next::Reply(Box::new(Ok(messages::exit(
                "the agent was stopped",
            )))));
        }
        let chunks = result.log_chunks;
        let attempt_id = req.attempt_id.clone();
        self.end_attempt(&attempt_id, result, Some(chunks));
        Ok(self.on_idle_after_done(&req.agent_id))
    }

    fn on_idle_after_done(&mut self, agent_id: &str) -> Next {
        if self.agents.contains_key(agent_id) {
            self.on_idle(agent_id)
        } else {
            Next::Reply(Box::new(Ok(messages::exit("no more work for this agent"))))
        }
    }

    /// Asks the agent running `attempt_id` to kill it.
    pub(crate) fn kill_attempt(&mut self, attempt_id: &str, reason: &str) {
        let Some(entry) = self.attempts.get(attempt_id) else {
            return;
        };
        let agent_id = entry.agent_id.clone();
        let lease = self.cfg.lease;
        let Some(agent) = self.agents.get_mut(&agent_id) else {
            return;
        };
        if !agent.assigned {
            // Not started yet: end it now and stop the agent.
            let _ = self.batch.try_send(crate::batch::BatchCmd::Kill {
                agent_id: agent_id.clone(),
            });
            self.end_attempt(attempt_id, messages::cancelled(reason), None);
            return;
        }
        agent.kill = Some(reason.to_string());
        if let Some(h) = agent.held.take() {
            let _ = h.send(Ok(messages::kill(reason.to_string(), lease)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_grant_what_they_should() {
        let t = TokenTable::new("client-secret".into());
        t.insert_attempt("a.1", "attempt-secret", "a");
        assert_eq!(t.grant("client-secret"), Some(Grant::Client));
        assert_eq!(
            t.grant("attempt-secret"),
            Some(Grant::Attempt {
                attempt_id: "a.1".into(),
                job_id: "a".into()
            })
        );
        assert_eq!(t.grant("nope"), None);
        assert!(t.check_attempt("a.1", "attempt-secret"));
        assert!(!t.check_attempt("a.1", "attempt-secreT"));
        t.remove_attempt("a.1");
        assert_eq!(t.grant("attempt-secret"), None);
        assert_eq!(new_token().len(), 32);
        assert_ne!(new_token(), new_token());
    }
}
