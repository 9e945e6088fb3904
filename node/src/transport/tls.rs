//! TLS material: the dev CA and server certificate a node generates on first start, and the rustls
//! server configuration.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::auth::write_private;

/// Why TLS material could not be generated or loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A PEM file holds no usable certificate or key.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Certificate generation failed.
    #[error("generating certificates: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Paths of the generated dev material inside `<data_dir>/tls/`.
#[derive(Clone, Debug)]
pub struct DevTlsPaths {
    /// CA certificate clients trust (`ca.pem`).
    pub ca_cert: PathBuf,
    /// CA private key (`ca-key.pem`), kept to issue node certificates later.
    pub ca_key: PathBuf,
    /// Server certificate (`server.pem`).
    pub server_cert: PathBuf,
    /// Server private key (`server-key.pem`).
    pub server_key: PathBuf,
}

impl DevTlsPaths {
    /// The standard layout under `dir`.
    pub fn in_dir(dir: &Path) -> DevTlsPaths {
        DevTlsPaths {
            ca_cert: dir.join("ca.pem"),
            ca_key: dir.join("ca-key.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server-key.pem"),
        }
    }
}

/// Generates a dev CA and a server certificate for `localhost`, `127.0.0.1` and `::1` (plus
/// `extra_names`) unless they already exist. Existing files are never overwritten, so clients keep
/// trusting the same CA across restarts.
pub fn ensure_dev_material(dir: &Path, extra_names: &[String]) -> Result<DevTlsPaths, TlsError> {
    let paths = DevTlsPaths::in_dir(dir);
    if paths.ca_cert.exists() && paths.server_cert.exists() && paths.server_key.exists() {
        return Ok(paths);
    }
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Io {
        path: dir.to_owned(),
        source,
    })?;

    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Piazza dev CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let ca_key_pem = ca_key.serialize_pem();
    let issuer = Issuer::new(ca_params, ca_key);

    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    names.extend(extra_names.iter().cloned());
    let mut server_params = CertificateParams::new(names)?;
    server_params
        .distinguished_name
        .push(DnType::CommonName, "piazza-node");
    server_params.use_authority_key_identifier_extension = true;
    server_params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let server_key = KeyPair::generate()?;
    let server_cert = server_params.signed_by(&server_key, &issuer)?;

    let write = |path: &Path, text: &str, secret: bool| {
        let result = if secret {
            // A half-written earlier attempt must not block a new one.
            let _ = std::fs::remove_file(path);
            write_private(path, text.as_bytes())
        } else {
            std::fs::write(path, text)
        };
        result.map_err(|source| TlsError::Io {
            path: path.to_owned(),
            source,
        })
    };
    write(&paths.ca_key, &ca_key_pem, true)?;
    write(&paths.server_key, &server_key.serialize_pem(), true)?;
    write(&paths.server_cert, &server_cert.pem(), false)?;
    // The CA certificate is written last: its presence marks the set as complete.
    write(&paths.ca_cert, &ca_cert.pem(), false)?;
    Ok(paths)
}

/// Loads a PEM certificate chain.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| TlsError::Pem {
            path: path.to_owned(),
            reason: e.to_string(),
        })?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_owned(),
            reason: "no certificate".into(),
        });
    }
    Ok(certs)
}

/// Loads a PEM private key.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Pem {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// A TLS 1.3 server configuration offering `alpn`.
pub fn server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    alpn: &[u8],
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut config =
        rustls::ServerConfig::builder_with_protocol_versions(&[&rustls::version::TLS13])
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![alpn.to_vec()];
    // QUIC carries 0-RTT differently; requests are not idempotent in general, so it stays off.
    config.max_early_data_size = 0;
    Ok(Arc::new(config))
}

/// Installs the ring crypto provider as the process default. Every binary and test harness calls
/// this first: crates that pull aws-lc-rs would otherwise make the first handshake panic. Calling it
/// twice is harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
