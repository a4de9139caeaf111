//! The tasks of a run, wired by channels, and the order they stop in.
//!
//! Beside the driver (which owns the scheduler core) run six tasks: the
//! persister (journal and lease), the log flusher, the batch system, the
//! gRPC server, the terminal display and the signal handler. None shares
//! state with another except through a channel. They stop agents first,
//! then the server, then the logs, then the journal, so that nothing runs
//! or reports after the last state is written.
//!
//! Every task is supervised ([`Supervisor`]): one that panics, fails, or
//! ends before the run does stops the run with that cause, rather than
//! leaving a workflow that shows jobs running forever. Shutdown has one
//! bound ([`SHUTDOWN_BOUND`]): what has not stopped by then is abandoned as
//! after a crash, which the journal and `--restart` are built for.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use toil_jobstore::{Condition, JobStore, layout};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::private::PrivateDir;
use super::records::{LeaderInfo, Meta, exit, fail, token_verifier};
use super::resume::Prepared;
use crate::batch::{self, BatchCmd, BatchEvent};
use crate::config::{Batch, RunConfig};
use crate::driver::{Driver, DriverConfig, Msg, Outcome, Progress, TokenTable};
use crate::events::EventHub;
use crate::logs::LogHub;
use crate::persist::PersistError;
use crate::server::{AgentSvc, LeaderCert, Listeners, WorkflowSvc};

/// The whole shutdown, from the driver's end to the journal's last write,
/// takes at most this long. What has not stopped by then is abandoned as
/// after a crash: the journal is crash-safe, agents stop their jobs when
/// they lose the leader, and Jobs left behind expire or are removed by
/// `toil-leader cleanup-jobs`.
const SHUTDOWN_BOUND: Duration = Duration::from_secs(45);
/// Of which the batch system gets this long to stop its agents (and, on
/// Kubernetes, delete their Jobs).
const BATCH_SHUTDOWN: Duration = Duration::from_secs(30);

/// Why the run stopped before the workflow ended, as an exit code and a
/// message: set by the signal handler or a failing persister, read once at
/// the end. A persister failure overrides a signal (the state may not be
/// stored, which matters more than why the run was stopping).
type StopReason = Arc<Mutex<Option<(u8, String)>>>;

/// A run whose tasks are started and whose driver is about to run.
pub(super) struct Running {
    driver: Driver,
    driver_rx: mpsc::Receiver<Msg>,
    batch_events: mpsc::Receiver<BatchEvent>,
    /// Fires on a signal or a persister failure; ends the driver early.
    stop: CancellationToken,
    stop_reason: StopReason,
    /// The job logs, which the summary reads after the tasks stop.
    pub(super) logs: Arc<LogHub>,
    /// The workflow's events, for a front end.
    pub(super) events: Arc<EventHub>,
    tasks: Tasks,
}

/// The tasks beside the driver, with what it takes to stop each.
struct Tasks {
    supervisor: Supervisor,
    batch_tx: mpsc::Sender<BatchCmd>,
    batch: Watched<()>,
    /// What to tell the user if the batch system cannot stop in time.
    leftovers: String,
    server_stop: CancellationToken,
    server: Watched<Result<(), tonic::transport::Error>>,
    /// The web view (`None` with `--webUI off`); it stops with the server.
    web: Option<Watched<Result<(), String>>>,
    flush_stop: CancellationToken,
    flusher: Watched<()>,
    /// Dropped at shutdown: the driver's inbox closes with it.
    driver_tx: mpsc::Sender<Msg>,
    display: Watched<()>,
    persist: Watched<Result<(), PersistError>>,
    /// The client token and the socket, removed at the end.
    private: PrivateDir,
}

/// Watches the run's tasks: the first one to fail stops the run and names
/// itself as the cause.
#[derive(Clone)]
struct Supervisor {
    /// The run's stop: ends the driver early.
    stop: CancellationToken,
    reason: StopReason,
    /// Fires when the orderly shutdown begins; from then on a task that
    /// ends is doing what it was told.
    shutting_down: CancellationToken,
}

/// A supervised task: its end (`None` if it panicked or was abandoned),
/// and a handle to abandon it.
struct Watched<T> {
    handle: JoinHandle<Option<T>>,
    abort: AbortHandle,
}

