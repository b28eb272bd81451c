//! `ambient-agent join TOKEN`: a node joins a network in one step.
//!
//! It makes the node's identity key, proves it to the coordinator in the join request (signed
//! with that key), receives its node id and broker password, stores both secrets (OS keyring,
//! else 0600 files: [`crate::creds`]) and writes a complete configuration, so that
//! `ambient-agent run --config PATH` works with no edit.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ambient_protocol::join::{self, JoinGrant, JoinRequest, JoinToken, TokenError};
use ambient_protocol::{ApiError, NodeKey};

use crate::config::{Config, EXAMPLE};
use crate::creds::{self, CredsError, Source};

/// Why joining failed.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The token does not read.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The configuration file exists already.
    #[error(
        "{0} exists: this machine has joined already (remove it, or give another --config, to \
         join again)"
    )]
    Exists(PathBuf),
    /// The coordinator could not be reached.
    #[error("cannot reach the coordinator at {url}: {error}")]
    Unreachable {
        /// Its URL.
        url: String,
        /// Why.
        error: String,
    },
    /// The coordinator said no.
    #[error("the coordinator refused to enrol this node: {} ({})", .0.message, .0.error)]
    Refused(ApiError),
    /// A secret could not be stored.
    #[error(transparent)]
    Creds(#[from] CredsError),
    /// The configuration could not be written.
    #[error("writing {path}: {error}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        error: String,
    },
}

/// What a join did.
#[derive(Debug)]
pub struct Joined {
    /// The node id the coordinator gave.
    pub node_id: String,
    /// The configuration written.
    pub config: PathBuf,
    /// Where the secrets went.
    pub secrets: Source,
}

/// Joins with `token`, keeping data in `data_dir`, and writes the configuration to `config`.
/// `name` is a name for people (the host name by default).
pub async fn join(
    token: &str,
    config: &Path,
    data_dir: &Path,
    name: Option<String>,
) -> Result<Joined, JoinError> {
    let token = JoinToken::decode(token)?;
    if config.exists() {
        return Err(JoinError::Exists(config.to_owned()));
    }
    let key = NodeKey::generate();
    let ed25519 = key.identity("").ed25519;
    let time = chrono::Utc::now().timestamp();
    let signature = hex::encode(key.sign(&join::join_message(&token.id, &ed25519, time)));
    let request = JoinRequest {
        token: token.id.clone(),
        secret: token.secret.clone(),
        ed25519,
        name,
        time,
        signature,
    };
    let grant = request_grant(&token.api, &request).await?;

    let (node, dir, password) = (
        grant.node_id.clone(),
        data_dir.to_owned(),
        grant.mqtt_password.clone(),
    );
    // Keyring calls block (D-Bus).
    let secrets = tokio::task::spawn_blocking(move || -> Result<Source, CredsError> {
        ambient_service::private::create_dir(&dir).map_err(|source| CredsError::File {
            path: dir.clone(),
            source,
        })?;
        creds::store_identity(&node, &dir, &key)?;
        creds::store(&node, &dir, &password)
    })
    .await
    .map_err(|e| JoinError::Write {
        path: data_dir.to_owned(),
        error: e.to_string(),
    })??;
    write_config(config, &grant, data_dir)?;
    Ok(Joined {
        node_id: grant.node_id,
        config: config.to_owned(),
        secrets,
    })
}

async fn request_grant(api: &str, request: &JoinRequest) -> Result<JoinGrant, JoinError> {
    let url = format!("{}/api/v1/join", api.trim_end_matches('/'));
    let unreachable = |e: reqwest::Error| JoinError::Unreachable {
        url: api.to_string(),
        error: e.to_string(),
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(unreachable)?;
    let resp = http
        .post(&url)
        .json(request)
        .send()
        .await
        .map_err(unreachable)?;
    let status = resp.status();
    let text = resp.text().await.map_err(unreachable)?;
    if status.is_success() {
        return serde_json::from_str(&text).map_err(|e| JoinError::Unreachable {
            url: api.to_string(),
            error: format!("an answer that is not a join grant: {e}"),
        });
    }
    Err(JoinError::Refused(serde_json::from_str(&text).unwrap_or(
        ApiError::new(format!("http_{}", status.as_u16()), text),
    )))
}

/// The configuration of a joined node: the bundled example's settings with the node's id, data
/// dir, coordinator and brokers, and no password (it is in the keyring or the 0600 file).
fn write_config(path: &Path, grant: &JoinGrant, data_dir: &Path) -> Result<(), JoinError> {
    let fail = |error: String| JoinError::Write {
        path: path.to_owned(),
        error,
    };
    let mut cfg: Config = toml::from_str(EXAMPLE).expect("the bundled example parses");
    cfg.node_id = grant.node_id.clone();
    cfg.data_dir = data_dir.to_owned();
    cfg.coordinator_url = Some(grant.coordinator_url.clone());
    let brokers = ambient_link::parse_failover(&grant.brokers).map_err(fail)?;
    let Some((host, port)) = brokers.first().cloned() else {
        return Err(fail("the coordinator gave no broker address".into()));
    };
    cfg.mqtt.host = host;
    cfg.mqtt.port = port;
    cfg.mqtt.password = None;
    cfg.mqtt.failover = grant.brokers[1..].to_vec();
    let text = toml::to_string_pretty(&cfg).map_err(|e| fail(e.to_string()))?;
    let header = format!(
        "# Written by `ambient-agent join` on {}. Every field is documented in\n\
         # `ambient-agent generate-config`. The broker password and the identity key are in the\n\
         # OS keyring, or in {}/credentials (mode 0600).\n\n",
        chrono::Utc::now().format("%Y-%m-%d"),
        data_dir.display()
    );
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
    }
    std::fs::write(path, header + &text).map_err(|e| fail(e.to_string()))
}
