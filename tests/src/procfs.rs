//! What the kernel says about processes, from `/proc`: peak memory, whether
//! a process still runs, whether it waits on a lock, and its children.
//!
//! Conditions the tests wait for (an orphaned agent gone, a second agent
//! queued behind a download lock) are read here rather than assumed after a
//! sleep. Uses only `std`, so that the agent's integration tests can include
//! this file with `#[path]` too (see [`crate::wait`] for why).

/// Peak resident set size (`VmHWM`) of `pid`, in KiB; `None` once it has
/// exited (or for a zombie, which has no memory left).
pub fn vm_hwm_kb(pid: u32) -> Option<u64> {
    status_field(&format!("/proc/{pid}/status"), "VmHWM:")
}

/// Whether our child `pid` has exited, without reaping it: its CPU times
/// and peak memory stay readable in `/proc` until it is waited for.
pub fn exited_unreaped(pid: u32) -> std::io::Result<bool> {
    use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT | WaitPidFlag::WNOHANG;
    match waitid(Id::Pid(nix::unistd::Pid::from_raw(pid as i32)), flags) {
        Ok(WaitStatus::StillAlive) => Ok(false),
        Ok(_) => Ok(true),
        Err(e) => Err(e.into()),
    }
}

/// Peak resident set size of the calling process, in KiB (0 if `/proc` is
/// not mounted).
pub fn own_peak_rss_kb() -> u64 {
    status_field("/proc/self/status", "VmHWM:").unwrap_or(0)
}

fn status_field(path: &str, field: &str) -> Option<u64> {
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// A process's command name and state letter (`R`, `S`, `Z`, ...) and its
/// parent's pid, from `/proc/PID/stat`; `None` once it is gone.
pub fn stat(pid: u32) -> Option<(String, char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "PID (COMM) STATE PPID ...": COMM may hold spaces and parentheses.
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let mut rest = stat[close + 1..].split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((stat[open + 1..close].to_string(), state, ppid))
}

/// A process's CPU time in clock ticks from `/proc/PID/stat`: its own
/// (utime + stime) and that of the children it has waited for (cutime +
/// cstime); `None` once it is gone. [`ticks_per_second`] converts.
pub fn cpu_ticks(pid: u32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After "(COMM)": utime is field 14, stime 15, cutime 16, cstime 17.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(4)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    (f.len() == 4).then(|| (f[0] + f[1], f[2] + f[3]))
}

/// The whole machine's CPU time from `/proc/stat`, in clock ticks:
/// (busy, total), where busy is everything but idle and iowait.
pub fn machine_cpu_ticks() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

/// Clock ticks per second, the unit of [`cpu_ticks`] and
/// [`machine_cpu_ticks`].
pub fn ticks_per_second() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map_or(100, |t| t.max(1) as u64)
}

/// Whether `pid` is a live process: it exists and is not a zombie (a
/// zombie has exited; only its parent has not collected its status yet).
pub fn alive(pid: u32) -> bool {
    stat(pid).is_some_and(|(_, state, _)| state != 'Z' && state != 'X')
}

/// Every live process, with its command name and parent pid.
pub fn processes() -> Vec<(u32, String, u32)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let (comm, state, ppid) = stat(pid)?;
            (state != 'Z' && state != 'X').then_some((pid, comm, ppid))
        })
        .collect()
}

/// Live children of `parent` with their command names (from
/// `/proc/*/stat`: `/proc/PID/task/*/children` is not on every kernel).
pub fn children_of(parent: u32) -> Vec<(u32, String)> {
    processes()
        .into_iter()
        .filter(|(_, _, ppid)| *ppid == parent)
        .map(|(pid, comm, _)| (pid, comm))
        .collect()
}

/// Whether `pid`'s environment holds `entry` (`NAME=value`); false for
/// processes that are gone or not ours.
pub fn has_env(pid: u32, entry: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .is_ok_and(|env| env.split(|b| *b == 0).any(|e| e == entry.as_bytes()))
}

/// The value of `name` in `pid`'s environment, if it is there and readable.
pub fn env_var(pid: u32, name: &str) -> Option<String> {
    let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let prefix = format!("{name}=");
    env.split(|b| *b == 0)
        .find_map(|e| e.strip_prefix(prefix.as_bytes()))
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Whether `pid` is blocked waiting for an `flock` another process holds:
/// the kernel lists such a waiter in `/proc/locks` as `N: -> FLOCK ... PID`.
pub fn waits_on_flock(pid: u32) -> bool {
    let Ok(locks) = std::fs::read_to_string("/proc/locks") else {
        return false;
    };
    locks.lines().any(|l| {
        let mut f = l.split_whitespace().skip(1);
        f.next() == Some("->")
            && f.next() == Some("FLOCK")
            && f.nth(2).and_then(|p| p.parse::<u32>().ok()) == Some(pid)
    })
}

/// Whether `pid` has `path` open (one of `/proc/PID/fd/*` links to it): a
/// process that polls a lock keeps its lock file open while it waits.
pub fn has_open(pid: u32, path: &std::path::Path) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.filter_map(Result::ok)
        .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|p| p == path))
}

#[cfg(test)]
mod tests {
    use super::*;
    // `super::super` rather than `crate`: the agent's tests include this
    // file (and wait.rs) one module deeper.
    use super::super::wait::{wait_for, when};
    use std::time::Duration;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(alive(me));
        assert!(own_peak_rss_kb() > 0);
        assert_eq!(vm_hwm_kb(me).map(|kb| kb > 0), Some(true));
        let (_, _, ppid) = stat(me).unwrap_or_else(|| panic!("no /proc/{me}/stat"));
        assert!(children_of(ppid).iter().any(|(p, _)| *p == me));
        assert!(!waits_on_flock(me));
    }

    #[test]
    fn a_process_queued_on_an_flock_is_seen_waiting() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let lock = dir.path().join("lock");
        let spawn = |hold: &str| {
            // `-o`: the command does not inherit the lock, so killing
            // flock(1) itself releases it.
            std::process::Command::new("flock")
                .arg("-o")
                .arg(&lock)
                .args(["sleep", hold])
                .spawn()
                .unwrap_or_else(|e| panic!("flock(1): {e}"))
        };
        let mut first = spawn("30");
        wait_for(
            "the first flock to hold the lock",
            Duration::from_secs(30),
            || {
                let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
                when(locks.contains(&format!(" {} ", first.id())), locks)
            },
        );
        let mut second = spawn("0");
        wait_for("the second flock to queue", Duration::from_secs(30), || {
            when(waits_on_flock(second.id()), ())
        });
        let _ = first.kill();
        let _ = first.wait();
        assert!(second.wait().is_ok_and(|s| s.success()));
    }
}
