//! XEP-0198 stream management, acknowledgements only: the counters of one
//! stream and the elements that carry them.
//!
//! Session resumption is not offered (`<enabled/>` carries no `resume`):
//! a subscriber that loses its connection — or its whole site — resumes
//! through the XEP-0313 archive of the pubsub node at any site, from the
//! last archive id it saw, which a resumption token bound to one site's
//! memory could not give. Acks still let a client know the server has its
//! stanzas and let both ends notice a dead connection.

use super::ns;
use crate::xml::Element;

/// The two counts of an enabled stream. XEP-0198 §4: both start at 0 when
/// stream management is enabled and wrap at 2^32.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counters {
    /// Stanzas received from the client (the `h` the server acknowledges).
    handled: u32,
    /// Stanzas sent to the client (the most the client may acknowledge).
    sent: u32,
}

/// An `<a h='…'/>` acknowledging more stanzas than were sent (§4).
#[derive(Debug, PartialEq, Eq)]
pub struct HandledCountTooHigh {
    pub h: u32,
    pub sent: u32,
}

impl Counters {
    pub fn on_stanza_received(&mut self) {
        self.handled = self.handled.wrapping_add(1);
    }

    pub fn on_stanzas_sent(&mut self, count: u32) {
        self.sent = self.sent.wrapping_add(count);
    }

    /// `<a h='…'/>` answering the client's `<r/>`.
    pub fn answer(&self) -> Element {
        Element::new("a", ns::SM).with_attr("h", self.handled.to_string())
    }

    /// Checks the client's acknowledgement of `h` stanzas. Counts wrap, so
    /// "more than sent" means ahead of `sent` by less than half the range.
    pub fn check_ack(&self, h: u32) -> Result<(), HandledCountTooHigh> {
        let ahead = h.wrapping_sub(self.sent);
        if ahead == 0 || ahead > u32::MAX / 2 {
            Ok(())
        } else {
            Err(HandledCountTooHigh { h, sent: self.sent })
        }
    }
}

/// `<enabled/>`, without `resume` (see the module docs).
pub fn enabled() -> Element {
    Element::new("enabled", ns::SM)
}

/// `<failed/>` with the stanza error condition that says why (§3, §5).
pub fn failed(condition: &str) -> Element {
    Element::new("failed", ns::SM).with_child(Element::new(condition, ns::STANZA_ERRORS))
}

/// The `<handled-count-too-high/>` child of the stream error (§4).
pub fn handled_count_too_high(error: &HandledCountTooHigh) -> Element {
    Element::new("handled-count-too-high", ns::SM)
        .with_attr("h", error.h.to_string())
        .with_attr("send-count", error.sent.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_up_to_the_sent_count_are_accepted() {
        let mut counters = Counters::default();
        counters.on_stanzas_sent(3);
        assert_eq!(counters.check_ack(0), Ok(()));
        assert_eq!(counters.check_ack(3), Ok(()));
        assert_eq!(
            counters.check_ack(4),
            Err(HandledCountTooHigh { h: 4, sent: 3 })
        );
    }

    #[test]
    fn counts_wrap_at_two_to_the_thirty_second() {
        let mut counters = Counters {
            handled: u32::MAX,
            sent: u32::MAX - 1,
        };
        counters.on_stanza_received();
        counters.on_stanzas_sent(3);
        assert_eq!(counters.answer().attr("h"), Some("0"));
        // 2 stanzas after the wrap; an ack from before it is still valid.
        assert_eq!(counters.check_ack(u32::MAX), Ok(()));
        assert_eq!(counters.check_ack(1), Ok(()));
        assert!(counters.check_ack(2).is_err());
    }
}
