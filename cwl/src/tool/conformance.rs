//! The conformance tests tagged `command_line_tool` (CommandLineTools and
//! ExpressionTools only), run through the loader, `prepare`, a real process
//! and `collect`, with outputs compared as `cwltest` compares them.
//!
//! Ignored by default (they take a while and need `python` on `PATH`):
//! `cargo test -p toil-cwl conformance -- --ignored --nocapture`; set
//! `CWL_TESTS=id1,id2` to run some only, `CWL_TAG=tag1,tag2` (or `all`) for
//! other tags than `command_line_tool`.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::tests::{Sandbox, spec_dir};
use super::*;
use crate::files::uri_to_path;

fn yaml_entries() -> Vec<Value> {
    entries_of("conformance_tests.yaml")
}

/// The entries of a test index (relative to the spec directory), with
/// `$import`ed indexes expanded and their tool and job paths made relative
/// to the spec directory.
fn entries_of(index: &str) -> Vec<Value> {
    let text = fs::read_to_string(spec_dir().join(index)).unwrap();
    let base = Path::new(index)
        .parent()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let rebase = |p: &str| -> String {
        if base.is_empty() {
            p.to_string()
        } else {
            format!("{base}/{p}")
        }
    };
    let mut chunks: Vec<String> = Vec::new();
    for line in text.lines() {
        if line.starts_with("- ") || chunks.is_empty() {
            chunks.push(String::new());
        }
        let last = chunks.last_mut().unwrap();
        last.push_str(line);
        last.push('\n');
    }
    let mut out = Vec::new();
    for c in chunks {
        // A few entries use a flow style yaml-rust2 rejects; they are
        // reported as skipped.
        match yaml_rust2::YamlLoader::load_from_str(&c) {
            Ok(docs) if !docs.is_empty() => {
                let Value::Array(a) = super::tests::yaml_to_json_pub(&docs[0]) else {
                    continue;
                };
                for mut e in a {
                    if let Some(imp) = e.get("$import").and_then(Value::as_str) {
                        out.extend(entries_of(&rebase(imp)));
                        continue;
                    }
                    for k in ["tool", "job"] {
                        if let Some(p) = e.get(k).and_then(Value::as_str) {
                            e[k] = json!(rebase(p));
                        }
                    }
                    out.push(e);
                }
            }
            _ => {
                if let Some(id) = c.lines().find_map(|l| l.trim().strip_prefix("id: ")) {
                    out.push(json!({"id": id, "unparsed": true}));
                }
            }
        }
    }
    out
}

