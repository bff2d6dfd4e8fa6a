//! The incremental XMPP stream parser (RFC 6120 §4, §11).
//!
//! A client's stream is one long XML document: a `<stream:stream>` header,
//! then top-level elements (stanzas, `<starttls/>`, SASL exchanges), then
//! `</stream:stream>`. [`StreamParser`] is fed the bytes read from the
//! socket, in whatever fragments they arrive, and produces [`StreamEvent`]s:
//! the header, each complete top-level element as an [`Element`] tree with
//! its namespaces resolved, and the end of the stream. It does no I/O.
//! [`parse_document`] reads a standalone document (a VOEvent file or
//! packet) with the same machinery, in a grammar that skips comments and
//! processing instructions.
//!
//! # How it is incremental
//! quick-xml tokenizes complete input only: fed a fragment, it reports an
//! error or a truncated event, and re-running it from the start of the
//! unfinished event on every read would cost time quadratic in the size of
//! a stanza that trickles in. So the parser finds token boundaries itself,
//! with a small byte-level state machine ([`Tokenizer`]): text runs up to
//! `<`, tags up to an unquoted `>`, CDATA up to `]]>`. Only once a whole
//! token is buffered is it read: a start tag's name and attributes here
//! (quick-xml's attribute reader accepted attributes with no whitespace
//! between them, which expat refuses), the XML declaration by quick-xml's
//! reader, text by its unescaper. The tokenizer keeps its position and state
//! between calls, so every byte is examined once however small the
//! fragments are; the buffer keeps only the unfinished token, and what a
//! completed token leaves behind came from the latest fragment, so
//! compacting it is linear too. The price: one token (a long text run, a
//! tag with many attributes) is held whole before it is parsed, and the
//! buffer keeps its capacity; both are bounded by the stanza limit, which
//! is checked byte by byte as the stanza arrives. Token delimiters are
//! ASCII, which never occurs inside a multi-byte UTF-8 sequence, so tokens
//! of validated text are text. The bytes are validated as UTF-8 once, as
//! they are buffered (a character split across reads waits for its last
//! bytes), not token by token: a call per token cost more than the check.
//!
//! # Payloads kept as written
//! A server stores and forwards a published item's payload; it never reads
//! it as a tree. A parser made with [`StreamParser::capture_children_of`]
//! keeps the children of the elements its rule picks as text
//! ([`Node::Captured`]): each token of such a child is checked exactly as
//! the tree builder checks it (names, attributes, references, characters,
//! namespace bindings, the limits), then appended to the text as it was
//! written, and no element is built. What the text takes from outside
//! itself, the namespaces its names resolve through, is declared on its
//! start tag when it closes, so it is correct wherever it is inserted. The
//! root's name and attributes and its children's names stay readable as an
//! outline, for checks such as the VOEvent root's.
//!
//! # What is refused
//! RFC 6120 §11.1 restricts XMPP to a subset of XML: no DTD, no comments,
//! no processing instructions, no entity references beyond the five
//! predefined ones (which is what makes entity-expansion bombs impossible).
//! Documents may carry comments and processing instructions, which are
//! dropped, but never a DTD: their entities stay the predefined five.
//! Every top-level element, the stream header included, is limited in size,
//! depth and attributes per element ([`ParserLimits`]); elements are built
//! with an explicit stack, never by recursion.

use std::borrow::Cow;
use std::ops::Range;
use std::sync::Arc;

use quick_xml::Reader;
use quick_xml::escape::{EscapeError, resolve_xml_entity, unescape_with};
use quick_xml::events::{BytesDecl, BytesText, Event};

use super::element::{Attr, Captured, Element, Node, XML_NS, escape_into};

/// The namespace reserved for namespace declarations (XML Namespaces §3);
/// no prefix may be bound to it.
const XMLNS_NS: &str = "http://www.w3.org/2000/xmlns/";

/// Bounds on what one peer may make the parser hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParserLimits {
    /// Size of one top-level element (and of the stream header), from its
    /// `<` to the end of its end tag; for [`parse_document`], of the whole
    /// document.
    pub stanza_bytes_max: usize,
    /// Element nesting within a top-level element, which is depth 1.
    pub depth_max: usize,
    /// Attributes on one element, namespace declarations included.
    pub attributes_max: usize,
}

/// The opening `<stream:stream>` tag (RFC 6120 §4.7). The parser checks
/// only that the root element is named `stream`; its namespaces and
/// attributes are for the session to judge (§4.9.3.10 `invalid-namespace`,
/// §4.9.3.25 `unsupported-version`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamHeader {
    pub prefix: Option<String>,
    /// The namespace of the root element; `http://etherx.jabber.org/streams`
    /// in a valid stream.
    pub stream_ns: String,
    /// The default namespace declared on the header (`jabber:client`,
    /// `jabber:server`), which the top-level elements inherit.
    pub content_ns: Option<String>,
    pub to: Option<String>,
    pub from: Option<String>,
    pub version: Option<String>,
    /// `xml:lang`.
    pub lang: Option<String>,
    pub id: Option<String>,
}

/// What the parser produces, in stream order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    Header(StreamHeader),
    /// A complete top-level element: a stanza or a stream-level element
    /// such as `<starttls/>` or `<stream:error/>`.
    Stanza(Element),
    /// `</stream:stream>` (or a self-closed header).
    End,
}

impl StreamEvent {
    /// The top-level element, if this is one.
    pub fn into_stanza(self) -> Option<Element> {
        match self {
            StreamEvent::Stanza(stanza) => Some(stanza),
            _ => None,
        }
    }
}

/// Why the stream cannot go on. Each maps to a stream error condition
/// ([`ParseError::condition`]); after one, the parser refuses further input.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    #[error("not well-formed XML: {0}")]
    NotWellFormed(String),
    #[error("XML outside the subset XMPP allows (RFC 6120 §11.1): {0}")]
    RestrictedXml(String),
    #[error("a top-level element exceeds {limit} bytes")]
    StanzaTooLarge { limit: usize },
    #[error("elements nested deeper than {limit}")]
    TooDeep { limit: usize },
    #[error("an element has more than {limit} attributes")]
    TooManyAttributes { limit: usize },
    /// RFC 6120 §11.6: XMPP streams are UTF-8.
    #[error("encoding {0:?} declared; only UTF-8 is supported")]
    UnsupportedEncoding(String),
    /// Well-formed XML that is not an XMPP stream: a root other than
    /// `stream`, or character data between top-level elements.
    #[error("not an XMPP stream: {0}")]
    BadFormat(String),
}

impl ParseError {
    /// The RFC 6120 §4.9.3 stream error condition to send before closing.
    pub fn condition(&self) -> &'static str {
        match self {
            ParseError::NotWellFormed(_) => "not-well-formed",
            ParseError::RestrictedXml(_) => "restricted-xml",
            // §4.9.3.14: the entity violated a local service policy, such
            // as a stanza size limit.
            ParseError::StanzaTooLarge { .. }
            | ParseError::TooDeep { .. }
            | ParseError::TooManyAttributes { .. } => "policy-violation",
            ParseError::UnsupportedEncoding(_) => "unsupported-encoding",
            ParseError::BadFormat(_) => "bad-format",
        }
    }
}

/// The longest text an error carries. Messages quote the client's names,
/// keys, entity names and values, which may be as long as a stanza; the
/// text goes back in the stream error and into the logs.
const ERROR_TEXT_MAX: usize = 256;

/// `what`, cut to [`ERROR_TEXT_MAX`] bytes and an ellipsis.
fn error_text(what: impl Into<String>) -> String {
    let mut what = what.into();
    if what.len() > ERROR_TEXT_MAX {
        what.truncate(what.floor_char_boundary(ERROR_TEXT_MAX));
        what.push('…');
    }
    what
}

fn not_well_formed(what: impl Into<String>) -> ParseError {
    ParseError::NotWellFormed(error_text(what))
}

/// Which XML the parser accepts: the tokenizer and the tree builder are
/// shared, and differ only where these two grammars do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Grammar {
    /// An XMPP stream: restricted XML (RFC 6120 §11.1) under a `<stream>`
    /// root, each top-level element reported as it completes.
    Stream,
    /// One standalone XML document: comments and processing instructions
    /// are skipped, the root may be any element and is reported whole.
    Document,
}

/// Turns the bytes of one XMPP stream into [`StreamEvent`]s.
#[derive(Debug)]
pub struct StreamParser {
    limits: ParserLimits,
    grammar: Grammar,
    tokenizer: Tokenizer,
    tree: TreeBuilder,
    /// Set by the first error; the stream is dead after it.
    failed: Option<ParseError>,
}

impl StreamParser {
    pub fn new(limits: ParserLimits) -> Self {
        StreamParser::with_grammar(limits, Grammar::Stream, None)
    }

    fn with_grammar(
        limits: ParserLimits,
        grammar: Grammar,
        capture_rule: Option<CaptureRule>,
    ) -> Self {
        StreamParser {
            limits,
            grammar,
            tokenizer: Tokenizer::new(limits.stanza_bytes_max, grammar),
            tree: TreeBuilder::new(limits, grammar, capture_rule),
            failed: None,
        }
    }

    /// Keeps every child element of an element `parent` accepts as the
    /// text it was written in ([`Node::Captured`]), checked but not built
    /// into a tree: for content the server stores and passes on rather
    /// than reads, such as published item payloads.
    pub fn capture_children_of(mut self, parent: CaptureRule) -> Self {
        self.tree.capture_rule = Some(parent);
        self
    }

    /// Feeds bytes just read from the socket; appends every complete event
    /// to `events`. On error, the events appended before the fault are
    /// complete and valid; the caller sends the stream error
    /// ([`ParseError::condition`]) and closes, and every later call returns
    /// the same error.
    pub fn push(&mut self, data: &[u8], events: &mut Vec<StreamEvent>) -> Result<(), ParseError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        let result = self.process(data, events);
        if let Err(error) = &result {
            // Nothing of a broken stream is worth holding on to.
            self.reset();
            self.failed = Some(error.clone());
        }
        result
    }

    /// Forget everything: a new stream starts (after STARTTLS and after SASL
    /// success, RFC 6120 §5.4.3.3, §6.4.6). Bytes pushed before the reset
    /// and not yet parsed are dropped: the peer must not pipeline past the
    /// point where the stream restarts.
    pub fn reset(&mut self) {
        *self = StreamParser::with_grammar(self.limits, self.grammar, self.tree.capture_rule);
    }

    fn process(&mut self, data: &[u8], events: &mut Vec<StreamEvent>) -> Result<(), ParseError> {
        // What came before invalid UTF-8 is still read, as it would have
        // been had the fault arrived in a later read.
        let appended = self.tokenizer.append(data);
        loop {
            let context = TokenContext {
                stream_level: self.tree.node_marks.is_empty(),
                in_prolog: matches!(self.tree.phase, Phase::Prolog),
                stream_open: matches!(self.tree.phase, Phase::Open { .. }),
            };
            let Some(kind) = self.tokenizer.next_token(context)? else {
                break;
            };
            let token = self.tokenizer.take_token()?;
            self.tree.handle(kind, token, events)?;
            if self.tree.node_marks.is_empty() {
                self.tokenizer.unit_start = None;
            }
        }
        self.tokenizer.compact();
        appended
    }
}

/// Parses one complete standalone XML document into its root element.
///
/// For XML that arrives whole rather than as a stream: VOEvent files given
/// to `vomesh publish` and VOEvent Transport Protocol packets, each of which
/// is a document of its own. The same tokenizer and tree builder as for
/// streams do the work, with these differences:
/// - a UTF-8 byte order mark may precede the document, and the XML
///   declaration (which must declare UTF-8 or no encoding) may open it;
/// - comments and processing instructions are allowed anywhere, and
///   dropped: they are not content, so the returned tree, and any payload
///   re-serialized from it with [`Element::to_xml`], does not carry them;
/// - the root may be any element; its namespaces are resolved with none in
///   scope, so an unprefixed element without `xmlns` is in no namespace.
///
/// DOCTYPE and entity declarations are still refused (`RestrictedXml`):
/// packets come from untrusted peers and their entities are never expanded.
/// `stanza_bytes_max` bounds the whole document, byte order mark included;
/// the depth and attribute limits apply as to a stanza, the root at depth 1.
/// Anything but whitespace, comments and processing instructions around
/// the one root element, or a document that ends early, is
/// `NotWellFormed`.
pub fn parse_document(document: &[u8], limits: ParserLimits) -> Result<Element, ParseError> {
    if document.len() > limits.stanza_bytes_max {
        return Err(ParseError::StanzaTooLarge {
            limit: limits.stanza_bytes_max,
        });
    }
    // XML 1.0 §4.3.3, Appendix F: the byte order mark is not part of the
    // document, so the declaration may still come first after it.
    let document = document.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(document);
    let mut parser = StreamParser::with_grammar(limits, Grammar::Document, None);
    let mut events = Vec::new();
    parser.process(document, &mut events)?;
    // The tokenizer keeps an unfinished token (an unclosed comment, text
    // left open in the root) buffered until the input that ends it.
    let token_unfinished =
        !parser.tokenizer.buf.is_empty() || !parser.tokenizer.split_char.is_empty();
    match (events.pop(), &parser.tree.phase) {
        (Some(StreamEvent::Stanza(root)), Phase::Closed) if !token_unfinished => Ok(root),
        (None, Phase::Prolog) if !token_unfinished => Err(not_well_formed("no root element")),
        _ => Err(not_well_formed("the document ends early")),
    }
}

