"""Helpers the tests share (pytest puts this directory on sys.path)."""
from __future__ import annotations

import json
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
TESTDATA = REPO / "clients" / "testdata"
#: Agents the test network runs.
AGENTS = 3
#: Seconds a test waits for a task that should end quickly; generous for a busy 2-core machine.
WAIT = 120


def expected_sum(inputs: object) -> int:
    """What sum.wasm prints for ``inputs``, computed here: the sum of the digit runs of their
    JSON (the coordinator re-serialises the inputs; runs of digits survive that)."""
    return sum(int(d) for d in re.findall(r"[0-9]+", json.dumps(inputs)))
