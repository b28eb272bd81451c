"""federated_learning on `ambient up`: the job's checks at submission, and training runs on two
extra agents that hold a data set.

`ambient up` gives its own agents no data sets, so the fixture below joins two more agent
processes to the network the way an operator would: `ambient-agent join` with the join token
that `ambient up` writes to connection.json, then `[[datasets]]` in the written configuration.
"""
from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List

import pytest

from ambient_vcp import BadRequestError, Client, TaskInfo, TaskTimeoutError
from support import WAIT

DATASET = "toy_separable"


def rows(rng: random.Random, n: int) -> str:
    """CSV with a header: two features and a 0/1 label that a logistic model separates well
    (label = [f0 + f1/2 + noise > 0])."""
    out = ["f0,f1,target"]
    for _ in range(n):
        a, b = rng.uniform(-2, 2), rng.uniform(-2, 2)
        out.append(f"{a:.4f},{b:.4f},{int(a + 0.5 * b + rng.gauss(0, 0.3) > 0)}")
    return "\n".join(out) + "\n"


RNG = random.Random(15)
TRAIN = [rows(RNG, 200), rows(RNG, 200)]
EVAL_CSV = rows(RNG, 200)


@dataclass
class DataNodes:
    """Agents started for this test file, each holding one part of the data set."""

    node_ids: List[str]


def agent_bin(network) -> Path:  # type: ignore[no-untyped-def]
    if os.environ.get("AMBIENT_AGENT_BIN"):
        return Path(os.environ["AMBIENT_AGENT_BIN"])
    return network.binary.parent / "ambient-agent"


@pytest.fixture(scope="module")
def data_nodes(network, client: Client, tmp_path_factory) -> Iterator[DataNodes]:  # type: ignore[no-untyped-def]
    token = json.loads(network.connection_path.read_text()).get("join_token")
    binary = agent_bin(network)
    if not token:
        pytest.skip("this `ambient up` writes no join_token to connection.json, so no agent "
                    "holding a data set can join it (and `ambient up` gives its own none)")
    if not binary.exists():
        pytest.fail(f"no agent binary at {binary}: build it (`cargo build -p ambient-agent`) or "
                    f"set AMBIENT_AGENT_BIN", pytrace=False)
    base = tmp_path_factory.mktemp("fl-agents")
    procs: List[subprocess.Popen[bytes]] = []
    ids = []
    env = dict(os.environ, RUST_LOG="warn", NO_COLOR="1", AMBIENT_CONTROL_LISTEN="127.0.0.1:0")
    try:
        for i, csv in enumerate(TRAIN, 1):
            data = base / f"part{i}.csv"
            data.write_text(csv)
            config = base / f"agent{i}.toml"
            joined = subprocess.run(
                [str(binary), "join", token, "--config", str(config),
                 "--data-dir", str(base / f"agent{i}"), "--name", f"fl-test-{i}", "--json"],
                capture_output=True, text=True, env=env, timeout=60,
            )
            if joined.returncode != 0:
                pytest.fail(f"ambient-agent join: {joined.stderr[-2000:]}", pytrace=False)
            ids.append(json.loads(joined.stdout.strip().splitlines()[-1])["node_id"])
            text = config.read_text()
            entry = (f'datasets = [{{ name = "{DATASET}", path = {json.dumps(str(data))}, '
                     f'label = "target" }}]')
            text, n = re.subn(r"(?m)^datasets = \[\]$", entry, text)
            assert n == 1, f"no `datasets = []` line in the configuration join wrote:\n{text}"
            config.write_text(text)
            log = open(base / f"agent{i}.log", "wb")
            procs.append(subprocess.Popen([str(binary), "run", "--config", str(config)],
                                          stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, env=env))
        deadline = time.monotonic() + 60
        while True:
            held = {n["node_id"] for n in client.nodes()
                    if n.get("state") == "online" and any(
                        d.get("name") == DATASET
                        for d in ((n.get("health") or {}).get("datasets") or []))}
            if set(ids) <= held:
                break
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                logs = "\n".join((base / f"agent{i}.log").read_text(errors="replace")[-1500:]
                                 for i in (1, 2))
                pytest.fail(f"the joined agents did not come online with {DATASET}:\n{logs}",
                            pytrace=False)
            time.sleep(0.3)
        yield DataNodes(ids)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def test_job_waits_for_nodes_with_its_data_set(client: Client) -> None:
    task = client.submit_federated(
        "breast_cancer", min_nodes=2, rounds=2, epsilon=8.0, delta=1e-5, clip_norm=0.5,
        local={"epochs": 2, "batch_size": 16, "lr": 0.1, "l2": 0.001}, eval_csv=EVAL_CSV,
        eval_label="target", seed=1,
    )
    # No node holds breast_cancer, so the job waits and says why.
    with pytest.raises(TaskTimeoutError):
        task.wait(timeout=1.0)
    info = task.info()
    assert info.task_type == "federated_learning"
    assert info.status == "pending", info
    assert "breast_cancer" in (info.status_reason or ""), info.status_reason
    assert task.cancel().status == "cancelled"


def test_impossible_jobs_are_refused_at_submission(client: Client) -> None:
    with pytest.raises(BadRequestError) as e:
        client.submit_federated(DATASET, min_nodes=1)
    assert e.value.code == "invalid_inputs" and "min_nodes" in e.value.message
    with pytest.raises(BadRequestError) as e:
        client.submit_federated(DATASET, eval_csv="f0,f1\n1,2\n", eval_label="target")
    assert e.value.code == "invalid_inputs"


def test_training_reaches_accuracy_and_counts_rounds(client: Client,
                                                      data_nodes: DataNodes) -> None:
    seen: list[TaskInfo] = []
    task = client.submit_federated(DATASET, min_nodes=2, rounds=4, eval_csv=EVAL_CSV,
                                   eval_label="target", seed=3)
    info = task.wait(timeout=WAIT, progress=seen.append)
    assert info.status == "completed", info
    out = info.output
    assert [r["round"] for r in out["rounds"]] == [1, 2, 3, 4]
    assert all(r["clients"] == 2 for r in out["rounds"])
    assert out["total_rows"] == 400
    assert out["rounds"][-1]["eval_accuracy"] >= 0.85, out["rounds"]
    # Progress counts rounds, round 0 (the feature statistics) included.
    assert info.progress is not None and info.progress.done == info.progress.total == 5
    assert seen[-1] == info


def test_training_under_differential_privacy_keeps_its_budget(client: Client,
                                                              data_nodes: DataNodes,
                                                              capsys) -> None:  # type: ignore[no-untyped-def]
    info = client.submit_federated(
        DATASET, min_nodes=2, rounds=3, epsilon=4.0, delta=1e-5, clip_norm=0.5,
        eval_csv=EVAL_CSV, eval_label="target",
    ).wait(timeout=WAIT, progress=True)
    assert info.status == "completed", info
    privacy = info.output["privacy"]
    assert privacy["epsilon"] == 4.0 and privacy["delta"] == 1e-5
    assert 0 < privacy["epsilon_spent"] <= 4.0 and privacy["sigma"] > 0
    assert "rounds" in capsys.readouterr().err


def test_an_impossible_budget_is_refused(client: Client, data_nodes: DataNodes) -> None:
    with pytest.raises(BadRequestError) as e:
        client.submit_federated(DATASET, min_nodes=2, rounds=1000, epsilon=0.01, delta=1e-9)
    assert e.value.code == "invalid_inputs"
