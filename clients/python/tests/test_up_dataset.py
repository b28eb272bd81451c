"""A data scientist's afternoon, with the Python client only, on `ambient up --dataset`: their own
CSV split across the local agents, then a wasm task, an inference with numpy tensors, and a
federated job over the CSV, each to its result.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from ambient_vcp import Client
from conftest import Network, ambient_bin, running_up
from support import AGENTS, WAIT, expected_sum
from test_federated import rows
from test_inference import MODEL, K, X, check

ROWS = 300


@pytest.fixture(scope="module")
def own_data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    base = tmp_path_factory.mktemp("own-data")
    csv = base / "claims.csv"
    csv.write_text(rows(random.Random(7), ROWS))
    with running_up(ambient_bin(), base / "up", "--dataset", f"claims={csv}:target") as net:
        yield net


def test_a_csv_of_ones_own_trains_across_the_local_agents(own_data: Network,
                                                          sum_wasm: bytes) -> None:
    with Client.from_connection(own_data.connection_path) as client:
        # Each agent holds its part of the CSV, and only that.
        held = {}
        for node in client.nodes():
            for d in (node.get("health") or {}).get("datasets") or []:
                held[node["node_id"]] = d
        assert len(held) == AGENTS and all(d["name"] == "claims" for d in held.values()), held
        assert sum(d["rows"] for d in held.values()) == ROWS
        assert max(d["rows"] for d in held.values()) - min(d["rows"] for d in held.values()) <= 1
        parts = sorted(Path(own_data.data_dir, "datasets").glob("agent-*/claims.csv"))
        assert len(parts) == AGENTS and all(p.stat().st_mode & 0o077 == 0 for p in parts)

        inputs = {"numbers": [7, 8, 9]}
        wasm = client.submit_wasm(sum_wasm, inputs).wait(timeout=WAIT).raise_for_status()
        assert wasm.output == {"sum": expected_sum(inputs)}

        check(client.submit_inference(MODEL, {"x": X, "k": K}).wait(timeout=WAIT)
              .raise_for_status().tensors)

        job = client.submit_federated("claims", min_nodes=AGENTS, rounds=3,
                                      eval_csv=rows(random.Random(8), 200), eval_label="target",
                                      seed=5)
        info = job.wait(timeout=WAIT).raise_for_status()
        out = info.output
        assert out["total_rows"] == ROWS
        assert all(r["clients"] == AGENTS for r in out["rounds"])
        assert out["rounds"][-1]["eval_accuracy"] >= 0.85, out["rounds"]
        weights = np.asarray(out["weights"], dtype=np.float32)
        assert weights.shape == (3,) and np.isfinite(weights).all()
