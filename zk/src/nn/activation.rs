//! Smooth activations as piecewise cubics on a clamped domain: the tables that both
//! [`super::evaluate`] and the circuit use, so the two agree bit for bit.
//!
//! A function `g` gets a domain `[lo, lo + 2^c)` (real units) cut into `2^SEG_BITS = 32`
//! equal segments. For an input `x` (an integer at `f = frac_bits`), `t = x − lo·2^f`:
//!
//! * `t < 0`: the result is the constant `below` (`g` at `−∞`, to within `2^-23`);
//! * `t ≥ 2^(f+c)`: the constant `above` (or, for `Exp`, an overflow error);
//! * otherwise the high `SEG_BITS` bits of `t` pick a segment `j` and its low
//!   `w = f + c − SEG_BITS` bits are `v`; the result is
//!   `⌊(P_j(v) + 2^(R−1)) / 2^R⌋` with `P_j(v) = K0 + v·(K1 + v·(K2 + v·K3))` over integers
//!   and `R = 3w + 4`.
//!
//! The coefficients `K` interpolate `g·2^(f+R)` at the four Chebyshev nodes of each segment.
//! They are computed with `+ − × ÷` on `f64` only (the exponential is our own series, not
//! the platform's `exp`), which IEEE 754 makes identical on every machine: prover and
//! verifier must build the same circuit.
//!
//! Error bounds at any `frac_bits` (`ε = 2^-f` is one unit; measured by the tests):
//! interpolation `≤ |g⁗|·h⁴/3072` with `h` the segment width, coefficient rounding
//! `≤ ε/16`, final rounding `≤ ε/2`.
//!
//! | Function | Domain | `h` | below / above | Max error |
//! |---|---|---|---|---|
//! | `Tanh` | `[−8, 8)` | 0.5 | `−1` / `1` | `1e-4 + 0.57ε` (interpolation ≤ 7e-5) |
//! | `Sigmoid` | `[−16, 16)` | 1 | `0` / `1` | `4e-5 + 0.57ε` |
//! | `Exp` | `[−16, 16)` | 1 | `0` / overflow | relative `3.5e-4`, plus `0.57ε` |
//! | softmax's `exp(x − max)` | `[−16, 0)` | 0.5 | `0` / `1` | `3e-5 + 0.57ε` |

use super::fixed::ACT_BITS;

/// log2 of the number of segments.
pub const SEG_BITS: u32 = 5;

/// The smooth functions with a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Smooth {
    /// `tanh(x)`.
    Tanh,
    /// `1 / (1 + e^−x)`.
    Sigmoid,
    /// `e^x`; inputs at or above 16 are an overflow.
    Exp,
    /// `e^x` for `x ≤ 0`, as softmax uses it on `x − max`.
    SoftmaxExp,
}

/// What a table gives above its domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Above {
    /// This constant (an activation).
    Value(i64),
    /// Nothing: the input is out of range (an overflow error).
    Overflow,
}

/// A piecewise-cubic table for one function at one `frac_bits`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piecewise {
    /// Domain start, an integer at `frac_bits`.
    pub lo: i64,
    /// The domain is `2^k` integers wide (`k = f + c`).
    pub k: u32,
    /// Bits of `v`, the offset inside a segment (`k − SEG_BITS`).
    pub w: u32,
    /// The final rescale, `R = 3w + 4`.
    pub shift: u32,
    /// `[K0, K1, K2, K3]` per segment.
    pub coeffs: Vec<[i128; 4]>,
    /// The result below the domain.
    pub below: i64,
    /// The result above it.
    pub above: Above,
    /// The result `q` satisfies `−2^(q_bits−1) ≤ q < 2^(q_bits−1)` (range-checked).
    pub q_bits: u32,
}

/// Why a table has no value at an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PieceError {
    /// The input is above an `Exp` domain.
    AboveDomain,
    /// The result does not fit `q_bits` (only `Exp` reaches this).
    Overflow,
}

const LN2_HI: f64 = 0.693_147_180_369_123_8;
const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
const INV_LN2: f64 = std::f64::consts::LOG2_E;

/// `e^x` from `+ − × ÷` only (deterministic on every IEEE 754 machine), relative error
/// about `1e-16` on `[−700, 700]`.
pub fn det_exp(x: f64) -> f64 {
    if x < -700.0 {
        return 0.0;
    }
    let n = (x * INV_LN2).round();
    let r = (x - n * LN2_HI) - n * LN2_LO;
    // Taylor series of e^r, |r| ≤ 0.35: 18 terms reach far below f64 precision.
    let mut sum = 1.0;
    for i in (1..=18).rev() {
        sum = 1.0 + sum * r / f64::from(i);
    }
    let n = n as i64;
    sum * f64::from_bits(((1023 + n) as u64) << 52)
}

