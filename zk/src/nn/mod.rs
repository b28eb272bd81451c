//! Provable inference: fixed-point neural networks ([`Program`]) as Groth16 circuits.
//!
//! A node runs a program on an input ([`evaluate`]) and proves that the output is what the
//! program gives ([`prove`]); the coordinator checks the proof ([`verify`]) against public
//! inputs it recomputes from the task id, the program, the input and the claimed output
//! ([`public_inputs`]). Each program is its own circuit with its own keys ([`setup`],
//! [`ProgramKeys`]); its weights are constants of the circuit, so a coordinator caches keys
//! by [`Program::digest`].
//!
//! # Numbers
//! * Every value is an integer `q` standing for `q / 2^f`, `f = frac_bits` in `1..=20`
//!   ([`DEFAULT_FRAC_BITS`] `= 12` is the suggestion: resolution `2.4e-4`, range `±2^19`).
//!   [`quantise`] rounds to nearest; [`dequantise`] is exact.
//! * Every activation (the input, the output, and every element between layers) is a
//!   32-bit signed integer ([`ACT_BITS`]). [`evaluate`] returns [`crate::ZkError::Overflow`]
//!   for anything outside, and the circuit is then unsatisfiable: there is no silent wrap.
//! * Products are exact (`i128` natively; far below the field's 254 bits in the circuit,
//!   which [`MAX_MACS`] guarantees), then rescaled.
//! * One rounding rule everywhere: `⌊(a + ⌊d/2⌋) / d⌋` ([`div_round`], to nearest, ties
//!   toward `+∞`): the rescale after `Dense`, `Conv2d` and `MulConst` (`d = 2^f`),
//!   `AveragePool` (`d` = the cell count), softmax's normalisation and the smooth tables.
//!
//! # Constraints per layer (`B = 32`, `f = frac_bits`, per output element)
//! | Layer | Gadget | Constraints |
//! |---|---|---|
//! | input | range check (bits of `x + 2^31`) | `B + 1`, plus 1 per 7 elements (packing) |
//! | `Dense`, `Conv2d`, `MulConst` | products by constant weights are linear; rescale: one decomposition of `acc + 2^(f−1) + 2^(B−1+f)` into remainder and quotient bits | `B + f + 2` (46 at f = 12), none per weight |
//! | `Relu` | `s·x` with `s` the sign bit of `x`'s decomposition | 1 after a rescale, else `B + 2` |
//! | `MaxPool` | pairwise `b + s·(a − b)`, `s` the sign of a range-checked `a − b` | `B + 3` per comparison (`k − 1` per window of `k` cells) |
//! | `AveragePool` | division by the cell count `d` with range-checked remainder | `B + log2 d + 2` for `d` a power of two, else `B + 2⌈log2 d⌉ + 3` |
//! | `Reshape`, `Transpose` | rewiring | 0 |
//! | `AddConst` | range check of `x + c` | `B + 1` |
//! | `Tanh`, `Sigmoid`, `Exp` | piecewise cubic ([`activation`]): decomposition of the clamped input, one-hot of 5 segment bits (30), Horner (3), gating (1), rescale of the exact polynomial | 124, 127, 143 at f = 12 |
//! | `Softmax` over `n` | max by `n − 1` comparisons, `exp(x − max)` by table, sum, division `y·2S + r = 2^(f+1)·e + S` with `0 ≤ r < 2S` range-checked | `(n−1)(B+3)` per slice plus `124 + B + 2(⌈log2(n+1)⌉ + f + 2) + 3` per element (191 at n = 3, f = 12) |
//! | output | packing (bits reused after a rescale) | 1 per 7 elements, plus `B + 1` each if not decomposed |
//!
//! [`Program::constraints`] gives the exact total (the tests check it against synthesis);
//! [`Program::check`] refuses more than [`MAX_CONSTRAINTS`].
//!
//! # Smooth functions
//! Groth16 has no lookups, so `tanh`, the logistic function and `exp` are piecewise cubics
//! on a clamped domain, 32 segments picked by the high bits of the input's own range
//! decomposition, coefficients chosen by one-hot linear combinations, evaluated exactly over
//! the integers and rounded once ([`activation`] has the construction and why it is the
//! same on every machine). Max abs error against the real function over the whole input
//! range (`ε = 2^-f`, one unit; the tests hold each bound at f = 8, 12 and 16):
//!
//! | Function | Domain (clamped outside) | Bound ([`activation::Smooth::error_bound`]) | Measured, f = 8 / 12 / 16 |
//! |---|---|---|---|
//! | `Tanh` | `[−8, 8)`, ±1 outside | `1e-4 + 0.57ε` | 2.0e-3 / 1.9e-4 / 7.9e-5 |
//! | `Sigmoid` | `[−16, 16)`, 0 / 1 outside | `4e-5 + 0.57ε` | 2.0e-3 / 1.6e-4 / 4.4e-5 |
//! | `Exp` | `[−16, 16)`, 0 below, overflow above | relative `3.5e-4 + 0.57ε` | 2.1e-3 at f = 8 |
//! | softmax's `exp(x − max)` | `[−16, 0]` | `3e-5 + 0.57ε` | 2.0e-3 / 1.4e-4 / 2.4e-5 |
//!
//! Softmax's result is within `(n + 1)·δ + ε/2` of the real softmax of its (fixed-point)
//! input, `δ` the exp table's bound. End to end, [`error_bound`] propagates the layers'
//! bounds through the weights (`ε/2` per rescale, times `max_o Σ|w_o|` per following
//! `Dense`/`Conv2d`, plus each smooth function's bound): an a priori bound on the distance
//! between [`evaluate`] and the `f64` reference with the same weights ([`evaluate_f64`]),
//! which the tests check. For the three test networks at f = 12 (784-32-10 Relu MLP,
//! 12×12 CNN, 8-16-3 tanh/softmax MLP) it is 5.0e-4, 7.7e-4 and 2.6e-3; the measured errors
//! are 1.2e-4 to 1.6e-4. Quantising the weights themselves adds `ε/2` per weight times the
//! input's magnitude, which is the model's own concern (and not in the bound).
//!
//! # Public inputs
//! `[task_binding, model_commitment, packed input…, packed output…]`:
//! * `task_binding = SHA-256(task id) mod r` ([`crate::mimc::task_binding`]), constrained
//!   by `tb·tb = tb²` as in the other circuits;
//! * `model_commitment =` [`Program::commitment`] (SHA-256 of
//!   [`Program::canonical_bytes`] mod r), constrained to equal the circuit's own constant, so
//!   a proof cannot claim another model;
//! * input and output activations, 7 per field element ([`PACK`]): element `k` is
//!   `Σ_j (q[7k + j] + 2^31)·2^(32 j)`, equated to the elements' range-check bits, so the
//!   packing is injective and every public input is constrained.
//!
//! A 784-value input is 112 field elements; verification stays a few milliseconds because
//! the public inputs are combined with one multi-scalar multiplication
//! ([`crate::PreparedVerifier::verify_inputs`]).
//!
//! # Figures
//! `cargo run --release -p ambient-zk --features onnx --example nn_bench` on the ONNX models of
//! `tests/fixtures/zk/` (made by the `onnx` package with random weights), 2 cores, f = 12;
//! `scripts/bench-zk-inference` runs it beside ezkl on the same models (BENCHMARKS.md,
//! "Provable inference beside ezkl"):
//!
//! | Network | Constraints | Public inputs | Setup | Prove | Verify | Proving key | Proof |
//! |---|---|---|---|---|---|---|---|
//! | MLP 784-32-10, Relu | 27 952 | 116 | 1.0 s | 188 ms | 2.5 ms | 5.5 MB | 128 B |
//! | CNN 1×1×12×12, conv 3×3×4, BatchNormalization, Relu, max-pool 2×2, dense 10 | 34 537 | 25 | 1.3 s | 341 ms | 1.7 ms | 7.5 MB | 128 B |
//! | MLP 8-16-3, Tanh, Softmax | 3 770 | 5 | 0.16 s | 40 ms | 1.4 ms | 0.7 MB | 128 B |
//!
//! The 784 range-checked inputs are 92% of the first network's constraints.
//!
//! # Layout
//! - `program`: [`Program`], [`TensorSpec`], [`Layer`].
//! - `shape`: [`Program::check`], [`Program::layer_shapes`], [`Program::constraints`],
//!   the caps.
//! - `commit`: [`Program::canonical_bytes`], [`Program::digest`], [`Program::commitment`].
//! - `fixed`: bit widths, [`quantise`], [`dequantise`], [`div_round`], packing.
//! - [`activation`]: the piecewise-cubic tables.
//! - `eval`: [`evaluate`].
//! - [`mod@reference`]: [`evaluate_f64`], the real-number meaning, for measuring error.
//! - `circuit`: the gadgets and the constraint system.
//! - `prove`: [`setup`], [`ProgramKeys`], [`prove`], [`verify`], [`ProgramVerifier`],
//!   [`public_inputs`],
//!   [`shape`], [`is_satisfied`].

pub mod activation;
mod circuit;
mod commit;
mod eval;
mod fixed;
#[cfg(feature = "onnx")]
pub mod onnx;
mod program;
mod prove;
pub mod reference;
mod shape;
#[cfg(test)]
mod tests;

pub use commit::SERIALISATION_TAG;
pub use eval::{evaluate, quantise_input};
pub use fixed::{
    ACT_BITS, ACT_MAX, ACT_MIN, DEFAULT_FRAC_BITS, MAX_FRAC_BITS, MIN_FRAC_BITS, PACK, dequantise,
    div_round, packed_len, quantise,
};
pub use program::{Layer, Program, TensorSpec};
pub use prove::{
    ProgramKeys, ProgramVerifier, is_satisfied, num_public_inputs, prove, public_inputs, setup,
    setup_with_os_rng, shape, verify, witness_circuit,
};
pub use reference::{error_bound, evaluate_f64};
pub use shape::{MAX_CONSTRAINTS, MAX_ELEMENTS, MAX_LAYERS, MAX_MACS, MAX_RANK, op_name};
