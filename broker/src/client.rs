//! A small XMPP client: the one `vomesh publish` / `vomesh subscribe` and the
//! integration tests use. It speaks exactly what the server requires of any
//! client: STARTTLS (or XEP-0368 direct TLS), SASL SCRAM-SHA-256 (or
//! SCRAM-SHA-1 when a server offers only that, as Prosody's default
//! `internal_hashed` store does), resource binding, then stanzas. One task owns the connection; nothing runs in the
//! background, so a test reads the server's answers in order.

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use jid::{BareJid, FullJid};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::lock;
use crate::sasl::scram::ScramHash;
use crate::xml::{Element, ParseError, ParserLimits, StreamEvent, StreamParser};
use crate::xmpp::ns;

/// Stanzas this client accepts from the server, at most.
const STANZA_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Stanzas kept while an IQ answer is awaited; a server that sends more
/// than this before answering is treated as broken rather than buffered.
const QUEUED_STANZAS_MAX: usize = 100_000;

/// Which server certificates the client trusts.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Certificates signed by these roots (or these self-signed certificates).
    Roots(Vec<CertificateDer<'static>>),
    /// Any certificate: development only (a self-signed dev server).
    AnyCertificate,
}

/// Where and as whom to connect.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub jid: BareJid,
    pub password: String,
    /// `host:port` of the server's STARTTLS (or direct TLS) listener.
    pub server: String,
    pub direct_tls: bool,
    pub resource: Option<String>,
    pub trust: Trust,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {server}")]
    Connect {
        server: String,
        source: std::io::Error,
    },
    #[error("connection lost: {0}")]
    Io(#[from] std::io::Error),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("the server sent malformed XML: {0}")]
    Xml(#[from] ParseError),
    #[error("the server closed the stream{}", .0.as_deref().map(|c| format!(" with <{c}/>")).unwrap_or_default())]
    StreamClosed(Option<String>),
    #[error("authentication failed: {0}")]
    Auth(String),
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
}

/// SaltedPassword values (RFC 5802 §3) this client derived, so that logging
/// in again with the same password, salt and iteration count skips PBKDF2.
/// RFC 5802 §5.1 allows a client to cache them; a client that opens many
/// sessions (a benchmark, a pool) otherwise spends most of its CPU there.
/// A SaltedPassword is as good as the password for this server, so a
/// cache lives only in memory, and only when the caller asks for one.
#[derive(Debug, Clone)]
pub struct ScramCache {
    entries: Arc<Mutex<HashMap<ScramCacheKey, Vec<u8>>>>,
    entries_max: usize,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct ScramCacheKey {
    hash: ScramHash,
    password: String,
    salt: Vec<u8>,
    iterations: u32,
}

impl ScramCache {
    /// An empty cache keeping at most `entries_max` derivations (further
    /// ones are computed and not kept).
    pub fn new(entries_max: usize) -> Self {
        ScramCache {
            entries: Arc::default(),
            entries_max,
        }
    }

    /// How many derivations are cached.
    pub fn len(&self) -> usize {
        lock(&self.entries).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn salted_password(
        &self,
        hash: ScramHash,
        password: &str,
        salt: &[u8],
        iterations: NonZeroU32,
    ) -> Vec<u8> {
        let key = ScramCacheKey {
            hash,
            password: password.to_owned(),
            salt: salt.to_vec(),
            iterations: iterations.get(),
        };
        if let Some(salted) = lock(&self.entries).get(&key) {
            return salted.clone();
        }
        // Derived outside the lock: concurrent first logins may each derive
        // it once, which is cheaper than serialising them.
        let salted = salted_password(hash, password, salt, iterations);
        let mut entries = lock(&self.entries);
        if entries.len() < self.entries_max {
            entries.insert(key, salted.clone());
        }
        salted
    }
}

/// SaltedPassword := Hi(Normalize(password), salt, i) (RFC 5802 §3).
fn salted_password(
    hash: ScramHash,
    password: &str,
    salt: &[u8],
    iterations: NonZeroU32,
) -> Vec<u8> {
    hash.salted_password(password.as_bytes(), salt, iterations.get())
}

/// The SCRAM variant to use among the mechanisms a server offers: the
/// strongest one this client implements.
fn scram_mechanism(features: &Element) -> Result<ScramHash, ClientError> {
    let offered: Vec<String> = features
        .child("mechanisms", ns::SASL)
        .map(|m| m.children().map(Element::text).collect())
        .unwrap_or_default();
    [ScramHash::Sha256, ScramHash::Sha1]
        .into_iter()
        .find(|hash| offered.iter().any(|m| m.trim() == hash.name()))
        .ok_or_else(|| {
            ClientError::Auth(format!(
                "the server offers none of SCRAM-SHA-256, SCRAM-SHA-1 (it offers {offered:?})"
            ))
        })
}

/// The transport before and after TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// An authenticated, bound XMPP session.
pub struct Client {
    io: Box<dyn Io>,
    parser: StreamParser,
    buffer: Vec<u8>,
    /// Stanzas read while waiting for something else (an IQ answer).
    queued: VecDeque<Element>,
    /// Events parsed from one read but not consumed yet.
    pending_events: VecDeque<StreamEvent>,
    jid: FullJid,
    next_id: u64,
}

impl Client {
    /// Connects, secures, authenticates and binds.
    pub async fn connect(config: &ClientConfig) -> Result<Client, ClientError> {
        Client::connect_with(config, None).await
    }

    /// Like [`Client::connect`], reusing (and filling) `scram_cache`.
    pub async fn connect_with(
        config: &ClientConfig,
        scram_cache: Option<&ScramCache>,
    ) -> Result<Client, ClientError> {
        let tcp =
            TcpStream::connect(&config.server)
                .await
                .map_err(|source| ClientError::Connect {
                    server: config.server.clone(),
                    source,
                })?;
        tcp.set_nodelay(true)?;
        let domain = config.jid.domain().as_str().to_owned();
        let connector = tls_connector(&config.trust, config.direct_tls)?;
        let server_name = ServerName::try_from(domain.clone())
            .map_err(|e| ClientError::Tls(format!("{domain} is not a valid server name: {e}")))?;
        let mut client = Client {
            io: Box::new(tcp),
            parser: StreamParser::new(ParserLimits {
                stanza_bytes_max: STANZA_BYTES_MAX,
                depth_max: 256,
                attributes_max: 256,
            }),
            buffer: vec![0; 16 * 1024],
            queued: VecDeque::new(),
            pending_events: VecDeque::new(),
            jid: FullJid::new(&format!("{}/pending", config.jid))
                .map_err(|e| ClientError::Protocol(e.to_string()))?,
            next_id: 0,
        };
        if !config.direct_tls {
            client.open_stream(&domain).await?;
            client
                .write(&Element::new("starttls", ns::TLS).to_xml())
                .await?;
            let proceed = client.next_element().await?;
            if !proceed.is("proceed", ns::TLS) {
                return Err(ClientError::Protocol(format!(
                    "expected <proceed/>, got <{}/>",
                    proceed.name()
                )));
            }
        }
        let plain = std::mem::replace(
            &mut client.io,
            Box::new(tokio::io::join(tokio::io::empty(), tokio::io::sink())),
        );
        let tls: TlsStream<Box<dyn Io>> = connector
            .connect(server_name, plain)
            .await
            .map_err(|e| ClientError::Tls(e.to_string()))?;
        client.io = Box::new(tls);
        client.restart_stream();

        let features = client.open_stream(&domain).await?;
        let hash = scram_mechanism(&features)?;
        client.authenticate(hash, config, scram_cache).await?;
        client.restart_stream();
        client.open_stream(&domain).await?;
        client.bind(config.resource.as_deref()).await?;
        Ok(client)
    }

    /// The bound full JID.
    pub fn jid(&self) -> &FullJid {
        &self.jid
    }

    /// Sends a stanza.
    pub async fn send(&mut self, stanza: &Element) -> Result<(), ClientError> {
        self.write(&stanza.to_stream_xml(ns::CLIENT)).await
    }

    /// Sends `stanzas` in one write, as a client pipelining them does: the
    /// server may read them all at once.
    pub async fn send_all(&mut self, stanzas: &[Element]) -> Result<(), ClientError> {
        let data: String = stanzas
            .iter()
            .map(|stanza| stanza.to_stream_xml(ns::CLIENT))
            .collect();
        self.write(&data).await
    }

    /// Sends an IQ (an `id` is added when missing) and waits for its answer;
    /// other stanzas arriving meanwhile are kept for [`Client::next_stanza`].
    pub async fn iq(&mut self, mut iq: Element) -> Result<Element, ClientError> {
        let id = match iq.attr("id") {
            Some(id) => id.to_owned(),
            None => {
                self.next_id += 1;
                let id = format!("c{}", self.next_id);
                iq.set_attr("id", id.clone());
                id
            }
        };
        self.send(&iq).await?;
        loop {
            let stanza = self.next_element().await?;
            if stanza.name() == "iq"
                && stanza.attr("id") == Some(id.as_str())
                && matches!(stanza.attr("type"), Some("result" | "error"))
            {
                return Ok(stanza);
            }
            if self.queued.len() >= QUEUED_STANZAS_MAX {
                return Err(ClientError::Protocol(format!(
                    "more than {QUEUED_STANZAS_MAX} stanzas arrived before the answer to IQ {id}"
                )));
            }
            self.queued.push_back(stanza);
        }
    }

    /// The next stanza from the server.
    pub async fn next_stanza(&mut self) -> Result<Element, ClientError> {
        match self.queued.pop_front() {
            Some(stanza) => Ok(stanza),
            None => self.next_element().await,
        }
    }

    /// Gives up the XML layer and returns the secured byte stream, for a
    /// reader that only scans what arrives (a load generator counting
    /// notifications without building their trees). Stanzas already parsed
    /// and bytes the parser holds of an incomplete stanza are dropped: call
    /// it when the server has nothing in flight to this session.
    pub fn into_transport(self) -> Box<dyn Io> {
        self.io
    }

    /// Closes the stream politely and waits for the server's closing tag.
    pub async fn close(mut self) -> Result<(), ClientError> {
        self.write("</stream:stream>").await?;
        loop {
            match self.next_event().await {
                Ok(StreamEvent::End) | Err(ClientError::StreamClosed(None)) => return Ok(()),
                Ok(_) => continue,
                Err(error) => return Err(error),
            }
        }
    }

    async fn open_stream(&mut self, domain: &str) -> Result<Element, ClientError> {
        self.write(&format!(
            "<?xml version='1.0'?><stream:stream xmlns='{}' xmlns:stream='{}' to='{domain}' version='1.0'>",
            ns::CLIENT,
            ns::STREAMS
        ))
        .await?;
        match self.next_event().await? {
            StreamEvent::Header(_) => {}
            other => {
                return Err(ClientError::Protocol(format!(
                    "expected a stream header, got {other:?}"
                )));
            }
        }
        let features = self.next_element().await?;
        if !features.is("features", ns::STREAMS) {
            return Err(ClientError::Protocol(format!(
                "expected features, got <{}/>",
                features.name()
            )));
        }
        Ok(features)
    }

    /// SASL SCRAM-SHA-256 (RFC 7677) or SCRAM-SHA-1 (RFC 5802), verifying
    /// the server's signature too.
    async fn authenticate(
        &mut self,
        hash: ScramHash,
        config: &ClientConfig,
        scram_cache: Option<&ScramCache>,
    ) -> Result<(), ClientError> {
        let username = config
            .jid
            .node()
            .ok_or_else(|| ClientError::Auth("the JID has no localpart".into()))?
            .as_str()
            .replace('=', "=3D")
            .replace(',', "=2C");
        let mut nonce = [0u8; 18];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce)
            .map_err(|_| ClientError::Auth("no random source".into()))?;
        let client_nonce = BASE64.encode(nonce);
        let client_first_bare = format!("n={username},r={client_nonce}");
        self.write(&format!(
            "<auth xmlns='{}' mechanism='{}'>{}</auth>",
            ns::SASL,
            hash.name(),
            BASE64.encode(format!("n,,{client_first_bare}"))
        ))
        .await?;
        let server_first = self.sasl_data("challenge").await?;
        let field = |name: char| -> Result<&str, ClientError> {
            server_first
                .split(',')
                .find_map(|f| f.strip_prefix(name).and_then(|f| f.strip_prefix('=')))
                .ok_or_else(|| ClientError::Auth(format!("server-first lacks {name}=")))
        };
        let server_nonce = field('r')?;
        if !server_nonce.starts_with(&client_nonce) {
            return Err(ClientError::Auth("the server changed our nonce".into()));
        }
        let salt = BASE64
            .decode(field('s')?)
            .map_err(|_| ClientError::Auth("salt is not base64".into()))?;
        let iterations = field('i')?
            .parse::<u32>()
            .ok()
            .and_then(NonZeroU32::new)
            .ok_or_else(|| ClientError::Auth("bad iteration count".into()))?;
        let salted = match scram_cache {
            Some(cache) => cache.salted_password(hash, &config.password, &salt, iterations),
            None => salted_password(hash, &config.password, &salt, iterations),
        };
        let client_final = hash.client_final(
            &salted,
            "n,,",
            &client_first_bare,
            &server_first,
            server_nonce,
        );
        self.write(&format!(
            "<response xmlns='{}'>{}</response>",
            ns::SASL,
            BASE64.encode(&client_final.message)
        ))
        .await?;
        if self.sasl_data("success").await? != client_final.server_final {
            return Err(ClientError::Auth("the server's signature is wrong".into()));
        }
        Ok(())
    }

    /// The decoded content of the SASL element `expected`, or the failure.
    async fn sasl_data(&mut self, expected: &str) -> Result<String, ClientError> {
        let element = self.next_element().await?;
        if element.is("failure", ns::SASL) {
            let condition = element
                .children()
                .next()
                .map(|c| c.name().to_owned())
                .unwrap_or_default();
            return Err(ClientError::Auth(condition));
        }
        if !element.is(expected, ns::SASL) {
            return Err(ClientError::Protocol(format!(
                "expected <{expected}/>, got <{}/>",
                element.name()
            )));
        }
        let decoded = BASE64
            .decode(element.text().trim())
            .map_err(|_| ClientError::Auth("SASL data is not base64".into()))?;
        String::from_utf8(decoded).map_err(|_| ClientError::Auth("SASL data is not UTF-8".into()))
    }

    async fn bind(&mut self, resource: Option<&str>) -> Result<(), ClientError> {
        let mut bind = Element::new("bind", ns::BIND);
        if let Some(resource) = resource {
            bind.push_child(Element::new("resource", ns::BIND).with_text(resource));
        }
        let answer = self
            .iq(Element::new("iq", ns::CLIENT)
                .with_attr("type", "set")
                .with_child(bind))
            .await?;
        let jid = answer
            .child("bind", ns::BIND)
            .and_then(|b| b.child("jid", ns::BIND))
            .map(Element::text)
            .ok_or_else(|| ClientError::Protocol(format!("bind failed: {}", answer.to_xml())))?;
        self.jid = FullJid::new(&jid)
            .map_err(|e| ClientError::Protocol(format!("bound JID {jid}: {e}")))?;
        Ok(())
    }

    /// After TLS and after SASL success a new stream begins (RFC 6120
    /// §5.4.3.3, §6.4.6): nothing parsed before belongs to it.
    fn restart_stream(&mut self) {
        self.parser.reset();
        self.pending_events.clear();
    }

    async fn next_element(&mut self) -> Result<Element, ClientError> {
        match self.next_event().await? {
            StreamEvent::Stanza(element) if element.is("error", ns::STREAMS) => Err(
                ClientError::StreamClosed(element.children().next().map(|c| c.name().to_owned())),
            ),
            StreamEvent::Stanza(element) => Ok(element),
            StreamEvent::End => Err(ClientError::StreamClosed(None)),
            StreamEvent::Header(_) => Err(ClientError::Protocol("unexpected stream header".into())),
        }
    }

    async fn next_event(&mut self) -> Result<StreamEvent, ClientError> {
        let mut events = Vec::new();
        loop {
            if let Some(event) = self.pending_events.pop_front() {
                return Ok(event);
            }
            let n = self.io.read(&mut self.buffer).await?;
            if n == 0 {
                return Err(ClientError::StreamClosed(None));
            }
            self.parser.push(&self.buffer[..n], &mut events)?;
            self.pending_events.extend(events.drain(..));
        }
    }

    async fn write(&mut self, data: &str) -> Result<(), ClientError> {
        self.io.write_all(data.as_bytes()).await?;
        self.io.flush().await?;
        Ok(())
    }
}

fn tls_connector(trust: &Trust, direct_tls: bool) -> Result<TlsConnector, ClientError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls(e.to_string()))?;
    let mut config = match trust {
        Trust::Roots(roots) => {
            let mut store = rustls::RootCertStore::empty();
            for root in roots {
                store
                    .add(root.clone())
                    .map_err(|e| ClientError::Tls(e.to_string()))?;
            }
            builder.with_root_certificates(store).with_no_client_auth()
        }
        Trust::AnyCertificate => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
            .with_no_client_auth(),
    };
    if direct_tls {
        // XEP-0368 §3: direct TLS connections announce ALPN "xmpp-client".
        config.alpn_protocols = vec![b"xmpp-client".to_vec()];
    }
    Ok(TlsConnector::from(Arc::new(config)))
}

