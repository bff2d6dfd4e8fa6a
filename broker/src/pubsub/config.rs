//! Node configuration (`pubsub#node_config`, XEP-0060 §8.2 and §16.4.4) and
//! subscription options (`pubsub#subscribe_options`, §6.3): the service
//! defaults, the XEP-0004 forms clients submit and receive, and the patches
//! carried in commands.
//!
//! A submitted form becomes a *patch* (`vomesh_proto::pubsub::NodeConfig`
//! with only the submitted fields set) when the request is handled; `apply`
//! lays the patch over the defaults (create) or the current configuration
//! (configure), so concurrent configuration changes compose in log order.

use vomesh_proto::pubsub as proto;

use crate::pubsub::error::{Condition, StanzaError};
use crate::pubsub::form::{FormBuilder, SubmittedForm, parse_bool};
use crate::pubsub::model::{
    AccessModel, MaxItems, NodeConfig, NodeType, NotificationType, PublishModel,
    SendLastPublishedItem, SubscriptionOptions,
};
use crate::xml::Element;

pub const NODE_CONFIG_FORM: &str = "http://jabber.org/protocol/pubsub#node_config";
pub const PUBLISH_OPTIONS_FORM: &str = "http://jabber.org/protocol/pubsub#publish-options";
pub const SUBSCRIBE_OPTIONS_FORM: &str = "http://jabber.org/protocol/pubsub#subscribe_options";

/// The bounds of the pubsub service; each has the error XEP-0060 names when
/// it is hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PubsubLimits {
    /// Nodes in the service (create beyond it: `policy-violation`).
    pub nodes_max: usize,
    /// pubsub#max_items of a node created without one.
    pub items_per_node_default: u64,
    /// Hard cap on pubsub#max_items, the value of `max` (above it:
    /// `not-acceptable`).
    pub items_per_node_max: u64,
    /// Serialized payload size (above it: `not-acceptable` + `<payload-too-big/>`).
    pub payload_bytes_max: usize,
    /// Subscriptions per node (above it: `policy-violation` + `<too-many-subscriptions/>`).
    pub subscriptions_per_node_max: usize,
    /// Length of a node id in bytes (above it: `not-acceptable` + text).
    pub node_id_bytes_max: usize,
    /// Archive entries kept per node (XEP-0313); the oldest are dropped.
    pub archive_entries_per_node_max: usize,
    /// [`Item::archived_bytes`](crate::pubsub::model::Item::archived_bytes)
    /// kept across every node's archive; the site's oldest entries are
    /// dropped.
    pub archive_bytes_max: u64,
    /// Seconds an archive entry is kept after its publication; 0 keeps it
    /// until another bound drops it.
    pub archive_age_max_seconds: u64,
    /// Items or archive entries in one response, and the page size when the
    /// request names none (XEP-0059 `max` is capped to it). Items come back
    /// in one IQ result, so this times `payload_bytes_max` bounds its size.
    pub page_items_max: usize,
}

impl Default for PubsubLimits {
    fn default() -> Self {
        PubsubLimits {
            nodes_max: 10_000,
            items_per_node_default: 1_000,
            items_per_node_max: 100_000,
            payload_bytes_max: 256 * 1024,
            subscriptions_per_node_max: 100_000,
            node_id_bytes_max: 1_023,
            archive_entries_per_node_max: 1_000_000,
            archive_bytes_max: 512 * 1024 * 1024,
            archive_age_max_seconds: 0,
            page_items_max: 100,
        }
    }
}

impl PubsubLimits {
    /// The age bound in microseconds, if there is one.
    pub fn archive_age_max_micros(&self) -> Option<i64> {
        let seconds = i64::try_from(self.archive_age_max_seconds).ok()?;
        (seconds > 0).then(|| seconds.saturating_mul(1_000_000))
    }
}

