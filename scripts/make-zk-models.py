#!/usr/bin/env python3
"""Builds the provable-inference test models (issue #17) with the `onnx` package and their
reference outputs with `onnxruntime`, into tests/fixtures/zk/.

    python3 -m venv /tmp/zkvenv
    /tmp/zkvenv/bin/pip install -r scripts/onnx-conformance-requirements.txt
    /tmp/zkvenv/bin/python scripts/make-zk-models.py

Pins: those of scripts/onnx-conformance-requirements.txt (onnx==1.23.2, onnxruntime==1.31.1,
numpy==2.4.6 on Python 3.11); the venv that scripts/onnx-conformance makes
(target/.venv-onnx-conformance) serves as well. Weights and inputs come from one fixed seed,
so a rerun with the same pins rewrites the same files.

Models (x is the input, y the output; opset 13 unless said):
  mlp_relu.onnx          x[1,784] -> Gemm(784->32) -> Relu -> Gemm(32->10) -> y[1,10]
  mlp_tanh_softmax.onnx  x[1,8] -> Gemm(8->16) -> Tanh -> Gemm(16->3) -> Softmax -> y[1,3]
  cnn.onnx               x[1,1,12,12] -> Conv(3x3, 4 channels, bias) -> BatchNormalization
                         -> Relu -> MaxPool(2x2, stride 2) -> Flatten -> Gemm(100->10) -> y[1,10]
  mlp_matmul_add.onnx    x[N,8] -> MatMul -> Add -> Sigmoid -> MatMul -> Add -> y[N,4]
                         (symbolic batch N; the reference input has N = 1)
  ops_mix.onnx           x[1,3,8,8] -> Sub, Div (per-channel normalisation) -> Conv(SAME_UPPER,
                         stride 2, no bias) -> Mul, Add (per channel) -> Relu -> AveragePool(pads,
                         count_include_pad 0) -> Transpose -> Reshape([0,-1]) -> Unsqueeze ->
                         Squeeze -> MatMul -> Identity -> Mul -> Exp -> Softmax(axis 1) -> y[1,6]
                         (opset 11: Softmax on the coerced 2-D view, Squeeze/Unsqueeze axes as
                         attributes)
  unsupported_ops.onnx   x[1,4] -> Gemm -> Erf -> LeakyRelu -> y[1,4] (operators no proof covers)
  conv_group2.onnx       x[1,2,6,6] -> Conv(group 2) -> y[1,2,4,4] (an attribute no proof covers)
Each model.onnx gets model.json: {"inputs": {...}, "outputs": {...}} with tensors as
{"dtype", "shape", "data"}, from onnxruntime on a fixed random input in the model's natural
range: uniform [0, 1) for the 784-input MLP (an MNIST-like image), standard normal otherwise.
"""
import json
import os

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "zk")
rng = np.random.default_rng(20260417)


def const(name, array):
    return numpy_helper.from_array(np.asarray(array, dtype=np.float32), name)


def linear(prefix, fan_in, fan_out):
    """A Gemm's (transB=1) weight [out, in] and bias [out], initialised as torch.nn.Linear is:
    uniform in +-1/sqrt(fan_in)."""
    bound = 1.0 / np.sqrt(fan_in)
    w = rng.uniform(-bound, bound, (fan_out, fan_in))
    b = rng.uniform(-bound, bound, (fan_out,))
    return [const(prefix + "w", w), const(prefix + "b", b)]


def model(nodes, name, x, y, inits, opset=13):
    g = helper.make_graph(nodes, name, [x], [y], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8  # onnx 1.23 would write 11, which older runtimes (and ezkl's tract) refuse
    m.producer_name = "ambient-vcp scripts/make-zk-models.py"
    return m


def io(x_shape, y_shape):
    return (
        helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape),
        helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape),
    )


def mlp_relu():
    x, y = io([1, 784], [1, 10])
    nodes = [
        helper.make_node("Gemm", ["x", "fc1.w", "fc1.b"], ["h"], transB=1),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Gemm", ["r", "fc2.w", "fc2.b"], ["y"], transB=1),
    ]
    inits = linear("fc1.", 784, 32) + linear("fc2.", 32, 10)
    return model(nodes, "mlp_relu", x, y, inits)


def mlp_tanh_softmax():
    x, y = io([1, 8], [1, 3])
    nodes = [
        helper.make_node("Gemm", ["x", "fc1.w", "fc1.b"], ["h"], transB=1),
        helper.make_node("Tanh", ["h"], ["t"]),
        helper.make_node("Gemm", ["t", "fc2.w", "fc2.b"], ["z"], transB=1),
        helper.make_node("Softmax", ["z"], ["y"]),
    ]
    inits = linear("fc1.", 8, 16) + linear("fc2.", 16, 3)
    return model(nodes, "mlp_tanh_softmax", x, y, inits)


