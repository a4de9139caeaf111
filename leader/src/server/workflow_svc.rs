//! `toil.v1.WorkflowService`: what clients and running jobs call.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use toil_jobstore::layout;
use toil_proto::v1::workflow_event::Kind as EventKind;
use toil_proto::v1::workflow_service_server::WorkflowService;
use toil_proto::v1::*;
use tokio::sync::{broadcast, mpsc, oneshot};
use tonic::{Request, Response, Status};

use super::agent_svc::leader_gone;
use crate::driver::{Caller, Driver, Grant, Msg, TokenTable, job_proto, total_usage};
use crate::events::EventHub;
use crate::logs::LogHub;

/// The client-facing service.
pub struct WorkflowSvc {
    /// Where requests go.
    pub driver: mpsc::Sender<Msg>,
    /// Who may call.
    pub tokens: Arc<TokenTable>,
    /// Events for watchers.
    pub events: Arc<EventHub>,
    /// Logs for followers.
    pub logs: Arc<LogHub>,
    /// The workflow's id.
    pub workflow_id: String,
    /// The workflow's name.
    pub name: String,
    /// When it first started.
    pub started_at: prost_types::Timestamp,
    /// Where the client token is (`PATH on HOST`), for error messages.
    pub token_file: String,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

impl WorkflowSvc {
    fn caller<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
        let header = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                Status::unauthenticated(format!(
                    "missing bearer token: send `authorization: Bearer TOKEN` with the workflow's client token, which the leader wrote to {} (readable by its user alone; elsewhere pass it in TOIL_CLIENT_TOKEN), or TOIL_ATTEMPT_TOKEN inside a job",
                    self.token_file
                ))
            })?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .unwrap_or(header)
            .trim();
        match self.tokens.grant(token) {
            Some(Grant::Client) => Ok(Caller::Client),
            Some(Grant::Attempt { attempt_id, job_id }) => {
                Ok(Caller::Attempt { attempt_id, job_id })
            }
            None => Err(Status::unauthenticated(format!(
                "unknown token: this leader's client token is in {} (a restarted leader writes a new one; state/leader.json holds its SHA-256 as client_token_sha256, to check a token against)",
                self.token_file
            ))),
        }
    }

    fn client_only<T>(&self, req: &Request<T>) -> Result<(), Status> {
        match self.caller(req)? {
            Caller::Client => Ok(()),
            Caller::Attempt { .. } => Err(Status::permission_denied(
                "this call needs the workflow's client token, not a job's token",
            )),
        }
    }

    /// Refuses a job's token access to the data (logs, outputs) of a job
    /// outside its own subtree: itself and the jobs it added, at any depth.
    /// The client token sees every job.
    async fn check_data_scope(&self, caller: &Caller, target: &str) -> Result<(), Status> {
        let Caller::Attempt { job_id: own, .. } = caller else {
            return Ok(());
        };
        let (own_id, target_id) = (own.clone(), target.to_string());
        let allowed = self
            .query(move |d| {
                let c = d.core();
                match (c.lookup(&own_id), c.lookup(&target_id)) {
                    (Some(o), Some(t)) => Some(c.is_within(t, o)),
                    _ => None,
                }
            })
            .await?;
        match allowed {
            Some(true) => Ok(()),
            Some(false) => Err(Status::permission_denied(format!(
                "a job's token (job {own}) may read only its own job's logs and those of the jobs it added; {target} is neither: use the workflow's client token to read any job"
            ))),
            None => Err(Status::not_found(format!(
                "no job {target:?} in this workflow"
            ))),
        }
    }

    /// Runs `f` on the driver's state and returns its answer.
    async fn query<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Driver) -> T + Send + 'static,
    ) -> Result<T, Status> {
        let (tx, rx) = oneshot::channel();
        self.driver
            .send(Msg::Query(Box::new(move |d| {
                let _ = tx.send(f(d));
            })))
            .await
            .map_err(|_| leader_gone())?;
        rx.await.map_err(|_| leader_gone())
    }
}

