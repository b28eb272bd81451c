//! The contribution policy at run time: the owner's rules, the latest observations of the
//! machine, and the decision they give ([`crate::policy`] is the pure part).
//!
//! [`Node::policy_loop`] re-reads the machine every `policy.evaluate_ms` (probes run on a
//! blocking thread) and [`Node::apply`]s the decision: when contribution stops, a health report
//! goes out at once, then every running task is cancelled and declined. Settings changed
//! through the control API ([`Node::set_settings`]) are saved, then applied before the call
//! returns.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::info;

use crate::config::Config;
use crate::control::SetError;
use crate::exec::Knobs;
use crate::policy::probe::SystemProbes;
use crate::policy::{self, Clock as _, Decision, Observations, Rules, Settings};
use crate::state::Node;
use crate::{StartError, lock, settings};

/// The policy as it stands.
struct PolicyState {
    rules: Rules,
    obs: Observations,
    decision: Decision,
}

/// What a health report says about the policy.
pub(crate) struct Advert {
    /// Whether the node takes work now.
    pub(crate) accepting: bool,
    /// Why not, when it does not.
    pub(crate) paused_reason: Option<String>,
    /// Whether the owner lets GPUs be used (and so advertised).
    pub(crate) gpu_enabled: bool,
    /// Tasks this node takes at once now.
    pub(crate) slots: u32,
}

/// The owner's rules, the machine as last observed, and the decision.
pub(crate) struct Contribution {
    node_id: String,
    /// The configured `execution.max_concurrent_tasks`.
    max_tasks: u32,
    /// `settings.json`.
    path: PathBuf,
    state: Mutex<PolicyState>,
    probes: Arc<Mutex<SystemProbes>>,
    /// Serialises decisions, so health reports and declines follow them in order.
    apply_lock: tokio::sync::Mutex<()>,
    /// Serialises settings changes (persist, then apply).
    settings_lock: tokio::sync::Mutex<()>,
    /// The settings executors read while they run.
    knobs: Arc<Knobs>,
}

