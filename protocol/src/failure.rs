//! Why a run failed: [`FailureKind`], the stable codes an agent reports in
//! [`Outcome::Failure`](crate::Outcome::Failure) and the coordinator adds for proofs it rejects.
//!
//! Some failures are properties of the task, not of the node: every honest node fails the same
//! way at the same point (a module that traps, a model with an unknown operator). The coordinator
//! takes those as the task's answer, since retrying elsewhere would only fail again. Others
//! depend on the node or the moment (a wall clock, a download, a proof that did not verify) and
//! are retried on another node. [`FailureKind::is_deterministic`] draws that line.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A failure code. On the wire it is a snake_case string; a code this build does not know (from
/// a newer agent) is kept as [`FailureKind::Other`] and counts as not deterministic.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// `invalid_module`: the wasm module does not decode or validate.
    InvalidModule,
    /// `unsupported_import`: the module imports something outside the sandbox's WASI subset.
    UnsupportedImport,
    /// `no_entry_point`: the module exports no `_start`.
    NoEntryPoint,
    /// `out_of_fuel`: the module used up the fuel its time budget grants.
    OutOfFuel,
    /// `memory_limit`: the module grew its memory past the limit.
    MemoryLimit,
    /// `trap`: the module trapped (unreachable, division by zero, …).
    Trap,
    /// `exit`: the module exited with a non-zero status.
    Exit,
    /// `output_too_large`: stdout and stderr went over the output limit.
    OutputTooLarge,
    /// `invalid_input`: the inputs do not fit the task (model input names, shapes, types; a
    /// proof's inputs).
    InvalidInput,
    /// `invalid_model`: the ONNX model does not load.
    InvalidModel,
    /// `unsupported_operator`: the model needs an operator the runtime lacks.
    UnsupportedOperator,
    /// `inference_failed`: the model failed while running.
    InferenceFailed,
    /// `executor_crashed`: the executor panicked on this input.
    ExecutorCrashed,
    /// `wall_clock`: the run took longer than its time budget on this node.
    WallClock,
    /// `cancelled`: the run was cancelled (by the coordinator or the node's owner).
    Cancelled,
    /// `proof_failed`: the prover failed.
    ProofFailed,
    /// `invalid_proving_key`: the artifact is not a proving key for the circuit.
    InvalidProvingKey,
    /// `transfer_error`: an artifact could not be fetched.
    TransferError,
    /// `unsupported_task_type`: this agent was built without the task's kind.
    UnsupportedTaskType,
    /// `proof_rejected`: the coordinator did not verify the returned proof.
    ProofRejected,
    /// A code this build does not know, kept as sent. Never holds a known code's spelling when
    /// made through [`FailureKind::from_wire`] or deserialisation.
    Other(String),
}

impl FailureKind {
    /// Every code this build knows, in declaration order.
    pub const KNOWN: [FailureKind; 20] = [
        FailureKind::InvalidModule,
        FailureKind::UnsupportedImport,
        FailureKind::NoEntryPoint,
        FailureKind::OutOfFuel,
        FailureKind::MemoryLimit,
        FailureKind::Trap,
        FailureKind::Exit,
        FailureKind::OutputTooLarge,
        FailureKind::InvalidInput,
        FailureKind::InvalidModel,
        FailureKind::UnsupportedOperator,
        FailureKind::InferenceFailed,
        FailureKind::ExecutorCrashed,
        FailureKind::WallClock,
        FailureKind::Cancelled,
        FailureKind::ProofFailed,
        FailureKind::InvalidProvingKey,
        FailureKind::TransferError,
        FailureKind::UnsupportedTaskType,
        FailureKind::ProofRejected,
    ];

    /// The wire spelling, e.g. `out_of_fuel`.
    pub fn as_str(&self) -> &str {
        match self {
            FailureKind::InvalidModule => "invalid_module",
            FailureKind::UnsupportedImport => "unsupported_import",
            FailureKind::NoEntryPoint => "no_entry_point",
            FailureKind::OutOfFuel => "out_of_fuel",
            FailureKind::MemoryLimit => "memory_limit",
            FailureKind::Trap => "trap",
            FailureKind::Exit => "exit",
            FailureKind::OutputTooLarge => "output_too_large",
            FailureKind::InvalidInput => "invalid_input",
            FailureKind::InvalidModel => "invalid_model",
            FailureKind::UnsupportedOperator => "unsupported_operator",
            FailureKind::InferenceFailed => "inference_failed",
            FailureKind::ExecutorCrashed => "executor_crashed",
            FailureKind::WallClock => "wall_clock",
            FailureKind::Cancelled => "cancelled",
            FailureKind::ProofFailed => "proof_failed",
            FailureKind::InvalidProvingKey => "invalid_proving_key",
            FailureKind::TransferError => "transfer_error",
            FailureKind::UnsupportedTaskType => "unsupported_task_type",
            FailureKind::ProofRejected => "proof_rejected",
            FailureKind::Other(s) => s,
        }
    }

