//! Coordinator configuration: a strict, documented TOML file ([`EXAMPLE`] shows every field),
//! overridable by `AMBIENT_*` environment variables, validated before anything starts.
//! Loading is [`ambient_service::config`]'s, shared with the agent.

use std::net::SocketAddr;
use std::path::PathBuf;

use ambient_service::StrictConfig;
use serde::{Deserialize, Serialize};

/// The example configuration, printed by `ambient-coordinator generate-config`.
pub const EXAMPLE: &str = include_str!("../coordinator.example.toml");

/// How the secrets in [`EXAMPLE`] begin. They are published, so a configuration that still holds
/// one (an unedited `generate-config`) is refused rather than run with a password and an API key
/// anyone can read.
pub const PLACEHOLDER: &str = "change-me";

/// A configuration problem, found before start (shared by both services).
pub use ambient_service::config::ConfigError;

/// Everything the coordinator needs to run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Directory for the SQLite database (`coordinator.db`, unless `store` names another) and
    /// the Groth16 keys (`zk/`). Created if missing.
    pub data_dir: PathBuf,
    /// Where the coordinator's state lives. Absent (the default): the SQLite file
    /// `coordinator.db` in `data_dir`, for one coordinator. A PostgreSQL URL,
    /// `postgres://user:password@host:port/database`: a database that several coordinators can
    /// share (it must exist; the tables are made at start). `AMBIENT_DATABASE_URL` overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    /// Address of the REST API. Port 0 picks a free port.
    #[serde(default = "default_http_addr")]
    pub http_addr: SocketAddr,
    /// The URL the other coordinators of a shared store reach this one's REST API at, to
    /// forward what needs the scheduler when this one leads (e.g. `http://10.0.0.5:8080`).
    /// Default: `http://` and `http_addr` as bound, which only works on one machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    /// The MQTT broker the coordinator connects to.
    pub mqtt: MqttConfig,
    /// Submitters and their API keys (`Authorization: Bearer <key>`).
    #[serde(default)]
    pub api_keys: Vec<ApiKey>,
    /// Operators' keys for the admin API (`/api/v1/admin/...`: enrolment tokens, node
    /// revocation), sent as `Authorization: Bearer <key>`. None: no admin API.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub admin_keys: Vec<String>,
    /// How nodes join with enrolment tokens.
    #[serde(default)]
    pub enrolment: EnrolmentConfig,
    /// Limits on what submitters may send.
    #[serde(default)]
    pub limits: Limits,
    /// Scheduling policy.
    #[serde(default)]
    pub scheduler: SchedulerConfig,
    /// Credits: what submitters pay and nodes earn.
    #[serde(default)]
    pub credits: CreditsConfig,
}

/// Credits ([`crate::credits`], `docs/credits.md`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CreditsConfig {
    /// Credits granted once to each submitter of `api_keys` (the bootstrap keys), the first
    /// time a coordinator leads with it: what the operator's own submitters start with.
    pub opening_grant: u64,
    /// Percent of each charge paid to the nodes that did the work; the rest is the network's
    /// fee.
    pub node_share_percent: u32,
}

impl CreditsConfig {
    /// The prices it sets.
    pub fn prices(&self) -> crate::credits::Prices {
        crate::credits::Prices {
            node_share_percent: self.node_share_percent,
        }
    }
}

impl Default for CreditsConfig {
    fn default() -> CreditsConfig {
        CreditsConfig {
            opening_grant: 1000,
            node_share_percent: crate::credits::prices::NODE_SHARE_PERCENT,
        }
    }
}

/// Joining with enrolment tokens.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrolmentConfig {
    /// How joining nodes get broker accounts: `"manual"` (the default: accounts are made by
    /// hand, so joining with a token is refused as not supported) or `"mosquitto-dynsec"`
    /// (mosquitto's dynamic-security plugin; the coordinator's broker account needs the rights
    /// `broker-config/dynsec/ambient-dynsec-setup` gives it). The embedded broker of `ambient up`
    /// needs no setting.
    #[serde(default)]
    pub broker: BrokerKind,
    /// The broker addresses (`host:port`) written into tokens and given to joining nodes.
    /// Default: `mqtt.host:mqtt.port` and `mqtt.failover`, which suits nodes only when those
    /// are addresses the nodes can reach too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub brokers: Vec<String>,
}

/// Who makes the broker accounts of joining nodes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BrokerKind {
    /// An operator, by hand.
    #[default]
    Manual,
    /// The coordinator, through mosquitto's dynamic-security plugin.
    MosquittoDynsec,
}

