//! Credits over REST: the price list, a submitter's account and ledger, the nodes' leaderboard,
//! and under an admin key the accounts, their API keys, grants and limits. The rules are
//! [`crate::credits`].

use ambient_protocol::credits::{
    AccountCreate, AccountCreated, AccountInfo, AccountLimits, Grant, KeyCreated, KeyInfo,
    LeaderboardRow, LedgerPage, PriceList,
};
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use tokio::sync::oneshot;

use super::auth::Submitter;
use super::enrolment::body;
use super::{AppState, Failure, checked_limit};
use crate::credits::keys::{self, new_key};
use crate::engine::EngineMsg;
use crate::store::{AccountRecord, LedgerFilter};

pub(super) async fn prices(State(state): State<AppState>) -> Json<PriceList> {
    Json(state.prices.list())
}

pub(super) async fn my_account(
    State(state): State<AppState>,
    Extension(Submitter(name)): Extension<Submitter>,
) -> Result<Json<AccountInfo>, Failure> {
    account_info(&state, &name).await.map(Json)
}

/// `?after=&limit=` of a ledger page; an admin may also filter by `account`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PageParams {
    after: Option<i64>,
    limit: Option<u32>,
    account: Option<String>,
}

fn page_params(params: Result<Query<PageParams>, QueryRejection>) -> Result<PageParams, Failure> {
    let p = params
        .map(|Query(p)| p)
        .map_err(|e| Failure::new(StatusCode::BAD_REQUEST, "invalid_query", e.body_text()))?;
    if p.after.is_some_and(|a| a < 0) {
        return Err(Failure::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            "after is a ledger seq: 0 (the beginning) or more",
        ));
    }
    Ok(p)
}

async fn page(
    state: &AppState,
    filter: LedgerFilter,
    p: &PageParams,
) -> Result<LedgerPage, Failure> {
    let limit = checked_limit(p.limit, 100)?;
    let entries = state
        .store
        .ledger(filter, p.after.unwrap_or(0), limit)
        .await
        .map_err(Failure::store)?;
    let next_after = (entries.len() == limit as usize)
        .then(|| entries.last().map(|e| e.seq))
        .flatten();
    Ok(LedgerPage {
        entries,
        next_after,
    })
}

pub(super) async fn my_ledger(
    State(state): State<AppState>,
    Extension(Submitter(name)): Extension<Submitter>,
    params: Result<Query<PageParams>, QueryRejection>,
) -> Result<Json<LedgerPage>, Failure> {
    let p = page_params(params)?;
    if p.account.is_some() {
        return Err(Failure::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            "account= is for the admin ledger; this one is yours",
        ));
    }
    page(&state, LedgerFilter::Owner(name), &p).await.map(Json)
}

pub(super) async fn admin_ledger(
    State(state): State<AppState>,
    params: Result<Query<PageParams>, QueryRejection>,
) -> Result<Json<LedgerPage>, Failure> {
    let p = page_params(params)?;
    let filter = p
        .account
        .clone()
        .map_or(LedgerFilter::All, LedgerFilter::Account);
    page(&state, filter, &p).await.map(Json)
}

/// `?limit=` of the leaderboard (default 100).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BoardParams {
    limit: Option<u32>,
}

pub(super) async fn leaderboard(
    State(state): State<AppState>,
    params: Result<Query<BoardParams>, QueryRejection>,
) -> Result<Json<Vec<LeaderboardRow>>, Failure> {
    let Query(p) = params
        .map_err(|e| Failure::new(StatusCode::BAD_REQUEST, "invalid_query", e.body_text()))?;
    let limit = checked_limit(p.limit, 100)? as usize;
    let mut rows: Vec<LeaderboardRow> = super::nodes::all_nodes(&state)
        .await?
        .into_iter()
        .map(|n| LeaderboardRow {
            node_id: n.node_id,
            credits: n.credits,
        })
        .collect();
    rows.sort_by(|a, b| {
        b.credits
            .recent_average
            .total_cmp(&a.credits.recent_average)
            .then(b.credits.total.cmp(&a.credits.total))
            .then(a.node_id.cmp(&b.node_id))
    });
    rows.truncate(limit);
    Ok(Json(rows))
}

