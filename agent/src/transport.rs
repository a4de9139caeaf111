//! How agents, jobs and clients reach the leader.
//!
//! - `unix:PATH`: a Unix socket on the leader's machine, in a directory only
//!   the leader's user can enter (mode 0700), so the kernel already decides
//!   who may connect and nobody can listen in. Local agents use it.
//! - `https://HOST:PORT`: TLS with the leader's per-workflow, self-signed
//!   certificate, which the caller pins by its SHA-256 fingerprint
//!   (`TOIL_LEADER_CERT_SHA256`, not a secret). The name in the certificate
//!   is not checked, only that the server holds the key of the pinned
//!   certificate: pods dial an IP that no certificate authority would name.
//!
//! Plain `http://` is refused: the leader serves no plaintext TCP.

use std::error::Error as StdError;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, SignatureScheme};
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// The name in every leader certificate, for clients that check names
/// (`grpcurl -authority toil-leader`, Python's
/// `grpc.ssl_target_name_override`). Certificates also name the address
/// the leader advertises, `localhost` and the loopback addresses.
pub const TLS_SERVER_NAME: &str = "toil-leader";

/// The environment variable that carries the pin.
pub const PIN_ENV: &str = "TOIL_LEADER_CERT_SHA256";

/// A certificate's SHA-256 fingerprint (of its DER encoding, as
/// `openssl x509 -fingerprint -sha256` computes it).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pin([u8; 32]);

impl Pin {
    /// The fingerprint of a DER certificate.
    pub fn of_der(der: &[u8]) -> Pin {
        Pin(Sha256::digest(der).into())
    }

    /// The fingerprint of the first certificate in a PEM text.
    pub fn of_pem(pem: &str) -> Result<Pin, String> {
        CertificateDer::from_pem_slice(pem.as_bytes())
            .map(|c| Pin::of_der(&c))
            .map_err(|e| format!("not a PEM certificate: {e}"))
    }

    /// Parses 64 hex digits, with or without `:` between bytes (the form
    /// `openssl` prints), in either case.
    pub fn parse(text: &str) -> Result<Pin, String> {
        let digits: String = text.trim().chars().filter(|c| *c != ':').collect();
        let mut out = [0u8; 32];
        match hex::decode_to_slice(&digits, &mut out) {
            Ok(()) => Ok(Pin(out)),
            Err(_) => Err(format!(
                "{PIN_ENV} must be the leader certificate's SHA-256 fingerprint, 64 hex digits (the leader sets it when it starts an agent; clients find it in state/leader.json), got {text:?}"
            )),
        }
    }
}

impl fmt::Display for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pin({self})")
    }
}

/// Where the leader is, and how to know it is the leader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A Unix socket on this machine.
    Unix(PathBuf),
    /// TLS over TCP to `authority` (`HOST:PORT`), pinned.
    Tls {
        /// `HOST:PORT`.
        authority: String,
        /// The certificate the leader must present.
        pin: Pin,
    },
}

impl Target {
    /// Reads an address (`unix:PATH` or `https://HOST:PORT`) and, for TLS,
    /// the pin. Every refusal says what to give instead.
    pub fn parse(address: &str, pin: Option<&str>) -> Result<Target, String> {
        if let Some(path) = address
            .strip_prefix("unix://")
            .or_else(|| address.strip_prefix("unix:"))
        {
            let path = PathBuf::from(path);
            if !path.is_absolute() {
                return Err(format!(
                    "the leader's socket address {address:?} must be an absolute path, unix:/PATH"
                ));
            }
            return Ok(Target::Unix(path));
        }
        if let Some(rest) = address.strip_prefix("https://") {
            let authority = rest.trim_end_matches('/');
            if authority.is_empty() || authority.contains('/') {
                return Err(format!(
                    "the leader's address {address:?} must be https://HOST:PORT"
                ));
            }
            let Some(pin) = pin.filter(|p| !p.trim().is_empty()) else {
                return Err(format!(
                    "{PIN_ENV} is not set: the leader at {address} serves TLS with a certificate made for this workflow, and agents and clients only talk to it once they know that certificate's SHA-256 fingerprint (the leader sets {PIN_ENV} for its agents and jobs; clients find it in state/leader.json)"
                ));
            };
            return Ok(Target::Tls {
                authority: authority.to_string(),
                pin: Pin::parse(pin)?,
            });
        }
        if address.starts_with("http://") {
            return Err(format!(
                "the leader's address {address:?} is plaintext http://, which the leader no longer serves: use https://HOST:PORT (with {PIN_ENV}) or, on the leader's machine, unix:PATH of its socket"
            ));
        }
        Err(format!(
            "the leader's address {address:?} must be https://HOST:PORT or unix:/PATH"
        ))
    }

