"""Sharded computations: listed shards, a range, reducers, and progress in shards."""
from __future__ import annotations

from ambient_vcp import Client, Range, TaskInfo
from support import WAIT, expected_sum


def test_listed_shards_reduced_by_sum(client: Client, sum_wasm: bytes) -> None:
    shards = [{"n": [1, 2]}, {"n": [30]}, "7 and 8", [100, 200]]
    info = client.submit_computation(sum_wasm, shards, reduce="sum").wait(timeout=WAIT)
    assert info.status == "completed", info
    # The kernel prints {"sum": s} per shard; "sum" adds objects field by field.
    assert info.output == {"sum": sum(expected_sum(s) for s in shards)} == {"sum": 348}
    assert info.progress is not None and info.progress.done == info.progress.total == 4


def test_range_in_shard_order_with_concat(client: Client, sum_wasm: bytes) -> None:
    start, end, n = 10, 1000, 6
    info = client.submit_computation(sum_wasm, range=Range(start, end, n), reduce="concat",
                                     max_execution_time_sec=20).wait(timeout=WAIT)
    assert info.status == "completed", info
    # Each shard gets {"end", "shard", "start"} on stdin; the range is split evenly
    # (README, "computation"), and concat keeps shard order.
    span = end - start
    bounds = [(start + span * k // n, start + span * (k + 1) // n) for k in range(n)]
    assert info.output == [{"sum": s + e + k} for k, (s, e) in enumerate(bounds)]


def test_progress_counts_shards(client: Client, sum_wasm: bytes, capsys) -> None:  # type: ignore[no-untyped-def]
    seen: list[TaskInfo] = []
    shards = [{"i": i} for i in range(12)]
    task = client.submit_computation(sum_wasm, shards, reduce="max")
    info = task.wait(timeout=WAIT, progress=seen.append)
    assert info.output == {"sum": 11}
    reported = [s.progress for s in seen if s.progress is not None]
    assert reported and reported[-1].done == reported[-1].total == 12
    assert all(a.done <= b.done for a, b in zip(reported, reported[1:]))
    # The tqdm bar: drawn on stderr, in shards.
    capsys.readouterr()
    client.submit_computation(sum_wasm, shards[:3], reduce="min").wait(timeout=WAIT,
                                                                       progress=True)
    err = capsys.readouterr().err
    assert "3/3" in err and "shards" in err and "completed" in err, err
