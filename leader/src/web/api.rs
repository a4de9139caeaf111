//! The pages' JSON: answers computed on the driver's state (the same
//! queries WorkflowService answers), shaped for the tables and drawings.
//!
//! Every answer is bounded: the jobs table is paged and filtered here, so
//! a browser never receives 100,000 jobs; the timeline holds the latest
//! attempts up to a limit; the graph has one node per job template (a
//! scatter of any width is one node with counts per state).

use std::collections::HashMap;

use http::{Response, StatusCode};
use serde_json::{Value, json};
use toil_proto::v1::{Cause, CauseKind, JobState, WorkflowEvent, workflow_event::Kind};

use super::{Body, WebState, full, query_param, response, text};
use crate::core::{Core, JobIdx};

/// Most rows in one page of the jobs table.
const MAX_PAGE: usize = 500;
/// Most attempts the timeline is sent.
const MAX_BARS: usize = 5000;

/// `JOB_STATE_RUNNING` as `running`.
pub fn state_name(s: JobState) -> &'static str {
    crate::metrics::state_label(s)
}

/// A cause as one short line: `succeeded`, `exit code 1`, `oom killed: ...`.
pub fn cause_text(c: &Cause) -> String {
    let kind = CauseKind::try_from(c.kind).unwrap_or(CauseKind::Unspecified);
    let mut s = kind
        .as_str_name()
        .trim_start_matches("CAUSE_KIND_")
        .to_ascii_lowercase()
        .replace('_', " ");
    if kind == CauseKind::ExitCode || (c.code != 0 && kind != CauseKind::Succeeded) {
        s.push_str(&format!(" {}", c.code));
    }
    // An exit code or signal says it all; other causes explain themselves.
    let plain = matches!(
        kind,
        CauseKind::Succeeded | CauseKind::ExitCode | CauseKind::Signaled
    );
    if !c.message.is_empty() && !plain {
        s.push_str(": ");
        s.push_str(&c.message);
    }
    s
}

/// The outcome class a bar is coloured by.
fn outcome(c: Option<&Cause>) -> &'static str {
    match c.map(|c| CauseKind::try_from(c.kind).unwrap_or(CauseKind::Unspecified)) {
        None => "running",
        Some(CauseKind::Succeeded) => "succeeded",
        Some(CauseKind::Cancelled) => "cancelled",
        Some(
            CauseKind::ExitCode
            | CauseKind::Signaled
            | CauseKind::OutputMissing
            | CauseKind::ConfigError
            | CauseKind::OomKilled
            | CauseKind::DeadlineExceeded,
        ) => "failed",
        Some(_) => "infra",
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// One row of the jobs table: the job and its latest attempt.
fn row(c: &Core, j: JobIdx, now: i64) -> Value {
    let atts = c.attempts(j);
    let req = c.request(j);
    let last = atts.last();
    let start = last.map_or(0, |a| {
        if a.started_ms > 0 {
            a.started_ms
        } else {
            a.launched_ms
        }
    });
    let end = last.map_or(0, |a| a.ended_ms);
    let duration = match (start, end) {
        (0, _) => Value::Null,
        (s, 0) => json!((now - s).max(0)),
        (s, e) => json!((e - s).max(0)),
    };
    let usage = last.map(|a| a.usage).filter(|u| u.known);
    json!({
        "id": c.job_id(j),
        "state": state_name(c.state(j)),
        "attempts": atts.len(),
        "placement": last.map_or("", |a| &a.placement),
        "cause": last.and_then(|a| a.cause.as_ref()).map(cause_text),
        "duration_ms": duration,
        "cpu_ms": usage.map(|u| u.cpu_ns / 1_000_000),
        "peak_rss": usage.map(|u| u.peak_rss),
        "mem_request": req.memory,
        "millicores": req.millicores,
    })
}

fn json_ok(v: &Value) -> Response<Body> {
    response(
        StatusCode::OK,
        "application/json",
        full(serde_json::to_vec(v).unwrap_or_default()),
    )
}

fn gone() -> Response<Body> {
    text(
        StatusCode::SERVICE_UNAVAILABLE,
        "the leader is stopping\n".into(),
    )
}

/// `/api/workflow`: name, state, counts, start, last event number.
pub async fn workflow(state: &WebState) -> Response<Body> {
    let events = state.events.clone();
    let Some((wf, counts, n, seq)) = state
        .query(move |d| {
            let c = d.core();
            // Read on the driver, which publishes the events: the counts
            // are those after event `seq` exactly.
            (
                c.workflow_state(),
                c.counts(),
                c.job_count(),
                events.last_seq(),
            )
        })
        .await
    else {
        return gone();
    };
    let counts: HashMap<String, u64> = counts
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(s, n)| (state_name(s).to_string(), n))
        .collect();
    json_ok(&json!({
        "id": state.workflow_id,
        "name": state.name,
        "state": wf.as_str_name().trim_start_matches("WORKFLOW_STATE_").to_ascii_lowercase(),
        "counts": counts,
        "jobs": n,
        "seq": seq,
        "started_ms": state.started_ms,
        "now_ms": now_ms(),
    }))
}

