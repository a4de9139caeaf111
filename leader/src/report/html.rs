//! The report page: header, timeline, right-sizing, slowest jobs,
//! failures, cache and job-store figures. Every text that came from a job
//! or the workflow file (names, causes, placements, logs) goes through
//! [`escape`]; the page's Content-Security-Policy forbids loading anything,
//! so even a slip could not fetch from the network.

use std::collections::BTreeMap;
use std::fmt::Write;

use toil_proto::v1::{JobState, WorkflowState};

use super::svg::{self, Stats};
use super::{JobRow, Outcome, Snapshot};
use crate::workflow::units::format_size;

/// Most job names in the right-sizing and cache tables.
const MAX_GROUP_ROWS: usize = 100;
/// Rows in the slowest-attempts table.
const SLOWEST: usize = 20;
/// Failed jobs listed without a log tail, past those with one.
const MAX_LISTED: usize = 500;

/// Escapes text for HTML content and quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// A duration in milliseconds, in the largest sensible unit.
pub fn dur(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 1_000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{}m {:02}s", ms / 60_000, ms / 1000 % 60)
    } else {
        format!("{}h {:02}m", ms / 3_600_000, ms / 60_000 % 60)
    }
}

fn when(ms: i64) -> String {
    if ms <= 0 {
        return "—".into();
    }
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "—".into())
}

fn cores(v: f64) -> String {
    if v >= 10.0 {
        format!("{v:.0} cores")
    } else if v >= 1.0 {
        format!("{v:.1} cores")
    } else {
        format!("{v:.2} cores")
    }
}

fn size(v: f64) -> String {
    format_size(v.max(0.0) as u64)
}

fn state_word(s: JobState) -> &'static str {
    match s {
        JobState::Unspecified => "unknown",
        other => crate::metrics::state_label(other),
    }
}

const CSS: &str = include_str!("report.css");
const JS: &str = include_str!("report.js");

