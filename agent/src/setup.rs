//! An agent that has not joined a network yet: `ambient-agent run --wait-for-join`, as the
//! desktop package's user service starts it. With no configuration it serves the control API
//! (same `control.json`, same token, same port as afterwards) with two answers only:
//!
//! - `GET /v1/status` → 409 `not_joined`, which the tray app and its dashboard read as "show the
//!   join form";
//! - `POST /v1/join` `{"token": "ambient-join-v1.…"}` → runs [`crate::join::join`] (identity key,
//!   enrolment, secrets, configuration) and answers 201 `{"node_id"}`.
//!
//! Once a join succeeds the setup API stops and the caller runs the agent on the configuration
//! the join wrote. So the person at the computer joins from the dashboard, with no terminal.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use tokio::sync::{Mutex, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::ControlConfig;
use crate::control::{self, Control};
use crate::join::{self, JoinError};

/// Why the setup API could not run.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The data directory or the control API could not be set up.
    #[error("setup: {0}")]
    Io(#[from] std::io::Error),
}

/// `POST /v1/join` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JoinBody {
    token: String,
}

struct Setup {
    config: PathBuf,
    data_dir: PathBuf,
    name: Option<String>,
    /// One join at a time.
    busy: Mutex<()>,
    joined: mpsc::Sender<String>,
}

/// Serves the setup API (control settings `control`, files in `data_dir`) until a node joins,
/// writing its configuration to `config`; returns the node id, or `None` when `shutdown` came
/// first.
pub async fn wait_for_join(
    config: &Path,
    data_dir: &Path,
    control: &ControlConfig,
    name: Option<String>,
    shutdown: CancellationToken,
) -> Result<Option<String>, SetupError> {
    let dir = data_dir.to_owned();
    tokio::task::spawn_blocking(move || ambient_service::private::create_dir(&dir))
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))??;
    let bound = Control::bind(control, data_dir).await?;
    let (joined, mut done) = mpsc::channel(1);
    let state = Arc::new(Setup {
        config: config.to_owned(),
        data_dir: data_dir.to_owned(),
        name,
        busy: Mutex::new(()),
        joined,
    });
    let app = Router::new()
        .route("/v1/status", get(not_joined))
        .route("/v1/join", post(join_now))
        .fallback(control::not_found)
        .method_not_allowed_fallback(control::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            Arc::<str>::from(bound.token()),
            control::auth,
        ))
        .with_state(state);
    let stop = shutdown.child_token();
    let server = tokio::spawn(bound.serve_router(app, stop.clone()));
    info!(config = %config.display(), "Not joined to a network yet: waiting for a join token on the control API.");
    let node = tokio::select! {
        node = done.recv() => node,
        _ = shutdown.cancelled() => None,
    };
    stop.cancel();
    let _ = server.await;
    Ok(node)
}

async fn not_joined() -> Response {
    control::error(
        StatusCode::CONFLICT,
        "not_joined",
        "this computer has not joined a network yet: paste a join token from the network's \
         operator (POST /v1/join {\"token\": \"ambient-join-v1.…\"})",
    )
}

async fn join_now(State(s): State<Arc<Setup>>, body: Bytes) -> Response {
    let Ok(JoinBody { token }) = serde_json::from_slice(&body) else {
        return control::error(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "send {\"token\": \"ambient-join-v1.…\"}",
        );
    };
    let _one = s.busy.lock().await;
    match join::join(&token, &s.config, &s.data_dir, s.name.clone()).await {
        Ok(joined) => {
            info!(node = %joined.node_id, "Joined the network.");
            let _ = s.joined.send(joined.node_id.clone()).await;
            (
                StatusCode::CREATED,
                axum::Json(serde_json::json!({ "node_id": joined.node_id })),
            )
                .into_response()
        }
        Err(e) => {
            let (status, code) = match &e {
                JoinError::Token(_) => (StatusCode::BAD_REQUEST, "invalid_token".to_string()),
                JoinError::Refused(api) => (StatusCode::BAD_REQUEST, api.error.clone()),
                JoinError::Unreachable { .. } => {
                    (StatusCode::BAD_GATEWAY, "network_unreachable".into())
                }
                JoinError::Exists(_) => (StatusCode::CONFLICT, "already_joined".into()),
                JoinError::Creds(_) | JoinError::Write { .. } => {
                    (StatusCode::INTERNAL_SERVER_ERROR, "internal".into())
                }
            };
            control::error(status, &code, e.to_string())
        }
    }
}
