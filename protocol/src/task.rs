//! Tasks as submitters see them: [`TaskSubmission`] in, [`TaskInfo`] out.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The kind of work a task asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskType {
    /// Run a WebAssembly (WASI preview1 command) module: inputs on stdin, result on stdout.
    WasmExecution,
    /// A wasm kernel mapped over shards across nodes, then reduced.
    Computation,
    /// ONNX model inference.
    Inference,
    /// A Groth16 proof for a registered circuit.
    ZkProof,
    /// Federated training rounds over node-local data.
    FederatedLearning,
}

impl TaskType {
    /// Every task type the protocol names, in wire spelling order.
    pub const ALL: [TaskType; 5] = [
        TaskType::WasmExecution,
        TaskType::Computation,
        TaskType::Inference,
        TaskType::ZkProof,
        TaskType::FederatedLearning,
    ];

    /// The wire spelling, e.g. `wasm_execution`.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskType::WasmExecution => "wasm_execution",
            TaskType::Computation => "computation",
            TaskType::Inference => "inference",
            TaskType::ZkProof => "zk_proof",
            TaskType::FederatedLearning => "federated_learning",
        }
    }

    /// Parses the wire spelling.
    pub fn from_wire(s: &str) -> Option<TaskType> {
        TaskType::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

impl std::fmt::Display for TaskType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a task needs from the network. Every field has a default, so `{}` is valid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Requirements {
    /// Distinct nodes that must run the task; results are compared by hash and must agree.
    pub min_nodes: u32,
    /// Time budget of one run on one node. It sets the wasm fuel and the lease.
    pub max_execution_time_sec: u64,
    /// Only nodes that report a usable GPU are eligible.
    pub require_gpu: bool,
    /// The result must come with a zero-knowledge proof.
    pub require_proof: bool,
}

impl Default for Requirements {
    fn default() -> Self {
        Requirements {
            min_nodes: 1,
            max_execution_time_sec: 30,
            require_gpu: false,
            require_proof: false,
        }
    }
}

/// A task as a submitter sends it, over `POST /api/v1/tasks` or an MQTT publish on
/// `ambient/v1/submit/{submitter}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSubmission {
    /// What kind of work this is.
    pub task_type: TaskType,
    /// The module for `wasm_execution`, base64 (standard alphabet, padded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wasm_module: Option<String>,
    /// Task input. For `wasm_execution` it is serialised and given to the module on stdin.
    #[serde(default = "empty_object")]
    pub inputs: serde_json::Value,
    /// What the task needs.
    #[serde(default)]
    pub requirements: Requirements,
    /// Optional id chosen by the submitter. An MQTT submitter sets it so that a QoS1 redelivery
    /// of the same submission creates the task only once, and so that it knows which
    /// `submitters/{me}/tasks/{id}` topic answers it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<Uuid>,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

/// Lifecycle of a task: `pending → assigned → running → verifying → completed | failed | expired |
/// cancelled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// Accepted, waiting for an eligible node (`status_reason` says what it waits for).
    Pending,
    /// Sent to at least one node, which has not yet reported that it started.
    Assigned,
    /// A node is executing it.
    Running,
    /// Results are in and are being checked.
    Verifying,
    /// Finished with a result.
    Completed,
    /// Finished without a result; `error` says why.
    Failed,
    /// No node could take it in time; `error` says why.
    Expired,
    /// Cancelled by its submitter.
    Cancelled,
}

impl TaskStatus {
    /// True once the task can change no more.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskStatus::Completed
                | TaskStatus::Failed
                | TaskStatus::Expired
                | TaskStatus::Cancelled
        )
    }

    /// The wire spelling, e.g. `completed`.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Pending => "pending",
            TaskStatus::Assigned => "assigned",
            TaskStatus::Running => "running",
            TaskStatus::Verifying => "verifying",
            TaskStatus::Completed => "completed",
            TaskStatus::Failed => "failed",
            TaskStatus::Expired => "expired",
            TaskStatus::Cancelled => "cancelled",
        }
    }
}

