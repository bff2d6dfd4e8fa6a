//! The pubsub service at `pubsub.<domain>` as a router component: it takes
//! the stanzas clients send to the service, answers reads from the local
//! replica, and turns writes into commands proposed to the mesh.
//!
//! Writes are bounded by `[pubsub] max_inflight_proposals`: at the limit
//! a write is answered at once with `resource-constraint` (type `wait`)
//! rather than queued without bound. They are proposed in the order the
//! sessions routed them (RFC 6120 §10.1: a server processes the stanzas
//! of a stream in the order it received them): one task starts every
//! proposal, in arrival order, and drives them all to their answers, so a
//! publisher's pipelined publishes take log indexes in the order sent
//! when its site leads the mesh. (A follower forwards them in several
//! requests at once, which the leader may take in another order.)
//! Notifications are not sent from here: every site sends them when it
//! applies the committed command (see [`crate::replica`]).
//!
//! Item expiry (`pubsub#item_expire`, and `[pubsub] max_archive_age_seconds`
//! for archive entries) is a command too: the leader proposes `ExpireItems`
//! stamped with its clock once an item or entry is due, so every site
//! removes the same ones at the same point of the log, published to or not.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use jid::{BareJid, FullJid};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use vomesh_mesh::node::{ProposeError, Role};
use vomesh_proto::pubsub::command::Op;
use vomesh_proto::pubsub::{Command, ExpireItems};

use crate::metrics::names;
use crate::pubsub::error::Condition;
use crate::pubsub::request::{MAM_NS, PUBSUB_NS};
use crate::pubsub::{Handled, Notification, PubsubService, RequestContext, StanzaError};
use crate::replica::Deliver;
use crate::server::broker::{Broker, BrokerError, Reply};
use crate::xml::Element;
use crate::xmpp::router::{Component, Router};
use crate::xmpp::stanza::{self, IqKind, StanzaKind};

/// The component's shared state.
pub struct PubsubComponent {
    broker: Arc<Broker>,
    router: Arc<Router>,
    service_jid: String,
    inflight: Arc<Semaphore>,
    /// Writes waiting to be proposed, in the order they were routed.
    proposals: mpsc::UnboundedSender<Proposal>,
    /// `vomesh_publish_commit_seconds`, held: recorded for every publish,
    /// it is not looked up in the registry each time.
    publish_commit: metrics::Histogram,
}

/// A write to propose, with the request it answers and its in-flight slot.
struct Proposal {
    request: Element,
    command: Command,
    permit: OwnedSemaphorePermit,
}

impl PubsubComponent {
    /// The component, and the task that proposes its writes (it ends with
    /// the component). Call within a tokio runtime, once the metrics
    /// recorder is installed.
    pub fn new(
        broker: Arc<Broker>,
        router: Arc<Router>,
        service_jid: &str,
        inflight_max: usize,
    ) -> Arc<Self> {
        let (proposals, queue) = mpsc::unbounded_channel();
        let component = Arc::new(PubsubComponent {
            broker,
            router,
            service_jid: service_jid.to_owned(),
            inflight: Arc::new(Semaphore::new(inflight_max)),
            proposals,
            publish_commit: metrics::histogram!(names::PUBLISH_COMMIT_SECONDS),
        });
        tokio::spawn(propose_in_order(Arc::downgrade(&component), queue));
        component
    }
}

/// Starts each proposal queued, in queue order, and drives them all until
/// answered. A proposal's first poll takes it as far as the mesh's queue
/// for Raft (or for the leader): `FuturesUnordered` first polls futures in
/// the order they were pushed, where spawning each as a task let the
/// scheduler run them in any order. The queue holds no more than the
/// in-flight slots its proposals hold. A proposal that panics ends alone,
/// as a task of its own would, not with every other write of the site.
async fn propose_in_order(
    component: Weak<PubsubComponent>,
    mut queue: mpsc::UnboundedReceiver<Proposal>,
) {
    let mut in_flight = FuturesUnordered::new();
    loop {
        tokio::select! {
            proposal = queue.recv() => {
                let (Some(proposal), Some(component)) = (proposal, component.upgrade()) else {
                    break;
                };
                // Unconstrained: tokio's cooperative budget would make a
                // proposal that reaches it yield before the mesh's queue
                // and be polled again after later ones, out of order.
                let proposed = AssertUnwindSafe(tokio::task::unconstrained(component.propose(proposal)))
                    .catch_unwind()
                    .map(|outcome| {
                        if outcome.is_err() {
                            tracing::error!("a write's proposal panicked; its request is not answered");
                        }
                    });
                in_flight.push(proposed);
            }
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
        }
    }
    while in_flight.next().await.is_some() {}
}

