"""The asyncio clients: :class:`AsyncClient` (REST, on ``httpx.AsyncClient``) and
:class:`AsyncMqttClient`, with the same methods as their blocking twins, awaited."""
from __future__ import annotations

import asyncio
import time
from urllib.parse import quote
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import httpx

from . import bodies
from .bodies import BytesOrPath, Range
from ._client import PathLike
from ._common import (
    DEFAULT_MAX_POLL_INTERVAL,
    DEFAULT_POLL_INTERVAL,
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
    Backoff,
    Blob,
    Settings,
    blob,
    decode,
    encode_json,
    retry_delay,
    should_retry,
    transport_error,
)
from ._errors import TaskTimeoutError
from ._models import Connection, TaskInfo
from ._mqtt import MqttClient, MqttTask
from ._progress import ProgressArg, ProgressDisplay

__all__ = ["AsyncClient", "AsyncTask", "AsyncMqttClient", "AsyncMqttTask"]


class AsyncTask:
    """A submitted task, for asyncio code (see :class:`~ambient_vcp.Task`)."""

    def __init__(self, client: "AsyncClient", task_id: str,
                 submitted: Optional[TaskInfo] = None) -> None:
        self.client = client
        self.id = str(task_id)
        self.submitted = submitted

    def __repr__(self) -> str:
        return f"AsyncTask({self.id!r})"

    async def info(self) -> TaskInfo:
        """The task now."""
        return await self.client.info(self.id)

    async def wait(self, timeout: Optional[float] = None,
                   progress: ProgressArg = False) -> TaskInfo:
        """Polls until the task ends and returns it (see :meth:`ambient_vcp.Task.wait`)."""
        return await self.client.wait(self.id, timeout=timeout, progress=progress)

    async def result(self, timeout: Optional[float] = None,
                     progress: ProgressArg = False) -> Any:
        """Waits, then returns the output; raises :class:`TaskFailedError` unless completed."""
        return (await self.wait(timeout, progress)).raise_for_status().output

    async def cancel(self) -> TaskInfo:
        """Cancels the task; :class:`ConflictError` if it had finished."""
        return await self.client.cancel(self.id)


