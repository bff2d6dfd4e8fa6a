//! The scenarios, run in one pass against one target so that sessions are
//! established once:
//!
//! 0. `floor`: before any session, the CPU of one payload-sized write to
//!    a loopback TCP connection ([`floor`]), the kernel's share of any
//!    server's CPU per notification;
//! 1. `idle`: `sessions` logins (TCP, STARTTLS, SCRAM, bind), `concurrency`
//!    at a time: sessions per second, login latency, server CPU per login,
//!    and the server's resident memory per idle session;
//! 2. subscriptions: every session subscribes its full JID to the nodes of
//!    the scenarios below it takes part in;
//! 3. `fanout-<n>`: one node with the first n sessions subscribed, items
//!    published at a fixed rate (open loop); the last fan-out of the plan
//!    runs at the very end (a server it overwhelms keeps a backlog);
//! 4. `nodes`: `nodes` nodes with `subscribers_per_node` sessions each,
//!    items published to them in turn at a fixed rate;
//! 5. `rate`: one node with `rate_subscribers`, published as fast as
//!    acknowledged with `rate_window` IQs in flight for `rate_seconds`;
//! 6. `throughput`: `throughput_publishers` sessions each with
//!    `throughput_window` in flight, to a node without subscribers;
//! 7. `catchup`: a subscriber goes offline, `catchup_items` are published,
//!    it logs in again and retrieves them (XEP-0060 §6.5, following
//!    XEP-0059 paging when the service pages).
//!
//! Every delivery scenario counts missing and duplicate notifications per
//! (session, item) and the CPU the server and this process used per
//! notification. A scenario whose set-up fails is reported in the notes and
//! skipped; the others still run.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vomesh_broker::client::Client;
use vomesh_broker::xml::Element;

use super::figures::{Better, Report};
use super::floor;
use super::publisher::{Job, Pace, Published, publish_run};
use super::sessions::{
    DeliveryLog, Receiver, connect_many, pubsub_iq, request, subscribe, subscribe_all,
};
use super::target::{CpuMark, Target};
use super::{PUBSUB_NS, RSM_NS};
use crate::measure::{load_average, machine, millis, percentile};

/// What to run, and how big.
#[derive(Debug, Clone)]
pub struct Plan {
    pub sessions: usize,
    pub concurrency: usize,
    /// The fan-out scenarios: (subscribers, events, events per second).
    /// The last one runs after every other scenario, since a server that
    /// cannot keep up with it is left with a backlog.
    pub fanouts: Vec<(usize, usize, f64)>,
    pub nodes: usize,
    pub subscribers_per_node: usize,
    pub nodes_events: usize,
    pub nodes_rate: f64,
    pub rate_subscribers: usize,
    pub rate_window: usize,
    pub rate_seconds: f64,
    pub throughput_publishers: usize,
    pub throughput_window: usize,
    pub throughput_seconds: f64,
    pub catchup_items: usize,
    /// The item payload (a VOEvent).
    pub payload: Element,
    /// Scenarios to run, by name (`idle` always runs: it makes the
    /// sessions): `fanout`, `nodes`, `rate`, `throughput`, `catchup`.
    pub scenarios: Vec<String>,
    /// Longest time the logins, or the subscriptions, may take.
    pub phase_timeout: Duration,
    /// A scenario's notifications are awaited until none arrived for this
    /// long …
    pub drain_quiet: Duration,
    /// … or this long after the last publish.
    pub drain_max: Duration,
}

impl Plan {
    fn runs(&self, scenario: &str) -> bool {
        self.scenarios.iter().any(|s| s == scenario)
    }

    /// The pubsub nodes session `index` subscribes to.
    fn nodes_of(&self, names: &NodeNames, index: usize) -> Vec<String> {
        let mut nodes = Vec::new();
        if self.runs("fanout") {
            for (n, &(count, _, _)) in self.fanouts.iter().enumerate() {
                if index < count {
                    nodes.push(names.fanout[n].clone());
                }
            }
        }
        if self.runs("nodes") && index < self.nodes * self.subscribers_per_node {
            nodes.push(names.many[index % self.nodes].clone());
        }
        if self.runs("rate") && index < self.rate_subscribers {
            nodes.push(names.rate.clone());
        }
        nodes
    }
}

