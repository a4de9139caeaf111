//! The leader's transport, attacked through the real binaries: what a
//! sniffer between an agent and the leader sees, what an impostor on the
//! agents' address gets, and who can get at the client token.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use toil_proto::v1::{GetWorkflowRequest, ListJobsRequest};
use toil_tests::harness;
use toil_tests::local::{LeaderInfo, Sandbox, client};
use toil_tests::procfs;
use toil_tests::relay::Relay;
use toil_tests::wait::{wait_for, when};
use tokio::net::TcpListener;

const T: Duration = Duration::from_secs(120);

/// `nobody`: another local user.
const OTHER_UID: u32 = 65534;

/// A free port on loopback (bound, then released for the leader).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Agents and a client reach the leader through a relay that records every
/// byte. The agent's token, the attempt's token, the client token, the
/// job's command and its output all cross that path, and none of them is
/// in what the relay saw: only TLS records are.
#[tokio::test(flavor = "multi_thread")]
async fn sniffed_traffic_between_agents_clients_and_the_leader_shows_no_secret() {
    let sb = Sandbox::new("sniffed");
    let leader_port = free_port();
    let relay = Relay::start(format!("127.0.0.1:{leader_port}").parse().unwrap()).unwrap();
    let relay_addr = relay.addr();
    let gate = sb.path().join("gate");
    let attempt_file = sb.path().join("attempt-token");
    let id = uuid::Uuid::new_v4().simple().to_string();
    let command_marker = format!("CMD-marker-{id}");
    // The command holds `$((6*7))`, its output `42`: the output's text is
    // not in the command.
    let log_marker = format!("LOG-42-marker-{id}");
    sb.write(
        "wf.yaml",
        &format!(
            r#"
name: sniffed
jobs:
  secret:
    cores: 0.1
    memory: 32Mi
    command: ": {command_marker}; printf %s \"$TOIL_ATTEMPT_TOKEN\" > {attempt}; echo LOG-$((6*7))-marker-{id}; while [ ! -e {gate} ]; do sleep 0.05; done"
"#,
            attempt = attempt_file.display(),
            gate = gate.display(),
        ),
    );
    let bind = format!("127.0.0.1:{leader_port}");
    let advertise = format!("https://{relay_addr}");
    let leader = sb.spawn(
        sb.leader(&[
            "run",
            "wf.yaml",
            "--leaderBind",
            &bind,
            "--leaderAddress",
            &advertise,
        ]),
        "leader",
    );
    let info = tokio::task::block_in_place(|| sb.leader_info(T));
    assert_eq!(info.url, advertise, "clients are told the relay's address");

    // The job runs: its attempt token is known, and its agent's token is in
    // the agent's environment (read here as root, as a sniffer would like).
    let attempt_token = tokio::task::block_in_place(|| {
        wait_for("the job to record its attempt token", T, || {
            let t = std::fs::read_to_string(&attempt_file).map_err(|e| e.to_string())?;
            when(!t.is_empty(), "empty".to_string()).map(|()| t)
        })
    });
    let agent_token = tokio::task::block_in_place(|| {
        wait_for("the agent's token", T, || {
            sb.live_agents()
                .into_iter()
                .find_map(|pid| procfs::env_var(pid, "TOIL_AGENT_TOKEN"))
                .ok_or("no live agent with TOIL_AGENT_TOKEN in its environment (if the agent's credential moved, read it from where it lives now)")
        })
    });

    // A client's calls go through the relay too (the address in leader.json).
    let mut c = client(&info, &info.client_token).await;
    let wf = c
        .get_workflow(GetWorkflowRequest {})
        .await
        .expect("get workflow")
        .into_inner();
    assert_eq!(wf.name, "sniffed");
    let jobs = c
        .list_jobs(ListJobsRequest {
            states: vec![],
            page_size: 10,
            page_token: String::new(),
        })
        .await
        .expect("list jobs")
        .into_inner();
    assert_eq!(jobs.jobs.len(), 1);

    std::fs::write(&gate, "").expect("gate");
    let r = tokio::task::spawn_blocking(move || leader.wait(T))
        .await
        .expect("join");
    r.expect_code(0);
    assert!(r.stdout.contains(&log_marker), "{}", r.stdout);

    let conns = relay.connections();
    // The agent's connection and the client's, at least.
    assert!(conns.len() >= 2, "{} connections relayed", conns.len());
    let mut total = 0;
    for (i, rec) in conns.iter().enumerate() {
        total += rec.up.len() + rec.down.len();
        // Every connection opens with a TLS handshake record, never the
        // plaintext HTTP/2 preface.
        assert_eq!(rec.up.first(), Some(&0x16), "connection {i} is not TLS");
        for (what, secret) in [
            ("the agent token", agent_token.as_bytes()),
            ("the attempt token", attempt_token.as_bytes()),
            ("the client token", info.client_token.as_bytes()),
            ("the job's command", command_marker.as_bytes()),
            ("the job's output", log_marker.as_bytes()),
            ("an HTTP/2 preface", b"PRI * HTTP/2.0".as_slice()),
            ("a gRPC path", b"/toil.v1.".as_slice()),
        ] {
            assert!(
                !contains(&rec.up, secret) && !contains(&rec.down, secret),
                "{what} crossed connection {i} in plaintext"
            );
        }
    }
    // Enough went through for the test to mean something: the assignment,
    // the reports, the log and the client's calls.
    assert!(total > 4096, "only {total} bytes relayed");
}

