//! The admin HTTP listener: health, readiness, metrics, and the admin API.
//!
//! `/healthz`, `/readyz` and `/metrics` are open, so load balancers and
//! Prometheus need no secret; everything under `/api` requires
//! `Authorization: Bearer <[admin] token>` (RFC 6750 §2.1) when a token is
//! configured. The API routes themselves are supplied by the caller as a
//! [`Router`] and nested under `/api` behind that check, so this module owns
//! the listener's policy and the node owns what the API does.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use ring::hmac;
use serde::Serialize;

use crate::metrics::Metrics;

/// The Prometheus text exposition format this endpoint serves.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// Whether the node can take traffic, asked on every `GET /readyz`.
pub trait Readiness: Send + Sync {
    /// Why the node cannot serve yet (e.g. "no Raft leader"); empty when ready.
    fn not_ready_reasons(&self) -> Vec<String>;
}

impl<F> Readiness for F
where
    F: Fn() -> Vec<String> + Send + Sync,
{
    fn not_ready_reasons(&self) -> Vec<String> {
        self()
    }
}

/// What the admin listener needs from the node.
#[derive(Clone)]
pub struct AdminState {
    pub metrics: Metrics,
    pub readiness: Arc<dyn Readiness>,
    /// Sets the gauges that are read off the state, run at each scrape:
    /// cheaper there than after every change when they walk the state.
    pub refresh_gauges: Arc<dyn Fn() + Send + Sync>,
    /// `[admin] token`; `None` (development): `/api` is open.
    pub token: Option<String>,
}

/// The admin router: the open endpoints, plus `api` nested under `/api`
/// behind the bearer-token check (so `api`'s `/users` is `/api/users`).
pub fn router(state: AdminState, api: Router) -> Router {
    // The fallback sits inside the token check, so an unauthenticated caller
    // cannot probe which API paths exist.
    let api = api.fallback(api_not_found);
    let api = match &state.token {
        Some(token) => api.layer(middleware::from_fn_with_state(
            BearerToken::new(token),
            require_bearer_token,
        )),
        None => api,
    };
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
        .nest("/api", api)
}

/// Serves `router` on `listener` until `shutdown` completes, then lets
/// in-flight requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// The `{"error": "..."}` body every admin API failure carries.
#[derive(Debug, Serialize)]
pub struct ApiError {
    pub error: String,
}

async fn api_not_found() -> Response {
    let body = ApiError {
        error: "no such admin API endpoint".to_owned(),
    };
    (StatusCode::NOT_FOUND, axum::Json(body)).into_response()
}

async fn healthz() -> Response {
    axum::Json(serde_json::json!({ "status": "ok" })).into_response()
}

#[derive(Serialize)]
struct ReadinessBody {
    ready: bool,
    reasons: Vec<String>,
}

async fn readyz(State(state): State<AdminState>) -> Response {
    let reasons = state.readiness.not_ready_reasons();
    let ready = reasons.is_empty();
    // 503 lets load balancers and orchestrators act on the status alone.
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(ReadinessBody { ready, reasons })).into_response()
}

async fn metrics(State(state): State<AdminState>) -> Response {
    // The `/readyz` verdict as a gauge, so alerts need no HTTP prober.
    let ready = state.readiness.not_ready_reasons().is_empty();
    metrics::gauge!(crate::metrics::names::READY).set(if ready { 1.0 } else { 0.0 });
    (state.refresh_gauges)();
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        state.metrics.render(),
    )
        .into_response()
}

/// The configured token, kept as an HMAC tag: presented tokens are compared
/// by `hmac::verify`, which runs in constant time and does not leak the
/// token's length. The key need not be secret; it only makes the comparison
/// one between fixed-size tags.
#[derive(Clone)]
struct BearerToken {
    key: hmac::Key,
    tag: hmac::Tag,
}

impl BearerToken {
    fn new(token: &str) -> Self {
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"vomesh admin bearer token");
        let tag = hmac::sign(&key, token.as_bytes());
        BearerToken { key, tag }
    }

    fn admits(&self, presented: &[u8]) -> bool {
        hmac::verify(&self.key, presented, self.tag.as_ref()).is_ok()
    }
}

async fn require_bearer_token(
    State(token): State<BearerToken>,
    request: Request,
    next: Next,
) -> Response {
    match presented_token(request.headers()) {
        Some(presented) if token.admits(presented) => next.run(request).await,
        // RFC 6750 §3.1: a request without credentials gets the bare
        // challenge; one with wrong credentials gets error="invalid_token".
        Some(_) => unauthorized(
            "Bearer realm=\"vomesh\", error=\"invalid_token\"",
            "invalid bearer token",
        ),
        None => unauthorized(
            "Bearer realm=\"vomesh\"",
            "this endpoint requires `Authorization: Bearer <[admin] token>`",
        ),
    }
}

/// The token of an `Authorization: Bearer <token>` header; the scheme name
/// is case-insensitive (RFC 9110 §11.1).
fn presented_token(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, token) = value.split_at_checked(value.iter().position(|b| *b == b' ')?)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let token = token.trim_ascii();
    (!token.is_empty()).then_some(token)
}

