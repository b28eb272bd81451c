//! An audit of the credits ledger, as read over the admin API (`GET /api/v1/admin/ledger`) or
//! straight from the database: the invariants every scenario must keep, and what breaks them.

use std::collections::{BTreeMap, BTreeSet};

use ambient_protocol::credits::LedgerEntry;

/// What the ledger says, and what is wrong with it.
#[derive(Debug, Default, serde::Serialize)]
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

/// The whole ledger, over the admin API of the coordinator at `api_url`.
pub async fn read_all(api_url: &str, admin_key: &str) -> anyhow::Result<Vec<LedgerEntry>> {
    let http = reqwest::Client::new();
    let mut out = Vec::new();
    let mut after = 0i64;
    loop {
        let page: ambient_protocol::credits::LedgerPage = http
            .get(format!(
                "{api_url}/api/v1/admin/ledger?after={after}&limit=1000"
            ))
            .bearer_auth(admin_key)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        out.extend(page.entries);
        match page.next_after {
            Some(next) => after = next,
            None => return Ok(out),
        }
    }
}
