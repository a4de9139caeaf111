//! `toil-leader run`: from a workflow file to a finished workflow.
//!
//! A run goes through four stages, one module each:
//! - [`startup`]: open the job store and take the lease (refusing if a live
//!   leader holds it), then create or read the stored workflow;
//! - `resume`: build the scheduler core, replay the journal on
//!   `--restart`, claim the next epoch (which fences any older leader) and
//!   settle what a previous leader left running;
//! - `tasks`: only then serve and launch: the driver and the six tasks
//!   around it, stopped in order at the end;
//! - here: the exit code, exported outputs, the summary and the job
//!   store's clean-up.
//!
//! [`records`] holds what the run stores for `status`, `logs` and later
//! runs, and the exit codes.

pub(crate) mod files;
pub mod private;
mod records;
mod resume;
mod startup;
mod tasks;

use std::time::Instant;

use anyhow::Context;
use toil_jobstore::JobStore;
use toil_proto::v1::WorkflowState;

use crate::config::{Batch, Clean, RunConfig};
use crate::summary;
pub(crate) use files::load_imports;
pub use records::{Failure, LeaderInfo, Meta, RunSettings, exit, token_verifier};
pub(crate) use startup::{hostname, restore_workflow};

/// What a front end gets while the leader runs: the way to add jobs and
/// learn how they end. The CWL runner (`crate::cwl`) is one.
pub struct FrontEnd {
    /// The driver's inbox: `Msg::AddJobs` and `Msg::Query`.
    pub driver: tokio::sync::mpsc::Sender<crate::driver::Msg>,
    /// The workflow's events (job state changes).
    pub events: std::sync::Arc<crate::events::EventHub>,
    /// The job store.
    pub store: JobStore,
    /// True for a first run, false when resuming a stored workflow.
    pub fresh: bool,
}

/// A front end's work: runs while the leader does, adding jobs through the
/// driver, and returns the run's exit code. The workflow stays open until
/// it returns.
pub type FrontFn = Box<dyn FnOnce(FrontEnd) -> futures::future::BoxFuture<'static, u8> + Send>;

/// Runs a workflow to the end. Returns the exit code.
pub async fn run(cfg: RunConfig) -> anyhow::Result<u8> {
    run_with(cfg, None).await
}

