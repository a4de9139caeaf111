//! Tests of the tool module: real commands in temporary directories, with
//! command lines checked against the conformance suite's expectations.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use super::*;
use crate::files::path_to_uri;

pub(crate) use crate::spec::spec_dir;

fn yaml_to_json(y: &yaml_rust2::Yaml) -> Value {
    use yaml_rust2::Yaml;
    match y {
        Yaml::String(s) => json!(s),
        Yaml::Integer(i) => json!(i),
        Yaml::Real(r) => json!(r.parse::<f64>().unwrap()),
        Yaml::Boolean(b) => json!(b),
        Yaml::Array(a) => Value::Array(a.iter().map(yaml_to_json).collect()),
        Yaml::Hash(h) => Value::Object(
            h.iter()
                .map(|(k, v)| (k.as_str().unwrap().to_string(), yaml_to_json(v)))
                .collect(),
        ),
        _ => Value::Null,
    }
}

/// YAML to JSON, for the conformance test list.
pub(crate) fn yaml_to_json_pub(y: &yaml_rust2::Yaml) -> Value {
    yaml_to_json(y)
}

/// The expected `output` of a conformance test, by id. Each test entry is
/// parsed alone (yaml-rust2 rejects the flow style of a few other entries).
pub(crate) fn expected_output(id: &str) -> Value {
    let text = fs::read_to_string(spec_dir().join("conformance_tests.yaml")).unwrap();
    let mut chunks: Vec<String> = Vec::new();
    for line in text.lines() {
        if line.starts_with("- ") || chunks.is_empty() {
            chunks.push(String::new());
        }
        let last = chunks.last_mut().unwrap();
        last.push_str(line);
        last.push('\n');
    }
    let wanted = format!("id: {id}\n");
    let chunk = chunks
        .iter()
        .find(|c| c.lines().any(|l| l.trim_start() == wanted.trim_end()))
        .unwrap_or_else(|| panic!("no conformance test {id}"));
    let docs = yaml_rust2::YamlLoader::load_from_str(chunk).unwrap();
    yaml_to_json(&docs[0])[0]["output"].clone()
}

/// A temporary output and temporary directory.
pub(crate) struct Sandbox {
    pub(crate) _dir: tempfile::TempDir,
    pub(crate) rt: Runtime,
    pub(crate) data: PathBuf,
}

impl Sandbox {
    pub(crate) fn new() -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        let outdir = dir.path().join("out");
        let tmpdir = dir.path().join("tmp");
        let data = dir.path().join("data");
        for d in [&outdir, &tmpdir, &data] {
            fs::create_dir_all(d).unwrap();
        }
        Sandbox {
            rt: Runtime {
                outdir,
                tmpdir,
                cores: 1,
                ram: 256,
                outdir_size: 1024,
                tmpdir_size: 1024,
            },
            data,
            _dir: dir,
        }
    }

    /// Writes a data file and returns its File object.
    pub(crate) fn file(&self, name: &str, contents: &str) -> Value {
        let p = self.data.join(name);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(&p, contents).unwrap();
        json!({"class": "File", "location": path_to_uri(&p)})
    }
}

/// An invocation of `tool` (normalized by hand) with `job`.
pub(crate) fn invocation(tool: Value, job: Value) -> Invocation {
    let reqs = tool
        .get("requirements")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let hints = tool
        .get("hints")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    Invocation {
        tool,
        job,
        requirements: reqs,
        hints,
        namespaces: serde_json::Map::new(),
    }
}

/// Runs a prepared command as the agent does: in the output directory,
/// with exactly its environment and its redirections. Returns the exit code.
pub(crate) fn execute(p: &Prepared, rt: &Runtime) -> i32 {
    let mut cmd = Command::new(&p.argv[0]);
    cmd.args(&p.argv[1..])
        .current_dir(&rt.outdir)
        .env_clear()
        .envs(&p.env);
    cmd.stdin(match &p.stdin {
        Some(f) => Stdio::from(fs::File::open(f).unwrap()),
        None => Stdio::null(),
    });
    if let Some(f) = &p.stdout {
        cmd.stdout(Stdio::from(fs::File::create(f).unwrap()));
    }
    if let Some(f) = &p.stderr {
        cmd.stderr(Stdio::from(fs::File::create(f).unwrap()));
    }
    cmd.status().unwrap().code().unwrap_or(-1)
}

/// Prepares, runs and collects.
pub(crate) fn run(inv: &Invocation, sb: &Sandbox) -> Result<Value, CwlError> {
    let p = prepare(inv, &sb.rt, false)?;
    let code = execute(&p, &sb.rt);
    collect(inv, &p, &sb.rt, code)
}

fn input(name: &str, ty: Value, binding: Option<Value>) -> Value {
    let mut m = json!({"id": format!("file:///t.cwl#{name}"), "type": ty});
    if let Some(b) = binding {
        m["inputBinding"] = b;
    }
    m
}

/// `args.py` of the conformance tests, as a File input bound first.
fn args_py() -> (Value, Value) {
    let path = spec_dir().join("tests/args.py");
    (
        input("args.py", json!("File"), Some(json!({"position": -1}))),
        json!({"class": "File", "location": path_to_uri(&path)}),
    )
}

fn args_output() -> Value {
    json!([{"id": "file:///t.cwl#args", "type": {"type": "array", "items": "string"}}])
}

fn spec_file(rel: &str) -> Value {
    json!({"class": "File", "location": path_to_uri(&spec_dir().join("tests").join(rel))})
}

#[test]
fn nested_prefixes_arrays_matches_the_conformance_test() {
    // tests/binding-test.cwl with tests/bwa-mem-job.json, normalized.
    let (args_in, args_file) = args_py();
    let tool = json!({
        "class": "CommandLineTool",
        "id": "file:///t.cwl",
        "inputs": [
            input("reference", json!("File"), Some(json!({"position": 2}))),
            input("reads", json!({"type": "array", "items": "File",
                                  "inputBinding": {"prefix": "-YYY"}}),
                  Some(json!({"position": 3, "prefix": "-XXX"}))),
            args_in,
        ],
        "outputs": args_output(),
        "baseCommand": ["python"],
        "arguments": [{"valueFrom": "bwa"}, {"valueFrom": "mem"}],
    });
    let sb = Sandbox::new();
    let job = json!({
        "reference": spec_file("chr20.fa"),
        "reads": [spec_file("example_human_Illumina.pe_1.fastq"),
                  spec_file("example_human_Illumina.pe_2.fastq")],
        "args.py": args_file,
    });
    let out = run(&invocation(tool, job), &sb).unwrap();
    assert_eq!(out, expected_output("nested_prefixes_arrays"));
}

