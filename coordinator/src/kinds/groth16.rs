//! Groth16 keys and proof checks, for every kind that proves: `zk_proof` tasks (a circuit at a
//! size, [`super::zk`]) and `inference` tasks with `require_proof` (an ONNX model compiled to a
//! fixed-point circuit, [`super::inference`]). What one set of keys proves is a [`Subject`].
//!
//! The keys of a subject are made on its first task, by the engine that runs the scheduler
//! ([`Zk::ensure`]; with several coordinators on one store, the leader's): taken from
//! `<data_dir>/zk/<subject>.keys` when an operator put keys there (say from a multi-party
//! ceremony), else made by a setup from operating-system randomness on a blocking thread and
//! saved there. A model is compiled first, from its blob, on a blocking thread. One setup runs
//! at a time; tasks of a subject being prepared share its setup. The compressed proving key
//! goes into the blob store and the store's `zk_keys` row names it; the first coordinator to
//! name keys for a subject wins and any other uses those, so every coordinator of a store uses
//! the same keys, also after a restart. Only then are the keys ready. Until then the subject's
//! tasks wait, pending, with the setup and its estimated time as their `status_reason`; the
//! engine's tick hands them the proving key once it is ready ([`release_waiting`]).
//!
//! The proving key is the task's artifact and travels to nodes by reference above
//! `limits.inline_artifact_bytes` (the agent downloads it); the verifying key, read from the
//! head of the proving key, stays here, prepared once. The API ([`Zk::circuit`],
//! [`Zk::model`], [`Zk::instances`]) loads keys the store names but never makes any. The
//! coordinator never takes public inputs from a node: it recomputes them from the task id, the
//! task's inputs and the claimed output ([`check_result`]).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use ambient_protocol::{AgentEvent, FailureKind, Outcome, TaskType};
use ambient_zk::nn::Program;
use ambient_zk::{Bn254, CircuitSpec, Fr, VerifyingKey, ZkError};
use chrono::{DateTime, Utc};
use serde_json::Value;
use tracing::{error, info, warn};
use uuid::Uuid;

use super::inference::{self, ModelKeys};
use super::zk::{self, Circuit};
use crate::scheduler::{Scheduler, TaskRecord};
use crate::store::{ProofRecord, Store, StoreError};
use crate::submission::SubmitError;

/// Setup throughput assumed for the first estimate, in constraints per second: a setup here
/// made about 21 000 a second at every size measured (BENCHMARKS.md, "zk_proof at any size").
/// Each setup this coordinator runs replaces it with its own measured rate.
pub const SETUP_CONSTRAINTS_PER_SEC: u64 = 20_000;

/// An ONNX model that `inference` tasks prove: its blob, and the fixed-point scale it is
/// compiled at (`ambient_zk::nn::DEFAULT_FRAC_BITS`, 12, for every task today).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ModelId {
    /// sha256 of the ONNX bytes in the blob store.
    pub sha256: String,
    /// Fractional bits of every value.
    pub frac_bits: u32,
}

/// What one set of Groth16 keys proves.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Subject {
    /// A `zk_proof` circuit at one size.
    Circuit(CircuitSpec),
    /// An ONNX model, compiled.
    Model(ModelId),
}

impl fmt::Display for Subject {
    /// The store's name for the keys and their file's stem: `hash_chain-64`,
    /// `onnx-<sha256>-f12`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Circuit(spec) => write!(f, "{spec}"),
            Subject::Model(m) => write!(f, "onnx-{}-f{}", m.sha256, m.frac_bits),
        }
    }
}

impl FromStr for Subject {
    type Err = String;

    /// Reads what `Display` writes.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some(rest) = s.strip_prefix("onnx-") else {
            return s
                .parse()
                .map(Subject::Circuit)
                .map_err(|e: ZkError| e.to_string());
        };
        let (sha256, f) = rest
            .rsplit_once("-f")
            .ok_or_else(|| format!("{s:?} is not onnx-<sha256>-f<bits>"))?;
        let frac_bits = f.parse().map_err(|_| format!("{f:?} is not a bit count"))?;
        if !ambient_protocol::is_sha256_hex(sha256) {
            return Err(format!("{sha256:?} is not a sha256"));
        }
        Ok(Subject::Model(ModelId {
            sha256: sha256.to_owned(),
            frac_bits,
        }))
    }
}

impl Subject {
    /// What a task of this subject proves, in words: `hash_chain n = 1000`, `the ONNX model
    /// 1a2b3c4d5e6f at 12 fractional bits`.
    pub fn describe(&self) -> String {
        match self {
            Subject::Circuit(spec) => zk::describe(spec),
            Subject::Model(m) => format!(
                "the ONNX model {} at {} fractional bits",
                &m.sha256[..12.min(m.sha256.len())],
                m.frac_bits
            ),
        }
    }

