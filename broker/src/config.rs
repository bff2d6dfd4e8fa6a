//! The node's TOML configuration.
//!
//! The section and key names are the contract of `/work/shared/INTERFACE.md`;
//! the `[xmpp]` limits and the `[log]` section extend it. Every key has a
//! default that suits development ([`Config::development`] is the all-defaults
//! value), and every struct denies unknown keys, so a misspelt key is an error
//! naming the key and its line rather than a silently ignored setting.
//!
//! Loading is two steps: [`toml`] deserialisation (types, unknown keys) and
//! [`Config::validate`] (relations between values, ranges), each failing with
//! one line that says what to fix. Relative paths are taken relative to the
//! working directory the node is started from, as the paths of `serve`'s
//! arguments are.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

/// A whole node configuration: the top-level keys and one field per section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The XMPP domain served; the pubsub service is `pubsub.<domain>`.
    pub domain: String,
    /// Where storage, the Raft log and a generated certificate live.
    pub data_dir: PathBuf,
    /// Threads running sessions, the pubsub service and the mesh; `None`:
    /// one per CPU this process may use. Sites sharing a host's CPUs run
    /// best with their share: an idle worker that is woken for every burst
    /// of work costs more CPU than it adds where there is none to spare.
    pub worker_threads: Option<usize>,
    pub xmpp: XmppConfig,
    /// The XMPP-facing certificate; `None`: self-signed, generated into
    /// `data_dir` (see [`crate::tls`]).
    pub tls: Option<TlsFiles>,
    pub admin: AdminConfig,
    /// `None`: the node is a single-node mesh of its own.
    pub mesh: Option<MeshConfig>,
    /// `None`: the VTP bridge is off.
    pub vtp: Option<VtpConfig>,
    pub pubsub: PubsubConfig,
    pub log: LogConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            domain: "localhost".to_owned(),
            data_dir: PathBuf::from("./vomesh-data"),
            worker_threads: None,
            xmpp: XmppConfig::default(),
            tls: None,
            admin: AdminConfig::default(),
            mesh: None,
            vtp: None,
            pubsub: PubsubConfig::default(),
            log: LogConfig::default(),
        }
    }
}

/// `[xmpp]`: the client listeners and the limits the server enforces on them.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct XmppConfig {
    /// STARTTLS listener; TLS is required before authentication.
    pub listen: SocketAddr,
    /// Direct TLS listener (XEP-0368). Written as an address, or `false` to
    /// turn it off.
    #[serde(deserialize_with = "address_or_false")]
    pub listen_tls: Option<SocketAddr>,
    /// Largest stanza accepted; a bigger one is a `<policy-violation/>`
    /// stream error (RFC 6120 §4.9.3.14).
    pub max_stanza_bytes: usize,
    /// Deepest element nesting inside a stanza.
    pub max_xml_depth: usize,
    /// Most attributes on one element.
    pub max_xml_attributes: usize,
    /// Most concurrent client connections; further ones are refused.
    pub max_connections: usize,
    /// Per-connection queue of stanzas waiting to be written. A client that
    /// lets it fill is disconnected as a slow consumer rather than letting
    /// its backlog grow in the server's memory.
    pub max_outbound_stanzas: usize,
    /// A connection that has not sent its stream header, or not authenticated,
    /// within this is closed with `<connection-timeout/>`.
    pub stream_open_timeout_secs: u64,
    /// An authenticated stream silent for this long is closed with
    /// `<connection-timeout/>`.
    pub idle_timeout_secs: u64,
    /// A write to a client that does not complete within this means the
    /// client stopped reading: it is disconnected as a slow consumer.
    pub write_timeout_secs: u64,
    /// Failed SASL attempts allowed on one stream before it is closed with
    /// `<not-authorized/>` (RFC 6120 §6.4.5: at least 2, at most 5).
    pub auth_attempts_max: u32,
    /// PBKDF2 iteration count of newly stored SCRAM credentials.
    pub scram_iterations: u32,
    /// Failed authentications from one address answered without delay.
    pub auth_failures_free: u32,
    /// First delay after the free failures; doubles with each further one.
    pub auth_backoff_base_ms: u64,
    /// Ceiling of the doubling delay.
    pub auth_backoff_max_ms: u64,
}

impl Default for XmppConfig {
    fn default() -> Self {
        XmppConfig {
            listen: SocketAddr::new(LOOPBACK, 5222),
            listen_tls: Some(SocketAddr::new(LOOPBACK, 5223)),
            max_stanza_bytes: 262_144,
            max_xml_depth: 32,
            max_xml_attributes: 64,
            max_connections: 10_000,
            max_outbound_stanzas: 1024,
            stream_open_timeout_secs: 30,
            idle_timeout_secs: 600,
            write_timeout_secs: 30,
            auth_attempts_max: 3,
            scram_iterations: SCRAM_ITERATIONS_MIN,
            auth_failures_free: 3,
            auth_backoff_base_ms: 1000,
            auth_backoff_max_ms: 60_000,
        }
    }
}

impl XmppConfig {
    pub fn stream_open_timeout(&self) -> Duration {
        Duration::from_secs(self.stream_open_timeout_secs)
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }

    pub fn write_timeout(&self) -> Duration {
        Duration::from_secs(self.write_timeout_secs)
    }

    pub fn auth_backoff_base(&self) -> Duration {
        Duration::from_millis(self.auth_backoff_base_ms)
    }

    pub fn auth_backoff_max(&self) -> Duration {
        Duration::from_millis(self.auth_backoff_max_ms)
    }
}

/// RFC 7677 §4: the iteration count a server announces SHOULD be at least 4096.
pub const SCRAM_ITERATIONS_MIN: u32 = 4096;

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// `[tls]`: the XMPP-facing certificate chain and private key, PEM files.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `[admin]`: the HTTP listener for metrics, health and the admin API.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// Bearer token required on `/api/...`; `None` (development): no check.
    pub token: Option<String>,
    /// `/readyz` reports not ready while the applied index trails the
    /// commit index by more entries than this.
    pub ready_applied_lag_max: u64,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: SocketAddr::new(LOOPBACK, 9100),
            token: None,
            ready_applied_lag_max: 1000,
        }
    }
}

/// Largest `[mesh] snapshot_log_growth_percent`: a log of ten times the
/// state between snapshots.
const SNAPSHOT_LOG_GROWTH_PERCENT_MAX: u64 = 1_000;

/// Largest `[mesh] udp_buffer_bytes`: the kernel takes the size as a C
/// `int`, and caps it far lower anyway.
const UDP_BUFFER_BYTES_MAX: usize = 1 << 30;

/// Largest `[mesh] forward_batch_bytes_max`: well within the frames the
/// mesh sizes for its appends.
const FORWARD_BATCH_BYTES_MAX: usize = 64 << 20;

