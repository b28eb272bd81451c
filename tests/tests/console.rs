//! The web console (`coordinator/src/console/`) against a real network: a coordinator, the
//! embedded broker and two agents with every executor.
//!
//! - [`event_stream_sends_a_snapshot_then_changes`]: `GET /api/v1/events` read here, as raw
//!   server-sent events: the snapshot, a submitted task's changes up to `completed`, the bound
//!   on streams per submitter, and the refusal of a wrong key. Also the console's files, with
//!   their content types and Content-Security-Policy, and a shutdown with a stream open. Needs
//!   no browser.
//! - [`a_follower_streams_the_leaders_changes`]: two coordinators on one PostgreSQL store (and
//!   mosquitto); the follower, which runs no engine, streams a task the leader runs. Skipped
//!   without PostgreSQL unless `AMBIENT_REQUIRE_POSTGRES=1`.
//! - [`console_submits_a_template_in_chromium`]: `tests/console/console.mjs` drives the console in
//!   headless Chromium: a wrong key, sign in, the `pi` template rendered and submitted and watched
//!   to `completed` over the event stream (the page must not poll the task list), its output; the
//!   `zk-hash-chain` template and its proof verified from the task page, and likewise a proved
//!   `inference` (a model's proof, verified by its `model_sha256`); a wasm module uploaded
//!   from a file; the nodes and account pages. It takes screenshots into
//!   `target/test-output/console/`.
//!
//! The browser test needs node, Chromium and playwright-core, which it takes from the tray
//! app's test directory (`tray-app/tests/node_modules`, `npm ci` there). `scripts/test` installs
//! all three and sets `AMBIENT_REQUIRE_TRAY_TESTS=1`: then a missing tool fails the test instead
//! of skipping it.

use std::process::Command;
use std::time::Duration;

use ambient_cli::modules;
use ambient_e2e::Cluster;
use ambient_e2e::browser::{self, repo};
use ambient_protocol::{Requirements, TaskSubmission, TaskType};
use base64::Engine as _;

/// One server-sent event: its name and its data parsed as JSON.
type SseEvent = (String, serde_json::Value);

/// Reads server-sent events from a streaming response.
struct SseReader {
    response: reqwest::Response,
    buffer: String,
    comments: usize,
}

impl SseReader {
    fn new(response: reqwest::Response) -> SseReader {
        SseReader {
            response,
            buffer: String::new(),
            comments: 0,
        }
    }

    /// The next event, waiting at most `within`.
    async fn next(&mut self, within: Duration) -> SseEvent {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut name = String::from("message");
                let mut data = Vec::new();
                for line in block.lines() {
                    if line.starts_with(':') {
                        self.comments += 1;
                    } else if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim_start().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push(v.strip_prefix(' ').unwrap_or(v).to_string());
                    }
                }
                if data.is_empty() {
                    continue;
                }
                let value = serde_json::from_str(&data.join("\n"))
                    .unwrap_or_else(|e| panic!("event {name} is not JSON ({e}): {data:?}"));
                return (name, value);
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .expect("an event in time")
                .expect("the stream reads")
                .expect("the stream is still open");
            self.buffer
                .push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
        }
    }
}

