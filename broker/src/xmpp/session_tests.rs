//! The session state machine driven without sockets: each test feeds inputs
//! and asserts the exact actions, as RFC 6120 describes the exchange.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::*;
use crate::xml::{ParserLimits, StreamParser};

const DOMAIN: &str = "example.org";

struct FakeEnv {
    accounts: HashMap<String, StoredCredentials>,
    next_id: u32,
    backoff: Option<Duration>,
    failures: Vec<SaslCondition>,
}

impl FakeEnv {
    fn new() -> Self {
        let mut accounts = HashMap::new();
        accounts.insert(
            "alice".to_owned(),
            StoredCredentials::derive("wonderland", b"salt-one-sixteen", b"salt-two-sixteen", 64),
        );
        FakeEnv {
            accounts,
            next_id: 0,
            backoff: None,
            failures: Vec::new(),
        }
    }
}

impl SessionEnv for FakeEnv {
    fn random_id(&mut self) -> String {
        self.next_id += 1;
        format!("id{}", self.next_id)
    }
    fn credentials(&self, username: &str) -> Option<StoredCredentials> {
        self.accounts.get(username).cloned()
    }
    fn sasl_server(&mut self, mechanism: Mechanism) -> SaslServer {
        let nonce = self.random_id();
        SaslServer::new(mechanism, &nonce, b"test-key").with_fake_iterations(64)
    }
    fn auth_allowed(&mut self) -> Result<(), Duration> {
        self.backoff.map_or(Ok(()), Err)
    }
    fn auth_failed(&mut self, condition: SaslCondition) {
        self.failures.push(condition);
    }
    fn auth_succeeded(&mut self) {}
}

/// A session plus the parser that turns test XML into inputs.
struct Harness {
    session: Session,
    parser: StreamParser,
    env: FakeEnv,
}

impl Harness {
    fn new(direct_tls: bool) -> Self {
        Harness {
            session: Session::new(SessionSettings {
                domain: DOMAIN.into(),
                pubsub_service: format!("pubsub.{DOMAIN}"),
                direct_tls,
                auth_attempts_max: 3,
            }),
            parser: StreamParser::new(ParserLimits {
                stanza_bytes_max: 10_000,
                depth_max: 16,
                attributes_max: 16,
            }),
            env: FakeEnv::new(),
        }
    }

    /// Feeds client XML; returns every action it caused.
    fn send(&mut self, xml: &str) -> Vec<Action> {
        let mut events = Vec::new();
        let parsed = self.parser.push(xml.as_bytes(), &mut events);
        let mut actions = Vec::new();
        for event in events {
            actions.extend(self.session.handle(Input::Event(event), &mut self.env));
        }
        if let Err(error) = parsed {
            actions.extend(self.session.handle(Input::Malformed(error), &mut self.env));
        }
        for action in &actions {
            if matches!(action, Action::StartTls | Action::RestartStream) {
                self.parser.reset();
            }
        }
        actions
    }

    fn input(&mut self, input: Input) -> Vec<Action> {
        self.session.handle(input, &mut self.env)
    }

    fn open(&mut self) -> Vec<Action> {
        self.send(&format!(
            "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='{DOMAIN}' version='1.0'>"
        ))
    }

    /// TLS up, authenticated with PLAIN, new stream opened.
    fn authenticated(direct_tls: bool) -> Self {
        let mut h = Harness::new(direct_tls);
        h.open();
        h.send(&plain_auth("alice", "wonderland"));
        h.open();
        h
    }

    /// Authenticated and bound to `alice@example.org/phone`.
    fn bound() -> Self {
        let mut h = Harness::authenticated(true);
        h.send("<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>phone</resource></bind></iq>");
        let jid = FullJid::new("alice@example.org/phone").expect("valid jid");
        h.input(Input::Bound(Ok(jid)));
        h
    }
}

fn plain_auth(user: &str, password: &str) -> String {
    let message = BASE64.encode(format!("\0{user}\0{password}"));
    format!("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{message}</auth>")
}

/// Everything the actions send, concatenated.
fn sent(actions: &[Action]) -> String {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(s) => Some(s.as_str()),
            _ => None,
        })
        .collect()
}

fn closed_with(actions: &[Action]) -> Option<&'static str> {
    actions.iter().find_map(|a| match a {
        Action::Close { stream_error } => *stream_error,
        _ => None,
    })
}

