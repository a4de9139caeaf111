//! `toil.v1.AgentService`: agents' reports go to the driver; log chunks go
//! straight to the log hub (checked against the attempt's token, and
//! refused when numbered past the hub's window).

use std::sync::Arc;

use toil_proto::v1::agent_service_server::AgentService;
use toil_proto::v1::{
    StreamLogsRequest, StreamLogsResponse, SynchronizeRequest, SynchronizeResponse,
};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::driver::{Msg, TokenTable};
use crate::logs::LogHub;

/// The agent-facing service.
pub struct AgentSvc {
    /// Where reports go.
    pub driver: mpsc::Sender<Msg>,
    /// Attempt tokens, for log streams.
    pub tokens: Arc<TokenTable>,
    /// Where log chunks go.
    pub logs: Arc<LogHub>,
}

fn shutting_down() -> SynchronizeResponse {
    crate::driver::exit_response("the leader is shutting down")
}

pub(crate) fn leader_gone() -> Status {
    Status::unavailable("the leader is shutting down")
}

#[tonic::async_trait]
impl AgentService for AgentSvc {
    async fn synchronize(
        &self,
        request: Request<SynchronizeRequest>,
    ) -> Result<Response<SynchronizeResponse>, Status> {
        let (tx, rx) = oneshot::channel();
        // Once the driver has stopped (the workflow is over or the leader is
        // shutting down), agents are told to exit rather than left retrying
        // until their lease runs out. An agent's result is already in the
        // job store, so nothing is lost by not recording it here.
        if self
            .driver
            .send(Msg::Sync(Box::new(request.into_inner()), tx))
            .await
            .is_err()
        {
            return Ok(Response::new(shutting_down()));
        }
        match rx.await {
            Ok(r) => r.map(Response::new),
            Err(_) => Ok(Response::new(shutting_down())),
        }
    }

    type StreamLogsStream = ReceiverStream<Result<StreamLogsResponse, Status>>;

    async fn stream_logs(
        &self,
        request: Request<Streaming<StreamLogsRequest>>,
    ) -> Result<Response<Self::StreamLogsStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(64);
        let tokens = self.tokens.clone();
        let logs = self.logs.clone();
        tokio::spawn(async move {
            // The first message authenticates the stream; it stays valid
            // after the attempt ends so late chunks are still kept.
            let mut bound: Option<(String, String)> = None;
            while let Some(msg) = inbound.next().await {
                let msg = match msg {
                    Ok(m) => m,
                    Err(_) => break,
                };
                match &bound {
                    None => {
                        if !tokens.check_attempt(&msg.attempt_id, &msg.attempt_token) {
                            let _ = tx
                                .send(Err(Status::permission_denied(format!(
                                    "wrong token for attempt {:?}, or the attempt is not running",
                                    msg.attempt_id
                                ))))
                                .await;
                            return;
                        }
                        bound = Some((msg.attempt_id.clone(), msg.attempt_token.clone()));
                    }
                    Some((id, token)) => {
                        if *id != msg.attempt_id || *token != msg.attempt_token {
                            let _ = tx
                                .send(Err(Status::permission_denied(
                                    "every message of a log stream must carry the same attempt and token",
                                )))
                                .await;
                            return;
                        }
                    }
                }
                let Some(chunk) = msg.chunk else {
                    continue;
                };
                let pushed = match logs.push(&msg.attempt_id, chunk) {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::warn!(attempt = %msg.attempt_id, error = %e, "refused a log chunk");
                        let _ = tx.send(Err(Status::from(e))).await;
                        return;
                    }
                };
                if tx
                    .send(Ok(StreamLogsResponse {
                        received_through: pushed.through,
                    }))
                    .await
                    .is_err()
                {
                    return;
                }
                // Read no more while the job store is behind: the agent
                // keeps what it has not sent in its spool.
                if pushed.backlog >= crate::logs::BACKLOG_HIGH {
                    logs.wait_for_room(&msg.attempt_id).await;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
