//! The leader's CPU and memory while a job floods its log.
//!
//! ```text
//! cargo build --release --bins
//! target/release/bench-log-flood                    # 400 MB and 1 GB
//! target/release/bench-log-flood --scale 0.1        # a tenth of each
//! ```
//!
//! Runs the real leader and agent on one-job workflows: a quiet job (the
//! baseline), a job writing 400 MB without a single newline
//! (`head -c 400000000 /dev/zero | tr '\0' x`: before the log hub scanned
//! each byte once, 40 MB of this cost 14 s of leader CPU and 400 MB never
//! finished) and one writing 1 GB of short lines (`yes | head -c
//! 1000000000`). The leader runs as users run it, echoing job output to its
//! stdout (sent to /dev/null here), storing the log in a file job store.
//! Prints the leader's own CPU time (user + system, from /proc/PID/stat,
//! read once more as a zombie so nothing is missed), its peak RSS (VmHWM,
//! sampled every 10 ms) and the wall time. Nothing is asserted: the figures
//! are for reading.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use toil_tests::procfs;

#[derive(Parser)]
#[command(about = "Leader CPU and peak RSS while one job floods its log")]
struct Args {
    /// Multiplies both floods' sizes (1 = 400 MB and 1 GB).
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Directory holding toil-leader and toil-agent (default: next to this
    /// program).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

struct Figures {
    cpu: Duration,
    peak_rss_kb: u64,
    wall: Duration,
}

/// Runs one single-job workflow and measures its leader.
fn run(bins: &Path, dir: &Path, name: &str, command: &str) -> anyhow::Result<Figures> {
    let wf = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &wf,
        format!(
            "name: {name}\ndefaults: {{cores: 0.5, memory: 64Mi, disk: 1Mi}}\njobs:\n  j:\n    command: {command:?}\n"
        ),
    )?;
    let t0 = Instant::now();
    let mut child = Command::new(bins.join("toil-leader"))
        .arg("run")
        .arg(&wf)
        .args(["--clean", "always"])
        .arg("--jobStore")
        .arg(dir.join(format!("{name}.jobstore")))
        .arg("--workDir")
        .arg(dir.join("work"))
        .arg("--agentBinary")
        .arg(bins.join("toil-agent"))
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting toil-leader")?;
    let pid = child.id();
    let mut peak = 0;
    let mut ticks = 0;
    // Until the leader is a zombie: its times are still readable then, and
    // final; it is reaped only after.
    loop {
        match procfs::stat(pid) {
            Some((_, 'Z', _)) | None => {
                ticks = procfs::cpu_ticks(pid).map_or(ticks, |(own, _)| own);
                break;
            }
            Some(_) => {}
        }
        peak = peak.max(procfs::vm_hwm_kb(pid).unwrap_or(0));
        ticks = procfs::cpu_ticks(pid).map_or(ticks, |(own, _)| own);
        std::thread::sleep(Duration::from_millis(10));
    }
    let status = child.wait()?;
    let wall = t0.elapsed();
    if !status.success() {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut err);
        }
        bail!("the leader failed on {name} ({status}):\n{err}");
    }
    let hz = procfs::ticks_per_second();
    Ok(Figures {
        cpu: Duration::from_millis(ticks * 1000 / hz),
        peak_rss_kb: peak,
        wall,
    })
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bins = toil_tests::harness::bins_for_program(
        args.bin_dir.as_deref(),
        &["toil-leader", "toil-agent"],
    )?;
    if !(args.scale > 0.0 && args.scale <= 10.0) {
        bail!("--scale must be above 0 and at most 10");
    }
    let dir = tempfile::Builder::new()
        .prefix("bench-log-flood")
        .tempdir()?;
    let no_newline = (400_000_000.0 * args.scale) as u64;
    let lines = (1_000_000_000.0 * args.scale) as u64;
    println!(
        "leader CPU and peak RSS while one job floods its log (binaries in {}, echo on, file job store)",
        bins.display()
    );
    let cases = [
        ("quiet", "echo done".to_string(), 0),
        (
            "no-newline",
            format!("head -c {no_newline} /dev/zero | tr '\\0' x"),
            no_newline,
        ),
        ("lines", format!("yes | head -c {lines}"), lines),
    ];
    for (name, command, written) in cases {
        let f = run(&bins, dir.path(), name, &command)?;
        let rate = if written > 0 {
            format!(
                ", {:.0} MB at {:.0} MB/s, {:.2} s of leader CPU per GB",
                written as f64 / 1e6,
                written as f64 / 1e6 / f.wall.as_secs_f64(),
                f.cpu.as_secs_f64() / (written as f64 / 1e9)
            )
        } else {
            String::new()
        };
        println!(
            "  {name:<11} leader CPU {:>6.2} s  peak RSS {:>6.1} MB  wall {:>6.1} s{rate}",
            f.cpu.as_secs_f64(),
            f.peak_rss_kb as f64 / 1024.0,
            f.wall.as_secs_f64(),
        );
    }
    Ok(())
}
