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
//! | `GET /api/v1/circuits` | key | supported circuits and their snarkjs verification keys |
//! | `GET /api/v1/health` | none | liveness and broker link |
//! | `GET /metrics` | none | Prometheus |
//! | `GET /api-docs/openapi.json` | none | OpenAPI 3.1 |

use std::sync::Arc;

use ambient_link::LinkState;
use ambient_protocol::{ApiError, NodeInfo, ReputationReport, TaskInfo, TaskStatus, identity};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

use crate::config::{ApiKey, Limits};
use crate::core::CoreMsg;
use crate::intake::{self, SubmitError};
use crate::metrics::Metrics;
use crate::store::Store;

/// The OpenAPI document served at `/api-docs/openapi.json`.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    pub(crate) core: mpsc::Sender<CoreMsg>,
    pub(crate) store: Store,
    pub(crate) limits: Limits,
    pub(crate) keys: Arc<Vec<ApiKey>>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) link: watch::Receiver<LinkState>,
    pub(crate) zk: Arc<crate::zk::Zk>,
    pub(crate) identities: Arc<crate::identity::Identities>,
}

/// The authenticated submitter of a request.
#[derive(Clone)]
struct Submitter(String);

/// An error response.
struct Failure(StatusCode, ApiError);

impl Failure {
    fn new(status: StatusCode, error: &str, message: impl Into<String>) -> Failure {
        Failure(
            status,
            ApiError {
                error: error.into(),
                message: message.into(),
                task_id: None,
            },
        )
    }

    fn unavailable() -> Failure {
        Failure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the coordinator is shutting down",
        )
    }

    fn store(e: crate::store::StoreError) -> Failure {
        tracing::error!(error = %e, "Store query failed.");
        Failure::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.0, Json(self.1)).into_response()
    }
}

impl From<SubmitError> for Failure {
    fn from(e: SubmitError) -> Failure {
        let status =
            StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY);
        Failure(status, e.to_api_error(None))
    }
}

/// Builds the router.
pub fn router(state: AppState) -> Router {
    let authed = Router::new()
        .route("/api/v1/tasks", get(list_tasks).post(submit))
        .route("/api/v1/tasks/{id}", get(get_task).delete(cancel_task))
        .route("/api/v1/blobs", axum::routing::put(put_blob))
        .route("/api/v1/nodes", get(list_nodes))
        .route("/api/v1/nodes/{id}", get(get_node))
        .route("/api/v1/nodes/{id}/reputation", get(get_node_reputation))
        .route("/api/v1/proofs/verify", axum::routing::post(verify_proof))
        .route("/api/v1/proofs/{id}", get(get_proof))
        .route("/api/v1/circuits", get(list_circuits))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    Router::new()
        .merge(authed)
        .route("/api/v1/blobs/{sha256}", get(get_blob))
        .route("/api/v1/health", get(health))
        .route("/metrics", get(metrics))
        .route("/api-docs/openapi.json", get(openapi))
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

async fn authenticate(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Result<Response, Failure> {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let Some(token) = header.and_then(|h| h.strip_prefix("Bearer ")) else {
        return Err(Failure::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing 'Authorization: Bearer <api key>' header",
        ));
    };
    let found = state
        .keys
        .iter()
        .find(|k| constant_time_eq(k.key.as_bytes(), token.trim().as_bytes()));
    let Some(key) = found else {
        return Err(Failure::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "invalid API key",
        ));
    };
    req.extensions_mut()
        .insert(Submitter(key.submitter.clone()));
    Ok(next.run(req).await)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn submit(
    State(state): State<AppState>,
    Extension(Submitter(submitter)): Extension<Submitter>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<TaskInfo>), Failure> {
    let body = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Failure::from(SubmitError::BodyTooLarge {
                size: state.limits.max_body_bytes + 1,
                max: state.limits.max_body_bytes,
            })
        } else {
            Failure::new(r.status(), "bad_request", r.body_text())
        }
    })?;
    let limits = state.limits.clone();
    let checked = tokio::task::spawn_blocking(move || intake::check(&body, &limits))
        .await
        .map_err(|_| Failure::unavailable())?;
    let accepted = checked.inspect_err(|_| Metrics::inc(&state.metrics.submissions_rejected))?;
    crate::mqtt::store_artifact(&state.store, &accepted).await?;
    let (reply, rx) = oneshot::channel();
    state
        .core
        .send(CoreMsg::Submit {
            submitter,
            accepted,
            reply: Some(reply),
        })
        .await
        .map_err(|_| Failure::unavailable())?;
    let info = rx.await.map_err(|_| Failure::unavailable())??;
    Ok((StatusCode::CREATED, Json(info)))
}

