//! The marketplace's accounting: submitters pay for validated work, nodes are paid for it, and
//! every movement is a posting of one double-entry ledger.
//!
//! # Accounts
//! `submitter:{name}` (what a submitter can spend), `escrow:{task}` (what is reserved for one
//! top-level task), `node:{id}` (what a node earned), `fee` (the network's share) and `mint`
//! (where grants come from; the only account that goes below zero).
//!
//! # Transactions
//! Each is a set of [`Posting`]s that sum to zero, written in the same database transaction as
//! the state change that causes it, under an id that names its cause, so that a transaction
//! written twice is written once (the ledger's `(txn, account, kind)` is unique):
//! - `opening:{name}` and `grant:{uuid}`: `mint` → `submitter:{name}`;
//! - `reserve:{task}` at submission: `submitter:{name}` → `escrow:{task}`, the task's
//!   [`TaskCost::estimated`](ambient_protocol::TaskCost);
//! - `settle:{task}` when a task (or a shard of a computation) ends: its charge leaves the escrow
//!   (`charge`), split between the nodes whose answers were valid (`pay`) and `fee`; a top-level
//!   task's settlement then returns what is left of the escrow to its submitter (`release`).
//!
//! What is charged: for each valid replica, up to the `min_nodes` the submitter asked for,
//! [`Prices::replica`] of the work the replicas agreed on (wasm fuel, inference MACs,
//! constraints, FL steps), never more than what is left of the reservation. A task that fails,
//! expires or is cancelled is charged nothing: even a failure every replica agreed on (a trap,
//! fuel run out) costs its submitter nothing and earns its nodes reputation, not credits. The
//! shards of a computation are settled one by one, as they complete, so the nodes of shards that
//! completed before the computation failed are paid (and their submitter charged) for them.
//!
//! # Who writes
//! Only the scheduler (on the one coordinator that leads) moves credits, through [`Book`], its
//! in-memory view of what it needs to decide (balances, escrows, spending, limits and the rate
//! limit's buckets), restored from the ledger when it starts ([`Snapshot`]). The ledger is the
//! truth; the book is a cache of it that is written through in the same transactions.
//!
//! # Layout
//! - this module: [`Book`], [`Posting`], [`CreditRefusal`], a node's [`Earnings`];
//! - [`prices`]: the unit, the reference rates, what a replica costs;
//! - [`keys`]: account names and the API keys made at run time;
//! - [`rate`]: submissions per second.

pub mod keys;
pub mod prices;
pub mod rate;

use std::collections::{HashMap, HashSet};

use ambient_protocol::credits::{AccountLimits, NodeCredits, format_credits};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use prices::{Prices, Units};

/// Seconds after which a node's recent average credit counts half (BOINC's one week).
const RAC_HALF_LIFE_SEC: f64 = 7.0 * 86_400.0;

/// What a posting is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PostingKind {
    /// Minted into a submitter.
    Grant,
    /// Moved from a submitter into a task's escrow.
    Reserve,
    /// Taken out of escrow for work done.
    Charge,
    /// Paid to a node.
    Pay,
    /// The network's share.
    Fee,
    /// Returned from escrow to its submitter.
    Release,
}

impl PostingKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            PostingKind::Grant => "grant",
            PostingKind::Reserve => "reserve",
            PostingKind::Charge => "charge",
            PostingKind::Pay => "pay",
            PostingKind::Fee => "fee",
            PostingKind::Release => "release",
        }
    }
}

/// One posting of the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posting {
    /// The transaction, e.g. `settle:{task}`.
    pub txn: String,
    /// The account.
    pub account: String,
    /// µcredits in (positive) or out (negative).
    pub amount: i64,
    /// What it is.
    pub kind: PostingKind,
    /// The submitter the transaction is about (every posting of a submitter's grant, reserve
    /// and settlement carries it, so its ledger is one index away).
    pub owner: String,
    /// The task, if any (for a shard's settlement, the shard).
    pub task_id: Option<Uuid>,
    /// For a person.
    pub memo: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// The account names.
pub fn submitter_account(name: &str) -> String {
    format!("submitter:{name}")
}

/// A node's account.
pub fn node_account(node: &str) -> String {
    format!("node:{node}")
}

/// A top-level task's escrow.
pub fn escrow_account(task: Uuid) -> String {
    format!("escrow:{task}")
}

