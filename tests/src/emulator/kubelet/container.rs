//! One container run: a local process in its sandbox, its logs, its memory
//! limit, and how it ended (exit code, signal, OOM kill).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::sync::watch;

use super::logs::LogWriter;
use super::sandbox::{Cgroup, MemoryMode, Mount, PreExec, Privileges, group_rss};
use crate::emulator::cluster::{lock, now_str};

/// A request to stop a pod's containers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StopRequest {
    /// SIGTERM, then SIGKILL after this long.
    pub grace: Duration,
    /// The node is gone: SIGKILL at once and report nothing.
    pub node_lost: bool,
}

/// Everything needed to start a container process.
#[derive(Clone, Debug)]
pub struct Launch {
    /// argv, already expanded.
    pub argv: Vec<String>,
    /// The full environment.
    pub env: Vec<(String, String)>,
    /// Working directory inside the container.
    pub workdir: PathBuf,
    /// Volume bind mounts.
    pub mounts: Vec<Mount>,
    /// Memory limit in bytes.
    pub memory_limit: Option<u64>,
    /// Log file of this run.
    pub log: PathBuf,
    /// Name of the container's cgroup (unique per run).
    pub cgroup_name: String,
    /// Capabilities and privilege escalation, from its securityContext.
    pub privileges: Privileges,
    /// The image's root filesystem to run in (images with a bundle).
    pub rootfs: Option<super::rootfs::RootfsSpec>,
    /// The pod network namespace to enter, if pods have one
    /// ([`crate::emulator::netns::PodNetwork::netns_fd`]).
    pub netns: Option<std::os::fd::RawFd>,
}

/// How a container ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exit {
    /// Exit code as the kubelet reports it (128+signal when killed).
    pub code: i32,
    /// The signal that killed it, if any.
    pub signal: Option<i32>,
    /// Killed for exceeding its memory limit.
    pub oom: bool,
    /// When it started.
    pub started_at: String,
    /// When it ended.
    pub finished_at: String,
}

impl Exit {
    /// `reason` of `state.terminated`.
    pub fn reason(&self) -> &'static str {
        if self.oom {
            "OOMKilled"
        } else if self.code == 0 {
            "Completed"
        } else {
            "Error"
        }
    }
}

/// A live process, registered so faults can reach it.
#[derive(Debug, Clone)]
pub struct ProcHandle {
    /// Its process group (= its pid, after setsid).
    pub pgid: i32,
    /// Exit code to report instead of the real one (kill fault).
    pub forced_exit: Arc<Mutex<Option<i32>>>,
}

impl ProcHandle {
    /// Kills the whole process group.
    pub fn kill(&self, sig: Signal) {
        let _ = killpg(Pid::from_raw(self.pgid), sig);
    }
}

/// A started container.
pub struct Running {
    child: super::spawn::Child,
    cgroup: Option<Cgroup>,
    /// The process handle faults use.
    pub handle: ProcHandle,
    /// When it started.
    pub started_at: String,
    pumps: Vec<tokio::task::JoinHandle<()>>,
    memory_limit: Option<u64>,
    poll_memory: bool,
}

