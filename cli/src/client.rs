//! A small REST client for the coordinator API, used by the CLI commands, the demo and tests.

use std::time::{Duration, Instant};

use ambient_protocol::credits::{
    AccountCreate, AccountCreated, AccountInfo, AccountLimits, Grant, KeyCreated, KeyInfo,
    LeaderboardRow, LedgerPage, PriceList,
};
use ambient_protocol::join::{TokenInfo, TokenRequest};
use ambient_protocol::{ApiError, NodeInfo, ReputationReport, TaskInfo, TaskSubmission};
use uuid::Uuid;

/// A failed API call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The coordinator answered with an error body.
    #[error("{status}: {} ({})", .body.message, .body.error)]
    Api {
        /// HTTP status.
        status: u16,
        /// The `{error, message}` body.
        body: ApiError,
    },
    /// No answer, or not one we understand.
    #[error("cannot reach the coordinator: {0}")]
    Transport(#[from] reqwest::Error),
    /// The task did not finish in time.
    #[error("task {0} did not finish within {1:?}")]
    Timeout(Uuid, Duration),
}

impl ClientError {
    /// The API error code, if the coordinator answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { body, .. } => Some(&body.error),
            _ => None,
        }
    }
}

/// The keys a proof is checked with: a `zk_proof` circuit instance's, or a proved inference
/// model's.
#[derive(Debug, Clone, Copy)]
pub enum ProofKeys<'a> {
    /// A circuit at a size.
    Circuit {
        /// `hash_chain` or `dot`.
        circuit: &'a str,
        /// The size.
        n: u64,
    },
    /// A model, by the sha256 of its ONNX bytes.
    Model {
        /// The model's sha256.
        sha256: &'a str,
    },
}

