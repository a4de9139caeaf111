//! Collecting a job's declared outputs and storing them in the job store.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobSetBuilder};
use toil_jobstore::JobStore;
use toil_proto::v1::{FileRef, OutputFiles, OutputSpec};

use crate::cache::NodeCache;

/// Why outputs could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// A required output matched nothing.
    #[error(
        "output {name:?} matched no file (patterns {patterns:?}); the work directory holds: {listing}"
    )]
    Missing {
        /// The output.
        name: String,
        /// Its patterns.
        patterns: Vec<String>,
        /// Some of the files present, to help spot a typo.
        listing: String,
    },
    /// A pattern is not a valid glob.
    #[error("output {name:?}: bad pattern {pattern:?}: {reason}")]
    BadPattern {
        /// The output.
        name: String,
        /// The pattern.
        pattern: String,
        /// What is wrong.
        reason: String,
    },
    /// Storing a file failed.
    #[error("storing output {path}: {source}")]
    Store {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: toil_jobstore::Error,
    },
    /// Reading the work directory failed.
    #[error("listing the work directory: {0}")]
    Io(#[from] std::io::Error),
}

fn is_glob(p: &str) -> bool {
    p.contains(['*', '?', '[', '{'])
}

/// Every regular file under `dir`, as `/`-separated relative paths, sorted.
fn list_files(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for entry in std::fs::read_dir(dir.join(&rel))? {
            let entry = entry?;
            let path = rel.join(entry.file_name());
            let ft = entry.file_type()?;
            if ft.is_dir() {
                stack.push(path);
            } else if ft.is_file() {
                out.push(path.to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Finds each output's files in `work_dir` (globs skip the staged
/// `inputs`), uploads them under `prefix`, and adds them to the node cache.
/// Returns the outputs and the bytes uploaded.
pub async fn collect(
    store: &JobStore,
    cache: &NodeCache,
    work_dir: &Path,
    prefix: &str,
    specs: &[OutputSpec],
    inputs: &HashSet<String>,
) -> Result<(Vec<OutputFiles>, u64), OutputError> {
    if specs.is_empty() {
        return Ok((Vec::new(), 0));
    }
    let files = list_files(work_dir)?;
    let mut outputs = Vec::with_capacity(specs.len());
    let mut uploaded = 0u64;
    for spec in specs {
        let mut literal = HashSet::new();
        let mut globs = GlobSetBuilder::new();
        let mut has_glob = false;
        for p in &spec.patterns {
            let p = p.trim_start_matches("./");
            if is_glob(p) {
                let g = GlobBuilder::new(p)
                    .literal_separator(true)
                    .build()
                    .map_err(|e| OutputError::BadPattern {
                        name: spec.name.clone(),
                        pattern: p.to_string(),
                        reason: e.to_string(),
                    })?;
                globs.add(g);
                has_glob = true;
            } else {
                literal.insert(p.trim_end_matches('/').to_string());
            }
        }
        let set = globs.build().map_err(|e| OutputError::BadPattern {
            name: spec.name.clone(),
            pattern: spec.patterns.join(", "),
            reason: e.to_string(),
        })?;
        let matched: Vec<&String> = files
            .iter()
            .filter(|f| {
                literal.contains(f.as_str())
                    || literal.iter().any(|d| f.starts_with(&format!("{d}/")))
                    || (has_glob && !inputs.contains(f.as_str()) && set.is_match(f.as_str()))
            })
            .collect();
        if matched.is_empty() && !spec.optional {
            let shown: Vec<&str> = files
                .iter()
                .filter(|f| !inputs.contains(f.as_str()))
                .take(10)
                .map(String::as_str)
                .collect();
            return Err(OutputError::Missing {
                name: spec.name.clone(),
                patterns: spec.patterns.clone(),
                listing: if shown.is_empty() {
                    "(no files)".into()
                } else {
                    shown.join(", ")
                },
            });
        }
        let mut refs = Vec::with_capacity(matched.len());
        for rel in matched {
            let key = format!("{prefix}{rel}");
            let path = work_dir.join(rel);
            // The job may still change its directory (a leftover process):
            // upload the file found now, through its descriptor, and never
            // anything a symbolic link put in its place.
            let file =
                toil_jobstore::beneath::open_file(work_dir, Path::new(rel)).map_err(|e| {
                    OutputError::Store {
                        path: rel.clone(),
                        source: toil_jobstore::Error::io(format!("opening output {rel}"), e),
                    }
                })?;
            let t = store
                .put_file(&key, &toil_jobstore::beneath::fd_path(&file))
                .await
                .map_err(|e| OutputError::Store {
                    path: rel.clone(),
                    source: e,
                })?;
            uploaded += t.size;
            if let Err(e) = cache.insert_output(&key, &path, &t).await {
                tracing::debug!(error = %e, "output not added to the node cache");
            }
            refs.push(FileRef {
                file_id: key,
                path: rel.clone(),
                size_bytes: t.size,
                sha256: t.sha256,
            });
        }
        outputs.push(OutputFiles {
            name: spec.name.clone(),
            files: refs,
        });
    }
    Ok((outputs, uploaded))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::CacheConfig;

    #[tokio::test]
    async fn globs_literals_and_missing_outputs() {
        let dir = tempfile::tempdir().expect("tmp");
        let wd = dir.path().join("wd");
        std::fs::create_dir_all(wd.join("sub")).expect("mkdir");
        for f in ["a.txt", "b.txt", "in.txt", "sub/c.txt", "x.log"] {
            std::fs::write(wd.join(f), f).expect("write");
        }
        let store = JobStore::open(&toil_jobstore::Locator::File(dir.path().join("js")))
            .await
            .expect("open");
        store.initialize().await.expect("init");
        let cache = NodeCache::open(
            &dir.path().join("cache"),
            CacheConfig {
                disabled: true,
                ..CacheConfig::default()
            },
        )
        .expect("cache");
        let inputs: HashSet<String> = ["in.txt".to_string()].into();
        let spec = |name: &str, pats: &[&str], optional| OutputSpec {
            name: name.into(),
            patterns: pats.iter().map(|s| s.to_string()).collect(),
            optional,
        };
        let (outs, bytes) = collect(
            &store,
            &cache,
            &wd,
            "files/j/1/",
            &[
                spec("txt", &["*.txt"], false),
                spec("dir", &["sub"], false),
                spec("lit", &["in.txt"], false),
                spec("none", &["*.bam"], true),
            ],
            &inputs,
        )
        .await
        .expect("collect");
        let paths = |i: usize| {
            outs[i]
                .files
                .iter()
                .map(|f| f.path.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            paths(0),
            ["a.txt", "b.txt"],
            "globs skip staged inputs and subdirs"
        );
        assert_eq!(paths(1), ["sub/c.txt"]);
        assert_eq!(paths(2), ["in.txt"], "a literal path may name an input");
        assert!(paths(3).is_empty());
        assert_eq!(bytes, 5 + 5 + 9 + 6);
        assert_eq!(outs[0].files[0].file_id, "files/j/1/a.txt");
        let err = collect(
            &store,
            &cache,
            &wd,
            "p/",
            &[spec("bam", &["*.bam"], false)],
            &inputs,
        )
        .await
        .expect_err("missing");
        let msg = err.to_string();
        assert!(
            msg.contains("\"bam\" matched no file") && msg.contains("a.txt"),
            "{msg}"
        );
    }
}
