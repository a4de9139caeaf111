//! Benchmark of the local batch system: N trivial jobs through the real
//! leader and agents.
//!
//! ```text
//! cargo build --release --bins
//! target/release/bench-local                 # N = 10,000 and a 200-job chain
//! target/release/bench-local --jobs 100000   # leader memory with 100,000 jobs
//! ```
//!
//! The throughput run (`command: "true"`, a shell per job) is made three
//! times: with default flags, with `--reuseAgents` and with
//! `--reuseAgents=false` (one agent process per job). The flag is passed as
//! `TOIL_REUSE_AGENTS`, which older leaders read too, so `--bin-dir` can
//! point at a previous build for a before/after comparison. For each it
//! prints:
//! - throughput: jobs per second over the whole run (leader start to exit);
//! - the leader's peak RSS (VmHWM, sampled every 100 ms);
//! - CPU per job, split into the leader, the agents and the jobs' shells:
//!   the leader's own time and its children's (agents, which count their
//!   jobs) are read from the exited leader before it is reaped, and the
//!   shells' time is the sum the agents measured with `wait4` and recorded
//!   in each attempt's result;
//! - dispatch latency: from the leader deciding to launch an attempt (its
//!   journal entry) to the command starting (the agent's report), p50/p99;
//! - job-store writes per job (journal records, results, logs, snapshots).
//!
//! Then a chain of jobs with default flags, where each job becomes ready
//! when the leader records its predecessor's end: ready-to-running latency
//! p50/p99.
//!
//! Timings come from the job store's journal of the run itself (kept with
//! `--clean never`), so they are the system's own records. Nothing is
//! asserted: the figures are for reading, on a machine that may be busy.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use toil_proto::v1::journal_entry::Kind;
use toil_tests::bench::{dispatch, journal, percentile, ts_ms};
use toil_tests::procfs;

#[derive(Parser)]
#[command(about = "Benchmark N trivial jobs through the local batch system")]
struct Args {
    /// Trivial jobs in the throughput run.
    #[arg(long, default_value_t = 10_000)]
    jobs: u64,
    /// Jobs in the chain run (0 to skip).
    #[arg(long, default_value_t = 200)]
    chain: u64,
    /// Cores each trivial job asks for (the leader never oversubscribes, so
    /// this sets how many run at once: all cores / this).
    #[arg(long, default_value = "0.05")]
    cores_per_job: String,
    /// Directory holding toil-leader and toil-agent (default: next to this
    /// program).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Keep the scratch directory.
    #[arg(long)]
    keep: bool,
}

struct Run {
    wall: Duration,
    peak_rss_kb: u64,
    /// The leader's own CPU time.
    cpu: Duration,
    /// CPU time of the processes the leader waited for (agents, and the
    /// jobs they waited for).
    children_cpu: Duration,
    store: PathBuf,
}

/// Runs the leader on `workflow`, with `TOIL_REUSE_AGENTS` set to `reuse`
/// (or unset), and samples its memory and CPU.
fn run_leader(
    bins: &Path,
    dir: &Path,
    workflow: &Path,
    reuse: Option<bool>,
) -> anyhow::Result<Run> {
    let store = dir.join(format!(
        "{}-{}.jobstore",
        workflow.file_stem().unwrap_or_default().to_string_lossy(),
        reuse.map_or("default", |r| if r { "reuse" } else { "noreuse" })
    ));
    let mut cmd = Command::new(bins.join("toil-leader"));
    cmd.arg("run")
        .arg(workflow)
        .args(["--clean", "never", "--realTimeLogging=false"])
        .arg("--jobStore")
        .arg(&store)
        .arg("--workDir")
        .arg(dir.join("work"))
        .arg("--agentBinary")
        .arg(bins.join("toil-agent"))
        .env_remove("TOIL_REUSE_AGENTS")
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(r) = reuse {
        cmd.env("TOIL_REUSE_AGENTS", r.to_string());
    }
    let t0 = Instant::now();
    let mut child = cmd.spawn().context("starting toil-leader")?;
    let pid = child.id();
    let ticks = procfs::ticks_per_second();
    let mut peak = 0u64;
    // Stderr is read on a thread so a chatty leader never blocks on it.
    let mut stderr = child.stderr.take().context("no stderr pipe")?;
    let err_reader = std::thread::spawn(move || {
        let mut err = String::new();
        use std::io::Read;
        let _ = stderr.read_to_string(&mut err);
        err
    });
    loop {
        peak = peak.max(procfs::vm_hwm_kb(pid).unwrap_or(0));
        // Without reaping, so the exited leader's CPU times can still be
        // read from /proc.
        match procfs::exited_unreaped(pid) {
            Ok(false) => {}
            Ok(true) => break,
            Err(e) => bail!("waiting for the leader: {e}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let wall = t0.elapsed();
    let (own, children) = procfs::cpu_ticks(pid).unwrap_or((0, 0));
    let status = child.wait()?;
    let err = err_reader.join().unwrap_or_default();
    if !status.success() {
        bail!("the leader failed ({status}):\n{err}");
    }
    Ok(Run {
        wall,
        peak_rss_kb: peak,
        cpu: Duration::from_millis(own * 1000 / ticks),
        children_cpu: Duration::from_millis(children * 1000 / ticks),
        store,
    })
}

fn count_files(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                count_files(&e.path())
            } else {
                1
            }
        })
        .sum()
}

