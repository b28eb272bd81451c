//! Unit tests of every layer's gadget: satisfied by the honest witness, unsatisfied with a
//! wrong output, counted exactly, and close to the real-number reference.

use super::activation::Smooth;
use super::*;
use crate::ZkError;

const TASK: &[u8] = b"0123456789abcdef";
const F: u32 = 12;

/// splitmix64: deterministic test data without a dependency.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi)`.
    pub(crate) fn real(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub(crate) fn quantised(&mut self, n: usize, lo: f64, hi: f64, f: u32) -> Vec<i64> {
        (0..n).map(|_| quantise(self.real(lo, hi), f)).collect()
    }
}

fn program(input: &[usize], output: &[usize], layers: Vec<Layer>) -> Program {
    Program {
        frac_bits: F,
        input: TensorSpec {
            name: "x".into(),
            shape: input.to_vec(),
        },
        output: TensorSpec {
            name: "y".into(),
            shape: output.to_vec(),
        },
        layers,
    }
}

/// Checks one program on one input: counted constraints equal synthesis, the honest
/// witness satisfies, a wrong output does not, and the error against `f64` is within
/// `bound`. Returns the max error.
fn check_layer(p: &Program, input: &[i64], bound: f64) -> f64 {
    let counted = p.constraints().unwrap();
    assert_eq!(shape(p).unwrap().constraints, counted, "{:?}", p.layers);
    let out = evaluate(p, input).unwrap();
    assert!(
        is_satisfied(p, TASK, input, None).unwrap(),
        "{:?}",
        p.layers
    );
    let mut wrong = out.clone();
    wrong[0] += 1;
    assert!(!is_satisfied(p, TASK, input, Some(&wrong)).unwrap());
    let real_in: Vec<f64> = input.iter().map(|&q| dequantise(q, p.frac_bits)).collect();
    let reference = evaluate_f64(p, &real_in).unwrap();
    let err = out
        .iter()
        .zip(&reference)
        .map(|(&q, &r)| (dequantise(q, p.frac_bits) - r).abs())
        .fold(0.0, f64::max);
    assert!(err <= bound, "{:?}: error {err} > {bound}", p.layers);
    err
}

const EPS: f64 = 1.0 / 4096.0;

#[test]
fn dense_and_relu() {
    let mut rng = Rng(1);
    let p = program(
        &[2, 4],
        &[2, 3],
        vec![
            Layer::Dense {
                inputs: 4,
                outputs: 3,
                weights: rng.quantised(12, -1.0, 1.0, F),
                bias: rng.quantised(3, -1.0, 1.0, 2 * F),
            },
            Layer::Relu,
        ],
    );
    check_layer(&p, &rng.quantised(8, -2.0, 2.0, F), EPS / 2.0);
    // Relu after a layer with no bits pays for its own decomposition.
    let p = program(
        &[2, 4],
        &[2, 4],
        vec![
            Layer::AddConst {
                shape: vec![4],
                values: rng.quantised(4, -1.0, 1.0, F),
            },
            Layer::Relu,
            Layer::Relu,
        ],
    );
    check_layer(&p, &rng.quantised(8, -2.0, 2.0, F), 0.0);
}

