//! Workflow files: parsing, validation and the parsed form.
//!
//! A workflow file is YAML (the format is documented in
//! `examples/README.md`). [`load`] reads one into a [`Workflow`], or returns
//! every problem found, each with its file, line, column and a hint. After
//! that, nothing in the file can fail the run: references resolve, there
//! are no cycles, sizes parse and local inputs exist. [`check_fits`] then
//! compares job sizes with the machines the leader can use.
//!
//! The pieces:
//! - `yaml`: the YAML document as a tree of nodes with positions.
//! - `parse`: the tree into workflow types, checking each section.
//! - `validate`: what needs the whole workflow (references, cycles, files).
//! - [`template`]: `{{VAR}}` placeholders and [`render`].
//! - [`units`]: sizes, cores and durations, also used by the CLI.
//! - [`spec`]: the parsed form the scheduler runs.
//! - [`limits`]: upper bounds on sizes, counts and durations.

use std::path::{Path, PathBuf};

mod diag;
mod fits;
#[cfg(test)]
mod fuzz;
pub mod limits;
mod parse;
pub mod spec;
pub mod template;
pub mod units;
mod validate;
mod yaml;

pub use diag::{Diagnostic, Diagnostics};
pub use fits::{ResolvedDefaults, Resources, check_fits};
pub use spec::*;
pub use template::render;

/// Reads and checks a workflow file. Relative input paths are resolved from
/// the file's directory.
pub fn load(path: &Path) -> Result<Workflow, Diagnostics> {
    load_checked(path, |_| Ok(()))
}

/// Like [`load`], and also runs `check` (for example [`check_fits`]) on the
/// jobs that parsed even when others did not, so that every mistake in the
/// file is reported at once, in file order.
pub fn load_checked(
    path: &Path,
    check: impl FnOnce(&Workflow) -> Result<(), Diagnostics>,
) -> Result<Workflow, Diagnostics> {
    let too_big = std::fs::metadata(path)
        .ok()
        .filter(|m| m.len() > limits::MAX_FILE_BYTES);
    if let Some(m) = too_big {
        return Err(Diagnostic {
            file: path.to_path_buf(),
            pos: Pos::default(),
            message: format!(
                "the workflow file is {} bytes, more than the {} a workflow file may have",
                m.len(),
                limits::MAX_FILE_BYTES
            ),
            hint: Some(
                "generate many similar jobs with scatter: instead of writing each out".into(),
            ),
        }
        .into());
    }
    let text = std::fs::read_to_string(path).map_err(|e| Diagnostic {
        file: path.to_path_buf(),
        pos: Pos::default(),
        message: format!("can't read the workflow file: {e}"),
        hint: Some(match e.kind() {
            std::io::ErrorKind::NotFound => {
                "check the path; try examples/hello.yaml for a first run".to_string()
            }
            std::io::ErrorKind::InvalidData => "save the file as UTF-8 text".to_string(),
            _ => "check that the file exists and is readable".to_string(),
        }),
    })?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let (wf, sink) = parse_partial(&text, path, &dir, true);
    let mut diags = sink.into_diagnostics();
    if let Some(wf) = &wf
        && let Err(more) = check(wf)
    {
        diags.0.extend(more.0);
        diags.sort();
    }
    match wf {
        Some(wf) if diags.is_empty() => Ok(wf),
        _ => Err(diags),
    }
}

/// Parses and checks workflow text. `source` names the file in messages and
/// gives the default workflow name; relative input paths are resolved from
/// `base_dir` (made absolute first).
pub fn parse_str(text: &str, source: &Path, base_dir: &Path) -> Result<Workflow, Diagnostics> {
    parse_inner(text, source, base_dir, true)
}

/// Parses a workflow stored in a job store for `--restart`: like
/// [`parse_str`], but local input files need not exist any more (they were
/// imported into the job store when the workflow first ran).
pub fn parse_stored(text: &str, source: &Path, base_dir: &Path) -> Result<Workflow, Diagnostics> {
    parse_inner(text, source, base_dir, false)
}

fn parse_inner(
    text: &str,
    source: &Path,
    base_dir: &Path,
    check_files: bool,
) -> Result<Workflow, Diagnostics> {
    match parse_partial(text, source, base_dir, check_files) {
        (Some(wf), sink) if !sink.has_errors() => Ok(wf),
        (_, sink) => Err(sink.into_diagnostics()),
    }
}

/// Parses as far as possible: the workflow (whose erroneous parts are left
/// out or defaulted) unless the file is not YAML at all, and the problems.
fn parse_partial(
    text: &str,
    source: &Path,
    base_dir: &Path,
    check_files: bool,
) -> (Option<Workflow>, diag::Sink) {
    let base_dir = std::path::absolute(base_dir).unwrap_or_else(|_| base_dir.to_path_buf());
    let mut sink = diag::Sink::new(source);
    if text.len() as u64 > limits::MAX_FILE_BYTES {
        sink.error(
            Pos { line: 1, col: 1 },
            format!(
                "the workflow file is {} bytes, more than the {} a workflow file may have",
                text.len(),
                limits::MAX_FILE_BYTES
            ),
            "generate many similar jobs with scatter: instead of writing each out",
        );
        return (None, sink);
    }
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let root = yaml::parse(text, &mut sink);
    let Some(root) = root else {
        if !sink.has_errors() {
            sink.error(
                Pos { line: 1, col: 1 },
                "the workflow file is empty",
                "a workflow needs at least a jobs: section; see examples/hello.yaml",
            );
        }
        return (None, sink);
    };
    let parsed = parse::workflow(&root, source, &mut sink);
    let wf = validate::resolve(parsed, source, &base_dir, &mut sink, check_files);
    (Some(wf), sink)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