/// Most `worker_threads`: far beyond any host's cores, low enough that a
/// typo does not start a million threads.
const WORKER_THREADS_MAX: usize = 1024;

/// Largest `[mesh] forward_coalesce_yields`: each yield lets every task
/// already woken run once more before a forwarding request leaves.
const FORWARD_COALESCE_YIELDS_MAX: usize = 64;

/// `[mesh]`: this node's place in the Raft group.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MeshConfig {
    pub node_id: u64,
    /// QUIC (UDP) listener.
    pub listen: SocketAddr,
    /// `HOST:PORT` other nodes dial to reach this one.
    pub advertise: String,
    /// The initial cluster, formed on first start (the lowest id initialises
    /// it). Empty: this node alone.
    pub members: Vec<MeshMember>,
    /// Cluster CA; peers must present a certificate it signed. Required, with
    /// `cert` and `key`, as soon as `members` names another node.
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Timing defaults: `lan` (sites under ~1 ms apart: heartbeat 100 ms,
    /// election 0.5–1 s) or `wan` (sites up to ~300 ms apart: heartbeat
    /// 600 ms, election 3–6 s). The keys below override single values.
    pub network: NetworkProfile,
    pub heartbeat_interval_ms: Option<u64>,
    pub election_timeout_min_ms: Option<u64>,
    pub election_timeout_max_ms: Option<u64>,
    /// How long a write may wait in all (forwarding, commit, local apply)
    /// before the client is told it failed.
    pub propose_timeout_ms: Option<u64>,
    /// Take a snapshot after this many applied entries…
    pub snapshot_every_entries: u64,
    /// …once the commands applied since the last snapshot add up to this
    /// percentage of its size (0: the entries alone decide), so that the
    /// snapshots written stay in proportion to what is published however
    /// large the archive grows.
    pub snapshot_log_growth_percent: u64,
    /// Entries kept behind a snapshot, so a briefly lagging site catches up
    /// from the log instead of a whole snapshot.
    pub log_entries_kept_after_snapshot: u64,
    /// Memory for the Raft log entries appended last, which replication
    /// and the apply read back at once; older ones are read from disk.
    pub log_cache_bytes: usize,
    /// The largest snapshot this site accepts from a leader (it is held in
    /// memory whole). A site that fell behind the log kept after a
    /// snapshot can only catch up if the leader's snapshot fits: set it
    /// above the size the archive will reach (`vomesh_raft_snapshot_bytes`).
    pub snapshot_bytes_max: u64,
    /// Kernel buffer asked for the mesh's UDP socket, each way (0: the
    /// kernel's default). Linux caps it at `net.core.rmem_max` and
    /// `wmem_max`; the node warns when it gets less.
    pub udp_buffer_bytes: usize,
    /// Requests a follower site has on their way to the leader at once,
    /// each carrying the proposals that queued meanwhile.
    pub forward_batches_in_flight_max: usize,
    /// Command bytes in one forwarding request (a larger command goes
    /// alone).
    pub forward_batch_bytes_max: usize,
    /// Times a forwarding request's sender yields to the tasks already
    /// woken before it leaves, so the publishes they carry go with it (0:
    /// it leaves with what has queued).
    pub forward_coalesce_yields: usize,
    /// The site the leader hands the leadership to once that site has
    /// caught up, so that publishes made there are not forwarded (absent:
    /// wherever elections put it). Name the same one at every site.
    pub preferred_leader: Option<u64>,
}

/// The network a mesh spans, which sets its timing defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NetworkProfile {
    #[default]
    Lan,
    Wan,
}

impl Default for MeshConfig {
    fn default() -> Self {
        MeshConfig {
            node_id: 1,
            listen: SocketAddr::new(LOOPBACK, 7001),
            advertise: "127.0.0.1:7001".to_owned(),
            members: Vec::new(),
            ca: None,
            cert: None,
            key: None,
            network: NetworkProfile::Lan,
            heartbeat_interval_ms: None,
            election_timeout_min_ms: None,
            election_timeout_max_ms: None,
            propose_timeout_ms: None,
            snapshot_every_entries: 10_000,
            snapshot_log_growth_percent: 100,
            log_entries_kept_after_snapshot: 1_000,
            log_cache_bytes: 16 * 1024 * 1024,
            snapshot_bytes_max: 1024 * 1024 * 1024,
            udp_buffer_bytes: 4 * 1024 * 1024,
            forward_batches_in_flight_max: 16,
            forward_batch_bytes_max: 1024 * 1024,
            forward_coalesce_yields: 2,
            preferred_leader: None,
        }
    }
}

/// `[pubsub]`: limits of the pubsub service (each answered with the error
/// XEP-0060 names when reached) and of the writes in flight.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PubsubConfig {
    /// Writes (publish, subscribe, …) being committed at once at this site;
    /// beyond it a write is refused with `resource-constraint`. Requests
    /// that wait for this site to catch up with the mesh (archive queries,
    /// errors re-checked) count against the same limit.
    pub max_inflight_proposals: usize,
    pub max_nodes: usize,
    /// `pubsub#max_items` of a node created without one.
    pub default_max_items: u64,
    /// The largest `pubsub#max_items` (and the value of `max`).
    pub max_items_per_node: u64,
    pub max_payload_bytes: usize,
    pub max_subscriptions_per_node: usize,
    pub max_node_id_bytes: usize,
    /// XEP-0313 history kept per node; the oldest entries are dropped.
    pub max_archive_entries_per_node: usize,
    /// Payload and item id bytes kept across every node's history; beyond
    /// it the site's oldest entries are dropped, whichever node holds them.
    /// Every site holds its archives in memory (about 1.45 times this) and
    /// every snapshot carries them, so it must stay below
    /// `[mesh] snapshot_bytes_max`.
    pub max_archive_bytes: u64,
    /// Seconds an event stays in the history after its publication
    /// (Prosody's `archive_expires_after`); 0, the default: no age bound.
    /// Checked at each publish and by the leader's expiry command, against
    /// the time stamped on the command.
    pub max_archive_age_seconds: u64,
    /// Items or archive entries in one response (RSM `max` is capped to it).
    pub max_page_items: usize,
}

impl Default for PubsubConfig {
    fn default() -> Self {
        PubsubConfig {
            max_inflight_proposals: 4096,
            max_nodes: 10_000,
            default_max_items: 1_000,
            max_items_per_node: 100_000,
            max_payload_bytes: 256 * 1024,
            max_subscriptions_per_node: 100_000,
            max_node_id_bytes: 1_023,
            max_archive_entries_per_node: 1_000_000,
            max_archive_bytes: 512 * 1024 * 1024,
            max_archive_age_seconds: 0,
            max_page_items: 1_000,
        }
    }
}

/// One `members` entry, written `ID@HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshMember {
    pub id: u64,
    /// `HOST:PORT`, resolved when dialled so DNS names may move.
    pub addr: String,
}

