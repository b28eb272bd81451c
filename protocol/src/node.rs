//! What an agent says about itself: its presence ([`NodeStatus`]) and its live telemetry
//! ([`Health`]), and what the coordinator reports about a node ([`NodeInfo`],
//! [`ReputationReport`]). On MQTT they travel in an [`crate::envelope`]; over REST, bare.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::TaskType;

/// Presence of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// Connected to the broker.
    Online,
    /// Gone: a clean disconnect, its Last Will, or missed health reports.
    Offline,
}

/// Retained on `nodes/{node}/status`. The agent's Last Will carries the `offline` form, so the
/// broker announces a node that vanishes without saying goodbye.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The node's id (its broker username).
    pub node_id: String,
    /// Online or offline.
    pub state: NodeState,
    /// The agent's version string.
    pub agent_version: String,
}

/// One temperature sensor reading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Temperature {
    /// Sensor label as the OS names it.
    pub label: String,
    /// Degrees Celsius.
    pub celsius: f32,
}

/// A GPU the agent found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuInfo {
    /// Marketing name, e.g. "NVIDIA H100 80GB HBM3".
    pub name: String,
    /// Total device memory.
    pub memory_total_bytes: u64,
    /// How it was found and could be driven: `nvml` for NVIDIA's management library.
    pub backend: String,
    /// Driver version, when known.
    pub driver: Option<String>,
}

/// Live telemetry, published on `nodes/{node}/health` every few seconds. The coordinator ranks
/// nodes by a score computed from it and treats a node that stops sending it as offline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// The node's id.
    pub node_id: String,
    /// When the sample was taken.
    pub at: DateTime<Utc>,
    /// Global CPU use, 0–100.
    pub cpu_usage_pct: f32,
    /// Logical CPUs.
    pub cpu_count: u32,
    /// 1, 5 and 15 minute load averages (zero where the OS has none).
    pub load_avg: [f64; 3],
    /// Physical memory.
    pub mem_total_bytes: u64,
    /// Memory available to new work.
    pub mem_available_bytes: u64,
    /// Temperature sensors, where the OS exposes any.
    #[serde(default)]
    pub temperatures: Vec<Temperature>,
    /// GPUs found (empty when none).
    #[serde(default)]
    pub gpus: Vec<GpuInfo>,
    /// Task kinds this agent's build can execute.
    pub supported_task_types: Vec<TaskType>,
    /// Tasks the agent runs at once at most.
    pub max_concurrent_tasks: u32,
    /// Tasks running now.
    pub running_tasks: u32,
    /// False when the agent's contribution policy says it takes no work now.
    pub accepting: bool,
    /// Why it does not accept work, when it does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_reason: Option<String>,
    /// Largest wasm linear memory the agent grants a task.
    pub wasm_memory_limit_bytes: u64,
    /// The engine this node runs wasm on, with its version (`wasmtime-48.0.8`, the JIT;
    /// `wasmi-2.0.0`, the interpreter); absent on a node without wasm. Replicas agree whichever
    /// engines ran them, so this is for operators, not for the scheduler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wasm_engine: Option<String>,
    /// Data sets the node holds for `federated_learning` (names and sizes, never rows).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub datasets: Vec<DatasetInfo>,
}

/// A data set a node offers to federated learning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetInfo {
    /// The name tasks use.
    pub name: String,
    /// Rows.
    pub rows: u64,
    /// Feature columns.
    pub features: u32,
}

/// A node's reputation as the coordinator reports it (see `coordinator/src/reputation.rs`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReputationInfo {
    /// 0–100; a new node has 50.
    pub score: f64,
    /// Accepted answers, all time.
    pub valid: u64,
    /// Answers that lost a quorum, all time.
    pub invalid: u64,
    /// Leases that expired, all time.
    pub timeouts: u64,
    /// Times it went offline holding work, all time.
    pub lost: u64,
    /// Zero-knowledge proofs that verified, all time.
    #[serde(default)]
    pub proofs_verified: u64,
    /// Zero-knowledge proofs that failed verification, all time.
    #[serde(default)]
    pub proofs_rejected: u64,
    /// Accepted answers in a row.
    pub streak: u32,
    /// Whether the score is at or above the coordinator's trust threshold.
    #[serde(default)]
    pub trusted: bool,
}

/// One judgement of a node's work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReputationEventKind {
    /// Its answer was accepted: it matched the quorum, or was the single replica.
    Valid,
    /// Its answer lost a quorum.
    Invalid,
    /// Its lease expired.
    Timeout,
    /// It went offline holding work.
    Lost,
    /// Its zero-knowledge proof verified, so its answer was accepted.
    ProofVerified,
    /// Its zero-knowledge proof failed verification.
    ProofRejected,
}

impl ReputationEventKind {
    /// Every kind.
    pub const ALL: [ReputationEventKind; 6] = [
        ReputationEventKind::Valid,
        ReputationEventKind::Invalid,
        ReputationEventKind::Timeout,
        ReputationEventKind::Lost,
        ReputationEventKind::ProofVerified,
        ReputationEventKind::ProofRejected,
    ];

    /// The kind with wire name `s`.
    pub fn parse(s: &str) -> Option<ReputationEventKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ReputationEventKind::Valid => "valid",
            ReputationEventKind::Invalid => "invalid",
            ReputationEventKind::Timeout => "timeout",
            ReputationEventKind::Lost => "lost",
            ReputationEventKind::ProofVerified => "proof_verified",
            ReputationEventKind::ProofRejected => "proof_rejected",
        }
    }
}

/// One entry of a node's reputation history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReputationEventInfo {
    /// What happened.
    pub kind: ReputationEventKind,
    /// The task it happened on.
    pub task_id: uuid::Uuid,
    /// When.
    pub at: DateTime<Utc>,
    /// The node's score just after this event.
    pub score: f64,
}

/// A node's reputation with its recent history: the body of
/// `GET /api/v1/nodes/{id}/reputation`, and the retained message on `nodes/{node}/reputation` that
/// tells the node itself (and so its tray app) how its work is judged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReputationReport {
    /// The node's id.
    pub node_id: String,
    /// When the report was made.
    pub at: DateTime<Utc>,
    /// Score and counts now.
    pub reputation: ReputationInfo,
    /// The most recent events, oldest first.
    pub history: Vec<ReputationEventInfo>,
    /// What the node has earned, in µcredits.
    #[serde(default)]
    pub credits: crate::NodeCredits,
}

/// A node as the coordinator reports it (`GET /api/v1/nodes`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The node's id.
    pub node_id: String,
    /// Online or offline.
    pub state: NodeState,
    /// The score the scheduler ranks by, 0–100 (see `docs/ARCHITECTURE.md`).
    pub health_score: f64,
    /// When the coordinator last heard from the node.
    pub last_seen: Option<DateTime<Utc>>,
    /// The latest health report.
    pub health: Option<Health>,
    /// Assignments the node holds now.
    pub active_assignments: u32,
    /// How its work has been judged.
    #[serde(default)]
    pub reputation: ReputationInfo,
    /// Its ed25519 identity key (hex), as it published it on its identity topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// What it has earned, in µcredits.
    #[serde(default)]
    pub credits: crate::NodeCredits,
}
