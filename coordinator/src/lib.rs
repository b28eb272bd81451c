//! Ambient VCP coordinator: takes tasks from submitters (REST and MQTT), matches them to nodes by
//! capability and health, leases them, collects and checks results, and persists everything.
//!
//! [`run`] is the whole service; [`start`] is the same with a handle that tells the bound
//! address, which tests and `ambient up` use.
//!
//! # Layout
//! A request comes in over REST ([`api`]) or MQTT ([`mqtt`]), passes the [`submission`] checks,
//! and goes as an [`engine::EngineMsg`] to the [`engine`], the one task that owns the
//! [`scheduler`]. What differs between task kinds lives in one module per kind under [`kinds`];
//! the scheduler holds only the lifecycle that all kinds share.
//!
//! - [`config`]: the typed, strict configuration.
//! - [`api`]: the REST API (axum), one module per resource, and the OpenAPI document.
//! - [`mqtt`]: the MQTT [`mqtt::Listener`]: node health, presence, results and identities, and
//!   submissions.
//! - [`submission`]: checks of a submission shared by REST and MQTT, and [`submission::SubmitError`].
//! - [`kinds`]: one module per task kind (`wasm`, `computation`, `inference`, `zk`, `fl`) with
//!   its submission checks, task construction, result checks and API JSON; `kinds/mod.rs` is
//!   the one place that lists the kinds.
//! - [`engine`]: the one task that owns the scheduler: runs the loop, persists, then publishes.
//! - [`artifacts`]: the blob store as the engine uses it: storing submitted artifacts, inlining
//!   small ones into assignments, reference-counting temporary blobs (federated models).
//! - [`scheduler`]: the task lifecycle and node matching as a plain state machine (no I/O, no
//!   clock).
//! - [`reputation`]: event-sourced node reputation, its score and its report.
//! - [`store`]: the coordinator's state, in a SQLite file or in PostgreSQL.
//! - [`metrics`]: Prometheus counters.
//! - [`broker`]: the embedded rumqttd broker (feature `embedded-broker`).
//!
//! # Features
//! | Feature | Default | |
//! |---|---|---|
//! | `embedded-broker` | yes | rumqttd in-process, for `ambient demo` and `ambient up` |

pub mod api;
pub mod artifacts;
#[cfg(feature = "embedded-broker")]
pub mod broker;
pub mod config;
pub mod engine;
pub mod kinds;
pub mod metrics;
pub mod mqtt;
pub mod reputation;
pub mod scheduler;
pub mod store;
pub mod submission;

/// `zk_proof`'s module under its old path, which the end-to-end tests use.
pub use kinds::zk;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ambient_protocol::topics;
use ambient_service::{Shutdown, StrictConfig};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::info;

pub use config::Config;

/// Why the coordinator could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The database could not be opened or read.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// The Groth16 keys of a supported circuit could not be loaded or made.
    #[error("zero-knowledge keys: {0}")]
    Zk(#[from] kinds::zk::KeysError),
    /// The data dir or the HTTP port could not be used.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
}

/// A running coordinator.
pub struct Coordinator {
    /// Where the REST API listens.
    pub http_addr: SocketAddr,
    shutdown: Shutdown,
}

impl Coordinator {
    /// Waits until every task of the coordinator has finished (after its shutdown token fired).
    pub async fn wait(self) {
        self.shutdown.wait().await;
    }
}

