//! `ambient demo`: an embedded broker, a coordinator and three agents in this process; then the
//! seed's `wasm_execution` example and the failure cases, each checked against what it must give.

use std::time::Duration;

use ambient_protocol::{Requirements, TaskStatus, TaskSubmission, TaskType};
use base64::Engine as _;
use serde_json::json;

use crate::client::{Client, ClientError, submit_over_mqtt};
use crate::local::{LocalNetwork, LocalOptions};
use crate::modules;

/// One checked case.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Case {
    /// What was tried.
    pub name: String,
    /// What it must give.
    pub expected: String,
    /// What it gave.
    pub actual: String,
    /// Whether they match.
    pub ok: bool,
    /// Wall time, submit to answer.
    pub millis: u128,
}

fn b64(wat: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(modules::wasm(wat))
}

fn wasm_task(wat: &str, inputs: serde_json::Value, req: Requirements) -> TaskSubmission {
    TaskSubmission {
        task_type: TaskType::WasmExecution,
        wasm_module: Some(b64(wat)),
        inputs,
        requirements: req,
        task_id: None,
    }
}

fn outcome(r: &Result<ambient_protocol::TaskInfo, ClientError>) -> String {
    match r {
        Ok(i) if i.status == TaskStatus::Completed => {
            let out = i
                .result
                .as_ref()
                .map(|r| r["output"].clone())
                .unwrap_or_default();
            let nodes = i
                .result
                .as_ref()
                .map(|r| r["nodes"].clone())
                .unwrap_or_default();
            let n = nodes.as_array().map_or(0, Vec::len);
            format!("completed {out} on {n} node(s)")
        }
        Ok(i) => format!(
            "{} ({})",
            i.status,
            i.error
                .clone()
                .unwrap_or_default()
                .split(':')
                .next()
                .unwrap_or_default()
        ),
        Err(ClientError::Api { status, body }) if *status == 0 => {
            format!("rejected over MQTT: {}", body.error)
        }
        Err(ClientError::Api { status, body }) => format!("rejected {status} {}", body.error),
        Err(e) => format!("error: {e}"),
    }
}

/// The pretrained PaddleOCR text-direction classifier (Apache-2.0, from the rapidocr-onnxruntime
/// wheel) and onnxruntime's output for a fixed input, from `tests/fixtures/onnx/`.
const PPOCR_MODEL: &[u8] = include_bytes!("../../tests/fixtures/onnx/ppocr_cls.onnx");
const PPOCR_REFERENCE: &[u8] = include_bytes!("../../tests/fixtures/onnx/ppocr_cls.json");

/// Largest |a − b| over two tensor maps with the same names and shapes, or None when they differ
/// in names, dtypes or shapes.
pub fn max_abs_diff(
    got: &std::collections::BTreeMap<String, ambient_protocol::TensorJson>,
    want: &std::collections::BTreeMap<String, ambient_protocol::TensorJson>,
) -> Option<f64> {
    if got.keys().ne(want.keys()) {
        return None;
    }
    let mut worst = 0.0f64;
    for (name, w) in want {
        let g = &got[name];
        if g.dtype != w.dtype || g.shape != w.shape {
            return None;
        }
        for (a, b) in g.data.iter().zip(&w.data) {
            worst = worst.max((a - b).abs());
        }
    }
    Some(worst)
}

/// The sharded Monte Carlo π job: `samples` points over `shards` shards, reduced by sum.
pub fn pi_task(samples: u64, shards: u64) -> TaskSubmission {
    TaskSubmission {
        task_type: TaskType::Computation,
        wasm_module: None,
        inputs: json!({
            "kernel_base64": b64(modules::PI_WAT),
            "range": {"start": 0, "end": samples, "shards": shards},
            "reduce": "sum",
        }),
        requirements: Requirements {
            max_execution_time_sec: 120,
            ..Requirements::default()
        },
        task_id: None,
    }
}

