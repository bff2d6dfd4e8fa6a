//! The QUIC transport between mesh nodes (quinn + rustls with ring, mutual
//! TLS): the endpoint that serves peers' RPCs and sends this node's. The
//! openraft client on top of it is [`crate::network`].
//!
//! - **Authentication.** Both sides present a certificate signed by the
//!   cluster CA, the only trust root. A node dials peer `<id>` with the TLS
//!   server name `node-<id>.vomesh.internal`, so the handshake fails unless
//!   the peer holds that node's certificate. The accepting side requires a
//!   client certificate (nothing unauthenticated gets a stream) and checks
//!   the node id each request claims against the SANs of that certificate
//!   before handing the request on.
//! - **One connection per peer** for the RPCs a node sends, dialled lazily
//!   by the first RPC that needs it (a client's constructor never dials), in
//!   a task of its own so a slow handshake outlives an impatient RPC, and
//!   dialled again when it was lost or an exchange on it failed or timed out
//!   (a peer killed without closing, or restarted, is then reached at once
//!   rather than after the idle timeout). A peer restarted after a crash
//!   resets the connections of its previous life with a stateless reset (its
//!   reset key is derived from its node key). Each direction has its own
//!   connection, so neither side has to decide who dials.
//! - **A stream per RPC** (an append session gets one long-lived stream), so
//!   a heartbeat never queues behind a large append or a snapshot; each
//!   stream carries a priority for the sender's bandwidth.
//! - **Deadlines.** Every call runs under the caller's deadline and says
//!   whether the request certainly never left ([`RpcError::NotSent`]) or may
//!   have reached the peer; on the receiving side, a request that stalls
//!   mid-way loses its stream.
//! - **Bounded frames.** A frame is a u32 big-endian length and a protobuf
//!   message; a length above `frame_bytes_max` ends the stream before
//!   anything is allocated. A snapshot is sent as a `SnapshotOffer` frame
//!   followed by chunks of at most `snapshot_chunk_bytes`, its announced size
//!   bounded by `snapshot_bytes_max`.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use futures_util::future::{FutureExt, Shared};
use openraft::base::{BoxFuture, BoxStream};
use prost::Message;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::task::JoinHandle;
use vomesh_proto::mesh as pb;

use crate::certs::{NodeIdentity, node_dns_name};
use crate::snapshot_data::SnapshotData;
use crate::types::NodeId;
use crate::udp_socket::{self, DropCount};

/// ALPN protocol id of the mesh RPCs; a TLS peer speaking anything else is
/// refused during the handshake.
const ALPN: &[u8] = b"vomesh-mesh/1";

/// Sizes the transport enforces.
#[derive(Clone, Debug)]
pub struct TransportLimits {
    /// Largest single frame accepted (an append batch, a chunk, a reply).
    pub frame_bytes_max: usize,
    /// Largest snapshot a peer may announce. A snapshot received is held
    /// in memory whole, to be installed (one sent is read from its file a
    /// chunk at a time), so this also bounds the memory a transfer takes.
    pub snapshot_bytes_max: u64,
    /// Size of the chunks a snapshot is sent in.
    pub snapshot_chunk_bytes: usize,
    /// Concurrent RPC streams one peer may have open towards this node
    /// (QUIC flow control: the peer waits for credit beyond it). A mesh
    /// node grants one more per proposal it takes in flight
    /// (`MeshConfig::transport_limits`), for the proposals its followers
    /// forward.
    pub inbound_streams_per_peer_max: u32,
    /// The slowest rate at which a live peer is expected to take in and
    /// answer a large append: its deadline is openraft's plus its size at
    /// this rate. Below it, a peer is treated as unreachable.
    pub peer_bytes_per_second_min: u64,
    /// Kernel buffer asked for the UDP socket, each way (0: the kernel's
    /// default); see [`crate::udp_socket`].
    pub udp_buffer_bytes: usize,
}

impl Default for TransportLimits {
    fn default() -> Self {
        Self {
            // Carries a full append with the node defaults: 256 entries of
            // up to 320 KiB (see `MeshConfig::check_limits`).
            frame_bytes_max: 96 * 1024 * 1024,
            snapshot_bytes_max: 1024 * 1024 * 1024,
            snapshot_chunk_bytes: 1024 * 1024,
            inbound_streams_per_peer_max: 64,
            // 16 Mbit/s: well under any inter-site link worth meshing.
            peer_bytes_per_second_min: 2 * 1024 * 1024,
            udp_buffer_bytes: 4 * 1024 * 1024,
        }
    }
}

/// Connection-level timing of the transport.
#[derive(Clone, Debug)]
pub struct TransportTimeouts {
    /// Dial plus TLS handshake.
    pub connect_timeout_ms: u64,
    /// A connection with no traffic (not even keep-alives) for this long is
    /// considered dead and is dialled again on next use. Also the longest
    /// pause allowed in the middle of a request being received.
    pub idle_timeout_ms: u64,
    pub keep_alive_interval_ms: u64,
}

