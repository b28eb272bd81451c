//! Load generator for `BENCHMARKS.md`. Every figure is printed beside a peer measured in the same
//! run on the same machine:
//!
//! 1. submit → result latency (p50, p99) and throughput of a trivial wasm task, submitted over
//!    MQTT and answered on the submitter's topic, through the embedded rumqttd, through a real
//!    mosquitto, and through mosquitto with the coordinator's state in PostgreSQL instead of
//!    SQLite; peer: a bare MQTT publish → receive round trip on the same broker;
//! 2. the sandbox harness against bare wasmi on the same module (median per run);
//! 3. an idle `ambient-agent` process: RSS and CPU over a window (needs the binary next to this
//!    one: `cargo build --release -p ambient-agent -p ambient-e2e --bin ambient-loadgen`).
//!
//! 4. tract inference per call (median, plan cached) on the ONNX fixtures; the onnxruntime peer
//!    is `scripts/bench-inference`, which runs this section and onnxruntime back to back;
//! 5. the sharded π job on 1, 2, 4 and 8 local agents (mosquitto), and the overhead per shard.
//!
//! Usage: `ambient-loadgen [--tasks N] [--concurrency C] [--idle-secs S] [--pi-samples N]
//! [--only tasks|sandbox|idle|inference|pi]`.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use ambient_cli::modules;
use ambient_e2e::Cluster;
use ambient_link::{Incoming, QoS};
use ambient_protocol::{Requirements, TaskInfo, TaskSubmission, TaskType, topics};
use anyhow::Context as _;
use base64::Engine as _;
use uuid::Uuid;

struct Args {
    tasks: usize,
    concurrency: usize,
    idle_secs: u64,
    only: Option<String>,
    pi_samples: u64,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        tasks: 300,
        concurrency: 16,
        idle_secs: 30,
        only: None,
        pi_samples: 200_000_000,
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    for pair in v.chunks(2) {
        let val = pair.get(1).context("flag without value")?;
        match pair[0].as_str() {
            "--tasks" => a.tasks = val.parse()?,
            "--concurrency" => a.concurrency = val.parse()?,
            "--idle-secs" => a.idle_secs = val.parse()?,
            "--only" => a.only = Some(val.clone()),
            "--pi-samples" => a.pi_samples = val.parse()?,
            other => anyhow::bail!("unknown flag {other}"),
        }
    }
    Ok(a)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

struct Mqtt {
    link: ambient_link::Link,
    _token: tokio_util::sync::CancellationToken,
}

async fn connect(
    c: &Cluster,
    user: (&str, &str),
    subscriptions: Vec<String>,
    id: &str,
) -> anyhow::Result<Mqtt> {
    let token = tokio_util::sync::CancellationToken::new();
    let link = c.mqtt_client(user, id, subscriptions, &token).await?;
    // Let the SUBACK land before measuring.
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok(Mqtt {
        link,
        _token: token,
    })
}

/// Submits `n` tasks over MQTT with at most `window` in flight; returns per-task latencies and
/// the wall time.
async fn run_tasks(
    m: &mut Mqtt,
    submitter: &str,
    n: usize,
    window: usize,
) -> anyhow::Result<(Vec<Duration>, Duration)> {
    let module = base64::engine::general_purpose::STANDARD.encode(modules::wasm(modules::SUM_WAT));
    let mut sent: HashMap<Uuid, Instant> = HashMap::new();
    let mut lat = Vec::with_capacity(n);
    let start = Instant::now();
    let mut next = 0;
    while lat.len() < n {
        while next < n && sent.len() < window {
            let id = Uuid::new_v4();
            let sub = TaskSubmission {
                task_type: TaskType::WasmExecution,
                wasm_module: Some(module.clone()),
                inputs: serde_json::json!({"numbers": [next, 1, 2, 3]}),
                requirements: Requirements::default(),
                task_id: Some(id),
            };
            sent.insert(id, Instant::now());
            m.link
                .client
                .publish(
                    topics::submit(submitter),
                    QoS::AtLeastOnce,
                    false,
                    serde_json::to_vec(&sub)?,
                )
                .await?;
            next += 1;
        }
        let msg = tokio::time::timeout(Duration::from_secs(60), m.link.incoming.recv())
            .await
            .context("no answer within 60 s")?
            .context("link closed")?;
        if let Incoming::Publish { payload, .. } = msg
            && let Ok(info) = serde_json::from_slice::<TaskInfo>(&payload)
            && info.status.is_terminal()
            && let Some(t0) = sent.remove(&info.task_id)
        {
            anyhow::ensure!(
                info.status == ambient_protocol::TaskStatus::Completed,
                "task failed: {info:?}"
            );
            lat.push(t0.elapsed());
        }
    }
    Ok((lat, start.elapsed()))
}

/// The peer: bare MQTT round trips of the same payload size on the same broker.
async fn mqtt_rtt(c: &Cluster, n: usize) -> anyhow::Result<Vec<Duration>> {
    // On topics the mosquitto ACL allows: the coordinator's account writes a spare node's control
    // topic, which that node's account reads (no agent runs under it, and the coordinator does
    // not subscribe to control topics). Two clients, so a round trip is publisher → broker →
    // subscriber, as a task's messages travel.
    let (node, password) = c
        .spare_nodes
        .first()
        .context("no spare node account")?
        .clone();
    let topic = topics::node_control(&node);
    let mut rx = connect(c, (&node, &password), vec![topic.clone()], "loadgen-rtt-rx").await?;
    let tx = connect(
        c,
        ("coordinator", "coordinator-password"),
        vec![],
        "loadgen-rtt-tx",
    )
    .await?;
    let payload = vec![b'x'; 1200];
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        tx.link
            .client
            .publish(topic.clone(), QoS::AtLeastOnce, false, payload.clone())
            .await?;
        loop {
            match tokio::time::timeout(Duration::from_secs(10), rx.link.incoming.recv()).await? {
                Some(Incoming::Publish { .. }) => break,
                Some(_) => {}
                None => anyhow::bail!("link closed"),
            }
        }
        out.push(t0.elapsed());
    }
    Ok(out)
}

