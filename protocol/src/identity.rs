//! Node identity: an ed25519 key pair per node. The agent keeps the secret half (OS keyring, or
//! the 0600 fallback file) and publishes the public half, retained, as a [`NodeIdentity`] on
//! `nodes/{node}/identity`.
//!
//! Why a broker topic: the broker ACL lets only the node itself write that topic — not other
//! nodes, and not the coordinator — so a key read from it was put there by the node. Peers that
//! must not trust the coordinator (secure-aggregation clients, which check the signed key
//! roster the coordinator relays) read identities straight from the broker. The coordinator
//! reads them too, to authenticate nodes on HTTP (blob downloads, [`blob_request_message`]).
//! The trust anchor is the broker operator who issues passwords and ACLs; the embedded broker
//! has no ACLs, so there it only guards against mistakes, not against a hostile coordinator.
//!
//! Every signature covers a domain-separated message built in this crate or in `ambient-fl`, so
//! a signature made for one purpose is never valid for another.

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

/// What a node signs to download blob `sha256` over HTTP at `unix_time`.
pub fn blob_request_message(node: &str, sha256: &str, unix_time: i64) -> Vec<u8> {
    format!("ambient/v1 blob-get\n{node}\n{sha256}\n{unix_time}").into_bytes()
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
        let msg = blob_request_message("n1", "ab", 7);
        let sig = k.sign(&msg);
        assert_eq!(verify(&pk, &msg, &sig), Ok(()));
        // Another message, another key, a truncated signature: all refused.
        assert_eq!(
            verify(&pk, &blob_request_message("n2", "ab", 7), &sig),
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
}