    /// How it is named in messages.
    pub fn describe(&self) -> String {
        match self {
            Target::Unix(p) => format!("unix:{}", p.display()),
            Target::Tls { authority, .. } => format!("https://{authority}"),
        }
    }

    /// A channel that connects on first use. `tune` sets time-outs and
    /// keep-alives; the transport is this module's.
    pub fn channel(&self, tune: impl FnOnce(Endpoint) -> Endpoint) -> Result<Channel, String> {
        let uri = match self {
            Target::Unix(p) => format!("unix:{}", p.display()),
            Target::Tls { authority, .. } => format!("https://{authority}"),
        };
        let endpoint = Endpoint::from_shared(uri.clone())
            .map_err(|e| format!("bad leader address {uri:?}: {e}"))?;
        let endpoint = tune(endpoint);
        Ok(match self {
            Target::Unix(_) => endpoint.connect_lazy(),
            Target::Tls { authority, pin } => {
                endpoint.connect_with_connector_lazy(PinnedConnector::new(authority, *pin)?)
            }
        })
    }
}

impl Target {
    /// Like [`Target::channel`], but connects now, so a refused
    /// certificate or an absent leader is reported as such.
    pub async fn connect(
        &self,
        tune: impl FnOnce(Endpoint) -> Endpoint,
    ) -> Result<Channel, String> {
        let uri = match self {
            Target::Unix(p) => format!("unix:{}", p.display()),
            Target::Tls { authority, .. } => format!("https://{authority}"),
        };
        let endpoint = tune(
            Endpoint::from_shared(uri.clone())
                .map_err(|e| format!("bad leader address {uri:?}: {e}"))?,
        );
        let r = match self {
            Target::Unix(_) => endpoint.connect().await,
            Target::Tls { authority, pin } => {
                endpoint
                    .connect_with_connector(PinnedConnector::new(authority, *pin)?)
                    .await
            }
        };
        r.map_err(|e| match pin_mismatch(&e) {
            Some(m) => m.to_string(),
            None => {
                let mut msg = format!("cannot connect to the leader at {uri}: {e}");
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    msg.push_str(&format!(": {s}"));
                    source = s.source();
                }
                msg
            }
        })
    }
}

// === impl PinnedConnector ===

/// Dials TCP and runs a TLS handshake that accepts only the pinned
/// certificate.
#[derive(Clone)]
struct PinnedConnector {
    authority: String,
    config: Arc<rustls::ClientConfig>,
}

impl PinnedConnector {
    fn new(authority: &str, pin: Pin) -> Result<PinnedConnector, String> {
        Ok(PinnedConnector {
            authority: authority.to_string(),
            config: Arc::new(client_config(pin)?),
        })
    }
}

/// A rustls client configuration that trusts exactly one certificate.
pub fn client_config(pin: Pin) -> Result<rustls::ClientConfig, String> {
    let provider = crypto_provider();
    let verifier = Arc::new(PinnedVerifier {
        pin,
        algorithms: provider.signature_verification_algorithms,
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

impl tower::Service<Uri> for PinnedConnector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = Box<dyn StdError + Send + Sync>;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let authority = self.authority.clone();
        let config = self.config.clone();
        Box::pin(async move {
            let tcp = TcpStream::connect(&authority).await?;
            // Small request/response messages would otherwise wait on
            // Nagle's algorithm and delayed ACKs.
            tcp.set_nodelay(true)?;
            let name = ServerName::try_from(TLS_SERVER_NAME)?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|e| -> Self::Error {
                    match mismatch_in(&e) {
                        Some(m) => Box::new(PinMismatch {
                            address: format!("https://{authority}"),
                            ..m.clone()
                        }),
                        None => Box::new(e),
                    }
                })?;
            Ok(TokioIo::new(tls))
        })
    }
}

