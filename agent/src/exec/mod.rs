//! Executors, one per task kind, and the dispatch that runs an assignment on the right one.
//!
//! An assignment runs in two steps. On the async side, `Executors::run` does what waits on
//! the network: it downloads the artifact an assignment names by hash alone (through the blob
//! cache, [`crate::blobs`]), and for `zk_proof` it first looks whether the proving key is already
//! decoded, so a cached key is not downloaded again. A proved `inference` (`require_proof`)
//! goes to the prover, not to tract: it downloads the model by `inputs.model_sha256` and the
//! model's proving key (the artifact), unless the compiled model is cached. Then it hands the
//! bytes to one blocking thread (`spawn_blocking`), which decodes an inline artifact, checks it
//! against its hash, and runs the executor. Executors are blocking code and never run on the async workers.
//!
//! # Layout
//! - [`wasm`]: the sandbox with WASI preview1 stdio (`wasm_execution`, and `computation` shards),
//!   on wasmi, or on wasmtime's JIT with `wasm-jit`: one front end and host, two engines.
//! - [`onnx`]: ONNX inference on tract (`inference`).
//! - [`zk`]: Groth16 proofs of registered circuits (`zk_proof`).
//! - [`fl`]: this node's clients of `federated_learning` jobs (driven by messages, not by
//!   assignments: see `router`).

#[cfg(feature = "wasm")]
pub mod wasm;

#[cfg(feature = "onnx")]
pub mod onnx;

#[cfg(feature = "zk")]
pub mod zk;

#[cfg(feature = "fl")]
pub mod fl;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32};
use std::time::Instant;

use ambient_protocol::{Assignment, FailureKind, Outcome, TaskResult, TaskType};

use crate::blobs::Blobs;
use crate::config::ExecutionConfig;

/// Task kinds this build executes.
pub fn supported_task_types() -> Vec<TaskType> {
    let mut v = Vec::new();
    if cfg!(feature = "wasm") {
        v.push(TaskType::WasmExecution);
    }
    if cfg!(feature = "onnx") {
        v.push(TaskType::Inference);
    }
    if cfg!(feature = "zk") {
        v.push(TaskType::ZkProof);
    }
    if cfg!(feature = "fl") {
        v.push(TaskType::FederatedLearning);
    }
    v
}

/// A failure outcome of kind `kind` (e.g. [`FailureKind::TransferError`]).
pub(crate) fn failure(kind: FailureKind, message: impl Into<String>) -> Outcome {
    Outcome::Failure {
        kind,
        message: message.into(),
    }
}

/// The owner's settings that executors read while they run; changed live by the control API.
#[derive(Debug)]
pub(crate) struct Knobs {
    /// The CPU duty cycle wasm runs under, in percent.
    pub(crate) duty_pct: AtomicU32,
    /// Whether inference may use a GPU.
    pub(crate) gpu_enabled: AtomicBool,
}

#[cfg(feature = "wasm")]
impl wasm::DutyCycle for Knobs {
    fn duty_pct(&self) -> u32 {
        self.duty_pct.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Every executor this build has, with the limits and the blob cache they share.
pub(crate) struct Executors {
    #[cfg(feature = "wasm")]
    sandbox: wasm::WasmSandbox,
    #[cfg(feature = "onnx")]
    onnx: onnx::OnnxEngine,
    #[cfg(feature = "zk")]
    zk: zk::ZkProver,
    /// Large artifacts by reference.
    #[cfg_attr(
        not(any(feature = "wasm", feature = "onnx", feature = "zk")),
        allow(dead_code)
    )]
    blobs: Arc<Blobs>,
    #[cfg_attr(not(feature = "wasm"), allow(dead_code))]
    limits: ExecutionConfig,
    #[cfg_attr(not(any(feature = "wasm", feature = "onnx")), allow(dead_code))]
    knobs: Arc<Knobs>,
}

/// What an executor measured of the work it did, reported with its result.
#[derive(Debug, Default)]
struct Metered {
    /// Fuel, for wasm (the same on every engine).
    fuel: Option<u64>,
    /// The wasm engine that ran it.
    engine: Option<&'static str>,
    /// The model's multiply-accumulates, for inference.
    macs: Option<u64>,
}

