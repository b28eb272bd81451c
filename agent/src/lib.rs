//! Ambient VCP node agent: reports health over MQTT, takes assignments from the coordinator, runs
//! them in a sandbox, and returns results until the coordinator acknowledges them.
//!
//! [`run`] is the whole agent; [`start`] returns a handle ([`Agent`]) that tests and `ambient up`
//! use to stop it gracefully or to kill it abruptly.
//!
//! # Layout
//! - [`config`]: the typed, strict configuration.
//! - [`creds`]: the broker password and the identity key, from config, OS keyring, or 0600 files.
//! - [`blobs`]: large artifacts by reference, downloaded from the coordinator with signed requests.
//! - [`telemetry`]: sysinfo + NVML sampling.
//! - [`journal`]: the SQLite journal that makes results survive crashes.
//! - [`exec`]: executors (`exec::wasm`: wasmi with WASI preview1 stdio).
//! - [`policy`]: the owner's contribution policy (settings, rules, probes) and its decision.
//! - [`control`]: the local control API (loopback HTTP with a bearer token) for the tray app.
//!
//! # Contribution policy
//! A loop re-evaluates the policy every `policy.evaluate_ms` (probes run on a blocking thread).
//! When it says stop, the agent publishes a health report with `accepting: false` at once, then
//! cancels its running tasks and sends `Declined` for each (the coordinator reschedules them
//! elsewhere at once), and declines new assignments. When it allows work again, it publishes
//! `accepting: true` at once. Settings changed through the control API take effect before the
//! call returns.
//!
//! # Features
//! | Feature | Default | |
//! |---|---|---|
//! | `wasm` | yes | `wasm_execution` tasks on wasmi |
//! | `onnx` | yes | `inference` tasks on tract (CPU) |
//! | `zk` | yes | `zk_proof` tasks: Groth16 proofs with `ambient-zk` |
//! | `gpu-cuda` | no | `inference` on NVIDIA GPUs with tract-cuda, CPU fallback |
//! | `gpu-metal` | no | `inference` on Apple GPUs with tract-metal (macOS only), CPU fallback |
//! | `fl` | yes | `federated_learning` clients over the data sets declared in the config |
//! | `nvml` | yes | NVIDIA GPU discovery through NVML (loaded at run time) |
//! | `keyring` | yes | OS keyring for the broker password and the identity key |
//!
//! # Identity
//! At first start the agent makes an ed25519 identity key (kept like the password) and at every
//! connect publishes its public half, retained, on `nodes/{node}/identity`, a topic the broker
//! ACL lets only this node write. It signs its secure-aggregation keys and its blob downloads
//! with it.
//!
//! A lean build for a small device: `cargo build --release -p ambient-agent --no-default-features
//! --features wasm`.

pub mod blobs;
pub mod config;
pub mod control;
pub mod creds;
pub mod exec;
pub mod journal;
pub mod policy;
pub mod telemetry;

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ambient_link::{AsyncClient, Incoming, LinkState, QoS};
use ambient_protocol::{
    AgentEvent, Assignment, Control, Health, NodeIdentity, NodeKey, NodeState, NodeStatus, Outcome,
    PROTOCOL_VERSION, ReputationReport, TaskResult, TaskType, topics,
};
use chrono::{DateTime, Utc};
use policy::{Clock as _, Decision, Observations, Rules, Settings};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};
use uuid::Uuid;

pub use config::Config;
use journal::{JobState, Journal};

