//! One client-to-server XMPP session (RFC 6120) as a pure state machine.
//!
//! The connection task feeds it [`Input`]s (parsed stream events, the end of
//! a TLS handshake, the answer to a bind request, a timeout) and performs the
//! [`Action`]s it returns, in order. The session never touches a socket, a
//! clock or shared state; the few things it must ask the outside world
//! (credentials, random ids, the per-IP back-off) go through [`SessionEnv`].
//! That keeps every negotiation step testable without sockets.
//!
//! The negotiation it enforces (RFC 6120 §5, §6, §7):
//! plain stream → STARTTLS (required; no SASL mechanism is offered before
//! TLS) → new stream → SASL (SCRAM-SHA-256, SCRAM-SHA-1, PLAIN) → new
//! stream → resource binding → stanzas; XEP-0198 acknowledgements once the
//! client enables them (see [`super::stream_management`]).

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use jid::{BareJid, FullJid, Jid};

use super::ns;
use super::stanza::{self, Condition, IqKind, StanzaError, StanzaKind};
use super::stream_management::{self as sm, Counters};
use crate::sasl::{Mechanism, SaslCondition, SaslServer, SaslStep, StoredCredentials};
use crate::xml::{Element, ParseError, StreamEvent, StreamHeader};

/// Mechanisms offered after TLS, strongest first (RFC 7677 §4 asks servers
/// to offer SCRAM-SHA-256).
const MECHANISMS: [Mechanism; 3] = [
    Mechanism::ScramSha256,
    Mechanism::ScramSha1,
    Mechanism::Plain,
];

/// Fixed settings of a session.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    /// The XMPP domain this server serves.
    pub domain: String,
    /// The JID of the pubsub service, listed in the server's disco#items.
    pub pubsub_service: String,
    /// The connection began with TLS (XEP-0368 direct TLS): no STARTTLS step.
    pub direct_tls: bool,
    /// Failed SASL attempts allowed on one stream before it is closed
    /// (RFC 6120 §6.4.5 asks for "at least 2 and no more than 5").
    pub auth_attempts_max: u32,
}

/// What the world tells the session.
#[derive(Debug)]
pub enum Input {
    /// A stream header, a stanza or the end of the client's stream.
    Event(StreamEvent),
    /// The client's bytes are not acceptable XML (parser limits included).
    Malformed(ParseError),
    /// The TLS handshake requested by [`Action::StartTls`] completed.
    TlsEstablished,
    /// The answer to [`Action::Bind`].
    Bound(Result<FullJid, StanzaError>),
    /// The client did not open or authenticate its stream in time, or
    /// stayed silent past the idle limit.
    TimedOut,
    /// The server is shutting down.
    Shutdown,
    /// The connection cannot keep up with what it is sent.
    SlowConsumer,
}

/// What the session asks the connection task to do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Write these bytes to the client.
    Send(String),
    /// Flush what was sent, then run the server side of a TLS handshake and
    /// feed [`Input::TlsEstablished`]; the parser starts a new stream.
    StartTls,
    /// SASL succeeded: the parser starts a new stream (RFC 6120 §6.4.6).
    RestartStream,
    /// Register `username`'s resource with the router (`None`: the server
    /// picks one) and feed the answer back as [`Input::Bound`].
    Bind {
        username: String,
        resource: Option<String>,
    },
    /// The session's initial or final presence changed: route bare-JID
    /// traffic to it or stop.
    SetAvailable(bool),
    /// Deliver this stanza (its `from` already stamped with the session's
    /// full JID) to its recipient.
    Route(Element),
    /// Close the connection once everything before this is written;
    /// `stream_error` names the condition when it closes on an error.
    Close { stream_error: Option<&'static str> },
}

