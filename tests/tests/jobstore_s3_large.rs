//! Large files through the S3 job store on moto, in a child process
//! (`jobstore-tool`) whose peak RSS is the measurement: a multipart upload
//! and a streamed download must not hold the file in memory.
//!
//! The 1 GiB case takes about 25 s on an idle 2-core machine
//! (`bench-jobstore` reports the same figures with throughput).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use serde_json::Value;
use toil_tests::harness;
use toil_tests::moto::{Moto, REGION, unique_name};

/// The budget the issue sets for leader and agent processes.
const RSS_LIMIT_KB: u64 = 100 * 1024;

fn tool(args: &[&str], env: &[(String, String)]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_jobstore-tool"))
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap_or_else(|e| {
        panic!(
            "jobstore-tool {args:?}: {e}; stdout {stdout:?}; stderr {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(
        out.status.success() && v["ok"] == true,
        "jobstore-tool {args:?}: {v}"
    );
    v
}

/// Puts and gets a file of `mib` MiB through a fresh moto and checks sizes,
/// checksums, request counts and the child's peak RSS.
fn transfer(mib: u64) {
    let moto = Moto::start().unwrap();
    let dir = harness::scratch("jobstore-large-");
    let mut env = moto.env();
    env.push(("HOME".into(), dir.path().to_string_lossy().into_owned()));
    let locator = format!("aws:{REGION}:{}", unique_name("large"));
    let src = dir.path().join("src.bin");
    let dest = dir.path().join("dest.bin");
    let (src_s, dest_s) = (src.to_str().unwrap(), dest.to_str().unwrap());

    tool(&["gen", src_s, &mib.to_string()], &env);
    tool(&["--jobstore", &locator, "init"], &env);
    let put = tool(&["--jobstore", &locator, "put", "files/big", src_s], &env);
    let get = tool(&["--jobstore", &locator, "get", "files/big", dest_s], &env);
    eprintln!("{mib} MiB put: {put}\n{mib} MiB get: {get}");

    assert_eq!(put["result"]["size"], mib << 20);
    assert_eq!(
        put["result"], get["result"],
        "same size and sha256 both ways"
    );
    assert_eq!(std::fs::metadata(&dest).unwrap().len(), mib << 20);
    // Default 8 MiB parts: create + parts + complete; one streamed GET.
    assert_eq!(put["requests"]["post"], 2, "{put}");
    assert_eq!(put["requests"]["put"], mib / 8, "{put}");
    assert_eq!(get["requests"]["get"], 1, "{get}");
    for (what, v) in [("put", &put), ("get", &get)] {
        let rss = v["peak_rss_kb"].as_u64().unwrap();
        assert!(
            rss < RSS_LIMIT_KB,
            "{what} of {mib} MiB peaked at {rss} KiB (limit {RSS_LIMIT_KB})"
        );
    }
}

#[test]
fn multipart_64_mib_stays_small() {
    transfer(64);
}

#[test]
fn one_gib_under_100_mb_rss() {
    transfer(1024);
}
