//! Node identity: an ed25519 key pair per node. The agent keeps the secret half (OS keyring, or
//! the 0600 fallback file) and publishes the public half, retained, as a [`NodeIdentity`] on
//! `nodes/{node}/identity`.
//!
//! Why a broker topic: the broker ACL lets only the node itself write that topic — not other
//! nodes, and not the coordinator — so a key read from it was put there by the node. Peers that
//! must not trust the coordinator (secure-aggregation clients, which check the signed key
//! roster the coordinator relays) read identities straight from the broker. The coordinator
//! reads them too, to check what nodes sign: every event on their results topic
//! ([`node_event_message`], [`envelope::decode_signed`]) and their HTTP blob downloads
//! ([`blob_request_message`]).
//! The trust anchor is the broker operator who issues passwords and ACLs; the embedded broker
//! has no ACLs, so there it only guards against mistakes, not against a hostile coordinator.
//!
//! Every signature covers a domain-separated message built in this crate or in `ambient-fl`, so
//! a signature made for one purpose is never valid for another.

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};

/// The public half of a node key (re-exported so users need no ed25519 dependency of their own).
pub use ed25519_dalek::VerifyingKey;
use ed25519_dalek::{Signature, Signer as _, SigningKey};
use serde::{Deserialize, Serialize};

use crate::envelope::{self, DecodeError};

/// What a node publishes, retained, on `nodes/{node}/identity` (in an
/// [`envelope::Envelope`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeIdentity {
    /// The node (must match the topic).
    pub node: String,
    /// The ed25519 public key, hex.
    pub ed25519: String,
}

/// A bad key, signature or identity message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// Not 32 bytes of hex, or not a valid curve point.
    #[error("invalid ed25519 public key")]
    BadKey,
    /// Not 64 bytes of hex.
    #[error("malformed signature")]
    Malformed,
    /// The signature does not verify under the key.
    #[error("signature does not verify")]
    BadSignature,
    /// An identity message that is not an envelope of this protocol version holding a
    /// [`NodeIdentity`].
    #[error("unusable identity message: {0}")]
    BadMessage(#[from] DecodeError),
    /// An identity message that names another node than its topic.
    #[error("it names node {claimed} on node {topic}'s topic")]
    WrongNode {
        /// The node the message names.
        claimed: String,
        /// The node of the topic it came on.
        topic: String,
    },
}

impl NodeIdentity {
    /// The key a message on `nodes/{node}/identity` carries, checked: an envelope of this
    /// protocol version, naming the topic's node, with a valid key.
    pub fn key_for(node: &str, payload: &[u8]) -> Result<VerifyingKey, IdentityError> {
        let id: NodeIdentity = envelope::decode(payload)?;
        if id.node != node {
            return Err(IdentityError::WrongNode {
                claimed: id.node,
                topic: node.to_string(),
            });
        }
        id.key()
    }

    /// The verifying key it carries.
    pub fn key(&self) -> Result<VerifyingKey, IdentityError> {
        let bytes: [u8; 32] = hex::decode(&self.ed25519)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or(IdentityError::BadKey)?;
        VerifyingKey::from_bytes(&bytes).map_err(|_| IdentityError::BadKey)
    }
}

/// Why a node's signature was not accepted by a [`KeyDirectory`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityCheck {
    /// The node never published an identity key.
    #[error("node {0} has published no identity key")]
    Unknown(String),
    /// The signature is malformed or does not verify.
    #[error("node {node}: {error}")]
    Bad {
        /// The node.
        node: String,
        /// Why.
        error: IdentityError,
    },
}

/// What a retained identity message changed in a [`KeyDirectory`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyChange {
    /// The node had no key; now it has one.
    Recorded,
    /// The node published the key it had already.
    Unchanged,
    /// The node's key changed (a reinstall, or a stolen account): signatures made with the old
    /// key no longer verify.
    Replaced {
        /// The key it had before.
        old: VerifyingKey,
    },
    /// The retained message was cleared, and with it the node's key (if it had one).
    Cleared,
}

/// Node identity keys by node, as the nodes published them on their identity topics.
///
/// The coordinator keeps one to check what nodes sign (results-topic events, blob requests,
/// secure-aggregation keys);
/// an agent that joins federated jobs keeps one to check its peers' signed keys. Both fill it
/// with [`KeyDirectory::apply_retained`], so they read the identity topic the same way. Shared
/// behind an `Arc`; the lock is never held across an `.await`.
#[derive(Debug, Default)]
pub struct KeyDirectory(RwLock<HashMap<String, VerifyingKey>>);

