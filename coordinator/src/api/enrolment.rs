//! Joining and its administration: `POST /api/v1/join` (a node with a token), and under an admin
//! key `/api/v1/admin/tokens` (make, list, revoke tokens) and
//! `POST /api/v1/admin/nodes/{id}/revoke`. The logic is [`crate::enrolment`].

use ambient_protocol::join::{JoinGrant, JoinRequest, TokenInfo, TokenRequest};
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::{AppState, Failure};
use crate::accounts::AccountError;
use crate::engine::EngineMsg;
use crate::enrolment::EnrolError;

impl From<EnrolError> for Failure {
    fn from(e: EnrolError) -> Failure {
        let (status, code) = match &e {
            EnrolError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            EnrolError::Refused(r) => (StatusCode::FORBIDDEN, r.code()),
            EnrolError::Accounts(AccountError::Unsupported(_)) => {
                (StatusCode::NOT_IMPLEMENTED, "not_supported")
            }
            EnrolError::Accounts(_) => (StatusCode::BAD_GATEWAY, "broker_error"),
            EnrolError::Store(e) => {
                tracing::error!(error = %e, "Store query failed.");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
        };
        Failure::new(status, code, e.to_string())
    }
}

/// The body as a `T`, from a JSON object only (serde would also read a struct from an array).
pub(super) fn body<T: serde::de::DeserializeOwned>(
    json: Result<Json<serde_json::Value>, JsonRejection>,
) -> Result<T, Failure> {
    let invalid = |m: String| Failure::new(StatusCode::BAD_REQUEST, "invalid_json", m);
    let Json(value) = json.map_err(|e| invalid(e.body_text()))?;
    if !value.is_object() {
        return Err(invalid("the body must be a JSON object".into()));
    }
    serde_json::from_value(value).map_err(|e| invalid(e.to_string()))
}

pub(super) async fn join(
    State(state): State<AppState>,
    req: Result<Json<serde_json::Value>, JsonRejection>,
) -> Result<(StatusCode, Json<JoinGrant>), Failure> {
    let grant = state.enroller.join(body::<JoinRequest>(req)?).await?;
    Ok((StatusCode::CREATED, Json(grant)))
}

pub(super) async fn create_token(
    State(state): State<AppState>,
    req: Result<Json<serde_json::Value>, JsonRejection>,
) -> Result<(StatusCode, Json<TokenInfo>), Failure> {
    let token = state
        .enroller
        .create_token(body::<TokenRequest>(req)?)
        .await?;
    Ok((StatusCode::CREATED, Json(token)))
}

pub(super) async fn list_tokens(
    State(state): State<AppState>,
) -> Result<Json<Vec<TokenInfo>>, Failure> {
    Ok(Json(state.enroller.tokens().await?))
}

pub(super) async fn revoke_token(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, Failure> {
    match state.enroller.revoke_token(id.clone()).await? {
        true => Ok(StatusCode::NO_CONTENT),
        false => Err(Failure::new(
            StatusCode::NOT_FOUND,
            "token_not_found",
            format!("no enrolment token {id:?}"),
        )),
    }
}

pub(super) async fn revoke_node(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, Failure> {
    if !state.enroller.revoke_node(&id).await? {
        return Err(Failure::new(
            StatusCode::NOT_FOUND,
            "node_not_found",
            format!(
                "no node {id:?} enrolled with a token (nodes with hand-made broker accounts are \
                 removed from the broker's password file)"
            ),
        ));
    }
    state
        .engine()?
        .send(EngineMsg::Revoked(id))
        .await
        .map_err(|_| Failure::unavailable())?;
    Ok(StatusCode::NO_CONTENT)
}
