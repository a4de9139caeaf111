//! Property tests: whatever bytes or YAML a workflow file holds, the parser
//! answers with a workflow or diagnostics, never a panic, and a workflow it
//! accepts holds only values inside the limits.

use std::path::Path;

use proptest::prelude::*;

use super::*;

/// A valid workflow to mutate.
const BASE: &str = r#"
name: fuzz
defaults: {cores: 1, memory: 64Mi, retries: 1}
jobs:
  a:
    command: "echo a > a.txt"
    outputs: {out: a.txt}
  b:
    scatter: {i: {range: 3}}
    command: ["sh", "-c", "cat a.txt"]
    inputs: [{from: a.out}]
    time_limit: 10s
  c:
    after: [b]
    command: &cmd "true"
    env: {X: *cmd}
outputs:
  out: a.out
"#;

fn parse(text: &str) -> Result<Workflow, Diagnostics> {
    // A base directory with no files: local inputs are reported missing.
    parse_str(
        text,
        Path::new("fuzz.yaml"),
        Path::new("/nonexistent-toil-fuzz"),
    )
}

/// Scalars chosen to sit on the edges the parser must refuse cleanly.
fn scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("18446744073709551615".to_string()),
        Just("18446744073709551616".to_string()),
        Just("4294967297".to_string()),
        Just("-1".to_string()),
        Just("1e400".to_string()),
        Just("0.0001".to_string()),
        Just("NaN".to_string()),
        Just("1Gi".to_string()),
        Just("18446744073709551615s".to_string()),
        Just("~".to_string()),
        Just("\"\"".to_string()),
        Just("'../x'".to_string()),
        Just("/etc/passwd".to_string()),
        Just("a.out".to_string()),
        Just("\"{{x}}\"".to_string()),
        Just("!!binary aGk=".to_string()),
        Just("*a".to_string()),
        Just("&a x".to_string()),
        "[a-z]{1,8}",
        any::<u64>().prop_map(|n| n.to_string()),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("jobs"),
        Just("name"),
        Just("defaults"),
        Just("outputs"),
        Just("command"),
        Just("cores"),
        Just("memory"),
        Just("disk"),
        Just("gpus"),
        Just("retries"),
        Just("time_limit"),
        Just("scatter"),
        Just("range"),
        Just("inputs"),
        Just("from"),
        Just("path"),
        Just("as"),
        Just("after"),
        Just("env"),
        Just("image"),
        Just("a"),
        Just("<<"),
    ]
    .prop_map(str::to_string)
}

/// A YAML value in flow style: scalars, lists and maps of the format's keys.
fn value() -> impl Strategy<Value = String> {
    scalar().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6)
                .prop_map(|v| format!("[{}]", v.join(", "))),
            proptest::collection::vec((key(), inner), 0..6).prop_map(|kv| {
                let items: Vec<String> = kv.into_iter().map(|(k, v)| format!("{k}: {v}")).collect();
                format!("{{{}}}", items.join(", "))
            }),
        ]
    })
}

/// Every number in an accepted workflow is one the leader can hold.
fn check_accepted(wf: &Workflow) -> Result<(), TestCaseError> {
    use limits::*;
    for j in &wf.jobs {
        prop_assert!(!j.name.is_empty());
        prop_assert!(j.millicores.unwrap_or(0) <= MAX_MILLICORES, "{}", j.name);
        prop_assert!(j.memory.unwrap_or(0) <= MAX_BYTES, "{}", j.name);
        prop_assert!(j.disk.unwrap_or(0) <= MAX_BYTES, "{}", j.name);
        prop_assert!(j.gpus <= MAX_GPUS, "{}", j.name);
        prop_assert!(
            j.time_limit.unwrap_or_default() <= MAX_TIME_LIMIT,
            "{}",
            j.name
        );
        if let Some(s) = &j.scatter {
            prop_assert!(s.values.len() <= MAX_SCATTER, "{}", j.name);
        }
    }
    Ok(())
}

proptest! {
    // Each case parses a few hundred bytes: 256 cases take well under a
    // second per property.
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let text = String::from_utf8_lossy(&bytes);
        if let Ok(wf) = parse(&text) {
            check_accepted(&wf)?;
        }
    }

    #[test]
    fn structured_yaml_never_panics(
        top in proptest::collection::vec((key(), value()), 0..6),
        jobs in proptest::collection::vec(("[a-c]", value()), 0..4),
    ) {
        let mut text = String::new();
        for (k, v) in top {
            text.push_str(&format!("{k}: {v}\n"));
        }
        if !jobs.is_empty() {
            text.push_str("jobs:\n");
            for (name, v) in jobs {
                text.push_str(&format!("  {name}: {v}\n"));
            }
        }
        match parse(&text) {
            Ok(wf) => check_accepted(&wf)?,
            Err(d) => prop_assert!(!d.to_string().is_empty(), "an error says something"),
        }
    }

    #[test]
    fn a_mutated_workflow_never_panics(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), 0usize..24, scalar()), 1..4),
    ) {
        let mut text = BASE.to_string();
        for (at, cut, insert) in edits {
            let mut i = at.index(text.len() + 1);
            while !text.is_char_boundary(i) {
                i -= 1;
            }
            let mut end = (i + cut).min(text.len());
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.replace_range(i..end, &insert);
        }
        if let Ok(wf) = parse(&text) {
            check_accepted(&wf)?;
        }
    }
}

#[test]
fn the_base_workflow_parses() {
    let wf = parse(BASE).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(wf.jobs.len(), 3);
}
