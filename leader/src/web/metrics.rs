//! `/metrics`: the run's metrics for Prometheus (docs/metrics.md).
//!
//! Two formats, chosen by the `Accept` header as Prometheus itself asks:
//! OpenMetrics text 1.0.0 (`application/openmetrics-text`), which is what
//! [`crate::metrics::Metrics::encode`] writes, and otherwise the
//! Prometheus text format 0.0.4 (`text/plain; version=0.0.4`), which every
//! scraper reads. The two differ in how a counter is named: OpenMetrics
//! declares `# TYPE x counter` for samples `x_total`, where 0.0.4 declares
//! the sample's own name, so a 0.0.4 parser would take the counters for
//! untyped metrics. [`prometheus_text`] rewrites those lines and drops the
//! OpenMetrics-only ones (`# UNIT`, `# EOF`).

use std::collections::HashSet;

use http::{HeaderMap, Response, StatusCode, header};

use super::{Body, WebState, full, response};

/// The content type of the OpenMetrics text format.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of the Prometheus text format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The exposition of `state.metrics`, in the format `headers` ask for.
pub fn serve(state: &WebState, headers: &HeaderMap) -> Response<Body> {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let text = state.metrics.encode();
    if wants_openmetrics(accept) {
        response(StatusCode::OK, OPENMETRICS, full(text))
    } else {
        response(
            StatusCode::OK,
            PROMETHEUS_TEXT,
            full(prometheus_text(&text)),
        )
    }
}

/// True if `accept` prefers OpenMetrics text to the Prometheus text format
/// (Prometheus sends `application/openmetrics-text;version=1.0.0,...,
/// text/plain;version=0.0.4;q=0.5,*/*;q=0.1`). Equal preference, or no
/// header, gives the Prometheus text format, which more readers know.
pub fn wants_openmetrics(accept: &str) -> bool {
    let mut open = 0.0f32;
    let mut plain = 0.0f32;
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let mut q = 1.0f32;
        let mut version = None;
        for p in parts {
            match p.split_once('=') {
                Some((k, v)) if k.trim().eq_ignore_ascii_case("q") => {
                    q = v.trim().parse().unwrap_or(0.0);
                }
                Some((k, v)) if k.trim().eq_ignore_ascii_case("version") => {
                    version = Some(v.trim().to_string());
                }
                _ => {}
            }
        }
        match media.as_str() {
            // Only the version written here; 0.0.1 was a draft.
            "application/openmetrics-text" if version.as_deref().is_none_or(|v| v == "1.0.0") => {
                open = open.max(q);
            }
            "text/plain" | "text/*" | "*/*" => plain = plain.max(q),
            _ => {}
        }
    }
    open > 0.0 && open > plain
}

/// OpenMetrics text as the Prometheus text format 0.0.4: counters'
/// `# HELP`/`# TYPE` lines name the `_total` samples, and `# UNIT` and
/// `# EOF` go (they are comments there anyway).
pub fn prometheus_text(openmetrics: &str) -> String {
    let counters: HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 16 * counters.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        if let Some((p, rest)) = meta {
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            if counters.contains(name) && !name.ends_with("_total") {
                out.push_str(p);
                out.push_str(name);
                out.push_str("_total ");
                out.push_str(tail);
                out.push('\n');
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_headers_choose_the_format() {
        // What Prometheus 2.x and 3.x send.
        assert!(wants_openmetrics(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        ));
        assert!(wants_openmetrics(
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        ));
        assert!(!wants_openmetrics(""));
        assert!(!wants_openmetrics("*/*"));
        assert!(!wants_openmetrics("text/plain;version=0.0.4"));
        assert!(!wants_openmetrics(
            "text/plain;version=0.0.4,application/openmetrics-text;version=1.0.0;q=0.5"
        ));
        assert!(!wants_openmetrics(
            "application/openmetrics-text;version=0.0.1"
        ));
        assert!(!wants_openmetrics("application/openmetrics-text;q=0"));
    }

    #[test]
    fn counters_are_renamed_and_openmetrics_lines_dropped() {
        let m = crate::metrics::Metrics::new();
        let om = m.encode();
        assert!(om.contains("# TYPE toil_node_cache_hits counter\n"), "{om}");
        let text = prometheus_text(&om);
        assert!(
            text.contains("# TYPE toil_node_cache_hits_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("# HELP toil_node_cache_hits_total Job inputs"),
            "{text}"
        );
        assert!(text.contains("\ntoil_node_cache_hits_total 0\n"), "{text}");
        assert!(text.contains("# TYPE toil_jobs gauge\n"), "{text}");
        assert!(
            text.contains("# TYPE toil_dispatch_latency_seconds histogram\n"),
            "{text}"
        );
        assert!(
            !text.contains("# UNIT") && !text.contains("# EOF"),
            "{text}"
        );
        assert!(text.ends_with('\n'));
    }
}
