//! The task lifecycle and node matching, as a plain state machine.
//!
//! [`Scheduler`] does no I/O and reads no clock: every method takes `now`, changes state, and
//! queues [`Effects`] (records to persist, messages to publish). The engine persists the
//! records *before* it publishes anything, so an acknowledgement never runs ahead of the disk.
//!
//! Lifecycle: `pending → assigned → running → verifying → completed | failed | expired |
//! cancelled`. Each
//! replica is an [`AssignmentRecord`] with its own attempt number and lease. A lease that expires,
//! a node that goes offline and a node that declines all free the replica's slot, and the task is
//! matched again, until `min_nodes + max_retries` assignments have been spent.
//!
//! # Layout
//! - [`record`]: the persisted records ([`TaskRecord`], its [`AssignmentRecord`]s, [`NodeRecord`]).
//! - [`matching`]: eligibility, ranking, adaptive replication and the API's node view.
//! - [`quorum`]: settling replicated answers, and judging the nodes that gave them.
//! - [`shards`]: sharded `computation` tasks and their reduction.
//! - [`fl`]: `federated_learning` tasks, which the federated driver places and runs.
//! - [`settle`]: reserving a task's cost at submission and paying for its work when it ends.
//! - [`zk`]: `zk_proof` tasks waiting for their circuit's Groth16 keys.
//! - this module: the [`Scheduler`] itself, its inputs (health, presence, results, cancels,
//!   time) and the [`Effects`] it queues.

pub mod fl;
pub mod matching;
pub mod quorum;
pub mod record;
pub mod settle;
pub mod shards;
pub mod zk;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use ambient_protocol::{
    AgentEvent, Assignment, Control, Health, NodeInfo, NodeState, TaskInfo, TaskResult, TaskStatus,
};
use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use crate::credits::{Book, Posting};
use crate::reputation::{self, EventKind, Reputation};

use matching::node_info;
pub use matching::{SPOT_CHECK_PERCENT, TRUSTED_STREAK, health_score};
pub use record::{
    AssignmentRecord, AssignmentState, Federated, KindState, NodeRecord, Replicated, Sharded,
    TaskRecord,
};

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

/// A message the engine must publish once the state that led to it is on disk.
#[derive(Debug, Clone, PartialEq)]
pub enum Outbound {
    /// Send work to a node. The engine attaches the module from the blob store.
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
    /// Tell a submitter that its task changed.
    Notify {
        /// Recipient.
        submitter: String,
        /// The task as it is now.
        info: Box<TaskInfo>,
    },
}

/// What a batch of scheduler calls asks the engine to do.
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
    /// Ledger postings to append.
    pub postings: Vec<Posting>,
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
    book: Book,
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
            book: Book::default(),
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
                earnings: Default::default(),
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

    /// An operator revoked `node`: it is offline for good, and what it held goes to others. (The
    /// MQTT listener drops whatever a revoked node still says, so it never comes back online.)
    pub fn on_revoked(&mut self, node: &str, now: DateTime<Utc>) {
        self.node_offline(node, "was revoked", now);
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
                let Some((task, i)) = self.assignment_mut(task_id, attempt, node) else {
                    return;
                };
                let a = &mut task.assignments[i];
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
            AgentEvent::Fl { .. } => {} // the federated driver takes these
        }
    }

    fn on_result(&mut self, node: &str, result: TaskResult, now: DateTime<Utc>) {
        let (task_id, attempt) = (result.task_id, result.attempt);
        // Whatever happens below, the node may stop re-sending: either the result is recorded
        // (and persisted before this ack goes out), or it is one the scheduler will never use.
        self.publish.push(Outbound::Control {
            node: node.to_string(),
            control: Control::ResultAck { task_id, attempt },
        });
        let Some((task, i)) = self.assignment_mut(task_id, attempt, node) else {
            return;
        };
        let a = &mut task.assignments[i];
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
            postings: self.book.take_postings(),
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

    /// The task `task_id` and the index of its assignment `attempt`, if the scheduler holds the
    /// task and `node` holds that assignment (attempts are unique within a task).
    fn assignment_mut(
        &mut self,
        task_id: Uuid,
        attempt: u32,
        node: &str,
    ) -> Option<(&mut TaskRecord, usize)> {
        let task = self.tasks.get_mut(&task_id)?;
        let i = task
            .assignments
            .iter()
            .position(|a| a.attempt == attempt && a.node_id == node)?;
        Some((task, i))
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
        let Some((task, i)) = self
            .assignment_mut(task_id, attempt, node)
            .filter(|(task, i)| task.assignments[*i].state.is_active())
        else {
            return false;
        };
        let a = &mut task.assignments[i];
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
        self.settle(&mut task, now);
        self.publish.extend(task.notification());
        let parent = task.parent;
        let shards = task.sharded().map(|s| s.shards.clone()).unwrap_or_default();
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
}

pub(crate) fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

#[cfg(test)]
mod credit_tests;
#[cfg(test)]
mod tests;
