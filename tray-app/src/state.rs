//! The one managed state of the app.

use std::sync::{Arc, Mutex};

use crate::agent::Client;
use crate::tray::TrayHandles;

/// Shared by commands, the tray's menu handlers and its poller.
pub struct AppState {
    /// The agent's control API.
    pub client: Arc<Client>,
    /// The tray's menu items and what they show now; `None` until the tray is built.
    pub tray: Mutex<Option<TrayHandles>>,
}

impl AppState {
    /// State for a client.
    pub fn new(client: Client) -> AppState {
        AppState {
            client: Arc::new(client),
            tray: Mutex::new(None),
        }
    }
}