/// Setting up the transport failed.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("cluster CA: {0}")]
    Verifier(String),
    #[error("QUIC configuration: {0}")]
    Quic(String),
    #[error("bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Why an RPC to a peer produced no answer from its Raft.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// The request never left this node (no connection, no stream).
    #[error("peer {peer} not reached: {reason}")]
    NotSent { peer: NodeId, reason: String },
    /// The request may have reached the peer, but no answer came back.
    #[error("peer {peer} unreachable: {reason}")]
    Unreachable { peer: NodeId, reason: String },
    #[error("peer {peer} did not answer within {deadline:?}")]
    DeadlineExceeded { peer: NodeId, deadline: Duration },
    #[error("peer {peer} answered with an error: {error:?}")]
    Remote { peer: NodeId, error: pb::Error },
}

/// Frame-level failures while reading or writing one stream.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("read: {0}")]
    Read(#[from] quinn::ReadExactError),
    #[error("write: {0}")]
    Write(#[from] quinn::WriteError),
    #[error("stream closed: {0}")]
    Closed(#[from] quinn::ClosedStream),
    #[error("decode: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("no data for {0:?} in the middle of a request")]
    Stalled(Duration),
}

pub(crate) async fn write_frame(
    send: &mut quinn::SendStream,
    msg: &impl Message,
) -> Result<(), FrameError> {
    let len = msg.encoded_len();
    let mut buf = BytesMut::with_capacity(4 + len);
    // Lengths above u32::MAX cannot occur: frames are bounded far below.
    buf.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
    msg.encode_raw(&mut buf);
    send.write_all(&buf).await?;
    Ok(())
}

pub(crate) async fn read_frame(
    recv: &mut quinn::RecvStream,
    max: usize,
) -> Result<Bytes, FrameError> {
    let mut len = [0u8; 4];
    recv.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    let mut buf = vec![0u8; len];
    recv.read_exact(&mut buf).await?;
    Ok(buf.into())
}

/// Serves RPCs that arrive from authenticated peers. Implemented by the
/// node, which owns the Raft instance.
pub trait RpcHandler: Send + Sync + 'static {
    /// Answers one request from `peer` (already authenticated). A snapshot
    /// offer comes with its complete data.
    fn handle(
        &self,
        peer: NodeId,
        request: pb::request::Kind,
        snapshot: Option<Bytes>,
    ) -> impl Future<Output = pb::Response> + Send;

    /// Serves an append stream from `peer` (already authenticated): one
    /// `Response` per request, in order. The stream of responses ends when
    /// `requests` ends or after an error response.
    fn append_stream(
        &self,
        peer: NodeId,
        requests: BoxStream<'static, pb::AppendEntriesRequest>,
    ) -> BoxStream<'static, pb::Response>;

    /// Serves a forwarding stream from `peer` (already authenticated): the
    /// commands of each batch are proposed before the next batch is read,
    /// and each batch is answered with one `Response`, in order.
    fn forward_stream(
        &self,
        peer: NodeId,
        requests: BoxStream<'static, pb::ForwardProposals>,
    ) -> BoxStream<'static, pb::Response>;
}

/// Writes each response of a stream as it comes, then finishes the stream.
async fn answer_stream(
    mut send: quinn::SendStream,
    mut responses: BoxStream<'static, pb::Response>,
) -> Result<(), FrameError> {
    while let Some(response) = responses.next().await {
        write_frame(&mut send, &response).await?;
    }
    send.finish()?;
    Ok(())
}

/// How often the QUIC statistics of each peer connection are exported:
/// well under any scrape interval, and cheap (a lock and a copy per peer).
const QUIC_STATS_INTERVAL: Duration = Duration::from_secs(5);

/// The cumulative counters of one QUIC connection, as last exported.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct QuicTotals {
    /// `quinn::Connection::stable_id`: tells a new connection to the same
    /// peer from the one exported before.
    connection: usize,
    sent_bytes: u64,
    received_bytes: u64,
    lost_packets: u64,
}

impl QuicTotals {
    /// What the per-peer counters must grow by: the growth since `last` on
    /// the same connection, or all of a new connection's counts (its
    /// counters start at zero, while the exported ones never go back).
    fn growth_since(&self, last: Option<&QuicTotals>) -> QuicTotals {
        match last {
            Some(last) if last.connection == self.connection => QuicTotals {
                connection: self.connection,
                sent_bytes: self.sent_bytes.saturating_sub(last.sent_bytes),
                received_bytes: self.received_bytes.saturating_sub(last.received_bytes),
                lost_packets: self.lost_packets.saturating_sub(last.lost_packets),
            },
            _ => *self,
        }
    }
}

/// A cached outbound connection to one peer.
struct PeerLink {
    addr: String,
    state: Mutex<LinkState>,
}

