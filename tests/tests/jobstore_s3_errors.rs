//! S3 job-store configuration and failures against moto: where settings come
//! from (environment, `~/.aws` files, endpoint variables), permanent errors
//! that must stop a run before any job with a message naming the fix, and
//! transient ones that are retried (and given up on after the configured
//! attempts).
//!
//! Tests that depend on the process environment run `jobstore-tool` as a
//! child with exactly the environment they need.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use toil_jobstore::s3::{
    FaultConfig, NO_CREDENTIALS, RetryOptions, S3Options, StaticCredentials, TransferOptions,
};
use toil_jobstore::{Condition, Error, JobStore, Locator};
use toil_tests::harness;
use toil_tests::moto::{Moto, REGION, unique_name};

/// Runs `jobstore-tool ARGS` with only `env` (plus `PATH`) and returns its
/// exit code and JSON line.
fn tool(args: &[&str], env: &[(String, String)]) -> (i32, Value) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_jobstore-tool"));
    cmd.args(args).env_clear();
    if let Ok(path) = std::env::var("PATH") {
        cmd.env("PATH", path);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or("");
    let v: Value = serde_json::from_str(line).unwrap_or_else(|e| {
        panic!(
            "jobstore-tool {args:?} printed {stdout:?} ({e}); stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), v)
}

fn kv(k: &str, v: impl Into<String>) -> (String, String) {
    (k.to_string(), v.into())
}

fn permanent_message(e: Error) -> String {
    match e {
        Error::Permanent { message } => message,
        other => panic!("expected a permanent error, got {other:?}"),
    }
}

fn aws(name: &str) -> String {
    format!("aws:{REGION}:{name}")
}

#[test]
fn no_credentials_names_the_fix_before_anything_else() {
    let moto = Moto::shared();
    let home = harness::scratch("empty-home-");
    let env = [
        kv("HOME", home.path().to_string_lossy()),
        kv("AWS_ENDPOINT_URL", moto.endpoint()),
        kv("AWS_EC2_METADATA_DISABLED", "true"),
    ];
    let locator = aws(&unique_name("nocreds"));
    for cmd in ["init", "exists"] {
        let (code, v) = tool(&["--jobstore", &locator, cmd], &env);
        assert_eq!(code, 1, "{v}");
        assert_eq!(v["kind"], "permanent", "{v}");
        let msg = v["message"].as_str().unwrap();
        assert!(msg.starts_with(NO_CREDENTIALS), "{cmd}: {msg}");
        assert!(msg.contains("TOIL_AWS_SECRET_NAME"), "{msg}");
    }
}

#[test]
fn credentials_file_and_s3_endpoint_variable_are_honoured() {
    // As on Kubernetes: the TOIL_AWS_SECRET_NAME secret mounted at ~/.aws.
    let moto = Moto::shared();
    let home = harness::scratch("aws-home-");
    let dot_aws = home.path().join(".aws");
    std::fs::create_dir_all(&dot_aws).unwrap();
    std::fs::write(
        dot_aws.join("credentials"),
        "[default]\naws_access_key_id = testing\naws_secret_access_key = testing\n",
    )
    .unwrap();
    // Only the S3-specific endpoint variable: path-style must follow from it.
    let env = [
        kv("HOME", home.path().to_string_lossy()),
        kv("AWS_ENDPOINT_URL_S3", moto.endpoint()),
        kv("AWS_EC2_METADATA_DISABLED", "true"),
    ];
    round_trip_through_tool(&env, home.path(), "profile");
}

#[test]
fn web_identity_is_used_as_on_eks() {
    // EKS (IRSA) mounts a token and sets these; the chain exchanges the token
    // for credentials with STS AssumeRoleWithWebIdentity (moto's STS here).
    let moto = Moto::shared();
    let home = harness::scratch("webid-home-");
    let token = home.path().join("token");
    std::fs::write(&token, "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ0b2lsIn0.c2ln").unwrap();
    let env = [
        kv("HOME", home.path().to_string_lossy()),
        kv("AWS_ENDPOINT_URL", moto.endpoint()),
        kv("AWS_REGION", REGION),
        kv("AWS_EC2_METADATA_DISABLED", "true"),
        kv("AWS_WEB_IDENTITY_TOKEN_FILE", token.to_string_lossy()),
        kv("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/toil-leader"),
        kv("AWS_ROLE_SESSION_NAME", "toil-test"),
    ];
    round_trip_through_tool(&env, home.path(), "webid");
    let log = std::fs::read_to_string(moto.log_path()).unwrap();
    assert!(
        log.contains("\"POST / HTTP/1.1\" 200"),
        "no STS call in the moto log"
    );
}

#[test]
fn endpoint_from_the_profile_config_is_honoured() {
    let moto = Moto::shared();
    let home = harness::scratch("aws-home-");
    let dot_aws = home.path().join(".aws");
    std::fs::create_dir_all(&dot_aws).unwrap();
    std::fs::write(
        dot_aws.join("config"),
        format!("[default]\nendpoint_url = {}\n", moto.endpoint()),
    )
    .unwrap();
    std::fs::write(
        dot_aws.join("credentials"),
        "[default]\naws_access_key_id = testing\naws_secret_access_key = testing\n",
    )
    .unwrap();
    let env = [
        kv("HOME", home.path().to_string_lossy()),
        kv("AWS_EC2_METADATA_DISABLED", "true"),
    ];
    round_trip_through_tool(&env, home.path(), "config");
}

/// init, put, get, destroy through `jobstore-tool` with `env`.
fn round_trip_through_tool(env: &[(String, String)], dir: &Path, prefix: &str) -> Value {
    let locator = aws(&unique_name(prefix));
    let (code, v) = tool(&["--jobstore", &locator, "init"], env);
    assert_eq!(
        (code, &v["result"]["created"]),
        (0, &Value::Bool(true)),
        "{v}"
    );
    let src = dir.join("src.bin");
    let (code, v) = tool(&["gen", src.to_str().unwrap(), "12"], env);
    assert_eq!(code, 0, "{v}");
    let (code, put) = tool(
        &[
            "--jobstore",
            &locator,
            "put",
            "files/x",
            src.to_str().unwrap(),
        ],
        env,
    );
    assert_eq!(code, 0, "{put}");
    let dest = dir.join("dest.bin");
    let (code, got) = tool(
        &[
            "--jobstore",
            &locator,
            "get",
            "files/x",
            dest.to_str().unwrap(),
        ],
        env,
    );
    assert_eq!(code, 0, "{got}");
    assert_eq!(put["result"], got["result"], "same size and sha256");
    assert_eq!(std::fs::read(&src).unwrap(), std::fs::read(&dest).unwrap());
    let (code, v) = tool(&["--jobstore", &locator, "destroy"], env);
    assert_eq!(code, 0, "{v}");
    put
}

#[test]
fn fault_injection_from_the_environment_is_survived() {
    let moto = Moto::shared();
    let dir = harness::scratch("faults-env-");
    let mut env = moto.env();
    env.push(kv("HOME", dir.path().to_string_lossy()));
    env.push(kv("TOIL_JOBSTORE_FAIL_FIRST_N", "2"));
    // 12 MiB: two parts of the default 8 MiB, every request failing twice.
    let put = round_trip_through_tool(&env, dir.path(), "envfaults");
    let faults = put["requests"]["faults_injected"].as_u64().unwrap();
    let total = put["requests"]["total"].as_u64().unwrap();
    // create + 2 parts + complete, each failed twice then let through (a
    // complete whose answer was lost costs a check more).
    assert!(faults >= 8 && total - faults >= 4, "{put}");

    env.pop();
    env.push(kv("TOIL_JOBSTORE_FAIL_FIRST_N", "lots"));
    let (code, v) = tool(&["--jobstore", &aws("x"), "exists"], &env);
    assert_eq!(code, 1);
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("TOIL_JOBSTORE_FAIL_FIRST_N"),
        "{v}"
    );
}

#[tokio::test]
async fn a_bucket_of_another_account_is_refused() {
    let moto = Moto::shared();
    let name = unique_name("taken");
    let locator = Locator::Aws {
        region: REGION.into(),
        name: name.clone(),
    };
    let bucket = locator.bucket().unwrap();
    // moto takes the caller's account from this header.
    moto.s3_client()
        .await
        .create_bucket()
        .bucket(&bucket)
        .customize()
        .mutate_request(|req| {
            req.headers_mut()
                .insert("x-moto-account-id", "111111111111");
        })
        .send()
        .await
        .unwrap();
    let store = JobStore::open_with(&locator, moto.s3_options())
        .await
        .unwrap();
    let msg = permanent_message(store.initialize().await.unwrap_err());
    assert!(msg.contains("owned by another AWS account"), "{msg}");
    assert!(msg.contains("choose another job store name"), "{msg}");
    assert!(msg.contains(&bucket), "{msg}");
}

#[tokio::test]
async fn a_bucket_holding_other_data_is_refused() {
    let moto = Moto::shared();
    let locator = Locator::Aws {
        region: REGION.into(),
        name: unique_name("busy"),
    };
    let bucket = locator.bucket().unwrap();
    let client = moto.s3_client().await;
    client.create_bucket().bucket(&bucket).send().await.unwrap();
    client
        .put_object()
        .bucket(&bucket)
        .key("data.csv")
        .body(Bytes::from_static(b"a,b\n").into())
        .send()
        .await
        .unwrap();
    let store = JobStore::open_with(&locator, moto.s3_options())
        .await
        .unwrap();
    let msg = permanent_message(store.initialize().await.unwrap_err());
    assert!(msg.contains("not a job store"), "{msg}");
    assert!(msg.contains("choose another job store name"), "{msg}");
    let msg = permanent_message(store.destroy().await.unwrap_err());
    assert!(msg.contains("refusing to delete"), "{msg}");
    let listed = client
        .list_objects_v2()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.contents().len(), 1, "the other data is untouched");
}

#[tokio::test]
async fn an_invalid_bucket_name_is_refused_before_any_request() {
    let moto = Moto::shared();
    let opts = moto.s3_options();
    let stats = opts.stats.clone();
    let locator = Locator::parse("aws:us-east-1:my..run").unwrap();
    let msg = permanent_message(JobStore::open_with(&locator, opts).await.unwrap_err());
    assert!(
        msg.contains("my..run--toil is not a valid S3 bucket name"),
        "{msg}"
    );
    assert!(
        msg.contains("choose another NAME in aws:REGION:NAME"),
        "{msg}"
    );
    assert_eq!(stats.snapshot().total(), 0);
}

#[tokio::test]
async fn a_bucket_in_another_region_names_the_right_locator() {
    let moto = Moto::shared();
    let name = unique_name("west");
    let west = Locator::Aws {
        region: "us-west-2".into(),
        name: name.clone(),
    };
    let store = JobStore::open_with(&west, moto.s3_options()).await.unwrap();
    assert!(store.initialize().await.unwrap());
    let east = Locator::Aws {
        region: "us-east-1".into(),
        name: name.clone(),
    };
    let store = JobStore::open_with(&east, moto.s3_options()).await.unwrap();
    let msg = permanent_message(store.initialize().await.unwrap_err());
    assert!(
        msg.contains("is in region us-west-2, not us-east-1"),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("use --jobStore aws:us-west-2:{name}")),
        "{msg}"
    );
}

