//! Capacity measurements for `ambient-loadgen --only coordinators|nodes`: a whole network as OS
//! processes (mosquitto, `ambient-coordinator` processes, `ambient-agent` processes, optionally on
//! one PostgreSQL), driven only through REST and MQTT, with the CPU time each process spent.
//!
//! - [`Fleet`]: mosquitto, K coordinators on one store (the first leads) and A agents.
//! - [`CpuProbe`]: CPU ticks of processes read from `/proc`, a PostgreSQL server's backends
//!   included, to take the difference over a measured window.
//! - [`Completions`]: the submitter's MQTT notifications, resolving a waiter per task id, so
//!   that waiting for a task costs the coordinators nothing beyond the notifications they
//!   publish anyway.
//! - [`run_load`]: N submissions over REST, round robin over the coordinators, C in flight.
//! - [`SimNodes`]: MQTT clients that look like agents for health only (identity, status, health
//!   every few seconds), paused so that no work goes to them.
//! - [`CpuCap`]: a CPU cgroup with a quota, so that each coordinator process gets a fixed
//!   share of a core, as it would on a small machine of its own, while the rest of the network
//!   (broker, PostgreSQL, agents) shares the cores uncapped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ambient_cli::client::Client;
use ambient_cli::local::agent_config;
use ambient_link::{Incoming, LinkOptions, LinkState, QoS};
use ambient_protocol::envelope;
use ambient_protocol::testkit::HealthBuilder;
use ambient_protocol::{
    NodeKey, NodeState, NodeStatus, TaskInfo, TaskStatus, TaskSubmission, topics,
};
use anyhow::{Context as _, Result, bail, ensure};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::mosquitto::Mosquitto;
use crate::process::{CoordinatorProcess, ServiceProcess};

/// The submitter account of a fleet (broker user, REST submitter).
pub const SUBMITTER: &str = "loadgen";
/// Its API key.
pub const API_KEY: &str = "loadgen-api-key-0123456789";
/// Its broker password.
const SUBMITTER_PASSWORD: &str = "loadgen-submitter-password";
/// The coordinators' broker password.
const COORDINATOR_PASSWORD: &str = "loadgen-coordinator-password";

/// What to start.
pub struct FleetSpec {
    /// Coordinator processes, all on `store`; the first one leads.
    pub coordinators: usize,
    /// Agent processes (`node-1`…).
    pub agents: usize,
    /// Tasks each agent runs at once at most.
    pub slots: u32,
    /// A PostgreSQL URL; `None`: one coordinator on a SQLite file.
    pub store: Option<String>,
    /// More broker accounts, with no agent (simulated nodes).
    pub extra_accounts: Vec<(String, String)>,
    /// Each coordinator's CPU quota in cores ([`CpuCap`]); `None`: uncapped.
    pub coordinator_cpu: Option<f64>,
}

/// A network of processes on loopback. Everything is killed when it is dropped.
pub struct Fleet {
    /// Coordinators, the leader first.
    pub coordinators: Vec<CoordinatorProcess>,
    /// Agents.
    pub agents: Vec<ServiceProcess>,
    /// The coordinators' CPU caps (after them, so that their processes are gone first); held
    /// only to be dropped.
    _caps: Vec<CpuCap>,
    /// The broker (after the services, so that it outlives them when dropped).
    pub broker: Mosquitto,
    /// Its address.
    pub mqtt: SocketAddr,
    // Last: removed once the processes that write into it are gone.
    dir: tempfile::TempDir,
}

