//! The marketplace's accounting on the wire: accounts, the ledger, prices, and what a task cost.
//!
//! Every amount is an integer number of **µcredits** (10⁻⁶ credit, [`MICRO`]): one credit is one
//! hour of one core of the reference machine (`docs/credits.md` has the calibration). Amounts are
//! never floats on the wire, so what the ledger says adds up exactly.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::TaskType;

/// µcredits in one credit.
pub const MICRO: i64 = 1_000_000;

/// Formats µcredits as credits with six decimals, e.g. `12.500000`.
pub fn format_credits(micro: i64) -> String {
    let sign = if micro < 0 { "-" } else { "" };
    let m = micro.unsigned_abs();
    format!("{sign}{}.{:06}", m / MICRO as u64, m % MICRO as u64)
}

/// Parses credits written as a decimal (`12`, `12.5`, `0.000001`) into µcredits.
pub fn parse_credits(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let bad = || format!("{s:?} is not an amount of credits (e.g. 12 or 0.25)");
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    if whole.is_empty() && frac.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    if frac.len() > 6 {
        return Err(format!(
            "{s:?} is finer than a µcredit (6 decimals at most)"
        ));
    }
    let whole: i64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    let frac: i64 = format!("{frac:0<6}").parse().map_err(|_| bad())?;
    whole
        .checked_mul(MICRO)
        .and_then(|w| w.checked_add(frac))
        .ok_or_else(bad)
}

/// What a task costs its submitter, in µcredits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskCost {
    /// Reserved from the submitter's balance at submission: the most the task can cost.
    pub estimated: i64,
    /// What was charged once the task ended (`null` while it runs; 0 when it failed, expired or
    /// was cancelled, save for shards of a computation that completed before it ended).
    pub charged: Option<i64>,
}

/// What a node has earned, in µcredits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeCredits {
    /// Everything it was ever paid.
    pub total: i64,
    /// What it was paid today (UTC).
    #[serde(default)]
    pub today: i64,
    /// Recent average credit: µcredits per day, decaying with a one-week half-life (BOINC's RAC).
    pub recent_average: f64,
}

/// Per-account limits. `None` is no limit. Read from a JSON object only (serde would also read
/// a struct from an array of its fields in order).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "serde_json::Map<String, serde_json::Value>")]
pub struct AccountLimits {
    /// Top-level tasks it may have not yet ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<u32>,
    /// Submissions per second (a burst of as many is allowed); past it, `429` with `Retry-After`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_per_second: Option<f64>,
    /// The most it may ever spend, reservations included, in µcredits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spending_cap: Option<i64>,
}

/// [`AccountLimits`]' fields, as serde reads them once they are known to be an object.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitFields {
    #[serde(default)]
    max_in_flight: Option<u32>,
    #[serde(default)]
    max_per_second: Option<f64>,
    #[serde(default)]
    spending_cap: Option<i64>,
}

impl TryFrom<serde_json::Map<String, serde_json::Value>> for AccountLimits {
    type Error = serde_json::Error;

    fn try_from(map: serde_json::Map<String, serde_json::Value>) -> Result<Self, Self::Error> {
        let f: LimitFields = serde_json::from_value(serde_json::Value::Object(map))?;
        Ok(AccountLimits {
            max_in_flight: f.max_in_flight,
            max_per_second: f.max_per_second,
            spending_cap: f.spending_cap,
        })
    }
}

/// A submitter account as its owner (`GET /api/v1/account`) or an admin sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountInfo {
    /// Its name: the submitter id its tasks carry.
    pub account: String,
    /// What it can spend now, in µcredits.
    pub balance: i64,
    /// Held in escrow for its tasks not yet ended.
    pub reserved: i64,
    /// Charged for its tasks so far.
    pub spent: i64,
    /// Granted to it, and paid to the nodes it operates.
    pub earned: i64,
    /// The nodes it operates: enrolled with a token made for it, and not revoked.
    #[serde(default)]
    pub nodes: Vec<String>,
    /// Its limits.
    pub limits: AccountLimits,
    /// When it was created (`null` for a submitter from the configuration file that was never
    /// created at run time).
    pub created_at: Option<DateTime<Utc>>,
}

