//! `inference` with `require_proof` end to end, on three ONNX models made by the `onnx` package
//! with random weights (`tests/fixtures/zk/`, from `scripts/make-zk-models.py`, with
//! onnxruntime's outputs): an MLP with Relu, an MLP with Tanh and Softmax, and a small CNN.
//!
//! Each is submitted inline as an `inference` task with `require_proof: true`. The coordinator
//! compiles it, makes its keys on the first task, the node proves, and the coordinator checks
//! the proof before it accepts: the task completes with a `proof_id`, its output is within the
//! documented bound of onnxruntime's, and the proof checks out again through
//! `POST /api/v1/proofs/verify` and snarkjs, while a tampered output or another model's
//! commitment in its public inputs does not. Lying nodes that send a tampered output, or another
//! model's proof, see their results refused (`proof_rejected`), and the task completes with the
//! honest node's. A model with operators no circuit covers is refused at submission, naming them.

use std::str::FromStr as _;
use std::sync::Arc;

use ambient_cli::client::ClientError;
use ambient_e2e::Cluster;
use ambient_e2e::adversary::Liar;
use ambient_protocol::{
    InferenceOutput, ReputationEventKind, Requirements, TaskInfo, TaskStatus, TaskSubmission,
    TaskType, TensorJson,
};
use ambient_zk::Fr;
use base64::Engine as _;
use serde_json::{Value, json};

use crate::zk::snarkjs_verifies;

/// The models, by fixture name.
const MODELS: [&str; 3] = ["mlp_relu", "mlp_tanh_softmax", "cnn"];

/// The distance to onnxruntime the fixtures are held to at 12 fractional bits:
/// `2^(5−f) + 1e-5` (`zk/tests/onnx.rs` says where it comes from).
const BOUND: f64 = 0.0078125 + 1e-5;

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("fixtures/zk/{name}"))
}

/// The model's bytes, its input tensor and onnxruntime's output.
fn model(name: &str) -> (Vec<u8>, (String, TensorJson), Vec<f64>) {
    let bytes = std::fs::read(fixture(&format!("{name}.onnx"))).unwrap();
    let reference: Value =
        serde_json::from_slice(&std::fs::read(fixture(&format!("{name}.json"))).unwrap()).unwrap();
    let (input_name, input) = reference["inputs"]
        .as_object()
        .unwrap()
        .iter()
        .next()
        .unwrap();
    let output = reference["outputs"]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap();
    let input: TensorJson = serde_json::from_value(input.clone()).unwrap();
    let output: TensorJson = serde_json::from_value(output.clone()).unwrap();
    (bytes, (input_name.clone(), input), output.data)
}

fn proved(bytes: &[u8], input: &(String, TensorJson)) -> TaskSubmission {
    TaskSubmission {
        task_type: TaskType::Inference,
        wasm_module: None,
        inputs: json!({
            "model_base64": base64::engine::general_purpose::STANDARD.encode(bytes),
            "tensors": {input.0.clone(): input.1},
        }),
        requirements: Requirements {
            require_proof: true,
            max_execution_time_sec: 300,
            ..Requirements::default()
        },
        task_id: None,
    }
}

