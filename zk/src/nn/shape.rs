//! Shape inference, program checks, size caps, and the index maps (which input element
//! feeds which output element) that [`super::evaluate`] and the circuit share.

use super::activation::{SEG_BITS, Smooth};
use super::fixed::{ACT_BITS, MAX_FRAC_BITS, MIN_FRAC_BITS, packed_len};
use super::program::{Layer, Program};
use crate::error::ZkError;

/// The most axes a tensor may have.
pub const MAX_RANK: usize = 8;
/// The most elements a tensor may have (4 Mi).
pub const MAX_ELEMENTS: usize = 1 << 22;
/// The most layers a program may have.
pub const MAX_LAYERS: usize = 256;
/// The most multiply-accumulates (weight uses) of `Dense` and `Conv2d` layers together, 64 Mi:
/// each is a term of a linear combination, so this bounds the constraint matrices' size.
/// It also keeps every accumulator below `2^63 · 2^31 · 2^26 + 2^63 < 2^121`, far inside the
/// field, so field arithmetic is integer arithmetic.
pub const MAX_MACS: usize = 1 << 26;
/// The most R1CS constraints a program's circuit may have: 1.5 million, as for the other
/// circuits of this crate (a proving key of about 300 MB, a setup of about 70 s on two cores).
pub const MAX_CONSTRAINTS: usize = 1_500_000;

const B: usize = ACT_BITS as usize;

pub(crate) fn bad(reason: impl Into<String>) -> ZkError {
    ZkError::BadProgram(reason.into())
}

/// The short name of a layer's kind, for errors.
pub fn op_name(layer: &Layer) -> &'static str {
    match layer {
        Layer::Dense { .. } => "dense",
        Layer::Conv2d { .. } => "conv2d",
        Layer::Relu => "relu",
        Layer::MaxPool { .. } => "max_pool",
        Layer::AveragePool { .. } => "average_pool",
        Layer::Reshape { .. } => "reshape",
        Layer::Transpose { .. } => "transpose",
        Layer::AddConst { .. } => "add_const",
        Layer::MulConst { .. } => "mul_const",
        Layer::Tanh => "tanh",
        Layer::Sigmoid => "sigmoid",
        Layer::Exp => "exp",
        Layer::Softmax { .. } => "softmax",
    }
}

fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

fn check_tensor(shape: &[usize], what: &str) -> Result<(), ZkError> {
    if shape.len() > MAX_RANK {
        return Err(bad(format!(
            "{what} has rank {}, the most is {MAX_RANK}",
            shape.len()
        )));
    }
    if shape.contains(&0) {
        return Err(bad(format!("{what} has an empty axis: {shape:?}")));
    }
    let n = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|&n| n <= MAX_ELEMENTS);
    if n.is_none() {
        return Err(bad(format!(
            "{what} {shape:?} has more than {MAX_ELEMENTS} elements"
        )));
    }
    Ok(())
}

/// Geometry of a pooling or convolution window over `[N, C, H, W]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    pub(crate) n: usize,
    pub(crate) c: usize,
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) kernel: [usize; 2],
    pub(crate) strides: [usize; 2],
    pub(crate) pads: [usize; 4],
    pub(crate) oh: usize,
    pub(crate) ow: usize,
}

impl Window {
    fn new(
        shape: &[usize],
        kernel: [usize; 2],
        strides: [usize; 2],
        pads: [usize; 4],
    ) -> Result<Self, ZkError> {
        let &[n, c, h, w] = shape else {
            return Err(bad(format!("expects an [N, C, H, W] input, got {shape:?}")));
        };
        if kernel.contains(&0) || strides.contains(&0) {
            return Err(bad("kernel and strides must be positive"));
        }
        if pads[0] >= kernel[0]
            || pads[2] >= kernel[0]
            || pads[1] >= kernel[1]
            || pads[3] >= kernel[1]
        {
            return Err(bad(format!(
                "pads {pads:?} must be smaller than the kernel {kernel:?}"
            )));
        }
        let (ph, pw) = (h + pads[0] + pads[2], w + pads[1] + pads[3]);
        if ph < kernel[0] || pw < kernel[1] {
            return Err(bad(format!(
                "kernel {kernel:?} is larger than the padded input {ph}×{pw}"
            )));
        }
        Ok(Self {
            n,
            c,
            h,
            w,
            kernel,
            strides,
            pads,
            oh: (ph - kernel[0]) / strides[0] + 1,
            ow: (pw - kernel[1]) / strides[1] + 1,
        })
    }

