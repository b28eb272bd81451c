//! A neural network in fixed point: the form that [`super`] evaluates and proves.
//!
//! Every value is an integer `q` standing for the real `q / 2^frac_bits`. Weights are at the
//! same scale; biases and constants added after a product are at twice the scale
//! (`2·frac_bits`), so that they add to the product before it is rescaled.
//!
//! A program is a chain: each layer takes the tensor the previous one produced (the first
//! takes the program's input) and the last one's is the output. Tensors are row-major.
//! The ONNX front end (`onnx`, behind the crate's `onnx` feature) makes programs from models;
//! nothing in here knows ONNX.

use serde::{Deserialize, Serialize};

/// A fixed-point network, its shapes fixed (one circuit per program).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Program {
    /// Fractional bits of every activation and weight.
    pub frac_bits: u32,
    /// The model's input: its ONNX name and its full shape (batch included).
    pub input: TensorSpec,
    /// The model's output: its ONNX name and its full shape.
    pub output: TensorSpec,
    /// The layers, in order.
    pub layers: Vec<Layer>,
}

/// A named tensor of fixed shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorSpec {
    /// The graph's name for it.
    pub name: String,
    /// Its dimensions.
    pub shape: Vec<usize>,
}

/// One step of a [`Program`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Layer {
    /// `y[.., o] = rescale(Σ_i x[.., i]·w[o][i] + bias[o])` over the last axis:
    /// `[.., in] → [.., out]`. `weights` is `out × in`, row-major, at `frac_bits`; `bias` at
    /// `2·frac_bits`. (ONNX Gemm, MatMul with a constant, MatMul + Add.)
    Dense {
        /// Input features.
        inputs: usize,
        /// Output features.
        outputs: usize,
        /// `outputs × inputs`, row-major.
        weights: Vec<i64>,
        /// `outputs` values at twice the scale.
        bias: Vec<i64>,
    },
    /// 2-D convolution, `[N, C, H, W] → [N, M, H', W']`, one group, no dilation.
    /// `weights` is `M × C × kh × kw` at `frac_bits`; `bias` is `M` values at `2·frac_bits`.
    Conv2d {
        /// Output channels `M`.
        out_channels: usize,
        /// Input channels `C`.
        in_channels: usize,
        /// `[kh, kw]`.
        kernel: [usize; 2],
        /// `[sh, sw]`.
        strides: [usize; 2],
        /// `[top, left, bottom, right]`, zeros.
        pads: [usize; 4],
        /// `M × C × kh × kw`, row-major.
        weights: Vec<i64>,
        /// `M` values at twice the scale.
        bias: Vec<i64>,
    },
    /// `max(x, 0)` elementwise.
    Relu,
    /// Max pooling over `[N, C, H, W]`; padding never wins (ONNX semantics).
    MaxPool {
        /// `[kh, kw]`.
        kernel: [usize; 2],
        /// `[sh, sw]`.
        strides: [usize; 2],
        /// `[top, left, bottom, right]`.
        pads: [usize; 4],
    },
    /// Average pooling over `[N, C, H, W]`, rounded to the nearest integer.
    AveragePool {
        /// `[kh, kw]`.
        kernel: [usize; 2],
        /// `[sh, sw]`.
        strides: [usize; 2],
        /// `[top, left, bottom, right]`.
        pads: [usize; 4],
        /// Whether padded cells count in the divisor (ONNX `count_include_pad`).
        count_include_pad: bool,
    },
    /// Same data, new shape (ONNX Reshape, Flatten, Squeeze, Unsqueeze).
    Reshape {
        /// The new shape; its product equals the old one's.
        shape: Vec<usize>,
    },
    /// Axes permuted (ONNX Transpose).
    Transpose {
        /// `perm[i]` is the input axis that becomes output axis `i`.
        perm: Vec<usize>,
    },
    /// `y = x + c`, `c` broadcast (numpy rules) from `shape` to the input's shape, at
    /// `frac_bits`. (ONNX Add and Sub with a constant.)
    AddConst {
        /// The constant's shape.
        shape: Vec<usize>,
        /// Its values.
        values: Vec<i64>,
    },
    /// `y = rescale(x · c)`, `c` broadcast from `shape`, at `frac_bits`. (ONNX Mul with a
    /// constant, Div by a constant.)
    MulConst {
        /// The constant's shape.
        shape: Vec<usize>,
        /// Its values.
        values: Vec<i64>,
    },
    /// `tanh(x)` elementwise.
    Tanh,
    /// `1 / (1 + e^-x)` elementwise.
    Sigmoid,
    /// `e^x` elementwise.
    Exp,
    /// Softmax along one axis.
    Softmax {
        /// The axis, non-negative.
        axis: usize,
    },
}
