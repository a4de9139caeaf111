//! The container sandbox: a private mount namespace with the pod's volumes
//! bind-mounted at their mountPaths, its own process group, a memory
//! cgroup carrying the container's limit, and the container's
//! `securityContext` as far as a process can carry it: `no_new_privs` for
//! `allowPrivilegeEscalation: false` and the capability sets for
//! `capabilities` (see [`Privileges`]).
//!
//! Everything the child runs between fork and exec is prepared up front as C
//! strings, because only async-signal-safe calls are allowed there.

use std::ffi::CString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// One bind mount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// Host path (file or directory).
    pub source: PathBuf,
    /// Path inside the container.
    pub target: PathBuf,
    /// Remount read-only.
    pub read_only: bool,
}

/// The capability and privilege settings of a container process, as the
/// container runtime applies them from its `securityContext`.
///
/// Like the real runtime, a container that drops capabilities keeps only
/// the runtime's default set minus what it drops, plus what it adds
/// (`privileged` keeps everything). A container that says nothing about
/// capabilities keeps the emulator's own (usually all of them, the
/// emulator runs as root): unlike a real runtime, which would give it the
/// default set. `runAsUser`, `runAsGroup` and seccomp are not applied: the
/// processes run as the emulator's user.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Privileges {
    /// Set `PR_SET_NO_NEW_PRIVS` (`allowPrivilegeEscalation: false`).
    pub no_new_privs: bool,
    /// Keep only these capabilities (bit N = capability N); `None` keeps
    /// the process's own.
    pub keep_caps: Option<u64>,
}

/// containerd's default capabilities, by number (linux/capability.h).
const DEFAULT_CAPS: &[(&str, u32)] = &[
    ("CHOWN", 0),
    ("DAC_OVERRIDE", 1),
    ("FOWNER", 3),
    ("FSETID", 4),
    ("KILL", 5),
    ("SETGID", 6),
    ("SETUID", 7),
    ("SETPCAP", 8),
    ("NET_BIND_SERVICE", 10),
    ("NET_RAW", 13),
    ("SYS_CHROOT", 18),
    ("MKNOD", 27),
    ("AUDIT_WRITE", 29),
    ("SETFCAP", 31),
];

/// Capability numbers by name, beyond the default set (for `add`).
const OTHER_CAPS: &[(&str, u32)] = &[
    ("DAC_READ_SEARCH", 2),
    ("LINUX_IMMUTABLE", 9),
    ("NET_BROADCAST", 11),
    ("NET_ADMIN", 12),
    ("IPC_LOCK", 14),
    ("IPC_OWNER", 15),
    ("SYS_MODULE", 16),
    ("SYS_RAWIO", 17),
    ("SYS_PTRACE", 19),
    ("SYS_PACCT", 20),
    ("SYS_ADMIN", 21),
    ("SYS_BOOT", 22),
    ("SYS_NICE", 23),
    ("SYS_RESOURCE", 24),
    ("SYS_TIME", 25),
    ("SYS_TTY_CONFIG", 26),
    ("LEASE", 28),
    ("AUDIT_CONTROL", 30),
    ("MAC_OVERRIDE", 32),
    ("MAC_ADMIN", 33),
    ("SYSLOG", 34),
    ("WAKE_ALARM", 35),
    ("BLOCK_SUSPEND", 36),
    ("AUDIT_READ", 37),
    ("PERFMON", 38),
    ("BPF", 39),
    ("CHECKPOINT_RESTORE", 40),
];

fn cap_bit(name: &str) -> Option<u64> {
    let name = name.strip_prefix("CAP_").unwrap_or(name);
    DEFAULT_CAPS
        .iter()
        .chain(OTHER_CAPS)
        .find(|(n, _)| *n == name)
        .map(|(_, b)| 1u64 << b)
}

impl Privileges {
    /// What the runtime applies for a container's security context.
    pub fn of(sc: Option<&k8s_openapi::api::core::v1::SecurityContext>) -> Privileges {
        let Some(sc) = sc else {
            return Privileges::default();
        };
        if sc.privileged == Some(true) {
            return Privileges::default();
        }
        let keep_caps = sc.capabilities.as_ref().map(|k| {
            let drop: Vec<&str> = k.drop.iter().flatten().map(String::as_str).collect();
            let mut keep: u64 = if drop.contains(&"ALL") {
                0
            } else {
                DEFAULT_CAPS.iter().fold(0, |m, (_, b)| m | (1 << b))
            };
            for d in &drop {
                if let Some(bit) = cap_bit(d) {
                    keep &= !bit;
                }
            }
            for a in k.add.iter().flatten() {
                if a == "ALL" {
                    keep = u64::MAX;
                } else if let Some(bit) = cap_bit(a) {
                    keep |= bit;
                }
            }
            keep
        });
        Privileges {
            no_new_privs: sc.allow_privilege_escalation == Some(false),
            keep_caps,
        }
    }
}

