//! `toil-leader run`: from a workflow file to a finished workflow.
//!
//! Start-up order matters for safety: open the job store, take the lease
//! (refusing if a live leader holds it), rebuild the state (on `--restart`),
//! claim the next epoch in the journal (which fences any older leader), and
//! only then start serving and launching. Attempts that were running when a
//! previous leader died are settled from the result records their agents
//! wrote, so finished work is never run again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use prost::Message;
use toil_jobstore::state::{AcquireError, Lease, LeaseHolder, LeaseRecord};
use toil_jobstore::{Condition, JobStore, layout};
use toil_proto::v1::{
    AttemptResult, Cause, CauseKind, FileRef, ImportedInput, ImportedInputs, JobState,
    WorkflowState,
};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::batch::{self, BatchCmd};
use crate::config::RunConfig;
use crate::core::{Core, JobIdx, RetryPolicy};
use crate::driver::{Driver, DriverConfig, Progress, TokenTable};
use crate::events::EventHub;
use crate::logs::LogHub;
use crate::persist::{self, PersistError, Persister};
use crate::workflow::{self, InputSource, Workflow};
use crate::{progress, summary};

/// Exit codes of `toil-leader run`.
pub mod exit {
    /// Every job succeeded.
    pub const OK: u8 = 0;
    /// The workflow ran and at least one job failed.
    pub const FAILED: u8 = 1;
    /// The workflow file or the options are wrong, or the job store cannot
    /// be used (credentials, access, its region); nothing ran.
    pub const BAD_INPUT: u8 = 2;
    /// The job store is in use by another leader, or this leader was fenced.
    pub const CONFLICT: u8 = 3;
    /// Interrupted (SIGINT/SIGTERM); resume with --restart.
    pub const INTERRUPTED: u8 = 130;
}

/// Stored identity of a workflow (`workflow/meta.json`).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Meta {
    /// Unique id.
    pub workflow_id: String,
    /// Name from the file.
    pub name: String,
    /// The workflow file as given at the first run.
    pub source: PathBuf,
    /// The directory relative inputs were resolved against.
    pub base_dir: PathBuf,
    /// When the workflow first started (ms since the Unix epoch).
    pub created_ms: i64,
    /// The settings the journal's decisions were made with. Replaying the
    /// journal must make the same decisions (a job that failed with no
    /// retries left must not come back as queued), so a restart and an
    /// offline `status` use these, not the current command line.
    #[serde(default)]
    pub settings: Option<RunSettings>,
}

/// Settings that decide how the journal replays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RunSettings {
    /// Default CPU in millicores.
    pub millicores: u32,
    /// Default memory in bytes.
    pub memory: u64,
    /// Default disk in bytes.
    pub disk: u64,
    /// `--retryCount`.
    pub retries: u32,
    /// `--infraRetryCount`.
    pub infra_retries: u32,
}

impl RunSettings {
    /// The job defaults part.
    pub fn defaults(&self) -> crate::workflow::ResolvedDefaults {
        crate::workflow::ResolvedDefaults {
            millicores: self.millicores,
            memory: self.memory,
            disk: self.disk,
            retries: self.retries,
        }
    }
}

/// What `state/leader.json` tells clients.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct LeaderInfo {
    /// gRPC address of the live leader.
    pub address: String,
    /// Bearer token for WorkflowService.
    pub client_token: String,
    /// The leader's pid and host.
    pub pid: u32,
    /// Host name.
    pub host: String,
    /// The leader's epoch.
    pub epoch: u64,
}

/// An error that maps to an exit code.
#[derive(Debug)]
pub struct Failure {
    /// The exit code.
    pub code: u8,
    /// What to tell the user.
    pub message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

fn fail(code: u8, message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Failure {
        code,
        message: message.into(),
    })
}

pub(crate) fn hostname() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "localhost".into())
}

