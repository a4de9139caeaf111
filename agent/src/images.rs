//! Container images with Singularity / Apptainer.
//!
//! A job with an image runs as `ENGINE exec --bind WD:WD --pwd WD IMAGE.sif
//! ARGV...`, where ENGINE is `singularity` or `apptainer` (whichever is on
//! `PATH`, or the one `--containerEngine` names). Images are pulled once per
//! node into the engine's cache directory (`SINGULARITY_CACHEDIR` /
//! `APPTAINER_CACHEDIR`; by default under `$TOIL_WORKDIR`, so on Kubernetes
//! on the host path and shared by every pod):
//!
//! - one `flock` per image (the lock file is named by a hash of the image
//!   reference), so one image is never pulled twice at once on a node, while
//!   different images pull in parallel;
//! - the engine pulls to a temporary name that is renamed into place once
//!   complete, so a crashed pull never leaves half an image behind;
//! - a failed pull returns the engine's own message, for the attempt's
//!   `IMAGE_PULL` cause.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use toil_proto::v1::CauseKind;

use crate::cache::lock::{FileLock, Mode, holder_of, seconds};

/// Most bytes of the engine's stderr kept in an error (the end is kept:
/// engines print the fatal line last).
const MAX_MESSAGE: usize = 4096;

/// Which engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineKind {
    /// SingularityCE or the older Singularity.
    Singularity,
    /// Apptainer, the Linux Foundation fork.
    Apptainer,
}

impl EngineKind {
    /// The executable name.
    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Singularity => "singularity",
            EngineKind::Apptainer => "apptainer",
        }
    }

    /// The environment variable naming the engine's cache directory.
    pub fn cache_env(self) -> &'static str {
        match self {
            EngineKind::Singularity => "SINGULARITY_CACHEDIR",
            EngineKind::Apptainer => "APPTAINER_CACHEDIR",
        }
    }
}

/// A container engine found on this machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Engine {
    /// Which engine it is; decides the cache variable.
    pub kind: EngineKind,
    /// The executable to run.
    pub program: PathBuf,
}

/// What went wrong with an image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Neither engine is installed.
    #[error(
        "no container engine: neither apptainer nor singularity is on PATH; install one, or run the job without an image"
    )]
    NoEngine,
    /// `--containerEngine` names something unusable.
    #[error("container engine {name:?}: {reason}")]
    BadEngine {
        /// The value given.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The engine failed to pull the image.
    #[error("pulling {image} with {engine} failed ({status}): {message}")]
    Pull {
        /// The image reference as pulled.
        image: String,
        /// The engine's executable name.
        engine: String,
        /// How the engine exited.
        status: String,
        /// The engine's own message (the end of its stderr).
        message: String,
    },
    /// A local filesystem operation failed.
    #[error("{context}: {error}")]
    Io {
        /// What was being done, naming the path.
        context: String,
        /// The underlying error (in the message, not chained again).
        error: io::Error,
    },
}

impl ImageError {
    /// The cause an attempt that failed with this error ends with:
    /// `IMAGE_PULL` for a failed pull, `CONFIG_ERROR` when no usable engine
    /// exists, `STAGING_FAILED` for local disk trouble.
    pub fn cause_kind(&self) -> CauseKind {
        match self {
            ImageError::Pull { .. } => CauseKind::ImagePull,
            ImageError::NoEngine | ImageError::BadEngine { .. } => CauseKind::ConfigError,
            ImageError::Io { .. } => CauseKind::StagingFailed,
        }
    }

    /// The text for the attempt's `Cause.message`: for a failed pull, the
    /// engine's own words.
    pub fn cause_message(&self) -> String {
        match self {
            ImageError::Pull { message, .. } if !message.is_empty() => message.clone(),
            other => other.to_string(),
        }
    }

    fn io(context: impl Into<String>, source: io::Error) -> Self {
        ImageError::Io {
            context: context.into(),
            error: source,
        }
    }
}

// === impl Engine ===

