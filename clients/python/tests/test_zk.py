"""zk_proof: a proved result, its proof fetched and verified again."""
from __future__ import annotations

import base64

import pytest

from ambient_vcp import BadRequestError, Client
from support import WAIT


def test_hash_chain_proof_verifies(client: Client) -> None:
    ranges = {c["circuit"]: (c["n_min"], c["n_max"]) for c in client.circuits()}
    assert ranges["hash_chain"][0] == 1 and ranges["hash_chain"][1] >= 64
    info = client.submit_zk("hash_chain", x=7, n=64).wait(timeout=WAIT)
    assert info.status == "completed", info
    assert info.proof_id
    out = info.output
    assert out["circuit"] == "hash_chain" and out["n"] == 64 and int(out["y"]) > 0
    proof = client.proof(info.proof_id)
    assert proof["task_id"] == info.task_id and proof["proof"] == out["proof"]
    assert client.verify_proof("hash_chain", 64, proof["public_inputs"], proof["proof"])
    # The same proof against other public inputs does not verify.
    other = list(proof["public_inputs"])
    other[2] = str(int(other[2]) + 1)
    assert not client.verify_proof("hash_chain", 64, other, proof["proof"])
    assert base64.b64decode(proof["proof"])
    # The size proved has keys now.
    chain = next(c for c in client.circuits() if c["circuit"] == "hash_chain")
    assert 64 in {i["n"] for i in chain["instances"]}


def test_dot_product_is_exact(client: Client) -> None:
    a = [2**40 + i for i in range(16)]
    b = [-(3**20) + 7 * i for i in range(16)]
    info = client.submit_zk("dot", a=a, b=b).wait(timeout=WAIT)
    assert info.status == "completed", info
    assert info.proof_id
    # The exact sum, as a decimal string: it is beyond 2**53.
    assert info.output["sum"] == str(sum(x * y for x, y in zip(a, b)))
    assert info.output["circuit"] == "dot" and info.output["n"] == 16


def test_unsupported_size_is_refused(client: Client) -> None:
    n_max = next(c["n_max"] for c in client.circuits() if c["circuit"] == "hash_chain")
    with pytest.raises(BadRequestError) as e:
        client.submit_zk("hash_chain", x=7, n=n_max + 1)
    assert e.value.code == "invalid_inputs"
    assert f"from 1 to {n_max}" in str(e.value)
