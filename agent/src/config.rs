//! Agent configuration: a strict, documented TOML file ([`EXAMPLE`]), with `AMBIENT_*` environment
//! overrides, validated before start. Loading is [`ambient_service::config`]'s, shared with the
//! coordinator.

use std::net::SocketAddr;
use std::path::PathBuf;

use ambient_service::StrictConfig;
use serde::{Deserialize, Serialize};

/// The example configuration, printed by `ambient-agent generate-config`.
pub const EXAMPLE: &str = include_str!("../agent.example.toml");

/// A configuration problem, found before start (shared by both services).
pub use ambient_service::config::ConfigError;

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
    /// The coordinator's REST API, e.g. `http://coordinator.example:8080`. The agent downloads
    /// large artifacts from it (federated models too big for an MQTT message), signing each
    /// request with its identity key. Without it, such work fails with a clear reason.
    #[serde(default)]
    pub coordinator_url: Option<String>,
    /// Telemetry.
    #[serde(default)]
    pub health: HealthConfig,
    /// Execution limits.
    #[serde(default)]
    pub execution: ExecutionConfig,
    /// How the contribution policy reads the machine. The owner's choices themselves (idle-only,
    /// exclusive apps, ...) are settings, changed through the control API and kept in
    /// `<data_dir>/settings.json`.
    #[serde(default)]
    pub policy: PolicyConfig,
    /// The local control API (for the tray app and scripts; see `docs/control-api.md`).
    #[serde(default)]
    pub control: ControlConfig,
    /// Data sets this node offers to `federated_learning` tasks. Their rows never leave the node.
    #[serde(default)]
    pub datasets: Vec<DatasetConfig>,
}

/// A local data set for federated learning: a CSV file with a header row.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetConfig {
    /// The name tasks ask for (`inputs.dataset`), `[A-Za-z0-9_-]{1,64}`.
    pub name: String,
    /// The CSV file.
    pub path: PathBuf,
    /// The label column (0/1).
    #[serde(default = "default_label")]
    pub label: String,
    /// Feature columns in order; all other columns when absent.
    #[serde(default)]
    pub features: Option<Vec<String>>,
}

fn default_label() -> String {
    "target".into()
}

/// How the contribution policy reads the machine.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Milliseconds between policy evaluations (100–5000). The agent stops taking and running
    /// work within about this long of a rule saying stop.
    pub evaluate_ms: u64,
    /// X display to read keyboard and mouse idleness from, e.g. `":0"`. Unset: `$DISPLAY`, and
    /// without one, logind's idle hint.
    pub x11_display: Option<String>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            evaluate_ms: 250,
            x11_display: None,
        }
    }
}

/// The local control API.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    /// Serve it at all.
    pub enabled: bool,
    /// Loopback address to listen on; port 0 picks a free one. If the port is taken the agent
    /// logs a warning and takes a free one: clients find the real address in
    /// `<data_dir>/control.json`.
    pub listen: SocketAddr,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 7171)),
        }
    }
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
    /// Other nodes of a clustered broker, `host:port` each, tried in turn when the connection to
    /// `host:port` fails (the cluster keeps the session).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover: Vec<String>,
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
    /// Disk space for artifacts downloaded by reference (`<data_dir>/blobs/`), in MiB; past it
    /// the least recently used go.
    pub blob_cache_mib: u64,
    /// The engine that runs wasm: `"wasmtime"` (a JIT, in builds with the `wasm-jit` feature,
    /// their default) or `"wasmi"` (the interpreter every build has, the lean build's default).
    /// Results, failures and fuel are the same on both; only the speed differs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wasm_engine: Option<WasmEngineChoice>,
}

/// The wasm engine the config asks for (`[execution] wasm_engine`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WasmEngineChoice {
    /// The interpreter, which every build with `wasm` has.
    Wasmi,
    /// The JIT, in builds with `wasm-jit`.
    Wasmtime,
}

impl Default for ExecutionConfig {
    fn default() -> Self {
        ExecutionConfig {
            max_concurrent_tasks: 2,
            max_memory_mib: 256,
            max_output_kib: 1024,
            module_cache: 32,
            blob_cache_mib: 1024,
            wasm_engine: None,
        }
    }
}

fn default_keep_alive() -> u64 {
    10
}

impl Config {
    /// Reads a file, applies environment overrides, validates.
    pub fn load(path: &std::path::Path) -> Result<Config, ConfigError> {
        ambient_service::config::load(path)
    }
}

impl StrictConfig for Config {
    /// `AMBIENT_NODE_ID`, `AMBIENT_DATA_DIR`, `AMBIENT_MQTT_HOST`, `AMBIENT_MQTT_PORT`,
    /// `AMBIENT_MQTT_PASSWORD`, `AMBIENT_COORDINATOR_URL` and `AMBIENT_CONTROL_LISTEN` override
    /// the file.
    fn apply_env(&mut self, var: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
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
        if let Some(v) = var("AMBIENT_COORDINATOR_URL") {
            self.coordinator_url = Some(v);
        }
        if let Some(v) = var("AMBIENT_CONTROL_LISTEN") {
            self.control.listen = v
                .parse()
                .map_err(|_| ConfigError::Invalid(format!("AMBIENT_CONTROL_LISTEN={v:?}")))?;
        }
        Ok(())
    }