fn output(info: &TaskInfo) -> InferenceOutput {
    serde_json::from_value(info.result.as_ref().unwrap()["output"].clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inference_with_require_proof_is_proved_and_checked() {
    let patience = std::time::Duration::from_secs(600);
    let mut c = Cluster::embedded(1).await.unwrap();
    let client = c.client();
    let http = reqwest::Client::new();
    let (api, key) = (c.conn.api_url.clone(), c.conn.api_key.clone());
    let verify = |body: Value| {
        let req = http
            .post(format!("{api}/api/v1/proofs/verify"))
            .bearer_auth(&key)
            .json(&body)
            .send();
        async move {
            let resp = req.await.unwrap();
            assert_eq!(resp.status(), 200);
            resp.json::<Value>().await.unwrap()["valid"].clone()
        }
    };

    // Operators no circuit covers: refused at submission, every one named.
    let unsupported = std::fs::read(fixture("unsupported_ops.onnx")).unwrap();
    let input = (
        "x".to_string(),
        TensorJson {
            dtype: "float32".into(),
            shape: vec![1, 4],
            data: vec![0.5; 4],
        },
    );
    match client
        .submit(&proved(&unsupported, &input))
        .await
        .unwrap_err()
    {
        ClientError::Api { status, body } => {
            assert_eq!((status, body.error.as_str()), (422, "proof_unsupported"));
            assert!(body.message.contains("Erf, LeakyRelu"), "{}", body.message);
        }
        other => panic!("{other}"),
    }
    // An input that does not fit the model: a wrong shape.
    let (relu, (name, mut tensor), _) = model("mlp_relu");
    tensor.shape = vec![1, 783];
    tensor.data.pop();
    match client
        .submit(&proved(&relu, &(name, tensor)))
        .await
        .unwrap_err()
    {
        ClientError::Api { status, body } => {
            assert_eq!((status, body.error.as_str()), (400, "invalid_inputs"));
            assert!(body.message.contains("[1, 784]"), "{}", body.message);
        }
        other => panic!("{other}"),
    }

    // The three models, proved and checked.
    let mut done = Vec::new();
    for name in MODELS {
        let (bytes, input, reference) = model(name);
        let started = std::time::Instant::now();
        let info = client.submit(&proved(&bytes, &input)).await.unwrap();
        let mut reasons: Vec<String> = info.status_reason.clone().into_iter().collect();
        let info = client
            .wait(info.task_id, patience, |i| {
                reasons.extend(i.status_reason.clone())
            })
            .await
            .unwrap();
        eprintln!(
            "{name}: done in {:?}; reasons {reasons:?}",
            started.elapsed()
        );
        assert_eq!(info.status, TaskStatus::Completed, "{name}: {info:?}");
        assert!(
            reasons.iter().any(|r| r.contains("Groth16 keys")),
            "{name}: the key setup shows: {reasons:?}"
        );
        let out = output(&info);
        let got = &out.outputs.values().next().unwrap().data;
        let far = got
            .iter()
            .zip(&reference)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        eprintln!(
            "{name}: max |proved − onnxruntime| = {far:.2e}; error bound {:?}",
            out.error_bound
        );
        assert_eq!(got.len(), reference.len(), "{name}");
        assert!(far <= BOUND, "{name}: {far} from onnxruntime, over {BOUND}");
        let quantised = out.quantised.clone().expect("the quantised output");
        assert_eq!(quantised.frac_bits, 12);
        assert_eq!(
            info.result.as_ref().unwrap()["output_sha256"],
            ambient_protocol::sha256_hex(
                serde_json::to_string(&quantised.data).unwrap().as_bytes()
            )
        );
        assert!(out.model_commitment.is_some(), "{name}");
        // The node is paid for the proof: the model circuit's constraints at zk_proof's rate.
        let constraints = out.constraints.expect("the circuit's constraints");
        let prices = ambient_coordinator::credits::Prices::default();
        let charged = client
            .task(info.task_id)
            .await
            .unwrap()
            .cost
            .and_then(|c| c.charged);
        assert_eq!(
            charged,
            Some(prices.replica(
                TaskType::ZkProof,
                ambient_coordinator::credits::Units(constraints)
            )),
            "{name}: {constraints} constraints"
        );
        let proof_id = info.proof_id.clone().expect("a proof_id");
        let doc: Value = http
            .get(format!("{api}/api/v1/proofs/{proof_id}"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let sha = ambient_protocol::sha256_hex(&bytes);
        assert_eq!(doc["model_sha256"], sha, "{name}");
        assert_eq!(
            doc["public_inputs"],
            json!(out.public_inputs.clone().unwrap())
        );
        assert_eq!(
            doc["public_inputs"][1],
            json!(out.model_commitment.clone().unwrap())
        );
        done.push((name, sha, doc, info, bytes, input));
    }

    // Each proof checks out through the API and snarkjs; a tampered output, or another
    // model's commitment in the public inputs, does not.
    for (i, (name, sha, doc, _, _, _)) in done.iter().enumerate() {
        let public: Vec<String> = serde_json::from_value(doc["public_inputs"].clone()).unwrap();
        let mut tampered = public.clone();
        let last = tampered.len() - 1;
        tampered[last] = (Fr::from_str(&tampered[last]).unwrap() + Fr::from(1u64)).to_string();
        let mut other = public.clone();
        other[1] = done[(i + 1) % done.len()].2["public_inputs"][1]
            .as_str()
            .unwrap()
            .to_string();
        let body = |p: &Vec<String>| json!({"model_sha256": sha, "public_inputs": p, "proof": doc["proof"]});
        assert_eq!(verify(body(&public)).await, true, "{name}");
        assert_eq!(verify(body(&tampered)).await, false, "{name}");
        assert_eq!(verify(body(&other)).await, false, "{name}");
        match snarkjs_verifies(doc, &json!(public)) {
            Some(ok) => {
                assert!(ok, "snarkjs rejects the proof of {name}");
                assert_eq!(
                    snarkjs_verifies(doc, &json!(tampered)),
                    Some(false),
                    "{name}"
                );
                assert_eq!(snarkjs_verifies(doc, &json!(other)), Some(false), "{name}");
            }
            None => eprintln!("snarkjs not installed in zk/node_modules: its check skipped"),
        }
    }

    // Two lying nodes take the next task of the Relu MLP while the honest one is away: one
    // sends an honest earlier result of that model with one output value changed, the other the
    // CNN's honest result (another model's proof, of the same output shape). Both are refused,
    // and the task completes with the honest node's proof once it is back.
    let earlier = output(&done[0].3);
    let mut tampered = earlier.clone();
    tampered.quantised.as_mut().unwrap().data[0] += 1;
    let tampered = serde_json::to_value(&tampered).unwrap();
    let foreign = output(&done[2].3);
    assert_eq!(
        foreign.quantised.as_ref().unwrap().shape,
        earlier.quantised.as_ref().unwrap().shape
    );
    let foreign = serde_json::to_value(foreign).unwrap();
    c.stop_agent(0).await;
    let kinds = [TaskType::Inference, TaskType::ZkProof];
    let mut liars = Vec::new();
    for ((node, password), lie) in c.spare_nodes.clone().iter().zip([tampered, foreign]) {
        let answer = Arc::new(move |_: &ambient_protocol::Assignment| lie.clone());
        liars.push(
            Liar::start_with(c.mqtt, node, password, &kinds, answer)
                .await
                .unwrap(),
        );
    }
    let (_, _, _, _, bytes, input) = &done[0];
    let id = client.submit(&proved(bytes, input)).await.unwrap().task_id;
    // Both liars answered, and the task, with no one else to run it, says why the last
    // answer was refused.
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        let reason = client
            .task(id)
            .await
            .unwrap()
            .status_reason
            .unwrap_or_default();
        let answered = liars
            .iter()
            .all(|l| l.answered.load(std::sync::atomic::Ordering::Relaxed) > 0);
        if answered && reason.contains("proof_rejected") {
            assert!(reason.contains("the proof does not verify"), "{reason}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{reason}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    c.start_agent(0).await.unwrap();
    let info = client.wait(id, patience, |_| {}).await.unwrap();
    assert_eq!(info.status, TaskStatus::Completed, "{info:?}");
    assert_eq!(
        output(&info).quantised.unwrap().data,
        earlier.quantised.unwrap().data,
        "the honest node's output"
    );
    // Each liar had one attempt, the honest node the last.
    assert_eq!(info.assigned_nodes.len(), 3, "{info:?}");
    assert!(info.assigned_nodes.contains(&c.nodes[0].0), "{info:?}");
    for liar in &liars {
        let report = client.reputation(&liar.node).await.unwrap();
        let rejected = report
            .history
            .iter()
            .filter(|e| e.kind == ReputationEventKind::ProofRejected && e.task_id == id)
            .count();
        assert_eq!(rejected, 1, "{}: {report:?}", liar.node);
    }
    for liar in liars {
        liar.stop().await;
    }
    c.shutdown().await;
}