impl NodeConfig {
    /// The configuration of a node created without options (returned by
    /// the `<default/>` query, XEP-0060 §8.3).
    pub fn defaults(limits: &PubsubLimits) -> Self {
        NodeConfig {
            title: String::new(),
            description: String::new(),
            access_model: AccessModel::Open,
            roster_groups_allowed: Vec::new(),
            publish_model: PublishModel::Publishers,
            persist_items: true,
            max_items: MaxItems::Count(limits.items_per_node_default),
            item_expire_seconds: 0,
            deliver_payloads: true,
            deliver_notifications: true,
            notify_retract: true,
            notify_delete: true,
            notify_config: false,
            // Alerts are time-critical: replaying a stale one to every new
            // subscriber would be misleading, so it is opt-in.
            send_last_published_item: SendLastPublishedItem::Never,
            payload_type: String::new(),
            notification_type: NotificationType::Headline,
            subscribe: true,
            node_type: NodeType::Leaf,
            collections: Vec::new(),
        }
    }

    /// The effective item cap.
    pub fn max_items_count(&self, limits: &PubsubLimits) -> u64 {
        match self.max_items {
            MaxItems::Count(n) => n.min(limits.items_per_node_max),
            MaxItems::Max => limits.items_per_node_max,
        }
    }

    /// Lays `patch` over this configuration. Values were validated when the
    /// patch was built, but a command is input too: an invalid one is
    /// refused here rather than trusted.
    pub fn apply_patch(
        &mut self,
        patch: &proto::NodeConfig,
        limits: &PubsubLimits,
    ) -> Result<(), StanzaError> {
        let mut next = self.clone();
        let invalid = |field: &str| {
            StanzaError::new(Condition::NotAcceptable)
                .with_text(format!("invalid value for {field}"))
        };
        if let Some(v) = &patch.title {
            next.title.clone_from(v);
        }
        if let Some(v) = &patch.description {
            next.description.clone_from(v);
        }
        if let Some(v) = patch.access_model {
            next.access_model = match AccessModel::try_from(v) {
                Ok(AccessModel::Unspecified) | Err(_) => {
                    return Err(invalid("pubsub#access_model"));
                }
                Ok(model) => model,
            };
        }
        if let Some(groups) = &patch.roster_groups_allowed {
            next.roster_groups_allowed.clone_from(&groups.values);
        }
        if let Some(v) = patch.publish_model {
            next.publish_model = match PublishModel::try_from(v) {
                Ok(PublishModel::Unspecified) | Err(_) => {
                    return Err(invalid("pubsub#publish_model"));
                }
                Ok(model) => model,
            };
        }
        if let Some(v) = patch.persist_items {
            next.persist_items = v;
        }
        if let Some(max) = &patch.max_items {
            next.max_items = match max.limit {
                Some(proto::max_items::Limit::Count(n)) if n <= limits.items_per_node_max => {
                    MaxItems::Count(n)
                }
                Some(proto::max_items::Limit::Max(true)) => MaxItems::Max,
                _ => {
                    return Err(
                        StanzaError::new(Condition::NotAcceptable).with_text(format!(
                            "pubsub#max_items is at most {}",
                            limits.items_per_node_max
                        )),
                    );
                }
            };
        }
        if let Some(v) = patch.item_expire_seconds {
            next.item_expire_seconds = v;
        }
        let flags: [(Option<bool>, &mut bool); 5] = [
            (patch.deliver_payloads, &mut next.deliver_payloads),
            (patch.deliver_notifications, &mut next.deliver_notifications),
            (patch.notify_retract, &mut next.notify_retract),
            (patch.notify_delete, &mut next.notify_delete),
            (patch.notify_config, &mut next.notify_config),
        ];
        for (value, field) in flags {
            if let Some(v) = value {
                *field = v;
            }
        }
        if patch.presence_based_delivery == Some(false) {
            // Notifications reach the available resources of a subscriber;
            // there is no offline store to deliver to later (catching up is
            // a XEP-0313 query), so delivery is always presence-based.
            return Err(StanzaError::new(Condition::NotAcceptable).with_text(
                "pubsub#presence_based_delivery is always on: offline subscribers catch up from the node archive (XEP-0313)",
            ));
        }
        if let Some(v) = patch.send_last_published_item {
            next.send_last_published_item = match SendLastPublishedItem::try_from(v) {
                Ok(SendLastPublishedItem::Unspecified) | Err(_) => {
                    return Err(invalid("pubsub#send_last_published_item"));
                }
                Ok(model) => model,
            };
        }
        if let Some(v) = &patch.payload_type {
            next.payload_type.clone_from(v);
        }
        if let Some(v) = patch.notification_type {
            next.notification_type = match NotificationType::try_from(v) {
                Ok(NotificationType::Unspecified) | Err(_) => {
                    return Err(invalid("pubsub#notification_type"));
                }
                Ok(model) => model,
            };
        }
        if let Some(v) = patch.subscribe {
            next.subscribe = v;
        }
        if let Some(v) = patch.node_type {
            next.node_type = match NodeType::try_from(v) {
                Ok(NodeType::Unspecified) | Err(_) => return Err(invalid("pubsub#node_type")),
                Ok(kind) => kind,
            };
        }
        if let Some(parents) = &patch.collections {
            next.collections.clone_from(&parents.values);
        }
        *self = next;
        Ok(())
    }