/// What kind of token the tokenizer delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenKind {
    Text,
    /// A start, empty-element or end tag.
    Tag,
    /// `<?target ...?>`; `first` when it opened the input, the only place
    /// the XML declaration may stand (XML 1.0 §2.8). In a stream, no other
    /// processing instruction gets this far.
    Pi {
        first: bool,
    },
    Cdata,
    /// `<!-- ... -->`, in a document only.
    Comment,
}

/// Where a token boundary search stands between two fragments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ScanState {
    /// The next byte starts a token.
    Idle,
    Text,
    /// Just after `<`.
    Open,
    /// Inside a tag; `quote` is the open attribute-value delimiter.
    Tag {
        quote: Option<u8>,
    },
    /// Inside `<?`; `question` when the last byte was `?`.
    Pi {
        question: bool,
        first: bool,
    },
    /// Matching `<![CDATA[`; `matched` bytes of it seen so far.
    CdataOpen {
        matched: usize,
    },
    /// Inside a CDATA section; `brackets` trailing `]` seen (at most 2).
    Cdata {
        brackets: u8,
    },
    /// After `<!-`, expecting the second `-`.
    CommentOpen,
    /// Inside a comment; `dashes` trailing `-` seen (at most 2).
    Comment {
        dashes: u8,
    },
}

/// What the tokenizer needs to know about the document position.
#[derive(Debug, Clone, Copy)]
struct TokenContext {
    /// No top-level element is open.
    stream_level: bool,
    /// The stream header has not been seen yet.
    in_prolog: bool,
    /// Between the header and `</stream:stream>`.
    stream_open: bool,
}

const CDATA_OPEN: &[u8] = b"<![CDATA[";

/// Finds token boundaries in the bytes received so far and enforces the
/// size limit on each top-level unit while it is still arriving.
#[derive(Debug)]
struct Tokenizer {
    stanza_bytes_max: usize,
    grammar: Grammar,
    /// Unconsumed input: the current token, scanned up to `scan_pos`.
    buf: String,
    /// The first bytes of a character the last read split.
    split_char: Vec<u8>,
    /// Stream offset of `buf[0]`.
    base: u64,
    token_start: usize,
    scan_pos: usize,
    state: ScanState,
    /// Stream offset of the `<` opening the current top-level unit (header,
    /// top-level element, stream end tag), while one is in progress.
    unit_start: Option<u64>,
}

impl Tokenizer {
    fn new(stanza_bytes_max: usize, grammar: Grammar) -> Self {
        Tokenizer {
            stanza_bytes_max,
            grammar,
            buf: String::new(),
            split_char: Vec::new(),
            base: 0,
            token_start: 0,
            scan_pos: 0,
            state: ScanState::Idle,
            unit_start: None,
        }
    }

    /// Buffers `data` as text. Invalid UTF-8 is an error once the text
    /// before it is buffered.
    fn append(&mut self, mut data: &[u8]) -> Result<(), ParseError> {
        while !self.split_char.is_empty() {
            let Some((&byte, rest)) = data.split_first() else {
                return Ok(());
            };
            self.split_char.push(byte);
            data = rest;
            match std::str::from_utf8(&self.split_char) {
                Ok(char) => {
                    self.buf.push_str(char);
                    self.split_char.clear();
                }
                Err(error) if error.error_len().is_none() => {}
                Err(_) => return Err(invalid_utf8()),
            }
        }
        match std::str::from_utf8(data) {
            Ok(text) => {
                self.buf.push_str(text);
                Ok(())
            }
            Err(error) => {
                let (valid, rest) = data.split_at(error.valid_up_to());
                self.buf.push_str(utf8(valid)?);
                match error.error_len() {
                    // The read ended inside a character.
                    None => {
                        self.split_char.extend_from_slice(rest);
                        Ok(())
                    }
                    Some(_) => Err(invalid_utf8()),
                }
            }
        }
    }

    /// Scans on from where the last call stopped. Returns the kind of the
    /// next complete token (`buf[token_start..scan_pos]`), or `None` when
    /// more input is needed.
    fn next_token(&mut self, context: TokenContext) -> Result<Option<TokenKind>, ParseError> {
        while self.scan_pos < self.buf.len() {
            self.skip_plain_bytes();
            if self.scan_pos == self.buf.len() {
                break;
            }
            let offset = self.base + self.scan_pos as u64;
            if let Some(start) = self.unit_start
                && offset - start >= self.stanza_bytes_max as u64
            {
                // The unit is unfinished and already holds the limit: the
                // byte at hand would exceed it.
                return Err(ParseError::StanzaTooLarge {
                    limit: self.stanza_bytes_max,
                });
            }
            let byte = self.buf.as_bytes()[self.scan_pos];
            match self.state {
                ScanState::Idle if context.stream_level => match byte {
                    // Whitespace between top-level elements (keepalives,
                    // RFC 6120 §4.6.1) is dropped at once, never buffered.
                    b' ' | b'\t' | b'\r' | b'\n' => self.token_start += 1,
                    b'<' => {
                        self.unit_start = Some(offset);
                        self.state = ScanState::Open;
                    }
                    _ if context.stream_open => {
                        return Err(ParseError::BadFormat(
                            "character data between top-level elements".into(),
                        ));
                    }
                    _ => return Err(not_well_formed("character data outside the root element")),
                },
                ScanState::Idle if byte == b'<' => self.state = ScanState::Open,
                ScanState::Idle | ScanState::Text => {
                    if byte == b'<' {
                        // The `<` begins the next token.
                        return Ok(Some(self.finish(TokenKind::Text)));
                    }
                    self.state = ScanState::Text;
                }
                ScanState::Open => match byte {
                    b'?' => {
                        // XML 1.0 §2.8: the declaration may only open the
                        // document; any other `<?` is a processing
                        // instruction, which a stream may not carry.
                        let first = context.in_prolog && self.base + self.token_start as u64 == 0;
                        if !first && self.grammar == Grammar::Stream {
                            return Err(ParseError::RestrictedXml("processing instruction".into()));
                        }
                        self.state = ScanState::Pi {
                            question: false,
                            first,
                        };
                    }
                    b'!' => self.state = ScanState::CdataOpen { matched: 2 },
                    b'<' => return Err(not_well_formed("'<' inside a tag")),
                    _ => self.state = ScanState::Tag { quote: None },
                },
                ScanState::Tag { quote } => match (byte, quote) {
                    // XML 1.0 §3.1: `<` may not appear in a tag, not even
                    // in an attribute value.
                    (b'<', _) => return Err(not_well_formed("'<' inside a tag")),
                    (b'>', None) => {
                        self.scan_pos += 1;
                        return Ok(Some(self.finish(TokenKind::Tag)));
                    }
                    (b'"' | b'\'', None) => self.state = ScanState::Tag { quote: Some(byte) },
                    (_, Some(open)) if byte == open => self.state = ScanState::Tag { quote: None },
                    _ => {}
                },
                ScanState::Pi { question, first } => {
                    if question && byte == b'>' {
                        self.scan_pos += 1;
                        return Ok(Some(self.finish(TokenKind::Pi { first })));
                    }
                    self.state = ScanState::Pi {
                        question: byte == b'?',
                        first,
                    };
                }
                ScanState::CdataOpen { matched: 2 }
                    if byte == b'-' && self.grammar == Grammar::Document =>
                {
                    self.state = ScanState::CommentOpen;
                }
                ScanState::CdataOpen { matched } => {
                    if CDATA_OPEN.get(matched) != Some(&byte) {
                        return Err(match (matched, byte) {
                            (2, b'-') => ParseError::RestrictedXml("comment".into()),
                            (2, _) => ParseError::RestrictedXml(
                                "document type or markup declaration".into(),
                            ),
                            _ => not_well_formed("malformed CDATA section"),
                        });
                    }
                    self.state = if matched + 1 == CDATA_OPEN.len() {
                        ScanState::Cdata { brackets: 0 }
                    } else {
                        ScanState::CdataOpen {
                            matched: matched + 1,
                        }
                    };
                }
                ScanState::Cdata { brackets } => {
                    if brackets == 2 && byte == b'>' {
                        self.scan_pos += 1;
                        return Ok(Some(self.finish(TokenKind::Cdata)));
                    }
                    let brackets = if byte == b']' {
                        (brackets + 1).min(2)
                    } else {
                        0
                    };
                    self.state = ScanState::Cdata { brackets };
                }
                ScanState::CommentOpen if byte == b'-' => {
                    self.state = ScanState::Comment { dashes: 0 };
                }
                ScanState::CommentOpen => return Err(not_well_formed("malformed comment")),
                // XML 1.0 §2.5: `--` may only end a comment.
                ScanState::Comment { dashes: 2 } if byte == b'>' => {
                    self.scan_pos += 1;
                    return Ok(Some(self.finish(TokenKind::Comment)));
                }
                ScanState::Comment { dashes: 2 } => {
                    return Err(not_well_formed("'--' inside a comment"));
                }
                ScanState::Comment { dashes } => {
                    let dashes = if byte == b'-' { dashes + 1 } else { 0 };
                    self.state = ScanState::Comment { dashes };
                }
            }
            self.scan_pos += 1;
        }
        Ok(None)
    }

    /// Moves over the bytes that cannot change the state: most of a text
    /// run or of a tag. A tight loop per state, rather than the state
    /// machine's dispatch per byte, which cost more than half the scan.
    /// Stops before the first byte over the unit's size limit, for the
    /// state machine to refuse.
    fn skip_plain_bytes(&mut self) {
        let within_limit = match self.unit_start {
            Some(start) => {
                let limit_end = start
                    .saturating_add(self.stanza_bytes_max as u64)
                    .saturating_sub(self.base);
                self.buf
                    .len()
                    .min(usize::try_from(limit_end).unwrap_or(usize::MAX))
            }
            None => self.buf.len(),
        };
        let Some(rest) = self.buf.as_bytes().get(self.scan_pos..within_limit) else {
            return;
        };
        let plain = match self.state {
            ScanState::Text => rest.iter().position(|&b| b == b'<'),
            ScanState::Tag { quote: None } => rest
                .iter()
                .position(|&b| matches!(b, b'<' | b'>' | b'"' | b'\'')),
            ScanState::Tag { quote: Some(open) } => {
                rest.iter().position(|&b| b == open || b == b'<')
            }
            _ => return,
        };
        self.scan_pos += plain.unwrap_or(rest.len());
    }

    fn finish(&mut self, kind: TokenKind) -> TokenKind {
        self.state = ScanState::Idle;
        kind
    }

    /// The token `next_token` just delimited; the next one starts after it.
    /// Tokens begin and end next to ASCII delimiters, so always on
    /// character boundaries; were one not to, the stream fails here rather
    /// than the slice panicking.
    fn take_token(&mut self) -> Result<&str, ParseError> {
        let token = self
            .buf
            .get(self.token_start..self.scan_pos)
            .ok_or_else(|| not_well_formed("a token split inside a character"))?;
        self.token_start = self.scan_pos;
        Ok(token)
    }

    /// Drops consumed bytes. Whenever a token completed during this push,
    /// the remaining bytes arrived in this push, so the move is linear in
    /// the input; when none completed, nothing is consumed and nothing moves.
    fn compact(&mut self) {
        // `token_start` is where `take_token` ended or just past skipped
        // ASCII whitespace: a character boundary.
        if self.token_start > 0 {
            self.buf.drain(..self.token_start);
            self.base += self.token_start as u64;
            self.scan_pos -= self.token_start;
            self.token_start = 0;
        }
    }
}

/// Where the document stands.
#[derive(Debug)]
enum Phase {
    /// Before the stream header or the document's root element.
    Prolog,
    /// Inside the stream root, whose qualified name the end tag must repeat.
    Open { root_qname: String },
    /// Inside a document's root element, which is on the open stack.
    Root,
    /// After `</stream:stream>` or the document's root element: only
    /// whitespace (and in a document, comments and processing
    /// instructions) may follow.
    Closed,
}

/// One namespace binding in scope; prefix `None` is the default namespace.
#[derive(Debug)]
struct Binding {
    prefix: Option<String>,
    uri: Arc<str>,
}

/// A start tag's text: its qualified name, and what follows the name up
/// to the closing `>` or `/>`.
#[derive(Clone, Copy)]
struct TagText<'t> {
    name: &'t str,
    attributes: &'t str,
}

