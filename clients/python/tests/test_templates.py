"""Templates: listed, rendered with parameters, and submitted from the client."""
from __future__ import annotations

import asyncio

import pytest

from ambient_vcp import AsyncClient, BadRequestError, Client, NotFoundError
from support import WAIT


def pi_hits(n: int) -> int:
    """The π template's count, computed here: point i is splitmix64(i + 1) split in two halves."""
    mask = (1 << 64) - 1
    hits = 0
    for s in range(n):
        z = ((s + 1) * 0x9E3779B97F4A7C15) & mask
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        z ^= z >> 31
        x, y = z >> 32, z & 0xFFFFFFFF
        hits += x * x <= (~(y * y)) & mask
    return hits


def test_templates_are_listed_with_their_parameters(client: Client) -> None:
    by_name = {t["name"]: t for t in client.templates()}
    assert {"pi", "photo-filter", "onnx-mlp", "zk-hash-chain", "federated"} <= set(by_name)
    pi = by_name["pi"]
    assert pi["task_type"] == "computation"
    assert {p["name"] for p in pi["params"]} == {"samples", "shards"}
    assert pi["expected_output"] and pi["source"].startswith("templates/")


def test_submit_template_runs_it(client: Client) -> None:
    body = client.render_template("pi", samples=20000, shards=4)
    assert body["inputs"]["range"] == {"start": 0, "end": 20000, "shards": 4}
    out = client.submit_template("pi", samples=20000, shards=4).result(timeout=WAIT)
    assert out == {"hits": pi_hits(20000), "samples": 20000}


def test_template_errors_are_typed(client: Client) -> None:
    with pytest.raises(NotFoundError) as e:
        client.render_template("no-such-template")
    assert e.value.code == "unknown_template"
    with pytest.raises(BadRequestError) as e2:
        client.render_template("pi", sample=10)
    assert e2.value.code == "invalid_template_param" and "samples" in e2.value.message


def test_async_submit_template(network) -> None:  # type: ignore[no-untyped-def]
    async def main() -> dict:
        async with AsyncClient.from_connection(network.connection_path) as c:
            task = await c.submit_template("pi", samples=1000, shards=2)
            return await task.result(timeout=WAIT)  # type: ignore[no-any-return]

    assert asyncio.run(main()) == {"hits": pi_hits(1000), "samples": 1000}
