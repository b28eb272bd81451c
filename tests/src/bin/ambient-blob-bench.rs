//! Artifacts by reference and resumed federated jobs (`BENCHMARKS.md`, "Blobs by reference and
//! restarts"), on a real mosquitto:
//!
//! 1. `zk_proof` (hash chain, n = 64) submit → result with the 4.9 MB proving key inline in every
//!    MQTT assignment (the peer: `limits.inline_artifact_bytes` raised above it) and by reference
//!    (the agent downloads it once over signed HTTP and caches it). One agent, tasks one after
//!    another; the first task of each mode is reported apart (a cold cache, and the agent's
//!    prover cache).
//! 2. A federated MLP job (19 201 parameters, so its model travels as a blob) on 3 agents: the
//!    median round without a restart (the peer), and the time from a coordinator restart to the
//!    resumed job finishing its next round.
//!
//! Build: `cargo build --release --locked -p ambient-e2e --bin ambient-blob-bench`.
//! Usage: `ambient-blob-bench [--tasks N]`.

use std::time::{Duration, Instant};

use ambient_e2e::Cluster;
use ambient_fl::data::{breast_cancer, non_iid_split, stratified_split};
use ambient_protocol::{Requirements, TaskStatus, TaskSubmission, TaskType};
use serde_json::json;

fn arg(name: &str, default: usize) -> usize {
    std::env::args()
        .skip_while(|a| a != name)
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn task(task_type: TaskType, inputs: serde_json::Value, min_nodes: u32) -> TaskSubmission {
    TaskSubmission {
        task_type,
        wasm_module: None,
        inputs,
        requirements: Requirements {
            min_nodes,
            ..Requirements::default()
        },
        task_id: None,
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

/// `n` zk tasks one after another: the first one's latency, and the median of the rest.
async fn zk_latencies(c: &Cluster, n: usize) -> anyhow::Result<(Duration, Duration)> {
    let client = c.client();
    let mut times = Vec::new();
    for i in 0..n {
        let sub = task(
            TaskType::ZkProof,
            json!({"circuit": "hash_chain", "x": (i + 1).to_string(), "n": 64}),
            1,
        );
        let t = Instant::now();
        let info = client.submit(&sub).await?;
        let done = client
            .wait(info.task_id, Duration::from_secs(120), |_| {})
            .await?;
        anyhow::ensure!(done.status == TaskStatus::Completed, "{done:?}");
        times.push(t.elapsed());
    }
    let first = times.remove(0);
    Ok((first, median(times)))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n = arg("--tasks", 15);
    let mut c = Cluster::mosquitto(1).await?;
    let circuits: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/api/v1/circuits", c.conn.api_url))
        .bearer_auth(&c.conn.api_key)
        .send()
        .await?
        .json()
        .await?;
    let key_bytes = circuits[0]["instances"][0]["proving_key_bytes"].clone();
    println!(
        "| `zk_proof` (hash chain, n = 64; proving key {key_bytes} bytes) | First task | Median of the next {} |",
        n - 1
    );
    println!("|---|---|---|");
    for (label, inline) in [
        ("Key inline in each MQTT assignment (peer)", 8usize << 20),
        ("Key by reference (signed HTTP, cached)", 1 << 20),
    ] {
        c.stop_coordinator().await;
        c.coordinator_config().limits.inline_artifact_bytes = inline;
        c.start_coordinator().await?;
        // A fresh agent: empty blob cache, empty prover cache.
        c.stop_agent(0).await;
        let _ = std::fs::remove_dir_all(c.agent_dir(0).join("blobs"));
        c.start_agent(0).await?;
        c.client()
            .wait_for_nodes(1, Duration::from_secs(20))
            .await?;
        let (first, rest) = zk_latencies(&c, n).await?;
        println!("| {label} | {} | {} |", ms(first), ms(rest));
    }
    c.shutdown().await;

    let mut c = Cluster::mosquitto(3).await?;
    let (train, test) = stratified_split(&breast_cancer(), 0.2, 7)?;
    c.hold_datasets("breast_cancer", &non_iid_split(&train, 3, 0, 0.3)?)
        .await?;
    let job = json!({
        "dataset": "breast_cancer",
        "model": {"type": "mlp", "hidden": [600]},
        "rounds": 8,
        "local": {"epochs": 5, "batch_size": 16, "lr": 0.05, "l2": 1e-3},
        "round_timeout_sec": 30,
        "eval_csv": test.to_csv("target"),
    });
    let id = c
        .client()
        .submit(&task(TaskType::FederatedLearning, job, 3))
        .await?
        .task_id;
    // Round k begins when round k - 1 ends: the time between progress steps is a round.
    let mut steps = Vec::new();
    let mut last = (0, Instant::now());
    while last.0 < 5 {
        let info = c.client().task(id).await?;
        let done = info.progress.map_or(0, |p| p.done);
        if done > last.0 {
            steps.push(last.1.elapsed());
            last = (done, Instant::now());
        }
        anyhow::ensure!(!info.status.is_terminal(), "{info:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let round = median(steps[2..].to_vec());
    c.stop_coordinator().await;
    let restarted = Instant::now();
    c.start_coordinator().await?;
    // The round interrupted is run again (no DP): wait until the job is past it.
    loop {
        let info = c.client().task(id).await?;
        if info.progress.map_or(0, |p| p.done) > last.0 {
            break;
        }
        anyhow::ensure!(!info.status.is_terminal(), "{info:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let resumed = restarted.elapsed();
    let done = c
        .client()
        .wait(id, Duration::from_secs(300), |_| {})
        .await?;
    anyhow::ensure!(done.status == TaskStatus::Completed, "{done:?}");
    let out = &done.result.as_ref().expect("result")["output"];
    println!();
    println!("| Federated MLP, 19 201 parameters by blob, 3 agents, secure aggregation | Time |");
    println!("|---|---|");
    println!(
        "| A round, no restart (median of rounds 3–5; peer) | {} |",
        ms(round)
    );
    println!(
        "| Coordinator restart → the interrupted round re-run and done | {} |",
        ms(resumed)
    );
    println!(
        "| Result: interrupted rounds {}, final accuracy {:.3} |  |",
        out["interrupted"],
        out["rounds"]
            .as_array()
            .and_then(|r| r.last())
            .map_or(f64::NAN, |r| r["eval_accuracy"]
                .as_f64()
                .unwrap_or(f64::NAN))
    );
    c.shutdown().await;
    Ok(())
}
