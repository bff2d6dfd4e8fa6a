//! The XPath filters a VTP subscriber may ask for in its `authenticate`
//! answer (Comet's convention: `Meta/Param[@name='xpath-filter']`): it
//! receives an event when any of its filters holds for it, that is when
//! the XPath 1.0 expression, evaluated on the event with the document as
//! context, is true by XPath's `boolean()` (a non-empty node-set, a
//! non-zero number, a non-empty string).
//!
//! The subset of XPath 1.0 that VOEvent filters use, evaluated over the
//! parsed [`Element`] tree:
//! - location paths, absolute or relative, with `/` and `//`, name tests
//!   (`Param`, `*`), `@attr`, `@*`, `.`, `text()`, `node()`, and predicates
//!   (`[expr]`, `[n]` for the n-th node of a step);
//! - `or`, `and`, `=`, `!=`, `<`, `<=`, `>`, `>=`, unary `-`, string and
//!   number literals, parentheses, and the comparison rules of XPath §3.4
//!   (a node-set equals a value when one of its nodes does);
//! - the functions `not`, `boolean`, `true`, `false`, `number`, `string`,
//!   `count`, `contains`, `starts-with`, `local-name`, `name`.
//!
//! Names match unqualified elements (VOEvent's children are unqualified),
//! and, as in lxml without a namespace map, a prefixed name is an error, so
//! the VOEvent root itself is reached with `/*` or
//! `/*[local-name()='VOEvent']`. Anything outside the subset (other axes,
//! arithmetic, unions, variables) is refused when the filter is parsed,
//! with the reason; Comet likewise drops a filter lxml cannot compile.
//! Expressions are bounded in length and nesting, so a subscriber cannot
//! make the parser recurse without bound.

use crate::xml::{Element, Node as XmlNode};

/// Longest filter accepted, in bytes.
pub const FILTER_BYTES_MAX: usize = 1024;
/// Deepest nesting of parentheses, predicates and calls accepted.
const NESTING_MAX: usize = 32;

/// A compiled filter.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    expr: Expr,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("XPath filter {filter:?} not supported: {reason}")]
pub struct FilterError {
    filter: String,
    reason: String,
}

impl Filter {
    pub fn parse(text: &str) -> Result<Filter, FilterError> {
        let fail = |reason: String| FilterError {
            filter: text.to_owned(),
            reason,
        };
        if text.len() > FILTER_BYTES_MAX {
            return Err(fail(format!("longer than {FILTER_BYTES_MAX} bytes")));
        }
        let tokens = lex(text).map_err(fail)?;
        let mut parser = Parser {
            tokens,
            position: 0,
            depth: 0,
        };
        let expr = parser.or_expr().map_err(fail)?;
        if parser.position != parser.tokens.len() {
            return Err(fail(format!(
                "unexpected {:?}",
                parser.tokens[parser.position]
            )));
        }
        Ok(Filter { expr })
    }

    /// Whether the event whose root is `root` passes.
    pub fn matches(&self, root: &Element) -> bool {
        eval(&self.expr, &Context::Document(root), root).boolean()
    }
}