fn sum_task(numbers: &[u64]) -> TaskSubmission {
    TaskSubmission {
        task_type: TaskType::WasmExecution,
        wasm_module: Some(
            base64::engine::general_purpose::STANDARD.encode(modules::wasm(modules::SUM_WAT)),
        ),
        inputs: serde_json::json!({ "numbers": numbers }),
        requirements: Requirements::default(),
        task_id: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_stream_sends_a_snapshot_then_changes() {
    let cluster = Cluster::embedded(1).await.expect("cluster");
    let client = cluster.client();
    let base = cluster.conn.api_url.trim_end_matches('/').to_string();
    let key = cluster.conn.api_key.clone();
    let http = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("http client");

    // The console's files: types, the CSP, and the redirect to the directory.
    let r = http
        .get(format!("{base}/console"))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 308);
    assert_eq!(r.headers()["location"], "/console/");
    for (path, ty) in [
        ("/console/", "text/html; charset=utf-8"),
        ("/console/console.js", "text/javascript; charset=utf-8"),
        ("/console/console.css", "text/css; charset=utf-8"),
    ] {
        let r = http.get(format!("{base}{path}")).send().await.expect("GET");
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.headers()["content-type"], ty, "{path}");
        let csp = r.headers()["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"));
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    }

    // A wrong key gets no stream.
    let r = http
        .get(format!("{base}/api/v1/events"))
        .bearer_auth("not-a-key")
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 401);

    let done = client.submit(&sum_task(&[1, 2, 3])).await.expect("submit");
    client
        .wait(done.task_id, Duration::from_secs(60), |_| {})
        .await
        .expect("wait");

    let r = http
        .get(format!("{base}/api/v1/events"))
        .bearer_auth(&key)
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let mut events = SseReader::new(r);
    let (name, snapshot) = events.next(Duration::from_secs(10)).await;
    assert_eq!(name, "snapshot");
    let list = snapshot.as_array().expect("an array");
    assert_eq!(list.len(), 1, "{snapshot}");
    assert_eq!(list[0]["task_id"], done.task_id.to_string());
    assert_eq!(list[0]["status"], "completed");
    assert!(
        list[0].get("result").is_none(),
        "the stream carries no results"
    );

    // A new task shows up, and changes until it completes; the finished one is not sent again.
    let info = client.submit(&sum_task(&[40, 2])).await.expect("submit");
    let mut seen = Vec::new();
    loop {
        let (name, change) = events.next(Duration::from_secs(60)).await;
        assert_eq!(name, "task", "{change}");
        assert_eq!(
            change["task_id"],
            info.task_id.to_string(),
            "only the new task changes"
        );
        let status = change["status"].as_str().unwrap().to_string();
        if seen.last() != Some(&status) {
            seen.push(status.clone());
        }
        if status == "completed" {
            break;
        }
    }
    println!("statuses streamed: {seen:?}");
    assert_eq!(
        client
            .task(info.task_id)
            .await
            .expect("task")
            .result
            .unwrap()["output"],
        serde_json::json!({"sum": 42})
    );

    // Streams per submitter are bounded (the one above counts).
    let mut held = Vec::new();
    for _ in 1..ambient_coordinator::console::events::MAX_STREAMS_PER_SUBMITTER {
        let r = http
            .get(format!("{base}/api/v1/events"))
            .bearer_auth(&key)
            .send()
            .await
            .expect("GET");
        assert_eq!(r.status(), 200);
        held.push(r);
    }
    let r = http
        .get(format!("{base}/api/v1/events"))
        .bearer_auth(&key)
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 429);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["error"], "too_many_streams");
    // A closed stream frees its place: the server notices at its next look (once a second),
    // so a new stream is admitted within a few seconds.
    let open_once_freed = || async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let r = http
                .get(format!("{base}/api/v1/events"))
                .bearer_auth(&key)
                .send()
                .await
                .expect("GET");
            if r.status() == 200 {
                return r;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "a closed stream never freed its place"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    drop(held.pop());
    drop(open_once_freed().await);
    drop(held);
    drop(events);
    // An open stream does not hold up the coordinator's shutdown (the HTTP server's graceful
    // shutdown waits for every response to end).
    let kept = open_once_freed().await;
    tokio::time::timeout(Duration::from_secs(20), cluster.shutdown())
        .await
        .expect("the coordinator stops within 20 s with a stream open");
    drop(kept);
}

/// Several coordinators on one PostgreSQL store: a follower, which has no engine, streams the
/// changes of a task the leader runs, from the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_streams_the_leaders_changes() {
    let Some(pg) = ambient_e2e::postgres::Postgres::start_or_skip("a_follower_streams").unwrap()
    else {
        return;
    };
    let url = pg.create_database("ambient").unwrap();
    let mut cluster = Cluster::mosquitto_on(1, 2, Some(url))
        .await
        .expect("cluster");
    let mut b_cfg = cluster.coordinator_config().clone();
    b_cfg.data_dir = cluster.dir.path().join("coordinator-b");
    b_cfg.http_addr = "127.0.0.1:0".parse().unwrap();
    let b_token = tokio_util::sync::CancellationToken::new();
    let b = ambient_coordinator::start(b_cfg, b_token.clone())
        .await
        .expect("coordinator B");
    let b_url = format!("http://{}", b.http_addr);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let health: serde_json::Value = http
        .get(format!("{b_url}/api/v1/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["role"], "follower");
    let r = http
        .get(format!("{b_url}/api/v1/events"))
        .bearer_auth(&cluster.conn.api_key)
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 200);
    let mut events = SseReader::new(r);
    assert_eq!(events.next(Duration::from_secs(10)).await.0, "snapshot");
    let info = cluster
        .client()
        .submit(&sum_task(&[5, 6]))
        .await
        .expect("submit to the leader");
    loop {
        let (name, change) = events.next(Duration::from_secs(60)).await;
        assert_eq!(name, "task");
        assert_eq!(change["task_id"], info.task_id.to_string());
        if change["status"] == "completed" {
            break;
        }
    }
    drop(events);
    b_token.cancel();
    tokio::time::timeout(Duration::from_secs(30), b.wait())
        .await
        .expect("B stops");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_submits_a_template_in_chromium() {
    if browser::skip("the console test", &browser::missing_tools()) {
        return;
    }
    let cluster = Cluster::embedded(2).await.expect("cluster");
    let out = repo().join("target/test-output/console");
    std::fs::create_dir_all(&out).expect("output dir");
    let wasm = cluster.dir.path().join("sum.wasm");
    std::fs::write(&wasm, modules::wasm(modules::SUM_WAT)).expect("module");
    let script = repo().join("tests/console/console.mjs");
    let run = Command::new("node")
        .arg(&script)
        .arg("--url")
        .arg(&cluster.conn.api_url)
        .arg("--key")
        .arg(&cluster.conn.api_key)
        .arg("--wasm")
        .arg(&wasm)
        .arg("--out")
        .arg(&out)
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    println!("{stdout}");
    assert!(
        run.status.success(),
        "the console test failed ({}):\n{stdout}\n{stderr}",
        run.status
    );
    cluster.shutdown().await;
}
