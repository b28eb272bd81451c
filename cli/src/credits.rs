//! Credits on the command line: `ambient account …` and `ambient key …` (admin key), and
//! `ambient balance`, `ledger`, `prices` and `leaderboard` (submitter key). Amounts are typed and
//! shown as credits with six decimals; the API carries them as integer µcredits.
//!
//! The pure parts (amount and limit flags, tables) are here so they are unit-tested; the
//! requests are [`Client`] methods.

use ambient_protocol::credits::{
    AccountInfo, AccountLimits, KeyInfo, LeaderboardRow, LedgerEntry, LedgerPage, PriceList,
    format_credits, parse_credits,
};

use crate::client::{Client, ClientError};

/// The most entries the API gives in one page.
pub const MAX_PAGE: u32 = 1000;

/// Reads an amount of credits (`12`, `12.5`, `0.000001`) into µcredits, for clap.
pub fn parse_amount(text: &str) -> Result<i64, String> {
    parse_credits(text)
}

/// Reads an amount of credits that must be more than zero (a grant), for clap.
pub fn parse_positive_amount(text: &str) -> Result<i64, String> {
    match parse_credits(text)? {
        0 => Err(format!("{text:?}: a grant must be more than 0 credits")),
        n => Ok(n),
    }
}

/// One limit flag: a value, or `none` to lift the limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Limit<T> {
    /// Limit to this.
    Set(T),
    /// No limit.
    Lift,
}

impl<T> Limit<T> {
    fn into_option(self) -> Option<T> {
        match self {
            Limit::Set(v) => Some(v),
            Limit::Lift => None,
        }
    }
}

fn lift<T>(text: &str, parse: impl FnOnce(&str) -> Result<T, String>) -> Result<Limit<T>, String> {
    if text.trim().eq_ignore_ascii_case("none") {
        Ok(Limit::Lift)
    } else {
        parse(text).map(Limit::Set)
    }
}

/// `--max-in-flight`: a count of tasks, or `none`.
pub fn parse_in_flight(text: &str) -> Result<Limit<u32>, String> {
    lift(text, |t| {
        t.trim()
            .parse()
            .map_err(|_| format!("{t:?}: expected a number of tasks (or none)"))
    })
}

/// `--max-per-second`: submissions per second above 0, or `none`.
pub fn parse_per_second(text: &str) -> Result<Limit<f64>, String> {
    lift(text, |t| match t.trim().parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!(
            "{t:?}: expected submissions per second above 0, like 5 or 0.5 (or none)"
        )),
    })
}

/// `--spending-cap`: credits, or `none`.
pub fn parse_cap(text: &str) -> Result<Limit<i64>, String> {
    lift(text, parse_credits)
}

/// The limit flags of `ambient account create` and `ambient account limits`. A flag not given
/// leaves that limit as it was; `none` lifts it.
#[derive(Debug, Clone, Default, PartialEq, clap::Args)]
pub struct LimitFlags {
    /// Top-level tasks it may have running at once (`none`: no limit).
    #[arg(long, value_name = "N", value_parser = parse_in_flight, allow_negative_numbers = true)]
    pub max_in_flight: Option<Limit<u32>>,
    /// Submissions per second, with a burst of as many (`none`: no limit).
    #[arg(long, value_name = "RATE", value_parser = parse_per_second)]
    pub max_per_second: Option<Limit<f64>>,
    /// The most it may ever spend, in credits, reservations included (`none`: no limit).
    #[arg(long, value_name = "CREDITS", value_parser = parse_cap, allow_negative_numbers = true)]
    pub spending_cap: Option<Limit<i64>>,
}

impl LimitFlags {
    /// Whether no flag was given.
    pub fn is_empty(&self) -> bool {
        self.max_in_flight.is_none() && self.max_per_second.is_none() && self.spending_cap.is_none()
    }

    /// `current` with the given flags applied.
    pub fn apply(&self, current: AccountLimits) -> AccountLimits {
        AccountLimits {
            max_in_flight: self
                .max_in_flight
                .map_or(current.max_in_flight, Limit::into_option),
            max_per_second: self
                .max_per_second
                .map_or(current.max_per_second, Limit::into_option),
            spending_cap: self
                .spending_cap
                .map_or(current.spending_cap, Limit::into_option),
        }
    }
}

