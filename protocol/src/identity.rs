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

/// What a node publishes, retained, on `nodes/{node}/identity`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeIdentity {
    /// Protocol version.
    pub v: u32,
    /// The node (must match the topic).
    pub node: String,
    /// The ed25519 public key, hex.
    pub ed25519: String,
}

/// A bad key or signature.
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
    /// An identity message that is not JSON of this protocol version, or names another node
    /// than its topic.
    #[error("unusable identity message: {0}")]
    BadMessage(String),
}

impl NodeIdentity {
    /// The key a message on `nodes/{node}/identity` carries, checked: JSON of this protocol
    /// version, naming the topic's node, with a valid key.
    pub fn key_for(node: &str, payload: &[u8]) -> Result<VerifyingKey, IdentityError> {
        let id: NodeIdentity = serde_json::from_slice(payload)
            .map_err(|e| IdentityError::BadMessage(e.to_string()))?;
        if id.v != crate::PROTOCOL_VERSION {
            return Err(IdentityError::BadMessage(format!(
                "protocol version {}",
                id.v
            )));
        }
        if id.node != node {
            return Err(IdentityError::BadMessage(format!(
                "it names node {} on node {node}'s topic",
                id.node
            )));
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

    /// What `node` publishes on its identity topic.
    pub fn identity(&self, node: &str) -> NodeIdentity {
        NodeIdentity {
            v: crate::PROTOCOL_VERSION,
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
        let good = serde_json::to_vec(&k.identity("n1")).unwrap();
        assert_eq!(NodeIdentity::key_for("n1", &good), Ok(k.verifying_key()));
        assert!(matches!(
            NodeIdentity::key_for("n2", &good),
            Err(IdentityError::BadMessage(_))
        ));
        assert!(matches!(
            NodeIdentity::key_for("n1", b"{"),
            Err(IdentityError::BadMessage(_))
        ));
        let mut id = k.identity("n1");
        id.ed25519 = "zz".into();
        assert_eq!(id.key(), Err(IdentityError::BadKey));
        assert!(NodeKey::from_hex("1234").is_err());
    }
}
