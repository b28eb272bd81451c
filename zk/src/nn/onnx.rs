//! The ONNX front end: compiles an ONNX model into a fixed-point [`Program`] ([`compile`]).
//!
//! Behind the crate's `onnx` feature. Only the protobuf decoder of `tract-onnx` is used (its
//! prost-generated [`pb`] types); the lowering, the shapes and the folding are
//! done here, so that what is proved is exactly what this module says.
//!
//! # What compiles
//! The graph must be a **chain**: one input, one output, and every other node (constants
//! aside) takes the previous node's output and constants only (graph initializers and
//! `Constant` nodes). A fan-out, a join of two computed tensors, a second input or output, or a
//! node off the path gives [`CompileError::NotAChain`].
//!
//! | ONNX operator | [`Layer`] | Notes |
//! |---|---|---|
//! | `Gemm` | `Dense` | `alpha`, `beta`; `transA = 0`; `transB` 0 or 1; `C` of shape `[out]`, `[1, out]` or a scalar becomes the bias, any other broadcast an `AddConst` |
//! | `MatMul` by a constant | `Dense` | the constant is the right operand, `[in, out]` (or `[in]`, then a `Reshape` drops the axis) |
//! | `Add`, `Sub` with a constant | folded, or `AddConst` | either side for `Add`; `c − x` is `MulConst(−1)` then `AddConst(c)` |
//! | `Mul`, `Div` by a constant | folded, or `MulConst` | either side for `Mul`; `x / c` is `x · (1/c)`; `c / x` is refused |
//! | `Conv` | `Conv2d` | 2-D only; `strides`, `pads`, `auto_pad` (`NOTSET`, `VALID`, `SAME_UPPER`, `SAME_LOWER`), optional bias; `group` and `dilations` must be 1 |
//! | `BatchNormalization` | folded, or `MulConst` + `AddConst` | inference form only (`training_mode = 0`) |
//! | `Relu`, `Tanh`, `Sigmoid`, `Exp` | the same | |
//! | `MaxPool`, `AveragePool` | the same | 2-D; `kernel_shape`, `strides`, `pads`, `auto_pad`, `count_include_pad`; `ceil_mode = 0`, `dilations` 1 |
//! | `Flatten`, `Reshape`, `Squeeze`, `Unsqueeze` | `Reshape` | `Reshape`'s shape is a constant; `0` copies the input's dimension, `-1` is inferred; consecutive reshapes merge, and one that changes nothing is dropped |
//! | `Transpose` | `Transpose` | dropped when it is the identity |
//! | `Softmax` | `Softmax` | `axis` defaults to −1 from opset 13 and to 1 before; before 13, a softmax over the flattened trailing axes is `Reshape`, `Softmax`, `Reshape` |
//! | `Identity`, `Dropout` | none | `Dropout` only in inference (`training_mode` absent or false) |
//!
//! Every other operator (in any domain) is listed, all at once, in
//! [`CompileError::Unsupported`]. Supported operators used in a way no layer covers (a
//! grouped convolution, `ceil_mode = 1`, a constant divided by the input, …) give
//! [`CompileError::UnsupportedAttribute`] or [`CompileError::UnsupportedOperand`], naming the
//! node.
//!
//! # Folding
//! The network is first lowered with `f64` parameters, and only then quantised, so folding is
//! exact in `f64`. A constant `Mul`/`Div` or `Add`/`Sub` right after a `Dense` or `Conv2d` whose
//! constant varies only along the output features (the last axis of a `Dense`, the channel axis
//! of a `Conv2d`) is folded into that layer: `w' = w·c`, `b' = b·c` for a product, `b' = b + c`
//! for a sum. A `BatchNormalization` is the product by `s = γ/√(var+ε)` and then the sum with
//! `β − mean·s`, so after a `Conv` or a `Dense` it folds to `w' = w·s`,
//! `b' = (b − mean)·s + β`. Anywhere else these become `MulConst` / `AddConst` layers.
//!
//! # Shapes
//! Shapes are inferred here, through the chain, from the input's declared shape. **A symbolic
//! dimension (e.g. a batch `N`) becomes 1**: a program has fixed shapes (one circuit per
//! program), so it proves one sample at a time. A declared output shape, where it has concrete
//! dimensions, must agree with the inferred one.
//!
//! # Quantisation
//! With `f = frac_bits` (in [`MIN_FRAC_BITS`]`..=`[`MAX_FRAC_BITS`]): weights and
//! `AddConst`/`MulConst` constants are `round(v·2^f)`, like the activations the program will
//! see; `Dense` and `Conv2d` biases are `round(b·2^(2f))` (they add to the product before it
//! is rescaled). `round` is to the nearest, halves away from zero, as [`super::quantise`]. A
//! value that does not fit an `i64` gives [`CompileError::Overflow`]; the program's size and
//! range limits are [`Program::check`]'s business, not this module's. Constants may be float32
//! or float64 tensors (int64 or int32 for shapes and axes, bool for `Dropout`'s
//! `training_mode`); data stored outside the model is refused.

use std::collections::{BTreeSet, HashMap, HashSet};

use tract_onnx::pb;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::tensor_shape_proto::dimension::Value as Dim;
use tract_onnx::tract_core::framework::Framework;

use super::{Layer, MAX_FRAC_BITS, MIN_FRAC_BITS, Program, TensorSpec};

/// The ONNX operators (default domain) that [`compile`] lowers.
pub const SUPPORTED_OPERATORS: &[&str] = &[
    "Add",
    "AveragePool",
    "BatchNormalization",
    "Constant",
    "Conv",
    "Div",
    "Dropout",
    "Exp",
    "Flatten",
    "Gemm",
    "Identity",
    "MatMul",
    "MaxPool",
    "Mul",
    "Relu",
    "Reshape",
    "Sigmoid",
    "Softmax",
    "Squeeze",
    "Sub",
    "Tanh",
    "Transpose",
    "Unsqueeze",
];

/// Why a model does not compile.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CompileError {
    /// The bytes are not an ONNX model (or not one this decoder reads).
    #[error("not an ONNX model: {0}")]
    Decode(String),
    /// Operators no layer implements, every one in the graph, sorted and without repeats.
    /// Those outside the default domain are written `domain.Op`.
    #[error("operators not supported in proofs: {}", .operators.join(", "))]
    Unsupported {
        /// The operator types.
        operators: Vec<String>,
    },
    /// A supported operator with an attribute value no layer covers.
    #[error("node {node} ({op}): attribute `{attribute}`: {message}")]
    UnsupportedAttribute {
        /// The node (its name, or its index and output when it has none).
        node: String,
        /// Its operator type.
        op: String,
        /// The attribute.
        attribute: String,
        /// What is wrong, and what is supported.
        message: String,
    },
    /// A supported operator whose operands are arranged in a way no layer covers (a constant
    /// divided by the input, a `MatMul` with the constant on the left, …).
    #[error("node {node} ({op}): {message}")]
    UnsupportedOperand {
        /// The node.
        node: String,
        /// Its operator type.
        op: String,
        /// What is wrong.
        message: String,
    },
    /// The graph is not one chain from one input to one output.
    #[error("the graph is not a chain from one input to one output: {0}")]
    NotAChain(String),
    /// Shapes that do not fit together, or that a node does not accept.
    #[error("shape: {node}: {message}")]
    Shape {
        /// The node, or the graph's input or output.
        node: String,
        /// What is wrong.
        message: String,
    },
    /// A constant that cannot be read (an unsupported data type, external data, a length
    /// that does not match its dimensions, a missing value).
    #[error("constant `{name}`: {message}")]
    Constant {
        /// The constant's name in the graph.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// A parameter too large (or not finite) for an `i64` at its scale.
    #[error("node {node}: {what} {value} does not fit a 64-bit integer at 2^{scale_bits}")]
    Overflow {
        /// The node it comes from.
        node: String,
        /// Which parameter (`weight`, `bias`, `constant`).
        what: &'static str,
        /// The real value.
        value: f64,
        /// The scale it was multiplied by, as a power of two.
        scale_bits: u32,
    },
    /// `frac_bits` outside what a program may use ([`MIN_FRAC_BITS`]`..=`[`MAX_FRAC_BITS`]).
    #[error("frac_bits {0} is out of range ({MIN_FRAC_BITS} to {MAX_FRAC_BITS})")]
    FracBits(u32),
}

