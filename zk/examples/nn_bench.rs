//! Provable inference figures on the ONNX models of `tests/fixtures/zk/` (made by the `onnx`
//! package with random weights, `scripts/make-zk-models.py`), the same models
//! `scripts/bench-ezkl` proves with ezkl: constraints, setup, proving and verifying times, key
//! and proof sizes, and the output's largest error against onnxruntime's (the fixture's
//! reference output) and against the `f64` reference with the same quantised weights and
//! input, beside the documented bound of the latter (`nn::error_bound`).
//!
//! `cargo run --release -p ambient-zk --features onnx --example nn_bench [-- NAME…]`
//! (default: `mlp_relu cnn mlp_tanh_softmax`). The last line is one JSON object.

use std::time::{Duration, Instant};

use ambient_zk::nn::{self, Program};
use ambient_zk::proof_to_bytes;
use serde_json::{Value, json};

const TASK: &[u8] = b"0123456789abcdef";
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/zk");

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The data of the fixture's one input and one output tensor.
fn tensors(reference: &Value) -> (Vec<f64>, Vec<f64>) {
    let data = |side: &str| -> Vec<f64> {
        let tensors = reference[side].as_object().expect("tensors");
        let (_, t) = tensors.iter().next().expect("one tensor");
        t["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|v| v.as_f64().expect("a number"))
            .collect()
    };
    (data("inputs"), data("outputs"))
}

fn bench(name: &str) -> Result<Value, Box<dyn std::error::Error>> {
    let model = std::fs::read(format!("{FIXTURES}/{name}.onnx"))?;
    let reference: Value =
        serde_json::from_slice(&std::fs::read(format!("{FIXTURES}/{name}.json"))?)?;
    let (input, expected) = tensors(&reference);
    let t = Instant::now();
    let p: Program = nn::onnx::compile(&model, nn::DEFAULT_FRAC_BITS)?;
    let compile = t.elapsed();
    let f = p.frac_bits;
    let input: Vec<i64> = input.iter().map(|&x| nn::quantise(x, f)).collect();
    let t = Instant::now();
    let keys = nn::setup_with_os_rng(&p)?;
    let setup = t.elapsed();
    let pk_bytes = keys.to_bytes()?.len();
    let mut proves = Vec::new();
    let mut result = None;
    for _ in 0..3 {
        let t = Instant::now();
        result = Some(nn::prove(&p, &keys.proving_key, TASK, &input)?);
        proves.push(t.elapsed());
    }
    let (output, proof) = result.expect("proved");
    let verifier = nn::ProgramVerifier::new(&keys.verifying_key, &p)?;
    let mut verifies = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        // What a coordinator does per result: recompute the public inputs, verify.
        assert!(verifier.verify(TASK, &input, &output, &proof)?);
        verifies.push(t.elapsed());
    }
    let (prove, verify) = (median(proves), median(verifies));
    let distance = |to: &[f64]| {
        output
            .iter()
            .zip(to)
            .map(|(&q, r)| (nn::dequantise(q, f) - r).abs())
            .fold(0.0, f64::max)
    };
    // Against onnxruntime: the weights' and the input's quantisation included. Against the
    // f64 reference with the same (quantised) weights and input: what the circuit's own
    // arithmetic adds, which `nn::error_bound` bounds.
    let err = distance(&expected);
    let real: Vec<f64> = input.iter().map(|&q| nn::dequantise(q, f)).collect();
    let err_reference = distance(&nn::evaluate_f64(&p, &real)?);
    let bound = nn::error_bound(&p)?;
    let figures = json!({
        "constraints": p.constraints()?,
        "public_inputs": nn::num_public_inputs(&p),
        "compile_ms": compile.as_secs_f64() * 1e3,
        "setup_s": setup.as_secs_f64(),
        "prove_s": prove.as_secs_f64(),
        "verify_ms": verify.as_secs_f64() * 1e3,
        "proving_key_bytes": pk_bytes,
        "proof_bytes": proof_to_bytes(&proof)?.len(),
        "max_abs_error_vs_onnxruntime": err,
        "max_abs_error_vs_f64_reference": err_reference,
        "error_bound": bound,
    });
    println!(
        "| {name} | {} | {} | {:.2} s | {:.0} ms | {:.2} ms | {:.1} MB | {} B | {err:.2e} | {err_reference:.2e} ({}) |",
        figures["constraints"],
        figures["public_inputs"],
        setup.as_secs_f64(),
        prove.as_secs_f64() * 1e3,
        verify.as_secs_f64() * 1e3,
        pk_bytes as f64 / 1e6,
        figures["proof_bytes"],
        bound.map_or("none".into(), |b| format!("{b:.2e}")),
    );
    Ok(figures)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut names: Vec<String> = std::env::args().skip(1).collect();
    if names.is_empty() {
        names = ["mlp_relu", "cnn", "mlp_tanh_softmax"]
            .map(String::from)
            .to_vec();
    }
    println!(
        "| model | constraints | public inputs | setup | prove (median of 3) | verify (median of 20) | proving key | proof | max abs error vs onnxruntime | vs f64 with the same weights (bound) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut all = serde_json::Map::new();
    for name in &names {
        all.insert(name.clone(), bench(name)?);
    }
    println!("{}", Value::Object(all));
    Ok(())
}
