//! `federated_learning` tasks as the scheduler keeps them: persisted, with status, progress,
//! notifications and queue timeout, but never placed by it. The federated driver
//! ([`crate::kinds::fl`]) places and runs them through these methods.

use ambient_protocol::{Progress, TaskStatus};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Federated, KindState, Outbound, Scheduler};

/// How a federated job ended.
#[derive(Debug, Clone, PartialEq)]
pub enum FlOutcome {
    /// It trained: the task's result (`{"output", "nodes"}`).
    Done(serde_json::Value),
    /// It failed, for this reason (the task's `error`).
    Failed(String),
}

impl Scheduler {
    /// Queues a message to publish after the next persist (for the federated driver).
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
            .filter(|t| t.federated().is_some_and(|f| !f.clients.is_empty()))
            .map(|t| t.id)
            .collect()
    }

    /// `federated_learning` tasks not started yet, oldest first.
    pub fn fl_waiting(&self) -> Vec<Uuid> {
        let mut v: Vec<(&DateTime<Utc>, Uuid)> = self
            .tasks
            .values()
            .filter(|t| t.federated().is_some_and(|f| f.clients.is_empty()))
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
            if let KindState::Federated(f) = &mut t.kind {
                f.clients = nodes;
                f.progress = Some(Progress { done: 0, total });
            }
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
        let KindState::Federated(Federated {
            progress: Some(p), ..
        }) = &mut t.kind
        else {
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
    pub fn fl_finish(&mut self, task_id: Uuid, outcome: FlOutcome, now: DateTime<Utc>) {
        match outcome {
            FlOutcome::Done(result) => {
                // The driver reports a round when it starts; a job that is done has done them all.
                if let Some(t) = self.tasks.get_mut(&task_id)
                    && let KindState::Federated(Federated {
                        progress: Some(p), ..
                    }) = &mut t.kind
                {
                    p.done = p.total;
                }
                self.finish(task_id, TaskStatus::Completed, Some(result), None, now)
            }
            FlOutcome::Failed(why) => {
                self.finish(task_id, TaskStatus::Failed, None, Some(why), now)
            }
        }
    }
}
