//! Submission, shared by the REST API and the MQTT submit topic: [`submit`] runs the checks,
//! stores the artifact and hands the task to the engine; each transport only turns the outcome
//! into its own answer (an HTTP status and JSON, or a rejection on the submitter's topic).
//!
//! The checks ([`check`]) are size and JSON depth here, then the body's shape against the
//! OpenAPI document ([`schema::diagnose`], which names every field to add or change at once) and
//! the configured limits, then the checks of the task's kind ([`crate::kinds::check`]) on what
//! the shape cannot say. Every refusal is a [`SubmitError`] with a stable code, an HTTP status
//! and a sentence for the submitter.

pub mod schema;

use ambient_protocol::{ApiError, FieldProblem, ProblemKind, TaskInfo, TaskSubmission};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::artifacts;
use crate::config::Limits;
use crate::credits::CreditRefusal;
use crate::engine::EngineMsg;
use crate::kinds::computation::Reduce;
use crate::store::Store;

/// Why a submission was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SubmitError {
    /// The body is not JSON, or not a valid submission.
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    /// Fields of the body are missing, unknown, of the wrong type or not allowed: every one of
    /// them, with what each must be.
    #[error("{0}")]
    Problems(schema::Problems),
    /// The body is nested deeper than allowed.
    #[error("JSON nested deeper than {max} levels")]
    TooDeep {
        /// The limit.
        max: usize,
    },
    /// The body is larger than allowed.
    #[error("request body is {size} bytes; the limit is {max}")]
    BodyTooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A `wasm_execution` task without a module.
    #[error("wasm_execution needs a wasm_module (base64)")]
    MissingModule,
    /// `wasm_module` is not base64.
    #[error("wasm_module is not valid base64: {0}")]
    InvalidBase64(String),
    /// The decoded module is larger than allowed.
    #[error("wasm module is {size} bytes; the limit is {max}")]
    ModuleTooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The module does not validate as WebAssembly.
    #[error("invalid wasm module: {0}")]
    InvalidWasm(String),
    /// The task's inputs do not fit its type.
    #[error("invalid inputs: {0}")]
    InvalidInputs(String),
    /// `require_proof` on a model the circuits cannot express: the operators missing, or the
    /// attribute, shape or size that no circuit covers.
    #[error("this model cannot be proved: {0}")]
    ProofUnsupported(String),
    /// An inference task references a model the blob store does not have.
    #[error("no model {0} in the blob store; upload it with PUT /api/v1/blobs")]
    UnknownModel(String),
    /// A requirement is out of range.
    #[error("invalid requirements: {0}")]
    InvalidRequirements(String),
    /// The submitter-chosen task id belongs to someone else.
    #[error("task id {0} is already taken")]
    IdTaken(uuid::Uuid),
    /// An MQTT submission on the topic of a submitter id that has no API key (the broker lets
    /// every account publish on its own `submit/{username}`, nodes included).
    #[error("{0:?} is not a submitter of this coordinator")]
    UnknownSubmitter(String),
    /// The submitter's credits cannot pay for the task, or its account is at a limit.
    #[error(transparent)]
    Credits(#[from] CreditRefusal),
    /// The coordinator could not persist the task; nothing was accepted.
    #[error("the coordinator cannot accept tasks right now: {0}")]
    Unavailable(String),
}