impl Engine {
    /// Finds the engine: `forced` (a name, `singularity` or `apptainer`, or
    /// a path to either) if given, else `apptainer` or `singularity`,
    /// whichever is found first on `path_var` (a `PATH` value).
    pub fn detect(forced: Option<&str>, path_var: Option<&OsStr>) -> Result<Engine, ImageError> {
        let Some(forced) = forced else {
            for kind in [EngineKind::Apptainer, EngineKind::Singularity] {
                if let Some(program) = which(kind.name(), path_var) {
                    return Ok(Engine { kind, program });
                }
            }
            return Err(ImageError::NoEngine);
        };
        let bad = |reason: &str| ImageError::BadEngine {
            name: forced.to_string(),
            reason: reason.to_string(),
        };
        let file = Path::new(forced)
            .file_name()
            .and_then(OsStr::to_str)
            .unwrap_or(forced);
        let kind = match file {
            "singularity" => EngineKind::Singularity,
            "apptainer" => EngineKind::Apptainer,
            _ => return Err(bad("use singularity or apptainer (or a path to one)")),
        };
        let program = if forced.contains('/') {
            let p = PathBuf::from(forced);
            if !is_executable(&p) {
                return Err(bad("not an executable file"));
            }
            p
        } else {
            which(forced, path_var).ok_or_else(|| bad("not found on PATH"))?
        };
        Ok(Engine { kind, program })
    }

    /// [`Engine::detect`] with this process's `PATH`.
    pub fn from_env(forced: Option<&str>) -> Result<Engine, ImageError> {
        Engine::detect(forced, std::env::var_os("PATH").as_deref())
    }

    /// Where images go: the engine's cache variable from `env` when set,
    /// else `TOIL_WORKDIR/<engine>-cache` (on the host path on Kubernetes).
    pub fn cache_dir(
        &self,
        toil_workdir: &Path,
        env: impl Fn(&str) -> Option<OsString>,
    ) -> PathBuf {
        match env(self.kind.cache_env()) {
            Some(v) if !v.is_empty() => PathBuf::from(v),
            _ => toil_workdir.join(format!("{}-cache", self.kind.name())),
        }
    }
}

fn which(name: &str, path_var: Option<&OsStr>) -> Option<PathBuf> {
    std::env::split_paths(path_var?)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The result of [`ImageCache::pull`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PulledImage {
    /// The local image file.
    pub path: PathBuf,
    /// True if this call ran the engine's pull; false if the image was
    /// already on the node (possibly after waiting for another pull).
    pub pulled: bool,
    /// Time spent waiting for another process's pull of the same image.
    pub waited: Duration,
}

/// A command to run inside an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerCommand {
    /// The engine's executable.
    pub program: PathBuf,
    /// Its arguments: `exec --bind WD:WD --pwd WD IMAGE.sif ARGV...`.
    pub args: Vec<OsString>,
    /// Variables to set for the engine (its cache directory).
    pub env: Vec<(OsString, OsString)>,
}

impl ContainerCommand {
    /// A tokio command with the program, arguments and variables set; the
    /// caller adds the job's environment, stdio and process group.
    pub fn to_command(&self) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(&self.program);
        c.args(&self.args);
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }
}

/// Images on this node, pulled once per node.
#[derive(Clone, Debug)]
pub struct ImageCache {
    /// The engine that pulls and runs.
    engine: Engine,
    /// The engine's cache directory (given to it as its cache variable).
    cache_dir: PathBuf,
    /// `CACHE/toil-images`: our `.sif` files, locks and temporaries.
    images: PathBuf,
    /// How long one pull may take (`--imagePullTimeout`).
    pull_timeout: Duration,
    /// How often a job waiting for another's pull says so in its log.
    wait_note_every: Duration,
}

/// One pull's limit unless `--imagePullTimeout` says otherwise: generous for
/// images of several GB over a slow link, and still an end for a pull that
/// hangs on a registry that stopped answering.
pub const DEFAULT_PULL_TIMEOUT: Duration = Duration::from_secs(3600);
/// How long a job waits for another's pull of the same image beyond the
/// pull limit before it gives up (that pull should have been killed by
/// then): a minute, or the limit itself if that is shorter.
const WAIT_GRACE: Duration = Duration::from_secs(60);

// === impl ImageCache ===

impl ImageCache {
    /// An image cache in `cache_dir`, created if needed.
    pub fn new(engine: Engine, cache_dir: &Path) -> Result<ImageCache, ImageError> {
        let images = cache_dir.join("toil-images");
        for d in [images.join("locks"), images.join("tmp")] {
            fs::create_dir_all(&d)
                .map_err(|e| ImageError::io(format!("creating {}", d.display()), e))?;
        }
        Ok(ImageCache {
            engine,
            cache_dir: cache_dir.to_path_buf(),
            images,
            pull_timeout: DEFAULT_PULL_TIMEOUT,
            wait_note_every: Duration::from_secs(30),
        })
    }

