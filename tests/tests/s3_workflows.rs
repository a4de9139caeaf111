//! Whole workflows on an `aws:` job store: the real leader and agents, the
//! local batch system, and moto as S3 (the leader gets moto's endpoint and
//! test keys in its environment and passes them on to its agents, as a user
//! would with `AWS_*` variables). Nothing here touches the internet.
//!
//! - a workflow end to end: inputs imported into the bucket, files between
//!   jobs, a scatter and a gather, outputs exported; `status`, `logs` and
//!   `clean` against the bucket, while the leader runs and after;
//! - kill -9 of the leader, then `--restart`: finished jobs are not rerun,
//!   and a job that finished while no leader ran is recovered;
//! - two leaders started at the same instant on one store, new or being
//!   restarted: exactly one proceeds, the other exits 3;
//! - each permanent S3 problem stops the leader at its front door (exit 2,
//!   before any job runs) with a message naming the fix;
//! - a 128 MiB file through a job, with the leader's and the agent's peak
//!   RSS under 100 MB and the exported copy's SHA-256 equal to the input's
//!   (`bench-s3-workflow` does the same with 1 GiB).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use prost::Message;
use sha2::{Digest, Sha256};
use toil_jobstore::{JobStore, Locator, layout};
use toil_proto::v1::AttemptResult;
use toil_tests::data;
use toil_tests::local::{Finished, PeakSampler, Sandbox, count_lines, log_lines};
use toil_tests::moto::{Moto, REGION, unique_name};
use toil_tests::relay::Relay;
use toil_tests::restart::{self, Store, block_on};
use toil_tests::wait::{wait_for, when};

const T: Duration = Duration::from_secs(180);

/// The memory budget of issue 5 for the leader and each agent: 100 MB.
const RSS_LIMIT_KB: u64 = 100_000_000 / 1024;

fn aws(region: &str, name: &str) -> String {
    format!("aws:{region}:{name}")
}

/// A `toil-leader` command in `sb` that reaches moto through the standard
/// AWS environment variables.
fn leader(sb: &Sandbox, moto: &Moto, args: &[&str]) -> Command {
    let mut cmd = sb.leader(args);
    cmd.envs(moto.env());
    cmd
}

fn run(sb: &Sandbox, moto: &Moto, args: &[&str]) -> Finished {
    sb.spawn(leader(sb, moto, args), "leader").wait(T)
}

/// The job store as the test sees it (fixed test keys, moto's endpoint).
fn store(moto: &Moto, region: &str, name: &str) -> JobStore {
    let locator = Locator::Aws {
        region: region.into(),
        name: name.into(),
    };
    block_on(JobStore::open_with(&locator, moto.s3_options())).unwrap()
}

fn bucket_exists(moto: &Moto, name: &str) -> bool {
    block_on(async {
        moto.s3_client()
            .await
            .head_bucket()
            .bucket(format!("{name}--toil"))
            .send()
            .await
            .is_ok()
    })
}

// === a whole workflow ===

