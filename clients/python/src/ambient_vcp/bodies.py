"""Task bodies (``TaskSubmission``) built exactly as ``coordinator/openapi.json`` describes them.

Pure functions, shared by the REST, asyncio and MQTT clients: each returns the JSON object to
send. Only what the caller gives goes into ``requirements``; the coordinator fills in the
defaults (``min_nodes`` 1, ``max_execution_time_sec`` 30, no GPU, no proof).
"""
from __future__ import annotations

import base64
import copy
import os
import uuid
from typing import Any, Dict, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

from .tensors import tensors_to_json

__all__ = [
    "Range",
    "BytesOrPath",
    "requirements",
    "with_task_id",
    "wasm_task",
    "computation_task",
    "inference_task",
    "zk_task",
    "federated_task",
    "read_bytes",
]

#: A module or model given as its bytes, or as the path of a file that holds them.
BytesOrPath = Union[bytes, bytearray, memoryview, str, "os.PathLike[str]"]


class Range(NamedTuple):
    """A ``computation`` over the integers ``start..end`` split into ``shards`` parts; each shard
    gets ``{"end", "shard", "start"}`` on stdin."""

    start: int
    end: int
    shards: int


def read_bytes(value: BytesOrPath, what: str) -> bytes:
    """``value``'s bytes: itself, or the content of the file it names."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
    elif isinstance(value, (str, os.PathLike)):
        with open(value, "rb") as f:
            data = f.read()
    else:
        raise TypeError(f"{what}: expected bytes or a file path, not {type(value).__name__}")
    if not data:
        raise ValueError(f"{what} is empty")
    return data


def b64(data: bytes) -> str:
    """Standard, padded base64, as every ``*_base64`` field and ``wasm_module`` take it."""
    return base64.b64encode(data).decode("ascii")


def requirements(
    *,
    min_nodes: Optional[int] = None,
    max_execution_time_sec: Optional[int] = None,
    require_gpu: Optional[bool] = None,
    require_proof: Optional[bool] = None,
) -> Dict[str, Any]:
    """The ``requirements`` object with the fields given (``None``: the coordinator's default)."""
    given = {
        "min_nodes": min_nodes,
        "max_execution_time_sec": max_execution_time_sec,
        "require_gpu": require_gpu,
        "require_proof": require_proof,
    }
    return {k: v for k, v in given.items() if v is not None}


def _task(
    task_type: str,
    inputs: Any,
    reqs: Mapping[str, Any],
    task_id: Optional[str],
    wasm_module: Optional[str] = None,
) -> Dict[str, Any]:
    body: Dict[str, Any] = {"task_type": task_type}
    if wasm_module is not None:
        body["wasm_module"] = wasm_module
    body["inputs"] = inputs
    if reqs:
        body["requirements"] = dict(reqs)
    if task_id is not None:
        body["task_id"] = str(task_id)
    return body


def with_task_id(task: Mapping[str, Any]) -> Dict[str, Any]:
    """A copy of ``task`` with a ``task_id`` (a fresh UUID when it has none).

    The id makes a submission idempotent: a retry after a lost answer, or a QoS 1 redelivery,
    returns the same task instead of creating another, and over MQTT it names the topic that
    answers.
    """
    if not isinstance(task, Mapping):
        raise TypeError(f"a task is a JSON object (a mapping), not {type(task).__name__}")
    body = copy.deepcopy(dict(task))
    if body.get("task_id") is None:
        body["task_id"] = str(uuid.uuid4())
    return body


def wasm_task(
    module: BytesOrPath,
    inputs: Any = None,
    *,
    min_nodes: Optional[int] = 1,
    max_execution_time_sec: Optional[int] = None,
    require_gpu: Optional[bool] = None,
    task_id: Optional[str] = None,
) -> Dict[str, Any]:
    """A ``wasm_execution`` task: a WASI preview1 command module (binary wasm, not WAT) run on
    ``min_nodes`` nodes whose outputs must agree; ``inputs`` reach it as JSON on stdin."""
    return _task(
        "wasm_execution",
        {} if inputs is None else inputs,
        requirements(
            min_nodes=min_nodes,
            max_execution_time_sec=max_execution_time_sec,
            require_gpu=require_gpu,
        ),
        task_id,
        wasm_module=b64(read_bytes(module, "wasm module")),
    )


def computation_task(
    kernel: BytesOrPath,
    shards: Optional[Sequence[Any]] = None,
    *,
    range: Optional[Union[Range, Tuple[int, int, int], Mapping[str, int]]] = None,
    reduce: Optional[str] = None,
    min_nodes: Optional[int] = None,
    max_execution_time_sec: Optional[int] = None,
    require_gpu: Optional[bool] = None,
    task_id: Optional[str] = None,
) -> Dict[str, Any]:
    """A sharded ``computation``: the wasm ``kernel`` runs once per shard, each shard scheduled
    like a wasm task, and the coordinator combines the outputs with ``reduce`` (``"sum"``,
    ``"min"``, ``"max"`` over numbers or field by field over objects of numbers, or
    ``"concat"``, the default). Give either ``shards`` (one stdin value per shard) or ``range``
    (``(start, end, shards)``)."""
    if (shards is None) == (range is None):
        raise ValueError("give exactly one of shards and range")
    inputs: Dict[str, Any] = {"kernel_base64": b64(read_bytes(kernel, "kernel"))}
    if shards is not None:
        inputs["shards"] = list(shards)
    else:
        r = Range(**range) if isinstance(range, Mapping) else Range(*range)  # type: ignore[misc]
        inputs["range"] = {"start": int(r.start), "end": int(r.end), "shards": int(r.shards)}
    if reduce is not None:
        inputs["reduce"] = reduce
    return _task(
        "computation",
        inputs,
        requirements(
            min_nodes=min_nodes,
            max_execution_time_sec=max_execution_time_sec,
            require_gpu=require_gpu,
        ),
        task_id,
    )


def inference_task(
    tensors: Mapping[str, Any],
    *,
    model_sha256: Optional[str] = None,
    model_base64: Optional[str] = None,
    max_execution_time_sec: Optional[int] = None,
    require_gpu: Optional[bool] = None,
    task_id: Optional[str] = None,
) -> Dict[str, Any]:
    """An ``inference`` task: an ONNX model, named by the sha256 of an uploaded blob or inline
    as base64 (exactly one), run on one node over ``tensors`` (name → numpy array)."""
    if (model_sha256 is None) == (model_base64 is None):
        raise ValueError("give exactly one of model_sha256 and model_base64")
    inputs: Dict[str, Any] = {}
    if model_sha256 is not None:
        inputs["model_sha256"] = model_sha256
    else:
        inputs["model_base64"] = model_base64
    inputs["tensors"] = tensors_to_json(tensors)
    return _task(
        "inference",
        inputs,
        requirements(max_execution_time_sec=max_execution_time_sec, require_gpu=require_gpu),
        task_id,
    )


def zk_task(
    circuit: str,
    *,
    max_execution_time_sec: Optional[int] = None,
    task_id: Optional[str] = None,
    **inputs: Any,
) -> Dict[str, Any]:
    """A ``zk_proof`` task for a circuit of ``GET /api/v1/circuits``:
    ``zk_task("hash_chain", x=7, n=64)`` or ``zk_task("dot", a=[16 ints], b=[16 ints])``.

    ``x`` may be an ``int``: it is sent as the decimal string the API takes for field elements.
    """
    body_inputs: Dict[str, Any] = {"circuit": circuit}
    for k, v in inputs.items():
        if k == "x" and isinstance(v, int) and not isinstance(v, bool):
            v = str(v)
        elif k in ("a", "b"):
            v = [int(e) for e in v]
        body_inputs[k] = v
    return _task(
        "zk_proof",
        body_inputs,
        requirements(max_execution_time_sec=max_execution_time_sec),
        task_id,
    )


def federated_task(
    dataset: str,
    *,
    min_nodes: int = 2,
    model: Optional[Mapping[str, Any]] = None,
    rounds: Optional[int] = None,
    local: Optional[Mapping[str, Any]] = None,
    server_lr: Optional[float] = None,
    epsilon: Optional[float] = None,
    delta: Optional[float] = None,
    clip_norm: Optional[float] = None,
    secure_aggregation: Optional[bool] = None,
    round_timeout_sec: Optional[int] = None,
    eval_csv: Optional[str] = None,
    eval_label: Optional[str] = None,
    seed: Optional[int] = None,
    max_execution_time_sec: Optional[int] = None,
    task_id: Optional[str] = None,
) -> Dict[str, Any]:
    """A ``federated_learning`` job over the data set ``dataset`` that nodes hold, with
    ``min_nodes`` (at least 2) clients. Every other field is optional and documented in the
    README ("federated_learning"); ``None`` leaves the coordinator's default. ``local``, when
    given, needs all of ``epochs``, ``batch_size``, ``lr`` and ``l2``. ``eval_csv`` is CSV
    text with a header (the label column ``eval_label`` and the feature columns)."""
    job: Dict[str, Any] = {"dataset": dataset}
    optional = {
        "model": dict(model) if model is not None else None,
        "rounds": rounds,
        "local": dict(local) if local is not None else None,
        "server_lr": server_lr,
        "epsilon": epsilon,
        "delta": delta,
        "clip_norm": clip_norm,
        "secure_aggregation": secure_aggregation,
        "round_timeout_sec": round_timeout_sec,
        "eval_csv": eval_csv,
        "eval_label": eval_label,
        "seed": seed,
    }
    job.update({k: v for k, v in optional.items() if v is not None})
    return _task(
        "federated_learning",
        job,
        requirements(min_nodes=min_nodes, max_execution_time_sec=max_execution_time_sec),
        task_id,
    )