class AsyncClient:
    """The REST client for asyncio: the constructor and methods of
    :class:`~ambient_vcp.Client`, each a coroutine. Use ``async with``, or ``await
    client.aclose()``."""

    def __init__(
        self,
        api_url: str,
        api_key: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        max_poll_interval: float = DEFAULT_MAX_POLL_INTERVAL,
        connection: Optional[Connection] = None,
        http: Optional[httpx.AsyncClient] = None,
    ) -> None:
        self.settings = Settings(api_url, api_key, timeout, retries, poll_interval,
                                 max_poll_interval)
        self.connection = connection
        self._own_http = http is None
        self._http = http or httpx.AsyncClient(timeout=timeout)

    @classmethod
    def from_connection(
        cls, path: PathLike = "ambient-data/connection.json", **kwargs: Any
    ) -> "AsyncClient":
        """A client for the network a ``connection.json`` describes."""
        conn = Connection.load(path)
        return cls(conn.api_url, conn.api_key, connection=conn, **kwargs)

    async def aclose(self) -> None:
        """Closes the HTTP connections (those of a passed ``http`` client stay open)."""
        if self._own_http:
            await self._http.aclose()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"AsyncClient({self.settings.api_url!r})"

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        content: Optional[bytes] = None,
        params: Optional[Mapping[str, Any]] = None,
        content_type: Optional[str] = None,
    ) -> Any:
        url = self.settings.api_url + path
        headers = self.settings.headers()
        if json_body is not None:
            content = encode_json(json_body)
            content_type = "application/json"
        if content_type:
            headers["Content-Type"] = content_type
        attempt = 0
        while True:
            try:
                resp: Optional[httpx.Response] = await self._http.request(
                    method, url, content=content, params=params, headers=headers
                )
                error: Optional[Exception] = None
            except httpx.HTTPError as e:
                resp, error = None, e
            if attempt < self.settings.retries and should_retry(resp):
                await asyncio.sleep(retry_delay(attempt))
                attempt += 1
                continue
            if resp is None:
                assert error is not None
                raise transport_error(method, url, error) from error
            return decode(resp)

    async def submit(self, task: Mapping[str, Any]) -> AsyncTask:
        """Submits any ``TaskSubmission`` body (see :meth:`ambient_vcp.Client.submit`)."""
        info = TaskInfo.from_json(
            await self._request("POST", "/api/v1/tasks", json_body=bodies.with_task_id(task))
        )
        return AsyncTask(self, info.task_id, info)

    async def submit_wasm(self, module: BytesOrPath, inputs: Any = None, *, min_nodes: int = 1,
                          max_execution_time_sec: Optional[int] = None,
                          require_gpu: Optional[bool] = None,
                          task_id: Optional[str] = None) -> AsyncTask:
        """A ``wasm_execution`` task (see :meth:`ambient_vcp.Client.submit_wasm`)."""
        return await self.submit(bodies.wasm_task(
            module, inputs, min_nodes=min_nodes, max_execution_time_sec=max_execution_time_sec,
            require_gpu=require_gpu, task_id=task_id,
        ))

    async def submit_computation(
        self,
        kernel: BytesOrPath,
        shards: Optional[Sequence[Any]] = None,
        *,
        range: Optional[Union[Range, Tuple[int, int, int], Mapping[str, int]]] = None,
        reduce: Optional[str] = None,
        min_nodes: Optional[int] = None,
        max_execution_time_sec: Optional[int] = None,
        require_gpu: Optional[bool] = None,
        task_id: Optional[str] = None,
    ) -> AsyncTask:
        """A sharded ``computation`` (see :meth:`ambient_vcp.Client.submit_computation`)."""
        return await self.submit(bodies.computation_task(
            kernel, shards, range=range, reduce=reduce, min_nodes=min_nodes,
            max_execution_time_sec=max_execution_time_sec, require_gpu=require_gpu,
            task_id=task_id,
        ))

    async def submit_inference(
        self,
        model: Union[BytesOrPath, Blob, None],
        tensors: Mapping[str, Any],
        *,
        model_sha256: Optional[str] = None,
        inline: bool = False,
        max_execution_time_sec: Optional[int] = None,
        require_gpu: Optional[bool] = None,
        task_id: Optional[str] = None,
    ) -> AsyncTask:
        """An ``inference`` task (see :meth:`ambient_vcp.Client.submit_inference`)."""
        if isinstance(model, Blob):
            model_sha256 = model.sha256
        elif model is not None:
            data = bodies.read_bytes(model, "model")
            if inline:
                return await self.submit(bodies.inference_task(
                    tensors, model_base64=bodies.b64(data),
                    max_execution_time_sec=max_execution_time_sec, require_gpu=require_gpu,
                    task_id=task_id,
                ))
            model_sha256 = (await self.upload_blob(data)).sha256
        return await self.submit(bodies.inference_task(
            tensors, model_sha256=model_sha256, max_execution_time_sec=max_execution_time_sec,
            require_gpu=require_gpu, task_id=task_id,
        ))

    async def submit_zk(self, circuit: str = "hash_chain", *,
                        max_execution_time_sec: Optional[int] = None,
                        task_id: Optional[str] = None, **inputs: Any) -> AsyncTask:
        """A ``zk_proof`` task (see :meth:`ambient_vcp.Client.submit_zk`)."""
        return await self.submit(bodies.zk_task(
            circuit, max_execution_time_sec=max_execution_time_sec, task_id=task_id, **inputs
        ))

    async def submit_federated(self, dataset: str, **job: Any) -> AsyncTask:
        """A ``federated_learning`` job (see :meth:`ambient_vcp.Client.submit_federated`)."""
        return await self.submit(bodies.federated_task(dataset, **job))

    def task(self, task_id: str) -> AsyncTask:
        """A handle on a task submitted earlier (no request is made)."""
        return AsyncTask(self, task_id)

    async def info(self, task_id: str) -> TaskInfo:
        """One of the caller's tasks."""
        return TaskInfo.from_json(await self._request("GET", f"/api/v1/tasks/{task_id}"))

    async def tasks(self, status: Optional[str] = None,
                    limit: Optional[int] = None) -> List[TaskInfo]:
        """The caller's tasks, newest first."""
        params = {k: str(v) for k, v in (("status", status), ("limit", limit)) if v is not None}
        return [TaskInfo.from_json(t)
                for t in await self._request("GET", "/api/v1/tasks", params=params)]

    async def cancel(self, task_id: str) -> TaskInfo:
        """Cancels a task; :class:`ConflictError` (``task_finished``) if it had finished."""
        return TaskInfo.from_json(await self._request("DELETE", f"/api/v1/tasks/{task_id}"))

    async def wait(self, task_id: str, timeout: Optional[float] = None,
                   progress: ProgressArg = False) -> TaskInfo:
        """Polls a task until it ends (see :meth:`ambient_vcp.Task.wait`)."""
        backoff = Backoff(self.settings.poll_interval, self.settings.max_poll_interval, timeout)
        display = ProgressDisplay(progress)
        try:
            while True:
                info = await self.info(task_id)
                changed = display.update(info)
                if info.terminal:
                    return info
                if backoff.expired():
                    raise TaskTimeoutError(
                        f"task {task_id} is still {info.status} after {timeout} s",
                        task_id=str(task_id),
                    )
                await asyncio.sleep(backoff.next_pause(changed))
        finally:
            display.close()

    async def upload_blob(self, data: BytesOrPath) -> Blob:
        """Uploads an artifact (``PUT /api/v1/blobs``)."""
        payload = bodies.read_bytes(data, "blob")
        return blob(await self._request("PUT", "/api/v1/blobs", content=payload,
                                        content_type="application/octet-stream"))

    async def proof(self, proof_id: str) -> Dict[str, Any]:
        """A verified proof with its snarkjs export."""
        return await self._request("GET", f"/api/v1/proofs/{proof_id}")  # type: ignore[no-any-return]

    async def verify_proof(self, circuit: str, n: int, public_inputs: Sequence[str],
                           proof: str) -> bool:
        """Whether ``proof`` verifies against ``public_inputs``."""
        body = {"circuit": circuit, "n": n, "public_inputs": list(public_inputs), "proof": proof}
        return bool((await self._request("POST", "/api/v1/proofs/verify",
                                         json_body=body))["valid"])

    async def templates(self) -> List[Dict[str, Any]]:
        """The coordinator's task templates."""
        return await self._request("GET", "/api/v1/templates")  # type: ignore[no-any-return]

    async def render_template(self, name: str, /, params: Optional[Mapping[str, Any]] = None,
                        **more: Any) -> Dict[str, Any]:
        """Template ``name``'s task body with ``params`` set; nothing is submitted."""
        rendered = await self._request(
            "POST", f"/api/v1/templates/{quote(name, safe='')}/render", json_body={"set": {**(params or {}), **more}})
        return rendered["submission"]  # type: ignore[no-any-return]

    async def submit_template(self, name: str, /, params: Optional[Mapping[str, Any]] = None,
                              **more: Any) -> AsyncTask:
        """Renders template ``name`` with ``params`` and submits it."""
        return await self.submit(await self.render_template(name, params, **more))

    async def circuits(self) -> List[Dict[str, Any]]:
        """The circuits ``zk_proof`` accepts."""
        return await self._request("GET", "/api/v1/circuits")  # type: ignore[no-any-return]

    async def nodes(self) -> List[Dict[str, Any]]:
        """Nodes with state, health and reputation."""
        return await self._request("GET", "/api/v1/nodes")  # type: ignore[no-any-return]

    async def node(self, node_id: str) -> Dict[str, Any]:
        """One node."""
        return await self._request("GET", f"/api/v1/nodes/{node_id}")  # type: ignore[no-any-return]

    async def reputation(self, node_id: str, limit: Optional[int] = None) -> Dict[str, Any]:
        """A node's reputation and recent events."""
        params = {"limit": str(limit)} if limit is not None else None
        return await self._request(  # type: ignore[no-any-return]
            "GET", f"/api/v1/nodes/{node_id}/reputation", params=params
        )

    async def health(self) -> Dict[str, Any]:
        """The coordinator's health."""
        return await self._request("GET", "/api/v1/health")  # type: ignore[no-any-return]

    async def wait_for_nodes(self, count: int, timeout: float = 60.0) -> List[Dict[str, Any]]:
        """Waits until ``count`` nodes are online with health."""
        backoff = Backoff(self.settings.poll_interval, self.settings.max_poll_interval, timeout)
        while True:
            online = [n for n in await self.nodes()
                      if n.get("state") == "online" and n.get("health")]
            if len(online) >= count:
                return online
            if backoff.expired():
                raise TaskTimeoutError(f"{len(online)} of {count} nodes online after {timeout} s")
            await asyncio.sleep(backoff.next_pause(False))

    async def mqtt(self, **kwargs: Any) -> "AsyncMqttClient":
        """An :class:`AsyncMqttClient` on this client's broker, connected."""
        if self.connection is None:
            raise ValueError("this client has no broker details: use "
                             "AsyncClient.from_connection")
        return await AsyncMqttClient.connect(self.connection, **kwargs)


