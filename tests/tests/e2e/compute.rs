//! `inference` through the whole task path (checked against onnxruntime's outputs), its broken
//! inputs, and sharded `computation` jobs, including one that loses an agent half way.

use std::collections::BTreeMap;
use std::time::Duration;

use ambient_cli::demo::{max_abs_diff, pi_task};
use ambient_cli::modules;
use ambient_e2e::Cluster;
use ambient_protocol::{
    InferenceOutput, Requirements, TaskStatus, TaskSubmission, TaskType, TensorJson,
};
use base64::Engine as _;
use serde_json::json;

use crate::util::*;

fn fixture(name: &str) -> Vec<u8> {
    let p = format!("{}/fixtures/onnx/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

fn reference(name: &str) -> (serde_json::Value, BTreeMap<String, TensorJson>) {
    let v: serde_json::Value =
        serde_json::from_slice(&fixture(&name.replace(".onnx", ".json"))).unwrap();
    (
        v["inputs"].clone(),
        serde_json::from_value(v["outputs"].clone()).unwrap(),
    )
}

fn inference(model: serde_json::Value, tensors: serde_json::Value) -> TaskSubmission {
    let mut inputs = model;
    inputs["tensors"] = tensors;
    TaskSubmission {
        task_type: TaskType::Inference,
        wasm_module: None,
        inputs,
        requirements: Requirements::default(),
        task_id: None,
    }
}

fn inline(name: &str) -> serde_json::Value {
    json!({"model_base64": base64::engine::general_purpose::STANDARD.encode(fixture(name))})
}

fn outputs(info: &ambient_protocol::TaskInfo) -> InferenceOutput {
    assert_eq!(info.status, TaskStatus::Completed, "{info:?}");
    serde_json::from_value(info.result.as_ref().unwrap()["output"].clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inference_matches_onnxruntime() {
    let c = Cluster::embedded(2).await.unwrap();
    let client = c.client();
    for (name, tolerance) in [
        ("mlp.onnx", 1e-5),
        ("cnn.onnx", 1e-5),
        ("mlp_dynamic.onnx", 1e-5),
        ("ppocr_cls.onnx", 1e-4),
    ] {
        let (tensors, want) = reference(name);
        let info = submit_and_wait(&client, &inference(inline(name), tensors)).await;
        let out = outputs(&info);
        assert_eq!(out.device, "cpu");
        let diff = max_abs_diff(&out.outputs, &want).expect("same names, dtypes and shapes");
        assert!(diff <= tolerance, "{name}: max |Δ| = {diff}");
    }
    // The same model by reference, uploaded once.
    let sha = client.put_blob(fixture("cnn.onnx")).await.unwrap();
    let (tensors, want) = reference("cnn.onnx");
    let info = submit_and_wait(&client, &inference(json!({"model_sha256": sha}), tensors)).await;
    assert!(max_abs_diff(&outputs(&info).outputs, &want).unwrap() <= 1e-5);
    let row = persisted(&c.coordinator_db(), info.task_id);
    assert!(row["inputs"].get("model_base64").is_none());
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_inference_gets_typed_failures() {
    let c = Cluster::embedded(1).await.unwrap();
    let client = c.client();
    let (tensors, _) = reference("mlp.onnx");
    let mlp = fixture("mlp.onnx");

    let truncated = json!({"model_base64": base64::engine::general_purpose::STANDARD.encode(&mlp[..mlp.len() / 2])});
    let info = submit_and_wait(&client, &inference(truncated, tensors.clone())).await;
    assert_eq!(info.status, TaskStatus::Failed);
    assert!(
        info.error.as_deref().unwrap().starts_with("invalid_model"),
        "{info:?}"
    );

    let info = submit_and_wait(
        &client,
        &inference(inline("unsupported.onnx"), tensors.clone()),
    )
    .await;
    assert!(
        info.error
            .as_deref()
            .unwrap()
            .starts_with("unsupported_operator"),
        "{info:?}"
    );

    let wrong_shape = json!({"x": {"dtype": "float32", "shape": [1, 5], "data": [0, 0, 0, 0, 0]}});
    let info = submit_and_wait(&client, &inference(inline("mlp.onnx"), wrong_shape)).await;
    let err = info.error.unwrap();
    assert!(
        err.starts_with("invalid_input") && err.contains("axis 1 must be 4"),
        "{err}"
    );

    let wrong_dtype = json!({"x": {"dtype": "int64", "shape": [1, 4], "data": [1, 2, 3, 4]}});
    let info = submit_and_wait(&client, &inference(inline("mlp.onnx"), wrong_dtype)).await;
    let err = info.error.unwrap();
    assert!(
        err.starts_with("invalid_input") && err.contains("float32"),
        "{err}"
    );

    // The test coordinator takes models up to 1 MiB.
    let big = json!({"model_base64": base64::engine::general_purpose::STANDARD.encode(vec![7u8; 2 << 20])});
    match client.submit(&inference(big, tensors.clone())).await {
        Err(e) => assert_eq!(e.code(), Some("module_too_large")),
        Ok(i) => panic!("accepted an oversized model: {i:?}"),
    }
    match client
        .submit(&inference(
            json!({"model_sha256": "ab".repeat(32)}),
            tensors.clone(),
        ))
        .await
    {
        Err(e) => assert_eq!(e.code(), Some("unknown_model")),
        Ok(i) => panic!("accepted an unknown model: {i:?}"),
    }

    // No node has a GPU: the task says so at once, instead of waiting silently.
    let mut gpu = inference(inline("mlp.onnx"), tensors.clone());
    gpu.requirements.require_gpu = true;
    let info = client.submit(&gpu).await.unwrap();
    assert_eq!(info.status, TaskStatus::Pending);
    let reason = info.status_reason.unwrap_or_default();
    assert!(reason.contains("1 without a GPU"), "{reason}");
    client.cancel(info.task_id).await.unwrap();

    // And the agent is still there.
    let info = submit_and_wait(&client, &inference(inline("mlp.onnx"), tensors)).await;
    assert_eq!(info.status, TaskStatus::Completed);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_reductions_are_exact() {
    let c = Cluster::embedded(3).await.unwrap();
    let client = c.client();
    let n = 1_000_000;
    let info = submit_and_wait(&client, &pi_task(n, 8)).await;
    assert_eq!(info.status, TaskStatus::Completed, "{info:?}");
    let out = &info.result.as_ref().unwrap()["output"];
    assert_eq!(out["samples"], n);
    assert_eq!(out["hits"], modules::expected_pi_hits(0, n));
    assert_eq!(info.progress.unwrap().done, 8);
    // The same total split differently gives the same answer.
    let again = submit_and_wait(&client, &pi_task(n, 5)).await;
    assert_eq!(again.result.unwrap()["output"], *out);

    // Explicit shards, concatenated in shard order.
    let shards: Vec<serde_json::Value> = (0..6).map(|k| json!({"numbers": [k, 100]})).collect();
    let concat = TaskSubmission {
        task_type: TaskType::Computation,
        wasm_module: None,
        inputs: json!({
            "kernel_base64": base64::engine::general_purpose::STANDARD.encode(modules::wasm(modules::SUM_WAT)),
            "shards": shards,
            "reduce": "concat",
        }),
        requirements: Requirements::default(),
        task_id: None,
    };
    let info = submit_and_wait(&client, &concat).await;
    let want: Vec<serde_json::Value> = (0..6).map(|k| json!({"sum": k + 100})).collect();
    assert_eq!(info.result.unwrap()["output"], json!(want));
    // Shards are not listed as tasks of their own.
    let listed = client.tasks().await.unwrap();
    assert_eq!(listed.len(), 3, "{listed:?}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_job_survives_a_killed_agent() {
    let mut c = Cluster::embedded(2).await.unwrap();
    let client = c.client();
    let n = 300_000_000;
    let expected = tokio::task::spawn_blocking(move || modules::expected_pi_hits(0, n));
    let info = client.submit(&pi_task(n, 24)).await.unwrap();
    // Let a few shards finish, then kill node-1 with work in hand.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let i = client.task(info.task_id).await.unwrap();
        if i.progress.is_some_and(|p| p.done >= 2) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{i:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.kill_agent(0).await;
    let done = client.wait(info.task_id, WAIT * 3, |_| {}).await.unwrap();
    assert_eq!(done.status, TaskStatus::Completed, "{done:?}");
    assert_eq!(
        done.result.unwrap()["output"]["hits"],
        expected.await.unwrap()
    );
    // Some shard was lost with node-1 and finished on node-2.
    let conn = rusqlite::Connection::open(c.coordinator_db()).unwrap();
    let mut stmt = conn
        .prepare("SELECT record FROM tasks WHERE parent = ?1")
        .unwrap();
    let records: Vec<serde_json::Value> = stmt
        .query_map([info.task_id.to_string()], |r| r.get::<_, String>(0))
        .unwrap()
        .map(|r| serde_json::from_str(&r.unwrap()).unwrap())
        .collect();
    assert_eq!(records.len(), 24);
    let moved = records.iter().any(|r| {
        let a = r["assignments"].as_array().unwrap();
        a.len() >= 2 && a[0]["state"] == "lost" && a.last().unwrap()["node_id"] == "node-2"
    });
    assert!(moved, "no shard moved from node-1 to node-2");
    c.shutdown().await;
}
