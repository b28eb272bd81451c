//! The task lifecycle and node matching, as a plain state machine.
//!
//! [`Scheduler`] does no I/O and reads no clock: every method takes `now`, changes state, and
//! queues [`Effects`] (records to persist, messages to publish). The core loop persists the
//! records *before* it publishes anything, so an acknowledgement never runs ahead of the disk.
//!
//! Lifecycle: `pending → assigned → running → verifying → completed | failed | expired |
//! cancelled`. Each
//! replica is an [`AssignmentRecord`] with its own attempt number and lease. A lease that expires,
//! a node that goes offline and a node that declines all free the replica's slot, and the task is
//! matched again, until `min_nodes + max_retries` assignments have been spent.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use ambient_protocol::{
    AgentEvent, Assignment, Control, Health, NodeInfo, NodeState, Outcome, PROTOCOL_VERSION,
    Progress, ReputationInfo, Requirements, TaskInfo, TaskResult, TaskStatus, TaskType,
};
use chrono::{DateTime, Duration, Utc};
use rand::seq::SliceRandom as _;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::reduce::{self, Reduce};
use crate::reputation::{self, EventKind, Reputation};

/// Tuning of the scheduler. See [`crate::config::SchedulerConfig`] for the documented file form.
#[derive(Debug, Clone)]
pub struct SchedulerSettings {
    /// Added to `max_execution_time_sec` to make a lease: covers transfer and queueing.
    pub lease_grace: Duration,
    /// Assignments beyond `min_nodes` a task may use on lost, expired or declined replicas.
    pub max_retries: u32,
    /// A task that cannot get the nodes it needs for this long expires, with the reason.
    pub queue_timeout: Duration,
    /// A node silent for this long is taken as offline.
    pub health_timeout: Duration,
    /// Nodes with less available memory than this get no work.
    pub min_free_memory_bytes: u64,
}