/// Compiles an ONNX model (its protobuf bytes) into a [`Program`] at `frac_bits` fractional
/// bits. The module docs say what compiles and how it is quantised.
pub fn compile(model: &[u8], frac_bits: u32) -> Result<Program, CompileError> {
    if !(MIN_FRAC_BITS..=MAX_FRAC_BITS).contains(&frac_bits) {
        return Err(CompileError::FracBits(frac_bits));
    }
    let proto = tract_onnx::onnx()
        .proto_model_for_read(&mut &model[..])
        .map_err(|e| CompileError::Decode(format!("{e:#}")))?;
    compile_proto(&proto, frac_bits)
}

/// [`compile`] after decoding.
fn compile_proto(proto: &pb::ModelProto, frac_bits: u32) -> Result<Program, CompileError> {
    let graph = proto
        .graph
        .as_ref()
        .ok_or_else(|| CompileError::Decode("the model has no graph".into()))?;
    let opset = proto
        .opset_import
        .iter()
        .find(|o| is_default_domain(&o.domain))
        .map(|o| o.version)
        .ok_or_else(|| CompileError::Decode("the model imports no `ai.onnx` opset".into()))?;

    check_operators(graph)?;
    let consts = constants(graph);
    let (input, input_shape) = graph_input(graph, &consts)?;
    let output = match graph.output.as_slice() {
        [one] => one,
        [] => return Err(CompileError::NotAChain("the graph has no output".into())),
        many => {
            return Err(CompileError::NotAChain(format!(
                "the graph has {} outputs ({})",
                many.len(),
                names(many.iter().map(|o| o.name.as_str()))
            )));
        }
    };
    let chain = walk(graph, &consts, &input.name, &output.name)?;

    let mut lower = Lower {
        consts: &consts,
        opset,
        shape: input_shape.clone(),
        steps: vec![],
    };
    for (index, node, pos) in chain {
        let node = NodeRef {
            proto: node,
            label: label(node, index),
        };
        lower.node(&node, pos)?;
    }
    check_declared(output, &lower.shape)?;

    let layers = lower
        .steps
        .into_iter()
        .map(|step| quantise(step, frac_bits))
        .collect::<Result<_, _>>()?;
    Ok(Program {
        frac_bits,
        input: TensorSpec {
            name: input.name.clone(),
            shape: input_shape,
        },
        output: TensorSpec {
            name: output.name.clone(),
            shape: lower.shape,
        },
        layers,
    })
}

fn is_default_domain(domain: &str) -> bool {
    domain.is_empty() || domain == "ai.onnx"
}

fn names<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// How errors name a node: its name, or its index and first output when it has none.
fn label(node: &pb::NodeProto, index: usize) -> String {
    if node.name.is_empty() {
        format!(
            "#{index} (output \"{}\")",
            node.output.first().map_or("", String::as_str)
        )
    } else {
        format!("\"{}\"", node.name)
    }
}