/// `/api/jobs?state=a,b&q=SUB&offset=N&limit=L`: one page of the jobs
/// matching the filter, in workflow order, with the number matching.
pub async fn jobs(state: &WebState, query: &str) -> Response<Body> {
    let states: Vec<JobState> = query_param(query, "state")
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.is_empty())
        .filter_map(|s| JobState::from_str_name(&format!("JOB_STATE_{}", s.to_ascii_uppercase())))
        .collect();
    let q = query_param(query, "q").unwrap_or_default();
    let offset: usize = query_param(query, "offset")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let limit: usize = query_param(query, "limit")
        .and_then(|v| v.parse().ok())
        .unwrap_or(100)
        .min(MAX_PAGE);
    let Some(v) = state
        .query(move |d| {
            let c = d.core();
            let now = now_ms();
            let mut total = 0usize;
            let mut rows = Vec::new();
            for j in 0..c.job_count() as JobIdx {
                if !states.is_empty() && !states.contains(&c.state(j)) {
                    continue;
                }
                if !q.is_empty() && !c.job_id(j).contains(q.as_str()) {
                    continue;
                }
                if total >= offset && rows.len() < limit {
                    rows.push(row(c, j, now));
                }
                total += 1;
            }
            json!({"total": total, "offset": offset, "jobs": rows})
        })
        .await
    else {
        return gone();
    };
    json_ok(&v)
}

/// `/api/job?id=ID`: a job with every attempt.
pub async fn job(state: &WebState, query: &str) -> Response<Body> {
    let id = query_param(query, "id").unwrap_or_default();
    let Some(v) = state
        .query(move |d| {
            let c = d.core();
            let j = c.lookup(&id)?;
            let req = c.request(j);
            let (used, allowed) = c.retries(j);
            let attempts: Vec<Value> = c
                .attempts(j)
                .iter()
                .enumerate()
                .map(|(i, a)| {
                    let u = a.usage;
                    json!({
                        "n": i + 1,
                        "launched_ms": a.launched_ms,
                        "started_ms": a.started_ms,
                        "ended_ms": a.ended_ms,
                        "placement": &*a.placement,
                        "cause": a.cause.as_ref().map(cause_text),
                        "outcome": outcome(a.cause.as_ref()),
                        "memory": a.memory,
                        "cpu_ms": u.known.then_some(u.cpu_ns / 1_000_000),
                        "peak_rss": u.known.then_some(u.peak_rss),
                    })
                })
                .collect();
            Some(json!({
                "id": id,
                "state": state_name(c.state(j)),
                "depends_on": c.depends_on(j),
                "millicores": req.millicores,
                "mem_request": req.memory,
                "retries_used": used,
                "retries_allowed": allowed,
                "attempts": attempts,
            }))
        })
        .await
    else {
        return gone();
    };
    match v {
        Some(v) => json_ok(&v),
        None => text(
            StatusCode::NOT_FOUND,
            "no such job in this workflow\n".into(),
        ),
    }
}

