//! Sharded `computation` tasks: a parent that is never assigned itself, and one replicated
//! shard task per input, whose outputs are reduced once every shard has completed.

use ambient_protocol::TaskStatus;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{KindState, Scheduler, TaskRecord};
use crate::kinds::computation;

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
                let KindState::Sharded(sharded) = &mut parent.kind else {
                    return;
                };
                sharded.outputs.insert(index, output);
                for n in shard.info().assigned_nodes {
                    if !sharded.nodes.contains(&n) {
                        sharded.nodes.push(n);
                    }
                }
                if sharded.outputs.len() < sharded.shards.len() {
                    parent.updated_at = now;
                    self.dirty_tasks.insert(parent_id);
                    let note = parent.notification();
                    self.publish.extend(note);
                    return;
                }
                // The last shard: only now are the outputs gathered (not at every shard).
                let outputs: Vec<serde_json::Value> = sharded.outputs.values().cloned().collect();
                let (reducer, nodes) = (sharded.reduce, sharded.nodes.clone());
                parent.updated_at = now;
                self.dirty_tasks.insert(parent_id);
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
