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
//! - [`zk`]: `zk_proof`: circuits, Groth16 keys, proof checks, and the API's proof JSON.
//! - [`fl`]: `federated_learning`: the submission check and the federated driver.

pub mod computation;
pub mod fl;
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

/// Builds the task records of an accepted submission, whose artifact is in the blob store (for
/// `zk_proof`, once its circuit's keys are made: [`zk::attach_keys`]).
pub(crate) fn build(
    submitter: String,
    accepted: Accepted,
    zk: &Arc<zk::Zk>,
    now: DateTime<Utc>,
) -> Result<NewTask, SubmitError> {
    let sub = accepted.submission;
    let artifact = match sub.task_type {
        TaskType::ZkProof => None,
        TaskType::WasmExecution
        | TaskType::Computation
        | TaskType::Inference
        | TaskType::FederatedLearning => accepted.artifact_ref,
    };
    let mut task = TaskRecord::new(
        sub.task_id.unwrap_or_else(Uuid::new_v4),
        submitter,
        sub.task_type,
        sub.inputs,
        sub.requirements,
        artifact,
        now,
    );
    if task.task_type == TaskType::ZkProof {
        zk::attach_keys(zk, &mut task)?;
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
    zk: &Arc<zk::Zk>,
    store: &Store,
    sched: &mut Scheduler,
    node: &str,
    ev: AgentEvent,
) -> Option<AgentEvent> {
    let task_type = match &ev {
        AgentEvent::Finished { result, .. } => sched.task(&result.task_id).map(|t| t.task_type),
        _ => None,
    };
    match task_type {
        Some(TaskType::ZkProof) => zk::check_result(zk, store, sched, node, ev).await,
        Some(
            TaskType::WasmExecution
            | TaskType::Computation
            | TaskType::Inference
            | TaskType::FederatedLearning,
        )
        | None => Some(ev),
    }
}
