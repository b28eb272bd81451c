//! The one error type of the app. Commands return it to the webview, serialized as
//! `{"error": code, "message": text}`, the same shape the agent's control API uses, so the
//! frontend handles both the same way.

use std::path::PathBuf;

use serde::ser::SerializeStruct;

/// What can go wrong talking to the agent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No `control.json`: the agent is not running on this machine (or runs as another user).
    #[error(
        "No agent is running: {path} does not exist. Start one with `ambient-agent run --config \
         agent.toml` (see \"For home users\" in the README)."
    )]
    NoAgent {
        /// Where the app looked.
        path: PathBuf,
    },
    /// `control.json` exists but cannot be read or parsed.
    #[error("cannot read {path}: {reason}")]
    BadControlFile {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The agent's port did not answer (the agent stopped, and left its control file behind).
    #[error("The agent at {url} does not answer ({reason}). Is `ambient-agent` running?")]
    Unreachable {
        /// The control API's URL.
        url: String,
        /// The transport error.
        reason: String,
    },
    /// The agent answered with an error body.
    #[error("{message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The agent's error code (`invalid_settings`, `unauthorized`, …).
        code: String,
        /// The agent's message.
        message: String,
    },
}

impl Error {
    /// The stable, machine-readable code the frontend switches on.
    pub fn code(&self) -> &str {
        match self {
            Error::NoAgent { .. } => "no_agent",
            Error::BadControlFile { .. } => "bad_control_file",
            Error::Unreachable { .. } => "agent_unreachable",
            Error::Api { code, .. } => code,
        }
    }
}

impl serde::Serialize for Error {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Error", 3)?;
        st.serialize_field("error", self.code())?;
        st.serialize_field("message", &self.to_string())?;
        st.serialize_field(
            "status",
            &match self {
                Error::Api { status, .. } => Some(*status),
                _ => None,
            },
        )?;
        st.end()
    }
}
