//! [`Node`]: what the parts of a running agent share. Each part keeps its own state and locks
//! ([`Tasks`], [`Contribution`], [`Sampler`], [`Outbox`]); the operations that span parts are
//! `impl Node` blocks in the part's module (routing in `router`, health reports in `health`,
//! decisions and settings in `contribution`). The control API sees the node only through
//! [`crate::control::Backend`].

use std::sync::{Arc, Mutex};

use ambient_link::LinkState;
use ambient_protocol::{KeyDirectory, NodeKey, ReputationReport};
use ambient_service::Shutdown;

use crate::config::Config;
use crate::contribution::Contribution;
use crate::control::{Backend, Resources, SetError, Status};
use crate::health::Sampler;
use crate::lock;
use crate::policy::Settings;
use crate::router::Outbox;
use crate::tasks::Tasks;

/// Other nodes' identity keys, as they published them (retained, on their identity topics).
pub type PeerKeys = Arc<KeyDirectory>;

/// A running agent's parts.
pub(crate) struct Node {
    pub(crate) cfg: Config,
    pub(crate) outbox: Outbox,
    pub(crate) tasks: Arc<Tasks>,
    pub(crate) contribution: Contribution,
    pub(crate) sampler: Sampler,
    /// This node's identity key, published retained on its identity topic at every connect.
    pub(crate) identity: Arc<NodeKey>,
    /// Other nodes' identity keys (kept only by nodes that offer data sets).
    pub(crate) peers: PeerKeys,
    /// The latest reputation report the coordinator published to this node.
    pub(crate) reputation: Mutex<Option<ReputationReport>>,
    /// This node's clients of federated jobs.
    #[cfg(feature = "fl")]
    pub(crate) fl: Arc<crate::exec::fl::FlClients>,
    pub(crate) link_state: tokio::sync::watch::Receiver<LinkState>,
    pub(crate) shutdown: Shutdown,
}

impl Backend for Node {
    async fn status(&self) -> Status {
        let tasks_done = self.tasks.done().await;
        let resources = self.sampler.latest().await.map_or(
            Resources {
                cpu_usage_pct: 0.0,
                mem_used_bytes: 0,
                mem_total_bytes: 0,
                agent_rss_bytes: 0,
            },
            |s| Resources {
                cpu_usage_pct: s.cpu_usage_pct,
                mem_used_bytes: s.mem_total_bytes.saturating_sub(s.mem_available_bytes),
                mem_total_bytes: s.mem_total_bytes,
                agent_rss_bytes: s.agent_rss_bytes,
            },
        );
        let running = self.tasks.running();
        let (decision, settings) = self.contribution.snapshot();
        Status {
            node_id: self.cfg.node_id.clone(),
            contributing: decision.contributing,
            paused_reasons: decision.reasons,
            connected: *self.link_state.borrow() == LinkState::Connected,
            running,
            tasks_done,
            resources,
            settings,
        }
    }

    fn settings(&self) -> Settings {
        self.contribution.settings()
    }

    async fn set_settings(&self, s: Settings) -> Result<(), SetError> {
        Node::set_settings(self, s).await.map(drop)
    }

    fn reputation(&self) -> Option<ReputationReport> {
        lock(&self.reputation).clone()
    }
}
