//! Load generator for the home user's side (`BENCHMARKS.md`, "Contribution policy and control
//! API"). It drives a real `ambient-agent` process (the release binary next to this one) on a real
//! mosquitto with a real coordinator, and prints medians:
//!
//! 1. toggle-to-agent latency: `POST /v1/toggle {"enabled": false}` sent → the agent's health
//!    with `accepting: false` received by a third MQTT client; beside it, in the same run, the
//!    peers: a bare MQTT publish → receive round trip on the same broker, and a bare
//!    `GET /v1/status` round trip;
//! 2. pause-to-idle latency: an exclusive app (a renamed `sleep`) starts while the agent runs a
//!    spinning wasm task → the agent's health says `accepting: false`, and → the agent process's
//!    CPU use drops (no more than 3 ticks of 10 ms in the following 300 ms, from
//!    `/proc/<pid>/stat`);
//! 0. the cost of one exclusive-apps process scan, in this process;
//! 3. agent RSS and idle CPU with the control API on (and RSS after 1000 status calls), beside
//!    the same binary with `[control] enabled = false`.
//!
//! Build: `cargo build --release --locked -p ambient-agent -p ambient-e2e --bin ambient-agent
//! --bin ambient-policy-bench`. Usage: `ambient-policy-bench [--rounds N]`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ambient_cli::modules;
use ambient_e2e::Cluster;
use ambient_link::{Incoming, QoS};
use ambient_protocol::{Health, Requirements, TaskStatus, TaskSubmission, TaskType, topics};
use anyhow::Context as _;
use base64::Engine as _;
use serde_json::{Value, json};
use tokio::sync::mpsc;

const WATCHER: (&str, &str) = ("coordinator", "coordinator-password");

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    if v.is_empty() {
        return Duration::ZERO;
    }
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A release agent process for `node-1` on the cluster's broker.
struct AgentProc {
    child: Child,
    dir: tempfile::TempDir,
}