    /// The input cells `(y, x)` inside the image under output position `(oy, ox)`.
    pub(crate) fn cells(
        &self,
        oy: usize,
        ox: usize,
    ) -> impl Iterator<Item = (usize, usize, usize)> {
        let y0 = (oy * self.strides[0]) as isize - self.pads[0] as isize;
        let x0 = (ox * self.strides[1]) as isize - self.pads[1] as isize;
        let [kh, kw] = self.kernel;
        let (h, w) = (self.h as isize, self.w as isize);
        (0..kh).flat_map(move |dy| {
            (0..kw).filter_map(move |dx| {
                let (y, x) = (y0 + dy as isize, x0 + dx as isize);
                ((0..h).contains(&y) && (0..w).contains(&x)).then_some((
                    dy * kw + dx,
                    y as usize,
                    x as usize,
                ))
            })
        })
    }

    /// Flat index of `[n, c, y, x]` in the input.
    pub(crate) fn at(&self, n: usize, c: usize, y: usize, x: usize) -> usize {
        ((n * self.c + c) * self.h + y) * self.w + x
    }
}

/// The window of a `Conv2d`, `MaxPool` or `AveragePool` on `shape`.
pub(crate) fn window(layer: &Layer, shape: &[usize]) -> Result<Window, ZkError> {
    match layer {
        Layer::Conv2d {
            kernel,
            strides,
            pads,
            ..
        }
        | Layer::MaxPool {
            kernel,
            strides,
            pads,
        }
        | Layer::AveragePool {
            kernel,
            strides,
            pads,
            ..
        } => Window::new(shape, *kernel, *strides, *pads),
        _ => Err(bad("not a windowed layer")),
    }
}

/// For each element of a tensor of shape `shape`, the index into a constant of shape
/// `cshape` broadcast to it (numpy rules, the constant's axes aligned to the right).
pub(crate) fn broadcast_map(shape: &[usize], cshape: &[usize]) -> Result<Vec<usize>, ZkError> {
    if cshape.len() > shape.len() {
        return Err(bad(format!(
            "constant of shape {cshape:?} does not broadcast to {shape:?}"
        )));
    }
    let lead = shape.len() - cshape.len();
    for (i, &d) in cshape.iter().enumerate() {
        if d != 1 && d != shape[lead + i] {
            return Err(bad(format!(
                "constant of shape {cshape:?} does not broadcast to {shape:?}"
            )));
        }
    }
    let total = numel(shape);
    let mut map = Vec::with_capacity(total);
    for flat in 0..total {
        let (mut rem, mut ci, mut cstride) = (flat, 0, 1);
        for axis in (0..shape.len()).rev() {
            let coord = rem % shape[axis];
            rem /= shape[axis];
            if axis >= lead {
                let cd = cshape[axis - lead];
                if cd != 1 {
                    ci += coord * cstride;
                }
                cstride *= cd;
            }
        }
        map.push(ci);
    }
    Ok(map)
}

/// For each output element of a transpose, the input element it copies.
pub(crate) fn transpose_map(shape: &[usize], perm: &[usize]) -> Vec<usize> {
    let rank = shape.len();
    let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let mut in_strides = vec![1; rank];
    for a in (0..rank.saturating_sub(1)).rev() {
        in_strides[a] = in_strides[a + 1] * shape[a + 1];
    }
    (0..numel(shape))
        .map(|flat| {
            let (mut rem, mut src) = (flat, 0);
            for a in (0..rank).rev() {
                let coord = rem % out_shape[a];
                rem /= out_shape[a];
                src += coord * in_strides[perm[a]];
            }
            src
        })
        .collect()
}

