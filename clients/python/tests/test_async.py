"""AsyncClient and AsyncMqttClient: the same calls, awaited."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

from ambient_vcp import AsyncClient, BadRequestError, ConflictError, TaskFailedError
from support import WAIT, expected_sum


def test_async_rest(network, sum_wasm: bytes, spin_wasm: bytes) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        async with AsyncClient.from_connection(network.connection_path) as client:
            inputs = [{"n": [i, 10 * i]} for i in range(4)]
            tasks = await asyncio.gather(*(client.submit_wasm(sum_wasm, x) for x in inputs))
            infos = await asyncio.gather(*(t.wait(timeout=WAIT) for t in tasks))
            assert [i.output for i in infos] == [{"sum": expected_sum(x)} for x in inputs]

            shards = await client.submit_computation(sum_wasm, [[1], [2], [3]], reduce="sum")
            assert await shards.result(timeout=WAIT) == {"sum": 6}

            with pytest.raises(TaskFailedError) as e:
                await (await client.submit_wasm(spin_wasm, max_execution_time_sec=1)).result(
                    timeout=WAIT)
            assert e.value.code == "out_of_fuel"

            with pytest.raises(BadRequestError) as b:
                await client.submit_wasm(b"junk")
            assert b.value.code == "invalid_wasm"

            waiting = await client.submit_wasm(sum_wasm, require_gpu=True)
            assert (await waiting.cancel()).status == "cancelled"
            with pytest.raises(ConflictError):
                await waiting.cancel()

            zk = await (await client.submit_zk("hash_chain", x=3, n=64)).wait(timeout=WAIT)
            assert zk.proof_id is not None
            proof = await client.proof(zk.proof_id)
            assert await client.verify_proof("hash_chain", 64, proof["public_inputs"],
                                             proof["proof"])

            assert len(await client.wait_for_nodes(3, timeout=10)) >= 3
            assert (await client.health())["status"] == "ok"

    asyncio.run(main())


def test_async_inference_numpy(network) -> None:  # type: ignore[no-untyped-def]
    from test_inference import MODEL, K, X, check

    async def main() -> None:
        async with AsyncClient.from_connection(network.connection_path) as client:
            info = await (await client.submit_inference(MODEL, {"x": X, "k": K})).wait(
                timeout=WAIT)
            check(info.tensors)
            assert isinstance(info.tensors["y"], np.ndarray)

    asyncio.run(main())


def test_async_mqtt(network, sum_wasm: bytes) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        async with AsyncClient.from_connection(network.connection_path) as client:
            async with await client.mqtt() as mq:
                tasks = [await mq.submit_wasm(sum_wasm, {"v": [i, 5]}) for i in range(3)]
                infos = await asyncio.gather(*(t.wait(timeout=WAIT) for t in tasks))
                assert [i.output for i in infos] == [{"sum": i + 5} for i in range(3)]
                bad = await mq.submit_wasm(b"junk")
                with pytest.raises(BadRequestError) as e:
                    await bad.wait(timeout=WAIT)
                assert e.value.code == "invalid_wasm"

    asyncio.run(main())