#[tokio::test]
async fn transient_errors_are_retried_then_reported() {
    let moto = Moto::shared();
    let locator = Locator::Aws {
        region: REGION.into(),
        name: unique_name("flaky"),
    };
    let retry = RetryOptions {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(10),
    };
    let healthy = JobStore::open_with(
        &locator,
        S3Options {
            retry: retry.clone(),
            ..moto.s3_options()
        },
    )
    .await
    .unwrap();
    assert!(healthy.initialize().await.unwrap());

    // Two failures per request: three attempts get through.
    let opts = S3Options {
        retry: retry.clone(),
        faults: Some(FaultConfig::fail_first(2)),
        ..moto.s3_options()
    };
    let stats = opts.stats.clone();
    let flaky = JobStore::open_with(&locator, opts).await.unwrap();
    flaky
        .put_bytes("k", Bytes::from_static(b"v"), Condition::Always)
        .await
        .unwrap();
    let c = stats.snapshot();
    assert_eq!((c.put, c.faults_injected), (3, 2), "{c:?}");

    // Five failures per request: three attempts are not enough.
    let opts = S3Options {
        retry,
        faults: Some(FaultConfig::fail_first(5)),
        ..moto.s3_options()
    };
    let stats = opts.stats.clone();
    let broken = JobStore::open_with(&locator, opts).await.unwrap();
    // (Separate keys: the injected failures are counted per request.)
    for (key, cond) in [("k2", Condition::Always), ("k3", Condition::IfAbsent)] {
        let e = broken
            .put_bytes(key, Bytes::from_static(b"v"), cond.clone())
            .await
            .unwrap_err();
        assert!(e.is_retryable(), "{cond:?}: {e}");
        assert!(matches!(e, Error::Transient { .. }), "{e:?}");
    }
    let c = stats.snapshot();
    assert_eq!(
        (c.put, c.faults_injected),
        (6, 6),
        "3 attempts each, no more"
    );
    healthy.destroy().await.unwrap();
}

