//! TLS for PostgreSQL sessions with rustls, following libpq's `sslmode` semantics:
//! `require` encrypts without checking the certificate (unless `sslrootcert` is given, then it
//! behaves like `verify-ca`), `verify-ca` checks the chain but not the host name, `verify-full`
//! checks both. Roots come from `sslrootcert` when given, else the bundled web PKI roots.

use super::conninfo::{ConnInfo, SslMode};
use crate::error::{Error, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use std::sync::Arc;
use tokio_postgres_rustls::MakeRustlsConnect;

pub fn make_tls(info: &ConnInfo) -> Result<MakeRustlsConnect> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    if let Some(path) = &info.sslrootcert {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| Error::invalid(format!("reading sslrootcert {path}: {e}")))?
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| Error::invalid(format!("reading sslrootcert {path}: {e}")))?;
        if certs.is_empty() {
            return Err(Error::invalid(format!(
                "sslrootcert {path} holds no PEM certificate"
            )));
        }
        for c in certs {
            roots
                .add(c)
                .map_err(|e| Error::invalid(format!("sslrootcert {path}: {e}")))?;
        }
    } else {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::other(format!("TLS setup: {e}")))?;
    let webpki = || {
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots.clone()), provider.clone())
            .build()
            .map_err(|e| Error::invalid(format!("TLS roots: {e}")))
    };
    let mode = match (info.sslmode, info.sslrootcert.is_some()) {
        (SslMode::Require, true) => SslMode::VerifyCa,
        (m, _) => m,
    };
    let config = match mode {
        SslMode::VerifyFull => builder
            .with_root_certificates(roots.clone())
            .with_no_client_auth(),
        SslMode::VerifyCa => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Relaxed {
                inner: Some(webpki()?),
                provider,
            }))
            .with_no_client_auth(),
        _ => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Relaxed {
                inner: None,
                provider,
            }))
            .with_no_client_auth(),
    };
    Ok(MakeRustlsConnect::new(config))
}

/// `verify-ca` (with `inner`): the chain must lead to a trusted root, the host name is not
/// checked. `require`/`prefer` without a root certificate (`inner` None): encrypted, certificate
/// not checked, as libpq does. Handshake signatures are always verified.
#[derive(Debug)]
struct Relaxed {
    inner: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Relaxed {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let Some(inner) = &self.inner else {
            return Ok(ServerCertVerified::assertion());
        };
        match inner.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(m, c, d, &self.provider.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(m, c, d, &self.provider.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