/// Why a submission cannot be paid for, or its account takes no more now.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CreditRefusal {
    /// The balance does not cover the reservation.
    #[error(
        "insufficient credits: this task reserves {} credits and the balance is {}",
        format_credits(*needed),
        format_credits(*balance)
    )]
    Insufficient {
        /// The reservation.
        needed: i64,
        /// The balance.
        balance: i64,
    },
    /// The reservation would take the account past its spending cap.
    #[error(
        "spending cap reached: {} spent and {} reserved of a cap of {}; this task reserves {}",
        format_credits(*spent),
        format_credits(*reserved),
        format_credits(*cap),
        format_credits(*needed)
    )]
    SpendingCap {
        /// The cap.
        cap: i64,
        /// Spent so far.
        spent: i64,
        /// Reserved now.
        reserved: i64,
        /// This task's reservation.
        needed: i64,
    },
    /// The account has as many tasks in flight as it may.
    #[error("{max} tasks in flight already, the most this account may have; wait for one to end")]
    InFlight {
        /// The limit.
        max: u32,
    },
    /// The account submits faster than its limit allows.
    #[error("more than {per_second} submissions a second; retry in {retry_after} s")]
    RateLimited {
        /// The limit.
        per_second: f64,
        /// Seconds until one more is allowed.
        retry_after: u64,
    },
}

/// A top-level task's escrow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Escrow {
    /// Its submitter.
    pub owner: String,
    /// What was reserved.
    pub reserved: i64,
    /// What is left.
    pub left: i64,
}

/// What one settlement moved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settlement {
    /// Taken out of escrow for work.
    pub charged: i64,
    /// Paid to each node.
    pub paid: Vec<(String, i64)>,
    /// Returned to the submitter (when the escrow closed).
    pub released: i64,
}

/// What the book restarts from, read off the ledger and the accounts table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// `submitter:{name}` balances, by name.
    pub balances: HashMap<String, i64>,
    /// Charged so far, by submitter.
    pub spent: HashMap<String, i64>,
    /// Escrows of top-level tasks not yet settled.
    pub escrows: HashMap<Uuid, Escrow>,
    /// Limits of accounts created at run time.
    pub limits: HashMap<String, AccountLimits>,
    /// Submitters that had their opening grant.
    pub opened: HashSet<String>,
}

/// The scheduler's view of the credits it moves.
#[derive(Debug, Default)]
pub struct Book {
    prices: Prices,
    state: Snapshot,
    /// Reserved now, by submitter.
    reserved: HashMap<String, i64>,
    /// Escrows held, by submitter.
    in_flight: HashMap<String, u32>,
    /// Submissions per second, by submitter.
    rate: rate::RateLimiter,
    postings: Vec<Posting>,
}

impl Book {
    /// A book restored from the ledger.
    pub fn new(prices: Prices, state: Snapshot) -> Book {
        let mut book = Book {
            prices,
            state,
            ..Book::default()
        };
        for e in book.state.escrows.values() {
            *book.reserved.entry(e.owner.clone()).or_default() += e.left;
            *book.in_flight.entry(e.owner.clone()).or_default() += 1;
        }
        book
    }

    /// The prices.
    pub fn prices(&self) -> &Prices {
        &self.prices
    }

    /// A submitter's balance.
    pub fn balance(&self, name: &str) -> i64 {
        self.state.balances.get(name).copied().unwrap_or(0)
    }

    /// The escrow of top-level task `task`, while it has one.
    pub fn escrow(&self, task: &Uuid) -> Option<&Escrow> {
        self.state.escrows.get(task)
    }

    /// Sets an account's limits (an admin changed them).
    pub fn set_limits(&mut self, name: String, limits: AccountLimits) {
        self.state.limits.insert(name, limits);
    }

    /// Postings since the last take, to write with the scheduler's state.
    pub fn take_postings(&mut self) -> Vec<Posting> {
        std::mem::take(&mut self.postings)
    }

    /// Mints `amount` into `name` under transaction `txn`.
    pub fn grant(
        &mut self,
        txn: String,
        name: &str,
        amount: i64,
        memo: String,
        now: DateTime<Utc>,
    ) {
        *self.state.balances.entry(name.to_string()).or_default() += amount;
        self.post(
            &txn,
            "mint".into(),
            -amount,
            PostingKind::Grant,
            name,
            None,
            &memo,
            now,
        );
        self.post(
            &txn,
            submitter_account(name),
            amount,
            PostingKind::Grant,
            name,
            None,
            &memo,
            now,
        );
    }