    /// The whole configuration as a patch with every field set (snapshots).
    pub fn to_proto(&self) -> proto::NodeConfig {
        proto::NodeConfig {
            title: Some(self.title.clone()),
            description: Some(self.description.clone()),
            access_model: Some(self.access_model.into()),
            roster_groups_allowed: Some(proto::StringList {
                values: self.roster_groups_allowed.clone(),
            }),
            publish_model: Some(self.publish_model.into()),
            persist_items: Some(self.persist_items),
            max_items: Some(proto::MaxItems {
                limit: Some(match self.max_items {
                    MaxItems::Count(n) => proto::max_items::Limit::Count(n),
                    MaxItems::Max => proto::max_items::Limit::Max(true),
                }),
            }),
            item_expire_seconds: Some(self.item_expire_seconds),
            deliver_payloads: Some(self.deliver_payloads),
            deliver_notifications: Some(self.deliver_notifications),
            notify_retract: Some(self.notify_retract),
            notify_delete: Some(self.notify_delete),
            notify_config: Some(self.notify_config),
            presence_based_delivery: Some(true),
            send_last_published_item: Some(self.send_last_published_item.into()),
            payload_type: Some(self.payload_type.clone()),
            notification_type: Some(self.notification_type.into()),
            subscribe: Some(self.subscribe),
            node_type: Some(self.node_type.into()),
            collections: Some(proto::StringList {
                values: self.collections.clone(),
            }),
        }
    }

    /// XEP-0060 §7.1.5: the first publish-option whose value differs from
    /// this configuration, by form variable.
    pub fn unmet_precondition(
        &self,
        options: &proto::NodeConfig,
        limits: &PubsubLimits,
    ) -> Option<&'static str> {
        let mut wanted = self.clone();
        if wanted.apply_patch(options, limits).is_err() {
            return Some("publish-options");
        }
        // Nearly always met (every VOEvent relayed over VTP states its
        // payload type): the fields, every value rendered as text, are
        // only built to name the one that differs.
        if wanted == *self {
            return None;
        }
        node_config_fields(&wanted)
            .into_iter()
            .zip(node_config_fields(self))
            .find(|(wanted, current)| wanted.1 != current.1)
            .map(|(wanted, _)| wanted.0)
    }

    /// The configuration as a XEP-0004 form of `kind` (`form` for the
    /// owner to fill in, `result` in notifications) and `form_type`.
    pub fn to_form(&self, kind: &str, form_type: &str) -> Element {
        let mut form = FormBuilder::new(kind, form_type);
        for (var, values) in node_config_fields(self) {
            let spec = field_spec(var);
            let refs: Vec<&str> = values.iter().map(String::as_str).collect();
            form = form.field(var, spec.field_type, spec.label, &refs, spec.options);
        }
        form.build()
    }
}

