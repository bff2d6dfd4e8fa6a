//! The client-side commands of `vomesh` (INTERFACE.md): `publish` and
//! `subscribe` speak XMPP to a node through [`crate::client`]; `certs init`
//! writes a cluster's certificates; `status` and `cluster` render what the
//! admin API ([`crate::cli::AdminClient`]) answers.
//!
//! The stanza building and parsing, the merging of an archive replay with
//! live notifications, file naming and the status table are pure functions
//! and types here, tested without a server; the `async fn`s only move
//! stanzas between them and the connection.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use jid::BareJid;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::cli::{NodeStatus, XmppAccount};
use crate::client::{Client, ClientConfig, ClientError, Trust};
use crate::config::Config;
use crate::pubsub::error::{PUBSUB_ERRORS_NS, STANZAS_NS};
use crate::pubsub::form::DATA_NS;
use crate::pubsub::request::{MAM_NS, PUBSUB_EVENT_NS, PUBSUB_NS};
use crate::pubsub::response::{DELAY_NS, FORWARD_NS};
use crate::pubsub::rsm::RSM_NS;
use crate::xml::{Element, ParseError, ParserLimits, parse_document};
use crate::xmpp::ns;

/// XEP-0359 unique and stable stanza ids: a server that archives a message
/// may tell the recipient its archive id in `<stanza-id by='…' id='…'/>`.
pub const STANZA_ID_NS: &str = "urn:xmpp:sid:0";

/// Bounds of the `publish` and `subscribe` commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientLimits {
    /// One payload file, and the XML limits it is parsed with.
    pub payload: ParserLimits,
    /// How long an IQ (a publish waiting for its commit, a subscribe, an
    /// archive page) may stay unanswered before the command gives up.
    pub reply_timeout: Duration,
    /// How long a closing stream waits for the server's `</stream:stream>`.
    pub close_timeout: Duration,
    /// RSM `<max/>` of each archive page asked for.
    pub replay_page_items_max: usize,
    /// Live notifications held back while the replay runs; more means the
    /// node publishes faster than the replay drains, and the command stops
    /// rather than grow without bound.
    pub live_buffer_items_max: usize,
    /// Replayed items remembered to recognise their live copies. Only items
    /// published after the subscription can arrive twice, and those are the
    /// newest of the replay, so a window of the most recent ones suffices.
    pub replay_window_items_max: usize,
}

impl ClientLimits {
    pub const DEFAULT: ClientLimits = ClientLimits {
        payload: ParserLimits {
            stanza_bytes_max: 16 * 1024 * 1024,
            depth_max: 256,
            attributes_max: 256,
        },
        reply_timeout: Duration::from_secs(60),
        close_timeout: Duration::from_secs(5),
        replay_page_items_max: 100,
        live_buffer_items_max: 10_000,
        replay_window_items_max: 10_000,
    };
}

/// Why `publish` or `subscribe` stopped.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(
        "no certificate to trust for {server}: pass --ca FILE (a development node's is ./vomesh-data/tls/xmpp.crt)"
    )]
    NoTrustAnchor { server: String },
    #[error("cannot read CA certificate {}: {reason}", path.display())]
    Ca { path: PathBuf, reason: String },
    #[error("`{0}` has no domain a pubsub service can be named after")]
    ServiceJid(String),
    #[error("no answer from the server within {} s", .0.as_secs())]
    Timeout(Duration),
    #[error("{what}: {error}")]
    Refused { what: &'static str, error: IqError },
    #[error("unexpected answer to {what}: {detail}")]
    Protocol { what: &'static str, detail: String },
    #[error(
        "more than {0} live notifications arrived during the replay; retry with a later --since"
    )]
    LiveBufferFull(usize),
    #[error("node {node} was deleted{}", redirect.as_deref().map(|r| format!(" (moved to {r})")).unwrap_or_default())]
    NodeDeleted {
        node: String,
        redirect: Option<String>,
    },
    #[error("{}: {source}", path.display())]
    Output {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{failed} of {total} files were not published")]
    PublishFailed { failed: usize, total: usize },
}

/// The pubsub service of the account's domain, `pubsub.<domain>`.
pub fn service_jid(account: &BareJid) -> Result<BareJid, CommandError> {
    BareJid::new(&format!("pubsub.{}", account.domain()))
        .map_err(|_| CommandError::ServiceJid(account.to_string()))
}

/// Which certificates to trust: `--ca`, else the development node's
/// generated certificate when it is in the working directory.
pub fn trust_for(account: &XmppAccount) -> Result<Trust, CommandError> {
    let path = match &account.ca {
        Some(path) => path.clone(),
        None => {
            let development = Config::development()
                .data_dir
                .join("tls")
                .join(crate::tls::GENERATED_CERT_FILE);
            if !development.is_file() {
                return Err(CommandError::NoTrustAnchor {
                    server: account.server_addr(),
                });
            }
            development
        }
    };
    let failed = |reason: String| CommandError::Ca {
        path: path.clone(),
        reason,
    };
    let roots = CertificateDer::pem_file_iter(&path)
        .map_err(|err| failed(err.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| failed(err.to_string()))?;
    if roots.is_empty() {
        return Err(failed("no PEM CERTIFICATE section found".to_owned()));
    }
    Ok(Trust::Roots(roots))
}

async fn connect(account: &XmppAccount) -> Result<Client, CommandError> {
    let config = ClientConfig {
        jid: account.jid.clone(),
        password: account.password.clone(),
        server: account.server_addr(),
        direct_tls: false,
        resource: None,
        trust: trust_for(account)?,
    };
    Ok(Client::connect(&config).await?)
}

/// An error reply to an IQ (RFC 6120 §8.3): the defined condition, the
/// application-specific child (for pubsub, XEP-0060 §14.3) and the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IqError {
    pub condition: String,
    /// The application condition, e.g. `invalid-payload`, or
    /// `unsupported feature='…'`.
    pub app: Option<String>,
    pub text: Option<String>,
}

impl std::fmt::Display for IqError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.condition)?;
        if let Some(app) = &self.app {
            write!(f, " ({app})")?;
        }
        if let Some(text) = &self.text {
            write!(f, ": {text}")?;
        }
        Ok(())
    }
}

impl IqError {
    /// Reads the `<error/>` of an IQ of type `error`.
    pub fn from_reply(reply: &Element) -> IqError {
        let Some(error) = reply.child("error", ns::CLIENT) else {
            return IqError {
                condition: "undefined-condition".to_owned(),
                app: None,
                text: Some("error reply without <error/>".to_owned()),
            };
        };
        let mut parsed = IqError {
            condition: "undefined-condition".to_owned(),
            app: None,
            text: None,
        };
        for child in error.children() {
            if child.ns() == STANZAS_NS && child.name() == "text" {
                parsed.text = Some(child.text());
            } else if child.ns() == STANZAS_NS {
                parsed.condition = child.name().to_owned();
            } else {
                let mut app = child.name().to_owned();
                // XEP-0060 §14.3: `<unsupported feature='…'/>` names what.
                if child.ns() == PUBSUB_ERRORS_NS
                    && let Some(feature) = child.attr("feature")
                {
                    let _ = write!(app, " feature='{feature}'");
                }
                parsed.app = Some(app);
            }
        }
        parsed
    }
}

