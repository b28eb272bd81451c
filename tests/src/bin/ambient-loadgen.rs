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
//! A section that runs only when asked (`--only proved`): `inference` with `require_proof`
//! through the network (the embedded broker, one agent) on the three models of
//! `tests/fixtures/zk/`, beside the same model run by tract without a proof, interleaved: the
//! first proved task (its keys made then), then per form the median of the node's run time
//! (`duration_ms`: proving, or tract) and of submit → completed (polled every 50 ms).
//!
//! Two capacity sections run only when asked (`--only`), each minutes long; both start every
//! service as its own process (`ambient-coordinator` and `ambient-agent` must be built next to
//! this binary) and measure CPU time per process from `/proc` ([`ambient_e2e::capacity`]):
//!
//! 6. `coordinators`: 1, 2 and 3 coordinators (`--coordinators 1,2,3`) on one PostgreSQL (a new
//!    database each), one mosquitto and `--agents` agents of `--slots` slots. `--tasks` trivial
//!    tasks (default 600) go over REST round robin to the coordinators, `--concurrency` in flight
//!    (default 32), each waited for on the submitter's MQTT notifications; twice: a wasm sum with
//!    its module inline, and an ONNX MLP whose model is an uploaded blob named by sha256 (a
//!    `wasm_execution` task has no by-reference form). Per K and form: tasks/s, p50/p99 submit →
//!    completed, and CPU-ms per task of the leader, each follower, the agents, mosquitto,
//!    PostgreSQL (postmaster and backends) and the load generator. With `--coordinator-cpu F`
//!    each coordinator process runs in a CPU cgroup of its own with a quota of F cores (root and
//!    a cpu cgroup controller needed), as K small machines would give it, while the rest of the
//!    network shares the cores uncapped: what K coordinators add when each brings its own CPU.
//!    With `--rest followers` the REST load goes to the followers only (K ≥ 2), as a load
//!    balancer that prefers followers (`GET /api/v1/health` says the role) would send it, so
//!    that the leader's core is left to the scheduler;
//! 7. `nodes`: one coordinator (SQLite), 2 agents, and simulated nodes (MQTT clients that
//!    announce themselves and report health every 5 s like an agent, paused so they take no
//!    work) ramped through `--nodes 250,500,1000,2000`: per level, the coordinator's CPU % and
//!    RSS over a `--window-secs` window, how many nodes `GET /api/v1/nodes` shows online, and the
//!    latency of 20 trivial tasks run one at a time meanwhile.
//!
//! The last line of each capacity section is one JSON object with all its figures.
//!
//! Usage: `ambient-loadgen [--tasks N] [--concurrency C] [--idle-secs S] [--pi-samples N]
//! [--coordinators 1,2,3] [--agents A] [--slots S] [--nodes 250,500,1000,2000]
//! [--window-secs S] [--coordinator-cpu F] [--rest all|followers]
//! [--only tasks|sandbox|idle|inference|pi|proved|coordinators|nodes]`.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use ambient_cli::modules;
use ambient_e2e::Cluster;
use ambient_e2e::capacity::{CpuProbe, Fleet, FleetSpec, SimNodes, run_load};
use ambient_link::{Incoming, QoS};
use ambient_protocol::{Requirements, TaskInfo, TaskSubmission, TaskType, topics};
use anyhow::Context as _;
use base64::Engine as _;
use uuid::Uuid;

