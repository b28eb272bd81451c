//! The agent's local control API, as the app sees it: find `control.json`, then make authorized
//! JSON calls to the URL it names.
//!
//! The file is read again on every call, because the agent writes a new port and token each time
//! it starts. Bodies other than the status fields the tray needs pass through as JSON, so the
//! agent stays the one place that knows and validates the settings.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::error::Error;

/// The environment variable that names the control file.
pub const CONTROL_ENV: &str = "AMBIENT_AGENT_CONTROL";

/// The contents of `<agent data_dir>/control.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct ControlFile {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    /// The bearer token.
    pub token: String,
}

/// The fields of `GET /v1/status` that the tray icon and menu show.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct StatusSummary {
    /// The policy lets the agent take work now.
    #[serde(default)]
    pub contributing: bool,
    /// Why not, when it does not.
    #[serde(default)]
    pub paused_reasons: Vec<String>,
    /// The agent is connected to its broker.
    #[serde(default)]
    pub connected: bool,
    /// Tasks finished since the agent started its journal.
    #[serde(default)]
    pub tasks_done: u64,
    /// The master switch (from `settings.enabled`).
    #[serde(default)]
    pub settings: SettingsSummary,
}

/// The one setting the tray reads.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SettingsSummary {
    /// The master on/off switch.
    #[serde(default)]
    pub enabled: bool,
}

/// Candidate control files, most specific first: `--control <path>`, then `AMBIENT_AGENT_CONTROL`,
/// then the per-user default data directory, then the system service's.
pub fn candidates(arg: Option<PathBuf>, env: Option<PathBuf>) -> Vec<PathBuf> {
    if let Some(p) = arg.or(env) {
        return vec![p];
    }
    let mut v = Vec::new();
    if let Some(dir) = user_data_dir() {
        v.push(dir.join("ambient-agent").join("control.json"));
    }
    #[cfg(unix)]
    v.push(PathBuf::from("/var/lib/ambient/agent/control.json"));
    v
}

/// The per-user data directory: `$XDG_DATA_HOME` or `~/.local/share` on Linux,
/// `~/Library/Application Support` on macOS, `%LOCALAPPDATA%` on Windows.
fn user_data_dir() -> Option<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    #[cfg(target_os = "windows")]
    {
        var("LOCALAPPDATA")
    }
    #[cfg(target_os = "macos")]
    {
        var("HOME").map(|h| h.join("Library").join("Application Support"))
    }
    #[cfg(not(any(target_os = "windows", target_os = "macos")))]
    {
        var("XDG_DATA_HOME").or_else(|| var("HOME").map(|h| h.join(".local").join("share")))
    }
}

/// A client for whichever agent the control files point at.
pub struct Client {
    candidates: Vec<PathBuf>,
    http: ureq::Agent,
}

impl Client {
    /// A client that looks at `candidates` (see [`candidates`]).
    pub fn new(candidates: Vec<PathBuf>) -> Client {
        let http = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .timeout_global(Some(Duration::from_secs(3)))
            .build()
            .into();
        Client { candidates, http }
    }

    /// The control file in use: the first candidate that exists, else the first one.
    pub fn control_path(&self) -> PathBuf {
        self.candidates
            .iter()
            .find(|p| p.exists())
            .or(self.candidates.first())
            .cloned()
            .unwrap_or_else(|| PathBuf::from("control.json"))
    }

    fn control(&self) -> Result<ControlFile, Error> {
        let path = self.control_path();
        read_control(&path)
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> Result<Value, Error> {
        self.call("GET", path, None)
    }

    /// `POST path` or `PUT path` with a JSON body.
    pub fn send(&self, method: &str, path: &str, body: &Value) -> Result<Value, Error> {
        self.call(method, path, Some(body))
    }

    /// The status fields the tray shows.
    pub fn status_summary(&self) -> Result<StatusSummary, Error> {
        let v = self.get("/v1/status")?;
        serde_json::from_value(v).map_err(|e| Error::Api {
            status: 200,
            code: "bad_response".into(),
            message: format!("the agent's status is not what this app understands: {e}"),
        })
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, Error> {
        let ctl = self.control()?;
        let url = format!("{}{}", ctl.url.trim_end_matches('/'), path);
        let auth = format!("Bearer {}", ctl.token);
        let unreachable = |e: ureq::Error| Error::Unreachable {
            url: ctl.url.clone(),
            reason: e.to_string(),
        };
        let mut resp = match (method, body) {
            ("GET", _) => self.http.get(&url).header("Authorization", &auth).call(),
            ("POST", Some(b)) => self
                .http
                .post(&url)
                .header("Authorization", &auth)
                .send_json(b),
            (_, Some(b)) => self
                .http
                .put(&url)
                .header("Authorization", &auth)
                .send_json(b),
            (_, None) => self.http.delete(&url).header("Authorization", &auth).call(),
        }
        .map_err(unreachable)?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| Error::Unreachable {
                url: ctl.url.clone(),
                reason: e.to_string(),
            })?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if (200..300).contains(&status) {
            return Ok(value);
        }
        let field = |k: &str| value.get(k).and_then(Value::as_str).map(str::to_owned);
        Err(Error::Api {
            status,
            code: field("error").unwrap_or_else(|| format!("http_{status}")),
            message: field("message")
                .or_else(|| field("error"))
                .unwrap_or_else(|| format!("the agent answered HTTP {status}")),
        })
    }
}

/// Reads and parses a control file.
pub fn read_control(path: &Path) -> Result<ControlFile, Error> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::NoAgent {
                path: path.to_owned(),
            });
        }
        Err(e) => {
            return Err(Error::BadControlFile {
                path: path.to_owned(),
                reason: e.to_string(),
            });
        }
    };
    serde_json::from_str(&text).map_err(|e| Error::BadControlFile {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_path_wins_over_defaults() {
        let c = candidates(
            Some("/a/control.json".into()),
            Some("/b/control.json".into()),
        );
        assert_eq!(c, vec![PathBuf::from("/a/control.json")]);
        let c = candidates(None, Some("/b/control.json".into()));
        assert_eq!(c, vec![PathBuf::from("/b/control.json")]);
    }

    #[test]
    fn missing_control_file_means_no_agent() {
        let dir = std::env::temp_dir().join(format!("tray-test-{}", std::process::id()));
        let err = read_control(&dir.join("control.json")).unwrap_err();
        assert_eq!(err.code(), "no_agent");
        assert!(err.to_string().contains("ambient-agent run"));
    }

    #[test]
    fn error_serializes_like_the_agent() {
        let e = Error::Api {
            status: 400,
            code: "invalid_settings".into(),
            message: "idle_minutes must be 1..=1440".into(),
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["error"], "invalid_settings");
        assert_eq!(v["message"], "idle_minutes must be 1..=1440");
        assert_eq!(v["status"], 400);
    }

    #[test]
    fn unreachable_agent_is_a_clear_error() {
        // A port nothing listens on: bind, learn it, drop.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("tray-unreach-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("control.json");
        std::fs::write(
            &path,
            format!(r#"{{"url":"http://127.0.0.1:{port}","token":"00"}}"#),
        )
        .unwrap();
        let err = Client::new(vec![path]).get("/v1/status").unwrap_err();
        assert_eq!(err.code(), "agent_unreachable");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