/// `tanh` from [`det_exp`].
pub fn det_tanh(x: f64) -> f64 {
    let e = det_exp(-2.0 * x.abs());
    let t = (1.0 - e) / (1.0 + e);
    if x < 0.0 { -t } else { t }
}

/// The logistic function from [`det_exp`].
pub fn det_sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + det_exp(-x))
    } else {
        let e = det_exp(x);
        e / (1.0 + e)
    }
}

impl Smooth {
    /// The function, deterministically.
    pub fn real(self, x: f64) -> f64 {
        match self {
            Self::Tanh => det_tanh(x),
            Self::Sigmoid => det_sigmoid(x),
            Self::Exp | Self::SoftmaxExp => det_exp(x),
        }
    }

    /// The documented bound on the table's error against the real function at
    /// `frac_bits` (the tests check it): absolute, except for `Exp`, where it is relative
    /// above 1 and absolute below.
    pub fn error_bound(self, frac_bits: u32) -> f64 {
        let rounding = 0.57 / f64::from(frac_bits).exp2();
        rounding
            + match self {
                Self::Tanh => 1e-4,
                Self::Sigmoid => 4e-5,
                Self::SoftmaxExp => 3e-5,
                Self::Exp => 3.5e-4,
            }
    }

    /// `(lo, c)`: the domain `[lo, lo + 2^c)` in real units.
    fn domain(self) -> (i64, u32) {
        match self {
            Self::Tanh => (-8, 4),
            Self::Sigmoid | Self::Exp => (-16, 5),
            Self::SoftmaxExp => (-16, 4),
        }
    }

    /// The table at `frac_bits` (in `1..=20`).
    pub fn table(self, frac_bits: u32) -> Piecewise {
        let f = frac_bits;
        let (lo_real, c) = self.domain();
        let k = f + c;
        let w = k - SEG_BITS;
        let shift = 3 * w + 4;
        let one = 1i64 << f;
        let (below, above, q_bits) = match self {
            Self::Tanh => (-one, Above::Value(one), f + 2),
            Self::Sigmoid => (0, Above::Value(one), f + 2),
            Self::Exp => (0, Above::Overflow, ACT_BITS),
            Self::SoftmaxExp => (0, Above::Value(one), f + 2),
        };
        // Chebyshev nodes of [0, 1] for degree 3: (1 + cos((2i+1)π/8)) / 2, as literals
        // (cos is not deterministic across platforms).
        const C1: f64 = 0.923_879_532_511_286_7;
        const C3: f64 = 0.382_683_432_365_089_8;
        let nodes = [
            (1.0 + C1) / 2.0,
            (1.0 + C3) / 2.0,
            (1.0 - C3) / 2.0,
            (1.0 - C1) / 2.0,
        ];
        let scale = 2f64.powi((f + shift) as i32);
        let seg_width = 2f64.powi(w as i32 - f as i32);
        let coeffs = (0..1i64 << SEG_BITS)
            .map(|j| {
                let x0 = lo_real as f64 + j as f64 * seg_width;
                let ys = nodes.map(|t| self.real(x0 + t * seg_width));
                let a = cubic_through(&nodes, &ys);
                // a_m is the coefficient of τ^m with τ = v / 2^w.
                std::array::from_fn(|m| {
                    let km = a[m] * scale / 2f64.powi((m as u32 * w) as i32);
                    km.round() as i128
                })
            })
            .collect();
        Piecewise {
            lo: lo_real * one,
            k,
            w,
            shift,
            coeffs,
            below,
            above,
            q_bits,
        }
    }
}

/// The monomial coefficients of the cubic through four points (Newton's divided
/// differences, expanded).
fn cubic_through(x: &[f64; 4], y: &[f64; 4]) -> [f64; 4] {
    let mut d = *y;
    for level in 1..4 {
        for i in (level..4).rev() {
            d[i] = (d[i] - d[i - 1]) / (x[i] - x[i - level]);
        }
    }
    // p(t) = d0 + (t−x0)(d1 + (t−x1)(d2 + (t−x2) d3)), expanded from the inside out.
    let mut p = [d[3], 0.0, 0.0, 0.0];
    for i in (0..3).rev() {
        // p ← p·(t − x_i) + d_i
        let mut next = [0.0; 4];
        for m in 0..4 {
            if m + 1 < 4 {
                next[m + 1] += p[m];
            }
            next[m] -= p[m] * x[i];
        }
        next[0] += d[i];
        p = next;
    }
    p
}

impl Piecewise {
    /// The segment polynomial `P_j(v)`, exactly.
    pub fn poly(&self, segment: usize, v: i128) -> i128 {
        let [k0, k1, k2, k3] = self.coeffs[segment];
        ((k3 * v + k2) * v + k1) * v + k0
    }

