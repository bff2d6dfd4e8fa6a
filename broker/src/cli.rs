//! The `vomesh` command line and the admin API client its admin commands use.
//!
//! [`Cli`] defines every command of INTERFACE.md with clap's derive API;
//! `main` parses it and dispatches. The admin commands (`user`, `status`,
//! `cluster`) reach a running node through [`AdminClient`], which speaks the
//! admin API documented on it. That API is plain HTTP: the admin listener is
//! on loopback by default, so the client carries no TLS stack.

use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use jid::BareJid;
use serde::{Deserialize, Serialize};

use crate::config::{Config, ConfigError, LogFormat};

/// The admin URL used when neither `--config` nor `--admin` is given: the
/// development listener.
pub const DEFAULT_ADMIN_URL: &str = "http://127.0.0.1:9100";

/// The XMPP client port (RFC 6120 §14.7) used when `--server` is not given.
pub const XMPP_CLIENT_PORT: u16 = 5222;

/// A federated mesh of XMPP publish-subscribe brokers for VOEvent alerts.
#[derive(Debug, Parser)]
#[command(name = "vomesh", version, about)]
pub struct Cli {
    /// Log line format on stderr; overrides `[log] format`.
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a broker node in the foreground.
    Serve {
        /// Node configuration; without it, a single-node development mesh on
        /// loopback.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Create the cluster's certificates.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Manage accounts (replicated to every site).
    #[command(subcommand)]
    User(UserCommand),
    /// Show the cluster as one node sees it; fails if the node is unreachable.
    Status {
        /// Print the status as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminTarget,
    },
    /// Change Raft membership.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Publish VOEvent files as items; prints each item id once acknowledged.
    Publish {
        #[command(flatten)]
        account: XmppAccount,
        /// Pubsub node to publish to.
        #[arg(long)]
        node: String,
        /// VOEvent files; `-` reads one from standard input.
        #[arg(value_name = "FILE", required = true)]
        files: Vec<PathBuf>,
    },
    /// Subscribe and print (or save) each notification's payload as it arrives.
    Subscribe {
        #[command(flatten)]
        account: XmppAccount,
        /// Pubsub node to subscribe to.
        #[arg(long)]
        node: String,
        /// Save each payload as a file in DIR instead of printing it.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// First replay the items published after this item id.
        #[arg(long, value_name = "ID")]
        since: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Create a cluster CA, a certificate and key per mesh node
    /// (`node-<id>.crt/.key`) and a client-facing certificate for the domain.
    Init {
        /// Directory to write the files into.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Mesh node ids, comma-separated: `--nodes 1,2,3`.
        #[arg(long, value_name = "IDS", value_delimiter = ',', required = true)]
        nodes: Vec<u64>,
        /// The XMPP domain of the client-facing certificate.
        #[arg(long, value_name = "D", default_value = "localhost")]
        domain: String,
        /// Extra subject alternative name for every certificate; repeatable.
        #[arg(long = "san", value_name = "NAME")]
        sans: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create an account.
    Add {
        #[arg(value_parser = account_jid)]
        jid: BareJid,
        #[arg(long)]
        password: String,
        #[command(flatten)]
        admin: AdminTarget,
    },
    /// Delete an account.
    Remove {
        #[arg(value_parser = account_jid)]
        jid: BareJid,
        #[command(flatten)]
        admin: AdminTarget,
    },
    /// List accounts.
    List {
        #[command(flatten)]
        admin: AdminTarget,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Add a node to the Raft membership (as a learner first, then a voter).
    Add {
        id: u64,
        /// `HOST:PORT` of the node's mesh listener.
        addr: String,
        #[command(flatten)]
        admin: AdminTarget,
    },
    /// Remove a node from the Raft membership.
    Remove {
        id: u64,
        #[command(flatten)]
        admin: AdminTarget,
    },
    /// Hand the leadership to voter ID (asked at any site); returns once ID
    /// leads.
    TransferLeader {
        id: u64,
        #[command(flatten)]
        admin: AdminTarget,
    },
}

/// Which node's admin API an admin command talks to.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct AdminTarget {
    /// Use the `[admin]` section of this node configuration.
    #[arg(long, value_name = "FILE", conflicts_with = "admin")]
    pub config: Option<PathBuf>,
    /// Admin API base URL [default: http://127.0.0.1:9100].
    #[arg(long, value_name = "URL")]
    pub admin: Option<String>,
    /// Bearer token of the admin API; overrides the one in `--config`.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "VOMESH_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
}

/// A resolved admin API address and credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminEndpoint {
    /// `http://HOST:PORT`, without a trailing slash.
    pub base_url: String,
    pub token: Option<String>,
}

impl AdminTarget {
    /// Reads `--config` if given and settles the URL and token.
    pub fn resolve(&self) -> Result<AdminEndpoint, AdminError> {
        let (base_url, config_token) = match (&self.config, &self.admin) {
            (Some(path), _) => {
                let config = Config::load(path)?;
                (admin_url_of(config.admin.listen), config.admin.token)
            }
            (None, Some(url)) => (normalise_admin_url(url)?, None),
            (None, None) => (DEFAULT_ADMIN_URL.to_owned(), None),
        };
        Ok(AdminEndpoint {
            base_url,
            token: self.token.clone().or(config_token),
        })
    }
}

/// The URL a local client dials to reach a listener bound to `listen`: a
/// wildcard bind address is reached over loopback.
fn admin_url_of(listen: SocketAddr) -> String {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, listen.port()))
}

