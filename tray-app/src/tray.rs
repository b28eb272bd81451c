//! The tray icon and its menu, and the poller that keeps them true to the agent every 2 s.
//!
//! The icon has three looks: contributing (green, play), paused (amber, pause bars) and
//! disconnected (grey, struck through: no agent, or an agent cut off from its broker). The menu
//! is: a status line, the toggle, a reputation line, "Open dashboard" and "Quit".

use std::time::Duration;

use serde_json::json;
use tauri::image::Image;
use tauri::menu::{Menu, MenuItem, PredefinedMenuItem};
use tauri::tray::TrayIconBuilder;
use tauri::{AppHandle, Manager, WebviewUrl, WebviewWindowBuilder, Wry};

use crate::agent::Client;
use crate::error::Error;
use crate::state::AppState;

/// The tray icon's id.
pub const TRAY_ID: &str = "ambient";
/// The dashboard window's label (the capability names it).
pub const DASHBOARD: &str = "dashboard";
/// How often the tray asks the agent.
pub const POLL: Duration = Duration::from_secs(2);

const ICON_CONTRIBUTING: &[u8] = include_bytes!("../icons/tray-contributing.png");
const ICON_PAUSED: &[u8] = include_bytes!("../icons/tray-paused.png");
const ICON_DISCONNECTED: &[u8] = include_bytes!("../icons/tray-disconnected.png");

/// The three states the icon shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Look {
    /// The agent takes work.
    Contributing,
    /// The user or the policy paused it.
    Paused,
    /// No agent, or the agent has no broker connection.
    Disconnected,
}

impl Look {
    fn icon(self) -> &'static [u8] {
        match self {
            Look::Contributing => ICON_CONTRIBUTING,
            Look::Paused => ICON_PAUSED,
            Look::Disconnected => ICON_DISCONNECTED,
        }
    }
}

/// Everything the tray shows, computed from the agent's answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    /// The icon.
    pub look: Look,
    /// The first, disabled menu line, also the tooltip.
    pub status_line: String,
    /// "Pause contributing" or "Resume contributing".
    pub toggle_label: String,
    /// False when there is no agent to toggle.
    pub toggle_enabled: bool,
    /// "Reputation 87 · 120 tasks · 0.42 credits".
    pub reputation_line: String,
}

/// The menu items the poller rewrites, and what they show now.
pub struct TrayHandles {
    status: MenuItem<Wry>,
    toggle: MenuItem<Wry>,
    reputation: MenuItem<Wry>,
    shown: Option<View>,
}

/// Asks the agent and computes the view. Never fails: a missing or silent agent is a view too.
pub fn compute_view(client: &Client) -> View {
    let status = match client.status_summary() {
        Ok(s) => s,
        Err(e) => {
            return View {
                look: Look::Disconnected,
                status_line: match e {
                    // A stopped agent leaves control.json behind: both mean "not running".
                    Error::NoAgent { .. } | Error::Unreachable { .. } => {
                        "Agent not running".to_string()
                    }
                    Error::Api { code, .. } if code == "not_joined" => {
                        "Not joined: open the dashboard to join a network".to_string()
                    }
                    other => format!("Agent error: {}", other.code()),
                },
                toggle_label: "Pause contributing".to_string(),
                toggle_enabled: false,
                reputation_line: "Reputation: unknown".to_string(),
            };
        }
    };
    let look = if !status.connected {
        Look::Disconnected
    } else if status.contributing {
        Look::Contributing
    } else {
        Look::Paused
    };
    let status_line = match look {
        Look::Disconnected => "Not connected to the network".to_string(),
        Look::Contributing => "Contributing".to_string(),
        Look::Paused if status.paused_reasons.is_empty() => "Paused".to_string(),
        Look::Paused => format!("Paused: {}", status.paused_reasons.join("; ")),
    };
    let tasks = status.tasks_done;
    let reputation_line = match client.get("/v1/reputation") {
        Ok(r) => match r["reputation"]["score"].as_f64() {
            Some(score) => {
                // µcredits, as the coordinator counts them.
                let earned = r["credits"]["total"].as_f64().unwrap_or(0.0) / 1e6;
                format!("Reputation {score:.0} · {tasks} tasks · {earned:.2} credits")
            }
            None => format!("Reputation: none yet · {tasks} tasks"),
        },
        Err(_) => format!("Reputation: none yet · {tasks} tasks"),
    };
    View {
        look,
        status_line,
        toggle_label: if status.settings.enabled {
            "Pause contributing"
        } else {
            "Resume contributing"
        }
        .to_string(),
        toggle_enabled: true,
        reputation_line,
    }
}