struct Args {
    /// `None`: each section's default (300 for `tasks`, 600 for `coordinators`).
    tasks: Option<usize>,
    /// `None`: each section's default (16 for `tasks`, 32 for `coordinators`).
    concurrency: Option<usize>,
    idle_secs: u64,
    only: Option<String>,
    pi_samples: u64,
    coordinators: Vec<usize>,
    agents: usize,
    slots: u32,
    nodes: Vec<usize>,
    window_secs: u64,
    /// Each coordinator's CPU quota in cores, in the `coordinators` section.
    coordinator_cpu: Option<f64>,
    /// Submit to the followers only (with two or more coordinators).
    rest_followers: bool,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        tasks: None,
        concurrency: None,
        idle_secs: 30,
        only: None,
        pi_samples: 200_000_000,
        coordinators: vec![1, 2, 3],
        agents: 4,
        slots: 8,
        nodes: vec![250, 500, 1000, 2000],
        window_secs: 20,
        coordinator_cpu: None,
        rest_followers: false,
    };
    let list = |v: &str| -> anyhow::Result<Vec<usize>> {
        v.split(',')
            .map(|x| {
                x.trim()
                    .parse()
                    .context("a comma-separated list of numbers")
            })
            .collect()
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    for pair in v.chunks(2) {
        let val = pair.get(1).context("flag without value")?;
        match pair[0].as_str() {
            "--tasks" => a.tasks = Some(val.parse()?),
            "--concurrency" => a.concurrency = Some(val.parse()?),
            "--idle-secs" => a.idle_secs = val.parse()?,
            "--only" => a.only = Some(val.clone()),
            "--pi-samples" => a.pi_samples = val.parse()?,
            "--coordinators" => a.coordinators = list(val)?,
            "--agents" => a.agents = val.parse()?,
            "--slots" => a.slots = val.parse()?,
            "--nodes" => a.nodes = list(val)?,
            "--window-secs" => a.window_secs = val.parse()?,
            "--coordinator-cpu" => a.coordinator_cpu = Some(val.parse()?),
            "--rest" => {
                a.rest_followers = match val.as_str() {
                    "all" => false,
                    "followers" => true,
                    other => anyhow::bail!("--rest is all or followers, not {other}"),
                }
            }
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

async fn broker_figures(
    name: &str,
    mut c: Cluster,
    tasks: usize,
    concurrency: usize,
) -> anyhow::Result<()> {
    let submitter = c.conn.submitter.clone();
    let user = (c.conn.mqtt_username.clone(), c.conn.mqtt_password.clone());
    let subs = vec![topics::submitter_all(&submitter)];
    let mut m = connect(&c, (&user.0, &user.1), subs, "loadgen").await?;
    run_tasks(&mut m, &submitter, 20, 4).await?; // warm up caches and connections
    let (mut seq, _) = run_tasks(&mut m, &submitter, tasks / 3, 1).await?;
    seq.sort();
    let (_, wall) = run_tasks(&mut m, &submitter, tasks, concurrency).await?;
    let mut rtt = mqtt_rtt(&c, tasks / 3).await?;
    rtt.sort();
    println!(
        "{name:<18} task latency p50 {:>7.2} ms  p99 {:>7.2} ms | MQTT RTT p50 {:>6.2} ms  p99 {:>6.2} ms | ratio p50 {:>5.1}x | throughput {:>6.1} tasks/s ({} tasks, {} in flight)",
        ms(pct(&seq, 0.5)),
        ms(pct(&seq, 0.99)),
        ms(pct(&rtt, 0.5)),
        ms(pct(&rtt, 0.99)),
        ms(pct(&seq, 0.5)) / ms(pct(&rtt, 0.5)).max(1e-9),
        tasks as f64 / wall.as_secs_f64(),
        tasks,
        concurrency
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
        "ambient-loadgen: machine: {} CPUs",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    // The capacity sections take minutes: only when named.
    let run = |section: &str| a.only.as_deref().is_none_or(|o| o == section);
    let asked = |section: &str| a.only.as_deref() == Some(section);
    if run("tasks") {
        let (n, c) = (a.tasks.unwrap_or(300), a.concurrency.unwrap_or(16));
        println!("tasks: {n} tasks, {c} in flight");
        broker_figures("rumqttd", Cluster::embedded(3).await?, n, c).await?;
        broker_figures("mosquitto", Cluster::mosquitto(3).await?, n, c).await?;
        // The same on the coordinator's second store: a throwaway PostgreSQL on loopback (its
        // test settings: fsync, synchronous_commit and full_page_writes off).
        if ambient_e2e::postgres::available() {
            let pg = ambient_e2e::postgres::Postgres::start()?;
            let store = Some(pg.create_database("loadgen")?);
            let cluster = Cluster::mosquitto_on(3, 2, store).await?;
            broker_figures("mosquitto+postgres", cluster, n, c).await?;
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
    if asked("proved") {
        proved_figures(a.tasks.unwrap_or(10)).await?;
    }
    if asked("coordinators") {
        coordinators_figures(&a).await?;
    }
    if asked("nodes") {
        nodes_figures(&a).await?;
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

/// `inference` with `require_proof` beside the same inference by tract, through the network,
/// `n` of each, interleaved, after a first proved task that makes the model's keys.
async fn proved_figures(n: usize) -> anyhow::Result<()> {
    let c = Cluster::embedded(1).await?;
    let client = c.client();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/zk");
    println!("proved: {n} proved and {n} tract inferences per model, interleaved, one agent");
    for name in ["mlp_relu", "mlp_tanh_softmax", "cnn"] {
        let reference: serde_json::Value =
            serde_json::from_slice(&std::fs::read(format!("{dir}/{name}.json"))?)?;
        let sha = client
            .put_blob(std::fs::read(format!("{dir}/{name}.onnx"))?)
            .await?;
        let task = |require_proof| TaskSubmission {
            task_type: TaskType::Inference,
            wasm_module: None,
            inputs: serde_json::json!({"model_sha256": sha, "tensors": reference["inputs"]}),
            requirements: Requirements {
                require_proof,
                max_execution_time_sec: 600,
                ..Requirements::default()
            },
            task_id: None,
        };
        // Submit → completed, and the node's run time.
        let timed = async |sub: TaskSubmission| -> anyhow::Result<(Duration, Duration)> {
            let t0 = Instant::now();
            let info = client.submit(&sub).await?;
            let done = client
                .wait(info.task_id, Duration::from_secs(900), |_| {})
                .await?;
            anyhow::ensure!(
                done.status == ambient_protocol::TaskStatus::Completed,
                "{done:?}"
            );
            let ran = done.result.as_ref().and_then(|r| r["duration_ms"].as_u64());
            Ok((t0.elapsed(), Duration::from_millis(ran.unwrap_or(0))))
        };
        let (first, first_ran) = timed(task(true)).await?;
        let (mut proved, mut plain) = (Vec::new(), Vec::new());
        for _ in 0..n {
            proved.push(timed(task(true)).await?);
            plain.push(timed(task(false)).await?);
        }
        let median = |v: &[(Duration, Duration)]| {
            let mut e2e: Vec<Duration> = v.iter().map(|x| x.0).collect();
            let mut ran: Vec<Duration> = v.iter().map(|x| x.1).collect();
            e2e.sort();
            ran.sort();
            (pct(&e2e, 0.5), pct(&ran, 0.5))
        };
        let ((pe, pr), (te, tr)) = (median(&proved), median(&plain));
        println!(
            "proved     {name:<16} first {:>6.2} s (node {:>5} ms); node run: proved {:>5} ms, \
             tract {:>3} ms; submit → completed: proved {:>6.1} ms, tract {:>6.1} ms",
            first.as_secs_f64(),
            first_ran.as_millis(),
            pr.as_millis(),
            tr.as_millis(),
            ms(pe),
            ms(te),
        );
    }
    c.shutdown().await;
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

/// The forms of trivial task the `coordinators` section submits.
#[derive(Clone, Copy)]
enum Form {
    /// `wasm_execution` of `sum.wat`, the module inline (base64).
    WasmInline,
    /// `inference` of the MLP fixture, the model an uploaded blob named by its sha256.
    OnnxByRef,
}

impl Form {
    fn name(self) -> &'static str {
        match self {
            Form::WasmInline => "wasm-inline",
            Form::OnnxByRef => "onnx-by-ref",
        }
    }
}

/// Makes the `i`-th submission of a form.
struct Submissions {
    module: String,
    model_sha256: String,
    tensors: serde_json::Value,
}

impl Submissions {
    /// Uploads the model once, through `client`.
    async fn prepare(client: &ambient_cli::client::Client) -> anyhow::Result<Submissions> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/onnx");
        let model = std::fs::read(format!("{dir}/mlp.onnx"))?;
        let reference: serde_json::Value =
            serde_json::from_slice(&std::fs::read(format!("{dir}/mlp.json"))?)?;
        Ok(Submissions {
            module: base64::engine::general_purpose::STANDARD
                .encode(modules::wasm(modules::SUM_WAT)),
            model_sha256: client.put_blob(model).await?,
            tensors: reference["inputs"].clone(),
        })
    }

    fn make(&self, form: Form, i: usize) -> TaskSubmission {
        let (task_type, wasm_module, inputs) = match form {
            Form::WasmInline => (
                TaskType::WasmExecution,
                Some(self.module.clone()),
                serde_json::json!({"numbers": [i, 1, 2, 3]}),
            ),
            Form::OnnxByRef => (
                TaskType::Inference,
                None,
                serde_json::json!({"model_sha256": self.model_sha256, "tensors": self.tensors}),
            ),
        };
        TaskSubmission {
            task_type,
            wasm_module,
            inputs,
            requirements: Requirements::default(),
            task_id: None,
        }
    }
}

/// Seconds of CPU per figure between two readings of the same probes.
fn cpu_seconds(before: &[u64], after: &[u64]) -> Vec<f64> {
    before
        .iter()
        .zip(after)
        .map(|(b, a)| a.saturating_sub(*b) as f64 / ambient_e2e::capacity::TICKS_PER_SEC)
        .collect()
}

fn read_probes(probes: &[(String, CpuProbe)]) -> anyhow::Result<Vec<u64>> {
    probes.iter().map(|(_, p)| p.ticks()).collect()
}

/// Section 6: how 1, 2 and 3 coordinators on one PostgreSQL share the same load.
async fn coordinators_figures(a: &Args) -> anyhow::Result<()> {
    let (n, window) = (a.tasks.unwrap_or(600), a.concurrency.unwrap_or(32));
    let started = Instant::now();
    let pg = ambient_e2e::postgres::Postgres::start()?;
    let postmaster = ambient_e2e::capacity::postmaster_pid(pg.port())
        .context("PostgreSQL's postmaster was not found on /proc")?;
    println!(
        "coordinators: {n} tasks per form, {window} in flight, over REST round robin to {}; \
         waited for on the submitter's MQTT notifications; {} agents x {} slots; each \
         coordinator {}; CPU-ms per task over the measured window",
        if a.rest_followers {
            "the followers (all with one coordinator)"
        } else {
            "every coordinator"
        },
        a.agents,
        a.slots,
        a.coordinator_cpu
            .map_or("uncapped".to_string(), |c| format!("capped at {c} core(s)"))
    );
    println!(
        "{:>2} {:<12} {:>8} {:>8} {:>8} | {:>7} {:<17} {:>7} {:>7} {:>8} {:>8} {:>7} | {:>5}",
        "K",
        "form",
        "tasks/s",
        "p50 ms",
        "p99 ms",
        "leader",
        "followers",
        "agents",
        "broker",
        "postgres",
        "loadgen",
        "total",
        "busy"
    );
    let mut report = Vec::new();
    for &k in &a.coordinators {
        let fleet = Fleet::start(FleetSpec {
            coordinators: k,
            agents: a.agents,
            slots: a.slots,
            store: Some(pg.create_database(&format!("capacity_{k}"))?),
            extra_accounts: Vec::new(),
            coordinator_cpu: a.coordinator_cpu,
        })
        .await?;
        let completions = fleet.completions().await?;
        // The probes: each coordinator by its role now, then the rest.
        let mut probes = Vec::new();
        let mut clients = Vec::new();
        for (c, client) in fleet.coordinators.iter().zip(fleet.clients()) {
            let role = c.role().await.unwrap_or_else(|| "down".into());
            if !(a.rest_followers && k > 1 && role == "leader") {
                clients.push(client);
            }
            probes.push((
                role,
                CpuProbe::Pids(vec![c.pid().context("a coordinator")?]),
            ));
        }
        let subs = Submissions::prepare(&clients[0]).await?;
        anyhow::ensure!(
            probes.iter().filter(|(r, _)| r == "leader").count() == 1,
            "not exactly one leader among {:?}",
            probes.iter().map(|(r, _)| r).collect::<Vec<_>>()
        );
        let agents = fleet.agents.iter().filter_map(|p| p.pid()).collect();
        probes.push(("agents".into(), CpuProbe::Pids(agents)));
        probes.push(("broker".into(), CpuProbe::Pids(vec![fleet.broker_pid()?])));
        probes.push(("postgres".into(), CpuProbe::Tree(postmaster)));
        probes.push(("loadgen".into(), CpuProbe::Pids(vec![std::process::id()])));
        for form in [Form::WasmInline, Form::OnnxByRef] {
            let make = |i| subs.make(form, i);
            // Warm up: connections, module caches, the store's first rows.
            run_load(&clients, &completions, 20, 4, make).await?;
            let t0 = read_probes(&probes)?;
            let (mut lat, wall) = run_load(&clients, &completions, n, window, make).await?;
            let t1 = read_probes(&probes)?;
            lat.sort();
            let cpu = cpu_seconds(&t0, &t1);
            let per_task = |s: f64| s * 1000.0 / n as f64;
            let of = |role: &str| -> Vec<f64> {
                probes
                    .iter()
                    .zip(&cpu)
                    .filter(|((r, _), _)| r == role)
                    .map(|(_, s)| per_task(*s))
                    .collect()
            };
            let (leader, followers) = (of("leader")[0], of("follower"));
            let (agents, broker) = (of("agents")[0], of("broker")[0]);
            let (postgres, loadgen) = (of("postgres")[0], of("loadgen")[0]);
            let total = per_task(cpu.iter().sum());
            let cores = std::thread::available_parallelism().map_or(1, |c| c.get()) as f64;
            let busy = cpu.iter().sum::<f64>() / wall.as_secs_f64() / cores * 100.0;
            let followers_text = if followers.is_empty() {
                "-".to_string()
            } else {
                followers
                    .iter()
                    .map(|f| format!("{f:.2}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            println!(
                "{k:>2} {:<12} {:>8.1} {:>8.1} {:>8.1} | {leader:>7.2} {followers_text:<17} \
                 {agents:>7.2} {broker:>7.2} {postgres:>8.2} {loadgen:>8.2} {total:>7.2} | \
                 {busy:>4.0}%",
                form.name(),
                n as f64 / wall.as_secs_f64(),
                ms(pct(&lat, 0.5)),
                ms(pct(&lat, 0.99)),
            );
            report.push(serde_json::json!({
                "coordinators": k,
                "form": form.name(),
                "tasks": n,
                "in_flight": window,
                "wall_s": wall.as_secs_f64(),
                "tasks_per_s": n as f64 / wall.as_secs_f64(),
                "p50_ms": ms(pct(&lat, 0.5)),
                "p99_ms": ms(pct(&lat, 0.99)),
                "cpu_ms_per_task": {
                    "leader": leader, "followers": followers, "agents": agents,
                    "broker": broker, "postgres": postgres, "loadgen": loadgen, "total": total,
                },
                "cpu_busy_pct_of_all_cores": busy,
            }));
        }
        drop(completions);
        drop(fleet);
    }
    println!(
        "coordinators: section took {:.0} s",
        started.elapsed().as_secs_f64()
    );
    println!(
        "{}",
        serde_json::json!({"section": "coordinators", "agents": a.agents, "slots": a.slots,
                           "coordinator_cpu": a.coordinator_cpu,
                           "rest": if a.rest_followers { "followers" } else { "all" },
                           "cpus": std::thread::available_parallelism().map_or(0, |c| c.get()),
                           "runs": report})
    );
    Ok(())
}

/// Nodes `GET /api/v1/nodes` shows online (with a health report), nodes it shows, and how long
/// it took to answer.
async fn online(client: &ambient_cli::client::Client) -> anyhow::Result<(usize, usize, Duration)> {
    let t0 = Instant::now();
    let nodes = client.nodes().await?;
    let n = nodes
        .iter()
        .filter(|n| n.state == ambient_protocol::NodeState::Online && n.health.is_some())
        .count();
    Ok((n, nodes.len(), t0.elapsed()))
}

/// Section 7: how many nodes one coordinator holds.
async fn nodes_figures(a: &Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut levels = a.nodes.clone();
    levels.sort();
    let most = *levels.last().context("--nodes is empty")?;
    // One connection per simulated node here, and one more in mosquitto (a child, same limit).
    let limit = ambient_e2e::capacity::open_files_limit().unwrap_or(0);
    anyhow::ensure!(
        limit >= most as u64 + 256,
        "{most} simulated nodes need more open files than this process may have ({limit}): \
         raise the limit first (`ulimit -n {}`)",
        most + 1024
    );
    let interval = Duration::from_secs(5);
    let accounts = ambient_e2e::capacity::sim_accounts(most);
    let fleet = Fleet::start(FleetSpec {
        coordinators: 1,
        agents: 2,
        slots: 2,
        store: None,
        extra_accounts: accounts.clone(),
        coordinator_cpu: None,
    })
    .await?;
    println!(
        "nodes: one coordinator (SQLite), 2 agents, simulated nodes reporting health every {} s \
         (paused: online, no work); {} s window per level; open files limit {limit} (enough, \
         not raised); fleet up in {:.0} s ({} broker accounts)",
        interval.as_secs(),
        a.window_secs,
        started.elapsed().as_secs_f64(),
        most + 4
    );
    println!(
        "{:>5} {:>11} {:>8} {:>9} {:>8} {:>8} {:>8} {:>9} {:>8} {:>8}",
        "nodes",
        "online",
        "to all",
        "coord CPU",
        "RSS MiB",
        "task p50",
        "task max",
        "GET nodes",
        "broker",
        "loadgen"
    );
    let coordinator = fleet.coordinators[0].pid().context("the coordinator")?;
    let clients = fleet.clients();
    let completions = fleet.completions().await?;
    let module = base64::engine::general_purpose::STANDARD.encode(modules::wasm(modules::SUM_WAT));
    let make = |i: usize| TaskSubmission {
        task_type: TaskType::WasmExecution,
        wasm_module: Some(module.clone()),
        inputs: serde_json::json!({"numbers": [i, 1, 2, 3]}),
        requirements: Requirements::default(),
        task_id: None,
    };
    run_load(&clients, &completions, 10, 1, make).await?; // warm up
    let probes = [
        CpuProbe::Pids(vec![coordinator]),
        CpuProbe::Pids(vec![fleet.broker_pid()?]),
        CpuProbe::Pids(vec![std::process::id()]),
    ];
    let mut sims = SimNodes::new();
    let mut report = Vec::new();
    for &level in &levels {
        let ramp = Instant::now();
        let have = sims.len();
        sims.add(fleet.mqtt, &accounts[have..level], interval, 100)
            .await?;
        // Every node online, or a minute.
        let all = level + fleet.agents.len();
        let to_all = loop {
            let (n, _, _) = online(&clients[0]).await?;
            if n >= all {
                break Some(ramp.elapsed());
            }
            if ramp.elapsed() > Duration::from_secs(60) {
                break None;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        };
        tokio::time::sleep(interval).await; // past the connection burst
        let window = Duration::from_secs(a.window_secs);
        let t0 = probes
            .iter()
            .map(|p| p.ticks())
            .collect::<anyhow::Result<Vec<_>>>()?;
        let start = Instant::now();
        let mut lat = Vec::new();
        for i in 0..20u32 {
            tokio::time::sleep_until((start + window * i / 20).into()).await;
            let (l, _) = run_load(&clients, &completions, 1, 1, make).await?;
            lat.extend(l);
        }
        tokio::time::sleep_until((start + window).into()).await;
        let t1 = probes
            .iter()
            .map(|p| p.ticks())
            .collect::<anyhow::Result<Vec<_>>>()?;
        let elapsed = start.elapsed().as_secs_f64();
        let pct_of_core: Vec<f64> = cpu_seconds(&t0, &t1)
            .iter()
            .map(|s| s / elapsed * 100.0)
            .collect();
        let rss = ambient_e2e::capacity::rss_kib(coordinator)? as f64 / 1024.0;
        let (on, known, get) = online(&clients[0]).await?;
        lat.sort();
        println!(
            "{level:>5} {:>11} {:>8} {:>8.1}% {rss:>8.1} {:>8.1} {:>8.1} {:>7.1}ms {:>7.1}% {:>7.1}%",
            format!("{on}/{known}"),
            to_all.map_or("never".into(), |d| format!("{:.1}s", d.as_secs_f64())),
            pct_of_core[0],
            ms(pct(&lat, 0.5)),
            ms(*lat.last().unwrap_or(&Duration::ZERO)),
            ms(get),
            pct_of_core[1],
            pct_of_core[2],
        );
        report.push(serde_json::json!({
            "simulated_nodes": level,
            "online": on,
            "known": known,
            "expected_online": all,
            "seconds_to_all_online": to_all.map(|d| d.as_secs_f64()),
            "coordinator_cpu_pct_of_one_core": pct_of_core[0],
            "coordinator_rss_mib": rss,
            "task_p50_ms": ms(pct(&lat, 0.5)),
            "task_max_ms": ms(*lat.last().unwrap_or(&Duration::ZERO)),
            "get_nodes_ms": ms(get),
            "broker_cpu_pct_of_one_core": pct_of_core[1],
            "loadgen_cpu_pct_of_one_core": pct_of_core[2],
        }));
    }
    sims.stop().await;
    drop(completions);
    drop(fleet);
    println!(
        "nodes: section took {:.0} s",
        started.elapsed().as_secs_f64()
    );
    println!(
        "{}",
        serde_json::json!({"section": "nodes", "health_interval_s": interval.as_secs(),
                           "window_s": a.window_secs, "levels": report})
    );
    Ok(())
}
