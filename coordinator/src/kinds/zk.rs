//! `zk_proof` tasks: the circuits this coordinator runs, their Groth16 keys, submission checks,
//! the verification of a node's proof before its result is accepted, and the API's JSON of
//! proofs and circuits.
//!
//! At start, each supported circuit instance gets its keys from `<data_dir>/zk/<spec>.keys`, or
//! from a fresh setup with operating-system randomness (then saved there). The proving key goes
//! into the blob store and travels to nodes as the task's artifact; the verifying key stays here,
//! prepared once. The coordinator never takes public inputs from a node: it recomputes them from
//! the task id, the task's inputs and the claimed output ([`ambient_zk::public_inputs_for`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ambient_protocol::{AgentEvent, FailureKind, Outcome};
use ambient_zk::{
    Bn254, CircuitId, CircuitSpec, Keys, Output, PreparedVerifier, PublicInputs, VerifyingKey,
    ZkError,
};
use base64::Engine as _;
use chrono::Utc;
use serde_json::Value;
use tracing::{error, info, warn};
use uuid::Uuid;

use crate::scheduler::Scheduler;
use crate::store::{ProofRecord, Store, StoreError};
use crate::submission::{Accepted, SubmitError};

pub use ambient_zk::{parse_field, parse_task_inputs as parse_inputs};

/// Circuit instances `(circuit, size)` that `zk_proof` tasks may ask for. The proving key of
/// each travels inside the MQTT assignment, so sizes stay well under the 16 MiB packet limit
/// (4 893 360 bytes, about 6.2 MiB of base64, for `hash_chain` at n = 64).
pub const SUPPORTED: &[(CircuitId, usize)] = &[(CircuitId::HashChain, 64), (CircuitId::Dot, 16)];

