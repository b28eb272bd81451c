//! The core loop: the one task that owns the [`Scheduler`].
//!
//! Everything that changes scheduling state arrives here as a [`CoreMsg`]: submissions and
//! cancels from the API and the submit topic, health, presence and results from the MQTT link,
//! and a periodic tick. After each message the loop persists what changed and only then publishes
//! what the change asked for (assignments, acks, cancels, submitter notifications), so nothing is
//! acknowledged that is not on disk.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use ambient_link::{AsyncClient, QoS};
use ambient_protocol::{
    AgentEvent, Health, NodeInfo, NodeState, Outcome, PROTOCOL_VERSION, ReputationReport, TaskInfo,
    TaskType, topics,
};
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
    /// Base64 of inline artifacts by sha256, so one is read and encoded once, not per replica.
    pub(crate) modules: HashMap<String, Arc<str>>,
    /// Larger artifacts go to agents by reference.
    pub(crate) inline_artifact_bytes: usize,
    /// Blobs stored for federated rounds, with how many rounds use each (jobs with the same
    /// model and seed share their first), deleted when the last is over. A job resumed after a
    /// restart adopts the blob of its checkpoint's model.
    pub(crate) temporary_blobs: HashMap<String, u32>,
    /// Circuits and verifying keys of `zk_proof` tasks.
    pub(crate) zk: Arc<crate::zk::Zk>,
    /// Nodes whose reputation changed since their last report was published.
    pub(crate) reputation_changed: BTreeSet<String>,
    /// Running `federated_learning` jobs.
    pub(crate) fl: crate::fl::FlDriver,
}

/// Events in a published reputation report's history.
pub const REPORT_HISTORY: u32 = 100;

/// A node's reputation report: its standing from the scheduler, its recent events from the store.
pub async fn reputation_report(
    store: &Store,
    node: NodeInfo,
    limit: u32,
) -> Result<ReputationReport, StoreError> {
    Ok(ReputationReport {
        v: PROTOCOL_VERSION,
        history: store
            .reputation_history(node.node_id.clone(), limit)
            .await?,
        node_id: node.node_id,
        at: Utc::now(),
        reputation: node.reputation,
    })
}