/// Runs a workflow to the end. Returns the exit code.
pub async fn run(cfg: RunConfig) -> anyhow::Result<u8> {
    let t0 = Instant::now();
    // On Kubernetes: connect and check the cluster (access, the job store's
    // volume, node sizes) before the job store is touched.
    let cluster = match &cfg.batch {
        crate::config::Batch::Kubernetes(k) => Some(connect_cluster(k, &cfg).await?),
        crate::config::Batch::Local(_) => None,
    };
    let store = JobStore::open(&cfg.locator)
        .await
        .with_context(|| format!("opening job store {}", cfg.locator))
        .map_err(front_door)?;
    // The lease refuses to share the store with a live leader. A first run
    // takes it as soon as it has created the store, before storing the
    // workflow (see `create_store`).
    let host = hostname();
    // A plain run on a store that already holds this workflow resumes it
    // (against the file as it is now) rather than refusing.
    let resuming = cfg.restart || holds_workflow(&store, &cfg).await.map_err(front_door)?;
    let (wf, meta, fresh, lease) = if resuming {
        let (wf, meta, fresh) = restore_workflow(&store).await.map_err(front_door)?;
        let lease = take_lease(&store, &cfg, &host).await.map_err(front_door)?;
        (wf, meta, fresh, lease)
    } else {
        let wf = cfg.workflow.clone().context("no workflow")?;
        let (meta, lease) = create_store(&store, &cfg, &wf, &host)
            .await
            .map_err(front_door)?;
        (wf, meta, true, lease)
    };

    let capacity = match &cluster {
        Some(c) => c.capacity(&cfg.capacity),
        None => cfg.capacity.clone(),
    };
    // A resumed workflow keeps the settings its journal was written with.
    let (defaults, infra_retries) = match meta.settings {
        Some(st) if !fresh => {
            let wanted = (cfg.defaults, cfg.infra_retries);
            if wanted != (st.defaults(), st.infra_retries) {
                eprintln!(
                    "note: resuming with the workflow's original job defaults and retry counts (--retryCount {}, --infraRetryCount {}); the command line's differ",
                    st.retries, st.infra_retries
                );
            }
            (st.defaults(), st.infra_retries)
        }
        _ => (cfg.defaults, cfg.infra_retries),
    };
    let policy = RetryPolicy {
        infra_retries,
        oom_memory_cap: cluster
            .as_ref()
            .and_then(|c| c.largest_memory())
            .unwrap_or(cfg.capacity.memory),
        ..RetryPolicy::default()
    };
    let mut core = Core::new(&wf, defaults, policy);
    let imports = if fresh {
        import_inputs(&store, &wf).await?
    } else {
        load_imports(&store).await?
    };
    core.set_imports(imports);
    let loaded = if fresh {
        let (journal, _) = toil_jobstore::state::Journal::load(&store).await?;
        persist::LoadedState {
            journal,
            base: persist::SnapshotBase::empty()?,
            entries: 0,
        }
    } else {
        persist::load(&store, &mut core)
            .await
            .map_err(|e| fail(exit::CONFLICT, e.to_string()))?
    };
    let replayed = loaded.entries;

    // Claim the next epoch: from here on an older leader is fenced.
    let epoch = core.epoch() + 1;
    core.claim(epoch, &host, std::process::id());
    let (durable_tx, durable_rx) = watch::channel(0u64);
    let mut persister = Persister::new(
        store.clone(),
        loaded.journal,
        Some(lease),
        loaded.base,
        cfg.journal_interval,
        durable_tx,
    );
    persister
        .append_now(core.drain_journal())
        .await
        .map_err(|e| match e {
            PersistError::Fenced { .. } => fail(
                exit::CONFLICT,
                format!(
                    "another leader claimed job store {} at the same moment: {e}",
                    cfg.locator
                ),
            ),
            other => anyhow::Error::new(other),
        })?;
    if !fresh {
        settle_interrupted(&store, &mut core).await;
        if let Some(disk) = &cfg.workflow {
            match crate::resume::resume_against(&store, &mut core, disk).await {
                Ok(None) => {}
                Ok(Some(r)) => {
                    eprintln!(
                        "{} changed since the last run; resuming as version {} of the workflow: {}",
                        disk.source.display(),
                        r.version,
                        r.plan.describe()
                    );
                    // The move is durable before anything launches.
                    persister
                        .append_now(core.drain_journal())
                        .await
                        .map_err(anyhow::Error::new)?;
                }
                Err(e) => return Err(fail(exit::BAD_INPUT, format!("{e:#}"))),
            }
        }
        let retried = core.retry_failed();
        eprintln!(
            "restarting workflow {} from {replayed} journal entries: {} of {} jobs already finished{}",
            meta.name,
            finished(&core),
            core.job_count(),
            if retried > 0 {
                format!("; retrying {retried} failed job(s) with a new set of retries")
            } else {
                String::new()
            }
        );
        // A previous leader's Jobs would keep running next to ours.
        if let Some(c) = &cluster {
            match c.delete_other_epochs(&meta.workflow_id, epoch).await {
                Ok(0) => {}
                Ok(n) => eprintln!("deleted {n} Kubernetes Job(s) left by the previous leader"),
                Err(e) => {
                    return Err(fail(
                        exit::FAILED,
                        format!(
                            "could not delete the previous leader's Jobs, which would run next to this leader's: {e}"
                        ),
                    ));
                }
            }
        }
    }

    // Serve.
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("listening on {}", cfg.listen))?;
    let local = listener.local_addr()?;
    let pod_ip = match &cfg.batch {
        crate::config::Batch::Kubernetes(k) => k.leader_pod_ip.clone(),
        crate::config::Batch::Local(_) => None,
    };
    let address = match (&cfg.advertise, pod_ip) {
        (Some(a), _) => a.clone(),
        (None, Some(ip)) => format!("http://{ip}:{}", local.port()),
        (None, None) => format!("http://{local}"),
    };
    let tokens = Arc::new(TokenTable::new(crate::driver::new_token()));
    let info = LeaderInfo {
        address: address.clone(),
        client_token: tokens.client_token().to_string(),
        pid: std::process::id(),
        host: host.clone(),
        epoch,
    };
    store
        .put_bytes(
            layout::LEADER_KEY,
            Bytes::from(serde_json::to_vec_pretty(&info)?),
            Condition::Always,
        )
        .await?;

    let stop = CancellationToken::new();
    let stop_reason: Arc<Mutex<Option<(u8, String)>>> = Arc::new(Mutex::new(None));
    let (echo_tx, echo_rx) = mpsc::channel(4096);
    let logs = LogHub::new(store.clone(), cfg.real_time_logging.then_some(echo_tx));
    let events = Arc::new(EventHub::new());
    let (progress_tx, progress_rx) = watch::channel(Progress::default());
    let (driver_tx, driver_rx) = mpsc::channel(1024);
    let (persist_tx, persist_rx) = mpsc::channel(256);
    let (batch_tx, batch_rx) = mpsc::channel(4096);
    let (batch_ev_tx, batch_ev_rx) = mpsc::channel(4096);

    let persist_task = {
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
    let batch_task = match &cfg.batch {
        crate::config::Batch::Local(local) => {
            let local = batch::local::LocalConfig {
                leader_address: address.clone(),
                ..local.clone()
            };
            tokio::spawn(batch::local::run(local, batch_rx, batch_ev_tx))
        }
        crate::config::Batch::Kubernetes(_) => {
            let Some(cluster) = cluster else {
                bail!("the Kubernetes connection was lost before the batch system started");
            };
            let id = batch::kubernetes::Identity {
                workflow_id: meta.workflow_id.clone(),
                epoch,
                leader_address: address.clone(),
            };
            eprintln!(
                "kubernetes: {} · workflow id {} (Jobs labelled toil.io/workflow={})",
                cluster.describe(),
                meta.workflow_id,
                meta.workflow_id
            );
            if url_is_loopback(&address) && !cluster.server_is_loopback() {
                eprintln!(
                    "warning: agents will dial the leader at {address}, which pods on a real cluster cannot reach; set --leaderAddress to an address they can (or run the leader in the cluster, see docs/kubernetes.md)"
                );
            }
            tokio::spawn(batch::kubernetes::run(cluster, id, batch_rx, batch_ev_tx))
        }
    };
    let server_stop = CancellationToken::new();
    let server = tokio::spawn(crate::server::serve(
        listener,
        crate::server::AgentSvc {
            driver: driver_tx.clone(),
            tokens: tokens.clone(),
            logs: logs.clone(),
        },
        crate::server::WorkflowSvc {
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
        },
        server_stop.clone(),
    ));
    let display = tokio::spawn(progress::run(
        meta.name.clone(),
        progress_rx,
        echo_rx,
        stop.clone(),
    ));
    spawn_signal_handler(stop.clone(), stop_reason.clone());
    eprintln!(
        "workflow {} ({} jobs) · job store {} · leader {address}",
        meta.name,
        core.job_count(),
        cfg.locator
    );

    let driver = Driver::new(
        core,
        DriverConfig {
            lease: cfg.agent_lease,
            hold: (cfg.agent_lease / 6).max(Duration::from_millis(500)),
            reuse_agents: cfg.reuse_agents,
            job_store: cfg.locator.to_string(),
            workflow_address: address.clone(),
            capacity,
            window: 64,
        },
        tokens,
        batch_tx.clone(),
        persist_tx,
        logs.clone(),
        events,
        progress_tx,
        durable_rx,
    );
    let outcome = driver.run(driver_rx, batch_ev_rx, stop.clone()).await;

    // Shut down in order: agents, then logs, then the journal.
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let _ = batch_tx.send(BatchCmd::Shutdown(done_tx)).await;
    let _ = tokio::time::timeout(Duration::from_secs(30), done_rx).await;
    let _ = batch_task.await;
    server_stop.cancel();
    let _ = server.await;
    flush_stop.cancel();
    let _ = flusher.await;
    drop(driver_tx);
    stop.cancel();
    let _ = display.await;
    let persisted = persist_task.await;
    let reason = stop_reason
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();

    if let Some((code, message)) = reason {
        if code == exit::INTERRUPTED {
            eprintln!(
                "{message}: stopped the running jobs. Resume with:\n  toil-leader run {} --restart --jobStore {}",
                meta.source.display(),
                cfg.locator
            );
        } else {
            eprintln!("toil-leader: {message}");
        }
        return Ok(code);
    }
    if let Ok(Err(e)) = persisted {
        eprintln!("toil-leader: {e}");
        return Ok(exit::FAILED);
    }
    let state = outcome.state;
    let core = outcome.core;
    let mut code = match state {
        WorkflowState::Succeeded => exit::OK,
        _ => exit::FAILED,
    };
    // An edited version's exports are the ones that count.
    let wf = core.current_workflow().map_or(wf, |w| (*w).clone());
    if state == WorkflowState::Succeeded && !wf.outputs.is_empty() {
        match export_outputs(&store, &core, &wf, &cfg.output_dir).await {
            Ok(n) => eprintln!("exported {n} file(s) to {}", cfg.output_dir.display()),
            Err(e) => {
                eprintln!("toil-leader: exporting outputs failed: {e:#}");
                code = exit::FAILED;
            }
        }
    }
    summary::print(&core, &logs, &meta, state, t0.elapsed()).await;
    let clean = match cfg.clean {
        crate::config::Clean::Always => true,
        crate::config::Clean::Never => false,
        crate::config::Clean::OnSuccess => code == exit::OK,
        crate::config::Clean::OnError => code != exit::OK,
    };
    if clean {
        if let Err(e) = store.destroy().await {
            eprintln!("toil-leader: could not delete the job store: {e}");
        }
    } else if code != exit::OK {
        eprintln!(
            "the job store is kept; after fixing the problem, resume with:\n  toil-leader run {} --restart --jobStore {}",
            meta.source.display(),
            cfg.locator
        );
    }
    Ok(code)
}

