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
use toil_tests::wait::wait_for_async;
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
        let agents: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let tunnels: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut child = Command::new(bin("toil-agent"))
            .arg("relay")
            .env("TOIL_POD_IP", "127.0.0.1")
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

    // One tunnel drops: new connections use the other.
    t1.close();
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