#[test]
fn conv_and_pools() {
    let mut rng = Rng(2);
    let conv = Layer::Conv2d {
        out_channels: 3,
        in_channels: 2,
        kernel: [3, 3],
        strides: [2, 1],
        pads: [1, 0, 1, 2],
        weights: rng.quantised(3 * 2 * 9, -0.5, 0.5, F),
        bias: rng.quantised(3, -0.5, 0.5, 2 * F),
    };
    let p = program(&[1, 2, 6, 6], &[1, 3, 3, 6], vec![conv]);
    check_layer(&p, &rng.quantised(72, -1.0, 1.0, F), EPS / 2.0);

    let input = rng.quantised(50, -3.0, 3.0, F);
    let max = Layer::MaxPool {
        kernel: [2, 2],
        strides: [2, 2],
        pads: [1, 1, 0, 0],
    };
    check_layer(
        &program(&[1, 2, 5, 5], &[1, 2, 3, 3], vec![max]),
        &input,
        0.0,
    );
    for count_include_pad in [false, true] {
        let avg = Layer::AveragePool {
            kernel: [3, 3],
            strides: [2, 2],
            pads: [1, 1, 1, 1],
            count_include_pad,
        };
        let p = program(&[1, 2, 5, 5], &[1, 2, 3, 3], vec![avg]);
        check_layer(&p, &input, EPS / 2.0);
    }
    // A power-of-two count.
    let avg = Layer::AveragePool {
        kernel: [2, 2],
        strides: [1, 1],
        pads: [0; 4],
        count_include_pad: false,
    };
    check_layer(
        &program(&[1, 2, 5, 5], &[1, 2, 4, 4], vec![avg]),
        &input,
        EPS / 2.0,
    );
}

#[test]
fn rewiring_and_constants() {
    let mut rng = Rng(3);
    let p = program(
        &[2, 3, 4],
        &[4, 6],
        vec![
            Layer::Transpose {
                perm: vec![2, 0, 1],
            },
            Layer::Reshape { shape: vec![4, 6] },
            Layer::MulConst {
                shape: vec![6],
                values: rng.quantised(6, -2.0, 2.0, F),
            },
            Layer::AddConst {
                shape: vec![4, 1],
                values: rng.quantised(4, -2.0, 2.0, F),
            },
        ],
    );
    check_layer(&p, &rng.quantised(24, -2.0, 2.0, F), EPS / 2.0 + 1e-12);
    // A scalar constant and a reshape as the last layer (the output has bits).
    let p = program(
        &[3, 2],
        &[6],
        vec![
            Layer::MulConst {
                shape: vec![],
                values: vec![quantise(0.5, F)],
            },
            Layer::Reshape { shape: vec![6] },
        ],
    );
    check_layer(&p, &rng.quantised(6, -2.0, 2.0, F), EPS / 2.0);
}

#[test]
fn smooth_functions() {
    let mut rng = Rng(4);
    // Inputs across each domain and beyond it.
    let input: Vec<i64> = rng.quantised(24, -20.0, 20.0, F);
    let p = program(&[24], &[24], vec![Layer::Tanh]);
    let e = check_layer(&p, &input, Smooth::Tanh.error_bound(F));
    eprintln!("tanh: {e:.2e}");
    let p = program(&[24], &[24], vec![Layer::Sigmoid]);
    let e = check_layer(&p, &input, Smooth::Sigmoid.error_bound(F));
    eprintln!("sigmoid: {e:.2e}");
    // Exp: a relative bound, so check it on [−16, 5).
    let small: Vec<i64> = rng.quantised(24, -17.0, 5.0, F);
    let p = program(&[24], &[24], vec![Layer::Exp]);
    let e = check_layer(&p, &small, Smooth::Exp.error_bound(F) * 5f64.exp());
    eprintln!("exp: {e:.2e}");
}

#[test]
fn softmax() {
    let mut rng = Rng(5);
    let input = rng.quantised(10, -6.0, 6.0, F);
    for (axis, out) in [(1, [2, 5]), (0, [2, 5])] {
        let p = program(&[2, 5], &out, vec![Layer::Softmax { axis }]);
        // (n + 1)·δ + ε/2 with δ the exp table's bound.
        let e = check_layer(
            &p,
            &input,
            6.0 * Smooth::SoftmaxExp.error_bound(F) + EPS / 2.0,
        );
        eprintln!("softmax axis {axis}: {e:.2e}");
    }
    // Large gaps clamp to exactly zero.
    let p = program(&[3], &[3], vec![Layer::Softmax { axis: 0 }]);
    let x = [quantise(40.0, F), 0, quantise(-40.0, F)];
    assert_eq!(evaluate(&p, &x).unwrap(), vec![1 << F, 0, 0]);
    check_layer(&p, &x, EPS);
}