/// Connects to the cluster and checks the workflow's jobs against its
/// nodes: a job larger than every node is refused before anything runs.
async fn connect_cluster(
    k: &batch::kubernetes::KubernetesConfig,
    cfg: &RunConfig,
) -> anyhow::Result<batch::kubernetes::Cluster> {
    let cluster = batch::kubernetes::Cluster::connect(k.clone())
        .await
        .map_err(|e| fail(exit::BAD_INPUT, e))?;
    if let (Some(wf), Some(machines)) = (&cfg.workflow, cluster.machines()) {
        workflow::check_fits(wf, &cfg.defaults, &machines)
            .map_err(|d| fail(exit::BAD_INPUT, d.to_string()))?;
    }
    Ok(cluster)
}

/// True if `url` (`http://HOST:PORT`) names a loopback host.
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

fn finished(core: &Core) -> u64 {
    let c = core.counts();
    c[JobState::Succeeded as usize]
        + c[JobState::Failed as usize]
        + c[JobState::Blocked as usize]
        + c[JobState::Cancelled as usize]
}

fn spawn_signal_handler(stop: CancellationToken, reason: Arc<Mutex<Option<(u8, String)>>>) {
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return,
            };
        let what = tokio::select! {
            _ = tokio::signal::ctrl_c() => "interrupted (SIGINT)",
            _ = term.recv() => "terminated (SIGTERM)",
            _ = stop.cancelled() => return,
        };
        let mut r = reason.lock().unwrap_or_else(|p| p.into_inner());
        if r.is_none() {
            *r = Some((exit::INTERRUPTED, what.to_string()));
        }
        drop(r);
        stop.cancel();
    });
}