    /// The subject of a task that carries a proof: its circuit, or its model.
    pub fn of_task(task_type: TaskType, inputs: &Value) -> Result<Subject, String> {
        match task_type {
            TaskType::ZkProof => zk::parse_inputs(inputs)
                .map(|(spec, _)| Subject::Circuit(spec))
                .map_err(|e| format!("zk_proof: {e}")),
            TaskType::Inference => inference::model_id(inputs).map(Subject::Model),
            other => Err(format!("{other} tasks carry no proof")),
        }
    }
}

/// Keys ready for use.
#[derive(Clone)]
pub enum Ready {
    /// A circuit's.
    Circuit(Arc<Circuit>),
    /// A model's.
    Model(Arc<ModelKeys>),
}

impl Ready {
    /// sha256 of the compressed proving key in the blob store (the tasks' artifact).
    pub fn pk_sha256(&self) -> &str {
        match self {
            Ready::Circuit(c) => &c.pk_sha256,
            Ready::Model(m) => &m.pk_sha256,
        }
    }

    /// The verifying key.
    pub fn vk(&self) -> &VerifyingKey<Bn254> {
        match self {
            Ready::Circuit(c) => &c.vk,
            Ready::Model(m) => &m.vk,
        }
    }

    /// Checks a node's successful result for the task `task_id` with `inputs`. Blocking (a
    /// few pairings). The public inputs come from the task and the claimed output, never
    /// from the node.
    pub fn verify_result(
        &self,
        task_id: Uuid,
        inputs: &Value,
        output: &Value,
    ) -> Result<Verified, ProofError> {
        match self {
            Ready::Circuit(c) => {
                let (_, inputs) = zk::parse_inputs(inputs).map_err(ProofError::TaskInputs)?;
                c.verify_result(task_id, &inputs, output)
            }
            Ready::Model(m) => m.verify_result(task_id, inputs, output),
        }
    }
}

/// Why a node's proof was rejected. The text becomes the `proof_rejected` failure's message.
#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    /// The task's own inputs do not parse (they were checked at submission).
    #[error("the task's inputs: {0}")]
    TaskInputs(String),
    /// The result lacks its claimed output, or it is malformed.
    #[error("the result's output: {0}")]
    Output(String),
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
    Invalid(String),
    /// The verifying thread panicked.
    #[error("the verifier crashed: {0}")]
    Crashed(String),
}

/// The `proof` of a result's output, decoded.
pub fn claimed_proof(output: &Value) -> Result<(Vec<u8>, ambient_zk::Proof<Bn254>), ProofError> {
    use base64::Engine as _;
    let b64 = output
        .get("proof")
        .and_then(Value::as_str)
        .ok_or(ProofError::NoProof)?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(ProofError::NotBase64)?;
    let proof = ambient_zk::proof_from_bytes(&bytes).map_err(ProofError::Undecodable)?;
    Ok((bytes, proof))
}

/// A proof that checked out.
#[derive(Debug, Clone)]
pub struct Verified {
    /// What the proof record names: the circuit (`hash_chain`), or the model's subject
    /// (`onnx-<sha256>-f12`).
    pub name: String,
    /// The circuit's size, or the model circuit's constraints.
    pub size: u64,
    /// The public inputs, recomputed here.
    pub public: Vec<Fr>,
    /// The compressed proof.
    pub proof: Vec<u8>,
    /// The claimed output as a string (`y` or `sum` in decimal, a model's quantised output as
    /// a JSON array): what `output_sha256` hashes and replicas compare.
    pub statement: String,
    /// Fields the coordinator writes into the result's output, beside `public_inputs`: what
    /// it checked, not what the node wrote.
    pub annotations: serde_json::Map<String, Value>,
}

/// Where the keys of one subject stand ([`Zk::ensure`]).
pub enum KeyState {
    /// Ready: tasks of this subject may be placed.
    Ready(Ready),
    /// Being looked up, queued behind another setup, or made; the text says which and how
    /// long a setup should take (a waiting task's `status_reason`).
    Preparing(String),
    /// The last attempt failed, for this reason. Said once: the next [`Zk::ensure`] tries again.
    Failed(String),
}

/// What a preparation is doing. A setup's estimate is fixed when it is queued, so that the
/// reason a task shows does not change while it runs.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Asking the store whether keys exist, and loading them if so (a model is compiled
    /// first).
    Looking,
    /// Waiting for another subject's setup to finish.
    Queued(Duration),
    /// Loading the key file or running the setup, then storing the keys.
    Making(Duration),
}

#[derive(Default)]
struct Keyring {
    ready: BTreeMap<Subject, Ready>,
    preparing: BTreeMap<Subject, Phase>,
    failed: BTreeMap<Subject, String>,
}

/// The Groth16 keys of circuits and models: those ready, and those being prepared.
pub struct Zk {
    data_dir: PathBuf,
    store: Store,
    keys: Mutex<Keyring>,
    /// One setup at a time: a setup takes every core, and up to about 1.4 KiB of memory per
    /// constraint (2 GiB at the largest sizes).
    setup_turn: tokio::sync::Mutex<()>,
    /// Setup throughput for estimates, constraints per second (the last setup's).
    setup_rate: AtomicU64,
}

