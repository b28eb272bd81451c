//! Paying for work: a task's cost is reserved when it is submitted and settled when it ends
//! ([`crate::credits`] has the rules). The scheduler decides which answers were valid; this is
//! where that decision becomes charges and payments, in the same effects as the task's end.

use ambient_fl::wire::JobSpec;
use ambient_protocol::{Outcome, TaskCost, TaskStatus, TaskType};
use chrono::{DateTime, Utc};

use super::{KindState, Scheduler, TaskRecord};
use crate::credits::{Book, CreditRefusal, Units};

impl Scheduler {
    /// Sets the book the scheduler moves credits with (restored from the ledger).
    pub fn with_book(mut self, book: Book) -> Scheduler {
        self.book = book;
        self
    }

    /// The book.
    pub fn book(&self) -> &Book {
        &self.book
    }

    /// The book, for what changes it without a task (grants, limits): its postings are written
    /// with the scheduler's next effects.
    pub fn book_mut(&mut self) -> &mut Book {
        &mut self.book
    }

    /// Reserves what `task` (top-level; `shards` when it is a computation) can cost from its
    /// submitter's balance, within the account's limits, and records the estimate on it.
    pub fn reserve(
        &mut self,
        task: &mut TaskRecord,
        shards: usize,
        now: DateTime<Utc>,
    ) -> Result<(), CreditRefusal> {
        let estimated = self.estimate(task, shards);
        self.book
            .reserve(task.id, &task.submitter, estimated, now)?;
        task.cost = Some(TaskCost {
            estimated,
            charged: None,
        });
        Ok(())
    }

    /// The most `task` can cost: see [`crate::credits::prices::Prices::list`].
    fn estimate(&self, task: &TaskRecord, shards: usize) -> i64 {
        let p = self.book.prices();
        let r = &task.requirements;
        let replica = p.replica(
            task.task_type,
            p.budget(task.task_type, r.max_execution_time_sec),
        );
        let min = i64::from(r.min_nodes);
        // Saturating: a reservation past any balance is refused, never wrapped.
        match task.task_type {
            TaskType::WasmExecution => min.saturating_mul(replica),
            TaskType::Computation => (shards.max(1) as i64)
                .saturating_mul(min)
                .saturating_mul(replica),
            TaskType::Inference => replica,
            TaskType::ZkProof => p.replica(TaskType::ZkProof, zk_constraints(task)),
            TaskType::FederatedLearning => {
                let (rounds, timeout) = serde_json::from_value::<JobSpec>(task.inputs.clone())
                    .map(|j| (i64::from(j.rounds), j.round_timeout_sec))
                    .unwrap_or((1, r.max_execution_time_sec));
                let round = p.replica(task.task_type, p.budget(task.task_type, timeout));
                min.saturating_mul(rounds).saturating_mul(round)
            }
        }
    }

    /// Settles a task that just ended (called by `finish`, before the task is written): charges
    /// its valid work, pays its nodes, and for a top-level task releases the rest of its escrow
    /// and records what it was charged.
    pub(super) fn settle(&mut self, task: &mut TaskRecord, now: DateTime<Utc>) {
        let escrow_task = task.parent.unwrap_or(task.id);
        let Some(reserved) = self.book.escrow(&escrow_task).map(|e| e.reserved) else {
            return; // a task from before credits
        };
        let charges = if task.status == TaskStatus::Completed {
            self.charges(task)
        } else {
            Vec::new()
        };
        let close = task.parent.is_none();
        let settled = self.book.settle(task.id, escrow_task, &charges, close, now);
        for (node, amount) in settled.paid {
            if let Some(slot) = self.nodes.get_mut(&node) {
                slot.record.earnings.pay(amount, now);
                self.dirty_nodes.insert(node);
            }
        }
        if close && let Some(cost) = &mut task.cost {
            cost.charged = Some(reserved - settled.released);
        }
    }

    /// What each node's valid work on a completed task costs.
    fn charges(&self, task: &TaskRecord) -> Vec<(String, i64)> {
        let p = self.book.prices();
        match &task.kind {
            KindState::Sharded(_) => Vec::new(), // its shards were settled one by one
            KindState::Federated(f) => {
                let Ok(job) = serde_json::from_value::<JobSpec>(task.inputs.clone()) else {
                    return Vec::new();
                };
                f.clients
                    .iter()
                    .map(|node| {
                        let steps = self.fl_steps(node, &job);
                        (node.clone(), p.replica(task.task_type, steps))
                    })
                    .collect()
            }
            KindState::Replicated(_) => {
                let winners: Vec<String> = task
                    .result
                    .as_ref()
                    .and_then(|r| serde_json::from_value(r["nodes"].clone()).ok())
                    .unwrap_or_default();
                let (kind, units) = self.agreed_units(task, &winners);
                winners
                    .into_iter()
                    .take(task.requirements.min_nodes as usize)
                    .map(|node| (node, p.replica(kind, units)))
                    .collect()
            }
        }
    }

    /// The work the winning replicas agree they did, and the kind whose rate prices it: the
    /// least any of them reported (fuel and MACs are deterministic, so honest replicas report
    /// the same). A proof is priced by its circuit's constraints, at `zk_proof`'s rate: a
    /// `zk_proof` circuit's are known from its inputs, a proved model's the coordinator wrote
    /// into the output it checked.
    fn agreed_units(&self, task: &TaskRecord, winners: &[String]) -> (TaskType, Units) {
        if task.task_type == TaskType::ZkProof {
            return (TaskType::ZkProof, zk_constraints(task));
        }
        if task.needs_proof() {
            let constraints = task
                .result
                .as_ref()
                .and_then(|r| r["output"]["constraints"].as_u64());
            return (TaskType::ZkProof, Units(constraints.unwrap_or(0)));
        }
        let reported = task
            .assignments
            .iter()
            .filter(|a| winners.contains(&a.node_id))
            .filter_map(|a| a.result.as_ref())
            .filter(|r| matches!(r.outcome, Outcome::Success { .. }))
            .map(|r| match task.task_type {
                TaskType::Inference => r.macs.unwrap_or(0),
                _ => r.fuel_consumed.unwrap_or(0),
            })
            .min();
        (task.task_type, Units(reported.unwrap_or(0)))
    }

    /// A federated client's training: rows × epochs × parameters × rounds, from the data set its
    /// node advertises.
    fn fl_steps(&self, node: &str, job: &JobSpec) -> Units {
        let Some(data) = self
            .nodes
            .get(node)
            .and_then(|n| n.record.health.as_ref())
            .and_then(|h| h.datasets.iter().find(|d| d.name == job.dataset))
        else {
            return Units(0);
        };
        let params = job.model.spec(data.features as usize).num_params() as u64;
        Units(
            data.rows
                .saturating_mul(job.local.epochs as u64)
                .saturating_mul(params)
                .saturating_mul(u64::from(job.rounds)),
        )
    }
}

/// The constraints of a `zk_proof` task's circuit (known from its inputs).
fn zk_constraints(task: &TaskRecord) -> Units {
    let spec = ambient_zk::task::parse_task_inputs(&task.inputs).map(|(spec, _)| spec);
    Units(spec.map_or(0, |s| s.expected_constraints() as u64))
}
