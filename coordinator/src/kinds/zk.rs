//! `zk_proof` tasks: the circuits this coordinator runs, their Groth16 keys, submission checks,
//! the verification of a node's proof before its result is accepted, and the API's JSON of
//! proofs and circuits.
//!
//! A task may ask for any size in its circuit's range ([`CircuitId::size_range`]). The keys of
//! one `(circuit, size)` are made on the first task of that size, by the engine that runs the
//! scheduler ([`Zk::ensure`]; with several coordinators on one store, the leader's): taken from
//! `<data_dir>/zk/<spec>.keys` when an operator put keys there (say from a multi-party
//! ceremony), else made by a setup from operating-system randomness on a blocking thread and
//! saved there. One setup runs at a time; tasks of a size being prepared share its setup. The
//! compressed proving key goes into the blob store and the store's `zk_keys` row names it; the
//! first coordinator to name keys for a size wins and any other uses those, so every
//! coordinator of a store uses the same keys, also after a restart. Only then are the keys
//! ready. Until then the size's tasks wait, pending, with the setup and its estimated time as
//! their `status_reason`; the engine's tick hands them the proving key once it is ready
//! (`release_waiting`).
//!
//! The proving key is the task's artifact and travels to nodes by reference above
//! `limits.inline_artifact_bytes` (the agent downloads it); the verifying key, read from the
//! head of the proving key, stays here, prepared once. The API ([`Zk::circuit`],
//! [`Zk::instances`]) loads keys the store names but never makes any. The coordinator never
//! takes public inputs from a node: it recomputes them from the task id, the task's inputs and
//! the claimed output ([`ambient_zk::public_inputs_for`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use ambient_protocol::{AgentEvent, FailureKind, Outcome};
use ambient_zk::{
    Bn254, CircuitId, CircuitSpec, Inputs, Output, PreparedVerifier, PublicInputs, VerifyingKey,
    ZkError,
};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde_json::Value;
use tracing::{error, info, warn};
use uuid::Uuid;

use crate::scheduler::{Scheduler, TaskRecord};
use crate::store::{ProofRecord, Store, StoreError};
use crate::submission::{Accepted, SubmitError};

pub use ambient_zk::{parse_field, parse_task_inputs as parse_inputs};

/// Setup throughput assumed for the first estimate, in constraints per second: a setup here
/// made about 21 000 a second at every size measured (BENCHMARKS.md, "zk_proof at any size").
/// Each setup this coordinator runs replaces it with its own measured rate.
pub const SETUP_CONSTRAINTS_PER_SEC: u64 = 20_000;

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

/// Why a node's proof was rejected. The text becomes the `proof_rejected` failure's message.
#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    /// The task's own inputs do not parse (they were checked at submission).
    #[error("the task's inputs: {0}")]
    TaskInputs(String),
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
        let b64 = output
            .get("proof")
            .and_then(Value::as_str)
            .ok_or(ProofError::NoProof)?;
        let proof_bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(ProofError::NotBase64)?;
        let proof = ambient_zk::proof_from_bytes(&proof_bytes).map_err(ProofError::Undecodable)?;
        let public = ambient_zk::public_inputs_for(&spec, task_id.as_bytes(), inputs, &claimed)
            .map_err(ProofError::Zk)?;
        match self.verifier.verify(&public, &proof) {
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

/// Where the keys of one circuit instance stand ([`Zk::ensure`]).
pub enum KeyState {
    /// Ready: tasks of this size may be placed.
    Ready(Arc<Circuit>),
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
    /// Asking the store whether keys exist, and loading them if so.
    Looking,
    /// Waiting for another instance's setup to finish.
    Queued(Duration),
    /// Loading the key file or running the setup, then storing the keys.
    Making(Duration),
}

#[derive(Default)]
struct Keyring {
    ready: BTreeMap<CircuitSpec, Arc<Circuit>>,
    preparing: BTreeMap<CircuitSpec, Phase>,
    failed: BTreeMap<CircuitSpec, String>,
}

/// The `zk_proof` circuits' keys: those ready, and those being prepared.
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

/// Why the Groth16 keys of a circuit instance could not be loaded or made.
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
    /// The blob the store names as an instance's keys does not start with a verifying key.
    #[error("blob {sha256}, named as keys of {spec}: {source}")]
    CorruptBlob {
        /// The instance.
        spec: CircuitSpec,
        /// The blob.
        sha256: String,
        /// Why.
        source: ZkError,
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
    /// Making keys for one more size would take the keys this coordinator keeps past its
    /// budget ([`KEY_BUDGET_BYTES`], [`KEY_BUDGET_SIZES`]).
    #[error(
        "this coordinator keeps Groth16 keys for at most {max_sizes} circuit sizes and about \
         {max_mb} MB of proving keys, and {spec} would take it past that (it holds keys for: \
         {held}); use a size it has keys for, or ask its operator"
    )]
    OverBudget {
        /// The size asked for.
        spec: CircuitSpec,
        /// The sizes whose keys the store names.
        held: String,
        /// [`KEY_BUDGET_SIZES`].
        max_sizes: usize,
        /// [`KEY_BUDGET_BYTES`] in MB.
        max_mb: u64,
    },
}

