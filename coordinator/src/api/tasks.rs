//! `/api/v1/tasks`: submit, list, read and cancel a submitter's tasks.

use ambient_protocol::{TaskInfo, TaskStatus};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse as _, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::auth::{Submitter, constant_time_eq};
use super::forward::{INTAKE_SECRET, Intake, no_leader};
use super::{AppState, Failure, checked_limit};
use crate::engine::EngineMsg;
use crate::metrics::Metrics;
use crate::submission::{self, SubmitError, SubmitFailure};

pub(super) async fn submit(
    State(state): State<AppState>,
    Extension(Submitter(submitter)): Extension<Submitter>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Failure> {
    let body = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Failure::from(SubmitError::BodyTooLarge {
                size: state.limits.max_body_bytes + 1,
                max: state.limits.max_body_bytes,
            })
        } else {
            Failure::new(r.status(), "bad_request", r.body_text())
        }
    })?;
    // Any coordinator checks the body and stores its artifact; only the scheduler's makes the
    // task, so a follower hands the prepared submission to the leader.
    let accepted = submission::prepare(&state.store, &state.limits, body)
        .await
        .map_err(|e| submit_failure(&state, e))?;
    let engine = state.leading.borrow().as_ref().map(|l| l.engine.clone());
    let info = match engine {
        Some(engine) => submission::hand(&engine, submitter, accepted)
            .await
            .map_err(|e| submit_failure(&state, e))?,
        None => return state.forward.intake(&submitter, accepted).await,
    };
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

fn submit_failure(state: &AppState, e: SubmitFailure) -> Failure {
    match e {
        SubmitFailure::Invalid(e) => {
            Metrics::inc(&state.metrics.submissions_rejected);
            Failure::from(e)
        }
        SubmitFailure::Refused { error, .. } => Failure::from(error),
        SubmitFailure::ShuttingDown => Failure::unavailable(),
    }
}

/// `POST /internal/v1/intake` on the leader: a submission another coordinator checked and whose
/// artifact it stored ([`submission::prepare`]), with the leader's intake secret
/// ([`INTAKE_SECRET`]). Answered as `POST /api/v1/tasks` is.
pub(super) async fn intake(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<TaskInfo>), Failure> {
    let Some(leading) = state.leading.borrow().clone() else {
        return Err(no_leader(
            "this coordinator no longer runs the scheduler; retry",
        ));
    };
    let shown = headers
        .get(INTAKE_SECRET)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if !constant_time_eq(shown, leading.secret.as_bytes()) {
        return Err(Failure::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            format!("{INTAKE_SECRET} is missing or wrong"),
        ));
    }
    let Intake {
        submitter,
        accepted,
    } = serde_json::from_slice(&body)
        .map_err(|e| Failure::new(StatusCode::BAD_REQUEST, "bad_request", e.to_string()))?;
    let info = submission::hand(&leading.engine, submitter, accepted)
        .await
        .map_err(|e| submit_failure(&state, e))?;
    Ok((StatusCode::CREATED, Json(info)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListParams {
    status: Option<TaskStatus>,
    limit: Option<u32>,
}

pub(super) async fn list_tasks(
    State(state): State<AppState>,
    Extension(Submitter(submitter)): Extension<Submitter>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<Vec<TaskInfo>>, Failure> {
    let Query(p) = params
        .map_err(|e| Failure::new(StatusCode::BAD_REQUEST, "invalid_query", e.body_text()))?;
    let limit = checked_limit(p.limit, 100)?;
    let tasks = state
        .store
        .tasks_of(submitter, p.status, limit)
        .await
        .map_err(Failure::store)?;
    Ok(Json(tasks.iter().map(|t| t.info()).collect()))
}

fn parse_id(id: &str) -> Result<Uuid, Failure> {
    Uuid::parse_str(id).map_err(|_| {
        Failure::new(
            StatusCode::BAD_REQUEST,
            "invalid_task_id",
            format!("{id:?} is not a task id (a UUID)"),
        )
    })
}

fn task_not_found(id: Uuid) -> Failure {
    Failure::new(
        StatusCode::NOT_FOUND,
        "task_not_found",
        format!("no task {id} for this API key"),
    )
}

pub(super) async fn get_task(
    State(state): State<AppState>,
    Extension(Submitter(submitter)): Extension<Submitter>,
    Path(id): Path<String>,
) -> Result<Json<TaskInfo>, Failure> {
    let id = parse_id(&id)?;
    match state.store.task(id).await.map_err(Failure::store)? {
        Some(t) if t.submitter == submitter => Ok(Json(t.info())),
        _ => Err(task_not_found(id)),
    }
}

pub(super) async fn cancel_task(
    State(state): State<AppState>,
    Extension(Submitter(submitter)): Extension<Submitter>,
    Path(id): Path<String>,
) -> Result<Json<TaskInfo>, Failure> {
    let id = parse_id(&id)?;
    let existing = state.store.task(id).await.map_err(Failure::store)?;
    let Some(task) = existing.filter(|t| t.submitter == submitter) else {
        return Err(task_not_found(id));
    };
    if task.status.is_terminal() {
        return Err(Failure::new(
            StatusCode::CONFLICT,
            "task_finished",
            format!("task {id} is already {}", task.status),
        ));
    }
    let (reply, rx) = oneshot::channel();
    state
        .engine()?
        .send(EngineMsg::Cancel {
            task_id: id,
            submitter,
            reply,
        })
        .await
        .map_err(|_| Failure::unavailable())?;
    rx.await
        .map_err(|_| Failure::unavailable())?
        .map_err(|e| Failure::new(StatusCode::CONFLICT, "task_finished", e.to_string()))?;
    match state.store.task(id).await.map_err(Failure::store)? {
        Some(t) => Ok(Json(t.info())),
        None => Err(task_not_found(id)),
    }
}
