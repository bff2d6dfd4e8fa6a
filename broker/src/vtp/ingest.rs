//! Ingesting one VOEvent that arrived over VTP (from an author or an
//! upstream broker): check it, publish it into the mesh through
//! [`Broker::propose`] — the same path an XMPP publish takes — and say
//! whether to ack or nak.
//!
//! Nothing is de-duplicated here: the same packet ingested at two sites is
//! proposed twice, and the replicated apply keeps one copy (see
//! `PubsubNode::has_version`), so every site agrees without a per-site
//! cache.

use std::sync::Arc;

use jid::Jid;
use vomesh_proto::pubsub::VtpIngest;

use crate::metrics::names;
use crate::pubsub::PubsubService;
use crate::server::broker::{Broker, Reply};
use crate::voevent::{self, InvalidVoEvent};
use crate::vtp::route::NodeTemplate;
use crate::xml::Element;

/// Why an event was not published; the label of
/// `vomesh_vtp_events_refused_total` and of sent naks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not well-formed, or not a VOEvent.
    Malformed,
    /// Longer than `max_message_bytes`.
    TooLarge,
    /// Against the VOEvent 2.0 schema rules checked (root, children).
    InvalidVoEvent,
    /// The IVORN is not `ivo://authority/resource#local`.
    InvalidIvorn,
    /// The author's address is outside `author_allow`.
    NotAllowed,
    /// The mesh applied the publish and refused it (e.g. `forbidden` on a
    /// node the bridge may not publish to).
    Refused,
    /// The mesh could not commit it (no leader, overloaded, shutting down).
    Unavailable,
}

impl Refusal {
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed",
            Refusal::TooLarge => "too-large",
            Refusal::InvalidVoEvent => "invalid-voevent",
            Refusal::InvalidIvorn => "invalid-ivorn",
            Refusal::NotAllowed => "not-allowed",
            Refusal::Refused => "refused",
            Refusal::Unavailable => "unavailable",
        }
    }
}

/// The outcome of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Committed in the mesh (or already there): ack with this IVORN.
    Committed { ivorn: String },
    /// Not published; the text goes in the nak's `Meta/Result`.
    Refused {
        reason: Refusal,
        text: String,
        /// The event's IVORN, when it has one, for the nak's `Origin`.
        ivorn: String,
    },
}

impl Verdict {
    pub fn refused(reason: Refusal, text: impl Into<String>, ivorn: &str) -> Verdict {
        Verdict::Refused {
            reason,
            text: text.into(),
            ivorn: ivorn.to_owned(),
        }
    }
}

/// What every ingesting task shares.
pub struct Ingest {
    pub broker: Arc<Broker>,
    pub template: NodeTemplate,
    /// The JID the bridge publishes as: the site's domain (the server).
    pub actor: Jid,
}

impl Ingest {
    /// Publishes the VOEvent `root`, whose message was `packet`, received
    /// from a peer that named itself `peer_ivo` (empty if it did not) and
    /// returns once the mesh committed it and this site applied it.
    pub async fn publish(
        &self,
        packet: &[u8],
        root: &Element,
        peer_ivo: &str,
        source: &'static str,
    ) -> Verdict {
        let verdict = self.publish_unlabelled(packet, root, peer_ivo).await;
        if let Verdict::Refused { reason, text, .. } = &verdict {
            tracing::info!(
                source,
                reason = reason.label(),
                text,
                "VTP event not published"
            );
            metrics::counter!(names::VTP_EVENTS_REFUSED_TOTAL, "source" => source, "reason" => reason.label())
                .increment(1);
        }
        verdict
    }

    async fn publish_unlabelled(&self, packet: &[u8], root: &Element, peer_ivo: &str) -> Verdict {
        let raw_ivorn = root.attr("ivorn").unwrap_or_default();
        let header = match voevent::validate(root) {
            Ok(header) => header,
            Err(error @ (InvalidVoEvent::Ivorn { .. } | InvalidVoEvent::MissingIvorn)) => {
                return Verdict::refused(Refusal::InvalidIvorn, error.to_string(), raw_ivorn);
            }
            Err(error) => {
                return Verdict::refused(Refusal::InvalidVoEvent, error.to_string(), raw_ivorn);
            }
        };
        let ivorn = header.ivorn.to_string();
        let vtp = VtpIngest {
            peer_ivo: peer_ivo.to_owned(),
            packet: packet.to_vec(),
        };
        let command = match PubsubService::voevent_publish(
            &self.actor,
            root,
            self.template.node(&header.ivorn),
            Some(vtp),
            crate::clock::now_micros(),
        ) {
            Ok(command) => command,
            Err(error) => {
                return Verdict::refused(Refusal::InvalidVoEvent, error.to_string(), &ivorn);
            }
        };
        match self.broker.propose(&command).await {
            Ok((_, Reply::Result(_))) => Verdict::Committed { ivorn },
            Ok((_, Reply::Error(error))) => {
                let text = error
                    .children()
                    .find(|c| c.name() == "text")
                    .map(Element::text)
                    .unwrap_or_else(|| error.to_xml());
                Verdict::refused(
                    Refusal::Refused,
                    format!("the mesh refused it: {text}"),
                    &ivorn,
                )
            }
            Err(error) => Verdict::refused(
                Refusal::Unavailable,
                format!("not committed: {error}"),
                &ivorn,
            ),
        }
    }
}
