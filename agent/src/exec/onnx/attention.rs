//! ONNX `Attention` (opsets 23 to 25), wired from tract's core operators.
//!
//! tract 0.23.9 implements this operator only behind its `transformers` feature, which this
//! workspace does not turn on, and that implementation refuses `softcap` and
//! `qk_matmul_output_mode` and aligns the causal mask top-left even with a KV cache. This one
//! follows ONNX's reference implementation (`onnx/reference/ops/op_attention.py`):
//!
//! - 3-D inputs `(B, S, heads·D)` with `q_num_heads`/`kv_num_heads`, or 4-D `(B, heads, S, D)`;
//! - `past_key`/`past_value` concatenated before the new keys and values (`present_*` outputs);
//! - grouped-query attention: each KV head repeated for its group of query heads;
//! - `Q·√scale` and `K·√scale` (scale defaults to `1/√D`), then `softcap·tanh(QK/softcap)`;
//! - a float or boolean `attn_mask` (padded with −∞ up to the KV length), the causal mask
//!   aligned bottom-right (query `i` sees key `j` iff `j ≤ i + past length`), and the sliding
//!   window of opset 25 (`left_window_size`, `right_window_size`);
//! - softmax over the keys, with a row that masks every key giving zeros instead of NaN;
//! - the optional `qk_matmul_output` in modes 0 to 3.
//!
//! Refused with [`super::ops::Unsupported`]: `nonpad_kv_seqlen`, a `softmax_precision` other
//! than float or double, tensors other than float32, and any attribute this list does not name.

use tract_hir::internal::*;
use tract_hir::tract_core::ops::change_axes::wire_with_rank_broadcast;
use tract_hir::tract_core::ops::{array, einsum::EinSum, logic, math, nn};
use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir;

use super::ops::{foreign_domain, unsupported};

const KNOWN_ATTRIBUTES: [&str; 9] = [
    "is_causal",
    "kv_num_heads",
    "q_num_heads",
    "qk_matmul_output_mode",
    "scale",
    "softcap",
    "softmax_precision",
    "left_window_size",
    "right_window_size",
];

/// Builds an `Attention` node.
pub fn attention(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    if let Some(domain) = foreign_domain(node) {
        return Err(unsupported(format!(
            "Attention from domain {domain} (only ONNX's Attention of opset 23 and later)"
        )));
    }
    for attr in &node.attribute {
        if !KNOWN_ATTRIBUTES.contains(&attr.name.as_str()) {
            return Err(unsupported(format!(
                "Attention with attribute {}",
                attr.name
            )));
        }
    }
    let given = |names: &[String], i: usize| names.get(i).is_some_and(|s| !s.is_empty());
    if given(&node.input, 6) {
        return Err(unsupported("Attention with input nonpad_kv_seqlen"));
    }
    if given(&node.input, 4) != given(&node.input, 5) {
        bail!("Attention: past_key and past_value must be given together");
    }
    if !(given(&node.output, 0)) {
        bail!("Attention: output Y is required");
    }
    let mode = node
        .get_attr_opt::<i64>("qk_matmul_output_mode")?
        .unwrap_or(0);
    if !(0..=3).contains(&mode) {
        return Err(unsupported(format!(
            "Attention with qk_matmul_output_mode={mode}"
        )));
    }
    match node.get_attr_opt::<i64>("softmax_precision")? {
        None | Some(1) | Some(11) => {}
        Some(p) => {
            return Err(unsupported(format!(
                "Attention with softmax_precision={p} (only float and double)"
            )));
        }
    }
    let window = |name: &str| -> TractResult<i64> {
        let w = node.get_attr_opt::<i64>(name)?.unwrap_or(-1);
        if w < -1 {
            bail!("Attention: {name}={w}");
        }
        Ok(w)
    };
    let heads = |name: &str| -> TractResult<Option<usize>> {
        match node.get_attr_opt::<i64>(name)? {
            None => Ok(None),
            Some(h) if h > 0 => Ok(Some(h as usize)),
            Some(h) => bail!("Attention: {name}={h}"),
        }
    };
    Ok((
        expand(Attention {
            is_causal: node.get_attr_opt::<i64>("is_causal")?.unwrap_or(0) != 0,
            q_num_heads: heads("q_num_heads")?,
            kv_num_heads: heads("kv_num_heads")?,
            scale: node.get_attr_opt::<f32>("scale")?,
            softcap: node.get_attr_opt::<f32>("softcap")?.filter(|c| *c > 0.0),
            qk_mode: mode,
            left_window: window("left_window_size")?,
            right_window: window("right_window_size")?,
            has_mask: given(&node.input, 3),
            has_past: given(&node.input, 4),
            present_key: given(&node.output, 1),
            present_value: given(&node.output, 2),
            qk_output: given(&node.output, 3),
        }),
        vec![],
    ))
}

