//! Volume set-up: each pod volume becomes a host directory (or file) that
//! the sandbox bind-mounts.
//!
//! - hostPath: `STATE/nodes/<node>/host/<path>`, shared by the pods of one
//!   emulated node and by no other node;
//! - emptyDir: a per-pod directory;
//! - secret, configMap, downwardAPI, projected (service-account token,
//!   `ca.crt`, `namespace`): per-pod directories of files;
//! - persistentVolumeClaim: `STATE/pvcs/<ns>/<claim>` shared by every node
//!   (ReadWriteMany), or the `nfs.path` of a bound PersistentVolume.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{KeyToPath, Pod, Volume};
use serde_json::Value;

use crate::emulator::cluster::Cluster;
use crate::emulator::config::Identity;
use crate::emulator::resources;

/// A volume that cannot be set up (reported as FailedMount).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountError {
    /// Volume name.
    pub volume: String,
    /// The kubelet's message after `MountVolume.SetUp failed for volume "x" : `.
    pub message: String,
}

fn write_files(
    dir: &Path,
    files: &BTreeMap<String, Vec<u8>>,
    mode: Option<i32>,
) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    for (rel, content) in files {
        let p = dir.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&p, content)?;
        let m = mode.unwrap_or(0o644) as u32;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(m))?;
    }
    Ok(())
}

fn select_items(
    data: BTreeMap<String, Vec<u8>>,
    items: &Option<Vec<KeyToPath>>,
    kind: &str,
    name: &str,
) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let Some(items) = items else { return Ok(data) };
    let mut out = BTreeMap::new();
    for it in items {
        let v = data
            .get(&it.key)
            .ok_or_else(|| format!("configmap references non-existent config key: {}", it.key))
            .map_err(|e| {
                if kind == "secret" {
                    format!("references non-existent secret key: {}", it.key)
                } else {
                    e
                }
            })?;
        out.insert(it.path.clone(), v.clone());
    }
    let _ = name;
    Ok(out)
}

fn configmap_data(cluster: &Cluster, ns: &str, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
    let cm = cluster.get(resources::core("configmaps"), ns, name)?;
    let mut out = BTreeMap::new();
    for (k, v) in cm
        .get("data")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        out.insert(
            k.clone(),
            v.as_str().unwrap_or_default().as_bytes().to_vec(),
        );
    }
    Some(out)
}

fn downward(pod: &Pod, path: &str) -> String {
    match path {
        "metadata.namespace" => pod.metadata.namespace.clone().unwrap_or_default(),
        "metadata.name" => pod.metadata.name.clone().unwrap_or_default(),
        "metadata.uid" => pod.metadata.uid.clone().unwrap_or_default(),
        "metadata.labels" | "metadata.annotations" => {
            let m = if path == "metadata.labels" {
                &pod.metadata.labels
            } else {
                &pod.metadata.annotations
            };
            m.iter()
                .flatten()
                .map(|(k, v)| format!("{k}=\"{v}\"\n"))
                .collect()
        }
        _ => String::new(),
    }
}

/// Host directory of a hostPath on an emulated node.
pub fn host_path_dir(state: &Path, node: &str, host_path: &str) -> PathBuf {
    state
        .join("nodes")
        .join(node)
        .join("host")
        .join(host_path.trim_start_matches('/'))
}

