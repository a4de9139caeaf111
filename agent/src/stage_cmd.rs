//! `toil-agent stage` and `toil-agent pull-image`: the node cache and the
//! image cache driven from the command line, for multi-process tests,
//! benchmarks and debugging on a node.
//!
//! `stage` stages inputs exactly as an attempt would and prints one JSON
//! line: `{"pid", "hits", "misses", "bytes_downloaded", "seconds",
//! "started_ms", "ended_ms", "job_store_reads", "files": [{"file_id",
//! "path", "hit"}], "warnings"}`; with `--hold`
//! it then keeps the entries locked (as a running job does) before exiting,
//! and checks them as the end of an attempt does.
//! On failure it prints `{"error", "cause", "retryable"}` and exits non-zero.
//!
//! `pull-image` pulls an image through the per-image lock and prints
//! `{"path", "pulled", "waited_seconds", "seconds"}`, optionally running a
//! command inside it; on failure `{"error", "cause"}` with the engine's words.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use toil_jobstore::{JobStore, Locator};

use crate::cache::{CacheConfig, CacheInput, NodeCache};
use crate::images::{Engine, ImageCache};

/// Arguments of `toil-agent stage`.
#[derive(Clone, Debug, clap::Args)]
pub struct StageArgs {
    /// Job store to read from: `file:PATH` or `aws:REGION:NAME`.
    #[arg(long, env = "TOIL_JOB_STORE")]
    pub job_store: String,
    /// The node cache directory (normally `$TOIL_WORKDIR/cache`).
    #[arg(long, env = "TOIL_CACHE_DIR")]
    pub cache_dir: PathBuf,
    /// The attempt's work directory, where inputs are placed.
    #[arg(long)]
    pub work_dir: PathBuf,
    /// An input placed as a read-only link: `FILE_ID:SHA256:DEST` (DEST
    /// relative to the work directory; an empty SHA256 skips verification;
    /// the file id may not contain `:`). Repeatable.
    #[arg(long = "input", value_name = "FILE_ID:SHA256:DEST")]
    pub inputs: Vec<String>,
    /// An input placed as a private writable copy; same form as `--input`.
    #[arg(long = "writable-input", value_name = "FILE_ID:SHA256:DEST")]
    pub writable_inputs: Vec<String>,
    /// Download privately into the work directory; share nothing.
    #[arg(long, env = "TOIL_DISABLE_CACHING")]
    pub disable_caching: bool,
    /// Cache budget in bytes (suffixes K, M, G, T and Ki, Mi, Gi, Ti).
    #[arg(long, value_parser = parse_byte_size, env = "TOIL_CACHE_MAX_SIZE")]
    pub cache_max_size: Option<u64>,
    /// Without a budget: free space to keep on the cache's filesystem
    /// (default 5% of it, at most 10 GiB).
    #[arg(long, value_parser = parse_byte_size)]
    pub cache_min_free: Option<u64>,
    /// Scratch disk the attempt reserves node-wide while staged.
    #[arg(long, value_parser = parse_byte_size, default_value = "0")]
    pub disk: u64,
    /// Keep the staged entries locked this many seconds after printing the
    /// summary, as a running job would; then check them as an attempt's
    /// end does (an entry changed meanwhile is removed, and said so on
    /// stderr). The placed files stay in the work directory.
    #[arg(long, value_name = "SECONDS")]
    pub hold: Option<f64>,
    /// Longest wait for any one node cache lock (see `toil-agent run
    /// --help`).
    #[arg(long = "lock-timeout", env = "TOIL_CACHE_LOCK_TIMEOUT", default_value = "120s",
          value_parser = crate::config::parse_timeout)]
    pub lock_timeout: Duration,
    /// Longest time to stage all the inputs.
    #[arg(long = "staging-timeout", env = "TOIL_STAGING_TIMEOUT", default_value = "1h",
          value_parser = crate::config::parse_timeout)]
    pub staging_timeout: Duration,
    /// Test only: wait this long, holding the download lock with the
    /// complete temporary file on disk, before publishing a download.
    #[arg(long, hide = true, value_name = "MS")]
    pub debug_publish_delay_ms: Option<u64>,
}

/// What `stage` prints.
#[derive(serde::Serialize)]
struct StageSummary {
    pid: u32,
    hits: u32,
    misses: u32,
    bytes_downloaded: u64,
    seconds: f64,
    /// When staging started and ended, in ms since the Unix epoch, so that
    /// tests can order several processes' staging.
    started_ms: i64,
    ended_ms: i64,
    job_store_reads: u64,
    files: Vec<FileSummary>,
    /// Cache entries found changed since they were stored (and downloaded
    /// again).
    warnings: Vec<String>,
}