impl KeyDirectory {
    /// Applies a message from `node`'s retained identity topic: an empty payload (the retained
    /// message was cleared) forgets the node's key; anything else must be a valid
    /// [`NodeIdentity`] for `node` ([`NodeIdentity::key_for`]) and records its key. An unusable
    /// message changes nothing.
    pub fn apply_retained(&self, node: &str, payload: &[u8]) -> Result<KeyChange, IdentityError> {
        if payload.is_empty() {
            self.remove(node);
            return Ok(KeyChange::Cleared);
        }
        let key = NodeIdentity::key_for(node, payload)?;
        Ok(match self.set(node, key) {
            None => KeyChange::Recorded,
            Some(old) if old != key => KeyChange::Replaced { old },
            Some(_) => KeyChange::Unchanged,
        })
    }

    /// Records `node`'s key; returns the key it had before, if any.
    pub fn set(&self, node: &str, key: VerifyingKey) -> Option<VerifyingKey> {
        self.0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(node.to_string(), key)
    }

    /// Forgets `node`'s key; returns it, if it had one.
    pub fn remove(&self, node: &str) -> Option<VerifyingKey> {
        self.0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(node)
    }

    /// `node`'s key.
    pub fn get(&self, node: &str) -> Option<VerifyingKey> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(node)
            .copied()
    }

    /// `node`'s key, hex, as it travels in [`NodeIdentity::ed25519`].
    pub fn hex(&self, node: &str) -> Option<String> {
        self.get(node).map(|k| hex::encode(k.to_bytes()))
    }

    /// Checks `node`'s signature of `msg` against the key it published.
    pub fn verify(&self, node: &str, msg: &[u8], sig: &[u8]) -> Result<(), IdentityCheck> {
        let key = self
            .get(node)
            .ok_or_else(|| IdentityCheck::Unknown(node.to_string()))?;
        verify(&key, msg, sig).map_err(|error| IdentityCheck::Bad {
            node: node.to_string(),
            error,
        })
    }
}

/// A node's signing key.
pub struct NodeKey(SigningKey);

impl NodeKey {
    /// A fresh key from the OS random source.
    pub fn generate() -> NodeKey {
        let mut seed = [0u8; 32];
        rand::fill(&mut seed);
        NodeKey(SigningKey::from_bytes(&seed))
    }

    /// The key from its stored form ([`NodeKey::to_hex`]).
    pub fn from_hex(s: &str) -> Result<NodeKey, IdentityError> {
        let seed: [u8; 32] = hex::decode(s.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or(IdentityError::BadKey)?;
        Ok(NodeKey(SigningKey::from_bytes(&seed)))
    }

    /// The secret seed, hex, for the keyring or the 0600 file.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0.to_bytes())
    }

    /// The public half.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.0.verifying_key()
    }

    /// What `node` publishes on its identity topic (sent with [`envelope::encode`]).
    pub fn identity(&self, node: &str) -> NodeIdentity {
        NodeIdentity {
            node: node.to_string(),
            ed25519: hex::encode(self.0.verifying_key().to_bytes()),
        }
    }

    /// Signs `msg`; the signature as bytes.
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.0.sign(msg).to_bytes()
    }

    /// The signing key itself, for crates that sign their own messages (`ambient-fl`).
    pub fn signing_key(&self) -> &SigningKey {
        &self.0
    }
}

/// Checks a signature (strict verification: no malleable or small-order forms).
pub fn verify(key: &VerifyingKey, msg: &[u8], sig: &[u8]) -> Result<(), IdentityError> {
    let sig: [u8; 64] = sig.try_into().map_err(|_| IdentityError::Malformed)?;
    key.verify_strict(msg, &Signature::from_bytes(&sig))
        .map_err(|_| IdentityError::BadSignature)
}

/// HTTP header naming the node that signed a request.
pub const HEADER_NODE: &str = "x-ambient-node";
/// HTTP header with the request's Unix time in seconds.
pub const HEADER_TIME: &str = "x-ambient-time";
/// HTTP header with the hex signature of [`blob_request_message`].
pub const HEADER_SIGNATURE: &str = "x-ambient-signature";
/// How far a signed request's time may be from the server's clock, in seconds.
pub const MAX_CLOCK_SKEW_SECS: i64 = 300;

/// What a node signs to say `body` on its results topic: the exact bytes of the envelope's
/// `body` JSON as sent, after the node's id (see [`envelope::encode_signed`]).
///
/// Node ids hold no newline ([`crate::valid_id`]), so the node and the body cannot be
/// confused with each other.
pub fn node_event_message(node: &str, body: &[u8]) -> Vec<u8> {
    let mut msg = format!("ambient/v1 node-event\n{node}\n").into_bytes();
    msg.extend_from_slice(body);
    msg
}

/// HTTP header with the request's nonce ([`nonce`]): the coordinator accepts each signed request
/// once, so a request someone captured cannot be replayed within the clock-skew window.
pub const HEADER_NONCE: &str = "x-ambient-nonce";

/// A fresh nonce for a signed request: 32 hex digits from the OS random source.
pub fn nonce() -> String {
    let mut bytes = [0u8; 16];
    rand::fill(&mut bytes);
    hex::encode(bytes)
}

/// True for a nonce as [`nonce`] makes it: 32 lower-case hex digits.
pub fn is_nonce(s: &str) -> bool {
    crate::is_lower_hex(s, 32)
}

