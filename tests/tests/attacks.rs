//! Attacks tried for real through the release binaries' code paths: a job
//! that acts against the leader with what it can reach.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::process::CommandExt;
use std::time::Duration;

use toil_tests::harness;
use toil_tests::local::Sandbox;
use toil_tests::python::{generate, script};

const T: Duration = Duration::from_secs(120);

/// A job reads its agent's token from `/proc/PPID/environ` and reports
/// "succeeded" in the agent's place, with outputs that would be exported
/// outside the output directory (`../`, an absolute path), an output it
/// never declared, and a stored file that is not its own. Each report is
/// refused with INVALID_ARGUMENT; the job's real result is then reported by
/// its agent, and the workflow ends as if nothing had happened.
#[test]
fn a_job_forging_its_agents_result_is_refused_and_the_workflow_goes_on() {
    let sb = Sandbox::new("attack-forge");
    let generated = generate(sb.path());
    let verdict = sb.path().join("verdict.json");
    let absolute = std::path::Path::new("/tmp/toil-forged-absolute.txt");
    let _ = std::fs::remove_file(absolute);
    sb.write(
        "wf.yaml",
        &format!(
            r#"
jobs:
  evil:
    cores: 0.1
    memory: 64Mi
    env: {{PYTHONPATH: "{gen}"}}
    command: "{py} {script} out > {verdict} && echo real > out.txt"
    outputs: {{out: out.txt}}
  after:
    cores: 0.1
    memory: 32Mi
    inputs: [{{from: evil.out}}]
    command: "cat out.txt > seen.txt"
    outputs: {{seen: seen.txt}}
outputs:
  result: evil.out
  seen: after.seen
"#,
            gen = generated.display(),
            py = harness::venv_bin("python").display(),
            script = script("forge_result.py").display(),
            verdict = verdict.display(),
        ),
    );
    let r = sb.run(&["run", "wf.yaml"], T);
    r.expect_code(0);

    let v: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&verdict).unwrap().trim()).unwrap();
    for forgery in ["dotdot", "absolute", "undeclared", "foreign_file"] {
        assert_eq!(v[forgery], "INVALID_ARGUMENT", "{forgery}: {v}");
    }
    assert!(
        r.stderr.contains(
            "refused a result for attempt evil.1 (it names outputs the job cannot have made)"
        ),
        "{}",
        r.stderr
    );
    // The real result went through: the output and its consumer are right.
    let out = sb.output_dir();
    assert_eq!(
        std::fs::read_to_string(out.join("result/out.txt")).unwrap(),
        "real\n"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("seen/seen.txt")).unwrap(),
        "real\n"
    );
    // And nothing was written where the forgeries pointed.
    assert!(!absolute.exists());
    for dir in [sb.path().to_path_buf(), out.clone(), out.join("result")] {
        assert!(!dir.join("escaped.txt").exists(), "{}", dir.display());
    }
    assert!(!out.parent().unwrap().join("escaped.txt").exists());
}

/// A job prints terminal escape sequences (retitle the window, clear the
/// screen, a C1 control); the leader shows them escaped, on the live echo
/// and in the summary's end of log, so they cannot act on the user's
/// terminal.
#[test]
fn a_jobs_escape_sequences_reach_the_terminal_escaped() {
    let sb = Sandbox::new("attack-escapes");
    sb.write(
        "wf.yaml",
        "jobs:\n  loud:\n    cores: 0.1\n    memory: 32Mi\n    command: printf '\\033]0;pwned\\007\\033[2Jhello\\302\\233\\n'; exit 3\n",
    );
    let r = sb.run(&["run", "wf.yaml", "--retryCount", "0"], T);
    r.expect_code(1);
    let all = format!("{}{}", r.stdout, r.stderr);
    assert!(
        !all.contains('\u{1b}'),
        "a raw ESC reached the terminal: {all:?}"
    );
    assert!(
        !all.contains('\u{9b}'),
        "a raw CSI reached the terminal: {all:?}"
    );
    assert!(
        !all.contains('\u{7}'),
        "a raw BEL reached the terminal: {all:?}"
    );
    assert!(
        r.stdout
            .contains(r"[loud] \x1b]0;pwned\x07\x1b[2Jhello\u{9b}"),
        "{}",
        r.stdout
    );
    assert!(
        r.stderr.contains(r"| \x1b]0;pwned\x07\x1b[2Jhello\u{9b}"),
        "{}",
        r.stderr
    );
}

