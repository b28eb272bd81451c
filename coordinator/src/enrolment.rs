//! Joining with enrolment tokens, and revoking nodes.
//!
//! An operator makes a token ([`Enroller::create_token`]); a node presents it with its new
//! identity key and a signature made with that key ([`Enroller::join`]). The coordinator then,
//! in this order: checks the signature, redeems the token and records the node in the store
//! (one transaction), makes its broker account, and pins its key, so that from then on only that
//! key's signatures count for the node. Revoking ([`Enroller::revoke_node`]) records it, removes
//! the broker account (the broker disconnects the node), forgets the key, and has the scheduler
//! treat the node as gone, so its tasks go to other nodes.
//!
//! The scheduler's coordinator does this (the routes are forwarded to it): the keys it checks
//! results with are the ones pinned here, and [`Enroller::load`] pins the stored ones when it
//! takes the role.

use std::sync::Arc;

use ambient_protocol::identity::{self, KeyDirectory, NodeIdentity};
use ambient_protocol::join::{JoinGrant, JoinRequest, JoinToken, TokenInfo, TokenRequest};
use ambient_protocol::{join, sha256_hex};
use chrono::Utc;
use tracing::{info, warn};

use crate::accounts::{AccountError, BrokerAccounts};
use crate::store::{Enrolment, JoinRefused, Store, StoreError, TokenRecord};

/// A token's default life.
pub const DEFAULT_TOKEN_SECS: u64 = 7 * 24 * 3600;
/// The longest life a token may be given.
pub const MAX_TOKEN_SECS: u64 = 365 * 24 * 3600;

