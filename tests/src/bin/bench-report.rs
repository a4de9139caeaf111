//! Figures for the HTML report (issue 13): its size and how long it takes
//! to make for an N-job workflow run through the real leader and agents.
//!
//! ```text
//! cargo build --release --bins
//! target/release/bench-report                # N = 10,000
//! target/release/bench-report --jobs 100000  # past the bar limit: aggregated timeline
//! ```
//!
//! The workflow: one `prep` job, a scatter of N-2 trivial jobs of which one
//! in a thousand fails (with a few lines of log, so the failures section
//! reads log tails), and a `gather` job after them (blocked by those
//! failures). It runs with `--report` and `--clean never`; then
//! `toil-leader report` makes the same page again from the job store
//! alone. Printed: the size of each page, the time `report` took (a whole
//! process: reading the journal, the logs, drawing), its peak RSS, and how
//! many bars the timeline drew. Nothing is asserted.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;

#[derive(Parser)]
#[command(about = "Measure the HTML report's size and generation time for an N-job workflow")]
struct Args {
    /// Jobs in the workflow.
    #[arg(long, default_value_t = 10_000)]
    jobs: u64,
    /// Cores each job asks for (sets how many run at once).
    #[arg(long, default_value = "0.05")]
    cores_per_job: String,
    /// Directory holding toil-leader and toil-agent (default: next to this
    /// program).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Keep the scratch directory (job store and both reports) and say
    /// where it is.
    #[arg(long)]
    keep: bool,
}

/// Runs `cmd` to the end, sampling its peak RSS (VmHWM) every 10 ms.
fn run_sampled(mut cmd: Command) -> anyhow::Result<(Duration, u64, String)> {
    let t0 = Instant::now();
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting toil-leader")?;
    let pid = child.id();
    let mut stderr = child.stderr.take().context("no stderr pipe")?;
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        use std::io::Read;
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut peak = 0u64;
    let status = loop {
        if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status"))
            && let Some(kb) = s
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse::<u64>().ok())
        {
            peak = peak.max(kb);
        }
        if let Some(st) = child.try_wait()? {
            break st;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let wall = t0.elapsed();
    let err = reader.join().unwrap_or_default();
    // The run fails (some jobs fail on purpose): exit 1 is expected.
    if !matches!(status.code(), Some(0 | 1)) {
        bail!("toil-leader exited with {status}:\n{err}");
    }
    Ok((wall, peak, err))
}

fn size_of(p: &Path) -> anyhow::Result<u64> {
    Ok(std::fs::metadata(p)
        .with_context(|| format!("{} was not written", p.display()))?
        .len())
}

fn mb(bytes: u64) -> String {
    format!("{:.2} MB", bytes as f64 / 1e6)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.jobs >= 3, "--jobs must be at least 3");
    let bins = toil_tests::harness::bins_for_program(
        args.bin_dir.as_deref(),
        &["toil-leader", "toil-agent"],
    )?;
    let dir = tempfile::Builder::new().prefix("bench-report").tempdir()?;
    let wf = dir.path().join("shape.yaml");
    std::fs::write(
        &wf,
        format!(
            r#"name: shape
defaults: {{cores: {c}, memory: 16Mi, disk: 1Mi}}
jobs:
  prep:
    command: "echo prepared"
  work:
    after: [prep]
    retries: 0
    scatter: {{i: {{range: {n}}}}}
    command: "if [ $(( {{{{i}}}} % 1000 )) -eq 999 ]; then echo job {{{{i}}}} fails; echo '<b>escaped</b>'; exit 1; fi"
  gather:
    after: [work]
    command: "echo gathered"
"#,
            c = args.cores_per_job,
            n = args.jobs - 2
        ),
    )?;
    let store = dir.path().join("shape.jobstore");
    let at_end = dir.path().join("at-end.html");
    let mut run = Command::new(bins.join("toil-leader"));
    run.arg("run")
        .arg(&wf)
        .args(["--clean", "never", "--realTimeLogging=false"])
        .arg("--jobStore")
        .arg(&store)
        .arg("--workDir")
        .arg(dir.path().join("work"))
        .arg("--agentBinary")
        .arg(bins.join("toil-agent"))
        .arg("--report")
        .arg(&at_end)
        .current_dir(dir.path());
    println!(
        "report benchmark: {} jobs ({} build)",
        args.jobs,
        if bins.ends_with("release") {
            "release"
        } else {
            "debug"
        }
    );
    let (wall, _, _) = run_sampled(run)?;
    println!(
        "  the run: {:.1} s; page written at its end: {}",
        wall.as_secs_f64(),
        mb(size_of(&at_end)?)
    );

    let after = dir.path().join("after.html");
    let mut rep = Command::new(bins.join("toil-leader"));
    rep.arg("report").arg(&store).arg("-o").arg(&after);
    let (wall, peak_kb, err) = run_sampled(rep)?;
    let page = std::fs::read_to_string(&after)?;
    let bars = page.matches(r#"<rect class="bar "#).count();
    let tails = page.matches(r#"<pre class="tail">"#).count();
    println!(
        "  toil-leader report (a new process, from the job store): {:.2} s wall, peak RSS {:.1} MB",
        wall.as_secs_f64(),
        peak_kb as f64 / 1024.0
    );
    println!(
        "  page: {} ({} timeline bars{}, {} log tails)",
        mb(page.len() as u64),
        bars,
        if page.contains(r#"class="agg "#) {
            ", aggregated"
        } else {
            ""
        },
        tails
    );
    if let Some(line) = err.lines().find(|l| l.contains("wrote ")) {
        println!("  its own words: {}", line.trim());
    }
    if args.keep {
        let kept = dir.keep();
        println!("  kept in {}", kept.display());
    }
    Ok(())
}