/// Stores an artifact by content address. Inference tasks then name it by `model_sha256`.
async fn put_blob(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), Failure> {
    let max = state.limits.max_model_bytes;
    let too_large = |size| Failure::from(SubmitError::ModuleTooLarge { size, max });
    let body = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large(max + 1)
        } else {
            Failure::new(r.status(), "bad_request", r.body_text())
        }
    })?;
    if body.len() > max {
        return Err(too_large(body.len()));
    }
    if body.is_empty() {
        return Err(Failure::new(
            StatusCode::BAD_REQUEST,
            "empty_blob",
            "the body is empty",
        ));
    }
    let sha = ambient_protocol::sha256_hex(&body);
    let size = body.len();
    state
        .store
        .put_blob(sha.clone(), body.to_vec())
        .await
        .map_err(Failure::store)?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({"sha256": sha, "size": size})),
    ))
}

/// Sends a blob to a node. Nodes have no API key: they sign the request with their identity key
/// (headers [`identity::HEADER_NODE`], [`identity::HEADER_TIME`] and
/// [`identity::HEADER_SIGNATURE`] over [`identity::blob_request_message`]), which the coordinator
/// knows from the node's retained identity topic. Blobs are content-addressed, so the agent checks
/// what it gets against the hash it asked for.
async fn get_blob(
    State(state): State<AppState>,
    Path(sha): Path<String>,
    headers: axum::http::HeaderMap,
) -> Result<Response, Failure> {
    let unauthorized = |error: &str, message: String| {
        Metrics::inc(&state.metrics.blob_requests_refused);
        Failure::new(StatusCode::UNAUTHORIZED, error, message)
    };
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(node), Some(time), Some(sig)) = (
        header(identity::HEADER_NODE),
        header(identity::HEADER_TIME),
        header(identity::HEADER_SIGNATURE),
    ) else {
        return Err(unauthorized(
            "unauthorized",
            format!(
                "a blob download must be signed by a node: headers {}, {} and {}",
                identity::HEADER_NODE,
                identity::HEADER_TIME,
                identity::HEADER_SIGNATURE
            ),
        ));
    };
    let now = chrono::Utc::now().timestamp();
    let Some(time) = time
        .parse::<i64>()
        .ok()
        .filter(|t| t.abs_diff(now) <= identity::MAX_CLOCK_SKEW_SECS.unsigned_abs())
    else {
        return Err(unauthorized(
            "stale_request",
            format!(
                "{} must be the Unix time within {} s of the coordinator's clock ({now})",
                identity::HEADER_TIME,
                identity::MAX_CLOCK_SKEW_SECS
            ),
        ));
    };
    let sig = hex::decode(sig).unwrap_or_default();
    let msg = identity::blob_request_message(node, &sha, time);
    if let Err(e) = state.identities.verify(node, &msg, &sig) {
        return Err(unauthorized("bad_signature", e.to_string()));
    }
    if !ambient_protocol::is_sha256_hex(&sha) {
        return Err(Failure::new(
            StatusCode::BAD_REQUEST,
            "invalid_sha256",
            "a blob is named by 64 lower-case hex digits",
        ));
    }
    let Some(bytes) = state
        .store
        .blob(sha.clone())
        .await
        .map_err(Failure::store)?
    else {
        return Err(Failure::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no blob {sha}"),
        ));
    };
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    status: Option<TaskStatus>,
    limit: Option<u32>,
}

