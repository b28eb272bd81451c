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
//! - [`console`]: the web console served at `/console/`, and its event stream.
//! - [`mqtt`]: the MQTT [`mqtt::Listener`]: node health, presence, results and identities, and
//!   submissions.
//! - [`submission`]: checks of a submission shared by REST and MQTT, and [`submission::SubmitError`].
//! - [`kinds`]: one module per task kind (`wasm`, `computation`, `inference`, `zk`, `fl`) with
//!   its submission checks, task construction, result checks and API JSON; `kinds/mod.rs` is
//!   the one place that lists the kinds.
//! - [`engine`]: the one task that owns the scheduler: runs the loop, persists, then publishes.
//! - [`leader`]: which coordinator runs the engine when several share a PostgreSQL store: a
//!   fenced lease in the database; the others forward to it what needs the scheduler.
//! - [`artifacts`]: the blob store as the engine uses it: storing submitted artifacts, inlining
//!   small ones into assignments, reference-counting temporary blobs (federated models).
//! - [`scheduler`]: the task lifecycle and node matching as a plain state machine (no I/O, no
//!   clock).
//! - [`reputation`]: event-sourced node reputation, its score and its report.
//! - [`credits`]: the marketplace's accounting: prices, escrow, settlement, the ledger's
//!   postings.
//! - [`store`]: the coordinator's state, in a SQLite file or in PostgreSQL.
//! - [`enrolment`]: joining with enrolment tokens, and revoking nodes.
//! - [`accounts`]: broker accounts made and removed at run time (embedded broker, mosquitto's
//!   dynamic-security plugin).
//! - [`templates`]: the task templates of `templates/`, built in, and their rendering.
//! - [`metrics`]: Prometheus counters.
//! - [`broker`]: the embedded rumqttd broker (feature `embedded-broker`).
//!
//! # Features
//! | Feature | Default | |
//! |---|---|---|
//! | `embedded-broker` | yes | rumqttd in-process, for `ambient demo` and `ambient up` |

pub mod accounts;
pub mod api;
pub mod artifacts;
#[cfg(feature = "embedded-broker")]
pub mod broker;
pub mod config;
pub mod console;
pub mod credits;
pub mod engine;
pub mod enrolment;
pub mod kinds;
pub mod leader;
pub mod metrics;
pub mod mqtt;
pub mod reputation;
pub mod scheduler;
pub mod store;
pub mod submission;
pub mod templates;

/// `zk_proof`'s module under its old path, which the end-to-end tests use.
pub use kinds::{groth16, zk};

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ambient_service::{Shutdown, StrictConfig};
use tokio::sync::watch;
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

/// Starts the coordinator; it runs until `shutdown` is cancelled. It serves the REST API, and
/// runs the scheduler while it holds the scheduler's lease ([`leader`]): at once on a SQLite
/// store, or when it wins the lease among the coordinators of a PostgreSQL store.
pub async fn start(cfg: Config, token: CancellationToken) -> Result<Coordinator, StartError> {
    start_with(cfg, None, token).await
}

/// [`start`] on the embedded broker `broker`, whose accounts the coordinator makes for nodes
/// that join.
#[cfg(feature = "embedded-broker")]
pub async fn start_embedded(
    cfg: Config,
    broker: &broker::EmbeddedBroker,
    token: CancellationToken,
) -> Result<Coordinator, StartError> {
    let accounts = accounts::BrokerAccounts::Embedded(broker.accounts.clone());
    start_with(cfg, Some(accounts), token).await
}

async fn start_with(
    cfg: Config,
    accounts: Option<accounts::BrokerAccounts>,
    token: CancellationToken,
) -> Result<Coordinator, StartError> {
    cfg.validate()?;
    ambient_service::private::create_dir(&cfg.data_dir).map_err(|source| StartError::Io {
        what: format!("cannot create data dir {}", cfg.data_dir.display()),
        source,
    })?;
    let store = store::Store::open(&cfg.store_location()).await?;
    let zk = Arc::new(kinds::groth16::Zk::new(cfg.data_dir.clone(), store.clone()));
    let shutdown = Shutdown::with_token(token);
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
    let url = cfg.public_url(http_addr);
    let metrics = Arc::new(metrics::Metrics::default());
    let identities = Arc::new(ambient_protocol::KeyDirectory::default());
    let accounts = accounts.unwrap_or_else(|| match cfg.enrolment.broker {
        config::BrokerKind::Manual => accounts::BrokerAccounts::Manual,
        config::BrokerKind::MosquittoDynsec => {
            accounts::BrokerAccounts::Dynsec(accounts::Dynsec::start(
                cfg.link_options(format!("{}-dynsec", cfg.mqtt.client_id), true, Vec::new()),
                &shutdown,
            ))
        }
    });
    let enroller = enrolment::Enroller {
        store: store.clone(),
        accounts,
        identities: identities.clone(),
        brokers: cfg.node_brokers(),
        api_url: url.clone(),
    };
    let (slot, leading) = watch::channel(None);
    let election = leader::Election {
        store: store.clone(),
        cfg: cfg.clone(),
        zk: zk.clone(),
        metrics: metrics.clone(),
        identities: identities.clone(),
        enroller: enroller.clone(),
        holder: uuid::Uuid::new_v4().to_string(),
        url: url.clone(),
        lease: Duration::from_secs(cfg.scheduler.leader_lease_sec),
        secret: hex::encode(rand::random::<[u8; 32]>()).into(),
        slot,
    };
    // The first campaign runs before `start` returns, so a coordinator that can lead (always, on
    // SQLite) is ready for work when its caller gets it.
    let term = election.campaign(&shutdown).await?;
    shutdown.spawn(election.run(term, shutdown.clone()));

    let state = api::AppState {
        leading,
        forward: api::Forward::new(store.clone(), url),
        store,
        limits: cfg.limits.clone(),
        keys: Arc::new(cfg.api_keys.clone()),
        metrics,
        zk,
        identities,
        nonces: Arc::default(),
        admin_keys: Arc::new(cfg.admin_keys.clone()),
        enroller,
        prices: cfg.credits.prices(),
        console: console::Console::new(shutdown.token().clone()),
    };
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

/// How long a stopping coordinator, or a scheduler role that lost its lease, waits for its tasks
/// (the engine's last flush among them).
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