/// What the async side got ready for the blocking executor.
enum Prepared {
    #[cfg(feature = "wasm")]
    Wasm(Fetched),
    #[cfg(feature = "onnx")]
    Onnx(Fetched),
    /// The parsed task, and the artifact unless the proving key is cached.
    #[cfg(feature = "zk")]
    Zk(zk::ZkJob, Option<Fetched>),
    /// A proved inference: the parsed task, and the model's bytes and the artifact (its
    /// proving key) unless the compiled model is cached.
    #[cfg(all(feature = "onnx", feature = "zk"))]
    ProvedOnnx(zk::model::ModelJob, Option<(Vec<u8>, Fetched)>),
}

/// An artifact once the async side is done with it.
#[cfg(any(feature = "wasm", feature = "onnx", feature = "zk"))]
enum Fetched {
    /// Named by hash alone: downloaded (or read from the blob cache) and checked.
    Downloaded(Vec<u8>),
    /// Carried in the assignment: decoded and checked on the blocking thread.
    Inline,
}

impl Executors {
    /// The executors for `limits` (the `[execution]` config), downloading through `blobs` and
    /// reading the owner's live settings from `knobs`.
    /// Compiled wasm is kept in `code_dir` too, when the engine compiles to native code.
    pub(crate) fn new(
        limits: &ExecutionConfig,
        blobs: Arc<Blobs>,
        knobs: Arc<Knobs>,
        code_dir: std::path::PathBuf,
    ) -> Executors {
        #[cfg(feature = "wasm")]
        let sandbox = {
            let engine = wasm::WasmEngine::chosen(limits.wasm_engine);
            let sandbox = wasm::WasmSandbox::with_engine(engine, limits.module_cache)
                .with_code_cache(code_dir);
            tracing::info!(engine = %sandbox.engine(), "wasm sandbox ready");
            sandbox
        };
        #[cfg(not(feature = "wasm"))]
        let _ = code_dir;
        Executors {
            #[cfg(feature = "wasm")]
            sandbox,
            #[cfg(feature = "onnx")]
            onnx: onnx::OnnxEngine::new(limits.module_cache),
            #[cfg(feature = "zk")]
            zk: zk::ZkProver::new(2),
            blobs,
            limits: limits.clone(),
            knobs,
        }
    }

