//! `zk_proof` tasks: the circuits this coordinator runs, their Groth16 keys, input checks and
//! the verification of a node's proof before its result is accepted.
//!
//! At start, each supported circuit instance gets its keys from `<data_dir>/zk/<spec>.keys`, or
//! from a fresh setup with operating-system randomness (then saved there). The proving key goes
//! into the blob store and travels to nodes as the task's artifact; the verifying key stays here,
//! prepared once. The coordinator never takes public inputs from a node: it recomputes them from
//! the task id, the task's inputs and the claimed output ([`ambient_zk::public_inputs_for`]).

use std::path::{Path, PathBuf};

use ambient_zk::{
    Bn254, CircuitId, CircuitSpec, Keys, Output, PreparedVerifier, PublicInputs, VerifyingKey,
};
use base64::Engine as _;
use serde_json::Value;
use uuid::Uuid;

use crate::store::Store;

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

/// Refuses a circuit instance this coordinator has no keys for.
pub fn check_supported(spec: &CircuitSpec) -> Result<(), String> {
    if SUPPORTED.contains(&(spec.id(), spec.size())) {
        Ok(())
    } else {
        Err(format!(
            "{} at size {} is not supported; supported circuits: {}",
            spec.id(),
            spec.size(),
            supported_list()
        ))
    }
}

/// The output a node claims, read from its result: `y` for `hash_chain`, `sum` for `dot`,
/// both decimal strings.
pub fn claimed_output(spec: &CircuitSpec, output: &Value) -> Result<Output, String> {
    let field = |k: &str| {
        output
            .get(k)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("the result has no {k} (a decimal string)"))
    };
    match spec.id() {
        CircuitId::HashChain => Ok(Output::HashChain {
            y: parse_field(field("y")?)?,
        }),
        CircuitId::Dot => Ok(Output::Dot {
            sum: field("sum")?
                .parse()
                .map_err(|e| format!("sum is not an i128: {e}"))?,
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

fn load_or_setup(path: &Path, spec: &CircuitSpec) -> Result<(Keys, Vec<u8>), String> {
    if path.exists() {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let keys =
            Keys::from_bytes(spec, &bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        return Ok((keys, bytes));
    }
    let started = std::time::Instant::now();
    let keys = ambient_zk::setup_with_os_rng(spec).map_err(|e| e.to_string())?;
    let bytes = keys.to_bytes().map_err(|e| e.to_string())?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    // Write then rename, so a crash never leaves a truncated key file behind.
    let tmp = path.with_extension("keys.tmp");
    std::fs::write(&tmp, &bytes).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))?;
    tracing::info!(circuit = %spec, proving_key_bytes = bytes.len(),
        setup_ms = started.elapsed().as_millis() as u64, "Groth16 setup done (OS randomness).");
    Ok((keys, bytes))
}

impl Zk {
    /// Loads (or sets up and saves) the keys of every supported instance and puts each proving
    /// key into the blob store. Setup runs on blocking threads.
    pub async fn load(data_dir: &Path, store: &Store) -> Result<Zk, String> {
        let mut circuits = Vec::new();
        for &(id, size) in SUPPORTED {
            let spec = CircuitSpec::new(id, size).map_err(|e| e.to_string())?;
            let path = keys_path(data_dir, &spec);
            let (keys, bytes) = tokio::task::spawn_blocking(move || load_or_setup(&path, &spec))
                .await
                .map_err(|e| e.to_string())??;
            let sha = ambient_protocol::sha256_hex(&bytes);
            let pk_bytes = bytes.len();
            store
                .put_blob(sha.clone(), bytes)
                .await
                .map_err(|e| e.to_string())?;
            let verifier = PreparedVerifier::new(&keys.verifying_key).map_err(|e| e.to_string())?;
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
    ) -> Result<Verified, String> {
        let (spec, inputs) = parse_inputs(inputs).map_err(|e| format!("the task's inputs: {e}"))?;
        let circuit = self
            .circuit(&spec)
            .ok_or_else(|| format!("no keys for {spec}"))?;
        let claimed = claimed_output(&spec, output)?;
        let b64 = output
            .get("proof")
            .and_then(Value::as_str)
            .ok_or("the result has no proof")?;
        let proof_bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| format!("the proof is not base64: {e}"))?;
        let proof = ambient_zk::proof_from_bytes(&proof_bytes)
            .map_err(|e| format!("the proof does not decode: {e}"))?;
        let public = ambient_zk::public_inputs_for(&spec, task_id.as_bytes(), &inputs, &claimed)
            .map_err(|e| e.to_string())?;
        match circuit.verifier.verify(&public, &proof) {
            Ok(true) => Ok(Verified {
                spec,
                public,
                proof: proof_bytes,
                statement: statement(&spec, output).unwrap_or_default().to_owned(),
            }),
            Ok(false) => Err(format!(
                "the proof does not verify for {spec} against this task and the claimed output"
            )),
            Err(e) => Err(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        assert!(check_supported(&spec).unwrap_err().contains("n = 64"));
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
        let store = Store::open(&dir.path().join("c.db")).unwrap();
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