#[test]
fn plain_stream_offers_only_required_starttls() {
    let mut h = Harness::new(false);
    let out = sent(&h.open());
    assert!(out.starts_with("<?xml version='1.0'?><stream:stream xmlns='jabber:client'"));
    assert!(out.contains(
        "<stream:features><starttls xmlns=\"urn:ietf:params:xml:ns:xmpp-tls\"><required/></starttls></stream:features>"
    ));
    assert!(!out.contains("mechanism"), "no SASL before TLS: {out}");
}

#[test]
fn auth_before_tls_is_refused_with_encryption_required() {
    let mut h = Harness::new(false);
    h.open();
    let actions = h.send(&plain_auth("alice", "wonderland"));
    assert_eq!(
        sent(&actions),
        "<failure xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\"><encryption-required/></failure>"
    );
    assert!(h.env.failures.is_empty(), "no password was checked");
}

#[test]
fn starttls_proceeds_then_restarts_with_mechanisms() {
    let mut h = Harness::new(false);
    h.open();
    let actions = h.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
    assert_eq!(
        actions,
        vec![
            Action::Send("<proceed xmlns=\"urn:ietf:params:xml:ns:xmpp-tls\"/>".into()),
            Action::StartTls
        ]
    );
    assert!(h.input(Input::TlsEstablished).is_empty());
    let out = sent(&h.open());
    assert!(out.contains(
        "<mechanisms xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\"><mechanism>SCRAM-SHA-256</mechanism><mechanism>SCRAM-SHA-1</mechanism><mechanism>PLAIN</mechanism></mechanisms>"
    ));
    assert!(!out.contains("starttls"));
}

#[test]
fn plain_success_restarts_the_stream_and_offers_bind() {
    let mut h = Harness::new(true);
    h.open();
    let actions = h.send(&plain_auth("alice", "wonderland"));
    assert_eq!(
        actions,
        vec![
            Action::Send("<success xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\"/>".into()),
            Action::RestartStream
        ]
    );
    let out = sent(&h.open());
    assert!(out.contains("<bind xmlns=\"urn:ietf:params:xml:ns:xmpp-bind\"/>"));
}

#[test]
fn scram_sha_256_exchange_sends_a_challenge() {
    let mut h = Harness::new(true);
    h.open();
    let first = BASE64.encode("n,,n=alice,r=clientnonce");
    let actions = h.send(&format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>{first}</auth>"
    ));
    let out = sent(&actions);
    assert!(
        out.starts_with("<challenge xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\">"),
        "{out}"
    );
    let encoded = out
        .trim_start_matches("<challenge xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\">")
        .trim_end_matches("</challenge>");
    let server_first = String::from_utf8(BASE64.decode(encoded).expect("base64")).expect("utf-8");
    assert!(server_first.starts_with("r=clientnonce"), "{server_first}");
    assert!(server_first.contains(",i=64"), "{server_first}");
    let aborted = h.send("<abort xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>");
    assert!(sent(&aborted).contains("<aborted/>"));
}

#[test]
fn wrong_password_fails_and_too_many_failures_close_the_stream() {
    let mut h = Harness::new(true);
    h.open();
    for attempt in 1..=3 {
        let actions = h.send(&plain_auth("alice", "guess"));
        assert!(
            sent(&actions).contains("<not-authorized/>"),
            "attempt {attempt}"
        );
        let expected_close = (attempt == 3).then_some("not-authorized");
        assert_eq!(closed_with(&actions), expected_close, "attempt {attempt}");
    }
    assert_eq!(h.env.failures.len(), 3);
}

#[test]
fn backoff_answers_temporary_auth_failure_without_checking_the_password() {
    let mut h = Harness::new(true);
    h.env.backoff = Some(Duration::from_secs(8));
    h.open();
    let actions = h.send(&plain_auth("alice", "wonderland"));
    let out = sent(&actions);
    assert!(out.contains("<temporary-auth-failure/>"), "{out}");
    assert!(out.contains("retry in 8 s"), "{out}");
    assert!(!actions.contains(&Action::RestartStream));
}

#[test]
fn unknown_mechanism_is_invalid_mechanism() {
    let mut h = Harness::new(true);
    h.open();
    let actions = h.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='DIGEST-MD5'/>");
    assert!(sent(&actions).contains("<invalid-mechanism/>"));
}

#[test]
fn bad_base64_is_incorrect_encoding() {
    let mut h = Harness::new(true);
    h.open();
    let actions =
        h.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>!!!</auth>");
    assert!(sent(&actions).contains("<incorrect-encoding/>"));
}

