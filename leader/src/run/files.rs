//! Files between the user's machine and the job store: the workflow's
//! local inputs imported at the first run, its outputs exported at the end.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use bytes::Bytes;
use prost::Message;
use toil_jobstore::{Condition, JobStore, layout};
use toil_proto::v1::{FileRef, ImportedInput, ImportedInputs};

use crate::core::{Core, JobIdx};
use crate::workflow::{InputSource, Workflow};

/// Imports every local input file of the workflow into the job store.
pub(super) async fn import_inputs(
    store: &JobStore,
    wf: &Workflow,
) -> anyhow::Result<HashMap<PathBuf, FileRef>> {
    let paths = local_inputs(wf);
    let mut map = HashMap::new();
    let mut record = ImportedInputs::default();
    if !paths.is_empty() {
        crate::say!("importing {} input file(s) into the job store", paths.len());
    }
    for p in &paths {
        let p = p.as_path();
        // Hash first so the stored key is the content's: the same file used
        // twice, or by two workflows, is stored once.
        let (sha, _) = hash_file(p).await?;
        let key = layout::input_key(&sha);
        let t = store
            .put_file(&key, p)
            .await
            .with_context(|| format!("importing {}", p.display()))?;
        if t.sha256 != sha {
            bail!(
                "{} changed while it was being imported; try again",
                p.display()
            );
        }
        let file = FileRef {
            file_id: key,
            path: p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            size_bytes: t.size,
            sha256: t.sha256,
        };
        record.inputs.push(ImportedInput {
            local_path: p.to_string_lossy().into_owned(),
            file: Some(file.clone()),
        });
        map.insert(p.to_path_buf(), file);
    }
    store
        .put_bytes(
            layout::IMPORTS_KEY,
            Bytes::from(record.encode_to_vec()),
            Condition::Always,
        )
        .await?;
    Ok(map)
}

/// The local input files a workflow names, each once, in path order.
pub(crate) fn local_inputs(wf: &Workflow) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = wf
        .jobs
        .iter()
        .flat_map(|j| j.inputs.iter())
        .filter_map(|i| match &i.source {
            InputSource::Local(p) => Some(p.clone()),
            InputSource::JobOutput { .. } => None,
        })
        .collect();
    paths.sort();
    paths.dedup();
    paths
}

/// SHA-256 (hex) and size of a file, read off the async threads.
pub(crate) async fn hash_file(p: &Path) -> anyhow::Result<(String, u64)> {
    let p = p.to_path_buf();
    tokio::task::spawn_blocking(move || -> anyhow::Result<(String, u64)> {
        use sha2::Digest;
        use std::io::Read;
        let mut f =
            std::fs::File::open(&p).with_context(|| format!("opening input {}", p.display()))?;
        let mut h = sha2::Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut size = 0u64;
        loop {
            let n = f
                .read(&mut buf)
                .with_context(|| format!("reading input {}", p.display()))?;
            if n == 0 {
                break;
            }
            size += n as u64;
            h.update(&buf[..n]);
        }
        Ok((hex::encode(h.finalize()), size))
    })
    .await?
}

/// The imported inputs recorded by the first run, by local path.
pub(crate) async fn load_imports(store: &JobStore) -> anyhow::Result<HashMap<PathBuf, FileRef>> {
    let Some(obj) = store.get_bytes(layout::IMPORTS_KEY).await? else {
        return Ok(HashMap::new());
    };
    crate::versions::decode_imports(obj.data)
}

/// Copies one stored file to `dir/name/PATH`. Every directory beneath
/// `dir` is made and entered without following a symbolic link (a job, or
/// anyone who can write in the output directory, may have left one to send
/// the file elsewhere); the file is downloaded under a temporary name in
/// the directory so reached, checked, and renamed over whatever has its
/// name (a link there is replaced, never written through).
async fn export_one(store: &JobStore, dir: &Path, name: &str, f: &FileRef) -> anyhow::Result<()> {
    use toil_jobstore::beneath;
    let rel = Path::new(name).join(&f.path);
    let (Some(parent), Some(file_name)) = (rel.parent(), rel.file_name()) else {
        anyhow::bail!("output path {:?} has no file name; not exported", f.path);
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dest_dir = beneath::make_dir(dir, parent)
        .with_context(|| format!("exporting {}: making its directory", rel.display()))?;
    let tmp_name = format!(".toil-export-{}", uuid::Uuid::new_v4().simple());
    let tmp = beneath::fd_path(&dest_dir).join(&tmp_name);
    let placed = match store.get_file_verified(&f.file_id, &tmp, &f.sha256).await {
        Ok(_) => nix::fcntl::renameat(&dest_dir, tmp_name.as_str(), &dest_dir, file_name)
            .map_err(|e| anyhow::anyhow!("exporting {}: {}", dir.join(&rel).display(), e.desc())),
        Err(e) => Err(anyhow::Error::new(e).context(format!("exporting {}", rel.display()))),
    };
    if placed.is_err() {
        // No partial download left behind under the temporary name.
        let _ = nix::unistd::unlinkat(
            &dest_dir,
            tmp_name.as_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        );
    }
    placed
}

/// Copies the workflow's outputs to `dir/NAME/PATH`, verifying checksums.
pub(super) async fn export_outputs(
    store: &JobStore,
    core: &Core,
    wf: &Workflow,
    dir: &Path,
) -> anyhow::Result<usize> {
    let mut n = 0;
    for out in &wf.outputs {
        let producers: Vec<JobIdx> = (0..core.job_count() as JobIdx)
            .filter(|&j| {
                let id = core.job_id(j);
                id == out.job || id.starts_with(&format!("{}[", out.job))
            })
            .collect();
        for p in producers {
            for files in core.outputs(p).iter().filter(|o| o.name == out.output) {
                for f in &files.files {
                    // Checked when the result arrived too; an export never
                    // leaves its directory whatever the journal holds.
                    if !crate::driver::checks::plain_relative(&f.path) {
                        anyhow::bail!(
                            "output {} of job {} names the path {:?}, which is not a plain relative path; not exported",
                            out.output,
                            core.job_id(p),
                            f.path
                        );
                    }
                    export_one(store, dir, &out.name, f).await?;
                    n += 1;
                }
            }
        }
    }
    Ok(n)
}
