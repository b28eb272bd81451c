//! The constraint system of a program: gadgets and layers.
//!
//! Every tensor element is a [`Wire`]: a linear combination of variables, its value while
//! proving, and, when one exists, the 32 bits of `q + 2^31` (its range decomposition), which
//! a following `Relu` or the output packing reuse. Weights and constants are field
//! constants, so `Dense` and `Conv2d` are linear combinations; only rescales, comparisons and
//! smooth functions cost constraints. Every wire holds an activation: layers whose outputs
//! are not activations by construction range-check them.

use std::rc::Rc;

use ark_bn254::Fr;
use ark_ff::{Field, One, Zero};
use ark_relations::gr1cs::{
    ConstraintSynthesizer, ConstraintSystemRef, LinearCombination, SynthesisError, Variable,
};

use super::activation::{Above, Piecewise, SEG_BITS, Smooth};
use super::eval::softmax_div;
use super::fixed::{ACT_BITS, PACK, div_round, fr};
use super::program::{Layer, Program};
use super::shape::{
    bit_len, broadcast_map, softmax_rem_bits, softmax_slices, transpose_map, window,
};

type Lc = LinearCombination<Fr>;
type R<T> = Result<T, SynthesisError>;

const B: usize = ACT_BITS as usize;
const OFFSET: i128 = 1 << (ACT_BITS - 1);

fn lc_of(mut terms: Vec<(Fr, Variable)>) -> Lc {
    terms.retain(|(c, _)| !c.is_zero());
    let mut lc = LinearCombination(terms);
    lc.compactify();
    lc.retain(|(c, _)| !c.is_zero());
    lc
}

fn constant(c: i128) -> Lc {
    lc_of(vec![(fr(c), Variable::One)])
}

fn var_lc(v: Variable) -> Lc {
    LinearCombination::from(v)
}

/// `Σ coeff·lc` as one linear combination.
fn combine(parts: &[(Fr, &Lc)]) -> Lc {
    let terms = parts
        .iter()
        .flat_map(|(c, lc)| lc.iter().map(move |(k, v)| (*c * k, *v)))
        .collect();
    lc_of(terms)
}

/// An element of a tensor in the circuit.
#[derive(Clone)]
pub(crate) struct Wire {
    lc: Lc,
    val: Option<i128>,
    /// Bits of `val + 2^31`, least significant first, when already decomposed.
    bits: Option<Rc<[Variable]>>,
}

impl Wire {
    fn new(lc: Lc, val: Option<i128>) -> Self {
        Self {
            lc,
            val,
            bits: None,
        }
    }
}

/// Synthesis helpers over one constraint system.
struct Cx {
    cs: ConstraintSystemRef<Fr>,
}

impl Cx {
    fn witness(&self, val: Option<i128>) -> R<Variable> {
        self.cs
            .new_witness_variable(|| val.map(fr).ok_or(SynthesisError::AssignmentMissing))
    }

    fn enforce(&self, a: Lc, b: Lc, c: Lc) -> R<()> {
        self.cs.enforce_r1cs_constraint(|| a, || b, || c)
    }

    fn enforce_eq(&self, a: Lc, b: Lc) -> R<()> {
        self.enforce(a, var_lc(Variable::One), b)
    }

    /// `a·b` as a fresh variable: one constraint.
    fn mul(&self, a: &Lc, b: &Lc, val: Option<i128>) -> R<Variable> {
        let out = self.witness(val)?;
        self.enforce(a.clone(), b.clone(), var_lc(out))?;
        Ok(out)
    }

    /// Bits of `lc + offset` (least significant first), which must lie in `[0, 2^n)`:
    /// `n` booleanity constraints and one equality.
    fn decompose(&self, lc: &Lc, val: Option<i128>, offset: i128, n: usize) -> R<Vec<Variable>> {
        let u = val.map(|v| v + offset);
        let bits = self.free_bits(u, n)?;
        let sum = bit_sum(&bits, 0);
        self.enforce_eq(sum, combine(&[(Fr::one(), lc), (fr(offset), &constant(1))]))?;
        Ok(bits)
    }

    /// `n` boolean variables holding the low bits of `u`, with no equality.
    fn free_bits(&self, u: Option<i128>, n: usize) -> R<Vec<Variable>> {
        (0..n)
            .map(|i| {
                let b = self.witness(u.map(|u| (u >> i) & 1))?;
                self.enforce(
                    var_lc(b),
                    lc_of(vec![(Fr::one(), Variable::One), (-Fr::one(), b)]),
                    Lc::zero(),
                )?;
                Ok(b)
            })
            .collect()
    }

