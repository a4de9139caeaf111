//! Checks on what an agent reports, before the leader acts on it.
//!
//! A report is input from the job as much as from its agent: a job can read
//! its agent's credentials (from `/proc`) and report in the agent's place.
//! So the outputs a DONE report names must be ones the job declared, their
//! paths must stay inside the output directory they are exported to, and
//! their job-store keys must lie under the attempt's own prefix (a report
//! cannot hand another job's files, or the inputs, as its outputs).

use toil_jobstore::layout;
use toil_proto::v1::AttemptResult;

use crate::core::LaunchSpec;

/// The longest output path accepted, in bytes.
const MAX_PATH: usize = 4096;

/// Whether `path` is relative and made only of plain names: no root, no
/// `..`, no `.`, nothing empty, no NUL.
pub fn plain_relative(path: &str) -> bool {
    !path.is_empty()
        && path.len() <= MAX_PATH
        && !path.contains('\0')
        && !path.starts_with('/')
        && !path
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
}

/// Checks the outputs of `result` against the attempt `spec` launched.
pub fn check_outputs(spec: &LaunchSpec, result: &AttemptResult) -> Result<(), String> {
    let prefix = layout::output_prefix(&spec.job_id, spec.attempt);
    for out in &result.outputs {
        if !spec.outputs.iter().any(|o| o.name == out.name) {
            return Err(format!(
                "output {:?} is not one job {} declares",
                out.name, spec.job_id
            ));
        }
        for f in &out.files {
            if !plain_relative(&f.path) {
                return Err(format!(
                    "output {:?} names the path {:?}, which is not a plain relative path inside the job's directory",
                    out.name, f.path
                ));
            }
            let rest = f.file_id.strip_prefix(&prefix);
            if !rest.is_some_and(plain_relative) {
                return Err(format!(
                    "output {:?} names the stored file {:?}, which is not under this attempt's prefix {prefix:?}",
                    out.name, f.file_id
                ));
            }
        }
    }
    crate::cwl::check_result(spec, result)
}

#[cfg(test)]
mod tests {
    use toil_proto::v1::{FileRef, OutputFiles, OutputSpec};

    use super::*;

    fn spec() -> LaunchSpec {
        LaunchSpec {
            job_id: "part[3]".into(),
            attempt: 2,
            attempt_id: "part[3].2".into(),
            argv: vec![],
            env: Default::default(),
            image: None,
            request: crate::core::Request {
                millicores: 100,
                memory: 1 << 20,
                disk: 1 << 20,
                gpus: 0,
                preemptible: false,
            },
            time_limit: None,
            inputs: vec![],
            cwl_invocation: None,
            outputs: vec![OutputSpec {
                name: "p".into(),
                patterns: vec!["p*.txt".into()],
                optional: false,
            }],
        }
    }

    fn result(name: &str, path: &str, file_id: &str) -> AttemptResult {
        AttemptResult {
            outputs: vec![OutputFiles {
                name: name.into(),
                files: vec![FileRef {
                    file_id: file_id.into(),
                    path: path.into(),
                    size_bytes: 1,
                    sha256: String::new(),
                }],
            }],
            ..Default::default()
        }
    }

    #[test]
    fn declared_outputs_under_the_attempts_prefix_pass() {
        let s = spec();
        let id = format!("{}sub/p1.txt", layout::output_prefix("part[3]", 2));
        assert_eq!(check_outputs(&s, &result("p", "sub/p1.txt", &id)), Ok(()));
    }

    #[test]
    fn forged_outputs_are_refused_with_the_reason() {
        let s = spec();
        let ok_id = format!("{}p1.txt", layout::output_prefix("part[3]", 2));
        let cases = [
            (
                result("secret", "p1.txt", &ok_id),
                "not one job part[3] declares",
            ),
            (
                result("p", "../../etc/passwd", &ok_id),
                "not a plain relative path",
            ),
            (
                result("p", "/etc/passwd", &ok_id),
                "not a plain relative path",
            ),
            (result("p", "a/./b", &ok_id), "not a plain relative path"),
            (result("p", "", &ok_id), "not a plain relative path"),
            (result("p", "a\0b", &ok_id), "not a plain relative path"),
            (
                result("p", "p1.txt", &layout::input_key("abc")),
                "not under this attempt's prefix",
            ),
            (
                result(
                    "p",
                    "p1.txt",
                    &format!("{}p1.txt", layout::output_prefix("part[3]", 1)),
                ),
                "not under this attempt's prefix",
            ),
            (
                result(
                    "p",
                    "p1.txt",
                    &format!("{}../../4/x", layout::output_prefix("part[3]", 2)),
                ),
                "not under this attempt's prefix",
            ),
        ];
        for (r, why) in cases {
            let e = check_outputs(&s, &r).expect_err("refused");
            assert!(e.contains(why), "{e}");
        }
    }

    /// Path components chosen to try every way out of a directory.
    fn component() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            Just(String::new()),
            Just(".".to_string()),
            Just("..".to_string()),
            Just("...".to_string()),
            Just("a..b".to_string()),
            Just(".hidden".to_string()),
            Just("p1.txt".to_string()),
            Just("\0".to_string()),
            Just("\\..".to_string()),
            Just("~".to_string()),
            "[a-z.]{1,4}",
            any::<String>(),
        ]
    }

    fn path() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        (any::<bool>(), proptest::collection::vec(component(), 1..6)).prop_map(|(root, parts)| {
            let p = parts.join("/");
            if root { format!("/{p}") } else { p }
        })
    }

    /// True if joining `path` to a directory, component by component as
    /// the export does, can only go down into it.
    fn stays_inside(path: &str) -> bool {
        use std::path::{Component, Path};
        !path.is_empty()
            && Path::new(path)
                .components()
                .all(|c| matches!(c, Component::Normal(_)))
            && Path::new("/out").join(path).starts_with("/out/")
    }

    proptest::proptest! {
        // Pure string checks: 1,024 cases take a fraction of a second.
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1024))]

        /// Whatever an agent (or a job forging its report) sends, an
        /// accepted output path and the stored file's name under the
        /// attempt's prefix are relative, made of plain names, and stay
        /// inside the directory they are joined to.
        #[test]
        fn any_accepted_report_stays_inside_its_directory(
            name in proptest::prop_oneof![proptest::strategy::Just("p".to_string()), "[a-z]{1,3}"],
            out_path in path(),
            id_rest in path(),
            own_prefix in proptest::prelude::any::<bool>(),
        ) {
            let s = spec();
            let prefix = if own_prefix {
                layout::output_prefix("part[3]", 2)
            } else {
                layout::output_prefix("part[3]", 1)
            };
            let id = format!("{prefix}{id_rest}");
            let accepted = check_outputs(&s, &result(&name, &out_path, &id)).is_ok();
            if accepted {
                proptest::prop_assert_eq!(name.as_str(), "p");
                proptest::prop_assert!(own_prefix);
                proptest::prop_assert!(stays_inside(&out_path), "{:?}", out_path);
                proptest::prop_assert!(stays_inside(&id_rest), "{:?}", id_rest);
            }
            if plain_relative(&out_path) {
                proptest::prop_assert!(stays_inside(&out_path), "{:?}", out_path);
            }
        }
    }
}
