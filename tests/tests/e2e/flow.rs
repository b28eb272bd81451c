//! The main path on both brokers: submit over REST and over MQTT, get the right result, find it
//! persisted.

use ambient_cli::client::submit_over_mqtt;
use ambient_e2e::Cluster;
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
