//! The tokio task of one client connection: it reads bytes, feeds the
//! parser and the [`Session`], performs the session's actions, and writes
//! what the router queued for this client. All protocol decisions live in
//! the session; this file only moves bytes.

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

use jid::FullJid;
use ring::rand::{SecureRandom, SystemRandom};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_rustls::TlsAcceptor;

use crate::lock;
use crate::metrics::names;
use crate::pubsub::Notification;
use crate::pubsub::payload::is_payload_parent;
use crate::sasl::{AuthBackoff, Mechanism, SaslCondition, SaslServer, StoredCredentials};
use crate::xml::{ParserLimits, StreamEvent, StreamParser};
use crate::xmpp::outbound_queue::OutboundQueue;
use crate::xmpp::router::{Connection, Outbound, Router};
use crate::xmpp::session::{Action, Input, Session, SessionEnv, SessionSettings};

/// Bytes read from a socket at once, into a buffer of the worker thread
/// rather than of the connection: an idle session then holds no read buffer
/// (a 4 KiB one per connection was a fifth of an idle session's memory).
/// TLS already buffers a whole record below it; the parser keeps at most
/// one stanza (bounded by `max_stanza_bytes`) beyond this.
const READ_CHUNK_BYTES: usize = 16 * 1024;

thread_local! {
    static READ_BUFFER: RefCell<Box<[u8]>> =
        RefCell::new(vec![0u8; READ_CHUNK_BYTES].into_boxed_slice());
}

/// Waits until `io` has bytes and returns a copy of them (empty at end of
/// stream). The read lands in the thread's buffer and is copied out within
/// the same poll, so no buffer is held while the connection waits.
async fn read_some<S: AsyncRead + Unpin>(io: &mut S) -> std::io::Result<Vec<u8>> {
    std::future::poll_fn(|cx| {
        READ_BUFFER.with_borrow_mut(|buffer| {
            let mut read = ReadBuf::new(buffer);
            match Pin::new(&mut *io).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) => Poll::Ready(Ok(read.filled().to_vec())),
                Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
                Poll::Pending => Poll::Pending,
            }
        })
    })
    .await
}
/// Queued outbound stanzas written in one batch, so a busy connection
/// still gets to read.
const WRITE_BATCH_STANZAS: usize = 64;

/// Limits of client connections (see `[xmpp]` in the configuration).
#[derive(Debug, Clone)]
pub struct C2sLimits {
    pub parser: ParserLimits,
    pub outbound_stanzas_max: usize,
    /// From connect to a bound resource.
    pub stream_open_timeout: Duration,
    /// Silence from an established client before it is disconnected.
    pub idle_timeout: Duration,
    /// A write that takes longer means the client is not reading.
    pub write_timeout: Duration,
    pub auth_attempts_max: u32,
}

/// Where sessions find account credentials: the replicated state.
pub trait CredentialSource: Send + Sync {
    /// The stored credentials of `username` (as SASL normalised it).
    fn credentials(&self, username: &str) -> Option<StoredCredentials>;
    /// The iteration count of stored credentials, which unknown users are
    /// answered with too.
    fn scram_iterations(&self) -> u32;
}

/// What every connection of a node shares.
pub struct C2sContext {
    pub domain: String,
    pub pubsub_service: String,
    pub limits: C2sLimits,
    pub starttls: TlsAcceptor,
    pub router: Arc<Router>,
    pub accounts: Arc<dyn CredentialSource>,
    pub backoff: std::sync::Mutex<AuthBackoff>,
    /// Derives the fake SCRAM salts of unknown users; persistent, so an
    /// unknown user's salt does not change across restarts (which would
    /// tell it apart from a real one).
    pub fake_salt_key: [u8; 32],
    pub random: SystemRandom,
    next_connection_id: AtomicU64,
    metrics: C2sMetrics,
}

/// Handles on the metrics every stanza touches, looked up once: a registry
/// lookup per written notification was measurable in the fan-out profile.
struct C2sMetrics {
    stanzas_in: metrics::Counter,
    stanzas_out: metrics::Counter,
    notifications: metrics::Counter,
    delivery_seconds: metrics::Histogram,
}

impl C2sMetrics {
    fn new() -> Self {
        C2sMetrics {
            stanzas_in: metrics::counter!(names::STANZAS_IN_TOTAL),
            stanzas_out: metrics::counter!(names::STANZAS_OUT_TOTAL),
            notifications: metrics::counter!(names::PUBSUB_NOTIFICATIONS_TOTAL),
            delivery_seconds: metrics::histogram!(names::DELIVERY_SECONDS),
        }
    }
}