#[tonic::async_trait]
impl WorkflowService for WorkflowSvc {
    async fn get_workflow(
        &self,
        request: Request<GetWorkflowRequest>,
    ) -> Result<Response<GetWorkflowResponse>, Status> {
        self.caller(&request)?;
        let (state, counts, epoch, usage) = self
            .query(|d| {
                let c = d.core();
                (c.workflow_state(), c.counts(), c.epoch(), total_usage(c))
            })
            .await?;
        Ok(Response::new(GetWorkflowResponse {
            workflow_id: self.workflow_id.clone(),
            name: self.name.clone(),
            state: state as i32,
            job_counts: counts
                .iter()
                .filter(|(_, n)| *n > 0)
                .map(|(s, n)| (s as i32, n))
                .collect(),
            started_at: Some(self.started_at),
            epoch,
            usage: Some(usage),
        }))
    }

    async fn add_jobs(
        &self,
        request: Request<AddJobsRequest>,
    ) -> Result<Response<AddJobsResponse>, Status> {
        let caller = self.caller(&request)?;
        let (tx, rx) = oneshot::channel();
        self.driver
            .send(Msg::AddJobs {
                caller,
                req: request.into_inner(),
                reply: tx,
            })
            .await
            .map_err(|_| leader_gone())?;
        rx.await.map_err(|_| leader_gone())?.map(Response::new)
    }

    async fn get_job(
        &self,
        request: Request<GetJobRequest>,
    ) -> Result<Response<GetJobResponse>, Status> {
        let own = own_job(&self.caller(&request)?);
        let id = request.into_inner().job_id;
        let job = self
            .query(move |d| {
                let c = d.core();
                let scope = Scope::of(c, own.as_deref());
                c.lookup(&id).map(|j| scope.redact(c, j, job_proto(c, j)))
            })
            .await?
            .ok_or_else(|| Status::not_found("no such job in this workflow"))?;
        Ok(Response::new(GetJobResponse { job: Some(job) }))
    }

    async fn list_jobs(
        &self,
        request: Request<ListJobsRequest>,
    ) -> Result<Response<ListJobsResponse>, Status> {
        let own = own_job(&self.caller(&request)?);
        let req = request.into_inner();
        let start: u32 = if req.page_token.is_empty() {
            0
        } else {
            req.page_token
                .parse()
                .map_err(|_| Status::invalid_argument("page_token is not one this leader issued"))?
        };
        let size = if req.page_size == 0 {
            1000
        } else {
            req.page_size.min(10_000)
        } as usize;
        let states = req.states;
        let (jobs, next) = self
            .query(move |d| {
                let c = d.core();
                let scope = Scope::of(c, own.as_deref());
                let mut jobs = Vec::new();
                let mut j = start;
                while (j as usize) < c.job_count() && jobs.len() < size {
                    if states.is_empty() || states.contains(&(c.state(j) as i32)) {
                        jobs.push(scope.redact(c, j, job_proto(c, j)));
                    }
                    j += 1;
                }
                let next = ((j as usize) < c.job_count()).then(|| j.to_string());
                (jobs, next)
            })
            .await?;
        Ok(Response::new(ListJobsResponse {
            jobs,
            next_page_token: next.unwrap_or_default(),
        }))
    }

    type WatchEventsStream = BoxStream<WatchEventsResponse>;

    async fn watch_events(
        &self,
        request: Request<WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        self.caller(&request)?;
        let after = request.into_inner().after_seq;
        let sub = self.events.subscribe(after);
        if after > 0 && after + 1 < sub.oldest {
            return Err(Status::out_of_range(format!(
                "events after {after} are no longer held; the oldest is {}",
                sub.oldest
            )));
        }
        let stream = async_stream(sub.backlog, sub.live);
        Ok(Response::new(Box::pin(stream)))
    }

    type FollowLogsStream = BoxStream<FollowLogsResponse>;

