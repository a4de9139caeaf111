//! The leader's private directory on its own machine, for what must not be
//! in the job store (which every job can read): the workflow's client
//! token, and the Unix socket local agents and clients connect to.
//!
//! `STATE_DIR/w-<first 12 characters of the workflow id>/`, mode 0700 and
//! owned by the leader's user, holds `client-token` (0600) and
//! `leader.sock`. `STATE_DIR` is `--stateDir` / `TOIL_STATE_DIR`, else
//! `$XDG_RUNTIME_DIR/toil`, else `$XDG_STATE_HOME/toil`, else
//! `~/.local/state/toil`. The leader removes the directory when it stops.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The longest path a Unix socket address holds (`sun_path` is 108 bytes
/// with its terminating NUL).
const SOCKET_PATH_MAX: usize = 107;

/// The default `--stateDir`.
pub fn default_state_dir() -> PathBuf {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(d) = var("XDG_RUNTIME_DIR") {
        return d.join("toil");
    }
    if let Some(d) = var("XDG_STATE_HOME") {
        return d.join("toil");
    }
    match var("HOME") {
        Some(h) => h.join(".local/state/toil"),
        None => std::env::temp_dir().join(format!("toil-state-{}", nix::unistd::geteuid())),
    }
}

/// A directory only this user can enter.
#[derive(Clone, Debug)]
pub struct PrivateDir {
    dir: PathBuf,
}

impl PrivateDir {
    /// Creates (or takes back, after a crash or for a restart) the
    /// directory of `workflow_id` under `base`, refusing one that is not a
    /// real directory owned by this user.
    pub fn create(base: &Path, workflow_id: &str) -> Result<PrivateDir, String> {
        let fix = "set --stateDir / TOIL_STATE_DIR to a directory of your own";
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(base)
            .map_err(|e| {
                format!(
                    "cannot create the leader's state directory {}: {e}; {fix}",
                    base.display()
                )
            })?;
        let short: String = workflow_id.chars().take(12).collect();
        let dir = base.join(format!("w-{short}"));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(format!("cannot create {}: {e}; {fix}", dir.display()));
            }
        }
        let meta = std::fs::symlink_metadata(&dir)
            .map_err(|e| format!("cannot read {}: {e}; {fix}", dir.display()))?;
        let me = nix::unistd::geteuid().as_raw();
        if !meta.file_type().is_dir() || meta.uid() != me {
            return Err(format!(
                "{} is not a directory owned by this user (uid {me}), so the client token and the leader's socket cannot be kept private there; {fix}",
                dir.display()
            ));
        }
        // The umask may have narrowed the mode; an earlier directory may
        // have been opened up since.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("cannot make {} private: {e}; {fix}", dir.display()))?;
        Ok(PrivateDir { dir })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Where the client token is.
    pub fn token_path(&self) -> PathBuf {
        self.dir.join("client-token")
    }

    /// The Unix socket's path.
    pub fn socket_path(&self) -> PathBuf {
        self.dir.join("leader.sock")
    }

    /// Where the web view's URL (with its token) is.
    pub fn web_url_path(&self) -> PathBuf {
        self.dir.join("web-url")
    }

    /// Writes the client token, readable by this user alone (0600), in
    /// place of any earlier leader's.
    pub fn write_token(&self, token: &str) -> Result<PathBuf, String> {
        self.write_private(&self.token_path(), token)
    }

    /// Writes the web view's URL, which carries its token, like the token.
    pub fn write_web_url(&self, url: &str) -> Result<PathBuf, String> {
        self.write_private(&self.web_url_path(), url)
    }

    fn write_private(&self, path: &Path, token: &str) -> Result<PathBuf, String> {
        let path = path.to_path_buf();
        let tmp = self.dir.join(format!(
            ".{}.tmp",
            path.file_name().and_then(|n| n.to_str()).unwrap_or("file")
        ));
        let _ = std::fs::remove_file(&tmp);
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&tmp)?;
            f.write_all(token.as_bytes())?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(path)
    }

    /// Binds the Unix socket, replacing a stale one a crashed leader left.
    pub fn bind_socket(&self) -> Result<tokio::net::UnixListener, String> {
        let path = self.socket_path();
        let len = path.as_os_str().len();
        if len > SOCKET_PATH_MAX {
            return Err(format!(
                "the leader's socket path {} is {len} bytes, more than the {SOCKET_PATH_MAX} a Unix socket address holds; set --stateDir / TOIL_STATE_DIR to a shorter directory",
                path.display()
            ));
        }
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(format!(
                    "cannot remove the old socket {}: {e}",
                    path.display()
                ));
            }
        }
        tokio::net::UnixListener::bind(&path)
            .map_err(|e| format!("cannot listen on {}: {e}", path.display()))
    }

    /// Removes the token, the socket and the directory (at the end of a
    /// run; what a crash leaves is replaced by the next leader).
    pub fn remove(&self) {
        let _ = std::fs::remove_file(self.token_path());
        let _ = std::fs::remove_file(self.web_url_path());
        let _ = std::fs::remove_file(self.socket_path());
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_directory_token_and_socket_are_private() {
        let base = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let state = base.path().join("state");
        let d =
            PrivateDir::create(&state, "0123456789abcdef-rest").unwrap_or_else(|e| panic!("{e}"));
        assert!(d.path().ends_with("w-0123456789ab"));
        let mode = |p: &Path| {
            std::fs::metadata(p)
                .map(|m| m.permissions().mode() & 0o777)
                .unwrap_or(0)
        };
        assert_eq!(mode(d.path()), 0o700);
        let t = d.write_token("secret").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(mode(&t), 0o600);
        assert_eq!(
            std::fs::read_to_string(&t).ok().as_deref(),
            Some("secret\n")
        );
        // A second leader (a restart) takes the same directory back, even
        // after someone opened it up, and replaces the token.
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("{e}"));
        let again =
            PrivateDir::create(&state, "0123456789abcdef-rest").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(mode(again.path()), 0o700);
        again.write_token("other").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(std::fs::read_to_string(&t).ok().as_deref(), Some("other\n"));
        let _l = again.bind_socket().unwrap_or_else(|e| panic!("{e}"));
        let _l2 = again.bind_socket().unwrap_or_else(|e| panic!("{e}"));
        // A symlink in its place is refused.
        let link = state.join("w-linked000000");
        std::os::unix::fs::symlink(base.path(), &link).unwrap_or_else(|e| panic!("{e}"));
        let err = PrivateDir::create(&state, "linked000000")
            .err()
            .unwrap_or_default();
        assert!(err.contains("not a directory owned by this user"), "{err}");
        // A path too long for a socket address says how to fix it.
        let deep = base.path().join("d".repeat(100));
        let long = PrivateDir::create(&deep, "x").unwrap_or_else(|e| panic!("{e}"));
        let err = long.bind_socket().err().unwrap_or_default();
        assert!(err.contains("TOIL_STATE_DIR to a shorter"), "{err}");
        again.remove();
        assert!(!again.path().exists());
    }
}