async fn list_tasks(
    State(state): State<AppState>,
    Extension(Submitter(submitter)): Extension<Submitter>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<Vec<TaskInfo>>, Failure> {
    let Query(p) = params
        .map_err(|e| Failure::new(StatusCode::BAD_REQUEST, "invalid_query", e.body_text()))?;
    let limit = checked_limit(p.limit, 100)?;
    let tasks = state
        .store
        .tasks_of(submitter, p.status, limit)
        .await
        .map_err(Failure::store)?;
    Ok(Json(tasks.iter().map(|t| t.info()).collect()))
}

fn parse_id(id: &str) -> Result<Uuid, Failure> {
    Uuid::parse_str(id).map_err(|_| {
        Failure::new(
            StatusCode::BAD_REQUEST,
            "invalid_task_id",
            format!("{id:?} is not a task id (a UUID)"),
        )
    })
}

fn task_not_found(id: Uuid) -> Failure {
    Failure::new(
        StatusCode::NOT_FOUND,
        "task_not_found",
        format!("no task {id} for this API key"),
    )
}

async fn get_task(
    State(state): State<AppState>,
    Extension(Submitter(submitter)): Extension<Submitter>,
    Path(id): Path<String>,
) -> Result<Json<TaskInfo>, Failure> {
    let id = parse_id(&id)?;
    match state.store.task(id).await.map_err(Failure::store)? {
        Some(t) if t.submitter == submitter => Ok(Json(t.info())),
        _ => Err(task_not_found(id)),
    }
}

async fn cancel_task(
    State(state): State<AppState>,
    Extension(Submitter(submitter)): Extension<Submitter>,
    Path(id): Path<String>,
) -> Result<Json<TaskInfo>, Failure> {
    let id = parse_id(&id)?;
    let existing = state.store.task(id).await.map_err(Failure::store)?;
    let Some(task) = existing.filter(|t| t.submitter == submitter) else {
        return Err(task_not_found(id));
    };
    if task.status.is_terminal() {
        return Err(Failure::new(
            StatusCode::CONFLICT,
            "task_finished",
            format!("task {id} is already {}", task.status),
        ));
    }
    let (reply, rx) = oneshot::channel();
    state
        .core
        .send(CoreMsg::Cancel {
            task_id: id,
            submitter,
            reply,
        })
        .await
        .map_err(|_| Failure::unavailable())?;
    rx.await
        .map_err(|_| Failure::unavailable())?
        .map_err(|e| Failure::new(StatusCode::CONFLICT, "task_finished", e.to_string()))?;
    match state.store.task(id).await.map_err(Failure::store)? {
        Some(t) => Ok(Json(t.info())),
        None => Err(task_not_found(id)),
    }
}

async fn list_nodes(State(state): State<AppState>) -> Result<Json<Vec<NodeInfo>>, Failure> {
    let (reply, rx) = oneshot::channel();
    state
        .core
        .send(CoreMsg::Nodes(reply))
        .await
        .map_err(|_| Failure::unavailable())?;
    let mut nodes = rx.await.map_err(|_| Failure::unavailable())?;
    for n in &mut nodes {
        n.identity = state.identities.hex(&n.node_id);
    }
    Ok(Json(nodes))
}

async fn get_node(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<NodeInfo>, Failure> {
    node_info(&state, id).await.map(Json)
}

/// `?limit=` of the reputation history (default 100, at most 1000).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    limit: Option<u32>,
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

async fn get_node_reputation(
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Json<ReputationReport>, Failure> {
    let Query(q) =
        query.map_err(|e| Failure::new(StatusCode::BAD_REQUEST, "invalid_query", e.body_text()))?;
    let limit = checked_limit(q.limit, crate::core::REPORT_HISTORY)?;
    let node = node_info(&state, id).await?;
    crate::core::reputation_report(&state.store, node, limit)
        .await
        .map(Json)
        .map_err(Failure::store)
}

async fn node_info(state: &AppState, id: String) -> Result<NodeInfo, Failure> {
    let (reply, rx) = oneshot::channel();
    state
        .core
        .send(CoreMsg::Node(id.clone(), reply))
        .await
        .map_err(|_| Failure::unavailable())?;
    let mut node = rx
        .await
        .map_err(|_| Failure::unavailable())?
        .ok_or_else(|| {
            Failure::new(
                StatusCode::NOT_FOUND,
                "node_not_found",
                format!("no node {id:?} has reported to this coordinator"),
            )
        })?;
    node.identity = state.identities.hex(&id);
    Ok(node)
}

async fn get_proof(
    State(state): State<AppState>,
    Extension(Submitter(submitter)): Extension<Submitter>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, Failure> {
    let not_found = |id: &str| {
        Failure::new(
            StatusCode::NOT_FOUND,
            "proof_not_found",
            format!("no proof {id} for this API key"),
        )
    };
    let Ok(id) = Uuid::parse_str(&id) else {
        return Err(not_found(&id));
    };
    let Some(p) = state.store.proof(id).await.map_err(Failure::store)? else {
        return Err(not_found(&id.to_string()));
    };
    // A proof is visible to whoever may see its task.
    match state.store.task(p.task_id).await.map_err(Failure::store)? {
        Some(t) if t.submitter == submitter => {}
        _ => return Err(not_found(&id.to_string())),
    }
    let circuit = ambient_zk::CircuitId::parse(&p.circuit)
        .and_then(|c| ambient_zk::CircuitSpec::new(c, p.size as usize))
        .ok()
        .and_then(|spec| state.zk.circuit(&spec));
    let proof = ambient_zk::proof_from_bytes(&p.proof)
        .map_err(|e| Failure::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    use base64::Engine as _;
    Ok(Json(serde_json::json!({
        "proof_id": p.id,
        "task_id": p.task_id,
        "circuit": p.circuit,
        "n": p.size,
        "public_inputs": p.public_inputs,
        "proof": base64::engine::general_purpose::STANDARD.encode(&p.proof),
        "verified_at": p.verified_at,
        "snarkjs": {
            // Absent when the circuit is no longer configured here.
            "verification_key": circuit.map(|c| ambient_zk::snarkjs_verification_key_json(&c.vk)),
            "proof": ambient_zk::snarkjs_proof_json(&proof),
            "public": p.public_inputs,
        },
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyRequest {
    circuit: String,
    n: usize,
    public_inputs: Vec<String>,
    proof: String,
}

async fn verify_proof(
    State(state): State<AppState>,
    body: Result<Json<VerifyRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<serde_json::Value>, Failure> {
    use base64::Engine as _;
    let bad = |m: String| Failure::new(StatusCode::BAD_REQUEST, "invalid_request", m);
    let Json(req) = body.map_err(|e| bad(e.body_text()))?;
    let spec = ambient_zk::CircuitId::parse(&req.circuit)
        .and_then(|c| ambient_zk::CircuitSpec::new(c, req.n))
        .map_err(|e| bad(e.to_string()))?;
    let Some(circuit) = state.zk.circuit(&spec) else {
        return Err(Failure::new(
            StatusCode::BAD_REQUEST,
            "unsupported_circuit",
            format!(
                "no keys for {spec}; supported circuits: {}",
                crate::zk::supported_list()
            ),
        ));
    };
    let fields: Vec<ambient_zk::Fr> = req
        .public_inputs
        .iter()
        .map(|s| crate::zk::parse_field(s))
        .collect::<Result<_, _>>()
        .map_err(bad)?;
    let [task_binding, input_commitment, output_commitment] = fields[..] else {
        return Err(bad(format!(
            "public_inputs has {} elements; every circuit takes 3",
            fields.len()
        )));
    };
    let public = ambient_zk::PublicInputs {
        task_binding,
        input_commitment,
        output_commitment,
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(req.proof.trim())
        .map_err(|e| bad(format!("proof is not base64: {e}")))?;
    // A proof that does not decode to curve points is simply not valid.
    let Ok(proof) = ambient_zk::proof_from_bytes(&bytes) else {
        return Ok(Json(serde_json::json!({"valid": false})));
    };
    let verifier = circuit.verifier.clone();
    let valid = tokio::task::spawn_blocking(move || verifier.verify(&public, &proof))
        .await
        .map_err(|_| Failure::unavailable())?
        .unwrap_or(false);
    Ok(Json(serde_json::json!({"valid": valid})))
}

async fn list_circuits(State(state): State<AppState>) -> Json<serde_json::Value> {
    let list: Vec<serde_json::Value> = state
        .zk
        .circuits()
        .iter()
        .map(|c| {
            serde_json::json!({
                "circuit": c.spec.id().name(),
                "n": c.spec.size(),
                "constraints": c.spec.expected_constraints(),
                "proving_key_sha256": c.pk_sha256,
                "proving_key_bytes": c.pk_bytes,
                "verification_key": ambient_zk::snarkjs_verification_key_json(&c.vk),
            })
        })
        .collect();
    Json(serde_json::Value::Array(list))
}

async fn health(State(state): State<AppState>) -> Json<serde_json::Value> {
    use std::sync::atomic::Ordering::Relaxed;
    let link = state.link.borrow().clone();
    let mqtt = match &link {
        LinkState::Connected => "connected".to_string(),
        LinkState::Connecting => "connecting".to_string(),
        LinkState::Refused(e) => format!("refused: {e}"),
        LinkState::Down(e) => format!("down: {e}"),
    };
    Json(serde_json::json!({
        "status": if link == LinkState::Connected { "ok" } else { "degraded" },
        "version": env!("CARGO_PKG_VERSION"),
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

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

async fn not_found() -> Failure {
    Failure::new(StatusCode::NOT_FOUND, "not_found", "no such route")
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
