//! Whole workflows through the local batch system, with the real leader and
//! agent binaries: success, retries, failures, files between jobs, caching.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use toil_tests::harness;
use toil_tests::local::Sandbox;

const T: Duration = Duration::from_secs(120);

#[test]
fn the_hello_example_runs_shows_output_live_and_exports_its_report() {
    let sb = Sandbox::new("hello");
    let wf = harness::repo_root().join("examples/hello.yaml");
    let wf = wf.to_string_lossy();
    let r = sb.run(&["run", &wf], T);
    r.expect_code(0);
    // Job output is shown, prefixed with the job id.
    assert!(r.stdout.contains("[hello] hello from"), "{}", r.stdout);
    assert!(r.stdout.contains("[words] poem.txt has"), "{}", r.stdout);
    for v in ["a", "e", "i", "o", "u"] {
        assert!(
            r.stdout.contains(&format!("words contain the letter {v}")),
            "scatter instance for {v} missing:\n{}",
            r.stdout
        );
    }
    // The report gathers every scatter instance and is exported.
    let report = std::fs::read_to_string(sb.output_dir().join("report/report.txt"))
        .expect("exported report");
    assert!(
        report.starts_with("words containing each vowel:"),
        "{report}"
    );
    assert_eq!(report.lines().count(), 6, "{report}");
    for line in report.lines().skip(1) {
        assert!(r.stdout.contains(&format!("[report] {line}")), "{line}");
    }
    assert!(r.stderr.contains("succeeded"), "{}", r.stderr);
    assert!(r.stderr.contains("8 jobs (8 succeeded)"), "{}", r.stderr);
    // --clean onSuccess is the default: the job store is gone.
    assert!(!sb.job_store().exists());
}

#[test]
fn a_failure_is_retried_and_a_failure_past_its_retries_is_reported_with_its_log() {
    let sb = Sandbox::new("retry");
    let mark = sb.path().join("tried-once");
    sb.write(
        "wf.yaml",
        &format!(
            r#"
defaults: {{cores: 0.1, memory: 32Mi}}
jobs:
  flaky:
    command: |
      if [ -e {mark} ]; then echo second try works; exit 0; fi
      touch {mark}; echo first try fails; exit 3
  broken:
    retries: 1
    command: "echo about to fail; echo on stderr >&2; exit 7"
  after_broken:
    after: [broken]
    command: "echo never runs"
"#,
            mark = mark.display()
        ),
    );
    let r = sb.run(
        &["run", "wf.yaml", "--retryCount", "1", "--clean", "never"],
        T,
    );
    r.expect_code(1);
    assert!(r.stdout.contains("[flaky] first try fails"), "{}", r.stdout);
    assert!(
        r.stdout.contains("[flaky] second try works"),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("never runs"), "{}", r.stdout);
    let e = &r.stderr;
    assert!(
        e.contains("1 succeeded, 1 failed, 1 blocked by a failure"),
        "{e}"
    );
    assert!(e.contains("job broken failed: exit code 7"), "{e}");
    // Each retried failure is announced as it happens, with its budget.
    assert!(
        e.contains("job flaky attempt 1 failed: exit code 3; will retry (1 of 1) in 1s"),
        "{e}"
    );
    assert!(
        e.contains("job broken attempt 1 failed: exit code 7; will retry (1 of 1) in 1s"),
        "{e}"
    );
    assert!(e.contains("attempt 2 (1 of 1 retries used)"), "{e}");
    assert!(
        e.contains("| about to fail") && e.contains("| on stderr"),
        "{e}"
    );
    assert!(
        e.contains("--restart"),
        "the summary says how to resume: {e}"
    );

    let js = sb.job_store();
    let status = sb.run(&["status", &js.to_string_lossy(), "--jobs"], T);
    status.expect_code(0);
    let s = &status.stdout;
    assert!(s.contains("workflow wf: failed"), "{s}");
    let line = |job: &str| {
        s.lines()
            .find(|l| l.starts_with(job))
            .unwrap_or_else(|| panic!("no line for {job} in\n{s}"))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    assert_eq!(line("flaky")[1..3], ["succeeded", "2"]);
    assert_eq!(line("broken ")[1..3], ["failed", "2"]);
    assert!(s.contains("exit code 7"), "{s}");
    assert_eq!(line("after_broken")[1..3], ["blocked", "0"]);
    assert!(s.contains("waits for failed job broken"), "{s}");

    let logs = sb.run(
        &["logs", &js.to_string_lossy(), "broken", "--attempt", "1"],
        T,
    );
    logs.expect_code(0);
    assert!(logs.stdout.contains("about to fail") && logs.stdout.contains("on stderr"));
}

#[test]
fn files_flow_between_jobs_keep_their_paths_and_writable_inputs_are_private() {
    let sb = Sandbox::new("files");
    sb.write("data/in.txt", "original\n");
    sb.write(
        "wf.yaml",
        r#"
defaults: {cores: 0.1, memory: 32Mi}
jobs:
  make:
    command: "mkdir -p out/sub && echo x > out/x.txt && echo y > out/sub/y.txt"
    outputs:
      tree: out
  edit:
    inputs:
      - {path: data/in.txt, as: mine.txt, writable: true}
    command: "echo changed > mine.txt && cat mine.txt"
  read:
    after: [edit]
    inputs:
      - data/in.txt
      - {from: make.tree, as: got/}
    command: |
      cat in.txt
      cat got/out/x.txt got/out/sub/y.txt > both.txt
      case "$(stat -c %A in.txt)" in -r?-r?-r?-*) echo inputs are read-only;; esac
    outputs:
      both: both.txt
outputs:
  both: read.both
"#,
    );
    let r = sb.run(&["run", "wf.yaml"], T);
    r.expect_code(0);
    assert!(r.stdout.contains("[edit] changed"), "{}", r.stdout);
    assert!(
        r.stdout.contains("[read] original"),
        "writable copy leaked:\n{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("[read] inputs are read-only"),
        "{}",
        r.stdout
    );
    let both = std::fs::read_to_string(sb.output_dir().join("both/both.txt")).expect("export");
    assert_eq!(both, "x\ny\n");
}

