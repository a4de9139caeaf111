//! The report's pictures, drawn as inline SVG text: the timeline (one bar
//! per attempt, packed into lanes per job name) and the box plots of used
//! against requested CPU and memory.
//!
//! The page must stay small at 10,000 attempts and bounded beyond: bars
//! carry only a class, four rounded numbers and a short tooltip; past
//! [`MAX_BARS`] attempts (or [`MAX_LANES`] lanes) the timeline shows, per
//! job name, how many attempts ran at each moment instead of each bar.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt::Write;

use super::html::{dur, escape};
use super::{Outcome, Snapshot};

/// Most attempts drawn one bar each.
pub const MAX_BARS: usize = 20_000;
/// Most lanes (rows of bars) drawn; more concurrent attempts aggregate.
pub const MAX_LANES: usize = 1_000;
/// Most job names given their own rows; the rest share one.
pub const MAX_GROUPS: usize = 60;

const WIDTH: f64 = 1100.0;
const LABEL_W: f64 = 200.0;
const PLOT_W: f64 = WIDTH - LABEL_W - 12.0;
const AXIS_H: f64 = 22.0;
const GAP: f64 = 6.0;
/// Time buckets of the aggregated timeline.
const BUCKETS: usize = 300;

/// A drawn timeline and what it holds.
pub struct Timeline {
    /// The `<svg>` element (empty when nothing ran).
    pub svg: String,
    /// Bars drawn (one per attempt), 0 when aggregated.
    pub bars: usize,
    /// Lanes, over all job names.
    pub lanes: usize,
    /// Rows of job names drawn.
    pub groups: usize,
    /// True when attempts are shown as counts over time, not bars.
    pub aggregated: bool,
}

/// One attempt placed on the time axis.
struct Span {
    start: i64,
    end: i64,
    job: usize,
    attempt: usize,
    outcome: Outcome,
}

fn r1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// Shortens a label to `max` characters, with an ellipsis.
fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}

/// A tick step of about a sixth of `span_ms`, at a round value.
fn tick_step(span_ms: i64) -> i64 {
    const STEPS: [i64; 21] = [
        10, 50, 100, 250, 500, 1_000, 2_000, 5_000, 10_000, 15_000, 30_000, 60_000, 120_000,
        300_000, 600_000, 900_000, 1_800_000, 3_600_000, 7_200_000, 21_600_000, 86_400_000,
    ];
    let want = span_ms / 6;
    STEPS
        .iter()
        .copied()
        .find(|&s| s >= want)
        .unwrap_or(86_400_000)
}