def cnn():
    x, y = io([1, 1, 12, 12], [1, 10])
    bound = 1.0 / np.sqrt(9)
    inits = [
        const("conv.w", rng.uniform(-bound, bound, (4, 1, 3, 3))),
        const("conv.b", rng.uniform(-bound, bound, (4,))),
        const("bn.gamma", rng.uniform(0.5, 1.5, (4,))),
        const("bn.beta", rng.uniform(-0.5, 0.5, (4,))),
        const("bn.mean", rng.uniform(-0.3, 0.3, (4,))),
        const("bn.var", rng.uniform(0.2, 1.5, (4,))),
    ] + linear("fc.", 100, 10)
    nodes = [
        helper.make_node("Conv", ["x", "conv.w", "conv.b"], ["c"], kernel_shape=[3, 3]),
        helper.make_node(
            "BatchNormalization",
            ["c", "bn.gamma", "bn.beta", "bn.mean", "bn.var"],
            ["n"],
            epsilon=1e-5,
        ),
        helper.make_node("Relu", ["n"], ["r"]),
        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "fc.w", "fc.b"], ["y"], transB=1),
    ]
    return model(nodes, "cnn", x, y, inits)


def mlp_matmul_add():
    x, y = io(["N", 8], ["N", 4])
    w1, b1 = linear("l1.", 8, 16)
    w2, b2 = linear("l2.", 16, 4)
    # MatMul's right operand is [in, out]: the transpose of the Linear weight.
    inits = [
        const("l1.w", numpy_helper.to_array(w1).T),
        b1,
        const("l2.w", numpy_helper.to_array(w2).T),
        b2,
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "l1.w"], ["m1"]),
        helper.make_node("Add", ["m1", "l1.b"], ["a1"]),
        helper.make_node("Sigmoid", ["a1"], ["s"]),
        helper.make_node("MatMul", ["s", "l2.w"], ["m2"]),
        helper.make_node("Add", ["l2.b", "m2"], ["y"]),
    ]
    return model(nodes, "mlp_matmul_add", x, y, inits)


def ops_mix():
    x, y = io([1, 3, 8, 8], [1, 6])
    inits = [
        const("mean", rng.uniform(-0.2, 0.2, (3, 1, 1))),
        const("std", [2.0]),
        const("conv.w", rng.uniform(-0.4, 0.4, (4, 3, 3, 3))),
        const("scale", rng.uniform(0.5, 1.5, (1, 4, 1, 1))),
        const("shift", rng.uniform(-0.2, 0.2, (4, 1, 1))),
        numpy_helper.from_array(np.array([0, -1], dtype=np.int64), "shape"),
        const("fc.w", rng.uniform(-0.25, 0.25, (36, 6))),
        const("half", 0.5),
    ]
    nodes = [
        helper.make_node("Sub", ["x", "mean"], ["s"]),
        helper.make_node("Div", ["s", "std"], ["d"]),
        helper.make_node(
            "Conv", ["d", "conv.w"], ["c"], kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER"
        ),
        helper.make_node("Mul", ["scale", "c"], ["cm"]),
        helper.make_node("Add", ["cm", "shift"], ["ca"]),
        helper.make_node("Relu", ["ca"], ["r"]),
        helper.make_node(
            "AveragePool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2], pads=[1, 1, 1, 1]
        ),
        helper.make_node("Transpose", ["p"], ["t"], perm=[0, 2, 3, 1]),
        helper.make_node("Reshape", ["t", "shape"], ["f"]),
        helper.make_node("Unsqueeze", ["f"], ["u"], axes=[1]),
        helper.make_node("Squeeze", ["u"], ["q"], axes=[1]),
        helper.make_node("MatMul", ["q", "fc.w"], ["m"]),
        helper.make_node("Identity", ["m"], ["i"]),
        helper.make_node("Mul", ["i", "half"], ["h"]),
        helper.make_node("Exp", ["h"], ["e"]),
        helper.make_node("Softmax", ["e"], ["y"], axis=1),
    ]
    return model(nodes, "ops_mix", x, y, inits, opset=11)


def unsupported_ops():
    x, y = io([1, 4], [1, 4])
    nodes = [
        helper.make_node("Gemm", ["x", "fc.w", "fc.b"], ["h"], transB=1),
        helper.make_node("Erf", ["h"], ["e"]),
        helper.make_node("LeakyRelu", ["e"], ["y"], alpha=0.1),
    ]
    return model(nodes, "unsupported_ops", x, y, linear("fc.", 4, 4))