impl Core {
    /// The loop.
    pub async fn run(mut self, mut rx: mpsc::Receiver<CoreMsg>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        cpu_bound(|| self.fl.recover(&mut self.sched, Utc::now()));
        self.flush().await;
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(msg) => self.handle(msg).await,
                    None => break,
                },
                _ = tick.tick() => {
                    let now = Utc::now();
                    self.sched.tick(now);
                    cpu_bound(|| self.fl.tick(&mut self.sched, now));
                    self.flush().await;
                    self.publish_reputations().await;
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
            CoreMsg::Agent(node, AgentEvent::Fl { task_id, msg, .. }) => {
                cpu_bound(|| {
                    self.fl
                        .on_message(&mut self.sched, &node, task_id, msg, now)
                });
                self.metrics
                    .fl_refused
                    .store(self.fl.refused, std::sync::atomic::Ordering::Relaxed);
            }
            CoreMsg::Agent(node, ev) => {
                if let AgentEvent::Finished { result, .. } = &ev {
                    Metrics::inc(&self.metrics.results_received);
                    if self
                        .sched
                        .was_assigned(&result.task_id, &node, result.attempt)
                        == Some(false)
                    {
                        warn!(task_id = %result.task_id, attempt = result.attempt, node = %node,
                              "Result refused: this task was not assigned to this node.");
                        Metrics::inc(&self.metrics.results_refused);
                        return;
                    }
                }
                let Some(ev) = self.check_proof(&node, ev).await else {
                    return; // not acknowledged: the agent re-sends it
                };
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
        let artifact = if sub.task_type == TaskType::ZkProof {
            // The artifact of a proof task is its circuit's proving key.
            match self.zk.artifact_for(&sub.inputs) {
                Some(sha) => Some(sha),
                None => {
                    return Err(SubmitError::InvalidInputs(format!(
                        "no proving key for these inputs; supported circuits: {}",
                        crate::zk::supported_list()
                    )));
                }
            }
        } else {
            accepted
                .artifact
                .map(|(sha, _)| sha)
                .or(accepted.artifact_ref)
        };
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

    /// Checks the proof of a `zk_proof` result before the scheduler sees it. A proof that does
    /// not verify turns the result into a `proof_rejected` failure, which is not deterministic,
    /// so the scheduler retries the task elsewhere. A verified proof is stored and its id
    /// attached to the task. Returns `None` when the proof could not be stored: the result is
    /// then not acknowledged, and the agent sends it again.
    async fn check_proof(&mut self, node: &str, ev: AgentEvent) -> Option<AgentEvent> {
        let AgentEvent::Finished { v, mut result } = ev else {
            return Some(ev);
        };
        let task_id = result.task_id;
        let is_zk = self
            .sched
            .task(&task_id)
            .is_some_and(|t| t.task_type == TaskType::ZkProof);
        if !is_zk || !self.sched.awaits_result(&task_id, node, result.attempt) {
            return Some(AgentEvent::Finished { v, result });
        }
        let Outcome::Success { output, .. } = &result.outcome else {
            return Some(AgentEvent::Finished { v, result });
        };
        let inputs = self.sched.task(&task_id).map(|t| t.inputs.clone())?;
        let (zk, output) = (self.zk.clone(), output.clone());
        let checked =
            tokio::task::spawn_blocking(move || zk.verify_result(task_id, &inputs, &output))
                .await
                .unwrap_or_else(|e| Err(format!("the verifier crashed: {e}")));
        match checked {
            Ok(verified) => {
                let proof_id = Uuid::new_v4();
                let public: Vec<String> = ambient_zk::snarkjs_public_json(&verified.public)
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                let record = crate::store::ProofRecord {
                    id: proof_id,
                    task_id,
                    circuit: verified.spec.id().name().to_owned(),
                    size: verified.spec.size() as u64,
                    public_inputs: public.clone(),
                    proof: verified.proof,
                    verified_at: Utc::now(),
                };
                if let Err(e) = self.store.put_proof(record).await {
                    error!(task_id = %task_id, error = %e, "Could not store a verified proof.");
                    return None;
                }
                info!(task_id = %task_id, node = %node, proof_id = %proof_id, "Proof verified.");
                if let Outcome::Success {
                    output,
                    output_sha256,
                } = &mut result.outcome
                {
                    // What the coordinator checked, not what the node wrote beside it.
                    output["public_inputs"] = public.into();
                    *output_sha256 = ambient_protocol::sha256_hex(verified.statement.as_bytes());
                }
                self.sched.attach_proof(task_id, proof_id.to_string());
                self.sched.judge_proof(node, task_id, true, Utc::now());
            }
            Err(reason) => {
                warn!(task_id = %task_id, node = %node, reason = %reason, "Proof rejected.");
                self.sched.judge_proof(node, task_id, false, Utc::now());
                result.outcome = Outcome::Failure {
                    kind: "proof_rejected".into(),
                    message: reason,
                };
            }
        }
        Some(AgentEvent::Finished { v, result })
    }

    /// Persists what changed, then publishes what followed from it.
    async fn flush(&mut self) {
        let effects = self.sched.take_effects();
        let judged: Vec<String> = effects.reputation.iter().map(|e| e.node.clone()).collect();
        for t in &effects.tasks {
            if t.status.is_terminal() {
                self.metrics.count_terminal(t.status);
            }
        }
        if let Err(e) = self
            .store
            .save(
                effects.tasks,
                effects.nodes,
                effects.reputation,
                effects.fl_checkpoints,
            )
            .await
        {
            // Nothing is published: acks stay unsent, so agents re-send and nothing is lost.
            error!(error = %e, "Could not persist scheduler state; withholding acknowledgements.");
            return;
        }
        self.reputation_changed.extend(judged);
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
                    match self.inline_artifact(&sha).await {
                        Ok(Some(b64)) => assignment.artifact_base64 = Some(b64.to_string()),
                        Ok(None) => {} // by reference: the agent downloads it
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
            Outbound::Blob { sha256, bytes } => {
                // The same bytes stored by someone else (an upload): use them, never delete them.
                if !self.temporary_blobs.contains_key(&sha256)
                    && matches!(self.store.blob_size(sha256.clone()).await, Ok(Some(_)))
                {
                    return;
                }
                match self.store.put_blob(sha256.clone(), bytes).await {
                    Ok(()) => *self.temporary_blobs.entry(sha256).or_default() += 1,
                    // The clients fail to fetch it and leave; the round fails with that reason.
                    Err(e) => {
                        error!(blob = %sha256, error = %e, "Could not store a federated model blob.")
                    }
                }
                return;
            }
            Outbound::AdoptBlob { sha256 } => {
                if matches!(self.store.blob_size(sha256.clone()).await, Ok(Some(_))) {
                    *self.temporary_blobs.entry(sha256).or_default() += 1;
                }
                return;
            }
            Outbound::ForgetBlob { sha256 } => {
                let Some(users) = self.temporary_blobs.get_mut(&sha256) else {
                    return;
                };
                *users -= 1;
                if *users == 0 {
                    self.temporary_blobs.remove(&sha256);
                    if let Err(e) = self.store.delete_blob(sha256.clone()).await {
                        warn!(blob = %sha256, error = %e, "Could not delete a federated model blob.");
                    }
                }
                return;
            }
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

    /// Publishes, retained, the report of every node judged since the last tick, so the node
    /// (and its owner's tray app) sees how its work is judged. Batched per tick: a busy node is
    /// judged many times a second.
    async fn publish_reputations(&mut self) {
        let now = Utc::now();
        for node in std::mem::take(&mut self.reputation_changed) {
            let Some(info) = self.sched.node_info(&node, now) else {
                continue;
            };
            match reputation_report(&self.store, info, REPORT_HISTORY).await {
                Ok(report) => {
                    let topic = topics::node_reputation(&node);
                    if let Err(e) =
                        self.mqtt
                            .try_publish(topic, QoS::AtLeastOnce, true, to_json(&report))
                    {
                        warn!(node = %node, error = %e, "Reputation report not published.");
                    }
                }
                Err(e) => warn!(node = %node, error = %e, "Could not read reputation history."),
            }
        }
    }

    /// The artifact's base64 when it is small enough to travel inline, `None` when it goes by
    /// reference.
    async fn inline_artifact(&mut self, sha: &str) -> Result<Option<Arc<str>>, StoreError> {
        if let Some(m) = self.modules.get(sha) {
            return Ok(Some(m.clone()));
        }
        let size = self
            .store
            .blob_size(sha.to_string())
            .await?
            .ok_or_else(|| StoreError::Missing(sha.to_string()))?;
        if size > self.inline_artifact_bytes as u64 {
            return Ok(None);
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
        Ok(Some(b64))
    }
}

/// Runs federated work on the core: closing a round means unmasking, aggregating and scoring,
/// seconds of CPU for a large job. The core owns the scheduler, so it waits either way; on a
/// multi-threaded runtime `block_in_place` hands this worker's other tasks (HTTP, the MQTT link)
/// to another thread meanwhile.
fn cpu_bound<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}
