//! The tasks of a run, wired by channels, and the order they stop in.
//!
//! Beside the driver (which owns the scheduler core) run six tasks: the
//! persister (journal and lease), the log flusher, the batch system, the
//! gRPC server, the terminal display and the signal handler. None shares
//! state with another except through a channel. They stop agents first,
//! then the server, then the logs, then the journal, so that nothing runs
//! or reports after the last state is written.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use toil_jobstore::{Condition, JobStore, layout};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{JoinError, JoinHandle};
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

/// How long shutdown waits for the batch system to stop its agents.
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
    tasks: Tasks,
}

/// The tasks beside the driver, with what it takes to stop each.
struct Tasks {
    batch_tx: mpsc::Sender<BatchCmd>,
    batch: JoinHandle<()>,
    server_stop: CancellationToken,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    flush_stop: CancellationToken,
    flusher: JoinHandle<()>,
    /// Dropped at shutdown: the driver's inbox closes with it.
    driver_tx: mpsc::Sender<Msg>,
    display: JoinHandle<()>,
    persist: JoinHandle<Result<(), PersistError>>,
    /// The client token and the socket, removed at the end.
    private: PrivateDir,
}

/// How the run stopped.
pub(super) struct Stopped {
    /// The driver's end: the final state and the core.
    pub(super) outcome: Outcome,
    /// Why it stopped early, if it did (exit code, message).
    pub(super) reason: Option<(u8, String)>,
    /// The persister's end: an error means the last state may not be
    /// stored.
    pub(super) persisted: Result<Result<(), PersistError>, JoinError>,
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
    let logs = LogHub::new(store.clone(), cfg.real_time_logging.then_some(echo_tx));
    let events = Arc::new(EventHub::new());
    let (progress_tx, progress_rx) = watch::channel(Progress::default());
    let (driver_tx, driver_rx) = mpsc::channel(1024);
    let (persist_tx, persist_rx) = mpsc::channel(256);
    let (batch_tx, batch_rx) = mpsc::channel(4096);
    let (batch_ev_tx, batch_events) = mpsc::channel(4096);

    let persist = {
        let stop = stop.clone();
        let reason = stop_reason.clone();
        tokio::spawn(async move {
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
    let flusher = tokio::spawn(logs.clone().run_flusher(flush_stop.clone()));
    let batch = match &cfg.batch {
        Batch::Local(local) => {
            let local = batch::local::LocalConfig {
                leader_address: agent_address.clone(),
                leader_cert_sha256: cert.pin.to_string(),
                ..local.clone()
            };
            tokio::spawn(batch::local::run(local, batch_rx, batch_ev_tx))
        }
        Batch::Kubernetes(_) => {
            let Some(mut cluster) = cluster else {
                bail!("the Kubernetes connection was lost before the batch system started");
            };
            // Every agent pins this leader's certificate. The fingerprint
            // is not a secret: it goes in the Job like the address.
            cluster.cfg.env.push((
                toil_agent::transport::PIN_ENV.to_string(),
                cert.pin.to_string(),
            ));
            let id = batch::kubernetes::Identity {
                workflow_id: meta.workflow_id.clone(),
                epoch,
                leader_address: address.clone(),
            };
            crate::say!(
                "kubernetes: {} · workflow id {} (Jobs labelled toil.io/workflow={})",
                cluster.describe(),
                meta.workflow_id,
                meta.workflow_id
            );
            if url_is_loopback(&address) && !cluster.server_is_loopback() {
                crate::say!(
                    "warning: agents will dial the leader at {address}, which pods on a real cluster cannot reach; set --leaderAddress to an address they can (or run the leader in the cluster, see docs/kubernetes.md)"
                );
            }
            tokio::spawn(batch::kubernetes::run(cluster, id, batch_rx, batch_ev_tx))
        }
    };
    let server_stop = CancellationToken::new();
    let server = tokio::spawn(crate::server::serve(
        Listeners {
            tcp: listener,
            unix: Some(unix),
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
    ));
    let display = tokio::spawn(crate::progress::run(
        meta.name.clone(),
        progress_rx,
        echo_rx,
        stop.clone(),
    ));
    spawn_signal_handler(stop.clone(), stop_reason.clone());
    crate::say!(
        "workflow {} ({} jobs) · job store {} · leader {address} (TLS, certificate SHA-256 {}) and {socket} · client token in {}",
        meta.name,
        core.job_count(),
        cfg.locator,
        cert.pin,
        token_file.display()
    );

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
    );
    Ok(Running {
        driver,
        driver_rx,
        batch_events,
        stop,
        stop_reason,
        logs,
        tasks: Tasks {
            batch_tx,
            batch,
            server_stop,
            server,
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
            tasks: t,
        } = self;
        let outcome = driver.run(driver_rx, batch_events, stop.clone()).await;

        // Agents first, so none runs on after the journal's last entry.
        let (done_tx, done_rx) = oneshot::channel();
        let _ = t.batch_tx.send(BatchCmd::Shutdown(done_tx)).await;
        let _ = tokio::time::timeout(BATCH_SHUTDOWN, done_rx).await;
        let _ = t.batch.await;
        t.server_stop.cancel();
        let _ = t.server.await;
        t.flush_stop.cancel();
        let _ = t.flusher.await;
        drop(t.driver_tx);
        stop.cancel();
        let _ = t.display.await;
        let persisted = t.persist.await;
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
