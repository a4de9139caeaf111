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

/// Another user of the machine reads a workflow's file job store: every
/// directory the store holds is 0700 and every file 0600, so (run as root,
/// the test tries it as `nobody`) the other user can read a file beside the
/// store but nothing inside it, `state/leader.json` included.
#[test]
fn another_local_user_can_read_nothing_in_a_file_job_store() {
    use std::os::unix::fs::PermissionsExt;

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

/// A job goes after the leader's memory through its log: it streams chunks
/// of its own attempt numbered a million ahead (the leader once buffered
/// them all: 945 MB in 3.7 s), then 40 MiB of chunks within the window that
/// wait for a missing one, while a second job writes 100 MB without a
/// newline (once rescanned from the start on every chunk: 40 MB cost 14 s
/// of CPU). The far chunks are refused with OUT_OF_RANGE naming the window,
/// the held ones with RESOURCE_EXHAUSTED naming the limit, the flood goes
/// through in 64 KiB pieces, and no process of the run (the leader above
/// all) passes 200 MB.
#[test]
fn a_job_flooding_its_log_cannot_grow_the_leaders_memory() {
    let sb = Sandbox::new("attack-log-flood");
    let generated = generate(sb.path());
    let verdict = sb.path().join("verdict.json");
    sb.write(
        "wf.yaml",
        &format!(
            r#"
jobs:
  ahead:
    cores: 0.1
    memory: 128Mi
    env: {{PYTHONPATH: "{gen}", VERDICT: "{verdict}"}}
    command: "{py} {script} ahead"
  flood:
    cores: 0.1
    memory: 32Mi
    command: "head -c 100000000 /dev/zero | tr '\\0' x"
"#,
            gen = generated.display(),
            verdict = verdict.display(),
            py = harness::venv_bin("python").display(),
            script = script("log_attack.py").display(),
        ),
    );
    let (r, max_rss_kb) = sb
        .spawn(sb.leader(&["run", "wf.yaml", "--clean", "never"]), "leader")
        .wait_with_max_rss(Duration::from_secs(600));
    assert_eq!(r.code(), 0, "{}", r.stderr);

    let v: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&verdict).unwrap().trim()).unwrap();
    let far = v["far"].as_str().unwrap();
    assert!(
        far.starts_with("OUT_OF_RANGE: log chunk 1000000 is more than 256 chunks ahead"),
        "{v}"
    );
    let held = v["held"].as_str().unwrap();
    assert!(held.starts_with("RESOURCE_EXHAUSTED: "), "{v}");
    assert!(held.contains("past the limit of 8388608"), "{v}");

    assert!(
        max_rss_kb < 200 << 10,
        "a process of the run reached {max_rss_kb} KiB"
    );

    // The flood reached the terminal in pieces of at most 64 KiB; what the
    // terminal could not take in time is counted, not held.
    let pieces: Vec<&str> = r
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("[flood] "))
        .filter(|l| !l.starts_with("[toil-leader]"))
        .collect();
    assert!(
        pieces
            .iter()
            .all(|p| p.len() <= 64 << 10 && p.bytes().all(|b| b == b'x'))
    );
    let shown: usize = pieces.iter().map(|p| p.len()).sum();
    assert!(
        shown == 100_000_000 || r.stdout.contains("of this job's output not shown here"),
        "{shown} bytes shown and no note of the rest"
    );
    // The stored log has it all, in order.
    let js = sb.job_store();
    let stored = sb.run(&["logs", js.to_str().unwrap(), "flood"], T);
    stored.expect_code(0);
    assert_eq!(stored.stdout.trim_end().len(), 100_000_000);
    assert!(stored.stdout.trim_end().bytes().all(|b| b == b'x'));
}

