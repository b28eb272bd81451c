//! `ambient demo` end to end: every case, on each store.
//!
//! A test binary of its own, so that it runs alone: the demo's federated job (3 clients, DP
//! ε = 8, secure aggregation) is judged by its accuracy, and on this 2-core machine, beside the
//! e2e tests' brokers, clusters and proofs, it fell to 75–81 % twice where it reaches 93–97 %
//! alone (6 runs of `ambient demo`).

use ambient_e2e::postgres::Postgres;

/// Every case of `ambient demo`, on its SQLite store, then with the coordinator's state in
/// PostgreSQL, one after the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_passes_on_sqlite_and_on_postgres() {
    the_demo_passes_on(None).await;
    let Some(pg) = Postgres::start_or_skip("the_demo_passes_on_postgres").unwrap() else {
        return;
    };
    let url = pg.create_database("demo").unwrap();
    the_demo_passes_on(Some(url)).await;
    let rows = pg.count_rows("demo", "tasks").unwrap();
    assert!(rows >= 15, "the tasks are in PostgreSQL: {rows} rows");
}

async fn the_demo_passes_on(store: Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let report = ambient_cli::demo::run(dir.path(), 10_000_000, store)
        .await
        .unwrap();
    let cases = &report.cases;
    let table = ambient_cli::demo::table(cases);
    assert!(cases.iter().all(|c| c.ok), "{table}");
    assert_eq!(cases.len(), 15);
    assert!(report.federated.as_ref().is_some_and(|f| f.rounds == 10));
    // The proof is shown, and the reputations reflect the work: the replicated task alone gave
    // all three nodes a valid answer, and one node proved the zk_proof task.
    assert!(report.proof_id.is_some());
    assert_eq!(report.nodes.len(), 3);
    assert!(
        report
            .nodes
            .iter()
            .all(|n| n.reputation.valid > 0 && n.reputation.trusted)
    );
    let proofs: u64 = report
        .nodes
        .iter()
        .map(|n| n.reputation.proofs_verified)
        .sum();
    // The zk_proof task and the proved inference.
    assert_eq!(proofs, 2);
    let rows = ambient_cli::demo::reputation_table(&report.nodes);
    assert_eq!(rows.lines().count(), 4, "{rows}");
    // The demo's ledger adds up: its submitter paid for the work, the nodes got their share.
    let c = report.credits.as_ref().expect("the demo read its ledger");
    assert!(c.charged > 0 && c.charged == c.paid + c.fee, "{c:?}");
    assert_eq!(c.account.spent, c.charged);
    assert_eq!(
        c.account.balance,
        c.granted - c.account.spent - c.account.reserved
    );
    assert_eq!(c.nodes.iter().map(|(_, n)| n).sum::<i64>(), c.paid);
}
