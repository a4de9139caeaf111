//! `bench-s3-workflow`: whole workflows on an `aws:` job store, with moto as
//! S3 — what an S3 job store costs in requests, and how big files fare.
//!
//! ```text
//! scripts/setup-test-env.sh                 # once: the moto venv
//! cargo build --release --bins
//! target/release/bench-s3-workflow          # 500 trivial jobs, then 1 GiB through a job
//! target/release/bench-s3-workflow --jobs 2000 --size-mib 0
//! ```
//!
//! It starts its own `moto_server` on 127.0.0.1 and runs the real
//! `toil-leader` (local batch system, real agents) with moto's endpoint and
//! test keys in its environment, as a user would with `AWS_*` variables.
//!
//! 1. **Requests per job.** N trivial jobs (`true`) with `--clean never`,
//!    then `toil-leader clean`. Requests are counted at the server, from
//!    moto's request log (one line per request it answered, whichever
//!    process sent it: the leader and every agent), by key: journal, results,
//!    logs, and the fixed costs of starting and ending a workflow.
//!    Writes are PUT/POST/DELETE, reads GET/HEAD (a listing is a GET).
//! 2. **A big file through a job.** A file of `--size-mib` MiB is imported
//!    by the leader (hashed, then a multipart upload), staged by the agent
//!    (one streamed GET into the node cache), copied by the job (`cp`),
//!    uploaded by the agent, and exported by the leader (streamed, verified).
//!    It prints each phase's time and MiB/s (from the journal the leader
//!    wrote: launch, command start, command time, end), the peak RSS of the
//!    leader and the agent (`VmHWM` sampled every 10 ms from /proc) and the
//!    kernel's record at exit (`wait4`), and checks that the export's
//!    SHA-256 is the input's.
//! 3. **Baseline in the same run:** the plain `aws-sdk-s3` client moving the
//!    same file with one streaming `PutObject` and one `GetObject`, in this
//!    process. (`bench-jobstore` compares the job store's own put/get with
//!    the SDK in isolation.)
//!
//! Nothing is asserted about speed: moto is a Python server and the machine
//! may be busy, so compare rows of one run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use aws_sdk_s3::primitives::ByteStream;
use clap::Parser;
use prost::Message;
use toil_jobstore::{JobStore, Locator};
use toil_proto::v1::{JournalEntry, JournalRecord, journal_entry::Kind};
use toil_tests::local::{PeakSampler, wait_with_max_rss};
use toil_tests::moto::{LoggedRequest, Moto, REGION, unique_name};
use toil_tests::{data, harness};
use tokio::io::AsyncWriteExt;

#[derive(Parser)]
#[command(
    about = "Whole workflows on an S3 job store (moto): requests per job, and a big file through a job"
)]
struct Args {
    /// Trivial jobs in the request-count run (0 to skip).
    #[arg(long, default_value_t = 500)]
    jobs: u64,
    /// Cores each trivial job asks for (sets how many run at once).
    #[arg(long, default_value = "0.1")]
    cores_per_job: String,
    /// Size of the file sent through a job, in MiB (0 to skip).
    #[arg(long, default_value_t = 1024)]
    size_mib: u64,
    /// Directory holding toil-leader and toil-agent (default: next to this
    /// program).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Keep the scratch directory.
    #[arg(long)]
    keep: bool,
}

const LIMIT: Duration = Duration::from_secs(3600);

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bins = toil_tests::harness::bins_for_program(
        args.bin_dir.as_deref(),
        &["toil-leader", "toil-agent"],
    )?;
    let scratch = harness::scratch("bench-s3-workflow-");
    let moto = Moto::start().context("starting moto_server (run scripts/setup-test-env.sh)")?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "bench-s3-workflow: {} build, {cores} cores, moto_server at {} (log {})",
        if bins.ends_with("release") {
            "release"
        } else {
            "debug"
        },
        moto.endpoint(),
        moto.log_path().display()
    );
    if args.jobs > 0 {
        trivial_jobs(&args, &bins, scratch.path(), &moto)?;
    }
    if args.size_mib > 0 {
        big_file(&args, &bins, scratch.path(), &moto)?;
    }
    if args.keep {
        let kept = scratch.keep();
        println!("scratch kept in {}", kept.display());
    }
    Ok(())
}