/// An account's figures and limits. `None` when `name` is neither a bootstrap submitter nor an
/// account made at run time.
async fn find_account(state: &AppState, name: &str) -> Result<Option<AccountInfo>, Failure> {
    let record = state
        .store
        .accounts(Some(name.to_string()))
        .await
        .map_err(Failure::store)?
        .pop();
    let bootstrap = state.keys.iter().any(|k| k.submitter == name);
    if record.is_none() && !bootstrap {
        return Ok(None);
    }
    let totals = state
        .store
        .account_totals(name.to_string())
        .await
        .map_err(Failure::store)?;
    Ok(Some(AccountInfo {
        account: name.to_string(),
        balance: totals.balance,
        reserved: totals.reserved,
        spent: totals.spent,
        earned: totals.earned,
        nodes: totals.nodes,
        limits: record.as_ref().map(|r| r.limits).unwrap_or_default(),
        created_at: record.and_then(|r| DateTime::<Utc>::from_timestamp(r.created_at, 0)),
    }))
}

async fn account_info(state: &AppState, name: &str) -> Result<AccountInfo, Failure> {
    find_account(state, name)
        .await?
        .ok_or_else(|| no_account(name))
}

fn no_account(name: &str) -> Failure {
    Failure::new(
        StatusCode::NOT_FOUND,
        "account_not_found",
        format!("no account {name:?}"),
    )
}

/// The most one grant may mint: a billion credits.
const MAX_GRANT: i64 = 1_000_000_000 * ambient_protocol::credits::MICRO;

/// Refuses a grant past [`MAX_GRANT`], so that no balance nears `i64`'s end.
fn check_grant(amount: i64) -> Result<(), Failure> {
    if !(0..=MAX_GRANT).contains(&amount) {
        return Err(invalid(format!(
            "a grant is 0 to {MAX_GRANT} µcredits (a billion credits); got {amount}"
        )));
    }
    Ok(())
}

fn invalid(message: impl Into<String>) -> Failure {
    Failure::new(StatusCode::BAD_REQUEST, "invalid_request", message)
}

/// Mints `amount` into `name` through the engine, which writes it before answering.
async fn grant(state: &AppState, name: &str, amount: i64, memo: String) -> Result<(), Failure> {
    let (reply, rx) = oneshot::channel();
    let msg = EngineMsg::Grant {
        account: name.to_string(),
        amount,
        memo,
        reply,
    };
    state
        .engine()?
        .send(msg)
        .await
        .map_err(|_| Failure::unavailable())?;
    rx.await
        .map_err(|_| Failure::unavailable())?
        .map_err(Failure::store)?;
    Ok(())
}

pub(super) async fn create_account(
    State(state): State<AppState>,
    req: Result<Json<serde_json::Value>, JsonRejection>,
) -> Result<(StatusCode, Json<AccountCreated>), Failure> {
    let req: AccountCreate = body(req)?;
    keys::check_name(&req.account).map_err(|e| invalid(e.to_string()))?;
    check_grant(req.credits)?;
    check_limits(&req.limits)?;
    let exists = || {
        Failure::new(
            StatusCode::CONFLICT,
            "account_exists",
            format!("an account {:?} exists already", req.account),
        )
    };
    if state.keys.iter().any(|k| k.submitter == req.account) {
        return Err(exists());
    }
    let now = Utc::now().timestamp();
    let record = AccountRecord {
        name: req.account.clone(),
        created_at: now,
        limits: req.limits,
    };
    if !state
        .store
        .put_account(record)
        .await
        .map_err(Failure::store)?
    {
        return Err(exists());
    }
    // The key first: should the grant fail (no leader for a moment), the account is usable and
    // the admin grants again.
    let key = make_key(&state, &req.account, now).await?;
    set_engine_limits(&state, &req.account, req.limits).await?;
    if req.credits > 0 {
        grant(&state, &req.account, req.credits, "opening grant".into()).await?;
    }
    let account = account_info(&state, &req.account).await?;
    Ok((StatusCode::CREATED, Json(AccountCreated { account, key })))
}

