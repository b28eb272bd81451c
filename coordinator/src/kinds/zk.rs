//! `zk_proof` tasks: the circuits this coordinator runs, submission checks, the check of a
//! node's claimed output and proof, and the API's JSON of circuits.
//!
//! A task may ask for any size in its circuit's range ([`CircuitId::size_range`]). The keys of
//! one `(circuit, size)` are made on the first task of that size ([`super::groth16`], which
//! keeps the keys of every subject that proves, models too). The coordinator never takes
//! public inputs from a node: it recomputes them from the task id, the task's inputs and the
//! claimed output ([`ambient_zk::public_inputs_for`]).

use std::sync::Arc;

use ambient_zk::{
    Bn254, CircuitId, CircuitSpec, Inputs, Output, PreparedVerifier, VerifyingKey, ZkError,
};
use serde_json::Value;
use uuid::Uuid;

use super::groth16::{ProofError, Verified, claimed_proof};
use crate::submission::{Accepted, SubmitError};

pub use ambient_zk::{parse_field, parse_task_inputs as parse_inputs};

/// The circuits and their size ranges as text, e.g. `hash_chain (n from 1 to 4096)`.
pub fn supported_list() -> String {
    CircuitId::all()
        .iter()
        .map(|&id| {
            let (min, max) = id.size_range();
            match id {
                CircuitId::HashChain => format!("hash_chain (n from {min} to {max})"),
                CircuitId::Dot => format!("dot (vectors of length {min} to {max})"),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A circuit instance in words: `hash_chain n = 1000`, `dot on vectors of length 16`.
pub fn describe(spec: &CircuitSpec) -> String {
    match spec.id() {
        CircuitId::HashChain => format!("hash_chain n = {}", spec.size()),
        CircuitId::Dot => format!("dot on vectors of length {}", spec.size()),
    }
}

/// The output a node claims, read from its result: `y` for `hash_chain`, `sum` for `dot`,
/// both decimal strings.
pub fn claimed_output(spec: &CircuitSpec, output: &Value) -> Result<Output, ProofError> {
    let field = |k: &'static str| {
        output
            .get(k)
            .and_then(Value::as_str)
            .ok_or_else(|| ProofError::Output(format!("no {k} (a decimal string)")))
    };
    match spec.id() {
        CircuitId::HashChain => Ok(Output::HashChain {
            y: parse_field(field("y")?).map_err(ProofError::BadField)?,
        }),
        CircuitId::Dot => Ok(Output::Dot {
            sum: field("sum")?.parse().map_err(ProofError::BadSum)?,
        }),
    }
}

/// The decimal output string of a result (`y` for `hash_chain`, `sum` for `dot`).
pub fn statement<'a>(spec: &CircuitSpec, output: &'a Value) -> Option<&'a str> {
    let key = match spec.id() {
        CircuitId::HashChain => "y",
        CircuitId::Dot => "sum",
    };
    output.get(key).and_then(Value::as_str)
}

/// One circuit instance whose keys are ready.
pub struct Circuit {
    /// The instance.
    pub spec: CircuitSpec,
    /// Its verifying key.
    pub vk: VerifyingKey<Bn254>,
    /// The verifying key, prepared once.
    pub verifier: PreparedVerifier,
    /// sha256 of the compressed proving key in the blob store (the task artifact).
    pub pk_sha256: String,
    /// Size of the compressed proving key in bytes.
    pub pk_bytes: usize,
}

impl Circuit {
    /// The instance `spec` with verifying key `vk` and its proving key's blob.
    pub fn new(
        spec: CircuitSpec,
        vk: VerifyingKey<Bn254>,
        pk_sha256: String,
        pk_bytes: usize,
    ) -> Result<Circuit, ZkError> {
        let verifier = PreparedVerifier::new(&vk)?;
        Ok(Circuit {
            spec,
            vk,
            verifier,
            pk_sha256,
            pk_bytes,
        })
    }

    /// Checks a node's successful result for a task of this instance with `inputs`. Blocking
    /// (a few pairings).
    ///
    /// `Err` says why the proof is rejected; the public inputs come from the task's own inputs
    /// and the claimed output, never from the node.
    pub fn verify_result(
        &self,
        task_id: Uuid,
        inputs: &Inputs,
        output: &Value,
    ) -> Result<Verified, ProofError> {
        let spec = self.spec;
        let claimed = claimed_output(&spec, output)?;
        let (proof_bytes, proof) = claimed_proof(output)?;
        let public = ambient_zk::public_inputs_for(&spec, task_id.as_bytes(), inputs, &claimed)
            .map_err(ProofError::Zk)?;
        match self.verifier.verify(&public, &proof) {
            Ok(true) => Ok(Verified {
                name: spec.id().name().to_owned(),
                size: spec.size() as u64,
                public: public.to_vec(),
                proof: proof_bytes,
                statement: statement(&spec, output).unwrap_or_default().to_owned(),
                annotations: serde_json::Map::new(),
            }),
            Ok(false) => Err(ProofError::Invalid(describe(&spec))),
            Err(e) => Err(ProofError::Zk(e)),
        }
    }
}

/// Checks a `zk_proof` submission: one node, no module, a circuit and a size in its range.
/// Every result carries a proof, whether or not the submitter asked for one.
pub(crate) fn check(accepted: &mut Accepted) -> Result<(), SubmitError> {
    let submission = &mut accepted.submission;

    parse_inputs(&submission.inputs).map_err(|e| {
        SubmitError::InvalidInputs(format!(
            "zk_proof: {e}; supported circuits: {}",
            supported_list()
        ))
    })?;
    submission.requirements.require_proof = true;
    Ok(())
}

/// The API's view of the circuits: each with its size range and the sizes whose keys exist
/// (`instances`, from [`super::groth16::Zk::instances`]), each of those with its snarkjs verification key.
pub fn circuits_json(instances: &[Arc<Circuit>]) -> Value {
    let circuits = CircuitId::all()
        .iter()
        .map(|&id| {
            let (n_min, n_max) = id.size_range();
            let sizes: Vec<Value> = instances
                .iter()
                .filter(|c| c.spec.id() == id)
                .map(|c| {
                    serde_json::json!({
                        "n": c.spec.size(),
                        "constraints": c.spec.expected_constraints(),
                        "proving_key_sha256": c.pk_sha256,
                        "proving_key_bytes": c.pk_bytes,
                        "verification_key": ambient_zk::snarkjs_verification_key_json(&c.vk),
                    })
                })
                .collect();
            serde_json::json!({
                "circuit": id.name(),
                "n_min": n_min,
                "n_max": n_max,
                "instances": sizes,
            })
        })
        .collect();
    Value::Array(circuits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ambient_zk::Fr;
    use base64::Engine as _;
    use serde_json::json;

    #[test]
    fn field_elements_are_canonical_and_below_r() {
        assert_eq!(parse_field("7").unwrap(), Fr::from(7u64));
        assert_eq!(parse_field("0").unwrap(), Fr::from(0u64));
        let r = "21888242871839275222246405745257275088548364400416034343698204186575808495617";
        let r_minus_1 =
            "21888242871839275222246405745257275088548364400416034343698204186575808495616";
        assert!(parse_field(r).is_err());
        assert!(parse_field(r_minus_1).is_ok());
        for bad in ["", "07", "-1", "1.0", " 1", "0x10"] {
            assert!(parse_field(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn inputs_parse_and_sizes_are_checked() {
        let (spec, inputs) =
            parse_inputs(&json!({"circuit": "hash_chain", "x": "7", "n": 64})).unwrap();
        assert_eq!((spec.id(), spec.size()), (CircuitId::HashChain, 64));
        assert_eq!(inputs, Inputs::HashChain { x: Fr::from(7u64) });
        let (max, dot_max) = (
            CircuitId::HashChain.size_range().1,
            CircuitId::Dot.size_range().1,
        );
        for n in [1, 65, 1000, max] {
            let (spec, _) =
                parse_inputs(&json!({"circuit": "hash_chain", "x": "7", "n": n})).unwrap();
            assert_eq!(spec.size(), n);
        }
        // Outside the range: refused, naming it.
        for n in [0, max + 1] {
            let e = parse_inputs(&json!({"circuit": "hash_chain", "x": "7", "n": n})).unwrap_err();
            assert!(e.contains(&format!("(1..={max})")), "{e}");
        }
        assert!(supported_list().contains(&format!("hash_chain (n from 1 to {max})")));
        assert!(supported_list().contains(&format!("dot (vectors of length 1 to {dot_max})")));
        assert!(parse_inputs(&json!({"circuit": "sha", "x": "7"})).is_err());
        assert!(parse_inputs(&json!({"circuit": "hash_chain", "x": 7, "n": 64})).is_err());
        assert!(
            parse_inputs(&json!({"circuit": "hash_chain", "x": "7", "n": 64, "y": "1"})).is_err()
        );
        let (spec, _) = parse_inputs(&json!({"circuit": "dot", "a": [1, 2], "b": [3, 4]})).unwrap();
        assert_eq!((spec.id(), spec.size()), (CircuitId::Dot, 2));
        assert!(parse_inputs(&json!({"circuit": "dot", "a": [1], "b": [3, 4]})).is_err());
        let long = vec![1; dot_max + 1];
        assert!(parse_inputs(&json!({"circuit": "dot", "a": long, "b": long})).is_err());
    }

    /// The OpenAPI document's `zk_proof` inputs, which the submission check walks, accept the
    /// sizes the code accepts and no others.
    #[test]
    fn the_openapi_ranges_are_the_codes() {
        let doc: Value = serde_json::from_str(crate::api::OPENAPI).unwrap();
        let schemas = &doc["components"]["schemas"];
        let branches = schemas["ZkProofSubmission"]["properties"]["inputs"]["oneOf"]
            .as_array()
            .unwrap();
        let (min, max) = CircuitId::HashChain.size_range();
        let n = &branches[0]["properties"]["n"];
        assert_eq!(branches[0]["properties"]["circuit"]["const"], "hash_chain");
        assert_eq!(
            (n["minimum"].as_u64(), n["maximum"].as_u64()),
            (Some(min as u64), Some(max as u64))
        );
        let (min, max) = CircuitId::Dot.size_range();
        assert_eq!(branches[1]["properties"]["circuit"]["const"], "dot");
        for v in ["a", "b"] {
            let a = &branches[1]["properties"][v];
            assert_eq!(
                (a["minItems"].as_u64(), a["maxItems"].as_u64()),
                (Some(min as u64), Some(max as u64)),
                "{v}"
            );
        }
        let verify = doc["paths"]["/api/v1/proofs/verify"]["post"]["requestBody"]["content"]
            ["application/json"]["schema"]["oneOf"]
            .as_array()
            .unwrap();
        for (branch, id) in verify.iter().zip(CircuitId::all()) {
            let (min, max) = id.size_range();
            let n = &branch["properties"]["n"];
            assert_eq!(branch["properties"]["circuit"]["const"], id.name());
            assert_eq!(
                (n["minimum"].as_u64(), n["maximum"].as_u64()),
                (Some(min as u64), Some(max as u64)),
                "{id}"
            );
        }
        // And the submission check, which walks it, says so.
        let limits = crate::config::Limits::default();
        let body = |n: usize| {
            serde_json::to_vec(&json!({"task_type": "zk_proof",
                "inputs": {"circuit": "hash_chain", "x": "7", "n": n}}))
            .unwrap()
        };
        let max = CircuitId::HashChain.size_range().1;
        assert!(crate::submission::check(&body(1000), &limits).is_ok());
        assert!(crate::submission::check(&body(max), &limits).is_ok());
        let e = crate::submission::check(&body(max + 1), &limits).unwrap_err();
        assert_eq!(e.code(), "invalid_inputs");
        assert!(e.to_string().contains(&max.to_string()), "{e}");
    }

    /// Setup, a node's proof, and the coordinator's check, on a tiny instance.
    #[test]
    fn results_verify_only_for_their_task_and_output() {
        let spec = CircuitSpec::new(CircuitId::HashChain, 2).unwrap();
        let keys = ambient_zk::setup_with_os_rng(&spec).unwrap();
        let circuit = Circuit::new(spec, keys.verifying_key.clone(), String::new(), 0).unwrap();
        let task = Uuid::new_v4();
        let x = Inputs::HashChain { x: Fr::from(7u64) };
        let (proof, _, out) = ambient_zk::prove(&keys, &spec, task.as_bytes(), &x).unwrap();
        let Output::HashChain { y } = out else {
            unreachable!()
        };
        let b64 = base64::engine::general_purpose::STANDARD
            .encode(ambient_zk::proof_to_bytes(&proof).unwrap());
        let output = json!({"y": y.to_string(), "proof": b64});
        circuit.verify_result(task, &x, &output).unwrap();
        assert!(circuit.verify_result(Uuid::new_v4(), &x, &output).is_err());
        let lie = json!({"y": (y + Fr::from(1u64)).to_string(), "proof": b64});
        assert!(circuit.verify_result(task, &x, &lie).is_err());
        let other = Inputs::HashChain { x: Fr::from(8u64) };
        assert!(circuit.verify_result(task, &other, &output).is_err());
        assert!(circuit.verify_result(task, &x, &json!({"y": "1"})).is_err());
    }
}
