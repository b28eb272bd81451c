//! The envelope every agent ↔ coordinator MQTT message travels in: `{"v": 1, "body": <message>}`.
//!
//! The version sits once, outside the message, instead of as a field of every message type, so a
//! receiver reads it before it reads the body and refuses a version it does not speak with that
//! number in hand, whatever the body looks like. The messages that travel in it implement
//! [`Message`]; over REST the same types ([`crate::Health`], [`crate::ReputationReport`]) are sent
//! bare, since the API's path (`/api/v1`) carries its version.
//!
//! What a node says on its results topic (every [`crate::AgentEvent`]) is also signed with its
//! identity key: `{"v": 1, "body": <message>, "sig": "<hex ed25519>"}`, written by
//! [`encode_signed`] and checked by [`decode_signed`]. The signature covers
//! [`identity::node_event_message`]: the node's id and the exact bytes of `body` as they crossed
//! the broker, so the receiver checks the bytes it got and no JSON canonical form is needed. A
//! receiver that only reads ([`decode`]) ignores `sig`.
//!
//! Messages to and from submitters ([`crate::TaskSubmission`], [`crate::TaskInfo`],
//! [`crate::ApiError`]) are the REST API's bodies carried over MQTT, and travel bare as well.

use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::PROTOCOL_VERSION;
use crate::identity::{self, IdentityCheck, KeyDirectory, NodeKey};

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
    /// A message that must be signed ([`decode_signed`]) carries no `sig`.
    #[error("unsigned message: a node's events must carry its signature")]
    Unsigned,
    /// The signature is not the sending node's: the node published no identity key, or the
    /// signature is malformed or does not verify under its key. Boxed, since an
    /// [`IdentityCheck`] can itself hold a `DecodeError`.
    #[error("signature refused: {0}")]
    Signature(Box<IdentityCheck>),
}

/// The envelope as [`encode_signed`] writes it and [`decode_signed`] reads it: the body as the
/// raw JSON it travels as, so the signature is made and checked over the same bytes.
#[derive(Serialize, Deserialize)]
struct SignedEnvelope<'a> {
    v: u32,
    #[serde(borrow)]
    body: &'a RawValue,
    /// Absent only in an unsigned message, which [`decode_signed`] refuses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sig: Option<String>,
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

/// `body`, said by `node`, in an envelope of this protocol version signed with `node`'s key: the
/// payload to publish on `node`'s results topic.
///
/// The signature covers [`identity::node_event_message`] of the body's JSON bytes exactly as
/// they appear in the payload.
pub fn encode_signed<T: Message>(body: &T, node: &str, key: &NodeKey) -> Vec<u8> {
    // Cannot fail for a `Message` (string keys only), as in `encode`.
    let json = serde_json::to_string(body).unwrap_or_default();
    let Ok(raw) = RawValue::from_string(json) else {
        return Vec::new(); // unreachable: serde_json wrote valid JSON
    };
    let sig = key.sign(&identity::node_event_message(node, raw.get().as_bytes()));
    let envelope = SignedEnvelope {
        v: PROTOCOL_VERSION,
        body: &raw,
        sig: Some(hex::encode(sig)),
    };
    serde_json::to_vec(&envelope).unwrap_or_default()
}

/// The message in `payload`, checked to be of this protocol version.
///
/// A payload whose envelope names another version is [`DecodeError::Version`] even when its body
/// would not parse as this version's `T`. A signature, if there is one, is not checked: use
/// [`decode_signed`] where it must be.
pub fn decode<T: Message>(payload: &[u8]) -> Result<T, DecodeError> {
    match serde_json::from_slice::<Envelope<T>>(payload) {
        Ok(e) if e.v == PROTOCOL_VERSION => Ok(e.body),
        Ok(e) => Err(DecodeError::Version { seen: e.v }),
        Err(e) => Err(version_or_malformed(payload, e)),
    }
}