// ---- Lexing ----

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Slash,
    DoubleSlash,
    LeftBracket,
    RightBracket,
    LeftParen,
    RightParen,
    At,
    Comma,
    Dot,
    Star,
    Minus,
    Compare(Comparison),
    Name(String),
    Literal(String),
    Number(f64),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Comparison {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

fn lex(text: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        let (token, width) = match c {
            c if c.is_whitespace() => {
                i += 1;
                continue;
            }
            '/' if next == Some('/') => (Token::DoubleSlash, 2),
            '/' => (Token::Slash, 1),
            '[' => (Token::LeftBracket, 1),
            ']' => (Token::RightBracket, 1),
            '(' => (Token::LeftParen, 1),
            ')' => (Token::RightParen, 1),
            '@' => (Token::At, 1),
            ',' => (Token::Comma, 1),
            '*' => (Token::Star, 1),
            '-' => (Token::Minus, 1),
            '=' => (Token::Compare(Comparison::Eq), 1),
            '!' if next == Some('=') => (Token::Compare(Comparison::Ne), 2),
            '<' if next == Some('=') => (Token::Compare(Comparison::Le), 2),
            '<' => (Token::Compare(Comparison::Lt), 1),
            '>' if next == Some('=') => (Token::Compare(Comparison::Ge), 2),
            '>' => (Token::Compare(Comparison::Gt), 1),
            '.' if next == Some('.') => return Err("the parent axis (..)".to_owned()),
            '.' if !next.is_some_and(|n| n.is_ascii_digit()) => (Token::Dot, 1),
            '\'' | '"' => {
                let end = chars[i + 1..]
                    .iter()
                    .position(|&d| d == c)
                    .ok_or("an unterminated string literal")?;
                let literal: String = chars[i + 1..i + 1 + end].iter().collect();
                (Token::Literal(literal), end + 2)
            }
            c if c.is_ascii_digit() || c == '.' => {
                let len = chars[i..]
                    .iter()
                    .take_while(|d| d.is_ascii_digit() || **d == '.')
                    .count();
                let number: String = chars[i..i + len].iter().collect();
                let value = number
                    .parse()
                    .map_err(|_| format!("a malformed number {number}"))?;
                (Token::Number(value), len)
            }
            c if c.is_alphabetic() || c == '_' => {
                let len = chars[i..]
                    .iter()
                    .take_while(|d| d.is_alphanumeric() || matches!(d, '_' | '-' | '.' | ':'))
                    .count();
                let name: String = chars[i..i + len].iter().collect();
                if name.contains("::") {
                    return Err(format!("the axis in {name}"));
                }
                if name.contains(':') {
                    return Err(format!(
                        "the prefixed name {name} (no namespaces are bound)"
                    ));
                }
                (Token::Name(name), len)
            }
            other => return Err(format!("the character {other:?}")),
        };
        tokens.push(token);
        i += width;
    }
    Ok(tokens)
}

