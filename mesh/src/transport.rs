//! The QUIC transport between mesh nodes (quinn + rustls with ring, mutual
//! TLS), and openraft's network client on top of it.
//!
//! - **Authentication.** Both sides present a certificate signed by the
//!   cluster CA, the only trust root. A node dials peer `<id>` with the TLS
//!   server name `node-<id>.vomesh.internal`, so the handshake fails unless
//!   the peer holds that node's certificate. The accepting side requires a
//!   client certificate (nothing unauthenticated gets a stream) and checks
//!   the node id each request claims against the SANs of that certificate
//!   before handing the request on.
//! - **One connection per peer**, dialled lazily by the first RPC that needs
//!   it (a client's constructor never dials) and dialled again when it was
//!   lost. A peer restarted after a crash resets the connections of its
//!   previous life with a stateless reset (its reset key is derived from its
//!   node key), so they are dialled again at once, not after the idle
//!   timeout. Each RPC is one bidirectional stream, so a heartbeat never queues
//!   behind a large append or a snapshot; heartbeats also get a higher stream
//!   priority and snapshots a lower one for the sender's bandwidth.
//! - **Pipelined replication.** openraft's replication sends a stream of
//!   appends; it gets one QUIC stream for its whole session, where requests
//!   are written without waiting for the previous answer (up to
//!   `APPEND_PIPELINE_DEPTH`) and answered in order, so the follower's fsync
//!   of one batch overlaps the transfer of the next.
//! - **Deadlines.** Every RPC runs under its deadline (openraft's
//!   `RPCOption::soft_ttl`, or the mesh's own for forwarded proposals); a
//!   peer that cannot be dialled, drops the stream or misses the deadline is
//!   reported as `Unreachable`, which makes openraft back off.
//! - **Bounded frames.** A frame is a u32 big-endian length and a protobuf
//!   message; a length above `frame_bytes_max` ends the stream before
//!   anything is allocated. A snapshot is sent as a `SnapshotOffer` frame
//!   followed by chunks of at most `snapshot_chunk_bytes`, its announced size
//!   bounded by `snapshot_bytes_max`.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use openraft::base::{BoxFuture, BoxStream};
use openraft::errors::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult, VoteRequest,
    VoteResponse,
};
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
use crate::types::{MeshTypes, Node, NodeId, Snapshot, Vote};
use crate::wire;

/// ALPN protocol id of the mesh RPCs; a TLS peer speaking anything else is
/// refused during the handshake.
const ALPN: &[u8] = b"vomesh-mesh/1";

/// Stream priorities (higher is sent first by quinn when a connection's
/// send window is contended).
const PRIORITY_HEARTBEAT: i32 = 10;
const PRIORITY_REPLICATION: i32 = 0;
const PRIORITY_SNAPSHOT: i32 = -10;

/// Sizes the transport enforces.
#[derive(Clone, Debug)]
pub struct TransportLimits {
    /// Largest single frame accepted (an append batch, a chunk, a reply).
    pub frame_bytes_max: usize,
    /// Largest snapshot a peer may announce.
    pub snapshot_bytes_max: u64,
    /// Size of the chunks a snapshot is sent in.
    pub snapshot_chunk_bytes: usize,
    /// Concurrent RPC streams one peer may have open towards this node
    /// (QUIC flow control: the peer waits for credit beyond it).
    pub inbound_streams_per_peer_max: u32,
}

impl Default for TransportLimits {
    fn default() -> Self {
        Self {
            // openraft sends at most `max_payload_entries` (300) entries per
            // append: 300 items of the broker's 256 KiB stanza limit fit.
            frame_bytes_max: 96 * 1024 * 1024,
            snapshot_bytes_max: 8 * 1024 * 1024 * 1024,
            snapshot_chunk_bytes: 1024 * 1024,
            inbound_streams_per_peer_max: 64,
        }
    }
}

