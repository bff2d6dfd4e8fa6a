//! `mesh_bench`: the figures of the pubsub service and of the mesh, measured
//! on real `vomesh serve` processes (the binary of this build profile, so
//! run it with `--release`) through the project's own client.
//!
//! ```text
//! cargo run --release -p vomesh-tests --bin mesh_bench -- [--subscribers 1000] [--seconds 5]
//! cargo run --release -p vomesh-tests --bin mesh_bench -- --quick
//! ```
//!
//! Part 1, one node with many subscribers (one process, one monotonic
//! clock: a latency is the instant a subscriber's session parsed the
//! notification minus the instant before its publish IQ was written):
//! - paced: one publisher publishes `--paced-events` items of
//!   `--single-payload-bytes` at `--rate` per second, each waiting for its
//!   acknowledgement; every subscriber's publish→notification latency;
//! - burst: the publisher publishes `--burst-events` items as fast as they
//!   are acknowledged; notifications per second is every delivery of the
//!   burst divided by the time from its first publish to the last delivery.
//!   The burst stays below the server's per-connection outbound queue
//!   (`max_outbound_stanzas`, 1024) so that no subscriber is disconnected as
//!   a slow consumer merely because this process parses slower than the
//!   server writes;
//! - every subscriber must receive every item exactly once: missing and
//!   duplicate deliveries are counted (and must be 0).
//!
//! Subscribers are sessions of `--accounts` accounts in turn, each
//! subscribed with its full JID (XEP-0060 §6.1), so each session is one
//! subscription and the server builds one notification head per session.
//!
//! Part 2, a three-node mesh on loopback (`TestCluster`):
//! - for 1 KiB and 5 KiB payloads and 1 and 64 publishers, the publishers
//!   (sessions at one follower site) publish for `--seconds`, each waiting
//!   for its acknowledgement before the next publish; acknowledged
//!   publishes per second, publish→ack latency, and publish→notification
//!   latency at a subscriber connected to the *other* follower (so the
//!   notification crossed the mesh: forwarded to the leader, committed,
//!   applied at a third site); each row also shows the CPU time the three
//!   nodes used and how long their threads waited for a CPU, after a line
//!   with the same figures for two idle seconds;
//! - fail-over: publishers at a follower publish in a loop (each attempt
//!   abandoned after `ATTEMPT_TIMEOUT`; `FAILOVER_SESSIONS` sessions started
//!   staggered, so an attempt starts every 50 ms even while they all wait),
//!   the leader is killed with SIGKILL,
//!   and the time from the kill to the first acknowledged publish *sent
//!   after* the kill is measured; the killed node is restarted between
//!   trials.
//!
//! The load generator shares the machine's cores with the nodes: its CPU
//! time and the server's are printed with the burst figures, with the time
//! their threads were runnable but waited for a CPU (`/proc/*/schedstat`):
//! when that wait exceeds the CPU time, the figures measure the machine's
//! other load more than vomesh. The load average at the start is printed
//! too. Nodes log at `info`, as in production. `VOMESH_BIN` pins
//! the server binary.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use tokio::task::JoinHandle;
use vomesh_broker::client::{Client, ClientConfig, ClientError, ScramCache};
use vomesh_broker::xml::Element;
use vomesh_broker::xmpp::ns;
use vomesh_tests::cluster::TestCluster;
use vomesh_tests::measure::{
    build_profile, clock_ticks_per_second, cpu_ticks, ensure_fd_limit, gauge, load_average,
    machine, millis, percentile, run_queue_wait,
};
use vomesh_tests::node::{DOMAIN, TestNode};

const PUBSUB: &str = "http://jabber.org/protocol/pubsub";
const EVENT: &str = "http://jabber.org/protocol/pubsub#event";
const PASSWORD: &str = "bench-password";
/// The production log level (test nodes log at debug by default).
const LOG_FILTER: &str = "info";
/// Logins in flight at once while the subscribers connect.
const LOGIN_CONCURRENCY: usize = 32;
/// Descriptors beyond one per session (listeners, stores, stdio).
const SPARE_FDS: u64 = 256;
/// How long the last notifications of a phase may take to arrive.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// A fail-over publish attempt is abandoned after this long.
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(500);
/// Publishing sessions of a fail-over trial, started staggered over one
/// attempt timeout so that the recovery is resolved to
/// `ATTEMPT_TIMEOUT / FAILOVER_SESSIONS`, not to a whole timeout.
const FAILOVER_SESSIONS: usize = 10;
/// Pause after an error answer, so a node without a leader is not spun on.
const RETRY_PAUSE: Duration = Duration::from_millis(20);
/// Steady publishing before the leader is killed.
const BEFORE_KILL: Duration = Duration::from_secs(1);
/// How long the mesh's idle CPU use is measured.
const IDLE_WINDOW: Duration = Duration::from_secs(2);
/// How often the fail-over trial asks the publishing site for its leader.
const STATUS_POLL: Duration = Duration::from_millis(10);
/// The longest a fail-over trial waits for a publish to succeed.
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(30);
const KIB: usize = 1024;