    /// Sets how often a job waiting for another's pull notes it (tests).
    pub fn with_wait_note_every(mut self, every: Duration) -> Self {
        self.wait_note_every = every;
        self
    }

    /// Sets how long one pull may take (`--imagePullTimeout`).
    pub fn with_pull_timeout(mut self, limit: Duration) -> Self {
        self.pull_timeout = limit;
        self
    }

    /// The engine in use.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The engine's cache directory.
    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    /// Where the image for `image` is kept once pulled.
    pub fn image_path(&self, image: &str) -> PathBuf {
        self.images
            .join(format!("{}.sif", image_key(&normalize(image))))
    }

    /// Makes `image` available locally and returns its `.sif` file. A
    /// reference without a transport (`ubuntu:24.04`) means `docker://`; an
    /// absolute path to an existing file is used as is. Waits while another
    /// process on the node pulls the same image, calling `note` every 30 s
    /// with a line for the job's log. A pull is killed, with every process
    /// it started, after the pull limit (default one hour), and so is
    /// a pull in progress when the future is dropped.
    pub async fn pull(
        &self,
        image: &str,
        note: &(dyn Fn(String) + Send + Sync),
    ) -> Result<PulledImage, ImageError> {
        if image.starts_with('/') && Path::new(image).is_file() {
            return Ok(PulledImage {
                path: PathBuf::from(image),
                pulled: false,
                waited: Duration::ZERO,
            });
        }
        let reference = normalize(image);
        let key = image_key(&reference);
        let dest = self.images.join(format!("{key}.sif"));
        if dest.exists() {
            return Ok(PulledImage {
                path: dest,
                pulled: false,
                waited: Duration::ZERO,
            });
        }

        let lock_path = self.images.join("locks").join(format!("{key}.lock"));
        let t0 = Instant::now();
        let lock = self.wait_for_lock(&reference, &lock_path, t0, note).await?;
        let waited = t0.elapsed();
        if dest.exists() {
            release(lock);
            return Ok(PulledImage {
                path: dest,
                pulled: false,
                waited,
            });
        }

        // Holding the lock, any temporary for this image is from a pull
        // that died.
        let tmp_dir = self.images.join("tmp");
        remove_tmp_of(&tmp_dir, &key)
            .map_err(|e| ImageError::io(format!("cleaning {}", tmp_dir.display()), e))?;
        let tmp = tmp_dir.join(format!(
            "{key}.{}.{:08x}.sif",
            std::process::id(),
            rand::random::<u32>()
        ));
        let guard = TmpGuard(tmp.clone());

        tracing::info!(image = %reference, engine = %self.engine.kind.name(), "pulling image");
        let mut cmd = tokio::process::Command::new(&self.engine.program);
        cmd.arg("pull")
            .arg(&tmp)
            .arg(&reference)
            .envs(self.engine_env())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        hold_lock_in_child(&mut cmd, lock.as_raw_fd());
        // A group of its own: the engine's helpers (mksquashfs, ...) inherit
        // the lock too, and a timeout or a drop must end them all.
        cmd.process_group(0);
        let child = cmd
            .spawn()
            .map_err(|e| ImageError::io(format!("running {}", self.engine.program.display()), e))?;
        let group = GroupGuard(child.id().and_then(|p| i32::try_from(p).ok()));
        let out = match tokio::time::timeout(self.pull_timeout, child.wait_with_output()).await {
            Ok(out) => out.map_err(|e| {
                ImageError::io(format!("running {}", self.engine.program.display()), e)
            })?,
            Err(_) => {
                drop(group);
                return Err(ImageError::Pull {
                    image: reference.clone(),
                    engine: self.engine.kind.name().to_string(),
                    status: "killed".to_string(),
                    message: format!(
                        "the pull of {reference} took longer than {} and was stopped; the registry may be slow or unreachable from this node. For a very large image, raise --imagePullTimeout (TOIL_IMAGE_PULL_TIMEOUT)",
                        seconds(self.pull_timeout)
                    ),
                });
            }
        };
        // It exited by itself; whatever it left in its group goes now.
        drop(group);
        let fail = |message: String| ImageError::Pull {
            image: reference.clone(),
            engine: self.engine.kind.name().to_string(),
            status: out.status.to_string(),
            message,
        };
        if !out.status.success() {
            return Err(fail(tail(&out.stderr)));
        }
        if !fs::metadata(&tmp).is_ok_and(|m| m.len() > 0) {
            return Err(fail(format!(
                "the engine exited successfully but wrote no image to {}",
                tmp.display()
            )));
        }

        let dest2 = dest.clone();
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            File::open(&guard.0)?.sync_all()?;
            fs::rename(&guard.0, &dest2)?;
            // The guard's removal of the old name is now a no-op.
            drop(guard);
            if let Some(dir) = dest2.parent() {
                File::open(dir)?.sync_all()?;
            }
            release(lock);
            Ok(())
        })
        .await
        .map_err(|e| ImageError::io("image publish thread", io::Error::other(e.to_string())))?
        .map_err(|e| ImageError::io(format!("publishing {}", dest.display()), e))?;
        tracing::info!(image = %reference, secs = t0.elapsed().as_secs_f64(), "image pulled");
        Ok(PulledImage {
            path: dest,
            pulled: true,
            waited,
        })
    }

    /// The command running `argv` inside `sif` with `work_dir` bound at the
    /// same path and used as the working directory.
    pub fn exec_command(&self, sif: &Path, work_dir: &Path, argv: &[String]) -> ContainerCommand {
        let mut bind = work_dir.as_os_str().to_os_string();
        bind.push(":");
        bind.push(work_dir.as_os_str());
        let mut args: Vec<OsString> = vec![
            "exec".into(),
            "--bind".into(),
            bind,
            "--pwd".into(),
            work_dir.as_os_str().to_os_string(),
            sif.as_os_str().to_os_string(),
        ];
        args.extend(argv.iter().map(OsString::from));
        ContainerCommand {
            program: self.engine.program.clone(),
            args,
            env: self.engine_env(),
        }
    }

    /// Both cache variables (an `apptainer` that is really `singularity`
    /// or the reverse reads either).
    fn engine_env(&self) -> Vec<(OsString, OsString)> {
        [EngineKind::Singularity, EngineKind::Apptainer]
            .iter()
            .map(|k| {
                (
                    k.cache_env().into(),
                    self.cache_dir.as_os_str().to_os_string(),
                )
            })
            .collect()
    }
}