/// Queries the session needs answered by the world around it.
pub trait SessionEnv {
    /// A fresh unguessable identifier (stream ids, SCRAM nonces, resources).
    fn random_id(&mut self) -> String;
    /// A new SASL exchange with a fresh nonce, answering unknown users
    /// exactly as known ones (same iteration count, stable fake salt).
    fn sasl_server(&mut self, mechanism: Mechanism) -> SaslServer;
    /// The stored credentials of a local account.
    fn credentials(&self, username: &str) -> Option<StoredCredentials>;
    /// `Err(retry_after)` while this client's address must wait before
    /// trying another password.
    fn auth_allowed(&mut self) -> Result<(), Duration>;
    fn auth_failed(&mut self, condition: SaslCondition);
    fn auth_succeeded(&mut self);
}

#[derive(Debug)]
enum Phase {
    /// Waiting for the client's stream header.
    AwaitingHeader,
    /// Features sent; waiting for `<starttls/>`, `<auth/>` or `<bind/>`.
    Negotiating,
    /// `<proceed/>` sent; nothing more is read until TLS is up.
    AwaitingTls,
    Authenticating(Box<SaslServer>),
    /// The bind request went to the router; its IQ id waits for the answer.
    AwaitingBind(Element),
    Established(FullJid),
    Closed,
}

/// The state of one client session.
#[derive(Debug)]
pub struct Session {
    settings: SessionSettings,
    phase: Phase,
    tls: bool,
    /// Our stream header was sent on the current stream (needed before a
    /// stream error can be, RFC 6120 §4.9.1.1).
    header_sent: bool,
    username: Option<String>,
    auth_failures: u32,
    /// XEP-0198 counters, once the client enabled stream management.
    stream_management: Option<Counters>,
}

impl Session {
    pub fn new(settings: SessionSettings) -> Self {
        let tls = settings.direct_tls;
        Session {
            settings,
            phase: Phase::AwaitingHeader,
            tls,
            header_sent: false,
            username: None,
            auth_failures: 0,
            stream_management: None,
        }
    }

    /// The connection wrote `count` stanzas routed to this session (the
    /// session's own replies are counted as it makes them), for the XEP-0198
    /// count the client acknowledges.
    pub fn on_stanzas_sent(&mut self, count: u32) {
        if let Some(counters) = &mut self.stream_management {
            counters.on_stanzas_sent(count);
        }
    }

