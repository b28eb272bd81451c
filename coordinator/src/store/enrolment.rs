//! What the store keeps about joining: enrolment tokens (their secrets only as sha256) and the
//! nodes enrolled with them, with the rule both backends apply when a token is redeemed.
//!
//! Times are Unix seconds in both backends: these rows are compared with the clock, never shown
//! as they are.

use ambient_protocol::join::TokenInfo;
use chrono::{DateTime, Utc};

/// An enrolment token as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// Its id (public).
    pub id: String,
    /// sha256 of its secret, hex.
    pub secret_sha256: String,
    /// How many nodes may join with it.
    pub uses: u32,
    /// How many have.
    pub used: u32,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub expires_at: i64,
    /// Revoked by an operator.
    pub revoked: bool,
    /// The operator's note.
    pub note: Option<String>,
    /// The account that operates the nodes joining with it.
    pub operator: Option<String>,
}

/// A node enrolled with a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrolment {
    /// The node id the coordinator gave it (its broker username and client id).
    pub node: String,
    /// The ed25519 key it proved, hex: the only key its signatures are checked against.
    pub ed25519: String,
    /// The token it joined with.
    pub token: String,
    /// sha256 of its broker password, hex (the embedded broker checks it; mosquitto keeps its
    /// own hash).
    pub password_sha256: String,
    /// Unix seconds.
    pub enrolled_at: i64,
    /// Unix seconds, once an operator revoked it.
    pub revoked_at: Option<i64>,
}

/// Why a token was not accepted. The first three say no more than "no" to a guesser: an unknown
/// id and a wrong secret are the same answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JoinRefused {
    /// No token has this id, or its secret is not this one.
    #[error("unknown join token, or a wrong secret")]
    Unknown,
    /// It expired.
    #[error("the join token has expired; ask the operator for a new one")]
    Expired,
    /// As many nodes joined with it as it allows.
    #[error("the join token has been used as many times as it allows")]
    UsedUp,
    /// An operator revoked it.
    #[error("the join token was revoked")]
    Revoked,
}

impl JoinRefused {
    /// The API's error code.
    pub fn code(self) -> &'static str {
        match self {
            JoinRefused::Unknown => "invalid_token",
            JoinRefused::Expired => "token_expired",
            JoinRefused::UsedUp => "token_used_up",
            JoinRefused::Revoked => "token_revoked",
        }
    }
}

impl TokenRecord {
    /// Whether a node presenting `secret_sha256` at `now` may join with this token.
    pub(super) fn admits(&self, secret_sha256: &str, now: i64) -> Result<(), JoinRefused> {
        // Both are sha256 hex of secrets: comparing them leaks nothing about the secret.
        if self.secret_sha256 != secret_sha256 {
            return Err(JoinRefused::Unknown);
        }
        if self.revoked {
            return Err(JoinRefused::Revoked);
        }
        if now >= self.expires_at {
            return Err(JoinRefused::Expired);
        }
        if self.used >= self.uses {
            return Err(JoinRefused::UsedUp);
        }
        Ok(())
    }

    /// As the admin API lists it.
    pub fn info(&self) -> TokenInfo {
        let time = |s: i64| DateTime::<Utc>::from_timestamp(s, 0).unwrap_or_default();
        TokenInfo {
            id: self.id.clone(),
            uses: self.uses,
            used: self.used,
            created_at: time(self.created_at),
            expires_at: time(self.expires_at),
            revoked: self.revoked,
            note: self.note.clone(),
            operator: self.operator.clone(),
            token: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_admits_while_valid_unrevoked_and_not_used_up() {
        let t = TokenRecord {
            id: "t".into(),
            secret_sha256: "aa".into(),
            uses: 2,
            used: 1,
            created_at: 0,
            expires_at: 100,
            revoked: false,
            note: None,
            operator: None,
        };
        assert_eq!(t.admits("aa", 99), Ok(()));
        assert_eq!(t.admits("ab", 99), Err(JoinRefused::Unknown));
        assert_eq!(t.admits("aa", 100), Err(JoinRefused::Expired));
        let used = TokenRecord {
            used: 2,
            ..t.clone()
        };
        assert_eq!(used.admits("aa", 1), Err(JoinRefused::UsedUp));
        let revoked = TokenRecord { revoked: true, ..t };
        assert_eq!(revoked.admits("aa", 1), Err(JoinRefused::Revoked));
    }
}