/// Connection-level timing of the transport.
#[derive(Clone, Debug)]
pub struct TransportTimeouts {
    /// Dial plus TLS handshake.
    pub connect_timeout_ms: u64,
    /// A connection with no traffic (not even keep-alives) for this long is
    /// considered dead and is dialled again on next use.
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
}

async fn write_frame(send: &mut quinn::SendStream, msg: &impl Message) -> Result<(), FrameError> {
    let len = msg.encoded_len();
    let mut buf = BytesMut::with_capacity(4 + len);
    // Lengths above u32::MAX cannot occur: frames are bounded far below.
    buf.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
    msg.encode_raw(&mut buf);
    send.write_all(&buf).await?;
    Ok(())
}

async fn read_frame(recv: &mut quinn::RecvStream, max: usize) -> Result<Bytes, FrameError> {
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
}

/// A cached outbound connection to one peer.
struct PeerLink {
    addr: String,
    connection: tokio::sync::Mutex<Option<quinn::Connection>>,
}

/// The node's QUIC endpoint: accepts peers' RPCs and sends its own.
pub struct Transport {
    node_id: NodeId,
    endpoint: quinn::Endpoint,
    client_config: quinn::ClientConfig,
    peer_name_verifier: Arc<WebPkiServerVerifier>,
    limits: TransportLimits,
    connect_timeout: Duration,
    peers: Mutex<HashMap<NodeId, Arc<PeerLink>>>,
    accept_task: Mutex<Option<JoinHandle<()>>>,
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
            peers: Mutex::new(HashMap::new()),
            accept_task: Mutex::new(None),
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
                        Err(e) => tracing::info!(error = %e, "mesh: inbound handshake failed"),
                    }
                });
            }
        });
        *self
            .accept_task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(task);
    }

    /// Closes every connection and stops accepting.
    pub fn close(&self) {
        if let Some(task) = self
            .accept_task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            task.abort();
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
        let frame = read_frame(&mut recv, self.limits.frame_bytes_max).await?;
        let request = pb::Request::decode(frame)?;
        let response = match self.authenticate(connection, verified, request.from_node_id) {
            Err(message) => error_response(pb::ErrorKind::Unauthenticated, message),
            Ok(peer) => match request.kind {
                None => error_response(pb::ErrorKind::BadRequest, "request without a kind".into()),
                Some(pb::request::Kind::AppendStream(_)) => {
                    return self.serve_append_stream(peer, send, recv, handler).await;
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

    async fn serve_append_stream<H: RpcHandler>(
        &self,
        peer: NodeId,
        mut send: quinn::SendStream,
        recv: quinn::RecvStream,
        handler: &H,
    ) -> Result<(), FrameError> {
        let max = self.limits.frame_bytes_max;
        let requests = futures_util::stream::unfold(Some(recv), move |recv| async move {
            let mut recv = recv?;
            match read_frame(&mut recv, max).await {
                Ok(frame) => match pb::AppendEntriesRequest::decode(frame) {
                    Ok(request) => Some((request, Some(recv))),
                    Err(e) => {
                        tracing::info!(peer, error = %e, "mesh: undecodable append, closing the stream");
                        None
                    }
                },
                // The leader finished the stream, or the connection broke.
                Err(_) => None,
            }
        });
        let mut responses = handler.append_stream(peer, Box::pin(requests));
        while let Some(response) = responses.next().await {
            write_frame(&mut send, &response).await?;
        }
        send.finish()?;
        Ok(())
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
        let _ = verified.set(claimed);
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
            let frame = read_frame(recv, self.limits.frame_bytes_max).await?;
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
                    connection: tokio::sync::Mutex::new(None),
                });
                peers.insert(peer, link.clone());
                link
            }
        }
    }

    async fn connection(&self, peer: NodeId, addr: &str) -> Result<quinn::Connection, String> {
        let link = self.link(peer, addr);
        // Held while dialling, so concurrent RPCs share one new connection.
        let mut slot = link.connection.lock().await;
        if let Some(connection) = slot.as_ref()
            && connection.close_reason().is_none()
        {
            return Ok(connection.clone());
        }
        let socket = tokio::net::lookup_host(addr)
            .await
            .map_err(|e| format!("resolve {addr}: {e}"))?
            .next()
            .ok_or_else(|| format!("resolve {addr}: no address"))?;
        let connecting = self
            .endpoint
            .connect_with(self.client_config.clone(), socket, &node_dns_name(peer))
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let connection = tokio::time::timeout(self.connect_timeout, connecting)
            .await
            .map_err(|_| {
                format!(
                    "connect {addr}: no handshake within {:?}",
                    self.connect_timeout
                )
            })?
            .map_err(|e| format!("connect {addr}: {e}"))?;
        *slot = Some(connection.clone());
        Ok(connection)
    }

    /// Opens a stream to `peer` and sends `header` on it, within `deadline`.
    async fn open_stream(
        &self,
        peer: NodeId,
        addr: &str,
        header: pb::request::Kind,
        priority: i32,
        deadline: Duration,
    ) -> Result<(quinn::SendStream, quinn::RecvStream), RpcError> {
        let request = pb::Request {
            from_node_id: self.node_id,
            kind: Some(header),
        };
        let open = async {
            let connection = self.connection(peer, addr).await?;
            let (mut send, recv) = connection.open_bi().await.map_err(|e| e.to_string())?;
            // Fails only if the stream is already closed; then the write fails too.
            let _ = send.set_priority(priority);
            write_frame(&mut send, &request)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((send, recv))
        };
        match tokio::time::timeout(deadline, open).await {
            Ok(Ok(streams)) => Ok(streams),
            Ok(Err(reason)) => Err(RpcError::Unreachable { peer, reason }),
            Err(_) => Err(RpcError::DeadlineExceeded { peer, deadline }),
        }
    }

    /// Sends one request to `peer` and waits for its response, all within
    /// `deadline`. `snapshot` is streamed after the request, in chunks.
    pub async fn call(
        &self,
        peer: NodeId,
        addr: &str,
        kind: pb::request::Kind,
        snapshot: Option<Bytes>,
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
        let exchange = async {
            let not_sent = |reason: String| RpcError::NotSent { peer, reason };
            let connection = self.connection(peer, addr).await.map_err(not_sent)?;
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
                for chunk in data.chunks(self.limits.snapshot_chunk_bytes.max(1)) {
                    let chunk = pb::SnapshotChunk {
                        data: data.slice_ref(chunk),
                    };
                    write_frame(&mut send, &chunk)
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
        let response = match tokio::time::timeout(deadline, exchange).await {
            Ok(result) => result?,
            Err(_) if !sent.load(Ordering::Relaxed) => {
                return Err(RpcError::NotSent {
                    peer,
                    reason: format!("no connection within {deadline:?}"),
                });
            }
            Err(_) => return Err(RpcError::DeadlineExceeded { peer, deadline }),
        };
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
    config.cid_generator(move || {
        Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
    });
    config
}

pub(crate) fn error_response(kind: pb::ErrorKind, message: String) -> pb::Response {
    pb::Response {
        kind: Some(pb::response::Kind::Error(pb::Error {
            kind: kind as i32,
            message,
            leader_id: None,
        })),
    }
}

/// openraft's network factory: hands out clients for peers, never dialling.
pub struct NetworkFactory {
    transport: Arc<Transport>,
}

impl NetworkFactory {
    pub fn new(transport: Arc<Transport>) -> Self {
        Self { transport }
    }

    fn client(&self, target: NodeId, node: &Node, priority: i32) -> PeerClient {
        PeerClient {
            transport: self.transport.clone(),
            target,
            addr: node.addr.clone(),
            priority,
        }
    }
}

impl RaftNetworkFactory<MeshTypes> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> PeerClient {
        self.client(target, node, PRIORITY_REPLICATION)
    }

    async fn new_heartbeat_client(&mut self, target: NodeId, node: &Node) -> PeerClient {
        self.client(target, node, PRIORITY_HEARTBEAT)
    }

    async fn new_snapshot_client(&mut self, target: NodeId, node: &Node) -> PeerClient {
        self.client(target, node, PRIORITY_SNAPSHOT)
    }
}

/// openraft's client for one peer; every call is one stream on the shared
/// connection.
pub struct PeerClient {
    transport: Arc<Transport>,
    target: NodeId,
    addr: String,
    priority: i32,
}

/// Append requests in flight on one append stream before the writer waits
/// for responses: enough to cover a round trip of batches at WAN latency,
/// few enough that a stalled follower does not buffer much.
const APPEND_PIPELINE_DEPTH: usize = 16;

/// Writes `input` to the append stream; tells the reader, through `sent`,
/// of each request sent (or of the failure that ended the writing).
async fn write_appends<St>(
    mut send: quinn::SendStream,
    mut input: St,
    sent: tokio::sync::mpsc::Sender<Result<(), String>>,
) where
    St: Stream<Item = AppendEntriesRequest<MeshTypes>> + Send + Unpin + 'static,
{
    while let Some(request) = input.next().await {
        // Waits while the pipeline is full; fails once the reader is gone.
        let Ok(permit) = sent.reserve().await else {
            return;
        };
        let written = match wire::append_request_to_pb(&request) {
            Ok(pb) => write_frame(&mut send, &pb).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let failed = written.is_err();
        permit.send(written);
        if failed {
            return;
        }
    }
    let _ = send.finish();
}

fn decode_stream_response(
    frame: Bytes,
) -> Result<StreamAppendResult<MeshTypes>, Unreachable<MeshTypes>> {
    match pb::Response::decode(frame).map_err(unreachable)?.kind {
        Some(pb::response::Kind::AppendStream(result)) => {
            wire::stream_result_from_pb(result).map_err(unreachable)
        }
        other => Err(unreachable(format!(
            "unexpected append stream response {other:?}"
        ))),
    }
}

fn unreachable(e: impl std::fmt::Display) -> Unreachable<MeshTypes> {
    Unreachable::from_string(e)
}

impl PeerClient {
    async fn call(
        &self,
        kind: pb::request::Kind,
        snapshot: Option<Bytes>,
        deadline: Duration,
    ) -> Result<pb::response::Kind, Unreachable<MeshTypes>> {
        let response = self
            .transport
            .call(
                self.target,
                &self.addr,
                kind,
                snapshot,
                self.priority,
                deadline,
            )
            .await
            .map_err(unreachable)?;
        response.kind.ok_or_else(|| unreachable("empty response"))
    }

    async fn vote_rpc(
        &self,
        kind: pb::request::Kind,
        option: RPCOption,
    ) -> Result<VoteResponse<MeshTypes>, RPCError<MeshTypes>> {
        match self.call(kind, None, option.soft_ttl()).await? {
            pb::response::Kind::Vote(resp) => {
                Ok(wire::vote_response_from_pb(resp).map_err(unreachable)?)
            }
            other => Err(unreachable(format!("unexpected response {other:?}")).into()),
        }
    }
}

impl RaftNetworkV2<MeshTypes> for PeerClient {
    type SnapshotData = Bytes;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<MeshTypes>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<MeshTypes>, RPCError<MeshTypes>> {
        let request = wire::append_request_to_pb(&rpc).map_err(unreachable)?;
        let kind = pb::request::Kind::AppendEntries(request);
        match self.call(kind, None, option.soft_ttl()).await? {
            pb::response::Kind::AppendEntries(resp) => {
                Ok(wire::append_response_from_pb(resp).map_err(unreachable)?)
            }
            other => Err(unreachable(format!("unexpected response {other:?}")).into()),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<MeshTypes>,
        option: RPCOption,
    ) -> Result<VoteResponse<MeshTypes>, RPCError<MeshTypes>> {
        self.vote_rpc(
            pb::request::Kind::Vote(wire::vote_request_to_pb(&rpc)),
            option,
        )
        .await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<MeshTypes>,
        option: RPCOption,
    ) -> Result<VoteResponse<MeshTypes>, RPCError<MeshTypes>> {
        self.vote_rpc(
            pb::request::Kind::PreVote(wire::vote_request_to_pb(&rpc)),
            option,
        )
        .await
    }

    /// Pipelined replication on one QUIC stream: requests are written as
    /// openraft produces them, without waiting for the previous response, up
    /// to `APPEND_PIPELINE_DEPTH` unanswered; the single stream keeps them in
    /// order, and the follower answers them in order. Each response must come
    /// within the RPC deadline of its request being sent, so an idle stream
    /// never times out but a stalled follower is detected.
    fn stream_append<'s, St>(
        &'s mut self,
        input: St,
        option: RPCOption,
    ) -> BoxFuture<
        's,
        Result<
            BoxStream<'s, Result<StreamAppendResult<MeshTypes>, RPCError<MeshTypes>>>,
            RPCError<MeshTypes>,
        >,
    >
    where
        St: Stream<Item = AppendEntriesRequest<MeshTypes>> + Send + Unpin + 'static,
    {
        Box::pin(async move {
            let deadline = option.soft_ttl();
            let header = pb::request::Kind::AppendStream(pb::AppendStreamOpen {});
            let (send, recv) = self
                .transport
                .open_stream(self.target, &self.addr, header, self.priority, deadline)
                .await
                .map_err(unreachable)?;
            let (sent_tx, sent_rx) = tokio::sync::mpsc::channel(APPEND_PIPELINE_DEPTH);
            tokio::spawn(write_appends(send, input, sent_tx));
            let max = self.transport.limits.frame_bytes_max;
            let responses =
                futures_util::stream::unfold(Some((recv, sent_rx)), move |state| async move {
                    let (mut recv, mut sent_rx) = state?;
                    // One response is owed per request the writer sent; none
                    // owed (and the writer done) ends the stream.
                    match sent_rx.recv().await? {
                        Ok(()) => {}
                        Err(reason) => return Some((Err(unreachable(reason).into()), None)),
                    }
                    let result =
                        match tokio::time::timeout(deadline, read_frame(&mut recv, max)).await {
                            Err(_) => Err(unreachable(format!(
                                "no append response within {deadline:?}"
                            ))),
                            Ok(Err(e)) => Err(unreachable(e)),
                            Ok(Ok(frame)) => decode_stream_response(frame),
                        };
                    match result {
                        Ok(r) => Some((Ok(r), Some((recv, sent_rx)))),
                        Err(e) => Some((Err(e.into()), None)),
                    }
                });
            let responses: BoxStream<'s, _> = Box::pin(responses);
            Ok(responses)
        })
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<MeshTypes>, StreamingError<MeshTypes>> {
        let offer = pb::SnapshotOffer {
            vote: Some(wire::vote_to_pb(&vote)),
            meta: Some(wire::snapshot_meta_to_pb(&snapshot.meta).map_err(unreachable)?),
            total_bytes: snapshot.snapshot.len() as u64,
        };
        let transfer = self.call(
            pb::request::Kind::Snapshot(offer),
            Some(snapshot.snapshot),
            option.soft_ttl(),
        );
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            response = transfer => match response? {
                pb::response::Kind::Snapshot(resp) => {
                    let vote = resp.vote.as_ref().map(wire::vote_from_pb).ok_or_else(|| unreachable("snapshot response without vote"))?;
                    Ok(SnapshotResponse::new(vote))
                }
                other => Err(unreachable(format!("unexpected response {other:?}")).into()),
            },
        }
    }
}