// ---- Parsing ----

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Or(Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Compare(Comparison, Box<Expr>, Box<Expr>),
    Negate(Box<Expr>),
    Literal(String),
    Number(f64),
    Call(Function, Vec<Expr>),
    Path(Path),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Function {
    Not,
    Boolean,
    True,
    False,
    Number,
    String,
    Count,
    Contains,
    StartsWith,
    LocalName,
    Name,
}

impl Function {
    fn named(name: &str) -> Option<(Function, usize, usize)> {
        // (function, fewest arguments, most arguments)
        Some(match name {
            "not" => (Function::Not, 1, 1),
            "boolean" => (Function::Boolean, 1, 1),
            "true" => (Function::True, 0, 0),
            "false" => (Function::False, 0, 0),
            "number" => (Function::Number, 0, 1),
            "string" => (Function::String, 0, 1),
            "count" => (Function::Count, 1, 1),
            "contains" => (Function::Contains, 2, 2),
            "starts-with" => (Function::StartsWith, 2, 2),
            "local-name" => (Function::LocalName, 0, 1),
            "name" => (Function::Name, 0, 1),
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Path {
    absolute: bool,
    steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq)]
struct Step {
    /// Reached through `//` (descendant-or-self, then this step).
    descendants: bool,
    test: NodeTest,
    predicates: Vec<Expr>,
}

#[derive(Debug, Clone, PartialEq)]
enum NodeTest {
    /// `.`
    SelfNode,
    /// A child element by name; `None` is `*`.
    Element(Option<String>),
    /// An attribute by name; `None` is `@*`.
    Attribute(Option<String>),
    /// `text()`
    Text,
    /// `node()`: elements and text.
    AnyNode,
}

struct Parser {
    tokens: Vec<Token>,
    position: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.position)
    }

    fn take(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.position).cloned();
        self.position += 1;
        token
    }

    fn eat(&mut self, token: &Token) -> bool {
        if self.peek() == Some(token) {
            self.position += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, token: &Token) -> Result<(), String> {
        if self.eat(token) {
            Ok(())
        } else {
            Err(format!("expected {token:?}, found {:?}", self.peek()))
        }
    }

    fn eat_keyword(&mut self, keyword: &str) -> bool {
        self.eat(&Token::Name(keyword.to_owned()))
    }

    fn nested<T>(
        &mut self,
        parse: impl FnOnce(&mut Self) -> Result<T, String>,
    ) -> Result<T, String> {
        self.depth += 1;
        if self.depth > NESTING_MAX {
            return Err(format!("nested deeper than {NESTING_MAX}"));
        }
        let parsed = parse(self);
        self.depth -= 1;
        parsed
    }

    fn or_expr(&mut self) -> Result<Expr, String> {
        let mut left = self.and_expr()?;
        while self.eat_keyword("or") {
            left = Expr::Or(Box::new(left), Box::new(self.and_expr()?));
        }
        Ok(left)
    }

    fn and_expr(&mut self) -> Result<Expr, String> {
        let mut left = self.compare_expr()?;
        while self.eat_keyword("and") {
            left = Expr::And(Box::new(left), Box::new(self.compare_expr()?));
        }
        Ok(left)
    }

    fn compare_expr(&mut self) -> Result<Expr, String> {
        let mut left = self.unary_expr()?;
        while let Some(Token::Compare(op)) = self.peek().cloned() {
            self.position += 1;
            left = Expr::Compare(op, Box::new(left), Box::new(self.unary_expr()?));
        }
        Ok(left)
    }

    fn unary_expr(&mut self) -> Result<Expr, String> {
        if self.eat(&Token::Minus) {
            return self.nested(|p| Ok(Expr::Negate(Box::new(p.unary_expr()?))));
        }
        self.primary_expr()
    }

    fn primary_expr(&mut self) -> Result<Expr, String> {
        match self.peek().cloned() {
            Some(Token::Literal(text)) => {
                self.position += 1;
                Ok(Expr::Literal(text))
            }
            Some(Token::Number(value)) => {
                self.position += 1;
                Ok(Expr::Number(value))
            }
            Some(Token::LeftParen) => {
                self.position += 1;
                let inner = self.nested(Self::or_expr)?;
                self.expect(&Token::RightParen)?;
                Ok(inner)
            }
            Some(Token::Name(name))
                if self.tokens.get(self.position + 1) == Some(&Token::LeftParen)
                    && !matches!(name.as_str(), "text" | "node") =>
            {
                self.position += 2;
                self.nested(|p| p.call(&name))
            }
            _ => Ok(Expr::Path(self.path()?)),
        }
    }

    fn call(&mut self, name: &str) -> Result<Expr, String> {
        let (function, fewest, most) =
            Function::named(name).ok_or_else(|| format!("the function {name}()"))?;
        let mut arguments = Vec::new();
        if !self.eat(&Token::RightParen) {
            loop {
                arguments.push(self.or_expr()?);
                if self.eat(&Token::RightParen) {
                    break;
                }
                self.expect(&Token::Comma)?;
            }
        }
        if arguments.len() < fewest || arguments.len() > most {
            return Err(format!("{name}() with {} arguments", arguments.len()));
        }
        Ok(Expr::Call(function, arguments))
    }

    fn path(&mut self) -> Result<Path, String> {
        let mut path = Path {
            absolute: false,
            steps: Vec::new(),
        };
        let mut descendants = false;
        match self.peek() {
            Some(Token::Slash) => {
                self.position += 1;
                path.absolute = true;
                // `/` alone is the document.
                if !matches!(
                    self.peek(),
                    Some(Token::Name(_) | Token::Star | Token::At | Token::Dot)
                ) {
                    return Ok(path);
                }
            }
            Some(Token::DoubleSlash) => {
                self.position += 1;
                path.absolute = true;
                descendants = true;
            }
            _ => {}
        }
        loop {
            let step = self.step(descendants)?;
            path.steps.push(step);
            descendants = match self.peek() {
                Some(Token::Slash) => false,
                Some(Token::DoubleSlash) => true,
                _ => return Ok(path),
            };
            self.position += 1;
        }
    }

    fn step(&mut self, descendants: bool) -> Result<Step, String> {
        let test = match self.take() {
            Some(Token::Dot) => NodeTest::SelfNode,
            Some(Token::Star) => NodeTest::Element(None),
            Some(Token::At) => match self.take() {
                Some(Token::Star) => NodeTest::Attribute(None),
                Some(Token::Name(name)) => NodeTest::Attribute(Some(name)),
                other => return Err(format!("an attribute name, found {other:?}")),
            },
            Some(Token::Name(name)) if name == "text" || name == "node" => {
                self.expect(&Token::LeftParen)?;
                self.expect(&Token::RightParen)?;
                if name == "text" {
                    NodeTest::Text
                } else {
                    NodeTest::AnyNode
                }
            }
            Some(Token::Name(name)) => NodeTest::Element(Some(name)),
            other => return Err(format!("a location step, found {other:?}")),
        };
        let mut predicates = Vec::new();
        while self.eat(&Token::LeftBracket) {
            predicates.push(self.nested(Self::or_expr)?);
            self.expect(&Token::RightBracket)?;
        }
        Ok(Step {
            descendants,
            test,
            predicates,
        })
    }
}

// ---- Evaluation ----

/// A node of the event: the document, an element, an attribute value or a
/// text node.
#[derive(Debug, Clone, Copy)]
enum Context<'a> {
    Document(&'a Element),
    Element(&'a Element),
    Attribute { name: &'a str, value: &'a str },
    Text(&'a str),
}

impl<'a> Context<'a> {
    /// XPath §5: the concatenated text of an element's descendants.
    fn string_value(&self) -> String {
        match self {
            Context::Document(e) | Context::Element(e) => {
                let mut out = String::new();
                // Depth-first in document order, without recursion.
                let mut stack = vec![e.nodes().iter()];
                while let Some(top) = stack.last_mut() {
                    match top.next() {
                        Some(XmlNode::Text(text)) => out.push_str(text),
                        Some(XmlNode::Element(child)) => stack.push(child.nodes().iter()),
                        // Only items replies and publish requests hold
                        // unparsed XML, never a packet.
                        Some(XmlNode::Raw(_) | XmlNode::Captured(_)) => {}
                        None => {
                            stack.pop();
                        }
                    }
                }
                out
            }
            Context::Attribute { value, .. } => (*value).to_owned(),
            Context::Text(text) => (*text).to_owned(),
        }
    }

    fn local_name(&self) -> &'a str {
        match self {
            Context::Element(e) => e.name(),
            Context::Attribute { name, .. } => name,
            Context::Document(_) | Context::Text(_) => "",
        }
    }

    fn qualified_name(&self) -> String {
        match self {
            Context::Element(e) => match e.prefix() {
                Some(prefix) => format!("{prefix}:{}", e.name()),
                None => e.name().to_owned(),
            },
            other => other.local_name().to_owned(),
        }
    }

    /// The children a step looks at: elements and text.
    fn children(&self, out: &mut Vec<Context<'a>>) {
        match self {
            Context::Document(root) => out.push(Context::Element(root)),
            Context::Element(e) => {
                for node in e.nodes() {
                    match node {
                        XmlNode::Element(child) => out.push(Context::Element(child)),
                        XmlNode::Text(text) => out.push(Context::Text(text)),
                        // Only items replies and publish requests hold
                        // unparsed XML, never a packet.
                        XmlNode::Raw(_) | XmlNode::Captured(_) => {}
                    }
                }
            }
            Context::Attribute { .. } | Context::Text(_) => {}
        }
    }

    /// This node and its descendants, in document order.
    fn descendants_or_self(&self, out: &mut Vec<Context<'a>>) {
        let mut pending = vec![*self];
        while let Some(node) = pending.pop() {
            out.push(node);
            let mut children = Vec::new();
            node.children(&mut children);
            pending.extend(children.into_iter().rev());
        }
    }
}

#[derive(Debug)]
enum Value<'a> {
    Nodes(Vec<Context<'a>>),
    Boolean(bool),
    Number(f64),
    String(String),
}

impl Value<'_> {
    fn boolean(&self) -> bool {
        match self {
            Value::Nodes(nodes) => !nodes.is_empty(),
            Value::Boolean(b) => *b,
            Value::Number(n) => *n != 0.0 && !n.is_nan(),
            Value::String(s) => !s.is_empty(),
        }
    }

    fn number(&self) -> f64 {
        match self {
            Value::Nodes(_) | Value::String(_) => to_number(&self.string()),
            Value::Boolean(b) => f64::from(u8::from(*b)),
            Value::Number(n) => *n,
        }
    }

    fn string(&self) -> String {
        match self {
            Value::Nodes(nodes) => nodes.first().map(Context::string_value).unwrap_or_default(),
            Value::Boolean(b) => b.to_string(),
            Value::Number(n) if n.fract() == 0.0 && n.is_finite() => format!("{n:.0}"),
            Value::Number(n) => n.to_string(),
            Value::String(s) => s.clone(),
        }
    }
}

fn to_number(text: &str) -> f64 {
    text.trim().parse().unwrap_or(f64::NAN)
}

/// Evaluates `expr` at `context`, in the event whose root is `root`
/// (where absolute paths start).
fn eval<'a>(expr: &Expr, context: &Context<'a>, root: &'a Element) -> Value<'a> {
    match expr {
        Expr::Or(a, b) => {
            Value::Boolean(eval(a, context, root).boolean() || eval(b, context, root).boolean())
        }
        Expr::And(a, b) => {
            Value::Boolean(eval(a, context, root).boolean() && eval(b, context, root).boolean())
        }
        Expr::Compare(op, a, b) => Value::Boolean(compare(
            *op,
            &eval(a, context, root),
            &eval(b, context, root),
        )),
        Expr::Negate(inner) => Value::Number(-eval(inner, context, root).number()),
        Expr::Literal(text) => Value::String(text.clone()),
        Expr::Number(n) => Value::Number(*n),
        Expr::Call(function, arguments) => call(*function, arguments, context, root),
        Expr::Path(path) => Value::Nodes(select(path, context, root)),
    }
}

fn call<'a>(
    function: Function,
    arguments: &[Expr],
    context: &Context<'a>,
    root: &'a Element,
) -> Value<'a> {
    let argument = |i: usize| arguments.get(i).map(|a| eval(a, context, root));
    // The context node, for the functions whose argument defaults to it.
    let node_or_context = || match argument(0) {
        Some(Value::Nodes(nodes)) => nodes.first().copied(),
        Some(_) => None,
        None => Some(*context),
    };
    let text = |i: usize| argument(i).map(|v| v.string()).unwrap_or_default();
    match function {
        Function::Not => Value::Boolean(!argument(0).is_some_and(|v| v.boolean())),
        Function::Boolean => Value::Boolean(argument(0).is_some_and(|v| v.boolean())),
        Function::True => Value::Boolean(true),
        Function::False => Value::Boolean(false),
        Function::Number => Value::Number(match argument(0) {
            Some(value) => value.number(),
            None => to_number(&context.string_value()),
        }),
        Function::String => Value::String(match argument(0) {
            Some(value) => value.string(),
            None => context.string_value(),
        }),
        Function::Count => Value::Number(match argument(0) {
            Some(Value::Nodes(nodes)) => nodes.len() as f64,
            _ => f64::NAN,
        }),
        Function::Contains => Value::Boolean(text(0).contains(&text(1))),
        Function::StartsWith => Value::Boolean(text(0).starts_with(&text(1))),
        Function::LocalName => Value::String(
            node_or_context()
                .map(|n| n.local_name().to_owned())
                .unwrap_or_default(),
        ),
        Function::Name => Value::String(
            node_or_context()
                .map(|n| n.qualified_name())
                .unwrap_or_default(),
        ),
    }
}

