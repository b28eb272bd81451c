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

use serde::{Deserialize, Serialize};

use super::{AppState, Failure};
use crate::store::{LeaderInfo, Store};
use crate::submission::Accepted;

/// Set on a forwarded request, to the forwarding coordinator's URL.
pub const FORWARDED_BY: &str = "x-ambient-forwarded-by";

/// The header that carries the leader's intake secret ([`crate::store::LeaderInfo::secret`]) on
/// `POST /internal/v1/intake`.
pub const INTAKE_SECRET: &str = "x-ambient-intake-secret";

/// The leader's intake route: submissions checked by another coordinator.
pub const INTAKE_PATH: &str = "/internal/v1/intake";

/// What a follower hands the leader: a submission it checked and whose artifact it stored.
#[derive(Serialize, Deserialize)]
pub(super) struct Intake {
    /// Whose task it is (the follower authenticated the caller).
    pub(super) submitter: String,
    /// The checked submission.
    pub(super) accepted: Accepted,
}

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

    /// Hands a submission this coordinator checked (and whose artifact it stored) to the
    /// leader's intake, and passes its answer back: the body is a few hundred bytes whatever
    /// the module's size, and the leader spends nothing on checking it.
    pub(super) async fn intake(
        &self,
        submitter: &str,
        accepted: Accepted,
    ) -> Result<Response, Failure> {
        let leader = self.live_leader().await?;
        let body = serde_json::to_vec(&Intake {
            submitter: submitter.to_owned(),
            accepted,
        })
        .map_err(|e| Failure::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
        let answer = self
            .client
            .post(format!("{}{INTAKE_PATH}", leader.url))
            .header(FORWARDED_BY, &self.me)
            .header(INTAKE_SECRET, &leader.secret)
            .header(header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await;
        pass_back(&leader.url, answer).await
    }

    /// The leader, when its lease is live and it is not this coordinator.
    async fn live_leader(&self) -> Result<LeaderInfo, Failure> {
        let leader = self.store.leader().await.map_err(Failure::store)?;
        leader
            .filter(|l| l.live && l.url != self.me)
            .ok_or_else(|| {
                no_leader(
                    "no coordinator runs the scheduler right now (a takeover is under way); retry",
                )
            })
    }
}

pub(super) fn no_leader(message: impl Into<String>) -> Failure {
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
    let leader = f.live_leader().await?;
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
    pass_back(&leader.url, out.send().await).await
}

/// The leader's answer, status, headers and body, as this coordinator's.
async fn pass_back(
    leader: &str,
    answer: Result<reqwest::Response, reqwest::Error>,
) -> Result<Response, Failure> {
    let answer = answer.map_err(|e| {
        no_leader(format!(
            "the coordinator that runs the scheduler ({leader}) did not answer: {e}; retry"
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