/// Runs the command as the agent would, killing it after `limit`.
fn execute_with_limit(p: &Prepared, rt: &Runtime) -> i32 {
    let mut cmd = Command::new(&p.argv[0]);
    cmd.args(&p.argv[1..])
        .current_dir(&rt.outdir)
        .env_clear()
        .envs(&p.env);
    cmd.stdin(match &p.stdin {
        Some(f) => match fs::File::open(f) {
            Ok(f) => Stdio::from(f),
            Err(_) => return 1,
        },
        None => Stdio::null(),
    });
    cmd.stdout(match &p.stdout {
        Some(f) => Stdio::from(fs::File::create(f).unwrap()),
        None => Stdio::null(),
    });
    cmd.stderr(match &p.stderr {
        Some(f) => Stdio::from(fs::File::create(f).unwrap()),
        None => Stdio::null(),
    });
    let Ok(mut child) = cmd.spawn() else {
        return 127;
    };
    let limit = p.time_limit.unwrap_or(Duration::from_secs(60));
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st.code().unwrap_or(-1);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return -1;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn run_test(t: &Value) -> Result<Value, String> {
    let dir = spec_dir();
    let tool = t["tool"].as_str().ok_or("no tool")?;
    let doc = crate::load::load_document(&dir.join(tool)).map_err(|e| format!("load: {e}"))?;
    let job = match t.get("job").and_then(Value::as_str) {
        Some(j) => {
            crate::load::load_job_order(&dir.join(j), &doc).map_err(|e| format!("job: {e}"))?
        }
        None => json!({}),
    };
    let process = (*doc.process).clone();
    let inputs = process["inputs"].as_array().cloned().unwrap_or_default();
    let raw_job = job.clone();
    let job = crate::types::validate_inputs(&inputs, &job).map_err(|e| format!("inputs: {e}"))?;
    // As the runner: the top-level inputs' secondary files (defaults
    // included) are looked for beside them.
    let reqs = process
        .get("requirements")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let job =
        discover_secondary_files(&process, &reqs, &job).map_err(|e| format!("inputs: {e}"))?;
    let list = |k: &str| {
        process
            .get(k)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    // `cwl:requirements` of the job object override the tool's (the
    // runner's work; done here to reach the tool's part of those tests).
    let mut requirements: Vec<Value> = raw_job
        .get("cwl:requirements")
        .or_else(|| raw_job.get("https://w3id.org/cwl/cwl#requirements"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for r in list("requirements") {
        if !requirements
            .iter()
            .any(|x| x.get("class") == r.get("class"))
        {
            requirements.push(r);
        }
    }
    let inv = Invocation {
        requirements,
        hints: list("hints"),
        tool: process.clone(),
        job,
        namespaces: doc.namespaces.clone(),
    };
    match process["class"].as_str() {
        Some("ExpressionTool") => {
            let mut read = |loc: &str, limit: usize| -> Result<Vec<u8>, CwlError> {
                let p = uri_to_path(loc).ok_or_else(|| CwlError::Failed(loc.to_string()))?;
                crate::files::read_prefix(&p, limit).map_err(|e| CwlError::Failed(e.to_string()))
            };
            run_expression_tool(&inv, &mut read).map_err(|e| e.to_string())
        }
        Some("CommandLineTool") => {
            let mut sb = Sandbox::new();
            let res = resources(&inv).map_err(|e| format!("resources: {e}"))?;
            sb.rt.cores = res.cores.ceil() as u32;
            sb.rt.ram = res.ram_mib;
            sb.rt.outdir_size = res.outdir_mib;
            sb.rt.tmpdir_size = res.tmpdir_mib;
            let p = prepare(&inv, &sb.rt, false).map_err(|e| format!("prepare: {e}"))?;
            let code = execute_with_limit(&p, &sb.rt);
            let out = collect(&inv, &p, &sb.rt, code).map_err(|e| format!("collect: {e}"))?;
            // Keep the sandbox alive until the comparison reads the files.
            std::mem::forget(sb);
            Ok(out)
        }
        Some("Workflow") | Some("Operation") => run_workflow(&doc, inv.job.clone()),
        other => Err(format!("skip: class {other:?}")),
    }
}

/// Runs each CommandLineTool invocation of a workflow in its own sandbox on
/// this machine (the sandboxes are kept: outputs point into them).
struct LocalExec;

fn run_tool_locally(inv: Invocation) -> Result<Value, CwlError> {
    let mut sb = Sandbox::new();
    let res = resources(&inv)?;
    sb.rt.cores = res.cores.ceil() as u32;
    sb.rt.ram = res.ram_mib;
    sb.rt.outdir_size = res.outdir_mib;
    sb.rt.tmpdir_size = res.tmpdir_mib;
    let p = prepare(&inv, &sb.rt, false)?;
    let code = execute_with_limit(&p, &sb.rt);
    let out = collect(&inv, &p, &sb.rt, code);
    std::mem::forget(sb);
    out
}

impl crate::Executor for LocalExec {
    fn run_tool(
        &self,
        _key: String,
        inv: Invocation,
    ) -> futures::future::BoxFuture<'static, Result<Value, CwlError>> {
        Box::pin(async move {
            tokio::task::spawn_blocking(move || run_tool_locally(inv))
                .await
                .map_err(|e| CwlError::Failed(format!("tool task: {e}")))?
        })
    }

    fn read_file(
        &self,
        location: String,
        limit: usize,
    ) -> futures::future::BoxFuture<'static, Result<Vec<u8>, CwlError>> {
        Box::pin(async move {
            let p = uri_to_path(&location)
                .ok_or_else(|| CwlError::Failed(format!("not local: {location}")))?;
            crate::files::read_prefix(&p, limit).map_err(|e| CwlError::Failed(e.to_string()))
        })
    }
}

fn run_workflow(doc: &crate::Document, job: Value) -> Result<Value, String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let exec: std::sync::Arc<dyn crate::Executor> = std::sync::Arc::new(LocalExec);
    // More fields may come with the engine.
    #[allow(clippy::needless_update)]
    let opts = crate::workflow::EngineOptions {
        no_container: true,
        ..Default::default()
    };
    let mut out = rt
        .block_on(crate::workflow::run(doc, job, exec, &opts))
        .map_err(|e| format!("workflow: {e}"))?;
    materialize_literals(&mut out)?;
    Ok(out)
}

/// Writes File literals of a final output (as the runner's export does).
fn materialize_literals(v: &mut Value) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?.keep();
    let mut n = 0;
    crate::files::try_walk_mut(v, &mut |m| {
        if m.get("class").and_then(Value::as_str) == Some("File")
            && !m.contains_key("location")
            && let Some(c) = m.get("contents").and_then(Value::as_str)
        {
            n += 1;
            let d = dir.join(n.to_string());
            let base = m
                .get("basename")
                .and_then(Value::as_str)
                .unwrap_or("literal")
                .to_string();
            let _ = fs::create_dir_all(&d);
            let p = d.join(base);
            fs::write(&p, c).map_err(|e| CwlError::Failed(e.to_string()))?;
            let (sum, size) =
                crate::files::sha1_file(&p).map_err(|e| CwlError::Failed(e.to_string()))?;
            m.insert("location".into(), json!(crate::files::path_to_uri(&p)));
            m.insert("checksum".into(), json!(sum));
            m.insert("size".into(), json!(size));
        }
        Ok(())
    })
    .map_err(|e| e.to_string())
}

