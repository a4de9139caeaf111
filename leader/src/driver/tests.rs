//! The driver on fake channels, under a paused clock: the test plays the
//! persister (it decides when entries are durable), the batch system (it
//! sees launches and kills) and the agents (it sends their reports), and
//! reads the core through the driver's own query message.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use toil_jobstore::{JobStore, Locator};
use toil_proto::v1::synchronize_response::Action;
use toil_proto::v1::{
    AgentPhase, AttemptResult, Cause, CauseKind, JobState, Resources, SynchronizeRequest,
    SynchronizeResponse, WorkflowState,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::messages::SyncReply;
use super::{Driver, DriverConfig, Msg, Outcome, Progress, TokenTable};
use crate::batch::{AgentLaunch, BatchCmd, BatchEvent, Capacity};
use crate::core::{Core, RetryPolicy};
use crate::events::EventHub;
use crate::logs::LogHub;
use crate::persist::PersistMsg;
use crate::workflow::ResolvedDefaults;

const LEASE: Duration = Duration::from_secs(6);

/// A running driver and the other ends of its channels.
struct Harness {
    tx: mpsc::Sender<Msg>,
    batch_events: mpsc::Sender<BatchEvent>,
    batch: mpsc::Receiver<BatchCmd>,
    persist: mpsc::Receiver<PersistMsg>,
    durable: watch::Sender<u64>,
    /// Entries received from the driver so far.
    received: u64,
    stop: CancellationToken,
    driver: JoinHandle<Outcome>,
    _dir: tempfile::TempDir,
}

/// A workflow of independent jobs named `names`, each a quarter core.
fn workflow(names: &[&str]) -> crate::workflow::Workflow {
    let mut text = String::from("name: t\njobs:\n");
    for n in names {
        text.push_str(&format!("  {n}:\n    command: \"true\"\n"));
    }
    crate::workflow::parse_stored(&text, Path::new("t.yaml"), Path::new("/"))
        .unwrap_or_else(|d| panic!("{d}"))
}

async fn start(names: &[&str], reuse: bool, max_jobs: Option<usize>) -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = JobStore::open(&Locator::File(dir.path().join("js")))
        .await
        .expect("store");
    store.initialize().await.expect("init");
    let defaults = ResolvedDefaults {
        millicores: 250,
        memory: 64 << 20,
        disk: 64 << 20,
        retries: 1,
    };
    let core = Core::new(&workflow(names), defaults, RetryPolicy::default());
    let (tx, rx) = mpsc::channel(64);
    let (batch_tx, batch) = mpsc::channel(64);
    let (batch_events, batch_rx) = mpsc::channel(64);
    let (persist_tx, persist) = mpsc::channel(64);
    let (durable, durable_rx) = watch::channel(0);
    let (progress, _) = watch::channel(Progress::default());
    let driver = Driver::new(
        core,
        DriverConfig {
            lease: LEASE,
            hold: Duration::from_secs(1),
            reuse_agents: reuse,
            job_store: "file:/unused".into(),
            workflow_address: "https://127.0.0.1:1".into(),
            leader_cert_pem: String::new(),
            leader_cert_sha256: String::new(),
            capacity: Capacity {
                millicores: 4000,
                memory: 8 << 30,
                disk: None,
                gpus: 0,
                max_jobs,
            },
            window: 64,
        },
        Arc::new(TokenTable::new("client".into())),
        batch_tx,
        persist_tx,
        LogHub::new(store, None),
        Arc::new(EventHub::new()),
        progress,
        durable_rx,
    );
    let stop = CancellationToken::new();
    let driver = tokio::spawn(driver.run(rx, batch_rx, stop.clone()));
    Harness {
        tx,
        batch_events,
        batch,
        persist,
        durable,
        received: 0,
        stop,
        driver,
        _dir: dir,
    }
}

/// Lets the driver work through what it has (the clock is paused, so this
/// takes no real time).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

impl Harness {
    /// Takes the entries the driver has sent, without making them durable.
    fn take_entries(&mut self) -> u64 {
        let mut n = 0;
        while let Ok(PersistMsg::Entries(e)) = self.persist.try_recv() {
            n += e.len() as u64;
        }
        self.received += n;
        n
    }

    /// Marks every entry received so far durable.
    async fn make_durable(&mut self) {
        self.take_entries();
        let _ = self.durable.send(self.received);
        settle().await;
    }

    fn launches(&mut self) -> Vec<AgentLaunch> {
        let mut out = Vec::new();
        while let Ok(cmd) = self.batch.try_recv() {
            if let BatchCmd::Launch(l) = cmd {
                out.push(l);
            }
        }
        out
    }

