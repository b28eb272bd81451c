//! The ONNX front end (`nn::onnx`, feature `onnx`) on the models of `tests/fixtures/zk/`
//! (made by `scripts/make-zk-models.py`): each compiled program, run by the `f64` reference
//! ([`nn::evaluate_f64`], quantised parameters dequantised), matches onnxruntime's output on
//! the fixture's (quantised) input to within the quantisation error; the models no proof
//! covers are refused with the error that names why.
//!
//! The bound is `2^(5−f) + 1e-5` (0.125 at `f = 8`, 0.0078 at `f = 12`, 4e-5 at `f = 20`):
//! weights, biases and the input are each within `2^-(f+1)` of the real ones, and what that
//! becomes at the output grows with fan-in, magnitudes and the layers after it (the CNN, whose
//! batch norm scales its convolution up to 3.4×, is the worst, at a quarter of the bound); the
//! `1e-5` is onnxruntime's own float32 rounding. At `f = 20` every model is within 1e-5, so the
//! lowering itself (folding included) is exact and only quantisation is left. The integer
//! evaluator ([`nn::evaluate`]) adds one `2^-(f+1)` per rescale; it is held to
//! [`nn::error_bound`] from the reference wherever that bound exists.

use std::path::PathBuf;

use ambient_zk::nn::onnx::{CompileError, compile};
use ambient_zk::nn::{self, Layer, Program};
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

/// A fixture tensor: its shape and its values, row-major.
struct Tensor {
    shape: Vec<usize>,
    data: Vec<f64>,
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
    let xq: Vec<i64> = x.data.iter().map(|&v| nn::quantise(v, frac_bits)).collect();
    let real: Vec<f64> = xq.iter().map(|&q| nn::dequantise(q, frac_bits)).collect();
    let out = nn::evaluate_f64(&program, &real).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(out.len(), y.data.len(), "{name}: evaluated length");
    let err = max_distance(&out, &y.data);
    eprintln!("{name} at f = {frac_bits}: max abs error {err:.2e}");
    // The integer evaluator (what the circuit proves) stays within its a priori bound of the
    // `f64` one, where there is such a bound (not past an `Exp`).
    if let Some(bound) = nn::error_bound(&program).unwrap() {
        let int = nn::evaluate(&program, &xq).unwrap_or_else(|e| panic!("{name}: {e}"));
        let int: Vec<f64> = int.iter().map(|&q| nn::dequantise(q, frac_bits)).collect();
        let d = max_distance(&int, &out);
        assert!(
            d <= bound,
            "{name} at f = {frac_bits}: integer evaluation {d} off, over {bound}"
        );
    }
    (program, err)
}

fn max_distance(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max)
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
