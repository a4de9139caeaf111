//! Tests of the loader.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use serde_json::json;

use super::*;

use crate::spec::spec_dir;

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
        let value = |l: &str| {
            l.split_once(':')
                .unwrap()
                .1
                .trim()
                .trim_matches('"')
                .to_string()
        };
        let flush = |c: Option<Case>, out: &mut Vec<Case>| {
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
                cur = Some(Case {
                    id: String::new(),
                    tool: String::new(),
                    job: None,
                    should_fail: false,
                });
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
    // The should_fail tests whose documents cwltool's validator rejects too.
    for id in [
        "timelimit_invalid",
        "all_non_null_multi_with_non_array_output",
        "all_non_null_multi_with_non_array_output_nojs",
        "invalid_syntax_v10_uses_v12_tool",
        "invalid_syntax_v11_uses_v12_tool",
        "invalid_syntax_v10_uses_v12_workflow",
        "invalid_syntax_v11_uses_v12_workflow",
        "invalid_syntax_mixed_v12_workflow",
    ] {
        assert!(
            rejected_should_fail
                .iter()
                .any(|r| r.starts_with(&format!("{id}: "))),
            "{id} should be rejected at load"
        );
    }
    assert!(
        failures.is_empty(),
        "{} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
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

// ---- helpers ----

const TOOL_HEAD: &str = "cwlVersion: v1.2\nclass: CommandLineTool\n";

fn load_str(text: &str) -> Result<serde_json::Value, CwlError> {
    load_document_from_str(text, Path::new("/virtual/dir/t.cwl"), None)
        .map(|d| (*d.process).clone())
}

fn invalid(text: &str) -> String {
    match load_str(text) {
        Err(CwlError::Invalid(m)) => m,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

const ID: &str = "file:///virtual/dir/t.cwl";

// ---- YAML tree ----

#[test]
fn yaml_tree_has_positions_and_typed_scalars() {
    let file: std::sync::Arc<str> = std::sync::Arc::from("f.yml");
    let root = node::parse(
        "a: 1\nb:\n  - x\n  - 2.5\nc: \"true\"\nd: true\ne: ~\nf: .5\n",
        &file,
    )
    .unwrap();
    let b = root.get("b").unwrap();
    assert_eq!((b.pos.line, b.pos.col), (3, 3));
    assert_eq!(b.items().unwrap()[1].v, node::V::Float(2.5));
    assert_eq!(root.get("a").unwrap().v, node::V::Int(1));
    assert_eq!(root.get("c").unwrap().v, node::V::Str("true".into()));
    assert_eq!(root.get("d").unwrap().v, node::V::Bool(true));
    assert!(root.get("e").unwrap().is_null());
    assert_eq!(root.get("f").unwrap().v, node::V::Float(0.5));
    assert_eq!(root.entry("c").unwrap().key_pos.line, 5);
}

#[test]
fn yaml_errors_have_positions() {
    let e = invalid("cwlVersion: v1.2\nclass: CommandLineTool\ninputs: [a, b\n");
    assert!(e.starts_with("/virtual/dir/t.cwl:"), "{e}");
    assert!(e.contains("invalid YAML"), "{e}");
    let e = invalid("cwlVersion: v1.2\ncwlVersion: v1.2\n");
    assert!(e.contains("t.cwl:2:1: duplicate key `cwlVersion`"), "{e}");
}

#[test]
fn json_documents_load() {
    let doc = load_str(
        r#"{"cwlVersion": "v1.2", "class": "CommandLineTool",
            "inputs": {"x": "int"}, "outputs": [], "baseCommand": "echo"}"#,
    )
    .unwrap();
    assert_eq!(doc["inputs"][0]["type"], "int");
    assert_eq!(doc["baseCommand"], json!(["echo"]));
}

// ---- normalization ----

#[test]
fn tool_is_normalized() {
    let doc = load_str(&format!(
        "{TOOL_HEAD}baseCommand: echo\narguments: [-n, {{valueFrom: $(1), position: 2}}]\n\
         requirements:\n  ShellCommandRequirement: {{}}\n  EnvVarRequirement:\n    envDef:\n      A: b\n\
         hints:\n  - class: DockerRequirement\n    dockerPull: debian\n\
         inputs:\n  a: string?\n  b: File[]\n  c:\n    type: int[]?\n    inputBinding: {{prefix: -c}}\n\
           \x20 d:\n    type: File\n    secondaryFiles: [.bai, ^.idx?, {{pattern: .x, required: true}}]\n\
         outputs:\n  o: stdout\n"
    ))
    .unwrap();
    assert_eq!(doc["id"], ID);
    assert_eq!(doc["cwlVersion"], "v1.2");
    assert_eq!(doc["baseCommand"], json!(["echo"]));
    assert_eq!(doc["arguments"][0], json!({"valueFrom": "-n"}));
    assert_eq!(
        doc["arguments"][1],
        json!({"valueFrom": "$(1)", "position": 2})
    );
    // The map form is read in key order, like schema-salad does.
    assert_eq!(
        doc["requirements"][1],
        json!({"class": "ShellCommandRequirement"})
    );
    assert_eq!(
        doc["requirements"][0],
        json!({"class": "EnvVarRequirement", "envDef": [{"envName": "A", "envValue": "b"}]})
    );
    assert_eq!(doc["hints"][0]["class"], "DockerRequirement");
    let inputs = doc["inputs"].as_array().unwrap();
    assert_eq!(
        inputs[0],
        json!({"id": format!("{ID}#a"), "type": ["null", "string"]})
    );
    assert_eq!(inputs[1]["type"], json!({"type": "array", "items": "File"}));
    assert_eq!(
        inputs[2]["type"],
        json!(["null", {"type": "array", "items": "int"}])
    );
    assert_eq!(inputs[2]["inputBinding"], json!({"prefix": "-c"}));
    assert_eq!(
        inputs[3]["secondaryFiles"],
        json!([
            {"pattern": ".bai", "required": null},
            {"pattern": "^.idx", "required": false},
            {"pattern": ".x", "required": true}
        ])
    );
    // rule 3: stdout output -> File with a glob of the (generated) name.
    let out = &doc["outputs"][0];
    assert_eq!(out["type"], "File");
    let glob = out["outputBinding"]["glob"].as_str().unwrap();
    assert_eq!(doc["stdout"].as_str().unwrap(), glob);
    assert!(glob.starts_with("stdout-"), "{glob}");
}

#[test]
fn stdout_with_named_file_and_stdin_input() {
    let doc = load_str(&format!(
        "{TOOL_HEAD}stdout: out.txt\ninputs:\n  i: stdin\noutputs:\n  o: stdout\n  e: stderr\n"
    ))
    .unwrap();
    assert_eq!(doc["outputs"][1]["outputBinding"]["glob"], "out.txt");
    assert_eq!(doc["stdin"], "$(inputs.i.path)");
    assert_eq!(doc["inputs"][0]["type"], "File");
    assert!(doc["stderr"].as_str().unwrap().starts_with("stderr-"));
}

#[test]
fn records_enums_and_schema_defs() {
    let doc = load_str(&format!(
        "{TOOL_HEAD}requirements:\n  SchemaDefRequirement:\n    types:\n\
         \x20     - name: Color\n        type: enum\n        symbols: [red, \"#Color/blue\"]\n\
         \x20     - name: Pair\n        type: record\n        fields:\n          left: Color\n          right: int?\n\
         inputs:\n  p: Pair\n  q: \"#Color[]\"\n  r:\n    type:\n      type: record\n      fields:\n        - name: x\n          type: string\n\
         outputs: []\n"
    ))
    .unwrap();
    let p = &doc["inputs"][0]["type"];
    assert_eq!(p["type"], "record");
    assert_eq!(p["name"], format!("{ID}#Pair"));
    assert_eq!(p["fields"][0]["name"], "left");
    assert_eq!(p["fields"][0]["type"]["symbols"], json!(["red", "blue"]));
    assert_eq!(p["fields"][1]["type"], json!(["null", "int"]));
    assert_eq!(doc["inputs"][1]["type"]["items"]["type"], "enum");
    assert_eq!(
        doc["inputs"][2]["type"]["fields"][0],
        json!({"name": "x", "type": "string"})
    );
}

#[test]
fn file_literals_are_resolved() {
    let doc = load_str(&format!(
        "{TOOL_HEAD}inputs:\n  f:\n    type: File\n    default: {{class: File, path: data/x.txt, secondaryFiles: [{{class: File, location: y.idx}}]}}\n\
         outputs: []\nrequirements:\n  InitialWorkDirRequirement:\n    listing:\n      - {{class: Directory, location: ../d}}\n      - {{entry: $(inputs.f), entryname: a}}\n      - [{{class: File, location: z}}]\n"
    ))
    .unwrap();
    let d = &doc["inputs"][0]["default"];
    assert_eq!(d["location"], "file:///virtual/dir/data/x.txt");
    assert!(d.get("path").is_none());
    assert_eq!(
        d["secondaryFiles"][0]["location"],
        "file:///virtual/dir/y.idx"
    );
    let listing = &doc["requirements"][0]["listing"];
    assert_eq!(listing[0]["location"], "file:///virtual/d");
    assert_eq!(listing[1]["entryname"], "a");
    assert_eq!(listing[2][0]["location"], "file:///virtual/dir/z");
}

#[test]
fn formats_expand_through_namespaces() {
    let doc = load_str(&format!(
        "$namespaces: {{edam: http://edamontology.org/}}\n{TOOL_HEAD}inputs:\n  f:\n    type: File\n    format: edam:format_1\n\
         outputs:\n  o:\n    type: File\n    format: $(inputs.f.format)\n    outputBinding: {{glob: x}}\nedam:note: kept\n"
    ))
    .unwrap();
    assert_eq!(
        doc["inputs"][0]["format"],
        "http://edamontology.org/format_1"
    );
    assert_eq!(doc["outputs"][0]["format"], "$(inputs.f.format)");
    assert_eq!(doc["http://edamontology.org/note"], "kept");
}

// ---- errors ----

#[test]
fn unknown_field_suggests_the_right_one() {
    let e = invalid(&format!(
        "{TOOL_HEAD}inputs: []\noutputs: []\nbasecommand: echo\n"
    ));
    assert!(
        e.contains("t.cwl:5:1: unknown field `basecommand` in CommandLineTool"),
        "{e}"
    );
    assert!(e.contains("did you mean `baseCommand`?"), "{e}");
    let e = invalid(&format!(
        "{TOOL_HEAD}inputs:\n  x:\n    type: int\n    inputBindng: {{}}\noutputs: []\n"
    ));
    assert!(e.contains("t.cwl:6:5: unknown field `inputBindng`"), "{e}");
    assert!(e.contains("`inputBinding`"), "{e}");
}

#[test]
fn unknown_namespace_prefix_is_an_error_and_known_is_fine() {
    let e = invalid(&format!("{TOOL_HEAD}inputs: []\noutputs: []\nfoo:bar: 1\n"));
    assert!(
        e.contains("t.cwl:5:1: unknown namespace prefix `foo`"),
        "{e}"
    );
    assert!(
        load_str(&format!(
            "{TOOL_HEAD}inputs: []\noutputs: []\nhttp://x.org/y: 1\n"
        ))
        .is_ok()
    );
}

#[test]
fn required_fields_and_types() {
    let e = invalid(&format!("{TOOL_HEAD}inputs: []\n"));
    assert!(
        e.contains("t.cwl:1:1: CommandLineTool is missing required field `outputs`"),
        "{e}"
    );
    let e = invalid(&format!(
        "{TOOL_HEAD}inputs:\n  x:\n    doc: no type\noutputs: []\n"
    ));
    assert!(
        e.contains("t.cwl:4:3: an input parameter is missing required field `type`"),
        "{e}"
    );
    let e = invalid(&format!("{TOOL_HEAD}inputs:\n  x: strng\noutputs: []\n"));
    assert!(e.contains("t.cwl:4:6: unknown type `strng`"), "{e}");
    assert!(e.contains("did you mean `string`?"), "{e}");
    let e = invalid(&format!(
        "{TOOL_HEAD}inputs: []\noutputs: []\nsuccessCodes: [a]\n"
    ));
    assert!(
        e.contains("t.cwl:5:16: `successCodes` must be an integer"),
        "{e}"
    );
    let e = invalid(&format!(
        "{TOOL_HEAD}inputs: []\noutputs: []\nrequirements:\n  ToolTimeLimit: {{timelimit: -1}}\n"
    ));
    assert!(
        e.contains("t.cwl:6:30: `timelimit` cannot be negative"),
        "{e}"
    );
}

#[test]
fn class_and_version_errors() {
    let e = invalid("class: CommandLineTool\ninputs: []\noutputs: []\n");
    assert!(
        e.contains("t.cwl:1:1: the document has no `cwlVersion`"),
        "{e}"
    );
    assert!(e.contains("hint: add `cwlVersion: v1.2`"), "{e}");
    let e = invalid("cwlVersion: v9\nclass: CommandLineTool\ninputs: []\noutputs: []\n");
    assert!(e.contains("t.cwl:1:13: unknown cwlVersion `v9`"), "{e}");
    let e = invalid("cwlVersion: v1.2\nclass: CommandLinTool\ninputs: []\noutputs: []\n");
    assert!(
        e.contains("t.cwl:2:8: unknown process class `CommandLinTool`"),
        "{e}"
    );
    assert!(e.contains("did you mean `CommandLineTool`?"), "{e}");
}

#[test]
fn unknown_requirement_is_unsupported_unknown_hint_is_kept() {
    match load_str(&format!(
        "{TOOL_HEAD}inputs: []\noutputs: []\nrequirements:\n  - class: GpuThing\n"
    )) {
        Err(CwlError::Unsupported(m)) => {
            assert!(m.contains("t.cwl:6:12: requirement `GpuThing`"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    let e = invalid(&format!(
        "{TOOL_HEAD}inputs: []\noutputs: []\nrequirements:\n  DockerRequirment: {{}}\n"
    ));
    assert!(e.contains("did you mean `DockerRequirement`?"), "{e}");
    let doc = load_str(&format!(
        "{TOOL_HEAD}inputs: []\noutputs: []\nhints:\n  GpuThing: {{n: 1}}\n"
    ))
    .unwrap();
    assert_eq!(doc["hints"][0], json!({"class": "GpuThing", "n": 1}));
}

#[test]
fn duplicate_ids_are_rejected() {
    let e = invalid(&format!(
        "{TOOL_HEAD}inputs:\n  - {{id: a, type: int}}\n  - {{id: a, type: int}}\noutputs: []\n"
    ));
    assert!(e.contains("t.cwl:5:5: duplicate id `a`"), "{e}");
}

// ---- versions ----

#[test]
fn v10_documents_are_upgraded_and_checked() {
    let doc = load_str("cwlVersion: v1.0\nclass: CommandLineTool\ninputs:\n  f: {type: File, secondaryFiles: .bai}\noutputs: []\n").unwrap();
    assert_eq!(doc["cwlVersion"], "v1.2");
    assert_eq!(
        doc["hints"][1],
        json!({"class": "NetworkAccess", "networkAccess": true})
    );
    assert_eq!(
        doc["hints"][0],
        json!({"class": "LoadListingRequirement", "loadListing": "deep_listing"})
    );
    assert_eq!(
        doc["inputs"][0]["secondaryFiles"],
        json!([{"pattern": ".bai", "required": null}])
    );
    let e = invalid(
        "cwlVersion: v1.1\nclass: CommandLineTool\ninputs: []\noutputs: []\nrequirements:\n  ResourceRequirement: {coresMin: .5}\n",
    );
    assert!(
        e.contains("t.cwl:6:35: `coresMin` must be an integer"),
        "{e}"
    );
    let e = invalid(
        "cwlVersion: v1.0\nclass: Workflow\ninputs: []\noutputs: []\nsteps:\n  s:\n    run: {class: Operation, inputs: [], outputs: []}\n    in: []\n    out: []\n    when: $(true)\n",
    );
    assert!(
        e.contains("t.cwl:10:5: `when` needs cwlVersion v1.2"),
        "{e}"
    );
    assert!(
        e.contains("`class: Operation` needs cwlVersion v1.2"),
        "{e}"
    );
}

// ---- workflows ----

const WF: &str = "cwlVersion: v1.2\nclass: Workflow\n\
inputs:\n  x: int\n  xs: int[]\n\
outputs:\n  o:\n    type: int[]\n    outputSource: s2/y\n\
requirements: [{class: ScatterFeatureRequirement}]\n\
steps:\n\
\x20 s1:\n    run:\n      class: ExpressionTool\n      inputs: {a: int}\n      outputs: {y: int}\n      expression: \"$({'y': inputs.a})\"\n    in: {a: x}\n    out: [y]\n\
\x20 s2:\n    run:\n      class: ExpressionTool\n      inputs: {a: int}\n      outputs: {y: int}\n      expression: \"$({'y': inputs.a})\"\n    in:\n      a: xs\n    scatter: a\n    out: [{id: y}]\n";

#[test]
fn workflow_is_normalized_with_absolute_references() {
    let doc = load_str(WF).unwrap();
    assert_eq!(doc["outputs"][0]["outputSource"], format!("{ID}#s2/y"));
    let s1 = &doc["steps"][0];
    assert_eq!(s1["id"], format!("{ID}#s1"));
    assert_eq!(
        s1["in"][0],
        json!({"id": format!("{ID}#s1/a"), "source": format!("{ID}#x")})
    );
    assert_eq!(s1["out"], json!([format!("{ID}#s1/y")]));
    assert_eq!(s1["scatter"], json!([]));
    assert_eq!(s1["run"]["id"], format!("{ID}#s1/run"));
    assert_eq!(s1["run"]["inputs"][0]["id"], format!("{ID}#s1/run/a"));
    let s2 = &doc["steps"][1];
    assert_eq!(s2["scatter"], json!([format!("{ID}#s2/a")]));
    assert_eq!(s2["out"], json!([format!("{ID}#s2/y")]));
}

#[test]
fn workflow_reference_errors() {
    let e = invalid(&WF.replace("outputSource: s2/y", "outputSource: s2/z"));
    assert!(
        e.contains("t.cwl:9:19: `s2/z` is not a workflow input or a step output"),
        "{e}"
    );
    assert!(e.contains("did you mean `s2/y`?"), "{e}");
    let e = invalid(&WF.replace("in: {a: x}", "in: {a: xx}"));
    assert!(
        e.contains("`xx` is not a workflow input or a step output"),
        "{e}"
    );
    let e = invalid(&WF.replace("scatter: a", "scatter: b"));
    assert!(
        e.contains("`scatter` names `b`, which is not an input of the step"),
        "{e}"
    );
    let e = invalid(&WF.replace("out: [y]", "out: [y, w]"));
    assert!(
        e.contains("step `s1` lists output `w`, which its `run` process does not have"),
        "{e}"
    );
}

#[test]
fn workflow_type_mismatch_is_an_error() {
    // s1.a is an int; feeding it the int[] input can never work.
    let e = invalid(&WF.replace("in: {a: x}", "in: {a: xs}"));
    assert!(
        e.contains(
            "t.cwl:18:10: step input `s1/a`: source `xs` gives int[], which can never be int"
        ),
        "{e}"
    );
    // The workflow output type must fit the scattered step's output (int[]).
    let e = invalid(&WF.replace("    type: int[]\n", "    type: string\n"));
    assert!(e.contains("workflow output `o`"), "{e}");
    // A union that may match is accepted.
    assert!(load_str(&WF.replace("  x: int\n", "  x: [int, string]\n")).is_ok());
}

// ---- files: $import, $include, $mixin, $graph, run ----

#[test]
fn imports_includes_and_mixins() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "env.yml",
        "class: EnvVarRequirement\nenvDef: {A: b}\n",
    );
    write(dir.path(), "lib.js", "var f = 1;");
    write(
        dir.path(),
        "types.yml",
        "- name: T\n  type: enum\n  symbols: [a]\n- name: R\n  type: record\n  fields: {t: T}\n",
    );
    write(
        dir.path(),
        "base.yml",
        "inputs: []\noutputs: []\nbaseCommand: base\n",
    );
    let tool = write(
        dir.path(),
        "t.cwl",
        "cwlVersion: v1.2\nclass: CommandLineTool\n$mixin: base.yml\nbaseCommand: mine\n\
         requirements:\n  - $import: env.yml\n  - class: InlineJavascriptRequirement\n    expressionLib: [{$include: lib.js}]\n\
         \x20 - class: SchemaDefRequirement\n    types:\n      - $import: types.yml\n\
         hints: []\n",
    );
    let doc = load_document(&tool).unwrap();
    let p = &doc.process;
    assert_eq!(p["baseCommand"], json!(["mine"]));
    assert_eq!(p["requirements"][0]["envDef"][0]["envName"], "A");
    assert_eq!(p["requirements"][1]["expressionLib"], json!(["var f = 1;"]));
    let types = p["requirements"][2]["types"].as_array().unwrap();
    assert_eq!(types.len(), 2);
    assert_eq!(types[1]["fields"][0]["type"]["symbols"], json!(["a"]));
    // A type from an imported file referenced as `file#Name`.
    write(
        dir.path(),
        "u.cwl",
        "cwlVersion: v1.2\nclass: CommandLineTool\nrequirements:\n  - class: SchemaDefRequirement\n    types: [{$import: types.yml}]\n\
         inputs:\n  r: types.yml#R\noutputs: []\n",
    );
    let doc = load_document(&dir.path().join("u.cwl")).unwrap();
    assert_eq!(doc.process["inputs"][0]["type"]["type"], "record");

    let e = load_document(&write(dir.path(), "bad.cwl", "cwlVersion: v1.2\nclass: CommandLineTool\ninputs: []\noutputs: []\nhints:\n  - $import: missing.yml\n"))
        .unwrap_err();
    assert!(e.to_string().contains("bad.cwl:6:14: cannot read"), "{e}");
}

#[test]
fn packed_graphs_and_run_references() {
    let dir = tempfile::tempdir().unwrap();
    let packed = write(
        dir.path(),
        "p.cwl",
        "cwlVersion: v1.2\n$graph:\n\
         - id: echo\n  class: CommandLineTool\n  inputs: {t: string}\n  outputs: {o: stdout}\n  baseCommand: echo\n\
         - id: main\n  class: Workflow\n  inputs: {t: string}\n  outputs: {o: {type: File, outputSource: s/o}}\n\
         \x20 steps:\n    s:\n      run: \"#echo\"\n      in: {t: t}\n      out: [o]\n",
    );
    let uri = uri::path_to_uri(&packed);
    let doc = load_document(&packed).unwrap();
    assert_eq!(doc.process["id"], format!("{uri}#main"));
    assert_eq!(doc.process["steps"][0]["run"]["id"], format!("{uri}#echo"));
    assert_eq!(
        doc.process["steps"][0]["in"][0]["source"],
        format!("{uri}#main/t")
    );
    let tool = load_document(Path::new(&format!("{}#echo", packed.display()))).unwrap();
    assert_eq!(tool.process["class"], "CommandLineTool");
    let e = load_document(Path::new(&format!("{}#nope", packed.display()))).unwrap_err();
    assert!(e.to_string().contains("no process `#nope`"), "{e}");
    // A workflow in another file runs `p.cwl#echo`.
    let wf = write(
        dir.path(),
        "w.cwl",
        "cwlVersion: v1.2\nclass: Workflow\ninputs: {t: string}\noutputs: []\nsteps:\n  a:\n    run: p.cwl#echo\n    in: {t: t}\n    out: []\n  b:\n    run: sub/tool.cwl\n    in: {}\n    out: [x]\n",
    );
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    write(
        &dir.path().join("sub"),
        "tool.cwl",
        "cwlVersion: v1.0\nclass: ExpressionTool\ninputs: []\noutputs: {x: int}\nexpression: \"$({'x': 1})\"\n",
    );
    let doc = load_document(&wf).unwrap();
    assert_eq!(doc.process["steps"][0]["run"]["id"], format!("{uri}#echo"));
    let sub = &doc.process["steps"][1]["run"];
    assert_eq!(
        sub["id"],
        uri::path_to_uri(&dir.path().join("sub/tool.cwl"))
    );
    assert_eq!(sub["hints"][1]["class"], "NetworkAccess");
    // A step whose run file is missing: error at the `run` value.
    std::fs::remove_file(dir.path().join("sub/tool.cwl")).unwrap();
    let e = load_document(&wf).unwrap_err();
    assert!(e.to_string().contains("w.cwl:11:10: cannot read"), "{e}");
}

#[test]
fn a_workflow_running_itself_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let wf = write(
        dir.path(),
        "w.cwl",
        "cwlVersion: v1.2\nclass: Workflow\ninputs: []\noutputs: []\nsteps:\n  a:\n    run: w.cwl\n    in: []\n    out: []\n",
    );
    let e = load_document(&wf).unwrap_err();
    assert!(e.to_string().contains("runs itself"), "{e}");
}

// ---- job orders ----

#[test]
fn job_orders_resolve_locations_and_formats() {
    let dir = tempfile::tempdir().unwrap();
    let tool = write(
        dir.path(),
        "t.cwl",
        "$namespaces: {edam: http://edamontology.org/}\ncwlVersion: v1.2\nclass: CommandLineTool\ninputs: {f: File}\noutputs: []\n",
    );
    let doc = load_document(&tool).unwrap();
    let job = write(
        dir.path(),
        "j.yml",
        "f: {class: File, path: in/a.txt, format: edam:format_1}\nd: {class: Directory, location: /abs/dir}\nn: 3\n\
         s: {class: File, path: a b:c.txt}\nu: {class: File, location: A%3AB}\nt: {class: File, location: toilfile:XYZ}\n",
    );
    let v = load_job_order(&job, &doc).unwrap();
    let base = uri::path_to_uri(dir.path());
    assert_eq!(v["f"]["location"], format!("{base}/in/a.txt"));
    assert_eq!(v["f"]["format"], "http://edamontology.org/format_1");
    assert_eq!(v["d"]["location"], "file:///abs/dir");
    assert_eq!(v["n"], 3);
    assert_eq!(v["s"]["location"], format!("{base}/a%20b:c.txt"));
    assert_eq!(
        uri::uri_to_path(v["s"]["location"].as_str().unwrap()).unwrap(),
        dir.path().join("a b:c.txt")
    );
    assert_eq!(v["u"]["location"], format!("{base}/A%3AB"));
    assert_eq!(v["t"]["location"], "toilfile:XYZ");
    let json_job = write(
        dir.path(),
        "j.json",
        "{\"f\": {\"class\": \"File\", \"location\": \"b.txt\"}}",
    );
    assert_eq!(
        load_job_order(&json_job, &doc).unwrap()["f"]["location"],
        format!("{base}/b.txt")
    );
    let own_ns = write(
        dir.path(),
        "ns.yml",
        "$namespaces: {x: http://x.org/}\nf: {class: File, location: a, format: x:y}\n",
    );
    let v = load_job_order(&own_ns, &doc).unwrap();
    assert_eq!(
        v,
        json!({"f": {"class": "File", "location": format!("{base}/a"), "format": "http://x.org/y"}})
    );
    let empty = write(dir.path(), "e.json", "");
    assert_eq!(load_job_order(&empty, &doc).unwrap(), json!({}));
    let bad = write(dir.path(), "b.yml", "- 1\n");
    assert!(
        matches!(load_job_order(&bad, &doc), Err(CwlError::Invalid(m)) if m.contains("b.yml:1:1"))
    );
}

#[test]
fn arguments_must_be_strings_or_bindings() {
    let e = invalid(&format!(
        "{TOOL_HEAD}inputs: []\noutputs: []\narguments: [x, 1]\n"
    ));
    assert!(
        e.contains(
            "t.cwl:5:16: an entry of `arguments` must be a string or a binding, not an integer"
        ),
        "{e}"
    );
}

/// Writes the normalized form of every conformance document to
/// `$CWL_DUMP_DIR` (a debugging aid for comparing with cwltool).
#[test]
#[ignore = "a debugging aid, not a test"]
fn dump_conformance_documents() {
    let out = PathBuf::from(std::env::var("CWL_DUMP_DIR").expect("set CWL_DUMP_DIR"));
    std::fs::create_dir_all(&out).unwrap();
    let mut index = Vec::new();
    for (i, c) in conformance_cases().iter().enumerate() {
        if let Ok(doc) = load_document(Path::new(&c.tool)) {
            let f = out.join(format!("{i}.json"));
            std::fs::write(&f, serde_json::to_string_pretty(&*doc.process).unwrap()).unwrap();
            index.push(json!({"tool": c.tool, "file": f}));
        }
    }
    std::fs::write(
        out.join("index.json"),
        serde_json::to_string(&index).unwrap(),
    )
    .unwrap();
}

#[test]
fn json_with_tabs_and_unicode() {
    let v = load_str("{\n\t\"cwlVersion\": \"v1.2\",\n\t\"class\": \"CommandLineTool\",\n\t\"inputs\": {\n\t\t\"x\": \"int\"\n\t},\n\t\"outputs\": [],\n\t\"doc\": \"caf\\u00e9 \\t tab\"\n}\n")
        .unwrap();
    assert_eq!(v["doc"], "café \t tab");
}

#[test]
fn step_checks_follow_cwltool() {
    // A required input of the run process left unconnected.
    let e = invalid(&WF.replace("in: {a: x}", "in: {}"));
    assert!(
        e.contains("t.cwl:18:5: step `s1` does not connect the required input `a`"),
        "{e}"
    );
    // Scatter without ScatterFeatureRequirement.
    let e = invalid(&WF.replace("requirements: [{class: ScatterFeatureRequirement}]\n", ""));
    assert!(
        e.contains("t.cwl:19:3: step `s2` scatters, but ScatterFeatureRequirement"),
        "{e}"
    );
    // ... which may also come from a hint or the step itself.
    assert!(
        load_str(&WF.replace(
            "requirements: [{class: ScatterFeatureRequirement}]",
            "hints: [{class: ScatterFeatureRequirement}]"
        ))
        .is_ok()
    );
    // Several scatter inputs need a scatterMethod.
    let e = invalid(&WF.replace(
        "      a: xs\n    scatter: a\n",
        "      a: xs\n      b: xs\n    scatter: [a, b]\n",
    ));
    assert!(
        e.contains("scatters over several inputs without a `scatterMethod`"),
        "{e}"
    );
    // Steps feeding each other.
    let e = invalid(&WF.replace("in: {a: x}", "in: {a: s1/y}"));
    assert!(e.contains("depend on each other in a cycle: s1"), "{e}");
    // all_non_null makes an array; a string output cannot hold it.
    let cond = "cwlVersion: v1.2\nclass: Workflow\ninputs: {x: int}\n\
        requirements: [{class: MultipleInputFeatureRequirement}, {class: InlineJavascriptRequirement}]\n\
        outputs:\n  o:\n    type: int\n    outputSource: [s/y]\n    pickValue: all_non_null\n\
        steps:\n  s:\n    run: {class: ExpressionTool, inputs: {a: int}, outputs: {y: int}, expression: \"$({'y': 1})\"}\n\
        \x20   when: $(inputs.a > 1)\n    in: {a: x}\n    out: [y]\n";
    let e = invalid(cond);
    assert!(e.contains("workflow output `o`: source `s/y` gives int[] (merged into a list by linkMerge merge_nested, pickValue all_non_null), which can never be int"), "{e}");
    assert!(
        load_str(&cond.replace(
            "type: int\n    outputSource",
            "type: int[]\n    outputSource"
        ))
        .is_ok()
    );
}

#[test]
fn binding_fields_at_the_wrong_level_are_explained() {
    let e = invalid(&format!(
        "{TOOL_HEAD}inputs:\n  x:\n    type: int\n    prefix: -x\noutputs:\n  o:\n    type: File\n    glob: o.txt\n"
    ));
    assert!(e.contains("t.cwl:6:5: unknown field `prefix`"), "{e}");
    assert!(
        e.contains("hint: move `prefix` under `inputBinding`"),
        "{e}"
    );
    assert!(e.contains("t.cwl:10:5: unknown field `glob`"), "{e}");
    assert!(e.contains("hint: move `glob` under `outputBinding`"), "{e}");
}

#[test]
fn tabs_are_explained() {
    let e = invalid(&format!("{TOOL_HEAD}inputs:\n\tx: int\noutputs: []\n"));
    assert!(e.contains("t.cwl:4:"), "{e}");
    assert!(e.contains("tabs"), "{e}");
}

#[test]
fn block_scalar_at_end_of_file_without_newline() {
    let file: std::sync::Arc<str> = std::sync::Arc::from("f.yml");
    let root = node::parse("a: |\n  x\n  y", &file).unwrap();
    assert_eq!(root.get_str("a"), Some("x\ny"));
    let root = node::parse("a: |\n  x\n  y\n", &file).unwrap();
    assert_eq!(root.get_str("a"), Some("x\ny\n"));
    let root = node::parse("a: |\n  x\nb: [1]", &file).unwrap();
    assert_eq!(root.get_str("a"), Some("x\n"));
}

#[test]
fn type_fields_at_the_parameter_level_are_explained() {
    let e = invalid(&format!(
        "{TOOL_HEAD}inputs:\n  x:\n    type: array\n    items: string\noutputs: []\n"
    ));
    assert!(
        e.contains("t.cwl:6:5: unknown field `items` in an input parameter"),
        "{e}"
    );
    assert!(e.contains("with the type mapping under `type`"), "{e}");
}

#[test]
fn expression_fields_need_expressions_like_cwltool() {
    let e = invalid(&format!(
        "{TOOL_HEAD}inputs:\n  x: {{type: int, inputBinding: {{position: a}}}}\noutputs: []\n"
    ));
    assert!(e.contains("t.cwl:4:43: `position` must be an integer or an expression ($(...) or ${...}), not a string"), "{e}");
    assert!(load_str(&format!("{TOOL_HEAD}inputs:\n  x: {{type: int, inputBinding: {{position: $(1)}}}}\noutputs: []\n")).is_ok());
    let e = invalid(&format!(
        "{TOOL_HEAD}inputs: []\noutputs: []\nrequirements:\n  ResourceRequirement: {{ramMin: lots}}\n"
    ));
    assert!(
        e.contains("t.cwl:6:33: `ramMin` must be a number or an expression"),
        "{e}"
    );
    let e = invalid(&format!(
        "{TOOL_HEAD}inputs: []\noutputs: []\nlabel: [a]\ndoc: [a, 1]\n"
    ));
    assert!(e.contains("t.cwl:5:8: `label` must be a string"), "{e}");
    assert!(e.contains("t.cwl:6:10: `doc` must be a string"), "{e}");
}

#[test]
fn a_type_named_inline_can_be_referred_to_later() {
    let doc = load_str(&format!(
        "{TOOL_HEAD}inputs:\n  - id: a\n    type: {{type: enum, name: Mode, symbols: [fast, slow]}}\n  - id: b\n    type: Mode[]\noutputs: []\n"
    ))
    .unwrap();
    assert_eq!(
        doc["inputs"][1]["type"]["items"]["symbols"],
        json!(["fast", "slow"])
    );
}

#[test]
fn a_missing_document_is_named_without_a_position() {
    let e = load_document(Path::new("/nonexistent/dir/x.cwl")).unwrap_err();
    assert!(matches!(e, CwlError::Invalid(_)), "{e:?}");
    assert!(
        e.to_string()
            .starts_with("/nonexistent/dir/x.cwl: cannot read /nonexistent/dir/x.cwl"),
        "{e}"
    );
}

#[test]
fn absurd_nesting_is_an_error_not_a_crash() {
    let text = format!("a: {}1{}\n", "[".repeat(100_000), "]".repeat(100_000));
    let e = invalid(&text);
    // yaml-rust2's own limit or ours, whichever is reached first.
    assert!(
        e.contains("nested more than 256 deep") || e.contains("recursion limit"),
        "{e}"
    );
    let deep_block: String = (0..300)
        .map(|i| format!("{}- \n", "  ".repeat(i)))
        .collect();
    let e = invalid(&deep_block);
    assert!(
        e.contains("nested more than 256 deep") || e.contains("recursion limit"),
        "{e}"
    );
}

#[test]
fn documents_and_jobs_may_be_named_by_file_uris() {
    let dir = tempfile::tempdir().unwrap();
    let tool = write(
        dir.path(),
        "a b.cwl",
        &format!("{TOOL_HEAD}inputs: {{x: File}}\noutputs: []\n"),
    );
    let job = write(dir.path(), "j.yml", "x: {class: File, path: f.txt}\n");
    let uri = uri::path_to_uri(&tool);
    assert!(uri.contains("a%20b.cwl"), "{uri}");
    let doc = load_document(Path::new(&uri)).unwrap();
    assert_eq!(doc.process["id"], uri);
    let doc2 = load_document(Path::new(&format!("{uri}#nope"))).unwrap_err();
    assert!(
        doc2.to_string().contains("defines no process `#nope`"),
        "{doc2}"
    );
    assert_eq!(document_file(Path::new(&format!("{uri}#main"))), tool);
    assert_eq!(document_file(&tool), tool);
    let v = load_job_order(Path::new(&uri::path_to_uri(&job)), &doc).unwrap();
    assert_eq!(
        v["x"]["location"],
        format!("{}/f.txt", uri::path_to_uri(dir.path()))
    );
}
