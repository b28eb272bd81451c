//! `/api/v1/proofs` and `/api/v1/circuits`: verified proofs of `zk_proof` tasks and proved
//! `inference` tasks, checks of proofs against public inputs, and the circuits with their size
//! ranges and the sizes whose keys exist. Keys are read from the store (any coordinator of it
//! serves these), never made here. The JSON of proofs is [`crate::kinds::groth16`]'s, of
//! circuits [`crate::kinds::zk`]'s.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Deserialize;
use uuid::Uuid;

use super::auth::Submitter;
use super::{AppState, Failure};
use crate::kinds::groth16::{self, Subject};
use crate::kinds::inference::{self, ModelKeys};
use crate::kinds::zk::{self, Circuit};

pub(super) async fn get_proof(
    State(state): State<AppState>,
    Extension(Submitter(submitter)): Extension<Submitter>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, Failure> {
    let not_found = |id: &str| {
        Failure::new(
            StatusCode::NOT_FOUND,
            "proof_not_found",
            format!("no proof {id} for this API key"),
        )
    };
    let Ok(id) = Uuid::parse_str(&id) else {
        return Err(not_found(&id));
    };
    let Some(p) = state.store.proof(id).await.map_err(Failure::store)? else {
        return Err(not_found(&id.to_string()));
    };
    // A proof is visible to whoever may see its task.
    match state.store.task(p.task_id).await.map_err(Failure::store)? {
        Some(t) if t.submitter == submitter => {}
        _ => return Err(not_found(&id.to_string())),
    }
    let vk = match p.circuit.parse::<Subject>() {
        Ok(Subject::Model(id)) => state
            .zk
            .model(&id)
            .await
            .map_err(keys_failure)?
            .map(|m| m.vk.clone()),
        // A zk_proof record names the circuit alone, its size apart.
        _ => match ambient_zk::CircuitId::parse(&p.circuit)
            .and_then(|c| ambient_zk::CircuitSpec::new(c, p.size as usize))
        {
            Ok(spec) => state
                .zk
                .circuit(&spec)
                .await
                .map_err(keys_failure)?
                .map(|c| c.vk.clone()),
            Err(_) => None,
        },
    };
    groth16::proof_json(&p, vk.as_ref())
        .map(Json)
        .map_err(|e| Failure::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))
}

/// A proof to check: a circuit instance's (`circuit` and `n`), or a proved model's
/// (`model_sha256`), with its public inputs as exported.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct VerifyRequest {
    circuit: Option<String>,
    n: Option<usize>,
    model_sha256: Option<String>,
    public_inputs: Vec<String>,
    proof: String,
}

/// A proof check asked for: keys and the public inputs given.
enum Check {
    Circuit(Arc<Circuit>, ambient_zk::PublicInputs),
    Model(Arc<ModelKeys>, Vec<ambient_zk::Fr>),
}

impl Check {
    /// Whether `proof` verifies (a malformed input count or key is simply not valid). Blocking.
    fn verify(&self, proof: &ambient_zk::Proof<ambient_zk::Bn254>) -> bool {
        match self {
            Check::Circuit(c, public) => c.verifier.verify(public, proof),
            Check::Model(m, public) => m.verifier.verify_public(public, proof),
        }
        .unwrap_or(false)
    }
}

pub(super) async fn verify_proof(
    State(state): State<AppState>,
    body: Result<Json<VerifyRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<serde_json::Value>, Failure> {
    use base64::Engine as _;
    let bad = |m: String| Failure::new(StatusCode::BAD_REQUEST, "invalid_request", m);
    let no_keys = |m: String| Failure::new(StatusCode::BAD_REQUEST, "unsupported_circuit", m);
    let Json(req) = body.map_err(|e| bad(e.body_text()))?;
    let fields: Vec<ambient_zk::Fr> = req
        .public_inputs
        .iter()
        .map(|s| zk::parse_field(s))
        .collect::<Result<_, _>>()
        .map_err(bad)?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(req.proof.trim())
        .map_err(|e| bad(format!("proof is not base64: {e}")))?;
    let check = match (req.circuit, req.n, req.model_sha256) {
        (Some(circuit), Some(n), None) => {
            let spec = ambient_zk::CircuitId::parse(&circuit)
                .and_then(|c| ambient_zk::CircuitSpec::new(c, n))
                .map_err(|e| bad(e.to_string()))?;
            let Some(circuit) = state.zk.circuit(&spec).await.map_err(keys_failure)? else {
                return Err(no_keys(format!(
                    "no keys for {} yet: a size's keys are made for its first zk_proof task",
                    zk::describe(&spec)
                )));
            };
            let [task_binding, input_commitment, output_commitment] = fields[..] else {
                return Err(bad(format!(
                    "public_inputs has {} elements; every circuit takes 3",
                    fields.len()
                )));
            };
            let public = ambient_zk::PublicInputs {
                task_binding,
                input_commitment,
                output_commitment,
            };
            Check::Circuit(circuit, public)
        }
        (None, None, Some(sha256)) => {
            let id =
                inference::model_id(&serde_json::json!({"model_sha256": sha256})).map_err(bad)?;
            let Some(model) = state.zk.model(&id).await.map_err(keys_failure)? else {
                return Err(no_keys(format!(
                    "no keys for {} yet: a model's keys are made for its first inference \
                         task with require_proof",
                    Subject::Model(id).describe()
                )));
            };
            let want = ambient_zk::nn::num_public_inputs(model.verifier.program());
            if fields.len() != want {
                return Err(bad(format!(
                    "public_inputs has {} elements; this model's circuit takes {want}",
                    fields.len()
                )));
            }
            Check::Model(model, fields)
        }
        _ => {
            return Err(bad(
                "give either circuit and n, or model_sha256 (a proved inference's model)".into(),
            ));
        }
    };
    // A proof that does not decode to curve points is simply not valid.
    let Ok(proof) = ambient_zk::proof_from_bytes(&bytes) else {
        return Ok(Json(serde_json::json!({"valid": false})));
    };
    let valid = tokio::task::spawn_blocking(move || check.verify(&proof))
        .await
        .map_err(|_| Failure::unavailable())?;
    Ok(Json(serde_json::json!({"valid": valid})))
}

/// Every circuit with its size range, and the sizes whose keys exist (those the store names,
/// whichever coordinator made them).
pub(super) async fn list_circuits(
    State(state): State<AppState>,
) -> Result<Json<serde_json::Value>, Failure> {
    let instances = state.zk.instances().await.map_err(keys_failure)?;
    Ok(Json(zk::circuits_json(&instances)))
}

/// Keys the store names but that cannot be read.
fn keys_failure(e: groth16::KeysError) -> Failure {
    tracing::error!(error = %e, "Could not load Groth16 keys.");
    Failure::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
}
