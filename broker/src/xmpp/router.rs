//! Delivery of stanzas between the sessions connected to this node.
//!
//! The router maps bound JIDs to the outbound queue of their connection and
//! applies the delivery rules of RFC 6120 §10 and RFC 6121 §8 for local
//! addresses. vomesh has no server-to-server federation: other domains get
//! `remote-server-not-found`. Services living on subdomains (the pubsub
//! service) register as [`Component`]s.
//!
//! Outbound queues are bounded. When a client stops reading and its queue
//! fills, the stanza is not buffered further: the session is told it is a
//! slow consumer and closes its stream (RFC 6120 §4.9.3.13 policy-violation),
//! so one stuck client can never grow the server's memory.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use jid::{BareJid, FullJid, Jid};

use super::ns;
use super::outbound_queue::OutboundQueue;
use super::stanza::{self, Condition, StanzaError, StanzaKind};
use crate::lock;
use crate::metrics::names;
use crate::pubsub::Notification;
use crate::xml::Element;

/// Something written to a client connection.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// A complete serialized stanza.
    Stanza(Arc<str>),
    /// A pubsub notification: `head` (the `<message …>` start tag for this
    /// recipient), then `body`, shared by every recipient of the event, then
    /// `</message>`. `published_micros` is the event's publication time,
    /// for the delivery latency metric.
    Notification {
        head: Arc<str>,
        body: Arc<str>,
        published_micros: i64,
    },
}

/// The router's handle on one connection.
#[derive(Debug, Clone)]
pub struct Connection {
    /// Distinguishes a reconnecting client's new connection from its old one.
    pub id: u64,
    /// A full queue tells the connection, which closes.
    pub queue: Arc<OutboundQueue>,
}

/// A service addressed by its own domain (e.g. `pubsub.example.org`).
pub trait Component: Send + Sync {
    /// Handles a stanza addressed to the component. Replies go back through
    /// [`Router::route`].
    fn handle(&self, stanza: Element);

    /// A local resource sent its initial presence.
    fn on_available(&self, _who: &FullJid) {}
}

struct BoundResource {
    connection: Connection,
    /// Initial presence sent and no unavailable presence since (RFC 6121
    /// §4.2): only such resources get messages sent to the bare JID.
    available: bool,
}

/// The stanza router of one node.
pub struct Router {
    domain: String,
    /// Bound resources by account, then by resource: a notification to a
    /// full JID finds its connection without scanning the account's other
    /// resources (a service account may hold thousands).
    sessions: Mutex<HashMap<BareJid, BTreeMap<String, BoundResource>>>,
    components: Mutex<HashMap<String, Arc<dyn Component>>>,
}

