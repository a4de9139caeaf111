//! `/metrics` and `status --json`, through the real `toil-leader` binary
//! with the local batch system: a workflow of a known shape (three jobs in
//! a row take a job's output, which its agent put in the node cache, and a
//! local file, which only the first of them downloads: five hits, one
//! miss; a job that fails once and is retried; a holder that keeps the
//! leader up), scraped over HTTP and read by the Python `prometheus_client`
//! parsers of the test venv (both text formats), and compared with the
//! workflow's own counts and with `status --json`, live and after the
//! leader is gone. On the Kubernetes emulator, the leader's count of its
//! API requests is checked against the API server's. A token kept in a file
//! (`--webTokenFile`) lets Prometheus scrape every run with one secret.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod k8s_support;

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use k8s_support::Cluster;
use serde_json::Value;
use toil_tests::emulator::NodeConfig;
use toil_tests::harness;
use toil_tests::local::Sandbox;
use toil_tests::wait::{wait_for, wait_for_async};
use toil_tests::web::{Reply, request, web_url};

const T: Duration = Duration::from_secs(90);

/// The workflow; returns the gate that lets the holder (and the run) end.
fn workflow(sb: &Sandbox) -> std::path::PathBuf {
    let gate = sb.path().join("gate");
    sb.write("data/ref.txt", &"ACGT".repeat(50_000));
    let marker = sb.path().join("flaky-ran");
    sb.write(
        "wf.yaml",
        &format!(
            r#"
name: metrics-shape
defaults: {{cores: 0.1, memory: 64Mi, retries: 1}}
jobs:
  make:
    command: head -c 300000 /dev/zero > shared.bin && echo made
    outputs: {{shared: shared.bin}}
  use1:
    inputs: [{{from: make.shared}}, data/ref.txt]
    command: wc -c shared.bin ref.txt
  use2:
    after: [use1]
    inputs: [{{from: make.shared}}, data/ref.txt]
    command: wc -c shared.bin ref.txt
  use3:
    after: [use2]
    inputs: [{{from: make.shared}}, data/ref.txt]
    command: wc -c shared.bin ref.txt
  flaky:
    command: |
      if [ ! -e {marker} ]; then touch {marker}; echo failing once >&2; exit 3; fi
      echo fine now
  holder:
    command: while [ ! -e {gate} ]; do sleep 0.05; done
"#,
            marker = marker.display(),
            gate = gate.display()
        ),
    );
    gate
}

/// `GET /metrics` with the token (and `accept`, if given).
fn scrape(port: u16, token: &str, accept: Option<&str>) -> Reply {
    let auth = format!("Bearer {token}");
    let mut headers = vec![("Authorization", auth.as_str())];
    if let Some(a) = accept {
        headers.push(("Accept", a));
    }
    let r = request(port, "GET", "/metrics", &headers);
    assert_eq!(r.status, 200, "{r:?}");
    r
}

/// What the Python parser for `format` reads in `text`.
fn parse(format: &str, text: &str) -> Value {
    let mut child = std::process::Command::new(harness::venv_bin("python"))
        .arg(harness::repo_root().join("tests/python/parse_metrics.py"))
        .arg(format)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the test venv's python");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the {format} parser refused the exposition: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The value of `sample` in `family` whose labels include `labels`,
/// summed over the samples that match (0 when none does).
fn value(m: &Value, family: &str, sample: &str, labels: &[(&str, &str)]) -> f64 {
    m[family]["samples"]
        .as_array()
        .map(|s| {
            s.iter()
                .filter(|s| s["name"] == sample)
                .filter(|s| labels.iter().all(|(k, v)| s["labels"][*k] == *v))
                .map(|s| s["value"].as_f64().unwrap_or(f64::NAN))
                .sum()
        })
        .unwrap_or(0.0)
}

/// `status --json` of the sandbox's job store.
fn status_json(sb: &Sandbox) -> Value {
    try_status_json(sb).unwrap_or_else(|e| panic!("{e}"))
}

/// `status --json`, or what went wrong.
fn try_status_json(sb: &Sandbox) -> Result<Value, String> {
    let js = sb.job_store();
    let r = sb.run(&["status", js.to_str().unwrap(), "--json"], T);
    if r.code() != 0 {
        return Err(format!("status --json exited {}: {}", r.code(), r.stderr));
    }
    serde_json::from_str(&r.stdout)
        .map_err(|e| format!("status --json is not one JSON object ({e}):\n{}", r.stdout))
}

fn job<'a>(status: &'a Value, id: &str) -> &'a Value {
    status["jobs"]
        .as_array()
        .and_then(|j| j.iter().find(|j| j["id"] == id))
        .unwrap_or_else(|| panic!("no job {id} in {status}"))
}