/// A TLS server with a certificate of its own that counts handshakes.
async fn impostor() -> (SocketAddr, Arc<Mutex<(u32, u32)>>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["toil-leader".into(), "127.0.0.1".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // (handshakes tried, handshakes completed)
    let seen = Arc::new(Mutex::new((0, 0)));
    let counts = seen.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            counts.lock().unwrap().0 += 1;
            if acceptor.accept(s).await.is_ok() {
                counts.lock().unwrap().1 += 1;
            }
        }
    });
    (addr, seen)
}

/// The agents are told an address where another server answers with its
/// own certificate. The real agent refuses it during the handshake (it
/// sends nothing), exits with an error naming both fingerprints, and the
/// leader reports that as the attempt's end. An agent given a plaintext
/// address, or no pin, refuses to start.
#[tokio::test(flavor = "multi_thread")]
async fn an_impostor_leader_is_refused_by_a_real_agent() {
    let sb = Sandbox::new("impostor");
    let (addr, seen) = impostor().await;
    sb.write(
        "wf.yaml",
        "name: fooled\njobs:\n  a:\n    cores: 0.1\n    memory: 32Mi\n    command: 'echo should not run'\n",
    );
    let advertise = format!("https://{addr}");
    let leader = sb.spawn(
        sb.leader(&[
            "run",
            "wf.yaml",
            "--leaderAddress",
            &advertise,
            "--infraRetryCount",
            "0",
        ]),
        "leader",
    );
    let r = tokio::task::spawn_blocking(move || leader.wait(T))
        .await
        .expect("join");
    r.expect_code(1);
    let info: serde_json::Value = serde_json::from_slice(
        &std::fs::read(sb.job_store().join("state/leader.json")).expect("leader.json"),
    )
    .expect("json");
    let pinned = info["cert_sha256"].as_str().expect("cert_sha256");
    let out = format!("{}{}", r.stdout, r.stderr);
    assert!(
        out.contains(&format!(
            "the server at {advertise} presented a certificate"
        )) && out.contains(&format!("not the pinned {pinned}"))
            && out.contains("not this workflow's leader"),
        "{out}"
    );
    assert!(!out.contains("should not run"), "{out}");
    let (tried, completed) = *seen.lock().unwrap();
    assert!(tried >= 1, "the agent never dialled the impostor");
    assert_eq!(
        completed, 0,
        "the agent finished a handshake with the impostor"
    );

    // Started by hand with a plaintext address or without the pin.
    for (address, pin, says) in [
        (
            format!("http://{addr}"),
            Some(pinned),
            "plaintext http://, which the leader no longer serves",
        ),
        (
            advertise.clone(),
            None,
            "TOIL_LEADER_CERT_SHA256 is not set",
        ),
    ] {
        let mut cmd = Command::new(harness::bin("toil-agent"));
        cmd.arg("run")
            .env("TOIL_LEADER_ADDRESS", address)
            .env("TOIL_AGENT_ID", "agent-1-1")
            .env("TOIL_AGENT_TOKEN", "t")
            .env("TOIL_WORKDIR", sb.work_dir())
            .env_remove("TOIL_LEADER_CERT_SHA256");
        if let Some(p) = pin {
            cmd.env("TOIL_LEADER_CERT_SHA256", p);
        }
        let out = cmd.output().expect("toil-agent");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{err}");
        assert!(err.contains(says), "{err}");
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The client token is not in the job store (which jobs can read): only a
/// verifier is, which the leader does not accept as a token. The token is
/// in a 0600 file in a 0700 directory beside the leader's socket, which
/// another local user can neither read nor connect to; `toil-leader status`
/// finds it by itself, and says what is wrong with a token given in
/// TOIL_CLIENT_TOKEN that is not this leader's.
#[tokio::test(flavor = "multi_thread")]
async fn the_client_token_is_out_of_the_job_store_and_of_other_users_reach() {
    let sb = Sandbox::new("token");
    let gate = sb.path().join("gate");
    sb.write(
        "wf.yaml",
        &format!(
            "name: private\njobs:\n  wait:\n    cores: 0.1\n    memory: 32Mi\n    command: 'while [ ! -e {} ]; do sleep 0.05; done'\n",
            gate.display()
        ),
    );
    let leader = sb.spawn(sb.leader(&["run", "wf.yaml"]), "leader");
    let info: LeaderInfo = tokio::task::block_in_place(|| sb.leader_info(T));

    // What a job reads from the job store.
    let raw = std::fs::read_to_string(sb.job_store().join("state/leader.json")).expect("read");
    assert!(!raw.contains(&info.client_token), "{raw}");
    let json: serde_json::Value = serde_json::from_str(&raw).expect("json");
    assert!(json.get("client_token").is_none(), "{raw}");
    // The verifier is not a token.
    let mut forged = client(&info, &info.client_token_sha256).await;
    let err = forged
        .get_workflow(GetWorkflowRequest {})
        .await
        .expect_err("the verifier is refused");
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err}");
    assert!(
        err.message().contains(&info.token_file),
        "{}",
        err.message()
    );

    // Where the token and the socket are.
    let token_file = Path::new(&info.token_file);
    let dir = token_file.parent().expect("token dir");
    let socket = info.socket.strip_prefix("unix:").expect("unix: socket");
    assert!(dir.starts_with(sb.state_dir()), "{}", dir.display());
    assert_eq!(Path::new(socket).parent(), Some(dir));
    assert_eq!(mode(dir), 0o700);
    assert_eq!(mode(token_file), 0o600);

    // Another local user can neither read the token nor open the socket.
    // The sandbox and the state directory are opened up first, so that what
    // stops them is the leader's private directory alone.
    for d in [sb.path(), sb.state_dir().as_path()] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let other = |program: &str, args: &[&str]| {
        let out = Command::new(program)
            .args(args)
            .uid(OTHER_UID)
            .gid(OTHER_UID)
            .output()
            .unwrap_or_else(|e| panic!("{program}: {e}"));
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (ok, out) = other("stat", &[&dir.display().to_string()]);
    assert!(
        ok,
        "the private directory's parents are open to others: {out}"
    );
    let (ok, out) = other("cat", &[&info.token_file]);
    assert!(!ok && out.contains("Permission denied"), "{out}");
    let (ok, out) = other(
        "python3",
        &[
            "-c",
            "import socket, sys; s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); print('connected')",
            socket,
        ],
    );
    assert!(!ok && out.contains("PermissionError"), "{out}");

    // The user's own client finds the socket and the token by itself.
    let status = sb
        .leader(&["status", &sb.job_store().display().to_string()])
        .output()
        .expect("status");
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(text.contains("workflow private: running"), "{text}");
    // A token for something else is named as such.
    let status = sb
        .leader(&["status", &sb.job_store().display().to_string()])
        .env("TOIL_CLIENT_TOKEN", "some-other-token")
        .output()
        .expect("status");
    let err = String::from_utf8_lossy(&status.stderr);
    assert!(!status.status.success(), "{err}");
    assert!(
        err.contains("the client token from TOIL_CLIENT_TOKEN is not this leader's")
            && err.contains(&format!(
                "unset TOIL_CLIENT_TOKEN to use {}",
                info.token_file
            )),
        "{err}"
    );

    std::fs::write(&gate, "").expect("gate");
    let r = tokio::task::spawn_blocking(move || leader.wait(T))
        .await
        .expect("join");
    r.expect_code(0);
    // The token and the socket go with the leader.
    assert!(!token_file.exists() && !Path::new(socket).exists());
    assert!(!dir.exists(), "{}", dir.display());
}