/// How a supervised task is judged when it ends.
#[derive(Clone, Copy)]
enum EarlyEnd {
    /// Ending before the shutdown is a failure (a server, a batch system).
    Fails,
    /// It ends by itself when its inputs close (the persister, the
    /// display).
    Allowed,
}

impl Supervisor {
    /// Spawns `fut` as the task called `name`. If it panics, if `failed`
    /// finds an error in what it returned, or (per `early`) if it ends
    /// before the run stops, the run stops with that cause.
    fn spawn<T, F>(
        &self,
        name: &'static str,
        early: EarlyEnd,
        failed: fn(&T) -> Option<String>,
        fut: F,
    ) -> Watched<T>
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let inner = tokio::spawn(fut);
        let abort = inner.abort_handle();
        let sup = self.clone();
        let handle = tokio::spawn(async move {
            let ended = match inner.await {
                Ok(v) => v,
                Err(e) if e.is_panic() => {
                    sup.fail(format!(
                        "internal error: the {name} task panicked ({})",
                        panic_text(e.into_panic())
                    ));
                    return None;
                }
                Err(_) => return None,
            };
            if let Some(why) = failed(&ended) {
                sup.fail(format!("the {name} failed: {why}"));
            } else if matches!(early, EarlyEnd::Fails)
                && !sup.shutting_down.is_cancelled()
                && !sup.stop.is_cancelled()
            {
                sup.fail(format!(
                    "internal error: the {name} stopped while the workflow was running"
                ));
            }
            Some(ended)
        });
        Watched { handle, abort }
    }

    /// Stops the run with `cause`, unless it is already stopping for
    /// another reason (which is then the one reported).
    fn fail(&self, cause: String) {
        {
            let mut r = self.reason.lock().unwrap_or_else(|p| p.into_inner());
            if r.is_none() {
                *r = Some((
                    exit::FAILED,
                    format!("{cause}; stopped the run (resume with --restart)"),
                ));
            }
        }
        self.stop.cancel();
    }
}

/// The message of a panic's payload.
fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_string())
}

/// Waits for `task` until `deadline`, and abandons it then: `None` if it
/// was abandoned, else its end (`None` if it panicked).
async fn finish<T>(task: &mut Watched<T>, deadline: Instant) -> Option<Option<T>> {
    match tokio::time::timeout_at(deadline, &mut task.handle).await {
        Ok(Ok(v)) => Some(v),
        Ok(Err(_)) => Some(None),
        Err(_) => {
            task.abort.abort();
            task.handle.abort();
            None
        }
    }
}

/// How the run stopped.
pub(super) struct Stopped {
    /// The driver's end: the final state and the core.
    pub(super) outcome: Outcome,
    /// Why it stopped early, if it did (exit code, message).
    pub(super) reason: Option<(u8, String)>,
    /// The persister's end: an error, or `None` (it panicked or did not
    /// finish within the shutdown bound), means the last state may not be
    /// stored.
    pub(super) persisted: Option<Result<(), PersistError>>,
}