    /// The wire's 32-bit decomposition, made now if it has none.
    fn bits(&self, x: &mut Wire) -> R<Rc<[Variable]>> {
        if let Some(b) = &x.bits {
            return Ok(b.clone());
        }
        let bits: Rc<[Variable]> = self.decompose(&x.lc, x.val, OFFSET, B)?.into();
        x.bits = Some(bits.clone());
        Ok(bits)
    }

    /// `⌊(acc + ⌊2^e/2⌋) / 2^e⌋` as a fresh variable `q` with `−2^(qb−1) ≤ q < 2^(qb−1)`:
    /// `e + qb + 2` constraints. The wire carries bits when `qb = 32`.
    fn div_pow2(&self, acc: &Lc, val: Option<i128>, e: u32, qb: u32) -> R<Wire> {
        let half = if e == 0 { 0 } else { 1i128 << (e - 1) };
        let q_off = 1i128 << (qb - 1);
        let q_val = val.map(|a| div_round(a, 1 << e));
        let bits = self.decompose(acc, val, half + (q_off << e), (e + qb) as usize)?;
        let q = self.witness(q_val)?;
        let high = &bits[e as usize..];
        self.enforce_eq(
            combine(&[(Fr::one(), &var_lc(q)), (Fr::one(), &constant(q_off))]),
            bit_sum(high, 0),
        )?;
        let mut w = Wire::new(var_lc(q), q_val);
        if qb == ACT_BITS {
            w.bits = Some(high.into());
        }
        Ok(w)
    }

    /// `⌊(acc + ⌊d/2⌋) / d⌋` for a constant `d ≥ 1`, range-checked to an activation.
    fn div_const(&self, acc: &Lc, val: Option<i128>, d: u64) -> R<Wire> {
        if d.is_power_of_two() {
            return self.div_pow2(acc, val, d.trailing_zeros(), ACT_BITS);
        }
        let d = i128::from(d);
        let q_val = val.map(|a| div_round(a, d));
        let r_val = val.zip(q_val).map(|(a, q)| a + d / 2 - q * d);
        let q = self.witness(q_val)?;
        let mut w = Wire::new(var_lc(q), q_val);
        self.bits(&mut w)?;
        let eb = bit_len((d - 1) as u128);
        let r_bits = self.free_bits(r_val, eb)?;
        let r = bit_sum(&r_bits, 0);
        // acc + ⌊d/2⌋ = q·d + r
        self.enforce_eq(
            combine(&[(Fr::one(), acc), (fr(d / 2), &constant(1))]),
            combine(&[(fr(d), &var_lc(q)), (Fr::one(), &r)]),
        )?;
        // d − 1 − r ≥ 0
        let rest = combine(&[(fr(d - 1), &constant(1)), (-Fr::one(), &r)]);
        self.decompose(&rest, r_val.map(|r| d - 1 - r), 0, eb)?;
        Ok(w)
    }

    /// `max(x, 0)`: one constraint if `x` has bits, else 34.
    fn relu(&self, x: &mut Wire) -> R<Wire> {
        let bits = self.bits(x)?;
        let sign = var_lc(bits[B - 1]);
        let val = x.val.map(|v| v.max(0));
        let y = self.mul(&sign, &x.lc, val)?;
        Ok(Wire::new(var_lc(y), val))
    }

    /// `max(a, b)` of two activations: `B + 3` constraints.
    fn max2(&self, a: &Wire, b: &Wire) -> R<Wire> {
        let d = combine(&[(Fr::one(), &a.lc), (-Fr::one(), &b.lc)]);
        let d_val = a.val.zip(b.val).map(|(a, b)| a - b);
        let bits = self.decompose(&d, d_val, 1 << B, B + 1)?;
        let val = a.val.zip(b.val).map(|(a, b)| a.max(b));
        let m = self.witness(val)?;
        self.enforce(
            var_lc(bits[B]),
            d,
            combine(&[(Fr::one(), &var_lc(m)), (-Fr::one(), &b.lc)]),
        )?;
        Ok(Wire::new(var_lc(m), val))
    }