/// A dial in progress, shared by every RPC waiting for it. It runs in its
/// own task, so it completes (within the connect timeout) even when the RPCs
/// that started it give up earlier: a handshake slower than an RPC deadline
/// still yields a connection for the next RPC.
type Dial = Shared<BoxFuture<'static, Result<quinn::Connection, String>>>;

enum LinkState {
    Idle,
    Dialing(Dial),
    Connected(quinn::Connection),
}

/// The node's QUIC endpoint: accepts peers' RPCs and sends its own.
pub struct Transport {
    node_id: NodeId,
    endpoint: quinn::Endpoint,
    client_config: quinn::ClientConfig,
    peer_name_verifier: Arc<WebPkiServerVerifier>,
    pub(crate) limits: TransportLimits,
    connect_timeout: Duration,
    /// Longest wait for the next frame of a request being received.
    frame_stall_timeout: Duration,
    peers: Mutex<HashMap<NodeId, Arc<PeerLink>>>,
    accept_task: Mutex<Option<JoinHandle<()>>>,
    stats_task: Mutex<Option<JoinHandle<()>>>,
    /// Whether the last exchange with each peer got through.
    reachable: Mutex<HashMap<NodeId, bool>>,
    /// Peers' connections to this node, by `stable_id`, once their first
    /// request named the peer; only read for statistics.
    inbound: Mutex<HashMap<usize, (NodeId, quinn::Connection)>>,
    udp_drops: Mutex<DropCount>,
}

impl Transport {
    /// Binds the endpoint on `listen`. Nothing is served until
    /// [`Transport::serve`].
    pub fn bind(
        node_id: NodeId,
        listen: SocketAddr,
        identity: &NodeIdentity,
        limits: TransportLimits,
        timeouts: &TransportTimeouts,
    ) -> Result<Arc<Self>, TransportError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        for ca in &identity.ca {
            roots.add(ca.clone())?;
        }
        let roots = Arc::new(roots);

        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .map_err(|e| TransportError::Verifier(e.to_string()))?;
        let mut server_tls = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(identity.cert_chain.clone(), identity.key.clone_key())?;
        server_tls.alpn_protocols = vec![ALPN.to_vec()];

