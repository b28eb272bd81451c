//! Groth16 (BN254) proofs that a node computed a task's result, verified by the coordinator.
//!
//! A task that asks for a proof names a registered circuit ([`CircuitId`]). The node computes
//! the result, proves it with the circuit's proving key ([`prove`]), and the coordinator
//! checks the proof ([`verify`]) against public inputs it recomputes itself from the task id,
//! the task's inputs and the claimed output ([`public_inputs_for`]). Proofs also export as
//! snarkjs JSON ([`snarkjs`]) so anyone can check them independently.
//!
//! Every registered circuit has exactly three public inputs, `[task_binding, input_commitment,
//! output_commitment]`:
//!
//! * `task_binding = SHA-256(task id bytes) mod r` ([`mimc::task_binding`]);
//! * `input_commitment = H(inputs)` and `output_commitment = H(outputs)` with the MiMC-7
//!   hash of [`mimc`], computed *inside* the circuit from the private witness, so the proof
//!   binds the inputs and the output, not just some numbers.
//!
//! Circuits:
//!
//! | Circuit | Statement | Constraints |
//! |---|---|---|
//! | `hash_chain` (size `n` from 1 to 4096, default 256) | `y = h^n(x)`, `h(v) = MiMC7_0(v) + v` | `364·(n+2) + 1` (93 913 at n = 256) |
//! | `dot` (size `L` from 1 to 2048, default 16) | `s = Σ a_i·b_i` over `i64` fixed-point values | `364·(2L+1) + L + 1` |
//!
//! Every size is its own instance ([`CircuitSpec`]) with its own keys; [`CircuitId::size_range`]
//! says why the ranges stop where they do. Costs grow linearly with the constraints: about
//! 21 000 constraints/s of setup and 30 000 of proving on two cores, and 205 bytes of compressed
//! proving key per constraint (75 MB at `hash_chain` n = 1000); verifying is 1.2 ms at any size
//! (BENCHMARKS.md, "zk_proof at any size", from `examples/sizes.rs`).
//!
//! # Layout
//! - [`error`]: the error type, [`ZkError`].
//! - [`mimc`]: MiMC-7 round constants, permutation, hash chain, commitment hash, task binding
//!   (native).
//! - [`circuits`]: the registry ([`CircuitId`], [`CircuitSpec`]), [`Inputs`], [`Output`],
//!   [`PublicInputs`] and the constraint systems.
//! - [`keys`]: [`setup`], [`Keys`], [`PreparedVerifier`], key and proof (de)serialisation,
//!   and [`verifying_key_from_proving_key`], the cheap read of a proving key's verifying key.
//! - [`proving`]: [`prove`], [`verify`], [`public_inputs_for`].
//! - [`snarkjs`]: snarkjs JSON export of verifying keys, proofs and public inputs.
//! - [`nn`]: provable inference: fixed-point neural networks ([`nn::Program`]) as circuits
//!   of their own, with their own keys ([`nn::setup`], [`nn::prove`], [`nn::verify`]) and
//!   public inputs `[task_binding, model_commitment, packed input…, packed output…]`.
//!   With the `onnx` feature, [`nn::onnx::compile`] makes programs from ONNX models.
//!
//! # Features
//! - `onnx` (off by default): the ONNX front end, `nn::onnx` (it links tract-onnx's protobuf
//!   decoder). The coordinator needs it to compile models; a prover needs only [`nn`].
//!
//! # What a single-party setup trusts
//! Groth16 needs a per-circuit trusted setup. [`setup_with_os_rng`] runs it once on the
//! coordinator from operating-system randomness and drops that randomness (the "toxic
//! waste") when it returns; no seed is fixed or stored anywhere outside tests. This is
//! sound against nodes, but **whoever runs the setup could forge proofs** had they kept the
//! randomness, so users must trust the coordinator's operator. Removing that trust takes a
//! multi-party ceremony (e.g. a snarkjs phase-2 ceremony on top of a public powers-of-tau,
//! its `.zkey` converted to arkworks keys): [`Keys::from_bytes`] / [`Keys::load`] and
//! [`load_verifying_key`] accept keys made elsewhere and check their shape against the
//! circuit. The MiMC round constants are derived from a public string and hide nothing.
//!
//! Proving takes seconds of CPU: run it on a blocking thread.

pub mod circuits;
pub mod error;
pub mod keys;
pub mod mimc;
pub mod nn;
pub mod proving;
pub mod snarkjs;
pub mod task;

pub use ark_bn254::{Bn254, Fr};
pub use ark_groth16::{Proof, ProvingKey, VerifyingKey};

pub use circuits::{
    CircuitId, CircuitSpec, Inputs, Output, PublicInputs, Shape, compute_output, shape,
};
pub use error::ZkError;
pub use keys::{
    Keys, NUM_PUBLIC_INPUTS, PreparedVerifier, load_verifying_key, proof_from_bytes,
    proof_to_bytes, proving_key_from_bytes, proving_key_to_bytes, save_verifying_key, setup,
    setup_with_os_rng, verifying_key_from_bytes, verifying_key_from_proving_key,
    verifying_key_to_bytes,
};
pub use proving::{prove, public_inputs_for, verify, witness_circuit};
pub use snarkjs::{
    public_inputs_decimal, snarkjs_proof_json, snarkjs_public_inputs_json, snarkjs_public_json,
    snarkjs_verification_key_json,
};
pub use task::{parse_field, parse_task_inputs};