/// How often the leader looks for expired items and archive entries: both
/// lifetimes are in seconds, so either outlives its lifetime by at most
/// about this much.
const EXPIRY_CHECK_INTERVAL: Duration = Duration::from_secs(1);

impl PubsubComponent {
    /// Until `stop` turns true: on the leader, proposes `ExpireItems` each
    /// time an item's `pubsub#item_expire` lifetime, or an archive entry's
    /// `max_archive_age_seconds`, has passed.
    pub async fn expire_items(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(EXPIRY_CHECK_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|stop| *stop) => return,
            }
            // Only the leader proposes, so sites do not each add the same
            // housekeeping entry to the log.
            if self.broker.mesh().status().role != Role::Leader {
                continue;
            }
            let now = crate::clock::now_micros();
            let next = self
                .broker
                .read(|replica| replica.pubsub().next_expiry_micros());
            if next.is_none_or(|due| due > now) {
                continue;
            }
            let command = Command {
                actor: self.service_jid.clone(),
                timestamp_micros: now,
                op: Some(Op::ExpireItems(ExpireItems {})),
            };
            if let Err(error) = self.broker.propose(&command).await {
                tracing::warn!(%error, "item expiry not committed; retrying at the next check");
            }
        }
    }
}

/// The `Component` the router holds: a handle that spawns work on the
/// shared state.
pub struct PubsubHandle(pub Arc<PubsubComponent>);

impl Component for PubsubHandle {
    fn handle(&self, stanza: Element) {
        let Some(from) = stanza.attr("from").and_then(|f| FullJid::new(f).ok()) else {
            // The session stamps every stanza with its full JID; anything
            // else did not come from a client.
            return;
        };
        match StanzaKind::of(&stanza) {
            Some(StanzaKind::Iq) => self.0.clone().on_iq(from, stanza),
            Some(StanzaKind::Message) => self.0.clone().on_message(from, stanza),
            // Presence to the service carries nothing it acts on.
            Some(StanzaKind::Presence) | None => {}
        }
    }

    fn on_available(&self, who: &FullJid) {
        let notifications = self
            .0
            .broker
            .read(|replica| replica.pubsub().on_available(who));
        for notification in &notifications {
            self.0.router.deliver_notification(
                &self.0.service_jid,
                notification,
                crate::clock::now_micros(),
            );
        }
    }
}

impl PubsubComponent {
    fn on_iq(self: Arc<Self>, from: FullJid, iq: Element) {
        match stanza::classify_iq(&iq) {
            Ok(IqKind::Request(_)) => {}
            // The service sends no IQ requests, so no response is expected.
            Ok(IqKind::Response) => return,
            Err(error) => return self.answer_error(&iq, &error),
        }
        // A subscriber resuming at this site after losing another must see
        // every event the mesh acknowledged: archive queries are answered
        // only once this site has applied everything committed before them.
        if iq.child("query", MAM_NS).is_some() {
            return self.answer_after_catching_up(from, iq);
        }
        let handled = self.handle_locally(&from, &iq);
        if let Handled::Reply(Err(_)) = handled {
            // This site's replica may trail the mesh (a node created at
            // another site a moment ago): an error is only reported once it
            // holds against everything committed before the request.
            return self.answer_after_catching_up(from, iq);
        }
        self.answer_handled(iq, handled);
    }

    fn handle_locally(&self, from: &FullJid, iq: &Element) -> Handled {
        self.broker.read(|replica| {
            let pubsub = replica.pubsub();
            let site = SiteContext {
                pubsub,
                domain: self.broker.domain(),
            };
            pubsub.handle_iq(from, iq, crate::clock::now_micros(), &site)
        })
    }

