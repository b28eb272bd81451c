//! `ambient-cluster-soak`: the whole network past one machine, under random SIGKILLs.
//!
//! Starts, as separate OS processes on loopback: a throwaway PostgreSQL, a NATS broker cluster
//! (`--brokers`, default 3), coordinators on that store (`--coordinators`, default 2) and agents
//! (`--agents`, default 4), each agent and coordinator knowing every broker node. Then submits
//! `--tasks` tasks (default 2000): wasm sums with `min_nodes` 1 and 2, a sharded π computation, a
//! `zk_proof` and a federated job, over REST to the coordinators in turn and over MQTT; and
//! meanwhile, every `--kill-every` seconds (default 4), kills an agent, a coordinator or a broker
//! node in turn (which one at random) with SIGKILL, and starts it again 2 s later.
//!
//! Every task is checked against its known answer; the database is read for judgements recorded
//! twice, and its credits ledger audited ([`ambient_protocol::credits::Audit`]: unbalanced
//! transactions, accounts below zero, a node paid twice for a task, a task settled twice, charges
//! that differ from pay plus fee). The last line printed is one JSON object:
//! `{"tasks", "completed", "wrong", "lost", "duplicated", "credits": {"charged", "paid", "fee",
//! "postings", "counted_twice"}, "resubmitted", "kills": {"agent", "coordinator", "broker"},
//! "seconds"}`; the exit code is 0 only when wrong, lost, duplicated and counted_twice are 0 and
//! each kind of kill happened.
//!
//! `lost` counts tasks that did not complete (failed, expired, or never finished); `resubmitted`
//! counts MQTT submissions whose answer never came and that the soak sent again over REST with
//! the same task id (a client's retry: the same task if it had arrived).
//!
//! Build: `cargo build --release --locked -p ambient-e2e --bin ambient-cluster-soak
//! -p ambient-coordinator -p ambient-agent` (the binaries must sit side by side), or run
//! `scripts/cluster-soak`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ambient_cli::client::{Client, ClientError, submit_over_mqtt};
use ambient_cli::local::{Connection, agent_config};
use ambient_cli::modules;
use ambient_e2e::nats::NatsCluster;
use ambient_e2e::postgres::Postgres;
use ambient_e2e::process::{CoordinatorProcess, ServiceProcess};
use ambient_fl::data::{breast_cancer, non_iid_split, stratified_split};
use ambient_protocol::credits::{Audit, LedgerEntry};
use ambient_protocol::{Requirements, TaskInfo, TaskStatus, TaskSubmission, TaskType};
use base64::Engine as _;
use rand::Rng as _;
use serde_json::json;
use uuid::Uuid;

const SUBMITTER: &str = "soak";
const API_KEY: &str = "soak-api-key-0123456789";