/// CPU time of the jobs' own processes, as their agents measured it.
fn jobs_cpu(entries: &[toil_proto::v1::JournalEntry]) -> Duration {
    entries
        .iter()
        .filter_map(|e| match &e.kind {
            Some(Kind::End(end)) => end.result.as_ref()?.usage.as_ref()?.cpu_time,
            _ => None,
        })
        .filter_map(|d| Duration::try_from(d).ok())
        .sum()
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bins = toil_tests::harness::bins_for_program(
        args.bin_dir.as_deref(),
        &["toil-leader", "toil-agent"],
    )?;
    let dir = tempfile::Builder::new().prefix("bench-local").tempdir()?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "local batch system benchmark ({} build, {cores} cores, binaries in {})",
        if bins.ends_with("release") {
            "release"
        } else {
            "debug"
        },
        bins.display()
    );

    // --- throughput ------------------------------------------------------
    let wf = dir.path().join("trivial.yaml");
    std::fs::write(
        &wf,
        format!(
            "name: trivial\ndefaults: {{cores: {}, memory: 16Mi, disk: 1Mi}}\njobs:\n  t:\n    scatter: {{i: {{range: {}}}}}\n    command: \"true\"\n",
            args.cores_per_job, args.jobs
        ),
    )?;
    let n = args.jobs as f64;
    for (label, reuse) in [
        ("default flags", None),
        ("--reuseAgents", Some(true)),
        ("--reuseAgents=false", Some(false)),
    ] {
        let r = run_leader(&bins, dir.path(), &wf, reuse)?;
        let (entries, journal_records, snapshots) = journal(&r.store)?;
        let mut d = dispatch(&entries);
        let results = count_files(&r.store.join("results"));
        let logs = count_files(&r.store.join("logs"));
        let shells = jobs_cpu(&entries);
        let per_job = |t: Duration| t.as_secs_f64() * 1000.0 / n;
        println!(
            "{} trivial jobs (command \"true\", {} cores each), {label}: {:.1} s, {:.0} jobs/s",
            args.jobs,
            args.cores_per_job,
            r.wall.as_secs_f64(),
            n / r.wall.as_secs_f64()
        );
        println!(
            "  CPU per job: leader {:.3} ms, agents {:.3} ms, shells {:.3} ms (total {:.2} s on {cores} cores)",
            per_job(r.cpu),
            per_job(r.children_cpu.saturating_sub(shells)),
            per_job(shells),
            (r.cpu + r.children_cpu).as_secs_f64(),
        );
        println!(
            "  leader: peak RSS {:.1} MB; dispatch (launch decision -> command start): p50 {:.1} ms, p99 {:.1} ms",
            r.peak_rss_kb as f64 / 1024.0,
            percentile(&mut d, 0.5),
            percentile(&mut d, 0.99)
        );
        println!(
            "  job-store writes: {:.3} per job ({journal_records} journal records, {snapshots} snapshots, {results} results, {logs} log segments)",
            (journal_records + snapshots + results + logs) as f64 / n
        );
        if args.jobs >= 50_000 {
            // One run is enough for the memory figure of a big workflow.
            break;
        }
    }

    // --- chain -----------------------------------------------------------
    if args.chain > 1 {
        let wf = dir.path().join("chain.yaml");
        let mut text =
            String::from("name: chain\ndefaults: {cores: 0.1, memory: 16Mi, disk: 1Mi}\njobs:\n");
        for i in 0..args.chain {
            text.push_str(&format!("  c{i}:\n    command: [\"true\"]\n"));
            if i > 0 {
                text.push_str(&format!("    after: [c{}]\n", i - 1));
            }
        }
        std::fs::write(&wf, text)?;
        let r = run_leader(&bins, dir.path(), &wf, None)?;
        let (entries, _, _) = journal(&r.store)?;
        // Ready = when the leader recorded the predecessor's end.
        let mut ended = std::collections::HashMap::new();
        let mut started = std::collections::HashMap::new();
        for e in &entries {
            if let Some(Kind::End(end)) = &e.kind {
                if let Some(t) = ts_ms(&e.time) {
                    ended.insert(end.job_id.clone(), t);
                }
                if let Some(s) = end.result.as_ref().and_then(|r| ts_ms(&r.started_at)) {
                    started.insert(end.job_id.clone(), s);
                }
            }
        }
        let mut lat: Vec<f64> = (1..args.chain)
            .filter_map(|i| {
                let ready = ended.get(&format!("c{}", i - 1))?;
                let run = started.get(&format!("c{i}"))?;
                Some(run - ready)
            })
            .collect();
        println!(
            "chain of {} jobs (default flags): {:.1} s; ready -> running p50 {:.1} ms, p99 {:.1} ms",
            args.chain,
            r.wall.as_secs_f64(),
            percentile(&mut lat, 0.5),
            percentile(&mut lat, 0.99)
        );
    }
    println!(
        "baseline: Toil 9.6's single-machine batch system runs about 3.3 trivial jobs/s on this kind of machine (shared/testing.md)"
    );
    if args.keep {
        let kept = dir.keep();
        println!("scratch kept in {}", kept.display());
    }
    Ok(())
}