impl C2sContext {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        domain: String,
        pubsub_service: String,
        limits: C2sLimits,
        starttls: TlsAcceptor,
        router: Arc<Router>,
        accounts: Arc<dyn CredentialSource>,
        backoff: AuthBackoff,
        fake_salt_key: [u8; 32],
    ) -> Self {
        C2sContext {
            domain,
            pubsub_service,
            limits,
            starttls,
            router,
            accounts,
            backoff: std::sync::Mutex::new(backoff),
            fake_salt_key,
            random: SystemRandom::new(),
            next_connection_id: AtomicU64::new(1),
            metrics: C2sMetrics::new(),
        }
    }
}

/// Serves one accepted TCP connection until it closes. `direct_tls` is the
/// acceptor of a XEP-0368 listener; `None` means STARTTLS.
pub async fn serve(
    ctx: Arc<C2sContext>,
    mut tcp: TcpStream,
    peer: SocketAddr,
    direct_tls: Option<TlsAcceptor>,
    shutdown: watch::Receiver<bool>,
) {
    let _ = tcp.set_nodelay(true);
    let mut conn = Conn::new(ctx.clone(), peer, direct_tls.is_some(), shutdown);
    match direct_tls {
        Some(acceptor) => {
            if let Some(mut tls) = conn.handshake(acceptor, tcp).await {
                conn.drive(&mut tls).await;
            }
        }
        None => {
            if conn.drive(&mut tcp).await == Exit::StartTls
                && let Some(mut tls) = conn.handshake(ctx.starttls.clone(), tcp).await
            {
                conn.feed(Input::TlsEstablished);
                conn.drive(&mut tls).await;
            }
        }
    }
    conn.finish();
}

#[derive(Debug, PartialEq, Eq)]
enum Exit {
    StartTls,
    Closed,
}

/// The per-connection state the task owns.
struct Conn {
    ctx: Arc<C2sContext>,
    id: u64,
    peer: SocketAddr,
    session: Session,
    parser: StreamParser,
    env: ConnEnv,
    queue: Arc<OutboundQueue>,
    shutdown: watch::Receiver<bool>,
    /// Bytes waiting to be written, produced by the session.
    pending: String,
    /// Publication times of the notifications in `pending`.
    pending_publications: Vec<i64>,
    bound: Option<FullJid>,
    connected_at: Instant,
    last_read: Instant,
    /// Set by `Action::StartTls` or `Action::Close`.
    exit: Option<Exit>,
    /// Set by `Action::RestartStream`: events parsed before the reset
    /// belong to the old stream and are dropped.
    restarted: bool,
}

impl Conn {
    fn new(
        ctx: Arc<C2sContext>,
        peer: SocketAddr,
        direct_tls: bool,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        let settings = SessionSettings {
            domain: ctx.domain.clone(),
            pubsub_service: ctx.pubsub_service.clone(),
            direct_tls,
            auth_attempts_max: ctx.limits.auth_attempts_max,
        };
        // Bounded: a client that does not read its notifications must not
        // make the server buffer without limit (see `Router`).
        let queue = Arc::new(OutboundQueue::new(ctx.limits.outbound_stanzas_max));
        let now = Instant::now();
        Conn {
            id: ctx.next_connection_id.fetch_add(1, Ordering::Relaxed),
            peer,
            session: Session::new(settings),
            parser: StreamParser::new(ctx.limits.parser).capture_children_of(is_payload_parent),
            env: ConnEnv {
                ctx: ctx.clone(),
                ip: peer.ip(),
            },
            queue,
            shutdown,
            pending: String::new(),
            pending_publications: Vec::new(),
            bound: None,
            connected_at: now,
            last_read: now,
            exit: None,
            restarted: false,
            ctx,
        }
    }

