//! Messages to the driver and the replies it builds.

use std::time::Duration;

use toil_proto::v1::{
    AddJobsRequest, AddJobsResponse, AttemptResult, Cause, Continue, Exit, JobState, Kill,
    Relation, SynchronizeRequest, SynchronizeResponse, synchronize_response::Action,
};
use tokio::sync::oneshot;
use tonic::Status;

use super::Driver;
use crate::core::CoreError;

/// The answer to a `Synchronize` report.
pub type SyncReply = Result<SynchronizeResponse, Status>;

/// Who is asking, as established from their bearer token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// A client holding the workflow's client token.
    Client,
    /// A running job, by its attempt.
    Attempt {
        /// The attempt.
        attempt_id: String,
        /// Its job.
        job_id: String,
    },
}

/// A request to the driver.
pub enum Msg {
    /// An agent's report.
    Sync(Box<SynchronizeRequest>, oneshot::Sender<SyncReply>),
    /// Add jobs.
    AddJobs {
        /// Who asks.
        caller: Caller,
        /// The jobs.
        req: AddJobsRequest,
        /// Where to answer.
        reply: oneshot::Sender<Result<AddJobsResponse, Status>>,
    },
    /// Cancel one job.
    CancelJob {
        /// The job.
        job_id: String,
        /// Where to answer with the job's state.
        reply: oneshot::Sender<Result<JobState, Status>>,
    },
    /// Cancel the workflow.
    CancelWorkflow {
        /// Why.
        reason: String,
        /// Where to answer.
        reply: oneshot::Sender<()>,
    },
    /// Read something from the driver's state.
    Query(Box<dyn FnOnce(&Driver) + Send>),
    /// Keep the workflow open while a front end (the CWL runner) may add
    /// jobs (`true`), or let it end once every job has (`false`).
    HoldOpen(bool),
}

/// How long an agent may wait before its next report.
pub fn within(lease: Duration) -> Option<prost_types::Duration> {
    prost_types::Duration::try_from(lease / 3).ok()
}

/// "Carry on."
pub fn keep_going(lease: Duration) -> SynchronizeResponse {
    SynchronizeResponse {
        action: Some(Action::Continue(Continue {})),
        next_report_within: within(lease),
        result_recorded: false,
    }
}

/// "Exit."
pub fn exit(reason: &str) -> SynchronizeResponse {
    SynchronizeResponse {
        action: Some(Action::Exit(Exit {
            reason: reason.to_string(),
        })),
        next_report_within: None,
        result_recorded: false,
    }
}

/// "Kill your job."
pub fn kill(reason: String, lease: Duration) -> SynchronizeResponse {
    SynchronizeResponse {
        action: Some(Action::Kill(Kill { reason })),
        next_report_within: within(lease),
        result_recorded: false,
    }
}

/// An attempt whose agent is lost.
pub fn lost(message: &str) -> AttemptResult {
    AttemptResult::ended(Cause::agent_lost(message))
}

/// An attempt cancelled before it started.
pub fn cancelled(message: &str) -> AttemptResult {
    AttemptResult::ended(Cause::cancelled(message))
}

/// Maps core refusals to gRPC codes.
pub fn status(e: CoreError) -> Status {
    match &e {
        CoreError::UnknownJob(_) => Status::not_found(e.to_string()),
        CoreError::StaleAttempt { .. } | CoreError::WrongState(_) => {
            Status::failed_precondition(e.to_string())
        }
        CoreError::InvalidJobs(_) => Status::invalid_argument(e.to_string()),
    }
}

impl Driver {
    pub(crate) fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Sync(req, reply) => self.on_sync(*req, reply),
            Msg::AddJobs { caller, req, reply } => {
                let _ = reply.send(self.add_jobs(caller, req));
            }
            Msg::CancelJob { job_id, reply } => {
                let _ = reply.send(self.cancel_job(&job_id));
            }
            Msg::CancelWorkflow { reason, reply } => {
                for (j, n) in self.core.cancel_workflow(&reason) {
                    let id = toil_jobstore::layout::attempt_id(&self.core.job_id(j), n);
                    self.kill_attempt(&id, &reason);
                }
                let _ = reply.send(());
            }
            Msg::Query(f) => f(self),
            Msg::HoldOpen(held) => self.core.hold_open(held),
        }
    }

    fn add_jobs(&mut self, caller: Caller, req: AddJobsRequest) -> Result<AddJobsResponse, Status> {
        let relation = Relation::try_from(req.relation).unwrap_or(Relation::Unspecified);
        let ids = match (&caller, relation) {
            (Caller::Client, Relation::Root) => self.core.add_root_jobs(req).map_err(status)?,
            (Caller::Attempt { .. }, Relation::Root) => {
                return Err(Status::permission_denied(
                    "a job may only add children or follow-ons of itself (relation CHILD or FOLLOW_ON)",
                ));
            }
            (_, Relation::Child | Relation::FollowOn) => {
                let parent_id = match &caller {
                    Caller::Attempt { job_id, .. } => {
                        if !req.parent_job_id.is_empty() && &req.parent_job_id != job_id {
                            return Err(Status::permission_denied(format!(
                                "a job may only add jobs under itself ({job_id}), not under {}",
                                req.parent_job_id
                            )));
                        }
                        job_id.clone()
                    }
                    Caller::Client => req.parent_job_id.clone(),
                };
                let parent = self.core.lookup(&parent_id).ok_or_else(|| {
                    Status::not_found(format!("no job {parent_id:?} in this workflow"))
                })?;
                if let Caller::Attempt { attempt_id, .. } = &caller {
                    let current = self
                        .attempts
                        .get(attempt_id)
                        .is_some_and(|a| a.job == parent);
                    if !current {
                        return Err(Status::failed_precondition(
                            "this attempt has ended; its jobs can no longer be added",
                        ));
                    }
                }
                self.core.stage_jobs(parent, req).map_err(status)?
            }
            (_, Relation::Unspecified) => {
                return Err(Status::invalid_argument(
                    "relation is missing: ROOT, CHILD or FOLLOW_ON",
                ));
            }
        };
        Ok(AddJobsResponse { job_ids: ids })
    }

    fn cancel_job(&mut self, job_id: &str) -> Result<JobState, Status> {
        let j = self
            .core
            .lookup(job_id)
            .ok_or_else(|| Status::not_found(format!("no job {job_id:?} in this workflow")))?;
        if let Some(n) = self
            .core
            .cancel_job(j, "cancelled by a client")
            .map_err(status)?
        {
            let id = toil_jobstore::layout::attempt_id(job_id, n);
            self.kill_attempt(&id, "cancelled by a client");
        }
        Ok(self.core.state(j))
    }
}