/// Binds the server, tells clients where it is (`leader.json`), and starts
/// every task around a driver for `prepared`.
pub(super) async fn start(
    cfg: &RunConfig,
    store: &JobStore,
    meta: &Meta,
    host: &str,
    cluster: Option<batch::kubernetes::Cluster>,
    prepared: Prepared,
) -> anyhow::Result<Running> {
    let Prepared {
        core,
        persister,
        durable,
        epoch,
    } = prepared;
    let listener = TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("listening on {}", cfg.listen))?;
    let bound = listener.local_addr()?;
    // The web view's port, taken now so that a bad --webUI stops the run
    // before anything is announced.
    let web_listener = match &cfg.web_ui {
        Some(b) => Some((
            b.clone(),
            crate::web::bind(b)
                .await
                .map_err(|e| fail(exit::BAD_INPUT, e))?,
        )),
        None => None,
    };
    let address = advertised(cfg, bound);
    // What only this machine's user may see: the client token, and the
    // socket local agents and clients use instead of TCP.
    let private = PrivateDir::create(&cfg.state_dir, &meta.workflow_id)
        .map_err(|e| fail(exit::BAD_INPUT, e))?;
    let unix = private
        .bind_socket()
        .map_err(|e| fail(exit::BAD_INPUT, e))?;
    let socket = format!("unix:{}", private.socket_path().display());
    let mut names = vec![url_host(&address), host.to_string()];
    if !bound.ip().is_unspecified() {
        names.push(bound.ip().to_string());
    }
    let cert = LeaderCert::generate(&meta.workflow_id, &names)?;
    let tokens = Arc::new(TokenTable::new(crate::driver::new_token()));
    let token_file = private
        .write_token(tokens.client_token())
        .map_err(|e| fail(exit::FAILED, e))?;
    let info = LeaderInfo {
        address: grpc_target(&address),
        url: address.clone(),
        cert_pem: cert.pem.clone(),
        cert_sha256: cert.pin.to_string(),
        tls_server_name: toil_agent::transport::TLS_SERVER_NAME.to_string(),
        socket: socket.clone(),
        token_file: token_file.display().to_string(),
        client_token_sha256: token_verifier(tokens.client_token()),
        pid: std::process::id(),
        host: host.to_string(),
        epoch,
    };
    store
        .put_bytes(
            layout::LEADER_KEY,
            Bytes::from(serde_json::to_vec_pretty(&info)?),
            Condition::Always,
        )
        .await?;
    // Local agents and their jobs use the socket, unless told to dial an
    // address (`--leaderAddress`); pods dial the advertised address.
    let agent_address = match (&cfg.batch, &cfg.advertise) {
        (Batch::Local(_), None) => socket.clone(),
        _ => address.clone(),
    };
    let capacity = match &cluster {
        Some(c) => c.capacity(&cfg.capacity),
        None => cfg.capacity.clone(),
    };

    let stop = CancellationToken::new();
    let stop_reason: StopReason = Arc::new(Mutex::new(None));
    let (echo_tx, echo_rx) = mpsc::channel(4096);
    let logs = LogHub::with_max_bytes_per_attempt(
        store.clone(),
        cfg.real_time_logging.then_some(echo_tx),
        cfg.max_log_bytes_per_attempt,
    );
    let events = Arc::new(EventHub::new());
    let metrics = Arc::new(
        crate::metrics::Metrics::new()
            .with_job_store(store)
            .with_logs(logs.bytes())
            .with_kubernetes(cluster.as_ref().map(|c| c.api_requests())),
    );
    let (progress_tx, progress_rx) = watch::channel(Progress::default());
    let (driver_tx, driver_rx) = mpsc::channel(1024);
    let (persist_tx, persist_rx) = mpsc::channel(256);
    let (batch_tx, batch_rx) = mpsc::channel(4096);
    let (batch_ev_tx, batch_events) = mpsc::channel(4096);

    let supervisor = Supervisor {
        stop: stop.clone(),
        reason: stop_reason.clone(),
        shutting_down: CancellationToken::new(),
    };
    let persist = {
        let stop = stop.clone();
        let reason = stop_reason.clone();
        // Its own errors set the reason with their exit code (a fenced
        // leader exits 3); the supervisor catches a panic.
        supervisor.spawn("journal writer", EarlyEnd::Allowed, |_| None, async move {
            let r = persister.run(persist_rx).await;
            if let Err(e) = &r {
                let code = if matches!(e, PersistError::Fenced { .. }) {
                    exit::CONFLICT
                } else {
                    exit::FAILED
                };
                *reason.lock().unwrap_or_else(|p| p.into_inner()) = Some((code, e.to_string()));
                stop.cancel();
            }
            r
        })
    };
    let flush_stop = CancellationToken::new();
    let flusher = supervisor.spawn(
        "log writer",
        EarlyEnd::Fails,
        |_| None,
        logs.clone().run_flusher(flush_stop.clone()),
    );
    let leftovers = match &cfg.batch {
        Batch::Kubernetes(k) => format!(
            "some of its Kubernetes Jobs may remain; they expire by themselves after --kubernetesJobTtl, or remove them with `toil-leader cleanup-jobs --owner {} --workflow {}`",
            k.owner, meta.workflow_id
        ),
        Batch::Local(_) => "its agents stop their jobs when they lose the leader".to_string(),
    };
    // What agents learn from the leader about the job store: the account
    // that owns its bucket, so that they check it without asking STS.
    let store_env: Vec<(String, String)> = store
        .bucket_owner()
        .map(|o| {
            (
                toil_jobstore::s3::BUCKET_OWNER_ENV.to_string(),
                o.to_string(),
            )
        })
        .into_iter()
        .collect();
    let server_stop = CancellationToken::new();
    // Agent connections that arrive through the API-server tunnel.
    let (tunnel_tx, tunnel_rx) = mpsc::channel(256);
    let batch = match &cfg.batch {
        Batch::Local(local) => {
            let local = batch::local::LocalConfig {
                leader_address: agent_address.clone(),
                leader_cert_sha256: cert.pin.to_string(),
                env: local.env.iter().cloned().chain(store_env).collect(),
                ..local.clone()
            };
            supervisor.spawn(
                "local batch system",
                EarlyEnd::Fails,
                |_| None,
                batch::local::run(local, batch_rx, batch_ev_tx),
            )
        }
        Batch::Kubernetes(_) => {
            let Some(mut cluster) = cluster else {
                bail!("the Kubernetes connection was lost before the batch system started");
            };
            cluster.cfg.env.extend(store_env);
            // Every agent pins this leader's certificate. The fingerprint
            // is not a secret: it goes in the Job like the address.
            cluster.cfg.env.push((
                toil_agent::transport::PIN_ENV.to_string(),
                cert.pin.to_string(),
            ));
            crate::say!(
                "kubernetes: {} · workflow id {} (Jobs labelled toil.io/workflow={})",
                cluster.describe(),
                meta.workflow_id,
                meta.workflow_id
            );
            let forced_direct = cluster.cfg.agent_connection
                == batch::kubernetes::settings::AgentConnection::Direct;
            if forced_direct && url_is_loopback(&address) && !cluster.server_is_loopback() {
                crate::say!(
                    "warning: agents will dial the leader at {address}, which pods on a real cluster cannot reach; set --leaderAddress to an address they can, leave --agentConnection at auto (a tunnel over the API server when pods cannot reach the leader), or run the leader in the cluster (see docs/kubernetes.md)"
                );
            }
            let naming =
                batch::kubernetes::names::Naming::new(&cluster.cfg.owner, &meta.workflow_id, epoch);
            let in_pod = cluster.cfg.leader_pod_ip.is_some();
            let pin = cert.pin.to_string();
            let direct = address.clone();
            let workflow_id = meta.workflow_id.clone();
            let sup = supervisor.clone();
            let tunnel_tx = tunnel_tx.clone();
            supervisor.spawn(
                "Kubernetes batch system",
                EarlyEnd::Fails,
                |_| None,
                async move {
                    // Chosen with the gRPC server already serving: the
                    // relay's probe needs a leader that answers.
                    let path = match batch::kubernetes::tunnel::choose(
                        &cluster, &naming, &direct, in_pod, &pin,
                    )
                    .await
                    {
                        Ok(p) => p,
                        Err(e) => {
                            sup.fail(e);
                            return;
                        }
                    };
                    crate::say!("{}", path.line);
                    let id = batch::kubernetes::Identity {
                        workflow_id,
                        epoch,
                        leader_address: path.address.clone(),
                    };
                    let keeper_stop = CancellationToken::new();
                    let keeper = path
                        .relay
                        .map(|r| tokio::spawn(r.run(tunnel_tx, keeper_stop.clone())));
                    batch::kubernetes::run(cluster, id, batch_rx, batch_ev_tx, keeper_stop.clone())
                        .await;
                    keeper_stop.cancel();
                    if let Some(k) = keeper {
                        let _ = k.await;
                    }
                },
            )
        }
    };
    let server = supervisor.spawn(
        "gRPC server",
        EarlyEnd::Fails,
        |r: &Result<(), tonic::transport::Error>| r.as_ref().err().map(|e| format!("{e:#}")),
        crate::server::serve(
            Listeners {
                tcp: listener,
                unix: Some(unix),
                tunnel: Some(tunnel_rx),
            },
            cert.server_config.clone(),
            AgentSvc {
                driver: driver_tx.clone(),
                tokens: tokens.clone(),
                logs: logs.clone(),
            },
            WorkflowSvc {
                driver: driver_tx.clone(),
                tokens: tokens.clone(),
                events: events.clone(),
                logs: logs.clone(),
                workflow_id: meta.workflow_id.clone(),
                name: meta.name.clone(),
                started_at: prost_types::Timestamp {
                    seconds: meta.created_ms / 1000,
                    nanos: 0,
                },
                token_file: format!("{} on {host}", token_file.display()),
            },
            server_stop.clone(),
        ),
    );
    let web_stop = server_stop.child_token();
    let web = match web_listener {
        None => None,
        Some((b, l)) => {
            let state = Arc::new(crate::web::WebState {
                driver: driver_tx.clone(),
                events: events.clone(),
                logs: logs.clone(),
                workflow: WorkflowSvc {
                    driver: driver_tx.clone(),
                    tokens: tokens.clone(),
                    events: events.clone(),
                    logs: logs.clone(),
                    workflow_id: meta.workflow_id.clone(),
                    name: meta.name.clone(),
                    started_at: prost_types::Timestamp {
                        seconds: meta.created_ms / 1000,
                        nanos: 0,
                    },
                    token_file: format!("{} on {host}", token_file.display()),
                },
                metrics: metrics.clone(),
                tokens: tokens.clone(),
                web_token: cfg
                    .web_token
                    .clone()
                    .unwrap_or_else(crate::driver::new_token),
                workflow_id: meta.workflow_id.clone(),
                name: meta.name.clone(),
                started_ms: meta.created_ms,
                bound: l.local_addr()?,
                tls: b.tls,
                url_file: format!("{} on {host}", private.web_url_path().display()),
            });
            let url = state.url(host);
            private
                .write_web_url(&url)
                .map_err(|e| fail(exit::FAILED, e))?;
            let note = if b.tls {
                format!(
                    " (HTTPS with the leader's own certificate, SHA-256 {}: the browser will ask you to trust it)",
                    cert.pin
                )
            } else {
                String::new()
            };
            crate::say!("web view: {url}{note}");
            Some(supervisor.spawn(
                "web view",
                EarlyEnd::Fails,
                |r: &Result<(), String>| r.clone().err(),
                crate::web::serve(l, state, cert.server_config.clone(), web_stop.clone()),
            ))
        }
    };
    // It ends when the driver drops its progress channel, which may come
    // just before the shutdown begins.
    let display = supervisor.spawn(
        "terminal display",
        EarlyEnd::Allowed,
        |_| None,
        crate::progress::run(meta.name.clone(), progress_rx, echo_rx, stop.clone()),
    );
    spawn_signal_handler(stop.clone(), stop_reason.clone());
    crate::say!(
        "workflow {} ({} jobs) · job store {} · leader {address} (TLS, certificate SHA-256 {}) and {socket} · client token in {}",
        meta.name,
        core.job_count(),
        cfg.locator,
        cert.pin,
        token_file.display()
    );

    let events_for_front = events.clone();
    let driver = Driver::new(
        core,
        DriverConfig {
            lease: cfg.agent_lease,
            hold: (cfg.agent_lease / 6).max(Duration::from_millis(500)),
            reuse_agents: cfg.reuse_agents,
            job_store: cfg.locator.to_string(),
            workflow_address: agent_address,
            leader_cert_pem: cert.pem.clone(),
            leader_cert_sha256: cert.pin.to_string(),
            capacity,
            window: 64,
        },
        tokens,
        batch_tx.clone(),
        persist_tx,
        logs.clone(),
        events,
        progress_tx,
        durable,
    )
    .with_metrics(metrics);
    Ok(Running {
        driver,
        driver_rx,
        batch_events,
        stop,
        stop_reason,
        logs,
        events: events_for_front,
        tasks: Tasks {
            supervisor,
            batch_tx,
            batch,
            leftovers,
            server_stop,
            server,
            web,
            flush_stop,
            flusher,
            driver_tx,
            display,
            persist,
            private,
        },
    })
}