/// The child of an IQ result, or the error the reply carries.
fn iq_payload<'a>(what: &'static str, reply: &'a Element) -> Result<&'a Element, CommandError> {
    match reply.attr("type") {
        Some("result") => reply.children().next().ok_or(CommandError::Protocol {
            what,
            detail: "empty result".to_owned(),
        }),
        Some("error") => Err(CommandError::Refused {
            what,
            error: IqError::from_reply(reply),
        }),
        other => Err(CommandError::Protocol {
            what,
            detail: format!("IQ of type {other:?}"),
        }),
    }
}

fn iq(kind: &str, to: &BareJid, child: Element) -> Element {
    Element::new("iq", ns::CLIENT)
        .with_attr("type", kind)
        .with_attr("to", to.to_string())
        .with_child(child)
}

/// XEP-0060 §7.1.1: publish `payload` to `node` without an item id; the
/// service assigns one (a VOEvent node uses the event's IVORN).
pub fn publish_iq(service: &BareJid, node: &str, payload: Element) -> Element {
    let item = Element::new("item", PUBSUB_NS).with_child(payload);
    let publish = Element::new("publish", PUBSUB_NS)
        .with_attr("node", node)
        .with_child(item);
    iq(
        "set",
        service,
        Element::new("pubsub", PUBSUB_NS).with_child(publish),
    )
}

/// The item id of a publish reply (XEP-0060 §7.1.2), or why it failed.
pub fn published_item_id(reply: &Element) -> Result<String, CommandError> {
    const WHAT: &str = "publish";
    let pubsub = iq_payload(WHAT, reply)?;
    pubsub
        .child("publish", PUBSUB_NS)
        .and_then(|publish| publish.child("item", PUBSUB_NS))
        .and_then(|item| item.attr("id"))
        .map(str::to_owned)
        // The id is optional in §7.1.2 only when the publisher chose it.
        .ok_or_else(|| CommandError::Protocol {
            what: WHAT,
            detail: format!("no <publish><item id/> in {}", pubsub.to_xml()),
        })
}

/// Why one file was not published; the command goes on with the next.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{0}")]
    Read(std::io::Error),
    #[error("not a well-formed XML document: {0}")]
    Parse(ParseError),
    #[error("{0}")]
    Refused(IqError),
}

fn read_payload(file: &Path, limits: ParserLimits) -> Result<Element, FileError> {
    let bytes = if file == Path::new("-") {
        let mut bytes = Vec::new();
        // One byte past the limit is enough to know the document is too big.
        let cap = u64::try_from(limits.stanza_bytes_max).unwrap_or(u64::MAX);
        std::io::stdin()
            .lock()
            .take(cap.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(FileError::Read)?;
        bytes
    } else {
        std::fs::read(file).map_err(FileError::Read)?
    };
    parse_document(&bytes, limits).map_err(FileError::Parse)
}

/// Publishes every file to `node`, printing `FILE<TAB>ID` for each on
/// stdout and each failure on stderr; fails (after trying every file) if
/// any was not published. A lost connection or a silent server stops the
/// command at once.
pub async fn publish(
    account: &XmppAccount,
    node: &str,
    files: &[PathBuf],
    limits: ClientLimits,
) -> Result<(), CommandError> {
    let service = service_jid(&account.jid)?;
    let mut client = connect(account).await?;
    let mut failed = 0;
    for file in files {
        match publish_one(&mut client, &service, node, file, limits).await? {
            Ok(id) => println!("{}\t{id}", file.display()),
            Err(error) => {
                failed += 1;
                eprintln!("vomesh: {}: {error}", file.display());
            }
        }
    }
    close(client, limits).await;
    match failed {
        0 => Ok(()),
        failed => Err(CommandError::PublishFailed {
            failed,
            total: files.len(),
        }),
    }
}

/// The outer `Result` stops the command, the inner one only this file.
async fn publish_one(
    client: &mut Client,
    service: &BareJid,
    node: &str,
    file: &Path,
    limits: ClientLimits,
) -> Result<Result<String, FileError>, CommandError> {
    let payload = match read_payload(file, limits.payload) {
        Ok(payload) => payload,
        Err(error) => return Ok(Err(error)),
    };
    let reply = tokio::time::timeout(
        limits.reply_timeout,
        client.iq(publish_iq(service, node, payload)),
    )
    .await
    .map_err(|_| CommandError::Timeout(limits.reply_timeout))??;
    match published_item_id(&reply) {
        Ok(id) => Ok(Ok(id)),
        Err(CommandError::Refused { error, .. }) => Ok(Err(FileError::Refused(error))),
        Err(other) => Err(other),
    }
}

/// Closes the stream, waiting a little for the server's closing tag; a
/// server that does not answer is left to notice the closed socket.
async fn close(client: Client, limits: ClientLimits) {
    if let Ok(Err(error)) = tokio::time::timeout(limits.close_timeout, client.close()).await {
        eprintln!("vomesh: closing the stream: {error}");
    }
}

/// XEP-0060 §6.1.1: subscribe `jid` (the bare account JID, so that every
/// resource with presence receives the notifications).
pub fn subscribe_iq(service: &BareJid, node: &str, jid: &BareJid) -> Element {
    let subscribe = Element::new("subscribe", PUBSUB_NS)
        .with_attr("node", node)
        .with_attr("jid", jid.to_string());
    iq(
        "set",
        service,
        Element::new("pubsub", PUBSUB_NS).with_child(subscribe),
    )
}

/// The `subscription` state of a subscribe reply (XEP-0060 §6.1.2):
/// `subscribed`, `pending` (§6.1.4) or `unconfigured` (§6.1.5).
pub fn subscription_state(reply: &Element) -> Result<String, CommandError> {
    const WHAT: &str = "subscribe";
    let pubsub = iq_payload(WHAT, reply)?;
    pubsub
        .child("subscription", PUBSUB_NS)
        .and_then(|s| s.attr("subscription"))
        .map(str::to_owned)
        .ok_or_else(|| CommandError::Protocol {
            what: WHAT,
            detail: format!("no <subscription/> in {}", pubsub.to_xml()),
        })
}

/// XEP-0313 §4 query of `node`'s archive for the page after archive id
/// `after` (XEP-0059 §2.2). `query_id` tags the result messages (§4.1.3).
pub fn archive_query_iq(
    service: &BareJid,
    node: &str,
    query_id: &str,
    after: &str,
    max: usize,
) -> Element {
    let form_type = Element::new("field", DATA_NS)
        .with_attr("var", "FORM_TYPE")
        .with_attr("type", "hidden")
        .with_child(Element::new("value", DATA_NS).with_text(MAM_NS));
    let form = Element::new("x", DATA_NS)
        .with_attr("type", "submit")
        .with_child(form_type);
    let set = Element::new("set", RSM_NS)
        .with_child(Element::new("after", RSM_NS).with_text(after))
        .with_child(Element::new("max", RSM_NS).with_text(max.to_string()));
    let query = Element::new("query", MAM_NS)
        .with_attr("node", node)
        .with_attr("queryid", query_id)
        .with_child(form)
        .with_child(set);
    iq("set", service, query)
}

/// The `<fin/>` ending an archive page (XEP-0313 §4.2): whether the
/// archive is exhausted, and the last archive id of the page (RSM `<last/>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveFin {
    pub complete: bool,
    pub last: Option<String>,
}

