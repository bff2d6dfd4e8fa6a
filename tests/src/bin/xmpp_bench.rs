//! `xmpp_bench`: the load generator of the comparison with Prosody and
//! ejabberd (see `bench/run-comparison.sh`, which installs and configures
//! them). It speaks plain XMPP (RFC 6120 STARTTLS + SCRAM + bind, XEP-0060),
//! so it runs against any server; vomesh targets it can start itself.
//!
//! ```text
//! # vomesh, started here (single node, or a 3-site mesh on loopback)
//! cargo run --release -p vomesh-tests --bin xmpp_bench -- run --target vomesh --out vomesh.json
//! cargo run --release -p vomesh-tests --bin xmpp_bench -- run --target vomesh-mesh --out mesh.json
//! # any running server whose accounts bench0..bench99 and publisher exist
//! xmpp_bench run --target external --label prosody --server 127.0.0.1:5322 \
//!     --ca cert.pem --server-pid 1234 --out prosody.json
//! # one table, ratios vomesh / each peer
//! xmpp_bench compare --baseline vomesh vomesh.json mesh.json prosody.json ejabberd.json
//! ```
//!
//! The scenarios and their figures are described in
//! `vomesh_tests::bench::scenarios`. Each session needs a descriptor here
//! and one in the server: the soft `RLIMIT_NOFILE` is raised to the hard one
//! (vomesh nodes started here inherit it).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand, ValueEnum};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use vomesh_broker::client::Trust;
use vomesh_tests::bench::figures::{Report, comparison_table};
use vomesh_tests::bench::scenarios::{self, Plan};
use vomesh_tests::bench::target::Target;
use vomesh_tests::bench::vomesh;
use vomesh_tests::bench::vomesh::PublishersAt;
use vomesh_tests::measure::{build_profile, ensure_fd_limit};
use vomesh_tests::pubsub::{read_xml, sample};

/// The node's allocator (see the vomesh binary), so that the load
/// generator's CPU per notification is not inflated by glibc's malloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Descriptors beyond one per session (listeners, stores, stdio).
const SPARE_FDS: u64 = 512;