/// How a node_config field is presented in a form.
struct FieldSpec {
    field_type: &'static str,
    label: &'static str,
    options: &'static [&'static str],
}

fn field_spec(var: &str) -> FieldSpec {
    let (field_type, label, options): (&str, &str, &[&str]) = match var {
        "pubsub#title" => ("text-single", "A friendly name for the node", &[]),
        "pubsub#description" => ("text-single", "A description of the node", &[]),
        "pubsub#access_model" => (
            "list-single",
            "Who may subscribe and retrieve items",
            &["open", "presence", "roster", "authorize", "whitelist"],
        ),
        "pubsub#roster_groups_allowed" => ("list-multi", "Roster groups allowed to subscribe", &[]),
        "pubsub#publish_model" => (
            "list-single",
            "Who may publish",
            &["publishers", "subscribers", "open"],
        ),
        "pubsub#persist_items" => ("boolean", "Persist items", &[]),
        "pubsub#max_items" => (
            "text-single",
            "Maximum number of items to persist (or max)",
            &[],
        ),
        "pubsub#item_expire" => (
            "text-single",
            "Seconds after which items expire (0: never)",
            &[],
        ),
        "pubsub#deliver_payloads" => ("boolean", "Deliver payloads with event notifications", &[]),
        "pubsub#deliver_notifications" => ("boolean", "Deliver event notifications", &[]),
        "pubsub#notify_retract" => ("boolean", "Notify subscribers when items are removed", &[]),
        "pubsub#notify_delete" => (
            "boolean",
            "Notify subscribers when the node is deleted",
            &[],
        ),
        "pubsub#notify_config" => (
            "boolean",
            "Notify subscribers when the configuration changes",
            &[],
        ),
        "pubsub#presence_based_delivery" => ("boolean", "Deliver only to available users", &[]),
        "pubsub#send_last_published_item" => (
            "list-single",
            "When to send the last published item",
            &["never", "on_sub", "on_sub_and_presence"],
        ),
        "pubsub#type" => ("text-single", "Namespace of the payloads", &[]),
        "pubsub#notification_type" => (
            "list-single",
            "Message type of notifications",
            &["headline", "normal"],
        ),
        "pubsub#subscribe" => ("boolean", "Allow subscriptions", &[]),
        "pubsub#node_type" => (
            "list-single",
            "Whether the node holds items or other nodes",
            &["leaf", "collection"],
        ),
        "pubsub#collection" => ("text-multi", "The collections this node belongs to", &[]),
        _ => ("text-single", "", &[]),
    };
    FieldSpec {
        field_type,
        label,
        options,
    }
}

fn bool_value(v: bool) -> Vec<String> {
    vec![if v { "1" } else { "0" }.to_owned()]
}

/// Every node_config field of `config` with its form values, in form order.
fn node_config_fields(config: &NodeConfig) -> Vec<(&'static str, Vec<String>)> {
    vec![
        ("pubsub#title", vec![config.title.clone()]),
        ("pubsub#description", vec![config.description.clone()]),
        (
            "pubsub#access_model",
            vec![access_model_name(config.access_model).to_owned()],
        ),
        (
            "pubsub#roster_groups_allowed",
            config.roster_groups_allowed.clone(),
        ),
        (
            "pubsub#publish_model",
            vec![publish_model_name(config.publish_model).to_owned()],
        ),
        ("pubsub#persist_items", bool_value(config.persist_items)),
        (
            "pubsub#max_items",
            vec![match config.max_items {
                MaxItems::Count(n) => n.to_string(),
                MaxItems::Max => "max".to_owned(),
            }],
        ),
        (
            "pubsub#item_expire",
            vec![config.item_expire_seconds.to_string()],
        ),
        (
            "pubsub#deliver_payloads",
            bool_value(config.deliver_payloads),
        ),
        (
            "pubsub#deliver_notifications",
            bool_value(config.deliver_notifications),
        ),
        ("pubsub#notify_retract", bool_value(config.notify_retract)),
        ("pubsub#notify_delete", bool_value(config.notify_delete)),
        ("pubsub#notify_config", bool_value(config.notify_config)),
        ("pubsub#presence_based_delivery", bool_value(true)),
        (
            "pubsub#send_last_published_item",
            vec![send_last_name(config.send_last_published_item).to_owned()],
        ),
        ("pubsub#type", vec![config.payload_type.clone()]),
        (
            "pubsub#notification_type",
            vec![
                match config.notification_type {
                    NotificationType::Normal => "normal",
                    _ => "headline",
                }
                .to_owned(),
            ],
        ),
        ("pubsub#subscribe", bool_value(config.subscribe)),
        (
            "pubsub#node_type",
            vec![
                match config.node_type {
                    NodeType::Collection => "collection",
                    _ => "leaf",
                }
                .to_owned(),
            ],
        ),
        ("pubsub#collection", config.collections.clone()),
    ]
}

