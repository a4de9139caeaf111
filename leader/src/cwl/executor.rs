//! The scheduler-backed `toil_cwl::Executor`: each CommandLineTool
//! invocation becomes one job, added to the running workflow the way
//! `AddJobs` adds top-level jobs, and resolves when the job ends.
//!
//! A job's name comes from the invocation's key ([`super::job_name`]), so a
//! restarted leader finds the jobs the previous one added (they are in the
//! journal): one that succeeded resolves at once with its recorded output
//! object, one still pending is waited for, and only unknown keys add jobs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use serde_json::Value;
use toil_cwl::{CwlError, Executor, Invocation};
use toil_jobstore::JobStore;
use toil_proto::v1::workflow_event::Kind;
use toil_proto::v1::{AddJobsRequest, JobSpec, JobState, Relation, Resources};
use tokio::sync::{mpsc, oneshot};

use super::files::{ImportCache, import};
use crate::driver::{Caller, Msg};
use crate::events::EventHub;

/// Settings of the executor.
#[derive(Clone, Debug)]
pub struct ExecOptions {
    /// `--no-container`: never give a job an image.
    pub no_container: bool,
    /// The most one job may ask for (millicores, bytes of memory): a tool
    /// asking for more is given this much rather than waiting forever for
    /// a slot that never comes.
    pub max_millicores: u64,
    /// Likewise for memory.
    pub max_memory: u64,
}

/// How a job stands, as the driver sees it.
#[derive(Clone, Debug, PartialEq)]
enum Status {
    /// No such job.
    Unknown,
    /// Not finished yet.
    Pending,
    /// Succeeded, with its output object.
    Succeeded(Option<String>),
    /// Failed, blocked or cancelled, with why.
    Ended(JobState, String),
}

struct Inner {
    driver: mpsc::Sender<Msg>,
    store: JobStore,
    opts: ExecOptions,
    /// Waiters by job id, woken when the job reaches a final state.
    waiters: Mutex<HashMap<String, Vec<oneshot::Sender<()>>>>,
    imports: tokio::sync::Mutex<ImportCache>,
}

/// The scheduler-backed executor (see the module's documentation).
#[derive(Clone)]
pub struct SchedExecutor {
    inner: Arc<Inner>,
}

impl SchedExecutor {
    /// An executor adding jobs through `driver`, learning of their ends
    /// from `events`.
    pub fn new(
        driver: mpsc::Sender<Msg>,
        events: &EventHub,
        store: JobStore,
        opts: ExecOptions,
    ) -> SchedExecutor {
        let inner = Arc::new(Inner {
            driver,
            store,
            opts,
            waiters: Mutex::new(HashMap::new()),
            imports: tokio::sync::Mutex::new(ImportCache::new()),
        });
        let sub = events.subscribe(u64::MAX);
        let weak = Arc::downgrade(&inner);
        tokio::spawn(async move {
            let Some(mut live) = sub.live else {
                return;
            };
            loop {
                let ev = live.recv().await;
                let Some(inner) = weak.upgrade() else {
                    return;
                };
                match ev {
                    Ok(e) => {
                        if let Some(Kind::JobStateChanged(c)) = e.kind
                            && JobState::try_from(c.to).is_ok_and(|s| s.is_final())
                        {
                            inner.wake(Some(&c.job_id));
                        }
                    }
                    // Missed some: everyone looks again.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => inner.wake(None),
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        inner.wake(None);
                        return;
                    }
                }
            }
        });
        SchedExecutor { inner }
    }

    /// Imports the local files of `v` into the job store (see
    /// [`super::files::import`]), sharing this executor's import cache.
    pub async fn import(&self, v: &mut Value) -> Result<usize, CwlError> {
        import(&self.inner.store, v, &self.inner.imports).await
    }
}

impl Inner {
    fn wake(&self, job: Option<&str>) {
        let mut w = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        let woken: Vec<oneshot::Sender<()>> = match job {
            Some(j) => w.remove(j).unwrap_or_default(),
            None => w.drain().flat_map(|(_, v)| v).collect(),
        };
        drop(w);
        for tx in woken {
            let _ = tx.send(());
        }
    }