/// XPath §3.4: a node-set compares as each of its nodes' string-values (a
/// node-set and a boolean, as the node-set's boolean).
fn compare(op: Comparison, a: &Value<'_>, b: &Value<'_>) -> bool {
    let atoms = |v: &Value<'_>, other: &Value<'_>| -> Vec<Value<'static>> {
        match v {
            Value::Nodes(_) if matches!(other, Value::Boolean(_)) => {
                vec![Value::Boolean(v.boolean())]
            }
            Value::Nodes(nodes) => nodes
                .iter()
                .map(|n| Value::String(n.string_value()))
                .collect(),
            Value::Boolean(x) => vec![Value::Boolean(*x)],
            Value::Number(x) => vec![Value::Number(*x)],
            Value::String(x) => vec![Value::String(x.clone())],
        }
    };
    let (left, right) = (atoms(a, b), atoms(b, a));
    left.iter()
        .any(|l| right.iter().any(|r| compare_atoms(op, l, r)))
}

fn compare_atoms(op: Comparison, a: &Value<'_>, b: &Value<'_>) -> bool {
    match op {
        Comparison::Eq | Comparison::Ne => {
            let equal = match (a, b) {
                (Value::Boolean(_), _) | (_, Value::Boolean(_)) => a.boolean() == b.boolean(),
                (Value::Number(_), _) | (_, Value::Number(_)) => a.number() == b.number(),
                _ => a.string() == b.string(),
            };
            equal == (op == Comparison::Eq)
        }
        Comparison::Lt => a.number() < b.number(),
        Comparison::Le => a.number() <= b.number(),
        Comparison::Gt => a.number() > b.number(),
        Comparison::Ge => a.number() >= b.number(),
    }
}