    /// A smooth function through its table; `|x| < 2^32`.
    fn piecewise(&self, x: &Lc, val: Option<i128>, t: &Piecewise) -> R<Wire> {
        let offset = (1i128 << B) - i128::from(t.lo);
        let y_val = val.map(|v| v + offset);
        let bits = self.decompose(x, val, offset, B + 1)?;
        let bit = |i: usize| y_val.map(|y| (y >> i) & 1);
        let top = var_lc(bits[B]);
        let (k, w) = (t.k as usize, t.w as usize);
        let z = bit_sum_unit(&bits[k..B]);
        let z_val = y_val.map(|y| (k..B).map(|i| (y >> i) & 1).sum::<i128>());
        let (in_lc, above) = match t.above {
            Above::Value(hi) => {
                // o = [z ≠ 0]: z·inv = o, z·(1 − o) = 0.
                let o_val = z_val.map(|z| i128::from(z != 0));
                let o = self.witness(o_val)?;
                let inv = self.cs.new_witness_variable(|| {
                    z_val
                        .map(|z| fr(z).inverse().unwrap_or_else(Fr::zero))
                        .ok_or(SynthesisError::AssignmentMissing)
                })?;
                self.enforce(z.clone(), var_lc(inv), var_lc(o))?;
                self.enforce(
                    z,
                    lc_of(vec![(Fr::one(), Variable::One), (-Fr::one(), o)]),
                    Lc::zero(),
                )?;
                let above_val = bit(B).zip(o_val).map(|(t, o)| t * o);
                let above = self.mul(&top, &var_lc(o), above_val)?;
                let in_lc = combine(&[(Fr::one(), &top), (-Fr::one(), &var_lc(above))]);
                (in_lc, Some((above, hi)))
            }
            Above::Overflow => {
                self.enforce(top.clone(), z, Lc::zero())?;
                (top.clone(), None)
            }
        };
        // One-hot selectors of the segment bits w..k.
        let mut sel: Vec<(Lc, Option<i128>)> = vec![(constant(1), Some(1))];
        for i in 0..SEG_BITS as usize {
            let b = bits[w + i];
            let b_val = bit(w + i);
            let mut next = vec![(Lc::zero(), None); sel.len() * 2];
            for (j, (e, e_val)) in sel.iter().enumerate() {
                let (e1, e1_val) = if i == 0 {
                    (var_lc(b), b_val)
                } else {
                    let v = e_val.zip(b_val).map(|(e, b)| e * b);
                    (var_lc(self.mul(e, &var_lc(b), v)?), v)
                };
                let e0 = combine(&[(Fr::one(), e), (-Fr::one(), &e1)]);
                let e0_val = e_val.zip(e1_val).map(|(e, e1)| e - e1);
                next[j] = (e0, e0_val);
                next[j + sel.len()] = (e1, e1_val);
            }
            sel = next;
        }
        let segment = y_val.map(|y| ((y >> w) & ((1 << SEG_BITS) - 1)) as usize);
        let coeff = |m: usize| {
            let parts: Vec<(Fr, &Lc)> = sel
                .iter()
                .zip(&t.coeffs)
                .map(|((e, _), c)| (fr(c[m]), e))
                .collect();
            combine(&parts)
        };
        let v = bit_sum(&bits[..w], 0);
        let v_val = y_val.map(|y| y & ((1 << w) - 1));
        let k_val = |m: usize| segment.map(|s| t.coeffs[s][m]);
        // Horner: h1 = K3·v, h2 = (h1 + K2)·v, h3 = (h2 + K1)·v, P = h3 + K0.
        let mut h = Lc::zero();
        let mut h_val = Some(0i128);
        for m in (1..4).rev() {
            let factor = combine(&[(Fr::one(), &h), (Fr::one(), &coeff(m))]);
            let f_val = h_val.zip(k_val(m)).map(|(h, k)| h + k);
            let prod_val = f_val.zip(v_val).map(|(f, v)| f * v);
            h = var_lc(self.mul(&factor, &v, prod_val)?);
            h_val = prod_val;
        }
        let p = combine(&[(Fr::one(), &h), (Fr::one(), &coeff(0))]);
        let p_val = h_val.zip(k_val(0)).map(|(h, k)| h + k);
        let in_val = y_val.map(|y| i128::from(y >> B == 1 && (y >> k) & ((1 << (B - k)) - 1) == 0));
        let gated_val = in_val.zip(p_val).map(|(i, p)| i * p);
        let gated = self.mul(&in_lc, &p, gated_val)?;
        let q = self.div_pow2(&var_lc(gated), gated_val, t.shift, t.q_bits)?;
        // out = q + below·(1 − top) + hi·above
        let below = i128::from(t.below);
        let mut parts = vec![
            (Fr::one(), q.lc.clone()),
            (fr(below), constant(1)),
            (-fr(below), top),
        ];
        let mut out_val = q.val.zip(bit(B)).map(|(q, top)| q + below * (1 - top));
        if let Some((above, hi)) = above {
            parts.push((fr(i128::from(hi)), var_lc(above)));
            let a_val = bit(B)
                .zip(y_val)
                .map(|(top, y)| top * i128::from((y >> k) & ((1 << (B - k)) - 1) != 0));
            out_val = out_val.zip(a_val).map(|(o, a)| o + i128::from(hi) * a);
        }
        let refs: Vec<(Fr, &Lc)> = parts.iter().map(|(c, l)| (*c, l)).collect();
        let mut out = Wire::new(combine(&refs), out_val);
        if below == 0 && above.is_none() {
            out.bits = q.bits;
        }
        Ok(out)
    }
}