// === impl PinnedVerifier ===

/// Accepts the pinned certificate, whatever names it holds, and checks
/// that the server proves it holds that certificate's key.
#[derive(Debug)]
struct PinnedVerifier {
    pin: Pin,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let seen = Pin::of_der(end_entity);
        if seen == self.pin {
            return Ok(ServerCertVerified::assertion());
        }
        Err(rustls::Error::InvalidCertificate(CertificateError::Other(
            OtherError(Arc::new(PinMismatch {
                address: String::new(),
                pinned: self.pin,
                seen,
            })),
        )))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The server at the leader's address is not this workflow's leader.
#[derive(Clone, Debug, thiserror::Error)]
#[error(
    "the server at {address} presented a certificate with SHA-256 {seen}, not the pinned {pinned} ({PIN_ENV}), so it is not this workflow's leader and nothing was sent to it. Either something else answers on that address (an impostor, or an address that now belongs to another server), or the leader was restarted since this agent started: a restarted leader has a new certificate and does not take over the previous leader's agents"
)]
pub struct PinMismatch {
    /// The address dialled.
    pub address: String,
    /// The fingerprint expected.
    pub pinned: Pin,
    /// The fingerprint presented.
    pub seen: Pin,
}

fn mismatch_in(e: &std::io::Error) -> Option<&PinMismatch> {
    match e.get_ref()?.downcast_ref::<rustls::Error>()? {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner))) => {
            inner.downcast_ref::<PinMismatch>()
        }
        _ => None,
    }
}

/// The pin mismatch behind an error (a tonic `Status` or transport
/// error), if that is why a call failed.
pub fn pin_mismatch<'a>(e: &'a (dyn StdError + 'static)) -> Option<&'a PinMismatch> {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(m) = e.downcast_ref::<PinMismatch>() {
            return Some(m);
        }
        // `io::Error::source` skips the error it wraps.
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(m) = mismatch_in(io).or_else(|| {
                io.get_ref()
                    .and_then(|inner| inner.downcast_ref::<PinMismatch>())
            })
        {
            return Some(m);
        }
        next = e.source();
    }
    None
}

/// The provider every TLS configuration of the project uses.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_pins_are_read_or_refused_with_the_fix() {
        let pin = "AB:".repeat(31) + "AB";
        assert_eq!(
            Target::parse("https://10.0.0.5:7070/", Some(&pin)),
            Ok(Target::Tls {
                authority: "10.0.0.5:7070".into(),
                pin: Pin([0xab; 32])
            })
        );
        assert_eq!(
            Target::parse("unix:/run/toil/leader.sock", None),
            Ok(Target::Unix("/run/toil/leader.sock".into()))
        );
        assert_eq!(
            Target::parse("unix:///run/x.sock", None),
            Ok(Target::Unix("/run/x.sock".into()))
        );
        let err = |a: &str, p: Option<&str>| Target::parse(a, p).err().unwrap_or_default();
        assert!(err("http://10.0.0.5:7070", Some(&pin)).contains("use https://"));
        assert!(err("https://10.0.0.5:7070", None).contains("TOIL_LEADER_CERT_SHA256 is not set"));
        assert!(err("https://10.0.0.5:7070", Some("abc")).contains("64 hex digits"));
        assert!(err("unix:relative.sock", None).contains("absolute"));
        assert!(err("10.0.0.5:7070", None).contains("https://HOST:PORT or unix:/PATH"));
        assert_eq!(Pin([0xab; 32]).to_string(), "ab".repeat(32));
    }
}
