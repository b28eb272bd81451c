//! The commands the dashboard calls, all registered in [`handler`]. Each one is a thin,
//! authorized call to the agent's control API, made on a blocking thread (the HTTP client is
//! synchronous) so the UI thread never waits on the network.

use std::sync::Arc;

use serde_json::{Value, json};
use tauri::{AppHandle, State};

use crate::agent::Client;
use crate::error::Error;
use crate::state::AppState;
use crate::tray;

/// Every command of the app, for `Builder::invoke_handler`.
pub fn handler() -> impl Fn(tauri::ipc::Invoke) -> bool + Send + Sync + 'static {
    tauri::generate_handler![
        status,
        toggle,
        get_settings,
        put_settings,
        reputation,
        agent_info,
        join
    ]
}

async fn blocking<T: Send + 'static>(
    client: &Arc<Client>,
    f: impl FnOnce(&Client) -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    let client = Arc::clone(client);
    tauri::async_runtime::spawn_blocking(move || f(&client))
        .await
        .unwrap_or_else(|e| {
            Err(Error::Unreachable {
                url: String::new(),
                reason: format!("worker failed: {e}"),
            })
        })
}

/// `GET /v1/status`.
#[tauri::command]
pub async fn status(state: State<'_, AppState>) -> Result<Value, Error> {
    blocking(&state.client, |c| c.get("/v1/status")).await
}

/// `POST /v1/toggle`; the tray follows at once.
#[tauri::command]
pub async fn toggle(
    app: AppHandle,
    state: State<'_, AppState>,
    enabled: bool,
) -> Result<Value, Error> {
    let r = blocking(&state.client, move |c| {
        c.send("POST", "/v1/toggle", &json!({ "enabled": enabled }))
    })
    .await;
    tray::refresh_soon(&app);
    r
}

/// `GET /v1/settings`.
#[tauri::command]
pub async fn get_settings(state: State<'_, AppState>) -> Result<Value, Error> {
    blocking(&state.client, |c| c.get("/v1/settings")).await
}

/// `PUT /v1/settings` with the whole settings object; the agent validates it.
#[tauri::command]
pub async fn put_settings(
    app: AppHandle,
    state: State<'_, AppState>,
    settings: Value,
) -> Result<Value, Error> {
    let r = blocking(&state.client, move |c| {
        c.send("PUT", "/v1/settings", &settings)
    })
    .await;
    tray::refresh_soon(&app);
    r
}

/// `GET /v1/reputation`.
#[tauri::command]
pub async fn reputation(state: State<'_, AppState>) -> Result<Value, Error> {
    blocking(&state.client, |c| c.get("/v1/reputation")).await
}

/// `POST /v1/join` with a pasted token: an agent waiting for its first join
/// (`run --wait-for-join`) enrols this computer, then starts contributing.
#[tauri::command]
pub async fn join(
    app: AppHandle,
    state: State<'_, AppState>,
    token: String,
) -> Result<Value, Error> {
    let r = blocking(&state.client, move |c| {
        c.send("POST", "/v1/join", &json!({ "token": token.trim() }))
    })
    .await;
    tray::refresh_soon(&app);
    r
}

/// Where the app looks for the agent, for the "no agent" help text.
#[tauri::command]
pub fn agent_info(state: State<'_, AppState>) -> Value {
    json!({ "control_path": state.client.control_path() })
}