/// `toil-leader ARGS` in `dir`, reaching moto through the AWS environment.
fn leader(bins: &Path, dir: &Path, moto: &Moto, args: &[&str]) -> Command {
    let mut cmd = Command::new(bins.join("toil-leader"));
    cmd.current_dir(dir)
        .args(args)
        .envs(moto.env())
        .env("TOIL_WORKDIR", dir.join("work"))
        .env("TOIL_AGENT_BINARY", bins.join("toil-agent"))
        .env_remove("TOIL_JOBSTORE")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    cmd
}

/// Runs a leader command to its end, sampling memory; returns the wall
/// time, the sampled peaks and the kernel's record at exit.
fn run_leader(
    mut cmd: Command,
    dir: &Path,
    what: &str,
) -> anyhow::Result<(Duration, toil_tests::local::Peaks, u64)> {
    let err = dir.join(format!("{what}.stderr"));
    cmd.stdout(std::fs::File::create(dir.join(format!("{what}.stdout")))?)
        .stderr(std::fs::File::create(&err)?);
    let t0 = Instant::now();
    let child = cmd.spawn().context("starting toil-leader")?;
    let sampler = PeakSampler::start(child.id(), Duration::from_millis(10));
    let waited = wait_with_max_rss(child, LIMIT);
    let peaks = sampler.stop();
    let wall = t0.elapsed();
    let (status, max_kb) = match waited {
        Ok(v) => v,
        Err(mut child) => {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{what}: the leader did not finish within {LIMIT:?}");
        }
    };
    if !status.success() {
        bail!(
            "{what}: the leader failed ({status}):\n{}",
            std::fs::read_to_string(&err).unwrap_or_default()
        );
    }
    Ok((wall, peaks, max_kb))
}

fn mb(kb: u64) -> f64 {
    kb as f64 * 1024.0 / 1e6
}

// === requests per job ===

/// What a request was for, from its key.
fn category(r: &LoggedRequest) -> &'static str {
    let k = r.key.as_str();
    if k.is_empty() {
        if r.query.contains("list-type") {
            if r.query.contains("prefix=state") {
                "listing state/ (start-up, restart)"
            } else {
                "listing (other)"
            }
        } else {
            "bucket (create, head, uploads, delete)"
        }
    } else if k.starts_with("state/journal/") || k.starts_with("state/snapshot/") {
        "journal records and snapshots"
    } else if k == "state/lease.json" {
        "leader lease"
    } else if k == "state/leader.json" {
        "leader address (state/leader.json)"
    } else if k.starts_with("results/") {
        "attempt results"
    } else if k.starts_with("logs/") {
        "job log segments"
    } else if k.starts_with("files/") {
        "files (inputs, outputs)"
    } else if k.starts_with("workflow/") || k == ".toil-jobstore" {
        "store marker and workflow files"
    } else {
        "other"
    }
}

#[derive(Default)]
struct Tally {
    writes: u64,
    reads: u64,
}

fn tally<'a>(reqs: impl Iterator<Item = &'a LoggedRequest>) -> BTreeMap<&'static str, Tally> {
    let mut t: BTreeMap<&'static str, Tally> = BTreeMap::new();
    for r in reqs {
        let e = t.entry(category(r)).or_default();
        if r.is_write() {
            e.writes += 1;
        } else {
            e.reads += 1;
        }
    }
    t
}

fn print_tally(t: &BTreeMap<&'static str, Tally>, n: f64) {
    println!(
        "  {:<40} {:>7} {:>7} {:>10} {:>10}",
        "requests by key", "writes", "reads", "writes/job", "reads/job"
    );
    let (mut w, mut r) = (0, 0);
    for (cat, x) in t {
        println!(
            "  {cat:<40} {:>7} {:>7} {:>10.3} {:>10.3}",
            x.writes,
            x.reads,
            x.writes as f64 / n,
            x.reads as f64 / n
        );
        w += x.writes;
        r += x.reads;
    }
    println!(
        "  {:<40} {w:>7} {r:>7} {:>10.3} {:>10.3}",
        "total",
        w as f64 / n,
        r as f64 / n
    );
}