/// The message `node` said in `payload`, checked to be of this protocol version and signed by
/// the key `node` published (as `keys` holds it).
///
/// The signature is checked over the raw bytes of `body` as received, before the body is read
/// as a `T`. Another version is [`DecodeError::Version`], as in [`decode`]; a payload with no
/// `sig` is [`DecodeError::Unsigned`]; a signature that is not `node`'s (no key known, not hex,
/// or not verifying) is [`DecodeError::Signature`].
pub fn decode_signed<T: Message>(
    payload: &[u8],
    node: &str,
    keys: &KeyDirectory,
) -> Result<T, DecodeError> {
    let envelope = serde_json::from_slice::<SignedEnvelope>(payload)
        .map_err(|e| version_or_malformed(payload, e))?;
    if envelope.v != PROTOCOL_VERSION {
        return Err(DecodeError::Version { seen: envelope.v });
    }
    let sig = envelope.sig.ok_or(DecodeError::Unsigned)?;
    // A signature that is not hex is checked as no bytes, which `verify` calls malformed once it
    // has found the node's key (and unknown before).
    let sig = hex::decode(sig).unwrap_or_default();
    let body = envelope.body.get();
    keys.verify(
        node,
        &identity::node_event_message(node, body.as_bytes()),
        &sig,
    )
    .map_err(|e| DecodeError::Signature(Box::new(e)))?;
    serde_json::from_str(body).map_err(|e| DecodeError::Malformed(e.to_string()))
}

