//! `zk_proof` end to end: a node proves a hash chain with the coordinator's proving key, the
//! coordinator verifies the proof before accepting the result, and anyone can check it again
//! from the REST API (arkworks here, snarkjs JSON for others, and the snarkjs CLI when it is
//! installed in `zk/node_modules`). Keys are made on the first task of each size: a task at
//! n = 1000 waits for them, saying so, and a later one, after a restart too, reuses them.

use std::str::FromStr as _;

use ambient_cli::client::ClientError;
use ambient_e2e::Cluster;
use ambient_protocol::{Requirements, TaskStatus, TaskSubmission, TaskType};
use ambient_zk::{Bn254, CircuitId, CircuitSpec, Fr, Inputs, Output};
use base64::Engine as _;
use serde_json::{Value, json};

use crate::util::*;

type VerifyingKey = ambient_zk::VerifyingKey<Bn254>;

fn zk_task(inputs: Value) -> TaskSubmission {
    TaskSubmission {
        task_type: TaskType::ZkProof,
        wasm_module: None,
        inputs,
        requirements: Requirements::default(),
        task_id: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_chain_is_proved_verified_and_checkable() {
    let started = std::time::Instant::now();
    let mut c = Cluster::embedded(1).await.unwrap();
    eprintln!("cluster up in {:?}", started.elapsed());
    let client = c.client();
    let http = reqwest::Client::new();
    let get = |path: &str| {
        http.get(format!("{}{path}", c.conn.api_url))
            .bearer_auth(&c.conn.api_key)
            .send()
    };

    // A size outside the circuit's range is refused at submission, naming the range.
    let (_, max) = CircuitId::HashChain.size_range();
    let err = client
        .submit(&zk_task(
            json!({"circuit": "hash_chain", "x": "7", "n": max + 1}),
        ))
        .await
        .unwrap_err();
    match &err {
        ClientError::Api { status, body } => {
            assert_eq!(
                (*status, body.error.as_str()),
                (400, "invalid_inputs"),
                "{err}"
            );
            assert!(
                body.message.contains(&format!("from 1 to {max}")),
                "{}",
                body.message
            );
        }
        other => panic!("{other}"),
    }

    let started = std::time::Instant::now();
    let info = submit_and_wait(
        &client,
        &zk_task(json!({"circuit": "hash_chain", "x": "7", "n": 64})),
    )
    .await;
    eprintln!("zk_proof task done in {:?}", started.elapsed());
    assert_eq!(info.status, TaskStatus::Completed, "{info:?}");
    let y = ambient_zk::mimc::hash_chain(Fr::from(7u64), 64);
    let output = &info.result.as_ref().unwrap()["output"];
    assert_eq!(output["y"], y.to_string());
    assert_eq!(
        info.result.as_ref().unwrap()["output_sha256"],
        ambient_protocol::sha256_hex(y.to_string().as_bytes())
    );
    let proof_id = info.proof_id.clone().expect("proof_id");

    // The proof document, checked here with the circuit's published verifying key.
    let doc: Value = get(&format!("/api/v1/proofs/{proof_id}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["task_id"], info.task_id.to_string());
    assert_eq!(doc["circuit"], "hash_chain");
    assert_eq!(doc["snarkjs"]["public"], doc["public_inputs"]);
    assert_eq!(doc["snarkjs"]["proof"]["protocol"], "groth16");
    let circuits: Value = get("/api/v1/circuits").await.unwrap().json().await.unwrap();
    assert_eq!(circuits[0]["circuit"], "hash_chain");
    // The one size asked for so far is the one with keys.
    let circuit = &circuits[0]["instances"][0];
    eprintln!(
        "proving key: {} bytes compressed; result duration_ms {}",
        circuit["proving_key_bytes"],
        info.result.as_ref().unwrap()["duration_ms"]
    );
    assert_eq!(circuits[0]["instances"].as_array().unwrap().len(), 1);
    assert_eq!(circuit["n"], 64);
    assert_eq!(circuits[1]["instances"], json!([]), "no dot task yet");
    // The README's circuit table is what the coordinator accepts.
    let mut documented: Vec<(String, String)> = crate::docs::table(
        &crate::docs::workspace_file("README.md"),
        "",
        "#### Circuits",
    )
    .into_iter()
    .map(|row| (row[0].clone(), row[1].clone()))
    .collect();
    let mut served: Vec<(String, String)> = circuits
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["circuit"].as_str().unwrap().to_string(),
                format!("{} to {}", c["n_min"], c["n_max"]),
            )
        })
        .collect();
    documented.sort();
    served.sort();
    assert_eq!(documented, served, "README.md's circuit table");
    assert_eq!(
        circuit["verification_key"],
        doc["snarkjs"]["verification_key"]
    );
    // The verifying key itself comes from the coordinator's key file (the snarkjs JSON is for
    // other tools); it is the one inside the proving key that nodes get.
    let spec = CircuitSpec::new(CircuitId::HashChain, 64).unwrap();
    let keys = ambient_zk::Keys::load(
        &spec,
        &ambient_coordinator::groth16::keys_path(
            &c.dir.path().join("coordinator"),
            &ambient_coordinator::groth16::Subject::Circuit(spec),
        ),
    )
    .unwrap();
    assert_eq!(
        ambient_zk::snarkjs_verification_key_json(&keys.verifying_key),
        circuit["verification_key"]
    );
    let proof_b64 = doc["proof"].as_str().unwrap().to_string();
    let proof = ambient_zk::proof_from_bytes(
        &base64::engine::general_purpose::STANDARD
            .decode(&proof_b64)
            .unwrap(),
    )
    .unwrap();
    let x = Inputs::HashChain { x: Fr::from(7u64) };
    let public = |y: Fr| {
        ambient_zk::public_inputs_for(&spec, info.task_id.as_bytes(), &x, &Output::HashChain { y })
            .unwrap()
    };
    assert!(ambient_zk::verify(&keys.verifying_key, &spec, &public(y), &proof).unwrap());
    assert!(
        !ambient_zk::verify(
            &keys.verifying_key,
            &spec,
            &public(y + Fr::from(1u64)),
            &proof
        )
        .unwrap()
    );
    let stored: Vec<String> = public(y).to_vec().iter().map(Fr::to_string).collect();
    assert_eq!(doc["public_inputs"], json!(stored));

    // The coordinator's verify endpoint agrees, and refuses a tampered public input.
    let verify = |public_inputs: Value| {
        let body = json!({"circuit": "hash_chain", "n": 64, "public_inputs": public_inputs,
                          "proof": proof_b64});
        let req = http
            .post(format!("{}/api/v1/proofs/verify", c.conn.api_url))
            .bearer_auth(&c.conn.api_key)
            .json(&body)
            .send();
        async move {
            let resp = req.await.unwrap();
            assert_eq!(resp.status(), 200);
            resp.json::<Value>().await.unwrap()["valid"].clone()
        }
    };
    assert_eq!(verify(json!(stored)).await, true);
    let mut tampered = stored.clone();
    tampered[2] = (Fr::from_str(&tampered[2]).unwrap() + Fr::from(1u64)).to_string();
    assert_eq!(verify(json!(tampered)).await, false);

    // The node that proved it earned a `proof_verified` event.
    let prover = &info.assigned_nodes[0];
    let report = client.reputation(prover).await.unwrap();
    assert_eq!(report.reputation.proofs_verified, 1, "{report:?}");
    assert_eq!(
        report.history.last().map(|e| (e.kind, e.task_id)),
        Some((
            ambient_protocol::ReputationEventKind::ProofVerified,
            info.task_id
        ))
    );

    // `require_proof` on a kind no circuit covers is refused, naming what does support proofs.
    let mut wasm = sum_task(&[1, 2]).0;
    wasm.requirements.require_proof = true;
    match client.submit(&wasm).await.unwrap_err() {
        ClientError::Api { status, body } => {
            assert_eq!((status, body.error.as_str()), (422, "proof_unsupported"));
            let dot_max = CircuitId::Dot.size_range().1;
            for named in [
                "zk_proof".to_string(),
                format!("hash_chain (n from 1 to {max})"),
                format!("dot (vectors of length 1 to {dot_max})"),
            ] {
                assert!(body.message.contains(&named), "{}", body.message);
            }
        }
        other => panic!("{other}"),
    }

    // A `require_proof` task on the second circuit: a dot product of two committed vectors.
    let a: Vec<i64> = (1..=16).map(|i| i * 1_000 - 7_500).collect();
    let b: Vec<i64> = (1..=16).map(|i| 3 - i * i).collect();
    let mut dot = zk_task(json!({"circuit": "dot", "a": a, "b": b}));
    dot.requirements.require_proof = true;
    let info = submit_and_wait(&client, &dot).await;
    assert_eq!(info.status, TaskStatus::Completed, "{info:?}");
    let sum: i64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
    assert_eq!(
        info.result.as_ref().unwrap()["output"]["sum"],
        sum.to_string()
    );
    let doc: Value = get(&format!("/api/v1/proofs/{}", info.proof_id.unwrap()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["circuit"], "dot");
    let body = json!({"circuit": "dot", "n": 16, "public_inputs": doc["public_inputs"],
                      "proof": doc["proof"]});
    let checked: Value = http
        .post(format!("{}/api/v1/proofs/verify", c.conn.api_url))
        .bearer_auth(&c.conn.api_key)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(checked["valid"], true);

    // Proofs need a key, like everything else.
    let anon = http
        .get(format!("{}/api/v1/proofs/{proof_id}", c.conn.api_url))
        .send()
        .await
        .unwrap();
    assert_eq!(anon.status(), 401);

    // The proving key travels by reference: an agent with no coordinator_url (and nothing
    // cached) cannot get it, and the task fails saying so instead of waiting for ever.
    c.stop_agent(0).await;
    std::fs::remove_dir_all(c.agent_dir(0).join("blobs")).unwrap();
    c.start_agent_with(0, |cfg| cfg.coordinator_url = None)
        .await
        .unwrap();
    let id = client
        .submit(&zk_task(
            json!({"circuit": "hash_chain", "x": "8", "n": 64}),
        ))
        .await
        .unwrap()
        .task_id;
    // A transfer fault is retried on another node; there is none, and the task says why.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let info = client.task(id).await.unwrap();
        let reason = info.status_reason.clone().unwrap_or_default();
        if reason.contains("last attempt: transfer_error") {
            assert!(reason.contains("coordinator_url"), "{reason}");
            break;
        }
        assert!(!info.status.is_terminal(), "{info:?}");
        assert!(tokio::time::Instant::now() < deadline, "{info:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    c.shutdown().await;
}

/// Runs `snarkjs groth16 verify` on a proof document of `GET /api/v1/proofs/{id}` with
/// `public` as its public inputs; `None` when snarkjs is not installed in `zk/node_modules`
/// (`scripts/snarkjs-verify.sh` installs it).
pub(crate) fn snarkjs_verifies(doc: &Value, public: &Value) -> Option<bool> {
    let bin =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../zk/node_modules/.bin/snarkjs");
    if !bin.exists()
        || std::process::Command::new("node")
            .arg("--version")
            .output()
            .is_err()
    {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, v: &Value| std::fs::write(dir.path().join(name), v.to_string());
    write("vk.json", &doc["snarkjs"]["verification_key"]).unwrap();
    write("proof.json", &doc["snarkjs"]["proof"]).unwrap();
    write("public.json", public).unwrap();
    let out = std::process::Command::new(bin)
        .args(["groth16", "verify", "vk.json", "public.json", "proof.json"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    Some(out.status.success() && text.contains("OK"))
}

/// `hash_chain` at n = 1000, a size no task asked for before: the task waits, pending, while
/// the coordinator makes its keys (its `status_reason` says so, with the time to expect), then
/// a node proves it; the result is the chain computed here, with a proof that verifies here.
/// After a coordinator restart, a second task of that size reuses the keys: no setup again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_chain_at_n_1000_gets_its_keys_on_first_request() {
    const N: usize = 1000;
    // A fresh node downloads the 75 MB proving key, decodes it and proves: allow for a debug
    // build on a busy machine.
    let patience = std::time::Duration::from_secs(600);
    let started = std::time::Instant::now();
    let mut c = Cluster::embedded(1).await.unwrap();
    let client = c.client();
    let get = |url: String, key: String| async move {
        let resp = reqwest::Client::new()
            .get(url)
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.json::<Value>().await.unwrap()
    };
    let mut task = zk_task(json!({"circuit": "hash_chain", "x": "7", "n": N}));
    task.requirements.max_execution_time_sec = 600;

    let info = client.submit(&task).await.unwrap();
    assert_eq!(info.status, TaskStatus::Pending, "{info:?}");
    let reason = info.status_reason.clone().unwrap_or_default();
    assert!(
        reason.contains("Groth16 keys of hash_chain n = 1000"),
        "{reason}"
    );
    let mut reasons = Vec::new();
    let done = client
        .wait(info.task_id, patience, |i| {
            reasons.extend(i.status_reason.clone());
        })
        .await
        .unwrap();
    let first = started.elapsed();
    eprintln!("n = {N}: first task done in {first:?}; reasons: {reasons:#?}");
    assert!(
        reasons.iter().any(|r| r
            .starts_with("making Groth16 keys for hash_chain n = 1000 (about ")
            && r.ends_with(" s, once for this size)")),
        "the setup shows while it runs: {reasons:?}"
    );
    assert_eq!(done.status, TaskStatus::Completed, "{done:?}");

    // The result is the chain computed here, and its proof verifies here.
    let spec = CircuitSpec::new(CircuitId::HashChain, N).unwrap();
    let x = Inputs::HashChain { x: Fr::from(7u64) };
    let check = |done: &ambient_protocol::TaskInfo, x: &Inputs, doc: &Value, vk: &VerifyingKey| {
        let Inputs::HashChain { x: seed } = x else {
            unreachable!()
        };
        let y = ambient_zk::mimc::hash_chain(*seed, N);
        let result = done.result.as_ref().unwrap();
        assert_eq!(result["output"]["y"], y.to_string());
        assert_eq!(result["output"]["n"], N);
        assert_eq!(
            result["output_sha256"],
            ambient_protocol::sha256_hex(y.to_string().as_bytes())
        );
        assert_eq!(doc["n"], N);
        let public = ambient_zk::public_inputs_for(
            &spec,
            done.task_id.as_bytes(),
            x,
            &Output::HashChain { y },
        )
        .unwrap();
        let stored: Vec<String> = public.to_vec().iter().map(Fr::to_string).collect();
        assert_eq!(doc["public_inputs"], json!(stored));
        let proof = ambient_zk::proof_from_bytes(
            &base64::engine::general_purpose::STANDARD
                .decode(doc["proof"].as_str().unwrap())
                .unwrap(),
        )
        .unwrap();
        assert!(ambient_zk::verify(vk, &spec, &public, &proof).unwrap());
        let mut wrong = public;
        wrong.output_commitment += Fr::from(1u64);
        assert!(!ambient_zk::verify(vk, &spec, &wrong, &proof).unwrap());
        (
            stored,
            wrong.to_vec().iter().map(Fr::to_string).collect::<Vec<_>>(),
        )
    };
    let api = c.conn.api_url.clone();
    let key = c.conn.api_key.clone();
    let proof_id = done.proof_id.clone().expect("a verified proof");
    let doc = get(format!("{api}/api/v1/proofs/{proof_id}"), key.clone()).await;
    // The verifying key: the one at the head of the proving key the coordinator saved.
    let key_file = ambient_coordinator::groth16::keys_path(
        &c.dir.path().join("coordinator"),
        &ambient_coordinator::groth16::Subject::Circuit(spec),
    );
    let vk =
        ambient_zk::verifying_key_from_proving_key(&std::fs::read(&key_file).unwrap()).unwrap();
    let (public, wrong) = check(&done, &x, &doc, &vk);
    assert_eq!(
        doc["snarkjs"]["verification_key"],
        ambient_zk::snarkjs_verification_key_json(&vk)
    );
    match snarkjs_verifies(&doc, &json!(public)) {
        Some(ok) => {
            assert!(ok, "snarkjs rejects the n = {N} proof");
            assert_eq!(snarkjs_verifies(&doc, &json!(wrong)), Some(false));
        }
        None => eprintln!("snarkjs not installed in zk/node_modules: its check skipped"),
    }
    let circuits = get(format!("{api}/api/v1/circuits"), key.clone()).await;
    let instance = &circuits[0]["instances"][0];
    assert_eq!(
        (instance["n"].as_u64(), instance["constraints"].as_u64()),
        (Some(N as u64), Some(spec.expected_constraints() as u64))
    );
    let pk_sha = instance["proving_key_sha256"].clone();
    eprintln!(
        "n = {N}: proving key {} bytes",
        instance["proving_key_bytes"]
    );
    let made_at = std::fs::metadata(&key_file).unwrap().modified().unwrap();

    // A restart, then a second task of this size: the keys come from the store, no setup.
    c.stop_coordinator().await;
    c.start_coordinator().await.unwrap();
    let client = c.client();
    let started = std::time::Instant::now();
    let mut task = zk_task(json!({"circuit": "hash_chain", "x": "8", "n": N}));
    task.requirements.max_execution_time_sec = 600;
    let info = client.submit(&task).await.unwrap();
    let mut reasons: Vec<String> = info.status_reason.clone().into_iter().collect();
    let done = client
        .wait(info.task_id, patience, |i| {
            reasons.extend(i.status_reason.clone());
        })
        .await
        .unwrap();
    eprintln!(
        "n = {N}: second task (after a restart) done in {:?}; reasons: {reasons:#?}",
        started.elapsed()
    );
    assert_eq!(done.status, TaskStatus::Completed, "{done:?}");
    assert!(
        !reasons
            .iter()
            .any(|r| r.starts_with("making") || r.contains("then making")),
        "no second setup: {reasons:?}"
    );
    let doc = get(
        format!(
            "{}/api/v1/proofs/{}",
            c.conn.api_url,
            done.proof_id.clone().unwrap()
        ),
        key.clone(),
    )
    .await;
    check(&done, &Inputs::HashChain { x: Fr::from(8u64) }, &doc, &vk);
    let circuits = get(format!("{}/api/v1/circuits", c.conn.api_url), key).await;
    assert_eq!(circuits[0]["instances"][0]["proving_key_sha256"], pk_sha);
    assert_eq!(
        std::fs::metadata(&key_file).unwrap().modified().unwrap(),
        made_at
    );
    c.shutdown().await;
}