/// Starts the coordinator; it runs until `shutdown` is cancelled.
pub async fn start(cfg: Config, token: CancellationToken) -> Result<Coordinator, StartError> {
    cfg.validate()?;
    ambient_service::private::create_dir(&cfg.data_dir).map_err(|source| StartError::Io {
        what: format!("cannot create data dir {}", cfg.data_dir.display()),
        source,
    })?;
    let store = store::Store::open(&cfg.store_location()).await?;
    let (tasks, nodes) = store.load_active().await?;
    info!(
        active_tasks = tasks.len(),
        known_nodes = nodes.len(),
        "Coordinator state loaded."
    );
    let s = &cfg.scheduler;
    let settings = scheduler::SchedulerSettings {
        lease_grace: chrono::Duration::seconds(s.lease_grace_sec as i64),
        max_retries: s.max_retries,
        queue_timeout: chrono::Duration::seconds(s.queue_timeout_sec as i64),
        health_timeout: chrono::Duration::seconds(s.health_timeout_sec as i64),
        min_free_memory_bytes: s.min_free_memory_mib << 20,
    };
    let sched = scheduler::Scheduler::new(settings, tasks, nodes);
    let zk = Arc::new(kinds::zk::Zk::load(&cfg.data_dir, &store).await?);

    let shutdown = Shutdown::with_token(token);
    let submit_filter = if cfg.mqtt.shared_subscription {
        format!("$share/coordinators/{}", topics::ALL_SUBMIT)
    } else {
        topics::ALL_SUBMIT.to_string()
    };
    let link = ambient_link::start(
        ambient_link::LinkOptions {
            host: cfg.mqtt.host.clone(),
            port: cfg.mqtt.port,
            client_id: cfg.mqtt.client_id.clone(),
            credentials: Some((cfg.mqtt.username.clone(), cfg.mqtt.password.clone())),
            clean_session: false,
            keep_alive: Duration::from_secs(10),
            last_will: None,
            subscriptions: vec![
                topics::ALL_NODE_STATUS.into(),
                topics::ALL_NODE_HEALTH.into(),
                topics::ALL_NODE_RESULTS.into(),
                submit_filter,
            ],
        },
        shutdown.token().clone(),
        shutdown.tracker(),
    );
    // Node identities are retained messages, read on a second link with a clean session: a
    // broker that keeps the main link's session (rumqttd) does not send retained messages again
    // for a subscription the session already has, so a restarted coordinator would never learn
    // the keys that every event on a results topic must be signed with.
    let identity_link = ambient_link::start(
        ambient_link::LinkOptions {
            host: cfg.mqtt.host.clone(),
            port: cfg.mqtt.port,
            client_id: format!("{}-identities", cfg.mqtt.client_id),
            credentials: Some((cfg.mqtt.username.clone(), cfg.mqtt.password.clone())),
            clean_session: true,
            keep_alive: Duration::from_secs(10),
            last_will: None,
            subscriptions: vec![topics::ALL_NODE_IDENTITY.into()],
        },
        shutdown.token().clone(),
        shutdown.tracker(),
    );
    let metrics = Arc::new(metrics::Metrics::default());
    let identities = Arc::new(ambient_protocol::KeyDirectory::default());
    let (engine_tx, engine_rx) = mpsc::channel(1024);
    let engine = engine::Engine {
        sched,
        store: store.clone(),
        mqtt: link.client.clone(),
        metrics: metrics.clone(),
        tick: Duration::from_millis(cfg.scheduler.tick_ms),
        artifacts: artifacts::Artifacts::new(store.clone(), cfg.limits.inline_artifact_bytes),
        zk: zk.clone(),
        reputation_changed: Default::default(),
        fl: kinds::fl::FlDriver::new(identities.clone(), store.fl_checkpoints().await?),
    };
    shutdown.spawn(engine.run(engine_rx, shutdown.token().clone()));
    let mqtt_listener = || mqtt::Listener {
        engine: engine_tx.clone(),
        store: store.clone(),
        mqtt: link.client.clone(),
        limits: cfg.limits.clone(),
        metrics: metrics.clone(),
        submitters: cfg.api_keys.iter().map(|k| k.submitter.clone()).collect(),
        identities: identities.clone(),
    };
    shutdown.spawn(mqtt_listener().run(identity_link.incoming));
    shutdown.spawn(mqtt_listener().run(link.incoming));

    let state = api::AppState {
        engine: engine_tx,
        store,
        limits: cfg.limits.clone(),
        keys: Arc::new(cfg.api_keys.clone()),
        metrics,
        link: link.state,
        zk,
        identities,
        nonces: Arc::default(),
    };
    let listener = tokio::net::TcpListener::bind(cfg.http_addr)
        .await
        .map_err(|source| StartError::Io {
            what: format!("cannot listen on {}", cfg.http_addr),
            source,
        })?;
    let http_addr = listener.local_addr().map_err(|source| StartError::Io {
        what: "cannot read the bound address".into(),
        source,
    })?;
    let app = api::router(state);
    let stop = shutdown.token().clone();
    shutdown.spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "HTTP server failed.");
        }
    });
    info!(http = %http_addr, mqtt = %format!("{}:{}", cfg.mqtt.host, cfg.mqtt.port), "Coordinator started.");
    Ok(Coordinator {
        http_addr,
        shutdown,
    })
}

/// How long a stopping coordinator waits for its tasks (the engine's last flush among them).
const DRAIN_DEADLINE: Duration = Duration::from_secs(30);

/// Runs the coordinator until `shutdown` completes, then drains and returns.
pub async fn run(cfg: Config, signal: impl Future<Output = ()>) -> Result<(), StartError> {
    let shutdown = Shutdown::new();
    let coordinator = start(cfg, shutdown.token().clone()).await?;
    signal.await;
    info!("Shutting down.");
    shutdown.trigger();
    if let Err(e) = coordinator.shutdown.drain(DRAIN_DEADLINE).await {
        tracing::warn!(error = %e, "Stopping with tasks still running.");
    }
    Ok(())
}