impl ImageCache {
    /// Takes the image's pull lock, noting every `wait_note_every` that
    /// another job holds it; gives up past the pull limit plus a minute.
    async fn wait_for_lock(
        &self,
        reference: &str,
        lock_path: &Path,
        t0: Instant,
        note: &(dyn Fn(String) + Send + Sync),
    ) -> Result<FileLock, ImageError> {
        let give_up = self.pull_timeout + WAIT_GRACE.min(self.pull_timeout);
        // A blocking flock on a thread of the pool: woken the moment the
        // holder lets go, and visible as a waiter in /proc.
        let path = lock_path.to_path_buf();
        let mut acquire =
            tokio::task::spawn_blocking(move || FileLock::acquire(&path, Mode::Exclusive));
        let mut next_note = self.wait_note_every;
        loop {
            let until = next_note.min(give_up).saturating_sub(t0.elapsed());
            tokio::select! {
                got = &mut acquire => {
                    return got
                        .map_err(|e| ImageError::io("image lock thread", io::Error::other(e.to_string())))?
                        .map_err(|e| ImageError::io(format!("locking {}", lock_path.display()), e));
                }
                _ = tokio::time::sleep(until) => {}
            }
            let waited = t0.elapsed();
            if waited >= give_up {
                // The thread stays blocked until the holder ends, then
                // drops the lock it got.
                let holder = holder_of(lock_path).unwrap_or_else(|| "another process".into());
                return Err(ImageError::Pull {
                    image: reference.to_string(),
                    engine: self.engine.kind.name().to_string(),
                    status: "not started".to_string(),
                    message: format!(
                        "another job on this node has been pulling {reference} for more than {} ({holder} holds {}); it should have been stopped at --imagePullTimeout, so it may be stuck: end it, or delete the pod it runs in",
                        seconds(give_up),
                        lock_path.display()
                    ),
                });
            }
            if waited >= next_note {
                note(format!(
                    "waiting for image {reference}: another job on this node has been pulling it for {}",
                    seconds(Duration::from_secs(waited.as_secs()))
                ));
                next_note += self.wait_note_every;
            }
        }
    }
}

