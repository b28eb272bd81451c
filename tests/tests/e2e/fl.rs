//! Federated learning over a real mosquitto: five agents, each holding a non-IID fifth of the
//! Wisconsin breast cancer data in a local CSV file, train a logistic regression with DP
//! (ε = 8) and secure aggregation, driven by the coordinator over MQTT. A subscriber on `#`
//! (the harness's test-only wiretap account) records every message: no raw row
//! crosses the broker, and the masked updates look uniformly random. A second job loses an agent
//! mid-job and completes with the survivors.

use std::time::Duration;

use ambient_e2e::Cluster;
use ambient_fl::data::{Dataset, breast_cancer, non_iid_split, stratified_split};
use ambient_fl::wire::ToClient;
use ambient_protocol::{
    AgentEvent, Control, Requirements, TaskStatus, TaskSubmission, TaskType, envelope,
};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{Value, json};

use crate::util::*;

/// The five clients' data and the evaluation CSV.
fn split() -> (Vec<Dataset>, String) {
    let (train, test) = stratified_split(&breast_cancer(), 0.2, 7).unwrap();
    (
        non_iid_split(&train, 5, 0, 0.3).unwrap(),
        test.to_csv("target"),
    )
}

fn fl_task(inputs: Value, clients: u32) -> TaskSubmission {
    TaskSubmission {
        task_type: TaskType::FederatedLearning,
        wasm_module: None,
        inputs,
        requirements: Requirements {
            min_nodes: clients,
            ..Requirements::default()
        },
        task_id: None,
    }
}