impl<'t> TagText<'t> {
    /// The `name="value"` pairs, as written: XML 1.0 §3.1 `(S Attribute)*
    /// S?`, with `Eq ::= S? '=' S?`. The tokenizer ended the tag at the
    /// first `>` outside quotes and refused `<` anywhere in it; names and
    /// values are checked by whoever reads them.
    fn attributes(self) -> impl Iterator<Item = Result<(&'t str, &'t str), ParseError>> {
        let mut rest = self.attributes;
        std::iter::from_fn(move || {
            let attribute = rest.trim_start_matches(is_xml_space);
            if attribute.is_empty() {
                return None;
            }
            if attribute.len() == rest.len() {
                rest = "";
                return Some(Err(not_well_formed("no whitespace before an attribute")));
            }
            let parsed = split_attribute(attribute);
            rest = match parsed {
                Ok((_, _, after)) => after,
                Err(_) => "",
            };
            Some(parsed.map(|(key, value, _)| (key, value)))
        })
    }
}

/// Splits `name = "value" rest…` into the name, the value between its
/// quotes and what follows the closing quote. Byte searches rather than
/// `split_once`: these parts are a few bytes long, too short for a
/// vectorized search to pay for its setup.
fn split_attribute(text: &str) -> Result<(&str, &str, &str), ParseError> {
    let equals = text
        .bytes()
        .position(|b| b == b'=')
        .ok_or_else(|| not_well_formed("an attribute without a value"))?;
    let key = text[..equals].trim_end_matches(is_xml_space);
    let quoted = text[equals + 1..].trim_start_matches(is_xml_space);
    let quote = match quoted.as_bytes().first() {
        Some(&quote @ (b'"' | b'\'')) => quote,
        _ => {
            return Err(not_well_formed(format!(
                "attribute {key} has an unquoted value"
            )));
        }
    };
    let value_and_rest = &quoted[1..];
    let value_len = value_and_rest
        .bytes()
        .position(|b| b == quote)
        .ok_or_else(|| not_well_formed(format!("attribute {key} has an unclosed value")))?;
    Ok((
        key,
        &value_and_rest[..value_len],
        &value_and_rest[value_len + 1..],
    ))
}

/// A start tag with its names split and its namespace declarations
/// applied, borrowing from the tag where it can: a captured element
/// ([`Capture`]) keeps none of it but its outline.
struct StartTag<'t> {
    prefix: Option<&'t str>,
    name: &'t str,
    ns: Arc<str>,
    declared: Vec<(Option<&'t str>, Cow<'t, str>)>,
    attrs: Vec<TagAttr<'t>>,
}

/// An attribute of a [`StartTag`]; `ns` is `None` when it is unprefixed.
struct TagAttr<'t> {
    prefix: Option<&'t str>,
    ns: Option<Arc<str>>,
    name: &'t str,
    value: Cow<'t, str>,
}

impl StartTag<'_> {
    fn into_element(self) -> Element {
        let declared = self
            .declared
            .into_iter()
            .map(|(prefix, uri)| (prefix.map(str::to_owned), uri.into_owned()))
            .collect();
        let attrs = self
            .attrs
            .into_iter()
            .map(|a| Attr {
                prefix: a.prefix.map(str::to_owned),
                ns: a.ns.as_deref().unwrap_or_default().to_owned(),
                name: a.name.to_owned(),
                value: a.value.into_owned(),
            })
            .collect();
        let prefix = self.prefix.map(str::to_owned);
        Element::parsed(prefix, self.name.to_owned(), self.ns, declared, attrs)
    }

    /// The element's name alone, as an outline lists a child.
    fn name_only(&self) -> Element {
        let prefix = self.prefix.map(str::to_owned);
        Element::parsed(
            prefix,
            self.name.to_owned(),
            self.ns.clone(),
            Vec::new(),
            Vec::new(),
        )
    }
}

/// Which elements' children [`TreeBuilder`] keeps as text.
type CaptureRule = fn(&Element) -> bool;

/// An element being kept as it was written ([`Captured`]), from its start
/// tag to its end tag. Every token in it is checked as the tree builder
/// checks it, namespaces included, but no element is built.
#[derive(Debug)]
struct Capture {
    /// The tokens so far, as written.
    xml: String,
    /// The qualified names of the open elements, outermost first, as
    /// ranges of `xml`: their end tags must repeat them, and the
    /// declarations of the namespaces taken from outside go after the
    /// root's.
    open: Vec<Range<usize>>,
    outline: Element,
}

/// The namespace bindings a captured element's names resolved through
/// that were declared outside it.
#[derive(Debug)]
struct OutsideUses {
    /// `bindings.len()` when the capture began: the bindings below it are
    /// declared outside the captured element.
    from: usize,
    /// By index in `bindings`, first use first; `None` is the default
    /// namespace when nothing binds it.
    used: Vec<Option<usize>>,
}

/// Builds elements from tokens, resolving namespaces with an explicit stack.
#[derive(Debug)]
struct TreeBuilder {
    limits: ParserLimits,
    grammar: Grammar,
    phase: Phase,
    /// Bindings in scope, innermost last.
    bindings: Vec<Binding>,
    /// For the header and each open element, `bindings.len()` before its
    /// declarations.
    scope_marks: Vec<usize>,
    /// Every open element of the current top-level element, each followed
    /// by the children read so far: the innermost element's come last. An
    /// element takes its children in one exactly sized `Vec` when it
    /// closes (growing each element's own `Vec` a child at a time
    /// reallocated and moved them at every doubling), and stays where it
    /// was put when it opened, so an element is moved once, into its
    /// parent's children. Empty, and holding no memory, between top-level
    /// elements.
    nodes: Vec<Node>,
    /// For each open element, outermost first, its index in `nodes`.
    node_marks: Vec<usize>,
    /// The two namespaces no declaration binds, shared by the elements in
    /// them as a declared one is: `xml`'s ([`XML_NS`]), and the empty one
    /// of unqualified elements (every child of a VOEvent but its root).
    xml_ns: Arc<str>,
    no_ns: Arc<str>,
    capture_rule: Option<CaptureRule>,
    /// The element being captured, while one is open.
    capture: Option<Capture>,
    /// Noted from the captured element's start tag on, until it closes.
    outside_uses: Option<OutsideUses>,
}

impl TreeBuilder {
    fn new(limits: ParserLimits, grammar: Grammar, capture_rule: Option<CaptureRule>) -> Self {
        TreeBuilder {
            limits,
            grammar,
            phase: Phase::Prolog,
            bindings: Vec::new(),
            scope_marks: Vec::new(),
            nodes: Vec::new(),
            node_marks: Vec::new(),
            xml_ns: XML_NS.into(),
            no_ns: "".into(),
            capture_rule,
            capture: None,
            outside_uses: None,
        }
    }

    fn handle(
        &mut self,
        kind: TokenKind,
        token: &str,
        events: &mut Vec<StreamEvent>,
    ) -> Result<(), ParseError> {
        match kind {
            TokenKind::Text => {
                let text = character_data(token)?;
                self.push_text(&text, token)
            }
            TokenKind::Cdata => {
                let content = token
                    .strip_prefix("<![CDATA[")
                    .and_then(|t| t.strip_suffix("]]>"))
                    .ok_or_else(|| not_well_formed("malformed CDATA section"))?;
                let text = BytesText::from_escaped(content)
                    .xml10_content()
                    .map_err(|e| not_well_formed(e.to_string()))?;
                check_chars(&text)?;
                self.push_text(&text, token)
            }
            TokenKind::Pi { first } => self.processing_instruction(token, first),
            // A document's comments are not content (XML 1.0 §2.5); only
            // their characters are checked.
            TokenKind::Comment => check_chars(token),
            TokenKind::Tag => {
                // The tokenizer found the tag's end outside quotes, so what
                // is left to tell apart is the kind of tag and, in a start
                // tag, where the name ends (quick-xml's `Reader` does the
                // same, but building one per tag cost more than the rest).
                let inner = token
                    .strip_prefix('<')
                    .and_then(|t| t.strip_suffix('>'))
                    .ok_or_else(|| not_well_formed("malformed tag"))?;
                if let Some(name) = inner.strip_prefix('/') {
                    // XML 1.0 §3.1: whitespace may follow an end tag's name.
                    return self.end(name.trim_end_matches(is_xml_space), token, events);
                }
                let (content, empty) = match inner.strip_suffix('/') {
                    Some(content) => (content, true),
                    None => (inner, false),
                };
                let name_len = content.find(is_xml_space).unwrap_or(content.len());
                let (name, attributes) = content.split_at(name_len);
                let tag = TagText { name, attributes };
                self.start(token, tag, empty, events)
            }
        }
    }

    /// Adds character data, `text` (checked) as read from `written`.
    fn push_text(&mut self, text: &str, written: &str) -> Result<(), ParseError> {
        if let Some(capture) = &mut self.capture {
            capture.xml.push_str(written);
            return Ok(());
        }
        match self.node_marks.last() {
            Some(_) => {
                // Adjacent text (a CDATA section after character data) is
                // one node, as `Element::push_text` makes it. The last node
                // is the innermost open element or one of its children.
                match self.nodes.last_mut() {
                    Some(Node::Text(previous)) => previous.push_str(text),
                    _ if text.is_empty() => {}
                    _ => self.nodes.push(Node::Text(text.to_owned())),
                }
                Ok(())
            }
            // Only CDATA can get here: the tokenizer rejects stream-level
            // character data itself.
            None if matches!(self.phase, Phase::Open { .. }) => Err(ParseError::BadFormat(
                "character data between top-level elements".into(),
            )),
            None => Err(not_well_formed("character data outside the root element")),
        }
    }

    fn start(
        &mut self,
        token: &str,
        tag: TagText<'_>,
        empty: bool,
        events: &mut Vec<StreamEvent>,
    ) -> Result<(), ParseError> {
        match (&self.phase, self.grammar) {
            (Phase::Prolog, Grammar::Stream) => self.start_stream(tag, empty, events),
            (Phase::Closed, _) => Err(not_well_formed("a second root element")),
            (Phase::Prolog, Grammar::Document) => {
                // The root is built like any top-level element, at depth 1,
                // with no namespace in scope.
                self.phase = Phase::Root;
                self.start_element(token, tag, empty, events)
            }
            (Phase::Open { .. } | Phase::Root, _) => self.start_element(token, tag, empty, events),
        }
    }

    /// Opens an element below the stream root, or a document's root.
    fn start_element(
        &mut self,
        token: &str,
        tag: TagText<'_>,
        empty: bool,
        events: &mut Vec<StreamEvent>,
    ) -> Result<(), ParseError> {
        let captured_depth = self.capture.as_ref().map_or(0, |c| c.open.len());
        if self.node_marks.len() + captured_depth >= self.limits.depth_max {
            return Err(ParseError::TooDeep {
                limit: self.limits.depth_max,
            });
        }
        if self.capture.is_some() {
            return self.capture_start(token, tag, empty);
        }
        let parent_captures = |rule: CaptureRule| self.innermost().is_some_and(rule);
        if self.capture_rule.is_some_and(parent_captures) {
            return self.capture_root(token, tag, empty);
        }
        let element = self.read_start(tag)?.into_element();
        self.node_marks.push(self.nodes.len());
        self.nodes.push(Node::Element(element));
        if empty {
            self.close_element(events);
        }
        Ok(())
    }

    /// Begins capturing the element this start tag opens: from here on,
    /// the namespaces its names take from outside are noted.
    fn capture_root(
        &mut self,
        token: &str,
        tag: TagText<'_>,
        empty: bool,
    ) -> Result<(), ParseError> {
        self.outside_uses = Some(OutsideUses {
            from: self.bindings.len(),
            used: Vec::new(),
        });
        self.capture_start(token, tag, empty)
    }

    /// A start tag in a captured element, its root's included.
    fn capture_start(
        &mut self,
        token: &str,
        tag: TagText<'_>,
        empty: bool,
    ) -> Result<(), ParseError> {
        let start = self.read_start(tag)?;
        let name_len = tag.name.len();
        match &mut self.capture {
            None => {
                let root_name = 1..1 + name_len;
                self.capture = Some(Capture {
                    xml: token.to_owned(),
                    open: std::iter::once(root_name).collect(),
                    outline: start.into_element(),
                });
            }
            Some(capture) => {
                let name_start = capture.xml.len() + 1;
                if capture.open.len() == 1 {
                    capture.outline.push_child(start.name_only());
                }
                capture.xml.push_str(token);
                capture.open.push(name_start..name_start + name_len);
            }
        }
        if empty {
            self.capture_end();
        }
        Ok(())
    }

