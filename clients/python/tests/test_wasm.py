"""wasm_execution over REST: results, replication, failures, listing, cancel, timeouts."""
from __future__ import annotations

import importlib.util
import uuid

import pytest

from ambient_vcp import (
    Client,
    ConflictError,
    TaskFailedError,
    TaskInfo,
    TaskStatus,
    TaskTimeoutError,
)
from support import TESTDATA, WAIT, expected_sum


def test_committed_modules_are_what_make_wasm_writes() -> None:
    spec = importlib.util.spec_from_file_location("make_wasm", TESTDATA / "make_wasm.py")
    assert spec and spec.loader
    make_wasm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_wasm)
    for name, make in make_wasm.MODULES.items():
        assert (TESTDATA / name).read_bytes() == make(), f"run clients/testdata/make_wasm.py ({name})"


def test_wasm_task_runs_replicated_and_returns_its_output(client: Client, sum_wasm: bytes) -> None:
    inputs = {"numbers": [1, 22, 333, 4444], "note": "and 5"}
    task = client.submit_wasm(sum_wasm, inputs, min_nodes=2, max_execution_time_sec=20)
    assert task.submitted is not None and task.submitted.task_id == task.id
    info = task.wait(timeout=WAIT)
    assert info.status == TaskStatus.COMPLETED, info
    assert info.output == {"sum": expected_sum(inputs)} == {"sum": 4805}
    # Two replicas agree, or, under adaptive replication (docs/ARCHITECTURE.md), one trusted
    # node answered alone.
    assert 1 <= len(set(info.nodes)) <= 2 and set(info.nodes) <= set(info.assigned_nodes)
    assert info.error is None and info.proof_id is None
    assert info.created_at is not None and info.updated_at is not None
    assert info.updated_at >= info.created_at
    # result() is the same output; info() reads the finished task again.
    assert task.result(timeout=WAIT) == {"sum": 4805}
    assert task.info().status == "completed"


def test_module_from_a_file_path(client: Client) -> None:
    info = client.submit_wasm(TESTDATA / "sum.wasm", {"n": [7, 8]}).wait(timeout=WAIT)
    assert info.output == {"sum": 15}


def test_out_of_fuel_fails_with_its_code(client: Client, spin_wasm: bytes) -> None:
    task = client.submit_wasm(spin_wasm, max_execution_time_sec=1)
    info = task.wait(timeout=WAIT)
    assert info.status == TaskStatus.FAILED
    assert info.error_code == "out_of_fuel", info.error
    with pytest.raises(TaskFailedError) as e:
        task.result(timeout=WAIT)
    assert e.value.code == "out_of_fuel"
    assert e.value.task_id == task.id
    assert e.value.info.status == "failed"


def test_same_task_id_is_the_same_task(client: Client, sum_wasm: bytes) -> None:
    task_id = str(uuid.uuid4())
    first = client.submit_wasm(sum_wasm, {"x": 1}, task_id=task_id)
    again = client.submit_wasm(sum_wasm, {"x": 1}, task_id=task_id)
    assert first.id == again.id == task_id
    assert first.wait(timeout=WAIT).output == {"sum": 1}
    listed = [t.task_id for t in client.tasks(limit=1000)]
    assert listed.count(task_id) == 1


def test_listing_filters_by_status(client: Client, sum_wasm: bytes) -> None:
    done = client.submit_wasm(sum_wasm, {"x": 2})
    done.wait(timeout=WAIT)
    completed = client.tasks(status="completed", limit=1000)
    assert done.id in {t.task_id for t in completed}
    assert all(t.status == "completed" for t in completed)
    assert len(client.tasks(limit=1)) == 1


def test_cancel_a_waiting_task_then_cancel_again(client: Client, sum_wasm: bytes) -> None:
    # No node of `ambient up` has a GPU, so this task waits until cancelled.
    task = client.submit_wasm(sum_wasm, {"x": 3}, require_gpu=True)
    with pytest.raises(TaskTimeoutError) as e:
        task.wait(timeout=0.6)
    assert e.value.task_id == task.id
    waiting = task.info()
    assert waiting.status == "pending" and "GPU" in (waiting.status_reason or ""), waiting
    cancelled = task.cancel()
    assert cancelled.status == TaskStatus.CANCELLED
    assert task.wait(timeout=WAIT).status == "cancelled"
    with pytest.raises(ConflictError) as c:
        task.cancel()
    assert (c.value.status, c.value.code) == (409, "task_finished")


def test_progress_callback_sees_each_change(client: Client, sum_wasm: bytes) -> None:
    seen: list[TaskInfo] = []
    info = client.submit_wasm(sum_wasm, {"x": 4}).wait(timeout=WAIT, progress=seen.append)
    assert seen and seen[-1] == info and seen[-1].status == "completed"
    statuses = [s.status for s in seen]
    assert len(statuses) == len(set((s.status, s.status_reason, s.progress) for s in seen))
