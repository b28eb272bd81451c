//! The MQTT side: [`Listener`] turns messages from the broker into [`EngineMsg`]s.
//!
//! The topic names the sender (the broker ACL binds `nodes/{node}/…` and `submit/{submitter}` to
//! the username), so a payload that names another node than its topic is dropped. Events on a
//! node's results topic must also be signed with the key the node published on its identity
//! topic ([`envelope::decode_signed`]): the embedded broker has no ACL, and an event that counts
//! should not rest on one. Malformed, unsigned and wrongly signed messages are counted and
//! dropped (never acknowledged, so a genuine agent re-sends its result); a malformed submission
//! is answered on the submitter's `rejections` topic.

use std::sync::Arc;

use ambient_link::{AsyncClient, Incoming, QoS};
use ambient_protocol::envelope::{self, DecodeError, Message};
use ambient_protocol::identity::{KeyChange, KeyDirectory};
use ambient_protocol::{AgentEvent, ApiError, Health, NodeStatus, topics, topics::Topic};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::config::Limits;
use crate::engine::EngineMsg;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::submission::{self, SubmitError, SubmitFailure};

/// Reads what the broker delivers: node presence, health, results and identities, and
/// submissions.
pub struct Listener {
    pub(crate) engine: mpsc::Sender<EngineMsg>,
    pub(crate) store: Store,
    pub(crate) mqtt: AsyncClient,
    pub(crate) limits: Limits,
    pub(crate) metrics: Arc<Metrics>,
    /// Submitter ids with an API key. Node and submitter ids share the broker's username
    /// namespace, so only these may submit, and none of these may speak as a node.
    pub(crate) submitters: std::collections::HashSet<String>,
    /// Node identity keys, filled from the retained identity topics; every event on a node's
    /// results topic must be signed with its key.
    pub(crate) identities: Arc<KeyDirectory>,
}

impl Listener {
    /// Consumes the link's incoming messages until the link ends.
    pub async fn run(self, mut incoming: mpsc::Receiver<Incoming>) {
        while let Some(msg) = incoming.recv().await {
            if let Incoming::Publish { topic, payload } = msg
                && self.handle(&topic, payload).await.is_err()
            {
                break; // the engine is gone: shutting down
            }
        }
    }

    async fn handle(&self, topic: &str, payload: Vec<u8>) -> Result<(), ()> {
        let Some(parsed) = topics::parse(topic) else {
            return Ok(());
        };
        match parsed {
            Topic::Submit(s) if !self.submitters.contains(s) => {
                let e = SubmitError::UnknownSubmitter(s.to_string());
                self.reject(s, &e, None);
                return Ok(());
            }
            Topic::NodeStatus(n)
            | Topic::NodeHealth(n)
            | Topic::NodeResults(n)
            | Topic::NodeIdentity(n)
                if self.identities.is_revoked(n) =>
            {
                Metrics::inc(&self.metrics.mqtt_rejected);
                debug!(topic, "Dropped a message of a revoked node.");
                return Ok(());
            }
            Topic::NodeStatus(n)
            | Topic::NodeHealth(n)
            | Topic::NodeResults(n)
            | Topic::NodeIdentity(n)
                if self.submitters.contains(n) =>
            {
                Metrics::inc(&self.metrics.mqtt_rejected);
                warn!(
                    topic,
                    submitter = n,
                    "Dropped a node message from a submitter account."
                );
                return Ok(());
            }
            _ => {}
        }
        let msg = match parsed {
            Topic::NodeStatus(node) => {
                if payload.is_empty() {
                    return Ok(()); // a cleared retained message
                }
                let Some(s) = self.decode::<NodeStatus>(topic, &payload) else {
                    return Ok(());
                };
                if s.node_id != node {
                    return self.misaddressed(topic, &s.node_id);
                }
                EngineMsg::Status(node.to_string(), s.state)
            }
            Topic::NodeHealth(node) => {
                let Some(h) = self.decode::<Health>(topic, &payload) else {
                    return Ok(());
                };
                if h.node_id != node {
                    return self.misaddressed(topic, &h.node_id);
                }
                EngineMsg::Health(h)
            }
            Topic::NodeResults(node) => {
                let Some(ev) = self.decode_signed(topic, node, &payload) else {
                    return Ok(());
                };
                EngineMsg::Agent(node.to_string(), ev)
            }
            Topic::Submit(submitter) => {
                self.submit(submitter, payload).await;
                return Ok(());
            }
            Topic::NodeIdentity(node) => {
                self.identity(topic, node, &payload);
                return Ok(());
            }
            Topic::NodeTasks(_) | Topic::NodeControl(_) => return Ok(()),
        };
        self.engine.send(msg).await.map_err(|_| ())
    }

