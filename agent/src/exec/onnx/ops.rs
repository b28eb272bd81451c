//! Our additions to tract's ONNX operator table: fixes for operators tract 0.23.9 gets wrong,
//! operators it lacks, and refusals where an attribute would otherwise be silently ignored.
//!
//! tract builds each ONNX node through a table keyed by `op_type` ([`OnnxOpRegister`]); the
//! entries here replace or add to tract's own. Each fix is measured by `scripts/onnx-conformance`
//! against ONNX's backend node test cases.
//!
//! | Operator | tract 0.23.9 | Here |
//! |---|---|---|
//! | `GRU`, `LSTM`, `RNN` | ignores `direction=reverse` (runs forward), `activations`, `clip`, `input_forget` | reverse runs on the time-reversed sequence; the other attributes are refused unless default |
//! | `SpaceToDepth` | ignores `mode` (opset 28), always DCR | DCR and CRD |
//! | `Swish` | ignores `alpha` (computes `x·σ(x)`) | `x·σ(alpha·x)` |
//! | `SwiGLU` | missing | `Swish(a, alpha)·b` |
//! | `LpPool` | missing | `(Σ |x|^p)^(1/p)` over tract's sum pool |
//! | `Attention` (opset 23+) | missing without tract's `transformers` feature | [`super::attention`] |
//!
//! A refusal is an [`Unsupported`] error, which the engine reports as `unsupported_operator`
//! with its message (the operator and the attribute).

use tract_hir::internal::*;
use tract_hir::ops::cnn::{PaddingSpec, PoolSpec};
use tract_onnx::model::{OnnxOpRegister, ParsingContext};
use tract_onnx::ops::rec::common::CommonRec;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir;

use super::attention;

/// An operator, or an attribute value of one, that we refuse rather than compute wrongly.
#[derive(Debug)]
pub struct Unsupported(pub String);

impl std::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unsupported {}

/// The error for a refused operator or attribute.
pub fn unsupported(what: impl Into<String>) -> TractError {
    TractError::new(Unsupported(what.into()))
}

type Built = TractResult<(Box<dyn InferenceOp>, Vec<String>)>;

/// Adds our operators to tract's table, replacing tract's entries for the same names.
pub fn register(reg: &mut OnnxOpRegister) {
    reg.insert("GRU", gru);
    reg.insert("LSTM", lstm);
    reg.insert("RNN", rnn);
    reg.insert("SpaceToDepth", space_to_depth);
    reg.insert("Swish", swish);
    reg.insert("SwiGLU", swiglu);
    reg.insert("LpPool", lp_pool);
    reg.insert("Attention", attention::attention);
}

/// The node's domain, when it is not the default ONNX one (`""` or `ai.onnx`).
pub fn foreign_domain(node: &NodeProto) -> Option<&str> {
    match node.domain.as_str() {
        "" | "ai.onnx" => None,
        other => Some(other),
    }
}

