//! Pipelined publishing over one session: XEP-0060 §7.1 publish IQs sent
//! either on a fixed schedule (open loop: a slow server does not slow the
//! schedule down, so its latency is not hidden) or as fast as they are
//! acknowledged with a window of IQs in flight.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vomesh_broker::client::{Client, ClientError};
use vomesh_broker::pubsub::payload;
use vomesh_broker::xml::Element;

use super::PUBSUB_NS;
use super::sessions::{item_id, pubsub_iq};
use super::target::Target;

/// When the publisher sends.
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    /// `per_second` publishes a second, whatever the acknowledgements do
    /// (at most `window` unanswered, then it waits).
    Rate { per_second: f64, window: usize },
    /// A new publish as soon as fewer than `window` are unanswered.
    AsAcked { window: usize },
}

/// One publish: when it was written, when (if) it was answered, and
/// whether the answer was a result.
#[derive(Debug, Clone, Copy)]
pub struct Sent {
    pub item: u32,
    pub sent: Instant,
    pub answered: Option<Instant>,
    pub ok: bool,
}

/// What a publishing run gives back: every publish, and the session (or
/// the error that broke it).
pub struct Published {
    pub sent: Vec<Sent>,
    pub broken: Option<ClientError>,
}

/// What to publish, and how.
#[derive(Debug, Clone)]
pub struct Job<'a> {
    /// Item `i` goes to `nodes[i mod nodes.len()]`.
    pub nodes: &'a [String],
    pub items: std::ops::Range<u32>,
    pub payload: &'a Element,
    pub pace: Pace,
    /// Items not sent by then are not sent.
    pub stop: Instant,
    /// How long the outstanding answers are awaited after the last send.
    pub answer_timeout: Duration,
}

/// Publishes `job` over `client`.
pub async fn publish_run(target: &Target, client: &mut Client, job: Job<'_>) -> Published {
    let Job {
        nodes,
        items,
        payload,
        pace,
        stop,
        answer_timeout,
    } = job;
    // Serialized once, spliced into every publish: cloning the tree and
    // serializing it for each one cost the load generator more CPU per
    // publish than anything else it does.
    let payload: Arc<str> = payload::serialize(payload).into();
    let window = match pace {
        Pace::Rate { window, .. } | Pace::AsAcked { window } => window.max(1),
    };
    let mut ticker = match pace {
        Pace::Rate { per_second, .. } => {
            let mut ticker =
                tokio::time::interval(Duration::from_secs_f64(1.0 / per_second.max(1e-3)));
            // A late tick is sent at once; the schedule is not stretched.
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            Some(ticker)
        }
        Pace::AsAcked { .. } => None,
    };
    let mut sent: Vec<Sent> = Vec::with_capacity(items.len());
    // IQ id → position in `sent`.
    let mut outstanding: HashMap<String, usize> = HashMap::new();
    let mut next = items.start;
    let mut answers_deadline: Option<Instant> = None;
    loop {
        let all_sent = next >= items.end || Instant::now() >= stop;
        if all_sent && outstanding.is_empty() {
            return Published { sent, broken: None };
        }
        if all_sent {
            let deadline = *answers_deadline.get_or_insert_with(|| Instant::now() + answer_timeout);
            if Instant::now() >= deadline {
                return Published { sent, broken: None };
            }
        }
        let may_send = !all_sent && outstanding.len() < window;
        let due = async {
            match ticker.as_mut() {
                Some(ticker) if may_send => {
                    ticker.tick().await;
                }
                None if may_send => {}
                _ => std::future::pending().await,
            }
        };
        let wake = tokio::time::sleep_until(
            answers_deadline
                .unwrap_or(stop)
                .max(Instant::now() + Duration::from_millis(1))
                .into(),
        );
        tokio::select! {
            biased;
            stanza = client.next_stanza() => match stanza {
                Ok(stanza) => {
                    let Some(id) = stanza.attr("id").filter(|_| stanza.name() == "iq") else {
                        continue;
                    };
                    if let Some(position) = outstanding.remove(id) {
                        sent[position].answered = Some(Instant::now());
                        sent[position].ok = stanza.attr("type") == Some("result");
                    }
                }
                Err(error) => return Published { sent, broken: Some(error) },
            },
            () = due => {
                let item = next;
                next += 1;
                let node = &nodes[item as usize % nodes.len()];
                let iq = publish_iq(target, node, item, &payload);
                let written = Instant::now();
                if let Err(error) = client.send(&iq).await {
                    return Published { sent, broken: Some(error) };
                }
                outstanding.insert(iq_id(item), sent.len());
                sent.push(Sent { item, sent: written, answered: None, ok: false });
            },
            () = wake => {}
        }
    }
}

fn iq_id(item: u32) -> String {
    format!("p{item}")
}

/// XEP-0060 §7.1.1: publish `payload` (self-contained XML text) as item
/// `i<item>` to `node`.
fn publish_iq(target: &Target, node: &str, item: u32, payload: &Arc<str>) -> Element {
    let mut item_element = Element::new("item", PUBSUB_NS).with_attr("id", item_id(item));
    item_element.push_raw(payload.clone());
    let mut iq = pubsub_iq(
        target,
        "set",
        Element::new("publish", PUBSUB_NS)
            .with_attr("node", node)
            .with_child(item_element),
    );
    iq.set_attr("id", iq_id(item));
    iq
}
