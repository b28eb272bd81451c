//! Provable inference end to end: three networks built in Rust with random weights (an MLP
//! on 784 inputs, a small CNN, a tanh/softmax MLP), each evaluated, compared with the `f64`
//! reference, proved, verified, and tampered with; plus a snarkjs round trip.

use std::path::Path;

use ambient_zk::nn::{self, Layer, Program, TensorSpec};
use ambient_zk::*;

use crate::snarkjs_cli::{snarkjs, snarkjs_verify};

const F: u32 = nn::DEFAULT_FRAC_BITS;

/// splitmix64: deterministic test data without a dependency.
pub struct Rng(pub u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn real(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// `n` values uniform in `±scale`, quantised at `f`.
    pub fn q(&mut self, n: usize, scale: f64, f: u32) -> Vec<i64> {
        (0..n)
            .map(|_| nn::quantise(self.real(-scale, scale), f))
            .collect()
    }
}

fn dense(rng: &mut Rng, inputs: usize, outputs: usize) -> Layer {
    let s = 1.0 / (inputs as f64).sqrt();
    Layer::Dense {
        inputs,
        outputs,
        weights: rng.q(inputs * outputs, s, F),
        bias: rng.q(outputs, 0.1, 2 * F),
    }
}

fn program(input: &[usize], output: &[usize], layers: Vec<Layer>) -> Program {
    Program {
        frac_bits: F,
        input: TensorSpec {
            name: "input".into(),
            shape: input.to_vec(),
        },
        output: TensorSpec {
            name: "output".into(),
            shape: output.to_vec(),
        },
        layers,
    }
}

/// (a) MLP 784 → 32 → 10 with Relu.
pub fn mlp(seed: u64) -> Program {
    let mut rng = Rng(seed);
    program(
        &[1, 784],
        &[1, 10],
        vec![
            dense(&mut rng, 784, 32),
            Layer::Relu,
            dense(&mut rng, 32, 10),
        ],
    )
}

/// (b) CNN on 1×1×12×12: Conv 3×3 to 4 channels, Relu, MaxPool 2×2, flatten, Dense → 10.
pub fn cnn(seed: u64) -> Program {
    let mut rng = Rng(seed);
    program(
        &[1, 1, 12, 12],
        &[1, 10],
        vec![
            Layer::Conv2d {
                out_channels: 4,
                in_channels: 1,
                kernel: [3, 3],
                strides: [1, 1],
                pads: [0; 4],
                weights: rng.q(36, 1.0 / 3.0, F),
                bias: rng.q(4, 0.1, 2 * F),
            },
            Layer::Relu,
            Layer::MaxPool {
                kernel: [2, 2],
                strides: [2, 2],
                pads: [0; 4],
            },
            Layer::Reshape {
                shape: vec![1, 100],
            },
            dense(&mut rng, 100, 10),
        ],
    )
}

/// (c) MLP 8 → 16 → 3 with Tanh and Softmax.
pub fn tanh_softmax(seed: u64) -> Program {
    let mut rng = Rng(seed);
    program(
        &[1, 8],
        &[1, 3],
        vec![
            dense(&mut rng, 8, 16),
            Layer::Tanh,
            dense(&mut rng, 16, 3),
            Layer::Softmax { axis: 1 },
        ],
    )
}

/// An input for `p`: values uniform in `[0, 1)` (pixels) or `±2`.
pub fn input_for(p: &Program, seed: u64) -> Vec<i64> {
    let n: usize = p.input.shape.iter().product();
    let mut rng = Rng(seed);
    if n > 100 {
        (0..n)
            .map(|_| nn::quantise(rng.real(0.0, 1.0), F))
            .collect()
    } else {
        rng.q(n, 2.0, F)
    }
}

/// Max abs error of the dequantised output against the `f64` reference.
pub fn max_error(p: &Program, input: &[i64], output: &[i64]) -> f64 {
    let real: Vec<f64> = input.iter().map(|&q| nn::dequantise(q, F)).collect();
    let reference = nn::evaluate_f64(p, &real).unwrap();
    output
        .iter()
        .zip(&reference)
        .map(|(&q, r)| (nn::dequantise(q, F) - r).abs())
        .fold(0.0, f64::max)
}

fn end_to_end(p: &Program, other: &Program) {
    let input = input_for(p, 7);
    let output = nn::evaluate(p, &input).unwrap();
    assert_eq!(nn::shape(p).unwrap().constraints, p.constraints().unwrap());
    assert!(nn::is_satisfied(p, crate::TASK, &input, None).unwrap());

    let err = max_error(p, &input, &output);
    let bound = nn::error_bound(p).unwrap().unwrap();
    eprintln!(
        "{} constraints, error {err:.2e} (bound {bound:.2e})",
        p.constraints().unwrap()
    );
    assert!(err <= bound, "error {err} above the bound {bound}");

    let keys = nn::setup_with_os_rng(p).unwrap();
    let (proved_output, proof) = nn::prove(p, &keys.proving_key, crate::TASK, &input).unwrap();
    assert_eq!(proved_output, output);
    let vk = &keys.verifying_key;
    assert!(nn::verify(vk, p, crate::TASK, &input, &output, &proof).unwrap());
    assert_eq!(proof_to_bytes(&proof).unwrap().len(), 128);

    // Every tampering is Ok(false).
    let mut tampered = output.clone();
    tampered[0] += 1;
    assert!(!nn::verify(vk, p, crate::TASK, &input, &tampered, &proof).unwrap());
    let mut tampered = input.clone();
    *tampered.last_mut().unwrap() -= 1;
    assert!(!nn::verify(vk, p, crate::TASK, &tampered, &output, &proof).unwrap());
    assert!(!nn::verify(vk, p, crate::OTHER_TASK, &input, &output, &proof).unwrap());
    // Another model of the same shape: its commitment differs, so the proof fails.
    assert_ne!(p.commitment(), other.commitment());
    assert!(!nn::verify(vk, other, crate::TASK, &input, &output, &proof).unwrap());
    // Shapes that do not fit are typed errors.
    assert!(matches!(
        nn::verify(vk, p, crate::TASK, &input, &output[1..], &proof),
        Err(ZkError::BadInput { .. })
    ));
}

#[test]
fn mlp_784_32_10_proves_and_verifies() {
    end_to_end(&mlp(1), &mlp(2));
}

#[test]
fn cnn_12x12_proves_and_verifies() {
    end_to_end(&cnn(1), &cnn(2));
}

#[test]
fn tanh_softmax_mlp_proves_and_verifies() {
    let p = tanh_softmax(1);
    let other = tanh_softmax(2);
    end_to_end(&p, &other);

    // Softmax sums to one, to within rounding.
    let input = input_for(&p, 3);
    let out = nn::evaluate(&p, &input).unwrap();
    let sum: i64 = out.iter().sum();
    assert!((sum - (1 << F)).abs() <= 2, "{out:?}");

    // Keys of another program with the same public-input count: proofs do not cross.
    let keys = nn::setup_with_os_rng(&p).unwrap();
    let other_keys = nn::setup_with_os_rng(&other).unwrap();
    let (output, proof) = nn::prove(&p, &keys.proving_key, crate::TASK, &input).unwrap();
    assert!(
        !nn::verify(
            &other_keys.verifying_key,
            &p,
            crate::TASK,
            &input,
            &output,
            &proof
        )
        .unwrap()
    );
    assert!(matches!(
        nn::prove(&p, &other_keys.proving_key, crate::TASK, &input),
        Err(ZkError::SelfCheckFailed)
    ));
    // A key with another public-input count is a typed error.
    let mlp_keys_vk = {
        let small = program(&[1, 20], &[1, 1], vec![dense(&mut Rng(9), 20, 1)]);
        nn::setup_with_os_rng(&small).unwrap().verifying_key
    };
    assert!(matches!(
        nn::verify(&mlp_keys_vk, &p, crate::TASK, &input, &output, &proof),
        Err(ZkError::KeyMismatch { .. })
    ));

    // Keys round-trip through bytes and files, checked against the program.
    let bytes = keys.to_bytes().unwrap();
    let back = nn::ProgramKeys::from_bytes(&p, &bytes).unwrap();
    assert!(
        nn::verify(
            &back.verifying_key,
            &p,
            crate::TASK,
            &input,
            &output,
            &proof
        )
        .unwrap()
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.bin");
    keys.save(&path).unwrap();
    nn::ProgramKeys::load(&p, &path).unwrap();
    assert!(matches!(
        nn::ProgramKeys::from_bytes(&tanh_softmax_wider(), &bytes),
        Err(ZkError::KeyMismatch { .. })
    ));
    let pv = PreparedVerifier::any(&keys.verifying_key);
    let public = nn::public_inputs(&p, crate::TASK, &input, &output).unwrap();
    assert_eq!(public.len(), nn::num_public_inputs(&p));
    assert!(pv.verify_inputs(&public, &proof).unwrap());
}

/// The tanh/softmax MLP with 24 hidden units: same public inputs, another circuit.
fn tanh_softmax_wider() -> Program {
    let mut rng = Rng(5);
    program(
        &[1, 8],
        &[1, 3],
        vec![
            dense(&mut rng, 8, 24),
            Layer::Tanh,
            dense(&mut rng, 24, 3),
            Layer::Softmax { axis: 1 },
        ],
    )
}

#[test]
fn snarkjs_accepts_nn_proofs_and_rejects_tampered_inputs() {
    let Some(bin) = snarkjs() else {
        return;
    };
    let p = tanh_softmax(11);
    let input = input_for(&p, 12);
    let keys = nn::setup_with_os_rng(&p).unwrap();
    let (output, proof) = nn::prove(&p, &keys.proving_key, crate::TASK, &input).unwrap();
    let public = nn::public_inputs(&p, crate::TASK, &input, &output).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let vk_json = snarkjs_verification_key_json(&keys.verifying_key);
    assert_eq!(vk_json["nPublic"], public.len());
    write(dir.path(), "vk.json", &vk_json);
    write(dir.path(), "proof.json", &snarkjs_proof_json(&proof));
    assert!(
        snarkjs_verify(&bin, dir.path(), &snarkjs_public_inputs_json(&public)),
        "snarkjs rejected a valid nn proof"
    );
    for i in 0..public.len() {
        let mut tampered = public.clone();
        tampered[i] += Fr::from(1u64);
        assert!(
            !snarkjs_verify(&bin, dir.path(), &snarkjs_public_inputs_json(&tampered)),
            "snarkjs accepted tampered public input {i}"
        );
    }
}

fn write(dir: &Path, name: &str, json: &serde_json::Value) {
    std::fs::write(dir.join(name), json.to_string()).unwrap();
}