#[test]
fn wrong_host_is_host_unknown_after_our_header() {
    let mut h = Harness::new(true);
    let actions = h.send(
        "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='other.org' version='1.0'>",
    );
    let out = sent(&actions);
    assert!(out.starts_with("<?xml version='1.0'?><stream:stream"));
    assert!(out.ends_with(
        "<stream:error><host-unknown xmlns=\"urn:ietf:params:xml:ns:xmpp-streams\"/></stream:error></stream:stream>"
    ));
    assert_eq!(closed_with(&actions), Some("host-unknown"));
}

#[test]
fn wrong_content_namespace_is_invalid_namespace() {
    let mut h = Harness::new(true);
    let actions = h.send(
        "<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' to='example.org' version='1.0'>",
    );
    assert_eq!(closed_with(&actions), Some("invalid-namespace"));
}

#[test]
fn missing_version_is_unsupported_version() {
    let mut h = Harness::new(true);
    let actions = h.send(
        "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='example.org'>",
    );
    assert_eq!(closed_with(&actions), Some("unsupported-version"));
}

#[test]
fn stanza_before_authentication_is_not_authorized() {
    let mut h = Harness::new(true);
    h.open();
    let actions = h.send("<message to='bob@example.org'><body>hi</body></message>");
    assert_eq!(closed_with(&actions), Some("not-authorized"));
}

#[test]
fn malformed_xml_sends_header_then_not_well_formed() {
    let mut h = Harness::new(false);
    let actions = h.send("<stream:stream xmlns='jabber:client' <<");
    let out = sent(&actions);
    assert!(
        out.starts_with("<?xml version='1.0'?><stream:stream"),
        "{out}"
    );
    assert_eq!(closed_with(&actions), Some("not-well-formed"));
}

#[test]
fn bind_asks_the_router_then_answers_with_the_full_jid() {
    let mut h = Harness::authenticated(true);
    let actions = h.send(
        "<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>phone</resource></bind></iq>",
    );
    assert_eq!(
        actions,
        vec![Action::Bind {
            username: "alice".into(),
            resource: Some("phone".into())
        }]
    );
    let jid = FullJid::new("alice@example.org/phone").expect("valid jid");
    let actions = h.input(Input::Bound(Ok(jid)));
    assert_eq!(
        sent(&actions),
        "<iq id=\"b1\" from=\"example.org\" type=\"result\"><bind xmlns=\"urn:ietf:params:xml:ns:xmpp-bind\"><jid>alice@example.org/phone</jid></bind></iq>"
    );
    assert!(h.session.is_established());
}

#[test]
fn ping_to_the_server_is_answered() {
    let mut h = Harness::bound();
    let actions =
        h.send("<iq type='get' id='p1' to='example.org'><ping xmlns='urn:xmpp:ping'/></iq>");
    assert_eq!(
        sent(&actions),
        "<iq id=\"p1\" from=\"example.org\" to=\"alice@example.org/phone\" type=\"result\"/>"
    );
}

#[test]
fn disco_items_of_the_server_lists_the_pubsub_service() {
    let mut h = Harness::bound();
    let actions = h.send(
        "<iq type='get' id='d1' to='example.org'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>",
    );
    assert!(sent(&actions).contains("<item jid=\"pubsub.example.org\""));
}

#[test]
fn unknown_iq_to_the_server_is_service_unavailable() {
    let mut h = Harness::bound();
    let actions = h.send("<iq type='get' id='v1'><vCard xmlns='vcard-temp'/></iq>");
    assert!(
        sent(&actions)
            .contains("<service-unavailable xmlns=\"urn:ietf:params:xml:ns:xmpp-stanzas\"/>")
    );
}

#[test]
fn iq_without_payload_is_bad_request() {
    let mut h = Harness::bound();
    let actions = h.send("<iq type='get' id='x1' to='example.org'/>");
    assert!(
        sent(&actions).contains("<bad-request xmlns=\"urn:ietf:params:xml:ns:xmpp-stanzas\"/>")
    );
}

#[test]
fn routed_stanzas_carry_the_stamped_full_jid() {
    let mut h = Harness::bound();
    let actions = h.send("<message from='mallory@example.org/x' to='bob@example.org' id='m1'><body>hi</body></message>");
    let [Action::Route(message)] = actions.as_slice() else {
        panic!("expected one route action, got {actions:?}");
    };
    assert_eq!(message.attr("from"), Some("alice@example.org/phone"));
    assert_eq!(message.attr("to"), Some("bob@example.org"));
}

