#!/usr/bin/env python3
"""Builds the ONNX test fixtures with the `onnx` package and their reference outputs with
`onnxruntime`, into tests/fixtures/onnx/.

    python3 -m venv /tmp/onnx-venv && /tmp/onnx-venv/bin/pip install onnx onnxruntime numpy
    /tmp/onnx-venv/bin/python scripts/make-onnx-fixtures.py [path/to/rapidocr_onnxruntime.whl]

Models:
  mlp.onnx          x[1,4] -> Gemm -> Relu -> Gemm -> Softmax -> y[1,3]
  mlp_dynamic.onnx  the same with a symbolic batch: x[N,4] -> y[N,3]
  cnn.onnx          x[1,1,8,8] -> Conv -> Relu -> MaxPool -> Flatten -> Gemm -> Softmax -> y[1,10]
  unsupported.onnx  uses an operator no runtime knows (com.example.Frobnicate)
  ppocr_cls.onnx    PaddleOCR's pretrained text-direction classifier, as shipped in the
                    rapidocr-onnxruntime wheel (Apache-2.0); copied, not made here.
Each model.onnx gets model.json: {"inputs": {...}, "outputs": {...}} with tensors as
{"dtype", "shape", "data"} from onnxruntime on fixed random inputs.
"""
import json
import os
import sys
import zipfile

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "onnx")
rng = np.random.default_rng(20261125)


def init(name, shape):
    return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.5, name)


def save(model, name):
    onnx.checker.check_model(model)
    onnx.save(model, os.path.join(OUT, name))


def mlp(batch):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 3])
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Gemm", ["r", "w2", "b2"], ["z"], transB=1),
        helper.make_node("Softmax", ["z"], ["y"], axis=1),
    ]
    inits = [init("w1", [8, 4]), init("b1", [8]), init("w2", [3, 8]), init("b2", [3])]
    g = helper.make_graph(nodes, "mlp", [x], [y], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def cnn():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])
    nodes = [
        helper.make_node("Conv", ["x", "k", "kb"], ["c"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "w", "b"], ["z"], transB=1),
        helper.make_node("Softmax", ["z"], ["y"], axis=1),
    ]
    inits = [init("k", [4, 1, 3, 3]), init("kb", [4]), init("w", [10, 64]), init("b", [10])]
    g = helper.make_graph(nodes, "cnn", [x], [y], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def unsupported():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    node = helper.make_node("Frobnicate", ["x"], ["y"], domain="com.example")
    g = helper.make_graph([node], "unsupported", [x], [y])
    return helper.make_model(
        g, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("com.example", 1)]
    )


def tensor_json(a):
    kind = {np.float32: "float32", np.float64: "float64", np.int64: "int64", np.int32: "int32"}
    return {"dtype": kind[a.dtype.type], "shape": list(a.shape), "data": a.ravel().astype(float).tolist()}


def reference(name, feeds):
    sess = ort.InferenceSession(os.path.join(OUT, name), providers=["CPUExecutionProvider"])
    outs = sess.run(None, feeds)
    names = [o.name for o in sess.get_outputs()]
    ref = {
        "inputs": {k: tensor_json(v) for k, v in feeds.items()},
        "outputs": {n: tensor_json(o) for n, o in zip(names, outs)},
    }
    with open(os.path.join(OUT, name.replace(".onnx", ".json")), "w") as f:
        json.dump(ref, f)


def main():
    os.makedirs(OUT, exist_ok=True)
    save(mlp(1), "mlp.onnx")
    reference("mlp.onnx", {"x": rng.standard_normal((1, 4)).astype(np.float32)})
    save(mlp("N"), "mlp_dynamic.onnx")
    reference("mlp_dynamic.onnx", {"x": rng.standard_normal((5, 4)).astype(np.float32)})
    save(cnn(), "cnn.onnx")
    reference("cnn.onnx", {"x": rng.standard_normal((1, 1, 8, 8)).astype(np.float32)})
    onnx.save(unsupported(), os.path.join(OUT, "unsupported.onnx"))
    if len(sys.argv) > 1:
        with zipfile.ZipFile(sys.argv[1]) as whl:
            data = whl.read("rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx")
        with open(os.path.join(OUT, "ppocr_cls.onnx"), "wb") as f:
            f.write(data)
    if os.path.exists(os.path.join(OUT, "ppocr_cls.onnx")):
        img = rng.uniform(-1, 1, (1, 3, 48, 192)).astype(np.float32)
        reference("ppocr_cls.onnx", {"x": img})


if __name__ == "__main__":
    main()