    /// Closes the innermost captured element; the root's end completes
    /// the capture, which becomes a child of the element that started it.
    fn capture_end(&mut self) {
        self.close_scope();
        let Some(capture) = &mut self.capture else {
            return;
        };
        let closed = capture.open.pop();
        if !capture.open.is_empty() {
            return;
        }
        let (
            Some(Capture {
                mut xml, outline, ..
            }),
            Some(root_name),
        ) = (self.capture.take(), closed)
        else {
            return;
        };
        let used = self.outside_uses.take().map(|u| u.used).unwrap_or_default();
        let mut declarations = String::new();
        for binding in used {
            let (prefix, uri) = match binding {
                None => (None, ""),
                Some(index) => match self.bindings.get(index) {
                    Some(binding) => (binding.prefix.as_deref(), &*binding.uri),
                    // Outside bindings outlive the capture.
                    None => continue,
                },
            };
            declarations.push_str(" xmlns");
            if let Some(prefix) = prefix {
                declarations.push(':');
                declarations.push_str(prefix);
            }
            declarations.push_str("=\"");
            escape_into(&mut declarations, uri, true);
            declarations.push('"');
        }
        // After the root's name: its own declarations may follow.
        xml.insert_str(root_name.end, &declarations);
        self.nodes
            .push(Node::Captured(Box::new(Captured { xml, outline })));
    }

    /// Checks the XML declaration, or a document's processing instruction,
    /// which is then dropped: it is an instruction to some application,
    /// not content (XML 1.0 §2.6).
    fn processing_instruction(&self, token: &str, first: bool) -> Result<(), ParseError> {
        let mut reader = Reader::from_str(token);
        match reader.read_event() {
            Ok(Event::Decl(declaration)) if first => check_declaration(&declaration),
            Ok(Event::Decl(_)) => Err(not_well_formed(
                "XML declaration not at the start of the document",
            )),
            Ok(Event::PI(_)) if self.grammar == Grammar::Stream => {
                Err(ParseError::RestrictedXml("processing instruction".into()))
            }
            Ok(Event::PI(pi)) => {
                let target = utf8(pi.target())?;
                // §2.6: targets matching [Xx][Mm][Ll] are reserved;
                // Namespaces §7: no colon.
                if !is_ncname(target) || target.eq_ignore_ascii_case("xml") {
                    return Err(not_well_formed(format!(
                        "invalid processing instruction target {target:?}"
                    )));
                }
                check_chars(token)
            }
            Ok(_) => Err(not_well_formed("malformed processing instruction")),
            Err(error) => Err(not_well_formed(error.to_string())),
        }
    }

    fn start_stream(
        &mut self,
        tag: TagText<'_>,
        empty: bool,
        events: &mut Vec<StreamEvent>,
    ) -> Result<(), ParseError> {
        let start = self.read_start(tag)?;
        if start.name != "stream" {
            return Err(ParseError::BadFormat(error_text(format!(
                "root element <{}> is not <stream>",
                start.name
            ))));
        }
        let unqualified = |name: &str| {
            start
                .attrs
                .iter()
                .find(|a| a.prefix.is_none() && a.name == name)
                .map(|a| a.value.to_string())
        };
        let header = StreamHeader {
            prefix: start.prefix.map(str::to_owned),
            stream_ns: start.ns.to_string(),
            content_ns: start
                .declared
                .iter()
                .find(|(prefix, _)| prefix.is_none())
                .map(|(_, uri)| uri.to_string()),
            to: unqualified("to"),
            from: unqualified("from"),
            version: unqualified("version"),
            lang: start
                .attrs
                .iter()
                .find(|a| a.ns.as_deref() == Some(XML_NS) && a.name == "lang")
                .map(|a| a.value.to_string()),
            id: unqualified("id"),
        };
        events.push(StreamEvent::Header(header));
        if empty {
            self.phase = Phase::Closed;
            events.push(StreamEvent::End);
        } else {
            self.phase = Phase::Open {
                root_qname: qualified(start.prefix, start.name),
            };
        }
        Ok(())
    }

    fn end(
        &mut self,
        qname: &str,
        token: &str,
        events: &mut Vec<StreamEvent>,
    ) -> Result<(), ParseError> {
        if let Some(capture) = &mut self.capture
            && let Some(opened) = capture.open.last()
        {
            let opened = &capture.xml[opened.clone()];
            if opened != qname {
                return Err(not_well_formed(format!("</{qname}> closes <{opened}>")));
            }
            capture.xml.push_str(token);
            self.capture_end();
            return Ok(());
        }
        match self.innermost() {
            Some(element) => {
                if !names_element(qname, element) {
                    return Err(not_well_formed(format!(
                        "</{qname}> closes <{}>",
                        qualified(element.prefix(), element.name())
                    )));
                }
                self.close_element(events);
                Ok(())
            }
            None => match &self.phase {
                Phase::Open { root_qname } if root_qname == qname => {
                    self.phase = Phase::Closed;
                    events.push(StreamEvent::End);
                    Ok(())
                }
                Phase::Open { root_qname } => {
                    Err(not_well_formed(format!("</{qname}> closes <{root_qname}>")))
                }
                Phase::Prolog | Phase::Root | Phase::Closed => Err(not_well_formed(format!(
                    "</{qname}> outside the root element"
                ))),
            },
        }
    }

    /// Closes the innermost open element: into its parent, or out as a
    /// top-level event (a document's root included).
    fn close_element(&mut self, events: &mut Vec<StreamEvent>) {
        self.close_scope();
        let Some(mark) = self.node_marks.pop() else {
            return;
        };
        let children: Vec<Node> = self.nodes.drain(mark + 1..).collect();
        if !self.node_marks.is_empty() {
            if let Some(Node::Element(element)) = self.nodes.get_mut(mark) {
                element.set_nodes(children);
            }
            return;
        }
        let Some(Node::Element(mut element)) = self.nodes.pop() else {
            return;
        };
        element.set_nodes(children);
        // An idle session keeps no memory for the stanza it read last.
        self.nodes = Vec::new();
        if matches!(self.phase, Phase::Root) {
            self.phase = Phase::Closed;
        }
        events.push(StreamEvent::Stanza(element));
    }

    /// Drops the declarations of the element that closes.
    fn close_scope(&mut self) {
        if let Some(mark) = self.scope_marks.pop() {
            self.bindings.truncate(mark);
        }
    }

    /// The innermost open element.
    fn innermost(&self) -> Option<&Element> {
        match self.nodes.get(*self.node_marks.last()?) {
            Some(Node::Element(element)) => Some(element),
            _ => None,
        }
    }

    /// Reads a start tag's attributes, applies its namespace declarations
    /// (opening a scope the matching end pops) and resolves its names.
    fn read_start<'t>(&mut self, tag: TagText<'t>) -> Result<StartTag<'t>, ParseError> {
        let (prefix, name) = split_qname(tag.name)?;
        let mut declared: Vec<(Option<&str>, Cow<'_, str>)> = Vec::new();
        // Every attribute has an `=`, so their count sizes the vector in
        // one allocation (a value holding `=` only makes it larger).
        let equals = tag.attributes.bytes().filter(|&b| b == b'=').count();
        let mut attrs: Vec<TagAttr> = Vec::with_capacity(equals.min(self.limits.attributes_max));
        // Duplicates are found below, by prefix among the declarations and
        // by expanded name among the attributes, which covers repeated
        // qualified names too.
        let mut xml_declared = false;
        for (count, attr) in tag.attributes().enumerate() {
            if count >= self.limits.attributes_max {
                return Err(ParseError::TooManyAttributes {
                    limit: self.limits.attributes_max,
                });
            }
            let (key, raw_value) = attr?;
            let value = attribute_value(raw_value)?;
            if let Some(bound) = key.strip_prefix("xmlns").and_then(declared_prefix) {
                check_binding(bound, &value)?;
                let repeated = match bound {
                    Some("xml") => std::mem::replace(&mut xml_declared, true),
                    _ => declared.iter().any(|(p, _)| *p == bound),
                };
                if repeated {
                    return Err(not_well_formed(format!("duplicate attribute {key}")));
                }
                // `xml` is always bound; declaring it changes nothing.
                if bound != Some("xml") {
                    declared.push((bound, value));
                }
            } else {
                let (attr_prefix, attr_name) = split_qname(key)?;
                // The namespace is resolved below, once this tag's own
                // declarations (which may follow the attribute) apply.
                attrs.push(TagAttr {
                    prefix: attr_prefix,
                    ns: None,
                    name: attr_name,
                    value,
                });
            }
        }
        self.scope_marks.push(self.bindings.len());
        self.bindings
            .extend(declared.iter().map(|(prefix, uri)| Binding {
                prefix: prefix.map(str::to_owned),
                uri: (**uri).into(),
            }));
        let ns = self.namespace(prefix)?;
        for i in 0..attrs.len() {
            // XML Namespaces §6.2: unprefixed attributes are in no
            // namespace, and keep the empty one.
            if let Some(attr_prefix) = attrs[i].prefix {
                attrs[i].ns = Some(self.namespace(Some(attr_prefix))?);
            }
            // XML Namespaces §6.3: distinct prefixes bound to one namespace
            // still make a duplicate.
            let (earlier, later) = attrs.split_at(i);
            let attr = &later[0];
            if earlier
                .iter()
                .any(|a| a.name == attr.name && a.ns == attr.ns)
            {
                return Err(not_well_formed(format!(
                    "duplicate attribute {}",
                    attr.name
                )));
            }
        }
        Ok(StartTag {
            prefix,
            name,
            ns,
            declared,
            attrs,
        })
    }

    /// The namespace `prefix` is bound to; an unbound default namespace is
    /// the empty one. Inside a captured element, a binding from outside
    /// it is noted, to be declared on the captured text.
    fn namespace(&mut self, prefix: Option<&str>) -> Result<Arc<str>, ParseError> {
        if prefix == Some("xml") {
            return Ok(self.xml_ns.clone());
        }
        let found = self
            .bindings
            .iter()
            .enumerate()
            .rev()
            .find(|(_, b)| b.prefix.as_deref() == prefix);
        let (index, uri) = match (found, prefix) {
            (Some((index, binding)), _) => (Some(index), binding.uri.clone()),
            (None, None) => (None, self.no_ns.clone()),
            (None, Some(prefix)) => {
                return Err(not_well_formed(format!("unbound prefix {prefix}")));
            }
        };
        if let Some(uses) = &mut self.outside_uses
            && index.is_none_or(|i| i < uses.from)
            && !uses.used.contains(&index)
        {
            uses.used.push(index);
        }
        Ok(uri)
    }
}

/// What follows `xmlns` in an attribute name, if it declares a namespace:
/// `Some(None)` for the default namespace (`xmlns`), `Some(Some(prefix))`
/// for `xmlns:prefix`, `None` for an attribute that merely starts with
/// those letters.
fn declared_prefix(rest: &str) -> Option<Option<&str>> {
    match rest {
        "" => Some(None),
        _ => rest.strip_prefix(':').map(Some),
    }
}

/// XML Namespaces §3: `xml` is bound only to its namespace, `xmlns` never
/// declared, neither namespace bound to another prefix, and a prefix never
/// undeclared (in Namespaces 1.0).
fn check_binding(prefix: Option<&str>, uri: &str) -> Result<(), ParseError> {
    let legal = match prefix {
        Some("xml") => uri == XML_NS,
        Some("xmlns") => false,
        Some(prefix) => is_ncname(prefix) && !uri.is_empty() && uri != XML_NS && uri != XMLNS_NS,
        None => uri != XML_NS && uri != XMLNS_NS,
    };
    if legal {
        return Ok(());
    }
    let attribute = match prefix {
        Some(prefix) => format!("xmlns:{prefix}"),
        None => "xmlns".to_owned(),
    };
    Err(not_well_formed(format!(
        "illegal namespace declaration {attribute}=\"{uri}\""
    )))
}

/// Checks the XML declaration (RFC 6120 §11.5 allows it; §11.6 demands
/// UTF-8, which is all vomesh reads in documents too).
fn check_declaration(declaration: &BytesDecl<'_>) -> Result<(), ParseError> {
    declaration
        .version()
        .map_err(|e| not_well_formed(e.to_string()))?;
    if let Some(encoding) = declaration.encoding() {
        let encoding = encoding.map_err(|e| not_well_formed(e.to_string()))?;
        if !encoding.eq_ignore_ascii_case(b"UTF-8") {
            return Err(ParseError::UnsupportedEncoding(error_text(
                String::from_utf8_lossy(&encoding),
            )));
        }
    }
    Ok(())
}

fn utf8(bytes: &[u8]) -> Result<&str, ParseError> {
    std::str::from_utf8(bytes).map_err(|_| invalid_utf8())
}

fn invalid_utf8() -> ParseError {
    not_well_formed("invalid UTF-8")
}

/// Replaces the five predefined entities and character references; any
/// other entity reference is restricted XML (RFC 6120 §11.1), as an XMPP
/// stream has no DTD to define one.
fn unescape(raw: &str) -> Result<Cow<'_, str>, ParseError> {
    unescape_with(raw, resolve_xml_entity).map_err(|error| match error {
        EscapeError::UnrecognizedEntity(_, name) => {
            ParseError::RestrictedXml(error_text(format!("entity reference &{name};")))
        }
        other => not_well_formed(other.to_string()),
    })
}