fn cache_totals(status: &str) -> (u32, u32) {
    let line = status
        .lines()
        .find(|l| l.starts_with("attempts:"))
        .unwrap_or_else(|| panic!("no attempts line in {status}"));
    let num_before = |word: &str| -> u32 {
        let i = line
            .find(word)
            .unwrap_or_else(|| panic!("{word} in {line}"));
        line[..i]
            .split_whitespace()
            .last()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("number before {word} in {line}"))
    };
    (num_before(" hits"), num_before(" misses"))
}

#[test]
fn jobs_on_one_machine_share_the_input_cache_unless_caching_is_disabled() {
    for (flag, hits, misses) in [(None, 1, 1), (Some("--disableCaching"), 0, 2)] {
        let sb = Sandbox::new("cache");
        sb.write("big.bin", &"0123456789".repeat(100_000));
        sb.write(
            "wf.yaml",
            r#"
defaults: {cores: 0.1, memory: 32Mi}
jobs:
  first:
    inputs: [big.bin]
    command: "wc -c < big.bin"
  second:
    after: [first]
    inputs: [big.bin]
    command: "wc -c < big.bin"
"#,
        );
        let mut args = vec!["run", "wf.yaml", "--clean", "never"];
        args.extend(flag);
        let r = sb.run(&args, T);
        r.expect_code(0);
        assert_eq!(r.stdout.matches("1000000").count(), 2, "{}", r.stdout);
        let status = sb.run(&["status", &sb.job_store().to_string_lossy()], T);
        status.expect_code(0);
        assert_eq!(
            cache_totals(&status.stdout),
            (hits, misses),
            "{flag:?}: {}",
            status.stdout
        );
        if flag.is_some() {
            let cache = sb.work_dir().join("cache/entries");
            let entries = std::fs::read_dir(&cache).map_or(0, |d| d.count());
            assert_eq!(entries, 0, "nothing cached with --disableCaching");
        }
    }
}