impl FromStr for MeshMember {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let explain = || {
            format!(
                "invalid mesh member `{s}`: expected ID@HOST:PORT, e.g. `2@site-b.example.org:7001`"
            )
        };
        let (id, addr) = s.split_once('@').ok_or_else(explain)?;
        let id = id.parse::<u64>().map_err(|_| explain())?;
        if split_host_port(addr).is_none() {
            return Err(explain());
        }
        Ok(MeshMember {
            id,
            addr: addr.to_owned(),
        })
    }
}

impl fmt::Display for MeshMember {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.id, self.addr)
    }
}

impl<'de> Deserialize<'de> for MeshMember {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// `[vtp]`: the VOEvent Transport Protocol bridge.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VtpConfig {
    /// Authors submit one event per connection; acked after commit.
    pub author_listen: SocketAddr,
    /// VTP subscribers receive every item published to a `voevent/...` node.
    pub broadcast_listen: SocketAddr,
    /// This broker's IVORN in VTP transport messages; `None`:
    /// `ivo://<domain>/vomesh` (see [`VtpConfig::local_ivo_or_default`]).
    pub local_ivo: Option<String>,
    /// `HOST:PORT` of remote VTP broadcasters this site subscribes to.
    pub upstream: Vec<String>,
    /// Source networks allowed to submit events.
    pub author_allow: Vec<IpNet>,
    /// Source networks allowed to subscribe.
    pub subscriber_allow: Vec<IpNet>,
    /// Where an event is published: `{authority}` and `{stream}` (the
    /// IVORN's resource key) are replaced. Default `voevent/{authority}/{stream}`.
    pub node_template: String,
    /// Items published to nodes whose name starts with one of these go to
    /// the broadcast port. Default `["voevent/"]`.
    pub broadcast_node_prefixes: Vec<String>,
    /// Largest VTP message accepted, in bytes; a peer announcing more is
    /// disconnected (its length prefix is not trusted with an allocation).
    pub max_message_bytes: usize,
    /// Seconds an author has to send its event, and a broker its reply.
    pub author_timeout_secs: u64,
    /// Seconds between `iamalive` messages to each subscriber.
    pub iamalive_interval_secs: u64,
    /// A subscriber that leaves an event or `iamalive` unanswered this
    /// long is dropped.
    pub subscriber_reply_timeout_secs: u64,
    /// A subscriber with more messages than this unanswered when an
    /// `iamalive` is due is dropped (Comet's rule; a burst may run ahead).
    pub max_unanswered_per_subscriber: usize,
    /// Events queued for one subscriber; one that falls this far behind
    /// is dropped (it would otherwise hold every event in memory).
    pub subscriber_queue_events: usize,
    /// Subscribers connected at once; more wait in the kernel's backlog.
    pub max_subscribers: usize,
    /// Author connections served at once; more wait in the backlog.
    pub max_author_connections: usize,
    /// An upstream that sends nothing (not even `iamalive`) this long is
    /// taken for dead and reconnected.
    pub upstream_idle_timeout_secs: u64,
    /// Upper bound of the reconnection back-off to an upstream, seconds.
    pub upstream_retry_max_secs: u64,
}

impl Default for VtpConfig {
    fn default() -> Self {
        let loopback = vec![
            IpNet::from(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            IpNet::from(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        ];
        VtpConfig {
            author_listen: SocketAddr::new(LOOPBACK, 8098),
            broadcast_listen: SocketAddr::new(LOOPBACK, 8099),
            local_ivo: None,
            upstream: Vec::new(),
            author_allow: loopback.clone(),
            subscriber_allow: loopback,
            node_template: "voevent/{authority}/{stream}".to_owned(),
            broadcast_node_prefixes: vec![crate::voevent::VOEVENT_NODE_PREFIX.to_owned()],
            // As `[pubsub] max_payload_bytes`: a bigger event could not be stored.
            max_message_bytes: 256 * 1024,
            // Comet's receiver timeout.
            author_timeout_secs: 20,
            // VTP's (and Comet's) iamalive period.
            iamalive_interval_secs: 60,
            subscriber_reply_timeout_secs: 120,
            // Comet drops a subscriber with 10 unacknowledged events.
            max_unanswered_per_subscriber: 10,
            subscriber_queue_events: 1024,
            max_subscribers: 256,
            max_author_connections: 64,
            // Comet's subscriber gives up after 120 s of silence.
            upstream_idle_timeout_secs: 120,
            upstream_retry_max_secs: 60,
        }
    }
}

impl VtpConfig {
    /// The configured IVORN, or one derived from the XMPP domain.
    pub fn local_ivo_or_default(&self, domain: &str) -> String {
        match &self.local_ivo {
            Some(ivo) => ivo.clone(),
            None => format!("ivo://{domain}/vomesh"),
        }
    }
}

/// `[log]`: what goes to stderr.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing_subscriber::EnvFilter` directive, e.g. `info,vomesh_mesh=debug`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Human,
            level: "info".to_owned(),
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One readable line per event.
    #[default]
    Human,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Why a configuration could not be used. Each displays as one line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Bad TOML, a wrong type or an unknown key.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{}: {source}", path.display())]
    Invalid {
        path: PathBuf,
        source: InvalidConfig,
    },
}

/// A value that parsed but cannot be used: the key and what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{key}`: {problem}")]
pub struct InvalidConfig {
    /// Dotted key, e.g. `xmpp.max_stanza_bytes`.
    pub key: String,
    pub problem: String,
}

fn invalid(key: &str, problem: impl Into<String>) -> InvalidConfig {
    InvalidConfig {
        key: key.to_owned(),
        problem: problem.into(),
    }
}

impl Config {
    /// The configuration `vomesh serve` runs with when given no file.
    pub fn development() -> Config {
        Config::default()
    }