/// What a job on this machine can try for its agent's token: its own
/// environment, and its agent's `/proc/PID/environ` and `/proc/PID/mem`.
const PROBE: &str = r#"
jobs:
  probe:
    cores: 0.1
    memory: 32Mi
    command: |
      if env | grep -q '^TOIL_AGENT_TOKEN='; then echo "probe: the token is in the job's environment"; else echo "probe: no token in the job's environment"; fi
      echo "probe: the parent is $(tr '\0' ' ' < /proc/$PPID/cmdline)"
      if cat /proc/$$/environ > /dev/null; then echo "probe: read its own environment"; fi
      if cat /proc/$PPID/environ > /dev/null 2> environ.err; then echo "probe: read the agent's environment"; else echo "probe: reading the agent's environment failed: $(cat environ.err)"; fi
      if (exec 3< /proc/$PPID/mem) 2> mem.err; then echo "probe: opened the agent's memory"; else echo "probe: opening the agent's memory failed: $(cat mem.err)"; fi
"#;

/// Runs between fork and exec of the leader: empties the capability
/// bounding set, so the leader, its agents and their jobs run as this uid
/// with no capabilities (no CAP_SYS_PTRACE), as an ordinary user's do. The
/// tests run as root, whose CAP_SYS_PTRACE would read any process's /proc.
fn drop_capabilities() -> std::io::Result<()> {
    let zero: libc::c_ulong = 0;
    for cap in 0..64u32 {
        // SAFETY: prctl is async-signal-safe; EINVAL past the last
        // capability is expected and ignored.
        unsafe {
            libc::prctl(
                libc::PR_CAPBSET_DROP,
                libc::c_ulong::from(cap),
                zero,
                zero,
                zero,
            )
        };
    }
    Ok(())
}

/// A job looks for its local agent's token: it is not in the job's
/// environment, and the agent (non-dumpable from its first instruction)
/// refuses the job's reads of its `/proc/PID/environ` and `/proc/PID/mem`
/// with EACCES, while the job can read its own: the same user, no
/// CAP_SYS_PTRACE.
#[test]
fn a_job_cannot_read_its_local_agents_token() {
    let sb = Sandbox::new("attack-proc");
    sb.write("wf.yaml", PROBE);
    let mut cmd = sb.leader(&["run", "wf.yaml"]);
    // SAFETY: drop_capabilities only calls prctl.
    unsafe {
        cmd.pre_exec(drop_capabilities);
    }
    let r = sb.spawn(cmd, "leader").wait(T);
    r.expect_code(0);
    let out = &r.stdout;
    assert!(
        out.contains("probe: no token in the job's environment"),
        "{out}"
    );
    assert!(
        out.contains("probe: the parent is ") && out.contains("toil-agent run"),
        "{out}"
    );
    assert!(out.contains("probe: read its own environment"), "{out}");
    assert!(
        out.contains("probe: reading the agent's environment failed: cat: /proc/")
            && out.contains("/environ: Permission denied"),
        "{out}"
    );
    assert!(
        out.contains("probe: opening the agent's memory failed:")
            && out.contains("/mem: Permission denied"),
        "{out}"
    );
    assert!(!out.contains("probe: read the agent's"), "{out}");
    assert!(!out.contains("probe: opened the agent's"), "{out}");
}