fn setup_one(
    cluster: &Cluster,
    pod: &Pod,
    pod_dir: &Path,
    node: &str,
    v: &Volume,
) -> Result<PathBuf, String> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let dir = pod_dir.join("volumes").join(&v.name);
    let io = |e: std::io::Error| e.to_string();
    if let Some(hp) = &v.host_path {
        let p = host_path_dir(&cluster.state_dir, node, &hp.path);
        match hp.type_.as_deref().unwrap_or("") {
            "Directory" if !p.is_dir() => {
                return Err(format!(
                    "hostPath type check failed: {} is not a directory",
                    hp.path
                ));
            }
            "File" if !p.is_file() => {
                return Err(format!(
                    "hostPath type check failed: {} is not a file",
                    hp.path
                ));
            }
            "FileOrCreate" => {
                if let Some(parent) = p.parent() {
                    std::fs::create_dir_all(parent).map_err(io)?;
                }
                if !p.exists() {
                    std::fs::write(&p, b"").map_err(io)?;
                }
            }
            "" | "DirectoryOrCreate" => std::fs::create_dir_all(&p).map_err(io)?,
            _ => {}
        }
        return Ok(p);
    }
    if let Some(pvc) = &v.persistent_volume_claim {
        let claim = cluster
            .get(
                resources::core("persistentvolumeclaims"),
                &ns,
                &pvc.claim_name,
            )
            .ok_or_else(|| format!("persistentvolumeclaim \"{}\" not found", pvc.claim_name))?;
        let pv_name = claim
            .pointer("/spec/volumeName")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let nfs = cluster
            .get(resources::core("persistentvolumes"), "", pv_name)
            .and_then(|pv| {
                pv.pointer("/spec/nfs/path")
                    .and_then(Value::as_str)
                    .map(PathBuf::from)
            });
        let p = nfs.unwrap_or_else(|| {
            cluster
                .state_dir
                .join("pvcs")
                .join(&ns)
                .join(&pvc.claim_name)
        });
        std::fs::create_dir_all(&p).map_err(io)?;
        return Ok(p);
    }
    if let Some(s) = &v.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        let data = match cluster.secret_data(&ns, &name) {
            Some(d) => select_items(d, &s.items, "secret", &name)?,
            None if s.optional == Some(true) => BTreeMap::new(),
            None => return Err(format!("secret \"{name}\" not found")),
        };
        write_files(&dir, &data, s.default_mode).map_err(io)?;
        return Ok(dir);
    }
    if let Some(c) = &v.config_map {
        let data = match configmap_data(cluster, &ns, &c.name) {
            Some(d) => select_items(d, &c.items, "configmap", &c.name)?,
            None if c.optional == Some(true) => BTreeMap::new(),
            None => return Err(format!("configmap \"{}\" not found", c.name)),
        };
        write_files(&dir, &data, c.default_mode).map_err(io)?;
        return Ok(dir);
    }
    if let Some(d) = &v.downward_api {
        let mut files = BTreeMap::new();
        for it in d.items.iter().flatten() {
            let val = it
                .field_ref
                .as_ref()
                .map(|f| downward(pod, &f.field_path))
                .unwrap_or_default();
            files.insert(it.path.clone(), val.into_bytes());
        }
        write_files(&dir, &files, d.default_mode).map_err(io)?;
        return Ok(dir);
    }
    if let Some(p) = &v.projected {
        let mut files = BTreeMap::new();
        let sa = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into());
        for src in p.sources.iter().flatten() {
            if let Some(t) = &src.service_account_token {
                let token = cluster.token_for(&Identity::service_account(&ns, &sa));
                files.insert(t.path.clone(), token.into_bytes());
            }
            if let Some(c) = &src.config_map {
                match configmap_data(cluster, &ns, &c.name) {
                    Some(d) => files.extend(select_items(d, &c.items, "configmap", &c.name)?),
                    None if c.optional == Some(true) => {}
                    None => return Err(format!("configmap \"{}\" not found", c.name)),
                }
            }
            if let Some(s) = &src.secret {
                match cluster.secret_data(&ns, &s.name) {
                    Some(d) => files.extend(select_items(d, &s.items, "secret", &s.name)?),
                    None if s.optional == Some(true) => {}
                    None => return Err(format!("secret \"{}\" not found", s.name)),
                }
            }
            if let Some(d) = &src.downward_api {
                for it in d.items.iter().flatten() {
                    let val = it
                        .field_ref
                        .as_ref()
                        .map(|f| downward(pod, &f.field_path))
                        .unwrap_or_default();
                    files.insert(it.path.clone(), val.into_bytes());
                }
            }
        }
        write_files(&dir, &files, p.default_mode).map_err(io)?;
        return Ok(dir);
    }
    // emptyDir and any other type: a private directory.
    std::fs::create_dir_all(&dir).map_err(io)?;
    Ok(dir)
}

/// Sets up every volume of a pod; the first failure is returned.
pub fn setup(
    cluster: &Cluster,
    pod: &Pod,
    pod_dir: &Path,
    node: &str,
) -> Result<BTreeMap<String, PathBuf>, MountError> {
    let mut out = BTreeMap::new();
    for v in pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
    {
        let p = setup_one(cluster, pod, pod_dir, node, v).map_err(|message| MountError {
            volume: v.name.clone(),
            message,
        })?;
        out.insert(v.name.clone(), p);
    }
    Ok(out)
}
