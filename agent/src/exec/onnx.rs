//! `inference` tasks: ONNX models on tract.
//!
//! A model is parsed, checked against the request (input names, dtypes, ranks and fixed
//! dimensions), typed with the request's concrete shapes, optimised and made runnable. The
//! runnable plan is cached by (model sha256, input shapes and dtypes), so a batch of requests of
//! one shape pays for optimisation once.
//!
//! With the `gpu-cuda` feature (or `gpu-metal` on macOS) the plan is prepared on tract's GPU
//! runtime when one is usable (`runtime_for_name("gpu-or-cpu")`: Metal, then CUDA). If preparing or running on the GPU fails (an operator the
//! backend lacks, a missing library), the same model runs on the CPU, and the result's `device`
//! says which one ran it.
//!
//! Every failure is an [`OnnxError`] with a stable [`OnnxError::kind`]; tract's own errors are
//! wrapped at this boundary with their message.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use ambient_protocol::{FailureKind, InferenceOutput, TensorJson};
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid as _;

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

fn model_error(e: TractError) -> OnnxError {
    let text = format!("{e:#}");
    if text.contains("Unimplemented") || text.contains("not implemented") {
        OnnxError::UnsupportedOperator(text)
    } else {
        OnnxError::InvalidModel(text)
    }
}

type Plan = Arc<dyn Runnable>;

/// The engine: the plan cache and the chosen runtime.
pub struct OnnxEngine {
    plans: Mutex<HashMap<String, (Plan, String)>>,
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
        self.run_on(model, model_sha256, inputs, true)
    }

    /// [`OnnxEngine::run`], on the CPU only when `allow_gpu` is false (the owner turned the GPU
    /// off in the contribution policy).
    pub fn run_on(
        &self,
        model: &[u8],
        model_sha256: &str,
        inputs: &BTreeMap<String, TensorJson>,
        allow_gpu: bool,
    ) -> Result<InferenceOutput, OnnxError> {
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
        let (plan, device, order) = match cached {
            Some((plan, device)) => {
                let order = input_order(plan.as_ref())?;
                (plan, device, order)
            }
            None => {
                let (plan, device) = self.prepare(model, inputs, allow_gpu)?;
                let mut plans = self.plans.lock().unwrap_or_else(PoisonError::into_inner);
                if plans.len() >= self.capacity {
                    plans.clear();
                }
                plans.insert(key, (plan.clone(), device.clone()));
                let order = input_order(plan.as_ref())?;
                (plan, device, order)
            }
        };
        let mut values = TVec::new();
        for name in &order {
            let t = inputs
                .get(name)
                .ok_or_else(|| OnnxError::InputNames(format!("missing input {name:?}")))?;
            values.push(to_tensor(name, t)?.into());
        }
        let outs = match plan.run(values.clone()) {
            Ok(o) => o,
            Err(e) if device != "cpu" => {
                tracing::warn!(error = %format!("{e:#}"), "GPU run failed; running on the CPU.");
                let (cpu, _) = prepare_on(model, inputs, "cpu")?;
                return finish(cpu.run(values), cpu.as_ref(), "cpu".into());
            }
            Err(e) => return Err(OnnxError::Run(format!("{e:#}"))),
        };
        finish(Ok(outs), plan.as_ref(), device)
    }

    fn prepare(
        &self,
        model: &[u8],
        inputs: &BTreeMap<String, TensorJson>,
        allow_gpu: bool,
    ) -> Result<(Plan, String), OnnxError> {
        if allow_gpu && cfg!(any(feature = "gpu-cuda", feature = "gpu-metal")) {
            match prepare_on(model, inputs, "gpu-or-cpu") {
                Ok(ok) => return Ok(ok),
                Err(e @ (OnnxError::InputNames(_) | OnnxError::Shape(_) | OnnxError::Dtype(_))) => {
                    return Err(e);
                }
                Err(e) => tracing::warn!(error = %e, "GPU preparation failed; using the CPU."),
            }
        }
        prepare_on(model, inputs, "cpu")
    }
}

fn finish(
    outs: TractResult<TVec<TValue>>,
    plan: &dyn Runnable,
    device: String,
) -> Result<InferenceOutput, OnnxError> {
    let outs = outs.map_err(|e| OnnxError::Run(format!("{e:#}")))?;
    let model = plan
        .typed_model()
        .ok_or_else(|| OnnxError::Run("plan has no model".into()))?;
    let mut outputs = BTreeMap::new();
    for (i, (outlet, value)) in model.outputs.iter().zip(outs.iter()).enumerate() {
        let name = model
            .outlet_label(*outlet)
            .map(str::to_string)
            .unwrap_or_else(|| model.node(outlet.node).name.clone());
        let name = if name.is_empty() {
            format!("output_{i}")
        } else {
            name
        };
        outputs.insert(name, from_tensor(value)?);
    }
    Ok(InferenceOutput { outputs, device })
}

fn input_order(plan: &dyn Runnable) -> Result<Vec<String>, OnnxError> {
    let model = plan
        .typed_model()
        .ok_or_else(|| OnnxError::Run("plan has no model".into()))?;
    Ok(model
        .inputs
        .iter()
        .map(|o| model.node(o.node).name.clone())
        .collect())
}

/// Parses, checks, types and prepares `model` for these inputs on runtime `rt`.
fn prepare_on(
    model: &[u8],
    inputs: &BTreeMap<String, TensorJson>,
    rt: &str,
) -> Result<(Plan, String), OnnxError> {
    let inference = tract_onnx::onnx()
        .model_for_read(&mut &model[..])
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
    let typed = typed_inputs
        .into_typed()
        .and_then(|m| m.into_decluttered())
        .map_err(model_error)?;
    let runtime = tract_onnx::tract_core::runtime::runtime_for_name(rt)
        .map_err(|e| OnnxError::Run(format!("{e:#}")))?
        .ok_or_else(|| OnnxError::Run(format!("no runtime {rt}")))?;
    let device = match runtime.name().as_ref() {
        "cpu" => "cpu".to_string(),
        other => format!("{other}:0"),
    };
    let plan = runtime.prepare(typed).map_err(model_error)?;
    Ok((Arc::from(plan), device))
}

// The GPU runtimes register themselves with tract when linked.
#[cfg(feature = "gpu-cuda")]
use tract_cuda as _;
#[cfg(all(feature = "gpu-metal", target_os = "macos"))]
use tract_metal as _;

#[cfg(test)]
mod tests;
