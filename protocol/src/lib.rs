//! Ambient VCP wire protocol: the JSON messages that cross the MQTT broker and the REST API, and
//! the topic names they travel on.
//!
//! This crate is data only. It depends on serde and nothing that does I/O, so the coordinator,
//! the agent, the CLI and third-party submitters share one definition of every message.
//!
//! # Layout
//! - [`topics`]: topic builders and a parser for incoming topics.
//! - [`task`]: what a submitter sends ([`TaskSubmission`]) and gets back ([`TaskInfo`]).
//! - [`node`]: what an agent reports ([`NodeStatus`], [`Health`]).
//! - [`tensor`]: tensors as JSON for `inference`.
//! - [`templates`]: task templates as listed ([`TemplateInfo`]) and rendered ([`TemplateRender`],
//!   [`RenderedTemplate`]).
//! - [`wire`]: coordinator ↔ agent messages ([`Assignment`], [`AgentEvent`], [`Control`]).
//! - [`failure`]: why a run failed ([`FailureKind`]) and which failures are deterministic.
//! - [`envelope`]: the `{"v", "body"}` envelope every agent ↔ coordinator message travels in
//!   ([`envelope::encode`], [`envelope::decode`]), and its signed form for what a node says on
//!   its results topic ([`envelope::encode_signed`], [`envelope::decode_signed`]).
//! - [`identity`]: node identity keys ([`NodeIdentity`]), the directory of them both sides keep
//!   ([`KeyDirectory`]), and the messages nodes sign.
//! - [`join`]: enrolment tokens, the request a joining node signs, and what it is granted.
//! - `testkit` (feature `test-util`, off by default): simulated nodes' health reports and
//!   results, for tests and simulations.
//! - [`credits`]: accounts, the ledger, prices and task costs, in µcredits.
//! - [`ApiError`]: the one error body of the REST API and of MQTT rejections.
//!
//! # Features
//!
//! | Feature | Default | What it adds |
//! |---|---|---|
//! | `test-util` | no | `testkit`: a health report builder for simulated nodes and a successful `finished` event, for tests, examples and test nodes |

pub mod credits;
pub mod envelope;
pub mod failure;
pub mod identity;
pub mod join;
pub mod node;
pub mod task;
pub mod templates;
pub mod tensor;
#[cfg(any(test, feature = "test-util"))]
pub mod testkit;
pub mod topics;
pub mod wire;

pub use credits::{NodeCredits, TaskCost};
pub use envelope::DecodeError;
pub use failure::FailureKind;
pub use identity::{KeyDirectory, NodeIdentity, NodeKey};
pub use node::{
    DatasetInfo, GpuInfo, Health, NodeInfo, NodeState, NodeStatus, ReputationEventInfo,
    ReputationEventKind, ReputationInfo, ReputationReport, Temperature,
};
pub use task::{Progress, Requirements, TaskInfo, TaskStatus, TaskSubmission, TaskType};
pub use templates::{RenderedTemplate, TemplateInfo, TemplateParam, TemplateRender};
pub use tensor::{InferenceInputs, InferenceOutput, QuantisedTensor, TensorJson};
pub use wire::{AgentEvent, Assignment, Control, Outcome, TaskResult};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Version of the MQTT message formats. Every agent ↔ coordinator message travels in an
/// [`envelope::Envelope`] that carries it as `v`, and a receiver refuses a message whose version
/// it does not speak ([`DecodeError::Version`]).
pub const PROTOCOL_VERSION: u32 = 1;

/// wasm fuel granted per second of `max_execution_time_sec`. It is part of the protocol, not of a
/// node's configuration, so every replica of a task gets the same budget and a run that exhausts
/// it does so on every node, at the same instruction. It sits well below what wasmi executes per
/// second on a slow node, so fuel, not the wall clock, is what normally ends a runaway module.
pub const FUEL_PER_SECOND: u64 = 250_000_000;

/// The error body of every failed REST call and every MQTT rejection: a stable machine-readable
/// `error` code and a human sentence in `message`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiError {
    /// Stable snake_case code, e.g. `invalid_json`, `unauthorized`, `module_too_large`.
    pub error: String,
    /// What went wrong, for a person.
    pub message: String,
    /// The task the error is about, when there is one (MQTT rejections name the submitter's id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<uuid::Uuid>,
    /// For a refused submission: every field to add or change, all at once (`message` says the
    /// same in sentences). Empty for other errors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<FieldProblem>,
}

impl ApiError {
    /// An error about no task, with no field problems.
    pub fn new(error: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError {
            error: error.into(),
            message: message.into(),
            task_id: None,
            problems: Vec::new(),
        }
    }
}

/// One thing wrong with one field of a submission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldProblem {
    /// The field, as a path in the submitter's body: `inputs.dataset`, `requirements.min_nodes`,
    /// `inputs.tensors.x.shape[1]`.
    pub field: String,
    /// What is wrong with it.
    pub problem: ProblemKind,
    /// What was sent, as compact JSON cut to about 80 characters; absent for a missing field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub got: Option<String>,
    /// What the field must be, for a person: its meaning, type and range.
    pub expected: String,
    /// A value that would do, when the field has one to show.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub example: Option<serde_json::Value>,
}

/// What is wrong with a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// A required field is absent.
    Missing,
    /// The field is not one this kind takes.
    Unknown,
    /// The field has the wrong JSON type.
    WrongType,
    /// The value has the right type but is not allowed (out of range, not one of the choices,
    /// not supported for this kind).
    Invalid,
    /// Fields that exclude each other are both given.
    Conflict,
}

impl ProblemKind {
    /// The snake_case name, as on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemKind::Missing => "missing",
            ProblemKind::Unknown => "unknown",
            ProblemKind::WrongType => "wrong_type",
            ProblemKind::Invalid => "invalid",
            ProblemKind::Conflict => "conflict",
        }
    }
}

/// Lower-case hex sha256 of `bytes`: the content address of modules and the hash results are
/// compared by.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// True for a content address as [`sha256_hex`] writes it: 64 lower-case hex digits.
pub fn is_sha256_hex(s: &str) -> bool {
    is_lower_hex(s, 64)
}

/// True for exactly `len` lower-case hex digits: content addresses and nonces.
pub(crate) fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// True for identifiers that may appear as one topic level: node ids and submitter ids.
///
/// 1–64 characters of `[A-Za-z0-9_-]`, so they can never contain MQTT wildcards or separators.
pub fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(valid_id("node-1"));
        assert!(valid_id("a_B-9"));
        assert!(!valid_id(""));
        assert!(!valid_id("a/b"));
        assert!(!valid_id("+"));
        assert!(!valid_id("#"));
        assert!(!valid_id(&"x".repeat(65)));
    }

    #[test]
    fn sha256_known_vector() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(is_sha256_hex(&sha256_hex(b"abc")));
        assert!(!is_sha256_hex(&sha256_hex(b"abc").to_uppercase()));
        assert!(!is_sha256_hex("abc"));
    }
}
