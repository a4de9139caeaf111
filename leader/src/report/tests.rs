use std::collections::HashMap;

use toil_proto::v1::{Cause, JobState, WorkflowState};

use super::svg::{self, Stats};
use super::*;

fn usage(cpu_ms: u64, wall_ms: u64, rss: u64) -> Usage {
    Usage {
        known: true,
        peak_rss: rss,
        cpu_ns: cpu_ms * 1_000_000,
        wall_ns: wall_ms * 1_000_000,
        bytes_downloaded: 1000,
        bytes_uploaded: 10,
        cache_hits: 1,
        cache_misses: 2,
    }
}

fn attempt(n: u32, start: i64, end: i64, cause: Option<Cause>, u: Usage) -> AttemptRow {
    AttemptRow {
        n,
        memory: 4 << 30,
        launched_ms: start,
        ended_ms: end,
        started_ms: start + 5,
        placement: "local:1234".into(),
        cause,
        usage: u,
    }
}

fn job(id: &str, state: JobState, attempts: Vec<AttemptRow>) -> JobRow {
    JobRow {
        group: group_of(id),
        id: id.into(),
        state,
        millicores: 2000,
        memory: 4 << 30,
        attempts,
        blocked_by: None,
    }
}

fn snapshot(jobs: Vec<JobRow>) -> Snapshot {
    Snapshot {
        name: "wf".into(),
        state: WorkflowState::Failed,
        note: None,
        generated_ms: 1_700_000_100_000,
        created_ms: 1_700_000_000_000,
        jobs,
        tails: HashMap::new(),
    }
}

const T0: i64 = 1_700_000_000_000;

#[test]
fn group_names_drop_scatter_indexes_only() {
    assert_eq!(group_of("part[3]"), "part");
    assert_eq!(group_of("part[3]/child[12]"), "part/child");
    assert_eq!(group_of("plain"), "plain");
    assert_eq!(group_of("odd[x]"), "odd[x]");
    assert_eq!(group_of("open["), "open[");
}