    /// Reads, parses and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml(&text).map_err(|err| match err {
            TomlProblem::Syntax {
                line,
                column,
                message,
            } => ConfigError::Syntax {
                path: path.to_owned(),
                line,
                column,
                message,
            },
            TomlProblem::Invalid(source) => ConfigError::Invalid {
                path: path.to_owned(),
                source,
            },
        })
    }

    fn from_toml(text: &str) -> Result<Config, TomlProblem> {
        let config: Config = toml::from_str(text).map_err(|err| {
            let (line, column) = err
                .span()
                .map_or((1, 1), |span| line_and_column(text, span.start));
            TomlProblem::Syntax {
                line,
                column,
                message: err.message().to_owned(),
            }
        })?;
        config.validate().map_err(TomlProblem::Invalid)?;
        Ok(config)
    }

    /// The address of the XMPP pubsub service (XEP-0060), `pubsub.<domain>`.
    pub fn pubsub_domain(&self) -> String {
        format!("pubsub.{}", self.domain)
    }

    /// Checks what types alone cannot: ranges, formats, and keys that must
    /// agree with each other.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        validate_domain(&self.domain)?;
        if self
            .worker_threads
            .is_some_and(|threads| !(1..=WORKER_THREADS_MAX).contains(&threads))
        {
            return Err(invalid(
                "worker_threads",
                format!(
                    "must be between 1 and {WORKER_THREADS_MAX}; remove the key for one per CPU"
                ),
            ));
        }
        self.validate_xmpp()?;
        if let Some(token) = &self.admin.token {
            if token.trim().is_empty() {
                return Err(invalid(
                    "admin.token",
                    "is empty; remove the key to disable the check, or set a secret",
                ));
            }
        } else if !self.admin.listen.ip().is_loopback() {
            // The admin API creates accounts and changes membership: never
            // expose it unauthenticated beyond this host.
            return Err(invalid(
                "admin.token",
                format!(
                    "is required because admin.listen ({}) is not a loopback address",
                    self.admin.listen
                ),
            ));
        }
        if let Some(mesh) = &self.mesh {
            validate_mesh(mesh)?;
        }
        validate_pubsub(&self.pubsub)?;
        // A snapshot carries every archive: one larger than the peers accept
        // could never catch up a site that fell behind the log.
        if let Some(mesh) = &self.mesh
            && self.pubsub.max_archive_bytes >= mesh.snapshot_bytes_max
        {
            return Err(invalid(
                "pubsub.max_archive_bytes",
                format!(
                    "must be below mesh.snapshot_bytes_max ({}): every snapshot carries the archives",
                    mesh.snapshot_bytes_max
                ),
            ));
        }
        if let Some(vtp) = &self.vtp {
            validate_vtp(vtp)?;
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.level).map_err(|err| {
            invalid(
                "log.level",
                format!("is not a valid filter directive: {err}"),
            )
        })?;
        Ok(())
    }

    fn validate_xmpp(&self) -> Result<(), InvalidConfig> {
        let x = &self.xmpp;
        let positive = [
            ("xmpp.max_stanza_bytes", x.max_stanza_bytes as u64),
            ("xmpp.max_xml_depth", x.max_xml_depth as u64),
            ("xmpp.max_xml_attributes", x.max_xml_attributes as u64),
            ("xmpp.max_connections", x.max_connections as u64),
            ("xmpp.max_outbound_stanzas", x.max_outbound_stanzas as u64),
            ("xmpp.stream_open_timeout_secs", x.stream_open_timeout_secs),
            ("xmpp.idle_timeout_secs", x.idle_timeout_secs),
            ("xmpp.write_timeout_secs", x.write_timeout_secs),
            ("xmpp.auth_backoff_base_ms", x.auth_backoff_base_ms),
            ("xmpp.auth_backoff_max_ms", x.auth_backoff_max_ms),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, value)| *value == 0) {
            return Err(invalid(key, "must be greater than 0"));
        }
        // RFC 6120 §13.12: a server must accept stanzas of at least 10000 bytes.
        if x.max_stanza_bytes < 10_000 {
            return Err(invalid(
                "xmpp.max_stanza_bytes",
                "must be at least 10000 (RFC 6120 §13.12)",
            ));
        }
        if !(2..=5).contains(&x.auth_attempts_max) {
            return Err(invalid(
                "xmpp.auth_attempts_max",
                "must be between 2 and 5 (RFC 6120 §6.4.5)",
            ));
        }
        if x.scram_iterations < SCRAM_ITERATIONS_MIN {
            return Err(invalid(
                "xmpp.scram_iterations",
                format!("must be at least {SCRAM_ITERATIONS_MIN} (RFC 7677 §4)"),
            ));
        }
        if x.auth_backoff_base_ms > x.auth_backoff_max_ms {
            return Err(invalid(
                "xmpp.auth_backoff_base_ms",
                "must not exceed xmpp.auth_backoff_max_ms",
            ));
        }
        if x.listen_tls == Some(x.listen) {
            return Err(invalid(
                "xmpp.listen_tls",
                "must differ from xmpp.listen: one port speaks STARTTLS, the other direct TLS",
            ));
        }
        Ok(())
    }
}

/// Why [`Config::from_toml`] failed, before the file path is attached.
enum TomlProblem {
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
    Invalid(InvalidConfig),
}

fn validate_domain(domain: &str) -> Result<(), InvalidConfig> {
    let canonical = jid::DomainPart::new(domain)
        .map_err(|err| {
            invalid(
                "domain",
                format!("`{domain}` is not a valid XMPP domain: {err}"),
            )
        })?
        .to_string();
    if canonical != domain {
        return Err(invalid(
            "domain",
            format!("write it in canonical form, `{canonical}`, as clients will address it"),
        ));
    }
    // RFC 7622 §3.2: a domainpart is at most 1023 bytes; the pubsub service's
    // address adds a label to it.
    let pubsub = format!("pubsub.{domain}");
    if jid::DomainPart::new(&pubsub).is_err() {
        return Err(invalid(
            "domain",
            format!("`{pubsub}` (the pubsub service address) is not a valid XMPP domain"),
        ));
    }
    Ok(())
}

fn validate_pubsub(pubsub: &PubsubConfig) -> Result<(), InvalidConfig> {
    let positive = [
        (
            "pubsub.max_inflight_proposals",
            pubsub.max_inflight_proposals as u64,
        ),
        ("pubsub.max_nodes", pubsub.max_nodes as u64),
        ("pubsub.default_max_items", pubsub.default_max_items),
        ("pubsub.max_items_per_node", pubsub.max_items_per_node),
        ("pubsub.max_payload_bytes", pubsub.max_payload_bytes as u64),
        (
            "pubsub.max_subscriptions_per_node",
            pubsub.max_subscriptions_per_node as u64,
        ),
        ("pubsub.max_node_id_bytes", pubsub.max_node_id_bytes as u64),
        (
            "pubsub.max_archive_entries_per_node",
            pubsub.max_archive_entries_per_node as u64,
        ),
        ("pubsub.max_archive_bytes", pubsub.max_archive_bytes),
        ("pubsub.max_page_items", pubsub.max_page_items as u64),
    ];
    if let Some((key, _)) = positive.iter().find(|(_, value)| *value == 0) {
        return Err(invalid(key, "must be greater than 0"));
    }
    // The value also sets each mesh peer's stream credit: the mesh's bound.
    let most = vomesh_mesh::config::PROPOSALS_IN_FLIGHT_LIMIT;
    if pubsub.max_inflight_proposals > most {
        return Err(invalid(
            "pubsub.max_inflight_proposals",
            format!("must be at most {most}"),
        ));
    }
    if pubsub.default_max_items > pubsub.max_items_per_node {
        return Err(invalid(
            "pubsub.default_max_items",
            "must not exceed pubsub.max_items_per_node",
        ));
    }
    Ok(())
}

