//! Who may call the limiter: with `--tls-cert`, `--tls-key` and `--tls-client-ca`, only clients
//! presenting a certificate that chains to the client CA (Envoy's cluster `transport_socket`
//! presents the filter's), so no shared secret sits in the plugin configuration that Envoy's
//! config dump shows. Without them the limiter speaks plain HTTP, and only on a loopback
//! address unless the operator says `--allow-plaintext` (docs/operations.md).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// The TLS files, all three required together.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
}

/// Why the limiter refuses to start with the transport it was given.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("--tls-cert, --tls-key and --tls-client-ca go together: give all three or none")]
    Incomplete,
    #[error(
        "refusing plain HTTP on {0}, which is not a loopback address: anyone who reaches it could \
         spend other callers' quotas. Give --tls-cert, --tls-key and --tls-client-ca (mutual \
         TLS), or --allow-plaintext if the network itself keeps everyone else out"
    )]
    PlaintextNotLoopback(SocketAddr),
    #[error("{path}: {problem}")]
    File { path: String, problem: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// What the listener speaks: `None` is plain HTTP.
pub fn acceptor(
    listen: SocketAddr,
    files: Option<TlsFiles>,
    allow_plaintext: bool,
) -> Result<Option<TlsAcceptor>, TlsError> {
    let Some(files) = files else {
        if !listen.ip().is_loopback() && !allow_plaintext {
            return Err(TlsError::PlaintextNotLoopback(listen));
        }
        return Ok(None);
    };
    let certs = certificates(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| file_error(&files.key, e))?;
    let mut roots = RootCertStore::empty();
    for ca in certificates(&files.client_ca)? {
        roots.add(ca).map_err(|e| TlsError::File {
            path: files.client_ca.display().to_string(),
            problem: e.to_string(),
        })?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some(TlsAcceptor::from(Arc::new(config))))
}

/// Every certificate in a PEM file; none is an error.
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_error(path, e))?;
    if certs.is_empty() {
        return Err(TlsError::File {
            path: path.display().to_string(),
            problem: "no PEM certificate in it".into(),
        });
    }
    Ok(certs)
}

fn file_error(path: &Path, e: rustls_pki_types::pem::Error) -> TlsError {
    TlsError::File {
        path: path.display().to_string(),
        problem: e.to_string(),
    }
}
