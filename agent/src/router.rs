//! MQTT both ways: [`Node::route`] takes every message the link delivers and hands it to the
//! part that owns it; [`Outbox`] publishes what this node says (events on its results topic,
//! signed with its identity key; status, identity, health).
//!
//! Inbound topics: `nodes/{node}/tasks` (assignments, to [`crate::tasks`]), `nodes/{node}/control`
//! (acknowledgements and cancels to [`crate::tasks`], federated-learning messages to the job's
//! client in [`crate::exec::fl`]), `nodes/{node}/reputation`, and, on a node that offers data
//! sets, every node's identity topic (its peers' keys).

use std::sync::Arc;
use std::time::Duration;

use ambient_link::{AsyncClient, Incoming, QoS};
use ambient_protocol::envelope::{self, DecodeError};
use ambient_protocol::{
    AgentEvent, Assignment, Control, Health, NodeKey, NodeState, NodeStatus, ReputationReport,
    topics,
};
use tracing::warn;
use uuid::Uuid;

use crate::lock;
use crate::state::Node;

/// The retained status message of `node` in `state`.
pub(crate) fn status_payload(node_id: &str, state: NodeState) -> Vec<u8> {
    envelope::encode(&NodeStatus {
        node_id: node_id.to_string(),
        state,
        agent_version: env!("CARGO_PKG_VERSION").into(),
    })
}

/// Publishes what this node says. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Outbox {
    client: AsyncClient,
    node_id: Arc<str>,
    /// Signs every event on the results topic: the coordinator counts no unsigned event.
    key: Arc<NodeKey>,
}

impl Outbox {
    /// Publishes through `client` as `node_id`, signing events with `key`.
    pub(crate) fn new(client: AsyncClient, node_id: &str, key: Arc<NodeKey>) -> Outbox {
        Outbox {
            client,
            node_id: node_id.into(),
            key,
        }
    }

    /// An event on the results topic (QoS 1), signed. A failure is only logged: results are
    /// re-sent from the journal until the coordinator acknowledges them (and so is a result the
    /// coordinator dropped because it did not know this node's key yet).
    pub(crate) async fn event(&self, ev: &AgentEvent) {
        let payload = envelope::encode_signed(ev, &self.node_id, &self.key);
        let topic = topics::node_results(&self.node_id);
        let sent = tokio::time::timeout(
            Duration::from_secs(5),
            self.client.publish(topic, QoS::AtLeastOnce, false, payload),
        )
        .await;
        if !matches!(sent, Ok(Ok(()))) {
            warn!("Could not queue a result message; it will be re-sent.");
        }
    }

    /// At every connect: the identity key's public half and `online`, both retained.
    fn announce(&self, identity: &NodeKey) {
        let node = &*self.node_id;
        let identity = envelope::encode(&identity.identity(node));
        if let Err(e) = self.client.try_publish(
            topics::node_identity(node),
            QoS::AtLeastOnce,
            true,
            identity,
        ) {
            warn!(error = %e, "Could not publish this node's identity key.");
        }
        let online = status_payload(node, NodeState::Online);
        let _ = self
            .client
            .try_publish(topics::node_status(node), QoS::AtLeastOnce, true, online);
    }

    /// A health report (QoS 0: the next one replaces it).
    pub(crate) fn health(&self, health: &Health) {
        let payload = envelope::encode(health);
        let _ = self.client.try_publish(
            topics::node_health(&self.node_id),
            QoS::AtMostOnce,
            false,
            payload,
        );
    }

    /// A clean goodbye: `offline` (retained), then a disconnect, within two seconds.
    pub(crate) async fn goodbye(&self) {
        let offline = status_payload(&self.node_id, NodeState::Offline);
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            let _ = self
                .client
                .publish(
                    topics::node_status(&self.node_id),
                    QoS::AtLeastOnce,
                    true,
                    offline,
                )
                .await;
            let _ = self.client.disconnect().await;
            // Give the event loop a moment to flush the two packets.
            tokio::time::sleep(Duration::from_millis(200)).await;
        })
        .await;
    }

    /// Where a federated client's answers go: `Fl` events on the results topic, signed.
    #[cfg(feature = "fl")]
    fn fl_reply(&self) -> crate::exec::fl::Reply {
        let (client, topic) = (self.client.clone(), topics::node_results(&self.node_id));
        let (node, key) = (self.node_id.clone(), self.key.clone());
        Arc::new(move |task_id, answer| {
            let ev = AgentEvent::Fl {
                task_id,
                msg: serde_json::to_value(answer).unwrap_or_default(),
            };
            let payload = envelope::encode_signed(&ev, &node, &key);
            if client
                .try_publish(topic.clone(), QoS::AtLeastOnce, false, payload)
                .is_err()
            {
                warn!(task_id = %task_id, "Could not queue a federated message.");
            }
        })
    }
}

