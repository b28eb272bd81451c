//! Faults: the broker restarts, an agent dies, the coordinator restarts. Nothing is lost and
//! nothing is counted twice.

use std::time::Duration;

use ambient_cli::modules;
use ambient_e2e::Cluster;
use ambient_protocol::{Requirements, TaskStatus};

use crate::util::*;

fn busy() -> ambient_protocol::TaskSubmission {
    wasm_task(
        modules::BUSY_WAT,
        serde_json::json!({}),
        Requirements::default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_mid_task_delivers_the_result_once() {
    let mut c = Cluster::mosquitto(1).await.unwrap();
    let client = c.client();
    let info = client.submit(&busy()).await.unwrap();
    wait_status(&client, info.task_id, TaskStatus::Running).await;
    // A crash of the broker: its in-memory sessions and queued messages are gone.
    c.mosquitto_broker().kill().unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    c.mosquitto_broker().start_again().unwrap();
    let done = client.wait(info.task_id, WAIT, |_| {}).await.unwrap();
    assert_eq!(output_sum(&done), modules::BUSY_OUTPUT);
    let row = persisted(&c.coordinator_db(), info.task_id);
    let assignments = row["assignments"].as_array().unwrap();
    assert_eq!(assignments.len(), 1, "no reassignment was needed: {row}");
    assert_eq!(assignments[0]["state"], "finished");
    // Let the agent's re-send loop run at least once more: duplicates must change nothing.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let again = persisted(&c.coordinator_db(), info.task_id);
    assert_eq!(again, row, "a redelivered result changed the record");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_agent_loses_its_task_to_another() {
    let mut c = Cluster::embedded(2).await.unwrap();
    let client = c.client();
    let info = client.submit(&busy()).await.unwrap();
    let running = wait_status(&client, info.task_id, TaskStatus::Running).await;
    let holder = running.assigned_nodes[0].clone();
    let i = c.agent_index(&holder);
    c.kill_agent(i).await;
    let done = client.wait(info.task_id, WAIT, |_| {}).await.unwrap();
    assert_eq!(output_sum(&done), modules::BUSY_OUTPUT);
    assert_eq!(done.assigned_nodes.len(), 2, "{done:?}");
    assert_eq!(done.assigned_nodes[0], holder);
    assert_ne!(done.assigned_nodes[1], holder);
    let row = persisted(&c.coordinator_db(), info.task_id);
    assert_eq!(row["assignments"][0]["state"], "lost", "{row}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_restart_keeps_tasks_and_results() {
    let mut c = Cluster::embedded(2).await.unwrap();
    let client = c.client();
    let (sub, expected) = sum_task(&[40, 2]);
    let done = submit_and_wait(&client, &sub).await;
    // A task that cannot be placed yet: it needs more nodes than exist, and says so.
    let (mut waiting, _) = sum_task(&[1]);
    waiting.requirements.min_nodes = 5;
    let pending = client.submit(&waiting).await.unwrap();
    // Both nodes take a replica and wait for three more. (Its status flips between assigned and
    // pending as the replicas run and end, too fast to poll for.)
    let deadline = tokio::time::Instant::now() + WAIT;
    let pending = loop {
        let info = client.task(pending.task_id).await.unwrap();
        if info.assigned_nodes.len() == 2 {
            break info;
        }
        assert!(tokio::time::Instant::now() < deadline, "{info:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };

    c.stop_coordinator().await;
    c.start_coordinator().await.unwrap();
    let client = c.client();

    let after = client.task(done.task_id).await.unwrap();
    assert_eq!(after, done, "a finished task is unchanged by the restart");
    assert_eq!(output_sum(&after), expected);
    let still = client.task(pending.task_id).await.unwrap();
    assert!(!still.status.is_terminal(), "{still:?}");
    assert!(
        still
            .status_reason
            .as_deref()
            .unwrap_or("")
            .contains("waiting for"),
        "{still:?}"
    );
    // And the restarted coordinator still works.
    let (sub, expected) = sum_task(&[9, 9]);
    assert_eq!(output_sum(&submit_and_wait(&client, &sub).await), expected);
    c.shutdown().await;
}
