//! Node cache benchmark.
//!
//! ```text
//! cargo run --release -p toil-agent --example bench_cache -- [--size-mb 200] [--agents 16] [--dir DIR]
//! ```
//!
//! Prints, for a `file:` job store in a scratch directory (by default under
//! the system temp dir; `--dir` puts it elsewhere, e.g. on the disk the cache
//! will live on):
//!
//! 1. staging one `--size-mb` input cold (a download: read, SHA-256, write,
//!    fsync, rename) versus warm (a cache hit: lock, stat, hard link), the
//!    warm figure being the median of 7 runs, and their ratio (the target is
//!    a warm stage at least 50 times faster);
//! 2. `--agents` concurrent agent processes (this program re-executed, each
//!    running exactly what `toil-agent stage` runs) staging one uncached
//!    file: how many downloads the node made (the target is 1), how many
//!    hits, and the wall time.
//!
//! A `file:` store on local disk is the fastest possible "download", so the
//! cold/warm ratio here is a lower bound of what a node sees with S3.
//! It prints figures and asserts nothing about speed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use rand::RngCore;
use toil_agent::cache::{CacheConfig, CacheInput, NodeCache};
use toil_agent::stage_cmd::{self, StageArgs};
use toil_jobstore::{JobStore, Locator, Transfer};

#[derive(Parser)]
struct Bench {
    /// Size of the input staged cold and warm, in MB.
    #[arg(long, default_value_t = 200)]
    size_mb: u64,
    /// Concurrent agent processes on one uncached file.
    #[arg(long, default_value_t = 16)]
    agents: usize,
    /// Scratch directory (default: a new temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// The re-executed child: `bench_cache __stage <toil-agent stage args>`.
#[derive(Parser)]
struct ChildStage {
    #[command(flatten)]
    args: StageArgs,
}

fn main() -> anyhow::Result<()> {
    let argv: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Runtime::new()?;
    if argv.get(1).map(String::as_str) == Some("__stage") {
        let child = ChildStage::parse_from(
            std::iter::once(argv[0].clone()).chain(argv[2..].iter().cloned()),
        );
        return rt.block_on(stage_cmd::run(child.args));
    }
    let bench = Bench::parse();
    let root = match &bench.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            tempfile::tempdir_in(d)?
        }
        None => tempfile::tempdir()?,
    };
    rt.block_on(run(&bench, root.path()))
}

async fn run(bench: &Bench, root: &Path) -> anyhow::Result<()> {
    let store_dir = root.join("jobstore");
    let store = JobStore::open(&Locator::File(store_dir.clone())).await?;
    store.initialize().await?;
    let cache_dir = root.join("cache");
    let size = bench.size_mb * 1_000_000;
    println!(
        "node cache benchmark in {} ({} MB input, {} agents)",
        root.display(),
        bench.size_mb,
        bench.agents
    );

    // 1. Cold versus warm.
    let big = put_random(&store, root, "files/bench/big.bin", size).await?;
    let input = CacheInput {
        file_id: "files/bench/big.bin".into(),
        sha256: big.sha256.clone(),
        size_bytes: Some(big.size),
        dest_path: "in/big.bin".into(),
        writable: false,
    };
    let cache = NodeCache::open(&cache_dir, CacheConfig::default())?;
    let t0 = Instant::now();
    let staged = cache
        .stage(
            &store,
            std::slice::from_ref(&input),
            &root.join("w/cold"),
            0,
        )
        .await?;
    let cold = t0.elapsed();
    anyhow::ensure!(
        staged.stats().misses == 1,
        "the cold stage was not a download"
    );
    drop(staged);
    let mut warm = Vec::new();
    for i in 0..7 {
        let t0 = Instant::now();
        let staged = cache
            .stage(
                &store,
                std::slice::from_ref(&input),
                &root.join(format!("w/warm{i}")),
                0,
            )
            .await?;
        warm.push(t0.elapsed());
        anyhow::ensure!(staged.stats().hits == 1, "the warm stage missed");
    }
    warm.sort();
    let warm_median = warm[warm.len() / 2];
    println!(
        "cold stage (download {} MB): {:>10.3} ms  ({:.0} MB/s)",
        bench.size_mb,
        ms(cold),
        size as f64 / 1e6 / cold.as_secs_f64()
    );
    println!(
        "warm stage (cache hit):      {:>10.3} ms  (median of {}, min {:.3} ms, max {:.3} ms)",
        ms(warm_median),
        warm.len(),
        ms(warm[0]),
        ms(warm[warm.len() - 1])
    );
    println!(
        "warm is {:.0}x faster than cold (target: at least 50x)",
        cold.as_secs_f64() / warm_median.as_secs_f64()
    );

    // 2. N concurrent agents on one uncached file.
    let shared = put_random(&store, root, "files/bench/shared.bin", size.min(50_000_000)).await?;
    let exe = std::env::current_exe()?;
    let t0 = Instant::now();
    let children = (0..bench.agents)
        .map(|i| {
            Command::new(&exe)
                .arg("__stage")
                .arg("--job-store")
                .arg(format!("file:{}", store_dir.display()))
                .arg("--cache-dir")
                .arg(&cache_dir)
                .arg("--work-dir")
                .arg(root.join(format!("w/agent{i}")))
                .arg("--input")
                .arg(format!(
                    "files/bench/shared.bin:{}:shared.bin",
                    shared.sha256
                ))
                .env("RUST_LOG", "warn")
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (mut misses, mut hits, mut reads, mut slowest) = (0, 0, 0, 0f64);
    for c in children {
        let out = c.wait_with_output()?;
        anyhow::ensure!(out.status.success(), "an agent failed");
        let line = String::from_utf8_lossy(&out.stdout);
        let v: serde_json::Value = serde_json::from_str(line.lines().next().unwrap_or("{}"))?;
        misses += v["misses"].as_u64().unwrap_or(0);
        hits += v["hits"].as_u64().unwrap_or(0);
        reads += v["job_store_reads"].as_u64().unwrap_or(0);
        slowest = slowest.max(v["seconds"].as_f64().unwrap_or(0.0));
    }
    println!(
        "{} concurrent agents on one uncached {} MB file: downloads = {misses} (target 1), hits = {hits}, \
         job-store reads = {reads}, wall {:.3} s, slowest agent {:.3} s",
        bench.agents,
        shared.size / 1_000_000,
        t0.elapsed().as_secs_f64(),
        slowest
    );
    Ok(())
}

async fn put_random(
    store: &JobStore,
    dir: &Path,
    key: &str,
    size: u64,
) -> anyhow::Result<Transfer> {
    let src = dir.join("src.tmp");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&src)?);
        let mut rng = rand::rng();
        let mut buf = vec![0u8; 1 << 20];
        let mut left = size;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            rng.fill_bytes(&mut buf[..n]);
            f.write_all(&buf[..n])?;
            left -= n as u64;
        }
        f.flush()?;
    }
    let t = store.put_file(key, &src).await?;
    std::fs::remove_file(&src)?;
    Ok(t)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
