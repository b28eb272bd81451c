//! What work costs: the measured unit of each kind, the reference machine's rate of it, and the
//! reservation a task's limits imply. `docs/credits.md` has the calibration behind the rates.
//!
//! One credit is one hour of one core of the reference machine. A kind's `units_per_credit` is
//! what that core does of the kind's unit in an hour, measured with the agent's own engines by
//! `cargo run --release -p ambient-agent --example calibrate`.

use ambient_protocol::credits::{KindPrice, MICRO, PriceList};
use ambient_protocol::{FUEL_PER_SECOND, TaskType};

/// The machine a credit is an hour of.
pub const REFERENCE: &str = "one core of a 2-core x86_64 cloud machine (the project's CI class): \
     wasmi, tract, arkworks and the FL client measured by the agent's calibrate example";

// The reference rates: medians of `cargo run --release --locked -p ambient-agent --example
// calibrate` on the reference machine, 7 runs each, rounded to two or three figures (the run and
// its spread are in BENCHMARKS.md, "Credits: the calibration of the unit").

/// wasm fuel the reference core executes per second (wasmi, the agent's sandbox; measured
/// 1.360e9, runs from 1.283e9 to 1.393e9).
pub const WASM_FUEL_PER_SEC: u64 = 1_360_000_000;
/// Multiply-accumulates per second (tract, the agent's inference path, PaddleOCR's classifier;
/// measured 9.14e9).
pub const INFERENCE_MACS_PER_SEC: u64 = 9_100_000_000;
/// Groth16 constraints proved per second (ambient-zk, `hash_chain` at n = 64; measured 27,198).
pub const ZK_CONSTRAINTS_PER_SEC: u64 = 27_000;
/// Federated learning steps (sample × epoch × parameter) per second of local training
/// (logistic regression, the default model; measured 1.98e8).
pub const FL_STEPS_PER_SEC: u64 = 200_000_000;

/// µcredits for each replica that answers validly, on top of its measured work: 0.36 s of the
/// reference core, for placing it and moving its inputs and result.
pub const PER_REPLICA: i64 = 100;

/// The default share of each charge paid to the nodes.
pub const NODE_SHARE_PERCENT: u32 = 90;

/// Measured work of one replica, in its kind's unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Units(pub u64);

/// The prices a coordinator charges.
#[derive(Debug, Clone, PartialEq)]
pub struct Prices {
    /// Percent of a charge paid to the nodes.
    pub node_share_percent: u32,
}

impl Default for Prices {
    fn default() -> Prices {
        Prices {
            node_share_percent: NODE_SHARE_PERCENT,
        }
    }
}

/// The unit and the reference rate (per second) of a kind.
fn rate(kind: TaskType) -> (&'static str, u64) {
    match kind {
        TaskType::WasmExecution | TaskType::Computation => ("fuel", WASM_FUEL_PER_SEC),
        TaskType::Inference => ("macs", INFERENCE_MACS_PER_SEC),
        TaskType::ZkProof => ("constraints", ZK_CONSTRAINTS_PER_SEC),
        TaskType::FederatedLearning => ("sample_epoch_params", FL_STEPS_PER_SEC),
    }
}

impl Prices {
    /// µcredits for one valid replica that did `units` of `kind`'s work: the per-replica part
    /// plus the work, rounded up to a whole µcredit.
    pub fn replica(&self, kind: TaskType, units: Units) -> i64 {
        let per_credit = rate(kind).1 as u128 * 3600;
        let work = (units.0 as u128 * MICRO as u128).div_ceil(per_credit);
        PER_REPLICA.saturating_add(i64::try_from(work).unwrap_or(i64::MAX))
    }

    /// The most one replica of a `kind` task may use in `seconds` of its time limit: the fuel the
    /// protocol grants for wasm, what the reference core does in that time otherwise.
    pub fn budget(&self, kind: TaskType, seconds: u64) -> Units {
        match kind {
            TaskType::WasmExecution | TaskType::Computation => {
                Units(seconds.saturating_mul(FUEL_PER_SECOND))
            }
            _ => Units(seconds.saturating_mul(rate(kind).1)),
        }
    }

    /// What a node is paid of a `charge` for its work: the node share, rounded down (the
    /// network's fee keeps the rest).
    pub fn node_share(&self, charge: i64) -> i64 {
        (charge as i128 * self.node_share_percent as i128 / 100) as i64
    }

    /// The published list.
    pub fn list(&self) -> PriceList {
        let estimate = |kind| match kind {
            TaskType::WasmExecution => {
                "min_nodes × (per_replica + the fuel of max_execution_time_sec, 250 M fuel a second)"
            }
            TaskType::Computation => {
                "shards × min_nodes × (per_replica + the fuel of max_execution_time_sec)"
            }
            TaskType::Inference => {
                "per_replica + the MACs the reference core does in max_execution_time_sec"
            }
            TaskType::ZkProof => "per_replica + the circuit's constraints (known in advance)",
            TaskType::FederatedLearning => {
                "min_nodes × rounds × (per_replica + the steps the reference core does in \
                 round_timeout_sec)"
            }
        };
        PriceList {
            unit: "credit".into(),
            microcredits_per_credit: MICRO,
            reference: REFERENCE.into(),
            node_share_percent: self.node_share_percent,
            kinds: TaskType::ALL
                .iter()
                .map(|&kind| {
                    let (unit, per_sec) = rate(kind);
                    KindPrice {
                        task_type: kind,
                        unit: unit.into(),
                        units_per_credit: per_sec * 3600,
                        per_replica: PER_REPLICA,
                        estimate: estimate(kind).into(),
                    }
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_hour_of_the_reference_core_is_one_credit() {
        let p = Prices::default();
        for kind in TaskType::ALL {
            let hour = Units(rate(kind).1 * 3600);
            assert_eq!(p.replica(kind, hour), MICRO + PER_REPLICA, "{kind}");
        }
        // Rounded up: any work costs at least a µcredit over the per-replica part.
        assert_eq!(
            p.replica(TaskType::WasmExecution, Units(1)),
            PER_REPLICA + 1
        );
        assert_eq!(p.replica(TaskType::WasmExecution, Units(0)), PER_REPLICA);
    }

    #[test]
    fn a_node_gets_its_share_rounded_down() {
        let p = Prices::default();
        assert_eq!(p.node_share(1000), 900);
        assert_eq!(p.node_share(1001), 900);
        assert_eq!(p.node_share(1), 0);
    }
}
