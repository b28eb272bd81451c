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

/// Why a retained identity message was not taken for an enrolled or revoked node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PinError {
    /// The message itself is unusable.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The node enrolled with another key; only that one counts.
    #[error("node {0} enrolled with another key")]
    NotEnrolledKey(String),
    /// The node was revoked: no key of it counts any more.
    #[error("node {0} is revoked")]
    Revoked(String),
}

/// Node identity keys by node, as the nodes published them on their identity topics.
///
/// The coordinator keeps one to check what nodes sign (results-topic events, blob requests,
/// secure-aggregation keys);
/// an agent that joins federated jobs keeps one to check its peers' signed keys. Both fill it
/// with [`KeyDirectory::apply_retained`], so they read the identity topic the same way. Shared
/// behind an `Arc`; the lock is never held across an `.await`.
///
/// A node that enrolled with a token ([`crate::join`]) has its key *pinned*: the identity topic
/// can repeat it but not replace or clear it. A revoked node has no key at all, and nothing it
/// publishes gives it one again.
#[derive(Debug, Default)]
pub struct KeyDirectory(RwLock<Keys>);

#[derive(Debug, Default)]
struct Keys {
    keys: HashMap<String, VerifyingKey>,
    pinned: std::collections::HashSet<String>,
    revoked: std::collections::HashSet<String>,
}

impl KeyDirectory {
    /// Applies a message from `node`'s retained identity topic: an empty payload (the retained
    /// message was cleared) forgets the node's key; anything else must be a valid
    /// [`NodeIdentity`] for `node` ([`NodeIdentity::key_for`]) and records its key. An unusable
    /// message changes nothing.
    pub fn apply_retained(&self, node: &str, payload: &[u8]) -> Result<KeyChange, PinError> {
        let key = match payload.is_empty() {
            true => None,
            false => Some(NodeIdentity::key_for(node, payload)?),
        };
        let mut keys = self.0.write().unwrap_or_else(PoisonError::into_inner);
        if keys.revoked.contains(node) {
            return Err(PinError::Revoked(node.to_string()));
        }
        if keys.pinned.contains(node) {
            return match key {
                Some(k) if keys.keys.get(node) == Some(&k) => Ok(KeyChange::Unchanged),
                _ => Err(PinError::NotEnrolledKey(node.to_string())),
            };
        }
        let Some(key) = key else {
            keys.keys.remove(node);
            return Ok(KeyChange::Cleared);
        };
        Ok(match keys.keys.insert(node.to_string(), key) {
            None => KeyChange::Recorded,
            Some(old) if old != key => KeyChange::Replaced { old },
            Some(_) => KeyChange::Unchanged,
        })
    }

    /// Records `node`'s key as the one it enrolled with: from now on only it counts, whatever
    /// the identity topic says. (A node enrolled again gets its new key pinned and un-revoked.)
    pub fn pin(&self, node: &str, key: VerifyingKey) {
        let mut keys = self.0.write().unwrap_or_else(PoisonError::into_inner);
        keys.revoked.remove(node);
        keys.pinned.insert(node.to_string());
        keys.keys.insert(node.to_string(), key);
    }

    /// Revokes `node`: its key is forgotten, so nothing it signs verifies, and it can publish no
    /// other.
    pub fn revoke(&self, node: &str) {
        let mut keys = self.0.write().unwrap_or_else(PoisonError::into_inner);
        keys.keys.remove(node);
        keys.pinned.remove(node);
        keys.revoked.insert(node.to_string());
    }

    /// True once `node` was revoked.
    pub fn is_revoked(&self, node: &str) -> bool {
        let keys = self.0.read().unwrap_or_else(PoisonError::into_inner);
        keys.revoked.contains(node)
    }

    /// Records `node`'s key, as published (unless it is pinned or revoked); returns the key it
    /// had before, if any.
    pub fn set(&self, node: &str, key: VerifyingKey) -> Option<VerifyingKey> {
        let mut keys = self.0.write().unwrap_or_else(PoisonError::into_inner);
        if keys.pinned.contains(node) || keys.revoked.contains(node) {
            return keys.keys.get(node).copied();
        }
        keys.keys.insert(node.to_string(), key)
    }

    /// `node`'s key.
    pub fn get(&self, node: &str) -> Option<VerifyingKey> {
        let keys = self.0.read().unwrap_or_else(PoisonError::into_inner);
        keys.keys.get(node).copied()
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

    #[test]
    fn an_enrolled_key_is_pinned_and_a_revoked_node_has_none() {
        let dir = KeyDirectory::default();
        let (k1, k2) = (NodeKey::generate(), NodeKey::generate());
        let publish = |k: &NodeKey| envelope::encode(&k.identity("n1"));
        dir.pin("n1", k1.verifying_key());
        assert_eq!(
            dir.apply_retained("n1", &publish(&k1)),
            Ok(KeyChange::Unchanged)
        );
        // Neither another key nor a cleared topic displaces the enrolled one.
        assert_eq!(
            dir.apply_retained("n1", &publish(&k2)),
            Err(PinError::NotEnrolledKey("n1".into()))
        );
        assert_eq!(
            dir.apply_retained("n1", b""),
            Err(PinError::NotEnrolledKey("n1".into()))
        );
        assert_eq!(dir.set("n1", k2.verifying_key()), Some(k1.verifying_key()));
        assert_eq!(dir.get("n1"), Some(k1.verifying_key()));
        // Revoked: no key, and publishing one changes nothing.
        dir.revoke("n1");
        assert!(dir.is_revoked("n1"));
        assert_eq!(dir.get("n1"), None);
        assert_eq!(
            dir.apply_retained("n1", &publish(&k1)),
            Err(PinError::Revoked("n1".into()))
        );
        let msg = blob_request_message("n1", "ab", 1, "00");
        assert!(dir.verify("n1", &msg, &k1.sign(&msg)).is_err());
        // Enrolled again with a new key.
        dir.pin("n1", k2.verifying_key());
        assert!(!dir.is_revoked("n1"));
        assert_eq!(dir.get("n1"), Some(k2.verifying_key()));
    }
}
