//! Health reports: a telemetry sample ([`crate::telemetry`]), the policy's answer and the
//! running count, published every `health.interval_sec` and at once when the policy flips or
//! the link reconnects.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ambient_protocol::Health;
use chrono::Utc;

use crate::exec::supported_task_types;
use crate::lock;
use crate::state::Node;
use crate::telemetry::{Sample, Telemetry};

/// The telemetry sampler and its latest sample.
pub(crate) struct Sampler {
    telemetry: Arc<Mutex<Telemetry>>,
    /// The latest sample, for the control API and policy-triggered health reports.
    last: Mutex<Option<Sample>>,
}

impl Sampler {
    /// Opens the sampler (on a blocking thread: NVML loads a library).
    pub(crate) async fn start() -> Result<Sampler, tokio::task::JoinError> {
        let telemetry = tokio::task::spawn_blocking(Telemetry::new).await?;
        Ok(Sampler {
            telemetry: Arc::new(Mutex::new(telemetry)),
            last: Mutex::new(None),
        })
    }

    /// Takes a sample (on a blocking thread) and keeps it.
    pub(crate) async fn sample(&self) -> Option<Sample> {
        let telemetry = self.telemetry.clone();
        let s = tokio::task::spawn_blocking(move || lock(&telemetry).sample())
            .await
            .ok()?;
        *lock(&self.last) = Some(s.clone());
        Some(s)
    }

    /// The latest sample, or a new one when there is none yet.
    pub(crate) async fn latest(&self) -> Option<Sample> {
        let last = lock(&self.last).clone();
        match last {
            Some(s) => Some(s),
            None => self.sample().await,
        }
    }
}

impl Node {
    /// Publishes a health report; with `fresh` false it reuses the last telemetry sample, so a
    /// policy change goes out without waiting for one.
    pub(crate) async fn publish_health(&self, fresh: bool) {
        let s = if fresh {
            self.sampler.sample().await
        } else {
            self.sampler.latest().await
        };
        let Some(s) = s else { return };
        let policy = self.contribution.advert();
        let exec = &self.cfg.execution;
        let health = Health {
            node_id: self.cfg.node_id.clone(),
            at: Utc::now(),
            cpu_usage_pct: s.cpu_usage_pct,
            cpu_count: s.cpu_count,
            load_avg: s.load_avg,
            mem_total_bytes: s.mem_total_bytes,
            mem_available_bytes: s.mem_available_bytes,
            temperatures: s.temperatures,
            gpus: if policy.gpu_enabled {
                s.gpus
            } else {
                Vec::new()
            },
            supported_task_types: supported_task_types(),
            max_concurrent_tasks: policy.slots,
            running_tasks: self.tasks.running_count() as u32,
            accepting: policy.accepting,
            paused_reason: policy.paused_reason,
            wasm_memory_limit_bytes: exec.max_memory_mib << 20,
            wasm_engine: self.tasks.wasm_engine().map(String::from),
            #[cfg(feature = "fl")]
            datasets: self.fl.infos(),
            #[cfg(not(feature = "fl"))]
            datasets: Vec::new(),
        };
        self.outbox.health(&health);
    }

    /// Publishes a fresh health report every `health.interval_sec` until the agent stops.
    pub(crate) async fn health_loop(self: Arc<Self>) {
        let mut every =
            tokio::time::interval(Duration::from_secs_f64(self.cfg.health.interval_sec));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => self.publish_health(true).await,
                _ = self.shutdown.cancelled() => return,
            }
        }
    }
}
