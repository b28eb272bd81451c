//! `zk_proof` tasks: compute a registered circuit's output and prove it with Groth16.
//!
//! The task's artifact is the circuit's compressed proving key, made by the coordinator's
//! setup. Decoding and shape-checking it takes a while, so decoded keys are cached by their
//! sha256. The proof binds the task id, the inputs and the output (see `ambient_zk`); the
//! coordinator verifies it before it accepts the result.
//!
//! The output is `{"y" | "sum": "<decimal>", "proof": "<base64>", "public_inputs": [3 decimal
//! strings], "circuit", "n"}`, and `output_sha256` is the sha256 of the decimal output string
//! alone: proofs are randomised, so replicas compare the statement, not the proof bytes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use ambient_protocol::{FailureKind, Outcome};
use ambient_zk::{CircuitSpec, Fr, Inputs, Keys, Output};
use base64::Engine as _;
use serde_json::{Value, json};
use uuid::Uuid;

use super::failure;

/// Proves `zk_proof` tasks, with a small cache of decoded proving keys.
pub struct ZkProver {
    keys: Mutex<HashMap<String, Arc<Keys>>>,
    capacity: usize,
}

impl std::fmt::Debug for ZkProver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZkProver")
            .field("capacity", &self.capacity)
            .finish()
    }
}

/// `{"circuit": "hash_chain", "x", "n"}` or `{"circuit": "dot", "a", "b"}`.
pub fn parse_inputs(inputs: &Value) -> Result<(CircuitSpec, Inputs), String> {
    ambient_zk::parse_task_inputs(inputs)
}

/// A parsed `zk_proof` task, with its decoded proving key when the cache had it.
pub struct ZkJob {
    spec: CircuitSpec,
    inputs: Inputs,
    keys: Option<Arc<Keys>>,
}

impl ZkJob {
    /// True when the proving key is not cached, so the artifact must be fetched.
    pub fn needs_key(&self) -> bool {
        self.keys.is_none()
    }
}

impl std::fmt::Debug for ZkJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZkJob")
            .field("spec", &self.spec)
            .field("cached_key", &self.keys.is_some())
            .finish_non_exhaustive()
    }
}

