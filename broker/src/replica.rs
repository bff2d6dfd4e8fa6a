//! The replicated state of a node, as the mesh sees it: the pubsub service
//! (which also holds the accounts) behind the mesh's
//! [`StateMachine`](vomesh_mesh::types::StateMachine) trait.
//!
//! Every site applies the same committed commands in the same order. The
//! outcome of each is turned into two things: the reply, encoded as a
//! [`CommandReply`] and returned to whichever site proposed the command, and
//! the notifications, which each site delivers to the subscribers connected
//! to it (replication *is* distribution: sites never forward notifications
//! to each other).

use std::sync::Arc;

use bytes::Bytes;
use prost::Message as _;
use vomesh_mesh::types::{CommittedCommand, DeferredSnapshot, StateMachine};
use vomesh_proto::pubsub::command::Op;
use vomesh_proto::pubsub::{Command, CommandReply, Publish, command_reply};

use crate::metrics::names;
use crate::pubsub::model::Item;
use crate::pubsub::{Meta, Outcome, PubsubService, SnapshotError, StanzaError, error::Condition};
use crate::xml::Element;

/// Where the notifications of applied commands go: this site's sessions.
pub trait Deliver: Send + Sync {
    /// Delivers one notification to the local resources it names.
    /// `published_micros` is the publication time of the event it reports.
    fn deliver(&self, notification: &crate::pubsub::Notification, published_micros: i64);

    /// Hands over the item a committed `publish` added — not an idempotent
    /// republish, so each event is handed over once — to this site's
    /// non-XMPP subscribers (the VTP broadcast port).
    fn published(&self, publish: &Publish, item: &Item);
}

/// The state machine the mesh replicates.
pub struct Replica {
    pubsub: PubsubService,
    delivery: Arc<dyn Deliver>,
    /// Registered once: looked up by name at every publish, it cost half a
    /// per cent of a follower's CPU.
    published_total: metrics::Counter,
    archive_dropped_node_limit: metrics::Counter,
    archive_dropped_site_limit: metrics::Counter,
    archive_dropped_age_limit: metrics::Counter,
}

impl Replica {
    pub fn new(pubsub: PubsubService, delivery: Arc<dyn Deliver>) -> Self {
        Replica {
            pubsub,
            delivery,
            published_total: metrics::counter!(names::PUBSUB_PUBLISHED_TOTAL),
            archive_dropped_node_limit: metrics::counter!(
                names::PUBSUB_ARCHIVE_DROPPED_TOTAL, "limit" => "node"
            ),
            archive_dropped_site_limit: metrics::counter!(
                names::PUBSUB_ARCHIVE_DROPPED_TOTAL, "limit" => "site"
            ),
            archive_dropped_age_limit: metrics::counter!(
                names::PUBSUB_ARCHIVE_DROPPED_TOTAL, "limit" => "age"
            ),
        }
    }

    /// The local copy of the pubsub service, for reads.
    pub fn pubsub(&self) -> &PubsubService {
        &self.pubsub
    }

    /// Sets the pubsub size gauges from the state as it is now. It walks
    /// every node (110 µs for 10,000 nodes, `max_nodes`' default), so it
    /// runs when `/metrics` is scraped: run after every applied batch, as
    /// it was, a site near its node limit spent as long again on each
    /// batch.
    pub fn record_gauges(&self) {
        let (mut nodes, mut items, mut subscriptions) = (0usize, 0usize, 0usize);
        for node in self.pubsub.nodes() {
            nodes += 1;
            items += node.items.len();
            subscriptions += node.subscriptions.len();
        }
        metrics::gauge!(names::PUBSUB_NODES).set(nodes as f64);
        metrics::gauge!(names::PUBSUB_ITEMS).set(items as f64);
        metrics::gauge!(names::PUBSUB_SUBSCRIPTIONS).set(subscriptions as f64);
        metrics::gauge!(names::PUBSUB_ARCHIVE_ENTRIES).set(self.pubsub.archive_entries() as f64);
        metrics::gauge!(names::PUBSUB_ARCHIVE_BYTES).set(self.pubsub.archive_bytes() as f64);
    }

    /// Applies one committed command and returns its result.
    fn apply_one(&mut self, committed: &CommittedCommand) -> Result<Option<Element>, StanzaError> {
        // After a restart the mesh replays entries the snapshot already
        // holds; applying them twice would duplicate items.
        if committed.index <= self.pubsub.last_index() {
            return Ok(None);
        }
        let command = match Command::decode(committed.command.as_ref()) {
            Ok(command) => command,
            // Every site decodes the same bytes the same way, so refusing
            // here keeps them identical; it can only happen if a site runs
            // a build whose commands this one does not know.
            Err(error) => {
                tracing::error!(index = committed.index, %error, "undecodable command in the log");
                return Err(StanzaError::new(Condition::InternalServerError)
                    .with_text("this site cannot decode the command"));
            }
        };
        let Outcome {
            reply: result,
            notifications,
            published,
            archive_dropped,
        } = self.pubsub.apply(
            &command,
            &Meta {
                index: committed.index,
                reply_wanted: committed.response_wanted,
            },
        );
        // An idempotent republish (same IVORN, same bytes) adds nothing.
        if let Some(item) = &published {
            self.published_total.increment(1);
            if let Some(Op::Publish(publish)) = &command.op {
                self.delivery.published(publish, item);
            }
        }
        if archive_dropped.total() > 0 {
            self.archive_dropped_node_limit
                .increment(archive_dropped.node_limit);
            self.archive_dropped_site_limit
                .increment(archive_dropped.site_limit);
            self.archive_dropped_age_limit
                .increment(archive_dropped.age_limit);
        }
        for notification in &notifications {
            self.delivery
                .deliver(notification, command.timestamp_micros);
        }
        result
    }
}

