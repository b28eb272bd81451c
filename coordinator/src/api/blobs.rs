//! `/api/v1/blobs`: submitters upload artifacts (ONNX models) by content address; nodes
//! download artifacts and federated models with a request signed by their identity key.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use ambient_protocol::identity;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{AppState, Failure};
use crate::metrics::Metrics;
use crate::submission::SubmitError;

/// Stores an artifact by content address. Inference tasks then name it by `model_sha256`.
pub(super) async fn put_blob(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), Failure> {
    let max = state.limits.max_model_bytes;
    let too_large = |size| Failure::from(SubmitError::ModuleTooLarge { size, max });
    let body = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large(max + 1)
        } else {
            Failure::new(r.status(), "bad_request", r.body_text())
        }
    })?;
    if body.len() > max {
        return Err(too_large(body.len()));
    }
    if body.is_empty() {
        return Err(Failure::new(
            StatusCode::BAD_REQUEST,
            "empty_blob",
            "the body is empty",
        ));
    }
    let sha = ambient_protocol::sha256_hex(&body);
    let size = body.len();
    state
        .store
        .put_blob(sha.clone(), body.to_vec())
        .await
        .map_err(Failure::store)?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({"sha256": sha, "size": size})),
    ))
}

/// Sends a blob to a node. Nodes have no API key: they sign the request with their identity key
/// (headers [`identity::HEADER_NODE`], [`identity::HEADER_TIME`], [`identity::HEADER_NONCE`] and
/// [`identity::HEADER_SIGNATURE`] over [`identity::blob_request_message`]), which the coordinator
/// knows from the node's retained identity topic, and each signed request is served once
/// ([`Nonces`]). Blobs are content-addressed, so the agent checks what it gets against the hash it
/// asked for.
pub(super) async fn get_blob(
    State(state): State<AppState>,
    Path(sha): Path<String>,
    headers: axum::http::HeaderMap,
) -> Result<Response, Failure> {
    let unauthorized = |error: &str, message: String| {
        Metrics::inc(&state.metrics.blob_requests_refused);
        Failure::new(StatusCode::UNAUTHORIZED, error, message)
    };
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(node), Some(time), Some(nonce), Some(sig)) = (
        header(identity::HEADER_NODE),
        header(identity::HEADER_TIME),
        header(identity::HEADER_NONCE).filter(|n| identity::is_nonce(n)),
        header(identity::HEADER_SIGNATURE),
    ) else {
        return Err(unauthorized(
            "unauthorized",
            format!(
                "a blob download must be signed by a node: headers {}, {}, {} (32 hex digits) \
                 and {}",
                identity::HEADER_NODE,
                identity::HEADER_TIME,
                identity::HEADER_NONCE,
                identity::HEADER_SIGNATURE
            ),
        ));
    };
    let now = chrono::Utc::now().timestamp();
    let Some(time) = time
        .parse::<i64>()
        .ok()
        .filter(|t| t.abs_diff(now) <= identity::MAX_CLOCK_SKEW_SECS.unsigned_abs())
    else {
        return Err(unauthorized(
            "stale_request",
            format!(
                "{} must be the Unix time within {} s of the coordinator's clock ({now})",
                identity::HEADER_TIME,
                identity::MAX_CLOCK_SKEW_SECS
            ),
        ));
    };
    let sig = hex::decode(sig).unwrap_or_default();
    let msg = identity::blob_request_message(node, &sha, time, nonce);
    if let Err(e) = state.identities.verify(node, &msg, &sig) {
        return Err(unauthorized("bad_signature", e.to_string()));
    }
    if let Err(e) = state.nonces.first_use(node, nonce, now) {
        return Err(unauthorized("replayed_request", e.to_string()));
    }
    if !ambient_protocol::is_sha256_hex(&sha) {
        return Err(Failure::new(
            StatusCode::BAD_REQUEST,
            "invalid_sha256",
            "a blob is named by 64 lower-case hex digits",
        ));
    }
    let Some(bytes) = state
        .store
        .blob(sha.clone())
        .await
        .map_err(Failure::store)?
    else {
        return Err(Failure::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no blob {sha}"),
        ));
    };
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

/// The nonces of signed blob requests served within the clock-skew window, so each signed request
/// is served once: one captured on the way (a proxy's log, a shared network) cannot be replayed.
/// Kept in memory: a coordinator that restarts forgets them, so a request captured in the
/// [`identity::MAX_CLOCK_SKEW_SECS`] before a restart could be replayed once after it.
#[derive(Default)]
pub(crate) struct Nonces(Mutex<HashMap<(String, String), i64>>);

/// Why a signed request's nonce was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum NonceRefused {
    /// The same node already sent this nonce: a replay.
    #[error("this signed request was already served; sign each request with a fresh nonce")]
    Replayed,
    /// So many nonces are live that the coordinator takes no more until some expire.
    #[error(
        "too many signed requests in the last {} s; retry later",
        identity::MAX_CLOCK_SKEW_SECS
    )]
    Full,
}

impl Nonces {
    /// Live nonces kept at most (about 100 bytes each).
    const MAX: usize = 1_000_000;

    /// Records `node`'s `nonce`, seen at `now` (Unix seconds), refusing a second use. A nonce is
    /// kept for twice the clock-skew window: a request signed at `t` is accepted until
    /// `t + MAX_CLOCK_SKEW_SECS`, and `t` may be as late as `now + MAX_CLOCK_SKEW_SECS`.
    pub(crate) fn first_use(&self, node: &str, nonce: &str, now: i64) -> Result<(), NonceRefused> {
        let mut seen = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (node.to_string(), nonce.to_string());
        if seen.get(&key).is_some_and(|&until| until >= now) {
            return Err(NonceRefused::Replayed);
        }
        if seen.len() >= Self::MAX {
            seen.retain(|_, until| *until >= now);
            if seen.len() >= Self::MAX {
                return Err(NonceRefused::Full);
            }
        }
        seen.insert(key, now + 2 * identity::MAX_CLOCK_SKEW_SECS);
        if seen.len().is_multiple_of(1024) {
            seen.retain(|_, until| *until >= now);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_is_served_once_per_node_until_it_expires() {
        let nonces = Nonces::default();
        let n = identity::nonce();
        assert_eq!(nonces.first_use("a", &n, 100), Ok(()));
        assert_eq!(nonces.first_use("a", &n, 101), Err(NonceRefused::Replayed));
        assert_eq!(nonces.first_use("b", &n, 101), Ok(()));
        let later = 100 + 2 * identity::MAX_CLOCK_SKEW_SECS + 1;
        assert_eq!(nonces.first_use("a", &n, later), Ok(()));
        assert_ne!(identity::nonce(), n);
        assert!(identity::is_nonce(&n));
    }
}