/// `Σ b_i·2^(i + shift)`.
fn bit_sum(bits: &[Variable], shift: usize) -> Lc {
    let mut c = Fr::from(2u64).pow([shift as u64]);
    let mut terms = Vec::with_capacity(bits.len());
    for &b in bits {
        terms.push((c, b));
        c += c;
    }
    lc_of(terms)
}

/// `Σ b_i`.
fn bit_sum_unit(bits: &[Variable]) -> Lc {
    lc_of(bits.iter().map(|&b| (Fr::one(), b)).collect())
}

/// A program's circuit; without an assignment it is the shape setup uses.
pub(crate) struct NnCircuit<'a> {
    pub(crate) program: &'a Program,
    /// The public inputs (task binding, commitment, packed input, packed output) and the
    /// input tensor, when proving.
    pub(crate) assignment: Option<(Vec<Fr>, Vec<i64>)>,
}

impl ConstraintSynthesizer<Fr> for NnCircuit<'_> {
    fn generate_constraints(self, cs: ConstraintSystemRef<Fr>) -> R<()> {
        let p = self.program;
        let cx = Cx { cs: cs.clone() };
        let (public, input) = match self.assignment {
            Some((p, i)) => (Some(p), Some(i)),
            None => (None, None),
        };
        let n_in: usize = p.input.shape.iter().product();
        let n_out: usize = p.output.shape.iter().product();
        let n_public = 2 + n_in.div_ceil(PACK) + n_out.div_ceil(PACK);
        let publics = (0..n_public)
            .map(|i| {
                let val = public.as_ref().map(|p| p[i]);
                cs.new_input_variable(|| val.ok_or(SynthesisError::AssignmentMissing))
            })
            .collect::<R<Vec<_>>>()?;
        // The task binding in a constraint of its own (tb · tb = tb²), so the statement
        // depends on it; the model commitment pinned to this program's constant.
        let tb_val = public.as_ref().map(|p| p[0]);
        let tb_sq = cs.new_witness_variable(|| {
            tb_val
                .map(|t| t.square())
                .ok_or(SynthesisError::AssignmentMissing)
        })?;
        cx.enforce(var_lc(publics[0]), var_lc(publics[0]), var_lc(tb_sq))?;
        cx.enforce_eq(
            var_lc(publics[1]),
            lc_of(vec![(p.commitment(), Variable::One)]),
        )?;

        // The input: each element range-checked, and packed into the public inputs.
        let mut x = Vec::with_capacity(n_in);
        for i in 0..n_in {
            let val = input.as_ref().map(|v| i128::from(v[i]));
            let var = cx.witness(val)?;
            let mut w = Wire::new(var_lc(var), val);
            cx.bits(&mut w)?;
            x.push(w);
        }
        bind_packed(&cx, &mut x, &publics[2..2 + n_in.div_ceil(PACK)])?;

        let mut shape = p.input.shape.clone();
        for layer in &p.layers {
            let (y, next) = synthesize_layer(&cx, p.frac_bits, layer, &shape, x)?;
            x = y;
            shape = next;
        }
        bind_packed(&cx, &mut x, &publics[2 + n_in.div_ceil(PACK)..])?;
        Ok(())
    }
}

/// Enforces `packed[k] = Σ_j (x[7k + j] + 2^31)·2^(32 j)` from the wires' bits.
fn bind_packed(cx: &Cx, x: &mut [Wire], packed: &[Variable]) -> R<()> {
    for (chunk, &target) in x.chunks_mut(PACK).zip(packed) {
        let mut terms = Vec::with_capacity(chunk.len() * B);
        for (j, w) in chunk.iter_mut().enumerate() {
            let bits = cx.bits(w)?;
            terms.extend(bit_sum(&bits, j * B).0);
        }
        cx.enforce_eq(var_lc(target), lc_of(terms))?;
    }
    Ok(())
}