    /// Runs as one of the `inflight` tasks, like a write: a client
    /// flooding the service with failing requests or archive queries cannot
    /// make it start tasks without bound.
    fn answer_after_catching_up(self: Arc<Self>, from: FullJid, iq: Element) {
        let Some(permit) = self.inflight_permit(&iq) else {
            return;
        };
        tokio::spawn(async move {
            if let Err(error) = self.broker.ensure_linearizable().await {
                tracing::debug!(%error, "answering from a replica that may be behind");
            }
            drop(permit);
            let handled = self.handle_locally(&from, &iq);
            self.answer_handled(iq, handled);
        });
    }

    /// A slot among the requests in flight, or `None` after answering
    /// `request` with `resource-constraint` (counted in the metrics).
    fn inflight_permit(&self, request: &Element) -> Option<tokio::sync::OwnedSemaphorePermit> {
        match self.inflight.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => {
                metrics::counter!(names::REJECTED_TOTAL, "reason" => "inflight-proposals")
                    .increment(1);
                let error = StanzaError::new(Condition::ResourceConstraint)
                    .with_text("too many requests in flight at this site; retry shortly");
                self.answer_error(request, &error);
                None
            }
        }
    }

    fn answer_handled(self: &Arc<Self>, iq: Element, handled: Handled) {
        match handled {
            Handled::Reply(Ok(child)) => {
                self.router
                    .route(stanza::iq_result(&iq, &self.service_jid, child))
            }
            Handled::Reply(Err(error)) => {
                if let Some(reason) = limit_reason(&error) {
                    metrics::counter!(names::REJECTED_TOTAL, "reason" => reason).increment(1);
                }
                self.answer_error(&iq, &error)
            }
            Handled::Archive { messages, fin } => {
                for message in &messages {
                    self.router.deliver_notification(
                        &self.service_jid,
                        message,
                        crate::clock::now_micros(),
                    );
                }
                self.router
                    .route(stanza::iq_result(&iq, &self.service_jid, Some(fin)));
            }
            Handled::Propose(command) => self.clone().spawn_proposal(iq, command),
        }
    }

    fn on_message(self: Arc<Self>, from: FullJid, message: Element) {
        let handled = self.broker.read(|replica| {
            replica
                .pubsub()
                .handle_message(&from, &message, crate::clock::now_micros())
        });
        match handled {
            None | Some(Handled::Reply(Ok(_))) | Some(Handled::Archive { .. }) => {}
            Some(Handled::Reply(Err(error))) => self.answer_error(&message, &error),
            Some(Handled::Propose(command)) => self.spawn_proposal(message, command),
        }
    }

    /// Proposes `command` and answers `request` once it is applied here.
    fn spawn_proposal(self: Arc<Self>, mut request: Element, command: Command) {
        let Some(permit) = self.inflight_permit(&request) else {
            return;
        };
        // The answer needs the request's envelope and its pubsub element
        // (an error echoes it), not the published payloads, which the
        // command carries serialized: freed now, by the thread that parsed
        // them and while they are in its cache, rather than after the
        // commit, cold, on whichever thread answers.
        drop_item_payloads(&mut request);
        let proposal = Proposal {
            request,
            command,
            permit,
        };
        if let Err(mpsc::error::SendError(proposal)) = self.proposals.send(proposal) {
            let error = StanzaError::new(Condition::ServiceUnavailable)
                .with_text("this site is shutting down");
            self.answer_error(&proposal.request, &error);
        }
    }

    /// Proposes a write and answers its request once it is applied here.
    async fn propose(self: Arc<Self>, proposal: Proposal) {
        let Proposal {
            request,
            command,
            permit,
        } = proposal;
        let is_publish = matches!(command.op, Some(Op::Publish(_)));
        let started = Instant::now();
        let result = self.broker.propose(&command).await;
        drop(permit);
        if is_publish && result.is_ok() {
            self.publish_commit.record(started.elapsed().as_secs_f64());
        }
        match result {
            Ok((_, reply)) => self.answer(&request, reply),
            Err(error) => {
                let reason = match &error {
                    BrokerError::Propose(ProposeError::TooLarge { .. }) => "too-large",
                    BrokerError::Propose(ProposeError::Overloaded { .. }) => "overloaded",
                    BrokerError::Propose(ProposeError::NotAppliedLocally(_)) => {
                        "not-applied-locally"
                    }
                    BrokerError::Propose(ProposeError::NoLeader(_)) => "no-leader",
                    BrokerError::Propose(ProposeError::Indeterminate(_)) => "indeterminate",
                    BrokerError::Propose(ProposeError::ShuttingDown) => "shutting-down",
                    BrokerError::BadReply(_) => "bad-reply",
                };
                metrics::counter!(names::REJECTED_TOTAL, "reason" => reason).increment(1);
                tracing::warn!(%error, "a write could not be committed");
                self.answer_error(&request, &write_failed(&error));
            }
        }
    }

    fn answer(&self, request: &Element, reply: Reply) {
        match reply {
            Reply::Result(child) if request.name() == "iq" => {
                let mut result = stanza::iq_result(request, &self.service_jid, None);
                if let Some(xml) = child {
                    result.push_raw(xml);
                }
                self.router.route(result)
            }
            // Messages (subscription approvals) get an answer only on error.
            Reply::Result(_) => {}
            Reply::Error(error) => self.route_error(
                request,
                stanza::error_reply_with(request, &self.service_jid, error),
            ),
        }
    }

    fn answer_error(&self, request: &Element, error: &StanzaError) {
        if !stanza::is_error(request) {
            self.route_error(
                request,
                stanza::error_reply(request, &self.service_jid, error),
            );
        }
    }

    /// Every error this service answers leaves here, so a refused publish
    /// is counted whatever refused it: a check at this site, the replicated
    /// state (an invalid VOEvent), or the mesh.
    fn route_error(&self, request: &Element, reply: Element) {
        if is_publish(request)
            && let Some(condition) = reply
                .child("error", crate::xmpp::ns::CLIENT)
                .and_then(stanza::error_condition)
        {
            metrics::counter!(names::PUBSUB_PUBLISH_ERRORS_TOTAL, "condition" => condition.to_owned())
                .increment(1);
        }
        self.router.route(reply);
    }
}