        let mut client_tls = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots.clone())
            .with_client_auth_cert(identity.cert_chain.clone(), identity.key.clone_key())?;
        client_tls.alpn_protocols = vec![ALPN.to_vec()];

        let peer_name_verifier = WebPkiServerVerifier::builder_with_provider(roots, provider)
            .build()
            .map_err(|e| TransportError::Verifier(e.to_string()))?;

        let mut transport = quinn::TransportConfig::default();
        transport
            .max_idle_timeout(Some(
                quinn::IdleTimeout::try_from(Duration::from_millis(timeouts.idle_timeout_ms))
                    .map_err(|e| TransportError::Quic(e.to_string()))?,
            ))
            .keep_alive_interval(Some(Duration::from_millis(timeouts.keep_alive_interval_ms)))
            .max_concurrent_bidi_streams(limits.inbound_streams_per_peer_max.into())
            .max_concurrent_uni_streams(0u32.into());
        let mut mtu = quinn::MtuDiscoveryConfig::default();
        mtu.upper_bound(UDP_PAYLOAD_BYTES_MAX);
        transport.mtu_discovery_config(Some(mtu));
        let transport = Arc::new(transport);

        let quic_server = QuicServerConfig::try_from(server_tls)
            .map_err(|e| TransportError::Quic(e.to_string()))?;
        let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(quic_server));
        server_config.transport_config(transport.clone());

        let quic_client = QuicClientConfig::try_from(client_tls)
            .map_err(|e| TransportError::Quic(e.to_string()))?;
        let mut client_config = quinn::ClientConfig::new(Arc::new(quic_client));
        client_config.transport_config(transport);

        let bind_error = |source| TransportError::Bind {
            addr: listen,
            source,
        };
        let socket = std::net::UdpSocket::bind(listen).map_err(bind_error)?;
        udp_socket::size_buffers(&socket, limits.udp_buffer_bytes).map_err(bind_error)?;
        let udp_drops = DropCount::of(&socket).map_err(bind_error)?;
        let endpoint = quinn::Endpoint::new(
            stateless_reset_config(identity),
            Some(server_config),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(bind_error)?;

        Ok(Arc::new(Self {
            node_id,
            endpoint,
            client_config,
            peer_name_verifier,
            limits,
            connect_timeout: Duration::from_millis(timeouts.connect_timeout_ms),
            frame_stall_timeout: Duration::from_millis(timeouts.idle_timeout_ms),
            peers: Mutex::new(HashMap::new()),
            accept_task: Mutex::new(None),
            stats_task: Mutex::new(None),
            reachable: Mutex::new(HashMap::new()),
            inbound: Mutex::new(HashMap::new()),
            udp_drops: Mutex::new(udp_drops),
        }))
    }

    /// The address the endpoint is bound to (useful when binding port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// Starts accepting peers' connections and serving their RPCs with
    /// `handler`.
    pub fn serve<H: RpcHandler>(self: &Arc<Self>, handler: Arc<H>) {
        let this = self.clone();
        let task = tokio::spawn(async move {
            while let Some(incoming) = this.endpoint.accept().await {
                let this = this.clone();
                let handler = handler.clone();
                tokio::spawn(async move {
                    match incoming.await {
                        Ok(connection) => this.serve_connection(connection, handler).await,
                        // Includes peers whose certificate the cluster CA did
                        // not sign: they never get a stream.
                        Err(e) => {
                            metrics::counter!("vomesh_mesh_peers_refused_total", "reason" => "handshake")
                                .increment(1);
                            tracing::info!(error = %e, "mesh: inbound handshake failed");
                        }
                    }
                });
            }
        });
        *self
            .accept_task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(task);
        let stats = self.spawn_quic_stats();
        *self
            .stats_task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(stats);
    }

    /// Exports the path statistics of every live connection every
    /// [`QUIC_STATS_INTERVAL`]: `vomesh_quic_rtt_seconds{peer}` and
    /// `vomesh_quic_path_mtu_bytes{peer}` (gauges) and
    /// `vomesh_quic_{sent,received}_bytes_total{peer}`,
    /// `vomesh_quic_lost_packets_total{peer}` (counters summed over both
    /// directions' connections to a peer, carrying on across reconnections),
    /// and the datagrams the kernel dropped on the endpoint's socket.
    fn spawn_quic_stats(self: &Arc<Self>) -> JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(QUIC_STATS_INTERVAL);
            // By connection (`stable_id`): a peer may have one each way.
            let mut exported: HashMap<usize, QuicTotals> = HashMap::new();
            loop {
                ticks.tick().await;
                this.udp_drops
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .export();
                let live = this.live_connections();
                exported.retain(|id, _| live.iter().any(|(_, c)| c.stable_id() == *id));
                // The smaller of the two directions' connections.
                let mut mtu: HashMap<NodeId, u16> = HashMap::new();
                for (peer, connection) in live {
                    let stats = connection.stats();
                    mtu.entry(peer)
                        .and_modify(|m| *m = (*m).min(stats.path.current_mtu))
                        .or_insert(stats.path.current_mtu);
                    let now = QuicTotals {
                        connection: connection.stable_id(),
                        sent_bytes: stats.udp_tx.bytes,
                        received_bytes: stats.udp_rx.bytes,
                        lost_packets: stats.path.lost_packets,
                    };
                    let grown = now.growth_since(exported.get(&now.connection));
                    let label = peer.to_string();
                    metrics::gauge!("vomesh_quic_rtt_seconds", "peer" => label.clone())
                        .set(stats.path.rtt.as_secs_f64());
                    metrics::counter!("vomesh_quic_sent_bytes_total", "peer" => label.clone())
                        .increment(grown.sent_bytes);
                    metrics::counter!("vomesh_quic_received_bytes_total", "peer" => label.clone())
                        .increment(grown.received_bytes);
                    metrics::counter!("vomesh_quic_lost_packets_total", "peer" => label)
                        .increment(grown.lost_packets);
                    exported.insert(now.connection, now);
                }
                for (peer, bytes) in mtu {
                    metrics::gauge!("vomesh_quic_path_mtu_bytes", "peer" => peer.to_string())
                        .set(f64::from(bytes));
                }
            }
        })
    }

    /// Records whether the last exchange with `peer` got through, the gauge
    /// an operator alerts on (`vomesh_mesh_peer_reachable{peer}`): 1 after a
    /// response or an opened stream, 0 after a failed or timed-out one.
    /// A change is logged once, not every failed retry.
    fn set_reachable(&self, peer: NodeId, reachable: bool) {
        metrics::gauge!("vomesh_mesh_peer_reachable", "peer" => peer.to_string())
            .set(if reachable { 1.0 } else { 0.0 });
        let before = self
            .reachable
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(peer, reachable);
        match (before, reachable) {
            (None | Some(true), false) => tracing::warn!(peer, "mesh: peer unreachable"),
            (Some(false), true) => tracing::info!(peer, "mesh: peer reachable again"),
            _ => {}
        }
    }

    /// Whether the last exchange with `peer` got through (false before the
    /// first).
    pub(crate) fn is_reachable(&self, peer: NodeId) -> bool {
        self.reachable
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&peer)
            .copied()
            .unwrap_or(false)
    }

    /// The smoothed round-trip time of each open outbound connection.
    pub(crate) fn round_trip_times(&self) -> BTreeMap<NodeId, Duration> {
        self.live_connections()
            .into_iter()
            .map(|(peer, connection)| (peer, connection.rtt()))
            .collect()
    }

    /// The connections currently open: peers' connections to this node,
    /// then this node's own to its peers, so that a peer with both is
    /// measured last (and its round trip taken) on the one this node sends
    /// its RPCs on.
    pub(crate) fn live_connections(&self) -> Vec<(NodeId, quinn::Connection)> {
        let mut live: Vec<(NodeId, quinn::Connection)> = self
            .inbound
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .filter(|(_, c)| c.close_reason().is_none())
            .cloned()
            .collect();
        live.extend(self.outbound_connections());
        live
    }

    /// The connections this node dialled and still has open, by peer.
    fn outbound_connections(&self) -> Vec<(NodeId, quinn::Connection)> {
        let links: Vec<(NodeId, Arc<PeerLink>)> = self
            .peers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(peer, link)| (*peer, link.clone()))
            .collect();
        links
            .into_iter()
            .filter_map(|(peer, link)| {
                match &*link.state.lock().unwrap_or_else(PoisonError::into_inner) {
                    LinkState::Connected(c) if c.close_reason().is_none() => {
                        Some((peer, c.clone()))
                    }
                    _ => None,
                }
            })
            .collect()
    }

    /// Closes every connection and stops accepting.
    pub fn close(&self) {
        for task in [&self.accept_task, &self.stats_task] {
            if let Some(task) = task
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take()
            {
                task.abort();
            }
        }
        self.endpoint.close(0u32.into(), b"shutdown");
    }

    async fn serve_connection<H: RpcHandler>(
        self: Arc<Self>,
        connection: quinn::Connection,
        handler: Arc<H>,
    ) {
        // The node id this connection's certificate was verified for.
        let verified: Arc<OnceLock<NodeId>> = Arc::new(OnceLock::new());
        loop {
            let (send, recv) = match connection.accept_bi().await {
                Ok(streams) => streams,
                Err(e) => {
                    tracing::debug!(remote = %connection.remote_address(), error = %e, "mesh: connection ended");
                    self.inbound
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remove(&connection.stable_id());
                    return;
                }
            };
            let this = self.clone();
            let handler = handler.clone();
            let connection = connection.clone();
            let verified = verified.clone();
            tokio::spawn(async move {
                if let Err(e) = this
                    .serve_stream(&connection, &verified, send, recv, handler.as_ref())
                    .await
                {
                    tracing::debug!(remote = %connection.remote_address(), error = %e, "mesh: stream failed");
                }
            });
        }
    }

    async fn serve_stream<H: RpcHandler>(
        &self,
        connection: &quinn::Connection,
        verified: &OnceLock<NodeId>,
        mut send: quinn::SendStream,
        mut recv: quinn::RecvStream,
        handler: &H,
    ) -> Result<(), FrameError> {
        let frame = self.read_request_frame(&mut recv).await?;
        let request = pb::Request::decode(frame)?;
        let response = match self.authenticate(connection, verified, request.from_node_id) {
            Err(message) => {
                metrics::counter!("vomesh_mesh_peers_refused_total", "reason" => "identity")
                    .increment(1);
                tracing::warn!(remote = %connection.remote_address(), %message, "mesh: request refused");
                error_response(pb::ErrorKind::Unauthenticated, message)
            }
            Ok(peer) => match request.kind {
                None => error_response(pb::ErrorKind::BadRequest, "request without a kind".into()),
                Some(pb::request::Kind::AppendStream(_)) => {
                    let requests = self.request_frames(peer, recv);
                    let responses = handler.append_stream(peer, requests);
                    return answer_stream(send, responses).await;
                }
                Some(pb::request::Kind::ForwardStream(_)) => {
                    let requests = self.request_frames(peer, recv);
                    let responses = handler.forward_stream(peer, requests);
                    return answer_stream(send, responses).await;
                }
                Some(pb::request::Kind::Snapshot(offer)) => {
                    match self.receive_snapshot(&mut recv, &offer).await {
                        Ok(data) => {
                            handler
                                .handle(peer, pb::request::Kind::Snapshot(offer), Some(data))
                                .await
                        }
                        Err(e) => error_response(pb::ErrorKind::BadRequest, e.to_string()),
                    }
                }
                Some(kind) => handler.handle(peer, kind, None).await,
            },
        };
        write_frame(&mut send, &response).await?;
        send.finish()?;
        Ok(())
    }

    /// Reads the next frame of a request; a peer that stops sending in the
    /// middle of a request for `frame_stall_timeout` loses the stream.
    async fn read_request_frame(&self, recv: &mut quinn::RecvStream) -> Result<Bytes, FrameError> {
        tokio::time::timeout(
            self.frame_stall_timeout,
            read_frame(recv, self.limits.frame_bytes_max),
        )
        .await
        .map_err(|_| FrameError::Stalled(self.frame_stall_timeout))?
    }

    /// The requests that follow a stream's opening, until the peer
    /// finishes the stream, the connection breaks, or one does not decode.
    fn request_frames<M: Message + Default + 'static>(
        &self,
        peer: NodeId,
        recv: quinn::RecvStream,
    ) -> BoxStream<'static, M> {
        let max = self.limits.frame_bytes_max;
        Box::pin(futures_util::stream::unfold(
            Some(recv),
            move |recv| async move {
                let mut recv = recv?;
                match read_frame(&mut recv, max).await {
                    Ok(frame) => match M::decode(frame) {
                        Ok(request) => Some((request, Some(recv))),
                        Err(e) => {
                            tracing::info!(peer, error = %e, "mesh: undecodable request on a stream, closing it");
                            None
                        }
                    },
                    Err(_) => None,
                }
            },
        ))
    }

    /// Checks that the certificate of `connection` names node `claimed`.
    fn authenticate(
        &self,
        connection: &quinn::Connection,
        verified: &OnceLock<NodeId>,
        claimed: NodeId,
    ) -> Result<NodeId, String> {
        if let Some(&peer) = verified.get() {
            return if peer == claimed {
                Ok(peer)
            } else {
                Err(format!(
                    "connection authenticated as node {peer} claims to be node {claimed}"
                ))
            };
        }
        let chain = connection
            .peer_identity()
            .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok())
            .ok_or_else(|| "no client certificate".to_owned())?;
        let (end_entity, intermediates) = chain
            .split_first()
            .ok_or_else(|| "empty certificate chain".to_owned())?;
        let name = ServerName::try_from(node_dns_name(claimed)).map_err(|e| e.to_string())?;
        // The handshake already verified the chain against the cluster CA;
        // this verification adds the name check: the certificate must carry
        // the SAN of the node id the peer claims.
        self.peer_name_verifier
            .verify_server_cert(end_entity, intermediates, &name, &[], UnixTime::now())
            .map_err(|e| format!("certificate is not valid for node {claimed}: {e}"))?;
        if verified.set(claimed).is_ok() {
            self.inbound
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(connection.stable_id(), (claimed, connection.clone()));
        }
        Ok(claimed)
    }

    async fn receive_snapshot(
        &self,
        recv: &mut quinn::RecvStream,
        offer: &pb::SnapshotOffer,
    ) -> Result<Bytes, FrameError> {
        let total = offer.total_bytes;
        if total > self.limits.snapshot_bytes_max {
            return Err(FrameError::TooLarge {
                len: usize::try_from(total).unwrap_or(usize::MAX),
                max: usize::try_from(self.limits.snapshot_bytes_max).unwrap_or(usize::MAX),
            });
        }
        // Grows with the data actually received, never pre-sized from the
        // peer's announcement.
        let mut data = BytesMut::new();
        while (data.len() as u64) < total {
            let frame = self.read_request_frame(recv).await?;
            let chunk = pb::SnapshotChunk::decode(frame)?;
            if data.len() as u64 + chunk.data.len() as u64 > total {
                return Err(FrameError::TooLarge {
                    len: data.len() + chunk.data.len(),
                    max: usize::try_from(total).unwrap_or(usize::MAX),
                });
            }
            data.extend_from_slice(&chunk.data);
        }
        Ok(data.freeze())
    }

    fn link(&self, peer: NodeId, addr: &str) -> Arc<PeerLink> {
        let mut peers = self
            .peers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match peers.get(&peer) {
            Some(link) if link.addr == addr => link.clone(),
            // First use, or the membership now has another address for it.
            _ => {
                let link = Arc::new(PeerLink {
                    addr: addr.to_owned(),
                    state: Mutex::new(LinkState::Idle),
                });
                peers.insert(peer, link.clone());
                link
            }
        }
    }

    async fn connection(&self, peer: NodeId, addr: &str) -> Result<quinn::Connection, String> {
        let link = self.link(peer, addr);
        let dial = {
            let mut state = link.state.lock().unwrap_or_else(PoisonError::into_inner);
            match &*state {
                LinkState::Connected(connection) if connection.close_reason().is_none() => {
                    return Ok(connection.clone());
                }
                LinkState::Dialing(dial) => dial.clone(),
                LinkState::Idle | LinkState::Connected(_) => {
                    let dial = self.dial(peer, addr);
                    *state = LinkState::Dialing(dial.clone());
                    dial
                }
            }
        };
        let result = dial.clone().await;
        let mut state = link.state.lock().unwrap_or_else(PoisonError::into_inner);
        // Record the outcome, unless a newer dial replaced this one.
        if let LinkState::Dialing(current) = &*state
            && current.ptr_eq(&dial)
        {
            *state = match &result {
                Ok(connection) => LinkState::Connected(connection.clone()),
                Err(_) => LinkState::Idle,
            };
        }
        result
    }

    fn dial(&self, peer: NodeId, addr: &str) -> Dial {
        let endpoint = self.endpoint.clone();
        let config = self.client_config.clone();
        let timeout = self.connect_timeout;
        let addr = addr.to_owned();
        let task = tokio::spawn(async move {
            let socket = tokio::net::lookup_host(&addr)
                .await
                .map_err(|e| format!("resolve {addr}: {e}"))?
                .next()
                .ok_or_else(|| format!("resolve {addr}: no address"))?;
            let connecting = endpoint
                .connect_with(config, socket, &node_dns_name(peer))
                .map_err(|e| format!("connect {addr}: {e}"))?;
            let result = tokio::time::timeout(timeout, connecting)
                .await
                .map_err(|_| format!("connect {addr}: no handshake within {timeout:?}"))
                .and_then(|r| r.map_err(|e| format!("connect {addr}: {e}")));
            let outcome = if result.is_ok() {
                "connected"
            } else {
                "failed"
            };
            metrics::counter!("vomesh_mesh_dials_total", "peer" => peer.to_string(), "outcome" => outcome)
                .increment(1);
            result
        });
        let joined: BoxFuture<'static, _> =
            Box::pin(async move { task.await.map_err(|e| e.to_string())? });
        joined.shared()
    }

    /// Drops the cached connection to `peer` if it is still `connection`.
    /// Called after an exchange failed or missed its deadline: a peer killed
    /// without closing leaves the connection looking open until the idle
    /// timeout, and a restarted peer does not know it; the next RPC then
    /// dials afresh instead of waiting on it. Streams still running on the
    /// old connection carry on until it dies.
    pub(crate) fn forget(&self, peer: NodeId, connection: &quinn::Connection) {
        let link = self
            .peers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&peer)
            .cloned();
        if let Some(link) = link {
            let mut state = link.state.lock().unwrap_or_else(PoisonError::into_inner);
            if let LinkState::Connected(cached) = &*state
                && cached.stable_id() == connection.stable_id()
            {
                *state = LinkState::Idle;
            }
        }
    }

    /// Opens a stream to `peer` and sends `header` on it, within `deadline`.
    pub(crate) async fn open_stream(
        &self,
        peer: NodeId,
        addr: &str,
        header: pb::request::Kind,
        priority: i32,
        deadline: Duration,
    ) -> Result<(quinn::Connection, quinn::SendStream, quinn::RecvStream), RpcError> {
        let request = pb::Request {
            from_node_id: self.node_id,
            kind: Some(header),
        };
        let used = OnceLock::new();
        let open = async {
            let connection = self.connection(peer, addr).await?;
            let _ = used.set(connection.clone());
            let (mut send, recv) = connection.open_bi().await.map_err(|e| e.to_string())?;
            // Fails only if the stream is already closed; then the write fails too.
            let _ = send.set_priority(priority);
            write_frame(&mut send, &request)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((connection, send, recv))
        };
        let result = match tokio::time::timeout(deadline, open).await {
            Ok(Ok(streams)) => {
                self.set_reachable(peer, true);
                return Ok(streams);
            }
            Ok(Err(reason)) => Err(RpcError::Unreachable { peer, reason }),
            Err(_) => Err(RpcError::DeadlineExceeded { peer, deadline }),
        };
        self.set_reachable(peer, false);
        if let Some(connection) = used.get() {
            self.forget(peer, connection);
        }
        result
    }

    /// Sends one request to `peer` and waits for its response, all within
    /// `deadline`. `snapshot` is streamed after the request, in chunks,
    /// read from its file one at a time if it is stored.
    pub async fn call(
        &self,
        peer: NodeId,
        addr: &str,
        kind: pb::request::Kind,
        snapshot: Option<SnapshotData>,
        priority: i32,
        deadline: Duration,
    ) -> Result<pb::Response, RpcError> {
        let request = pb::Request {
            from_node_id: self.node_id,
            kind: Some(kind),
        };
        // Set once the request is on its way: before that, a failure means
        // the peer certainly never saw it (and a retry cannot duplicate it).
        let sent = AtomicBool::new(false);
        let used = OnceLock::new();
        let exchange = async {
            let not_sent = |reason: String| RpcError::NotSent { peer, reason };
            let connection = self.connection(peer, addr).await.map_err(not_sent)?;
            let _ = used.set(connection.clone());
            let (mut send, mut recv) = connection
                .open_bi()
                .await
                .map_err(|e| not_sent(e.to_string()))?;
            // Fails only if the stream is already closed; then the write fails too.
            let _ = send.set_priority(priority);
            sent.store(true, Ordering::Relaxed);
            let unreachable = |reason: String| RpcError::Unreachable { peer, reason };
            write_frame(&mut send, &request)
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            if let Some(data) = snapshot {
                let mut chunks = data.chunks(self.limits.snapshot_chunk_bytes);
                // A stored snapshot that reads back damaged fails here,
                // before its last chunk: the peer never gets it whole.
                while let Some(data) = chunks
                    .next()
                    .await
                    .map_err(|e| unreachable(e.to_string()))?
                {
                    write_frame(&mut send, &pb::SnapshotChunk { data })
                        .await
                        .map_err(|e| unreachable(e.to_string()))?;
                }
            }
            send.finish().map_err(|e| unreachable(e.to_string()))?;
            let frame = read_frame(&mut recv, self.limits.frame_bytes_max)
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            pb::Response::decode(frame).map_err(|e| unreachable(e.to_string()))
        };
        let result = match tokio::time::timeout(deadline, exchange).await {
            Ok(result) => result,
            Err(_) if !sent.load(Ordering::Relaxed) => Err(RpcError::NotSent {
                peer,
                reason: format!("no connection within {deadline:?}"),
            }),
            Err(_) => Err(RpcError::DeadlineExceeded { peer, deadline }),
        };
        let response = match result {
            Ok(response) => response,
            Err(e) => {
                let error = match e {
                    RpcError::NotSent { .. } => "not_sent",
                    RpcError::DeadlineExceeded { .. } => "deadline",
                    _ => "unreachable",
                };
                metrics::counter!("vomesh_mesh_rpc_failures_total", "peer" => peer.to_string(), "error" => error)
                    .increment(1);
                self.set_reachable(peer, false);
                if let Some(connection) = used.get() {
                    self.forget(peer, connection);
                }
                return Err(e);
            }
        };
        // Even an error response proves the peer is up and talking.
        self.set_reachable(peer, true);
        match response.kind {
            Some(pb::response::Kind::Error(error)) => Err(RpcError::Remote { peer, error }),
            Some(_) => Ok(response),
            None => Err(RpcError::Unreachable {
                peer,
                reason: "empty response".into(),
            }),
        }
    }
}