impl Router {
    pub fn new(domain: &str) -> Self {
        Router {
            domain: domain.to_ascii_lowercase(),
            sessions: Mutex::new(HashMap::new()),
            components: Mutex::new(HashMap::new()),
        }
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    pub fn add_component(&self, domain: &str, component: Arc<dyn Component>) {
        lock(&self.components).insert(domain.to_ascii_lowercase(), component);
    }

    /// Binds a resource for `username` (RFC 6120 §7). A missing or taken
    /// resource gets a server-generated one (§7.7.2.2 lets the server
    /// override the client's choice), so a reconnecting client is never
    /// refused because its previous connection is not yet gone.
    pub fn bind(
        &self,
        username: &str,
        resource: Option<&str>,
        random: &str,
        connection: Connection,
    ) -> Result<FullJid, StanzaError> {
        let bare = BareJid::new(&format!("{username}@{}", self.domain))
            .map_err(|_| StanzaError::new(Condition::JidMalformed))?;
        let mut sessions = lock(&self.sessions);
        let resources = sessions.entry(bare.clone()).or_default();
        let taken = |r: &str| resources.contains_key(r);
        let chosen = match resource {
            Some(requested) if !taken(requested) => requested.to_owned(),
            Some(requested) => format!("{requested}.{random}"),
            None => random.to_owned(),
        };
        let full = bare
            .with_resource_str(&chosen)
            .map_err(|_| stanza::bad_request("the resource is not a valid JID resourcepart"))?;
        resources.insert(
            full.resource().as_str().to_owned(),
            BoundResource {
                connection,
                available: false,
            },
        );
        metrics::gauge!(names::C2S_SESSIONS).increment(1.0);
        Ok(full)
    }

    /// Forgets a connection's resource (on disconnect).
    pub fn unbind(&self, jid: &FullJid, connection_id: u64) {
        let mut sessions = lock(&self.sessions);
        let bare = jid.to_bare();
        if let Some(resources) = sessions.get_mut(&bare) {
            let resource = jid.resource().as_str();
            // The resource may already belong to a newer connection.
            if resources
                .get(resource)
                .is_some_and(|b| b.connection.id == connection_id)
            {
                resources.remove(resource);
                metrics::gauge!(names::C2S_SESSIONS).decrement(1.0);
            }
            if resources.is_empty() {
                sessions.remove(&bare);
            }
        }
    }

    pub fn set_available(&self, jid: &FullJid, available: bool) {
        let became_available = {
            let mut sessions = lock(&self.sessions);
            match sessions
                .get_mut(&jid.to_bare())
                .and_then(|r| r.get_mut(jid.resource().as_str()))
            {
                Some(bound) => {
                    let became = available && !bound.available;
                    bound.available = available;
                    became
                }
                None => false,
            }
        };
        if became_available {
            let components: Vec<_> = lock(&self.components).values().cloned().collect();
            for component in components {
                component.on_available(jid);
            }
        }
    }

    /// The number of bound sessions.
    pub fn session_count(&self) -> usize {
        lock(&self.sessions).values().map(BTreeMap::len).sum()
    }

    /// Delivers a stanza whose `from` is already set, answering the sender
    /// with an error where RFC 6121 §8.5 says so.
    pub fn route(&self, stanza: Element) {
        let Some(kind) = StanzaKind::of(&stanza) else {
            return;
        };
        let to = match stanza.attr("to").map(Jid::new) {
            Some(Ok(to)) => to,
            // RFC 6120 §10.3.1: no `to` means the sender's own account.
            None => match stanza.attr("from").map(Jid::new) {
                Some(Ok(from)) => Jid::from(from.to_bare()),
                _ => return,
            },
            Some(Err(_)) => {
                return self.bounce(&stanza, StanzaError::new(Condition::JidMalformed));
            }
        };
        let domain = to.domain().as_str().to_ascii_lowercase();
        if domain != self.domain {
            let component = lock(&self.components).get(&domain).cloned();
            return match component {
                Some(component) => component.handle(stanza),
                // No server-to-server federation (yet): RFC 6120 §8.3.3.16.
                None => self.bounce(&stanza, StanzaError::new(Condition::RemoteServerNotFound)),
            };
        }
        if to.node().is_none() {
            // Messages and presence to the server itself: nothing to do
            // (IQs to the server are answered by the session).
            return;
        }
        let serialized: Arc<str> = stanza.to_stream_xml(ns::CLIENT).into();
        let delivered = match to.try_as_full() {
            Ok(full) => self.deliver_to_full(full, &serialized),
            Err(_) => false,
        };
        if delivered {
            return;
        }
        // RFC 6121 §8.5.3.2: an unavailable full JID is treated like the
        // bare JID for messages; IQs and presence get no second chance.
        let type_ = stanza.attr("type").unwrap_or("normal");
        let to_bare_ok = match kind {
            StanzaKind::Message => true,
            StanzaKind::Presence => to.is_bare(),
            StanzaKind::Iq => false,
        };
        if to_bare_ok && self.deliver_to_available(&to.to_bare(), &serialized) > 0 {
            return;
        }
        match (kind, type_) {
            (_, "error") | (StanzaKind::Presence, _) | (StanzaKind::Message, "headline") => {}
            // No offline storage: RFC 6121 §8.5.2.2.1 allows bouncing.
            _ => self.bounce(&stanza, StanzaError::new(Condition::ServiceUnavailable)),
        }
    }

    /// Queues a pre-serialized stanza for one full JID; false when that
    /// resource is not bound here.
    pub fn deliver_to_full(&self, to: &FullJid, stanza: &Arc<str>) -> bool {
        let sessions = lock(&self.sessions);
        let Some(bound) = sessions
            .get(&to.to_bare())
            .and_then(|r| r.get(to.resource().as_str()))
        else {
            return false;
        };
        enqueue(&bound.connection, Outbound::Stanza(stanza.clone()));
        true
    }

    /// Queues a pre-serialized stanza for every available resource of a
    /// bare JID; returns how many there were.
    pub fn deliver_to_available(&self, to: &BareJid, stanza: &Arc<str>) -> usize {
        let sessions = lock(&self.sessions);
        let Some(resources) = sessions.get(to) else {
            return 0;
        };
        let mut count = 0;
        for bound in resources.values().filter(|b| b.available) {
            enqueue(&bound.connection, Outbound::Stanza(stanza.clone()));
            count += 1;
        }
        count
    }

    /// Queues a pubsub notification for the local resources it names: a
    /// bare JID means every available resource, a full JID that resource.
    /// The payload is shared, only the start tag is made per recipient.
    pub fn deliver_notification(
        &self,
        from: &str,
        notification: &Notification,
        published_micros: i64,
    ) {
        let sessions = lock(&self.sessions);
        for recipient in &notification.recipients {
            let Some(resources) = sessions.get(&recipient.to_bare()) else {
                continue;
            };
            let head: Arc<str> = notification.head(from, recipient.as_str(), None).into();
            let outbound = Outbound::Notification {
                head,
                body: notification.message.clone(),
                published_micros,
            };
            match recipient.resource() {
                Some(resource) => {
                    if let Some(bound) = resources.get(resource.as_str()) {
                        enqueue(&bound.connection, outbound);
                    }
                }
                None => {
                    for bound in resources.values().filter(|b| b.available) {
                        enqueue(&bound.connection, outbound.clone());
                    }
                }
            }
        }
    }

    /// Answers an undeliverable stanza with an error from the address it was
    /// sent to, unless it is itself an error (RFC 6120 §8.3.1).
    fn bounce(&self, stanza: &Element, error: StanzaError) {
        if stanza::is_error(stanza) {
            return;
        }
        let from = stanza.attr("to").unwrap_or(&self.domain).to_owned();
        self.route(stanza::error_reply(stanza, &from, &error));
    }
}

/// Puts a stanza on a connection's queue. A full queue marks a slow
/// consumer, which the connection closes; a closed one is a connection
/// whose unbind is on the way. Either way the stanza is dropped.
fn enqueue(connection: &Connection, outbound: Outbound) {
    let _ = connection.queue.push(outbound);
}