#[derive(Debug, Parser)]
#[command(
    about = "Pubsub latency and delivery rate of one node; throughput, latency and \
                   fail-over time of a three-node mesh"
)]
struct Args {
    /// Subscriber sessions on the single node.
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Accounts the subscriber sessions use in turn.
    #[arg(long, default_value_t = 20)]
    accounts: usize,
    /// Payload size of the single-node runs, in bytes.
    #[arg(long, default_value_t = 2048)]
    single_payload_bytes: usize,
    /// Publishes per second of the paced run.
    #[arg(long, default_value_t = 20)]
    rate: u32,
    /// Items of the paced run.
    #[arg(long, default_value_t = 200)]
    paced_events: usize,
    /// Items of the burst run (keep below the outbound queue of 1024).
    #[arg(long, default_value_t = 300)]
    burst_events: usize,
    /// Seconds each mesh throughput run publishes.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Concurrent publishers of the mesh runs.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 64])]
    publishers: Vec<usize>,
    /// Payload sizes of the mesh runs, in bytes.
    #[arg(long, value_delimiter = ',', default_values_t = [KIB, 5 * KIB])]
    payloads: Vec<usize>,
    /// Leader kills measured.
    #[arg(long, default_value_t = 3)]
    failovers: usize,
    /// A smoke run in well under a minute (100 subscribers, short runs,
    /// one fail-over).
    #[arg(long)]
    quick: bool,
    /// Skip part 1 (single node).
    #[arg(long)]
    no_single: bool,
    /// Skip part 2 (mesh).
    #[arg(long)]
    no_mesh: bool,
}

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.quick {
        args.subscribers = 100;
        args.accounts = 5;
        args.paced_events = 40;
        args.burst_events = 100;
        args.seconds = 1;
        args.failovers = 1;
    }
    if args.subscribers == 0
        || args.accounts == 0
        || args.rate == 0
        || args.paced_events == 0
        || args.burst_events == 0
        || args.seconds == 0
        || args.publishers.contains(&0)
    {
        bail!("counts, rates and durations must be greater than 0");
    }
    let most_publishers = args.publishers.iter().copied().max().unwrap_or(1);
    let fds = ensure_fd_limit((args.subscribers + most_publishers) as u64 + SPARE_FDS)?;

    println!("mesh_bench: real vomesh nodes, the project's client, one process and clock");
    println!("machine:     {}", machine());
    println!(
        "load avg:    {} (before start; the cores are shared)",
        load_average()
    );
    println!("build:       {} RLIMIT_NOFILE={fds}", build_profile());

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if !args.no_single {
        runtime.block_on(single_node(&args))?;
    }
    if !args.no_mesh {
        runtime.block_on(mesh(&args))?;
    }
    Ok(())
}

// ---------------------------------------------------------------- part 1

