//! The book's rules, and its invariants over random sequences.

use super::*;

fn t(s: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(1_700_000_000 + s, 0).unwrap()
}

/// The postings as the ledger would list them.
fn entries(postings: &[Posting]) -> Vec<ambient_protocol::credits::LedgerEntry> {
    postings
        .iter()
        .enumerate()
        .map(|(i, p)| ambient_protocol::credits::LedgerEntry {
            seq: i as i64 + 1,
            txn: p.txn.clone(),
            at: p.at,
            account: p.account.clone(),
            amount: p.amount,
            kind: p.kind.as_str().into(),
            task_id: p.task_id,
            memo: p.memo.clone(),
        })
        .collect()
}

/// Every invariant of [`ambient_protocol::credits::Audit`], and no zero postings.
pub(crate) fn check_invariants(postings: &[Posting]) {
    assert!(postings.iter().all(|p| p.amount != 0), "a zero posting");
    let audit = ambient_protocol::credits::Audit::of(&entries(postings));
    assert_eq!(audit.faults(), 0, "{audit:?}");
}

#[test]
fn a_task_is_reserved_charged_paid_and_released() {
    let mut b = Book::new(Prices::default(), Snapshot::default());
    b.grant("grant:1".into(), "alice", 10_000, "test".into(), t(0));
    let task = Uuid::new_v4();
    b.reserve(task, "alice", 3_000, t(1)).unwrap();
    assert_eq!(b.balance("alice"), 7_000);
    let s = b.settle(
        task,
        task,
        &[("n1".into(), 1_000), ("n2".into(), 1_000)],
        true,
        t(2),
    );
    assert_eq!(s.charged, 2_000);
    assert_eq!(s.paid, vec![("n1".into(), 900), ("n2".into(), 900)]);
    assert_eq!(s.released, 1_000);
    assert_eq!(b.balance("alice"), 8_000);
    assert!(b.escrow(&task).is_none());
    let postings = b.take_postings();
    check_invariants(&postings);
    let fee: i64 = postings
        .iter()
        .filter(|p| p.account == "fee")
        .map(|p| p.amount)
        .sum();
    assert_eq!(fee, 200);
}

#[test]
fn refusals_name_the_figures_and_move_nothing() {
    let mut b = Book::new(Prices::default(), Snapshot::default());
    b.grant("g".into(), "bob", 500, String::new(), t(0));
    let e = b.reserve(Uuid::new_v4(), "bob", 600, t(1)).unwrap_err();
    assert_eq!(
        e,
        CreditRefusal::Insufficient {
            needed: 600,
            balance: 500
        }
    );
    assert!(e.to_string().contains("0.000600"), "{e}");
    b.set_limits(
        "bob".into(),
        AccountLimits {
            max_in_flight: Some(1),
            spending_cap: Some(300),
            max_per_second: None,
        },
    );
    let first = Uuid::new_v4();
    b.reserve(first, "bob", 200, t(2)).unwrap();
    assert_eq!(
        b.reserve(Uuid::new_v4(), "bob", 10, t(3)),
        Err(CreditRefusal::InFlight { max: 1 })
    );
    b.settle(first, first, &[("n".into(), 150)], true, t(4));
    assert!(matches!(
        b.reserve(Uuid::new_v4(), "bob", 200, t(5)),
        Err(CreditRefusal::SpendingCap { spent: 150, .. })
    ));
    assert_eq!(b.balance("bob"), 350);
    check_invariants(&b.take_postings());
}

#[test]
fn charges_past_the_escrow_are_scaled_down_to_it() {
    let mut b = Book::new(Prices::default(), Snapshot::default());
    b.grant("g".into(), "c", 1_000, String::new(), t(0));
    let task = Uuid::new_v4();
    b.reserve(task, "c", 100, t(0)).unwrap();
    let s = b.settle(
        task,
        task,
        &[("a".into(), 150), ("b".into(), 50)],
        true,
        t(1),
    );
    assert_eq!(s.charged, 100);
    assert_eq!(s.released, 0);
    check_invariants(&b.take_postings());
}

