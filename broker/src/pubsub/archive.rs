//! XEP-0313 Message Archive Management on a pubsub node (§3, "Querying a
//! pubsub node"): a subscriber that was offline asks the service for what
//! it missed, by time (`start`/`end`), by archive id (`after-id`/
//! `before-id`) and pages with XEP-0059 RSM.
//!
//! Archive ids are the Raft log indices of the publishes: the same at every
//! site and strictly increasing in publication order, so the last id a
//! subscriber saw at one site is a valid resume point at any other. RSM
//! `after`/`before` and the `after-id`/`before-id` fields are therefore
//! compared as numbers: an id need not be in this node's archive to
//! resume after it, as long as nothing published after it was dropped at
//! the archive's bounds (XEP-0313 lets a server discard old entries, under
//! "Message retention and deletion"). Resuming past dropped entries is
//! `item-not-found`, as a page after an id the archive does not hold is
//! (XEP-0059 §2.6), with a text naming the oldest entry kept: the
//! subscriber learns it missed events instead of skipping them unaware.

use std::sync::Arc;

use jid::BareJid;

use crate::pubsub::config::PubsubLimits;
use crate::pubsub::datetime::parse_micros;
use crate::pubsub::error::{Condition, StanzaError};
use crate::pubsub::form::{DATA_NS, FormBuilder, SubmittedForm};
use crate::pubsub::model::{ArchiveId, Item, PubsubNode};
use crate::pubsub::request::MAM_NS;
use crate::pubsub::response::archive_result_xml;
use crate::pubsub::rsm::{self, RSM_NS, RsmRequest};
use crate::xml::Element;

/// A parsed `<query xmlns='urn:xmpp:mam:2' node='…'/>` of type set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchiveQuery {
    pub node: String,
    pub query_id: Option<String>,
    pub start_micros: Option<i64>,
    pub end_micros: Option<i64>,
    pub after_id: Option<ArchiveId>,
    pub before_id: Option<ArchiveId>,
    pub rsm: RsmRequest,
}

fn bad_request(text: String) -> StanzaError {
    StanzaError::new(Condition::BadRequest).with_text(text)
}

fn archive_id(text: &str) -> Result<ArchiveId, StanzaError> {
    text.parse().map_err(|_| {
        StanzaError::new(Condition::ItemNotFound).with_text(format!("no archive id {text}"))
    })
}

impl TryFrom<&Element> for ArchiveQuery {
    type Error = StanzaError;

    fn try_from(query: &Element) -> Result<Self, StanzaError> {
        let node = match query.attr("node") {
            Some(node) if !node.is_empty() => node.to_owned(),
            // Personal archives are not served: queries go to a node.
            _ => {
                return Err(StanzaError::pubsub(
                    Condition::BadRequest,
                    "nodeid-required",
                ));
            }
        };
        let mut parsed = ArchiveQuery {
            node,
            query_id: query.attr("queryid").map(str::to_owned),
            ..ArchiveQuery::default()
        };
        if let Some(x) = query.child("x", DATA_NS) {
            let form = SubmittedForm::parse(x)?;
            if form.form_type.as_deref().is_some_and(|t| t != MAM_NS) {
                return Err(bad_request(format!("expected a {MAM_NS} form")));
            }
            for (var, values) in &form.fields {
                let Some(value) = values.first() else {
                    continue;
                };
                let time = || {
                    parse_micros(value)
                        .ok_or_else(|| bad_request(format!("{var} is not a XEP-0082 DateTime")))
                };
                match var.as_str() {
                    "start" => parsed.start_micros = Some(time()?),
                    "end" => parsed.end_micros = Some(time()?),
                    "after-id" => parsed.after_id = Some(archive_id(value)?),
                    "before-id" => parsed.before_id = Some(archive_id(value)?),
                    // XEP-0313 §4.1.1: an unsupported field is an error.
                    _ => {
                        return Err(StanzaError::new(Condition::FeatureNotImplemented)
                            .with_text(format!("unsupported filter {var}")));
                    }
                }
            }
        }
        if let Some(set) = query.child("set", RSM_NS) {
            parsed.rsm = RsmRequest::try_from(set)?;
        }
        Ok(parsed)
    }
}

