//! `bench-jobstore`: throughput, memory and request counts of the S3 job
//! store against moto, beside the plain `aws-sdk-s3` client moving the same
//! file in the same run.
//!
//! ```text
//! scripts/setup-test-env.sh                      # once: the moto venv
//! cargo run --release -p toil-tests --bin bench-jobstore -- --size-mib 1024
//! ```
//!
//! It starts its own `moto_server` on 127.0.0.1, writes a file of
//! pseudo-random bytes, then times, one after the other:
//! 1. `JobStore::put_file` (multipart upload, parts hashed as read);
//! 2. `JobStore::get_file` (one streamed GET, hashed as written);
//! 3. with `--ranged`: `JobStore::get_file` in ranged mode
//!    (`--ranged-concurrency` ranges at a time);
//! 4. the plain SDK: one streaming `PutObject` from the file;
//! 5. the plain SDK: one `GetObject` streamed into a file.
//!
//! Each step runs in a child process of its own (this program, re-executed
//! with a hidden `--step`), so its peak RSS (`VmHWM`) is that step's alone,
//! start-up included. For each step it prints seconds, MiB/s, peak RSS, and
//! the S3 requests sent. It checks that every copy has the source's SHA-256
//! but asserts nothing about speed: the figures depend on the machine and on
//! moto (a Python server), so compare rows of one run, not runs.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use aws_sdk_s3::primitives::ByteStream;
use clap::{Parser, ValueEnum};
use serde_json::{Value, json};
use toil_jobstore::s3::{RequestCounts, S3Options, TransferOptions};
use toil_jobstore::{JobStore, Locator};
use toil_tests::moto::{Moto, REGION, unique_name};
use toil_tests::{data, harness, procfs};
use tokio::io::AsyncWriteExt;

#[derive(Parser)]
#[command(
    about = "Benchmark the S3 job store against moto, beside the plain aws-sdk-s3 client",
    long_about = "Starts moto_server (from .venv-test, see scripts/setup-test-env.sh) on 127.0.0.1, \
writes a file of pseudo-random bytes, and reports seconds, MiB/s, peak RSS and S3 requests for: \
toil_jobstore put_file and get_file, and the plain aws-sdk-s3 client's single streaming PutObject \
and GetObject of the same file (optionally also a ranged get_file). Each step runs in its own \
child process so its peak RSS is its own. Prints figures; asserts nothing about speed."
)]
struct Args {
    /// Size of the file to move, in MiB.
    #[arg(long, default_value_t = 1024)]
    size_mib: u64,
    /// Job-store part size, in MiB (at least 5).
    #[arg(long, default_value_t = 8)]
    part_size_mib: u64,
    /// Parts uploaded at the same time by the job store.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Also time a ranged `get_file` (slow on moto, which reads the whole
    /// object for every range request).
    #[arg(long)]
    ranged: bool,
    /// Ranges downloaded at the same time in the ranged row.
    #[arg(long, default_value_t = 4)]
    ranged_concurrency: usize,
    /// Directory for the files (default: a scratch directory under target/).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Internal: run one step in this process and print its figures as JSON.
    #[arg(long, value_enum, hide = true)]
    step: Option<Step>,
    /// Internal: the job store's name.
    #[arg(long, hide = true)]
    name: Option<String>,
    /// Internal: the source file.
    #[arg(long, hide = true)]
    src: Option<PathBuf>,
    /// Internal: the destination file.
    #[arg(long, hide = true)]
    dest: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Step {
    StorePut,
    StoreGet,
    StoreGetRanged,
    SdkPut,
    SdkGet,
}

impl Step {
    fn label(self) -> &'static str {
        match self {
            Step::StorePut => "toil_jobstore put_file",
            Step::StoreGet => "toil_jobstore get_file",
            Step::StoreGetRanged => "toil_jobstore get_file (ranged)",
            Step::SdkPut => "aws-sdk-s3 PutObject (one stream)",
            Step::SdkGet => "aws-sdk-s3 GetObject (one stream)",
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.step {
        Some(step) => {
            let figures = run_step(&args, step).await?;
            println!("{figures}");
            Ok(())
        }
        None => run_all(&args).await,
    }
}

/// The parent: moto, the source file, the store; then each step in a child.
async fn run_all(args: &Args) -> anyhow::Result<()> {
    let scratch = harness::scratch("bench-jobstore-");
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| scratch.path().to_path_buf());
    std::fs::create_dir_all(&dir)?;
    let moto = Moto::start().context("starting moto_server (run scripts/setup-test-env.sh)")?;
    println!(
        "bench-jobstore: {} MiB through moto_server at {} (job store: {} MiB parts, {} uploads in flight)",
        args.size_mib,
        moto.endpoint(),
        args.part_size_mib,
        args.concurrency
    );
    let src = dir.join("bench-src.bin");
    let dest = dir.join("bench-dest.bin");
    let t = Instant::now();
    let source_sha = data::write_random(&src, args.size_mib, 0x2545_F491_4F6C_DD1D)?;
    println!(
        "wrote {} in {:.1}s, sha256 {source_sha}",
        src.display(),
        t.elapsed().as_secs_f64()
    );

