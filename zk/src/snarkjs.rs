//! Export to the JSON that `snarkjs groth16 verify vk.json public.json proof.json` reads
//! (curve `bn128`, protocol `groth16`), so anyone can check a proof without this crate.
//!
//! Field elements are decimal strings. G1 points are projective `[x, y, "1"]`, G2 points
//! `[[x.c0, x.c1], [y.c0, y.c1], ["1", "0"]]`; the point at infinity is `["0", "1", "0"]`
//! (G1) or `[["0","0"], ["1","0"], ["0","0"]]` (G2), as snarkjs writes them.

use ark_bn254::{Bn254, Fq, Fq2, Fq6, Fq12, Fr, G1Affine, G2Affine};
use ark_ec::{AffineRepr, pairing::Pairing};
use ark_ff::PrimeField;
use ark_groth16::{Proof, VerifyingKey};
use serde_json::{Value, json};

use crate::circuits::PublicInputs;

fn dec<F: PrimeField>(f: &F) -> String {
    f.into_bigint().to_string()
}

fn fq2(f: &Fq2) -> Value {
    json!([dec(&f.c0), dec(&f.c1)])
}

fn fq6(f: &Fq6) -> Value {
    json!([fq2(&f.c0), fq2(&f.c1), fq2(&f.c2)])
}

fn fq12(f: &Fq12) -> Value {
    json!([fq6(&f.c0), fq6(&f.c1)])
}

fn g1(p: &G1Affine) -> Value {
    match p.xy() {
        Some((x, y)) => json!([dec::<Fq>(&x), dec::<Fq>(&y), "1"]),
        None => json!(["0", "1", "0"]),
    }
}

fn g2(p: &G2Affine) -> Value {
    match p.xy() {
        Some((x, y)) => json!([fq2(&x), fq2(&y), ["1", "0"]]),
        None => json!([["0", "0"], ["1", "0"], ["0", "0"]]),
    }
}

/// `verification_key.json`, including `vk_alphabeta_12` (`e(α, β)`), which snarkjs's own
/// export writes although its verifier does not read it.
pub fn snarkjs_verification_key_json(vk: &VerifyingKey<Bn254>) -> Value {
    let alphabeta = Bn254::pairing(vk.alpha_g1, vk.beta_g2).0;
    json!({
        "protocol": "groth16",
        "curve": "bn128",
        "nPublic": vk.gamma_abc_g1.len().saturating_sub(1),
        "vk_alpha_1": g1(&vk.alpha_g1),
        "vk_beta_2": g2(&vk.beta_g2),
        "vk_gamma_2": g2(&vk.gamma_g2),
        "vk_delta_2": g2(&vk.delta_g2),
        "vk_alphabeta_12": fq12(&alphabeta),
        "IC": vk.gamma_abc_g1.iter().map(g1).collect::<Vec<_>>(),
    })
}

/// `proof.json`.
pub fn snarkjs_proof_json(proof: &Proof<Bn254>) -> Value {
    json!({
        "pi_a": g1(&proof.a),
        "pi_b": g2(&proof.b),
        "pi_c": g1(&proof.c),
        "protocol": "groth16",
        "curve": "bn128",
    })
}

/// `public.json`: the three public inputs as decimal strings, in circuit order.
pub fn snarkjs_public_json(public: &PublicInputs) -> Value {
    snarkjs_public_inputs_json(&public.to_vec())
}

/// `public.json` for any number of public inputs (a program's circuit, [`crate::nn`]), as
/// decimal strings in circuit order.
pub fn snarkjs_public_inputs_json(inputs: &[Fr]) -> Value {
    Value::Array(
        public_inputs_decimal(inputs)
            .into_iter()
            .map(Value::String)
            .collect(),
    )
}

/// Field elements as canonical decimal strings, as snarkjs and the API write them.
pub fn public_inputs_decimal(inputs: &[Fr]) -> Vec<String> {
    inputs.iter().map(dec).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_strings() {
        assert_eq!(dec(&Fr::from(1234u64)), "1234");
        assert_eq!(
            dec(&-Fr::from(1u64)),
            "21888242871839275222246405745257275088548364400416034343698204186575808495616"
        );
    }
}
