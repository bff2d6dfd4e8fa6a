//! `c2s_bench`: how fast a real `vomesh serve` establishes client sessions,
//! and how much memory an idle authenticated session costs it.
//!
//! One run starts a node (the `vomesh` binary of this build profile, so run
//! it with `--release`), creates a few accounts, then opens N sessions with C
//! concurrent connectors. Each login is a full one: TCP connect, STARTTLS
//! (RFC 6120 §5), SASL SCRAM-SHA-256 (RFC 7677) and resource binding
//! (RFC 6120 §7) through the project's own client. The sessions then stay
//! connected and idle while the server's resident memory is read.
//!
//! ```text
//! cargo run --release -p vomesh-tests --bin c2s_bench -- [--sessions 2000] [--concurrency 64]
//! cargo run --release -p vomesh-tests --bin c2s_bench -- --quick
//! ```
//!
//! What it reports, and how:
//! - sessions/s: N divided by the wall time from the first connect to the
//!   last bound session;
//! - login latency (p50, p99, max): per session, connect to bound;
//! - CPU per session, of the server and of this load generator, from
//!   `utime + stime` in `/proc/<pid>/stat` before and after the logins.
//!   Both share the machine's cores, so the client's share shows how much
//!   of the machine the measurement itself took. The client's cost is
//!   dominated by SCRAM's PBKDF2 (4096 iterations per login: the client
//!   derives SaltedPassword every time, as a client without a credential
//!   cache does) and its TLS handshakes; the server stores only StoredKey
//!   and ServerKey (RFC 5802 §3), so it runs no PBKDF2 at login. With
//!   `--scram-cache` the client keeps SaltedPassword per account (RFC 5802
//!   §5.1 allows it), which leaves the server's work per login unchanged
//!   and frees the shared cores for it;
//! - memory per idle session: the server's `VmRSS` with all sessions idle,
//!   minus its `VmRSS` before any client connected, divided by N.
//!
//! CPU times come in clock ticks (10 ms): `--quick` shows the flow works,
//! its CPU figures are coarse. The cores are shared with whatever else
//! runs, so the load average at the start is printed too; `VOMESH_BIN`
//! pins the server binary (the shared `target/release/vomesh` may be
//! rebuilt from another checkout meanwhile).
//!
//! Each session needs a descriptor in this process and one in the server,
//! which inherits this process's limits: the soft `RLIMIT_NOFILE` is raised
//! to the hard one with `prlimit(1)` when it is too low (or run it under
//! `ulimit -n 20000`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use vomesh_broker::client::{Client, ClientConfig, ClientError, ScramCache};
use vomesh_tests::measure::{
    build_profile, clock_ticks_per_second, cpu_ticks, ensure_fd_limit, gauge, load_average,
    machine, percentile, rss_bytes,
};
use vomesh_tests::node::TestNode;

/// Sessions of `--quick`: enough to smoke-run every step in seconds.
const QUICK_SESSIONS: usize = 200;
/// Descriptors either process needs beyond one per session (listeners,
/// the account store, the runtime, stdio).
const SPARE_FDS: u64 = 256;
/// How long the server gets to go quiet (finish logging, let the allocator
/// settle) before its memory is read.
const SETTLE: Duration = Duration::from_secs(2);
/// How long closing every session may take at the end.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(60);
const PASSWORD: &str = "bench-password";

