//! `status`, `logs` and `clean`: looking at a workflow through its job
//! store, and through its leader when one is running.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::{Context, bail};
use toil_jobstore::state::Lease;
use toil_jobstore::{JobStore, Locator, layout};
use toil_proto::v1::workflow_service_client::WorkflowServiceClient;
use toil_proto::v1::{
    FollowLogsRequest, GetWorkflowRequest, Job, JobState, ListJobsRequest, ResourceUsage,
    WorkflowState,
};
use tonic::transport::Channel;

use crate::cli::{CleanArgs, LogsArgs, StatusArgs};
use crate::core::{Core, JobIdx, RetryPolicy};
use crate::driver::{job_proto, total_usage};
use crate::run::{LeaderInfo, Meta, hostname, token_verifier};
use crate::workflow::{ResolvedDefaults, units};
use toil_agent::transport::Target;

pub(crate) async fn open(loc: &str) -> anyhow::Result<JobStore> {
    let locator = Locator::parse(loc)?;
    let store = JobStore::open(&locator).await?;
    if !store.exists().await? {
        bail!(
            "there is no job store at {locator}; if a workflow ran with it and succeeded, it was deleted at the end (the default, --clean onSuccess): run with --clean never to keep it for status and logs"
        );
    }
    Ok(store)
}

/// The running leader of a store, if its lease is live.
pub(crate) async fn live_leader(store: &JobStore) -> anyhow::Result<Option<LeaderInfo>> {
    let Some((lease, _)) = Lease::read(store).await? else {
        return Ok(None);
    };
    if !lease.is_live(toil_jobstore::state::now_ms(), &hostname()) {
        return Ok(None);
    }
    let Some(obj) = store.get_bytes(layout::LEADER_KEY).await? else {
        return Ok(None);
    };
    Ok(serde_json::from_slice(&obj.data).ok())
}

/// Adds the bearer token to every call.
type Auth = Box<dyn FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Send>;
type Client = WorkflowServiceClient<tonic::service::interceptor::InterceptedService<Channel, Auth>>;

/// The environment variable that carries the client token to clients not
/// on the leader's machine (or not its user).
pub const TOKEN_ENV: &str = "TOIL_CLIENT_TOKEN";

/// The client token: `TOIL_CLIENT_TOKEN`, else the file the leader wrote
/// on its own machine; checked against the verifier in `leader.json`.
fn client_token(info: &LeaderInfo) -> anyhow::Result<String> {
    let (token, from) = match std::env::var(TOKEN_ENV) {
        Ok(t) if !t.trim().is_empty() => (t.trim().to_string(), TOKEN_ENV.to_string()),
        _ => {
            if info.token_file.is_empty() {
                bail!(
                    "the running leader (pid {} on {}) does not say where its client token is (it is older than this toil-leader); set {TOKEN_ENV}",
                    info.pid,
                    info.host
                );
            }
            match std::fs::read_to_string(&info.token_file) {
                Ok(t) => (t.trim().to_string(), info.token_file.clone()),
                Err(_) if info.host != hostname() => bail!(
                    "the workflow's leader runs on {}, and its client token is in {} on that machine, readable by the leader's user alone: copy it here into {TOKEN_ENV}",
                    info.host,
                    info.token_file
                ),
                Err(e) => bail!(
                    "cannot read the client token {}: {e}. Only the user who started the leader (pid {}) can read it: run this as that user, or set {TOKEN_ENV}",
                    info.token_file,
                    info.pid
                ),
            }
        }
    };
    if !info.client_token_sha256.is_empty() && token_verifier(&token) != info.client_token_sha256 {
        bail!(
            "the client token from {from} is not this leader's (its SHA-256 is not client_token_sha256 in state/leader.json): it belongs to another workflow or to an earlier leader of this one{}",
            if from == TOKEN_ENV {
                format!(
                    "; unset {TOKEN_ENV} to use {} on {}",
                    info.token_file, info.host
                )
            } else {
                String::new()
            }
        );
    }
    Ok(token)
}

