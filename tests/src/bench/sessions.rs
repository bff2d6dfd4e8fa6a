//! Many sessions at once: concurrent logins, XEP-0060 subscriptions, and the
//! receiver task of each subscriber session.
//!
//! A receiver notes, for every notification, which session got which item
//! and when, into one shared log; the item index is carried in the item id
//! (`i<index>`), so nothing but a number is read per notification.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt as _;
use tokio::task::JoinHandle;
use vomesh_broker::client::{Client, ClientError, ScramCache};
use vomesh_broker::xml::Element;
use vomesh_broker::xmpp::ns;

use super::PUBSUB_NS;
use super::scan::ItemScanner;
use super::target::Target;

/// Sessions established by [`connect_many`], with their timings.
pub struct Logins {
    pub clients: Vec<(usize, Client)>,
    /// Connect → bound, per established session.
    pub latencies: Vec<Duration>,
    pub failures: usize,
    pub first_error: Option<String>,
    /// First connect → last bound.
    pub elapsed: Duration,
}

/// Logs in sessions `indexes` of `target` (subscriber accounts in turn),
/// `concurrency` at a time, giving up on the rest at `deadline`. The client
/// keeps SaltedPassword per account (RFC 5802 §5.1), so PBKDF2 runs once
/// per account and the server's work per login is what is measured.
pub async fn connect_many(
    target: &Target,
    indexes: std::ops::Range<usize>,
    concurrency: usize,
    deadline: Instant,
) -> Logins {
    let cache = ScramCache::new(target.accounts.len() + 1);
    let next = Arc::new(AtomicUsize::new(indexes.start));
    let end = indexes.end;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency.min(indexes.len()).max(1) {
        let (next, cache, target) = (next.clone(), cache.clone(), target.clone());
        tasks.spawn(async move {
            let mut part = Logins {
                clients: Vec::new(),
                latencies: Vec::new(),
                failures: 0,
                first_error: None,
                elapsed: Duration::ZERO,
            };
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= end || Instant::now() > deadline {
                    return part;
                }
                let begun = Instant::now();
                let config = target.subscriber(index);
                let login = tokio::time::timeout_at(
                    deadline.into(),
                    Client::connect_with(&config, Some(&cache)),
                );
                match login.await {
                    Ok(Ok(client)) => {
                        part.latencies.push(begun.elapsed());
                        part.clients.push((index, client));
                    }
                    Ok(Err(error)) => {
                        part.failures += 1;
                        part.first_error.get_or_insert(error.to_string());
                    }
                    Err(_) => return part,
                }
            }
        });
    }
    let mut all = Logins {
        clients: Vec::with_capacity(indexes.len()),
        latencies: Vec::with_capacity(indexes.len()),
        failures: 0,
        first_error: None,
        elapsed: Duration::ZERO,
    };
    while let Some(joined) = tasks.join_next().await {
        let mut part = joined.expect("a login task does not panic");
        all.clients.append(&mut part.clients);
        all.latencies.append(&mut part.latencies);
        all.failures += part.failures;
        if all.first_error.is_none() {
            all.first_error = part.first_error;
        }
    }
    all.elapsed = started.elapsed();
    all.clients.sort_by_key(|(index, _)| *index);
    all
}

/// An IQ to the pubsub service carrying a `<pubsub/>` with `child`.
pub fn pubsub_iq(target: &Target, kind: &str, child: Element) -> Element {
    Element::new("iq", ns::CLIENT)
        .with_attr("type", kind)
        .with_attr("to", target.service.clone())
        .with_child(Element::new("pubsub", PUBSUB_NS).with_child(child))
}

/// Why a pubsub request failed.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The service answered with an error stanza.
    #[error("refused: {0}")]
    Refused(String),
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// Sends `iq` and returns the answer if it is a result.
pub async fn request(client: &mut Client, iq: Element) -> Result<Element, RequestError> {
    let answer = client.iq(iq).await?;
    match answer.attr("type") {
        Some("result") => Ok(answer),
        _ => Err(RequestError::Refused(answer.to_xml())),
    }
}

/// XEP-0060 §6.1: subscribes the session's own full JID, so that this
/// session (and no other resource of the account) gets the notifications.
pub async fn subscribe(
    target: &Target,
    client: &mut Client,
    node: &str,
) -> Result<(), RequestError> {
    let jid = client.jid().to_string();
    let iq = pubsub_iq(
        target,
        "set",
        Element::new("subscribe", PUBSUB_NS)
            .with_attr("node", node)
            .with_attr("jid", jid),
    );
    request(client, iq).await.map(drop)
}

