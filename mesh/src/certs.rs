//! Certificates of a mesh: a cluster CA, one certificate per node, and the
//! XMPP-facing server certificate, generated with rcgen (ring); and loading
//! of a node's identity (CA, certificate chain, key) from PEM files.
//!
//! Convention: node `<id>` proves its identity with a certificate signed by
//! the cluster CA whose DNS SAN is [`node_dns_name`]`(id)`
//! (`node-<id>.vomesh.internal`). The transport dials a peer with that name as
//! the TLS server name and checks it again on the accepting side, so a
//! certificate from another CA, or one issued to another node id (or the XMPP
//! certificate, which carries no node name), is refused. Node certificates
//! carry both the server and client authentication usages because every
//! node both dials and accepts.
//!
//! The CA is valid for 20 years, node and XMPP certificates for 10, all
//! from an hour before their creation (clock skew between sites).
//!
//! `vomesh certs init` calls [`write_cluster_certs`].

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Validity of the cluster CA. Node and XMPP certificates must be re-issued
/// within theirs; the CA outlives them so re-issuing needs no new CA.
const CA_VALIDITY: Duration = Duration::from_secs(20 * 365 * 24 * 3600);
const LEAF_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Certificates are valid from a little before their creation, so a site
/// whose clock is slightly behind accepts them at once.
const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(3600);

fn set_validity(params: &mut CertificateParams, validity: Duration) {
    let now = SystemTime::now();
    params.not_before = (now - CLOCK_SKEW_ALLOWANCE).into();
    params.not_after = (now + validity).into();
}

/// The DNS name every node certificate carries for its node id.
pub fn node_dns_name(node_id: u64) -> String {
    format!("node-{node_id}.vomesh.internal")
}

/// Errors while generating, writing or loading certificates.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Pem { path: PathBuf, source: PemError },
    #[error("{0} already exists; refusing to replace an existing cluster CA")]
    AlreadyExists(PathBuf),
    #[error("no node ids given")]
    NoNodes,
}

/// A certificate and its private key, PEM encoded.
#[derive(Clone, Debug)]
pub struct PemPair {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A freshly generated cluster CA, able to issue node and server certificates.
pub struct ClusterCa {
    pem: PemPair,
    issuer: Issuer<'static, KeyPair>,
}

impl ClusterCa {
    /// Generates a new CA key and self-signed CA certificate.
    pub fn generate() -> Result<Self, CertError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = distinguished_name("vomesh cluster CA");
        // The CA signs leaf certificates only: no intermediate CAs below it.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        set_validity(&mut params, CA_VALIDITY);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key)?;
        let pem = PemPair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        Ok(Self {
            pem,
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA certificate and key.
    pub fn pem(&self) -> &PemPair {
        &self.pem
    }

    /// Issues the certificate of mesh node `node_id`: SAN
    /// `node-<id>.vomesh.internal` plus `extra_sans`, usable as both TLS
    /// client and server.
    pub fn issue_node(&self, node_id: u64, extra_sans: &[String]) -> Result<PemPair, CertError> {
        let mut sans = vec![node_dns_name(node_id)];
        sans.extend(extra_sans.iter().cloned());
        self.issue(
            &format!("vomesh node {node_id}"),
            sans,
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        )
    }

    /// Issues the client-facing certificate of the XMPP domain: SANs
    /// `domain`, `pubsub.<domain>` (the pubsub service's address) and
    /// `extra_sans`.
    pub fn issue_xmpp(&self, domain: &str, extra_sans: &[String]) -> Result<PemPair, CertError> {
        let mut sans = vec![domain.to_owned(), format!("pubsub.{domain}")];
        sans.extend(extra_sans.iter().cloned());
        self.issue(domain, sans, vec![ExtendedKeyUsagePurpose::ServerAuth])
    }

    fn issue(
        &self,
        common_name: &str,
        sans: Vec<String>,
        usages: Vec<ExtendedKeyUsagePurpose>,
    ) -> Result<PemPair, CertError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(sans)?;
        params.distinguished_name = distinguished_name(common_name);
        set_validity(&mut params, LEAF_VALIDITY);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = usages;
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(PemPair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "vomesh");
    dn.push(DnType::CommonName, common_name);
    dn
}

/// The files [`write_cluster_certs`] wrote.
#[derive(Clone, Debug)]
pub struct ClusterCertFiles {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    /// `(node id, certificate, key)` for each node.
    pub nodes: Vec<(u64, PathBuf, PathBuf)>,
    pub xmpp_cert: PathBuf,
    pub xmpp_key: PathBuf,
}

/// Creates `out_dir` (if needed) and writes a new cluster CA (`ca.crt`,
/// `ca.key`), a certificate per node (`node-<id>.crt/.key`) and the XMPP
/// certificate for `domain` (`xmpp.crt/.key`). Private keys are written with
/// mode 0600. `extra_sans` are added to every node and XMPP certificate.
///
/// Refuses to run when `out_dir/ca.key` exists: replacing a cluster CA cuts
/// every running node off from the new ones.
pub fn write_cluster_certs(
    out_dir: &Path,
    node_ids: &[u64],
    domain: &str,
    extra_sans: &[String],
) -> Result<ClusterCertFiles, CertError> {
    if node_ids.is_empty() {
        return Err(CertError::NoNodes);
    }
    let ca_key = out_dir.join("ca.key");
    if ca_key.exists() {
        return Err(CertError::AlreadyExists(ca_key));
    }
    fs::create_dir_all(out_dir).map_err(|source| CertError::Io {
        path: out_dir.to_owned(),
        source,
    })?;

    let ca = ClusterCa::generate()?;
    let ca_cert = write_pair(out_dir, "ca", ca.pem())?;
    let mut nodes = Vec::with_capacity(node_ids.len());
    for &id in node_ids {
        let (cert, key) = write_pair(
            out_dir,
            &format!("node-{id}"),
            &ca.issue_node(id, extra_sans)?,
        )?;
        nodes.push((id, cert, key));
    }
    let (xmpp_cert, xmpp_key) = write_pair(out_dir, "xmpp", &ca.issue_xmpp(domain, extra_sans)?)?;
    Ok(ClusterCertFiles {
        ca_cert: ca_cert.0,
        ca_key: ca_cert.1,
        nodes,
        xmpp_cert,
        xmpp_key,
    })
}

fn write_pair(dir: &Path, stem: &str, pair: &PemPair) -> Result<(PathBuf, PathBuf), CertError> {
    let cert = dir.join(format!("{stem}.crt"));
    let key = dir.join(format!("{stem}.key"));
    write_file(&cert, pair.cert_pem.as_bytes(), 0o644)?;
    write_file(&key, pair.key_pem.as_bytes(), 0o600)?;
    Ok((cert, key))
}

fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), CertError> {
    let io_err = |source| CertError::Io {
        path: path.to_owned(),
        source,
    };
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Set at creation, so the key is never readable by others, not even
        // between create and a later chmod.
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path).map_err(io_err)?;
    file.write_all(contents).map_err(io_err)?;
    file.sync_all().map_err(io_err)
}

/// What a node needs to join the mesh's mutual TLS: the cluster CA (the only
/// trust root), its own certificate chain and its private key.
#[derive(Debug)]
pub struct NodeIdentity {
    pub ca: Vec<CertificateDer<'static>>,
    pub cert_chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Clone for NodeIdentity {
    fn clone(&self) -> Self {
        Self {
            ca: self.ca.clone(),
            cert_chain: self.cert_chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

/// Which of a node identity's three PEM inputs is meant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdentityPart {
    CaCertificate,
    Certificate,
    PrivateKey,
}

impl std::fmt::Display for IdentityPart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::CaCertificate => "CA certificate",
            Self::Certificate => "certificate",
            Self::PrivateKey => "private key",
        })
    }
}