fn reply(result: &Result<Option<Element>, StanzaError>) -> CommandReply {
    let reply = match result {
        Ok(child) => {
            command_reply::Reply::ResultXml(child.as_ref().map(Element::to_xml).unwrap_or_default())
        }
        Err(error) => command_reply::Reply::ErrorXml(error.to_element().to_xml()),
    };
    CommandReply { reply: Some(reply) }
}

impl StateMachine for Replica {
    type RestoreError = SnapshotError;

    /// Only the leader answers, and only for the commands proposed through
    /// it: the other sites apply a command without building or encoding
    /// its reply (28 % of the instructions of applying a publish).
    fn apply(&mut self, commands: Vec<CommittedCommand>) -> Vec<Bytes> {
        commands
            .iter()
            .map(|committed| {
                let result = self.apply_one(committed);
                if committed.response_wanted {
                    Bytes::from(reply(&result).encode_to_vec())
                } else {
                    Bytes::new()
                }
            })
            .collect()
    }

    fn snapshot(&self) -> Bytes {
        Bytes::from(self.pubsub.to_snapshot())
    }

    /// Capturing the state shares every item (`Arc`), so it costs
    /// pointers (1.2 ms for 30,000 VOEvents, `cargo bench --bench
    /// snapshot`); encoding them (23 ms) happens later, off the apply path.
    fn snapshot_later(&self) -> DeferredSnapshot {
        let frozen = self.pubsub.freeze();
        Box::new(move |out| frozen.write_to(out))
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), SnapshotError> {
        self.pubsub = PubsubService::from_snapshot(
            self.pubsub.service_jid().clone(),
            *self.pubsub.limits(),
            snapshot,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use vomesh_proto::pubsub::Publish;

    use super::*;
    use crate::pubsub::{Notification, PubsubLimits};
    use crate::xml::{ParserLimits, parse_document};

    struct Discard;

    impl Deliver for Discard {
        fn deliver(&self, _: &Notification, _: i64) {}
        fn published(&self, _: &Publish, _: &Item) {}
    }

    const GAIA: &str = include_str!("../tests/data/voevents/Gaia16aac.xml");
    const SWIFT: &str = include_str!("../tests/data/voevents/SWIFT_bat_position_v2.0_example.xml");

    fn replica() -> Replica {
        let jid = "pubsub.localhost".parse().unwrap();
        Replica::new(
            PubsubService::new(jid, PubsubLimits::default()),
            Arc::new(Discard),
        )
    }

    fn publish_command(document: &str, index: u64, response_wanted: bool) -> CommittedCommand {
        let limits = ParserLimits {
            stanza_bytes_max: 1 << 20,
            depth_max: 64,
            attributes_max: 64,
        };
        let root = parse_document(document.as_bytes(), limits).unwrap();
        let actor = "vtp@localhost".parse().unwrap();
        let command =
            PubsubService::voevent_publish(&actor, &root, "voevent/test".into(), None, 1).unwrap();
        CommittedCommand {
            index,
            command: command.encode_to_vec().into(),
            response_wanted,
        }
    }

    fn publish(replica: &mut Replica, document: &str, index: u64) -> Bytes {
        let mut responses = replica.apply(vec![publish_command(document, index, true)]);
        responses.remove(0)
    }

    #[test]
    fn only_a_wanted_response_is_encoded_and_the_state_is_the_same_either_way() {
        let (mut answering, mut silent) = (replica(), replica());
        let answer = publish(&mut answering, GAIA, 1);
        let silence = silent.apply(vec![publish_command(GAIA, 1, false)]);

        let reply = CommandReply::decode(answer).unwrap();
        let Some(command_reply::Reply::ResultXml(xml)) = reply.reply else {
            panic!("not a result: {reply:?}");
        };
        assert!(xml.contains("<item id="), "{xml}");
        assert_eq!(silence, vec![Bytes::new()]);
        assert_eq!(answering.snapshot(), silent.snapshot());
    }

    #[test]
    fn a_deferred_snapshot_is_of_the_state_when_it_was_taken() {
        let mut replica = replica();
        publish(&mut replica, GAIA, 1);
        let later = replica.snapshot_later();
        let now = replica.snapshot();

        publish(&mut replica, SWIFT, 2);
        assert_ne!(
            replica.snapshot(),
            now,
            "the second publish changed the state"
        );
        let mut written = Vec::new();
        later(&mut written).unwrap();
        assert_eq!(written, now);
    }
}