impl SubmitError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            SubmitError::InvalidJson(_) => "invalid_json",
            SubmitError::Problems(p) => p.code(),
            SubmitError::TooDeep { .. } => "json_too_deep",
            SubmitError::BodyTooLarge { .. } => "payload_too_large",
            SubmitError::MissingModule => "missing_module",
            SubmitError::InvalidBase64(_) => "invalid_base64",
            SubmitError::ModuleTooLarge { .. } => "module_too_large",
            SubmitError::InvalidWasm(_) => "invalid_wasm",
            SubmitError::InvalidRequirements(_) => "invalid_requirements",
            SubmitError::InvalidInputs(_) => "invalid_inputs",
            SubmitError::UnknownModel(_) => "unknown_model",
            SubmitError::ProofUnsupported(_) => "proof_unsupported",
            SubmitError::IdTaken(_) => "task_id_taken",
            SubmitError::Unavailable(_) => "unavailable",
            SubmitError::UnknownSubmitter(_) => "unknown_submitter",
            SubmitError::Credits(CreditRefusal::Insufficient { .. }) => "insufficient_credits",
            SubmitError::Credits(CreditRefusal::SpendingCap { .. }) => "spending_cap",
            SubmitError::Credits(CreditRefusal::InFlight { .. }) => "too_many_tasks",
            SubmitError::Credits(CreditRefusal::RateLimited { .. }) => "rate_limited",
        }
    }

    /// The HTTP status that goes with it.
    pub fn http_status(&self) -> u16 {
        match self {
            SubmitError::BodyTooLarge { .. } | SubmitError::ModuleTooLarge { .. } => 413,
            SubmitError::IdTaken(_) => 409,
            SubmitError::Unavailable(_) => 503,
            SubmitError::UnknownSubmitter(_) => 403,
            SubmitError::ProofUnsupported(_) => 422,
            SubmitError::Problems(p) => p.http_status(),
            SubmitError::Credits(
                CreditRefusal::InFlight { .. } | CreditRefusal::RateLimited { .. },
            ) => 429,
            SubmitError::Credits(_) => 402,
            _ => 400,
        }
    }

    /// Seconds a client should wait before trying again, for a refusal that passes by itself.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            SubmitError::Credits(CreditRefusal::RateLimited { retry_after, .. }) => {
                Some(*retry_after)
            }
            SubmitError::Credits(CreditRefusal::InFlight { .. }) => Some(5),
            _ => None,
        }
    }

    /// The wire form.
    pub fn to_api_error(&self, task_id: Option<uuid::Uuid>) -> ApiError {
        ApiError {
            task_id,
            problems: match self {
                SubmitError::Problems(p) => p.list.clone(),
                _ => Vec::new(),
            },
            ..ApiError::new(self.code(), self.to_string())
        }
    }
}

/// A submission that passed every check, with its artifact decoded. Once the artifact is stored
/// ([`prepare`]) it travels as JSON between coordinators (a follower hands it to the leader), the
/// artifact by its sha256 only.
#[derive(Debug, Serialize, Deserialize)]
pub struct Accepted {
    /// The submission. Inline artifacts are moved out: its `wasm_module` is cleared, and an
    /// inference task's `model_base64` is replaced by `model_sha256`.
    pub submission: TaskSubmission,
    /// `(sha256, bytes)` of an inline artifact (wasm module, kernel or model) to store.
    #[serde(skip)]
    pub artifact: Option<(String, Vec<u8>)>,
    /// An artifact the task references by sha256, which must already be in the blob store.
    pub artifact_ref: Option<String>,
    /// For `computation`: the shard inputs and the reducer.
    pub shards: Option<(Vec<serde_json::Value>, Reduce)>,
    /// For `federated_learning` with an `eval_csv`: its number of feature columns, read here on
    /// the blocking pool so that the engine only compares it with the holders' counts.
    pub eval_features: Option<usize>,
}

/// Why [`submit`] made no task.
#[derive(Debug, thiserror::Error)]
pub enum SubmitFailure {
    /// The checks refused the body; nothing was stored.
    #[error(transparent)]
    Invalid(SubmitError),
    /// A submission that passed the checks was refused afterwards: its artifact could not be
    /// stored or is unknown, or the engine refused it (its task id is taken, say).
    #[error("{error}")]
    Refused {
        /// Why.
        error: SubmitError,
        /// The submitter-chosen task id, if it gave one.
        task_id: Option<uuid::Uuid>,
    },
    /// The engine is gone: the coordinator is shutting down.
    #[error("the coordinator is shutting down")]
    ShuttingDown,
}

/// Submits a raw body as `submitter`'s task: [`prepare`], then [`hand`] to the engine.
pub async fn submit(
    engine: &mpsc::Sender<EngineMsg>,
    store: &Store,
    limits: &Limits,
    submitter: String,
    body: impl AsRef<[u8]> + Send + 'static,
) -> Result<TaskInfo, SubmitFailure> {
    let accepted = prepare(store, limits, body).await?;
    hand(engine, submitter, accepted).await
}