pub fn access_model_name(model: AccessModel) -> &'static str {
    match model {
        AccessModel::Presence => "presence",
        AccessModel::Roster => "roster",
        AccessModel::Authorize => "authorize",
        AccessModel::Whitelist => "whitelist",
        AccessModel::Open | AccessModel::Unspecified => "open",
    }
}

fn publish_model_name(model: PublishModel) -> &'static str {
    match model {
        PublishModel::Subscribers => "subscribers",
        PublishModel::Open => "open",
        PublishModel::Publishers | PublishModel::Unspecified => "publishers",
    }
}

fn send_last_name(when: SendLastPublishedItem) -> &'static str {
    match when {
        SendLastPublishedItem::OnSub => "on_sub",
        SendLastPublishedItem::OnSubAndPresence => "on_sub_and_presence",
        SendLastPublishedItem::Never | SendLastPublishedItem::Unspecified => "never",
    }
}

/// Reads a submitted `pubsub#node_config` (or `pubsub#publish-options`)
/// form into a patch; an empty `FORM_TYPE` is accepted as `form_type`. A value the service cannot honour is
/// `not-acceptable` (XEP-0060 §8.2.5.3); a form of another type is
/// `bad-request`.
pub fn node_config_patch(
    form: &SubmittedForm,
    form_type: &str,
) -> Result<proto::NodeConfig, StanzaError> {
    if form.form_type.as_deref().is_some_and(|t| t != form_type) {
        return Err(StanzaError::new(Condition::BadRequest)
            .with_text(format!("expected a {form_type} form")));
    }
    let mut patch = proto::NodeConfig::default();
    for (var, values) in &form.fields {
        let invalid = || {
            StanzaError::new(Condition::NotAcceptable).with_text(format!("invalid value for {var}"))
        };
        let single = values.first().map(String::as_str).unwrap_or("");
        let boolean = || parse_bool(single).ok_or_else(invalid);
        match var.as_str() {
            "pubsub#title" => patch.title = Some(single.to_owned()),
            "pubsub#description" => patch.description = Some(single.to_owned()),
            "pubsub#access_model" => {
                let model = match single {
                    "open" => AccessModel::Open,
                    "presence" => AccessModel::Presence,
                    "roster" => AccessModel::Roster,
                    "authorize" => AccessModel::Authorize,
                    "whitelist" => AccessModel::Whitelist,
                    _ => return Err(invalid()),
                };
                patch.access_model = Some(model.into());
            }
            "pubsub#roster_groups_allowed" => {
                patch.roster_groups_allowed = Some(proto::StringList {
                    values: values.clone(),
                });
            }
            "pubsub#publish_model" => {
                let model = match single {
                    "publishers" => PublishModel::Publishers,
                    "subscribers" => PublishModel::Subscribers,
                    "open" => PublishModel::Open,
                    _ => return Err(invalid()),
                };
                patch.publish_model = Some(model.into());
            }
            "pubsub#persist_items" => patch.persist_items = Some(boolean()?),
            "pubsub#max_items" => {
                let limit = if single == "max" {
                    proto::max_items::Limit::Max(true)
                } else {
                    // The cap is a service limit, checked when the patch is
                    // laid over a configuration (NodeConfig::apply_patch).
                    proto::max_items::Limit::Count(single.parse().map_err(|_| invalid())?)
                };
                patch.max_items = Some(proto::MaxItems { limit: Some(limit) });
            }
            "pubsub#item_expire" => {
                patch.item_expire_seconds = Some(single.parse().map_err(|_| invalid())?);
            }
            "pubsub#deliver_payloads" => patch.deliver_payloads = Some(boolean()?),
            "pubsub#deliver_notifications" => patch.deliver_notifications = Some(boolean()?),
            "pubsub#notify_retract" => patch.notify_retract = Some(boolean()?),
            "pubsub#notify_delete" => patch.notify_delete = Some(boolean()?),
            "pubsub#notify_config" => patch.notify_config = Some(boolean()?),
            "pubsub#presence_based_delivery" => patch.presence_based_delivery = Some(boolean()?),
            "pubsub#send_last_published_item" => {
                let when = match single {
                    "never" => SendLastPublishedItem::Never,
                    "on_sub" => SendLastPublishedItem::OnSub,
                    "on_sub_and_presence" => SendLastPublishedItem::OnSubAndPresence,
                    _ => return Err(invalid()),
                };
                patch.send_last_published_item = Some(when.into());
            }
            "pubsub#type" => patch.payload_type = Some(single.to_owned()),
            "pubsub#notification_type" => {
                let kind = match single {
                    "headline" => NotificationType::Headline,
                    "normal" => NotificationType::Normal,
                    _ => return Err(invalid()),
                };
                patch.notification_type = Some(kind.into());
            }
            "pubsub#subscribe" => patch.subscribe = Some(boolean()?),
            "pubsub#node_type" => {
                let kind = match single {
                    "leaf" => NodeType::Leaf,
                    "collection" => NodeType::Collection,
                    _ => return Err(invalid()),
                };
                patch.node_type = Some(kind.into());
            }
            "pubsub#collection" => {
                patch.collections = Some(proto::StringList {
                    values: values.iter().filter(|v| !v.is_empty()).cloned().collect(),
                });
            }
            _ => {
                return Err(StanzaError::new(Condition::NotAcceptable)
                    .with_text(format!("unsupported field {var}")));
            }
        }
    }
    Ok(patch)
}

