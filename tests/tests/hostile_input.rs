//! What clients do wrong, against the real binary: each hostile input gets
//! the stream error RFC 6120 §4.9 names, the stream is closed, and the
//! server goes on serving a well-behaved client.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use vomesh_broker::client::Client;
use vomesh_tests::node::{DOMAIN, TestNode};

const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
     xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";

/// Reads until the server closes the connection (or 10 s pass).
async fn read_to_close<S: AsyncRead + Unpin>(io: &mut S) -> String {
    let mut received = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), io.read_to_end(&mut received)).await;
    String::from_utf8_lossy(&received).into_owned()
}

/// Reads until `marker` appeared in what was received.
async fn read_until<S: AsyncRead + Unpin>(io: &mut S, marker: &str) -> String {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    while !String::from_utf8_lossy(&received).contains(marker) {
        let n = tokio::time::timeout(Duration::from_secs(10), io.read(&mut buffer))
            .await
            .expect("the server answers in time")
            .expect("read");
        assert!(
            n > 0,
            "closed before {marker}: {}",
            String::from_utf8_lossy(&received)
        );
        received.extend_from_slice(&buffer[..n]);
    }
    String::from_utf8_lossy(&received).into_owned()
}

/// A plaintext connection that has received the stream features.
async fn plain(node: &TestNode) -> TcpStream {
    let mut tcp = TcpStream::connect(node.xmpp).await.expect("connect");
    tcp.write_all(HEADER.as_bytes()).await.expect("write");
    read_until(&mut tcp, "</stream:features>").await;
    tcp
}