#[tokio::test]
async fn a_failed_multipart_upload_is_aborted() {
    let moto = Moto::shared();
    let locator = Locator::Aws {
        region: REGION.into(),
        name: unique_name("abort"),
    };
    let base = S3Options {
        transfer: TransferOptions {
            part_size: 5 << 20,
            concurrency: 2,
            download_concurrency: 1,
        },
        retry: RetryOptions {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(10),
        },
        ..moto.s3_options()
    };
    let healthy = JobStore::open_with(&locator, base.clone()).await.unwrap();
    assert!(healthy.initialize().await.unwrap());
    // The second part of every upload always fails.
    let broken = JobStore::open_with(
        &locator,
        S3Options {
            faults: Some(FaultConfig {
                fail_first_n: 100,
                only_uri_containing: Some("partNumber=2&".into()),
            }),
            ..base
        },
    )
    .await
    .unwrap();
    let dir = harness::scratch("abort-");
    let src = dir.path().join("src.bin");
    std::fs::write(&src, vec![42u8; (12 << 20) + 5]).unwrap();

    let e = broken.put_file("files/x", &src).await.unwrap_err();
    assert!(e.is_retryable(), "{e}");
    assert_eq!(healthy.size("files/x").await.unwrap(), None, "no object");
    let uploads = moto
        .s3_client()
        .await
        .list_multipart_uploads()
        .bucket(locator.bucket().unwrap())
        .send()
        .await
        .unwrap();
    assert!(uploads.uploads().is_empty(), "aborted: {uploads:?}");

    let t = healthy.put_file("files/x", &src).await.unwrap();
    assert_eq!(t.size, (12 << 20) + 5);
    healthy.destroy().await.unwrap();
}

