//! Small traps found by trying the leader as a new user would, each checked
//! through the real binaries: what `status` says after a successful run
//! deleted its job store, `logs` for a scattered job, the advice after a
//! cancelled run, and `status` or `logs` piped into `head`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use toil_proto::v1::CancelWorkflowRequest;
use toil_tests::local::{Sandbox, client};

const T: Duration = Duration::from_secs(120);

fn js(sb: &Sandbox) -> String {
    sb.job_store().to_str().expect("utf-8").to_string()
}

#[test]
fn status_after_a_successful_run_says_the_store_was_deleted_and_how_to_keep_it() {
    let sb = Sandbox::new("usab-status");
    sb.write("ok.yaml", "jobs:\n  a:\n    command: echo hi\n");
    sb.run(&["run", "ok.yaml"], T).expect_code(0);
    assert!(!sb.job_store().exists(), "deleted on success by default");
    let r = sb.run(&["status", &js(&sb)], T);
    assert_ne!(r.code(), 0);
    assert!(r.stderr.contains("there is no job store"), "{}", r.stderr);
    assert!(r.stderr.contains("--clean onSuccess"), "{}", r.stderr);
    assert!(r.stderr.contains("--clean never"), "{}", r.stderr);
}

#[test]
fn logs_for_a_scattered_job_show_every_instance() {
    let sb = Sandbox::new("usab-logs");
    sb.write(
        "scatter.yaml",
        "jobs:\n  part:\n    scatter: {i: {range: 11}}\n    command: echo instance {{i}}\n",
    );
    sb.run(&["run", "scatter.yaml", "--clean", "never"], T)
        .expect_code(0);
    let r = sb.run(&["logs", &js(&sb), "part"], T);
    r.expect_code(0);
    let headers: Vec<&str> = r.stdout.lines().filter(|l| l.starts_with("==> ")).collect();
    let want: Vec<String> = (0..11)
        .map(|i| format!("==> part[{i}] (attempt 1) <=="))
        .collect();
    assert_eq!(headers, want, "every instance, in numeric order");
    for i in 0..11 {
        assert!(
            r.stdout.contains(&format!("instance {i}\n")),
            "{}",
            r.stdout
        );
    }
    // One instance alone, without a header.
    let r = sb.run(&["logs", &js(&sb), "part[3]"], T);
    r.expect_code(0);
    assert_eq!(r.stdout, "instance 3\n");
    // A name that matches nothing lists what there is.
    let r = sb.run(&["logs", &js(&sb), "prat"], T);
    assert_ne!(r.code(), 0);
    assert!(r.stderr.contains("part[0]"), "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_workflow_is_told_what_will_run_it_again() {
    let sb = Sandbox::new("usab-cancel");
    let gate = sb.path().join("never");
    sb.write(
        "slow.yaml",
        &format!(
            "jobs:\n  wait:\n    command: while [ ! -e {} ]; do sleep 0.05; done\n",
            gate.display()
        ),
    );
    let leader = sb.spawn(sb.leader(&["run", "slow.yaml"]), "leader");
    let info = sb.leader_info(T);
    let mut c = client(&info, &info.client_token).await;
    c.cancel_workflow(CancelWorkflowRequest {
        reason: "changed my mind".into(),
    })
    .await
    .expect("cancel");
    let r = tokio::task::spawn_blocking(move || leader.wait(T))
        .await
        .expect("join");
    assert_ne!(r.code(), 0);
    assert!(r.stderr.contains("was cancelled"), "{}", r.stderr);
    let advice = r
        .stderr
        .lines()
        .find(|l| l.contains("toil-leader clean "))
        .unwrap_or_else(|| panic!("no clean advice: {}", r.stderr));
    assert!(advice.contains(&js(&sb)), "{advice}");
    assert!(
        !r.stderr.contains("after fixing the problem, resume with"),
        "{}",
        r.stderr
    );
}

#[test]
fn ctrl_c_records_the_interrupted_job_and_a_restart_says_what_happened() {
    let sb = Sandbox::new("usab-sigint");
    let gate = sb.path().join("gate");
    let started = sb.path().join("started");
    sb.write(
        "slow.yaml",
        &format!(
            "jobs:\n  slow:\n    command: touch {}; while [ ! -e {} ]; do sleep 0.05; done\n",
            started.display(),
            gate.display()
        ),
    );
    let leader = sb.spawn(sb.leader(&["run", "slow.yaml"]), "leader");
    toil_tests::wait::wait_for("the job to start", T, || {
        toil_tests::wait::when(started.exists(), "not started")
    });
    leader.signal(nix::sys::signal::Signal::SIGINT);
    let r = leader.wait(T);
    r.expect_code(130);
    let status = sb.run(&["status", &js(&sb), "--jobs"], T);
    status.expect_code(0);
    let line = status
        .stdout
        .lines()
        .find(|l| l.starts_with("slow"))
        .unwrap_or_else(|| panic!("no line for slow:\n{}", status.stdout))
        .to_string();
    assert!(!line.contains("running"), "{}", status.stdout);
    std::fs::write(&gate, "").expect("gate");
    let r = sb.run(&["run", "slow.yaml", "--restart"], T);
    r.expect_code(0);
    assert!(!r.stderr.contains("recovered the results"), "{}", r.stderr);
}

#[test]
fn a_restart_applies_the_settings_its_command_line_gives_and_keeps_the_rest() {
    let sb = Sandbox::new("usab-settings");
    let count = sb.path().join("count");
    // Fails until its fourth run.
    sb.write(
        "flaky.yaml",
        &format!(
            "jobs:\n  flaky:\n    cores: 0.1\n    memory: 32Mi\n    command: n=$(cat {c} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {c}; [ $n -ge 4 ]\n",
            c = count.display()
        ),
    );
    let runs = || {
        std::fs::read_to_string(&count)
            .expect("count")
            .trim()
            .parse::<u32>()
            .expect("number")
    };
    let first = sb.run(
        &["run", "flaky.yaml", "--clean", "never", "--retryCount", "0"],
        T,
    );
    first.expect_code(1);
    assert_eq!(runs(), 1);

    // No flag: the workflow keeps --retryCount 0 (the built-in default, 1,
    // would have run it twice).
    let kept = sb.run(&["run", "flaky.yaml", "--restart", "--clean", "never"], T);
    kept.expect_code(1);
    assert_eq!(runs(), 2, "{}", kept.stderr);
    assert!(!kept.stderr.contains("settings changed"), "{}", kept.stderr);

    // Given explicitly: it applies from this restart on, and is named.
    let changed = sb.run(
        &[
            "run",
            "flaky.yaml",
            "--restart",
            "--clean",
            "never",
            "--retryCount",
            "1",
        ],
        T,
    );
    changed.expect_code(0);
    assert_eq!(runs(), 4, "{}", changed.stderr);
    assert!(
        changed
            .stderr
            .contains("settings changed since the last run: --retryCount 0 -> 1"),
        "{}",
        changed.stderr
    );
    // The journal carries the change: an offline status replays it to the
    // same end.
    let status = sb.run(&["status", &js(&sb), "--jobs"], T);
    status.expect_code(0);
    assert!(status.stdout.contains("succeeded"), "{}", status.stdout);
}

#[test]
fn a_second_ctrl_c_exits_at_once_with_130() {
    let sb = Sandbox::new("usab-sigint2");
    let started = sb.path().join("started");
    // A job that ignores SIGTERM: the clean stop waits out the agent's
    // 10 s grace before killing it.
    sb.write(
        "stubborn.yaml",
        &format!(
            "jobs:\n  stubborn:\n    cores: 0.1\n    memory: 32Mi\n    command: trap '' TERM; touch {}; while true; do sleep 0.05; done\n",
            started.display()
        ),
    );
    let leader = sb.spawn(sb.leader(&["run", "stubborn.yaml"]), "leader");
    toil_tests::wait::wait_for("the job to start", T, || {
        toil_tests::wait::when(started.exists(), "not started")
    });
    leader.signal(nix::sys::signal::Signal::SIGINT);
    // The first one started a clean stop, which is waiting on the job (the
    // leader has journaled the attempt as interrupted).
    toil_tests::wait::wait_for("the clean stop to be under way", T, || {
        let err = leader.stderr_now();
        toil_tests::wait::when(err.contains("interrupted: the leader was stopped"), err)
    });
    let t0 = std::time::Instant::now();
    leader.signal(nix::sys::signal::Signal::SIGINT);
    let r = leader.wait(T);
    let took = t0.elapsed();
    r.expect_code(130);
    assert!(
        r.stderr.contains("second interrupt: exiting now"),
        "{}",
        r.stderr
    );
    // Far less than the 10 s the clean stop would have waited.
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

/// `toil-leader logs … | head` and `status … | head`: when the reader goes
/// away, the command stops quietly with 0, as `cat` does, instead of an
/// error or a panic about a broken pipe. The log is 1.3 MB, more than any
/// pipe buffer and more than one stored segment, so the write must fail.
#[test]
fn viewing_commands_piped_into_head_stop_quietly() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let sb = Sandbox::new("usab-pipe");
    sb.write(
        "big.yaml",
        "jobs:\n  big:\n    command: [sh, -c, 'seq 1 200000']\n  many:\n    scatter: {i: {range: 40}}\n    command: echo {{i}}\n",
    );
    sb.run(&["run", "big.yaml", "--clean", "never"], T)
        .expect_code(0);
    // The whole log, a segment at a time.
    let r = sb.run(&["logs", &js(&sb), "big"], T);
    r.expect_code(0);
    assert_eq!(r.stdout.lines().count(), 200_000);
    assert_eq!(r.stdout.lines().last(), Some("200000"));
    let store = js(&sb);
    for (args, read_first) in [
        (["logs", store.as_str(), "big"], true),
        // Small outputs: the reader goes before the command has opened the
        // job store, so its first write already finds no reader.
        (["status", store.as_str(), "--jobs"], false),
        (["status", store.as_str(), "--json"], false),
    ] {
        let mut cmd = sb.leader(&args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        if read_first {
            let mut first = String::new();
            BufReader::new(stdout).read_line(&mut first).unwrap();
            assert_eq!(first, "1\n", "{args:?}");
        } else {
            drop(stdout);
        }
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {:?} {stderr}", out.status);
        assert!(
            !stderr.contains("roken pipe") && !stderr.contains("panicked"),
            "{args:?}: {stderr}"
        );
    }
}