/// The run's pubsub nodes, named with a run-unique prefix so that a rerun
/// against the same server never collides with an earlier run's nodes.
struct NodeNames {
    fanout: Vec<String>,
    many: Vec<String>,
    rate: String,
    throughput: String,
    catchup: String,
}

impl NodeNames {
    fn new(plan: &Plan) -> NodeNames {
        let run = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() % 1_000_000_000);
        let name = |what: &str| format!("bench{run}-{what}");
        NodeNames {
            fanout: plan
                .fanouts
                .iter()
                .map(|(n, _, _)| name(&format!("fanout{n}")))
                .collect(),
            many: (0..plan.nodes).map(|j| name(&format!("n{j}"))).collect(),
            rate: name("rate"),
            throughput: name("throughput"),
            catchup: name("catchup"),
        }
    }
}

/// The next unused item index: every item of a run has its own, so a
/// delivery names exactly one publish.
struct ItemCounter(u32);

impl ItemCounter {
    fn take(&mut self, count: usize) -> std::ops::Range<u32> {
        let start = self.0;
        self.0 += u32::try_from(count).expect("fewer than 2^32 items");
        start..self.0
    }
}

/// Runs `plan` against `target` and returns its figures.
/// The kernel floor's connections and rounds (see [`floor`]): as many
/// connections as the first fan-out's subscribers, enough writes for the
/// CPU clock's 10 ms ticks to resolve the mean within 1 %.
const FLOOR_CONNECTIONS: usize = 1_000;
const FLOOR_ROUNDS: usize = 200;

