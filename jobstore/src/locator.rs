//! Parsing `--jobStore` values.
//!
//! Accepted forms, as in Toil:
//! - `file:PATH` or a bare `PATH`: a directory on a local or shared
//!   filesystem (relative paths are resolved against the current directory);
//! - `aws:REGION:NAME`: S3 bucket `NAME--toil` in `REGION`.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Where a job store lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Locator {
    /// A directory.
    File(PathBuf),
    /// An S3 bucket named `{name}--toil` in `region`.
    Aws {
        /// AWS region, for example `us-west-2`.
        region: String,
        /// The job store's name; the bucket is this plus `--toil`.
        name: String,
    },
}

/// Suffix Toil appends to a job store name to form its bucket name.
pub const BUCKET_SUFFIX: &str = "--toil";

impl Locator {
    /// Parses a locator, resolving relative file paths against `cwd`.
    pub fn parse_in(value: &str, cwd: &Path) -> Result<Self> {
        let bad = |reason: &str| Error::BadLocator {
            locator: value.to_string(),
            reason: reason.to_string(),
        };
        if value.is_empty() {
            return Err(bad(
                "it is empty; use file:PATH for a directory or aws:REGION:NAME for S3",
            ));
        }
        if let Some(rest) = value.strip_prefix("aws:") {
            let (region, name) = rest.split_once(':').ok_or_else(|| {
                bad("an AWS job store is written aws:REGION:NAME, for example aws:us-west-2:my-run")
            })?;
            validate_region(region).map_err(|r| bad(&r))?;
            validate_name(name).map_err(|r| bad(&r))?;
            return Ok(Locator::Aws {
                region: region.to_string(),
                name: name.to_string(),
            });
        }
        if let Some((scheme, _)) = value.split_once(':')
            && scheme != "file"
            && !scheme.contains('/')
            && matches!(scheme, "google" | "gs" | "azure" | "s3" | "http" | "https")
        {
            return Err(bad(&format!(
                "the {scheme}: job store is not supported; use file:PATH or aws:REGION:NAME"
            )));
        }
        let path = value.strip_prefix("file:").unwrap_or(value);
        if path.is_empty() {
            return Err(bad("file: needs a path, for example file:./my-run"));
        }
        let path = Path::new(path);
        let abs = if path.is_absolute() {
            path.to_path_buf()
        } else {
            cwd.join(path)
        };
        Ok(Locator::File(normalize(&abs)))
    }

    /// Parses a locator relative to the process's current directory.
    pub fn parse(value: &str) -> Result<Self> {
        let cwd =
            std::env::current_dir().map_err(|e| Error::io("reading the current directory", e))?;
        Self::parse_in(value, &cwd)
    }

    /// The S3 bucket name for an `aws:` locator.
    pub fn bucket(&self) -> Option<String> {
        match self {
            Locator::Aws { name, .. } => Some(format!("{name}{BUCKET_SUFFIX}")),
            Locator::File(_) => None,
        }
    }
}

impl fmt::Display for Locator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Locator::File(p) => write!(f, "file:{}", p.display()),
            Locator::Aws { region, name } => write!(f, "aws:{region}:{name}"),
        }
    }
}

impl std::str::FromStr for Locator {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Locator::parse(s)
    }
}

fn validate_region(region: &str) -> Result<(), String> {
    let ok = !region.is_empty()
        && region
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{region:?} is not an AWS region name (lowercase letters, digits and '-', like us-west-2)"
        ))
    }
}

fn validate_name(name: &str) -> Result<(), String> {
    // The bucket name NAME--toil must be a valid S3 bucket name: 3-63
    // characters of lowercase letters, digits, '-' and '.', starting and
    // ending with a letter or digit.
    let bucket_len = name.len() + BUCKET_SUFFIX.len();
    if name.is_empty() {
        return Err("the job store name after the region is empty".into());
    }
    if bucket_len > 63 {
        return Err(format!(
            "the name {name:?} is too long: the bucket {name}{BUCKET_SUFFIX} would have {bucket_len} characters and S3 allows 63; use at most {} characters",
            63 - BUCKET_SUFFIX.len()
        ));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
    {
        return Err(format!(
            "the name {name:?} may only hold lowercase letters, digits, '-' and '.' (it becomes the S3 bucket {name}{BUCKET_SUFFIX})"
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit()) {
        return Err(format!(
            "the name {name:?} must start with a lowercase letter or a digit"
        ));
    }
    if name.contains("--") {
        return Err(format!(
            "the name {name:?} may not contain '--' (reserved as the separator before 'toil')"
        ));
    }
    Ok(())
}

/// Removes `.` and resolves `..` lexically, without touching the filesystem.
fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        let cwd = Path::new("/home/u/work");
        assert_eq!(
            Locator::parse_in("file:./run1", cwd).ok(),
            Some(Locator::File("/home/u/work/run1".into()))
        );
        assert_eq!(
            Locator::parse_in("/data/js", cwd).ok(),
            Some(Locator::File("/data/js".into()))
        );
        assert_eq!(
            Locator::parse_in("../js", cwd).ok(),
            Some(Locator::File("/home/u/js".into()))
        );
        let aws = Locator::parse_in("aws:us-west-2:demouser-toil-test-jobstore", cwd).ok();
        assert_eq!(
            aws,
            Some(Locator::Aws {
                region: "us-west-2".into(),
                name: "demouser-toil-test-jobstore".into()
            })
        );
        assert_eq!(
            aws.and_then(|l| l.bucket()).as_deref(),
            Some("demouser-toil-test-jobstore--toil")
        );
        assert_eq!(
            Locator::parse_in("aws:us-west-2:x", cwd)
                .map(|l| l.to_string())
                .ok()
                .as_deref(),
            Some("aws:us-west-2:x")
        );
    }

    #[test]
    fn bad_locators_say_what_to_write() {
        let cwd = Path::new("/");
        for (input, needle) in [
            ("", "file:PATH"),
            ("aws:us-west-2", "aws:REGION:NAME"),
            ("aws:US:x", "region"),
            ("aws:us-west-2:My_Run", "lowercase"),
            ("aws:us-west-2:a--b", "'--'"),
            ("google:proj:x", "not supported"),
            ("file:", "needs a path"),
        ] {
            let err = Locator::parse_in(input, cwd).expect_err(input).to_string();
            assert!(err.contains(needle), "{input:?} gave {err:?}");
        }
        let long = format!("aws:us-west-2:{}", "a".repeat(60));
        let err = Locator::parse_in(&long, cwd).expect_err("long").to_string();
        assert!(err.contains("at most 57"), "{err}");
    }
}
