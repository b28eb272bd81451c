//! `inference` tasks: an ONNX model, inline or by reference to the blob store, run on one node.
//!
//! With `require_proof` the model must compile into a fixed-point circuit
//! ([`ambient_zk::nn::onnx::compile`], at [`nn::DEFAULT_FRAC_BITS`]); its Groth16 keys are made
//! once per model ([`super::groth16`], subject `onnx-<sha256>-f12`) and are the task's artifact.
//! The node proves the program's output on the quantised input instead of running tract, and
//! the coordinator checks the proof ([`ModelKeys::verify_result`]) before it accepts the result,
//! which then carries the quantised output, its real values, the model's commitment and the
//! a priori error bound.

use ambient_protocol::{InferenceInputs, InferenceOutput, TaskType, TensorJson};
use ambient_zk::nn::{self, Program, ProgramVerifier};
use ambient_zk::{Bn254, VerifyingKey, ZkError};
use serde_json::Value;
use uuid::Uuid;

use super::groth16::{ModelId, ProofError, Subject, Verified, claimed_proof};
use crate::config::Limits;
use crate::store::Store;
use crate::submission::{Accepted, SubmitError, decode};

/// Checks an `inference` submission beyond its shape (which `submission::schema` checked: one
/// node, exactly one of the model fields, at least one tensor). An inline model moves into the
/// blob store: the task keeps only its `model_sha256`.
pub(crate) fn check(accepted: &mut Accepted, limits: &Limits) -> Result<(), SubmitError> {
    let submission = &accepted.submission;
    let mut inputs: InferenceInputs = serde_json::from_value(submission.inputs.clone())
        .map_err(|e| SubmitError::InvalidInputs(format!("inference inputs: {e}")))?;
    match (inputs.model_base64.take(), inputs.model_sha256.take()) {
        (Some(b64), None) => {
            let bytes = decode(&b64, limits.max_model_bytes)?;
            let sha = ambient_protocol::sha256_hex(&bytes);
            inputs.model_sha256 = Some(sha.clone());
            accepted.artifact = Some((sha, bytes));
        }
        (None, Some(sha)) => {
            let sha = sha.to_ascii_lowercase();
            if !ambient_protocol::is_sha256_hex(&sha) {
                return Err(SubmitError::InvalidInputs(
                    "model_sha256 must be 64 hex digits".into(),
                ));
            }
            inputs.model_sha256 = Some(sha.clone());
            accepted.artifact_ref = Some(sha);
        }
        _ => {
            return Err(SubmitError::InvalidInputs(
                "give exactly one of model_sha256 and model_base64".into(),
            ));
        }
    }
    for (name, t) in &inputs.tensors {
        t.check_len(name).map_err(SubmitError::InvalidInputs)?;
    }
    accepted.submission.inputs =
        serde_json::to_value(&inputs).map_err(|e| SubmitError::InvalidInputs(e.to_string()))?;
    Ok(())
}

/// The model a proved `inference` task runs: its `model_sha256` (set at submission), at the
/// default scale.
pub fn model_id(inputs: &Value) -> Result<ModelId, String> {
    let sha256 = inputs
        .get("model_sha256")
        .and_then(Value::as_str)
        .filter(|s| ambient_protocol::is_sha256_hex(s))
        .ok_or("inference: the task names no model_sha256")?;
    Ok(ModelId {
        sha256: sha256.to_owned(),
        frac_bits: nn::DEFAULT_FRAC_BITS,
    })
}

/// Why a model cannot be proved, or its input not quantised, at submission.
fn unprovable(e: impl std::fmt::Display) -> SubmitError {
    SubmitError::ProofUnsupported(e.to_string())
}

/// With `require_proof`: compiles the model (inline, or from the blob store) into its
/// fixed-point program and quantises the input, so that a model the circuits cannot express is
/// refused now, `422 proof_unsupported` naming every missing operator, and an input that does
/// not fit it `400 invalid_inputs`. The engine's keyring compiles it again when it makes or
/// loads the keys (compiling is deterministic and takes milliseconds). Runs before the artifact
/// is stored.
pub(crate) async fn check_provable(store: &Store, accepted: &Accepted) -> Result<(), SubmitError> {
    let submission = &accepted.submission;
    if submission.task_type != TaskType::Inference || !submission.requirements.require_proof {
        return Ok(());
    }
    let bytes = match (&accepted.artifact, &accepted.artifact_ref) {
        (Some((_, bytes)), _) => bytes.clone(),
        (None, Some(sha)) => store
            .blob(sha.clone())
            .await
            .map_err(|e| SubmitError::Unavailable(e.to_string()))?
            .ok_or_else(|| SubmitError::UnknownModel(sha.clone()))?,
        (None, None) => return Err(SubmitError::InvalidInputs("no model".into())),
    };
    let inputs: InferenceInputs = serde_json::from_value(submission.inputs.clone())
        .map_err(|e| SubmitError::InvalidInputs(format!("inference inputs: {e}")))?;
    tokio::task::spawn_blocking(move || {
        let program = nn::onnx::compile(&bytes, nn::DEFAULT_FRAC_BITS).map_err(unprovable)?;
        program.constraints().map_err(unprovable)?;
        nn::quantise_input(&program, inputs.views())
            .map_err(|e| SubmitError::InvalidInputs(e.to_string()))?;
        Ok(())
    })
    .await
    .map_err(|e| SubmitError::Unavailable(format!("the proof check failed: {e}")))?
}