/// Softmax slices along `axis`: `(outer, n, inner)`; element `i` of slice `(o, j)` is at
/// `(o·n + i)·inner + j`.
pub(crate) fn softmax_slices(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (
        numel(&shape[..axis]),
        shape[axis],
        numel(&shape[axis + 1..]),
    )
}

/// `⌈log2(n + 1)⌉`: bits to write `0..=n`.
pub(crate) fn bit_len(n: u128) -> usize {
    (128 - n.leading_zeros()) as usize
}

/// Bits of the remainder of a softmax division over `n` values (see the circuit).
pub(crate) fn softmax_rem_bits(n: usize, frac_bits: u32) -> usize {
    bit_len(n as u128) + frac_bits as usize + 2
}

/// Constraints of one piecewise activation (input bound below `2^32`).
pub(crate) fn piecewise_cost(g: Smooth, frac_bits: u32) -> usize {
    let t = g.table(frac_bits);
    let head = (B + 1) + 1; // decomposition of t + 2^32 and its equality
    let clamp = if matches!(t.above, super::activation::Above::Overflow) {
        1 // top · z = 0
    } else {
        3 // z ≠ 0 (two), above = top · o
    };
    let one_hot = (1usize << SEG_BITS) - 2;
    head + clamp + one_hot + 3 + 1 + (t.shift + t.q_bits) as usize + 2
}

/// Constraints of a division by a positive constant `d` (quotient range-checked to an
/// activation).
pub(crate) fn div_const_cost(d: u64) -> usize {
    if d.is_power_of_two() {
        B + d.trailing_zeros() as usize + 2
    } else {
        B + 2 * bit_len(u128::from(d - 1)) + 3
    }
}

/// Whether a layer's outputs carry their range decomposition (so a following `Relu` costs
/// one constraint and packing the output costs nothing).
fn outputs_have_bits(layer: &Layer, frac_bits: u32) -> bool {
    match layer {
        Layer::Dense { .. }
        | Layer::Conv2d { .. }
        | Layer::MulConst { .. }
        | Layer::AddConst { .. }
        | Layer::AveragePool { .. }
        | Layer::Softmax { .. } => true,
        Layer::Exp => Smooth::Exp.table(frac_bits).q_bits == ACT_BITS,
        _ => false,
    }
}

impl Program {
    /// The output shape of each layer, in order, after checking that the layers chain
    /// (see [`Program::check`] for everything else that is checked).
    pub fn layer_shapes(&self) -> Result<Vec<Vec<usize>>, ZkError> {
        check_tensor(&self.input.shape, "the input")?;
        if self.layers.len() > MAX_LAYERS {
            return Err(bad(format!(
                "{} layers, the most is {MAX_LAYERS}",
                self.layers.len()
            )));
        }
        let mut shape = self.input.shape.clone();
        let mut macs = 0usize;
        let mut out = Vec::with_capacity(self.layers.len());
        for (i, layer) in self.layers.iter().enumerate() {
            let at = |e: ZkError| match e {
                ZkError::BadProgram(r) => bad(format!("layer {i} ({}): {r}", op_name(layer))),
                other => other,
            };
            let (next, layer_macs) = next_shape(layer, &shape).map_err(at)?;
            check_tensor(&next, "its output").map_err(at)?;
            macs = macs.saturating_add(layer_macs);
            shape = next;
            out.push(shape.clone());
        }
        if macs > MAX_MACS {
            return Err(bad(format!(
                "{macs} multiply-accumulates, the most is {MAX_MACS}"
            )));
        }
        Ok(out)
    }

