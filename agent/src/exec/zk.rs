//! `zk_proof` tasks: compute a registered circuit's output and prove it with Groth16; and,
//! with `onnx`, `inference` tasks with `require_proof`: run an ONNX model compiled to a
//! fixed-point program ([`ambient_zk::nn`]) and prove its output ([`ZkProver::prove_model`]).
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

/// Proves `zk_proof` tasks and proved inferences, with small caches of decoded proving keys
/// (and compiled models), by the proving key's sha256.
pub struct ZkProver {
    keys: Mutex<HashMap<String, Arc<Keys>>>,
    #[cfg(feature = "onnx")]
    models: Mutex<HashMap<String, Arc<model::Compiled>>>,
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
            #[cfg(feature = "onnx")]
            models: Mutex::new(HashMap::new()),
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
        cache_insert(&self.keys, self.capacity, sha, keys.clone());
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

/// Puts `value` in a cache of at most `capacity` entries (emptied when full: keys are few and
/// large, and a task's own is fetched again at worst).
fn cache_insert<T>(cache: &Mutex<HashMap<String, T>>, capacity: usize, sha: &str, value: T) {
    let mut cache = cache.lock().unwrap_or_else(PoisonError::into_inner);
    if cache.len() >= capacity {
        cache.clear();
    }
    cache.insert(sha.to_string(), value);
}

/// Proved inference: the model compiled to a fixed-point program, proved with the model's
/// proving key (the assignment's artifact).
#[cfg(feature = "onnx")]
pub mod model {
    use std::sync::{Arc, PoisonError};

    use ambient_protocol::{
        FailureKind, InferenceInputs, InferenceOutput, Outcome, QuantisedTensor, TensorJson,
    };
    use ambient_zk::nn::{self, Program, ProgramKeys};
    use base64::Engine as _;
    use serde_json::Value;
    use uuid::Uuid;

    use super::{ZkProver, cache_insert};
    use crate::exec::failure;

    /// A model compiled, with its decoded proving key.
    pub struct Compiled {
        program: Program,
        keys: ProgramKeys,
    }

    /// A parsed proved-inference task, with its compiled model when the cache had it.
    pub struct ModelJob {
        model_sha256: String,
        inputs: InferenceInputs,
        compiled: Option<Arc<Compiled>>,
    }

    impl ModelJob {
        /// The model to download when it is not cached.
        pub fn model_sha256(&self) -> &str {
            &self.model_sha256
        }

        /// True when the model and its proving key are not cached, so both must be fetched.
        pub fn needs_key(&self) -> bool {
            self.compiled.is_none()
        }
    }

    impl std::fmt::Debug for ModelJob {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("ModelJob")
                .field("model_sha256", &self.model_sha256)
                .field("cached", &self.compiled.is_some())
                .finish_non_exhaustive()
        }
    }

    fn invalid(e: impl std::fmt::Display) -> Outcome {
        failure(FailureKind::InvalidInput, format!("inference: {e}"))
    }

    impl ZkProver {
        /// The cheap first step, safe on an async worker: parses the inputs and looks up the
        /// compiled model of the proving key `pk_sha`.
        pub fn prepare_model(&self, pk_sha: &str, inputs: &Value) -> Result<ModelJob, Outcome> {
            let inputs: InferenceInputs =
                serde_json::from_value(inputs.clone()).map_err(invalid)?;
            let model_sha256 = inputs
                .model_sha256
                .clone()
                .ok_or_else(|| invalid("the task names no model_sha256"))?;
            let compiled = self
                .models
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(pk_sha)
                .cloned();
            Ok(ModelJob {
                model_sha256,
                inputs,
                compiled,
            })
        }

        /// Proves a prepared task: compiles the model and decodes the proving key from
        /// `load`'s bytes `(model, proving key)` when they are not cached, quantises the input,
        /// evaluates the program and proves it. Blocking: the proof is seconds of CPU.
        ///
        /// Returns the output ([`InferenceOutput`] with `quantised`, `proof` and
        /// `public_inputs`) and its `output_sha256`: the sha256 of the quantised output as a
        /// JSON array, which the proof is about (proofs are randomised).
        pub fn prove_model(
            &self,
            job: ModelJob,
            pk_sha: &str,
            load: impl FnOnce() -> Result<(Vec<u8>, Vec<u8>), Outcome>,
            task_id: Uuid,
        ) -> Result<(Value, String), Outcome> {
            let compiled = match job.compiled {
                Some(c) => c,
                None => {
                    let (model, pk) = load()?;
                    let program = nn::onnx::compile(&model, nn::DEFAULT_FRAC_BITS)
                        .map_err(|e| failure(FailureKind::ProofFailed, e.to_string()))?;
                    let keys = ProgramKeys::from_bytes(&program, &pk).map_err(|e| {
                        failure(
                            FailureKind::InvalidProvingKey,
                            format!("the artifact is not a proving key for this model: {e}"),
                        )
                    })?;
                    let c = Arc::new(Compiled { program, keys });
                    cache_insert(&self.models, self.capacity, pk_sha, c.clone());
                    c
                }
            };
            let program = &compiled.program;
            let input = nn::quantise_input(program, job.inputs.views()).map_err(invalid)?;
            let zk_failure = |e: ambient_zk::ZkError| match e {
                ambient_zk::ZkError::BadInput { .. } | ambient_zk::ZkError::Overflow { .. } => {
                    invalid(e)
                }
                other => failure(FailureKind::ProofFailed, other.to_string()),
            };
            let (output, proof) = nn::prove(
                program,
                &compiled.keys.proving_key,
                task_id.as_bytes(),
                &input,
            )
            .map_err(zk_failure)?;
            let public = nn::public_inputs(program, task_id.as_bytes(), &input, &output)
                .map_err(zk_failure)?;
            let proof = ambient_zk::proof_to_bytes(&proof)
                .map_err(|e| failure(FailureKind::ProofFailed, e.to_string()))?;
            let f = program.frac_bits;
            let shape = program.output.shape.clone();
            let real = TensorJson {
                dtype: "float32".into(),
                shape: shape.clone(),
                data: output.iter().map(|&q| nn::dequantise(q, f)).collect(),
            };
            let statement = serde_json::to_string(&output).unwrap_or_default();
            let out = InferenceOutput {
                outputs: [(program.output.name.clone(), real)].into(),
                device: "cpu".into(),
                quantised: Some(QuantisedTensor {
                    frac_bits: f,
                    shape,
                    data: output,
                }),
                proof: Some(base64::engine::general_purpose::STANDARD.encode(proof)),
                public_inputs: Some(ambient_zk::public_inputs_decimal(&public)),
                model_commitment: None,
                error_bound: None,
                constraints: None,
            };
            let value = serde_json::to_value(&out)
                .map_err(|e| failure(FailureKind::ProofFailed, e.to_string()))?;
            Ok((value, ambient_protocol::sha256_hex(statement.as_bytes())))
        }
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