impl Fleet {
    /// Starts mosquitto, the coordinators (the first one leads before the next starts) and the
    /// agents, and returns once every agent is online.
    pub async fn start(spec: FleetSpec) -> Result<Fleet> {
        ensure!(spec.coordinators >= 1, "at least one coordinator");
        ensure!(
            spec.coordinators == 1 || spec.store.is_some(),
            "several coordinators need a PostgreSQL store"
        );
        let dir = tempfile::Builder::new()
            .prefix("ambient-capacity-")
            .tempdir()?;
        let mut users = vec![
            ("coordinator".to_string(), COORDINATOR_PASSWORD.to_string()),
            (SUBMITTER.to_string(), SUBMITTER_PASSWORD.to_string()),
        ];
        let nodes: Vec<(String, String)> = (1..=spec.agents)
            .map(|i| (format!("node-{i}"), format!("node-{i}-password")))
            .collect();
        users.extend(nodes.iter().cloned());
        users.extend(spec.extra_accounts.iter().cloned());
        // One mosquitto_passwd per account: seconds for thousands, so off the async workers.
        let broker = tokio::task::spawn_blocking(move || {
            let refs: Vec<(&str, &str)> = users
                .iter()
                .map(|(u, p)| (u.as_str(), p.as_str()))
                .collect();
            Mosquitto::start(&refs)
        })
        .await??;
        let mqtt = SocketAddr::new(broker.host().parse()?, broker.port());

        let mut coordinators: Vec<CoordinatorProcess> = Vec::new();
        let mut caps = Vec::new();
        for i in 0..spec.coordinators {
            let mut cfg: ambient_coordinator::Config =
                toml::from_str(ambient_coordinator::config::EXAMPLE)?;
            let cdir = dir.path().join(format!("coordinator-{i}"));
            cfg.data_dir = cdir.join("data");
            cfg.store = spec.store.clone();
            cfg.http_addr = format!("127.0.0.1:{}", crate::free_port()?).parse()?;
            cfg.mqtt.host = mqtt.ip().to_string();
            cfg.mqtt.port = mqtt.port();
            cfg.mqtt.password = COORDINATOR_PASSWORD.into();
            cfg.api_keys = vec![ambient_coordinator::config::ApiKey {
                submitter: SUBMITTER.into(),
                key: API_KEY.into(),
            }];
            let p = CoordinatorProcess::start(&cfg, &cdir).await?;
            if let Some(cores) = spec.coordinator_cpu {
                let pid = p.pid().context("a coordinator that has no process")?;
                caps.push(CpuCap::new(&format!("coordinator-{i}-{pid}"), cores, pid)?);
            }
            // The first one must have the lease before the others look for it.
            wait_for_role(&p, if i == 0 { "leader" } else { "follower" }).await?;
            coordinators.push(p);
        }

        let mut agents = Vec::new();
        for (i, (node, password)) in nodes.iter().enumerate() {
            let url = &coordinators[i % coordinators.len()].url;
            let mut cfg = agent_config(dir.path(), node, mqtt, password, url, 5.0);
            cfg.execution.max_concurrent_tasks = spec.slots;
            agents.push(ServiceProcess::start(
                "ambient-agent",
                &toml::to_string(&cfg)?,
                &dir.path().join(node),
            )?);
        }
        let fleet = Fleet {
            coordinators,
            agents,
            _caps: caps,
            broker,
            mqtt,
            dir,
        };
        fleet
            .client(0)
            .wait_for_nodes(spec.agents, Duration::from_secs(60))
            .await
            .context("the agents did not come online")?;
        Ok(fleet)
    }

    /// A REST client of coordinator `i` with the submitter's key.
    pub fn client(&self, i: usize) -> Client {
        Client::new(&self.coordinators[i].url, API_KEY)
    }

    /// A REST client of each coordinator, in order.
    pub fn clients(&self) -> Vec<Client> {
        (0..self.coordinators.len())
            .map(|i| self.client(i))
            .collect()
    }

    /// The submitter's MQTT notifications ([`Completions`]).
    pub async fn completions(&self) -> Result<Completions> {
        Completions::subscribe(self.mqtt, SUBMITTER, SUBMITTER_PASSWORD).await
    }

    /// The fleet's directory (configurations and logs of every process).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The mosquitto process id, found by its configuration file on `/proc`.
    pub fn broker_pid(&self) -> Result<u32> {
        let conf = self.broker.dir().join("mosquitto.conf");
        let conf = conf.to_string_lossy();
        find_process(|argv| argv.iter().any(|a| a == conf.as_ref()))
            .context("mosquitto's process was not found")
    }
}

async fn wait_for_role(p: &CoordinatorProcess, role: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if p.role().await.as_deref() == Some(role) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{} is not {role} after 30 s:\n{}", p.url, p.log());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Clock ticks per second of `/proc/*/stat` times (`USER_HZ`, 100 on Linux).
pub const TICKS_PER_SEC: f64 = 100.0;

/// The fields of `/proc/PID/stat` after the command name (field 3, `state`, is index 0).
fn stat_fields(pid: u32) -> Result<Vec<u64>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').context("bad stat")?.1;
    // `state` is a letter: parse it as 0 to keep the indices.
    Ok(after
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect())
}

