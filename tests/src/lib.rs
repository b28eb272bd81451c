//! End-to-end harness: a real broker (embedded rumqttd, or a real mosquitto with the project's
//! `broker-config/` ACL), a real coordinator on a SQLite file, and real agents, each of which a
//! test can stop, kill or restart. Everything listens on loopback ports chosen by the OS.
//!
//! # Layout
//! - [`mosquitto`]: starts and restarts a mosquitto process.
//! - [`nats`]: starts a NATS broker cluster (MQTT listeners, JetStream), node by node killable.
//! - [`postgres`]: starts a throwaway PostgreSQL server.
//! - [`process`]: a coordinator as its own OS process, to kill with SIGKILL.
//! - [`capacity`]: process fleets, CPU probes and simulated nodes for the load generator.
//! - [`adversary`]: lying nodes built on the protocol crate.
//! - [`Cluster`]: the network under test.

pub mod adversary;
pub mod browser;
pub mod capacity;
pub mod ledger;
pub mod mosquitto;
pub mod nats;
pub mod postgres;
pub mod process;

use std::net::SocketAddr;
use std::time::Duration;

use ambient_cli::client::Client;
use ambient_cli::local::{Connection, agent_config};
use tokio_util::sync::CancellationToken;

/// The broker behind a cluster.
pub enum Broker {
    /// rumqttd in this process (lives until the process ends), whose accounts the coordinator
    /// makes for nodes that join.
    Embedded(ambient_coordinator::broker::EmbeddedBroker),
    /// A mosquitto child process.
    Mosquitto(mosquitto::Mosquitto),
    /// A mosquitto child process with the dynamic-security plugin: the coordinator makes the
    /// accounts of nodes that join.
    MosquittoDynsec(mosquitto::Mosquitto),
    /// A NATS cluster: the coordinator's broker address is its first node, agent `i`'s its node
    /// `i + 1` (round robin), and each knows the other nodes as failover addresses.
    Nats(nats::NatsCluster),
}

/// A network under test.
pub struct Cluster {
    /// Temporary data directory (coordinator database, agent journals).
    pub dir: tempfile::TempDir,
    /// Broker address (a cluster's first node).
    pub mqtt: SocketAddr,
    /// Every node of a clustered broker, `mqtt` first; just `mqtt` otherwise.
    pub brokers: Vec<SocketAddr>,
    /// The broker.
    pub broker: Broker,
    /// Submitter connection details (API URL and key, MQTT credentials).
    pub conn: Connection,
    /// Node ids and their broker passwords, `node-1`…
    pub nodes: Vec<(String, String)>,
    /// Accounts with no agent, after the nodes.
    pub spare_nodes: Vec<(String, String)>,
    /// Agents, by index into `nodes`; `None` when stopped.
    pub agents: Vec<Option<ambient_agent::Agent>>,
    /// Tasks each agent runs at once at most.
    slots: u32,
    coordinator: Option<(ambient_coordinator::Coordinator, CancellationToken)>,
    coordinator_cfg: ambient_coordinator::Config,
}

/// RSS (KiB) and CPU ticks (user + system) of a process, from `/proc` (Linux; for the load
/// generators).
pub fn proc_stats(pid: u32) -> anyhow::Result<(u64, u64)> {
    use anyhow::Context as _;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .context("no VmRSS")?
        .parse()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').context("bad stat")?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    Ok((rss, f[11].parse::<u64>()? + f[12].parse::<u64>()?))
}

/// The admin key of every cluster's coordinator.
pub const ADMIN_KEY: &str = "test-admin-key-0123456789";

/// Spare node accounts of every cluster: credentials with no agent, for impersonation and
/// adversary tests.
pub const SPARE_NODES: u32 = 2;

/// Users every cluster has: the coordinator, the submitter `local`, `n` nodes and
/// [`SPARE_NODES`] more.
fn users(n: u32) -> Vec<(String, String)> {
    let mut u = vec![
        (
            "coordinator".to_string(),
            "coordinator-password".to_string(),
        ),
        ("local".to_string(), "submitter-password".to_string()),
    ];
    for i in 1..=n + SPARE_NODES {
        u.push((format!("node-{i}"), format!("node-{i}-password")));
    }
    u
}

impl Cluster {
    /// A cluster on the embedded rumqttd broker with `agents` agents.
    pub async fn embedded(agents: u32) -> anyhow::Result<Cluster> {
        let users = users(agents);
        let broker = ambient_coordinator::broker::start("127.0.0.1:0".parse()?, &users)?;
        let mqtt = broker.addr;
        Cluster::assemble(vec![mqtt], Broker::Embedded(broker), users, agents, 2, None).await
    }

    /// A cluster on a real mosquitto with the project's ACL.
    pub async fn mosquitto(agents: u32) -> anyhow::Result<Cluster> {
        Cluster::mosquitto_with_slots(agents, 2).await
    }

