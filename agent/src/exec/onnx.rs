//! `inference` tasks: ONNX models on tract.
//!
//! A model is parsed, checked against the request (input names, dtypes, ranks and fixed
//! dimensions), typed with the request's concrete shapes, optimised and made runnable. The
//! runnable plan is cached by (model sha256, input shapes and dtypes), so a batch of requests of
//! one shape pays for optimisation once. Beside the plan the cache keeps the model's
//! multiply-accumulates for those shapes ([`count_macs`]), which the result reports so that the
//! work can be priced by what it computed.
//!
//! With the `gpu-cuda` feature (or `gpu-metal` on macOS) the plan is prepared on tract's GPU
//! runtime when one is usable (`runtime_for_name("gpu-or-cpu")`: Metal, then CUDA). If preparing or running on the GPU fails (an operator the
//! backend lacks, a missing library), the same model runs on the CPU, and the result's `device`
//! says which one ran it.
//!
//! Every failure is an [`OnnxError`] with a stable [`OnnxError::kind`]; tract's own errors are
//! wrapped at this boundary with their message. A panic inside tract is caught and reported as
//! an [`OnnxError::Run`].
//!
//! Models are parsed with tract's ONNX operator table amended by [`ops`]: fixes for operators
//! tract 0.23.9 computes wrongly (a recurrence with `direction=reverse`, SpaceToDepth in CRD
//! mode, Swish with `alpha`), operators it lacks (`Attention`, `SwiGLU`, `LpPool`), and refusals
//! (`unsupported_operator`, naming the operator and attribute) where tract would silently ignore
//! an attribute. Outputs are named by the model's graph outputs, in order. A model whose shapes
//! depend on the values of its inputs (Resize with `scales` given as an input, BatchNormalization
//! with its parameters as inputs) is prepared again with the request's tensors as constants when
//! tract cannot type it otherwise; such a plan is not cached. `scripts/onnx-conformance` measures
//! all of this against ONNX's backend node test cases (`docs/onnx-coverage.md`).
//!
//! # Layout
//! - [`ops`]: our entries in tract's ONNX operator table.
//! - [`attention`]: ONNX `Attention` (opsets 23 to 25).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use ambient_protocol::{FailureKind, InferenceOutput, TensorJson};
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid as _;
use tract_onnx::tract_hir::prelude::InferenceModel;

pub mod attention;
pub mod ops;

/// Why an inference failed.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    /// The bytes are not a loadable ONNX model.
    #[error("invalid model: {0}")]
    InvalidModel(String),
    /// The model uses an operator tract does not implement.
    #[error("unsupported operator: {0}")]
    UnsupportedOperator(String),
    /// The request names an input the model lacks, or omits one it has.
    #[error("input mismatch: {0}")]
    InputNames(String),
    /// A tensor's shape does not fit the model.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// A tensor's dtype does not fit the model, or is not supported.
    #[error("dtype mismatch: {0}")]
    Dtype(String),
    /// The model failed while running.
    #[error("inference failed: {0}")]
    Run(String),
}

impl OnnxError {
    /// Stable code, reported as the task failure kind.
    pub fn kind(&self) -> FailureKind {
        match self {
            OnnxError::InvalidModel(_) => FailureKind::InvalidModel,
            OnnxError::UnsupportedOperator(_) => FailureKind::UnsupportedOperator,
            OnnxError::InputNames(_) | OnnxError::Shape(_) | OnnxError::Dtype(_) => {
                FailureKind::InvalidInput
            }
            OnnxError::Run(_) => FailureKind::InferenceFailed,
        }
    }
}

/// tract's ONNX front end with our operator table ([`ops::register`]).
static FRAMEWORK: LazyLock<tract_onnx::Onnx> = LazyLock::new(|| {
    let mut onnx = tract_onnx::onnx();
    ops::register(&mut onnx.op_register);
    onnx
});

/// The refusal [`ops`] raised while building the model, if that is why it failed.
fn refusal(e: &TractError) -> Option<&ops::Unsupported> {
    e.chain().find_map(|c| c.downcast_ref::<ops::Unsupported>())
}

