//! Which pubsub node an ingested event goes to: `[vtp] node_template`,
//! with `{authority}` and `{stream}` (the IVORN's resource key) replaced.
//! The default, `voevent/{authority}/{stream}`, is INTERFACE.md's one node
//! per stream; `voevent/{authority}` gathers an authority's streams, and a
//! template without placeholders sends everything to one node.

use crate::voevent::Ivorn;

/// A checked `node_template`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeTemplate(String);

impl NodeTemplate {
    /// Accepts a non-empty template whose only `{…}` are the two
    /// placeholders.
    pub fn parse(template: &str) -> Result<NodeTemplate, String> {
        if template.trim().is_empty() {
            return Err("must name a node".to_owned());
        }
        let rest = template.replace("{authority}", "").replace("{stream}", "");
        if rest.contains(['{', '}']) {
            return Err(format!(
                "`{template}` has a placeholder other than {{authority}} and {{stream}}"
            ));
        }
        Ok(NodeTemplate(template.to_owned()))
    }

    /// The node of `ivorn`'s events.
    pub fn node(&self, ivorn: &Ivorn) -> String {
        self.0
            .replace("{authority}", &ivorn.authority)
            .replace("{stream}", &ivorn.resource_key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn swift() -> Ivorn {
        Ivorn::parse("ivo://nasa.gsfc.gcn/SWIFT#BAT_123").unwrap()
    }

    #[test]
    fn the_default_is_one_node_per_stream() {
        let template = NodeTemplate::parse("voevent/{authority}/{stream}").unwrap();
        assert_eq!(template.node(&swift()), swift().pubsub_node());
        assert_eq!(template.node(&swift()), "voevent/nasa.gsfc.gcn/SWIFT");
    }

    #[test]
    fn other_rules_group_streams() {
        let by_authority = NodeTemplate::parse("voevent/{authority}").unwrap();
        assert_eq!(by_authority.node(&swift()), "voevent/nasa.gsfc.gcn");
        let one = NodeTemplate::parse("voevent/all").unwrap();
        assert_eq!(one.node(&swift()), "voevent/all");
    }

    #[test]
    fn unknown_placeholders_and_empty_templates_are_refused() {
        assert!(NodeTemplate::parse("voevent/{role}").is_err());
        assert!(NodeTemplate::parse(" ").is_err());
    }
}
