//! What the store keeps about the marketplace: submitter accounts created at run time, their API
//! keys (only as sha256), and the ledger ([`crate::credits`] says what its postings mean).
//!
//! The ledger's queries are written once for both backends: `$n` placeholders, which SQLite
//! reads as named parameters numbered in order of first use (every query here uses them in
//! order), and types both dialects share. Times are Unix seconds for accounts and keys, Unix
//! milliseconds for postings, in both.

use ambient_protocol::credits::{AccountLimits, KeyInfo, LedgerEntry};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{StoreError, corrupt};
use crate::credits::{Escrow, Snapshot};

/// A submitter account made at run time.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountRecord {
    /// Its name (the submitter id of its tasks).
    pub name: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Its limits.
    pub limits: AccountLimits,
}

/// An API key, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// Its id (public).
    pub id: String,
    /// The account it acts for.
    pub account: String,
    /// sha256 of the key, hex.
    pub key_sha256: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Revoked by an admin.
    pub revoked: bool,
}

impl KeyRecord {
    /// As the admin API lists it.
    pub fn info(&self) -> KeyInfo {
        KeyInfo {
            key_id: self.id.clone(),
            account: self.account.clone(),
            created_at: DateTime::<Utc>::from_timestamp(self.created_at, 0).unwrap_or_default(),
            revoked: self.revoked,
        }
    }
}

/// An account's figures, from its postings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountTotals {
    /// Spendable.
    pub balance: i64,
    /// In escrow.
    pub reserved: i64,
    /// Charged.
    pub spent: i64,
    /// Granted to it, and paid to the nodes it operates.
    pub earned: i64,
    /// The nodes it operates.
    pub nodes: Vec<String>,
}

/// Which postings a ledger page holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedgerFilter {
    /// Every posting (admins).
    All,
    /// The postings of one submitter's transactions: its grants, reservations and settlements,
    /// the nodes' pay and the fee included.
    Owner(String),
    /// The postings of one account, e.g. `node:{id}`.
    Account(String),
}

impl LedgerFilter {
    /// `(owner, account)` bind values: a null one does not filter.
    pub(super) fn binds(&self) -> (Option<&str>, Option<&str>) {
        match self {
            LedgerFilter::All => (None, None),
            LedgerFilter::Owner(o) => (Some(o), None),
            LedgerFilter::Account(a) => (None, Some(a)),
        }
    }
}

/// Appends one posting; a transaction written before is written once.
pub(super) const PUT_POSTING: &str =
    "INSERT INTO ledger (txn, at, account, amount, kind, owner, task_id, memo)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
     ON CONFLICT (txn, account, kind) DO NOTHING";

/// `submitter:{name}` balances.
pub(super) const BALANCES: &str = "SELECT owner, CAST(SUM(amount) AS BIGINT) FROM ledger
     WHERE account LIKE 'submitter:%' GROUP BY owner";

/// Charged, by submitter.
pub(super) const SPENT: &str =
    "SELECT owner, CAST(-SUM(amount) AS BIGINT) FROM ledger WHERE kind = 'charge' GROUP BY owner";

/// Submitters that had their opening grant.
pub(super) const OPENED: &str =
    "SELECT owner FROM ledger WHERE txn LIKE 'opening:%' AND kind = 'grant' AND account <> 'mint'";

/// Escrows not settled yet: account, owner, what is left, what was reserved.
pub(super) const OPEN_ESCROWS: &str = "SELECT l.account, l.owner, CAST(SUM(l.amount) AS BIGINT),
            CAST(SUM(CASE WHEN l.kind = 'reserve' THEN l.amount ELSE 0 END) AS BIGINT)
     FROM ledger l
     WHERE l.account LIKE 'escrow:%'
       AND NOT EXISTS (SELECT 1 FROM ledger s WHERE s.txn = 'settle:' || substr(l.account, 8))
     GROUP BY l.account, l.owner";

