//! `zk_proof` end to end: a node proves a hash chain with the coordinator's proving key, the
//! coordinator verifies the proof before accepting the result, and anyone can check it again
//! from the REST API (arkworks here, snarkjs JSON for others).

use std::str::FromStr as _;

use ambient_cli::client::ClientError;
use ambient_e2e::Cluster;
use ambient_protocol::{Requirements, TaskStatus, TaskSubmission, TaskType};
use ambient_zk::{CircuitId, CircuitSpec, Fr, Inputs, Output};
use base64::Engine as _;
use serde_json::{Value, json};

use crate::util::*;

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
    eprintln!("cluster (with Groth16 setup) up in {:?}", started.elapsed());
    let client = c.client();
    let http = reqwest::Client::new();
    let get = |path: &str| {
        http.get(format!("{}{path}", c.conn.api_url))
            .bearer_auth(&c.conn.api_key)
            .send()
    };

    // An unsupported size is refused at submission, naming what is supported.
    let err = client
        .submit(&zk_task(
            json!({"circuit": "hash_chain", "x": "7", "n": 65}),
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
            assert!(body.message.contains("n = 64"), "{}", body.message);
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
    let circuit = &circuits.as_array().unwrap()[0];
    eprintln!(
        "proving key: {} bytes compressed; result duration_ms {}",
        circuit["proving_key_bytes"],
        info.result.as_ref().unwrap()["duration_ms"]
    );
    assert_eq!(
        (circuit["circuit"].as_str(), circuit["n"].as_u64()),
        (Some("hash_chain"), Some(64))
    );
    // The README's circuit table is what the coordinator accepts.
    let mut documented: Vec<(String, u64)> = crate::docs::table(
        &crate::docs::workspace_file("README.md"),
        "",
        "#### Circuits",
    )
    .into_iter()
    .map(|row| (row[0].clone(), row[1].parse().unwrap()))
    .collect();
    let mut served: Vec<(String, u64)> = circuits
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["circuit"].as_str().unwrap().to_string(),
                c["n"].as_u64().unwrap(),
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
        &ambient_coordinator::zk::keys_path(&c.dir.path().join("coordinator"), &spec),
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
            for named in [
                "zk_proof",
                "hash_chain (n = 64)",
                "dot (vectors of length 16)",
            ] {
                assert!(body.message.contains(named), "{}", body.message);
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