    /// Sends an agent's report and returns where its answer will come.
    async fn report(&self, req: SynchronizeRequest) -> oneshot::Receiver<SyncReply> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Msg::Sync(Box::new(req), tx))
            .await
            .expect("driver runs");
        rx
    }

    /// Reads the core: `(state, attempts, causes)` of job `id`.
    async fn job(&self, id: &str) -> (JobState, Vec<Option<CauseKind>>) {
        let (tx, rx) = oneshot::channel();
        let id = id.to_string();
        let q = Msg::Query(Box::new(move |d: &Driver| {
            let c = d.core();
            let j = c.lookup(&id).expect("job exists");
            let causes = c
                .attempts(j)
                .iter()
                .map(|a| a.cause.as_ref().map(|c| c.kind()))
                .collect();
            let _ = tx.send((c.state(j), causes));
        }));
        self.tx.send(q).await.expect("driver runs");
        rx.await.expect("answered")
    }
}

fn idle(l: &AgentLaunch) -> SynchronizeRequest {
    SynchronizeRequest {
        agent_id: l.agent_id.clone(),
        agent_token: l.agent_token.clone(),
        phase: AgentPhase::Idle as i32,
        capacity: Some(Resources {
            millicores: l.request.millicores,
            memory_bytes: l.request.memory,
            disk_bytes: l.request.disk,
            gpus: 0,
            preemptible: false,
        }),
        ..Default::default()
    }
}

fn about(l: &AgentLaunch, a: &Assigned, phase: AgentPhase) -> SynchronizeRequest {
    SynchronizeRequest {
        agent_id: l.agent_id.clone(),
        agent_token: l.agent_token.clone(),
        phase: phase as i32,
        attempt_id: a.attempt_id.clone(),
        attempt_token: a.token.clone(),
        ..Default::default()
    }
}

fn done(l: &AgentLaunch, a: &Assigned, cause: Cause) -> SynchronizeRequest {
    SynchronizeRequest {
        result: Some(AttemptResult {
            cause: Some(cause),
            exit_code: 0,
            ..Default::default()
        }),
        ..about(l, a, AgentPhase::Done)
    }
}

/// What an agent keeps from its assignment.
struct Assigned {
    attempt_id: String,
    token: String,
}

fn assigned(r: SynchronizeResponse) -> Assigned {
    match r.action {
        Some(Action::Assignment(a)) => Assigned {
            attempt_id: a.attempt_id,
            token: a.attempt_token,
        },
        other => panic!("expected an assignment, got {other:?}"),
    }
}

fn exit_reason(r: &SynchronizeResponse) -> Option<&str> {
    match &r.action {
        Some(Action::Exit(e)) => Some(e.reason.as_str()),
        _ => None,
    }
}

async fn answer(rx: oneshot::Receiver<SyncReply>) -> SynchronizeResponse {
    rx.await.expect("answered").expect("accepted")
}

/// Sends a DONE report and returns its answer, checking that the answer
/// (which tells the agent it may forget the result) waits until the
/// result's journal entry is durable.
async fn confirm(h: &mut Harness, req: SynchronizeRequest) -> SynchronizeResponse {
    let mut reply = h.report(req).await;
    settle().await;
    assert!(
        reply.try_recv().is_err(),
        "a result is confirmed only once durable"
    );
    h.make_durable().await;
    answer(reply).await
}

/// Starts the one launched agent and brings its attempt to RUNNING.
async fn run_first(h: &mut Harness) -> (AgentLaunch, Assigned) {
    h.make_durable().await;
    let l = h.launches().pop().expect("a launch");
    let a = assigned(answer(h.report(idle(&l)).await).await);
    (l, a)
}

#[tokio::test(start_paused = true)]
async fn an_agent_starts_only_once_its_launch_is_durable() {
    let mut h = start(&["a", "b"], false, Some(1)).await;
    settle().await;
    assert!(h.take_entries() > 0, "the launch is journalled");
    assert!(
        h.launches().is_empty(),
        "no agent before the persister says the launch is durable"
    );
    h.make_durable().await;
    let first = h.launches();
    assert_eq!(first.len(), 1, "one job at a time");
    assert_eq!(
        (first[0].job_id.as_str(), first[0].attempt_id.as_str()),
        ("a", "a.1")
    );

    // The second job's launch is journalled after the first batch was made
    // durable; it too waits for its own entry.
    let a = assigned(answer(h.report(idle(&first[0])).await).await);
    let mut reply = h.report(done(&first[0], &a, Cause::succeeded())).await;
    settle().await;
    assert!(h.take_entries() > 0);
    assert!(
        h.launches().is_empty(),
        "job b waits for its launch entry, not for the first batch"
    );
    assert!(
        reply.try_recv().is_err(),
        "a's result is confirmed once durable"
    );
    h.make_durable().await;
    assert!(answer(reply).await.result_recorded);
    let second = h.launches();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].attempt_id, "b.1");
}