/// Every process id on `/proc`.
fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The first process whose argument vector satisfies `matches`.
pub fn find_process(matches: impl Fn(&[String]) -> bool) -> Option<u32> {
    all_pids().into_iter().find(|pid| {
        std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|raw| {
            let argv: Vec<String> = raw
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            matches(&argv)
        })
    })
}

/// The postmaster of the PostgreSQL server listening on `port` (its command line says `-p
/// PORT`).
pub fn postmaster_pid(port: u16) -> Option<u32> {
    let port = port.to_string();
    find_process(|argv| {
        argv.first().is_some_and(|a| a.ends_with("postgres"))
            && argv.windows(2).any(|w| w[0] == "-p" && w[1] == port)
    })
}

/// What one CPU figure covers.
#[derive(Debug, Clone)]
pub enum CpuProbe {
    /// These processes (user + system time).
    Pids(Vec<u32>),
    /// A process and all its descendants: its own time, its live children's, and what its
    /// reaped children spent (`cutime`, `cstime`), so a PostgreSQL backend that exits within
    /// the window is still counted.
    Tree(u32),
}

impl CpuProbe {
    /// CPU ticks spent so far.
    pub fn ticks(&self) -> Result<u64> {
        // After `)`: 0 state, 1 ppid, …, 11 utime, 12 stime, 13 cutime, 14 cstime.
        let own = |f: &[u64]| f[11] + f[12];
        match self {
            CpuProbe::Pids(pids) => {
                let mut total = 0;
                for pid in pids {
                    total += own(&stat_fields(*pid)?);
                }
                Ok(total)
            }
            CpuProbe::Tree(root) => {
                let f = stat_fields(*root)?;
                let mut total = own(&f) + f[13] + f[14];
                for pid in all_pids() {
                    // A child that exited since the listing is in the root's cutime now.
                    if let Ok(c) = stat_fields(pid)
                        && c[1] == u64::from(*root)
                    {
                        total += own(&c) + c[13] + c[14];
                    }
                }
                Ok(total)
            }
        }
    }
}

/// Resident memory of a process, in KiB.
pub fn rss_kib(pid: u32) -> Result<u64> {
    Ok(crate::proc_stats(pid)?.0)
}

/// The terminal notifications of one submitter's tasks, read from its MQTT topics by one
/// connection: [`Completions::expect`] registers a task id (before it is submitted), and its
/// receiver gets the task's terminal [`TaskInfo`].
pub struct Completions {
    waiters: Arc<Mutex<HashMap<Uuid, oneshot::Sender<TaskInfo>>>>,
    token: CancellationToken,
}

impl Completions {
    /// Connects as `submitter` and subscribes to its task notifications; returns once the
    /// subscription is in place.
    pub async fn subscribe(mqtt: SocketAddr, submitter: &str, password: &str) -> Result<Self> {
        let token = CancellationToken::new();
        let mut link = ambient_link::start(
            LinkOptions {
                host: mqtt.ip().to_string(),
                port: mqtt.port(),
                failover: Vec::new(),
                client_id: format!("{submitter}:capacity"),
                credentials: Some((submitter.into(), password.into())),
                clean_session: true,
                keep_alive: Duration::from_secs(30),
                last_will: None,
                subscriptions: vec![topics::submitter_all(submitter)],
            },
            token.clone(),
            &TaskTracker::new(),
        );
        tokio::time::timeout(
            Duration::from_secs(10),
            link.state.wait_for(|s| *s == LinkState::Connected),
        )
        .await
        .context("the submitter could not connect within 10 s")??;
        // The SUBSCRIBE goes out right after the ConnAck; let its SUBACK land.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let waiters: Arc<Mutex<HashMap<Uuid, oneshot::Sender<TaskInfo>>>> = Arc::default();
        let w = waiters.clone();
        let stop = token.clone();
        tokio::spawn(async move {
            loop {
                let msg = tokio::select! {
                    _ = stop.cancelled() => return,
                    msg = link.incoming.recv() => msg,
                };
                let Some(msg) = msg else { return };
                if let Incoming::Publish { payload, .. } = msg
                    && let Ok(info) = serde_json::from_slice::<TaskInfo>(&payload)
                    && info.status.is_terminal()
                    && let Some(tx) = w.lock().expect("not poisoned").remove(&info.task_id)
                {
                    let _ = tx.send(info);
                }
            }
        });
        Ok(Completions { waiters, token })
    }

    /// Waits for task `id`'s terminal notification.
    pub fn expect(&self, id: Uuid) -> oneshot::Receiver<TaskInfo> {
        let (tx, rx) = oneshot::channel();
        self.waiters.lock().expect("not poisoned").insert(id, tx);
        rx
    }
}