/// `/api/graph`: one node per job template (dynamic jobs grouped by their
/// parent's node and their own name), with counts per state, and the
/// edges between nodes.
pub async fn graph(state: &WebState) -> Response<Body> {
    let Some(v) = state.query(|d| graph_of(d.core())).await else {
        return gone();
    };
    json_ok(&v)
}

fn graph_of(c: &Core) -> Value {
    let mut key_of: Vec<String> = Vec::with_capacity(c.templates.len());
    let mut index: HashMap<String, usize> = HashMap::new();
    struct Node {
        key: String,
        count: u64,
        scattered: bool,
        counts: HashMap<String, u64>,
        deps: Vec<String>,
    }
    let mut nodes: Vec<Node> = Vec::new();
    for t in &c.templates {
        let parent = (t.count > 0)
            .then(|| c.jobs[t.first as usize].parent)
            .flatten();
        let key = match parent {
            Some(p) => format!(
                "{}/{}",
                key_of[c.jobs[p as usize].tmpl as usize], t.spec.name
            ),
            None => t.spec.name.clone(),
        };
        key_of.push(key.clone());
        let i = *index.entry(key.clone()).or_insert_with(|| {
            let mut deps: Vec<String> = t.spec.after.clone();
            if let Some(p) = parent {
                deps.insert(0, key_of[c.jobs[p as usize].tmpl as usize].clone());
            }
            nodes.push(Node {
                key,
                count: 0,
                scattered: t.scattered,
                counts: HashMap::new(),
                deps,
            });
            nodes.len() - 1
        });
        let n = &mut nodes[i];
        n.count += u64::from(t.count);
        n.scattered |= t.scattered || n.count > 1;
        for j in t.first..t.first + t.count {
            *n.counts
                .entry(state_name(c.state(j)).to_string())
                .or_insert(0) += 1;
        }
    }
    let nodes: Vec<Value> = nodes
        .into_iter()
        .map(|n| {
            json!({
                "key": n.key,
                "jobs": n.count,
                "scattered": n.scattered,
                "counts": n.counts,
                "deps": n.deps,
            })
        })
        .collect();
    json!({"nodes": nodes})
}

/// `/api/timeline`: the latest attempts (up to a limit), oldest first.
pub async fn timeline(state: &WebState) -> Response<Body> {
    let Some(v) = state
        .query(|d| {
            let c = d.core();
            let mut bars: Vec<(i64, JobIdx, usize)> = Vec::new();
            let mut total = 0usize;
            for j in 0..c.job_count() as JobIdx {
                for (i, a) in c.attempts(j).iter().enumerate() {
                    total += 1;
                    bars.push((a.launched_ms, j, i));
                }
            }
            bars.sort_unstable();
            let skip = bars.len().saturating_sub(MAX_BARS);
            let bars: Vec<Value> = bars[skip..]
                .iter()
                .map(|&(_, j, i)| {
                    let a = &c.attempts(j)[i];
                    json!({
                        "job": c.job_id(j),
                        "n": i + 1,
                        "start_ms": a.launched_ms,
                        "end_ms": a.ended_ms,
                        "outcome": outcome(a.cause.as_ref()),
                        "cause": a.cause.as_ref().map(cause_text),
                    })
                })
                .collect();
            json!({"total": total, "bars": bars, "now_ms": now_ms()})
        })
        .await
    else {
        return gone();
    };
    json_ok(&v)
}

/// One event as the pages read it (a flat object; absent fields are left
/// out). Serialized straight from this struct: an open page costs the
/// leader one small write per event.
#[derive(serde::Serialize)]
struct EventOut<'a> {
    seq: u64,
    time_ms: i64,
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    job: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    to: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    attempt: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    placement: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cause: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    outcome: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    will_retry: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    jobs: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<String>,
}

