//! The leader's certificate: self-signed, made at start for this workflow's
//! leader alone, its key held only in memory.
//!
//! Nobody needs to trust a certificate authority: agents pin the
//! certificate's SHA-256 fingerprint (handed to them in their environment),
//! and clients get the certificate itself from `state/leader.json` (as a
//! root for `grpcurl -cacert` or `grpc.ssl_channel_credentials`). Neither
//! is secret. The key is never written anywhere: the job store is readable
//! by every job, so a key stored there would let a job impersonate the
//! leader. A restarted leader therefore makes a new certificate (see
//! `docs/security.md` for what that means for agents of the previous one).

use std::sync::Arc;

use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use toil_agent::transport::{Pin, TLS_SERVER_NAME, crypto_provider};

/// The leader's certificate and the TLS configuration that serves it.
#[derive(Clone)]
pub struct LeaderCert {
    /// The certificate, PEM (what clients trust).
    pub pem: String,
    /// Its SHA-256 fingerprint (what agents pin).
    pub pin: Pin,
    /// The server side of TLS, ALPN `h2`.
    pub server_config: Arc<rustls::ServerConfig>,
}

/// Why no certificate could be made.
#[derive(Debug, thiserror::Error)]
#[error("could not make the leader's TLS certificate: {0}")]
pub struct CertError(String);

impl LeaderCert {
    /// A fresh certificate naming [`TLS_SERVER_NAME`], `localhost`, the
    /// loopback addresses and `hosts` (the advertised host, this machine's
    /// name), so clients that check names can use any of them.
    pub fn generate(workflow_id: &str, hosts: &[String]) -> Result<LeaderCert, CertError> {
        let err = |e: &dyn std::fmt::Display| CertError(e.to_string());
        let mut names: Vec<String> = vec![
            TLS_SERVER_NAME.into(),
            "localhost".into(),
            "127.0.0.1".into(),
            "::1".into(),
        ];
        for h in hosts {
            // A name rcgen would refuse (an empty one, or one with spaces)
            // is only left out: the pin does not depend on names.
            let plausible = !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'));
            if plausible && !names.contains(h) {
                names.push(h.clone());
            }
        }
        let mut params = CertificateParams::new(names).map_err(|e| err(&e))?;
        params
            .distinguished_name
            .push(DnType::CommonName, format!("toil-leader {workflow_id}"));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().map_err(|e| err(&e))?;
        let cert = params.self_signed(&key).map_err(|e| err(&e))?;
        let der = CertificateDer::from(cert.der().to_vec());
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let pin = Pin::of_der(&der);
        let mut config = rustls::ServerConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| err(&e))?
            .with_no_client_auth()
            .with_single_cert(vec![der], key_der)
            .map_err(|e| err(&e))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(LeaderCert {
            pem: cert.pem(),
            pin,
            server_config: Arc::new(config),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pem_and_the_pin_describe_one_certificate() {
        let a = LeaderCert::generate("wf", &["10.0.0.5".into(), "bad name".into()])
            .unwrap_or_else(|e| panic!("{e}"));
        let b = LeaderCert::generate("wf", &[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(Pin::of_pem(&a.pem), Ok(a.pin));
        // Each leader start makes its own.
        assert_ne!(a.pin, b.pin);
        assert!(a.pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert_eq!(a.server_config.alpn_protocols, vec![b"h2".to_vec()]);
    }
}
