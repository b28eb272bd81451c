//! The REST API (axum). Every error is `{error, message}` with a fitting status code.
//!
//! | Route | Auth | |
//! |---|---|---|
//! | `POST /api/v1/tasks` | key | submit |
//! | `GET /api/v1/tasks` | key | the caller's tasks (`?status=`, `?limit=`) |
//! | `GET /api/v1/tasks/{id}` | key | one task |
//! | `DELETE /api/v1/tasks/{id}` | key | cancel |
//! | `PUT /api/v1/blobs` | key | upload an artifact (an ONNX model), get its sha256 |
//! | `GET /api/v1/blobs/{sha256}` | node signature | download an artifact (agents fetch large artifacts and FL models) |
//! | `GET /api/v1/nodes`, `GET /api/v1/nodes/{id}` | key | nodes and their health |
//! | `GET /api/v1/nodes/{id}/reputation` | key | a node's score, counts and recent history (`?limit=`) |
//! | `GET /api/v1/proofs/{id}` | key | a verified proof of one of the caller's `zk_proof` tasks, with snarkjs JSON |
//! | `POST /api/v1/proofs/verify` | key | check a proof against public inputs |
//! | `GET /api/v1/circuits` | key | each circuit's size range, and the sizes whose keys exist with their snarkjs verification keys |
//! | `GET /api/v1/templates` | key | the built-in task templates, with their parameters ([`crate::templates`]) |
//! | `POST /api/v1/templates/{name}/render` | key | a template's submission body with the parameters given (submits nothing) |
//! | `GET /api/v1/events` | key | the caller's task changes, as server-sent events ([`crate::console::events`]) |
//! | `POST /api/v1/join` | join token, node signature | a node enrols |
//! | `POST /api/v1/admin/tokens`, `GET /api/v1/admin/tokens` | admin key | make, list enrolment tokens |
//! | `DELETE /api/v1/admin/tokens/{id}` | admin key | revoke a token |
//! | `POST /api/v1/admin/nodes/{id}/revoke` | admin key | revoke an enrolled node |
//! | `GET /api/v1/account`, `GET /api/v1/account/ledger` | key | the caller's credits and its ledger (`?after=`, `?limit=`) |
//! | `GET /api/v1/leaderboard` | key | nodes by recent average credit |
//! | `GET /api/v1/prices` | none | the price list |
//! | `POST /api/v1/admin/accounts`, `GET /api/v1/admin/accounts` | admin key | make (with a first API key), list submitter accounts |
//! | `POST /api/v1/admin/accounts/{name}/keys` | admin key | another API key for an account |
//! | `GET /api/v1/admin/keys`, `DELETE /api/v1/admin/keys/{id}` | admin key | list, revoke API keys |
//! | `POST /api/v1/admin/accounts/{name}/grant` | admin key | mint credits into an account |
//! | `PUT /api/v1/admin/accounts/{name}/limits` | admin key | set an account's limits |
//! | `GET /api/v1/admin/ledger` | admin key | the whole ledger (`?account=`, `?after=`, `?limit=`) |
//! | `POST /internal/v1/intake` | the leader's intake secret | a submission another coordinator of the store checked (not in the OpenAPI document: coordinators only) |
//! | `GET /api/v1/health` | none | liveness and broker link |
//! | `GET /metrics` | none | Prometheus |
//! | `GET /api-docs/openapi.json` | none | OpenAPI 3.1 |
//! | `GET /console/` (and its files) | none; the page asks for a key | the web console ([`crate::console`]) |
//!
//! # Layout
//! - [`auth`]: API keys and admin keys.
//! - [`enrolment`]: joining with a token, tokens, node revocation.
//! - [`credits`]: prices, the caller's account and ledger, the leaderboard, and the admin's
//!   accounts, keys, grants and limits.
//! - [`tasks`]: submit, list, read, cancel.
//! - [`blobs`]: artifact upload and signed download.
//! - [`nodes`]: nodes, health and reputation.
//! - [`proofs`]: proofs and circuits of `zk_proof` tasks.
//! - [`templates`]: task templates, listed and rendered.
//! - [`forward`]: on a coordinator that does not run the scheduler, what needs it goes to the
//!   one that does; submissions are checked here first and handed to the leader's intake.
//! - this module: the router, shared state, error responses, health, metrics and the OpenAPI
//!   document.