    /// A mosquitto cluster whose agents each run at most `slots` tasks at once.
    pub async fn mosquitto_with_slots(agents: u32, slots: u32) -> anyhow::Result<Cluster> {
        Cluster::mosquitto_on(agents, slots, None).await
    }

    /// A mosquitto cluster whose coordinator keeps its state in `store` (a PostgreSQL URL;
    /// `None`: a SQLite file).
    pub async fn mosquitto_on(
        agents: u32,
        slots: u32,
        store: Option<String>,
    ) -> anyhow::Result<Cluster> {
        anyhow::ensure!(
            mosquitto::available(),
            "mosquitto is not installed: run scripts/test, which installs it"
        );
        let users = users(agents);
        let refs: Vec<(&str, &str)> = users
            .iter()
            .map(|(u, p)| (u.as_str(), p.as_str()))
            .collect();
        let m = mosquitto::Mosquitto::start(&refs)?;
        let mqtt = SocketAddr::new(m.host().parse()?, m.port());
        Cluster::assemble(
            vec![mqtt],
            Broker::Mosquitto(m),
            users,
            agents,
            slots,
            store,
        )
        .await
    }

    /// A cluster with no agents on mosquitto with the dynamic-security plugin, set up by
    /// `broker-config/dynsec/ambient-dynsec-setup`: nodes join with tokens.
    pub async fn mosquitto_dynsec() -> anyhow::Result<Cluster> {
        anyhow::ensure!(
            mosquitto::available(),
            "mosquitto is not installed: run scripts/test, which installs it"
        );
        let users = users(0);
        let m = mosquitto::Mosquitto::start_dynsec(&users[0].1, &[(&users[1].0, &users[1].1)])?;
        let mqtt = SocketAddr::new(m.host().parse()?, m.port());
        Cluster::assemble(vec![mqtt], Broker::MosquittoDynsec(m), users, 0, 2, None).await
    }

    /// A cluster on a NATS broker cluster of `nodes` nodes ([`Broker::Nats`]).
    pub async fn nats(agents: u32, nodes: usize) -> anyhow::Result<Cluster> {
        let users = users(agents);
        let n = nats::NatsCluster::start(nodes, &users).await?;
        let brokers = n
            .mqtt_addresses()
            .into_iter()
            .map(|(h, p)| Ok(SocketAddr::new(h.parse()?, p)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Cluster::assemble(brokers, Broker::Nats(n), users, agents, 2, None).await
    }

    async fn assemble(
        brokers: Vec<SocketAddr>,
        broker: Broker,
        users: Vec<(String, String)>,
        agents: u32,
        slots: u32,
        store: Option<String>,
    ) -> anyhow::Result<Cluster> {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "warn,rumqttd=off".into()),
            )
            .with_test_writer()
            .try_init();
        let mqtt = brokers[0];
        let dir = tempfile::tempdir()?;
        let mut cfg: ambient_coordinator::Config =
            toml::from_str(ambient_coordinator::config::EXAMPLE)?;
        cfg.data_dir = dir.path().join("coordinator");
        cfg.store = store;
        cfg.http_addr = "127.0.0.1:0".parse()?;
        cfg.mqtt.host = mqtt.ip().to_string();
        cfg.mqtt.port = mqtt.port();
        cfg.mqtt.password = users[0].1.clone();
        cfg.mqtt.failover = brokers[1..].iter().map(|a| a.to_string()).collect();
        cfg.api_keys = vec![ambient_coordinator::config::ApiKey {
            submitter: "local".into(),
            key: "test-api-key-0123456789".into(),
        }];
        cfg.admin_keys = vec![ADMIN_KEY.into()];
        if let Broker::MosquittoDynsec(_) = &broker {
            cfg.enrolment.broker = ambient_coordinator::config::BrokerKind::MosquittoDynsec;
        }
        cfg.limits.max_module_bytes = 256 << 10;
        cfg.limits.max_model_bytes = 1 << 20;
        cfg.limits.max_body_bytes = 4 << 20;
        cfg.scheduler.health_timeout_sec = 6;
        cfg.scheduler.tick_ms = 100;
        cfg.scheduler.lease_grace_sec = 5;
        let nodes: Vec<(String, String)> = users[2..2 + agents as usize].to_vec();
        let spare_nodes: Vec<(String, String)> = users[2 + agents as usize..].to_vec();
        let mut c = Cluster {
            dir,
            mqtt,
            brokers,
            broker,
            conn: Connection {
                api_url: String::new(),
                api_key: "test-api-key-0123456789".into(),
                submitter: "local".into(),
                mqtt_host: mqtt.ip().to_string(),
                mqtt_port: mqtt.port(),
                mqtt_username: "local".into(),
                mqtt_password: users[1].1.clone(),
                admin_key: Some(ADMIN_KEY.into()),
                join_token: None,
            },
            agents: (0..agents).map(|_| None).collect(),
            nodes,
            spare_nodes,
            slots,
            coordinator: None,
            coordinator_cfg: cfg,
        };
        c.start_coordinator().await?;
        for i in 0..agents as usize {
            c.start_agent(i).await?;
        }
        c.client()
            .wait_for_nodes(agents as usize, Duration::from_secs(20))
            .await?;
        Ok(c)
    }