fn synthesize_layer(
    cx: &Cx,
    f: u32,
    layer: &Layer,
    shape: &[usize],
    mut x: Vec<Wire>,
) -> R<(Vec<Wire>, Vec<usize>)> {
    let unsat = |_| SynthesisError::Unsatisfiable;
    let mut out_shape = shape.to_vec();
    let scale = 1u64 << f;
    let y = match layer {
        Layer::Dense {
            inputs,
            outputs,
            weights,
            bias,
        } => {
            let rows = x.len() / inputs;
            *out_shape.last_mut().expect("rank ≥ 1") = *outputs;
            let mut y = Vec::with_capacity(rows * outputs);
            for r in 0..rows {
                let xr = &x[r * inputs..(r + 1) * inputs];
                for o in 0..*outputs {
                    let wr = &weights[o * inputs..(o + 1) * inputs];
                    let taps = xr.iter().zip(wr).map(|(xi, &wi)| (xi, wi));
                    let (acc, val) = affine(taps, bias[o]);
                    y.push(cx.div_const(&acc, val, scale)?);
                }
            }
            y
        }
        Layer::Conv2d {
            out_channels,
            in_channels,
            kernel,
            weights,
            bias,
            ..
        } => {
            let g = window(layer, shape).map_err(unsat)?;
            out_shape = vec![g.n, *out_channels, g.oh, g.ow];
            let taps_per = kernel[0] * kernel[1];
            let mut y = Vec::with_capacity(out_shape.iter().product());
            for n in 0..g.n {
                for (m, &bias_m) in bias.iter().enumerate() {
                    for oy in 0..g.oh {
                        for ox in 0..g.ow {
                            let taps = (0..*in_channels).flat_map(|c| {
                                let wbase = (m * in_channels + c) * taps_per;
                                let x = &x;
                                g.cells(oy, ox).map(move |(t, yy, xx)| {
                                    (&x[g.at(n, c, yy, xx)], weights[wbase + t])
                                })
                            });
                            let (acc, val) = affine(taps, bias_m);
                            y.push(cx.div_const(&acc, val, scale)?);
                        }
                    }
                }
            }
            y
        }
        Layer::Relu => x.iter_mut().map(|w| cx.relu(w)).collect::<R<_>>()?,
        Layer::MaxPool { .. } | Layer::AveragePool { .. } => {
            let g = window(layer, shape).map_err(unsat)?;
            out_shape = vec![g.n, g.c, g.oh, g.ow];
            let mut y = Vec::with_capacity(out_shape.iter().product());
            for n in 0..g.n {
                for c in 0..g.c {
                    for oy in 0..g.oh {
                        for ox in 0..g.ow {
                            let cells: Vec<&Wire> = g
                                .cells(oy, ox)
                                .map(|(_, yy, xx)| &x[g.at(n, c, yy, xx)])
                                .collect();
                            y.push(match layer {
                                Layer::AveragePool {
                                    count_include_pad, ..
                                } => {
                                    let d = if *count_include_pad {
                                        g.kernel[0] * g.kernel[1]
                                    } else {
                                        cells.len()
                                    };
                                    let (sum, val) = affine(cells.into_iter().map(|w| (w, 1)), 0);
                                    cx.div_const(&sum, val, d as u64)?
                                }
                                _ => {
                                    let mut m = cells[0].clone();
                                    // Outputs never carry bits, so that the count does not
                                    // depend on which windows have a single cell.
                                    m.bits = None;
                                    for w in &cells[1..] {
                                        m = cx.max2(&m, w)?;
                                    }
                                    m
                                }
                            });
                        }
                    }
                }
            }
            y
        }
        Layer::Reshape { shape: new } => {
            out_shape = new.clone();
            x
        }
        Layer::Transpose { perm } => {
            out_shape = perm.iter().map(|&p| shape[p]).collect();
            transpose_map(shape, perm)
                .iter()
                .map(|&i| x[i].clone())
                .collect()
        }
        Layer::AddConst {
            shape: cshape,
            values,
        } => {
            let map = broadcast_map(shape, cshape).map_err(unsat)?;
            x.iter()
                .zip(map)
                .map(|(w, c)| {
                    let c = i128::from(values[c]);
                    let lc = combine(&[(Fr::one(), &w.lc), (fr(c), &constant(1))]);
                    let mut out = Wire::new(lc, w.val.map(|v| v + c));
                    cx.bits(&mut out)?;
                    Ok(out)
                })
                .collect::<R<_>>()?
        }
        Layer::MulConst {
            shape: cshape,
            values,
        } => {
            let map = broadcast_map(shape, cshape).map_err(unsat)?;
            x.iter()
                .zip(map)
                .map(|(w, c)| {
                    let (acc, val) = affine(std::iter::once((w, values[c])), 0);
                    cx.div_const(&acc, val, scale)
                })
                .collect::<R<_>>()?
        }
        Layer::Tanh | Layer::Sigmoid | Layer::Exp => {
            let g = match layer {
                Layer::Tanh => Smooth::Tanh,
                Layer::Sigmoid => Smooth::Sigmoid,
                _ => Smooth::Exp,
            };
            let table = g.table(f);
            x.iter()
                .map(|w| cx.piecewise(&w.lc, w.val, &table))
                .collect::<R<_>>()?
        }
        Layer::Softmax { axis } => {
            let table = Smooth::SoftmaxExp.table(f);
            let (outer, n, inner) = softmax_slices(shape, *axis);
            let rb = softmax_rem_bits(n, f);
            let mut y: Vec<Option<Wire>> = vec![None; x.len()];
            for o in 0..outer {
                for j in 0..inner {
                    let at = |i: usize| (o * n + i) * inner + j;
                    let mut m = x[at(0)].clone();
                    for i in 1..n {
                        m = cx.max2(&m, &x[at(i)])?;
                    }
                    let e = (0..n)
                        .map(|i| {
                            let xi = &x[at(i)];
                            let d = combine(&[(Fr::one(), &xi.lc), (-Fr::one(), &m.lc)]);
                            let d_val = xi.val.zip(m.val).map(|(a, b)| a - b);
                            cx.piecewise(&d, d_val, &table)
                        })
                        .collect::<R<Vec<_>>>()?;
                    let refs: Vec<(Fr, &Lc)> = e.iter().map(|w| (Fr::one(), &w.lc)).collect();
                    let sum = combine(&refs);
                    let sum_val = e.iter().try_fold(0i128, |s, w| w.val.map(|v| s + v));
                    let two_sum = combine(&[(Fr::from(2u64), &sum)]);
                    for (i, ei) in e.iter().enumerate() {
                        // y·2S + r = 2^(f+1)·e + S, 0 ≤ r < 2S.
                        let y_val = ei
                            .val
                            .zip(sum_val)
                            .map(|(e, s)| softmax_div(e as i64, s, f));
                        let r_val = ei
                            .val
                            .zip(sum_val)
                            .zip(y_val)
                            .map(|((e, s), y)| (e << (f + 1)) + s - y * 2 * s);
                        let yv = cx.witness(y_val)?;
                        let mut yw = Wire::new(var_lc(yv), y_val);
                        cx.bits(&mut yw)?;
                        let r_bits = cx.free_bits(r_val, rb)?;
                        let r = bit_sum(&r_bits, 0);
                        cx.enforce(
                            var_lc(yv),
                            two_sum.clone(),
                            combine(&[
                                (fr(1i128 << (f + 1)), &ei.lc),
                                (Fr::one(), &sum),
                                (-Fr::one(), &r),
                            ]),
                        )?;
                        let rest = combine(&[
                            (Fr::one(), &two_sum),
                            (-Fr::one(), &constant(1)),
                            (-Fr::one(), &r),
                        ]);
                        let rest_val = sum_val.zip(r_val).map(|(s, r)| 2 * s - 1 - r);
                        cx.decompose(&rest, rest_val, 0, rb)?;
                        y[at(i)] = Some(yw);
                    }
                }
            }
            y.into_iter().map(|w| w.expect("every element")).collect()
        }
    };
    Ok((y, out_shape))
}

/// `Σ w_i·x_i + bias` as one linear combination, with its value.
fn affine<'w>(taps: impl Iterator<Item = (&'w Wire, i64)>, bias: i64) -> (Lc, Option<i128>) {
    let mut terms = vec![(fr(i128::from(bias)), Variable::One)];
    let mut val = Some(i128::from(bias));
    for (x, w) in taps {
        if w == 0 {
            continue;
        }
        let c = fr(i128::from(w));
        terms.extend(x.lc.iter().map(|(k, v)| (c * k, *v)));
        val = val.zip(x.val).map(|(a, v)| a + v * i128::from(w));
    }
    (lc_of(terms), val)
}
