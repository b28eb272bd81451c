//! Messages between the coordinator and agents. Each travels in an [`crate::envelope`], which
//! carries the protocol version.
//!
//! Delivery is QoS1, so every message may arrive twice. Each carries the ids that make it
//! idempotent: an assignment is `(task_id, attempt)`, and an attempt number belongs to exactly one
//! node. A successful publish is not delivery, so the coordinator acknowledges every result with a
//! [`Control::ResultAck`], and the agent re-sends a result until it sees that ack.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{FailureKind, TaskType};

/// Work for one node, on `nodes/{node}/tasks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    /// The task.
    pub task_id: Uuid,
    /// Which assignment of the task this is (1-based; replicas and reassignments count up).
    pub attempt: u32,
    /// What kind of work it is.
    pub task_type: TaskType,
    /// The task's artifact, base64: the wasm module of `wasm_execution` and `computation`, the
    /// ONNX model of `inference`, the proving key of `zk_proof`. Absent while `artifact_sha256` is
    /// set when the artifact was too large to travel inline: the agent downloads it by hash
    /// (`GET /api/v1/blobs/{sha256}`, signed with its identity key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_base64: Option<String>,
    /// sha256 of the decoded artifact, which the agent checks and caches by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_sha256: Option<String>,
    /// The task's inputs.
    pub inputs: serde_json::Value,
    /// The result must carry a Groth16 proof. Always so for `zk_proof`; for `inference` the
    /// artifact is then the proving key of the model (`inputs.model_sha256`, downloaded by
    /// hash), and the agent proves the fixed-point model's output instead of running tract.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_proof: bool,
    /// Time budget of the run.
    pub max_execution_time_sec: u64,
    /// After this instant the coordinator gives the work to someone else.
    pub lease_deadline: DateTime<Utc>,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// The run produced output.
    Success {
        /// stdout parsed as JSON, or a JSON string holding it when it is not JSON.
        output: serde_json::Value,
        /// sha256 of the raw stdout bytes: what replicas are compared by.
        output_sha256: String,
    },
    /// The run failed.
    Failure {
        /// Stable code, e.g. `out_of_fuel`, `memory_limit`, `trap`, `invalid_module`; whether a
        /// re-run would repeat it is [`FailureKind::is_deterministic`].
        kind: FailureKind,
        /// What happened, for a person.
        message: String,
    },
}

/// The end of one run, re-sent by the agent until acknowledged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskResult {
    /// The task.
    pub task_id: Uuid,
    /// The assignment it answers.
    pub attempt: u32,
    /// How it ended.
    pub outcome: Outcome,
    /// Wall time of the run.
    pub duration_ms: u64,
    /// wasm fuel used, when it ran wasm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel_consumed: Option<u64>,
    /// Multiply-accumulates the model's graph performs, when it ran an ONNX model (its
    /// operators' cost, as the inference engine counts it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub macs: Option<u64>,
    /// The wasm engine that ran it, with its version (`wasmtime-48.0.8`, `wasmi-2.0.0`), for a
    /// wasm task; results are compared across engines by hash, so this only says who ran what.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
}

/// What an agent publishes on `nodes/{node}/results`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentEvent {
    /// The agent began executing an assignment.
    Started {
        /// The task.
        task_id: Uuid,
        /// The assignment.
        attempt: u32,
    },
    /// The agent finished an assignment.
    Finished {
        /// The result.
        result: TaskResult,
    },
    /// The agent will not run an assignment it was sent (it is paused, full, or cannot run the
    /// kind), so the coordinator can reassign it at once instead of waiting for the lease.
    Declined {
        /// The task.
        task_id: Uuid,
        /// The assignment.
        attempt: u32,
        /// Why.
        reason: String,
    },
    /// A federated-learning message from this node's client of a job (an
    /// `ambient_fl::wire::ToServer` as JSON).
    Fl {
        /// The `federated_learning` task.
        task_id: Uuid,
        /// The message.
        msg: serde_json::Value,
    },
}