/// A job-store error at start-up that retrying cannot fix (no credentials,
/// access denied, a bucket of another account, the wrong region): nothing
/// has run, so it ends the run like a bad option (exit 2), with the store's
/// message alone, which names the fix.
fn front_door(e: anyhow::Error) -> anyhow::Error {
    match e.downcast_ref::<toil_jobstore::Error>() {
        Some(toil_jobstore::Error::Permanent { message }) => fail(exit::BAD_INPUT, message.clone()),
        _ => e,
    }
}

/// Takes the leader lease, or refuses (exit 3) while a live leader holds it.
async fn take_lease(store: &JobStore, cfg: &RunConfig, host: &str) -> anyhow::Result<Lease> {
    let holder = LeaseHolder {
        host: host.to_string(),
        pid: std::process::id(),
        epoch: 0,
        address: String::new(),
    };
    match Lease::acquire(store, holder, cfg.leader_lease, host).await {
        Ok(l) => Ok(l),
        Err(AcquireError::Held(rec)) => Err(in_use(cfg, &rec, "")),
        Err(AcquireError::Store(e)) => Err(e).context("taking the leader lease"),
    }
}

/// Exit 3: the store is in use by the leader holding `rec`.
fn in_use(cfg: &RunConfig, rec: &LeaseRecord, what: &str) -> anyhow::Error {
    let left = rec.remaining_ms(toil_jobstore::state::now_ms()) / 1000;
    fail(
        exit::CONFLICT,
        format!(
            "job store {}{what} is in use by a running leader (pid {} on {}{}).\nWait for it to finish or stop it first; if that leader is gone, its lease expires in {left} s and --restart will then take over.",
            cfg.locator,
            rec.holder.pid,
            rec.holder.host,
            if rec.holder.address.is_empty() {
                String::new()
            } else {
                format!(", serving {}", rec.holder.address)
            }
        ),
    )
}

