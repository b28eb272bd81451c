//! Federated learning through the real path (`BENCHMARKS.md`, "Federated learning over MQTT"):
//! five in-process agents, each with a non-IID fifth of the Wisconsin breast cancer training rows
//! in a local CSV, a coordinator and a broker; jobs submitted over REST like a user's.
//!
//! 1. Accuracy on the held-out 20 %: centralised logistic regression (trained here on the pooled
//!    rows, the peer), FedAvg without DP, and FedAvg with DP at ε = 8 and ε = 1 (δ = 10⁻⁵) and
//!    secure aggregation, `--runs` times each (the DP noise comes from the agents' OS randomness).
//! 2. Round latency: the wall time of a job divided by its rounds (the statistics round
//!    included), on mosquitto and on the embedded rumqttd.
//!
//! Build: `cargo build --release --locked -p ambient-e2e --bin ambient-fl-bench`.
//! Usage: `ambient-fl-bench [--runs N]` (mosquitto must be installed; `scripts/test` installs it).

use std::time::{Duration, Instant};

use ambient_e2e::Cluster;
use ambient_fl::data::{Dataset, FeatureStats, breast_cancer, non_iid_split, stratified_split};
use ambient_fl::model::{LocalTraining, ModelSpec, train_local};
use ambient_protocol::{Requirements, TaskStatus, TaskSubmission, TaskType};
use serde_json::{Value, json};

const CLIENTS: usize = 5;

fn load() -> anyhow::Result<(Vec<Dataset>, Dataset)> {
    let (train, test) = stratified_split(&breast_cancer(), 0.2, 7)?;
    Ok((non_iid_split(&train, CLIENTS, 0, 0.3)?, test))
}

/// The peer: logistic regression on the pooled rows, standardised the same way.
fn centralised(clients: &[Dataset], test: &Dataset) -> anyhow::Result<f64> {
    let mut pooled = Dataset::default();
    for c in clients {
        pooled.x.extend(c.x.iter().cloned());
        pooled.y.extend(c.y.iter().copied());
    }
    let (mean, std) = FeatureStats::from_dataset(&pooled).mean_std()?;
    pooled.standardize(&mean, &std)?;
    let mut test = test.clone();
    test.standardize(&mean, &std)?;
    let spec = ModelSpec::logistic(pooled.num_features());
    let cfg = LocalTraining {
        epochs: 100,
        batch_size: 32,
        lr: 0.05,
        l2: 1e-3,
    };
    let (w, _) = train_local(&spec, &spec.init(0), &pooled, &cfg, 1)?;
    Ok(spec.accuracy(&w, &test)?)
}

async fn cluster(mosquitto: bool, clients: &[Dataset]) -> anyhow::Result<Cluster> {
    let mut c = if mosquitto {
        Cluster::mosquitto(CLIENTS as u32).await?
    } else {
        Cluster::embedded(CLIENTS as u32).await?
    };
    c.hold_datasets("breast_cancer", clients).await?;
    Ok(c)
}

/// Runs one job; returns (final accuracy, ε spent, wall time, rounds including round 0).
async fn job(c: &Cluster, inputs: Value) -> anyhow::Result<(f64, Option<f64>, Duration, u32)> {
    let sub = TaskSubmission {
        task_type: TaskType::FederatedLearning,
        wasm_module: None,
        inputs,
        requirements: Requirements {
            min_nodes: CLIENTS as u32,
            ..Requirements::default()
        },
        task_id: None,
    };
    let client = c.client();
    let t = Instant::now();
    let info = client.submit(&sub).await?;
    let done = client
        .wait(info.task_id, Duration::from_secs(600), |_| {})
        .await?;
    let wall = t.elapsed();
    anyhow::ensure!(done.status == TaskStatus::Completed, "{done:?}");
    let out = &done
        .result
        .as_ref()
        .map(|r| r["output"].clone())
        .unwrap_or_default();
    let rounds = out["rounds"].as_array().cloned().unwrap_or_default();
    let acc = rounds
        .last()
        .and_then(|m| m["eval_accuracy"].as_f64())
        .unwrap_or(0.0);
    Ok((
        acc,
        out["privacy"]["epsilon_spent"].as_f64(),
        wall,
        rounds.len() as u32 + 1,
    ))
}

fn inputs(eval: &str, epsilon: Option<f64>) -> Value {
    match epsilon {
        // The in-process study's settings (fl/tests/it/breast_cancer.rs).
        None => json!({"dataset": "breast_cancer", "rounds": 40,
                       "local": {"epochs": 1, "batch_size": 16, "lr": 0.05, "l2": 1e-3},
                       "eval_csv": eval}),
        Some(e) => json!({"dataset": "breast_cancer", "rounds": 10,
                          "local": {"epochs": 20, "batch_size": 16, "lr": 0.2, "l2": 1e-3},
                          "epsilon": e, "delta": 1e-5, "clip_norm": 0.5, "eval_csv": eval}),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let runs: usize = std::env::args()
        .skip_while(|a| a != "--runs")
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let (clients, test) = load()?;
    let eval = test.to_csv("target");
    let central = centralised(&clients, &test)?;

    let c = cluster(true, &clients).await?;
    println!("| Setting | Accuracy (mean of runs) | Min | Max | ε spent | Runs |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| Centralised logistic regression (peer, pooled rows) | {:.1} % | – | – | – | 1 |",
        100.0 * central
    );
    let mut latency = Vec::new();
    for (name, eps, n) in [
        ("FedAvg, no DP, secure aggregation (40 rounds)", None, 1),
        (
            "FedAvg, DP ε = 8, secure aggregation (10 rounds)",
            Some(8.0),
            runs,
        ),
        (
            "FedAvg, DP ε = 1, secure aggregation (10 rounds)",
            Some(1.0),
            runs,
        ),
    ] {
        let mut accs = Vec::new();
        let mut spent = None;
        for _ in 0..n {
            let (acc, eps_spent, wall, rounds) = job(&c, inputs(&eval, eps)).await?;
            accs.push(acc);
            spent = eps_spent;
            latency.push(("mosquitto", wall / rounds));
        }
        let mean = accs.iter().sum::<f64>() / accs.len() as f64;
        let min = accs.iter().copied().fold(1.0, f64::min);
        let max = accs.iter().copied().fold(0.0, f64::max);
        println!(
            "| {name} | {:.1} % | {:.1} % | {:.1} % | {} | {n} |",
            100.0 * mean,
            100.0 * min,
            100.0 * max,
            spent.map_or("–".into(), |e| format!("{e:.3}")),
        );
    }
    c.shutdown().await;

    let c = cluster(false, &clients).await?;
    for _ in 0..3 {
        let (_, _, wall, rounds) = job(&c, inputs(&eval, Some(8.0))).await?;
        latency.push(("embedded rumqttd", wall / rounds));
    }
    c.shutdown().await;
    println!("\n| Broker | Round latency, 5 agents, secure aggregation (median) | Jobs |");
    println!("|---|---|---|");
    for broker in ["mosquitto", "embedded rumqttd"] {
        let mut v: Vec<Duration> = latency
            .iter()
            .filter(|(b, _)| *b == broker)
            .map(|(_, d)| *d)
            .collect();
        v.sort();
        println!(
            "| {broker} | {:.1} ms | {} |",
            v[v.len() / 2].as_secs_f64() * 1000.0,
            v.len()
        );
    }
    Ok(())
}