impl std::fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A task as the coordinator reports it (`GET /api/v1/tasks/{id}`, and on
/// `ambient/v1/submitters/{submitter}/tasks/{task}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskInfo {
    /// The task's id.
    pub task_id: Uuid,
    /// What kind of work it is.
    pub task_type: TaskType,
    /// Where it is in its lifecycle.
    pub status: TaskStatus,
    /// Every node that was given the task, in assignment order.
    pub assigned_nodes: Vec<String>,
    /// The accepted result once `completed`.
    pub result: Option<serde_json::Value>,
    /// The id of the proof that backs the result, when one was required.
    pub proof_id: Option<String>,
    /// When the task was accepted.
    pub created_at: DateTime<Utc>,
    /// When the task last changed.
    pub updated_at: DateTime<Utc>,
    /// Why the task failed or expired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Why a pending task is still waiting (for example "no online node supports inference").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    /// Assignments made so far, counting replicas and reassignments.
    #[serde(default)]
    pub attempts: u32,
    /// For sharded `computation` tasks: shards done of total.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    /// What it costs its submitter, in µcredits (`null` on a coordinator with credits off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<crate::TaskCost>,
}

/// How far a sharded task has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Shards completed.
    pub done: u32,
    /// Shards in all.
    pub total: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The seed's own example, byte for byte in field names.
    const SEED_WASM: &str = r#"{
        "task_type": "wasm_execution",
        "wasm_module": "AGFzbQEAAAA=",
        "inputs": {"data": [1, 2, 3]},
        "requirements": {"min_nodes": 1, "max_execution_time_sec": 30, "require_gpu": false, "require_proof": false}
    }"#;

    /// The seed's federated-learning example.
    const SEED_FL: &str = r#"{
        "task_type": "federated_learning",
        "inputs": {"model": "logistic_regression", "rounds": 10, "dataset": "breast_cancer"},
        "requirements": {"min_nodes": 5, "max_execution_time_sec": 600, "require_gpu": false, "require_proof": false}
    }"#;

    #[test]
    fn seed_wasm_example_round_trips() {
        let sub: TaskSubmission = serde_json::from_str(SEED_WASM).unwrap();
        assert_eq!(sub.task_type, TaskType::WasmExecution);
        assert_eq!(sub.wasm_module.as_deref(), Some("AGFzbQEAAAA="));
        assert_eq!(sub.inputs, json!({"data": [1, 2, 3]}));
        assert_eq!(sub.requirements, Requirements::default());
        let back = serde_json::to_value(&sub).unwrap();
        assert_eq!(
            back,
            serde_json::from_str::<serde_json::Value>(SEED_WASM).unwrap()
        );
    }

    #[test]
    fn seed_fl_example_round_trips() {
        let sub: TaskSubmission = serde_json::from_str(SEED_FL).unwrap();
        assert_eq!(sub.task_type, TaskType::FederatedLearning);
        assert_eq!(sub.requirements.min_nodes, 5);
        let back = serde_json::to_value(&sub).unwrap();
        assert_eq!(
            back,
            serde_json::from_str::<serde_json::Value>(SEED_FL).unwrap()
        );
    }

    #[test]
    fn every_task_type_parses() {
        for t in TaskType::ALL {
            let sub: TaskSubmission =
                serde_json::from_value(json!({"task_type": t.as_str()})).unwrap();
            assert_eq!(sub.task_type, t);
            assert_eq!(TaskType::from_wire(t.as_str()), Some(t));
        }
    }

    #[test]
    fn defaults_and_strictness() {
        let sub: TaskSubmission =
            serde_json::from_value(json!({"task_type": "computation"})).unwrap();
        assert_eq!(sub.inputs, json!({}));
        assert_eq!(sub.requirements.min_nodes, 1);
        assert_eq!(sub.requirements.max_execution_time_sec, 30);
        let err = serde_json::from_value::<TaskSubmission>(
            json!({"task_type": "wasm_execution", "wasm_modul": "x"}),
        )
        .unwrap_err();
        assert!(err.to_string().contains("wasm_modul"), "{err}");
        assert!(serde_json::from_value::<TaskSubmission>(json!({"task_type": "mining"})).is_err());
    }

    #[test]
    fn task_info_golden() {
        let golden = json!({
            "task_id": "6f1c2a4e-9b7d-4c1e-8f00-0123456789ab",
            "task_type": "wasm_execution",
            "status": "failed",
            "assigned_nodes": ["node-a"],
            "result": null,
            "proof_id": null,
            "created_at": "2026-11-25T10:00:00Z",
            "updated_at": "2026-11-25T10:00:02Z",
            "error": "out of fuel",
            "attempts": 1
        });
        let info: TaskInfo = serde_json::from_value(golden.clone()).unwrap();
        assert_eq!(info.status, TaskStatus::Failed);
        assert!(info.status.is_terminal());
        assert_eq!(serde_json::to_value(&info).unwrap(), golden);
    }
}
