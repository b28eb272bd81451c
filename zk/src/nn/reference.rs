//! The real-number meaning of a program: every layer in `f64` with the program's weights
//! dequantised and the platform's `tanh`/`exp`, no rounding and no clamping. The distance
//! between this and [`super::evaluate`] is the error the fixed-point circuit adds.

use super::activation::Smooth;
use super::fixed::dequantise;
use super::program::{Layer, Program};
use super::shape::{broadcast_map, softmax_slices, transpose_map, window};
use crate::error::ZkError;

/// Runs `program` in `f64` on a real input (row-major, `program.input.shape`).
pub fn evaluate_f64(program: &Program, input: &[f64]) -> Result<Vec<f64>, ZkError> {
    program.check()?;
    let f = program.frac_bits;
    let w = |q: i64| dequantise(q, f);
    let b = |q: i64| dequantise(q, 2 * f);
    let mut x = input.to_vec();
    let mut shape = program.input.shape.clone();
    for layer in &program.layers {
        let mut out_shape = shape.clone();
        x = match layer {
            Layer::Dense {
                inputs,
                outputs,
                weights,
                bias,
            } => {
                *out_shape.last_mut().expect("rank ≥ 1") = *outputs;
                x.chunks(*inputs)
                    .flat_map(|row| {
                        (0..*outputs).map(move |o| {
                            let wr = &weights[o * inputs..(o + 1) * inputs];
                            row.iter().zip(wr).map(|(&xi, &wi)| xi * w(wi)).sum::<f64>()
                                + b(bias[o])
                        })
                    })
                    .collect()
            }
            Layer::Conv2d {
                out_channels,
                in_channels,
                kernel,
                weights,
                bias,
                ..
            } => {
                let g = window(layer, &shape)?;
                out_shape = vec![g.n, *out_channels, g.oh, g.ow];
                let taps = kernel[0] * kernel[1];
                let mut y = Vec::new();
                for n in 0..g.n {
                    for (m, &bias_m) in bias.iter().enumerate() {
                        for oy in 0..g.oh {
                            for ox in 0..g.ow {
                                let mut acc = b(bias_m);
                                for c in 0..*in_channels {
                                    for (t, yy, xx) in g.cells(oy, ox) {
                                        acc += x[g.at(n, c, yy, xx)]
                                            * w(weights[(m * in_channels + c) * taps + t]);
                                    }
                                }
                                y.push(acc);
                            }
                        }
                    }
                }
                y
            }
            Layer::Relu => x.iter().map(|&v| v.max(0.0)).collect(),
            Layer::MaxPool { .. } | Layer::AveragePool { .. } => {
                let g = window(layer, &shape)?;
                out_shape = vec![g.n, g.c, g.oh, g.ow];
                let mut y = Vec::new();
                for n in 0..g.n {
                    for c in 0..g.c {
                        for oy in 0..g.oh {
                            for ox in 0..g.ow {
                                let cells: Vec<f64> = g
                                    .cells(oy, ox)
                                    .map(|(_, yy, xx)| x[g.at(n, c, yy, xx)])
                                    .collect();
                                y.push(match layer {
                                    Layer::AveragePool {
                                        count_include_pad, ..
                                    } => {
                                        let d = if *count_include_pad {
                                            (g.kernel[0] * g.kernel[1]) as f64
                                        } else {
                                            cells.len() as f64
                                        };
                                        cells.iter().sum::<f64>() / d
                                    }
                                    _ => cells.iter().copied().fold(f64::NEG_INFINITY, f64::max),
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
                transpose_map(&shape, perm).iter().map(|&i| x[i]).collect()
            }
            Layer::AddConst { shape: cs, values } => broadcast_map(&shape, cs)?
                .iter()
                .zip(&x)
                .map(|(&c, &v)| v + w(values[c]))
                .collect(),
            Layer::MulConst { shape: cs, values } => broadcast_map(&shape, cs)?
                .iter()
                .zip(&x)
                .map(|(&c, &v)| v * w(values[c]))
                .collect(),
            Layer::Tanh => x.iter().map(|v| v.tanh()).collect(),
            Layer::Sigmoid => x.iter().map(|v| 1.0 / (1.0 + (-v).exp())).collect(),
            Layer::Exp => x.iter().map(|v| v.exp()).collect(),
            Layer::Softmax { axis } => {
                let (outer, n, inner) = softmax_slices(&shape, *axis);
                let mut y = vec![0.0; x.len()];
                for o in 0..outer {
                    for j in 0..inner {
                        let at = |i: usize| (o * n + i) * inner + j;
                        let max = (0..n).map(|i| x[at(i)]).fold(f64::NEG_INFINITY, f64::max);
                        let sum: f64 = (0..n).map(|i| (x[at(i)] - max).exp()).sum();
                        for i in 0..n {
                            y[at(i)] = (x[at(i)] - max).exp() / sum;
                        }
                    }
                }
                y
            }
        };
        shape = out_shape;
    }
    Ok(x)
}

/// An a priori bound on `max |dequantise(evaluate(p, x)) − evaluate_f64(p, dequantise(x))|`
/// over every input `x` that does not overflow, or `None` for programs with `Exp` (whose
/// error grows with its input's magnitude).
///
/// It propagates `e`, the bound on the incoming error, layer by layer (`ε = 2^-f`):
/// `Dense`/`Conv2d` `ε/2 + max_o Σ|w_o|·e`; `MulConst` `ε/2 + max|c|·e`; `AveragePool`
/// `ε/2 + e`; `Relu`, `MaxPool`, rewiring and `AddConst` `e`; `Tanh` `e + δ`;
/// `Sigmoid` `e/4 + δ`; `Softmax` over `n` `2e + (n+1)·δ_exp + ε/2`, with `δ` the tables'
/// bounds ([`Smooth::error_bound`]). The weights' own quantisation is not in it: the
/// reference uses the same (dequantised) weights.
pub fn error_bound(program: &Program) -> Result<Option<f64>, ZkError> {
    let shapes = program.layer_shapes()?;
    program.check()?;
    let f = program.frac_bits;
    let half = dequantise(1, f) / 2.0;
    let w = |q: i64| dequantise(q, f).abs();
    let mut e: f64 = 0.0;
    let mut shape = &program.input.shape;
    for (layer, out) in program.layers.iter().zip(&shapes) {
        e = match layer {
            Layer::Dense {
                inputs, weights, ..
            } => {
                let gain = weights
                    .chunks(*inputs)
                    .map(|row| row.iter().map(|&q| w(q)).sum::<f64>())
                    .fold(0.0, f64::max);
                half + gain * e
            }
            Layer::Conv2d {
                out_channels,
                weights,
                ..
            } => {
                let gain = weights
                    .chunks(weights.len() / out_channels)
                    .map(|row| row.iter().map(|&q| w(q)).sum::<f64>())
                    .fold(0.0, f64::max);
                half + gain * e
            }
            Layer::MulConst { values, .. } => {
                half + values.iter().map(|&q| w(q)).fold(0.0, f64::max) * e
            }
            Layer::AveragePool { .. } => half + e,
            Layer::Relu
            | Layer::MaxPool { .. }
            | Layer::Reshape { .. }
            | Layer::Transpose { .. }
            | Layer::AddConst { .. } => e,
            Layer::Tanh => e + Smooth::Tanh.error_bound(f),
            Layer::Sigmoid => e / 4.0 + Smooth::Sigmoid.error_bound(f),
            Layer::Exp => return Ok(None),
            Layer::Softmax { axis } => {
                let n = shape[*axis] as f64;
                2.0 * e + (n + 1.0) * Smooth::SoftmaxExp.error_bound(f) + half
            }
        };
        shape = out;
    }
    Ok(Some(e))
}
