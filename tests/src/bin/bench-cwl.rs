//! `bench-cwl`: CWL workflows on `toil-cwl-runner` beside cwltool, the
//! language's reference runner, on the same machine and inputs.
//!
//! ```text
//! scripts/setup-bench-cwl.sh            # once: .venv-bench with cwltool and cwltest
//! cargo build --release --bins
//! target/release/bench-cwl              # 1,000-way scatter and gather
//! target/release/bench-cwl --width 200 --suite   # also the whole conformance suite
//! ```
//!
//! 1. **Scatter and gather.** A workflow scatters a trivial tool (`echo`)
//!    over `--width` integers and gathers the outputs with `cat`: width + 1
//!    tool runs. It prints wall time, tool runs per second and the runner's
//!    peak RSS (`VmHWM` of the runner process, sampled every 10 ms) for
//!    `toil-cwl-runner` (local batch system, file job store, the default
//!    flags) and for `cwltool --parallel --no-container`, and checks that both
//!    gathered files hold the same lines.
//! 2. **The conformance suite** (`--suite`): `cwltest -j J` over the whole
//!    CWL v1.2 suite with each runner (`--no-container --relax-path-checks`),
//!    printing wall time and passes side by side.
//!
//! Nothing is asserted about speed; compare rows of one run on a quiet
//! machine.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use toil_tests::harness;
use toil_tests::local::PeakSampler;

#[derive(Parser)]
#[command(
    about = "CWL workflows on toil-cwl-runner beside cwltool: scatter/gather and the conformance suite"
)]
struct Args {
    /// Scatter width (tool runs = width + 1).
    #[arg(long, default_value_t = 1000)]
    width: u32,
    /// Also run the whole conformance suite with both runners.
    #[arg(long)]
    suite: bool,
    /// Parallel tests for `--suite` (cwltest -j).
    #[arg(short = 'j', default_value_t = 2)]
    jobs: u32,
    /// Directory of the toil binaries (default: this program's own).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// The venv holding cwltool and cwltest.
    #[arg(long, default_value = ".venv-bench")]
    venv: PathBuf,
    /// The CWL v1.2 suite (default: $CWL_SPEC_DIR, else ../shared/cwl-v1.2).
    #[arg(long)]
    spec: Option<PathBuf>,
}

const WORKFLOW: &str = r#"cwlVersion: v1.2
class: Workflow
requirements:
  ScatterFeatureRequirement: {}
inputs:
  xs: int[]
outputs:
  gathered:
    type: File
    outputSource: gather/out
steps:
  emit:
    run:
      class: CommandLineTool
      baseCommand: echo
      inputs:
        x: {type: int, inputBinding: {position: 1}}
      outputs:
        o: stdout
      stdout: line.txt
    scatter: x
    in: {x: xs}
    out: [o]
  gather:
    run:
      class: CommandLineTool
      baseCommand: cat
      inputs:
        fs: {type: "File[]", inputBinding: {position: 1}}
      outputs:
        out: stdout
      stdout: all.txt
    in: {fs: emit/o}
    out: [out]
"#;

struct Run {
    wall: Duration,
    peak_kb: u64,
    gathered: Vec<String>,
}