/// How to reach the leader: its Unix socket when it runs on this machine,
/// else TLS with its certificate from `leader.json` pinned.
fn target(info: &LeaderInfo) -> anyhow::Result<Target> {
    if let Some(path) = info.socket.strip_prefix("unix:")
        && info.host == hostname()
        && std::path::Path::new(path).exists()
    {
        return Ok(Target::Unix(path.into()));
    }
    if info.cert_sha256.is_empty() {
        bail!(
            "the running leader (pid {} on {}) publishes no certificate in state/leader.json (it is older than this toil-leader); use a toil-leader of its version",
            info.pid,
            info.host
        );
    }
    Target::parse(&info.url, Some(&info.cert_sha256)).map_err(anyhow::Error::msg)
}

async fn connect(info: &LeaderInfo) -> anyhow::Result<Client> {
    let token = client_token(info)?;
    let target = target(info)?;
    let channel = target
        .connect(|e| e.connect_timeout(std::time::Duration::from_secs(10)))
        .await
        .map_err(anyhow::Error::msg)?;
    let header: tonic::metadata::MetadataValue<_> = format!("Bearer {token}")
        .parse()
        .context("the client token is not a valid header value")?;
    let f: Auth = Box::new(move |mut req: tonic::Request<()>| {
        req.metadata_mut().insert("authorization", header.clone());
        Ok(req)
    });
    Ok(WorkflowServiceClient::with_interceptor(channel, f))
}

/// Rebuilds the workflow's state from the job store alone.
pub(crate) async fn offline_core(store: &JobStore) -> anyhow::Result<(Core, Meta)> {
    // The same reading of the stored workflow a restart does.
    let (wf, meta, _) = crate::run::restore_workflow(store).await?;
    // Replay with the settings the journal was written with.
    let (defaults, policy) = match meta.settings {
        Some(st) => (
            st.defaults(),
            RetryPolicy {
                infra_retries: st.infra_retries,
                ..RetryPolicy::default()
            },
        ),
        None => (
            ResolvedDefaults {
                millicores: 1000,
                memory: 2 << 30,
                disk: 2 << 30,
                retries: 1,
            },
            RetryPolicy::default(),
        ),
    };
    let mut core = Core::new(&wf, defaults, policy);
    core.set_imports(crate::run::load_imports(store).await?);
    crate::persist::load(store, &mut core).await?;
    Ok((core, meta))
}

/// `toil-leader status`.
pub async fn status(args: StatusArgs) -> anyhow::Result<u8> {
    let store = open(&args.job_store).await?;
    let leader = live_leader(&store).await?;
    let (name, state, jobs, usage, who, about) = match &leader {
        Some(info) => {
            let mut client = connect(info).await?;
            let wf = client
                .get_workflow(GetWorkflowRequest {})
                .await?
                .into_inner();
            let mut jobs = Vec::new();
            let mut token = String::new();
            loop {
                let page = client
                    .list_jobs(ListJobsRequest {
                        states: vec![],
                        page_size: 5000,
                        page_token: token,
                    })
                    .await?
                    .into_inner();
                jobs.extend(page.jobs);
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
            let state = WorkflowState::try_from(wf.state).unwrap_or(WorkflowState::Running);
            let mut who = format!(
                "leader pid {} on {} (epoch {}) at {}",
                info.pid, info.host, info.epoch, info.address
            );
            let web_url = crate::web::url_beside(&info.token_file);
            if let Some(url) = &web_url {
                who.push_str(&format!("; web view {url}"));
            }
            let about = About {
                workflow_id: wf.workflow_id,
                started_ms: wf.started_at.map_or(0, |t| t.seconds * 1000),
                resume: None,
                web_url,
            };
            (
                wf.name,
                state,
                jobs,
                wf.usage.unwrap_or_default(),
                who,
                about,
            )
        }
        None => {
            let (core, meta) = offline_core(&store).await?;
            let jobs: Vec<Job> = (0..core.job_count() as JobIdx)
                .map(|j| job_proto(&core, j))
                .collect();
            let resume = (!core.is_finished()).then(|| {
                format!(
                    "toil-leader run {} --restart --jobStore {}",
                    meta.source.display(),
                    store.locator()
                )
            });
            let who = match &resume {
                None => "no leader running".to_string(),
                Some(r) => format!("no leader running; resume with: {r}"),
            };
            let about = About {
                workflow_id: meta.workflow_id.clone(),
                started_ms: meta.created_ms,
                resume,
                web_url: None,
            };
            (
                meta.name,
                core.workflow_state(),
                jobs,
                total_usage(&core),
                who,
                about,
            )
        }
    };
    if args.json {
        let status = crate::status_json::build(crate::status_json::Source {
            name: &name,
            workflow_id: &about.workflow_id,
            state,
            started_ms: about.started_ms,
            leader: leader.as_ref().map(|i| crate::status_json::Leader {
                pid: i.pid,
                host: i.host.clone(),
                epoch: i.epoch,
                address: i.address.clone(),
                web_url: about.web_url.clone(),
            }),
            resume: about.resume,
            jobs: &jobs,
            usage: &usage,
        });
        // Rendered first, so that a closed pipe is an io::Error (see main).
        let text = serde_json::to_string_pretty(&status)?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "{text}")?;
        out.flush()?;
        return Ok(0);
    }
    let mut out = std::io::stdout().lock();
    print_status(&mut out, &name, state, &jobs, &usage, &who, args.jobs)?;
    out.flush()?;
    Ok(0)
}