/// Runs the demo on a fresh local network. Returns the cases; the demo passed when all are ok.
/// `pi_samples` sizes the sharded π job (the CLI uses 10⁹).
pub async fn run(data_dir: &std::path::Path, pi_samples: u64) -> anyhow::Result<Vec<Case>> {
    let net = LocalNetwork::start(LocalOptions {
        data_dir: data_dir.to_path_buf(),
        agents: 3,
        http_addr: "127.0.0.1:0".parse()?,
        mqtt_addr: "127.0.0.1:0".parse()?,
        health_interval_sec: 1.0,
    })
    .await?;
    let client = Client::new(&net.connection.api_url, &net.connection.api_key);
    client.wait_for_nodes(3, Duration::from_secs(20)).await?;
    let wait = Duration::from_secs(60);

    let seed_inputs = json!({"numbers": [3, 14, 15, 92, 65], "note": "seed example"});
    let seed_sum = modules::expected_sum(&serde_json::to_string(&seed_inputs)?);
    let want_ok = |n: usize| format!("completed {{\"sum\":{seed_sum}}} on {n} node(s)");
    let default_req = Requirements::default();
    let mut cases = Vec::new();

    let t = std::time::Instant::now();
    let r = submit_wait(
        &client,
        wasm_task(modules::SUM_WAT, seed_inputs.clone(), default_req.clone()),
        wait,
    )
    .await;
    check(
        &mut cases,
        "seed wasm_execution over REST",
        want_ok(1),
        r,
        t,
    );

    let t = std::time::Instant::now();
    let r = submit_over_mqtt(
        &net.connection,
        wasm_task(modules::SUM_WAT, seed_inputs.clone(), default_req.clone()),
        wait,
    )
    .await;
    check(
        &mut cases,
        "seed wasm_execution over MQTT",
        want_ok(1),
        r,
        t,
    );

    let t = std::time::Instant::now();
    let replicated = Requirements {
        min_nodes: 3,
        ..default_req.clone()
    };
    let r = submit_wait(
        &client,
        wasm_task(modules::SUM_WAT, seed_inputs.clone(), replicated),
        wait,
    )
    .await;
    check(
        &mut cases,
        "replicated on 3 nodes (quorum)",
        want_ok(3),
        r,
        t,
    );

    let t = std::time::Instant::now();
    let short = Requirements {
        max_execution_time_sec: 1,
        ..default_req.clone()
    };
    let r = submit_wait(
        &client,
        wasm_task(modules::SPIN_WAT, json!({}), short.clone()),
        wait,
    )
    .await;
    check(
        &mut cases,
        "infinite loop",
        "failed (out_of_fuel)".into(),
        r,
        t,
    );

    let t = std::time::Instant::now();
    let r = submit_wait(
        &client,
        wasm_task(modules::MEMORY_BOMB_WAT, json!({}), short),
        wait,
    )
    .await;
    check(
        &mut cases,
        "memory.grow bomb",
        "failed (memory_limit)".into(),
        r,
        t,
    );

    let t = std::time::Instant::now();
    let mut bad = wasm_task(modules::SUM_WAT, json!({}), default_req.clone());
    bad.wasm_module =
        Some(base64::engine::general_purpose::STANDARD.encode(b"\0asm\x01\0\0\0garbage"));
    let r = submit_wait(&client, bad, wait).await;
    check(
        &mut cases,
        "invalid wasm",
        "rejected 400 invalid_wasm".into(),
        r,
        t,
    );

    let t = std::time::Instant::now();
    let r = client
        .submit_raw(br#"{"task_type":"bitcoin_mining","inputs":{}}"#.to_vec())
        .await;
    check(
        &mut cases,
        "unknown task type",
        "rejected 400 unknown_task_type".into(),
        r,
        t,
    );

    let t = std::time::Instant::now();
    let r = client
        .submit_raw(br#"{"task_type":"wasm_execution","inputs":"#.to_vec())
        .await;
    check(
        &mut cases,
        "malformed JSON",
        "rejected 400 invalid_json".into(),
        r,
        t,
    );

    let t = std::time::Instant::now();
    let mut proof = wasm_task(modules::SUM_WAT, json!({}), default_req.clone());
    proof.requirements.require_proof = true;
    let r = submit_wait(&client, proof, wait).await;
    check(
        &mut cases,
        "require_proof (no circuit yet)",
        "rejected 422 proof_unsupported".into(),
        r,
        t,
    );

    let t = std::time::Instant::now();
    let reference: serde_json::Value = serde_json::from_slice(PPOCR_REFERENCE)?;
    let infer = TaskSubmission {
        task_type: TaskType::Inference,
        wasm_module: None,
        inputs: json!({
            "model_base64": base64::engine::general_purpose::STANDARD.encode(PPOCR_MODEL),
            "tensors": reference["inputs"],
        }),
        requirements: default_req.clone(),
        task_id: None,
    };
    let expected = "completed, within 1e-4 of onnxruntime".to_string();
    let actual = match submit_wait(&client, infer, wait).await {
        Ok(i) if i.status == TaskStatus::Completed => {
            let out: ambient_protocol::InferenceOutput =
                serde_json::from_value(i.result.unwrap_or_default()["output"].clone())?;
            let want = serde_json::from_value(reference["outputs"].clone())?;
            match max_abs_diff(&out.outputs, &want) {
                Some(d) if d <= 1e-4 => expected.clone(),
                Some(d) => format!("completed, off by {d:e} on {}", out.device),
                None => "completed with other outputs".into(),
            }
        }
        other => outcome(&other),
    };
    let ok = actual == expected;
    cases.push(Case {
        name: "inference: pretrained PaddleOCR classifier".into(),
        expected,
        actual,
        ok,
        millis: t.elapsed().as_millis(),
    });

    let t = std::time::Instant::now();
    let shards = 64.min(pi_samples);
    let hits = tokio::task::spawn_blocking(move || modules::expected_pi_hits(0, pi_samples));
    let r = submit_wait(
        &client,
        pi_task(pi_samples, shards),
        Duration::from_secs(900),
    )
    .await;
    let hits = hits.await?;
    let pi = 4.0 * hits as f64 / pi_samples as f64;
    let expected = format!("completed: {hits} hits of {pi_samples} (π ≈ {pi:.6})");
    let actual = match &r {
        Ok(i) if i.status == TaskStatus::Completed => {
            let out = &i
                .result
                .as_ref()
                .map(|r| r["output"].clone())
                .unwrap_or_default();
            let (h, n) = (
                out["hits"].as_u64().unwrap_or(0),
                out["samples"].as_u64().unwrap_or(0),
            );
            format!(
                "completed: {h} hits of {n} (π ≈ {:.6})",
                4.0 * h as f64 / n.max(1) as f64
            )
        }
        _ => outcome(&r),
    };
    let ok = actual == expected;
    cases.push(Case {
        name: format!("sharded π: {pi_samples} samples, {shards} shards"),
        expected,
        actual,
        ok,
        millis: t.elapsed().as_millis(),
    });

    let t = std::time::Instant::now();
    let r = Client::new(&net.connection.api_url, "wrong-key-wrong-key")
        .submit(&wasm_task(modules::SUM_WAT, json!({}), default_req))
        .await;
    check(
        &mut cases,
        "wrong API key",
        "rejected 401 unauthorized".into(),
        r,
        t,
    );

    net.shutdown().await;
    Ok(cases)
}

/// Records a case whose outcome is rendered by [`outcome`].
fn check(
    cases: &mut Vec<Case>,
    name: &str,
    expected: String,
    r: Result<ambient_protocol::TaskInfo, ClientError>,
    t: std::time::Instant,
) {
    let actual = outcome(&r);
    let ok = actual == expected;
    cases.push(Case {
        name: name.into(),
        expected,
        actual,
        ok,
        millis: t.elapsed().as_millis(),
    });
}

async fn submit_wait(
    client: &Client,
    sub: TaskSubmission,
    wait: Duration,
) -> Result<ambient_protocol::TaskInfo, ClientError> {
    let info = client.submit(&sub).await?;
    client.wait(info.task_id, wait, |_| {}).await
}

/// Renders the cases as a table.
pub fn table(cases: &[Case]) -> String {
    let w0 = cases.iter().map(|c| c.name.len()).max().unwrap_or(4).max(4);
    let w1 = cases
        .iter()
        .map(|c| c.expected.len())
        .max()
        .unwrap_or(8)
        .max(8);
    let mut out = format!(
        "{:<w0$}  {:<w1$}  {:>7}  {}\n",
        "case", "expected", "ms", "result"
    );
    for c in cases {
        let mark = if c.ok {
            "ok".to_string()
        } else {
            format!("MISMATCH: got {}", c.actual)
        };
        out.push_str(&format!(
            "{:<w0$}  {:<w1$}  {:>7}  {}\n",
            c.name, c.expected, c.millis, mark
        ));
    }
    out
}
