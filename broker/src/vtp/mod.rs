//! The bridge to the VOEvent Transport Protocol network (IVOA VTP 2.0):
//! a site ingests events from VTP authors and upstream brokers into the
//! mesh, and serves VTP subscribers every event published in the mesh.
//!
//! # Layout
//! - [`frame`]: the 4-byte length-prefixed framing.
//! - [`message`]: Transport messages (iamalive, authenticate, ack, nak)
//!   parsed and built; VOEvent bodies recognised.
//! - [`route`]: which pubsub node an event is published to.
//! - [`filter`]: the XPath subset subscribers filter events with.
//! - [`ingest`]: publish one received event through the mesh, ack or nak.
//! - [`author`]: the author port (one event per connection).
//! - [`broadcast`]: the broadcast port and the [`broadcast::Feed`] the
//!   replica hands applied publishes to.
//! - [`upstream`]: subscriptions to remote VTP brokers.
//!
//! The first four are pure and unit-tested; the rest are thin tokio tasks.
//! Both directions go through the mesh: ingested events are proposed like
//! XMPP publishes, and every site's broadcast port is fed from its own
//! replica as it applies them, so an event ingested at one site reaches VTP
//! subscribers at every site, exactly once.

pub mod author;
pub mod broadcast;
pub mod filter;
pub mod frame;
pub mod ingest;
pub mod message;
pub mod route;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use ipnet::IpNet;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;

use crate::config::VtpConfig;
use crate::server::broker::Broker;
use crate::xml::ParserLimits;

/// `[vtp]` as the tasks use it.
#[derive(Debug, Clone)]
pub struct Settings {
    pub local_ivo: String,
    pub author_allow: Vec<IpNet>,
    pub subscriber_allow: Vec<IpNet>,
    pub max_message_bytes: usize,
    pub author_timeout: Duration,
    pub iamalive_interval: Duration,
    pub subscriber_reply_timeout: Duration,
    pub max_unanswered_per_subscriber: usize,
    pub subscriber_queue_events: usize,
    pub max_subscribers: usize,
    pub max_author_connections: usize,
    pub upstream_idle_timeout: Duration,
    pub upstream_retry_max: Duration,
}

/// Nesting and attribute bounds of a VTP message: generous for VOEvents
/// (a few levels of Group/Param), tight enough to bound the parser's work.
const XML_DEPTH_MAX: usize = 64;
const XML_ATTRIBUTES_MAX: usize = 64;

impl Settings {
    pub fn new(config: &VtpConfig, domain: &str) -> Settings {
        let secs = Duration::from_secs;
        Settings {
            local_ivo: config.local_ivo_or_default(domain),
            author_allow: config.author_allow.clone(),
            subscriber_allow: config.subscriber_allow.clone(),
            max_message_bytes: config.max_message_bytes,
            author_timeout: secs(config.author_timeout_secs),
            iamalive_interval: secs(config.iamalive_interval_secs),
            subscriber_reply_timeout: secs(config.subscriber_reply_timeout_secs),
            max_unanswered_per_subscriber: config.max_unanswered_per_subscriber,
            subscriber_queue_events: config.subscriber_queue_events,
            max_subscribers: config.max_subscribers,
            max_author_connections: config.max_author_connections,
            upstream_idle_timeout: secs(config.upstream_idle_timeout_secs),
            upstream_retry_max: secs(config.upstream_retry_max_secs),
        }
    }

    pub fn parser_limits(&self) -> ParserLimits {
        ParserLimits {
            stanza_bytes_max: self.max_message_bytes,
            depth_max: XML_DEPTH_MAX,
            attributes_max: XML_ATTRIBUTES_MAX,
        }
    }
}

/// Whether `peer` is inside one of `networks`. IPv4 peers that reach an
/// IPv6 socket as mapped addresses match IPv4 networks.
pub fn allowed(networks: &[IpNet], peer: SocketAddr) -> bool {
    let ip = peer.ip().to_canonical();
    networks.iter().any(|net| net.contains(&ip))
}