    async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        acceptor: TlsAcceptor,
        io: S,
    ) -> Option<tokio_rustls::server::TlsStream<S>> {
        let remaining = self.deadline().saturating_duration_since(Instant::now());
        match timeout(remaining, acceptor.accept(io)).await {
            Ok(Ok(tls)) => Some(tls),
            Ok(Err(error)) => {
                tracing::debug!(peer = %self.peer, %error, "TLS handshake failed");
                None
            }
            Err(_) => {
                tracing::debug!(peer = %self.peer, "TLS handshake timed out");
                None
            }
        }
    }

    /// Runs the connection on `io` until it closes or must switch to TLS.
    ///
    /// The shutdown, overflow and deadline futures live across iterations:
    /// re-creating them on every wake-up registered and removed two waiters
    /// and a timer per notification written.
    async fn drive<S: AsyncRead + AsyncWrite + Unpin>(&mut self, io: &mut S) -> Exit {
        self.exit = None;
        let mut events = Vec::new();
        let mut shutdown = self.shutdown.clone();
        let shutdown = shutdown.changed();
        let queue = self.queue.clone();
        let overflowed = queue.overflowed();
        let ready = queue.ready();
        let deadline = sleep_until(self.deadline());
        tokio::pin!(shutdown, overflowed, ready, deadline);
        while self.exit.is_none() {
            // A read moves the deadline later, which the timer learns when it
            // fires; only a deadline moved earlier (none today) re-arms it now.
            if self.deadline() < deadline.deadline() {
                deadline.as_mut().reset(self.deadline());
            }
            tokio::select! {
                biased;
                _ = &mut shutdown => self.feed(Input::Shutdown),
                _ = &mut overflowed => {
                    metrics::counter!(names::SLOW_CONSUMER_DISCONNECTS_TOTAL).increment(1);
                    self.feed(Input::SlowConsumer);
                }
                _ = &mut deadline => {
                    if Instant::now() >= self.deadline() {
                        self.feed(Input::TimedOut);
                    } else {
                        deadline.as_mut().reset(self.deadline());
                    }
                }
                _ = &mut ready => {
                    ready.set(queue.ready());
                    // A commit answers every request it holds at once, each
                    // from the task that proposed it, and the first answer
                    // queued runs this task next (tokio's LIFO slot): one
                    // turn of the scheduler lets the client's other answers
                    // join it in one write. Notifications are queued by the
                    // router in one pass, so they are written at once.
                    if queue.next_is_stanza() {
                        tokio::task::yield_now().await;
                    }
                    self.queue_batch();
                }
                read = read_some(io) => match read {
                    Ok(bytes) if !bytes.is_empty() => {
                        self.last_read = Instant::now();
                        self.on_bytes(&bytes, &mut events);
                    }
                    Ok(_) | Err(_) => return Exit::Closed,
                },
            }
            if !self.pending.is_empty() && !self.flush(io).await {
                return Exit::Closed;
            }
        }
        if self.exit == Some(Exit::Closed) {
            let _ = timeout(self.ctx.limits.write_timeout, io.shutdown()).await;
        }
        self.exit.take().unwrap_or(Exit::Closed)
    }

    fn on_bytes(&mut self, bytes: &[u8], events: &mut Vec<StreamEvent>) {
        events.clear();
        let result = self.parser.push(bytes, events);
        for event in events.drain(..) {
            if matches!(event, StreamEvent::Stanza(_)) {
                self.ctx.metrics.stanzas_in.increment(1);
            }
            self.feed(Input::Event(event));
            // After <proceed/> no plaintext byte may be interpreted: what a
            // client pipelined after <starttls/> is dropped (the STARTTLS
            // command-injection attack, CVE-2011-0411). After SASL success
            // the stream restarts and the parser was reset.
            if self.exit.is_some() || std::mem::take(&mut self.restarted) {
                return;
            }
        }
        if let Err(error) = result {
            self.feed(Input::Malformed(error));
        }
    }

    fn queue_batch(&mut self) {
        let batch = self.queue.take(WRITE_BATCH_STANZAS);
        if batch.is_empty() {
            return;
        }
        let count = batch.len();
        for outbound in batch {
            match outbound {
                Outbound::Stanza(stanza) => self.pending.push_str(&stanza),
                Outbound::Notification {
                    head,
                    body,
                    published_micros,
                } => {
                    self.pending.push_str(&head);
                    self.pending.push_str(&body);
                    self.pending.push_str(Notification::TAIL);
                    self.pending_publications.push(published_micros);
                }
            }
        }
        self.ctx.metrics.stanzas_out.increment(count as u64);
        self.session.on_stanzas_sent(count as u32);
    }

    async fn flush<S: AsyncWrite + Unpin>(&mut self, io: &mut S) -> bool {
        let bytes = std::mem::take(&mut self.pending);
        let write = async {
            io.write_all(bytes.as_bytes()).await?;
            io.flush().await
        };
        match timeout(self.ctx.limits.write_timeout, write).await {
            Ok(Ok(())) => {
                self.record_deliveries();
                true
            }
            Ok(Err(_)) => false,
            Err(_) => {
                metrics::counter!(names::SLOW_CONSUMER_DISCONNECTS_TOTAL).increment(1);
                tracing::info!(peer = %self.peer, "closing a connection whose writes stalled");
                false
            }
        }
    }

    /// Publication → written to this client's socket, for every
    /// notification in the batch just written.
    fn record_deliveries(&mut self) {
        if self.pending_publications.is_empty() {
            return;
        }
        let now = crate::clock::now_micros();
        let count = self.pending_publications.len() as u64;
        let metrics = &self.ctx.metrics;
        for published in self.pending_publications.drain(..) {
            let seconds = now.saturating_sub(published).max(0) as f64 / 1e6;
            metrics.delivery_seconds.record(seconds);
        }
        metrics.notifications.increment(count);
    }

    /// Before binding, the client has `stream_open_timeout` from connect;
    /// afterwards `idle_timeout` from its last byte.
    fn deadline(&self) -> Instant {
        if self.session.is_established() {
            self.last_read + self.ctx.limits.idle_timeout
        } else {
            self.connected_at + self.ctx.limits.stream_open_timeout
        }
    }

    fn feed(&mut self, input: Input) {
        let actions = self.session.handle(input, &mut self.env);
        for action in actions {
            self.perform(action);
        }
    }

    fn perform(&mut self, action: Action) {
        match action {
            Action::Send(bytes) => self.pending.push_str(&bytes),
            Action::StartTls => {
                self.parser.reset();
                self.exit = Some(Exit::StartTls);
            }
            Action::RestartStream => {
                self.parser.reset();
                self.restarted = true;
            }
            Action::Bind { username, resource } => {
                let connection = Connection {
                    id: self.id,
                    queue: self.queue.clone(),
                };
                let random = self.env.random_id();
                let result =
                    self.ctx
                        .router
                        .bind(&username, resource.as_deref(), &random, connection);
                if let Ok(jid) = &result {
                    tracing::debug!(peer = %self.peer, %jid, "session bound");
                    self.bound = Some(jid.clone());
                }
                self.feed(Input::Bound(result));
            }
            Action::SetAvailable(available) => {
                if let Some(jid) = &self.bound {
                    self.ctx.router.set_available(jid, available);
                }
            }
            Action::Route(stanza) => self.ctx.router.route(stanza),
            Action::Close { stream_error } => {
                if let Some(condition) = stream_error {
                    metrics::counter!(names::STREAM_ERRORS_TOTAL, "condition" => condition)
                        .increment(1);
                    tracing::debug!(peer = %self.peer, condition, "stream error");
                }
                self.exit = Some(Exit::Closed);
            }
        }
    }

    fn finish(&mut self) {
        self.queue.close();
        if let Some(jid) = self.bound.take() {
            self.ctx.router.unbind(&jid, self.id);
        }
    }
}