/// Every operator of the graph that no layer implements, at once.
fn check_operators(graph: &pb::GraphProto) -> Result<(), CompileError> {
    let unsupported: BTreeSet<String> = graph
        .node
        .iter()
        .filter_map(|n| {
            if !is_default_domain(&n.domain) {
                Some(format!("{}.{}", n.domain, n.op_type))
            } else if SUPPORTED_OPERATORS.contains(&n.op_type.as_str()) {
                None
            } else {
                Some(n.op_type.clone())
            }
        })
        .collect();
    if unsupported.is_empty() {
        Ok(())
    } else {
        Err(CompileError::Unsupported {
            operators: unsupported.into_iter().collect(),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Constants

/// A constant tensor, decoded.
#[derive(Debug, Clone)]
struct Const {
    shape: Vec<usize>,
    data: Data,
}

#[derive(Debug, Clone)]
enum Data {
    Float(Vec<f64>),
    Int(Vec<i64>),
}

impl Const {
    fn floats(&self) -> Vec<f64> {
        match &self.data {
            Data::Float(v) => v.clone(),
            Data::Int(v) => v.iter().map(|&i| i as f64).collect(),
        }
    }
}

/// Every constant of the graph by name, decoded, or why it could not be (reported only if it
/// is used).
type Consts = HashMap<String, Result<Const, String>>;

fn constants(graph: &pb::GraphProto) -> Consts {
    let mut consts: Consts = graph
        .initializer
        .iter()
        .map(|t| (t.name.clone(), decode_tensor(t)))
        .collect();
    for node in graph.node.iter().filter(|n| n.op_type == "Constant") {
        if let Some(out) = node.output.first() {
            consts.insert(out.clone(), constant_node(node));
        }
    }
    consts
}

fn constant_node(node: &pb::NodeProto) -> Result<Const, String> {
    let attr = node
        .attribute
        .first()
        .ok_or("a Constant node without a value")?;
    let scalar = |data| {
        Ok(Const {
            shape: vec![],
            data,
        })
    };
    let vector = |n: usize, data| {
        Ok(Const {
            shape: vec![n],
            data,
        })
    };
    match attr.name.as_str() {
        "value" => decode_tensor(attr.t.as_ref().ok_or("`value` holds no tensor")?),
        "value_float" => scalar(Data::Float(vec![f64::from(attr.f)])),
        "value_floats" => vector(
            attr.floats.len(),
            Data::Float(attr.floats.iter().map(|&f| f64::from(f)).collect()),
        ),
        "value_int" => scalar(Data::Int(vec![attr.i])),
        "value_ints" => vector(attr.ints.len(), Data::Int(attr.ints.clone())),
        other => Err(format!(
            "a Constant given by `{other}`, which is not supported"
        )),
    }
}

fn decode_tensor(t: &pb::TensorProto) -> Result<Const, String> {
    if t.data_location == Some(pb::tensor_proto::DataLocation::External as i32)
        || !t.external_data.is_empty()
    {
        return Err("its data is stored outside the model, which is not supported".into());
    }
    let shape = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("negative dimension {d}")))
        .collect::<Result<Vec<_>, _>>()?;
    let len: usize = shape.iter().product();
    let raw = &t.raw_data;
    fn le<const N: usize, T>(raw: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
        raw.chunks_exact(N)
            .map(|c| f(c.try_into().expect("chunk of N bytes")))
            .collect()
    }
    let data = match DataType::try_from(t.data_type) {
        Ok(DataType::Float) if raw.is_empty() => {
            Data::Float(t.float_data.iter().map(|&f| f64::from(f)).collect())
        }
        Ok(DataType::Float) => Data::Float(le(raw, |b| f64::from(f32::from_le_bytes(b)))),
        Ok(DataType::Double) if raw.is_empty() => Data::Float(t.double_data.clone()),
        Ok(DataType::Double) => Data::Float(le(raw, f64::from_le_bytes)),
        Ok(DataType::Int64) if raw.is_empty() => Data::Int(t.int64_data.clone()),
        Ok(DataType::Int64) => Data::Int(le(raw, i64::from_le_bytes)),
        Ok(DataType::Int32) if raw.is_empty() => {
            Data::Int(t.int32_data.iter().map(|&i| i64::from(i)).collect())
        }
        Ok(DataType::Int32) => Data::Int(le(raw, |b| i64::from(i32::from_le_bytes(b)))),
        Ok(DataType::Bool) if raw.is_empty() => {
            Data::Int(t.int32_data.iter().map(|&i| i64::from(i)).collect())
        }
        Ok(DataType::Bool) => Data::Int(raw.iter().map(|&b| i64::from(b)).collect()),
        Ok(other) => {
            return Err(format!(
                "data type {} is not supported (float32, float64, int64, int32 and bool are)",
                other.as_str_name()
            ));
        }
        Err(_) => return Err(format!("unknown data type {}", t.data_type)),
    };
    let got = match &data {
        Data::Float(v) => v.len(),
        Data::Int(v) => v.len(),
    };
    if got != len {
        return Err(format!(
            "{got} values for dimensions {shape:?} ({len} expected)"
        ));
    }
    Ok(Const { shape, data })
}

// ---------------------------------------------------------------------------------------------
// The chain

/// The graph's one non-constant input and its shape, symbolic dimensions set to 1.
fn graph_input<'g>(
    graph: &'g pb::GraphProto,
    consts: &Consts,
) -> Result<(&'g pb::ValueInfoProto, Vec<usize>), CompileError> {
    let inputs: Vec<_> = graph
        .input
        .iter()
        .filter(|i| !consts.contains_key(&i.name))
        .collect();
    let input = match inputs.as_slice() {
        [one] => *one,
        [] => return Err(CompileError::NotAChain("the graph has no input".into())),
        many => {
            return Err(CompileError::NotAChain(format!(
                "the graph has {} inputs ({})",
                many.len(),
                names(many.iter().map(|i| i.name.as_str()))
            )));
        }
    };
    let where_ = || format!("input `{}`", input.name);
    let tensor = match input.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(pb::type_proto::Value::TensorType(t)) => t,
        None => {
            return Err(CompileError::Shape {
                node: where_(),
                message: "not a tensor".into(),
            });
        }
    };
    if ![DataType::Float as i32, DataType::Double as i32].contains(&tensor.elem_type) {
        return Err(CompileError::Shape {
            node: where_(),
            message: format!(
                "element type {} (a float32 or float64 input is needed)",
                DataType::try_from(tensor.elem_type).map_or("unknown", |t| t.as_str_name())
            ),
        });
    }
    let dims = tensor.shape.as_ref().ok_or_else(|| CompileError::Shape {
        node: where_(),
        message: "no declared shape".into(),
    })?;
    let shape = dims
        .dim
        .iter()
        .map(|d| match d.value {
            Some(Dim::DimValue(v)) if v > 0 => Ok(v as usize),
            Some(Dim::DimValue(v)) => Err(CompileError::Shape {
                node: where_(),
                message: format!("dimension {v}"),
            }),
            // Symbolic (or unknown): one sample.
            Some(Dim::DimParam(_)) | None => Ok(1),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((input, shape))
}

/// The nodes from `input` to `output`, in order, each with the position of its computed input;
/// checks that every other node is a `Constant`.
fn walk<'g>(
    graph: &'g pb::GraphProto,
    consts: &Consts,
    input: &str,
    output: &str,
) -> Result<Vec<(usize, &'g pb::NodeProto, usize)>, CompileError> {
    let mut users: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, node) in graph.node.iter().enumerate() {
        if node.op_type == "Constant" {
            continue;
        }
        for name in &node.input {
            if !name.is_empty() && !consts.contains_key(name) {
                users.entry(name.as_str()).or_default().push(i);
            }
        }
    }
    let used = |name: &str| users.get(name).is_some_and(|u| !u.is_empty());
    let describe = |i: usize| {
        format!(
            "node {} ({})",
            label(&graph.node[i], i),
            graph.node[i].op_type
        )
    };

    let mut chain = vec![];
    let mut visited = HashSet::new();
    let mut current = input;
    loop {
        let next = users.get(current).map_or(&[][..], Vec::as_slice);
        if current == output {
            if next.is_empty() {
                break;
            }
            return Err(CompileError::NotAChain(format!(
                "the output `{output}` is also used by {}",
                describe(next[0])
            )));
        }
        let i = match next {
            [one] => *one,
            [] => {
                return Err(CompileError::NotAChain(format!(
                    "`{current}` is used by no node and is not the output `{output}`"
                )));
            }
            many => {
                let list: Vec<_> = many.iter().map(|&i| describe(i)).collect();
                return Err(CompileError::NotAChain(format!(
                    "`{current}` is used {} times ({})",
                    many.len(),
                    list.join(", ")
                )));
            }
        };
        if !visited.insert(i) {
            return Err(CompileError::NotAChain(format!(
                "{} is on a cycle",
                describe(i)
            )));
        }
        let node = &graph.node[i];
        let computed: Vec<_> = node
            .input
            .iter()
            .filter(|n| !n.is_empty() && !consts.contains_key(n.as_str()))
            .collect();
        if computed.len() != 1 {
            return Err(CompileError::NotAChain(format!(
                "{} takes {} computed inputs ({}); all but one must be constants",
                describe(i),
                computed.len(),
                names(computed.iter().map(|n| n.as_str()))
            )));
        }
        let pos = node
            .input
            .iter()
            .position(|n| n == current)
            .expect("a user of `current`");
        let Some((first, rest)) = node.output.split_first() else {
            return Err(CompileError::NotAChain(format!(
                "{} has no output",
                describe(i)
            )));
        };
        if let Some(extra) = rest
            .iter()
            .find(|o| !o.is_empty() && (used(o) || *o == output))
        {
            return Err(CompileError::NotAChain(format!(
                "{} has a second output `{extra}` that is used",
                describe(i)
            )));
        }
        chain.push((i, node, pos));
        current = first;
    }
    if let Some(i) = (0..graph.node.len())
        .find(|&i| graph.node[i].op_type != "Constant" && !visited.contains(&i))
    {
        return Err(CompileError::NotAChain(format!(
            "{} is off the path from `{input}` to `{output}`",
            describe(i)
        )));
    }
    Ok(chain)
}

