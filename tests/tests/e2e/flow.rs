//! The main path on both brokers: submit over REST and over MQTT, get the right result, find it
//! persisted.

use ambient_cli::client::submit_over_mqtt;
use ambient_e2e::Cluster;
use ambient_e2e::postgres::Postgres;
use ambient_protocol::TaskStatus;

use crate::util::*;

async fn rest_and_mqtt(c: &Cluster) {
    let client = c.client();
    let (sub, expected) = sum_task(&[7, 11, 13, 1000]);
    let info = submit_and_wait(&client, &sub).await;
    assert_eq!(output_sum(&info), expected);
    assert_eq!(info.assigned_nodes.len(), 1);
    let row = persisted(&c.coordinator_db(), info.task_id);
    assert_eq!(row["status"], "completed");
    assert_eq!(row["result"]["output"]["sum"], expected);
    assert_eq!(
        row["assignments"][0]["result"]["outcome"]["status"],
        "success"
    );

    let (sub, expected) = sum_task(&[1, 2, 3, 4, 5, 600]);
    let info = submit_over_mqtt(&c.conn, sub, WAIT)
        .await
        .expect("mqtt submit");
    assert_eq!(output_sum(&info), expected);
    assert_eq!(
        persisted(&c.coordinator_db(), info.task_id)["status"],
        "completed"
    );
    // The MQTT-submitted task is the same task over REST.
    assert_eq!(
        client.task(info.task_id).await.unwrap().status,
        TaskStatus::Completed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_broker_rest_and_mqtt() {
    let c = Cluster::embedded(2).await.unwrap();
    rest_and_mqtt(&c).await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_rest_and_mqtt() {
    let c = Cluster::mosquitto(2).await.unwrap();
    rest_and_mqtt(&c).await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_run_on_distinct_nodes() {
    let c = Cluster::embedded(3).await.unwrap();
    let (mut sub, expected) = sum_task(&[5, 6, 7]);
    sub.requirements.min_nodes = 3;
    let info = submit_and_wait(&c.client(), &sub).await;
    assert_eq!(output_sum(&info), expected);
    let mut nodes = info.assigned_nodes.clone();
    nodes.sort();
    nodes.dedup();
    assert_eq!(nodes.len(), 3);
    c.shutdown().await;
}

/// Every case of `ambient demo`, on its SQLite store, then with the coordinator's state in
/// PostgreSQL. One after the other in one test: each runs proofs, a federated job with DP and a
/// 10⁷-sample π job on this 2-core machine, and two at once starve the federated rounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_passes_on_sqlite_and_on_postgres() {
    the_demo_passes_on(None).await;
    let Some(pg) = Postgres::start_or_skip("the_demo_passes_on_postgres").unwrap() else {
        return;
    };
    let url = pg.create_database("demo").unwrap();
    the_demo_passes_on(Some(url)).await;
    let rows = pg.count_rows("demo", "tasks").unwrap();
    assert!(rows >= 14, "the tasks are in PostgreSQL: {rows} rows");
}

async fn the_demo_passes_on(store: Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let report = ambient_cli::demo::run(dir.path(), 10_000_000, store)
        .await
        .unwrap();
    let cases = &report.cases;
    let table = ambient_cli::demo::table(cases);
    assert!(cases.iter().all(|c| c.ok), "{table}");
    assert_eq!(cases.len(), 14);
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
    assert_eq!(proofs, 1);
    let rows = ambient_cli::demo::reputation_table(&report.nodes);
    assert_eq!(rows.lines().count(), 4, "{rows}");
}