async fn single_node(args: &Args) -> anyhow::Result<()> {
    println!();
    println!(
        "== 1. one node: {} subscriber sessions ({} accounts, full-JID subscriptions), \
         {} B payloads",
        args.subscribers, args.accounts, args.single_payload_bytes
    );
    println!(
        "   paced: {} items at {}/s (so {} notifications/s to write); burst: {} items as fast \
         as acknowledged",
        args.paced_events,
        args.rate,
        args.rate as usize * args.subscribers,
        args.burst_events
    );
    let node = TestNode::start_logging("", LOG_FILTER);
    let server = node.pid().context("the node is running")?.to_string();
    node.add_user("publisher", PASSWORD);
    let configs: Vec<ClientConfig> = (0..args.accounts)
        .map(|i| {
            let localpart = format!("sub{i}");
            node.add_user(&localpart, PASSWORD);
            node.client_config(&localpart, PASSWORD)
        })
        .collect();
    let mut publisher = Client::connect(&node.client_config("publisher", PASSWORD)).await?;
    create_node(&mut publisher, "bench").await?;

    let started = Instant::now();
    let subscribers = connect_subscribers(&configs, args.subscribers, "bench").await?;
    println!(
        "   {} sessions logged in and subscribed in {:.1} s",
        subscribers.len(),
        started.elapsed().as_secs_f64()
    );
    let delivered = Arc::new(AtomicUsize::new(0));
    let receivers: Vec<Receiver> = subscribers
        .into_iter()
        .map(|client| Receiver::spawn(client, delivered.clone()))
        .collect();
    let payload = payload_of(args.single_payload_bytes);

    // Paced: latency under a steady, moderate rate.
    let mut paced_sent = Vec::with_capacity(args.paced_events);
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / args.rate);
    for i in 0..args.paced_events {
        ticker.tick().await;
        let sent = Instant::now();
        publish(&mut publisher, "bench", &format!("p{i}"), &payload).await?;
        paced_sent.push(sent);
    }
    let expected = args.paced_events * receivers.len();
    wait_for(&delivered, expected).await;

    // Burst: as fast as acknowledged.
    let ticks = clock_ticks_per_second();
    let server_cpu_before = cpu_ticks(&server)?;
    let self_cpu_before = cpu_ticks("self")?;
    let server_wait_before = run_queue_wait(&server)?;
    let self_wait_before = run_queue_wait("self")?;
    let notifications_before = gauge(&node.metrics(), "vomesh_pubsub_notifications_total");
    let burst_started = Instant::now();
    for i in 0..args.burst_events {
        publish(&mut publisher, "bench", &format!("b{i}"), &payload).await?;
    }
    let burst_acked = burst_started.elapsed();
    wait_for(&delivered, expected + args.burst_events * receivers.len()).await;
    let server_cpu = cpu_ticks(&server)? - server_cpu_before;
    let self_cpu = cpu_ticks("self")? - self_cpu_before;
    let server_wait = run_queue_wait(&server)?.saturating_sub(server_wait_before);
    let self_wait = run_queue_wait("self")?.saturating_sub(self_wait_before);
    let notifications_after = gauge(&node.metrics(), "vomesh_pubsub_notifications_total");

    let mut latencies = Vec::with_capacity(expected);
    let mut burst_last = burst_started;
    let mut burst_deliveries = 0usize;
    let mut missing = 0usize;
    let mut duplicates = 0usize;
    let mut lost_sessions = 0usize;
    for receiver in receivers {
        let (log, error) = receiver.stop().await;
        lost_sessions += usize::from(error.is_some());
        let mut seen = HashSet::with_capacity(log.len());
        for (id, at) in &log {
            if !seen.insert(id.as_str()) {
                duplicates += 1;
                continue;
            }
            if let Some(i) = id.strip_prefix('p').and_then(|i| i.parse::<usize>().ok()) {
                if let Some(sent) = paced_sent.get(i) {
                    latencies.push(at.saturating_duration_since(*sent));
                }
            } else if id.starts_with('b') {
                burst_deliveries += 1;
                burst_last = burst_last.max(*at);
            }
        }
        missing += (args.paced_events + args.burst_events).saturating_sub(seen.len());
    }
    latencies.sort_unstable();
    let burst_wall = burst_last.saturating_duration_since(burst_started);
    let per_notification_us =
        |cpu_ticks: u64| cpu_ticks as f64 * 1e6 / ticks as f64 / burst_deliveries.max(1) as f64;

    println!();
    println!("{:<52} {:>12}", "measure (one node)", "value");
    row(
        "publish→notification p50 (ms), paced",
        millis(percentile(&latencies, 0.5)),
    );
    row(
        "publish→notification p99 (ms), paced",
        millis(percentile(&latencies, 0.99)),
    );
    row(
        "publish→notification max (ms), paced",
        millis(percentile(&latencies, 1.0)),
    );
    row(
        "burst: publishes acknowledged per second",
        args.burst_events as f64 / burst_acked.as_secs_f64(),
    );
    row(
        "burst: notifications per second (all subscribers)",
        burst_deliveries as f64 / burst_wall.as_secs_f64(),
    );
    row(
        "burst: first publish → last delivery (s)",
        burst_wall.as_secs_f64(),
    );
    if let (Some(before), Some(after)) = (notifications_before, notifications_after) {
        row("burst: server's notifications metric delta", after - before);
    }
    row(
        "burst: server CPU per notification (µs)",
        per_notification_us(server_cpu),
    );
    row(
        "burst: load generator CPU per notification (µs)",
        per_notification_us(self_cpu),
    );
    row(
        "burst: server CPU time (s)",
        server_cpu as f64 / ticks as f64,
    );
    row(
        "burst: server time runnable, waiting for a CPU (s)",
        server_wait.as_secs_f64(),
    );
    row(
        "burst: load generator CPU time (s)",
        self_cpu as f64 / ticks as f64,
    );
    row(
        "burst: load generator waiting for a CPU (s)",
        self_wait.as_secs_f64(),
    );
    row("missing deliveries (must be 0)", missing as f64);
    row("duplicate deliveries (must be 0)", duplicates as f64);
    row("subscriber sessions lost", lost_sessions as f64);
    let _ = publisher.close().await;
    Ok(())
}