/// Checks the inferred output shape against the concrete dimensions the graph declares.
fn check_declared(output: &pb::ValueInfoProto, shape: &[usize]) -> Result<(), CompileError> {
    let Some(pb::type_proto::Value::TensorType(t)) =
        output.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return Ok(());
    };
    let Some(declared) = &t.shape else {
        return Ok(());
    };
    let agrees = declared.dim.len() == shape.len()
        && declared.dim.iter().zip(shape).all(|(d, &s)| match d.value {
            Some(Dim::DimValue(v)) => v == s as i64,
            _ => true,
        });
    if agrees {
        Ok(())
    } else {
        let declared: Vec<String> = declared
            .dim
            .iter()
            .map(|d| match &d.value {
                Some(Dim::DimValue(v)) => v.to_string(),
                Some(Dim::DimParam(p)) => p.clone(),
                None => "?".into(),
            })
            .collect();
        Err(CompileError::Shape {
            node: format!("output `{}`", output.name),
            message: format!("inferred {shape:?}, declared [{}]", declared.join(", ")),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Lowering, in f64

/// A layer before quantisation, its parameters real.
#[derive(Debug, Clone)]
enum Op {
    Dense {
        inputs: usize,
        outputs: usize,
        weights: Vec<f64>,
        bias: Vec<f64>,
    },
    Conv {
        out_ch: usize,
        in_ch: usize,
        kernel: [usize; 2],
        strides: [usize; 2],
        pads: [usize; 4],
        weights: Vec<f64>,
        bias: Vec<f64>,
    },
    Relu,
    MaxPool {
        kernel: [usize; 2],
        strides: [usize; 2],
        pads: [usize; 4],
    },
    AveragePool {
        kernel: [usize; 2],
        strides: [usize; 2],
        pads: [usize; 4],
        count_include_pad: bool,
    },
    Reshape,
    Transpose(Vec<usize>),
    AddConst {
        shape: Vec<usize>,
        values: Vec<f64>,
    },
    MulConst {
        shape: Vec<usize>,
        values: Vec<f64>,
    },
    Tanh,
    Sigmoid,
    Exp,
    Softmax(usize),
}

/// One lowered layer: the node it came from, and the shapes around it.
#[derive(Debug, Clone)]
struct Step {
    node: String,
    op: Op,
    before: Vec<usize>,
    after: Vec<usize>,
}

/// A node of the chain and how errors name it.
struct NodeRef<'g> {
    proto: &'g pb::NodeProto,
    label: String,
}

impl NodeRef<'_> {
    fn op(&self) -> &str {
        &self.proto.op_type
    }

    fn attr(&self, name: &str) -> Option<&pb::AttributeProto> {
        self.proto.attribute.iter().find(|a| a.name == name)
    }

    fn int(&self, name: &str, default: i64) -> i64 {
        self.attr(name).map_or(default, |a| a.i)
    }

    fn float(&self, name: &str, default: f32) -> f32 {
        self.attr(name).map_or(default, |a| a.f)
    }

    fn ints(&self, name: &str) -> Option<&[i64]> {
        self.attr(name).map(|a| a.ints.as_slice())
    }

    fn string(&self, name: &str) -> Option<String> {
        self.attr(name)
            .map(|a| String::from_utf8_lossy(&a.s).into_owned())
    }

    fn attribute_error(&self, attribute: &str, message: impl Into<String>) -> CompileError {
        CompileError::UnsupportedAttribute {
            node: self.label.clone(),
            op: self.op().into(),
            attribute: attribute.into(),
            message: message.into(),
        }
    }

    fn operand_error(&self, message: impl Into<String>) -> CompileError {
        CompileError::UnsupportedOperand {
            node: self.label.clone(),
            op: self.op().into(),
            message: message.into(),
        }
    }

    fn shape_error(&self, message: impl Into<String>) -> CompileError {
        CompileError::Shape {
            node: format!("node {} ({})", self.label, self.op()),
            message: message.into(),
        }
    }
}

struct Lower<'c> {
    consts: &'c Consts,
    opset: i64,
    /// The shape of the chain's tensor so far.
    shape: Vec<usize>,
    steps: Vec<Step>,
}

