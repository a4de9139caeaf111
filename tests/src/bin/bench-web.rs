//! Benchmark of the leader's web view: what watching a workflow costs the
//! leader, and how fast the page opens on a big one.
//!
//! ```text
//! cargo build --release --bins
//! target/release/bench-web                     # 10,000 jobs, 100,000 for the page load
//! target/release/bench-web --jobs 2000 --page-jobs 20000 --repeat 1
//! ```
//!
//! 1. N trivial jobs (`command: "true"`) run three ways, alternating, each
//!    `--repeat` times: web view off (`--webUI off`); on with one
//!    server-sent-events client following `/api/events` (what an open page
//!    costs in events, without a browser's extra requests); on with
//!    headless Chromium showing the jobs table (events plus the page's
//!    re-reads of its table). For each: the leader's own CPU time (read
//!    from the exited leader before it is reaped), its peak RSS (VmHWM) and
//!    wall time. The browser's own CPU is not the leader's and is not
//!    counted.
//! 2. A workflow of M jobs held waiting (a scatter after a gate job) is
//!    opened in headless Chromium: time from navigation to the first
//!    rendering of the jobs table, cold and warm, and the leader's time to
//!    answer one page of the table with and without a name filter (a
//!    filter scans every job's id).
//!
//! Nothing is asserted; the figures are for reading.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use toil_tests::browser::Browser;
use toil_tests::procfs;
use toil_tests::web::{EventFollower, WebUrl, request};

#[derive(Parser)]
#[command(about = "Benchmark the leader's web view: its CPU cost and the page load time")]
struct Args {
    /// Trivial jobs in each CPU run.
    #[arg(long, default_value_t = 10_000)]
    jobs: u64,
    /// Runs of each kind (alternated, to spread the machine's noise).
    #[arg(long, default_value_t = 2)]
    repeat: u32,
    /// Jobs in the page-load workflow (0 to skip).
    #[arg(long, default_value_t = 100_000)]
    page_jobs: u64,
    /// Directory holding toil-leader and toil-agent (default: next to this
    /// program).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq)]
enum Watch {
    Off,
    Events,
    Browser,
}

impl Watch {
    fn label(self) -> &'static str {
        match self {
            Watch::Off => "web view off",
            Watch::Events => "one SSE client on /api/events",
            Watch::Browser => "Chromium on the jobs table",
        }
    }
}

struct Run {
    wall: Duration,
    cpu: Duration,
    peak_rss_kb: u64,
    events: u64,
}

/// The web view's URL, once the leader has written it.
fn find_url(state: &Path) -> Option<WebUrl> {
    for d in std::fs::read_dir(state).ok()?.flatten() {
        if d.path().join("web-url").exists() {
            return Some(toil_tests::web::web_url(state, Duration::from_secs(5)));
        }
    }
    None
}

