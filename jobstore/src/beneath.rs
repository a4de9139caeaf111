//! Files beneath a directory, reached without following symbolic links.
//!
//! A job controls its work directory, and anything a job could have touched
//! may hold a symbolic link where a file or directory is expected. The
//! agent reads outputs and the leader writes exports only through these
//! functions: every component is resolved beneath the directory with no
//! symbolic link followed (`openat2` with `RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS`), and what is used afterwards is the descriptor that
//! was checked, never the path again (the path can change in between).

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::{Mode, SFlag, fstat, mkdirat};

fn how(flags: OFlag) -> OpenHow {
    OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS)
}

/// What went wrong with `rel` under `root`, in words.
fn refused(root: &Path, rel: &Path, e: Errno) -> io::Error {
    let shown = root.join(rel);
    // O_NOFOLLOW | O_DIRECTORY on a link says ENOTDIR.
    let is_link = std::fs::symlink_metadata(&shown).is_ok_and(|m| m.file_type().is_symlink());
    match e {
        Errno::ELOOP | Errno::EXDEV => io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} goes through a symbolic link, which is not followed here; remove the link",
                shown.display()
            ),
        ),
        Errno::ENOTDIR if is_link => io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} goes through a symbolic link, which is not followed here; remove the link",
                shown.display()
            ),
        ),
        e => io::Error::new(
            io::Error::from(e).kind(),
            format!("{}: {}", shown.display(), e.desc()),
        ),
    }
}

/// Opens the regular file `rel` beneath `root` for reading. Refuses a
/// symbolic link anywhere on the way, a path that leaves `root`, and
/// anything but a regular file at the end.
pub fn open_file(root: &Path, rel: &Path) -> io::Result<File> {
    let dir = File::open(root)?;
    let fd = openat2(&dir, rel, how(OFlag::O_RDONLY)).map_err(|e| refused(root, rel, e))?;
    let st = fstat(&fd).map_err(io::Error::from)?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a regular file", root.join(rel).display()),
        ));
    }
    Ok(File::from(fd))
}

/// Opens (creating what is missing, mode 0755 less the umask) the
/// directory `rel` beneath `root`, one component at a time, never through
/// a symbolic link.
pub fn make_dir(root: &Path, rel: &Path) -> io::Result<OwnedFd> {
    let mut dir: OwnedFd = File::open(root)?.into();
    let mut walked = PathBuf::new();
    for c in rel.components() {
        let Component::Normal(name) = c else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a plain relative path", root.join(rel).display()),
            ));
        };
        walked.push(name);
        match mkdirat(&dir, name, Mode::from_bits_truncate(0o755)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(refused(root, &walked, e)),
        }
        dir = openat2(&dir, name, how(OFlag::O_RDONLY | OFlag::O_DIRECTORY))
            .map_err(|e| refused(root, &walked, e))?;
    }
    Ok(dir)
}

/// A path that names what `fd` refers to (`/proc/self/fd/N`): opening it
/// reaches that very file or directory, whatever its names now point at.
/// Valid while `fd` is open.
pub fn fd_path(fd: &impl AsRawFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::symlink;

    #[test]
    fn files_are_read_only_through_plain_components() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("work");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/a.txt"), "ok").unwrap();
        std::fs::write(t.path().join("secret"), "secret").unwrap();
        symlink(t.path().join("secret"), root.join("link")).unwrap();
        symlink(t.path(), root.join("dirlink")).unwrap();
        symlink("sub", root.join("rel")).unwrap();

        let mut s = String::new();
        open_file(&root, Path::new("sub/a.txt"))
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "ok");
        // Through the checked descriptor, not the name.
        let f = open_file(&root, Path::new("sub/a.txt")).unwrap();
        std::fs::remove_file(root.join("sub/a.txt")).unwrap();
        symlink(t.path().join("secret"), root.join("sub/a.txt")).unwrap();
        let mut s = String::new();
        File::open(fd_path(&f))
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "ok");

        for bad in [
            "link",
            "dirlink/secret",
            "rel/a.txt",
            "sub/a.txt",
            "../secret",
            "/etc/passwd",
        ] {
            let e = open_file(&root, Path::new(bad)).unwrap_err().to_string();
            assert!(
                e.contains("symbolic link")
                    || e.contains("not followed")
                    || e.contains("Invalid cross-device"),
                "{bad}: {e}"
            );
        }
        let e = open_file(&root, Path::new("sub")).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
    }

    #[test]
    fn directories_are_made_without_following_links() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("out");
        std::fs::create_dir_all(&root).unwrap();
        let d = make_dir(&root, Path::new("a/b/c")).unwrap();
        std::fs::write(fd_path(&d).join("f"), "x").unwrap();
        assert_eq!(std::fs::read_to_string(root.join("a/b/c/f")).unwrap(), "x");

        let elsewhere = t.path().join("elsewhere");
        std::fs::create_dir_all(&elsewhere).unwrap();
        symlink(&elsewhere, root.join("a/trap")).unwrap();
        let e = make_dir(&root, Path::new("a/trap/x"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("a/trap goes through a symbolic link"), "{e}");
        assert!(!elsewhere.join("x").exists());
        let e = make_dir(&root, Path::new("../up")).unwrap_err().to_string();
        assert!(e.contains("not a plain relative path"), "{e}");
    }
}