/// One event as the pages read it, as JSON: `kind` is `state` (`job`,
/// `from`, `to`), `started` (`job`, `attempt`, `placement`), `ended`
/// (`job`, `attempt`, `cause`, `outcome`, `will_retry`), `added` (`jobs`)
/// or `workflow_ended` (`state`), with `seq` and `time_ms`.
pub fn event_json(e: &WorkflowEvent) -> String {
    let time_ms = e
        .time
        .as_ref()
        .map_or(0, |t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000);
    let state = |s: i32| state_name(JobState::try_from(s).unwrap_or(JobState::Unspecified));
    let mut out = EventOut {
        seq: e.seq,
        time_ms,
        kind: "unknown",
        job: None,
        from: None,
        to: None,
        attempt: None,
        placement: None,
        cause: None,
        outcome: None,
        will_retry: None,
        jobs: None,
        state: None,
    };
    match &e.kind {
        Some(Kind::JobStateChanged(s)) => {
            out.kind = "state";
            out.job = Some(&s.job_id);
            out.from = Some(state(s.from));
            out.to = Some(state(s.to));
        }
        Some(Kind::AttemptStarted(s)) => {
            out.kind = "started";
            out.job = Some(&s.job_id);
            out.attempt = Some(attempt_number(&s.attempt_id));
            out.placement = Some(&s.placement);
        }
        Some(Kind::AttemptEnded(s)) => {
            out.kind = "ended";
            out.job = Some(&s.job_id);
            out.attempt = Some(attempt_number(&s.attempt_id));
            out.cause = s.cause.as_ref().map(cause_text);
            out.outcome = Some(outcome(s.cause.as_ref()));
            out.will_retry = Some(s.will_retry);
        }
        Some(Kind::JobsAdded(a)) => {
            out.kind = "added";
            out.jobs = Some(a.job_ids.len());
        }
        Some(Kind::WorkflowEnded(w)) => {
            out.kind = "workflow_ended";
            out.state = toil_proto::v1::WorkflowState::try_from(w.state)
                .ok()
                .map(|s| {
                    s.as_str_name()
                        .trim_start_matches("WORKFLOW_STATE_")
                        .to_ascii_lowercase()
                });
        }
        None => {}
    }
    serde_json::to_string(&out).unwrap_or_default()
}

/// The attempt number of an attempt id (`JOB_ID.N`).
fn attempt_number(attempt_id: &str) -> u32 {
    toil_jobstore::layout::split_attempt_id(attempt_id).map_or(0, |(_, n)| n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use toil_proto::v1::{AttemptEnded, JobStateChanged};

    fn parse(e: &WorkflowEvent) -> Value {
        serde_json::from_str(&event_json(e)).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn events_are_flat_objects_the_pages_read() {
        let e = WorkflowEvent {
            seq: 7,
            time: Some(prost_types::Timestamp {
                seconds: 2,
                nanos: 5_000_000,
            }),
            kind: Some(Kind::AttemptEnded(AttemptEnded {
                job_id: "align[3]".into(),
                attempt_id: "align[3].2".into(),
                cause: Some(Cause::exit_code(3)),
                will_retry: true,
            })),
        };
        assert_eq!(
            parse(&e),
            json!({"seq": 7, "time_ms": 2005, "kind": "ended", "job": "align[3]", "attempt": 2,
                   "cause": "exit code 3", "outcome": "failed", "will_retry": true})
        );
        let e = WorkflowEvent {
            seq: 8,
            time: None,
            kind: Some(Kind::JobStateChanged(JobStateChanged {
                job_id: "a".into(),
                from: JobState::Running as i32,
                to: JobState::Succeeded as i32,
            })),
        };
        assert_eq!(
            parse(&e),
            json!({"seq": 8, "time_ms": 0, "kind": "state", "job": "a", "from": "running", "to": "succeeded"})
        );
        assert_eq!(cause_text(&Cause::succeeded()), "succeeded");
        assert_eq!(outcome(None), "running");
    }
}