    fn waiter(&self, job: &str) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(job.to_string())
            .or_default()
            .push(tx);
        rx
    }

    async fn status(&self, job: &str) -> Result<Status, CwlError> {
        let (tx, rx) = oneshot::channel();
        let id = job.to_string();
        let q = Msg::Query(Box::new(move |d| {
            let core = d.core();
            let s = match core.lookup(&id) {
                None => Status::Unknown,
                Some(j) => match core.state(j) {
                    JobState::Succeeded => {
                        Status::Succeeded(core.cwl_outputs(j).map(str::to_string))
                    }
                    s if s.is_final() => {
                        let why = match (s, core.blocked_by(j)) {
                            (JobState::Blocked, Some(b)) => {
                                format!("blocked by the failure of {}", core.job_id(b))
                            }
                            _ => core
                                .attempts(j)
                                .last()
                                .and_then(|a| a.cause.as_ref())
                                .map(|c| {
                                    if c.message.is_empty() {
                                        format!("{:?}", c.kind())
                                    } else {
                                        c.message.clone()
                                    }
                                })
                                .unwrap_or_else(|| format!("{s:?}")),
                        };
                        Status::Ended(s, why)
                    }
                    _ => Status::Pending,
                },
            };
            let _ = tx.send(s);
        }));
        self.driver
            .send(q)
            .await
            .map_err(|_| CwlError::Failed("the leader has stopped".into()))?;
        rx.await
            .map_err(|_| CwlError::Failed("the leader has stopped".into()))
    }

    async fn add(&self, spec: JobSpec) -> Result<(), CwlError> {
        let (tx, rx) = oneshot::channel();
        self.driver
            .send(Msg::AddJobs {
                caller: Caller::Client,
                req: AddJobsRequest {
                    jobs: vec![spec],
                    relation: Relation::Root as i32,
                    parent_job_id: String::new(),
                },
                reply: tx,
            })
            .await
            .map_err(|_| CwlError::Failed("the leader has stopped".into()))?;
        match rx.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(status)) => Err(CwlError::Failed(format!(
                "the leader refused the job: {}",
                status.message()
            ))),
            Err(_) => Err(CwlError::Failed("the leader has stopped".into())),
        }
    }

    /// The job for an invocation (see [`JobSpec`]'s CWL fields).
    fn job_spec(&self, name: &str, inv: &Invocation) -> Result<JobSpec, CwlError> {
        let res = toil_cwl::tool::resources(inv)?;
        let millicores = ((res.cores.max(0.001) * 1000.0).ceil() as u64)
            .clamp(1, self.opts.max_millicores.max(1));
        let memory = (res.ram_mib << 20).clamp(1 << 20, self.opts.max_memory.max(1 << 20));
        let disk = (res.outdir_mib + res.tmpdir_mib) << 20;
        let image = if self.opts.no_container {
            String::new()
        } else {
            docker_image(inv).unwrap_or_default()
        };
        // A tool that updates its inputs in place gets private copies: the
        // node cache's shared, read-only links must not change (and the
        // job store's files never do, so the update is seen only by what
        // the tool outputs).
        let inplace = inv.requirements.iter().any(|r| {
            r.get("class").and_then(Value::as_str) == Some("InplaceUpdateRequirement")
                && r.get("inplaceUpdate").and_then(Value::as_bool) == Some(true)
        });
        let mut staged_files = toil_agent::cwl::staged_inputs(&inv.job);
        if inplace {
            for s in &mut staged_files {
                s.writable = true;
            }
        }
        let invocation = serde_json::to_string(inv)
            .map_err(|e| CwlError::Failed(format!("encoding the invocation: {e}")))?;
        Ok(JobSpec {
            name: name.to_string(),
            image,
            resources: Some(Resources {
                millicores: millicores.min(u64::from(u32::MAX)) as u32,
                memory_bytes: memory,
                disk_bytes: disk,
                gpus: 0,
                preemptible: false,
            }),
            cwl_invocation: invocation,
            staged_files,
            ..Default::default()
        })
    }

    async fn run_tool(
        self: Arc<Self>,
        key: String,
        mut inv: Invocation,
    ) -> Result<Value, CwlError> {
        let name = super::job_name(&key);
        let mut added = false;
        loop {
            let woken = self.waiter(&name);
            match self.status(&name).await? {
                Status::Succeeded(out) => {
                    let text = out.unwrap_or_else(|| "{}".into());
                    return serde_json::from_str(&text).map_err(|e| {
                        CwlError::Failed(format!("step {key}: its output object is not JSON: {e}"))
                    });
                }
                Status::Ended(state, why) => {
                    return Err(CwlError::Failed(format!(
                        "step {key} (job {name}) {}: {why}",
                        match state {
                            JobState::Cancelled => "was cancelled",
                            JobState::Blocked => "was blocked",
                            _ => "failed",
                        }
                    )));
                }
                Status::Unknown if added => {
                    return Err(CwlError::Failed(format!(
                        "step {key}: job {name} was added but is gone"
                    )));
                }
                Status::Unknown => {
                    // Defaults from the document may still be local files
                    // (with secondary files beside them).
                    super::files::add_secondary_files(&mut inv.job, &inv.tool);
                    import(&self.store, &mut inv.job, &self.imports).await?;
                    let spec = self.job_spec(&name, &inv)?;
                    tracing::debug!(job = %name, %key, "adding CWL job");
                    self.add(spec).await?;
                    added = true;
                }
                Status::Pending => {}
            }
            // Woken when the job ends (or when events were missed); a
            // closed channel means the event task is gone: look again
            // after a moment. Looking again now and then costs little and
            // covers any event that never comes.
            match tokio::time::timeout(std::time::Duration::from_secs(5), woken).await {
                Ok(Ok(())) | Err(_) => {}
                Ok(Err(_)) => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
            }
        }
    }
}