#[tokio::test(start_paused = true)]
async fn a_silent_agent_is_lost_killed_and_its_job_retried() {
    let mut h = start(&["a"], false, None).await;
    settle().await;
    let (l, a) = run_first(&mut h).await;
    // A RUNNING report is held (long poll) and answered with "carry on".
    let held = h.report(about(&l, &a, AgentPhase::Running)).await;
    let r = answer(held).await;
    assert!(matches!(r.action, Some(Action::Continue(_))));
    assert_eq!(h.job("a").await, (JobState::Running, vec![None]));

    // Then nothing for longer than the lease.
    tokio::time::sleep(LEASE + Duration::from_secs(2)).await;
    let mut killed = false;
    while let Ok(cmd) = h.batch.try_recv() {
        killed |= matches!(cmd, BatchCmd::Kill { agent_id } if agent_id == l.agent_id);
    }
    assert!(killed, "the batch system is told to stop the silent agent");
    let (state, causes) = h.job("a").await;
    assert_eq!(causes[0], Some(CauseKind::AgentLost));
    // An infrastructure loss does not spend the job's own retry: a second
    // attempt follows, once its launch is durable.
    assert!(
        matches!(state, JobState::Queued | JobState::Running),
        "{state:?}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    h.make_durable().await;
    let again = h.launches();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempt_id, "a.2");
    assert_ne!(again[0].agent_id, l.agent_id, "a new agent");
    // The lost agent's late report is refused: its attempt is over.
    let late = h.report(about(&l, &a, AgentPhase::Running)).await;
    assert!(late.await.expect("answered").is_err());
}

#[tokio::test(start_paused = true)]
async fn a_result_is_applied_once_and_ends_the_workflow() {
    let mut h = start(&["a"], false, None).await;
    settle().await;
    let (l, a) = run_first(&mut h).await;
    let first = confirm(&mut h, done(&l, &a, Cause::exit_code(3))).await;
    assert!(first.result_recorded);
    assert_eq!(exit_reason(&first), Some("no more work for this agent"));
    let after_one = h.job("a").await;
    assert_eq!(after_one.1, vec![Some(CauseKind::ExitCode)]);
    // The same report again (as if the answer was lost): the agent was let
    // go, so the report is refused, and the result is not applied twice.
    let again = h.report(done(&l, &a, Cause::exit_code(3))).await;
    assert!(again.await.expect("answered").is_err());
    assert_eq!(h.job("a").await, after_one);

    // The user retry runs and succeeds; the driver then ends by itself.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (l2, a2) = run_first(&mut h).await;
    assert_eq!(a2.attempt_id, "a.2");
    let r = confirm(&mut h, done(&l2, &a2, Cause::succeeded())).await;
    assert!(r.result_recorded);
    let outcome = h.driver.await.expect("driver ends");
    assert_eq!(outcome.state, WorkflowState::Succeeded);
    assert!(outcome.stopped.is_none());
    let j = outcome.core.lookup("a").expect("a");
    assert_eq!(outcome.core.attempts(j).len(), 2);
    assert_eq!(outcome.core.counts()[JobState::Succeeded], 1);
}

#[tokio::test(start_paused = true)]
async fn a_reused_agent_gets_its_next_attempt_once_it_is_durable() {
    let mut h = start(&["a", "b"], true, Some(1)).await;
    settle().await;
    let (l, a) = run_first(&mut h).await;
    assert_eq!(a.attempt_id, "a.1");
    let mut reply = h.report(done(&l, &a, Cause::succeeded())).await;
    settle().await;
    assert!(
        reply.try_recv().is_err(),
        "the next assignment waits for its launch entry"
    );
    h.make_durable().await;
    let r = answer(reply).await;
    assert!(r.result_recorded, "the answer also confirms the result");
    let b = assigned(r);
    assert_eq!(b.attempt_id, "b.1");
    assert!(h.launches().is_empty(), "no new agent for b");
    assert_eq!(h.job("a").await.0, JobState::Succeeded);
    assert_eq!(h.job("b").await, (JobState::Running, vec![None]));
    // Done with b: nothing left, so the agent is let go.
    let last = confirm(&mut h, done(&l, &b, Cause::succeeded())).await;
    assert_eq!(exit_reason(&last), Some("no more work for this agent"));
    assert_eq!(
        h.driver.await.expect("ends").state,
        WorkflowState::Succeeded
    );
}

#[tokio::test(start_paused = true)]
async fn stopping_answers_held_reports_and_leaves_the_workflow_running() {
    let mut h = start(&["a"], false, None).await;
    settle().await;
    let (l, a) = run_first(&mut h).await;
    // Hold a report open, then stop the driver while it is held.
    let (tx, mut held) = oneshot::channel();
    h.tx.send(Msg::Sync(Box::new(about(&l, &a, AgentPhase::Running)), tx))
        .await
        .expect("driver runs");
    settle().await;
    assert!(held.try_recv().is_err(), "the report is held");
    h.stop.cancel();
    let outcome = h.driver.await.expect("driver ends");
    let r = held.await.expect("answered").expect("accepted");
    assert_eq!(exit_reason(&r), Some("the workflow is over"));
    assert_eq!(outcome.state, WorkflowState::Running);
    assert_eq!(outcome.stopped.as_deref(), Some("interrupted"));
    // The interrupted attempt is journaled as ended by the interruption, so
    // the stored state never shows it running.
    let j = outcome.core.lookup("a").expect("a");
    assert_eq!(outcome.core.state(j), JobState::Queued);
    let cause = outcome.core.attempts(j)[0].cause.clone().expect("ended");
    assert!(cause.message.contains("interrupted"), "{cause:?}");
    drop(h.batch_events);
}