impl Lower<'_> {
    fn push(&mut self, node: &NodeRef, op: Op, after: Vec<usize>) {
        let before = std::mem::replace(&mut self.shape, after.clone());
        self.steps.push(Step {
            node: node.label.clone(),
            op,
            before,
            after,
        });
    }

    /// The constant at input `index`, or `None` when that optional input is absent.
    fn constant(&self, node: &NodeRef, index: usize) -> Result<Option<Const>, CompileError> {
        let Some(name) = node.proto.input.get(index).filter(|n| !n.is_empty()) else {
            return Ok(None);
        };
        match self.consts.get(name) {
            Some(Ok(c)) => Ok(Some(c.clone())),
            Some(Err(message)) => Err(CompileError::Constant {
                name: name.clone(),
                message: message.clone(),
            }),
            None => Err(node.operand_error(format!("input {index} (`{name}`) must be a constant"))),
        }
    }

    fn required(&self, node: &NodeRef, index: usize, what: &str) -> Result<Const, CompileError> {
        self.constant(node, index)?
            .ok_or_else(|| node.operand_error(format!("input {index} ({what}) is missing")))
    }

    /// The integers of a constant (shapes, axes).
    fn ints_input(&self, node: &NodeRef, index: usize) -> Result<Option<Vec<i64>>, CompileError> {
        match self.constant(node, index)? {
            None => Ok(None),
            Some(Const {
                data: Data::Int(v), ..
            }) => Ok(Some(v)),
            Some(_) => Err(CompileError::Constant {
                name: node.proto.input[index].clone(),
                message: "integers expected".into(),
            }),
        }
    }

    fn rank_error(&self, node: &NodeRef, wanted: &str) -> CompileError {
        node.shape_error(format!(
            "input of shape {:?}; {wanted} expected",
            self.shape
        ))
    }

    fn node(&mut self, node: &NodeRef, pos: usize) -> Result<(), CompileError> {
        match node.op() {
            "Gemm" => self.gemm(node, pos),
            "MatMul" => self.matmul(node, pos),
            "Add" => {
                let c = self.required(node, 1 - pos, "the constant")?;
                self.add_const(node, &c.shape, c.floats())
            }
            "Sub" => {
                let c = self.required(node, 1 - pos, "the constant")?;
                if pos == 0 {
                    self.add_const(node, &c.shape, c.floats().iter().map(|v| -v).collect())
                } else {
                    self.mul_const(node, &[], vec![-1.0])?;
                    self.add_const(node, &c.shape, c.floats())
                }
            }
            "Mul" => {
                let c = self.required(node, 1 - pos, "the constant")?;
                self.mul_const(node, &c.shape, c.floats())
            }
            "Div" => {
                if pos != 0 {
                    return Err(node.operand_error("divides a constant by the computed tensor"));
                }
                let c = self.required(node, 1, "the divisor")?;
                let values = c.floats();
                if values.contains(&0.0) {
                    return Err(CompileError::Constant {
                        name: node.proto.input[1].clone(),
                        message: "a divisor is zero".into(),
                    });
                }
                self.mul_const(node, &c.shape, values.iter().map(|v| 1.0 / v).collect())
            }
            "Conv" => self.conv(node),
            "BatchNormalization" => self.batch_norm(node),
            "MaxPool" | "AveragePool" => self.pool(node),
            "Relu" => self.elementwise(node, Op::Relu),
            "Tanh" => self.elementwise(node, Op::Tanh),
            "Sigmoid" => self.elementwise(node, Op::Sigmoid),
            "Exp" => self.elementwise(node, Op::Exp),
            "Softmax" => self.softmax(node),
            "Flatten" => {
                let rank = self.shape.len() as i64;
                let axis = node.int("axis", 1);
                let axis = if axis < 0 { axis + rank } else { axis };
                if !(0..=rank).contains(&axis) {
                    return Err(node.attribute_error("axis", format!("{axis} out of range")));
                }
                let (a, b) = self.shape.split_at(axis as usize);
                let shape = vec![a.iter().product(), b.iter().product()];
                self.reshape(node, shape);
                Ok(())
            }
            "Reshape" => {
                let target = self
                    .ints_input(node, 1)?
                    .ok_or_else(|| node.operand_error("input 1 (the shape) is missing"))?;
                let allow_zero = node.int("allowzero", 0) != 0;
                let shape = resolve_reshape(&self.shape, &target, allow_zero)
                    .map_err(|m| node.shape_error(m))?;
                self.reshape(node, shape);
                Ok(())
            }
            "Squeeze" | "Unsqueeze" => {
                let axes = if self.opset >= 13 {
                    self.ints_input(node, 1)?
                } else {
                    node.ints("axes").map(<[i64]>::to_vec)
                };
                let shape = if node.op() == "Squeeze" {
                    squeeze(&self.shape, axes.as_deref())
                } else {
                    let axes = axes.ok_or_else(|| node.operand_error("no axes"))?;
                    unsqueeze(&self.shape, &axes)
                }
                .map_err(|m| node.shape_error(m))?;
                self.reshape(node, shape);
                Ok(())
            }
            "Transpose" => {
                let rank = self.shape.len();
                let perm: Vec<usize> = match node.ints("perm") {
                    Some(p) => p
                        .iter()
                        .map(|&a| usize::try_from(a).unwrap_or(usize::MAX))
                        .collect(),
                    None => (0..rank).rev().collect(),
                };
                let mut sorted = perm.clone();
                sorted.sort_unstable();
                if sorted != (0..rank).collect::<Vec<_>>() {
                    return Err(node.shape_error(format!(
                        "perm {perm:?} is not a permutation of the {rank} axes"
                    )));
                }
                if perm.iter().enumerate().all(|(i, &p)| i == p) {
                    return Ok(());
                }
                let after = perm.iter().map(|&p| self.shape[p]).collect();
                self.push(node, Op::Transpose(perm), after);
                Ok(())
            }
            "Identity" => Ok(()),
            "Dropout" => {
                let training = match self.constant(node, 2)? {
                    Some(c) => c.floats().iter().any(|&v| v != 0.0),
                    None => false,
                };
                if training {
                    return Err(
                        node.operand_error("training_mode is true; only inference is proved")
                    );
                }
                Ok(())
            }
            // `check_operators` let nothing else through.
            other => Err(CompileError::Unsupported {
                operators: vec![other.into()],
            }),
        }
    }

    fn elementwise(&mut self, node: &NodeRef, op: Op) -> Result<(), CompileError> {
        self.push(node, op, self.shape.clone());
        Ok(())
    }

    /// A reshape, merged with a reshape just before it, dropped if it changes nothing.
    fn reshape(&mut self, node: &NodeRef, shape: Vec<usize>) {
        if matches!(
            self.steps.last(),
            Some(Step {
                op: Op::Reshape,
                ..
            })
        ) {
            let last = self.steps.pop().expect("a last step");
            self.shape = last.before;
        }
        if shape != self.shape {
            self.push(node, Op::Reshape, shape);
        }
    }

    fn gemm(&mut self, node: &NodeRef, pos: usize) -> Result<(), CompileError> {
        if pos != 0 {
            return Err(node.operand_error("the computed tensor must be A, the first input"));
        }
        if node.int("transA", 0) != 0 {
            return Err(node.attribute_error("transA", "only transA = 0 is supported"));
        }
        let trans_b = node.int("transB", 0) != 0;
        let alpha = f64::from(node.float("alpha", 1.0));
        let beta = f64::from(node.float("beta", 1.0));
        let [m, k] = self.shape[..] else {
            return Err(self.rank_error(node, "a matrix [M, K]"));
        };
        let b = self.required(node, 1, "B")?;
        let (bk, n) = match (b.shape.as_slice(), trans_b) {
            (&[n, k], true) => (k, n),
            (&[k, n], false) => (k, n),
            _ => return Err(node.shape_error(format!("B has shape {:?}; a matrix", b.shape))),
        };
        if bk != k {
            return Err(node.shape_error(format!(
                "A is {:?} but B gives {bk} inputs (transB = {})",
                self.shape, trans_b as u8
            )));
        }
        let bv = b.floats();
        let weights = (0..n)
            .flat_map(|o| (0..k).map(move |i| (o, i)))
            .map(|(o, i)| {
                alpha
                    * if trans_b {
                        bv[o * k + i]
                    } else {
                        bv[i * n + o]
                    }
            })
            .collect();
        let op = Op::Dense {
            inputs: k,
            outputs: n,
            weights,
            bias: vec![0.0; n],
        };
        self.push(node, op, vec![m, n]);
        if let Some(c) = self.constant(node, 2)? {
            self.add_const(
                node,
                &c.shape,
                c.floats().iter().map(|v| beta * v).collect(),
            )?;
        }
        Ok(())
    }

    fn matmul(&mut self, node: &NodeRef, pos: usize) -> Result<(), CompileError> {
        if pos != 0 {
            return Err(
                node.operand_error("only a constant right operand is supported (x · W, not W · x)")
            );
        }
        let Some(&k) = self.shape.last() else {
            return Err(self.rank_error(node, "at least one axis"));
        };
        let b = self.required(node, 1, "the right operand")?;
        let bv = b.floats();
        let (n, drop_axis) = match b.shape[..] {
            [bk, n] if bk == k => (n, false),
            [bk] if bk == k => (1, true),
            _ => {
                return Err(node.shape_error(format!(
                    "{:?} times a constant of shape {:?}: a [{k}, N] or [{k}] matrix is needed",
                    self.shape, b.shape
                )));
            }
        };
        let weights = (0..n)
            .flat_map(|o| (0..k).map(move |i| (o, i)))
            .map(|(o, i)| bv[i * n + o])
            .collect();
        let mut after = self.shape.clone();
        *after.last_mut().expect("at least one axis") = n;
        self.push(
            node,
            Op::Dense {
                inputs: k,
                outputs: n,
                weights,
                bias: vec![0.0; n],
            },
            after,
        );
        if drop_axis {
            let mut shape = self.shape.clone();
            shape.pop();
            self.reshape(node, shape);
        }
        Ok(())
    }

    /// The constant broadcast to the current shape, left-padded to its rank; checks that
    /// broadcasting does not grow the tensor.
    fn broadcast(&self, node: &NodeRef, shape: &[usize]) -> Result<Vec<usize>, CompileError> {
        let rank = self.shape.len();
        let bad = || {
            node.shape_error(format!(
                "a constant of shape {shape:?} does not broadcast to {:?}",
                self.shape
            ))
        };
        let extra = shape.len().saturating_sub(rank);
        if shape[..extra].iter().any(|&d| d != 1) {
            return Err(bad());
        }
        let mut padded = vec![1; rank - (shape.len() - extra)];
        padded.extend_from_slice(&shape[extra..]);
        if padded
            .iter()
            .zip(&self.shape)
            .any(|(&c, &s)| c != 1 && c != s)
        {
            return Err(bad());
        }
        Ok(padded)
    }

    /// If the constant (already padded) varies only along `axis`, its value per index of it.
    fn per_axis(shape: &[usize], values: &[f64], axis: usize, len: usize) -> Option<Vec<f64>> {
        if shape.iter().enumerate().any(|(i, &d)| i != axis && d != 1) {
            return None;
        }
        Some(if shape[axis] == 1 {
            vec![values[0]; len]
        } else {
            values.to_vec()
        })
    }

    /// The per-output-feature vector of a constant that could fold into the last step, if
    /// the last step is a `Dense` or `Conv2d` and the constant varies only along its outputs.
    fn foldable(&self, shape: &[usize], values: &[f64]) -> Option<Vec<f64>> {
        let last = self.steps.last()?;
        match &last.op {
            Op::Dense { outputs, .. } => {
                Self::per_axis(shape, values, shape.len().checked_sub(1)?, *outputs)
            }
            Op::Conv { out_ch, .. } => Self::per_axis(shape, values, 1, *out_ch),
            _ => None,
        }
    }

    fn add_const(
        &mut self,
        node: &NodeRef,
        shape: &[usize],
        values: Vec<f64>,
    ) -> Result<(), CompileError> {
        let shape = self.broadcast(node, shape)?;
        if let Some(c) = self.foldable(&shape, &values)
            && let Some(Step {
                op: Op::Dense { bias, .. } | Op::Conv { bias, .. },
                ..
            }) = self.steps.last_mut()
        {
            bias.iter_mut().zip(&c).for_each(|(b, c)| *b += c);
            return Ok(());
        }
        self.push(node, Op::AddConst { shape, values }, self.shape.clone());
        Ok(())
    }

    fn mul_const(
        &mut self,
        node: &NodeRef,
        shape: &[usize],
        values: Vec<f64>,
    ) -> Result<(), CompileError> {
        let shape = self.broadcast(node, shape)?;
        if let Some(c) = self.foldable(&shape, &values)
            && let Some(Step {
                op: Op::Dense { weights, bias, .. } | Op::Conv { weights, bias, .. },
                ..
            }) = self.steps.last_mut()
        {
            let per = weights.len() / c.len();
            for (o, &c) in c.iter().enumerate() {
                weights[o * per..(o + 1) * per]
                    .iter_mut()
                    .for_each(|w| *w *= c);
                bias[o] *= c;
            }
            return Ok(());
        }
        self.push(node, Op::MulConst { shape, values }, self.shape.clone());
        Ok(())
    }

    fn conv(&mut self, node: &NodeRef) -> Result<(), CompileError> {
        let w = self.required(node, 1, "the weights")?;
        if w.shape.len() != 4 {
            return Err(node.attribute_error(
                "kernel_shape",
                format!(
                    "a {}-D convolution (weights {:?}); only 2-D is supported",
                    w.shape.len().saturating_sub(2),
                    w.shape
                ),
            ));
        }
        let group = node.int("group", 1);
        if group != 1 {
            return Err(
                node.attribute_error("group", format!("{group}; only group 1 is supported"))
            );
        }
        let [m, c, kh, kw] = w.shape[..] else {
            unreachable!("a rank-4 kernel")
        };
        let [n, ic, h, wd] = self.shape[..] else {
            return Err(self.rank_error(node, "[N, C, H, W]"));
        };
        if ic != c {
            return Err(node.shape_error(format!(
                "input has {ic} channels, the weights {:?} expect {c}",
                w.shape
            )));
        }
        let window = self.window(node, [kh, kw], [h, wd])?;
        let bias = match self.constant(node, 2)? {
            Some(b) if b.shape.iter().product::<usize>() == m => b.floats(),
            Some(b) => {
                return Err(node.shape_error(format!("bias of shape {:?}, {m} expected", b.shape)));
            }
            None => vec![0.0; m],
        };
        let op = Op::Conv {
            out_ch: m,
            in_ch: c,
            kernel: [kh, kw],
            strides: window.strides,
            pads: window.pads,
            weights: w.floats(),
            bias,
        };
        self.push(node, op, vec![n, m, window.out[0], window.out[1]]);
        Ok(())
    }

    fn pool(&mut self, node: &NodeRef) -> Result<(), CompileError> {
        let kernel = node
            .ints("kernel_shape")
            .ok_or_else(|| node.attribute_error("kernel_shape", "missing"))?;
        let &[kh, kw] = kernel else {
            return Err(node.attribute_error(
                "kernel_shape",
                format!("{kernel:?}; only 2-D pooling is supported"),
            ));
        };
        if node.int("ceil_mode", 0) != 0 {
            return Err(node.attribute_error("ceil_mode", "only ceil_mode = 0 is supported"));
        }
        let [n, c, h, w] = self.shape[..] else {
            return Err(self.rank_error(node, "[N, C, H, W]"));
        };
        let positive = |v: i64| usize::try_from(v).ok().filter(|&v| v > 0);
        let (Some(kh), Some(kw)) = (positive(kh), positive(kw)) else {
            return Err(node.attribute_error("kernel_shape", format!("{kernel:?}")));
        };
        let window = self.window(node, [kh, kw], [h, w])?;
        if window.pads[0].max(window.pads[2]) >= kh || window.pads[1].max(window.pads[3]) >= kw {
            return Err(node.attribute_error("pads", "pads must be smaller than the kernel"));
        }
        let (kernel, strides, pads) = ([kh, kw], window.strides, window.pads);
        let op = if node.op() == "MaxPool" {
            Op::MaxPool {
                kernel,
                strides,
                pads,
            }
        } else {
            let count_include_pad = node.int("count_include_pad", 0) != 0;
            Op::AveragePool {
                kernel,
                strides,
                pads,
                count_include_pad,
            }
        };
        self.push(node, op, vec![n, c, window.out[0], window.out[1]]);
        Ok(())
    }

    /// The strides, pads and output size of a 2-D window (Conv, MaxPool, AveragePool).
    fn window(
        &self,
        node: &NodeRef,
        kernel: [usize; 2],
        input: [usize; 2],
    ) -> Result<Window, CompileError> {
        if let Some(ks) = node.ints("kernel_shape")
            && (ks.len() != 2 || ks.iter().zip(kernel).any(|(&a, b)| a != b as i64))
        {
            return Err(node.attribute_error(
                "kernel_shape",
                format!("{ks:?} does not match the kernel {kernel:?}"),
            ));
        }
        if let Some(d) = node.ints("dilations")
            && d.iter().any(|&d| d != 1)
        {
            return Err(node.attribute_error("dilations", format!("{d:?}; only 1 is supported")));
        }
        let strides = match node.ints("strides") {
            None => [1, 1],
            Some(&[a, b]) if a > 0 && b > 0 => [a as usize, b as usize],
            Some(s) => {
                return Err(node.attribute_error("strides", format!("{s:?}; two positive strides")));
            }
        };
        let auto_pad = node.string("auto_pad").unwrap_or_default();
        let pads = match auto_pad.as_str() {
            "" | "NOTSET" => match node.ints("pads") {
                None => [0; 4],
                Some(p) if p.len() == 4 && p.iter().all(|&p| p >= 0) => {
                    [p[0] as usize, p[1] as usize, p[2] as usize, p[3] as usize]
                }
                Some(p) => {
                    return Err(
                        node.attribute_error("pads", format!("{p:?}; four non-negative pads"))
                    );
                }
            },
            "VALID" => [0; 4],
            "SAME_UPPER" | "SAME_LOWER" => {
                let upper = auto_pad == "SAME_UPPER";
                let [t, b] = same_pads(input[0], kernel[0], strides[0], upper);
                let [l, r] = same_pads(input[1], kernel[1], strides[1], upper);
                [t, l, b, r]
            }
            other => {
                return Err(node.attribute_error("auto_pad", format!("unknown value {other:?}")));
            }
        };
        let mut out = [0; 2];
        for a in 0..2 {
            let padded = input[a] + pads[a] + pads[a + 2];
            if padded < kernel[a] {
                return Err(node.shape_error(format!(
                    "kernel {kernel:?} larger than the padded input {input:?} (pads {pads:?})"
                )));
            }
            out[a] = (padded - kernel[a]) / strides[a] + 1;
        }
        Ok(Window { strides, pads, out })
    }

    fn batch_norm(&mut self, node: &NodeRef) -> Result<(), CompileError> {
        if self.opset >= 14 && node.int("training_mode", 0) != 0 {
            return Err(node.attribute_error("training_mode", "only inference (0) is supported"));
        }
        if self.opset < 9 && node.int("spatial", 1) == 0 {
            return Err(node.attribute_error("spatial", "only spatial = 1 is supported"));
        }
        if self.shape.len() < 2 {
            return Err(self.rank_error(node, "[N, C, ...]"));
        }
        let channels = self.shape[1];
        let mut params = vec![];
        for (i, what) in [(1, "scale"), (2, "B"), (3, "input_mean"), (4, "input_var")] {
            let c = self.required(node, i, what)?;
            if c.shape.iter().product::<usize>() != channels {
                return Err(node.shape_error(format!(
                    "{what} has shape {:?}; {channels} channels expected",
                    c.shape
                )));
            }
            params.push(c.floats());
        }
        let eps = f64::from(node.float("epsilon", 1e-5));
        let scale: Vec<f64> = params[0]
            .iter()
            .zip(&params[3])
            .map(|(g, var)| g / (var + eps).sqrt())
            .collect();
        let shift: Vec<f64> = params[1]
            .iter()
            .zip(&params[2])
            .zip(&scale)
            .map(|((b, mean), s)| b - mean * s)
            .collect();
        let mut shape = vec![1; self.shape.len()];
        shape[1] = channels;
        self.mul_const(node, &shape, scale)?;
        self.add_const(node, &shape, shift)
    }

    fn softmax(&mut self, node: &NodeRef) -> Result<(), CompileError> {
        let rank = self.shape.len() as i64;
        let axis = node.int("axis", if self.opset >= 13 { -1 } else { 1 });
        let axis = if axis < 0 { axis + rank } else { axis };
        if !(0..rank).contains(&axis) {
            return Err(
                node.attribute_error("axis", format!("{axis} out of range for rank {rank}"))
            );
        }
        let axis = axis as usize;
        let trailing: usize = self.shape[axis + 1..].iter().product();
        if self.opset >= 13 || trailing == 1 {
            self.push(node, Op::Softmax(axis), self.shape.clone());
            return Ok(());
        }
        // Before opset 13: a softmax over the input coerced to 2-D at `axis`.
        let original = self.shape.clone();
        let (a, b) = original.split_at(axis);
        self.reshape(node, vec![a.iter().product(), b.iter().product()]);
        self.push(node, Op::Softmax(1), self.shape.clone());
        self.reshape(node, original);
        Ok(())
    }
}

