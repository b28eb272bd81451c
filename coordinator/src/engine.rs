//! The engine: the one task that owns the [`Scheduler`]. It runs the loop, persists, then
//! publishes; what differs between task kinds is in [`crate::kinds`], the blob store's
//! bookkeeping in [`crate::artifacts`].
//!
//! Everything that changes scheduling state arrives here as a [`EngineMsg`]: submissions and
//! cancels from the API and the submit topic, health, presence and results from the MQTT link,
//! and a periodic tick. After each message the loop persists what changed and only then publishes
//! what the change asked for (assignments, acks, cancels, submitter notifications), so nothing is
//! acknowledged that is not on disk.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use ambient_link::{AsyncClient, QoS};
use ambient_protocol::credits::AccountLimits;
use ambient_protocol::{AgentEvent, Health, NodeInfo, NodeState, TaskInfo, envelope, topics};
use chrono::Utc;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use uuid::Uuid;

use crate::artifacts::{Artifacts, BlobChange};
use crate::kinds::{self, NewTask, fl::FlDriver, groth16::Zk};
use crate::metrics::Metrics;
use crate::reputation;
use crate::scheduler::{CancelError, Outbound, Scheduler};
use crate::store::{Batch, Fence, Store, StoreError};
use crate::submission::{Accepted, SubmitError};

/// A request to the engine.
#[derive(Debug)]
pub enum EngineMsg {
    /// A checked submission whose module is already in the blob store.
    Submit {
        /// Owner.
        submitter: String,
        /// The submission.
        accepted: Accepted,
        /// Where to answer (the MQTT listener turns an error into a rejection on the submitter's topic).
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
    /// An operator revoked a node.
    Revoked(String),
    /// List nodes.
    Nodes(oneshot::Sender<Vec<NodeInfo>>),
    /// One node.
    Node(String, oneshot::Sender<Option<NodeInfo>>),
    /// Mint credits into a submitter (an admin's grant); answered once the grant is written.
    Grant {
        /// The submitter.
        account: String,
        /// µcredits.
        amount: i64,
        /// Why.
        memo: String,
        /// Answer: the grant's transaction id, or why it was not written.
        reply: oneshot::Sender<Result<String, StoreError>>,
    },
    /// A submitter's limits changed.
    Limits(String, AccountLimits),
}

/// The most messages one write carries ([`Engine::handle_batch`]).
const BATCH: usize = 64;

/// What [`Engine::submit`] made of a submission.
enum Submitted {
    /// A new task, answered once it is written.
    New(Uuid),
    /// The submitter's task with that id, which exists already.
    Existing(Box<TaskInfo>),
}

/// An answer that waits until the batch's changes are written.
enum Reply {
    /// A new task: its record as the write left it, or why it was not written.
    Submit(oneshot::Sender<Result<TaskInfo, SubmitError>>, Uuid),
    /// A cancel's outcome.
    Cancel(
        oneshot::Sender<Result<(), CancelError>>,
        Result<(), CancelError>,
    ),
}

/// An admin's grant, answered with the write's own outcome (it ends its batch, so a batch has
/// at most one).
type GrantReply = (oneshot::Sender<Result<String, StoreError>>, String);

impl Reply {
    async fn send(self, sched: &Scheduler, store: &Store, saved: &Result<(), StoreError>) {
        match self {
            Reply::Submit(reply, id) => {
                let info = match saved {
                    Err(e) => Err(SubmitError::Unavailable(e.to_string())),
                    Ok(()) => match sched.task(&id) {
                        Some(t) => Ok(t.info()),
                        // Ended in the same batch and no longer held: read what was written.
                        None => match store.task(id).await {
                            Ok(Some(t)) => Ok(t.info()),
                            Ok(None) => Err(SubmitError::Unavailable(
                                "the task was not persisted".into(),
                            )),
                            Err(e) => Err(SubmitError::Unavailable(e.to_string())),
                        },
                    },
                };
                let _ = reply.send(info);
            }
            Reply::Cancel(reply, r) => {
                let _ = reply.send(r);
            }
        }
    }
}

/// Owns the scheduler and runs until `shutdown`.
pub struct Engine {
    pub(crate) sched: Scheduler,
    pub(crate) store: Store,
    /// This coordinator's hold on the scheduler, checked by every write ([`crate::leader`]).
    pub(crate) fence: Fence,
    pub(crate) mqtt: AsyncClient,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) tick: Duration,
    /// Inline artifacts and temporary blobs.
    pub(crate) artifacts: Artifacts,
    /// Circuits and verifying keys of `zk_proof` tasks.
    pub(crate) zk: Arc<Zk>,
    /// Nodes whose reputation changed since their last report was published.
    pub(crate) reputation_changed: BTreeSet<String>,
    /// Running `federated_learning` jobs.
    pub(crate) fl: FlDriver,
}

