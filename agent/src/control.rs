//! The local control API: how the tray app (and scripts) see and steer this agent. The contract is
//! `docs/control-api.md`.
//!
//! - Loopback HTTP only (`control.listen` must be a loopback address).
//! - `<data_dir>/control.json` (mode 0600) holds the URL and a bearer token of 32 random bytes
//!   from the OS, made on first start and kept across restarts. Every request must carry
//!   `Authorization: Bearer <token>`, so only the user who can read that file controls the agent.
//! - `GET /v1/status`, `POST /v1/toggle`, `GET`/`PUT /v1/settings`, `GET /v1/reputation`.
//!   Errors are `ambient_protocol::ApiError` JSON.
//! - Responses allow any origin (CORS): the token, not the origin, is the credential, so a web
//!   frontend may call the API directly.
//!
//! The API sees the running agent only through [`Backend`]: status, settings, reputation.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ambient_protocol::{ApiError, ReputationReport, TaskType};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use uuid::Uuid;

use crate::config::ControlConfig;
use crate::policy::{Settings, SettingsError};

/// What the control API needs from the running agent, and nothing more.
pub(crate) trait Backend: Send + Sync + 'static {
    /// What `GET /v1/status` reports.
    fn status(&self) -> impl Future<Output = Status> + Send;
    /// The owner's settings now.
    fn settings(&self) -> Settings;
    /// Replaces the owner's settings; returns once they have taken effect (health published,
    /// tasks handed back).
    fn set_settings(&self, s: Settings) -> impl Future<Output = Result<(), SetError>> + Send;
    /// The latest reputation report the coordinator published to this node.
    fn reputation(&self) -> Option<ReputationReport>;
}

/// What `control.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlInfo {
    /// Base URL, e.g. `http://127.0.0.1:7171`.
    pub url: String,
    /// The bearer token: 64 lower-case hex characters.
    pub token: String,
}

/// `GET /v1/status`, and the answer to `POST /v1/toggle`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Status {
    /// This node's id.
    pub node_id: String,
    /// Whether the policy lets the machine work now.
    pub contributing: bool,
    /// Why not, one sentence per rule; empty when contributing.
    pub paused_reasons: Vec<String>,
    /// Whether the MQTT link to the broker is up.
    pub connected: bool,
    /// Tasks executing now.
    pub running: Vec<RunningInfo>,
    /// Results the coordinator acknowledged, all time (from the journal).
    pub tasks_done: u64,
    /// Resource use now.
    pub resources: Resources,
    /// The owner's settings.
    pub settings: Settings,
}

/// A task executing now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunningInfo {
    /// The task.
    pub task_id: Uuid,
    /// Its kind, e.g. `wasm_execution`.
    pub task_type: TaskType,
    /// When this agent started it.
    pub started_at: DateTime<Utc>,
}

/// Resource use, from the latest telemetry sample (refreshed every health interval).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// Whole-machine CPU use, 0–100.
    pub cpu_usage_pct: f32,
    /// Memory in use on the machine.
    pub mem_used_bytes: u64,
    /// Physical memory.
    pub mem_total_bytes: u64,
    /// Resident memory of the agent process.
    pub agent_rss_bytes: u64,
}

/// `POST /v1/toggle` body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Toggle {
    /// Contribute (true) or pause (false).
    pub enabled: bool,
}

/// Why settings could not be changed.
#[derive(Debug, thiserror::Error)]
pub enum SetError {
    /// A value is out of range.
    #[error(transparent)]
    Invalid(SettingsError),
    /// `settings.json` could not be written.
    #[error("cannot save settings: {0}")]
    Io(std::io::Error),
}

/// `<data_dir>/control.json`.
pub fn control_file(data_dir: &Path) -> PathBuf {
    data_dir.join("control.json")
}

/// A bound control API, not yet serving.
pub(crate) struct Control {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    token: String,
}

impl Control {
    /// Binds (falling back to a free port when the configured one is taken), makes or reuses the
    /// token, and writes `control.json`.
    pub(crate) async fn bind(cfg: &ControlConfig, data_dir: &Path) -> std::io::Result<Control> {
        let listener = match tokio::net::TcpListener::bind(cfg.listen).await {
            Ok(l) => l,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && cfg.listen.port() != 0 => {
                warn!(listen = %cfg.listen, "Control API port taken; using a free one (see control.json).");
                tokio::net::TcpListener::bind(SocketAddr::new(cfg.listen.ip(), 0)).await?
            }
            Err(e) => return Err(e),
        };
        let addr = listener.local_addr()?;
        let path = control_file(data_dir);
        let token = tokio::task::spawn_blocking(move || {
            let token = existing_token(&path).map_or_else(new_token, Ok)?;
            let info = ControlInfo {
                url: format!("http://{addr}"),
                token: token.clone(),
            };
            write_private(&path, &serde_json::to_vec_pretty(&info).unwrap_or_default())?;
            Ok::<_, std::io::Error>(token)
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))??;
        info!(url = %format!("http://{addr}"), "Control API listening.");
        Ok(Control {
            listener,
            addr,
            token,
        })
    }