impl Contribution {
    /// Reads `settings.json` and the machine, and decides, before the agent connects, so that
    /// the first health report already tells the truth.
    pub(crate) async fn start(cfg: &Config) -> Result<Contribution, StartError> {
        let path = settings::settings_path(&cfg.data_dir);
        let rules = settings::load(&path)?;
        let probes = Arc::new(Mutex::new(SystemProbes::new(
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
        let knobs = Arc::new(Knobs {
            duty_pct: AtomicU32::new(rules.settings().cpu_duty_pct),
            gpu_enabled: AtomicBool::new(rules.settings().gpu_enabled),
        });
        Ok(Contribution {
            node_id: cfg.node_id.clone(),
            max_tasks: cfg.execution.max_concurrent_tasks,
            path,
            state: Mutex::new(PolicyState {
                rules,
                obs,
                decision,
            }),
            probes,
            apply_lock: tokio::sync::Mutex::new(()),
            settings_lock: tokio::sync::Mutex::new(()),
            knobs,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PolicyState> {
        lock(&self.state)
    }

    /// The settings executors read while they run.
    pub(crate) fn knobs(&self) -> Arc<Knobs> {
        self.knobs.clone()
    }

    /// Whether the policy lets the machine work now.
    pub(crate) fn contributing(&self) -> bool {
        self.lock().decision.contributing
    }

    /// The `Declined` reason while paused.
    pub(crate) fn paused_reason(&self) -> String {
        format!(
            "paused by the owner: {}",
            self.lock().decision.reasons.join("; ")
        )
    }

    /// Tasks this agent takes at once now (the configured maximum, capped by the CPU setting).
    pub(crate) fn slots(&self) -> u32 {
        self.lock().rules.slots(self.max_tasks)
    }

    /// The owner's settings.
    pub(crate) fn settings(&self) -> Settings {
        self.lock().rules.settings().clone()
    }

    /// The decision and the settings, read together.
    pub(crate) fn snapshot(&self) -> (Decision, Settings) {
        let p = self.lock();
        (p.decision.clone(), p.rules.settings().clone())
    }

    /// What a health report says, read together.
    pub(crate) fn advert(&self) -> Advert {
        let p = self.lock();
        Advert {
            accepting: p.decision.contributing,
            paused_reason: (!p.decision.contributing).then(|| p.decision.reasons.join("; ")),
            gpu_enabled: p.rules.settings().gpu_enabled,
            slots: p.rules.slots(self.max_tasks),
        }
    }

    /// Reads the machine (on a blocking thread).
    async fn observe(&self) -> Observations {
        let rules = self.lock().rules.clone();
        let probes = self.probes.clone();
        tokio::task::spawn_blocking(move || policy::observe(&rules, &mut *lock(&probes)))
            .await
            .unwrap_or_default()
    }

    /// Decides with the current rules and `obs` (or the last observations); also says whether
    /// the decision flipped.
    fn decide(&self, obs: Option<Observations>) -> (Decision, bool) {
        let mut p = self.lock();
        if let Some(obs) = obs {
            p.obs = obs;
        }
        let d = policy::decide(&p.rules, &p.obs, policy::LocalClock.now());
        let flipped = d.contributing != p.decision.contributing;
        p.decision = d.clone();
        (d, flipped)
    }

    /// Checks `s`, writes it to `settings.json` and makes it the rules. The guard serialises
    /// settings changes: hold it until the change is applied.
    async fn replace(&self, s: &Settings) -> Result<tokio::sync::MutexGuard<'_, ()>, SetError> {
        let rules = s.compile().map_err(SetError::Invalid)?;
        let serial = self.settings_lock.lock().await;
        let (path, to_save) = (self.path.clone(), s.clone());
        tokio::task::spawn_blocking(move || settings::save(&path, &to_save))
            .await
            .map_err(|e| SetError::Io(std::io::Error::other(e.to_string())))?
            .map_err(SetError::Io)?;
        self.knobs.duty_pct.store(s.cpu_duty_pct, Ordering::Relaxed);
        self.knobs
            .gpu_enabled
            .store(s.gpu_enabled, Ordering::Relaxed);
        self.lock().rules = rules;
        info!(node = %self.node_id, settings = ?s, "Settings changed.");
        Ok(serial)
    }
}

impl Node {
    /// Re-reads the machine (on a blocking thread) and applies the decision.
    pub(crate) async fn reevaluate(&self) -> Decision {
        let obs = self.contribution.observe().await;
        self.apply(Some(obs)).await
    }

    /// Decides with the current rules and `obs` (or the last observations). When contribution
    /// stops: a health report at once, then every running task is cancelled and declined.
    pub(crate) async fn apply(&self, obs: Option<Observations>) -> Decision {
        let _serial = self.contribution.apply_lock.lock().await;
        let (decision, flipped) = self.contribution.decide(obs);
        if flipped {
            if decision.contributing {
                info!(node = %self.cfg.node_id, "Contribution resumed.");
            } else {
                info!(node = %self.cfg.node_id, reasons = ?decision.reasons, "Contribution paused.");
            }
            self.publish_health(false).await;
        }
        if !decision.contributing {
            let reason = self.contribution.paused_reason();
            self.tasks.hand_back_all(&reason).await;
        }
        decision
    }

    /// Re-evaluates the policy every `policy.evaluate_ms` until the agent stops.
    pub(crate) async fn policy_loop(self: Arc<Self>) {
        let mut every = tokio::time::interval(Duration::from_millis(self.cfg.policy.evaluate_ms));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => { self.reevaluate().await; }
                _ = self.shutdown.cancelled() => return,
            }
        }
    }

    /// Replaces the owner's settings: checked, written to `settings.json`, then applied. Returns
    /// once the resulting decision has taken effect (health published, tasks handed back).
    pub(crate) async fn set_settings(&self, s: Settings) -> Result<Decision, SetError> {
        let _serial = self.contribution.replace(&s).await?;
        Ok(if s.enabled {
            self.reevaluate().await
        } else {
            // Off needs no probe: stop now.
            self.apply(None).await
        })
    }
}
