//! The agents' tunnel to a leader that pods cannot reach.
//!
//! First without a cluster: the real `toil-agent relay` process, the
//! leader's real listeners and certificate, agents speaking pinned TLS, and
//! a plain TCP connection to the relay's tunnel port standing in for the
//! API server's port-forward. Then end to end on the emulator (see below).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod k8s_support;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use rustls::pki_types::ServerName;
use toil_agent::transport::{Pin, TLS_SERVER_NAME, client_config};
use toil_agent::tunnel::{self, Inbound, Mux};
use toil_leader::server::LeaderCert;
use toil_leader::server::listen::{Listeners, TunnelConn, incoming};
use toil_tests::harness::bin;
use toil_tests::wait::{wait_for_async, when};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Connected;

const T: Duration = Duration::from_secs(60);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A loopback address of this test's own (127.77.X.Y, random), so that a
/// port found free there is not taken by another test before the relay
/// binds it (the tests run in parallel, and every other one uses
/// 127.0.0.1 or the emulator's 127.10/16 and 127.96/16).
fn own_loopback_ip() -> std::net::Ipv4Addr {
    let r: u16 = rand::random();
    std::net::Ipv4Addr::new(127, 77, (r >> 8) as u8, (r as u8).max(1))
}

fn free_port_on(ip: std::net::Ipv4Addr) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A stand-in leader: its real listeners (TCP and the tunnel channel) and
/// certificate, echoing each line back prefixed with the peer the
/// connection reports.
struct Leader {
    addr: SocketAddr,
    pin: Pin,
    tunnel: mpsc::Sender<TunnelConn>,
    stop: CancellationToken,
}

