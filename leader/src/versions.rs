//! Resuming a workflow against its file as it is now.
//!
//! `run --restart` (and a plain `run` on a job store that already holds the
//! workflow) compares the workflow file on disk, and the input files it
//! names, with the version the job store runs. If anything differs, the new
//! version is stored under `workflow/versions/N/`, the plan (what is kept,
//! what runs again and why) is printed, and one journal entry moves the
//! scheduler to the new version (see [`crate::core::resume`]). With no
//! difference, nothing is stored and the workflow resumes as it was.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::Context;
use bytes::Bytes;
use prost::Message;
use serde::{Deserialize, Serialize};
use sha2::Digest;
use toil_jobstore::{Condition, JobStore, layout};
use toil_proto::v1::{FileRef, ImportedInput, ImportedInputs};

use crate::core::{Core, ResumePlan, StoredVersion};
use crate::run::files::{hash_file, local_inputs};
use crate::workflow::{self, Workflow};

/// Where a stored version's file came from: relative inputs resolve
/// against `base_dir`.
#[derive(Serialize, Deserialize)]
struct Source {
    source: PathBuf,
    base_dir: PathBuf,
}

/// Reads every stored edited version of the workflow, for replay.
pub(crate) async fn load_versions(store: &JobStore) -> anyhow::Result<HashMap<u32, StoredVersion>> {
    let mut numbers: Vec<u32> = store
        .list(layout::VERSIONS_PREFIX)
        .await?
        .iter()
        .filter_map(|k| layout::version_of_key(k))
        .collect();
    numbers.sort_unstable();
    numbers.dedup();
    let mut out = HashMap::new();
    for v in numbers {
        // A version is written spec, imports, source; without its source
        // record it was never completed (nor journaled): skip it.
        let Some(src) = store.get_bytes(&layout::version_source_key(v)).await? else {
            continue;
        };
        // Only versions the journal names are used, and replay checks each
        // against its entry; one that cannot be read is left out here, so a
        // stray file under the prefix cannot stop a restart.
        match read_version(store, v, &src.data).await {
            Ok(stored) => {
                out.insert(v, stored);
            }
            Err(e) => tracing::warn!("ignoring workflow version {v} in the job store: {e:#}"),
        }
    }
    Ok(out)
}

/// Reads and parses stored version `v`, whose source record is `src`.
async fn read_version(store: &JobStore, v: u32, src: &[u8]) -> anyhow::Result<StoredVersion> {
    let src: Source = serde_json::from_slice(src)
        .with_context(|| format!("reading {}", layout::version_source_key(v)))?;
    let text = store
        .get_bytes(&layout::version_spec_key(v))
        .await?
        .with_context(|| format!("{} is missing", layout::version_spec_key(v)))?;
    let spec_sha256 = hex::encode(sha2::Sha256::digest(&text.data));
    let text = String::from_utf8_lossy(&text.data).into_owned();
    let wf = workflow::parse_stored(&text, &src.source, &src.base_dir)
        .map_err(|d| anyhow::anyhow!("the stored file no longer parses:\n{d}"))?;
    let imports = match store.get_bytes(&layout::version_imports_key(v)).await? {
        Some(o) => decode_imports(o.data)?,
        None => HashMap::new(),
    };
    Ok(StoredVersion {
        workflow: wf.into(),
        imports,
        spec_sha256,
    })
}

/// Decodes a stored `ImportedInputs` record into a path -> file map.
pub(crate) fn decode_imports(data: Bytes) -> anyhow::Result<HashMap<PathBuf, FileRef>> {
    let rec = ImportedInputs::decode(data).context("reading the imported inputs record")?;
    Ok(rec
        .inputs
        .into_iter()
        .filter_map(|i| Some((PathBuf::from(i.local_path), i.file?)))
        .collect())
}

/// The text of the version the core runs now.
async fn current_text(store: &JobStore, core: &Core) -> anyhow::Result<String> {
    let key = match core.version() {
        0 => layout::SPEC_KEY.to_string(),
        v => layout::version_spec_key(v),
    };
    let obj = store
        .get_bytes(&key)
        .await?
        .with_context(|| format!("the stored workflow file {key} is missing"))?;
    Ok(String::from_utf8_lossy(&obj.data).into_owned())
}

/// What a resume against the file on disk did.
pub(crate) struct Resumed {
    /// The new version number.
    pub version: u32,
    /// What it keeps and reruns.
    pub plan: ResumePlan,
}

/// Compares `disk` (parsed from the file as it is now) with the version the
/// core runs. When the file or one of its input files differs, stores the
/// new version, imports its changed inputs and moves the core to it
/// (journaling the move; the caller makes it durable before launching
/// anything). Returns `None` when nothing changed.
pub(crate) async fn resume_against(
    store: &JobStore,
    core: &mut Core,
    disk: &Workflow,
) -> anyhow::Result<Option<Resumed>> {
    let text = std::fs::read_to_string(&disk.source)
        .with_context(|| format!("reading {}", disk.source.display()))?;
    let mut imports = HashMap::new();
    let mut changed_inputs = false;
    let mut to_import = Vec::new();
    for p in local_inputs(disk) {
        let (sha, size) = hash_file(&p).await?;
        let known = core.imported(&p).is_some_and(|f| f.sha256 == sha);
        changed_inputs |= !known;
        if !known {
            to_import.push((p.clone(), sha.clone()));
        }
        let file = FileRef {
            file_id: layout::input_key(&sha),
            path: p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            size_bytes: size,
            sha256: sha,
        };
        imports.insert(p, file);
    }
    if !changed_inputs && text == current_text(store, core).await? {
        return Ok(None);
    }
    let next = core.successor(disk, imports.clone());
    let plan = core.plan_resume(&next);
    let version = core.version() + 1;

    // Inputs first, then the version's files, the source record last: a
    // version without its source record is ignored on load, and none of it
    // matters until the journal entry below is durable.
    for (p, sha) in to_import {
        let t = store
            .put_file(&layout::input_key(&sha), &p)
            .await
            .with_context(|| format!("importing {}", p.display()))?;
        if t.sha256 != sha {
            anyhow::bail!(
                "{} changed while it was being imported; try again",
                p.display()
            );
        }
    }
    let mut record = ImportedInputs::default();
    let mut sorted: Vec<_> = imports.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    for (p, f) in sorted {
        record.inputs.push(ImportedInput {
            local_path: p.to_string_lossy().into_owned(),
            file: Some(f.clone()),
        });
    }
    store
        .put_bytes(
            &layout::version_spec_key(version),
            Bytes::from(text.clone()),
            Condition::Always,
        )
        .await?;
    store
        .put_bytes(
            &layout::version_imports_key(version),
            Bytes::from(record.encode_to_vec()),
            Condition::Always,
        )
        .await?;
    let src = Source {
        source: std::path::absolute(&disk.source).unwrap_or_else(|_| disk.source.clone()),
        base_dir: disk.base_dir.clone(),
    };
    store
        .put_bytes(
            &layout::version_source_key(version),
            Bytes::from(serde_json::to_vec_pretty(&src)?),
            Condition::Always,
        )
        .await?;
    let sha = hex::encode(sha2::Sha256::digest(text.as_bytes()));
    let stored = StoredVersion {
        workflow: std::sync::Arc::new(disk.clone()),
        imports,
        spec_sha256: sha,
    };
    core.apply_version(version, stored, plan.kept.clone())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Some(Resumed { version, plan }))
}
