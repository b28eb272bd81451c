//! Hostile and broken input: each gets a typed error, and the services keep working.

use std::time::Duration;

use ambient_cli::client::{Client, ClientError};
use ambient_cli::modules;
use ambient_e2e::Cluster;
use ambient_e2e::adversary::lie;
use ambient_link::{Incoming, LinkOptions, QoS};
use ambient_protocol::testkit::finished_success;
use ambient_protocol::{
    NodeIdentity, NodeKey, Requirements, TaskStatus, envelope, identity, topics,
};
use base64::Engine as _;
use serde_json::{Value, json};

use crate::util::*;

fn code(r: Result<ambient_protocol::TaskInfo, ClientError>) -> (u16, String) {
    match r {
        Err(ClientError::Api { status, body }) => (status, body.error),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_submissions_get_typed_errors() {
    let c = Cluster::embedded(1).await.unwrap();
    let client = c.client();
    let raw = |b: &'static [u8]| client.submit_raw(b.to_vec());

    assert_eq!(
        code(raw(b"{\"task_type\": ").await),
        (400, "invalid_json".into())
    );
    assert_eq!(code(raw(b"[1, 2").await), (400, "invalid_json".into()));
    assert_eq!(
        code(raw(br#"{"task_type":"teleport"}"#).await),
        (400, "unknown_task_type".into())
    );
    assert_eq!(
        code(
            raw(br#"{"task_type":"federated_learning","inputs":{"dataset":"d","epsilon":-1}}"#)
                .await
        ),
        (400, "invalid_inputs".into())
    );
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    assert_eq!(
        code(client.submit_raw(deep.into_bytes()).await),
        (400, "json_too_deep".into())
    );
    // The test coordinator allows 256 KiB modules.
    let mut big = wasm_task(modules::SUM_WAT, json!({}), Requirements::default());
    big.wasm_module = Some(base64::engine::general_purpose::STANDARD.encode(vec![0u8; 300 << 10]));
    assert_eq!(
        code(client.submit(&big).await),
        (413, "module_too_large".into())
    );
    let huge = vec![b' '; 5 << 20];
    assert_eq!(
        code(client.submit_raw(huge).await),
        (413, "payload_too_large".into())
    );
    let mut invalid = wasm_task(modules::SUM_WAT, json!({}), Requirements::default());
    invalid.wasm_module =
        Some(base64::engine::general_purpose::STANDARD.encode(b"not wasm at all"));
    assert_eq!(
        code(client.submit(&invalid).await),
        (400, "invalid_wasm".into())
    );
    let mut zero = wasm_task(modules::SUM_WAT, json!({}), Requirements::default());
    zero.requirements.min_nodes = 0;
    assert_eq!(
        code(client.submit(&zero).await),
        (400, "invalid_requirements".into())
    );

    // Credentials.
    let (ok, _) = sum_task(&[1]);
    let anonymous = reqwest::Client::new()
        .post(format!("{}/api/v1/tasks", c.conn.api_url))
        .json(&ok)
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let body: serde_json::Value = anonymous.json().await.unwrap();
    assert_eq!(body["error"], "unauthorized");
    assert!(body["message"].as_str().unwrap().contains("Bearer"));
    let wrong = Client::new(&c.conn.api_url, "not-the-key-not-the-key");
    assert_eq!(code(wrong.submit(&ok).await), (401, "unauthorized".into()));

    // Hostile modules run and fail with the right reason.
    let short = Requirements {
        max_execution_time_sec: 1,
        ..Requirements::default()
    };
    let spin = submit_and_wait(
        &client,
        &wasm_task(modules::SPIN_WAT, json!({}), short.clone()),
    )
    .await;
    assert_eq!(spin.status, TaskStatus::Failed);
    assert!(
        spin.error.as_deref().unwrap().starts_with("out_of_fuel"),
        "{spin:?}"
    );
    let bomb = submit_and_wait(
        &client,
        &wasm_task(modules::MEMORY_BOMB_WAT, json!({}), short),
    )
    .await;
    assert_eq!(bomb.status, TaskStatus::Failed);
    assert!(
        bomb.error.as_deref().unwrap().starts_with("memory_limit"),
        "{bomb:?}"
    );

    // Unknown task ids and routes.
    let missing = client.task(uuid::Uuid::new_v4()).await;
    assert_eq!(code(missing), (404, "task_not_found".into()));

    // After all that, a good task still completes.
    let (sub, expected) = sum_task(&[2, 3, 5, 7]);
    assert_eq!(output_sum(&submit_and_wait(&client, &sub).await), expected);
    c.shutdown().await;
}

/// The examples of the seed's "Who creates tasks", sent as their authors wrote them (the
/// JavaScript and Python ones as those languages serialise them, the curl one byte for byte):
/// each answer names every field to add or change, with what it must be and an example, and
/// no task is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeds_examples_get_answers_that_teach() {
    let c = Cluster::embedded(1).await.unwrap();
    let client = c.client();
    let refusal = async |body: &str| match client.submit_raw(body.as_bytes().to_vec()).await {
        Err(ClientError::Api { status, body }) => (status, body),
        other => panic!("expected a refusal of {body}, got {other:?}"),
    };
    let fields = |e: &ambient_protocol::ApiError| -> Vec<(String, String)> {
        e.problems
            .iter()
            .map(|p| (p.field.clone(), p.problem.as_str().to_string()))
            .collect()
    };
    let pairs = |l: &[(&str, &str)]| -> Vec<(String, String)> {
        l.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    // Every problem says what is expected and, in the message, where.
    let teaches = |e: &ambient_protocol::ApiError| {
        for p in &e.problems {
            assert!(!p.expected.is_empty(), "{p:?}");
            assert!(
                e.message.contains(&p.field),
                "{} does not name {}",
                e.message,
                p.field
            );
        }
    };

    // The photo app's backend (JavaScript's JSON.stringify).
    let (status, e) = refusal(
        r#"{"task_type":"wasm_execution","wasm_module":"<base64-encoded-filter-algorithm>","inputs":{"image":"data:image/png;base64,iVBORw0KGgo="},"requirements":{"min_nodes":1,"max_execution_time_sec":30,"require_gpu":true,"require_proof":false}}"#,
    )
    .await;
    assert_eq!((status, e.error.as_str()), (400, "invalid_base64"));
    assert_eq!(fields(&e), pairs(&[("wasm_module", "invalid")]));
    teaches(&e);

    // The hospitals' data scientist (Python's requests, json=).
    let (status, e) = refusal(
        r#"{"task_type": "federated_learning", "inputs": {"model_name": "patient_diagnosis_v2", "rounds": 10, "epsilon": 1.0, "delta": 0.001}, "requirements": {"min_nodes": 5, "max_execution_time_sec": 3600, "require_gpu": true, "require_proof": true}}"#,
    )
    .await;
    assert_eq!((status, e.error.as_str()), (400, "invalid_inputs"));
    assert_eq!(
        fields(&e),
        pairs(&[
            ("inputs.dataset", "missing"),
            ("inputs.model_name", "unknown"),
            ("requirements.require_gpu", "invalid"),
            ("requirements.require_proof", "invalid"),
        ])
    );
    assert!(e.message.contains("did you mean model?"), "{}", e.message);
    teaches(&e);

    // The climate researchers' curl, byte for byte: `{...}` is not JSON.
    let climate = r#"{
    "task_type": "computation",
    "inputs": {
      "simulation_params": {...},
      "scenario": "climate_2050_high_emissions"
    },
    "requirements": {
      "min_nodes": 10,
      "max_execution_time_sec": 1800,
      "require_gpu": false,
      "require_proof": true
    }
  }"#;
    let (status, e) = refusal(climate).await;
    assert_eq!((status, e.error.as_str()), (400, "invalid_json"));
    assert!(
        e.message.contains("line 4")
            && e.message.contains("{...}")
            && e.message.contains("placeholder"),
        "{}",
        e.message
    );
    // With the placeholder written as `{}`, every field to change.
    let (status, e) = refusal(&climate.replace("{...}", "{}")).await;
    assert_eq!((status, e.error.as_str()), (400, "invalid_inputs"));
    assert_eq!(
        fields(&e),
        pairs(&[
            ("inputs.kernel_base64", "missing"),
            ("inputs.scenario", "unknown"),
            ("inputs.shards or inputs.range", "missing"),
            ("inputs.simulation_params", "unknown"),
            ("requirements.require_proof", "invalid"),
        ])
    );
    teaches(&e);

    // The bank consortium (a Python dict, sent with json=).
    let (status, e) = refusal(
        r#"{"task_type": "federated_learning", "inputs": {"model": "fraud_detection_v1"}, "requirements": {"min_nodes": 3}}"#,
    )
    .await;
    assert_eq!((status, e.error.as_str()), (400, "invalid_inputs"));
    assert_eq!(
        fields(&e),
        pairs(&[
            ("inputs.dataset", "missing"),
            ("inputs.model", "wrong_type")
        ])
    );
    assert_eq!(e.problems[1].example, Some(json!({"type": "logistic"})));
    assert_eq!(e.problems[1].got.as_deref(), Some("\"fraud_detection_v1\""));
    teaches(&e);

    // The generic example with its placeholder type.
    let (status, e) = refusal(
        r#"{"task_type": "your_chosen_type", "inputs": {}, "requirements": {"min_nodes": 1, "max_execution_time_sec": 60}}"#,
    )
    .await;
    assert_eq!((status, e.error.as_str()), (400, "unknown_task_type"));
    assert!(e.message.contains("federated_learning"), "{}", e.message);

    // Nothing was made.
    assert!(client.tasks().await.unwrap().is_empty());
}

/// Connects to the cluster's broker as `user`.
async fn connect_as(
    c: &Cluster,
    user: &str,
    password: &str,
    subscriptions: Vec<String>,
) -> (ambient_link::Link, tokio_util::sync::CancellationToken) {
    let token = tokio_util::sync::CancellationToken::new();
    let link = c
        .mqtt_client(
            (user, password),
            &format!("{user}-probe"),
            subscriptions,
            &token,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    (link, token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_acl_confines_a_node_to_its_own_topics() {
    let c = Cluster::mosquitto(1).await.unwrap();
    let client = c.client();
    let (me, my_password) = c.nodes[0].clone();
    // node-2 has broker credentials but no agent running.
    let victim = "node-2";
    let (intruder, token) =
        connect_as(&c, &me, &my_password, vec![topics::node_tasks(victim)]).await;

    // Forge a health report for the victim, and a garbage one on our own topic.
    let forged = json!({"v": 1, "body": {
        "node_id": victim, "at": chrono::Utc::now(), "cpu_usage_pct": 1.0, "cpu_count": 64,
        "load_avg": [0.0, 0.0, 0.0], "mem_total_bytes": 1u64 << 40, "mem_available_bytes": 1u64 << 40,
        "supported_task_types": ["wasm_execution"], "max_concurrent_tasks": 64, "running_tasks": 0,
        "accepting": true, "wasm_memory_limit_bytes": 1u64 << 30
    }});
    for _ in 0..3 {
        intruder
            .client
            .publish(
                topics::node_health(victim),
                QoS::AtLeastOnce,
                false,
                forged.to_string(),
            )
            .await
            .unwrap();
        intruder
            .client
            .publish(
                topics::node_health(&me),
                QoS::AtLeastOnce,
                false,
                "{{{ not json",
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // A task now goes to the one real node; the intruder never sees the victim's work.
    let (sub, expected) = sum_task(&[100, 200]);
    let info = submit_and_wait(&client, &sub).await;
    assert_eq!(output_sum(&info), expected);
    assert_eq!(info.assigned_nodes, vec![me.clone()]);
    let nodes = client.nodes().await.unwrap();
    assert!(
        nodes.iter().all(|n| n.node_id != victim),
        "the forged health of {victim} reached the coordinator: {nodes:?}"
    );
    let mut intruder = intruder;
    let leaked = tokio::time::timeout(Duration::from_millis(500), async {
        loop {
            if let Some(Incoming::Publish { topic, .. }) = intruder.incoming.recv().await {
                return topic;
            }
        }
    })
    .await;
    assert!(leaked.is_err(), "the intruder received {leaked:?}");
    token.cancel();

    // A wrong password is refused by the broker.
    let token = tokio_util::sync::CancellationToken::new();
    let tracker = tokio_util::task::TaskTracker::new();
    let mut bad = ambient_link::start(
        LinkOptions {
            host: c.mqtt.ip().to_string(),
            port: c.mqtt.port(),
            failover: Vec::new(),
            client_id: "bad-probe".into(),
            credentials: Some((me.clone(), "wrong".into())),
            clean_session: true,
            keep_alive: Duration::from_secs(5),
            last_will: None,
            subscriptions: vec![],
        },
        token.clone(),
        &tracker,
    );
    let refused = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if matches!(
                *bad.state.borrow_and_update(),
                ambient_link::LinkState::Refused(_)
            ) {
                return;
            }
            let _ = bad.state.changed().await;
        }
    })
    .await;
    assert!(refused.is_ok(), "wrong password was not refused");
    assert!(
        bad.incoming.try_recv().is_err(),
        "a refused client got a ConnAck"
    );
    token.cancel();
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_account_cannot_submit_over_mqtt() {
    let c = Cluster::mosquitto(1).await.unwrap();
    let (node, password) = c.nodes[0].clone();
    // The ACL lets every account publish on its own submit topic and read its own answers.
    let (mut link, token) = connect_as(
        &c,
        &node,
        &password,
        vec![topics::submitter_rejections(&node)],
    )
    .await;
    let (sub, _) = sum_task(&[1, 2]);
    link.client
        .publish(
            topics::submit(&node),
            QoS::AtLeastOnce,
            false,
            serde_json::to_vec(&sub).unwrap(),
        )
        .await
        .unwrap();
    let rejection = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(Incoming::Publish { payload, .. }) = link.incoming.recv().await {
                return serde_json::from_slice::<ambient_protocol::ApiError>(&payload).unwrap();
            }
        }
    })
    .await
    .expect("a rejection");
    assert_eq!(rejection.error, "unknown_submitter");
    assert!(c.client().tasks().await.unwrap().is_empty());
    token.cancel();
    c.shutdown().await;
}

/// A third client forges the result of a node that holds a task, on that node's results topic:
/// once unsigned, once signed with a key that is not the one the node published. The embedded
/// broker (no topic ACLs) delivers both; the coordinator drops both before they count, counts
/// them as rejected, and the task completes with the node's own answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_results_for_a_node_do_not_count() {
    let c = Cluster::embedded(1).await.unwrap();
    let client = c.client();
    let victim = c.nodes[0].0.clone();
    // The coordinator knows the node's key before the node runs anything.
    let deadline = tokio::time::Instant::now() + WAIT;
    while !client
        .nodes()
        .await
        .unwrap()
        .iter()
        .any(|n| n.node_id == victim && n.identity.is_some())
    {
        assert!(tokio::time::Instant::now() < deadline, "no identity key");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (forger, forger_password) = c.spare_nodes[0].clone();
    let (link, token) = connect_as(&c, &forger, &forger_password, vec![]).await;

    let busy = wasm_task(modules::BUSY_WAT, json!({}), Requirements::default());
    let id = client.submit(&busy).await.unwrap().task_id;
    let running = wait_status(&client, id, TaskStatus::Running).await;
    assert_eq!(running.assigned_nodes, vec![victim.clone()]);
    let rejected_before = metric(&c, "ambient_mqtt_rejected_total").await;
    let forged = finished_success(id, 1, lie());
    for payload in [
        envelope::encode(&forged),
        envelope::encode_signed(&forged, &victim, &NodeKey::generate()),
    ] {
        link.client
            .publish(
                topics::node_results(&victim),
                QoS::AtLeastOnce,
                false,
                payload,
            )
            .await
            .unwrap();
    }
    let done = client.wait(id, WAIT, |_| {}).await.unwrap();
    assert_eq!(done.status, TaskStatus::Completed, "{done:?}");
    assert_eq!(output_sum(&done), modules::BUSY_OUTPUT, "{done:?}");
    // Both forgeries were seen and dropped (and nothing the node itself said was).
    let deadline = tokio::time::Instant::now() + WAIT;
    let rejected = loop {
        let now = metric(&c, "ambient_mqtt_rejected_total").await;
        if now >= rejected_before + 2 || tokio::time::Instant::now() > deadline {
            break now;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(rejected, rejected_before + 2);
    token.cancel();
    c.shutdown().await;
}

/// The first retained identity message `link` receives on `topic`.
async fn retained_identity(link: &mut ambient_link::Link, topic: &str) -> NodeIdentity {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(Incoming::Publish { topic: t, payload }) = link.incoming.recv().await
                && t == topic
            {
                return envelope::decode(&payload).unwrap();
            }
        }
    })
    .await
    .expect("a retained identity")
}

/// Node identity keys over a real mosquitto: only the node can write its identity topic (not
/// another node, not the coordinator's account), the coordinator knows each key, and blob
/// downloads must be signed by a node with the key it published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_keys_belong_to_their_nodes_and_sign_blob_downloads() {
    let c = Cluster::mosquitto(1).await.unwrap();
    let node = c.nodes[0].0.clone();
    let topic = topics::node_identity(&node);
    let (spare, spare_password) = c.spare_nodes[0].clone();

    // Any account reads the agent's published key, and the coordinator reports the same one.
    let (mut reader, token) = connect_as(&c, &spare, &spare_password, vec![topic.clone()]).await;
    let published = retained_identity(&mut reader, &topic).await;
    token.cancel();
    assert_eq!(published.node, node);
    let identity_of = |nodes: Vec<ambient_protocol::NodeInfo>| {
        nodes
            .into_iter()
            .find(|n| n.node_id == node)
            .and_then(|n| n.identity)
    };
    let known = identity_of(c.client().nodes().await.unwrap());
    assert_eq!(known.as_deref(), Some(published.ed25519.as_str()));

    // Another node and the coordinator's own account try to replace it, retained.
    let forged = NodeKey::generate().identity(&node);
    for (user, password) in [
        (spare.as_str(), spare_password.as_str()),
        ("coordinator", "coordinator-password"),
    ] {
        let (link, token) = connect_as(&c, user, password, vec![]).await;
        link.client
            .publish(
                topic.clone(),
                QoS::AtLeastOnce,
                true,
                envelope::encode(&forged),
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        token.cancel();
    }
    let (spare2, spare2_password) = c.spare_nodes[1].clone();
    let (mut reader, token) = connect_as(&c, &spare2, &spare2_password, vec![topic.clone()]).await;
    assert_eq!(retained_identity(&mut reader, &topic).await, published);
    token.cancel();
    assert_eq!(
        identity_of(c.client().nodes().await.unwrap()).as_deref(),
        Some(published.ed25519.as_str())
    );

    // A node account publishes its own key (allowed), then downloads a blob with it.
    let key = NodeKey::generate();
    let (link, token) = connect_as(&c, &spare, &spare_password, vec![]).await;
    link.client
        .publish(
            topics::node_identity(&spare),
            QoS::AtLeastOnce,
            true,
            envelope::encode(&key.identity(&spare)),
        )
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let blob = b"a blob only nodes may download".to_vec();
    let sha = c.client().put_blob(blob.clone()).await.unwrap();
    let get_once = |node: &str, signer: &NodeKey, sha: &str, time: i64, nonce: &str| {
        let sig = signer.sign(&identity::blob_request_message(node, sha, time, nonce));
        http.get(format!("{}/api/v1/blobs/{sha}", c.conn.api_url))
            .header(identity::HEADER_NODE, node)
            .header(identity::HEADER_TIME, time.to_string())
            .header(identity::HEADER_NONCE, nonce)
            .header(identity::HEADER_SIGNATURE, hex::encode(sig))
            .send()
    };
    let get = |node: &str, signer: &NodeKey, sha: &str, time: i64| {
        get_once(node, signer, sha, time, &identity::nonce())
    };
    let now = chrono::Utc::now().timestamp();
    // The coordinator learns the key from the broker: wait for it.
    let deadline = tokio::time::Instant::now() + WAIT;
    let nonce = loop {
        let nonce = identity::nonce();
        let r = get_once(&spare, &key, &sha, now, &nonce).await.unwrap();
        if r.status() == 200 {
            assert_eq!(r.bytes().await.unwrap().to_vec(), blob);
            break nonce;
        }
        assert!(tokio::time::Instant::now() < deadline, "{}", r.status());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let code = |r: reqwest::Response| async move {
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap();
        (status, body["error"].as_str().unwrap().to_string())
    };
    let other = NodeKey::generate();
    let missing = "0".repeat(64);
    for (response, expected) in [
        // Signed with another key, or in another node's name.
        (get(&spare, &other, &sha, now), (401, "bad_signature")),
        (get(&node, &key, &sha, now), (401, "bad_signature")),
        // A node that never published a key.
        (get(&spare2, &key, &sha, now), (401, "bad_signature")),
        // An old signature replayed.
        (get(&spare, &key, &sha, now - 3600), (401, "stale_request")),
        // The request just served, sent again as it was (captured on the way): served once.
        (
            get_once(&spare, &key, &sha, now, &nonce),
            (401, "replayed_request"),
        ),
        // Without a well-formed nonce.
        (
            get_once(&spare, &key, &sha, now, "0"),
            (401, "unauthorized"),
        ),
        // Signed, but the blob does not exist.
        (get(&spare, &key, &missing, now), (404, "not_found")),
    ] {
        let got = code(response.await.unwrap()).await;
        assert_eq!((got.0, got.1.as_str()), expected);
    }
    let unsigned = http
        .get(format!("{}/api/v1/blobs/{sha}", c.conn.api_url))
        .bearer_auth(&c.conn.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(code(unsigned).await, (401, "unauthorized".to_string()));
    let metrics = http
        .get(format!("{}/metrics", c.conn.api_url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let refused: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("ambient_blob_requests_refused_total "))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(refused >= 7, "{metrics}");
    token.cancel();
    c.shutdown().await;
}