impl Node {
    /// Routes every message the link delivers until it stops.
    pub(crate) async fn route(
        self: Arc<Self>,
        mut incoming: tokio::sync::mpsc::Receiver<Incoming>,
    ) {
        let tasks_topic = topics::node_tasks(&self.cfg.node_id);
        let control_topic = topics::node_control(&self.cfg.node_id);
        let reputation_topic = topics::node_reputation(&self.cfg.node_id);
        while let Some(msg) = incoming.recv().await {
            match msg {
                Incoming::Connected { .. } => {
                    self.outbox.announce(&self.identity);
                    self.tasks.resend_pending().await;
                    self.publish_health(false).await;
                }
                Incoming::Publish { topic, payload } if topic == tasks_topic => {
                    match envelope::decode::<Assignment>(&payload) {
                        Ok(a) => self.tasks.on_assignment(a, &self.contribution).await,
                        Err(DecodeError::Version { seen }) => warn!(
                            version = seen,
                            "Ignored an assignment of another protocol version."
                        ),
                        Err(e) => warn!(error = %e, "Ignored a malformed assignment."),
                    }
                }
                Incoming::Publish { topic, payload } if topic == reputation_topic => {
                    match envelope::decode::<ReputationReport>(&payload) {
                        Ok(r) if r.node_id == self.cfg.node_id => *lock(&self.reputation) = Some(r),
                        Ok(_) => warn!("Ignored a reputation report for another node."),
                        Err(e) => warn!(error = %e, "Ignored a malformed reputation report."),
                    }
                }
                Incoming::Publish { topic, payload } if topic == control_topic => {
                    match envelope::decode::<Control>(&payload) {
                        Ok(c) => self.on_control(c).await,
                        Err(e) => warn!(error = %e, "Ignored a malformed control message."),
                    }
                }
                Incoming::Publish { topic, payload } => self.on_identity(&topic, &payload),
            }
        }
    }

    async fn on_control(&self, c: Control) {
        match c {
            Control::ResultAck {
                task_id, attempt, ..
            } => self.tasks.acknowledged(task_id, attempt).await,
            Control::Cancel {
                task_id,
                attempt,
                reason,
                ..
            } => self.tasks.cancel(task_id, attempt, &reason).await,
            Control::Fl {
                task_id,
                msg,
                weights_blob,
                ..
            } => self.relay_fl(task_id, msg, weights_blob),
        }
    }

    /// A peer's identity key (retained on its identity topic; an empty payload clears it).
    fn on_identity(&self, topic: &str, payload: &[u8]) {
        let Some(topics::Topic::NodeIdentity(node)) = topics::parse(topic) else {
            return;
        };
        if let Err(e) = self.peers.apply_retained(node, payload) {
            warn!(node, error = %e, "Ignored an unusable identity message.");
        }
    }

    /// A federated-learning message: to the job's client, whose answers go back on the results
    /// topic.
    #[cfg(feature = "fl")]
    fn relay_fl(&self, task_id: Uuid, msg: serde_json::Value, weights_blob: Option<String>) {
        let msg = match serde_json::from_value::<ambient_fl::wire::ToClient>(msg) {
            Ok(m) => m,
            Err(e) => {
                warn!(task_id = %task_id, error = %e, "Ignored a malformed federated message.");
                return;
            }
        };
        let reply = self.outbox.fl_reply();
        // A paused node leaves the job (the coordinator drops it and the others go on without it).
        if let Some(round) = msg.round()
            && !self.contribution.contributing()
        {
            let end = ambient_fl::wire::ToClient::End {
                reason: "paused".into(),
            };
            self.fl
                .deliver(task_id, end, None, &self.shutdown, reply.clone());
            reply(
                task_id,
                ambient_fl::wire::ToServer::Failed {
                    round,
                    reason: self.contribution.paused_reason(),
                },
            );
            return;
        }
        self.fl
            .deliver(task_id, msg, weights_blob, &self.shutdown, reply);
    }

    #[cfg(not(feature = "fl"))]
    fn relay_fl(&self, task_id: Uuid, _msg: serde_json::Value, _blob: Option<String>) {
        warn!(task_id = %task_id, "Federated message ignored: this agent is built without the fl feature.");
    }
}