/// Draws the timeline of `snap`.
pub fn timeline(snap: &Snapshot) -> Timeline {
    // Attempts that were launched, grouped by job name in order of their
    // first launch.
    let mut by_group: HashMap<&str, Vec<Span>> = HashMap::new();
    let mut t0 = i64::MAX;
    let mut t1 = i64::MIN;
    for (ji, job) in snap.jobs.iter().enumerate() {
        for (ai, a) in job.attempts.iter().enumerate() {
            if a.launched_ms <= 0 {
                continue;
            }
            let outcome = job.outcome(ai);
            let end = if a.ended_ms > 0 {
                a.ended_ms
            } else {
                snap.generated_ms.max(a.launched_ms)
            };
            t0 = t0.min(a.launched_ms);
            t1 = t1.max(end);
            by_group.entry(job.group.as_str()).or_default().push(Span {
                start: a.launched_ms,
                end,
                job: ji,
                attempt: ai,
                outcome,
            });
        }
    }
    if by_group.is_empty() {
        return Timeline {
            svg: String::new(),
            bars: 0,
            lanes: 0,
            groups: 0,
            aggregated: false,
        };
    }
    let mut groups: Vec<(String, Vec<Span>)> = by_group
        .into_iter()
        .map(|(name, spans)| (name.to_string(), spans))
        .collect();
    for (_, spans) in &mut groups {
        spans.sort_by_key(|s| (s.start, s.end));
    }
    groups.sort_by(|(an, a), (bn, b)| (a[0].start, an).cmp(&(b[0].start, bn)));
    // Past MAX_GROUPS names, the rest share one row.
    if groups.len() > MAX_GROUPS {
        let rest = groups.split_off(MAX_GROUPS - 1);
        let n = rest.len();
        let mut merged: Vec<Span> = rest.into_iter().flat_map(|(_, s)| s).collect();
        merged.sort_by_key(|s| (s.start, s.end));
        groups.push((format!("({n} other job names)"), merged));
    }
    // Lanes per group: each attempt goes into the first lane free at its
    // start, so a lane never holds two attempts at once.
    let mut lanes_of: Vec<Vec<usize>> = Vec::with_capacity(groups.len());
    let mut lane_counts = Vec::with_capacity(groups.len());
    for (_, spans) in &groups {
        let mut free: BinaryHeap<Reverse<(i64, usize)>> = BinaryHeap::new();
        let mut lanes = Vec::with_capacity(spans.len());
        let mut count = 0;
        for s in spans {
            let lane = match free.peek() {
                Some(&Reverse((end, lane))) if end <= s.start => {
                    free.pop();
                    lane
                }
                _ => {
                    count += 1;
                    count - 1
                }
            };
            free.push(Reverse((s.end, lane)));
            lanes.push(lane);
        }
        lanes_of.push(lanes);
        lane_counts.push(count);
    }
    let total_bars: usize = groups.iter().map(|(_, s)| s.len()).sum();
    let total_lanes: usize = lane_counts.iter().sum();
    let span = (t1 - t0).max(1);
    let x_of = |t: i64| LABEL_W + (t - t0) as f64 / span as f64 * PLOT_W;
    let aggregated = total_bars > MAX_BARS || total_lanes > MAX_LANES;

    let mut body = String::with_capacity(if aggregated {
        64 * 1024
    } else {
        total_bars * 120 + 4096
    });
    let mut y = AXIS_H + 4.0;
    if aggregated {
        let row_h = 34.0;
        for (name, spans) in &groups {
            draw_density(&mut body, spans, t0, span, y, row_h);
            label(&mut body, name, spans.len(), y + row_h / 2.0 - 5.0);
            y += row_h + GAP;
            separator(&mut body, y - GAP / 2.0);
        }
    } else {
        let lane_h = (900.0 / total_lanes as f64).clamp(1.0, 14.0);
        let bar_h = if lane_h >= 4.0 { lane_h - 1.5 } else { lane_h };
        for (((name, spans), lanes), &count) in groups.iter().zip(&lanes_of).zip(&lane_counts) {
            for (s, &lane) in spans.iter().zip(lanes) {
                let job = &snap.jobs[s.job];
                let a = &job.attempts[s.attempt];
                let x = x_of(s.start);
                let w = (x_of(s.end) - x).max(0.6);
                let what = match &a.cause {
                    Some(c) => c.to_string(),
                    None => "running".to_string(),
                };
                let _ = write!(
                    body,
                    r#"<rect class="bar {}" x="{}" y="{}" width="{}" height="{}"><title>{} #{}: {} · {}</title></rect>"#,
                    s.outcome.class(),
                    r1(x),
                    r1(y + lane as f64 * lane_h),
                    r1(w),
                    r1(bar_h),
                    escape(&job.id),
                    a.n,
                    escape(&what),
                    dur(s.end - s.start),
                );
            }
            let h = count as f64 * lane_h;
            label(&mut body, name, spans.len(), y + h / 2.0);
            y += h + GAP;
            separator(&mut body, y - GAP / 2.0);
        }
    }
    let height = y + 4.0;
    let mut svg = String::with_capacity(body.len() + 4096);
    let _ = write!(
        svg,
        r#"<svg class="timeline" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {h}" width="{WIDTH}" height="{h}" role="img" aria-label="timeline of {bars} attempts">"#,
        h = r1(height),
        bars = total_bars,
    );
    // The time axis: round steps from the first launch.
    let step = tick_step(span);
    let mut t = 0;
    while t <= span {
        let x = r1(x_of(t0 + t));
        let _ = write!(
            svg,
            r#"<line class="grid" x1="{x}" y1="{AXIS_H}" x2="{x}" y2="{}"/><text class="tick" x="{x}" y="{}">{}</text>"#,
            r1(height),
            AXIS_H - 7.0,
            if t == 0 { "0".to_string() } else { dur(t) },
        );
        t += step;
    }
    svg.push_str(&body);
    svg.push_str("</svg>");
    Timeline {
        svg,
        bars: if aggregated { 0 } else { total_bars },
        lanes: total_lanes,
        groups: groups.len(),
        aggregated,
    }
}

