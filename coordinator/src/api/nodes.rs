//! `/api/v1/nodes`: the nodes the engine knows, their health and their reputation.

use ambient_protocol::{NodeInfo, ReputationReport};
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::Utc;
use serde::Deserialize;
use tokio::sync::oneshot;

use super::{AppState, Failure, checked_limit};
use crate::engine::EngineMsg;
use crate::reputation;

pub(super) async fn list_nodes(
    State(state): State<AppState>,
) -> Result<Json<Vec<NodeInfo>>, Failure> {
    let mut nodes = all_nodes(&state).await?;
    for n in &mut nodes {
        n.identity = state.identities.hex(&n.node_id);
    }
    Ok(Json(nodes))
}

/// Every node the engine knows.
pub(super) async fn all_nodes(state: &AppState) -> Result<Vec<NodeInfo>, Failure> {
    let (reply, rx) = oneshot::channel();
    state
        .engine()?
        .send(EngineMsg::Nodes(reply))
        .await
        .map_err(|_| Failure::unavailable())?;
    rx.await.map_err(|_| Failure::unavailable())
}

pub(super) async fn get_node(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<NodeInfo>, Failure> {
    node_info(&state, id).await.map(Json)
}

/// `?limit=` of the reputation history (default 100, at most 1000).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HistoryQuery {
    limit: Option<u32>,
}

pub(super) async fn get_node_reputation(
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Json<ReputationReport>, Failure> {
    let Query(q) =
        query.map_err(|e| Failure::new(StatusCode::BAD_REQUEST, "invalid_query", e.body_text()))?;
    let limit = checked_limit(q.limit, reputation::REPORT_HISTORY)?;
    let node = node_info(&state, id).await?;
    let history = state
        .store
        .reputation_history(node.node_id.clone(), limit)
        .await
        .map_err(Failure::store)?;
    Ok(Json(reputation::report(node, history, Utc::now())))
}

async fn node_info(state: &AppState, id: String) -> Result<NodeInfo, Failure> {
    let (reply, rx) = oneshot::channel();
    state
        .engine()?
        .send(EngineMsg::Node(id.clone(), reply))
        .await
        .map_err(|_| Failure::unavailable())?;
    let mut node = rx
        .await
        .map_err(|_| Failure::unavailable())?
        .ok_or_else(|| {
            Failure::new(
                StatusCode::NOT_FOUND,
                "node_not_found",
                format!("no node {id:?} has reported to this coordinator"),
            )
        })?;
    node.identity = state.identities.hex(&id);
    Ok(node)
}