#[derive(Debug, Clone)]
struct Attention {
    is_causal: bool,
    q_num_heads: Option<usize>,
    kv_num_heads: Option<usize>,
    scale: Option<f32>,
    softcap: Option<f32>,
    qk_mode: i64,
    left_window: i64,
    right_window: i64,
    has_mask: bool,
    has_past: bool,
    present_key: bool,
    present_value: bool,
    qk_output: bool,
}

impl Attention {
    fn n_inputs(&self) -> usize {
        3 + self.has_mask as usize + 2 * self.has_past as usize
    }
}

fn concrete(d: &TDim, what: &str) -> TractResult<usize> {
    d.to_usize()
        .map_err(|_| unsupported(format!("Attention with a symbolic {what}")))
}

/// `(B, S, heads·D)` to `(B, heads, S, D)`.
fn split_heads(
    prefix: &str,
    model: &mut TypedModel,
    x: OutletId,
    heads: usize,
) -> TractResult<OutletId> {
    let hidden = model.outlet_fact(x)?.shape[2].clone();
    let h = concrete(&hidden, "hidden size")?;
    if h % heads != 0 {
        bail!("Attention: hidden size {h} is not a multiple of {heads} heads");
    }
    let x = model.wire_node(
        format!("{prefix}.split"),
        AxisOp::Reshape(
            2,
            tvec!(hidden),
            tvec!(heads.to_dim(), (h / heads).to_dim()),
        ),
        &[x],
    )?[0];
    Ok(model.wire_node(format!("{prefix}.heads_first"), AxisOp::Move(2, 1), &[x])?[0])
}

fn scalar(prefix: &str, model: &mut TypedModel, v: f32) -> TractResult<OutletId> {
    model.add_const(prefix, tensor0(v))
}

fn binary(
    name: String,
    model: &mut TypedModel,
    op: impl Into<Box<dyn TypedOp>>,
    a: OutletId,
    b: OutletId,
) -> TractResult<OutletId> {
    Ok(wire_with_rank_broadcast(name, model, op, &[a, b])?[0])
}