fn fail(e: &Value, a: &Value, why: &str) -> String {
    format!("{why}: expected {e} got {a}")
}

fn compare(e: &Value, a: &Value) -> Result<(), String> {
    if e == "Any" {
        return Ok(());
    }
    if !e.is_null() && a.is_null() {
        return Err(fail(e, a, "missing"));
    }
    match e {
        Value::Object(em) => {
            let Value::Object(am) = a else {
                return Err(fail(e, a, "not an object"));
            };
            match em.get("class").and_then(Value::as_str) {
                Some("File") | Some("Directory") => compare_file(em, am),
                _ => {
                    for (k, v) in em {
                        compare(v, am.get(k).unwrap_or(&Value::Null))
                            .map_err(|m| format!("key {k}: {m}"))?;
                    }
                    for (k, v) in am {
                        if !em.contains_key(k) && !v.is_null() {
                            return Err(format!("unexpected key {k}"));
                        }
                    }
                    Ok(())
                }
            }
        }
        Value::Array(ea) => {
            let Value::Array(aa) = a else {
                return Err(fail(e, a, "not a list"));
            };
            if ea.len() != aa.len() {
                return Err(fail(e, a, "lengths differ"));
            }
            for (x, y) in ea.iter().zip(aa) {
                compare(x, y)?;
            }
            Ok(())
        }
        Value::Number(n) => match a.as_f64() {
            Some(f) if Some(f) == n.as_f64() => Ok(()),
            _ => Err(fail(e, a, "differ")),
        },
        _ if e == a => Ok(()),
        _ => Err(fail(e, a, "differ")),
    }
}

