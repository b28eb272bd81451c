//! The ONNX front end (`nn::onnx`, feature `onnx`) on the models of `tests/fixtures/zk/`
//! (made by `scripts/make-zk-models.py`): each compiled program, run by a plain `f64`
//! evaluator with its quantised parameters dequantised, matches onnxruntime's output on the
//! fixture's (quantised) input to within the quantisation error; the models no proof covers
//! are refused with the error that names why.
//!
//! The bound is `2^(5−f) + 1e-5` (0.125 at `f = 8`, 0.0078 at `f = 12`, 4e-5 at `f = 20`):
//! weights, biases and the input are each within `2^-(f+1)` of the real ones, and what that
//! becomes at the output grows with fan-in, magnitudes and the layers after it (the CNN, whose
//! batch norm scales its convolution up to 3.4×, is the worst, at a quarter of the bound); the
//! `1e-5` is onnxruntime's own float32 rounding. At `f = 20` every model is within 1e-5, so the
//! lowering itself (folding included) is exact and only quantisation is left. The integer
//! evaluator's extra rounding (one `2^-(f+1)` per rescale) is the circuit's business and is
//! tested there.

use std::path::PathBuf;

use ambient_zk::nn::onnx::{CompileError, compile};
use ambient_zk::nn::{Layer, Program};
use serde_json::Value;

/// `zk/…` for this front end's models, `onnx/…` for the inference task's (tests/fixtures/onnx).
fn fixture(name: &str) -> PathBuf {
    let name = if name.contains('/') {
        name.to_string()
    } else {
        format!("zk/{name}")
    };
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

fn model(name: &str) -> Vec<u8> {
    std::fs::read(fixture(&format!("{name}.onnx"))).expect("fixture model")
}

/// The fixture's input `x` and onnxruntime's output `y`.
fn reference(name: &str) -> (Tensor, Tensor) {
    let text = std::fs::read_to_string(fixture(&format!("{name}.json"))).expect("fixture json");
    let json: Value = serde_json::from_str(&text).expect("json");
    let tensor = |v: &Value| {
        let shape = v["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize);
        let data = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_f64().unwrap());
        Tensor {
            shape: shape.collect(),
            data: data.collect(),
        }
    };
    (tensor(&json["inputs"]["x"]), tensor(&json["outputs"]["y"]))
}

// ---------------------------------------------------------------------------------------------
// A plain f64 evaluation of a Program, parameters dequantised.

#[derive(Debug, Clone)]
struct Tensor {
    shape: Vec<usize>,
    data: Vec<f64>,
}

fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// The multi-index of flat position `flat` in `shape`.
fn index(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for a in (0..shape.len()).rev() {
        idx[a] = flat % shape[a];
        flat /= shape[a];
    }
    idx
}

/// `c` (of `shape`, right-aligned) broadcast to `to`, as a flat vector.
fn broadcast(shape: &[usize], values: &[f64], to: &[usize]) -> Vec<f64> {
    let off = to.len() - shape.len();
    let cs = strides(shape);
    (0..to.iter().product())
        .map(|flat| {
            let idx = index(flat, to);
            let at: usize = (0..shape.len())
                .map(|a| {
                    if shape[a] == 1 {
                        0
                    } else {
                        idx[a + off] * cs[a]
                    }
                })
                .sum();
            values[at]
        })
        .collect()
}

/// One output position of a 2-D window over `[N, C, H, W]`: its batch, row and column, and
/// the in-bounds input cells `[ky, kx, y, x]` under it.
struct Window {
    n: usize,
    oy: usize,
    ox: usize,
    cells: Vec<[usize; 4]>,
}

/// The output shape and the windows of a convolution or pooling.
fn windows(
    shape: &[usize],
    kernel: [usize; 2],
    strides: [usize; 2],
    pads: [usize; 4],
    channels_out: usize,
) -> (Vec<usize>, Vec<Window>) {
    let (n, h, w) = (shape[0], shape[2], shape[3]);
    let oh = (h + pads[0] + pads[2] - kernel[0]) / strides[0] + 1;
    let ow = (w + pads[1] + pads[3] - kernel[1]) / strides[1] + 1;
    let mut out = vec![];
    for b in 0..n {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut cells = vec![];
                for ky in 0..kernel[0] {
                    for kx in 0..kernel[1] {
                        let y = (oy * strides[0] + ky) as isize - pads[0] as isize;
                        let x = (ox * strides[1] + kx) as isize - pads[1] as isize;
                        if y >= 0 && x >= 0 && (y as usize) < h && (x as usize) < w {
                            cells.push([ky, kx, y as usize, x as usize]);
                        }
                    }
                }
                out.push(Window {
                    n: b,
                    oy,
                    ox,
                    cells,
                });
            }
        }
    }
    (vec![n, channels_out, oh, ow], out)
}