fn row(name: &str, value: f64) {
    if value.fract() == 0.0 && value.abs() < 1e12 {
        println!("{name:<52} {value:>12.0}");
    } else {
        println!("{name:<52} {value:>12.2}");
    }
}

/// Logs `count` sessions in (accounts of `configs` in turn), each
/// subscribing its full JID to `node`.
async fn connect_subscribers(
    configs: &[ClientConfig],
    count: usize,
    node: &str,
) -> anyhow::Result<Vec<Client>> {
    let cache = ScramCache::new(configs.len());
    let configs = Arc::new(configs.to_vec());
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..LOGIN_CONCURRENCY.min(count) {
        let (configs, next, cache, node) = (
            configs.clone(),
            next.clone(),
            cache.clone(),
            node.to_owned(),
        );
        tasks.spawn(async move {
            let mut clients = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= count {
                    return anyhow::Ok(clients);
                }
                let config = &configs[index % configs.len()];
                let mut client = Client::connect_with(config, Some(&cache)).await?;
                subscribe(&mut client, &node).await?;
                clients.push(client);
            }
        });
    }
    let mut all = Vec::with_capacity(count);
    while let Some(joined) = tasks.join_next().await {
        all.append(&mut joined??);
    }
    Ok(all)
}

// ---------------------------------------------------------------- part 2

