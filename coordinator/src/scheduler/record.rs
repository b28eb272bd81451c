//! The persisted records: a task with its replicas, and a node.

use std::collections::BTreeMap;

use ambient_protocol::{
    Health, NodeState, Outcome, Progress, Requirements, TaskInfo, TaskResult, TaskStatus, TaskType,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Outbound;
use crate::kinds::computation::Reduce;
use crate::reputation::Reputation;

/// Where one replica stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AssignmentState {
    /// Published to the node.
    Dispatched,
    /// The node said it started.
    Running,
    /// The node returned a result (see `outcome`).
    Finished,
    /// The lease ran out first.
    Expired,
    /// The node went offline holding it.
    Lost,
    /// The node refused it.
    Declined,
    /// The task was cancelled or completed without it.
    Cancelled,
}

impl AssignmentState {
    pub(super) fn is_active(self) -> bool {
        matches!(self, AssignmentState::Dispatched | AssignmentState::Running)
    }
}

/// One replica of a task on one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssignmentRecord {
    /// 1-based, unique within the task.
    pub attempt: u32,
    /// The node that holds it.
    pub node_id: String,
    /// Where it stands.
    pub state: AssignmentState,
    /// When it was sent.
    pub dispatched_at: DateTime<Utc>,
    /// When the scheduler stops waiting for it.
    pub lease_deadline: DateTime<Utc>,
    /// What the node reported, once it did.
    pub result: Option<TaskResult>,
    /// Why it ended without a result (expired, lost, declined).
    pub note: Option<String>,
}

/// A task and everything that happened to it: the unit that is persisted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// The task's id.
    pub id: Uuid,
    /// Who submitted it (the API key's or MQTT username's submitter id).
    pub submitter: String,
    /// What kind of work it is.
    pub task_type: TaskType,
    /// The task's inputs.
    pub inputs: serde_json::Value,
    /// What it needs.
    pub requirements: Requirements,
    /// The artifact's content address in the blob store (wasm module or ONNX model).
    pub artifact_sha256: Option<String>,
    /// Where it is in its lifecycle.
    pub status: TaskStatus,
    /// When it was accepted.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// Every replica, in attempt order.
    pub assignments: Vec<AssignmentRecord>,
    /// The accepted result.
    pub result: Option<serde_json::Value>,
    /// Why it failed or expired.
    pub error: Option<String>,
    /// Why it is waiting.
    pub status_reason: Option<String>,
    /// Since when it has lacked nodes it needs (drives the queue timeout).
    pub waiting_since: Option<DateTime<Utc>>,
    /// For a shard of a `computation`: the computation's id.
    #[serde(default)]
    pub parent: Option<Uuid>,
    /// For a shard: its index.
    #[serde(default)]
    pub shard: Option<u32>,
    /// For a `computation`: its shard tasks, in shard order. A task with shards is never
    /// assigned itself; it completes when every shard has, by reducing their outputs.
    #[serde(default)]
    pub shards: Vec<Uuid>,
    /// For a `computation`: the outputs of completed shards, by shard index.
    #[serde(default)]
    pub shard_outputs: BTreeMap<u32, serde_json::Value>,
    /// For a `computation`: nodes that completed its shards.
    #[serde(default)]
    pub shard_nodes: Vec<String>,
    /// For a `computation`: how shard outputs are combined.
    #[serde(default)]
    pub reduce: Option<Reduce>,
    /// Replicas added beyond `min_nodes` because the answers so far reached no quorum.
    #[serde(default)]
    pub extra_replicas: u32,
    /// Adaptive replication: the task went to a single trusted node instead of `min_nodes`.
    #[serde(default)]
    pub adaptive: bool,
    /// For `zk_proof`: the verified proof that backs the accepted result.
    #[serde(default)]
    pub proof_id: Option<String>,
    /// For a `federated_learning` task: its clients' nodes, in client-id order. The core's
    /// federated driver, not the scheduler, places and runs these tasks.
    #[serde(default)]
    pub fl_clients: Vec<String>,
    /// For a `federated_learning` task: rounds done of all rounds (the statistics round
    /// included).
    #[serde(default)]
    pub fl_progress: Option<Progress>,
}