fn model_error(e: TractError) -> OnnxError {
    if let Some(u) = refusal(&e) {
        return OnnxError::UnsupportedOperator(u.0.clone());
    }
    let text = format!("{e:#}");
    if text.contains("Unimplemented") || text.contains("not implemented") {
        OnnxError::UnsupportedOperator(text)
    } else {
        OnnxError::InvalidModel(text)
    }
}

type Plan = Arc<dyn Runnable>;

/// A model made runnable for one set of input shapes and dtypes.
struct Prepared {
    plan: Plan,
    /// `cpu`, or the GPU that runs the plan (`cuda:0`).
    device: String,
    /// The plan's inputs, in order, by name; empty when the inputs were frozen into it.
    inputs: Vec<String>,
    /// The model's graph outputs, in order, by name.
    outputs: Vec<String>,
    /// The request's tensors are constants of this plan: it serves only those values.
    frozen: bool,
    /// [`count_macs`] of the model for these shapes; `None` when tract could not count them.
    macs: Option<u64>,
}

/// An inference's answer and the work it took.
#[derive(Debug)]
pub struct Inference {
    /// The named outputs and the device that computed them.
    pub output: InferenceOutput,
    /// Multiply-accumulates of the model's graph for the request's shapes ([`count_macs`]);
    /// `None` when tract could not count them.
    pub macs: Option<u64>,
}

/// Multiply-accumulates `model` performs in one run: the sum of tract's own cost model
/// (`Cost::FMA` of [`TypedOp::cost`]) over its nodes, for the shapes its facts carry, a loop
/// body counted once per iteration.
///
/// Counted on the decluttered model, before a runtime optimises it, so that the figure is the
/// graph's and not the kernels': the same on every CPU and GPU, and for one model and one set of
/// input shapes always the same. It fails when a count depends on a symbol (a dimension
/// the shapes leave open) or an operator cannot cost itself.
pub fn count_macs(model: &TypedModel) -> TractResult<u64> {
    use tract_onnx::tract_core::ops::{Cost, scan};
    let concrete = |n: &TDim| -> TractResult<u64> {
        n.to_i64()
            .ok()
            .and_then(|v| u64::try_from(v).ok())
            .ok_or_else(|| TractError::msg(format!("a cost of {n} is not a count")))
    };
    let mut total = 0u64;
    for node in model.nodes() {
        let inputs = model.node_input_facts(node.id)?;
        for (cost, n) in node.op.cost(&inputs)? {
            if matches!(cost, Cost::FMA(_)) {
                total = total.saturating_add(concrete(&n)?);
            }
        }
        if let Some(scan) = node.op_as::<scan::Scan>() {
            let iterations = match scan::iteration_count(&scan.input_mapping, &inputs) {
                Some(n) => concrete(&n)?,
                None => 1,
            };
            total = total.saturating_add(count_macs(&scan.body)?.saturating_mul(iterations));
        }
    }
    Ok(total)
}

/// The engine: the plan cache and the chosen runtime.
pub struct OnnxEngine {
    plans: Mutex<HashMap<String, Arc<Prepared>>>,
    capacity: usize,
}

impl std::fmt::Debug for OnnxEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxEngine")
            .field("capacity", &self.capacity)
            .finish()
    }
}

fn dtype(name: &str) -> Result<DatumType, OnnxError> {
    Ok(match name {
        "float32" => DatumType::F32,
        "float64" => DatumType::F64,
        "int32" => DatumType::I32,
        "int64" => DatumType::I64,
        "uint8" => DatumType::U8,
        other => {
            return Err(OnnxError::Dtype(format!(
                "dtype {other:?} is not one of float32, float64, int32, int64, uint8"
            )));
        }
    })
}

fn dtype_name(dt: DatumType) -> Option<&'static str> {
    Some(match dt {
        DatumType::F32 => "float32",
        DatumType::F64 => "float64",
        DatumType::I32 => "int32",
        DatumType::I64 => "int64",
        DatumType::U8 => "uint8",
        _ => return None,
    })
}