def conv_group2():
    x, y = io([1, 2, 6, 6], [1, 2, 4, 4])
    inits = [const("conv.w", rng.uniform(-0.3, 0.3, (2, 1, 3, 3)))]
    nodes = [helper.make_node("Conv", ["x", "conv.w"], ["y"], kernel_shape=[3, 3], group=2)]
    return model(nodes, "conv_group2", x, y, inits)


def tensor_json(a):
    kind = {np.float32: "float32", np.float64: "float64", np.int64: "int64", np.int32: "int32"}
    return {"dtype": kind[a.dtype.type], "shape": list(a.shape), "data": a.ravel().astype(float).tolist()}


def save(m, name, x):
    onnx.checker.check_model(m, full_check=True)
    path = os.path.join(OUT, name)
    onnx.save(m, path)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    feeds = {"x": x.astype(np.float32)}
    outs = sess.run(None, feeds)
    names = [o.name for o in sess.get_outputs()]
    ref = {
        "inputs": {k: tensor_json(v) for k, v in feeds.items()},
        "outputs": {n: tensor_json(o) for n, o in zip(names, outs)},
    }
    with open(path.replace(".onnx", ".json"), "w") as f:
        json.dump(ref, f)


README = """# Provable-inference fixtures

Made by `scripts/make-zk-models.py` (the `onnx` pip package builds the models from numpy random
weights with a fixed seed; `onnxruntime` from pip computes the reference output in each
`*.json`, on a fixed random input). The ONNX front end of `ambient-zk` (`zk/src/nn/onnx.rs`,
feature `onnx`) compiles them into fixed-point programs; `zk/tests/onnx.rs` checks those
programs against the references. An ezkl benchmark uses the same files.

| model | graph | input |
|---|---|---|
| `mlp_relu.onnx` | x[1,784] → Gemm(784→32) → Relu → Gemm(32→10) → y[1,10]; torch-Linear-like weights (uniform ±1/√fan_in) | uniform [0, 1) (MNIST-like) |
| `mlp_tanh_softmax.onnx` | x[1,8] → Gemm(8→16) → Tanh → Gemm(16→3) → Softmax → y[1,3] | standard normal |
| `cnn.onnx` | x[1,1,12,12] → Conv(3×3, 4 channels, bias) → BatchNormalization → Relu → MaxPool(2×2, stride 2) → Flatten → Gemm(100→10) → y[1,10] | standard normal |
| `mlp_matmul_add.onnx` | x[N,8] → MatMul → Add → Sigmoid → MatMul → Add → y[N,4], symbolic batch `N` | standard normal, N = 1 |
| `ops_mix.onnx` | opset 11: x[1,3,8,8] → Sub, Div → Conv(SAME_UPPER, stride 2) → Mul, Add → Relu → AveragePool(padded) → Transpose → Reshape([0,-1]) → Unsqueeze → Squeeze → MatMul → Identity → Mul → Exp → Softmax → y[1,6] | standard normal |
| `unsupported_ops.onnx` | x[1,4] → Gemm → Erf → LeakyRelu → y[1,4]: operators no proof covers | standard normal |
| `conv_group2.onnx` | x[1,2,6,6] → Conv(group 2) → y[1,2,4,4]: an attribute no proof covers | standard normal |

Each `model.json` is `{"inputs": {"x": T}, "outputs": {"y": T}}` with `T` =
`{"dtype": "float32", "shape": [...], "data": [...]}` (row-major), as in `tests/fixtures/onnx/`.
"""


def main():
    os.makedirs(OUT, exist_ok=True)
    save(mlp_relu(), "mlp_relu.onnx", rng.uniform(0.0, 1.0, (1, 784)))
    save(mlp_tanh_softmax(), "mlp_tanh_softmax.onnx", rng.standard_normal((1, 8)))
    save(cnn(), "cnn.onnx", rng.standard_normal((1, 1, 12, 12)))
    save(mlp_matmul_add(), "mlp_matmul_add.onnx", rng.standard_normal((1, 8)))
    save(ops_mix(), "ops_mix.onnx", rng.standard_normal((1, 3, 8, 8)))
    save(unsupported_ops(), "unsupported_ops.onnx", rng.standard_normal((1, 4)))
    save(conv_group2(), "conv_group2.onnx", rng.standard_normal((1, 2, 6, 6)))
    with open(os.path.join(OUT, "README.md"), "w") as f:
        f.write(README)


if __name__ == "__main__":
    main()