fn eval_f64(p: &Program, input: &[f64]) -> Tensor {
    let s = (2f64).powi(p.frac_bits as i32);
    let w = |v: &[i64]| v.iter().map(|&q| q as f64 / s).collect::<Vec<_>>();
    let b = |v: &[i64]| v.iter().map(|&q| q as f64 / (s * s)).collect::<Vec<_>>();
    let mut t = Tensor {
        shape: p.input.shape.clone(),
        data: input.to_vec(),
    };
    for layer in &p.layers {
        t = match layer {
            Layer::Dense {
                inputs,
                outputs,
                weights,
                bias,
            } => {
                let (wv, bv) = (w(weights), b(bias));
                let rows = t.data.len() / inputs;
                let mut data = vec![0.0; rows * outputs];
                for r in 0..rows {
                    for o in 0..*outputs {
                        let x = &t.data[r * inputs..(r + 1) * inputs];
                        let row = &wv[o * inputs..(o + 1) * inputs];
                        data[r * outputs + o] =
                            x.iter().zip(row).map(|(x, w)| x * w).sum::<f64>() + bv[o];
                    }
                }
                let mut shape = t.shape.clone();
                *shape.last_mut().unwrap() = *outputs;
                Tensor { shape, data }
            }
            Layer::Conv2d {
                out_channels,
                in_channels,
                kernel,
                strides: st,
                pads,
                weights,
                bias,
            } => {
                let (wv, bv) = (w(weights), b(bias));
                let (h, wd) = (t.shape[2], t.shape[3]);
                let (shape, wins) = windows(&t.shape, *kernel, *st, *pads, *out_channels);
                let (oh, ow) = (shape[2], shape[3]);
                let mut data = vec![0.0; shape.iter().product()];
                for Window { n, oy, ox, cells } in &wins {
                    for m in 0..*out_channels {
                        let mut acc = bv[m];
                        for c in 0..*in_channels {
                            for &[ky, kx, y, x] in cells {
                                let wi = ((m * in_channels + c) * kernel[0] + ky) * kernel[1] + kx;
                                acc += wv[wi] * t.data[((n * in_channels + c) * h + y) * wd + x];
                            }
                        }
                        data[((n * out_channels + m) * oh + oy) * ow + ox] = acc;
                    }
                }
                Tensor { shape, data }
            }
            Layer::MaxPool {
                kernel,
                strides: st,
                pads,
            }
            | Layer::AveragePool {
                kernel,
                strides: st,
                pads,
                ..
            } => {
                let c = t.shape[1];
                let (h, wd) = (t.shape[2], t.shape[3]);
                let (shape, wins) = windows(&t.shape, *kernel, *st, *pads, c);
                let (oh, ow) = (shape[2], shape[3]);
                let mut data = vec![0.0; shape.iter().product()];
                for Window { n, oy, ox, cells } in &wins {
                    for ch in 0..c {
                        let vals = cells
                            .iter()
                            .map(|&[_, _, y, x]| t.data[((n * c + ch) * h + y) * wd + x]);
                        data[((n * c + ch) * oh + oy) * ow + ox] = match layer {
                            Layer::AveragePool {
                                count_include_pad, ..
                            } => {
                                let d = if *count_include_pad {
                                    kernel[0] * kernel[1]
                                } else {
                                    cells.len()
                                };
                                vals.sum::<f64>() / d as f64
                            }
                            _ => vals.fold(f64::NEG_INFINITY, f64::max),
                        };
                    }
                }
                Tensor { shape, data }
            }
            Layer::Relu => map(t, |x| x.max(0.0)),
            Layer::Tanh => map(t, f64::tanh),
            Layer::Sigmoid => map(t, |x| 1.0 / (1.0 + (-x).exp())),
            Layer::Exp => map(t, f64::exp),
            Layer::Reshape { shape } => {
                assert_eq!(shape.iter().product::<usize>(), t.data.len());
                Tensor {
                    shape: shape.clone(),
                    data: t.data,
                }
            }
            Layer::Transpose { perm } => {
                let shape: Vec<usize> = perm.iter().map(|&p| t.shape[p]).collect();
                let st = strides(&t.shape);
                let data = (0..t.data.len())
                    .map(|flat| {
                        let idx = index(flat, &shape);
                        t.data[perm
                            .iter()
                            .zip(&idx)
                            .map(|(&p, &i)| i * st[p])
                            .sum::<usize>()]
                    })
                    .collect();
                Tensor { shape, data }
            }
            Layer::AddConst { shape, values } => {
                let c = broadcast(shape, &w(values), &t.shape);
                Tensor {
                    data: t.data.iter().zip(c).map(|(x, c)| x + c).collect(),
                    shape: t.shape,
                }
            }
            Layer::MulConst { shape, values } => {
                let c = broadcast(shape, &w(values), &t.shape);
                Tensor {
                    data: t.data.iter().zip(c).map(|(x, c)| x * c).collect(),
                    shape: t.shape,
                }
            }
            Layer::Softmax { axis } => {
                let st = strides(&t.shape);
                let (len, step) = (t.shape[*axis], st[*axis]);
                let mut data = t.data.clone();
                for flat in 0..t.data.len() {
                    if index(flat, &t.shape)[*axis] != 0 {
                        continue;
                    }
                    let at = |k: usize| flat + k * step;
                    let max = (0..len)
                        .map(|k| t.data[at(k)])
                        .fold(f64::NEG_INFINITY, f64::max);
                    let sum: f64 = (0..len).map(|k| (t.data[at(k)] - max).exp()).sum();
                    for k in 0..len {
                        data[at(k)] = (t.data[at(k)] - max).exp() / sum;
                    }
                }
                Tensor {
                    shape: t.shape,
                    data,
                }
            }
        };
    }
    t
}