/// Limits as one cell: `in-flight 5, 2/s, cap 100.000000`, or `none`.
pub fn limits_text(l: &AccountLimits) -> String {
    let mut parts = Vec::new();
    if let Some(n) = l.max_in_flight {
        parts.push(format!("in-flight {n}"));
    }
    if let Some(r) = l.max_per_second {
        parts.push(format!("{r}/s"));
    }
    if let Some(c) = l.spending_cap {
        parts.push(format!("cap {}", format_credits(c)));
    }
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

/// One account, a line a figure (`ambient balance`, and after `account grant|limits`).
pub fn account_summary(a: &AccountInfo) -> String {
    let mut out = format!(
        "account   {}\nbalance   {} credits\nreserved  {}\nspent     {}\nearned    {}\nlimits    {}\n",
        a.account,
        format_credits(a.balance),
        format_credits(a.reserved),
        format_credits(a.spent),
        format_credits(a.earned),
        limits_text(&a.limits)
    );
    if !a.nodes.is_empty() {
        out.push_str(&format!("nodes     {}\n", a.nodes.join(", ")));
    }
    out
}

/// The width of a column: its longest cell, and at least `min` (the heading's).
fn width<T>(rows: &[T], cell: impl Fn(&T) -> usize, min: usize) -> usize {
    rows.iter().map(cell).max().unwrap_or(0).max(min)
}

/// The accounts table of `ambient account list`.
pub fn account_table(accounts: &[AccountInfo]) -> String {
    let w = width(accounts, |a| a.account.len(), 7);
    let mut out = format!(
        "{:<w$}  {:>16}  {:>16}  {:>16}  {:>16}  limits\n",
        "account", "balance", "reserved", "spent", "earned"
    );
    for a in accounts {
        out.push_str(&format!(
            "{:<w$}  {:>16}  {:>16}  {:>16}  {:>16}  {}\n",
            a.account,
            format_credits(a.balance),
            format_credits(a.reserved),
            format_credits(a.spent),
            format_credits(a.earned),
            limits_text(&a.limits)
        ));
    }
    out
}

/// The API keys table of `ambient key list`.
pub fn key_table(keys: &[KeyInfo]) -> String {
    let w = width(keys, |k| k.account.len(), 7);
    let mut out = format!(
        "{:<20}  {:<w$}  {:<20}  state\n",
        "key", "account", "created"
    );
    for k in keys {
        out.push_str(&format!(
            "{:<20}  {:<w$}  {:<20}  {}\n",
            k.key_id,
            k.account,
            k.created_at.format("%Y-%m-%d %H:%M UTC"),
            if k.revoked { "revoked" } else { "valid" }
        ));
    }
    out
}

/// An amount with its sign, `+1.000000` or `-0.500000`.
pub fn signed_credits(micro: i64) -> String {
    if micro > 0 {
        format!("+{}", format_credits(micro))
    } else {
        format_credits(micro)
    }
}

/// The ledger table of `ambient ledger` (and the demo's).
pub fn ledger_table(entries: &[LedgerEntry]) -> String {
    let wt = width(entries, |e| e.txn.len(), 3);
    let wa = width(entries, |e| e.account.len(), 7);
    let mut out = format!(
        "{:>6}  {:<19}  {:<wt$}  {:<wa$}  {:>15}  memo\n",
        "seq", "time (UTC)", "txn", "account", "amount"
    );
    for e in entries {
        out.push_str(&format!(
            "{:>6}  {:<19}  {:<wt$}  {:<wa$}  {:>15}  {}\n",
            e.seq,
            e.at.format("%Y-%m-%d %H:%M:%S"),
            e.txn,
            e.account,
            signed_credits(e.amount),
            e.memo
        ));
    }
    out
}

/// The price list of `ambient prices`.
pub fn price_table(p: &PriceList) -> String {
    let mut out = format!(
        "1 {} = 1 hour of {}; nodes are paid {} % of each charge.\n",
        p.unit, p.reference, p.node_share_percent
    );
    let wk = width(&p.kinds, |k| k.task_type.as_str().len(), 4);
    let wu = width(&p.kinds, |k| k.unit.len(), 4);
    out.push_str(&format!(
        "{:<wk$}  {:<wu$}  {:>16}  {:>14}  reservation\n",
        "kind", "unit", "units per credit", "per replica"
    ));
    for k in &p.kinds {
        out.push_str(&format!(
            "{:<wk$}  {:<wu$}  {:>16}  {:>14}  {}\n",
            k.task_type.to_string(),
            k.unit,
            k.units_per_credit,
            format_credits(k.per_replica),
            k.estimate
        ));
    }
    out
}

/// The table of `ambient leaderboard`: best first, as the API ranks them.
pub fn leaderboard_table(rows: &[LeaderboardRow]) -> String {
    let w = width(rows, |r| r.node_id.len(), 4);
    let mut out = format!(
        "{:>4}  {:<w$}  {:>16}  {:>16}\n",
        "rank", "node", "total", "recent per day"
    );
    for (i, r) in rows.iter().enumerate() {
        out.push_str(&format!(
            "{:>4}  {:<w$}  {:>16}  {:>16}\n",
            i + 1,
            r.node_id,
            format_credits(r.credits.total),
            format_credits(r.credits.recent_average.round() as i64)
        ));
    }
    out
}

/// Which ledger to read.
#[derive(Debug, Clone, Copy)]
pub enum Ledger<'a> {
    /// The caller's (`GET /api/v1/account/ledger`, submitter key).
    Mine,
    /// The whole ledger, or one account's postings (`GET /api/v1/admin/ledger`, admin key).
    Admin(Option<&'a str>),
}

/// A page of `which` after `after`; with `all`, every page from there to the end, as one page
/// whose `next_after` is `null`.
pub async fn ledger(
    client: &Client,
    which: Ledger<'_>,
    after: Option<i64>,
    limit: Option<u32>,
    all: bool,
) -> Result<LedgerPage, ClientError> {
    let fetch = |after, limit| async move {
        match which {
            Ledger::Mine => client.ledger(after, limit).await,
            Ledger::Admin(account) => client.admin_ledger(account, after, limit).await,
        }
    };
    if !all {
        return fetch(after, limit).await;
    }
    let limit = Some(limit.unwrap_or(MAX_PAGE));
    let mut entries = Vec::new();
    let mut next = after;
    loop {
        let page = fetch(next, limit).await?;
        entries.extend(page.entries);
        match page.next_after {
            // A page that ends where it started would loop forever.
            Some(n) if Some(n) != next => next = Some(n),
            _ => break,
        }
    }
    Ok(LedgerPage {
        entries,
        next_after: None,
    })
}

#[cfg(test)]
mod tests {
    use ambient_protocol::TaskType;
    use ambient_protocol::credits::{KindPrice, NodeCredits};
    use chrono::TimeZone as _;
    use clap::Parser as _;

    use super::*;

    #[derive(clap::Parser)]
    struct Flags {
        #[command(flatten)]
        limits: LimitFlags,
    }

    fn flags(args: &[&str]) -> Result<LimitFlags, clap::Error> {
        Flags::try_parse_from(std::iter::once("x").chain(args.iter().copied())).map(|f| f.limits)
    }

    #[test]
    fn amounts_are_credits() {
        assert_eq!(parse_amount("12.5"), Ok(12_500_000));
        assert_eq!(parse_amount("0"), Ok(0));
        assert!(parse_amount("-1").is_err());
        assert!(parse_amount("ten").is_err());
        assert_eq!(parse_positive_amount("0.000001"), Ok(1));
        assert!(parse_positive_amount("0").is_err());
        assert!(parse_positive_amount("0.0000001").is_err());
    }

    #[test]
    fn limit_flags_make_limits() {
        let f = flags(&[
            "--max-in-flight",
            "5",
            "--max-per-second",
            "0.5",
            "--spending-cap",
            "100.25",
        ])
        .unwrap();
        assert_eq!(
            f.apply(AccountLimits::default()),
            AccountLimits {
                max_in_flight: Some(5),
                max_per_second: Some(0.5),
                spending_cap: Some(100_250_000),
            }
        );
        let none = flags(&[]).unwrap();
        assert!(none.is_empty());
        assert_eq!(
            none.apply(AccountLimits::default()),
            AccountLimits::default()
        );
    }

    #[test]
    fn limit_flags_change_only_what_they_name() {
        let current = AccountLimits {
            max_in_flight: Some(5),
            max_per_second: Some(2.0),
            spending_cap: Some(7),
        };
        let f = flags(&["--spending-cap", "1", "--max-per-second", "none"]).unwrap();
        assert!(!f.is_empty());
        assert_eq!(
            f.apply(current),
            AccountLimits {
                max_in_flight: Some(5),
                max_per_second: None,
                spending_cap: Some(1_000_000),
            }
        );
    }

    #[test]
    fn bad_limits_are_clap_errors() {
        for args in [
            ["--max-in-flight", "-1"],
            ["--max-in-flight", "lots"],
            ["--max-per-second", "0"],
            ["--max-per-second", "inf"],
            ["--spending-cap", "1.0000001"],
            ["--spending-cap", "-3"],
        ] {
            let e = flags(&args).unwrap_err();
            assert_eq!(
                e.kind(),
                clap::error::ErrorKind::ValueValidation,
                "{args:?}"
            );
        }
    }

    fn account(name: &str, limits: AccountLimits) -> AccountInfo {
        AccountInfo {
            account: name.into(),
            balance: 998_500_000,
            reserved: 250_000,
            spent: 1_250_000,
            earned: 1000 * 1_000_000,
            nodes: Vec::new(),
            limits,
            created_at: None,
        }
    }

    #[test]
    fn account_table_shows_credits_and_limits() {
        let table = account_table(&[
            account("local", AccountLimits::default()),
            account(
                "alice-long-name",
                AccountLimits {
                    max_in_flight: Some(3),
                    max_per_second: None,
                    spending_cap: Some(50_000_000),
                },
            ),
        ]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("account        "), "{table}");
        assert!(lines[0].ends_with("limits"));
        assert_eq!(
            lines[1],
            "local                  998.500000          0.250000          1.250000       \
             1000.000000  none"
        );
        assert!(lines[2].ends_with("in-flight 3, cap 50.000000"), "{table}");
        // The columns line up.
        assert_eq!(lines[1].find("998.5"), lines[2].find("998.5"));
    }

    #[test]
    fn account_summary_lists_every_figure() {
        let s = account_summary(&account("local", AccountLimits::default()));
        assert_eq!(
            s,
            "account   local\nbalance   998.500000 credits\nreserved  0.250000\n\
             spent     1.250000\nearned    1000.000000\nlimits    none\n"
        );
    }

    #[test]
    fn ledger_table_signs_amounts() {
        let at = chrono::Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 5).unwrap();
        let entry = |seq, account: &str, amount, memo: &str| LedgerEntry {
            seq,
            txn: "opening:local".into(),
            at,
            account: account.into(),
            amount,
            kind: "grant".into(),
            task_id: None,
            memo: memo.into(),
        };
        let table = ledger_table(&[
            entry(1, "mint", -1_000_000_000, "opening grant"),
            entry(2, "submitter:local", 1_000_000_000, "opening grant"),
        ]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0],
            "   seq  time (UTC)           txn            account                   amount  memo"
        );
        assert_eq!(
            lines[1],
            "     1  2025-03-01 12:00:05  opening:local  mint                -1000.000000  opening grant"
        );
        assert_eq!(
            lines[2],
            "     2  2025-03-01 12:00:05  opening:local  submitter:local     +1000.000000  opening grant"
        );
        assert_eq!(ledger_table(&[]).lines().count(), 1);
    }

    #[test]
    fn key_table_marks_revoked_keys() {
        let created_at = chrono::Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap();
        let table = key_table(&[KeyInfo {
            key_id: "key_0011223344556677".into(),
            account: "alice".into(),
            created_at,
            revoked: true,
        }]);
        assert_eq!(
            table.lines().nth(1),
            Some("key_0011223344556677  alice    2025-03-01 12:00 UTC  revoked")
        );
    }

    #[test]
    fn price_and_leaderboard_tables() {
        let prices = price_table(&PriceList {
            unit: "credit".into(),
            microcredits_per_credit: 1_000_000,
            reference: "one core".into(),
            node_share_percent: 90,
            kinds: vec![KindPrice {
                task_type: TaskType::WasmExecution,
                unit: "fuel".into(),
                units_per_credit: 900_000_000_000,
                per_replica: 100,
                estimate: "min_nodes × …".into(),
            }],
        });
        assert!(prices.starts_with("1 credit = 1 hour of one core; nodes are paid 90 %"));
        assert!(
            prices
                .contains("wasm_execution  fuel      900000000000        0.000100  min_nodes × …"),
            "{prices}"
        );
        let board = leaderboard_table(&[LeaderboardRow {
            node_id: "node-1".into(),
            credits: NodeCredits {
                total: 2_500_000,
                today: 0,
                recent_average: 1_234_567.6,
            },
        }]);
        assert_eq!(
            board.lines().nth(1),
            Some("   1  node-1          2.500000          1.234568")
        );
    }
}