async fn mesh(args: &Args) -> anyhow::Result<()> {
    println!();
    println!("== 2. three-node mesh on loopback (default [mesh] timing: network = \"lan\")");
    let mut cluster = TestCluster::start_logging(3, "", LOG_FILTER);
    let leader = cluster.wait_for_leader(Duration::from_secs(30));
    let followers: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let (publish_site, listen_site) = (followers[0], followers[1]);
    println!(
        "   publishers at site {} (a follower), subscriber at site {} (the other follower), \
         leader site {}; {} s per run",
        publish_site + 1,
        listen_site + 1,
        leader + 1,
        args.seconds
    );
    cluster.nodes[publish_site].add_user("publisher", PASSWORD);
    cluster.nodes[publish_site].add_user("listener", PASSWORD);

    let cache = ScramCache::new(1);
    let publish_config = cluster.nodes[publish_site].client_config("publisher", PASSWORD);
    let most = args.publishers.iter().copied().max().unwrap_or(1);
    let mut publishers = Vec::with_capacity(most);
    for _ in 0..most {
        publishers.push(Client::connect_with(&publish_config, Some(&cache)).await?);
    }
    // The account reached the other sites when its creation was applied
    // there, a moment after it was acknowledged at the publishing site.
    let listen_config = cluster.nodes[listen_site].client_config("listener", PASSWORD);
    let listener = connect_retrying(&listen_config).await?;
    let delivered = Arc::new(AtomicUsize::new(0));
    let mut listener = Some(listener);
    let mut receiver: Option<Receiver> = None;

    // What the mesh costs with nothing to do (heartbeats, timers), the
    // floor under every row's CPU column.
    let idle_before = NodesLoad::read(&cluster)?;
    tokio::time::sleep(IDLE_WINDOW).await;
    let idle = NodesLoad::read(&cluster)?.since(&idle_before);
    println!(
        "   idle (no client activity) for {} s: the three nodes used {:.2} s CPU, \
         waited {:.2} s for a CPU",
        IDLE_WINDOW.as_secs(),
        idle.cpu.as_secs_f64(),
        idle.waited.as_secs_f64()
    );

    let mut rows = Vec::new();
    for &payload_bytes in &args.payloads {
        for &count in &args.publishers {
            let node = format!("mesh-{payload_bytes}-{count}");
            create_node(&mut publishers[0], &node).await?;
            // Reads and the checks of a write are served by the local
            // replica: a subscribe at another site right after the
            // creation was acknowledged may not find the node yet.
            let created = cluster.nodes[publish_site]
                .status()
                .and_then(|s| s["applied_index"].as_u64())
                .context("the publishing site's status")?;
            cluster.wait_applied(created, Duration::from_secs(10));
            // The receiver owns the listener's session: stop it to subscribe
            // to the next run's node, then hand the session back.
            let mut client = match receiver.take() {
                Some(running) => running.into_client().await?,
                None => listener.take().context("the listener's session")?,
            };
            subscribe(&mut client, &node).await?;
            let running = Receiver::spawn(client, delivered.clone());
            let baseline = delivered.load(Ordering::Relaxed);
            let payload = payload_of(payload_bytes);
            let load_before = NodesLoad::read(&cluster)?;
            let (run, back) = throughput_run(
                publishers.drain(..count).collect(),
                &node,
                &payload,
                Duration::from_secs(args.seconds),
            )
            .await?;
            let mut rest = std::mem::take(&mut publishers);
            publishers = back;
            publishers.append(&mut rest);
            let load = NodesLoad::read(&cluster)?.since(&load_before);
            wait_for(&delivered, baseline + run.acks.len()).await;
            let log = running.snapshot();
            receiver = Some(running);
            rows.push(MeshRow::from_run(payload_bytes, count, &run, &log, load));
        }
    }
    println!();
    println!(
        "{:>8} {:>6} {:>10} {:>9} {:>9} {:>10} {:>10} {:>8} {:>7} {:>9} {:>9}",
        "payload",
        "pubs",
        "acked/s",
        "ack p50",
        "ack p99",
        "notify p50",
        "notify p99",
        "missing",
        "errors",
        "nodes cpu",
        "cpu wait"
    );
    for r in &rows {
        println!(
            "{:>6}Ki {:>6} {:>10.0} {:>7.1}ms {:>7.1}ms {:>8.1}ms {:>8.1}ms {:>8} {:>7} {:>8.2}s {:>8.2}s",
            r.payload_bytes / KIB,
            r.publishers,
            r.acks_per_second,
            r.ack_p50_ms,
            r.ack_p99_ms,
            r.notify_p50_ms,
            r.notify_p99_ms,
            r.missing,
            r.errors,
            r.load.cpu.as_secs_f64(),
            r.load.waited.as_secs_f64()
        );
    }
    if let Some(running) = receiver {
        let _ = running.into_client().await;
    }
    drop(publishers);

    println!();
    println!(
        "   fail-over: {} sessions publish in a loop at a follower, staggered (attempt timeout \
         {} ms, {} ms pause after an error answer), kill -9 the leader",
        FAILOVER_SESSIONS,
        ATTEMPT_TIMEOUT.as_millis(),
        RETRY_PAUSE.as_millis()
    );
    println!(
        "{:>6} {:>7} {:>10} {:>11} {:>24} {:>20} {:>16}",
        "trial",
        "killed",
        "publisher",
        "new leader",
        "kill→leader known (ms)",
        "kill→first ack (ms)",
        "failed attempts"
    );
    let mut recoveries = Vec::new();
    for trial in 1..=args.failovers {
        let outcome = failover_trial(&mut cluster, trial).await?;
        println!(
            "{:>6} {:>7} {:>10} {:>11} {:>24} {:>20.0} {:>16}",
            trial,
            outcome.killed + 1,
            outcome.publisher + 1,
            outcome
                .new_leader
                .map_or("?".into(), |l| (l + 1).to_string()),
            outcome
                .leader_seen
                .map_or("?".into(), |seen| format!("{:.0}", millis(seen))),
            millis(outcome.recovery),
            outcome.failed_attempts
        );
        recoveries.push(outcome.recovery);
    }
    recoveries.sort_unstable();
    if let (Some(low), Some(high)) = (recoveries.first(), recoveries.last()) {
        println!(
            "   kill→first acknowledged publish: min {:.0} ms, median {:.0} ms, max {:.0} ms",
            millis(*low),
            millis(percentile(&recoveries, 0.5)),
            millis(*high)
        );
    }
    Ok(())
}

struct Ack {
    id: String,
    sent: Instant,
    acked: Instant,
}

struct Run {
    acks: Vec<Ack>,
    errors: usize,
    elapsed: Duration,
}

struct MeshRow {
    payload_bytes: usize,
    publishers: usize,
    acks_per_second: f64,
    ack_p50_ms: f64,
    ack_p99_ms: f64,
    notify_p50_ms: f64,
    notify_p99_ms: f64,
    missing: usize,
    errors: usize,
    load: NodesLoad,
}