#[test]
fn optional_boolean_flag_present_and_absent() {
    // tests/cat1-testcli.cwl: cl_optional_inputs_missing and
    // cl_optional_bindings_provided.
    let (args_in, args_file) = args_py();
    let tool = json!({
        "class": "CommandLineTool",
        "id": "file:///t.cwl",
        "inputs": [
            input("file1", json!("File"), Some(json!({"position": 1}))),
            input("numbering", json!(["null", "boolean"]),
                  Some(json!({"position": 0, "prefix": "-n"}))),
            args_in,
        ],
        "outputs": args_output(),
        "baseCommand": ["python"],
        "arguments": [{"valueFrom": "cat"}],
    });
    for (numbering, id) in [
        (json!(null), "cl_optional_inputs_missing"),
        (json!(true), "cl_optional_bindings_provided"),
    ] {
        let sb = Sandbox::new();
        let job = json!({
            "file1": spec_file("hello.txt"),
            "numbering": numbering,
            "args.py": args_file.clone(),
        });
        let out = run(&invocation(tool.clone(), job), &sb).unwrap();
        assert_eq!(out, expected_output(id), "{id}");
    }
}

fn argv_of(tool: Value, job: Value) -> Vec<String> {
    let sb = Sandbox::new();
    prepare(&invocation(tool, job), &sb.rt, false).unwrap().argv
}

#[test]
fn bindings_sort_by_position_then_argument_index_then_name() {
    let tool = json!({
        "class": "CommandLineTool",
        "inputs": [
            input("zeta", json!("string"), Some(json!({"position": 1}))),
            input("alpha", json!("string"), Some(json!({"position": 1}))),
            input("neg", json!("int"), Some(json!({"position": -2, "prefix": "-n"}))),
            input("unbound", json!("string"), None),
            input("flag", json!("boolean"), Some(json!({"prefix": "--off"}))),
            input("nums", json!({"type": "array", "items": "int"}),
                  Some(json!({"position": 2, "prefix": "-I", "itemSeparator": ","}))),
            input("joined", json!({"type": "array", "items": "string"}),
                  Some(json!({"position": 3, "prefix": "-j=", "separate": false}))),
            input("empty", json!({"type": "array", "items": "string"}),
                  Some(json!({"position": 3, "prefix": "-e"}))),
        ],
        "outputs": [],
        "baseCommand": ["tool", "sub"],
        "arguments": [
            {"valueFrom": "arg0"},
            {"valueFrom": "arg1", "position": 1},
            {"valueFrom": "argneg", "position": -2},
        ],
    });
    let argv = argv_of(
        tool,
        json!({
            "zeta": "z", "alpha": "a", "neg": 5, "unbound": "u", "flag": false,
            "nums": [1, 2, 3], "joined": ["x", "y"], "empty": [],
        }),
    );
    // Position -2: the argument (index 2) sorts before the input "neg"
    // (integers before names at the same position, as cwltool compares them).
    // Position 0: argument 0, then the false flag (nothing). Position 1:
    // argument 1, then inputs alpha, zeta. Then position 2 and 3: an array
    // without itemSeparator gives its prefix alone (`separate` applies to
    // each item's own binding), then its items; an empty array nothing.
    assert_eq!(
        argv,
        [
            "tool", "sub", "argneg", "-n", "5", "arg0", "arg1", "a", "z", "-I", "1,2,3", "-j=",
            "x", "y"
        ]
    );
}

#[test]
fn records_nested_arrays_and_prefixes() {
    let rec = json!({"type": "record", "name": "r", "fields": [
        {"name": "b", "type": "int", "inputBinding": {"position": 2, "prefix": "-b"}},
        {"name": "a", "type": "string", "inputBinding": {"position": 1, "prefix": "-a"}},
        {"name": "off", "type": ["null", "string"], "inputBinding": {"prefix": "-o"}},
    ]});
    let tool = json!({
        "class": "CommandLineTool",
        "inputs": [
            input("rec", rec, Some(json!({"position": 1, "prefix": "--rec"}))),
            input("matrix", json!({"type": "array",
                "items": {"type": "array", "items": "int", "inputBinding": {"prefix": "-v"}},
                "inputBinding": {"prefix": "-row"}}),
                Some(json!({"position": 2}))),
            input("floats", json!({"type": "array", "items": "double"}),
                Some(json!({"position": 3}))),
        ],
        "outputs": [],
        "baseCommand": ["echo"],
    });
    let argv = argv_of(
        tool,
        json!({
            "rec": {"a": "A", "b": 7, "off": null},
            "matrix": [[1, 2], [3]],
            "floats": [1.0, 0.00001, 2.5],
        }),
    );
    assert_eq!(
        argv,
        [
            "echo", "--rec", "-a", "A", "-b", "7", "-row", "-v", "1", "-v", "2", "-row", "-v", "3",
            "1.0", "0.00001", "2.5"
        ]
    );
}

#[test]
fn shell_command_quotes_unless_told_not_to() {
    let sb = Sandbox::new();
    let tool = json!({
        "class": "CommandLineTool",
        "requirements": [{"class": "ShellCommandRequirement"}],
        "inputs": [input("msg", json!("string"), Some(json!({"position": 1})))],
        "outputs": [{"id": "file:///t.cwl#out", "type": "File",
                     "outputBinding": {"glob": "out.txt"}}],
        "baseCommand": ["echo"],
        "arguments": [
            {"valueFrom": "|", "shellQuote": false, "position": 2},
            {"valueFrom": "tr", "position": 3},
            {"valueFrom": "a-z", "position": 4},
            {"valueFrom": "A-Z", "position": 5},
            {"valueFrom": ">", "shellQuote": false, "position": 6},
            {"valueFrom": "out.txt", "position": 7},
        ],
    });
    let inv = invocation(tool, json!({"msg": "it's a $HOME; test"}));
    let p = prepare(&inv, &sb.rt, false).unwrap();
    assert_eq!(p.argv[..2], ["/bin/sh", "-c"]);
    assert_eq!(
        p.argv[2],
        "echo 'it'\"'\"'s a $HOME; test' | tr a-z A-Z > out.txt"
    );
    let code = execute(&p, &sb.rt);
    let out = collect(&inv, &p, &sb.rt, code).unwrap();
    let text = fs::read_to_string(sb.rt.outdir.join("out.txt")).unwrap();
    assert_eq!(text, "IT'S A $HOME; TEST\n");
    assert_eq!(out["out"]["size"], text.len());
    assert_eq!(out["out"]["basename"], "out.txt");
}