    let name = unique_name("bench");
    let locator = Locator::Aws {
        region: REGION.into(),
        name: name.clone(),
    };
    let store = JobStore::open_with(&locator, moto.s3_options()).await?;
    store.initialize().await?;

    let mut steps = vec![Step::StorePut, Step::StoreGet];
    if args.ranged {
        steps.push(Step::StoreGetRanged);
    }
    steps.extend([Step::SdkPut, Step::SdkGet]);
    let exe = std::env::current_exe()?;
    let mut rows = Vec::new();
    for step in steps {
        let out = Command::new(&exe)
            .arg("--step")
            .arg(
                step.to_possible_value()
                    .map(|v| v.get_name().to_string())
                    .unwrap_or_default(),
            )
            .args(["--name", &name])
            .arg("--src")
            .arg(&src)
            .arg("--dest")
            .arg(&dest)
            .args(["--part-size-mib", &args.part_size_mib.to_string()])
            .args(["--concurrency", &args.concurrency.to_string()])
            .args(["--ranged-concurrency", &args.ranged_concurrency.to_string()])
            .args(["--size-mib", &args.size_mib.to_string()])
            .envs(moto.env())
            .output()?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "step {step:?} failed: {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let v: Value = serde_json::from_str(stdout.lines().last().unwrap_or(""))
            .with_context(|| format!("step {step:?} printed {stdout:?}"))?;
        let sha = v["sha256"].as_str().unwrap_or("");
        if sha != source_sha {
            bail!("step {step:?}: sha256 {sha}, expected {source_sha}");
        }
        let _ = std::fs::remove_file(&dest);
        rows.push((step, v));
    }