/// `struct __user_cap_header_struct`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

/// `struct __user_cap_data_struct`.
#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// `_LINUX_CAPABILITY_VERSION_3`: 64-bit sets in two words.
const CAP_VERSION_3: u32 = 0x2008_0522;

/// How memory limits are enforced on this machine, decided once at start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemoryMode {
    /// cgroup v1: per-container cgroups under this directory.
    CgroupV1(PathBuf),
    /// cgroup v2: per-container cgroups under this directory.
    CgroupV2(PathBuf),
    /// Poll RSS of the process group.
    Poll,
    /// No enforcement.
    Off,
}

fn cstr(p: &Path) -> std::io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
}

/// Finds a writable memory cgroup root for our own process, creating a
/// per-emulator parent `toil-emu-<pid>` under it.
pub fn detect_memory_mode(
    wanted: crate::emulator::config::MemoryEnforcement,
) -> Result<MemoryMode, String> {
    use crate::emulator::config::MemoryEnforcement as M;
    match wanted {
        M::Off => return Ok(MemoryMode::Off),
        M::Poll => return Ok(MemoryMode::Poll),
        M::Auto | M::Cgroup => {}
    }
    let found = probe_cgroup();
    match (found, wanted) {
        (Ok(m), _) => Ok(m),
        (Err(why), M::Cgroup) => Err(format!("no usable memory cgroup: {why}")),
        (Err(why), _) => {
            tracing::info!(%why, "no usable memory cgroup; enforcing memory limits by polling RSS");
            Ok(MemoryMode::Poll)
        }
    }
}

fn probe_cgroup() -> Result<MemoryMode, String> {
    let own = std::fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| format!("/proc/self/cgroup: {e}"))?;
    let tag = format!(
        "toil-emu-{}-{}",
        std::process::id(),
        crate::emulator::cluster::random_suffix(4)
    );
    // cgroup v1 memory controller.
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, ctrls, path) = (
            parts.next(),
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        );
        if ctrls.split(',').any(|c| c == "memory") {
            let base = Path::new("/sys/fs/cgroup/memory")
                .join(path.trim_start_matches('/'))
                .join(&tag);
            if std::fs::create_dir_all(&base).is_ok() && base.join("memory.limit_in_bytes").exists()
            {
                return Ok(MemoryMode::CgroupV1(base));
            }
        }
    }
    // cgroup v2 (unified); needs the memory controller delegated to children.
    for root in ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"] {
        let path = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .unwrap_or("/")
            .trim_start_matches('/');
        let parent = Path::new(root).join(path);
        let controllers =
            std::fs::read_to_string(parent.join("cgroup.controllers")).unwrap_or_default();
        if !controllers.split_whitespace().any(|c| c == "memory") {
            continue;
        }
        let base = parent.join(&tag);
        if std::fs::create_dir_all(&base).is_err() {
            continue;
        }
        let delegated = std::fs::OpenOptions::new()
            .write(true)
            .open(base.join("cgroup.subtree_control"))
            .and_then(|mut f| f.write_all(b"+memory"))
            .is_ok();
        if delegated {
            return Ok(MemoryMode::CgroupV2(base));
        }
        let _ = std::fs::remove_dir(&base);
    }
    Err("neither a cgroup v1 memory hierarchy nor a delegated cgroup v2 memory controller is writable".into())
}

/// A container's memory cgroup.
#[derive(Debug)]
pub struct Cgroup {
    dir: PathBuf,
    v2: bool,
}

impl Cgroup {
    /// Creates a cgroup with a memory limit in bytes.
    pub fn create(mode: &MemoryMode, name: &str, limit: u64) -> std::io::Result<Option<Cgroup>> {
        let (base, v2) = match mode {
            MemoryMode::CgroupV1(b) => (b, false),
            MemoryMode::CgroupV2(b) => (b, true),
            _ => return Ok(None),
        };
        let dir = base.join(name);
        std::fs::create_dir_all(&dir)?;
        if v2 {
            std::fs::write(dir.join("memory.max"), limit.to_string())?;
            let _ = std::fs::write(dir.join("memory.swap.max"), "0");
        } else {
            std::fs::write(dir.join("memory.limit_in_bytes"), limit.to_string())?;
            // Without this, a hog could spill into swap instead of being killed.
            let _ = std::fs::write(dir.join("memory.memsw.limit_in_bytes"), limit.to_string());
            let _ = std::fs::write(dir.join("memory.swappiness"), "0");
        }
        Ok(Some(Cgroup { dir, v2 }))
    }