#[test]
fn overflows_are_errors_not_wraps() {
    let dense = |w: f64| {
        program(
            &[1, 2],
            &[1, 1],
            vec![Layer::Dense {
                inputs: 2,
                outputs: 1,
                weights: vec![quantise(w, F); 2],
                bias: vec![0],
            }],
        )
    };
    let big = quantise(500_000.0, F);
    assert!(evaluate(&dense(1.0), &[big, 0]).is_ok());
    assert!(matches!(
        evaluate(&dense(2.0), &[big, big]),
        Err(ZkError::Overflow {
            layer: 0,
            op: "dense",
            ..
        })
    ));
    // The circuit refuses what evaluate refuses.
    let cs_ok = is_satisfied(&dense(2.0), TASK, &[big, big], Some(&[0]));
    assert!(matches!(cs_ok, Ok(false)));
    let exp = program(&[1], &[1], vec![Layer::Exp]);
    assert!(matches!(
        evaluate(&exp, &[quantise(16.0, F)]),
        Err(ZkError::Overflow { op: "exp", .. })
    ));
    assert!(matches!(
        evaluate(&exp, &[1 << 40]),
        Err(ZkError::BadInput { .. })
    ));
    assert!(matches!(
        evaluate(&exp, &[1, 2]),
        Err(ZkError::BadInput { .. })
    ));
}

#[test]
fn bad_programs_are_refused() {
    let ok = program(&[1, 4], &[1, 4], vec![Layer::Relu]);
    ok.check().unwrap();
    let cases = [
        Program {
            frac_bits: 0,
            ..ok.clone()
        },
        Program {
            frac_bits: 21,
            ..ok.clone()
        },
        program(&[1, 4], &[1, 5], vec![Layer::Relu]),
        program(
            &[1, 4],
            &[1, 2],
            vec![Layer::Dense {
                inputs: 4,
                outputs: 2,
                weights: vec![0; 7],
                bias: vec![0; 2],
            }],
        ),
        program(&[1, 4], &[4], vec![Layer::Reshape { shape: vec![5] }]),
        program(
            &[1, 4],
            &[4, 1],
            vec![Layer::Transpose { perm: vec![1, 1] }],
        ),
        program(&[1, 4], &[1, 4], vec![Layer::Softmax { axis: 2 }]),
        program(
            &[1, 4],
            &[1, 4],
            vec![Layer::AddConst {
                shape: vec![3],
                values: vec![0; 3],
            }],
        ),
        program(
            &[1, 1, 4, 4],
            &[1, 1, 2, 2],
            vec![Layer::MaxPool {
                kernel: [2, 2],
                strides: [2, 2],
                pads: [2, 0, 0, 0],
            }],
        ),
        program(&[0, 4], &[0, 4], vec![]),
        // A program far beyond the constraint cap.
        program(&[1 << 20], &[1 << 20], vec![Layer::Tanh]),
    ];
    for p in cases {
        assert!(
            matches!(p.check(), Err(ZkError::BadProgram(_))),
            "{:?} {:?}",
            p.input,
            p.layers
        );
    }
}

#[test]
fn commitment_covers_every_field() {
    let base = program(
        &[1, 2],
        &[1, 1],
        vec![Layer::Dense {
            inputs: 2,
            outputs: 1,
            weights: vec![1, 2],
            bias: vec![3],
        }],
    );
    let mut variants = vec![base.clone()];
    let mut p = base.clone();
    p.frac_bits = 11;
    variants.push(p);
    let mut p = base.clone();
    p.input.name = "z".into();
    variants.push(p);
    let mut p = base.clone();
    if let Layer::Dense { bias, .. } = &mut p.layers[0] {
        bias[0] = 4;
    }
    variants.push(p);
    let mut p = base.clone();
    p.layers.push(Layer::Relu);
    variants.push(p);
    let c: Vec<_> = variants.iter().map(Program::commitment).collect();
    for i in 0..c.len() {
        for j in i + 1..c.len() {
            assert_ne!(c[i], c[j], "{i} {j}");
        }
    }
    assert_eq!(base.commitment(), base.clone().commitment());
}