/// A listener that serves at most a fixed number of connections at once:
/// at the limit it stops accepting, and new peers wait in the kernel's
/// backlog rather than being served badly (as the XMPP listeners do).
pub struct LimitedListener {
    listener: TcpListener,
    slots: Arc<Semaphore>,
    what: &'static str,
}

impl LimitedListener {
    pub fn new(listener: TcpListener, connections_max: usize, what: &'static str) -> Self {
        LimitedListener {
            listener,
            slots: Arc::new(Semaphore::new(connections_max)),
            what,
        }
    }

    /// The next connection and the slot it holds until dropped; `None` once
    /// `stop` turns true.
    pub async fn next(
        &self,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<(TcpStream, SocketAddr, OwnedSemaphorePermit)> {
        let permit = tokio::select! {
            _ = stopped(stop) => return None,
            permit = self.slots.clone().acquire_owned() => permit.ok()?,
        };
        loop {
            tokio::select! {
                _ = stopped(stop) => return None,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => return Some((stream, peer, permit)),
                    Err(error) => {
                        // Usually EMFILE: back off briefly rather than spin.
                        tracing::warn!(%error, what = self.what, "VTP accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
    }
}

/// Resolves once `stop` turns true. Unlike `wait_for`, holds no borrow of
/// the value when it resolves, so `select!` arms after it may await.
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Where the bridge listens.
#[derive(Debug, Clone, Copy)]
pub struct VtpAddrs {
    pub author: SocketAddr,
    pub broadcast: SocketAddr,
}

/// Binds the author and broadcast ports and spawns the bridge's tasks into
/// `tasks`; they end when `stop` turns true.
pub async fn start(
    config: &VtpConfig,
    domain: &str,
    broker: Arc<Broker>,
    feed: broadcast::Feed,
    stop: &watch::Receiver<bool>,
    tasks: &mut JoinSet<()>,
) -> anyhow::Result<VtpAddrs> {
    let settings = Arc::new(Settings::new(config, domain));
    let template = route::NodeTemplate::parse(&config.node_template)
        .map_err(|reason| anyhow::anyhow!("vtp.node_template: {reason}"))?;
    let ingest = Arc::new(ingest::Ingest {
        broker,
        template,
        actor: jid::Jid::new(domain).context("the domain is not a JID")?,
    });
    let author = TcpListener::bind(config.author_listen)
        .await
        .with_context(|| format!("cannot listen for VTP authors on {}", config.author_listen))?;
    let broadcast_listener = TcpListener::bind(config.broadcast_listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen for VTP subscribers on {}",
                config.broadcast_listen
            )
        })?;
    let addrs = VtpAddrs {
        author: author.local_addr()?,
        broadcast: broadcast_listener.local_addr()?,
    };
    tasks.spawn(author::accept_loop(
        LimitedListener::new(author, settings.max_author_connections, "author"),
        settings.clone(),
        ingest.clone(),
        stop.clone(),
    ));
    tasks.spawn(broadcast::accept_loop(
        LimitedListener::new(broadcast_listener, settings.max_subscribers, "broadcast"),
        settings.clone(),
        feed,
        stop.clone(),
    ));
    for address in &config.upstream {
        tasks.spawn(upstream::subscribe(
            address.clone(),
            settings.clone(),
            ingest.clone(),
            stop.clone(),
        ));
    }
    tracing::info!(
        author = %addrs.author,
        broadcast = %addrs.broadcast,
        upstream = ?config.upstream,
        local_ivo = %settings.local_ivo,
        "VTP bridge ready"
    );
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_lists_match_by_network_including_mapped_ipv4() {
        let nets: Vec<IpNet> = vec![
            "127.0.0.0/8".parse().unwrap(),
            "2001:db8::/32".parse().unwrap(),
        ];
        assert!(allowed(&nets, "127.1.2.3:1".parse().unwrap()));
        assert!(allowed(&nets, "[::ffff:127.0.0.1]:1".parse().unwrap()));
        assert!(allowed(&nets, "[2001:db8::1]:1".parse().unwrap()));
        assert!(!allowed(&nets, "10.0.0.1:1".parse().unwrap()));
    }
}
