//! The `toil-cwl-runner` (and `cwl-runner`) command line:
//!
//! ```text
//! toil-cwl-runner [OPTIONS] WORKFLOW.cwl [JOB.yml|json] [--INPUT VALUE ...]
//! ```
//!
//! Toil's flags are the leader's own (`RunArgs`: `--jobStore`,
//! `--batchSystem`, `--restart`, `--logInfo`, `--disableCaching`,
//! `--maxCores`, ...); cwltool's are added here. Inputs may also be given
//! as flags after the document, as cwltool allows. Exit codes: 0 success,
//! 1 the workflow failed, 2 bad input (document, input object or options),
//! 33 something this runner does not support, 3 the job store is in use,
//! 130 interrupted.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser};
use serde_json::{Map, Value};
use toil_cwl::CwlError;

use super::executor::ExecOptions;
use super::front::{self, Start};
use crate::cli::RunArgs;
use crate::run::{Failure, exit};

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "toil-cwl-runner",
    about = "Run a Common Workflow Language (CWL v1.2) workflow or tool with toil-rs.",
    long_about = "Run a Common Workflow Language (CWL v1.2) workflow or tool with toil-rs: each tool invocation runs as a job through the leader's agents (local processes or Kubernetes pods), with the workflow's state in the job store so that --restart resumes it. The output object is printed as JSON on standard output; everything else goes to standard error."
)]
pub struct CwlArgs {
    /// Toil's options, and the CWL document (WORKFLOW).
    #[command(flatten)]
    pub run: RunArgs,

    /// The input object (YAML or JSON).
    pub job: Option<PathBuf>,

    /// Where the outputs are copied (default: the current directory).
    #[arg(long)]
    pub outdir: Option<PathBuf>,

    /// Only warnings and errors on standard error.
    #[arg(long)]
    pub quiet: bool,

    /// Print the version and exit.
    #[arg(long)]
    pub version: bool,

    /// Ignore DockerRequirement: run every tool on the host.
    #[arg(long = "no-container")]
    pub no_container: bool,

    /// Run containers with Singularity (the only engine used anyway).
    #[arg(long)]
    pub singularity: bool,

    /// Accepted for cwltool compatibility: file names are not restricted.
    #[arg(long = "relax-path-checks")]
    pub relax_path_checks: bool,

    /// Load and check the document, then exit (0 valid, 2 invalid, 33
    /// unsupported).
    #[arg(long)]
    pub validate: bool,

    /// Prefix of temporary directories: the default job store goes in its
    /// directory.
    #[arg(long = "tmpdir-prefix")]
    pub tmpdir_prefix: Option<String>,

    /// Prefix of output directories: tools' work directories go in its
    /// directory (unless --workDir is given).
    #[arg(long = "tmp-outdir-prefix")]
    pub tmp_outdir_prefix: Option<String>,

    /// `--clean` was given (else a temporary job store is always deleted).
    #[arg(skip)]
    pub clean_given: bool,
}

/// Splits the command line into what clap parses (options, the document,
/// the input object) and input flags after the document (`--name value`),
/// which clap does not know.
pub fn split_args(argv: &[String]) -> (Vec<String>, Vec<String>) {
    let cmd = CwlArgs::command();
    let takes_value = |name: &str| -> Option<bool> {
        cmd.get_arguments()
            .find(|a| a.get_long() == Some(name))
            .map(|a| {
                a.get_action().takes_values() && a.get_num_args().is_none_or(|n| n.min_values() > 0)
            })
    };
    let optional_value = |name: &str| -> bool {
        cmd.get_arguments()
            .find(|a| a.get_long() == Some(name))
            .is_some_and(|a| {
                a.get_action().takes_values()
                    && a.get_num_args().is_some_and(|n| n.min_values() == 0)
            })
    };
    let mut known = Vec::new();
    let mut positional = 0;
    let mut i = 0;
    while i < argv.len() {
        let a = &argv[i];
        if a == "--" {
            return (known, argv[i + 1..].to_vec());
        }
        if let Some(long) = a.strip_prefix("--") {
            let name = long.split('=').next().unwrap_or(long);
            match takes_value(name) {
                None if positional >= 1 => return (known, argv[i..].to_vec()),
                Some(true) if !long.contains('=') => {
                    known.push(a.clone());
                    if let Some(v) = argv.get(i + 1) {
                        known.push(v.clone());
                    }
                    i += 2;
                    continue;
                }
                _ if optional_value(name) && !long.contains('=') => {
                    // `--realTimeLogging true` or a bare `--realTimeLogging`
                    // (written `=true`, so that clap does not take the
                    // document for its value).
                    match argv.get(i + 1) {
                        Some(v) if v == "true" || v == "false" => {
                            known.push(format!("{a}={v}"));
                            i += 2;
                        }
                        _ => {
                            known.push(format!("{a}=true"));
                            i += 1;
                        }
                    }
                    continue;
                }
                _ => {
                    known.push(a.clone());
                    i += 1;
                    continue;
                }
            }
        }
        if !a.starts_with('-') || a == "-" {
            positional += 1;
            if positional > 2 {
                return (known, argv[i..].to_vec());
            }
        }
        known.push(a.clone());
        i += 1;
    }
    (known, Vec::new())
}

