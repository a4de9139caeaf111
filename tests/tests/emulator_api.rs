//! The emulator's API surface over real HTTPS: discovery, Status error
//! bodies, RBAC from `deploy/rbac.yaml`, selectors, watch with 410 and
//! relist, request faults and counters.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use http_body_util::BodyExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Node, Pod, Secret};
use kube::api::{ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use toil_tests::emulator::testkit::{job, pod, wait_for};
use toil_tests::emulator::{Emulator, EmulatorConfig, Identity, RequestFault};
use toil_tests::harness::repo_root;

const IMAGE: &str = "toil-test:1";
const T: Duration = Duration::from_secs(15);

fn start() -> Emulator {
    let cfg = EmulatorConfig::default()
        .with_image(IMAGE, None)
        .with_rbac_file(repo_root().join("deploy/rbac.yaml"));
    Emulator::start(cfg).unwrap_or_else(|e| panic!("emulator: {e}"))
}

/// A raw request through kube's client; returns (status, headers, body).
async fn raw(
    client: &Client,
    method: &str,
    path: &str,
    content_type: &str,
    body: &str,
) -> (u16, http::HeaderMap, Value) {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", content_type)
        .body(kube::client::Body::from(body.as_bytes().to_vec()))
        .unwrap_or_else(|e| panic!("{e}"));
    let resp = client.send(req).await.unwrap_or_else(|e| panic!("{e}"));
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let v = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, headers, v)
}

/// A raw HTTP/1.1 request over plain HTTP (no client-side retries, unlike
/// kube-rs, which retries 429s by itself).
async fn plain(
    emu: &Emulator,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, Vec<(String, String)>, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = emu.http_url().trim_start_matches("http://").to_string();
    let mut sock = tokio::net::TcpStream::connect(&addr)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        emu.admin_token(),
        body.len()
    );
    sock.write_all(req.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut buf = Vec::new();
    sock.read_to_end(&mut buf)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let code = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (
        code,
        headers,
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

fn api_status(e: kube::Error) -> (u16, String, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.reason.clone(), s.message.clone()),
        other => panic!("expected an API error, got {other}"),
    }
}

#[tokio::test]
async fn discovery_and_error_bodies_match_the_apiserver() {
    let emu = start();
    let admin = emu
        .client(&Identity::Admin)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (code, _, v) = raw(&admin, "GET", "/api/v1", "application/json", "").await;
    assert_eq!(code, 200);
    let names: Vec<&str> = v["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["name"].as_str())
        .collect();
    for want in [
        "pods",
        "pods/log",
        "events",
        "nodes",
        "secrets",
        "namespaces",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    let (_, _, v) = raw(&admin, "GET", "/apis/batch/v1", "application/json", "").await;
    assert_eq!(v["resources"][0]["name"], "jobs");
    let (_, _, v) = raw(&admin, "GET", "/apis", "application/json", "").await;
    assert!(
        v["groups"]
            .as_array()
            .is_some_and(|g| g.iter().any(|g| g["name"] == "batch"))
    );
    let (code, _, v) = raw(&admin, "GET", "/version", "application/json", "").await;
    assert_eq!((code, v["major"].as_str()), (200, Some("1")));

    // 404 with the exact Status body.
    let (code, _, v) = raw(
        &admin,
        "GET",
        "/apis/batch/v1/namespaces/default/jobs/nope",
        "application/json",
        "",
    )
    .await;
    assert_eq!(code, 404);
    assert_eq!(
        v,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": "jobs.batch \"nope\" not found", "reason": "NotFound",
               "details": {"name": "nope", "group": "batch", "kind": "jobs"}, "code": 404})
    );
    // 409 on a duplicate create.
    let jobs: Api<Job> = Api::namespaced(admin.clone(), "default");
    let j = job("dup", IMAGE, &["true"]);
    jobs.create(&PostParams::default(), &j)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let err = jobs
        .create(&PostParams::default(), &j)
        .await
        .err()
        .map(api_status);
    assert_eq!(
        err,
        Some((
            409,
            "AlreadyExists".into(),
            "jobs.batch \"dup\" already exists".into()
        ))
    );
    // 422 for a Job name over 63 characters (its label would be too long).
    let long = "a".repeat(64);
    let err = jobs
        .create(&PostParams::default(), &job(&long, IMAGE, &["true"]))
        .await
        .err()
        .map(api_status);
    assert_eq!(
        err,
        Some((
            422,
            "Invalid".into(),
            format!(
                "Job.batch \"{long}\" is invalid: spec.template.labels: Invalid value: \"{long}\": must be no more than 63 characters"
            )
        ))
    );
    let err = jobs
        .create(&PostParams::default(), &job("Bad_Name", IMAGE, &["true"]))
        .await
        .err()
        .map(api_status);
    let (code, reason, msg) = err.unwrap_or_default();
    assert_eq!((code, reason.as_str()), (422, "Invalid"));
    assert!(msg.starts_with("Job.batch \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"), "{msg}");
    // 400 for a body that is not JSON, and for a wrongly typed field.
    let (code, _, v) = raw(
        &admin,
        "POST",
        "/apis/batch/v1/namespaces/default/jobs",
        "application/json",
        "{not json",
    )
    .await;
    assert_eq!((code, v["reason"].as_str()), (400, Some("BadRequest")));
    let bad = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "x"}, "spec": {"backoffLimit": "many"}});
    let (code, _, v) = raw(
        &admin,
        "POST",
        "/apis/batch/v1/namespaces/default/jobs",
        "application/json",
        &bad.to_string(),
    )
    .await;
    assert_eq!(code, 400, "{v}");
    // 401 for an unknown token.
    let mut cfg = kube::Config::new(emu.url().parse().unwrap_or_else(|e| panic!("{e}")));
    cfg.root_cert = Some(vec![rustls_pem_to_der(emu.ca_pem())]);
    cfg.auth_info.token = Some("bogus".to_string().into());
    let stranger = Client::try_from(cfg).unwrap_or_else(|e| panic!("{e}"));
    let err = Api::<Pod>::namespaced(stranger, "default")
        .list(&ListParams::default())
        .await
        .err()
        .map(api_status);
    assert_eq!(err.map(|e| e.0), Some(401));
    emu.shutdown();
}

