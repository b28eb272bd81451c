//! The coordinator's store, one contract for both backends: a real SQLite file and a real
//! PostgreSQL server. Then what only PostgreSQL has to get right: coordinators that start
//! together on one database, a schema from a newer build, and addresses it cannot serve.

use ambient_coordinator::credits::keys::{key_sha256, new_key};
use ambient_coordinator::credits::{Book, Prices};
use ambient_coordinator::reputation::{Event, EventKind};
use ambient_coordinator::scheduler::{NodeRecord, TaskRecord};
use ambient_coordinator::store::{
    AccountRecord, Batch, Fence, LedgerFilter, Location, ProofRecord, Store, StoreError,
};
use ambient_e2e::postgres::Postgres;
use ambient_protocol::credits::AccountLimits;
use ambient_protocol::{NodeState, Requirements, TaskStatus, TaskType};
use ambient_service::MigrateError;
use chrono::{DateTime, Utc};
use uuid::Uuid;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn task(submitter: &str, inputs: serde_json::Value, created: &str) -> TaskRecord {
    TaskRecord::new(
        Uuid::new_v4(),
        submitter.into(),
        TaskType::WasmExecution,
        inputs,
        Requirements::default(),
        None,
        at(created),
    )
}

/// Everything the coordinator asks of a store, then a reopen that finds it all again.
async fn keeps_the_contract(location: Location) {
    // A NUL and non-ASCII text in a submitter's input are kept exactly.
    let odd = serde_json::json!({"text": "nul \u{0} é ✓", "n": [1.5, -2, 18446744073709551615u64]});
    let mut done = task("acme", odd, "2026-11-30T10:00:00.123456Z");
    let active = task("acme", serde_json::json!({"a": 1}), "2026-11-30T10:00:01Z");
    let mut shard = task("acme", serde_json::json!({"a": 2}), "2026-11-30T10:00:02Z");
    shard.parent = Some(active.id);
    let other = task("bob", serde_json::json!({}), "2026-11-30T10:00:03Z");
    let node = NodeRecord {
        id: "node-1".into(),
        state: NodeState::Online,
        last_seen: at("2026-11-30T10:00:04Z"),
        health: None,
        reputation: Default::default(),
        earnings: Default::default(),
    };
    let events: Vec<Event> = [
        EventKind::Valid,
        EventKind::Invalid,
        EventKind::ProofVerified,
    ]
    .into_iter()
    .enumerate()
    .map(|(i, kind)| Event {
        node: "node-1".into(),
        kind,
        task_id: done.id,
        at: at(&format!("2026-11-30T10:00:0{i}Z")),
        score: 50.0 + i as f64,
    })
    .collect();
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let proof = ProofRecord {
        id: Uuid::new_v4(),
        task_id: done.id,
        circuit: "hash_chain".into(),
        size: 64,
        public_inputs: vec!["1".into(), "2".into(), "3".into()],
        proof: vec![9; 128],
        verified_at: at("2025-01-02T03:04:05Z"),
    };
    {
        let store = Store::open(&location).await.unwrap();
        store
            .save(Batch {
                tasks: vec![done.clone(), active.clone(), shard.clone(), other.clone()],
                nodes: vec![node.clone()],
                events: events.clone(),
                checkpoints: vec![(a, Some("1".into())), (b, Some("2".into()))],
                postings: Vec::new(),
                fence: None,
            })
            .await
            .unwrap();
        // A record written again replaces the first; a checkpoint is replaced, another deleted.
        done.status = TaskStatus::Completed;
        store
            .save(Batch {
                tasks: vec![done.clone()],
                checkpoints: vec![(a, Some("3".into())), (b, None)],
                ..Batch::default()
            })
            .await
            .unwrap();
        store.put_blob("aa".into(), vec![1, 2, 3]).await.unwrap();
        store.put_blob("aa".into(), vec![1, 2, 3]).await.unwrap();
        store.put_blob("bb".into(), vec![4]).await.unwrap();
        store.delete_blob("bb".into()).await.unwrap();
        store.put_proof(proof.clone()).await.unwrap();
        store.put_proof(proof.clone()).await.unwrap();
    }
    let store = Store::open(&location).await.unwrap();
    assert_eq!(store.task(done.id).await.unwrap(), Some(done.clone()));
    assert_eq!(store.task(Uuid::new_v4()).await.unwrap(), None);
    let (tasks, nodes) = store.load_active().await.unwrap();
    assert_eq!(
        tasks,
        vec![active.clone(), shard, other],
        "the unfinished ones, oldest first"
    );
    assert_eq!(nodes, vec![node]);
    let ids = |v: Vec<TaskRecord>| v.into_iter().map(|t| t.id).collect::<Vec<_>>();
    let all = store.tasks_of("acme".into(), None, 10).await.unwrap();
    assert_eq!(
        ids(all),
        vec![active.id, done.id],
        "newest first, no shards"
    );
    let completed = store
        .tasks_of("acme".into(), Some(TaskStatus::Completed), 10)
        .await
        .unwrap();
    assert_eq!(ids(completed), vec![done.id]);
    assert_eq!(
        store.tasks_of("acme".into(), None, 1).await.unwrap().len(),
        1
    );
    assert!(
        store
            .tasks_of("eve".into(), None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.fl_checkpoints().await.unwrap(), vec![(a, "3".into())]);
    assert_eq!(store.blob("aa".into()).await.unwrap(), Some(vec![1, 2, 3]));
    assert_eq!(store.blob_size("aa".into()).await.unwrap(), Some(3));
    assert_eq!(store.blob_size("bb".into()).await.unwrap(), None);
    assert_eq!(store.blob("bb".into()).await.unwrap(), None);
    assert_eq!(store.proof(proof.id).await.unwrap(), Some(proof));
    assert_eq!(store.proof(Uuid::new_v4()).await.unwrap(), None);
    let history = store.reputation_history("node-1".into(), 2).await.unwrap();
    let kinds: Vec<_> = history.iter().map(|e| (e.kind, e.score)).collect();
    assert_eq!(
        kinds,
        vec![(EventKind::Invalid, 51.0), (EventKind::ProofVerified, 52.0)],
        "the last two, oldest first"
    );
    assert_eq!(history[1].at, events[2].at);
    assert_eq!(history[1].task_id, done.id);
}

/// The credits' part of the contract: postings written (twice, as a retried write would), the
/// snapshot the scheduler's book restarts from, an account's figures, ledger pages, accounts and
/// API keys.
async fn keeps_the_credits(location: Location) {
    let store = Store::open(&location).await.unwrap();
    let mut book = Book::new(Prices::default(), store.credit_snapshot().await.unwrap());
    let now = at("2026-12-01T10:00:00Z");
    book.open("acme", 10_000, now);
    let (done, running) = (Uuid::new_v4(), Uuid::new_v4());
    book.reserve(done, "acme", 3_000, now).unwrap();
    book.reserve(running, "acme", 1_000, now).unwrap();
    let shard = Uuid::new_v4();
    book.settle(shard, running, &[("n2".into(), 400)], false, now);
    book.settle(
        done,
        done,
        &[("n1".into(), 1_000), ("n2".into(), 1_000)],
        true,
        now,
    );
    let postings = book.take_postings();
    for _ in 0..2 {
        let batch = Batch {
            postings: postings.clone(),
            ..Batch::default()
        };
        store.save(batch).await.unwrap();
    }
    let snap = store.credit_snapshot().await.unwrap();
    assert_eq!(snap.balances["acme"], 10_000 - 3_000 - 1_000 + 1_000);
    assert_eq!(snap.spent["acme"], 2_400);
    assert_eq!(
        snap.escrows.len(),
        1,
        "the settled escrow is closed: {snap:?}"
    );
    let e = &snap.escrows[&running];
    assert_eq!((e.owner.as_str(), e.reserved, e.left), ("acme", 1_000, 600));
    assert!(snap.opened.contains("acme"));
    // A book restarted from it grants no second opening and sees the same balance.
    let mut again = Book::new(Prices::default(), snap);
    again.open("acme", 10_000, now);
    assert!(again.take_postings().is_empty());
    assert_eq!(again.balance("acme"), 7_000);
    let totals = store.account_totals("acme".into()).await.unwrap();
    assert_eq!(
        (totals.balance, totals.reserved, totals.spent, totals.earned),
        (7_000, 600, 2_400, 10_000)
    );
    let all = store.ledger(LedgerFilter::All, 0, 1000).await.unwrap();
    assert_eq!(
        all.len(),
        postings.len(),
        "a second write of a transaction adds nothing"
    );
    assert_eq!(all.iter().map(|e| e.amount).sum::<i64>(), 0);
    let first = store
        .ledger(LedgerFilter::Owner("acme".into()), 0, 3)
        .await
        .unwrap();
    let next = store
        .ledger(LedgerFilter::Owner("acme".into()), first[2].seq, 1000)
        .await
        .unwrap();
    assert_eq!(first.len() + next.len(), all.len());
    let n2 = store
        .ledger(LedgerFilter::Account("node:n2".into()), 0, 10)
        .await
        .unwrap();
    assert_eq!(
        n2.iter().map(|e| e.amount).collect::<Vec<_>>(),
        vec![360, 900]
    );
    assert_eq!(n2[1].task_id, Some(done));
    // Accounts and keys.
    let limits = AccountLimits {
        max_in_flight: Some(2),
        ..AccountLimits::default()
    };
    let acct = AccountRecord {
        name: "lab".into(),
        created_at: 1,
        limits,
    };
    assert!(store.put_account(acct.clone()).await.unwrap());
    assert!(
        !store.put_account(acct.clone()).await.unwrap(),
        "names are unique"
    );
    let capped = AccountLimits {
        spending_cap: Some(5),
        ..limits
    };
    assert!(store.set_limits("lab".into(), capped).await.unwrap());
    assert!(!store.set_limits("nobody".into(), capped).await.unwrap());
    assert_eq!(
        store.accounts(Some("lab".into())).await.unwrap()[0].limits,
        capped
    );
    let (key, shown) = new_key("lab", 2);
    store.put_key(key.clone()).await.unwrap();
    let sha = key_sha256(&shown.api_key);
    assert_eq!(
        store.key_account(sha.clone()).await.unwrap().as_deref(),
        Some("lab")
    );
    assert_eq!(
        store.keys(Some("lab".into())).await.unwrap(),
        vec![key.clone()]
    );
    assert!(store.revoke_key(key.id.clone()).await.unwrap());
    assert_eq!(store.key_account(sha).await.unwrap(), None);
    assert!(!store.revoke_key("key_none".into()).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_keeps_the_store_contract() {
    let dir = tempfile::tempdir().unwrap();
    keeps_the_contract(Location::File(dir.path().join("c.db"))).await;
    keeps_the_credits(Location::File(dir.path().join("credits.db"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_keeps_the_store_contract() {
    let Some(pg) = Postgres::start_or_skip("postgres_keeps_the_store_contract").unwrap() else {
        return;
    };
    keeps_the_contract(Location::Postgres(pg.create_database("c").unwrap())).await;
    keeps_the_credits(Location::Postgres(pg.create_database("credits").unwrap())).await;
}

/// Coordinators that start at the same moment on a fresh database make its tables once, and all
/// of them run; the schema carries this build's version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_coordinators_starting_together_migrate_once() {
    let Some(pg) = Postgres::start_or_skip("postgres_starting_together").unwrap() else {
        return;
    };
    let url = pg.create_database("c").unwrap();
    let opens = (0..6).map(|_| {
        let url = url.clone();
        tokio::spawn(async move { Store::open(&Location::Postgres(url)).await })
    });
    for open in opens {
        open.await.unwrap().unwrap();
    }
    let version = pg.psql("c", "SELECT version FROM schema_version").unwrap();
    assert_eq!(
        version,
        ambient_coordinator::store::MIGRATIONS.len().to_string()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_refuses_a_schema_from_a_newer_build() {
    let Some(pg) = Postgres::start_or_skip("postgres_newer_schema").unwrap() else {
        return;
    };
    let url = pg.create_database("c").unwrap();
    drop(Store::open(&Location::Postgres(url.clone())).await.unwrap());
    let known = ambient_coordinator::store::MIGRATIONS.len() as u32;
    pg.psql(
        "c",
        &format!("UPDATE schema_version SET version = {}", known + 1),
    )
    .unwrap();
    match Store::open(&Location::Postgres(url)).await {
        Err(StoreError::Schema(MigrateError::TooNew { found, known: k })) => {
            assert_eq!((found, k), (known + 1, known));
        }
        other => panic!("expected TooNew, got {:?}", other.err()),
    }
}

/// A server that is not there, a wrong password and a TLS demand each fail at open with an
/// error that says so, instead of a coordinator that starts and then cannot save.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_open_failures_are_typed() {
    let Some(pg) = Postgres::start_or_skip("postgres_open_failures").unwrap() else {
        return;
    };
    pg.create_database("c").unwrap();
    let closed = ambient_e2e::free_port().unwrap();
    let cases = [
        (
            format!("postgres://ambient:x@127.0.0.1:{closed}/c"),
            "connect",
        ),
        (
            format!("postgres://ambient:wrong@127.0.0.1:{}/c", pg.port()),
            "password",
        ),
        (format!("{}?sslmode=require", pg.url("c")), "not supported"),
    ];
    for (url, says) in cases {
        let err = Store::open(&Location::Postgres(url.clone()))
            .await
            .err()
            .unwrap_or_else(|| panic!("{url} opened"));
        let text = format!("{err}: {:?}", err);
        assert!(text.contains(says), "{url}: {text}");
    }
}

/// The scheduler's lease: one holder at a time, a new epoch at each grant, and a holder whose
/// epoch is past can write nothing, however late its write comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_deposed_leader_can_write_nothing() {
    let Some(pg) = Postgres::start_or_skip("postgres_deposed_leader").unwrap() else {
        return;
    };
    let store = Store::open(&Location::Postgres(pg.create_database("c").unwrap()))
        .await
        .unwrap();
    let lease = std::time::Duration::from_secs(2);
    let x = store
        .lead("x", "http://x", "x-secret", lease)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(x.epoch, 1);
    assert_eq!(
        store
            .lead("y", "http://y", "y-secret", lease)
            .await
            .unwrap(),
        None,
        "x holds it"
    );
    let info = store.leader().await.unwrap().unwrap();
    assert_eq!(
        (
            info.holder.as_str(),
            info.url.as_str(),
            info.live,
            info.secret.as_str()
        ),
        ("x", "http://x", true, "x-secret")
    );
    assert!(store.renew(&x, lease).await.unwrap());
    // x's lease runs out unrenewed (a pause, a partition): y takes over with a new epoch.
    tokio::time::sleep(lease + std::time::Duration::from_millis(500)).await;
    assert!(!store.leader().await.unwrap().unwrap().live);
    let y = store
        .lead("y", "http://y", "y-secret", lease)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(y.epoch, 2);
    assert_eq!(store.leader().await.unwrap().unwrap().secret, "y-secret");
    assert!(
        !store.renew(&x, lease).await.unwrap(),
        "x cannot renew a lease it lost"
    );
    let write = |fence: &Fence| Batch {
        tasks: vec![task("acme", serde_json::json!({}), "2026-11-30T10:00:00Z")],
        fence: Some(fence.clone()),
        ..Batch::default()
    };
    assert!(matches!(
        store.save(write(&x)).await,
        Err(StoreError::Deposed)
    ));
    assert_eq!(pg.count_rows("c", "tasks").unwrap(), 0, "x wrote nothing");
    store.save(write(&y)).await.unwrap();
    assert_eq!(pg.count_rows("c", "tasks").unwrap(), 1);
    // y resigns (a clean stop): the next candidate leads at once.
    store.resign(&y).await.unwrap();
    let z = store
        .lead("z", "http://z", "z-secret", lease)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(z.epoch, 3);
}