/// Other nodes' identity keys, as they published them (retained, on their identity topics).
pub type PeerKeys =
    Arc<std::sync::RwLock<HashMap<String, ambient_protocol::identity::VerifyingKey>>>;

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// No usable broker password.
    #[error(transparent)]
    Creds(#[from] creds::CredsError),
    /// The journal could not be opened.
    #[error(transparent)]
    Journal(#[from] journal::JournalError),
    /// The data dir could not be created.
    #[error("cannot create data dir: {0}")]
    Io(#[from] std::io::Error),
    /// `settings.json` is unreadable or invalid.
    #[error("{path}: {why}")]
    Settings {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The control API could not start.
    #[error("control API: {0}")]
    Control(std::io::Error),
    /// A declared data set could not be read.
    #[error("{0}")]
    Dataset(String),
}

/// Task kinds this build executes.
pub fn supported_task_types() -> Vec<TaskType> {
    let mut v = Vec::new();
    if cfg!(feature = "wasm") {
        v.push(TaskType::WasmExecution);
    }
    if cfg!(feature = "onnx") {
        v.push(TaskType::Inference);
    }
    if cfg!(feature = "zk") {
        v.push(TaskType::ZkProof);
    }
    if cfg!(feature = "fl") {
        v.push(TaskType::FederatedLearning);
    }
    v
}

/// A running agent.
pub struct Agent {
    worker: Arc<Worker>,
    tracker: TaskTracker,
    token: CancellationToken,
    control_addr: Option<std::net::SocketAddr>,
}

impl Agent {
    /// The node id.
    pub fn node_id(&self) -> &str {
        &self.worker.cfg.node_id
    }

    /// Where the control API listens, when it is enabled.
    pub fn control_addr(&self) -> Option<std::net::SocketAddr> {
        self.control_addr
    }

    /// Stops cleanly: cancels running tasks, announces `offline`, disconnects, and waits.
    pub async fn shutdown(self) {
        self.worker.cancel_all();
        let offline = self.worker.status(NodeState::Offline);
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            let _ = self
                .worker
                .client
                .publish(
                    topics::node_status(&self.worker.cfg.node_id),
                    QoS::AtLeastOnce,
                    true,
                    offline,
                )
                .await;
            let _ = self.worker.client.disconnect().await;
            // Give the event loop a moment to flush the two packets.
            tokio::time::sleep(Duration::from_millis(200)).await;
        })
        .await;
        self.kill().await;
    }

    /// Stops at once, as a crash would: no goodbye, so the broker publishes the Last Will.
    /// Running wasm stops at its next fuel slice; what it produced is kept in the journal.
    pub async fn kill(self) {
        self.worker.cancel_all();
        self.token.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

struct Worker {
    cfg: Config,
    client: AsyncClient,
    journal: Journal,
    #[cfg(feature = "wasm")]
    sandbox: Arc<exec::wasm::WasmSandbox>,
    #[cfg(feature = "onnx")]
    onnx: exec::onnx::OnnxEngine,
    #[cfg(feature = "zk")]
    zk: exec::zk::ZkProver,
    #[cfg(feature = "fl")]
    fl: Arc<exec::fl::FlClients>,
    /// This node's identity key, published retained on its identity topic at every connect.
    identity: Arc<NodeKey>,
    /// Other nodes' identity keys (kept only by nodes that offer data sets).
    peers: PeerKeys,
    /// Large artifacts by reference.
    #[cfg_attr(
        not(any(feature = "wasm", feature = "onnx", feature = "zk")),
        allow(dead_code)
    )]
    blobs: Arc<blobs::Blobs>,
    running: Mutex<HashMap<(Uuid, u32), Arc<RunningTask>>>,
    telemetry: Arc<Mutex<telemetry::Telemetry>>,
    /// The latest telemetry sample, for the control API and policy-triggered health reports.
    last_sample: Mutex<Option<telemetry::Sample>>,
    tracker: TaskTracker,
    token: CancellationToken,
    link_state: tokio::sync::watch::Receiver<LinkState>,
    /// The latest reputation report the coordinator published to this node.
    reputation: Mutex<Option<ReputationReport>>,
    policy: Mutex<PolicyState>,
    probes: Arc<Mutex<policy::probe::SystemProbes>>,
    /// Serialises decisions, so health reports and declines follow them in order.
    apply_lock: tokio::sync::Mutex<()>,
    /// Serialises settings changes (persist, then apply).
    settings_lock: tokio::sync::Mutex<()>,
    /// The CPU duty cycle wasm runs under, live.
    duty_pct: AtomicU32,
}

/// An assignment being executed.
struct RunningTask {
    cancel: AtomicBool,
    /// Handed back to the coordinator with `Declined`: its result is not reported.
    declined: AtomicBool,
    task_type: TaskType,
    started_at: DateTime<Utc>,
}

/// The policy as it stands.
struct PolicyState {
    rules: Rules,
    obs: Observations,
    decision: Decision,
}

/// `<data_dir>/settings.json`.
pub fn settings_path(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("settings.json")
}

/// Reads the owner's settings; defaults when the file does not exist yet.
fn load_settings(path: &std::path::Path) -> Result<Rules, StartError> {
    let bad = |why: String| StartError::Settings {
        path: path.to_owned(),
        why,
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Rules::default()),
        Err(e) => return Err(bad(e.to_string())),
    };
    let settings: Settings = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    settings.compile().map_err(|e| bad(e.to_string()))
}

/// Writes the settings atomically (a temporary file renamed over the old one).
fn save_settings(path: &std::path::Path, s: &Settings) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(s).unwrap_or_default())?;
    std::fs::rename(&tmp, path)
}