/// What `status --json` shows beyond the text.
struct About {
    workflow_id: String,
    started_ms: i64,
    resume: Option<String>,
    /// The web view's tokenized URL, when this user can read it.
    web_url: Option<String>,
}

fn state_name(s: i32) -> &'static str {
    match JobState::try_from(s).unwrap_or(JobState::Unspecified) {
        JobState::Unspecified => "?",
        other => crate::metrics::state_label(other),
    }
}

fn print_status(
    out: &mut impl Write,
    name: &str,
    state: WorkflowState,
    jobs: &[Job],
    usage: &ResourceUsage,
    who: &str,
    all: bool,
) -> std::io::Result<()> {
    let state = crate::status_json::workflow_state_label(state);
    writeln!(out, "workflow {name}: {state} ({who})")?;
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for j in jobs {
        *counts.entry(state_name(j.state)).or_default() += 1;
    }
    let counts: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
    writeln!(out, "jobs: {} ({})", jobs.len(), counts.join(", "))?;
    let attempts: usize = jobs.iter().map(|j| j.attempts.len()).sum();
    let cpu = usage
        .cpu_time
        .as_ref()
        .map_or(0.0, |d| d.seconds as f64 + f64::from(d.nanos) / 1e9);
    writeln!(
        out,
        "attempts: {attempts} · cpu {cpu:.1} s · largest peak memory {} · cache {} hits, {} misses, {} downloaded, {} uploaded",
        units::format_size(usage.peak_rss_bytes),
        usage.cache_hits,
        usage.cache_misses,
        units::format_size(usage.bytes_downloaded),
        units::format_size(usage.bytes_uploaded),
    )?;
    let shown: Vec<&Job> = jobs
        .iter()
        .filter(|j| {
            all || j.state == JobState::Failed as i32 || j.state == JobState::Running as i32
        })
        .collect();
    if shown.is_empty() {
        return Ok(());
    }
    writeln!(out)?;
    writeln!(
        out,
        "{:<32} {:<10} {:>8}  LAST CAUSE",
        "JOB", "STATE", "ATTEMPTS"
    )?;
    for j in shown {
        let cause = j
            .attempts
            .last()
            .and_then(|a| a.cause.as_ref())
            .map(ToString::to_string)
            .unwrap_or_default();
        let cause = if j.state == JobState::Blocked as i32 {
            format!("waits for failed job {}", j.blocked_by)
        } else {
            cause
        };
        writeln!(
            out,
            "{:<32} {:<10} {:>8}  {}",
            j.job_id,
            state_name(j.state),
            j.attempts.len(),
            cause
        )?;
    }
    Ok(())
}