/// One posting of the double-entry ledger: `amount` µcredits into (positive) or out of
/// (negative) `account`. The postings of one transaction sum to zero.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// Its position in the ledger, increasing.
    pub seq: i64,
    /// The transaction it belongs to, e.g. `settle:{task}`.
    pub txn: String,
    /// When it was written.
    pub at: DateTime<Utc>,
    /// `submitter:{name}`, `node:{id}`, `escrow:{task}`, `fee` or `mint`.
    pub account: String,
    /// µcredits in (positive) or out (negative).
    pub amount: i64,
    /// `grant`, `reserve`, `charge` (out of escrow for work), `pay` (to a node), `fee` or
    /// `release` (back from escrow).
    pub kind: String,
    /// The task it is about, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<Uuid>,
    /// What it is, for a person.
    pub memo: String,
}

/// A page of the ledger, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerPage {
    /// The entries.
    pub entries: Vec<LedgerEntry>,
    /// Pass as `after` for the next page; `null` at the end.
    pub next_after: Option<i64>,
}

/// What one kind of task costs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KindPrice {
    /// The kind.
    pub task_type: TaskType,
    /// What is measured, e.g. `fuel`.
    pub unit: String,
    /// How many of `unit` make one credit: the reference machine's rate for one hour.
    pub units_per_credit: u64,
    /// µcredits for each replica that answers validly, on top of the measured work.
    pub per_replica: i64,
    /// How the reservation is worked out at submission.
    pub estimate: String,
}

/// The published price list (`GET /api/v1/prices`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PriceList {
    /// `credit`.
    pub unit: String,
    /// µcredits in a credit: every amount of the API is in µcredits.
    pub microcredits_per_credit: i64,
    /// The machine one credit is an hour of.
    pub reference: String,
    /// Percent of each charge paid to the nodes that did the work (split among valid
    /// replicas); the rest is the network's fee.
    pub node_share_percent: u32,
    /// Per kind.
    pub kinds: Vec<KindPrice>,
}

/// A leaderboard row (`GET /api/v1/leaderboard`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaderboardRow {
    /// The node.
    pub node_id: String,
    /// What it earned.
    pub credits: NodeCredits,
}

/// `POST /api/v1/admin/accounts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountCreate {
    /// Its name (letters, digits, `-`, `_`; at most 64).
    pub account: String,
    /// An opening grant, in µcredits.
    #[serde(default)]
    pub credits: i64,
    /// Its limits.
    #[serde(default)]
    pub limits: AccountLimits,
}

/// A new API key, shown once: only its sha256 is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyCreated {
    /// The key's id, to revoke it by.
    pub key_id: String,
    /// The account it acts for.
    pub account: String,
    /// The key itself (`Authorization: Bearer …`).
    pub api_key: String,
}

/// An API key as an admin lists it (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    /// Its id.
    pub key_id: String,
    /// The account it acts for.
    pub account: String,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// Whether it was revoked.
    pub revoked: bool,
}

/// `POST /api/v1/admin/accounts` answers with the account and its first key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountCreated {
    /// The account.
    pub account: AccountInfo,
    /// Its first API key.
    pub key: KeyCreated,
}

/// `POST /api/v1/admin/accounts/{account}/grant`: credits minted into an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// µcredits, more than zero.
    pub amount: i64,
    /// Why, for the ledger.
    #[serde(default)]
    pub memo: String,
}