fn compare_file(
    e: &serde_json::Map<String, Value>,
    a: &serde_json::Map<String, Value>,
) -> Result<(), String> {
    let ev = Value::Object(e.clone());
    let av = Value::Object(a.clone());
    let loc = a
        .get("location")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let path = uri_to_path(loc);
    if e.get("class") == Some(&json!("Directory")) {
        let Some(Value::Array(al)) = a.get("listing") else {
            return Err(fail(&ev, &av, "no listing"));
        };
        for x in e
            .get("listing")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if !al.iter().any(|y| compare(x, y).is_ok()) {
                return Err(fail(&ev, &av, &format!("{x} not in listing")));
            }
        }
    }
    if let Some(want) = e
        .get("location")
        .or_else(|| e.get("path"))
        .and_then(Value::as_str)
        && want != "Any"
    {
        let got = loc.trim_end_matches('/');
        let want_enc = crate::files::percent_encode(want);
        if !(got.ends_with(&format!("/{want}")) || got.ends_with(&format!("/{want_enc}"))) {
            return Err(fail(&ev, &av, "location"));
        }
        if path.as_ref().is_none_or(|p| !p.exists()) {
            return Err(fail(&ev, &av, "does not exist"));
        }
    }
    if let Some(c) = e.get("contents") {
        let text = path.as_ref().and_then(|p| fs::read_to_string(p).ok());
        if text.as_deref() != c.as_str() {
            return Err(fail(&ev, &av, "contents"));
        }
    }
    if a.get("class") == Some(&json!("File")) {
        for k in ["checksum", "size"] {
            if let Some(x) = e.get(k)
                && compare(x, a.get(k).unwrap_or(&Value::Null)).is_err()
            {
                return Err(fail(&ev, &av, k));
            }
        }
    }
    for (k, v) in e {
        if [
            "path", "location", "listing", "contents", "checksum", "size",
        ]
        .contains(&k.as_str())
        {
            continue;
        }
        compare(v, a.get(k).unwrap_or(&Value::Null)).map_err(|m| format!("{k}: {m}"))?;
    }
    Ok(())
}

#[test]
#[ignore = "slow; run with --ignored (needs the loader, expressions and python)"]
fn conformance_command_line_tools() {
    let only: Option<Vec<String>> = std::env::var("CWL_TESTS")
        .ok()
        .map(|s| s.split(',').map(str::to_string).collect());
    let tag = std::env::var("CWL_TAG").unwrap_or_else(|_| "command_line_tool".into());
    let mut passed = 0;
    let mut failed = Vec::new();
    let mut skipped = Vec::new();
    for t in yaml_entries() {
        let id = t["id"].as_str().unwrap_or("?").to_string();
        if let Some(o) = &only {
            if !o.contains(&id) {
                continue;
            }
        } else if !t["tags"].as_array().is_some_and(|a| {
            a.iter()
                .any(|x| tag.split(',').any(|want| x == want || want == "all"))
        }) {
            continue;
        }
        if t.get("unparsed").is_some() {
            skipped.push(format!("{id}: entry not parsed"));
            continue;
        }
        let should_fail = t["should_fail"] == json!(true);
        let got = run_test(&t);
        let verdict = match (&got, should_fail) {
            (Err(m), _) if m.starts_with("skip") || m.contains("unsupported: ") => {
                skipped.push(format!("{id}: {m}"));
                continue;
            }
            (Err(_), true) => Ok(()),
            (Ok(out), true) => Err(format!("should have failed, gave {out}")),
            (Err(m), false) => Err(m.clone()),
            (Ok(out), false) => compare(&t["output"], out),
        };
        match verdict {
            Ok(()) => passed += 1,
            Err(m) => {
                let mut m = m;
                m.truncate(600);
                eprintln!("FAIL {id}: {m}");
                failed.push(id);
            }
        }
    }
    eprintln!(
        "conformance ({tag}): {passed} passed, {} failed, {} skipped",
        failed.len(),
        skipped.len()
    );
    for s in &skipped {
        eprintln!("  skipped {s}");
    }
    eprintln!("failed: {}", failed.join(","));
    assert!(
        failed.is_empty(),
        "{} conformance tests failed",
        failed.len()
    );
}

#[test]
fn cwltest_style_comparison() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("foo.txt");
    fs::write(&p, "abc").unwrap();
    let actual = json!({"class": "File", "location": crate::files::path_to_uri(&p),
                        "size": 3, "checksum": "sha1$a9993e364706816aba3e25717850c26c9cd0d89d"});
    let expected = json!({"class": "File", "location": "foo.txt", "size": 3,
                          "checksum": "sha1$a9993e364706816aba3e25717850c26c9cd0d89d"});
    assert!(compare(&expected, &actual).is_ok());
    let wrong = json!({"class": "File", "location": "bar.txt"});
    assert!(compare(&wrong, &actual).is_err());
    assert!(compare(&json!({"a": 1}), &json!({"a": 1, "b": 2})).is_err());
    assert!(compare(&json!({"a": 1}), &json!({"a": 1.0, "b": null})).is_ok());
}