/// The part of a submission any coordinator does: checks the body on the blocking pool
/// (decoding and validating a module of several MiB is CPU work) and stores its artifact, which
/// the result then names by sha256 only.
pub async fn prepare(
    store: &Store,
    limits: &Limits,
    body: impl AsRef<[u8]> + Send + 'static,
) -> Result<Accepted, SubmitFailure> {
    let limits = limits.clone();
    let mut accepted = tokio::task::spawn_blocking(move || check(body.as_ref(), &limits))
        .await
        .map_err(|e| {
            SubmitFailure::Invalid(SubmitError::Unavailable(format!(
                "the submission check failed: {e}"
            )))
        })?
        .map_err(SubmitFailure::Invalid)?;
    let task_id = accepted.submission.task_id;
    crate::kinds::check_stored(store, &accepted)
        .await
        .map_err(SubmitFailure::Invalid)?;
    artifacts::store_submitted(store, &accepted)
        .await
        .map_err(|error| SubmitFailure::Refused { error, task_id })?;
    if let Some((sha, _)) = accepted.artifact.take() {
        accepted.artifact_ref = Some(sha);
    }
    Ok(accepted)
}

/// Hands a prepared submission to the engine, which answers with the new task (or the existing
/// one, for a repeated task id).
pub async fn hand(
    engine: &mpsc::Sender<EngineMsg>,
    submitter: String,
    accepted: Accepted,
) -> Result<TaskInfo, SubmitFailure> {
    let task_id = accepted.submission.task_id;
    let refused = |error| SubmitFailure::Refused { error, task_id };
    let (reply, rx) = oneshot::channel();
    let msg = EngineMsg::Submit {
        submitter,
        accepted,
        reply: Some(reply),
    };
    engine
        .send(msg)
        .await
        .map_err(|_| SubmitFailure::ShuttingDown)?;
    rx.await
        .map_err(|_| SubmitFailure::ShuttingDown)?
        .map_err(refused)
}

/// Checks a raw submission body.
pub fn check(body: &[u8], limits: &Limits) -> Result<Accepted, SubmitError> {
    if body.len() > limits.max_body_bytes {
        return Err(SubmitError::BodyTooLarge {
            size: body.len(),
            max: limits.max_body_bytes,
        });
    }
    if json_depth(body) > limits.max_json_depth {
        return Err(SubmitError::TooDeep {
            max: limits.max_json_depth,
        });
    }
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| SubmitError::InvalidJson(json_error(body, &e)))?;
    let mut problems = schema::diagnose(&value);
    problems.add(limit_problems(&value, limits));
    // The circuits zk_proof serves are the zk module's to say, not the document's.
    for p in &mut problems.list {
        if p.field == "requirements.require_proof" {
            p.expected.push_str(&format!(
                " zk_proof's circuits: {}.",
                crate::kinds::zk::supported_list()
            ));
        }
    }
    if !problems.is_empty() {
        return Err(SubmitError::Problems(problems));
    }
    // The shape is right, so this parses; were the document and the types ever to disagree,
    // serde's sentence is still an answer.
    let submission: TaskSubmission =
        serde_json::from_value(value).map_err(|e| SubmitError::InvalidJson(e.to_string()))?;
    let mut accepted = Accepted {
        artifact: None,
        artifact_ref: None,
        shards: None,
        eval_features: None,
        submission,
    };
    crate::kinds::check(&mut accepted, limits)?;
    accepted.submission.wasm_module = None;
    Ok(accepted)
}

/// Decodes an inline artifact, refusing one larger than `max` bytes.
pub(crate) fn decode(b64: &str, max: usize) -> Result<Vec<u8>, SubmitError> {
    // base64 is 4/3 of the bytes: refuse early without decoding a huge string.
    if b64.len() / 4 * 3 > max + 3 {
        return Err(SubmitError::ModuleTooLarge {
            size: b64.len() / 4 * 3,
            max,
        });
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|e| SubmitError::InvalidBase64(e.to_string()))?;
    if bytes.len() > max {
        return Err(SubmitError::ModuleTooLarge {
            size: bytes.len(),
            max,
        });
    }
    Ok(bytes)
}

