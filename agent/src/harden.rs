//! What the agent does to itself before it runs anything, so the job it
//! runs cannot read its credential.
//!
//! A job runs as the agent's user, and a process can normally read the
//! memory and `/proc/PID/environ` of any other process of its user: that is
//! how a job found `TOIL_AGENT_TOKEN` in `/proc/$PPID/environ` (or
//! `/proc/1/environ` in a pod). A non-dumpable process (`PR_SET_DUMPABLE`
//! 0) has its `/proc/PID/{environ,mem,maps,...}` owned by root and refuses
//! `ptrace` and those reads to everyone without `CAP_SYS_PTRACE`: the
//! job's open fails with EACCES. The flag is reset by `execve`, so the
//! job itself (a fresh program) is dumpable as usual and its own tools work.
//!
//! The token is also removed from the agent's environment once the
//! arguments are read, so no child (the job, an image pull) inherits it;
//! the job's command additionally has it removed explicitly.

/// The variable that carries the agent's token.
pub const TOKEN_VAR: &str = "TOIL_AGENT_TOKEN";

/// Makes this process non-dumpable. Call first, before anything reads the
/// token. An error means the protection is missing: the agent must not
/// run jobs then.
pub fn make_undumpable() -> Result<(), String> {
    nix::sys::prctl::set_dumpable(false).map_err(|e| {
        format!(
            "cannot make the agent non-dumpable (prctl PR_SET_DUMPABLE): {e}; without it a job could read the agent's token from /proc, so the agent refuses to run"
        )
    })
}

/// Whether this process is dumpable (for tests and the start-up check).
pub fn is_dumpable() -> bool {
    nix::sys::prctl::get_dumpable().unwrap_or(true)
}

/// Removes the token from this process's environment, so no child
/// inherits it.
///
/// # Safety
/// Must be called while the process has a single thread (before any async
/// runtime is built): changing the environment races with any other
/// thread that reads it.
pub unsafe fn forget_token() {
    // SAFETY: the caller guarantees no other thread exists yet.
    unsafe { std::env::remove_var(TOKEN_VAR) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_can_make_itself_undumpable() {
        // Run in a child process so the test harness keeps its own flag.
        let exe = std::env::current_exe().unwrap_or_default();
        if std::env::var_os("TOIL_HARDEN_CHILD").is_some() {
            assert!(make_undumpable().is_ok());
            assert!(!is_dumpable());
            return;
        }
        let out = std::process::Command::new(exe)
            .args([
                "--exact",
                "harden::tests::the_agent_can_make_itself_undumpable",
            ])
            .env("TOIL_HARDEN_CHILD", "1")
            .output();
        let out = out.map_err(|e| e.to_string());
        assert!(out.as_ref().is_ok_and(|o| o.status.success()), "{out:?}");
    }
}