/// CPU time of the three nodes together, and the time their threads were
/// runnable but waited for a CPU (the machine's other load).
#[derive(Debug, Clone, Copy)]
struct NodesLoad {
    cpu: Duration,
    waited: Duration,
}

impl NodesLoad {
    fn read(cluster: &TestCluster) -> anyhow::Result<NodesLoad> {
        let tick = clock_ticks_per_second();
        let mut load = NodesLoad {
            cpu: Duration::ZERO,
            waited: Duration::ZERO,
        };
        for pid in cluster.nodes.iter().filter_map(TestNode::pid) {
            let pid = pid.to_string();
            load.cpu += Duration::from_secs_f64(cpu_ticks(&pid)? as f64 / tick as f64);
            load.waited += run_queue_wait(&pid)?;
        }
        Ok(load)
    }

    fn since(&self, before: &NodesLoad) -> NodesLoad {
        NodesLoad {
            cpu: self.cpu.saturating_sub(before.cpu),
            waited: self.waited.saturating_sub(before.waited),
        }
    }
}

impl MeshRow {
    fn from_run(
        payload_bytes: usize,
        publishers: usize,
        run: &Run,
        log: &[(String, Instant)],
        load: NodesLoad,
    ) -> MeshRow {
        let mut acked: Vec<Duration> = run.acks.iter().map(|a| a.acked - a.sent).collect();
        acked.sort_unstable();
        let sent: HashMap<&str, Instant> =
            run.acks.iter().map(|a| (a.id.as_str(), a.sent)).collect();
        let mut notified: Vec<Duration> = log
            .iter()
            .filter_map(|(id, at)| Some(at.saturating_duration_since(*sent.get(id.as_str())?)))
            .collect();
        notified.sort_unstable();
        let received: HashSet<&str> = log.iter().map(|(id, _)| id.as_str()).collect();
        MeshRow {
            payload_bytes,
            publishers,
            acks_per_second: run.acks.len() as f64 / run.elapsed.as_secs_f64(),
            ack_p50_ms: millis(percentile(&acked, 0.5)),
            ack_p99_ms: millis(percentile(&acked, 0.99)),
            notify_p50_ms: millis(percentile(&notified, 0.5)),
            notify_p99_ms: millis(percentile(&notified, 0.99)),
            missing: sent.keys().filter(|id| !received.contains(*id)).count(),
            errors: run.errors,
            load,
        }
    }
}

/// Each publisher publishes until `duration` is over, waiting for every
/// acknowledgement before the next publish. Returns the run and the
/// publishers' sessions.
async fn throughput_run(
    publishers: Vec<Client>,
    node: &str,
    payload: &Element,
    duration: Duration,
) -> anyhow::Result<(Run, Vec<Client>)> {
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for (p, mut client) in publishers.into_iter().enumerate() {
        let (node, payload) = (node.to_owned(), payload.clone());
        tasks.spawn(async move {
            let mut acks = Vec::new();
            let mut errors = 0;
            let mut seq = 0u64;
            while Instant::now() < deadline {
                seq += 1;
                let id = format!("{node}-{p}-{seq}");
                let sent = Instant::now();
                match publish(&mut client, &node, &id, &payload).await {
                    Ok(()) => acks.push(Ack {
                        id,
                        sent,
                        acked: Instant::now(),
                    }),
                    Err(PublishError::Refused(_)) => errors += 1,
                    Err(PublishError::Client(error)) => return Err(error.into()),
                }
            }
            anyhow::Ok((client, acks, errors))
        });
    }
    let mut run = Run {
        acks: Vec::new(),
        errors: 0,
        elapsed: Duration::ZERO,
    };
    let mut clients = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (client, mut acks, errors) = joined??;
        clients.push(client);
        run.acks.append(&mut acks);
        run.errors += errors;
    }
    let last = run.acks.iter().map(|a| a.acked).max().unwrap_or(started);
    run.elapsed = last - started;
    Ok((run, clients))
}

struct Failover {
    killed: usize,
    publisher: usize,
    new_leader: Option<usize>,
    /// Kill → the publishing site's status names another leader.
    leader_seen: Option<Duration>,
    recovery: Duration,
    failed_attempts: usize,
}