#[derive(serde::Serialize)]
struct FileSummary {
    file_id: String,
    path: PathBuf,
    hit: bool,
}

/// Runs `toil-agent stage`.
pub async fn run(args: StageArgs) -> anyhow::Result<()> {
    let mut inputs = Vec::new();
    for (spec, writable) in args
        .inputs
        .iter()
        .map(|s| (s, false))
        .chain(args.writable_inputs.iter().map(|s| (s, true)))
    {
        inputs.push(parse_input(spec, writable)?);
    }
    let locator = Locator::parse(&args.job_store)?;
    let store = JobStore::open(&locator).await?;
    let cfg = CacheConfig {
        max_bytes: args.cache_max_size,
        disabled: args.disable_caching,
        min_free_bytes: args.cache_min_free,
        debug_publish_delay: args.debug_publish_delay_ms.map(Duration::from_millis),
        // A debugging command: always clean up after dead processes.
        sweep_interval: Duration::ZERO,
        lock_timeout: args.lock_timeout,
        staging_timeout: args.staging_timeout,
    };
    let t0 = Instant::now();
    let started_ms = chrono::Utc::now().timestamp_millis();
    let result = async {
        let cache = NodeCache::open(&args.cache_dir, cfg)?;
        let staged = cache
            .stage(&store, &inputs, &args.work_dir, args.disk)
            .await?;
        Ok::<_, crate::cache::CacheError>((cache, staged))
    }
    .await;
    let (cache, staged) = match result {
        Ok(s) => s,
        Err(e) => {
            print_line(&serde_json::json!({
                "pid": std::process::id(),
                "error": e.to_string(),
                "cause": e.cause_kind().as_str_name(),
                "retryable": e.is_retryable(),
            }))?;
            return Err(e).context("staging failed");
        }
    };
    let stats = staged.stats();
    for w in staged.warnings() {
        eprintln!("{w}");
    }
    print_line(&StageSummary {
        pid: std::process::id(),
        hits: stats.hits,
        misses: stats.misses,
        bytes_downloaded: stats.bytes_downloaded,
        seconds: t0.elapsed().as_secs_f64(),
        started_ms,
        ended_ms: chrono::Utc::now().timestamp_millis(),
        job_store_reads: store.op_counts().reads,
        warnings: staged.warnings().to_vec(),
        files: staged
            .files()
            .iter()
            .map(|f| FileSummary {
                file_id: f.file_id.clone(),
                path: f.path.clone(),
                hit: f.hit,
            })
            .collect(),
    })?;
    if let Some(secs) = args.hold {
        tokio::time::sleep(Duration::from_secs_f64(secs.max(0.0))).await;
    }
    // The caller uses the placed files after this exits: leave them.
    for w in cache.finish(staged, false).await {
        eprintln!("{w}");
    }
    Ok(())
}

/// Arguments of `toil-agent pull-image`.
#[derive(Clone, Debug, clap::Args)]
pub struct PullImageArgs {
    /// The image, for example `docker://ubuntu:24.04`.
    pub image: String,
    /// `singularity` or `apptainer` (or a path to one); default: whichever
    /// is on PATH.
    #[arg(long, env = "TOIL_CONTAINER_ENGINE")]
    pub container_engine: Option<String>,
    /// The engine's cache directory; default: `SINGULARITY_CACHEDIR` /
    /// `APPTAINER_CACHEDIR`, else `TOIL_WORKDIR/<engine>-cache`.
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// The node's work directory (for the default cache directory).
    #[arg(long, env = "TOIL_WORKDIR", default_value = "/var/lib/toil")]
    pub toil_workdir: PathBuf,
    /// Longest time the pull may take, e.g. `2h`.
    #[arg(long, env = "TOIL_IMAGE_PULL_TIMEOUT", default_value = "1h", value_parser = crate::config::parse_timeout)]
    pub pull_timeout: std::time::Duration,
    /// Run this command in the image after pulling, in `--work-dir`.
    #[arg(last = true)]
    pub command: Vec<String>,
    /// Working directory for the command (bound into the container).
    #[arg(long, default_value = ".")]
    pub work_dir: PathBuf,
}

