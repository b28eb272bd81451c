//! Agent configuration: a strict, documented TOML file ([`EXAMPLE`]), with `AMBIENT_*` environment
//! overrides, validated before start.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The example configuration, printed by `ambient-agent generate-config`.
pub const EXAMPLE: &str = include_str!("../agent.example.toml");

/// A configuration problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Bad TOML or unknown fields.
    #[error("invalid configuration: {0}")]
    Parse(#[from] toml::de::Error),
    /// A value is out of range.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Everything the agent needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This node's id: its broker username and its topic level. `[A-Za-z0-9_-]{1,64}`.
    pub node_id: String,
    /// Where the journal (`agent.db`) and, without an OS keyring, the credential file live.
    pub data_dir: PathBuf,
    /// The broker.
    pub mqtt: MqttConfig,
    /// Telemetry.
    #[serde(default)]
    pub health: HealthConfig,
    /// Execution limits.
    #[serde(default)]
    pub execution: ExecutionConfig,
}

/// Broker connection.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Password. Leave it out to use the one stored with `ambient-agent set-password` (OS keyring,
    /// or a 0600 file where no keyring exists).
    #[serde(default)]
    pub password: Option<String>,
    /// Keep-alive in seconds; the broker announces the node offline 1.5 × this after it vanishes.
    #[serde(default = "default_keep_alive")]
    pub keep_alive_sec: u64,
}

/// Telemetry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Seconds between health reports.
    pub interval_sec: f64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig { interval_sec: 5.0 }
    }
}

/// Execution limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExecutionConfig {
    /// Tasks run at once at most.
    pub max_concurrent_tasks: u32,
    /// Largest wasm linear memory per task, in MiB. Replicas compare outcomes, so keep it the same
    /// on every node of a network.
    pub max_memory_mib: u64,
    /// Largest stdout + stderr per task, in KiB.
    pub max_output_kib: u64,
    /// Compiled modules kept in memory, by sha256.
    pub module_cache: usize,
}

impl Default for ExecutionConfig {
    fn default() -> Self {
        ExecutionConfig {
            max_concurrent_tasks: 2,
            max_memory_mib: 256,
            max_output_kib: 1024,
            module_cache: 32,
        }
    }
}

fn default_keep_alive() -> u64 {
    10
}

impl Config {
    /// Reads a file, applies environment overrides, validates.
    pub fn load(path: &std::path::Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut cfg: Config = toml::from_str(&text)?;
        cfg.apply_env(|k| std::env::var(k).ok())?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// `AMBIENT_NODE_ID`, `AMBIENT_DATA_DIR`, `AMBIENT_MQTT_HOST`, `AMBIENT_MQTT_PORT`,
    /// `AMBIENT_MQTT_PASSWORD` override the file.
    pub fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = var("AMBIENT_NODE_ID") {
            self.node_id = v;
        }
        if let Some(v) = var("AMBIENT_DATA_DIR") {
            self.data_dir = v.into();
        }
        if let Some(v) = var("AMBIENT_MQTT_HOST") {
            self.mqtt.host = v;
        }
        if let Some(v) = var("AMBIENT_MQTT_PORT") {
            self.mqtt.port = v
                .parse()
                .map_err(|_| ConfigError::Invalid(format!("AMBIENT_MQTT_PORT={v:?}")))?;
        }
        if let Some(v) = var("AMBIENT_MQTT_PASSWORD") {
            self.mqtt.password = Some(v);
        }
        Ok(())
    }

    /// Checks ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.to_string()));
        if !ambient_protocol::valid_id(&self.node_id) {
            return bad("node_id must be 1-64 characters of [A-Za-z0-9_-]");
        }
        if self.mqtt.keep_alive_sec == 0 {
            return bad("mqtt.keep_alive_sec must be at least 1");
        }
        if self.health.interval_sec.is_nan() || self.health.interval_sec < 0.1 {
            return bad("health.interval_sec must be at least 0.1");
        }
        let e = &self.execution;
        if e.max_concurrent_tasks == 0 || e.max_memory_mib == 0 || e.max_output_kib == 0 {
            return bad("execution limits must be positive");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_is_valid() {
        let cfg: Config = toml::from_str(EXAMPLE).unwrap();
        cfg.validate().unwrap();
        assert!(toml::from_str::<Config>(&format!("{EXAMPLE}\nextra = 1")).is_err());
    }

    #[test]
    fn bad_node_id_is_refused() {
        let mut cfg: Config = toml::from_str(EXAMPLE).unwrap();
        cfg.node_id = "a/b".into();
        assert!(cfg.validate().is_err());
    }
}