/// Publishes in a loop at a follower, kills the leader, and measures until
/// a publish sent after the kill is acknowledged; then restarts the killed
/// node and waits for an agreed leader.
async fn failover_trial(cluster: &mut TestCluster, trial: usize) -> anyhow::Result<Failover> {
    let leader = cluster.wait_for_leader(Duration::from_secs(30));
    let site = (0..cluster.nodes.len())
        .find(|&i| i != leader)
        .context("a follower")?;
    let config = cluster.nodes[site].client_config("publisher", PASSWORD);
    let mut client = Client::connect(&config).await?;
    let node = format!("failover-{trial}");
    create_node(&mut client, &node).await?;
    let payload = payload_of(KIB);

    // Attempts in order: (sent, answered or abandoned, acknowledged?).
    let attempts: Arc<Mutex<Vec<(Instant, Instant, bool)>>> = Arc::default();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut loops = tokio::task::JoinSet::new();
    let mut creator = Some(client);
    for session in 0..FAILOVER_SESSIONS {
        let mut client = match creator.take() {
            Some(client) => client,
            None => Client::connect(&config).await?,
        };
        let (attempts, mut stopped) = (attempts.clone(), stopped.clone());
        let (node, payload, config) = (node.clone(), payload.clone(), config.clone());
        // Staggered starts: some attempt is always less than
        // ATTEMPT_TIMEOUT / FAILOVER_SESSIONS old.
        let offset = ATTEMPT_TIMEOUT * session as u32 / FAILOVER_SESSIONS as u32;
        loops.spawn(async move {
            tokio::time::sleep(offset).await;
            let mut seq = 0u64;
            while !*stopped.borrow() {
                seq += 1;
                let sent = Instant::now();
                let id = format!("f{session}-{seq}");
                let outcome = tokio::select! {
                    _ = stopped.changed() => return anyhow::Ok(()),
                    outcome = tokio::time::timeout(
                        ATTEMPT_TIMEOUT,
                        publish(&mut client, &node, &id, &payload),
                    ) => outcome,
                };
                let ok = match outcome {
                    Ok(Ok(())) => true,
                    Ok(Err(PublishError::Refused(_))) => {
                        tokio::time::sleep(RETRY_PAUSE).await;
                        false
                    }
                    Ok(Err(PublishError::Client(_))) => {
                        // The stream broke (perhaps an abandoned attempt was
                        // cut mid-write): a new session.
                        client = Client::connect(&config).await?;
                        false
                    }
                    Err(_) => false,
                };
                lock(&attempts).push((sent, Instant::now(), ok));
            }
            anyhow::Ok(())
        });
    }
    tokio::time::sleep(BEFORE_KILL).await;
    let killed_at = Instant::now();
    cluster.nodes[leader].kill9();
    let deadline = killed_at + FAILOVER_TIMEOUT;
    let mut leader_seen = None;
    let recovered = loop {
        // When the publishing site learnt of a new leader, to tell the
        // election apart from what the write path adds to it.
        if leader_seen.is_none()
            && cluster.nodes[site]
                .status()
                .and_then(|s| s["leader"].as_u64())
                .is_some_and(|id| id as usize != leader + 1)
        {
            leader_seen = Some(Instant::now() - killed_at);
        }
        let first = lock(&attempts)
            .iter()
            .find(|(sent, _, ok)| *ok && *sent >= killed_at)
            .map(|(_, acked, _)| *acked);
        if let Some(acked) = first {
            break Some(acked);
        }
        if Instant::now() > deadline {
            break None;
        }
        tokio::time::sleep(STATUS_POLL).await;
    };
    let _ = stop.send(true);
    while let Some(joined) = loops.join_next().await {
        joined??;
    }
    let Some(first_acked) = recovered else {
        bail!("no publish succeeded within {FAILOVER_TIMEOUT:?} of the leader's kill");
    };
    let recovery = first_acked - killed_at;
    let failed_attempts = lock(&attempts)
        .iter()
        .filter(|(sent, _, ok)| *sent >= killed_at && !ok)
        .count();
    let new_leader = cluster.nodes[site]
        .status()
        .and_then(|s| s["leader"].as_u64())
        .map(|id| id as usize - 1);
    cluster.nodes[leader].restart();
    cluster.wait_for_leader(Duration::from_secs(30));
    Ok(Failover {
        killed: leader,
        publisher: site,
        new_leader,
        leader_seen,
        recovery,
        failed_attempts,
    })
}

// ---------------------------------------------------------------- shared

/// A subscriber session read by its own task, which notes the item id and
/// arrival instant of every notification.
struct Receiver {
    log: Arc<Mutex<Vec<(String, Instant)>>>,
    stop: Arc<tokio::sync::Notify>,
    task: JoinHandle<(Client, Option<ClientError>)>,
}