    /// A REST client with the admin key.
    pub fn admin(&self) -> Client {
        Client::new(&self.conn.api_url, ADMIN_KEY)
    }

    /// A REST client with the submitter's key.
    pub fn client(&self) -> Client {
        Client::new(&self.conn.api_url, &self.conn.api_key)
    }

    /// An MQTT client of this cluster's broker as `user` (name, password) with client id
    /// `user:client_id`, with a clean session
    /// and `subscriptions`, returned once the broker has accepted it (its ConnAck seen): for tests
    /// and benches that speak MQTT themselves. It runs until `token` is cancelled.
    pub async fn mqtt_client(
        &self,
        user: (&str, &str),
        client_id: &str,
        subscriptions: Vec<String>,
        token: &CancellationToken,
    ) -> anyhow::Result<ambient_link::Link> {
        let mut link = ambient_link::start(
            ambient_link::LinkOptions {
                host: self.conn.mqtt_host.clone(),
                port: self.conn.mqtt_port,
                failover: Vec::new(),
                // Brokers bind client ids to accounts: `user:suffix` is always this user's.
                client_id: format!("{}:{client_id}", user.0),
                credentials: Some((user.0.into(), user.1.into())),
                clean_session: true,
                keep_alive: Duration::from_secs(30),
                last_will: None,
                subscriptions,
            },
            token.clone(),
            &tokio_util::task::TaskTracker::new(),
        );
        loop {
            match tokio::time::timeout(Duration::from_secs(10), link.incoming.recv()).await {
                Ok(Some(ambient_link::Incoming::Connected { .. })) => return Ok(link),
                Ok(Some(_)) => {}
                Ok(None) => anyhow::bail!("{} could not connect: the link closed", user.0),
                Err(_) => anyhow::bail!("{} could not connect within 10 s", user.0),
            }
        }
    }

    /// Starts (or restarts) the coordinator on the same data dir and HTTP port.
    pub async fn start_coordinator(&mut self) -> anyhow::Result<()> {
        let token = CancellationToken::new();
        let cfg = self.coordinator_cfg.clone();
        let c = match &self.broker {
            Broker::Embedded(b) => {
                ambient_coordinator::start_embedded(cfg, b, token.clone()).await?
            }
            _ => ambient_coordinator::start(cfg, token.clone()).await?,
        };
        self.conn.api_url = format!("http://{}", c.http_addr);
        // A restart takes the same port, so the agents' coordinator_url stays right.
        self.coordinator_cfg.http_addr = c.http_addr;
        self.coordinator = Some((c, token));
        Ok(())
    }

    /// The coordinator's configuration, to change before a restart.
    pub fn coordinator_config(&mut self) -> &mut ambient_coordinator::Config {
        &mut self.coordinator_cfg
    }

    /// Stops the coordinator and waits until it has drained.
    pub async fn stop_coordinator(&mut self) {
        if let Some((c, token)) = self.coordinator.take() {
            token.cancel();
            c.wait().await;
        }
    }

    /// Starts agent `i` (`node-{i+1}`).
    pub async fn start_agent(&mut self, i: usize) -> anyhow::Result<()> {
        self.start_agent_with(i, |_| {}).await
    }

    /// Kills agent `i` as a crash would (no goodbye; the broker sends its Last Will).
    pub async fn kill_agent(&mut self, i: usize) {
        if let Some(a) = self.agents[i].take() {
            a.kill().await;
        }
    }

    /// Index of the agent with this node id.
    pub fn agent_index(&self, node: &str) -> usize {
        self.nodes
            .iter()
            .position(|(n, _)| n == node)
            .unwrap_or_else(|| panic!("no agent {node}"))
    }

    /// Path of the coordinator's database.
    pub fn coordinator_db(&self) -> std::path::PathBuf {
        self.coordinator_cfg.data_dir.join("coordinator.db")
    }

    /// The NATS cluster, to kill and restart its nodes (panics for another broker).
    pub fn nats_broker(&mut self) -> &mut nats::NatsCluster {
        match &mut self.broker {
            Broker::Nats(n) => n,
            _ => panic!("this cluster's broker is not NATS"),
        }
    }

