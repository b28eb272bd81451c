//! Start-up and shutdown: [`start`] builds the parts in order (credentials, identity, blob
//! cache, journal, data sets, policy, control API, MQTT link), resumes what a crash interrupted
//! and spawns the loops; [`Agent`] stops them.

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ambient_protocol::{NodeState, topics};
use ambient_service::{Shutdown, StrictConfig};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{self, Config};
use crate::contribution::Contribution;
use crate::exec::{Executors, supported_task_types};
use crate::health::Sampler;
use crate::journal::{self, Journal};
use crate::router::{Outbox, status_payload};
use crate::state::{Node, PeerKeys};
use crate::tasks::Tasks;
use crate::{blobs, control, creds};

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

/// A running agent.
pub struct Agent {
    node: Arc<Node>,
    shutdown: Shutdown,
    control_addr: Option<std::net::SocketAddr>,
}

impl Agent {
    /// The node id.
    pub fn node_id(&self) -> &str {
        &self.node.cfg.node_id
    }

    /// Where the control API listens, when it is enabled.
    pub fn control_addr(&self) -> Option<std::net::SocketAddr> {
        self.control_addr
    }

    /// Stops cleanly: cancels running tasks, announces `offline`, disconnects, and waits.
    pub async fn shutdown(self) {
        self.node.tasks.cancel_all();
        self.node.outbox.goodbye().await;
        self.kill().await;
    }

    /// Stops at once, as a crash would: no goodbye, so the broker publishes the Last Will.
    /// Running wasm stops at its next fuel slice; what it produced is kept in the journal.
    pub async fn kill(self) {
        self.node.tasks.cancel_all();
        self.shutdown.trigger();
        self.shutdown.wait().await;
    }
}

/// A blocking call's panic, as an I/O error.
fn join_error(e: tokio::task::JoinError) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// Starts the agent; it runs until `shutdown` is cancelled (or [`Agent::shutdown`]).
pub async fn start(cfg: Config, shutdown: CancellationToken) -> Result<Agent, StartError> {
    cfg.validate()?;
    ambient_service::private::create_dir(&cfg.data_dir)?;
    let (node, dir, configured) = (
        cfg.node_id.clone(),
        cfg.data_dir.clone(),
        cfg.mqtt.password.clone(),
    );
    // The keyring talks D-Bus and blocks.
    let (password, source) =
        tokio::task::spawn_blocking(move || creds::load(&node, &dir, configured.as_deref()))
            .await
            .map_err(join_error)??;
    log_secret_source(&cfg.node_id, "Broker password", &source);
    let (node, dir) = (cfg.node_id.clone(), cfg.data_dir.clone());
    let (identity, source) = tokio::task::spawn_blocking(move || creds::identity(&node, &dir))
        .await
        .map_err(join_error)??;
    log_secret_source(&cfg.node_id, "Identity key", &source);
    let identity = Arc::new(identity);
    let blobs = Arc::new(blobs::Blobs::new(
        cfg.coordinator_url.clone(),
        cfg.node_id.clone(),
        identity.clone(),
        &cfg.data_dir,
        cfg.execution.blob_cache_mib << 20,
    ));
    let journal = Journal::open(&cfg.data_dir.join("agent.db")).await?;
    let peers: PeerKeys = Default::default();
    #[cfg(feature = "fl")]
    let fl = {
        let (datasets, node) = (cfg.datasets.clone(), cfg.node_id.clone());
        let (key, peers, blobs) = (identity.clone(), peers.clone(), blobs.clone());
        Arc::new(
            tokio::task::spawn_blocking(move || {
                crate::exec::fl::FlClients::load(&datasets, &node, &key, peers, blobs)
            })
            .await
            .map_err(join_error)?
            .map_err(StartError::Dataset)?,
        )
    };
    // Only a node that can join federated jobs needs its peers' identities.
    #[cfg(feature = "fl")]
    let needs_peers = fl.any();
    #[cfg(not(feature = "fl"))]
    let needs_peers = false;
    // Decide before connecting, so the first health report already tells the truth.
    let contribution = Contribution::start(&cfg).await?;
    let control = if cfg.control.enabled {
        Some(
            control::Control::bind(&cfg.control, &cfg.data_dir)
                .await
                .map_err(StartError::Control)?,
        )
    } else {
        None
    };

    let shutdown = Shutdown::with_token(shutdown.child_token());
    let node = cfg.node_id.clone();
    let link = ambient_link::start(
        ambient_link::LinkOptions {
            host: cfg.mqtt.host.clone(),
            port: cfg.mqtt.port,
            // Validated with the configuration.
            failover: ambient_link::parse_failover(&cfg.mqtt.failover).unwrap_or_default(),
            client_id: node.clone(),
            credentials: Some((node.clone(), password)),
            clean_session: false,
            keep_alive: Duration::from_secs(cfg.mqtt.keep_alive_sec),
            last_will: Some((
                topics::node_status(&node),
                status_payload(&node, NodeState::Offline),
            )),
            subscriptions: [
                topics::node_tasks(&node),
                topics::node_control(&node),
                topics::node_reputation(&node),
            ]
            .into_iter()
            .chain(needs_peers.then(|| topics::ALL_NODE_IDENTITY.to_string()))
            .collect(),
        },
        shutdown.token().clone(),
        shutdown.tracker(),
    );
    let outbox = Outbox::new(link.client.clone(), &node, identity.clone());
    let exec = Arc::new(Executors::new(
        &cfg.execution,
        blobs,
        contribution.knobs(),
        cfg.data_dir.join("wasm-code"),
    ));
    let tasks = Arc::new(Tasks::new(journal, exec, outbox.clone(), shutdown.clone()));
    let node = Arc::new(Node {
        #[cfg(feature = "fl")]
        fl,
        identity,
        peers,
        cfg,
        outbox,
        tasks,
        sampler: Sampler::start().await.map_err(join_error)?,
        shutdown: shutdown.clone(),
        link_state: link.state.clone(),
        reputation: Mutex::new(None),
        contribution,
    });

    node.tasks.resume(&node.contribution).await?;

    shutdown.spawn(node.clone().route(link.incoming));
    shutdown.spawn(node.clone().health_loop());
    shutdown.spawn(node.tasks.clone().resend_loop());
    shutdown.spawn(node.clone().policy_loop());
    let control_addr = match control {
        Some(c) => {
            let addr = c.addr();
            shutdown.spawn(c.serve(node.clone(), shutdown.token().clone()));
            Some(addr)
        }
        None => None,
    };
    info!(node = %node.cfg.node_id, broker = %format!("{}:{}", node.cfg.mqtt.host, node.cfg.mqtt.port),
          kinds = ?supported_task_types(), "Agent started.");
    Ok(Agent {
        node,
        shutdown,
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