/// Subscribes each session to the nodes `nodes_of(index)` names,
/// `concurrency` sessions at a time. Returns the sessions (in the same
/// order), how many subscriptions failed, the first failure, and the time
/// taken; sessions not reached by `deadline` are left unsubscribed.
pub async fn subscribe_all(
    target: &Target,
    clients: Vec<(usize, Client)>,
    nodes_of: impl Fn(usize) -> Vec<String>,
    concurrency: usize,
    deadline: Instant,
) -> (Vec<(usize, Client)>, usize, Option<String>) {
    let work: Vec<(usize, Client, Vec<String>)> = clients
        .into_iter()
        .map(|(index, client)| (index, client, nodes_of(index)))
        .collect();
    let queue = Arc::new(Mutex::new(work.into_iter()));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (queue, target) = (queue.clone(), target.clone());
        tasks.spawn(async move {
            let mut done = Vec::new();
            let mut failures = 0;
            let mut first_error = None;
            loop {
                let Some((index, mut client, nodes)) = lock(&queue).next() else {
                    return (done, failures, first_error);
                };
                for node in &nodes {
                    if Instant::now() > deadline {
                        failures += 1;
                        continue;
                    }
                    if let Err(error) = subscribe(&target, &mut client, node).await {
                        failures += 1;
                        first_error.get_or_insert(error.to_string());
                    }
                }
                done.push((index, client));
            }
        });
    }
    let mut all = Vec::new();
    let mut failures = 0;
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        let (mut done, failed, error) = joined.expect("a subscribing task does not panic");
        all.append(&mut done);
        failures += failed;
        if first_error.is_none() {
            first_error = error;
        }
    }
    all.sort_by_key(|(index, _)| *index);
    (all, failures, first_error)
}

/// One notification: session `session` got item `item` at `at`.
#[derive(Debug, Clone, Copy)]
pub struct Delivery {
    pub session: u32,
    pub item: u32,
    pub at: Instant,
}

/// What every receiver appends to.
#[derive(Default)]
pub struct DeliveryLog {
    entries: Mutex<Vec<Delivery>>,
    count: AtomicUsize,
}

impl DeliveryLog {
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// The deliveries of items in `items` (taken out of the log).
    pub fn take(&self, items: std::ops::Range<u32>) -> Vec<Delivery> {
        let mut entries = lock(&self.entries);
        let (taken, kept) = entries.drain(..).partition(|d| items.contains(&d.item));
        *entries = kept;
        taken
    }

    fn push(&self, delivery: Delivery) {
        lock(&self.entries).push(delivery);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Waits until `target` deliveries were logged in all, or until no new
    /// one arrived for `quiet`, or `deadline`.
    pub async fn wait_for(&self, target: usize, quiet: Duration, deadline: Instant) {
        let mut last_count = self.count();
        let mut last_progress = Instant::now();
        while self.count() < target && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
            let count = self.count();
            if count != last_count {
                last_count = count;
                last_progress = Instant::now();
            } else if last_progress.elapsed() > quiet {
                return;
            }
        }
    }
}

/// The item id of item `index`: the receivers read the index back from it.
pub fn item_id(index: u32) -> String {
    format!("i{index}")
}

/// Bytes a receiver reads at once.
const READ_BYTES: usize = 16 * 1024;

/// A subscriber session read by its own task, which scans the decrypted
/// bytes for notified items ([`ItemScanner`]) instead of parsing stanzas.
pub struct Receiver {
    task: JoinHandle<()>,
}

impl Receiver {
    /// Takes over `client`'s stream: call it once the session has
    /// subscribed and before anything is published.
    pub fn spawn(session: usize, client: Client, log: Arc<DeliveryLog>) -> Receiver {
        let session = u32::try_from(session).expect("fewer than 2^32 sessions");
        let mut transport = client.into_transport();
        let task = tokio::spawn(async move {
            let mut scanner = ItemScanner::default();
            let mut buffer = vec![0u8; READ_BYTES];
            let mut found = Vec::new();
            loop {
                match transport.read(&mut buffer).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        let at = Instant::now();
                        scanner.push(&buffer[..n], &mut found);
                        for item in found.drain(..) {
                            log.push(Delivery { session, item, at });
                        }
                    }
                }
            }
        });
        Receiver { task }
    }

    /// Whether the session ended (the server closed it or it broke).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops reading; the session is dropped (its TCP connection closed).
    pub fn abort(&self) {
        self.task.abort();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