/// `toil-leader logs`.
pub async fn logs(args: LogsArgs) -> anyhow::Result<u8> {
    let store = open(&args.job_store).await?;
    if let Some(info) = live_leader(&store).await?
        && let Some(job) = &args.job
    {
        let mut client = connect(&info).await?;
        let mut stream = client
            .follow_logs(FollowLogsRequest {
                job_id: job.clone(),
                attempt: args.attempt.unwrap_or(0),
                offset: 0,
                follow: args.follow,
            })
            .await?
            .into_inner();
        let mut out = std::io::stdout().lock();
        while let Some(piece) = stream.message().await? {
            out.write_all(&piece.data)?;
            out.flush()?;
        }
        return Ok(0);
    }
    if args.follow {
        crate::say!(
            "(no leader is running, so there is nothing to follow; printing the stored log)"
        );
    }
    // Offline: the persisted segments. Group keys by job and attempt.
    let keys = store.list("logs/").await?;
    let mut by_job: BTreeMap<String, BTreeMap<u32, ()>> = BTreeMap::new();
    for k in &keys {
        let mut parts = k.splitn(4, '/');
        let (_, Some(job), Some(n)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let Ok(n) = n.parse::<u32>() else {
            continue;
        };
        by_job
            .entry(job.replace('~', "/"))
            .or_default()
            .insert(n, ());
    }
    // A scattered job's name stands for all of its instances: `part` shows
    // `part[0]`, `part[1]`, ... each under its own header.
    let instances = |j: &str| -> Vec<String> {
        let prefix = format!("{j}[");
        by_job
            .keys()
            .filter(|k| k.starts_with(&prefix) && k.ends_with(']'))
            .cloned()
            .collect()
    };
    let (wanted, headers): (Vec<String>, bool) = match &args.job {
        Some(j) if by_job.contains_key(j) => (vec![j.clone()], false),
        Some(j) => {
            let mut all = instances(j);
            if all.is_empty() {
                bail!(
                    "no log stored for job {j:?} (it has not run, or wrote no output); jobs with stored logs: {}",
                    by_job.keys().cloned().collect::<Vec<_>>().join(", ")
                );
            }
            // Numeric order: part[2] before part[10].
            all.sort_by_key(|k| {
                k[j.len() + 1..k.len() - 1]
                    .parse::<u64>()
                    .unwrap_or(u64::MAX)
            });
            (all, true)
        }
        None => (by_job.keys().cloned().collect(), true),
    };
    let mut out = std::io::stdout().lock();
    for job in wanted {
        let attempts = &by_job[&job];
        let n = match args.attempt {
            Some(n) if attempts.contains_key(&n) => n,
            Some(n) => bail!("job {job} has no stored log for attempt {n}"),
            None => *attempts.keys().last().unwrap_or(&1),
        };
        if headers {
            writeln!(out, "==> {job} (attempt {n}) <==")?;
        }
        // A segment at a time: an attempt may have stored gigabytes.
        for seg in crate::logs::segments(&store, &job, n, 0, u64::MAX).await? {
            if let Some((_, data)) = crate::logs::read_segment(&store, &seg, 0, u64::MAX).await? {
                out.write_all(&data)?;
            }
        }
        out.flush()?;
    }
    Ok(0)
}

/// `toil-leader clean`.
pub async fn clean(args: CleanArgs) -> anyhow::Result<u8> {
    let locator = Locator::parse(&args.job_store)?;
    let store = JobStore::open(&locator).await?;
    if !store.exists().await? {
        println!("there is no job store at {locator}; nothing to delete");
        return Ok(0);
    }
    if let Some(info) = live_leader(&store).await? {
        bail!(
            "job store {locator} is in use by a running leader (pid {} on {}); stop it first",
            info.pid,
            info.host
        );
    }
    store.destroy().await?;
    println!("deleted job store {locator}");
    Ok(0)
}
