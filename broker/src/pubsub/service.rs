//! The pubsub service state machine (XEP-0060 with XEP-0313 node archives).
//!
//! Reads are answered by [`PubsubService::handle_iq`] from local state.
//! Writes are checked there as far as local state allows (to avoid
//! proposing garbage) and become a [`Command`]; once the command is
//! committed, every site runs [`PubsubService::apply`], which repeats the
//! checks against the state at that log position — its answer is the
//! authoritative reply — and returns the notifications this site delivers
//! to its own clients. `apply` reads no clock: the command's timestamp is
//! the publication time, and ids derived from the log index (`Meta::index`)
//! are the same at every site.
//!
//! This file holds the service's public types; the behaviour is split by
//! concern: `handle` (requests and reads), `checks` (permissions and
//! preconditions shared by both paths), `apply` (state transitions and
//! notifications) and `snapshot`.

use std::collections::BTreeMap;
use std::sync::Arc;

use jid::{BareJid, Jid};
use vomesh_proto::pubsub::{Command, command::Op};

use crate::pubsub::config::PubsubLimits;
use crate::pubsub::error::{Condition, ErrorType, StanzaError};
use crate::pubsub::model::{Item, NodeConfig, NotificationType, PubsubNode};
use crate::xml::Element;

/// Where a command sits in the replicated log, and whether this site
/// answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// Raft log index = archive id = global sequence number.
    pub index: u64,
    /// Whether this site answers the command (in the mesh, only the leader
    /// does, for the commands proposed through it). Where it does not, a
    /// publish's result is left out of the outcome (`Ok(None)`): it was
    /// built at every site for one to send.
    pub reply_wanted: bool,
}

/// The `type` of a notification message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    Headline,
    Normal,
}

impl MessageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::Headline => "headline",
            MessageKind::Normal => "normal",
        }
    }
}

/// One message the service sends, to one or more recipients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// A bare JID means every available resource of that account on this
    /// site; a full JID means that resource only.
    pub recipients: Vec<Jid>,
    pub kind: MessageKind,
    /// The children of the `<message/>`, serialized once for every
    /// recipient; each declares its own namespace, so the text is correct
    /// inside any stream.
    pub message: Arc<str>,
}

impl Notification {
    /// The complete `<message/>` for one recipient.
    pub fn to_stanza(&self, from: &str, to: &str, id: Option<&str>) -> String {
        let mut out = self.head(from, to, id);
        out.push_str(&self.message);
        out.push_str(Self::TAIL);
        out
    }

    /// What follows [`Notification::message`] in a stanza.
    pub const TAIL: &'static str = "</message>";

    /// The `<message …>` start tag for one recipient: a connection writes
    /// it, then the shared [`Notification::message`], then
    /// [`Notification::TAIL`], so the payload is never copied per recipient.
    pub fn head(&self, from: &str, to: &str, id: Option<&str>) -> String {
        let mut out = String::with_capacity(128);
        out.push_str("<message");
        for (name, value) in [("from", Some(from)), ("to", Some(to)), ("id", id)] {
            if let Some(value) = value {
                out.push(' ');
                out.push_str(name);
                out.push_str("=\"");
                crate::xml::escape_into(&mut out, value, true);
                out.push('"');
            }
        }
        out.push_str(" type=\"");
        out.push_str(self.kind.as_str());
        out.push_str("\">");
        out
    }
}

/// What applying a command produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The child of the IQ result to send the requester (at the site that
    /// proposed the command), or the error.
    pub reply: Result<Option<Element>, StanzaError>,
    pub notifications: Vec<Notification>,
    /// The item a `Publish` added (its node is the command's): `None` for
    /// every other command, a refused publish, and an idempotent VOEvent
    /// republish — so bridges and metrics count each event once.
    pub published: Option<Arc<Item>>,
    /// Archive entries the command pushed out, by the bound that did.
    pub archive_dropped: ArchiveDrops,
}

/// What to do with a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Handled {
    /// Answer now: the child of the IQ result, or the error.
    Reply(Result<Option<Element>, StanzaError>),
    /// XEP-0313: send these messages to the requester, then the IQ result
    /// whose child is `fin`.
    Archive {
        messages: Vec<Notification>,
        fin: Element,
    },
    /// Propose this command; the reply comes from [`PubsubService::apply`].
    Propose(Command),
}

/// Site-local facts the service consults when a request is handled (they
/// are not replicated, so their answers are carried in the command).
pub trait RequestContext {
    /// Whether `bare` is an account of this deployment.
    fn is_local_user(&self, bare: &BareJid) -> bool;
    /// Whether `who` is in one of `groups` of `owner`'s roster.
    fn in_roster_group(&self, owner: &BareJid, who: &BareJid, groups: &[String]) -> bool;
    /// Whether `who` has a presence subscription to `owner`.
    fn has_presence_subscription(&self, owner: &BareJid, who: &BareJid) -> bool;
}

