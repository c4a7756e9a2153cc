//! TLS client identities for MQTT brokers (`mqtts://`), shared by the edge's
//! MQTT link and the host's MQTT workers: rustls on ring (no system
//! library to cross-compile against), the broker's CA or the system's
//! roots, and an optional client certificate whose private key must be
//! readable by its owner only.

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use rustls::ClientConfig;
use rustls::RootCertStore;

/// A client certificate and its private key (PEM files): the identity a
/// client proves to a broker that requires certificates (`mqtts://`). A
/// broker set up as the README's security section says takes the
/// certificate's common name as the client's user name and lets it publish
/// only under its own device id (devices) or answer devices (host workers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, SEC1 or PKCS#1); readable by its owner only.
    pub key: PathBuf,
}

/// The TLS client configuration for `mqtts://` brokers: rustls on ring
/// (TLS 1.3 and 1.2), trusting the certificate authorities in `ca_file`
/// (PEM) if given, else the system's roots, and proving `identity` when
/// given. The error says which file or store failed.
pub fn tls_client_config(
    ca_file: Option<&Path>,
    identity: Option<&ClientCert>,
) -> Result<Arc<ClientConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("cannot read the CA file {}: {e}", path.display()))?;
            if certs.is_empty() {
                return Err(format!(
                    "the CA file {} holds no certificate",
                    path.display()
                ));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| {
                    format!(
                        "the CA file {} holds a bad certificate: {e}",
                        path.display()
                    )
                })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(format!(
                    "no trusted certificate authority found in the system's store{} \
                     (install ca-certificates, or give the broker's CA file)",
                    found
                        .errors
                        .first()
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default()
                ));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up failed: {e}"))?
        .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some(ClientCert { cert, key }) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("cannot read the certificate {}: {e}", cert.display()))?;
            if chain.is_empty() {
                return Err(format!(
                    "the certificate file {} holds no certificate",
                    cert.display()
                ));
            }
            private_to_owner(key)?;
            let private = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("cannot read the private key {}: {e}", key.display()))?;
            builder.with_client_auth_cert(chain, private).map_err(|e| {
                format!(
                    "the certificate {} and the key {} do not make a client identity: {e}",
                    cert.display(),
                    key.display()
                )
            })?
        }
    };
    Ok(Arc::new(config))
}

/// Refuses a private key file that its group or others may read (or
/// write), with the same rule as the X25519 keys.
fn private_to_owner(path: &Path) -> Result<(), String> {
    let metadata = std::fs::metadata(path)
        .map_err(|e| format!("cannot read the private key {}: {e}", path.display()))?;
    crate::keys::private_to_owner(path, &metadata).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_needs_a_readable_ca_file_with_a_certificate() {
        let dir = std::env::temp_dir().join(format!("latentcam-mqtt-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = tls_client_config(Some(&dir.join("none.pem")), None).unwrap_err();
        assert!(missing.contains("cannot read the CA file"), "{missing}");
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "no certificate here\n").unwrap();
        let err = tls_client_config(Some(&empty), None).unwrap_err();
        assert!(err.contains("holds no certificate"), "{err}");
        // A client key that others can read is refused before it is used.
        let key = dir.join("c.key");
        std::fs::write(&key, "-----BEGIN PRIVATE KEY-----\n").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
            let err = private_to_owner(&key).unwrap_err();
            assert!(
                err.contains("readable by group or others (mode 644)"),
                "{err}"
            );
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        assert_eq!(private_to_owner(&key), Ok(()));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