/// Why `payload` did not parse as an envelope: another version if it names one (whatever its
/// body), else malformed with `error`.
fn version_or_malformed(payload: &[u8], error: serde_json::Error) -> DecodeError {
    /// The envelope with its body skipped: what a message of any version has in common.
    #[derive(Deserialize)]
    struct Header {
        v: u32,
        #[serde(rename = "body")]
        _body: IgnoredAny,
    }
    match serde_json::from_slice::<Header>(payload) {
        Ok(h) if h.v != PROTOCOL_VERSION => DecodeError::Version { seen: h.v },
        _ => DecodeError::Malformed(error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::IdentityError;
    use crate::testkit::finished_success;
    use crate::{AgentEvent, NodeState, NodeStatus};
    use serde_json::json;
    use uuid::Uuid;

    /// A directory that knows `key` as `node`'s.
    fn directory(node: &str, key: &NodeKey) -> KeyDirectory {
        let keys = KeyDirectory::default();
        keys.set(node, key.verifying_key());
        keys
    }

    fn started() -> AgentEvent {
        AgentEvent::Started {
            task_id: "6f1c2a4e-9b7d-4c1e-8f00-0123456789ab".parse().unwrap(),
            attempt: 1,
        }
    }

    #[test]
    fn signed_round_trip() {
        let key = NodeKey::generate();
        let keys = directory("node-1", &key);
        let ev = finished_success(Uuid::new_v4(), 2, json!({"sum": 5}));
        let bytes = encode_signed(&ev, "node-1", &key);
        assert_eq!(
            decode_signed::<AgentEvent>(&bytes, "node-1", &keys),
            Ok(ev.clone())
        );
        // A reader that does not check signatures still reads the message.
        assert_eq!(decode::<AgentEvent>(&bytes), Ok(ev));
    }

    #[test]
    fn signed_golden() {
        // The signature was checked against another ed25519 implementation (Python
        // `cryptography`) signing the same message with the same seed.
        let key = NodeKey::from_hex(&"07".repeat(32)).unwrap();
        let bytes = encode_signed(&started(), "node-1", &key);
        let golden = concat!(
            r#"{"v":1,"body":{"type":"started","task_id":"6f1c2a4e-9b7d-4c1e-8f00-0123456789ab","attempt":1},"#,
            r#""sig":"84e76fb5f872d4ef6527ab0970a602fe86dd6965828986eebaa5badbfff16fce"#,
            r#"516b3b1af6ca50353d7af0e34c8410c866f06facff59a8408d7880857bfd1f08"}"#
        );
        assert_eq!(String::from_utf8(bytes).unwrap(), golden);
        // The signature covers the body's bytes as sent, after the node's id.
        let body =
            br#"{"type":"started","task_id":"6f1c2a4e-9b7d-4c1e-8f00-0123456789ab","attempt":1}"#;
        assert_eq!(
            identity::node_event_message("node-1", body),
            [b"ambient/v1 node-event\nnode-1\n".as_slice(), body].concat()
        );
        assert_eq!(
            decode_signed::<AgentEvent>(golden.as_bytes(), "node-1", &directory("node-1", &key)),
            Ok(started())
        );
    }

    #[test]
    fn the_signed_bytes_are_checked_as_received() {
        // Another serialization of the same body (spacing, key order) verifies when it is what
        // the node signed: nothing is re-serialized before the check.
        let key = NodeKey::generate();
        let body = r#"{ "attempt": 1, "task_id": "6f1c2a4e-9b7d-4c1e-8f00-0123456789ab", "type": "started" }"#;
        let sig = hex::encode(key.sign(&identity::node_event_message("n", body.as_bytes())));
        let payload = format!(r#"{{"sig": "{sig}", "body": {body}, "v": 1}}"#);
        assert_eq!(
            decode_signed::<AgentEvent>(payload.as_bytes(), "n", &directory("n", &key)),
            Ok(started())
        );
    }

    #[test]
    fn forged_and_unsigned_events_are_refused() {
        let key = NodeKey::generate();
        let keys = directory("node-1", &key);
        let ev = finished_success(Uuid::new_v4(), 1, json!({"sum": 5}));
        let signed = encode_signed(&ev, "node-1", &key);
        let bad = |node: &str, error: IdentityError| {
            Err(DecodeError::Signature(Box::new(IdentityCheck::Bad {
                node: node.into(),
                error,
            })))
        };

        // A tampered body: the same length, one digit changed.
        let text = String::from_utf8(signed.clone()).unwrap();
        let tampered = text.replace(r#"{"sum":5}"#, r#"{"sum":6}"#);
        assert_ne!(tampered, text);
        assert_eq!(
            decode_signed::<AgentEvent>(tampered.as_bytes(), "node-1", &keys),
            bad("node-1", IdentityError::BadSignature)
        );
        // Signed by node-1, replayed as node-2's (which has the same key, so only the node id
        // in the signed message tells them apart).
        keys.set("node-2", key.verifying_key());
        assert_eq!(
            decode_signed::<AgentEvent>(&signed, "node-2", &keys),
            bad("node-2", IdentityError::BadSignature)
        );
        // Signed with another key than the one node-1 published.
        let other = encode_signed(&ev, "node-1", &NodeKey::generate());
        assert_eq!(
            decode_signed::<AgentEvent>(&other, "node-1", &keys),
            bad("node-1", IdentityError::BadSignature)
        );
        // A node that published no key.
        assert_eq!(
            decode_signed::<AgentEvent>(&signed, "node-1", &KeyDirectory::default()),
            Err(DecodeError::Signature(Box::new(IdentityCheck::Unknown(
                "node-1".into()
            ))))
        );
        // No signature, a null one, a signature that is not hex or too short.
        assert_eq!(
            decode_signed::<AgentEvent>(&encode(&ev), "node-1", &keys),
            Err(DecodeError::Unsigned)
        );
        let mut wire: serde_json::Value = serde_json::from_slice(&signed).unwrap();
        wire["sig"] = serde_json::Value::Null;
        assert_eq!(
            decode_signed::<AgentEvent>(wire.to_string().as_bytes(), "node-1", &keys),
            Err(DecodeError::Unsigned)
        );
        for sig in ["not hex", "abcd"] {
            wire["sig"] = sig.into();
            assert_eq!(
                decode_signed::<AgentEvent>(wire.to_string().as_bytes(), "node-1", &keys),
                bad("node-1", IdentityError::Malformed)
            );
        }
    }

    #[test]
    fn signed_decoding_refuses_other_versions_and_malformed_payloads() {
        let key = NodeKey::generate();
        let keys = directory("n", &key);
        for v2 in [
            json!({"v": 2, "body": {"whatever": true}, "sig": "00"}),
            json!({"v": 2, "body": {"whatever": true}}),
        ] {
            let r = decode_signed::<AgentEvent>(v2.to_string().as_bytes(), "n", &keys);
            assert_eq!(r, Err(DecodeError::Version { seen: 2 }), "{v2}");
        }
        for payload in [b"".as_slice(), b"{".as_slice(), br#"{"v":1}"#.as_slice()] {
            assert!(matches!(
                decode_signed::<AgentEvent>(payload, "n", &keys),
                Err(DecodeError::Malformed(_))
            ));
        }
        // Correctly signed, but not an event.
        let status = NodeStatus {
            node_id: "n".into(),
            state: NodeState::Online,
            agent_version: "x".into(),
        };
        assert!(matches!(
            decode_signed::<AgentEvent>(&encode_signed(&status, "n", &key), "n", &keys),
            Err(DecodeError::Malformed(_))
        ));
    }

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
