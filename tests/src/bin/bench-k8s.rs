//! Benchmark of the Kubernetes batch system on the API emulator: N trivial
//! jobs through the real leader, its agents in emulated pods.
//!
//! ```text
//! cargo build --release --bins
//! target/release/bench-k8s                      # N = 1,000, with and without pod reuse
//! target/release/bench-k8s --jobs 5000 --nodes 4
//! target/release/bench-k8s --tunnel             # direct path vs the API-server tunnel
//! ```
//!
//! With `--tunnel` it compares instead the two ways agents reach a leader
//! outside the cluster: pods on the host's network (the relay's probe
//! reaches the leader, agents dial it directly) against pods in an isolated
//! network (agents go through the relay pod and the port-forward tunnels).
//! Both runs use `--realTimeLogging`, and each job prints its wall clock
//! (`date +%s%N`); besides the figures below it prints dispatch latency
//! p50/p99 (the leader's launch decision to the command's start, from the
//! run's journal) and live-log latency p50/p99 (a job's line printed to
//! the leader writing it to its terminal, timed as the line arrives).
//!
//! For each run (one Job per job, then `--reuseAgents`) it prints:
//! - API requests per job by verb and resource, from the emulator's own
//!   counters, leaving out the one shared pod watch (its re-watches are
//!   shown apart); the target is at most 3 per job whatever N is;
//! - throughput: jobs per second from leader start to exit;
//! - the leader's CPU seconds per 1,000 jobs (utime + stime from `wait4`)
//!   and its peak RSS.
//!
//! The leader runs as the `toil-leader` service account under
//! deploy/rbac.yaml, with its `file:` job store on a ReadWriteMany claim,
//! as in the tests. Nothing is asserted: the figures are for reading, on a
//! machine that may be busy (the emulator's pods run on this machine too).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{Api, PostParams};
use serde_json::json;
use toil_tests::bench::{dispatch, journal, percentile};
use toil_tests::emulator::{
    Emulator, EmulatorConfig, Identity, NodeConfig, PodNetworkMode, RequestCounts,
};

const IMAGE: &str = "toil-appliance:bench";
const NS: &str = "toil";

#[derive(Parser)]
#[command(
    about = "Benchmark N trivial jobs through the Kubernetes batch system on the API emulator",
    long_about = "Benchmark N trivial jobs through the Kubernetes batch system on the API emulator.\n\n\
Runs the real toil-leader (as the toil-leader service account under deploy/rbac.yaml) against \
an emulated cluster whose pods run toil-agent from --bin-dir, once with one Job per job and once \
with --reuseAgents, and prints API requests per job by verb (the shared pod watch apart), jobs/s, \
and the leader's CPU seconds per 1,000 jobs. Nothing is asserted."
)]
struct Args {
    /// Trivial jobs per run.
    #[arg(long, default_value_t = 1000)]
    jobs: u64,
    /// Emulated nodes.
    #[arg(long, default_value_t = 2)]
    nodes: u32,
    /// CPUs per node; with 0.1 core per job, 10 pods per CPU run at once
    /// (at most 110 per node).
    #[arg(long, default_value_t = 4)]
    node_cpus: u32,
    /// The leader's --kubernetesMaxCreatesPerSecond.
    #[arg(long, default_value_t = 100.0)]
    creates_per_second: f64,
    /// Directory holding toil-leader and toil-agent (default: next to this
    /// program).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Keep the scratch directory (job stores, leader logs).
    #[arg(long)]
    keep: bool,
    /// Compare the direct path (pods on the host network) with the tunnel
    /// over the API server (pods in an isolated network), one Job per job.
    #[arg(long)]
    tunnel: bool,
    /// With --tunnel: measure only this path and write its figures to
    /// --summary (each path runs in a process of its own, so neither pays
    /// for the other's memory when the emulator forks its pods).
    #[arg(long, hide = true, requires = "summary")]
    one_path: Option<String>,
    /// Where --one-path writes `wall_s peak_rss_kb cpu_s`.
    #[arg(long, hide = true)]
    summary: Option<PathBuf>,
}

struct Run {
    wall: Duration,
    cpu: Duration,
    peak_rss_kb: u64,
    counts: RequestCounts,
    /// Live-log latencies in ms: a job's stamped line (its wall clock when
    /// printed) to the moment the leader wrote it to its terminal.
    log_latencies: Vec<f64>,
    /// The emulator runtime's scheduling lag samples (ms), over the run.
    emulator_lag_ms: Vec<f64>,
    /// The whole machine's busy CPU time over the run, and the busy share.
    machine_cpu: (Duration, f64),
}