/// Starts the agent; it runs until `shutdown` is cancelled (or [`Agent::shutdown`]).
pub async fn start(cfg: Config, shutdown: CancellationToken) -> Result<Agent, StartError> {
    cfg.validate()?;
    std::fs::create_dir_all(&cfg.data_dir)?;
    let (node, dir, configured) = (
        cfg.node_id.clone(),
        cfg.data_dir.clone(),
        cfg.mqtt.password.clone(),
    );
    // The keyring talks D-Bus and blocks.
    let (password, source) =
        tokio::task::spawn_blocking(move || creds::load(&node, &dir, configured.as_deref()))
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))??;
    log_secret_source(&cfg.node_id, "Broker password", &source);
    let (node, dir) = (cfg.node_id.clone(), cfg.data_dir.clone());
    let (identity, source) = tokio::task::spawn_blocking(move || creds::identity(&node, &dir))
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))??;
    log_secret_source(&cfg.node_id, "Identity key", &source);
    let identity = Arc::new(identity);
    let blobs = Arc::new(blobs::Blobs::new(
        cfg.coordinator_url.clone(),
        cfg.node_id.clone(),
        identity.clone(),
        &cfg.data_dir,
        cfg.execution.blob_cache_mib << 20,
    ));
    let journal = Journal::open(&cfg.data_dir.join("agent.db"))?;
    let peers: PeerKeys = Default::default();
    #[cfg(feature = "fl")]
    let fl = {
        let (datasets, node) = (cfg.datasets.clone(), cfg.node_id.clone());
        let (key, peers, blobs) = (identity.clone(), peers.clone(), blobs.clone());
        Arc::new(
            tokio::task::spawn_blocking(move || {
                exec::fl::FlClients::load(&datasets, &node, &key, peers, blobs)
            })
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?
            .map_err(StartError::Dataset)?,
        )
    };
    // Only a node that can join federated jobs needs its peers' identities.
    #[cfg(feature = "fl")]
    let needs_peers = fl.any();
    #[cfg(not(feature = "fl"))]
    let needs_peers = false;
    let rules = load_settings(&settings_path(&cfg.data_dir))?;
    // Decide before connecting, so the first health report already tells the truth.
    let probes = Arc::new(Mutex::new(policy::probe::SystemProbes::new(
        cfg.policy.x11_display.clone(),
    )));
    let (decision, obs) = {
        let (rules, probes) = (rules.clone(), probes.clone());
        tokio::task::spawn_blocking(move || {
            policy::evaluate(&rules, &mut *lock(&probes), &policy::LocalClock)
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?
    };
    if !decision.contributing {
        info!(node = %cfg.node_id, reasons = ?decision.reasons, "Starting paused.");
    }
    let control = if cfg.control.enabled {
        Some(
            control::Control::bind(&cfg.control, &cfg.data_dir)
                .await
                .map_err(StartError::Control)?,
        )
    } else {
        None
    };

    let token = shutdown.child_token();
    let tracker = TaskTracker::new();
    let node = cfg.node_id.clone();
    let offline = serde_json::to_vec(&NodeStatus {
        v: PROTOCOL_VERSION,
        node_id: node.clone(),
        state: NodeState::Offline,
        agent_version: env!("CARGO_PKG_VERSION").into(),
    })
    .unwrap_or_default();
    let link = ambient_link::start(
        ambient_link::LinkOptions {
            host: cfg.mqtt.host.clone(),
            port: cfg.mqtt.port,
            client_id: node.clone(),
            credentials: Some((node.clone(), password)),
            clean_session: false,
            keep_alive: Duration::from_secs(cfg.mqtt.keep_alive_sec),
            last_will: Some((topics::node_status(&node), offline)),
            subscriptions: [
                topics::node_tasks(&node),
                topics::node_control(&node),
                topics::node_reputation(&node),
            ]
            .into_iter()
            .chain(needs_peers.then(|| topics::ALL_NODE_IDENTITY.to_string()))
            .collect(),
        },
        token.clone(),
        &tracker,
    );
    let worker = Arc::new(Worker {
        #[cfg(feature = "wasm")]
        sandbox: Arc::new(exec::wasm::WasmSandbox::new(cfg.execution.module_cache)),
        #[cfg(feature = "onnx")]
        onnx: exec::onnx::OnnxEngine::new(cfg.execution.module_cache),
        #[cfg(feature = "zk")]
        zk: exec::zk::ZkProver::new(2),
        #[cfg(feature = "fl")]
        fl,
        identity,
        peers,
        blobs,
        cfg,
        client: link.client.clone(),
        journal,
        running: Mutex::new(HashMap::new()),
        telemetry: Arc::new(Mutex::new(
            tokio::task::spawn_blocking(telemetry::Telemetry::new)
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))?,
        )),
        last_sample: Mutex::new(None),
        tracker: tracker.clone(),
        token: token.clone(),
        link_state: link.state.clone(),
        reputation: Mutex::new(None),
        duty_pct: AtomicU32::new(rules.settings().cpu_duty_pct),
        policy: Mutex::new(PolicyState {
            rules,
            obs,
            decision,
        }),
        probes,
        apply_lock: tokio::sync::Mutex::new(()),
        settings_lock: tokio::sync::Mutex::new(()),
    });

    // Resume what a crash interrupted, if its lease still stands and the policy allows.
    let contributing = worker.lock_policy().decision.contributing;
    for a in worker.journal.interrupted().await? {
        if a.lease_deadline > Utc::now() && !contributing {
            worker.decline(&a, worker.paused_reason()).await;
        } else if a.lease_deadline > Utc::now() {
            info!(task_id = %a.task_id, attempt = a.attempt, "Resuming an interrupted task.");
            worker.clone().spawn_execution(a);
        } else {
            let _ = worker
                .journal
                .set_state(a.task_id, a.attempt, JobState::Cancelled)
                .await;
        }
    }

    tracker.spawn(worker.clone().dispatch(link.incoming));
    tracker.spawn(worker.clone().health_loop());
    tracker.spawn(worker.clone().resend_loop());
    tracker.spawn(worker.clone().policy_loop());
    let control_addr = match control {
        Some(c) => {
            let addr = c.addr();
            tracker.spawn(c.serve(worker.clone(), token.clone()));
            Some(addr)
        }
        None => None,
    };
    info!(node = %worker.cfg.node_id, broker = %format!("{}:{}", worker.cfg.mqtt.host, worker.cfg.mqtt.port),
          kinds = ?supported_task_types(), "Agent started.");
    Ok(Agent {
        worker,
        tracker,
        token,
        control_addr,
    })
}

