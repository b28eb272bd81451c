//! The assignment lifecycle: take or decline, journal, execute, report, and re-send each result
//! until the coordinator acknowledges it.
//!
//! Every assignment is journaled ([`crate::journal`]) before it runs, so a crash loses nothing:
//! at start [`Tasks::resume`] runs again what was interrupted while its lease still stands. A
//! result is journaled before it is published, and re-sent every five seconds (and at every
//! connect) until the coordinator's `ResultAck`: a publish the broker took is not a result the
//! coordinator stored.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ambient_protocol::{AgentEvent, Assignment, FailureKind, Outcome, TaskResult, TaskType};
use ambient_service::Shutdown;
use chrono::{DateTime, Utc};
use tracing::{error, info};
use uuid::Uuid;

use crate::contribution::Contribution;
use crate::control::RunningInfo;
use crate::exec::{Executors, failure, supported_task_types};
use crate::journal::{JobState, Journal, JournalError};
use crate::lock;
use crate::router::Outbox;

/// An assignment being executed.
struct RunningTask {
    /// Stops wasm at its next fuel slice.
    cancel: Arc<AtomicBool>,
    /// Handed back to the coordinator with `Declined`: its result is not reported.
    declined: AtomicBool,
    task_type: TaskType,
    started_at: DateTime<Utc>,
}

/// The assignments this node holds: the journal and the ones executing now.
pub(crate) struct Tasks {
    journal: Journal,
    running: Mutex<HashMap<(Uuid, u32), Arc<RunningTask>>>,
    exec: Arc<Executors>,
    outbox: Outbox,
    shutdown: Shutdown,
}

impl Tasks {
    /// Tasks journaled in `journal`, run on `exec`, reported through `outbox`. Executions are
    /// spawned on `shutdown`; after it is triggered (a kill) no result is reported.
    pub(crate) fn new(
        journal: Journal,
        exec: Arc<Executors>,
        outbox: Outbox,
        shutdown: Shutdown,
    ) -> Tasks {
        Tasks {
            journal,
            running: Mutex::new(HashMap::new()),
            exec,
            outbox,
            shutdown,
        }
    }