/// What applying one command gives: the reply child and notifications.
type Reply = Result<(Option<Element>, Vec<Notification>), StanzaError>;
/// A [`Reply`] plus the item a publish added.
type Applied = Result<(Option<Element>, Vec<Notification>, Option<Arc<Item>>), StanzaError>;

/// The pubsub service at `pubsub.<domain>`.
#[derive(Debug, Clone, PartialEq)]
pub struct PubsubService {
    service_jid: BareJid,
    limits: PubsubLimits,
    nodes: BTreeMap<String, PubsubNode>,
    /// Replicated user accounts: username → opaque stored credentials.
    accounts: BTreeMap<String, Vec<u8>>,
    /// Log index of the last applied command.
    last_index: u64,
    /// The archives' totals, kept in step by every change to an archive.
    archive_ledger: ArchiveLedger,
}

fn not_found(node: &str) -> StanzaError {
    StanzaError::new(Condition::ItemNotFound).with_text(format!("no node {node}"))
}

fn forbidden(text: &str) -> StanzaError {
    StanzaError::new(Condition::Forbidden).with_text(text.to_owned())
}

fn command(actor: &Jid, now_micros: i64, op: Op) -> Command {
    Command {
        actor: actor.to_string(),
        timestamp_micros: now_micros,
        op: Some(op),
    }
}

/// XEP-0060 §6.2.3.2 / §6.3.4.2: the requester holds no such subscription.
fn not_subscribed() -> StanzaError {
    StanzaError::pubsub(Condition::UnexpectedRequest, "not-subscribed").with_type(ErrorType::Cancel)
}

/// XEP-0060 §6.1.3.9: the node holds as many subscriptions as it may.
fn too_many_subscriptions() -> StanzaError {
    StanzaError::pubsub(Condition::PolicyViolation, "too-many-subscriptions")
        .with_type(ErrorType::Wait)
}

fn parse_jid(text: &str) -> Result<Jid, StanzaError> {
    Jid::new(text).map_err(|_| StanzaError::pubsub(Condition::BadRequest, "invalid-jid"))
}

impl PubsubService {
    pub fn new(service_jid: BareJid, limits: PubsubLimits) -> Self {
        PubsubService {
            service_jid,
            limits,
            nodes: BTreeMap::new(),
            accounts: BTreeMap::new(),
            last_index: 0,
            archive_ledger: ArchiveLedger::default(),
        }
    }

    pub fn service_jid(&self) -> &BareJid {
        &self.service_jid
    }

    pub fn limits(&self) -> &PubsubLimits {
        &self.limits
    }

    pub fn node(&self, id: &str) -> Option<&PubsubNode> {
        self.nodes.get(id)
    }

    pub fn nodes(&self) -> impl Iterator<Item = &PubsubNode> {
        self.nodes.values()
    }

    /// The stored credentials of a replicated account.
    pub fn account(&self, username: &str) -> Option<&[u8]> {
        self.accounts.get(username).map(Vec::as_slice)
    }

    pub fn accounts(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.accounts
            .iter()
            .map(|(u, c)| (u.as_str(), c.as_slice()))
    }

    /// Log index of the last applied command.
    pub fn last_index(&self) -> u64 {
        self.last_index
    }

    /// Archive entries across all nodes.
    pub fn archive_entries(&self) -> u64 {
        self.archive_ledger.entries()
    }

    /// Payload and id bytes of the archive entries across all nodes: what
    /// `max_archive_bytes` bounds.
    pub fn archive_bytes(&self) -> u64 {
        self.archive_ledger.bytes()
    }

    /// When the next item expires (pubsub#item_expire), or the next archive
    /// entry (`max_archive_age_seconds`): the leader proposes `ExpireItems`
    /// stamped at or after this time.
    pub fn next_expiry_micros(&self) -> Option<i64> {
        let items = self
            .nodes
            .values()
            .filter(|n| n.config.item_expire_seconds > 0)
            .filter_map(|n| {
                let lifetime = i64::try_from(n.config.item_expire_seconds)
                    .ok()?
                    .saturating_mul(1_000_000);
                n.items
                    .values()
                    .map(|i| i.published_micros.saturating_add(lifetime))
                    .min()
            })
            .min();
        items.into_iter().chain(self.archive_expiry_micros()).min()
    }
}

fn notification_kind(config: &NodeConfig) -> MessageKind {
    match config.notification_type {
        NotificationType::Normal => MessageKind::Normal,
        _ => MessageKind::Headline,
    }
}

mod apply;
mod archive_budget;
mod checks;
mod handle;
mod restore;
mod snapshot;

pub use archive_budget::ArchiveDrops;
use archive_budget::ArchiveLedger;
pub use snapshot::{FrozenState, SnapshotError};

#[cfg(test)]
mod tests;
