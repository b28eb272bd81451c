//! Joining a network with an enrolment token: the token a person pastes, the request a node
//! signs with its new identity key, and what the coordinator grants.
//!
//! A token is one line, `ambient-join-v1.` followed by base64url (no padding) of the JSON
//! [`JoinToken`]: the coordinator's URL, the broker addresses, the token's id and its secret. The
//! coordinator keeps only the secret's sha256. The node proves the key it will be known by
//! ([`JoinRequest`], signed over [`join_message`]), so its identity is registered at enrolment
//! rather than trusted the first time it appears on the identity topic.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What every token starts with; the version is part of it.
pub const TOKEN_PREFIX: &str = "ambient-join-v1.";

/// What an enrolment token carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinToken {
    /// Base URL of the coordinator's REST API, where the node enrols.
    pub api: String,
    /// Broker addresses, `host:port`, the first one preferred.
    pub brokers: Vec<String>,
    /// The token's id (public: it names the token in `ambient token list`).
    pub id: String,
    /// The secret, 64 hex digits.
    pub secret: String,
}

/// A string that is not an enrolment token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// It does not start with [`TOKEN_PREFIX`].
    #[error("not an Ambient VCP join token (it should start with {TOKEN_PREFIX:?})")]
    Prefix,
    /// The rest is not base64url JSON of a [`JoinToken`].
    #[error("the join token is damaged: copy it again, whole (it is one line)")]
    Damaged,
}

impl JoinToken {
    /// The token as one line to paste.
    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).expect("a token serialises");
        format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(json))
    }

    /// Reads a pasted token (surrounding white space is ignored).
    pub fn decode(s: &str) -> Result<JoinToken, TokenError> {
        let rest = s
            .trim()
            .strip_prefix(TOKEN_PREFIX)
            .ok_or(TokenError::Prefix)?;
        let json = URL_SAFE_NO_PAD
            .decode(rest)
            .map_err(|_| TokenError::Damaged)?;
        let token: JoinToken = serde_json::from_slice(&json).map_err(|_| TokenError::Damaged)?;
        if token.brokers.is_empty() || !crate::is_lower_hex(&token.secret, 64) {
            return Err(TokenError::Damaged);
        }
        Ok(token)
    }
}

/// A fresh token secret: 64 hex digits from the OS random source.
pub fn token_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    hex::encode(bytes)
}

/// `POST /api/v1/join`: a node asks to join with a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    /// The token's id.
    pub token: String,
    /// The token's secret.
    pub secret: String,
    /// The node's ed25519 public key, hex: its identity from now on.
    pub ed25519: String,
    /// A name for people (the host name); the coordinator picks the node id.
    #[serde(default)]
    pub name: Option<String>,
    /// Unix time of the request, seconds (within the clock-skew window of the coordinator's).
    pub time: i64,
    /// Hex signature of [`join_message`] with the key.
    pub signature: String,
}

/// What a joining node signs: proof that it holds the key it enrols, bound to the token and the
/// time, so the signature is no use for any other token or later.
pub fn join_message(token: &str, ed25519: &str, unix_time: i64) -> Vec<u8> {
    format!("ambient/v1 join\n{token}\n{ed25519}\n{unix_time}").into_bytes()
}

/// The answer to a [`JoinRequest`]: who the node is and how it reaches the broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinGrant {
    /// The node's id (also its broker username and client id).
    pub node_id: String,
    /// Its broker password, shown once.
    pub mqtt_password: String,
    /// Broker addresses, `host:port`.
    pub brokers: Vec<String>,
    /// The coordinator's REST API.
    pub coordinator_url: String,
}

/// `POST /api/v1/admin/tokens`: what an operator asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// How many nodes may join with it (default 1).
    #[serde(default)]
    pub uses: Option<u32>,
    /// Seconds until it expires (default 7 days).
    #[serde(default)]
    pub expires_in_sec: Option<u64>,
    /// A note for the operator ("lab PCs").
    #[serde(default)]
    pub note: Option<String>,
    /// The account (made with `ambient account create`) that operates the nodes joining with
    /// it: their earnings show on its account.
    #[serde(default)]
    pub operator: Option<String>,
}

/// A token as the admin API lists it (the secret only when it is created).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    /// Its id.
    pub id: String,
    /// How many nodes may join with it.
    pub uses: u32,
    /// How many have.
    pub used: u32,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
    /// Revoked by an operator.
    pub revoked: bool,
    /// The operator's note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The account that operates the nodes joining with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
    /// The whole token to paste, present only in the answer that created it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_one_line_and_round_trips() {
        let t = JoinToken {
            api: "http://10.0.0.1:8080".into(),
            brokers: vec!["10.0.0.1:1883".into(), "10.0.0.2:1883".into()],
            id: "tok-1".into(),
            secret: token_secret(),
        };
        let line = t.encode();
        assert!(line.starts_with(TOKEN_PREFIX));
        assert!(!line.contains(char::is_whitespace));
        assert_eq!(JoinToken::decode(&format!("  {line}\n")), Ok(t));
        assert_eq!(JoinToken::decode("hello"), Err(TokenError::Prefix));
        assert_eq!(
            JoinToken::decode(&line[..line.len() - 5]),
            Err(TokenError::Damaged)
        );
    }
}