fn select<'a>(path: &Path, context: &Context<'a>, root: &'a Element) -> Vec<Context<'a>> {
    let start = if path.absolute {
        Context::Document(root)
    } else {
        *context
    };
    let mut current = vec![start];
    for step in &path.steps {
        let mut next = Vec::new();
        for node in &current {
            let mut origins = Vec::new();
            if step.descendants {
                node.descendants_or_self(&mut origins);
            } else {
                origins.push(*node);
            }
            for origin in origins {
                let mut candidates = step_candidates(&step.test, &origin);
                for predicate in &step.predicates {
                    candidates = filter_by(predicate, candidates, root);
                }
                next.extend(candidates);
            }
        }
        current = next;
    }
    current
}

fn step_candidates<'a>(test: &NodeTest, origin: &Context<'a>) -> Vec<Context<'a>> {
    match test {
        NodeTest::SelfNode => vec![*origin],
        NodeTest::Attribute(name) => match origin {
            Context::Element(e) => e
                .attrs()
                .iter()
                .filter(|a| a.ns.is_empty())
                .filter(|a| name.as_deref().is_none_or(|n| a.name == n))
                .map(|a| Context::Attribute {
                    name: &a.name,
                    value: &a.value,
                })
                .collect(),
            _ => Vec::new(),
        },
        NodeTest::Element(name) => {
            let mut children = Vec::new();
            origin.children(&mut children);
            children.retain(|child| match child {
                Context::Element(e) => match name {
                    None => true,
                    Some(n) => e.ns().is_empty() && e.name() == n,
                },
                _ => false,
            });
            children
        }
        NodeTest::Text => {
            let mut children = Vec::new();
            origin.children(&mut children);
            children.retain(|child| matches!(child, Context::Text(_)));
            children
        }
        NodeTest::AnyNode => {
            let mut children = Vec::new();
            origin.children(&mut children);
            children
        }
    }
}

