//! The CPU a node spends on one published VOEvent before it is proposed,
//! stage by stage, on a real 2 KiB packet (`Gaia16aac.xml`): parsing the
//! publish `<iq/>` off the stream as a client session does (the payload
//! checked and kept as sent, not built into a tree), reading it as an
//! XEP-0060 request (which checks the VOEvent outline and takes the
//! payload text), and dropping the stanza. For scale, it also times the
//! same parse building the payload's whole tree (as VTP packets still
//! are read), the serialization such a tree then needs, and quick-xml's
//! own reader over the same stream, which builds nothing and checks none
//! of what XMPP needs. `cargo bench -p vomesh-broker --bench
//! publish_path` prints µs per publish for each stage; compare stages
//! within one run.

use std::hint::black_box;
use std::time::Duration;

use quick_xml::events::Event;

use vomesh_broker::pubsub::payload;
use vomesh_broker::pubsub::request::Request;
use vomesh_broker::xml::{Element, ParserLimits, StreamEvent, StreamParser, parse_document};

mod common;

/// The node's allocator (see `main.rs`): allocation is much of this work.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const LIMITS: ParserLimits = ParserLimits {
    stanza_bytes_max: 256 * 1024,
    depth_max: 64,
    attributes_max: 64,
};
/// Publishes per stream: one parser reads them all, as on a session.
const STANZAS: usize = 2_000;
const ROUNDS: usize = 5;

fn main() {
    let document = include_bytes!("../tests/data/voevents/Gaia16aac.xml");
    let voevent = parse_document(document, LIMITS).expect("the sample VOEvent parses");
    let stanza = publish_iq(voevent).to_stream_xml("jabber:client");
    let header = "<stream:stream xmlns='jabber:client' \
                  xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>";
    let mut stream = header.as_bytes().to_vec();
    for _ in 0..STANZAS {
        stream.extend_from_slice(stanza.as_bytes());
    }
    println!(
        "publish path, {} B stanza ({} B payload), best of {ROUNDS} rounds of {STANZAS}:",
        stanza.len(),
        document.len()
    );

    let parsed = stanzas(&stream, Payloads::Captured);
    let parse = best(|| black_box(stanzas(&stream, Payloads::Captured)).len());
    let request = best(|| {
        parsed
            .iter()
            .map(|iq| black_box(Request::try_from(iq)).is_ok() as usize)
            .sum()
    });
    let drop_stanzas = best_with_setup(|| stanzas(&stream, Payloads::Captured), drop);
    let parse_tree = best(|| black_box(stanzas(&stream, Payloads::Built)).len());
    let trees = stanzas(&stream, Payloads::Built);
    let payloads: Vec<&Element> = trees.iter().map(payload_of).collect();
    let serialize = best(|| {
        payloads
            .iter()
            .map(|p| black_box(payload::serialize(p)).len())
            .sum()
    });
    let drop_trees = best_with_setup(|| stanzas(&stream, Payloads::Built), drop);
    let events_only = best(|| quick_xml_events(&stream));
    for (stage, time) in [
        ("stream parse, payload kept as sent", parse),
        ("XEP-0060 request from the stanza", request),
        ("dropping the stanzas", drop_stanzas),
        ("for scale: payload built as a tree", parse_tree),
        ("  then serialized to be stored", serialize),
        ("  and the trees dropped", drop_trees),
        ("for scale: quick-xml events only", events_only),
    ] {
        println!("  {stage:<36} {:>7.2} µs", micros(time));
    }
}

/// How the parser reads an item's payload.
#[derive(Clone, Copy)]
enum Payloads {
    /// As a client session does ([`payload::is_payload_parent`]).
    Captured,
    /// As a whole element tree.
    Built,
}

fn publish_iq(payload: Element) -> Element {
    let item = Element::new("item", "http://jabber.org/protocol/pubsub")
        .with_attr("id", "ivo-item")
        .with_child(payload);
    let publish = Element::new("publish", "http://jabber.org/protocol/pubsub")
        .with_attr("node", "alerts")
        .with_child(item);
    Element::new("iq", "jabber:client")
        .with_attr("type", "set")
        .with_attr("id", "p1")
        .with_attr("to", "pubsub.example.org")
        .with_child(Element::new("pubsub", "http://jabber.org/protocol/pubsub").with_child(publish))
}

fn stanzas(stream: &[u8], payloads: Payloads) -> Vec<Element> {
    let mut parser = match payloads {
        Payloads::Captured => {
            StreamParser::new(LIMITS).capture_children_of(payload::is_payload_parent)
        }
        Payloads::Built => StreamParser::new(LIMITS),
    };
    let mut events = Vec::with_capacity(STANZAS + 1);
    // Fed in 16 KiB pieces, the most a TLS record carries.
    for chunk in stream.chunks(16 * 1024) {
        parser.push(chunk, &mut events).expect("the stream parses");
    }
    events
        .into_iter()
        .filter_map(StreamEvent::into_stanza)
        .collect()
}

/// What quick-xml's own reader takes over the same stream: its events and
/// unescaped attribute values, no tree, no namespaces, and none of the
/// checks XMPP needs. Returns the bytes of text and values read.
fn quick_xml_events(stream: &[u8]) -> usize {
    let mut reader = quick_xml::Reader::from_reader(stream);
    let mut read = 0;
    loop {
        match reader.read_event().expect("the stream is well-formed") {
            Event::Start(tag) | Event::Empty(tag) => {
                for attr in tag.attributes() {
                    let attr = attr.expect("attributes are well-formed");
                    read += attr.unescape_value().expect("values unescape").len();
                }
            }
            Event::Text(text) => read += text.len(),
            Event::Eof => return read,
            _ => {}
        }
    }
}

fn payload_of(iq: &Element) -> &Element {
    let mut node = iq;
    for _ in 0..3 {
        node = node.children().next().expect("iq/pubsub/publish/item");
    }
    node.children().next().expect("the item's payload")
}

/// The fastest of `ROUNDS` runs of `run`, per stanza.
fn best(mut run: impl FnMut() -> usize) -> Duration {
    best_with_setup(|| (), |()| assert!(run() > 0, "the stage did its work"))
}

/// The fastest of `ROUNDS` runs of `run` on a fresh `setup()`, per stanza;
/// the setup is not timed.
fn best_with_setup<T>(setup: impl FnMut() -> T, run: impl FnMut(T)) -> Duration {
    common::fastest(ROUNDS, setup, run) / STANZAS as u32
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
