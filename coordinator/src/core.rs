//! The core loop: the one task that owns the [`Scheduler`].
//!
//! Everything that changes scheduling state arrives here as a [`CoreMsg`]: submissions and
//! cancels from the API and the submit topic, health, presence and results from the MQTT link,
//! and a periodic tick. After each message the loop persists what changed and only then publishes
//! what the change asked for (assignments, acks, cancels, submitter notifications), so nothing is
//! acknowledged that is not on disk.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ambient_link::{AsyncClient, QoS};
use ambient_protocol::{AgentEvent, Health, NodeInfo, NodeState, TaskInfo, topics};
use base64::Engine as _;
use chrono::Utc;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use uuid::Uuid;

use crate::intake::{Accepted, SubmitError};
use crate::metrics::Metrics;
use crate::scheduler::{CancelError, Outbound, Scheduler, TaskRecord};
use crate::store::{Store, StoreError};

/// A request to the core.
#[derive(Debug)]
pub enum CoreMsg {
    /// A checked submission whose module is already in the blob store.
    Submit {
        /// Owner.
        submitter: String,
        /// The submission.
        accepted: Accepted,
        /// Where to answer (MQTT intake turns an error into a rejection on the submitter's topic).
        reply: Option<oneshot::Sender<Result<TaskInfo, SubmitError>>>,
    },
    /// Cancel a task.
    Cancel {
        /// Task.
        task_id: Uuid,
        /// Who asks.
        submitter: String,
        /// Answer.
        reply: oneshot::Sender<Result<(), CancelError>>,
    },
    /// A node's health report.
    Health(Health),
    /// A node's presence.
    Status(String, NodeState),
    /// A message on a node's results topic.
    Agent(String, AgentEvent),
    /// List nodes.
    Nodes(oneshot::Sender<Vec<NodeInfo>>),
    /// One node.
    Node(String, oneshot::Sender<Option<NodeInfo>>),
}

/// Owns the scheduler and runs until `shutdown`.
pub struct Core {
    pub(crate) sched: Scheduler,
    pub(crate) store: Store,
    pub(crate) mqtt: AsyncClient,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) tick: Duration,
    /// Base64 of modules by sha256, so a module is read and encoded once, not per replica.
    pub(crate) modules: HashMap<String, Arc<str>>,
}