impl AgentProc {
    fn start(c: &Cluster, control: bool) -> anyhow::Result<AgentProc> {
        let bin = std::env::current_exe()?.with_file_name("ambient-agent");
        anyhow::ensure!(
            bin.exists(),
            "{} not built: cargo build --release -p ambient-agent",
            bin.display()
        );
        let dir = tempfile::tempdir()?;
        let (node, password) = ("node-1", "node-1-password");
        let mut cfg = ambient_cli::local::agent_config(
            dir.path(),
            node,
            c.mqtt,
            password,
            &c.conn.api_url,
            5.0,
        );
        cfg.mqtt.password = Some(password.into());
        cfg.control.enabled = control;
        cfg.control.listen = "127.0.0.1:0".parse()?;
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, toml::to_string(&cfg)?)?;
        let child = Command::new(&bin)
            .args(["run", "--config"])
            .arg(&path)
            .env("RUST_LOG", "warn")
            .env_remove("DISPLAY")
            .stdin(Stdio::null())
            .spawn()?;
        Ok(AgentProc { child, dir })
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("node-1")
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Ctl {
    url: String,
    token: String,
    http: reqwest::Client,
}

impl Ctl {
    async fn open(data_dir: &Path) -> anyhow::Result<Ctl> {
        let file = data_dir.join("control.json");
        let t0 = Instant::now();
        while !file.exists() {
            anyhow::ensure!(t0.elapsed() < Duration::from_secs(20), "no control.json");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let v: Value = serde_json::from_str(&std::fs::read_to_string(file)?)?;
        Ok(Ctl {
            url: v["url"].as_str().context("url")?.into(),
            token: v["token"].as_str().context("token")?.into(),
            http: reqwest::Client::new(),
        })
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let mut req = self
            .http
            .request(method.parse()?, format!("{}{path}", self.url))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await?;
        anyhow::ensure!(
            resp.status().is_success(),
            "{method} {path}: {}",
            resp.status()
        );
        Ok(resp.json().await?)
    }

    async fn until(&self, pred: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
        let t0 = Instant::now();
        loop {
            let s = self.call("GET", "/v1/status", None).await?;
            if pred(&s) {
                return Ok(s);
            }
            anyhow::ensure!(t0.elapsed() < Duration::from_secs(30), "timed out: {s}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A third MQTT client, with the coordinator's account: health reports of node-1, and the
/// publishing end of the RTT peer. Its other end is a spare node's account reading that node's
/// control topic, a round trip the mosquitto ACL allows (the coordinator may write control
/// topics, not read them).
struct Watcher {
    link: ambient_link::Link,
    /// Health reports with their arrival time.
    health: mpsc::Receiver<(Instant, Health)>,
    /// Where the RTT peer publishes, and its arrivals at the other end.
    rtt_topic: String,
    rtt: mpsc::Receiver<()>,
    _token: tokio_util::sync::DropGuard,
}

async fn watcher(c: &Cluster) -> anyhow::Result<Watcher> {
    let token = tokio_util::sync::CancellationToken::new();
    let subs = vec![topics::node_health("node-1")];
    let mut link = c
        .mqtt_client(WATCHER, "policy-bench-watch", subs, &token)
        .await?;
    let (node, password) = c.spare_nodes.first().context("no spare node account")?;
    let rtt_topic = topics::node_control(node);
    let subs = vec![rtt_topic.clone()];
    let user = (node.as_str(), password.as_str());
    let mut echo = c
        .mqtt_client(user, "policy-bench-rtt", subs, &token)
        .await?;
    let (htx, health) = mpsc::channel(1024);
    let (rtx, rtt) = mpsc::channel(1024);
    let mut incoming = std::mem::replace(&mut link.incoming, mpsc::channel(1).1);
    tokio::spawn(async move {
        while let Some(m) = incoming.recv().await {
            if let Incoming::Publish { payload, .. } = m
                && let Ok(h) = ambient_protocol::envelope::decode::<Health>(&payload)
            {
                let _ = htx.send((Instant::now(), h)).await;
            }
        }
    });
    tokio::spawn(async move {
        while let Some(m) = echo.incoming.recv().await {
            if let Incoming::Publish { .. } = m {
                let _ = rtx.send(()).await;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok(Watcher {
        link,
        health,
        rtt_topic,
        rtt,
        _token: token.drop_guard(),
    })
}

impl Watcher {
    async fn health_until(&mut self, pred: impl Fn(&Health) -> bool) -> anyhow::Result<Instant> {
        loop {
            let (at, h) = tokio::time::timeout(Duration::from_secs(10), self.health.recv())
                .await?
                .context("watcher gone")?;
            if pred(&h) {
                return Ok(at);
            }
        }
    }

    fn drain(&mut self) {
        while self.health.try_recv().is_ok() {}
    }
}

async fn toggle_latency(rounds: usize) -> anyhow::Result<()> {
    let c = Cluster::mosquitto(0).await?;
    let agent = AgentProc::start(&c, true)?;
    c.client()
        .wait_for_nodes(1, Duration::from_secs(20))
        .await?;
    let ctl = Ctl::open(&agent.data_dir()).await?;
    let mut w = watcher(&c).await?;
    let (mut off, mut on, mut call) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        w.drain();
        let t0 = Instant::now();
        ctl.call("POST", "/v1/toggle", Some(json!({"enabled": false})))
            .await?;
        call.push(t0.elapsed());
        off.push(w.health_until(|h| !h.accepting).await? - t0);
        tokio::time::sleep(Duration::from_millis(50)).await;
        w.drain();
        let t0 = Instant::now();
        ctl.call("POST", "/v1/toggle", Some(json!({"enabled": true})))
            .await?;
        on.push(w.health_until(|h| h.accepting).await? - t0);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Peers, same broker, same run.
    let mut rtt = Vec::new();
    for _ in 0..rounds {
        let t0 = Instant::now();
        w.link
            .client
            .publish(
                w.rtt_topic.clone(),
                QoS::AtLeastOnce,
                false,
                vec![b'x'; 700],
            )
            .await?;
        w.rtt.recv().await.context("rtt")?;
        rtt.push(t0.elapsed());
    }
    let mut get = Vec::new();
    for _ in 0..rounds {
        let t0 = Instant::now();
        ctl.call("GET", "/v1/status", None).await?;
        get.push(t0.elapsed());
    }
    println!("toggle → health on the broker, {rounds} rounds (mosquitto, release agent process):");
    println!(
        "  off: median {:.2} ms, p90 {:.2} ms; on: median {:.2} ms, p90 {:.2} ms",
        ms(median(&mut off)),
        ms(pct(&mut off, 0.9)),
        ms(median(&mut on)),
        ms(pct(&mut on, 0.9))
    );
    println!(
        "  POST /v1/toggle round trip (returns after the pause took effect): median {:.2} ms",
        ms(median(&mut call))
    );
    println!(
        "  peers: MQTT publish → receive median {:.2} ms; GET /v1/status median {:.2} ms",
        ms(median(&mut rtt)),
        ms(median(&mut get))
    );
    drop(agent);
    c.shutdown().await;
    Ok(())
}

fn spin_task() -> TaskSubmission {
    TaskSubmission {
        task_type: TaskType::WasmExecution,
        wasm_module: Some(
            base64::engine::general_purpose::STANDARD.encode(modules::wasm(modules::SPIN_WAT)),
        ),
        inputs: json!({}),
        requirements: Requirements {
            max_execution_time_sec: 600,
            ..Requirements::default()
        },
        task_id: None,
    }
}

async fn pause_to_idle(rounds: usize) -> anyhow::Result<()> {
    let c = Cluster::mosquitto(0).await?;
    let agent = AgentProc::start(&c, true)?;
    let pid = agent.child.id();
    let client = c.client();
    client.wait_for_nodes(1, Duration::from_secs(20)).await?;
    let ctl = Ctl::open(&agent.data_dir()).await?;
    let app_dir = tempfile::tempdir()?;
    let name = format!("ambgame-{}", std::process::id() % 1_000_000);
    let app = app_dir.path().join(&name);
    std::fs::copy("/bin/sleep", &app)?;
    let mut settings = ctl.call("GET", "/v1/settings", None).await?;
    settings["exclusive_apps"] = json!([name]);
    ctl.call("PUT", "/v1/settings", Some(settings)).await?;
    let mut w = watcher(&c).await?;
    let (mut to_health, mut to_idle) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let info = client.submit(&spin_task()).await?;
        loop {
            let t = client.task(info.task_id).await?;
            if t.status == TaskStatus::Running {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Spinning for sure; and a random phase against the agent's 250 ms policy tick, which
        // this loop would otherwise hit at the same point every round.
        let jitter = uuid::Uuid::new_v4().as_u128() as u64 % 250;
        tokio::time::sleep(Duration::from_millis(500 + jitter)).await;
        w.drain();
        let t0 = Instant::now();
        let mut game = Command::new(&app).arg("300").spawn()?;
        // Sample the agent's CPU ticks every 5 ms for 2 s.
        let mut samples = Vec::new();
        while t0.elapsed() < Duration::from_secs(2) {
            samples.push((t0.elapsed(), ambient_e2e::proc_stats(pid)?.1));
            std::thread::sleep(Duration::from_millis(5));
        }
        let health_at = w.health_until(|h| !h.accepting).await? - t0;
        let window = Duration::from_millis(300);
        let idle_at = samples
            .iter()
            .find(|(t, ticks)| {
                samples
                    .iter()
                    .rev()
                    .find(|(u, _)| *u <= *t + window)
                    .is_some_and(|(u, later)| {
                        *u >= *t + window - Duration::from_millis(20) && later - ticks <= 3
                    })
            })
            .map(|(t, _)| *t)
            .context("the agent never went idle")?;
        to_health.push(health_at);
        to_idle.push(idle_at);
        game.kill()?;
        game.wait()?;
        client.cancel(info.task_id).await?;
        ctl.until(|s| s["contributing"] == true).await?;
    }
    println!(
        "pause-to-idle, {rounds} rounds (exclusive app started while a wasm task spins, at a random phase of the policy tick):"
    );
    println!(
        "  → health accepting=false on the broker: median {:.0} ms, min {:.0} ms, max {:.0} ms",
        ms(median(&mut to_health)),
        ms(*to_health.iter().min().unwrap_or(&Duration::ZERO)),
        ms(*to_health.iter().max().unwrap_or(&Duration::ZERO))
    );
    println!(
        "  → agent CPU back to ≤ 10% of a core: median {:.0} ms, min {:.0} ms, max {:.0} ms (10 ms tick resolution)",
        ms(median(&mut to_idle)),
        ms(*to_idle.iter().min().unwrap_or(&Duration::ZERO)),
        ms(*to_idle.iter().max().unwrap_or(&Duration::ZERO))
    );
    drop(agent);
    c.shutdown().await;
    Ok(())
}

async fn rss() -> anyhow::Result<()> {
    let c = Cluster::mosquitto(0).await?;
    let mut line = Vec::new();
    for control in [true, false] {
        let agent = AgentProc::start(&c, control)?;
        c.client()
            .wait_for_nodes(1, Duration::from_secs(20))
            .await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (_, t0) = ambient_e2e::proc_stats(agent.child.id())?;
        let start = Instant::now();
        tokio::time::sleep(Duration::from_secs(10)).await;
        let (idle, t1) = ambient_e2e::proc_stats(agent.child.id())?;
        let cpu = (t1 - t0) as f64 / 100.0 / start.elapsed().as_secs_f64() * 100.0;
        let mut after = None;
        if control {
            let ctl = Ctl::open(&agent.data_dir()).await?;
            for _ in 0..1000 {
                ctl.call("GET", "/v1/status", None).await?;
            }
            after = Some(ambient_e2e::proc_stats(agent.child.id())?.0);
        }
        line.push((control, idle, cpu, after));
        drop(agent);
        // Let the coordinator see it leave before the next one registers.
        tokio::time::sleep(Duration::from_secs(4)).await;
    }
    println!(
        "agent RSS and CPU (release binary, idle 10 s after settling 3 s; policy every 250 ms):"
    );
    for (control, idle, cpu, after) in line {
        print!(
            "  control API {}: RSS {:.1} MiB, CPU {cpu:.2}% of one core",
            if control { "on " } else { "off" },
            idle as f64 / 1024.0
        );
        if let Some(a) = after {
            print!(", {:.1} MiB after 1000 GET /v1/status", a as f64 / 1024.0);
        }
        println!();
    }
    c.shutdown().await;
    Ok(())
}

/// What one policy evaluation's process scan costs (the exclusive-apps rule; the only probe with
/// a cost that grows with the machine), beside the number of processes scanned.
fn probe_cost() {
    use ambient_agent::policy::Probes as _;
    let mut probes = ambient_agent::policy::probe::SystemProbes::new(None);
    let names = vec!["no-such-program".to_string()];
    probes.running(&names); // first scan reads every executable and command line once
    let mut v: Vec<Duration> = (0..200)
        .map(|_| {
            let t0 = Instant::now();
            probes.running(&names);
            t0.elapsed()
        })
        .collect();
    let procs = std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .bytes()
                        .all(|b| b.is_ascii_digit())
                })
                .count()
        })
        .unwrap_or(0);
    println!(
        "exclusive-apps process scan: median {:.2} ms over {procs} processes (every evaluate_ms when the list is not empty)",
        ms(median(&mut v))
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut rounds = 30usize;
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        match (pair[0].as_str(), pair.get(1)) {
            ("--rounds", Some(v)) => rounds = v.parse()?,
            (other, _) => anyhow::bail!("unknown flag {other} (usage: --rounds N)"),
        }
    }
    println!(
        "ambient-policy-bench: {rounds} rounds, machine: {} CPUs",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    probe_cost();
    toggle_latency(rounds).await?;
    pause_to_idle(rounds.min(20)).await?;
    rss().await?;
    Ok(())
}
