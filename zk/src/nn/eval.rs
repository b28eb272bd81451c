//! The integer semantics of a program: exactly what the circuit proves.

use super::activation::{PieceError, Piecewise, Smooth};
use super::fixed::{div_round, in_act_range, quantise};
use super::program::{Layer, Program};
use super::shape::{broadcast_map, op_name, softmax_slices, transpose_map, window};
use crate::error::ZkError;

/// Runs `program` on `input` (row-major, `program.input.shape`, integers at `frac_bits`).
///
/// Every layer output must be an activation (`−2^31 ≤ q < 2^31`); anything else is
/// [`ZkError::Overflow`], never a wrapped value. Rounding is always
/// `⌊(a + ⌊d/2⌋) / d⌋` ([`super::div_round`]).
pub fn evaluate(program: &Program, input: &[i64]) -> Result<Vec<i64>, ZkError> {
    program.check()?;
    check_input(program, input)?;
    let mut x = input.to_vec();
    let mut shape = program.input.shape.clone();
    for (i, layer) in program.layers.iter().enumerate() {
        let (y, next) = apply(program.frac_bits, i, layer, &shape, &x)?;
        x = y;
        shape = next;
    }
    Ok(x)
}

/// Checks `input` against the program's input shape and the activation range.
pub(crate) fn check_input(program: &Program, input: &[i64]) -> Result<(), ZkError> {
    let n: usize = program.input.shape.iter().product();
    if input.len() != n {
        return Err(ZkError::BadInput {
            circuit: "nn",
            reason: format!(
                "the input has {} values, the program takes {n} ({:?})",
                input.len(),
                program.input.shape
            ),
        });
    }
    if let Some(v) = input.iter().find(|&&v| !in_act_range(i128::from(v))) {
        return Err(ZkError::BadInput {
            circuit: "nn",
            reason: format!("input value {v} is not a 32-bit activation"),
        });
    }
    Ok(())
}

/// The program's input in fixed point, from the named tensors a submitter sends (in reals):
/// exactly one, named and shaped as the program's input, quantised to `program.frac_bits`
/// ([`quantise`], to nearest). Refuses another count, name or shape, values that are not
/// finite, and values outside the 32-bit activations. A node and the coordinator both call it,
/// so both prove and check the same integers.
pub fn quantise_input<'a>(
    program: &Program,
    tensors: impl IntoIterator<Item = (&'a str, &'a [usize], &'a [f64])>,
) -> Result<Vec<i64>, ZkError> {
    let bad = |reason: String| ZkError::BadInput {
        circuit: "nn",
        reason,
    };
    let want = &program.input;
    let tensors: Vec<_> = tensors.into_iter().collect();
    let [(name, shape, data)] = tensors[..] else {
        return Err(bad(format!(
            "a proved model takes one input tensor, `{}`; {} were given",
            want.name,
            tensors.len()
        )));
    };
    if name != want.name {
        return Err(bad(format!(
            "the model's input is `{}`, not `{name}`",
            want.name
        )));
    }
    if shape != want.shape.as_slice() {
        return Err(bad(format!(
            "`{name}` has shape {shape:?}; the proved model takes {:?}",
            want.shape
        )));
    }
    if let Some(x) = data.iter().find(|x| !x.is_finite()) {
        return Err(bad(format!(
            "`{name}` holds {x}, which is not a finite number"
        )));
    }
    let q: Vec<i64> = data
        .iter()
        .map(|&x| quantise(x, program.frac_bits))
        .collect();
    check_input(program, &q)?;
    Ok(q)
}

fn overflow(layer: usize, l: &Layer, reason: String) -> ZkError {
    ZkError::Overflow {
        layer,
        op: op_name(l),
        reason,
    }
}