fn unauthorized(challenge: &'static str, message: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        )],
        axum::Json(ApiError {
            error: message.to_owned(),
        }),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    /// A running admin listener; stops when dropped.
    struct TestServer {
        addr: SocketAddr,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    }

    impl TestServer {
        async fn start(token: Option<&str>, readiness: Arc<dyn Readiness>) -> TestServer {
            let state = AdminState {
                metrics: Metrics::install().unwrap(),
                readiness,
                refresh_gauges: Arc::new(|| {}),
                token: token.map(str::to_owned),
            };
            let api = Router::new().route("/users", get(|| async { "alice@localhost" }));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(serve(listener, router(state, api), async {
                let _ = stopped.await;
            }));
            TestServer {
                addr,
                stop: Some(stop),
                task: Some(task),
            }
        }

        /// GET `path` with an optional `Authorization` header value:
        /// (status, selected headers, body).
        async fn get(&self, path: &str, authorization: Option<&str>) -> Reply {
            let url = format!("http://{}{path}", self.addr);
            let authorization = authorization.map(str::to_owned);
            tokio::task::spawn_blocking(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .build()
                    .into();
                let mut request = agent.get(&url);
                if let Some(value) = authorization {
                    request = request.header("Authorization", value);
                }
                let response = request.call().unwrap();
                let header = |name: &str| {
                    response
                        .headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                };
                Reply {
                    status: response.status().as_u16(),
                    content_type: header("content-type"),
                    www_authenticate: header("www-authenticate"),
                    body: response.into_body().read_to_string().unwrap(),
                }
            })
            .await
            .unwrap()
        }

        async fn stop(mut self) -> std::io::Result<()> {
            if let Some(stop) = self.stop.take() {
                let _ = stop.send(());
            }
            match self.task.take() {
                Some(task) => task.await.unwrap(),
                None => Ok(()),
            }
        }
    }

    struct Reply {
        status: u16,
        content_type: Option<String>,
        www_authenticate: Option<String>,
        body: String,
    }

    fn always_ready() -> Arc<dyn Readiness> {
        Arc::new(Vec::new)
    }

    #[tokio::test]
    async fn healthz_answers_ok_without_a_token() {
        let server = TestServer::start(Some("s3cret"), always_ready()).await;
        let reply = server.get("/healthz", None).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body, r#"{"status":"ok"}"#);
        server.stop().await.unwrap();
    }

    #[tokio::test]
    async fn readyz_reports_reasons_with_503_until_ready() {
        let not_ready: Arc<dyn Readiness> = Arc::new(|| vec!["no Raft leader".to_owned()]);
        let server = TestServer::start(None, not_ready).await;
        let reply = server.get("/readyz", None).await;
        assert_eq!(reply.status, 503);
        assert_eq!(
            reply.body,
            r#"{"ready":false,"reasons":["no Raft leader"]}"#
        );
        server.stop().await.unwrap();

        let server = TestServer::start(None, always_ready()).await;
        let reply = server.get("/readyz", None).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body, r#"{"ready":true,"reasons":[]}"#);
        server.stop().await.unwrap();
    }

    #[tokio::test]
    async fn metrics_serves_prometheus_text_without_a_token() {
        let server = TestServer::start(Some("s3cret"), always_ready()).await;
        metrics::gauge!(crate::metrics::names::C2S_SESSIONS).set(3.0);
        let reply = server.get("/metrics", None).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.content_type.as_deref(), Some(METRICS_CONTENT_TYPE));
        assert!(
            reply.body.contains(
                "# HELP vomesh_c2s_sessions Authenticated, resource-bound client sessions."
            ),
            "{}",
            reply.body
        );
        assert!(reply.body.contains("# TYPE vomesh_c2s_sessions gauge"));
        // Every non-comment line is `name{labels} value`.
        for line in reply
            .body
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let (_, value) = line.rsplit_once(' ').unwrap();
            assert!(
                value.parse::<f64>().is_ok(),
                "unparsable sample line {line:?}"
            );
        }
        server.stop().await.unwrap();
    }

    #[tokio::test]
    async fn api_without_a_token_is_401_with_a_bearer_challenge() {
        let server = TestServer::start(Some("s3cret"), always_ready()).await;
        let reply = server.get("/api/users", None).await;
        assert_eq!(reply.status, 401);
        assert_eq!(
            reply.www_authenticate.as_deref(),
            Some("Bearer realm=\"vomesh\"")
        );
        assert!(reply.body.contains("\"error\""), "{}", reply.body);
        server.stop().await.unwrap();
    }

    #[tokio::test]
    async fn api_with_a_wrong_token_is_401_invalid_token() {
        let server = TestServer::start(Some("s3cret"), always_ready()).await;
        for wrong in ["Bearer s3cre", "Bearer s3cret2", "Basic s3cret", "Bearer "] {
            let reply = server.get("/api/users", Some(wrong)).await;
            assert_eq!(reply.status, 401, "{wrong}");
            assert!(reply.www_authenticate.unwrap().starts_with("Bearer"));
        }
        server.stop().await.unwrap();
    }

    #[tokio::test]
    async fn api_with_the_token_reaches_the_route() {
        let server = TestServer::start(Some("s3cret"), always_ready()).await;
        let reply = server.get("/api/users", Some("Bearer s3cret")).await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (200, "alice@localhost")
        );
        let reply = server.get("/api/users", Some("bearer s3cret")).await;
        assert_eq!(reply.status, 200);
        server.stop().await.unwrap();
    }

    #[tokio::test]
    async fn unknown_api_path_does_not_answer_before_authentication() {
        let server = TestServer::start(Some("s3cret"), always_ready()).await;
        assert_eq!(server.get("/api/nothing-here", None).await.status, 401);
        let reply = server.get("/api/nothing-here", Some("Bearer s3cret")).await;
        assert_eq!(reply.status, 404);
        assert_eq!(reply.body, r#"{"error":"no such admin API endpoint"}"#);
        server.stop().await.unwrap();
    }

    #[tokio::test]
    async fn api_is_open_when_no_token_is_configured() {
        let server = TestServer::start(None, always_ready()).await;
        let reply = server.get("/api/users", None).await;
        assert_eq!(reply.status, 200);
        server.stop().await.unwrap();
    }
}