/// The input parameters given as flags (`--name value`, `--name=value`,
/// `--flag` for a boolean), converted by the type each has in `process`'s
/// inputs: File and Directory paths (relative to `cwd`) become objects,
/// numbers are parsed, an array input collects repeated flags.
pub fn inputs_from_flags(
    flags: &[String],
    process: &Value,
    cwd: &Path,
) -> Result<Map<String, Value>, CwlError> {
    let inputs: Vec<&Value> = process
        .get("inputs")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let type_of = |name: &str| -> Option<&Value> {
        inputs
            .iter()
            .find(|i| {
                i.get("id")
                    .and_then(Value::as_str)
                    .is_some_and(|id| toil_cwl::load::shortname(id) == name)
            })
            .and_then(|i| i.get("type"))
    };
    let mut out = Map::new();
    let mut i = 0;
    while i < flags.len() {
        let Some(flag) = flags[i].strip_prefix("--") else {
            return Err(CwlError::Invalid(format!(
                "unexpected argument {:?}: inputs after the document are given as --NAME VALUE",
                flags[i]
            )));
        };
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (flag.to_string(), None),
        };
        let Some(ty) = type_of(&name) else {
            return Err(CwlError::Invalid(format!(
                "--{name}: the document has no input named {name:?}"
            )));
        };
        let (base, is_array) = element_type(ty);
        let value = match inline {
            Some(v) => Some(v),
            None if base == "boolean" && flags.get(i + 1).is_none_or(|n| n.starts_with("--")) => {
                None
            }
            None => {
                i += 1;
                Some(
                    flags
                        .get(i)
                        .cloned()
                        .ok_or_else(|| CwlError::Invalid(format!("--{name} needs a value")))?,
                )
            }
        };
        i += 1;
        let v = convert(&name, &base, value, cwd)?;
        if is_array {
            match out.entry(name).or_insert_with(|| Value::Array(Vec::new())) {
                Value::Array(a) => a.push(v),
                other => *other = Value::Array(vec![v]),
            }
        } else {
            out.insert(name, v);
        }
    }
    Ok(out)
}

/// The primitive type of an input (optional and array wrappers removed)
/// and whether it is an array.
fn element_type(ty: &Value) -> (String, bool) {
    match ty {
        Value::String(s) => (
            s.trim_end_matches('?').trim_end_matches("[]").to_string(),
            s.contains("[]"),
        ),
        Value::Array(alts) => alts
            .iter()
            .find(|t| t.as_str() != Some("null"))
            .map_or(("string".into(), false), element_type),
        Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("array") => {
            let (b, _) = o
                .get("items")
                .map_or(("string".into(), false), element_type);
            (b, true)
        }
        _ => ("string".into(), false),
    }
}

fn convert(name: &str, ty: &str, v: Option<String>, cwd: &Path) -> Result<Value, CwlError> {
    let bad = |v: &str| CwlError::Invalid(format!("--{name} {v:?}: not a valid {ty}"));
    let Some(v) = v else {
        return Ok(Value::Bool(true));
    };
    Ok(match ty {
        "boolean" => Value::Bool(v.parse().map_err(|_| bad(&v))?),
        "int" | "long" => Value::from(v.parse::<i64>().map_err(|_| bad(&v))?),
        "float" | "double" => Value::from(v.parse::<f64>().map_err(|_| bad(&v))?),
        "File" | "Directory" => {
            let p = cwd.join(&v);
            let mut m = Map::new();
            m.insert("class".into(), Value::String(ty.into()));
            m.insert(
                "location".into(),
                Value::String(toil_agent::cwl::file_uri(&p)),
            );
            Value::Object(m)
        }
        _ => Value::String(v),
    })
}