/// `<data_dir>/zk/<subject>.keys`.
pub fn keys_path(data_dir: &Path, subject: &Subject) -> PathBuf {
    data_dir.join("zk").join(format!("{subject}.keys"))
}

/// Why the Groth16 keys of a subject could not be loaded or made.
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
    /// A key file does not hold keys of its subject.
    #[error("{}: {source}", .path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        source: ZkError,
    },
    /// The blob the store names as a subject's keys does not start with a verifying key.
    #[error("blob {sha256}, named as keys of {subject}: {source}")]
    CorruptBlob {
        /// The subject.
        subject: Subject,
        /// The blob.
        sha256: String,
        /// Why.
        source: ZkError,
    },
    /// A model no longer compiles (it did at submission, so this is another build's compiler).
    #[error("the model {sha256} does not compile: {source}")]
    Compile {
        /// The model's blob.
        sha256: String,
        /// Why.
        source: ambient_zk::nn::onnx::CompileError,
    },
    /// Setup or key preparation failed.
    #[error(transparent)]
    Zk(#[from] ZkError),
    /// The store could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The setup thread panicked.
    #[error("{0}")]
    Crashed(#[from] tokio::task::JoinError),
    /// Making keys for one more subject would take the keys this coordinator keeps past its
    /// budget ([`KEY_BUDGET_BYTES`], [`KEY_BUDGET_SIZES`]).
    #[error(
        "this coordinator keeps Groth16 keys for at most {max_sizes} circuit sizes and models \
         and about {max_mb} MB of proving keys, and {subject} would take it past that (it \
         holds keys for: {held}); use a size or a model it has keys for, or ask its operator"
    )]
    OverBudget {
        /// The subject asked for.
        subject: Subject,
        /// The subjects whose keys the store names.
        held: String,
        /// [`KEY_BUDGET_SIZES`].
        max_sizes: usize,
        /// [`KEY_BUDGET_BYTES`] in MB.
        max_mb: u64,
    },
}

/// Most subjects (circuit sizes and models) whose keys a coordinator's store keeps: any
/// submitter may ask for a new one, and each one's keys are kept for good.
pub const KEY_BUDGET_SIZES: usize = 32;
/// Most bytes of proving keys the store keeps: those it holds, plus the new subject's as
/// estimated from its constraints (205 bytes each, measured); 14 of the largest circuit
/// sizes' 306 MB keys.
pub const KEY_BUDGET_BYTES: u64 = 4 << 30;
/// Compressed proving-key bytes per constraint (BENCHMARKS "zk_proof at any size").
const KEY_BYTES_PER_CONSTRAINT: u64 = 205;