impl TaskRecord {
    /// A new pending task.
    pub fn new(
        id: Uuid,
        submitter: String,
        task_type: TaskType,
        inputs: serde_json::Value,
        requirements: Requirements,
        artifact_sha256: Option<String>,
        now: DateTime<Utc>,
    ) -> TaskRecord {
        TaskRecord {
            id,
            submitter,
            task_type,
            inputs,
            requirements,
            artifact_sha256,
            status: TaskStatus::Pending,
            created_at: now,
            updated_at: now,
            assignments: Vec::new(),
            result: None,
            error: None,
            status_reason: None,
            waiting_since: Some(now),
            parent: None,
            shard: None,
            shards: Vec::new(),
            shard_outputs: BTreeMap::new(),
            shard_nodes: Vec::new(),
            reduce: None,
            extra_replicas: 0,
            adaptive: false,
            proof_id: None,
            fl_clients: Vec::new(),
            fl_progress: None,
        }
    }

    /// Replicas whose answers settle the task before any extra ones: `min_nodes`, or one under
    /// adaptive replication.
    pub(super) fn replicas(&self) -> u32 {
        if self.adaptive {
            1
        } else {
            self.requirements.min_nodes
        }
    }

    /// The submitter's view of the task.
    pub fn info(&self) -> TaskInfo {
        let mut assigned_nodes: Vec<String> = self.shard_nodes.clone();
        assigned_nodes.extend(self.fl_clients.iter().cloned());
        for a in &self.assignments {
            if !assigned_nodes.contains(&a.node_id) {
                assigned_nodes.push(a.node_id.clone());
            }
        }
        TaskInfo {
            task_id: self.id,
            task_type: self.task_type,
            status: self.status,
            assigned_nodes,
            result: self.result.clone(),
            proof_id: self.proof_id.clone(),
            created_at: self.created_at,
            updated_at: self.updated_at,
            error: self.error.clone(),
            status_reason: self.status_reason.clone(),
            attempts: self.assignments.len() as u32,
            progress: (!self.shards.is_empty())
                .then_some(Progress {
                    done: self.shard_outputs.len() as u32,
                    total: self.shards.len() as u32,
                })
                .or(self.fl_progress),
        }
    }

    /// The notification a submitter gets about this task; none for shards, whose progress shows
    /// on their computation.
    pub(super) fn notification(&self) -> Option<Outbound> {
        self.parent.is_none().then(|| Outbound::Notify {
            submitter: self.submitter.clone(),
            info: Box::new(self.info()),
        })
    }

    pub(super) fn active(&self) -> impl Iterator<Item = &AssignmentRecord> {
        self.assignments.iter().filter(|a| a.state.is_active())
    }

    /// Finished assignments whose answer counts towards the quorum.
    pub(super) fn answers(&self) -> impl Iterator<Item = (&AssignmentRecord, String)> {
        self.assignments.iter().filter_map(|a| {
            let r = a.result.as_ref()?;
            match &r.outcome {
                Outcome::Success { output_sha256, .. } => Some((a, output_sha256.clone())),
                Outcome::Failure { kind, message } if super::quorum::is_deterministic(kind) => {
                    Some((a, format!("failure:{kind}:{message}")))
                }
                Outcome::Failure { .. } => None,
            }
        })
    }

    pub(super) fn needed(&self) -> u32 {
        if !self.shards.is_empty() || self.task_type == TaskType::FederatedLearning {
            return 0;
        }
        let have = (self.active().count() + self.answers().count()) as u32;
        (self.replicas() + self.extra_replicas).saturating_sub(have)
    }
}

/// What the coordinator knows of a node: persisted so that `GET /nodes` survives a restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// The node's id.
    pub id: String,
    /// Online or offline.
    pub state: NodeState,
    /// When it was last heard from.
    pub last_seen: DateTime<Utc>,
    /// Its latest health report.
    pub health: Option<Health>,
    /// The fold of its reputation events.
    #[serde(default)]
    pub reputation: Reputation,
}

pub(super) fn failure_text(a: &AssignmentRecord) -> Option<String> {
    match &a.result.as_ref()?.outcome {
        Outcome::Failure { kind, message } => Some(format!("{kind} on {}: {message}", a.node_id)),
        Outcome::Success { .. } => None,
    }
}