/// Runs a workflow to the end with `front` (if any) adding jobs while it
/// runs; the workflow ends when `front` has returned and every job has
/// ended. Returns the exit code: the front end's when there is one.
pub async fn run_with(cfg: RunConfig, front: Option<FrontFn>) -> anyhow::Result<u8> {
    let t0 = Instant::now();
    // On Kubernetes: connect and check the cluster (access, the job store's
    // volume, node sizes) before the job store is touched.
    let cluster = match &cfg.batch {
        Batch::Kubernetes(k) => Some(startup::connect_cluster(k, &cfg).await?),
        Batch::Local(_) => None,
    };
    let store = JobStore::open(&cfg.locator)
        .await
        .with_context(|| format!("opening job store {}", cfg.locator))
        .map_err(startup::front_door)?;
    let host = hostname();
    let (opened, lease) = startup::open_workflow(&store, &cfg, &host).await?;
    let mut prepared =
        resume::prepare(&store, &cfg, &opened, lease, cluster.as_ref(), &host).await?;
    if front.is_some() {
        prepared.core.hold_open(true);
    }
    let running = tasks::start(&cfg, &store, &opened.meta, &host, cluster, prepared).await?;
    let logs = running.logs.clone();
    let front_task = front.map(|f| {
        let handle = FrontEnd {
            driver: running.driver_sender(),
            events: running.events.clone(),
            store: store.clone(),
            fresh: opened.fresh,
        };
        let tx = handle.driver.clone();
        tokio::spawn(async move {
            let code = f(handle).await;
            let _ = tx.send(crate::driver::Msg::HoldOpen(false)).await;
            code
        })
    });
    let stopped = running.run().await;
    let front_code = match front_task {
        Some(t) if stopped.reason.is_some() => {
            t.abort();
            None
        }
        Some(t) => Some(t.await.unwrap_or(exit::FAILED)),
        None => None,
    };

    let meta = &opened.meta;
    if let Some(path) = &cfg.report {
        // Before the summary and any clean-up: the logs are still stored.
        let note = stopped
            .reason
            .as_ref()
            .map(|(_, m)| format!("the run stopped early: {m}"));
        let core = &stopped.outcome.core;
        match crate::report::write(core, &meta.name, meta.created_ms, &store, note, path).await {
            Ok(n) => crate::say!(
                "report written to {} ({})",
                path.display(),
                crate::workflow::units::format_size(n as u64)
            ),
            Err(e) => crate::say!("toil-leader: {e:#}"),
        }
    }
    let runner = if cfg.cwl {
        "toil-cwl-runner"
    } else {
        "toil-leader run"
    };
    if let Some((code, message)) = stopped.reason {
        if code == exit::INTERRUPTED {
            crate::say!(
                "{message}: stopped the running jobs. Resume with:\n  {} {} --restart --jobStore {}",
                runner,
                meta.source.display(),
                cfg.locator
            );
        } else {
            crate::say!("toil-leader: {message}");
        }
        return Ok(code);
    }
    match stopped.persisted {
        Some(Ok(())) => {}
        Some(Err(e)) => {
            crate::say!("toil-leader: {e}");
            return Ok(exit::FAILED);
        }
        None => {
            crate::say!(
                "toil-leader: the journal writer did not finish; the last moments of the run may not be stored. Resume with:\n  {} {} --restart --jobStore {}",
                runner,
                opened.meta.source.display(),
                cfg.locator
            );
            return Ok(exit::FAILED);
        }
    }
    let state = stopped.outcome.state;
    let core = stopped.outcome.core;
    let mut code = match (front_code, state) {
        (Some(c), _) => c,
        (None, WorkflowState::Succeeded) => exit::OK,
        _ => exit::FAILED,
    };
    // An edited version's exports are the ones that count.
    let wf = core
        .current_workflow()
        .map_or_else(|| opened.wf.clone(), |w| (*w).clone());
    if state == WorkflowState::Succeeded && !wf.outputs.is_empty() {
        match files::export_outputs(&store, &core, &wf, &cfg.output_dir).await {
            Ok(n) => crate::say!("exported {n} file(s) to {}", cfg.output_dir.display()),
            Err(e) => {
                crate::say!("toil-leader: exporting outputs failed: {e:#}");
                code = exit::FAILED;
            }
        }
    }
    summary::print(&core, &logs, &meta.name, state, t0.elapsed()).await;
    let clean = match cfg.clean {
        Clean::Always => true,
        Clean::Never => false,
        Clean::OnSuccess => code == exit::OK,
        Clean::OnError => code != exit::OK,
    };
    if clean {
        if let Err(e) = store.destroy().await {
            crate::say!("toil-leader: could not delete the job store: {e}");
        }
    } else if code == exit::OK {
        // The store is named after the file, the summary after the
        // workflow's `name:`; say where it is.
        crate::say!(
            "the job store is kept at {} (see `toil-leader status {}`)",
            cfg.locator,
            cfg.locator
        );
    } else if state == WorkflowState::Cancelled {
        // A cancellation is journaled: --restart would only replay it.
        crate::say!(
            "the workflow was cancelled and its job store is kept (status and logs work on it); --restart would not run the cancelled jobs again. To run it anew:\n  toil-leader clean {} && {} {} --jobStore {}",
            cfg.locator,
            runner,
            meta.source.display(),
            cfg.locator
        );
    } else if code != exit::OK {
        crate::say!(
            "the job store is kept; after fixing the problem, resume with:\n  {} {} --restart --jobStore {}",
            runner,
            meta.source.display(),
            cfg.locator
        );
    }
    Ok(code)
}