fn rustls_pem_to_der(pem: &str) -> Vec<u8> {
    use base64::Engine;
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap_or_default()
}

#[tokio::test]
async fn rbac_from_deploy_allows_the_role_and_forbids_the_rest() {
    let emu = start();
    let leader = Identity::service_account("toil", "toil-leader");
    let sa = emu.client(&leader).await.unwrap_or_else(|e| panic!("{e}"));
    let jobs: Api<Job> = Api::namespaced(sa.clone(), "toil");
    jobs.create(&PostParams::default(), &job("allowed", IMAGE, &["true"]))
        .await
        .unwrap_or_else(|e| panic!("the Role allows creating jobs: {e}"));
    Api::<Pod>::namespaced(sa.clone(), "toil")
        .list(&ListParams::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    Api::<Node>::all(sa.clone())
        .list(&ListParams::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    let secrets: Api<Secret> = Api::namespaced(sa.clone(), "toil");
    let err = secrets
        .list(&ListParams::default())
        .await
        .err()
        .map(api_status);
    assert_eq!(
        err,
        Some((403, "Forbidden".into(), "secrets is forbidden: User \"system:serviceaccount:toil:toil-leader\" cannot list resource \"secrets\" in API group \"\" in the namespace \"toil\"".into()))
    );
    // Outside its namespace, with the full Status body.
    let (code, _, v) = raw(
        &sa,
        "DELETE",
        "/apis/batch/v1/namespaces/default/jobs/x",
        "application/json",
        "",
    )
    .await;
    assert_eq!(code, 403);
    assert_eq!(
        v,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": "jobs.batch \"x\" is forbidden: User \"system:serviceaccount:toil:toil-leader\" cannot delete resource \"jobs\" in API group \"batch\" in the namespace \"default\"",
               "reason": "Forbidden", "details": {"name": "x", "group": "batch", "kind": "jobs"}, "code": 403})
    );
    // Subresources are separate resources: pods/log yes, pods/exec no.
    let (code, _, v) = raw(
        &sa,
        "PATCH",
        "/api/v1/namespaces/toil/pods/p/status",
        "application/merge-patch+json",
        "{}",
    )
    .await;
    assert_eq!(code, 403, "{v}");
    assert_eq!(
        v["message"],
        "pods \"p\" is forbidden: User \"system:serviceaccount:toil:toil-leader\" cannot patch resource \"pods/status\" in API group \"\" in the namespace \"toil\""
    );
    let (code, _, v) = raw(
        &sa,
        "DELETE",
        "/api/v1/nodes/node-1",
        "application/json",
        "",
    )
    .await;
    assert_eq!(
        (code, v["message"].as_str()),
        (
            403,
            Some(
                "nodes \"node-1\" is forbidden: User \"system:serviceaccount:toil:toil-leader\" cannot delete resource \"nodes\" in API group \"\" at the cluster scope"
            )
        )
    );
    // Another service account in the same namespace has no rights.
    let other = emu
        .client(&Identity::service_account("toil", "default"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let err = Api::<Job>::namespaced(other, "toil")
        .list(&ListParams::default())
        .await
        .err()
        .map(api_status);
    assert_eq!(err.map(|e| e.0), Some(403));
    emu.shutdown();
}

#[tokio::test]
async fn selectors_watch_410_and_relist() {
    let emu = start();
    let admin = emu
        .client(&Identity::Admin)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
    let mut p1 = pod("p1", IMAGE, &["sleep", "30"]);
    p1.metadata.labels = Some(
        [
            ("app".to_string(), "toil".to_string()),
            ("tier".to_string(), "a".to_string()),
        ]
        .into(),
    );
    let mut p2 = pod("p2", "no-such-image", &["true"]);
    p2.metadata.labels = Some([("app".to_string(), "other".to_string())].into());
    pods.create(&PostParams::default(), &p1)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    pods.create(&PostParams::default(), &p2)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    wait_for(&pods, "p1", T, |p| {
        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let names = |l: Vec<Pod>| {
        l.into_iter()
            .filter_map(|p| p.metadata.name)
            .collect::<Vec<_>>()
    };
    let q = |s: &str| ListParams::default().labels(s);
    assert_eq!(
        names(
            pods.list(&q("app in (toil,x)"))
                .await
                .unwrap_or_else(|e| panic!("listing: {e}"))
                .items
        ),
        ["p1"]
    );
    assert_eq!(
        names(
            pods.list(&q("app notin (toil)"))
                .await
                .unwrap_or_else(|e| panic!("listing: {e}"))
                .items
        ),
        ["p2"]
    );
    assert_eq!(
        names(
            pods.list(&q("tier"))
                .await
                .unwrap_or_else(|e| panic!("listing: {e}"))
                .items
        ),
        ["p1"]
    );
    assert_eq!(
        names(
            pods.list(&q("!tier,app!=toil"))
                .await
                .unwrap_or_else(|e| panic!("listing: {e}"))
                .items
        ),
        ["p2"]
    );
    let fp = ListParams::default().fields("status.phase=Running,metadata.name=p1");
    assert_eq!(
        names(
            pods.list(&fp)
                .await
                .unwrap_or_else(|e| panic!("listing: {e}"))
                .items
        ),
        ["p1"]
    );
    let fp = ListParams::default().fields("status.phase=Pending");
    assert_eq!(
        names(
            pods.list(&fp)
                .await
                .unwrap_or_else(|e| panic!("listing: {e}"))
                .items
        ),
        ["p2"]
    );
    let fp = ListParams::default().fields("spec.nodeName=node-9");
    assert!(
        pods.list(&fp)
            .await
            .unwrap_or_else(|e| panic!("listing: {e}"))
            .items
            .is_empty()
    );
    let err = pods
        .list(&ListParams::default().fields("spec.bogus=1"))
        .await
        .err()
        .map(api_status);
    assert_eq!(
        err.map(|e| (e.0, e.2)),
        Some((400, "field label not supported: spec.bogus".into()))
    );

    // Watch from a list's resourceVersion, with a selector: a label change
    // that leaves the selector is a DELETED event.
    let list = pods
        .list(&q("app=toil"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let rv = list.metadata.resource_version.clone().unwrap_or_default();
    let wp = WatchParams::default().labels("app=toil").timeout(10);
    let mut stream = pods
        .watch(&wp, &rv)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .boxed();
    let patch = json!({"metadata": {"labels": {"app": "moved"}}});
    pods.patch("p1", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let ev = tokio::time::timeout(T, stream.try_next())
        .await
        .ok()
        .and_then(|r| r.ok())
        .flatten();
    assert!(
        matches!(ev, Some(WatchEvent::Deleted(ref p)) if p.metadata.name.as_deref() == Some("p1")),
        "{ev:?}"
    );

    // After the history is compacted, the old resourceVersion is Expired.
    emu.expire_watch_history();
    let mut stream = pods
        .watch(&WatchParams::default().timeout(10), &rv)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .boxed();
    let ev = tokio::time::timeout(T, stream.try_next())
        .await
        .ok()
        .and_then(|r| r.ok())
        .flatten();
    match ev {
        Some(WatchEvent::Error(s)) => {
            assert_eq!((s.code, s.reason.as_str()), (410, "Expired"));
            assert!(
                s.message
                    .starts_with(&format!("too old resource version: {rv} (")),
                "{}",
                s.message
            );
        }
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
    // A relist gives a fresh resourceVersion that watches fine.
    let fresh = pods
        .list(&ListParams::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let rv2 = fresh.metadata.resource_version.clone().unwrap_or_default();
    let mut stream = pods
        .watch(&WatchParams::default().timeout(10), &rv2)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .boxed();
    pods.delete("p2", &Default::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // Graceful deletion: first a MODIFIED with deletionTimestamp, then DELETED.
    let ev = tokio::time::timeout(T, stream.try_next())
        .await
        .ok()
        .and_then(|r| r.ok())
        .flatten();
    assert!(
        matches!(ev, Some(WatchEvent::Modified(ref p)) if p.metadata.deletion_timestamp.is_some()),
        "{ev:?}"
    );
    loop {
        let ev = tokio::time::timeout(T, stream.try_next())
            .await
            .ok()
            .and_then(|r| r.ok())
            .flatten();
        match ev {
            Some(WatchEvent::Modified(p)) => assert!(p.metadata.deletion_timestamp.is_some()),
            Some(WatchEvent::Deleted(p)) => {
                assert_eq!(p.metadata.name.as_deref(), Some("p2"));
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    emu.shutdown();
}

async fn expect(
    rx: &mut tokio::sync::mpsc::Receiver<String>,
    want: &str,
) -> Result<bool, tokio::time::error::Elapsed> {
    let fut = async move {
        loop {
            match rx.recv().await {
                Some(n) if n == want => return true,
                Some(_) => continue,
                None => return false,
            }
        }
    };
    tokio::time::timeout(T, fut).await
}

#[tokio::test]
async fn kube_runtime_watcher_survives_dropped_watches_and_expiry() {
    use kube::runtime::watcher;
    let emu = start();
    let admin = emu
        .client(&Identity::Admin)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(100);
    let w = tokio::spawn(async move {
        let mut s = watcher(pods.clone(), watcher::Config::default()).boxed();
        while let Some(ev) = s.next().await {
            if let Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) = ev {
                let _ = tx.send(p.metadata.name.unwrap_or_default()).await;
            }
        }
    });
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
    pods.create(&PostParams::default(), &pod("w1", IMAGE, &["true"]))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(expect(&mut rx, "w1").await.ok(), Some(true));
    let lists_before = emu.request_counts().get("list", "pods");
    // A change the pod watch does not see, then compaction: the watcher's
    // last resourceVersion is now older than the history.
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(admin.clone(), "default");
    let cm = serde_json::from_value(json!({"metadata": {"name": "bump"}}))
        .unwrap_or_else(|e| panic!("{e}"));
    cms.create(&PostParams::default(), &cm)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    emu.expire_watch_history();
    emu.drop_watches();
    pods.create(&PostParams::default(), &pod("w2", IMAGE, &["true"]))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(expect(&mut rx, "w2").await.ok(), Some(true));
    assert!(
        emu.request_counts().get("list", "pods") > lists_before,
        "the watcher relisted after 410: {:?}",
        emu.request_counts()
    );
    w.abort();
    emu.shutdown();
}

#[tokio::test]
async fn injected_429_and_500_and_request_counters() {
    let emu = start();
    let admin = emu
        .client(&Identity::Admin)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    emu.reset_request_counts();
    emu.fail_requests(
        RequestFault::too_many_requests(2)
            .verb("create")
            .resource("jobs"),
    );
    let body =
        serde_json::to_string(&job("j1", IMAGE, &["true"])).unwrap_or_else(|e| panic!("{e}"));
    let path = "/apis/batch/v1/namespaces/default/jobs";
    for _ in 0..2 {
        let (code, headers, v) = plain(&emu, "POST", path, &body).await;
        assert_eq!(code, 429);
        assert!(
            headers.contains(&("retry-after".to_string(), "1".to_string())),
            "{headers:?}"
        );
        assert_eq!(v["reason"], "TooManyRequests");
        assert_eq!(v["details"]["retryAfterSeconds"], 1);
    }
    let (code, _, _) = plain(&emu, "POST", path, &body).await;
    assert_eq!(code, 201, "the fault is used up after two requests");
    emu.fail_requests(RequestFault::internal_error(1).verb("list"));
    let (code, _, v) = plain(&emu, "GET", path, "").await;
    assert_eq!((code, v["reason"].as_str()), (500, Some("InternalError")));
    let (code, _, _) = plain(&emu, "GET", path, "").await;
    assert_eq!(code, 200);
    // kube-rs retries a 429 by itself, honouring Retry-After.
    emu.fail_requests(RequestFault::too_many_requests(1).verb("get"));
    let jobs: Api<Job> = Api::namespaced(admin.clone(), "default");
    let got = jobs
        .get("j1")
        .await
        .unwrap_or_else(|e| panic!("kube-rs should have retried: {e}"));
    assert_eq!(got.metadata.name.as_deref(), Some("j1"));
    let counts = emu.request_counts();
    assert_eq!(counts.get("create", "jobs"), 3);
    assert_eq!(counts.get("list", "jobs"), 2);
    assert_eq!(counts.get("get", "jobs"), 2);
    assert_eq!(counts.total(), 7);
    emu.shutdown();
}