    println!();
    println!(
        "{:<36} {:>8} {:>9} {:>13}  S3 requests",
        "step", "seconds", "MiB/s", "peak RSS MiB"
    );
    for (step, v) in &rows {
        let secs = v["secs"].as_f64().unwrap_or(f64::NAN);
        println!(
            "{:<36} {:>8.2} {:>9.1} {:>13.1}  {}",
            step.label(),
            secs,
            args.size_mib as f64 / secs,
            v["peak_rss_kb"].as_f64().unwrap_or(f64::NAN) / 1024.0,
            v["requests"].as_str().unwrap_or("")
        );
    }
    let secs = |s: Step| {
        rows.iter()
            .find(|(r, _)| *r == s)
            .and_then(|(_, v)| v["secs"].as_f64())
    };
    if let (Some(a), Some(b)) = (secs(Step::StorePut), secs(Step::SdkPut)) {
        println!(
            "\nput: the job store takes {:.2}x the plain SDK's time",
            a / b
        );
    }
    if let (Some(a), Some(b)) = (secs(Step::StoreGet), secs(Step::SdkGet)) {
        println!(
            "get: the job store takes {:.2}x the plain SDK's time",
            a / b
        );
    }
    println!(
        "job-store operations per row: 1 (one put_file or get_file); moto log: {}",
        moto.log_path().display()
    );
    store.destroy().await?;
    Ok(())
}

/// A child: one step, timed; prints seconds, peak RSS, requests, sha256.
async fn run_step(args: &Args, step: Step) -> anyhow::Result<Value> {
    let name = args.name.clone().context("--name")?;
    let src = args.src.clone().context("--src")?;
    let dest = args.dest.clone().context("--dest")?;
    let locator = Locator::Aws {
        region: REGION.into(),
        name,
    };
    let bucket = locator.bucket().unwrap_or_default();
    let transfer = TransferOptions {
        part_size: args.part_size_mib << 20,
        concurrency: args.concurrency,
        download_concurrency: if step == Step::StoreGetRanged {
            args.ranged_concurrency
        } else {
            1
        },
    };
    match step {
        Step::StorePut | Step::StoreGet | Step::StoreGetRanged => {
            let opts = S3Options {
                transfer,
                ..S3Options::from_env()?
            };
            let stats = opts.stats.clone();
            let store = JobStore::open_with(&locator, opts).await?;
            let t = Instant::now();
            let done = if step == Step::StorePut {
                store.put_file("bench/file", &src).await?
            } else {
                store.get_file("bench/file", &dest).await?
            };
            let secs = t.elapsed().as_secs_f64();
            Ok(json!({
                "secs": secs,
                "peak_rss_kb": procfs::own_peak_rss_kb(),
                "requests": describe(&stats.snapshot()),
                "sha256": done.sha256,
            }))
        }
        Step::SdkPut | Step::SdkGet => {
            let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
            let client = aws_sdk_s3::Client::from_conf(
                aws_sdk_s3::config::Builder::from(&sdk)
                    .force_path_style(true)
                    .build(),
            );
            let t = Instant::now();
            if step == Step::SdkPut {
                let body = ByteStream::from_path(&src).await?;
                client
                    .put_object()
                    .bucket(&bucket)
                    .key("bench/sdk")
                    .content_length((args.size_mib << 20) as i64)
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| {
                        anyhow::anyhow!("{}", aws_sdk_s3::error::DisplayErrorContext(e))
                    })?;
            } else {
                let out = client
                    .get_object()
                    .bucket(&bucket)
                    .key("bench/sdk")
                    .send()
                    .await
                    .map_err(|e| {
                        anyhow::anyhow!("{}", aws_sdk_s3::error::DisplayErrorContext(e))
                    })?;
                let mut body = out.body;
                let mut file = tokio::fs::File::create(&dest).await?;
                while let Some(chunk) = body.next().await {
                    file.write_all(&chunk?).await?;
                }
                file.flush().await?;
            }
            let secs = t.elapsed().as_secs_f64();
            let peak = procfs::own_peak_rss_kb();
            // Hashed after the clock stops: the SDK rows move bytes only.
            let sha = data::sha256_file(if step == Step::SdkPut { &src } else { &dest })?;
            Ok(json!({
                "secs": secs,
                "peak_rss_kb": peak,
                "requests": if step == Step::SdkPut { "1 (1 PUT)" } else { "1 (1 GET)" },
                "sha256": sha,
            }))
        }
    }
}

fn describe(c: &RequestCounts) -> String {
    let mut parts = Vec::new();
    for (n, what) in [
        (c.get, "GET"),
        (c.head, "HEAD"),
        (c.list, "LIST"),
        (c.put, "PUT"),
        (c.post, "POST"),
        (c.delete, "DELETE"),
    ] {
        if n > 0 {
            parts.push(format!("{n} {what}"));
        }
    }
    format!("{} ({})", c.total(), parts.join(", "))
}