mod auth;
mod blobs;
mod credits;
mod enrolment;
mod forward;
mod nodes;
mod proofs;
mod tasks;
mod templates;

use std::sync::Arc;

use ambient_link::LinkState;
use ambient_protocol::ApiError;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tokio::sync::{mpsc, watch};

use crate::config::{ApiKey, Limits};
use crate::engine::EngineMsg;
use crate::kinds::groth16::Zk;
use crate::leader::Leading;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::submission::SubmitError;
use ambient_protocol::KeyDirectory;
use auth::{authenticate, authenticate_admin};
use blobs::{get_blob, put_blob};
use nodes::{get_node, get_node_reputation, list_nodes};
use proofs::{get_proof, list_circuits, verify_proof};
use tasks::{cancel_task, get_task, list_tasks, submit};

/// The OpenAPI document served at `/api-docs/openapi.json`.
pub const OPENAPI: &str = include_str!("../../openapi.json");

pub use forward::{FORWARDED_BY, Forward, INTAKE_SECRET};

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The scheduler role, while this coordinator runs it.
    pub(crate) leading: watch::Receiver<Option<Leading>>,
    /// How to reach the coordinator that runs it otherwise.
    pub(crate) forward: Forward,
    pub(crate) store: Store,
    pub(crate) limits: Limits,
    pub(crate) keys: Arc<Vec<ApiKey>>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) zk: Arc<Zk>,
    pub(crate) identities: Arc<KeyDirectory>,
    pub(crate) nonces: Arc<blobs::Nonces>,
    pub(crate) admin_keys: Arc<Vec<String>>,
    pub(crate) enroller: crate::enrolment::Enroller,
    /// The price list (the leader's scheduler charges by the same).
    pub(crate) prices: crate::credits::Prices,
    /// The web console's event streams.
    pub(crate) console: crate::console::Console,
}

impl AppState {
    /// The engine's inbox, while this coordinator runs the scheduler. (Routes that need it are
    /// forwarded otherwise, so `None` here means the role stopped in between.)
    pub(crate) fn engine(&self) -> Result<mpsc::Sender<EngineMsg>, Failure> {
        self.leading
            .borrow()
            .as_ref()
            .map(|l| l.engine.clone())
            .ok_or_else(Failure::unavailable)
    }
}

/// An error response.
pub(crate) struct Failure(StatusCode, ApiError, Option<u64>);

impl Failure {
    pub(crate) fn new(status: StatusCode, error: &str, message: impl Into<String>) -> Failure {
        Failure(status, ApiError::new(error, message), None)
    }

    pub(crate) fn unavailable() -> Failure {
        Failure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the scheduler is stopping on this coordinator (shutdown or takeover); retry",
        )
    }

    pub(crate) fn store(e: crate::store::StoreError) -> Failure {
        tracing::error!(error = %e, "Store query failed.");
        Failure::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let mut response = (self.0, Json(self.1)).into_response();
        if let Some(secs) = self.2 {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
        }
        response
    }
}

impl From<SubmitError> for Failure {
    fn from(e: SubmitError) -> Failure {
        let status =
            StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY);
        Failure(status, e.to_api_error(None), e.retry_after())
    }
}

