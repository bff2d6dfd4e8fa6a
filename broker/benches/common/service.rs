//! A pubsub service fed real VOEvent publishes through `apply`, as every
//! site applies them, for the benches that need a state of some size.

use jid::BareJid;
use vomesh_broker::pubsub::service::{Meta, PubsubService};
use vomesh_broker::pubsub::{PubsubLimits, payload};
use vomesh_broker::xml::{ParserLimits, parse_document};
use vomesh_proto::pubsub::{Command, CreateNode, Publish, command::Op};

/// A service, the commands applied to it so far, and the payload it
/// publishes: a real 2 KiB VOEvent (`Gaia16aac.xml`), as a site's
/// publishers send it.
pub struct Fed {
    pub service: PubsubService,
    applied: u64,
    payload: String,
}

impl Fed {
    /// An empty service keeping up to `archive_max` archive entries per node.
    pub fn new(archive_max: usize) -> Self {
        Self::with_limits(limits(archive_max))
    }

    pub fn with_limits(limits: PubsubLimits) -> Self {
        let document = include_bytes!("../../tests/data/voevents/Gaia16aac.xml");
        let parser_limits = ParserLimits {
            stanza_bytes_max: 256 * 1024,
            depth_max: 64,
            attributes_max: 64,
        };
        let voevent = parse_document(document, parser_limits).expect("the sample VOEvent parses");
        Self {
            service: PubsubService::new(service_jid(), limits),
            applied: 0,
            payload: payload::serialize(&voevent),
        }
    }

    pub fn create(&mut self, node: &str) {
        self.apply(Op::CreateNode(CreateNode {
            node: node.to_owned(),
            config: None,
        }));
    }

    /// Publishes the VOEvent to `node` as item `item_id`.
    pub fn publish(&mut self, node: &str, item_id: String) {
        self.apply(Op::Publish(Publish {
            node: node.to_owned(),
            item_id,
            payload: self.payload.clone(),
            has_item: true,
            ..Publish::default()
        }));
    }

    fn apply(&mut self, op: Op) {
        self.applied += 1;
        let command = Command {
            actor: "alice@example.org/desk".to_owned(),
            timestamp_micros: 1_795_608_000_000_000 + self.applied as i64,
            op: Some(op),
        };
        let outcome = self.service.apply(
            &command,
            &Meta {
                index: self.applied,
                reply_wanted: true,
            },
        );
        assert!(outcome.reply.is_ok(), "{:?}", outcome.reply);
    }
}

pub fn service_jid() -> BareJid {
    BareJid::new("pubsub.example.org").expect("a valid JID")
}

/// Up to `archive_max` archive entries per node, and no bound on the
/// site's archives together: the benches size the state by entries.
pub fn limits(archive_max: usize) -> PubsubLimits {
    PubsubLimits {
        archive_entries_per_node_max: archive_max,
        archive_bytes_max: u64::MAX,
        ..PubsubLimits::default()
    }
}
