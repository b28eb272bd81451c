//! A clustered broker: three NATS nodes (MQTT listeners, sessions and retained messages in
//! JetStream) with the accounts and rights of `broker-config/acl`. The coordinator and each agent
//! know every node; killing the node one of them is on (SIGKILL) moves it to another, with its
//! session, and work goes on.

use std::time::Duration;

use ambient_cli::client::submit_over_mqtt;
use ambient_cli::modules;
use ambient_e2e::Cluster;
use ambient_protocol::{Requirements, TaskStatus};

use crate::util::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_cluster_survives_the_loss_of_any_node() {
    if !ambient_e2e::nats::available() && !ambient_e2e::nats::required() {
        eprintln!("a_broker_cluster_survives: skipped, nats-server is not installed");
        return;
    }
    let mut c = Cluster::nats(2, 3).await.unwrap();
    let client = c.client();
    let (sub, expected) = sum_task(&[3, 4, 5]);
    assert_eq!(output_sum(&submit_and_wait(&client, &sub).await), expected);
    // An MQTT submission, through the node the submitter is on.
    let (sub, expected) = sum_task(&[6, 7]);
    let info = submit_over_mqtt(&c.conn, sub, WAIT).await.unwrap();
    assert_eq!(output_sum(&info), expected);

    // Node 0 (the coordinator's) dies: the coordinator moves to another node.
    c.nats_broker().kill(0);
    let (sub, expected) = sum_task(&[8, 9, 10]);
    assert_eq!(output_sum(&submit_and_wait(&client, &sub).await), expected);

    // Node 1 (agent 0's) dies while the agents run work: the results still arrive, once.
    c.nats_broker().restart(0).await.unwrap();
    let busy = wasm_task(
        modules::BUSY_WAT,
        serde_json::json!({}),
        Requirements::default(),
    );
    let mut running = Vec::new();
    for _ in 0..2 {
        running.push(client.submit(&busy).await.unwrap().task_id);
    }
    wait_status(&client, running[0], TaskStatus::Running).await;
    c.nats_broker().kill(1);
    for id in &running {
        let done = client.wait(*id, WAIT * 2, |_| {}).await.unwrap();
        assert_eq!(output_sum(&done), modules::BUSY_OUTPUT);
    }
    // Each judgement was recorded once, however often the messages were redelivered.
    let twice: i64 = rusqlite::Connection::open(c.coordinator_db())
        .unwrap()
        .query_row(
            "SELECT count(*) FROM (SELECT node, task_id, kind FROM reputation_events \
             GROUP BY 1, 2, 3 HAVING count(*) > 1)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(twice, 0, "reputation events recorded twice");
    assert_eq!(client.nodes().await.unwrap().len(), 2);

    // The rights of broker-config/acl hold on the cluster: node-1 cannot speak for a spare node.
    let spare = c.spare_nodes[0].clone();
    let token = tokio_util::sync::CancellationToken::new();
    let node1 = c.nodes[0].clone();
    let link = c
        .mqtt_client((&node1.0, &node1.1), "forger", vec![], &token)
        .await
        .unwrap();
    let forged =
        ambient_protocol::testkit::HealthBuilder::new(&spare.0, chrono::Utc::now()).build();
    link.client
        .publish(
            ambient_protocol::topics::node_health(&spare.0),
            ambient_link::QoS::AtLeastOnce,
            false,
            ambient_protocol::envelope::encode(&forged),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let nodes = client.nodes().await.unwrap();
    assert!(
        nodes.iter().all(|n| n.node_id != spare.0),
        "a forged health report was accepted: {nodes:?}"
    );
    token.cancel();
    c.shutdown().await;
}
