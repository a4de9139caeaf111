//! Images with contents: an image configured with a runtime bundle
//! (`umoci unpack`'s `config.json` and `rootfs/`, as
//! scripts/build-appliance-rootfs.sh makes for the appliance image) runs its
//! containers inside that root filesystem, like a container runtime:
//!
//! - a copy-on-write view of the image (overlayfs, the image below, a
//!   per-container directory above), so containers never change the image;
//! - `/proc`, a minimal `/dev` (a tmpfs with the host's null, zero, full,
//!   random, urandom and tty bound in, and `/dev/shm`), a tmpfs `/tmp`;
//! - the pod's volumes at their mountPaths inside it (symlinks resolved as
//!   the image has them, never on the host);
//! - `pivot_root` into it, so nothing of the host's files stays visible and
//!   the command, its libraries and CA certificates resolve in the image;
//! - the user of the image's `config.json` (Dockerfile `USER`), or the
//!   pod's `runAsUser`/`runAsGroup`, with `fsGroup` and
//!   `supplementalGroups` as supplementary groups; `fsGroup` also owns the
//!   pod's emptyDir volumes and provisioned claims (not NFS or hostPath),
//!   as the kubelet does;
//! - the image's environment (`ENV`) and working directory (`WORKDIR`).
//!
//! Images without a bundle keep running host programs (a directory put on
//! `PATH`), with none of the above.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::Value;

/// Who a container process runs as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunAs {
    /// User.
    pub uid: u32,
    /// Primary group.
    pub gid: u32,
    /// Supplementary groups (the primary one included).
    pub groups: Vec<u32>,
}

/// An image's runtime bundle: where its root filesystem is and what its
/// config says a process runs as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bundle {
    /// The image's root filesystem (read-only to containers).
    pub rootfs: PathBuf,
    /// The image's user (`USER`).
    pub uid: u32,
    /// The image's group.
    pub gid: u32,
    /// Its supplementary groups.
    pub additional_gids: Vec<u32>,
    /// The image's environment (`ENV`), `TERM` left out.
    pub env: Vec<(String, String)>,
    /// The image's working directory (`WORKDIR`).
    pub cwd: PathBuf,
}

fn u32_at(v: &Value, p: &str) -> Option<u32> {
    v.pointer(p)
        .and_then(Value::as_u64)
        .and_then(|n| u32::try_from(n).ok())
}

impl Bundle {
    /// Reads `DIR/config.json` (an OCI runtime configuration).
    pub fn load(dir: &Path) -> Result<Bundle, String> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| {
            format!(
                "cannot read the image bundle's {}: {e} (a bundle is what `umoci unpack` makes; scripts/build-appliance-rootfs.sh builds the appliance's)",
                path.display()
            )
        })?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| format!("{} is not JSON: {e}", path.display()))?;
        let root = v
            .pointer("/root/path")
            .and_then(Value::as_str)
            .unwrap_or("rootfs");
        let rootfs = dir.join(root);
        if !rootfs.join("bin").exists() && !rootfs.join("usr").is_dir() {
            return Err(format!(
                "the image bundle's root filesystem {} is missing or empty",
                rootfs.display()
            ));
        }
        let env = v
            .pointer("/process/env")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter_map(|kv| kv.split_once('='))
            .filter(|(k, _)| *k != "TERM")
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Ok(Bundle {
            rootfs,
            uid: u32_at(&v, "/process/user/uid").unwrap_or(0),
            gid: u32_at(&v, "/process/user/gid").unwrap_or(0),
            additional_gids: v
                .pointer("/process/user/additionalGids")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_u64)
                .filter_map(|n| u32::try_from(n).ok())
                .collect(),
            env,
            cwd: PathBuf::from(
                v.pointer("/process/cwd")
                    .and_then(Value::as_str)
                    .unwrap_or("/"),
            ),
        })
    }

    /// The image's `/etc/passwd` entry of `uid`: (primary gid, home).
    pub fn passwd(&self, uid: u32) -> Option<(u32, String)> {
        let text = std::fs::read_to_string(self.rootfs.join("etc/passwd")).ok()?;
        text.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 6 && f[2].parse::<u32>().ok() == Some(uid))
                .then(|| (f[3].parse().unwrap_or(0), f[5].to_string()))
        })
    }

    /// What a container of `pod` runs as.
    pub fn run_as(&self, pod: &Pod, c: &Container) -> RunAs {
        let psc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
        let csc = c.security_context.as_ref();
        let id = |v: Option<i64>| v.and_then(|n| u32::try_from(n).ok());
        let run_as_user =
            id(csc.and_then(|s| s.run_as_user)).or(id(psc.and_then(|s| s.run_as_user)));
        let run_as_group =
            id(csc.and_then(|s| s.run_as_group)).or(id(psc.and_then(|s| s.run_as_group)));
        let uid = run_as_user.unwrap_or(self.uid);
        // A user given without a group gets its primary group from the
        // image, like the runtimes do.
        let gid = run_as_group.unwrap_or_else(|| match run_as_user {
            Some(u) => self.passwd(u).map(|(g, _)| g).unwrap_or(0),
            None => self.gid,
        });
        let mut groups = self.additional_gids.clone();
        groups.extend(id(psc.and_then(|s| s.fs_group)));
        groups.extend(
            psc.and_then(|s| s.supplemental_groups.as_ref())
                .into_iter()
                .flatten()
                .filter_map(|g| u32::try_from(*g).ok()),
        );
        groups.push(gid);
        groups.sort_unstable();
        groups.dedup();
        RunAs { uid, gid, groups }
    }
}