    /// The full JID once a resource is bound.
    pub fn jid(&self) -> Option<&FullJid> {
        match &self.phase {
            Phase::Established(jid) => Some(jid),
            _ => None,
        }
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    /// True once a resource is bound: the stream-open deadline no longer
    /// applies, only the idle one.
    pub fn is_established(&self) -> bool {
        matches!(self.phase, Phase::Established(_))
    }

    /// Feeds one input; returns the actions to perform, in order.
    pub fn handle(&mut self, input: Input, env: &mut dyn SessionEnv) -> Vec<Action> {
        let mut out = Vec::new();
        if self.is_closed() {
            return out;
        }
        match input {
            Input::Event(StreamEvent::Header(header)) => self.on_header(header, env, &mut out),
            Input::Event(StreamEvent::Stanza(element)) => self.on_element(element, env, &mut out),
            Input::Event(StreamEvent::End) => {
                // RFC 6120 §4.4: answer the closing tag with ours, then close.
                if !self.header_sent {
                    self.send_header(env, &mut out);
                }
                out.push(Action::Send("</stream:stream>".into()));
                self.close(None, &mut out);
            }
            Input::Malformed(error) => {
                self.stream_error(error.condition(), Some(&error.to_string()), env, &mut out)
            }
            Input::TlsEstablished => {
                self.tls = true;
                self.header_sent = false;
                self.phase = Phase::AwaitingHeader;
            }
            Input::Bound(result) => self.on_bound(result, &mut out),
            Input::TimedOut => self.stream_error("connection-timeout", None, env, &mut out),
            Input::Shutdown => self.stream_error("system-shutdown", None, env, &mut out),
            Input::SlowConsumer => self.stream_error(
                "policy-violation",
                Some("too many stanzas queued for this client; it is not reading"),
                env,
                &mut out,
            ),
        }
        out
    }

    fn on_header(&mut self, header: StreamHeader, env: &mut dyn SessionEnv, out: &mut Vec<Action>) {
        if !matches!(self.phase, Phase::AwaitingHeader) {
            return self.stream_error("not-well-formed", None, env, out);
        }
        // RFC 6120 §4.9.1.3: errors in the header are reported after we open
        // our own stream.
        self.send_header(env, out);
        if header.stream_ns != ns::STREAMS {
            return self.stream_error("invalid-namespace", Some("stream namespace"), env, out);
        }
        if header.content_ns.as_deref() != Some(ns::CLIENT) {
            return self.stream_error(
                "invalid-namespace",
                Some("the content namespace of a client stream is jabber:client"),
                env,
                out,
            );
        }
        if let Some(to) = header.to.as_deref()
            && !same_domain(to, &self.settings.domain)
        {
            return self.stream_error("host-unknown", None, env, out);
        }
        // RFC 6120 §4.7.5: no version means a pre-1.0 client.
        let major = header
            .version
            .as_deref()
            .and_then(|v| v.split('.').next())
            .and_then(|m| m.parse::<u32>().ok());
        if major != Some(1) {
            return self.stream_error("unsupported-version", None, env, out);
        }
        out.push(Action::Send(self.features()));
        self.phase = Phase::Negotiating;
    }

    fn send_header(&mut self, env: &mut dyn SessionEnv, out: &mut Vec<Action>) {
        out.push(Action::Send(format!(
            "<?xml version='1.0'?><stream:stream xmlns='{}' xmlns:stream='{}' id='{}' from='{}' version='1.0' xml:lang='en'>",
            ns::CLIENT,
            ns::STREAMS,
            env.random_id(),
            self.settings.domain
        )));
        self.header_sent = true;
    }

    /// The features of the current stream (RFC 6120 §4.3.2).
    fn features(&self) -> String {
        let inner = if !self.tls {
            // TLS is mandatory: only STARTTLS is offered, so credentials
            // never cross the network in the clear (RFC 6120 §5.3.1).
            Element::new("starttls", ns::TLS).with_child(Element::new("required", ns::TLS))
        } else if self.username.is_none() {
            let mut mechanisms = Element::new("mechanisms", ns::SASL);
            for mechanism in MECHANISMS {
                mechanisms
                    .push_child(Element::new("mechanism", ns::SASL).with_text(mechanism.name()));
            }
            mechanisms
        } else {
            Element::new("bind", ns::BIND)
        };
        let mut features = format!("<stream:features>{}", inner.to_xml());
        if self.tls && self.username.is_some() {
            features.push_str(
                &Element::new("session", ns::SESSION)
                    .with_child(Element::new("optional", ns::SESSION))
                    .to_xml(),
            );
            features.push_str(&Element::new("sm", ns::SM).to_xml());
        }
        features.push_str("</stream:features>");
        features
    }

    fn on_element(&mut self, element: Element, env: &mut dyn SessionEnv, out: &mut Vec<Action>) {
        match std::mem::replace(&mut self.phase, Phase::Closed) {
            Phase::Negotiating => {
                self.phase = Phase::Negotiating;
                self.negotiate(element, env, out);
            }
            Phase::Authenticating(sasl) => self.continue_sasl(sasl, element, env, out),
            Phase::Established(jid) => {
                self.phase = Phase::Established(jid.clone());
                if element.ns() == ns::SM {
                    return self.on_stream_management(element, env, out);
                }
                if let Some(counters) = &mut self.stream_management {
                    counters.on_stanza_received();
                }
                self.on_stanza(&jid, element, env, out);
            }
            phase @ (Phase::AwaitingHeader | Phase::AwaitingTls | Phase::AwaitingBind(_)) => {
                self.phase = phase;
                let condition = if matches!(self.phase, Phase::AwaitingBind(_)) {
                    "not-authorized"
                } else {
                    "not-well-formed"
                };
                self.stream_error(condition, None, env, out);
            }
            Phase::Closed => {}
        }
    }

    /// Elements allowed before a resource is bound.
    fn negotiate(&mut self, element: Element, env: &mut dyn SessionEnv, out: &mut Vec<Action>) {
        match (element.name(), element.ns()) {
            ("starttls", ns::TLS) if !self.tls => {
                out.push(Action::Send(Element::new("proceed", ns::TLS).to_xml()));
                out.push(Action::StartTls);
                self.phase = Phase::AwaitingTls;
            }
            ("auth", ns::SASL) if !self.tls => {
                self.sasl_failure(SaslCondition::EncryptionRequired, None, out);
            }
            ("auth", ns::SASL) if self.username.is_none() => self.start_sasl(element, env, out),
            ("iq", ns::CLIENT) if self.username.is_some() => self.bind(element, out),
            // XEP-0198 §3: enabling waits for a bound resource; §5: there is
            // no stream to resume (resumption is not offered).
            ("enable", ns::SM) if self.username.is_some() => {
                out.push(Action::Send(sm::failed("unexpected-request").to_xml()));
            }
            ("resume", ns::SM) if self.username.is_some() => {
                out.push(Action::Send(sm::failed("item-not-found").to_xml()));
            }
            (_, ns::CLIENT) => self.stream_error(
                "not-authorized",
                Some("authenticate and bind a resource first"),
                env,
                out,
            ),
            _ => self.stream_error("unsupported-stanza-type", None, env, out),
        }
    }

    fn start_sasl(&mut self, auth: Element, env: &mut dyn SessionEnv, out: &mut Vec<Action>) {
        if let Err(retry_after) = env.auth_allowed() {
            let text = format!(
                "too many failed attempts from your address; retry in {} s",
                retry_after.as_secs().max(1)
            );
            return self.sasl_failure(SaslCondition::TemporaryAuthFailure, Some(&text), out);
        }
        let Some(mechanism) = auth.attr("mechanism").and_then(Mechanism::from_name) else {
            return self.sasl_failure(SaslCondition::InvalidMechanism, None, out);
        };
        let sasl = Box::new(env.sasl_server(mechanism));
        // RFC 6120 §6.4.2: "=" is an empty initial response; no text at all
        // means none was sent, which for client-first mechanisms is the same.
        let initial = auth.text();
        let initial = if initial == "=" { "" } else { initial.as_str() };
        self.sasl_step(sasl, initial, env, out);
    }

    fn continue_sasl(
        &mut self,
        sasl: Box<SaslServer>,
        element: Element,
        env: &mut dyn SessionEnv,
        out: &mut Vec<Action>,
    ) {
        self.phase = Phase::Negotiating;
        match (element.name(), element.ns()) {
            ("response", ns::SASL) => self.sasl_step(sasl, &element.text(), env, out),
            ("abort", ns::SASL) => self.sasl_failure(SaslCondition::Aborted, None, out),
            _ => self.stream_error("not-authorized", None, env, out),
        }
    }

    fn sasl_step(
        &mut self,
        mut sasl: Box<SaslServer>,
        encoded: &str,
        env: &mut dyn SessionEnv,
        out: &mut Vec<Action>,
    ) {
        let Ok(message) = BASE64.decode(encoded.trim()) else {
            return self.sasl_failure(SaslCondition::IncorrectEncoding, None, out);
        };
        let step = sasl.step(&message, &|username| env.credentials(username));
        match step {
            SaslStep::Challenge(challenge) => {
                out.push(Action::Send(sasl_element("challenge", Some(&challenge))));
                self.phase = Phase::Authenticating(sasl);
            }
            SaslStep::Success {
                username,
                additional_data,
            } => {
                env.auth_succeeded();
                out.push(Action::Send(sasl_element(
                    "success",
                    additional_data.as_deref(),
                )));
                out.push(Action::RestartStream);
                self.username = Some(username);
                self.header_sent = false;
                self.phase = Phase::AwaitingHeader;
            }
            SaslStep::Failure(condition, text) => {
                env.auth_failed(condition);
                self.auth_failures += 1;
                self.sasl_failure(condition, Some(&text), out);
                if self.auth_failures >= self.settings.auth_attempts_max {
                    // RFC 6120 §6.4.5: too many retries close the stream.
                    self.stream_error("not-authorized", Some("too many failed attempts"), env, out);
                }
            }
        }
    }

    fn sasl_failure(
        &mut self,
        condition: SaslCondition,
        text: Option<&str>,
        out: &mut Vec<Action>,
    ) {
        let mut failure = Element::new("failure", ns::SASL)
            .with_child(Element::new(condition.element_name(), ns::SASL));
        if let Some(text) = text {
            failure.push_child(Element::new("text", ns::SASL).with_text(text));
        }
        out.push(Action::Send(failure.to_xml()));
    }

    /// RFC 6120 §7: the first IQ after authentication must bind a resource.
    fn bind(&mut self, iq: Element, out: &mut Vec<Action>) {
        let from = self.settings.domain.clone();
        let request = match stanza::classify_iq(&iq) {
            Ok(IqKind::Request(request)) => request,
            Ok(IqKind::Response) => return,
            Err(error) => return self.send_stanza(stanza::error_reply(&iq, &from, &error), out),
        };
        if !(request.is_set && request.payload.is("bind", ns::BIND)) {
            let error = StanzaError::new(Condition::NotAllowed)
                .with_text("bind a resource first (RFC 6120 §7)");
            return self.send_stanza(stanza::error_reply(&iq, &from, &error), out);
        }
        let resource = request
            .payload
            .child("resource", ns::BIND)
            .map(Element::text)
            .filter(|r| !r.is_empty());
        let Some(username) = self.username.clone() else {
            return;
        };
        out.push(Action::Bind { username, resource });
        self.phase = Phase::AwaitingBind(iq);
    }

    fn on_bound(&mut self, result: Result<FullJid, StanzaError>, out: &mut Vec<Action>) {
        let Phase::AwaitingBind(request) = std::mem::replace(&mut self.phase, Phase::Closed) else {
            return;
        };
        let from = self.settings.domain.clone();
        match result {
            Ok(jid) => {
                let payload = Element::new("bind", ns::BIND)
                    .with_child(Element::new("jid", ns::BIND).with_text(jid.to_string()));
                self.send_stanza(stanza::iq_result(&request, &from, Some(payload)), out);
                self.phase = Phase::Established(jid);
            }
            Err(error) => {
                self.send_stanza(stanza::error_reply(&request, &from, &error), out);
                self.phase = Phase::Negotiating;
            }
        }
    }

    /// A stanza from a bound session.
    fn on_stanza(
        &mut self,
        jid: &FullJid,
        mut element: Element,
        env: &mut dyn SessionEnv,
        out: &mut Vec<Action>,
    ) {
        let Some(kind) = StanzaKind::of(&element) else {
            return self.stream_error("unsupported-stanza-type", None, env, out);
        };
        // RFC 6120 §8.1.2.1: the server stamps the full JID as `from`,
        // overwriting whatever the client wrote.
        element.set_attr("from", jid.to_string());
        let to = match element.attr("to").map(Jid::new) {
            None => None,
            Some(Ok(to)) => Some(to),
            Some(Err(_)) => {
                if kind != StanzaKind::Presence && !stanza::is_error(&element) {
                    let error = StanzaError::new(Condition::JidMalformed);
                    let reply = stanza::error_reply(&element, &self.settings.domain, &error);
                    self.send_stanza(reply, out);
                }
                return;
            }
        };
        let own_bare = jid.to_bare();
        match kind {
            StanzaKind::Iq if self.is_for_server(to.as_ref(), &own_bare) => {
                self.server_iq(&element, to.as_ref(), out)
            }
            StanzaKind::Presence if to.is_none() => match element.attr("type") {
                None => out.push(Action::SetAvailable(true)),
                Some("unavailable") => out.push(Action::SetAvailable(false)),
                // Subscription management needs rosters, which vomesh does
                // not keep; RFC 6121 lets a server ignore what it does not do.
                Some(_) => {}
            },
            _ => out.push(Action::Route(element)),
        }
    }

    /// `<enable/>`, `<r/>` and `<a/>` of XEP-0198 on a bound stream.
    fn on_stream_management(
        &mut self,
        element: Element,
        env: &mut dyn SessionEnv,
        out: &mut Vec<Action>,
    ) {
        match (element.name(), &mut self.stream_management) {
            ("enable", None) => {
                self.stream_management = Some(Counters::default());
                out.push(Action::Send(sm::enabled().to_xml()));
            }
            ("enable" | "resume", Some(_)) | ("resume", None) => {
                out.push(Action::Send(sm::failed("unexpected-request").to_xml()));
            }
            ("r", Some(counters)) => out.push(Action::Send(counters.answer().to_xml())),
            ("a", Some(counters)) => {
                let Some(h) = element.attr("h").and_then(|h| h.parse::<u32>().ok()) else {
                    return self.stream_error(
                        "invalid-xml",
                        Some("<a/> needs a count h"),
                        env,
                        out,
                    );
                };
                if let Err(too_high) = counters.check_ack(h) {
                    self.stream_error_with(
                        "undefined-condition",
                        Some("acknowledged more stanzas than were sent"),
                        Some(sm::handled_count_too_high(&too_high)),
                        env,
                        out,
                    );
                }
            }
            _ => self.stream_error(
                "unsupported-stanza-type",
                Some("stream management is not enabled"),
                env,
                out,
            ),
        }
    }

    /// IQs without `to`, or to our domain or the user's own bare JID, are
    /// answered by the server (RFC 6120 §10.3.3, §10.5.3.2).
    fn is_for_server(&self, to: Option<&Jid>, own_bare: &BareJid) -> bool {
        match to {
            None => true,
            Some(to) => {
                to.is_bare()
                    && (to.node().is_none()
                        && same_domain(to.domain().as_str(), &self.settings.domain)
                        || to.to_bare() == *own_bare)
            }
        }
    }

    fn server_iq(&mut self, iq: &Element, to: Option<&Jid>, out: &mut Vec<Action>) {
        let from = to.map_or_else(|| self.settings.domain.clone(), ToString::to_string);
        let request = match stanza::classify_iq(iq) {
            Ok(IqKind::Request(request)) => request,
            // A response to nothing we asked: drop it (RFC 6120 §8.2.3).
            Ok(IqKind::Response) => return,
            Err(error) => return self.send_stanza(stanza::error_reply(iq, &from, &error), out),
        };
        let to_account = to.is_some_and(|to| to.node().is_some());
        let payload = request.payload;
        let reply =
            match (request.is_set, payload.name(), payload.ns()) {
                (false, "ping", ns::PING) => Ok(None),
                // RFC 3921 session establishment is a no-op today (RFC 6121 §1.4).
                (true, "session", ns::SESSION) => Ok(None),
                (false, "query", ns::DISCO_INFO) if payload.attr("node").is_none() => {
                    Ok(Some(self.disco_info(to_account)))
                }
                (false, "query", ns::DISCO_ITEMS) if payload.attr("node").is_none() => {
                    Ok(Some(self.disco_items(to_account)))
                }
                // vomesh keeps no rosters; an empty one lets standard clients
                // finish their login sequence (RFC 6121 §2.1.3).
                (false, "query", ns::ROSTER) => Ok(Some(Element::new("query", ns::ROSTER))),
                (true, "bind", ns::BIND) => Err(StanzaError::new(Condition::NotAllowed)
                    .with_text("a resource is already bound")),
                _ => Err(StanzaError::new(Condition::ServiceUnavailable)),
            };
        let reply = match reply {
            Ok(payload) => stanza::iq_result(iq, &from, payload),
            Err(error) => stanza::error_reply(iq, &from, &error),
        };
        self.send_stanza(reply, out);
    }

    fn disco_info(&self, to_account: bool) -> Element {
        let identity = if to_account {
            ("account", "registered")
        } else {
            ("server", "im")
        };
        let mut query = Element::new("query", ns::DISCO_INFO).with_child(
            Element::new("identity", ns::DISCO_INFO)
                .with_attr("category", identity.0)
                .with_attr("type", identity.1)
                .with_attr("name", "vomesh"),
        );
        let features: &[&str] = if to_account {
            &[ns::DISCO_INFO]
        } else {
            &[ns::DISCO_INFO, ns::DISCO_ITEMS, ns::PING]
        };
        for feature in features {
            query.push_child(Element::new("feature", ns::DISCO_INFO).with_attr("var", *feature));
        }
        query
    }

    fn disco_items(&self, to_account: bool) -> Element {
        let mut query = Element::new("query", ns::DISCO_ITEMS);
        if !to_account {
            query.push_child(
                Element::new("item", ns::DISCO_ITEMS)
                    .with_attr("jid", self.settings.pubsub_service.as_str())
                    .with_attr("name", "VOEvent publish-subscribe"),
            );
        }
        query
    }

    fn send_stanza(&mut self, stanza: Element, out: &mut Vec<Action>) {
        self.on_stanzas_sent(1);
        out.push(Action::Send(stanza.to_stream_xml(ns::CLIENT)));
    }

    /// Sends a stream error and closes (RFC 6120 §4.9.1.1).
    fn stream_error(
        &mut self,
        condition: &'static str,
        text: Option<&str>,
        env: &mut dyn SessionEnv,
        out: &mut Vec<Action>,
    ) {
        self.stream_error_with(condition, text, None, env, out);
    }

    /// A stream error with an application-specific condition (RFC 6120
    /// §4.9.4).
    fn stream_error_with(
        &mut self,
        condition: &'static str,
        text: Option<&str>,
        application: Option<Element>,
        env: &mut dyn SessionEnv,
        out: &mut Vec<Action>,
    ) {
        if !self.header_sent {
            self.send_header(env, out);
        }
        let text = text
            .map(|t| {
                Element::new("text", ns::STREAM_ERRORS)
                    .with_text(t)
                    .to_xml()
            })
            .unwrap_or_default();
        let application = application.map(|a| a.to_xml()).unwrap_or_default();
        out.push(Action::Send(format!(
            "<stream:error>{}{text}{application}</stream:error></stream:stream>",
            Element::new(condition, ns::STREAM_ERRORS).to_xml()
        )));
        self.close(Some(condition), out);
    }

    fn close(&mut self, stream_error: Option<&'static str>, out: &mut Vec<Action>) {
        if let Phase::Established(_) = self.phase {
            out.push(Action::SetAvailable(false));
        }
        self.phase = Phase::Closed;
        out.push(Action::Close { stream_error });
    }
}

fn sasl_element(name: &str, data: Option<&[u8]>) -> String {
    let mut element = Element::new(name, ns::SASL);
    if let Some(data) = data {
        // RFC 6120 §6.4.3: empty data is sent as "=".
        let encoded = if data.is_empty() {
            "=".to_owned()
        } else {
            BASE64.encode(data)
        };
        element.push_text(encoded);
    }
    element.to_xml()
}

/// Compares domain names the way JIDs do (case-insensitively, RFC 7622 §3.2).
fn same_domain(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