/// Most circuit sizes whose keys a coordinator's store keeps: any submitter may ask for a new
/// size, and each one's keys are kept for good.
pub const KEY_BUDGET_SIZES: usize = 32;
/// Most bytes of proving keys the store keeps, as estimated from the sizes' constraints (205
/// bytes each, measured): 14 of the largest sizes' 306 MB keys.
pub const KEY_BUDGET_BYTES: u64 = 4 << 30;
/// Compressed proving-key bytes per constraint (BENCHMARKS "zk_proof at any size").
const KEY_BYTES_PER_CONSTRAINT: u64 = 205;

/// Whether the store's keys (`held`, by instance name) leave room for `spec`'s.
fn within_budget(spec: &CircuitSpec, held: &[(String, String)]) -> Result<(), KeysError> {
    let specs: Vec<CircuitSpec> = held.iter().filter_map(|(n, _)| n.parse().ok()).collect();
    let bytes = |s: &CircuitSpec| s.expected_constraints() as u64 * KEY_BYTES_PER_CONSTRAINT;
    let total: u64 = specs.iter().map(bytes).sum::<u64>() + bytes(spec);
    if specs.len() < KEY_BUDGET_SIZES && total <= KEY_BUDGET_BYTES {
        return Ok(());
    }
    Err(KeysError::OverBudget {
        spec: *spec,
        held: specs
            .iter()
            .map(ToString::to_string)
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
fn load_or_setup(path: &Path, spec: &CircuitSpec) -> Result<Made, KeysError> {
    if path.exists() {
        let bytes = std::fs::read(path).map_err(io_error(path))?;
        let keys =
            ambient_zk::Keys::from_bytes(spec, &bytes).map_err(|source| KeysError::Corrupt {
                path: path.to_path_buf(),
                source,
            })?;
        let sha256 = ambient_protocol::sha256_hex(&bytes);
        return Ok(Made {
            vk: keys.verifying_key,
            bytes,
            sha256,
            setup: None,
        });
    }
    let started = Instant::now();
    let keys = ambient_zk::setup_with_os_rng(spec)?;
    let setup = started.elapsed();
    let bytes = keys.to_bytes()?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    }
    // Write then rename, so a crash never leaves a truncated key file behind.
    let tmp = path.with_extension("keys.tmp");
    std::fs::write(&tmp, &bytes).map_err(io_error(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_error(path))?;
    info!(circuit = %spec, proving_key_bytes = bytes.len(),
        setup_ms = setup.as_millis() as u64, "Groth16 setup done (OS randomness).");
    let sha256 = ambient_protocol::sha256_hex(&bytes);
    Ok(Made {
        vk: keys.verifying_key,
        bytes,
        sha256,
        setup: Some(setup),
    })
}

impl Zk {
    /// No keys yet: each instance's are loaded or made when first needed.
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

    /// The instance's keys if they are ready here (no I/O).
    pub fn ready(&self, spec: &CircuitSpec) -> Option<Arc<Circuit>> {
        self.keyring().ready.get(spec).cloned()
    }

    /// How long a setup of `spec` should take here.
    pub fn setup_estimate(&self, spec: &CircuitSpec) -> Duration {
        let rate = self.setup_rate.load(Ordering::Relaxed).max(1);
        Duration::from_secs_f64(spec.expected_constraints() as f64 / rate as f64)
    }

    fn reason(&self, spec: &CircuitSpec, phase: Phase) -> String {
        let what = describe(spec);
        let estimate = match phase {
            Phase::Looking => self.setup_estimate(spec),
            Phase::Queued(e) | Phase::Making(e) => e,
        };
        let about = format!("about {} s, once for this size", estimate.as_secs().max(1));
        match phase {
            Phase::Looking => format!(
                "looking for the Groth16 keys of {what} (if there are none yet, making them \
                 takes {about})"
            ),
            Phase::Queued(_) => format!(
                "waiting for another circuit's key setup, then making Groth16 keys for {what} \
                 ({about})"
            ),
            Phase::Making(_) => format!("making Groth16 keys for {what} ({about})"),
        }
    }

    fn set_phase(&self, spec: CircuitSpec, phase: Phase) {
        self.keyring().preparing.insert(spec, phase);
    }

    /// Where the keys of `spec` stand, starting their preparation if nothing has: loading them
    /// if the store names them, else making them (a key file's or a setup's). Requests for an
    /// instance being prepared share that preparation. The engine calls this (never the API,
    /// so only the coordinator that runs the scheduler makes keys); it does no I/O itself.
    pub fn ensure(self: &Arc<Self>, spec: CircuitSpec) -> KeyState {
        let mut ring = self.keyring();
        if let Some(c) = ring.ready.get(&spec) {
            return KeyState::Ready(c.clone());
        }
        if let Some(&phase) = ring.preparing.get(&spec) {
            drop(ring);
            return KeyState::Preparing(self.reason(&spec, phase));
        }
        if let Some(why) = ring.failed.remove(&spec) {
            return KeyState::Failed(why);
        }
        ring.preparing.insert(spec, Phase::Looking);
        drop(ring);
        tokio::spawn(self.clone().prepare(spec));
        KeyState::Preparing(self.reason(&spec, Phase::Looking))
    }

    /// Prepares the keys of `spec` and records the outcome.
    async fn prepare(self: Arc<Self>, spec: CircuitSpec) {
        let outcome = self.load_or_make(spec).await;
        let mut ring = self.keyring();
        ring.preparing.remove(&spec);
        match outcome {
            Ok(c) => {
                info!(circuit = %spec, proving_key_sha256 = %c.pk_sha256,
                      proving_key_bytes = c.pk_bytes, "Groth16 keys ready.");
                ring.ready.insert(spec, Arc::new(c));
            }
            Err(e) => {
                error!(circuit = %spec, error = %e, "Could not load or make Groth16 keys.");
                ring.failed.insert(spec, e.to_string());
            }
        }
    }

    async fn load_or_make(&self, spec: CircuitSpec) -> Result<Circuit, KeysError> {
        if let Some(c) = self.load(spec).await? {
            return Ok(c);
        }
        let estimate = self.setup_estimate(&spec);
        self.set_phase(spec, Phase::Queued(estimate));
        let _turn = self.setup_turn.lock().await;
        // Another coordinator of the store may have named keys while this one queued.
        if let Some(c) = self.load(spec).await? {
            return Ok(c);
        }
        within_budget(&spec, &self.store.all_zk_keys().await?)?;
        self.set_phase(spec, Phase::Making(estimate));
        let path = keys_path(&self.data_dir, &spec);
        let made = tokio::task::spawn_blocking(move || load_or_setup(&path, &spec)).await??;
        if let Some(took) = made.setup {
            let rate = spec.expected_constraints() as f64 / took.as_secs_f64().max(1e-3);
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
            .put_zk_keys(spec.to_string(), sha256.clone())
            .await?;
        if standing != sha256 {
            // Another coordinator named its keys first: those are the keys, and ours go.
            info!(circuit = %spec, "Another coordinator made this circuit's keys first; using those.");
            if let Err(e) = self.store.delete_blob(sha256).await {
                warn!(circuit = %spec, error = %e, "Could not delete the unused proving key.");
            }
            return self
                .load(spec)
                .await?
                .ok_or_else(|| StoreError::Missing(standing).into());
        }
        Ok(Circuit::new(spec, vk, sha256, size)?)
    }

    /// The keys the store names for `spec`, if any: the verifying key read from the head of the
    /// proving key's blob (the rest is not decoded; nodes check it).
    async fn load(&self, spec: CircuitSpec) -> Result<Option<Circuit>, KeysError> {
        let Some(sha256) = self.store.zk_keys(spec.to_string()).await? else {
            return Ok(None);
        };
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
                    spec,
                    sha256: sha256.clone(),
                    source,
                })?;
        Ok(Some(Circuit::new(spec, vk, sha256, size)?))
    }

    /// The keys of `spec` if the store names any (loaded once, then kept), for the API. Never
    /// makes keys.
    pub async fn circuit(&self, spec: &CircuitSpec) -> Result<Option<Arc<Circuit>>, KeysError> {
        if let Some(c) = self.ready(spec) {
            return Ok(Some(c));
        }
        let Some(c) = self.load(*spec).await? else {
            return Ok(None);
        };
        Ok(Some(
            self.keyring()
                .ready
                .entry(*spec)
                .or_insert_with(|| Arc::new(c))
                .clone(),
        ))
    }

    /// Every instance whose keys the store names, by circuit and size.
    pub async fn instances(&self) -> Result<Vec<Arc<Circuit>>, KeysError> {
        let mut out = Vec::new();
        for (name, _) in self.store.all_zk_keys().await? {
            // A size outside today's range (an older coordinator's) is not served.
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

/// Gives a new `zk_proof` task its artifact, its circuit's proving key, when the keys are
/// ready; otherwise starts (or joins) their preparation and leaves the task waiting, pending,
/// with the reason. Its queue timeout starts when the keys are ready.
pub(crate) fn attach_keys(zk: &Arc<Zk>, task: &mut TaskRecord) -> Result<(), SubmitError> {
    let (spec, _) = parse_inputs(&task.inputs)
        .map_err(|e| SubmitError::InvalidInputs(format!("zk_proof: {e}")))?;
    // A failure is said once, to the tasks that waited for it; a new task starts a new try.
    let state = match zk.ensure(spec) {
        KeyState::Failed(_) => zk.ensure(spec),
        other => other,
    };
    match state {
        KeyState::Ready(c) => task.artifact_sha256 = Some(c.pk_sha256.clone()),
        KeyState::Preparing(reason) => {
            task.artifact_sha256 = None;
            task.status_reason = Some(reason);
            task.waiting_since = None;
        }
        KeyState::Failed(why) => {
            return Err(SubmitError::Unavailable(format!(
                "the Groth16 keys for {} could not be made: {why}",
                describe(&spec)
            )));
        }
    }
    Ok(())
}

/// On each engine tick: the `zk_proof` tasks waiting for keys get them once they are ready, say
/// how their preparation goes meanwhile, and fail if it failed. Asks [`Zk::ensure`] once per
/// instance, so a preparation that a restart or a change of leader interrupted starts again.
pub(crate) fn release_waiting(zk: &Arc<Zk>, sched: &mut Scheduler, now: DateTime<Utc>) {
    let mut by_spec: BTreeMap<CircuitSpec, Vec<Uuid>> = BTreeMap::new();
    for (id, inputs) in sched.zk_waiting() {
        match parse_inputs(&inputs) {
            Ok((spec, _)) => by_spec.entry(spec).or_default().push(id),
            Err(e) => sched.zk_keys_failed(id, format!("zk_proof: {e}"), now),
        }
    }
    for (spec, ids) in by_spec {
        match zk.ensure(spec) {
            KeyState::Ready(c) => {
                for id in ids {
                    sched.zk_keys_ready(id, c.pk_sha256.clone(), now);
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
                    describe(&spec)
                );
                for id in ids {
                    sched.zk_keys_failed(id, why.clone(), now);
                }
            }
        }
    }
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
    let checked = match parse_inputs(&inputs) {
        Err(e) => Err(ProofError::TaskInputs(e)),
        Ok((spec, inputs)) => {
            // A task is dispatched only once its keys are ready, but this coordinator may have
            // restarted or taken over since: then it loads them, and the node, unacknowledged,
            // sends the result again (every 5 s).
            let KeyState::Ready(circuit) = zk.ensure(spec) else {
                info!(task_id = %task_id, circuit = %spec,
                      "Result held until this circuit's keys are loaded.");
                return None;
            };
            let output = output.clone();
            tokio::task::spawn_blocking(move || circuit.verify_result(task_id, &inputs, &output))
                .await
                .unwrap_or_else(|e| Err(ProofError::Crashed(e.to_string())))
        }
    };
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
/// verification key is absent when the store names no keys for its circuit instance.
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

/// The API's view of the circuits: each with its size range and the sizes whose keys exist
/// (`instances`, from [`Zk::instances`]), each of those with its snarkjs verification key.
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
    use crate::store::Location;
    use ambient_zk::{Fr, Inputs};
    use serde_json::json;

    /// Keys for new sizes stop at the budget, by count and by bytes, naming the sizes held.
    #[test]
    fn key_setups_stop_at_the_budget() {
        let spec = |n| CircuitSpec::new(CircuitId::HashChain, n).unwrap();
        let held = |sizes: &[usize]| -> Vec<(String, String)> {
            sizes
                .iter()
                .map(|&n| (spec(n).to_string(), "sha".to_string()))
                .collect()
        };
        within_budget(&spec(1000), &held(&[64, 256])).unwrap();
        let many: Vec<usize> = (1..=KEY_BUDGET_SIZES).collect();
        let err = within_budget(&spec(1000), &held(&many)).unwrap_err();
        assert!(
            err.to_string().contains("at most 32 circuit sizes"),
            "{err}"
        );
        // 14 of the largest size fit in the bytes, a 15th does not.
        within_budget(&spec(4096), &held(&[4096; 13])).unwrap();
        let err = within_budget(&spec(4096), &held(&[4096; 14])).unwrap_err();
        assert!(err.to_string().contains("hash_chain-4096"), "{err}");
    }

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

    /// Waits until `spec`'s keys are ready, as the engine's tick would.
    async fn ready(zk: &Arc<Zk>, spec: CircuitSpec) -> Arc<Circuit> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            match zk.ensure(spec) {
                KeyState::Ready(c) => return c,
                KeyState::Preparing(reason) => assert!(reason.contains(&describe(&spec))),
                KeyState::Failed(why) => panic!("{why}"),
            }
            assert!(Instant::now() < deadline, "no keys for {spec}");
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
        assert!(
            zk.circuit(&spec).await.unwrap().is_none(),
            "the API makes no keys"
        );
        let KeyState::Preparing(first) = zk.ensure(spec) else {
            panic!("no keys yet")
        };
        assert!(first.contains("once for this size"), "{first}");
        // A second request joins that preparation.
        assert!(matches!(zk.ensure(spec), KeyState::Preparing(_)));
        let made = ready(&zk, spec).await;
        assert_eq!(store.all_zk_keys().await.unwrap().len(), 1);
        let pk = store.blob(made.pk_sha256.clone()).await.unwrap().unwrap();
        assert_eq!(pk.len(), made.pk_bytes);
        let keys = ambient_zk::Keys::from_bytes(&spec, &pk).unwrap();
        assert_eq!(keys.verifying_key, made.vk);
        assert!(keys_path(dir.path(), &spec).exists());
        // Another coordinator of the store (or this one restarted) uses the same keys; its key
        // file is gone, so a setup would have made others.
        std::fs::remove_file(keys_path(dir.path(), &spec)).unwrap();
        let again = Arc::new(Zk::new(dir.path().to_path_buf(), store.clone()));
        assert_eq!(again.circuit(&spec).await.unwrap().unwrap().vk, made.vk);
        let again = Arc::new(Zk::new(dir.path().to_path_buf(), store.clone()));
        let loaded = ready(&again, spec).await;
        assert_eq!((&loaded.vk, &loaded.pk_sha256), (&made.vk, &made.pk_sha256));
        assert!(!keys_path(dir.path(), &spec).exists());
        let listed = again.instances().await.unwrap();
        assert_eq!(listed.len(), 1);
        let json = circuits_json(&listed);
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
        ceremony.save(&keys_path(dir.path(), &dot)).unwrap();
        let zk = Arc::new(Zk::new(dir.path().to_path_buf(), store.clone()));
        let c = ready(&zk, dot).await;
        assert_eq!(c.vk, ceremony.verifying_key);
        let pk = store.blob(c.pk_sha256.clone()).await.unwrap().unwrap();
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
        let spec = CircuitSpec::new(CircuitId::HashChain, 2).unwrap();
        std::fs::create_dir_all(dir.path().join("zk")).unwrap();
        std::fs::write(keys_path(dir.path(), &spec), b"not keys").unwrap();
        let zk = Arc::new(Zk::new(dir.path().to_path_buf(), store));
        let deadline = Instant::now() + Duration::from_secs(60);
        let why = loop {
            match zk.ensure(spec) {
                KeyState::Failed(why) => break why,
                KeyState::Ready(_) => panic!("keys from a corrupt file"),
                KeyState::Preparing(_) => {}
            }
            assert!(Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(why.contains(&format!("{spec}.keys")), "{why}");
        std::fs::remove_file(keys_path(dir.path(), &spec)).unwrap();
        ready(&zk, spec).await;
    }
}