impl Engine {
    /// The loop.
    pub async fn run(mut self, mut rx: mpsc::Receiver<EngineMsg>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        cpu_bound(|| self.fl.recover(&mut self.sched, Utc::now()));
        self.flush().await;
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(msg) => self.handle_batch(msg, &mut rx).await,
                    None => break,
                },
                _ = tick.tick() => {
                    let now = Utc::now();
                    kinds::groth16::release_waiting(&self.zk, &mut self.sched, now);
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
        info!("Coordinator engine stopped.");
    }

    /// Applies `first` and whatever else is already waiting (up to [`BATCH`] messages), writes
    /// their changes in one transaction, and only then answers and publishes (group commit).
    /// An idle engine writes after every message; a busy one writes once per batch, so the
    /// store's round trips are shared by many messages.
    async fn handle_batch(&mut self, first: EngineMsg, rx: &mut mpsc::Receiver<EngineMsg>) {
        let mut replies = Vec::new();
        let mut grant = None;
        let mut next = Some(first);
        let mut applied = 0;
        while let Some(msg) = next.take() {
            applied += 1;
            grant = self.apply(msg, &mut replies).await;
            if grant.is_none() && applied < BATCH {
                next = rx.try_recv().ok();
            }
        }
        let saved = self.try_flush().await;
        for reply in replies {
            reply.send(&self.sched, &self.store, &saved).await;
        }
        if let Some((reply, txn)) = grant {
            let _ = reply.send(saved.map(|()| txn));
        }
    }