/// The kubelet's `runAsNonRoot` check, which only an image with contents
/// allows (its user is known): a container that would run as uid 0 is
/// refused with the kubelet's message. `who` is `pod: "NAME_NS(UID)",
/// container: NAME`.
pub fn check_non_root(pod: &Pod, c: &Container, run_as: &RunAs, who: &str) -> Result<(), String> {
    let psc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let csc = c.security_context.as_ref();
    let non_root = csc
        .and_then(|s| s.run_as_non_root)
        .or(psc.and_then(|s| s.run_as_non_root))
        == Some(true);
    if !non_root || run_as.uid != 0 {
        return Ok(());
    }
    let explicit = csc
        .and_then(|s| s.run_as_user)
        .or(psc.and_then(|s| s.run_as_user))
        .is_some();
    Err(if explicit {
        format!("container's runAsUser breaks non-root policy ({who})")
    } else {
        format!("container has runAsNonRoot and image will run as root ({who})")
    })
}

/// The host path of `path` inside `root`, following the symlinks of the
/// image as the container would (an absolute link points into the image,
/// not at the host). Missing components are taken as they are.
pub fn resolve_in(root: &Path, path: &Path) -> PathBuf {
    let mut rest: Vec<PathBuf> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(PathBuf::from(n)),
            Component::ParentDir => Some(PathBuf::from("..")),
            _ => None,
        })
        .rev()
        .collect();
    let mut cur = PathBuf::new();
    let mut links = 0;
    while let Some(next) = rest.pop() {
        if next.as_os_str() == ".." {
            cur.pop();
            continue;
        }
        let candidate = cur.join(&next);
        match std::fs::read_link(root.join(&candidate)) {
            Ok(target) if links < 40 => {
                links += 1;
                if target.is_absolute() {
                    cur = PathBuf::new();
                }
                for c in target.components().rev() {
                    match c {
                        Component::Normal(n) => rest.push(PathBuf::from(n)),
                        Component::ParentDir => rest.push(PathBuf::from("..")),
                        _ => {}
                    }
                }
            }
            _ => cur = candidate,
        }
    }
    root.join(cur)
}

/// A container's view of an image, as the kubelet prepares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootfsSpec {
    /// The image's root filesystem.
    pub lower: PathBuf,
    /// This container's own directory (the overlay's upper layer).
    pub scratch: PathBuf,
    /// Who the container runs as.
    pub run_as: RunAs,
}

fn cstr(p: &Path) -> std::io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
}

fn cstring(s: &str) -> std::io::Result<CString> {
    CString::new(s).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
}

/// Host devices bound into the container's `/dev`.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// The steps of entering an image between fork and exec, as C strings.
pub struct Enter {
    lower: PathBuf,
    merged: PathBuf,
    overlay_opts: CString,
    merged_c: CString,
    dirs: Vec<CString>,
    proc_dir: CString,
    dev_dir: CString,
    shm_dir: CString,
    tmp_dir: CString,
    devices: Vec<(CString, CString)>,
    links: Vec<(CString, CString)>,
    uid: libc::uid_t,
    gid: libc::gid_t,
    groups: Vec<libc::gid_t>,
}