/// The query form of a node archive (XEP-0313 §5.1).
pub fn fields_form() -> Element {
    FormBuilder::new("form", MAM_NS)
        .field("start", "text-single", "Published at or after", &[], &[])
        .field("end", "text-single", "Published at or before", &[], &[])
        .field("after-id", "text-single", "After this archive id", &[], &[])
        .field(
            "before-id",
            "text-single",
            "Before this archive id",
            &[],
            &[],
        )
        .build()
}

/// Entries published after archive id `after` are no longer in `node`'s
/// archive.
fn dropped_after(node: &PubsubNode, after: ArchiveId) -> StanzaError {
    let oldest = match node.archive.front() {
        Some(item) => format!("the oldest kept is {}", item.archive_id),
        None => "none is kept".to_owned(),
    };
    StanzaError::new(Condition::ItemNotFound).with_text(format!(
        "entries after archive id {after} are no longer kept: this site's archive \
         bounds dropped those up to {}; {oldest}",
        node.archive_dropped_through()
    ))
}

/// The answer to a query: result bodies in archive order, then the `<fin/>`
/// that ends the IQ result.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchivePage {
    pub results: Vec<String>,
    pub fin: Element,
}

/// Runs `query` on `node`'s archive.
pub fn run(
    service: &BareJid,
    node: &PubsubNode,
    query: &ArchiveQuery,
    limits: &PubsubLimits,
) -> Result<ArchivePage, StanzaError> {
    let rsm_after = query.rsm.after.as_deref().and_then(|id| id.parse().ok());
    if let Some(after) = query
        .after_id
        .into_iter()
        .chain(rsm_after)
        .find(|after| node.dropped_after(*after))
    {
        return Err(dropped_after(node, after));
    }
    let archive = &node.archive;
    // Ids are sorted: the id bounds are two binary searches.
    let first = query.after_id.map_or(0, |after| {
        archive.partition_point(|i| i.archive_id <= after)
    });
    let end = query
        .before_id
        .map_or(archive.len(), |before| {
            archive.partition_point(|i| i.archive_id < before)
        })
        .max(first);
    // Publication times follow the log order only as far as the proposing
    // sites' clocks agree, so a time window is a filter, not a search; the
    // common catch-up query (ids only) reads just the page it returns.
    let timed = query.start_micros.is_some() || query.end_micros.is_some();
    let filtered: Vec<&Arc<Item>> = if timed {
        archive
            .range(first..end)
            .filter(|i| query.start_micros.is_none_or(|s| i.published_micros >= s))
            .filter(|i| query.end_micros.is_none_or(|e| i.published_micros <= e))
            .collect()
    } else {
        Vec::new()
    };
    let len = if timed { filtered.len() } else { end - first };
    let entry = |position: usize| -> Option<&Arc<Item>> {
        if timed {
            filtered.get(position).copied()
        } else {
            archive.get(first + position)
        }
    };
    // The number of matching entries whose id is below `bound` (or at most
    // `bound` when `inclusive`): a binary search, ids being sorted.
    let count_below = |bound: ArchiveId, inclusive: bool| {
        let (mut low, mut high) = (0, len);
        while low < high {
            let middle = low + (high - low) / 2;
            let below = entry(middle)
                .is_some_and(|i| i.archive_id < bound || (inclusive && i.archive_id == bound));
            if below {
                low = middle + 1;
            } else {
                high = middle;
            }
        }
        low
    };
    let page = rsm::select(
        len,
        &query.rsm,
        limits.page_items_max,
        limits.page_items_max,
        |id| Some(count_below(id.parse().ok()?, true)),
        |id| Some(count_below(id.parse().ok()?, false)),
    )?;
    let items: Vec<&Arc<Item>> = page.range.clone().filter_map(entry).collect();
    let results = items
        .iter()
        .map(|item| archive_result_xml(service, query.query_id.as_deref(), &node.id, item))
        .collect();
    let first_id = items.first().map(|i| i.archive_id.to_string());
    let last_id = items.last().map(|i| i.archive_id.to_string());
    let set = rsm::response_set(
        first_id.as_deref().map(|id| (id, page.range.start)),
        last_id.as_deref(),
        page.total,
    );
    let fin = Element::new("fin", MAM_NS)
        .with_attr("complete", if page.complete { "true" } else { "false" })
        .with_child(set);
    Ok(ArchivePage { results, fin })
}
