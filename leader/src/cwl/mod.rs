//! The CWL front end of the leader: `toil-cwl-runner`.
//!
//! A CWL run is an ordinary leader run (job store, journal, agents, the
//! gRPC services, `status` / `logs` / `clean`) whose workflow file holds no
//! jobs: the workflow engine (`toil_cwl::workflow::run`) adds one job per
//! CommandLineTool invocation while it runs, through [`SchedExecutor`], the
//! scheduler-backed `toil_cwl::Executor`. The pieces:
//!
//! - [`cli`]: the command line (Toil's flags through the leader's own
//!   `RunArgs`, and cwltool's), loading and checking the document, the exit
//!   codes;
//! - [`front`]: what runs beside the driver (`crate::run::run_with`):
//!   importing the input object, storing the document for `--restart`,
//!   running the engine, exporting the output object;
//! - [`executor`]: one job per invocation, resolved with its output object;
//! - [`files`]: File and Directory objects between the local disk and the
//!   job store (import, export, reading).
//!
//! How an invocation runs on an agent is in `toil_agent::cwl`; the contract
//! between the parts is `cwl/DESIGN.md`.

pub mod cli;
pub mod executor;
pub mod files;
pub mod front;

pub use executor::SchedExecutor;

use serde_json::Value;
use toil_proto::v1::AttemptResult;

use crate::core::{CWL_OUTPUT, LaunchSpec};
use crate::run::Meta;
use crate::workflow::{Defaults, Workflow};

/// Key of the stored CWL document (normalized, as JSON) in the job store.
pub const DOCUMENT_KEY: &str = "workflow/cwl/document.json";
/// Key of the stored input object (files already imported) in the job store.
pub const JOB_KEY: &str = "workflow/cwl/job.json";

/// The jobless workflow a CWL run's leader runs (its jobs are added as the
/// document runs).
pub fn empty_workflow(name: &str, source: &std::path::Path) -> Workflow {
    let source = std::path::absolute(source).unwrap_or_else(|_| source.to_path_buf());
    Workflow {
        name: name.to_string(),
        base_dir: source
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default(),
        source,
        defaults: Defaults::default(),
        jobs: Vec::new(),
        outputs: Vec::new(),
    }
}

/// The workflow of a stored CWL run (for `--restart`, `status`, `logs`).
pub fn stored_workflow(meta: &Meta) -> Workflow {
    let mut wf = empty_workflow(&meta.name, &meta.source);
    wf.base_dir = meta.base_dir.clone();
    wf
}

/// The job name for an invocation key (`main/align/3/sort`): job names hold
/// only letters, digits, `-` and `_` and at most 63 characters, so other
/// characters become `_`, and a name that had to change (or be shortened)
/// gets 8 hexadecimal digits of the key's hash, so two keys never share a
/// name and the same key always gets the same one (which `--restart`
/// relies on).
pub fn job_name(key: &str) -> String {
    let clean: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean == key && !key.is_empty() && key.len() <= 63 {
        return clean;
    }
    let hash = {
        use sha2::Digest;
        hex::encode(&sha2::Sha256::digest(key.as_bytes())[..4])
    };
    let keep: String = clean
        .trim_matches('_')
        .chars()
        .rev()
        .take(63 - 9)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    if keep.is_empty() {
        format!("cwl-{hash}")
    } else {
        format!("{keep}-{hash}")
    }
}