/// The figures `/metrics` and `status --json` must agree on.
fn assert_status_matches_metrics(status: &Value, m: &Value) {
    for state in [
        "waiting",
        "queued",
        "running",
        "succeeded",
        "failed",
        "blocked",
        "cancelled",
    ] {
        assert_eq!(
            status["counts"][state].as_f64(),
            Some(value(m, "toil_jobs", "toil_jobs", &[("state", state)])),
            "jobs {state}"
        );
    }
    let u = &status["usage"];
    for (field, family) in [
        ("cache_hits", "toil_node_cache_hits"),
        ("cache_misses", "toil_node_cache_misses"),
        ("bytes_downloaded", "toil_job_downloaded_bytes"),
        ("bytes_uploaded", "toil_job_uploaded_bytes"),
    ] {
        assert_eq!(
            u[field].as_f64(),
            Some(value(m, family, &format!("{family}_total"), &[])),
            "{field}"
        );
    }
}

#[test]
fn metrics_match_the_workflows_own_counts_and_status_json_says_the_same() {
    let sb = Sandbox::new("metrics");
    let gate = workflow(&sb);
    let leader = sb.spawn(sb.leader(&["run", "wf.yaml", "--clean", "never"]), "leader");
    let web = web_url(&sb.state_dir(), T);

    // No token, a wrong one: refused, and no figure leaks.
    for headers in [vec![], vec![("Authorization", "Bearer not-the-token")]] {
        let r = request(web.port, "GET", "/metrics", &headers);
        assert_eq!(r.status, 401, "{r:?}");
        assert!(!r.body.contains("toil_"), "{}", r.body);
    }

    // Every job but the holder has ended, and the holder has its agent.
    let text = wait_for("five jobs succeeded and the holder running", T, || {
        let body = scrape(web.port, &web.token, None).body;
        let done = body.contains("toil_jobs{state=\"succeeded\"} 5\n")
            && body.contains("toil_jobs{state=\"running\"} 1\n")
            && body.contains("toil_dispatch_latency_seconds_count 7\n");
        if done { Ok(body) } else { Err(body) }
    });

    // The Prometheus text format 0.0.4, by default.
    let r = scrape(web.port, &web.token, None);
    assert_eq!(
        r.header("content-type"),
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let m = parse("prometheus", &text);
    // Counters are typed as counters (not untyped `_total` families).
    for family in [
        "toil_attempts",
        "toil_node_cache_hits",
        "toil_log_received_bytes",
        "toil_job_store_operations",
    ] {
        assert_eq!(m[family]["type"], "counter", "{family}: {text}");
    }
    assert_eq!(m["toil_jobs"]["type"], "gauge");
    assert_eq!(m["toil_dispatch_latency_seconds"]["type"], "histogram");
    assert_eq!(m["toil_attempt_duration_seconds"]["type"], "histogram");

    // Jobs by state: six jobs, five succeeded, the holder running.
    let jobs = |state| value(&m, "toil_jobs", "toil_jobs", &[("state", state)]);
    assert_eq!(jobs("succeeded"), 5.0);
    assert_eq!(jobs("running"), 1.0);
    for state in ["waiting", "queued", "failed", "blocked", "cancelled"] {
        assert_eq!(jobs(state), 0.0, "{state}");
    }

    // Attempts by cause: five first tries succeeded, the flaky job's first
    // failed with its exit code and was retried; nothing else.
    let attempts =
        |labels: &[(&str, &str)]| value(&m, "toil_attempts", "toil_attempts_total", labels);
    assert_eq!(
        attempts(&[("cause", "succeeded"), ("outcome", "succeeded")]),
        5.0
    );
    assert_eq!(
        attempts(&[("cause", "exit_code"), ("outcome", "retried")]),
        1.0
    );
    assert_eq!(attempts(&[]), 6.0, "six attempts ended: {text}");

    // One duration per ended attempt, by job name; one dispatch per
    // attempt that reached an agent (the holder's too).
    let dur = |job: &str| {
        value(
            &m,
            "toil_attempt_duration_seconds",
            "toil_attempt_duration_seconds_count",
            &[("job", job)],
        )
    };
    assert_eq!(dur("flaky"), 2.0);
    for j in ["make", "use1", "use2", "use3"] {
        assert_eq!(dur(j), 1.0, "{j}");
    }
    assert_eq!(
        value(
            &m,
            "toil_attempt_duration_seconds",
            "toil_attempt_duration_seconds_count",
            &[]
        ),
        6.0
    );
    assert_eq!(
        value(
            &m,
            "toil_dispatch_latency_seconds",
            "toil_dispatch_latency_seconds_count",
            &[]
        ),
        7.0
    );
    let inf = value(
        &m,
        "toil_dispatch_latency_seconds",
        "toil_dispatch_latency_seconds_bucket",
        &[("le", "+Inf")],
    );
    assert_eq!(inf, 7.0, "the +Inf bucket holds every observation");

    // The node cache: make's output was cached when it was stored, so
    // every use found it; the local file was downloaded once, by use1.
    let hits = value(
        &m,
        "toil_node_cache_hits",
        "toil_node_cache_hits_total",
        &[],
    );
    let misses = value(
        &m,
        "toil_node_cache_misses",
        "toil_node_cache_misses_total",
        &[],
    );
    assert_eq!((hits, misses), (5.0, 1.0), "{text}");
    assert!(
        value(
            &m,
            "toil_job_downloaded_bytes",
            "toil_job_downloaded_bytes_total",
            &[]
        ) >= 200_000.0
    );

    // Logs and the job store.
    assert!(
        value(
            &m,
            "toil_log_received_bytes",
            "toil_log_received_bytes_total",
            &[]
        ) > 0.0
    );
    let ops = |op, outcome| {
        value(
            &m,
            "toil_job_store_operations",
            "toil_job_store_operations_total",
            &[("operation", op), ("outcome", outcome)],
        )
    };
    assert!(
        ops("write", "ok") > 0.0 && ops("read", "ok") > 0.0,
        "{text}"
    );
    assert!(
        m.get("toil_kubernetes_api_requests").is_none(),
        "no Kubernetes here"
    );

    // OpenMetrics when asked for it, as Prometheus asks.
    let r = scrape(
        web.port,
        &web.token,
        Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"),
    );
    assert_eq!(
        r.header("content-type"),
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let om = parse("openmetrics", &r.body);
    assert_eq!(om["toil_attempts"]["type"], "counter");
    assert_eq!(om["toil_dispatch_latency_seconds"]["unit"], "seconds");
    assert_eq!(value(&om, "toil_attempts", "toil_attempts_total", &[]), 6.0);

    // status --json from the live leader says the same.
    let live = status_json(&sb);
    assert_eq!(live["source"], "leader");
    assert_eq!(live["state"], "running");
    assert_eq!(live["workflow"], "metrics-shape");
    assert_eq!(live["jobs_total"], 6);
    assert_eq!(live["attempts_total"], 7);
    assert_eq!(live["leader"]["web_url"], web.url.as_str());
    assert_status_matches_metrics(&live, &m);
    let flaky = job(&live, "flaky");
    assert_eq!(flaky["state"], "succeeded");
    assert_eq!(flaky["retries_used"], 1);
    let a = &flaky["attempts"];
    assert_eq!(a[0]["cause"]["kind"], "exit_code");
    assert_eq!(a[0]["cause"]["code"], 3);
    assert_eq!(a[0]["cause"]["text"], "exit code 3");
    assert_eq!(a[1]["cause"]["kind"], "succeeded");
    assert_eq!(a[1]["id"], "flaky.2");
    let holder = job(&live, "holder");
    assert_eq!(holder["state"], "running");
    assert_eq!(holder["attempts"][0]["cause"], Value::Null);
    assert!(
        holder["attempts"][0]["placement"]
            .as_str()
            .is_some_and(|p| p.starts_with("local pid ")),
        "{holder}"
    );
    let make = job(&live, "make");
    assert_eq!(make["requested"]["memory_bytes"], 64 << 20);
    assert_eq!(make["requested"]["cores"], 0.1);
    let usage = &make["attempts"][0]["usage"];
    assert!(usage["peak_rss_bytes"].as_u64().unwrap_or(0) > 0, "{make}");
    let ratio = usage["peak_rss_of_memory"].as_f64().unwrap_or(-1.0);
    let want = usage["peak_rss_bytes"].as_f64().unwrap() / f64::from(64u32 << 20);
    assert!((ratio - want).abs() < 1e-9, "{make}");
    assert!(make["attempts"][0]["seconds"].as_f64().unwrap_or(-1.0) >= 0.0);
    assert!(
        make["attempts"][0]["launched_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );

    // Let the run end; then status --json from the job store alone.
    std::fs::write(&gate, "").unwrap();
    leader.wait(T).expect_code(0);
    let offline = status_json(&sb);
    assert_eq!(offline["source"], "job_store");
    assert_eq!(offline["state"], "succeeded");
    assert_eq!(offline["leader"], Value::Null);
    assert_eq!(offline["resume"], Value::Null);
    assert_eq!(offline["counts"]["succeeded"], 6);
    assert_eq!(offline["attempts_total"], 7);
    assert_eq!(offline["workflow_id"], live["workflow_id"]);
    assert_eq!(offline["usage"]["cache_hits"], 5);
    assert_eq!(offline["usage"]["cache_misses"], 1);
    // The ended attempts read the same from the journal as from the
    // leader.
    for id in ["make", "use1", "use2", "use3", "flaky"] {
        let (l, o) = (job(&live, id), job(&offline, id));
        assert_eq!(l["attempts"], o["attempts"], "{id}");
        assert_eq!(l["requested"], o["requested"], "{id}");
    }
    assert_eq!(
        job(&offline, "holder")["attempts"][0]["cause"]["kind"],
        "succeeded"
    );
}

#[test]
fn status_json_of_an_interrupted_run_says_how_to_resume() {
    let sb = Sandbox::new("status-json-stopped");
    sb.write(
        "wf.yaml",
        "name: stopped\njobs:\n  slow:\n    command: sleep 600\n  after:\n    after: [slow]\n    command: echo never\n",
    );
    let leader = sb.spawn(sb.leader(&["run", "wf.yaml"]), "leader");
    wait_for("the slow job running", T, || {
        let s = try_status_json(&sb)?;
        if s["counts"]["running"] == 1 {
            Ok(())
        } else {
            Err(s.to_string())
        }
    });
    leader.signal(nix::sys::signal::Signal::SIGINT);
    let end = leader.wait(T);
    assert_eq!(end.code(), 130, "{end:?}");
    let s = status_json(&sb);
    assert_eq!(s["source"], "job_store");
    assert_eq!(s["state"], "running");
    assert_eq!(s["counts"]["queued"], 1, "{s}");
    assert_eq!(s["counts"]["waiting"], 1, "{s}");
    let resume = s["resume"].as_str().unwrap_or_default();
    assert!(
        resume.starts_with("toil-leader run ") && resume.contains("--restart --jobStore"),
        "{resume}"
    );
    let slow = job(&s, "slow");
    assert_eq!(slow["attempts"][0]["cause"]["kind"], "agent_lost");
    assert_eq!(job(&s, "after")["attempts"], serde_json::json!([]));
}

/// On Kubernetes (the emulator, under the shipped RBAC): the leader's own
/// count of its API requests, by verb, resource and code, agrees with the
/// API server's count of what it received.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_api_requests_are_counted_as_the_api_server_counts_them() {
    let c = Cluster::start(k8s_support::config(vec![NodeConfig::new("node-1")])).await;
    let gate = c.dir.path().join("gate");
    c.workflow(
        "k8sm",
        &format!(
            "name: k8sm\ndefaults: {{cores: 0.1, memory: 256Mi, disk: 100Mi}}\njobs:\n  a:\n    command: echo hi\n  holder:\n    command: while [ ! -e {} ]; do sleep 0.05; done\n",
            gate.display()
        ),
    );
    let mut leader = c.spawn("k8sm", &[]);
    let state = c.dir.path().join("state");
    let web = tokio::task::spawn_blocking(move || web_url(&state, T))
        .await
        .unwrap();
    let (port, token) = (web.port, web.token.clone());
    let text = wait_for_async("a succeeded and the holder's pod running", T, || {
        let token = token.clone();
        async move {
            let body = tokio::task::spawn_blocking(move || scrape(port, &token, None).body)
                .await
                .unwrap();
            let done = body.contains("toil_jobs{state=\"succeeded\"} 1\n")
                && body.contains("toil_jobs{state=\"running\"} 1\n")
                && body.contains("toil_dispatch_latency_seconds_count 2\n");
            if done { Ok(body) } else { Err(body) }
        }
    })
    .await;
    let server = c.emu.request_counts();
    let m = {
        let text = text.clone();
        tokio::task::spawn_blocking(move || parse("prometheus", &text))
            .await
            .unwrap()
    };
    assert_eq!(
        m["toil_kubernetes_api_requests"]["type"], "counter",
        "{text}"
    );
    let counted = |labels: &[(&str, &str)]| {
        value(
            &m,
            "toil_kubernetes_api_requests",
            "toil_kubernetes_api_requests_total",
            labels,
        )
    };
    // Two agents' Jobs and token Secrets, and the relay's probe: created
    // once each, answered 201, and counted the same on both sides.
    for resource in ["jobs", "secrets"] {
        let n = server.get("create", resource) as f64;
        assert!(n >= 2.0, "{server:?}");
        assert_eq!(
            counted(&[("verb", "create"), ("resource", resource)]),
            n,
            "{resource}: {text}"
        );
        assert_eq!(
            counted(&[("verb", "create"), ("resource", resource), ("code", "201")]),
            n
        );
    }
    assert_eq!(
        counted(&[("verb", "list"), ("resource", "nodes")]),
        server.get("list", "nodes") as f64
    );
    assert!(
        counted(&[("verb", "watch"), ("resource", "pods")]) >= 1.0,
        "{text}"
    );
    std::fs::write(&gate, "").unwrap();
    let status = tokio::time::timeout(T, leader.wait())
        .await
        .expect("the leader ends once the holder does")
        .unwrap();
    assert_eq!(status.code(), Some(0), "{}", c.output_of("k8sm"));
}

/// `--webTokenFile`: the web token (and so the scrape token) comes from a
/// file of the user's, the same at every start; a file others may read, a
/// short token, or a missing file is refused before anything runs, with
/// the fix.
#[test]
fn a_token_file_gives_every_start_the_same_scrape_token_and_bad_files_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let token = "7f3a9c0e5b2d4f6a8c1e3b5d7f9a0c2e4b6d8f1a";
    let write_token = |sb: &Sandbox, name: &str, text: &str, mode: u32| {
        let p = sb.write(name, text);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p.to_str().unwrap().to_string()
    };
    for run in 0..2 {
        let sb = Sandbox::new("metrics-tokenfile");
        let file = write_token(&sb, "web-token", &format!("{token}\n"), 0o600);
        let gate = sb.path().join("gate");
        sb.write(
            "hold.yaml",
            &format!(
                "jobs:\n  hold:\n    command: while [ ! -e {} ]; do sleep 0.05; done\n",
                gate.display()
            ),
        );
        let leader = sb.spawn(
            sb.leader(&["run", "hold.yaml", "--webTokenFile", &file]),
            "leader",
        );
        let web = web_url(&sb.state_dir(), T);
        assert_eq!(web.token, token, "start {run} printed the file's token");
        let body = scrape(web.port, token, None).body;
        assert!(body.contains("toil_jobs{state=\"running\"} 1"), "{body}");
        let r = request(
            web.port,
            "GET",
            "/metrics",
            &[(
                "Authorization",
                "Bearer 7f3a9c0e5b2d4f6a8c1e3b5d7f9a0c2e4b6d8f1b",
            )],
        );
        assert_eq!(r.status, 401, "a token one character off: {r:?}");
        std::fs::write(&gate, "").unwrap();
        leader.wait(T).expect_code(0);
    }

    let sb = Sandbox::new("metrics-tokenfile-bad");
    sb.write("ok.yaml", "jobs:\n  a:\n    command: echo hi\n");
    let open = write_token(&sb, "open-token", token, 0o644);
    let short = write_token(&sb, "short-token", "abc123", 0o600);
    let spaced = write_token(&sb, "spaced-token", &format!("{token} {token}"), 0o600);
    let missing = sb.path().join("no-such-token");
    let missing = missing.to_str().unwrap();
    for (file, says) in [
        (
            open.as_str(),
            "other users may read or change it (mode 644); run chmod 600",
        ),
        (short.as_str(), "at least 32 visible ASCII characters"),
        (spaced.as_str(), "at least 32 visible ASCII characters"),
        (missing, "No such file or directory"),
    ] {
        let r = sb.run(&["run", "ok.yaml", "--webTokenFile", file], T);
        assert_eq!(r.code(), 2, "{file}: {}", r.stderr);
        assert!(r.stderr.contains(says), "{file}: {}", r.stderr);
        assert!(
            r.stderr.contains("--webTokenFile / TOIL_WEB_TOKEN_FILE"),
            "{}",
            r.stderr
        );
        assert!(
            !r.stderr.contains(token),
            "the token is not echoed: {}",
            r.stderr
        );
    }
    assert!(!sb.job_store().exists(), "nothing ran");
}
