//! Subscriptions to remote VTP brokers (`[vtp] upstream`): this site
//! connects to each broadcaster, answers its `authenticate` and `iamalive`
//! messages, publishes every event it sends into the mesh and acks it, and
//! reconnects with a capped exponential back-off when the connection drops
//! or falls silent for `upstream_idle_timeout_secs`.
//!
//! Events are acked even when they are not published (a duplicate, an
//! invalid packet, a mesh that cannot commit right now), as Comet's
//! subscriber does: VTP 2.0 §6.4 lets a broker drop a subscriber that naks,
//! and losing the subscription would lose every later event too. Refusals
//! are logged and counted in `vomesh_vtp_events_refused_total{source="upstream"}`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::metrics::names;
use crate::vtp::frame::{self, FrameError};
use crate::vtp::ingest::{Ingest, Verdict};
use crate::vtp::message::{self, Incoming, Role};
use crate::vtp::{Settings, stopped};

/// First reconnection delay; doubled after each failure up to
/// `upstream_retry_max_secs`.
const RETRY_FIRST: Duration = Duration::from_secs(1);
/// A connection that lasted this long was a success: the back-off starts
/// over (Comet's `RESET_DELAY`). One closed sooner — a broker refusing
/// this site — keeps backing off instead of being redialled every second.
const RETRY_RESET_AFTER: Duration = Duration::from_secs(5);

/// Keeps a subscription to the broker at `address` (`HOST:PORT`) until `stop`.
pub async fn subscribe(
    address: String,
    settings: Arc<Settings>,
    ingest: Arc<Ingest>,
    mut stop: watch::Receiver<bool>,
) {
    let mut delay = RETRY_FIRST;
    loop {
        let connected = tokio::select! {
            _ = stopped(&mut stop) => return,
            connected = tokio::time::timeout(settings.author_timeout, TcpStream::connect(&address)) => connected,
        };
        match connected {
            Ok(Ok(stream)) => {
                tracing::info!(upstream = %address, "subscribed to VTP broker");
                metrics::gauge!(names::VTP_PEERS, "role" => "upstream").increment(1.0);
                let connected_at = Instant::now();
                let ended = tokio::select! {
                    _ = stopped(&mut stop) => Ok(()),
                    ended = serve(stream, &address, &settings, &ingest) => ended,
                };
                metrics::gauge!(names::VTP_PEERS, "role" => "upstream").decrement(1.0);
                if *stop.borrow() {
                    return;
                }
                match ended {
                    Ok(()) => {
                        tracing::info!(upstream = %address, "VTP broker closed the connection")
                    }
                    Err(error) => {
                        tracing::warn!(upstream = %address, %error, "VTP subscription lost")
                    }
                }
                if connected_at.elapsed() >= RETRY_RESET_AFTER {
                    delay = RETRY_FIRST;
                }
            }
            Ok(Err(error)) => {
                tracing::warn!(upstream = %address, %error, "cannot reach VTP broker")
            }
            Err(_) => tracing::warn!(upstream = %address, "connecting to VTP broker timed out"),
        }
        tokio::select! {
            _ = stopped(&mut stop) => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(settings.upstream_retry_max);
    }
}

#[derive(Debug, thiserror::Error)]
enum UpstreamError {
    #[error("silent for {0:?}")]
    Idle(Duration),
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Serves one connection until it closes (`Ok`) or fails.
async fn serve(
    mut stream: TcpStream,
    address: &str,
    settings: &Settings,
    ingest: &Ingest,
) -> Result<(), UpstreamError> {
    // The broker's name, from the Origin of its authenticate or iamalive:
    // recorded with every event it sends, so the broadcast port does not
    // send the event back to it.
    let mut peer_ivo = String::new();
    // Each message is written whole; waiting to coalesce only adds latency.
    let _ = stream.set_nodelay(true);
    loop {
        let body = match tokio::time::timeout(
            settings.upstream_idle_timeout,
            frame::read_frame(&mut stream, settings.max_message_bytes),
        )
        .await
        {
            Err(_) => return Err(UpstreamError::Idle(settings.upstream_idle_timeout)),
            Ok(Ok(None)) => return Ok(()),
            Ok(Ok(Some(body))) => body,
            Ok(Err(error)) => return Err(error.into()),
        };
        let now = crate::clock::now_micros();
        let reply = match message::parse(&body, settings.parser_limits()) {
            Ok(Incoming::Transport(message)) => {
                if let Some(origin) = &message.origin
                    && matches!(message.role, Role::IAmAlive | Role::Authenticate)
                {
                    peer_ivo.clone_from(origin);
                }
                match message.role {
                    Role::IAmAlive => Some(message::iamalive_response(
                        &settings.local_ivo,
                        &peer_ivo,
                        now,
                    )),
                    Role::Authenticate => Some(message::authenticate_response(
                        &settings.local_ivo,
                        &peer_ivo,
                        now,
                    )),
                    // A broadcaster does not ack or nak its subscriber.
                    Role::Ack | Role::Nak => None,
                }
            }
            Ok(Incoming::VoEvent(root)) => {
                metrics::counter!(names::VTP_EVENTS_IN_TOTAL, "source" => "upstream", "peer" => address.to_owned())
                    .increment(1);
                let verdict = ingest.publish(&body, &root, &peer_ivo, "upstream").await;
                let ivorn = match verdict {
                    Verdict::Committed { ivorn } | Verdict::Refused { ivorn, .. } => ivorn,
                };
                metrics::counter!(names::VTP_ACKS_TOTAL, "direction" => "sent").increment(1);
                Some(message::ack(&settings.local_ivo, &ivorn, now))
            }
            Err(error) => {
                tracing::warn!(upstream = %address, %error, "unreadable message from VTP broker ignored");
                None
            }
        };
        if let Some(reply) = reply {
            tokio::time::timeout(
                settings.author_timeout,
                frame::write_frame(&mut stream, &reply),
            )
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        }
    }
}
