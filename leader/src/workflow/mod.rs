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

use std::path::{Path, PathBuf};

mod diag;
mod fits;
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
    parse_str(&text, path, &dir)
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
    let base_dir = std::path::absolute(base_dir).unwrap_or_else(|_| base_dir.to_path_buf());
    let mut sink = diag::Sink::new(source);
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
        return Err(sink.into_diagnostics());
    };
    let parsed = parse::workflow(&root, source, &mut sink);
    let wf = validate::resolve(parsed, source, &base_dir, &mut sink, check_files);
    if sink.has_errors() {
        Err(sink.into_diagnostics())
    } else {
        Ok(wf)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