fn apply(
    f: u32,
    index: usize,
    layer: &Layer,
    shape: &[usize],
    x: &[i64],
) -> Result<(Vec<i64>, Vec<usize>), ZkError> {
    let act = |v: i128, what: &dyn Fn() -> String| -> Result<i64, ZkError> {
        if in_act_range(v) {
            Ok(v as i64)
        } else {
            Err(overflow(
                index,
                layer,
                format!("{} = {v} is not an activation", what()),
            ))
        }
    };
    let scale = 1i128 << f;
    let mut out_shape = shape.to_vec();
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
                    let acc = xr
                        .iter()
                        .zip(wr)
                        .fold(i128::from(bias[o]), |a, (&xi, &wi)| {
                            a + i128::from(xi) * i128::from(wi)
                        });
                    y.push(act(div_round(acc, scale), &|| {
                        format!("output {o} of row {r}")
                    })?);
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
            let g = window(layer, shape)?;
            out_shape = vec![g.n, *out_channels, g.oh, g.ow];
            let taps = kernel[0] * kernel[1];
            let mut y = Vec::with_capacity(out_shape.iter().product());
            for n in 0..g.n {
                for (m, &bias_m) in bias.iter().enumerate() {
                    for oy in 0..g.oh {
                        for ox in 0..g.ow {
                            let mut acc = i128::from(bias_m);
                            for c in 0..*in_channels {
                                let wbase = (m * in_channels + c) * taps;
                                for (t, yy, xx) in g.cells(oy, ox) {
                                    acc += i128::from(x[g.at(n, c, yy, xx)])
                                        * i128::from(weights[wbase + t]);
                                }
                            }
                            y.push(act(div_round(acc, scale), &|| {
                                format!("output [{n}, {m}, {oy}, {ox}]")
                            })?);
                        }
                    }
                }
            }
            y
        }
        Layer::Relu => x.iter().map(|&v| v.max(0)).collect(),
        Layer::MaxPool { .. } | Layer::AveragePool { .. } => {
            let g = window(layer, shape)?;
            out_shape = vec![g.n, g.c, g.oh, g.ow];
            let mut y = Vec::with_capacity(out_shape.iter().product());
            for n in 0..g.n {
                for c in 0..g.c {
                    for oy in 0..g.oh {
                        for ox in 0..g.ow {
                            let cells = g.cells(oy, ox).map(|(_, yy, xx)| x[g.at(n, c, yy, xx)]);
                            y.push(match layer {
                                Layer::AveragePool {
                                    count_include_pad, ..
                                } => {
                                    let (sum, count) = cells.fold((0i128, 0i128), |(s, k), v| {
                                        (s + i128::from(v), k + 1)
                                    });
                                    let d = if *count_include_pad {
                                        (g.kernel[0] * g.kernel[1]) as i128
                                    } else {
                                        count
                                    };
                                    // The mean of activations is an activation.
                                    div_round(sum, d) as i64
                                }
                                _ => cells.max().expect("every window has a cell"),
                            });
                        }
                    }
                }
            }
            y
        }
        Layer::Reshape { shape: new } => {
            out_shape = new.clone();
            x.to_vec()
        }
        Layer::Transpose { perm } => {
            out_shape = perm.iter().map(|&p| shape[p]).collect();
            transpose_map(shape, perm).iter().map(|&i| x[i]).collect()
        }
        Layer::AddConst {
            shape: cshape,
            values,
        } => broadcast_map(shape, cshape)?
            .iter()
            .zip(x)
            .enumerate()
            .map(|(i, (&c, &v))| {
                act(i128::from(v) + i128::from(values[c]), &|| {
                    format!("element {i}")
                })
            })
            .collect::<Result<_, _>>()?,
        Layer::MulConst {
            shape: cshape,
            values,
        } => broadcast_map(shape, cshape)?
            .iter()
            .zip(x)
            .enumerate()
            .map(|(i, (&c, &v))| {
                let p = i128::from(v) * i128::from(values[c]);
                act(div_round(p, scale), &|| format!("element {i}"))
            })
            .collect::<Result<_, _>>()?,
        Layer::Tanh | Layer::Sigmoid | Layer::Exp => {
            let g = match layer {
                Layer::Tanh => Smooth::Tanh,
                Layer::Sigmoid => Smooth::Sigmoid,
                _ => Smooth::Exp,
            };
            let table = g.table(f);
            x.iter()
                .enumerate()
                .map(|(i, &v)| piece(&table, v.into(), index, layer, i))
                .collect::<Result<_, _>>()?
        }
        Layer::Softmax { axis } => {
            let table = Smooth::SoftmaxExp.table(f);
            let (outer, n, inner) = softmax_slices(shape, *axis);
            let mut y = vec![0i64; x.len()];
            for o in 0..outer {
                for j in 0..inner {
                    let at = |i: usize| (o * n + i) * inner + j;
                    let max = (0..n).map(|i| x[at(i)]).max().expect("n ≥ 1");
                    let e = (0..n)
                        .map(|i| {
                            piece(
                                &table,
                                i128::from(x[at(i)]) - i128::from(max),
                                index,
                                layer,
                                at(i),
                            )
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    let sum: i128 = e.iter().map(|&v| i128::from(v)).sum();
                    for (i, &ei) in e.iter().enumerate() {
                        y[at(i)] = softmax_div(ei, sum, f) as i64;
                    }
                }
            }
            y
        }
    };
    Ok((y, out_shape))
}

/// `⌊(2^(f+1)·e + S) / 2S⌋ = round(e·2^f / S)`, ties up.
pub(crate) fn softmax_div(e: i64, sum: i128, f: u32) -> i128 {
    (i128::from(e) * (1i128 << (f + 1)) + sum).div_euclid(2 * sum)
}

fn piece(
    table: &Piecewise,
    v: i128,
    index: usize,
    layer: &Layer,
    element: usize,
) -> Result<i64, ZkError> {
    table.eval(v).map_err(|e| {
        let why = match e {
            PieceError::AboveDomain => "is at or above 16, outside exp's domain",
            PieceError::Overflow => "gives a result that is not an activation",
        };
        overflow(index, layer, format!("element {element} = {v} {why}"))
    })
}
