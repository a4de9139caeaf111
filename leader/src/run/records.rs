//! What a run keeps in the job store beside the journal (`meta.json`,
//! `leader.json`), and the exit codes it ends with.
//!
//! `status`, `logs` and the summary read these too, which is why they live
//! apart from the code that runs the workflow.

use std::path::PathBuf;

/// Exit codes of `toil-leader run`.
pub mod exit {
    /// Every job succeeded.
    pub const OK: u8 = 0;
    /// The workflow ran and at least one job failed.
    pub const FAILED: u8 = 1;
    /// The workflow file or the options are wrong, or the job store cannot
    /// be used (credentials, access, its region); nothing ran.
    pub const BAD_INPUT: u8 = 2;
    /// The job store is in use by another leader, or this leader was fenced.
    pub const CONFLICT: u8 = 3;
    /// Interrupted (SIGINT/SIGTERM); resume with --restart.
    pub const INTERRUPTED: u8 = 130;
}

/// Stored identity of a workflow (`workflow/meta.json`).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Meta {
    /// Unique id.
    pub workflow_id: String,
    /// Name from the file.
    pub name: String,
    /// The workflow file as given at the first run.
    pub source: PathBuf,
    /// The directory relative inputs were resolved against.
    pub base_dir: PathBuf,
    /// When the workflow first started (ms since the Unix epoch).
    pub created_ms: i64,
    /// The settings the journal's decisions were made with. Replaying the
    /// journal must make the same decisions (a job that failed with no
    /// retries left must not come back as queued), so a restart and an
    /// offline `status` use these, not the current command line.
    #[serde(default)]
    pub settings: Option<RunSettings>,
    /// True for a CWL workflow run by `toil-cwl-runner`: `source` is the CWL
    /// document, the stored workflow file is its text, and every job was
    /// added while it ran (see `crate::cwl`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cwl: bool,
}

/// Settings that decide how the journal replays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RunSettings {
    /// Default CPU in millicores.
    pub millicores: u32,
    /// Default memory in bytes.
    pub memory: u64,
    /// Default disk in bytes.
    pub disk: u64,
    /// `--retryCount`.
    pub retries: u32,
    /// `--infraRetryCount`.
    pub infra_retries: u32,
}

impl RunSettings {
    /// The job defaults part.
    pub fn defaults(&self) -> crate::workflow::ResolvedDefaults {
        crate::workflow::ResolvedDefaults {
            millicores: self.millicores,
            memory: self.memory,
            disk: self.disk,
            retries: self.retries,
        }
    }
}

/// What `state/leader.json` tells clients. Everything here is public:
/// the job store is readable by every job, so the client token is not
/// here, only its SHA-256 (to tell a client that holds the wrong token).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct LeaderInfo {
    /// gRPC target of the live leader, `HOST:PORT` with no scheme: the form
    /// every gRPC library accepts (Python's rejects URLs). Served with TLS.
    pub address: String,
    /// The same as a URL (`https://HOST:PORT`), for clients that want one.
    #[serde(default)]
    pub url: String,
    /// The leader's certificate, PEM: the root a TLS client trusts
    /// (`grpcurl -cacert`, `grpc.ssl_channel_credentials`).
    #[serde(default)]
    pub cert_pem: String,
    /// That certificate's SHA-256 fingerprint, hex (what agents pin).
    #[serde(default)]
    pub cert_sha256: String,
    /// A name the certificate holds whatever address is dialled, for
    /// clients that check names (`grpcurl -authority`).
    #[serde(default)]
    pub tls_server_name: String,
    /// The leader's Unix socket on `host` (`unix:PATH`), for clients on
    /// that machine; only the leader's user can open it.
    #[serde(default)]
    pub socket: String,
    /// Where on `host` the client token is (a file only the leader's user
    /// can read); elsewhere pass it in `TOIL_CLIENT_TOKEN`.
    #[serde(default)]
    pub token_file: String,
    /// SHA-256 of the client token, hex: a verifier, not the token.
    #[serde(default)]
    pub client_token_sha256: String,
    /// The leader's pid and host.
    pub pid: u32,
    /// Host name.
    pub host: String,
    /// The leader's epoch.
    pub epoch: u64,
}

/// The verifier stored for a client token.
pub fn token_verifier(token: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

/// An error that maps to an exit code.
#[derive(Debug)]
pub struct Failure {
    /// The exit code.
    pub code: u8,
    /// What to tell the user.
    pub message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// An error that ends the run with exit `code` and `message` alone.
pub(crate) fn fail(code: u8, message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Failure {
        code,
        message: message.into(),
    })
}