class AsyncMqttTask:
    """A task submitted over MQTT, for asyncio code (see :class:`~ambient_vcp.MqttTask`)."""

    def __init__(self, inner: MqttTask) -> None:
        self._inner = inner
        self.id = inner.id

    def __repr__(self) -> str:
        return f"AsyncMqttTask({self.id!r})"

    def info(self) -> Optional[TaskInfo]:
        """The latest state the coordinator published (``None`` before the first)."""
        return self._inner.info()

    async def wait(self, timeout: Optional[float] = None,
                   progress: ProgressArg = False) -> TaskInfo:
        """Waits for the final status without blocking the event loop."""
        state = self._inner._state
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()

        def listener() -> None:
            loop.call_soon_threadsafe(wake.set)

        with state.cond:
            state.listeners.append(listener)
        deadline = None if timeout is None else time.monotonic() + timeout
        display = ProgressDisplay(progress)
        try:
            while True:
                wake.clear()
                with state.cond:
                    latest, error = state.latest, state.error
                if error is not None:
                    raise error
                if latest is not None:
                    display.update(latest)
                    if latest.terminal:
                        return latest
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TaskTimeoutError(
                        f"no final status for task {self.id} over MQTT after {timeout} s",
                        task_id=self.id,
                    )
                try:
                    await asyncio.wait_for(wake.wait(), left)
                except asyncio.TimeoutError:
                    pass
        finally:
            display.close()
            with state.cond:
                state.listeners.remove(listener)

    async def result(self, timeout: Optional[float] = None,
                     progress: ProgressArg = False) -> Any:
        """Waits, then returns the output; raises :class:`TaskFailedError` unless completed."""
        return (await self.wait(timeout, progress)).raise_for_status().output