/// The whole page.
pub fn page(snap: &Snapshot) -> String {
    let timeline = svg::timeline(snap);
    let mut h = String::with_capacity(timeline.svg.len() + 64 * 1024);
    let name = escape(&snap.name);
    let _ = write!(
        h,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Workflow report: {name}</title>
<style>{CSS}</style></head>
<body>
"#
    );
    header(&mut h, snap);
    h.push_str(
        r##"<nav><a href="#timeline">Timeline</a> <a href="#rightsizing">Requested vs used</a> <a href="#slowest">Slowest</a> <a href="#failures">Failures</a> <a href="#cache">Cache and job store</a></nav>
"##,
    );
    // Timeline.
    h.push_str(r#"<section id="timeline"><h2>Timeline</h2>"#);
    if timeline.svg.is_empty() {
        h.push_str("<p>No attempt has been launched.</p>");
    } else {
        h.push_str(r#"<p class="legend">"#);
        for o in Outcome::ALL {
            let _ = write!(
                h,
                r#"<span class="key"><svg width="12" height="12"><rect class="swatch {c}" width="12" height="12"/></svg> {c}</span> "#,
                c = o.class()
            );
        }
        h.push_str("</p>");
        if timeline.aggregated {
            let _ = write!(
                h,
                "<p>Too many attempts to draw one bar each (over {} attempts or {} lanes at once): each row shows how many of that job name's attempts ran at each moment, by outcome.</p>",
                svg::MAX_BARS,
                svg::MAX_LANES
            );
        } else {
            let _ = write!(
                h,
                "<p>One bar per attempt ({} bars), from launch to end, in {} lanes under {} job names; hover a bar for the job, attempt, cause and duration.</p>",
                timeline.bars, timeline.lanes, timeline.groups
            );
        }
        let _ = write!(h, r#"<div class="scroll">{}</div>"#, timeline.svg);
    }
    h.push_str("</section>\n");
    rightsizing(&mut h, snap);
    slowest(&mut h, snap);
    failures(&mut h, snap);
    cache(&mut h, snap);
    let _ = write!(
        h,
        r#"<footer>Made {} by toil-leader {} from the job store.</footer>
<script>{JS}</script>
</body></html>
"#,
        when(snap.generated_ms),
        env!("CARGO_PKG_VERSION")
    );
    h
}

fn header(h: &mut String, snap: &Snapshot) {
    let mut counts: BTreeMap<i32, (JobState, usize)> = BTreeMap::new();
    let mut attempts = 0usize;
    let mut start = i64::MAX;
    let mut end = 0i64;
    let mut cpu_ns: u128 = 0;
    let mut peak = 0u64;
    for j in &snap.jobs {
        counts.entry(j.state as i32).or_insert((j.state, 0)).1 += 1;
        attempts += j.attempts.len();
        for a in &j.attempts {
            if a.launched_ms > 0 {
                start = start.min(a.launched_ms);
            }
            end = end.max(a.ended_ms);
            cpu_ns += u128::from(a.usage.cpu_ns);
            peak = peak.max(a.usage.peak_rss);
        }
    }
    if start == i64::MAX {
        start = snap.created_ms;
    }
    let state = crate::status_json::workflow_state_label(snap.state);
    let _ = write!(
        h,
        r#"<header><h1>{}</h1><p><span class="state st-{state}">{state}</span>"#,
        escape(&snap.name)
    );
    if let Some(note) = &snap.note {
        let _ = write!(h, r#" <span class="note">{}</span>"#, escape(note));
    }
    h.push_str("</p><dl class=\"facts\">");
    let finished = snap.state != WorkflowState::Running;
    let span_end = if finished { end } else { snap.generated_ms };
    let mut fact = |k: &str, v: String| {
        let _ = write!(h, "<div><dt>{k}</dt><dd>{v}</dd></div>");
    };
    fact("started", when(start));
    fact(
        "ended",
        if finished {
            when(end)
        } else {
            "not yet".into()
        },
    );
    fact(
        "duration",
        if start > 0 && span_end >= start {
            dur(span_end - start)
        } else {
            "—".into()
        },
    );
    let by_state: Vec<String> = counts
        .values()
        .map(|(s, n)| format!(r#"<span class="st-{w}">{n} {w}</span>"#, w = state_word(*s)))
        .collect();
    fact(
        "jobs",
        format!(
            r#"<span id="job-count">{}</span> ({})"#,
            snap.jobs.len(),
            by_state.join(", ")
        ),
    );
    fact("attempts", attempts.to_string());
    fact(
        "CPU time",
        dur((cpu_ns / 1_000_000).min(i64::MAX as u128) as i64),
    );
    fact("largest peak memory", format_size(peak));
    h.push_str("</dl></header>\n");
}

/// A job name's measurements: cores used and peak memory per attempt.
#[derive(Default)]
struct Group<'a> {
    jobs: Vec<&'a JobRow>,
    cpu: Vec<f64>,
    /// Wall time of each measured attempt, seconds.
    wall: Vec<f64>,
    mem: Vec<f64>,
    req_cores: Vec<f64>,
    req_mem: Vec<f64>,
    attempts: usize,
    hits: u64,
    misses: u64,
    down: u64,
    up: u64,
}

fn groups(snap: &Snapshot) -> Vec<(&str, Group<'_>)> {
    let mut by: BTreeMap<&str, Group<'_>> = BTreeMap::new();
    for j in &snap.jobs {
        let g = by.entry(j.group.as_str()).or_default();
        g.jobs.push(j);
        g.req_cores.push(f64::from(j.millicores) / 1000.0);
        for a in &j.attempts {
            g.attempts += 1;
            let u = &a.usage;
            g.hits += u64::from(u.cache_hits);
            g.misses += u64::from(u.cache_misses);
            g.down += u.bytes_downloaded;
            g.up += u.bytes_uploaded;
            if !u.known {
                continue;
            }
            if u.wall_ns > 0 {
                g.cpu.push(u.cpu_ns as f64 / u.wall_ns as f64);
                g.wall.push(u.wall_ns as f64 / 1e9);
            }
            g.mem.push(u.peak_rss as f64);
            g.req_mem.push(a.memory.max(1) as f64);
        }
        if j.attempts.is_empty() {
            g.req_mem.push(j.memory as f64);
        }
    }
    let mut v: Vec<(&str, Group<'_>)> = by.into_iter().collect();
    v.sort_by(|a, b| b.1.jobs.len().cmp(&a.1.jobs.len()).then(a.0.cmp(b.0)));
    v
}

fn median(v: &[f64]) -> f64 {
    Stats::of(v.to_vec()).map_or(0.0, |s| s.median)
}

/// The one-line advice for a job name, if its usage is far from its
/// request. `wall_s` is its attempts' median wall time: CPU over the
/// request is not worth a hint for jobs of a fraction of a second (a
/// shell starting up uses a whole core for a few milliseconds).
fn hints(
    cpu: Option<&Stats>,
    req_cores: f64,
    mem: Option<&Stats>,
    req_mem: f64,
    wall_s: f64,
) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(m) = mem {
        if req_mem > 0.0 && m.p95 < req_mem * 0.5 {
            out.push(format!(
                "requested {}, p95 used {}: ask for less memory",
                size(req_mem),
                size(m.p95)
            ));
        } else if req_mem > 0.0 && m.p95 > req_mem * 0.9 {
            out.push(format!(
                "p95 used {} of the {} requested: close to being killed for memory",
                size(m.p95),
                size(req_mem)
            ));
        }
    }
    if let Some(c) = cpu {
        if req_cores > 0.0 && c.p95 < req_cores * 0.5 {
            out.push(format!(
                "requested {}, p95 used {}: ask for fewer cores",
                cores(req_cores),
                cores(c.p95)
            ));
        } else if req_cores > 0.0 && c.p95 > req_cores * 1.2 && wall_s >= 1.0 {
            out.push(format!(
                "p95 used {}, more than the {} requested: the job is slowed or crowds its neighbours",
                cores(c.p95),
                cores(req_cores)
            ));
        }
    }
    out
}

fn rightsizing(h: &mut String, snap: &Snapshot) {
    h.push_str(
        r#"<section id="rightsizing"><h2>Requested vs used, by job name</h2>
<p>For each job name, the spread of what its attempts used (box: quartiles; line inside: median; whiskers: smallest and largest) against what was requested (dashed line). CPU used is CPU time over wall time.</p>
"#,
    );
    let gs = groups(snap);
    if gs.is_empty() {
        h.push_str("<p>No jobs.</p></section>\n");
        return;
    }
    h.push_str(
        r#"<table class="rs"><thead><tr><th>job name</th><th>jobs</th><th>CPU (cores)</th><th>peak memory</th></tr></thead><tbody>"#,
    );
    for (name, g) in gs.iter().take(MAX_GROUP_ROWS) {
        let cpu = Stats::of(g.cpu.clone());
        let mem = Stats::of(g.mem.clone());
        let rc = median(&g.req_cores);
        let rm = median(&g.req_mem);
        let _ = write!(
            h,
            r#"<tr class="group"><td class="name">{}</td><td class="num">{}</td><td>{}</td><td>{}</td></tr>"#,
            escape(name),
            g.jobs.len(),
            svg::boxplot(cpu.as_ref(), rc, &|v| cores(v)),
            svg::boxplot(mem.as_ref(), rm, &size),
        );
        let hs = hints(cpu.as_ref(), rc, mem.as_ref(), rm, median(&g.wall));
        if !hs.is_empty() {
            let _ = write!(
                h,
                r#"<tr><td></td><td colspan="3" class="hint">{}</td></tr>"#,
                hs.iter().map(|s| escape(s)).collect::<Vec<_>>().join("; ")
            );
        }
    }
    h.push_str("</tbody></table>");
    if gs.len() > MAX_GROUP_ROWS {
        let _ = write!(
            h,
            "<p>{} more job names are not shown (the {MAX_GROUP_ROWS} with the most jobs are).</p>",
            gs.len() - MAX_GROUP_ROWS
        );
    }
    h.push_str("</section>\n");
}

fn slowest(h: &mut String, snap: &Snapshot) {
    let mut all: Vec<(i64, usize, usize)> = Vec::new();
    for (ji, j) in snap.jobs.iter().enumerate() {
        for (ai, a) in j.attempts.iter().enumerate() {
            if a.launched_ms <= 0 {
                continue;
            }
            let end = if a.ended_ms > 0 {
                a.ended_ms
            } else {
                snap.generated_ms
            };
            let from = if a.started_ms > 0 {
                a.started_ms
            } else {
                a.launched_ms
            };
            all.push((end - from, ji, ai));
        }
    }
    all.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let _ = write!(
        h,
        r#"<section id="slowest"><h2>Slowest attempts</h2><p>The {} longest attempts, from the command's start (or its launch) to its end. Click a heading to sort.</p>"#,
        SLOWEST.min(all.len())
    );
    h.push_str(r#"<table class="sortable"><thead><tr><th>job</th><th>attempt</th><th>duration</th><th>outcome</th><th>where</th><th>CPU used</th><th>requested CPU</th><th>peak memory</th><th>requested memory</th></tr></thead><tbody>"#);
    for &(d, ji, ai) in all.iter().take(SLOWEST) {
        let j = &snap.jobs[ji];
        let a = &j.attempts[ai];
        let u = &a.usage;
        let used = if u.known && u.wall_ns > 0 {
            u.cpu_ns as f64 / u.wall_ns as f64
        } else {
            0.0
        };
        let o = j.outcome(ai).class();
        let _ = write!(
            h,
            r#"<tr class="slow"><td>{}</td><td class="num" data-v="{}">{}</td><td class="num" data-v="{d}">{}</td><td><span class="o-{o}">{o}</span></td><td>{}</td><td class="num" data-v="{used}">{}</td><td class="num" data-v="{}">{}</td><td class="num" data-v="{}">{}</td><td class="num" data-v="{}">{}</td></tr>"#,
            escape(&j.id),
            a.n,
            a.n,
            dur(d),
            escape(&a.placement),
            if u.known { cores(used) } else { "—".into() },
            j.millicores,
            cores(f64::from(j.millicores) / 1000.0),
            u.peak_rss,
            if u.known {
                format_size(u.peak_rss)
            } else {
                "—".into()
            },
            a.memory,
            format_size(a.memory),
        );
    }
    h.push_str("</tbody></table></section>\n");
}

fn failures(h: &mut String, snap: &Snapshot) {
    let failed: Vec<&JobRow> = snap
        .jobs
        .iter()
        .filter(|j| j.state == JobState::Failed)
        .collect();
    let blocked: Vec<&JobRow> = snap
        .jobs
        .iter()
        .filter(|j| j.state == JobState::Blocked)
        .collect();
    let retried: usize = snap
        .jobs
        .iter()
        .map(|j| {
            (0..j.attempts.len())
                .filter(|&i| j.outcome(i) == Outcome::Retried)
                .count()
        })
        .sum();
    let _ = write!(
        h,
        r#"<section id="failures"><h2>Failures</h2><p>{} failed jobs, {} jobs blocked by a failure, {} attempts that failed and were tried again.</p>"#,
        failed.len(),
        blocked.len(),
        retried
    );
    let wanted = snap.tail_wanted();
    let mut shown_failed = 0;
    let mut retried_header = false;
    for &(ji, n) in &wanted {
        let j = &snap.jobs[ji];
        let Some(a) = j.attempts.get(n as usize - 1) else {
            continue;
        };
        let outcome = j.outcome(n as usize - 1);
        if outcome == Outcome::Failed {
            if shown_failed == 0 {
                h.push_str("<h3>Failed jobs</h3>");
            }
            shown_failed += 1;
        } else if !retried_header {
            retried_header = true;
            h.push_str("<h3>Attempts that failed and were tried again</h3>");
        }
        let cause = a
            .cause
            .as_ref()
            .map_or_else(|| "no cause recorded".to_string(), ToString::to_string);
        let _ = write!(
            h,
            r#"<article class="failure {}"><h4><span class="job">{}</span> attempt {n}: <span class="cause">{}</span></h4><p class="where">on {} · ended {} · ran {}</p><pre class="tail">{}</pre></article>"#,
            outcome.class(),
            escape(&j.id),
            escape(&cause),
            escape(if a.placement.is_empty() {
                "(not placed)"
            } else {
                &a.placement
            }),
            when(a.ended_ms),
            dur(a.ended_ms - a.launched_ms),
            escape(
                snap.tails
                    .get(&(ji, n))
                    .map_or("(log not read)", String::as_str)
            ),
        );
    }
    if failed.len() > shown_failed {
        let _ = write!(
            h,
            r#"<h3>More failed jobs</h3><table class="sortable"><thead><tr><th>job</th><th>attempts</th><th>cause</th></tr></thead><tbody>"#
        );
        let listed: Vec<&JobRow> = failed
            .iter()
            .copied()
            .filter(|j| !wanted.iter().any(|&(ji, _)| snap.jobs[ji].id == j.id))
            .collect();
        for j in listed.iter().take(MAX_LISTED) {
            let cause = j
                .attempts
                .last()
                .and_then(|a| a.cause.as_ref())
                .map(ToString::to_string)
                .unwrap_or_default();
            let _ = write!(
                h,
                r#"<tr><td>{}</td><td class="num" data-v="{n}">{n}</td><td>{}</td></tr>"#,
                escape(&j.id),
                escape(&cause),
                n = j.attempts.len()
            );
        }
        h.push_str("</tbody></table>");
        if listed.len() > MAX_LISTED {
            let _ = write!(
                h,
                "<p>and {} more; `toil-leader status LOC --jobs` lists them all.</p>",
                listed.len() - MAX_LISTED
            );
        }
    }
    if !blocked.is_empty() {
        let mut by: BTreeMap<&str, usize> = BTreeMap::new();
        for j in &blocked {
            *by.entry(j.blocked_by.as_deref().unwrap_or("?"))
                .or_default() += 1;
        }
        h.push_str("<h3>Blocked jobs</h3><ul>");
        for (cause, n) in by.iter().take(MAX_LISTED) {
            let _ = write!(h, "<li>{n} waited for failed job {}</li>", escape(cause));
        }
        h.push_str("</ul>");
    }
    h.push_str("</section>\n");
}

fn cache(h: &mut String, snap: &Snapshot) {
    let gs = groups(snap);
    let (mut hits, mut misses, mut down, mut up, mut measured) = (0u64, 0u64, 0u64, 0u64, 0usize);
    for (_, g) in &gs {
        hits += g.hits;
        misses += g.misses;
        down += g.down;
        up += g.up;
        measured += g.mem.len();
    }
    let ratio = if hits + misses > 0 {
        format!("{:.1}%", hits as f64 * 100.0 / (hits + misses) as f64)
    } else {
        "—".into()
    };
    let _ = write!(
        h,
        r#"<section id="cache"><h2>Cache and job store</h2><dl class="facts"><div><dt>node-cache hits</dt><dd id="cache-hits">{hits}</dd></div><div><dt>misses</dt><dd id="cache-misses">{misses}</dd></div><div><dt>hit ratio</dt><dd>{ratio}</dd></div><div><dt>downloaded from the job store</dt><dd id="bytes-down">{}</dd></div><div><dt>uploaded to the job store</dt><dd id="bytes-up">{}</dd></div><div><dt>attempts that reported</dt><dd>{measured}</dd></div></dl>"#,
        format_size(down),
        format_size(up)
    );
    h.push_str(r#"<table class="sortable"><thead><tr><th>job name</th><th>attempts</th><th>cache hits</th><th>misses</th><th>downloaded</th><th>uploaded</th></tr></thead><tbody>"#);
    for (name, g) in gs.iter().take(MAX_GROUP_ROWS) {
        let _ = write!(
            h,
            r#"<tr><td>{}</td><td class="num" data-v="{a}">{a}</td><td class="num" data-v="{hi}">{hi}</td><td class="num" data-v="{mi}">{mi}</td><td class="num" data-v="{d}">{}</td><td class="num" data-v="{u}">{}</td></tr>"#,
            escape(name),
            format_size(g.down),
            format_size(g.up),
            a = g.attempts,
            hi = g.hits,
            mi = g.misses,
            d = g.down,
            u = g.up,
        );
    }
    h.push_str("</tbody></table></section>\n");
}
