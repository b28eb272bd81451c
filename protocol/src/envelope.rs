//! The envelope every agent ↔ coordinator MQTT message travels in: `{"v": 1, "body": <message>}`.
//!
//! The version sits once, outside the message, instead of as a field of every message type, so a
//! receiver reads it before it reads the body and refuses a version it does not speak with that
//! number in hand, whatever the body looks like. The messages that travel in it implement
//! [`Message`]; over REST the same types ([`crate::Health`], [`crate::ReputationReport`]) are sent
//! bare, since the API's path (`/api/v1`) carries its version.
//!
//! Messages to and from submitters ([`crate::TaskSubmission`], [`crate::TaskInfo`],
//! [`crate::ApiError`]) are the REST API's bodies carried over MQTT, and travel bare as well.

use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};

use crate::PROTOCOL_VERSION;

/// A message as it crosses the broker: the protocol version beside the message itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<T> {
    /// Protocol version ([`PROTOCOL_VERSION`] when this build wrote it).
    pub v: u32,
    /// The message.
    pub body: T,
}

/// A message type that travels between agents and the coordinator in an [`Envelope`].
///
/// Implemented for the protocol's agent ↔ coordinator messages only, so a submitter-facing body
/// cannot be wrapped by mistake. Every implementor serializes to JSON without error: its map
/// keys are strings.
pub trait Message: Serialize + DeserializeOwned {}

impl Message for crate::NodeStatus {}
impl Message for crate::Health {}
impl Message for crate::Assignment {}
impl Message for crate::AgentEvent {}
impl Message for crate::Control {}
impl Message for crate::NodeIdentity {}
impl Message for crate::ReputationReport {}

/// Why a payload is not a message of this protocol version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The envelope names a version this build does not speak.
    #[error("protocol version {seen}, this build speaks {PROTOCOL_VERSION}")]
    Version {
        /// The version the envelope names.
        seen: u32,
    },
    /// Not JSON, not an envelope, or a body that is not the expected message.
    #[error("malformed message: {0}")]
    Malformed(String),
}

/// `body` in an envelope of this protocol version, as JSON bytes: the payload to publish.
pub fn encode<T: Message>(body: &T) -> Vec<u8> {
    let envelope = Envelope {
        v: PROTOCOL_VERSION,
        body,
    };
    // Cannot fail for a `Message` (string keys only); an empty payload would be dropped by every
    // receiver as malformed.
    serde_json::to_vec(&envelope).unwrap_or_default()
}

/// The message in `payload`, checked to be of this protocol version.
///
/// A payload whose envelope names another version is [`DecodeError::Version`] even when its body
/// would not parse as this version's `T`.
pub fn decode<T: Message>(payload: &[u8]) -> Result<T, DecodeError> {
    /// The envelope with its body skipped: what a message of any version has in common.
    #[derive(Deserialize)]
    struct Header {
        v: u32,
        #[serde(rename = "body")]
        _body: IgnoredAny,
    }
    match serde_json::from_slice::<Envelope<T>>(payload) {
        Ok(e) if e.v == PROTOCOL_VERSION => Ok(e.body),
        Ok(e) => Err(DecodeError::Version { seen: e.v }),
        Err(e) => match serde_json::from_slice::<Header>(payload) {
            Ok(h) if h.v != PROTOCOL_VERSION => Err(DecodeError::Version { seen: h.v }),
            _ => Err(DecodeError::Malformed(e.to_string())),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AgentEvent, NodeState, NodeStatus};
    use serde_json::json;

    #[test]
    fn node_status_golden() {
        let golden = json!({
            "v": 1,
            "body": {"node_id": "node-1", "state": "offline", "agent_version": "0.1.0"}
        });
        let status = NodeStatus {
            node_id: "node-1".into(),
            state: NodeState::Offline,
            agent_version: "0.1.0".into(),
        };
        let bytes = encode(&status);
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&bytes).unwrap(),
            golden
        );
        assert_eq!(decode::<NodeStatus>(&bytes), Ok(status));
    }

    #[test]
    fn another_version_is_refused_with_its_number() {
        // A future version's body need not parse as this version's message.
        let v2 = json!({"v": 2, "body": {"whatever": true}}).to_string();
        assert_eq!(
            decode::<AgentEvent>(v2.as_bytes()),
            Err(DecodeError::Version { seen: 2 })
        );
        // Nor when it does.
        let v0 = json!({"v": 0, "body": {"type": "started", "task_id": "6f1c2a4e-9b7d-4c1e-8f00-0123456789ab", "attempt": 1}});
        assert_eq!(
            decode::<AgentEvent>(v0.to_string().as_bytes()),
            Err(DecodeError::Version { seen: 0 })
        );
    }

    #[test]
    fn malformed_payloads_are_refused() {
        let bare = json!({"node_id": "n", "state": "online", "agent_version": "x"}).to_string();
        let old =
            json!({"v": 1, "node_id": "n", "state": "online", "agent_version": "x"}).to_string();
        let bad_body = json!({"v": 1, "body": {"node_id": "n"}}).to_string();
        for payload in [
            b"".as_slice(),
            b"{".as_slice(),
            bare.as_bytes(),
            old.as_bytes(),
            bad_body.as_bytes(),
        ] {
            assert!(
                matches!(
                    decode::<NodeStatus>(payload),
                    Err(DecodeError::Malformed(_))
                ),
                "{}",
                String::from_utf8_lossy(payload)
            );
        }
    }
}
