//! XEP-0059 Result Set Management: paging through an ordered result set
//! (items of a node, archive entries of a node, nodes of the service).

use std::ops::Range;

use crate::pubsub::error::{Condition, StanzaError};
use crate::xml::Element;

pub const RSM_NS: &str = "http://jabber.org/protocol/rsm";

/// A parsed `<set xmlns='http://jabber.org/protocol/rsm'/>` request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RsmRequest {
    pub max: Option<usize>,
    pub after: Option<String>,
    /// `Some("")` asks for the last page (XEP-0059 §2.5).
    pub before: Option<String>,
    /// Page from this position (XEP-0059 §2.4).
    pub index: Option<usize>,
}

impl TryFrom<&Element> for RsmRequest {
    type Error = StanzaError;

    fn try_from(set: &Element) -> Result<Self, StanzaError> {
        let number = |name: &str| -> Result<Option<usize>, StanzaError> {
            set.child(name, RSM_NS)
                .map(|e| {
                    e.text().trim().parse().map_err(|_| {
                        StanzaError::new(Condition::BadRequest)
                            .with_text(format!("RSM <{name}/> is not a number"))
                    })
                })
                .transpose()
        };
        Ok(RsmRequest {
            max: number("max")?,
            after: set.child("after", RSM_NS).map(Element::text),
            before: set.child("before", RSM_NS).map(Element::text),
            index: number("index")?,
        })
    }
}

/// The selected window of a result set of `total` entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub range: Range<usize>,
    pub total: usize,
    /// Whether this page reaches the end of the set in the paging
    /// direction (XEP-0313 `<fin complete='true'/>`).
    pub complete: bool,
}

/// Chooses the page `request` asks for. `after_position(id)` is the
/// position of the first entry after `id`, `before_position(id)` the
/// position of the entry `id` (the exclusive end of what precedes it);
/// either is `None` when `id` is unknown, which is `item-not-found`
/// (XEP-0059 §2.6). The page size is `request.max` or `default_max`,
/// never more than `cap`.
pub fn select(
    total: usize,
    request: &RsmRequest,
    default_max: usize,
    cap: usize,
    after_position: impl Fn(&str) -> Option<usize>,
    before_position: impl Fn(&str) -> Option<usize>,
) -> Result<Page, StanzaError> {
    let not_found = |id: &str| {
        StanzaError::new(Condition::ItemNotFound).with_text(format!("no result with RSM id {id}"))
    };
    let max = request.max.unwrap_or(default_max).min(cap);
    let lower = match &request.after {
        Some(after) => after_position(after).ok_or_else(|| not_found(after))?,
        None => 0,
    };
    if let Some(before) = &request.before {
        let end = if before.is_empty() {
            total
        } else {
            before_position(before).ok_or_else(|| not_found(before))?
        };
        let start = end.saturating_sub(max).max(lower);
        let end = end.max(start);
        return Ok(Page {
            complete: start == lower,
            range: start..end,
            total,
        });
    }
    let start = request.index.map_or(lower, |i| lower.max(i)).min(total);
    let end = start.saturating_add(max).min(total);
    Ok(Page {
        range: start..end,
        total,
        complete: end == total,
    })
}

/// The `<set/>` describing a returned page: first id (with its index),
/// last id and the size of the whole set.
pub fn response_set(first: Option<(&str, usize)>, last: Option<&str>, count: usize) -> Element {
    let mut set = Element::new("set", RSM_NS);
    if let (Some((first, index)), Some(last)) = (first, last) {
        set.push_child(
            Element::new("first", RSM_NS)
                .with_attr("index", index.to_string())
                .with_text(first),
        );
        set.push_child(Element::new("last", RSM_NS).with_text(last));
    }
    set.push_child(Element::new("count", RSM_NS).with_text(count.to_string()));
    set
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDS: [&str; 5] = ["a", "b", "c", "d", "e"];

    fn pick(request: RsmRequest) -> Result<Page, StanzaError> {
        let pos = |id: &str| IDS.iter().position(|x| *x == id);
        select(IDS.len(), &request, 2, 3, |id| pos(id).map(|p| p + 1), pos)
    }

    #[test]
    fn first_page_uses_default_size() {
        let page = pick(RsmRequest::default()).unwrap();
        assert_eq!((page.range, page.complete), (0..2, false));
    }

    #[test]
    fn after_continues_forward_and_completes() {
        let page = pick(RsmRequest {
            max: Some(10),
            after: Some("b".into()),
            ..RsmRequest::default()
        })
        .unwrap();
        // max is capped at 3
        assert_eq!((page.range, page.complete), (2..5, true));
    }

    #[test]
    fn empty_before_is_last_page() {
        let page = pick(RsmRequest {
            before: Some(String::new()),
            ..RsmRequest::default()
        })
        .unwrap();
        assert_eq!((page.range, page.complete), (3..5, false));
        let page = pick(RsmRequest {
            before: Some("b".into()),
            ..RsmRequest::default()
        })
        .unwrap();
        assert_eq!((page.range, page.complete), (0..1, true));
    }

    #[test]
    fn unknown_after_is_item_not_found() {
        let error = pick(RsmRequest {
            after: Some("zz".into()),
            ..RsmRequest::default()
        })
        .unwrap_err();
        assert_eq!(error.condition, Condition::ItemNotFound);
    }

    #[test]
    fn index_skips_entries() {
        let page = pick(RsmRequest {
            index: Some(4),
            ..RsmRequest::default()
        })
        .unwrap();
        assert_eq!(page.range, 4..5);
    }

    #[test]
    fn non_numeric_max_is_bad_request() {
        let set =
            Element::new("set", RSM_NS).with_child(Element::new("max", RSM_NS).with_text("ten"));
        assert_eq!(
            RsmRequest::try_from(&set).unwrap_err().condition,
            Condition::BadRequest
        );
    }
}