pub async fn run(target: &Target, plan: &Plan) -> anyhow::Result<Report> {
    let mut report = Report::new(&target.label);
    report.note(format!("machine: {}", machine()));
    report.note(format!("load average at start: {}", load_average()));
    report.note(format!(
        "plan: {} sessions ({} logins at once), fan-outs (subscribers, events, per s) {:?}, \
         {} nodes × {} subscribers × {} events at {}/s, rate: {} subscribers window {} for {} s, \
         throughput: {} publishers × window {} for {} s, catch-up {} items, payload {} B",
        plan.sessions,
        plan.concurrency,
        plan.fanouts,
        plan.nodes,
        plan.subscribers_per_node,
        plan.nodes_events,
        plan.nodes_rate,
        plan.rate_subscribers,
        plan.rate_window,
        plan.rate_seconds,
        plan.throughput_publishers,
        plan.throughput_window,
        plan.throughput_seconds,
        plan.catchup_items,
        plan.payload.to_xml().len()
    ));
    if plan.runs("floor") {
        // Before any session exists, so that nothing else runs meanwhile.
        let payload_bytes = plan.payload.to_xml().len();
        let write = tokio::task::spawn_blocking(move || {
            floor::tcp_write_cpu(FLOOR_CONNECTIONS, payload_bytes, FLOOR_ROUNDS)
        })
        .await??;
        report.add(
            "floor",
            "CPU of one loopback TCP write of the payload, any server (µs)",
            write.as_secs_f64() * 1e6,
            Better::Neither,
        );
    }
    let names = NodeNames::new(plan);
    let mut publisher = Client::connect(&target.publisher()).await?;
    let mut all_nodes: Vec<&String> = names.fanout.iter().chain(&names.many).collect();
    all_nodes.extend([&names.rate, &names.throughput, &names.catchup]);
    let max_items = plan.catchup_items.max(1000);
    for node in all_nodes {
        create_node(target, &mut publisher, node, max_items, &mut report).await?;
    }

    // 1. Idle sessions.
    let rss_before = target.server_rss();
    let cpu = CpuMark::now(target);
    let logins = connect_many(
        target,
        0..plan.sessions,
        plan.concurrency,
        Instant::now() + plan.phase_timeout,
    )
    .await;
    let (server_cpu, own_cpu) = cpu.elapsed(target);
    let established = logins.clients.len();
    if let Some(error) = &logins.first_error {
        report.note(format!(
            "idle: {} of {} logins failed, first: {error}",
            logins.failures, plan.sessions
        ));
    }
    let mut latencies = logins.latencies;
    latencies.sort_unstable();
    let per_login = |cpu: Duration| per_operation_us(cpu, established);
    report.add(
        "idle",
        "sessions established",
        established as f64,
        Better::Higher,
    );
    report.add(
        "idle",
        "sessions/s (TLS + SASL + bind)",
        established as f64 / logins.elapsed.as_secs_f64(),
        Better::Higher,
    );
    report.add(
        "idle",
        "login p50 (ms)",
        millis(percentile(&latencies, 0.5)),
        Better::Lower,
    );
    report.add(
        "idle",
        "login p99 (ms)",
        millis(percentile(&latencies, 0.99)),
        Better::Lower,
    );
    report.add(
        "idle",
        "server CPU per login (µs)",
        per_login(server_cpu),
        Better::Lower,
    );
    report.add(
        "idle",
        "load generator CPU per login (µs)",
        per_login(own_cpu),
        Better::Neither,
    );
    // Let the server finish its bookkeeping before its memory is read.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_idle = target.server_rss();
    report.add(
        "idle",
        "server RSS per idle session (KiB)",
        rss_idle.saturating_sub(rss_before) as f64 / 1024.0 / established.max(1) as f64,
        Better::Lower,
    );

    // 2. Subscriptions.
    let started = Instant::now();
    let cpu = CpuMark::now(target);
    let (clients, failures, first_error) = subscribe_all(
        target,
        logins.clients,
        |index| plan.nodes_of(&names, index),
        plan.concurrency,
        Instant::now() + plan.phase_timeout,
    )
    .await;
    let (server_cpu, _) = cpu.elapsed(target);
    let subscriptions: usize = clients
        .iter()
        .map(|(index, _)| plan.nodes_of(&names, *index).len())
        .sum();
    if let Some(error) = first_error {
        report.note(format!(
            "subscribe: {failures} of {subscriptions} subscriptions failed, first: {error}"
        ));
    }
    report.add(
        "subscribe",
        "subscriptions/s",
        (subscriptions - failures) as f64 / started.elapsed().as_secs_f64(),
        Better::Higher,
    );
    report.add(
        "subscribe",
        "server CPU per subscription (µs)",
        server_cpu.as_secs_f64() * 1e6 / subscriptions.max(1) as f64,
        Better::Lower,
    );
    // Subscribers of each node, among the sessions that exist.
    let mut subscribers: HashMap<String, usize> = HashMap::new();
    for (index, _) in &clients {
        for node in plan.nodes_of(&names, *index) {
            *subscribers.entry(node).or_default() += 1;
        }
    }
    let log = Arc::new(DeliveryLog::default());
    let receivers: Vec<Receiver> = clients
        .into_iter()
        .map(|(index, client)| Receiver::spawn(index, client, log.clone()))
        .collect();
    let mut items = ItemCounter(0);
    let deliveries = Deliveries {
        target,
        plan,
        log: &log,
        receivers: &receivers,
        subscribers: &subscribers,
    };

    // 3. Fan-out of one node (all but the last).
    let fanout = |n: usize, items: &mut ItemCounter| {
        let (count, events, per_second) = plan.fanouts[n];
        let job = Job {
            nodes: std::slice::from_ref(&names.fanout[n]),
            items: items.take(events),
            payload: &plan.payload,
            pace: Pace::Rate {
                per_second,
                window: events,
            },
            stop: far_future(),
            answer_timeout: plan.drain_max,
        };
        (format!("fanout-{count}"), job)
    };
    let fanouts = if plan.runs("fanout") {
        plan.fanouts.len()
    } else {
        0
    };
    for n in 0..fanouts.saturating_sub(1) {
        let (scenario, job) = fanout(n, &mut items);
        deliveries
            .measure(&scenario, &mut publisher, job, &mut report)
            .await?;
    }
    // 4. Many nodes.
    if plan.runs("nodes") {
        let job = Job {
            nodes: &names.many,
            items: items.take(plan.nodes_events),
            payload: &plan.payload,
            pace: Pace::Rate {
                per_second: plan.nodes_rate,
                window: plan.nodes_events,
            },
            stop: far_future(),
            answer_timeout: plan.drain_max,
        };
        deliveries
            .measure("nodes", &mut publisher, job, &mut report)
            .await?;
    }
    // 5. Maximum sustained publish rate, with subscribers.
    if plan.runs("rate") {
        let job = Job {
            nodes: std::slice::from_ref(&names.rate),
            // As many indexes as the run could possibly use; it stops on
            // time.
            items: items.take(1_000_000),
            payload: &plan.payload,
            pace: Pace::AsAcked {
                window: plan.rate_window,
            },
            stop: Instant::now() + Duration::from_secs_f64(plan.rate_seconds),
            answer_timeout: plan.drain_max,
        };
        deliveries
            .measure("rate", &mut publisher, job, &mut report)
            .await?;
    }
    // 6. Acknowledged publishes per second with several publishers.
    if plan.runs("throughput") {
        throughput(target, plan, &names.throughput, &mut items, &mut report).await?;
    }
    // 7. Catch-up through item retrieval.
    if plan.runs("catchup") {
        catchup(
            target,
            plan,
            &mut publisher,
            &names.catchup,
            &mut items,
            &mut report,
        )
        .await?;
    }
    // 8. The last fan-out.
    if let Some(last) = fanouts.checked_sub(1) {
        let (scenario, job) = fanout(last, &mut items);
        deliveries
            .measure(&scenario, &mut publisher, job, &mut report)
            .await?;
    }
    for receiver in &receivers {
        receiver.abort();
    }
    Ok(report)
}