fn normalise_admin_url(url: &str) -> Result<String, AdminError> {
    let url = url.trim_end_matches('/');
    match url.split_once("://") {
        Some(("http", rest)) if !rest.is_empty() => Ok(url.to_owned()),
        Some(_) => Err(AdminError::BadUrl(url.to_owned())),
        None if !url.is_empty() => Ok(format!("http://{url}")),
        None => Err(AdminError::BadUrl(url.to_owned())),
    }
}

/// The XMPP account and server `publish` and `subscribe` connect with.
#[derive(Debug, Clone, PartialEq, Args)]
pub struct XmppAccount {
    /// Account to log in as, `user@domain`.
    #[arg(long, value_parser = account_jid)]
    pub jid: BareJid,
    #[arg(long)]
    pub password: String,
    /// `HOST:PORT` to connect to [default: the JID's domain, port 5222].
    #[arg(long, value_name = "HOST:PORT")]
    pub server: Option<String>,
    /// PEM certificate(s) to trust for the server, e.g. a development node's
    /// `vomesh-data/tls/xmpp.crt`.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
}

impl XmppAccount {
    /// `--server`, or the JID's domain on the client port.
    pub fn server_addr(&self) -> String {
        match &self.server {
            Some(server) => server.clone(),
            None => format!("{}:{XMPP_CLIENT_PORT}", self.jid.domain()),
        }
    }
}

/// A JID naming an account: `user@domain`, no resource.
fn account_jid(text: &str) -> Result<BareJid, String> {
    let jid: BareJid = text
        .parse()
        .map_err(|err| format!("`{text}` is not a bare JID: {err}"))?;
    if jid.node().is_none() {
        return Err(format!(
            "`{text}` names a domain, not an account: write user@{text}"
        ));
    }
    Ok(jid)
}

/// Why an admin command failed. Each displays as one line for the operator.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("invalid admin URL `{0}`: expected http://HOST:PORT")]
    BadUrl(String),
    #[error("cannot reach admin API at {url}: {reason} — is `vomesh serve` running?")]
    Unreachable { url: String, reason: String },
    #[error(
        "admin API at {url} refused the request (401): pass --token, or --config with the node's [admin] token"
    )]
    Unauthorized { url: String },
    #[error("user {0} already exists")]
    UserExists(String),
    #[error("no user {0}")]
    UnknownUser(String),
    #[error("no cluster member {0}")]
    UnknownMember(u64),
    #[error("membership change refused: {0}")]
    MembershipConflict(String),
    #[error("the node cannot change membership now: {0}")]
    Unavailable(String),
    #[error("leadership not handed over: {0}")]
    Handover(String),
    #[error("admin API rejected the request: {0}")]
    Rejected(String),
    #[error("unexpected answer from admin API at {url}: {detail}")]
    Unexpected { url: String, detail: String },
}

