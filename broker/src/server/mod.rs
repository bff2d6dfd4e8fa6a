//! A running vomesh node: listeners, the tasks behind them, and an orderly
//! shutdown.
//!
//! # Layout
//! - [`broker`]: the site's broker: the mesh node replicating the state,
//!   proposals, accounts.
//! - [`pubsub_component`]: the pubsub service as a router component.
//! - [`c2s`]: the task serving one client connection.
//! - [`admin_api`]: the `/api` routes of the admin listener (accounts,
//!   status, membership).
//! - [`mesh_setup`]: the mesh configuration derived from `[mesh]`.
//!
//! Shutdown follows mini-redis: a `watch` channel tells every task to stop;
//! listeners stop accepting, each connection closes its stream with a
//! `<system-shutdown/>` stream error, and the node waits (bounded) for them
//! to finish before storage is dropped (and so flushed).

pub mod admin_api;
pub mod broker;
pub mod c2s;
pub mod mesh_setup;
pub mod pubsub_component;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use vomesh_mesh::node::MeshNode;

use crate::accounts::AccountFactory;
use crate::admin::{self, AdminState};
use crate::config::Config;
use crate::metrics::{Metrics, names};
use crate::pubsub::{PubsubLimits, PubsubService};
use crate::replica::Replica;
use crate::sasl::{AuthBackoff, BackoffLimits};
use crate::tls;
use crate::xml::ParserLimits;
use crate::xmpp::router::Router;
use broker::Broker;
use c2s::{C2sContext, C2sLimits};
use pubsub_component::{PubsubComponent, PubsubHandle, RouterDelivery};

/// How long connections get to close their streams on shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Addresses the back-off remembers at most (bounded memory under a
/// distributed guessing attack; see `AuthBackoff`).
const BACKOFF_TRACKED_IPS_MAX: usize = 100_000;
/// Quiet time after which an address's failures are forgotten.
const BACKOFF_FORGET_AFTER_SECS: u64 = 3600;

/// The addresses a started node listens on (useful when configured with
/// port 0, as tests do).
#[derive(Debug, Clone)]
pub struct BoundAddrs {
    pub xmpp: SocketAddr,
    pub xmpp_tls: Option<SocketAddr>,
    pub admin: SocketAddr,
    /// The VTP author and broadcast ports, when `[vtp]` is set.
    pub vtp: Option<crate::vtp::VtpAddrs>,
}

/// Runs a node until `shutdown` resolves. `on_ready` is called with the
/// bound addresses once every listener accepts.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()>,
    on_ready: impl FnOnce(&BoundAddrs),
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data_dir {}", config.data_dir.display()))?;
    let metrics = Metrics::install()?;
    let upkeep = metrics.spawn_upkeep(config.data_dir.clone());

    let starttls = TlsAcceptor::from(tls::xmpp_server_config(&config)?);
    let direct_tls = TlsAcceptor::from(tls::direct_tls_config(&config)?);
    let router = Arc::new(Router::new(&config.domain));

    // The replicated state delivers what it applies to this site's sessions
    // and, with the VTP bridge on, to its VTP subscribers.
    let service_jid = pubsub_component::service_jid(&config.domain)?;
    let vtp_feed = config.vtp.as_ref().map(|vtp| {
        crate::vtp::broadcast::Feed::new(vtp.subscriber_queue_events, &vtp.broadcast_node_prefixes)
    });
    let replica = Replica::new(
        PubsubService::new(service_jid.clone(), pubsub_limits(&config)),
        Arc::new(RouterDelivery {
            router: router.clone(),
            service_jid: service_jid.to_string(),
            vtp: vtp_feed.clone(),
        }),
    );
    let mesh = MeshNode::start(mesh_setup::mesh_config(&config)?, replica)
        .await
        .context("cannot start the mesh")?;
    let sessions = router.clone();
    mesh.count_clients_with(move || sessions.session_count() as u64);
    let broker = Arc::new(Broker::new(
        mesh.clone(),
        AccountFactory::new(config.xmpp.scram_iterations)?,
        &config.domain,
    ));
    let component = PubsubComponent::new(
        broker.clone(),
        router.clone(),
        service_jid.as_str(),
        config.pubsub.max_inflight_proposals,
    );
    router.add_component(
        service_jid.as_str(),
        Arc::new(PubsubHandle(component.clone())),
    );

    let ctx = Arc::new(C2sContext::new(
        config.domain.clone(),
        config.pubsub_domain(),
        c2s_limits(&config),
        starttls,
        router.clone(),
        broker.clone(),
        AuthBackoff::new(BackoffLimits {
            failures_free: config.xmpp.auth_failures_free,
            delay_base_ms: config.xmpp.auth_backoff_base_ms,
            delay_max_ms: config.xmpp.auth_backoff_max_ms,
            forget_after_secs: BACKOFF_FORGET_AFTER_SECS,
            tracked_ips_max: BACKOFF_TRACKED_IPS_MAX,
        }),
        node_secret(&config.data_dir)?,
    ));

    let xmpp_listener = bind(config.xmpp.listen, "XMPP").await?;
    let tls_listener = match config.xmpp.listen_tls {
        Some(addr) => Some(bind(addr, "XMPP direct TLS").await?),
        None => None,
    };
    let admin_listener = bind(config.admin.listen, "admin").await?;
    let mut addrs = BoundAddrs {
        xmpp: xmpp_listener.local_addr()?,
        xmpp_tls: tls_listener
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()?,
        admin: admin_listener.local_addr()?,
        vtp: None,
    };

    let (stop_tx, stop_rx) = watch::channel(false);
    // One permit per connection: at the limit, accepting pauses and new
    // clients wait in the kernel's backlog instead of being served badly.
    let connections = Arc::new(Semaphore::new(config.xmpp.max_connections));
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(accept_loop(
        xmpp_listener,
        None,
        ctx.clone(),
        connections.clone(),
        stop_rx.clone(),
    ));
    if let Some(listener) = tls_listener {
        tasks.spawn(accept_loop(
            listener,
            Some(direct_tls),
            ctx.clone(),
            connections.clone(),
            stop_rx.clone(),
        ));
    }
    tasks.spawn(component.expire_items(stop_rx.clone()));
    if let (Some(vtp), Some(feed)) = (&config.vtp, vtp_feed) {
        addrs.vtp = Some(
            crate::vtp::start(
                vtp,
                &config.domain,
                broker.clone(),
                feed,
                &stop_rx,
                &mut tasks,
            )
            .await?,
        );
    }
    let ready_lag_max = config.admin.ready_applied_lag_max;
    let readiness_mesh = mesh.clone();
    let admin_state = AdminState {
        metrics,
        readiness: Arc::new(move || {
            admin_api::not_ready_reasons(&readiness_mesh.status(), ready_lag_max)
        }),
        refresh_gauges: {
            let broker = broker.clone();
            Arc::new(move || broker.read(Replica::record_gauges))
        },
        token: config.admin.token.clone(),
    };
    let admin_router = admin::router(
        admin_state,
        admin_api::router(broker.clone(), router.clone(), ready_lag_max),
    );
    let mut admin_stop = stop_rx.clone();
    tasks.spawn(async move {
        let stopped = async move {
            let _ = admin_stop.wait_for(|stop| *stop).await;
        };
        if let Err(error) = admin::serve(admin_listener, admin_router, stopped).await {
            tracing::error!(%error, "admin listener failed");
        }
    });

    tracing::info!(
        domain = %config.domain,
        xmpp = %addrs.xmpp,
        xmpp_tls = ?addrs.xmpp_tls,
        admin = %addrs.admin,
        vtp = ?addrs.vtp,
        workers = tokio::runtime::Handle::current().metrics().num_workers(),
        "vomesh node ready"
    );
    on_ready(&addrs);
    shutdown.await;

    tracing::info!("shutting down: closing client streams");
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    // Every connection holds a permit until it has closed its stream.
    let all = u32::try_from(config.xmpp.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(DRAIN_TIMEOUT, connections.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("some connections did not close within {DRAIN_TIMEOUT:?}");
    }
    // Every acknowledged write was fsynced at commit; this closes the mesh's
    // files cleanly.
    mesh.shutdown().await;
    upkeep.abort();
    tracing::info!("stopped");
    Ok(())
}