/// CPU time per operation in µs; undefined (NaN, shown as "–") when no
/// operation was done.
fn per_operation_us(cpu: Duration, operations: usize) -> f64 {
    if operations == 0 {
        return f64::NAN;
    }
    cpu.as_secs_f64() * 1e6 / operations as f64
}

/// `count` per second of `elapsed`; 0 when nothing happened.
fn per_second(count: usize, elapsed: Duration) -> f64 {
    if count == 0 {
        return 0.0;
    }
    count as f64 / elapsed.as_secs_f64()
}

/// A stop time no open-loop schedule reaches.
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(24 * 3600)
}

/// XEP-0060 §8.1.3: creates `node` with room for `max_items` items,
/// persistent; a server refusing the configuration form gets a plain
/// create (noted in the report).
async fn create_node(
    target: &Target,
    client: &mut Client,
    node: &str,
    max_items: usize,
    report: &mut Report,
) -> anyhow::Result<()> {
    let field = |var: &str, value: &str| {
        Element::new("field", "jabber:x:data")
            .with_attr("var", var)
            .with_child(Element::new("value", "jabber:x:data").with_text(value))
    };
    let form = Element::new("x", "jabber:x:data")
        .with_attr("type", "submit")
        .with_child(
            field("FORM_TYPE", &format!("{PUBSUB_NS}#node_config")).with_attr("type", "hidden"),
        )
        .with_child(field("pubsub#persist_items", "1"))
        .with_child(field("pubsub#max_items", &max_items.to_string()));
    let configured = Element::new("pubsub", PUBSUB_NS)
        .with_child(Element::new("create", PUBSUB_NS).with_attr("node", node))
        .with_child(Element::new("configure", PUBSUB_NS).with_child(form));
    let iq = Element::new("iq", vomesh_broker::xmpp::ns::CLIENT)
        .with_attr("type", "set")
        .with_attr("to", target.service.clone())
        .with_child(configured);
    if let Err(refused) = request(client, iq).await {
        report.note(format!(
            "creating {node} with a configuration was refused ({refused}); created plainly"
        ));
        let plain = pubsub_iq(
            target,
            "set",
            Element::new("create", PUBSUB_NS).with_attr("node", node),
        );
        request(client, plain).await?;
    }
    Ok(())
}