/// The largest datagram MTU discovery tries, where the path allows it
/// (loopback, jumbo frames; across the Internet discovery stops near 1,500
/// bytes). From quinn's 1,452 to this, an append on loopback takes a fifth
/// as many datagrams, and a three-site mesh 8 % less CPU per publish.
/// Not higher: quinn sends up to ten datagrams in one segmentation-offload
/// system call, which Linux takes only within 64 KiB; with 65,527 every
/// such burst was lost, and black-hole detection fell back to 1,200 bytes.
/// quinn's receive buffer is 2,048 of these (13 MB of address space).
pub(crate) const UDP_PAYLOAD_BYTES_MAX: u16 = 6_500;

/// Endpoint settings under which a restarted node can reset the
/// connections of its previous life (RFC 9000 §10.3). A peer that crashed
/// cannot close them (it has no state for them); when their next packet
/// arrives, its endpoint answers with a stateless reset, and the other side
/// dials again at once. That takes a reset key and connection-id validation
/// key that survive the restart, so both are derived from the node's
/// private key (and are as secret as it is: another node cannot forge a
/// reset). With quinn's per-process random keys the packet is dropped as
/// carrying an unknown connection id, and a restarted follower stays cut
/// off from the leader until the stale connection's idle timeout (5 s on a
/// LAN, 30 s on a WAN).
fn stateless_reset_config(identity: &NodeIdentity) -> quinn::EndpointConfig {
    let derive = |label: &[u8]| {
        ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, identity.key.secret_der()),
            label,
        )
    };
    let reset_key = derive(b"vomesh QUIC stateless reset key");
    let cid_key = derive(b"vomesh QUIC connection id key");
    let mut cid_key_bytes = [0u8; 8];
    cid_key_bytes.copy_from_slice(&cid_key.as_ref()[..8]);
    let cid_key = u64::from_be_bytes(cid_key_bytes);
    let mut config = quinn::EndpointConfig::new(Arc::new(ring::hmac::Key::new(
        ring::hmac::HMAC_SHA256,
        reset_key.as_ref(),
    )));
    config
        .max_udp_payload_size(UDP_PAYLOAD_BYTES_MAX)
        .expect("UDP_PAYLOAD_BYTES_MAX is a valid QUIC payload size");
    config.cid_generator(move || {
        Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
    });
    config
}