#[derive(Debug, Parser)]
#[command(about = "Login rate and memory per idle session of a real vomesh node")]
struct Args {
    /// Sessions to establish (and keep idle).
    #[arg(long, default_value_t = 2000)]
    sessions: usize,
    /// Logins in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Distinct accounts; sessions use them in turn (each gets its own
    /// generated resource).
    #[arg(long, default_value_t = 10)]
    accounts: usize,
    /// A smoke run of 200 sessions.
    #[arg(long)]
    quick: bool,
    /// Let the client cache SaltedPassword per account (RFC 5802 §5.1)
    /// instead of running PBKDF2 at every login.
    #[arg(long)]
    scram_cache: bool,
}

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.quick {
        args.sessions = QUICK_SESSIONS;
    }
    if args.sessions == 0 || args.concurrency == 0 || args.accounts == 0 {
        bail!("--sessions, --concurrency and --accounts must be greater than 0");
    }
    let fds = ensure_fd_limit(args.sessions as u64 + SPARE_FDS)?;
    let tick = clock_ticks_per_second();

    println!("c2s_bench: full logins (TCP, STARTTLS, SCRAM-SHA-256, bind) against a real node");
    println!("machine:     {}", machine());
    println!(
        "load avg:    {} (before start; the cores are shared)",
        load_average()
    );
    println!(
        "parameters:  sessions={} concurrency={} accounts={} scram_iterations=4096 (default) \
         scram_cache={} RLIMIT_NOFILE={fds} build={}",
        args.sessions,
        args.concurrency,
        args.accounts,
        args.scram_cache,
        build_profile()
    );

    // Production logging (info): the test default logs every bind at debug.
    let node = TestNode::start_logging("", "info");
    let server = node.pid().context("the node is running")?;
    let configs: Vec<ClientConfig> = (0..args.accounts)
        .map(|i| {
            let localpart = format!("bench{i}");
            node.add_user(&localpart, PASSWORD);
            node.client_config(&localpart, PASSWORD)
        })
        .collect();
    std::thread::sleep(SETTLE);
    let rss_before = rss_bytes(server)?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let self_cpu_before = cpu_ticks("self")?;
    let server_cpu_before = cpu_ticks(&server.to_string())?;
    let started = Instant::now();
    let outcome = runtime.block_on(login_all(Arc::new(configs), &args));
    let elapsed = started.elapsed();
    let self_cpu = cpu_ticks("self")? - self_cpu_before;
    let server_cpu = cpu_ticks(&server.to_string())? - server_cpu_before;

    if let Some(error) = &outcome.first_error {
        println!(
            "FAILED LOGINS: {} of {} (first: {error})",
            outcome.failures, args.sessions
        );
    }
    let established = outcome.clients.len();
    if established == 0 {
        bail!("no session was established:\n{}", node.log());
    }

    std::thread::sleep(SETTLE);
    let rss_idle = rss_bytes(server)?;
    let connections = gauge(&node.metrics(), "vomesh_c2s_connections");

    let mut latencies = outcome.latencies;
    latencies.sort_unstable();
    let per_session_ms = |ticks: u64| ticks as f64 * 1000.0 / tick as f64 / established as f64;
    let kib = |bytes: u64| bytes as f64 / 1024.0;

    println!();
    println!("{:<44} {:>12}", "measure", "value");
    println!("{:<44} {:>12}", "sessions established", established);
    println!(
        "{:<44} {:>12}",
        "server's c2s connections (metric, idle)",
        connections.map_or("?".into(), |c| format!("{c}"))
    );
    println!("{:<44} {:>12.2}", "wall time (s)", elapsed.as_secs_f64());
    println!(
        "{:<44} {:>12.0}",
        "sessions/s",
        established as f64 / elapsed.as_secs_f64()
    );
    for (name, q) in [("p50", 0.50), ("p99", 0.99), ("max", 1.0)] {
        println!(
            "{:<44} {:>12.1}",
            format!("login latency {name} (ms)"),
            percentile(&latencies, q).as_secs_f64() * 1000.0
        );
    }
    println!(
        "{:<44} {:>12.2}",
        "server CPU per session (ms)",
        per_session_ms(server_cpu)
    );
    println!(
        "{:<44} {:>12.2}",
        "load generator CPU per session (ms)",
        per_session_ms(self_cpu)
    );
    println!(
        "{:<44} {:>12.0}",
        "server RSS before any client (KiB)",
        kib(rss_before)
    );
    println!(
        "{:<44} {:>12.0}",
        "server RSS, all sessions idle (KiB)",
        kib(rss_idle)
    );
    println!(
        "{:<44} {:>12.1}",
        "server RSS per idle session (KiB)",
        kib(rss_idle.saturating_sub(rss_before)) / established as f64
    );

    let closed = runtime.block_on(close_all(outcome.clients));
    std::thread::sleep(SETTLE);
    let rss_after = rss_bytes(server)?;
    let connections_after = gauge(&node.metrics(), "vomesh_c2s_connections");
    println!(
        "{:<44} {:>12}",
        "server's c2s connections after closing",
        connections_after.map_or("?".into(), |c| format!("{c}"))
    );
    // glibc keeps freed heap for reuse, so this stays near the idle figure
    // even when nothing leaks.
    println!(
        "{:<44} {:>12.0}",
        "server RSS after closing them (KiB)",
        kib(rss_after)
    );
    if closed < established {
        println!("(only {closed} of {established} sessions closed cleanly)");
    }
    Ok(())
}

struct Outcome {
    clients: Vec<Client>,
    latencies: Vec<Duration>,
    failures: usize,
    first_error: Option<ClientError>,
}

/// Runs `args.sessions` logins, `args.concurrency` at a time; the sessions
/// stay open in the returned clients.
async fn login_all(configs: Arc<Vec<ClientConfig>>, args: &Args) -> Outcome {
    let next = Arc::new(AtomicUsize::new(0));
    let sessions = args.sessions;
    let cache = args.scram_cache.then(|| ScramCache::new(configs.len()));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency.min(sessions) {
        let next = next.clone();
        let configs = configs.clone();
        let cache = cache.clone();
        tasks.spawn(async move {
            let mut outcome = Outcome {
                clients: Vec::new(),
                latencies: Vec::new(),
                failures: 0,
                first_error: None,
            };
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= sessions {
                    return outcome;
                }
                let started = Instant::now();
                let config = &configs[index % configs.len()];
                match Client::connect_with(config, cache.as_ref()).await {
                    Ok(client) => {
                        outcome.latencies.push(started.elapsed());
                        outcome.clients.push(client);
                    }
                    Err(error) => {
                        outcome.failures += 1;
                        outcome.first_error.get_or_insert(error);
                    }
                }
            }
        });
    }
    let mut all = Outcome {
        clients: Vec::with_capacity(sessions),
        latencies: Vec::with_capacity(sessions),
        failures: 0,
        first_error: None,
    };
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(mut part) => {
                all.clients.append(&mut part.clients);
                all.latencies.append(&mut part.latencies);
                all.failures += part.failures;
                if all.first_error.is_none() {
                    all.first_error = part.first_error;
                }
            }
            Err(error) => panic!("a connector task failed: {error}"),
        }
    }
    all
}

/// Closes every session politely; returns how many closed cleanly.
async fn close_all(clients: Vec<Client>) -> usize {
    let mut tasks = tokio::task::JoinSet::new();
    for client in clients {
        tasks.spawn(tokio::time::timeout(CLOSE_TIMEOUT, client.close()));
    }
    let mut closed = 0;
    while let Some(joined) = tasks.join_next().await {
        if matches!(joined, Ok(Ok(Ok(())))) {
            closed += 1;
        }
    }
    closed
}