/// Failure kinds that a re-run would repeat: they count as the run's answer (and replicas must
/// agree on them), rather than as a node fault to retry elsewhere.
pub const DETERMINISTIC_FAILURES: &[&str] = &[
    "invalid_module",
    "unsupported_import",
    "no_entry_point",
    "out_of_fuel",
    "memory_limit",
    "trap",
    "exit",
    "output_too_large",
    "invalid_input",
    "invalid_model",
    "unsupported_operator",
    "inference_failed",
    "executor_crashed",
];

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
    fn is_active(self) -> bool {
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
    fn replicas(&self) -> u32 {
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
    fn notification(&self) -> Option<Outbound> {
        self.parent.is_none().then(|| Outbound::Notify {
            submitter: self.submitter.clone(),
            info: Box::new(self.info()),
        })
    }

    fn active(&self) -> impl Iterator<Item = &AssignmentRecord> {
        self.assignments.iter().filter(|a| a.state.is_active())
    }

    /// Finished assignments whose answer counts towards the quorum.
    fn answers(&self) -> impl Iterator<Item = (&AssignmentRecord, String)> {
        self.assignments.iter().filter_map(|a| {
            let r = a.result.as_ref()?;
            match &r.outcome {
                Outcome::Success { output_sha256, .. } => Some((a, output_sha256.clone())),
                Outcome::Failure { kind, message } if is_deterministic(kind) => {
                    Some((a, format!("failure:{kind}:{message}")))
                }
                Outcome::Failure { .. } => None,
            }
        })
    }

    fn needed(&self) -> u32 {
        if !self.shards.is_empty() || self.task_type == TaskType::FederatedLearning {
            return 0;
        }
        let have = (self.active().count() + self.answers().count()) as u32;
        (self.replicas() + self.extra_replicas).saturating_sub(have)
    }
}

fn is_deterministic(kind: &str) -> bool {
    DETERMINISTIC_FAILURES.contains(&kind)
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

/// How the scheduler ranks nodes, 0–100. Documented in `docs/ARCHITECTURE.md`:
///
/// `score = 100 × (0.35·(1 − cpu%/100) + 0.25·(mem_available/mem_total)
///                + 0.20·(1 − min(load1/cpus, 1)) + 0.20·(1 − running/max_concurrent))`,
/// halved when any sensor reads 85 °C or more, and 0 when the node is offline, paused or silent.
pub fn health_score(health: &Health) -> f64 {
    let cpu = 1.0 - (f64::from(health.cpu_usage_pct) / 100.0).clamp(0.0, 1.0);
    let mem = if health.mem_total_bytes == 0 {
        0.0
    } else {
        (health.mem_available_bytes as f64 / health.mem_total_bytes as f64).clamp(0.0, 1.0)
    };
    let load = 1.0 - (health.load_avg[0] / f64::from(health.cpu_count.max(1))).clamp(0.0, 1.0);
    let slots = 1.0
        - (f64::from(health.running_tasks) / f64::from(health.max_concurrent_tasks.max(1)))
            .clamp(0.0, 1.0);
    let mut score = 100.0 * (0.35 * cpu + 0.25 * mem + 0.20 * load + 0.20 * slots);
    if health.temperatures.iter().any(|t| t.celsius >= 85.0) {
        score *= 0.5;
    }
    score
}

/// A message the core must publish once the state that led to it is on disk.
#[derive(Debug, Clone, PartialEq)]
pub enum Outbound {
    /// Send work to a node. The core attaches the module from the blob store.
    Dispatch {
        /// Recipient.
        node: String,
        /// The work, without module bytes.
        assignment: Assignment,
    },
    /// A control message for a node.
    Control {
        /// Recipient.
        node: String,
        /// The message.
        control: Control,
    },
    /// Store a blob that the messages after it refer to (a federated model too large to send
    /// inline).
    Blob {
        /// Its content address.
        sha256: String,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// A blob a federated job stored before a restart is its again: count it, so that it goes
    /// when the job lets it go.
    AdoptBlob {
        /// Its content address.
        sha256: String,
    },
    /// A blob stored with [`Outbound::Blob`] is no longer needed: delete it when no other round
    /// uses it.
    ForgetBlob {
        /// Its content address.
        sha256: String,
    },
    /// Tell a submitter that its task changed.
    Notify {
        /// Recipient.
        submitter: String,
        /// The task as it is now.
        info: Box<TaskInfo>,
    },
}

/// What a batch of scheduler calls asks the core to do.
#[derive(Debug, Default)]
pub struct Effects {
    /// Task records to write.
    pub tasks: Vec<TaskRecord>,
    /// Node records to write.
    pub nodes: Vec<NodeRecord>,
    /// Messages to publish after the writes commit, in order.
    pub publish: Vec<Outbound>,
    /// Reputation events to append.
    pub reputation: Vec<reputation::Event>,
    /// Federated jobs' checkpoints to write (JSON), or to delete (`None`).
    pub fl_checkpoints: Vec<(Uuid, Option<String>)>,
}

/// Why a cancel was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CancelError {
    /// No such active task of this submitter.
    #[error("task {0} is not active (unknown, finished, or not yours)")]
    NotActive(Uuid),
}

#[derive(Debug)]
struct NodeSlot {
    record: NodeRecord,
    active: u32,
}

/// The scheduler's state: active tasks and known nodes.
#[derive(Debug)]
pub struct Scheduler {
    settings: SchedulerSettings,
    tasks: BTreeMap<Uuid, TaskRecord>,
    nodes: HashMap<String, NodeSlot>,
    dirty_tasks: BTreeSet<Uuid>,
    dirty_nodes: BTreeSet<String>,
    finished: Vec<TaskRecord>,
    publish: Vec<Outbound>,
    judgements: Vec<reputation::Event>,
    fl_checkpoints: Vec<(Uuid, Option<String>)>,
}

impl Scheduler {
    /// A scheduler restored from persisted records. Terminal tasks are skipped; counts of active
    /// assignments per node are rebuilt from the tasks.
    pub fn new(
        settings: SchedulerSettings,
        tasks: Vec<TaskRecord>,
        nodes: Vec<NodeRecord>,
    ) -> Self {
        let mut s = Scheduler {
            settings,
            tasks: BTreeMap::new(),
            nodes: nodes
                .into_iter()
                .map(|record| (record.id.clone(), NodeSlot { record, active: 0 }))
                .collect(),
            dirty_tasks: BTreeSet::new(),
            dirty_nodes: BTreeSet::new(),
            finished: Vec::new(),
            publish: Vec::new(),
            judgements: Vec::new(),
            fl_checkpoints: Vec::new(),
        };
        for task in tasks.into_iter().filter(|t| !t.status.is_terminal()) {
            for a in task.active() {
                if let Some(n) = s.nodes.get_mut(&a.node_id) {
                    n.active += 1;
                }
            }
            s.tasks.insert(task.id, task);
        }
        s
    }

    /// An active task, if the scheduler holds it.
    pub fn task(&self, id: &Uuid) -> Option<&TaskRecord> {
        self.tasks.get(id)
    }

    /// True when a result for `(task_id, attempt)` from `node` would be recorded: the task is
    /// active and that assignment exists, belongs to `node` and has no result yet.
    pub fn awaits_result(&self, task_id: &Uuid, node: &str, attempt: u32) -> bool {
        self.tasks.get(task_id).is_some_and(|t| {
            !t.status.is_terminal()
                && t.assignments.iter().any(|a| {
                    a.attempt == attempt
                        && a.node_id == node
                        && a.result.is_none()
                        && a.state != AssignmentState::Cancelled
                })
        })
    }

    /// Whether `(task_id, attempt)` was ever assigned to `node`; `None` when the task is not
    /// (or no longer) in the scheduler.
    pub fn was_assigned(&self, task_id: &Uuid, node: &str, attempt: u32) -> Option<bool> {
        self.tasks.get(task_id).map(|t| {
            t.assignments
                .iter()
                .any(|a| a.attempt == attempt && a.node_id == node)
        })
    }

    /// Records the verified proof behind a task's result (checked outside the scheduler, which
    /// does no cryptography). Call it before handing the result over, so that the completion and
    /// its notification carry the proof id.
    pub fn attach_proof(&mut self, task_id: Uuid, proof_id: String) {
        if let Some(t) = self.tasks.get_mut(&task_id) {
            t.proof_id = Some(proof_id);
            self.mark(task_id);
        }
    }

    /// Number of tasks not yet terminal.
    pub fn active_tasks(&self) -> usize {
        self.tasks.len()
    }

    /// Number of nodes online now.
    pub fn online_nodes(&self) -> usize {
        self.nodes
            .values()
            .filter(|n| n.record.state == NodeState::Online)
            .count()
    }

    /// Every known node, as the API shows it.
    pub fn node_infos(&self, now: DateTime<Utc>) -> Vec<NodeInfo> {
        let mut out: Vec<NodeInfo> = self.nodes.values().map(|n| node_info(n, now)).collect();
        out.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        out
    }

    /// One node, as the API shows it.
    pub fn node_info(&self, id: &str, now: DateTime<Utc>) -> Option<NodeInfo> {
        self.nodes.get(id).map(|n| node_info(n, now))
    }

    /// Accepts a new task and tries to place it at once.
    pub fn submit(&mut self, task: TaskRecord, now: DateTime<Utc>) {
        let id = task.id;
        self.publish.extend(task.notification());
        self.tasks.insert(id, task);
        self.dirty_tasks.insert(id);
        self.schedule(now);
    }

    /// Accepts a sharded computation: the parent and its shard tasks (whose `parent` and `shard`
    /// are set, and whose ids are listed in the parent's `shards`).
    pub fn submit_sharded(
        &mut self,
        mut parent: TaskRecord,
        shards: Vec<TaskRecord>,
        now: DateTime<Utc>,
    ) {
        let id = parent.id;
        parent.waiting_since = None;
        parent.status = TaskStatus::Running;
        self.publish.extend(parent.notification());
        self.tasks.insert(id, parent);
        self.dirty_tasks.insert(id);
        for s in shards {
            self.dirty_tasks.insert(s.id);
            self.tasks.insert(s.id, s);
        }
        self.schedule(now);
    }

    /// A health report: the node is online with fresh telemetry.
    pub fn on_health(&mut self, health: Health, now: DateTime<Utc>) {
        let id = health.node_id.clone();
        let slot = self.nodes.entry(id.clone()).or_insert_with(|| NodeSlot {
            record: NodeRecord {
                id: id.clone(),
                state: NodeState::Online,
                last_seen: now,
                health: None,
                reputation: Reputation::default(),
            },
            active: 0,
        });
        slot.record.state = NodeState::Online;
        slot.record.last_seen = now;
        slot.record.health = Some(health);
        self.dirty_nodes.insert(id);
        self.schedule(now);
    }

    /// A presence message (retained status or Last Will).
    pub fn on_status(&mut self, node: &str, state: NodeState, now: DateTime<Utc>) {
        match state {
            NodeState::Offline => self.node_offline(node, "went offline", now),
            NodeState::Online => {
                // Presence alone does not make a node eligible: it needs a health report first.
                if let Some(slot) = self.nodes.get_mut(node) {
                    slot.record.last_seen = now;
                }
            }
        }
    }

    /// A message from a node on its results topic. Returns the control messages that must follow
    /// once the resulting state is persisted (acks are queued internally too).
    pub fn on_agent_event(&mut self, node: &str, event: AgentEvent, now: DateTime<Utc>) {
        if let Some(slot) = self.nodes.get_mut(node) {
            slot.record.last_seen = now;
        }
        match event {
            AgentEvent::Started {
                task_id, attempt, ..
            } => {
                let Some(task) = self.tasks.get_mut(&task_id) else {
                    return;
                };
                let Some(a) = task
                    .assignments
                    .iter_mut()
                    .find(|a| a.attempt == attempt && a.node_id == node)
                else {
                    return;
                };
                if a.state == AssignmentState::Dispatched {
                    a.state = AssignmentState::Running;
                    task.updated_at = now;
                    let first = task.status == TaskStatus::Assigned;
                    self.mark(task_id);
                    if first {
                        self.set_status(task_id, TaskStatus::Running, now);
                    }
                }
            }
            AgentEvent::Declined {
                task_id,
                attempt,
                reason,
                ..
            } => {
                if self.end_assignment(
                    task_id,
                    attempt,
                    node,
                    AssignmentState::Declined,
                    format!("declined by {node}: {reason}"),
                    now,
                ) {
                    self.schedule(now);
                }
            }
            AgentEvent::Finished { result, .. } => self.on_result(node, result, now),
            AgentEvent::Fl { .. } => {} // the core's federated driver takes these
        }
    }

    fn on_result(&mut self, node: &str, result: TaskResult, now: DateTime<Utc>) {
        let (task_id, attempt) = (result.task_id, result.attempt);
        // Whatever happens below, the node may stop re-sending: either the result is recorded
        // (and persisted before this ack goes out), or it is one the scheduler will never use.
        self.publish.push(Outbound::Control {
            node: node.to_string(),
            control: Control::ResultAck {
                v: PROTOCOL_VERSION,
                task_id,
                attempt,
            },
        });
        let Some(task) = self.tasks.get_mut(&task_id) else {
            return;
        };
        let Some(a) = task
            .assignments
            .iter_mut()
            .find(|a| a.attempt == attempt && a.node_id == node)
        else {
            return;
        };
        if a.result.is_some() || a.state == AssignmentState::Cancelled {
            return; // a QoS1 duplicate, or a replica no longer wanted
        }
        let was_active = a.state.is_active();
        a.state = AssignmentState::Finished;
        a.result = Some(result);
        task.updated_at = now;
        if was_active && let Some(slot) = self.nodes.get_mut(node) {
            slot.active = slot.active.saturating_sub(1);
        }
        self.mark(task_id);
        self.decide(task_id, now);
        self.schedule(now);
    }

    /// Settles a task once `min_nodes` answers are in: the largest group of identical answers
    /// from trusted nodes wins when it holds a quorum (a strict majority of `min_nodes`).
    /// Without one, one more replica is added, BOINC-style, while the retry budget allows; past
    /// it the task fails. Every node that gave the winning answer is judged valid, every other
    /// answering node invalid.
    ///
    /// Only trusted nodes (reputation at or above [`reputation::TRUST_THRESHOLD`]) count towards
    /// a replicated task's quorum: nodes caught lying cannot outvote anyone, whatever they agree
    /// on among themselves. Their answers are still judged, so they can earn trust back.
    fn decide(&mut self, task_id: Uuid, now: DateTime<Utc>) {
        let Some(task) = self.tasks.get(&task_id) else {
            return;
        };
        let min = task.replicas() as usize;
        let quorum = min / 2 + 1;
        let answers: Vec<(&AssignmentRecord, String)> = task.answers().collect();
        let mut groups: BTreeMap<&str, usize> = BTreeMap::new();
        for (a, h) in &answers {
            if min == 1 || self.is_trusted(&a.node_id, now) {
                *groups.entry(h.as_str()).or_default() += 1;
            }
        }
        let best = groups
            .iter()
            .max_by_key(|(_, n)| **n)
            .map(|(h, n)| (*h, *n));
        let active = task.active().count();
        if answers.len() < min {
            if !answers.is_empty() && active > 0 {
                self.set_status(task_id, TaskStatus::Verifying, now);
            }
            return; // every replica asked for answers before anything is decided
        }
        let Some(winning) = best
            .filter(|(_, n)| *n >= quorum)
            .map(|(h, _)| h.to_string())
        else {
            if active > 0 {
                self.set_status(task_id, TaskStatus::Verifying, now);
                return; // an extra replica is still out
            }
            let budget = task.requirements.min_nodes + self.settings.max_retries;
            if (task.assignments.len() as u32) < budget {
                if let Some(t) = self.tasks.get_mut(&task_id) {
                    t.extra_replicas += 1;
                    t.updated_at = now;
                }
                self.mark(task_id);
                self.set_status(task_id, TaskStatus::Verifying, now);
                return;
            }
            let detail: Vec<String> = answers
                .iter()
                .map(|(a, h)| {
                    let untrusted = if self.is_trusted(&a.node_id, now) {
                        ""
                    } else {
                        " (untrusted)"
                    };
                    format!("{}={}{untrusted}", a.node_id, short(h))
                })
                .collect();
            let error = format!(
                "replicas disagree, no quorum of {quorum} trusted nodes: {}",
                detail.join(", ")
            );
            self.finish(task_id, TaskStatus::Failed, None, Some(error), now);
            return;
        };
        let (won, lost): (Vec<_>, Vec<_>) = answers.iter().partition(|(_, h)| *h == winning);
        let winners: Vec<String> = won.iter().map(|(a, _)| a.node_id.clone()).collect();
        let losers: Vec<String> = lost.iter().map(|(a, _)| a.node_id.clone()).collect();
        let Some(r) = won[0].0.result.clone() else {
            return;
        };
        // A proved answer was judged when its proof verified (`judge_proof`).
        let proved = self
            .tasks
            .get(&task_id)
            .is_some_and(|t| t.task_type == TaskType::ZkProof);
        for node in winners.iter().filter(|_| !proved) {
            self.judge(node, EventKind::Valid, task_id, now);
        }
        for node in &losers {
            self.judge(node, EventKind::Invalid, task_id, now);
        }
        match r.outcome {
            Outcome::Success {
                output,
                output_sha256,
            } => {
                let result = serde_json::json!({
                    "output": output,
                    "output_sha256": output_sha256,
                    "nodes": winners,
                    "rejected_nodes": losers,
                    "duration_ms": r.duration_ms,
                    "fuel_consumed": r.fuel_consumed,
                });
                self.finish(task_id, TaskStatus::Completed, Some(result), None, now);
            }
            Outcome::Failure { kind, message } => {
                let error = format!("{kind}: {message}");
                self.finish(task_id, TaskStatus::Failed, None, Some(error), now);
            }
        }
    }

    /// Queues a message to publish after the next persist (for the core's federated driver).
    pub fn send(&mut self, out: Outbound) {
        self.publish.push(out);
    }

    /// Saves a federated job's checkpoint (JSON) with the next writes, or deletes it (`None`).
    pub fn fl_checkpoint(&mut self, task_id: Uuid, checkpoint: Option<String>) {
        self.fl_checkpoints.push((task_id, checkpoint));
    }

    /// `federated_learning` tasks that started and have not ended.
    pub fn fl_running(&self) -> Vec<Uuid> {
        self.tasks
            .values()
            .filter(|t| t.task_type == TaskType::FederatedLearning && !t.fl_clients.is_empty())
            .map(|t| t.id)
            .collect()
    }

    /// `federated_learning` tasks not started yet, oldest first.
    pub fn fl_waiting(&self) -> Vec<Uuid> {
        let mut v: Vec<(&DateTime<Utc>, Uuid)> = self
            .tasks
            .values()
            .filter(|t| t.task_type == TaskType::FederatedLearning && t.fl_clients.is_empty())
            .map(|t| (&t.created_at, t.id))
            .collect();
        v.sort();
        v.into_iter().map(|(_, id)| id).collect()
    }

    /// Says why a `federated_learning` task still waits (its queue timeout keeps running).
    pub fn fl_waiting_reason(&mut self, task_id: Uuid, reason: String, now: DateTime<Utc>) {
        if let Some(t) = self.tasks.get_mut(&task_id)
            && t.status_reason.as_ref() != Some(&reason)
        {
            t.status_reason = Some(reason);
            t.updated_at = now;
            self.mark(task_id);
        }
    }

    /// A `federated_learning` task started on these nodes (client ids in order).
    pub fn fl_started(
        &mut self,
        task_id: Uuid,
        nodes: Vec<String>,
        total: u32,
        now: DateTime<Utc>,
    ) {
        if let Some(t) = self.tasks.get_mut(&task_id) {
            t.fl_clients = nodes;
            t.fl_progress = Some(Progress { done: 0, total });
            t.waiting_since = None;
            t.status_reason = None;
        }
        self.mark(task_id);
        self.set_status(task_id, TaskStatus::Running, now);
    }

    /// A `federated_learning` task finished `done` of its rounds.
    pub fn fl_progress(&mut self, task_id: Uuid, done: u32, now: DateTime<Utc>) {
        let Some(t) = self.tasks.get_mut(&task_id) else {
            return;
        };
        let Some(p) = t.fl_progress.as_mut() else {
            return;
        };
        if p.done != done {
            p.done = done;
            t.updated_at = now;
            let note = t.notification();
            self.publish.extend(note);
            self.mark(task_id);
        }
    }

    /// Ends a `federated_learning` task with its result or the reason it failed.
    pub fn fl_finish(
        &mut self,
        task_id: Uuid,
        outcome: Result<serde_json::Value, String>,
        now: DateTime<Utc>,
    ) {
        match outcome {
            Ok(result) => self.finish(task_id, TaskStatus::Completed, Some(result), None, now),
            Err(e) => self.finish(task_id, TaskStatus::Failed, None, Some(e), now),
        }
    }

    /// Cancels a submitter's active task.
    pub fn cancel(
        &mut self,
        task_id: Uuid,
        submitter: &str,
        now: DateTime<Utc>,
    ) -> Result<(), CancelError> {
        match self.tasks.get(&task_id) {
            Some(t) if t.submitter == submitter && t.parent.is_none() => {}
            _ => return Err(CancelError::NotActive(task_id)),
        }
        self.finish(
            task_id,
            TaskStatus::Cancelled,
            None,
            Some("cancelled by submitter".into()),
            now,
        );
        Ok(())
    }

    /// Time passes: leases expire, silent nodes go offline, starved tasks expire.
    pub fn tick(&mut self, now: DateTime<Utc>) {
        let silent: Vec<String> = self
            .nodes
            .values()
            .filter(|n| {
                n.record.state == NodeState::Online
                    && now - n.record.last_seen > self.settings.health_timeout
            })
            .map(|n| n.record.id.clone())
            .collect();
        for node in silent {
            self.node_offline(&node, "missed its health reports", now);
        }
        let expired: Vec<(Uuid, u32, String)> = self
            .tasks
            .values()
            .flat_map(|t| {
                t.active()
                    .filter(|a| a.lease_deadline < now)
                    .map(|a| (t.id, a.attempt, a.node_id.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        for (task_id, attempt, node) in expired {
            if self.end_assignment(
                task_id,
                attempt,
                &node,
                AssignmentState::Expired,
                format!("lease expired on {node}"),
                now,
            ) {
                self.judge(&node, EventKind::Timeout, task_id, now);
                self.publish.push(Outbound::Control {
                    node: node.clone(),
                    control: Control::Cancel {
                        v: PROTOCOL_VERSION,
                        task_id,
                        attempt,
                        reason: "lease expired".into(),
                    },
                });
            }
        }
        self.schedule(now);
        let starved: Vec<(Uuid, String)> = self
            .tasks
            .values()
            .filter(|t| {
                t.waiting_since
                    .is_some_and(|since| now - since > self.settings.queue_timeout)
            })
            .map(|t| {
                let why = t.status_reason.clone().unwrap_or_default();
                (t.id, why)
            })
            .collect();
        for (task_id, why) in starved {
            let secs = self.settings.queue_timeout.num_seconds();
            self.finish(
                task_id,
                TaskStatus::Expired,
                None,
                Some(format!("no eligible node within {secs} s: {why}")),
                now,
            );
        }
    }

    /// Takes what the calls since the last take asked for.
    pub fn take_effects(&mut self) -> Effects {
        let mut tasks = std::mem::take(&mut self.finished);
        for id in std::mem::take(&mut self.dirty_tasks) {
            if let Some(t) = self.tasks.get(&id) {
                tasks.push(t.clone());
            }
        }
        let nodes = std::mem::take(&mut self.dirty_nodes)
            .into_iter()
            .filter_map(|id| self.nodes.get(&id).map(|n| n.record.clone()))
            .collect();
        Effects {
            tasks,
            nodes,
            publish: std::mem::take(&mut self.publish),
            reputation: std::mem::take(&mut self.judgements),
            fl_checkpoints: std::mem::take(&mut self.fl_checkpoints),
        }
    }

    fn mark(&mut self, id: Uuid) {
        self.dirty_tasks.insert(id);
    }

    /// Whether a node's reputation is at or above the trust threshold.
    fn is_trusted(&self, node: &str, now: DateTime<Utc>) -> bool {
        self.nodes
            .get(node)
            .is_some_and(|n| n.record.reputation.score(now) >= reputation::TRUST_THRESHOLD)
    }

    /// Records a judgement of a node's work: appended as an event, folded into its reputation.
    fn judge(&mut self, node: &str, kind: EventKind, task_id: Uuid, now: DateTime<Utc>) {
        let Some(slot) = self.nodes.get_mut(node) else {
            return;
        };
        slot.record.reputation.apply(kind, now);
        self.dirty_nodes.insert(node.to_string());
        self.judgements.push(reputation::Event {
            node: node.to_string(),
            kind,
            task_id,
            at: now,
            score: round1(slot.record.reputation.score(now)),
        });
    }

    /// Records the coordinator's check of a node's zero-knowledge proof for a task.
    pub fn judge_proof(&mut self, node: &str, task_id: Uuid, verified: bool, now: DateTime<Utc>) {
        let kind = if verified {
            EventKind::ProofVerified
        } else {
            EventKind::ProofRejected
        };
        self.judge(node, kind, task_id, now);
    }

    fn node_offline(&mut self, node: &str, why: &str, now: DateTime<Utc>) {
        let Some(slot) = self.nodes.get_mut(node) else {
            return;
        };
        if slot.record.state == NodeState::Offline {
            return;
        }
        slot.record.state = NodeState::Offline;
        self.dirty_nodes.insert(node.to_string());
        let held: Vec<(Uuid, u32)> = self
            .tasks
            .values()
            .flat_map(|t| {
                t.active()
                    .filter(|a| a.node_id == node)
                    .map(|a| (t.id, a.attempt))
                    .collect::<Vec<_>>()
            })
            .collect();
        for (task_id, attempt) in held {
            if self.end_assignment(
                task_id,
                attempt,
                node,
                AssignmentState::Lost,
                format!("{node} {why}"),
                now,
            ) {
                self.judge(node, EventKind::Lost, task_id, now);
            }
        }
        self.schedule(now);
    }

    /// Ends an active assignment without a result. Returns false when it was not active.
    fn end_assignment(
        &mut self,
        task_id: Uuid,
        attempt: u32,
        node: &str,
        state: AssignmentState,
        note: String,
        now: DateTime<Utc>,
    ) -> bool {
        let Some(task) = self.tasks.get_mut(&task_id) else {
            return false;
        };
        let Some(a) = task
            .assignments
            .iter_mut()
            .find(|a| a.attempt == attempt && a.node_id == node && a.state.is_active())
        else {
            return false;
        };
        a.state = state;
        a.note = Some(note);
        task.updated_at = now;
        if let Some(slot) = self.nodes.get_mut(node) {
            slot.active = slot.active.saturating_sub(1);
        }
        self.mark(task_id);
        true
    }

    fn set_status(&mut self, task_id: Uuid, status: TaskStatus, now: DateTime<Utc>) {
        if let Some(t) = self.tasks.get_mut(&task_id)
            && t.status != status
        {
            t.status = status;
            t.updated_at = now;
            let note = t.notification();
            self.publish.extend(note);
            self.mark(task_id);
        }
    }

    /// Moves a task to a terminal status, cancels its remaining replicas and drops it from memory.
    fn finish(
        &mut self,
        task_id: Uuid,
        status: TaskStatus,
        result: Option<serde_json::Value>,
        error: Option<String>,
        now: DateTime<Utc>,
    ) {
        let Some(mut task) = self.tasks.remove(&task_id) else {
            return;
        };
        self.dirty_tasks.remove(&task_id);
        for a in task.assignments.iter_mut().filter(|a| a.state.is_active()) {
            a.state = AssignmentState::Cancelled;
            if let Some(slot) = self.nodes.get_mut(&a.node_id) {
                slot.active = slot.active.saturating_sub(1);
            }
            self.publish.push(Outbound::Control {
                node: a.node_id.clone(),
                control: Control::Cancel {
                    v: PROTOCOL_VERSION,
                    task_id,
                    attempt: a.attempt,
                    reason: format!("task {status}"),
                },
            });
        }
        task.status = status;
        task.result = result;
        task.error = error;
        task.status_reason = None;
        task.waiting_since = None;
        task.updated_at = now;
        self.publish.extend(task.notification());
        let (parent, shards) = (task.parent, task.shards.clone());
        let done = task.clone();
        self.finished.push(task);
        // A computation that ends takes its unfinished shards with it.
        for shard in shards {
            if self.tasks.contains_key(&shard) {
                let why = format!("its computation {task_id} is {status}");
                self.finish(shard, TaskStatus::Cancelled, None, Some(why), now);
            }
        }
        if let Some(parent) = parent {
            self.shard_done(parent, &done, now);
        }
    }

    /// A shard ended: record its output, and settle the computation when it can be.
    fn shard_done(&mut self, parent_id: Uuid, shard: &TaskRecord, now: DateTime<Utc>) {
        let Some(parent) = self.tasks.get_mut(&parent_id) else {
            return; // the computation already ended
        };
        let index = shard.shard.unwrap_or_default();
        match shard.status {
            TaskStatus::Completed => {
                let output = shard
                    .result
                    .as_ref()
                    .map(|r| r["output"].clone())
                    .unwrap_or_default();
                parent.shard_outputs.insert(index, output);
                for n in shard.info().assigned_nodes {
                    if !parent.shard_nodes.contains(&n) {
                        parent.shard_nodes.push(n);
                    }
                }
                parent.updated_at = now;
                self.dirty_tasks.insert(parent_id);
                if parent.shard_outputs.len() < parent.shards.len() {
                    let note = parent.notification();
                    self.publish.extend(note);
                    return;
                }
                let outputs: Vec<serde_json::Value> =
                    parent.shard_outputs.values().cloned().collect();
                let reducer = parent.reduce.unwrap_or(Reduce::Concat);
                let nodes = parent.shard_nodes.clone();
                match reduce::apply(reducer, &outputs) {
                    Ok(value) => {
                        let result = serde_json::json!({
                            "output": value,
                            "shards": outputs.len(),
                            "nodes": nodes,
                        });
                        self.finish(parent_id, TaskStatus::Completed, Some(result), None, now);
                    }
                    Err(e) => {
                        let error = format!("reduce failed: {e}");
                        self.finish(parent_id, TaskStatus::Failed, None, Some(error), now);
                    }
                }
            }
            TaskStatus::Cancelled => {}
            other => {
                let why = shard.error.clone().unwrap_or_default();
                let error = format!("shard {index} {other}: {why}");
                self.finish(parent_id, TaskStatus::Failed, None, Some(error), now);
            }
        }
    }

    /// Places every task that lacks replicas on the best eligible nodes.
    fn schedule(&mut self, now: DateTime<Utc>) {
        let waiting: Vec<Uuid> = self
            .tasks
            .values()
            .filter(|t| t.needed() > 0)
            .map(|t| t.id)
            .collect();
        for task_id in waiting {
            self.place(task_id, now);
        }
    }

    fn place(&mut self, task_id: Uuid, now: DateTime<Utc>) {
        let Some(task) = self.tasks.get(&task_id) else {
            return;
        };
        let needed = task.needed();
        let budget = task.requirements.min_nodes + self.settings.max_retries;
        let used = task.assignments.len() as u32;
        if used + needed > budget && task.active().count() == 0 {
            let last = task
                .assignments
                .iter()
                .rev()
                .find_map(|a| a.note.clone().or_else(|| failure_text(a)))
                .unwrap_or_default();
            let error = format!("gave up after {used} assignments; last: {last}");
            self.finish(task_id, TaskStatus::Failed, None, Some(error), now);
            return;
        }
        let (mut candidates, why_not, busy) = self.candidates(task, now);
        // Adaptive replication: a replicated wasm task may go to one node alone when that node
        // has answered validly TRUSTED_STREAK times in a row, except for the spot-checked share.
        let trust = task.requirements.min_nodes > 1
            && task.assignments.is_empty()
            && task.task_type == TaskType::WasmExecution
            && !spot_checked(&task.id)
            && candidates
                .first()
                .and_then(|n| self.nodes.get(n))
                .is_some_and(|n| n.record.reputation.streak >= TRUSTED_STREAK);
        let needed = if trust { 1 } else { needed };
        if !trust && task.replicas() > 1 {
            // Replicas go to trusted candidates drawn at random, untrusted ones only after them.
            // Ranking alone would give every replicated task to the same top nodes, so two
            // colluders advertising the best health would always be paired, and win.
            let (mut drawn, rest): (Vec<String>, Vec<String>) = candidates
                .into_iter()
                .partition(|n| self.is_trusted(n, now));
            drawn.shuffle(&mut rand::rng());
            drawn.extend(rest);
            candidates = drawn;
        }
        let room = budget.saturating_sub(used);
        candidates.truncate(needed.min(room) as usize);
        let lease = now
            + Duration::seconds(task.requirements.max_execution_time_sec as i64)
            + self.settings.lease_grace;
        let Some(task) = self.tasks.get_mut(&task_id) else {
            return;
        };
        task.adaptive |= trust;
        for node in &candidates {
            let attempt = task.assignments.len() as u32 + 1;
            task.assignments.push(AssignmentRecord {
                attempt,
                node_id: node.clone(),
                state: AssignmentState::Dispatched,
                dispatched_at: now,
                lease_deadline: lease,
                result: None,
                note: None,
            });
            self.publish.push(Outbound::Dispatch {
                node: node.clone(),
                assignment: Assignment {
                    v: PROTOCOL_VERSION,
                    task_id,
                    attempt,
                    task_type: task.task_type,
                    artifact_base64: None,
                    artifact_sha256: task.artifact_sha256.clone(),
                    inputs: task.inputs.clone(),
                    max_execution_time_sec: task.requirements.max_execution_time_sec,
                    lease_deadline: lease,
                },
            });
            if let Some(slot) = self.nodes.get_mut(node) {
                slot.active += 1;
            }
        }
        let still = task.needed();
        let before = (task.status, task.status_reason.clone());
        if still > 0 {
            if busy {
                // Nodes that could run it are working: it is queued, not starved, so the queue
                // timeout (meant for tasks no node can take) does not run down.
                task.waiting_since = Some(now);
            } else {
                task.waiting_since.get_or_insert(now);
            }
            // After a failed attempt, say what failed: it is often why no node is left.
            let last = task
                .assignments
                .iter()
                .rev()
                .find_map(failure_text)
                .map(|f| format!("; last attempt: {f}"))
                .unwrap_or_default();
            task.status_reason = Some(format!(
                "waiting for {still} more eligible node(s): {why_not}{last}"
            ));
        } else {
            task.waiting_since = None;
            task.status_reason = None;
        }
        if !candidates.is_empty() && task.status == TaskStatus::Pending {
            task.status = TaskStatus::Assigned;
        }
        if task.active().count() == 0 && task.status == TaskStatus::Assigned {
            task.status = TaskStatus::Pending;
        }
        if (task.status, task.status_reason.clone()) != before || !candidates.is_empty() {
            task.updated_at = now;
            self.dirty_tasks.insert(task_id);
            if task.status != before.0 {
                let note = task.notification();
                self.publish.extend(note);
            }
        }
    }

    /// Eligible nodes for a task, best first; a sentence on why others are not; and whether some
    /// node would be eligible but for being busy.
    fn candidates(&self, task: &TaskRecord, now: DateTime<Utc>) -> (Vec<String>, String, bool) {
        let used: BTreeSet<&str> = task
            .assignments
            .iter()
            .map(|a| a.node_id.as_str())
            .collect();
        let mut ranked: Vec<(f64, &str)> = Vec::new();
        let mut reasons: BTreeMap<&'static str, u32> = BTreeMap::new();
        for slot in self.nodes.values() {
            let why = self.ineligible(task, slot, &used);
            match why {
                None => {
                    let h = slot.record.health.as_ref().map(health_score).unwrap_or(0.0);
                    let rep = slot.record.reputation.score(now);
                    let score = h * (0.5 + rep / 200.0) - f64::from(slot.active);
                    ranked.push((score, slot.record.id.as_str()));
                }
                Some(reason) => *reasons.entry(reason).or_default() += 1,
            }
        }
        ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1)));
        let why_not = if self.nodes.is_empty() {
            "no node has connected yet".to_string()
        } else {
            reasons
                .iter()
                .map(|(r, n)| format!("{n} {r}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let busy = reasons.contains_key(BUSY);
        (
            ranked.into_iter().map(|(_, id)| id.to_string()).collect(),
            why_not,
            busy,
        )
    }

    fn ineligible(
        &self,
        task: &TaskRecord,
        slot: &NodeSlot,
        used: &BTreeSet<&str>,
    ) -> Option<&'static str> {
        if slot.record.state != NodeState::Online {
            return Some("offline");
        }
        let Some(h) = slot.record.health.as_ref() else {
            return Some("without health report");
        };
        if used.contains(slot.record.id.as_str()) {
            return Some("already used for this task");
        }
        if !h.accepting {
            return Some("paused by their owner");
        }
        if !h.supported_task_types.contains(&task.task_type) {
            return Some("not supporting this task type");
        }
        if task.requirements.require_gpu && h.gpus.is_empty() {
            return Some("without a GPU");
        }
        if h.mem_available_bytes < self.settings.min_free_memory_bytes {
            return Some("short of memory");
        }
        if slot.active >= h.max_concurrent_tasks {
            return Some(BUSY);
        }
        None
    }
}

/// Valid answers in a row after which a node may carry a replicated task alone.
pub const TRUSTED_STREAK: u32 = 10;

/// Share of replicated tasks, in percent, that are fully replicated even when a trusted node
/// could carry them alone.
pub const SPOT_CHECK_PERCENT: u32 = 10;

/// Whether a task is spot-checked: decided by its random id, so about [`SPOT_CHECK_PERCENT`] of
/// tasks are, and a node cannot know which (it never sees the other replicas).
fn spot_checked(id: &Uuid) -> bool {
    u32::from(id.as_bytes()[0]) * 100 < SPOT_CHECK_PERCENT * 256
}

/// The ineligibility reason of a node whose slots are all taken.
const BUSY: &str = "busy";

fn failure_text(a: &AssignmentRecord) -> Option<String> {
    match &a.result.as_ref()?.outcome {
        Outcome::Failure { kind, message } => Some(format!("{kind} on {}: {message}", a.node_id)),
        Outcome::Success { .. } => None,
    }
}

fn short(h: &str) -> &str {
    &h[..h.len().min(12)]
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn node_info(slot: &NodeSlot, now: DateTime<Utc>) -> NodeInfo {
    let r = &slot.record;
    let rep = &r.reputation;
    let score = match (&r.health, r.state) {
        (Some(h), NodeState::Online) if h.accepting => health_score(h),
        _ => 0.0,
    };
    NodeInfo {
        node_id: r.id.clone(),
        state: r.state,
        health_score: round1(score),
        last_seen: Some(r.last_seen),
        health: r.health.clone(),
        active_assignments: slot.active,
        reputation: ReputationInfo {
            score: round1(rep.score(now)),
            valid: rep.totals[0],
            invalid: rep.totals[1],
            timeouts: rep.totals[2],
            lost: rep.totals[3],
            proofs_verified: rep.totals[4],
            proofs_rejected: rep.totals[5],
            streak: rep.streak,
            trusted: rep.score(now) >= reputation::TRUST_THRESHOLD,
        },
        identity: None, // known to the API, which fills it in
    }
}

#[cfg(test)]
mod tests;