/// Builds the tray icon and its menu, and starts the poller.
pub fn build(app: &AppHandle) -> tauri::Result<()> {
    let status = MenuItem::with_id(app, "status", "Looking for the agent…", false, None::<&str>)?;
    let toggle = MenuItem::with_id(app, "toggle", "Pause contributing", false, None::<&str>)?;
    let reputation = MenuItem::with_id(
        app,
        "reputation",
        "Reputation: unknown",
        false,
        None::<&str>,
    )?;
    let open = MenuItem::with_id(app, "open", "Open dashboard", true, None::<&str>)?;
    let quit = MenuItem::with_id(app, "quit", "Quit", true, None::<&str>)?;
    let menu = Menu::with_items(
        app,
        &[
            &status,
            &toggle,
            &reputation,
            &PredefinedMenuItem::separator(app)?,
            &open,
            &quit,
        ],
    )?;
    TrayIconBuilder::with_id(TRAY_ID)
        .icon(Image::from_bytes(Look::Disconnected.icon())?)
        .tooltip("Ambient VCP")
        .menu(&menu)
        .show_menu_on_left_click(true)
        .on_menu_event(|app, event| on_menu(app, event.id().as_ref()))
        .build(app)?;
    *lock(app) = Some(TrayHandles {
        status,
        toggle,
        reputation,
        shown: None,
    });
    let poller = app.clone();
    std::thread::Builder::new()
        .name("tray-poll".into())
        .spawn(move || {
            loop {
                refresh(&poller);
                std::thread::sleep(POLL);
            }
        })?;
    Ok(())
}

fn lock(app: &AppHandle) -> std::sync::MutexGuard<'_, Option<TrayHandles>> {
    app.state::<AppState>()
        .inner()
        .tray
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// What the menu items do.
fn on_menu(app: &AppHandle, id: &str) {
    match id {
        "toggle" => {
            let app = app.clone();
            // Off the UI thread: the agent may take a moment.
            std::thread::spawn(move || {
                let client = app.state::<AppState>().client.clone();
                let enabled = client
                    .status_summary()
                    .map(|s| s.settings.enabled)
                    .unwrap_or(false);
                if let Err(e) = client.send("POST", "/v1/toggle", &json!({ "enabled": !enabled })) {
                    eprintln!("ambient-tray: toggle failed: {e}");
                }
                refresh(&app);
            });
        }
        "open" => {
            if let Err(e) = open_dashboard(app) {
                eprintln!("ambient-tray: cannot open the dashboard: {e}");
            }
        }
        "quit" => app.exit(0),
        _ => {}
    }
}

/// Asks the agent now and updates the icon and menu when something changed.
pub fn refresh(app: &AppHandle) {
    let view = compute_view(&app.state::<AppState>().client);
    let mut guard = lock(app);
    let Some(handles) = guard.as_mut() else {
        return;
    };
    if handles.shown.as_ref() == Some(&view) {
        return;
    }
    if let Err(e) = apply(app, handles, &view) {
        eprintln!("ambient-tray: cannot update the tray: {e}");
        return;
    }
    handles.shown = Some(view);
}

/// Refreshes on another thread (after a command changed the agent's state).
pub fn refresh_soon(app: &AppHandle) {
    let app = app.clone();
    std::thread::spawn(move || refresh(&app));
}

fn apply(app: &AppHandle, h: &TrayHandles, view: &View) -> tauri::Result<()> {
    if h.shown.as_ref().map(|v| v.look) != Some(view.look)
        && let Some(tray) = app.tray_by_id(TRAY_ID)
    {
        tray.set_icon(Some(Image::from_bytes(view.look.icon())?))?;
        tray.set_tooltip(Some(format!("Ambient VCP: {}", view.status_line)))?;
    }
    h.status.set_text(&view.status_line)?;
    h.toggle.set_text(&view.toggle_label)?;
    h.toggle.set_enabled(view.toggle_enabled)?;
    h.reputation.set_text(&view.reputation_line)?;
    Ok(())
}

/// Shows the dashboard, creating its window on first use. The webview only exists while the
/// window is open, so the tray alone stays small.
pub fn open_dashboard(app: &AppHandle) -> tauri::Result<()> {
    if let Some(w) = app.get_webview_window(DASHBOARD) {
        w.show()?;
        w.set_focus()?;
        return Ok(());
    }
    WebviewWindowBuilder::new(app, DASHBOARD, WebviewUrl::App("index.html".into()))
        .title("Ambient VCP")
        .inner_size(960.0, 800.0)
        .min_inner_size(420.0, 480.0)
        .build()?;
    Ok(())
}
