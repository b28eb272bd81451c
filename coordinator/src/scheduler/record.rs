//! The persisted records: a task with its replicas, and a node.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use ambient_protocol::{
    Health, NodeState, Outcome, Progress, Requirements, TaskCost, TaskInfo, TaskResult, TaskStatus,
    TaskType,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Outbound;
use crate::credits::Earnings;
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

impl AssignmentRecord {
    /// Lost with its node, or past its lease, with no answer: the node neither answered nor
    /// refused (a refusal, "all slots busy", would only be repeated).
    pub(super) fn vanished(&self) -> bool {
        matches!(self.state, AssignmentState::Lost | AssignmentState::Expired)
            && self.result.is_none()
    }
}

/// A task and everything that happened to it: the unit that is persisted. What only some kinds
/// of task have is in [`TaskRecord::kind`]. Stored as one flat JSON object, as it always was
/// (see `StoredTask`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(from = "StoredTask<'static>")]
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
    pub parent: Option<Uuid>,
    /// For a shard: its index.
    pub shard: Option<u32>,
    /// What only this kind of task has.
    pub kind: KindState,
    /// What it costs its submitter: reserved at submission (top-level tasks only; shards are
    /// paid from their computation's escrow, and tasks from before credits have none).
    pub cost: Option<TaskCost>,
}

/// The state that only some kinds of task have.
#[derive(Debug, Clone, PartialEq)]
pub enum KindState {
    /// A task the scheduler places on nodes and settles by quorum: `wasm_execution`,
    /// `inference`, `zk_proof`, and each shard of a `computation`.
    Replicated(Replicated),
    /// A `computation` split into shard tasks. It is never assigned itself; it completes when
    /// every shard has, by reducing their outputs.
    Sharded(Sharded),
    /// A `federated_learning` task. The federated driver, not the scheduler, places and runs it.
    Federated(Federated),
}

/// State of a replicated task.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Replicated {
    /// Replicas added beyond `min_nodes` because the answers so far reached no quorum.
    pub extra_replicas: u32,
    /// Adaptive replication: the task went to a single trusted node instead of `min_nodes`.
    pub adaptive: bool,
    /// For `zk_proof`: the verified proof that backs the accepted result.
    pub proof_id: Option<String>,
}

/// State of a sharded `computation`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sharded {
    /// Its shard tasks, in shard order.
    pub shards: Vec<Uuid>,
    /// The outputs of completed shards, by shard index.
    pub outputs: BTreeMap<u32, serde_json::Value>,
    /// Nodes that completed its shards.
    pub nodes: Vec<String>,
    /// How shard outputs are combined.
    pub reduce: Reduce,
}

/// State of a `federated_learning` task.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Federated {
    /// Its clients' nodes, in client-id order; empty until it starts.
    pub clients: Vec<String>,
    /// Rounds done of all rounds (the statistics round included).
    pub progress: Option<Progress>,
}

/// How a [`TaskRecord`] is stored: one flat JSON object, the per-kind fields beside the common
/// ones, as records always were. Writing borrows the record ([`Cow::Borrowed`], so a row is
/// written without cloning the task); reading owns what it parsed.
#[derive(Serialize, Deserialize)]
struct StoredTask<'a> {
    /// The task's id.
    id: Uuid,
    /// Who submitted it (the API key's or MQTT username's submitter id).
    submitter: Cow<'a, str>,
    /// What kind of work it is.
    task_type: TaskType,
    /// The task's inputs.
    inputs: Cow<'a, serde_json::Value>,
    /// What it needs.
    requirements: Cow<'a, Requirements>,
    /// The artifact's content address in the blob store (wasm module or ONNX model).
    artifact_sha256: Option<Cow<'a, str>>,
    /// Where it is in its lifecycle.
    status: TaskStatus,
    /// When it was accepted.
    created_at: DateTime<Utc>,
    /// When it last changed.
    updated_at: DateTime<Utc>,
    /// Every replica, in attempt order.
    assignments: Cow<'a, [AssignmentRecord]>,
    /// The accepted result.
    result: Option<Cow<'a, serde_json::Value>>,
    /// Why it failed or expired.
    error: Option<Cow<'a, str>>,
    /// Why it is waiting.
    status_reason: Option<Cow<'a, str>>,
    /// Since when it has lacked nodes it needs (drives the queue timeout).
    waiting_since: Option<DateTime<Utc>>,
    /// For a shard of a `computation`: the computation's id.
    #[serde(default)]
    parent: Option<Uuid>,
    /// For a shard: its index.
    #[serde(default)]
    shard: Option<u32>,
    /// For a `computation`: its shard tasks, in shard order. A task with shards is never
    /// assigned itself; it completes when every shard has, by reducing their outputs.
    #[serde(default)]
    shards: Cow<'a, [Uuid]>,
    /// For a `computation`: the outputs of completed shards, by shard index.
    #[serde(default)]
    shard_outputs: Cow<'a, BTreeMap<u32, serde_json::Value>>,
    /// For a `computation`: nodes that completed its shards.
    #[serde(default)]
    shard_nodes: Cow<'a, [String]>,
    /// For a `computation`: how shard outputs are combined.
    #[serde(default)]
    reduce: Option<Reduce>,
    /// Replicas added beyond `min_nodes` because the answers so far reached no quorum.
    #[serde(default)]
    extra_replicas: u32,
    /// Adaptive replication: the task went to a single trusted node instead of `min_nodes`.
    #[serde(default)]
    adaptive: bool,
    /// For `zk_proof`: the verified proof that backs the accepted result.
    #[serde(default)]
    proof_id: Option<Cow<'a, str>>,
    /// For a `federated_learning` task: its clients' nodes, in client-id order. The
    /// federated driver, not the scheduler, places and runs these tasks.
    #[serde(default)]
    fl_clients: Cow<'a, [String]>,
    /// For a `federated_learning` task: rounds done of all rounds (the statistics round
    /// included).
    #[serde(default)]
    fl_progress: Option<Progress>,
    /// What it costs its submitter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cost: Option<TaskCost>,
}

