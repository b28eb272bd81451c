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

/// Runs `program args…` (under `runner`, an emulator, when given) to completion, with no session
/// bus (so secrets go to the 0600 files, where a test can read them), and returns its stdout;
/// panics with its output when it fails.
pub async fn run_program(
    runner: Option<std::path::PathBuf>,
    program: std::path::PathBuf,
    args: Vec<String>,
) -> String {
    let shown = program.display().to_string();
    let out = tokio::task::spawn_blocking(move || {
        let mut c = match &runner {
            Some(r) => {
                let mut c = std::process::Command::new(r);
                c.arg(&program);
                c
            }
            None => std::process::Command::new(&program),
        };
        c.args(args)
            .env_remove("DBUS_SESSION_BUS_ADDRESS")
            .env("RUST_LOG", "warn")
            .output()
            .expect("runs")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{shown} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `node`'s state in `GET /api/v1/nodes`, if it is listed.
pub async fn node_state(
    c: &ambient_e2e::Cluster,
    node: &str,
) -> Option<ambient_protocol::NodeState> {
    let nodes = c.client().nodes().await.ok()?;
    nodes
        .into_iter()
        .find(|n| n.node_id == node)
        .map(|n| n.state)
}