fn to_tensor(name: &str, t: &TensorJson) -> Result<Tensor, OnnxError> {
    t.check_len(name).map_err(OnnxError::Shape)?;
    let bad = |e: TractError| OnnxError::Shape(format!("{name}: {e}"));
    Ok(match dtype(&t.dtype)? {
        DatumType::F32 => {
            let v: Vec<f32> = t.data.iter().map(|&x| x as f32).collect();
            Tensor::from_shape(&t.shape, &v).map_err(bad)?
        }
        DatumType::F64 => Tensor::from_shape(&t.shape, &t.data).map_err(bad)?,
        DatumType::I32 => {
            let v: Vec<i32> = t.data.iter().map(|&x| x as i32).collect();
            Tensor::from_shape(&t.shape, &v).map_err(bad)?
        }
        DatumType::I64 => {
            let v: Vec<i64> = t.data.iter().map(|&x| x as i64).collect();
            Tensor::from_shape(&t.shape, &v).map_err(bad)?
        }
        _ => {
            let v: Vec<u8> = t.data.iter().map(|&x| x as u8).collect();
            Tensor::from_shape(&t.shape, &v).map_err(bad)?
        }
    })
}

fn from_tensor(t: &Tensor) -> Result<TensorJson, OnnxError> {
    let dt = t.datum_type();
    let name = dtype_name(dt)
        .ok_or_else(|| OnnxError::Dtype(format!("output dtype {dt:?} has no JSON form")))?;
    let f64s = t
        .cast_to::<f64>()
        .map_err(|e| OnnxError::Run(e.to_string()))?;
    let data = f64s
        .to_plain_array_view::<f64>()
        .map_err(|e| OnnxError::Run(e.to_string()))?
        .iter()
        .copied()
        .collect();
    Ok(TensorJson {
        dtype: name.to_string(),
        shape: t.shape().to_vec(),
        data,
    })
}

impl OnnxEngine {
    /// An engine that keeps at most `capacity` prepared plans.
    pub fn new(capacity: usize) -> OnnxEngine {
        OnnxEngine {
            plans: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    /// Plans cached now.
    pub fn cached_plans(&self) -> usize {
        self.plans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Runs `model` on `inputs`. Blocking; callers run it off the async workers.
    pub fn run(
        &self,
        model: &[u8],
        model_sha256: &str,
        inputs: &BTreeMap<String, TensorJson>,
    ) -> Result<InferenceOutput, OnnxError> {
        Ok(self.run_on(model, model_sha256, inputs, true)?.output)
    }

    /// [`OnnxEngine::run`], with the work it took, and on the CPU only when `allow_gpu` is false
    /// (the owner turned the GPU off in the contribution policy).
    pub fn run_on(
        &self,
        model: &[u8],
        model_sha256: &str,
        inputs: &BTreeMap<String, TensorJson>,
        allow_gpu: bool,
    ) -> Result<Inference, OnnxError> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.run_unguarded(model, model_sha256, inputs, allow_gpu)
        }))
        .unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".into());
            Err(OnnxError::Run(format!("tract panicked: {what}")))
        })
    }

    fn run_unguarded(
        &self,
        model: &[u8],
        model_sha256: &str,
        inputs: &BTreeMap<String, TensorJson>,
        allow_gpu: bool,
    ) -> Result<Inference, OnnxError> {
        let key = format!(
            "{model_sha256}:{}:{}",
            if allow_gpu { "any" } else { "cpu" },
            inputs
                .iter()
                .map(|(n, t)| format!("{n}/{}/{:?}", t.dtype, t.shape))
                .collect::<Vec<_>>()
                .join(",")
        );
        let cached = self
            .plans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .cloned();
        let prepared = match cached {
            Some(p) => p,
            None => {
                let prepared = Arc::new(self.prepare(model, inputs, allow_gpu)?);
                if !prepared.frozen {
                    let mut plans = self.plans.lock().unwrap_or_else(PoisonError::into_inner);
                    if plans.len() >= self.capacity {
                        plans.clear();
                    }
                    plans.insert(key, prepared.clone());
                }
                prepared
            }
        };
        let values = input_values(&prepared, inputs)?;
        let output = match prepared.plan.run(values.clone()) {
            Ok(outs) => finish(outs, &prepared),
            Err(e) if prepared.device != "cpu" => {
                tracing::warn!(error = %format!("{e:#}"), "GPU run failed; running on the CPU.");
                let cpu = prepare_on(model, inputs, "cpu")?;
                let values = input_values(&cpu, inputs)?;
                let outs = cpu
                    .plan
                    .run(values)
                    .map_err(|e| OnnxError::Run(format!("{e:#}")))?;
                finish(outs, &cpu)
            }
            Err(e) => Err(OnnxError::Run(format!("{e:#}"))),
        }?;
        Ok(Inference {
            output,
            macs: prepared.macs,
        })
    }

    fn prepare(
        &self,
        model: &[u8],
        inputs: &BTreeMap<String, TensorJson>,
        allow_gpu: bool,
    ) -> Result<Prepared, OnnxError> {
        if allow_gpu && cfg!(any(feature = "gpu-cuda", feature = "gpu-metal")) {
            match prepare_on(model, inputs, "gpu-or-cpu") {
                Ok(ok) => return Ok(ok),
                Err(
                    e @ (OnnxError::InputNames(_)
                    | OnnxError::Shape(_)
                    | OnnxError::Dtype(_)
                    | OnnxError::UnsupportedOperator(_)),
                ) => {
                    return Err(e);
                }
                Err(e) => tracing::warn!(error = %e, "GPU preparation failed; using the CPU."),
            }
        }
        prepare_on(model, inputs, "cpu")
    }
}