/// A blocking client of a node's admin API.
///
/// # The users API
///
/// All bodies are JSON; every error answer carries `{"error": "<reason>"}`.
/// Requests carry `Authorization: Bearer <token>` when a token is configured
/// (401 with `WWW-Authenticate: Bearer` otherwise).
///
/// | request | success | failures |
/// |---|---|---|
/// | `GET /api/users` | 200 `{"users": ["alice@localhost", …]}` | |
/// | `POST /api/users` `{"jid": "alice@localhost", "password": "…"}` | 201 | 409 the account exists; 400 invalid JID or password |
/// | `DELETE /api/users/{jid}` | 204 | 404 no such account |
///
/// In `DELETE`, `{jid}` is the bare JID percent-encoded as a path segment
/// (everything but `A-Z a-z 0-9 - . _ ~ @` is encoded), so a localpart
/// containing `#`, `?` or `%` reaches the server intact.
///
/// # The status and cluster API
///
/// | request | success | failures |
/// |---|---|---|
/// | `GET /api/status` | 200 [`NodeStatus`] | |
/// | `POST /api/cluster/members` `{"id": 4, "address": "host:port"}` | 200 once the node was added as a learner, caught up, and promoted to voter | 400 invalid id or address; 409 the change conflicts with the membership (e.g. the id is taken); 503 the node cannot change membership now (no leader, a change in progress) |
/// | `DELETE /api/cluster/members/{id}` | 200 | 404 no such member; 409, 503 as above |
/// | `POST /api/cluster/leader` `{"id": 2}` | 200 `{"leader": 2}` once node 2 leads (asked at a follower, forwarded to the leader) | 404 not a voter (409 when the leader says so); 409 node 2 has not caught up; 503 no leader can be asked, or node 2 did not take over within an election timeout |
///
/// A status answer looks like this (`lag`: entries the member is behind
/// the leader's log; `null` when the answering node is not the leader and
/// cannot know; `snapshot_index` is `null` before the first snapshot):
///
/// ```json
/// {"node_id": 1, "role": "leader", "term": 3, "leader": 1,
///  "last_log_index": 10, "commit_index": 10, "applied_index": 10,
///  "snapshot_index": null, "sessions": 2, "ready": true,
///  "members": [
///    {"id": 1, "address": "127.0.0.1:7001", "role": "leader", "voter": true, "lag": 0},
///    {"id": 2, "address": "127.0.0.1:7002", "role": "follower", "voter": true, "lag": 3}]}
/// ```
pub struct AdminClient {
    endpoint: AdminEndpoint,
    agent: ureq::Agent,
}

/// Admin calls are single requests against a nearby node; one that takes
/// longer than this is reported rather than waited on indefinitely.
pub const ADMIN_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Serialize)]
struct NewUser<'a> {
    jid: &'a str,
    password: &'a str,
}

#[derive(Deserialize)]
struct UserList {
    users: Vec<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: String,
}

/// `GET /api/status`: the cluster as one node sees it (one definition,
/// shared with the server).
pub use crate::server::admin_api::{MemberStatus, Status as NodeStatus};

/// A status answer: typed, and as sent (for `--json`, so fields a newer
/// node adds are shown too).
#[derive(Debug, Clone, PartialEq)]
pub struct StatusAnswer {
    pub status: NodeStatus,
    pub json: serde_json::Value,
}

#[derive(Serialize)]
struct NewMember<'a> {
    id: u64,
    address: &'a str,
}

impl AdminClient {
    pub fn new(endpoint: AdminEndpoint) -> AdminClient {
        let agent = ureq::Agent::config_builder()
            // Statuses are answers this client interprets, not transport errors.
            .http_status_as_error(false)
            .timeout_global(Some(ADMIN_REQUEST_TIMEOUT))
            .build()
            .into();
        AdminClient { endpoint, agent }
    }

    pub fn add_user(&self, jid: &BareJid, password: &str) -> Result<(), AdminError> {
        let jid = jid.to_string();
        let url = self.url("/api/users");
        let request = self.authorised(self.agent.post(&url));
        let response = request
            .send_json(NewUser {
                jid: &jid,
                password,
            })
            .map_err(|err| self.unreachable(err))?;
        match response.status().as_u16() {
            201 => Ok(()),
            409 => Err(AdminError::UserExists(jid)),
            _ => Err(self.failure(&url, response)),
        }
    }

    pub fn remove_user(&self, jid: &BareJid) -> Result<(), AdminError> {
        let jid = jid.to_string();
        let url = self.url(&format!("/api/users/{}", encode_path_segment(&jid)));
        let response = self
            .authorised(self.agent.delete(&url))
            .call()
            .map_err(|err| self.unreachable(err))?;
        match response.status().as_u16() {
            204 => Ok(()),
            404 => Err(AdminError::UnknownUser(jid)),
            _ => Err(self.failure(&url, response)),
        }
    }