async fn broker_figures(name: &str, mut c: Cluster, a: &Args) -> anyhow::Result<()> {
    let submitter = c.conn.submitter.clone();
    let user = (c.conn.mqtt_username.clone(), c.conn.mqtt_password.clone());
    let subs = vec![topics::submitter_all(&submitter)];
    let mut m = connect(&c, (&user.0, &user.1), subs, "loadgen").await?;
    run_tasks(&mut m, &submitter, 20, 4).await?; // warm up caches and connections
    let (mut seq, _) = run_tasks(&mut m, &submitter, a.tasks / 3, 1).await?;
    seq.sort();
    let (_, wall) = run_tasks(&mut m, &submitter, a.tasks, a.concurrency).await?;
    let mut rtt = mqtt_rtt(&c, a.tasks / 3).await?;
    rtt.sort();
    println!(
        "{name:<18} task latency p50 {:>7.2} ms  p99 {:>7.2} ms | MQTT RTT p50 {:>6.2} ms  p99 {:>6.2} ms | ratio p50 {:>5.1}x | throughput {:>6.1} tasks/s ({} tasks, {} in flight)",
        ms(pct(&seq, 0.5)),
        ms(pct(&seq, 0.99)),
        ms(pct(&rtt, 0.5)),
        ms(pct(&rtt, 0.99)),
        ms(pct(&seq, 0.5)) / ms(pct(&rtt, 0.5)).max(1e-9),
        a.tasks as f64 / wall.as_secs_f64(),
        a.tasks,
        a.concurrency
    );
    c.stop_coordinator().await;
    c.shutdown().await;
    Ok(())
}