/// The node's 32-byte secret in `<data_dir>/node.secret`, created (mode
/// 0600, fsynced) on first start.
fn node_secret(data_dir: &std::path::Path) -> anyhow::Result<[u8; 32]> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;

    let path = data_dir.join("node.secret");
    match std::fs::read(&path) {
        Ok(bytes) => {
            return <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
                anyhow::anyhow!(
                    "{} is not 32 bytes long; delete it to make a new one",
                    path.display()
                )
            });
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error).with_context(|| format!("cannot read {}", path.display())),
    }
    let mut secret = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret)
        .map_err(|_| anyhow::anyhow!("the operating system's random source failed"))?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(&secret)?;
    file.sync_all()?;
    Ok(secret)
}

fn pubsub_limits(config: &Config) -> PubsubLimits {
    let pubsub = &config.pubsub;
    PubsubLimits {
        nodes_max: pubsub.max_nodes,
        items_per_node_default: pubsub.default_max_items,
        items_per_node_max: pubsub.max_items_per_node,
        payload_bytes_max: pubsub.max_payload_bytes,
        subscriptions_per_node_max: pubsub.max_subscriptions_per_node,
        node_id_bytes_max: pubsub.max_node_id_bytes,
        archive_entries_per_node_max: pubsub.max_archive_entries_per_node,
        archive_bytes_max: pubsub.max_archive_bytes,
        archive_age_max_seconds: pubsub.max_archive_age_seconds,
        page_items_max: pubsub.max_page_items,
    }
}

fn c2s_limits(config: &Config) -> C2sLimits {
    let xmpp = &config.xmpp;
    C2sLimits {
        parser: ParserLimits {
            stanza_bytes_max: xmpp.max_stanza_bytes,
            depth_max: xmpp.max_xml_depth,
            attributes_max: xmpp.max_xml_attributes,
        },
        outbound_stanzas_max: xmpp.max_outbound_stanzas,
        stream_open_timeout: xmpp.stream_open_timeout(),
        idle_timeout: xmpp.idle_timeout(),
        write_timeout: xmpp.write_timeout(),
        auth_attempts_max: xmpp.auth_attempts_max,
    }
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for {what} on {addr}"))
}

async fn accept_loop(
    listener: TcpListener,
    direct_tls: Option<TlsAcceptor>,
    ctx: Arc<C2sContext>,
    connections: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let permit = tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return,
            permit = connections.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
        };
        let accepted: std::io::Result<(TcpStream, SocketAddr)> = tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Usually EMFILE: back off briefly rather than spin.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let ctx = ctx.clone();
        let direct_tls = direct_tls.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            metrics::gauge!(names::C2S_CONNECTIONS).increment(1.0);
            c2s::serve(ctx, stream, peer, direct_tls, stop).await;
            metrics::gauge!(names::C2S_CONNECTIONS).decrement(1.0);
            drop(permit);
        });
    }
}
