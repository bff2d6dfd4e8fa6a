//! The author port: an author connects, sends one VOEvent, and is answered
//! `ack` (Origin: the event's IVORN) once the event is committed in the
//! mesh and applied at this site, or `nak` with the reason in
//! `Meta/Result`; then the connection closes (VTP 2.0 §5, Comet's
//! receiver). The whole exchange but the commit is bounded by
//! `author_timeout_secs`; the commit by the mesh's propose timeout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::metrics::names;
use crate::vtp::frame::{self, FrameError};
use crate::vtp::ingest::{Ingest, Refusal, Verdict};
use crate::vtp::message::{self, Incoming};
use crate::vtp::{LimitedListener, Settings, allowed};

/// Accepts authors until `stop`; at most `max_author_connections` are
/// served at once.
pub async fn accept_loop(
    listener: LimitedListener,
    settings: Arc<Settings>,
    ingest: Arc<Ingest>,
    mut stop: watch::Receiver<bool>,
) {
    while let Some((stream, peer, slot)) = listener.next(&mut stop).await {
        let (settings, ingest) = (settings.clone(), ingest.clone());
        tokio::spawn(async move {
            metrics::gauge!(names::VTP_PEERS, "role" => "author").increment(1.0);
            serve(stream, peer, &settings, &ingest).await;
            metrics::gauge!(names::VTP_PEERS, "role" => "author").decrement(1.0);
            drop(slot);
        });
    }
}

/// One submission: read, judge, answer, close.
async fn serve(mut stream: TcpStream, peer: SocketAddr, settings: &Settings, ingest: &Ingest) {
    // Each message is written whole; waiting to coalesce only adds latency.
    let _ = stream.set_nodelay(true);
    let body = match tokio::time::timeout(
        settings.author_timeout,
        frame::read_frame(&mut stream, settings.max_message_bytes),
    )
    .await
    {
        Ok(Ok(Some(body))) => body,
        Ok(Ok(None)) => return,
        Ok(Err(error)) => {
            tracing::info!(%peer, %error, "VTP author sent no valid message");
            let reason = match error {
                FrameError::TooLarge { .. } => Refusal::TooLarge,
                FrameError::Empty | FrameError::Io(_) => Refusal::Malformed,
            };
            count_refusal(reason);
            let verdict = Verdict::refused(reason, error.to_string(), "");
            return answer(&mut stream, settings, &verdict, None).await;
        }
        Err(_) => {
            tracing::info!(%peer, "VTP author timed out before sending an event");
            return;
        }
    };
    let received = Instant::now();
    let peer_label = peer.ip().to_string();
    metrics::counter!(names::VTP_EVENTS_IN_TOTAL, "source" => "author", "peer" => peer_label)
        .increment(1);
    let verdict = match message::parse(&body, settings.parser_limits()) {
        // Checked after reading, so the author learns why in a nak.
        _ if !allowed(&settings.author_allow, peer) => Verdict::refused(
            Refusal::NotAllowed,
            format!("{} is not in this broker's author allow-list", peer.ip()),
            "",
        ),
        Ok(Incoming::VoEvent(root)) => ingest.publish(&body, &root, "", "author").await,
        Ok(Incoming::Transport(_)) => Verdict::refused(
            Refusal::Malformed,
            "an author sends a VOEvent, not a Transport message",
            "",
        ),
        Err(error) => Verdict::refused(Refusal::Malformed, error.to_string(), ""),
    };
    if let Verdict::Refused {
        reason: reason @ (Refusal::NotAllowed | Refusal::Malformed),
        ..
    } = &verdict
    {
        // `Ingest::publish` counts the refusals it decides; these are ours.
        count_refusal(*reason);
    }
    answer(&mut stream, settings, &verdict, Some(received)).await;
}

fn count_refusal(reason: Refusal) {
    metrics::counter!(names::VTP_EVENTS_REFUSED_TOTAL, "source" => "author", "reason" => reason.label())
        .increment(1);
}

/// Sends the ack or nak and closes.
async fn answer(
    stream: &mut TcpStream,
    settings: &Settings,
    verdict: &Verdict,
    received: Option<Instant>,
) {
    let now = crate::clock::now_micros();
    let body = match verdict {
        Verdict::Committed { ivorn } => {
            metrics::counter!(names::VTP_ACKS_TOTAL, "direction" => "sent").increment(1);
            message::ack(&settings.local_ivo, ivorn, now)
        }
        Verdict::Refused {
            reason,
            text,
            ivorn,
        } => {
            metrics::counter!(names::VTP_NAKS_TOTAL, "direction" => "sent", "reason" => reason.label())
                .increment(1);
            message::nak(&settings.local_ivo, ivorn, text, now)
        }
    };
    let written =
        tokio::time::timeout(settings.author_timeout, frame::write_frame(stream, &body)).await;
    if let (Ok(Ok(())), Some(received)) = (written, received) {
        metrics::histogram!(names::VTP_AUTHOR_ANSWER_SECONDS)
            .record(received.elapsed().as_secs_f64());
    }
    // Comet's sender closes after the answer; close our side too.
    let _ = tokio::io::AsyncWriteExt::shutdown(stream).await;
}