fn trivial_jobs(args: &Args, bins: &Path, scratch: &Path, moto: &Moto) -> anyhow::Result<()> {
    let dir = scratch.join("trivial");
    std::fs::create_dir_all(&dir)?;
    let wf = dir.join("trivial.yaml");
    std::fs::write(
        &wf,
        format!(
            "name: trivial\ndefaults: {{cores: {}, memory: 16Mi, disk: 1Mi}}\njobs:\n  t:\n    scatter: {{i: {{range: {}}}}}\n    command: [\"true\"]\n",
            args.cores_per_job, args.jobs
        ),
    )?;
    let name = unique_name("trivial");
    let bucket = format!("{name}--toil");
    let loc = format!("aws:{REGION}:{name}");
    let before = moto.requests()?.len();
    let cmd = leader(
        bins,
        &dir,
        moto,
        &[
            "run",
            "trivial.yaml",
            "--jobStore",
            &loc,
            "--clean",
            "never",
            "--realTimeLogging=false",
        ],
    );
    let (wall, peaks, _) = run_leader(cmd, &dir, "trivial")?;
    let all = moto.requests()?;
    let run: Vec<&LoggedRequest> = all[before..]
        .iter()
        .filter(|r| r.bucket == bucket)
        .collect();
    let n = args.jobs as f64;
    println!();
    println!(
        "{} trivial jobs on {loc}: {:.1} s, {:.0} jobs/s, leader peak RSS {:.1} MB, {} S3 requests",
        args.jobs,
        wall.as_secs_f64(),
        n / wall.as_secs_f64(),
        mb(peaks.root_kb),
        run.len()
    );
    print_tally(&tally(run.iter().copied()), n);
    let errors = run.iter().filter(|r| r.status >= 500).count();
    let by_status: BTreeMap<u16, usize> = run.iter().fold(BTreeMap::new(), |mut m, r| {
        *m.entry(r.status).or_default() += 1;
        m
    });
    println!("  answers by HTTP status: {by_status:?} ({errors} server errors)");

    let before = moto.requests()?.len();
    let t = Instant::now();
    let out = leader(bins, &dir, moto, &["clean", &loc]).output()?;
    if !out.status.success() {
        bail!("clean failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let all = moto.requests()?;
    let clean: Vec<&LoggedRequest> = all[before..]
        .iter()
        .filter(|r| r.bucket == bucket)
        .collect();
    let deletes = clean.iter().filter(|r| r.method == "POST").count();
    println!(
        "  then `toil-leader clean`: {:.2} s, {} requests ({} writes: {} DeleteObjects batches of up to 1000 keys, DeleteBucket ...)",
        t.elapsed().as_secs_f64(),
        clean.len(),
        clean.iter().filter(|r| r.is_write()).count(),
        deletes
    );
    Ok(())
}

// === a big file through a job ===

fn secs(t: &Option<prost_types::Timestamp>) -> Option<f64> {
    t.as_ref()
        .map(|t| t.seconds as f64 + f64::from(t.nanos) / 1e9)
}

fn unix_secs(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Every journal entry in the store (snapshot, then the records after it).
async fn journal(store: &JobStore) -> anyhow::Result<Vec<JournalEntry>> {
    let seq = |k: &str| k.rsplit('/').next().and_then(|s| s.parse::<u64>().ok());
    let snapshot = store
        .list("state/snapshot/")
        .await?
        .into_iter()
        .filter_map(|k| Some((seq(&k)?, k)))
        .max();
    let base = snapshot.as_ref().map_or(0, |(s, _)| *s);
    let mut records: Vec<(u64, String)> = store
        .list("state/journal/")
        .await?
        .into_iter()
        .filter_map(|k| Some((seq(&k)?, k)))
        .filter(|(s, _)| *s > base)
        .collect();
    records.sort();
    let mut entries = Vec::new();
    for (_, key) in snapshot.into_iter().chain(records) {
        let obj = store
            .get_bytes(&key)
            .await?
            .with_context(|| format!("{key} vanished"))?;
        entries.extend(JournalRecord::decode(obj.data)?.entries);
    }
    Ok(entries)
}

fn big_file(args: &Args, bins: &Path, scratch: &Path, moto: &Moto) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let dir = scratch.join("big");
    std::fs::create_dir_all(&dir)?;
    let size = args.size_mib << 20;
    let mib = args.size_mib as f64;
    let src = dir.join("big.bin");
    let t = Instant::now();
    let sha = data::write_random(&src, args.size_mib, 0x2545_F491_4F6C_DD1D)?;
    println!();
    println!(
        "{} MiB through a job (wrote the input in {:.1} s, sha256 {sha})",
        args.size_mib,
        t.elapsed().as_secs_f64()
    );
    std::fs::write(
        dir.join("big.yaml"),
        "name: big\ndefaults: {cores: 1, memory: 256Mi, disk: 8Gi}\njobs:\n  copy:\n    inputs: [big.bin]\n    command: \"cp big.bin copy.bin\"\n    outputs: {copy: copy.bin}\noutputs:\n  copy: copy.copy\n",
    )?;
    let name = unique_name("big");
    let bucket = format!("{name}--toil");
    let loc = format!("aws:{REGION}:{name}");
    let before = moto.requests()?.len();
    let started = SystemTime::now();
    let cmd = leader(
        bins,
        &dir,
        moto,
        &[
            "run",
            "big.yaml",
            "--jobStore",
            &loc,
            "--clean",
            "never",
            "--outputDir",
            "out",
        ],
    );
    let (wall, peaks, max_kb) = run_leader(cmd, &dir, "big")?;
    let ended = unix_secs(started) + wall.as_secs_f64();
    let exported = dir.join("out/copy/copy.bin");
    let exported_sha = data::sha256_file(&exported)?;
    if exported_sha != sha {
        bail!("the exported copy's sha256 is {exported_sha}, the input's {sha}");
    }
    let all = moto.requests()?;
    let reqs: Vec<&LoggedRequest> = all[before..]
        .iter()
        .filter(|r| r.bucket == bucket)
        .collect();

    // Phases, from the leader's journal and the agent's result.
    let locator = Locator::Aws {
        region: REGION.into(),
        name: name.clone(),
    };
    let store = rt.block_on(JobStore::open_with(&locator, moto.s3_options()))?;
    let entries = rt.block_on(journal(&store))?;
    let at = |f: &dyn Fn(&Kind) -> bool| {
        entries
            .iter()
            .find(|e| e.kind.as_ref().is_some_and(f))
            .and_then(|e| secs(&e.time))
    };
    let claim = at(&|k| matches!(k, Kind::Claim(_))).context("no claim in the journal")?;
    let launch = at(&|k| matches!(k, Kind::Launch(_))).context("no launch in the journal")?;
    let end_entry = entries
        .iter()
        .find_map(|e| match &e.kind {
            Some(Kind::End(end)) => Some((secs(&e.time), end.result.clone())),
            _ => None,
        })
        .context("no end in the journal")?;
    let (Some(end), Some(result)) = end_entry else {
        bail!("the end entry has no time or result");
    };
    let command_start = secs(&result.started_at).context("no command start")?;
    let usage = result.usage.unwrap_or_default();
    let command = usage
        .wall_time
        .as_ref()
        .map_or(0.0, |d| d.seconds as f64 + f64::from(d.nanos) / 1e9);
    if usage.bytes_downloaded != size || usage.bytes_uploaded != size {
        bail!(
            "the agent moved {} down and {} up, expected {size} each",
            usage.bytes_downloaded,
            usage.bytes_uploaded
        );
    }
    let row = |what: &str, s: f64, who: &str| {
        println!(
            "  {what:<52} {s:>7.2} s {:>8.1} MiB/s   ({who})",
            mib / s.max(1e-9)
        );
    };
    println!(
        "  whole run: {:.1} s, exported copy verified (sha256 equal)",
        wall.as_secs_f64()
    );
    row(
        "import: start, hash the input, multipart upload",
        claim - unix_secs(started),
        "leader",
    );
    row(
        "stage: agent start, one streamed GET into the cache",
        command_start - launch,
        "agent",
    );
    row("the job: cp", command, "job");
    row(
        "store the output: multipart upload, report",
        end - command_start - command,
        "agent",
    );
    row(
        "export: streamed GET, verified; summary; exit",
        ended - end,
        "leader",
    );
    println!(
        "  peak RSS: leader {:.1} MB, agent {:.1} MB ({} samples of VmHWM); kernel's record at exit for the leader and all it reaped: {:.1} MB",
        mb(peaks.root_kb),
        mb(peaks.max_child_kb("toil-agent")),
        peaks.rounds,
        mb(max_kb)
    );
    let t = tally(reqs.iter().copied());
    let files = t.get("files (inputs, outputs)");
    println!(
        "  S3 requests: {} in all; on files: {} writes (create, parts, complete for 2 uploads), {} reads",
        reqs.len(),
        files.map_or(0, |x| x.writes),
        files.map_or(0, |x| x.reads)
    );

    for (key, parts, complete) in multipart_timing(&reqs) {
        println!(
            "  moto's log (whole seconds) for the upload of {key}: parts {parts} s, then CompleteMultipartUpload {complete} s"
        );
    }

    // Baseline: the plain SDK, same file, same server, this process.
    let (put, get) = rt.block_on(sdk_baseline(
        moto,
        &bucket,
        &src,
        &dir.join("sdk.bin"),
        size,
    ))?;
    row(
        "aws-sdk-s3 PutObject, one stream from the file",
        put,
        "baseline",
    );
    row(
        "aws-sdk-s3 GetObject, one stream into a file",
        get,
        "baseline",
    );
    let sdk_sha = data::sha256_file(&dir.join("sdk.bin"))?;
    if sdk_sha != sha {
        bail!("the SDK's copy differs from the input");
    }
    let _ = std::fs::remove_file(dir.join("sdk.bin"));
    let out = leader(bins, &dir, moto, &["clean", &loc]).output()?;
    if !out.status.success() {
        bail!("clean failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// For each multipart upload in `reqs`: its key, the seconds from its first
/// to its last part, and from its last part to the end of its completion,
/// by the timestamps of moto's log (whole seconds). On moto the completion
/// copies every part into one object, which S3 itself does far faster.
fn multipart_timing(reqs: &[&LoggedRequest]) -> Vec<(String, i64, i64)> {
    let mut uploads: BTreeMap<
        String,
        (
            String,
            Vec<chrono::NaiveDateTime>,
            Option<chrono::NaiveDateTime>,
        ),
    > = BTreeMap::new();
    for r in reqs {
        let Some(id) = r
            .query
            .split('&')
            .find_map(|kv| kv.strip_prefix("uploadId="))
        else {
            continue;
        };
        let Some(t) = r.logged_at else {
            continue;
        };
        let e = uploads
            .entry(id.to_string())
            .or_insert_with(|| (r.key.clone(), Vec::new(), None));
        match r.method.as_str() {
            "PUT" => e.1.push(t),
            "POST" => e.2 = Some(t),
            _ => {}
        }
    }
    let mut out: Vec<(String, i64, i64)> = uploads
        .into_values()
        .filter_map(|(key, parts, complete)| {
            let (first, last) = (parts.iter().min()?, parts.iter().max()?);
            Some((
                key,
                (*last - *first).num_seconds(),
                (complete? - *last).num_seconds(),
            ))
        })
        .collect();
    out.sort_by_key(|(k, _, _)| !k.starts_with("files/inputs/"));
    out
}

/// Times one streaming PutObject of `src` and one GetObject into `dest`.
async fn sdk_baseline(
    moto: &Moto,
    bucket: &str,
    src: &Path,
    dest: &Path,
    size: u64,
) -> anyhow::Result<(f64, f64)> {
    let client = moto.s3_client().await;
    let key = "baseline/sdk.bin";
    let t = Instant::now();
    client
        .put_object()
        .bucket(bucket)
        .key(key)
        .content_length(size as i64)
        .body(ByteStream::from_path(src).await?)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("{}", aws_sdk_s3::error::DisplayErrorContext(e)))?;
    let put = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let out = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("{}", aws_sdk_s3::error::DisplayErrorContext(e)))?;
    let mut body = out.body;
    let mut file = tokio::fs::File::create(dest).await?;
    while let Some(chunk) = body.next().await {
        file.write_all(&chunk?).await?;
    }
    file.flush().await?;
    let get = t.elapsed().as_secs_f64();
    Ok((put, get))
}