impl Expansion for Attention {
    fn name(&self) -> StaticName {
        "Attention".into()
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    fn nboutputs(&self) -> TractResult<usize> {
        Ok(1 + self.present_key as usize + self.present_value as usize + self.qk_output as usize)
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, self.n_inputs())?;
        check_output_arity(outputs, self.nboutputs()?)?;
        s.equals(&inputs[0].rank, &outputs[0].rank)?;
        for o in outputs {
            s.equals(&o.datum_type, &inputs[0].datum_type)?;
        }
        Ok(())
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let q_fact = model.outlet_fact(inputs[0])?.clone();
        if q_fact.datum_type != f32::datum_type() {
            return Err(unsupported(format!(
                "Attention on {:?} tensors (float32 only)",
                q_fact.datum_type
            )));
        }
        let rank = q_fact.rank();
        for i in [1, 2] {
            if model.outlet_fact(inputs[i])?.rank() != rank {
                bail!("Attention: Q, K and V must have the same rank");
            }
        }
        let (mut q, mut k, mut v) = (inputs[0], inputs[1], inputs[2]);
        match rank {
            3 => {
                let (Some(qh), Some(kvh)) = (self.q_num_heads, self.kv_num_heads) else {
                    bail!("Attention: 3-D inputs need q_num_heads and kv_num_heads");
                };
                q = split_heads(&format!("{prefix}.q"), model, q, qh)?;
                k = split_heads(&format!("{prefix}.k"), model, k, kvh)?;
                v = split_heads(&format!("{prefix}.v"), model, v, kvh)?;
            }
            4 => {}
            r => bail!("Attention: inputs of rank {r} (3 or 4 expected)"),
        }
        let mut next = 3;
        let mask = if self.has_mask {
            next += 1;
            Some(inputs[next - 1])
        } else {
            None
        };
        let past_len = if self.has_past {
            let (pk, pv) = (inputs[next], inputs[next + 1]);
            let past_len = concrete(&model.outlet_fact(pk)?.shape[2], "past length")?;
            k = model.wire_node(
                format!("{prefix}.present_key"),
                array::TypedConcat::new(2),
                &[pk, k],
            )?[0];
            v = model.wire_node(
                format!("{prefix}.present_value"),
                array::TypedConcat::new(2),
                &[pv, v],
            )?[0];
            past_len
        } else {
            0
        };
        let (present_k, present_v) = (k, v);

        let qs = model.outlet_fact(q)?.shape.to_tvec();
        let ks = model.outlet_fact(k)?.shape.to_tvec();
        let q_heads = concrete(&qs[1], "head count")?;
        let kv_heads = concrete(&ks[1], "head count")?;
        let q_len = concrete(&qs[2], "query length")?;
        let kv_len = concrete(&ks[2], "key length")?;
        let head_size = concrete(&qs[3], "head size")?;

        // Grouped-query attention: repeat each KV head for its group of query heads.
        if q_heads != kv_heads {
            if kv_heads == 0 || q_heads % kv_heads != 0 {
                bail!("Attention: {q_heads} query heads for {kv_heads} KV heads");
            }
            let reps = q_heads / kv_heads;
            k = repeat_heads(&format!("{prefix}.k_groups"), model, k, reps)?;
            v = repeat_heads(&format!("{prefix}.v_groups"), model, v, reps)?;
        }

        // Q·√scale and K·√scale, as ONNX scales both before the product.
        let scale = self
            .scale
            .map(f64::from)
            .unwrap_or(1.0 / (head_size as f64).sqrt());
        let root = scalar(&format!("{prefix}.sqrt_scale"), model, scale.sqrt() as f32)?;
        let q = binary(format!("{prefix}.q_scaled"), model, math::mul(), q, root)?;
        let k = binary(format!("{prefix}.k_scaled"), model, math::mul(), k, root)?;
        let mut qk = model.wire_node(
            format!("{prefix}.qk"),
            EinSum::new("bhqd,bhkd->bhqk".parse()?, f32::datum_type()),
            &[q, k],
        )?[0];
        if let Some(cap) = self.softcap {
            let c = scalar(&format!("{prefix}.softcap"), model, cap)?;
            let x = binary(format!("{prefix}.softcap.div"), model, math::div(), qk, c)?;
            let x = model.wire_node(format!("{prefix}.softcap.tanh"), math::tanh(), &[x])?[0];
            qk = binary(format!("{prefix}.softcap.mul"), model, math::mul(), x, c)?;
        }

        // The additive bias: the mask (a boolean one as 0 / −∞), plus the static causal and
        // window masks computed here.
        let mut bias = match mask {
            Some(m) => Some(self.wire_mask(prefix, model, m, kv_len)?),
            None => None,
        };
        let static_bias = self.static_bias(q_len, kv_len, past_len);
        let fully_masked_static = static_bias.as_ref().is_some_and(|b| {
            b.rows()
                .into_iter()
                .any(|row| row.iter().all(|x| *x == f32::NEG_INFINITY))
        });
        if let Some(sb) = static_bias {
            let c = model.add_const(format!("{prefix}.static_mask"), sb.into_tensor())?;
            bias = Some(match bias {
                Some(b) => binary(format!("{prefix}.mask_sum"), model, math::add(), b, c)?,
                None => c,
            });
        }
        let qk_biased = match bias {
            Some(b) => binary(format!("{prefix}.qk_bias"), model, math::add(), qk, b)?,
            None => qk,
        };

        let probs = if mask.is_some() || fully_masked_static {
            safe_softmax(prefix, model, qk_biased)?
        } else {
            model.wire_node(
                format!("{prefix}.softmax"),
                nn::Softmax::new(tvec!(3), None, nn::SoftmaxKind::Softmax),
                &[qk_biased],
            )?[0]
        };
        let mut y = model.wire_node(
            format!("{prefix}.y"),
            EinSum::new("bhqk,bhkd->bhqd".parse()?, f32::datum_type()),
            &[probs, v],
        )?[0];
        if rank == 3 {
            let shape = model.outlet_fact(y)?.shape.to_tvec();
            y = model.wire_node(format!("{prefix}.y_seq_first"), AxisOp::Move(1, 2), &[y])?[0];
            y = model.wire_node(
                format!("{prefix}.y_merge"),
                AxisOp::Reshape(
                    2,
                    tvec!(shape[1].clone(), shape[3].clone()),
                    tvec!(shape[1].clone() * shape[3].clone()),
                ),
                &[y],
            )?[0];
        }

        let mut outputs = tvec!(y);
        if self.present_key {
            outputs.push(present_k);
        }
        if self.present_value {
            outputs.push(present_v);
        }
        if self.qk_output {
            outputs.push(match self.qk_mode {
                2 => qk_biased,
                3 => probs,
                _ => qk,
            });
        }
        Ok(outputs)
    }
}