/// An attribute value as XML 1.0 §3.3.3 normalizes it: line ends and
/// whitespace characters written literally become spaces, those written as
/// character references stay.
fn attribute_value(raw: &str) -> Result<Cow<'_, str>, ParseError> {
    // Most values hold no whitespace but spaces, no reference and no
    // character that may be refused: then the value is `raw` as it is,
    // checked in one pass.
    if !raw.bytes().any(|b| b < b' ' || matches!(b, b'&' | 0xEF)) {
        return Ok(Cow::Borrowed(raw));
    }
    let value = if raw.contains(['\r', '\n', '\t']) {
        let mut spaced = String::with_capacity(raw.len());
        let mut chars = raw.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                // §2.11: CR LF is one line end.
                '\r' if chars.peek() == Some(&'\n') => {}
                '\r' | '\n' | '\t' => spaced.push(' '),
                c => spaced.push(c),
            }
        }
        let unescaped = match unescape(&spaced)? {
            Cow::Owned(unescaped) => unescaped,
            Cow::Borrowed(_) => spaced,
        };
        Cow::Owned(unescaped)
    } else {
        unescape(raw)?
    };
    check_chars(&value)?;
    Ok(value)
}

/// The character data a text token stands for, checked: line ends
/// normalized (XML 1.0 §2.11), references replaced, and refused if it
/// holds `]]>` (§2.4: a tree would be re-serialized with the `>` escaped,
/// but captured text is passed on as it is, and strict parsers such as
/// expat end the stream at it) or a character XML does not allow.
fn character_data(token: &str) -> Result<Cow<'_, str>, ParseError> {
    // Nearly all text holds no carriage return, reference, `]` or
    // character that may be refused: it is then its own value, checked in
    // one pass.
    let plain =
        |b: u8| (b >= b' ' || matches!(b, b'\t' | b'\n')) && !matches!(b, b'&' | b']' | 0xEF);
    if token.bytes().all(plain) {
        return Ok(Cow::Borrowed(token));
    }
    if token.contains("]]>") {
        return Err(not_well_formed("']]>' in character data"));
    }
    let text = BytesText::from_escaped(token)
        .xml10_content()
        .map_err(|e| not_well_formed(e.to_string()))?;
    let text = match unescape(&text)? {
        Cow::Borrowed(_) => text,
        Cow::Owned(unescaped) => Cow::Owned(unescaped),
    };
    check_chars(&text)?;
    Ok(text)
}

/// XML 1.0 §2.2: the characters a document may contain.
fn check_chars(text: &str) -> Result<(), ParseError> {
    // The refused characters are C0 controls and U+FFFE/U+FFFF, which
    // UTF-8 encodes starting with 0xEF: text with neither byte, nearly all
    // of it, is checked a byte at a time, which the compiler vectorizes.
    let suspect = |b: u8| (b < b' ' && !matches!(b, b'\t' | b'\n' | b'\r')) || b == 0xEF;
    if !text.bytes().any(suspect) {
        return Ok(());
    }
    match text.chars().find(|&c| {
        (c < ' ' && !matches!(c, '\t' | '\n' | '\r')) || matches!(c, '\u{FFFE}' | '\u{FFFF}')
    }) {
        Some(c) => Err(not_well_formed(format!(
            "character U+{:04X} is not allowed in XML",
            u32::from(c)
        ))),
        None => Ok(()),
    }
}

/// Splits `prefix:local`, checking both are names without colons
/// (XML Namespaces §4).
fn split_qname(qname: &str) -> Result<(Option<&str>, &str), ParseError> {
    // A byte search: `split_once(':')` decodes characters as it goes.
    let (prefix, local) = match qname.bytes().position(|b| b == b':') {
        Some(colon) => (Some(&qname[..colon]), &qname[colon + 1..]),
        None => (None, qname),
    };
    if prefix.is_some_and(|p| !is_ncname(p)) || !is_ncname(local) {
        return Err(not_well_formed(format!("invalid name {qname:?}")));
    }
    Ok((prefix, local))
}

/// XML 1.0 §2.3 `S`: the whitespace that separates a tag's parts.
fn is_xml_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// XML 1.0 §2.3 `Name` without colons (XML Namespaces `NCName`). Names
/// are passed on as written (in re-serialized trees and in captured text
/// alike), so a character a strict parser refuses must be refused here.
/// ASCII names, nearly all of them, are checked on bytes, by table.
fn is_ncname(name: &str) -> bool {
    match name.as_bytes() {
        [] => false,
        bytes if bytes.iter().all(|&b| ASCII_NAME_BYTES[usize::from(b)]) => {
            !(bytes[0].is_ascii_digit() || matches!(bytes[0], b'-' | b'.'))
        }
        _ if name.is_ascii() => false,
        _ => {
            let mut chars = name.chars();
            chars.next().is_some_and(is_name_start_char) && chars.all(is_name_char)
        }
    }
}

/// The ASCII bytes [`is_name_char`] accepts; every other byte is false.
static ASCII_NAME_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 128 {
        let b = byte as u8;
        table[byte] = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_');
        byte += 1;
    }
    table
};

/// XML 1.0 (fifth edition) §2.3 `NameStartChar`, without the colon.
fn is_name_start_char(c: char) -> bool {
    matches!(c,
        'A'..='Z' | '_' | 'a'..='z' | '\u{C0}'..='\u{D6}' | '\u{D8}'..='\u{F6}'
        | '\u{F8}'..='\u{2FF}' | '\u{370}'..='\u{37D}' | '\u{37F}'..='\u{1FFF}'
        | '\u{200C}'..='\u{200D}' | '\u{2070}'..='\u{218F}' | '\u{2C00}'..='\u{2FEF}'
        | '\u{3001}'..='\u{D7FF}' | '\u{F900}'..='\u{FDCF}' | '\u{FDF0}'..='\u{FFFD}'
        | '\u{10000}'..='\u{EFFFF}')
}

/// XML 1.0 (fifth edition) §2.3 `NameChar`, without the colon.
fn is_name_char(c: char) -> bool {
    is_name_start_char(c)
        || matches!(c, '-' | '.' | '0'..='9' | '\u{B7}' | '\u{300}'..='\u{36F}' | '\u{203F}'..='\u{2040}')
}

/// True when `qname`, as an end tag spells it, is the qualified name
/// `element` was opened with; compared in place, as every end tag is.
fn names_element(qname: &str, element: &Element) -> bool {
    match (qname.split_once(':'), element.prefix()) {
        (Some((prefix, local)), Some(opened)) => prefix == opened && local == element.name(),
        (None, None) => qname == element.name(),
        _ => false,
    }
}

