//! `inference` tasks: an ONNX model, inline or by reference to the blob store, run on one node.

use ambient_protocol::InferenceInputs;

use crate::config::Limits;
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