struct Window {
    strides: [usize; 2],
    pads: [usize; 4],
    out: [usize; 2],
}

/// `[begin, end]` pads of `auto_pad = SAME_UPPER` (extra at the end) or `SAME_LOWER`.
fn same_pads(input: usize, kernel: usize, stride: usize, upper: bool) -> [usize; 2] {
    let out = input.div_ceil(stride);
    let total = ((out - 1) * stride + kernel).saturating_sub(input);
    let small = total / 2;
    if upper {
        [small, total - small]
    } else {
        [total - small, small]
    }
}

/// ONNX Reshape's target: `0` copies the input's dimension (unless `allow_zero`), `-1` is
/// inferred.
fn resolve_reshape(
    input: &[usize],
    target: &[i64],
    allow_zero: bool,
) -> Result<Vec<usize>, String> {
    let total: usize = input.iter().product();
    let mut infer = None;
    let mut shape = Vec::with_capacity(target.len());
    for (i, &d) in target.iter().enumerate() {
        shape.push(match d {
            -1 if infer.is_none() => {
                infer = Some(i);
                1
            }
            -1 => return Err(format!("{target:?} has two -1")),
            0 if !allow_zero => *input
                .get(i)
                .ok_or_else(|| format!("{target:?}: no dimension {i} to copy"))?,
            d if d > 0 => d as usize,
            d => return Err(format!("{target:?}: dimension {d}")),
        });
    }
    let known: usize = shape.iter().product();
    if let Some(i) = infer {
        if known == 0 || !total.is_multiple_of(known) {
            return Err(format!("{input:?} cannot be reshaped to {target:?}"));
        }
        shape[i] = total / known;
    }
    if shape.iter().product::<usize>() != total || shape.contains(&0) {
        return Err(format!("{input:?} cannot be reshaped to {target:?}"));
    }
    Ok(shape)
}