/// Whether the keys the store holds (`held`: name and proving-key bytes) leave room for
/// `subject`'s, of about `constraints` constraints.
fn within_budget(
    subject: &Subject,
    constraints: usize,
    held: &[(String, u64)],
) -> Result<(), KeysError> {
    let total: u64 =
        held.iter().map(|(_, b)| b).sum::<u64>() + constraints as u64 * KEY_BYTES_PER_CONSTRAINT;
    if held.len() < KEY_BUDGET_SIZES && total <= KEY_BUDGET_BYTES {
        return Ok(());
    }
    Err(KeysError::OverBudget {
        subject: subject.clone(),
        held: held
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        max_sizes: KEY_BUDGET_SIZES,
        max_mb: KEY_BUDGET_BYTES >> 20,
    })
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> KeysError {
    let path = path.to_path_buf();
    move |source| KeysError::Io { path, source }
}

/// A subject with what its setup needs: a model's compiled program.
#[derive(Clone)]
enum Target {
    Circuit(CircuitSpec),
    Model(ModelId, Arc<Program>),
}

impl Target {
    fn subject(&self) -> Subject {
        match self {
            Target::Circuit(spec) => Subject::Circuit(*spec),
            Target::Model(id, _) => Subject::Model(id.clone()),
        }
    }

    fn constraints(&self) -> usize {
        match self {
            Target::Circuit(spec) => spec.expected_constraints(),
            Target::Model(_, program) => program.constraints().unwrap_or(0),
        }
    }

    /// A setup from OS randomness: the verifying key and the compressed proving key.
    /// Blocking: seconds to minutes of CPU.
    fn setup(&self) -> Result<(VerifyingKey<Bn254>, Vec<u8>), ZkError> {
        match self {
            Target::Circuit(spec) => {
                let keys = ambient_zk::setup_with_os_rng(spec)?;
                Ok((keys.verifying_key.clone(), keys.to_bytes()?))
            }
            Target::Model(_, program) => {
                let keys = ambient_zk::nn::setup_with_os_rng(program)?;
                Ok((keys.verifying_key.clone(), keys.to_bytes()?))
            }
        }
    }

    /// Decodes a key file made elsewhere, checking it against the subject. Blocking.
    fn decode(&self, bytes: &[u8]) -> Result<VerifyingKey<Bn254>, ZkError> {
        match self {
            Target::Circuit(spec) => Ok(ambient_zk::Keys::from_bytes(spec, bytes)?.verifying_key),
            Target::Model(_, program) => {
                Ok(ambient_zk::nn::ProgramKeys::from_bytes(program, bytes)?.verifying_key)
            }
        }
    }

    /// The ready keys, from the verifying key and the proving key's blob.
    fn ready(
        &self,
        vk: VerifyingKey<Bn254>,
        pk_sha256: String,
        pk_bytes: usize,
    ) -> Result<Ready, ZkError> {
        Ok(match self {
            Target::Circuit(spec) => {
                Ready::Circuit(Arc::new(Circuit::new(*spec, vk, pk_sha256, pk_bytes)?))
            }
            Target::Model(id, program) => Ready::Model(Arc::new(ModelKeys::new(
                id.clone(),
                program,
                vk,
                pk_sha256,
                pk_bytes,
            )?)),
        })
    }
}

/// Keys made (or read from a key file) for the store: the verifying key and the compressed
/// proving key with its sha256.
struct Made {
    vk: VerifyingKey<Bn254>,
    bytes: Vec<u8>,
    sha256: String,
    /// How long the setup took; `None` when the keys came from a file.
    setup: Option<Duration>,
}

/// The keys of `path`, or a setup saved there. Blocking: seconds to minutes of CPU.
fn load_or_setup(path: &Path, target: &Target) -> Result<Made, KeysError> {
    if path.exists() {
        let bytes = std::fs::read(path).map_err(io_error(path))?;
        let vk = target.decode(&bytes).map_err(|source| KeysError::Corrupt {
            path: path.to_path_buf(),
            source,
        })?;
        let sha256 = ambient_protocol::sha256_hex(&bytes);
        return Ok(Made {
            vk,
            bytes,
            sha256,
            setup: None,
        });
    }
    let started = Instant::now();
    let (vk, bytes) = target.setup()?;
    let setup = started.elapsed();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    }
    // Write then rename, so a crash never leaves a truncated key file behind.
    let tmp = path.with_extension("keys.tmp");
    std::fs::write(&tmp, &bytes).map_err(io_error(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_error(path))?;
    info!(subject = %target.subject(), proving_key_bytes = bytes.len(),
        setup_ms = setup.as_millis() as u64, "Groth16 setup done (OS randomness).");
    let sha256 = ambient_protocol::sha256_hex(&bytes);
    Ok(Made {
        vk,
        bytes,
        sha256,
        setup: Some(setup),
    })
}

impl Zk {
    /// No keys yet: each subject's are loaded or made when first needed.
    pub fn new(data_dir: PathBuf, store: Store) -> Zk {
        Zk {
            data_dir,
            store,
            keys: Mutex::default(),
            setup_turn: tokio::sync::Mutex::new(()),
            setup_rate: AtomicU64::new(SETUP_CONSTRAINTS_PER_SEC),
        }
    }

    fn keyring(&self) -> MutexGuard<'_, Keyring> {
        self.keys.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How long a setup of `constraints` constraints should take here.
    pub fn setup_estimate(&self, constraints: usize) -> Duration {
        let rate = self.setup_rate.load(Ordering::Relaxed).max(1);
        Duration::from_secs_f64(constraints as f64 / rate as f64)
    }

    fn reason(&self, subject: &Subject, phase: Phase) -> String {
        let what = subject.describe();
        let once = match subject {
            Subject::Circuit(_) => "once for this size",
            Subject::Model(_) => "once for this model",
        };
        let about = |e: Duration| format!("about {} s, {once}", e.as_secs().max(1));
        match (phase, subject) {
            (Phase::Looking, Subject::Circuit(spec)) => format!(
                "looking for the Groth16 keys of {what} (if there are none yet, making them \
                 takes {})",
                about(self.setup_estimate(spec.expected_constraints()))
            ),
            (Phase::Looking, Subject::Model(_)) => format!(
                "compiling {what} into a circuit and looking for its Groth16 keys (if there \
                 are none yet, they are made once for this model)"
            ),
            (Phase::Queued(e), _) => format!(
                "waiting for another circuit's key setup, then making Groth16 keys for {what} \
                 ({})",
                about(e)
            ),
            (Phase::Making(e), _) => {
                format!("making Groth16 keys for {what} ({})", about(e))
            }
        }
    }

    fn set_phase(&self, subject: Subject, phase: Phase) {
        self.keyring().preparing.insert(subject, phase);
    }

    /// Where the keys of `subject` stand, starting their preparation if nothing has: loading
    /// them if the store names them, else making them (a key file's or a setup's). Requests
    /// for a subject being prepared share that preparation. The engine calls this (never the
    /// API, so only the coordinator that runs the scheduler makes keys); it does no I/O
    /// itself.
    pub fn ensure(self: &Arc<Self>, subject: Subject) -> KeyState {
        let mut ring = self.keyring();
        if let Some(c) = ring.ready.get(&subject) {
            return KeyState::Ready(c.clone());
        }
        if let Some(&phase) = ring.preparing.get(&subject) {
            drop(ring);
            return KeyState::Preparing(self.reason(&subject, phase));
        }
        if let Some(why) = ring.failed.remove(&subject) {
            return KeyState::Failed(why);
        }
        ring.preparing.insert(subject.clone(), Phase::Looking);
        drop(ring);
        tokio::spawn(self.clone().prepare(subject.clone()));
        KeyState::Preparing(self.reason(&subject, Phase::Looking))
    }

    /// Prepares the keys of `subject` and records the outcome.
    async fn prepare(self: Arc<Self>, subject: Subject) {
        let outcome = self.load_or_make(&subject).await;
        let mut ring = self.keyring();
        ring.preparing.remove(&subject);
        match outcome {
            Ok(c) => {
                info!(subject = %subject, proving_key_sha256 = %c.pk_sha256(),
                      "Groth16 keys ready.");
                ring.ready.insert(subject, c);
            }
            Err(e) => {
                error!(subject = %subject, error = %e, "Could not load or make Groth16 keys.");
                ring.failed.insert(subject, e.to_string());
            }
        }
    }

    /// What the setup of `subject` needs: for a model, its program, compiled from the blob
    /// store's bytes on a blocking thread.
    async fn target(&self, subject: &Subject) -> Result<Target, KeysError> {
        let id = match subject {
            Subject::Circuit(spec) => return Ok(Target::Circuit(*spec)),
            Subject::Model(id) => id.clone(),
        };
        let bytes = self
            .store
            .blob(id.sha256.clone())
            .await?
            .ok_or_else(|| StoreError::Missing(id.sha256.clone()))?;
        let frac_bits = id.frac_bits;
        let program =
            tokio::task::spawn_blocking(move || ambient_zk::nn::onnx::compile(&bytes, frac_bits))
                .await?
                .map_err(|source| KeysError::Compile {
                    sha256: id.sha256.clone(),
                    source,
                })?;
        Ok(Target::Model(id, Arc::new(program)))
    }

    async fn load_or_make(&self, subject: &Subject) -> Result<Ready, KeysError> {
        let target = self.target(subject).await?;
        if let Some(c) = self.load(&target).await? {
            return Ok(c);
        }
        let estimate = self.setup_estimate(target.constraints());
        self.set_phase(subject.clone(), Phase::Queued(estimate));
        let _turn = self.setup_turn.lock().await;
        // Another coordinator of the store may have named keys while this one queued.
        if let Some(c) = self.load(&target).await? {
            return Ok(c);
        }
        within_budget(subject, target.constraints(), &self.held().await?)?;
        self.set_phase(subject.clone(), Phase::Making(estimate));
        let path = keys_path(&self.data_dir, subject);
        let t = target.clone();
        let made = tokio::task::spawn_blocking(move || load_or_setup(&path, &t)).await??;
        if let Some(took) = made.setup {
            let rate = target.constraints() as f64 / took.as_secs_f64().max(1e-3);
            self.setup_rate.store(rate as u64, Ordering::Relaxed);
        }
        let Made {
            vk, bytes, sha256, ..
        } = made;
        let size = bytes.len();
        // The blob first, then the row naming it: whoever reads the row finds the blob.
        self.store.put_blob(sha256.clone(), bytes).await?;
        let standing = self
            .store
            .put_zk_keys(subject.to_string(), sha256.clone())
            .await?;
        if standing != sha256 {
            // Another coordinator named its keys first: those are the keys, and ours go.
            info!(subject = %subject, "Another coordinator made these keys first; using those.");
            if let Err(e) = self.store.delete_blob(sha256).await {
                warn!(subject = %subject, error = %e, "Could not delete the unused proving key.");
            }
            return self
                .load(&target)
                .await?
                .ok_or_else(|| StoreError::Missing(standing).into());
        }
        Ok(target.ready(vk, sha256, size)?)
    }

    /// The keys the store holds: each one's name and proving-key bytes.
    async fn held(&self) -> Result<Vec<(String, u64)>, KeysError> {
        let mut out = Vec::new();
        for (name, sha256) in self.store.all_zk_keys().await? {
            let bytes = self.store.blob_size(sha256).await?.unwrap_or(0);
            out.push((name, bytes));
        }
        Ok(out)
    }

    /// The keys the store names for `target`, if any: the verifying key read from the head of
    /// the proving key's blob (the rest is not decoded; nodes check it).
    async fn load(&self, target: &Target) -> Result<Option<Ready>, KeysError> {
        let Some(sha256) = self.store.zk_keys(target.subject().to_string()).await? else {
            return Ok(None);
        };
        Ok(Some(self.load_blob(target, sha256).await?))
    }

    /// `target`'s keys from the proving key's blob `sha256`.
    async fn load_blob(&self, target: &Target, sha256: String) -> Result<Ready, KeysError> {
        let subject = target.subject();
        let bytes = self
            .store
            .blob(sha256.clone())
            .await?
            .ok_or_else(|| StoreError::Missing(sha256.clone()))?;
        let size = bytes.len();
        let vk =
            tokio::task::spawn_blocking(move || ambient_zk::verifying_key_from_proving_key(&bytes))
                .await?
                .map_err(|source| KeysError::CorruptBlob {
                    subject,
                    sha256: sha256.clone(),
                    source,
                })?;
        Ok(target.ready(vk, sha256, size)?)
    }

    /// The keys of `subject` if the store names any (loaded once, then kept), for the API.
    /// Never makes keys.
    async fn loaded(&self, subject: &Subject) -> Result<Option<Ready>, KeysError> {
        if let Some(c) = self.keyring().ready.get(subject) {
            return Ok(Some(c.clone()));
        }
        // Asked first, so that a model with no keys is not compiled.
        let Some(sha256) = self.store.zk_keys(subject.to_string()).await? else {
            return Ok(None);
        };
        let c = self.load_blob(&self.target(subject).await?, sha256).await?;
        Ok(Some(
            self.keyring()
                .ready
                .entry(subject.clone())
                .or_insert(c)
                .clone(),
        ))
    }

    /// The keys of the circuit instance `spec` if the store names any, for the API.
    pub async fn circuit(&self, spec: &CircuitSpec) -> Result<Option<Arc<Circuit>>, KeysError> {
        Ok(match self.loaded(&Subject::Circuit(*spec)).await? {
            Some(Ready::Circuit(c)) => Some(c),
            _ => None,
        })
    }

    /// The keys of the model `id` if the store names any, for the API.
    pub async fn model(&self, id: &ModelId) -> Result<Option<Arc<ModelKeys>>, KeysError> {
        Ok(match self.loaded(&Subject::Model(id.clone())).await? {
            Some(Ready::Model(m)) => Some(m),
            _ => None,
        })
    }

    /// Every circuit instance whose keys the store names, by circuit and size (models are not
    /// listed: their keys are found by the model's sha256).
    pub async fn instances(&self) -> Result<Vec<Arc<Circuit>>, KeysError> {
        let mut out = Vec::new();
        for (name, _) in self.store.all_zk_keys().await? {
            // A model's, or a size outside today's range (an older coordinator's): not listed.
            let Ok(spec) = name.parse::<CircuitSpec>() else {
                continue;
            };
            if let Some(c) = self.circuit(&spec).await? {
                out.push(c);
            }
        }
        out.sort_by_key(|c| c.spec);
        Ok(out)
    }
}

/// Gives a new task that carries a proof its artifact, its subject's proving key, when the
/// keys are ready; otherwise starts (or joins) their preparation and leaves the task waiting,
/// pending, with the reason. Its queue timeout starts when the keys are ready.
pub(crate) fn attach_keys(zk: &Arc<Zk>, task: &mut TaskRecord) -> Result<(), SubmitError> {
    let subject =
        Subject::of_task(task.task_type, &task.inputs).map_err(SubmitError::InvalidInputs)?;
    // A failure is said once, to the tasks that waited for it; a new task starts a new try.
    let state = match zk.ensure(subject.clone()) {
        KeyState::Failed(_) => zk.ensure(subject.clone()),
        other => other,
    };
    match state {
        KeyState::Ready(c) => task.artifact_sha256 = Some(c.pk_sha256().to_owned()),
        KeyState::Preparing(reason) => {
            task.artifact_sha256 = None;
            task.status_reason = Some(reason);
            task.waiting_since = None;
        }
        KeyState::Failed(why) => {
            return Err(SubmitError::Unavailable(format!(
                "the Groth16 keys for {} could not be made: {why}",
                subject.describe()
            )));
        }
    }
    Ok(())
}

/// On each engine tick: the tasks waiting for keys get them once they are ready, say how their
/// preparation goes meanwhile, and fail if it failed. Asks [`Zk::ensure`] once per subject, so
/// a preparation that a restart or a change of leader interrupted starts again.
pub(crate) fn release_waiting(zk: &Arc<Zk>, sched: &mut Scheduler, now: DateTime<Utc>) {
    let mut by_subject: BTreeMap<Subject, Vec<Uuid>> = BTreeMap::new();
    for (id, task_type, inputs) in sched.zk_waiting() {
        match Subject::of_task(task_type, &inputs) {
            Ok(subject) => by_subject.entry(subject).or_default().push(id),
            Err(e) => sched.zk_keys_failed(id, e, now),
        }
    }
    for (subject, ids) in by_subject {
        match zk.ensure(subject.clone()) {
            KeyState::Ready(c) => {
                for id in ids {
                    sched.zk_keys_ready(id, c.pk_sha256().to_owned(), now);
                }
            }
            KeyState::Preparing(reason) => {
                for id in ids {
                    sched.zk_waiting_reason(id, reason.clone(), now);
                }
            }
            KeyState::Failed(why) => {
                let why = format!(
                    "the Groth16 keys for {} could not be made: {why}",
                    subject.describe()
                );
                for id in ids {
                    sched.zk_keys_failed(id, why.clone(), now);
                }
            }
        }
    }
}

/// Checks the proof of a result of a task that carries one (`zk_proof`, or `inference` with
/// `require_proof`) before the scheduler sees it. A proof that does not verify turns the result
/// into a `proof_rejected` failure, which is not deterministic, so the scheduler retries the
/// task elsewhere. A verified proof is stored and its id attached to the task. Returns `None`
/// when the proof could not be stored: the result is then not acknowledged, and the agent
/// sends it again.
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
    let (task_type, inputs) = sched
        .task(&task_id)
        .map(|t| (t.task_type, t.inputs.clone()))?;
    let checked = match Subject::of_task(task_type, &inputs) {
        Err(e) => Err(ProofError::TaskInputs(e)),
        Ok(subject) => {
            // A task is dispatched only once its keys are ready, but this coordinator may have
            // restarted or taken over since: then it loads them, and the node, unacknowledged,
            // sends the result again (every 5 s).
            let KeyState::Ready(keys) = zk.ensure(subject.clone()) else {
                info!(task_id = %task_id, subject = %subject,
                      "Result held until its Groth16 keys are loaded.");
                return None;
            };
            let output = output.clone();
            tokio::task::spawn_blocking(move || keys.verify_result(task_id, &inputs, &output))
                .await
                .unwrap_or_else(|e| Err(ProofError::Crashed(e.to_string())))
        }
    };
    match checked {
        Ok(verified) => {
            let proof_id = Uuid::new_v4();
            let public = ambient_zk::public_inputs_decimal(&verified.public);
            let record = ProofRecord {
                id: proof_id,
                task_id,
                circuit: verified.name,
                size: verified.size,
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
                for (k, v) in verified.annotations {
                    output[k] = v;
                }
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

/// The API's view of a stored proof, with the snarkjs JSON to check it elsewhere. `vk` is the
/// verifying key of its subject, absent when the store names no keys for it. A model's proof
/// names its subject (`onnx-<sha256>-f12`) as `circuit`, its circuit's constraints as `n`, and
/// the model as `model_sha256`.
pub fn proof_json(p: &ProofRecord, vk: Option<&VerifyingKey<Bn254>>) -> Result<Value, ZkError> {
    use base64::Engine as _;
    let proof = ambient_zk::proof_from_bytes(&p.proof)?;
    let mut json = serde_json::json!({
        "proof_id": p.id,
        "task_id": p.task_id,
        "circuit": p.circuit,
        "n": p.size,
        "public_inputs": p.public_inputs,
        "proof": base64::engine::general_purpose::STANDARD.encode(&p.proof),
        "verified_at": p.verified_at,
        "snarkjs": {
            "verification_key": vk.map(ambient_zk::snarkjs_verification_key_json),
            "proof": ambient_zk::snarkjs_proof_json(&proof),
            "public": p.public_inputs,
        },
    });
    if let Ok(Subject::Model(m)) = p.circuit.parse() {
        json["model_sha256"] = m.sha256.into();
        json["frac_bits"] = m.frac_bits.into();
    }
    Ok(json)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Location;
    use ambient_zk::CircuitId;
    use serde_json::json;

    fn circuit(n: usize) -> Subject {
        Subject::Circuit(CircuitSpec::new(CircuitId::HashChain, n).unwrap())
    }

    #[test]
    fn subjects_name_themselves_and_read_back() {
        let model = Subject::Model(ModelId {
            sha256: "ab".repeat(32),
            frac_bits: 12,
        });
        for s in [circuit(64), model] {
            assert_eq!(s.to_string().parse::<Subject>().unwrap(), s);
        }
        assert_eq!(circuit(64).to_string(), "hash_chain-64");
        for bad in [
            "onnx-12-f12",
            "onnx-",
            &format!("onnx-{}", "ab".repeat(32)),
            "x-1",
        ] {
            assert!(bad.parse::<Subject>().is_err(), "{bad}");
        }
    }

    /// Keys for new subjects stop at the budget, by count and by bytes, naming those held.
    #[test]
    fn key_setups_stop_at_the_budget() {
        let held = |n: usize, bytes: u64| -> Vec<(String, u64)> {
            (0..n)
                .map(|i| (circuit(i + 1).to_string(), bytes))
                .collect()
        };
        let n1000 = CircuitSpec::new(CircuitId::HashChain, 1000)
            .unwrap()
            .expected_constraints();
        within_budget(&circuit(1000), n1000, &held(2, 1 << 20)).unwrap();
        let err = within_budget(&circuit(1000), n1000, &held(KEY_BUDGET_SIZES, 1)).unwrap_err();
        assert!(
            err.to_string()
                .contains("at most 32 circuit sizes and models"),
            "{err}"
        );
        // 14 of the largest size's keys fit in the bytes, a 15th does not.
        let n4096 = CircuitSpec::new(CircuitId::HashChain, 4096)
            .unwrap()
            .expected_constraints();
        let big = n4096 as u64 * KEY_BYTES_PER_CONSTRAINT;
        within_budget(&circuit(4096), n4096, &held(13, big)).unwrap();
        let err = within_budget(&circuit(4096), n4096, &held(14, big)).unwrap_err();
        assert!(err.to_string().contains("hash_chain-4096"), "{err}");
    }

    /// Waits until `subject`'s keys are ready, as the engine's tick would.
    async fn ready(zk: &Arc<Zk>, subject: Subject) -> Ready {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            match zk.ensure(subject.clone()) {
                KeyState::Ready(c) => return c,
                KeyState::Preparing(reason) => assert!(reason.contains(&subject.describe())),
                KeyState::Failed(why) => panic!("{why}"),
            }
            assert!(Instant::now() < deadline, "no keys for {subject}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Keys are made on first request, once for concurrent requests, and kept: by the store
    /// for a coordinator that starts again (or another one of the store), which does not make
    /// them again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn keys_are_made_once_per_size_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&Location::File(dir.path().join("c.db")))
            .await
            .unwrap();
        let zk = Arc::new(Zk::new(dir.path().to_path_buf(), store.clone()));
        // Big enough that its setup takes a while (6 553 constraints).
        let spec = CircuitSpec::new(CircuitId::HashChain, 16).unwrap();
        let subject = Subject::Circuit(spec);
        assert!(
            zk.circuit(&spec).await.unwrap().is_none(),
            "the API makes no keys"
        );
        let KeyState::Preparing(first) = zk.ensure(subject.clone()) else {
            panic!("no keys yet")
        };
        assert!(first.contains("once for this size"), "{first}");
        // A second request joins that preparation.
        assert!(matches!(zk.ensure(subject.clone()), KeyState::Preparing(_)));
        let made = ready(&zk, subject.clone()).await;
        assert_eq!(store.all_zk_keys().await.unwrap().len(), 1);
        let pk = store
            .blob(made.pk_sha256().to_owned())
            .await
            .unwrap()
            .unwrap();
        let keys = ambient_zk::Keys::from_bytes(&spec, &pk).unwrap();
        assert_eq!(&keys.verifying_key, made.vk());
        assert!(keys_path(dir.path(), &subject).exists());
        // Another coordinator of the store (or this one restarted) uses the same keys; its key
        // file is gone, so a setup would have made others.
        std::fs::remove_file(keys_path(dir.path(), &subject)).unwrap();
        let again = Arc::new(Zk::new(dir.path().to_path_buf(), store.clone()));
        assert_eq!(&again.circuit(&spec).await.unwrap().unwrap().vk, made.vk());
        let again = Arc::new(Zk::new(dir.path().to_path_buf(), store.clone()));
        let loaded = ready(&again, subject.clone()).await;
        assert_eq!(
            (loaded.vk(), loaded.pk_sha256()),
            (made.vk(), made.pk_sha256())
        );
        assert!(!keys_path(dir.path(), &subject).exists());
        let listed = again.instances().await.unwrap();
        assert_eq!(listed.len(), 1);
        let json = zk::circuits_json(&listed);
        assert_eq!(json[0]["circuit"], "hash_chain");
        assert_eq!(json[0]["instances"][0]["n"], 16);
        assert_eq!(json[0]["instances"][0]["proving_key_bytes"], pk.len());
        assert_eq!(json[1]["instances"], json!([]));
    }

    /// Keys made elsewhere (say by a multi-party ceremony) and put in the data dir are the ones
    /// used for their size.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn keys_made_elsewhere_are_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&Location::File(dir.path().join("c.db")))
            .await
            .unwrap();
        let dot = CircuitSpec::new(CircuitId::Dot, 2).unwrap();
        let ceremony = ambient_zk::setup_with_os_rng(&dot).unwrap();
        std::fs::create_dir_all(dir.path().join("zk")).unwrap();
        ceremony
            .save(&keys_path(dir.path(), &Subject::Circuit(dot)))
            .unwrap();
        let zk = Arc::new(Zk::new(dir.path().to_path_buf(), store.clone()));
        let c = ready(&zk, Subject::Circuit(dot)).await;
        assert_eq!(c.vk(), &ceremony.verifying_key);
        let pk = store.blob(c.pk_sha256().to_owned()).await.unwrap().unwrap();
        assert_eq!(pk, ceremony.to_bytes().unwrap());
    }

    /// A key file that holds no keys of its circuit fails the preparation, said once; the next
    /// request tries again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_preparation_is_said_then_retried() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&Location::File(dir.path().join("c.db")))
            .await
            .unwrap();
        let subject = circuit(2);
        std::fs::create_dir_all(dir.path().join("zk")).unwrap();
        std::fs::write(keys_path(dir.path(), &subject), b"not keys").unwrap();
        let zk = Arc::new(Zk::new(dir.path().to_path_buf(), store));
        let deadline = Instant::now() + Duration::from_secs(60);
        let why = loop {
            match zk.ensure(subject.clone()) {
                KeyState::Failed(why) => break why,
                KeyState::Ready(_) => panic!("keys from a corrupt file"),
                KeyState::Preparing(_) => {}
            }
            assert!(Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(why.contains(&format!("{subject}.keys")), "{why}");
        std::fs::remove_file(keys_path(dir.path(), &subject)).unwrap();
        ready(&zk, subject).await;
    }
}
