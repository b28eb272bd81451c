//! Broker accounts made and removed at run time: a node that joins with a token gets one, a
//! revoked node loses it. Nobody types a broker password.
//!
//! One interface, [`BrokerAccounts`], over each broker the coordinator can drive:
//! - the embedded broker (`ambient demo`, `ambient up`): its in-process account table
//!   ([`crate::broker::Accounts`]);
//! - mosquitto with its dynamic-security plugin (`[enrolment] broker = "mosquitto-dynsec"`):
//!   commands on `$CONTROL/dynamic-security/v1` over the coordinator's own MQTT account, which
//!   `broker-config/dynsec/ambient-dynsec-setup` gives that right. Each node gets a client bound
//!   to its client id and a role of its own with exactly the rights of `broker-config/acl`
//!   (mosquitto 2.0's dynamic-security ACLs have no `%u` patterns, so the role names the node);
//! - a broker whose accounts are made by hand (`ambient-passwd`, the NATS file): joining is then
//!   "not supported", and says how to make the account instead.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ambient_link::{Incoming, LinkOptions, QoS};
use ambient_protocol::topics;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tracing::warn;

use ambient_service::Shutdown;

/// Why an account could not be made or removed.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// This coordinator cannot make broker accounts.
    #[error("not supported: {0}")]
    Unsupported(String),
    /// The broker refused a command.
    #[error("the broker refused {command}: {error}")]
    Refused {
        /// The command.
        command: String,
        /// The broker's words.
        error: String,
    },
    /// The broker did not answer in time (down, or the coordinator's account lacks the right).
    #[error("the broker did not answer the account command within {0:?}")]
    Timeout(Duration),
}

/// The broker accounts this coordinator can make.
#[derive(Clone)]
pub enum BrokerAccounts {
    /// The embedded broker's table.
    #[cfg(feature = "embedded-broker")]
    Embedded(crate::broker::Accounts),
    /// mosquitto's dynamic-security plugin.
    Dynsec(Dynsec),
    /// None: accounts are made by hand.
    Manual,
}

impl BrokerAccounts {
    /// Gives `node` an account with `password` (replacing one it had), with a node's rights.
    pub async fn grant(&self, node: &str, password: &str) -> Result<(), AccountError> {
        match self {
            #[cfg(feature = "embedded-broker")]
            BrokerAccounts::Embedded(a) => {
                a.add(node, password);
                Ok(())
            }
            BrokerAccounts::Dynsec(d) => d.grant(node, password).await,
            BrokerAccounts::Manual => Err(AccountError::Unsupported(
                "this coordinator's broker accounts are made by hand (broker-config/README.md); \
                 run mosquitto with the dynamic-security plugin and set [enrolment] broker = \
                 \"mosquitto-dynsec\" to let nodes join with a token"
                    .into(),
            )),
        }
    }

    /// Removes `node`'s account and disconnects it.
    pub async fn revoke(&self, node: &str) -> Result<(), AccountError> {
        match self {
            #[cfg(feature = "embedded-broker")]
            BrokerAccounts::Embedded(a) => {
                let (a, node) = (a.clone(), node.to_string());
                // The embedded broker's router answers over a blocking channel.
                tokio::task::spawn_blocking(move || a.remove(&node))
                    .await
                    .map_err(|e| AccountError::Unsupported(e.to_string()))
            }
            BrokerAccounts::Dynsec(d) => d.revoke(node).await,
            BrokerAccounts::Manual => Ok(()),
        }
    }
}

/// The topic dynamic-security commands go to, and the one its answers come on.
const CONTROL: &str = "$CONTROL/dynamic-security/v1";
const RESPONSE: &str = "$CONTROL/dynamic-security/v1/response";
/// How long a command waits for its answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// mosquitto's dynamic-security plugin, driven over an MQTT link of the coordinator's account.
#[derive(Clone)]
pub struct Dynsec {
    client: ambient_link::AsyncClient,
    pending: Arc<Mutex<HashMap<String, oneshot::Sender<Vec<Value>>>>>,
}

/// The role that carries `node`'s rights.
fn role(node: &str) -> String {
    format!("ambient-node-{node}")
}

