//! Which coordinator runs the scheduler, when several share one PostgreSQL store.
//!
//! Every coordinator serves the REST API. One of them, the leader, also runs the scheduler role:
//! the [`Engine`] and its MQTT links (node health, presence and results; MQTT submissions). It
//! holds a lease, one row in the database, granted with a new epoch at each takeover and renewed
//! every [`Election::lease`]` / 5`. The epoch is a fence: every write of the scheduler's state
//! carries it and is refused once a newer epoch was granted ([`crate::store::Fence`]), and the
//! engine publishes only what it has written, so a leader that lost its lease without knowing it
//! (paused, cut off from the database) can neither change the state nor dispatch.
//!
//! The others forward what needs the scheduler (submit, cancel, nodes, signed blob downloads)
//! to the leader's URL, and serve reads from the database themselves. When the leader dies, its
//! lease runs out and the first coordinator to try takes over: it loads the active tasks, the
//! nodes and the federated jobs' checkpoints from the database, connects with the scheduler's
//! MQTT client id (so the broker hands it the session and the results queued in it), and goes on.
//! A leader that stops cleanly ends its lease at once.
//!
//! A SQLite store has one coordinator, which always leads ([`Store::lead`]).

use std::sync::Arc;
use std::time::Duration;

use ambient_link::LinkState;
use ambient_protocol::{KeyDirectory, topics};
use ambient_service::Shutdown;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::engine::{Engine, EngineMsg};
use crate::kinds::groth16::Zk;
use crate::metrics::Metrics;
use crate::store::{Fence, Store};
use crate::{Config, DRAIN_DEADLINE, StartError, artifacts, credits, kinds, mqtt, scheduler};

/// What the REST API needs of the scheduler role while this coordinator leads.
#[derive(Clone)]
pub struct Leading {
    /// The engine's inbox.
    pub engine: mpsc::Sender<EngineMsg>,
    /// The scheduler's broker link.
    pub link: watch::Receiver<LinkState>,
    /// What the other coordinators show on this one's intake route ([`Election::secret`]).
    pub secret: Arc<str>,
}

/// Campaigns for the scheduler and runs it while this coordinator holds the lease.
pub(crate) struct Election {
    pub(crate) store: Store,
    pub(crate) cfg: Config,
    pub(crate) zk: Arc<Zk>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) identities: Arc<KeyDirectory>,
    /// Enrolments, whose keys the scheduler's checks need.
    pub(crate) enroller: crate::enrolment::Enroller,
    /// This coordinator's instance id.
    pub(crate) holder: String,
    /// This coordinator's REST API, as the others reach it.
    pub(crate) url: String,
    /// How long a grant lasts unrenewed.
    pub(crate) lease: Duration,
    /// This coordinator's intake secret, written with each grant: the others read it from the
    /// database and show it when they hand it a checked submission ([`crate::api`]'s intake).
    pub(crate) secret: Arc<str>,
    /// Where the API finds the scheduler role; `None` while another coordinator leads.
    pub(crate) slot: watch::Sender<Option<Leading>>,
}

/// The scheduler role while it runs.
pub(crate) struct Term {
    fence: Fence,
    role: Shutdown,
}

impl Election {
    /// One attempt: takes the lease if it is free and starts the scheduler role. `Ok(None)`:
    /// another coordinator leads.
    pub(crate) async fn campaign(&self, parent: &Shutdown) -> Result<Option<Term>, StartError> {
        let Some(fence) = self
            .store
            .lead(&self.holder, &self.url, &self.secret, self.lease)
            .await?
        else {
            return Ok(None);
        };
        let role = parent.child();
        match self.start_role(&fence, &role).await {
            Ok(leading) => {
                info!(epoch = fence.epoch, holder = %self.holder, "Leading the scheduler.");
                self.slot.send_replace(Some(leading));
                Ok(Some(Term { fence, role }))
            }
            Err(e) => {
                role.trigger();
                role.wait().await;
                let _ = self.store.resign(&fence).await;
                Err(e)
            }
        }
    }

