//! Submitter accounts made at run time: their names and API keys. A key is shown once, when it
//! is made; the store keeps its sha256.

use ambient_protocol::credits::KeyCreated;
use rand::RngCore as _;
use sha2::{Digest, Sha256};

use crate::store::KeyRecord;

/// Why an account name is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "account names are 1 to 64 letters, digits, '-' or '_' (they name the account's tasks and \
     its MQTT topics); got {0:?}"
)]
pub struct BadName(pub String);

/// Checks an account name: the charset of submitter ids and node ids.
pub fn check_name(name: &str) -> Result<(), BadName> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    ok.then_some(()).ok_or_else(|| BadName(name.to_string()))
}

/// sha256 of a key, hex: what the store looks keys up by.
pub fn key_sha256(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A new key for `account`, made at `now` (Unix seconds): what to store, and what to show once.
pub fn new_key(account: &str, now: i64) -> (KeyRecord, KeyCreated) {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    let api_key = format!("amb_{}", hex::encode(bytes));
    let mut id = [0u8; 6];
    rand::rng().fill_bytes(&mut id);
    let key_id = format!("key_{}", hex::encode(id));
    let record = KeyRecord {
        id: key_id.clone(),
        account: account.to_string(),
        key_sha256: key_sha256(&api_key),
        created_at: now,
        revoked: false,
    };
    let shown = KeyCreated {
        key_id,
        account: account.to_string(),
        api_key,
    };
    (record, shown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_use_the_submitter_charset() {
        for ok in ["alice", "lab-7", "a_b", &"x".repeat(64)] {
            assert_eq!(check_name(ok), Ok(()), "{ok}");
        }
        for bad in ["", "a/b", "a b", "é", "+", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_key_is_stored_only_as_its_hash() {
        let (record, shown) = new_key("alice", 7);
        assert_eq!(record.key_sha256, key_sha256(&shown.api_key));
        assert!(!record.key_sha256.contains(&shown.api_key));
        assert_eq!(record.id, shown.key_id);
        assert_ne!(new_key("alice", 7).1.api_key, shown.api_key);
    }
}
