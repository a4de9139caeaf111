//! Tests of the loader.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};


use super::*;

/// The CWL v1.2 specification directory (conformance tests).
fn spec_dir() -> PathBuf {
    let dir = std::env::var_os("CWL_SPEC_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/cwl-v1.2"),
        PathBuf::from,
    );
    assert!(
        dir.join("conformance_tests.yaml").exists(),
        "the CWL spec is not at {}: set CWL_SPEC_DIR to the cwl-v1.2 checkout",
        dir.display()
    );
    dir
}

/// One conformance test: tool path (with fragment), job path, should_fail.
struct Case {
    id: String,
    tool: String,
    job: Option<PathBuf>,
    should_fail: bool,
}

fn conformance_cases() -> Vec<Case> {
    // The index files use flow mappings that yaml-rust2 rejects (a closing
    // bracket less indented than its key), so read the few keys we need
    // line by line: every test starts with "- " at column 1.
    fn walk(path: &Path, out: &mut Vec<Case>) {
        let text = std::fs::read_to_string(path).unwrap();
        let dir = path.parent().unwrap();
        let mut cur: Option<Case> = None;
        let value = |l: &str| l.split_once(':').unwrap().1.trim().trim_matches('"').to_string();
        let mut flush = |c: Option<Case>, out: &mut Vec<Case>| {
            if let Some(c) = c
                && !c.tool.is_empty()
            {
                out.push(c);
            }
        };
        for line in text.lines() {
            let (starts, body) = match line.strip_prefix("- ") {
                Some(b) => (true, b),
                None => (false, line.strip_prefix("  ").unwrap_or("")),
            };
            if starts {
                flush(cur.take(), out);
                if body.starts_with("$import:") {
                    walk(&dir.join(value(body)), out);
                    continue;
                }
                cur = Some(Case { id: String::new(), tool: String::new(), job: None, should_fail: false });
            }
            let Some(c) = cur.as_mut() else { continue };
            if body.starts_with("tool:") {
                c.tool = dir.join(value(body)).to_string_lossy().into_owned();
            } else if body.starts_with("job:") {
                let j = value(body);
                c.job = (j != "null").then(|| dir.join(j));
            } else if body.starts_with("id:") {
                c.id = value(body);
            } else if body.starts_with("should_fail:") {
                c.should_fail = value(body).eq_ignore_ascii_case("true");
            }
        }
        flush(cur.take(), out);
    }
    let mut out = Vec::new();
    walk(&spec_dir().join("conformance_tests.yaml"), &mut out);
    out
}

#[test]
fn every_conformance_document_loads() {
    let cases = conformance_cases();
    assert_eq!(cases.len(), 378, "the suite has 378 tests");
    let mut loaded = 0;
    let mut failures = Vec::new();
    let mut rejected_should_fail = Vec::new();
    for c in &cases {
        match load_document(Path::new(&c.tool)) {
            Ok(doc) => {
                loaded += 1;
                if let Some(job) = &c.job
                    && let Err(e) = load_job_order(job, &doc)
                {
                    failures.push(format!("{} job {}: {e}", c.id, job.display()));
                }
            }
            Err(e) if c.should_fail => rejected_should_fail.push(format!("{}: {e}", c.id)),
            Err(e) => failures.push(format!("{} ({}): {e}", c.id, c.tool)),
        }
    }
    eprintln!(
        "{loaded} of {} conformance tests load; {} should_fail tests rejected at load:\n{}",
        cases.len(),
        rejected_should_fail.len(),
        rejected_should_fail.join("\n")
    );
    assert!(failures.is_empty(), "{} failed:\n{}", failures.len(), failures.join("\n"));
}

/// Prints the normalized form of `$CWL_PRINT` (a debugging aid:
/// `CWL_PRINT=tool.cwl cargo test -p toil-cwl print_normalized -- --ignored --nocapture`).
#[test]
#[ignore = "a debugging aid, not a test"]
fn print_normalized() {
    let path = std::env::var("CWL_PRINT").expect("set CWL_PRINT");
    match load_document(Path::new(&path)) {
        Ok(doc) => println!("{}", serde_json::to_string_pretty(&*doc.process).unwrap()),
        Err(e) => println!("error: {e}"),
    }
}