    /// Grants `name` its opening `amount`, unless it had it (transaction `opening:{name}`).
    pub fn open(&mut self, name: &str, amount: i64, now: DateTime<Utc>) {
        if amount > 0 && self.state.opened.insert(name.to_string()) {
            let memo = "opening grant".to_string();
            self.grant(format!("opening:{name}"), name, amount, memo, now);
        }
    }

    /// Reserves `amount` of `name`'s credits for top-level task `task`, within its limits (a
    /// submission refused for want of credits still counts towards its rate).
    pub fn reserve(
        &mut self,
        task: Uuid,
        name: &str,
        amount: i64,
        now: DateTime<Utc>,
    ) -> Result<(), CreditRefusal> {
        let limits = self.state.limits.get(name).copied().unwrap_or_default();
        if let Some(per_second) = limits.max_per_second {
            self.rate
                .take(name, per_second, now)
                .map_err(|retry_after| CreditRefusal::RateLimited {
                    per_second,
                    retry_after,
                })?;
        }
        let in_flight = self.in_flight.get(name).copied().unwrap_or(0);
        if let Some(max) = limits.max_in_flight
            && in_flight >= max
        {
            return Err(CreditRefusal::InFlight { max });
        }
        let reserved = self.reserved.get(name).copied().unwrap_or(0);
        let spent = self.state.spent.get(name).copied().unwrap_or(0);
        if let Some(cap) = limits.spending_cap
            && spent.saturating_add(reserved).saturating_add(amount) > cap
        {
            return Err(CreditRefusal::SpendingCap {
                cap,
                spent,
                reserved,
                needed: amount,
            });
        }
        let balance = self.balance(name);
        if balance < amount {
            return Err(CreditRefusal::Insufficient {
                needed: amount,
                balance,
            });
        }
        self.state
            .balances
            .insert(name.to_string(), balance - amount);
        *self.reserved.entry(name.to_string()).or_default() += amount;
        *self.in_flight.entry(name.to_string()).or_default() += 1;
        self.state.escrows.insert(
            task,
            Escrow {
                owner: name.to_string(),
                reserved: amount,
                left: amount,
            },
        );
        let txn = format!("reserve:{task}");
        let owner = name;
        self.post(
            &txn,
            submitter_account(name),
            -amount,
            PostingKind::Reserve,
            owner,
            Some(task),
            "reserved",
            now,
        );
        self.post(
            &txn,
            escrow_account(task),
            amount,
            PostingKind::Reserve,
            owner,
            Some(task),
            "reserved",
            now,
        );
        Ok(())
    }