fn run(bins: &Path, dir: &Path, wf: &Path, watch: Watch, i: u32) -> anyhow::Result<Run> {
    let tag = format!("{}-{i}", watch as u8);
    let state = dir.join(format!("state-{tag}"));
    let mut cmd = Command::new(bins.join("toil-leader"));
    cmd.arg("run")
        .arg(wf)
        .args(["--clean", "always", "--realTimeLogging=false"])
        .arg("--jobStore")
        .arg(dir.join(format!("js-{tag}")))
        .arg("--workDir")
        .arg(dir.join("work"))
        .arg("--agentBinary")
        .arg(bins.join("toil-agent"))
        .arg("--webUI")
        .arg(if watch == Watch::Off {
            "off"
        } else {
            "127.0.0.1:0"
        })
        .env("TOIL_STATE_DIR", &state)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // The browser starts before the leader so its start-up is not timed.
    let mut browser = (watch == Watch::Browser).then(Browser::start);
    let mut follower: Option<EventFollower> = None;
    let t0 = Instant::now();
    let mut child = cmd.spawn().context("starting toil-leader")?;
    let pid = child.id();
    let mut peak = 0u64;
    let mut attached = watch == Watch::Off;
    loop {
        if !attached && let Some(url) = find_url(&state) {
            attached = true;
            match &mut browser {
                Some(b) => {
                    b.open(&url.url);
                }
                None => follower = Some(EventFollower::start(url.port, &url.token)),
            }
        }
        peak = peak.max(procfs::vm_hwm_kb(pid).unwrap_or(0));
        match procfs::exited_unreaped(pid) {
            Ok(false) => {}
            Ok(true) => break,
            Err(e) => bail!("waiting for the leader: {e}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let wall = t0.elapsed();
    let (own, _) = procfs::cpu_ticks(pid).unwrap_or((0, 0));
    let status = child.wait()?;
    if !status.success() {
        bail!("the leader failed ({status})");
    }
    let events = match (&follower, &mut browser) {
        (Some(f), _) => f.events(),
        (None, Some(b)) => b.eval("window.toilView.events").as_u64().unwrap_or(0),
        _ => 0,
    };
    Ok(Run {
        wall,
        cpu: Duration::from_millis(own * 1000 / procfs::ticks_per_second()),
        peak_rss_kb: peak,
        events,
    })
}

fn page_load(bins: &Path, dir: &Path, jobs: u64) -> anyhow::Result<()> {
    let gate = dir.join("gate");
    let wf = dir.join("held.yaml");
    std::fs::write(
        &wf,
        format!(
            "name: held\ndefaults: {{cores: 0.05, memory: 16Mi, disk: 1Mi}}\njobs:\n  gate:\n    command: \"while [ ! -e {} ]; do sleep 0.1; done\"\n  t:\n    after: [gate]\n    scatter: {{i: {{range: {jobs}}}}}\n    command: \"true\"\n",
            gate.display()
        ),
    )?;
    let state = dir.join("state-page");
    let mut child = Command::new(bins.join("toil-leader"))
        .arg("run")
        .arg(&wf)
        .args(["--clean", "always", "--realTimeLogging=false"])
        .arg("--jobStore")
        .arg(dir.join("js-page"))
        .arg("--workDir")
        .arg(dir.join("work"))
        .arg("--agentBinary")
        .arg(bins.join("toil-agent"))
        .env("TOIL_STATE_DIR", &state)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting toil-leader")?;
    let url = toil_tests::web::web_url(&state, Duration::from_secs(300));
    let auth = format!("Bearer {}", url.token);
    let time = |path: &str| {
        let t = Instant::now();
        let r = request(url.port, "GET", path, &[("Authorization", &auth)]);
        (t.elapsed(), r.status, r.body.len())
    };
    let (first, status, size) = time("/api/jobs?offset=0&limit=100");
    let (filtered, _, _) = time("/api/jobs?offset=0&limit=100&q=t%5B99");
    let (last_page, _, _) = time(&format!("/api/jobs?offset={}&limit=100", jobs));
    let (graph, _, _) = time("/api/graph");
    println!(
        "{} jobs held waiting: /api/jobs first page {:.1} ms ({status}, {size} bytes), last page {:.1} ms, name filter {:.1} ms; /api/graph {:.1} ms",
        jobs + 1,
        first.as_secs_f64() * 1e3,
        last_page.as_secs_f64() * 1e3,
        filtered.as_secs_f64() * 1e3,
        graph.as_secs_f64() * 1e3
    );
    let mut b = Browser::start();
    let mut loads = Vec::new();
    for _ in 0..3 {
        b.open(&url.url);
        let ms = b.wait(
            "the first table render",
            "window.toilView && window.toilView.firstTableMs",
            Duration::from_secs(120),
        );
        loads.push(ms.as_f64().unwrap_or(f64::NAN));
        b.open("about:blank");
    }
    println!(
        "page load at {} jobs (navigation to first table render, Chromium): cold {:.0} ms, then {:.0} ms and {:.0} ms",
        jobs + 1,
        loads[0],
        loads[1],
        loads[2]
    );
    drop(b);
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    );
    let _ = child.wait();
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bins = toil_tests::harness::bins_for_program(
        args.bin_dir.as_deref(),
        &["toil-leader", "toil-agent"],
    )?;
    let dir = tempfile::Builder::new().prefix("bench-web").tempdir()?;
    println!(
        "web view benchmark ({} build, binaries in {})",
        if bins.ends_with("release") {
            "release"
        } else {
            "debug"
        },
        bins.display()
    );
    if args.jobs > 0 {
        let wf = dir.path().join("trivial.yaml");
        std::fs::write(
            &wf,
            format!(
                "name: trivial\ndefaults: {{cores: 0.05, memory: 16Mi, disk: 1Mi}}\njobs:\n  t:\n    scatter: {{i: {{range: {}}}}}\n    command: \"true\"\n",
                args.jobs
            ),
        )?;
        let kinds = [Watch::Off, Watch::Events, Watch::Browser];
        let mut cpu = [0f64; 3];
        let mut least = [f64::MAX; 3];
        let mut rss = [0f64; 3];
        for i in 0..args.repeat {
            for (k, &w) in kinds.iter().enumerate() {
                let r = run(&bins, dir.path(), &wf, w, i)?;
                println!(
                    "{} trivial jobs, {}: {:.1} s, leader CPU {:.2} s, peak RSS {:.1} MB, {} events seen",
                    args.jobs,
                    w.label(),
                    r.wall.as_secs_f64(),
                    r.cpu.as_secs_f64(),
                    r.peak_rss_kb as f64 / 1024.0,
                    r.events
                );
                cpu[k] += r.cpu.as_secs_f64() / f64::from(args.repeat);
                least[k] = least[k].min(r.cpu.as_secs_f64());
                rss[k] = rss[k].max(r.peak_rss_kb as f64 / 1024.0);
            }
        }
        for k in 1..3 {
            println!(
                "{} vs off: leader CPU {:+.1}% by the means of {} runs ({:.2} s vs {:.2} s), {:+.1}% by the least ({:.2} s vs {:.2} s); peak RSS {:.1} vs {:.1} MB",
                kinds[k].label(),
                (cpu[k] / cpu[0] - 1.0) * 100.0,
                args.repeat,
                cpu[k],
                cpu[0],
                (least[k] / least[0] - 1.0) * 100.0,
                least[k],
                least[0],
                rss[k],
                rss[0]
            );
        }
    }
    if args.page_jobs > 0 {
        page_load(&bins, dir.path(), args.page_jobs)?;
    }
    Ok(())
}