    /// Checks everything the evaluator and the circuit rely on: `frac_bits` in
    /// `1..=20`; layers that chain (ranks, axes, weight and bias counts, kernels, pads
    /// smaller than kernels, broadcastable constants, permutations); a last shape equal to
    /// `output.shape`; and the caps [`MAX_RANK`], [`MAX_ELEMENTS`], [`MAX_LAYERS`],
    /// [`MAX_MACS`] and [`MAX_CONSTRAINTS`], so that a hostile program cannot ask for an
    /// absurd circuit.
    pub fn check(&self) -> Result<(), ZkError> {
        if !(MIN_FRAC_BITS..=MAX_FRAC_BITS).contains(&self.frac_bits) {
            return Err(bad(format!(
                "frac_bits {} is outside {MIN_FRAC_BITS}..={MAX_FRAC_BITS}",
                self.frac_bits
            )));
        }
        let shapes = self.layer_shapes()?;
        let last = shapes.last().unwrap_or(&self.input.shape);
        if *last != self.output.shape {
            return Err(bad(format!(
                "the layers produce shape {last:?}, the output is declared {:?}",
                self.output.shape
            )));
        }
        let n = self.constraints_unchecked(&shapes)?;
        if n > MAX_CONSTRAINTS {
            return Err(bad(format!(
                "the circuit would have {n} constraints, the most is {MAX_CONSTRAINTS}"
            )));
        }
        Ok(())
    }

    /// The number of R1CS constraints of the program's circuit (equal to what synthesis
    /// builds; the tests check it), after [`Program::check`].
    pub fn constraints(&self) -> Result<usize, ZkError> {
        self.check()?;
        self.constraints_unchecked(&self.layer_shapes()?)
    }

    fn constraints_unchecked(&self, shapes: &[Vec<usize>]) -> Result<usize, ZkError> {
        let f = self.frac_bits;
        let n_in = numel(&self.input.shape);
        let n_out = numel(&self.output.shape);
        // task binding, model commitment, inputs, packed inputs.
        let mut total = 2 + n_in * (B + 1) + packed_len(n_in);
        let mut has_bits = true;
        let mut shape = &self.input.shape;
        for (layer, out) in self.layers.iter().zip(shapes) {
            let m = numel(out);
            total += match layer {
                Layer::Dense { .. } | Layer::Conv2d { .. } | Layer::MulConst { .. } => {
                    m * div_const_cost(1 << f)
                }
                Layer::AddConst { .. } => m * (B + 1),
                Layer::Relu => m * if has_bits { 1 } else { B + 2 },
                Layer::Reshape { .. } | Layer::Transpose { .. } => 0,
                Layer::MaxPool { .. } => {
                    let g = window(layer, shape)?;
                    let mut c = 0;
                    for oy in 0..g.oh {
                        for ox in 0..g.ow {
                            c += (g.cells(oy, ox).count() - 1) * (B + 3);
                        }
                    }
                    c * g.n * g.c
                }
                Layer::AveragePool {
                    count_include_pad, ..
                } => {
                    let g = window(layer, shape)?;
                    let mut c = 0;
                    for oy in 0..g.oh {
                        for ox in 0..g.ow {
                            let d = if *count_include_pad {
                                g.kernel[0] * g.kernel[1]
                            } else {
                                g.cells(oy, ox).count()
                            };
                            c += div_const_cost(d as u64);
                        }
                    }
                    c * g.n * g.c
                }
                Layer::Tanh => m * piecewise_cost(Smooth::Tanh, f),
                Layer::Sigmoid => m * piecewise_cost(Smooth::Sigmoid, f),
                Layer::Exp => m * piecewise_cost(Smooth::Exp, f),
                Layer::Softmax { axis } => {
                    let (outer, n, inner) = softmax_slices(out, *axis);
                    let rb = softmax_rem_bits(n, f);
                    let per_slice = (n - 1) * (B + 3)
                        + n * (piecewise_cost(Smooth::SoftmaxExp, f) + B + 2 * rb + 3);
                    outer * inner * per_slice
                }
            };
            has_bits = match layer {
                Layer::Reshape { .. } | Layer::Transpose { .. } => has_bits,
                other => outputs_have_bits(other, f),
            };
            shape = out;
        }
        total += packed_len(n_out) + if has_bits { 0 } else { n_out * (B + 1) };
        Ok(total)
    }
}