/// Builds the router.
pub fn router(state: AppState) -> Router {
    // What needs the scheduler: run here when this coordinator leads, forwarded otherwise.
    let to_leader = || middleware::from_fn_with_state(state.clone(), forward::to_leader);
    let scheduled = Router::new()
        .route("/api/v1/tasks/{id}", axum::routing::delete(cancel_task))
        .route("/api/v1/nodes", get(list_nodes))
        .route("/api/v1/nodes/{id}", get(get_node))
        .route("/api/v1/nodes/{id}/reputation", get(get_node_reputation))
        .route("/api/v1/leaderboard", get(credits::leaderboard))
        .route_layer(to_leader());
    let authed = Router::new()
        .merge(scheduled)
        // Checked on any coordinator; a follower hands the result to the leader's intake.
        .route("/api/v1/tasks", get(list_tasks).post(submit))
        .route("/api/v1/tasks/{id}", get(get_task))
        .route("/api/v1/blobs", axum::routing::put(put_blob))
        .route("/api/v1/proofs/verify", axum::routing::post(verify_proof))
        .route("/api/v1/proofs/{id}", get(get_proof))
        .route("/api/v1/circuits", get(list_circuits))
        .route("/api/v1/templates", get(templates::list_templates))
        .route(
            "/api/v1/templates/{name}/render",
            axum::routing::post(templates::render_template),
        )
        .route("/api/v1/account", get(credits::my_account))
        .route("/api/v1/account/ledger", get(credits::my_ledger))
        .route("/api/v1/events", get(events))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    // Signed blob downloads need the node keys and the nonces seen, which the leader holds.
    let blob = Router::new()
        .route("/api/v1/blobs/{sha256}", get(get_blob))
        .route_layer(to_leader());
    // Joining and revoking change the keys the scheduler checks, which the leader holds.
    let join = Router::new()
        .route("/api/v1/join", axum::routing::post(enrolment::join))
        .route_layer(to_leader());
    let admin_on_leader = Router::new()
        .route(
            "/api/v1/admin/nodes/{id}/revoke",
            axum::routing::post(enrolment::revoke_node),
        )
        // Grants and limits change what the scheduler's book holds.
        .route(
            "/api/v1/admin/accounts",
            axum::routing::post(credits::create_account),
        )
        .route(
            "/api/v1/admin/accounts/{name}/grant",
            axum::routing::post(credits::grant_credits),
        )
        .route(
            "/api/v1/admin/accounts/{name}/limits",
            axum::routing::put(credits::set_limits),
        )
        .route_layer(to_leader());
    let admin = Router::new()
        .merge(admin_on_leader)
        .route(
            "/api/v1/admin/tokens",
            get(enrolment::list_tokens).post(enrolment::create_token),
        )
        .route(
            "/api/v1/admin/tokens/{id}",
            axum::routing::delete(enrolment::revoke_token),
        )
        .route("/api/v1/admin/accounts", get(credits::list_accounts))
        .route(
            "/api/v1/admin/accounts/{name}/keys",
            axum::routing::post(credits::create_key),
        )
        .route("/api/v1/admin/keys", get(credits::list_keys))
        .route(
            "/api/v1/admin/keys/{id}",
            axum::routing::delete(credits::revoke_key),
        )
        .route("/api/v1/admin/ledger", get(credits::admin_ledger))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            authenticate_admin,
        ));
    Router::new()
        .merge(authed)
        .merge(blob)
        .merge(join)
        .merge(admin)
        .route(forward::INTAKE_PATH, axum::routing::post(tasks::intake))
        .route("/api/v1/health", get(health))
        .route("/api/v1/prices", get(credits::prices))
        .route("/metrics", get(metrics))
        .route("/api-docs/openapi.json", get(openapi))
        .merge(crate::console::router())
        .fallback(not_found)
        // The handlers apply the configured limit themselves with a clear 413. This layer only
        // stops bodies far beyond it from being buffered at all. The 4 MiB of slack lets a body a
        // little over the limit be read whole, so the client gets the 413 instead of a reset
        // connection (closing a socket with unread data sends RST).
        .layer(DefaultBodyLimit::max(
            state.limits.max_body_bytes + (4 << 20),
        ))
        .with_state(state)
}