/// Checks the CWL part of an attempt's report: only a CWL job may report
/// an output object, and every job-store file it names must be one the
/// attempt stored (its `cwl` outputs, checked against its prefix by
/// `check_outputs`) or one it was given. A Directory's `toildir:` key is a
/// name only, so it is not checked.
pub fn check_result(spec: &LaunchSpec, result: &AttemptResult) -> Result<(), String> {
    if result.cwl_outputs.is_empty() {
        return Ok(());
    }
    if spec.cwl_invocation.is_none() {
        return Err(format!(
            "job {} is not a CWL job but reported a CWL output object",
            spec.job_id
        ));
    }
    let mut v: Value = serde_json::from_str(&result.cwl_outputs)
        .map_err(|e| format!("the CWL output object is not valid JSON: {e}"))?;
    let stored: std::collections::HashSet<&str> = result
        .outputs
        .iter()
        .filter(|o| o.name == CWL_OUTPUT)
        .flat_map(|o| o.files.iter().map(|f| f.file_id.as_str()))
        .chain(
            spec.inputs
                .iter()
                .filter_map(|i| i.file.as_ref().map(|f| f.file_id.as_str())),
        )
        .collect();
    let mut bad = None;
    toil_cwl::files::walk_mut(&mut v, &mut |m| {
        if let Some(id) = m
            .get("location")
            .and_then(Value::as_str)
            .and_then(|l| l.strip_prefix(toil_agent::cwl::TOILFILE))
            && !stored.contains(id)
            && bad.is_none()
        {
            bad = Some(id.to_string());
        }
    });
    match bad {
        Some(id) => Err(format!(
            "the CWL output object names the stored file {id:?}, which this attempt neither stored nor was given"
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use toil_proto::v1::{FileRef, OutputFiles, StagedInput};

    #[test]
    fn job_names_are_valid_stable_and_distinct() {
        assert_eq!(job_name("main_sort"), "main_sort");
        let a = job_name("main/align/3/sort");
        let b = job_name("main_align_3_sort");
        assert_ne!(a, b);
        assert_eq!(a, job_name("main/align/3/sort"));
        assert!(a.starts_with("main_align_3_sort-"), "{a}");
        let long = job_name(&"x/".repeat(100));
        assert!(long.len() <= 63, "{long}");
        for n in [a, b, long, job_name("#"), job_name("")] {
            assert!(
                !n.is_empty()
                    && n.len() <= 63
                    && n.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
                "{n}"
            );
        }
    }

    fn cwl_spec(name: &str) -> toil_proto::v1::JobSpec {
        toil_proto::v1::JobSpec {
            name: name.into(),
            cwl_invocation: r#"{"tool": {}, "job": {}}"#.into(),
            staged_files: vec![StagedInput {
                file: Some(FileRef {
                    file_id: "files/inputs/aa".into(),
                    ..Default::default()
                }),
                dest_path: "in/0/a.txt".into(),
                writable: false,
            }],
            ..Default::default()
        }
    }

    fn core() -> crate::core::Core {
        let defaults = crate::workflow::ResolvedDefaults {
            millicores: 1000,
            memory: 1 << 30,
            disk: 1 << 30,
            retries: 0,
        };
        crate::core::Core::new(
            &empty_workflow("w", std::path::Path::new("/w.cwl")),
            defaults,
            crate::core::RetryPolicy::default(),
        )
    }

    #[test]
    fn cwl_jobs_launch_with_their_invocation_and_keep_their_outputs_across_a_replay() {
        use toil_proto::v1::{AddJobsRequest, Cause, JobState, Relation};
        let mut c = core();
        c.hold_open(true);
        assert!(!c.is_finished(), "an empty CWL workflow is open while held");
        let add = |c: &mut crate::core::Core, spec| {
            c.add_root_jobs(AddJobsRequest {
                jobs: vec![spec],
                relation: Relation::Root as i32,
                parent_job_id: String::new(),
            })
        };
        add(&mut c, cwl_spec("step")).unwrap();
        // A CWL job carries no command or outputs of its own.
        let mut bad = cwl_spec("bad");
        bad.shell = "echo".into();
        assert!(add(&mut c, bad).is_err());
        let mut bad = cwl_spec("bad");
        bad.staged_files[0].dest_path = "../x".into();
        assert!(add(&mut c, bad).is_err());

        let j = c.lookup("step").unwrap();
        let n = c.launch(j, "", 0, None).unwrap();
        let spec = c.launch_spec(j, n).unwrap();
        assert_eq!(
            spec.cwl_invocation.as_deref(),
            Some(r#"{"tool": {}, "job": {}}"#)
        );
        assert_eq!(spec.inputs[0].dest_path, "in/0/a.txt");
        assert_eq!(spec.outputs[0].name, CWL_OUTPUT);
        let result = AttemptResult {
            cause: Some(Cause::succeeded()),
            cwl_outputs: r#"{"o": 1}"#.into(),
            ..Default::default()
        };
        c.finish(j, n, result, 0, std::time::Instant::now())
            .unwrap();
        assert_eq!(c.state(j), JobState::Succeeded);
        assert_eq!(c.cwl_outputs(j), Some(r#"{"o": 1}"#));
        assert!(!c.is_finished(), "still held");
        c.hold_open(false);
        assert!(c.is_finished());

        // A restarted leader replays the journal: the job and its output
        // object come back.
        let mut again = core();
        for e in c.drain_journal() {
            again.replay(e, std::time::Instant::now()).unwrap();
        }
        again.finish_replay();
        let j = again.lookup("step").unwrap();
        assert_eq!(again.state(j), JobState::Succeeded);
        assert_eq!(again.cwl_outputs(j), Some(r#"{"o": 1}"#));
    }

    fn spec() -> LaunchSpec {
        LaunchSpec {
            job_id: "t".into(),
            attempt: 1,
            attempt_id: "t.1".into(),
            argv: vec![],
            env: Default::default(),
            image: None,
            request: crate::core::Request {
                millicores: 1000,
                memory: 1 << 30,
                disk: 1 << 30,
                gpus: 0,
                preemptible: false,
            },
            time_limit: None,
            inputs: vec![StagedInput {
                file: Some(FileRef {
                    file_id: "files/inputs/aa".into(),
                    ..Default::default()
                }),
                dest_path: "in/0/a".into(),
                writable: false,
            }],
            outputs: vec![],
            cwl_invocation: Some("{}".into()),
        }
    }

    #[test]
    fn output_objects_may_name_only_the_attempts_files() {
        let s = spec();
        let mut r = AttemptResult {
            cwl_outputs: r#"{"o": {"class": "File", "location": "toilfile:files/t/1/o.txt"},
                             "i": {"class": "File", "location": "toilfile:files/inputs/aa"}}"#
                .into(),
            outputs: vec![OutputFiles {
                name: CWL_OUTPUT.into(),
                files: vec![FileRef {
                    file_id: "files/t/1/o.txt".into(),
                    ..Default::default()
                }],
            }],
            ..Default::default()
        };
        assert_eq!(check_result(&s, &r), Ok(()));
        r.cwl_outputs =
            r#"{"o": {"class": "File", "location": "toilfile:files/other/1/secret"}}"#.into();
        assert!(
            check_result(&s, &r)
                .unwrap_err()
                .contains("files/other/1/secret")
        );
        let mut yaml = s.clone();
        yaml.cwl_invocation = None;
        assert!(
            check_result(&yaml, &r)
                .unwrap_err()
                .contains("not a CWL job")
        );
        r.cwl_outputs = String::new();
        assert_eq!(check_result(&yaml, &r), Ok(()));
    }
}