/// Kills a pull's process group when dropped: after it ended, timed out,
/// or was abandoned.
struct GroupGuard(Option<i32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0.take() {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pgid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Makes the engine keep the image lock and die with the agent.
///
/// The engine inherits the locked descriptor, so if the agent is killed
/// mid-pull the lock stays held until the engine has exited too: a second
/// pull of the image never starts while an orphaned one is still writing.
/// And the engine gets SIGKILL when the agent dies (`PR_SET_PDEATHSIG`), so
/// such an orphan does not live on.
fn hold_lock_in_child(cmd: &mut tokio::process::Command, lock_fd: RawFd) {
    let agent = std::process::id();
    // SAFETY: the closure runs in the child between fork and exec and only
    // makes async-signal-safe system calls (fcntl, prctl, getppid); it
    // allocates nothing except on the error path's `io::Error` from an errno.
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(lock_fd, libc::F_SETFD, 0) == -1 {
                return Err(io::Error::last_os_error());
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(io::Error::last_os_error());
            }
            // The agent may have died before prctl took effect.
            if libc::getppid() as u32 != agent {
                return Err(io::Error::from(io::ErrorKind::BrokenPipe));
            }
            Ok(())
        });
    }
}

/// `docker://` for references without a transport.
fn normalize(image: &str) -> String {
    if image.contains("://") {
        image.to_string()
    } else {
        format!("docker://{image}")
    }
}

/// A file-name-safe key for an image reference.
fn image_key(reference: &str) -> String {
    hex::encode(&Sha256::digest(reference.as_bytes())[..16])
}

/// The end of an engine's output, as text.
fn tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let text = text.trim();
    if text.len() <= MAX_MESSAGE {
        return text.to_string();
    }
    let mut start = text.len() - MAX_MESSAGE;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("...{}", &text[start..])
}

fn remove_tmp_of(dir: &Path, key: &str) -> io::Result<()> {
    let prefix = format!("{key}.");
    for e in fs::read_dir(dir)? {
        let e = e?;
        if e.file_name().to_string_lossy().starts_with(&prefix) {
            match fs::remove_file(e.path()) {
                Ok(()) => tracing::info!(file = %e.path().display(), "removed a crashed pull"),
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => return Err(err),
            }
        }
    }
    Ok(())
}

/// Releases an image lock, deleting the lock file (waiters relock).
fn release(lock: FileLock) {
    if let Err(e) = lock.remove() {
        tracing::debug!(error = %e, "could not remove an image lock file");
    }
}

/// Removes a pull's temporary file unless it was published.
struct TmpGuard(PathBuf);