impl Drop for Completions {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// Submits `n` tasks, `make(i)` each (given a fresh `task_id`), over REST to `clients` round
/// robin from task to task (on to the next one on a 503), at most `in_flight` at once, and waits
/// for each to complete. Returns each task's submit → completed latency and the wall time.
pub async fn run_load(
    clients: &[Client],
    completions: &Completions,
    n: usize,
    in_flight: usize,
    make: impl Fn(usize) -> TaskSubmission,
) -> Result<(Vec<Duration>, Duration)> {
    let clients: Arc<[Client]> = clients.into();
    let window = Arc::new(tokio::sync::Semaphore::new(in_flight));
    let mut running = tokio::task::JoinSet::new();
    let start = Instant::now();
    for i in 0..n {
        let permit = window.clone().acquire_owned().await?;
        let mut sub = make(i);
        let id = Uuid::new_v4();
        sub.task_id = Some(id);
        let done = completions.expect(id);
        let clients = clients.clone();
        running.spawn(async move {
            let t0 = Instant::now();
            crate::submit_until_accepted(&clients, i, &sub, Duration::from_secs(60)).await?;
            let info = tokio::time::timeout(Duration::from_secs(120), done)
                .await
                .with_context(|| format!("task {id}: no terminal notification within 120 s"))?
                .context("the notification reader stopped")?;
            ensure!(
                info.status == TaskStatus::Completed,
                "task failed: {info:?}"
            );
            drop(permit);
            anyhow::Ok(t0.elapsed())
        });
    }
    let mut latencies = Vec::with_capacity(n);
    while let Some(r) = running.join_next().await {
        latencies.push(r??);
    }
    Ok((latencies, start.elapsed()))
}

/// Broker accounts `sim-00001`… for `n` simulated nodes.
pub fn sim_accounts(n: usize) -> Vec<(String, String)> {
    (1..=n)
        .map(|i| (format!("sim-{i:05}"), format!("sim-{i:05}-password")))
        .collect()
}

/// Simulated nodes: each one MQTT connection that behaves like an agent for presence and
/// health only. At every connect it publishes its identity key and `online` (both retained; its
/// Last Will is a retained `offline`), it subscribes to its tasks, control and reputation
/// topics, and it publishes a [`Health`](ambient_protocol::Health) (QoS 0) every `interval`,
/// from a random phase. Its health says it is paused (`accepting: false`), so the coordinator
/// counts it online but sends it no work.
pub struct SimNodes {
    count: usize,
    token: CancellationToken,
    tracker: TaskTracker,
}

impl SimNodes {
    /// No simulated nodes yet.
    pub fn new() -> SimNodes {
        SimNodes {
            count: 0,
            token: CancellationToken::new(),
            tracker: TaskTracker::new(),
        }
    }

    /// How many run.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether none runs.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Connects `accounts`, `batch` at a time, each batch waited for (every connection
    /// accepted by the broker) before the next.
    pub async fn add(
        &mut self,
        mqtt: SocketAddr,
        accounts: &[(String, String)],
        interval: Duration,
        batch: usize,
    ) -> Result<()> {
        for chunk in accounts.chunks(batch.max(1)) {
            let mut states = Vec::with_capacity(chunk.len());
            for (node, password) in chunk {
                states.push(self.start_one(mqtt, node, password, interval));
            }
            for (mut state, (node, _)) in states.into_iter().zip(chunk) {
                tokio::time::timeout(
                    Duration::from_secs(30),
                    state.wait_for(|s| *s == LinkState::Connected),
                )
                .await
                .with_context(|| format!("{node} did not connect within 30 s"))??;
            }
            self.count += chunk.len();
        }
        Ok(())
    }