/// The shape a layer makes of `shape`, and its multiply-accumulates.
fn next_shape(layer: &Layer, shape: &[usize]) -> Result<(Vec<usize>, usize), ZkError> {
    let same = Ok((shape.to_vec(), 0));
    match layer {
        Layer::Dense {
            inputs,
            outputs,
            weights,
            bias,
        } => {
            if shape.last() != Some(inputs) {
                return Err(bad(format!(
                    "takes {inputs} features on the last axis, the input is {shape:?}"
                )));
            }
            if *outputs == 0 || weights.len() != inputs.saturating_mul(*outputs) {
                return Err(bad(format!(
                    "{} weights for {inputs} × {outputs}",
                    weights.len()
                )));
            }
            if bias.len() != *outputs {
                return Err(bad(format!("{} biases for {outputs} outputs", bias.len())));
            }
            let mut out = shape.to_vec();
            *out.last_mut().expect("rank ≥ 1") = *outputs;
            let macs = (numel(shape) / inputs).saturating_mul(weights.len());
            Ok((out, macs))
        }
        Layer::Conv2d {
            out_channels,
            in_channels,
            kernel,
            weights,
            bias,
            ..
        } => {
            let g = window(layer, shape)?;
            if g.c != *in_channels {
                return Err(bad(format!(
                    "takes {in_channels} channels, the input has {}",
                    g.c
                )));
            }
            let taps = in_channels * kernel[0] * kernel[1];
            if *out_channels == 0 || weights.len() != out_channels.saturating_mul(taps) {
                return Err(bad(format!(
                    "{} weights for {out_channels} × {in_channels} × {kernel:?}",
                    weights.len()
                )));
            }
            if bias.len() != *out_channels {
                return Err(bad(format!(
                    "{} biases for {out_channels} channels",
                    bias.len()
                )));
            }
            let out = vec![g.n, *out_channels, g.oh, g.ow];
            let macs = numel(&out).saturating_mul(taps);
            Ok((out, macs))
        }
        Layer::MaxPool { .. } | Layer::AveragePool { .. } => {
            let g = window(layer, shape)?;
            Ok((vec![g.n, g.c, g.oh, g.ow], 0))
        }
        Layer::Reshape { shape: new } => {
            if new.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) != Some(numel(shape)) {
                return Err(bad(format!("cannot reshape {shape:?} to {new:?}")));
            }
            Ok((new.clone(), 0))
        }
        Layer::Transpose { perm } => {
            let mut seen = vec![false; shape.len()];
            if perm.len() != shape.len()
                || !perm
                    .iter()
                    .all(|&p| p < seen.len() && !std::mem::replace(&mut seen[p], true))
            {
                return Err(bad(format!(
                    "{perm:?} is not a permutation of the axes of {shape:?}"
                )));
            }
            Ok((perm.iter().map(|&p| shape[p]).collect(), 0))
        }
        Layer::AddConst {
            shape: cshape,
            values,
        }
        | Layer::MulConst {
            shape: cshape,
            values,
        } => {
            check_tensor(cshape, "the constant")?;
            if values.len() != numel(cshape) {
                return Err(bad(format!(
                    "{} values for a constant of shape {cshape:?}",
                    values.len()
                )));
            }
            broadcast_map(shape, cshape)?;
            if let Layer::AddConst { values, .. } = layer
                && values.iter().any(|v| v.unsigned_abs() > 1 << 62)
            {
                return Err(bad("added constants must be below 2^62 in magnitude"));
            }
            same
        }
        Layer::Softmax { axis } => {
            if *axis >= shape.len() {
                return Err(bad(format!("axis {axis} of a rank-{} tensor", shape.len())));
            }
            same
        }
        Layer::Relu | Layer::Tanh | Layer::Sigmoid | Layer::Exp => same,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps() {
        // [2, 3] transposed: out[j][i] = in[i][j].
        assert_eq!(transpose_map(&[2, 3], &[1, 0]), vec![0, 3, 1, 4, 2, 5]);
        assert_eq!(
            broadcast_map(&[2, 3], &[3]).unwrap(),
            vec![0, 1, 2, 0, 1, 2]
        );
        assert_eq!(
            broadcast_map(&[2, 3], &[2, 1]).unwrap(),
            vec![0, 0, 0, 1, 1, 1]
        );
        assert_eq!(broadcast_map(&[2, 3], &[]).unwrap(), vec![0; 6]);
        assert!(broadcast_map(&[2, 3], &[2]).is_err());
        assert_eq!(bit_len(0), 0);
        assert_eq!(bit_len(8), 4);
    }
}