/// What the coordinator sends on `nodes/{node}/control`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Control {
    /// The result of `(task_id, attempt)` is persisted; the agent may forget it.
    ResultAck {
        /// The task.
        task_id: Uuid,
        /// The assignment.
        attempt: u32,
    },
    /// Stop working on `(task_id, attempt)`: the task was cancelled or reassigned.
    Cancel {
        /// The task.
        task_id: Uuid,
        /// The assignment.
        attempt: u32,
        /// Why.
        reason: String,
    },
    /// A federated-learning message for this node's client of a job (an
    /// `ambient_fl::wire::ToClient` as JSON).
    Fl {
        /// The `federated_learning` task.
        task_id: Uuid,
        /// The message.
        msg: serde_json::Value,
        /// Set when the model was too large to travel inline: the `begin` message's `weights`
        /// are empty, and these are the sha256 of a blob holding them as little-endian f32s,
        /// which the agent downloads (`GET /api/v1/blobs/{sha256}`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        weights_blob: Option<String>,
    },
}

/// Encodes model weights as a blob: little-endian f32s.
pub fn weights_to_blob(weights: &[f32]) -> Vec<u8> {
    weights.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// Decodes [`weights_to_blob`]; `None` when the length is not a multiple of 4.
pub fn weights_from_blob(bytes: &[u8]) -> Option<Vec<f32>> {
    bytes.len().is_multiple_of(4).then(|| {
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope;
    use serde_json::json;

    #[test]
    fn agent_event_golden() {
        let golden = json!({
            "v": 1,
            "body": {
                "type": "finished",
                "result": {
                    "task_id": "6f1c2a4e-9b7d-4c1e-8f00-0123456789ab",
                    "attempt": 2,
                    "outcome": {"status": "failure", "kind": "out_of_fuel", "message": "ran out of fuel"},
                    "duration_ms": 12
                }
            }
        });
        let ev: AgentEvent = envelope::decode(golden.to_string().as_bytes()).unwrap();
        assert!(matches!(
            &ev,
            AgentEvent::Finished {
                result: TaskResult {
                    attempt: 2,
                    outcome: Outcome::Failure { .. },
                    ..
                },
            }
        ));
        assert_eq!(wire(&ev), golden);
    }

    #[test]
    fn assignment_golden() {
        let golden = json!({
            "v": 1,
            "body": {
                "task_id": "6f1c2a4e-9b7d-4c1e-8f00-0123456789ab",
                "attempt": 1,
                "task_type": "wasm_execution",
                "artifact_sha256": "ab",
                "inputs": {"x": 1},
                "max_execution_time_sec": 30,
                "lease_deadline": "2026-11-25T10:00:45Z"
            }
        });
        let a: Assignment = envelope::decode(golden.to_string().as_bytes()).unwrap();
        assert_eq!(a.artifact_base64, None);
        assert_eq!(wire(&a), golden);
    }

    #[test]
    fn weights_blob_round_trips() {
        let w = [0.0f32, -1.5, f32::MAX, 1e-30];
        assert_eq!(weights_from_blob(&weights_to_blob(&w)).unwrap(), w);
        assert_eq!(weights_from_blob(&[0, 0, 0]), None);
    }

    #[test]
    fn control_golden() {
        let golden = json!({
            "v": 1,
            "body": {"type": "result_ack", "task_id": "6f1c2a4e-9b7d-4c1e-8f00-0123456789ab", "attempt": 1}
        });
        let c: Control = envelope::decode(golden.to_string().as_bytes()).unwrap();
        assert_eq!(wire(&c), golden);
    }

    /// `msg` as it goes on the wire, as JSON.
    fn wire<T: envelope::Message>(msg: &T) -> serde_json::Value {
        serde_json::from_slice(&envelope::encode(msg)).unwrap()
    }
}
