//! The agent's own memory beside a job that floods its log.
//!
//! ```text
//! cargo build --release --bins
//! target/release/bench-agent-footprint              # 256 MiB per flood
//! target/release/bench-agent-footprint --mib 1024
//! ```
//!
//! In a pod the agent shares the container's memory limit with its job, so
//! whatever the agent holds is taken from the job; the Kubernetes batch
//! system adds a fixed allowance for it (`podspec::AGENT_MEMORY`). This runs
//! the real leader and agent on one-job workflows (a quiet job, a flood of
//! lines on stdout, a flood without a single newline on stdout, the same on
//! stderr) and prints the agent's peak RSS (VmHWM, read from /proc every
//! 10 ms while it lives). The agent echoes job output to its stdout as it
//! does in a pod (`TOIL_AGENT_ECHO=true`), so the echo's buffers count too.
//! Nothing is asserted: the figures are for reading.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;

#[derive(Parser)]
#[command(about = "Peak RSS of the agent beside a job that floods its log")]
struct Args {
    /// MiB each flooding job writes.
    #[arg(long, default_value_t = 256)]
    mib: u64,
    /// Directory holding toil-leader and toil-agent (default: next to this
    /// program).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

/// A field of /proc/PID/status, in kB.
fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The agents among the leader's children (by command name).
fn agents_of(leader: u32) -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // "PID (COMM) STATE PPID ...": the name may hold spaces.
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                return false;
            };
            let comm = &stat[open + 1..close];
            let ppid = stat[close + 1..].split_whitespace().nth(1);
            comm.starts_with("toil-agent") && ppid == Some(leader.to_string().as_str())
        })
        .collect()
}

/// Runs one single-job workflow; returns the agent's peak RSS in kB and the
/// run's wall time.
fn run(bins: &Path, dir: &Path, name: &str, command: &str) -> anyhow::Result<(u64, Duration)> {
    let wf = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &wf,
        format!(
            "name: {name}\ndefaults: {{cores: 0.1, memory: 64Mi, disk: 1Mi}}\njobs:\n  j:\n    command: {command:?}\n"
        ),
    )?;
    // The leader starts local agents with echo off; the wrapper turns it on
    // as in a pod, and `exec` keeps the agent's pid and name.
    let wrapper = dir.join("agent-with-echo");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nTOIL_AGENT_ECHO=true exec '{}' \"$@\"\n",
            bins.join("toil-agent").display()
        ),
    )?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755))?;
    let t0 = Instant::now();
    let mut child = Command::new(bins.join("toil-leader"))
        .arg("run")
        .arg(&wf)
        .args(["--clean", "always", "--realTimeLogging=false"])
        .arg("--jobStore")
        .arg(dir.join(format!("{name}.jobstore")))
        .arg("--workDir")
        .arg(dir.join("work"))
        .arg("--agentBinary")
        .arg(&wrapper)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting toil-leader")?;
    let leader = child.id();
    let mut peaks: HashMap<u32, u64> = HashMap::new();
    let status = loop {
        for pid in agents_of(leader) {
            if let Some(kb) = status_kb(pid, "VmHWM:") {
                let p = peaks.entry(pid).or_default();
                *p = (*p).max(kb);
            }
        }
        if let Some(s) = child.try_wait()? {
            break s;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let wall = t0.elapsed();
    if !status.success() {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut err);
        }
        bail!("the leader failed on {name} ({status}):\n{err}");
    }
    let Some(peak) = peaks.values().copied().max() else {
        bail!("no agent of the leader was seen running {name}");
    };
    Ok((peak, wall))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bins = toil_tests::harness::bins_for_program(
        args.bin_dir.as_deref(),
        &["toil-leader", "toil-agent"],
    )?;
    let dir = tempfile::Builder::new()
        .prefix("bench-agent-footprint")
        .tempdir()?;
    let bytes = args.mib << 20;
    println!(
        "agent peak RSS beside one job (binaries in {}, {} MiB per flood, echo on as in a pod)",
        bins.display(),
        args.mib
    );
    let cases = [
        ("quiet", "sleep 1".to_string(), 0),
        ("lines", format!("yes | head -c {bytes}"), bytes),
        ("no-newlines", format!("head -c {bytes} /dev/zero"), bytes),
        (
            "stderr-no-newlines",
            format!("head -c {bytes} /dev/zero >&2"),
            bytes,
        ),
    ];
    for (name, command, written) in cases {
        let (kb, wall) = run(&bins, dir.path(), name, &command)?;
        let rate = if written > 0 {
            format!(
                ", log streamed at {:.0} MiB/s",
                (written >> 20) as f64 / wall.as_secs_f64()
            )
        } else {
            String::new()
        };
        println!(
            "  {name:<20} agent peak RSS {:>5.1} MB  (run {:.1} s{rate})",
            kb as f64 / 1024.0,
            wall.as_secs_f64()
        );
    }
    Ok(())
}
