//! Attacks tried for real through the release binaries' code paths: a job
//! that acts against the leader with what it can reach.

#![allow(clippy::unwrap_used, clippy::expect_used)]

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

/// Another user of the machine reads a workflow's file job store: every
/// directory the store holds is 0700 and every file 0600, so (run as root,
/// the test tries it as `nobody`) the other user can read a file beside the
/// store but nothing inside it, `state/leader.json` included.
#[test]
fn another_local_user_can_read_nothing_in_a_file_job_store() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;

    let sb = Sandbox::new("attack-other-user");
    sb.write(
        "wf.yaml",
        "jobs:\n  a:\n    cores: 0.1\n    memory: 32Mi\n    command: \"echo hi > a.txt\"\n    outputs: {a: a.txt}\noutputs:\n  a: a.a\n",
    );
    let r = sb.run(&["run", "wf.yaml", "--clean", "never"], T);
    r.expect_code(0);

    let store = sb.job_store();
    let mut seen = 0;
    let mut stack = vec![store.clone()];
    while let Some(dir) = stack.pop() {
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{} is {mode:o}", dir.display());
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                stack.push(e.path());
            } else {
                let mode = meta.permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{} is {mode:o}", e.path().display());
                seen += 1;
            }
        }
    }
    assert!(seen >= 3, "only {seen} files in the job store");

    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("not root: the modes are checked, the read as another user is not tried");
        return;
    }
    // Open the sandbox to everyone, as a home directory often is, and put a
    // readable file beside the store: the other user reaches that one.
    std::fs::set_permissions(sb.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let beside = sb.write("public.txt", "public\n");
    std::fs::set_permissions(&beside, std::fs::Permissions::from_mode(0o644)).unwrap();
    let read_as_nobody = |path: &std::path::Path| {
        let mut cmd = std::process::Command::new("cat");
        cmd.arg(path);
        // SAFETY: setgid/setuid are async-signal-safe system calls made in
        // the child between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                nix::unistd::setgroups(&[]).map_err(std::io::Error::from)?;
                nix::unistd::setgid(nix::unistd::Gid::from_raw(65534))
                    .map_err(std::io::Error::from)?;
                nix::unistd::setuid(nix::unistd::Uid::from_raw(65534)).map_err(std::io::Error::from)
            });
        }
        cmd.output().unwrap()
    };
    let ok = read_as_nobody(&beside);
    assert!(
        ok.status.success(),
        "nobody cannot read even the public file: {ok:?}"
    );
    let refused = read_as_nobody(&store.join("state/leader.json"));
    assert!(
        !refused.status.success(),
        "nobody read leader.json: {refused:?}"
    );
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("Permission denied"), "{err}");
}