/// The session's window on the node.
struct ConnEnv {
    ctx: Arc<C2sContext>,
    ip: IpAddr,
}

impl SessionEnv for ConnEnv {
    fn random_id(&mut self) -> String {
        random_id(&self.ctx.random)
    }

    fn credentials(&self, username: &str) -> Option<StoredCredentials> {
        self.ctx.accounts.credentials(username)
    }

    fn sasl_server(&mut self, mechanism: Mechanism) -> SaslServer {
        SaslServer::new(mechanism, &self.random_id(), &self.ctx.fake_salt_key)
            .with_fake_iterations(self.ctx.accounts.scram_iterations())
    }

    fn auth_allowed(&mut self) -> Result<(), Duration> {
        lock(&self.ctx.backoff).check(self.ip, std::time::Instant::now())
    }

    fn auth_failed(&mut self, condition: SaslCondition) {
        metrics::counter!(names::AUTH_FAILURES_TOTAL, "reason" => condition.element_name())
            .increment(1);
        lock(&self.ctx.backoff).record_failure(self.ip, std::time::Instant::now());
    }

    fn auth_succeeded(&mut self) {
        lock(&self.ctx.backoff).record_success(self.ip);
    }
}

/// 144 random bits, hex-encoded: stream ids, SCRAM nonces (RFC 5802 asks
/// for unpredictable ones) and generated resources.
pub fn random_id(random: &SystemRandom) -> String {
    let mut bytes = [0u8; 18];
    // SystemRandom only fails if the OS has no entropy source at all, in
    // which case no TLS handshake could have happened either.
    if random.fill(&mut bytes).is_err() {
        tracing::error!("the operating system's random source failed");
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