/// Checks once per process, with a real mount in a throw-away mount
/// namespace next to `scratch`, that overlayfs works there (it does not on
/// top of another overlayfs, e.g. inside some containers), so that a pod
/// fails with this message rather than with a bare errno from the child.
fn check_overlay(lower: &Path, scratch: &Path) -> std::io::Result<()> {
    static CHECKED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let result = CHECKED.get_or_init(|| {
        let probe = scratch.with_extension("overlay-probe");
        let dirs = ["upper", "work", "merged"].map(|d| probe.join(d));
        for d in &dirs {
            std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        let out = std::process::Command::new("unshare")
            .arg("-m")
            .args(["mount", "-t", "overlay", "overlay", "-o"])
            .arg(format!(
                "lowerdir={},upperdir={},workdir={}",
                lower.display(),
                dirs[0].display(),
                dirs[1].display()
            ))
            .arg(&dirs[2])
            .output();
        let _ = std::fs::remove_dir_all(&probe);
        match out {
            Ok(o) if o.status.success() => Ok(()),
            Ok(o) => Err(format!(
                "cannot mount an overlayfs over the image's root filesystem ({}) with its upper layer in {}: {}; put the emulator's state directory (--state-dir) on a filesystem that can hold an overlay's upper layer (ext4, xfs, tmpfs)",
                lower.display(),
                scratch.display(),
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => Err(format!("cannot run `unshare -m mount -t overlay`: {e}")),
        }
    });
    result
        .clone()
        .map_err(|m| std::io::Error::new(std::io::ErrorKind::Unsupported, m))
}

impl Enter {
    /// Makes the container's overlay directories and prepares the steps.
    pub fn prepare(spec: &RootfsSpec) -> std::io::Result<Enter> {
        check_overlay(&spec.lower, &spec.scratch)?;
        let upper = spec.scratch.join("upper");
        let work = spec.scratch.join("work");
        let merged = spec.scratch.join("merged");
        for d in [&upper, &work, &merged] {
            std::fs::create_dir_all(d)?;
        }
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            spec.lower.display(),
            upper.display(),
            work.display()
        );
        if [&spec.lower, &spec.scratch]
            .iter()
            .any(|p| p.to_string_lossy().contains([',', ':']))
        {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("overlay paths must not contain ',' or ':': {opts}"),
            ));
        }
        let at = |p: &str| cstr(&merged.join(p));
        let mut devices = Vec::new();
        for d in DEVICES {
            let host = Path::new("/dev").join(d);
            if host.exists() {
                devices.push((cstr(&host)?, at(&format!("dev/{d}"))?));
            }
        }
        let mut links = Vec::new();
        for (name, to) in [
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
        ] {
            links.push((cstring(to)?, at(&format!("dev/{name}"))?));
        }
        Ok(Enter {
            lower: spec.lower.clone(),
            merged: merged.clone(),
            overlay_opts: cstring(&opts)?,
            merged_c: cstr(&merged)?,
            dirs: vec![at("proc")?, at("dev")?, at("tmp")?],
            proc_dir: at("proc")?,
            dev_dir: at("dev")?,
            shm_dir: at("dev/shm")?,
            tmp_dir: at("tmp")?,
            devices,
            links,
            uid: spec.run_as.uid,
            gid: spec.run_as.gid,
            groups: spec.run_as.groups.clone(),
        })
    }

    /// Where a container path is mounted from the host's side, before the
    /// container enters the image.
    pub fn target(&self, container_path: &Path) -> PathBuf {
        let in_image = resolve_in(&self.lower, container_path);
        let rel = in_image.strip_prefix(&self.lower).unwrap_or(&in_image);
        self.merged.join(rel)
    }

    /// Mounts the image, `/proc`, `/dev` and `/tmp` (in the child, in its
    /// own private mount namespace, before the volumes).
    ///
    /// # Safety
    /// Only async-signal-safe libc calls; no allocation.
    pub unsafe fn mount_root(&self) -> std::io::Result<()> {
        let err = std::io::Error::last_os_error;
        let null = std::ptr::null::<libc::c_char>();
        // SAFETY: C strings prepared before fork, alive for the calls.
        unsafe {
            if libc::mount(
                c"overlay".as_ptr(),
                self.merged_c.as_ptr(),
                c"overlay".as_ptr(),
                0,
                self.overlay_opts.as_ptr().cast(),
            ) != 0
            {
                return Err(err());
            }
            for d in &self.dirs {
                libc::mkdir(d.as_ptr(), 0o755);
            }
            let nosuid = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
            if libc::mount(
                c"proc".as_ptr(),
                self.proc_dir.as_ptr(),
                c"proc".as_ptr(),
                nosuid,
                null.cast(),
            ) != 0
            {
                return Err(err());
            }
            if libc::mount(
                c"tmpfs".as_ptr(),
                self.dev_dir.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NOEXEC,
                c"mode=755".as_ptr().cast(),
            ) != 0
            {
                return Err(err());
            }
            for (host, target) in &self.devices {
                let fd = libc::open(target.as_ptr(), libc::O_WRONLY | libc::O_CREAT, 0o666);
                if fd >= 0 {
                    libc::close(fd);
                }
                if libc::mount(
                    host.as_ptr(),
                    target.as_ptr(),
                    null,
                    libc::MS_BIND,
                    null.cast(),
                ) != 0
                {
                    return Err(err());
                }
            }
            for (to, link) in &self.links {
                libc::symlink(to.as_ptr(), link.as_ptr());
            }
            libc::mkdir(self.shm_dir.as_ptr(), 0o1777);
            for dir in [&self.shm_dir, &self.tmp_dir] {
                if libc::mount(
                    c"tmpfs".as_ptr(),
                    dir.as_ptr(),
                    c"tmpfs".as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV,
                    c"mode=1777".as_ptr().cast(),
                ) != 0
                {
                    return Err(err());
                }
            }
        }
        Ok(())
    }

    /// Makes the image the root (after the volumes are mounted in it) and
    /// detaches the host's.
    ///
    /// # Safety
    /// Only async-signal-safe libc calls; no allocation.
    pub unsafe fn pivot(&self) -> std::io::Result<()> {
        let err = std::io::Error::last_os_error;
        // SAFETY: C strings prepared before fork; `pivot_root(".", ".")`
        // stacks the old root on the new one, which `umount2` detaches.
        unsafe {
            if libc::chdir(self.merged_c.as_ptr()) != 0 {
                return Err(err());
            }
            let dot = c".";
            if libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) != 0 {
                return Err(err());
            }
            if libc::umount2(dot.as_ptr(), libc::MNT_DETACH) != 0 {
                return Err(err());
            }
            if libc::chdir(c"/".as_ptr()) != 0 {
                return Err(err());
            }
        }
        Ok(())
    }

    /// Becomes the container's user (drops root's capabilities unless it
    /// stays uid 0).
    ///
    /// # Safety
    /// Only async-signal-safe libc calls; no allocation.
    pub unsafe fn switch_user(&self) -> std::io::Result<()> {
        let err = std::io::Error::last_os_error;
        // SAFETY: plain syscalls on values prepared before the child was
        // started. Raw syscalls, not glibc's wrappers: those would also
        // change the credentials of every thread of a process this child
        // shares its memory with (see `super::spawn`).
        unsafe {
            if libc::syscall(libc::SYS_setgroups, self.groups.len(), self.groups.as_ptr()) != 0
                || libc::syscall(libc::SYS_setgid, self.gid) != 0
                || libc::syscall(libc::SYS_setuid, self.uid) != 0
            {
                return Err(err());
            }
        }
        Ok(())
    }
}