impl Attention {
    /// The mask as an additive float bias, padded with −∞ up to `kv_len` keys.
    fn wire_mask(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        mask: OutletId,
        kv_len: usize,
    ) -> TractResult<OutletId> {
        let fact = model.outlet_fact(mask)?.clone();
        let mut m = if fact.datum_type == bool::datum_type() {
            let zero = scalar(&format!("{prefix}.mask_zero"), model, 0.0)?;
            let ninf = scalar(&format!("{prefix}.mask_ninf"), model, f32::NEG_INFINITY)?;
            wire_with_rank_broadcast(
                format!("{prefix}.mask_bool"),
                model,
                logic::Iff,
                &[mask, zero, ninf],
            )?[0]
        } else if fact.datum_type == f32::datum_type() {
            mask
        } else {
            return Err(unsupported(format!(
                "Attention with an attn_mask of {:?}",
                fact.datum_type
            )));
        };
        let rank = fact.rank();
        if rank == 0 {
            bail!("Attention: a scalar attn_mask");
        }
        let last = concrete(&fact.shape[rank - 1], "mask length")?;
        if last > kv_len {
            bail!("Attention: attn_mask has {last} keys, more than the {kv_len} keys");
        }
        if last < kv_len {
            let mut pads = vec![(0, 0); rank];
            pads[rank - 1] = (0, kv_len - last);
            m = model.wire_node(
                format!("{prefix}.mask_pad"),
                array::Pad::new(
                    pads,
                    array::PadMode::Constant(tensor0(f32::NEG_INFINITY).into_arc_tensor()),
                ),
                &[m],
            )?[0];
        }
        Ok(m)
    }

    /// The causal and sliding-window masks, `(q_len, kv_len)`, or None when neither applies.
    fn static_bias(
        &self,
        q_len: usize,
        kv_len: usize,
        offset: usize,
    ) -> Option<tract_ndarray::Array2<f32>> {
        let windowed = self.left_window >= 0 || self.right_window >= 0;
        if !self.is_causal && !windowed {
            return None;
        }
        Some(tract_ndarray::Array2::from_shape_fn(
            (q_len, kv_len),
            |(i, j)| {
                let (i, j) = ((i + offset) as i64, j as i64);
                let mut allowed = !self.is_causal || j <= i;
                if self.left_window >= 0 {
                    allowed &= i - j <= self.left_window;
                }
                if self.right_window >= 0 {
                    allowed &= j - i <= self.right_window;
                }
                if allowed { 0.0 } else { f32::NEG_INFINITY }
            },
        ))
    }
}

/// `(B, H, S, D)` to `(B, H·reps, S, D)`, each head repeated `reps` times in place.
fn repeat_heads(
    prefix: &str,
    model: &mut TypedModel,
    x: OutletId,
    reps: usize,
) -> TractResult<OutletId> {
    let shape = model.outlet_fact(x)?.shape.to_tvec();
    let x = model.wire_node(format!("{prefix}.add_axis"), AxisOp::Add(2), &[x])?[0];
    let mut target = shape.clone();
    target.insert(2, reps.to_dim());
    let x = model.wire_node(
        format!("{prefix}.broadcast"),
        array::MultiBroadcastTo::new(ShapeFact::from_dims(target)),
        &[x],
    )?[0];
    Ok(model.wire_node(
        format!("{prefix}.merge"),
        AxisOp::Reshape(
            1,
            tvec!(shape[1].clone(), reps.to_dim()),
            tvec!(shape[1].clone() * reps),
        ),
        &[x],
    )?[0])
}

/// Softmax over the last axis in which a row of −∞ gives zeros, as ONNX's reference does,
/// instead of the NaN of `exp(−∞ − (−∞))`.
fn safe_softmax(prefix: &str, model: &mut TypedModel, x: OutletId) -> TractResult<OutletId> {
    let p = format!("{prefix}.safe_softmax");
    let max = model.wire_node(
        format!("{p}.max"),
        nn::Reduce::new(tvec!(3), nn::Reducer::Max),
        &[x],
    )?[0];
    let floor = scalar(&format!("{p}.floor"), model, f32::MIN)?;
    let max = binary(format!("{p}.finite_max"), model, math::max(), max, floor)?;
    let shifted = binary(format!("{p}.shift"), model, math::sub(), x, max)?;
    let e = model.wire_node(format!("{p}.exp"), math::exp(), &[shifted])?[0];
    let sum = model.wire_node(
        format!("{p}.sum"),
        nn::Reduce::new(tvec!(3), nn::Reducer::Sum),
        &[e],
    )?[0];
    let tiny = scalar(&format!("{p}.tiny"), model, f32::MIN_POSITIVE)?;
    let sum = binary(format!("{p}.nonzero_sum"), model, math::max(), sum, tiny)?;
    binary(format!("{p}.div"), model, math::div(), e, sum)
}
