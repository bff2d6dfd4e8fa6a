//! XMPP stanza errors (RFC 6120 §8.3): an error type, a defined condition,
//! an optional application-specific child (for pubsub, an element in
//! `http://jabber.org/protocol/pubsub#errors`, XEP-0060 §7 and §8) and an
//! optional human-readable text.
//!
//! The type is general: any part of the server that answers a stanza with an
//! error builds a [`StanzaError`] and serializes it with
//! [`StanzaError::to_element`].

use crate::xml::Element;

/// `urn:ietf:params:xml:ns:xmpp-stanzas` (RFC 6120 §8.3.2).
pub const STANZAS_NS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
/// The namespace of pubsub-specific error conditions (XEP-0060 §14.3).
pub const PUBSUB_ERRORS_NS: &str = "http://jabber.org/protocol/pubsub#errors";
/// The client stream namespace the `<error/>` element is written in.
pub const CLIENT_NS: &str = "jabber:client";

/// The `type` attribute of `<error/>` (RFC 6120 §8.3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    Auth,
    Cancel,
    Continue,
    Modify,
    Wait,
}

impl ErrorType {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::Auth => "auth",
            ErrorType::Cancel => "cancel",
            ErrorType::Continue => "continue",
            ErrorType::Modify => "modify",
            ErrorType::Wait => "wait",
        }
    }
}

/// The defined stanza error conditions (RFC 6120 §8.3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    BadRequest,
    Conflict,
    FeatureNotImplemented,
    Forbidden,
    Gone,
    InternalServerError,
    ItemNotFound,
    JidMalformed,
    NotAcceptable,
    NotAllowed,
    NotAuthorized,
    PolicyViolation,
    RecipientUnavailable,
    Redirect,
    RegistrationRequired,
    RemoteServerNotFound,
    RemoteServerTimeout,
    ResourceConstraint,
    ServiceUnavailable,
    SubscriptionRequired,
    UndefinedCondition,
    UnexpectedRequest,
}

impl Condition {
    /// The element name of the condition.
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::BadRequest => "bad-request",
            Condition::Conflict => "conflict",
            Condition::FeatureNotImplemented => "feature-not-implemented",
            Condition::Forbidden => "forbidden",
            Condition::Gone => "gone",
            Condition::InternalServerError => "internal-server-error",
            Condition::ItemNotFound => "item-not-found",
            Condition::JidMalformed => "jid-malformed",
            Condition::NotAcceptable => "not-acceptable",
            Condition::NotAllowed => "not-allowed",
            Condition::NotAuthorized => "not-authorized",
            Condition::PolicyViolation => "policy-violation",
            Condition::RecipientUnavailable => "recipient-unavailable",
            Condition::Redirect => "redirect",
            Condition::RegistrationRequired => "registration-required",
            Condition::RemoteServerNotFound => "remote-server-not-found",
            Condition::RemoteServerTimeout => "remote-server-timeout",
            Condition::ResourceConstraint => "resource-constraint",
            Condition::ServiceUnavailable => "service-unavailable",
            Condition::SubscriptionRequired => "subscription-required",
            Condition::UndefinedCondition => "undefined-condition",
            Condition::UnexpectedRequest => "unexpected-request",
        }
    }

    /// The error type RFC 6120 §8.3.3 gives in its example of each condition.
    pub fn default_type(self) -> ErrorType {
        match self {
            Condition::BadRequest
            | Condition::JidMalformed
            | Condition::NotAcceptable
            | Condition::PolicyViolation
            | Condition::Redirect => ErrorType::Modify,
            Condition::Forbidden
            | Condition::NotAuthorized
            | Condition::RegistrationRequired
            | Condition::SubscriptionRequired => ErrorType::Auth,
            Condition::RecipientUnavailable
            | Condition::RemoteServerTimeout
            | Condition::ResourceConstraint
            | Condition::UnexpectedRequest => ErrorType::Wait,
            Condition::Conflict
            | Condition::FeatureNotImplemented
            | Condition::Gone
            | Condition::InternalServerError
            | Condition::ItemNotFound
            | Condition::NotAllowed
            | Condition::RemoteServerNotFound
            | Condition::ServiceUnavailable
            | Condition::UndefinedCondition => ErrorType::Cancel,
        }
    }
}

