//! Finding the item ids of pubsub notifications in the raw bytes of a
//! stream, without building element trees: a load generator that parsed
//! every notification into a tree spent ten times the server's CPU per
//! notification, and became the bottleneck it must never be.
//!
//! A literal `<` may appear neither in text nor in an attribute value (XML
//! 1.0 §2.4), so every `<item` followed by white space in the stream (outside
//! CDATA) starts an `<item …>` tag: the scanner searches for that string
//! (memchr's vectorised search: a byte-by-byte walk over every tag was half
//! of the load generator's CPU per notification) and reads the tag's `id`
//! attribute. The benchmark's item ids are `i<index>` and its payloads
//! (VOEvents) contain no `item` element and no CDATA, so every match is one
//! notified item. Tags split across reads are carried over.

use memchr::memmem;

/// Longest tag carried over between reads; a longer one (never sent by
/// the servers measured) is skipped.
const TAG_BYTES_MAX: usize = 4096;

const ITEM_TAG: &[u8] = b"<item";

/// Scans a stream's bytes for `<item id='i<index>'>` start tags.
#[derive(Debug, Default)]
pub struct ItemScanner {
    /// The end of the previous read that may begin an item tag.
    carry: Vec<u8>,
}

impl ItemScanner {
    /// Appends to `found` the index of every item tag completed by `bytes`.
    pub fn push(&mut self, bytes: &[u8], found: &mut Vec<u32>) {
        if self.carry.is_empty() {
            let rest = scan(bytes, found);
            self.keep(&bytes[rest..]);
        } else {
            let mut data = std::mem::take(&mut self.carry);
            data.extend_from_slice(bytes);
            let rest = scan(&data, found);
            self.keep(&data[rest..]);
        }
    }

    fn keep(&mut self, incomplete: &[u8]) {
        self.carry.clear();
        if incomplete.len() <= TAG_BYTES_MAX {
            self.carry.extend_from_slice(incomplete);
        }
    }
}

/// Scans for complete item tags; returns where the unscanned rest starts:
/// an item tag whose end has not arrived, or the last bytes, which may be
/// the start of one (too short to hold a whole `<item ` themselves).
fn scan(data: &[u8], found: &mut Vec<u32>) -> usize {
    let mut pos = 0;
    for start in memmem::find_iter(data, ITEM_TAG) {
        if start < pos {
            continue;
        }
        let tag = &data[start..];
        let Some(&after) = tag.get(ITEM_TAG.len()) else {
            return start;
        };
        if !after.is_ascii_whitespace() {
            continue;
        }
        let Some(length) = tag_length(tag) else {
            return start;
        };
        if let Some(index) = item_index(&tag[..length]) {
            found.push(index);
        }
        pos = start + length;
    }
    pos.max(data.len().saturating_sub(ITEM_TAG.len()))
}

/// The length of the tag at the start of `data` (up to and including its
/// `>`, quotes respected), `None` while it is incomplete.
fn tag_length(data: &[u8]) -> Option<usize> {
    let mut quote = None;
    for (i, &b) in data.iter().enumerate().skip(1) {
        match (quote, b) {
            (None, b'\'' | b'"') => quote = Some(b),
            (Some(q), _) if b == q => quote = None,
            (None, b'>') => return Some(i + 1),
            _ => {}
        }
    }
    None
}

/// The index in `id='i<index>'` of an `<item …>` start tag.
fn item_index(tag: &[u8]) -> Option<u32> {
    let rest = tag.strip_prefix(b"<item")?;
    if !rest.first().is_some_and(|b| b.is_ascii_whitespace()) {
        return None;
    }
    let at = rest
        .windows(4)
        .position(|w| w[0].is_ascii_whitespace() && &w[1..] == b"id=")?;
    let value = &rest[at + 4..];
    let quote = *value.first()?;
    let value = &value[1..];
    let end = value.iter().position(|&b| b == quote)?;
    std::str::from_utf8(value[..end].strip_prefix(b"i")?)
        .ok()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_all(chunks: &[&[u8]]) -> Vec<u32> {
        let mut scanner = ItemScanner::default();
        let mut found = Vec::new();
        for chunk in chunks {
            scanner.push(chunk, &mut found);
        }
        found
    }

    const NOTIFICATION: &[u8] = b"<message from='pubsub.localhost' type='headline'>\
        <event xmlns='http://jabber.org/protocol/pubsub#event'><items node='n'>\
        <item id='i42' publisher=\"a@b\"><voe:VOEvent ivorn='ivo://x/y#z' a='1 > 0'>\
        <Who><Date>2016</Date></Who></voe:VOEvent></item></items></event></message>";

    #[test]
    fn finds_the_item_of_a_notification() {
        assert_eq!(scan_all(&[NOTIFICATION]), [42]);
    }

    #[test]
    fn a_notification_split_anywhere_is_found_once() {
        for split in 1..NOTIFICATION.len() {
            let (a, b) = NOTIFICATION.split_at(split);
            assert_eq!(
                scan_all(&[a, b, NOTIFICATION]),
                [42, 42],
                "split at {split}"
            );
        }
    }

    #[test]
    fn double_quotes_and_other_attributes_before_the_id() {
        assert_eq!(scan_all(&[b"<item node=\"x\" id=\"i7\"/>"]), [7]);
    }

    #[test]
    fn other_tags_and_other_ids_are_ignored() {
        let stream = b"<items node='i1'><itemx id='i2'/><item id='x3'/><iq id='i4'/><item/>";
        assert!(scan_all(&[stream]).is_empty());
    }
}
