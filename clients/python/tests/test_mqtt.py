"""Submission over the broker with paho-mqtt, against the same `ambient up`."""
from __future__ import annotations

import pytest

from ambient_vcp import BadRequestError, Client, MqttClient, TaskInfo, TransportError
from support import WAIT, expected_sum


def test_wasm_task_over_mqtt(client: Client, sum_wasm: bytes) -> None:
    inputs = {"numbers": [40, 2, 100]}
    with client.mqtt() as mq:
        task = mq.submit_wasm(sum_wasm, inputs, min_nodes=2)
        seen: list[TaskInfo] = []
        info = task.wait(timeout=WAIT, progress=seen.append)
        assert info.status == "completed", info
        assert info.output == {"sum": expected_sum(inputs)} == {"sum": 142}
        assert seen[0].status in ("pending", "assigned") and seen[-1] == info
        assert task.info() == info
    # The task the broker carried is the one the REST API reports.
    assert client.info(task.id).output == {"sum": 142}


def test_rejection_over_mqtt_is_the_typed_error(client: Client) -> None:
    with client.mqtt() as mq:
        task = mq.submit_wasm(b"not wasm at all", {"x": 1})
        with pytest.raises(BadRequestError) as e:
            task.wait(timeout=WAIT)
    assert e.value.code == "invalid_wasm"
    assert e.value.status is None and e.value.task_id == task.id


def test_zk_over_mqtt(client: Client) -> None:
    with client.mqtt() as mq:
        info = mq.submit_zk("hash_chain", x=12345, n=64).wait(timeout=WAIT)
    assert info.status == "completed" and info.proof_id


def test_wrong_broker_password(network) -> None:  # type: ignore[no-untyped-def]
    c = network.connection
    with pytest.raises(TransportError):
        MqttClient(c.mqtt_host, c.mqtt_port, username=c.mqtt_username, password="wrong",
                   connect_timeout=3)
