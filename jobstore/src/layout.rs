//! Where things live in a job store. Leader and agent both derive keys from
//! these functions, so they always agree.
//!
//! ```text
//! .toil-jobstore                  marker (file stores; S3 uses an object)
//! workflow/spec.yaml              the workflow file as first run
//! workflow/imports.pb             local inputs imported at start
//! workflow/meta.json              workflow id, name, creation time
//! workflow/versions/N/            an edited version of the workflow (spec.yaml,
//!                                 imports.pb, source.json), from a resume
//! state/journal/N, state/snapshot/N, state/lease.json   see `state`
//! state/leader.json               address and client token of the live leader
//! files/inputs/SHA256             imported local inputs, by content
//! files/JOB/N/PATH                outputs of attempt N of job JOB
//! results/JOB.N                   an attempt's result (toil.v1.AttemptResult)
//! logs/JOB/N/OFFSET               an attempt's log, in segments by byte offset
//! ```
//!
//! Job ids may contain `/` (children of dynamic jobs), so in keys a job id is
//! written with `/` replaced by `~` (job names cannot contain `~`).

/// The workflow file as given at the first run.
pub const SPEC_KEY: &str = "workflow/spec.yaml";
/// The imported local inputs (`toil.v1.ImportedInputs`).
pub const IMPORTS_KEY: &str = "workflow/imports.pb";
/// Workflow identity (JSON).
pub const META_KEY: &str = "workflow/meta.json";
/// Prefix of the stored edited versions of the workflow.
pub const VERSIONS_PREFIX: &str = "workflow/versions/";

/// The workflow file of version `v` (1 and up; version 0 is [`SPEC_KEY`]).
pub fn version_spec_key(v: u32) -> String {
    format!("{VERSIONS_PREFIX}{v}/spec.yaml")
}

/// The imported local inputs of version `v` (`toil.v1.ImportedInputs`).
pub fn version_imports_key(v: u32) -> String {
    format!("{VERSIONS_PREFIX}{v}/imports.pb")
}

/// Where version `v`'s file was read from (JSON: `source`, `base_dir`).
pub fn version_source_key(v: u32) -> String {
    format!("{VERSIONS_PREFIX}{v}/source.json")
}

/// The version number in a key under [`VERSIONS_PREFIX`].
pub fn version_of_key(key: &str) -> Option<u32> {
    key.strip_prefix(VERSIONS_PREFIX)?
        .split('/')
        .next()?
        .parse()
        .ok()
}

/// Address and client token of the running leader (JSON).
pub const LEADER_KEY: &str = "state/leader.json";

/// A job id as one key component.
pub fn job_key(job_id: &str) -> String {
    job_id.replace('/', "~")
}

/// The id of attempt `n` of job `job_id`: `JOB_ID.N`.
pub fn attempt_id(job_id: &str, n: u32) -> String {
    format!("{job_id}.{n}")
}

/// Splits `JOB_ID.N` into its parts.
pub fn split_attempt_id(attempt_id: &str) -> Option<(&str, u32)> {
    let (job, n) = attempt_id.rsplit_once('.')?;
    Some((job, n.parse().ok()?))
}

/// Key prefix for the outputs of an attempt; an output file's key is this
/// plus its path relative to the work directory.
pub fn output_prefix(job_id: &str, attempt: u32) -> String {
    format!("files/{}/{attempt}/", job_key(job_id))
}

/// Key of an imported local input with this content hash.
pub fn input_key(sha256: &str) -> String {
    format!("files/inputs/{sha256}")
}

/// Key of an attempt's result record. Flat (no directory per job): on a
/// file store every directory costs an inode, and this is written for every
/// attempt.
pub fn result_key(job_id: &str, attempt: u32) -> String {
    format!("results/{}.{attempt}", job_key(job_id))
}

/// Prefix of an attempt's log segments.
pub fn log_prefix(job_id: &str, attempt: u32) -> String {
    format!("logs/{}/{attempt}/", job_key(job_id))
}

/// Key of the log segment starting at byte `offset`.
pub fn log_segment_key(job_id: &str, attempt: u32, offset: u64) -> String {
    format!("{}{offset:016}", log_prefix(job_id, attempt))
}

/// The byte offset a log segment key starts at.
pub fn log_segment_offset(key: &str) -> Option<u64> {
    key.rsplit('/').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_keep_nested_job_ids_apart() {
        assert_eq!(output_prefix("a/1", 1), "files/a~1/1/");
        assert_ne!(result_key("a/1", 1), result_key("a", 1));
        assert_eq!(result_key("count[3]", 2), "results/count[3].2");
        let k = log_segment_key("a", 1, 4096);
        assert_eq!(k, "logs/a/1/0000000000004096");
        assert_eq!(log_segment_offset(&k), Some(4096));
        assert_eq!(split_attempt_id("a/b.3"), Some(("a/b", 3)));
        assert_eq!(
            split_attempt_id(&attempt_id("count[3]/c", 2)),
            Some(("count[3]/c", 2))
        );
        assert_eq!(split_attempt_id("nodot"), None);
        assert_eq!(split_attempt_id("a.x"), None);
    }
}