fn label(out: &mut String, name: &str, attempts: usize, y: f64) {
    let _ = write!(
        out,
        r#"<text class="lane-label" x="{}" y="{}"><title>{}</title>{} ({attempts})</text>"#,
        LABEL_W - 8.0,
        r1(y + 4.0),
        escape(name),
        escape(&clip(name, 26)),
    );
}

fn separator(out: &mut String, y: f64) {
    let _ = write!(
        out,
        r#"<line class="sep" x1="0" y1="{y}" x2="{WIDTH}" y2="{y}"/>"#,
        y = r1(y)
    );
}

/// One row of the aggregated timeline: for each time bucket, how many of
/// the row's attempts ran on average, stacked by outcome.
fn draw_density(out: &mut String, spans: &[Span], t0: i64, span: i64, y: f64, h: f64) {
    let bucket = span as f64 / BUCKETS as f64;
    let mut load = vec![[0f64; Outcome::ALL.len()]; BUCKETS];
    for s in spans {
        let k = Outcome::ALL
            .iter()
            .position(|o| *o == s.outcome)
            .unwrap_or(0);
        let a = (s.start - t0) as f64 / bucket;
        let b = (s.end - t0) as f64 / bucket;
        let first = (a.floor() as usize).min(BUCKETS - 1);
        let last = (b.ceil() as usize).clamp(first + 1, BUCKETS);
        for (i, slot) in load.iter_mut().enumerate().take(last).skip(first) {
            let lo = a.max(i as f64);
            let hi = b.min(i as f64 + 1.0);
            slot[k] += (hi - lo).max(0.0);
        }
    }
    let peak = load
        .iter()
        .map(|l| l.iter().sum::<f64>())
        .fold(0.0, f64::max)
        .max(1e-9);
    let w = PLOT_W / BUCKETS as f64;
    for (k, outcome) in Outcome::ALL.iter().enumerate() {
        let mut d = String::new();
        for (i, l) in load.iter().enumerate() {
            if l[k] <= 0.0 {
                continue;
            }
            let below: f64 = l[..k].iter().sum();
            let top = y + h - (below + l[k]) / peak * h;
            let _ = write!(
                d,
                "M{} {}h{}v{}h-{}z",
                r1(LABEL_W + i as f64 * w),
                r1(top),
                r1(w),
                r1(l[k] / peak * h),
                r1(w)
            );
        }
        if !d.is_empty() {
            let _ = write!(out, r#"<path class="agg {}" d="{d}"/>"#, outcome.class());
        }
    }
    // Under the row's name: the scale of its picture.
    let _ = write!(
        out,
        r#"<text class="peak" x="{}" y="{}">up to {} at once</text>"#,
        LABEL_W - 8.0,
        r1(y + h / 2.0 + 15.0),
        if peak < 10.0 {
            format!("{peak:.1}")
        } else {
            format!("{peak:.0}")
        }
    );
}

/// Five figures and the 95th percentile of a sample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stats {
    /// How many values.
    pub n: usize,
    /// Smallest.
    pub min: f64,
    /// First quartile.
    pub q1: f64,
    /// Median.
    pub median: f64,
    /// Third quartile.
    pub q3: f64,
    /// 95th percentile.
    pub p95: f64,
    /// Largest.
    pub max: f64,
}