fn map(t: Tensor, f: impl Fn(f64) -> f64) -> Tensor {
    Tensor {
        data: t.data.into_iter().map(f).collect(),
        shape: t.shape,
    }
}

/// Compiles `name` at `frac_bits`, runs it on the fixture input (quantised) and returns the
/// program and the max abs error against onnxruntime.
fn error(name: &str, frac_bits: u32) -> (Program, f64) {
    let program = compile(&model(name), frac_bits).unwrap_or_else(|e| panic!("{name}: {e}"));
    let (x, y) = reference(name);
    assert_eq!(program.input.shape, x.shape, "{name}: input shape");
    assert_eq!(program.output.shape, y.shape, "{name}: output shape");
    assert_eq!(
        (program.input.name.as_str(), program.output.name.as_str()),
        ("x", "y")
    );
    let s = (2f64).powi(frac_bits as i32);
    let xq: Vec<f64> = x.data.iter().map(|v| (v * s).round() / s).collect();
    let out = eval_f64(&program, &xq);
    assert_eq!(out.shape, y.shape, "{name}: evaluated shape");
    let err = out
        .data
        .iter()
        .zip(&y.data)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    eprintln!("{name} at f = {frac_bits}: max abs error {err:.2e}");
    (program, err)
}

/// Holds `name` to the bound at `f` = 20, 8 and 12; returns the program at 12.
fn check(name: &str) -> Program {
    let mut at12 = None;
    for f in [20, 8, 12] {
        let (program, err) = error(name, f);
        let bound = (2f64).powi(5 - f as i32) + 1e-5;
        assert!(err < bound, "{name} at f = {f}: error {err} over {bound}");
        at12 = Some(program);
    }
    at12.unwrap()
}

fn ops(p: &Program) -> Vec<&'static str> {
    p.layers
        .iter()
        .map(|l| match l {
            Layer::Dense { .. } => "Dense",
            Layer::Conv2d { .. } => "Conv2d",
            Layer::Relu => "Relu",
            Layer::MaxPool { .. } => "MaxPool",
            Layer::AveragePool { .. } => "AveragePool",
            Layer::Reshape { .. } => "Reshape",
            Layer::Transpose { .. } => "Transpose",
            Layer::AddConst { .. } => "AddConst",
            Layer::MulConst { .. } => "MulConst",
            Layer::Tanh => "Tanh",
            Layer::Sigmoid => "Sigmoid",
            Layer::Exp => "Exp",
            Layer::Softmax { .. } => "Softmax",
        })
        .collect()
}