    pub fn list_users(&self) -> Result<Vec<String>, AdminError> {
        let url = self.url("/api/users");
        let response = self
            .authorised(self.agent.get(&url))
            .call()
            .map_err(|err| self.unreachable(err))?;
        if response.status().as_u16() != 200 {
            return Err(self.failure(&url, response));
        }
        let list: UserList =
            response
                .into_body()
                .read_json()
                .map_err(|err| AdminError::Unexpected {
                    url: url.clone(),
                    detail: err.to_string(),
                })?;
        Ok(list.users)
    }

    pub fn status(&self) -> Result<StatusAnswer, AdminError> {
        let url = self.url("/api/status");
        let response = self
            .authorised(self.agent.get(&url))
            .call()
            .map_err(|err| self.unreachable(err))?;
        if response.status().as_u16() != 200 {
            return Err(self.failure(&url, response));
        }
        let unexpected = |detail: String| AdminError::Unexpected {
            url: url.clone(),
            detail,
        };
        let json: serde_json::Value = response
            .into_body()
            .read_json()
            .map_err(|err| unexpected(err.to_string()))?;
        let status =
            serde_json::from_value(json.clone()).map_err(|err| unexpected(err.to_string()))?;
        Ok(StatusAnswer { status, json })
    }

    /// Adds node `id` at `address` (its mesh listener) as a voter; returns
    /// once it is one.
    pub fn add_member(&self, id: u64, address: &str) -> Result<(), AdminError> {
        let url = self.url("/api/cluster/members");
        let response = self
            .authorised(self.agent.post(&url))
            .send_json(NewMember { id, address })
            .map_err(|err| self.unreachable(err))?;
        match response.status().as_u16() {
            200 => Ok(()),
            _ => Err(self.membership_failure(&url, response, id)),
        }
    }

    pub fn remove_member(&self, id: u64) -> Result<(), AdminError> {
        let url = self.url(&format!("/api/cluster/members/{id}"));
        let response = self
            .authorised(self.agent.delete(&url))
            .call()
            .map_err(|err| self.unreachable(err))?;
        match response.status().as_u16() {
            200 => Ok(()),
            _ => Err(self.membership_failure(&url, response, id)),
        }
    }

    pub fn transfer_leader(&self, id: u64) -> Result<(), AdminError> {
        let url = self.url("/api/cluster/leader");
        let response = self
            .authorised(self.agent.post(&url))
            .send_json(serde_json::json!({ "id": id }))
            .map_err(|err| self.unreachable(err))?;
        match response.status().as_u16() {
            200 => Ok(()),
            _ => match error_answer(response) {
                (404, _) => Err(AdminError::UnknownMember(id)),
                (409 | 503, message) => Err(AdminError::Handover(
                    message.unwrap_or_else(|| "no reason given".to_owned()),
                )),
                (status, message) => Err(self.classify(&url, status, message)),
            },
        }
    }

    /// Maps a failed membership change, reading the `{"error"}` body.
    fn membership_failure(
        &self,
        url: &str,
        response: ureq::http::Response<ureq::Body>,
        id: u64,
    ) -> AdminError {
        let (status, message) = error_answer(response);
        match (status, message) {
            (404, _) => AdminError::UnknownMember(id),
            (409, message) => {
                AdminError::MembershipConflict(message.unwrap_or_else(|| "conflict".to_owned()))
            }
            (503, message) => {
                AdminError::Unavailable(message.unwrap_or_else(|| "no reason given".to_owned()))
            }
            (status, message) => self.classify(url, status, message),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.endpoint.base_url)
    }

    fn authorised<B>(&self, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.endpoint.token {
            Some(token) => request.header("Authorization", format!("Bearer {token}")),
            None => request,
        }
    }

    fn unreachable(&self, err: ureq::Error) -> AdminError {
        let reason = match err {
            ureq::Error::Io(io) if io.kind() == ErrorKind::ConnectionRefused => {
                "connection refused".to_owned()
            }
            ureq::Error::Io(io) => io.to_string(),
            ureq::Error::HostNotFound => "host not found".to_owned(),
            ureq::Error::ConnectionFailed => "connection failed".to_owned(),
            ureq::Error::Timeout(_) => {
                format!("no answer within {} s", ADMIN_REQUEST_TIMEOUT.as_secs())
            }
            other => other.to_string(),
        };
        AdminError::Unreachable {
            url: self.endpoint.base_url.clone(),
            reason,
        }
    }