fn normalise_axes(axes: &[i64], rank: usize) -> Result<Vec<usize>, String> {
    let mut out: Vec<usize> = axes
        .iter()
        .map(|&a| {
            let a = if a < 0 { a + rank as i64 } else { a };
            usize::try_from(a)
                .ok()
                .filter(|&a| a < rank)
                .ok_or(format!("axis {a} out of range"))
        })
        .collect::<Result<_, _>>()?;
    out.sort_unstable();
    if out.windows(2).any(|w| w[0] == w[1]) {
        return Err(format!("axes {axes:?} repeat"));
    }
    Ok(out)
}

fn squeeze(input: &[usize], axes: Option<&[i64]>) -> Result<Vec<usize>, String> {
    let Some(axes) = axes else {
        return Ok(input.iter().copied().filter(|&d| d != 1).collect());
    };
    let axes = normalise_axes(axes, input.len())?;
    if let Some(&a) = axes.iter().find(|&&a| input[a] != 1) {
        return Err(format!("axis {a} of {input:?} is not 1"));
    }
    Ok(input
        .iter()
        .enumerate()
        .filter(|(i, _)| !axes.contains(i))
        .map(|(_, &d)| d)
        .collect())
}

fn unsqueeze(input: &[usize], axes: &[i64]) -> Result<Vec<usize>, String> {
    let rank = input.len() + axes.len();
    let axes = normalise_axes(axes, rank)?;
    let mut rest = input.iter();
    Ok((0..rank)
        .map(|i| {
            if axes.contains(&i) {
                1
            } else {
                *rest.next().expect("rank - axes dims")
            }
        })
        .collect())
}

// ---------------------------------------------------------------------------------------------
// Quantisation

