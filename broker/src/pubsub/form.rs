//! XEP-0004 data forms: the small subset pubsub needs to read submitted
//! forms (`type='submit'`) and write forms and results.

use crate::pubsub::error::{Condition, StanzaError};
use crate::xml::Element;

pub const DATA_NS: &str = "jabber:x:data";

/// A submitted form: its `FORM_TYPE` and fields in document order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmittedForm {
    /// `submit` or `cancel` (XEP-0004 §3.1).
    pub kind: String,
    pub form_type: Option<String>,
    pub fields: Vec<(String, Vec<String>)>,
}

impl SubmittedForm {
    /// Reads `<x xmlns='jabber:x:data'/>`.
    pub fn parse(x: &Element) -> Result<Self, StanzaError> {
        let bad = |text: &str| StanzaError::new(Condition::BadRequest).with_text(text.to_owned());
        if !x.is("x", DATA_NS) {
            return Err(bad("expected a jabber:x:data form"));
        }
        let kind = x.attr("type").unwrap_or("submit").to_owned();
        let mut form_type = None;
        let mut fields = Vec::new();
        for field in x.children().filter(|c| c.is("field", DATA_NS)) {
            let Some(var) = field.attr("var") else {
                return Err(bad("form field without var"));
            };
            let values: Vec<String> = field
                .children()
                .filter(|c| c.is("value", DATA_NS))
                .map(Element::text)
                .collect();
            if var == "FORM_TYPE" {
                form_type = values.into_iter().next();
            } else {
                fields.push((var.to_owned(), values));
            }
        }
        Ok(SubmittedForm {
            kind,
            form_type,
            fields,
        })
    }

    pub fn is_cancel(&self) -> bool {
        self.kind == "cancel"
    }

    /// The single value of `var`, if present.
    pub fn value(&self, var: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(v, _)| v == var)
            .and_then(|(_, values)| values.first())
            .map(String::as_str)
    }
}

/// Parses an XEP-0004 boolean (`1`/`true`/`0`/`false`).
pub fn parse_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

/// Builds a form (`type='form'`, `'result'` or `'submit'`).
pub struct FormBuilder {
    x: Element,
}

impl FormBuilder {
    pub fn new(kind: &str, form_type: &str) -> Self {
        let x = Element::new("x", DATA_NS)
            .with_attr("type", kind)
            .with_child(
                Element::new("field", DATA_NS)
                    .with_attr("var", "FORM_TYPE")
                    .with_attr("type", "hidden")
                    .with_child(Element::new("value", DATA_NS).with_text(form_type)),
            );
        FormBuilder { x }
    }

    /// Adds a field of XEP-0004 `field_type` with `values` and, for list
    /// types, the `options` offered.
    pub fn field(
        mut self,
        var: &str,
        field_type: &str,
        label: &str,
        values: &[&str],
        options: &[&str],
    ) -> Self {
        let mut field = Element::new("field", DATA_NS)
            .with_attr("var", var)
            .with_attr("type", field_type);
        if !label.is_empty() {
            field.set_attr("label", label);
        }
        for value in values {
            field.push_child(Element::new("value", DATA_NS).with_text(*value));
        }
        for option in options {
            field.push_child(
                Element::new("option", DATA_NS)
                    .with_child(Element::new("value", DATA_NS).with_text(*option)),
            );
        }
        self.x.push_child(field);
        self
    }

    pub fn boolean(self, var: &str, label: &str, value: bool) -> Self {
        self.field(var, "boolean", label, &[if value { "1" } else { "0" }], &[])
    }

    pub fn build(self) -> Element {
        self.x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn submitted_form_reads_type_and_values() {
        let x = FormBuilder::new("submit", "urn:example")
            .field("a", "text-multi", "", &["1", "2"], &[])
            .build();
        let form = SubmittedForm::parse(&x).unwrap();
        assert_eq!(form.form_type.as_deref(), Some("urn:example"));
        assert_eq!(
            form.fields,
            vec![("a".to_owned(), vec!["1".to_owned(), "2".to_owned()])]
        );
        assert_eq!(form.value("a"), Some("1"));
        assert!(!form.is_cancel());
    }

    #[test]
    fn field_without_var_is_bad_request() {
        let x = Element::new("x", DATA_NS).with_child(Element::new("field", DATA_NS));
        let error = SubmittedForm::parse(&x).unwrap_err();
        assert_eq!(error.condition, Condition::BadRequest);
    }
}