/// The container image a tool asks for (`DockerRequirement.dockerPull`,
/// else `dockerImageId`), as a `docker://` reference; requirements before
/// hints.
pub fn docker_image(inv: &Invocation) -> Option<String> {
    inv.requirements
        .iter()
        .chain(inv.hints.iter())
        .find(|r| r.get("class").and_then(Value::as_str) == Some("DockerRequirement"))
        .and_then(|r| {
            r.get("dockerPull")
                .or_else(|| r.get("dockerImageId"))
                .and_then(Value::as_str)
        })
        .map(|image| {
            if image.contains("://") {
                image.to_string()
            } else {
                format!("docker://{image}")
            }
        })
}

impl Executor for SchedExecutor {
    fn run_tool(
        &self,
        key: String,
        inv: Invocation,
    ) -> BoxFuture<'static, Result<Value, CwlError>> {
        let inner = self.inner.clone();
        Box::pin(inner.run_tool(key, inv))
    }

    fn read_file(
        &self,
        location: String,
        limit: usize,
    ) -> BoxFuture<'static, Result<Vec<u8>, CwlError>> {
        let store = self.inner.store.clone();
        Box::pin(async move { super::files::read(&store, &location, limit).await })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn images_come_from_docker_requirement_requirements_first() {
        let mut inv = Invocation {
            tool: json!({}),
            job: json!({}),
            requirements: vec![],
            hints: vec![json!({"class": "DockerRequirement", "dockerPull": "debian:12"})],
            namespaces: Default::default(),
        };
        assert_eq!(docker_image(&inv).as_deref(), Some("docker://debian:12"));
        inv.requirements =
            vec![json!({"class": "DockerRequirement", "dockerImageId": "docker://x/y"})];
        assert_eq!(docker_image(&inv).as_deref(), Some("docker://x/y"));
        inv.requirements.clear();
        inv.hints.clear();
        assert_eq!(docker_image(&inv), None);
    }
}