impl Receiver {
    fn spawn(mut client: Client, delivered: Arc<AtomicUsize>) -> Receiver {
        let log: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
        let stop = Arc::new(tokio::sync::Notify::new());
        let task = {
            let (log, stop) = (log.clone(), stop.clone());
            tokio::spawn(async move {
                loop {
                    let stanza = tokio::select! {
                        _ = stop.notified() => return (client, None),
                        stanza = client.next_stanza() => stanza,
                    };
                    match stanza {
                        Ok(stanza) => {
                            let at = Instant::now();
                            if let Some(id) = item_id(&stanza) {
                                lock(&log).push((id.to_owned(), at));
                                delivered.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(error) => return (client, Some(error)),
                    }
                }
            })
        };
        Receiver { log, stop, task }
    }

    fn snapshot(&self) -> Vec<(String, Instant)> {
        lock(&self.log).clone()
    }

    /// Stops reading; the notifications seen and the error that ended the
    /// session early, if any.
    async fn stop(self) -> (Vec<(String, Instant)>, Option<ClientError>) {
        self.stop.notify_one();
        let error = match self.task.await {
            Ok((_, error)) => error,
            Err(join) => Some(ClientError::Protocol(join.to_string())),
        };
        let log = std::mem::take(&mut *lock(&self.log));
        (log, error)
    }

    /// Stops reading and returns the session.
    async fn into_client(self) -> anyhow::Result<Client> {
        self.stop.notify_one();
        match self.task.await? {
            (client, None) => Ok(client),
            (_, Some(error)) => Err(error.into()),
        }
    }
}

/// Waits until `counter` reaches `target` or [`DRAIN_TIMEOUT`] passed (the
/// missing ones are then counted as missing).
async fn wait_for(counter: &AtomicUsize, target: usize) {
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    while counter.load(Ordering::Relaxed) < target && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Logs in, retrying while the account may not have reached this site.
async fn connect_retrying(config: &ClientConfig) -> anyhow::Result<Client> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Client::connect(config).await {
            Ok(client) => return Ok(client),
            Err(error) if Instant::now() > deadline => return Err(error.into()),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// A payload element whose serialized form is `bytes` long (at least the
/// empty element).
fn payload_of(bytes: usize) -> Element {
    let empty = Element::new("alert", "urn:example:bench");
    let filler = bytes.saturating_sub(empty.to_xml().len());
    empty.with_text("x".repeat(filler))
}

fn pubsub_iq(child: Element) -> Element {
    Element::new("iq", ns::CLIENT)
        .with_attr("type", "set")
        .with_attr("to", format!("pubsub.{DOMAIN}"))
        .with_child(Element::new("pubsub", PUBSUB).with_child(child))
}

#[derive(Debug, thiserror::Error)]
enum PublishError {
    /// The service answered with an error.
    #[error("refused: {0}")]
    Refused(String),
    #[error(transparent)]
    Client(#[from] ClientError),
}

async fn publish(
    client: &mut Client,
    node: &str,
    id: &str,
    payload: &Element,
) -> Result<(), PublishError> {
    let answer = client
        .iq(pubsub_iq(
            Element::new("publish", PUBSUB)
                .with_attr("node", node)
                .with_child(
                    Element::new("item", PUBSUB)
                        .with_attr("id", id)
                        .with_child(payload.clone()),
                ),
        ))
        .await?;
    match answer.attr("type") {
        Some("result") => Ok(()),
        _ => Err(PublishError::Refused(answer.to_xml())),
    }
}

async fn create_node(client: &mut Client, node: &str) -> anyhow::Result<()> {
    let answer = client
        .iq(pubsub_iq(
            Element::new("create", PUBSUB).with_attr("node", node),
        ))
        .await?;
    if answer.attr("type") != Some("result") {
        bail!("creating {node} failed: {}", answer.to_xml());
    }
    Ok(())
}

/// Subscribes the session's full JID, so that this session (and no other
/// resource of the account) gets the notifications.
async fn subscribe(client: &mut Client, node: &str) -> anyhow::Result<()> {
    let jid = client.jid().to_string();
    let answer = client
        .iq(pubsub_iq(
            Element::new("subscribe", PUBSUB)
                .with_attr("node", node)
                .with_attr("jid", jid),
        ))
        .await?;
    if answer.attr("type") != Some("result") {
        bail!("subscribing to {node} failed: {}", answer.to_xml());
    }
    Ok(())
}

/// The id of the item a pubsub notification carries.
fn item_id(message: &Element) -> Option<&str> {
    message
        .child("event", EVENT)?
        .child("items", EVENT)?
        .child("item", EVENT)?
        .attr("id")
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
