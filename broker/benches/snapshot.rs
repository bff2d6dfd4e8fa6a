//! What a snapshot of a site's pubsub state costs: capturing it between two
//! applies (`freeze`, which holds up applying), encoding it (on the snapshot
//! thread, beside the commits, in pieces that go to the snapshot file; and,
//! for comparison, whole into one buffer, as `to_snapshot` does), and
//! restoring a site from it. The state is
//! 30,000 publishes of a real 2 KiB VOEvent (`Gaia16aac.xml`) over ten
//! nodes, all kept in the archive: about the state two seconds of the
//! mesh's full load leave behind. `cargo bench -p vomesh-broker --bench
//! snapshot` prints each stage's time and its cost per archived item.

use std::hint::black_box;
use std::time::Duration;

use jid::BareJid;
use vomesh_broker::pubsub::service::{Meta, PubsubService};
use vomesh_broker::pubsub::{PubsubLimits, payload};
use vomesh_broker::xml::{ParserLimits, parse_document};
use vomesh_proto::pubsub::{Command, CreateNode, Publish, command::Op};

mod common;

/// The node's allocator (see `main.rs`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const NODES: usize = 10;
const PUBLISHES: usize = 30_000;
const ROUNDS: usize = 5;

fn main() {
    let service = populated();
    let bytes = service.to_snapshot();
    println!(
        "snapshot of {PUBLISHES} publishes over {NODES} nodes ({:.1} MB), best of {ROUNDS}:",
        bytes.len() as f64 / 1e6
    );
    let freeze = best(|| drop(black_box(service.freeze())));
    let encode_whole = common::fastest(
        ROUNDS,
        || service.freeze(),
        |frozen| drop(black_box(frozen.encode())),
    );
    let encode_in_pieces = common::fastest(
        ROUNDS,
        || service.freeze(),
        |frozen| {
            frozen
                .write_to(&mut std::io::sink())
                .expect("the sink takes every write")
        },
    );
    let restore = best(|| {
        let restored = PubsubService::from_snapshot(service_jid(), limits(), &bytes)
            .expect("the snapshot restores");
        drop(black_box(restored));
    });
    for (stage, time) in [
        ("freeze (applying waits)", freeze),
        ("encode whole, in memory", encode_whole),
        ("encode in pieces (thread)", encode_in_pieces),
        ("restore", restore),
    ] {
        println!(
            "  {stage:<26} {:>8.2} ms  {:>6.3} µs per item",
            time.as_secs_f64() * 1e3,
            time.as_secs_f64() * 1e6 / PUBLISHES as f64
        );
    }
}

fn service_jid() -> BareJid {
    BareJid::new("pubsub.example.org").expect("a valid JID")
}

fn limits() -> PubsubLimits {
    PubsubLimits {
        archive_entries_per_node_max: PUBLISHES,
        ..PubsubLimits::default()
    }
}

fn populated() -> PubsubService {
    let document = include_bytes!("../tests/data/voevents/Gaia16aac.xml");
    let parser_limits = ParserLimits {
        stanza_bytes_max: 256 * 1024,
        depth_max: 64,
        attributes_max: 64,
    };
    let voevent = parse_document(document, parser_limits).expect("the sample VOEvent parses");
    let xml = payload::serialize(&voevent);
    let mut service = PubsubService::new(service_jid(), limits());
    let mut index: u64 = 0;
    let mut apply = |op: Op| {
        index += 1;
        let command = Command {
            actor: "alice@example.org/desk".to_owned(),
            timestamp_micros: 1_795_608_000_000_000 + index as i64,
            op: Some(op),
        };
        let outcome = service.apply(
            &command,
            &Meta {
                index,
                reply_wanted: true,
            },
        );
        assert!(outcome.reply.is_ok(), "{:?}", outcome.reply);
    };
    for node in 0..NODES {
        apply(Op::CreateNode(CreateNode {
            node: format!("events-{node}"),
            config: None,
        }));
    }
    for i in 0..PUBLISHES {
        apply(Op::Publish(Publish {
            node: format!("events-{}", i % NODES),
            item_id: format!("item-{i}"),
            payload: xml.clone(),
            has_item: true,
            ..Publish::default()
        }));
    }
    service
}

/// The fastest of `ROUNDS` runs of `run`.
fn best(mut run: impl FnMut()) -> Duration {
    common::fastest(ROUNDS, || (), |()| run())
}
