//! The broadcast port: VTP subscribers connect and receive every event
//! published to the broadcast nodes (`[vtp] broadcast_node_prefixes`),
//! whichever site or protocol it was published at.
//!
//! Events reach this port through the replica's notification path: when a
//! site applies a publish that added an item, [`Feed::offer`] hands it to
//! the subscribers connected to *this* site (replication is distribution,
//! as for XMPP subscribers). A subscriber gets the packet as published:
//! the VTP message bytes for an event that arrived over VTP, else an XML
//! declaration and the item's payload text.
//!
//! Per connection: Comet's `authenticate` first (the answer names the
//! subscriber, which is how an event is kept from going back to the broker
//! it came from, and may carry XPath filters, see [`crate::vtp::filter`]),
//! then events and an `iamalive` every
//! `iamalive_interval_secs`. Every event and `iamalive` expects an answer;
//! a subscriber that leaves one unanswered for `subscriber_reply_timeout_secs`,
//! or has more than `max_unanswered_per_subscriber` unanswered when an
//! `iamalive` is due (Comet's rule), or falls `subscriber_queue_events`
//! behind, or naks, is dropped (VTP 2.0 §6.4; each counted in
//! `vomesh_vtp_subscribers_dropped_total{reason}`).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;
use vomesh_proto::pubsub::Publish;

use crate::metrics::names;
use crate::pubsub::model::Item;
use crate::vtp::filter::Filter;
use crate::vtp::frame::{self, FrameError};
use crate::vtp::message::{self, DECLARATION, Incoming, Role};
use crate::vtp::{LimitedListener, Settings, allowed, stopped};

/// One event for the subscribers of this site.
#[derive(Debug)]
pub struct BroadcastEvent {
    /// The message body sent, as published.
    pub packet: Bytes,
    /// The IVORN of the VTP broker it was ingested from; empty otherwise.
    pub origin_ivo: String,
}

/// The hand-over from applied publishes to the broadcast port.
///
/// A `tokio::sync::broadcast` channel of `subscriber_queue_events`: the
/// replica never waits for a subscriber (applying the log must not stall on
/// a slow TCP peer), and a subscriber that falls that far behind is told so
/// (`Lagged`) and dropped rather than silently missing events.
#[derive(Clone)]
pub struct Feed {
    sender: broadcast::Sender<Arc<BroadcastEvent>>,
    prefixes: Arc<[String]>,
}

impl Feed {
    pub fn new(queue_events: usize, prefixes: &[String]) -> Feed {
        Feed {
            sender: broadcast::Sender::new(queue_events),
            prefixes: prefixes.into(),
        }
    }

    /// Offers the item a committed `publish` added; sent to this site's
    /// subscribers if its node is a broadcast node. This runs in the apply
    /// of every publish: with no subscriber connected, the packet is not
    /// even built.
    pub fn offer(&self, publish: &Publish, item: &Item) {
        if self.sender.receiver_count() == 0
            || !self
                .prefixes
                .iter()
                .any(|p| publish.node.starts_with(p.as_str()))
        {
            return;
        }
        let (packet, origin_ivo) = match &publish.vtp {
            Some(vtp) => (Bytes::from(vtp.packet.clone()), vtp.peer_ivo.clone()),
            None => {
                let mut packet = String::with_capacity(DECLARATION.len() + item.payload.len());
                packet.push_str(DECLARATION);
                packet.push_str(&item.payload);
                (Bytes::from(packet), String::new())
            }
        };
        // No subscriber connected is not an error.
        let _ = self
            .sender
            .send(Arc::new(BroadcastEvent { packet, origin_ivo }));
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<BroadcastEvent>> {
        self.sender.subscribe()
    }
}

/// Why a subscriber was dropped (the metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// An event or `iamalive` went unanswered past the reply timeout.
    Timeout,
    /// More messages unanswered than the limit.
    Unanswered,
    /// Fell behind the event queue.
    Lagged,
    /// Sent a nak (VTP 2.0 §6.4: the broker removes the subscriber).
    Nak,
    /// Its address is outside `subscriber_allow`.
    NotAllowed,
    /// Sent something that is not a VTP message, or too large.
    Malformed,
    /// A write failed, or did not complete within the reply timeout.
    WriteFailed,
}

impl DropReason {
    pub fn label(self) -> &'static str {
        match self {
            DropReason::Timeout => "timeout",
            DropReason::Unanswered => "unanswered",
            DropReason::Lagged => "lagged",
            DropReason::Nak => "nak",
            DropReason::NotAllowed => "not-allowed",
            DropReason::Malformed => "malformed",
            DropReason::WriteFailed => "write-failed",
        }
    }
}