/// One account's figures: balance, reserved, spent, earned.
/// `$1` is the account (`submitter:{name}`), `$2` the name.
pub(super) const TOTALS: &str = "SELECT
        CAST(COALESCE(SUM(CASE WHEN account = $1 THEN amount ELSE 0 END), 0) AS BIGINT),
        CAST(COALESCE(SUM(CASE WHEN account LIKE 'escrow:%' THEN amount ELSE 0 END), 0) AS BIGINT),
        CAST(COALESCE(-SUM(CASE WHEN kind = 'charge' THEN amount ELSE 0 END), 0) AS BIGINT),
        CAST(COALESCE(SUM(CASE WHEN account = $1 AND kind = 'grant' THEN amount ELSE 0 END), 0)
             AS BIGINT)
     FROM ledger WHERE owner = $2";

/// The nodes account `$1` operates: enrolled with one of its tokens, not revoked.
pub(super) const OPERATED_NODES: &str = "SELECT e.node FROM enrolments e
     JOIN join_tokens t ON e.token = t.id
     WHERE t.operator = $1 AND e.revoked_at IS NULL ORDER BY e.node";

/// What the nodes account `$1` operates were paid.
pub(super) const OPERATED_EARNED: &str = "SELECT CAST(COALESCE(SUM(l.amount), 0) AS BIGINT)
     FROM ledger l JOIN enrolments e ON l.account = 'node:' || e.node
     JOIN join_tokens t ON e.token = t.id
     WHERE t.operator = $1 AND l.kind = 'pay'";

/// A page of postings: `$1` owner or null, `$2` account or null, after `$3`, at most `$4`.
pub(super) const PAGE: &str =
    "SELECT seq, txn, at, account, amount, kind, task_id, memo FROM ledger
     WHERE (CAST($1 AS TEXT) IS NULL OR owner = $1) AND (CAST($2 AS TEXT) IS NULL OR account = $2)
       AND seq > $3
     ORDER BY seq LIMIT $4";

/// What the book restarts from, as the queries return it.
#[derive(Debug, Default)]
pub(super) struct SnapshotRows {
    /// [`BALANCES`].
    pub balances: Vec<(String, i64)>,
    /// [`SPENT`].
    pub spent: Vec<(String, i64)>,
    /// [`OPEN_ESCROWS`].
    pub escrows: Vec<(String, String, i64, i64)>,
    /// Every account.
    pub accounts: Vec<AccountRecord>,
    /// [`OPENED`].
    pub opened: Vec<String>,
}

impl SnapshotRows {
    pub(super) fn snapshot(self) -> Result<Snapshot, StoreError> {
        let mut escrows = std::collections::HashMap::new();
        for (account, owner, left, reserved) in self.escrows {
            let task = account
                .strip_prefix("escrow:")
                .and_then(|t| Uuid::parse_str(t).ok())
                .ok_or_else(|| corrupt(format!("ledger account {account:?}")))?;
            escrows.insert(
                task,
                Escrow {
                    owner,
                    reserved,
                    left,
                },
            );
        }
        Ok(Snapshot {
            balances: self.balances.into_iter().collect(),
            spent: self.spent.into_iter().collect(),
            escrows,
            limits: self
                .accounts
                .into_iter()
                .map(|a| (a.name, a.limits))
                .collect(),
            opened: self.opened.into_iter().collect(),
        })
    }
}

/// Builds a ledger entry from its columns.
#[allow(clippy::too_many_arguments)]
pub(super) fn entry(
    seq: i64,
    txn: String,
    at_ms: i64,
    account: String,
    amount: i64,
    kind: String,
    task_id: Option<String>,
    memo: String,
) -> LedgerEntry {
    LedgerEntry {
        seq,
        txn,
        at: DateTime::<Utc>::from_timestamp_millis(at_ms).unwrap_or_default(),
        account,
        amount,
        kind,
        task_id: task_id.and_then(|t| Uuid::parse_str(&t).ok()),
        memo,
    }
}