#[derive(Debug, Parser)]
#[command(about = "XMPP pubsub load generator: the same scenarios against any server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the scenarios against one target and save its figures.
    Run(Box<RunArgs>),
    /// Print the comparison table of saved figures.
    Compare {
        /// The label whose figures are divided by each peer's.
        #[arg(long, default_value = "vomesh")]
        baseline: String,
        /// Reports written by `run --out`.
        files: Vec<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum TargetKind {
    /// Start one vomesh node here.
    Vomesh,
    /// Start a 3-site vomesh mesh on loopback here; the publishers' site
    /// is a follower, which forwards every publish to the leader.
    VomeshMesh,
    /// The same mesh with the publishers' site as its `preferred_leader`.
    VomeshMeshPreferred,
    /// A server already running (accounts created beforehand).
    External,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    #[arg(long, value_enum, default_value = "vomesh")]
    target: TargetKind,
    /// Name in the report (default: the target kind).
    #[arg(long)]
    label: Option<String>,
    /// STARTTLS listener(s) of an external target, `host:port`.
    #[arg(long)]
    server: Vec<String>,
    #[arg(long, default_value = "localhost")]
    domain: String,
    /// The pubsub service JID.
    #[arg(long, default_value = "pubsub.localhost")]
    service: String,
    /// Subscriber accounts: PREFIX0 … PREFIX<accounts-1>.
    #[arg(long, default_value_t = 100)]
    accounts: usize,
    #[arg(long, default_value = "bench")]
    account_prefix: String,
    #[arg(long, default_value = "publisher")]
    publisher: String,
    #[arg(long, default_value = "bench-password")]
    password: String,
    /// PEM certificate(s) to trust for an external target.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// The external server's process id(s), for CPU time and memory.
    #[arg(long)]
    server_pid: Vec<u32>,
    /// `worker_threads` of each vomesh site started here (default: one per
    /// CPU, so a mesh's three sites run six workers on two cores).
    #[arg(long)]
    site_worker_threads: Option<usize>,
    /// Where to save the figures (JSON).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Scenarios (`idle` always runs).
    #[arg(long, value_delimiter = ',', default_values_t = ["floor", "fanout", "nodes", "rate", "throughput", "catchup"].map(String::from))]
    scenarios: Vec<String>,
    /// Sessions logged in (and kept idle) at the start.
    #[arg(long, default_value_t = 10_000)]
    sessions: usize,
    /// Logins (and subscriptions) in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Subscribers of each single-node fan-out (the last runs last).
    #[arg(long, value_delimiter = ',', default_values_t = [1_000, 10_000])]
    fanouts: Vec<usize>,
    /// Items published in each fan-out (one value: the same for all).
    #[arg(long, value_delimiter = ',', default_values_t = [200, 20])]
    fanout_events: Vec<usize>,
    /// Publishes per second of each fan-out (one value: the same for all).
    #[arg(long, value_delimiter = ',', default_values_t = [50.0, 2.0])]
    fanout_rate: Vec<f64>,
    #[arg(long, default_value_t = 100)]
    nodes: usize,
    #[arg(long, default_value_t = 100)]
    subscribers_per_node: usize,
    #[arg(long, default_value_t = 1_000)]
    nodes_events: usize,
    #[arg(long, default_value_t = 100.0)]
    nodes_rate: f64,
    #[arg(long, default_value_t = 100)]
    rate_subscribers: usize,
    /// Publishes in flight in the `rate` scenario.
    #[arg(long, default_value_t = 32)]
    rate_window: usize,
    #[arg(long, default_value_t = 10.0)]
    rate_seconds: f64,
    #[arg(long, default_value_t = 16)]
    throughput_publishers: usize,
    #[arg(long, default_value_t = 32)]
    throughput_window: usize,
    #[arg(long, default_value_t = 10.0)]
    throughput_seconds: f64,
    #[arg(long, default_value_t = 500)]
    catchup_items: usize,
    /// The payload of every item (default: a real 2 KiB VOEvent).
    #[arg(long)]
    payload: Option<PathBuf>,
    /// Longest time the logins, or the subscriptions, may take (s).
    #[arg(long, default_value_t = 600)]
    phase_timeout: u64,
    /// Notifications are awaited until none came for this long (s) …
    #[arg(long, default_value_t = 10)]
    drain_quiet: u64,
    /// … or for at most this long after the last publish (s).
    #[arg(long, default_value_t = 60)]
    drain_max: u64,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Run(args) => run(*args),
        Command::Compare { baseline, files } => {
            let reports = files
                .iter()
                .map(|f| Report::load(f))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let base = reports
                .iter()
                .find(|r| r.label == baseline)
                .with_context(|| format!("no report is labelled {baseline}"))?;
            for report in &reports {
                println!("{}:", report.label);
                for note in &report.notes {
                    println!("  {note}");
                }
            }
            println!();
            print!("{}", comparison_table(base, &reports));
            Ok(())
        }
    }
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    if args.sessions == 0 || args.accounts == 0 || args.concurrency == 0 {
        bail!("--sessions, --accounts and --concurrency must be greater than 0");
    }
    if let Some(too_many) = args.fanouts.iter().find(|&&n| n > args.sessions) {
        bail!("a fan-out of {too_many} needs at least that many --sessions");
    }
    let extra = args.throughput_publishers + 16;
    ensure_fd_limit((args.sessions + extra) as u64 + SPARE_FDS)?;
    let payload_path = args
        .payload
        .clone()
        .unwrap_or_else(|| sample("Gaia16aac.xml"));
    let nth = |values: &[f64], n: usize| values.get(n).or(values.last()).copied();
    let fanouts = args
        .fanouts
        .iter()
        .enumerate()
        .map(|(n, &count)| {
            let events = args.fanout_events.get(n).or(args.fanout_events.last());
            match (events, nth(&args.fanout_rate, n)) {
                (Some(&events), Some(rate)) if events > 0 && rate > 0.0 => {
                    Ok((count, events, rate))
                }
                _ => bail!("--fanout-events and --fanout-rate need a positive value per fan-out"),
            }
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let plan = Plan {
        sessions: args.sessions,
        concurrency: args.concurrency,
        fanouts,
        nodes: args.nodes,
        subscribers_per_node: args.subscribers_per_node,
        nodes_events: args.nodes_events,
        nodes_rate: args.nodes_rate,
        rate_subscribers: args.rate_subscribers,
        rate_window: args.rate_window,
        rate_seconds: args.rate_seconds,
        throughput_publishers: args.throughput_publishers,
        throughput_window: args.throughput_window,
        throughput_seconds: args.throughput_seconds,
        catchup_items: args.catchup_items,
        payload: read_xml(&payload_path),
        scenarios: args.scenarios.clone(),
        phase_timeout: Duration::from_secs(args.phase_timeout),
        drain_quiet: Duration::from_secs(args.drain_quiet),
        drain_max: Duration::from_secs(args.drain_max),
    };
    let accounts = vomesh::account_names(&args.account_prefix, args.accounts);
    let default_label = match args.target {
        TargetKind::Vomesh => "vomesh",
        TargetKind::VomeshMesh => "vomesh-mesh3",
        TargetKind::VomeshMeshPreferred => "vomesh-mesh3-preferred",
        TargetKind::External => "external",
    };
    let label = args.label.clone().unwrap_or_else(|| default_label.into());
    println!(
        "xmpp_bench: {label} ({} build of the load generator)",
        build_profile()
    );
    // Started vomesh processes live until the run ends.
    let (_running, target) = match args.target {
        TargetKind::Vomesh => {
            let (running, target) = vomesh::single_node(
                &label,
                &accounts,
                &args.publisher,
                &args.password,
                args.sessions + extra,
                args.site_worker_threads,
            );
            (Some(running), target)
        }
        TargetKind::VomeshMesh | TargetKind::VomeshMeshPreferred => {
            let publishers_at = match args.target {
                TargetKind::VomeshMeshPreferred => PublishersAt::PreferredLeader,
                _ => PublishersAt::Follower,
            };
            let (running, target) = vomesh::mesh(
                &label,
                3,
                publishers_at,
                &accounts,
                &args.publisher,
                &args.password,
                args.site_worker_threads,
            );
            (Some(running), target)
        }
        TargetKind::External => (None, external(&args, &label, accounts)?),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(scenarios::run(&target, &plan))?;
    if let Some(out) = &args.out {
        report.save(out)?;
        println!("figures saved to {}", out.display());
    }
    // Sessions still open in tasks are dropped with the runtime, without
    // waiting for a server that may be far behind.
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

fn external(args: &RunArgs, label: &str, accounts: Vec<String>) -> anyhow::Result<Target> {
    if args.server.is_empty() {
        bail!("--target external needs --server HOST:PORT");
    }
    let trust = match &args.ca {
        Some(path) => Trust::Roots(
            CertificateDer::pem_file_iter(path)
                .with_context(|| format!("reading {}", path.display()))?
                .collect::<Result<_, _>>()
                .with_context(|| format!("{} holds no PEM certificate", path.display()))?,
        ),
        None => bail!("--target external needs --ca FILE (the server's certificate)"),
    };
    if args.server_pid.is_empty() {
        println!("warning: no --server-pid: server CPU and memory are not measured");
    }
    Ok(Target {
        label: label.to_owned(),
        servers: args.server.clone(),
        domain: args.domain.clone(),
        service: args.service.clone(),
        accounts,
        publisher: args.publisher.clone(),
        password: args.password.clone(),
        trust,
        server_pids: args.server_pid.clone(),
    })
}