/// The supported instances as text, e.g. `hash_chain (n = 64)`.
pub fn supported_list() -> String {
    SUPPORTED
        .iter()
        .map(|(id, size)| match id {
            CircuitId::HashChain => format!("hash_chain (n = {size})"),
            CircuitId::Dot => format!("dot (vectors of length {size})"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A circuit instance this coordinator has no keys for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} at size {} is not supported; supported circuits: {}", .0.id(), .0.size(), supported_list())]
pub struct Unsupported(pub CircuitSpec);

/// Refuses a circuit instance this coordinator has no keys for.
pub fn check_supported(spec: &CircuitSpec) -> Result<(), Unsupported> {
    if SUPPORTED.contains(&(spec.id(), spec.size())) {
        Ok(())
    } else {
        Err(Unsupported(*spec))
    }
}

/// Why a node's proof was rejected. The text becomes the `proof_rejected` failure's message.
#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    /// The task's own inputs do not parse (they were checked at submission).
    #[error("the task's inputs: {0}")]
    TaskInputs(String),
    /// No keys for the task's circuit instance.
    #[error("no keys for {0}")]
    NoKeys(CircuitSpec),
    /// The result lacks its claimed output.
    #[error("the result has no {0} (a decimal string)")]
    NoOutput(&'static str),
    /// The claimed output is not a field element.
    #[error("{0}")]
    BadField(String),
    /// The claimed `sum` of `dot` is not an integer.
    #[error("sum is not an i128: {0}")]
    BadSum(std::num::ParseIntError),
    /// The result has no `proof`.
    #[error("the result has no proof")]
    NoProof,
    /// The proof is not base64.
    #[error("the proof is not base64: {0}")]
    NotBase64(base64::DecodeError),
    /// The proof does not decode to curve points.
    #[error("the proof does not decode: {0}")]
    Undecodable(ZkError),
    /// The public inputs could not be computed, or the verifier failed.
    #[error(transparent)]
    Zk(ZkError),
    /// The proof is well formed but false.
    #[error("the proof does not verify for {0} against this task and the claimed output")]
    Invalid(CircuitSpec),
    /// The verifying thread panicked.
    #[error("the verifier crashed: {0}")]
    Crashed(String),
}

/// The output a node claims, read from its result: `y` for `hash_chain`, `sum` for `dot`,
/// both decimal strings.
pub fn claimed_output(spec: &CircuitSpec, output: &Value) -> Result<Output, ProofError> {
    let field = |k: &'static str| {
        output
            .get(k)
            .and_then(Value::as_str)
            .ok_or(ProofError::NoOutput(k))
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

/// One supported circuit instance with its keys.
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

/// Every supported circuit instance, ready to verify.
pub struct Zk {
    circuits: Vec<Circuit>,
}

/// A proof that checked out.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The instance.
    pub spec: CircuitSpec,
    /// The public inputs, recomputed here.
    pub public: PublicInputs,
    /// The compressed proof.
    pub proof: Vec<u8>,
    /// The claimed output as the node wrote it (`y` or `sum`, decimal): what replicas compare.
    pub statement: String,
}

/// `<data_dir>/zk/<circuit>-<size>.keys`.
pub fn keys_path(data_dir: &Path, spec: &CircuitSpec) -> PathBuf {
    data_dir.join("zk").join(format!("{spec}.keys"))
}

/// Why the Groth16 keys of a supported circuit could not be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// A key file could not be read or written.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A key file does not hold keys of its circuit.
    #[error("{}: {source}", .path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        source: ZkError,
    },
    /// Setup or key preparation failed.
    #[error(transparent)]
    Zk(#[from] ZkError),
    /// The proving key could not be put in the blob store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The setup thread panicked.
    #[error("{0}")]
    Crashed(#[from] tokio::task::JoinError),
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> KeysError {
    let path = path.to_path_buf();
    move |source| KeysError::Io { path, source }
}

fn load_or_setup(path: &Path, spec: &CircuitSpec) -> Result<(Keys, Vec<u8>), KeysError> {
    if path.exists() {
        let bytes = std::fs::read(path).map_err(io_error(path))?;
        let keys = Keys::from_bytes(spec, &bytes).map_err(|source| KeysError::Corrupt {
            path: path.to_path_buf(),
            source,
        })?;
        return Ok((keys, bytes));
    }
    let started = std::time::Instant::now();
    let keys = ambient_zk::setup_with_os_rng(spec)?;
    let bytes = keys.to_bytes()?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    }
    // Write then rename, so a crash never leaves a truncated key file behind.
    let tmp = path.with_extension("keys.tmp");
    std::fs::write(&tmp, &bytes).map_err(io_error(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_error(path))?;
    tracing::info!(circuit = %spec, proving_key_bytes = bytes.len(),
        setup_ms = started.elapsed().as_millis() as u64, "Groth16 setup done (OS randomness).");
    Ok((keys, bytes))
}

impl Zk {
    /// The keys of every supported instance, the same for every coordinator of a store: the
    /// store names the blob that holds each circuit's keys. A circuit it does not name yet gets
    /// the keys of `data_dir/zk/<circuit>.keys` (made elsewhere, say by a multi-party ceremony),
    /// or a fresh setup saved there; the first coordinator to name its keys wins, and the others
    /// load those. Setup and decoding run on blocking threads.
    pub async fn load(data_dir: &Path, store: &Store) -> Result<Zk, KeysError> {
        let mut circuits = Vec::new();
        for &(id, size) in SUPPORTED {
            let spec = CircuitSpec::new(id, size)?;
            let mut mine = None;
            let sha = match store.zk_keys(spec.to_string()).await? {
                Some(sha) => sha,
                None => {
                    let path = keys_path(data_dir, &spec);
                    let (keys, bytes) =
                        tokio::task::spawn_blocking(move || load_or_setup(&path, &spec)).await??;
                    let sha = ambient_protocol::sha256_hex(&bytes);
                    store.put_blob(sha.clone(), bytes).await?;
                    mine = Some((sha.clone(), keys));
                    store.put_zk_keys(spec.to_string(), sha).await?
                }
            };
            let keys = match mine {
                Some((made, keys)) if made == sha => keys,
                _ => {
                    let bytes = store
                        .blob(sha.clone())
                        .await?
                        .ok_or_else(|| StoreError::Missing(sha.clone()))?;
                    tokio::task::spawn_blocking(move || Keys::from_bytes(&spec, &bytes)).await??
                }
            };
            let pk_bytes = store
                .blob_size(sha.clone())
                .await?
                .ok_or_else(|| StoreError::Missing(sha.clone()))?
                as usize;
            let verifier = PreparedVerifier::new(&keys.verifying_key)?;
            circuits.push(Circuit {
                spec,
                vk: keys.verifying_key,
                verifier,
                pk_sha256: sha,
                pk_bytes,
            });
        }
        Ok(Zk { circuits })
    }

    /// The supported instances.
    pub fn circuits(&self) -> &[Circuit] {
        &self.circuits
    }

    /// The keys of one instance, if supported.
    pub fn circuit(&self, spec: &CircuitSpec) -> Option<&Circuit> {
        self.circuits.iter().find(|c| c.spec == *spec)
    }

    /// The proving key's blob address for a task's inputs.
    pub fn artifact_for(&self, inputs: &Value) -> Option<String> {
        let (spec, _) = parse_inputs(inputs).ok()?;
        Some(self.circuit(&spec)?.pk_sha256.clone())
    }

    /// Checks a node's successful result for a `zk_proof` task. Blocking (a few pairings).
    ///
    /// `Err` says why the proof is rejected; the public inputs come from the task's own inputs
    /// and the claimed output, never from the node.
    pub fn verify_result(
        &self,
        task_id: Uuid,
        inputs: &Value,
        output: &Value,
    ) -> Result<Verified, ProofError> {
        let (spec, inputs) = parse_inputs(inputs).map_err(ProofError::TaskInputs)?;
        let circuit = self.circuit(&spec).ok_or(ProofError::NoKeys(spec))?;
        let claimed = claimed_output(&spec, output)?;
        let b64 = output
            .get("proof")
            .and_then(Value::as_str)
            .ok_or(ProofError::NoProof)?;
        let proof_bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(ProofError::NotBase64)?;
        let proof = ambient_zk::proof_from_bytes(&proof_bytes).map_err(ProofError::Undecodable)?;
        let public = ambient_zk::public_inputs_for(&spec, task_id.as_bytes(), &inputs, &claimed)
            .map_err(ProofError::Zk)?;
        match circuit.verifier.verify(&public, &proof) {
            Ok(true) => Ok(Verified {
                spec,
                public,
                proof: proof_bytes,
                statement: statement(&spec, output).unwrap_or_default().to_owned(),
            }),
            Ok(false) => Err(ProofError::Invalid(spec)),
            Err(e) => Err(ProofError::Zk(e)),
        }
    }
}

/// Checks a `zk_proof` submission: one node, no module, a supported circuit. Every result
/// carries a proof, whether or not the submitter asked for one.
pub(crate) fn check(accepted: &mut Accepted) -> Result<(), SubmitError> {
    let submission = &mut accepted.submission;
    if submission.requirements.min_nodes != 1 {
        return Err(SubmitError::InvalidRequirements(
            "zk_proof runs on one node (min_nodes = 1): its result is checked by \
             verifying the proof, not by replicating the work"
                .into(),
        ));
    }
    if submission.wasm_module.is_some() {
        return Err(SubmitError::InvalidInputs(
            "zk_proof takes no wasm_module; its artifact is the circuit's proving key".into(),
        ));
    }
    let (spec, _) = parse_inputs(&submission.inputs).map_err(|e| {
        SubmitError::InvalidInputs(format!(
            "zk_proof: {e}; supported circuits: {}",
            supported_list()
        ))
    })?;
    check_supported(&spec).map_err(|e| SubmitError::InvalidInputs(format!("zk_proof: {e}")))?;
    submission.requirements.require_proof = true;
    Ok(())
}

/// The artifact of a proof task: its circuit's proving key.
pub(crate) fn artifact(zk: &Zk, inputs: &Value) -> Result<String, SubmitError> {
    zk.artifact_for(inputs).ok_or_else(|| {
        SubmitError::InvalidInputs(format!(
            "no proving key for these inputs; supported circuits: {}",
            supported_list()
        ))
    })
}

/// Checks the proof of a `zk_proof` task's result before the scheduler sees it. A proof that does
/// not verify turns the result into a `proof_rejected` failure, which is not deterministic,
/// so the scheduler retries the task elsewhere. A verified proof is stored and its id
/// attached to the task. Returns `None` when the proof could not be stored: the result is
/// then not acknowledged, and the agent sends it again.
pub(crate) async fn check_result(
    zk: &Arc<Zk>,
    store: &Store,
    sched: &mut Scheduler,
    node: &str,
    ev: AgentEvent,
) -> Option<AgentEvent> {
    let AgentEvent::Finished { mut result } = ev else {
        return Some(ev);
    };
    let task_id = result.task_id;
    // Only a result the scheduler would record is checked (a duplicate is just acknowledged).
    if !sched.awaits_result(&task_id, node, result.attempt) {
        return Some(AgentEvent::Finished { result });
    }
    let Outcome::Success { output, .. } = &result.outcome else {
        return Some(AgentEvent::Finished { result });
    };
    let inputs = sched.task(&task_id).map(|t| t.inputs.clone())?;
    let (zk, output) = (zk.clone(), output.clone());
    let checked = tokio::task::spawn_blocking(move || zk.verify_result(task_id, &inputs, &output))
        .await
        .unwrap_or_else(|e| Err(ProofError::Crashed(e.to_string())));
    match checked {
        Ok(verified) => {
            let proof_id = Uuid::new_v4();
            let public: Vec<String> = ambient_zk::snarkjs_public_json(&verified.public)
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            let record = ProofRecord {
                id: proof_id,
                task_id,
                circuit: verified.spec.id().name().to_owned(),
                size: verified.spec.size() as u64,
                public_inputs: public.clone(),
                proof: verified.proof,
                verified_at: Utc::now(),
            };
            if let Err(e) = store.put_proof(record).await {
                error!(task_id = %task_id, error = %e, "Could not store a verified proof.");
                return None;
            }
            info!(task_id = %task_id, node = %node, proof_id = %proof_id, "Proof verified.");
            if let Outcome::Success {
                output,
                output_sha256,
            } = &mut result.outcome
            {
                // What the coordinator checked, not what the node wrote beside it.
                output["public_inputs"] = public.into();
                *output_sha256 = ambient_protocol::sha256_hex(verified.statement.as_bytes());
            }
            sched.attach_proof(task_id, proof_id.to_string());
            sched.judge_proof(node, task_id, true, Utc::now());
        }
        Err(reason) => {
            warn!(task_id = %task_id, node = %node, reason = %reason, "Proof rejected.");
            sched.judge_proof(node, task_id, false, Utc::now());
            result.outcome = Outcome::Failure {
                kind: FailureKind::ProofRejected,
                message: reason.to_string(),
            };
        }
    }
    Some(AgentEvent::Finished { result })
}

/// The API's view of a stored proof, with the snarkjs JSON to check it elsewhere. The
/// verification key is absent when the circuit is no longer configured here.
pub fn proof_json(p: &ProofRecord, circuit: Option<&Circuit>) -> Result<Value, ZkError> {
    let proof = ambient_zk::proof_from_bytes(&p.proof)?;
    Ok(serde_json::json!({
        "proof_id": p.id,
        "task_id": p.task_id,
        "circuit": p.circuit,
        "n": p.size,
        "public_inputs": p.public_inputs,
        "proof": base64::engine::general_purpose::STANDARD.encode(&p.proof),
        "verified_at": p.verified_at,
        "snarkjs": {
            "verification_key": circuit.map(|c| ambient_zk::snarkjs_verification_key_json(&c.vk)),
            "proof": ambient_zk::snarkjs_proof_json(&proof),
            "public": p.public_inputs,
        },
    }))
}

/// The API's view of a supported circuit.
pub fn circuit_json(c: &Circuit) -> Value {
    serde_json::json!({
        "circuit": c.spec.id().name(),
        "n": c.spec.size(),
        "constraints": c.spec.expected_constraints(),
        "proving_key_sha256": c.pk_sha256,
        "proving_key_bytes": c.pk_bytes,
        "verification_key": ambient_zk::snarkjs_verification_key_json(&c.vk),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Location;
    use ambient_zk::{Fr, Inputs};
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
        check_supported(&spec).unwrap();
        let (spec, _) = parse_inputs(&json!({"circuit": "hash_chain", "x": "7", "n": 65})).unwrap();
        assert!(
            check_supported(&spec)
                .unwrap_err()
                .to_string()
                .contains("n = 64")
        );
        assert!(parse_inputs(&json!({"circuit": "sha", "x": "7"})).is_err());
        assert!(parse_inputs(&json!({"circuit": "hash_chain", "x": 7, "n": 64})).is_err());
        assert!(parse_inputs(&json!({"circuit": "hash_chain", "x": "7", "n": 0})).is_err());
        assert!(
            parse_inputs(&json!({"circuit": "hash_chain", "x": "7", "n": 64, "y": "1"})).is_err()
        );
        let (spec, _) = parse_inputs(&json!({"circuit": "dot", "a": [1, 2], "b": [3, 4]})).unwrap();
        assert_eq!((spec.id(), spec.size()), (CircuitId::Dot, 2));
        assert!(parse_inputs(&json!({"circuit": "dot", "a": [1], "b": [3, 4]})).is_err());
    }

    /// Setup, a node's proof, and the coordinator's check, on a tiny instance.
    #[test]
    fn results_verify_only_for_their_task_and_output() {
        let spec = CircuitSpec::new(CircuitId::HashChain, 2).unwrap();
        let keys = ambient_zk::setup_with_os_rng(&spec).unwrap();
        let zk = Zk {
            circuits: vec![Circuit {
                spec,
                vk: keys.verifying_key.clone(),
                verifier: PreparedVerifier::new(&keys.verifying_key).unwrap(),
                pk_sha256: String::new(),
                pk_bytes: 0,
            }],
        };
        let task = Uuid::new_v4();
        let inputs = json!({"circuit": "hash_chain", "x": "7", "n": 2});
        let (proof, _, out) = ambient_zk::prove(
            &keys,
            &spec,
            task.as_bytes(),
            &Inputs::HashChain { x: Fr::from(7u64) },
        )
        .unwrap();
        let Output::HashChain { y } = out else {
            unreachable!()
        };
        let b64 = base64::engine::general_purpose::STANDARD
            .encode(ambient_zk::proof_to_bytes(&proof).unwrap());
        let output = json!({"y": y.to_string(), "proof": b64});
        zk.verify_result(task, &inputs, &output).unwrap();
        assert!(zk.verify_result(Uuid::new_v4(), &inputs, &output).is_err());
        let lie = json!({"y": (y + Fr::from(1u64)).to_string(), "proof": b64});
        assert!(zk.verify_result(task, &inputs, &lie).is_err());
        let other = json!({"circuit": "hash_chain", "x": "8", "n": 2});
        assert!(zk.verify_result(task, &other, &output).is_err());
        assert!(zk.verify_result(task, &inputs, &json!({"y": "1"})).is_err());
    }

    /// Keys made elsewhere (say by a multi-party ceremony) and put in the data dir are the ones
    /// used; instances without a key file get a fresh setup, saved for the next start.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn keys_made_elsewhere_are_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&Location::File(dir.path().join("c.db")))
            .await
            .unwrap();
        let dot = CircuitSpec::new(CircuitId::Dot, 16).unwrap();
        let ceremony = ambient_zk::setup_with_os_rng(&dot).unwrap();
        std::fs::create_dir_all(dir.path().join("zk")).unwrap();
        ceremony.save(&keys_path(dir.path(), &dot)).unwrap();
        let zk = Zk::load(dir.path(), &store).await.unwrap();
        assert_eq!(zk.circuit(&dot).unwrap().vk, ceremony.verifying_key);
        let chain = CircuitSpec::new(CircuitId::HashChain, 64).unwrap();
        let made = zk.circuit(&chain).unwrap().vk.clone();
        assert!(keys_path(dir.path(), &chain).exists());
        let again = Zk::load(dir.path(), &store).await.unwrap();
        assert_eq!(again.circuit(&chain).unwrap().vk, made);
        assert_ne!(made, ceremony.verifying_key);
        let pk = store
            .blob(zk.circuit(&dot).unwrap().pk_sha256.clone())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(pk, ceremony.to_bytes().unwrap());
    }
}
