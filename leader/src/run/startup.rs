//! The start-up protocol, up to a workflow this leader alone may run.
//!
//! Order matters for safety: open the job store, take the lease (refusing
//! while a live leader holds it), and only then store or read the
//! workflow. A first run creates the store and takes the lease before it
//! stores anything, so two leaders started at once cannot both proceed.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use toil_jobstore::state::{AcquireError, Lease, LeaseHolder, LeaseRecord};
use toil_jobstore::{Condition, JobStore, layout};

use super::records::{Meta, RunSettings, exit, fail};
use crate::batch;
use crate::config::RunConfig;
use crate::workflow::{self, Workflow};

/// This machine's name, as leases and `leader.json` record it.
pub(crate) fn hostname() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "localhost".into())
}

/// The workflow this leader runs.
pub(super) struct Opened {
    /// The parsed workflow.
    pub(super) wf: Workflow,
    /// Its stored identity.
    pub(super) meta: Meta,
    /// True for a first run (nothing in the journal yet).
    pub(super) fresh: bool,
}

/// Takes the lease and the workflow: from the store on `--restart`, from
/// the command line (creating the store) otherwise. The lease goes on to
/// the persister, which renews it.
pub(super) async fn open_workflow(
    store: &JobStore,
    cfg: &RunConfig,
    host: &str,
) -> anyhow::Result<(Opened, Lease)> {
    // The lease refuses to share the store with a live leader. A first run
    // takes it as soon as it has created the store, before storing the
    // workflow (see `create_store`).
    // A plain run on a store that already holds a workflow resumes it
    // (against the file as it is now) rather than refusing.
    let resuming = cfg.restart || holds_workflow(store, cfg).await.map_err(front_door)?;
    if resuming {
        let (wf, meta, fresh) = restore_workflow(store).await.map_err(front_door)?;
        let lease = take_lease(store, cfg, host).await.map_err(front_door)?;
        Ok((Opened { wf, meta, fresh }, lease))
    } else {
        let wf = cfg.workflow.clone().context("no workflow")?;
        let (meta, lease) = create_store(store, cfg, &wf, host)
            .await
            .map_err(front_door)?;
        Ok((
            Opened {
                wf,
                meta,
                fresh: true,
            },
            lease,
        ))
    }
}

/// Connects to the cluster and checks the workflow's jobs against its
/// nodes: a job larger than every node is refused before anything runs.
pub(super) async fn connect_cluster(
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

/// A job-store error at start-up that retrying cannot fix (no credentials,
/// access denied, a bucket of another account, the wrong region): nothing
/// has run, so it ends the run like a bad option (exit 2), with the store's
/// message alone, which names the fix.
pub(super) fn front_door(e: anyhow::Error) -> anyhow::Error {
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
    crate::say!(
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
        cwl: cfg.cwl,
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
    if meta.cwl {
        // A CWL run's jobs are all in the journal; `crate::cwl` keeps the
        // document itself.
        let wf = crate::cwl::stored_workflow(&meta);
        return Ok((wf, meta, false));
    }
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