/// Keeps the candidates for which `predicate` holds; a number predicate
/// keeps the node at that 1-based position.
fn filter_by<'a>(
    predicate: &Expr,
    candidates: Vec<Context<'a>>,
    root: &'a Element,
) -> Vec<Context<'a>> {
    candidates
        .into_iter()
        .enumerate()
        .filter(|(position, node)| match eval(predicate, node, root) {
            Value::Number(n) => n == (*position + 1) as f64,
            other => other.boolean(),
        })
        .map(|(_, node)| node)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::{ParserLimits, parse_document};

    const SWIFT: &str =
        include_str!("../../tests/data/voevents/SWIFT_bat_position_v2.0_example.xml");
    const GAIA: &str = include_str!("../../tests/data/voevents/Gaia16aac.xml");

    fn root(text: &str) -> Element {
        let limits = ParserLimits {
            stanza_bytes_max: 1 << 20,
            depth_max: 64,
            attributes_max: 64,
        };
        parse_document(text.as_bytes(), limits).unwrap()
    }

    fn passes(filter: &str, event: &str) -> bool {
        Filter::parse(filter)
            .unwrap_or_else(|e| panic!("{e}"))
            .matches(&root(event))
    }

    #[test]
    fn role_and_root_tests_as_comet_users_write_them() {
        assert!(passes(
            "/*[local-name()='VOEvent' and @role='observation']",
            GAIA
        ));
        assert!(!passes("/*[@role='test']", GAIA));
        assert!(passes(
            "//Who/AuthorIVORN[text()='ivo://gaia.cam.uk']",
            GAIA
        ));
        assert!(!passes(
            "//Who/AuthorIVORN[.='ivo://nasa.gsfc.tan/gcn']",
            GAIA
        ));
        assert!(passes("contains(/*/@ivorn, 'Gaia16')", GAIA));
        assert!(passes(
            "starts-with(/*/@ivorn, 'ivo://nasa.gsfc.gcn/SWIFT')",
            SWIFT
        ));
    }

    #[test]
    fn numeric_comparisons_on_param_values() {
        assert!(passes("//Param[@name='averagemag' and @value < 18]", GAIA));
        assert!(!passes("//Param[@name='averagemag' and @value < 17]", GAIA));
        assert!(passes("//Param[@name='averagemag'][@value >= -1]", GAIA));
        // Empty values are not numbers: no comparison holds.
        assert!(!passes(
            "//Group[@name='historic-magnitude']/Param[@value > 0]",
            GAIA
        ));
    }

    #[test]
    fn names_are_unqualified_and_positions_count_from_one() {
        assert!(!passes("/VOEvent", GAIA));
        assert!(passes("count(//Param) > 3", GAIA));
        assert!(passes("//Group[1][@name='alert-magnitude']", GAIA));
        assert!(passes("name(/*) = 'voe:VOEvent'", GAIA));
        assert!(passes("not(//Citations)", GAIA));
        // An absolute path inside a predicate starts at the document.
        assert!(passes("//Param/@value[/*/@role = 'observation']", GAIA));
    }

    #[test]
    fn string_values_gather_descendant_text() {
        assert!(passes(
            "//What/Description = 'Gaia Science Alert: Gaia16aac, magnitude 17.32'",
            GAIA
        ));
        assert!(passes("contains(string(//Author), 'Cambridge')", GAIA));
    }

    #[test]
    fn constructs_outside_the_subset_are_refused_with_the_reason() {
        for (filter, reason) in [
            ("//voe:VOEvent", "prefixed name"),
            ("ancestor::Who", "axis"),
            ("//Param/..", "parent axis"),
            ("//Param | //Group", "character '|'"),
            ("translate(., 'a', 'b')", "function translate"),
            ("//Param[@value", "expected"),
        ] {
            let error = Filter::parse(filter).unwrap_err();
            assert!(error.to_string().contains(reason), "{filter}: {error}");
        }
        let deep = format!("{}1{}", "(".repeat(40), ")".repeat(40));
        assert!(
            Filter::parse(&deep)
                .unwrap_err()
                .to_string()
                .contains("nested")
        );
        assert!(Filter::parse(&"a".repeat(2000)).is_err());
    }
}