impl Running {
    /// A sender to the driver's inbox, for a front end.
    pub(super) fn driver_sender(&self) -> mpsc::Sender<Msg> {
        self.tasks.driver_tx.clone()
    }

    /// Runs the driver until the workflow ends or the run is stopped, then
    /// stops every task in order.
    pub(super) async fn run(self) -> Stopped {
        let Running {
            driver,
            driver_rx,
            batch_events,
            stop,
            stop_reason,
            logs: _,
            events: _,
            tasks: t,
        } = self;
        let mut t = t;
        let outcome = driver.run(driver_rx, batch_events, stop.clone()).await;
        t.supervisor.shutting_down.cancel();
        let began = Instant::now();
        let bound = began + SHUTDOWN_BOUND;

        // Agents first, so none runs on after the journal's last entry.
        let (done_tx, done_rx) = oneshot::channel();
        let agents_stopped = tokio::time::timeout_at(began + BATCH_SHUTDOWN, async {
            let _ = t.batch_tx.send(BatchCmd::Shutdown(done_tx)).await;
            let _ = done_rx.await;
        })
        .await
        .is_ok();
        if finish(&mut t.batch, began + BATCH_SHUTDOWN).await.is_none() || !agents_stopped {
            crate::say!(
                "toil-leader: the batch system did not stop within {} s; {}",
                BATCH_SHUTDOWN.as_secs(),
                t.leftovers
            );
        }
        t.server_stop.cancel();
        if finish(&mut t.server, bound).await.is_none() {
            tracing::warn!("the gRPC server did not close its connections in time");
        }
        if let Some(w) = t.web.as_mut() {
            let _ = finish(w, bound).await;
        }
        t.flush_stop.cancel();
        if finish(&mut t.flusher, bound).await.is_none() {
            crate::say!(
                "toil-leader: the last job logs were not all stored within the shutdown bound"
            );
        }
        drop(t.driver_tx);
        stop.cancel();
        let _ = finish(&mut t.display, bound).await;
        let persisted = finish(&mut t.persist, bound).await.flatten();
        t.private.remove();
        let reason = stop_reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        Stopped {
            outcome,
            reason,
            persisted,
        }
    }
}