fn default_domain(node: &NodeProto) -> TractResult<()> {
    match foreign_domain(node) {
        Some(domain) => Err(unsupported(format!(
            "{} from domain {domain} (only the ONNX operator of that name is implemented)",
            node.op_type
        ))),
        None => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------------
// GRU, LSTM, RNN

/// Refuses the recurrent attributes tract ignores, unless they hold their defaults.
fn check_recurrent(node: &NodeProto, default_activations: &[&str]) -> TractResult<bool> {
    default_domain(node)?;
    let op = &node.op_type;
    if let Some(acts) = node.get_attr_opt_vec::<String>("activations")? {
        let dirs = acts.len() / default_activations.len().max(1);
        let expected: Vec<String> = (0..dirs.max(1))
            .flat_map(|_| default_activations.iter().map(|a| a.to_string()))
            .collect();
        let same = acts.len() == expected.len()
            && acts
                .iter()
                .zip(&expected)
                .all(|(a, b)| a.eq_ignore_ascii_case(b));
        if !same {
            return Err(unsupported(format!(
                "{op} with activations={acts:?} (only the defaults {default_activations:?})"
            )));
        }
    }
    if node.get_attr_opt_vec::<f32>("activation_alpha")?.is_some()
        || node.get_attr_opt_vec::<f32>("activation_beta")?.is_some()
    {
        return Err(unsupported(format!(
            "{op} with activation_alpha or activation_beta"
        )));
    }
    if let Some(clip) = node.get_attr_opt::<f32>("clip")? {
        return Err(unsupported(format!("{op} with clip={clip}")));
    }
    if node.get_attr_opt::<i64>("input_forget")?.unwrap_or(0) != 0 {
        return Err(unsupported(format!("{op} with input_forget=1")));
    }
    match node.get_attr_opt::<String>("direction")?.as_deref() {
        None | Some("forward") | Some("bidirectional") => Ok(false),
        Some("reverse") => Ok(true),
        Some(other) => Err(unsupported(format!("{op} with direction={other}"))),
    }
}

fn recurrent(
    node: &NodeProto,
    body: Box<dyn tract_onnx::ops::rec::common::WireBody>,
    reverse: bool,
) -> Built {
    let common = CommonRec::from_node_and_options(node, 3, 0, body)?;
    if reverse {
        Ok((expand(Reversed(common)), vec![]))
    } else {
        Ok((expand(common), vec![]))
    }
}

fn gru(_ctx: &ParsingContext, node: &NodeProto) -> Built {
    let reverse = check_recurrent(node, &["Sigmoid", "Tanh"])?;
    let body = tract_onnx::ops::rec::gru::GRU {
        f: Box::new(tract_hir::ops::nn::sigmoid()),
        g: Box::new(tract_hir::ops::math::tanh()),
        linear_before_reset: node.get_attr("linear_before_reset").unwrap_or(false),
    };
    recurrent(node, Box::new(body), reverse)
}

fn lstm(_ctx: &ParsingContext, node: &NodeProto) -> Built {
    let reverse = check_recurrent(node, &["Sigmoid", "Tanh", "Tanh"])?;
    let body = tract_onnx::ops::rec::lstm::LSTM {
        f: Box::new(tract_hir::ops::nn::sigmoid()),
        g: Box::new(tract_hir::ops::math::tanh()),
        h: Box::new(tract_hir::ops::math::tanh()),
    };
    recurrent(node, Box::new(body), reverse)
}

fn rnn(_ctx: &ParsingContext, node: &NodeProto) -> Built {
    let reverse = check_recurrent(node, &["Tanh"])?;
    let body = tract_onnx::ops::rec::rnn::RNN {
        fore: Box::new(tract_hir::ops::math::tanh()),
        back: Box::new(tract_hir::ops::math::tanh()),
    };
    recurrent(node, Box::new(body), reverse)
}

/// A one-direction recurrent op with `direction=reverse`: tract's forward recurrence over the
/// time-reversed input, with `Y` reversed back. `Y_h` (and `Y_c`) are the state after the last
/// step taken, which is the first time step, as ONNX defines them for the reverse direction.
#[derive(Debug, Clone)]
struct Reversed(CommonRec);

impl Expansion for Reversed {
    fn name(&self) -> StaticName {
        format!("{}Reverse", Expansion::name(&self.0)).into()
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    fn nboutputs(&self) -> TractResult<usize> {
        self.0.nboutputs()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        self.0.rules(s, inputs, outputs)
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        if model.outlet_fact(inputs[1])?.shape[0] != 1.to_dim() {
            bail!("direction=reverse with num_directions != 1");
        }
        // X is [seq, batch, input] (layout 0) or [batch, seq, input] (layout 1); Y is
        // [seq, dirs, batch, hidden] or [batch, seq, dirs, hidden].
        let seq_axis = self.0.batch_first as usize;
        let mut wires: TVec<OutletId> = inputs.into();
        wires[0] = reverse_axis(&format!("{prefix}.reverse_x"), model, inputs[0], seq_axis)?;
        let mut outputs = self.0.wire(prefix, model, &wires)?;
        if let Some(y) = self.0.optional_y_output {
            outputs[y] = reverse_axis(&format!("{prefix}.reverse_y"), model, outputs[y], seq_axis)?;
        }
        Ok(outputs)
    }
}

/// Reverses `wire` along `axis` (a gather of the indices n-1, …, 0).
fn reverse_axis(
    name: &str,
    model: &mut TypedModel,
    wire: OutletId,
    axis: usize,
) -> TractResult<OutletId> {
    let len = model.outlet_fact(wire)?.shape[axis]
        .to_usize()
        .map_err(|_| unsupported("a reverse recurrence over a sequence of symbolic length"))?;
    let indices: Vec<i64> = (0..len as i64).rev().collect();
    let indices = model.add_const(format!("{name}.indices"), tensor1(&indices))?;
    Ok(model.wire_node(
        name,
        tract_hir::tract_core::ops::array::Gather::new(axis),
        &[wire, indices],
    )?[0])
}

// ---------------------------------------------------------------------------------------------
// SpaceToDepth

fn space_to_depth(_ctx: &ParsingContext, node: &NodeProto) -> Built {
    default_domain(node)?;
    let blocksize: usize = node.get_attr_opt("blocksize")?.unwrap_or(2);
    let crd = match node.get_attr_opt::<String>("mode")?.as_deref() {
        None | Some("DCR") => false,
        Some("CRD") => true,
        Some(other) => {
            return Err(unsupported(format!("SpaceToDepth with mode={other}")));
        }
    };
    if blocksize == 0 {
        bail!("SpaceToDepth with blocksize 0");
    }
    Ok((expand(SpaceToDepth { blocksize, crd }), vec![]))
}

/// ONNX SpaceToDepth. DCR: output channel `(bh·b + bw)·C + c`; CRD: `c·b² + bh·b + bw`.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct SpaceToDepth {
    blocksize: usize,
    crd: bool,
}

impl Expansion for SpaceToDepth {
    fn name(&self) -> StaticName {
        "SpaceToDepth".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 1)?;
        s.equals(&inputs[0].rank, 4)?;
        s.equals(&outputs[0].rank, 4)?;
        s.equals(&outputs[0].datum_type, &inputs[0].datum_type)?;
        s.given(&inputs[0].shape, move |s, shape| {
            let b = self.blocksize;
            let out: TVec<TDim> = tvec!(
                shape[0].clone(),
                shape[1].clone() * b * b,
                shape[2].clone() / b,
                shape[3].clone() / b,
            );
            s.equals(&outputs[0].shape, ShapeFactoid::from(out))
        })
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let shape = model.outlet_fact(inputs[0])?.shape.to_tvec();
        let b = self.blocksize;
        for axis in [2, 3] {
            if let Ok(d) = shape[axis].to_usize()
                && d % b != 0
            {
                bail!("SpaceToDepth: input dimension {d} is not a multiple of blocksize {b}");
            }
        }
        let (c, h, w) = (shape[1].clone(), shape[2].clone(), shape[3].clone());
        // [N, C, H, W] -> [N, C, H/b, b, W/b, b]
        let mut ops = vec![AxisOp::Reshape(
            2,
            tvec!(h.clone(), w.clone()),
            tvec!(h / b, b.to_dim(), w / b, b.to_dim()),
        )];
        if self.crd {
            // -> [N, C, bh, H/b, W/b, bw] -> [N, C, bh, bw, H/b, W/b] -> [N, C·b·b, H/b, W/b]
            ops.push(AxisOp::Move(3, 2));
            ops.push(AxisOp::Move(5, 3));
            ops.push(AxisOp::Reshape(
                1,
                tvec!(c.clone(), b.to_dim(), b.to_dim()),
                tvec!(c * b * b),
            ));
        } else {
            // -> [N, bh, C, H/b, W/b, bw] -> [N, bh, bw, C, H/b, W/b] -> [N, b·b·C, H/b, W/b]
            ops.push(AxisOp::Move(3, 1));
            ops.push(AxisOp::Move(5, 2));
            ops.push(AxisOp::Reshape(
                1,
                tvec!(b.to_dim(), b.to_dim(), c.clone()),
                tvec!(c * b * b),
            ));
        }
        let mut wire = inputs[0];
        for (ix, op) in ops.into_iter().enumerate() {
            wire = model.wire_node(format!("{prefix}.{ix}"), op, &[wire])?[0];
        }
        Ok(tvec!(wire))
    }
}

// ---------------------------------------------------------------------------------------------
// Swish, SwiGLU

fn swish(_ctx: &ParsingContext, node: &NodeProto) -> Built {
    default_domain(node)?;
    let alpha: f32 = node.get_attr_opt("alpha")?.unwrap_or(1.0);
    Ok((expand(Swish { alpha }), vec![]))
}

fn swiglu(_ctx: &ParsingContext, node: &NodeProto) -> Built {
    default_domain(node)?;
    let alpha: f32 = node.get_attr_opt("alpha")?.unwrap_or(1.0);
    Ok((expand(SwiGlu { alpha }), vec![]))
}

/// `x · sigmoid(alpha · x)`.
fn wire_swish(
    prefix: &str,
    model: &mut TypedModel,
    x: OutletId,
    alpha: f32,
) -> TractResult<OutletId> {
    use tract_hir::tract_core::ops::math;
    let dt = model.outlet_fact(x)?.datum_type;
    let scaled = if alpha == 1.0 {
        x
    } else {
        let a = model.add_const(
            format!("{prefix}.alpha"),
            tensor0(alpha).cast_to_dt(dt)?.into_owned(),
        )?;
        tract_hir::tract_core::ops::change_axes::wire_with_rank_broadcast(
            format!("{prefix}.scale"),
            model,
            math::mul(),
            &[x, a],
        )?[0]
    };
    let gate = model.wire_node(
        format!("{prefix}.sigmoid"),
        tract_hir::ops::nn::sigmoid(),
        &[scaled],
    )?[0];
    Ok(model.wire_node(format!("{prefix}.mul"), math::mul(), &[x, gate])?[0])
}

/// ONNX Swish (opset 24): `x · sigmoid(alpha · x)`. tract's own entry drops `alpha`.
#[derive(Debug, Clone)]
struct Swish {
    alpha: f32,
}

impl Expansion for Swish {
    fn name(&self) -> StaticName {
        "Swish".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, &inputs[0].datum_type)?;
        s.equals(&outputs[0].shape, &inputs[0].shape)
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        Ok(tvec!(wire_swish(prefix, model, inputs[0], self.alpha)?))
    }
}

