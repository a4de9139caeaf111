//! The kill -9 restart scenarios, written once and run on every job store
//! (`tests/local_restart.rs` on `file:`, `tests/s3_workflows.rs` on S3 via
//! moto) with the same assertions: the backends promise the same
//! semantics, so one scenario proves it for both.

use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;
use toil_jobstore::{JobStore, Locator, layout};

use crate::local::{Finished, Sandbox, chain_workflow, count_lines, log_lines};
use crate::moto::Moto;
use crate::wait::{wait_for, when};

/// The job store a scenario runs on.
pub enum Store<'a> {
    /// The sandbox's own `file:` job store.
    File,
    /// `aws:REGION:NAME` on moto, reached through the standard `AWS_*`
    /// variables as a user's leader would be.
    Aws {
        /// The S3 server.
        moto: &'a Moto,
        /// The store's region.
        region: &'a str,
        /// The store's name (the bucket is `NAME--toil`).
        name: &'a str,
    },
}

impl Store<'_> {
    /// The `--jobStore` argument.
    pub fn locator_arg(&self, sb: &Sandbox) -> String {
        match self {
            Store::File => sb.job_store().display().to_string(),
            Store::Aws { region, name, .. } => format!("aws:{region}:{name}"),
        }
    }

    /// A `toil-leader` command on this store (`args` after the subcommand
    /// and workflow get `--jobStore` added).
    pub fn leader(&self, sb: &Sandbox, args: &[&str]) -> Command {
        let loc = self.locator_arg(sb);
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--jobStore", &loc]);
        let mut cmd = sb.leader(&all);
        if let Store::Aws { moto, .. } = self {
            cmd.envs(moto.env());
        }
        cmd
    }

    /// The store as the test sees it, for reading what agents wrote.
    pub fn open(&self, sb: &Sandbox) -> JobStore {
        block_on(async {
            match self {
                Store::File => JobStore::open(&Locator::File(sb.job_store())).await,
                Store::Aws {
                    moto, region, name, ..
                } => {
                    let locator = Locator::Aws {
                        region: (*region).into(),
                        name: (*name).into(),
                    };
                    JobStore::open_with(&locator, moto.s3_options()).await
                }
            }
        })
        .unwrap_or_else(|e| panic!("opening the job store: {e}"))
    }
}

/// Runs `f` to completion on a fresh single-threaded runtime (the
/// scenarios are synchronous tests).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("tokio runtime: {e}"))
        .block_on(f)
}

const T: Duration = Duration::from_secs(180);

/// Starts chain.yaml (lease 2 s) and kills the leader with SIGKILL once job
/// b is running.
fn kill_leader_during_b(sb: &Sandbox, store: &Store<'_>) {
    let runlog = sb.path().join("runlog");
    let leader = sb.spawn(
        store.leader(
            sb,
            &[
                "run",
                "chain.yaml",
                "--clean",
                "never",
                "--agentLease",
                "2s",
            ],
        ),
        "leader",
    );
    wait_for("job b to start", T, || {
        let log = log_lines(&runlog);
        when(count_lines(&log, "b-start") == 1, log)
    });
    leader.signal(Signal::SIGKILL);
    assert_eq!(leader.wait(T).status.code(), None, "killed by a signal");
}

fn restart(sb: &Sandbox, store: &Store<'_>) -> Finished {
    let r = sb
        .spawn(
            store.leader(
                sb,
                &["run", "chain.yaml", "--restart", "--agentLease", "2s"],
            ),
            "restart",
        )
        .wait(T);
    r.expect_code(0);
    assert!(
        r.stderr.contains("restarting workflow chain"),
        "{}",
        r.stderr
    );
    r
}

/// The workflow's result is exported whole, and `--clean onSuccess` (the
/// default of the restart) removed the store.
fn finished_whole(sb: &Sandbox, store: &Store<'_>) {
    let out = std::fs::read_to_string(sb.output_dir().join("final/c.txt"))
        .unwrap_or_else(|e| panic!("the exported result: {e}"));
    assert_eq!(out, "A\nB\nC\n");
    let js = store.open(sb);
    assert!(
        !block_on(js.exists()).unwrap_or_else(|e| panic!("{e}")),
        "the job store is removed after success"
    );
}

/// kill -9 of the leader while b runs; b's orphaned agent cannot reach the
/// dead leader, so after its lease it kills b and exits, and that attempt
/// never completes. `--restart` then runs b again, and only b and c.
pub fn kill_9_mid_job_then_restart_reruns_only_the_unfinished_job(sb: &Sandbox, store: &Store<'_>) {
    let (runlog, gate) = chain_workflow(sb);
    kill_leader_during_b(sb, store);
    // The condition itself, not a guess at how long a lease takes here.
    sb.wait_agents_gone(T);
    std::fs::write(&gate, "").unwrap_or_else(|e| panic!("gate: {e}"));
    let r = restart(sb, store);
    assert!(
        r.stderr.contains("1 of 3 jobs already finished"),
        "{}",
        r.stderr
    );
    let log = log_lines(&runlog);
    assert_eq!(count_lines(&log, "a"), 1, "a must not run again: {log:?}");
    assert_eq!(
        count_lines(&log, "b-start"),
        2,
        "b's first attempt was killed, the restart ran it again: {log:?}"
    );
    assert_eq!(
        (count_lines(&log, "b"), count_lines(&log, "c")),
        (1, 1),
        "{log:?}"
    );
    finished_whole(sb, store);
}

/// kill -9 of the leader while b runs, then b finishes while no leader
/// runs: its agent stores its outputs and result before failing to report
/// them, and `--restart` recovers that result instead of running b again.
pub fn kill_9_then_a_job_finishing_while_no_leader_runs_is_recovered(
    sb: &Sandbox,
    store: &Store<'_>,
) {
    let (runlog, gate) = chain_workflow(sb);
    kill_leader_during_b(sb, store);
    std::fs::write(&gate, "").unwrap_or_else(|e| panic!("gate: {e}"));
    let js = store.open(sb);
    let key = layout::result_key("b", 1);
    wait_for("b's result in the job store", T, || {
        block_on(js.get_bytes(&key))
            .map_err(|e| e.to_string())?
            .map(|_| ())
            .ok_or_else(|| format!("no {key} yet"))
    });
    let r = restart(sb, store);
    assert!(
        r.stderr.contains("recovered the results of 1 attempt"),
        "{}",
        r.stderr
    );
    let log = log_lines(&runlog);
    assert_eq!(
        count_lines(&log, "b-start"),
        1,
        "b must not run again: {log:?}"
    );
    assert_eq!(
        (
            count_lines(&log, "a"),
            count_lines(&log, "b"),
            count_lines(&log, "c")
        ),
        (1, 1, 1),
        "{log:?}"
    );
    finished_whole(sb, store);
}