/// The client.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Client {
    /// A client for `base` (e.g. `http://127.0.0.1:8080`) with an API key.
    pub fn new(base: &str, key: &str) -> Client {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .no_proxy()
            .build()
            .unwrap_or_default();
        Client {
            http,
            base: base.trim_end_matches('/').to_string(),
            key: key.to_string(),
        }
    }

    async fn decode<T: serde::de::DeserializeOwned>(
        resp: reqwest::Response,
    ) -> Result<T, ClientError> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp.json().await?);
        }
        let text = resp.text().await?;
        let body =
            serde_json::from_str(&text).unwrap_or_else(|_| ApiError::new("http_error", text));
        Err(ClientError::Api {
            status: status.as_u16(),
            body,
        })
    }

    /// `POST /api/v1/tasks` with a raw body.
    pub async fn submit_raw(&self, body: Vec<u8>) -> Result<TaskInfo, ClientError> {
        let resp = self
            .http
            .post(format!("{}/api/v1/tasks", self.base))
            .bearer_auth(&self.key)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        Self::decode(resp).await
    }

    /// `POST /api/v1/tasks`.
    pub async fn submit(&self, sub: &TaskSubmission) -> Result<TaskInfo, ClientError> {
        self.submit_raw(serde_json::to_vec(sub).unwrap_or_default())
            .await
    }

    /// An authenticated request without a body.
    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> Result<T, ClientError> {
        let resp = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .send()
            .await?;
        Self::decode(resp).await
    }

    /// `GET /api/v1/proofs/{id}`: a verified proof with its public inputs and snarkjs JSON.
    pub async fn proof(&self, id: &str) -> Result<serde_json::Value, ClientError> {
        self.call(reqwest::Method::GET, &format!("/api/v1/proofs/{id}"))
            .await
    }

    /// `POST /api/v1/proofs/verify`: whether `proof` verifies against `public_inputs` with the
    /// coordinator's `keys`.
    pub async fn verify_proof(
        &self,
        keys: ProofKeys<'_>,
        public_inputs: &serde_json::Value,
        proof: &str,
    ) -> Result<bool, ClientError> {
        let mut body = match keys {
            ProofKeys::Circuit { circuit, n } => serde_json::json!({"circuit": circuit, "n": n}),
            ProofKeys::Model { sha256 } => serde_json::json!({"model_sha256": sha256}),
        };
        body["public_inputs"] = public_inputs.clone();
        body["proof"] = proof.into();
        let resp = self
            .http
            .post(format!("{}/api/v1/proofs/verify", self.base))
            .bearer_auth(&self.key)
            .json(&body)
            .send()
            .await?;
        let v: serde_json::Value = Self::decode(resp).await?;
        Ok(v["valid"] == true)
    }

    /// `PUT /api/v1/blobs`: uploads an artifact, returns its sha256.
    pub async fn put_blob(&self, bytes: Vec<u8>) -> Result<String, ClientError> {
        let resp = self
            .http
            .put(format!("{}/api/v1/blobs", self.base))
            .bearer_auth(&self.key)
            .body(bytes)
            .send()
            .await?;
        let v: serde_json::Value = Self::decode(resp).await?;
        Ok(v["sha256"].as_str().unwrap_or_default().to_string())
    }

    /// `GET /api/v1/tasks/{id}`.
    pub async fn task(&self, id: Uuid) -> Result<TaskInfo, ClientError> {
        self.call(reqwest::Method::GET, &format!("/api/v1/tasks/{id}"))
            .await
    }

    /// `GET /api/v1/tasks`.
    pub async fn tasks(&self) -> Result<Vec<TaskInfo>, ClientError> {
        self.call(reqwest::Method::GET, "/api/v1/tasks").await
    }

    /// `DELETE /api/v1/tasks/{id}`.
    pub async fn cancel(&self, id: Uuid) -> Result<TaskInfo, ClientError> {
        self.call(reqwest::Method::DELETE, &format!("/api/v1/tasks/{id}"))
            .await
    }

    /// `GET /api/v1/nodes`.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, ClientError> {
        self.call(reqwest::Method::GET, "/api/v1/nodes").await
    }

    /// `POST /api/v1/admin/tokens` (admin key): a new enrolment token, with its secret.
    pub async fn create_token(&self, req: &TokenRequest) -> Result<TokenInfo, ClientError> {
        let resp = self
            .http
            .post(format!("{}/api/v1/admin/tokens", self.base))
            .bearer_auth(&self.key)
            .json(req)
            .send()
            .await?;
        Self::decode(resp).await
    }

    /// `GET /api/v1/admin/tokens` (admin key).
    pub async fn tokens(&self) -> Result<Vec<TokenInfo>, ClientError> {
        self.call(reqwest::Method::GET, "/api/v1/admin/tokens")
            .await
    }

    /// `DELETE /api/v1/admin/tokens/{id}` (admin key).
    pub async fn revoke_token(&self, id: &str) -> Result<(), ClientError> {
        self.call_empty(
            reqwest::Method::DELETE,
            &format!("/api/v1/admin/tokens/{id}"),
        )
        .await
    }

    /// `POST /api/v1/admin/nodes/{id}/revoke` (admin key).
    pub async fn revoke_node(&self, id: &str) -> Result<(), ClientError> {
        self.call_empty(
            reqwest::Method::POST,
            &format!("/api/v1/admin/nodes/{id}/revoke"),
        )
        .await
    }

    /// An authenticated request with a JSON body.
    async fn send<B: serde::Serialize, T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let resp = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .json(body)
            .send()
            .await?;
        Self::decode(resp).await
    }

    /// `GET /api/v1/templates`: the coordinator's task templates.
    pub async fn templates(&self) -> Result<Vec<ambient_protocol::TemplateInfo>, ClientError> {
        self.call(reqwest::Method::GET, "/api/v1/templates").await
    }

    /// `POST /api/v1/templates/{name}/render`: template `name`'s submission body with the values
    /// in `req` (nothing is submitted).
    pub async fn render_template(
        &self,
        name: &str,
        req: &ambient_protocol::TemplateRender,
    ) -> Result<ambient_protocol::RenderedTemplate, ClientError> {
        let name: String = name
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        let path = format!("/api/v1/templates/{name}/render");
        self.send(reqwest::Method::POST, &path, req).await
    }

    /// `GET /api/v1/prices` (no key needed).
    pub async fn prices(&self) -> Result<PriceList, ClientError> {
        self.call(reqwest::Method::GET, "/api/v1/prices").await
    }

    /// `GET /api/v1/account`: the caller's credits.
    pub async fn account(&self) -> Result<AccountInfo, ClientError> {
        self.call(reqwest::Method::GET, "/api/v1/account").await
    }

    /// `GET /api/v1/account/ledger`: a page of the caller's ledger after `after`.
    pub async fn ledger(
        &self,
        after: Option<i64>,
        limit: Option<u32>,
    ) -> Result<LedgerPage, ClientError> {
        let query = query(&[
            ("after", after.map(|a| a.to_string())),
            ("limit", limit.map(|l| l.to_string())),
        ]);
        self.call(
            reqwest::Method::GET,
            &format!("/api/v1/account/ledger{query}"),
        )
        .await
    }

    /// `GET /api/v1/leaderboard`: nodes by recent average credit.
    pub async fn leaderboard(
        &self,
        limit: Option<u32>,
    ) -> Result<Vec<LeaderboardRow>, ClientError> {
        let query = query(&[("limit", limit.map(|l| l.to_string()))]);
        self.call(reqwest::Method::GET, &format!("/api/v1/leaderboard{query}"))
            .await
    }

    /// `POST /api/v1/admin/accounts` (admin key): the account and its first API key.
    pub async fn create_account(&self, req: &AccountCreate) -> Result<AccountCreated, ClientError> {
        self.send(reqwest::Method::POST, "/api/v1/admin/accounts", req)
            .await
    }

    /// `GET /api/v1/admin/accounts` (admin key).
    pub async fn accounts(&self) -> Result<Vec<AccountInfo>, ClientError> {
        self.call(reqwest::Method::GET, "/api/v1/admin/accounts")
            .await
    }

    /// `POST /api/v1/admin/accounts/{name}/grant` (admin key): the account after the grant.
    pub async fn grant(&self, account: &str, grant: &Grant) -> Result<AccountInfo, ClientError> {
        self.send(
            reqwest::Method::POST,
            &format!("/api/v1/admin/accounts/{account}/grant"),
            grant,
        )
        .await
    }

    /// `PUT /api/v1/admin/accounts/{name}/limits` (admin key): replaces all its limits.
    pub async fn set_limits(
        &self,
        account: &str,
        limits: &AccountLimits,
    ) -> Result<AccountInfo, ClientError> {
        self.send(
            reqwest::Method::PUT,
            &format!("/api/v1/admin/accounts/{account}/limits"),
            limits,
        )
        .await
    }

    /// `POST /api/v1/admin/accounts/{name}/keys` (admin key): a new key, shown once.
    pub async fn create_key(&self, account: &str) -> Result<KeyCreated, ClientError> {
        self.call(
            reqwest::Method::POST,
            &format!("/api/v1/admin/accounts/{account}/keys"),
        )
        .await
    }

    /// `GET /api/v1/admin/keys` (admin key).
    pub async fn keys(&self) -> Result<Vec<KeyInfo>, ClientError> {
        self.call(reqwest::Method::GET, "/api/v1/admin/keys").await
    }

    /// `DELETE /api/v1/admin/keys/{id}` (admin key).
    pub async fn revoke_key(&self, id: &str) -> Result<(), ClientError> {
        self.call_empty(reqwest::Method::DELETE, &format!("/api/v1/admin/keys/{id}"))
            .await
    }

    /// `GET /api/v1/admin/ledger` (admin key): a page of the whole ledger, or of one account's
    /// postings (`node:{id}`, `submitter:{name}`, `fee`, `mint`, …).
    pub async fn admin_ledger(
        &self,
        account: Option<&str>,
        after: Option<i64>,
        limit: Option<u32>,
    ) -> Result<LedgerPage, ClientError> {
        let query = query(&[
            ("account", account.map(str::to_string)),
            ("after", after.map(|a| a.to_string())),
            ("limit", limit.map(|l| l.to_string())),
        ]);
        self.call(
            reqwest::Method::GET,
            &format!("/api/v1/admin/ledger{query}"),
        )
        .await
    }

    async fn call_empty(&self, method: reqwest::Method, path: &str) -> Result<(), ClientError> {
        let resp = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .send()
            .await?;
        if resp.status().is_success() {
            return Ok(());
        }
        Self::decode::<serde_json::Value>(resp).await.map(|_| ())
    }

    /// `GET /api/v1/nodes/{id}/reputation`: score, counts and recent history.
    pub async fn reputation(&self, node: &str) -> Result<ReputationReport, ClientError> {
        self.call(
            reqwest::Method::GET,
            &format!("/api/v1/nodes/{node}/reputation"),
        )
        .await
    }

    /// Polls a task until it is terminal, calling `progress` whenever its status changes.
    pub async fn wait(
        &self,
        id: Uuid,
        timeout: Duration,
        mut progress: impl FnMut(&TaskInfo),
    ) -> Result<TaskInfo, ClientError> {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        loop {
            let info = self.task(id).await?;
            if last != Some((info.status, info.status_reason.clone())) {
                progress(&info);
                last = Some((info.status, info.status_reason.clone()));
            }
            if info.status.is_terminal() {
                return Ok(info);
            }
            if Instant::now() > deadline {
                return Err(ClientError::Timeout(id, timeout));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until at least `n` nodes are online.
    pub async fn wait_for_nodes(&self, n: usize, timeout: Duration) -> Result<(), ClientError> {
        let deadline = Instant::now() + timeout;
        loop {
            let online = self
                .nodes()
                .await?
                .iter()
                .filter(|n| n.state == ambient_protocol::NodeState::Online && n.health.is_some())
                .count();
            if online >= n {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(ClientError::Timeout(Uuid::nil(), timeout));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A query string (`?a=1&b=x%3Ay`) of the parameters that have a value; empty when none has.
fn query(params: &[(&str, Option<String>)]) -> String {
    let mut out = String::new();
    for (name, value) in params {
        let Some(value) = value else { continue };
        out.push(if out.is_empty() { '?' } else { '&' });
        out.push_str(name);
        out.push('=');
        for b in value.bytes() {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    out
}

/// Submits a task by MQTT publish on `ambient/v1/submit/{submitter}` and waits for its terminal
/// status on `ambient/v1/submitters/{submitter}/tasks/{id}`. A rejection arrives on
/// `…/rejections` and comes back as [`ClientError::Api`] with status 0.
pub async fn submit_over_mqtt(
    conn: &crate::local::Connection,
    mut sub: TaskSubmission,
    timeout: Duration,
) -> Result<TaskInfo, ClientError> {
    use ambient_link::{Incoming, LinkOptions, QoS};
    use ambient_protocol::topics;
    let id = *sub.task_id.get_or_insert_with(Uuid::new_v4);
    let token = tokio_util::sync::CancellationToken::new();
    let tracker = tokio_util::task::TaskTracker::new();
    let mut link = ambient_link::start(
        LinkOptions {
            host: conn.mqtt_host.clone(),
            port: conn.mqtt_port,
            failover: Vec::new(),
            // `name:suffix`: the broker binds client ids to accounts (see the coordinator's broker).
            client_id: format!("{}:{}", conn.mqtt_username, id.simple()),
            credentials: Some((conn.mqtt_username.clone(), conn.mqtt_password.clone())),
            clean_session: true,
            keep_alive: Duration::from_secs(10),
            last_will: None,
            subscriptions: vec![topics::submitter_all(&conn.submitter)],
        },
        token.clone(),
        &tracker,
    );
    let answer_topic = topics::submitter_task(&conn.submitter, &id);
    let rejections = topics::submitter_rejections(&conn.submitter);
    let deadline = tokio::time::Instant::now() + timeout;
    let result = loop {
        let msg = match tokio::time::timeout_at(deadline, link.incoming.recv()).await {
            Ok(Some(m)) => m,
            _ => break Err(ClientError::Timeout(id, timeout)),
        };
        match msg {
            Incoming::Connected { .. } => {
                // Subscriptions are queued before this publish on the same connection.
                let payload = serde_json::to_vec(&sub).unwrap_or_default();
                let _ = link
                    .client
                    .publish(
                        topics::submit(&conn.submitter),
                        QoS::AtLeastOnce,
                        false,
                        payload,
                    )
                    .await;
            }
            Incoming::Publish { topic, payload } if topic == answer_topic => {
                if let Ok(info) = serde_json::from_slice::<TaskInfo>(&payload)
                    && info.status.is_terminal()
                {
                    break Ok(info);
                }
            }
            Incoming::Publish { topic, payload } if topic == rejections => {
                if let Ok(body) = serde_json::from_slice::<ApiError>(&payload)
                    && body.task_id.is_none_or(|t| t == id)
                {
                    break Err(ClientError::Api { status: 0, body });
                }
            }
            Incoming::Publish { .. } => {}
        }
    };
    token.cancel();
    tracker.close();
    tracker.wait().await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_skip_absent_values_and_escape_the_rest() {
        assert_eq!(query(&[("after", None), ("limit", None)]), "");
        assert_eq!(
            query(&[
                ("account", Some("node:node-1".into())),
                ("after", None),
                ("limit", Some("10".into())),
            ]),
            "?account=node%3Anode-1&limit=10"
        );
        assert_eq!(
            query(&[("a", Some("x y&z=é".into()))]),
            "?a=x%20y%26z%3D%C3%A9"
        );
    }
}