fn arg(name: &str, default: u64) -> u64 {
    std::env::args()
        .skip_while(|a| a != name)
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What a task must answer.
#[derive(Debug, Clone)]
enum Expect {
    Sum(u64),
    PiHits(u64),
    HashChain(String),
    Federated,
}

impl Expect {
    fn holds(&self, info: &TaskInfo) -> bool {
        let out = info
            .result
            .as_ref()
            .map(|r| r["output"].clone())
            .unwrap_or_default();
        match self {
            Expect::Sum(s) => out["sum"].as_u64() == Some(*s),
            Expect::PiHits(h) => out["hits"].as_u64() == Some(*h),
            Expect::HashChain(y) => out["y"].as_str() == Some(y) && info.proof_id.is_some(),
            // All three rounds, and a model that learnt (the demo's job reaches 0.96).
            Expect::Federated => {
                let rounds = out["rounds"].as_array().cloned().unwrap_or_default();
                if let Some(retried) = out.get("retried") {
                    eprintln!("soak: the federated job ran rounds {retried} again");
                }
                rounds.len() == 3
                    && rounds[2]["eval_accuracy"]
                        .as_f64()
                        .is_some_and(|a| a >= 0.85)
            }
        }
    }
}

struct Job {
    sub: TaskSubmission,
    expect: Expect,
    over_mqtt: bool,
}

fn jobs(n: usize, eval_csv: String) -> Vec<Job> {
    let mut jobs = Vec::new();
    let wasm = base64::engine::general_purpose::STANDARD.encode(modules::wasm(modules::SUM_WAT));
    let special = 3;
    for i in 0..n.saturating_sub(special) {
        let inputs = json!({"numbers": [i, 2 * i + 1, 7], "soak": i});
        let expect = Expect::Sum(modules::expected_sum(&inputs.to_string()));
        let sub = TaskSubmission {
            task_type: TaskType::WasmExecution,
            wasm_module: Some(wasm.clone()),
            inputs,
            requirements: Requirements {
                min_nodes: if i % 4 == 0 { 2 } else { 1 },
                ..Requirements::default()
            },
            task_id: Some(Uuid::new_v4()),
        };
        jobs.push(Job {
            sub,
            expect,
            over_mqtt: i % 10 == 5,
        });
    }
    let samples = 4_000_000;
    let mut pi = ambient_cli::demo::pi_task(samples, 8);
    pi.task_id = Some(Uuid::new_v4());
    jobs.push(Job {
        sub: pi,
        expect: Expect::PiHits(modules::expected_pi_hits(0, samples)),
        over_mqtt: false,
    });
    let y = ambient_zk::mimc::hash_chain(ambient_zk::Fr::from(11u64), 64).to_string();
    jobs.push(Job {
        sub: TaskSubmission {
            task_type: TaskType::ZkProof,
            wasm_module: None,
            inputs: json!({"circuit": "hash_chain", "x": "11", "n": 64}),
            requirements: Requirements {
                require_proof: true,
                ..Requirements::default()
            },
            task_id: Some(Uuid::new_v4()),
        },
        expect: Expect::HashChain(y),
        over_mqtt: false,
    });
    jobs.push(Job {
        sub: TaskSubmission {
            task_type: TaskType::FederatedLearning,
            wasm_module: None,
            inputs: json!({
                "dataset": "breast_cancer",
                "rounds": 3,
                "local": {"epochs": 10, "batch_size": 16, "lr": 0.2, "l2": 1e-3},
                "eval_csv": eval_csv,
            }),
            requirements: Requirements {
                min_nodes: 2,
                ..Requirements::default()
            },
            task_id: Some(Uuid::new_v4()),
        },
        expect: Expect::Federated,
        over_mqtt: false,
    });
    jobs
}

/// Submits over REST to the coordinators in turn from `first` until one accepts.
async fn submit(clients: &[Client], first: usize, sub: &TaskSubmission) -> anyhow::Result<()> {
    ambient_e2e::submit_until_accepted(clients, first, sub, Duration::from_secs(120)).await?;
    Ok(())
}

/// The task as any coordinator tells it.
async fn read(clients: &[Client], id: Uuid) -> Option<Result<TaskInfo, ClientError>> {
    for c in clients {
        match c.task(id).await {
            Ok(info) => return Some(Ok(info)),
            Err(e @ ClientError::Api { status: 404, .. }) => return Some(Err(e)),
            Err(_) => continue,
        }
    }
    None
}

struct Fleet {
    nats: NatsCluster,
    coordinators: Vec<CoordinatorProcess>,
    agents: Vec<ServiceProcess>,
    kills: HashMap<&'static str, u64>,
}

impl Fleet {
    /// Kills one member of `kind` at random with SIGKILL, waits 2 s, starts it again.
    async fn kill_one(&mut self, kind: &'static str) -> anyhow::Result<()> {
        let pick = |n: usize| rand::rng().random_range(0..n);
        match kind {
            "agent" => {
                let i = pick(self.agents.len());
                self.agents[i].kill();
                tokio::time::sleep(Duration::from_secs(2)).await;
                self.agents[i].restart()?;
            }
            "coordinator" => {
                let i = pick(self.coordinators.len());
                self.coordinators[i].kill();
                tokio::time::sleep(Duration::from_secs(2)).await;
                self.coordinators[i].restart().await?;
            }
            _ => {
                // One node down at a time: a node that is still recovering from the last kill
                // (JetStream catching up) is waited for, and while any is not back, no other
                // is killed (two down of three would be a lost quorum, not a fault to survive).
                let n = self.nats.mqtt_addresses().len();
                for j in 0..n {
                    if self.nats.wait_ready(j).await.is_err() {
                        eprintln!("soak: broker node {j} is not back yet; no broker kill");
                        return Ok(());
                    }
                }
                let i = pick(n);
                self.nats.kill(i);
                tokio::time::sleep(Duration::from_secs(2)).await;
                self.nats.restart(i).await?;
            }
        }
        *self.kills.entry(kind).or_default() += 1;
        Ok(())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let tasks = arg("--tasks", 2000) as usize;
    let n_agents = arg("--agents", 4) as usize;
    let n_coordinators = arg("--coordinators", 2) as usize;
    let n_brokers = arg("--brokers", 3) as usize;
    let kill_every = Duration::from_secs(arg("--kill-every", 4));
    let started = Instant::now();
    let dir = tempfile::Builder::new().prefix("ambient-soak-").tempdir()?;

    let pg = Postgres::start()?;
    let store = pg.create_database("soak")?;
    let secret = |who: &str| format!("{who}-{}", Uuid::new_v4().simple());
    let mut users = vec![
        ("coordinator".to_string(), secret("coordinator")),
        (SUBMITTER.to_string(), secret(SUBMITTER)),
    ];
    users.extend((1..=n_agents).map(|i| (format!("node-{i}"), secret("node"))));
    let nats = NatsCluster::start(n_brokers, &users).await?;
    let brokers: Vec<String> = nats
        .mqtt_addresses()
        .iter()
        .map(|(h, p)| format!("{h}:{p}"))
        .collect();
    // Each member's first broker is its own node; the others are its failover list.
    let rotate = |i: usize| -> (std::net::SocketAddr, Vec<String>) {
        let n = brokers.len();
        let first = brokers[i % n].parse().expect("an address");
        (
            first,
            (1..n).map(|k| brokers[(i + k) % n].clone()).collect(),
        )
    };
    eprintln!("soak: PostgreSQL and {n_brokers} NATS nodes up");

    let mut coordinators = Vec::new();
    for i in 0..n_coordinators {
        let mut cfg: ambient_coordinator::Config =
            toml::from_str(ambient_coordinator::config::EXAMPLE)?;
        let (first, failover) = rotate(i);
        cfg.data_dir = dir.path().join(format!("coordinator-{i}"));
        cfg.store = Some(store.clone());
        cfg.http_addr = format!("127.0.0.1:{}", ambient_e2e::free_port()?).parse()?;
        cfg.mqtt.host = first.ip().to_string();
        cfg.mqtt.port = first.port();
        cfg.mqtt.failover = failover;
        cfg.mqtt.password = users[0].1.clone();
        cfg.api_keys = vec![ambient_coordinator::config::ApiKey {
            submitter: SUBMITTER.into(),
            key: API_KEY.into(),
        }];
        cfg.scheduler.tick_ms = 100;
        cfg.scheduler.health_timeout_sec = 6;
        cfg.scheduler.lease_grace_sec = 10;
        cfg.scheduler.max_retries = 20;
        cfg.scheduler.leader_lease_sec = 5;
        let dir = dir.path().join(format!("coordinator-{i}"));
        coordinators.push(CoordinatorProcess::start(&cfg, &dir).await?);
    }
    let clients: Vec<Client> = coordinators
        .iter()
        .map(|c| Client::new(&c.url, API_KEY))
        .collect();
    eprintln!("soak: {n_coordinators} coordinators up");

    let (train, test) = stratified_split(&breast_cancer(), 0.2, 7)?;
    let parts = non_iid_split(&train, n_agents, 0, 0.3)?;
    let mut agents = Vec::new();
    for (i, (node, password)) in users[2..].iter().enumerate() {
        let (first, failover) = rotate(i + 1);
        let mut cfg = agent_config(
            dir.path(),
            node,
            first,
            password,
            &coordinators[i % n_coordinators].url,
            1.0,
        );
        cfg.mqtt.failover = failover;
        cfg.mqtt.keep_alive_sec = 3;
        let csv = dir.path().join(format!("breast-cancer-{i}.csv"));
        std::fs::write(&csv, parts[i].to_csv("target"))?;
        cfg.datasets = vec![ambient_agent::config::DatasetConfig {
            name: "breast_cancer".into(),
            path: csv,
            label: "target".into(),
            features: None,
        }];
        let toml = toml::to_string(&cfg)?;
        agents.push(ServiceProcess::start(
            "ambient-agent",
            &toml,
            &dir.path().join(node),
        )?);
    }
    clients[0]
        .wait_for_nodes(n_agents, Duration::from_secs(60))
        .await?;
    eprintln!("soak: {n_agents} agents online; submitting {tasks} tasks");

    let fleet = Arc::new(tokio::sync::Mutex::new(Fleet {
        nats,
        coordinators,
        agents,
        kills: HashMap::new(),
    }));
    let stop = Arc::new(AtomicBool::new(false));
    let chaos = {
        let fleet = fleet.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            // The quick restarts first and the broker last (its restart waits for JetStream to
            // catch up), so that even a short run kills every kind once before it ends.
            let kinds = ["agent", "coordinator", "broker"];
            let mut k = 0;
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(kill_every).await;
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let kind = kinds[k % kinds.len()];
                k += 1;
                if let Err(e) = fleet.lock().await.kill_one(kind).await {
                    let first = e.to_string().lines().next().unwrap_or_default().to_string();
                    eprintln!("soak: restarting a {kind} failed: {first}");
                }
            }
        })
    };

    let jobs = jobs(tasks, test.to_csv("target"));
    let expect: HashMap<Uuid, Expect> = jobs
        .iter()
        .map(|j| (j.sub.task_id.expect("set"), j.expect.clone()))
        .collect();
    let mut resubmitted = 0u64;
    let mut mqtt_jobs = tokio::task::JoinSet::new();
    let conn = |broker: &str| -> Connection {
        let addr: std::net::SocketAddr = broker.parse().expect("an address");
        Connection {
            api_url: String::new(),
            api_key: API_KEY.into(),
            submitter: SUBMITTER.into(),
            mqtt_host: addr.ip().to_string(),
            mqtt_port: addr.port(),
            mqtt_username: SUBMITTER.into(),
            mqtt_password: users[1].1.clone(),
            admin_key: None,
            join_token: None,
        }
    };
    for (i, job) in jobs.iter().enumerate() {
        if job.over_mqtt {
            let c = conn(&brokers[i % brokers.len()]);
            let sub = job.sub.clone();
            mqtt_jobs.spawn(async move {
                let id = sub.task_id.expect("set");
                (
                    id,
                    submit_over_mqtt(&c, sub.clone(), Duration::from_secs(90))
                        .await
                        .is_ok(),
                    sub,
                )
            });
        } else {
            submit(&clients, i, &job.sub).await?;
        }
        if i % 200 == 199 {
            eprintln!("soak: {} submitted", i + 1);
        }
    }
    while let Some(done) = mqtt_jobs.join_next().await {
        let (id, answered, sub) = done?;
        if !answered && matches!(read(&clients, id).await, Some(Err(_)) | None) {
            resubmitted += 1;
            submit(&clients, 0, &sub).await?;
        }
    }
    eprintln!("soak: all submitted; waiting for the answers");

    // Every task to an end, or the deadline.
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut open: Vec<Uuid> = expect.keys().copied().collect();
    let mut ended: HashMap<Uuid, TaskInfo> = HashMap::new();
    // The chaos also goes on until every kind of process was killed once: a run whose tasks all
    // end first (a fast machine, a short form) still proves restarts leave nothing broken, and
    // the report below counts whatever the kills did to the answers.
    let every_kind_killed = || async { fleet.lock().await.kills.len() == 3 };
    while (!open.is_empty() || !every_kind_killed().await) && Instant::now() < deadline {
        let mut still = Vec::new();
        for id in open {
            match read(&clients, id).await {
                Some(Ok(info)) if info.status.is_terminal() => {
                    ended.insert(id, info);
                }
                _ => still.push(id),
            }
        }
        open = still;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    stop.store(true, Ordering::Relaxed);
    chaos.await?;

    let mut completed = 0u64;
    let mut wrong = 0u64;
    for (id, info) in &ended {
        if info.status == TaskStatus::Completed {
            completed += 1;
            if !expect[id].holds(info) {
                wrong += 1;
                eprintln!("soak: WRONG {id}: {:?}", info.result);
            }
        } else {
            // The whole record, assignments and their outcomes included, says why.
            let record = pg.psql(
                "soak",
                &format!("SELECT record FROM tasks WHERE id = '{id}'"),
            )?;
            eprintln!("soak: LOST {id}: {}\n{record}", info.status);
        }
    }
    for id in &open {
        eprintln!("soak: LOST {id}: never ended");
    }
    let lost = (expect.len() as u64) - completed;
    // Judgements of one node on one task are made once; the same one twice is a double count.
    let duplicated: u64 = pg
        .psql(
            "soak",
            "SELECT count(*) FROM (SELECT node, task_id, kind FROM reputation_events \
             WHERE kind IN ('valid', 'invalid', 'proof_verified', 'proof_rejected') \
             GROUP BY 1, 2, 3 HAVING count(*) > 1) d",
        )?
        .parse()?;
    // Credits: every task's settlement written once, whatever was killed mid-way.
    let rows = pg.psql(
        "soak",
        "SELECT seq, txn, at, account, amount, kind, COALESCE(task_id, ''), memo FROM ledger",
    )?;
    let entries: Vec<LedgerEntry> = rows
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('|').collect();
            anyhow::ensure!(f.len() == 8, "a ledger row of {} fields: {l}", f.len());
            Ok(LedgerEntry {
                seq: f[0].parse()?,
                txn: f[1].into(),
                at: chrono::DateTime::from_timestamp_millis(f[2].parse()?).unwrap_or_default(),
                account: f[3].into(),
                amount: f[4].parse()?,
                kind: f[5].into(),
                task_id: Uuid::parse_str(f[6]).ok(),
                memo: f[7].into(),
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let audit = Audit::of(&entries);
    let credits_duplicated = audit.faults() as u64;
    if credits_duplicated > 0 {
        eprintln!("soak: CREDITS {audit:?}");
    }
    let kills = fleet.lock().await.kills.clone();
    let count = |k: &str| kills.get(k).copied().unwrap_or(0);
    let report = json!({
        "tasks": expect.len(),
        "completed": completed,
        "wrong": wrong,
        "lost": lost,
        "duplicated": duplicated,
        "credits": {"charged": audit.charged, "paid": audit.paid, "fee": audit.fee,
                    "postings": audit.entries, "counted_twice": credits_duplicated},
        "resubmitted": resubmitted,
        "kills": {"agent": count("agent"), "coordinator": count("coordinator"), "broker": count("broker")},
        "seconds": started.elapsed().as_secs(),
    });
    if !(wrong == 0 && lost == 0 && duplicated == 0 && credits_duplicated == 0) {
        // Keep the processes' logs and configurations for a look.
        eprintln!("soak: logs kept in {}", dir.keep().display());
    }
    println!("{report}");
    let ok = wrong == 0
        && lost == 0
        && duplicated == 0
        && credits_duplicated == 0
        && ["agent", "coordinator", "broker"]
            .iter()
            .all(|k| count(k) > 0);
    std::process::exit(if ok { 0 } else { 1 });
}