/// A model's keys, ready: its program's verifier, and what a result reports beside it.
pub struct ModelKeys {
    /// The model.
    pub id: ModelId,
    /// Its verifying key.
    pub vk: VerifyingKey<Bn254>,
    /// The program, checked, with its commitment and the prepared key.
    pub verifier: ProgramVerifier,
    /// [`nn::error_bound`] of the program.
    pub error_bound: Option<f64>,
    /// The circuit's constraints.
    pub constraints: usize,
    /// sha256 of the compressed proving key in the blob store (the task artifact).
    pub pk_sha256: String,
    /// Size of the compressed proving key in bytes.
    pub pk_bytes: usize,
}

impl ModelKeys {
    /// The keys `vk` (and the proving key's blob) of `program`, compiled from `id`.
    pub fn new(
        id: ModelId,
        program: &Program,
        vk: VerifyingKey<Bn254>,
        pk_sha256: String,
        pk_bytes: usize,
    ) -> Result<ModelKeys, ZkError> {
        Ok(ModelKeys {
            verifier: ProgramVerifier::new(&vk, program)?,
            error_bound: nn::error_bound(program)?,
            constraints: program.constraints()?,
            id,
            vk,
            pk_sha256,
            pk_bytes,
        })
    }

    /// Checks a node's successful result of the task `task_id` with `inputs`: the proof must
    /// show that the program maps the task's input, quantised here, to the claimed
    /// `quantised` output. Blocking (a multi-scalar multiplication and a few pairings).
    pub fn verify_result(
        &self,
        task_id: Uuid,
        inputs: &Value,
        output: &Value,
    ) -> Result<Verified, ProofError> {
        let program = self.verifier.program();
        let inputs: InferenceInputs = serde_json::from_value(inputs.clone())
            .map_err(|e| ProofError::TaskInputs(e.to_string()))?;
        let input = nn::quantise_input(program, inputs.views())
            .map_err(|e| ProofError::TaskInputs(e.to_string()))?;
        let claimed: InferenceOutput = serde_json::from_value(output.clone())
            .map_err(|e| ProofError::Output(e.to_string()))?;
        let quantised = claimed
            .quantised
            .ok_or_else(|| ProofError::Output("no quantised output".into()))?;
        if quantised.frac_bits != program.frac_bits || quantised.shape != program.output.shape {
            return Err(ProofError::Output(format!(
                "the quantised output is {:?} at 2^-{}; the model makes {:?} at 2^-{}",
                quantised.shape, quantised.frac_bits, program.output.shape, program.frac_bits
            )));
        }
        let (proof_bytes, proof) = claimed_proof(output)?;
        let public = nn::public_inputs(program, task_id.as_bytes(), &input, &quantised.data)
            .map_err(ProofError::Zk)?;
        match self.verifier.verify_public(&public, &proof) {
            Ok(true) => {}
            Ok(false) => {
                return Err(ProofError::Invalid(
                    Subject::Model(self.id.clone()).describe(),
                ));
            }
            Err(e) => return Err(ProofError::Zk(e)),
        }
        let f = program.frac_bits;
        let real = TensorJson {
            dtype: "float32".into(),
            shape: quantised.shape.clone(),
            data: quantised
                .data
                .iter()
                .map(|&q| nn::dequantise(q, f))
                .collect(),
        };
        let mut annotations = serde_json::Map::new();
        annotations.insert(
            "outputs".into(),
            serde_json::json!({ program.output.name.clone(): real }),
        );
        annotations.insert(
            "model_commitment".into(),
            ambient_zk::public_inputs_decimal(&[self.verifier.commitment()])
                .remove(0)
                .into(),
        );
        annotations.insert("error_bound".into(), serde_json::json!(self.error_bound));
        annotations.insert("constraints".into(), self.constraints.into());
        Ok(Verified {
            name: Subject::Model(self.id.clone()).to_string(),
            size: self.constraints as u64,
            public,
            proof: proof_bytes,
            statement: serde_json::to_string(&quantised.data).unwrap_or_default(),
            annotations,
        })
    }
}