    fn lock_running(&self) -> std::sync::MutexGuard<'_, HashMap<(Uuid, u32), Arc<RunningTask>>> {
        lock(&self.running)
    }

    /// The engine this node's wasm runs on, with its version.
    pub(crate) fn wasm_engine(&self) -> Option<&'static str> {
        self.exec.wasm_engine()
    }

    /// How many assignments are executing now.
    pub(crate) fn running_count(&self) -> usize {
        self.lock_running().len()
    }

    /// The assignments executing now and not handed back, oldest first.
    pub(crate) fn running(&self) -> Vec<RunningInfo> {
        let mut running: Vec<RunningInfo> = self
            .lock_running()
            .iter()
            .filter(|(_, t)| !t.declined.load(Ordering::Relaxed))
            .map(|((task_id, _), t)| RunningInfo {
                task_id: *task_id,
                task_type: t.task_type,
                started_at: t.started_at,
            })
            .collect();
        running.sort_by_key(|r| r.started_at);
        running
    }

    /// Results the coordinator acknowledged, all time (0 when the journal cannot say).
    pub(crate) async fn done(&self) -> u64 {
        self.journal
            .count(JobState::Acknowledged)
            .await
            .unwrap_or(0)
    }

    /// Asks every running task to stop.
    pub(crate) fn cancel_all(&self) {
        for t in self.lock_running().values() {
            t.cancel.store(true, Ordering::Relaxed);
        }
    }

    /// The coordinator stored the result: stop re-sending it.
    pub(crate) async fn acknowledged(&self, task_id: Uuid, attempt: u32) {
        let _ = self
            .journal
            .set_state(task_id, attempt, JobState::Acknowledged)
            .await;
    }

    /// The coordinator took the task back.
    pub(crate) async fn cancel(&self, task_id: Uuid, attempt: u32, reason: &str) {
        if let Some(t) = self.lock_running().get(&(task_id, attempt)) {
            t.cancel.store(true, Ordering::Relaxed);
        }
        info!(task_id = %task_id, attempt, reason = %reason, "Task cancelled by the coordinator.");
        let _ = self
            .journal
            .set_state(task_id, attempt, JobState::Cancelled)
            .await;
    }

    /// Resumes what a crash interrupted, if its lease still stands and the policy allows;
    /// declines it while paused; forgets it when its lease has passed.
    pub(crate) async fn resume(
        self: &Arc<Self>,
        contribution: &Contribution,
    ) -> Result<(), JournalError> {
        let contributing = contribution.contributing();
        for a in self.journal.interrupted().await? {
            if a.lease_deadline > Utc::now() && !contributing {
                self.decline(a.task_id, a.attempt, contribution.paused_reason())
                    .await;
            } else if a.lease_deadline > Utc::now() {
                info!(task_id = %a.task_id, attempt = a.attempt, "Resuming an interrupted task.");
                self.spawn_execution(a);
            } else {
                let _ = self
                    .journal
                    .set_state(a.task_id, a.attempt, JobState::Cancelled)
                    .await;
            }
        }
        Ok(())
    }

    /// A new assignment: journaled, then run, or declined when this build cannot run its kind,
    /// the owner paused contribution, or every slot is busy. A redelivery of one already in
    /// hand is ignored, or answered with its result.
    pub(crate) async fn on_assignment(
        self: &Arc<Self>,
        a: Assignment,
        contribution: &Contribution,
    ) {
        match self.journal.receive(&a).await {
            Err(e) => {
                // Not journaled, so not run: the lease brings it back.
                error!(task_id = %a.task_id, error = %e, "Cannot journal an assignment; not running it.");
                return;
            }
            Ok(Some((JobState::ResultPending, Some(result)))) => {
                let ev = AgentEvent::Finished { result };
                self.outbox.event(&ev).await;
                return;
            }
            Ok(Some(_)) => return, // a redelivery of something already in hand
            Ok(None) => {}
        }
        let contributing = contribution.contributing();
        let decline = if !supported_task_types().contains(&a.task_type) {
            Some(format!("this agent cannot run {}", a.task_type))
        } else if !contributing {
            Some(contribution.paused_reason())
        } else if self.running_count() >= contribution.slots() as usize {
            Some("all execution slots are busy".to_string())
        } else {
            None
        };
        if let Some(reason) = decline {
            self.decline(a.task_id, a.attempt, reason).await;
            return;
        }
        self.spawn_execution(a);
    }

    /// Hands an assignment back: journaled as cancelled, and `Declined` so the coordinator
    /// reschedules it at once.
    async fn decline(&self, task_id: Uuid, attempt: u32, reason: String) {
        let _ = self
            .journal
            .set_state(task_id, attempt, JobState::Cancelled)
            .await;
        let ev = AgentEvent::Declined {
            task_id,
            attempt,
            reason,
        };
        self.outbox.event(&ev).await;
    }

    /// Cancels and declines every running task not handed back yet (contribution stopped).
    pub(crate) async fn hand_back_all(&self, reason: &str) {
        let handed_back: Vec<(Uuid, u32)> = self
            .lock_running()
            .iter()
            .filter(|(_, t)| !t.declined.swap(true, Ordering::Relaxed))
            .map(|(k, t)| {
                t.cancel.store(true, Ordering::Relaxed);
                *k
            })
            .collect();
        for (task_id, attempt) in handed_back {
            info!(task_id = %task_id, attempt, "Task handed back: contribution paused.");
            self.decline(task_id, attempt, reason.to_string()).await;
        }
    }

    fn spawn_execution(self: &Arc<Self>, a: Assignment) {
        let task = Arc::new(RunningTask {
            cancel: Arc::new(AtomicBool::new(false)),
            declined: AtomicBool::new(false),
            task_type: a.task_type,
            started_at: Utc::now(),
        });
        self.lock_running()
            .insert((a.task_id, a.attempt), task.clone());
        let this = self.clone();
        self.shutdown.spawn(async move {
            let key = (a.task_id, a.attempt);
            let _ = this
                .journal
                .set_state(a.task_id, a.attempt, JobState::Running)
                .await;
            if task.declined.load(Ordering::Relaxed) {
                // Handed back before it started.
                this.lock_running().remove(&key);
                let _ = this
                    .journal
                    .set_state(key.0, key.1, JobState::Cancelled)
                    .await;
                return;
            }
            let started = AgentEvent::Started {
                task_id: a.task_id,
                attempt: a.attempt,
            };
            this.outbox.event(&started).await;
            info!(task_id = %a.task_id, attempt = a.attempt, "Task started.");
            let result = match this.exec.run(a, task.cancel.clone()).await {
                Ok(r) => r,
                Err(e) => {
                    // A crash on this input would repeat anywhere: report it as the answer.
                    error!(task_id = %key.0, error = %e, "Executor panicked.");
                    TaskResult {
                        task_id: key.0,
                        attempt: key.1,
                        outcome: failure(
                            FailureKind::ExecutorCrashed,
                            format!("the executor crashed: {e}"),
                        ),
                        duration_ms: 0,
                        fuel_consumed: None,
                        macs: None,
                        engine: None,
                    }
                }
            };
            this.lock_running().remove(&key);
            if this.shutdown.is_triggered() {
                return; // killed: the journal keeps the task as running, to resume or expire
            }
            if task.declined.load(Ordering::Relaxed) {
                // Handed back (paused by the owner): another node has it now.
                let _ = this
                    .journal
                    .set_state(key.0, key.1, JobState::Cancelled)
                    .await;
                return;
            }
            if let Err(e) = this.journal.finish(&result).await {
                error!(task_id = %result.task_id, error = %e, "Cannot journal a result.");
            }
            let kind = match &result.outcome {
                Outcome::Success { .. } => "success",
                Outcome::Failure { kind, .. } => kind.as_str(),
            };
            info!(task_id = %result.task_id, attempt = result.attempt, outcome = kind,
                  duration_ms = result.duration_ms, "Task finished.");
            let ev = AgentEvent::Finished { result };
            this.outbox.event(&ev).await;
        });
    }

    /// Publishes every result the coordinator has not acknowledged yet.
    pub(crate) async fn resend_pending(&self) {
        match self.journal.pending_results().await {
            Ok(results) => {
                for result in results {
                    let ev = AgentEvent::Finished { result };
                    self.outbox.event(&ev).await;
                }
            }
            Err(e) => error!(error = %e, "Cannot read pending results from the journal."),
        }
    }

    /// Re-sends unacknowledged results every five seconds until the agent stops.
    pub(crate) async fn resend_loop(self: Arc<Self>) {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        every.tick().await;
        loop {
            tokio::select! {
                _ = every.tick() => self.resend_pending().await,
                _ = self.shutdown.cancelled() => return,
            }
        }
    }
}