    fn start_one(
        &self,
        mqtt: SocketAddr,
        node: &str,
        password: &str,
        interval: Duration,
    ) -> tokio::sync::watch::Receiver<LinkState> {
        let offline = envelope::encode(&NodeStatus {
            node_id: node.into(),
            state: NodeState::Offline,
            agent_version: "simulated".into(),
        });
        let mut link = ambient_link::start(
            LinkOptions {
                host: mqtt.ip().to_string(),
                port: mqtt.port(),
                failover: Vec::new(),
                client_id: node.into(),
                credentials: Some((node.into(), password.into())),
                clean_session: false,
                keep_alive: Duration::from_secs(10),
                last_will: Some((topics::node_status(node), offline)),
                subscriptions: vec![
                    topics::node_tasks(node),
                    topics::node_control(node),
                    topics::node_reputation(node),
                ],
            },
            self.token.clone(),
            &self.tracker,
        );
        let state = link.state.clone();
        let (client, node, stop) = (link.client.clone(), node.to_string(), self.token.clone());
        let key = NodeKey::generate();
        let phase = interval.mul_f64(rand::random::<f64>());
        self.tracker.spawn(async move {
            let mut every = tokio::time::interval_at(tokio::time::Instant::now() + phase, interval);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = every.tick() => {
                        let health = HealthBuilder::new(&node, chrono::Utc::now())
                            .accepting(false)
                            .build();
                        let _ = client.try_publish(topics::node_health(&node),
                            QoS::AtMostOnce, false, envelope::encode(&health));
                    }
                    msg = link.incoming.recv() => match msg {
                        None => return,
                        Some(Incoming::Connected { .. }) => {
                            let identity = envelope::encode(&key.identity(&node));
                            let online = envelope::encode(&NodeStatus {
                                node_id: node.clone(),
                                state: NodeState::Online,
                                agent_version: "simulated".into(),
                            });
                            let _ = client.try_publish(topics::node_identity(&node),
                                QoS::AtLeastOnce, true, identity);
                            let _ = client.try_publish(topics::node_status(&node),
                                QoS::AtLeastOnce, true, online);
                        }
                        Some(Incoming::Publish { .. }) => {}
                    },
                }
            }
        });
        state
    }

    /// Disconnects them all.
    pub async fn stop(self) {
        self.token.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

impl Default for SimNodes {
    fn default() -> Self {
        SimNodes::new()
    }
}

/// The soft limit on open files of this process (`/proc/self/limits`), which bounds how many
/// simulated nodes one load generator can connect.
pub fn open_files_limit() -> Option<u64> {
    std::fs::read_to_string("/proc/self/limits")
        .ok()?
        .lines()
        .find(|l| l.starts_with("Max open files"))?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()
}

/// A CPU cgroup holding one process with a quota of `cores` (`cpu.max` on cgroup v2,
/// `cpu.cfs_quota_us` on v1), removed when dropped (once the process is gone). It needs root
/// and a writable cpu controller, as on the project's machines; where there is none it says so.
pub struct CpuCap {
    dir: std::path::PathBuf,
}

impl CpuCap {
    /// Puts `pid` (all its threads) in a new group `ambient-capacity-<name>` limited to `cores`
    /// of CPU time per 100 ms period.
    pub fn new(name: &str, cores: f64, pid: u32) -> Result<CpuCap> {
        ensure!(cores > 0.0, "a CPU quota must be positive");
        let period = 100_000u64;
        let quota = ((cores * period as f64).round() as u64).max(1_000);
        let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers");
        let v1 = Path::new("/sys/fs/cgroup/cpu/cpu.cfs_quota_us");
        let group = format!("ambient-capacity-{name}");
        let (dir, limits): (std::path::PathBuf, Vec<(&str, String)>) = if std::fs::read_to_string(
            v2,
        )
        .is_ok_and(|c| c.split_whitespace().any(|c| c == "cpu"))
        {
            (
                Path::new("/sys/fs/cgroup").join(&group),
                vec![("cpu.max", format!("{quota} {period}"))],
            )
        } else if v1.exists() {
            (
                Path::new("/sys/fs/cgroup/cpu").join(&group),
                vec![
                    ("cpu.cfs_period_us", period.to_string()),
                    ("cpu.cfs_quota_us", quota.to_string()),
                ],
            )
        } else {
            bail!("no CPU cgroup controller here (neither cgroup v2 with cpu nor v1's cpu)")
        };
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("{}: a CPU cap needs root", dir.display()))?;
        let cap = CpuCap { dir };
        for (file, value) in limits {
            std::fs::write(cap.dir.join(file), value)
                .with_context(|| format!("{}/{file}", cap.dir.display()))?;
        }
        std::fs::write(cap.dir.join("cgroup.procs"), pid.to_string())
            .with_context(|| format!("{}/cgroup.procs", cap.dir.display()))?;
        Ok(cap)
    }
}

impl Drop for CpuCap {
    fn drop(&mut self) {
        // Empty once its process has exited; a leftover empty group is harmless.
        let _ = std::fs::remove_dir(&self.dir);
    }
}
