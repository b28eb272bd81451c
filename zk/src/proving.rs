//! Proving and verifying a task's result.

use ark_bn254::{Bn254, Fr};
use ark_groth16::{Groth16, Proof, VerifyingKey};
use ark_relations::gr1cs::ConstraintSynthesizer;
use ark_snark::SNARK;

use crate::circuits::{
    Circuit, CircuitSpec, Inputs, Output, PublicInputs, compute_output, input_elements,
    output_elements,
};
use crate::error::ZkError;
use crate::keys::{Keys, PreparedVerifier};
use crate::mimc;

/// The public inputs a verifier expects for a task: recomputed from the task id, the task's
/// own inputs and the output the node claims.
///
/// A proof made for another task, other inputs or another output does not verify against
/// these, which is the whole point: the coordinator never takes public inputs from the node.
pub fn public_inputs_for(
    spec: &CircuitSpec,
    task_id: &[u8],
    inputs: &Inputs,
    claimed_output: &Output,
) -> Result<PublicInputs, ZkError> {
    Ok(PublicInputs {
        task_binding: mimc::task_binding(task_id),
        input_commitment: mimc::hash(&input_elements(spec, inputs)?),
        output_commitment: mimc::hash(&output_elements(spec, claimed_output)?),
    })
}

/// The circuit of `spec` with its witness for a task: what [`prove`] hands to ark-groth16,
/// public for benchmarks and other SNARK backends. Returns it with the public inputs and the
/// output, computed natively.
pub fn witness_circuit(
    spec: &CircuitSpec,
    task_id: &[u8],
    inputs: &Inputs,
) -> Result<(impl ConstraintSynthesizer<Fr> + Clone, PublicInputs, Output), ZkError> {
    let output = compute_output(spec, inputs)?;
    let public = public_inputs_for(spec, task_id, inputs, &output)?;
    let elements: Vec<Fr> = input_elements(spec, inputs)?;
    let circuit = Circuit {
        spec: *spec,
        assignment: Some((public, elements)),
    };
    Ok((circuit, public, output))
}

/// Computes the output natively, builds the witness and proves it with `keys`.
///
/// `task_id` is the 16 raw bytes of the task's UUID. The proof is checked against the
/// keys' own verifying key before it is returned. CPU-heavy (seconds): call it from a
/// blocking thread, never on an async worker.
pub fn prove(
    keys: &Keys,
    spec: &CircuitSpec,
    task_id: &[u8],
    inputs: &Inputs,
) -> Result<(Proof<Bn254>, PublicInputs, Output), ZkError> {
    if keys.spec != *spec {
        return Err(ZkError::KeyMismatch {
            circuit: spec.to_string(),
            reason: format!("the keys were made for {}", keys.spec),
        });
    }
    let (circuit, public, output) = witness_circuit(spec, task_id, inputs)?;
    let proof = Groth16::<Bn254>::prove(&keys.proving_key, circuit, &mut rand_core::OsRng)?;
    if !verify(&keys.verifying_key, spec, &public, &proof)? {
        return Err(ZkError::SelfCheckFailed);
    }
    Ok((proof, public, output))
}

/// Verifies `proof` for `spec` against `public` (from [`public_inputs_for`], never from the
/// prover). `Ok(false)` means the proof is invalid; `Err` means the key is unusable.
///
/// `spec` only names the circuit in errors: a verifying key does not record which circuit
/// it belongs to, so the caller must pick the key for `spec`.
pub fn verify(
    vk: &VerifyingKey<Bn254>,
    spec: &CircuitSpec,
    public: &PublicInputs,
    proof: &Proof<Bn254>,
) -> Result<bool, ZkError> {
    let verifier = PreparedVerifier::new(vk).map_err(|e| match e {
        ZkError::KeyMismatch { reason, .. } => ZkError::KeyMismatch {
            circuit: spec.to_string(),
            reason,
        },
        other => other,
    })?;
    verifier.verify(public, proof)
}
