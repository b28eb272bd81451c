//! Starts a real NATS cluster (Debian's `nats-server`) on loopback: each node with JetStream,
//! which keeps MQTT sessions and retained messages, a cluster route to every other node, and an
//! MQTT listener. Accounts and their rights come from the project's `broker-config/acl`, through
//! `broker-config/nats/ambient-nats-auth`, as an operator would make them.
//!
//! A node can be killed with SIGKILL and started again on the same ports and store.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// How long a node may take to serve MQTT (JetStream elects its leaders first).
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// One node's ports.
#[derive(Debug, Clone, Copy)]
struct Ports {
    client: u16,
    route: u16,
    mqtt: u16,
}

/// A cluster of `nats-server` processes; all killed on drop.
pub struct NatsCluster {
    nodes: Vec<Option<Child>>,
    ports: Vec<Ports>,
    dir: tempfile::TempDir,
    users: Vec<(String, String)>,
}

/// Whether `nats-server` is installed.
pub fn available() -> bool {
    Command::new("nats-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether a test must fail, rather than skip, when `nats-server` is missing
/// (`AMBIENT_REQUIRE_NATS=1`, set by `scripts/test`, which installs it).
pub fn required() -> bool {
    std::env::var("AMBIENT_REQUIRE_NATS").is_ok_and(|v| v == "1")
}

impl NatsCluster {
    /// Starts `n` nodes with accounts `users` (username, password) and waits until each serves
    /// MQTT.
    pub async fn start(n: usize, users: &[(String, String)]) -> Result<NatsCluster> {
        anyhow::ensure!(
            available(),
            "nats-server is not installed: run scripts/test, which installs it"
        );
        let dir = tempfile::Builder::new()
            .prefix("ambient-nats-")
            .tempdir()
            .context("creating the cluster's directory")?;
        let accounts: Vec<String> = users.iter().map(|(u, p)| format!("{u} {p}")).collect();
        let users_file = dir.path().join("users");
        fs::write(&users_file, accounts.join("\n") + "\n")?;
        let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let out = Command::new(repo.join("broker-config/nats/ambient-nats-auth"))
            .arg(repo.join("broker-config/acl"))
            .arg(&users_file)
            .output()
            .context("running broker-config/nats/ambient-nats-auth")?;
        if !out.status.success() {
            bail!(
                "ambient-nats-auth: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let auth = String::from_utf8(out.stdout)?;
        fs::write(dir.path().join("auth.conf"), auth)?;
        let ports = (0..n)
            .map(|_| {
                Ok(Ports {
                    client: crate::free_port()?,
                    route: crate::free_port()?,
                    mqtt: crate::free_port()?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut cluster = NatsCluster {
            nodes: (0..n).map(|_| None).collect(),
            ports,
            dir,
            users: users.to_vec(),
        };
        for i in 0..n {
            cluster.write_config(i)?;
            cluster.spawn(i)?;
        }
        for i in 0..n {
            cluster.wait_ready(i).await?;
        }
        Ok(cluster)
    }

    fn write_config(&self, i: usize) -> Result<()> {
        let p = self.ports[i];
        let routes: Vec<String> = self
            .ports
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, q)| format!("\"nats-route://127.0.0.1:{}\"", q.route))
            .collect();
        let store = self.dir.path().join(format!("js-{i}"));
        let conf = format!(
            "server_name: n{i}\n\
             listen: 127.0.0.1:{client}\n\
             jetstream {{ store_dir: \"{store}\", max_memory_store: 64MB, max_file_store: 1GB }}\n\
             cluster {{ name: ambient, listen: 127.0.0.1:{route}, routes: [{routes}] }}\n\
             mqtt {{ listen: 127.0.0.1:{mqtt}, max_ack_pending: 1024, stream_replicas: {replicas} }}\n\
             max_payload: 16MB\n\
             include auth.conf\n",
            client = p.client,
            store = store.display(),
            route = p.route,
            routes = routes.join(", "),
            mqtt = p.mqtt,
            // Sessions and retained messages on every node (at most 3: JetStream's limit is 5,
            // and 3 keeps a quorum with one node down); 2 would lose its quorum with one.
            replicas = self.ports.len().min(3),
        );
        fs::write(self.dir.path().join(format!("n{i}.conf")), conf)?;
        Ok(())
    }

    fn spawn(&mut self, i: usize) -> Result<()> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("n{i}.log")))?;
        let child = Command::new("nats-server")
            .arg("-c")
            .arg(self.dir.path().join(format!("n{i}.conf")))
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting nats-server")?;
        self.nodes[i] = Some(child);
        Ok(())
    }

    /// Waits until node `i` answers an MQTT CONNECT with a CONNACK (at once when it does).
    pub async fn wait_ready(&self, i: usize) -> Result<()> {
        let (user, password) = &self.users[0];
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            let mut opts = rumqttc::MqttOptions::new(
                format!("ready-probe-{i}"),
                "127.0.0.1",
                self.ports[i].mqtt,
            );
            opts.set_credentials(user, password);
            let (_client, mut events) = rumqttc::AsyncClient::new(opts, 10);
            let connack = tokio::time::timeout(Duration::from_secs(5), async {
                loop {
                    match events.poll().await {
                        Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => return true,
                        Ok(_) => {}
                        Err(_) => return false,
                    }
                }
            })
            .await;
            if connack == Ok(true) {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "nats node {i} does not serve MQTT after {READY_TIMEOUT:?}:\n{}",
                    self.log(i)
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The MQTT addresses of the nodes, `(host, port)`, in order.
    pub fn mqtt_addresses(&self) -> Vec<(String, u16)> {
        self.ports
            .iter()
            .map(|p| ("127.0.0.1".to_string(), p.mqtt))
            .collect()
    }

    /// Kills node `i` with SIGKILL.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts node `i` again on its ports and store, and waits until it serves MQTT.
    pub async fn restart(&mut self, i: usize) -> Result<()> {
        self.kill(i);
        self.spawn(i)?;
        self.wait_ready(i).await
    }

    /// Node `i`'s log.
    pub fn log(&self, i: usize) -> String {
        fs::read_to_string(self.dir.path().join(format!("n{i}.log"))).unwrap_or_default()
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}
