//! The broker of one site: the mesh node that replicates the [`Replica`],
//! and the operations the rest of the server performs through it —
//! proposing commands, reading accounts, administering users.
//!
//! Every write goes through [`Broker::propose`]: the command is committed on
//! a majority of sites (forwarded to the Raft leader from a follower) and
//! applied here before the call returns, so a client's IQ result always
//! describes state this site already has. Reads (`credentials`, the pubsub
//! queries of the component) come from the local replica: a reader sees
//! every command this site has applied, which includes every command whose
//! result this site returned (read-your-writes at one site); a reader that
//! needs the newest state of the whole mesh first calls
//! [`Broker::ensure_linearizable`].

use std::sync::Arc;

use jid::Jid;
use prost::Message as _;
use vomesh_mesh::node::{MeshNode, ProposeError, ReadError};
use vomesh_proto::pubsub::command::Op;
use vomesh_proto::pubsub::{AddAccount, Command, CommandReply, RemoveAccount, command_reply};

use crate::accounts::{self, AccountError, AccountFactory};
use crate::replica::Replica;
use crate::sasl::StoredCredentials;
use crate::server::c2s::CredentialSource;
use crate::xml::{Element, ParserLimits, parse_document};

/// Replies are produced by this build's own serializer; these limits only
/// keep a corrupt reply from a peer from costing more than a stanza.
const REPLY_LIMITS: ParserLimits = ParserLimits {
    stanza_bytes_max: 64 * 1024 * 1024,
    depth_max: 256,
    attributes_max: 256,
};

/// The answer to a committed command.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// The child of the IQ result, if any, as the applying replica wrote
    /// it: self-contained XML (`Element::to_xml`) that goes into the
    /// answer as it is. Nothing reads it, so it is not parsed.
    Result(Option<Arc<str>>),
    /// The `<error/>` element of the IQ error.
    Error(Element),
}

impl Reply {
    /// The defined condition of an error reply (`conflict`, …).
    pub fn error_condition(&self) -> Option<&str> {
        match self {
            Reply::Result(_) => None,
            Reply::Error(error) => crate::xmpp::stanza::defined_condition(error),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error(transparent)]
    Propose(#[from] ProposeError),
    #[error("the committed reply cannot be read: {0}")]
    BadReply(String),
}

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error(transparent)]
    Invalid(#[from] AccountError),
    #[error("account {0} exists")]
    Exists(String),
    #[error("no account {0}")]
    Unknown(String),
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// A site's broker.
pub struct Broker {
    mesh: MeshNode<Replica>,
    accounts: AccountFactory,
    domain: String,
}

impl Broker {
    pub fn new(mesh: MeshNode<Replica>, accounts: AccountFactory, domain: &str) -> Self {
        Broker {
            mesh,
            accounts,
            domain: domain.to_ascii_lowercase(),
        }
    }

    pub fn mesh(&self) -> &MeshNode<Replica> {
        &self.mesh
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// Runs `read` on the local replica. Keep it short: applying waits.
    pub fn read<T>(&self, read: impl FnOnce(&Replica) -> T) -> T {
        read(&self.mesh.state().read())
    }

    /// Commits `command` on a majority and applies it here; returns the
    /// reply and the command's log index (its global sequence number).
    pub async fn propose(&self, command: &Command) -> Result<(u64, Reply), BrokerError> {
        let committed = self.mesh.propose(command.encode_to_vec().into()).await?;
        let reply = CommandReply::decode(committed.response.as_ref())
            .map_err(|e| BrokerError::BadReply(e.to_string()))?;
        let reply = match reply.reply {
            Some(command_reply::Reply::ResultXml(xml)) if xml.is_empty() => Reply::Result(None),
            Some(command_reply::Reply::ResultXml(xml)) => Reply::Result(Some(xml.into())),
            Some(command_reply::Reply::ErrorXml(xml)) => Reply::Error(parse_reply(&xml)?),
            None => return Err(BrokerError::BadReply("empty reply".into())),
        };
        Ok((committed.index, reply))
    }

    /// Waits until this site has applied everything the mesh committed
    /// before the call (a ReadIndex round through the leader).
    pub async fn ensure_linearizable(&self) -> Result<u64, ReadError> {
        self.mesh.ensure_linearizable().await
    }

    /// The usernames of every account, sorted.
    pub fn usernames(&self) -> Vec<String> {
        self.read(|replica| {
            replica
                .pubsub()
                .accounts()
                .map(|(name, _)| name.to_owned())
                .collect()
        })
    }

    /// Creates an account at every site.
    pub async fn add_user(&self, username: &str, password: &str) -> Result<(), UserError> {
        // PBKDF2 over thousands of iterations: tell the runtime this thread
        // is busy so other tasks move elsewhere.
        let (username, credentials) =
            tokio::task::block_in_place(|| self.accounts.new_account(username, password))?;
        let op = Op::AddAccount(AddAccount {
            username: username.clone(),
            credentials,
        });
        match self.propose(&self.admin_command(op)).await?.1 {
            Reply::Result(_) => Ok(()),
            reply if reply.error_condition() == Some("conflict") => {
                Err(UserError::Exists(username))
            }
            Reply::Error(error) => Err(UserError::Broker(BrokerError::BadReply(error.to_xml()))),
        }
    }

    /// Deletes an account at every site.
    pub async fn remove_user(&self, username: &str) -> Result<(), UserError> {
        let username = accounts::account_key(username)?;
        let op = Op::RemoveAccount(RemoveAccount {
            username: username.clone(),
        });
        match self.propose(&self.admin_command(op)).await?.1 {
            Reply::Result(_) => Ok(()),
            reply if reply.error_condition() == Some("item-not-found") => {
                Err(UserError::Unknown(username))
            }
            Reply::Error(error) => Err(UserError::Broker(BrokerError::BadReply(error.to_xml()))),
        }
    }

    /// Administrative commands act as the server itself.
    fn admin_command(&self, op: Op) -> Command {
        Command {
            actor: Jid::new(&self.domain)
                .map(|j| j.to_string())
                .unwrap_or_default(),
            timestamp_micros: crate::clock::now_micros(),
            op: Some(op),
        }
    }
}

impl CredentialSource for Broker {
    fn credentials(&self, username: &str) -> Option<StoredCredentials> {
        let record = self.read(|replica| replica.pubsub().account(username).map(<[u8]>::to_vec))?;
        match accounts::decode(&record) {
            Ok(credentials) => Some(credentials),
            Err(reason) => {
                tracing::error!(
                    username,
                    reason,
                    "corrupt account record in the replicated state"
                );
                None
            }
        }
    }

    fn scram_iterations(&self) -> u32 {
        self.accounts.scram_iterations()
    }
}

fn parse_reply(xml: &str) -> Result<Element, BrokerError> {
    parse_document(xml.as_bytes(), REPLY_LIMITS).map_err(|e| BrokerError::BadReply(e.to_string()))
}
