"""ONNX inference with numpy tensors in and out, on a model made here with onnx.helper."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
from onnx import TensorProto, checker, helper, numpy_helper

from ambient_vcp import BadRequestError, Blob, Client
from support import WAIT

RNG = np.random.default_rng(15)
W = RNG.standard_normal((3, 2)).astype(np.float32)
B = RNG.standard_normal(2).astype(np.float32)


def model_bytes() -> bytes:
    """y = x·W + b + float(k) (float32 [N, 2]) and best = argmax(y, 1) (int64 [N]), for
    x: float32 [N, 3] and k: int64 [N, 1]."""
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["xw"]),
        helper.make_node("Add", ["xw", "B"], ["xwb"]),
        helper.make_node("Cast", ["k"], ["kf"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["xwb", "kf"], ["y"]),
        helper.make_node("ArgMax", ["y"], ["best"], axis=1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes, "affine",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3]),
         helper.make_tensor_value_info("k", TensorProto.INT64, ["N", 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2]),
         helper.make_tensor_value_info("best", TensorProto.INT64, ["N"])],
        [numpy_helper.from_array(W, "W"), numpy_helper.from_array(B, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    checker.check_model(model)
    return model.SerializeToString()


MODEL = model_bytes()
X = RNG.standard_normal((4, 3)).astype(np.float32)
K = np.array([[0], [1], [-2], [3]], dtype=np.int64)


def check(outputs: dict) -> None:
    expected = X @ W + B + K.astype(np.float32)
    assert set(outputs) == {"y", "best"}
    assert outputs["y"].dtype == np.float32 and outputs["y"].shape == (4, 2)
    np.testing.assert_allclose(outputs["y"], expected, rtol=1e-5, atol=1e-5)
    assert outputs["best"].dtype == np.int64 and outputs["best"].shape == (4,)
    np.testing.assert_array_equal(outputs["best"], expected.argmax(axis=1))


def test_uploaded_model(client: Client, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "affine.onnx"
    path.write_bytes(MODEL)
    info = client.submit_inference(path, {"x": X, "k": K}).wait(timeout=WAIT)
    assert info.status == "completed", info
    check(info.tensors)
    assert info.output["device"] == "cpu"


def test_inline_model_and_a_blob_reused(client: Client) -> None:
    check(client.submit_inference(MODEL, {"x": X, "k": K}, inline=True).wait(timeout=WAIT)
          .raise_for_status().tensors)
    blob = client.upload_blob(MODEL)
    assert blob == Blob(hashlib.sha256(MODEL).hexdigest(), len(MODEL))
    check(client.submit_inference(blob, {"x": X, "k": K}).wait(timeout=WAIT).tensors)
    check(client.submit_inference(None, {"x": X, "k": K}, model_sha256=blob.sha256)
          .wait(timeout=WAIT).tensors)


def test_wrong_input_name_fails_the_task(client: Client) -> None:
    info = client.submit_inference(MODEL, {"nope": X, "k": K}).wait(timeout=WAIT)
    assert info.status == "failed"
    assert info.error_code == "invalid_input", info.error
    with pytest.raises(ValueError, match="no inference outputs"):
        info.tensors


def test_unknown_model_is_refused(client: Client) -> None:
    with pytest.raises(BadRequestError) as e:
        client.submit_inference(None, {"x": X}, model_sha256="0" * 64)
    assert e.value.code == "unknown_model"


def test_nan_and_infinities_travel_both_ways(client: Client) -> None:
    """JSON numbers lack NaN and ±∞; they go in and come back as their names, bit-exact."""
    x = np.array([[np.nan, 1.0, 2.0], [np.inf, -np.inf, 0.5], [1.0, 2.0, 3.0], [0, 0, 0]],
                 dtype=np.float32)
    out = client.submit_inference(MODEL, {"x": x, "k": K}, inline=True).wait(timeout=WAIT)
    y = out.raise_for_status().tensors["y"]
    expected = x @ W + B + K.astype(np.float32)
    assert np.isnan(y[0]).all() and np.isnan(expected[0]).all()
    np.testing.assert_array_equal(np.isinf(y), np.isinf(expected))
    np.testing.assert_allclose(y[2:], expected[2:], rtol=1e-5, atol=1e-5)