/// Makes the pod's volumes what a non-root container user finds on a
/// cluster: emptyDirs world-writable (mode 0777, as the kubelet makes
/// them), and with `fsGroup` its emptyDirs and provisioned claims
/// group-owned, group-writable and setgid, as the kubelet does for volumes
/// that support ownership (NFS, hostPath and the read-only kinds are left
/// alone). `vols` are the volumes' host directories by name.
pub fn prepare_volumes(
    pod: &Pod,
    vols: &std::collections::BTreeMap<String, PathBuf>,
    state_dir: &Path,
) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(());
    };
    for v in spec.volumes.iter().flatten() {
        if let (Some(_), Some(dir)) = (&v.empty_dir, vols.get(&v.name)) {
            let mode = std::fs::metadata(dir)?.permissions().mode() & 0o7777;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o777))?;
        }
    }
    let Some(gid) = spec
        .security_context
        .as_ref()
        .and_then(|s| s.fs_group)
        .and_then(|g| u32::try_from(g).ok())
    else {
        return Ok(());
    };
    let provisioned = state_dir.join("pvcs");
    for v in spec.volumes.iter().flatten() {
        let Some(dir) = vols.get(&v.name) else {
            continue;
        };
        let owned = v.empty_dir.is_some()
            || (v.persistent_volume_claim.is_some() && dir.starts_with(&provisioned));
        if owned {
            chown_group(dir, gid)?;
        }
    }
    Ok(())
}

fn chown_group(path: &Path, gid: u32) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::symlink_metadata(path)?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    if meta.gid() != gid {
        std::os::unix::fs::lchown(path, None, Some(gid))?;
    }
    let mode = meta.permissions().mode() & 0o7777;
    let want = if meta.is_dir() {
        mode | 0o2070
    } else {
        mode | 0o060
    };
    if want != mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(want))?;
    }
    if meta.is_dir() {
        for e in std::fs::read_dir(path)? {
            chown_group(&e?.path(), gid)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_resolve_inside_the_image() {
        let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let r = root.path();
        std::fs::create_dir_all(r.join("run")).unwrap_or_else(|e| panic!("{e}"));
        std::fs::create_dir_all(r.join("var")).unwrap_or_else(|e| panic!("{e}"));
        std::os::unix::fs::symlink("/run", r.join("var/run")).unwrap_or_else(|e| panic!("{e}"));
        std::os::unix::fs::symlink("../run", r.join("var/rel")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            resolve_in(r, Path::new("/var/run/secrets/x")),
            r.join("run/secrets/x")
        );
        assert_eq!(resolve_in(r, Path::new("/var/rel/a")), r.join("run/a"));
        assert_eq!(resolve_in(r, Path::new("/../../etc")), r.join("etc"));
        assert_eq!(resolve_in(r, Path::new("/jobstore")), r.join("jobstore"));
    }
}