/// What a delivery scenario needs besides its own parameters.
struct Deliveries<'a> {
    target: &'a Target,
    plan: &'a Plan,
    log: &'a DeliveryLog,
    receivers: &'a [Receiver],
    subscribers: &'a HashMap<String, usize>,
}

impl Deliveries<'_> {
    /// Publishes `job`, waits for the notifications, and reports the
    /// scenario's figures.
    async fn measure(
        &self,
        scenario: &str,
        publisher: &mut Client,
        job: Job<'_>,
        report: &mut Report,
    ) -> anyhow::Result<()> {
        let (nodes, items) = (job.nodes, job.items.clone());
        let lost_before = self.receivers.iter().filter(|r| r.is_finished()).count();
        let count_before = self.log.count();
        let cpu = CpuMark::now(self.target);
        let started = Instant::now();
        let Published { sent, broken } = publish_run(self.target, publisher, job).await;
        if let Some(error) = broken {
            anyhow::bail!("{scenario}: the publisher's session broke: {error}");
        }
        let expected_of = |item: u32| {
            self.subscribers
                .get(&nodes[item as usize % nodes.len()])
                .copied()
                .unwrap_or(0)
        };
        let expected: usize = sent.iter().map(|s| expected_of(s.item)).sum();
        self.log
            .wait_for(
                count_before + expected,
                self.plan.drain_quiet,
                Instant::now() + self.plan.drain_max,
            )
            .await;
        let (server_cpu, own_cpu) = cpu.elapsed(self.target);
        let server_wait = cpu.server_wait(self.target);
        let deliveries = self.log.take(items.start..items.end);
        let lost = self.receivers.iter().filter(|r| r.is_finished()).count() - lost_before;

        let sent_at: HashMap<u32, Instant> = sent.iter().map(|s| (s.item, s.sent)).collect();
        let mut seen = HashSet::with_capacity(deliveries.len());
        let mut duplicates = 0usize;
        let mut latencies = Vec::with_capacity(deliveries.len());
        let mut last = started;
        for delivery in &deliveries {
            if !seen.insert((delivery.session, delivery.item)) {
                duplicates += 1;
                continue;
            }
            if let Some(at) = sent_at.get(&delivery.item) {
                latencies.push(delivery.at.saturating_duration_since(*at));
            }
            last = last.max(delivery.at);
        }
        latencies.sort_unstable();
        let delivered = seen.len();
        let acked: Vec<_> = sent.iter().filter(|s| s.ok).collect();
        let mut ack_latencies: Vec<Duration> = acked
            .iter()
            .filter_map(|s| Some(s.answered? - s.sent))
            .collect();
        ack_latencies.sort_unstable();
        let last_ack = acked
            .iter()
            .filter_map(|s| s.answered)
            .max()
            .unwrap_or(started);
        let refused = sent
            .iter()
            .filter(|s| s.answered.is_some() && !s.ok)
            .count();
        let unanswered = sent.iter().filter(|s| s.answered.is_none()).count();
        if refused + unanswered > 0 {
            report.note(format!(
                "{scenario}: {refused} publishes refused, {unanswered} unanswered"
            ));
        }

        let s = scenario;
        report.add(s, "publishes sent", sent.len() as f64, Better::Neither);
        report.add(
            s,
            "publishes acknowledged/s",
            per_second(acked.len(), last_ack.saturating_duration_since(started)),
            Better::Higher,
        );
        for (name, q) in [("p50", 0.5), ("p99", 0.99)] {
            report.add(
                s,
                &format!("publish→ack {name} (ms)"),
                millis(percentile(&ack_latencies, q)),
                Better::Lower,
            );
        }
        report.add(
            s,
            "delivered (% of expected)",
            100.0 * delivered as f64 / expected.max(1) as f64,
            Better::Higher,
        );
        for (name, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0)] {
            report.add(
                s,
                &format!("publish→delivery {name} (ms)"),
                millis(percentile(&latencies, q)),
                Better::Lower,
            );
        }
        report.add(
            s,
            "notifications/s",
            per_second(delivered, last.saturating_duration_since(started)),
            Better::Higher,
        );
        report.add(
            s,
            "missing deliveries",
            expected.saturating_sub(delivered) as f64,
            Better::Lower,
        );
        report.add(s, "duplicate deliveries", duplicates as f64, Better::Lower);
        report.add(s, "sessions lost", lost as f64, Better::Lower);
        let per_notification = |cpu: Duration| per_operation_us(cpu, delivered);
        report.add(
            s,
            "server CPU per notification (µs)",
            per_notification(server_cpu),
            Better::Lower,
        );
        report.add(
            s,
            "load generator CPU per notification (µs)",
            per_notification(own_cpu),
            Better::Neither,
        );
        report.add(
            s,
            "server CPU (s)",
            server_cpu.as_secs_f64(),
            Better::Neither,
        );
        report.add(
            s,
            "server waited for a CPU (s)",
            server_wait.as_secs_f64(),
            Better::Neither,
        );
        report.add(
            s,
            "load generator CPU (s)",
            own_cpu.as_secs_f64(),
            Better::Neither,
        );
        Ok(())
    }
}

