//! Where the tests find the CWL v1.2 specification and its conformance
//! tests: `$CWL_SPEC_DIR`, else `shared/cwl-v1.2` beside the workspace,
//! else `/work/shared/cwl-v1.2` (the same order as
//! `scripts/cwl-conformance.sh`, so a clone anywhere finds it).

use std::path::{Path, PathBuf};

/// The specification directory (the one holding `conformance_tests.yaml`);
/// fails the test naming every place looked at and the variable to set.
pub(crate) fn spec_dir() -> PathBuf {
    let candidates: Vec<PathBuf> = match std::env::var_os("CWL_SPEC_DIR").filter(|d| !d.is_empty())
    {
        Some(d) => vec![PathBuf::from(d)],
        None => vec![
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/cwl-v1.2"),
            PathBuf::from("/work/shared/cwl-v1.2"),
        ],
    };
    if let Some(d) = candidates
        .iter()
        .find(|d| d.join("conformance_tests.yaml").is_file())
    {
        return d.clone();
    }
    let looked: Vec<String> = candidates.iter().map(|d| d.display().to_string()).collect();
    panic!(
        "the CWL v1.2 specification is not at {}; set CWL_SPEC_DIR to the directory holding conformance_tests.yaml",
        looked.join(" nor ")
    )
}