    /// Settles `task` (a top-level task, or a shard of the computation `escrow_task`): charges
    /// what each node's valid work costs (`charges`, capped all together by what is left in
    /// escrow, scaled down alike when they exceed it) and pays each node its share. When
    /// `close`, what is left of the escrow then returns to its submitter.
    pub fn settle(
        &mut self,
        task: Uuid,
        escrow_task: Uuid,
        charges: &[(String, i64)],
        close: bool,
        now: DateTime<Utc>,
    ) -> Settlement {
        let mut out = Settlement::default();
        let Some(escrow) = self.state.escrows.get_mut(&escrow_task) else {
            return out;
        };
        let owner = escrow.owner.clone();
        let asked = charges.iter().fold(0i64, |a, (_, c)| a.saturating_add(*c));
        let charges: Vec<(String, i64)> = if asked > escrow.left {
            let (left, asked) = (escrow.left as i128, asked as i128);
            charges
                .iter()
                .map(|(n, c)| (n.clone(), (*c as i128 * left / asked) as i64))
                .collect()
        } else {
            charges.to_vec()
        };
        out.charged = charges.iter().map(|(_, c)| c).sum();
        escrow.left -= out.charged;
        if close {
            out.released = escrow.left;
            self.state.escrows.remove(&escrow_task);
        }
        let txn = format!("settle:{task}");
        let from = escrow_account(escrow_task);
        let task_id = Some(task);
        if out.charged > 0 {
            *self.state.spent.entry(owner.clone()).or_default() += out.charged;
            *self.reserved.entry(owner.clone()).or_default() -= out.charged;
            self.post(
                &txn,
                from.clone(),
                -out.charged,
                PostingKind::Charge,
                &owner,
                task_id,
                "charged for valid work",
                now,
            );
            let mut fee = out.charged;
            for (node, charge) in &charges {
                let pay = self.prices.node_share(*charge);
                if pay > 0 {
                    fee -= pay;
                    self.post(
                        &txn,
                        node_account(node),
                        pay,
                        PostingKind::Pay,
                        &owner,
                        task_id,
                        "paid for valid work",
                        now,
                    );
                    out.paid.push((node.clone(), pay));
                }
            }
            if fee > 0 {
                self.post(
                    &txn,
                    "fee".into(),
                    fee,
                    PostingKind::Fee,
                    &owner,
                    task_id,
                    "network fee",
                    now,
                );
            }
        }
        if close {
            *self.reserved.entry(owner.clone()).or_default() -= out.released;
            if let Some(n) = self.in_flight.get_mut(&owner) {
                *n = n.saturating_sub(1);
            }
            *self.state.balances.entry(owner.clone()).or_default() += out.released;
            if out.released > 0 {
                self.post(
                    &txn,
                    from,
                    -out.released,
                    PostingKind::Release,
                    &owner,
                    task_id,
                    "released",
                    now,
                );
                self.post(
                    &txn,
                    submitter_account(&owner),
                    out.released,
                    PostingKind::Release,
                    &owner,
                    task_id,
                    "released",
                    now,
                );
            }
        }
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn post(
        &mut self,
        txn: &str,
        account: String,
        amount: i64,
        kind: PostingKind,
        owner: &str,
        task_id: Option<Uuid>,
        memo: &str,
        at: DateTime<Utc>,
    ) {
        self.postings.push(Posting {
            txn: txn.to_string(),
            account,
            amount,
            kind,
            owner: owner.to_string(),
            task_id,
            memo: memo.to_string(),
            at,
        });
    }
}

/// What a node earned, kept on its node record: the total, and BOINC's recent average credit
/// (µcredits per day, decaying with a one-week half-life).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Earnings {
    /// µcredits, all time.
    pub total: i64,
    /// Recent average credit at `rac_at`.
    pub rac: f64,
    /// When `rac` was last brought up to date.
    pub rac_at: Option<DateTime<Utc>>,
    /// What it was paid on the (UTC) day of `rac_at`.
    #[serde(default)]
    pub day: i64,
}

impl Earnings {
    /// Adds a payment at `now` (BOINC's `update_average`).
    pub fn pay(&mut self, amount: i64, now: DateTime<Utc>) {
        self.total += amount;
        if self.rac_at.map(|at| at.date_naive()) != Some(now.date_naive()) {
            self.day = 0;
        }
        self.day += amount;
        let work = amount as f64;
        match self.rac_at {
            None => self.rac = work * std::f64::consts::LN_2 * 86_400.0 / RAC_HALF_LIFE_SEC,
            Some(at) => {
                let dt = (now - at).num_milliseconds().max(0) as f64 / 1000.0;
                let weight = (-dt * std::f64::consts::LN_2 / RAC_HALF_LIFE_SEC).exp();
                self.rac *= weight;
                if 1.0 - weight > 1e-6 {
                    self.rac += (1.0 - weight) * work / (dt / 86_400.0);
                } else {
                    self.rac += work * std::f64::consts::LN_2 * 86_400.0 / RAC_HALF_LIFE_SEC;
                }
            }
        }
        self.rac_at = Some(now);
    }

    /// As the API shows it, decayed to `now`.
    pub fn info(&self, now: DateTime<Utc>) -> NodeCredits {
        let decayed = match self.rac_at {
            Some(at) => {
                let dt = (now - at).num_milliseconds().max(0) as f64 / 1000.0;
                self.rac * (-dt * std::f64::consts::LN_2 / RAC_HALF_LIFE_SEC).exp()
            }
            None => 0.0,
        };
        let today = self.rac_at.map(|at| at.date_naive()) == Some(now.date_naive());
        NodeCredits {
            total: self.total,
            today: if today { self.day } else { 0 },
            recent_average: (decayed * 1000.0).round() / 1000.0,
        }
    }
}

#[cfg(test)]
mod tests;