impl ZkProver {
    /// A prover that keeps up to `capacity` decoded proving keys.
    pub fn new(capacity: usize) -> ZkProver {
        ZkProver {
            keys: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    /// The cheap first step of a task, safe on an async worker: parses the inputs and looks up
    /// the decoded proving key `sha` in the cache. An `invalid_input` failure when the inputs
    /// are wrong.
    pub fn prepare(&self, sha: &str, inputs: &Value) -> Result<ZkJob, Outcome> {
        let (spec, inputs) = parse_inputs(inputs)
            .map_err(|e| failure(FailureKind::InvalidInput, format!("zk_proof: {e}")))?;
        let keys = self
            .keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(sha)
            .filter(|k| k.spec == spec)
            .cloned();
        Ok(ZkJob { spec, inputs, keys })
    }

    /// The decoded proving key of `job`: the cached one, or `load`'s bytes decoded (and cached).
    fn keys(
        &self,
        job: &ZkJob,
        sha: &str,
        load: impl FnOnce() -> Result<Vec<u8>, Outcome>,
    ) -> Result<Arc<Keys>, Outcome> {
        if let Some(k) = &job.keys {
            return Ok(k.clone());
        }
        let spec = &job.spec;
        let bytes = load()?;
        let keys = Keys::from_bytes(spec, &bytes).map(Arc::new).map_err(|e| {
            failure(
                FailureKind::InvalidProvingKey,
                format!("the artifact is not a proving key for {spec}: {e}"),
            )
        })?;
        let mut cache = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= self.capacity {
            cache.clear();
        }
        cache.insert(sha.to_string(), keys.clone());
        Ok(keys)
    }

    /// Proves a prepared task. `load` yields the proving key bytes (the artifact, checked
    /// against `sha`) and is only called when [`ZkJob::needs_key`]. Blocking: seconds of CPU.
    ///
    /// Returns the output and its `output_sha256`, or the failure outcome.
    pub fn prove(
        &self,
        job: ZkJob,
        sha: &str,
        load: impl FnOnce() -> Result<Vec<u8>, Outcome>,
        task_id: Uuid,
    ) -> Result<(Value, String), Outcome> {
        let keys = self.keys(&job, sha, load)?;
        let spec = job.spec;
        let (proof, public, output) =
            ambient_zk::prove(&keys, &spec, task_id.as_bytes(), &job.inputs).map_err(
                |e| match e {
                    ambient_zk::ZkError::BadInput { .. } => {
                        failure(FailureKind::InvalidInput, e.to_string())
                    }
                    other => failure(FailureKind::ProofFailed, other.to_string()),
                },
            )?;
        let proof = ambient_zk::proof_to_bytes(&proof)
            .map_err(|e| failure(FailureKind::ProofFailed, e.to_string()))?;
        let (key, statement) = match output {
            Output::HashChain { y } => ("y", y.to_string()),
            Output::Dot { sum } => ("sum", sum.to_string()),
        };
        let public: Vec<String> = public.to_vec().iter().map(Fr::to_string).collect();
        let output_sha256 = ambient_protocol::sha256_hex(statement.as_bytes());
        let mut out = json!({
            "proof": base64::engine::general_purpose::STANDARD.encode(proof),
            "public_inputs": public,
            "circuit": spec.id().name(),
            "n": spec.size(),
        });
        out[key] = Value::String(statement);
        Ok((out, output_sha256))
    }

    /// Proves one task: [`ZkProver::prepare`] then [`ZkProver::prove`]. `load` yields the
    /// proving key bytes and is only called when the key is not cached. Blocking.
    pub fn run(
        &self,
        sha: &str,
        load: impl FnOnce() -> Result<Vec<u8>, Outcome>,
        task_id: Uuid,
        inputs: &Value,
    ) -> Result<(Value, String), Outcome> {
        let job = self.prepare(sha, inputs)?;
        self.prove(job, sha, load, task_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proves_and_caches_the_key() {
        let spec = CircuitSpec::new(ambient_zk::CircuitId::HashChain, 3).unwrap();
        let keys = ambient_zk::setup_with_os_rng(&spec).unwrap();
        let bytes = keys.to_bytes().unwrap();
        let prover = ZkProver::new(2);
        let task = Uuid::new_v4();
        let inputs = json!({"circuit": "hash_chain", "x": "7", "n": 3});
        let (out, sha) = prover
            .run("k", || Ok(bytes.clone()), task, &inputs)
            .unwrap();
        let y = ambient_zk::mimc::hash_chain(Fr::from(7u64), 3);
        assert_eq!(out["y"], y.to_string());
        assert_eq!(sha, ambient_protocol::sha256_hex(y.to_string().as_bytes()));
        let proof = base64::engine::general_purpose::STANDARD
            .decode(out["proof"].as_str().unwrap())
            .unwrap();
        let proof = ambient_zk::proof_from_bytes(&proof).unwrap();
        let public = ambient_zk::public_inputs_for(
            &spec,
            task.as_bytes(),
            &Inputs::HashChain { x: Fr::from(7u64) },
            &Output::HashChain { y },
        )
        .unwrap();
        assert!(ambient_zk::verify(&keys.verifying_key, &spec, &public, &proof).unwrap());
        // Cached: the loader is not called again.
        prover
            .run("k", || panic!("key reloaded"), task, &inputs)
            .unwrap();
        let kind = |r: Result<(Value, String), Outcome>| match r.unwrap_err() {
            Outcome::Failure { kind, .. } => kind,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            kind(prover.run(
                "k",
                || Ok(vec![]),
                task,
                &json!({"circuit": "hash_chain", "x": "07", "n": 3})
            )),
            FailureKind::InvalidInput
        );
        assert_eq!(
            kind(prover.run("other", || Ok(vec![1, 2, 3]), task, &inputs)),
            FailureKind::InvalidProvingKey
        );
    }
}