#[test]
fn clean_environment_with_env_var_requirement_and_streams() {
    let sb = Sandbox::new();
    let stdin = sb.file("in.txt", "from stdin\n");
    let tool = json!({
        "class": "CommandLineTool",
        "requirements": [{"class": "EnvVarRequirement",
                          "envDef": [{"envName": "GREETING", "envValue": "hello"}]}],
        "inputs": [input("src", json!("File"), None)],
        "outputs": [
            {"id": "file:///t.cwl#env", "type": "File", "outputBinding": {"glob": "env.txt"}},
            {"id": "file:///t.cwl#err", "type": "File", "outputBinding": {"glob": "err.txt"}},
        ],
        "baseCommand": ["sh", "-c", "env; cat; echo oops >&2"],
        "stdout": "env.txt",
        "stderr": "err.txt",
    });
    // The stdin path is an expression in real tools; a literal path here.
    let mut tool = tool;
    let stdin_path = crate::files::uri_to_path(stdin["location"].as_str().unwrap()).unwrap();
    tool["stdin"] = json!(stdin_path.to_string_lossy());
    // SAFETY-free: set a variable the tool must not see.
    let inv = invocation(tool, json!({"src": stdin}));
    let p = prepare(&inv, &sb.rt, false).unwrap();
    assert_eq!(
        p.env.keys().collect::<Vec<_>>(),
        ["GREETING", "HOME", "PATH", "TMPDIR"]
    );
    let code = execute(&p, &sb.rt);
    let out = collect(&inv, &p, &sb.rt, code).unwrap();
    let env = fs::read_to_string(sb.rt.outdir.join("env.txt")).unwrap();
    let vars: BTreeMap<&str, &str> = env.lines().filter_map(|l| l.split_once('=')).collect();
    assert_eq!(vars["HOME"], sb.rt.outdir.to_str().unwrap());
    assert_eq!(vars["TMPDIR"], sb.rt.tmpdir.to_str().unwrap());
    assert_eq!(vars["GREETING"], "hello");
    assert!(!vars.contains_key("CARGO_MANIFEST_DIR"), "{env}");
    assert!(env.ends_with("from stdin\n"));
    assert_eq!(
        fs::read_to_string(sb.rt.outdir.join("err.txt")).unwrap(),
        "oops\n"
    );
    assert!(
        out["err"]["checksum"]
            .as_str()
            .unwrap()
            .starts_with("sha1$")
    );
}

#[test]
fn exit_code_classes() {
    let tool = json!({
        "class": "CommandLineTool",
        "inputs": [input("code", json!("int"), Some(json!({"position": 1})))],
        "outputs": [],
        "baseCommand": ["sh", "-c", "exit $0"],
        "successCodes": [3],
        "temporaryFailCodes": [4],
        "permanentFailCodes": [0],
    });
    let expect = |code: i32| {
        let sb = Sandbox::new();
        let inv = invocation(tool.clone(), json!({"code": code}));
        let p = prepare(&inv, &sb.rt, false).unwrap();
        let got = execute(&p, &sb.rt);
        assert_eq!(got, code);
        collect(&inv, &p, &sb.rt, got)
    };
    assert_eq!(expect(3).unwrap(), json!({}));
    assert!(matches!(expect(4), Err(CwlError::TemporaryFailure(m)) if m.contains("4")));
    assert!(matches!(expect(0), Err(CwlError::Failed(m)) if m.contains("exit code 0")));
    assert!(matches!(expect(1), Err(CwlError::Failed(m)) if m.contains("exit code 1")));
    assert_eq!(exit_class(&json!({}), 0), ExitClass::Success);
    assert_eq!(exit_class(&json!({}), 2), ExitClass::PermanentFailure);
}

