//! The report to keep (issue 13): `toil-leader report LOC -o FILE` and
//! `toil-leader run --report FILE`, through the real binary, the local
//! batch system and, for `aws:`, moto.
//!
//! - a workflow of known shape (several job names, a scatter, a job that
//!   fails once and is retried, one that fails for good and blocks
//!   another): the report written at the end of the run and the one made
//!   from the job store after the leader exited both hold one bar per
//!   attempt coloured by outcome, the box plots, the failure's cause and
//!   the last 20 lines of its log, with the log's HTML shown as text; the
//!   page is then opened in headless Chromium with no network;
//! - a report made while the leader runs says it is a snapshot and shows
//!   the running attempt; interrupted, `run --report` still writes its
//!   report and says the run stopped early;
//! - an `aws:` job store works the same way after the leader is gone;
//! - `run --report` writes its file before the default `--clean onSuccess`
//!   deletes the store;
//! - a bad job store or an unwritable output fails with a message that
//!   names the problem, and nothing is left behind.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use nix::sys::signal::Signal;
use std::time::Duration;

use toil_tests::browser::{Browser, artifact};
use toil_tests::local::Sandbox;
use toil_tests::moto::{Moto, REGION, unique_name};
use toil_tests::wait::{wait_for, when};

const T: Duration = Duration::from_secs(120);

