//! Talking to the leader: `Synchronize` with retries inside the lease.
//!
//! The agent keeps track of the last time the leader answered. Calls that
//! fail with a transport error are retried with back-off ([`LEADER_CONTACT`]); once the leader
//! has been silent for longer than the lease, the agent gives up (the
//! caller kills its job and exits), so no orphan outlives its leader.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use toil_jobstore::backoff::{Backoff, Budget};
use toil_proto::v1::agent_service_client::AgentServiceClient;
use toil_proto::v1::{SynchronizeRequest, SynchronizeResponse};
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::transport::{Target, pin_mismatch};

/// Default lease until the leader announces one.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// Waits between calls to a leader that does not answer: short, since a
/// leader that restarts is back within seconds, and with no budget of its
/// own: the lease (for reports) or the closing grace (for the log stream)
/// decides when to give up.
pub const LEADER_CONTACT: Backoff = Backoff::new(
    Duration::from_millis(100),
    Duration::from_secs(2),
    Budget::Unlimited,
);

/// Why a call to the leader failed for good.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The leader has not answered for longer than the lease.
    #[error("the leader at {address} has not answered for {silent:?} (lease {lease:?}); giving up")]
    LeaseExpired {
        /// The leader's address.
        address: String,
        /// How long it has been silent.
        silent: Duration,
        /// The lease.
        lease: Duration,
    },
    /// The leader refused the call; retrying will not help.
    #[error("the leader refused: {0}")]
    Refused(Status),
}

/// A connection to the leader plus the lease bookkeeping.
#[derive(Clone)]
pub struct Leader {
    address: String,
    client: AgentServiceClient<Channel>,
    state: Arc<Mutex<Contact>>,
    fixed_lease: Option<Duration>,
}

struct Contact {
    last_ok: Instant,
    lease: Duration,
}

impl Leader {
    /// Prepares a connection (connects on first use): `unix:PATH`, or
    /// `https://HOST:PORT` with the pinned certificate fingerprint `pin`.
    pub fn new(
        address: &str,
        pin: Option<&str>,
        fixed_lease: Option<Duration>,
    ) -> Result<Leader, String> {
        let channel = Target::parse(address, pin)?.channel(|e| {
            e.connect_timeout(Duration::from_secs(5))
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(20))
                .keep_alive_while_idle(true)
        })?;
        Ok(Leader {
            address: address.to_string(),
            client: AgentServiceClient::new(channel),
            state: Arc::new(Mutex::new(Contact {
                last_ok: Instant::now(),
                lease: fixed_lease.unwrap_or(DEFAULT_LEASE),
            })),
            fixed_lease,
        })
    }

    /// The raw client, for the log stream.
    pub fn client(&self) -> AgentServiceClient<Channel> {
        self.client.clone()
    }

    /// The address.
    pub fn address(&self) -> &str {
        &self.address
    }

    fn contact(&self) -> std::sync::MutexGuard<'_, Contact> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a successful exchange, and the lease it announced.
    pub fn heard(&self, next_report_within: Option<&prost_types::Duration>) {
        let mut c = self.contact();
        c.last_ok = Instant::now();
        if self.fixed_lease.is_none()
            && let Some(d) = next_report_within
            && let Ok(d) = Duration::try_from(*d)
            && !d.is_zero()
        {
            // The leader declares an agent lost after three missed reports.
            c.lease = d * 3;
        }
    }

    /// Time left before the lease runs out.
    pub fn lease_left(&self) -> Option<Duration> {
        let c = self.contact();
        c.lease.checked_sub(c.last_ok.elapsed())
    }

    /// Sends a report once, waiting at most `wait` for the answer.
    pub async fn sync_once(
        &self,
        req: SynchronizeRequest,
        wait: Duration,
    ) -> Result<SynchronizeResponse, Status> {
        let mut client = self.client.clone();
        let mut request = tonic::Request::new(req);
        request.set_timeout(wait);
        let resp = tokio::time::timeout(wait, client.synchronize(request))
            .await
            .map_err(|_| Status::deadline_exceeded("no answer from the leader"))??
            .into_inner();
        self.heard(resp.next_report_within.as_ref());
        Ok(resp)
    }

    /// Sends a report, retrying transport failures until the lease runs out.
    pub async fn sync(&self, req: SynchronizeRequest) -> Result<SynchronizeResponse, ClientError> {
        let mut delays = LEADER_CONTACT.delays();
        loop {
            let mut client = self.client.clone();
            let mut request = tonic::Request::new(req.clone());
            // Long enough for a held report plus slack.
            request.set_timeout(Duration::from_secs(60));
            match client.synchronize(request).await {
                Ok(resp) => {
                    let resp = resp.into_inner();
                    self.heard(resp.next_report_within.as_ref());
                    return Ok(resp);
                }
                Err(s) if retryable(&s) => {
                    let Some(left) = self.lease_left() else {
                        let c = self.contact();
                        return Err(ClientError::LeaseExpired {
                            address: self.address.clone(),
                            silent: c.last_ok.elapsed(),
                            lease: c.lease,
                        });
                    };
                    let wait = delays.next().unwrap_or(LEADER_CONTACT.max).min(left);
                    tracing::debug!(error = %s, ?wait, "leader unreachable; retrying");
                    tokio::time::sleep(wait).await;
                }
                Err(s) => return Err(refused(s)),
            }
        }
    }
}

/// A call that failed for good, with the reason spelled out when it is a
/// certificate that is not the pinned one (whose status says only
/// "transport error").
pub fn refused(s: Status) -> ClientError {
    match pin_mismatch(&s) {
        Some(m) => ClientError::Refused(Status::unavailable(m.to_string())),
        None => ClientError::Refused(s),
    }
}

/// Transport trouble and a leader that is starting or stopping are worth
/// retrying; refusals are not, and neither is a server that is not the
/// leader: a new leader never takes over an earlier leader's agents (it
/// settles their attempts when it starts), so waiting for the pinned
/// certificate to come back only keeps the job's resources held.
pub fn retryable(s: &Status) -> bool {
    if pin_mismatch(s).is_some() {
        return false;
    }
    matches!(
        s.code(),
        Code::Unavailable
            | Code::Unknown
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Aborted
    )
}
