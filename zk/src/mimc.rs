//! MiMC-7 over BN254's scalar field, natively (this module) and as constraints
//! ([`crate::circuits`]); the two must agree bit for bit, which the tests check.
//!
//! * **Permutation** `E_k(x)`: 91 rounds of `t ↦ (t + k + c_i)^7`, then `+ k` (MiMC-p/p, as in
//!   circomlib's `MiMC7`). `x ↦ x^7` is a permutation of `F_r` because `gcd(7, r − 1) = 1`, and
//!   91 = ⌈log₇ r⌉ rounds is the standard count for a 254-bit field.
//! * **Round constants** `c_i = SHA-256(ROUND_CONSTANT_SEED ‖ ":" ‖ i as 4 big-endian bytes)`
//!   read as a big-endian integer mod r, for `i = 0..91`. Nothing up our sleeve: anyone can
//!   recompute them from the string [`ROUND_CONSTANT_SEED`].
//! * **Hash step** (for the chain) `h(v) = E_0(v) + v` (Davies–Meyer with key 0).
//! * **Hash of a sequence** `H(x_1..x_m)`: Miyaguchi–Preneel, `s_0 = m`,
//!   `s_{j} = E_{s_{j-1}}(x_j) + s_{j-1} + x_j`, `H = s_m`. Starting from the length keeps
//!   sequences of different lengths apart.
//! * **Task binding** `SHA-256(task id bytes)` read big-endian mod r (see [`task_binding`]).

use std::sync::OnceLock;

use ark_bn254::Fr;
use ark_ff::{Field, PrimeField, Zero};
use sha2::{Digest, Sha256};

/// Number of MiMC-7 rounds.
pub const MIMC_ROUNDS: usize = 91;

/// The nothing-up-my-sleeve string the round constants are derived from.
pub const ROUND_CONSTANT_SEED: &str = "ambient-zk/mimc7/bn254/v1";

/// The 91 round constants, derived once from [`ROUND_CONSTANT_SEED`].
pub fn round_constants() -> &'static [Fr; MIMC_ROUNDS] {
    static CONSTANTS: OnceLock<[Fr; MIMC_ROUNDS]> = OnceLock::new();
    CONSTANTS.get_or_init(|| {
        std::array::from_fn(|i| {
            let mut h = Sha256::new();
            h.update(ROUND_CONSTANT_SEED.as_bytes());
            h.update(b":");
            h.update((i as u32).to_be_bytes());
            Fr::from_be_bytes_mod_order(&h.finalize())
        })
    })
}

/// The keyed MiMC-7 permutation `E_key(x)`.
pub fn mimc7(key: Fr, x: Fr) -> Fr {
    let mut t = x;
    for c in round_constants() {
        let a = t + key + c;
        let a2 = a.square();
        let a4 = a2.square();
        t = a4 * a2 * a;
    }
    t + key
}

/// One step of the hash chain: `h(v) = E_0(v) + v`.
pub fn hash_step(v: Fr) -> Fr {
    mimc7(Fr::zero(), v) + v
}

/// `h^n(x)`: the `hash_chain` circuit's function.
pub fn hash_chain(x: Fr, n: usize) -> Fr {
    (0..n).fold(x, |v, _| hash_step(v))
}

/// `H(elems)`: the commitment hash used for input and output commitments.
pub fn hash(elems: &[Fr]) -> Fr {
    elems
        .iter()
        .fold(Fr::from(elems.len() as u64), |s, &x| mimc7(s, x) + s + x)
}

/// The field element a task id is bound to: `SHA-256(task_id)` read big-endian mod r.
///
/// `task_id` is hashed exactly as given; the coordinator and nodes use the 16 raw bytes of
/// the task's UUID (`Uuid::as_bytes()`), not its text form.
pub fn task_binding(task_id: &[u8]) -> Fr {
    Fr::from_be_bytes_mod_order(&Sha256::digest(task_id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ark_ff::{BigInteger, One};

    #[test]
    fn seven_is_coprime_to_r_minus_one() {
        // x ↦ x^7 is a permutation only if 7 ∤ r − 1.
        let r_minus_one = (-Fr::one()).into_bigint();
        let rem = r_minus_one
            .to_bytes_be()
            .iter()
            .fold(0u32, |acc, &b| (acc * 256 + u32::from(b)) % 7);
        assert_ne!(rem, 0);
    }

    #[test]
    fn constants_are_distinct_and_stable() {
        let c = round_constants();
        assert_ne!(c[0], c[1]);
        assert_eq!(*c, *round_constants());
    }

    #[test]
    fn hash_separates_lengths_and_orders() {
        let (a, b) = (Fr::from(1u64), Fr::from(2u64));
        assert_ne!(hash(&[a, b]), hash(&[b, a]));
        assert_ne!(hash(&[a]), hash(&[a, Fr::zero()]));
        assert_ne!(hash(&[]), hash(&[Fr::zero()]));
    }

    #[test]
    fn chain_composes() {
        let x = Fr::from(7u64);
        assert_eq!(hash_chain(x, 3), hash_step(hash_step(hash_step(x))));
        assert_eq!(hash_chain(x, 0), x);
    }
}