/// `throughput_publishers` sessions of the publisher's account, each with
/// `throughput_window` publishes in flight to one node without
/// subscribers, for `throughput_seconds`.
async fn throughput(
    target: &Target,
    plan: &Plan,
    node: &str,
    items: &mut ItemCounter,
    report: &mut Report,
) -> anyhow::Result<()> {
    let mut sessions = Vec::with_capacity(plan.throughput_publishers);
    for _ in 0..plan.throughput_publishers {
        sessions.push(Client::connect(&target.publisher()).await?);
    }
    let cpu = CpuMark::now(target);
    let started = Instant::now();
    let stop = started + Duration::from_secs_f64(plan.throughput_seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for mut client in sessions {
        let range = items.take(10_000_000);
        let (target, nodes, payload) =
            (target.clone(), vec![node.to_owned()], plan.payload.clone());
        let pace = Pace::AsAcked {
            window: plan.throughput_window,
        };
        let answer_timeout = plan.drain_max;
        tasks.spawn(async move {
            let job = Job {
                nodes: &nodes,
                items: range,
                payload: &payload,
                pace,
                stop,
                answer_timeout,
            };
            publish_run(&target, &mut client, job).await
        });
    }
    let mut acked = Vec::new();
    let mut refused = 0;
    let mut unanswered = 0;
    while let Some(joined) = tasks.join_next().await {
        let published = joined?;
        if let Some(error) = published.broken {
            report.note(format!("throughput: a publisher's session broke: {error}"));
        }
        for s in published.sent {
            match s.answered {
                Some(at) if s.ok => acked.push((s.sent, at)),
                Some(_) => refused += 1,
                None => unanswered += 1,
            }
        }
    }
    let (server_cpu, own_cpu) = cpu.elapsed(target);
    if refused + unanswered > 0 {
        report.note(format!(
            "throughput: {refused} publishes refused, {unanswered} unanswered"
        ));
    }
    let last = acked.iter().map(|(_, at)| *at).max().unwrap_or(started);
    let mut latencies: Vec<Duration> = acked.iter().map(|(sent, at)| *at - *sent).collect();
    latencies.sort_unstable();
    let s = "throughput";
    report.add(
        s,
        "publishes acknowledged/s",
        per_second(acked.len(), last.saturating_duration_since(started)),
        Better::Higher,
    );
    for (name, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0)] {
        report.add(
            s,
            &format!("publish→ack {name} (ms)"),
            millis(percentile(&latencies, q)),
            Better::Lower,
        );
    }
    let per_publish = |cpu: Duration| per_operation_us(cpu, acked.len());
    report.add(
        s,
        "server CPU per publish (µs)",
        per_publish(server_cpu),
        Better::Lower,
    );
    report.add(
        s,
        "load generator CPU per publish (µs)",
        per_publish(own_cpu),
        Better::Neither,
    );
    Ok(())
}

/// Where the next page of an items retrieval starts (XEP-0059).
enum Cursor {
    Before(String),
    After(String),
}

