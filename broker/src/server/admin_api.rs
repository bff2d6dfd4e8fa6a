//! The `/api` routes of the admin listener (behind its bearer token):
//!
//! - `GET /api/users` → 200 `{"users": ["alice@example.org", …]}`
//! - `POST /api/users` `{"jid": "alice@example.org", "password": "…"}` → 201;
//!   409 when the account exists; 400 `{"error": "…"}` when invalid
//! - `DELETE /api/users/{jid}` → 204; 404 when there is no such account
//!
//! `vomesh user …` (see `cli.rs`) speaks exactly this.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::Deserialize;

use crate::accounts::{AccountError, AccountStore};
use crate::admin::ApiError;

#[derive(Clone)]
struct UsersState {
    accounts: AccountStore,
    domain: String,
}

/// The API routes, to be nested under `/api` by [`crate::admin::router`].
pub fn router(accounts: AccountStore, domain: &str) -> Router {
    let state = UsersState {
        accounts,
        domain: domain.to_ascii_lowercase(),
    };
    Router::new()
        .route("/users", get(list_users).post(add_user))
        .route("/users/{jid}", delete(remove_user))
        .with_state(state)
}

#[derive(Deserialize)]
struct NewUser {
    jid: String,
    password: String,
}

async fn list_users(State(state): State<UsersState>) -> Response {
    let accounts = state.accounts.clone();
    match blocking(move || accounts.list()).await {
        Ok(usernames) => {
            let users: Vec<String> = usernames
                .into_iter()
                .map(|username| format!("{username}@{}", state.domain))
                .collect();
            Json(serde_json::json!({ "users": users })).into_response()
        }
        Err(response) => response,
    }
}

async fn add_user(State(state): State<UsersState>, Json(user): Json<NewUser>) -> Response {
    let username = match state.localpart(&user.jid) {
        Ok(username) => username,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    let accounts = state.accounts.clone();
    match blocking(move || accounts.add(&username, &user.password)).await {
        Ok(()) => StatusCode::CREATED.into_response(),
        Err(response) => response,
    }
}

async fn remove_user(State(state): State<UsersState>, Path(jid): Path<String>) -> Response {
    let username = match state.localpart(&jid) {
        Ok(username) => username,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    let accounts = state.accounts.clone();
    match blocking(move || accounts.remove(&username)).await {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => error(StatusCode::NOT_FOUND, &format!("no account {jid}")),
        Err(response) => response,
    }
}

impl UsersState {
    /// The localpart of a JID of this node's domain (a bare localpart is
    /// accepted too).
    fn localpart(&self, jid: &str) -> Result<String, String> {
        let (localpart, domain) = jid.split_once('@').unwrap_or((jid, &self.domain));
        if !domain.eq_ignore_ascii_case(&self.domain) {
            return Err(format!(
                "{jid} is not in this server's domain {}",
                self.domain
            ));
        }
        Ok(localpart.to_owned())
    }
}

/// Runs a store call off the async threads (redb commits fsync) and maps
/// its error to an HTTP answer.
async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> Result<T, AccountError> + Send + 'static,
) -> Result<T, Response> {
    match tokio::task::spawn_blocking(call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(AccountError::Exists(_))) => Err(error(StatusCode::CONFLICT, "the account exists")),
        Ok(Err(invalid @ (AccountError::InvalidUsername(_) | AccountError::InvalidPassword))) => {
            Err(error(StatusCode::BAD_REQUEST, &invalid.to_string()))
        }
        Ok(Err(other)) => {
            tracing::error!(error = %other, "account store failure");
            Err(error(StatusCode::INTERNAL_SERVER_ERROR, &other.to_string()))
        }
        Err(join) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, &join.to_string())),
    }
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
