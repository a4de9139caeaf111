//! The scheduler's state for this run: built from the workflow, replayed
//! from the journal on `--restart`, and claimed under a new epoch.
//!
//! Attempts that were running when a previous leader died are settled from
//! the result records their agents wrote, so finished work is never run
//! again; only then does this leader launch anything.

use std::time::Instant;

use prost::Message;
use toil_jobstore::state::Lease;
use toil_jobstore::{JobStore, layout};
use toil_proto::v1::{AttemptResult, Cause, JobState};
use tokio::sync::watch;

use super::files::{import_inputs, load_imports};
use super::records::{exit, fail};
use super::startup::Opened;
use crate::batch::kubernetes::Cluster;
use crate::config::RunConfig;
use crate::core::{Core, JobIdx, RetryPolicy};
use crate::persist::{self, PersistError, Persister};

/// The state a run starts from, owned by the tasks that run it.
pub(super) struct Prepared {
    /// The scheduler core, with this leader's epoch claimed.
    pub(super) core: Core,
    /// The journal writer, holding the lease.
    pub(super) persister: Persister,
    /// How many journal entries the persister has made durable.
    pub(super) durable: watch::Receiver<u64>,
    /// This leader's epoch.
    pub(super) epoch: u64,
}

/// Builds the core for `opened`, claims the next epoch in the journal
/// (which fences any older leader), and on a restart settles what the
/// previous leader left running and deletes its Kubernetes Jobs.
pub(super) async fn prepare(
    store: &JobStore,
    cfg: &RunConfig,
    opened: &Opened,
    lease: Lease,
    cluster: Option<&Cluster>,
    host: &str,
) -> anyhow::Result<Prepared> {
    let Opened { wf, meta, fresh } = opened;
    let fresh = *fresh;
    // A resumed workflow replays its journal with the settings it was
    // written with; settings the command line gives explicitly apply from
    // the restart on (below), the others are kept.
    let (defaults, infra_retries) = match meta.settings {
        Some(st) if !fresh => (st.defaults(), st.infra_retries),
        _ => (cfg.defaults, cfg.infra_retries),
    };
    let policy = RetryPolicy {
        infra_retries,
        oom_memory_cap: cluster
            .and_then(|c| c.largest_memory())
            .unwrap_or(cfg.capacity.memory),
        ..RetryPolicy::default()
    };
    let mut core = Core::new(wf, defaults, policy);
    let imports = if fresh {
        import_inputs(store, wf).await?
    } else {
        load_imports(store).await?
    };
    core.set_imports(imports);
    let loaded = if fresh {
        let (journal, _) = toil_jobstore::state::Journal::load(store).await?;
        persist::LoadedState {
            journal,
            base: persist::SnapshotBase::empty()?,
            entries: 0,
        }
    } else {
        persist::load(store, &mut core)
            .await
            .map_err(|e| fail(exit::CONFLICT, e.to_string()))?
    };
    let replayed = loaded.entries;

    // Claim the next epoch: from here on an older leader is fenced.
    let epoch = core.epoch() + 1;
    core.claim(epoch, host, std::process::id());
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
        settle_interrupted(store, &mut core).await;
        // A CWL run's jobs come from the document as it runs (the stored
        // one): there is no file version to compare.
        if let Some(disk) = cfg.workflow.as_ref().filter(|_| !cfg.cwl) {
            match crate::versions::resume_against(store, &mut core, disk).await {
                Ok(None) => {}
                Ok(Some(r)) => {
                    crate::say!(
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
        let before = core.settings();
        let wanted = cfg.given.over(before);
        let changed = crate::config::describe_changes(before, wanted);
        if !changed.is_empty() {
            crate::say!(
                "settings changed since the last run: {}; they apply to every job that has not finished and does not set its own",
                changed.join(", ")
            );
            core.change_settings(wanted);
        }
        let retried = core.retry_failed();
        crate::say!(
            "restarting workflow {} from {replayed} journal entries: {} of {} jobs already finished{}",
            meta.name,
            core.counts().finished(),
            core.job_count(),
            if retried > 0 {
                format!("; retrying {retried} failed job(s) with a new set of retries")
            } else {
                String::new()
            }
        );
        // A previous leader's Jobs would keep running next to ours.
        if let Some(c) = cluster {
            match c.delete_other_epochs(&meta.workflow_id, epoch).await {
                Ok(0) => {}
                Ok(n) => crate::say!("deleted {n} Kubernetes Job(s) left by the previous leader"),
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

    Ok(Prepared {
        core,
        persister,
        durable: durable_rx,
        epoch,
    })
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
        // The job store is writable by jobs: a stored result is checked
        // like a reported one.
        let result = result.filter(|r| {
            let checked = core
                .launch_spec(j, n)
                .map_err(|e| e.to_string())
                .and_then(|spec| crate::driver::checks::check_outputs(&spec, r));
            if let Err(why) = &checked {
                crate::say!("ignored the stored result of {key}: {why}");
            }
            checked.is_ok()
        });
        let result = match result {
            Some(r) => {
                recovered += 1;
                r
            }
            None => AttemptResult::ended(Cause::agent_lost(
                "the previous leader stopped while this attempt ran",
            )),
        };
        let _ = core.finish(j, n, result, now_ms, now);
    }
    if recovered > 0 {
        crate::say!(
            "recovered the results of {recovered} attempt(s) that finished while no leader was running"
        );
    }
}