/// A subscriber subscribes, goes offline, `catchup_items` are published,
/// and it logs in again and retrieves every item of the node.
async fn catchup(
    target: &Target,
    plan: &Plan,
    publisher: &mut Client,
    node: &str,
    items: &mut ItemCounter,
    report: &mut Report,
) -> anyhow::Result<()> {
    let config = target.subscriber(plan.sessions);
    let mut offline = Client::connect(&config).await?;
    subscribe(target, &mut offline, node).await?;
    drop(offline);
    let range = items.take(plan.catchup_items);
    let nodes = [node.to_owned()];
    let job = Job {
        nodes: &nodes,
        items: range.clone(),
        payload: &plan.payload,
        pace: Pace::AsAcked { window: 32 },
        // Bounded: a server that stopped answering must not hold the run.
        stop: Instant::now() + plan.phase_timeout,
        answer_timeout: plan.drain_max,
    };
    let published = publish_run(target, publisher, job).await;
    if let Some(error) = published.broken {
        anyhow::bail!("catchup: the publisher's session broke: {error}");
    }
    let cpu = CpuMark::now(target);
    let started = Instant::now();
    let mut client = Client::connect(&config).await?;
    let logged_in = started.elapsed();
    let mut retrieved = HashSet::new();
    // The first request is unpaged. A service that answers it with the
    // newest page (XEP-0060 §6.5.4: `<first index='n'>`, n > 0) is paged
    // backwards with `before`; one that starts at the oldest, forwards
    // with `after`.
    let mut cursor: Option<Cursor> = None;
    let mut pages = 0;
    // Bounded: a service that pages forever is stopped after this many.
    while pages < 10_000 {
        pages += 1;
        let mut request_items = Element::new("pubsub", PUBSUB_NS)
            .with_child(Element::new("items", PUBSUB_NS).with_attr("node", node));
        if let Some(cursor) = &cursor {
            let (name, id) = match cursor {
                Cursor::Before(id) => ("before", id),
                Cursor::After(id) => ("after", id),
            };
            request_items.push_child(
                Element::new("set", RSM_NS).with_child(Element::new(name, RSM_NS).with_text(id)),
            );
        }
        let iq = Element::new("iq", vomesh_broker::xmpp::ns::CLIENT)
            .with_attr("type", "get")
            .with_attr("to", target.service.clone())
            .with_child(request_items);
        let answer = request(&mut client, iq).await?;
        let pubsub = answer.child("pubsub", PUBSUB_NS);
        let page: Vec<u32> = pubsub
            .and_then(|p| p.child("items", PUBSUB_NS))
            .map(|list| {
                list.children()
                    .filter_map(|item| item.attr("id")?.strip_prefix('i')?.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        let fresh = page.iter().filter(|id| retrieved.insert(**id)).count();
        let set = pubsub.and_then(|p| p.child("set", RSM_NS));
        let first = set.and_then(|set| set.child("first", RSM_NS));
        let last = set.and_then(|set| set.child("last", RSM_NS));
        let backwards = match &cursor {
            Some(cursor) => matches!(cursor, Cursor::Before(_)),
            None => first
                .and_then(|f| f.attr("index"))
                .and_then(|i| i.parse::<u64>().ok())
                .is_some_and(|index| index > 0),
        };
        let next = if backwards {
            first.map(|f| Cursor::Before(f.text()))
        } else {
            last.map(|l| Cursor::After(l.text()))
        };
        match next {
            Some(next) if fresh > 0 && retrieved.len() < range.len() => cursor = Some(next),
            _ => break,
        }
    }
    let elapsed = started.elapsed();
    let (server_cpu, _) = cpu.elapsed(target);
    let got = retrieved.iter().filter(|id| range.contains(id)).count();
    let s = "catchup";
    report.add(
        s,
        "items retrieved (% of published)",
        100.0 * got as f64 / range.len().max(1) as f64,
        Better::Higher,
    );
    report.add(s, "login (ms)", millis(logged_in), Better::Lower);
    report.add(
        s,
        "login + retrieval of all items (ms)",
        millis(elapsed),
        Better::Lower,
    );
    report.add(s, "pages", pages as f64, Better::Neither);
    report.add(s, "server CPU (ms)", millis(server_cpu), Better::Lower);
    Ok(())
}