/// The messages sent to one subscriber that await its answer. Answers are
/// not matched to messages (Comet's are not either: an ack names the event,
/// an iamalive only the broker): each answer settles the oldest.
///
/// As in Comet, a burst may run ahead of the acks; what counts is that the
/// subscriber keeps up: when an `iamalive` is due, more than
/// `outstanding_max` unanswered drops it, and so does any message left
/// unanswered past `timeout`. `backlog_max` bounds the bookkeeping itself.
#[derive(Debug)]
pub struct Unanswered {
    sent_at: VecDeque<Instant>,
    outstanding_max: usize,
    backlog_max: usize,
    timeout: Duration,
}

impl Unanswered {
    pub fn new(outstanding_max: usize, backlog_max: usize, timeout: Duration) -> Unanswered {
        Unanswered {
            sent_at: VecDeque::new(),
            outstanding_max,
            backlog_max,
            timeout,
        }
    }

    /// A message expecting an answer went out at `at`. A subscriber as
    /// many answers behind as the event queue is long is as far behind as
    /// a lagging one.
    pub fn sent(&mut self, at: Instant) -> Result<(), DropReason> {
        if self.sent_at.len() >= self.backlog_max {
            return Err(DropReason::Lagged);
        }
        self.sent_at.push_back(at);
        Ok(())
    }

    /// An answer arrived.
    pub fn answered(&mut self) {
        self.sent_at.pop_front();
    }

    /// Whether the oldest message is overdue at `now`.
    pub fn check(&self, now: Instant) -> Result<(), DropReason> {
        match self.sent_at.front() {
            Some(oldest) if now.duration_since(*oldest) > self.timeout => Err(DropReason::Timeout),
            _ => Ok(()),
        }
    }

    /// When an `iamalive` is due: whether the subscriber kept up.
    pub fn check_outstanding(&self) -> Result<(), DropReason> {
        if self.sent_at.len() > self.outstanding_max {
            return Err(DropReason::Unanswered);
        }
        Ok(())
    }

    /// When the oldest message becomes overdue.
    pub fn deadline(&self) -> Option<Instant> {
        self.sent_at.front().map(|oldest| *oldest + self.timeout)
    }
}

/// How long a new subscriber has to answer `authenticate` before events
/// flow anyway (a subscriber need not authenticate; one that does is known
/// before its first event, so loop prevention holds from the start).
const AUTHENTICATE_GRACE: Duration = Duration::from_secs(5);

/// Accepts subscribers until `stop`; at most `max_subscribers` at once.
pub async fn accept_loop(
    listener: LimitedListener,
    settings: Arc<Settings>,
    feed: Feed,
    mut stop: watch::Receiver<bool>,
) {
    while let Some((stream, peer, slot)) = listener.next(&mut stop).await {
        if !allowed(&settings.subscriber_allow, peer) {
            tracing::info!(%peer, "VTP subscriber outside subscriber_allow refused");
            count_drop(DropReason::NotAllowed);
            continue;
        }
        let (settings, receiver, stop) = (settings.clone(), feed.subscribe(), stop.clone());
        tokio::spawn(async move {
            metrics::gauge!(names::VTP_PEERS, "role" => "subscriber").increment(1.0);
            tracing::info!(%peer, "VTP subscriber connected");
            let ended = serve(stream, peer, &settings, receiver, stop).await;
            if let Err(reason) = ended {
                tracing::info!(%peer, reason = reason.label(), "VTP subscriber dropped");
                count_drop(reason);
            } else {
                tracing::info!(%peer, "VTP subscriber disconnected");
            }
            metrics::gauge!(names::VTP_PEERS, "role" => "subscriber").decrement(1.0);
            drop(slot);
        });
    }
}

fn count_drop(reason: DropReason) {
    metrics::counter!(names::VTP_SUBSCRIBERS_DROPPED_TOTAL, "reason" => reason.label())
        .increment(1);
}

/// What the reading half reports.
type Received = Result<Vec<u8>, FrameError>;