/// A job uses its own token (TOIL_ATTEMPT_TOKEN) to read another job's log,
/// which holds a password (once it could). It is refused with
/// PERMISSION_DENIED naming what a job may read; its own log it reads; the
/// other job's record it sees without its outputs' files.
#[test]
fn a_jobs_token_reads_its_own_log_and_not_another_jobs() {
    let sb = Sandbox::new("attack-log-spy");
    let generated = generate(sb.path());
    let verdict = sb.path().join("verdict.json");
    sb.write(
        "wf.yaml",
        &format!(
            r#"
jobs:
  secret:
    cores: 0.1
    memory: 32Mi
    command: "echo DB_PASSWORD=hunter2; echo s > s.txt"
    outputs: {{s: s.txt}}
  spy:
    cores: 0.1
    memory: 64Mi
    after: [secret]
    env: {{PYTHONPATH: "{gen}", VERDICT: "{verdict}"}}
    command: "{py} {script} spy secret"
"#,
            gen = generated.display(),
            verdict = verdict.display(),
            py = harness::venv_bin("python").display(),
            script = script("log_attack.py").display(),
        ),
    );
    let r = sb.run(&["run", "wf.yaml"], T);
    r.expect_code(0);
    let v: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&verdict).unwrap().trim()).unwrap();
    assert_eq!(
        v["other"],
        "PERMISSION_DENIED: a job's token (job spy) may read only its own job's logs and those of the jobs it added; secret is neither: use the workflow's client token to read any job",
        "{v}"
    );
    assert_eq!(v["other_log"], "", "{v}");
    assert_eq!(v["own"], "OK", "{v}");
    assert!(v["own_log"].as_str().unwrap().contains("spying now"), "{v}");
    assert_eq!(v["other_record"]["state"], "JOB_STATE_SUCCEEDED", "{v}");
    assert_eq!(v["other_record"]["outputs"], 0, "{v}");
}

/// The original content of the input the cache tests share: 100,000 bytes.
fn original_input() -> String {
    "ACGT".repeat(25_000)
}

/// Runs the workflow in `file` with its own job store (another workflow)
/// on the sandbox's one work directory, so on one node cache. The cache
/// gets a byte budget so that the test does not depend on the machine's
/// free disk (the default keeps up to 10 GiB free).
fn run_workflow(
    sb: &Sandbox,
    file: &str,
    yaml: &str,
    extra: &[&str],
) -> toil_tests::local::Finished {
    sb.write(file, yaml);
    let store = sb.path().join(format!("js-{file}"));
    let out = sb.path().join(format!("out-{file}"));
    let (store, out) = (store.to_string_lossy(), out.to_string_lossy());
    let mut args = vec![
        "run",
        file,
        "--jobStore",
        &store,
        "--outputDir",
        &out,
        "--cacheMaxSize",
        "100M",
    ];
    args.extend(extra);
    sb.run(&args, T)
}

/// A workflow whose job reads `data.bin` and exports what it read.
const READER: &str = r#"
jobs:
  reader:
    cores: 0.1
    memory: 32Mi
    inputs: [data.bin]
    command: "cat data.bin > seen.txt"
    outputs: {seen: seen.txt}
outputs:
  seen: reader.seen
"#;

fn seen(sb: &Sandbox, file: &str) -> String {
    std::fs::read_to_string(sb.path().join(format!("out-{file}/seen/seen.txt"))).unwrap()
}

