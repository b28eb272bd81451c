//! Fixed-point numbers: the bit widths, rounding and conversions every layer shares.

use ark_bn254::Fr;

/// Every activation (every element of every tensor between layers, the program's input and
/// its output included) is a signed integer of this many bits: `−2^31 ≤ q < 2^31`.
pub const ACT_BITS: u32 = 32;

/// Activations packed into one public field element: `7 × 32 = 224` bits, below the
/// 253 bits a BN254 scalar always holds, so the packing is injective.
pub const PACK: usize = 7;

/// The smallest `frac_bits` a program may use.
pub const MIN_FRAC_BITS: u32 = 1;

/// The largest `frac_bits` a program may use: it keeps the piecewise-polynomial constants
/// and their products below `2^110`, inside `i128` and far inside the field.
pub const MAX_FRAC_BITS: u32 = 20;

/// The suggested `frac_bits`: a resolution of `2^-12 ≈ 2.4e-4` with a range of `±2^19`.
pub const DEFAULT_FRAC_BITS: u32 = 12;

/// The least activation, `−2^31`.
pub const ACT_MIN: i64 = -(1 << (ACT_BITS - 1));
/// The greatest activation, `2^31 − 1`.
pub const ACT_MAX: i64 = (1 << (ACT_BITS - 1)) - 1;

/// `x` at `frac_bits`, rounded to the nearest integer (ties away from zero), saturating at
/// the `i64` range. NaN maps to 0.
pub fn quantise(x: f64, frac_bits: u32) -> i64 {
    // `as` saturates and maps NaN to 0; scaling by a power of two is exact.
    (x * f64::from(frac_bits).exp2()).round() as i64
}

/// The real number `q / 2^frac_bits`.
pub fn dequantise(q: i64, frac_bits: u32) -> f64 {
    q as f64 / f64::from(frac_bits).exp2()
}

/// `⌊(a + ⌊d/2⌋) / d⌋` for `d > 0`: division rounded to the nearest integer, ties toward
/// `+∞`. This is the one rounding rule of every rescale, average and softmax division.
pub fn div_round(a: i128, d: i128) -> i128 {
    debug_assert!(d > 0);
    (a + d / 2).div_euclid(d)
}

/// Whether `q` is a valid activation ([`ACT_MIN`] `..=` [`ACT_MAX`]).
pub fn in_act_range(q: i128) -> bool {
    (i128::from(ACT_MIN)..=i128::from(ACT_MAX)).contains(&q)
}

/// A signed integer as a field element (negative values wrap to `r − |v|`).
pub(crate) fn fr(v: i128) -> Fr {
    let mag = Fr::from(v.unsigned_abs());
    if v < 0 { -mag } else { mag }
}

/// Packs activations, [`PACK`] to a field element: element `k` is
/// `Σ_j (q[7k + j] + 2^31) · 2^(32 j)`. Values must be activations (checked by callers).
pub(crate) fn pack(values: &[i64]) -> Vec<Fr> {
    let offset = 1i128 << (ACT_BITS - 1);
    values
        .chunks(PACK)
        .map(|chunk| {
            chunk.iter().rev().fold(Fr::from(0u64), |acc, &q| {
                acc * Fr::from(1u64 << ACT_BITS) + fr(i128::from(q) + offset)
            })
        })
        .collect()
}

/// The number of field elements `n` activations pack into ([`PACK`] per element).
pub fn packed_len(n: usize) -> usize {
    n.div_ceil(PACK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_is_to_nearest_ties_up() {
        assert_eq!(div_round(5, 2), 3);
        assert_eq!(div_round(-5, 2), -2);
        assert_eq!(div_round(-6, 4), -1);
        assert_eq!(div_round(7, 4), 2);
        assert_eq!(div_round(-7, 4), -2);
        assert_eq!(div_round(4, 3), 1);
        assert_eq!(div_round(5, 3), 2);
    }

    #[test]
    fn quantise_round_trips() {
        assert_eq!(quantise(1.5, 12), 6144);
        assert_eq!(quantise(-0.000_122_070_312_5, 12), -1);
        assert_eq!(quantise(f64::NAN, 12), 0);
        assert_eq!(dequantise(quantise(-3.25, 8), 8), -3.25);
    }

    #[test]
    fn packing_is_little_endian_with_offset() {
        let p = pack(&[0, -1, 5]);
        let o = 1u128 << 31;
        let expect = Fr::from(o) + Fr::from(o - 1) * fr(1 << 32) + Fr::from(o + 5) * fr(1 << 64);
        assert_eq!(p, vec![expect]);
        assert_eq!(packed_len(784), 112);
        assert_eq!(pack(&[0; 8]).len(), 2);
    }
}