    /// The table's value at `x` (an integer at `frac_bits`; `|x| < 2^32`).
    pub fn eval(&self, x: i128) -> Result<i64, PieceError> {
        let t = x - i128::from(self.lo);
        if t < 0 {
            return Ok(self.below);
        }
        if t >= 1i128 << self.k {
            return match self.above {
                Above::Value(v) => Ok(v),
                Above::Overflow => Err(PieceError::AboveDomain),
            };
        }
        let segment = (t >> self.w) as usize;
        let v = t & ((1i128 << self.w) - 1);
        let q = super::fixed::div_round(self.poly(segment, v), 1i128 << self.shift);
        let half = 1i128 << (self.q_bits - 1);
        if !(-half..half).contains(&q) {
            return Err(PieceError::Overflow);
        }
        Ok(q as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::fixed::dequantise;

    #[test]
    fn det_functions_match_std() {
        for i in -4000..4000 {
            let x = f64::from(i) / 100.0;
            assert!((det_exp(x) - x.exp()).abs() <= 1e-14 * x.exp(), "{x}");
            assert!((det_tanh(x) - x.tanh()).abs() <= 1e-15, "{x}");
            let s = 1.0 / (1.0 + (-x).exp());
            assert!((det_sigmoid(x) - s).abs() <= 1e-15, "{x}");
        }
    }

    /// Max abs error of a table against the real function, over every input of the domain
    /// and a margin either side (at `f = 12`, every 3rd input to keep debug runs short).
    fn max_error(g: Smooth, f: u32, relative: bool) -> f64 {
        let table = g.table(f);
        let lo = table.lo - (1 << f);
        let hi = match (g, table.above) {
            (Smooth::SoftmaxExp, _) => table.lo + (1 << table.k),
            (_, Above::Overflow) => table.lo + (1 << table.k) - 1,
            _ => table.lo + (1 << table.k) + (1 << f),
        };
        let step = if f >= 12 { 3 } else { 1 };
        let mut worst: f64 = 0.0;
        let mut x = lo;
        while x <= hi {
            let xr = dequantise(x, f);
            let Ok(q) = table.eval(i128::from(x)) else {
                x += step;
                continue;
            };
            let exact = match g {
                Smooth::Tanh => xr.tanh(),
                Smooth::Sigmoid => 1.0 / (1.0 + (-xr).exp()),
                Smooth::Exp | Smooth::SoftmaxExp => xr.exp(),
            };
            let err = (dequantise(q, f) - exact).abs();
            let err = if relative {
                // Relative beyond one unit, absolute below.
                err / exact.max(1.0)
            } else {
                err
            };
            worst = worst.max(err);
            x += step;
        }
        worst
    }

    #[test]
    fn error_bounds_hold() {
        for f in [8, 12, 16] {
            let unit = f64::from(f).exp2().recip();
            let tanh = max_error(Smooth::Tanh, f, false);
            let sig = max_error(Smooth::Sigmoid, f, false);
            let sexp = max_error(Smooth::SoftmaxExp, f, false);
            eprintln!("f={f}: tanh {tanh:.3e}, sigmoid {sig:.3e}, softmax exp {sexp:.3e}");
            assert!(tanh <= Smooth::Tanh.error_bound(f), "tanh at f={f}: {tanh}");
            assert!(
                sig <= Smooth::Sigmoid.error_bound(f),
                "sigmoid at f={f}: {sig}"
            );
            assert!(
                sexp <= Smooth::SoftmaxExp.error_bound(f),
                "softmax exp at f={f}: {sexp}"
            );
            let _ = unit;
        }
        // Exp overflows i32 early at large f; check it where its whole domain fits.
        let exp = max_error(Smooth::Exp, 8, true);
        eprintln!("exp at f=8: {exp:.3e} (relative)");
        assert!(exp <= Smooth::Exp.error_bound(8), "exp: {exp}");
    }

    #[test]
    fn tables_fit_i128_at_every_frac_bits() {
        for f in 1..=20 {
            for g in [
                Smooth::Tanh,
                Smooth::Sigmoid,
                Smooth::Exp,
                Smooth::SoftmaxExp,
            ] {
                let t = g.table(f);
                let vmax = (1i128 << t.w) - 1;
                for (j, [k0, k1, k2, k3]) in t.coeffs.iter().enumerate() {
                    let bound = k0.abs() + vmax * (k1.abs() + vmax * (k2.abs() + vmax * k3.abs()));
                    assert!(bound < 1i128 << 110, "{g:?} f={f} segment {j}");
                }
            }
        }
    }
}