#[test]
fn a_workflow_runs_end_to_end_on_an_aws_job_store_with_status_logs_and_clean() {
    let moto = Moto::shared();
    let sb = Sandbox::new("s3wf");
    let name = unique_name("wf");
    let loc = aws(REGION, &name);
    let gate = sb.path().join("gate");
    sb.write(
        "data/words.txt",
        "alpha\nbeta\ngamma\ndelta\nepsilon\nzeta\neta\ntheta\n",
    );
    sb.write("data/extra.txt", "iota\n");
    sb.write(
        "wf.yaml",
        &format!(
            r#"
name: s3wf
defaults: {{cores: 0.2, memory: 64Mi}}
jobs:
  split:
    inputs: [data/words.txt, data/extra.txt]
    command: "cat words.txt extra.txt | split -l 3 -d - part && echo split into $(ls part* | wc -l) parts"
    outputs: {{parts: "part*"}}
  count:
    scatter: {{i: [0, 1, 2]}}
    inputs: [{{from: split.parts}}]
    command: "wc -l < part0{{{{i}}}} > n{{{{i}}}}.txt && echo part {{{{i}}}} has $(cat n{{{{i}}}}.txt) lines"
    outputs: {{n: "n{{{{i}}}}.txt"}}
  total:
    inputs: [{{from: count.n}}]
    command: |
      echo waiting for the gate
      while [ ! -e {gate} ]; do sleep 0.05; done
      awk '{{s += $1}} END {{print s}}' n0.txt n1.txt n2.txt > total.txt
      echo total $(cat total.txt)
    outputs: {{t: total.txt}}
outputs:
  total: total.t
  parts: split.parts
"#,
            gate = gate.display()
        ),
    );
    let t0 = Instant::now();
    let running = sb.spawn(
        leader(
            &sb,
            moto,
            &["run", "wf.yaml", "--jobStore", &loc, "--clean", "never"],
        ),
        "leader",
    );

    // While `total` waits: status, logs and clean go through the live
    // leader, found from the lease and state/leader.json in the bucket.
    let info = sb.leader_info_aws(moto, &name, T);
    assert_eq!(info.pid, running.pid());
    wait_for("total to start", T, || {
        let r = run(&sb, moto, &["logs", &loc, "total"]);
        when(
            r.code() == 0 && r.stdout.contains("waiting for the gate"),
            (r.code(), r.stdout, r.stderr),
        )
    });
    let status = run(&sb, moto, &["status", &loc, "--jobs"]);
    status.expect_code(0);
    assert!(
        status.stdout.contains("workflow s3wf: running")
            && status.stdout.contains(&format!("leader pid {}", info.pid)),
        "{}",
        status.stdout
    );
    let clean = run(&sb, moto, &["clean", &loc]);
    assert_ne!(clean.code(), 0, "clean must refuse while a leader runs");
    assert!(
        clean.stderr.contains("in use by a running leader"),
        "{}",
        clean.stderr
    );
    std::fs::write(&gate, "").unwrap();
    let r = running.wait(T);
    r.expect_code(0);
    let wall = t0.elapsed();

    // Job output shown live; outputs exported from the bucket.
    assert!(
        r.stdout.contains("[split] split into 3 parts"),
        "{}",
        r.stdout
    );
    for i in 0..3 {
        assert!(
            r.stdout
                .contains(&format!("[count[{i}]] part {i} has 3 lines")),
            "{}",
            r.stdout
        );
    }
    assert!(
        r.stderr.contains("importing 2 input file(s)"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains(&format!("job store {loc}")),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("5 jobs (5 succeeded)"), "{}", r.stderr);
    let out = sb.output_dir();
    assert_eq!(
        std::fs::read_to_string(out.join("total/total.txt")).unwrap(),
        "9\n"
    );
    let parts: Vec<String> = (0..3)
        .map(|i| std::fs::read_to_string(out.join(format!("parts/part0{i}"))).unwrap())
        .collect();
    assert_eq!(
        parts.concat(),
        "alpha\nbeta\ngamma\ndelta\nepsilon\nzeta\neta\ntheta\niota\n"
    );
    assert!(!sb.job_store().exists(), "no file job store on the side");

    // What is in the bucket: the imported inputs (by content hash), each
    // job's outputs and result, the journal.
    let s = store(moto, REGION, &name);
    let keys = block_on(s.list("")).unwrap();
    let sha = |text: &str| hex::encode(Sha256::digest(text.as_bytes()));
    for k in [
        layout::input_key(&sha(
            "alpha\nbeta\ngamma\ndelta\nepsilon\nzeta\neta\ntheta\n",
        )),
        layout::input_key(&sha("iota\n")),
        format!("{}part00", layout::output_prefix("split", 1)),
        format!("{}n2.txt", layout::output_prefix("count[2]", 1)),
        format!("{}total.txt", layout::output_prefix("total", 1)),
        layout::META_KEY.to_string(),
    ] {
        assert!(keys.contains(&k), "{k} missing from {keys:?}");
    }
    // Results the leader confirmed are in its journal; agents store them
    // separately only when the leader could not confirm them.
    assert!(!keys.iter().any(|k| k.starts_with("results/")), "{keys:?}");
    assert!(keys.iter().any(|k| k.starts_with("state/journal/")));

    // After the run: from the stored state alone.
    let status = run(&sb, moto, &["status", &loc, "--jobs"]);
    status.expect_code(0);
    let st = &status.stdout;
    assert!(
        st.contains("workflow s3wf: succeeded (no leader running)"),
        "{st}"
    );
    for job in ["split", "count[0]", "count[1]", "count[2]", "total"] {
        let line = st
            .lines()
            .find(|l| l.split_whitespace().next() == Some(job))
            .unwrap_or_else(|| panic!("no line for {job} in\n{st}"));
        assert_eq!(line.split_whitespace().nth(1), Some("succeeded"), "{line}");
    }
    let logs = run(&sb, moto, &["logs", &loc, "count[1]"]);
    logs.expect_code(0);
    assert_eq!(logs.stdout, "part 1 has 3 lines\n");
    let all = run(&sb, moto, &["logs", &loc]);
    all.expect_code(0);
    assert!(
        all.stdout
            .contains("==> split (attempt 1) <==\nsplit into 3 parts\n")
            && all.stdout.contains("total 9"),
        "{}",
        all.stdout
    );

    // clean deletes the bucket itself.
    let clean = run(&sb, moto, &["clean", &loc]);
    clean.expect_code(0);
    assert!(clean.stdout.contains(&format!("deleted job store {loc}")));
    assert!(!bucket_exists(moto, &name), "the bucket is gone");
    let status = run(&sb, moto, &["status", &loc]);
    assert_ne!(status.code(), 0);
    assert!(
        status.stderr.contains("there is no job store"),
        "{}",
        status.stderr
    );
    eprintln!("workflow on S3: {:.1} s", wall.as_secs_f64());
}

// === kill -9 and --restart ===

#[test]
fn kill_9_mid_job_then_restart_on_s3_reruns_only_the_unfinished_job() {
    let name = unique_name("kill");
    let store = Store::Aws {
        moto: Moto::shared(),
        region: REGION,
        name: &name,
    };
    let sb = Sandbox::new("s3kill9a");
    restart::kill_9_mid_job_then_restart_reruns_only_the_unfinished_job(&sb, &store);
    assert!(!bucket_exists(Moto::shared(), &name), "the bucket is gone");
}

#[test]
fn kill_9_then_a_job_finishing_while_no_leader_runs_is_recovered_from_s3() {
    let name = unique_name("recover");
    let store = Store::Aws {
        moto: Moto::shared(),
        region: REGION,
        name: &name,
    };
    let sb = Sandbox::new("s3kill9b");
    restart::kill_9_then_a_job_finishing_while_no_leader_runs_is_recovered(&sb, &store);
}

// === two leaders at once ===

/// Starts `n` leaders with `args` at the same instant (a barrier releases
/// the threads that spawn them) and waits for all of them.
fn race(sb: &Arc<Sandbox>, moto: &'static Moto, args: &[&str], n: usize) -> Vec<Finished> {
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let sb = sb.clone();
            let barrier = barrier.clone();
            let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
            std::thread::spawn(move || {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let cmd = leader(&sb, moto, &args);
                barrier.wait();
                sb.spawn(cmd, &format!("racer{i}")).wait(T)
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

/// Exactly one of `results` succeeded; every other one exited 3 before
/// starting the workflow, saying another leader has the store.
fn one_proceeded(results: &[Finished], loc: &str) {
    let winners = results.iter().filter(|r| r.code() == 0).count();
    assert_eq!(winners, 1, "exactly one leader proceeds: {results:#?}");
    for r in results.iter().filter(|r| r.code() != 0) {
        r.expect_code(3);
        let e = &r.stderr;
        assert!(e.contains(&format!("job store {loc}")), "{e}");
        assert!(
            e.contains("in use by a running leader")
                || e.contains("created by another leader at the same moment")
                || e.contains("another leader claimed job store"),
            "{e}"
        );
        assert!(!e.contains(" jobs) · job store"), "it never started: {e}");
    }
}

/// Jobs that take a moment, so the winner still holds the store when the
/// loser looks; each appends its name to RUNLOG.
fn slow_fan(sb: &Sandbox, flag: Option<&Path>) -> PathBuf {
    let runlog = sb.path().join("runlog");
    let check = flag
        .map(|f| format!("[ -e {} ] || exit 5; ", f.display()))
        .unwrap_or_default();
    sb.write(
        "fan.yaml",
        &format!(
            r#"
name: fan
defaults: {{cores: 0.1, memory: 32Mi}}
jobs:
  part:
    scatter: {{i: [0, 1, 2]}}
    command: "sleep 0.5; echo part{{{{i}}}} >> {log}"
  gather:
    after: [part]
    command: "{check}sleep 0.5; echo gather >> {log}"
"#,
            log = runlog.display()
        ),
    );
    runlog
}

#[test]
fn two_leaders_starting_at_once_on_a_new_s3_store_exactly_one_proceeds() {
    let moto = Moto::shared();
    // Several rounds: which step decides the race (creating the store, the
    // lease, the first journal record) depends on timing.
    for round in 0..3 {
        let sb = Arc::new(Sandbox::new("s3race"));
        let runlog = slow_fan(&sb, None);
        let name = unique_name("race");
        let loc = aws(REGION, &name);
        let results = race(&sb, moto, &["run", "fan.yaml", "--jobStore", &loc], 2);
        one_proceeded(&results, &loc);
        let log = log_lines(&runlog);
        for job in ["part0", "part1", "part2", "gather"] {
            assert_eq!(
                count_lines(&log, job),
                1,
                "round {round}: {job} ran once: {log:?}"
            );
        }
    }
}

#[test]
fn two_leaders_restarting_one_s3_store_at_once_exactly_one_proceeds() {
    let moto = Moto::shared();
    let sb = Arc::new(Sandbox::new("s3racerestart"));
    let flag = sb.path().join("fixed");
    let runlog = slow_fan(&sb, Some(&flag));
    let name = unique_name("rerace");
    let loc = aws(REGION, &name);
    // A first run fails at `gather` and keeps the store.
    let first = run(
        &sb,
        moto,
        &["run", "fan.yaml", "--jobStore", &loc, "--retryCount", "0"],
    );
    first.expect_code(1);
    assert!(first.stderr.contains("--restart"), "{}", first.stderr);
    std::fs::write(&flag, "").unwrap();
    let results = race(
        &sb,
        moto,
        &["run", "fan.yaml", "--jobStore", &loc, "--restart"],
        2,
    );
    one_proceeded(&results, &loc);
    let winner = results.iter().find(|r| r.code() == 0).unwrap();
    assert!(
        winner.stderr.contains("3 of 4 jobs already finished"),
        "{}",
        winner.stderr
    );
    let log = log_lines(&runlog);
    for job in ["part0", "part1", "part2", "gather"] {
        assert_eq!(count_lines(&log, job), 1, "{job} ran once in all: {log:?}");
    }
}

#[test]
fn concurrent_creation_of_one_store_has_one_creator_and_no_error() {
    // The root of the race above, on both backends: of several processes
    // creating one store at once, one creates it and the others find it.
    let moto = Moto::shared();
    let dir = toil_tests::harness::scratch("s3init-");
    block_on(async {
        for round in 0..5 {
            let name = unique_name("init");
            let locators = [
                Locator::Aws {
                    region: REGION.into(),
                    name: name.clone(),
                },
                Locator::File(dir.path().join(format!("js{round}"))),
            ];
            for locator in locators {
                let mut tasks = Vec::new();
                for _ in 0..4 {
                    let s = JobStore::open_with(&locator, moto.s3_options())
                        .await
                        .unwrap();
                    tasks.push(tokio::spawn(async move { s.initialize().await }));
                }
                let mut created = 0;
                for t in tasks {
                    match t.await.unwrap() {
                        Ok(true) => created += 1,
                        Ok(false) => {}
                        Err(e) => panic!("{locator}: round {round}: {e}"),
                    }
                }
                assert_eq!(created, 1, "{locator}: round {round}");
            }
        }
    });
}

// === permanent errors at the front door ===

/// A workflow whose only job leaves a mark if it ever runs.
fn marking_workflow(sb: &Sandbox) -> PathBuf {
    let mark = sb.path().join("job-ran");
    sb.write("in.txt", "input\n");
    sb.write(
        "mark.yaml",
        &format!(
            "name: mark\ndefaults: {{cores: 0.1, memory: 32Mi}}\njobs:\n  j:\n    inputs: [in.txt]\n    command: \"touch {}\"\n",
            mark.display()
        ),
    );
    mark
}

/// Runs `leader` (a `run` of mark.yaml), expecting exit 2 before anything
/// ran, with every one of `needles` in the message.
fn refused_at_the_front_door(leader: Command, sb: &Sandbox, mark: &Path, needles: &[&str]) {
    let t = Instant::now();
    let r = sb.spawn(leader, "refused").wait(T);
    r.expect_code(2);
    let e = &r.stderr;
    assert!(
        e.starts_with("toil-leader: "),
        "one message, nothing before it: {e}"
    );
    for n in needles {
        assert!(e.contains(n), "{n:?} missing in\n{e}");
    }
    assert!(!e.contains("importing"), "nothing imported: {e}");
    assert!(!e.contains(" jobs) · job store"), "never started: {e}");
    assert!(!mark.exists(), "no job ran");
    eprintln!("refused in {:.2} s: {e}", t.elapsed().as_secs_f64());
}

/// The environment of a machine with no AWS credentials anywhere.
fn without_credentials(cmd: &mut Command, moto: &Moto, home: &Path) {
    for k in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_SHARED_CREDENTIALS_FILE",
        "AWS_CONFIG_FILE",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    ] {
        cmd.env_remove(k);
    }
    cmd.env("HOME", home)
        .env("AWS_ENDPOINT_URL", moto.endpoint())
        .env("AWS_REGION", REGION)
        .env("AWS_EC2_METADATA_DISABLED", "true");
}

/// The head (request line and headers) of every HTTP request in `sent`.
fn request_heads(sent: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(sent);
    let mut heads = Vec::new();
    let mut rest = &text[..];
    while let Some(i) = ["GET /", "PUT /", "POST /", "HEAD /", "DELETE /"]
        .iter()
        .filter_map(|m| rest.find(m))
        .min()
    {
        let from = &rest[i..];
        let end = from.find("\r\n\r\n").unwrap_or(from.len());
        let head = &from[..end];
        if head
            .lines()
            .next()
            .is_some_and(|l| l.ends_with(" HTTP/1.1"))
        {
            heads.push(head.to_lowercase());
        }
        rest = &from[end.min(from.len()).max(1)..];
    }
    heads
}

/// Every S3 request the leader and its agents send names the account that
/// must own the bucket (`ExpectedBucketOwner`), so a bucket of the same
/// name owned by someone else is refused by S3 rather than written to. The
/// leader asks STS once which account its credentials belong to and hands
/// the answer to its agents; the wire (a relay in front of moto) shows one
/// lookup and the header on every request but the bucket's creation, which
/// cannot carry it. A malformed account id is refused before anything runs.
///
/// moto accepts the header without enforcing it, so S3's refusal of a
/// foreign bucket is AWS's documented behaviour, not tried here.
#[test]
fn every_s3_request_names_the_account_that_must_own_the_bucket() {
    let moto = Moto::shared();
    let relay = Relay::start(([127, 0, 0, 1], moto.port()).into()).unwrap();
    let sb = Sandbox::new("s3owner");
    let mark = marking_workflow(&sb);
    let name = unique_name("owner");
    let loc = aws(REGION, &name);
    let mut cmd = leader(&sb, moto, &["run", "mark.yaml", "--jobStore", &loc]);
    cmd.env("AWS_ENDPOINT_URL", relay.url());
    sb.spawn(cmd, "leader").wait(T).expect_code(0);
    assert!(mark.exists(), "the job ran");

    let heads = request_heads(&relay.sent());
    let sts: Vec<_> = heads.iter().filter(|h| h.starts_with("post / ")).collect();
    assert_eq!(sts.len(), 1, "one account lookup, by the leader: {sts:?}");
    let create = |h: &str| {
        h.starts_with(&format!("put /{name}--toil http/1.1"))
            || h.starts_with(&format!("put /{name}--toil/ http/1.1"))
    };
    let s3: Vec<_> = heads
        .iter()
        .filter(|h| !h.starts_with("post / ") && !create(h))
        .collect();
    assert!(s3.len() >= 10, "too few S3 requests seen: {}", s3.len());
    let missing: Vec<_> = s3
        .iter()
        .filter(|h| !h.contains("\r\nx-amz-expected-bucket-owner: 123456789012"))
        .map(|h| h.lines().next().unwrap_or_default())
        .collect();
    assert!(
        missing.is_empty(),
        "requests without the owner: {missing:?}"
    );
    // The header is signed, as S3 requires of every x-amz- header.
    assert!(
        s3.iter().all(|h| h.contains("x-amz-expected-bucket-owner;")
            || h.contains(";x-amz-expected-bucket-owner")),
        "the owner header is not among the signed headers"
    );

    let other = Sandbox::new("s3owner-bad");
    let mark = marking_workflow(&other);
    let mut bad = leader(
        &other,
        moto,
        &[
            "run",
            "mark.yaml",
            "--jobStore",
            &aws(REGION, &unique_name("owner")),
        ],
    );
    bad.env("TOIL_AWS_BUCKET_OWNER", "12345");
    refused_at_the_front_door(
        bad,
        &other,
        &mark,
        &[
            "TOIL_AWS_BUCKET_OWNER=\"12345\" is not an AWS account id",
            "12 digits",
        ],
    );
}

#[test]
fn no_credentials_stop_the_leader_before_any_job_runs() {
    let moto = Moto::shared();
    let sb = Sandbox::new("s3nocreds");
    let mark = marking_workflow(&sb);
    let home = sb.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let loc = aws(REGION, &unique_name("nocreds"));
    for restart in [false, true] {
        let mut args = vec!["run", "mark.yaml", "--jobStore", &loc];
        if restart {
            args.push("--restart");
        }
        let mut cmd = sb.leader(&args);
        without_credentials(&mut cmd, moto, &home);
        refused_at_the_front_door(
            cmd,
            &sb,
            &mark,
            &[
                "no AWS credentials found",
                "set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY",
                "~/.aws/credentials",
                "TOIL_AWS_SECRET_NAME",
            ],
        );
    }
}

#[test]
fn a_bucket_of_another_account_or_in_another_region_stops_the_leader_before_any_job_runs() {
    let moto = Moto::shared();
    let sb = Sandbox::new("s3perm");
    let mark = marking_workflow(&sb);

    // A bucket with the store's name, owned by another account (moto takes
    // the caller's account from this header).
    let taken = unique_name("taken");
    block_on(async {
        moto.s3_client()
            .await
            .create_bucket()
            .bucket(format!("{taken}--toil"))
            .customize()
            .mutate_request(|req| {
                req.headers_mut()
                    .insert("x-moto-account-id", "111111111111");
            })
            .send()
            .await
            .unwrap();
    });
    let loc = aws(REGION, &taken);
    refused_at_the_front_door(
        leader(&sb, moto, &["run", "mark.yaml", "--jobStore", &loc]),
        &sb,
        &mark,
        &[
            &format!(
                "the S3 bucket {taken}--toil already exists and is owned by another AWS account"
            ),
            "choose another job store name",
        ],
    );

    // A store made in us-west-2 (a whole run there, kept), then named with
    // the wrong region: new run, restart, and status all name the right one.
    let west = unique_name("west");
    let west_loc = aws("us-west-2", &west);
    let other = Sandbox::new("s3west");
    marking_workflow(&other);
    run(
        &other,
        moto,
        &[
            "run",
            "mark.yaml",
            "--jobStore",
            &west_loc,
            "--clean",
            "never",
        ],
    )
    .expect_code(0);
    let wrong = aws("us-east-1", &west);
    let fix = format!("use --jobStore aws:us-west-2:{west}");
    for restart in [false, true] {
        let mut args = vec!["run", "mark.yaml", "--jobStore", &wrong];
        if restart {
            args.push("--restart");
        }
        refused_at_the_front_door(
            leader(&sb, moto, &args),
            &sb,
            &mark,
            &[
                &format!("S3 bucket {west}--toil is in region us-west-2, not us-east-1"),
                &fix,
            ],
        );
    }
    let status = run(&sb, moto, &["status", &wrong]);
    assert_ne!(status.code(), 0);
    assert!(status.stderr.contains(&fix), "{}", status.stderr);
    run(&sb, moto, &["clean", &west_loc]).expect_code(0);
    assert!(!bucket_exists(moto, &west));
}

#[test]
fn access_denied_an_unknown_key_and_a_wrong_secret_stop_the_leader_before_any_job_runs() {
    // moto enforces IAM after its first two requests (the user's creation).
    let moto = Moto::start_with_env(&[("INITIAL_NO_AUTH_ACTION_COUNT", "2")]).unwrap();
    let user = moto.iam_user_without_permissions().unwrap();
    let sb = Sandbox::new("s3denied");
    let mark = marking_workflow(&sb);
    let name = unique_name("denied");
    let loc = aws(REGION, &name);
    let bucket = format!("{name}--toil");
    let cases: [(&str, &str, Vec<String>); 3] = [
        (
            &user.access_key_id,
            &user.secret_access_key,
            vec![
                "access denied".into(),
                format!("arn:aws:s3:::{bucket}"),
                "in their IAM policy".into(),
            ],
        ),
        (
            "AKIAUNKNOWNUNKNOWN00",
            "whatever",
            vec![
                "S3 does not recognise the AWS access key id".into(),
                "InvalidAccessKeyId".into(),
                "fix AWS_ACCESS_KEY_ID".into(),
            ],
        ),
        (
            &user.access_key_id,
            "not-the-secret",
            vec![
                "S3 rejected the request signature".into(),
                "fix AWS_SECRET_ACCESS_KEY".into(),
            ],
        ),
    ];
    for (id, secret, needles) in &cases {
        for restart in [false, true] {
            let mut args = vec!["run", "mark.yaml", "--jobStore", &loc];
            if restart {
                args.push("--restart");
            }
            let mut cmd = leader(&sb, &moto, &args);
            cmd.env("AWS_ACCESS_KEY_ID", id)
                .env("AWS_SECRET_ACCESS_KEY", secret);
            let needles: Vec<&str> = needles.iter().map(String::as_str).collect();
            refused_at_the_front_door(cmd, &sb, &mark, &needles);
        }
    }
}

// === a large file through a job ===

#[test]
fn a_128_mib_file_goes_through_a_job_with_leader_and_agent_under_100_mb() {
    const MIB: u64 = 128;
    let moto = Moto::start().unwrap();
    let sb = Sandbox::new("s3big");
    let name = unique_name("big");
    let loc = aws(REGION, &name);
    let src = sb.path().join("big.bin");
    let sha = data::write_random(&src, MIB, 0x9E37_79B9_7F4A_7C15).unwrap();
    sb.write(
        "big.yaml",
        r#"
name: big
defaults: {cores: 1, memory: 256Mi, disk: 1Gi}
jobs:
  copy:
    inputs: [big.bin]
    command: "cp big.bin copy.bin"
    outputs: {copy: copy.bin}
outputs:
  copy: copy.copy
"#,
    );
    let t0 = Instant::now();
    let running = sb.spawn(
        leader(
            &sb,
            &moto,
            &["run", "big.yaml", "--jobStore", &loc, "--clean", "never"],
        ),
        "leader",
    );
    let sampler = PeakSampler::start(running.pid(), Duration::from_millis(10));
    let (r, max_rss_kb) = running.wait_with_max_rss(T);
    let peaks = sampler.stop();
    r.expect_code(0);
    let wall = t0.elapsed();

    // End to end: the exported copy is the input, bit for bit.
    let exported = sb.output_dir().join("copy/copy.bin");
    assert_eq!(std::fs::metadata(&exported).unwrap().len(), MIB << 20);
    assert_eq!(
        data::sha256_file(&exported).unwrap(),
        sha,
        "exported copy differs from the input"
    );
    // The agent really moved the bytes: downloaded the input from the
    // bucket and uploaded the output to it.
    let s = store(&moto, REGION, &name);
    let usage = journaled_result(&s, "copy", 1).usage.unwrap();
    assert_eq!(
        (usage.bytes_downloaded, usage.bytes_uploaded),
        (MIB << 20, MIB << 20),
        "{usage:?}"
    );
    let stored = block_on(s.size(&format!("{}copy.bin", layout::output_prefix("copy", 1))));
    assert_eq!(stored.unwrap(), Some(MIB << 20));

    let agent_kb = peaks.max_child_kb("toil-agent");
    eprintln!(
        "{MIB} MiB through a job on S3 in {:.1} s: leader peak RSS {:.1} MB, agent {:.1} MB ({} agent(s), {} samples); largest over the leader and everything it waited for: {:.1} MB",
        wall.as_secs_f64(),
        peaks.root_kb as f64 * 1024.0 / 1e6,
        agent_kb as f64 * 1024.0 / 1e6,
        peaks.count("toil-agent"),
        peaks.rounds,
        max_rss_kb as f64 * 1024.0 / 1e6,
    );
    assert_eq!(peaks.count("toil-agent"), 1, "{peaks:?}");
    assert!(agent_kb > 0 && peaks.root_kb > 0, "{peaks:?}");
    assert!(
        peaks.root_kb < RSS_LIMIT_KB,
        "leader peak RSS {} KiB",
        peaks.root_kb
    );
    assert!(agent_kb < RSS_LIMIT_KB, "agent peak RSS {agent_kb} KiB");
    // The kernel's record at exit (wait4) of the largest peak of the leader
    // and everything it reaped: covers the last moments the sampler may
    // have missed, and the job's own processes.
    assert!(max_rss_kb < RSS_LIMIT_KB, "peak RSS {max_rss_kb} KiB");
    run(&sb, &moto, &["clean", &loc]).expect_code(0);
}

/// The result of attempt `n` of `job` as the leader journaled it.
fn journaled_result(s: &JobStore, job: &str, n: u32) -> AttemptResult {
    use toil_proto::v1::JournalRecord;
    use toil_proto::v1::journal_entry::Kind;
    let (_, loaded) = block_on(toil_jobstore::state::Journal::load(s)).unwrap();
    assert!(loaded.snapshot.is_none(), "a one-job run takes no snapshot");
    loaded
        .records
        .iter()
        .flat_map(|(_, data)| JournalRecord::decode(data.clone()).unwrap().entries)
        .find_map(|e| match e.kind {
            Some(Kind::End(end)) if end.job_id == job && end.attempt == n => end.result,
            _ => None,
        })
        .unwrap_or_else(|| panic!("no journaled end of {job} attempt {n}"))
}
