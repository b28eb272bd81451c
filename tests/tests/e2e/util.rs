//! Small helpers shared by the test modules.

use std::time::Duration;

use ambient_cli::client::Client;
use ambient_cli::modules;
use ambient_protocol::{Requirements, TaskInfo, TaskStatus, TaskSubmission, TaskType};
use base64::Engine as _;

pub const WAIT: Duration = Duration::from_secs(60);

pub fn wasm_task(wat: &str, inputs: serde_json::Value, req: Requirements) -> TaskSubmission {
    TaskSubmission {
        task_type: TaskType::WasmExecution,
        wasm_module: Some(base64::engine::general_purpose::STANDARD.encode(modules::wasm(wat))),
        inputs,
        requirements: req,
        task_id: None,
    }
}

pub fn sum_task(numbers: &[u64]) -> (TaskSubmission, u64) {
    let inputs = serde_json::json!({ "numbers": numbers });
    let expected = modules::expected_sum(&inputs.to_string());
    (
        wasm_task(modules::SUM_WAT, inputs, Requirements::default()),
        expected,
    )
}

pub fn output_sum(info: &TaskInfo) -> u64 {
    assert_eq!(info.status, TaskStatus::Completed, "{info:?}");
    info.result.as_ref().expect("result")["output"]["sum"]
        .as_u64()
        .expect("sum in output")
}

pub async fn submit_and_wait(client: &Client, sub: &TaskSubmission) -> TaskInfo {
    let info = client.submit(sub).await.expect("submit");
    client.wait(info.task_id, WAIT, |_| {}).await.expect("wait")
}

/// The value of the coordinator's metric `name` (a counter or gauge without labels).
pub async fn metric(c: &ambient_e2e::Cluster, name: &str) -> u64 {
    let text = reqwest::get(format!("{}/metrics", c.conn.api_url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no metric {name}"))
}

/// Waits until the task has the given status.
pub async fn wait_status(client: &Client, id: uuid::Uuid, status: TaskStatus) -> TaskInfo {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let info = client.task(id).await.expect("task");
        if info.status == status {
            return info;
        }
        assert!(
            !info.status.is_terminal(),
            "task ended as {} before reaching {status}: {info:?}",
            info.status
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads a task's persisted row straight from the coordinator's SQLite file.
pub fn persisted(db: &std::path::Path, id: uuid::Uuid) -> serde_json::Value {
    let conn = rusqlite::Connection::open(db).expect("open db");
    let record: String = conn
        .query_row(
            "SELECT record FROM tasks WHERE id = ?1",
            [id.to_string()],
            |r| r.get(0),
        )
        .expect("task row");
    serde_json::from_str(&record).expect("record json")
}