/// Connection to the broker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// Broker host name or address.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Username; the broker ACL gives `coordinator` all of `ambient/v1/#`.
    #[serde(default = "default_mqtt_user")]
    pub username: String,
    /// Password for `username`.
    pub password: String,
    /// Other nodes of a clustered broker, `host:port` each, tried in turn when the connection to
    /// `host:port` fails (the cluster keeps the session).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover: Vec<String>,
    /// Client id. Fixed, so the broker keeps the coordinator's session across reconnects.
    #[serde(default = "default_client_id")]
    pub client_id: String,
    /// Subscribe to submissions through `$share/coordinators/...`, so that several coordinators
    /// split the submit load (needs a broker with shared subscriptions, e.g. mosquitto ≥ 2).
    #[serde(default)]
    pub shared_subscription: bool,
}

/// One submitter's credential.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    /// Submitter id: owns the tasks submitted with this key. Same charset as node ids.
    pub submitter: String,
    /// The bearer token. At least 16 characters.
    pub key: String,
}

/// Submission limits. Requests over a limit get a typed 4xx error.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request body, in bytes (REST and MQTT submissions).
    pub max_body_bytes: usize,
    /// Largest decoded wasm module, in bytes.
    pub max_module_bytes: usize,
    /// Largest ONNX model, in bytes (inline or uploaded).
    pub max_model_bytes: usize,
    /// Artifacts (modules, models, proving keys) up to this size travel inside the MQTT
    /// assignment; larger ones by reference, downloaded by the agent from
    /// `GET /api/v1/blobs/{sha256}` (agents then need `coordinator_url`).
    pub inline_artifact_bytes: usize,
    /// Deepest JSON nesting accepted.
    pub max_json_depth: usize,
    /// Largest `min_nodes`.
    pub max_min_nodes: u32,
    /// Largest `max_execution_time_sec`.
    pub max_execution_time_sec: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 12 << 20,
            max_module_bytes: 4 << 20,
            max_model_bytes: 8 << 20,
            inline_artifact_bytes: 1 << 20,
            max_json_depth: 32,
            max_min_nodes: 16,
            max_execution_time_sec: 3600,
        }
    }
}

/// Scheduling policy.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerConfig {
    /// Seconds added to a task's time budget to make its lease.
    pub lease_grace_sec: u64,
    /// Extra assignments a task may use after lost, expired or declined replicas.
    pub max_retries: u32,
    /// Seconds a task may wait for eligible nodes before it expires.
    pub queue_timeout_sec: u64,
    /// Seconds without a health report after which a node counts as offline.
    pub health_timeout_sec: u64,
    /// Nodes with less available memory get no work, in MiB.
    pub min_free_memory_mib: u64,
    /// How often leases and timeouts are checked, in milliseconds.
    pub tick_ms: u64,
    /// With several coordinators on one PostgreSQL store: how long the scheduler's lease lasts
    /// unrenewed, in seconds (it is renewed every fifth of that). A dead leader is replaced
    /// within about this time plus a fifth of it.
    pub leader_lease_sec: u64,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            lease_grace_sec: 15,
            max_retries: 3,
            queue_timeout_sec: 300,
            health_timeout_sec: 20,
            min_free_memory_mib: 64,
            tick_ms: 500,
            leader_lease_sec: 10,
        }
    }
}

fn default_http_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_mqtt_user() -> String {
    "coordinator".into()
}
fn default_client_id() -> String {
    "ambient-coordinator".into()
}

impl Config {
    /// Reads a TOML file, applies environment overrides, and validates.
    pub fn load(path: &std::path::Path) -> Result<Config, ConfigError> {
        ambient_service::config::load(path)
    }

    /// The URL other coordinators forward requests to this one at: `public_url`, or the bound
    /// address (`127.0.0.1` for an unspecified one).
    pub fn public_url(&self, bound: SocketAddr) -> String {
        if let Some(url) = &self.public_url {
            return url.trim_end_matches('/').to_string();
        }
        let mut addr = bound;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        format!("http://{addr}")
    }

    /// The options of one of the coordinator's MQTT links: its account and broker addresses,
    /// with `client_id`, `clean_session` and `subscriptions`.
    pub fn link_options(
        &self,
        client_id: String,
        clean_session: bool,
        subscriptions: Vec<String>,
    ) -> ambient_link::LinkOptions {
        ambient_link::LinkOptions {
            host: self.mqtt.host.clone(),
            port: self.mqtt.port,
            // Validated with the configuration.
            failover: ambient_link::parse_failover(&self.mqtt.failover).unwrap_or_default(),
            client_id,
            credentials: Some((self.mqtt.username.clone(), self.mqtt.password.clone())),
            clean_session,
            keep_alive: std::time::Duration::from_secs(10),
            last_will: None,
            subscriptions,
        }
    }