/// ONNX SwiGLU (opset 28): `Swish(a, alpha) · b`.
#[derive(Debug, Clone)]
struct SwiGlu {
    alpha: f32,
}

impl Expansion for SwiGlu {
    fn name(&self) -> StaticName {
        "SwiGLU".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 2)?;
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, &inputs[0].datum_type)?;
        s.equals(&inputs[1].datum_type, &inputs[0].datum_type)?;
        s.given_2(&inputs[0].shape, &inputs[1].shape, move |s, a, b| {
            let shape = tract_hir::tract_core::broadcast::multi_broadcast(&[a, b])?;
            s.equals(&outputs[0].shape, ShapeFactoid::from(shape))
        })
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let gate = wire_swish(&format!("{prefix}.swish"), model, inputs[0], self.alpha)?;
        tract_hir::tract_core::ops::change_axes::wire_with_rank_broadcast(
            format!("{prefix}.mul"),
            model,
            tract_hir::tract_core::ops::math::mul(),
            &[gate, inputs[1]],
        )
    }
}

// ---------------------------------------------------------------------------------------------
// LpPool

fn lp_pool(_ctx: &ParsingContext, node: &NodeProto) -> Built {
    default_domain(node)?;
    let kernel_shape: TVec<usize> = node.get_attr_tvec("kernel_shape")?;
    let p: f32 = match node.get_attr_opt::<i64>("p")? {
        None => 2.0,
        Some(p) if p >= 1 => p as f32,
        Some(p) => return Err(unsupported(format!("LpPool with p={p}"))),
    };
    let ceil_mode = node.get_attr_opt::<i64>("ceil_mode")?.unwrap_or(0) == 1;
    let n = kernel_shape.len();
    let padding = if let Some(pads) = node.get_attr_opt_tvec::<usize>("pads")? {
        if pads.len() != 2 * n {
            bail!(
                "LpPool: pads has {} values for {n} spatial axes",
                pads.len()
            );
        }
        PaddingSpec::ExplicitOnnxPool(pads[..n].into(), pads[n..].into(), ceil_mode)
    } else {
        match node.get_attr_opt::<String>("auto_pad")?.as_deref() {
            None | Some("NOTSET") => {
                PaddingSpec::ExplicitOnnxPool(tvec!(0; n), tvec!(0; n), ceil_mode)
            }
            Some("VALID") => PaddingSpec::Valid,
            Some("SAME_UPPER") => PaddingSpec::SameUpper,
            Some("SAME_LOWER") => PaddingSpec::SameLower,
            Some(other) => return Err(unsupported(format!("LpPool with auto_pad={other}"))),
        }
    };
    let pool_spec = PoolSpec::new(
        tract_hir::ops::nn::DataFormat::NCHW,
        kernel_shape,
        padding,
        node.get_attr_opt_tvec("dilations")?,
        node.get_attr_opt_tvec("strides")?,
        0,
        0,
    );
    Ok((
        expand(LpPool {
            sum: tract_hir::ops::cnn::HirSumPool::new(pool_spec, false, false),
            p,
        }),
        vec![],
    ))
}

/// ONNX LpPool: `(Σ_window |x|^p)^(1/p)`, padding counting as zeros.
#[derive(Debug, Clone)]
struct LpPool {
    sum: tract_hir::ops::cnn::HirSumPool,
    p: f32,
}

impl Expansion for LpPool {
    fn name(&self) -> StaticName {
        "LpPool".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        self.sum.rules(s, inputs, outputs)
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        use tract_hir::tract_core::ops::math;
        let abs = model.wire_node(format!("{prefix}.abs"), math::abs(), &[inputs[0]])?;
        let powered = model.wire_node(format!("{prefix}.pow"), math::pow_const(self.p), &abs)?;
        let summed = self.sum.wire(&format!("{prefix}.sum"), model, &powered)?;
        model.wire_node(
            format!("{prefix}.root"),
            math::pow_const(1.0 / self.p),
            &summed,
        )
    }
}
