//! Fakes for tests and simulations (feature `test-util`, off by default): the health report of a
//! simulated node ([`HealthBuilder`]) and a successful result ([`finished_success`]), so tests,
//! examples and adversarial test nodes build them one way instead of field by field.

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use crate::{AgentEvent, DatasetInfo, GpuInfo, Health, Outcome, TaskResult, TaskType};

/// Builds the [`Health`] of a simulated node. It starts as a modest, idle, accepting node:
/// 10 % of 4 CPUs busy, load 0.5, 4 of 8 GiB memory available, `wasm_execution` only, 2 slots,
/// none in use, 64 MiB wasm memory, no GPU, no sensors, no data sets.
#[derive(Debug, Clone)]
pub struct HealthBuilder(Health);

impl HealthBuilder {
    /// Node `node_id`'s report sampled at `at`, with the defaults above.
    pub fn new(node_id: &str, at: DateTime<Utc>) -> HealthBuilder {
        HealthBuilder(Health {
            node_id: node_id.to_string(),
            at,
            cpu_usage_pct: 10.0,
            cpu_count: 4,
            load_avg: [0.5; 3],
            mem_total_bytes: 8 << 30,
            mem_available_bytes: 4 << 30,
            temperatures: vec![],
            gpus: vec![],
            supported_task_types: vec![TaskType::WasmExecution],
            max_concurrent_tasks: 2,
            running_tasks: 0,
            accepting: true,
            paused_reason: None,
            wasm_memory_limit_bytes: 64 << 20,
            wasm_engine: None,
            datasets: vec![],
        })
    }

    /// CPU use (0–100) and logical CPUs.
    pub fn cpu(mut self, usage_pct: f32, count: u32) -> HealthBuilder {
        self.0.cpu_usage_pct = usage_pct;
        self.0.cpu_count = count;
        self
    }

    /// The 1, 5 and 15 minute load averages.
    pub fn load(mut self, load_avg: [f64; 3]) -> HealthBuilder {
        self.0.load_avg = load_avg;
        self
    }

    /// Physical memory and the part of it available to new work, in bytes.
    pub fn memory(mut self, total_bytes: u64, available_bytes: u64) -> HealthBuilder {
        self.0.mem_total_bytes = total_bytes;
        self.0.mem_available_bytes = available_bytes;
        self
    }

    /// The task kinds the node can execute.
    pub fn kinds(mut self, kinds: &[TaskType]) -> HealthBuilder {
        self.0.supported_task_types = kinds.to_vec();
        self
    }

    /// Tasks the node runs at once at most.
    pub fn slots(mut self, max_concurrent_tasks: u32) -> HealthBuilder {
        self.0.max_concurrent_tasks = max_concurrent_tasks;
        self
    }

    /// Tasks running now.
    pub fn running(mut self, running_tasks: u32) -> HealthBuilder {
        self.0.running_tasks = running_tasks;
        self
    }

    /// Whether the node takes work; a node that does not gives the reason `paused`.
    pub fn accepting(mut self, accepting: bool) -> HealthBuilder {
        self.0.accepting = accepting;
        self.0.paused_reason = (!accepting).then(|| "paused".to_string());
        self
    }

    /// Adds a GPU.
    pub fn gpu(mut self, gpu: GpuInfo) -> HealthBuilder {
        self.0.gpus.push(gpu);
        self
    }

    /// Adds a data set offered to federated learning.
    pub fn dataset(mut self, dataset: DatasetInfo) -> HealthBuilder {
        self.0.datasets.push(dataset);
        self
    }

    /// The report.
    pub fn build(self) -> Health {
        self.0
    }
}

impl From<HealthBuilder> for Health {
    fn from(b: HealthBuilder) -> Health {
        b.build()
    }
}

/// A `finished` event for `(task_id, attempt)` that succeeded with `output`, as an honest agent
/// reports it: `output_sha256` is the sha256 of `output` serialized as JSON (the bytes a module
/// printing that JSON writes to stdout), so equal outputs are equal answers. It took 1 ms and
/// reports no fuel.
pub fn finished_success(task_id: Uuid, attempt: u32, output: Value) -> AgentEvent {
    let bytes = serde_json::to_vec(&output).unwrap_or_default();
    AgentEvent::Finished {
        result: TaskResult {
            task_id,
            attempt,
            outcome: Outcome::Success {
                output_sha256: crate::sha256_hex(&bytes),
                output,
            },
            duration_ms: 1,
            fuel_consumed: None,
            macs: None,
            engine: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_sets_what_it_names() {
        let at = Utc::now();
        let h = HealthBuilder::new("n1", at)
            .cpu(95.0, 64)
            .kinds(&[TaskType::Inference])
            .accepting(false)
            .build();
        assert_eq!((h.node_id.as_str(), h.at), ("n1", at));
        assert_eq!((h.cpu_usage_pct, h.cpu_count), (95.0, 64));
        assert_eq!(h.supported_task_types, [TaskType::Inference]);
        assert_eq!(h.paused_reason.as_deref(), Some("paused"));
        assert!(HealthBuilder::new("n1", at).build().accepting);
    }

    #[test]
    fn success_hashes_the_json_output() {
        let out = serde_json::json!({"sum": 6});
        let AgentEvent::Finished { result } = finished_success(Uuid::nil(), 2, out.clone()) else {
            panic!("not finished");
        };
        assert_eq!(result.attempt, 2);
        assert_eq!(
            result.outcome,
            Outcome::Success {
                output: out,
                output_sha256: crate::sha256_hex(br#"{"sum":6}"#),
            }
        );
    }
}
