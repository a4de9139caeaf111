//! The conformance tests of the workflow tags, run through the loader and
//! this engine with a local executor that runs each tool as the agent would
//! (`tool::resources`, `tool::prepare`, a real process, `tool::collect`) in
//! a temporary directory. Outputs are compared as `cwltest` compares them.
//!
//! Ignored by default (slow, needs the spec directory and python/bash on
//! `PATH`): `cargo test -p toil-cwl workflow::conformance -- --ignored
//! --nocapture`. `CWL_TESTS=id1,id2` runs some tests only; `CWL_TAG=a,b`
//! picks other tags (default: workflow, scatter, subworkflow, conditional,
//! multiple_input, step_input).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::{Map, Value, json};

use super::{EngineOptions, run};
use crate::{CwlError, Executor, Invocation, Runtime};

use crate::spec::spec_dir;

fn yaml_to_json(y: &yaml_rust2::Yaml) -> Value {
    use yaml_rust2::Yaml;
    match y {
        Yaml::String(s) => json!(s),
        Yaml::Integer(i) => json!(i),
        Yaml::Real(r) => json!(r.parse::<f64>().unwrap_or(f64::NAN)),
        Yaml::Boolean(b) => json!(b),
        Yaml::Array(a) => Value::Array(a.iter().map(yaml_to_json).collect()),
        Yaml::Hash(h) => Value::Object(
            h.iter()
                .map(|(k, v)| (k.as_str().unwrap_or("").to_string(), yaml_to_json(v)))
                .collect(),
        ),
        _ => Value::Null,
    }
}

/// The entries of a conformance test list (following `$import`), each with
/// `_dir`, the directory its paths are relative to. Entries are parsed one
/// at a time (yaml-rust2 rejects the flow style of a few).
fn entries(file: &Path) -> Vec<Value> {
    let text = fs::read_to_string(file).unwrap();
    let dir = file.parent().unwrap().to_path_buf();
    let mut chunks: Vec<String> = Vec::new();
    for line in text.lines() {
        if line.starts_with("- ") || chunks.is_empty() {
            chunks.push(String::new());
        }
        let last = chunks.last_mut().unwrap();
        last.push_str(line);
        last.push('\n');
    }
    // The whole file at once when yaml-rust2 accepts it, else entry by entry.
    let whole = yaml_rust2::YamlLoader::load_from_str(&text)
        .ok()
        .and_then(|docs| docs.first().map(yaml_to_json));
    if let Some(Value::Array(_)) = &whole {
        chunks = vec![text.clone()];
    }
    let mut out = Vec::new();
    for c in chunks {
        let Ok(docs) = yaml_rust2::YamlLoader::load_from_str(&c) else {
            if let Some(id) = c.lines().find_map(|l| l.trim().strip_prefix("id: ")) {
                // Still run it (its output is printed, not compared).
                let field = |name: &str| {
                    c.lines().find_map(|l| {
                        let l = l.trim();
                        let l = l.strip_prefix("- ").unwrap_or(l);
                        l.strip_prefix(&format!("{name}: ")).map(str::to_string)
                    })
                };
                let mut t = json!({"id": id, "unparsed": true, "_dir": dir.to_string_lossy()});
                if let Some(tool) = field("tool") {
                    t["tool"] = json!(tool);
                }
                if let Some(job) = field("job") {
                    t["job"] = json!(job);
                }
                out.push(t);
            }
            continue;
        };
        let Some(Value::Array(items)) = docs.first().map(yaml_to_json) else {
            continue;
        };
        for mut item in items {
            if let Some(imp) = item.get("$import").and_then(Value::as_str) {
                out.extend(entries(&dir.join(imp)));
            } else {
                item["_dir"] = json!(dir.to_string_lossy());
                out.push(item);
            }
        }
    }
    out
}