impl From<StoredTask<'_>> for TaskRecord {
    fn from(s: StoredTask<'_>) -> TaskRecord {
        let kind = if !s.shards.is_empty() {
            KindState::Sharded(Sharded {
                shards: s.shards.into_owned(),
                outputs: s.shard_outputs.into_owned(),
                nodes: s.shard_nodes.into_owned(),
                reduce: s.reduce.unwrap_or(Reduce::Concat),
            })
        } else if s.task_type == TaskType::FederatedLearning {
            KindState::Federated(Federated {
                clients: s.fl_clients.into_owned(),
                progress: s.fl_progress,
            })
        } else {
            KindState::Replicated(Replicated {
                extra_replicas: s.extra_replicas,
                adaptive: s.adaptive,
                proof_id: s.proof_id.map(Cow::into_owned),
            })
        };
        TaskRecord {
            id: s.id,
            submitter: s.submitter.into_owned(),
            task_type: s.task_type,
            inputs: s.inputs.into_owned(),
            requirements: s.requirements.into_owned(),
            artifact_sha256: s.artifact_sha256.map(Cow::into_owned),
            status: s.status,
            created_at: s.created_at,
            updated_at: s.updated_at,
            assignments: s.assignments.into_owned(),
            result: s.result.map(Cow::into_owned),
            error: s.error.map(Cow::into_owned),
            status_reason: s.status_reason.map(Cow::into_owned),
            waiting_since: s.waiting_since,
            parent: s.parent,
            shard: s.shard,
            kind,
            cost: s.cost,
        }
    }
}

impl<'a> From<&'a TaskRecord> for StoredTask<'a> {
    fn from(t: &'a TaskRecord) -> StoredTask<'a> {
        let (mut replicated, mut sharded, mut federated) = (None, None, None);
        match &t.kind {
            KindState::Replicated(r) => replicated = Some(r),
            KindState::Sharded(s) => sharded = Some(s),
            KindState::Federated(f) => federated = Some(f),
        }
        let borrowed = |s: &'a Option<String>| s.as_deref().map(Cow::Borrowed);
        StoredTask {
            id: t.id,
            submitter: Cow::Borrowed(&t.submitter),
            task_type: t.task_type,
            inputs: Cow::Borrowed(&t.inputs),
            requirements: Cow::Borrowed(&t.requirements),
            artifact_sha256: borrowed(&t.artifact_sha256),
            status: t.status,
            created_at: t.created_at,
            updated_at: t.updated_at,
            assignments: Cow::Borrowed(&t.assignments),
            result: t.result.as_ref().map(Cow::Borrowed),
            error: borrowed(&t.error),
            status_reason: borrowed(&t.status_reason),
            waiting_since: t.waiting_since,
            parent: t.parent,
            shard: t.shard,
            reduce: sharded.map(|s| s.reduce),
            shards: sharded.map_or_else(Cow::default, |s| Cow::Borrowed(&s.shards[..])),
            shard_outputs: sharded.map_or_else(Cow::default, |s| Cow::Borrowed(&s.outputs)),
            shard_nodes: sharded.map_or_else(Cow::default, |s| Cow::Borrowed(&s.nodes[..])),
            extra_replicas: replicated.map_or(0, |r| r.extra_replicas),
            adaptive: replicated.is_some_and(|r| r.adaptive),
            proof_id: replicated.and_then(|r| borrowed(&r.proof_id)),
            fl_clients: federated.map_or_else(Cow::default, |f| Cow::Borrowed(&f.clients[..])),
            fl_progress: federated.and_then(|f| f.progress),
            cost: t.cost,
        }
    }
}

