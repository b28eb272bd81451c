//! Authentication of submitters: `Authorization: Bearer <api key>`, a bootstrap key of the
//! configuration (compared in constant time) or a key made at run time (found by its sha256).
//! Operators' admin keys likewise, for the admin routes. (Nodes sign their blob downloads instead:
//! see [`super::blobs`].)

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

use super::{AppState, Failure};
use crate::credits::keys::key_sha256;

/// The authenticated submitter of a request.
#[derive(Clone)]
pub(super) struct Submitter(pub(super) String);

pub(super) async fn authenticate(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Result<Response, Failure> {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let Some(token) = header.and_then(|h| h.strip_prefix("Bearer ")) else {
        return Err(Failure::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing 'Authorization: Bearer <api key>' header",
        ));
    };
    let token = token.trim();
    let bootstrap = state
        .keys
        .iter()
        .find(|k| constant_time_eq(k.key.as_bytes(), token.as_bytes()))
        .map(|k| k.submitter.clone());
    // Keys made at run time are looked up by their sha256 (the store keeps nothing else).
    let submitter = match bootstrap {
        Some(s) => Some(s),
        None => state
            .store
            .key_account(key_sha256(token))
            .await
            .map_err(Failure::store)?,
    };
    let Some(submitter) = submitter else {
        return Err(Failure::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "invalid API key",
        ));
    };
    req.extensions_mut().insert(Submitter(submitter));
    Ok(next.run(req).await)
}

/// Middleware of the admin routes: `Authorization: Bearer <admin key>`, one of `admin_keys`.
pub(super) async fn authenticate_admin(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, Failure> {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "));
    let Some(token) = token else {
        return Err(Failure::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing 'Authorization: Bearer <admin key>' header",
        ));
    };
    if state.admin_keys.is_empty() {
        return Err(Failure::new(
            StatusCode::FORBIDDEN,
            "admin_disabled",
            "this coordinator has no admin_keys configured, so no admin API",
        ));
    }
    let known = state
        .admin_keys
        .iter()
        .any(|k| constant_time_eq(k.as_bytes(), token.trim().as_bytes()));
    if !known {
        return Err(Failure::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "invalid admin key",
        ));
    }
    Ok(next.run(req).await)
}

pub(super) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