/// Cache poisoning across workflows, both ways a job on the node can try it.
///
/// 1. A job makes its read-only input link writable (it owns the inode the
///    cache shares) and overwrites it in place with as many bytes. When its
///    attempt ends the agent finds the entry's stamp broken, removes the
///    entry and says so in the job's log; the next workflow on the node
///    downloads the file again and reads the original.
/// 2. A job with no inputs at all writes into the cache's entries directly
///    (`$TOIL_WORKDIR/cache/entries`, as the agent's user), keeping size,
///    mode and mtime. The next workflow's agent finds the stamp broken at
///    the hit, removes the entry, downloads it again and says so; the job
///    reads the original.
#[test]
fn a_job_poisoning_the_node_cache_does_not_reach_the_next_workflow() {
    let sb = Sandbox::new("attack-cache");
    sb.write("data.bin", &original_input());

    let evil = run_workflow(
        &sb,
        "evil.yaml",
        r#"
jobs:
  evil:
    cores: 0.1
    memory: 32Mi
    inputs: [data.bin]
    command: "chmod u+w data.bin && dd if=/dev/zero of=data.bin bs=100000 count=1 conv=notrunc status=none && echo poisoned"
"#,
        &[],
    );
    evil.expect_code(0);
    let all = format!("{}{}", evil.stdout, evil.stderr);
    assert!(all.contains("[evil] poisoned"), "{all}");
    assert!(
        all.contains("node cache: input data.bin (")
            && all.contains("was changed while this job ran")
            && all.contains("the entry was removed, so no later job gets the changed file"),
        "{all}"
    );
    let after = run_workflow(&sb, "after.yaml", READER, &[]);
    after.expect_code(0);
    assert_eq!(seen(&sb, "after.yaml"), original_input());

    // The entry is back (downloaded by `after`, next to its output written
    // through); now a job writes into them directly, putting the mode and
    // the mtime back.
    let entries = sb.work_dir().join("cache/entries");
    let input_entry = || {
        std::fs::read_dir(&entries)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| std::fs::metadata(p).unwrap().len() == 100_000)
            .expect("the input's entry")
    };
    let entry = input_entry();
    let sneak = run_workflow(
        &sb,
        "sneak.yaml",
        r#"
jobs:
  sneak:
    cores: 0.1
    memory: 32Mi
    command: "for f in $TOIL_WORKDIR/cache/entries/*; do chmod u+w $f; dd if=/dev/zero of=$f bs=100000 count=1 conv=notrunc status=none; touch -d @1 $f; chmod 444 $f; done; echo sneaked"
"#,
        &[],
    );
    sneak.expect_code(0);
    assert!(sneak.stdout.contains("[sneak] sneaked"), "{}", sneak.stdout);
    assert!(
        std::fs::read(&entry).unwrap().iter().all(|&b| b == 0),
        "the entry itself was poisoned"
    );

    let next = run_workflow(&sb, "next.yaml", READER, &[]);
    next.expect_code(0);
    let all = format!("{}{}", next.stdout, next.stderr);
    assert!(
        all.contains("node cache: the cached copy of files/inputs/")
            && all.contains("had changed since it was stored")
            && all.contains("it was removed and the file downloaded again"),
        "{all}"
    );
    assert_eq!(seen(&sb, "next.yaml"), original_input());
    assert_eq!(
        std::fs::read_to_string(input_entry()).unwrap(),
        original_input()
    );
}

/// A process on the machine (as a job could) holds the node cache's
/// `space.lock` and never lets go. With the lock deadline set to 2 s, a
/// workflow whose input is already cached runs (a hit needs no space); a
/// workflow with a new input fails its staging with a cause that names the
/// lock file and the holding process, retried on the infrastructure budget
/// and then reported, instead of hanging.
#[test]
fn a_held_cache_lock_fails_staging_with_a_named_cause_instead_of_hanging() {
    let sb = Sandbox::new("attack-lock");
    sb.write("data.bin", &original_input());
    run_workflow(&sb, "warm.yaml", READER, &[]).expect_code(0);

    let space = sb.work_dir().join("cache/locks/space.lock");
    let mut holder = std::process::Command::new("flock")
        .args(["--exclusive", "--no-fork"])
        .arg(&space)
        .args(["sleep", "600"])
        .spawn()
        .unwrap_or_else(|e| panic!("flock (util-linux) is needed: {e}"));
    let pid = holder.id().to_string();
    toil_tests::wait::wait_for("flock to hold space.lock", Duration::from_secs(10), || {
        let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
        toil_tests::wait::when(
            locks
                .lines()
                .any(|l| !l.contains("->") && l.split_whitespace().nth(4) == Some(pid.as_str())),
            (),
        )
    });

    let hit = run_workflow(&sb, "hit.yaml", READER, &["--cacheLockTimeout", "2s"]);
    hit.expect_code(0);
    assert_eq!(seen(&sb, "hit.yaml"), original_input());

    sb.write("fresh.bin", "not cached yet\n");
    let t0 = std::time::Instant::now();
    let miss = run_workflow(
        &sb,
        "miss.yaml",
        r#"
jobs:
  fresh:
    cores: 0.1
    memory: 32Mi
    inputs: [fresh.bin]
    command: "cat fresh.bin"
"#,
        &["--cacheLockTimeout", "2s", "--infraRetryCount", "1"],
    );
    let took = t0.elapsed();
    let _ = holder.kill();
    let _ = holder.wait();
    miss.expect_code(1);
    let all = format!("{}{}", miss.stdout, miss.stderr);
    assert!(
        all.contains(&format!(
            "node cache lock {} held for more than 2 s by process {pid} (sleep 600); another job on this node may be holding it",
            space.display()
        )),
        "{all}"
    );
    assert!(all.contains("staging failed"), "{all}");
    // Two attempts of about 2 s each, not an unbounded wait.
    assert!(took < Duration::from_secs(60), "{took:?}");
}

