"""numpy arrays to and from the API's JSON tensors, ``{"dtype", "shape", "data"}``.

The coordinator carries tensor values as JSON numbers (IEEE doubles), so integers are exact up to
2**53 (larger ones are refused here, before anything is sent); NaN and ±infinity, which JSON
numbers lack, travel as the strings ``"NaN"``, ``"Infinity"`` and ``"-Infinity"``.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Mapping

import numpy as np

__all__ = ["DTYPES", "to_json", "from_json", "tensors_to_json", "tensors_from_json"]

#: The dtypes an ``inference`` task accepts, by wire name.
DTYPES: Mapping[str, "np.dtype[Any]"] = {
    "float32": np.dtype(np.float32),
    "float64": np.dtype(np.float64),
    "int32": np.dtype(np.int32),
    "int64": np.dtype(np.int64),
    "uint8": np.dtype(np.uint8),
}

_EXACT = 2**53


def to_json(array: Any, name: str = "tensor") -> Dict[str, Any]:
    """One tensor as the API takes it. ``array`` is a numpy array (or anything
    :func:`numpy.asarray` takes) of a dtype in :data:`DTYPES`; ``name`` only labels errors.

    Raises:
        ValueError: another dtype, or an integer beyond 2**53.
    """
    arr = np.asarray(array)
    wire = next((k for k, d in DTYPES.items() if d == arr.dtype), None)
    if wire is None:
        raise ValueError(
            f"tensor {name}: dtype {arr.dtype} is not supported; use one of {', '.join(DTYPES)}"
        )
    if arr.dtype == np.int64 and arr.size and int(np.abs(arr).max()) > _EXACT:
        raise ValueError(f"tensor {name}: int64 values beyond 2**53 would lose precision")
    data: list = arr.ravel(order="C").tolist()
    if arr.dtype.kind == "f" and arr.size and not np.isfinite(arr).all():
        data = [v if math.isfinite(v) else _name(v) for v in data]
    return {"dtype": wire, "shape": list(arr.shape), "data": data}


def _name(v: float) -> str:
    """NaN or ±infinity by the name the API takes it under."""
    return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")


def from_json(tensor: Mapping[str, Any], name: str = "tensor") -> "np.ndarray[Any, Any]":
    """A tensor of the API as a numpy array of its dtype and shape."""
    try:
        dtype = DTYPES[tensor["dtype"]]
        shape = tuple(int(d) for d in tensor["shape"])
        data = tensor["data"]
    except (KeyError, TypeError) as e:
        raise ValueError(f"tensor {name}: not a {{dtype, shape, data}} tensor: {e}") from None
    # numpy reads "NaN", "Infinity" and "-Infinity" as the values they name.
    return np.asarray(data, dtype=np.float64).astype(dtype).reshape(shape)


def tensors_to_json(tensors: Mapping[str, Any]) -> Dict[str, Dict[str, Any]]:
    """A name → array mapping as the ``tensors`` of an ``inference`` task's inputs."""
    if not tensors:
        raise ValueError("an inference task needs at least one input tensor")
    return {str(k): to_json(v, str(k)) for k, v in tensors.items()}


def tensors_from_json(tensors: Mapping[str, Any]) -> Dict[str, "np.ndarray[Any, Any]"]:
    """The ``outputs`` of an inference result as name → numpy array."""
    return {k: from_json(v, k) for k, v in tensors.items()}
