//! Tasks that carry a proof (`zk_proof`, a proved `inference`) waiting for their Groth16 keys.
//! Such a task is accepted and persisted pending, without its artifact (the proving key), and
//! is not placed ([`TaskRecord::waits_for_keys`]); the engine gives it the key once its
//! circuit's or model's keys are made (`crate::kinds::groth16::release_waiting`), and it is
//! placed like any other task.
//! While it waits its queue timeout does not run: a setup is work under way, not a lack of
//! nodes.

use ambient_protocol::{TaskStatus, TaskType};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Scheduler, TaskRecord};

impl Scheduler {
    /// The tasks waiting for their keys, with their kinds and inputs.
    pub fn zk_waiting(&self) -> Vec<(Uuid, TaskType, serde_json::Value)> {
        self.tasks
            .values()
            .filter(|t| t.waits_for_keys())
            .map(|t| (t.id, t.task_type, t.inputs.clone()))
            .collect()
    }

    /// Says what a task waiting for its keys waits for (written only when it changes).
    pub fn zk_waiting_reason(&mut self, task_id: Uuid, reason: String, now: DateTime<Utc>) {
        if let Some(t) = self.tasks.get_mut(&task_id)
            && t.waits_for_keys()
            && t.status_reason.as_ref() != Some(&reason)
        {
            t.status_reason = Some(reason);
            t.waiting_since = None;
            t.updated_at = now;
            self.mark(task_id);
        }
    }

    /// The task's circuit has keys: the proving key `sha256` becomes its artifact, and it is
    /// placed (its queue timeout starts now).
    pub fn zk_keys_ready(&mut self, task_id: Uuid, sha256: String, now: DateTime<Utc>) {
        let Some(t) = self.tasks.get_mut(&task_id).filter(|t| t.waits_for_keys()) else {
            return;
        };
        t.artifact_sha256 = Some(sha256);
        t.status_reason = None;
        t.waiting_since = Some(now);
        t.updated_at = now;
        self.mark(task_id);
        self.place(task_id, now);
    }

    /// The task's circuit's keys could not be made: it fails, saying why.
    pub fn zk_keys_failed(&mut self, task_id: Uuid, why: String, now: DateTime<Utc>) {
        if self
            .tasks
            .get(&task_id)
            .is_some_and(TaskRecord::waits_for_keys)
        {
            self.finish(task_id, TaskStatus::Failed, None, Some(why), now);
        }
    }
}