/// An error answer to a request.
pub(crate) fn error_response(kind: pb::ErrorKind, message: String) -> pb::Response {
    pb::Response {
        kind: Some(pb::response::Kind::Error(error(kind, message))),
    }
}

/// An error naming no leader.
pub(crate) fn error(kind: pb::ErrorKind, message: String) -> pb::Error {
    pb::Error {
        kind: kind as i32,
        message,
        leader_id: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quic_counters_grow_by_the_difference_on_the_same_connection() {
        let last = QuicTotals {
            connection: 7,
            sent_bytes: 1000,
            received_bytes: 400,
            lost_packets: 2,
        };
        let now = QuicTotals {
            connection: 7,
            sent_bytes: 1500,
            received_bytes: 450,
            lost_packets: 5,
        };
        assert_eq!(
            now.growth_since(Some(&last)),
            QuicTotals {
                connection: 7,
                sent_bytes: 500,
                received_bytes: 50,
                lost_packets: 3,
            }
        );
    }

    #[test]
    fn a_new_connection_adds_all_its_counts() {
        let last = QuicTotals {
            connection: 7,
            sent_bytes: 1000,
            received_bytes: 400,
            lost_packets: 2,
        };
        let reconnected = QuicTotals {
            connection: 8,
            sent_bytes: 300,
            received_bytes: 100,
            lost_packets: 0,
        };
        assert_eq!(reconnected.growth_since(Some(&last)), reconnected);
        assert_eq!(reconnected.growth_since(None), reconnected);
    }
}
