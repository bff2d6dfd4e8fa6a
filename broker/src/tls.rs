//! TLS for the XMPP client listeners.
//!
//! Both listeners present the same certificate: the `[tls]` pair from the
//! configuration, or — when that section is absent, as in development — a
//! self-signed certificate for `<domain>` and `pubsub.<domain>` generated
//! into `<data_dir>/tls/` on first start and reused afterwards, so clients
//! that pinned it keep working across restarts.
//!
//! The STARTTLS listener (RFC 6120 §5) and the direct-TLS listener (XEP-0368)
//! differ only in ALPN: XEP-0368 §3 has direct-TLS clients offer
//! `xmpp-client`. The ring provider is chosen explicitly so no process-wide
//! default provider has to be installed.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::Config;

/// The ALPN protocol id of XMPP client-to-server over direct TLS (XEP-0368 §3).
pub const ALPN_XMPP_CLIENT: &[u8] = b"xmpp-client";

/// File names of the generated certificate, under `<data_dir>/tls/`.
pub const GENERATED_CERT_FILE: &str = "xmpp.crt";
pub const GENERATED_KEY_FILE: &str = "xmpp.key";

/// Why the XMPP TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read TLS certificate {}: {reason}", path.display())]
    Certificate { path: PathBuf, reason: String },
    #[error("cannot read TLS private key {}: {reason}", path.display())]
    PrivateKey { path: PathBuf, reason: String },
    #[error("TLS certificate {} and key {} cannot be used together: {source}", cert.display(), key.display())]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
    #[error("cannot generate a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot set up TLS: {0}")]
    Rustls(rustls::Error),
}

/// TLS for the STARTTLS listener (`[xmpp] listen`).
pub fn xmpp_server_config(config: &Config) -> Result<Arc<ServerConfig>, TlsError> {
    server_config(config, Vec::new())
}

/// TLS for the direct-TLS listener (`[xmpp] listen_tls`, XEP-0368).
pub fn direct_tls_config(config: &Config) -> Result<Arc<ServerConfig>, TlsError> {
    server_config(config, vec![ALPN_XMPP_CLIENT.to_vec()])
}

fn server_config(config: &Config, alpn: Vec<Vec<u8>>) -> Result<Arc<ServerConfig>, TlsError> {
    let (cert_path, key_path) = match &config.tls {
        Some(files) => (files.cert.clone(), files.key.clone()),
        None => ensure_self_signed(config)?,
    };
    let chain = read_chain(&cert_path)?;
    let key = read_key(&key_path)?;
    let mut server =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Rustls)?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|source| TlsError::Mismatch {
                cert: cert_path,
                key: key_path,
                source,
            })?;
    server.alpn_protocols = alpn;
    Ok(Arc::new(server))
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let failed = |reason: String| TlsError::Certificate {
        path: path.to_owned(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|err| failed(pem_reason(err)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| failed(pem_reason(err)))?;
    if chain.is_empty() {
        return Err(failed("no PEM CERTIFICATE section found".to_owned()));
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|err| TlsError::PrivateKey {
        path: path.to_owned(),
        reason: match err {
            rustls_pki_types::pem::Error::NoItemsFound => {
                "no PEM PRIVATE KEY section found".to_owned()
            }
            other => pem_reason(other),
        },
    })
}

fn pem_reason(err: rustls_pki_types::pem::Error) -> String {
    match err {
        // The io::Error alone reads best ("No such file or directory").
        rustls_pki_types::pem::Error::Io(io) => io.to_string(),
        other => other.to_string(),
    }
}

/// Returns the generated pair's paths, generating it if either file is
/// missing (a crash between the two writes leaves only one behind).
fn ensure_self_signed(config: &Config) -> Result<(PathBuf, PathBuf), TlsError> {
    let dir = config.data_dir.join("tls");
    let cert_path = dir.join(GENERATED_CERT_FILE);
    let key_path = dir.join(GENERATED_KEY_FILE);
    if cert_path.is_file() && key_path.is_file() {
        return Ok((cert_path, key_path));
    }
    let names = vec![config.domain.clone(), config.pubsub_domain()];
    let generated = rcgen::generate_simple_self_signed(names)?;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|source| TlsError::Write {
            path: dir.clone(),
            source,
        })?;
    // Key before certificate, each written whole under a temporary name and
    // renamed: a reader never sees a half-written file.
    write_atomically(&key_path, generated.signing_key.serialize_pem().as_bytes())?;
    write_atomically(&cert_path, generated.cert.pem().as_bytes())?;
    tracing::info!(
        cert = %cert_path.display(),
        domain = %config.domain,
        "generated a self-signed XMPP certificate; set [tls] cert and key for production"
    );
    Ok((cert_path, key_path))
}