/// Says where a secret came from: a warning for the file fallback, which is weaker than a keyring.
fn log_secret_source(node: &str, what: &str, source: &creds::Source) {
    match source {
        creds::Source::File(_) => {
            warn!(node, source = %source, "{what} kept in the file fallback, not an OS keyring.")
        }
        _ => info!(node, source = %source, "{what} loaded."),
    }
}

/// Runs the agent until `shutdown` completes, then stops cleanly.
pub async fn run(cfg: Config, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
    let agent = start(cfg, CancellationToken::new()).await?;
    shutdown.await;
    info!("Shutting down.");
    agent.shutdown().await;
    Ok(())
}

impl Worker {
    fn status(&self, state: NodeState) -> Vec<u8> {
        serde_json::to_vec(&NodeStatus {
            v: PROTOCOL_VERSION,
            node_id: self.cfg.node_id.clone(),
            state,
            agent_version: env!("CARGO_PKG_VERSION").into(),
        })
        .unwrap_or_default()
    }

    fn cancel_all(&self) {
        for t in self.lock_running().values() {
            t.cancel.store(true, Ordering::Relaxed);
        }
    }

    fn lock_running(&self) -> std::sync::MutexGuard<'_, HashMap<(Uuid, u32), Arc<RunningTask>>> {
        lock(&self.running)
    }

    fn lock_policy(&self) -> std::sync::MutexGuard<'_, PolicyState> {
        lock(&self.policy)
    }

    /// The `Declined` reason while paused.
    fn paused_reason(&self) -> String {
        format!(
            "paused by the owner: {}",
            self.lock_policy().decision.reasons.join("; ")
        )
    }

    /// Tasks this agent takes at once now (the configured maximum, capped by the CPU setting).
    fn slots(&self) -> u32 {
        self.lock_policy()
            .rules
            .slots(self.cfg.execution.max_concurrent_tasks)
    }

    /// Hands an assignment back: journaled as cancelled, and `Declined` so the coordinator
    /// reschedules it at once.
    async fn decline(&self, a: &Assignment, reason: String) {
        self.decline_key(a.task_id, a.attempt, reason).await;
    }

    async fn decline_key(&self, task_id: Uuid, attempt: u32, reason: String) {
        let _ = self
            .journal
            .set_state(task_id, attempt, JobState::Cancelled)
            .await;
        let ev = AgentEvent::Declined {
            v: PROTOCOL_VERSION,
            task_id,
            attempt,
            reason,
        };
        self.publish_event(&ev).await;
    }

    /// Re-reads the machine (on a blocking thread) and applies the decision.
    async fn reevaluate(&self) -> Decision {
        let rules = self.lock_policy().rules.clone();
        let probes = self.probes.clone();
        let obs = tokio::task::spawn_blocking(move || policy::observe(&rules, &mut *lock(&probes)))
            .await
            .unwrap_or_default();
        self.apply(Some(obs)).await
    }

    /// Decides with the current rules and `obs` (or the last observations). When contribution
    /// stops: a health report at once, then every running task is cancelled and declined.
    async fn apply(&self, obs: Option<Observations>) -> Decision {
        let _serial = self.apply_lock.lock().await;
        let (decision, flipped) = {
            let mut p = self.lock_policy();
            if let Some(obs) = obs {
                p.obs = obs;
            }
            let d = policy::decide(&p.rules, &p.obs, policy::LocalClock.now());
            let flipped = d.contributing != p.decision.contributing;
            p.decision = d.clone();
            (d, flipped)
        };
        if flipped {
            if decision.contributing {
                info!(node = %self.cfg.node_id, "Contribution resumed.");
            } else {
                info!(node = %self.cfg.node_id, reasons = ?decision.reasons, "Contribution paused.");
            }
            self.publish_health(false).await;
        }
        if !decision.contributing {
            let reason = self.paused_reason();
            let handed_back: Vec<(Uuid, u32)> = self
                .lock_running()
                .iter()
                .filter(|(_, t)| !t.declined.swap(true, Ordering::Relaxed))
                .map(|(k, t)| {
                    t.cancel.store(true, Ordering::Relaxed);
                    *k
                })
                .collect();
            for (task_id, attempt) in handed_back {
                info!(task_id = %task_id, attempt, "Task handed back: contribution paused.");
                self.decline_key(task_id, attempt, reason.clone()).await;
            }
        }
        decision
    }

    async fn policy_loop(self: Arc<Self>) {
        let mut every = tokio::time::interval(Duration::from_millis(self.cfg.policy.evaluate_ms));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => { self.reevaluate().await; }
                _ = self.token.cancelled() => return,
            }
        }
    }

    /// Replaces the owner's settings: checked, written to `settings.json`, then applied. Returns
    /// once the resulting decision has taken effect (health published, tasks handed back).
    async fn set_settings(&self, s: Settings) -> Result<Decision, control::SetError> {
        let rules = s.compile().map_err(control::SetError::Invalid)?;
        let _serial = self.settings_lock.lock().await;
        let path = settings_path(&self.cfg.data_dir);
        let to_save = s.clone();
        tokio::task::spawn_blocking(move || save_settings(&path, &to_save))
            .await
            .map_err(|e| control::SetError::Io(std::io::Error::other(e.to_string())))?
            .map_err(control::SetError::Io)?;
        self.duty_pct.store(s.cpu_duty_pct, Ordering::Relaxed);
        self.lock_policy().rules = rules;
        info!(node = %self.cfg.node_id, settings = ?s, "Settings changed.");
        Ok(if s.enabled {
            self.reevaluate().await
        } else {
            // Off needs no probe: stop now.
            self.apply(None).await
        })
    }

    async fn publish_event(&self, ev: &AgentEvent) {
        let payload = serde_json::to_vec(ev).unwrap_or_default();
        let topic = topics::node_results(&self.cfg.node_id);
        let sent = tokio::time::timeout(
            Duration::from_secs(5),
            self.client.publish(topic, QoS::AtLeastOnce, false, payload),
        )
        .await;
        if !matches!(sent, Ok(Ok(()))) {
            warn!("Could not queue a result message; it will be re-sent.");
        }
    }

    async fn dispatch(self: Arc<Self>, mut incoming: tokio::sync::mpsc::Receiver<Incoming>) {
        let tasks_topic = topics::node_tasks(&self.cfg.node_id);
        let control_topic = topics::node_control(&self.cfg.node_id);
        let reputation_topic = topics::node_reputation(&self.cfg.node_id);
        while let Some(msg) = incoming.recv().await {
            match msg {
                Incoming::Connected { .. } => {
                    let node = &self.cfg.node_id;
                    let identity = serde_json::to_vec(&self.identity.identity(node));
                    if let Err(e) = self.client.try_publish(
                        topics::node_identity(node),
                        QoS::AtLeastOnce,
                        true,
                        identity.unwrap_or_default(),
                    ) {
                        warn!(error = %e, "Could not publish this node's identity key.");
                    }
                    let online = self.status(NodeState::Online);
                    let topic = topics::node_status(&self.cfg.node_id);
                    let _ = self
                        .client
                        .try_publish(topic, QoS::AtLeastOnce, true, online);
                    self.resend_pending().await;
                    self.publish_health(false).await;
                }
                Incoming::Publish { topic, payload } if topic == tasks_topic => {
                    match serde_json::from_slice::<Assignment>(&payload) {
                        Ok(a) if a.v == PROTOCOL_VERSION => self.clone().on_assignment(a).await,
                        Ok(a) => warn!(
                            version = a.v,
                            "Ignored an assignment of another protocol version."
                        ),
                        Err(e) => warn!(error = %e, "Ignored a malformed assignment."),
                    }
                }
                Incoming::Publish { topic, payload } if topic == reputation_topic => {
                    match serde_json::from_slice::<ReputationReport>(&payload) {
                        Ok(r) if r.node_id == self.cfg.node_id => *lock(&self.reputation) = Some(r),
                        Ok(_) => warn!("Ignored a reputation report for another node."),
                        Err(e) => warn!(error = %e, "Ignored a malformed reputation report."),
                    }
                }
                Incoming::Publish { topic, payload } if topic == control_topic => {
                    match serde_json::from_slice::<Control>(&payload) {
                        Ok(c) => self.on_control(c).await,
                        Err(e) => warn!(error = %e, "Ignored a malformed control message."),
                    }
                }
                Incoming::Publish { topic, payload } => self.on_identity(&topic, &payload),
            }
        }
    }

    /// A peer's identity key (retained on its identity topic; an empty payload clears it).
    fn on_identity(&self, topic: &str, payload: &[u8]) {
        let Some(topics::Topic::NodeIdentity(node)) = topics::parse(topic) else {
            return;
        };
        let mut peers = self
            .peers
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if payload.is_empty() {
            peers.remove(node);
            return;
        }
        match NodeIdentity::key_for(node, payload) {
            Ok(key) => {
                peers.insert(node.to_string(), key);
            }
            Err(e) => warn!(node, error = %e, "Ignored an unusable identity message."),
        }
    }

    async fn on_assignment(self: Arc<Self>, a: Assignment) {
        match self.journal.receive(&a).await {
            Err(e) => {
                // Not journaled, so not run: the lease brings it back.
                error!(task_id = %a.task_id, error = %e, "Cannot journal an assignment; not running it.");
                return;
            }
            Ok(Some((JobState::ResultPending, Some(result)))) => {
                let ev = AgentEvent::Finished {
                    v: PROTOCOL_VERSION,
                    result,
                };
                self.publish_event(&ev).await;
                return;
            }
            Ok(Some(_)) => return, // a redelivery of something already in hand
            Ok(None) => {}
        }
        let contributing = self.lock_policy().decision.contributing;
        let decline = if !supported_task_types().contains(&a.task_type) {
            Some(format!("this agent cannot run {}", a.task_type))
        } else if !contributing {
            Some(self.paused_reason())
        } else if self.lock_running().len() >= self.slots() as usize {
            Some("all execution slots are busy".to_string())
        } else {
            None
        };
        if let Some(reason) = decline {
            self.decline(&a, reason).await;
            return;
        }
        self.spawn_execution(a);
    }

    fn spawn_execution(self: Arc<Self>, a: Assignment) {
        let task = Arc::new(RunningTask {
            cancel: AtomicBool::new(false),
            declined: AtomicBool::new(false),
            task_type: a.task_type,
            started_at: Utc::now(),
        });
        self.lock_running()
            .insert((a.task_id, a.attempt), task.clone());
        let tracker = self.tracker.clone();
        tracker.spawn(async move {
            let key = (a.task_id, a.attempt);
            let _ = self
                .journal
                .set_state(a.task_id, a.attempt, JobState::Running)
                .await;
            if task.declined.load(Ordering::Relaxed) {
                // Handed back before it started.
                self.lock_running().remove(&key);
                let _ = self
                    .journal
                    .set_state(key.0, key.1, JobState::Cancelled)
                    .await;
                return;
            }
            let started = AgentEvent::Started {
                v: PROTOCOL_VERSION,
                task_id: a.task_id,
                attempt: a.attempt,
            };
            self.publish_event(&started).await;
            info!(task_id = %a.task_id, attempt = a.attempt, "Task started.");
            let (worker, running) = (self.clone(), task.clone());
            let run = tokio::task::spawn_blocking(move || worker.execute(&a, &running.cancel));
            let result = match run.await {
                Ok(r) => r,
                Err(e) => {
                    // A crash on this input would repeat anywhere: report it as the answer.
                    error!(task_id = %key.0, error = %e, "Executor panicked.");
                    TaskResult {
                        task_id: key.0,
                        attempt: key.1,
                        outcome: failure("executor_crashed", format!("the executor crashed: {e}")),
                        duration_ms: 0,
                        fuel_consumed: None,
                    }
                }
            };
            self.lock_running().remove(&key);
            if self.token.is_cancelled() {
                return; // killed: the journal keeps the task as running, to resume or expire
            }
            if task.declined.load(Ordering::Relaxed) {
                // Handed back (paused by the owner): another node has it now.
                let _ = self
                    .journal
                    .set_state(key.0, key.1, JobState::Cancelled)
                    .await;
                return;
            }
            if let Err(e) = self.journal.finish(&result).await {
                error!(task_id = %result.task_id, error = %e, "Cannot journal a result.");
            }
            let kind = match &result.outcome {
                Outcome::Success { .. } => "success",
                Outcome::Failure { kind, .. } => kind.as_str(),
            };
            info!(task_id = %result.task_id, attempt = result.attempt, outcome = kind,
                  duration_ms = result.duration_ms, "Task finished.");
            let ev = AgentEvent::Finished {
                v: PROTOCOL_VERSION,
                result,
            };
            self.publish_event(&ev).await;
        });
    }

    /// Runs one assignment to a result. Blocking.
    fn execute(&self, a: &Assignment, cancel: &AtomicBool) -> TaskResult {
        let started = Instant::now();
        let (outcome, fuel) = match a.task_type {
            #[cfg(feature = "wasm")]
            TaskType::WasmExecution => self.execute_wasm(a, cancel),
            #[cfg(feature = "onnx")]
            TaskType::Inference => (self.execute_onnx(a), None),
            #[cfg(feature = "zk")]
            TaskType::ZkProof => (self.execute_zk(a), None),
            other => (
                failure(
                    "unsupported_task_type",
                    format!("this agent cannot run {other}"),
                ),
                None,
            ),
        };
        #[cfg(not(feature = "wasm"))]
        let _ = cancel;
        TaskResult {
            task_id: a.task_id,
            attempt: a.attempt,
            outcome,
            duration_ms: started.elapsed().as_millis() as u64,
            fuel_consumed: fuel,
        }
    }

    #[cfg(feature = "wasm")]
    fn execute_wasm(&self, a: &Assignment, cancel: &AtomicBool) -> (Outcome, Option<u64>) {
        let module = match self.artifact(a) {
            Ok(m) => m,
            Err(failed) => return (failed, None),
        };
        let stdin = serde_json::to_vec(&a.inputs).unwrap_or_default();
        let exec = &self.cfg.execution;
        let limits = exec::wasm::WasmLimits {
            fuel: a
                .max_execution_time_sec
                .saturating_mul(ambient_protocol::FUEL_PER_SECOND),
            max_memory_bytes: (exec.max_memory_mib << 20) as usize,
            max_output_bytes: (exec.max_output_kib << 10) as usize,
            wall_clock: Duration::from_secs(a.max_execution_time_sec),
        };
        match self
            .sandbox
            .run_paced(&module, &stdin, &limits, cancel, &self.duty_pct)
        {
            Ok(out) => {
                let output = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
                    serde_json::Value::String(String::from_utf8_lossy(&out.stdout).into_owned())
                });
                (
                    Outcome::Success {
                        output,
                        output_sha256: ambient_protocol::sha256_hex(&out.stdout),
                    },
                    Some(out.fuel_consumed),
                )
            }
            Err(e) => (failure(e.kind(), e.to_string()), None),
        }
    }

    #[cfg(feature = "onnx")]
    fn execute_onnx(&self, a: &Assignment) -> Outcome {
        let model = match self.artifact(a) {
            Ok(m) => m,
            Err(failed) => return failed,
        };
        let inputs: ambient_protocol::InferenceInputs =
            match serde_json::from_value(a.inputs.clone()) {
                Ok(i) => i,
                Err(e) => return failure("invalid_input", format!("inference inputs: {e}")),
            };
        let sha = a.artifact_sha256.clone().unwrap_or_default();
        let allow_gpu = self.lock_policy().rules.settings().gpu_enabled;
        match self.onnx.run_on(&model, &sha, &inputs.tensors, allow_gpu) {
            Ok(out) => {
                let bytes = serde_json::to_vec(&out.outputs).unwrap_or_default();
                Outcome::Success {
                    output: serde_json::to_value(&out).unwrap_or_default(),
                    output_sha256: ambient_protocol::sha256_hex(&bytes),
                }
            }
            Err(e) => failure(e.kind(), e.to_string()),
        }
    }

    #[cfg(feature = "zk")]
    fn execute_zk(&self, a: &Assignment) -> Outcome {
        let sha = a.artifact_sha256.clone().unwrap_or_default();
        // Decoding a proving key takes a while; skip even the base64 (or the download) when it
        // is cached.
        let load = || self.artifact(a);
        match self.zk.run(&sha, load, a.task_id, &a.inputs) {
            Ok((output, output_sha256)) => Outcome::Success {
                output,
                output_sha256,
            },
            Err(e) => e,
        }
    }

    /// The assignment's artifact (wasm module, ONNX model or proving key): the inline one,
    /// decoded and checked against its hash, or the one named by hash alone, downloaded (or read
    /// from the blob cache). Called on a blocking thread (by the prover only when it has not
    /// cached the key). A missing or corrupt artifact is a transfer fault, not the task's
    /// answer, so it is reported as `transfer_error`, which the coordinator retries elsewhere.
    #[cfg(any(feature = "wasm", feature = "onnx", feature = "zk"))]
    fn artifact(&self, a: &Assignment) -> Result<Vec<u8>, Outcome> {
        use base64::Engine as _;
        let transfer = |m: String| failure("transfer_error", m);
        let (b64, want) = match (&a.artifact_base64, &a.artifact_sha256) {
            (Some(b64), want) => (b64, want),
            (None, Some(sha)) => {
                return tokio::runtime::Handle::current()
                    .block_on(self.blobs.get(sha))
                    .map_err(|e| transfer(e.to_string()));
            }
            (None, None) => return Err(transfer("the assignment carries no artifact".into())),
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| transfer(format!("bad base64: {e}")))?;
        if let Some(want) = want {
            let got = ambient_protocol::sha256_hex(&bytes);
            if &got != want {
                return Err(transfer(format!(
                    "artifact hash {got} is not the announced {want}"
                )));
            }
        }
        Ok(bytes)
    }

    async fn on_control(&self, c: Control) {
        match c {
            Control::ResultAck {
                task_id, attempt, ..
            } => {
                let _ = self
                    .journal
                    .set_state(task_id, attempt, JobState::Acknowledged)
                    .await;
            }
            Control::Cancel {
                task_id,
                attempt,
                reason,
                ..
            } => {
                if let Some(t) = self.lock_running().get(&(task_id, attempt)) {
                    t.cancel.store(true, Ordering::Relaxed);
                }
                info!(task_id = %task_id, attempt, reason = %reason, "Task cancelled by the coordinator.");
                let _ = self
                    .journal
                    .set_state(task_id, attempt, JobState::Cancelled)
                    .await;
            }
            Control::Fl {
                task_id,
                msg,
                weights_blob,
                ..
            } => self.on_fl(task_id, msg, weights_blob),
        }
    }

    /// A federated-learning message: to the job's client, whose answers go back on the results
    /// topic.
    #[cfg(feature = "fl")]
    fn on_fl(&self, task_id: Uuid, msg: serde_json::Value, weights_blob: Option<String>) {
        let msg = match serde_json::from_value::<ambient_fl::wire::ToClient>(msg) {
            Ok(m) => m,
            Err(e) => {
                warn!(task_id = %task_id, error = %e, "Ignored a malformed federated message.");
                return;
            }
        };
        let (client, topic) = (self.client.clone(), topics::node_results(&self.cfg.node_id));
        let reply: exec::fl::Reply = Arc::new(move |task_id, answer| {
            let ev = AgentEvent::Fl {
                v: PROTOCOL_VERSION,
                task_id,
                msg: serde_json::to_value(answer).unwrap_or_default(),
            };
            let payload = serde_json::to_vec(&ev).unwrap_or_default();
            if client
                .try_publish(topic.clone(), QoS::AtLeastOnce, false, payload)
                .is_err()
            {
                warn!(task_id = %task_id, "Could not queue a federated message.");
            }
        });
        // A paused node leaves the job (the coordinator drops it and the others go on without it).
        if let Some(round) = msg.round()
            && !self.lock_policy().decision.contributing
        {
            let end = ambient_fl::wire::ToClient::End {
                reason: "paused".into(),
            };
            self.fl.deliver(
                task_id,
                end,
                None,
                &self.tracker,
                &self.token,
                reply.clone(),
            );
            reply(
                task_id,
                ambient_fl::wire::ToServer::Failed {
                    round,
                    reason: self.paused_reason(),
                },
            );
            return;
        }
        self.fl.deliver(
            task_id,
            msg,
            weights_blob,
            &self.tracker,
            &self.token,
            reply,
        );
    }

    #[cfg(not(feature = "fl"))]
    fn on_fl(&self, task_id: Uuid, _msg: serde_json::Value, _blob: Option<String>) {
        warn!(task_id = %task_id, "Federated message ignored: this agent is built without the fl feature.");
    }

    async fn resend_pending(&self) {
        match self.journal.pending_results().await {
            Ok(results) => {
                for result in results {
                    let ev = AgentEvent::Finished {
                        v: PROTOCOL_VERSION,
                        result,
                    };
                    self.publish_event(&ev).await;
                }
            }
            Err(e) => error!(error = %e, "Cannot read pending results from the journal."),
        }
    }

    /// Re-sends unacknowledged results until the coordinator acknowledges them: a publish the
    /// broker took is not a result the coordinator stored.
    async fn resend_loop(self: Arc<Self>) {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        every.tick().await;
        loop {
            tokio::select! {
                _ = every.tick() => self.resend_pending().await,
                _ = self.token.cancelled() => return,
            }
        }
    }

    async fn health_loop(self: Arc<Self>) {
        let mut every =
            tokio::time::interval(Duration::from_secs_f64(self.cfg.health.interval_sec));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => self.publish_health(true).await,
                _ = self.token.cancelled() => return,
            }
        }
    }

    /// Takes a telemetry sample (on a blocking thread) and keeps it.
    async fn sample(&self) -> Option<telemetry::Sample> {
        let telemetry = self.telemetry.clone();
        let s = tokio::task::spawn_blocking(move || lock(&telemetry).sample())
            .await
            .ok()?;
        *lock(&self.last_sample) = Some(s.clone());
        Some(s)
    }

    /// Publishes a health report; with `fresh` false it reuses the last telemetry sample, so a
    /// policy change goes out without waiting for one.
    async fn publish_health(&self, fresh: bool) {
        let last = if fresh {
            None
        } else {
            lock(&self.last_sample).clone()
        };
        let s = match last {
            Some(s) => s,
            None => match self.sample().await {
                Some(s) => s,
                None => return,
            },
        };
        let (accepting, paused_reason, gpu_enabled, slots) = {
            let p = self.lock_policy();
            (
                p.decision.contributing,
                (!p.decision.contributing).then(|| p.decision.reasons.join("; ")),
                p.rules.settings().gpu_enabled,
                p.rules.slots(self.cfg.execution.max_concurrent_tasks),
            )
        };
        let exec = &self.cfg.execution;
        let health = Health {
            v: PROTOCOL_VERSION,
            node_id: self.cfg.node_id.clone(),
            at: Utc::now(),
            cpu_usage_pct: s.cpu_usage_pct,
            cpu_count: s.cpu_count,
            load_avg: s.load_avg,
            mem_total_bytes: s.mem_total_bytes,
            mem_available_bytes: s.mem_available_bytes,
            temperatures: s.temperatures,
            gpus: if gpu_enabled { s.gpus } else { Vec::new() },
            supported_task_types: supported_task_types(),
            max_concurrent_tasks: slots,
            running_tasks: self.lock_running().len() as u32,
            accepting,
            paused_reason,
            wasm_memory_limit_bytes: exec.max_memory_mib << 20,
            #[cfg(feature = "fl")]
            datasets: self.fl.infos(),
            #[cfg(not(feature = "fl"))]
            datasets: Vec::new(),
        };
        let payload = serde_json::to_vec(&health).unwrap_or_default();
        let _ = self.client.try_publish(
            topics::node_health(&self.cfg.node_id),
            QoS::AtMostOnce,
            false,
            payload,
        );
    }
}

/// Locks a mutex whose data stays consistent even if a holder panicked.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(crate) fn failure(kind: &str, message: impl Into<String>) -> Outcome {
    Outcome::Failure {
        kind: kind.to_string(),
        message: message.into(),
    }
}
