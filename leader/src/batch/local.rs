//! The local batch system: one `toil-agent` process per attempt on this
//! machine, within `--maxCores` / `--maxMemory` (the driver does the
//! accounting; this module only starts, watches and stops processes).

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc;

use super::{AgentLaunch, BatchCmd, BatchEvent};

/// Lines of an agent's stderr kept for the failure message.
const STDERR_TAIL: usize = 10;
/// How long agents get to stop on shutdown before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// How to start local agents.
#[derive(Clone, Debug)]
pub struct LocalConfig {
    /// The agent program.
    pub agent_bin: PathBuf,
    /// Arguments before the agent's own: `run`, or `agent run` for the
    /// leader's embedded agent.
    pub agent_args: Vec<String>,
    /// Address agents use to reach the leader: the leader's Unix socket
    /// (`unix:PATH`), or `https://HOST:PORT` when `--leaderAddress` is given.
    pub leader_address: String,
    /// The fingerprint agents pin when they dial `https://`.
    pub leader_cert_sha256: String,
    /// Work directory shared by the agents (cache, job directories).
    pub work_dir: PathBuf,
    /// Extra environment for every agent (cache and engine settings).
    pub env: Vec<(String, String)>,
    /// Log filter for agents' own messages.
    pub agent_log: String,
}

/// Runs the local batch system until shut down.
pub async fn run(
    cfg: LocalConfig,
    mut cmds: mpsc::Receiver<BatchCmd>,
    events: mpsc::Sender<BatchEvent>,
) {
    // Agent id -> process group id, for kills.
    let mut pids: HashMap<String, i32> = HashMap::new();
    let (exited_tx, mut exited_rx) = mpsc::unbounded_channel::<String>();
    loop {
        tokio::select! {
            cmd = cmds.recv() => match cmd {
                Some(BatchCmd::Launch(l)) => {
                    match spawn(&cfg, &l, events.clone(), exited_tx.clone()) {
                        Ok(pid) => {
                            pids.insert(l.agent_id.clone(), pid);
                            let _ = events
                                .send(BatchEvent::Placed {
                                    agent_id: l.agent_id,
                                    placement: format!("local pid {pid}"),
                                })
                                .await;
                        }
                        Err(detail) => {
                            let _ = events
                                .send(BatchEvent::AgentGone {
                                    agent_id: l.agent_id,
                                    cause: None,
                                    detail,
                                })
                                .await;
                        }
                    }
                }
                Some(BatchCmd::Kill { agent_id }) => {
                    if let Some(&pid) = pids.get(&agent_id) {
                        let _ = killpg(Pid::from_raw(pid), Signal::SIGTERM);
                    }
                }
                Some(BatchCmd::Shutdown(done)) => {
                    stop_all(&mut pids, &mut exited_rx).await;
                    let _ = done.send(());
                    return;
                }
                None => {
                    stop_all(&mut pids, &mut exited_rx).await;
                    return;
                }
            },
            Some(id) = exited_rx.recv() => {
                pids.remove(&id);
            }
        }
    }
}

/// SIGTERM every agent's process group, wait for them, SIGKILL stragglers.
async fn stop_all(pids: &mut HashMap<String, i32>, exited: &mut mpsc::UnboundedReceiver<String>) {
    if pids.is_empty() {
        return;
    }
    for &pid in pids.values() {
        let _ = killpg(Pid::from_raw(pid), Signal::SIGTERM);
    }
    let deadline = tokio::time::Instant::now() + STOP_GRACE;
    while !pids.is_empty() {
        match tokio::time::timeout_at(deadline, exited.recv()).await {
            Ok(Some(id)) => {
                pids.remove(&id);
            }
            Ok(None) | Err(_) => break,
        }
    }
    for &pid in pids.values() {
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    }
    pids.clear();
}

fn spawn(
    cfg: &LocalConfig,
    l: &AgentLaunch,
    events: mpsc::Sender<BatchEvent>,
    exited: mpsc::UnboundedSender<String>,
) -> Result<i32, String> {
    let mut cmd = Command::new(&cfg.agent_bin);
    cmd.args(&cfg.agent_args)
        .env("TOIL_LEADER_ADDRESS", &cfg.leader_address)
        .env(toil_agent::transport::PIN_ENV, &cfg.leader_cert_sha256)
        .env("TOIL_AGENT_ID", &l.agent_id)
        .env("TOIL_AGENT_TOKEN", &l.agent_token)
        .env("TOIL_WORKDIR", &cfg.work_dir)
        .env("TOIL_AGENT_MILLICORES", l.request.millicores.to_string())
        .env("TOIL_AGENT_MEMORY", l.request.memory.to_string())
        .env("TOIL_AGENT_DISK", l.request.disk.to_string())
        .env("TOIL_AGENT_GPUS", l.request.gpus.to_string())
        .env("TOIL_AGENT_LOG", &cfg.agent_log)
        // The agent echoes job output to its stdout for `kubectl logs`; the
        // leader shows it from the log stream instead.
        .env("TOIL_AGENT_ECHO", "false")
        .envs(cfg.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        // Its own process group: a Ctrl-C at the terminal reaches the leader,
        // which stops agents in order, rather than killing them mid-report.
        .process_group(0);
    let mut child = cmd.spawn().map_err(|e| {
        format!(
            "could not start the agent {}: {e} (set --agentBinary or TOIL_AGENT_BINARY)",
            cfg.agent_bin.display()
        )
    })?;
    let pid = child.id().map(|p| p as i32).unwrap_or(0);
    let stderr = child.stderr.take();
    let agent_id = l.agent_id.clone();
    tokio::spawn(async move {
        let mut tail: VecDeque<String> = VecDeque::new();
        if let Some(stderr) = stderr {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::debug!(agent = %agent_id, "{line}");
                if tail.len() == STDERR_TAIL {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        }
        let status = child.wait().await;
        let mut detail = match status {
            Ok(s) => format!("the agent process ({pid}) ended: {s}"),
            Err(e) => format!("waiting for the agent process ({pid}) failed: {e}"),
        };
        if !tail.is_empty() {
            detail.push_str("; its last messages: ");
            detail.push_str(&Vec::from(tail).join(" | "));
        }
        let _ = exited.send(agent_id.clone());
        let _ = events
            .send(BatchEvent::AgentGone {
                agent_id,
                cause: None,
                detail,
            })
            .await;
    });
    Ok(pid)
}
