//! What an append of replicated commands costs on the wire, per entry: at
//! the leader, turning openraft's request into protobuf and encoding it
//! into a frame (once per follower); at a follower, decoding the frame and
//! turning it back into openraft's request. The commands are the size of a
//! publish of a 2 KiB VOEvent. Run with `cargo bench -p vomesh-mesh --bench
//! append_wire`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;
use vomesh_mesh::types::MeshTypes;
use vomesh_mesh::wire;
use vomesh_proto::mesh as pb;

// The node's allocator (see the broker's main.rs).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ENTRIES: usize = 64;
const COMMAND_BYTES: usize = 2_300;
const APPENDS: usize = 2_000;
const ROUNDS: usize = 5;

fn main() {
    let frame = frame_of(&request());
    let decoded = || {
        let pb = pb::AppendEntriesRequest::decode(frame.clone()).expect("the frame decodes");
        wire::append_request_from_pb::<MeshTypes>(pb).expect("a valid append")
    };
    let openraft_request = decoded();
    let encode = per_entry(|| {
        let pb = wire::append_request_to_pb(&openraft_request).expect("a valid append");
        black_box(frame_of(&pb));
    });
    let decode = per_entry(|| {
        black_box(decoded());
    });
    println!(
        "append of {ENTRIES} commands of {COMMAND_BYTES} B ({} B frame), best of {ROUNDS} rounds of {APPENDS}, per entry:",
        frame.len()
    );
    println!("  leader: to protobuf, encoded into a frame   {encode:>7.3} µs");
    println!("  follower: frame decoded, to openraft        {decode:>7.3} µs");
}

/// An append as the leader's openraft would send it, in protobuf.
fn request() -> pb::AppendEntriesRequest {
    let log_id = |index| pb::LogId {
        term: 3,
        node_id: 1,
        index,
    };
    pb::AppendEntriesRequest {
        vote: Some(pb::Vote {
            term: 3,
            node_id: 1,
            committed: true,
        }),
        prev_log_id: Some(log_id(999)),
        entries: (0..ENTRIES as u64)
            .map(|i| pb::Entry {
                log_id: Some(log_id(1_000 + i)),
                payload: Some(pb::entry::Payload::Command(
                    vec![b'v'; COMMAND_BYTES].into(),
                )),
            })
            .collect(),
        leader_commit: Some(log_id(999)),
    }
}

/// `message` as the transport frames it: a length, then the protobuf.
fn frame_of(message: &pb::AppendEntriesRequest) -> Bytes {
    let len = message.encoded_len();
    let mut frame = BytesMut::with_capacity(4 + len);
    frame.put_u32(len as u32);
    message.encode_raw(&mut frame);
    frame.split_off(4).freeze()
}

/// Microseconds per entry of `append`, the fastest of [`ROUNDS`].
fn per_entry(mut append: impl FnMut()) -> f64 {
    let fastest = (0..ROUNDS)
        .map(|_| {
            let started = Instant::now();
            for _ in 0..APPENDS {
                append();
            }
            started.elapsed()
        })
        .min()
        .unwrap_or(Duration::ZERO);
    fastest.as_secs_f64() * 1e6 / (APPENDS * ENTRIES) as f64
}