fn sandbox_vs_bare(runs: usize) -> anyhow::Result<()> {
    use ambient_agent::exec::wasm::{WasmLimits, WasmSandbox};
    let module = modules::wasm(modules::SUM_WAT);
    let input = br#"{"numbers":[3,14,15,92,65]}"#;
    let sandbox = WasmSandbox::new(8);
    let limits = WasmLimits {
        fuel: 30 * ambient_protocol::FUEL_PER_SECOND,
        max_memory_bytes: 256 << 20,
        max_output_bytes: 1 << 20,
        wall_clock: Duration::from_secs(30),
    };
    let cancel = AtomicBool::new(false);
    let mut ours = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t0 = Instant::now();
        let out = sandbox.run(&module, input, &limits, &cancel)?;
        ours.push(t0.elapsed());
        anyhow::ensure!(out.stdout == b"{\"sum\":189}", "wrong output");
    }
    // Bare wasmi: a compiled module, a fresh store and instance per run, and the two WASI calls
    // the module uses, without limits, fuel or caching.
    let engine = wasmi::Engine::default();
    let compiled = wasmi::Module::new(&engine, &module[..])?;
    let mut bare = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t0 = Instant::now();
        let mut store = wasmi::Store::new(&engine, (input.to_vec(), 0usize, Vec::<u8>::new()));
        let mut linker = wasmi::Linker::new(&engine);
        linker.func_wrap(
            "wasi_snapshot_preview1",
            "fd_read",
            |mut caller: wasmi::Caller<'_, (Vec<u8>, usize, Vec<u8>)>,
             _fd: i32,
             iovs: i32,
             _n: i32,
             nread: i32|
             -> i32 {
                let mem = caller
                    .get_export("memory")
                    .and_then(|e| e.into_memory())
                    .unwrap();
                let mut iov = [0u8; 8];
                mem.read(&caller, iovs as usize, &mut iov).unwrap();
                let ptr = u32::from_le_bytes(iov[..4].try_into().unwrap()) as usize;
                let len = u32::from_le_bytes(iov[4..].try_into().unwrap()) as usize;
                let (data, pos, _) = caller.data();
                let chunk = data[*pos..].iter().take(len).copied().collect::<Vec<u8>>();
                caller.data_mut().1 += chunk.len();
                mem.write(&mut caller, ptr, &chunk).unwrap();
                mem.write(
                    &mut caller,
                    nread as usize,
                    &(chunk.len() as u32).to_le_bytes(),
                )
                .unwrap();
                0
            },
        )?;
        linker.func_wrap(
            "wasi_snapshot_preview1",
            "fd_write",
            |mut caller: wasmi::Caller<'_, (Vec<u8>, usize, Vec<u8>)>,
             _fd: i32,
             iovs: i32,
             n: i32,
             _written: i32|
             -> i32 {
                let mem = caller
                    .get_export("memory")
                    .and_then(|e| e.into_memory())
                    .unwrap();
                for k in 0..n as usize {
                    let mut iov = [0u8; 8];
                    mem.read(&caller, iovs as usize + 8 * k, &mut iov).unwrap();
                    let ptr = u32::from_le_bytes(iov[..4].try_into().unwrap()) as usize;
                    let len = u32::from_le_bytes(iov[4..].try_into().unwrap()) as usize;
                    let mut buf = vec![0u8; len];
                    mem.read(&caller, ptr, &mut buf).unwrap();
                    caller.data_mut().2.extend_from_slice(&buf);
                }
                0
            },
        )?;
        let instance = linker.instantiate_and_start(&mut store, &compiled)?;
        instance
            .get_typed_func::<(), ()>(&store, "_start")?
            .call(&mut store, ())?;
        bare.push(t0.elapsed());
        anyhow::ensure!(
            store.data().2 == b"{\"sum\":189}",
            "bare wasmi: wrong output"
        );
    }
    ours.sort();
    bare.sort();
    let (o, b) = (pct(&ours, 0.5), pct(&bare, 0.5));
    println!(
        "sandbox    median {:>8.1} µs per run (cached module) | bare wasmi {:>8.1} µs | ratio {:.2}x ({runs} runs)",
        o.as_secs_f64() * 1e6,
        b.as_secs_f64() * 1e6,
        o.as_secs_f64() / b.as_secs_f64()
    );
    Ok(())
}

async fn idle_agent(secs: u64) -> anyhow::Result<()> {
    let bin = std::env::current_exe()?.with_file_name("ambient-agent");
    if !bin.exists() {
        println!(
            "idle agent skipped: {} not built (cargo build --release -p ambient-agent)",
            bin.display()
        );
        return Ok(());
    }
    let c = Cluster::embedded(0).await?;
    let dir = tempfile::tempdir()?;
    let (node, password) = ("node-1", "node-1-password");
    let mut cfg =
        ambient_cli::local::agent_config(dir.path(), node, c.mqtt, password, &c.conn.api_url, 5.0);
    cfg.mqtt.password = Some(password.into());
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, toml::to_string(&cfg)?)?;
    let mut child = std::process::Command::new(&bin)
        .args(["run", "--config"])
        .arg(&path)
        .env("RUST_LOG", "warn")
        .spawn()?;
    tokio::time::sleep(Duration::from_secs(3)).await; // connected and settled
    let (_, t0) = ambient_e2e::proc_stats(child.id())?;
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let (rss, t1) = ambient_e2e::proc_stats(child.id())?;
    let hz = 100.0; // USER_HZ on Linux
    let cpu = (t1 - t0) as f64 / hz / start.elapsed().as_secs_f64() * 100.0;
    println!(
        "idle agent RSS {:.1} MiB, CPU {:.2}% of one core over {secs} s (health every 5 s)",
        rss as f64 / 1024.0,
        cpu
    );
    child.kill()?;
    child.wait()?;
    c.shutdown().await;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    println!(
        "ambient-loadgen: {} tasks, {} in flight, machine: {} CPUs",
        a.tasks,
        a.concurrency,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let run = |section: &str| a.only.as_deref().is_none_or(|o| o == section);
    if run("tasks") {
        broker_figures("rumqttd", Cluster::embedded(3).await?, &a).await?;
        broker_figures("mosquitto", Cluster::mosquitto(3).await?, &a).await?;
        // The same on the coordinator's second store: a throwaway PostgreSQL on loopback (its
        // test settings: fsync, synchronous_commit and full_page_writes off).
        if ambient_e2e::postgres::available() {
            let pg = ambient_e2e::postgres::Postgres::start()?;
            let store = Some(pg.create_database("loadgen")?);
            let c = Cluster::mosquitto_on(3, 2, store).await?;
            broker_figures("mosquitto+postgres", c, &a).await?;
        }
    }
    if run("sandbox") {
        sandbox_vs_bare(2000)?;
    }
    if run("idle") {
        idle_agent(a.idle_secs).await?;
    }
    if run("inference") {
        inference_medians()?;
    }
    if run("pi") {
        pi_speedup(a.pi_samples).await?;
    }
    Ok(())
}