impl SubscriptionOptions {
    /// Lays a patch of options over these.
    pub fn apply_patch(&mut self, patch: &proto::SubscriptionOptions) {
        if let Some(deliver) = patch.deliver {
            self.deliver = deliver;
        }
    }

    pub fn to_proto(&self) -> proto::SubscriptionOptions {
        proto::SubscriptionOptions {
            deliver: Some(self.deliver),
        }
    }

    /// The options as a `pubsub#subscribe_options` form (XEP-0060 §6.3.2).
    /// Only `pubsub#deliver` is offered: filtering by presence `show`
    /// (`pubsub#show-values`) or digests would need per-resource state at
    /// delivery time, which the replicated service does not have.
    pub fn to_form(&self, kind: &str) -> Element {
        FormBuilder::new(kind, SUBSCRIBE_OPTIONS_FORM)
            .boolean("pubsub#deliver", "Enable delivery", self.deliver)
            .build()
    }
}

/// Reads a submitted `pubsub#subscribe_options` form. XEP-0060 §6.3.5:
/// an invalid form, or an option the service does not offer, is
/// `bad-request` + `<invalid-options/>`.
pub fn subscription_options_patch(
    form: &SubmittedForm,
) -> Result<proto::SubscriptionOptions, StanzaError> {
    let invalid = |text: String| {
        StanzaError::pubsub(Condition::BadRequest, "invalid-options").with_text(text)
    };
    if form
        .form_type
        .as_deref()
        .is_some_and(|t| t != SUBSCRIBE_OPTIONS_FORM)
    {
        return Err(invalid(format!("expected a {SUBSCRIBE_OPTIONS_FORM} form")));
    }
    let mut patch = proto::SubscriptionOptions::default();
    for (var, values) in &form.fields {
        match var.as_str() {
            "pubsub#deliver" => {
                let value = values.first().and_then(|v| parse_bool(v));
                patch.deliver = Some(value.ok_or_else(|| invalid(format!("invalid {var}")))?);
            }
            _ => return Err(invalid(format!("unsupported option {var}"))),
        }
    }
    Ok(patch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pubsub::form::SubmittedForm;

    fn submit(fields: &[(&str, &str)]) -> SubmittedForm {
        SubmittedForm {
            kind: "submit".into(),
            form_type: Some(NODE_CONFIG_FORM.into()),
            fields: fields
                .iter()
                .map(|(var, value)| ((*var).to_owned(), vec![(*value).to_owned()]))
                .collect(),
        }
    }

    #[test]
    fn form_round_trips_through_patch() {
        let limits = PubsubLimits::default();
        let mut config = NodeConfig::defaults(&limits);
        config.title = "alerts".into();
        config.access_model = AccessModel::Whitelist;
        config.max_items = MaxItems::Max;
        let form = SubmittedForm::parse(&config.to_form("submit", NODE_CONFIG_FORM)).unwrap();
        let patch = node_config_patch(&form, NODE_CONFIG_FORM).unwrap();
        let mut rebuilt = NodeConfig::defaults(&limits);
        rebuilt.apply_patch(&patch, &limits).unwrap();
        assert_eq!(rebuilt, config);
    }

    #[test]
    fn max_items_above_cap_is_not_acceptable() {
        let limits = PubsubLimits::default();
        let too_many = (limits.items_per_node_max + 1).to_string();
        let patch = node_config_patch(
            &submit(&[("pubsub#max_items", &too_many)]),
            NODE_CONFIG_FORM,
        )
        .unwrap();
        let error = NodeConfig::defaults(&limits)
            .apply_patch(&patch, &limits)
            .unwrap_err();
        assert_eq!(error.condition, Condition::NotAcceptable);
    }

    #[test]
    fn unknown_access_model_is_not_acceptable() {
        let error = node_config_patch(
            &submit(&[("pubsub#access_model", "secret")]),
            NODE_CONFIG_FORM,
        )
        .unwrap_err();
        assert_eq!(error.condition, Condition::NotAcceptable);
    }

    #[test]
    fn precondition_names_the_differing_field() {
        let limits = PubsubLimits::default();
        let config = NodeConfig::defaults(&limits);
        let patch = node_config_patch(
            &submit(&[("pubsub#access_model", "open")]),
            PUBLISH_OPTIONS_FORM,
        );
        // FORM_TYPE differs from the expected one: bad-request.
        assert_eq!(patch.unwrap_err().condition, Condition::BadRequest);
        let mut form = submit(&[("pubsub#access_model", "whitelist")]);
        form.form_type = Some(PUBLISH_OPTIONS_FORM.into());
        let patch = node_config_patch(&form, PUBLISH_OPTIONS_FORM).unwrap();
        assert_eq!(
            config.unmet_precondition(&patch, &limits),
            Some("pubsub#access_model")
        );
        let mut form = submit(&[("pubsub#access_model", "open")]);
        form.form_type = Some(PUBLISH_OPTIONS_FORM.into());
        let patch = node_config_patch(&form, PUBLISH_OPTIONS_FORM).unwrap();
        assert_eq!(config.unmet_precondition(&patch, &limits), None);
    }

    #[test]
    fn invalid_subscription_option_is_invalid_options() {
        let form = SubmittedForm {
            kind: "submit".into(),
            form_type: Some(SUBSCRIBE_OPTIONS_FORM.into()),
            fields: vec![("pubsub#deliver".into(), vec!["perhaps".into()])],
        };
        let error = subscription_options_patch(&form).unwrap_err();
        assert_eq!(error.condition, Condition::BadRequest);
        assert_eq!(error.app_name(), Some("invalid-options"));
    }
}