impl Drop for TmpGuard {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn exe(dir: &Path, name: &str) -> io::Result<PathBuf> {
        let p = dir.join(name);
        fs::write(&p, "#!/bin/sh\n")?;
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755))?;
        Ok(p)
    }

    #[test]
    fn detects_either_engine_and_honours_the_forced_one() -> io::Result<()> {
        let a = tempfile::tempdir()?;
        let s = tempfile::tempdir()?;
        let apptainer = exe(a.path(), "apptainer")?;
        let singularity = exe(s.path(), "singularity")?;
        let both = std::env::join_paths([a.path(), s.path()]).map_err(io::Error::other)?;
        let only_s = s.path().as_os_str();

        let e = Engine::detect(None, Some(&both)).map_err(io::Error::other)?;
        assert_eq!((e.kind, &e.program), (EngineKind::Apptainer, &apptainer));
        let e = Engine::detect(None, Some(only_s)).map_err(io::Error::other)?;
        assert_eq!(
            (e.kind, &e.program),
            (EngineKind::Singularity, &singularity)
        );
        let e = Engine::detect(Some("singularity"), Some(&both)).map_err(io::Error::other)?;
        assert_eq!(e.kind, EngineKind::Singularity);

        assert!(matches!(
            Engine::detect(None, Some(OsStr::new("/nonexistent"))),
            Err(ImageError::NoEngine)
        ));
        assert!(matches!(
            Engine::detect(Some("apptainer"), Some(only_s)),
            Err(ImageError::BadEngine { .. })
        ));
        assert!(matches!(
            Engine::detect(Some("docker"), Some(&both)),
            Err(ImageError::BadEngine { .. })
        ));
        let forced_path = singularity.to_string_lossy().into_owned();
        let e = Engine::detect(Some(&forced_path), None).map_err(io::Error::other)?;
        assert_eq!(e.program, singularity);
        Ok(())
    }

    /// A job that finds another's pull of its image waits, notes it in its
    /// log, takes the image once it is there, and gives up on a pull that
    /// outlives the limit, naming the holder.
    #[tokio::test]
    async fn waits_for_another_pull_notes_it_and_gives_up_on_a_stuck_one() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let engine = Engine {
            kind: EngineKind::Singularity,
            program: "/nonexistent/singularity".into(),
        };
        let images = ImageCache::new(engine, dir.path())
            .map_err(io::Error::other)?
            .with_wait_note_every(Duration::from_millis(100))
            .with_pull_timeout(Duration::from_millis(400));
        let image = "docker://example/held:1";
        let key = image_key(image);
        let lock_path = images.images.join("locks").join(format!("{key}.lock"));
        let notes = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let sink = notes.clone();
        let note = move |l: String| sink.lock().unwrap_or_else(|e| e.into_inner()).push(l);

        // Another holder that never finishes: given up on after 0.4 + 0.4 s.
        let held = FileLock::try_acquire(&lock_path, Mode::Exclusive)?
            .ok_or_else(|| io::Error::other("lock taken"))?;
        let t0 = Instant::now();
        let err = images
            .pull(image, &note)
            .await
            .err()
            .ok_or_else(|| io::Error::other("no error"))?;
        assert!(
            t0.elapsed() >= Duration::from_millis(800),
            "{:?}",
            t0.elapsed()
        );
        assert_eq!(err.cause_kind(), CauseKind::ImagePull);
        let msg = err.cause_message();
        assert!(msg.contains("another job on this node has been pulling docker://example/held:1 for more than 0.8 s"), "{msg}");
        assert!(
            msg.contains(&format!("process {}", std::process::id())),
            "the holder is named: {msg}"
        );
        let seen = notes.lock().unwrap_or_else(|e| e.into_inner()).clone();
        assert!(seen.len() >= 5, "{seen:?}");
        assert!(seen[0].starts_with("waiting for image docker://example/held:1: another job on this node has been pulling it for"), "{seen:?}");

        // A holder that finishes: the waiter takes its image.
        let images2 = images.clone().with_pull_timeout(Duration::from_secs(30));
        let dest = images.image_path(image);
        let finisher = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            let r = fs::write(&dest, b"FAKE-SIF\n");
            drop(held);
            r
        });
        let pulled = images2
            .pull(image, &|_| {})
            .await
            .map_err(io::Error::other)?;
        finisher
            .join()
            .map_err(|_| io::Error::other("finisher panicked"))??;
        assert!(!pulled.pulled);
        assert!(
            pulled.waited >= Duration::from_millis(250),
            "{:?}",
            pulled.waited
        );
        assert_eq!(pulled.path, images.image_path(image));
        Ok(())
    }

    #[test]
    fn cache_dir_and_exec_argv() -> io::Result<()> {
        let engine = Engine {
            kind: EngineKind::Apptainer,
            program: "/usr/bin/apptainer".into(),
        };
        let wd = Path::new("/var/lib/toil");
        assert_eq!(
            engine.cache_dir(wd, |_| None),
            Path::new("/var/lib/toil/apptainer-cache")
        );
        assert_eq!(
            engine.cache_dir(wd, |k| (k == "APPTAINER_CACHEDIR")
                .then(|| "/big/ac".into())),
            Path::new("/big/ac")
        );

        let dir = tempfile::tempdir()?;
        let images = ImageCache::new(engine, dir.path()).map_err(io::Error::other)?;
        let cmd = images.exec_command(
            Path::new("/c/x.sif"),
            Path::new("/w/job1"),
            &["echo".into(), "hi there".into()],
        );
        let args: Vec<_> = cmd.args.iter().map(|a| a.to_string_lossy()).collect();
        assert_eq!(
            args,
            [
                "exec",
                "--bind",
                "/w/job1:/w/job1",
                "--pwd",
                "/w/job1",
                "/c/x.sif",
                "echo",
                "hi there"
            ]
        );
        assert!(
            cmd.env
                .iter()
                .any(|(k, v)| k == "APPTAINER_CACHEDIR" && v == dir.path().as_os_str())
        );
        // The same image under two spellings shares one file.
        assert_eq!(
            images.image_path("ubuntu:24.04"),
            images.image_path("docker://ubuntu:24.04")
        );
        assert_ne!(
            images.image_path("ubuntu:24.04"),
            images.image_path("ubuntu:22.04")
        );
        Ok(())
    }

    #[test]
    fn long_messages_keep_their_end() {
        let long = format!("{}FATAL: the end", "x".repeat(10_000));
        let t = tail(long.as_bytes());
        assert!(t.len() <= MAX_MESSAGE + 3 && t.ends_with("FATAL: the end"));
    }
}
