//! HTTPS for the API: a certificate chain and its private key from PEM
//! files, served with rustls on the ring provider (no system library).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why the TLS certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The certificate file could not be read or holds no certificate.
    #[error(
        "cannot read TLS certificates from {path}: {message} (give a PEM file with the server's certificate first, then any intermediate ones)"
    )]
    Certificates {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The key file could not be read or holds no private key.
    #[error(
        "cannot read a TLS private key from {path}: {message} (give a PEM file with one unencrypted PKCS#8, PKCS#1 or SEC1 key)"
    )]
    Key {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// rustls refused the pair (e.g. the key is not the certificate's).
    #[error("the TLS certificate and key cannot be used together: {0}")]
    Config(String),
}

/// The server side of TLS for the API, ready to accept connections.
#[derive(Clone)]
pub struct Tls {
    acceptor: tokio_rustls::TlsAcceptor,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Tls")
    }
}

impl Tls {
    /// Loads a certificate chain and its private key (PEM files) and checks
    /// that they go together; TLS 1.2 and 1.3, HTTP/1.1 by ALPN.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let certificates = |message: String| TlsError::Certificates {
            path: cert.to_path_buf(),
            message,
        };
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .map_err(|e| certificates(e.to_string()))?
            .collect::<Result<_, _>>()
            .map_err(|e| certificates(e.to_string()))?;
        if chain.is_empty() {
            return Err(certificates("no CERTIFICATE block in it".into()));
        }
        let private = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
            path: key.to_path_buf(),
            message: e.to_string(),
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, private)
            .map_err(|e| TlsError::Config(e.to_string()))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// Runs the server handshake on `stream`.
    pub(super) async fn accept(
        &self,
        stream: tokio::net::TcpStream,
    ) -> std::io::Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>> {
        self.acceptor.accept(stream).await
    }
}
