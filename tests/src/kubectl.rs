//! The real `kubectl` for tests: found once, or the test fails with an
//! install hint (a machine of this kind has kubectl; a test that skipped
//! silently without it would hide that the seed's commands went untested).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// How to get kubectl, named in the failure message.
pub const INSTALL_HINT: &str = "install kubectl v1.32 or later: on Debian/Ubuntu `sudo apt-get install kubectl` \
after adding the Kubernetes apt repository (https://pkgs.k8s.io/core:/stable:/v1.32/deb/, see \
https://kubernetes.io/docs/tasks/tools/install-kubectl-linux/), or the upstream binary: \
`curl -LO https://dl.k8s.io/release/v1.32.4/bin/linux/amd64/kubectl && sudo install -m 0755 kubectl /usr/local/bin/kubectl`; \
check it with `kubectl version --client` (or point KUBECTL at the binary)";

fn find() -> Result<PathBuf, String> {
    let candidates: Vec<PathBuf> = match std::env::var_os("KUBECTL") {
        Some(p) => vec![PathBuf::from(p)],
        None => std::env::var_os("PATH")
            .map(|p| {
                std::env::split_paths(&p)
                    .map(|d| d.join("kubectl"))
                    .collect()
            })
            .unwrap_or_default(),
    };
    let Some(bin) = candidates.into_iter().find(|p| p.is_file()) else {
        return Err("kubectl is not on PATH (nor named by KUBECTL)".into());
    };
    let out = Command::new(&bin)
        .args(["version", "--client"])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    if !out.status.success() {
        return Err(format!(
            "`{} version --client` failed: {}",
            bin.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(bin)
}

/// The kubectl binary (`KUBECTL`, else the first `kubectl` on `PATH`), after
/// `kubectl version --client` succeeded; panics with [`INSTALL_HINT`]
/// otherwise, so that a test needing kubectl fails instead of skipping.
pub fn kubectl_or_fail() -> PathBuf {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match FOUND.get_or_init(find) {
        Ok(p) => p.clone(),
        Err(e) => panic!("this test runs the real kubectl, and {e}: {INSTALL_HINT}"),
    }
}

/// kubectl bound to one kubeconfig.
#[derive(Clone, Debug)]
pub struct Kubectl {
    /// The binary.
    pub bin: PathBuf,
    /// The kubeconfig every call uses (`--kubeconfig`, and `KUBECONFIG` for
    /// shell pipelines).
    pub kubeconfig: PathBuf,
}

/// What a kubectl run printed.
#[derive(Clone, Debug)]
pub struct Run {
    /// Exit status was 0.
    pub ok: bool,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    fn from(out: Output) -> Self {
        Self {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Standard output, panicking with both streams if the run failed.
    pub fn expect_ok(self, what: &str) -> String {
        assert!(self.ok, "{what} failed:\n{}{}", self.stdout, self.stderr);
        self.stdout
    }
}

impl Kubectl {
    /// kubectl for `kubeconfig` (fails the test if kubectl is missing).
    pub fn new(kubeconfig: &Path) -> Self {
        Self {
            bin: kubectl_or_fail(),
            kubeconfig: kubeconfig.to_path_buf(),
        }
    }

    /// A command with the kubeconfig set, to add arguments to and run.
    pub fn command(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--kubeconfig").arg(&self.kubeconfig);
        c.stdin(Stdio::null());
        c
    }

    /// Runs `kubectl ARGS` to completion.
    pub fn run(&self, args: &[&str]) -> Run {
        let out = self
            .command()
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.bin.display()));
        Run::from(out)
    }

    /// Runs a shell pipeline as a user would type it (`kubectl get jobs |
    /// grep ... | xargs kubectl delete job`), with `KUBECONFIG` set and this
    /// kubectl first on `PATH`.
    pub fn shell(&self, script: &str) -> Run {
        let dir = self.bin.parent().map(Path::to_path_buf).unwrap_or_default();
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut dirs = vec![dir];
        dirs.extend(std::env::split_paths(&path));
        let out = Command::new("sh")
            .arg("-c")
            .arg(script)
            .env("KUBECONFIG", &self.kubeconfig)
            .env(
                "PATH",
                std::env::join_paths(dirs).unwrap_or_else(|_| path.clone()),
            )
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run sh: {e}"));
        Run::from(out)
    }
}
