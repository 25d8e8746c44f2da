//! Certificates the tests make for themselves: a CA, the limiter's server certificate, the
//! filter's client certificate, and a client certificate from a CA nobody trusts. Written as
//! PEM files in a temporary directory that lives as long as the value.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

use crate::{HarnessError, Result};

/// The DNS name in the limiter's certificate (Envoy checks it as the SAN and sends it as SNI).
pub const LIMITER_NAME: &str = "limiter.test";

pub struct Pki {
    dir: tempfile::TempDir,
}

fn rc(what: &str, e: rcgen::Error) -> HarnessError {
    HarnessError::Io(
        format!("certificates: {what}: {e}"),
        std::io::ErrorKind::Other.into(),
    )
}

fn ca(name: &str) -> Result<(Certificate, KeyPair)> {
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(|e| rc(name, e))?;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().map_err(|e| rc(name, e))?;
    let cert = p.self_signed(&key).map_err(|e| rc(name, e))?;
    Ok((cert, key))
}

fn leaf(
    name: &str,
    sans: Vec<String>,
    usage: ExtendedKeyUsagePurpose,
    issuer: &(Certificate, KeyPair),
) -> Result<(Certificate, KeyPair)> {
    let mut p = CertificateParams::new(sans).map_err(|e| rc(name, e))?;
    p.distinguished_name.push(DnType::CommonName, name);
    p.extended_key_usages = vec![usage];
    let key = KeyPair::generate().map_err(|e| rc(name, e))?;
    let cert = p
        .signed_by(&key, &issuer.0, &issuer.1)
        .map_err(|e| rc(name, e))?;
    Ok((cert, key))
}

impl Pki {
    /// Makes every certificate and key and writes them as PEM files.
    pub fn new() -> Result<Pki> {
        let dir = tempfile::Builder::new()
            .prefix("apiguard-pki-")
            .tempdir()
            .map_err(|e| HarnessError::Io("tempdir".into(), e))?;
        let trusted = ca("apiguard test CA")?;
        let rogue = ca("someone else's CA")?;
        let server = leaf(
            LIMITER_NAME,
            vec![LIMITER_NAME.into(), "127.0.0.1".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
            &trusted,
        )?;
        let client = leaf(
            "apiguard-filter",
            vec!["apiguard-filter.test".into()],
            ExtendedKeyUsagePurpose::ClientAuth,
            &trusted,
        )?;
        let stranger = leaf(
            "apiguard-filter",
            vec!["apiguard-filter.test".into()],
            ExtendedKeyUsagePurpose::ClientAuth,
            &rogue,
        )?;
        let files = [
            ("ca.pem", trusted.0.pem()),
            ("server.pem", server.0.pem()),
            ("server.key", server.1.serialize_pem()),
            ("client.pem", client.0.pem()),
            ("client.key", client.1.serialize_pem()),
            ("stranger.pem", stranger.0.pem()),
            ("stranger.key", stranger.1.serialize_pem()),
        ];
        for (name, pem) in files {
            let path = dir.path().join(name);
            std::fs::write(&path, pem)
                .map_err(|e| HarnessError::Io(path.display().to_string(), e))?;
        }
        Ok(Pki { dir })
    }

    /// A file of this PKI: `ca.pem`, `server.pem`/`server.key`, `client.pem`/`client.key`,
    /// `stranger.pem`/`stranger.key`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// An Envoy cluster `transport_socket` that presents `cert`/`key` (file names of this PKI)
    /// and checks the limiter's certificate against the CA and its name.
    pub fn envoy_tls(&self, cert: &str, key: &str) -> serde_json::Value {
        let p = |n: &str| self.path(n).display().to_string();
        serde_json::json!({
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "sni": LIMITER_NAME,
                "common_tls_context": {
                    "tls_certificates": [{
                        "certificate_chain": {"filename": p(cert)},
                        "private_key": {"filename": p(key)}
                    }],
                    "validation_context": {
                        "trusted_ca": {"filename": p("ca.pem")},
                        "match_typed_subject_alt_names": [
                            {"san_type": "DNS", "matcher": {"exact": LIMITER_NAME}}
                        ]
                    }
                }
            }
        })
    }

    /// The limiter's flags for mutual TLS with this PKI.
    pub fn limiter_args(&self) -> Vec<String> {
        let p = |n: &str| self.path(n).display().to_string();
        vec![
            "--tls-cert".into(),
            p("server.pem"),
            "--tls-key".into(),
            p("server.key"),
            "--tls-client-ca".into(),
            p("ca.pem"),
        ]
    }
}
