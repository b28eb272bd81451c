//! Sharded `computation` tasks: a parent that is never assigned itself, and one replicated
//! shard task per input, whose outputs are reduced once every shard has completed.

use ambient_protocol::TaskStatus;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Scheduler, TaskRecord};
use crate::kinds::computation::{self, Reduce};

impl Scheduler {
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

    /// A shard ended: record its output, and settle the computation when it can be.
    pub(super) fn shard_done(&mut self, parent_id: Uuid, shard: &TaskRecord, now: DateTime<Utc>) {
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
                match computation::apply(reducer, &outputs) {
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
}