    /// The engine wasm runs on here, with its version; `None` without `wasm`.
    pub(crate) fn wasm_engine(&self) -> Option<&'static str> {
        #[cfg(feature = "wasm")]
        return Some(self.sandbox.engine().name());
        #[cfg(not(feature = "wasm"))]
        None
    }

    /// Runs one assignment to a result: fetches what it needs here, then executes it on a
    /// blocking thread. `cancel` stops wasm at its next fuel slice. The error is the blocking
    /// thread's panic.
    pub(crate) async fn run(
        self: &Arc<Self>,
        a: Assignment,
        cancel: Arc<AtomicBool>,
    ) -> Result<TaskResult, tokio::task::JoinError> {
        let started = Instant::now();
        let result = move |a: &Assignment, (outcome, metered): (Outcome, Metered)| TaskResult {
            task_id: a.task_id,
            attempt: a.attempt,
            outcome,
            duration_ms: started.elapsed().as_millis() as u64,
            fuel_consumed: metered.fuel,
            macs: metered.macs,
            engine: metered.engine.map(String::from),
        };
        let prepared = match self.prepare(&a).await {
            Ok(p) => p,
            Err(failed) => return Ok(result(&a, (failed, Metered::default()))),
        };
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let out = this.execute(&a, prepared, cancel);
            result(&a, out)
        })
        .await
    }

    /// The async step: the artifact, unless the executor will not need it.
    async fn prepare(&self, a: &Assignment) -> Result<Prepared, Outcome> {
        match a.task_type {
            #[cfg(feature = "wasm")]
            TaskType::WasmExecution => Ok(Prepared::Wasm(self.fetch(a).await?)),
            #[cfg(feature = "onnx")]
            TaskType::Inference if a.require_proof => self.prepare_proved(a).await,
            #[cfg(feature = "onnx")]
            TaskType::Inference => Ok(Prepared::Onnx(self.fetch(a).await?)),
            #[cfg(feature = "zk")]
            TaskType::ZkProof => {
                let sha = a.artifact_sha256.as_deref().unwrap_or_default();
                // Decoding a proving key takes a while; skip even the download (or the base64)
                // when it is cached.
                let job = self.zk.prepare(sha, &a.inputs)?;
                let fetched = if job.needs_key() {
                    Some(self.fetch(a).await?)
                } else {
                    None
                };
                Ok(Prepared::Zk(job, fetched))
            }
            other => Err(failure(
                FailureKind::UnsupportedTaskType,
                format!("this agent cannot run {other}"),
            )),
        }
    }

    /// A proved inference's async step: the model and its proving key, unless the compiled
    /// model is cached.
    #[cfg(feature = "onnx")]
    async fn prepare_proved(&self, a: &Assignment) -> Result<Prepared, Outcome> {
        #[cfg(feature = "zk")]
        {
            let sha = a.artifact_sha256.as_deref().unwrap_or_default();
            let job = self.zk.prepare_model(sha, &a.inputs)?;
            let fetched = if job.needs_key() {
                let model = self
                    .blobs
                    .get(job.model_sha256())
                    .await
                    .map_err(|e| failure(FailureKind::TransferError, e.to_string()))?;
                Some((model, self.fetch(a).await?))
            } else {
                None
            };
            Ok(Prepared::ProvedOnnx(job, fetched))
        }
        #[cfg(not(feature = "zk"))]
        {
            let _ = a;
            Err(failure(
                FailureKind::UnsupportedTaskType,
                "this agent cannot prove inference (built without the zk feature)",
            ))
        }
    }

    /// The blocking step: runs the executor. Blocking.
    fn execute(
        &self,
        a: &Assignment,
        prepared: Prepared,
        cancel: Arc<AtomicBool>,
    ) -> (Outcome, Metered) {
        let _ = (a, &cancel);
        match prepared {
            #[cfg(feature = "wasm")]
            Prepared::Wasm(fetched) => {
                let (outcome, fuel) = self.execute_wasm(a, fetched, cancel);
                let engine = Some(self.sandbox.engine().name());
                (
                    outcome,
                    Metered {
                        fuel,
                        engine,
                        macs: None,
                    },
                )
            }
            #[cfg(feature = "onnx")]
            Prepared::Onnx(fetched) => {
                let (outcome, macs) = self.execute_onnx(a, fetched);
                (
                    outcome,
                    Metered {
                        macs,
                        ..Metered::default()
                    },
                )
            }
            #[cfg(feature = "zk")]
            Prepared::Zk(job, fetched) => (self.execute_zk(a, job, fetched), Metered::default()),
            #[cfg(all(feature = "onnx", feature = "zk"))]
            Prepared::ProvedOnnx(job, fetched) => {
                (self.execute_proved(a, job, fetched), Metered::default())
            }
        }
    }

    #[cfg(feature = "wasm")]
    fn execute_wasm(
        &self,
        a: &Assignment,
        fetched: Fetched,
        cancel: Arc<AtomicBool>,
    ) -> (Outcome, Option<u64>) {
        let module = match artifact(a, fetched) {
            Ok(m) => m,
            Err(failed) => return (failed, None),
        };
        let stdin = serde_json::to_vec(&a.inputs).unwrap_or_default();
        let exec = &self.limits;
        let limits = wasm::WasmLimits {
            fuel: a
                .max_execution_time_sec
                .saturating_mul(ambient_protocol::FUEL_PER_SECOND),
            max_memory_bytes: (exec.max_memory_mib << 20) as usize,
            max_output_bytes: (exec.max_output_kib << 10) as usize,
            wall_clock: std::time::Duration::from_secs(a.max_execution_time_sec),
        };
        let control = wasm::RunControl::new(cancel).paced(self.knobs.clone());
        match self.sandbox.run_with(&module, &stdin, &limits, control) {
            Ok(out) => {
                let output = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
                    serde_json::Value::String(String::from_utf8_lossy(&out.stdout).into_owned())
                });
                (
                    Outcome::Success {
                        output,
                        output_sha256: ambient_protocol::sha256_hex(&out.stdout),
                    },
                    Some(out.fuel_consumed),
                )
            }
            Err(e) => (failure(e.kind(), e.to_string()), None),
        }
    }

    #[cfg(feature = "onnx")]
    fn execute_onnx(&self, a: &Assignment, fetched: Fetched) -> (Outcome, Option<u64>) {
        let model = match artifact(a, fetched) {
            Ok(m) => m,
            Err(failed) => return (failed, None),
        };
        let inputs: ambient_protocol::InferenceInputs =
            match serde_json::from_value(a.inputs.clone()) {
                Ok(i) => i,
                Err(e) => {
                    let message = format!("inference inputs: {e}");
                    return (failure(FailureKind::InvalidInput, message), None);
                }
            };
        let sha = a.artifact_sha256.clone().unwrap_or_default();
        let allow_gpu = self
            .knobs
            .gpu_enabled
            .load(std::sync::atomic::Ordering::Relaxed);
        match self.onnx.run_on(&model, &sha, &inputs.tensors, allow_gpu) {
            Ok(ran) => {
                let bytes = serde_json::to_vec(&ran.output.outputs).unwrap_or_default();
                let outcome = Outcome::Success {
                    output: serde_json::to_value(&ran.output).unwrap_or_default(),
                    output_sha256: ambient_protocol::sha256_hex(&bytes),
                };
                (outcome, ran.macs)
            }
            Err(e) => (failure(e.kind(), e.to_string()), None),
        }
    }

    #[cfg(feature = "zk")]
    fn execute_zk(&self, a: &Assignment, job: zk::ZkJob, fetched: Option<Fetched>) -> Outcome {
        let sha = a.artifact_sha256.clone().unwrap_or_default();
        // Called only when the key was not cached, and then `prepare` fetched it.
        let load = || match fetched {
            Some(f) => artifact(a, f),
            None => Err(failure(
                FailureKind::TransferError,
                "the proving key was not fetched",
            )),
        };
        match self.zk.prove(job, &sha, load, a.task_id) {
            Ok((output, output_sha256)) => Outcome::Success {
                output,
                output_sha256,
            },
            Err(e) => e,
        }
    }

    #[cfg(all(feature = "onnx", feature = "zk"))]
    fn execute_proved(
        &self,
        a: &Assignment,
        job: zk::model::ModelJob,
        fetched: Option<(Vec<u8>, Fetched)>,
    ) -> Outcome {
        let sha = a.artifact_sha256.clone().unwrap_or_default();
        // Called only when the model was not cached, and then `prepare` fetched both.
        let load = || match fetched {
            Some((model, f)) => Ok((model, artifact(a, f)?)),
            None => Err(failure(
                FailureKind::TransferError,
                "the model and its proving key were not fetched",
            )),
        };
        match self.zk.prove_model(job, &sha, load, a.task_id) {
            Ok((output, output_sha256)) => Outcome::Success {
                output,
                output_sha256,
            },
            Err(e) => e,
        }
    }

    /// Downloads the artifact an assignment names by hash alone (or reads it from the blob
    /// cache); an inline one is left for the blocking thread. A missing or corrupt artifact is a
    /// transfer fault, not the task's answer, so it is reported as `transfer_error`, which the
    /// coordinator retries elsewhere.
    #[cfg(any(feature = "wasm", feature = "onnx", feature = "zk"))]
    async fn fetch(&self, a: &Assignment) -> Result<Fetched, Outcome> {
        match (&a.artifact_base64, &a.artifact_sha256) {
            (Some(_), _) => Ok(Fetched::Inline),
            (None, Some(sha)) => self
                .blobs
                .get(sha)
                .await
                .map(Fetched::Downloaded)
                .map_err(|e| failure(FailureKind::TransferError, e.to_string())),
            (None, None) => Err(failure(
                FailureKind::TransferError,
                "the assignment carries no artifact",
            )),
        }
    }
}

/// The assignment's artifact (wasm module, ONNX model or proving key): the downloaded one, or
/// the inline one, decoded and checked against its hash. Blocking (a large base64 string).
#[cfg(any(feature = "wasm", feature = "onnx", feature = "zk"))]
fn artifact(a: &Assignment, fetched: Fetched) -> Result<Vec<u8>, Outcome> {
    use base64::Engine as _;
    let transfer = |m: String| failure(FailureKind::TransferError, m);
    let (b64, want) = match (fetched, &a.artifact_base64) {
        (Fetched::Downloaded(bytes), _) => return Ok(bytes),
        (Fetched::Inline, Some(b64)) => (b64, &a.artifact_sha256),
        (Fetched::Inline, None) => {
            return Err(transfer("the assignment carries no artifact".into()));
        }
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| transfer(format!("bad base64: {e}")))?;
    if let Some(want) = want {
        let got = ambient_protocol::sha256_hex(&bytes);
        if &got != want {
            return Err(transfer(format!(
                "artifact hash {got} is not the announced {want}"
            )));
        }
    }
    Ok(bytes)
}