/// The request's tensors in the plan's input order.
fn input_values(
    prepared: &Prepared,
    inputs: &BTreeMap<String, TensorJson>,
) -> Result<TVec<TValue>, OnnxError> {
    let mut values = TVec::new();
    for name in &prepared.inputs {
        let t = inputs
            .get(name)
            .ok_or_else(|| OnnxError::InputNames(format!("missing input {name:?}")))?;
        values.push(to_tensor(name, t)?.into());
    }
    Ok(values)
}

fn finish(outs: TVec<TValue>, prepared: &Prepared) -> Result<InferenceOutput, OnnxError> {
    if outs.len() != prepared.outputs.len() {
        return Err(OnnxError::Run(format!(
            "the plan gave {} outputs for the model's {} ({:?})",
            outs.len(),
            prepared.outputs.len(),
            prepared.outputs
        )));
    }
    let mut outputs = BTreeMap::new();
    for (name, value) in prepared.outputs.iter().zip(outs.iter()) {
        outputs.insert(name.clone(), from_tensor(value)?);
    }
    Ok(InferenceOutput {
        outputs,
        device: prepared.device.clone(),
        quantised: None,
        proof: None,
        public_inputs: None,
        model_commitment: None,
        error_bound: None,
        constraints: None,
    })
}

/// Parses, checks, types and prepares `model` for these inputs on runtime `rt`.
fn prepare_on(
    model: &[u8],
    inputs: &BTreeMap<String, TensorJson>,
    rt: &str,
) -> Result<Prepared, OnnxError> {
    let proto = FRAMEWORK
        .proto_model_for_read(&mut &model[..])
        .map_err(model_error)?;
    let outputs: Vec<String> = proto
        .graph
        .as_ref()
        .ok_or_else(|| OnnxError::InvalidModel("the model has no graph".into()))?
        .output
        .iter()
        .map(|o| o.name.clone())
        .collect();
    let inference = FRAMEWORK
        .model_for_proto_model(&proto)
        .map_err(model_error)?;
    let names: Vec<String> = inference
        .input_outlets()
        .map_err(model_error)?
        .iter()
        .map(|o| inference.node(o.node).name.clone())
        .collect();
    for given in inputs.keys() {
        if !names.contains(given) {
            return Err(OnnxError::InputNames(format!(
                "the model has no input {given:?}; its inputs are {names:?}"
            )));
        }
    }
    let mut typed_inputs = inference.clone();
    for (i, name) in names.iter().enumerate() {
        let t = inputs
            .get(name)
            .ok_or_else(|| OnnxError::InputNames(format!("missing input {name:?}")))?;
        let want = dtype(&t.dtype)?;
        // What the model declares; dynamic dimensions (a batch axis) accept any size.
        let fact = inference.input_fact(i).map_err(model_error)?;
        if let Some(declared) = fact.datum_type.concretize()
            && declared != want
        {
            return Err(OnnxError::Dtype(format!(
                "{name}: the model takes {}, the request gives {}",
                dtype_name(declared).unwrap_or("another type"),
                t.dtype
            )));
        }
        if !fact.shape.is_open() {
            let rank = fact.shape.dims().count();
            if rank != t.shape.len() {
                return Err(OnnxError::Shape(format!(
                    "{name}: the model takes rank {rank}, the request gives {:?}",
                    t.shape
                )));
            }
        }
        for (axis, (dim, &got)) in fact.shape.dims().zip(&t.shape).enumerate() {
            if let Some(Ok(fixed)) = dim.concretize().map(|d| d.to_i64())
                && fixed as usize != got
            {
                return Err(OnnxError::Shape(format!(
                    "{name}: axis {axis} must be {fixed}, the request gives {got} (shape {:?})",
                    t.shape
                )));
            }
        }
        typed_inputs
            .set_input_fact(i, InferenceFact::dt_shape(want, t.shape.clone()))
            .map_err(model_error)?;
    }
    let runtime = tract_onnx::tract_core::runtime::runtime_for_name(rt)
        .map_err(|e| OnnxError::Run(format!("{e:#}")))?
        .ok_or_else(|| OnnxError::Run(format!("no runtime {rt}")))?;
    let device = match runtime.name().as_ref() {
        "cpu" => "cpu".to_string(),
        other => format!("{other}:0"),
    };
    let ready = |m: InferenceModel| -> TractResult<(Plan, Option<u64>)> {
        let typed = m.into_typed()?.into_decluttered()?;
        let macs = count_macs(&typed)
            .inspect_err(|e| tracing::debug!(error = %format!("{e:#}"), "MACs not counted."))
            .ok();
        Ok((Arc::from(runtime.prepare(typed)?), macs))
    };
    match ready(typed_inputs) {
        Ok((plan, macs)) => Ok(Prepared {
            plan,
            device,
            inputs: names,
            outputs,
            frozen: false,
            macs,
        }),
        Err(e) if refusal(&e).is_some() || names.is_empty() => Err(model_error(e)),
        Err(e) => {
            // tract types a model before it runs it, so it needs every value a shape depends
            // on. ONNX lets such values come from inputs (Resize's scales, BatchNormalization's
            // parameters): try again with this request's tensors as constants.
            let frozen = freeze(&inference, &names, inputs)?;
            match ready(frozen) {
                Ok((plan, macs)) => Ok(Prepared {
                    plan,
                    device,
                    inputs: vec![],
                    outputs,
                    frozen: true,
                    macs,
                }),
                Err(again) if refusal(&again).is_some() => Err(model_error(again)),
                Err(_) => Err(model_error(e)),
            }
        }
    }
}

/// `model` with each of its inputs replaced by the request's tensor, as a constant.
fn freeze(
    model: &InferenceModel,
    names: &[String],
    inputs: &BTreeMap<String, TensorJson>,
) -> Result<InferenceModel, OnnxError> {
    let mut model = model.clone();
    let outlets = model.input_outlets().map_err(model_error)?.to_vec();
    for (outlet, name) in outlets.iter().zip(names) {
        let t = inputs
            .get(name)
            .ok_or_else(|| OnnxError::InputNames(format!("missing input {name:?}")))?;
        let value = to_tensor(name, t)?.into_arc_tensor();
        let konst =
            tract_onnx::tract_hir::ops::konst::Const::new(value.clone()).map_err(model_error)?;
        let node = model.node_mut(outlet.node);
        node.op = Box::new(konst);
        node.outputs[0].fact = InferenceFact::try_from(value).map_err(model_error)?;
    }
    model.set_input_outlets(&[]).map_err(model_error)?;
    Ok(model)
}

// The GPU runtimes register themselves with tract when linked.
#[cfg(feature = "gpu-cuda")]
use tract_cuda as _;
#[cfg(all(feature = "gpu-metal", target_os = "macos"))]
use tract_metal as _;

#[cfg(test)]
mod tests;