pub fn archive_fin(reply: &Element) -> Result<ArchiveFin, CommandError> {
    const WHAT: &str = "the archive query";
    let fin = iq_payload(WHAT, reply)?;
    if !fin.is("fin", MAM_NS) {
        return Err(CommandError::Protocol {
            what: WHAT,
            detail: format!("expected <fin/>, got {}", fin.to_xml()),
        });
    }
    Ok(ArchiveFin {
        // XEP-0313 §4.2: `complete` defaults to false.
        complete: matches!(fin.attr("complete"), Some("true" | "1")),
        last: fin
            .child("set", RSM_NS)
            .and_then(|set| set.child("last", RSM_NS))
            .map(Element::text),
    })
}

/// An item notification or archived item, as far as this client cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedItem {
    pub item_id: String,
    /// The archive id (the item's Raft log index): from the XEP-0313
    /// result, or a live notification's XEP-0359 `<stanza-id/>`.
    pub archive_id: Option<String>,
    /// The XEP-0203 publication time.
    pub stamp: Option<String>,
    /// None when the node does not deliver payloads (XEP-0060 §7.1.2.2).
    pub payload: Option<Element>,
}

/// What a live `<message/>` from the service told this subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeEvent {
    Items(Vec<ReceivedItem>),
    /// XEP-0060 §7.2.2.
    Retracted(Vec<String>),
    /// §8.5.2.
    Purged,
    /// §8.4.2.
    Deleted {
        redirect: Option<String>,
    },
    /// §8.6.2 / §8.8.4: the subscription changed state (e.g. approved).
    Subscription(String),
    /// §8.2.5.4.
    Configured,
}

/// The `<item/>`s of an `<items/>` event, their payloads copied out.
fn items_of(items: &Element) -> Vec<ReceivedItem> {
    items
        .children()
        .filter(|item| item.is("item", PUBSUB_EVENT_NS))
        .filter_map(|item| {
            Some(ReceivedItem {
                item_id: item.attr("id")?.to_owned(),
                archive_id: None,
                stamp: None,
                payload: item.children().next().cloned(),
            })
        })
        .collect()
}

fn delay_stamp(parent: &Element) -> Option<String> {
    parent
        .child("delay", DELAY_NS)
        .and_then(|d| d.attr("stamp"))
        .map(str::to_owned)
}

/// The event `message` from `service` carries about `node`, if any.
/// Messages from anyone else, or about other nodes the account is
/// subscribed to, are not this command's.
pub fn node_event(message: &Element, service: &BareJid, node: &str) -> Option<NodeEvent> {
    if !message.is("message", ns::CLIENT) || message.attr("from") != Some(&service.to_string()) {
        return None;
    }
    let stamp = delay_stamp(message);
    // XEP-0359 §5: only a stanza-id added by the service itself counts.
    let archive_id = message
        .children()
        .find(|c| c.is("stanza-id", STANZA_ID_NS) && c.attr("by") == Some(&service.to_string()))
        .and_then(|c| c.attr("id"))
        .map(str::to_owned);
    let event = message.child("event", PUBSUB_EVENT_NS)?;
    let about = |e: &Element| e.attr("node") == Some(node);
    if let Some(items) = event.child("items", PUBSUB_EVENT_NS) {
        if !about(items) {
            return None;
        }
        let retracted: Vec<String> = items
            .children()
            .filter(|c| c.is("retract", PUBSUB_EVENT_NS))
            .filter_map(|c| c.attr("id").map(str::to_owned))
            .collect();
        if !retracted.is_empty() {
            return Some(NodeEvent::Retracted(retracted));
        }
        let mut received = items_of(items);
        // One publish is one log entry: a message's archive id can only
        // name the item of a single-item notification.
        let lone = received.len() == 1;
        for item in &mut received {
            item.stamp = stamp.clone();
            item.archive_id = archive_id.clone().filter(|_| lone);
        }
        return Some(NodeEvent::Items(received));
    }
    let child = event.children().next()?;
    if !about(child) {
        return None;
    }
    match child.name() {
        "purge" => Some(NodeEvent::Purged),
        "delete" => Some(NodeEvent::Deleted {
            redirect: child
                .child("redirect", PUBSUB_EVENT_NS)
                .and_then(|r| r.attr("uri"))
                .map(str::to_owned),
        }),
        "subscription" => Some(NodeEvent::Subscription(
            child.attr("subscription").unwrap_or("none").to_owned(),
        )),
        "configuration" => Some(NodeEvent::Configured),
        _ => None,
    }
}

/// The item a XEP-0313 result `message` from `service` carries, if the
/// message answers query `query_id` on `node` (XEP-0313 §4.1.3: results
/// carry the query's id, so they cannot be confused with anything else).
pub fn archived_item(
    message: &Element,
    service: &BareJid,
    node: &str,
    query_id: &str,
) -> Option<ReceivedItem> {
    if !message.is("message", ns::CLIENT) || message.attr("from") != Some(&service.to_string()) {
        return None;
    }
    let result = message.child("result", MAM_NS)?;
    if result.attr("queryid") != Some(query_id) {
        return None;
    }
    let archive_id = result.attr("id")?.to_owned();
    let forwarded = result.child("forwarded", FORWARD_NS)?;
    // XEP-0297 §3: the publication time is the forwarded wrapper's delay.
    let stamp = delay_stamp(forwarded);
    let items = forwarded
        .child("message", ns::CLIENT)?
        .child("event", PUBSUB_EVENT_NS)?
        .child("items", PUBSUB_EVENT_NS)?;
    if items.attr("node") != Some(node) {
        return None;
    }
    let mut item = items_of(items).into_iter().next()?;
    item.archive_id = Some(archive_id);
    item.stamp = stamp;
    Some(item)
}

/// What identifies one publication of an item beyond its id: an id may be
/// published again (XEP-0060 §7.1.2 overwrites), and that is a new event.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Publication {
    archive_id: Option<String>,
    stamp: Option<String>,
}

impl Publication {
    fn of(item: &ReceivedItem) -> Publication {
        Publication {
            archive_id: item.archive_id.clone(),
            stamp: item.stamp.clone(),
        }
    }

    /// The same publication if every field both sides know agrees.
    fn matches(&self, other: &Publication) -> bool {
        let agree = |a: &Option<String>, b: &Option<String>| match (a, b) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        agree(&self.archive_id, &other.archive_id) && agree(&self.stamp, &other.stamp)
    }
}