#[test]
fn mlp_relu_matches_onnxruntime() {
    let p = check("mlp_relu");
    assert_eq!(ops(&p), ["Dense", "Relu", "Dense"]);
    let Layer::Dense {
        inputs: 784,
        outputs: 32,
        weights,
        bias,
    } = &p.layers[0]
    else {
        panic!("{:?}", p.layers[0]);
    };
    assert_eq!((weights.len(), bias.len()), (784 * 32, 32));
}

#[test]
fn mlp_tanh_softmax_matches_onnxruntime() {
    let p = check("mlp_tanh_softmax");
    assert_eq!(ops(&p), ["Dense", "Tanh", "Dense", "Softmax"]);
    assert_eq!(p.layers[3], Layer::Softmax { axis: 1 });
}

#[test]
fn cnn_folds_batch_norm_into_the_conv() {
    let p = check("cnn");
    assert_eq!(ops(&p), ["Conv2d", "Relu", "MaxPool", "Reshape", "Dense"]);
    assert_eq!(
        p.layers[3],
        Layer::Reshape {
            shape: vec![1, 100]
        }
    );
}

#[test]
fn mlp_matmul_add_takes_the_symbolic_batch_as_one() {
    let p = check("mlp_matmul_add");
    assert_eq!(ops(&p), ["Dense", "Sigmoid", "Dense"]);
    assert_eq!(
        (p.input.shape.as_slice(), p.output.shape.as_slice()),
        (&[1, 8][..], &[1, 4][..])
    );
}

#[test]
fn ops_mix_folds_and_merges() {
    let p = check("ops_mix");
    // Sub, Div stay (before the conv); Mul and Add fold into it; Reshape, Unsqueeze and
    // Squeeze merge into one reshape; Identity goes; the Mul by 0.5 folds into the MatMul.
    assert_eq!(
        ops(&p),
        [
            "AddConst",
            "MulConst",
            "Conv2d",
            "Relu",
            "AveragePool",
            "Transpose",
            "Reshape",
            "Dense",
            "Exp",
            "Softmax"
        ]
    );
    let Layer::Conv2d { strides, pads, .. } = &p.layers[2] else {
        panic!()
    };
    assert_eq!((strides, pads), (&[2, 2], &[0, 0, 1, 1]));
    assert_eq!(p.layers[6], Layer::Reshape { shape: vec![1, 36] });
}

#[test]
fn the_inference_fixtures_match_onnxruntime_too() {
    let mlp = check("onnx/mlp");
    assert_eq!(ops(&mlp), ["Dense", "Relu", "Dense", "Softmax"]);
    let cnn = check("onnx/cnn");
    assert_eq!(
        ops(&cnn),
        ["Conv2d", "Relu", "MaxPool", "Reshape", "Dense", "Softmax"]
    );
}

#[test]
fn a_real_model_gets_every_missing_operator_named() {
    // PaddleOCR's text-direction classifier (see tests/fixtures/onnx/README.md).
    let expected = [
        "Cast",
        "Clip",
        "Concat",
        "GlobalAveragePool",
        "HardSigmoid",
        "Shape",
        "Slice",
    ];
    assert_eq!(
        compile(&model("onnx/ppocr_cls"), 12),
        Err(CompileError::Unsupported {
            operators: expected.map(String::from).to_vec()
        })
    );
    let custom = compile(&model("onnx/unsupported"), 12).unwrap_err();
    assert_eq!(
        custom.to_string(),
        "operators not supported in proofs: com.example.Frobnicate"
    );
}

#[test]
fn unsupported_operators_are_all_listed() {
    assert_eq!(
        compile(&model("unsupported_ops"), 12),
        Err(CompileError::Unsupported {
            operators: vec!["Erf".into(), "LeakyRelu".into()]
        })
    );
}

#[test]
fn grouped_convolution_names_the_attribute() {
    let err = compile(&model("conv_group2"), 12).unwrap_err();
    let CompileError::UnsupportedAttribute { op, attribute, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!((op.as_str(), attribute.as_str()), ("Conv", "group"));
    assert!(
        err.to_string().contains("only group 1 is supported"),
        "{err}"
    );
}

#[test]
fn bytes_that_are_not_onnx_are_a_decode_error() {
    let err = compile(b"definitely not a protobuf \xff\xff\xff\xff", 12).unwrap_err();
    assert!(matches!(err, CompileError::Decode(_)), "{err}");
    let truncated = &model("mlp_relu")[..5000];
    let err = compile(truncated, 12).unwrap_err();
    assert!(matches!(err, CompileError::Decode(_)), "{err}");
}
