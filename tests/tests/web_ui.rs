//! The leader's live web view, through the real `toil-leader` binary with
//! the local batch system: in headless Chromium (the page loads cleanly,
//! follows a running workflow without a reload, shows a log line printed
//! after it opened, one timeline bar per attempt, a scatter as one graph
//! node), and over raw HTTP (nothing without the token, nothing but its
//! own pages, TLS off loopback).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use toil_tests::browser::{Browser, artifact};
use toil_tests::local::Sandbox;
use toil_tests::web::{request, request_tls, web_url};

const T: Duration = Duration::from_secs(60);

/// Files that let a test's jobs go on.
struct Gates {
    /// The gated job prints its second line.
    a: std::path::PathBuf,
    /// The gated job ends.
    b: std::path::PathBuf,
    /// The holder ends (and with it the workflow and the leader).
    c: std::path::PathBuf,
}

impl Gates {
    fn open_all(&self) {
        for g in [&self.a, &self.b, &self.c] {
            std::fs::write(g, "").unwrap();
        }
    }
}

/// A workflow with a job held by two gates (a line before each), a job
/// that fails once and then succeeds, a six-way scatter, a job after
/// both, and a holder that keeps the workflow (and so the leader and its
/// web view) running until the test is done looking.
fn workflow(sb: &Sandbox) -> Gates {
    let (a, b, c) = (
        sb.path().join("gate-a"),
        sb.path().join("gate-b"),
        sb.path().join("gate-c"),
    );
    let marker = sb.path().join("flaky-ran");
    sb.write(
        "wf.yaml",
        &format!(
            r#"
defaults: {{cores: 0.1, memory: 32Mi, retries: 2}}
jobs:
  gated:
    command: |
      echo first line
      while [ ! -e {a} ]; do sleep 0.05; done
      echo second line
      while [ ! -e {b} ]; do sleep 0.05; done
  flaky:
    command: |
      if [ ! -e {marker} ]; then touch {marker}; echo failing once; exit 3; fi
      echo fine now
  fan:
    scatter: {{i: [1, 2, 3, 4, 5, 6]}}
    command: echo part {{{{i}}}}
  gather:
    after: [fan, flaky]
    command: echo gathered
  holder:
    command: while [ ! -e {c} ]; do sleep 0.05; done
"#,
            a = a.display(),
            b = b.display(),
            c = c.display(),
            marker = marker.display()
        ),
    );
    Gates { a, b, c }
}

/// The `data-state` of a job's row in the jobs table ("" if not shown).
fn row_state(id: &str) -> String {
    format!(
        "(document.querySelector('#jobs tr[data-id=\"{id}\"]') || {{dataset: {{state: ''}}}}).dataset.state"
    )
}

#[test]
fn the_page_follows_a_running_workflow_without_a_reload() {
    let sb = Sandbox::new("webui");
    let gates = workflow(&sb);
    let leader = sb.spawn(sb.leader(&["run", "wf.yaml"]), "leader");
    let web = web_url(&sb.state_dir(), T);
    assert!(
        leader_line(&leader, T).contains(&format!("web view: {}", web.url)),
        "the URL is printed at start"
    );
    let mut b = Browser::start();
    b.open(&web.url);
    // The token went into a cookie and out of the address bar.
    assert_eq!(
        b.eval("location.href").as_str(),
        Some(format!("{}/", web.base).as_str())
    );
    b.wait(
        "the gated job shown running",
        &format!("{} === 'running'", row_state("gated")),
        T,
    );
    b.wait("the event stream", "window.toilView.connected", T);
    b.eval("window.sameDocument = true");
    b.screenshot(&artifact("web", "jobs.png"));

    // The log: a line printed after the page opened arrives live.
    b.eval("location.hash = '#log/gated'");
    b.wait(
        "the first log line",
        "document.getElementById('log').textContent.includes('first line')",
        T,
    );
    std::fs::write(&gates.a, "").unwrap();
    b.wait(
        "the line printed after the page opened",
        "document.getElementById('log').textContent.includes('second line')",
        T,
    );
    b.screenshot(&artifact("web", "log.png"));

    // Running to succeeded on screen, in the same document.
    b.eval("location.hash = '#jobs'");
    b.wait(
        "the gated job still running",
        &format!("{} === 'running'", row_state("gated")),
        T,
    );
    std::fs::write(&gates.b, "").unwrap();
    b.wait(
        "the gated job shown succeeded",
        &format!("{} === 'succeeded'", row_state("gated")),
        T,
    );
    assert_eq!(b.eval("window.sameDocument"), serde_json::json!(true));
    assert!(b.eval("window.toilView.events").as_u64().unwrap_or(0) > 0);

    // Filtering by state and name.
    b.wait(
        "every job but the holder succeeded",
        "document.querySelectorAll('#jobs tr[data-state=\"succeeded\"]').length === 9",
        T,
    );
    b.eval(
        "document.getElementById('f-state').value = 'succeeded'; document.getElementById('f-q').value = 'fan['; document.getElementById('f-q').dispatchEvent(new Event('input')); 1",
    );
    b.wait(
        "the filtered table",
        "document.querySelectorAll('#jobs tbody tr').length === 6 && document.getElementById('jobs-total').textContent === '6 jobs'",
        T,
    );

    // The log is kept after the job ended.
    b.eval("location.hash = '#log/gated'");
    b.wait(
        "the whole log of the finished job",
        "document.getElementById('log').textContent === 'first line\\nsecond line\\n' && document.getElementById('log-status').textContent === 'complete'",
        T,
    );

    // One bar per attempt: the flaky job has a failed and a succeeded one.
    b.eval("location.hash = '#timeline'");
    let bars = b.wait(
        "two bars for the flaky job",
        "(() => { const b = [...document.querySelectorAll('rect.bar[data-job=\"flaky\"]')]; return b.length === 2 && b.map(r => r.dataset.n + ':' + r.classList[1]).sort().join(' '); })()",
        T,
    );
    assert_eq!(bars, serde_json::json!("1:failed 2:succeeded"));
    assert_eq!(
        b.eval("document.querySelectorAll('rect.bar').length"),
        serde_json::json!(11),
        "eleven attempts: 10 jobs, one retried"
    );
    // Bars span their attempts: the gated job ran while the test looked,
    // far longer than a scatter instance.
    let wider = b.eval(
        "(() => { const w = j => +document.querySelector(`rect.bar[data-job=\"${j}\"]`).getAttribute('width'); return w('gated') > 3 * w('fan[0]'); })()",
    );
    assert_eq!(wider, serde_json::json!(true));
    b.screenshot(&artifact("web", "timeline.png"));

    // The scatter is one node with its count.
    b.eval("location.hash = '#graph'");
    let fan = b.wait(
        "the scatter's node",
        "(() => { const n = document.querySelector('#graph g.node[data-key=\"fan\"]'); return n && n.textContent; })()",
        T,
    );
    let fan = fan.as_str().unwrap_or_default().to_string();
    assert!(
        fan.contains("fan ×6") && fan.contains("6 succeeded"),
        "{fan}"
    );
    assert_eq!(
        b.eval("document.querySelectorAll('#graph g.node').length"),
        serde_json::json!(5)
    );
    b.screenshot(&artifact("web", "graph.png"));
    b.assert_clean();
    drop(b);
    gates.open_all();
    leader.wait(T).expect_code(0);
}

