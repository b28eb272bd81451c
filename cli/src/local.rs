//! A whole network in one process: the embedded broker (rumqttd), a coordinator and N agents,
//! with fresh random credentials. Used by `ambient demo`, `ambient up`, the benchmark and tests.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// What a submitter needs to reach a network; `ambient up` writes it to `connection.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Connection {
    /// Base URL of the REST API.
    pub api_url: String,
    /// Bearer key for the REST API.
    pub api_key: String,
    /// The submitter id the key belongs to (also the MQTT username).
    pub submitter: String,
    /// Broker host.
    pub mqtt_host: String,
    /// Broker port.
    pub mqtt_port: u16,
    /// Broker username (the submitter id).
    pub mqtt_username: String,
    /// Broker password.
    pub mqtt_password: String,
    /// The operator's key for the admin API (`ambient token`, `ambient node revoke`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_key: Option<String>,
    /// An enrolment token for 10 more nodes, valid 7 days: `ambient-agent join TOKEN`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_token: Option<String>,
}

/// How to start a local network.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// Data directory (coordinator database, agent journals).
    pub data_dir: PathBuf,
    /// Number of agents.
    pub agents: u32,
    /// REST address.
    pub http_addr: SocketAddr,
    /// Broker address.
    pub mqtt_addr: SocketAddr,
    /// Seconds between agent health reports.
    pub health_interval_sec: f64,
    /// Data sets for federated learning, by agent (agent `i` gets entry `i`; missing: none).
    pub datasets: Vec<Vec<ambient_agent::config::DatasetConfig>>,
    /// The coordinator's store: `None` for the SQLite file in the data directory, or a
    /// PostgreSQL URL (the coordinator's `store` setting).
    pub store: Option<String>,
}

/// A running local network.
pub struct LocalNetwork {
    /// How to reach it.
    pub connection: Connection,
    /// The agents, in order `node-1`, `node-2`, ….
    pub agents: Vec<ambient_agent::Agent>,
    coordinator: ambient_coordinator::Coordinator,
    token: CancellationToken,
}

fn secret() -> String {
    let bytes: [u8; 24] = rand::rng().random();
    hex::encode(bytes)
}

impl LocalNetwork {
    /// Starts broker, coordinator and agents.
    pub async fn start(opts: LocalOptions) -> anyhow::Result<LocalNetwork> {
        let token = CancellationToken::new();
        let submitter = "local".to_string();
        let coordinator_password = secret();
        let submitter_password = secret();
        let nodes: Vec<(String, String)> = (1..=opts.agents)
            .map(|i| (format!("node-{i}"), secret()))
            .collect();
        let mut users = vec![
            ("coordinator".to_string(), coordinator_password.clone()),
            (submitter.clone(), submitter_password.clone()),
        ];
        users.extend(nodes.iter().cloned());
        let broker = ambient_coordinator::broker::start(opts.mqtt_addr, &users)?;
        let mqtt = broker.addr;

        let api_key = secret();
        let admin_key = secret();
        let mut cfg: ambient_coordinator::Config =
            toml::from_str(ambient_coordinator::config::EXAMPLE)?;
        cfg.data_dir = opts.data_dir.join("coordinator");
        cfg.store = opts.store.clone();
        cfg.http_addr = opts.http_addr;
        cfg.mqtt.host = mqtt.ip().to_string();
        cfg.mqtt.port = mqtt.port();
        cfg.mqtt.password = coordinator_password;
        cfg.api_keys = vec![ambient_coordinator::config::ApiKey {
            submitter: submitter.clone(),
            key: api_key.clone(),
        }];
        cfg.admin_keys = vec![admin_key.clone()];
        let coordinator = ambient_coordinator::start_embedded(cfg, &broker, token.clone())
            .await
            .context("starting the coordinator")?;

        let api_url = format!("http://{}", coordinator.http_addr);
        let join_token = crate::client::Client::new(&api_url, &admin_key)
            .create_token(&ambient_protocol::join::TokenRequest {
                uses: Some(10),
                expires_in_sec: None,
                note: Some("written by ambient up".into()),
                operator: None,
            })
            .await
            .context("making the join token")?
            .token;
        let mut agents = Vec::new();
        for (i, (node, password)) in nodes.into_iter().enumerate() {
            let mut cfg = agent_config(
                &opts.data_dir,
                &node,
                mqtt,
                &password,
                &api_url,
                opts.health_interval_sec,
            );
            cfg.datasets = opts.datasets.get(i).cloned().unwrap_or_default();
            agents.push(ambient_agent::start(cfg, token.clone()).await?);
        }
        Ok(LocalNetwork {
            connection: Connection {
                api_url,
                api_key,
                submitter: submitter.clone(),
                mqtt_host: mqtt.ip().to_string(),
                mqtt_port: mqtt.port(),
                mqtt_username: submitter,
                mqtt_password: submitter_password,
                admin_key: Some(admin_key),
                join_token,
            },
            agents,
            coordinator,
            token,
        })
    }

    /// Stops agents cleanly, then the coordinator. (The embedded broker lives until the process
    /// ends: rumqttd cannot be stopped.)
    pub async fn shutdown(self) {
        for a in self.agents {
            a.shutdown().await;
        }
        self.token.cancel();
        self.coordinator.wait().await;
    }
}

/// The configuration of one local agent.
pub fn agent_config(
    data_dir: &Path,
    node: &str,
    mqtt: SocketAddr,
    password: &str,
    coordinator_url: &str,
    health_interval_sec: f64,
) -> ambient_agent::Config {
    let mut cfg: ambient_agent::Config =
        toml::from_str(ambient_agent::config::EXAMPLE).expect("the bundled example parses");
    cfg.node_id = node.to_string();
    cfg.data_dir = data_dir.join(node);
    cfg.mqtt.host = mqtt.ip().to_string();
    cfg.mqtt.port = mqtt.port();
    cfg.mqtt.password = Some(password.to_string());
    cfg.coordinator_url = Some(coordinator_url.to_string());
    cfg.health.interval_sec = health_interval_sec;
    // Several agents share this machine: each control API takes a free port, written to its
    // `<data_dir>/control.json`.
    cfg.control.listen = "127.0.0.1:0".parse().expect("a valid address");
    cfg
}