    /// The bound address.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves `backend` until `shutdown`.
    pub(crate) async fn serve<B: Backend>(self, backend: Arc<B>, shutdown: CancellationToken) {
        let app = router(Arc::new(Api {
            backend,
            token: self.token.clone(),
        }));
        self.serve_router(app, shutdown).await;
    }

    /// The bearer token.
    pub(crate) fn token(&self) -> &str {
        &self.token
    }

    /// Serves `app` until `shutdown`.
    pub(crate) async fn serve_router(self, app: Router, shutdown: CancellationToken) {
        if let Err(e) = axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
        {
            warn!(error = %e, "Control API stopped.");
        }
    }
}

/// The token of an earlier run, when `control.json` holds a well-formed one.
fn existing_token(path: &Path) -> Option<String> {
    let info: ControlInfo = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    (info.token.len() == 64 && info.token.bytes().all(|b| b.is_ascii_hexdigit()))
        .then_some(info.token)
}

/// 32 bytes from the OS's random source, hex.
fn new_token() -> std::io::Result<String> {
    use rand::TryRngCore as _;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| std::io::Error::other(format!("no OS randomness: {e}")))?;
    Ok(hex::encode(bytes))
}

/// Writes a file only its owner can read (0600 on Unix), atomically.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension("json.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

struct Api<B> {
    backend: Arc<B>,
    token: String,
}

type Shared<B> = Arc<Api<B>>;

fn router<B: Backend>(api: Shared<B>) -> Router {
    Router::new()
        .route("/v1/status", get(status::<B>))
        .route("/v1/toggle", post(toggle::<B>))
        .route(
            "/v1/settings",
            get(get_settings::<B>).put(put_settings::<B>),
        )
        .route("/v1/reputation", get(reputation::<B>))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            Arc::<str>::from(api.token.as_str()),
            auth,
        ))
        .with_state(api)
}

pub(crate) fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = ApiError::new(code, message);
    (status, axum::Json(body)).into_response()
}

/// Equal in time independent of where the strings differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Bearer-token check on every request (CORS preflights excepted), and CORS headers on every
/// answer.
pub(crate) async fn auth(State(token): State<Arc<str>>, req: Request, next: Next) -> Response {
    let mut resp = if req.method() == Method::OPTIONS {
        let mut r = StatusCode::NO_CONTENT.into_response();
        let h = r.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, PUT, OPTIONS"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        r
    } else {
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match presented {
            Some(t) if same(t.trim().as_bytes(), token.as_bytes()) => next.run(req).await,
            Some(_) => error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "wrong bearer token; the right one is in control.json in the agent's data dir",
            ),
            None => error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "send Authorization: Bearer <token>; the token is in control.json in the agent's \
                 data dir",
            ),
        }
    };
    resp.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    resp
}

pub(crate) async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint; see docs/control-api.md",
    )
}

pub(crate) async fn method_not_allowed() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method; see docs/control-api.md",
    )
}

async fn status<B: Backend>(State(api): State<Shared<B>>) -> Response {
    axum::Json(api.backend.status().await).into_response()
}

fn set_error(e: SetError) -> Response {
    match e {
        SetError::Invalid(e) => error(StatusCode::BAD_REQUEST, "invalid_settings", e.to_string()),
        SetError::Io(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("cannot save settings: {e}"),
        ),
    }
}

async fn toggle<B: Backend>(State(api): State<Shared<B>>, body: Bytes) -> Response {
    let t: Toggle = match serde_json::from_slice(&body) {
        Ok(t) => t,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!("body must be {{\"enabled\": true|false}}: {e}"),
            );
        }
    };
    let mut s = api.backend.settings();
    s.enabled = t.enabled;
    match api.backend.set_settings(s).await {
        Ok(()) => axum::Json(api.backend.status().await).into_response(),
        Err(e) => set_error(e),
    }
}

async fn get_settings<B: Backend>(State(api): State<Shared<B>>) -> Response {
    axum::Json(api.backend.settings()).into_response()
}

async fn put_settings<B: Backend>(State(api): State<Shared<B>>, body: Bytes) -> Response {
    let s: Settings = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_settings",
                format!("settings must be a JSON object with every field: {e}"),
            );
        }
    };
    match api.backend.set_settings(s).await {
        Ok(()) => axum::Json(api.backend.settings()).into_response(),
        Err(e) => set_error(e),
    }
}

async fn reputation<B: Backend>(State(api): State<Shared<B>>) -> Response {
    match api.backend.reputation() {
        Some(r) => axum::Json(r).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "no_reputation_yet",
            "the coordinator has not published this node's reputation yet",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_is_private_and_the_token_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = control_file(dir.path());
        assert_eq!(existing_token(&path), None);
        let token = new_token().unwrap();
        assert_eq!(token.len(), 64);
        assert_ne!(token, new_token().unwrap());
        let info = ControlInfo {
            url: "http://127.0.0.1:1".into(),
            token: token.clone(),
        };
        write_private(&path, &serde_json::to_vec(&info).unwrap()).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(existing_token(&path), Some(token));
        std::fs::write(&path, r#"{"url":"x","token":"short"}"#).unwrap();
        assert_eq!(existing_token(&path), None, "a malformed token is replaced");
    }

    #[test]
    fn token_comparison() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"abcd"));
    }
}