/// The first line of the leader's stdout that mentions the web view.
fn leader_line(leader: &toil_tests::local::Running, timeout: Duration) -> String {
    toil_tests::wait::wait_for("the leader to print the web view's URL", timeout, || {
        let out = leader.stdout_now() + &leader.stderr_now();
        out.lines()
            .find(|l| l.contains("web view: "))
            .map(str::to_string)
            .ok_or(out)
    })
}

#[test]
fn without_the_token_nothing_is_served_and_with_it_only_its_own_pages() {
    let sb = Sandbox::new("webauth");
    let gates = workflow(&sb);
    let leader = sb.spawn(sb.leader(&["run", "wf.yaml"]), "leader");
    let web = web_url(&sb.state_dir(), T);
    let port = web.port;
    let bearer = format!("Bearer {}", web.token);
    let auth = [("Authorization", bearer.as_str())];

    for path in [
        "/",
        "/app.js",
        "/style.css",
        "/favicon.svg",
        "/metrics",
        "/api/workflow",
        "/api/jobs",
        "/api/events",
        "/api/log?job=gated",
        "/no-such-page",
    ] {
        let r = request(port, "GET", path, &[]);
        assert_eq!(r.status, 401, "GET {path} without a token: {r:?}");
        assert!(
            r.body.contains("web-url"),
            "the 401 says where the URL is: {}",
            r.body
        );
        let r = request(
            port,
            "GET",
            path,
            &[("Authorization", "Bearer not-the-token")],
        );
        assert_eq!(r.status, 401, "GET {path} with a wrong token");
        let r = request(
            port,
            "GET",
            path,
            &[("Cookie", &format!("toil_web_{port}=nope"))],
        );
        assert_eq!(r.status, 401, "GET {path} with a wrong cookie");
    }
    let r = request(port, "GET", "/?token=wrong", &[]);
    assert_eq!(r.status, 401);

    // The token in the URL becomes a cookie, and the URL loses it.
    let r = request(port, "GET", &format!("/?token={}", web.token), &[]);
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location"), "/");
    let cookie = r.header("set-cookie");
    assert!(
        cookie.starts_with(&format!("toil_web_{port}={};", web.token))
            && cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_string();
    let r = request(port, "GET", "/", &[("Cookie", &pair)]);
    assert_eq!(r.status, 200);
    assert!(r.body.contains("<script type=\"module\" src=\"/app.js\">"));
    for (k, v) in [
        ("content-security-policy", "default-src 'self'"),
        ("content-security-policy", "frame-ancestors 'none'"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
    ] {
        assert!(r.header(k).contains(v), "{k}: {:?}", r.header(k));
    }

    // With the token: the pages, and nothing else.
    let r = request(port, "GET", "/metrics", &auth);
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .starts_with("text/plain; version=0.0.4")
    );
    let r = request(port, "GET", "/api/jobs?state=running", &auth);
    assert_eq!(r.status, 200, "{r:?}");
    let jobs: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(jobs["jobs"][0]["id"], "gated", "{jobs}");
    for path in [
        "/index.html",
        "/app.js/",
        "/api/",
        "/metrics/x",
        "/../../../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/..%2f..%2fetc%2fpasswd",
        "//etc/passwd",
        "/app.js/../../../etc/passwd",
        "/assets/app.js",
        "/src/web/mod.rs",
    ] {
        let r = request(port, "GET", path, &auth);
        assert!(
            r.status == 404 || r.status == 400,
            "GET {path}: {} {}",
            r.status,
            r.body
        );
        assert!(
            !r.body.contains("root:"),
            "GET {path} served a file: {}",
            r.body
        );
    }
    let r = request(port, "POST", "/api/jobs", &auth);
    assert_eq!(r.status, 405);
    let r = request(port, "DELETE", "/", &auth);
    assert_eq!(r.status, 405);
    // DNS rebinding: another name resolving to 127.0.0.1 is not answered.
    let host = format!("evil.example:{port}");
    let r = request(port, "GET", "/", &[auth[0], ("Host", host.as_str())]);
    assert_eq!(r.status, 403, "{r:?}");
    let host = format!("localhost:{port}");
    let r = request(port, "GET", "/", &[auth[0], ("Host", host.as_str())]);
    assert_eq!(r.status, 200);
    // The client token opens the view too.
    let info = sb.leader_info(T);
    let client = format!("Bearer {}", info.client_token);
    let r = request(port, "GET", "/api/workflow", &[("Authorization", &client)]);
    assert_eq!(r.status, 200);
    // A reconnecting page resumes after the last event it saw.
    let ids = toil_tests::web::event_ids_after(port, &web.token, 3, 3);
    assert_eq!(ids, [4, 5, 6], "events after Last-Event-ID 3");
    // `status` on this machine shows the URL too.
    let js = sb.job_store().display().to_string();
    let st = sb.run(&["status", &js], T);
    assert!(
        st.stdout.contains(&format!("web view {}", web.url)),
        "{}",
        st.stdout
    );

    gates.open_all();
    leader.wait(T).expect_code(0);
    // The URL with its token goes with the leader.
    assert!(
        std::fs::read_dir(sb.state_dir())
            .map(|d| d.flatten().all(|e| !e.path().join("web-url").exists()))
            .unwrap_or(true)
    );
}

#[test]
fn off_loopback_the_view_is_served_over_tls_only_and_can_be_turned_off() {
    let sb = Sandbox::new("webtls");
    sb.write(
        "one.yaml",
        "defaults: {cores: 0.1, memory: 32Mi}\njobs:\n  one:\n    command: echo one\n",
    );
    // Plain HTTP off loopback is refused before anything starts.
    let r = sb.run(&["run", "--webUI", "http://0.0.0.0:0", "one.yaml"], T);
    assert_eq!(r.code(), 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("TLS only") && r.stderr.contains("https://0.0.0.0:0"),
        "{}",
        r.stderr
    );
    // A port in use is named, with the fix.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let r = sb.run(&["run", "--webUI", &addr, "one.yaml"], T);
    assert_eq!(r.code(), 2, "{}", r.stderr);
    assert!(
        r.stderr
            .contains(&format!("the web view cannot listen on {addr}"))
            && r.stderr.contains("--webUI off"),
        "{}",
        r.stderr
    );
    drop(busy);

    // Off: no URL, nothing listening.
    let r = sb.run(
        &["run", "--webUI", "off", "--jobStore", "js-off", "one.yaml"],
        T,
    );
    r.expect_code(0);
    assert!(!r.stdout.contains("web view") && !r.stderr.contains("web view"));

    // 0.0.0.0: HTTPS with the leader's certificate, the token still needed.
    let sb = Sandbox::new("webtls2");
    let gates = workflow(&sb);
    let leader = sb.spawn(
        sb.leader(&["run", "--webUI", "0.0.0.0:0", "wf.yaml"]),
        "leader",
    );
    let web = web_url(&sb.state_dir(), T);
    assert!(web.url.starts_with("https://"), "{}", web.url);
    let info = sb.leader_info(T);
    let port = web.port;
    let r = request(port, "GET", "/", &[]);
    assert_eq!(r.status, 400);
    assert!(r.body.contains("HTTPS only"), "{}", r.body);
    let r = request_tls(port, &info.cert_pem, "GET", "/metrics", &[]);
    assert_eq!(r.status, 401, "{r:?}");
    let bearer = format!("Bearer {}", web.token);
    let r = request_tls(
        port,
        &info.cert_pem,
        "GET",
        "/",
        &[("Authorization", &bearer)],
    );
    assert_eq!(r.status, 200, "{r:?}");
    let r = request_tls(
        port,
        &info.cert_pem,
        "GET",
        &format!("/?token={}", web.token),
        &[],
    );
    assert!(r.header("set-cookie").contains("; Secure"), "{r:?}");
    gates.open_all();
    leader.wait(T).expect_code(0);
}