/// Merges an archive replay with the live notifications that arrive while
/// it runs, so that each publication is shown once and none is lost.
///
/// The subscription is made before the replay starts, so every item
/// published after `--since` is in the replay, in live notifications, or in
/// both (those published while the replay runs). Live notifications are
/// held back until the replay ends, then released unless the replay showed
/// the same publication. A live notification carries no XEP-0313 result id;
/// this service stamps each with its publication time (XEP-0203), so a
/// publication is recognised by item id and delay stamp, and by archive id
/// too when the service adds a XEP-0359 `<stanza-id/>`. With an archive
/// id, a live item at or before `--since` (the node's last item, sent on
/// subscription by `pubsub#send_last_published_item`) is dropped as well.
#[derive(Debug)]
pub struct ReplayMerge {
    since: Option<u64>,
    replaying: bool,
    held: VecDeque<ReceivedItem>,
    /// Replayed publications by item id, and the order to forget them in.
    replayed: HashMap<String, Vec<Publication>>,
    replayed_order: VecDeque<String>,
    live_buffer_items_max: usize,
    replay_window_items_max: usize,
}

impl ReplayMerge {
    /// A merge for a subscription replaying after archive id `since`
    /// (None: no replay, live items pass straight through).
    pub fn new(since: Option<&str>, limits: &ClientLimits) -> ReplayMerge {
        ReplayMerge {
            since: since.and_then(|s| s.parse().ok()),
            replaying: since.is_some(),
            held: VecDeque::new(),
            replayed: HashMap::new(),
            replayed_order: VecDeque::new(),
            live_buffer_items_max: limits.live_buffer_items_max,
            replay_window_items_max: limits.replay_window_items_max,
        }
    }

    /// An item of the replay: always shown, and remembered.
    pub fn archived(&mut self, item: ReceivedItem) -> ReceivedItem {
        if self.replayed_order.len() == self.replay_window_items_max
            && let Some(oldest) = self.replayed_order.pop_front()
            && let Some(publications) = self.replayed.get_mut(&oldest)
        {
            publications.remove(0);
            if publications.is_empty() {
                self.replayed.remove(&oldest);
            }
        }
        if self.replay_window_items_max > 0 {
            self.replayed
                .entry(item.item_id.clone())
                .or_default()
                .push(Publication::of(&item));
            self.replayed_order.push_back(item.item_id.clone());
        }
        item
    }

    /// A live item: Some when it is to be shown now, None when held back
    /// or already shown.
    pub fn live(&mut self, item: ReceivedItem) -> Result<Option<ReceivedItem>, CommandError> {
        if self.replaying {
            if self.held.len() == self.live_buffer_items_max {
                return Err(CommandError::LiveBufferFull(self.live_buffer_items_max));
            }
            self.held.push_back(item);
            return Ok(None);
        }
        Ok(self.is_new(&item).then_some(item))
    }

    /// Ends the replay: the held-back items it did not show, in arrival
    /// order.
    pub fn replay_done(&mut self) -> Vec<ReceivedItem> {
        self.replaying = false;
        let held = std::mem::take(&mut self.held);
        held.into_iter().filter(|i| self.is_new(i)).collect()
    }

    fn is_new(&self, item: &ReceivedItem) -> bool {
        let at_or_before_since = match (self.since, &item.archive_id) {
            (Some(since), Some(id)) => id.parse::<u64>().is_ok_and(|id| id <= since),
            _ => false,
        };
        let publication = Publication::of(item);
        let replayed = self
            .replayed
            .get(&item.item_id)
            .is_some_and(|seen| seen.iter().any(|p| p.matches(&publication)));
        !at_or_before_since && !replayed
    }
}

/// A file name for item `id`: characters outside `A-Z a-z 0-9 - _ .` (and
/// a leading `.`) percent-encoded, so distinct ids get distinct names and
/// none escapes the directory; a name that would be too long for common
/// file systems is cut and suffixed with a digest of the whole id.
pub fn item_file_name(id: &str) -> String {
    const STEM_BYTES_MAX: usize = 200;
    let mut stem = String::with_capacity(id.len());
    for (at, byte) in id.bytes().enumerate() {
        let plain = byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.');
        if plain && !(at == 0 && byte == b'.') {
            stem.push(char::from(byte));
        } else {
            let _ = write!(stem, "%{byte:02X}");
        }
    }
    if stem.is_empty() || stem.len() > STEM_BYTES_MAX {
        let digest = ring::digest::digest(&ring::digest::SHA256, id.as_bytes());
        stem.truncate(STEM_BYTES_MAX - 33);
        stem.push('-');
        for byte in &digest.as_ref()[..16] {
            let _ = write!(stem, "{byte:02x}");
        }
    }
    stem.push_str(".xml");
    stem
}

/// Where `subscribe` puts payloads.
pub enum PayloadSink {
    /// Each payload's XML on stdout, one per line.
    Stdout,
    /// One file per item in this directory, its path printed.
    Directory(PathBuf),
}

impl PayloadSink {
    fn deliver(&self, item: &ReceivedItem) -> Result<(), CommandError> {
        let Some(payload) = &item.payload else {
            eprintln!("vomesh: item {} (published without payload)", item.item_id);
            return Ok(());
        };
        match self {
            PayloadSink::Stdout => {
                let mut out = std::io::stdout().lock();
                writeln!(out, "{}", payload.to_xml())
                    .and_then(|()| out.flush())
                    .map_err(|source| CommandError::Output {
                        path: PathBuf::from("<stdout>"),
                        source,
                    })
            }
            PayloadSink::Directory(dir) => {
                let path = dir.join(item_file_name(&item.item_id));
                write_atomically(&path, payload.to_xml().as_bytes()).map_err(|source| {
                    CommandError::Output {
                        path: path.clone(),
                        source,
                    }
                })?;
                println!("{}", path.display());
                Ok(())
            }
        }
    }
}

/// Writes under a temporary name and renames, so a reader of the directory
/// never sees half a payload.
fn write_atomically(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// The rest of one subscription session.
struct Session<'a> {
    client: Client,
    service: BareJid,
    node: &'a str,
    merge: ReplayMerge,
    sink: PayloadSink,
    limits: ClientLimits,
    next_query: u64,
    /// The highest archive id seen, the `--since` to resume from.
    last_archive_id: Option<u64>,
}

type StopSignal<'s> = Pin<&'s mut (dyn Future<Output = ()> + Send)>;