/// Written as a `StoredTask` that borrows the record: a row is written without cloning the
/// task (its inputs, assignments and results can be large).
impl Serialize for TaskRecord {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        StoredTask::from(self).serialize(serializer)
    }
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
            kind: if task_type == TaskType::FederatedLearning {
                KindState::Federated(Federated::default())
            } else {
                KindState::Replicated(Replicated::default())
            },
            cost: None,
        }
    }

    /// The state of a replicated task.
    pub fn replicated(&self) -> Option<&Replicated> {
        match &self.kind {
            KindState::Replicated(r) => Some(r),
            _ => None,
        }
    }

    /// The state of a sharded computation.
    pub fn sharded(&self) -> Option<&Sharded> {
        match &self.kind {
            KindState::Sharded(s) => Some(s),
            _ => None,
        }
    }

    /// The state of a federated task.
    pub fn federated(&self) -> Option<&Federated> {
        match &self.kind {
            KindState::Federated(f) => Some(f),
            _ => None,
        }
    }

    /// Replicas whose answers settle the task before any extra ones: `min_nodes`, or one under
    /// adaptive replication.
    pub(super) fn replicas(&self) -> u32 {
        if self.replicated().is_some_and(|r| r.adaptive) {
            1
        } else {
            self.requirements.min_nodes
        }
    }

    /// Whether the task's result carries a Groth16 proof, which the coordinator checks:
    /// always for `zk_proof`, and for an `inference` with `require_proof`. Its artifact is
    /// then the proving key.
    pub fn needs_proof(&self) -> bool {
        self.task_type == TaskType::ZkProof
            || (self.task_type == TaskType::Inference && self.requirements.require_proof)
    }

    /// A task that carries a proof whose Groth16 keys are not ready yet: it has no artifact
    /// (the proving key) and is not placed until it has one.
    pub fn waits_for_keys(&self) -> bool {
        self.needs_proof() && self.artifact_sha256.is_none() && !self.status.is_terminal()
    }

    /// The submitter's view of the task.
    pub fn info(&self) -> TaskInfo {
        let mut assigned_nodes: Vec<String> = match &self.kind {
            KindState::Sharded(s) => s.nodes.clone(),
            KindState::Federated(f) => f.clients.clone(),
            KindState::Replicated(_) => Vec::new(),
        };
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
            proof_id: self.replicated().and_then(|r| r.proof_id.clone()),
            created_at: self.created_at,
            updated_at: self.updated_at,
            error: self.error.clone(),
            status_reason: self.status_reason.clone(),
            attempts: self.assignments.len() as u32,
            progress: match &self.kind {
                KindState::Sharded(s) => Some(Progress {
                    done: s.outputs.len() as u32,
                    total: s.shards.len() as u32,
                }),
                KindState::Federated(f) => f.progress,
                KindState::Replicated(_) => None,
            },
            cost: self.cost,
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

    /// Nodes that hold, answered, refused or gave up a replica of this task: none gets another.
    pub(super) fn holders(&self) -> BTreeSet<&str> {
        self.replica_nodes(|a| !a.vanished())
    }

    /// Nodes whose replica vanished with them ([`AssignmentRecord::vanished`]) and that hold
    /// none now. Under churn every node may lose one, and the task would otherwise wait for
    /// ever, so they may take it again, but only after every node that has not tried it.
    pub(super) fn tried(&self) -> BTreeSet<&str> {
        let holders = self.holders();
        let mut tried = self.replica_nodes(AssignmentRecord::vanished);
        tried.retain(|n| !holders.contains(n));
        tried
    }

    fn replica_nodes(&self, keep: impl Fn(&AssignmentRecord) -> bool) -> BTreeSet<&str> {
        self.assignments
            .iter()
            .filter(|a| keep(a))
            .map(|a| a.node_id.as_str())
            .collect()
    }

    /// Finished assignments whose answer counts towards the quorum: one per node, its first (a
    /// node can hold the task again after losing a replica, and the lost one's result may still
    /// come in; one node is one vote).
    pub(super) fn answers(&self) -> impl Iterator<Item = (&AssignmentRecord, String)> {
        let mut voted = BTreeSet::new();
        self.assignments.iter().filter_map(move |a| {
            let answer = match &a.result.as_ref()?.outcome {
                Outcome::Success { output_sha256, .. } => output_sha256.clone(),
                Outcome::Failure { kind, message } if kind.is_deterministic() => {
                    format!("failure:{kind}:{message}")
                }
                Outcome::Failure { .. } => return None,
            };
            voted.insert(a.node_id.as_str()).then_some((a, answer))
        })
    }

    pub(super) fn needed(&self) -> u32 {
        let KindState::Replicated(r) = &self.kind else {
            return 0; // shards are placed themselves; federated tasks by their driver
        };
        if self.waits_for_keys() {
            return 0; // placed once its circuit's keys are made (`Scheduler::zk_keys_ready`)
        }
        let have = (self.active().count() + self.answers().count()) as u32;
        (self.replicas() + r.extra_replicas).saturating_sub(have)
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
    /// What it earned.
    #[serde(default)]
    pub earnings: Earnings,
}

pub(super) fn failure_text(a: &AssignmentRecord) -> Option<String> {
    match &a.result.as_ref()?.outcome {
        Outcome::Failure { kind, message } => Some(format!("{kind} on {}: {message}", a.node_id)),
        Outcome::Success { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use ambient_protocol::FailureKind;
    use serde_json::json;

    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    /// A replicated wasm task with a finished replica and a lost one.
    fn replicated() -> TaskRecord {
        let mut t = TaskRecord::new(
            id(1),
            "alice".into(),
            TaskType::WasmExecution,
            json!({"n": 3}),
            Requirements {
                min_nodes: 2,
                ..Requirements::default()
            },
            Some("ab12".into()),
            at("2026-11-30T10:00:00Z"),
        );
        t.status = TaskStatus::Verifying;
        t.updated_at = at("2026-11-30T10:00:05Z");
        t.status_reason = Some("waiting for 1 more eligible node(s): 1 busy".into());
        t.waiting_since = None;
        t.assignments = vec![
            AssignmentRecord {
                attempt: 1,
                node_id: "node-a".into(),
                state: AssignmentState::Finished,
                dispatched_at: at("2026-11-30T10:00:01Z"),
                lease_deadline: at("2026-11-30T10:00:46Z"),
                result: Some(TaskResult {
                    task_id: id(1),
                    attempt: 1,
                    outcome: Outcome::Success {
                        output: json!("6\n"),
                        output_sha256: "cd34".into(),
                    },
                    duration_ms: 12,
                    fuel_consumed: Some(3400),
                    macs: None,
                    engine: None,
                }),
                note: None,
            },
            AssignmentRecord {
                attempt: 2,
                node_id: "node-b".into(),
                state: AssignmentState::Lost,
                dispatched_at: at("2026-11-30T10:00:01Z"),
                lease_deadline: at("2026-11-30T10:00:46Z"),
                result: None,
                note: Some("node-b went offline".into()),
            },
        ];
        t.kind = KindState::Replicated(Replicated {
            extra_replicas: 1,
            adaptive: false,
            proof_id: Some("proof-1".into()),
        });
        t
    }

    /// A sharded computation with one shard done, and a failed shard of it.
    fn sharded() -> (TaskRecord, TaskRecord) {
        let mut parent = TaskRecord::new(
            id(2),
            "bob".into(),
            TaskType::Computation,
            json!({"range": {"start": 0, "end": 10, "shards": 2}, "reduce": "sum"}),
            Requirements::default(),
            Some("ef56".into()),
            at("2026-11-30T11:00:00Z"),
        );
        parent.status = TaskStatus::Running;
        parent.kind = KindState::Sharded(Sharded {
            shards: vec![id(3), id(4)],
            outputs: BTreeMap::from([(0, json!(10))]),
            nodes: vec!["node-a".into()],
            reduce: Reduce::Sum,
        });
        let mut shard = TaskRecord::new(
            id(4),
            "bob".into(),
            TaskType::Computation,
            json!({"start": 5, "end": 10}),
            Requirements::default(),
            Some("ef56".into()),
            at("2026-11-30T11:00:00Z"),
        );
        shard.parent = Some(id(2));
        shard.shard = Some(1);
        shard.status = TaskStatus::Failed;
        shard.error = Some("trap on node-c: unreachable".into());
        shard.assignments = vec![AssignmentRecord {
            attempt: 1,
            node_id: "node-c".into(),
            state: AssignmentState::Finished,
            dispatched_at: at("2026-11-30T11:00:01Z"),
            lease_deadline: at("2026-11-30T11:00:46Z"),
            result: Some(TaskResult {
                task_id: id(4),
                attempt: 1,
                outcome: Outcome::Failure {
                    kind: FailureKind::Trap,
                    message: "unreachable".into(),
                },
                duration_ms: 3,
                fuel_consumed: None,
                macs: None,
                engine: None,
            }),
            note: None,
        }];
        (parent, shard)
    }

    /// A federated task under way.
    fn federated() -> TaskRecord {
        let mut t = TaskRecord::new(
            id(5),
            "carol".into(),
            TaskType::FederatedLearning,
            json!({"dataset": "d", "rounds": 2}),
            Requirements {
                min_nodes: 3,
                ..Requirements::default()
            },
            None,
            at("2026-11-30T12:00:00Z"),
        );
        t.status = TaskStatus::Running;
        t.result = Some(json!({"round": 1}));
        t.kind = KindState::Federated(Federated {
            clients: vec!["node-a".into(), "node-b".into(), "node-c".into()],
            progress: Some(Progress { done: 1, total: 3 }),
        });
        t
    }

    /// A replicated wasm task, as `store.save` wrote it before `StoredTask` borrowed the record.
    const REPLICATED_ROW: &str = r#"{"id":"00000000-0000-0000-0000-000000000001","submitter":"alice","task_type":"wasm_execution","inputs":{"n":3},"requirements":{"min_nodes":2,"max_execution_time_sec":30,"require_gpu":false,"require_proof":false},"artifact_sha256":"ab12","status":"verifying","created_at":"2026-11-30T10:00:00Z","updated_at":"2026-11-30T10:00:05Z","assignments":[{"attempt":1,"node_id":"node-a","state":"finished","dispatched_at":"2026-11-30T10:00:01Z","lease_deadline":"2026-11-30T10:00:46Z","result":{"task_id":"00000000-0000-0000-0000-000000000001","attempt":1,"outcome":{"status":"success","output":"6\n","output_sha256":"cd34"},"duration_ms":12,"fuel_consumed":3400},"note":null},{"attempt":2,"node_id":"node-b","state":"lost","dispatched_at":"2026-11-30T10:00:01Z","lease_deadline":"2026-11-30T10:00:46Z","result":null,"note":"node-b went offline"}],"result":null,"error":null,"status_reason":"waiting for 1 more eligible node(s): 1 busy","waiting_since":null,"parent":null,"shard":null,"shards":[],"shard_outputs":{},"shard_nodes":[],"reduce":null,"extra_replicas":1,"adaptive":false,"proof_id":"proof-1","fl_clients":[],"fl_progress":null}"#;

    /// A sharded computation, as `store.save` wrote it before `StoredTask` borrowed the record.
    const SHARDED_ROW: &str = r#"{"id":"00000000-0000-0000-0000-000000000002","submitter":"bob","task_type":"computation","inputs":{"range":{"end":10,"shards":2,"start":0},"reduce":"sum"},"requirements":{"min_nodes":1,"max_execution_time_sec":30,"require_gpu":false,"require_proof":false},"artifact_sha256":"ef56","status":"running","created_at":"2026-11-30T11:00:00Z","updated_at":"2026-11-30T11:00:00Z","assignments":[],"result":null,"error":null,"status_reason":null,"waiting_since":"2026-11-30T11:00:00Z","parent":null,"shard":null,"shards":["00000000-0000-0000-0000-000000000003","00000000-0000-0000-0000-000000000004"],"shard_outputs":{"0":10},"shard_nodes":["node-a"],"reduce":"sum","extra_replicas":0,"adaptive":false,"proof_id":null,"fl_clients":[],"fl_progress":null}"#;

    /// A failed shard of it, as `store.save` wrote it before `StoredTask` borrowed the record.
    const SHARD_ROW: &str = r#"{"id":"00000000-0000-0000-0000-000000000004","submitter":"bob","task_type":"computation","inputs":{"end":10,"start":5},"requirements":{"min_nodes":1,"max_execution_time_sec":30,"require_gpu":false,"require_proof":false},"artifact_sha256":"ef56","status":"failed","created_at":"2026-11-30T11:00:00Z","updated_at":"2026-11-30T11:00:00Z","assignments":[{"attempt":1,"node_id":"node-c","state":"finished","dispatched_at":"2026-11-30T11:00:01Z","lease_deadline":"2026-11-30T11:00:46Z","result":{"task_id":"00000000-0000-0000-0000-000000000004","attempt":1,"outcome":{"status":"failure","kind":"trap","message":"unreachable"},"duration_ms":3},"note":null}],"result":null,"error":"trap on node-c: unreachable","status_reason":null,"waiting_since":"2026-11-30T11:00:00Z","parent":"00000000-0000-0000-0000-000000000002","shard":1,"shards":[],"shard_outputs":{},"shard_nodes":[],"reduce":null,"extra_replicas":0,"adaptive":false,"proof_id":null,"fl_clients":[],"fl_progress":null}"#;

    /// A federated task, as `store.save` wrote it before `StoredTask` borrowed the record.
    const FEDERATED_ROW: &str = r#"{"id":"00000000-0000-0000-0000-000000000005","submitter":"carol","task_type":"federated_learning","inputs":{"dataset":"d","rounds":2},"requirements":{"min_nodes":3,"max_execution_time_sec":30,"require_gpu":false,"require_proof":false},"artifact_sha256":null,"status":"running","created_at":"2026-11-30T12:00:00Z","updated_at":"2026-11-30T12:00:00Z","assignments":[],"result":{"round":1},"error":null,"status_reason":null,"waiting_since":"2026-11-30T12:00:00Z","parent":null,"shard":null,"shards":[],"shard_outputs":{},"shard_nodes":[],"reduce":null,"extra_replicas":0,"adaptive":false,"proof_id":null,"fl_clients":["node-a","node-b","node-c"],"fl_progress":{"done":1,"total":3}}"#;

    /// Rows written by the previous version read back field for field, and are written again
    /// byte for byte: the stored form has not changed.
    #[test]
    fn rows_of_the_previous_version_read_and_write_unchanged() {
        let (parent, shard) = sharded();
        let cases = [
            (REPLICATED_ROW, replicated()),
            (SHARDED_ROW, parent),
            (SHARD_ROW, shard),
            (FEDERATED_ROW, federated()),
        ];
        for (row, want) in cases {
            let got: TaskRecord = serde_json::from_str(row).unwrap();
            assert_eq!(got, want);
            assert_eq!(serde_json::to_string(&got).unwrap(), row);
        }
        let t: TaskRecord = serde_json::from_str(REPLICATED_ROW).unwrap();
        assert_eq!((t.id, t.submitter.as_str()), (id(1), "alice"));
        assert_eq!(t.status, TaskStatus::Verifying);
        assert_eq!(t.requirements.min_nodes, 2);
        assert_eq!(t.artifact_sha256.as_deref(), Some("ab12"));
        assert_eq!(t.assignments.len(), 2);
        assert_eq!(
            t.assignments[0].result.as_ref().unwrap().fuel_consumed,
            Some(3400)
        );
        assert_eq!(
            t.assignments[1].note.as_deref(),
            Some("node-b went offline")
        );
        let r = t.replicated().unwrap();
        assert_eq!((r.extra_replicas, r.adaptive), (1, false));
        assert_eq!(r.proof_id.as_deref(), Some("proof-1"));
        let t: TaskRecord = serde_json::from_str(SHARDED_ROW).unwrap();
        let s = t.sharded().unwrap();
        assert_eq!(s.shards, [id(3), id(4)]);
        assert_eq!(s.outputs.get(&0), Some(&json!(10)));
        assert_eq!(
            (s.nodes.as_slice(), s.reduce),
            (&["node-a".to_string()][..], Reduce::Sum)
        );
        let t: TaskRecord = serde_json::from_str(SHARD_ROW).unwrap();
        assert_eq!((t.parent, t.shard), (Some(id(2)), Some(1)));
        assert_eq!(t.error.as_deref(), Some("trap on node-c: unreachable"));
        assert!(t.replicated().is_some());
        let t: TaskRecord = serde_json::from_str(FEDERATED_ROW).unwrap();
        let f = t.federated().unwrap();
        assert_eq!(f.clients, ["node-a", "node-b", "node-c"]);
        assert_eq!(f.progress, Some(Progress { done: 1, total: 3 }));
        assert_eq!(t.result, Some(json!({"round": 1})));
    }
}