    /// The file a child writes its pid to.
    pub fn procs_path(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }

    /// Whether the kernel OOM-killed something in this cgroup.
    pub fn oom_killed(&self) -> bool {
        let (file, key) = if self.v2 {
            ("memory.events", "oom_kill")
        } else {
            ("memory.oom_control", "oom_kill")
        };
        std::fs::read_to_string(self.dir.join(file))
            .unwrap_or_default()
            .lines()
            .any(|l| {
                l.split_once(' ')
                    .is_some_and(|(k, v)| k == key && v.trim().parse::<u64>().unwrap_or(0) > 0)
            })
    }

    /// SIGKILLs every process left in the cgroup.
    pub fn kill_all(&self) {
        let procs = std::fs::read_to_string(self.procs_path()).unwrap_or_default();
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }

    /// Removes the (empty) cgroup, retrying while the kernel reaps.
    pub async fn remove(self) {
        for _ in 0..50 {
            self.kill_all();
            if std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        tracing::warn!(dir = %self.dir.display(), "cannot remove a container cgroup");
    }
}

/// Removes the emulator's parent cgroup at shutdown.
pub fn remove_parent(mode: &MemoryMode) {
    if let MemoryMode::CgroupV1(b) | MemoryMode::CgroupV2(b) = mode {
        let _ = std::fs::remove_dir(b);
    }
}

/// Everything the child does before exec, as C strings.
pub struct PreExec {
    privileges: Privileges,
    cgroup_procs: Option<CString>,
    mounts: Vec<(Vec<CString>, CString, CString, bool, bool)>,
    workdir_dirs: Vec<CString>,
    workdir: CString,
    netns: Option<std::os::fd::RawFd>,
}

fn ancestors_to_create(target: &Path) -> std::io::Result<Vec<CString>> {
    let mut dirs: Vec<CString> = Vec::new();
    let mut cur = PathBuf::from("/");
    for comp in target.components().skip(1) {
        cur.push(comp);
        dirs.push(cstr(&cur)?);
    }
    Ok(dirs)
}

impl PreExec {
    /// Prepares the steps for a set of mounts and a working directory.
    pub fn new(
        mounts: &[Mount],
        workdir: &Path,
        cgroup: Option<&Cgroup>,
        privileges: Privileges,
    ) -> std::io::Result<Self> {
        let mut sorted: Vec<&Mount> = mounts.iter().collect();
        // Parents before children, so nested mountPaths land inside volumes.
        sorted.sort_by_key(|m| m.target.components().count());
        let mut prepared = Vec::new();
        for m in sorted {
            let is_file = m.source.is_file();
            let mut dirs = ancestors_to_create(&m.target)?;
            if is_file {
                dirs.pop();
            }
            prepared.push((
                dirs,
                cstr(&m.source)?,
                cstr(&m.target)?,
                m.read_only,
                is_file,
            ));
        }
        Ok(Self {
            privileges,
            cgroup_procs: cgroup.map(|c| cstr(&c.procs_path())).transpose()?,
            mounts: prepared,
            workdir_dirs: ancestors_to_create(workdir)?,
            workdir: cstr(workdir)?,
            netns: None,
        })
    }

    /// Also enters the pod network namespace `fd` (see
    /// [`crate::emulator::netns`]); `None` stays on the host network.
    pub fn with_netns(mut self, fd: Option<std::os::fd::RawFd>) -> Self {
        self.netns = fd;
        self
    }