fn quantise(step: Step, frac_bits: u32) -> Result<Layer, CompileError> {
    let q = |what: &'static str, values: &[f64], scale_bits: u32| {
        let scale = (2f64).powi(scale_bits as i32);
        values
            .iter()
            .map(|&v| {
                let r = (v * scale).round();
                // `i64::MAX as f64` is 2^63, itself out of range.
                if r.is_finite() && r.abs() < i64::MAX as f64 {
                    Ok(r as i64)
                } else {
                    Err(CompileError::Overflow {
                        node: step.node.clone(),
                        what,
                        value: v,
                        scale_bits,
                    })
                }
            })
            .collect::<Result<Vec<_>, _>>()
    };
    let (f, f2) = (frac_bits, 2 * frac_bits);
    Ok(match &step.op {
        Op::Dense {
            inputs,
            outputs,
            weights,
            bias,
        } => Layer::Dense {
            inputs: *inputs,
            outputs: *outputs,
            weights: q("weight", weights, f)?,
            bias: q("bias", bias, f2)?,
        },
        Op::Conv {
            out_ch,
            in_ch,
            kernel,
            strides,
            pads,
            weights,
            bias,
        } => Layer::Conv2d {
            out_channels: *out_ch,
            in_channels: *in_ch,
            kernel: *kernel,
            strides: *strides,
            pads: *pads,
            weights: q("weight", weights, f)?,
            bias: q("bias", bias, f2)?,
        },
        Op::Relu => Layer::Relu,
        Op::MaxPool {
            kernel,
            strides,
            pads,
        } => Layer::MaxPool {
            kernel: *kernel,
            strides: *strides,
            pads: *pads,
        },
        Op::AveragePool {
            kernel,
            strides,
            pads,
            count_include_pad,
        } => Layer::AveragePool {
            kernel: *kernel,
            strides: *strides,
            pads: *pads,
            count_include_pad: *count_include_pad,
        },
        Op::Reshape => Layer::Reshape {
            shape: step.after.clone(),
        },
        Op::Transpose(perm) => Layer::Transpose { perm: perm.clone() },
        Op::AddConst { shape, values } => Layer::AddConst {
            shape: shape.clone(),
            values: q("constant", values, f)?,
        },
        Op::MulConst { shape, values } => Layer::MulConst {
            shape: shape.clone(),
            values: q("constant", values, f)?,
        },
        Op::Tanh => Layer::Tanh,
        Op::Sigmoid => Layer::Sigmoid,
        Op::Exp => Layer::Exp,
        Op::Softmax(axis) => Layer::Softmax { axis: *axis },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_pads_put_the_odd_pad_where_onnx_says() {
        // 8 wide, kernel 3, stride 2: out 4, total pad 1.
        assert_eq!(same_pads(8, 3, 2, true), [0, 1]);
        assert_eq!(same_pads(8, 3, 2, false), [1, 0]);
        assert_eq!(same_pads(5, 3, 1, true), [1, 1]);
        assert_eq!(same_pads(4, 1, 1, true), [0, 0]);
    }

    #[test]
    fn reshape_copies_zeros_and_infers_minus_one() {
        assert_eq!(
            resolve_reshape(&[1, 3, 4, 4], &[0, -1], false),
            Ok(vec![1, 48])
        );
        assert_eq!(
            resolve_reshape(&[2, 6], &[3, -1, 2], false),
            Ok(vec![3, 2, 2])
        );
        assert!(resolve_reshape(&[2, 6], &[-1, -1], false).is_err());
        assert!(resolve_reshape(&[2, 6], &[5, -1], false).is_err());
        assert!(resolve_reshape(&[2, 6], &[0, 0], true).is_err());
    }

    #[test]
    fn squeeze_and_unsqueeze_take_negative_axes() {
        assert_eq!(squeeze(&[1, 4, 1], None), Ok(vec![4]));
        assert_eq!(squeeze(&[1, 4, 1], Some(&[-1])), Ok(vec![1, 4]));
        assert!(squeeze(&[1, 4, 1], Some(&[1])).is_err());
        assert_eq!(unsqueeze(&[4], &[0, -1]), Ok(vec![1, 4, 1]));
        assert!(unsqueeze(&[4], &[0, 0]).is_err());
    }

    fn fixture() -> pb::ModelProto {
        let bytes = include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/zk/mlp_tanh_softmax.onnx"
        ));
        tract_onnx::onnx()
            .proto_model_for_read(&mut &bytes[..])
            .expect("a fixture")
    }

    fn graph(m: &mut pb::ModelProto) -> &mut pb::GraphProto {
        m.graph.as_mut().expect("a graph")
    }

    fn node(op: &str, inputs: &[&str], outputs: &[&str]) -> pb::NodeProto {
        pb::NodeProto {
            op_type: op.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn not_a_chain(m: &pb::ModelProto) -> String {
        match compile_proto(m, 12) {
            Err(CompileError::NotAChain(message)) => message,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_fixture_compiles() {
        assert!(compile_proto(&fixture(), 12).is_ok());
    }

    #[test]
    fn fan_outs_extra_outputs_and_stray_nodes_are_not_chains() {
        let mut m = fixture();
        graph(&mut m).node.push(node("Relu", &["h"], &["r"]));
        assert!(
            not_a_chain(&m).contains("`h` is used 2 times"),
            "{}",
            not_a_chain(&m)
        );

        let mut m = fixture();
        let extra = pb::ValueInfoProto {
            name: "t".into(),
            ..Default::default()
        };
        graph(&mut m).output.push(extra);
        assert!(not_a_chain(&m).contains("2 outputs"), "{}", not_a_chain(&m));

        let mut m = fixture();
        graph(&mut m)
            .node
            .push(node("Relu", &["fc1.w"], &["stray"]));
        assert!(
            not_a_chain(&m).contains("off the path"),
            "{}",
            not_a_chain(&m)
        );

        let mut m = fixture();
        graph(&mut m).node[3] = node("Mul", &["z", "z"], &["y"]);
        assert!(
            not_a_chain(&m).contains("`z` is used 2 times"),
            "{}",
            not_a_chain(&m)
        );
    }

    #[test]
    fn the_declared_output_shape_must_agree() {
        let mut m = fixture();
        let Some(pb::type_proto::Value::TensorType(t)) = graph(&mut m).output[0]
            .r#type
            .as_mut()
            .and_then(|t| t.value.as_mut())
        else {
            panic!("a tensor output");
        };
        t.shape.as_mut().expect("a shape").dim[1].value = Some(Dim::DimValue(4));
        let err = compile_proto(&m, 12).unwrap_err();
        assert!(
            err.to_string().contains("inferred [1, 3], declared [1, 4]"),
            "{err}"
        );
    }

    fn lower<'c>(consts: &'c Consts, opset: i64, shape: &[usize]) -> Lower<'c> {
        Lower {
            consts,
            opset,
            shape: shape.to_vec(),
            steps: vec![],
        }
    }

    fn kinds(l: &Lower) -> Vec<String> {
        l.steps.iter().map(|s| format!("{:?}", s.op)).collect()
    }

    #[test]
    fn softmax_before_opset_13_is_over_the_flattened_tail() {
        let mut softmax = node("Softmax", &["a"], &["b"]);
        softmax.attribute.push(pb::AttributeProto {
            name: "axis".into(),
            i: 1,
            ..Default::default()
        });
        let n = NodeRef {
            proto: &softmax,
            label: "s".into(),
        };
        let consts = Consts::new();
        let mut old = lower(&consts, 11, &[1, 2, 3]);
        old.node(&n, 0).unwrap();
        assert_eq!(kinds(&old), ["Reshape", "Softmax(1)", "Reshape"]);
        assert_eq!(old.steps[0].after, [1, 6]);
        assert_eq!(old.shape, [1, 2, 3]);
        let mut new = lower(&consts, 13, &[1, 2, 3]);
        new.node(&n, 0).unwrap();
        assert_eq!(kinds(&new), ["Softmax(1)"]);
        // No axis: 1 before opset 13 (and [1, 3] has nothing after it), -1 from 13.
        let plain = node("Softmax", &["a"], &["b"]);
        let n = NodeRef {
            proto: &plain,
            label: "s".into(),
        };
        let mut old = lower(&consts, 11, &[2, 3]);
        old.node(&n, 0).unwrap();
        let mut new = lower(&consts, 13, &[2, 3, 4]);
        new.node(&n, 0).unwrap();
        assert_eq!(
            (kinds(&old), kinds(&new)),
            (vec!["Softmax(1)".into()], vec!["Softmax(2)".into()])
        );
    }

    #[test]
    fn constants_fold_into_a_dense_only_along_its_outputs() {
        let consts: Consts = [
            (
                "w".to_string(),
                Ok(Const {
                    shape: vec![2, 3],
                    data: Data::Float(vec![1.0; 6]),
                }),
            ),
            (
                "row".to_string(),
                Ok(Const {
                    shape: vec![3],
                    data: Data::Float(vec![1.0, 2.0, 3.0]),
                }),
            ),
            (
                "col".to_string(),
                Ok(Const {
                    shape: vec![2, 1],
                    data: Data::Float(vec![5.0, 6.0]),
                }),
            ),
        ]
        .into_iter()
        .collect();
        let matmul = node("MatMul", &["x", "w"], &["m"]);
        let mul = node("Mul", &["row", "m"], &["p"]);
        let sub = node("Sub", &["col", "p"], &["y"]);
        let mut l = lower(&consts, 13, &[2, 2]);
        for (proto, pos) in [(&matmul, 0), (&mul, 1), (&sub, 1)] {
            l.node(
                &NodeRef {
                    proto,
                    label: proto.op_type.clone(),
                },
                pos,
            )
            .unwrap();
        }
        // Mul by a per-output constant and the −1 of `c − x` fold; the per-row `col` cannot.
        let Op::Dense { weights, bias, .. } = &l.steps[0].op else {
            panic!("{:?}", l.steps)
        };
        assert_eq!(weights, &[-1.0, -1.0, -2.0, -2.0, -3.0, -3.0]);
        assert_eq!(bias, &[0.0; 3]);
        assert_eq!(
            kinds(&l)[1],
            "AddConst { shape: [2, 1], values: [5.0, 6.0] }"
        );
        assert_eq!(l.steps.len(), 2);
    }

    #[test]
    fn bad_frac_bits_and_garbage_are_refused() {
        assert_eq!(compile(&[], 0), Err(CompileError::FracBits(0)));
        assert!(matches!(
            compile(b"\xff\xff\xff not onnx", 8),
            Err(CompileError::Decode(_))
        ));
    }
}