/// The prefix of the line a stamped job prints: `STAMP<ns since the epoch>`.
const STAMP: &str = "toil-bench-stamp=";

/// Copies the leader's output to `log` line by line, noting for each
/// stamped job line how long it took to arrive.
fn follow_output(
    from: impl std::io::Read + Send + 'static,
    log: std::fs::File,
) -> std::thread::JoinHandle<Vec<f64>> {
    std::thread::spawn(move || {
        use std::io::{BufRead, Write};
        let mut log = std::io::BufWriter::new(log);
        let mut lat = Vec::new();
        let mut lines = std::io::BufReader::new(from);
        let mut line = Vec::new();
        while lines.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos() as f64;
            let text = String::from_utf8_lossy(&line);
            if let Some(at) = text.find(STAMP) {
                let digits: String = text[at + STAMP.len()..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                if let Ok(ns) = digits.parse::<f64>() {
                    lat.push((now - ns) / 1e6);
                }
            }
            let _ = log.write_all(&line);
            line.clear();
        }
        let _ = log.flush();
        lat
    })
}

/// A ReadWriteMany claim over `dir` (an NFS export on a real cluster).
async fn make_claim(emu: &Emulator, dir: &Path) -> anyhow::Result<()> {
    let client = emu.client(&Identity::Admin).await?;
    let pv: PersistentVolume = serde_json::from_value(json!({
        "metadata": {"name": "bench-pv"},
        "spec": {"capacity": {"storage": "100Gi"}, "accessModes": ["ReadWriteMany"],
            "nfs": {"server": "nfs.example.org", "path": dir}}
    }))?;
    Api::<PersistentVolume>::all(client.clone())
        .create(&PostParams::default(), &pv)
        .await?;
    let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "bench"},
        "spec": {"accessModes": ["ReadWriteMany"], "volumeName": "bench-pv",
            "resources": {"requests": {"storage": "100Gi"}}}
    }))?;
    Api::<PersistentVolumeClaim>::namespaced(client, NS)
        .create(&PostParams::default(), &pvc)
        .await?;
    Ok(())
}