/// Median wall time of one tract inference on each fixture, plan cached, as onnxruntime's
/// `InferenceSession.run` is timed by `scripts/bench-inference`.
fn inference_medians() -> anyhow::Result<()> {
    use ambient_agent::exec::onnx::OnnxEngine;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/onnx");
    let engine = OnnxEngine::new(16);
    for name in ["mlp", "cnn", "mlp_dynamic", "ppocr_cls"] {
        let model = std::fs::read(format!("{dir}/{name}.onnx"))?;
        let reference: serde_json::Value =
            serde_json::from_slice(&std::fs::read(format!("{dir}/{name}.json"))?)?;
        let inputs: std::collections::BTreeMap<String, ambient_protocol::TensorJson> =
            serde_json::from_value(reference["inputs"].clone())?;
        engine.run(&model, name, &inputs)?; // prepare and cache the plan
        let runs = if name == "ppocr_cls" { 200 } else { 2000 };
        let mut times = Vec::with_capacity(runs);
        for _ in 0..runs {
            let t0 = Instant::now();
            engine.run(&model, name, &inputs)?;
            times.push(t0.elapsed());
        }
        times.sort();
        println!(
            "tract      {name:<12} median {:>9.1} µs per inference ({runs} runs, JSON tensors in and out)",
            pct(&times, 0.5).as_secs_f64() * 1e6
        );
    }
    Ok(())
}

/// The sharded π job on k agents of one execution slot each (so one agent uses one core):
/// wall time, speedup over one agent, and overhead per shard.
async fn pi_speedup(samples: u64) -> anyhow::Result<()> {
    let mut base = None;
    for agents in [1u32, 2, 4, 8] {
        let c = Cluster::mosquitto_with_slots(agents, 1).await?;
        let client = c.client();
        let t0 = Instant::now();
        let info = client
            .submit(&ambient_cli::demo::pi_task(samples, 64))
            .await?;
        let done = client
            .wait(info.task_id, Duration::from_secs(1800), |_| {})
            .await?;
        let wall = t0.elapsed();
        anyhow::ensure!(
            done.status == ambient_protocol::TaskStatus::Completed,
            "{done:?}"
        );
        let one = *base.get_or_insert(wall);
        println!(
            "pi         {agents} agent(s): {:>7.2} s for {samples} samples in 64 shards, speedup {:.2}x",
            wall.as_secs_f64(),
            one.as_secs_f64() / wall.as_secs_f64()
        );
        if agents == 1 {
            // Overhead per shard: the same job in 1 shard versus 64, on one agent.
            let t1 = Instant::now();
            let single = client
                .submit(&ambient_cli::demo::pi_task(samples, 1))
                .await?;
            client
                .wait(single.task_id, Duration::from_secs(1800), |_| {})
                .await?;
            let one_shard = t1.elapsed();
            println!(
                "pi         overhead per shard on 1 agent: {:.2} ms ((64-shard wall − 1-shard wall) / 63; 1 shard took {:.2} s)",
                (wall.as_secs_f64() - one_shard.as_secs_f64()) * 1000.0 / 63.0,
                one_shard.as_secs_f64()
            );
        }
        c.shutdown().await;
    }
    Ok(())
}