/// A node's rights, as `broker-config/acl` gives them: write its status, health, results and
/// identity; read its tasks, control and reputation; read every node's identity.
fn node_acls(node: &str) -> Vec<Value> {
    let mut acls = Vec::new();
    for topic in [
        topics::node_status(node),
        topics::node_health(node),
        topics::node_results(node),
        topics::node_identity(node),
    ] {
        acls.push(json!({"acltype": "publishClientSend", "topic": topic, "allow": true}));
    }
    for topic in [
        topics::node_tasks(node),
        topics::node_control(node),
        topics::node_reputation(node),
        topics::ALL_NODE_IDENTITY.to_string(),
    ] {
        acls.push(json!({"acltype": "subscribePattern", "topic": topic, "allow": true}));
        acls.push(json!({"acltype": "publishClientReceive", "topic": topic, "allow": true}));
    }
    acls
}

impl Dynsec {
    /// Starts the control link (client id `client_id`) on `shutdown`.
    pub fn start(mut options: LinkOptions, shutdown: &Shutdown) -> Dynsec {
        options.clean_session = true;
        options.subscriptions = vec![RESPONSE.to_string()];
        let link = ambient_link::start(options, shutdown.token().clone(), shutdown.tracker());
        let pending: Arc<Mutex<HashMap<String, oneshot::Sender<Vec<Value>>>>> = Arc::default();
        let answers = pending.clone();
        let mut incoming = link.incoming;
        shutdown.spawn(async move {
            while let Some(msg) = incoming.recv().await {
                let Incoming::Publish { payload, .. } = msg else {
                    continue;
                };
                let Ok(body) = serde_json::from_slice::<Value>(&payload) else {
                    continue;
                };
                let responses = body["responses"].as_array().cloned().unwrap_or_default();
                // Every command of one message carries the message's correlation id.
                let Some(id) = responses
                    .iter()
                    .find_map(|r| r["correlationData"].as_str())
                    .map(str::to_string)
                else {
                    continue;
                };
                let waiter = answers
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&id);
                if let Some(w) = waiter {
                    let _ = w.send(responses);
                }
            }
        });
        Dynsec {
            client: link.client,
            pending,
        }
    }

    /// Sends `commands` in one message and returns the broker's responses, in order.
    async fn run(&self, mut commands: Vec<Value>) -> Result<Vec<Value>, AccountError> {
        let id = uuid::Uuid::new_v4().to_string();
        for c in &mut commands {
            c["correlationData"] = json!(id);
        }
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.clone(), tx);
        let body = serde_json::to_vec(&json!({ "commands": commands })).expect("JSON");
        let sent = self
            .client
            .publish(CONTROL, QoS::AtLeastOnce, false, body)
            .await;
        let answer = match sent {
            Ok(()) => tokio::time::timeout(ANSWER_WITHIN, rx)
                .await
                .ok()
                .and_then(Result::ok),
            Err(_) => None,
        };
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
        answer.ok_or(AccountError::Timeout(ANSWER_WITHIN))
    }

    /// Replaces any account `node` had with a fresh one: its own role, its client id bound.
    async fn grant(&self, node: &str, password: &str) -> Result<(), AccountError> {
        // Clear what a previous enrolment of this node left (errors: there was none).
        self.run(vec![
            json!({"command": "deleteClient", "username": node}),
            json!({"command": "deleteRole", "rolename": role(node)}),
        ])
        .await?;
        let answers = self
            .run(vec![
                json!({"command": "createRole", "rolename": role(node), "acls": node_acls(node)}),
                json!({
                    "command": "createClient",
                    "username": node,
                    "password": password,
                    "clientid": node,
                    "roles": [{"rolename": role(node)}],
                }),
            ])
            .await?;
        refused(&answers)
    }

    /// Deletes `node`'s account (mosquitto disconnects its client) and role. An account that is
    /// not there is gone already: only a broker that does not answer is an error.
    async fn revoke(&self, node: &str) -> Result<(), AccountError> {
        let answers = self
            .run(vec![
                json!({"command": "deleteClient", "username": node}),
                json!({"command": "deleteRole", "rolename": role(node)}),
            ])
            .await?;
        if let Err(e) = refused(&answers) {
            warn!(node, error = %e, "Revoking a node: part of its broker account was not there.");
        }
        Ok(())
    }
}

/// The first error among dynamic-security responses.
fn refused(answers: &[Value]) -> Result<(), AccountError> {
    match answers.iter().find(|a| a.get("error").is_some()) {
        Some(a) => Err(AccountError::Refused {
            command: a["command"].as_str().unwrap_or("?").to_string(),
            error: a["error"].to_string(),
        }),
        None => Ok(()),
    }
}
