//! The standalone `toil-k8s-emulator` binary, driven by the real `kubectl`
//! (failing with an install hint where kubectl is not installed): get, describe,
//! logs and logs -f, the admin endpoints, and clean shutdown on SIGTERM.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server {
    child: Child,
    kubeconfig: PathBuf,
    http: String,
    token: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(state: &Path) -> Server {
    let kubeconfig = state.join("kc");
    let mut child = Command::new(env!("CARGO_BIN_EXE_toil-k8s-emulator"))
        .args([
            "--node",
            "n1:cpu=2,memory=4Gi",
            "--node",
            "spot-1:cpu=2,memory=4Gi,preemptible",
        ])
        .args(["--image", "toil-test:1", "--namespace", "toil"])
        .arg("--kubeconfig-out")
        .arg(&kubeconfig)
        .arg("--state-dir")
        .arg(state.join("state"))
        .arg("--rbac")
        .arg(toil_tests::harness::repo_root().join("deploy/rbac.yaml"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start the emulator: {e}"));
    let out = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let mut http = String::new();
    let mut token = String::new();
    for line in BufReader::new(out).lines().map_while(Result::ok) {
        if let Some(rest) = line.strip_prefix("toil-k8s-emulator listening on ") {
            http = rest
                .split("plain HTTP ")
                .nth(1)
                .unwrap_or_default()
                .trim_end_matches(')')
                .to_string();
        }
        if let Some(t) = line.strip_prefix("admin token: ") {
            token = t.to_string();
        }
        if line.starts_with("state dir:") {
            break;
        }
    }
    assert!(
        !http.is_empty() && !token.is_empty(),
        "the emulator did not announce itself"
    );
    Server {
        child,
        kubeconfig,
        http,
        token,
    }
}

fn kubectl(s: &Server, args: &[&str]) -> (bool, String) {
    let out = Command::new(toil_tests::kubectl::kubectl_or_fail())
        .arg("--kubeconfig")
        .arg(&s.kubeconfig)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("kubectl: {e}"));
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `curl`-free admin call over plain HTTP.
fn admin(s: &Server, method: &str, path: &str, body: &str) -> String {
    admin_as(s, &s.token, method, path, body)
}

fn admin_as(s: &Server, token: &str, method: &str, path: &str, body: &str) -> String {
    use std::io::{Read, Write};
    let addr = s.http.trim_start_matches("http://");
    let mut sock = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("{e}"));
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        token,
        body.len()
    );
    sock.write_all(req.as_bytes())
        .unwrap_or_else(|e| panic!("{e}"));
    let mut out = String::new();
    let _ = sock.read_to_string(&mut out);
    out
}

fn pids_with(marker: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmd).contains(marker) {
            found.push(pid);
        }
    }
    found
}

#[test]
fn kubectl_get_describe_logs_against_the_binary() {
    // Fails with an install hint where kubectl is missing.
    toil_tests::kubectl::kubectl_or_fail();
    let dir = toil_tests::harness::scratch("emu-kubectl");
    let mut s = start(dir.path());

    let (ok, out) = kubectl(&s, &["get", "nodes"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("n1") && out.contains("spot-1") && out.contains("Ready"),
        "{out}"
    );
    let (_, out) = kubectl(
        &s,
        &[
            "get",
            "node",
            "spot-1",
            "-o",
            "jsonpath={.metadata.labels.cloud\\.google\\.com/gke-spot}",
        ],
    );
    assert_eq!(out, "true");

    // A pod that logs over time, for logs -f.
    let script = "for i in 1 2 3; do echo line$i; sleep 0.3; done";
    let (ok, out) = kubectl(
        &s,
        &[
            "run",
            "counter",
            "--image=toil-test:1",
            "--restart=Never",
            "--command",
            "--",
            "sh",
            "-c",
            script,
        ],
    );
    assert!(ok, "{out}");
    wait_until("counter running", || {
        kubectl(&s, &["get", "pod", "counter"])
            .1
            .contains("Running")
    });
    let (ok, out) = kubectl(&s, &["logs", "-f", "counter"]);
    assert!(ok, "{out}");
    assert_eq!(out, "line1\nline2\nline3\n");
    wait_until("counter completed", || {
        kubectl(&s, &["get", "pods"]).1.contains("Completed")
    });
    let (_, out) = kubectl(&s, &["get", "pods"]);
    let header: Vec<&str> = out
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(header, ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]);

    // A Job from a manifest, validated by the server (fieldValidation=Strict).
    let manifest = dir.path().join("job.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: fromfile\nspec:\n  backoffLimit: 0\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n      - name: main\n        image: toil-test:1\n        command: [sh, -c, 'echo from file; exit 2']\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let (ok, out) = kubectl(&s, &["create", "-f", &manifest.to_string_lossy()]);
    assert!(ok, "{out}");
    wait_until("job failed", || {
        kubectl(&s, &["get", "jobs"]).1.contains("Failed")
    });
    let (_, name) = kubectl(
        &s,
        &[
            "get",
            "pods",
            "-l",
            "job-name=fromfile",
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ],
    );
    let (ok, out) = kubectl(&s, &["describe", "pod", &name]);
    assert!(ok, "{out}");
    for want in [
        "Status:           Failed",
        "Exit Code:    2",
        "Controlled By:  Job/fromfile",
        "Successfully assigned default/",
        "Started container main",
    ] {
        assert!(out.contains(want), "describe lacks {want:?}:\n{out}");
    }
    let (_, out) = kubectl(&s, &["logs", &name]);
    assert_eq!(out, "from file\n");
    let (_, out) = kubectl(&s, &["describe", "job", "fromfile"]);
    assert!(out.contains("BackoffLimitExceeded"), "{out}");

    // Admin endpoints: counters and fault injection over HTTP.
    let counters = admin(&s, "GET", "/emulator/counters", "");
    assert!(counters.starts_with("HTTP/1.1 200"), "{counters}");
    assert!(
        counters.contains("\"create\":{") && counters.contains("\"jobs\":1"),
        "{counters}"
    );
    let r = admin(
        &s,
        "POST",
        "/emulator/faults/requests",
        r#"{"count":1,"code":500,"verb":"list","resource":"nodes"}"#,
    );
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let (ok, out) = kubectl(&s, &["get", "nodes"]);
    assert!(
        !ok && out.contains("Internal error occurred: injected fault"),
        "{out}"
    );
    assert!(kubectl(&s, &["get", "nodes"]).0);
    let denied = admin_as(&s, "not-the-admin", "POST", "/emulator/nodes/n1/lose", "");
    assert!(denied.starts_with("HTTP/1.1 401"), "{denied}");

    // SIGTERM stops the server and every pod process.
    let marker = format!("sleep 3{}", std::process::id() % 1000);
    let (ok, out) = kubectl(
        &s,
        &[
            "run",
            "sleeper",
            "--image=toil-test:1",
            "--restart=Never",
            "--command",
            "--",
            "sh",
            "-c",
            &marker,
        ],
    );
    assert!(ok, "{out}");
    wait_until("sleeper running", || !pids_with(&marker).is_empty());
    let pid = nix::unistd::Pid::from_raw(s.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)
        .unwrap_or_else(|e| panic!("{e}"));
    let status = s.child.wait().unwrap_or_else(|e| panic!("{e}"));
    assert!(status.success(), "{status:?}");
    wait_until("pod processes gone", || pids_with(&marker).is_empty());
}