fn run_one(mut cmd: Command, out_dir: &Path) -> anyhow::Result<Run> {
    std::fs::create_dir_all(out_dir)?;
    let start = Instant::now();
    let mut child = cmd
        .current_dir(out_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    let sampler = PeakSampler::start(child.id(), Duration::from_millis(10));
    let mut stdout = String::new();
    let mut stderr = String::new();
    {
        use std::io::Read;
        let mut so = child.stdout.take().context("no stdout")?;
        let mut se = child.stderr.take().context("no stderr")?;
        let t = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = se.read_to_string(&mut s);
            s
        });
        so.read_to_string(&mut stdout)?;
        stderr.push_str(&t.join().unwrap_or_default());
    }
    let status = child.wait()?;
    let wall = start.elapsed();
    let peaks = sampler.stop();
    if !status.success() {
        let tail: Vec<&str> = stderr.lines().rev().take(20).collect();
        bail!(
            "{cmd:?} failed with {status}; last lines of its stderr:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    let out: serde_json::Value = serde_json::from_str(&stdout)
        .with_context(|| format!("the runner's stdout is not the output object: {stdout:?}"))?;
    let path = out["gathered"]["path"]
        .as_str()
        .or_else(|| {
            out["gathered"]["location"]
                .as_str()
                .and_then(|l| l.strip_prefix("file://"))
        })
        .context("no gathered file in the output object")?;
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    Ok(Run {
        wall,
        peak_kb: peaks.root_kb,
        gathered: text.lines().map(str::to_string).collect(),
    })
}

fn spec_dir(explicit: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let candidates = explicit
        .into_iter()
        .chain(std::env::var_os("CWL_SPEC_DIR").map(PathBuf::from))
        .chain([harness::repo_root().join("../shared/cwl-v1.2")]);
    for c in candidates {
        if c.join("conformance_tests.yaml").exists() {
            return Ok(c);
        }
    }
    bail!("the CWL v1.2 conformance suite was not found: pass --spec DIR or set CWL_SPEC_DIR")
}

/// Runs cwltest with `tool`; returns (wall time, passed, total).
fn suite(
    venv: &Path,
    spec: &Path,
    tool: &Path,
    jobs: u32,
    scratch: &Path,
) -> anyhow::Result<(Duration, usize, usize)> {
    let junit = scratch.join(format!(
        "{}.xml",
        tool.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("runner")
    ));
    let start = Instant::now();
    let status = Command::new(venv.join("bin/cwltest"))
        .arg("--test")
        .arg(spec.join("conformance_tests.yaml"))
        .arg("--tool")
        .arg(tool)
        .args(["-j", &jobs.to_string(), "--timeout", "300", "--junit-xml"])
        .arg(&junit)
        .args(["--", "--no-container", "--relax-path-checks"])
        .env("TMPDIR", scratch)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("running cwltest")?;
    let wall = start.elapsed();
    let _ = status; // cwltest fails whenever one test fails; the counts tell.
    let xml =
        std::fs::read_to_string(&junit).with_context(|| format!("reading {}", junit.display()))?;
    let total = xml.matches("<testcase").count();
    let bad = xml.matches("<failure").count()
        + xml.matches("<skipped").count()
        + xml.matches("<error").count();
    Ok((wall, total.saturating_sub(bad), total))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bins =
        harness::bins_for_program(args.bin_dir.as_deref(), &["toil-cwl-runner", "toil-agent"])?;
    let cwltool = harness::repo_root().join(&args.venv).join("bin/cwltool");
    if !cwltool.exists() {
        bail!(
            "{} not found: run scripts/setup-bench-cwl.sh first",
            cwltool.display()
        );
    }
    let scratch = harness::scratch("bench-cwl");
    let dir = scratch.path();
    std::fs::write(dir.join("wf.cwl"), WORKFLOW)?;
    let xs: Vec<u32> = (0..args.width).collect();
    std::fs::write(
        dir.join("job.json"),
        serde_json::json!({ "xs": xs }).to_string(),
    )?;

    println!(
        "scatter of a trivial tool over {} inputs, then a gather: {} tool runs",
        args.width,
        args.width + 1
    );
    let mut toil = Command::new(bins.join("toil-cwl-runner"));
    toil.arg("--jobStore")
        .arg(dir.join("js"))
        .arg("--outdir")
        .arg(dir.join("out-toil"))
        .arg(dir.join("wf.cwl"))
        .arg(dir.join("job.json"));
    let t = run_one(toil, &dir.join("run-toil"))?;
    let mut reference = Command::new(&cwltool);
    reference
        .args(["--parallel", "--no-container", "--quiet", "--outdir"])
        .arg(dir.join("out-cwltool"))
        .arg(dir.join("wf.cwl"))
        .arg(dir.join("job.json"));
    let c = run_one(reference, &dir.join("run-cwltool"))?;
    if t.gathered != c.gathered || t.gathered.len() != args.width as usize {
        bail!(
            "the runners disagree: toil gathered {} lines, cwltool {}",
            t.gathered.len(),
            c.gathered.len()
        );
    }
    let runs = f64::from(args.width + 1);
    for (name, r) in [("toil-cwl-runner", &t), ("cwltool --parallel", &c)] {
        println!(
            "  {name:<20} {:>7.1} s  {:>7.1} tool runs/s  peak RSS {:>6.1} MB",
            r.wall.as_secs_f64(),
            runs / r.wall.as_secs_f64(),
            r.peak_kb as f64 / 1024.0
        );
    }
    println!(
        "  toil-cwl-runner is {:.1}x cwltool's speed",
        c.wall.as_secs_f64() / t.wall.as_secs_f64()
    );

    if args.suite {
        let spec = spec_dir(args.spec)?;
        let venv = harness::repo_root().join(&args.venv);
        println!(
            "\nCWL v1.2 conformance suite, cwltest -j {}, --no-container --relax-path-checks",
            args.jobs
        );
        let (tw, tp, tn) = suite(&venv, &spec, &bins.join("toil-cwl-runner"), args.jobs, dir)?;
        let (cw, cp, cn) = suite(&venv, &spec, &cwltool, args.jobs, dir)?;
        println!(
            "  toil-cwl-runner {:>7.1} s  {tp}/{tn} passed",
            tw.as_secs_f64()
        );
        println!(
            "  cwltool         {:>7.1} s  {cp}/{cn} passed",
            cw.as_secs_f64()
        );
        println!(
            "  toil-cwl-runner is {:.1}x cwltool's speed",
            cw.as_secs_f64() / tw.as_secs_f64()
        );
    }
    Ok(())
}
