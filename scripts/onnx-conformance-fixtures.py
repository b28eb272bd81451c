#!/usr/bin/env python3
"""Writes the agent's ONNX conformance fixtures into tests/onnx-conformance/fixtures/.

    scripts/onnx-conformance --fixtures      # in the pinned venv of scripts/onnx-conformance

Two kinds, each NAME.onnx with NAME.json ({"inputs": {...}, "outputs": {...}}, tensors as
{"dtype", "shape", "data"}, the form of tests/fixtures/onnx/):

- cases of ONNX's backend node tests (`onnx.backend.test.case.node`), copied with onnx's
  expected outputs: the operators tract 0.23.9 answered wrongly without an error, and some that
  we now implement (agent/src/exec/onnx/ops.rs, attention.rs);
- small models built here that use an attribute we refuse (their JSON has inputs only).
"""

from __future__ import annotations

import json
import os
import warnings

import numpy as np

warnings.filterwarnings("ignore")

import onnx  # noqa: E402
import onnx.backend.test.case.node as node_cases  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "onnx-conformance", "fixtures")

NODE_CASES = [
    # Answered wrongly by tract 0.23.9 without an error.
    "test_lstm_reverse",
    "test_gru_reverse",
    "test_simple_rnn_reverse",
    "test_spacetodepth_crd_mode_example",
    "test_swiglu_alpha_expanded",
    # ONNX's own expansion of Attention: tract answered `present_key` under the name of an
    # intermediate value it had optimised into it.
    "test_attention_4d_causal_with_past_and_present_expanded",
    # Refused before, implemented now.
    "test_swiglu_alpha",
    "test_attention_4d_causal_with_past_and_present",
    "test_attention_3d_gqa",
    "test_attention_4d_with_qk_matmul_softcap",
    "test_lppool_1d_default",
    "test_resize_downsample_scales_linear",
]


def tensor(a: np.ndarray) -> dict:
    return {"dtype": str(a.dtype), "shape": list(a.shape), "data": a.astype(np.float64).ravel().tolist()}


def write(name: str, model: onnx.ModelProto, inputs: dict, outputs: dict | None) -> None:
    with open(os.path.join(OUT, f"{name}.onnx"), "wb") as f:
        f.write(model.SerializeToString())
    doc = {"inputs": {k: tensor(v) for k, v in inputs.items()}}
    if outputs is not None:
        doc["outputs"] = {k: tensor(v) for k, v in outputs.items()}
    with open(os.path.join(OUT, f"{name}.json"), "w") as f:
        json.dump(doc, f)
        f.write("\n")


def node_case(name: str, cases: dict) -> None:
    case = cases[name]
    g = case.model.graph
    inits = {i.name for i in g.initializer}
    in_names = [i.name for i in g.input if i.name not in inits]
    ins, outs = case.data_sets[0]
    write(
        name.removeprefix("test_"),
        case.model,
        dict(zip(in_names, ins)),
        {o.name: a for o, a in zip(g.output, outs)},
    )


def model(nodes, inputs, outputs, opset=22, initializers=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def f32(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def rng_inputs(**shapes):
    rng = np.random.default_rng(20261130)
    return {k: rng.standard_normal(v).astype(np.float32) for k, v in shapes.items()}


def built_cases() -> None:
    # LSTM with clip: tract ignores the attribute.
    lstm_inputs = rng_inputs(X=[3, 1, 2], W=[1, 12, 2], R=[1, 12, 3])
    write(
        "refuse_lstm_clip",
        model(
            [helper.make_node("LSTM", ["X", "W", "R"], ["", "Y_h"], hidden_size=3, clip=0.5)],
            [f32("X", [3, 1, 2]), f32("W", [1, 12, 2]), f32("R", [1, 12, 3])],
            [f32("Y_h", [1, 1, 3])],
        ),
        lstm_inputs,
        None,
    )
    # GRU with non-default activations: tract always uses Sigmoid and Tanh.
    gru_inputs = rng_inputs(X=[3, 1, 2], W=[1, 9, 2], R=[1, 9, 3])
    write(
        "refuse_gru_activations",
        model(
            [
                helper.make_node(
                    "GRU", ["X", "W", "R"], ["", "Y_h"], hidden_size=3, activations=["HardSigmoid", "Relu"]
                )
            ],
            [f32("X", [3, 1, 2]), f32("W", [1, 9, 2]), f32("R", [1, 9, 3])],
            [f32("Y_h", [1, 1, 3])],
        ),
        gru_inputs,
        None,
    )
    # Attention with nonpad_kv_seqlen (opset 24).
    att = rng_inputs(Q=[1, 2, 3, 4], K=[1, 2, 3, 4], V=[1, 2, 3, 4])
    lens = helper.make_tensor("lens", TensorProto.INT64, [1], [2])
    write(
        "refuse_attention_nonpad",
        model(
            [helper.make_node("Attention", ["Q", "K", "V", "", "", "", "lens"], ["Y"])],
            [f32("Q", [1, 2, 3, 4]), f32("K", [1, 2, 3, 4]), f32("V", [1, 2, 3, 4])],
            [f32("Y", [1, 2, 3, 4])],
            opset=24,
            initializers=[lens],
        ),
        att,
        None,
    )
    # com.microsoft's contrib Attention shares the name, not the semantics.
    ms = rng_inputs(input=[1, 3, 4])
    w = helper.make_tensor("weights", TensorProto.FLOAT, [4, 12], np.ones(48, dtype=np.float32).tolist())
    contrib = helper.make_node("Attention", ["input", "weights"], ["Y"], domain="com.microsoft", num_heads=1)
    graph = helper.make_graph([contrib], "g", [f32("input", [1, 3, 4])], [f32("Y", [1, 3, 4])], initializer=[w])
    m = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 22), helper.make_opsetid("com.microsoft", 1)]
    )
    write("refuse_attention_contrib", m, ms, None)


def main() -> None:
    os.makedirs(OUT, exist_ok=True)
    cases = {c.name: c for c in node_cases.collect_testcases(None)}
    for name in NODE_CASES:
        node_case(name, cases)
    built_cases()
    print(f"wrote {len(os.listdir(OUT))} files to {os.path.normpath(OUT)}")


if __name__ == "__main__":
    main()