fn validate_mesh(mesh: &MeshConfig) -> Result<(), InvalidConfig> {
    if let (Some(min), Some(max)) = (mesh.election_timeout_min_ms, mesh.election_timeout_max_ms)
        && min >= max
    {
        return Err(invalid(
            "mesh.election_timeout_min_ms",
            "must be below mesh.election_timeout_max_ms",
        ));
    }
    // The log kept between snapshots grows to this share of the state: a
    // bound keeps a typo from meaning "never snapshot again".
    if mesh.snapshot_log_growth_percent > SNAPSHOT_LOG_GROWTH_PERCENT_MAX {
        return Err(invalid(
            "mesh.snapshot_log_growth_percent",
            format!("must be at most {SNAPSHOT_LOG_GROWTH_PERCENT_MAX}"),
        ));
    }
    if mesh.snapshot_bytes_max == 0 {
        return Err(invalid("mesh.snapshot_bytes_max", "must be greater than 0"));
    }
    if mesh.forward_batches_in_flight_max == 0 {
        return Err(invalid(
            "mesh.forward_batches_in_flight_max",
            "must be greater than 0",
        ));
    }
    if mesh.forward_batch_bytes_max == 0 || mesh.forward_batch_bytes_max > FORWARD_BATCH_BYTES_MAX {
        return Err(invalid(
            "mesh.forward_batch_bytes_max",
            format!("must be between 1 and {FORWARD_BATCH_BYTES_MAX}"),
        ));
    }
    if mesh.forward_coalesce_yields > FORWARD_COALESCE_YIELDS_MAX {
        return Err(invalid(
            "mesh.forward_coalesce_yields",
            format!("must be at most {FORWARD_COALESCE_YIELDS_MAX}"),
        ));
    }
    if mesh.udp_buffer_bytes > UDP_BUFFER_BYTES_MAX {
        return Err(invalid(
            "mesh.udp_buffer_bytes",
            format!("must be at most {UDP_BUFFER_BYTES_MAX}"),
        ));
    }
    if mesh.snapshot_every_entries == 0 {
        return Err(invalid(
            "mesh.snapshot_every_entries",
            "must be greater than 0",
        ));
    }
    if split_host_port(&mesh.advertise).is_none() {
        return Err(invalid(
            "mesh.advertise",
            format!("`{}` is not HOST:PORT", mesh.advertise),
        ));
    }
    let mut ids: Vec<u64> = mesh.members.iter().map(|m| m.id).collect();
    ids.sort_unstable();
    if let Some(pair) = ids.windows(2).find(|pair| pair[0] == pair[1]) {
        return Err(invalid(
            "mesh.members",
            format!("node id {} is listed twice", pair[0]),
        ));
    }
    if !mesh.members.is_empty() && !ids.contains(&mesh.node_id) {
        return Err(invalid(
            "mesh.members",
            format!(
                "does not list this node (node_id = {}); add `\"{}@{}\"`",
                mesh.node_id, mesh.node_id, mesh.advertise
            ),
        ));
    }
    if let Some(preferred) = mesh.preferred_leader
        && preferred != mesh.node_id
        && !ids.contains(&preferred)
    {
        return Err(invalid(
            "mesh.preferred_leader",
            format!("names node {preferred}, which mesh.members does not list"),
        ));
    }
    let has_peers = mesh.members.iter().any(|m| m.id != mesh.node_id);
    if has_peers {
        // Peers authenticate each other with certificates from the cluster CA.
        for (key, value) in [
            ("mesh.ca", &mesh.ca),
            ("mesh.cert", &mesh.cert),
            ("mesh.key", &mesh.key),
        ] {
            if value.is_none() {
                return Err(invalid(
                    key,
                    "is required when mesh.members lists other nodes (see `vomesh certs init`)",
                ));
            }
        }
    }
    Ok(())
}

fn validate_vtp(vtp: &VtpConfig) -> Result<(), InvalidConfig> {
    if let Some(ivo) = &vtp.local_ivo
        && !ivo.starts_with("ivo://")
    {
        return Err(invalid(
            "vtp.local_ivo",
            format!("`{ivo}` is not an IVORN; write e.g. `ivo://example.org/vomesh`"),
        ));
    }
    if let Some(bad) = vtp.upstream.iter().find(|u| split_host_port(u).is_none()) {
        return Err(invalid("vtp.upstream", format!("`{bad}` is not HOST:PORT")));
    }
    if vtp.author_listen == vtp.broadcast_listen {
        return Err(invalid(
            "vtp.broadcast_listen",
            "must differ from vtp.author_listen",
        ));
    }
    if let Err(reason) = crate::vtp::route::NodeTemplate::parse(&vtp.node_template) {
        return Err(invalid("vtp.node_template", reason));
    }
    let positive = [
        ("vtp.max_message_bytes", vtp.max_message_bytes as u64),
        ("vtp.author_timeout_secs", vtp.author_timeout_secs),
        ("vtp.iamalive_interval_secs", vtp.iamalive_interval_secs),
        (
            "vtp.subscriber_reply_timeout_secs",
            vtp.subscriber_reply_timeout_secs,
        ),
        (
            "vtp.max_unanswered_per_subscriber",
            vtp.max_unanswered_per_subscriber as u64,
        ),
        (
            "vtp.subscriber_queue_events",
            vtp.subscriber_queue_events as u64,
        ),
        ("vtp.max_subscribers", vtp.max_subscribers as u64),
        (
            "vtp.max_author_connections",
            vtp.max_author_connections as u64,
        ),
        (
            "vtp.upstream_idle_timeout_secs",
            vtp.upstream_idle_timeout_secs,
        ),
        ("vtp.upstream_retry_max_secs", vtp.upstream_retry_max_secs),
    ];
    if let Some((key, _)) = positive.iter().find(|(_, value)| *value == 0) {
        return Err(invalid(key, "must be greater than 0"));
    }
    Ok(())
}

/// Splits `HOST:PORT` (`[v6]:PORT` for IPv6 literals).
fn split_host_port(text: &str) -> Option<(&str, u16)> {
    let (host, port) = text.rsplit_once(':')?;
    let port = port.parse::<u16>().ok().filter(|p| *p != 0)?;
    let host = match host.strip_prefix('[') {
        Some(v6) => {
            let v6 = v6.strip_suffix(']')?;
            v6.parse::<Ipv6Addr>().ok()?;
            v6
        }
        None if host.contains(':') => return None,
        None => host,
    };
    (!host.is_empty() && !host.contains(char::is_whitespace)).then_some((host, port))
}

