"""Refusals come back as typed exceptions that carry the API's code, message and status."""
from __future__ import annotations

import socket
import uuid

import numpy as np
import pytest

from ambient_vcp import (
    AmbientError,
    ApiError,
    AuthenticationError,
    BadRequestError,
    Client,
    NotFoundError,
    TransportError,
    UnprocessableError,
)
from ambient_vcp.bodies import wasm_task


def test_invalid_wasm_is_a_bad_request(client: Client) -> None:
    with pytest.raises(BadRequestError) as e:
        client.submit_wasm(b"this is not wasm", {"x": 1})
    err = e.value
    assert (err.status, err.code) == (400, "invalid_wasm")
    assert err.message and isinstance(err, ApiError) and isinstance(err, AmbientError)
    assert str(err).startswith("400 invalid_wasm: ")


def test_unknown_task_type(client: Client) -> None:
    with pytest.raises(BadRequestError) as e:
        client.submit({"task_type": "mining", "inputs": {}})
    assert e.value.code == "unknown_task_type"


def test_require_proof_on_wasm_is_unprocessable(client: Client, sum_wasm: bytes) -> None:
    body = wasm_task(sum_wasm, {"x": 1})
    body["requirements"]["require_proof"] = True
    with pytest.raises(UnprocessableError) as e:
        client.submit(body)
    assert (e.value.status, e.value.code) == (422, "proof_unsupported")


def test_bad_requirements(client: Client, sum_wasm: bytes) -> None:
    with pytest.raises(BadRequestError) as e:
        client.submit_wasm(sum_wasm, {"x": 1}, min_nodes=1000)
    assert e.value.code == "invalid_requirements"


def test_wrong_api_key(network) -> None:  # type: ignore[no-untyped-def]
    with Client(network.connection.api_url, "not-the-key") as bad:
        with pytest.raises(AuthenticationError) as e:
            bad.tasks()
    assert (e.value.status, e.value.code) == (401, "unauthorized")


def test_unknown_task_and_proof(client: Client) -> None:
    with pytest.raises(NotFoundError) as e:
        client.info(str(uuid.uuid4()))
    assert (e.value.status, e.value.code) == (404, "task_not_found")
    with pytest.raises(NotFoundError) as p:
        client.proof(str(uuid.uuid4()))
    assert p.value.code == "proof_not_found"
    with pytest.raises(BadRequestError) as b:
        client.info("not-a-uuid")
    assert b.value.code == "invalid_task_id"


def test_no_coordinator_is_a_transport_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Nothing listens on `port` now.
    with Client(f"http://127.0.0.1:{port}", "key", retries=1) as c:
        with pytest.raises(TransportError):
            c.health()


def test_values_json_cannot_carry_are_refused_before_sending(client: Client) -> None:
    with pytest.raises(ValueError, match="float16"):
        client.submit_inference(b"model", {"x": np.zeros(2, dtype=np.float16)}, inline=True)
    with pytest.raises(ValueError, match="cannot be sent as JSON"):
        client.submit({"task_type": "wasm_execution", "inputs": {"x": float("inf")}})


def test_health_and_nodes(client: Client) -> None:
    assert client.health()["status"] == "ok"
    nodes = client.nodes()
    assert len(nodes) >= 3
    one = client.node(nodes[0]["node_id"])
    assert one["node_id"] == nodes[0]["node_id"]
    rep = client.reputation(nodes[0]["node_id"], limit=5)
    assert "reputation" in rep
    with pytest.raises(NotFoundError) as e:
        client.node("no-such-node")
    assert e.value.code == "node_not_found"


def test_a_refused_submission_names_every_field(client: Client) -> None:
    """The seed's bank consortium example, verbatim: the answer names both fields to fix."""
    task = {
        'task_type': 'federated_learning',
        'inputs': {'model': 'fraud_detection_v1'},
        'requirements': {'min_nodes': 3}
    }
    with pytest.raises(BadRequestError) as e:
        client.submit(task)
    err = e.value
    assert err.code == "invalid_inputs"
    assert [(p["field"], p["problem"]) for p in err.problems] == [
        ("inputs.dataset", "missing"), ("inputs.model", "wrong_type")]
    assert err.problems[1]["example"] == {"type": "logistic"}
    assert "inputs.dataset is missing" in err.message and "inputs.model" in err.message