/// Why a join or an admin request failed.
#[derive(Debug, thiserror::Error)]
pub enum EnrolError {
    /// The request itself is wrong (a bad key, signature or time, or a bad token request).
    #[error("{0}")]
    Invalid(String),
    /// The token does not admit the node.
    #[error(transparent)]
    Refused(#[from] JoinRefused),
    /// The broker account could not be made.
    #[error(transparent)]
    Accounts(#[from] AccountError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Enrolment and revocation. Cheap to clone.
#[derive(Clone)]
pub struct Enroller {
    /// Where tokens and enrolments live.
    pub store: Store,
    /// Who makes broker accounts.
    pub accounts: BrokerAccounts,
    /// The keys nodes' signatures are checked against.
    pub identities: Arc<KeyDirectory>,
    /// The broker addresses nodes are given.
    pub brokers: Vec<String>,
    /// This network's REST API, as nodes reach it.
    pub api_url: String,
}

impl Enroller {
    /// Makes a token. The answer is the only place its secret ever appears.
    pub async fn create_token(&self, req: TokenRequest) -> Result<TokenInfo, EnrolError> {
        let uses = req.uses.unwrap_or(1);
        let life = req.expires_in_sec.unwrap_or(DEFAULT_TOKEN_SECS);
        if uses == 0 || life == 0 || life > MAX_TOKEN_SECS {
            return Err(EnrolError::Invalid(format!(
                "uses must be at least 1, and expires_in_sec between 1 and {MAX_TOKEN_SECS}"
            )));
        }
        if req.note.as_ref().is_some_and(|n| n.chars().count() > 200) {
            return Err(EnrolError::Invalid("note: at most 200 characters".into()));
        }
        if let Some(op) = &req.operator
            && self.store.accounts(Some(op.clone())).await?.is_empty()
        {
            return Err(EnrolError::Invalid(format!(
                "operator: no account {op:?}; make it first (ambient account create)"
            )));
        }
        let now = Utc::now().timestamp();
        let secret = join::token_secret();
        let record = TokenRecord {
            id: format!("tok-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
            secret_sha256: sha256_hex(secret.as_bytes()),
            uses,
            used: 0,
            created_at: now,
            expires_at: now.saturating_add(life as i64),
            revoked: false,
            note: req.note,
            operator: req.operator,
        };
        self.store.put_token(record.clone()).await?;
        let token = JoinToken {
            api: self.api_url.clone(),
            brokers: self.brokers.clone(),
            id: record.id.clone(),
            secret,
        };
        info!(token = %record.id, uses, "Enrolment token created.");
        Ok(TokenInfo {
            token: Some(token.encode()),
            ..record.info()
        })
    }

    /// Every token, newest first, without secrets.
    pub async fn tokens(&self) -> Result<Vec<TokenInfo>, EnrolError> {
        Ok(self
            .store
            .tokens()
            .await?
            .iter()
            .map(TokenRecord::info)
            .collect())
    }

    /// Revokes a token; false when there is none with this id.
    pub async fn revoke_token(&self, id: String) -> Result<bool, EnrolError> {
        Ok(self.store.revoke_token(id).await?)
    }

    /// A node joins: see the module documentation for the order of the steps.
    pub async fn join(&self, req: JoinRequest) -> Result<JoinGrant, EnrolError> {
        let now = Utc::now().timestamp();
        let key = NodeIdentity {
            node: String::new(),
            ed25519: req.ed25519.clone(),
        }
        .key()
        .map_err(|e| EnrolError::Invalid(format!("ed25519: {e}")))?;
        if req.time.abs_diff(now) > identity::MAX_CLOCK_SKEW_SECS.unsigned_abs() {
            return Err(EnrolError::Invalid(format!(
                "time: the node's clock is more than {} s from the coordinator's; set it right \
                 (NTP) and join again",
                identity::MAX_CLOCK_SKEW_SECS
            )));
        }
        let sig = hex::decode(&req.signature).unwrap_or_default();
        identity::verify(
            &key,
            &join::join_message(&req.token, &req.ed25519, req.time),
            &sig,
        )
        .map_err(|e| EnrolError::Invalid(format!("signature: {e}")))?;
        let password = join::token_secret();
        let proposed = Enrolment {
            node: format!("node-{}", &uuid::Uuid::new_v4().simple().to_string()[..10]),
            ed25519: req.ed25519.clone(),
            token: req.token.clone(),
            password_sha256: sha256_hex(password.as_bytes()),
            enrolled_at: now,
            revoked_at: None,
        };
        let enrolled = self
            .store
            .enrol(sha256_hex(req.secret.as_bytes()), proposed)
            .await??;
        self.accounts.grant(&enrolled.node, &password).await?;
        self.identities.pin(&enrolled.node, key);
        info!(node = %enrolled.node, token = %req.token, name = ?req.name, "Node enrolled.");
        Ok(JoinGrant {
            node_id: enrolled.node,
            mqtt_password: password,
            brokers: self.brokers.clone(),
            coordinator_url: self.api_url.clone(),
        })
    }

    /// Revokes an enrolled node: recorded, broker account removed, key forgotten. False when no
    /// such node is enrolled. (The caller tells the scheduler.)
    pub async fn revoke_node(&self, node: &str) -> Result<bool, EnrolError> {
        if !self
            .store
            .revoke_node(node.to_string(), Utc::now().timestamp())
            .await?
        {
            return Ok(false);
        }
        self.identities.revoke(node);
        self.accounts.revoke(node).await?;
        info!(node, "Node revoked.");
        Ok(true)
    }

    /// Applies the stored enrolments: enrolled keys pinned, revoked nodes revoked, and (on the
    /// embedded broker, whose table lives in memory) enrolled nodes' accounts made again.
    pub async fn load(&self) -> Result<(), StoreError> {
        let all = self.store.enrolments().await?;
        for e in &all {
            if e.revoked_at.is_some() {
                self.identities.revoke(&e.node);
                continue;
            }
            let node = NodeIdentity {
                node: e.node.clone(),
                ed25519: e.ed25519.clone(),
            };
            match node.key() {
                Ok(key) => self.identities.pin(&e.node, key),
                Err(error) => warn!(node = %e.node, %error, "An enrolled key does not parse."),
            }
            #[cfg(feature = "embedded-broker")]
            if let BrokerAccounts::Embedded(a) = &self.accounts {
                a.add_hashed(&e.node, &e.password_sha256);
            }
        }
        if !all.is_empty() {
            info!(enrolled = all.len(), "Enrolments loaded.");
        }
        Ok(())
    }
}