#[test]
fn escape_turns_markup_into_text() {
    assert_eq!(
        escape(r#"<script>alert("1")</script> & 'x'"#),
        "&lt;script&gt;alert(&quot;1&quot;)&lt;/script&gt; &amp; &#39;x&#39;"
    );
}

#[test]
fn stats_interpolate_between_ranks() {
    let s = Stats::of(vec![4.0, 1.0, 3.0, 2.0, 5.0]).unwrap();
    assert_eq!(
        (s.n, s.min, s.q1, s.median, s.q3, s.max),
        (5, 1.0, 2.0, 3.0, 4.0, 5.0)
    );
    assert!((s.p95 - 4.8).abs() < 1e-9);
    assert!(Stats::of(vec![]).is_none());
    assert!(Stats::of(vec![f64::NAN]).is_none());
}

#[test]
fn outcomes_tell_retried_from_final_failures() {
    let j = job(
        "flaky",
        JobState::Failed,
        vec![
            attempt(1, T0, T0 + 10, Some(Cause::exit_code(3)), Usage::default()),
            attempt(
                2,
                T0 + 20,
                T0 + 30,
                Some(Cause::exit_code(3)),
                Usage::default(),
            ),
        ],
    );
    assert_eq!(j.outcome(0), Outcome::Retried);
    assert_eq!(j.outcome(1), Outcome::Failed);
    let r = job(
        "r",
        JobState::Running,
        vec![attempt(1, T0, 0, None, Usage::default())],
    );
    assert_eq!(r.outcome(0), Outcome::Running);
}

#[test]
fn the_page_shows_one_bar_per_attempt_and_escapes_job_text() {
    let hostile = "<script>alert(1)</script>";
    let mut jobs = vec![
        job(
            hostile,
            JobState::Failed,
            vec![attempt(
                1,
                T0,
                T0 + 1000,
                Some(Cause::exit_code(7)),
                usage(10, 1000, 1 << 20),
            )],
        ),
        job(
            "ok",
            JobState::Succeeded,
            vec![attempt(
                1,
                T0 + 100,
                T0 + 3000,
                Some(Cause::succeeded()),
                usage(900, 1000, 300 << 20),
            )],
        ),
    ];
    for i in 0..5 {
        jobs.push(job(
            &format!("part[{i}]"),
            JobState::Succeeded,
            vec![attempt(
                1,
                T0 + 200 * i,
                T0 + 200 * i + 500,
                Some(Cause::succeeded()),
                usage(100, 500, 100 << 20),
            )],
        ));
    }
    let mut snap = snapshot(jobs);
    snap.tails.insert(
        (0, 1),
        "<b>bold</b> & </pre><img src=x onerror=alert(2)>".into(),
    );
    let page = snap.render();
    assert_eq!(page.matches(r#"<rect class="bar "#).count(), 7);
    assert!(!page.contains(hostile), "raw markup from a job name");
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!page.contains("<img src=x"));
    assert!(page.contains("&lt;b&gt;bold&lt;/b&gt; &amp; &lt;/pre&gt;&lt;img src=x"));
    // Three job names, two plots each, every one with a box.
    assert_eq!(page.matches(r#"<g class="box">"#).count(), 6);
    assert!(page.contains("requested 4 GiB, p95 used"), "memory hint");
    assert!(
        page.contains("requested 2.0 cores, p95 used 0.20 cores"),
        "cpu hint"
    );
    assert_eq!(
        page.matches("<script>").count(),
        1,
        "only the page's own script"
    );
}

#[test]
fn ten_thousand_attempts_stay_bars_and_a_few_megabytes() {
    let jobs: Vec<JobRow> = (0..10_000)
        .map(|i| {
            job(
                &format!("scatter[{i}]"),
                JobState::Succeeded,
                vec![attempt(
                    1,
                    T0 + i * 7,
                    T0 + i * 7 + 300,
                    Some(Cause::succeeded()),
                    usage(50, 300, 8 << 20),
                )],
            )
        })
        .collect();
    let snap = snapshot(jobs);
    let t = svg::timeline(&snap);
    assert!(!t.aggregated);
    assert_eq!(t.bars, 10_000);
    let page = snap.render();
    assert!(page.len() < 3 << 20, "{} bytes", page.len());
}

#[test]
fn past_the_bar_limit_the_timeline_aggregates_and_stays_small() {
    let n = svg::MAX_BARS as i64 + 1;
    let jobs: Vec<JobRow> = (0..n)
        .map(|i| {
            job(
                &format!("s[{i}]"),
                JobState::Succeeded,
                vec![attempt(
                    1,
                    T0 + i,
                    T0 + i + 50,
                    Some(Cause::succeeded()),
                    Usage::default(),
                )],
            )
        })
        .collect();
    let snap = snapshot(jobs);
    let t = svg::timeline(&snap);
    assert!(t.aggregated);
    assert_eq!(t.bars, 0);
    assert!(t.svg.len() < 100_000, "{}", t.svg.len());
    assert!(t.svg.contains(r#"class="agg ok""#));
}

#[test]
fn many_job_names_share_one_row_past_the_limit() {
    let jobs: Vec<JobRow> = (0..(svg::MAX_GROUPS + 10))
        .map(|i| {
            job(
                &format!("j{i}"),
                JobState::Succeeded,
                vec![attempt(
                    1,
                    T0 + i as i64,
                    T0 + 10 + i as i64,
                    Some(Cause::succeeded()),
                    Usage::default(),
                )],
            )
        })
        .collect();
    let t = svg::timeline(&snapshot(jobs));
    assert_eq!(t.groups, svg::MAX_GROUPS);
    assert!(t.svg.contains("(11 other job names)"));
}

#[test]
fn an_empty_workflow_still_renders() {
    let page = snapshot(vec![job("never", JobState::Waiting, vec![])]).render();
    assert!(page.contains("No attempt has been launched."));
    assert!(page.ends_with("</html>\n"));
}

#[test]
fn cpu_over_the_request_is_hinted_only_for_jobs_of_a_second_or_more() {
    let run = |wall_ms: u64| {
        let jobs = vec![job(
            "busy",
            JobState::Succeeded,
            vec![attempt(
                1,
                T0,
                T0 + wall_ms as i64,
                Some(Cause::succeeded()),
                usage(wall_ms * 4, wall_ms, 3 << 30),
            )],
        )];
        snapshot(jobs).render()
    };
    let over = "more than the 2.0 cores requested";
    assert!(run(5_000).contains(over));
    assert!(!run(50).contains(over));
}
