//! Settling a replicated task: answers, quorum, extra replicas, and the judgement of every
//! answering node. Proofs of `zk_proof` tasks are checked outside (the scheduler does no
//! cryptography) and reported here.

use std::collections::BTreeMap;

use ambient_protocol::{Outcome, TaskStatus, TaskType};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{AssignmentRecord, KindState, Scheduler};
use crate::reputation::EventKind;

pub(super) fn short(h: &str) -> &str {
    &h[..h.len().min(12)]
}

impl Scheduler {
    /// Records the verified proof behind a task's result (checked outside the scheduler, which
    /// does no cryptography). Call it before handing the result over, so that the completion and
    /// its notification carry the proof id.
    pub fn attach_proof(&mut self, task_id: Uuid, proof_id: String) {
        if let Some(t) = self.tasks.get_mut(&task_id) {
            if let KindState::Replicated(r) = &mut t.kind {
                r.proof_id = Some(proof_id);
            }
            self.mark(task_id);
        }
    }

    /// Settles a task once `min_nodes` answers are in: the largest group of identical answers
    /// from trusted nodes wins when it holds a quorum (a strict majority of `min_nodes`).
    /// Without one, one more replica is added, BOINC-style, while the retry budget allows; past
    /// it the task fails. Every node that gave the winning answer is judged valid, every other
    /// answering node invalid.
    ///
    /// Only trusted nodes (reputation at or above [`crate::reputation::TRUST_THRESHOLD`]) count towards
    /// a replicated task's quorum: nodes caught lying cannot outvote anyone, whatever they agree
    /// on among themselves. Their answers are still judged, so they can earn trust back.
    pub(super) fn decide(&mut self, task_id: Uuid, now: DateTime<Utc>) {
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
                    if let KindState::Replicated(r) = &mut t.kind {
                        r.extra_replicas += 1;
                    }
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
        // Which wasm engine each agreeing replica ran on (a JIT node and an interpreter node
        // agree byte for byte), for the submitter to see.
        let engines: serde_json::Map<String, serde_json::Value> = won
            .iter()
            .filter_map(|(a, _)| {
                let engine = a.result.as_ref()?.engine.clone()?;
                Some((a.node_id.clone(), engine.into()))
            })
            .collect();
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
                    "engines": engines,
                });
                self.finish(task_id, TaskStatus::Completed, Some(result), None, now);
            }
            Outcome::Failure { kind, message } => {
                let error = format!("{kind}: {message}");
                self.finish(task_id, TaskStatus::Failed, None, Some(error), now);
            }
        }
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
}