    /// Maps a status the call did not expect, reading the `{"error"}` body.
    fn failure(&self, url: &str, response: ureq::http::Response<ureq::Body>) -> AdminError {
        let (status, message) = error_answer(response);
        self.classify(url, status, message)
    }

    fn classify(&self, url: &str, status: u16, message: Option<String>) -> AdminError {
        match (status, message) {
            (401, _) => AdminError::Unauthorized {
                url: self.endpoint.base_url.clone(),
            },
            (400, Some(message)) => AdminError::Rejected(message),
            (_, Some(message)) => AdminError::Unexpected {
                url: url.to_owned(),
                detail: format!("status {status}: {message}"),
            },
            (_, None) => AdminError::Unexpected {
                url: url.to_owned(),
                detail: format!("status {status}"),
            },
        }
    }
}

/// The status of an error answer and its `{"error"}` message, if it has one.
fn error_answer(response: ureq::http::Response<ureq::Body>) -> (u16, Option<String>) {
    let status = response.status().as_u16();
    let message = response
        .into_body()
        .read_json::<ErrorBody>()
        .map(|body| body.error)
        .ok();
    (status, message)
}

/// Percent-encodes a path segment (RFC 3986 §3.3), keeping unreserved
/// characters and `@` readable.
fn encode_path_segment(segment: &str) -> String {
    let mut encoded = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~@".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::http::StatusCode;
    use axum::routing::{delete, get};
    use std::path::Path;
    use std::sync::{Arc, Mutex};

    fn parse(args: &[&str]) -> Cli {
        match Cli::try_parse_from(args) {
            Ok(cli) => cli,
            Err(err) => panic!("{err}"),
        }
    }

    fn parse_error(args: &[&str]) -> String {
        match Cli::try_parse_from(args) {
            Ok(cli) => panic!("expected an error, parsed {cli:?}"),
            Err(err) => err.to_string(),
        }
    }

    #[test]
    fn serve_without_config_is_development_mode() {
        let cli = parse(&["vomesh", "serve"]);
        assert!(matches!(cli.command, Command::Serve { config: None }));
        assert_eq!(cli.log_format, None);
    }

    #[test]
    fn log_format_is_accepted_after_the_subcommand() {
        let cli = parse(&[
            "vomesh",
            "serve",
            "--config",
            "n.toml",
            "--log-format",
            "json",
        ]);
        assert_eq!(cli.log_format, Some(LogFormat::Json));
        assert!(
            matches!(cli.command, Command::Serve { config: Some(path) } if path == Path::new("n.toml"))
        );
    }

    #[test]
    fn certs_init_splits_node_ids_and_repeats_sans() {
        let cli = parse(&[
            "vomesh",
            "certs",
            "init",
            "--out",
            "certs",
            "--nodes",
            "1,2,3",
            "--san",
            "a.example",
            "--san",
            "b.example",
        ]);
        let Command::Certs(CertsCommand::Init {
            out,
            nodes,
            domain,
            sans,
        }) = cli.command
        else {
            panic!("parsed {:?}", cli.command);
        };
        assert_eq!(out, PathBuf::from("certs"));
        assert_eq!(nodes, [1, 2, 3]);
        assert_eq!(domain, "localhost");
        assert_eq!(sans, ["a.example", "b.example"]);
    }

    #[test]
    fn user_add_takes_a_jid_and_password() {
        let cli = parse(&[
            "vomesh",
            "user",
            "add",
            "alice@localhost",
            "--password",
            "pw",
        ]);
        let Command::User(UserCommand::Add {
            jid,
            password,
            admin,
        }) = cli.command
        else {
            panic!("parsed {:?}", cli.command);
        };
        assert_eq!(jid.to_string(), "alice@localhost");
        assert_eq!(password, "pw");
        assert_eq!(admin.config, None);
    }

    #[test]
    fn user_add_rejects_a_domain_only_jid() {
        let message = parse_error(&["vomesh", "user", "add", "localhost", "--password", "pw"]);
        assert!(message.contains("write user@localhost"), "{message}");
    }

    #[test]
    fn admin_config_and_url_are_mutually_exclusive() {
        let message = parse_error(&[
            "vomesh",
            "user",
            "list",
            "--config",
            "n.toml",
            "--admin",
            "http://h:1",
        ]);
        assert!(message.contains("cannot be used with"), "{message}");
    }

    #[test]
    fn publish_needs_at_least_one_file() {
        let message = parse_error(&[
            "vomesh",
            "publish",
            "--jid",
            "a@localhost",
            "--password",
            "pw",
            "--node",
            "n",
        ]);
        assert!(message.contains("<FILE>"), "{message}");
        let cli = parse(&[
            "vomesh",
            "publish",
            "--jid",
            "a@localhost",
            "--password",
            "pw",
            "--node",
            "n",
            "-",
        ]);
        let Command::Publish { files, account, .. } = cli.command else {
            panic!("parsed {:?}", cli.command);
        };
        assert_eq!(files, [PathBuf::from("-")]);
        assert_eq!(account.server_addr(), "localhost:5222");
    }

    #[test]
    fn subscribe_takes_out_dir_since_and_server() {
        let cli = parse(&[
            "vomesh",
            "subscribe",
            "--jid",
            "a@example.org",
            "--password",
            "pw",
            "--node",
            "voevent/nasa.gsfc.gcn/SWIFT",
            "--out",
            "events",
            "--since",
            "42",
            "--server",
            "127.0.0.1:15222",
        ]);
        let Command::Subscribe {
            account,
            node,
            out,
            since,
        } = cli.command
        else {
            panic!("parsed {:?}", cli.command);
        };
        assert_eq!(node, "voevent/nasa.gsfc.gcn/SWIFT");
        assert_eq!(out, Some(PathBuf::from("events")));
        assert_eq!(since.as_deref(), Some("42"));
        assert_eq!(account.server_addr(), "127.0.0.1:15222");
    }

    #[test]
    fn cluster_add_takes_id_and_address() {
        let cli = parse(&["vomesh", "cluster", "add", "4", "site-d.example.org:7001"]);
        assert!(matches!(
            cli.command,
            Command::Cluster(ClusterCommand::Add { id: 4, ref addr, .. }) if addr == "site-d.example.org:7001"
        ));
        let message = parse_error(&["vomesh", "cluster", "remove", "four"]);
        assert!(message.contains("four"), "{message}");
    }

    #[test]
    fn cluster_transfer_leader_takes_an_id() {
        let cli = parse(&["vomesh", "cluster", "transfer-leader", "2"]);
        assert!(matches!(
            cli.command,
            Command::Cluster(ClusterCommand::TransferLeader { id: 2, .. })
        ));
    }

    #[test]
    fn status_takes_json_flag() {
        let cli = parse(&["vomesh", "status", "--json", "--admin", "127.0.0.1:9200"]);
        let Command::Status { json, admin } = cli.command else {
            panic!("parsed {:?}", cli.command);
        };
        assert!(json);
        assert_eq!(admin.resolve().unwrap().base_url, "http://127.0.0.1:9200");
    }

    fn target(config: Option<PathBuf>, admin: Option<&str>, token: Option<&str>) -> AdminTarget {
        AdminTarget {
            config,
            admin: admin.map(str::to_owned),
            token: token.map(str::to_owned),
        }
    }

    #[test]
    fn no_admin_options_resolve_to_development_defaults() {
        let endpoint = target(None, None, None).resolve().unwrap();
        assert_eq!(
            endpoint,
            AdminEndpoint {
                base_url: DEFAULT_ADMIN_URL.to_owned(),
                token: None
            }
        );
    }

    #[test]
    fn config_supplies_admin_address_and_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(
            &path,
            "[admin]\nlisten = \"0.0.0.0:9300\"\ntoken = \"t0k\"\n",
        )
        .unwrap();
        let endpoint = target(Some(path.clone()), None, None).resolve().unwrap();
        assert_eq!(endpoint.base_url, "http://127.0.0.1:9300");
        assert_eq!(endpoint.token.as_deref(), Some("t0k"));
        let endpoint = target(Some(path), None, Some("other")).resolve().unwrap();
        assert_eq!(endpoint.token.as_deref(), Some("other"));
    }

    #[test]
    fn bad_config_is_reported_by_resolve() {
        let err = target(Some(PathBuf::from("/nonexistent.toml")), None, None)
            .resolve()
            .unwrap_err();
        assert!(err.to_string().contains("/nonexistent.toml"), "{err}");
    }

    #[test]
    fn https_admin_url_is_refused() {
        let err = target(None, Some("https://h:9100"), None)
            .resolve()
            .unwrap_err();
        assert!(matches!(err, AdminError::BadUrl(_)), "{err}");
        let endpoint = target(None, Some("http://h:9100/"), None)
            .resolve()
            .unwrap();
        assert_eq!(endpoint.base_url, "http://h:9100");
    }

    #[test]
    fn path_segment_encoding_keeps_jid_characters_safe() {
        assert_eq!(encode_path_segment("alice@localhost"), "alice@localhost");
        assert_eq!(encode_path_segment("a#b?c%d@x"), "a%23b%3Fc%25d@x");
        assert_eq!(encode_path_segment("é@x"), "%C3%A9@x");
    }

    /// An in-process stand-in for the node's users API, holding accounts in
    /// memory, to check the client's side of the contract.
    async fn fake_users_api(token: Option<&str>) -> (String, tokio::task::JoinHandle<()>) {
        type Users = Arc<Mutex<Vec<String>>>;
        let users: Users = Arc::new(Mutex::new(vec!["bob@localhost".to_owned()]));
        let create = {
            let users = users.clone();
            move |axum::Json(body): axum::Json<serde_json::Value>| async move {
                let jid = body["jid"].as_str().unwrap_or_default().to_owned();
                if body["password"].as_str().unwrap_or_default().is_empty() {
                    let error = serde_json::json!({"error": "password must not be empty"});
                    return (StatusCode::BAD_REQUEST, axum::Json(error));
                }
                let mut users = users.lock().unwrap();
                if users.contains(&jid) {
                    return (
                        StatusCode::CONFLICT,
                        axum::Json(serde_json::json!({"error": "exists"})),
                    );
                }
                users.push(jid);
                (StatusCode::CREATED, axum::Json(serde_json::json!({})))
            }
        };
        let list = {
            let users = users.clone();
            move || async move { axum::Json(serde_json::json!({"users": *users.lock().unwrap()})) }
        };
        let remove = move |axum::extract::Path(jid): axum::extract::Path<String>| async move {
            let mut users = users.lock().unwrap();
            match users.iter().position(|u| *u == jid) {
                Some(at) => {
                    users.remove(at);
                    StatusCode::NO_CONTENT
                }
                None => StatusCode::NOT_FOUND,
            }
        };
        let api = Router::new()
            .route("/users", get(list).post(create))
            .route("/users/{jid}", delete(remove));
        let state = crate::admin::AdminState {
            metrics: crate::metrics::Metrics::install().unwrap(),
            readiness: Arc::new(Vec::new),
            refresh_gauges: Arc::new(|| {}),
            token: token.map(str::to_owned),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let router = crate::admin::router(state, api);
        let task = tokio::spawn(async move {
            let _ = crate::admin::serve(listener, router, std::future::pending()).await;
        });
        (url, task)
    }

    fn client(base_url: &str, token: Option<&str>) -> AdminClient {
        AdminClient::new(AdminEndpoint {
            base_url: base_url.to_owned(),
            token: token.map(str::to_owned),
        })
    }

    fn jid(text: &str) -> BareJid {
        account_jid(text).unwrap()
    }

    #[tokio::test]
    async fn client_adds_lists_and_removes_users() {
        let (url, server) = fake_users_api(Some("t0k")).await;
        tokio::task::spawn_blocking(move || {
            let client = client(&url, Some("t0k"));
            client.add_user(&jid("alice#1@localhost"), "pw").unwrap();
            assert_eq!(
                client.list_users().unwrap(),
                ["bob@localhost", "alice#1@localhost"]
            );
            client.remove_user(&jid("alice#1@localhost")).unwrap();
            assert_eq!(client.list_users().unwrap(), ["bob@localhost"]);
        })
        .await
        .unwrap();
        server.abort();
    }

    #[tokio::test]
    async fn client_maps_api_failures_to_clear_errors() {
        let (url, server) = fake_users_api(Some("t0k")).await;
        tokio::task::spawn_blocking(move || {
            let admin = client(&url, Some("t0k"));
            let exists = admin.add_user(&jid("bob@localhost"), "pw").unwrap_err();
            assert_eq!(exists.to_string(), "user bob@localhost already exists");
            let invalid = admin.add_user(&jid("carol@localhost"), "").unwrap_err();
            assert_eq!(
                invalid.to_string(),
                "admin API rejected the request: password must not be empty"
            );
            let unknown = admin.remove_user(&jid("dave@localhost")).unwrap_err();
            assert_eq!(unknown.to_string(), "no user dave@localhost");

            let anonymous = client(&url, None);
            let refused = anonymous.list_users().unwrap_err();
            assert!(
                matches!(refused, AdminError::Unauthorized { .. }),
                "{refused}"
            );
        })
        .await
        .unwrap();
        server.abort();
    }

    #[tokio::test]
    async fn unreachable_node_is_one_line_naming_the_url() {
        // A port that was just free and is no longer listened on.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let message = tokio::task::spawn_blocking(move || {
            client(&url, None).list_users().unwrap_err().to_string()
        })
        .await
        .unwrap();
        assert!(
            message.starts_with("cannot reach admin API at http://127.0.0.1:"),
            "{message}"
        );
        assert!(message.contains("connection refused"), "{message}");
        assert!(message.ends_with("is `vomesh serve` running?"), "{message}");
    }

    /// An in-process stand-in for the node's status and membership API.
    async fn fake_cluster_api() -> (String, tokio::task::JoinHandle<()>) {
        let status = || async {
            axum::Json(serde_json::json!({
                "node_id": 1, "role": "leader", "term": 3, "leader": 1,
                "last_log_index": 10, "commit_index": 10, "applied_index": 10,
                "snapshot_index": null, "sessions": 2, "ready": true,
                "members": [
                    {"id": 1, "address": "127.0.0.1:7001", "role": "leader", "voter": true, "lag": 0},
                    {"id": 2, "address": "127.0.0.1:7002", "role": "follower", "voter": true, "lag": null}
                ],
                "build": "newer field"
            }))
        };
        let add = |axum::Json(body): axum::Json<serde_json::Value>| async move {
            match (body["id"].as_u64(), body["address"].as_str()) {
                (Some(4), Some("127.0.0.1:7004")) => {
                    (StatusCode::OK, axum::Json(serde_json::json!({})))
                }
                (Some(1), _) => (
                    StatusCode::CONFLICT,
                    axum::Json(serde_json::json!({"error": "node 1 is already a member"})),
                ),
                _ => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    axum::Json(serde_json::json!({"error": "no leader"})),
                ),
            }
        };
        let remove = |axum::extract::Path(id): axum::extract::Path<u64>| async move {
            if id == 2 {
                StatusCode::OK
            } else {
                StatusCode::NOT_FOUND
            }
        };
        let api = Router::new()
            .route("/status", get(status))
            .route("/cluster/members", axum::routing::post(add))
            .route("/cluster/members/{id}", delete(remove));
        let state = crate::admin::AdminState {
            metrics: crate::metrics::Metrics::install().unwrap(),
            readiness: Arc::new(Vec::new),
            refresh_gauges: Arc::new(|| {}),
            token: None,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let router = crate::admin::router(state, api);
        let task = tokio::spawn(async move {
            let _ = crate::admin::serve(listener, router, std::future::pending()).await;
        });
        (url, task)
    }

    #[tokio::test]
    async fn status_is_read_typed_and_kept_as_sent() {
        let (url, server) = fake_cluster_api().await;
        tokio::task::spawn_blocking(move || {
            let answer = client(&url, None).status().unwrap();
            assert_eq!(answer.status.node_id, 1);
            assert_eq!(answer.status.snapshot_index, None);
            assert!(answer.status.ready);
            assert_eq!(answer.status.members[1].lag, None);
            assert_eq!(answer.json["build"], "newer field");
        })
        .await
        .unwrap();
        server.abort();
    }

    #[tokio::test]
    async fn membership_changes_map_answers_to_clear_errors() {
        let (url, server) = fake_cluster_api().await;
        tokio::task::spawn_blocking(move || {
            let admin = client(&url, None);
            admin.add_member(4, "127.0.0.1:7004").unwrap();
            assert_eq!(
                admin
                    .add_member(1, "127.0.0.1:7001")
                    .unwrap_err()
                    .to_string(),
                "membership change refused: node 1 is already a member"
            );
            assert_eq!(
                admin
                    .add_member(5, "127.0.0.1:7005")
                    .unwrap_err()
                    .to_string(),
                "the node cannot change membership now: no leader"
            );
            admin.remove_member(2).unwrap();
            assert_eq!(
                admin.remove_member(9).unwrap_err().to_string(),
                "no cluster member 9"
            );
        })
        .await
        .unwrap();
        server.abort();
    }
}