class AsyncMqttClient:
    """:class:`~ambient_vcp.MqttClient` for asyncio: make it with ``await
    AsyncMqttClient.connect(connection)`` (or ``await async_client.mqtt()``). paho's network
    thread does the I/O; waits are awaited on the event loop."""

    def __init__(self, inner: MqttClient) -> None:
        self._inner = inner
        self.submitter = inner.submitter

    @classmethod
    async def connect(cls, connection: Connection, **kwargs: Any) -> "AsyncMqttClient":
        """Connects (in a worker thread) to the broker the connection names."""
        inner = await asyncio.to_thread(MqttClient.from_connection, connection, **kwargs)
        return cls(inner)

    async def submit(self, task: Dict[str, Any], timeout: float = 10.0) -> AsyncMqttTask:
        """Publishes a ``TaskSubmission`` body (QoS 1) and returns once the broker acked it."""
        return AsyncMqttTask(await asyncio.to_thread(self._inner.submit, task, timeout))

    async def submit_wasm(self, module: BytesOrPath, inputs: Any = None,
                          **kwargs: Any) -> AsyncMqttTask:
        """A ``wasm_execution`` task."""
        return await self.submit(bodies.wasm_task(module, inputs, **kwargs))

    async def submit_computation(self, kernel: BytesOrPath, shards: Any = None,
                                 **kwargs: Any) -> AsyncMqttTask:
        """A sharded ``computation``."""
        return await self.submit(bodies.computation_task(kernel, shards, **kwargs))

    async def submit_inference(self, model: BytesOrPath, tensors: Dict[str, Any],
                               **kwargs: Any) -> AsyncMqttTask:
        """An ``inference`` task with the model inline."""
        data = bodies.read_bytes(model, "model")
        return await self.submit(bodies.inference_task(tensors, model_base64=bodies.b64(data),
                                                       **kwargs))

    async def submit_zk(self, circuit: str = "hash_chain", **kwargs: Any) -> AsyncMqttTask:
        """A ``zk_proof`` task."""
        return await self.submit(bodies.zk_task(circuit, **kwargs))

    async def submit_federated(self, dataset: str, **job: Any) -> AsyncMqttTask:
        """A ``federated_learning`` job."""
        return await self.submit(bodies.federated_task(dataset, **job))

    async def aclose(self) -> None:
        """Disconnects."""
        await asyncio.to_thread(self._inner.close)

    async def __aenter__(self) -> "AsyncMqttClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()
