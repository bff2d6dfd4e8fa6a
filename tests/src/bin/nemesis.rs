//! The randomised failover suite (see `vomesh_tests::nemesis`): a mesh of
//! real `vomesh` processes, publishers and subscribers at every site, and
//! faults drawn from a seed; prints the seed first, each fault as it is
//! injected and healed, and the history checker's report. Exits 1 when the
//! run lost, duplicated or reordered anything, a site diverged, or a fault
//! never recovered; the history is then kept for diagnosis.
//!
//! ```text
//! cargo run --release -p vomesh-tests --bin nemesis -- \
//!     --nodes 5 --duration 600s --seed 7 \
//!     --faults kill,pause,partition,netem,clock,membership,powerloss
//! ```
//!
//! Run as root for network namespaces (partitions, packet loss and delay);
//! without them those faults are skipped with the reason printed.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use vomesh_tests::nemesis::{FaultKind, Options, run};

#[derive(Parser)]
#[command(about = "Seeded fault injection against a mesh of real vomesh processes")]
struct Args {
    /// Nodes in the mesh (3 or 5 make sense: a majority survives a minority).
    #[arg(long, default_value_t = 5)]
    nodes: usize,
    /// How long faults are injected, e.g. `600s`, `10m`, `90s`.
    #[arg(long, default_value = "600s", value_parser = parse_duration)]
    duration: Duration,
    /// The seed of the fault schedule; a random one when absent (printed
    /// first, so any run can be repeated).
    #[arg(long)]
    seed: Option<u64>,
    /// Fault kinds, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "kill,pause,partition,netem,clock,membership,powerloss"
    )]
    faults: Vec<FaultKind>,
    /// The mesh's `snapshot_every_entries`.
    #[arg(long, default_value_t = 1_000)]
    snapshot_every_entries: u64,
    /// Each publisher's pause between publishes, in milliseconds.
    #[arg(long, default_value_t = 50)]
    publish_pause_ms: u64,
    /// Where a failed run's history, archives and node logs are kept.
    #[arg(long, default_value = "nemesis-history")]
    keep_dir: PathBuf,
    /// Run every node on loopback even where namespaces are available.
    #[arg(long)]
    loopback: bool,
}

/// `90s`, `10m`, `1h` or plain seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 90s or 10m"))?;
    let seconds = match unit {
        "s" => number,
        "m" => number * 60,
        "h" => number * 3600,
        _ => return Err(format!("unknown unit {unit:?} in {text:?} (s, m, h)")),
    };
    Ok(Duration::from_secs(seconds))
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if args.nodes < 3 {
        eprintln!("nemesis: --nodes must be at least 3 (a minority must be able to fail)");
        return std::process::ExitCode::from(2);
    }
    let seed = args.seed.unwrap_or_else(random_seed);
    println!("nemesis: seed {seed}");
    let options = Options {
        nodes: args.nodes,
        duration: args.duration,
        seed,
        kinds: args.faults,
        snapshot_every_entries: args.snapshot_every_entries,
        pause_between_publishes: Duration::from_millis(args.publish_pause_ms),
        keep_dir: args.keep_dir,
        namespaces: !args.loopback,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let report = runtime.block_on(run(options));
    println!("{report}");
    if report.passed() {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}

/// A seed from the time, for runs that name none.
fn random_seed() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    now.as_secs() ^ u64::from(now.subsec_nanos()) ^ u64::from(std::process::id())
}