/// The address agents and clients dial: `--leaderAddress`, else the pod's
/// IP on Kubernetes, else the address bound.
fn advertised(cfg: &RunConfig, local: SocketAddr) -> String {
    let pod_ip = match &cfg.batch {
        Batch::Kubernetes(k) => k.leader_pod_ip.clone(),
        Batch::Local(_) => None,
    };
    match (&cfg.advertise, pod_ip) {
        (Some(a), _) => a.clone(),
        (None, Some(ip)) => format!("https://{ip}:{}", local.port()),
        (None, None) => format!("https://{local}"),
    }
}

/// The host of an advertised URL (`https://HOST:PORT`, `[V6]:PORT`).
fn url_host(url: &str) -> String {
    let rest = grpc_target(url);
    match rest.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or("").to_string(),
        None => rest
            .rsplit_once(':')
            .map_or(rest.as_str(), |(h, _)| h)
            .to_string(),
    }
}

/// True if `url` (`https://HOST:PORT`) names a loopback host.
fn url_is_loopback(url: &str) -> bool {
    let host = url
        .split("://")
        .nth(1)
        .unwrap_or(url)
        .split(['/', ':'])
        .next()
        .unwrap_or("");
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Turns the first SIGINT or SIGTERM into a clean stop with exit code 130,
/// and a second one into an immediate exit with 130.
fn spawn_signal_handler(stop: CancellationToken, reason: StopReason) {
    tokio::spawn(async move {
        let what = tokio::select! {
            s = toil_agent::signals::stop_signal() => match s {
                Ok(s) => s.describe(),
                // No handlers: SIGINT and SIGTERM keep ending the process.
                Err(_) => return,
            },
            _ = stop.cancelled() => return,
        };
        {
            let mut r = reason.lock().unwrap_or_else(|p| p.into_inner());
            if r.is_none() {
                *r = Some((exit::INTERRUPTED, what.to_string()));
            }
        }
        stop.cancel();
        // A second one: the user will not wait for the clean stop. What was
        // journaled is kept, as after a crash; agents stop their jobs when
        // they lose the leader.
        if toil_agent::signals::stop_signal().await.is_ok() {
            crate::say!(
                "second interrupt: exiting now, without waiting for the running jobs to stop; resume with --restart"
            );
            std::process::exit(i32::from(exit::INTERRUPTED));
        }
    });
}

/// `HOST:PORT` from an advertised URL (`https://HOST:PORT`).
fn grpc_target(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.trim_end_matches('/').to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn supervisor() -> Supervisor {
        Supervisor {
            stop: CancellationToken::new(),
            reason: Arc::new(Mutex::new(None)),
            shutting_down: CancellationToken::new(),
        }
    }

    fn reason(s: &Supervisor) -> Option<(u8, String)> {
        s.reason.lock().unwrap().clone()
    }

    #[tokio::test]
    async fn a_task_that_panics_stops_the_run_with_its_message() {
        let s = supervisor();
        let mut w = s.spawn("batch system", EarlyEnd::Fails, |_| None, async {
            panic!("index out of range");
        });
        assert_eq!(
            finish(&mut w, Instant::now() + Duration::from_secs(5)).await,
            Some(None)
        );
        assert!(s.stop.is_cancelled());
        let (code, msg) = reason(&s).unwrap();
        assert_eq!(code, exit::FAILED);
        assert!(
            msg.contains("the batch system task panicked (index out of range)")
                && msg.contains("--restart"),
            "{msg}"
        );
    }

    #[tokio::test]
    async fn a_task_that_fails_or_ends_early_stops_the_run_and_the_first_cause_is_kept() {
        let s = supervisor();
        let mut w = s.spawn(
            "gRPC server",
            EarlyEnd::Fails,
            |r: &Result<(), String>| r.clone().err(),
            async { Err::<(), _>("address in use".to_string()) },
        );
        finish(&mut w, Instant::now() + Duration::from_secs(5)).await;
        assert!(s.stop.is_cancelled());
        assert!(
            reason(&s)
                .unwrap()
                .1
                .contains("the gRPC server failed: address in use")
        );

        // A second failure does not replace the first cause.
        let mut w = s.spawn("log writer", EarlyEnd::Fails, |_| None, async {});
        finish(&mut w, Instant::now() + Duration::from_secs(5)).await;
        assert!(reason(&s).unwrap().1.contains("gRPC server"));

        let s = supervisor();
        let mut w = s.spawn("log writer", EarlyEnd::Fails, |_| None, async {});
        finish(&mut w, Instant::now() + Duration::from_secs(5)).await;
        assert!(
            reason(&s)
                .unwrap()
                .1
                .contains("the log writer stopped while the workflow was running")
        );
    }

    #[tokio::test]
    async fn tasks_ending_in_the_shutdown_or_allowed_to_end_are_not_failures() {
        let s = supervisor();
        let mut w = s.spawn("journal writer", EarlyEnd::Allowed, |_| None, async {});
        assert_eq!(
            finish(&mut w, Instant::now() + Duration::from_secs(5)).await,
            Some(Some(()))
        );
        s.shutting_down.cancel();
        let mut w = s.spawn("log writer", EarlyEnd::Fails, |_| None, async {});
        finish(&mut w, Instant::now() + Duration::from_secs(5)).await;
        assert!(!s.stop.is_cancelled());
        assert_eq!(reason(&s), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_that_does_not_stop_is_abandoned_at_the_bound() {
        let s = supervisor();
        s.shutting_down.cancel();
        let gone = Arc::new(());
        let held = gone.clone();
        let mut w = s.spawn(
            "Kubernetes batch system",
            EarlyEnd::Fails,
            |_| None,
            async move {
                let _held = held;
                std::future::pending::<()>().await;
            },
        );
        let t0 = Instant::now();
        assert_eq!(finish(&mut w, t0 + SHUTDOWN_BOUND).await, None);
        assert_eq!(t0.elapsed(), SHUTDOWN_BOUND);
        // Abandoned means stopped: the task's state is dropped.
        tokio::task::yield_now().await;
        assert_eq!(Arc::strong_count(&gone), 1);
    }
}