    /// Applies one message to the scheduler without writing; what must wait for the write goes
    /// into `replies`. An admin's grant ends the batch: it is returned, to be answered with the
    /// write's own outcome.
    async fn apply(&mut self, msg: EngineMsg, replies: &mut Vec<Reply>) -> Option<GrantReply> {
        let now = Utc::now();
        match msg {
            EngineMsg::Submit {
                submitter,
                accepted,
                reply,
            } => match (self.submit(submitter, accepted).await, reply) {
                (Ok(Submitted::New(id)), Some(reply)) => replies.push(Reply::Submit(reply, id)),
                (Ok(Submitted::New(_)), None) => {}
                (Ok(Submitted::Existing(info)), Some(reply)) => {
                    let _ = reply.send(Ok(*info));
                }
                (Err(e), Some(reply)) => {
                    let _ = reply.send(Err(e));
                }
                (Ok(Submitted::Existing(_)) | Err(_), None) => {}
            },
            EngineMsg::Cancel {
                task_id,
                submitter,
                reply,
            } => {
                let r = self.sched.cancel(task_id, &submitter, now);
                replies.push(Reply::Cancel(reply, r));
            }
            EngineMsg::Health(h) => self.sched.on_health(h, now),
            EngineMsg::Status(node, state) => self.sched.on_status(&node, state, now),
            EngineMsg::Revoked(node) => self.sched.on_revoked(&node, now),
            EngineMsg::Agent(node, AgentEvent::Fl { task_id, msg, .. }) => {
                cpu_bound(|| {
                    self.fl
                        .on_message(&mut self.sched, &node, task_id, msg, now)
                });
                self.metrics
                    .fl_refused
                    .store(self.fl.refused, std::sync::atomic::Ordering::Relaxed);
            }
            EngineMsg::Agent(node, ev) => {
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
                        return None;
                    }
                }
                // `None`: not acknowledged, so the agent re-sends it.
                if let Some(ev) =
                    kinds::check_result(&self.zk, &self.store, &mut self.sched, &node, ev).await
                {
                    self.sched.on_agent_event(&node, ev, now);
                }
            }
            EngineMsg::Nodes(reply) => {
                let _ = reply.send(self.sched.node_infos(now));
            }
            EngineMsg::Node(id, reply) => {
                let _ = reply.send(self.sched.node_info(&id, now));
            }
            EngineMsg::Grant {
                account,
                amount,
                memo,
                reply,
            } => {
                let txn = format!("grant:{}", Uuid::new_v4());
                self.sched
                    .book_mut()
                    .grant(txn.clone(), &account, amount, memo, now);
                return Some((reply, txn));
            }
            EngineMsg::Limits(account, limits) => {
                self.sched.book_mut().set_limits(account, limits);
            }
        }
        None
    }

    async fn submit(
        &mut self,
        submitter: String,
        accepted: Accepted,
    ) -> Result<Submitted, SubmitError> {
        if let Some(id) = accepted.submission.task_id {
            // A submitter-chosen id makes MQTT submission idempotent under QoS1 redelivery.
            let existing = match self.sched.task(&id) {
                Some(t) => Some(t.clone()),
                None => self.store.task(id).await.ok().flatten(),
            };
            if let Some(t) = existing {
                return if t.submitter == submitter {
                    Ok(Submitted::Existing(Box::new(t.info())))
                } else {
                    Err(SubmitError::IdTaken(id))
                };
            }
        }
        let now = Utc::now();
        kinds::check_against_nodes(&accepted, &self.sched, now)?;
        let mut new = kinds::build(submitter, accepted, &self.zk, now)?;
        let shards = match &new {
            NewTask::Sharded(_, shards) => shards.len(),
            NewTask::Single(_) => 0,
        };
        self.sched.reserve(new.task_mut(), shards, now)?;
        let id = new.task().id;
        info!(task_id = %id, submitter = %new.task().submitter, task_type = %new.task().task_type, "Task accepted.");
        Metrics::inc(&self.metrics.tasks_submitted);
        match new {
            NewTask::Single(task) => self.sched.submit(task, now),
            NewTask::Sharded(parent, shards) => self.sched.submit_sharded(parent, shards, now),
        }
        Ok(Submitted::New(id))
    }

    /// Persists what changed, then publishes what followed from it.
    async fn flush(&mut self) {
        let _ = self.try_flush().await;
    }

    /// [`Engine::flush`], saying whether the changes were written (a failure is logged here).
    async fn try_flush(&mut self) -> Result<(), StoreError> {
        let effects = self.sched.take_effects();
        let judged: Vec<String> = effects.reputation.iter().map(|e| e.node.clone()).collect();
        for t in &effects.tasks {
            if t.status.is_terminal() {
                self.metrics.count_terminal(t.status);
            }
        }
        let credits = Metrics::credit_flows(&effects.postings);
        if let Err(e) = self
            .store
            .save(Batch {
                tasks: effects.tasks,
                nodes: effects.nodes,
                events: effects.reputation,
                checkpoints: effects.fl_checkpoints,
                postings: effects.postings,
                fence: Some(self.fence.clone()),
            })
            .await
        {
            if let StoreError::Deposed = e {
                // Another coordinator runs the scheduler from the database now; this one is
                // stopped by its election loop at the next renewal and publishes nothing.
                warn!("Deposed: another coordinator leads; this change is dropped.");
                return Err(e);
            }
            // Nothing is published: acks stay unsent, so agents re-send and nothing is lost.
            error!(error = %e, "Could not persist scheduler state; withholding acknowledgements.");
            return Err(e);
        }
        self.metrics.add_credits(credits);
        self.reputation_changed.extend(judged);
        self.metrics.set_gauges(
            self.sched.online_nodes() as u64,
            self.sched.active_tasks() as u64,
        );
        // Taken only once the state is saved: after a failed save they wait for the next flush.
        // Blobs first, so that every message naming one finds it; released ones after.
        let (release, store): (Vec<_>, Vec<_>) = self
            .fl
            .take_blob_changes()
            .into_iter()
            .partition(|c| matches!(c, BlobChange::Release { .. }));
        for change in store {
            self.artifacts.apply(change).await;
        }
        for out in effects.publish {
            self.publish(out).await;
        }
        for change in release {
            self.artifacts.apply(change).await;
        }
        Ok(())
    }

    async fn publish(&mut self, out: Outbound) {
        let (topic, payload) = match out {
            Outbound::Dispatch {
                node,
                mut assignment,
            } => {
                if let Some(sha) = assignment.artifact_sha256.clone() {
                    match self.artifacts.inline(&sha).await {
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
                (topics::node_tasks(&node), envelope::encode(&assignment))
            }
            Outbound::Control { node, control } => {
                (topics::node_control(&node), envelope::encode(&control))
            }
            // Submitters get the REST API's body, bare.
            Outbound::Notify { submitter, info } => (
                topics::submitter_task(&submitter, &info.task_id),
                serde_json::to_vec(&*info).unwrap_or_default(),
            ),
        };
        // Never block the engine on a full request queue: every message here is either re-sent by
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
            let history = self
                .store
                .reputation_history(node.clone(), reputation::REPORT_HISTORY)
                .await;
            match history {
                Ok(history) => {
                    let report = reputation::report(info, history, now);
                    let topic = topics::node_reputation(&node);
                    if let Err(e) = self.mqtt.try_publish(
                        topic,
                        QoS::AtLeastOnce,
                        true,
                        envelope::encode(&report),
                    ) {
                        warn!(node = %node, error = %e, "Reputation report not published.");
                    }
                }
                Err(e) => warn!(node = %node, error = %e, "Could not read reputation history."),
            }
        }
    }
}

/// Runs federated work on the engine: closing a round means unmasking, aggregating and scoring,
/// seconds of CPU for a large job. The engine owns the scheduler, so it waits either way; on a
/// multi-threaded runtime `block_in_place` hands this worker's other tasks (HTTP, the MQTT link)
/// to another thread meanwhile.
fn cpu_bound<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}