/// Runs `toil-agent pull-image`.
pub async fn run_pull(args: PullImageArgs) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let result = async {
        let engine = Engine::from_env(args.container_engine.as_deref())?;
        let dir = match &args.cache_dir {
            Some(d) => d.clone(),
            None => engine.cache_dir(&args.toil_workdir, |k| std::env::var_os(k)),
        };
        let images = ImageCache::new(engine, &dir)?.with_pull_timeout(args.pull_timeout);
        let waiting = |line: String| tracing::info!("{line}");
        let pulled = images.pull(&args.image, &waiting).await?;
        Ok::<_, crate::images::ImageError>((images, pulled))
    }
    .await;
    let (images, pulled) = match result {
        Ok(r) => r,
        Err(e) => {
            print_line(&serde_json::json!({
                "pid": std::process::id(),
                "error": e.cause_message(),
                "cause": e.cause_kind().as_str_name(),
            }))?;
            return Err(e).context("pulling the image failed");
        }
    };
    let mut summary = serde_json::json!({
        "pid": std::process::id(),
        "engine": images.engine().kind.name(),
        "path": pulled.path,
        "pulled": pulled.pulled,
        "waited_seconds": pulled.waited.as_secs_f64(),
        "seconds": t0.elapsed().as_secs_f64(),
    });
    if !args.command.is_empty() {
        let work_dir = std::path::absolute(&args.work_dir)?;
        let out = images
            .exec_command(&pulled.path, &work_dir, &args.command)
            .to_command()
            .output()
            .await
            .context("running the command in the image")?;
        summary["exit_code"] = out.status.code().into();
        summary["stdout"] = String::from_utf8_lossy(&out.stdout).into();
        summary["stderr"] = String::from_utf8_lossy(&out.stderr).into();
    }
    print_line(&summary)
}

/// Parses `FILE_ID:SHA256:DEST`.
fn parse_input(spec: &str, writable: bool) -> anyhow::Result<CacheInput> {
    let mut parts = spec.splitn(3, ':');
    let (Some(file_id), Some(sha256), Some(dest)) = (parts.next(), parts.next(), parts.next())
    else {
        anyhow::bail!("input {spec:?}: expected FILE_ID:SHA256:DEST");
    };
    if file_id.is_empty() || dest.is_empty() {
        anyhow::bail!("input {spec:?}: the file id and the destination may not be empty");
    }
    Ok(CacheInput {
        file_id: file_id.to_string(),
        sha256: sha256.to_ascii_lowercase(),
        size_bytes: None,
        dest_path: dest.to_string(),
        writable,
    })
}

/// Parses a byte size: a number with an optional suffix `K`, `M`, `G`, `T`
/// (powers of 1000) or `Ki`, `Mi`, `Gi`, `Ti` (powers of 1024), optionally
/// followed by `B`; fractions allowed (`1.5Gi`).
pub fn parse_byte_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let t = t.strip_suffix(['B', 'b']).unwrap_or(t);
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" => 1,
        "k" => 1_000,
        "m" => 1_000_000,
        "g" => 1_000_000_000,
        "t" => 1_000_000_000_000,
        "ki" => 1 << 10,
        "mi" => 1 << 20,
        "gi" => 1 << 30,
        "ti" => 1 << 40,
        _ => {
            return Err(format!(
                "{s:?} is not a size: use a number of bytes with an optional suffix K, M, G, T, Ki, Mi, Gi or Ti"
            ));
        }
    };
    if num.contains('.') {
        let v: f64 = num.parse().map_err(|_| format!("{s:?} is not a size"))?;
        return Ok((v * mult as f64).round() as u64);
    }
    let v: u64 = num.parse().map_err(|_| format!("{s:?} is not a size"))?;
    v.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// Prints one JSON line on stdout and flushes it (tests read it while the
/// process still holds its locks).
fn print_line(v: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, v)?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_inputs_parse() {
        assert_eq!(parse_byte_size("4096"), Ok(4096));
        assert_eq!(parse_byte_size("30M"), Ok(30_000_000));
        assert_eq!(parse_byte_size("4Gi"), Ok(4 << 30));
        assert_eq!(parse_byte_size("1.5KiB"), Ok(1536));
        assert!(parse_byte_size("lots").is_err());
        assert!(parse_byte_size("5Q").is_err());

        let i = parse_input("files/a:ABCD:in/a.txt", true).ok();
        assert_eq!(
            i,
            Some(CacheInput {
                file_id: "files/a".into(),
                sha256: "abcd".into(),
                size_bytes: None,
                dest_path: "in/a.txt".into(),
                writable: true,
            })
        );
        assert!(parse_input("files/a:abcd", false).is_err());
        assert!(parse_input(":abcd:x", false).is_err());
    }
}