/// The `vomesh_rejected_total` reason of a request refused at a `[pubsub]`
/// limit (every limit reached is counted), None for any other error.
fn limit_reason(error: &StanzaError) -> Option<&'static str> {
    match (error.condition, error.app_name()) {
        (Condition::NotAcceptable, Some("payload-too-big")) => Some("payload-too-big"),
        (Condition::PolicyViolation, Some("too-many-subscriptions")) => {
            Some("too-many-subscriptions")
        }
        // The only policy violation without a pubsub condition: `max_nodes`.
        (Condition::PolicyViolation, None) => Some("max-nodes"),
        _ => None,
    }
}

/// An IQ set publishing to a node (XEP-0060 §7.1).
fn is_publish(request: &Element) -> bool {
    request
        .child("pubsub", PUBSUB_NS)
        .is_some_and(|pubsub| pubsub.child("publish", PUBSUB_NS).is_some())
}

/// Empties the `<item/>`s of a publish request (XEP-0060 §7.1), keeping
/// their ids.
fn drop_item_payloads(request: &mut Element) {
    let publish = request
        .child_mut("pubsub", PUBSUB_NS)
        .and_then(|pubsub| pubsub.child_mut("publish", PUBSUB_NS));
    for item in publish.into_iter().flat_map(Element::children_mut) {
        item.take_nodes();
    }
}

/// What a client is told when its write could not be committed. Never a
/// success: a publish that timed out may still commit, which is why VOEvent
/// publishes are idempotent and safe to retry.
fn write_failed(error: &BrokerError) -> StanzaError {
    match error {
        BrokerError::Propose(ProposeError::NoLeader(_)) => {
            StanzaError::new(Condition::ServiceUnavailable)
                .with_type(crate::pubsub::ErrorType::Wait)
                .with_text(
                    "no mesh leader is reachable from this site; nothing was written, retry later",
                )
        }
        BrokerError::Propose(ProposeError::Indeterminate(reason)) => StanzaError::new(
            Condition::RemoteServerTimeout,
        )
        .with_text(format!(
            "the write may or may not have been committed ({reason}); retrying a publish is safe"
        )),
        BrokerError::Propose(ProposeError::ShuttingDown) => {
            StanzaError::new(Condition::ServiceUnavailable).with_text("this site is shutting down")
        }
        BrokerError::Propose(ProposeError::TooLarge { len, max }) => {
            StanzaError::new(Condition::NotAcceptable).with_text(format!(
                "the request is {len} bytes; this mesh replicates at most {max}"
            ))
        }
        BrokerError::Propose(ProposeError::Overloaded { .. }) => {
            StanzaError::new(Condition::ResourceConstraint)
                .with_text("the mesh has too many writes in flight; retry shortly")
        }
        // Committed, hence durable and on its way to every site; this site
        // is just slow to apply it. Not a success yet, so not reported as one.
        BrokerError::Propose(ProposeError::NotAppliedLocally(committed)) => {
            StanzaError::new(Condition::RemoteServerTimeout).with_text(format!(
                "committed at index {} but not yet applied at this site; it will be",
                committed.index
            ))
        }
        BrokerError::BadReply(reason) => {
            StanzaError::new(Condition::InternalServerError).with_text(reason.clone())
        }
    }
}