/// What a node signs to download blob `sha256` over HTTP at `unix_time`, once (`nonce`).
pub fn blob_request_message(node: &str, sha256: &str, unix_time: i64, nonce: &str) -> Vec<u8> {
    format!("ambient/v1 blob-get\n{node}\n{sha256}\n{unix_time}\n{nonce}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_round_trip() {
        let k = NodeKey::generate();
        let id = k.identity("n1");
        let back: NodeIdentity =
            serde_json::from_str(&serde_json::to_string(&id).unwrap()).unwrap();
        let pk = back.key().unwrap();
        let msg = blob_request_message("n1", "ab", 7, "00");
        let sig = k.sign(&msg);
        assert_eq!(verify(&pk, &msg, &sig), Ok(()));
        // Another message, another key, a truncated signature: all refused.
        assert_eq!(
            verify(&pk, &blob_request_message("n2", "ab", 7, "00"), &sig),
            Err(IdentityError::BadSignature)
        );
        let other = NodeKey::generate().verifying_key();
        assert_eq!(verify(&other, &msg, &sig), Err(IdentityError::BadSignature));
        assert_eq!(verify(&pk, &msg, &sig[..63]), Err(IdentityError::Malformed));
        // The stored form gives back the same key.
        let again = NodeKey::from_hex(&k.to_hex()).unwrap();
        assert_eq!(again.verifying_key(), k.verifying_key());
    }

    #[test]
    fn bad_keys_are_refused() {
        let k = NodeKey::generate();
        let good = envelope::encode(&k.identity("n1"));
        assert_eq!(NodeIdentity::key_for("n1", &good), Ok(k.verifying_key()));
        assert_eq!(
            NodeIdentity::key_for("n2", &good),
            Err(IdentityError::WrongNode {
                claimed: "n1".into(),
                topic: "n2".into()
            })
        );
        assert!(matches!(
            NodeIdentity::key_for("n1", b"{"),
            Err(IdentityError::BadMessage(DecodeError::Malformed(_)))
        ));
        // The message without its envelope, as a version-less sender would write it.
        let bare = serde_json::to_vec(&k.identity("n1")).unwrap();
        assert!(matches!(
            NodeIdentity::key_for("n1", &bare),
            Err(IdentityError::BadMessage(DecodeError::Malformed(_)))
        ));
        let mut id = k.identity("n1");
        id.ed25519 = "zz".into();
        assert_eq!(id.key(), Err(IdentityError::BadKey));
        assert!(NodeKey::from_hex("1234").is_err());
    }

    #[test]
    fn identity_golden() {
        let key = NodeKey::from_hex(&"07".repeat(32)).unwrap();
        let wire: serde_json::Value =
            serde_json::from_slice(&envelope::encode(&key.identity("node-1"))).unwrap();
        assert_eq!(
            wire,
            serde_json::json!({
                "v": 1,
                "body": {
                    "node": "node-1",
                    "ed25519": "ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c"
                }
            })
        );
    }

    #[test]
    fn the_directory_follows_the_retained_topic() {
        let dir = KeyDirectory::default();
        let (k1, k2) = (NodeKey::generate(), NodeKey::generate());
        let msg = blob_request_message("n1", "ab", 1, "00");
        let sig = k1.sign(&msg);
        assert_eq!(
            dir.verify("n1", &msg, &sig),
            Err(IdentityCheck::Unknown("n1".into()))
        );
        let publish = |k: &NodeKey| envelope::encode(&k.identity("n1"));
        assert_eq!(
            dir.apply_retained("n1", &publish(&k1)),
            Ok(KeyChange::Recorded)
        );
        assert_eq!(
            dir.apply_retained("n1", &publish(&k1)),
            Ok(KeyChange::Unchanged)
        );
        assert_eq!(dir.verify("n1", &msg, &sig), Ok(()));
        assert_eq!(dir.hex("n1"), Some(k1.identity("n1").ed25519));
        // Unusable messages change nothing: another node's, or garbage.
        assert!(dir.apply_retained("n2", &publish(&k2)).is_err());
        assert!(dir.apply_retained("n1", b"{").is_err());
        assert_eq!(dir.get("n1"), Some(k1.verifying_key()));
        assert_eq!(dir.get("n2"), None);
        // A key swap (an operator re-enrolled the node) invalidates the old signatures.
        assert_eq!(
            dir.apply_retained("n1", &publish(&k2)),
            Ok(KeyChange::Replaced {
                old: k1.verifying_key()
            })
        );
        assert!(matches!(
            dir.verify("n1", &msg, &sig),
            Err(IdentityCheck::Bad {
                error: IdentityError::BadSignature,
                ..
            })
        ));
        // A cleared retained message forgets the key.
        assert_eq!(dir.apply_retained("n1", b""), Ok(KeyChange::Cleared));
        assert!(dir.hex("n1").is_none());
    }
}