    /// The mosquitto process, for restart tests.
    pub fn mosquitto_broker(&mut self) -> &mut mosquitto::Mosquitto {
        match &mut self.broker {
            Broker::Mosquitto(m) | Broker::MosquittoDynsec(m) => m,
            _ => panic!("this cluster's broker is not mosquitto"),
        }
    }

    /// Stops everything.
    pub async fn shutdown(mut self) {
        for a in self.agents.iter_mut() {
            if let Some(a) = a.take() {
                a.shutdown().await;
            }
        }
        self.stop_coordinator().await;
    }
}

impl Cluster {
    /// Starts agent `i` like [`Cluster::start_agent`], with `tweak` applied to its configuration
    /// first (policy probes, control API address, ...).
    pub async fn start_agent_with(
        &mut self,
        i: usize,
        tweak: impl FnOnce(&mut ambient_agent::Config),
    ) -> anyhow::Result<()> {
        let (node, password) = &self.nodes[i];
        // Agents spread over the nodes of a clustered broker, each knowing the others.
        let n = self.brokers.len();
        let primary = self.brokers[(i + 1) % n];
        let mut cfg = agent_config(
            self.dir.path(),
            node,
            primary,
            password,
            &self.conn.api_url,
            0.5,
        );
        cfg.mqtt.failover = (2..=n)
            .map(|k| self.brokers[(i + k) % n].to_string())
            .collect();
        cfg.mqtt.keep_alive_sec = 2;
        cfg.execution.max_concurrent_tasks = self.slots;
        tweak(&mut cfg);
        self.agents[i] = Some(ambient_agent::start(cfg, CancellationToken::new()).await?);
        Ok(())
    }

    /// Stops agent `i` cleanly (it says goodbye), if it runs.
    pub async fn stop_agent(&mut self, i: usize) {
        if let Some(a) = self.agents[i].take() {
            a.shutdown().await;
        }
    }

    /// Gives agent `i` the data set `parts[i]` under `name` (a CSV file in the cluster's
    /// directory, declared in its config), restarting those agents, and waits until each
    /// advertises it.
    pub async fn hold_datasets(
        &mut self,
        name: &str,
        parts: &[ambient_fl::data::Dataset],
    ) -> anyhow::Result<()> {
        for (i, d) in parts.iter().enumerate() {
            let path = self.dir.path().join(format!("{name}-{i}.csv"));
            std::fs::write(&path, d.to_csv("target"))?;
            self.stop_agent(i).await;
            self.start_agent_with(i, |cfg| {
                cfg.datasets = vec![ambient_agent::config::DatasetConfig {
                    name: name.into(),
                    path,
                    label: "target".into(),
                    features: None,
                }];
            })
            .await?;
        }
        let client = self.client();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let holding = client
                .nodes()
                .await?
                .iter()
                .filter(|n| {
                    n.health
                        .as_ref()
                        .is_some_and(|h| h.datasets.iter().any(|d| d.name == name))
                })
                .count();
            if holding >= parts.len() {
                return Ok(());
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "only {holding} of {} agents advertise data set {name}",
                parts.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Data directory of agent `i` (its journal, `settings.json`, `control.json`).
    pub fn agent_dir(&self, i: usize) -> std::path::PathBuf {
        self.dir.path().join(&self.nodes[i].0)
    }
}

/// Binds 127.0.0.1:0, reads the port the kernel chose and releases it.
pub fn free_port() -> anyhow::Result<u16> {
    use anyhow::Context as _;
    let mut last_err = None;
    for _ in 0..5 {
        match std::net::TcpListener::bind(("127.0.0.1", 0)).and_then(|l| l.local_addr()) {
            Ok(addr) => return Ok(addr.port()),
            Err(e) => last_err = Some(e),
        }
    }
    Err(last_err.expect("five attempts were made")).context("finding a free loopback port")
}

/// Submits `sub` to the coordinators in turn, from `first`, until one accepts it, for at most
/// `patience`: during a takeover the answer is `503 no_leader`, or none from a killed
/// coordinator. `sub` must carry its own `task_id`: a repeated id is the same task, so a retry
/// after a lost answer can neither lose nor double it.
pub async fn submit_until_accepted(
    clients: &[Client],
    first: usize,
    sub: &ambient_protocol::TaskSubmission,
    patience: Duration,
) -> anyhow::Result<ambient_protocol::TaskInfo> {
    use ambient_cli::client::ClientError;
    anyhow::ensure!(
        sub.task_id.is_some(),
        "a retried submission needs its own task_id"
    );
    let deadline = tokio::time::Instant::now() + patience;
    let mut k = first;
    loop {
        match clients[k % clients.len()].submit(sub).await {
            Ok(info) => return Ok(info),
            Err(ClientError::Api { status: 503, .. } | ClientError::Transport(_))
                if tokio::time::Instant::now() < deadline =>
            {
                k += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => anyhow::bail!("submission not accepted: {e}"),
        }
    }
}
