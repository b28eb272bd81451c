//! Malicious nodes for the adversary tests: MQTT clients built on the protocol crate that look
//! like agents (status, identity key, attractive health, signed results) but answer every task
//! with the same wrong output, as colluding cheaters would. They are legitimate nodes that lie:
//! each publishes its own key and signs what it says, so what stops them is the quorum, not the
//! signature check. Test code only.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ambient_link::{AsyncClient, Incoming, LinkOptions, QoS};
use ambient_protocol::envelope::{self, Message};
use ambient_protocol::testkit::{HealthBuilder, finished_success};
use ambient_protocol::{
    Assignment, Health, NodeKey, NodeState, NodeStatus, ReputationReport, TaskType, topics,
};
use chrono::Utc;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

/// The answer every liar gives: the same wrong output, so liars agree with each other.
pub fn lie() -> Value {
    serde_json::json!({ "sum": 4_242_424_242u64 })
}

/// What a liar answers an assignment with.
pub type Answer = Arc<dyn Fn(&Assignment) -> Value + Send + Sync>;

/// A lying node.
pub struct Liar {
    /// Its node id.
    pub node: String,
    /// Assignments it answered.
    pub answered: Arc<AtomicU64>,
    /// The latest reputation report the coordinator published to it.
    pub reputation: Arc<Mutex<Option<ReputationReport>>>,
    accepting: Arc<AtomicBool>,
    /// The task kinds its health offers.
    kinds: Arc<Vec<TaskType>>,
    /// Its identity key, published at every connect; it signs its results.
    key: Arc<NodeKey>,
    client: AsyncClient,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl Liar {
    /// Connects as `node` and starts taking (and lying about) `wasm_execution` and
    /// `computation` work, answering [`lie`].
    pub async fn start(mqtt: SocketAddr, node: &str, password: &str) -> anyhow::Result<Liar> {
        let kinds = [TaskType::WasmExecution, TaskType::Computation];
        Liar::start_with(mqtt, node, password, &kinds, Arc::new(|_| lie())).await
    }

    /// Connects as `node` and starts taking work of `kinds`, answering each assignment with
    /// what `answer_with` makes of it.
    pub async fn start_with(
        mqtt: SocketAddr,
        node: &str,
        password: &str,
        kinds: &[TaskType],
        answer_with: Answer,
    ) -> anyhow::Result<Liar> {
        let (shutdown, tracker) = (CancellationToken::new(), TaskTracker::new());
        let mut link = ambient_link::start(
            LinkOptions {
                host: mqtt.ip().to_string(),
                port: mqtt.port(),
                failover: Vec::new(),
                client_id: node.to_string(),
                credentials: Some((node.to_string(), password.to_string())),
                clean_session: true,
                keep_alive: Duration::from_secs(5),
                last_will: None,
                subscriptions: vec![
                    topics::node_tasks(node),
                    topics::node_control(node),
                    topics::node_reputation(node),
                ],
            },
            shutdown.clone(),
            &tracker,
        );
        let liar = Liar {
            node: node.to_string(),
            answered: Arc::default(),
            reputation: Arc::default(),
            accepting: Arc::new(AtomicBool::new(true)),
            kinds: Arc::new(kinds.to_vec()),
            key: Arc::new(NodeKey::generate()),
            client: link.client.clone(),
            shutdown: shutdown.clone(),
            tracker: tracker.clone(),
        };
        let (client, id) = (link.client.clone(), node.to_string());
        let (answered, reputation) = (liar.answered.clone(), liar.reputation.clone());
        let (accepting, key) = (liar.accepting.clone(), liar.key.clone());
        let kinds = liar.kinds.clone();
        tracker.spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(500));
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = every.tick() => {
                        let on = accepting.load(Ordering::Relaxed);
                        let h = health(&id, on, &kinds);
                        let _ = publish(&client, topics::node_health(&id), h).await;
                    }
                    msg = link.incoming.recv() => match msg {
                        None => return,
                        Some(Incoming::Connected { .. }) => {
                            // Its key first, as an agent does, so its results verify.
                            let _ = client
                                .publish(topics::node_identity(&id), QoS::AtLeastOnce, true,
                                         envelope::encode(&key.identity(&id)))
                                .await;
                            let status = NodeStatus {
                                node_id: id.clone(),
                                state: NodeState::Online,
                                agent_version: "liar".into(),
                            };
                            let _ = client
                                .publish(topics::node_status(&id), QoS::AtLeastOnce, true,
                                         envelope::encode(&status))
                                .await;
                        }
                        Some(Incoming::Publish { topic, payload }) => {
                            if topic == topics::node_reputation(&id) {
                                if let Ok(r) = envelope::decode(&payload) {
                                    *reputation.lock().unwrap() = Some(r);
                                }
                            } else if let Ok(a) = envelope::decode::<Assignment>(&payload) {
                                answered.fetch_add(1, Ordering::Relaxed);
                                let (task, attempt) = (a.task_id, a.attempt);
                                let output = answer_with(&a);
                                let _ = answer(&client, &id, &key, task, attempt, output).await;
                            }
                        }
                    }
                }
            }
        });
        link.state
            .wait_for(|s| *s == ambient_link::LinkState::Connected)
            .await?;
        Ok(liar)
    }

    /// Stops or resumes taking work (announced in its health).
    pub async fn set_accepting(&self, on: bool) -> anyhow::Result<()> {
        self.accepting.store(on, Ordering::Relaxed);
        publish(
            &self.client,
            topics::node_health(&self.node),
            health(&self.node, on, &self.kinds),
        )
        .await
    }

    /// Publishes a result (signed with its own key) for a task it may never have been given.
    pub async fn forge(&self, task_id: Uuid, attempt: u32, output: Value) -> anyhow::Result<()> {
        answer(
            &self.client,
            &self.node,
            &self.key,
            task_id,
            attempt,
            output,
        )
        .await
    }

    /// Disconnects.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

async fn publish<T: Message>(client: &AsyncClient, topic: String, msg: T) -> anyhow::Result<()> {
    client
        .publish(topic, QoS::AtLeastOnce, false, envelope::encode(&msg))
        .await?;
    Ok(())
}

/// A `finished` event with `output`, signed by `node` with `key`, on its results topic.
async fn answer(
    client: &AsyncClient,
    node: &str,
    key: &NodeKey,
    task_id: Uuid,
    attempt: u32,
    output: Value,
) -> anyhow::Result<()> {
    let ev = finished_success(task_id, attempt, output);
    let payload = envelope::encode_signed(&ev, node, key);
    client
        .publish(topics::node_results(node), QoS::AtLeastOnce, false, payload)
        .await?;
    Ok(())
}

/// Health that makes a node look idle and roomy, so the scheduler likes it.
fn health(node: &str, accepting: bool, kinds: &[TaskType]) -> Health {
    HealthBuilder::new(node, Utc::now())
        .cpu(1.0, 64)
        .load([0.0; 3])
        .memory(256 << 30, 250 << 30)
        .kinds(kinds)
        .accepting(accepting)
        .build()
}