/// 1-based line and column (in characters) of a byte offset.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |nl| nl + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// `listen_tls = "ADDR"` or `listen_tls = false`.
fn address_or_false<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<SocketAddr>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum AddressOrFalse {
        Address(SocketAddr),
        Switch(bool),
    }
    match AddressOrFalse::deserialize(deserializer)? {
        AddressOrFalse::Address(addr) => Ok(Some(addr)),
        AddressOrFalse::Switch(false) => Ok(None),
        AddressOrFalse::Switch(true) => Err(serde::de::Error::custom(
            "expected an address such as \"0.0.0.0:5223\", or false to disable direct TLS",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERFACE_EXAMPLE: &str = r#"
domain = "example.org"            # the XMPP domain served; pubsub service is pubsub.<domain>
data_dir = "/var/lib/vomesh"

[xmpp]
listen = "0.0.0.0:5222"           # STARTTLS, TLS required before auth
listen_tls = "0.0.0.0:5223"       # direct TLS (XEP-0368); optional
max_stanza_bytes = 262144

[tls]                             # the XMPP-facing certificate; absent: self-signed, generated into data_dir
cert = "/etc/vomesh/xmpp.crt"
key = "/etc/vomesh/xmpp.key"

[admin]
listen = "127.0.0.1:9100"         # /metrics, /healthz, /readyz, admin API
token = "change-me"               # bearer token for admin API calls (not for /metrics, /healthz, /readyz)

[mesh]
node_id = 1
listen = "0.0.0.0:7001"           # QUIC (UDP)
advertise = "site-a.example.org:7001"
members = ["1@site-a.example.org:7001", "2@site-b.example.org:7001", "3@site-c.example.org:7001"]
ca = "/etc/vomesh/ca.crt"         # cluster CA; peers must present a certificate it signed
cert = "/etc/vomesh/node-1.crt"
key = "/etc/vomesh/node-1.key"

[vtp]                             # VOEvent Transport Protocol bridge; absent: off
author_listen = "0.0.0.0:8098"    # authors submit one event per connection; ack after commit
broadcast_listen = "0.0.0.0:8099" # VTP subscribers receive events from the routed nodes
local_ivo = "ivo://example.org/vomesh"
upstream = ["broker.example.net:8099"]   # remote VTP broadcasters this site subscribes to
author_allow = ["127.0.0.0/8"]
subscriber_allow = ["0.0.0.0/0"]
"#;

    fn syntax_error(text: &str) -> (usize, usize, String) {
        match Config::from_toml(text) {
            Err(TomlProblem::Syntax {
                line,
                column,
                message,
            }) => (line, column, message),
            Err(TomlProblem::Invalid(err)) => panic!("expected a syntax error, got {err}"),
            Ok(config) => panic!("expected a syntax error, got {config:?}"),
        }
    }

    fn invalid_key(text: &str) -> InvalidConfig {
        match Config::from_toml(text) {
            Err(TomlProblem::Invalid(err)) => err,
            Err(TomlProblem::Syntax { message, .. }) => {
                panic!("expected a validation error, got syntax error {message}")
            }
            Ok(config) => panic!("expected a validation error, got {config:?}"),
        }
    }

    fn parse(text: &str) -> Config {
        match Config::from_toml(text) {
            Ok(config) => config,
            Err(TomlProblem::Syntax { message, line, .. }) => panic!("line {line}: {message}"),
            Err(TomlProblem::Invalid(err)) => panic!("{err}"),
        }
    }

    #[test]
    fn interface_example_parses() {
        let config = parse(INTERFACE_EXAMPLE);
        assert_eq!(config.domain, "example.org");
        assert_eq!(config.pubsub_domain(), "pubsub.example.org");
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/vomesh"));
        assert_eq!(config.xmpp.listen, "0.0.0.0:5222".parse().unwrap());
        assert_eq!(
            config.xmpp.listen_tls,
            Some("0.0.0.0:5223".parse().unwrap())
        );
        assert_eq!(config.xmpp.max_stanza_bytes, 262_144);
        let tls = config.tls.as_ref().unwrap();
        assert_eq!(tls.cert, PathBuf::from("/etc/vomesh/xmpp.crt"));
        assert_eq!(config.admin.token.as_deref(), Some("change-me"));
        let mesh = config.mesh.as_ref().unwrap();
        assert_eq!(mesh.node_id, 1);
        assert_eq!(mesh.advertise, "site-a.example.org:7001");
        assert_eq!(
            mesh.members[1],
            MeshMember {
                id: 2,
                addr: "site-b.example.org:7001".to_owned()
            }
        );
        assert_eq!(mesh.ca.as_deref(), Some(Path::new("/etc/vomesh/ca.crt")));
        let vtp = config.vtp.as_ref().unwrap();
        assert_eq!(vtp.local_ivo_or_default("x"), "ivo://example.org/vomesh");
        assert_eq!(vtp.upstream, ["broker.example.net:8099"]);
        assert_eq!(vtp.author_allow, ["127.0.0.0/8".parse::<IpNet>().unwrap()]);
        assert_eq!(
            vtp.subscriber_allow,
            ["0.0.0.0/0".parse::<IpNet>().unwrap()]
        );
        // Keys the example leaves out keep their defaults.
        assert_eq!(config.xmpp.max_xml_depth, 32);
        assert_eq!(config.log, LogConfig::default());
    }

    #[test]
    fn worker_threads_default_to_one_per_cpu_and_are_bounded() {
        assert_eq!(Config::development().worker_threads, None);
        assert_eq!(parse("worker_threads = 1\n").worker_threads, Some(1));
        for refused in ["worker_threads = 0\n", "worker_threads = 1025\n"] {
            assert_eq!(invalid_key(refused).key, "worker_threads");
        }
    }

    #[test]
    fn empty_file_is_the_development_config() {
        assert_eq!(parse(""), Config::development());
    }

    #[test]
    fn development_defaults_match_the_interface() {
        let config = Config::development();
        assert_eq!(config.domain, "localhost");
        assert_eq!(config.xmpp.listen, "127.0.0.1:5222".parse().unwrap());
        assert_eq!(
            config.xmpp.listen_tls,
            Some("127.0.0.1:5223".parse().unwrap())
        );
        assert_eq!(config.admin.listen, "127.0.0.1:9100".parse().unwrap());
        assert_eq!(config.admin.token, None);
        assert_eq!(config.data_dir, PathBuf::from("./vomesh-data"));
        assert!(config.tls.is_none() && config.mesh.is_none() && config.vtp.is_none());
        assert_eq!(config.xmpp.max_outbound_stanzas, 1024);
        assert_eq!(config.xmpp.stream_open_timeout(), Duration::from_secs(30));
        assert_eq!(config.xmpp.auth_backoff_max(), Duration::from_secs(60));
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn section_defaults_fill_omitted_keys() {
        let config = parse("[vtp]\nupstream = [\"a.example:8099\"]\n[mesh]\nnode_id = 4\n");
        let vtp = config.vtp.unwrap();
        assert_eq!(vtp.author_listen, "127.0.0.1:8098".parse().unwrap());
        assert_eq!(
            vtp.local_ivo_or_default("localhost"),
            "ivo://localhost/vomesh"
        );
        assert!(vtp.author_allow.iter().all(|net| net.addr().is_loopback()));
        let mesh = config.mesh.unwrap();
        assert_eq!(mesh.node_id, 4);
        assert!(mesh.members.is_empty());
        assert_eq!(
            (
                mesh.snapshot_every_entries,
                mesh.snapshot_log_growth_percent
            ),
            (10_000, 100)
        );
        assert_eq!(mesh.log_cache_bytes, 16 * 1024 * 1024);
        assert_eq!(mesh.snapshot_bytes_max, 1024 * 1024 * 1024);
        let by_entries = parse("[mesh]\nsnapshot_log_growth_percent = 0\n");
        assert_eq!(by_entries.mesh.unwrap().snapshot_log_growth_percent, 0);
        let never = invalid_key("[mesh]\nsnapshot_log_growth_percent = 1001\n");
        assert_eq!(never.key, "mesh.snapshot_log_growth_percent");
        let none_accepted = invalid_key("[mesh]\nsnapshot_bytes_max = 0\n");
        assert_eq!(none_accepted.key, "mesh.snapshot_bytes_max");
        let larger = parse("[mesh]\nsnapshot_bytes_max = 8589934592\n");
        assert_eq!(larger.mesh.unwrap().snapshot_bytes_max, 8 << 30);
        assert_eq!(mesh.udp_buffer_bytes, 4 * 1024 * 1024);
        let kernel_default = parse("[mesh]\nudp_buffer_bytes = 0\n");
        assert_eq!(kernel_default.mesh.unwrap().udp_buffer_bytes, 0);
        let beyond_int = invalid_key("[mesh]\nudp_buffer_bytes = 2147483648\n");
        assert_eq!(beyond_int.key, "mesh.udp_buffer_bytes");
        assert_eq!(
            (
                mesh.forward_batches_in_flight_max,
                mesh.forward_batch_bytes_max,
                mesh.forward_coalesce_yields
            ),
            (16, 1024 * 1024, 2)
        );
        let at_once = parse("[mesh]\nforward_coalesce_yields = 0\n");
        assert_eq!(at_once.mesh.unwrap().forward_coalesce_yields, 0);
        let stalling = invalid_key("[mesh]\nforward_coalesce_yields = 65\n");
        assert_eq!(stalling.key, "mesh.forward_coalesce_yields");
        let no_batch = invalid_key("[mesh]\nforward_batches_in_flight_max = 0\n");
        assert_eq!(no_batch.key, "mesh.forward_batches_in_flight_max");
        let empty = invalid_key("[mesh]\nforward_batch_bytes_max = 0\n");
        assert_eq!(empty.key, "mesh.forward_batch_bytes_max");
        let huge = invalid_key("[mesh]\nforward_batch_bytes_max = 67108865\n");
        assert_eq!(huge.key, "mesh.forward_batch_bytes_max");
    }

    #[test]
    fn inflight_proposals_are_bounded_as_they_size_each_peers_stream_credit() {
        let most = parse("[pubsub]\nmax_inflight_proposals = 65536\n");
        assert_eq!(most.pubsub.max_inflight_proposals, 65_536);
        let too_many = invalid_key("[pubsub]\nmax_inflight_proposals = 65537\n");
        assert_eq!(too_many.key, "pubsub.max_inflight_proposals");
        let none = invalid_key("[pubsub]\nmax_inflight_proposals = 0\n");
        assert_eq!(none.key, "pubsub.max_inflight_proposals");
    }

    #[test]
    fn the_archives_must_fit_in_a_snapshot_the_peers_accept() {
        assert_eq!(Config::default().pubsub.max_archive_bytes, 512 << 20);
        let single_node = parse("[pubsub]\nmax_archive_bytes = 8589934592\n");
        assert_eq!(single_node.pubsub.max_archive_bytes, 8 << 30);
        let too_large = invalid_key("[pubsub]\nmax_archive_bytes = 1073741824\n[mesh]\n");
        assert_eq!(too_large.key, "pubsub.max_archive_bytes");
        assert!(
            too_large.problem.contains("mesh.snapshot_bytes_max"),
            "{}",
            too_large.problem
        );
        let raised = parse(
            "[pubsub]\nmax_archive_bytes = 1073741824\n[mesh]\nsnapshot_bytes_max = 2147483648\n",
        );
        assert_eq!(raised.pubsub.max_archive_bytes, 1 << 30);
        let none = invalid_key("[pubsub]\nmax_archive_bytes = 0\n");
        assert_eq!(none.key, "pubsub.max_archive_bytes");
        assert_eq!(Config::default().pubsub.max_archive_age_seconds, 0);
        let thirty_days = parse("[pubsub]\nmax_archive_age_seconds = 2592000\n");
        assert_eq!(thirty_days.pubsub.max_archive_age_seconds, 2_592_000);
    }

    #[test]
    fn unknown_top_level_key_is_named_with_its_line() {
        let (line, column, message) = syntax_error("domain = \"a.example\"\nfrobnicate = 1\n");
        assert_eq!((line, column), (2, 1));
        assert!(message.contains("frobnicate"), "{message}");
    }

    #[test]
    fn unknown_key_in_a_section_is_named_with_its_line() {
        let (line, _, message) =
            syntax_error("[xmpp]\nmax_stanza_bytes = 100000\nmax_stanzas = 3\n");
        assert_eq!(line, 3);
        assert!(message.contains("max_stanzas"), "{message}");
    }

    #[test]
    fn load_reports_path_line_and_key_on_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(
            &path,
            "[admin]\nlisten = \"127.0.0.1:9100\"\ntokn = \"x\"\n",
        )
        .unwrap();
        let message = Config::load(&path).unwrap_err().to_string();
        assert!(
            message.starts_with(&format!("{}:3:1: ", path.display())),
            "{message}"
        );
        assert!(message.contains("tokn"), "{message}");
        assert!(!message.contains('\n'), "{message}");
    }

    #[test]
    fn load_of_a_missing_file_names_it() {
        let err = Config::load(Path::new("/nonexistent/vomesh.toml")).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }));
        assert!(err.to_string().contains("/nonexistent/vomesh.toml"));
    }

    #[test]
    fn load_reports_validation_errors_with_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(&path, "[xmpp]\nmax_connections = 0\n").unwrap();
        let message = Config::load(&path).unwrap_err().to_string();
        assert_eq!(
            message,
            format!(
                "{}: `xmpp.max_connections`: must be greater than 0",
                path.display()
            )
        );
    }

    #[test]
    fn wrongly_typed_value_is_a_syntax_error() {
        let (line, _, message) = syntax_error("[xmpp]\n\nlisten = \"not an address\"\n");
        assert_eq!(line, 3);
        assert!(message.contains("address"), "{message}");
    }

    #[test]
    fn direct_tls_can_be_turned_off() {
        let config = parse("[xmpp]\nlisten_tls = false\n");
        assert_eq!(config.xmpp.listen_tls, None);
        let (_, _, message) = syntax_error("[xmpp]\nlisten_tls = true\n");
        assert!(message.contains("false to disable"), "{message}");
    }

    #[test]
    fn malformed_member_explains_the_expected_form() {
        let (line, _, message) = syntax_error("[mesh]\nmembers = [\"1@a:7001\", \"b:7001\"]\n");
        assert_eq!(line, 2);
        assert!(
            message.contains("invalid mesh member `b:7001`"),
            "{message}"
        );
        assert!(message.contains("ID@HOST:PORT"), "{message}");
    }

    #[test]
    fn member_parses_ipv6_literals_and_rejects_missing_ports() {
        let member: MeshMember = "7@[::1]:7001".parse().unwrap();
        assert_eq!((member.id, member.addr.as_str()), (7, "[::1]:7001"));
        assert_eq!(member.to_string(), "7@[::1]:7001");
        assert!("7@::1:7001".parse::<MeshMember>().is_err());
        assert!("7@host".parse::<MeshMember>().is_err());
        assert!("x@host:1".parse::<MeshMember>().is_err());
    }

    #[test]
    fn node_missing_from_members_is_rejected() {
        let err = invalid_key(
            "[mesh]\nnode_id = 4\nadvertise = \"d:7001\"\nmembers = [\"1@a:7001\", \"2@b:7001\"]\nca = \"ca\"\ncert = \"c\"\nkey = \"k\"\n",
        );
        assert_eq!(err.key, "mesh.members");
        assert!(
            err.problem.contains("add `\"4@d:7001\"`"),
            "{}",
            err.problem
        );
    }

    #[test]
    fn a_preferred_leader_must_be_a_member() {
        let members = "[mesh]\nnode_id = 1\nmembers = [\"1@a:7001\", \"2@b:7001\"]\nca = \"ca\"\ncert = \"c\"\nkey = \"k\"\n";
        let err = invalid_key(&format!("{members}preferred_leader = 3\n"));
        assert_eq!(err.key, "mesh.preferred_leader");
        assert!(err.problem.contains("names node 3"), "{}", err.problem);
        let config = parse(&format!("{members}preferred_leader = 2\n"));
        assert_eq!(config.mesh.unwrap().preferred_leader, Some(2));
        // A node alone may prefer itself (and nobody else).
        assert!(parse("[mesh]\npreferred_leader = 1\n").mesh.is_some());
        assert_eq!(
            invalid_key("[mesh]\npreferred_leader = 2\n").key,
            "mesh.preferred_leader"
        );
    }

    #[test]
    fn duplicate_member_ids_are_rejected() {
        let err = invalid_key("[mesh]\nmembers = [\"1@a:7001\", \"1@b:7001\"]\n");
        assert_eq!(err.key, "mesh.members");
        assert!(err.problem.contains("listed twice"));
    }

    #[test]
    fn peers_require_cluster_certificates() {
        let err = invalid_key("[mesh]\nmembers = [\"1@a:7001\", \"2@b:7001\"]\n");
        assert_eq!(err.key, "mesh.ca");
    }

    #[test]
    fn zero_limits_are_rejected() {
        for key in ["max_xml_depth", "max_outbound_stanzas", "idle_timeout_secs"] {
            let err = invalid_key(&format!("[xmpp]\n{key} = 0\n"));
            assert_eq!(err.key, format!("xmpp.{key}"));
        }
    }

    #[test]
    fn stanza_limit_below_rfc_minimum_is_rejected() {
        let err = invalid_key("[xmpp]\nmax_stanza_bytes = 9999\n");
        assert!(err.problem.contains("RFC 6120"));
    }

    #[test]
    fn weak_scram_iteration_count_is_rejected() {
        let err = invalid_key("[xmpp]\nscram_iterations = 1000\n");
        assert_eq!(err.key, "xmpp.scram_iterations");
    }

    #[test]
    fn backoff_base_above_max_is_rejected() {
        let err = invalid_key("[xmpp]\nauth_backoff_base_ms = 5000\nauth_backoff_max_ms = 10\n");
        assert_eq!(err.key, "xmpp.auth_backoff_base_ms");
    }

    #[test]
    fn invalid_domain_is_rejected() {
        assert_eq!(invalid_key("domain = \"exa mple.org\"").key, "domain");
        assert_eq!(invalid_key("domain = \"\"").key, "domain");
    }

    #[test]
    fn non_canonical_domain_names_its_canonical_form() {
        let err = invalid_key("domain = \"Example.ORG\"");
        assert!(err.problem.contains("`example.org`"), "{}", err.problem);
    }

    #[test]
    fn exposed_admin_listener_requires_a_token() {
        let err = invalid_key("[admin]\nlisten = \"0.0.0.0:9100\"\n");
        assert_eq!(err.key, "admin.token");
        parse("[admin]\nlisten = \"0.0.0.0:9100\"\ntoken = \"s3cret\"\n");
    }

    #[test]
    fn bad_log_level_is_rejected() {
        assert_eq!(invalid_key("[log]\nlevel = \"info,=[\"\n").key, "log.level");
        let (_, _, message) = syntax_error("[log]\nformat = \"xml\"\n");
        assert!(message.contains("xml"), "{message}");
    }

    #[test]
    fn bad_vtp_values_are_rejected() {
        assert_eq!(
            invalid_key("[vtp]\nlocal_ivo = \"example.org\"\n").key,
            "vtp.local_ivo"
        );
        assert_eq!(
            invalid_key("[vtp]\nupstream = [\"nohost\"]\n").key,
            "vtp.upstream"
        );
        let (line, _, _) = syntax_error("[vtp]\nauthor_allow = [\"10.0.0.0/33\"]\n");
        assert_eq!(line, 2);
        assert_eq!(
            invalid_key("[vtp]\nnode_template = \"voevent/{role}\"\n").key,
            "vtp.node_template"
        );
    }

    #[test]
    fn vtp_limits_must_be_positive() {
        for key in [
            "max_message_bytes",
            "author_timeout_secs",
            "iamalive_interval_secs",
            "subscriber_reply_timeout_secs",
            "max_unanswered_per_subscriber",
            "subscriber_queue_events",
            "max_subscribers",
            "max_author_connections",
            "upstream_idle_timeout_secs",
            "upstream_retry_max_secs",
        ] {
            let err = invalid_key(&format!("[vtp]\n{key} = 0\n"));
            assert_eq!(err.key, format!("vtp.{key}"));
        }
    }

    #[test]
    fn vtp_defaults_follow_comet_and_interface() {
        let vtp = parse("[vtp]\n").vtp.unwrap();
        assert_eq!(vtp.node_template, "voevent/{authority}/{stream}");
        assert_eq!(vtp.broadcast_node_prefixes, ["voevent/"]);
        assert_eq!(
            (
                vtp.iamalive_interval_secs,
                vtp.max_unanswered_per_subscriber
            ),
            (60, 10)
        );
    }
}