    async fn follow_logs(
        &self,
        request: Request<FollowLogsRequest>,
    ) -> Result<Response<Self::FollowLogsStream>, Status> {
        let caller = self.caller(&request)?;
        let req = request.into_inner();
        self.check_data_scope(&caller, &req.job_id).await?;
        let mut sub = self.events.subscribe(0);
        let job_id = req.job_id.clone();
        let mut attempts = self
            .query(move |d| {
                d.core()
                    .lookup(&job_id)
                    .map(|j| d.core().attempts(j).len() as u32)
            })
            .await?
            .ok_or_else(|| {
                Status::not_found(format!("no job {:?} in this workflow", req.job_id))
            })?;
        if attempts == 0 && req.follow {
            // Wait for the job to start.
            let Some(live) = sub.live.as_mut() else {
                return Err(Status::failed_precondition("the job never ran"));
            };
            loop {
                match live.recv().await {
                    Ok(WorkflowEvent {
                        kind: Some(EventKind::AttemptStarted(s)),
                        ..
                    }) if s.job_id == req.job_id => {
                        attempts = 1;
                        break;
                    }
                    // Ended before any agent took it (an unschedulable pod,
                    // say): its log is whatever was stored.
                    Ok(WorkflowEvent {
                        kind: Some(EventKind::AttemptEnded(e)),
                        ..
                    }) if e.job_id == req.job_id => {
                        attempts = 1;
                        break;
                    }
                    Ok(WorkflowEvent {
                        kind: Some(EventKind::WorkflowEnded(_)),
                        ..
                    })
                    | Err(broadcast::error::RecvError::Closed) => {
                        return Err(Status::failed_precondition("the job never ran"));
                    }
                    _ => {}
                }
            }
        }
        if attempts == 0 {
            return Err(Status::failed_precondition(format!(
                "job {} has not run yet",
                req.job_id
            )));
        }
        let n = if req.attempt == 0 {
            attempts
        } else {
            req.attempt
        };
        if n > attempts {
            return Err(Status::not_found(format!(
                "job {} has only {attempts} attempt(s)",
                req.job_id
            )));
        }
        let attempt_id = layout::attempt_id(&req.job_id, n);
        let start = self.logs.follow_start(&attempt_id, req.follow);
        let (persisted, buffered, live) = match start {
            Some(s) => (s.persisted, s.buffered, s.live),
            None => (u64::MAX, bytes::Bytes::new(), None),
        };
        let segments = self
            .logs
            .segments(&req.job_id, n, req.offset, persisted)
            .await
            .map_err(|e| Status::unavailable(format!("reading the log: {e}")))?;
        let (tx, rx) = mpsc::channel(64);
        let offset = req.offset;
        let logs = self.logs.clone();
        tokio::spawn(async move {
            // Segments are read one at a time as the follower takes them, so
            // a long log never sits whole in the leader's memory.
            let mut pos = offset;
            for seg in segments {
                let part = match logs.read_segment(&seg, pos, persisted).await {
                    Ok(Some(p)) => p,
                    Ok(None) => continue,
                    Err(e) => {
                        let _ = tx
                            .send(Err(Status::unavailable(format!("reading the log: {e}"))))
                            .await;
                        return;
                    }
                };
                let (at, data) = part;
                pos = at + data.len() as u64;
                if !send_pieces(&tx, &attempt_id, at, LogStream::Unspecified, data).await {
                    return;
                }
            }
            if persisted != u64::MAX && !buffered.is_empty() {
                let end = persisted + buffered.len() as u64;
                if end > pos {
                    let from = pos.saturating_sub(persisted) as usize;
                    let data = buffered.slice(from..);
                    let at = persisted + from as u64;
                    pos = end;
                    if !send_pieces(&tx, &attempt_id, at, LogStream::Unspecified, data).await {
                        return;
                    }
                }
            }
            let Some(mut live) = live else {
                return;
            };
            loop {
                match live.recv().await {
                    Ok(c) => {
                        let end = c.offset + c.data.len() as u64;
                        if end <= pos {
                            continue;
                        }
                        let from = pos.saturating_sub(c.offset) as usize;
                        let at = c.offset + from as u64;
                        pos = end;
                        if tx
                            .send(Ok(log_piece(
                                &attempt_id,
                                at,
                                c.stream,
                                c.data.slice(from..),
                            )))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let _ = tx
                            .send(Err(Status::resource_exhausted(format!(
                                "the follower fell behind; reconnect with offset {pos}"
                            ))))
                            .await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn cancel_job(
        &self,
        request: Request<CancelJobRequest>,
    ) -> Result<Response<CancelJobResponse>, Status> {
        self.client_only(&request)?;
        let (tx, rx) = oneshot::channel();
        self.driver
            .send(Msg::CancelJob {
                job_id: request.into_inner().job_id,
                reply: tx,
            })
            .await
            .map_err(|_| leader_gone())?;
        let state = rx.await.map_err(|_| leader_gone())??;
        Ok(Response::new(CancelJobResponse {
            state: state as i32,
        }))
    }

    async fn cancel_workflow(
        &self,
        request: Request<CancelWorkflowRequest>,
    ) -> Result<Response<CancelWorkflowResponse>, Status> {
        self.client_only(&request)?;
        let mut reason = request.into_inner().reason;
        if reason.is_empty() {
            reason = "cancelled by a client".into();
        }
        let (tx, rx) = oneshot::channel();
        self.driver
            .send(Msg::CancelWorkflow { reason, reply: tx })
            .await
            .map_err(|_| leader_gone())?;
        rx.await.map_err(|_| leader_gone())?;
        Ok(Response::new(CancelWorkflowResponse {}))
    }
}

/// The caller's own job, for a job's token.
fn own_job(caller: &Caller) -> Option<String> {
    match caller {
        Caller::Client => None,
        Caller::Attempt { job_id, .. } => Some(job_id.clone()),
    }
}

/// Which jobs' data a caller sees: every job for the client token; for a
/// job's token its own job and the jobs it added. Outside that, a job
/// still sees each job's id, state, resources and attempts (the shape of
/// the workflow, which it needs to wait on or reason about other jobs) but
/// not its outputs' stored files.
enum Scope {
    All,
    Under(Option<crate::core::JobIdx>),
}

impl Scope {
    fn of(core: &crate::core::Core, own: Option<&str>) -> Scope {
        match own {
            None => Scope::All,
            Some(id) => Scope::Under(core.lookup(id)),
        }
    }

    fn redact(&self, core: &crate::core::Core, j: crate::core::JobIdx, mut job: Job) -> Job {
        let visible = match self {
            Scope::All => true,
            Scope::Under(root) => root.is_some_and(|r| core.is_within(j, r)),
        };
        if !visible {
            job.outputs.clear();
        }
        job
    }
}

/// Largest `data` in one FollowLogsResponse: well under the 4 MiB a gRPC
/// client takes by default, whatever size the stored segments are.
const FOLLOW_PIECE: usize = 1 << 20;

/// Sends `data` in pieces of at most `FOLLOW_PIECE`; false once the
/// follower has gone.
async fn send_pieces(
    tx: &mpsc::Sender<Result<FollowLogsResponse, Status>>,
    attempt_id: &str,
    offset: u64,
    stream: LogStream,
    data: bytes::Bytes,
) -> bool {
    let mut at = 0;
    while at < data.len() {
        let end = (at + FOLLOW_PIECE).min(data.len());
        let piece = log_piece(attempt_id, offset + at as u64, stream, data.slice(at..end));
        if tx.send(Ok(piece)).await.is_err() {
            return false;
        }
        at = end;
    }
    true
}

fn log_piece(
    attempt_id: &str,
    offset: u64,
    stream: LogStream,
    data: bytes::Bytes,
) -> FollowLogsResponse {
    FollowLogsResponse {
        offset,
        stream: stream as i32,
        data: data.to_vec(),
        attempt_id: attempt_id.to_string(),
    }
}

/// Backlog first, then live events, ending after WorkflowEnded.
fn async_stream(
    backlog: Vec<WorkflowEvent>,
    live: Option<broadcast::Receiver<WorkflowEvent>>,
) -> impl Stream<Item = Result<WatchEventsResponse, Status>> + Send {
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(async move {
        let mut last = 0;
        for e in backlog {
            last = e.seq;
            let end = matches!(e.kind, Some(EventKind::WorkflowEnded(_)));
            if tx
                .send(Ok(WatchEventsResponse { event: Some(e) }))
                .await
                .is_err()
                || end
            {
                return;
            }
        }
        let Some(mut live) = live else {
            return;
        };
        loop {
            match live.recv().await {
                Ok(e) if e.seq <= last => {}
                Ok(e) => {
                    last = e.seq;
                    let end = matches!(e.kind, Some(EventKind::WorkflowEnded(_)));
                    if tx
                        .send(Ok(WatchEventsResponse { event: Some(e) }))
                        .await
                        .is_err()
                        || end
                    {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let _ = tx
                        .send(Err(Status::resource_exhausted(format!(
                            "the watcher fell behind; resume with after_seq {last}"
                        ))))
                        .await;
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