    /// The broker addresses joining nodes are given ([`EnrolmentConfig::brokers`]).
    pub fn node_brokers(&self) -> Vec<String> {
        if !self.enrolment.brokers.is_empty() {
            return self.enrolment.brokers.clone();
        }
        let mut all = vec![format!("{}:{}", self.mqtt.host, self.mqtt.port)];
        all.extend(self.mqtt.failover.iter().cloned());
        all
    }

    /// Where the store is, from `store` and `data_dir`.
    pub fn store_location(&self) -> crate::store::Location {
        match &self.store {
            Some(url) => crate::store::Location::Postgres(url.clone()),
            None => crate::store::Location::File(self.data_dir.join("coordinator.db")),
        }
    }
}

impl StrictConfig for Config {
    /// Environment overrides: `AMBIENT_DATA_DIR`, `AMBIENT_DATABASE_URL`, `AMBIENT_HTTP_ADDR`,
    /// `AMBIENT_MQTT_HOST`, `AMBIENT_MQTT_PORT`, `AMBIENT_MQTT_USERNAME`,
    /// `AMBIENT_MQTT_PASSWORD`.
    fn apply_env(&mut self, var: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let bad = |k: &str, v: &str| ConfigError::Invalid(format!("{k}={v:?} does not parse"));
        if let Some(v) = var("AMBIENT_DATA_DIR") {
            self.data_dir = v.into();
        }
        if let Some(v) = var("AMBIENT_DATABASE_URL") {
            self.store = Some(v);
        }
        if let Some(v) = var("AMBIENT_HTTP_ADDR") {
            self.http_addr = v.parse().map_err(|_| bad("AMBIENT_HTTP_ADDR", &v))?;
        }
        if let Some(v) = var("AMBIENT_MQTT_HOST") {
            self.mqtt.host = v;
        }
        if let Some(v) = var("AMBIENT_MQTT_PORT") {
            self.mqtt.port = v.parse().map_err(|_| bad("AMBIENT_MQTT_PORT", &v))?;
        }
        if let Some(v) = var("AMBIENT_MQTT_USERNAME") {
            self.mqtt.username = v;
        }
        if let Some(v) = var("AMBIENT_MQTT_PASSWORD") {
            self.mqtt.password = v;
        }
        Ok(())
    }