/// One PEM input of a node identity is unusable.
#[derive(Debug, thiserror::Error)]
#[error("not a usable PEM {part}: {reason}")]
pub struct PemError {
    pub part: IdentityPart,
    pub reason: String,
}

impl NodeIdentity {
    /// Loads the identity from the PEM files named in the `[mesh]` config.
    pub fn from_pem_files(ca: &Path, cert: &Path, key: &Path) -> Result<Self, CertError> {
        Self::from_pem(&read(ca)?, &read(cert)?, &read(key)?).map_err(|source| {
            let path = match source.part {
                IdentityPart::CaCertificate => ca,
                IdentityPart::Certificate => cert,
                IdentityPart::PrivateKey => key,
            };
            CertError::Pem {
                path: path.to_owned(),
                source,
            }
        })
    }

    /// Parses the identity from PEM text already in memory.
    pub fn from_pem(ca_pem: &[u8], cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, PemError> {
        let certs = |part: IdentityPart, pem: &[u8]| {
            let error = |reason: String| PemError { part, reason };
            let list = CertificateDer::pem_slice_iter(pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| error(e.to_string()))?;
            if list.is_empty() {
                return Err(error("no CERTIFICATE block".to_owned()));
            }
            Ok(list)
        };
        Ok(Self {
            ca: certs(IdentityPart::CaCertificate, ca_pem)?,
            cert_chain: certs(IdentityPart::Certificate, cert_pem)?,
            key: PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| PemError {
                part: IdentityPart::PrivateKey,
                reason: e.to_string(),
            })?,
        })
    }
}

fn read(path: &Path) -> Result<Vec<u8>, CertError> {
    fs::read(path).map_err(|source| CertError::Io {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_certs_are_written_with_private_keys_readable_by_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("certs");
        let files = write_cluster_certs(&out, &[1, 2], "example.org", &[]).unwrap();
        assert_eq!(files.nodes.len(), 2);
        for name in [
            "ca.crt",
            "ca.key",
            "node-1.crt",
            "node-1.key",
            "node-2.key",
            "xmpp.crt",
            "xmpp.key",
        ] {
            assert!(out.join(name).is_file(), "{name} missing");
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for key in ["ca.key", "node-1.key", "xmpp.key"] {
                let mode = fs::metadata(out.join(key)).unwrap().permissions().mode();
                assert_eq!(mode & 0o777, 0o600, "{key} has mode {mode:o}");
            }
        }
        let identity =
            NodeIdentity::from_pem_files(&files.ca_cert, &files.nodes[0].1, &files.nodes[0].2)
                .unwrap();
        assert_eq!(identity.ca.len(), 1);
        assert_eq!(identity.cert_chain.len(), 1);
    }

    #[test]
    fn existing_cluster_ca_is_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        write_cluster_certs(dir.path(), &[1], "example.org", &[]).unwrap();
        let again = write_cluster_certs(dir.path(), &[1], "example.org", &[]);
        assert!(matches!(again, Err(CertError::AlreadyExists(_))));
    }

    #[test]
    fn empty_node_list_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            write_cluster_certs(dir.path(), &[], "example.org", &[]),
            Err(CertError::NoNodes)
        ));
    }

    #[test]
    fn garbage_key_is_reported_as_the_key() {
        let ca = ClusterCa::generate().unwrap();
        let node = ca.issue_node(1, &[]).unwrap();
        let err = NodeIdentity::from_pem(
            ca.pem().cert_pem.as_bytes(),
            node.cert_pem.as_bytes(),
            b"not a key",
        )
        .unwrap_err();
        assert_eq!(err.part, IdentityPart::PrivateKey);
    }
}
