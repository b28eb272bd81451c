//! Matching tasks to nodes: eligibility, ranking by health and reputation, adaptive
//! replication, and the node view the API shows.

use std::collections::{BTreeMap, BTreeSet};

use ambient_protocol::{
    Assignment, Health, NodeInfo, NodeState, ReputationInfo, TaskStatus, TaskType,
};
use chrono::{DateTime, Duration, Utc};
use rand::seq::SliceRandom as _;
use uuid::Uuid;

use super::record::failure_text;
use super::{
    AssignmentRecord, AssignmentState, KindState, NodeSlot, Outbound, Scheduler, TaskRecord, round1,
};
use crate::reputation;

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

impl Scheduler {
    /// Places every task that lacks replicas on the best eligible nodes.
    pub(super) fn schedule(&mut self, now: DateTime<Utc>) {
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

    pub(super) fn place(&mut self, task_id: Uuid, now: DateTime<Utc>) {
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
            // Nodes that lost a replica of this task stay last, as ranked.
            let tried = task.tried();
            let (mut drawn, rest): (Vec<String>, Vec<String>) = candidates
                .into_iter()
                .partition(|n| self.is_trusted(n, now) && !tried.contains(n.as_str()));
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
        if let KindState::Replicated(r) = &mut task.kind {
            r.adaptive |= trust;
        }
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
                    task_id,
                    attempt,
                    task_type: task.task_type,
                    artifact_base64: None,
                    artifact_sha256: task.artifact_sha256.clone(),
                    inputs: task.inputs.clone(),
                    require_proof: task.requirements.require_proof,
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
    pub(super) fn candidates(
        &self,
        task: &TaskRecord,
        now: DateTime<Utc>,
    ) -> (Vec<String>, String, bool) {
        let (used, tried) = (task.holders(), task.tried());
        let mut ranked: Vec<(f64, &str)> = Vec::new();
        let mut reasons: BTreeMap<&'static str, u32> = BTreeMap::new();
        for slot in self.nodes.values() {
            let why = self.ineligible(task, slot, &used);
            match why {
                None => {
                    let h = slot.record.health.as_ref().map(health_score).unwrap_or(0.0);
                    let rep = slot.record.reputation.score(now);
                    let mut score = h * (0.5 + rep / 200.0) - f64::from(slot.active);
                    if tried.contains(slot.record.id.as_str()) {
                        score -= 1e9; // last resort
                    }
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

    pub(super) fn ineligible(
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
        // A proved inference needs an agent built with both executors.
        if task.task_type == TaskType::Inference
            && task.requirements.require_proof
            && !h.supported_task_types.contains(&TaskType::ZkProof)
        {
            return Some("not proving inference");
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
pub(super) fn spot_checked(id: &Uuid) -> bool {
    u32::from(id.as_bytes()[0]) * 100 < SPOT_CHECK_PERCENT * 256
}

/// The ineligibility reason of a node whose slots are all taken.
const BUSY: &str = "busy";

pub(super) fn node_info(slot: &NodeSlot, now: DateTime<Utc>) -> NodeInfo {
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
            valid: rep.totals.valid,
            invalid: rep.totals.invalid,
            timeouts: rep.totals.timeouts,
            lost: rep.totals.lost,
            proofs_verified: rep.totals.proofs_verified,
            proofs_rejected: rep.totals.proofs_rejected,
            streak: rep.streak,
            trusted: rep.score(now) >= reputation::TRUST_THRESHOLD,
        },
        identity: None, // known to the API, which fills it in
        credits: r.earnings.info(now),
    }
}