impl Core {
    /// The loop.
    pub async fn run(mut self, mut rx: mpsc::Receiver<CoreMsg>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(msg) => self.handle(msg).await,
                    None => break,
                },
                _ = tick.tick() => {
                    self.sched.tick(Utc::now());
                    self.flush().await;
                }
                _ = shutdown.cancelled() => break,
            }
        }
        // Drain: write whatever is still pending before exit.
        self.flush().await;
        info!("Coordinator core stopped.");
    }

    async fn handle(&mut self, msg: CoreMsg) {
        let now = Utc::now();
        match msg {
            CoreMsg::Submit {
                submitter,
                accepted,
                reply,
            } => {
                let result = self.submit(submitter, accepted).await;
                if let Some(reply) = reply {
                    let _ = reply.send(result);
                }
                return;
            }
            CoreMsg::Cancel {
                task_id,
                submitter,
                reply,
            } => {
                let r = self.sched.cancel(task_id, &submitter, now);
                self.flush().await;
                let _ = reply.send(r);
                return;
            }
            CoreMsg::Health(h) => self.sched.on_health(h, now),
            CoreMsg::Status(node, state) => self.sched.on_status(&node, state, now),
            CoreMsg::Agent(node, ev) => {
                if matches!(ev, AgentEvent::Finished { .. }) {
                    Metrics::inc(&self.metrics.results_received);
                }
                self.sched.on_agent_event(&node, ev, now);
            }
            CoreMsg::Nodes(reply) => {
                let _ = reply.send(self.sched.node_infos(now));
                return;
            }
            CoreMsg::Node(id, reply) => {
                let _ = reply.send(self.sched.node_info(&id, now));
                return;
            }
        }
        self.flush().await;
    }

    async fn submit(
        &mut self,
        submitter: String,
        accepted: Accepted,
    ) -> Result<TaskInfo, SubmitError> {
        let sub = accepted.submission;
        if let Some(id) = sub.task_id {
            // A submitter-chosen id makes MQTT submission idempotent under QoS1 redelivery.
            let existing = match self.sched.task(&id) {
                Some(t) => Some(t.clone()),
                None => self.store.task(id).await.ok().flatten(),
            };
            if let Some(t) = existing {
                return if t.submitter == submitter {
                    Ok(t.info())
                } else {
                    Err(SubmitError::IdTaken(id))
                };
            }
        }
        let now = Utc::now();
        let artifact = accepted
            .artifact
            .map(|(sha, _)| sha)
            .or(accepted.artifact_ref);
        let mut task = TaskRecord::new(
            sub.task_id.unwrap_or_else(Uuid::new_v4),
            submitter,
            sub.task_type,
            sub.inputs,
            sub.requirements,
            artifact.clone(),
            now,
        );
        let id = task.id;
        info!(task_id = %id, submitter = %task.submitter, task_type = %task.task_type, "Task accepted.");
        Metrics::inc(&self.metrics.tasks_submitted);
        match accepted.shards {
            None => self.sched.submit(task, now),
            Some((inputs, reduce)) => {
                // The kernel is in the blob store; keep only its address in the record.
                if let Some(obj) = task.inputs.as_object_mut() {
                    obj.remove("kernel_base64");
                    obj.insert("kernel_sha256".into(), artifact.clone().into());
                }
                task.reduce = Some(reduce);
                let shards: Vec<TaskRecord> = inputs
                    .into_iter()
                    .enumerate()
                    .map(|(k, input)| {
                        let mut s = TaskRecord::new(
                            Uuid::new_v4(),
                            task.submitter.clone(),
                            ambient_protocol::TaskType::WasmExecution,
                            input,
                            ambient_protocol::Requirements {
                                min_nodes: 1,
                                ..task.requirements.clone()
                            },
                            artifact.clone(),
                            now,
                        );
                        s.parent = Some(id);
                        s.shard = Some(k as u32);
                        s
                    })
                    .collect();
                task.shards = shards.iter().map(|s| s.id).collect();
                self.sched.submit_sharded(task, shards, now);
            }
        }
        self.flush().await;
        let saved = self.store.task(id).await;
        match saved {
            Ok(Some(t)) => Ok(t.info()),
            Ok(None) => Err(SubmitError::Unavailable(
                "the task was not persisted".into(),
            )),
            Err(e) => Err(SubmitError::Unavailable(e.to_string())),
        }
    }

    /// Persists what changed, then publishes what followed from it.
    async fn flush(&mut self) {
        let effects = self.sched.take_effects();
        for t in &effects.tasks {
            if t.status.is_terminal() {
                self.metrics.count_terminal(t.status);
            }
        }
        if let Err(e) = self
            .store
            .save(effects.tasks, effects.nodes, effects.reputation)
            .await
        {
            // Nothing is published: acks stay unsent, so agents re-send and nothing is lost.
            error!(error = %e, "Could not persist scheduler state; withholding acknowledgements.");
            return;
        }
        self.metrics.set_gauges(
            self.sched.online_nodes() as u64,
            self.sched.active_tasks() as u64,
        );
        for out in effects.publish {
            self.publish(out).await;
        }
    }

    async fn publish(&mut self, out: Outbound) {
        let (topic, payload) = match out {
            Outbound::Dispatch {
                node,
                mut assignment,
            } => {
                if let Some(sha) = assignment.artifact_sha256.clone() {
                    match self.module(&sha).await {
                        Ok(b64) => assignment.artifact_base64 = Some(b64.to_string()),
                        Err(e) => {
                            // The lease will expire and the task fail with a reason after retries.
                            error!(task_id = %assignment.task_id, module = %sha, error = %e,
                                   "Module missing from the blob store.");
                            return;
                        }
                    }
                }
                info!(task_id = %assignment.task_id, attempt = assignment.attempt, node = %node, "Task dispatched.");
                (topics::node_tasks(&node), to_json(&assignment))
            }
            Outbound::Control { node, control } => (topics::node_control(&node), to_json(&control)),
            Outbound::Notify { submitter, info } => (
                topics::submitter_task(&submitter, &info.task_id),
                to_json(&*info),
            ),
        };
        // Never block the core on a full request queue: every message here is either re-sent by
        // its peer (acks), recovered by a lease (dispatch), or advisory (notifications).
        if let Err(e) = self
            .mqtt
            .try_publish(topic, QoS::AtLeastOnce, false, payload)
        {
            warn!(error = %e, "MQTT publish queue full; message dropped (leases and re-sends recover).");
        }
    }

    async fn module(&mut self, sha: &str) -> Result<Arc<str>, StoreError> {
        if let Some(m) = self.modules.get(sha) {
            return Ok(m.clone());
        }
        let bytes = self
            .store
            .blob(sha.to_string())
            .await?
            .ok_or_else(|| StoreError::Missing(sha.to_string()))?;
        let b64: Arc<str> = base64::engine::general_purpose::STANDARD
            .encode(bytes)
            .into();
        if self.modules.len() >= 64 {
            self.modules.clear();
        }
        self.modules.insert(sha.to_string(), b64.clone());
        Ok(b64)
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}
