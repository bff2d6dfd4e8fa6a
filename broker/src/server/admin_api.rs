//! The `/api` routes of the admin listener (behind its bearer token). The
//! client side is `AdminClient` in `cli.rs`; both follow this contract:
//!
//! - `GET /api/users` → 200 `{"users": ["alice@example.org", …]}`
//! - `POST /api/users` `{"jid": "alice@example.org", "password": "…"}` → 201;
//!   409 when the account exists; 400 `{"error": "…"}` when invalid; 503
//!   when the mesh cannot commit (no leader reachable)
//! - `DELETE /api/users/{jid}` → 204; 404 when there is no such account
//! - `GET /api/status` → 200, this node's view of the mesh (see [`Status`])
//! - `POST /api/cluster/members` `{"id": 4, "address": "host:port"}` → 200
//!   once the node was added as a learner, caught up and made a voter
//! - `DELETE /api/cluster/members/{id}` → 200; 404 when not a member
//! - `POST /api/cluster/leader` `{"id": 2}` → 200 `{"leader": 2}` once node
//!   2 leads (asked at a follower, forwarded to the leader); 404 when not a
//!   voter (409 when the leader says so); 409 when it has not caught up;
//!   503 when no leader can be asked, or node 2 did not take over within an
//!   election timeout
//!
//! Account changes are commands replicated to every site; they are
//! answered once committed and applied at this site.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use vomesh_mesh::leadership::HandoverError;
use vomesh_mesh::membership::MembershipError;
use vomesh_mesh::node::{NodeStatus, ProposeError, Role};

use crate::admin::ApiError;
use crate::server::broker::{Broker, BrokerError, UserError};
use crate::xmpp::router::Router as StanzaRouter;

#[derive(Clone)]
struct ApiState {
    broker: Arc<Broker>,
    router: Arc<StanzaRouter>,
    /// `[admin] ready_applied_lag_max`, so `/api/status` and `/readyz`
    /// give the same verdict.
    ready_applied_lag_max: u64,
}

/// The API routes, to be nested under `/api` by [`crate::admin::router`].
pub fn router(
    broker: Arc<Broker>,
    stanza_router: Arc<StanzaRouter>,
    ready_applied_lag_max: u64,
) -> Router {
    Router::new()
        .route("/users", get(list_users).post(add_user))
        .route("/users/{jid}", delete(remove_user))
        .route("/status", get(status))
        .route("/cluster/members", post(add_member))
        .route("/cluster/members/{id}", delete(remove_member))
        .route("/cluster/leader", post(hand_leadership))
        .with_state(ApiState {
            broker,
            router: stanza_router,
            ready_applied_lag_max,
        })
}

#[derive(Deserialize)]
struct NewUser {
    jid: String,
    password: String,
}

async fn list_users(State(state): State<ApiState>) -> Response {
    let domain = state.broker.domain().to_owned();
    let users: Vec<String> = state
        .broker
        .usernames()
        .into_iter()
        .map(|username| format!("{username}@{domain}"))
        .collect();
    Json(serde_json::json!({ "users": users })).into_response()
}