/// A stanza error, ready to be sent as the `<error/>` child of an error
/// reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} ({}){}", condition.as_str(), kind.as_str(), text.as_deref().map(|t| format!(": {t}")).unwrap_or_default())]
pub struct StanzaError {
    pub kind: ErrorType,
    pub condition: Condition,
    /// Application-specific condition (RFC 6120 §8.3.4). Boxed to keep
    /// `Result<_, StanzaError>` small on the happy path.
    pub app: Option<Box<Element>>,
    pub text: Option<String>,
}

impl StanzaError {
    /// `condition` with the type RFC 6120 §8.3.3 recommends for it.
    pub fn new(condition: Condition) -> Self {
        StanzaError {
            kind: condition.default_type(),
            condition,
            app: None,
            text: None,
        }
    }

    /// `condition` with the pubsub-specific child `<name xmlns='…pubsub#errors'/>`.
    pub fn pubsub(condition: Condition, name: &str) -> Self {
        Self::new(condition).with_app(Element::new(name, PUBSUB_ERRORS_NS))
    }

    /// XEP-0060's `feature-not-implemented` + `<unsupported feature='…'/>`.
    pub fn unsupported(feature: &str) -> Self {
        Self::new(Condition::FeatureNotImplemented)
            .with_app(Element::new("unsupported", PUBSUB_ERRORS_NS).with_attr("feature", feature))
    }

    pub fn with_type(mut self, kind: ErrorType) -> Self {
        self.kind = kind;
        self
    }

    pub fn with_app(mut self, app: Element) -> Self {
        self.app = Some(Box::new(app));
        self
    }

    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        self.text = Some(text.into());
        self
    }

    /// The local name of the application-specific condition, if any.
    pub fn app_name(&self) -> Option<&str> {
        self.app.as_deref().map(Element::name)
    }

    /// `<error type='…'><condition/><text/>[app]</error>` in `jabber:client`.
    pub fn to_element(&self) -> Element {
        let mut error = Element::new("error", CLIENT_NS).with_attr("type", self.kind.as_str());
        error.push_child(Element::new(self.condition.as_str(), STANZAS_NS));
        if let Some(text) = &self.text {
            error.push_child(Element::new("text", STANZAS_NS).with_text(text.clone()));
        }
        if let Some(app) = &self.app {
            error.push_child(app.as_ref().clone());
        }
        error
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_element_has_condition_text_and_app_child() {
        let error =
            StanzaError::pubsub(Condition::BadRequest, "invalid-payload").with_text("role missing");
        assert_eq!(
            error.to_element().to_stream_xml(CLIENT_NS),
            "<error type=\"modify\"><bad-request xmlns=\"urn:ietf:params:xml:ns:xmpp-stanzas\"/>\
             <text xmlns=\"urn:ietf:params:xml:ns:xmpp-stanzas\">role missing</text>\
             <invalid-payload xmlns=\"http://jabber.org/protocol/pubsub#errors\"/></error>"
        );
    }

    #[test]
    fn unsupported_names_the_feature() {
        let error = StanzaError::unsupported("persistent-items");
        assert_eq!(error.kind, ErrorType::Cancel);
        assert_eq!(error.condition, Condition::FeatureNotImplemented);
        let app = error.app.as_ref().map(|a| a.attr("feature"));
        assert_eq!(app, Some(Some("persistent-items")));
    }

    #[test]
    fn display_names_condition_and_text() {
        let error = StanzaError::new(Condition::Forbidden).with_text("not an owner");
        assert_eq!(error.to_string(), "forbidden (auth): not an owner");
    }
}
