//! Requests that need the scheduler (submit, cancel, nodes, signed blob downloads), on a
//! coordinator that does not run it: forwarded to the one that does ([`crate::leader`]), found in
//! the database, and its answer passed back unchanged. Reads of tasks, proofs and circuits never
//! come here: every coordinator serves them from the database.
//!
//! A forwarded request carries [`FORWARDED_BY`]; one that arrives at a coordinator that does not
//! lead either (the lease moved in between) gets `503 no_leader` instead of a second hop, as does
//! any request while no lease is live (a takeover takes up to `scheduler.leader_lease_sec`).

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{AppState, Failure};
use crate::store::Store;

/// Set on a forwarded request, to the forwarding coordinator's URL.
pub const FORWARDED_BY: &str = "x-ambient-forwarded-by";

/// How long a forwarded request may take, the leader's answer included.
const TIMEOUT: Duration = Duration::from_secs(60);

/// Headers that belong to one hop and are not passed on.
const HOP_BY_HOP: [HeaderName; 4] = [
    header::HOST,
    header::CONNECTION,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
];

/// Where and how to forward.
#[derive(Clone)]
pub struct Forward {
    store: Store,
    /// This coordinator's URL.
    me: String,
    client: reqwest::Client,
}

impl Forward {
    /// Forwards through `store`'s record of the leader; `me` is this coordinator's URL.
    pub fn new(store: Store, me: String) -> Forward {
        Forward {
            store,
            me,
            client: reqwest::Client::builder()
                .timeout(TIMEOUT)
                .build()
                .unwrap_or_default(),
        }
    }
}

fn no_leader(message: impl Into<String>) -> Failure {
    Failure::new(StatusCode::SERVICE_UNAVAILABLE, "no_leader", message)
}

/// Middleware: runs the handler when this coordinator leads, and forwards otherwise.
pub(super) async fn to_leader(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if state.leading.borrow().is_some() {
        return next.run(req).await;
    }
    match forward(&state, req).await {
        Ok(response) => response,
        Err(failure) => failure.into_response(),
    }
}

async fn forward(state: &AppState, req: Request) -> Result<Response, Failure> {
    let f = &state.forward;
    if req.headers().contains_key(FORWARDED_BY) {
        return Err(no_leader(
            "the coordinator this was forwarded to no longer runs the scheduler; retry",
        ));
    }
    let leader = f.store.leader().await.map_err(Failure::store)?;
    let Some(leader) = leader.filter(|l| l.live && l.url != f.me) else {
        return Err(no_leader(
            "no coordinator runs the scheduler right now (a takeover is under way); retry",
        ));
    };
    let (parts, body) = req.into_parts();
    let limit = state.limits.max_body_bytes + (4 << 20);
    let body = axum::body::to_bytes(body, limit)
        .await
        .map_err(|e| Failure::new(StatusCode::BAD_REQUEST, "bad_request", e.to_string()))?;
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut out = f
        .client
        .request(parts.method, format!("{}{path}", leader.url))
        .header(FORWARDED_BY, &f.me)
        .body(body);
    for (name, value) in &parts.headers {
        if !HOP_BY_HOP.contains(name) {
            out = out.header(name, value);
        }
    }
    let answer = out.send().await.map_err(|e| {
        no_leader(format!(
            "the coordinator that runs the scheduler ({}) did not answer: {e}; retry",
            leader.url
        ))
    })?;
    let mut response = Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        if !HOP_BY_HOP.contains(name) {
            response = response.header(name, value);
        }
    }
    let bytes = answer
        .bytes()
        .await
        .map_err(|e| no_leader(format!("the leader's answer broke off: {e}; retry")))?;
    response
        .body(Body::from(bytes))
        .map_err(|e| Failure::new(StatusCode::BAD_GATEWAY, "bad_gateway", e.to_string()))
}