impl Session<'_> {
    /// Sends `request` and handles every other stanza until its answer,
    /// which it returns; None when `stop` fired first.
    async fn exchange(
        &mut self,
        mut request: Element,
        id: &str,
        query_id: Option<&str>,
        stop: &mut StopSignal<'_>,
    ) -> Result<Option<Element>, CommandError> {
        request.set_attr("id", id);
        self.client.send(&request).await?;
        let deadline = tokio::time::Instant::now() + self.limits.reply_timeout;
        loop {
            let stanza = tokio::select! {
                () = stop.as_mut() => return Ok(None),
                () = tokio::time::sleep_until(deadline) => {
                    return Err(CommandError::Timeout(self.limits.reply_timeout));
                }
                stanza = self.client.next_stanza() => stanza?,
            };
            if stanza.name() == "iq"
                && stanza.attr("id") == Some(id)
                && matches!(stanza.attr("type"), Some("result" | "error"))
            {
                return Ok(Some(stanza));
            }
            self.handle(&stanza, query_id)?;
        }
    }

    fn next_id(&mut self, prefix: &str) -> String {
        self.next_query += 1;
        format!("{prefix}{}", self.next_query)
    }

    /// One stanza that is not the answer awaited.
    fn handle(&mut self, stanza: &Element, query_id: Option<&str>) -> Result<(), CommandError> {
        if let Some(query_id) = query_id
            && let Some(item) = archived_item(stanza, &self.service, self.node, query_id)
        {
            let item = self.merge.archived(item);
            return self.show(&item);
        }
        match node_event(stanza, &self.service, self.node) {
            Some(NodeEvent::Items(items)) => {
                for item in items {
                    if let Some(item) = self.merge.live(item)? {
                        self.show(&item)?;
                    }
                }
            }
            Some(NodeEvent::Retracted(ids)) => {
                eprintln!("vomesh: node {}: retracted {}", self.node, ids.join(" "));
            }
            Some(NodeEvent::Purged) => eprintln!("vomesh: node {}: purged", self.node),
            Some(NodeEvent::Deleted { redirect }) => {
                return Err(CommandError::NodeDeleted {
                    node: self.node.to_owned(),
                    redirect,
                });
            }
            Some(NodeEvent::Subscription(state)) => {
                eprintln!("vomesh: node {}: subscription {state}", self.node);
            }
            Some(NodeEvent::Configured) => {
                eprintln!("vomesh: node {}: configuration changed", self.node);
            }
            None => {}
        }
        Ok(())
    }

    fn show(&mut self, item: &ReceivedItem) -> Result<(), CommandError> {
        if let Some(id) = item.archive_id.as_deref().and_then(|id| id.parse().ok()) {
            self.last_archive_id = Some(self.last_archive_id.map_or(id, |last: u64| last.max(id)));
        }
        self.sink.deliver(item)
    }

    /// Subscribes, replays after `since`, then shows live items until
    /// `stop`.
    async fn run(
        &mut self,
        jid: &BareJid,
        since: Option<&str>,
        stop: &mut StopSignal<'_>,
    ) -> Result<(), CommandError> {
        // RFC 6121 §4.2: without initial presence the server routes no
        // notification addressed to the bare JID to this resource.
        self.client
            .send(&Element::new("presence", ns::CLIENT))
            .await?;
        let id = self.next_id("sub");
        let request = subscribe_iq(&self.service, self.node, jid);
        let Some(reply) = self.exchange(request, &id, None, stop).await? else {
            return Ok(());
        };
        // The service answers a repeated subscription with the existing one.
        match subscription_state(&reply)?.as_str() {
            "subscribed" => {}
            state => eprintln!(
                "vomesh: node {}: subscription {state}; items arrive once it is approved",
                self.node
            ),
        }
        if let Some(since) = since {
            let mut after = since.to_owned();
            loop {
                let id = self.next_id("mam");
                let request = archive_query_iq(
                    &self.service,
                    self.node,
                    &id,
                    &after,
                    self.limits.replay_page_items_max,
                );
                let Some(reply) = self.exchange(request, &id, Some(&id), stop).await? else {
                    return Ok(());
                };
                let fin = archive_fin(&reply)?;
                match fin.last {
                    Some(last) if !fin.complete && last != after => after = last,
                    _ => break,
                }
            }
            for item in self.merge.replay_done() {
                self.show(&item)?;
            }
        }
        loop {
            let stanza = tokio::select! {
                () = stop.as_mut() => return Ok(()),
                stanza = self.client.next_stanza() => stanza?,
            };
            self.handle(&stanza, None)?;
        }
    }
}

/// Subscribes to `node` and shows each item as it arrives (after replaying
/// those published after archive id `since`) until `stop` resolves; then
/// closes the stream and prints on stderr the archive id to resume from.
pub async fn subscribe(
    account: &XmppAccount,
    node: &str,
    out: Option<&Path>,
    since: Option<&str>,
    limits: ClientLimits,
    stop: impl Future<Output = ()> + Send,
) -> Result<(), CommandError> {
    let sink = match out {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|source| CommandError::Output {
                path: dir.to_owned(),
                source,
            })?;
            PayloadSink::Directory(dir.to_owned())
        }
        None => PayloadSink::Stdout,
    };
    let service = service_jid(&account.jid)?;
    let client = connect(account).await?;
    let mut session = Session {
        client,
        service,
        node,
        merge: ReplayMerge::new(since, &limits),
        sink,
        limits,
        next_query: 0,
        last_archive_id: None,
    };
    let mut stop: StopSignal<'_> = std::pin::pin!(stop);
    let outcome = session.run(&account.jid, since, &mut stop).await;
    if let Some(last) = session.last_archive_id {
        eprintln!("vomesh: last archive id seen: {last} (resume with --since {last})");
    }
    if !matches!(outcome, Err(CommandError::Client(_))) {
        close(session.client, limits).await;
    }
    outcome
}

/// `vomesh certs init`: writes the cluster's certificates and describes
/// them, one line per file pair.
pub fn certs_init(
    out: &Path,
    nodes: &[u64],
    domain: &str,
    sans: &[String],
) -> Result<String, vomesh_mesh::certs::CertError> {
    let files = vomesh_mesh::certs::write_cluster_certs(out, nodes, domain, sans)?;
    Ok(describe_cluster_certs(&files, domain))
}

fn describe_cluster_certs(files: &vomesh_mesh::certs::ClusterCertFiles, domain: &str) -> String {
    let mut out = format!(
        "cluster CA: {} {} (keep the key off the nodes; it issues certificates for new ones)\n",
        files.ca_cert.display(),
        files.ca_key.display()
    );
    for (id, cert, key) in &files.nodes {
        let _ = writeln!(
            out,
            "node {id}: {} {} ([mesh] cert and key of node {id})",
            cert.display(),
            key.display()
        );
    }
    let _ = writeln!(
        out,
        "XMPP {domain}: {} {} ([tls] cert and key of every node; clients trust {})",
        files.xmpp_cert.display(),
        files.xmpp_key.display(),
        files.ca_cert.display()
    );
    out
}

