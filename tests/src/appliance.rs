//! The appliance image with its real contents, for the emulator: built
//! (or reused from the cache under target/appliance) by
//! scripts/build-appliance-rootfs.sh from Debian packages and this build's
//! binaries, without Docker. Give [`bundle`] to
//! `EmulatorConfig::with_image_bundle` and pods of that image run inside
//! its root filesystem.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use crate::harness::{bin_dir, repo_root};

/// The runtime bundle (`config.json` + `rootfs/`) of the appliance image
/// holding this build's `toil-leader` and `toil-agent` (target/debug).
///
/// The first call in a test binary runs the script (about 100 s when
/// nothing is cached, under a second when it is); later calls reuse its
/// answer. Errors say what failed and how to fix it: the build needs root,
/// the Debian packages mmdebstrap and umoci (scripts/setup-test-env.sh)
/// and a reachable Debian mirror (`TOIL_APPLIANCE_MIRROR`).
pub fn bundle() -> Result<PathBuf, String> {
    static BUILT: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(b) = built.as_ref() {
        return Ok(b.clone());
    }
    let script = repo_root().join("scripts/build-appliance-rootfs.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg("--binaries")
        .arg(bin_dir())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!(
            "building the appliance image failed ({}): see the [appliance] lines above. It needs root, the Debian packages mmdebstrap and umoci (run scripts/setup-test-env.sh) and a reachable Debian mirror (set TOIL_APPLIANCE_MIRROR to another one, e.g. a snapshot mirror, if the default is unreachable)",
            out.status
        ));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let dir = stdout
        .lines()
        .last()
        .map(PathBuf::from)
        .filter(|d| d.join("config.json").is_file())
        .ok_or_else(|| {
            format!(
                "{} printed no bundle directory: {stdout:?}",
                script.display()
            )
        })?;
    *built = Some(dir.clone());
    Ok(dir)
}