fn check_limits(l: &AccountLimits) -> Result<(), Failure> {
    if l.max_per_second
        .is_some_and(|r| !(r.is_finite() && r > 0.0))
    {
        return Err(invalid("limits.max_per_second must be a number above 0"));
    }
    if l.spending_cap.is_some_and(|c| c < 0) {
        return Err(invalid("limits.spending_cap must not be negative"));
    }
    Ok(())
}

async fn set_engine_limits(
    state: &AppState,
    name: &str,
    limits: AccountLimits,
) -> Result<(), Failure> {
    state
        .engine()?
        .send(EngineMsg::Limits(name.to_string(), limits))
        .await
        .map_err(|_| Failure::unavailable())
}

async fn make_key(state: &AppState, name: &str, now: i64) -> Result<KeyCreated, Failure> {
    let (record, shown) = new_key(name, now);
    state.store.put_key(record).await.map_err(Failure::store)?;
    Ok(shown)
}

pub(super) async fn list_accounts(
    State(state): State<AppState>,
) -> Result<Json<Vec<AccountInfo>>, Failure> {
    let mut names: Vec<String> = state
        .store
        .accounts(None)
        .await
        .map_err(Failure::store)?
        .into_iter()
        .map(|a| a.name)
        .chain(state.keys.iter().map(|k| k.submitter.clone()))
        .collect();
    names.sort();
    names.dedup();
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        out.push(account_info(&state, &name).await?);
    }
    Ok(Json(out))
}

pub(super) async fn create_key(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<KeyCreated>), Failure> {
    if state
        .store
        .accounts(Some(name.clone()))
        .await
        .map_err(Failure::store)?
        .is_empty()
    {
        return Err(no_account(&name));
    }
    let key = make_key(&state, &name, Utc::now().timestamp()).await?;
    Ok((StatusCode::CREATED, Json(key)))
}

pub(super) async fn list_keys(
    State(state): State<AppState>,
) -> Result<Json<Vec<KeyInfo>>, Failure> {
    let keys = state.store.keys(None).await.map_err(Failure::store)?;
    Ok(Json(keys.iter().map(|k| k.info()).collect()))
}

pub(super) async fn revoke_key(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, Failure> {
    match state
        .store
        .revoke_key(id.clone())
        .await
        .map_err(Failure::store)?
    {
        true => Ok(StatusCode::NO_CONTENT),
        false => Err(Failure::new(
            StatusCode::NOT_FOUND,
            "key_not_found",
            format!("no API key {id:?}"),
        )),
    }
}

pub(super) async fn grant_credits(
    State(state): State<AppState>,
    Path(name): Path<String>,
    req: Result<Json<serde_json::Value>, JsonRejection>,
) -> Result<(StatusCode, Json<AccountInfo>), Failure> {
    let req: Grant = body(req)?;
    if req.amount <= 0 {
        return Err(invalid("amount must be more than 0 µcredits"));
    }
    check_grant(req.amount)?;
    let Some(before) = find_account(&state, &name).await? else {
        return Err(no_account(&name));
    };
    if before.balance > i64::MAX / 4 - req.amount {
        return Err(invalid(format!(
            "{name:?} holds {} µcredits already; this grant would take it past what an \
             account may hold",
            before.balance
        )));
    }
    let memo = if req.memo.is_empty() {
        "grant".to_string()
    } else {
        req.memo
    };
    grant(&state, &name, req.amount, memo).await?;
    Ok((
        StatusCode::CREATED,
        Json(account_info(&state, &name).await?),
    ))
}

pub(super) async fn set_limits(
    State(state): State<AppState>,
    Path(name): Path<String>,
    req: Result<Json<serde_json::Value>, JsonRejection>,
) -> Result<Json<AccountInfo>, Failure> {
    let limits: AccountLimits = body(req)?;
    check_limits(&limits)?;
    if !state
        .store
        .set_limits(name.clone(), limits)
        .await
        .map_err(Failure::store)?
    {
        return Err(Failure::new(
            StatusCode::NOT_FOUND,
            "account_not_found",
            format!("no account {name:?} made at run time (bootstrap submitters have no limits)"),
        ));
    }
    set_engine_limits(&state, &name, limits).await?;
    Ok(Json(account_info(&state, &name).await?))
}