fn uri_to_path(location: &str) -> Option<PathBuf> {
    let rest = location.strip_prefix("file://")?;
    let bytes = rest.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&rest[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    Some(PathBuf::from(String::from_utf8_lossy(&out).into_owned()))
}

/// Runs tools locally, each in its own kept temporary directory.
struct LocalExec;

fn run_local(inv: &Invocation) -> Result<Value, CwlError> {
    let base = tempfile::tempdir()
        .map_err(|e| CwlError::Failed(e.to_string()))?
        .keep();
    let (outdir, tmpdir) = (base.join("out"), base.join("tmp"));
    fs::create_dir_all(&outdir).map_err(|e| CwlError::Failed(e.to_string()))?;
    fs::create_dir_all(&tmpdir).map_err(|e| CwlError::Failed(e.to_string()))?;
    let res = crate::tool::resources(inv)?;
    let rt = Runtime {
        outdir,
        tmpdir,
        cores: res.cores.ceil() as u32,
        ram: res.ram_mib,
        outdir_size: res.outdir_mib,
        tmpdir_size: res.tmpdir_mib,
    };
    let p = crate::tool::prepare(inv, &rt, false)?;
    let io = |r: std::io::Result<fs::File>| r.map_err(|e| CwlError::Failed(e.to_string()));
    let mut cmd = Command::new(&p.argv[0]);
    cmd.args(&p.argv[1..])
        .current_dir(&rt.outdir)
        .env_clear()
        .envs(&p.env)
        .stdin(match &p.stdin {
            Some(f) => Stdio::from(io(fs::File::open(f))?),
            None => Stdio::null(),
        })
        .stdout(match &p.stdout {
            Some(f) => Stdio::from(io(fs::File::create(f))?),
            None => Stdio::null(),
        })
        .stderr(match &p.stderr {
            Some(f) => Stdio::from(io(fs::File::create(f))?),
            None => Stdio::null(),
        });
    let code = match cmd.spawn() {
        Err(_) => 127,
        Ok(mut child) => {
            let limit = p.time_limit.unwrap_or(Duration::from_secs(120));
            let start = Instant::now();
            loop {
                if let Ok(Some(st)) = child.try_wait() {
                    break st.code().unwrap_or(-1);
                }
                if start.elapsed() > limit {
                    let _ = child.kill();
                    let _ = child.wait();
                    break -1;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    crate::tool::collect(inv, &p, &rt, code)
}

impl Executor for LocalExec {
    fn run_tool(
        &self,
        _key: String,
        inv: Invocation,
    ) -> BoxFuture<'static, Result<Value, CwlError>> {
        async move {
            tokio::task::spawn_blocking(move || run_local(&inv))
                .await
                .map_err(|e| CwlError::Failed(e.to_string()))?
        }
        .boxed()
    }

    fn read_file(
        &self,
        location: String,
        limit: usize,
    ) -> BoxFuture<'static, Result<Vec<u8>, CwlError>> {
        async move {
            let path = uri_to_path(&location)
                .ok_or_else(|| CwlError::Failed(format!("not local: {location}")))?;
            let bytes = fs::read(&path)
                .map_err(|e| CwlError::Failed(format!("{}: {e}", path.display())))?;
            Ok(bytes[..bytes.len().min(limit)].to_vec())
        }
        .boxed()
    }
}

fn differ(e: &Value, a: &Value, why: &str) -> String {
    format!("{why}: expected {e} got {a}")
}

/// cwltest's comparison: "Any" matches anything; Files and Directories by
/// basename of `location`, `checksum`, `size`, `listing`.
fn compare(e: &Value, a: &Value) -> Result<(), String> {
    if e == "Any" {
        return if a.is_null() {
            Err(differ(e, a, "missing"))
        } else {
            Ok(())
        };
    }
    match e {
        Value::Object(em) => {
            let Value::Object(am) = a else {
                return Err(differ(e, a, "not an object"));
            };
            let class = em.get("class").and_then(Value::as_str);
            if matches!(class, Some("File") | Some("Directory")) {
                return compare_file(em, am);
            }
            for (k, v) in em {
                compare(v, am.get(k).unwrap_or(&Value::Null)).map_err(|m| format!("{k}: {m}"))?;
            }
            Ok(())
        }
        Value::Array(ea) => {
            let Value::Array(aa) = a else {
                return Err(differ(e, a, "not a list"));
            };
            if ea.len() != aa.len() {
                return Err(differ(e, a, "lengths differ"));
            }
            for (x, y) in ea.iter().zip(aa) {
                compare(x, y)?;
            }
            Ok(())
        }
        Value::Number(n) => match a.as_f64() {
            Some(f) if Some(f) == n.as_f64() => Ok(()),
            _ => Err(differ(e, a, "differ")),
        },
        _ if e == a => Ok(()),
        _ => Err(differ(e, a, "differ")),
    }
}

fn compare_file(e: &Map<String, Value>, a: &Map<String, Value>) -> Result<(), String> {
    let (ev, av) = (Value::Object(e.clone()), Value::Object(a.clone()));
    if e.get("class") != a.get("class") {
        return Err(differ(&ev, &av, "class"));
    }
    if let Some(want) = e
        .get("location")
        .or_else(|| e.get("path"))
        .and_then(Value::as_str)
        && want != "Any"
    {
        let got = a.get("location").and_then(Value::as_str).unwrap_or("");
        let got_base = got.trim_end_matches('/').rsplit('/').next().unwrap_or("");
        let want_base = want.trim_end_matches('/').rsplit('/').next().unwrap_or("");
        if got_base != want_base && a.get("basename").and_then(Value::as_str) != Some(want_base) {
            return Err(differ(&ev, &av, "location"));
        }
    }
    for k in ["checksum", "size", "basename", "contents"] {
        if let Some(want) = e.get(k)
            && want != "Any"
            && a.get(k) != Some(want)
        {
            return Err(differ(&ev, &av, k));
        }
    }
    for k in ["secondaryFiles", "listing"] {
        if let Some(Value::Array(want)) = e.get(k) {
            let got = a
                .get(k)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for w in want {
                if !got.iter().any(|g| compare(w, g).is_ok()) {
                    return Err(differ(&ev, &av, &format!("{k} entry {w} missing")));
                }
            }
        }
    }
    Ok(())
}

async fn run_one(t: &Value) -> Result<Value, CwlError> {
    let dir = PathBuf::from(t["_dir"].as_str().unwrap_or("."));
    let tool = t["tool"].as_str().unwrap_or("");
    let doc = crate::load::load_document(&dir.join(tool))?;
    let job = match t.get("job").and_then(Value::as_str) {
        Some(j) => crate::load::load_job_order(&dir.join(j), &doc)?,
        None => json!({}),
    };
    // What the runner does before importing the input object.
    let reqs = super::reqs::list_of(&doc.process, "requirements");
    let job = crate::tool::discover_secondary_files(&doc.process, reqs, &job)?;
    let exec: Arc<dyn Executor> = Arc::new(LocalExec);
    run(&doc, job, exec, &EngineOptions { no_container: true }).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs the conformance suite's workflow tests: slow, needs the spec directory"]
async fn conformance_workflow_tests() {
    let all = entries(&spec_dir().join("conformance_tests.yaml"));
    let tags: Vec<String> = std::env::var("CWL_TAG")
        .unwrap_or_else(|_| {
            "workflow,scatter,subworkflow,conditional,multiple_input,step_input".into()
        })
        .split(',')
        .map(str::to_string)
        .collect();
    let only: Option<Vec<String>> = std::env::var("CWL_TESTS")
        .ok()
        .map(|s| s.split(',').map(str::to_string).collect());
    let (mut passed, mut failed, mut failures) = (0, 0, Vec::new());
    for t in &all {
        let id = t["id"].as_str().unwrap_or("?").to_string();
        let t_tags: Vec<&str> = t["tags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        // Entries yaml-rust2 cannot parse have no tags: listed as skipped.
        let selected = match &only {
            Some(ids) => ids.contains(&id),
            None => {
                t.get("unparsed").is_some()
                    || tags
                        .iter()
                        .any(|g| g == "all" || t_tags.contains(&g.as_str()))
            }
        };
        if !selected {
            continue;
        }
        if t.get("unparsed").is_some() {
            if t.get("tool").is_some()
                && (only.is_some() || std::env::var_os("CWL_UNPARSED").is_some())
            {
                match run_one(t).await {
                    Ok(out) => println!("RAN  {id} (not compared): {out}"),
                    Err(e) => println!("RAN  {id} (not compared): error {e}"),
                }
            } else {
                println!("SKIP {id} (yaml-rust2 cannot parse its entry)");
            }
            continue;
        }
        if t_tags.contains(&"docker") {
            println!("SKIP {id}");
            continue;
        }
        let should_fail = t.get("should_fail").and_then(Value::as_bool) == Some(true);
        let start = Instant::now();
        let result = run_one(t).await;
        let verdict = match (&result, should_fail) {
            (Err(_), true) => Ok(()),
            (Ok(out), true) => Err(format!("should have failed, gave {}", super::brief(out))),
            (Err(e), false) => Err(format!("error: {e}")),
            (Ok(out), false) => compare(&t["output"], out)
                .map_err(|m| format!("{m}\n   whole output: {}", super::brief(out))),
        };
        match verdict {
            Ok(()) => {
                passed += 1;
                println!("ok   {id} ({:.1}s)", start.elapsed().as_secs_f64());
            }
            Err(m) => {
                failed += 1;
                println!("FAIL {id}: {m}");
                failures.push(id);
            }
        }
    }
    println!("\n{passed} passed, {failed} failed: {}", failures.join(" "));
    assert_eq!(failed, 0, "failed: {}", failures.join(" "));
}