impl Leader {
    async fn start() -> Leader {
        let cert = LeaderCert::generate("tunnel-test", &["127.0.0.1".to_string()]).unwrap();
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let (tx, rx) = mpsc::channel(16);
        let stop = CancellationToken::new();
        let mut conns = incoming(
            Listeners {
                tcp,
                unix: None,
                tunnel: Some(rx),
            },
            cert.server_config.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            while let Some(Ok(conn)) = conns.next().await {
                let peer = conn
                    .connect_info()
                    .remote
                    .map_or("none".to_string(), |a| a.ip().to_string());
                tokio::spawn(async move {
                    let (rd, mut wr) = tokio::io::split(conn);
                    let mut lines = BufReader::new(rd).lines();
                    while let Ok(Some(l)) = lines.next_line().await {
                        if wr
                            .write_all(format!("{peer} {l}\n").as_bytes())
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
        Leader {
            addr,
            pin: cert.pin,
            tunnel: tx,
            stop,
        }
    }

    /// Opens a tunnel to the relay (the port-forward's stand-in) and feeds
    /// its streams to the listeners, as the leader's tunnel slots do.
    async fn open_tunnel(&self, relay_tunnel: SocketAddr, token: &str) -> std::io::Result<Mux> {
        let mut io = TcpStream::connect(relay_tunnel).await?;
        tunnel::handshake(&mut io, token).await?;
        let (mux, mut inbound) = Mux::start(io);
        let tx = self.tunnel.clone();
        tokio::spawn(async move {
            while let Some(m) = inbound.recv().await {
                if let Inbound::Stream { io, peer } = m {
                    let _ = tx.send(TunnelConn { io, peer }).await;
                }
            }
        });
        Ok(mux)
    }
}

/// A relay process and the first lines it prints.
struct RelayProc {
    /// Killed when the test drops it.
    _child: Child,
    agents: SocketAddr,
    tunnels: SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
}

impl RelayProc {
    fn start(token: &str, probe: &str, pin: Pin) -> RelayProc {
        let ip = own_loopback_ip();
        let agents = SocketAddr::from((ip, free_port_on(ip)));
        let tunnels = SocketAddr::from((ip, free_port_on(ip)));
        let mut child = Command::new(bin("toil-agent"))
            .arg("relay")
            .env("TOIL_POD_IP", ip.to_string())
            .env("TOIL_RELAY_AGENT_PORT", agents.port().to_string())
            .env("TOIL_RELAY_TUNNEL_BIND", tunnels.to_string())
            .env("TOIL_RELAY_TOKEN", token)
            .env("TOIL_RELAY_PROBE", probe)
            .env("TOIL_LEADER_CERT_SHA256", pin.to_string())
            .env("TOIL_AGENT_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        for out in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let lines = lines.clone();
            tokio::spawn(async move {
                let mut l = BufReader::new(out).lines();
                while let Ok(Some(line)) = l.next_line().await {
                    lines.lock().unwrap().push(line);
                }
            });
        }
        RelayProc {
            _child: child,
            agents,
            tunnels,
            lines,
        }
    }

    async fn wait_line(&self, needle: &str) -> String {
        wait_for_async(&format!("the relay to print {needle:?}"), T, || {
            let lines = self.lines.lock().unwrap().clone();
            let found = match lines.iter().find(|l| l.contains(needle)) {
                Some(l) => Ok(l.clone()),
                None => Err(lines.join("\n")),
            };
            async move { found }
        })
        .await
    }
}

/// An agent's connection: TCP to the relay, TLS pinned to the leader.
async fn agent_says(relay: SocketAddr, pin: Pin, line: String) -> Result<String, String> {
    let tcp = TcpStream::connect(relay).await.map_err(|e| e.to_string())?;
    let config = Arc::new(client_config(pin)?);
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from(TLS_SERVER_NAME).unwrap(), tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    tls.write_all(format!("{line}\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut got = String::new();
    let mut r = BufReader::new(tls);
    r.read_line(&mut got).await.map_err(|e| e.to_string())?;
    Ok(got.trim_end().to_string())
}

/// Agents' pinned TLS crosses the relay process and two tunnels to the
/// leader's listeners; the leader sees each agent's address; a tunnel with
/// a wrong token and a connection that is not TLS are dropped; losing one
/// tunnel leaves the other carrying new connections; the probe of the
/// leader's address reports it reachable.
#[tokio::test(flavor = "multi_thread")]
async fn the_relay_carries_only_pinned_tls_from_agents_to_the_leader_over_its_tunnels() {
    let leader = Leader::start().await;
    let relay = RelayProc::start("s3cret", &format!("https://{}", leader.addr), leader.pin);
    let probe = relay.wait_line("toil-relay probe:").await;
    assert!(
        probe.contains(&format!("reachable https://{}", leader.addr))
            && !probe.contains("unreachable"),
        "{probe}"
    );
    relay.wait_line("toil-relay: agents on").await;

    // A tunnel must present the token.
    let wrong = leader.open_tunnel(relay.tunnels, "guess").await;
    assert!(wrong.is_err(), "a tunnel with a wrong token was accepted");
    relay.wait_line("tunnel refused").await;

    // No tunnel yet: the relay holds an agent's connection until one is up.
    let early = tokio::spawn(agent_says(relay.agents, leader.pin, "early".into()));
    let t1 = leader.open_tunnel(relay.tunnels, "s3cret").await.unwrap();
    let t2 = leader.open_tunnel(relay.tunnels, "s3cret").await.unwrap();
    assert_eq!(early.await.unwrap().unwrap(), "127.0.0.1 early");

    // Many agents at once, spread over both tunnels.
    let mut calls = Vec::new();
    for i in 0..16 {
        calls.push(tokio::spawn(agent_says(
            relay.agents,
            leader.pin,
            format!("agent {i}"),
        )));
    }
    let mut seen = HashSet::new();
    for c in calls {
        seen.insert(c.await.unwrap().unwrap());
    }
    assert_eq!(seen.len(), 16, "{seen:?}");
    assert!(seen.contains("127.0.0.1 agent 7"), "{seen:?}");

    // Plain text is refused before anything reaches the leader.
    let mut plain = TcpStream::connect(relay.agents).await.unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let n = tokio::time::timeout(T, plain.read_to_end(&mut buf)).await;
    assert!(matches!(n, Ok(Ok(0)) | Ok(Err(_))), "{n:?} {buf:?}");
    relay.wait_line("not a TLS ClientHello").await;

    // An agent pinned to another certificate gets nothing through.
    let other = LeaderCert::generate("other", &[]).unwrap();
    let refused = agent_says(relay.agents, other.pin, "impostor?".into()).await;
    assert!(refused.is_err(), "{refused:?}");

    // One tunnel drops: once the relay has seen it go, new connections use
    // the other. (A connection the relay gave to the dying tunnel just
    // before fails its handshake, and a real agent dials again.)
    t1.close();
    relay.wait_line("tunnel down").await;
    for i in 0..4 {
        assert_eq!(
            agent_says(relay.agents, leader.pin, format!("after {i}"))
                .await
                .unwrap(),
            format!("127.0.0.1 after {i}")
        );
    }
    assert!(!t2.is_closed());
    leader.stop.cancel();
    drop(relay);
}

/// The probe names why the leader cannot be reached.
#[tokio::test(flavor = "multi_thread")]
async fn the_relay_probe_reports_an_unreachable_leader_with_the_reason() {
    let cert = LeaderCert::generate("probe", &[]).unwrap();
    let closed = free_port();
    let relay = RelayProc::start("t", &format!("https://127.0.0.1:{closed}"), cert.pin);
    let line = relay.wait_line("toil-relay probe:").await;
    assert!(
        line.contains(&format!("unreachable https://127.0.0.1:{closed}"))
            && line.to_lowercase().contains("refused"),
        "{line}"
    );
}

// === end to end, on the emulator ===
//
// Pods live in a network namespace of the emulator's own (one loopback,
// pod IPs 127.10.x.y, Services on 127.96.x.y), so the leader's
// 127.0.0.1 address is unreachable from them, as a laptop's is from a
// real cluster. The API server, on the host's loopback, is the only way
// between them.

use k8s_openapi::api::core::v1::{Pod as KubePod, Secret as KubeSecret, Service};
use k8s_support::{Cluster, NS, SELECTOR, config, status_line};
use kube::api::{Api, DeleteParams, ListParams};
use toil_tests::emulator::{NodeConfig, PodNetworkMode};

const RELAY: &str = "toil.io/role=relay";

const FANOUT: &str = r#"
name: fanout
defaults:
  cores: 0.1
  memory: 128Mi
  disk: 50Mi
jobs:
  hello:
    scatter: {n: [1, 2, 3, 4, 5]}
    command: |
      echo "live line from job {{n}} in $TOIL_POD_NAME"
      echo {{n}} > n_{{n}}.txt
    outputs:
      n: "n_{{n}}.txt"
  total:
    inputs: [{from: hello.n, as: ns/}]
    command: |
      cat ns/* | awk '{ s += $1 } END { print "total " s }'
"#;

fn isolated() -> toil_tests::emulator::EmulatorConfig {
    config(vec![NodeConfig::new("node-1"), NodeConfig::new("node-2")])
        .with_pod_network(PodNetworkMode::Isolated)
}

async fn count<K>(c: &Cluster, selector: &str) -> usize
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(c.admin().await, NS);
    api.list(&ListParams::default().labels(selector))
        .await
        .map(|l| l.items.len())
        .unwrap_or(usize::MAX)
}

/// Nothing the leader made is left: Jobs, pods, Secrets, Services.
async fn nothing_left(c: &Cluster) {
    c.wait_all_gone(T).await;
    wait_for_async("the relay's Secret and Service to go", T, || async {
        let secrets = count::<KubeSecret>(c, SELECTOR).await;
        let services = count::<Service>(c, SELECTOR).await;
        if secrets == 0 && services == 0 {
            Ok(())
        } else {
            Err((secrets, services))
        }
    })
    .await;
}

/// The direct path fails in an isolated pod network; the leader says so
/// and the whole workflow runs through the tunnel, job output reaching the
/// leader's terminal live; nothing is left afterwards.
#[tokio::test(flavor = "multi_thread")]
async fn agents_reach_a_leader_they_cannot_route_to_through_the_api_server() {
    let c = Cluster::start(isolated()).await;
    c.workflow("fanout", FANOUT);
    let (code, out) = c
        .run("fanout", &["--realTimeLogging"], Duration::from_secs(240))
        .await;
    eprintln!("{out}");
    assert_eq!(code, 0, "{out}");
    let line = out
        .lines()
        .find(|l| l.contains("agents reach the leader"))
        .unwrap_or_else(|| panic!("no path line\n{out}"));
    assert!(
        line.contains("through a tunnel over the API server (relay toil-tester-")
            && line.contains("https://127.96.")
            && line.contains("is not reachable from pods (")
            && line.contains("https://127.0.0.1:"),
        "{line}"
    );
    for n in 1..=5 {
        assert!(
            out.contains(&format!("live line from job {n} in ")),
            "{out}"
        );
    }
    assert!(out.contains("total 15"), "{out}");
    let status = c.status("fanout").await;
    assert!(status.contains("jobs: 6 (6 succeeded)"), "{status}");
    assert!(
        status_line(&status, "total").contains("succeeded"),
        "{status}"
    );
    let counts = c.emu.request_counts();
    assert!(
        counts.get("create", "pods/portforward") + counts.get("get", "pods/portforward") >= 3,
        "{counts:?}"
    );
    nothing_left(&c).await;
}

const SLOW: &str = r#"
name: slow
defaults:
  cores: 0.1
  memory: 128Mi
  disk: 50Mi
jobs:
  first:
    scatter: {n: [1, 2, 3]}
    command: |
      echo "first {{n}} started"
      while [ ! -e "$GATE" ]; do sleep 0.1; done
      echo "first {{n}} done"
  second:
    after: [first]
    scatter: {n: [1, 2]}
    command: echo "second {{n}} done"
"#;

/// Starts the `SLOW` workflow and waits until its three first jobs run
/// (they then wait for the gate file); returns the gate and the leader.
async fn start_slow(c: &Cluster) -> (std::path::PathBuf, Child) {
    let gate = c.dir.path().join("gate");
    c.workflow("slow", &SLOW.replace("$GATE", &gate.display().to_string()));
    let leader = c.spawn("slow", &["--realTimeLogging"]);
    wait_for_async(
        "the three first jobs to run",
        Duration::from_secs(180),
        || async {
            let out = c.output_of("slow");
            when(
                (1..=3).all(|n| out.contains(&format!("first {n} started"))),
                out,
            )
        },
    )
    .await;
    (gate, leader)
}

/// Opens the gate, waits for the leader, checks it succeeded and returns
/// its output.
async fn finish_slow(c: &Cluster, gate: &std::path::Path, mut leader: Child) -> String {
    std::fs::write(gate, "go").unwrap();
    let code = tokio::time::timeout(Duration::from_secs(180), leader.wait())
        .await
        .expect("the leader to finish")
        .unwrap();
    let out = c.output_of("slow");
    eprintln!("{out}");
    assert_eq!(code.code(), Some(0), "{out}");
    out
}

/// The relay pod is deleted while jobs run: its Job makes another, the
/// Service keeps the address, the leader reopens its tunnels, the agents
/// reconnect within their lease, and every job succeeds once.
#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_relay_pod_is_replaced_and_no_job_is_lost() {
    let c = Cluster::start(isolated()).await;
    let (gate, leader) = start_slow(&c).await;
    let out = c.output_of("slow");
    assert!(
        out.contains("through a tunnel over the API server"),
        "{out}"
    );

    let pods: Api<KubePod> = Api::namespaced(c.admin().await, NS);
    let relay_sel = format!("{SELECTOR},{RELAY}");
    let old = pods
        .list(&ListParams::default().labels(&relay_sel))
        .await
        .unwrap()
        .items;
    assert_eq!(old.len(), 1, "{old:?}");
    let old_name = old[0].metadata.name.clone().unwrap();
    pods.delete(&old_name, &DeleteParams::default())
        .await
        .unwrap();
    wait_for_async("a new relay pod to run", T, || async {
        let list = pods
            .list(&ListParams::default().labels(&relay_sel))
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        let running: Vec<_> = list
            .iter()
            .filter(|p| {
                p.metadata.name.as_deref() != Some(old_name.as_str())
                    && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
            })
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        when(!running.is_empty(), list.len())
    })
    .await;
    let out = finish_slow(&c, &gate, leader).await;
    for n in 1..=3 {
        assert!(out.contains(&format!("first {n} done")), "{out}");
    }
    let status = c.status("slow").await;
    assert!(status.contains("jobs: 5 (5 succeeded)"), "{status}");
    nothing_left(&c).await;
}

/// The relay's Service deleted, then its whole Job (the garbage collector
/// takes the relay pod, its token Secret and, being owned by the Job, the
/// Service too): the leader recreates them, the Service with the same
/// cluster IP agents already hold, and the workflow finishes with no job
/// lost.
#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_relay_job_and_service_are_recreated_at_the_same_address() {
    use k8s_openapi::api::batch::v1::Job;
    let c = Cluster::start(isolated()).await;
    let (gate, leader) = start_slow(&c).await;
    let admin = c.admin().await;
    let services: Api<Service> = Api::namespaced(admin.clone(), NS);
    let jobs: Api<Job> = Api::namespaced(admin.clone(), NS);
    let pods: Api<KubePod> = Api::namespaced(admin, NS);
    let relay_sel = format!("{SELECTOR},{RELAY}");
    let relay_service = || async {
        services
            .list(&ListParams::default().labels(&relay_sel))
            .await
            .map(|l| l.items)
            .unwrap_or_default()
            .into_iter()
            .find(|s| s.metadata.deletion_timestamp.is_none())
    };
    let first = relay_service().await.expect("the relay's Service");
    let name = first.metadata.name.clone().unwrap();
    let ip = first
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.clone())
        .unwrap();
    let uid = first.metadata.uid.clone().unwrap();

    // The Service alone.
    services
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    let again = wait_for_async("the Service to be recreated", T, || async {
        match relay_service().await {
            Some(s) if s.metadata.uid.as_deref() != Some(uid.as_str()) => Ok(s),
            other => Err(other.map(|s| s.metadata.uid)),
        }
    })
    .await;
    assert_eq!(
        again.spec.as_ref().and_then(|s| s.cluster_ip.clone()),
        Some(ip.clone()),
        "the recreated Service keeps the address agents hold"
    );

    // The whole Job, as `kubectl delete job` does (background propagation).
    let job_name = jobs
        .list(&ListParams::default().labels(&relay_sel))
        .await
        .unwrap()
        .items
        .first()
        .and_then(|j| j.metadata.name.clone())
        .expect("the relay's Job");
    let old_job_uid = jobs.get(&job_name).await.unwrap().metadata.uid.unwrap();
    jobs.delete(
        &job_name,
        &DeleteParams {
            propagation_policy: Some(kube::api::PropagationPolicy::Background),
            ..DeleteParams::default()
        },
    )
    .await
    .unwrap();
    wait_for_async(
        "a new relay Job with a running pod behind the same address",
        Duration::from_secs(120),
        || async {
            let job_new = jobs
                .list(&ListParams::default().labels(&relay_sel))
                .await
                .map(|l| l.items)
                .unwrap_or_default()
                .iter()
                .any(|j| j.metadata.uid.as_deref() != Some(old_job_uid.as_str()));
            let running = pods
                .list(&ListParams::default().labels(&relay_sel))
                .await
                .map(|l| l.items)
                .unwrap_or_default()
                .iter()
                .any(|p| {
                    p.metadata.deletion_timestamp.is_none()
                        && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                });
            let same_ip = relay_service()
                .await
                .and_then(|s| s.spec.and_then(|s| s.cluster_ip))
                == Some(ip.clone());
            when(job_new && running && same_ip, (job_new, running, same_ip))
        },
    )
    .await;
    finish_slow(&c, &gate, leader).await;
    let status = c.status("slow").await;
    assert!(status.contains("jobs: 5 (5 succeeded)"), "{status}");
    nothing_left(&c).await;
}

/// Without `pods/portforward` in its Role, the leader names the rule and
/// what `--leaderAddress` would do instead, and leaves nothing behind.
#[tokio::test(flavor = "multi_thread")]
async fn without_the_portforward_rule_the_leader_names_it_and_the_alternative() {
    let rbac =
        std::fs::read_to_string(toil_tests::harness::repo_root().join("deploy/rbac.yaml")).unwrap();
    let rule = "  - apiGroups: [\"\"]\n    resources: [\"pods/portforward\"]\n    verbs: [\"get\", \"create\"]\n";
    assert!(
        rbac.contains(rule),
        "deploy/rbac.yaml changed: update this test"
    );
    let dir = tempfile::tempdir().unwrap();
    let stripped = dir.path().join("rbac.yaml");
    std::fs::write(&stripped, rbac.replace(rule, "")).unwrap();
    let mut cfg = isolated();
    cfg.rbac_files = vec![stripped];
    let c = Cluster::start(cfg).await;
    c.workflow("fanout", FANOUT);
    let (code, out) = c.run("fanout", &[], Duration::from_secs(180)).await;
    eprintln!("{out}");
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("is not reachable from pods")
            && out.contains("pods/portforward")
            && out.contains("--leaderAddress ADDR"),
        "{out}"
    );
    nothing_left(&c).await;
}