    fn decode<T: Message>(&self, topic: &str, payload: &[u8]) -> Option<T> {
        self.accept(topic, envelope::decode::<T>(payload))
    }

    /// An event `node` signed; anything else is dropped, with a warning when the signature is
    /// missing or not the node's (a forgery, or a genuine event that came before the node's key).
    fn decode_signed(&self, topic: &str, node: &str, payload: &[u8]) -> Option<AgentEvent> {
        let decoded = envelope::decode_signed::<AgentEvent>(payload, node, &self.identities);
        if let Err(e @ (DecodeError::Unsigned | DecodeError::Signature(_))) = &decoded {
            Metrics::inc(&self.metrics.mqtt_rejected);
            warn!(topic, node, error = %e, "Dropped a node event not signed by the node.");
            return None;
        }
        self.accept(topic, decoded)
    }

    /// The message, or `None` once a decoding error is counted and logged.
    fn accept<T>(&self, topic: &str, decoded: Result<T, DecodeError>) -> Option<T> {
        match decoded {
            Ok(msg) => Some(msg),
            Err(DecodeError::Version { seen }) => {
                Metrics::inc(&self.metrics.mqtt_rejected);
                debug!(
                    topic,
                    version = seen,
                    "Dropped message of another protocol version."
                );
                None
            }
            Err(e) => {
                Metrics::inc(&self.metrics.mqtt_rejected);
                debug!(topic, error = %e, "Dropped malformed message.");
                None
            }
        }
    }

    /// A node's identity key (retained; an empty payload clears it).
    fn identity(&self, topic: &str, node: &str, payload: &[u8]) {
        match self.identities.apply_retained(node, payload) {
            Ok(KeyChange::Recorded) => info!(node, "Node identity key recorded."),
            Ok(KeyChange::Replaced { .. }) => warn!(
                node,
                "Node identity key changed (a reinstall, or a stolen account): its old \
                 signatures no longer verify."
            ),
            Ok(KeyChange::Unchanged | KeyChange::Cleared) => {}
            Err(e) => {
                Metrics::inc(&self.metrics.mqtt_rejected);
                warn!(topic, error = %e, "Dropped an unusable node identity.");
            }
        }
    }

    fn misaddressed(&self, topic: &str, claimed: &str) -> Result<(), ()> {
        Metrics::inc(&self.metrics.mqtt_rejected);
        warn!(
            topic,
            claimed, "Dropped a message whose node id does not match its topic."
        );
        Ok(())
    }

    async fn submit(&self, submitter: &str, payload: Vec<u8>) {
        // The id the submitter chose, if the payload names one, so that a rejection of a body
        // that does not check out still says which submission it answers.
        let named = serde_json::from_slice::<serde_json::Value>(&payload)
            .ok()
            .and_then(|v| v.get("task_id")?.as_str()?.parse::<uuid::Uuid>().ok());
        let submitted = submission::submit(
            &self.engine,
            &self.store,
            &self.limits,
            submitter.to_string(),
            payload,
        )
        .await;
        match submitted {
            Ok(_) | Err(SubmitFailure::ShuttingDown) => {}
            Err(SubmitFailure::Invalid(e)) => self.reject(submitter, &e, named),
            Err(SubmitFailure::Refused { error, task_id }) => {
                self.reject(submitter, &error, task_id)
            }
        }
    }

    fn reject(&self, submitter: &str, e: &SubmitError, task_id: Option<uuid::Uuid>) {
        Metrics::inc(&self.metrics.submissions_rejected);
        let body: ApiError = e.to_api_error(task_id);
        let payload = serde_json::to_vec(&body).unwrap_or_default();
        let _ = self.mqtt.try_publish(
            topics::submitter_rejections(submitter),
            QoS::AtLeastOnce,
            false,
            payload,
        );
    }
}