/// How long a first run waits, on finding a store with no workflow and no
/// leader in it, for the lease of a leader creating it at this moment.
const CREATING_GRACE: Duration = Duration::from_secs(2);

/// Why a first run cannot use a store that exists: a live leader holds it
/// (exit 3, as when two leaders start at once), or no leader runs and it
/// holds a workflow to resume or nothing (exit 2).
async fn existing_store(store: &JobStore, cfg: &RunConfig) -> anyhow::Error {
    let deadline = Instant::now() + CREATING_GRACE;
    let meta = loop {
        let lease = match Lease::read(store).await {
            Ok(l) => l,
            Err(e) => return e.into(),
        };
        if let Some((rec, _)) = lease
            && rec.is_live(toil_jobstore::state::now_ms(), &hostname())
        {
            return in_use(cfg, &rec, " already exists and");
        }
        let meta = match store.get_bytes(layout::META_KEY).await {
            Ok(m) => m.and_then(|o| serde_json::from_slice::<Meta>(&o.data).ok()),
            Err(e) => return e.into(),
        };
        // A store's creator takes the lease before storing the workflow:
        // with a workflow and no live lease, no leader runs; with neither,
        // one may be between creating the store and taking the lease.
        if meta.is_some() || Instant::now() >= deadline {
            break meta;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let what = meta
        .map(|m| {
            format!(
                " (it holds workflow {} from {})",
                m.name,
                m.source.display()
            )
        })
        .unwrap_or_default();
    fail(
        exit::BAD_INPUT,
        format!(
            "job store {}{what} already exists.\nUse --restart to resume that workflow, or delete it with `toil-leader clean {}` to start over.",
            cfg.locator, cfg.locator
        ),
    )
}

/// True when a run without `--restart` finds a job store that already
/// holds a workflow and no live leader: it then resumes that workflow, and
/// says so.
async fn holds_workflow(store: &JobStore, cfg: &RunConfig) -> anyhow::Result<bool> {
    if !store.exists().await? {
        return Ok(false);
    }
    let Some(obj) = store.get_bytes(layout::META_KEY).await? else {
        return Ok(false);
    };
    let Ok(meta) = serde_json::from_slice::<Meta>(&obj.data) else {
        return Ok(false);
    };
    if let Some((rec, _)) = Lease::read(store).await?
        && rec.is_live(toil_jobstore::state::now_ms(), &hostname())
    {
        return Err(in_use(cfg, &rec, " already exists and"));
    }
    eprintln!(
        "job store {} already holds workflow {} (from {}): resuming it; finished jobs whose commands and inputs are unchanged are kept (`toil-leader clean {}` starts over)",
        cfg.locator,
        meta.name,
        meta.source.display(),
        cfg.locator
    );
    Ok(true)
}

/// Creates the job store for a first run, takes the leader lease, and
/// stores the workflow in it.
async fn create_store(
    store: &JobStore,
    cfg: &RunConfig,
    wf: &Workflow,
    host: &str,
) -> anyhow::Result<(Meta, Lease)> {
    if store.exists().await? {
        return Err(existing_store(store, cfg).await);
    }
    let created = store.initialize().await?;
    if !created {
        return Err(fail(
            exit::CONFLICT,
            format!(
                "job store {} was created by another leader at the same moment; that leader runs the workflow and this one stops",
                cfg.locator
            ),
        ));
    }
    let lease = take_lease(store, cfg, host).await?;
    let text =
        std::fs::read(&wf.source).with_context(|| format!("reading {}", wf.source.display()))?;
    store
        .put_bytes(layout::SPEC_KEY, Bytes::from(text), Condition::IfAbsent)
        .await?;
    let meta = Meta {
        workflow_id: uuid::Uuid::new_v4().to_string(),
        name: wf.name.clone(),
        source: std::path::absolute(&wf.source).unwrap_or_else(|_| wf.source.clone()),
        base_dir: wf.base_dir.clone(),
        created_ms: toil_jobstore::state::now_ms(),
        settings: Some(RunSettings {
            millicores: cfg.defaults.millicores,
            memory: cfg.defaults.memory,
            disk: cfg.defaults.disk,
            retries: cfg.defaults.retries,
            infra_retries: cfg.infra_retries,
        }),
    };
    store
        .put_bytes(
            layout::META_KEY,
            Bytes::from(serde_json::to_vec_pretty(&meta)?),
            Condition::IfAbsent,
        )
        .await?;
    Ok((meta, lease))
}

/// Reads the stored workflow for `--restart`.
pub(crate) async fn restore_workflow(store: &JobStore) -> anyhow::Result<(Workflow, Meta, bool)> {
    if !store.exists().await? {
        return Err(fail(
            exit::BAD_INPUT,
            format!(
                "there is no job store at {} to restart; run without --restart to start the workflow",
                store.locator()
            ),
        ));
    }
    let meta: Meta = match store.get_bytes(layout::META_KEY).await? {
        Some(o) => serde_json::from_slice(&o.data).context("reading workflow/meta.json")?,
        None => bail!(
            "job store {} has no workflow in it (it was never started); delete it with `toil-leader clean` and run again",
            store.locator()
        ),
    };
    let text = store
        .get_bytes(layout::SPEC_KEY)
        .await?
        .context("the stored workflow file is missing")?;
    let text = String::from_utf8_lossy(&text.data).into_owned();
    let wf = workflow::parse_stored(&text, &meta.source, &meta.base_dir).map_err(|d| {
        fail(
            exit::BAD_INPUT,
            format!("the workflow stored in the job store no longer parses:\n{d}"),
        )
    })?;
    Ok((wf, meta, false))
}

/// Imports every local input file of the workflow into the job store.
async fn import_inputs(
    store: &JobStore,
    wf: &Workflow,
) -> anyhow::Result<HashMap<PathBuf, FileRef>> {
    let mut paths: Vec<&Path> = wf
        .jobs
        .iter()
        .flat_map(|j| j.inputs.iter())
        .filter_map(|i| match &i.source {
            InputSource::Local(p) => Some(p.as_path()),
            InputSource::JobOutput { .. } => None,
        })
        .collect();
    paths.sort();
    paths.dedup();
    let mut map = HashMap::new();
    let mut record = ImportedInputs::default();
    if !paths.is_empty() {
        eprintln!("importing {} input file(s) into the job store", paths.len());
    }
    for p in paths {
        // Hash first so the stored key is the content's: the same file used
        // twice, or by two workflows, is stored once.
        let sha = hash_file(p).await?;
        let key = layout::input_key(&sha);
        let t = store
            .put_file(&key, p)
            .await
            .with_context(|| format!("importing {}", p.display()))?;
        if t.sha256 != sha {
            bail!(
                "{} changed while it was being imported; try again",
                p.display()
            );
        }
        let file = FileRef {
            file_id: key,
            path: p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            size_bytes: t.size,
            sha256: t.sha256,
        };
        record.inputs.push(ImportedInput {
            local_path: p.to_string_lossy().into_owned(),
            file: Some(file.clone()),
        });
        map.insert(p.to_path_buf(), file);
    }
    store
        .put_bytes(
            layout::IMPORTS_KEY,
            Bytes::from(record.encode_to_vec()),
            Condition::Always,
        )
        .await?;
    Ok(map)
}

async fn hash_file(p: &Path) -> anyhow::Result<String> {
    let p = p.to_path_buf();
    tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
        use sha2::Digest;
        use std::io::Read;
        let mut f =
            std::fs::File::open(&p).with_context(|| format!("opening input {}", p.display()))?;
        let mut h = sha2::Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        Ok(hex::encode(h.finalize()))
    })
    .await?
}