/// Runs the leader to the end; CPU time from `wait4`'s rusage.
fn run_leader(
    args: &Args,
    bins: &Path,
    emu: &Emulator,
    kubeconfig: &Path,
    dir: &Path,
    name: &str,
    extra: &[&str],
) -> anyhow::Result<Run> {
    emu.reset_request_counts();
    let _ = emu.scheduling_lag_ms();
    let machine0 = toil_tests::procfs::machine_cpu_ticks().unwrap_or_default();
    let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
    let t0 = Instant::now();
    let mut child = Command::new(bins.join("toil-leader"))
        .arg("run")
        .arg(dir.join("trivial.yaml"))
        .args(["--batchSystem", "kubernetes", "--clean", "never"])
        .arg(format!("--realTimeLogging={}", args.tunnel))
        .arg("--jobStore")
        .arg(dir.join(format!("{name}.jobstore")))
        .arg("--kubernetesJobStoreClaim")
        .arg(format!("bench:{}", dir.display()))
        .arg("--kubernetesMaxCreatesPerSecond")
        .arg(args.creates_per_second.to_string())
        .args(extra)
        .current_dir(dir)
        .env("KUBECONFIG", kubeconfig)
        .env("TOIL_APPLIANCE_SELF", IMAGE)
        .env("TOIL_KUBERNETES_OWNER", "bench")
        .env_remove("TOIL_KUBERNETES_HOST_PATH")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting toil-leader")?;
    let pid = child.id() as i32;
    let log_copy = log.try_clone()?;
    let followers = [
        child.stdout.take().map(|o| follow_output(o, log_copy)),
        child.stderr.take().map(|e| follow_output(e, log)),
    ];
    let mut peak = 0;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        peak = peak.max(toil_tests::procfs::vm_hwm_kb(pid as u32).unwrap_or(0));
        // SAFETY: `pid` is our own child, not yet reaped (std's Child is
        // never waited on); status and usage are valid out-pointers.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if r == pid {
            break;
        }
        if r < 0 {
            bail!("wait4: {}", std::io::Error::last_os_error());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let wall = t0.elapsed();
    let counts = emu.request_counts();
    let emulator_lag_ms = emu.scheduling_lag_ms();
    let machine1 = toil_tests::procfs::machine_cpu_ticks().unwrap_or_default();
    let machine_cpu = (
        Duration::from_secs_f64(
            machine1.0.saturating_sub(machine0.0) as f64
                / toil_tests::procfs::ticks_per_second() as f64,
        ),
        machine1.0.saturating_sub(machine0.0) as f64
            / machine1.1.saturating_sub(machine0.1).max(1) as f64,
    );
    let log_latencies = followers
        .into_iter()
        .flatten()
        .flat_map(|f| f.join().unwrap_or_default())
        .collect();
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        let out = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
        let tail: Vec<&str> = out.lines().rev().take(30).collect();
        bail!(
            "the leader failed (wait status {status}); the end of its output:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000);
    Ok(Run {
        wall,
        cpu: tv(usage.ru_utime) + tv(usage.ru_stime),
        peak_rss_kb: peak,
        counts,
        log_latencies,
        emulator_lag_ms,
        machine_cpu,
    })
}

fn report(what: &str, n: u64, r: &Run) {
    let nf = n as f64;
    println!(
        "\n{what}: {n} jobs in {:.1} s = {:.1} jobs/s",
        r.wall.as_secs_f64(),
        nf / r.wall.as_secs_f64()
    );
    println!(
        "  leader: {:.2} CPU s ({:.2} CPU s per 1,000 jobs), peak RSS {:.1} MB",
        r.cpu.as_secs_f64(),
        r.cpu.as_secs_f64() * 1000.0 / nf,
        r.peak_rss_kb as f64 / 1024.0
    );
    println!("  API requests besides the pod watch:");
    let mut total = 0u64;
    for (verb, by_res) in &r.counts.by_verb {
        if verb == "watch" {
            continue;
        }
        for (res, c) in by_res {
            total += c;
            println!(
                "    {verb:<17} {res:<24} {c:>7}  {:>7.3} per job",
                *c as f64 / nf
            );
        }
    }
    println!(
        "    {:<42} {total:>7}  {:>7.3} per job",
        "all",
        total as f64 / nf
    );
    println!(
        "  the shared pod watch: {} watch request(s) (the watcher re-watches every few minutes and after errors)",
        r.counts.verb_total("watch")
    );
    println!(
        "  the whole machine: {:.0}% busy, {:.1} CPU ms per job (leader, emulator, agents, relay and anything else running)",
        r.machine_cpu.1 * 100.0,
        r.machine_cpu.0.as_secs_f64() * 1000.0 / nf
    );
    let mut lag = r.emulator_lag_ms.clone();
    if !lag.is_empty() {
        println!(
            "  test bed: the emulator's runtime woke a 5 ms timer late by p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} samples; a saturated machine shows here)",
            percentile(&mut lag, 0.5),
            percentile(&mut lag, 0.99),
            percentile(&mut lag, 1.0),
            r.emulator_lag_ms.len()
        );
    }
}

/// An emulator with the claim and the workflow (`args.jobs` jobs running
/// `command`, a YAML flow list), its pods in `network`.
async fn setup(
    args: &Args,
    bins: &Path,
    network: PodNetworkMode,
    command: &str,
) -> anyhow::Result<(Emulator, PathBuf, tempfile::TempDir)> {
    let rbac = toil_tests::harness::repo_root().join("deploy/rbac.yaml");
    let nodes = (1..=args.nodes)
        .map(|i| {
            format!("node-{i}:cpu={},memory=256Gi,pods=110", args.node_cpus)
                .parse::<NodeConfig>()
                .map_err(anyhow::Error::msg)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let cfg = EmulatorConfig::default()
        .with_nodes(nodes)
        .with_image(IMAGE, Some(bins.to_path_buf()))
        .with_rbac_file(rbac)
        .with_namespace(NS)
        .with_pod_network(network);
    let emu = Emulator::start(cfg)?;
    let kubeconfig = emu.kubeconfig_for(&Identity::service_account(NS, "toil-leader"))?;
    let dir = tempfile::Builder::new().prefix("bench-k8s").tempdir()?;
    make_claim(&emu, dir.path()).await?;
    std::fs::write(
        dir.path().join("trivial.yaml"),
        format!(
            "name: trivial\ndefaults: {{cores: 0.1, memory: 128Mi, disk: 10Mi}}\njobs:\n  t:\n    scatter: {{i: {{range: {}}}}}\n    command: {command}\n",
            args.jobs
        ),
    )?;
    Ok((emu, kubeconfig, dir))
}

/// `--tunnel`: the direct path against the tunnel, each measured by a
/// process of its own (`--one-path`).
async fn compare_tunnel() -> anyhow::Result<()> {
    let scratch = tempfile::tempdir()?;
    let mut runs = Vec::new();
    for path in ["direct", "tunnel"] {
        let summary = scratch.path().join(path);
        let status = Command::new(std::env::current_exe()?)
            .args(std::env::args_os().skip(1))
            .arg("--one-path")
            .arg(path)
            .arg("--summary")
            .arg(&summary)
            .status()
            .context("running the benchmark of one path")?;
        if !status.success() {
            bail!("the {path} run failed ({status})");
        }
        let text = std::fs::read_to_string(&summary)?;
        let v: Vec<f64> = text
            .split_whitespace()
            .filter_map(|f| f.parse().ok())
            .collect();
        if v.len() != 3 {
            bail!("the {path} run wrote no figures to {}", summary.display());
        }
        runs.push((v[0], v[1], v[2]));
    }
    println!(
        "\ntunnel / direct: {:.2}x the throughput, {:.2}x the leader's peak RSS, {:.2}x its CPU",
        runs[0].0 / runs[1].0,
        runs[1].1 / runs[0].1.max(1.0),
        runs[1].2 / runs[0].2.max(1e-9)
    );
    Ok(())
}

/// `--tunnel --one-path PATH`: one path's run.
async fn one_path(args: &Args, bins: &Path, path: &str, summary: &Path) -> anyhow::Result<()> {
    let (what, network) = match path {
        "direct" => ("direct (pods on the host network)", PodNetworkMode::Host),
        "tunnel" => (
            "tunnel over the API server (pods in an isolated network)",
            PodNetworkMode::Isolated,
        ),
        other => bail!("--one-path {other}: give direct or tunnel"),
    };
    {
        let stamped = format!("[sh, -c, 'echo {STAMP}$(date +%s%N)']");
        let (emu, kubeconfig, dir) = setup(args, bins, network, &stamped).await?;
        let r = run_leader(args, bins, &emu, &kubeconfig, dir.path(), "trivial", &[])?;
        let log = std::fs::read_to_string(dir.path().join("trivial.log")).unwrap_or_default();
        if let Some(line) = log.lines().find(|l| l.contains("agents reach the leader")) {
            println!("\n{line}");
        }
        report(what, args.jobs, &r);
        let (entries, _, _) = journal(&dir.path().join("trivial.jobstore"))?;
        let mut d = dispatch(&entries);
        let mut l = r.log_latencies.clone();
        println!(
            "  dispatch (launch decision -> command start, {} attempts): p50 {:.1} ms, p99 {:.1} ms",
            d.len(),
            percentile(&mut d, 0.5),
            percentile(&mut d, 0.99)
        );
        println!(
            "  live log (a job's line printed -> on the leader's terminal, {} lines): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            l.len(),
            percentile(&mut l, 0.5),
            percentile(&mut l, 0.99),
            percentile(&mut l, 1.0)
        );
        if args.keep {
            println!("scratch kept in {}", dir.keep().display());
        }
        emu.shutdown();
        std::fs::write(
            summary,
            format!(
                "{} {} {}",
                r.wall.as_secs_f64(),
                r.peak_rss_kb,
                r.cpu.as_secs_f64()
            ),
        )?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bins = toil_tests::harness::bins_for_program(
        args.bin_dir.as_deref(),
        &["toil-leader", "toil-agent"],
    )?;
    if args.tunnel {
        return match (&args.one_path, &args.summary) {
            (Some(path), Some(summary)) => one_path(&args, &bins, path, summary).await,
            _ => compare_tunnel().await,
        };
    }
    let (emu, kubeconfig, dir) = setup(&args, &bins, PodNetworkMode::Host, "[\"true\"]").await?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "Kubernetes batch system on the API emulator: {} jobs, {} node(s) x {} CPUs, {} creates/s allowed ({} build, {cores} cores on this machine)",
        args.jobs,
        args.nodes,
        args.node_cpus,
        args.creates_per_second,
        if bins.ends_with("release") {
            "release"
        } else {
            "debug"
        },
    );

    let plain = run_leader(
        &args,
        &bins,
        &emu,
        &kubeconfig,
        dir.path(),
        "one-job-per-pod",
        &[],
    )?;
    report("one Job per job", args.jobs, &plain);
    let reuse = run_leader(
        &args,
        &bins,
        &emu,
        &kubeconfig,
        dir.path(),
        "reuse",
        &["--reuseAgents"],
    )?;
    report("pod reuse (--reuseAgents)", args.jobs, &reuse);
    println!(
        "\npod reuse: {:.1}x the throughput, {} Jobs created instead of {}",
        plain.wall.as_secs_f64() / reuse.wall.as_secs_f64(),
        reuse.counts.get("create", "jobs"),
        plain.counts.get("create", "jobs")
    );
    println!(
        "baseline: Toil lists every job about once a second (so its requests per job grow with the run's length); Toil 9.6's single-machine batch system runs about 3.3 trivial jobs/s here (shared/testing.md)"
    );
    if args.keep {
        let kept = dir.keep();
        println!("scratch kept in {}", kept.display());
    }
    emu.shutdown();
    Ok(())
}
