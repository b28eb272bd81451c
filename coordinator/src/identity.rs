//! Node identity keys, as the nodes published them (retained, on `nodes/{node}/identity`, a topic
//! only the node may write), for checking what nodes sign: blob requests over HTTP and their
//! secure-aggregation keys. Shared by the MQTT listener (which fills it), the engine and the API.

use std::collections::HashMap;
use std::sync::RwLock;

use ambient_protocol::identity::{self, IdentityError, VerifyingKey};

/// Why a node's signature was not accepted.
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

/// Identity keys by node.
#[derive(Default)]
pub struct Identities(RwLock<HashMap<String, VerifyingKey>>);

impl Identities {
    /// Records `node`'s key; returns the key it had before, if any.
    pub fn set(&self, node: &str, key: VerifyingKey) -> Option<VerifyingKey> {
        let mut map = self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.insert(node.to_string(), key)
    }

    /// Forgets `node`'s key (its retained identity was cleared).
    pub fn remove(&self, node: &str) {
        let mut map = self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.remove(node);
    }

    /// `node`'s key, hex, for `GET /api/v1/nodes`.
    pub fn hex(&self, node: &str) -> Option<String> {
        self.get(node).map(|k| hex::encode(k.to_bytes()))
    }

    /// `node`'s key.
    pub fn get(&self, node: &str) -> Option<VerifyingKey> {
        let map = self
            .0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(node).copied()
    }

    /// Checks `node`'s signature of `msg`.
    pub fn verify(&self, node: &str, msg: &[u8], sig: &[u8]) -> Result<(), IdentityCheck> {
        let key = self
            .get(node)
            .ok_or_else(|| IdentityCheck::Unknown(node.to_string()))?;
        identity::verify(&key, msg, sig).map_err(|error| IdentityCheck::Bad {
            node: node.to_string(),
            error,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ambient_protocol::NodeKey;

    #[test]
    fn verifies_only_the_published_key() {
        let ids = Identities::default();
        let k = NodeKey::generate();
        let msg = identity::blob_request_message("n1", "ab", 1);
        let sig = k.sign(&msg);
        assert_eq!(
            ids.verify("n1", &msg, &sig),
            Err(IdentityCheck::Unknown("n1".into()))
        );
        assert_eq!(ids.set("n1", k.verifying_key()), None);
        assert_eq!(ids.set("n1", k.verifying_key()), Some(k.verifying_key()));
        assert_eq!(ids.verify("n1", &msg, &sig), Ok(()));
        // A key swap (an operator re-enrolled the node) invalidates the old signatures.
        assert!(ids.set("n1", NodeKey::generate().verifying_key()).is_some());
        assert!(matches!(
            ids.verify("n1", &msg, &sig),
            Err(IdentityCheck::Bad { .. })
        ));
        ids.remove("n1");
        assert!(ids.hex("n1").is_none());
    }
}