/// A connection secured with STARTTLS, on a new stream that offered SASL.
async fn secured(node: &TestNode) -> impl AsyncRead + AsyncWrite + Unpin {
    let mut tcp = plain(node).await;
    tcp.write_all(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        .await
        .expect("write");
    read_until(&mut tcp, "<proceed").await;
    let mut roots = rustls::RootCertStore::empty();
    for cert in node.certificate() {
        roots.add(cert).expect("a valid certificate");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(DOMAIN).expect("a name"), tcp)
        .await
        .expect("TLS handshake");
    tls.write_all(HEADER.as_bytes()).await.expect("write");
    read_until(&mut tls, "</stream:features>").await;
    tls
}

/// Sends `bytes` on a secured stream and returns everything until close.
async fn send_secured(node: &TestNode, bytes: &[u8]) -> String {
    let mut tls = secured(node).await;
    tls.write_all(bytes).await.expect("write");
    read_to_close(&mut tls).await
}

fn stream_error(condition: &str) -> String {
    format!("<stream:error><{condition} xmlns=\"urn:ietf:params:xml:ns:xmpp-streams\"/>")
}

/// The node still logs a good client in and answers it.
async fn still_serves(node: &TestNode) {
    let mut client = Client::connect(&node.client_config("alice", "wonderland"))
        .await
        .expect("a good client logs in");
    let ping = vomesh_broker::xml::Element::new("iq", vomesh_broker::xmpp::ns::CLIENT)
        .with_attr("type", "get")
        .with_child(vomesh_broker::xml::Element::new(
            "ping",
            vomesh_broker::xmpp::ns::PING,
        ));
    assert_eq!(
        client.iq(ping).await.expect("ping").attr("type"),
        Some("result")
    );
}

fn node() -> TestNode {
    let node = TestNode::start_with(
        "max_stanza_bytes = 10000\nstream_open_timeout_secs = 2\nauth_failures_free = 2",
    );
    node.add_user("alice", "wonderland");
    node
}

#[tokio::test]
async fn malformed_xml_is_not_well_formed() {
    let node = node();
    let answer = send_secured(&node, b"<message><body>unclosed</message>").await;
    assert!(
        answer.contains(&stream_error("not-well-formed")),
        "{answer}"
    );
    assert!(answer.ends_with("</stream:stream>"), "{answer}");
    still_serves(&node).await;
}

#[tokio::test]
async fn oversize_stanza_is_policy_violation_before_it_ends() {
    let node = node();
    // Never closed: the server must not wait for the end to refuse it.
    let mut huge = b"<message><body>".to_vec();
    huge.extend(std::iter::repeat_n(b'x', 20_000));
    let answer = send_secured(&node, &huge).await;
    assert!(
        answer.contains(&stream_error("policy-violation")),
        "{answer}"
    );
    still_serves(&node).await;
}

#[tokio::test]
async fn entity_bomb_is_restricted_xml() {
    let node = node();
    let mut tcp = TcpStream::connect(node.xmpp).await.expect("connect");
    let bomb = "<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol \"lol\"><!ENTITY lol2 \"&lol;&lol;&lol;&lol;\">]>";
    tcp.write_all(bomb.as_bytes()).await.expect("write");
    let answer = read_to_close(&mut tcp).await;
    assert!(answer.contains(&stream_error("restricted-xml")), "{answer}");
    still_serves(&node).await;
}

#[tokio::test]
async fn wrong_host_is_host_unknown() {
    let node = node();
    let mut tcp = TcpStream::connect(node.xmpp).await.expect("connect");
    tcp.write_all(
        HEADER
            .replace("to='localhost'", "to='example.net'")
            .as_bytes(),
    )
    .await
    .expect("write");
    let answer = read_to_close(&mut tcp).await;
    assert!(answer.contains(&stream_error("host-unknown")), "{answer}");
}

#[tokio::test]
async fn wrong_namespace_is_invalid_namespace() {
    let node = node();
    let mut tcp = TcpStream::connect(node.xmpp).await.expect("connect");
    tcp.write_all(HEADER.replace("jabber:client", "jabber:server").as_bytes())
        .await
        .expect("write");
    let answer = read_to_close(&mut tcp).await;
    assert!(
        answer.contains(&stream_error("invalid-namespace")),
        "{answer}"
    );
}

#[tokio::test]
async fn auth_before_tls_is_refused_and_plain_is_never_offered() {
    let node = node();
    let mut tcp = TcpStream::connect(node.xmpp).await.expect("connect");
    tcp.write_all(HEADER.as_bytes()).await.expect("write");
    let features = read_until(&mut tcp, "</stream:features>").await;
    assert!(features.contains("<required/>"), "{features}");
    assert!(!features.contains("PLAIN"), "{features}");
    // "\0alice\0wonderland"
    tcp.write_all(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHdvbmRlcmxhbmQ=</auth>")
        .await
        .expect("write");
    let answer = read_until(&mut tcp, "</failure>").await;
    assert!(answer.contains("<encryption-required/>"), "{answer}");
    still_serves(&node).await;
}

#[tokio::test]
async fn stanza_before_authentication_is_not_authorized() {
    let node = node();
    let answer = send_secured(
        &node,
        b"<message to='alice@localhost'><body>hi</body></message>",
    )
    .await;
    assert!(answer.contains(&stream_error("not-authorized")), "{answer}");
}

#[tokio::test]
async fn silent_connection_times_out() {
    let node = node();
    let mut tcp = TcpStream::connect(node.xmpp).await.expect("connect");
    let answer = read_to_close(&mut tcp).await;
    assert!(
        answer.contains(&stream_error("connection-timeout")),
        "{answer}"
    );
    still_serves(&node).await;
}

#[tokio::test]
async fn repeated_wrong_passwords_trigger_the_backoff() {
    let node = node();
    let plain_auth = |password: &str| {
        use base64::Engine as _;
        let message =
            base64::engine::general_purpose::STANDARD.encode(format!("\0alice\0{password}"));
        format!("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{message}</auth>")
    };
    let mut tls = secured(&node).await;
    // Two free failures, then the address must wait, even with the right
    // password.
    for _ in 0..2 {
        tls.write_all(plain_auth("guess").as_bytes())
            .await
            .expect("write");
        let answer = read_until(&mut tls, "</failure>").await;
        assert!(answer.contains("<not-authorized/>"), "{answer}");
    }
    let mut tls = secured(&node).await;
    tls.write_all(plain_auth("guess").as_bytes())
        .await
        .expect("write");
    read_until(&mut tls, "</failure>").await;
    tls.write_all(plain_auth("wonderland").as_bytes())
        .await
        .expect("write");
    let answer = read_until(&mut tls, "</failure>").await;
    assert!(answer.contains("<temporary-auth-failure/>"), "{answer}");
    let metrics = node.metrics();
    assert!(
        metrics.contains("vomesh_auth_failures_total{reason=\"not-authorized\"} 3"),
        "{metrics}"
    );
}
