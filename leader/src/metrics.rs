//! The leader's metrics, served as `/metrics` in the Prometheus text format.
//!
//! One [`Metrics`] per run, shared by the parts that count (the driver, the
//! batch systems, the job store, the log hub) and by the web server that
//! encodes it. Labels are bounded: job names, verbs, codes and causes, never
//! job ids. docs/metrics.md lists every metric.
//!
//! What is counted elsewhere already is read when scraped, not counted
//! twice: the job store's operation counters and S3 request counters (a
//! [`Collector`]), the log hub's byte counters and the Kubernetes client's
//! request counters (registered as they are). What only the driver sees
//! (job states, attempt endings, latencies, what agents measured) is
//! counted here, by plain atomics on the driver's own task: nothing on a
//! hot path takes a lock but a histogram's, once per attempt.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use toil_jobstore::JobStore;
use toil_proto::v1::{CauseKind, JobState};
use toil_proto::{JOB_STATES, StateCounts};

use crate::core::Attempt;

/// At most this many job names label the duration histogram; the jobs of
/// any further names (a workflow adding jobs of ever new names while it
/// runs) share the label `other`.
pub const MAX_JOB_NAMES: usize = 64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    cause: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    job: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabels {
    verb: &'static str,
    resource: String,
    code: String,
}

/// Kubernetes API requests by verb, resource and HTTP status, counted by
/// the client itself (`batch::kubernetes::counting`). Cheap to clone:
/// clones share the counts.
#[derive(Clone, Debug, Default)]
pub struct ApiRequests(Family<ApiLabels, Counter>);

impl ApiRequests {
    /// Counts one request: `code` is the HTTP status, `None` when no
    /// response came (a broken connection, a timeout).
    pub fn record(&self, verb: &'static str, resource: &str, code: Option<u16>) {
        let labels = ApiLabels {
            verb,
            resource: resource.to_string(),
            code: code.map_or_else(|| "error".to_string(), |c| c.to_string()),
        };
        self.0.get_or_create(&labels).inc();
    }
}

/// Bytes of job output the log hub received, stored and dropped. Cheap to
/// clone: clones share the counts, so the hub counts and the registry
/// reads the same atomics.
#[derive(Clone, Debug, Default)]
pub struct LogBytes {
    /// Output received from agents, in order (what a job printed).
    pub received: Counter,
    /// Bytes written to the job store as log segments (the leader's own
    /// notes included).
    pub stored: Counter,
    /// Output dropped past `--maxLogBytesPerAttempt`.
    pub dropped: Counter,
}

/// Every metric of one leader run.
pub struct Metrics {
    registry: Registry,
    /// Jobs per state, one gauge per state in [`JOB_STATES`]' order.
    jobs: [Gauge; JOB_STATES.len()],
    attempts: Family<AttemptLabels, Counter>,
    dispatch: Histogram,
    duration: Family<JobLabels, Histogram, fn() -> Histogram>,
    /// Job names labelling `duration` so far (`other` apart).
    job_names: AtomicUsize,
    cpu: Counter<f64, AtomicU64>,
    cache_hits: Counter,
    cache_misses: Counter,
    downloaded: Counter,
    uploaded: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Buckets from 10 ms, ×4 each, to about 11.7 h: a dispatch takes
/// milliseconds on one machine and minutes behind a cluster autoscaler; a
/// job, anything.
fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 4.0, 12))
}

/// `JOB_STATE_QUEUED` as `queued`.
pub fn state_label(s: JobState) -> &'static str {
    match s {
        JobState::Waiting => "waiting",
        JobState::Queued => "queued",
        JobState::Running => "running",
        JobState::Succeeded => "succeeded",
        JobState::Failed => "failed",
        JobState::Blocked => "blocked",
        JobState::Cancelled => "cancelled",
        JobState::Unspecified => "unspecified",
    }
}

/// `CAUSE_KIND_EXIT_CODE` as `exit_code`.
pub fn cause_label(k: CauseKind) -> &'static str {
    match k {
        CauseKind::Unspecified => "unspecified",
        CauseKind::Succeeded => "succeeded",
        CauseKind::ExitCode => "exit_code",
        CauseKind::OomKilled => "oom_killed",
        CauseKind::Unschedulable => "unschedulable",
        CauseKind::ImagePull => "image_pull",
        CauseKind::Evicted => "evicted",
        CauseKind::Preempted => "preempted",
        CauseKind::NodeLost => "node_lost",
        CauseKind::AgentLost => "agent_lost",
        CauseKind::DeadlineExceeded => "deadline_exceeded",
        CauseKind::Cancelled => "cancelled",
        CauseKind::ConfigError => "config_error",
        CauseKind::Signaled => "signaled",
        CauseKind::OutputMissing => "output_missing",
        CauseKind::StagingFailed => "staging_failed",
        CauseKind::PodStartTimeout => "pod_start_timeout",
    }
}