/// `vomesh status` as a table: one row per member, then this node's view.
pub fn render_status(status: &NodeStatus) -> String {
    let number = |n: Option<u64>| n.map_or_else(|| "-".to_owned(), |n| n.to_string());
    let rows: Vec<[String; 10]> = status
        .members
        .iter()
        .map(|m| {
            [
                m.id.to_string(),
                m.address.clone(),
                if m.reachable {
                    m.role.clone()
                } else {
                    format!("{} (unreachable)", m.role)
                },
                if m.voter { "yes" } else { "no" }.to_owned(),
                number(m.term),
                number(m.last_log_index),
                number(m.applied_index),
                number(m.lag),
                m.rtt_ms
                    .map_or_else(|| "-".to_owned(), |ms| format!("{ms:.1}ms")),
                number(m.sessions),
            ]
        })
        .collect();
    let header = [
        "ID", "ADDRESS", "ROLE", "VOTER", "TERM", "LAST", "APPLIED", "LAG", "RTT", "SESSIONS",
    ]
    .map(str::to_owned);
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(widths) {
            let _ = write!(line, "{cell:<width$}  ");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "node {} ({}): term {}, leader {}, last log {}, commit {}, applied {}, snapshot {}, sessions {}{}",
        status.node_id,
        status.role,
        status.term,
        number(status.leader),
        number(status.last_log_index),
        number(status.commit_index),
        number(status.applied_index),
        number(status.snapshot_index),
        status.sessions,
        if status.ready { "" } else { ", NOT READY" },
    );
    let preferences: BTreeSet<Option<u64>> = status
        .members
        .iter()
        .filter(|m| m.reachable)
        .map(|m| m.preferred_leader)
        .collect();
    if preferences.len() > 1 {
        let named: Vec<String> = status
            .members
            .iter()
            .filter(|m| m.reachable)
            .map(|m| format!("{} names {}", m.id, number(m.preferred_leader)))
            .collect();
        let _ = writeln!(
            out,
            "WARNING: the sites name different [mesh] preferred_leader ({}); the leadership is not handed to a site that names another",
            named.join(", ")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use jid::FullJid;

    use super::*;
    use crate::cli::MemberStatus;
    use crate::pubsub::archive::ArchiveQuery;
    use crate::pubsub::{Handled, Meta, PubsubLimits, PubsubService, RequestContext};

    const ALICE: &str = "alice@localhost/desk";
    const BOB: &str = "bob@localhost/phone";

    fn bare(jid: &str) -> BareJid {
        BareJid::new(jid).unwrap()
    }

    fn service() -> BareJid {
        bare("pubsub.localhost")
    }

    /// A stanza as the client's stream parser yields it: inside a
    /// `jabber:client` stream.
    fn stanza(text: &str) -> Element {
        let wrapped = format!("<stream xmlns='jabber:client'>{text}</stream>");
        let stream = parse_document(wrapped.as_bytes(), ClientLimits::DEFAULT.payload).unwrap();
        stream.children().next().unwrap().clone()
    }

    fn payload(text: &str) -> Element {
        parse_document(text.as_bytes(), ClientLimits::DEFAULT.payload).unwrap()
    }

    struct LocalUsers;

    impl RequestContext for LocalUsers {
        fn is_local_user(&self, bare: &BareJid) -> bool {
            bare.domain().as_str() == "localhost"
        }
        fn in_roster_group(&self, _: &BareJid, _: &BareJid, _: &[String]) -> bool {
            false
        }
        fn has_presence_subscription(&self, _: &BareJid, _: &BareJid) -> bool {
            false
        }
    }

    /// The real pubsub service, answering the client's own requests the
    /// way the server wraps its answers: IQ replies, and messages to each
    /// recipient.
    struct Site {
        service: PubsubService,
        index: u64,
        now_micros: i64,
    }

    /// 2026-01-01T00:00:00Z
    const T0: i64 = 1_767_225_600_000_000;

    impl Site {
        fn new() -> Site {
            Site {
                service: PubsubService::new(service(), PubsubLimits::default()),
                index: 0,
                now_micros: T0,
            }
        }

        /// The reply to `iq` from `from`, and the messages sent meanwhile
        /// as `(recipient, stanza)`.
        fn request(&mut self, from: &str, mut iq: Element) -> (Element, Vec<(String, Element)>) {
            self.now_micros += 1_000_000;
            iq.set_attr("id", "t1");
            let sender = FullJid::new(from).unwrap();
            let from_service = service().to_string();
            let message = |to: &str, n: &crate::pubsub::Notification| {
                (to.to_owned(), stanza(&n.to_stanza(&from_service, to, None)))
            };
            let (reply, messages) =
                match self
                    .service
                    .handle_iq(&sender, &iq, self.now_micros, &LocalUsers)
                {
                    Handled::Reply(reply) => (reply, Vec::new()),
                    Handled::Archive { messages, fin } => {
                        let sent = messages.iter().map(|n| message(from, n)).collect();
                        (Ok(Some(fin)), sent)
                    }
                    Handled::Propose(command) => {
                        self.index += 1;
                        let outcome = self.service.apply(
                            &command,
                            &Meta {
                                index: self.index,
                                reply_wanted: true,
                            },
                        );
                        let sent = outcome
                            .notifications
                            .iter()
                            .flat_map(|n| n.recipients.iter().map(move |to| (to.to_string(), n)))
                            .map(|(to, n)| message(&to, n))
                            .collect();
                        (outcome.reply, sent)
                    }
                };
            let mut answer = Element::new("iq", ns::CLIENT)
                .with_attr("from", from_service)
                .with_attr("id", "t1");
            match reply {
                Ok(child) => {
                    answer.set_attr("type", "result");
                    if let Some(child) = child {
                        answer.push_child(child);
                    }
                }
                Err(error) => {
                    answer.set_attr("type", "error");
                    answer.push_child(error.to_element());
                }
            }
            (stanza(&answer.to_stream_xml(ns::CLIENT)), messages)
        }

        fn create(&mut self, node: &str) {
            let create = Element::new("pubsub", PUBSUB_NS)
                .with_child(Element::new("create", PUBSUB_NS).with_attr("node", node));
            let (reply, _) = self.request(ALICE, iq("set", &service(), create));
            assert_eq!(reply.attr("type"), Some("result"), "{}", reply.to_xml());
        }

        fn publish(&mut self, node: &str, text: &str) -> (String, Vec<(String, Element)>) {
            let (reply, sent) = self.request(ALICE, publish_iq(&service(), node, payload(text)));
            (published_item_id(&reply).unwrap(), sent)
        }
    }

    #[test]
    fn publish_request_carries_the_payload_without_an_item_id() {
        let request = publish_iq(&service(), "alerts", payload("<p xmlns='urn:p'>1</p>"));
        assert_eq!(
            request.to_stream_xml(ns::CLIENT),
            "<iq type=\"set\" to=\"pubsub.localhost\"><pubsub xmlns=\"http://jabber.org/protocol/pubsub\">\
             <publish node=\"alerts\"><item><p xmlns=\"urn:p\">1</p></item></publish></pubsub></iq>"
        );
    }

    #[test]
    fn publish_reply_yields_the_item_id_the_service_chose() {
        let mut site = Site::new();
        site.create("alerts");
        let (first, _) = site.publish("alerts", "<p xmlns='urn:p'>1</p>");
        let (second, _) = site.publish("alerts", "<p xmlns='urn:p'>2</p>");
        assert!(!first.is_empty());
        assert_ne!(first, second);
    }

    #[test]
    fn publish_error_names_condition_pubsub_child_and_text() {
        let mut site = Site::new();
        site.create("alerts");
        let (reply, _) = site.request(
            BOB,
            publish_iq(&service(), "alerts", payload("<p xmlns='urn:p'/>")),
        );
        let Err(CommandError::Refused { error, .. }) = published_item_id(&reply) else {
            panic!("expected a refusal: {}", reply.to_xml());
        };
        assert_eq!(error.condition, "forbidden");
        assert!(error.to_string().starts_with("forbidden"), "{error}");
    }

    #[test]
    fn iq_error_shows_unsupported_feature_and_text() {
        let error = crate::pubsub::StanzaError::unsupported("persistent-items").with_text("no");
        let reply = stanza(
            &Element::new("iq", ns::CLIENT)
                .with_attr("type", "error")
                .with_child(error.to_element())
                .to_stream_xml(ns::CLIENT),
        );
        assert_eq!(
            IqError::from_reply(&reply).to_string(),
            "feature-not-implemented (unsupported feature='persistent-items'): no"
        );
    }

    #[test]
    fn result_without_item_id_is_a_protocol_error() {
        let reply = stanza(
            "<iq type='result' id='x'><pubsub xmlns='http://jabber.org/protocol/pubsub'/></iq>",
        );
        assert!(matches!(
            published_item_id(&reply),
            Err(CommandError::Protocol { .. })
        ));
    }

    #[test]
    fn subscribing_twice_answers_subscribed_both_times() {
        let mut site = Site::new();
        site.create("alerts");
        for _ in 0..2 {
            let (reply, _) = site.request(
                BOB,
                subscribe_iq(&service(), "alerts", &bare("bob@localhost")),
            );
            assert_eq!(subscription_state(&reply).unwrap(), "subscribed");
        }
    }

    #[test]
    fn archive_query_is_read_by_the_service_as_a_page_after_the_id() {
        let request = archive_query_iq(&service(), "alerts", "q7", "42", 100);
        let query = request.child("query", MAM_NS).unwrap();
        let parsed = ArchiveQuery::try_from(query).unwrap();
        assert_eq!(parsed.node, "alerts");
        assert_eq!(parsed.query_id.as_deref(), Some("q7"));
        assert_eq!(parsed.rsm.after.as_deref(), Some("42"));
        assert_eq!(parsed.rsm.max, Some(100));
    }

    /// Three items published before the query, paged two at a time.
    #[test]
    fn archive_pages_yield_items_with_archive_ids_stamps_and_payloads() {
        let mut site = Site::new();
        site.create("alerts");
        let ids: Vec<String> = (1..=3)
            .map(|n| {
                site.publish("alerts", &format!("<p xmlns='urn:p'>{n}</p>"))
                    .0
            })
            .collect();
        let mut after = "0".to_owned();
        let mut replayed = Vec::new();
        loop {
            let (reply, sent) =
                site.request(BOB, archive_query_iq(&service(), "alerts", "q1", &after, 2));
            for (to, message) in &sent {
                assert_eq!(to, BOB);
                replayed.push(archived_item(message, &service(), "alerts", "q1").unwrap());
                // Another query's results are not this one's.
                assert_eq!(archived_item(message, &service(), "alerts", "q2"), None);
            }
            let fin = archive_fin(&reply).unwrap();
            match fin.last {
                Some(last) if !fin.complete => after = last,
                _ => break,
            }
        }
        let got: Vec<(&str, Option<&str>, String)> = replayed
            .iter()
            .map(|i| {
                (
                    i.item_id.as_str(),
                    i.archive_id.as_deref(),
                    i.payload.as_ref().unwrap().to_xml(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (
                    ids[0].as_str(),
                    Some("2"),
                    "<p xmlns=\"urn:p\">1</p>".to_owned()
                ),
                (
                    ids[1].as_str(),
                    Some("3"),
                    "<p xmlns=\"urn:p\">2</p>".to_owned()
                ),
                (
                    ids[2].as_str(),
                    Some("4"),
                    "<p xmlns=\"urn:p\">3</p>".to_owned()
                ),
            ]
        );
        assert!(replayed.iter().all(|i| i.stamp.is_some()));
    }

    #[test]
    fn live_notification_and_archive_result_agree_on_the_publication() {
        let mut site = Site::new();
        site.create("alerts");
        site.request(
            BOB,
            subscribe_iq(&service(), "alerts", &bare("bob@localhost")),
        );
        let (id, sent) = site.publish("alerts", "<p xmlns='urn:p'>1</p>");
        assert_eq!(sent.len(), 1);
        let Some(NodeEvent::Items(live)) = node_event(&sent[0].1, &service(), "alerts") else {
            panic!("no item event in {}", sent[0].1.to_xml());
        };
        let (_, archived) = site.request(BOB, archive_query_iq(&service(), "alerts", "q", "0", 10));
        let archived = archived_item(&archived[0].1, &service(), "alerts", "q").unwrap();
        assert_eq!(live[0].item_id, id);
        assert_eq!(live[0].stamp, archived.stamp);
        assert_eq!(live[0].payload, archived.payload);
        // XEP-0359: live notifications carry the archive id too.
        assert!(live[0].archive_id.is_some());
        assert_eq!(live[0].archive_id, archived.archive_id);
        let mut merge = ReplayMerge::new(Some("0"), &ClientLimits::DEFAULT);
        assert_eq!(merge.live(live[0].clone()).unwrap(), None);
        merge.archived(archived);
        assert!(merge.replay_done().is_empty());
    }

    #[test]
    fn stanza_id_from_the_service_gives_a_live_item_its_archive_id() {
        let message = stanza(
            "<message from='pubsub.localhost'>\
             <event xmlns='http://jabber.org/protocol/pubsub#event'><items node='n'><item id='a'/></items></event>\
             <stanza-id xmlns='urn:xmpp:sid:0' by='pubsub.localhost' id='17'/>\
             <stanza-id xmlns='urn:xmpp:sid:0' by='mallory@localhost' id='99'/></message>",
        );
        let Some(NodeEvent::Items(items)) = node_event(&message, &service(), "n") else {
            panic!("no items");
        };
        assert_eq!(items[0].archive_id.as_deref(), Some("17"));
        assert_eq!(items[0].payload, None);
    }

    #[test]
    fn retract_purge_and_delete_events_are_recognised() {
        use crate::pubsub::response::{delete_event, purge_event, retract_event};
        let wrap = |event: Element| {
            stanza(&format!(
                "<message from='pubsub.localhost'>{}</message>",
                event.to_xml()
            ))
        };
        assert_eq!(
            node_event(
                &wrap(retract_event("n", &["a".to_owned()])),
                &service(),
                "n"
            ),
            Some(NodeEvent::Retracted(vec!["a".to_owned()]))
        );
        assert_eq!(
            node_event(&wrap(purge_event("n")), &service(), "n"),
            Some(NodeEvent::Purged)
        );
        assert_eq!(
            node_event(
                &wrap(delete_event("n", Some("xmpp:x?;node=m"))),
                &service(),
                "n"
            ),
            Some(NodeEvent::Deleted {
                redirect: Some("xmpp:x?;node=m".to_owned())
            })
        );
        // Another node's events are not this subscription's.
        assert_eq!(node_event(&wrap(purge_event("m")), &service(), "n"), None);
    }

    #[test]
    fn events_not_from_the_service_are_ignored() {
        let message = stanza(
            "<message from='mallory@localhost/x'>\
             <event xmlns='http://jabber.org/protocol/pubsub#event'><items node='n'><item id='a'/></items></event></message>",
        );
        assert_eq!(node_event(&message, &service(), "n"), None);
    }

    fn item(id: &str, archive_id: Option<&str>, stamp: &str) -> ReceivedItem {
        ReceivedItem {
            item_id: id.to_owned(),
            archive_id: archive_id.map(str::to_owned),
            stamp: Some(stamp.to_owned()),
            payload: Some(Element::new("p", "urn:p").with_text(id)),
        }
    }

    fn ids(items: &[ReceivedItem]) -> Vec<&str> {
        items.iter().map(|i| i.item_id.as_str()).collect()
    }

    #[test]
    fn without_since_live_items_pass_straight_through() {
        let mut merge = ReplayMerge::new(None, &ClientLimits::DEFAULT);
        let live = merge.live(item("a", None, "t1")).unwrap();
        assert_eq!(live.map(|i| i.item_id), Some("a".to_owned()));
    }

    #[test]
    fn live_items_during_replay_are_held_and_released_unless_replayed() {
        let mut merge = ReplayMerge::new(Some("10"), &ClientLimits::DEFAULT);
        assert_eq!(merge.live(item("b", None, "t12")).unwrap(), None);
        assert_eq!(merge.live(item("c", None, "t13")).unwrap(), None);
        merge.archived(item("a", Some("11"), "t11"));
        merge.archived(item("b", Some("12"), "t12"));
        assert_eq!(ids(&merge.replay_done()), ["c"]);
        // After the replay, a late live copy of a replayed item is dropped
        // and a new item passes.
        assert_eq!(merge.live(item("a", None, "t11")).unwrap(), None);
        assert!(merge.live(item("d", None, "t14")).unwrap().is_some());
    }

    #[test]
    fn republished_item_id_is_a_new_publication() {
        let mut merge = ReplayMerge::new(Some("10"), &ClientLimits::DEFAULT);
        merge.live(item("a", None, "t20")).unwrap();
        merge.archived(item("a", Some("11"), "t11"));
        assert_eq!(ids(&merge.replay_done()), ["a"]);
    }

    #[test]
    fn live_item_at_or_before_since_is_dropped_when_its_archive_id_is_known() {
        let mut merge = ReplayMerge::new(Some("10"), &ClientLimits::DEFAULT);
        merge.live(item("old", Some("9"), "t9")).unwrap();
        merge.live(item("new", Some("11"), "t11")).unwrap();
        assert_eq!(ids(&merge.replay_done()), ["new"]);
    }

    #[test]
    fn too_many_held_live_items_stop_the_replay() {
        let limits = ClientLimits {
            live_buffer_items_max: 1,
            ..ClientLimits::DEFAULT
        };
        let mut merge = ReplayMerge::new(Some("0"), &limits);
        merge.live(item("a", None, "t1")).unwrap();
        assert!(matches!(
            merge.live(item("b", None, "t2")),
            Err(CommandError::LiveBufferFull(1))
        ));
    }

    #[test]
    fn replay_window_forgets_the_oldest_items() {
        let limits = ClientLimits {
            replay_window_items_max: 1,
            ..ClientLimits::DEFAULT
        };
        let mut merge = ReplayMerge::new(Some("0"), &limits);
        merge.live(item("a", None, "t1")).unwrap();
        merge.live(item("b", None, "t2")).unwrap();
        merge.archived(item("a", Some("1"), "t1"));
        merge.archived(item("b", Some("2"), "t2"));
        // Only b is remembered: a window of one.
        assert_eq!(ids(&merge.replay_done()), ["a"]);
    }

    #[test]
    fn file_names_keep_plain_ids_and_encode_the_rest() {
        assert_eq!(item_file_name("65a1f0c2"), "65a1f0c2.xml");
        assert_eq!(
            item_file_name("ivo://nasa.gsfc.gcn/SWIFT#BAT_123"),
            "ivo%3A%2F%2Fnasa.gsfc.gcn%2FSWIFT%23BAT_123.xml"
        );
        assert_eq!(item_file_name(".."), "%2E..xml");
        assert_eq!(item_file_name("a/../b"), "a%2F..%2Fb.xml");
    }

    #[test]
    fn long_and_empty_ids_get_bounded_distinct_names() {
        let long_a = item_file_name(&"a".repeat(300));
        let long_b = item_file_name(&format!("{}b", "a".repeat(299)));
        assert!(long_a.len() <= 204, "{}", long_a.len());
        assert_ne!(long_a, long_b);
        let empty = item_file_name("");
        assert!(empty.starts_with('-') && empty.ends_with(".xml"), "{empty}");
    }

    #[test]
    fn directory_sink_writes_one_file_per_item() {
        let dir = tempfile::tempdir().unwrap();
        let sink = PayloadSink::Directory(dir.path().to_owned());
        sink.deliver(&item("ivo://x/y#1", None, "t")).unwrap();
        let written = std::fs::read_to_string(dir.path().join("ivo%3A%2F%2Fx%2Fy%231.xml"));
        assert_eq!(written.unwrap(), "<p xmlns=\"urn:p\">ivo://x/y#1</p>");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn status_table_aligns_members_and_summarises_the_node() {
        let status = NodeStatus {
            node_id: 1,
            role: "leader".to_owned(),
            term: 3,
            leader: Some(1),
            last_log_index: Some(10),
            commit_index: Some(10),
            applied_index: Some(9),
            snapshot_index: None,
            sessions: 2,
            ready: true,
            members: vec![
                MemberStatus {
                    id: 1,
                    address: "127.0.0.1:7001".to_owned(),
                    role: "leader".to_owned(),
                    voter: true,
                    lag: Some(0),
                    reachable: true,
                    term: Some(3),
                    last_log_index: Some(10),
                    applied_index: Some(9),
                    sessions: Some(2),
                    rtt_ms: None,
                    preferred_leader: Some(1),
                },
                MemberStatus {
                    id: 12,
                    address: "site-b.example.org:7001".to_owned(),
                    role: "learner".to_owned(),
                    voter: false,
                    lag: None,
                    reachable: false,
                    term: None,
                    last_log_index: None,
                    applied_index: None,
                    sessions: None,
                    rtt_ms: Some(182.44),
                    preferred_leader: None,
                },
            ],
        };
        assert_eq!(
            render_status(&status),
            "ID  ADDRESS                  ROLE                   VOTER  TERM  LAST  APPLIED  LAG  RTT      SESSIONS\n\
             1   127.0.0.1:7001           leader                 yes    3     10    9        0    -        2\n\
             12  site-b.example.org:7001  learner (unreachable)  no     -     -     -        -    182.4ms  -\n\
             node 1 (leader): term 3, leader 1, last log 10, commit 10, applied 9, snapshot -, sessions 2\n"
        );
        let not_ready = NodeStatus {
            ready: false,
            ..status
        };
        assert!(render_status(&not_ready).ends_with(", NOT READY\n"));
        let mut disagreeing = not_ready.clone();
        disagreeing.members[1].reachable = true;
        assert!(
            render_status(&disagreeing).ends_with(
                "WARNING: the sites name different [mesh] preferred_leader (1 names 1, 12 names -); the leadership is not handed to a site that names another\n"
            ),
            "{}",
            render_status(&disagreeing)
        );
    }

    #[test]
    fn certs_init_names_every_file_it_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("certs");
        let text = certs_init(&out, &[1, 2], "example.org", &[]).unwrap();
        for name in [
            "ca.crt",
            "ca.key",
            "node-1.crt",
            "node-2.key",
            "xmpp.crt",
            "xmpp.key",
        ] {
            assert!(out.join(name).is_file(), "{name}");
            assert!(
                text.contains(&out.join(name).display().to_string()),
                "{text}"
            );
        }
        assert_eq!(text.lines().count(), 4, "{text}");
        // A second run refuses to replace the CA.
        assert!(certs_init(&out, &[1], "example.org", &[]).is_err());
    }
}