pub(crate) async fn load_imports(store: &JobStore) -> anyhow::Result<HashMap<PathBuf, FileRef>> {
    let Some(obj) = store.get_bytes(layout::IMPORTS_KEY).await? else {
        return Ok(HashMap::new());
    };
    let rec = ImportedInputs::decode(obj.data).context("reading workflow/imports.pb")?;
    Ok(rec
        .inputs
        .into_iter()
        .filter_map(|i| Some((PathBuf::from(i.local_path), i.file?)))
        .collect())
}

/// Settles attempts that were running when the previous leader stopped:
/// from the result record their agent wrote, or as AGENT_LOST (which does
/// not spend the user's retries).
async fn settle_interrupted(store: &JobStore, core: &mut Core) {
    let now = Instant::now();
    let now_ms = toil_jobstore::state::now_ms();
    let running: Vec<(JobIdx, u32)> = (0..core.job_count() as JobIdx)
        .filter(|&j| core.state(j) == JobState::Running)
        .map(|j| (j, core.attempts(j).len() as u32))
        .collect();
    let mut recovered = 0;
    for (j, n) in running {
        let key = layout::result_key(&core.job_id(j), n);
        let result = match store.get_bytes(&key).await {
            Ok(Some(obj)) => AttemptResult::decode(obj.data).ok(),
            _ => None,
        };
        let result = match result {
            Some(r) => {
                recovered += 1;
                r
            }
            None => AttemptResult {
                cause: Some(Cause {
                    kind: CauseKind::AgentLost as i32,
                    code: 0,
                    message: "the previous leader stopped while this attempt ran".into(),
                }),
                exit_code: -1,
                ..Default::default()
            },
        };
        let _ = core.finish(j, n, result, now_ms, now);
    }
    if recovered > 0 {
        eprintln!(
            "recovered the results of {recovered} attempt(s) that finished while no leader was running"
        );
    }
}

/// Copies the workflow's outputs to `dir/NAME/PATH`, verifying checksums.
async fn export_outputs(
    store: &JobStore,
    core: &Core,
    wf: &Workflow,
    dir: &Path,
) -> anyhow::Result<usize> {
    let mut n = 0;
    for out in &wf.outputs {
        let producers: Vec<JobIdx> = (0..core.job_count() as JobIdx)
            .filter(|&j| {
                let id = core.job_id(j);
                id == out.job || id.starts_with(&format!("{}[", out.job))
            })
            .collect();
        for p in producers {
            for files in core.outputs(p).iter().filter(|o| o.name == out.output) {
                for f in &files.files {
                    let dest = dir.join(&out.name).join(&f.path);
                    if let Some(parent) = dest.parent() {
                        std::fs::create_dir_all(parent)
                            .with_context(|| format!("creating {}", parent.display()))?;
                    }
                    store
                        .get_file_verified(&f.file_id, &dest, &f.sha256)
                        .await
                        .with_context(|| format!("exporting {}", f.path))?;
                    n += 1;
                }
            }
        }
    }
    Ok(n)
}