/// The requirements beyond this coordinator's limits, which the OpenAPI document cannot state.
fn limit_problems(body: &serde_json::Value, limits: &Limits) -> Vec<FieldProblem> {
    let over = |field: &str, max: u64, what: &str| {
        let v = body.pointer(&format!("/requirements/{field}"))?.as_u64()?;
        (v > max).then(|| FieldProblem {
            field: format!("requirements.{field}"),
            problem: ProblemKind::Invalid,
            got: Some(v.to_string()),
            expected: format!("an integer from 1 to {max}: {what} (this coordinator's limit)"),
            example: Some(max.into()),
        })
    };
    [
        over(
            "min_nodes",
            u64::from(limits.max_min_nodes),
            "the distinct nodes that run the task",
        ),
        over(
            "max_execution_time_sec",
            limits.max_execution_time_sec,
            "seconds one run may take",
        ),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// serde's sentence about a body that is not JSON, with the text where it stopped, and a word
/// about a `...` placeholder copied from an example.
fn json_error(body: &[u8], e: &serde_json::Error) -> String {
    let text = String::from_utf8_lossy(body);
    let Some(line) = text.lines().nth(e.line().saturating_sub(1)) else {
        return e.to_string();
    };
    // serde's column counts bytes; 30 bytes either side, widened to whole characters.
    let col = e.column().saturating_sub(1).min(line.len());
    let mut from = col.saturating_sub(30);
    while !line.is_char_boundary(from) {
        from -= 1;
    }
    let mut to = (col + 30).min(line.len());
    while !line.is_char_boundary(to) {
        to += 1;
    }
    let near = &line[from..to];
    let mut msg = format!("{e}, here: `{}`", near.trim());
    if near.contains("...") || near.contains('…') {
        msg.push_str(
            "; `...` is a placeholder from an example, not JSON: write the value itself (an \
             object, array, string or number)",
        );
    }
    msg
}

/// Deepest nesting of arrays and objects in `body`, found without parsing it (so a hostile body
/// cannot exhaust the parser's stack before the limit applies).
pub fn json_depth(body: &[u8]) -> usize {
    let (mut depth, mut max, mut in_str, mut escaped) = (0usize, 0usize, false, false);
    for &b in body {
        if in_str {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn module_b64() -> String {
        let wasm = wat::parse_str(r#"(module (func (export "_start")))"#).unwrap();
        base64::engine::general_purpose::STANDARD.encode(wasm)
    }

    fn body(v: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn accepts_a_valid_wasm_task() {
        let ok = check(
            &body(json!({"task_type": "wasm_execution", "wasm_module": module_b64(), "inputs": {"n": 3}})),
            &Limits::default(),
        )
        .unwrap();
        assert!(ok.submission.wasm_module.is_none());
        let (sha, bytes) = ok.artifact.unwrap();
        assert_eq!(sha, ambient_protocol::sha256_hex(&bytes));
    }

    #[test]
    fn refusals_are_typed() {
        let l = Limits::default();
        let code = |v: serde_json::Value| check(&body(v), &l).unwrap_err().code();
        assert_eq!(check(b"{not json", &l).unwrap_err().code(), "invalid_json");
        assert_eq!(code(json!({"task_type": "mining"})), "unknown_task_type");
        assert_eq!(
            code(json!({"task_type": "federated_learning"})),
            "invalid_inputs"
        );
        // A budget no σ can meet is refused at submission, with the reason.
        let err = check(
            &body(json!({"task_type": "federated_learning",
                         "inputs": {"dataset": "d", "epsilon": 1e-6, "rounds": 1000},
                         "requirements": {"min_nodes": 3}})),
            &l,
        )
        .unwrap_err();
        assert_eq!(err.code(), "invalid_inputs");
        assert!(
            err.to_string().contains("privacy budget cannot be met"),
            "{err}"
        );
        assert_eq!(
            code(json!({"task_type": "federated_learning",
                        "inputs": {"dataset": "d"}, "requirements": {"min_nodes": 1}})),
            "invalid_inputs"
        );
        assert_eq!(code(json!({"task_type": "zk_proof"})), "invalid_inputs");
        let (_, max) = ambient_zk::CircuitId::HashChain.size_range();
        assert_eq!(
            code(json!({"task_type": "zk_proof",
                        "inputs": {"circuit": "hash_chain", "x": "7", "n": max + 1}})),
            "invalid_inputs"
        );
        assert_eq!(
            code(json!({"task_type": "zk_proof",
                        "inputs": {"circuit": "hash_chain", "x": "7", "n": 64},
                        "requirements": {"min_nodes": 2}})),
            "invalid_requirements"
        );
        let ok = check(
            &body(json!({"task_type": "zk_proof",
                         "inputs": {"circuit": "hash_chain", "x": "7", "n": 64}})),
            &l,
        )
        .unwrap();
        assert!(ok.submission.requirements.require_proof);
        assert!(ok.artifact.is_none() && ok.artifact_ref.is_none());
        assert_eq!(code(json!({"task_type": "inference"})), "invalid_inputs");
        assert_eq!(
            code(
                json!({"task_type": "inference", "inputs": {"model_sha256": "ab", "tensors": {}}})
            ),
            "invalid_inputs"
        );
        assert_eq!(
            code(
                json!({"task_type": "computation", "inputs": {"kernel_base64": module_b64(),
                        "range": {"start": 0, "end": 10, "shards": 2}, "reduce": "median"}})
            ),
            "invalid_inputs"
        );
        assert_eq!(
            code(json!({"task_type": "wasm_execution"})),
            "missing_module"
        );
        assert_eq!(
            code(json!({"task_type": "wasm_execution", "wasm_module": "!!"})),
            "invalid_base64"
        );
        assert_eq!(
            code(json!({"task_type": "wasm_execution", "wasm_module": "AAAA"})),
            "invalid_wasm"
        );
        assert_eq!(
            code(
                json!({"task_type": "wasm_execution", "wasm_module": module_b64(),
                        "requirements": {"min_nodes": 0}})
            ),
            "invalid_requirements"
        );
        assert_eq!(
            code(
                json!({"task_type": "wasm_execution", "wasm_module": module_b64(),
                        "requirements": {"require_proof": true}})
            ),
            "proof_unsupported"
        );
        let big = base64::engine::general_purpose::STANDARD.encode(vec![0u8; (4 << 20) + 10]);
        let err = check(
            &body(json!({"task_type": "wasm_execution", "wasm_module": big})),
            &Limits {
                max_body_bytes: 64 << 20,
                ..l.clone()
            },
        )
        .unwrap_err();
        assert_eq!(err.code(), "module_too_large");
        assert_eq!(err.http_status(), 413);
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert_eq!(
            check(deep.as_bytes(), &l).unwrap_err().code(),
            "json_too_deep"
        );
    }

    /// `server_lr` past f32's range parses as infinity; it is refused at submission like any
    /// other bad hyper-parameter.
    #[test]
    fn non_finite_learning_rates_are_refused() {
        let l = Limits::default();
        let fl = |server_lr: serde_json::Value| {
            check(
                &body(json!({"task_type": "federated_learning",
                             "inputs": {"dataset": "d", "server_lr": server_lr},
                             "requirements": {"min_nodes": 3}})),
                &l,
            )
        };
        assert!(fl(json!(0.5)).is_ok());
        for bad in [json!(1e39), json!(-1e39), json!(0.0), json!(-0.5)] {
            let err = fl(bad.clone()).unwrap_err();
            assert_eq!(err.code(), "invalid_inputs", "server_lr = {bad}");
            assert_eq!(err.http_status(), 400);
            assert!(err.to_string().contains("server_lr"), "{err}");
        }
    }

    #[test]
    fn depth_ignores_brackets_in_strings() {
        assert_eq!(json_depth(br#"{"a": "[[[[\"{{{"}"#), 1);
        assert_eq!(json_depth(br#"{"a": [{"b": []}]}"#), 4);
    }
}