fn qualified(prefix: Option<&str>, name: &str) -> String {
    match prefix {
        Some(prefix) => format!("{prefix}:{name}"),
        None => name.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAMS_NS: &str = "http://etherx.jabber.org/streams";
    const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
        xmlns:stream='http://etherx.jabber.org/streams' to='example.org' version='1.0' \
        xml:lang='en'>";
    /// A header for tests with tight limits: 84 bytes, 2 attributes.
    const SHORT_HEADER: &str =
        "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";
    const VOE_NS: &str = "http://www.ivoa.net/xml/VOEvent/v2.0";

    fn limits() -> ParserLimits {
        ParserLimits {
            stanza_bytes_max: 64 * 1024,
            depth_max: 32,
            attributes_max: 16,
        }
    }

    /// Feeds `chunks` in order; returns the events and the first error.
    fn feed(
        parser: &mut StreamParser,
        chunks: &[&[u8]],
    ) -> (Vec<StreamEvent>, Result<(), ParseError>) {
        let mut events = Vec::new();
        for chunk in chunks {
            if let Err(error) = parser.push(chunk, &mut events) {
                return (events, Err(error));
            }
        }
        (events, Ok(()))
    }

    fn parse(input: &str) -> (Vec<StreamEvent>, Result<(), ParseError>) {
        feed(&mut StreamParser::new(limits()), &[input.as_bytes()])
    }

    /// The stanzas of `HEADER` + `body`, which must parse cleanly.
    fn stanzas(body: &str) -> Vec<Element> {
        let (events, result) = parse(&format!("{HEADER}{body}"));
        assert_eq!(result, Ok(()));
        events
            .into_iter()
            .filter_map(StreamEvent::into_stanza)
            .collect()
    }

    /// The error `HEADER` + `body` fails with.
    fn error(body: &str) -> ParseError {
        match parse(&format!("{HEADER}{body}")).1 {
            Err(error) => error,
            Ok(()) => panic!("{body:?} was accepted"),
        }
    }

    #[test]
    fn header_is_reported_with_its_attributes() {
        let (events, result) = parse(HEADER);
        assert_eq!(result, Ok(()));
        assert_eq!(
            events,
            vec![StreamEvent::Header(StreamHeader {
                prefix: Some("stream".into()),
                stream_ns: STREAMS_NS.into(),
                content_ns: Some("jabber:client".into()),
                to: Some("example.org".into()),
                from: None,
                version: Some("1.0".into()),
                lang: Some("en".into()),
                id: None,
            })]
        );
    }

    #[test]
    fn stanzas_inherit_the_stream_default_namespace() {
        let stanzas = stanzas(
            "<message to='a@b'><body>hi</body></message>\
             <stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/></stream:features>",
        );
        assert_eq!(stanzas.len(), 2);
        assert!(stanzas[0].is("message", "jabber:client"));
        assert_eq!(stanzas[0].attr("to"), Some("a@b"));
        assert_eq!(
            stanzas[0].child("body", "jabber:client").map(Element::text),
            Some("hi".to_owned())
        );
        assert!(stanzas[1].is("features", STREAMS_NS));
        assert!(
            stanzas[1]
                .child("starttls", "urn:ietf:params:xml:ns:xmpp-tls")
                .is_some()
        );
    }

    #[test]
    fn several_stanzas_in_one_chunk_and_keepalives_between() {
        let stanzas = stanzas("<presence/> \n <iq type='get' id='1'/>\n\n<presence/>");
        let names: Vec<&str> = stanzas.iter().map(Element::name).collect();
        assert_eq!(names, ["presence", "iq", "presence"]);
    }

    #[test]
    fn byte_at_a_time_or_any_split_gives_the_same_events_as_one_chunk() {
        let input = format!(
            "{HEADER}<message><body>caf\u{e9} &amp; \u{1F52D} &#x263A;<![CDATA[<raw>]]></body>\
             <x xmlns='urn:x' a='1 &lt; 2'/></message> <presence/></stream:stream>"
        );
        let whole = parse(&input);
        assert_eq!(whole.1, Ok(()));
        assert_eq!(whole.0.len(), 4);
        for size in [1, 2, 3, 5, 7, 64] {
            let chunks: Vec<&[u8]> = input.as_bytes().chunks(size).collect();
            let split = feed(&mut StreamParser::new(limits()), &chunks);
            assert_eq!(split, whole, "chunks of {size} bytes");
        }
    }

    #[test]
    fn utf8_character_split_across_reads_is_reassembled() {
        let input = format!("{HEADER}<message><body>\u{e9}</body></message>");
        let bytes = input.as_bytes();
        let split = bytes.len() - "\u{e9}</body></message>".len() + 1;
        let (events, result) = feed(
            &mut StreamParser::new(limits()),
            &[&bytes[..split], &bytes[split..]],
        );
        assert_eq!(result, Ok(()));
        let Some(StreamEvent::Stanza(message)) = events.last() else {
            panic!("no stanza in {events:?}");
        };
        assert_eq!(
            message.children().next().map(Element::text),
            Some("\u{e9}".into())
        );
    }

    #[test]
    fn text_entities_cdata_and_line_ends_are_decoded() {
        let stanzas = stanzas("<m>&lt;&gt;&amp;&apos;&quot;&#65;&#x42;\r\n<![CDATA[&amp;]]></m>");
        assert_eq!(stanzas[0].text(), "<>&'\"AB\n&amp;");
    }

    #[test]
    fn a_character_split_over_several_reads_is_reassembled_in_text_and_values() {
        let input = format!("{HEADER}<m a='\u{1F52D}'>\u{1F52D}</m>");
        let reads: Vec<&[u8]> = input.as_bytes().chunks(1).collect();
        let (events, result) = feed(&mut StreamParser::new(limits()), &reads);
        assert_eq!(result, Ok(()));
        let Some(StreamEvent::Stanza(m)) = events.last() else {
            panic!("no stanza in {events:?}");
        };
        assert_eq!(m.attr("a"), Some("\u{1F52D}"));
        assert_eq!(m.text(), "\u{1F52D}");
    }

    #[test]
    fn an_invalid_sequence_split_over_reads_is_not_well_formed() {
        let mut parser = StreamParser::new(limits());
        let (_, result) = feed(&mut parser, &[HEADER.as_bytes(), b"<m>\xe2\x82", b"(</m>"]);
        assert_eq!(result.map_err(|e| e.condition()), Err("not-well-formed"));
    }

    #[test]
    fn stanzas_read_before_invalid_utf8_are_still_reported() {
        let mut parser = StreamParser::new(limits());
        let mut events = Vec::new();
        let input = [HEADER.as_bytes(), b"<m id='1'/><m id='2'>\xff</m>"].concat();
        let result = parser.push(&input, &mut events);
        assert_eq!(result.map_err(|e| e.condition()), Err("not-well-formed"));
        let ids: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                StreamEvent::Stanza(m) => m.attr("id"),
                _ => None,
            })
            .collect();
        assert_eq!(ids, ["1"]);
    }

    #[test]
    fn error_text_quoting_the_input_is_cut_short() {
        let name = "é".repeat(5_000);
        for body in [
            format!("<1{name}/>"),
            format!("<m {name} a='1'/>"),
            format!("<m>&{name};</m>"),
        ] {
            let (ParseError::NotWellFormed(text) | ParseError::RestrictedXml(text)) = error(&body)
            else {
                panic!("neither not-well-formed nor restricted-xml");
            };
            assert!(
                text.len() <= ERROR_TEXT_MAX + '…'.len_utf8(),
                "{}",
                text.len()
            );
            assert!(text.ends_with('…'), "{text}");
        }
    }

    #[test]
    fn attributes_may_space_around_the_equals_sign_but_must_be_separated() {
        let stanzas = stanzas("<m a = '1'\n\tb\t=\t\"2\" />");
        assert_eq!(stanzas[0].attr("a"), Some("1"));
        assert_eq!(stanzas[0].attr("b"), Some("2"));
        // Refused by expat too: Python's parser says "not well-formed
        // (invalid token)" to the first.
        for tag in [
            "<m a='1'b='2'/>",
            "<m a=1/>",
            "<m a/>",
            "<m a='1' b/>",
            "<m a='1' ='2'/>",
        ] {
            assert_eq!(error(tag).condition(), "not-well-formed", "{tag}");
        }
    }

    #[test]
    fn attribute_values_are_normalized() {
        let stanzas = stanzas("<m a='x\ty\r\nz' b='&#9;&#10;'/>");
        assert_eq!(stanzas[0].attr("a"), Some("x y z"));
        assert_eq!(stanzas[0].attr("b"), Some("\t\n"));
    }

    #[test]
    fn end_of_stream_is_an_event() {
        let (events, result) = parse(&format!("{HEADER}<presence/></stream:stream>\n"));
        assert_eq!(result, Ok(()));
        assert_eq!(events.last(), Some(&StreamEvent::End));
    }

    #[test]
    fn self_closed_header_opens_and_ends_the_stream() {
        let (events, result) =
            parse("<stream:stream xmlns:stream='http://etherx.jabber.org/streams'/>");
        assert_eq!(result, Ok(()));
        assert!(matches!(
            &events[..],
            [StreamEvent::Header(_), StreamEvent::End]
        ));
    }

    #[test]
    fn bytes_after_the_stream_end_are_not_well_formed() {
        let end = "<presence/></stream:stream>";
        assert_eq!(error(&format!("{end}x")).condition(), "not-well-formed");
        assert_eq!(
            error(&format!("{end}<presence/>")).condition(),
            "not-well-formed"
        );
    }

    #[test]
    fn reset_after_starttls_starts_a_new_stream() {
        let mut parser = StreamParser::new(limits());
        let (events, result) = feed(
            &mut parser,
            &[format!("{HEADER}<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>").as_bytes()],
        );
        assert_eq!(result, Ok(()));
        assert_eq!(events.len(), 2);
        parser.reset();
        // The new stream may open with an XML declaration again.
        let (events, result) = feed(&mut parser, &[format!("{HEADER}<presence/>").as_bytes()]);
        assert_eq!(result, Ok(()));
        assert!(matches!(events[0], StreamEvent::Header(_)));
        assert!(matches!(&events[1], StreamEvent::Stanza(p) if p.is("presence", "jabber:client")));
    }

    #[test]
    fn oversize_stanza_is_policy_violation_before_it_completes() {
        let limits = ParserLimits {
            stanza_bytes_max: 100,
            ..limits()
        };
        let mut parser = StreamParser::new(limits);
        let mut events = Vec::new();
        parser
            .push(SHORT_HEADER.as_bytes(), &mut events)
            .expect("header fits");
        parser
            .push(b"<message><body>", &mut events)
            .expect("prefix fits");
        // 15 bytes so far; 85 more fit, the 86th does not, though no end
        // tag has come.
        assert_eq!(parser.push(&[b'a'; 85], &mut events), Ok(()));
        let error = parser.push(b"a", &mut events);
        assert_eq!(error, Err(ParseError::StanzaTooLarge { limit: 100 }));
        assert_eq!(error.map_err(|e| e.condition()), Err("policy-violation"));
        assert!(parser.tokenizer.buf.is_empty());
        // The stream is dead.
        assert!(parser.push(b"</body></message>", &mut events).is_err());
    }

    #[test]
    fn oversize_is_refused_at_the_first_byte_over_in_text_tags_and_values() {
        // In text, in a tag and in an attribute value alike: the limit
        // fits, the next byte does not.
        for (prefix, filler) in [
            ("<message><body>", b'a'),
            ("<message to='", b'a'),
            ("<message to=\"", b'a'),
            ("<message", b' '),
        ] {
            let mut parser = StreamParser::new(ParserLimits {
                stanza_bytes_max: 100,
                ..limits()
            });
            let mut events = Vec::new();
            parser
                .push(SHORT_HEADER.as_bytes(), &mut events)
                .expect("header fits");
            let fits = vec![filler; 100 - prefix.len()];
            parser
                .push(prefix.as_bytes(), &mut events)
                .expect("prefix fits");
            assert_eq!(parser.push(&fits, &mut events), Ok(()), "{prefix}");
            assert_eq!(
                parser.push(&[filler], &mut events),
                Err(ParseError::StanzaTooLarge { limit: 100 }),
                "{prefix}"
            );
            assert!(parser.tokenizer.buf.is_empty(), "{prefix}");
        }
    }

    #[test]
    fn stanza_of_exactly_the_limit_is_accepted() {
        let stanza = format!("<message><body>{}</body></message>", "a".repeat(68));
        assert_eq!(stanza.len(), 100);
        let mut parser = StreamParser::new(ParserLimits {
            stanza_bytes_max: 100,
            ..limits()
        });
        let (events, result) = feed(&mut parser, &[SHORT_HEADER.as_bytes(), stanza.as_bytes()]);
        assert_eq!(result, Ok(()));
        assert_eq!(events.len(), 2);
    }

    #[test]
    fn oversize_header_is_policy_violation() {
        let mut parser = StreamParser::new(ParserLimits {
            stanza_bytes_max: 50,
            ..limits()
        });
        let (_, result) = feed(&mut parser, &[HEADER.as_bytes()]);
        assert_eq!(result, Err(ParseError::StanzaTooLarge { limit: 50 }));
    }

    #[test]
    fn large_stanza_in_small_pieces_is_parsed_in_linear_time() {
        // 4 MiB of text a byte at a time: a parser that re-scanned its
        // buffer on every push would do ~10^13 steps and never finish.
        let text_bytes = 4 << 20;
        let mut parser = StreamParser::new(ParserLimits {
            stanza_bytes_max: text_bytes + 100,
            ..limits()
        });
        let mut events = Vec::new();
        parser
            .push(format!("{HEADER}<message><body>").as_bytes(), &mut events)
            .expect("prefix");
        for _ in 0..text_bytes {
            parser.push(b"x", &mut events).expect("text byte");
        }
        parser.push(b"</body></message>", &mut events).expect("end");
        let Some(StreamEvent::Stanza(message)) = events.last() else {
            panic!("no stanza");
        };
        assert_eq!(
            message.children().next().map(|b| b.text().len()),
            Some(text_bytes)
        );
    }

    #[test]
    fn too_deep_is_policy_violation() {
        let limits = ParserLimits {
            depth_max: 3,
            ..limits()
        };
        let run = |body: &str| {
            feed(
                &mut StreamParser::new(limits),
                &[HEADER.as_bytes(), body.as_bytes()],
            )
            .1
        };
        assert_eq!(run("<a><b><c/></b></a>"), Ok(()));
        assert_eq!(
            run("<a><b><c><d/></c></b></a>"),
            Err(ParseError::TooDeep { limit: 3 })
        );
    }

    #[test]
    fn too_many_attributes_is_policy_violation() {
        let limits = ParserLimits {
            attributes_max: 3,
            ..limits()
        };
        let run = |body: &str| {
            feed(
                &mut StreamParser::new(limits),
                &[SHORT_HEADER.as_bytes(), body.as_bytes()],
            )
            .1
        };
        assert_eq!(run("<a xmlns='urn:a' b='1' c='2'/>"), Ok(()));
        let error = run("<a xmlns='urn:a' b='1' c='2' d='3'/>");
        assert_eq!(error, Err(ParseError::TooManyAttributes { limit: 3 }));
        assert_eq!(error.map_err(|e| e.condition()), Err("policy-violation"));
    }

    #[test]
    fn entity_bomb_is_restricted_xml() {
        let bomb = "<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'>\
            <!ENTITY lol2 '&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;'>]>\
            <stream:stream xmlns:stream='http://etherx.jabber.org/streams'>&lol2;";
        let (events, result) = parse(bomb);
        assert!(events.is_empty());
        assert_eq!(result.map_err(|e| e.condition()), Err("restricted-xml"));
    }

    #[test]
    fn doctype_is_restricted_xml() {
        let (_, result) = parse("<!DOCTYPE stream>");
        assert_eq!(result.map_err(|e| e.condition()), Err("restricted-xml"));
    }

    #[test]
    fn undefined_entity_is_restricted_xml() {
        assert_eq!(error("<m>&lol;</m>").condition(), "restricted-xml");
        assert_eq!(error("<m a='&nbsp;'/>").condition(), "restricted-xml");
    }

    #[test]
    fn processing_instruction_is_restricted_xml() {
        assert_eq!(error("<?foo bar?>").condition(), "restricted-xml");
        assert_eq!(
            error("<m><?xml version='1.0'?></m>").condition(),
            "restricted-xml"
        );
        let (_, result) = parse("<?xml-stylesheet href='a'?><stream:stream/>");
        assert_eq!(result.map_err(|e| e.condition()), Err("restricted-xml"));
    }

    #[test]
    fn xml_declaration_only_opens_the_stream() {
        let (_, result) = parse(&format!(" {HEADER}"));
        assert_eq!(result.map_err(|e| e.condition()), Err("restricted-xml"));
    }

    #[test]
    fn non_utf8_declaration_is_unsupported_encoding() {
        let (_, result) = parse("<?xml version='1.0' encoding='ISO-8859-1'?>");
        assert_eq!(
            result.map_err(|e| e.condition()),
            Err("unsupported-encoding")
        );
        let (_, result) = parse(
            "<?xml version='1.0' encoding='utf-8'?><stream:stream xmlns:stream='http://etherx.jabber.org/streams'>",
        );
        assert_eq!(result, Ok(()));
    }

    #[test]
    fn comment_is_restricted_xml() {
        assert_eq!(error("<m><!-- hi --></m>").condition(), "restricted-xml");
        assert_eq!(error("<!-- hi -->").condition(), "restricted-xml");
    }

    #[test]
    fn mismatched_tag_is_not_well_formed() {
        assert_eq!(error("<a><b></a></b>").condition(), "not-well-formed");
        assert_eq!(error("</stream:features>").condition(), "not-well-formed");
    }

    #[test]
    fn invalid_utf8_is_not_well_formed() {
        let mut parser = StreamParser::new(limits());
        let (_, result) = feed(&mut parser, &[HEADER.as_bytes(), b"<m>\xff\xfe</m>"]);
        assert_eq!(result.map_err(|e| e.condition()), Err("not-well-formed"));
        let mut parser = StreamParser::new(limits());
        let (_, result) = feed(&mut parser, &[HEADER.as_bytes(), b"<m a='\xc3'/>"]);
        assert_eq!(result.map_err(|e| e.condition()), Err("not-well-formed"));
    }

    #[test]
    fn unbound_prefix_is_not_well_formed() {
        assert_eq!(error("<foo:m/>").condition(), "not-well-formed");
        assert_eq!(error("<m foo:a='1'/>").condition(), "not-well-formed");
    }

    #[test]
    fn tags_are_told_apart_by_their_first_and_last_bytes() {
        // Whitespace may end an end tag's name (XML 1.0 §3.1), and an empty
        // element's tag; nothing else may follow an end tag's name.
        let stanzas = stanzas("<m a='1/' d=\"'>\"><b\n/><c></c\t\r\n ></m >");
        assert_eq!(stanzas[0].attr("a"), Some("1/"));
        assert_eq!(stanzas[0].attr("d"), Some("'>"));
        assert!(stanzas[0].child("b", "jabber:client").is_some());
        assert!(stanzas[0].child("c", "jabber:client").is_some());
        for malformed in ["<m></m b='1'>", "<m></ m>", "< m/>", "<m/ >"] {
            assert_eq!(
                error(malformed).condition(),
                "not-well-formed",
                "{malformed}"
            );
        }
    }

    #[test]
    fn an_attribute_prefix_may_be_declared_after_the_attribute() {
        let stanzas = stanzas("<m p:a='1' xmlns:p='urn:p'/>");
        assert_eq!(stanzas[0].attr_ns("a", "urn:p"), Some("1"));
        assert_eq!(error("<m p:a='1'/>").condition(), "not-well-formed");
    }

    #[test]
    fn duplicate_attribute_is_not_well_formed() {
        assert_eq!(error("<m a='1' a='2'/>").condition(), "not-well-formed");
        // XML Namespaces §6.3: same namespace under two prefixes.
        assert_eq!(
            error("<m xmlns:p='urn:x' xmlns:q='urn:x' p:a='1' q:a='2'/>").condition(),
            "not-well-formed"
        );
        // Repeated declarations, the `xml` prefix's included.
        for repeated in [
            "<m xmlns='urn:x' xmlns='urn:x'/>",
            "<m xmlns:p='urn:x' xmlns:p='urn:y'/>",
            "<m xmlns:xml='http://www.w3.org/XML/1998/namespace' \
             xmlns:xml='http://www.w3.org/XML/1998/namespace'/>",
        ] {
            assert_eq!(error(repeated).condition(), "not-well-formed", "{repeated}");
        }
    }

    #[test]
    fn an_attribute_named_like_xmlns_declares_nothing() {
        let [m] = &stanzas("<m xmlnsx='1' xmlns:p='urn:p' p:xmlns='2'/>")[..] else {
            panic!("one stanza");
        };
        assert_eq!(m.attr("xmlnsx"), Some("1"));
        assert_eq!(m.attr_ns("xmlns", "urn:p"), Some("2"));
        assert_eq!(m.ns(), "jabber:client");
    }

    #[test]
    fn control_characters_are_not_well_formed() {
        assert_eq!(error("<m>\u{1}</m>").condition(), "not-well-formed");
        assert_eq!(error("<m>&#0;</m>").condition(), "not-well-formed");
    }

    #[test]
    fn text_outside_the_root_is_not_well_formed() {
        let (_, result) = parse("hello");
        assert_eq!(result.map_err(|e| e.condition()), Err("not-well-formed"));
    }

    #[test]
    fn text_between_stanzas_is_bad_format() {
        assert_eq!(error("<presence/>hello").condition(), "bad-format");
    }

    #[test]
    fn root_other_than_stream_is_bad_format() {
        let (_, result) = parse("<html>");
        assert_eq!(result.map_err(|e| e.condition()), Err("bad-format"));
    }

    #[test]
    fn declarations_and_attribute_namespaces_are_recorded() {
        let stanzas = stanzas(
            "<iq type='set'><x xmlns='urn:x' xmlns:p='urn:p' p:a='1' xml:lang='fr'>\
             <p:y/></x></iq>",
        );
        let x = stanzas[0].child("x", "urn:x").expect("x");
        assert_eq!(x.attr_ns("a", "urn:p"), Some("1"));
        assert_eq!(x.attr_ns("lang", XML_NS), Some("fr"));
        assert!(x.child("y", "urn:p").is_some());
        assert_eq!(
            stanzas[0].to_stream_xml("jabber:client"),
            "<iq type=\"set\"><x xmlns=\"urn:x\" xmlns:p=\"urn:p\" p:a=\"1\" xml:lang=\"fr\">\
             <p:y/></x></iq>"
        );
    }

    /// The VOEvent document without its XML declaration.
    fn voevent_body(document: &str) -> &str {
        let start = document.find("<voe:VOEvent").expect("VOEvent root");
        document[start..].trim_end()
    }

    /// Publishes `payload` in an item under an element that undeclares the
    /// default namespace, so unprefixed VOEvent children are in no namespace.
    fn published_payload(payload: &str) -> Element {
        let stanza = format!(
            "<iq type='set' id='p1'><pubsub xmlns='http://jabber.org/protocol/pubsub'>\
             <publish node='alerts'><item id='1'><wrapper xmlns=''>{payload}</wrapper>\
             </item></publish></pubsub></iq>"
        );
        let mut iq = stanzas(&stanza).into_iter().next().expect("iq");
        let pubsub = "http://jabber.org/protocol/pubsub";
        let path = [
            ("pubsub", pubsub),
            ("publish", pubsub),
            ("item", pubsub),
            ("wrapper", ""),
        ];
        let mut element = &mut iq;
        for (name, ns) in path {
            element = element.child_mut(name, ns).expect(name);
        }
        element.remove_child("VOEvent", VOE_NS).expect("VOEvent")
    }

    #[test]
    fn compact_voevent_round_trips_byte_for_byte() {
        let body = voevent_body(include_str!("testdata/Gaia16aac.xml"));
        let voevent = published_payload(body);
        assert_eq!(voevent.prefix(), Some("voe"));
        assert!(voevent.child("Who", "").is_some());
        assert_eq!(voevent.to_xml(), body);
    }

    #[test]
    fn indented_voevent_round_trips_canonically() {
        let body = voevent_body(include_str!("testdata/SWIFT_bat_position_v2.0_example.xml"));
        let voevent = published_payload(body);
        assert_eq!(
            voevent.attr_ns(
                "schemaLocation",
                "http://www.w3.org/2001/XMLSchema-instance"
            ),
            Some(
                "http://www.ivoa.net/xml/VOEvent/v2.0 http://www.ivoa.net/xml/VOEvent/VOEvent-v2.0.xsd"
            )
        );
        let canonical = voevent.to_xml();
        let reparsed = published_payload(&canonical);
        assert_eq!(reparsed, voevent);
        assert_eq!(reparsed.to_xml(), canonical);
    }

    const PUBSUB: &str = "http://jabber.org/protocol/pubsub";

    fn is_item(element: &Element) -> bool {
        element.is("item", PUBSUB)
    }

    fn capturing() -> StreamParser {
        StreamParser::new(limits()).capture_children_of(is_item)
    }

    /// A publish `<iq/>` with `item` (the `<item>` element, payload and
    /// all) under a `<pubsub/>` that also binds the prefix `ps`.
    fn publish_stanza(item: &str) -> String {
        format!(
            "<iq type='set' id='p1'><pubsub xmlns='{PUBSUB}' xmlns:ps='urn:ps'>\
             <publish node='n'>{item}</publish></pubsub></iq>"
        )
    }

    /// The item of the publish stanza `item`, read by `parser` in `chunks`
    /// of the given size (0: at once).
    fn item_read_by(mut parser: StreamParser, item: &str, chunk: usize) -> Element {
        let input = format!("{HEADER}{}", publish_stanza(item));
        let chunks: Vec<&[u8]> = match chunk {
            0 => vec![input.as_bytes()],
            size => input.as_bytes().chunks(size).collect(),
        };
        let (events, result) = feed(&mut parser, &chunks);
        assert_eq!(result, Ok(()), "{item}");
        let Some(StreamEvent::Stanza(mut iq)) = events.into_iter().nth(1) else {
            panic!("no stanza");
        };
        let pubsub = iq.remove_child("pubsub", PUBSUB).expect("pubsub");
        let mut publish = pubsub.children().next().expect("publish").clone();
        publish.remove_child("item", PUBSUB).expect("item")
    }

    fn captured_in(item: &Element) -> Vec<&Captured> {
        item.nodes()
            .iter()
            .filter_map(|node| match node {
                Node::Captured(captured) => Some(&**captured),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn captured_payload_is_the_text_as_sent_plus_the_namespaces_it_took_from_outside() {
        let payload = "<ps:entry a = \"1\" xmlns:x='urn:x'>t &amp; <![CDATA[<c>]]>&#x41;\
                       <x:y x:b='2'/><z>\r\n</z ></ps:entry >";
        let item = item_read_by(capturing(), &format!("<item id='1'>{payload}</item>"), 0);
        let [captured] = captured_in(&item)[..] else {
            panic!("one captured payload in {item:?}");
        };
        // `ps` and the default namespace (for `<z>`) come from outside;
        // `stream`, also in scope, is not used and not declared.
        assert_eq!(
            captured.xml,
            format!(
                "<ps:entry xmlns:ps=\"urn:ps\" xmlns=\"{PUBSUB}\" a = \"1\" xmlns:x='urn:x'>\
                 t &amp; <![CDATA[<c>]]>&#x41;<x:y x:b='2'/><z>\r\n</z ></ps:entry >"
            )
        );
        let outline = &captured.outline;
        assert!(outline.is("entry", "urn:ps"));
        assert_eq!(outline.attr("a"), Some("1"));
        let children: Vec<(&str, &str)> = outline.children().map(|c| (c.name(), c.ns())).collect();
        assert_eq!(children, [("y", "urn:x"), ("z", PUBSUB)]);
        assert!(
            outline
                .children()
                .all(|c| c.attrs().is_empty() && c.nodes().is_empty())
        );
        assert_eq!(outline.text(), "");
        // The item's other children are not captured, and the captured
        // text is the element the tree builder would have built.
        let tree = item_read_by(
            StreamParser::new(limits()),
            &format!("<item id='1'>{payload}</item>"),
            0,
        );
        let built = tree.children().next().expect("payload element");
        let reread = parse_document(captured.xml.as_bytes(), limits()).expect("self-contained");
        assert!(reread.same_content(built), "{reread:?} != {built:?}");
    }

    #[test]
    fn captured_payloads_read_as_the_tree_would_in_any_split() {
        let samples =
            [
                voevent_body(include_str!("testdata/Gaia16aac.xml")).to_owned(),
                voevent_body(include_str!("testdata/SWIFT_bat_position_v2.0_example.xml"))
                    .replacen("<Who>", "<Who xmlns=''>", 1),
                "<a/>".to_owned(),
                "<a xmlns=''><b xmlns='urn:b'><c/></b><d/></a>".to_owned(),
                "<ps:a ps:k='v' xml:lang='en'>text<ps:b xmlns:ps='urn:other'/></ps:a>".to_owned(),
            ];
        for payload in &samples {
            let item = format!("<item>{payload} <second/></item>");
            let tree = item_read_by(StreamParser::new(limits()), &item, 0);
            let built: Vec<&Element> = tree.children().collect();
            for chunk in [0, 1, 7] {
                let read = item_read_by(capturing(), &item, chunk);
                let captured = captured_in(&read);
                assert_eq!(captured.len(), 2, "{payload}");
                for (captured, built) in captured.iter().zip(&built) {
                    let reread = parse_document(captured.xml.as_bytes(), limits())
                        .expect("captured text is a document of its own");
                    assert!(reread.same_content(built), "{payload} in chunks of {chunk}");
                    assert!(captured.outline.is(built.name(), built.ns()));
                    assert_eq!(captured.outline.attrs(), built.attrs());
                }
                // The whitespace between the payloads stays a text node.
                assert_eq!(read.text(), " ");
            }
        }
    }

    #[test]
    fn an_unbound_default_namespace_is_undeclared_on_the_captured_text() {
        let stream = "<stream:stream xmlns:stream='http://etherx.jabber.org/streams'>\
                      <ps:item xmlns:ps='http://jabber.org/protocol/pubsub'><a><b/></a></ps:item>";
        let (events, result) = feed(&mut capturing(), &[stream.as_bytes()]);
        assert_eq!(result, Ok(()));
        let Some(StreamEvent::Stanza(item)) = events.get(1) else {
            panic!("no item");
        };
        let captured = captured_in(item);
        assert_eq!(captured[0].xml, "<a xmlns=\"\"><b/></a>");
    }

    #[test]
    fn captured_payloads_are_checked_as_trees_are() {
        let cases = [
            "<a></b>",
            "<a><b></a></b>",
            "<q:a/>",
            "<a b='1' b='2'/>",
            "<a xmlns:p='urn:p' xmlns:q='urn:p' p:b='1' q:b='2'/>",
            "<a>&bogus;</a>",
            "<a>\u{1}</a>",
            "<a b='&#0;'/>",
            "<1a/>",
            "<a xmlns:xmlns='urn:x'/>",
            "<a>x]]>y</a>",
        ];
        for payload in cases {
            let input = format!(
                "{HEADER}{}",
                publish_stanza(&format!("<item>{payload}</item>"))
            );
            let tree = feed(&mut StreamParser::new(limits()), &[input.as_bytes()]).1;
            let captured = feed(&mut capturing(), &[input.as_bytes()]).1;
            assert!(tree.is_err(), "{payload} is accepted");
            assert_eq!(captured, tree, "{payload}");
        }
    }

    #[test]
    fn captured_elements_count_towards_the_depth_and_attribute_limits() {
        let limits = ParserLimits {
            depth_max: 6,
            attributes_max: 2,
            ..limits()
        };
        let run = |item: &str| {
            let input = format!("{SHORT_HEADER}{}", publish_stanza(item));
            let mut parser = StreamParser::new(limits).capture_children_of(is_item);
            feed(&mut parser, &[input.as_bytes()]).1
        };
        // iq, pubsub, publish, item: the payload opens at depth 5.
        assert_eq!(run("<item><a><b/></a></item>"), Ok(()));
        assert_eq!(
            run("<item><a><b><c/></b></a></item>"),
            Err(ParseError::TooDeep { limit: 6 })
        );
        assert_eq!(run("<item><a x='1' y='2'/></item>"), Ok(()));
        assert_eq!(
            run("<item><a><b x='1' y='2' z='3'/></a></item>"),
            Err(ParseError::TooManyAttributes { limit: 2 })
        );
    }

    /// Mutations of a real payload, each read with and without capture:
    /// the two must accept and refuse the same inputs with the same
    /// error, and an accepted capture must read back as the tree.
    #[test]
    fn captured_and_built_payloads_agree_on_mutated_input() {
        let payload = voevent_body(include_str!("testdata/Gaia16aac.xml")).replacen(
            "<voe:VOEvent",
            "<voe:VOEvent xmlns=''",
            1,
        );
        let inserts: &[&str] = &[
            "<",
            ">",
            "&",
            "'",
            "\"",
            ":",
            "/",
            "=",
            " ",
            "x:",
            "&amp;",
            "&lt;",
            "<a>",
            "</a>",
            "<b/>",
            " c='1'",
            "c='1'",
            " c=1",
            " c",
            "\t",
            " xmlns:d='urn:d'",
            "<![CDATA[]]>",
            "]]>",
            "\u{1}",
            "\r\n",
            "é",
            "\u{1F52D}",
            "&#1;",
        ];
        // A fixed linear congruential sequence: the same cases every run.
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = |bound: usize| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) as usize % bound
        };
        let (mut accepted, mut refused) = (0, 0);
        for _ in 0..400 {
            let mut mutated = payload.clone();
            for _ in 0..1 + next(2) {
                let mut at = next(mutated.len());
                while !mutated.is_char_boundary(at) {
                    at -= 1;
                }
                match next(3) {
                    0 => {
                        let end = (at + 1 + next(8)).min(mutated.len());
                        let end = (end..=mutated.len())
                            .find(|&e| mutated.is_char_boundary(e))
                            .unwrap_or(mutated.len());
                        mutated.replace_range(at..end, "");
                    }
                    _ => mutated.insert_str(at, inserts[next(inserts.len())]),
                }
            }
            let input = format!(
                "{HEADER}{}",
                publish_stanza(&format!("<item>{mutated}</item>"))
            );
            let (built_events, built) = feed(&mut StreamParser::new(limits()), &[input.as_bytes()]);
            let (captured_events, captured) = feed(&mut capturing(), &[input.as_bytes()]);
            assert_eq!(captured, built, "{mutated}");
            if built.is_err() {
                refused += 1;
                continue;
            }
            accepted += 1;
            let payload_of = |events: &[StreamEvent]| -> Option<Node> {
                let Some(StreamEvent::Stanza(iq)) = events.get(1) else {
                    return None;
                };
                let mut element = iq;
                for name in ["pubsub", "publish", "item"] {
                    element = element.child(name, PUBSUB)?;
                }
                element
                    .nodes()
                    .iter()
                    .find(|n| !matches!(n, Node::Text(_)))
                    .cloned()
            };
            match (payload_of(&built_events), payload_of(&captured_events)) {
                (Some(Node::Element(built)), Some(Node::Captured(captured))) => {
                    let reread = parse_document(captured.xml.as_bytes(), limits())
                        .expect("an accepted capture is a document of its own");
                    assert!(reread.same_content(&built), "{mutated}");
                }
                // A mutation that closed the item early leaves no payload
                // (or text only) in both.
                (None, None) => {}
                other => panic!("{mutated}: {other:?}"),
            }
        }
        // Both kinds of case occurred.
        assert!(
            accepted > 20 && refused > 20,
            "{accepted} accepted, {refused} refused"
        );
    }

    #[test]
    fn names_are_xml_names_beyond_ascii_too() {
        let accepted = stanzas("<m xmlns='urn:m'><été/><a\u{B7}b/><\u{4E2D}\u{6587}/></m>");
        let names: Vec<&str> = accepted[0].children().map(Element::name).collect();
        assert_eq!(names, ["été", "a\u{B7}b", "\u{4E2D}\u{6587}"]);
        for refused in [
            "<a\u{D7}b/>",
            "<\u{B7}a/>",
            "<a\u{2000}/>",
            "<m \u{F7}='1'/>",
        ] {
            assert!(
                matches!(error(refused), ParseError::NotWellFormed(_)),
                "{refused}"
            );
        }
    }

    #[test]
    fn a_reset_stream_still_captures() {
        let mut parser = capturing();
        feed(&mut parser, &[HEADER.as_bytes()]).1.expect("header");
        parser.reset();
        let item = item_read_by(parser, "<item><a/></item>", 0);
        assert_eq!(captured_in(&item).len(), 1);
    }

    fn document(input: &str) -> Result<Element, ParseError> {
        parse_document(input.as_bytes(), limits())
    }

    /// The condition `input` is refused with, as a document.
    fn document_condition(input: &str) -> &'static str {
        match document(input) {
            Err(error) => error.condition(),
            Ok(root) => panic!("{input:?} was accepted as {root:?}"),
        }
    }

    #[test]
    fn sample_voevent_documents_parse_and_reparse_to_equal_trees() {
        let samples = [
            include_str!("testdata/Gaia16aac.xml"),
            include_str!("testdata/SWIFT_bat_position_v2.0_example.xml"),
        ];
        for sample in samples {
            let voevent = document(sample).expect("sample parses");
            assert!(voevent.is("VOEvent", VOE_NS));
            assert!(voevent.child("Who", "").is_some());
            // The document grammar builds the same tree as the stream one.
            assert_eq!(voevent, published_payload(voevent_body(sample)));
            let reparsed = document(&voevent.to_xml()).expect("serialization parses");
            assert_eq!(reparsed, voevent);
        }
    }

    #[test]
    fn document_declaring_utf8_or_no_encoding_is_accepted() {
        for declaration in [
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>",
            "<?xml version='1.0' encoding='utf-8' standalone='yes'?>",
            "<?xml version=\"1.0\" ?>",
        ] {
            let root = document(&format!("{declaration}\n<r>x</r>\n"));
            assert_eq!(root.map(|r| r.text()), Ok("x".to_owned()), "{declaration}");
        }
    }

    #[test]
    fn document_declaring_iso_8859_1_is_unsupported_encoding() {
        let result = document("<?xml version='1.0' encoding='ISO-8859-1'?><r/>");
        assert_eq!(
            result,
            Err(ParseError::UnsupportedEncoding("ISO-8859-1".into()))
        );
    }

    #[test]
    fn document_ending_inside_a_character_is_not_well_formed() {
        assert_eq!(
            parse_document(b"<a/>\xe2\x82", limits()).map_err(|e| e.condition()),
            Err("not-well-formed")
        );
    }

    #[test]
    fn document_byte_order_mark_is_skipped() {
        let bom = "\u{FEFF}";
        assert!(document(&format!("{bom}<?xml version='1.0'?><r/>")).is_ok());
        assert_eq!(document(&format!("{bom}<r/>")), Ok(Element::new("r", "")));
        // Only at the very start.
        assert_eq!(document_condition(&format!("<r/>{bom}")), "not-well-formed");
    }

    #[test]
    fn document_comments_and_processing_instructions_are_skipped() {
        let root = document(
            "<?xml version='1.0'?><!-- before --><?xml-stylesheet href='s.xsl'?>\n\
             <r><!-- inside -->a<?app data?>b<c><!----></c>c</r>\n\
             <!-- after - with a dash --><?end?>\n",
        )
        .expect("document");
        assert_eq!(root.text(), "abc");
        assert_eq!(root.to_xml(), "<r>ab<c/>c</r>");
    }

    #[test]
    fn document_malformed_comment_or_instruction_is_not_well_formed() {
        for input in [
            "<r><!-- a -- b --></r>",
            "<r><!-- a ---></r>",
            "<r><!- a --></r>",
            // XML 1.0 §2.6: the `xml` target is reserved.
            "<r><?XML data?></r>",
            "<r><??></r>",
        ] {
            assert_eq!(document_condition(input), "not-well-formed", "{input}");
        }
    }

    #[test]
    fn document_declaration_not_at_the_start_is_not_well_formed() {
        assert_eq!(
            document_condition(" <?xml version='1.0'?><r/>"),
            "not-well-formed"
        );
        assert_eq!(
            document_condition("<r/><?xml version='1.0'?>"),
            "not-well-formed"
        );
    }

    #[test]
    fn document_doctype_is_restricted_xml() {
        assert_eq!(
            document_condition("<!DOCTYPE r [<!ENTITY lol 'lol'>]><r>&lol;</r>"),
            "restricted-xml"
        );
        assert_eq!(
            document_condition("<?xml version='1.0'?>\n<!DOCTYPE r SYSTEM 'r.dtd'><r/>"),
            "restricted-xml"
        );
        assert_eq!(document_condition("<r>&nbsp;</r>"), "restricted-xml");
    }

    #[test]
    fn document_with_two_roots_is_not_well_formed() {
        assert_eq!(document_condition("<a/><b/>"), "not-well-formed");
        assert_eq!(
            document_condition("<a></a>\n<!-- -->\n<a/>"),
            "not-well-formed"
        );
    }

    #[test]
    fn document_text_outside_the_root_is_not_well_formed() {
        assert_eq!(document_condition("<r/>trailing"), "not-well-formed");
        assert_eq!(document_condition("<r/>\n x"), "not-well-formed");
        assert_eq!(document_condition("leading<r/>"), "not-well-formed");
        assert_eq!(document_condition("<r/><![CDATA[x]]>"), "not-well-formed");
    }

    #[test]
    fn truncated_document_is_not_well_formed() {
        for input in [
            "",
            " \n<!-- only a comment -->\n",
            "<?xml version='1.0'?>",
            "<r",
            "<r>",
            "<r><a>text</a>",
            "<r>text",
            "<r/><!-- unclosed",
            "<r/><?pi unclosed",
        ] {
            assert_eq!(
                document(input).map_err(|e| e.condition()),
                Err("not-well-formed"),
                "{input:?}"
            );
        }
    }

    #[test]
    fn document_over_the_size_limit_is_policy_violation() {
        let limits = ParserLimits {
            stanza_bytes_max: 20,
            ..limits()
        };
        let exact = "<r>0123456789abc</r>";
        assert_eq!(exact.len(), 20);
        assert!(parse_document(exact.as_bytes(), limits).is_ok());
        // Whitespace and the byte order mark count too.
        for over in [format!("{exact}\n"), format!("\u{FEFF}{exact}")] {
            assert_eq!(
                parse_document(over.as_bytes(), limits),
                Err(ParseError::StanzaTooLarge { limit: 20 })
            );
        }
    }

    #[test]
    fn document_depth_and_attribute_limits_count_the_root() {
        let limits = ParserLimits {
            depth_max: 2,
            attributes_max: 2,
            ..limits()
        };
        let run = |input: &str| parse_document(input.as_bytes(), limits).map(|_| ());
        assert_eq!(run("<r a='1' b='2'><c/></r>"), Ok(()));
        assert_eq!(
            run("<r><c><d/></c></r>"),
            Err(ParseError::TooDeep { limit: 2 })
        );
        assert_eq!(
            run("<r xmlns='urn:r' a='1' b='2'/>"),
            Err(ParseError::TooManyAttributes { limit: 2 })
        );
    }

    #[test]
    fn document_root_inherits_no_default_namespace() {
        let root = document("<r><c/></r>").expect("document");
        assert!(root.is("r", ""));
        assert!(root.child("c", "").is_some());
        let root = document("<r xmlns='urn:r'><c/><p:d xmlns:p='urn:p'/></r>").expect("document");
        assert!(root.is("r", "urn:r"));
        assert!(root.child("c", "urn:r").is_some());
        assert!(root.child("d", "urn:p").is_some());
        assert_eq!(document_condition("<p:r/>"), "not-well-formed");
    }

    #[test]
    fn stream_still_refuses_what_documents_skip() {
        assert_eq!(error("<m><!-- hi --></m>").condition(), "restricted-xml");
        assert_eq!(error("<m><?app data?></m>").condition(), "restricted-xml");
    }
}