/// The workflow of known shape; `mark` makes `flaky` fail only once.
fn shape(sb: &Sandbox) {
    let mark = sb.path().join("tried-once");
    sb.write(
        "wf.yaml",
        &format!(
            r#"
name: shape
defaults: {{cores: 0.1, memory: 64Mi}}
jobs:
  prep:
    cores: 1
    memory: 1Gi
    command: "sleep 0.3; echo prepared"
  part:
    after: [prep]
    scatter: {{i: [0, 1, 2, 3, 4]}}
    command: "echo part {{{{i}}}}"
  flaky:
    command: |
      if [ -e {mark} ]; then echo second try works; exit 0; fi
      touch {mark}; echo first try fails; exit 3
  broken:
    retries: 0
    command: |
      for i in $(seq 1 40); do echo "line $i"; done
      echo '<script>alert(1)</script> & <b>bold</b>'
      exit 7
  after_broken:
    after: [broken]
    command: "echo never runs"
"#,
            mark = mark.display()
        ),
    );
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn count(page: &str, needle: &str) -> usize {
    page.matches(needle).count()
}

/// The text of the log tail shown for `job`'s attempt `n`.
fn tail_of<'a>(page: &'a str, job: &str, n: u32) -> &'a str {
    let head = format!(r#"<span class="job">{job}</span> attempt {n}:"#);
    let at = page
        .find(&head)
        .unwrap_or_else(|| panic!("no failure entry for {job} attempt {n}"));
    let rest = &page[at..];
    let start = rest.find(r#"<pre class="tail">"#).unwrap() + r#"<pre class="tail">"#.len();
    let end = rest[start..].find("</pre>").unwrap();
    &rest[start..start + end]
}

/// What every report of the shape workflow must show.
fn check_shape(page: &str) {
    // One bar per attempt: prep, 5 parts, flaky twice, broken once.
    assert_eq!(count(page, r#"<rect class="bar "#), 9, "bars");
    assert_eq!(count(page, r#"<rect class="bar ok""#), 7);
    assert_eq!(count(page, r#"<rect class="bar retried""#), 1);
    assert_eq!(count(page, r#"<rect class="bar failed""#), 1);
    // Four job names ran: four rows of the timeline.
    assert_eq!(count(page, r#"<text class="lane-label""#), 4);
    // Five job names, a CPU and a memory plot each; the four that ran
    // have a box.
    assert_eq!(count(page, r#"<svg class="plot""#), 10);
    assert_eq!(count(page, r#"<g class="box">"#), 8);
    assert_eq!(count(page, r#"<tr class="group">"#), 5);
    // prep asked for 1 GiB and a core to sleep and echo one line.
    assert!(page.contains("requested 1 GiB, p95 used"), "memory hint");
    assert!(page.contains("requested 1.0 cores, p95 used"), "cpu hint");
    assert!(page.contains(r#"<span id="job-count">9</span>"#));
    assert!(
        page.contains("1 failed jobs, 1 jobs blocked by a failure, 1 attempts that failed and were tried again"),
        "failure counts"
    );
    assert!(page.contains("1 waited for failed job broken"));
    // The failure: its cause and the last 20 lines of its log, escaped.
    assert!(page.contains(
        r#"<span class="job">broken</span> attempt 1: <span class="cause">exit code 7</span>"#
    ));
    let tail = tail_of(page, "broken", 1);
    let lines: Vec<&str> = tail.lines().collect();
    assert_eq!(lines.len(), 20, "{tail}");
    // The job's last 19 lines, then the agent's line on how it ended.
    assert_eq!(lines[0], "line 23", "{tail}");
    assert_eq!(
        lines[18],
        "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;"
    );
    assert!(lines[19].contains("exited with status 7"), "{tail}");
    assert!(!page.contains("<script>alert(1)"), "raw markup from a log");
    assert!(!page.contains("<b>bold"), "raw markup from a log");
    assert_eq!(count(page, "<script>"), 1, "only the page's own script");
    // The retried attempt, with its own log.
    assert!(page.contains(
        r#"<span class="job">flaky</span> attempt 1: <span class="cause">exit code 3</span>"#
    ));
    assert!(
        tail_of(page, "flaky", 1).starts_with("first try fails\n"),
        "{}",
        tail_of(page, "flaky", 1)
    );
    // Slowest attempts: all nine (fewer than the table's twenty).
    assert_eq!(count(page, r#"<tr class="slow">"#), 9);
    // Nothing that could reach the network.
    assert!(page.contains("default-src 'none'"));
    for bad in ["http://", "https://", "src=\"//"] {
        let hits: Vec<_> = page
            .match_indices(bad)
            .map(|(i, _)| &page[i.saturating_sub(40)..(i + 40).min(page.len())])
            .filter(|ctx| !ctx.contains("http://www.w3.org/2000/svg"))
            .collect();
        assert!(hits.is_empty(), "{bad}: {hits:?}");
    }
}

#[test]
fn a_report_at_the_end_of_a_run_and_after_it_shows_every_attempt_failure_and_log_tail() {
    let sb = Sandbox::new("report");
    shape(&sb);
    let r = sb.run(
        &[
            "run",
            "wf.yaml",
            "--retryCount",
            "1",
            "--clean",
            "never",
            "--report",
            "at-end.html",
        ],
        T,
    );
    r.expect_code(1);
    assert!(r.stderr.contains("report written to"), "{}", r.stderr);
    let at_end = read(&sb.path().join("at-end.html"));
    check_shape(&at_end);
    assert!(!at_end.contains("snapshot while running"));

    // After the leader is gone: from the job store alone.
    let out = sb.path().join("after.html");
    let js = sb.job_store();
    let rep = sb.run(
        &[
            "report",
            &js.to_string_lossy(),
            "-o",
            &out.to_string_lossy(),
        ],
        T,
    );
    rep.expect_code(0);
    assert!(rep.stderr.contains("9 jobs, 9 attempts"), "{}", rep.stderr);
    let after = read(&out);
    check_shape(&after);
    assert!(after.contains(r#"<span class="state st-failed">failed</span>"#));
    // No temporary file is left beside it.
    let leftovers: Vec<_> = std::fs::read_dir(sb.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".report-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    in_browser(&out, "shape");
}

/// Opens the report in headless Chromium (network cut off): no console
/// errors, no request but the file itself, the timeline and the box plots
/// drawn with a size, the log tail shown as text, and sorting works.
/// Screenshots go to target/test-artifacts/report/.
fn in_browser(page: &Path, name: &str) {
    let mut b = Browser::start();
    b.open(&format!("file://{}", page.display()));
    let seen = b.eval(
        r#"(() => {
            const size = (el) => { const r = el.getBoundingClientRect(); return [r.width, r.height]; };
            const tl = document.querySelector("svg.timeline");
            const bars = [...tl.querySelectorAll("rect.bar")].filter((r) => size(r)[0] > 0 && size(r)[1] > 0);
            const boxes = [...document.querySelectorAll("g.box rect.iqr")].filter((r) => size(r)[0] > 0);
            const broken = [...document.querySelectorAll("article.failure")]
                .find((a) => a.querySelector(".job").textContent === "broken");
            return {
                timeline: size(tl),
                bars: bars.length,
                boxes: boxes.length,
                scripts: document.scripts.length,
                tail_last: broken.querySelector("pre.tail").textContent.split("\n").slice(-2)[0],
                title: document.title,
            };
        })()"#,
    );
    assert!(seen["timeline"][0].as_f64().unwrap() > 500.0, "{seen}");
    assert!(seen["timeline"][1].as_f64().unwrap() > 40.0, "{seen}");
    assert_eq!(seen["bars"], 9, "{seen}");
    assert_eq!(seen["boxes"], 8, "{seen}");
    assert_eq!(seen["scripts"], 1, "{seen}");
    assert_eq!(
        seen["tail_last"], "<script>alert(1)</script> & <b>bold</b>",
        "the log's markup is text on the page: {seen}"
    );
    assert_eq!(seen["title"], "Workflow report: shape");
    b.screenshot(&artifact("report", &format!("{name}-top.png")));
    b.eval(r#"document.getElementById("rightsizing").scrollIntoView()"#);
    b.screenshot(&artifact("report", &format!("{name}-rightsizing.png")));
    // Sorting the slowest attempts by duration, shortest first on the
    // second click.
    let order = b.eval(
        r##"(() => {
            const th = [...document.querySelectorAll("#slowest th")].find((t) => t.textContent === "duration");
            th.click(); th.click();
            return [...document.querySelectorAll("#slowest tbody tr")].map((r) => Number(r.cells[2].dataset.v));
        })()"##,
    );
    let v: Vec<f64> = order
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(v.len(), 9);
    assert!(
        v.windows(2).all(|w| w[0] <= w[1]),
        "sorted ascending: {v:?}"
    );
    b.eval(r#"document.getElementById("failures").scrollIntoView()"#);
    b.screenshot(&artifact("report", &format!("{name}-failures.png")));
    b.assert_clean();
    let p = b.problems();
    assert!(p.requests <= 1, "the page loaded nothing but itself: {p:?}");
}

#[test]
fn a_report_while_the_leader_runs_is_a_snapshot_with_the_running_attempt() {
    let sb = Sandbox::new("report-live");
    sb.write(
        "wf.yaml",
        r#"
name: live
defaults: {cores: 0.1, memory: 32Mi}
jobs:
  first:
    command: "echo first"
  waits:
    after: [first]
    command: "echo waiting; sleep 300"
"#,
    );
    let leader = sb.spawn(
        sb.leader(&["run", "wf.yaml", "--clean", "never", "--report", "end.html"]),
        "leader",
    );
    let js = sb.job_store();
    let out = sb.path().join("live.html");
    let page = wait_for("a report showing the running attempt", T, || {
        let r = sb.run(
            &[
                "report",
                &js.to_string_lossy(),
                "-o",
                &out.to_string_lossy(),
            ],
            T,
        );
        if r.code() != 0 {
            return Err(r.stderr);
        }
        let page = read(&out);
        // `waits` runs once `first` has succeeded.
        when(
            page.contains("<title>waits #1: running"),
            "waits is not running yet".to_string(),
        )?;
        Ok(page)
    });
    assert!(page.contains("snapshot while running"), "note");
    assert!(page.contains(r#"<span class="state st-running">running</span>"#));
    assert_eq!(count(&page, r#"<rect class="bar ok""#), 1);
    assert_eq!(count(&page, r#"<rect class="bar running""#), 1);
    // Interrupted, the run still writes its report, saying so.
    leader.signal(Signal::SIGINT);
    let r = leader.wait(T);
    r.expect_code(130);
    assert!(r.stderr.contains("report written to"), "{}", r.stderr);
    let end = read(&sb.path().join("end.html"));
    assert!(end.contains("the run stopped early"), "note");
    assert!(!end.contains("snapshot while running"));
    assert_eq!(count(&end, r#"<rect class="bar "#), 2);
    assert_eq!(count(&end, r#"<rect class="bar running""#), 0);
}

#[test]
fn bad_job_stores_and_unwritable_outputs_fail_with_clear_messages() {
    let sb = Sandbox::new("report-bad");
    let missing = sb.path().join("no-such-store");
    let r = sb.run(&["report", &missing.to_string_lossy(), "-o", "r.html"], T);
    assert_eq!(r.code(), 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("there is no job store at"),
        "{}",
        r.stderr
    );
    assert!(!sb.path().join("r.html").exists());

    let r = sb.run(&["report", "aws:nowhere", "-o", "r.html"], T);
    assert_ne!(r.code(), 0);
    assert!(r.stderr.contains("aws:"), "{}", r.stderr);

    // The output is checked before the store is read.
    let r = sb.run(
        &[
            "report",
            &missing.to_string_lossy(),
            "-o",
            "no/such/dir/r.html",
        ],
        T,
    );
    assert_eq!(r.code(), 1);
    assert!(
        r.stderr
            .contains("the directory no/such/dir does not exist"),
        "{}",
        r.stderr
    );
    sb.write("a-file", "");
    let r = sb.run(&["report", "x", "-o", "a-file/r.html"], T);
    assert!(
        r.stderr.contains("a-file is not a directory"),
        "{}",
        r.stderr
    );
    let r = sb.run(&["report", "x", "-o", "."], T);
    assert!(r.stderr.contains("is a directory"), "{}", r.stderr);

    // run --report refuses before anything runs.
    sb.write("wf.yaml", "jobs:\n  a:\n    command: \"echo hi\"\n");
    let r = sb.run(&["run", "wf.yaml", "--report", "no/dir/r.html"], T);
    assert_eq!(r.code(), 2, "{}", r.stderr);
    assert!(r.stderr.contains("--report"), "{}", r.stderr);
    assert!(!sb.job_store().exists(), "nothing ran");
}

#[test]
fn a_report_from_an_aws_job_store_after_the_leader_is_gone() {
    let moto = Moto::shared();
    let sb = Sandbox::new("report-s3");
    let loc = format!("aws:{REGION}:{}", unique_name("rep"));
    sb.write(
        "wf.yaml",
        r#"
name: s3rep
defaults: {cores: 0.1, memory: 32Mi}
jobs:
  make:
    command: "echo made > f.txt"
    outputs: {f: f.txt}
  use:
    scatter: {i: [0, 1, 2]}
    inputs: [{from: make.f}]
    command: "cat f.txt; echo use {{i}}"
"#,
    );
    let mut cmd = sb.leader(&[
        "run",
        "wf.yaml",
        "--jobStore",
        &loc,
        "--clean",
        "never",
        "--report",
        "end.html",
        // Straight downloads: the node cache keeps a margin of free disk
        // (up to 10 GiB) that a crowded test machine may not have.
        "--disableCaching",
    ]);
    cmd.envs(moto.env());
    sb.spawn(cmd, "leader").wait(T).expect_code(0);
    let mut cmd = sb.leader(&["report", &loc, "-o", "s3.html"]);
    cmd.envs(moto.env());
    let r = sb.spawn(cmd, "report").wait(T);
    r.expect_code(0);
    for name in ["end.html", "s3.html"] {
        let page = read(&sb.path().join(name));
        assert_eq!(count(&page, r#"<rect class="bar ok""#), 4, "{name}");
        assert!(page.contains(r#"<span class="state st-succeeded">succeeded</span>"#));
        // The three uses downloaded make's file through the job store.
        let down = page
            .split(r#"<dd id="bytes-down">"#)
            .nth(1)
            .and_then(|s| s.split('<').next())
            .unwrap();
        assert_ne!(down, "0 B", "{name}: bytes downloaded");
    }
}

#[test]
fn run_report_is_written_before_the_default_clean_up_deletes_the_store() {
    let sb = Sandbox::new("report-clean");
    sb.write(
        "wf.yaml",
        "name: tidy\njobs:\n  a:\n    cores: 0.1\n    memory: 32Mi\n    command: \"echo '<i>tidy</i>'\"\n",
    );
    let r = sb.run(&["run", "wf.yaml", "--report", "tidy.html"], T);
    r.expect_code(0);
    assert!(
        !sb.job_store().exists(),
        "--clean onSuccess deleted the store"
    );
    let page = read(&sb.path().join("tidy.html"));
    assert_eq!(count(&page, r#"<rect class="bar ok""#), 1);
    assert!(page.contains(r#"<span class="state st-succeeded">succeeded</span>"#));
    assert!(page.contains("0 failed jobs, 0 jobs blocked by a failure"));
}