/// What a job on this machine can try for its agent's token.
fn probe_workflow() -> String {
    format!(
        "jobs:\n  probe:\n    cores: 0.1\n    memory: 32Mi\n    command: |\n{}",
        toil_tests::token_probe::command(6)
    )
}

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
    sb.write("wf.yaml", &probe_workflow());
    let mut cmd = sb.leader(&["run", "wf.yaml"]);
    // SAFETY: drop_capabilities only calls prctl.
    unsafe {
        cmd.pre_exec(drop_capabilities);
    }
    let r = sb.spawn(cmd, "leader").wait(T);
    r.expect_code(0);
    toil_tests::token_probe::assert_out_of_reach(&r.stdout);
}

/// Someone who can write in the output directory (a job on this machine,
/// or another program) leaves symbolic links where the export will write,
/// to send a workflow's output over another file: a link in place of a
/// directory stops the export with a message naming it, and nothing is
/// written through it; a link in place of the file is replaced by the file,
/// and what it pointed at is untouched.
#[test]
fn the_export_never_writes_through_a_symbolic_link() {
    use std::os::unix::fs::symlink;
    let wf = "jobs:\n  a:\n    cores: 0.1\n    memory: 32Mi\n    command: \"mkdir -p sub && echo result > sub/a.txt\"\n    outputs: {a: sub/a.txt}\noutputs:\n  res: a.a\n";

    // A directory on the way is a link to somewhere else.
    let sb = Sandbox::new("attack-export-dir");
    sb.write("wf.yaml", wf);
    let elsewhere = sb.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::create_dir_all(sb.output_dir().join("res")).unwrap();
    symlink(&elsewhere, sb.output_dir().join("res/sub")).unwrap();
    let r = sb.run(&["run", "wf.yaml"], T);
    r.expect_code(1);
    assert!(
        r.stderr
            .contains("res/sub goes through a symbolic link, which is not followed here"),
        "{}",
        r.stderr
    );
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);

    // The file itself is a link to a file of the user's.
    let sb = Sandbox::new("attack-export-file");
    sb.write("wf.yaml", wf);
    let precious = sb.write("precious.txt", "keep me\n");
    std::fs::create_dir_all(sb.output_dir().join("res/sub")).unwrap();
    symlink(&precious, sb.output_dir().join("res/sub/a.txt")).unwrap();
    sb.run(&["run", "wf.yaml"], T).expect_code(0);
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep me\n");
    let exported = sb.output_dir().join("res/sub/a.txt");
    assert!(
        std::fs::symlink_metadata(&exported)
            .unwrap()
            .file_type()
            .is_file()
    );
    assert_eq!(std::fs::read_to_string(&exported).unwrap(), "result\n");
}
