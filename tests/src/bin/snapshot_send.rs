//! The memory a leader spends catching a site up by snapshot: see
//! [`vomesh_tests::snapshot_send`]. `VOMESH_BIN` picks the build, so two
//! builds compare on the same work:
//!
//! ```sh
//! cargo run --release -p vomesh-tests --bin snapshot_send -- --events 3000 --payload-bytes 32768
//! VOMESH_BIN=/tmp/before/release/vomesh target/release/snapshot_send
//! ```

use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Events published while the site is stopped.
    #[arg(long, default_value_t = 3000)]
    events: usize,
    /// Bytes of text in each event's payload.
    #[arg(long, default_value_t = 32 * 1024)]
    payload_bytes: usize,
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let measured = vomesh_tests::snapshot_send::measure(args.events, args.payload_bytes).await?;
    println!("{measured}");
    Ok(())
}
