//! Ambient VCP node agent: reports health over MQTT, takes assignments from the coordinator, runs
//! them in a sandbox, and returns results until the coordinator acknowledges them.
//!
//! [`run`] is the whole agent; [`start`] returns a handle ([`Agent`]) that tests and `ambient up`
//! use to stop it gracefully or to kill it abruptly.
//!
//! # Layout
//! - `agent`: start-up ([`start`], [`run`]), [`StartError`], and the [`Agent`] handle that stops
//!   the agent.
//! - `state`: `Node`, what the parts of a running agent share.
//! - `router`: MQTT both ways: incoming messages routed to the part that owns them, and the
//!   `Outbox` that publishes events (signed), status, identity and health.
//! - `tasks`: the assignment lifecycle: take or decline, journal, execute, report, re-send each
//!   result until the coordinator acknowledges it, resume after a crash.
//! - `contribution`: the contribution policy at run time (rules, observations, decision), the
//!   policy loop, and settings changes.
//! - `health`: the telemetry sampler and the health reports.
//! - `settings`: `<data_dir>/settings.json` ([`settings_path`]), read at start and written
//!   atomically.
//! - [`exec`]: per-kind dispatch (the artifact fetched on the async side, the executor on a
//!   blocking thread) and the executors: `exec::wasm` (wasmi with WASI preview1 stdio),
//!   `exec::onnx` (tract), `exec::zk` (Groth16), `exec::fl` (federated-learning clients).
//! - [`config`]: the typed, strict configuration.
//! - [`creds`]: the broker password and the identity key, from config, OS keyring, or 0600 files.
//! - [`join`]: `ambient-agent join TOKEN`: enrol with a token and write a complete configuration.
//! - [`setup`]: `run --wait-for-join`: before the first join, a control API that takes a token.
//! - [`blobs`]: large artifacts by reference, downloaded from the coordinator with signed requests.
//! - [`telemetry`]: sysinfo + NVML sampling.
//! - [`journal`]: the SQLite journal that makes results survive crashes.
//! - [`policy`]: the owner's contribution policy (settings, rules, probes) and its decision.
//! - [`control`]: the local control API (loopback HTTP with a bearer token) for the tray app.
//!
//! # Contribution policy
//! A loop re-evaluates the policy every `policy.evaluate_ms` (probes run on a blocking thread).
//! When it says stop, the agent publishes a health report with `accepting: false` at once, then
//! cancels its running tasks and sends `Declined` for each (the coordinator reschedules them
//! elsewhere at once), and declines new assignments. When it allows work again, it publishes
//! `accepting: true` at once. Settings changed through the control API take effect before the
//! call returns.
//!
//! # Features
//! | Feature | Default | |
//! |---|---|---|
//! | `wasm` | yes | `wasm_execution` tasks in the sandbox, on the wasmi interpreter |
//! | `wasm-jit` | yes | the same on wasmtime's Cranelift JIT (the default engine when built) |
//! | `onnx` | yes | `inference` tasks on tract (CPU) |
//! | `zk` | yes | `zk_proof` tasks: Groth16 proofs with `ambient-zk` |
//! | `gpu-cuda` | no | `inference` on NVIDIA GPUs with tract-cuda, CPU fallback |
//! | `gpu-metal` | no | `inference` on Apple GPUs with tract-metal (macOS only), CPU fallback |
//! | `fl` | yes | `federated_learning` clients over the data sets declared in the config |
//! | `nvml` | yes | NVIDIA GPU discovery through NVML (loaded at run time) |
//! | `keyring` | yes | OS keyring for the broker password and the identity key |
//!
//! # Identity
//! At first start the agent makes an ed25519 identity key (kept like the password) and at every
//! connect publishes its public half, retained, on `nodes/{node}/identity`, a topic the broker
//! ACL lets only this node write. It signs with it every event it publishes on its results topic
//! (`ambient_protocol::envelope::encode_signed`), its secure-aggregation keys and its blob
//! downloads.
//!
//! A lean build for a small device: `cargo build --release -p ambient-agent --no-default-features
//! --features wasm`.

pub mod blobs;
pub mod config;
pub mod control;
pub mod creds;
pub mod exec;
pub mod join;
pub mod journal;
pub mod policy;
pub mod setup;
pub mod telemetry;

mod agent;
mod contribution;
mod health;
mod router;
mod settings;
mod state;
mod tasks;

pub use agent::{Agent, StartError, run, start};
pub use config::Config;
pub use exec::supported_task_types;
pub use settings::settings_path;
pub use state::PeerKeys;

/// Locks a mutex whose data stays consistent even if a holder panicked.
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