impl Metrics {
    /// A registry with every metric at zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("toil");
        let family: Family<StateLabels, Gauge> = Family::default();
        let jobs = JOB_STATES.map(|s| {
            family.get_or_create_owned(&StateLabels {
                state: state_label(s),
            })
        });
        registry.register(
            "jobs",
            "Jobs of the workflow in each state (waiting, queued, running, succeeded, failed, blocked, cancelled)",
            family,
        );
        let attempts = Family::default();
        registry.register(
            "attempts",
            "Attempts ended by this leader, by cause (the CauseKind: succeeded, exit_code, oom_killed, agent_lost...) and outcome (succeeded, retried, failed: the job's last attempt)",
            attempts.clone(),
        );
        let dispatch = seconds_histogram();
        registry.register_with_unit(
            "dispatch_latency",
            "From an attempt's launch (the job leaving the queue) to its assignment reaching an agent: the batch system's start of an agent, or a reused agent's next report",
            Unit::Seconds,
            dispatch.clone(),
        );
        let duration: Family<JobLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(seconds_histogram);
        registry.register_with_unit(
            "attempt_duration",
            "Wall time of each ended attempt's command as its agent measured it (else from its start, or its launch, to its end), by job name (scatter instances share their job's name)",
            Unit::Seconds,
            duration.clone(),
        );
        let cpu = Counter::<f64, AtomicU64>::default();
        registry.register_with_unit(
            "attempt_cpu",
            "CPU time of ended attempts, as their agents measured it",
            Unit::Seconds,
            cpu.clone(),
        );
        let cache_hits = Counter::default();
        registry.register(
            "node_cache_hits",
            "Job inputs served from a node's shared input cache, as agents reported them",
            cache_hits.clone(),
        );
        let cache_misses = Counter::default();
        registry.register(
            "node_cache_misses",
            "Job inputs not in a node's shared input cache (downloaded), as agents reported them",
            cache_misses.clone(),
        );
        let downloaded = Counter::default();
        registry.register_with_unit(
            "job_downloaded",
            "Bytes jobs' agents downloaded from the job store (cache misses and uncached inputs)",
            Unit::Bytes,
            downloaded.clone(),
        );
        let uploaded = Counter::default();
        registry.register_with_unit(
            "job_uploaded",
            "Bytes jobs' agents uploaded to the job store (outputs)",
            Unit::Bytes,
            uploaded.clone(),
        );
        Metrics {
            registry,
            jobs,
            attempts,
            dispatch,
            duration,
            job_names: AtomicUsize::new(0),
            cpu,
            cache_hits,
            cache_misses,
            downloaded,
            uploaded,
        }
    }

    /// Adds the leader's job-store counters (operations by kind and
    /// outcome; for an `aws:` store, HTTP requests by method), read at each
    /// scrape.
    pub fn with_job_store(mut self, store: &JobStore) -> Self {
        self.registry
            .register_collector(Box::new(JobStoreCollector(store.clone())));
        self
    }

    /// Adds the log hub's byte counters.
    pub fn with_logs(mut self, bytes: &LogBytes) -> Self {
        self.registry.register_with_unit(
            "log_received",
            "Job output received from agents",
            Unit::Bytes,
            bytes.received.clone(),
        );
        self.registry.register_with_unit(
            "log_stored",
            "Log bytes written to the job store (job output and the leader's notes)",
            Unit::Bytes,
            bytes.stored.clone(),
        );
        self.registry.register_with_unit(
            "log_dropped",
            "Job output dropped past --maxLogBytesPerAttempt",
            Unit::Bytes,
            bytes.dropped.clone(),
        );
        self
    }

    /// Adds the Kubernetes client's request counts (a Kubernetes run).
    pub fn with_kubernetes(mut self, requests: Option<&ApiRequests>) -> Self {
        if let Some(r) = requests {
            self.registry.register(
                "kubernetes_api_requests",
                "Kubernetes API requests sent by the leader, by verb, resource (pods, jobs, pods/log...) and HTTP status (error: no response)",
                r.0.clone(),
            );
        }
        self
    }

    /// Sets the jobs-per-state gauges.
    pub fn set_job_counts(&self, counts: &StateCounts) {
        for (g, (_, n)) in self.jobs.iter().zip(counts.iter()) {
            g.set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// An attempt's assignment reached its agent `latency` after launch.
    pub fn dispatched(&self, latency: Duration) {
        self.dispatch.observe(latency.as_secs_f64());
    }

    /// An attempt of a job named `job` ended: what it was and what its
    /// agent measured. `will_retry` says whether the job runs again.
    pub fn attempt_ended(&self, job: &str, attempt: &Attempt, will_retry: bool) {
        let kind = attempt
            .cause
            .as_ref()
            .map_or(CauseKind::Unspecified, |c| c.kind());
        let outcome = if kind == CauseKind::Succeeded {
            "succeeded"
        } else if will_retry {
            "retried"
        } else {
            "failed"
        };
        self.attempts
            .get_or_create(&AttemptLabels {
                cause: cause_label(kind),
                outcome,
            })
            .inc();
        let u = &attempt.usage;
        let seconds = if u.known && u.wall_ns > 0 {
            u.wall_ns as f64 / 1e9
        } else {
            let from = if attempt.started_ms > 0 {
                attempt.started_ms
            } else {
                attempt.launched_ms
            };
            (attempt.ended_ms - from).max(0) as f64 / 1e3
        };
        let mut labels = JobLabels {
            job: job.to_string(),
        };
        if self.duration.get(&labels).is_none() {
            // Only the driver's task ends attempts, so this count and the
            // family's cannot drift apart.
            if self.job_names.load(Ordering::Relaxed) >= MAX_JOB_NAMES {
                labels.job = "other".to_string();
            } else {
                self.job_names.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.duration.get_or_create(&labels).observe(seconds);
        if u.known {
            self.cpu.inc_by(u.cpu_ns as f64 / 1e9);
            self.cache_hits.inc_by(u64::from(u.cache_hits));
            self.cache_misses.inc_by(u64::from(u.cache_misses));
            self.downloaded.inc_by(u.bytes_downloaded);
            self.uploaded.inc_by(u.bytes_uploaded);
        }
    }

    /// The exposition in the OpenMetrics text format 1.0.0, which the
    /// Prometheus text format 0.0.4 parsers read too (its `# UNIT` and
    /// `# EOF` lines are comments there).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// Reads the job store's counters at each scrape.
#[derive(Debug)]
struct JobStoreCollector(JobStore);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    operation: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: &'static str,
}

impl Collector for JobStoreCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let c = self.0.op_counts();
        {
            let mut m = encoder.encode_descriptor(
                "job_store_operations",
                "Job-store operations of the leader since it opened the store, by operation (read, write, list, delete) and outcome (ok, error; a refused conditional write is an error)",
                None,
                MetricType::Counter,
            )?;
            for (operation, all, errors) in [
                ("read", c.reads, c.read_errors),
                ("write", c.writes, c.write_errors),
                ("list", c.lists, c.list_errors),
                ("delete", c.deletes, c.delete_errors),
            ] {
                for (outcome, n) in [("ok", all.saturating_sub(errors)), ("error", errors)] {
                    ConstCounter::new(n)
                        .encode(m.encode_family(&OpLabels { operation, outcome })?)?;
                }
            }
        }
        if let Some(r) = self.0.http_requests() {
            let mut m = encoder.encode_descriptor(
                "job_store_http_requests",
                "HTTP requests the leader sent to an aws: job store's S3 endpoint, by method (LIST is a GET of a listing), retries included",
                None,
                MetricType::Counter,
            )?;
            for (method, n) in [
                ("GET", r.get),
                ("LIST", r.list),
                ("HEAD", r.head),
                ("PUT", r.put),
                ("POST", r.post),
                ("DELETE", r.delete),
            ] {
                ConstCounter::new(n).encode(m.encode_family(&MethodLabels { method })?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use toil_proto::v1::Cause;

    fn attempt(cause: Cause, wall_s: u64, hits: u32) -> Attempt {
        Attempt {
            memory: 1 << 20,
            launched_ms: 1_000,
            ended_ms: 5_000,
            started_ms: 2_000,
            placement: "local pid 1".into(),
            cause: Some(cause),
            usage: crate::core::Usage {
                known: true,
                peak_rss: 1 << 20,
                cpu_ns: 500_000_000,
                wall_ns: wall_s * 1_000_000_000,
                bytes_downloaded: 100,
                bytes_uploaded: 10,
                cache_hits: hits,
                cache_misses: 1,
            },
            staged: Vec::new(),
        }
    }

    fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line {prefix:?} in\n{text}"))
    }

    #[test]
    fn attempts_states_and_usage_are_counted_with_bounded_labels() {
        let m = Metrics::new();
        let mut counts = StateCounts::default();
        counts[JobState::Succeeded] = 3;
        counts[JobState::Running] = 1;
        m.set_job_counts(&counts);
        m.attempt_ended("align", &attempt(Cause::exit_code(3), 2, 0), true);
        m.attempt_ended("align", &attempt(Cause::succeeded(), 3, 2), false);
        let mut no_usage = attempt(Cause::agent_lost("gone"), 0, 0);
        no_usage.usage = crate::core::Usage::default();
        m.attempt_ended("sort", &no_usage, false);
        m.dispatched(Duration::from_millis(20));
        let text = m.encode();
        assert_eq!(
            line(&text, "toil_jobs{state=\"succeeded\"}"),
            "toil_jobs{state=\"succeeded\"} 3"
        );
        assert_eq!(
            line(&text, "toil_jobs{state=\"failed\"}"),
            "toil_jobs{state=\"failed\"} 0"
        );
        assert!(
            text.contains("toil_attempts_total{cause=\"exit_code\",outcome=\"retried\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("toil_attempts_total{cause=\"succeeded\",outcome=\"succeeded\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("toil_attempts_total{cause=\"agent_lost\",outcome=\"failed\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("toil_attempt_duration_seconds_count{job=\"align\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("toil_attempt_duration_seconds_sum{job=\"align\"} 5.0"),
            "{text}"
        );
        // No usage: from the start to the end, 3 s.
        assert!(
            text.contains("toil_attempt_duration_seconds_sum{job=\"sort\"} 3.0"),
            "{text}"
        );
        assert!(
            text.contains("toil_dispatch_latency_seconds_count 1"),
            "{text}"
        );
        assert!(text.contains("toil_node_cache_hits_total 2"), "{text}");
        assert!(text.contains("toil_node_cache_misses_total 2"), "{text}");
        assert!(
            text.contains("toil_job_downloaded_bytes_total 200"),
            "{text}"
        );
        assert!(
            text.contains("toil_attempt_cpu_seconds_total 1.0"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn job_names_past_the_bound_share_one_label() {
        let m = Metrics::new();
        for i in 0..(MAX_JOB_NAMES + 10) {
            m.attempt_ended(&format!("j{i}"), &attempt(Cause::succeeded(), 1, 0), false);
        }
        let text = m.encode();
        let names = text
            .lines()
            .filter(|l| l.starts_with("toil_attempt_duration_seconds_count"))
            .count();
        assert_eq!(names, MAX_JOB_NAMES + 1, "{text}");
        assert!(
            text.contains("toil_attempt_duration_seconds_count{job=\"other\"} 10"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn the_job_store_and_log_counters_are_read_at_each_scrape() {
        let dir = tempfile::tempdir().unwrap();
        let loc = toil_jobstore::Locator::parse(dir.path().join("js").to_str().unwrap()).unwrap();
        let store = JobStore::open(&loc).await.unwrap();
        store.initialize().await.unwrap();
        let logs = LogBytes::default();
        let m = Metrics::new().with_job_store(&store).with_logs(&logs);
        store
            .put_bytes(
                "a",
                bytes::Bytes::from_static(b"x"),
                toil_jobstore::Condition::Always,
            )
            .await
            .unwrap();
        assert!(store.get_bytes("a").await.unwrap().is_some());
        let before = m.encode();
        store
            .put_bytes(
                "a",
                bytes::Bytes::from_static(b"y"),
                toil_jobstore::Condition::IfAbsent,
            )
            .await
            .unwrap_err();
        logs.received.inc_by(42);
        let text = m.encode();
        let writes = |t: &str, outcome: &str| -> u64 {
            line(
                t,
                &format!(
                    "toil_job_store_operations_total{{operation=\"write\",outcome=\"{outcome}\"}}"
                ),
            )
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
        };
        assert_eq!(writes(&text, "ok"), writes(&before, "ok"));
        assert_eq!(writes(&text, "error"), writes(&before, "error") + 1);
        assert!(
            text.contains("toil_job_store_operations_total{operation=\"read\",outcome=\"ok\"}"),
            "{text}"
        );
        assert!(
            !text.contains("job_store_http_requests"),
            "a file: store sends no HTTP"
        );
        assert!(text.contains("toil_log_received_bytes_total 42"), "{text}");
    }

    #[test]
    fn kubernetes_requests_are_counted_by_verb_resource_and_code() {
        let r = ApiRequests::default();
        r.record("create", "jobs", Some(201));
        r.record("create", "jobs", Some(201));
        r.record("list", "pods", Some(429));
        r.record("watch", "pods", None);
        let m = Metrics::new().with_kubernetes(Some(&r));
        let text = m.encode();
        assert!(text.contains("toil_kubernetes_api_requests_total{verb=\"create\",resource=\"jobs\",code=\"201\"} 2"), "{text}");
        assert!(
            text.contains(
                "toil_kubernetes_api_requests_total{verb=\"list\",resource=\"pods\",code=\"429\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("toil_kubernetes_api_requests_total{verb=\"watch\",resource=\"pods\",code=\"error\"} 1"), "{text}");
    }
}