/// Random sequences of grants, submissions (single and sharded), settlements of shards and
/// tasks that complete, fail or are cancelled, and restarts from what was written (the
/// postings, folded the way the store's snapshot queries fold them): the invariants hold after
/// every step, and a restarted book agrees with the one that went on.
#[test]
fn invariants_hold_over_random_sequences() {
    use rand::{Rng, SeedableRng};
    for seed in 0..200u64 {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut book = Book::new(Prices::default(), Snapshot::default());
        let mut written: Vec<Posting> = Vec::new();
        let mut open: Vec<(Uuid, Vec<Uuid>)> = Vec::new();
        let names = ["a", "b", "c"];
        for step in 0..60 {
            let now = t(step);
            match rng.random_range(0..10) {
                0 => {
                    let name = names[rng.random_range(0..3)];
                    book.grant(
                        format!("grant:{seed}:{step}"),
                        name,
                        rng.random_range(1..5_000),
                        String::new(),
                        now,
                    );
                }
                1..=3 => {
                    let name = names[rng.random_range(0..3)];
                    let task = Uuid::new_v4();
                    let shards = (0..rng.random_range(0..3))
                        .map(|_| Uuid::new_v4())
                        .collect();
                    if book
                        .reserve(task, name, rng.random_range(1..3_000), now)
                        .is_ok()
                    {
                        open.push((task, shards));
                    }
                }
                4..=5 if !open.is_empty() => {
                    // A shard completes, paid from its computation's escrow.
                    let i = rng.random_range(0..open.len());
                    let (task, shards) = &mut open[i];
                    if let Some(shard) = shards.pop() {
                        let charges = [("n1".to_string(), rng.random_range(0..800))];
                        book.settle(shard, *task, &charges, false, now);
                    }
                }
                6..=7 if !open.is_empty() => {
                    // The task ends: completed (valid work charged) or not (nothing charged).
                    let (task, _) = open.swap_remove(rng.random_range(0..open.len()));
                    let charges: Vec<(String, i64)> = if rng.random_bool(0.5) {
                        (0..rng.random_range(1..4))
                            .map(|n| (format!("n{n}"), rng.random_range(0..1_500)))
                            .collect()
                    } else {
                        Vec::new()
                    };
                    book.settle(task, task, &charges, true, now);
                }
                8 => {
                    // A crash: what was written is all there is; the book restarts from it.
                    written.extend(book.take_postings());
                    let before: HashMap<String, i64> = names
                        .iter()
                        .map(|n| (n.to_string(), book.balance(n)))
                        .collect();
                    book = Book::new(Prices::default(), fold(&written));
                    for n in names {
                        assert_eq!(book.balance(n), before[n], "seed {seed}: {n} after restart");
                    }
                    for (task, _) in &open {
                        assert!(book.escrow(task).is_some(), "seed {seed}: escrow lost");
                    }
                }
                _ => {
                    // A retried write: the same postings again are skipped by the ledger.
                    let again = book.take_postings();
                    written.extend(again.iter().cloned());
                    dedup_like_the_ledger(&mut written);
                }
            }
            let mut all = written.clone();
            all.extend(book.postings.iter().cloned());
            check_invariants(&all);
        }
    }
}

/// What the ledger's `UNIQUE (txn, account, kind)` keeps of postings written more than once.
fn dedup_like_the_ledger(postings: &mut Vec<Posting>) {
    let mut seen = std::collections::HashSet::new();
    postings.retain(|p| seen.insert((p.txn.clone(), p.account.clone(), p.kind)));
}

/// The store's snapshot queries, over postings in memory.
fn fold(postings: &[Posting]) -> Snapshot {
    let mut s = Snapshot::default();
    let settled: HashSet<&str> = postings.iter().map(|p| p.txn.as_str()).collect();
    let mut escrows: HashMap<String, Escrow> = HashMap::new();
    for p in postings {
        if p.account.starts_with("submitter:") {
            *s.balances.entry(p.owner.clone()).or_default() += p.amount;
        }
        if p.kind == PostingKind::Charge {
            *s.spent.entry(p.owner.clone()).or_default() -= p.amount;
        }
        if p.txn.starts_with("opening:") {
            s.opened.insert(p.owner.clone());
        }
        if let Some(task) = p.account.strip_prefix("escrow:") {
            let e = escrows.entry(task.to_string()).or_insert(Escrow {
                owner: p.owner.clone(),
                reserved: 0,
                left: 0,
            });
            e.left += p.amount;
            if p.kind == PostingKind::Reserve {
                e.reserved += p.amount;
            }
        }
    }
    for (task, e) in escrows {
        if !settled.contains(format!("settle:{task}").as_str()) {
            s.escrows.insert(Uuid::parse_str(&task).unwrap(), e);
        }
    }
    s
}

#[test]
fn earnings_count_today_and_a_recent_average_that_halves_in_a_week() {
    let mut e = Earnings::default();
    let midnight = DateTime::parse_from_rfc3339("2026-12-01T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    let day = |d: i64, h: i64| midnight + chrono::Duration::days(d) + chrono::Duration::hours(h);
    e.pay(1_000, day(0, 1));
    e.pay(500, day(0, 2));
    let now = e.info(day(0, 3));
    assert_eq!((now.total, now.today), (1_500, 1_500));
    assert!(now.recent_average > 0.0);
    let next_day = e.info(day(1, 0) + chrono::Duration::hours(1));
    assert_eq!(next_day.today, 0, "a new day starts at zero");
    e.pay(10, day(2, 0));
    assert_eq!(e.info(day(2, 1)).today, 10);
    // No pay for a week: the recent average halves.
    let (a, b) = (e.info(day(2, 0)), e.info(day(9, 0)));
    let ratio = b.recent_average / a.recent_average;
    assert!((ratio - 0.5).abs() < 0.01, "{ratio}");
}

#[test]
fn a_rate_limited_account_is_refused_with_the_wait_and_nothing_moves() {
    let mut b = Book::new(Prices::default(), Snapshot::default());
    b.grant("g".into(), "fast", 10_000, String::new(), t(0));
    let limits = AccountLimits {
        max_per_second: Some(1.0),
        ..AccountLimits::default()
    };
    b.set_limits("fast".into(), limits);
    b.reserve(Uuid::new_v4(), "fast", 10, t(1)).unwrap();
    assert_eq!(
        b.reserve(Uuid::new_v4(), "fast", 10, t(1)),
        Err(CreditRefusal::RateLimited {
            per_second: 1.0,
            retry_after: 1
        })
    );
    assert_eq!(b.balance("fast"), 9_990);
    b.reserve(Uuid::new_v4(), "fast", 10, t(2)).unwrap();
    check_invariants(&b.take_postings());
}
