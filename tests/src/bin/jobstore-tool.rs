//! `jobstore-tool`: one job-store operation per run, for tests that need a
//! separate process (a clean environment for the AWS credential chain, a
//! peak-RSS measurement of one transfer) and for poking at a store by hand.
//!
//! The store is opened like the leader opens it: [`JobStore::open`]'s
//! settings from the environment (`AWS_*`, `~/.aws`, and the test aid
//! `TOIL_JOBSTORE_FAIL_FIRST_N`). Prints one JSON line on stdout:
//! `{"ok":true,"result":...,"peak_rss_kb":N,"requests":{...}}` or
//! `{"ok":false,"kind":"permanent","message":"..."}` (exit status 1).
//!
//! ```text
//! jobstore-tool --jobstore aws:us-east-1:demo init
//! jobstore-tool --jobstore aws:us-east-1:demo put files/x ./local.bin
//! jobstore-tool gen ./big.bin 1024          # 1024 MiB of pseudo-random data
//! ```

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use serde_json::{Value, json};
use toil_jobstore::s3::S3Options;
use toil_jobstore::{Error, JobStore, Locator};

#[derive(Parser)]
#[command(about = "Run one job-store operation and print the outcome as JSON")]
struct Args {
    /// The job store (`file:PATH` or `aws:REGION:NAME`).
    #[arg(long, env = "TOIL_JOBSTORE")]
    jobstore: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create the store if missing (prints whether it was created).
    Init,
    /// Print whether the store exists.
    Exists,
    /// Delete the store and everything in it.
    Destroy,
    /// Store a local file under KEY (streaming).
    Put { key: String, file: PathBuf },
    /// Fetch KEY into a local file (streaming).
    Get { key: String, file: PathBuf },
    /// Write MIB mebibytes of pseudo-random data to FILE, streaming.
    Gen { file: PathBuf, mib: u64 },
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let out = run(args).await;
    let line = match out {
        Ok(v) => v,
        Err(e) => json!({
            "ok": false,
            "kind": kind(&e),
            "message": e.to_string(),
        }),
    };
    println!("{line}");
    let failed = line.get("ok") != Some(&Value::Bool(true));
    std::process::exit(i32::from(failed));
}

fn kind(e: &Error) -> &'static str {
    match e {
        Error::BadLocator { .. } => "bad_locator",
        Error::NotFound { .. } => "not_found",
        Error::PreconditionFailed { .. } => "precondition_failed",
        Error::Checksum { .. } => "checksum",
        Error::Io { .. } => "io",
        Error::Permanent { .. } => "permanent",
        Error::Transient { .. } => "transient",
    }
}

async fn run(args: Args) -> Result<Value, Error> {
    if let Cmd::Gen { file, mib } = &args.cmd {
        toil_tests::data::write_random(file, *mib, 0x9E37_79B9_7F4A_7C15 ^ *mib)
            .map_err(|e| Error::io(format!("writing {}", file.display()), e))?;
        return Ok(json!({"ok": true, "result": {"bytes": mib << 20}}));
    }
    let Some(locator) = &args.jobstore else {
        return Err(Error::BadLocator {
            locator: String::new(),
            reason: "give --jobstore (or TOIL_JOBSTORE)".into(),
        });
    };
    let locator = Locator::parse(locator)?;
    let opts = S3Options::from_env()?;
    let stats = opts.stats.clone();
    let store = JobStore::open_with(&locator, opts).await?;
    let result = match args.cmd {
        Cmd::Init => json!({"created": store.initialize().await?}),
        Cmd::Exists => json!({"exists": store.exists().await?}),
        Cmd::Destroy => {
            store.destroy().await?;
            json!(null)
        }
        Cmd::Put { key, file } => {
            let t = store.put_file(&key, &file).await?;
            json!({"size": t.size, "sha256": t.sha256})
        }
        Cmd::Get { key, file } => {
            let t = store.get_file(&key, &file).await?;
            json!({"size": t.size, "sha256": t.sha256})
        }
        Cmd::Gen { .. } => json!(null),
    };
    let r = stats.snapshot();
    Ok(json!({
        "ok": true,
        "result": result,
        "peak_rss_kb": toil_tests::procfs::own_peak_rss_kb(),
        "requests": {
            "get": r.get, "list": r.list, "head": r.head, "put": r.put,
            "post": r.post, "delete": r.delete, "total": r.total(),
            "faults_injected": r.faults_injected,
        },
    }))
}