/// Site facts the service consults: who is a local user. vomesh keeps no
/// rosters, so roster and presence-subscription checks are always false
/// (nodes with those access models admit only their owners and members).
struct SiteContext<'a> {
    pubsub: &'a PubsubService,
    domain: &'a str,
}

impl RequestContext for SiteContext<'_> {
    fn is_local_user(&self, bare: &BareJid) -> bool {
        bare.domain().as_str() == self.domain
            && bare
                .node()
                .is_some_and(|node| self.pubsub.account(node.as_str()).is_some())
    }

    fn in_roster_group(&self, _owner: &BareJid, _who: &BareJid, _groups: &[String]) -> bool {
        false
    }

    fn has_presence_subscription(&self, _owner: &BareJid, _who: &BareJid) -> bool {
        false
    }
}

/// Delivers the notifications of applied commands to this site's sessions,
/// and published items to its VTP broadcast port when the bridge is on.
pub struct RouterDelivery {
    pub router: Arc<Router>,
    pub service_jid: String,
    pub vtp: Option<crate::vtp::broadcast::Feed>,
}

impl Deliver for RouterDelivery {
    fn deliver(&self, notification: &Notification, published_micros: i64) {
        self.router
            .deliver_notification(&self.service_jid, notification, published_micros);
    }

    fn published(
        &self,
        publish: &vomesh_proto::pubsub::Publish,
        item: &crate::pubsub::model::Item,
    ) {
        if let Some(feed) = &self.vtp {
            feed.offer(publish, item);
        }
    }
}

/// The JID of a site's pubsub service.
pub fn service_jid(domain: &str) -> Result<BareJid, jid::Error> {
    BareJid::new(&format!("pubsub.{domain}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_at_a_limit_have_a_rejection_reason() {
        let too_big = StanzaError::pubsub(Condition::NotAcceptable, "payload-too-big");
        assert_eq!(limit_reason(&too_big), Some("payload-too-big"));
        let full = StanzaError::pubsub(Condition::PolicyViolation, "too-many-subscriptions");
        assert_eq!(limit_reason(&full), Some("too-many-subscriptions"));
    }

    #[test]
    fn other_errors_are_not_counted_as_rejections() {
        let invalid = StanzaError::pubsub(Condition::BadRequest, "invalid-payload");
        assert_eq!(limit_reason(&invalid), None);
        assert_eq!(
            limit_reason(&StanzaError::new(Condition::ItemNotFound)),
            None
        );
    }

    #[test]
    fn a_publish_awaiting_its_commit_keeps_what_its_answer_needs() {
        let item = |id: &str| {
            Element::new("item", PUBSUB_NS)
                .with_attr("id", id)
                .with_child(Element::new(
                    "VOEvent",
                    "http://www.ivoa.net/xml/VOEvent/v2.0",
                ))
        };
        let publish = Element::new("publish", PUBSUB_NS)
            .with_attr("node", "alerts")
            .with_child(item("a"))
            .with_child(item("b"));
        let mut request = Element::new("iq", crate::xmpp::ns::CLIENT)
            .with_attr("type", "set")
            .with_attr("id", "p1")
            .with_child(Element::new("pubsub", PUBSUB_NS).with_child(publish));
        drop_item_payloads(&mut request);
        assert_eq!(
            request.to_stream_xml(crate::xmpp::ns::CLIENT),
            "<iq type=\"set\" id=\"p1\"><pubsub xmlns=\"http://jabber.org/protocol/pubsub\">\
             <publish node=\"alerts\"><item id=\"a\"/><item id=\"b\"/></publish></pubsub></iq>"
        );
        assert!(is_publish(&request));
    }
}