/// An audit of a ledger: what it moved, and every broken invariant (a transaction that does not
/// sum to zero, an account other than `mint` below zero, a node paid twice for one task, a task
/// settled under two transactions, charges that differ from pay plus fee). For tests, the soak,
/// and anyone who reads a ledger over the admin API.
#[derive(Debug, Default, PartialEq, Eq, Serialize)]
pub struct Audit {
    /// Postings read.
    pub entries: usize,
    /// µcredits minted (grants).
    pub minted: i64,
    /// µcredits charged out of escrows.
    pub charged: i64,
    /// µcredits paid to nodes.
    pub paid: i64,
    /// µcredits to the network's fee.
    pub fee: i64,
    /// Transactions whose postings do not sum to zero.
    pub unbalanced: Vec<String>,
    /// Accounts other than `mint` below zero.
    pub negative: Vec<String>,
    /// (task, node) pairs paid more than once: credits counted twice.
    pub paid_twice: Vec<String>,
    /// Tasks settled under more than one transaction.
    pub settled_twice: Vec<String>,
}

impl Audit {
    /// Audits `entries` (all of them, in any order).
    pub fn of(entries: &[LedgerEntry]) -> Audit {
        let mut a = Audit {
            entries: entries.len(),
            ..Audit::default()
        };
        let mut txns: BTreeMap<&str, i64> = BTreeMap::new();
        let mut accounts: BTreeMap<&str, i64> = BTreeMap::new();
        let mut pays: BTreeMap<(String, &str), u32> = BTreeMap::new();
        let mut settles: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
        for e in entries {
            *txns.entry(&e.txn).or_default() += e.amount;
            *accounts.entry(&e.account).or_default() += e.amount;
            let task = e.task_id.map(|t| t.to_string()).unwrap_or_default();
            match e.kind.as_str() {
                "grant" if e.account == "mint" => a.minted -= e.amount,
                "charge" => a.charged -= e.amount,
                "pay" => {
                    a.paid += e.amount;
                    *pays.entry((task.clone(), &e.account)).or_default() += 1;
                }
                "fee" => a.fee += e.amount,
                _ => {}
            }
            if matches!(e.kind.as_str(), "charge" | "release") {
                settles.entry(task).or_default().insert(&e.txn);
            }
        }
        a.unbalanced = txns
            .into_iter()
            .filter(|(_, sum)| *sum != 0)
            .map(|(t, sum)| format!("{t}: {sum}"))
            .collect();
        a.negative = accounts
            .into_iter()
            .filter(|(acc, sum)| *acc != "mint" && *sum < 0)
            .map(|(acc, sum)| format!("{acc}: {sum}"))
            .collect();
        a.paid_twice = pays
            .into_iter()
            .filter(|(_, n)| *n > 1)
            .map(|((task, node), n)| format!("{node} on {task}: {n} times"))
            .collect();
        a.settled_twice = settles
            .into_iter()
            .filter(|(_, t)| t.len() > 1)
            .map(|(task, t)| format!("{task}: {t:?}"))
            .collect();
        a
    }

    /// Credits counted twice or lost: every broken invariant, counted.
    pub fn faults(&self) -> usize {
        self.unbalanced.len()
            + self.negative.len()
            + self.paid_twice.len()
            + self.settled_twice.len()
            + usize::from(self.charged != self.paid + self.fee)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_read_from_an_object_only() {
        let l: AccountLimits =
            serde_json::from_str(r#"{"max_in_flight": 2, "spending_cap": null}"#).unwrap();
        assert_eq!(l.max_in_flight, Some(2));
        assert_eq!(
            serde_json::from_str::<AccountLimits>("{}").unwrap(),
            AccountLimits::default()
        );
        for bad in [
            "[null, null]",
            "[1]",
            r#"{"nope": 1}"#,
            r#"{"max_in_flight": -1}"#,
        ] {
            assert!(serde_json::from_str::<AccountLimits>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn credits_round_trip_through_text() {
        for (text, micro) in [
            ("12", 12 * MICRO),
            ("12.5", 12_500_000),
            ("0.000001", 1),
            (".5", 500_000),
        ] {
            assert_eq!(parse_credits(text), Ok(micro), "{text}");
        }
        assert_eq!(format_credits(12_500_000), "12.500000");
        assert_eq!(format_credits(-1), "-0.000001");
        for bad in [
            "",
            ".",
            "-1",
            "1e3",
            "0.0000001",
            "1.2.3",
            "99999999999999999999",
        ] {
            assert!(parse_credits(bad).is_err(), "{bad}");
        }
    }
}
