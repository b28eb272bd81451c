//! A program's canonical serialisation, digest and model commitment.

use ark_bn254::Fr;
use ark_ff::PrimeField;
use sha2::{Digest, Sha256};

use super::program::{Layer, Program, TensorSpec};

/// Domain separation and version of the canonical serialisation *and* of the circuit's
/// semantics: bump it whenever either changes, so cached keys are not reused.
pub const SERIALISATION_TAG: &[u8] = b"ambient-zk/nn/v1\0";

struct Enc(Vec<u8>);

impl Enc {
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn usize(&mut self, v: usize) {
        self.u64(v as u64);
    }
    fn usizes(&mut self, v: &[usize]) {
        self.usize(v.len());
        v.iter().for_each(|&x| self.usize(x));
    }
    fn i64s(&mut self, v: &[i64]) {
        self.usize(v.len());
        v.iter()
            .for_each(|&x| self.0.extend_from_slice(&x.to_be_bytes()));
    }
    fn tensor(&mut self, t: &TensorSpec) {
        self.usize(t.name.len());
        self.0.extend_from_slice(t.name.as_bytes());
        self.usizes(&t.shape);
    }
}

impl Program {
    /// The canonical serialisation: [`SERIALISATION_TAG`], then every field in declaration
    /// order, integers as 8 big-endian bytes (`frac_bits` as 4), sequences and strings
    /// prefixed with their length, each layer prefixed with a one-byte tag (its position in
    /// [`Layer`]'s declaration, from 0) and booleans as one byte.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut e = Enc(SERIALISATION_TAG.to_vec());
        e.0.extend_from_slice(&self.frac_bits.to_be_bytes());
        e.tensor(&self.input);
        e.tensor(&self.output);
        e.usize(self.layers.len());
        for layer in &self.layers {
            match layer {
                Layer::Dense {
                    inputs,
                    outputs,
                    weights,
                    bias,
                } => {
                    e.0.push(0);
                    e.usize(*inputs);
                    e.usize(*outputs);
                    e.i64s(weights);
                    e.i64s(bias);
                }
                Layer::Conv2d {
                    out_channels,
                    in_channels,
                    kernel,
                    strides,
                    pads,
                    weights,
                    bias,
                } => {
                    e.0.push(1);
                    e.usize(*out_channels);
                    e.usize(*in_channels);
                    kernel
                        .iter()
                        .chain(strides)
                        .chain(pads)
                        .for_each(|&v| e.usize(v));
                    e.i64s(weights);
                    e.i64s(bias);
                }
                Layer::Relu => e.0.push(2),
                Layer::MaxPool {
                    kernel,
                    strides,
                    pads,
                } => {
                    e.0.push(3);
                    kernel
                        .iter()
                        .chain(strides)
                        .chain(pads)
                        .for_each(|&v| e.usize(v));
                }
                Layer::AveragePool {
                    kernel,
                    strides,
                    pads,
                    count_include_pad,
                } => {
                    e.0.push(4);
                    kernel
                        .iter()
                        .chain(strides)
                        .chain(pads)
                        .for_each(|&v| e.usize(v));
                    e.0.push(u8::from(*count_include_pad));
                }
                Layer::Reshape { shape } => {
                    e.0.push(5);
                    e.usizes(shape);
                }
                Layer::Transpose { perm } => {
                    e.0.push(6);
                    e.usizes(perm);
                }
                Layer::AddConst { shape, values } => {
                    e.0.push(7);
                    e.usizes(shape);
                    e.i64s(values);
                }
                Layer::MulConst { shape, values } => {
                    e.0.push(8);
                    e.usizes(shape);
                    e.i64s(values);
                }
                Layer::Tanh => e.0.push(9),
                Layer::Sigmoid => e.0.push(10),
                Layer::Exp => e.0.push(11),
                Layer::Softmax { axis } => {
                    e.0.push(12);
                    e.usize(*axis);
                }
            }
        }
        e.0
    }

    /// SHA-256 of [`Program::canonical_bytes`]: the key under which a coordinator caches
    /// the program's keys.
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.canonical_bytes()).into()
    }

    /// The model commitment, the circuit's second public input: [`Program::digest`] read
    /// big-endian mod r.
    pub fn commitment(&self) -> Fr {
        Fr::from_be_bytes_mod_order(&self.digest())
    }
}