    /// Campaigns every `lease / 5` until `token` is cancelled, and renews the lease while it
    /// leads; `first` is the term won at start, if any.
    pub(crate) async fn run(self, mut term: Option<Term>, parent: Shutdown) {
        let every = self.lease / 5;
        let token = parent.token().clone();
        loop {
            match term.take() {
                Some(t) => self.serve(t, &token).await,
                None => match self.campaign(&parent).await {
                    Ok(t) => term = t,
                    Err(e) => warn!(error = %e, "Could not take up the scheduler."),
                },
            }
            if term.is_some() {
                continue;
            }
            tokio::select! {
                _ = token.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    }

    /// Renews the lease until it is lost or `token` is cancelled, then stops the role and ends
    /// the lease.
    async fn serve(&self, term: Term, token: &CancellationToken) {
        let every = self.lease / 5;
        let mut renewed = Instant::now();
        loop {
            tokio::select! {
                _ = token.cancelled() => break,
                _ = tokio::time::sleep(every) => {}
            }
            match self.store.renew(&term.fence, self.lease).await {
                Ok(true) => renewed = Instant::now(),
                Ok(false) => {
                    warn!(
                        epoch = term.fence.epoch,
                        "Another coordinator took over the scheduler."
                    );
                    break;
                }
                // Another coordinator may take over once the lease has run out: stop before.
                Err(e) if renewed.elapsed() + every >= self.lease => {
                    error!(error = %e, "Could not renew the scheduler's lease; stepping down.");
                    break;
                }
                Err(e) => warn!(error = %e, "Could not renew the scheduler's lease; retrying."),
            }
        }
        self.slot.send_replace(None);
        term.role.trigger();
        if let Err(e) = term.role.drain(DRAIN_DEADLINE).await {
            warn!(error = %e, "The scheduler role stopped with tasks still running.");
        }
        if let Err(e) = self.store.resign(&term.fence).await {
            warn!(error = %e, "Could not end the scheduler's lease; it runs out by itself.");
        }
        info!(epoch = term.fence.epoch, "Stopped leading the scheduler.");
    }

    /// Loads the scheduler's state and starts the engine, its MQTT links and their listeners as
    /// tasks of `role`.
    async fn start_role(&self, fence: &Fence, role: &Shutdown) -> Result<Leading, StartError> {
        let cfg = &self.cfg;
        // Keys first: the listeners below check nodes' signatures against them.
        self.enroller.load().await?;
        let (tasks, nodes) = self.store.load_active().await?;
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
        let mut book =
            credits::Book::new(cfg.credits.prices(), self.store.credit_snapshot().await?);
        // The bootstrap submitters' opening grants, once each (written with the first flush).
        let opening = cfg.credits.opening_grant as i64 * ambient_protocol::credits::MICRO;
        for key in &cfg.api_keys {
            book.open(&key.submitter, opening, chrono::Utc::now());
        }
        let sched = scheduler::Scheduler::new(settings, tasks, nodes).with_book(book);
        let submit_filter = if cfg.mqtt.shared_subscription {
            format!("$share/coordinators/{}", topics::ALL_SUBMIT)
        } else {
            topics::ALL_SUBMIT.to_string()
        };
        // The scheduler's two links: the same broker account and addresses.
        let start_link = |client_id: String, clean_session: bool, subscriptions: Vec<String>| {
            let options = cfg.link_options(client_id, clean_session, subscriptions);
            ambient_link::start(options, role.token().clone(), role.tracker())
        };
        let link = start_link(
            cfg.mqtt.client_id.clone(),
            false,
            vec![
                topics::ALL_NODE_STATUS.into(),
                topics::ALL_NODE_HEALTH.into(),
                topics::ALL_NODE_RESULTS.into(),
                submit_filter,
            ],
        );
        // Node identities are retained messages, read on a second link with a clean session: a
        // broker that keeps the main link's session (rumqttd) does not send retained messages
        // again for a subscription the session already has, so a new leader would never learn
        // the keys that every event on a results topic must be signed with.
        let identity_link = start_link(
            format!("{}-identities", cfg.mqtt.client_id),
            true,
            vec![topics::ALL_NODE_IDENTITY.into()],
        );
        let (engine_tx, engine_rx) = mpsc::channel(1024);
        let engine = Engine {
            sched,
            store: self.store.clone(),
            fence: fence.clone(),
            mqtt: link.client.clone(),
            metrics: self.metrics.clone(),
            tick: Duration::from_millis(cfg.scheduler.tick_ms),
            artifacts: artifacts::Artifacts::new(
                self.store.clone(),
                cfg.limits.inline_artifact_bytes,
            ),
            zk: self.zk.clone(),
            reputation_changed: Default::default(),
            fl: kinds::fl::FlDriver::new(
                self.identities.clone(),
                self.store.fl_checkpoints().await?,
            ),
        };
        role.spawn(engine.run(engine_rx, role.token().clone()));
        let listener = || mqtt::Listener {
            engine: engine_tx.clone(),
            store: self.store.clone(),
            mqtt: link.client.clone(),
            limits: cfg.limits.clone(),
            metrics: self.metrics.clone(),
            submitters: cfg.api_keys.iter().map(|k| k.submitter.clone()).collect(),
            identities: self.identities.clone(),
        };
        role.spawn(listener().run(identity_link.incoming));
        role.spawn(listener().run(link.incoming));
        Ok(Leading {
            engine: engine_tx,
            link: link.state,
            secret: self.secret.clone(),
        })
    }
}
