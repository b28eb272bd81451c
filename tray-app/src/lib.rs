//! Ambient VCP tray app (Tauri v2): a tray icon that shows whether this machine contributes,
//! with a toggle and its reputation, and a dashboard window for status, reputation history and
//! the contribution policy. It talks only to the local agent's control API (see
//! `docs/control-api.md`), whose address and token it reads from the agent's `control.json`.
//!
//! # Layout
//! - [`agent`]: finding `control.json` and calling the control API.
//! - [`commands`]: the commands the dashboard invokes, in one `generate_handler!`.
//! - [`tray`]: the icon, its menu and the 2 s poller.
//! - [`state`]: the one managed [`state::AppState`].
//! - [`error`]: the command error type.
//!
//! Usage: `ambient-tray [--control PATH] [--dashboard]`. `--control` (or the environment
//! variable `AMBIENT_AGENT_CONTROL`) names the agent's control file; `--dashboard` opens the
//! dashboard at start.

pub mod agent;
pub mod commands;
pub mod error;
pub mod state;
pub mod tray;

use std::path::PathBuf;

use tauri::RunEvent;

/// Command-line options.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Args {
    /// `--control PATH`.
    pub control: Option<PathBuf>,
    /// `--dashboard`.
    pub dashboard: bool,
}

/// Parses `--control PATH` and `--dashboard`; anything else is an error message.
pub fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let mut out = Args::default();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--control" => {
                out.control = Some(it.next().ok_or("--control needs a path")?.into());
            }
            "--dashboard" => out.dashboard = true,
            other => {
                return Err(format!(
                    "unknown argument {other}\nusage: ambient-tray [--control PATH] [--dashboard]"
                ));
            }
        }
    }
    Ok(out)
}

/// Starts the app and runs until "Quit".
pub fn run() {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let env = std::env::var_os(agent::CONTROL_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    let client = agent::Client::new(agent::candidates(args.control, env));
    let open_at_start = args.dashboard;
    let app = tauri::Builder::default()
        .manage(state::AppState::new(client))
        .invoke_handler(commands::handler())
        .setup(move |app| {
            tray::build(app.handle())?;
            if open_at_start {
                tray::open_dashboard(app.handle())?;
            }
            Ok(())
        })
        .build(tauri::generate_context!())
        .expect("cannot start the tray app");
    app.run(|_, event| {
        // Closing the dashboard leaves the tray running; only "Quit" (exit with a code) ends it.
        if let RunEvent::ExitRequested {
            code: None, api, ..
        } = event
        {
            api.prevent_exit();
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Result<Args, String> {
        parse_args(v.iter().map(|s| s.to_string()))
    }

    #[test]
    fn parses_control_and_dashboard() {
        assert_eq!(
            args(&["--control", "/x/control.json", "--dashboard"]).unwrap(),
            Args {
                control: Some("/x/control.json".into()),
                dashboard: true
            }
        );
        assert!(args(&["--control"]).is_err());
        assert!(args(&["--bogus"]).unwrap_err().contains("usage"));
    }
}