    /// Parses a wire spelling; an unknown one becomes [`FailureKind::Other`].
    pub fn from_wire(s: &str) -> FailureKind {
        FailureKind::KNOWN
            .into_iter()
            .find(|k| k.as_str() == s)
            .unwrap_or_else(|| FailureKind::Other(s.to_owned()))
    }

    /// True when every honest node fails this way on the same task, so the failure is the
    /// task's answer rather than a reason to retry elsewhere. Unknown codes are not.
    pub fn is_deterministic(&self) -> bool {
        matches!(
            self,
            FailureKind::InvalidModule
                | FailureKind::UnsupportedImport
                | FailureKind::NoEntryPoint
                | FailureKind::OutOfFuel
                | FailureKind::MemoryLimit
                | FailureKind::Trap
                | FailureKind::Exit
                | FailureKind::OutputTooLarge
                | FailureKind::InvalidInput
                | FailureKind::InvalidModel
                | FailureKind::UnsupportedOperator
                | FailureKind::InferenceFailed
                | FailureKind::ExecutorCrashed
        )
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for FailureKind {
    fn from(s: &str) -> FailureKind {
        FailureKind::from_wire(s)
    }
}

impl Serialize for FailureKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for FailureKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<FailureKind, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Ok(FailureKind::from_wire(&s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The failure kinds that count as a run's answer (the coordinator's list before this type).
    const DETERMINISTIC: [&str; 13] = [
        "invalid_module",
        "unsupported_import",
        "no_entry_point",
        "out_of_fuel",
        "memory_limit",
        "trap",
        "exit",
        "output_too_large",
        "invalid_input",
        "invalid_model",
        "unsupported_operator",
        "inference_failed",
        "executor_crashed",
    ];

    /// Every code emitted today: the agent's executors and its `failure("...")` calls, and the
    /// coordinator's `proof_rejected`.
    const EMITTED: [&str; 20] = [
        "invalid_module",
        "unsupported_import",
        "no_entry_point",
        "out_of_fuel",
        "memory_limit",
        "trap",
        "exit",
        "wall_clock",
        "cancelled",
        "output_too_large",
        "invalid_model",
        "unsupported_operator",
        "invalid_input",
        "inference_failed",
        "executor_crashed",
        "proof_failed",
        "invalid_proving_key",
        "transfer_error",
        "unsupported_task_type",
        "proof_rejected",
    ];

    #[test]
    fn every_code_round_trips_with_its_spelling() {
        for code in EMITTED {
            let k = FailureKind::from_wire(code);
            assert!(!matches!(k, FailureKind::Other(_)), "{code} is unknown");
            assert_eq!(k.as_str(), code);
            assert_eq!(k.to_string(), code);
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{code}\""));
            assert_eq!(serde_json::from_str::<FailureKind>(&json).unwrap(), k);
        }
        assert_eq!(FailureKind::KNOWN.len(), EMITTED.len());
        for k in FailureKind::KNOWN {
            assert!(EMITTED.contains(&k.as_str()), "{k} is not emitted");
        }
    }

    #[test]
    fn the_deterministic_set_is_exactly_the_coordinators() {
        for k in FailureKind::KNOWN {
            assert_eq!(
                k.is_deterministic(),
                DETERMINISTIC.contains(&k.as_str()),
                "{k}"
            );
        }
    }

    #[test]
    fn an_unknown_code_is_kept_and_not_deterministic() {
        let k: FailureKind = serde_json::from_str("\"gpu_on_fire\"").unwrap();
        assert_eq!(k, FailureKind::Other("gpu_on_fire".into()));
        assert!(!k.is_deterministic());
        assert_eq!(serde_json::to_string(&k).unwrap(), "\"gpu_on_fire\"");
        assert_eq!(FailureKind::from("trap"), FailureKind::Trap);
        assert!(serde_json::from_str::<FailureKind>("3").is_err());
    }
}