    /// Checks ranges.
    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.to_string()));
        if !ambient_protocol::valid_id(&self.node_id) {
            return bad("node_id must be 1-64 characters of [A-Za-z0-9_-]");
        }
        if self.mqtt.keep_alive_sec == 0 {
            return bad("mqtt.keep_alive_sec must be at least 1");
        }
        ambient_link::parse_failover(&self.mqtt.failover).map_err(ConfigError::Invalid)?;
        if self.health.interval_sec.is_nan() || self.health.interval_sec < 0.1 {
            return bad("health.interval_sec must be at least 0.1");
        }
        let e = &self.execution;
        if e.max_concurrent_tasks == 0 || e.max_memory_mib == 0 || e.max_output_kib == 0 {
            return bad("execution limits must be positive");
        }
        match e.wasm_engine {
            Some(_) if !cfg!(feature = "wasm") => {
                return bad("execution.wasm_engine is set, but this build runs no wasm");
            }
            Some(WasmEngineChoice::Wasmtime) if !cfg!(feature = "wasm-jit") => {
                return bad(
                    "execution.wasm_engine = \"wasmtime\": this build has no JIT (the \
                     wasm-jit feature); use \"wasmi\"",
                );
            }
            _ => {}
        }
        if !(100..=5000).contains(&self.policy.evaluate_ms) {
            return bad("policy.evaluate_ms must be 100-5000");
        }
        let mut names = std::collections::BTreeSet::new();
        for d in &self.datasets {
            if !ambient_protocol::valid_id(&d.name) {
                return bad("datasets: each name must be 1-64 characters of [A-Za-z0-9_-]");
            }
            if !names.insert(d.name.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "datasets: {:?} is declared twice",
                    d.name
                )));
            }
        }
        if let Some(url) = &self.coordinator_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(ConfigError::Invalid(format!(
                "coordinator_url = {url:?} must start with http:// or https://"
            )));
        }
        if !self.control.listen.ip().is_loopback() {
            return Err(ConfigError::Invalid(format!(
                "control.listen = {} is not a loopback address: the control API is local only \
                 (use 127.0.0.1 or [::1])",
                self.control.listen
            )));
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
    fn the_wasm_engine_is_one_this_build_has() {
        let with = |engine: &str| {
            let text = EXAMPLE.replace(
                "[execution]\n",
                &format!("[execution]\nwasm_engine = \"{engine}\"\n"),
            );
            toml::from_str::<Config>(&text).map_err(|e| e.to_string())
        };
        let cfg = with("wasmi").unwrap();
        assert_eq!(cfg.execution.wasm_engine, Some(WasmEngineChoice::Wasmi));
        cfg.validate().unwrap();
        let jit = with("wasmtime").unwrap().validate();
        assert_eq!(jit.is_ok(), cfg!(feature = "wasm-jit"), "{jit:?}");
        assert!(with("v8").unwrap_err().contains("wasmi"));
    }

    #[test]
    fn bad_node_id_is_refused() {
        let mut cfg: Config = toml::from_str(EXAMPLE).unwrap();
        cfg.node_id = "a/b".into();
        assert!(cfg.validate().is_err());
    }

    #[test]
    fn control_api_listens_on_loopback_only() {
        let mut cfg: Config = toml::from_str(EXAMPLE).unwrap();
        assert_eq!(cfg.control.listen.to_string(), "127.0.0.1:7171");
        assert!(cfg.control.enabled);
        for ok in ["127.0.0.1:0", "[::1]:7171", "127.0.0.2:80"] {
            cfg.control.listen = ok.parse().unwrap();
            cfg.validate().unwrap();
        }
        for bad in ["0.0.0.0:7171", "192.168.1.2:7171", "[::]:7171"] {
            cfg.control.listen = bad.parse().unwrap();
            let e = cfg.validate().unwrap_err().to_string();
            assert!(e.contains("not a loopback address"), "{e}");
        }
        let env = |k: &str| (k == "AMBIENT_CONTROL_LISTEN").then(|| "10.0.0.1:1".to_string());
        cfg.apply_env(&env).unwrap();
        assert!(cfg.validate().is_err());
        // Sections may be left out entirely.
        let lean = EXAMPLE
            .split("\n[control]")
            .next()
            .unwrap()
            .split("\n[policy]")
            .next()
            .unwrap();
        let cfg: Config = toml::from_str(lean).unwrap();
        assert_eq!(cfg.control.listen.port(), 7171);
        assert_eq!(cfg.policy.evaluate_ms, 250);
    }
}