    /// Checks ranges and consistency.
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        ambient_link::parse_failover(&self.mqtt.failover).map_err(ConfigError::Invalid)?;
        if self.api_keys.is_empty() {
            return invalid("at least one [[api_keys]] entry is required".into());
        }
        if self.mqtt.password.starts_with(PLACEHOLDER) {
            return invalid(format!(
                "mqtt.password is the example's published placeholder ({PLACEHOLDER}…): set the \
                 coordinator's broker password (or AMBIENT_MQTT_PASSWORD)"
            ));
        }
        for k in &self.api_keys {
            if !ambient_protocol::valid_id(&k.submitter) {
                return invalid(format!(
                    "api_keys: submitter {:?} must be 1-64 characters of [A-Za-z0-9_-]",
                    k.submitter
                ));
            }
            if k.key.starts_with(PLACEHOLDER) {
                return invalid(format!(
                    "api_keys: the key of {:?} is the example's published placeholder \
                     ({PLACEHOLDER}…): make a secret one, e.g. `openssl rand -hex 24`",
                    k.submitter
                ));
            }
            if k.key.len() < 16 {
                return invalid(format!(
                    "api_keys: the key of {:?} is shorter than 16 characters",
                    k.submitter
                ));
            }
        }
        for k in &self.admin_keys {
            if k.starts_with(PLACEHOLDER) || k.len() < 16 {
                return invalid(
                    "admin_keys: each key must be a secret of at least 16 characters, not the \
                     example's placeholder (e.g. `openssl rand -hex 24`)"
                        .into(),
                );
            }
        }
        ambient_link::parse_failover(&self.enrolment.brokers)
            .map_err(|e| ConfigError::Invalid(e.replace("mqtt.failover", "enrolment.brokers")))?;
        if let Some(url) = &self.store {
            let postgres = url.starts_with("postgres://") || url.starts_with("postgresql://");
            if !postgres || url.parse::<tokio_postgres::Config>().is_err() {
                return invalid(
                    "store must be a PostgreSQL URL, postgres://user:password@host:port/database \
                     (leave it out for the SQLite file in data_dir)"
                        .into(),
                );
            }
        }
        let l = &self.limits;
        if l.max_module_bytes == 0 || l.max_body_bytes < l.max_module_bytes {
            return invalid(
                "limits: max_body_bytes must be at least max_module_bytes (> 0)".into(),
            );
        }
        // Base64 grows an artifact by 4/3, and the assignment's JSON and inputs come on top:
        // half the MQTT packet limit leaves room for both.
        let max_inline = ambient_link::MAX_PACKET_BYTES / 2;
        if l.inline_artifact_bytes > max_inline {
            return invalid(format!(
                "limits: inline_artifact_bytes must be at most {max_inline} (an assignment must \
                 fit one MQTT packet); larger artifacts go by reference"
            ));
        }
        if l.max_json_depth < 4 || l.max_min_nodes == 0 || l.max_execution_time_sec == 0 {
            return invalid(
                "limits: max_json_depth ≥ 4, max_min_nodes ≥ 1, max_execution_time_sec ≥ 1".into(),
            );
        }
        if self.scheduler.tick_ms == 0 || self.scheduler.health_timeout_sec == 0 {
            return invalid("scheduler: tick_ms and health_timeout_sec must be > 0".into());
        }
        if self.scheduler.leader_lease_sec < 2 {
            return invalid("scheduler: leader_lease_sec must be at least 2".into());
        }
        if self.credits.node_share_percent > 100 {
            return invalid("credits: node_share_percent must be at most 100".into());
        }
        if self.credits.opening_grant > (i64::MAX / ambient_protocol::credits::MICRO) as u64 {
            return invalid("credits: opening_grant is too large".into());
        }
        if let Some(url) = &self.public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return invalid(format!(
                "public_url {url:?} must be an http:// or https:// URL"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `generate-config`'s output parses, but runs only once its published secrets are replaced.
    #[test]
    fn example_parses_and_its_placeholder_secrets_are_refused() {
        let mut cfg: Config = toml::from_str(EXAMPLE).unwrap();
        let err = cfg.validate().unwrap_err().to_string();
        assert!(
            err.contains("mqtt.password") && err.contains("placeholder"),
            "{err}"
        );
        cfg.mqtt.password = "a-real-broker-password".into();
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("acme") && err.contains("placeholder"), "{err}");
        cfg.api_keys[0].key = "0123456789abcdef0123".into();
        cfg.validate().unwrap();
    }

    #[test]
    fn unknown_fields_and_bad_values_are_refused() {
        let err = toml::from_str::<Config>(&format!("{EXAMPLE}\nsurprise = 1\n")).unwrap_err();
        assert!(err.to_string().contains("surprise"), "{err}");
        let mut cfg: Config = toml::from_str(EXAMPLE).unwrap();
        cfg.mqtt.password = "a-real-broker-password".into();
        cfg.api_keys[0].key = "short".into();
        assert!(cfg.validate().unwrap_err().to_string().contains("shorter"));
    }

    #[test]
    fn env_overrides() {
        let mut cfg: Config = toml::from_str(EXAMPLE).unwrap();
        cfg.apply_env(&|k| (k == "AMBIENT_MQTT_PORT").then(|| "1999".to_string()))
            .unwrap();
        assert_eq!(cfg.mqtt.port, 1999);
        assert!(
            cfg.apply_env(&|k| (k == "AMBIENT_MQTT_PORT").then(|| "x".to_string()))
                .is_err()
        );
    }

    #[test]
    fn the_store_is_a_file_by_default_or_a_postgres_url() {
        let mut cfg: Config = toml::from_str(EXAMPLE).unwrap();
        cfg.mqtt.password = "a-real-broker-password".into();
        cfg.api_keys[0].key = "0123456789abcdef0123".into();
        assert_eq!(
            cfg.store_location(),
            crate::store::Location::File(cfg.data_dir.join("coordinator.db"))
        );
        let url = "postgres://ambient:pw@127.0.0.1:5432/ambient";
        cfg.apply_env(&|k| (k == "AMBIENT_DATABASE_URL").then(|| url.to_string()))
            .unwrap();
        cfg.validate().unwrap();
        assert_eq!(
            cfg.store_location(),
            crate::store::Location::Postgres(url.into())
        );
        for bad in ["/var/lib/x.db", "mysql://h/db", "postgres://h:notaport/db"] {
            cfg.store = Some(bad.into());
            let err = cfg.validate().unwrap_err().to_string();
            assert!(err.contains("PostgreSQL URL"), "{bad}: {err}");
        }
    }
}