    /// Runs in the child between fork and exec.
    ///
    /// # Safety
    /// Only async-signal-safe libc calls; no allocation.
    pub unsafe fn run(&self) -> std::io::Result<()> {
        let err = std::io::Error::last_os_error;
        // SAFETY: all calls below are async-signal-safe and take pointers to
        // C strings prepared before fork, alive for the whole call.
        unsafe {
            if let Some(procs) = &self.cgroup_procs {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                if fd < 0 {
                    return Err(err());
                }
                let mut buf = [0u8; 24];
                let n = write_decimal(&mut buf, libc::getpid() as u64);
                let w = libc::write(fd, buf.as_ptr().cast(), n);
                libc::close(fd);
                if w < 0 {
                    return Err(err());
                }
            }
            if libc::setsid() < 0 {
                return Err(err());
            }
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if let Some(fd) = self.netns {
                crate::emulator::netns::enter_in_child(fd)?;
            }
            if !self.mounts.is_empty() {
                if libc::unshare(libc::CLONE_NEWNS) != 0 {
                    return Err(err());
                }
                let root = c"/";
                if libc::mount(
                    std::ptr::null(),
                    root.as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ) != 0
                {
                    return Err(err());
                }
                for (dirs, source, target, ro, is_file) in &self.mounts {
                    for d in dirs {
                        libc::mkdir(d.as_ptr(), 0o755);
                    }
                    if *is_file {
                        let fd = libc::open(target.as_ptr(), libc::O_WRONLY | libc::O_CREAT, 0o644);
                        if fd >= 0 {
                            libc::close(fd);
                        }
                    }
                    if libc::mount(
                        source.as_ptr(),
                        target.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND | libc::MS_REC,
                        std::ptr::null(),
                    ) != 0
                    {
                        return Err(err());
                    }
                    if *ro {
                        let flags =
                            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_REC;
                        if libc::mount(
                            std::ptr::null(),
                            target.as_ptr(),
                            std::ptr::null(),
                            flags,
                            std::ptr::null(),
                        ) != 0
                        {
                            return Err(err());
                        }
                    }
                }
            }
            for d in &self.workdir_dirs {
                libc::mkdir(d.as_ptr(), 0o755);
            }
            if libc::chdir(self.workdir.as_ptr()) != 0 {
                return Err(err());
            }
            // Last: the mounts above need the capabilities dropped here.
            if self.privileges.no_new_privs
                && libc::prctl(
                    libc::PR_SET_NO_NEW_PRIVS,
                    1 as libc::c_ulong,
                    0 as libc::c_ulong,
                    0 as libc::c_ulong,
                    0 as libc::c_ulong,
                ) != 0
            {
                return Err(err());
            }
            if let Some(keep) = self.privileges.keep_caps {
                // Out of the bounding set, so exec cannot grant them back
                // (a uid-0 exec gets the whole bounding set otherwise).
                let zero: libc::c_ulong = 0;
                for cap in 0..64u32 {
                    if keep & (1u64 << cap) == 0 {
                        // EINVAL past the kernel's last capability.
                        libc::prctl(
                            libc::PR_CAPBSET_DROP,
                            libc::c_ulong::from(cap),
                            zero,
                            zero,
                            zero,
                        );
                    }
                }
                libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
                    zero,
                    zero,
                    zero,
                );
                let mut header = CapHeader {
                    version: CAP_VERSION_3,
                    pid: 0,
                };
                let mut data = [CapData {
                    effective: 0,
                    permitted: 0,
                    inheritable: 0,
                }; 2];
                if libc::syscall(
                    libc::SYS_capget,
                    &mut header as *mut CapHeader,
                    data.as_mut_ptr(),
                ) != 0
                {
                    return Err(err());
                }
                for (i, d) in data.iter_mut().enumerate() {
                    let k = (keep >> (32 * i)) as u32;
                    d.effective &= k;
                    d.permitted &= k;
                    d.inheritable &= k;
                }
                if libc::syscall(
                    libc::SYS_capset,
                    &mut header as *mut CapHeader,
                    data.as_ptr(),
                ) != 0
                {
                    return Err(err());
                }
            }
        }
        Ok(())
    }
}

/// Writes `n` in decimal into `buf`, returning the length (no allocation).
fn write_decimal(buf: &mut [u8; 24], mut n: u64) -> usize {
    let mut tmp = [0u8; 24];
    let mut i = 0;
    loop {
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        i += 1;
        if n == 0 {
            break;
        }
    }
    for j in 0..i {
        buf[j] = tmp[i - 1 - j];
    }
    i
}

/// Checks once that this process can make a private mount namespace (it
/// needs root or CAP_SYS_ADMIN), so pods fail with a clear message instead
/// of an obscure exec error.
pub fn check_mount_namespaces() -> Result<(), String> {
    let out = std::process::Command::new("unshare")
        .args(["-m", "true"])
        .output()
        .map_err(|e| format!("cannot run `unshare -m true`: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`unshare -m` failed ({}): the emulator's kubelet needs root to give pods their volume mounts",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Sum of resident memory of every process in a process group (bytes).
pub fn group_rss(pgid: i32) -> u64 {
    let page = 4096u64;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut total = 0;
    for e in dir.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the parenthesised command name.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // rest[0] is state (field 3); pgrp is field 5, rss is field 24.
        if fields.get(2).and_then(|p| p.parse::<i32>().ok()) == Some(pgid) {
            total += fields
                .get(21)
                .and_then(|r| r.parse::<u64>().ok())
                .unwrap_or(0)
                * page;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal() {
        let mut b = [0u8; 24];
        let n = write_decimal(&mut b, 40213);
        assert_eq!(&b[..n], b"40213");
        let n = write_decimal(&mut b, 0);
        assert_eq!(&b[..n], b"0");
    }
}