async fn add_user(State(state): State<ApiState>, Json(user): Json<NewUser>) -> Response {
    let username = match localpart(state.broker.domain(), &user.jid) {
        Ok(username) => username,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    match state.broker.add_user(&username, &user.password).await {
        Ok(()) => StatusCode::CREATED.into_response(),
        Err(e) => user_error(&e),
    }
}

async fn remove_user(State(state): State<ApiState>, Path(jid): Path<String>) -> Response {
    let username = match localpart(state.broker.domain(), &jid) {
        Ok(username) => username,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    match state.broker.remove_user(&username).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => user_error(&e),
    }
}

fn user_error(e: &UserError) -> Response {
    let status = match e {
        UserError::Invalid(_) => StatusCode::BAD_REQUEST,
        UserError::Exists(_) => StatusCode::CONFLICT,
        UserError::Unknown(_) => StatusCode::NOT_FOUND,
        UserError::Broker(BrokerError::Propose(ProposeError::NoLeader(_))) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        UserError::Broker(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, &e.to_string())
}

/// The localpart of a JID of this node's domain (a bare localpart is
/// accepted too).
fn localpart(domain: &str, jid: &str) -> Result<String, String> {
    let (localpart, jid_domain) = jid.split_once('@').unwrap_or((jid, domain));
    if !jid_domain.eq_ignore_ascii_case(domain) {
        return Err(format!("{jid} is not in this server's domain {domain}"));
    }
    Ok(localpart.to_owned())
}

/// `GET /api/status`: this node's view of the mesh.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Status {
    pub node_id: u64,
    pub role: String,
    pub term: u64,
    pub leader: Option<u64>,
    pub last_log_index: Option<u64>,
    pub commit_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub snapshot_index: Option<u64>,
    /// Authenticated client sessions on this node.
    pub sessions: usize,
    /// The same verdict as `/readyz`.
    pub ready: bool,
    pub members: Vec<MemberStatus>,
}

/// One member, as the answering node knows it and as the member itself
/// reported (asked over the mesh; `reachable` false when it did not answer).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MemberStatus {
    pub id: u64,
    pub address: String,
    pub role: String,
    pub voter: bool,
    /// Entries behind the leader's log; known only on the leader.
    pub lag: Option<u64>,
    #[serde(default)]
    pub reachable: bool,
    /// The member's own term and log positions.
    #[serde(default)]
    pub term: Option<u64>,
    #[serde(default)]
    pub last_log_index: Option<u64>,
    #[serde(default)]
    pub applied_index: Option<u64>,
    /// Client sessions the member serves, as it reported them.
    #[serde(default)]
    pub sessions: Option<u64>,
    /// QUIC round-trip time from the answering node to the member, in
    /// milliseconds (none for the answering node itself, or with no
    /// connection open to the member).
    #[serde(default)]
    pub rtt_ms: Option<f64>,
    /// The site the member's configuration names `[mesh] preferred_leader`,
    /// as it reported it: every site should name the same one.
    #[serde(default)]
    pub preferred_leader: Option<u64>,
}

/// The readiness verdict of a node: why it cannot serve, empty when it can.
pub fn not_ready_reasons(status: &NodeStatus, applied_lag_max: u64) -> Vec<String> {
    let mut reasons = Vec::new();
    if status.leader.is_none() {
        reasons.push("no Raft leader known".to_owned());
    } else if let Some(silent_ms) = status.leader_silent_ms {
        // A site cut off in a minority still names its last leader.
        let from = if status.role == Role::Leader {
            "a quorum of followers"
        } else {
            "the Raft leader"
        };
        reasons.push(format!("no word from {from} for {silent_ms} ms"));
    }
    if matches!(status.role, Role::Learner | Role::Shutdown) {
        reasons.push(format!("this node is a {}", role_name(status.role)));
    }
    let behind = status
        .commit_index
        .unwrap_or(0)
        .saturating_sub(status.applied_index.unwrap_or(0));
    if behind > applied_lag_max {
        reasons.push(format!(
            "applied index is {behind} entries behind the commit index"
        ));
    }
    reasons
}

async fn status(State(state): State<ApiState>) -> Response {
    let node = state.broker.mesh().status();
    let views = state.broker.mesh().cluster_status().await;
    let ready = not_ready_reasons(&node, state.ready_applied_lag_max).is_empty();
    Json(status_of(
        &node,
        &views,
        state.router.session_count(),
        ready,
    ))
    .into_response()
}

fn status_of(
    node: &NodeStatus,
    views: &BTreeMap<u64, Result<NodeStatus, impl std::fmt::Display>>,
    sessions: usize,
    ready: bool,
) -> Status {
    let member = |id: u64, address: &String, voter: bool| {
        let own = views.get(&id).and_then(|view| view.as_ref().ok());
        MemberStatus {
            id,
            address: address.clone(),
            role: match own {
                Some(own) => role_name(own.role),
                None if !voter => "learner",
                None if node.leader == Some(id) => "leader",
                None => "follower",
            }
            .to_owned(),
            voter,
            lag: if node.role == Role::Leader {
                Some(node.replication_lag.get(&id).copied().unwrap_or(0))
            } else {
                None
            },
            reachable: own.is_some(),
            term: own.map(|own| own.term),
            last_log_index: own.and_then(|own| own.last_log_index),
            applied_index: own.and_then(|own| own.applied_index),
            sessions: own.and_then(|own| own.clients),
            rtt_ms: node
                .peer_rtt_micros
                .get(&id)
                .map(|micros| *micros as f64 / 1000.0),
            preferred_leader: own.and_then(|own| own.preferred_leader),
        }
    };
    let mut members: Vec<MemberStatus> = node
        .voters
        .iter()
        .map(|(id, address)| member(*id, address, true))
        .chain(
            node.learners
                .iter()
                .map(|(id, address)| member(*id, address, false)),
        )
        .collect();
    members.sort_by_key(|m| m.id);
    Status {
        node_id: node.id,
        role: role_name(node.role).to_owned(),
        term: node.term,
        leader: node.leader,
        last_log_index: node.last_log_index,
        commit_index: node.commit_index,
        applied_index: node.applied_index,
        snapshot_index: node.snapshot_index,
        sessions,
        ready,
        members,
    }
}

pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Leader => "leader",
        Role::Follower => "follower",
        Role::Candidate => "candidate",
        Role::Learner => "learner",
        Role::Shutdown => "shutdown",
    }
}

#[derive(Deserialize)]
struct NewMember {
    id: u64,
    address: String,
}

async fn add_member(State(state): State<ApiState>, Json(member): Json<NewMember>) -> Response {
    if state.broker.mesh().status().voters.contains_key(&member.id) {
        return error(
            StatusCode::CONFLICT,
            &format!("node {} is already a voter", member.id),
        );
    }
    match state
        .broker
        .mesh()
        .add_member(member.id, member.address)
        .await
    {
        Ok(()) => Json(serde_json::json!({ "added": member.id })).into_response(),
        Err(e) => membership_error(&e),
    }
}

async fn remove_member(State(state): State<ApiState>, Path(id): Path<u64>) -> Response {
    let status = state.broker.mesh().status();
    if !status.voters.contains_key(&id) && !status.learners.contains_key(&id) {
        return error(StatusCode::NOT_FOUND, &format!("node {id} is not a member"));
    }
    match state.broker.mesh().remove_member(id).await {
        Ok(()) => Json(serde_json::json!({ "removed": id })).into_response(),
        Err(e) => membership_error(&e),
    }
}

#[derive(Deserialize)]
struct NewLeader {
    id: u64,
}

async fn hand_leadership(State(state): State<ApiState>, Json(to): Json<NewLeader>) -> Response {
    match state.broker.mesh().hand_leadership_to(to.id).await {
        Ok(()) => Json(serde_json::json!({ "leader": to.id })).into_response(),
        Err(e) => {
            let status = match e {
                HandoverError::NotAVoter(_) => StatusCode::NOT_FOUND,
                HandoverError::Behind { .. } | HandoverError::Refused(_) => StatusCode::CONFLICT,
                HandoverError::NotLeader { .. }
                | HandoverError::NotTaken { .. }
                | HandoverError::Unreachable(_)
                | HandoverError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            };
            error(status, &e.to_string())
        }
    }
}

fn membership_error(e: &MembershipError) -> Response {
    let status = match e {
        MembershipError::NotLeader { .. }
        | MembershipError::Unreachable(_)
        | MembershipError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        MembershipError::Refused(_) => StatusCode::BAD_REQUEST,
    };
    error(status, &e.to_string())
}

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(ApiError {
            error: message.to_owned(),
        }),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAG_MAX: u64 = 1000;

    fn follower() -> NodeStatus {
        NodeStatus {
            id: 3,
            role: Role::Follower,
            term: 4,
            leader: Some(1),
            last_log_index: Some(20),
            commit_index: Some(20),
            applied_index: Some(20),
            snapshot_index: None,
            purged_index: None,
            voters: BTreeMap::new(),
            learners: BTreeMap::new(),
            replication_lag: BTreeMap::new(),
            leader_silent_ms: None,
            clients: Some(0),
            peer_rtt_micros: BTreeMap::new(),
            preferred_leader: None,
        }
    }

    #[test]
    fn a_follower_hearing_its_leader_is_ready() {
        assert!(not_ready_reasons(&follower(), LAG_MAX).is_empty());
    }

    #[test]
    fn a_follower_whose_leader_fell_silent_is_not_ready() {
        let cut_off = NodeStatus {
            leader_silent_ms: Some(4200),
            ..follower()
        };
        assert_eq!(
            not_ready_reasons(&cut_off, LAG_MAX),
            ["no word from the Raft leader for 4200 ms"]
        );
    }

    #[test]
    fn a_leader_without_a_quorum_is_not_ready() {
        let alone = NodeStatus {
            role: Role::Leader,
            leader: Some(3),
            leader_silent_ms: Some(3000),
            ..follower()
        };
        assert_eq!(
            not_ready_reasons(&alone, LAG_MAX),
            ["no word from a quorum of followers for 3000 ms"]
        );
    }

    #[test]
    fn applied_far_behind_commit_is_not_ready() {
        let behind = NodeStatus {
            commit_index: Some(5000),
            applied_index: Some(10),
            ..follower()
        };
        assert_eq!(
            not_ready_reasons(&behind, LAG_MAX),
            ["applied index is 4990 entries behind the commit index"]
        );
    }
}
