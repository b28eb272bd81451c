//! Task kinds: what differs between `wasm_execution`, `computation`, `inference`, `zk_proof`
//! and `federated_learning`, one module each.
//!
//! This module is the one place that lists the kinds: [`check`] (submission checks),
//! [`build`] (the task records a submission becomes) and [`check_result`] (checks of a node's
//! result before the scheduler sees it) each match on [`TaskType`] and hand over to the kind's
//! module. Every kind of the protocol is implemented, so no submission is refused for its kind.
//!
//! # Layout
//! - [`wasm`]: `wasm_execution`, a WASI module replicated on `min_nodes` nodes.
//! - [`computation`]: a wasm kernel over shards, and the built-in reducers of their outputs.
//! - [`inference`]: an ONNX model, inline or from the blob store, on one node.
//! - [`zk`]: `zk_proof`: circuits, their checks, and the API's circuit JSON.
//! - [`groth16`]: the Groth16 keys of `zk_proof` circuits and of proved `inference` models,
//!   made on first need, and the check of a node's proof before its result is accepted.
//! - [`fl`]: `federated_learning`: the submission check and the federated driver.

pub mod computation;
pub mod fl;
pub mod groth16;
pub mod inference;
pub mod wasm;
pub mod zk;

use std::sync::Arc;

use ambient_protocol::{AgentEvent, TaskType};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::config::Limits;
use crate::scheduler::{Scheduler, TaskRecord};
use crate::store::Store;
use crate::submission::{Accepted, SubmitError};

/// Checks the part of a submission that depends on its kind, moving inline artifacts out of it.
pub(crate) fn check(accepted: &mut Accepted, limits: &Limits) -> Result<(), SubmitError> {
    match accepted.submission.task_type {
        TaskType::WasmExecution => wasm::check(accepted, limits),
        TaskType::Computation => computation::check(accepted, limits),
        TaskType::Inference => inference::check(accepted, limits),
        TaskType::ZkProof => zk::check(accepted),
        TaskType::FederatedLearning => fl::check(accepted),
    }
}

/// Checks of a submission that need the blob store, before its artifact is stored: only a
/// proved `inference` has any (its model must compile into a circuit).
pub(crate) async fn check_stored(store: &Store, accepted: &Accepted) -> Result<(), SubmitError> {
    inference::check_provable(store, accepted).await
}

/// Checks of a submission against the nodes online now, made by the engine (which owns the
/// scheduler) before the task is built: only `federated_learning` has any.
pub(crate) fn check_against_nodes(
    accepted: &Accepted,
    sched: &Scheduler,
    now: DateTime<Utc>,
) -> Result<(), SubmitError> {
    match accepted.submission.task_type {
        TaskType::FederatedLearning => fl::check_against_holders(accepted, sched, now),
        TaskType::WasmExecution
        | TaskType::Computation
        | TaskType::Inference
        | TaskType::ZkProof => Ok(()),
    }
}

/// What an accepted submission becomes in the scheduler.
#[derive(Debug)]
pub enum NewTask {
    /// One task (replicated, or a federated job).
    Single(TaskRecord),
    /// A sharded computation: the parent and its shard tasks.
    Sharded(TaskRecord, Vec<TaskRecord>),
}

impl NewTask {
    /// The task the submitter sees.
    pub fn task(&self) -> &TaskRecord {
        match self {
            NewTask::Single(t) | NewTask::Sharded(t, _) => t,
        }
    }

    /// The task the submitter sees, to change.
    pub fn task_mut(&mut self) -> &mut TaskRecord {
        match self {
            NewTask::Single(t) | NewTask::Sharded(t, _) => t,
        }
    }
}

/// Builds the task records of an accepted submission, whose artifact is in the blob store. A
/// task that carries a proof gets its proving key as artifact once its keys are made
/// ([`groth16::attach_keys`]); a proved `inference` names its model in its inputs.
pub(crate) fn build(
    submitter: String,
    accepted: Accepted,
    zk: &Arc<groth16::Zk>,
    now: DateTime<Utc>,
) -> Result<NewTask, SubmitError> {
    let sub = accepted.submission;
    let mut task = TaskRecord::new(
        sub.task_id.unwrap_or_else(Uuid::new_v4),
        submitter,
        sub.task_type,
        sub.inputs,
        sub.requirements,
        accepted.artifact_ref,
        now,
    );
    if task.needs_proof() {
        groth16::attach_keys(zk, &mut task)?;
    }
    Ok(match accepted.shards {
        None => NewTask::Single(task),
        Some((inputs, reduce)) => {
            let (parent, shards) = computation::build(task, inputs, reduce, now);
            NewTask::Sharded(parent, shards)
        }
    })
}

/// Checks a node's message about a task before the scheduler sees it. Returns `None` when it
/// must not be acknowledged yet (the node sends it again).
pub(crate) async fn check_result(
    zk: &Arc<groth16::Zk>,
    store: &Store,
    sched: &mut Scheduler,
    node: &str,
    ev: AgentEvent,
) -> Option<AgentEvent> {
    let proved = match &ev {
        AgentEvent::Finished { result, .. } => sched
            .task(&result.task_id)
            .is_some_and(TaskRecord::needs_proof),
        _ => false,
    };
    if proved {
        groth16::check_result(zk, store, sched, node, ev).await
    } else {
        Some(ev)
    }
}