/// Runs `toil-cwl-runner` with `argv` (the program name first); returns the
/// process's exit code.
pub fn main_with(argv: Vec<String>) -> ExitCode {
    if argv.get(1).map(String::as_str) == Some("agent") {
        // The embedded agent, for a machine with no toil-agent executable.
        let mut a = vec!["toil-leader".to_string()];
        a.extend(argv.into_iter().skip(1));
        return match crate::cli::Cli::try_parse_from(a) {
            Ok(crate::cli::Cli {
                command: crate::cli::Command::Agent(args),
            }) => crate::cli::run_agent(args),
            Ok(_) => ExitCode::from(exit::BAD_INPUT),
            Err(e) => {
                let _ = e.print();
                ExitCode::from(exit::BAD_INPUT)
            }
        };
    }
    if argv.iter().skip(1).any(|a| a == "--version") {
        println!("toil-cwl-runner {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let (known, flags) = split_args(argv.get(1..).unwrap_or_default());
    let clean_given = known
        .iter()
        .any(|a| a == "--clean" || a.starts_with("--clean="));
    let mut clap_argv = vec![
        argv.first()
            .cloned()
            .unwrap_or_else(|| "toil-cwl-runner".into()),
    ];
    clap_argv.extend(known);
    let matches = match CwlArgs::command().try_get_matches_from(clap_argv) {
        Ok(m) => m,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { exit::BAD_INPUT } else { 0 });
        }
    };
    let mut args = match CwlArgs::from_arg_matches(&matches) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(exit::BAD_INPUT);
        }
    };
    args.clean_given = clean_given;
    crate::progress::ECHO_TO_STDERR.store(true, std::sync::atomic::Ordering::Relaxed);
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| args.run.log_filter().to_string());
    // Messages for the user unless --quiet.
    let user = if args.quiet { "warn" } else { "info" };
    let filter = format!("{filter},{}={user}", crate::terminal::USER);
    tracing_subscriber::fmt()
        .event_format(crate::terminal::UserFormat::new())
        .with_writer(crate::terminal::TerminalWriter(crate::terminal::stderr()))
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("toil-cwl-runner: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(run(args, flags));
    // Jobs' agents and pipes are gone; do not wait for stray blocking
    // tasks (a stuck job-store request) to finish.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    ExitCode::from(code)
}