/// Starts the process; an error is the container runtime's message
/// (`StartError` / `RunContainerError`).
///
/// The process starts without a fork (see [`super::spawn`]): forking the
/// large process the emulator runs in copied its page tables, about 18 ms
/// per pod.
pub async fn spawn(mode: &MemoryMode, launch: &Launch) -> Result<Running, String> {
    let cgroup = match launch.memory_limit {
        Some(limit) => Cgroup::create(mode, &launch.cgroup_name, limit)
            .map_err(|e| format!("failed to create the container's memory cgroup: {e}"))?,
        None => None,
    };
    let pre = PreExec::new(
        &launch.mounts,
        &launch.workdir,
        cgroup.as_ref(),
        launch.privileges,
        launch.rootfs.as_ref(),
    )
    .map_err(|e| format!("invalid mount or working directory: {e}"))?
    .with_netns(launch.netns);
    let writer =
        LogWriter::open(&launch.log).map_err(|e| format!("cannot open the log file: {e}"))?;
    let program = super::spawn::Program::new(&launch.argv, &launch.env, pre)
        .map_err(|e| format!("invalid command or environment: {e}"))?;
    let spawned = super::spawn::spawn(program).await.map_err(|e| {
        format!(
            "failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: exec: \"{}\": {e}",
            launch.argv[0]
        )
    })?;
    let started_at = now_str();
    let pid = spawned.child.id();
    let child = spawned.child;
    let pumps = vec![
        tokio::spawn(writer.clone().pump("stdout", spawned.stdout)),
        tokio::spawn(writer.pump("stderr", spawned.stderr)),
    ];
    let poll_memory = matches!(mode, MemoryMode::Poll) && launch.memory_limit.is_some();
    Ok(Running {
        child,
        cgroup,
        handle: ProcHandle {
            pgid: pid,
            forced_exit: Arc::new(Mutex::new(None)),
        },
        started_at,
        pumps,
        memory_limit: launch.memory_limit,
        poll_memory,
    })
}

impl Running {
    /// Waits for the container to end, honouring stop requests. Returns
    /// `None` if the node was lost (nothing is reported then).
    pub async fn wait(mut self, mut stop: watch::Receiver<Option<StopRequest>>) -> Option<Exit> {
        let mut polled_oom = false;
        let mut term_deadline: Option<tokio::time::Instant> = None;
        let mut node_lost = false;
        let mut mem_tick = tokio::time::interval(Duration::from_millis(50));
        let status = loop {
            if let Some(req) = *stop.borrow_and_update()
                && term_deadline.is_none()
            {
                if req.node_lost || req.grace.is_zero() {
                    node_lost = req.node_lost;
                    self.handle.kill(Signal::SIGKILL);
                    term_deadline = Some(tokio::time::Instant::now());
                } else {
                    self.handle.kill(Signal::SIGTERM);
                    term_deadline = Some(tokio::time::Instant::now() + req.grace);
                }
            }
            let kill_at = term_deadline
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(86400 * 365));
            tokio::select! {
                s = self.child.wait() => break s,
                _ = stop.changed(), if term_deadline.is_none() => {}
                _ = tokio::time::sleep_until(kill_at), if term_deadline.is_some() => {
                    self.handle.kill(Signal::SIGKILL);
                    if let Some(cg) = &self.cgroup { cg.kill_all(); }
                    term_deadline = Some(tokio::time::Instant::now() + Duration::from_secs(3600));
                }
                _ = mem_tick.tick(), if self.poll_memory => {
                    if let Some(limit) = self.memory_limit
                        && group_rss(self.handle.pgid) > limit
                    {
                        polled_oom = true;
                        self.handle.kill(Signal::SIGKILL);
                    }
                }
            }
        };
        // PID 1 of a container ending ends the container: kill what is left.
        self.handle.kill(Signal::SIGKILL);
        if let Some(cg) = &self.cgroup {
            cg.kill_all();
        }
        for p in self.pumps.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(2), p).await;
        }
        let oom = polled_oom || self.cgroup.as_ref().is_some_and(Cgroup::oom_killed);
        if let Some(cg) = self.cgroup.take() {
            cg.remove().await;
        }
        if node_lost {
            return None;
        }
        let (mut code, signal) = match status {
            Ok(s) => {
                use std::os::unix::process::ExitStatusExt;
                match (s.code(), s.signal()) {
                    (Some(c), _) => (c, None),
                    (None, Some(sig)) => (128 + sig, Some(sig)),
                    _ => (255, None),
                }
            }
            Err(_) => (255, None),
        };
        let forced = *lock(&self.handle.forced_exit);
        if let Some(f) = forced {
            code = f;
        }
        let oom = oom && forced.is_none();
        if oom {
            code = 137;
        }
        Some(Exit {
            code,
            signal: if forced.is_some() || oom {
                None
            } else {
                signal
            },
            oom,
            started_at: self.started_at,
            finished_at: now_str(),
        })
    }
}