/// Accepts any server certificate, still checking handshake signatures:
/// for development servers with a self-signed certificate.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iterations(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    #[test]
    fn cached_salted_password_equals_a_fresh_derivation() {
        let cache = ScramCache::new(8);
        let fresh = salted_password(ScramHash::Sha256, "pencil", b"salt", iterations(4096));
        assert_eq!(
            cache.salted_password(ScramHash::Sha256, "pencil", b"salt", iterations(4096)),
            fresh
        );
        assert_eq!(cache.len(), 1);
        // The second answer comes from the cache and is the same.
        assert_eq!(
            cache.salted_password(ScramHash::Sha256, "pencil", b"salt", iterations(4096)),
            fresh
        );
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn hash_password_salt_and_iterations_each_key_the_cache() {
        let cache = ScramCache::new(8);
        let base = cache.salted_password(ScramHash::Sha256, "pencil", b"salt", iterations(4096));
        let other_password =
            cache.salted_password(ScramHash::Sha256, "pen", b"salt", iterations(4096));
        let other_salt =
            cache.salted_password(ScramHash::Sha256, "pencil", b"salt2", iterations(4096));
        let other_count =
            cache.salted_password(ScramHash::Sha256, "pencil", b"salt", iterations(4097));
        let other_hash =
            cache.salted_password(ScramHash::Sha1, "pencil", b"salt", iterations(4096));
        assert_eq!(cache.len(), 5);
        assert_ne!(base, other_hash);
        assert_ne!(base, other_password);
        assert_ne!(base, other_salt);
        assert_ne!(base, other_count);
    }

    #[test]
    fn the_strongest_offered_scram_variant_is_chosen() {
        let features = |mechanisms: &[&str]| {
            let mut list = Element::new("mechanisms", ns::SASL);
            for m in mechanisms {
                list.push_child(Element::new("mechanism", ns::SASL).with_text(*m));
            }
            Element::new("features", ns::STREAMS).with_child(list)
        };
        let both = features(&["PLAIN", "SCRAM-SHA-1", "SCRAM-SHA-256"]);
        assert_eq!(scram_mechanism(&both).ok(), Some(ScramHash::Sha256));
        let prosody = features(&["SCRAM-SHA-1", "PLAIN"]);
        assert_eq!(scram_mechanism(&prosody).ok(), Some(ScramHash::Sha1));
        assert!(scram_mechanism(&features(&["PLAIN"])).is_err());
    }

    #[test]
    fn full_cache_derives_without_keeping() {
        let cache = ScramCache::new(1);
        cache.salted_password(ScramHash::Sha256, "a", b"salt", iterations(1));
        let b = cache.salted_password(ScramHash::Sha256, "b", b"salt", iterations(1));
        assert_eq!(cache.len(), 1);
        assert_eq!(
            b,
            salted_password(ScramHash::Sha256, "b", b"salt", iterations(1))
        );
    }
}