/// Loads the document and input object, then runs the workflow through a
/// leader. Returns the exit code.
pub async fn run(mut args: CwlArgs, flags: Vec<String>) -> u8 {
    let doc_path = args.run.workflow.clone();
    // The file the argument names: cwltest and other CWL tools pass
    // `file:///dir/wf.cwl#main`; `packed.cwl#main` names a process in a file.
    let source_file = toil_cwl::load::document_file(&doc_path);
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let fail = |e: CwlError| -> u8 {
        eprintln!("toil-cwl-runner: {e}");
        u8::try_from(e.exit_code()).unwrap_or(1)
    };
    // On --restart the stored document is the one that runs; the given one
    // is loaded only when it exists (and is needed if the store has none).
    let given = if args.run.restart && !source_file.exists() && !args.validate {
        None
    } else {
        let doc = match toil_cwl::load::load_document(&doc_path) {
            Ok(d) => d,
            Err(e) => return fail(e),
        };
        if args.validate {
            println!("{} is valid CWL.", doc_path.display());
            return 0;
        }
        let mut job = match &args.job {
            Some(p) => match toil_cwl::load::load_job_order(p, &doc) {
                Ok(j) => j,
                Err(e) => return fail(e),
            },
            None => Value::Object(Map::new()),
        };
        match inputs_from_flags(&flags, &doc.process, &cwd) {
            Ok(extra) => {
                if let Value::Object(m) = &mut job {
                    m.extend(extra);
                }
            }
            Err(e) => return fail(e),
        }
        Some((doc, job))
    };
    // cwltool's defaults where Toil's differ: a failed tool is not run
    // again unless --retryCount says so.
    if args.run.retry_count.is_none() {
        args.run.retry_count = Some(0);
    }
    if args.singularity && args.run.container_engine.is_none() {
        args.run.container_engine = Some("singularity".into());
    }
    if args.run.work_dir.is_none()
        && let Some(p) = &args.tmp_outdir_prefix
        && let Some(dir) = Path::new(p).parent().filter(|d| !d.as_os_str().is_empty())
    {
        args.run.work_dir = Some(dir.to_path_buf());
    }
    // A fresh job store in a temporary directory unless one is named; it
    // is deleted when the workflow succeeds.
    let mut temp_parent = None;
    if args.run.job_store.is_none() {
        let base = args
            .tmpdir_prefix
            .as_deref()
            .and_then(|p| Path::new(p).parent().map(Path::to_path_buf))
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or_else(std::env::temp_dir);
        let dir = match tempfile::Builder::new()
            .prefix("toil-cwl-")
            .tempdir_in(&base)
        {
            Ok(d) => d.keep(),
            Err(e) => {
                return fail(CwlError::Failed(format!(
                    "cannot make a temporary directory in {}: {e}",
                    base.display()
                )));
            }
        };
        args.run.job_store = Some(format!("file:{}", dir.join("jobstore").display()));
        temp_parent = Some(dir);
        // Nobody can restart a store they were not told the name of
        // (--quiet hides it), so a temporary one goes even after a failure.
        if !args.clean_given {
            args.run.clean = crate::config::Clean::Always;
        }
    }
    let name = given
        .as_ref()
        .and_then(|(d, _)| d.process.get("id").and_then(Value::as_str))
        .map(|id| toil_cwl::load::shortname(id).to_string())
        .filter(|n| !n.is_empty() && !n.starts_with("_anonymous"))
        .or_else(|| {
            source_file
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "cwl".into());
    let wf = (!args.run.restart).then(|| super::empty_workflow(&name, &source_file));
    let outdir = args.outdir.clone().unwrap_or_else(|| cwd.clone());
    let outdir = if outdir.is_absolute() {
        outdir
    } else {
        cwd.join(outdir)
    };
    let no_container = args.no_container;
    let temporary_store = temp_parent.is_some();
    let cfg = match args.run.into_cwl_config(wf) {
        Ok(c) => c,
        Err(e) => return report(e),
    };
    let exec = ExecOptions {
        no_container,
        max_millicores: cfg.capacity.millicores,
        max_memory: cfg.capacity.memory,
    };
    let start = Start {
        given,
        outdir,
        exec,
        cancel_on_failure: temporary_store,
    };
    let frontfn: crate::run::FrontFn = Box::new(move |fe| Box::pin(front::run(fe, start)));
    let code = match crate::run::run_with(cfg, Some(frontfn)).await {
        Ok(c) => c,
        Err(e) => report(e),
    };
    if let Some(dir) = temp_parent
        && !dir.join("jobstore").exists()
    {
        let _ = std::fs::remove_dir_all(&dir);
    }
    code
}

/// The exit code of a run that could not start (and says why).
fn report(e: anyhow::Error) -> u8 {
    match e.downcast_ref::<Failure>() {
        Some(f) => {
            eprintln!("toil-cwl-runner: {}", f.message);
            f.code
        }
        None => {
            eprintln!("toil-cwl-runner: {e:#}");
            exit::FAILED
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn the_seed_command_line_parses() {
        let argv = s(&[
            "--jobStore",
            "aws:us-west-2:NAME",
            "--batchSystem",
            "kubernetes",
            "--realTimeLogging",
            "--logInfo",
            "--disableCaching",
            "path/to/workflow.cwl",
            "path/to/inputs.yaml",
        ]);
        let (known, flags) = split_args(&argv);
        let mut expected = argv.clone();
        expected[4] = "--realTimeLogging=true".into();
        assert_eq!(known, expected);
        assert!(flags.is_empty());
        let mut full = s(&["toil-cwl-runner"]);
        full.extend(known);
        let a = CwlArgs::try_parse_from(full).unwrap();
        assert_eq!(a.run.workflow, PathBuf::from("path/to/workflow.cwl"));
        assert_eq!(a.job, Some(PathBuf::from("path/to/inputs.yaml")));
        assert_eq!(a.run.job_store.as_deref(), Some("aws:us-west-2:NAME"));
        assert!(a.run.log_info && a.run.disable_caching && a.run.real_time_logging);
    }

    #[test]
    fn cwltest_lines_and_input_flags_split() {
        let argv = s(&[
            "--relax-path-checks",
            "--no-container",
            "--outdir=/tmp/o",
            "--quiet",
            "t.cwl",
            "--reads",
            "r.fq",
            "--n=3",
            "--verbose",
        ]);
        let (known, flags) = split_args(&argv);
        assert_eq!(known, argv[..5].to_vec());
        assert_eq!(flags, s(&["--reads", "r.fq", "--n=3", "--verbose"]));
        let tool = json!({"inputs": [
            {"id": "file:///t.cwl#reads", "type": "File"},
            {"id": "file:///t.cwl#n", "type": ["null", "int"]},
            {"id": "file:///t.cwl#verbose", "type": "boolean"},
            {"id": "file:///t.cwl#tags", "type": {"type": "array", "items": "string"}}
        ]});
        let m = inputs_from_flags(&flags, &tool, Path::new("/w")).unwrap();
        assert_eq!(
            m["reads"],
            json!({"class": "File", "location": "file:///w/r.fq"})
        );
        assert_eq!(m["n"], json!(3));
        assert_eq!(m["verbose"], json!(true));
        let m =
            inputs_from_flags(&s(&["--tags", "a", "--tags", "b"]), &tool, Path::new("/")).unwrap();
        assert_eq!(m["tags"], json!(["a", "b"]));
        let e = inputs_from_flags(&s(&["--nope", "1"]), &tool, Path::new("/")).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let e = inputs_from_flags(&s(&["--n", "x"]), &tool, Path::new("/")).unwrap_err();
        assert!(e.to_string().contains("not a valid int"), "{e}");
    }
}