#[test]
fn globs_optional_outputs_secondary_files_and_formats() {
    let sb = Sandbox::new();
    let tool = json!({
        "class": "CommandLineTool",
        "inputs": [],
        "outputs": [
            {"id": "file:///t.cwl#txts", "type": {"type": "array", "items": "File"},
             "outputBinding": {"glob": ["b*.txt", "a*.txt"]}},
            {"id": "file:///t.cwl#bam", "type": "File", "format": "http://edamontology.org/format_2572",
             "secondaryFiles": [{"pattern": "^.bai", "required": null},
                                {"pattern": ".md5", "required": null}],
             "outputBinding": {"glob": "x.bam", "loadContents": true}},
            {"id": "file:///t.cwl#maybe", "type": ["null", "File"],
             "outputBinding": {"glob": "nothing-*"}},
            {"id": "file:///t.cwl#dir", "type": "Directory", "outputBinding": {"glob": "d"}},
        ],
        "baseCommand": ["sh", "-c",
            "echo 1 > b2.txt; echo 2 > b10.txt; echo 3 > a.txt; echo bam > x.bam; \
             echo idx > x.bai; mkdir -p d/e; echo f > d/e/f"],
    });
    let inv = invocation(tool, json!({}));
    let out = run(&inv, &sb).unwrap();
    let names: Vec<&str> = out["txts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["basename"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["b10.txt", "b2.txt", "a.txt"]);
    assert_eq!(out["bam"]["contents"], "bam\n");
    assert_eq!(out["bam"]["format"], "http://edamontology.org/format_2572");
    assert_eq!(out["bam"]["size"], 4);
    assert_eq!(
        out["bam"]["checksum"],
        "sha1$8a06fcd1a3fd7b6b5fe8c2ad3cb7c2c9dec7a4f5".replace(
            "8a06fcd1a3fd7b6b5fe8c2ad3cb7c2c9dec7a4f5",
            &crate::files::sha1_file(&sb.rt.outdir.join("x.bam"))
                .unwrap()
                .0[5..]
        )
    );
    let sfs = out["bam"]["secondaryFiles"].as_array().unwrap();
    assert_eq!(sfs.len(), 1, "the .md5 is optional and absent: {sfs:?}");
    assert_eq!(sfs[0]["basename"], "x.bai");
    assert_eq!(sfs[0]["location"], path_to_uri(&sb.rt.outdir.join("x.bai")));
    assert!(sfs[0]["checksum"].is_string());
    assert_eq!(out["maybe"], Value::Null);
    assert_eq!(out["dir"]["class"], "Directory");
    assert_eq!(out["dir"]["listing"][0]["basename"], "e");
    assert_eq!(out["dir"]["listing"][0]["listing"][0]["basename"], "f");
    assert!(out["bam"].get("path").is_none(), "local paths are dropped");
}

#[test]
fn missing_required_outputs_fail() {
    let sb = Sandbox::new();
    let tool = json!({
        "class": "CommandLineTool",
        "inputs": [],
        "outputs": [{"id": "file:///t.cwl#f", "type": "File",
                     "outputBinding": {"glob": "absent.txt"}}],
        "baseCommand": ["true"],
    });
    let err = run(&invocation(tool, json!({})), &sb).unwrap_err();
    assert!(
        matches!(&err, CwlError::Failed(m) if m.contains("absent.txt") && m.contains("output f")),
        "{err}"
    );

    let sb = Sandbox::new();
    let tool = json!({
        "class": "CommandLineTool",
        "inputs": [],
        "outputs": [{"id": "file:///t.cwl#f", "type": "File",
                     "secondaryFiles": [{"pattern": ".idx", "required": true}],
                     "outputBinding": {"glob": "a.txt"}}],
        "baseCommand": ["touch", "a.txt"],
    });
    let err = run(&invocation(tool, json!({})), &sb).unwrap_err();
    assert!(err.to_string().contains("a.txt.idx"), "{err}");

    let sb = Sandbox::new();
    let tool = json!({
        "class": "CommandLineTool",
        "inputs": [],
        "outputs": [{"id": "file:///t.cwl#f", "type": "File",
                     "outputBinding": {"glob": "../*"}}],
        "baseCommand": ["true"],
    });
    let err = run(&invocation(tool, json!({})), &sb).unwrap_err();
    assert!(
        err.to_string().contains("outside the output directory"),
        "{err}"
    );
}

#[test]
fn cwl_output_json_paths_are_resolved() {
    let sb = Sandbox::new();
    let tool = json!({
        "class": "CommandLineTool",
        "inputs": [],
        "outputs": [
            {"id": "file:///t.cwl#f", "type": "File"},
            {"id": "file:///t.cwl#n", "type": "int"},
        ],
        "baseCommand": ["sh", "-c",
            "echo hi > 'a b.txt'; echo '{\"f\": {\"class\": \"File\", \"path\": \"a b.txt\"}, \"n\": 3, \"extra\": 1}' > cwl.output.json"],
    });
    let out = run(&invocation(tool, json!({})), &sb).unwrap();
    assert_eq!(out["n"], 3);
    assert!(out.get("extra").is_none());
    assert_eq!(
        out["f"]["location"],
        path_to_uri(&sb.rt.outdir.join("a b.txt"))
    );
    assert_eq!(out["f"]["basename"], "a b.txt");
    assert_eq!(out["f"]["size"], 3);
}

#[test]
fn initial_workdir_literals_links_copies_and_updated_paths() {
    let sb = Sandbox::new();
    let ro = sb.file("ro.txt", "read only\n");
    let rw = sb.file("rw.txt", "writable\n");
    let tool = json!({
        "class": "CommandLineTool",
        "requirements": [{"class": "InitialWorkDirRequirement", "listing": [
            {"entryname": "script.sh", "entry": "echo changed >> rw.txt\n"},
            {"entry": ro.clone(), "entryname": "sub/renamed.txt"},
            {"entry": rw.clone(), "writable": true},
            {"class": "File", "basename": "lit.txt", "contents": "literal"},
        ]}],
        "inputs": [
            input("ro", json!("File"), Some(json!({"position": 2}))),
            input("rw", json!("File"), Some(json!({"position": 3}))),
        ],
        "outputs": [{"id": "file:///t.cwl#rw_out", "type": "File",
                     "outputBinding": {"glob": "rw.txt"}}],
        "baseCommand": ["sh", "script.sh"],
    });
    let inv = invocation(tool, json!({"ro": ro, "rw": rw}));
    let p = prepare(&inv, &sb.rt, false).unwrap();
    let out_ro = sb.rt.outdir.join("sub/renamed.txt");
    let out_rw = sb.rt.outdir.join("rw.txt");
    // Inputs staged into the working directory are given by their new paths.
    assert_eq!(
        p.argv,
        [
            "sh",
            "script.sh",
            out_ro.to_str().unwrap(),
            out_rw.to_str().unwrap()
        ]
    );
    assert_eq!(p.job["ro"]["basename"], "renamed.txt");
    assert!(
        fs::symlink_metadata(&out_ro)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(
        !fs::symlink_metadata(&out_rw)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(
        fs::read_to_string(sb.rt.outdir.join("lit.txt")).unwrap(),
        "literal"
    );
    let code = execute(&p, &sb.rt);
    let out = collect(&inv, &p, &sb.rt, code).unwrap();
    assert_eq!(out["rw_out"]["size"], "writable\nchanged\n".len());
    // The original is untouched: the writable entry is a copy.
    assert_eq!(
        fs::read_to_string(sb.data.join("rw.txt")).unwrap(),
        "writable\n"
    );
}

#[test]
fn inplace_update_links_writable_entries() {
    let sb = Sandbox::new();
    let rw = sb.file("rw.txt", "v1\n");
    let tool = json!({
        "class": "CommandLineTool",
        "requirements": [
            {"class": "InitialWorkDirRequirement",
             "listing": [{"entry": rw.clone(), "writable": true}]},
            {"class": "InplaceUpdateRequirement", "inplaceUpdate": true},
        ],
        "inputs": [input("f", json!("File"), None)],
        "outputs": [],
        "baseCommand": ["sh", "-c", "echo v2 >> rw.txt"],
    });
    let inv = invocation(tool, json!({"f": rw}));
    let out = run(&inv, &sb).unwrap();
    assert_eq!(out, json!({}));
    assert_eq!(
        fs::read_to_string(sb.data.join("rw.txt")).unwrap(),
        "v1\nv2\n"
    );
}

#[test]
fn absolute_entryname_needs_a_container() {
    let sb = Sandbox::new();
    let tool = json!({
        "class": "CommandLineTool",
        "requirements": [
            {"class": "DockerRequirement", "dockerPull": "debian:stable-slim"},
            {"class": "InitialWorkDirRequirement",
             "listing": [{"entryname": "/etc/x.conf", "entry": "x"}]},
        ],
        "inputs": [],
        "outputs": [],
        "baseCommand": ["true"],
    });
    let inv = invocation(tool.clone(), json!({}));
    // Without containers a required DockerRequirement is unsupported, as
    // in cwltool.
    let err = prepare(&inv, &sb.rt, false).unwrap_err();
    assert!(
        matches!(&err, CwlError::Unsupported(m) if m.contains("--no-container")),
        "{err}"
    );
    // As a hint it is ignored, and the absolute name is refused.
    let mut hinted = tool.clone();
    hinted["hints"] = json!([hinted["requirements"][0].take()]);
    hinted["requirements"] = json!([hinted["requirements"][1].take()]);
    let err = prepare(&invocation(hinted, json!({})), &sb.rt, false).unwrap_err();
    assert!(err.to_string().contains("absolute"), "{err}");
    let p = prepare(&inv, &sb.rt, true).unwrap();
    assert_eq!(p.image.as_deref(), Some("debian:stable-slim"));
    assert_eq!(p.container_mounts.len(), 1);
    assert_eq!(p.container_mounts[0].1, "/etc/x.conf");
    assert_eq!(fs::read_to_string(&p.container_mounts[0].0).unwrap(), "x");
}

#[test]
fn docker_build_forms_are_unsupported_only_with_containers() {
    let sb = Sandbox::new();
    let tool = json!({
        "class": "CommandLineTool",
        "hints": [{"class": "DockerRequirement", "dockerFile": "FROM debian"}],
        "inputs": [],
        "outputs": [],
        "baseCommand": ["true"],
    });
    let inv = invocation(tool, json!({}));
    assert!(prepare(&inv, &sb.rt, false).unwrap().image.is_none());
    let err = prepare(&inv, &sb.rt, true).unwrap_err();
    assert!(
        matches!(&err, CwlError::Unsupported(m) if m.contains("dockerFile")),
        "{err}"
    );
}

#[test]
fn input_files_get_names_contents_and_secondary_files() {
    let sb = Sandbox::new();
    let reads = sb.file("r.fastq.gz", "@r\nACGT\n");
    sb.file("r.fastq.gz.fai", "idx");
    sb.file("r.bai", "bai");
    let tool = json!({
        "class": "CommandLineTool",
        "inputs": [
            {"id": "file:///t.cwl#reads", "type": "File", "loadContents": true,
             "secondaryFiles": [{"pattern": ".fai", "required": null},
                                {"pattern": "^^.bai", "required": true},
                                {"pattern": ".absent", "required": false}],
             "inputBinding": {"position": 1}},
        ],
        "outputs": [],
        "baseCommand": ["ls"],
    });
    // A step inside a workflow does not look beside the file: the required
    // one is missing.
    let bare = invocation(tool.clone(), json!({"reads": reads}));
    let err = prepare(&bare, &sb.rt, false).unwrap_err();
    assert!(err.to_string().contains("r.fastq.gz.fai"), "{err}");
    // The runner completes the top-level inputs first.
    let job = discover_secondary_files(&tool, &[], &json!({"reads": reads})).unwrap();
    assert_eq!(job["reads"]["secondaryFiles"].as_array().unwrap().len(), 2);
    let inv = invocation(tool, job);
    let p = prepare(&inv, &sb.rt, false).unwrap();
    let f = &p.job["reads"];
    assert_eq!(f["basename"], "r.fastq.gz");
    assert_eq!(f["nameroot"], "r.fastq");
    assert_eq!(f["nameext"], ".gz");
    assert_eq!(f["size"], 8);
    assert_eq!(f["contents"], "@r\nACGT\n");
    assert_eq!(f["dirname"], sb.data.to_str().unwrap());
    let sfs: Vec<&str> = f["secondaryFiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["basename"].as_str().unwrap())
        .collect();
    assert_eq!(sfs, ["r.fastq.gz.fai", "r.bai"]);

    // A required secondary file that is missing fails with its name.
    fs::remove_file(sb.data.join("r.bai")).unwrap();
    let reads = json!({"class": "File", "location": path_to_uri(&sb.data.join("r.fastq.gz"))});
    let err = discover_secondary_files(&inv.tool, &[], &json!({"reads": reads})).unwrap_err();
    assert!(err.to_string().contains("r.bai"), "{err}");
    // Listed secondary files are trusted inside a workflow.
    let mut listed = reads.clone();
    listed["secondaryFiles"] = json!([sb.file("other.idx", "i")]);
    let inv = invocation(inv.tool.clone(), json!({"reads": listed}));
    prepare(&inv, &sb.rt, false).unwrap();
}

#[test]
fn inputs_are_renamed_to_their_basename_with_secondary_files_beside() {
    let sb = Sandbox::new();
    let blob = sb.file("cache/ab12", "primary");
    let idx = sb.file("cache/cd34", "index");
    let mut f = blob.clone();
    f["basename"] = json!("sample.bam");
    let mut sf = idx.clone();
    sf["basename"] = json!("sample.bam.bai");
    f["secondaryFiles"] = json!([sf]);
    let tool = json!({
        "class": "CommandLineTool",
        "inputs": [input("bam", json!("File"), Some(json!({})))],
        "outputs": [],
        "baseCommand": ["ls"],
    });
    let inv = invocation(tool, json!({"bam": f}));
    let p = prepare(&inv, &sb.rt, false).unwrap();
    let path = PathBuf::from(p.argv[1].clone());
    assert_eq!(path.file_name().unwrap(), "sample.bam");
    assert_eq!(fs::read_to_string(&path).unwrap(), "primary");
    assert_eq!(
        fs::read_to_string(path.with_file_name("sample.bam.bai")).unwrap(),
        "index"
    );
    assert!(path.starts_with(stage_dir(&sb.rt)));
    // Literals are written out too.
    let tool = json!({
        "class": "CommandLineTool",
        "inputs": [input("lit", json!("File"), Some(json!({})))],
        "outputs": [],
        "baseCommand": ["cat"],
    });
    let inv = invocation(
        tool,
        json!({"lit": {"class": "File", "basename": "l.txt", "contents": "abc"}}),
    );
    let sb = Sandbox::new();
    let p = prepare(&inv, &sb.rt, false).unwrap();
    assert_eq!(fs::read_to_string(&p.argv[1]).unwrap(), "abc");
    assert!(p.argv[1].ends_with("/l.txt"));
}

#[test]
fn load_contents_over_64_kib_fails() {
    let sb = Sandbox::new();
    let big = sb.file("big.txt", &"x".repeat(64 * 1024 + 1));
    let tool = json!({
        "class": "CommandLineTool",
        "inputs": [{"id": "file:///t.cwl#f", "type": "File",
                    "inputBinding": {"loadContents": true}}],
        "outputs": [],
        "baseCommand": ["true"],
    });
    let err = prepare(&invocation(tool, json!({"f": big})), &sb.rt, false).unwrap_err();
    assert!(err.to_string().contains("64 KiB"), "{err}");
}

#[test]
fn directory_listings_follow_load_listing() {
    let sb = Sandbox::new();
    sb.file("d/a.txt", "a");
    sb.file("d/sub/b.txt", "b");
    let dir = json!({"class": "Directory", "location": path_to_uri(&sb.data.join("d"))});
    let tool_with = |req: Option<&str>, own: Option<&str>| {
        let mut p = input("d", json!("Directory"), None);
        if let Some(o) = own {
            p["loadListing"] = json!(o);
        }
        let mut t = json!({"class": "CommandLineTool", "inputs": [p], "outputs": [],
                           "baseCommand": ["true"]});
        if let Some(r) = req {
            t["requirements"] = json!([{"class": "LoadListingRequirement", "loadListing": r}]);
        }
        t
    };
    let job_of = |t: Value, d: Value| {
        let sb = Sandbox::new();
        prepare(&invocation(t, json!({"d": d})), &sb.rt, false)
            .unwrap()
            .job["d"]
            .clone()
    };
    let none = job_of(tool_with(None, None), dir.clone());
    assert!(none.get("listing").is_none());
    let shallow = job_of(tool_with(Some("shallow_listing"), None), dir.clone());
    let l = shallow["listing"].as_array().unwrap();
    assert_eq!(l.len(), 2);
    assert_eq!(l[1]["basename"], "sub");
    assert!(l[1].get("listing").is_none());
    let deep = job_of(
        tool_with(Some("shallow_listing"), Some("deep_listing")),
        dir.clone(),
    );
    assert_eq!(deep["listing"][1]["listing"][0]["basename"], "b.txt");
    // A listing that came with the directory (as from the job store) is
    // trimmed to what the tool asked for.
    let mut full = dir.clone();
    full["listing"] = json!(crate::files::list_dir(&sb.data.join("d"), true).unwrap());
    assert!(
        job_of(tool_with(None, None), full.clone())
            .get("listing")
            .is_none()
    );
    let shallow = job_of(tool_with(Some("shallow_listing"), None), full);
    assert!(shallow["listing"][1].get("listing").is_none());
}

#[test]
fn input_formats_are_checked() {
    // tests/record-in-format.cwl with record-format-job2.yml (should fail)
    // and a matching job.
    let sb = Sandbox::new();
    let fmt = |f: &str, name: &str| {
        let mut v = sb.file(name, "x");
        v["format"] = json!(f);
        v
    };
    let tool = json!({
        "class": "CommandLineTool",
        "inputs": [
            {"id": "file:///t.cwl#regular_input", "type": "File",
             "format": "http://example.com/format1"},
            {"id": "file:///t.cwl#record_input", "type": {"type": "record", "name": "r",
              "fields": [
                {"name": "f1", "type": "File", "format": "http://example.com/format1"},
                {"name": "f2", "type": {"type": "array", "items": "File"},
                 "format": "http://example.com/format2"}]}},
        ],
        "outputs": [],
        "baseCommand": ["true"],
    });
    let job = |d: &str, a: &str, c: &str| {
        json!({
            "regular_input": fmt(d, "D"),
            "record_input": {"f1": fmt(a, "A"), "f2": [fmt("http://example.com/format2", "B"),
                                                        fmt(c, "C")]},
        })
    };
    let ok = job(
        "http://example.com/format1",
        "http://example.com/format1",
        "http://example.com/format2",
    );
    prepare(&invocation(tool.clone(), ok), &sb.rt, false).unwrap();
    for bad in [
        job(
            "http://example.com/formatZ",
            "http://example.com/format1",
            "http://example.com/format2",
        ),
        job(
            "http://example.com/format1",
            "http://example.com/formatZ",
            "http://example.com/format2",
        ),
        job(
            "http://example.com/format1",
            "http://example.com/format1",
            "http://example.com/formatZ",
        ),
    ] {
        let err = prepare(&invocation(tool.clone(), bad), &sb.rt, false).unwrap_err();
        assert!(err.to_string().contains("formatZ"), "{err}");
    }
    // Two formats of one declared ontology namespace may be related through
    // the ontology, which is not loaded: accepted.
    let edam_tool = json!({
        "class": "CommandLineTool",
        "inputs": [{"id": "file:///t.cwl#input", "type": "File",
                    "format": "http://edamontology.org/format_2330"}],
        "outputs": [],
        "baseCommand": ["true"],
    });
    let mut inv = invocation(
        edam_tool,
        json!({"input": fmt("http://edamontology.org/format_1929", "E")}),
    );
    inv.namespaces
        .insert("edam".into(), json!("http://edamontology.org/"));
    prepare(&inv, &sb.rt, false).unwrap();
}

#[test]
fn resources_defaults_hints_and_min_from_max() {
    let mk = |reqs: Value, hints: Value| {
        let mut inv = invocation(
            json!({"class": "CommandLineTool", "inputs": [], "outputs": []}),
            json!({}),
        );
        inv.requirements = serde_json::from_value(reqs).unwrap();
        inv.hints = serde_json::from_value(hints).unwrap();
        resources(&inv).unwrap()
    };
    let d = mk(json!([]), json!([]));
    assert_eq!(
        d,
        Resources {
            cores: 1.0,
            ram_mib: 256,
            tmpdir_mib: 1024,
            outdir_mib: 1024
        }
    );
    let h = mk(
        json!([]),
        json!([{"class": "ResourceRequirement", "coresMin": 2, "ramMax": 100.5}]),
    );
    assert_eq!(h.cores, 2.0);
    assert_eq!(h.ram_mib, 101);
    let r = mk(
        json!([{"class": "ResourceRequirement", "coresMax": 0.5, "tmpdirMin": 10, "outdirMax": 7}]),
        json!([{"class": "ResourceRequirement", "coresMin": 8}]),
    );
    assert_eq!(r.cores, 0.5);
    assert_eq!(r.tmpdir_mib, 10);
    assert_eq!(r.outdir_mib, 7);
    let mut inv = invocation(
        json!({"class": "CommandLineTool", "inputs": [], "outputs": []}),
        json!({}),
    );
    inv.requirements = vec![json!({"class": "ResourceRequirement", "ramMin": 10, "ramMax": 5})];
    assert!(matches!(resources(&inv), Err(CwlError::Invalid(_))));
}

#[test]
fn time_limit_network_and_codes_are_reported() {
    let sb = Sandbox::new();
    let tool = json!({
        "class": "CommandLineTool",
        "requirements": [{"class": "ToolTimeLimit", "timelimit": 30},
                         {"class": "NetworkAccess", "networkAccess": true},
                         {"class": "WorkReuse", "enableReuse": false}],
        "inputs": [],
        "outputs": [],
        "baseCommand": ["true"],
        "temporaryFailCodes": [75],
    });
    let p = prepare(&invocation(tool, json!({})), &sb.rt, false).unwrap();
    assert_eq!(p.time_limit, Some(std::time::Duration::from_secs(30)));
    assert!(p.network);
    assert_eq!(p.success_codes, [0]);
    assert_eq!(p.temporary_fail_codes, [75]);
}

#[test]
fn python_style_serializations() {
    assert_eq!(
        python_json_dumps(&json!({"b": [1, 2.5, "é"], "a": null})),
        r#"{"a": null, "b": [1, 2.5, "\u00e9"]}"#
    );
    assert_eq!(shell_quote(""), "''");
    assert_eq!(shell_quote("a-b_c.txt"), "a-b_c.txt");
    assert_eq!(shell_quote("a b"), "'a b'");
}

#[test]
fn outputs_linking_outside_the_output_directory_are_rejected_unless_inputs() {
    // As tests/symlink-illegal.cwl: a link to a file the tool wrote elsewhere.
    let sb = Sandbox::new();
    let elsewhere = sb.data.join("original.txt");
    let tool = json!({
        "class": "CommandLineTool",
        "inputs": [],
        "outputs": [{"id": "file:///t.cwl#o", "type": "File",
                     "outputBinding": {"glob": "symlink.txt"}}],
        "baseCommand": ["sh", "-c", format!("echo x > {0}; ln -s {0} symlink.txt",
                                             elsewhere.display())],
    });
    let err = run(&invocation(tool, json!({})), &sb).unwrap_err();
    assert!(
        err.to_string().contains("outside the output directory"),
        "{err}"
    );

    // A link to an input (as InitialWorkDirRequirement makes) is fine.
    let sb = Sandbox::new();
    let f = sb.file("in.txt", "input\n");
    let tool = json!({
        "class": "CommandLineTool",
        "requirements": [{"class": "InitialWorkDirRequirement", "listing": [f.clone()]}],
        "inputs": [input("f", json!("File"), None)],
        "outputs": [{"id": "file:///t.cwl#o", "type": "File",
                     "outputBinding": {"glob": "in.txt"}}],
        "baseCommand": ["true"],
    });
    let out = run(&invocation(tool, json!({"f": f})), &sb).unwrap();
    assert_eq!(out["o"]["size"], 6);
}

#[test]
fn directory_literals_keep_their_listing() {
    let sb = Sandbox::new();
    let tool = json!({
        "class": "CommandLineTool",
        "inputs": [input("d", json!("Directory"), Some(json!({})))],
        "outputs": [],
        "baseCommand": ["ls"],
    });
    let job = json!({"d": {"class": "Directory", "basename": "lit", "listing": [
        {"class": "File", "basename": "a.txt", "contents": "A"}]}});
    let p = prepare(&invocation(tool, job), &sb.rt, false).unwrap();
    let dir = PathBuf::from(&p.argv[1]);
    assert!(dir.ends_with("lit"));
    assert_eq!(fs::read_to_string(dir.join("a.txt")).unwrap(), "A");
    assert_eq!(p.job["d"]["listing"][0]["basename"], "a.txt");
    assert_eq!(
        p.job["d"]["listing"][0]["path"],
        dir.join("a.txt").to_str().unwrap()
    );
}

/// An invocation of a tool with `InlineJavascriptRequirement`.
fn js_invocation(mut tool: Value, job: Value) -> Invocation {
    let reqs = tool
        .get("requirements")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut reqs = reqs;
    reqs.push(json!({"class": "InlineJavascriptRequirement"}));
    tool["requirements"] = Value::Array(reqs);
    invocation(tool, job)
}

#[test]
fn expressions_in_bindings_outputs_and_initial_workdir() {
    let sb = Sandbox::new();
    let f = sb.file("reads.fq", "ACGT\n");
    let tool = json!({
        "class": "CommandLineTool",
        "requirements": [{"class": "InitialWorkDirRequirement", "listing": [
            {"entryname": "obj.json", "entry": "$(inputs.obj)"},
            {"entryname": "keep.txt", "entry": "$(inputs.word)\n"},
            {"entry": "$(inputs.f)", "entryname": "$(inputs.word).fq"},
        ]}],
        "inputs": [
            input("word", json!("string"),
                  Some(json!({"position": "${return 2}", "valueFrom": "$(self.toUpperCase())"}))),
            input("obj", json!({"type": "record", "name": "o", "fields": [
                {"name": "b", "type": "int"}, {"name": "a", "type": "string"}]}), None),
            input("f", json!("File"), Some(json!({"position": 1}))),
        ],
        "outputs": [
            {"id": "file:///t.cwl#code", "type": "int",
             "outputBinding": {"outputEval": "$(runtime.exitCode)"}},
            {"id": "file:///t.cwl#names", "type": {"type": "array", "items": "string"},
             "outputBinding": {"glob": "$(['*.json', '*.txt'])",
                               "outputEval": "${return self.map(function(f){return f.basename})}"}},
            {"id": "file:///t.cwl#fq", "type": "File", "format": "$(inputs.word)",
             "outputBinding": {"glob": "$(inputs.word + '.fq')"}},
        ],
        "baseCommand": ["sh", "-c", "test \"$2\" = HELLO && exit 3", "sh"],
        "successCodes": [3],
    });
    let inv = js_invocation(
        tool,
        json!({"word": "hello", "obj": {"b": 1, "a": "x"}, "f": f}),
    );
    let p = prepare(&inv, &sb.rt, false).unwrap();
    // The input staged as hello.fq is given by its new path; word's
    // position (2) puts it after f (1).
    assert_eq!(
        p.argv[4..],
        [sb.rt.outdir.join("hello.fq").to_str().unwrap(), "HELLO"]
    );
    assert_eq!(
        fs::read_to_string(sb.rt.outdir.join("obj.json")).unwrap(),
        r#"{"a": "x", "b": 1}"#
    );
    assert_eq!(
        fs::read_to_string(sb.rt.outdir.join("keep.txt")).unwrap(),
        "hello\n"
    );
    let code = execute(&p, &sb.rt);
    let out = collect(&inv, &p, &sb.rt, code).unwrap();
    assert_eq!(out["code"], 3);
    assert_eq!(out["names"], json!(["obj.json", "keep.txt"]));
    assert_eq!(out["fq"]["format"], "hello");
    assert_eq!(out["fq"]["size"], 5);
}

#[test]
fn secondary_files_required_by_expression() {
    let sb = Sandbox::new();
    let f = sb.file("ref.fa", ">r\n");
    let tool = json!({
        "class": "CommandLineTool",
        "inputs": [
            {"id": "file:///t.cwl#fa", "type": "File", "inputBinding": {},
             "secondaryFiles": [{"pattern": ".dat", "required": "$(inputs.need)"}]},
            input("need", json!(["null", "boolean"]), None),
        ],
        "outputs": [],
        "baseCommand": ["true"],
    });
    // null from the expression: not required.
    let inv = js_invocation(tool.clone(), json!({"fa": f.clone(), "need": null}));
    prepare(&inv, &sb.rt, false).unwrap();
    let inv = js_invocation(tool, json!({"fa": f, "need": true}));
    let err = prepare(&inv, &sb.rt, false).unwrap_err();
    assert!(err.to_string().contains("ref.fa.dat"), "{err}");
}

#[test]
fn expression_tool_reads_contents_through_the_callback() {
    let tool = json!({
        "class": "ExpressionTool",
        "inputs": [{"id": "file:///t.cwl#f", "type": "File", "loadContents": true}],
        "outputs": [{"id": "file:///t.cwl#n", "type": "int"},
                    {"id": "file:///t.cwl#name", "type": "string"}],
        "expression": "${return {n: parseInt(inputs.f.contents), name: inputs.f.nameroot, extra: 1}}",
    });
    let inv = js_invocation(
        tool,
        json!({"f": {"class": "File", "location": "toilfile:abc", "basename": "n.txt"}}),
    );
    let mut asked = Vec::new();
    let mut read = |loc: &str, limit: usize| -> Result<Vec<u8>, CwlError> {
        asked.push((loc.to_string(), limit));
        Ok(b"42\n".to_vec())
    };
    let out = run_expression_tool(&inv, &mut read).unwrap();
    assert_eq!(out, json!({"n": 42, "name": "n"}));
    assert_eq!(asked, [("toilfile:abc".to_string(), 64 * 1024 + 1)]);
}

#[test]
fn expression_tool_outputs_keep_whole_listings() {
    // An ExpressionTool passing its Directory input through gives it back
    // without the listing its `loadListing` trimmed; the input's whole
    // listing is put back, other directories are left alone.
    let original = json!({"d": {"class": "Directory", "location": "toildir:k",
                                "listing": [{"class": "File", "location": "toilfile:a"}]}});
    let mut out = json!({"o": {"class": "Directory", "location": "toildir:k"},
                         "p": {"class": "Directory", "location": "toildir:other"}});
    super::restore_listings(&original, &mut out);
    assert_eq!(out["o"]["listing"][0]["location"], "toilfile:a");
    assert!(out["p"].get("listing").is_none());
}

#[test]
fn globs_may_name_the_output_directory_itself_but_not_other_absolute_paths() {
    let sb = Sandbox::new();
    let outdir = sb.rt.outdir.to_string_lossy().into_owned();
    let tool = json!({
        "class": "CommandLineTool",
        "inputs": [],
        "outputs": [
            {"id": "file:///t.cwl#f", "type": "File",
             "outputBinding": {"glob": format!("{outdir}/a.txt")}},
            {"id": "file:///t.cwl#all", "type": "Directory",
             "outputBinding": {"glob": "."}},
        ],
        "baseCommand": ["touch", "a.txt"],
    });
    let out = run(&invocation(tool, json!({})), &sb).unwrap();
    assert_eq!(out["f"]["basename"], "a.txt");
    assert_eq!(out["all"]["location"], path_to_uri(&sb.rt.outdir));
    assert_eq!(out["all"]["listing"][0]["basename"], "a.txt");

    let sb = Sandbox::new();
    let tool = json!({
        "class": "CommandLineTool",
        "inputs": [],
        "outputs": [{"id": "file:///t.cwl#f", "type": "File",
                     "outputBinding": {"glob": "/etc/hostname"}}],
        "baseCommand": ["true"],
    });
    let err = run(&invocation(tool, json!({})), &sb).unwrap_err();
    assert!(err.to_string().contains("absolute path"), "{err}");
}

#[test]
fn secondary_files_given_by_expressions_are_placed_beside_the_primary() {
    // As tests/secondaryfiles/rename-inputs.cwl: the pattern gives another
    // input under a new name; the tool finds it next to the primary file.
    let sb = Sandbox::new();
    let primary = sb.file("a/secondary_file_test.txt", "primary\n");
    let accessory = sb.file("b/secondary_file_test.txt.accessory", "accessory\n");
    let tool = json!({
        "class": "CommandLineTool",
        "inputs": [
            {"id": "file:///t.cwl#p", "type": "File", "inputBinding": {},
             "secondaryFiles": [{"pattern":
                "${return [{'class': 'File', 'location': inputs.acc.location, 'basename': self.nameroot + '.accessory'}]}",
                "required": null}]},
            input("acc", json!("File"), None),
        ],
        "outputs": [],
        "baseCommand": ["cat"],
    });
    let inv = js_invocation(tool, json!({"p": primary, "acc": accessory}));
    let p = prepare(&inv, &sb.rt, false).unwrap();
    let primary_path = PathBuf::from(&p.argv[1]);
    assert_eq!(
        fs::read_to_string(primary_path.with_file_name("secondary_file_test.accessory")).unwrap(),
        "accessory\n"
    );
    assert_eq!(fs::read_to_string(&primary_path).unwrap(), "primary\n");
}