/// Records every message on the broker.
async fn tap(c: &Cluster) -> std::sync::Arc<std::sync::Mutex<Vec<(String, Vec<u8>)>>> {
    let mut opts = MqttOptions::new("privacy-tap", c.mqtt.ip().to_string(), c.mqtt.port());
    opts.set_credentials(
        ambient_e2e::mosquitto::TAP_USER,
        ambient_e2e::mosquitto::TAP_PASSWORD,
    );
    opts.set_max_packet_size(16 << 20, 16 << 20);
    let (client, mut events) = AsyncClient::new(opts, 1024);
    client.subscribe("#", QoS::AtLeastOnce).await.unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = seen.clone();
    tokio::spawn(async move {
        let _client = client;
        while let Ok(ev) = events.poll().await {
            if let Event::Incoming(Packet::Publish(p)) = ev {
                sink.lock().unwrap().push((p.topic, p.payload.to_vec()));
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    seen
}

fn numbers(v: &Value, out: &mut Vec<Vec<f64>>) {
    match v {
        Value::Array(a) => {
            out.push(a.iter().filter_map(Value::as_f64).collect());
            a.iter().for_each(|x| numbers(x, out));
        }
        Value::Object(m) => m.values().for_each(|x| numbers(x, out)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federated_learning_with_dp_and_secure_aggregation_over_mqtt() {
    let mut c = Cluster::mosquitto(5).await.unwrap();
    let (clients, eval) = split();
    c.hold_datasets("breast_cancer", &clients).await.unwrap();
    let client = c.client();
    // Every agent advertises the data set's size, never its rows.
    for n in client.nodes().await.unwrap() {
        let d = &n.health.as_ref().unwrap().datasets[0];
        assert_eq!((d.name.as_str(), d.features), ("breast_cancer", 30));
    }
    let seen = tap(&c).await;

    // An evaluation set with a feature column fewer than the holders' data set is refused at
    // submission, not when the job starts.
    let short_eval: String = eval
        .lines()
        .map(|l| {
            let cells: Vec<&str> = l.split(',').collect();
            let drop = eval
                .lines()
                .next()
                .unwrap()
                .split(',')
                .position(|h| h != "target")
                .unwrap();
            let kept: Vec<&str> = cells
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != drop)
                .map(|(_, c)| *c)
                .collect();
            kept.join(",") + "\n"
        })
        .collect();
    let short = json!({"dataset": "breast_cancer", "eval_csv": short_eval});
    match client.submit(&fl_task(short, 5)).await {
        Err(ambient_cli::client::ClientError::Api { status, body }) => {
            assert_eq!(
                (status, body.error.as_str()),
                (400, "invalid_inputs"),
                "{}",
                body.message
            );
            assert!(
                body.message.contains("29 feature columns"),
                "{}",
                body.message
            );
        }
        other => panic!("a 29-feature eval_csv was not refused: {other:?}"),
    }

    let job = json!({
        "dataset": "breast_cancer",
        "rounds": 10,
        "local": {"epochs": 20, "batch_size": 16, "lr": 0.2, "l2": 1e-3},
        "epsilon": 8.0,
        "delta": 1e-5,
        "clip_norm": 0.5,
        "eval_csv": eval,
    });
    let info = client.submit(&fl_task(job.clone(), 5)).await.unwrap();
    let mut progress = Vec::new();
    let done = client
        .wait(info.task_id, Duration::from_secs(300), |i| {
            progress.push(i.progress)
        })
        .await
        .unwrap();
    assert_eq!(done.status, TaskStatus::Completed, "{done:?}");
    let out = &done.result.as_ref().unwrap()["output"];
    let rounds = out["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 10);
    let accuracy = rounds.last().unwrap()["eval_accuracy"].as_f64().unwrap();
    let spent = out["privacy"]["epsilon_spent"].as_f64().unwrap();
    eprintln!("ε = 8 + secure aggregation over MQTT: accuracy {accuracy:.3}, ε spent {spent:.3}");
    assert!(accuracy > 0.85, "{out}");
    assert!(spent <= 8.0 + 1e-9 && spent > 7.0, "{spent}");
    assert_eq!(out["secure_aggregation"], true);
    assert_eq!(
        out["total_rows"],
        clients.iter().map(|d| d.len()).sum::<usize>()
    );
    assert!(
        progress.iter().flatten().any(|p| p.total == 11),
        "no progress was shown: {progress:?}"
    );

    // No raw row crossed the broker: no number array on any topic holds the first four
    // features of any client's row, in order.
    let seen = seen.lock().unwrap().clone();
    assert!(seen.len() > 100, "the tap saw only {} messages", seen.len());
    let mut arrays = Vec::new();
    for (_, payload) in &seen {
        if let Ok(v) = serde_json::from_slice::<Value>(payload) {
            numbers(&v, &mut arrays);
        }
    }
    for d in &clients {
        for row in &d.x {
            let head: Vec<f64> = row[..4].iter().map(|x| f64::from(*x)).collect();
            assert!(
                !arrays.iter().any(|a| a
                    .windows(4)
                    .any(|w| w.iter().zip(&head).all(|(p, q)| (p - q).abs() < 1e-6))),
                "a raw row crossed the broker: {head:?}"
            );
        }
    }
    // A masked update is spread uniformly over Z_2^32: the top 4 bits of its values fill 16
    // buckets evenly (χ², 15 degrees of freedom, p = 0.001 at 37.7), where the plain encoding of
    // a small update would sit in the first and last bucket.
    let mut masked: Vec<u32> = Vec::new();
    for (topic, payload) in &seen {
        if !topic.ends_with("/results") {
            continue;
        }
        if let Ok(AgentEvent::Fl { msg, .. }) = envelope::decode(payload)
            && let Ok(ambient_fl::wire::ToServer::Update { round, y }) = serde_json::from_value(msg)
            && round >= 1
        {
            masked.extend(y);
        }
    }
    assert!(
        masked.len() >= 5 * 10 * 33,
        "{} masked values",
        masked.len()
    );
    let mut buckets = [0f64; 16];
    masked
        .iter()
        .for_each(|v| buckets[(v >> 28) as usize] += 1.0);
    let expected = masked.len() as f64 / 16.0;
    let chi2: f64 = buckets
        .iter()
        .map(|b| (b - expected).powi(2) / expected)
        .sum();
    assert!(
        chi2 < 37.7,
        "masked updates are not uniform: χ² = {chi2}, {buckets:?}"
    );
    // Every roster the coordinator relayed holds keys signed by the nodes themselves, under the
    // identity keys they published.
    let nodes = client.nodes().await.unwrap();
    let mut rosters = 0;
    for (topic, payload) in &seen {
        let Ok(Control::Fl { msg, .. }) = envelope::decode(payload) else {
            continue;
        };
        let Ok(ToClient::Roster { roster, .. }) = serde_json::from_value(msg) else {
            continue;
        };
        rosters += 1;
        assert!(topic.ends_with("/control"), "{topic}");
        for k in roster {
            let s = k.signature.expect("signed keys");
            let id = nodes.iter().find(|n| n.node_id == s.node).unwrap();
            assert!(id.identity.is_some(), "{} has no identity", s.node);
        }
    }
    assert!(rosters >= 5 * 11, "{rosters} rosters");

    // A second job, without DP, loses an agent after round 2 has begun: the survivors remove its
    // masks and the job completes without it.
    let mut plain = job.clone();
    plain["epsilon"] = Value::Null;
    plain["round_timeout_sec"] = json!(3);
    plain["rounds"] = json!(4);
    let id = client.submit(&fl_task(plain, 5)).await.unwrap().task_id;
    let deadline = tokio::time::Instant::now() + WAIT;
    let info = loop {
        let info = client.task(id).await.unwrap();
        if info.progress.is_some_and(|p| p.done >= 2) {
            break info;
        }
        assert!(!info.status.is_terminal(), "{info:?}");
        assert!(tokio::time::Instant::now() < deadline, "{info:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let victim = c.agent_index(&info.assigned_nodes[4]);
    c.kill_agent(victim).await;
    let done = client
        .wait(id, Duration::from_secs(120), |_| {})
        .await
        .unwrap();
    assert_eq!(done.status, TaskStatus::Completed, "{done:?}");
    let rounds = done.result.as_ref().unwrap()["output"]["rounds"].clone();
    let last = rounds.as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["clients"], 4, "{rounds}");
    assert!(last["eval_accuracy"].as_f64().unwrap() > 0.9, "{rounds}");
    c.shutdown().await;
}

/// A model too large for an MQTT message travels as a blob, which the agents download with
/// signed requests; and the coordinator restarts mid-job: the job resumes from its checkpoint,
/// re-runs the interrupted round (no DP) and completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_models_travel_by_blob_and_jobs_survive_a_coordinator_restart() {
    let mut c = Cluster::mosquitto(3).await.unwrap();
    let (train, test) = stratified_split(&breast_cancer(), 0.2, 7).unwrap();
    let clients = non_iid_split(&train, 3, 0, 0.3).unwrap();
    c.hold_datasets("breast_cancer", &clients).await.unwrap();
    let client = c.client();
    let seen = tap(&c).await;
    // 30·600 + 600 + 600 + 1 = 19 201 parameters: more than the coordinator sends inline.
    let job = json!({
        "dataset": "breast_cancer",
        "model": {"type": "mlp", "hidden": [600]},
        "rounds": 5,
        "local": {"epochs": 5, "batch_size": 16, "lr": 0.05, "l2": 1e-3},
        "round_timeout_sec": 10,
        "eval_csv": test.to_csv("target"),
    });
    let id = client.submit(&fl_task(job, 3)).await.unwrap().task_id;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let info = client.task(id).await.unwrap();
        if info.progress.is_some_and(|p| p.done >= 2) {
            break;
        }
        assert!(!info.status.is_terminal(), "{info:?}");
        assert!(tokio::time::Instant::now() < deadline, "{info:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.stop_coordinator().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.start_coordinator().await.unwrap();
    let done = c
        .client()
        .wait(id, Duration::from_secs(180), |_| {})
        .await
        .unwrap();
    assert_eq!(done.status, TaskStatus::Completed, "{done:?}");
    let out = &done.result.as_ref().unwrap()["output"];
    let interrupted = out["interrupted"].as_array().expect("interrupted rounds");
    assert_eq!(interrupted.len(), 1, "{out}");
    let rounds = out["rounds"].as_array().unwrap();
    assert_eq!(
        rounds.len(),
        5,
        "a re-run round still gives every round: {out}"
    );
    assert_eq!(out["weights"].as_array().unwrap().len(), 19_201);
    let accuracy = rounds.last().unwrap()["eval_accuracy"].as_f64().unwrap();
    assert!(accuracy > 0.85, "{out}");

    // Every training round's model went out as a blob reference, never inline.
    let seen = seen.lock().unwrap().clone();
    let mut by_blob = 0;
    for (_, payload) in &seen {
        let Ok(Control::Fl {
            msg, weights_blob, ..
        }) = envelope::decode(payload)
        else {
            continue;
        };
        if let Ok(ToClient::Begin { round, weights, .. }) = serde_json::from_value(msg)
            && round >= 1
        {
            assert!(weights.is_empty(), "round {round} sent its weights inline");
            assert!(weights_blob.is_some(), "round {round} named no blob");
            by_blob += 1;
        }
    }
    // 3 clients × 5 rounds at least (the interrupted round's first `Begin`s may not have gone
    // out before the coordinator stopped).
    assert!(by_blob >= 3 * 5, "{by_blob} blob references");
    // And the coordinator deleted each round's model blob once the round was over.
    let models_left = || {
        let conn = rusqlite::Connection::open(c.coordinator_db()).unwrap();
        conn.query_row(
            "SELECT count(*) FROM blobs WHERE length(bytes) = ?1",
            [19_201 * 4],
            |r| r.get::<_, i64>(0),
        )
        .unwrap()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while models_left() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "model blobs left");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.shutdown().await;
}