/// Serves one subscriber; `Ok` when it closed or the node stops.
async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    settings: &Settings,
    mut events: broadcast::Receiver<Arc<BroadcastEvent>>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), DropReason> {
    // Each message is written whole; waiting to coalesce only adds latency.
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.into_split();
    // Reading a frame is not cancel-safe, so it runs in its own task and
    // hands complete messages over; a few in flight are plenty, as a
    // subscriber only answers what it was sent.
    let (received_tx, mut received) = mpsc::channel::<Received>(4);
    let max_bytes = settings.max_message_bytes;
    let reading = tokio::spawn(async move {
        loop {
            let frame = frame::read_frame(&mut reader, max_bytes).await;
            let last = !matches!(frame, Ok(Some(_)));
            let sent = match frame {
                Ok(Some(body)) => received_tx.send(Ok(body)).await,
                Ok(None) => return,
                Err(error) => received_tx.send(Err(error)).await,
            };
            if last || sent.is_err() {
                return;
            }
        }
    });
    let result = async {
        let peer_label = peer.ip().to_string();
        let mut unanswered = Unanswered::new(
            settings.max_unanswered_per_subscriber,
            settings.subscriber_queue_events,
            settings.subscriber_reply_timeout,
        );
        let mut subscriber = Subscriber::default();
        send(
            &mut writer,
            &message::authenticate(&settings.local_ivo, crate::clock::now_micros()),
            settings,
        )
        .await?;
        // Wait briefly for the subscriber to name itself.
        if let Ok(first) = tokio::time::timeout(AUTHENTICATE_GRACE, received.recv()).await {
            match first {
                None => return Ok(()),
                Some(body) => answer(body, settings, &mut subscriber, &mut unanswered)?,
            }
        }
        let mut alive = tokio::time::interval_at(
            Instant::now() + settings.iamalive_interval,
            settings.iamalive_interval,
        );
        loop {
            let overdue = unanswered
                .deadline()
                .unwrap_or_else(|| Instant::now() + settings.subscriber_reply_timeout);
            tokio::select! {
                _ = stopped(&mut stop) => return Ok(()),
                body = received.recv() => match body {
                    None => return Ok(()),
                    Some(body) => answer(body, settings, &mut subscriber, &mut unanswered)?,
                },
                event = events.recv() => match event {
                    Ok(event) => {
                        // Loop prevention: the broker an event came from
                        // already has it.
                        if !event.origin_ivo.is_empty() && event.origin_ivo == subscriber.identity {
                            metrics::counter!(names::VTP_LOOPS_PREVENTED_TOTAL).increment(1);
                            continue;
                        }
                        if !subscriber.wants(&event.packet, settings) {
                            metrics::counter!(names::VTP_EVENTS_FILTERED_TOTAL).increment(1);
                            continue;
                        }
                        send(&mut writer, &event.packet, settings).await?;
                        unanswered.sent(Instant::now())?;
                        metrics::counter!(names::VTP_EVENTS_OUT_TOTAL, "peer" => peer_label.clone())
                            .increment(1);
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => return Err(DropReason::Lagged),
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                },
                _ = alive.tick() => {
                    unanswered.check_outstanding()?;
                    let iamalive = message::iamalive(&settings.local_ivo, crate::clock::now_micros());
                    send(&mut writer, &iamalive, settings).await?;
                    unanswered.sent(Instant::now())?;
                }
                _ = tokio::time::sleep_until(overdue) => unanswered.check(Instant::now())?,
            }
        }
    }
    .await;
    reading.abort();
    result
}

/// What a subscriber said of itself in its `authenticate` answer.
#[derive(Debug, Default)]
struct Subscriber {
    /// Its IVORN (`Response`); empty until it answers.
    identity: String,
    /// Its XPath filters; none: every event.
    filters: Vec<Filter>,
}

impl Subscriber {
    /// Whether the event `packet` passes one of the filters (Comet's rule).
    fn wants(&self, packet: &[u8], settings: &Settings) -> bool {
        if self.filters.is_empty() {
            return true;
        }
        match message::parse(packet, settings.parser_limits()) {
            Ok(Incoming::VoEvent(root)) => self.filters.iter().any(|f| f.matches(&root)),
            // Only VOEvents are broadcast; this cannot be one.
            Ok(Incoming::Transport(_)) | Err(_) => false,
        }
    }

    /// Takes the name and filters of an `authenticate` answer. A filter
    /// outside the supported subset is left out, with a warning, as Comet
    /// leaves out one lxml cannot compile.
    fn authenticated(&mut self, message: message::Transport) {
        if let Some(response) = message.response {
            self.identity = response;
        }
        self.filters = message
            .filters
            .iter()
            .filter_map(|text| match Filter::parse(text) {
                Ok(filter) => Some(filter),
                Err(error) => {
                    tracing::warn!(subscriber = %self.identity, %error, "VTP subscriber filter ignored");
                    None
                }
            })
            .collect();
        if !self.filters.is_empty() {
            tracing::info!(subscriber = %self.identity, filters = ?message.filters, "VTP subscriber filters installed");
        }
    }
}

/// Handles one message from a subscriber.
fn answer(
    body: Received,
    settings: &Settings,
    subscriber: &mut Subscriber,
    unanswered: &mut Unanswered,
) -> Result<(), DropReason> {
    let body = body.map_err(|_| DropReason::Malformed)?;
    let message = match message::parse(&body, settings.parser_limits()) {
        Ok(Incoming::Transport(message)) => message,
        Ok(Incoming::VoEvent(_)) | Err(_) => return Err(DropReason::Malformed),
    };
    match message.role {
        Role::Ack => {
            metrics::counter!(names::VTP_ACKS_TOTAL, "direction" => "received").increment(1);
            unanswered.answered();
        }
        Role::IAmAlive => unanswered.answered(),
        // The answer to our `authenticate`: who it is, what it wants.
        Role::Authenticate => subscriber.authenticated(message),
        Role::Nak => {
            metrics::counter!(names::VTP_NAKS_TOTAL, "direction" => "received", "reason" => "subscriber")
                .increment(1);
            return Err(DropReason::Nak);
        }
    }
    Ok(())
}

async fn send<W: AsyncWrite + Unpin>(
    writer: &mut W,
    body: &[u8],
    settings: &Settings,
) -> Result<(), DropReason> {
    match tokio::time::timeout(
        settings.subscriber_reply_timeout,
        frame::write_frame(writer, body),
    )
    .await
    {
        Ok(Ok(())) => Ok(()),
        // A write that fails or stalls ends the subscription.
        Ok(Err(_)) | Err(_) => Err(DropReason::WriteFailed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(60);

    #[test]
    fn an_answer_settles_the_oldest_message() {
        let t0 = Instant::now();
        let mut unanswered = Unanswered::new(10, 100, TIMEOUT);
        unanswered.sent(t0).unwrap();
        unanswered.sent(t0 + Duration::from_secs(30)).unwrap();
        unanswered.answered();
        assert_eq!(unanswered.check(t0 + Duration::from_secs(61)), Ok(()));
        assert_eq!(
            unanswered.check(t0 + Duration::from_secs(91)),
            Err(DropReason::Timeout)
        );
        assert_eq!(unanswered.deadline(), Some(t0 + Duration::from_secs(90)));
    }

    #[test]
    fn a_burst_may_run_ahead_of_the_acks_until_an_iamalive_is_due() {
        let t0 = Instant::now();
        let mut unanswered = Unanswered::new(2, 100, TIMEOUT);
        for _ in 0..3 {
            unanswered.sent(t0).unwrap();
        }
        assert_eq!(unanswered.check_outstanding(), Err(DropReason::Unanswered));
        unanswered.answered();
        assert_eq!(unanswered.check_outstanding(), Ok(()));
    }

    #[test]
    fn answers_as_far_behind_as_the_queue_is_long_are_lagging() {
        let t0 = Instant::now();
        let mut unanswered = Unanswered::new(2, 3, TIMEOUT);
        for _ in 0..3 {
            unanswered.sent(t0).unwrap();
        }
        assert_eq!(unanswered.sent(t0), Err(DropReason::Lagged));
    }

    #[test]
    fn nothing_sent_is_never_overdue() {
        let unanswered = Unanswered::new(2, 3, TIMEOUT);
        assert_eq!(unanswered.check(Instant::now() + TIMEOUT * 10), Ok(()));
        assert_eq!(unanswered.deadline(), None);
    }

    fn publish(node: &str, vtp: Option<Box<vomesh_proto::pubsub::VtpIngest>>) -> Publish {
        Publish {
            node: node.into(),
            vtp,
            ..Publish::default()
        }
    }

    fn item(payload: &str) -> Item {
        Item {
            id: "ivo://a.b/c#d".into(),
            payload: payload.into(),
            publisher: jid::Jid::new("localhost").unwrap(),
            published_micros: 0,
            archive_id: 1,
        }
    }

    #[tokio::test]
    async fn the_feed_carries_vtp_packets_byte_for_byte_and_xmpp_items_with_a_declaration() {
        let feed = Feed::new(8, &["voevent/".to_owned()]);
        let mut receiver = feed.subscribe();
        let packet = b"<?xml version='1.0'?>\n<voe:VOEvent/>\n".to_vec();
        feed.offer(
            &publish(
                "voevent/a.b/c",
                Some(Box::new(vomesh_proto::pubsub::VtpIngest {
                    peer_ivo: "ivo://up/stream".into(),
                    packet: packet.clone(),
                })),
            ),
            &item("<voe:VOEvent/>"),
        );
        feed.offer(&publish("elsewhere", None), &item("<x/>"));
        feed.offer(&publish("voevent/a.b/c", None), &item("<voe:VOEvent/>"));
        let first = receiver.recv().await.unwrap();
        assert_eq!(first.packet.as_ref(), packet.as_slice());
        assert_eq!(first.origin_ivo, "ivo://up/stream");
        let second = receiver.recv().await.unwrap();
        assert_eq!(
            second.packet.as_ref(),
            format!("{DECLARATION}<voe:VOEvent/>").as_bytes()
        );
        assert!(second.origin_ivo.is_empty());
        assert!(receiver.try_recv().is_err());
    }
}