#[test]
fn initial_and_final_presence_set_availability() {
    let mut h = Harness::bound();
    assert_eq!(h.send("<presence/>"), vec![Action::SetAvailable(true)]);
    assert_eq!(
        h.send("<presence type='unavailable'/>"),
        vec![Action::SetAvailable(false)]
    );
}

#[test]
fn timeout_is_connection_timeout() {
    let mut h = Harness::new(false);
    let actions = h.input(Input::TimedOut);
    assert_eq!(closed_with(&actions), Some("connection-timeout"));
    assert!(h.session.is_closed());
}

#[test]
fn closing_tag_is_answered_and_the_session_goes_unavailable() {
    let mut h = Harness::bound();
    let actions = h.send("</stream:stream>");
    assert_eq!(
        actions,
        vec![
            Action::Send("</stream:stream>".into()),
            Action::SetAvailable(false),
            Action::Close { stream_error: None }
        ]
    );
}

#[test]
fn stream_management_is_offered_with_bind() {
    let mut h = Harness::new(true);
    h.open();
    h.send(&plain_auth("alice", "wonderland"));
    assert!(sent(&h.open()).contains("<sm xmlns=\"urn:xmpp:sm:3\"/>"));
}

#[test]
fn stream_management_before_bind_fails_and_nothing_can_be_resumed() {
    let mut h = Harness::authenticated(true);
    assert_eq!(
        sent(&h.send("<enable xmlns='urn:xmpp:sm:3'/>")),
        "<failed xmlns=\"urn:xmpp:sm:3\"><unexpected-request xmlns=\"urn:ietf:params:xml:ns:xmpp-stanzas\"/></failed>"
    );
    assert_eq!(
        sent(&h.send("<resume xmlns='urn:xmpp:sm:3' previd='x' h='0'/>")),
        "<failed xmlns=\"urn:xmpp:sm:3\"><item-not-found xmlns=\"urn:ietf:params:xml:ns:xmpp-stanzas\"/></failed>"
    );
    assert!(!h.session.is_closed());
}

#[test]
fn enabled_stream_management_counts_stanzas_both_ways() {
    let mut h = Harness::bound();
    // A resume request is answered like any: enabled, without resumption.
    assert_eq!(
        sent(&h.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")),
        "<enabled xmlns=\"urn:xmpp:sm:3\"/>"
    );
    assert_eq!(
        sent(&h.send("<r xmlns='urn:xmpp:sm:3'/>")),
        "<a xmlns=\"urn:xmpp:sm:3\" h=\"0\"/>"
    );
    // Two stanzas in: a ping answered by the session and a routed message.
    h.send("<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>");
    h.send("<message to='bob@example.org'><body>hi</body></message>");
    assert_eq!(
        sent(&h.send("<r xmlns='urn:xmpp:sm:3'/>")),
        "<a xmlns=\"urn:xmpp:sm:3\" h=\"2\"/>"
    );
    // One stanza out (the ping's result) plus two the router delivered.
    h.session.on_stanzas_sent(2);
    assert!(h.send("<a xmlns='urn:xmpp:sm:3' h='3'/>").is_empty());
    assert_eq!(
        sent(&h.send("<enable xmlns='urn:xmpp:sm:3'/>")),
        "<failed xmlns=\"urn:xmpp:sm:3\"><unexpected-request xmlns=\"urn:ietf:params:xml:ns:xmpp-stanzas\"/></failed>"
    );
}

#[test]
fn acknowledging_more_than_was_sent_is_a_stream_error() {
    let mut h = Harness::bound();
    h.send("<enable xmlns='urn:xmpp:sm:3'/>");
    let actions = h.send("<a xmlns='urn:xmpp:sm:3' h='5'/>");
    assert!(
        sent(&actions)
            .contains("<handled-count-too-high xmlns=\"urn:xmpp:sm:3\" h=\"5\" send-count=\"0\"/>"),
        "{}",
        sent(&actions)
    );
    assert_eq!(closed_with(&actions), Some("undefined-condition"));
}

#[test]
fn acks_without_stream_management_are_refused() {
    let mut h = Harness::bound();
    let actions = h.send("<r xmlns='urn:xmpp:sm:3'/>");
    assert_eq!(closed_with(&actions), Some("unsupported-stanza-type"));
}