async fn health(State(state): State<AppState>) -> Json<serde_json::Value> {
    use std::sync::atomic::Ordering::Relaxed;
    let Some(leading) = state.leading.borrow().clone() else {
        return Json(serde_json::json!({
            "status": "ok",
            "version": env!("CARGO_PKG_VERSION"),
            "role": "follower",
            "mqtt": "not connected: another coordinator runs the scheduler",
        }));
    };
    let link = leading.link.borrow().clone();
    let mqtt = match &link {
        LinkState::Connected => "connected".to_string(),
        LinkState::Connecting => "connecting".to_string(),
        LinkState::Refused(e) => format!("refused: {e}"),
        LinkState::Down(e) => format!("down: {e}"),
    };
    Json(serde_json::json!({
        "status": if link == LinkState::Connected { "ok" } else { "degraded" },
        "version": env!("CARGO_PKG_VERSION"),
        "role": "leader",
        "mqtt": mqtt,
        "nodes_online": state.metrics.nodes_online.load(Relaxed),
        "tasks_active": state.metrics.tasks_active.load(Relaxed),
    }))
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

/// `GET /api/v1/events`: served from the store on any coordinator ([`crate::console::events`]).
async fn events(
    State(state): State<AppState>,
    axum::Extension(auth::Submitter(submitter)): axum::Extension<auth::Submitter>,
) -> Response {
    crate::console::events(&state, submitter)
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

async fn not_found() -> Failure {
    Failure::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

/// Most items one list request returns (`?limit=` of tasks and of reputation history).
const MAX_LIMIT: u32 = 1000;

/// `?limit=`: `default` when absent; outside 1 to [`MAX_LIMIT`] it is refused, as the spec says.
fn checked_limit(limit: Option<u32>, default: u32) -> Result<u32, Failure> {
    match limit {
        None => Ok(default),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(n) => Err(Failure::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            format!("limit is {n}; it must be between 1 and {MAX_LIMIT}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    /// `?limit=` outside 1 to 1000 is refused, not clamped; absent gives the default.
    #[test]
    fn limits_out_of_range_are_refused() {
        assert_eq!(super::checked_limit(None, 100).ok(), Some(100));
        assert_eq!(super::checked_limit(Some(1), 100).ok(), Some(1));
        assert_eq!(super::checked_limit(Some(1000), 100).ok(), Some(1000));
        for bad in [0, 1001, u32::MAX] {
            let e = super::checked_limit(Some(bad), 100).err().unwrap();
            assert_eq!(e.0, axum::http::StatusCode::BAD_REQUEST);
            assert_eq!(e.1.error, "invalid_query");
        }
    }

    /// Every route the router serves is documented in the OpenAPI file, with its methods.
    #[test]
    fn openapi_lists_every_route() {
        let spec: serde_json::Value = serde_json::from_str(super::OPENAPI).unwrap();
        let routes = [
            ("/api/v1/tasks", "post"),
            ("/api/v1/tasks", "get"),
            ("/api/v1/tasks/{id}", "get"),
            ("/api/v1/tasks/{id}", "delete"),
            ("/api/v1/blobs", "put"),
            ("/api/v1/blobs/{sha256}", "get"),
            ("/api/v1/nodes", "get"),
            ("/api/v1/nodes/{id}", "get"),
            ("/api/v1/nodes/{id}/reputation", "get"),
            ("/api/v1/proofs/{id}", "get"),
            ("/api/v1/proofs/verify", "post"),
            ("/api/v1/circuits", "get"),
            ("/api/v1/templates", "get"),
            ("/api/v1/templates/{name}/render", "post"),
            ("/api/v1/events", "get"),
            ("/api/v1/join", "post"),
            ("/api/v1/admin/tokens", "post"),
            ("/api/v1/admin/tokens", "get"),
            ("/api/v1/admin/tokens/{id}", "delete"),
            ("/api/v1/admin/nodes/{id}/revoke", "post"),
            ("/api/v1/account", "get"),
            ("/api/v1/account/ledger", "get"),
            ("/api/v1/leaderboard", "get"),
            ("/api/v1/prices", "get"),
            ("/api/v1/admin/accounts", "post"),
            ("/api/v1/admin/accounts", "get"),
            ("/api/v1/admin/accounts/{name}/keys", "post"),
            ("/api/v1/admin/accounts/{name}/grant", "post"),
            ("/api/v1/admin/accounts/{name}/limits", "put"),
            ("/api/v1/admin/keys", "get"),
            ("/api/v1/admin/keys/{id}", "delete"),
            ("/api/v1/admin/ledger", "get"),
            ("/api/v1/health", "get"),
            ("/metrics", "get"),
            ("/api-docs/openapi.json", "get"),
        ];
        for (path, method) in routes {
            assert!(
                spec["paths"][path][method].is_object(),
                "{method} {path} undocumented"
            );
        }
        let documented: usize = spec["paths"]
            .as_object()
            .unwrap()
            .values()
            .map(|m| m.as_object().unwrap().len())
            .sum();
        assert_eq!(
            documented,
            routes.len(),
            "the spec documents a route that does not exist"
        );
    }
}