/// Writes `contents` to `path` with mode 0600 (it may be a private key).
fn write_atomically(path: &Path, contents: &[u8]) -> Result<(), TlsError> {
    let tmp = path.with_extension("tmp");
    let failed = |source| TlsError::Write {
        path: path.to_owned(),
        source,
    };
    // A stale temporary file from an interrupted start would keep its old mode.
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(failed(err)),
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(failed)?;
    file.write_all(contents).map_err(failed)?;
    file.sync_all().map_err(failed)?;
    fs::rename(&tmp, path).map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TlsFiles;
    use std::os::unix::fs::PermissionsExt;

    fn dev_config(data_dir: &Path) -> Config {
        Config {
            data_dir: data_dir.to_owned(),
            ..Config::development()
        }
    }

    #[test]
    fn self_signed_certificate_is_generated_once_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let config = dev_config(&dir.path().join("data"));
        xmpp_server_config(&config).unwrap();
        let cert_path = dir.path().join("data/tls/xmpp.crt");
        let key_path = dir.path().join("data/tls/xmpp.key");
        let cert = fs::read(&cert_path).unwrap();
        let key = fs::read(&key_path).unwrap();
        assert!(cert.starts_with(b"-----BEGIN CERTIFICATE-----"));

        direct_tls_config(&config).unwrap();
        xmpp_server_config(&config).unwrap();
        assert_eq!(fs::read(&cert_path).unwrap(), cert);
        assert_eq!(fs::read(&key_path).unwrap(), key);
    }

    #[test]
    fn generated_key_is_readable_by_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        xmpp_server_config(&dev_config(dir.path())).unwrap();
        let mode = fs::metadata(dir.path().join("tls/xmpp.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn lone_generated_file_is_replaced_by_a_fresh_pair() {
        let dir = tempfile::tempdir().unwrap();
        let config = dev_config(dir.path());
        xmpp_server_config(&config).unwrap();
        let key_path = dir.path().join("tls/xmpp.key");
        let old_key = fs::read(&key_path).unwrap();
        fs::remove_file(dir.path().join("tls/xmpp.crt")).unwrap();
        xmpp_server_config(&config).unwrap();
        assert_ne!(fs::read(&key_path).unwrap(), old_key);
    }

    #[test]
    fn provided_pair_is_loaded_and_nothing_is_generated() {
        let dir = tempfile::tempdir().unwrap();
        let pair = rcgen::generate_simple_self_signed(vec!["example.org".to_owned()]).unwrap();
        let files = TlsFiles {
            cert: dir.path().join("provided.crt"),
            key: dir.path().join("provided.key"),
        };
        fs::write(&files.cert, pair.cert.pem()).unwrap();
        fs::write(&files.key, pair.signing_key.serialize_pem()).unwrap();
        let config = Config {
            tls: Some(files),
            ..dev_config(&dir.path().join("data"))
        };
        let server = direct_tls_config(&config).unwrap();
        assert_eq!(server.alpn_protocols, [b"xmpp-client".to_vec()]);
        assert!(!dir.path().join("data/tls").exists());
    }

    #[test]
    fn starttls_config_offers_no_alpn() {
        let dir = tempfile::tempdir().unwrap();
        let server = xmpp_server_config(&dev_config(dir.path())).unwrap();
        assert!(server.alpn_protocols.is_empty());
    }

    fn config_with_files(dir: &Path, cert: &[u8], key: &[u8]) -> Config {
        let files = TlsFiles {
            cert: dir.join("x.crt"),
            key: dir.join("x.key"),
        };
        fs::write(&files.cert, cert).unwrap();
        fs::write(&files.key, key).unwrap();
        Config {
            tls: Some(files),
            ..dev_config(dir)
        }
    }

    #[test]
    fn missing_certificate_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            tls: Some(TlsFiles {
                cert: dir.path().join("absent.crt"),
                key: dir.path().join("absent.key"),
            }),
            ..dev_config(dir.path())
        };
        let err = xmpp_server_config(&config).unwrap_err();
        assert!(matches!(err, TlsError::Certificate { .. }), "{err}");
        let message = err.to_string();
        assert!(message.contains("absent.crt"), "{message}");
        assert!(message.contains("No such file"), "{message}");
    }

    #[test]
    fn garbled_certificate_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let pair = rcgen::generate_simple_self_signed(vec!["a.example".to_owned()]).unwrap();
        let config = config_with_files(
            dir.path(),
            b"-----BEGIN CERTIFICATE-----\n!!!not base64!!!\n-----END CERTIFICATE-----\n",
            pair.signing_key.serialize_pem().as_bytes(),
        );
        let err = xmpp_server_config(&config).unwrap_err();
        assert!(matches!(err, TlsError::Certificate { .. }), "{err}");
    }

    #[test]
    fn file_without_a_key_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let pair = rcgen::generate_simple_self_signed(vec!["a.example".to_owned()]).unwrap();
        let cert = pair.cert.pem();
        let config = config_with_files(dir.path(), cert.as_bytes(), cert.as_bytes());
        let err = xmpp_server_config(&config).unwrap_err();
        assert!(err.to_string().contains("no PEM PRIVATE KEY"), "{err}");
    }

    #[test]
    fn key_of_another_certificate_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let one = rcgen::generate_simple_self_signed(vec!["a.example".to_owned()]).unwrap();
        let other = rcgen::generate_simple_self_signed(vec!["a.example".to_owned()]).unwrap();
        let config = config_with_files(
            dir.path(),
            one.cert.pem().as_bytes(),
            other.signing_key.serialize_pem().as_bytes(),
        );
        let err = xmpp_server_config(&config).unwrap_err();
        assert!(matches!(err, TlsError::Mismatch { .. }), "{err}");
    }

    #[tokio::test]
    async fn generated_certificate_serves_the_domain_and_pubsub_service() {
        let dir = tempfile::tempdir().unwrap();
        let config = dev_config(dir.path());
        let server = direct_tls_config(&config).unwrap();
        let cert = CertificateDer::from_pem_file(dir.path().join("tls/xmpp.crt")).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).unwrap();
        let mut client = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        client.alpn_protocols = vec![ALPN_XMPP_CLIENT.to_vec()];
        let client = Arc::new(client);

        for name in ["localhost", "pubsub.localhost"] {
            let (client_io, server_io) = tokio::io::duplex(64 * 1024);
            let acceptor = tokio_rustls::TlsAcceptor::from(server.clone());
            let accepted = tokio::spawn(async move { acceptor.accept(server_io).await });
            let connector = tokio_rustls::TlsConnector::from(client.clone());
            let server_name = rustls_pki_types::ServerName::try_from(name).unwrap();
            let stream = connector.connect(server_name, client_io).await.unwrap();
            assert_eq!(stream.get_ref().1.alpn_protocol(), Some(ALPN_XMPP_CLIENT));
            accepted.await.unwrap().unwrap();
        }
    }
}