impl Stats {
    /// The figures of `values` (linear interpolation between ranks), or
    /// `None` for an empty sample.
    pub fn of(mut values: Vec<f64>) -> Option<Stats> {
        values.retain(|v| v.is_finite());
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        let q = |p: f64| {
            let pos = p * (values.len() - 1) as f64;
            let lo = pos.floor() as usize;
            let hi = pos.ceil() as usize;
            values[lo] + (values[hi] - values[lo]) * (pos - lo as f64)
        };
        Some(Stats {
            n: values.len(),
            min: values[0],
            q1: q(0.25),
            median: q(0.5),
            q3: q(0.75),
            p95: q(0.95),
            max: values[values.len() - 1],
        })
    }
}

const BOX_W: f64 = 380.0;
const BOX_H: f64 = 46.0;
const BOX_PAD: f64 = 10.0;

/// A horizontal box plot of `stats` on a scale from 0, with the request
/// drawn as a dashed line; `fmt` writes a value with its unit.
pub fn boxplot(stats: Option<&Stats>, request: f64, fmt: &dyn Fn(f64) -> String) -> String {
    let top = stats.map_or(0.0, |s| s.max).max(request);
    let scale_max = if top > 0.0 { top * 1.08 } else { 1.0 };
    let x = |v: f64| r1(BOX_PAD + v / scale_max * (BOX_W - 2.0 * BOX_PAD));
    let mid = 22.0;
    let mut s = String::with_capacity(1024);
    let _ = write!(
        s,
        r#"<svg class="plot" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {BOX_W} {BOX_H}" width="{BOX_W}" height="{BOX_H}">"#
    );
    let _ = write!(
        s,
        r#"<line class="axis" x1="{}" y1="{}" x2="{}" y2="{}"/><text class="tick" x="{}" y="{}">0</text><text class="tick end" x="{}" y="{}">{}</text>"#,
        x(0.0),
        BOX_H - 10.0,
        x(scale_max),
        BOX_H - 10.0,
        x(0.0),
        BOX_H - 1.0,
        x(scale_max),
        BOX_H - 1.0,
        escape(&fmt(scale_max)),
    );
    match stats {
        Some(st) => {
            let _ = write!(
                s,
                r#"<g class="box"><title>{n} measured: min {} · q1 {} · median {} · q3 {} · p95 {} · max {}</title><line class="whisker" x1="{}" y1="{mid}" x2="{}" y2="{mid}"/><line class="whisker" x1="{}" y1="{}" x2="{}" y2="{}"/><line class="whisker" x1="{}" y1="{}" x2="{}" y2="{}"/><rect class="iqr" x="{}" y="{}" width="{}" height="16"/><line class="median" x1="{}" y1="{}" x2="{}" y2="{}"/></g>"#,
                escape(&fmt(st.min)),
                escape(&fmt(st.q1)),
                escape(&fmt(st.median)),
                escape(&fmt(st.q3)),
                escape(&fmt(st.p95)),
                escape(&fmt(st.max)),
                x(st.min),
                x(st.max),
                x(st.min),
                mid - 5.0,
                x(st.min),
                mid + 5.0,
                x(st.max),
                mid - 5.0,
                x(st.max),
                mid + 5.0,
                x(st.q1),
                mid - 8.0,
                r1((x(st.q3) - x(st.q1)).max(1.0)),
                x(st.median),
                mid - 8.0,
                x(st.median),
                mid + 8.0,
                n = st.n,
            );
        }
        None => {
            let _ = write!(
                s,
                r#"<text class="none" x="{}" y="{}">no usage measured</text>"#,
                x(0.0) + 4.0,
                mid + 4.0
            );
        }
    }
    if request > 0.0 {
        let rx = x(request);
        let _ = write!(
            s,
            r#"<line class="req" x1="{rx}" y1="4" x2="{rx}" y2="{}"><title>requested {}</title></line><text class="req-label{}" x="{}" y="10">requested {}</text>"#,
            BOX_H - 10.0,
            escape(&fmt(request)),
            // Keep the label inside the plot: left of the line in the
            // right half, right of it in the left half.
            if rx > BOX_W / 2.0 { "" } else { " start" },
            if rx > BOX_W / 2.0 { rx - 4.0 } else { rx + 4.0 },
            escape(&fmt(request)),
        );
    }
    s.push_str("</svg>");
    s
}
