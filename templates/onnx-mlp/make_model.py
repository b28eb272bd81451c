#!/usr/bin/env python3
"""Makes the onnx-mlp template's model and its reference output.

    python3 templates/onnx-mlp/make_model.py [OUT_DIR]

Needs the `onnx` and `numpy` packages (scripts/onnx-conformance-requirements.txt pins the
versions that made the committed files: onnx 1.23.2, numpy 2.4.6). Writes into OUT_DIR (default:
this directory):

  mlp.onnx        x[1,4] float32 -> Gemm(4->8) -> Relu -> Gemm(8->3) -> Softmax -> y[1,3]:
                  a small multilayer perceptron with random weights from numpy's PCG64 seeded
                  with 20261201, opset 13, IR version 8 (fixed here, so the bytes depend on the
                  weights alone, not on the onnx version).
  reference.json  {"x": [...], "y": [...]}: the template's default input and the model's output
                  for it, computed here with numpy in float64 from the float32 weights; the
                  template's end-to-end test holds the network's answer to it.
"""
import json
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SEED = 20261201
# The template's default input (templates/onnx-mlp/template.json, param x).
X = [0.5, -1.0, 2.0, 0.25]


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
    rng = np.random.default_rng(SEED)
    w1 = (rng.standard_normal((4, 8)) * 0.5).astype(np.float32)
    b1 = (rng.standard_normal(8) * 0.1).astype(np.float32)
    w2 = (rng.standard_normal((8, 3)) * 0.5).astype(np.float32)
    b2 = (rng.standard_normal(3) * 0.1).astype(np.float32)

    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["x", "w1", "b1"], ["h"]),
            helper.make_node("Relu", ["h"], ["hr"]),
            helper.make_node("Gemm", ["hr", "w2", "b2"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["y"], axis=1),
        ],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"))],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 13)],
        producer_name="ambient-templates/onnx-mlp",
        ir_version=8,
    )
    onnx.checker.check_model(model)
    onnx.save(model, os.path.join(out, "mlp.onnx"))

    # The reference: the same network in float64 from the stored float32 weights.
    x = np.array([X], dtype=np.float64)
    h = np.maximum(x @ w1.astype(np.float64) + b1, 0.0)
    logits = h @ w2.astype(np.float64) + b2
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    y = e / e.sum(axis=1, keepdims=True)
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump({"x": X, "y": [float(v) for v in y[0]]}, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