/// Creates an IAM user with no policy in an IAM-enforcing moto, with
/// boto3 from the test venv; returns its access key.
fn iam_user_without_permissions(moto: &Moto) -> StaticCredentials {
    let script = r#"
import boto3, json, sys
iam = boto3.client("iam", endpoint_url=sys.argv[1], region_name="us-east-1",
                   aws_access_key_id="testing", aws_secret_access_key="testing")
iam.create_user(UserName="nobody")
k = iam.create_access_key(UserName="nobody")["AccessKey"]
print(json.dumps({"id": k["AccessKeyId"], "secret": k["SecretAccessKey"]}))
"#;
    let out = Command::new(harness::venv_bin("python"))
        .args(["-c", script, moto.endpoint()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    StaticCredentials {
        access_key_id: v["id"].as_str().unwrap().into(),
        secret_access_key: v["secret"].as_str().unwrap().into(),
    }
}

#[tokio::test]
async fn access_denied_and_unknown_keys_name_the_fix() {
    // moto enforces IAM after the first two requests (the user's creation).
    let moto = Moto::start_with_env(&[("INITIAL_NO_AUTH_ACTION_COUNT", "2")]).unwrap();
    let user = iam_user_without_permissions(&moto);
    let name = unique_name("denied");
    let locator = Locator::Aws {
        region: REGION.into(),
        name: name.clone(),
    };
    let bucket = locator.bucket().unwrap();

    let store = JobStore::open_with(
        &locator,
        S3Options {
            credentials: Some(user),
            ..moto.s3_options()
        },
    )
    .await
    .unwrap();
    for e in [
        store.initialize().await.unwrap_err(),
        store.exists().await.unwrap_err(),
    ] {
        let msg = permanent_message(e);
        assert!(msg.starts_with("access denied"), "{msg}");
        assert!(msg.contains(&format!("arn:aws:s3:::{bucket}")), "{msg}");
        assert!(msg.contains("IAM policy"), "{msg}");
    }

    let store = JobStore::open_with(
        &locator,
        S3Options {
            credentials: Some(StaticCredentials {
                access_key_id: "AKIAUNKNOWNUNKNOWN00".into(),
                secret_access_key: "wrong".into(),
            }),
            ..moto.s3_options()
        },
    )
    .await
    .unwrap();
    let msg = permanent_message(store.initialize().await.unwrap_err());
    assert!(
        msg.contains("does not recognise the AWS access key id"),
        "{msg}"
    );
    assert!(msg.contains("fix AWS_ACCESS_KEY_ID"), "{msg}");
}
