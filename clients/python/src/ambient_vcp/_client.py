"""The blocking REST client: :class:`Client` and the :class:`Task` handles it returns."""
from __future__ import annotations

import os
import time
from urllib.parse import quote
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import httpx

from . import bodies
from .bodies import BytesOrPath, Range
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
from ._mqtt import MqttClient
from ._progress import ProgressArg, ProgressDisplay

__all__ = ["Client", "Task"]

PathLike = Union[str, "os.PathLike[str]"]


class Task:
    """A submitted task: a handle that reads, waits for and cancels it.

    ``submitted`` is the task as the coordinator answered the submission (status ``pending``
    mostly).
    """

    def __init__(self, client: "Client", task_id: str, submitted: Optional[TaskInfo] = None):
        self.client = client
        self.id = str(task_id)
        self.submitted = submitted

    def __repr__(self) -> str:
        return f"Task({self.id!r})"

    def info(self) -> TaskInfo:
        """The task now (``GET /api/v1/tasks/{id}``)."""
        return self.client.info(self.id)

    def wait(self, timeout: Optional[float] = None, progress: ProgressArg = False) -> TaskInfo:
        """Polls until the task ends and returns it, whatever its final status: check
        ``.status``, or call ``.raise_for_status()``.

        Args:
            timeout: seconds to wait at most (``None``: no limit).
            progress: ``True`` for a tqdm bar on stderr (shards, rounds), or a function called
                with each new state.

        Raises:
            TaskTimeoutError: ``timeout`` passed first; the task goes on.
        """
        return self.client.wait(self.id, timeout=timeout, progress=progress)

    def result(self, timeout: Optional[float] = None, progress: ProgressArg = False) -> Any:
        """Waits, then returns the result's ``output``.

        Raises:
            TaskFailedError: the task failed, expired or was cancelled.
            TaskTimeoutError: ``timeout`` passed first.
        """
        return self.wait(timeout, progress).raise_for_status().output

    def cancel(self) -> TaskInfo:
        """Cancels the task (``DELETE /api/v1/tasks/{id}``) and returns it, ``cancelled``.

        Raises:
            ConflictError: it had already finished (``task_finished``).
        """
        return self.client.cancel(self.id)


class Client:
    """A blocking client of a coordinator's REST API.

    ::

        client = Client.from_connection("ambient-data/connection.json")
        task = client.submit_wasm(open("sum.wasm", "rb").read(), {"numbers": [1, 2, 3]})
        print(task.wait().output)   # {'sum': 6}

    Every submission carries a ``task_id`` (a fresh UUID unless the body has one), so the
    client retries a request that got no answer, or ``503``, up to ``retries`` times without
    risk of submitting twice. Use it as a context manager, or call :meth:`close`.

    Args:
        api_url: the coordinator's base URL, such as ``http://127.0.0.1:8080``.
        api_key: a submitter's API key.
        timeout: seconds per HTTP request.
        retries: extra tries of a request that got no answer or ``503``.
        poll_interval, max_poll_interval: the first and the longest pause between two polls
            of a waiting task, in seconds.
        connection: the broker's address and credentials, for :meth:`mqtt` (set by
            :meth:`from_connection`).
        http: an ``httpx.Client`` to use instead of the client's own (proxies, TLS settings).
    """

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
        http: Optional[httpx.Client] = None,
    ) -> None:
        self.settings = Settings(api_url, api_key, timeout, retries, poll_interval,
                                 max_poll_interval)
        self.connection = connection
        self._own_http = http is None
        self._http = http or httpx.Client(timeout=timeout)

    @classmethod
    def from_connection(
        cls, path: PathLike = "ambient-data/connection.json", **kwargs: Any
    ) -> "Client":
        """A client for the network described by a ``connection.json`` (written by
        ``ambient up`` in its data directory); ``kwargs`` go to the constructor."""
        conn = Connection.load(path)
        return cls(conn.api_url, conn.api_key, connection=conn, **kwargs)

    def close(self) -> None:
        """Closes the HTTP connections (those of a passed ``http`` client stay open)."""
        if self._own_http:
            self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.settings.api_url!r})"

    # -- transport ---------------------------------------------------------------------------

    def _request(
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
                resp: Optional[httpx.Response] = self._http.request(
                    method, url, content=content, params=params, headers=headers
                )
                error: Optional[Exception] = None
            except httpx.HTTPError as e:
                resp, error = None, e
            if attempt < self.settings.retries and should_retry(resp):
                time.sleep(retry_delay(attempt))
                attempt += 1
                continue
            if resp is None:
                assert error is not None
                raise transport_error(method, url, error) from error
            return decode(resp)

    # -- tasks -------------------------------------------------------------------------------

    def submit(self, task: Mapping[str, Any]) -> Task:
        """Submits any ``TaskSubmission`` body (``POST /api/v1/tasks``), given as a dict, and
        returns its handle. A ``task_id`` is added when the body has none.

        Raises:
            BadRequestError, UnprocessableError, ConflictError, PayloadTooLargeError,
            AuthenticationError: the coordinator refused it (see ``.code``).
        """
        info = TaskInfo.from_json(
            self._request("POST", "/api/v1/tasks", json_body=bodies.with_task_id(task))
        )
        return Task(self, info.task_id, info)

    def submit_wasm(
        self,
        module: BytesOrPath,
        inputs: Any = None,
        *,
        min_nodes: int = 1,
        max_execution_time_sec: Optional[int] = None,
        require_gpu: Optional[bool] = None,
        task_id: Optional[str] = None,
    ) -> Task:
        """Submits a ``wasm_execution`` task: ``module`` (binary wasm, or the path of a
        ``.wasm`` file) runs on ``min_nodes`` nodes, which must agree, with ``inputs`` as JSON
        on stdin. Its output is its stdout parsed as JSON (a string when it is not JSON)."""
        return self.submit(bodies.wasm_task(
            module, inputs, min_nodes=min_nodes, max_execution_time_sec=max_execution_time_sec,
            require_gpu=require_gpu, task_id=task_id,
        ))

    def submit_computation(
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
    ) -> Task:
        """Submits a sharded ``computation``: ``kernel`` runs once per shard (``shards``: one
        stdin value each, or ``range=(start, end, count)``), and ``reduce`` (``"sum"``,
        ``"min"``, ``"max"``, ``"concat"``) combines the outputs. ``.progress`` counts shards."""
        return self.submit(bodies.computation_task(
            kernel, shards, range=range, reduce=reduce, min_nodes=min_nodes,
            max_execution_time_sec=max_execution_time_sec, require_gpu=require_gpu,
            task_id=task_id,
        ))

    def submit_inference(
        self,
        model: Union[BytesOrPath, Blob, None],
        tensors: Mapping[str, Any],
        *,
        model_sha256: Optional[str] = None,
        inline: bool = False,
        max_execution_time_sec: Optional[int] = None,
        require_gpu: Optional[bool] = None,
        task_id: Optional[str] = None,
    ) -> Task:
        """Submits an ``inference`` task: an ONNX model run on one node over ``tensors``
        (input name → numpy array of float32, float64, int32, int64 or uint8).

        ``model`` is the model's bytes or file path, which is uploaded first
        (``PUT /api/v1/blobs``, stored by content, so a second upload costs nothing) unless
        ``inline`` (sent base64 inside the task), or a :class:`Blob` already uploaded; or pass
        ``None`` and ``model_sha256``. Read the outputs as numpy arrays with
        ``info.tensors``."""
        if isinstance(model, Blob):
            model_sha256 = model.sha256
        elif model is not None:
            data = bodies.read_bytes(model, "model")
            if inline:
                return self.submit(bodies.inference_task(
                    tensors, model_base64=bodies.b64(data),
                    max_execution_time_sec=max_execution_time_sec, require_gpu=require_gpu,
                    task_id=task_id,
                ))
            model_sha256 = self.upload_blob(data).sha256
        return self.submit(bodies.inference_task(
            tensors, model_sha256=model_sha256, max_execution_time_sec=max_execution_time_sec,
            require_gpu=require_gpu, task_id=task_id,
        ))

    def submit_zk(
        self,
        circuit: str = "hash_chain",
        *,
        max_execution_time_sec: Optional[int] = None,
        task_id: Optional[str] = None,
        **inputs: Any,
    ) -> Task:
        """Submits a ``zk_proof`` task: ``submit_zk("hash_chain", x=7, n=64)`` or
        ``submit_zk("dot", a=[...16], b=[...16])``. The completed task's ``proof_id`` names the
        verified Groth16 proof (:meth:`proof`)."""
        return self.submit(bodies.zk_task(
            circuit, max_execution_time_sec=max_execution_time_sec, task_id=task_id, **inputs
        ))

    def submit_federated(self, dataset: str, **job: Any) -> Task:
        """Submits a ``federated_learning`` job over the data set ``dataset`` held by the
        nodes; ``job`` takes ``min_nodes`` (clients, default 2), ``model``, ``rounds``,
        ``local``, ``server_lr``, ``epsilon``, ``delta``, ``clip_norm``,
        ``secure_aggregation``, ``round_timeout_sec``, ``eval_csv``, ``eval_label``, ``seed``,
        ``max_execution_time_sec`` and ``task_id`` (README, "federated_learning").
        ``.progress`` counts rounds."""
        return self.submit(bodies.federated_task(dataset, **job))

    def task(self, task_id: str) -> Task:
        """A handle on a task submitted earlier (no request is made)."""
        return Task(self, task_id)

    def info(self, task_id: str) -> TaskInfo:
        """One of the caller's tasks (``GET /api/v1/tasks/{id}``).

        Raises:
            NotFoundError: no such task of this submitter (``task_not_found``).
        """
        return TaskInfo.from_json(self._request("GET", f"/api/v1/tasks/{task_id}"))

    def tasks(self, status: Optional[str] = None, limit: Optional[int] = None) -> List[TaskInfo]:
        """The caller's tasks, newest first (``GET /api/v1/tasks``); ``limit`` 1 to 1000
        (default 100)."""
        params = {k: str(v) for k, v in (("status", status), ("limit", limit)) if v is not None}
        return [TaskInfo.from_json(t) for t in self._request("GET", "/api/v1/tasks",
                                                              params=params)]

    def cancel(self, task_id: str) -> TaskInfo:
        """Cancels a task (``DELETE /api/v1/tasks/{id}``).

        Raises:
            ConflictError: it had already finished (``task_finished``).
        """
        return TaskInfo.from_json(self._request("DELETE", f"/api/v1/tasks/{task_id}"))

    def wait(
        self, task_id: str, timeout: Optional[float] = None, progress: ProgressArg = False
    ) -> TaskInfo:
        """Polls a task until it ends (see :meth:`Task.wait`)."""
        backoff = Backoff(self.settings.poll_interval, self.settings.max_poll_interval, timeout)
        display = ProgressDisplay(progress)
        try:
            while True:
                info = self.info(task_id)
                changed = display.update(info)
                if info.terminal:
                    return info
                if backoff.expired():
                    raise TaskTimeoutError(
                        f"task {task_id} is still {info.status} after {timeout} s",
                        task_id=str(task_id),
                    )
                time.sleep(backoff.next_pause(changed))
        finally:
            display.close()

    # -- artifacts, proofs, nodes ------------------------------------------------------------

    def upload_blob(self, data: BytesOrPath) -> Blob:
        """Uploads an artifact, such as an ONNX model (``PUT /api/v1/blobs``); returns its
        content address."""
        payload = bodies.read_bytes(data, "blob")
        return blob(self._request("PUT", "/api/v1/blobs", content=payload,
                                  content_type="application/octet-stream"))

    def proof(self, proof_id: str) -> Dict[str, Any]:
        """A verified proof of one of the caller's ``zk_proof`` tasks, with its snarkjs export
        (``GET /api/v1/proofs/{id}``)."""
        return self._request("GET", f"/api/v1/proofs/{proof_id}")  # type: ignore[no-any-return]

    def verify_proof(self, circuit: str, n: int, public_inputs: Sequence[str], proof: str) -> bool:
        """Whether ``proof`` (base64) verifies against ``public_inputs`` for the circuit
        (``POST /api/v1/proofs/verify``)."""
        body = {"circuit": circuit, "n": n, "public_inputs": list(public_inputs), "proof": proof}
        return bool(self._request("POST", "/api/v1/proofs/verify", json_body=body)["valid"])

    def templates(self) -> List[Dict[str, Any]]:
        """The coordinator's task templates, with their parameters, defaults and expected
        outputs (``GET /api/v1/templates``)."""
        return self._request("GET", "/api/v1/templates")  # type: ignore[no-any-return]

    def render_template(self, name: str, /, params: Optional[Mapping[str, Any]] = None,
                        **more: Any) -> Dict[str, Any]:
        """Template ``name``'s task body with its parameters set from ``params`` (a mapping, for
        names that are not Python identifiers) and keyword arguments, the rest at their defaults;
        ready for :meth:`submit`, nothing is submitted (``POST /api/v1/templates/{name}/render``)."""
        rendered = self._request("POST", f"/api/v1/templates/{quote(name, safe='')}/render",
                                 json_body={"set": {**(params or {}), **more}})
        return rendered["submission"]  # type: ignore[no-any-return]

    def submit_template(self, name: str, /, params: Optional[Mapping[str, Any]] = None,
                        **more: Any) -> Task:
        """Renders template ``name`` with ``params`` and submits it:
        ``client.submit_template("pi", samples=10**9)``."""
        return self.submit(self.render_template(name, params, **more))

    def circuits(self) -> List[Dict[str, Any]]:
        """The circuits ``zk_proof`` accepts, with their sizes and verification keys."""
        return self._request("GET", "/api/v1/circuits")  # type: ignore[no-any-return]

    def nodes(self) -> List[Dict[str, Any]]:
        """Nodes with their state, health and reputation (``GET /api/v1/nodes``)."""
        return self._request("GET", "/api/v1/nodes")  # type: ignore[no-any-return]

    def node(self, node_id: str) -> Dict[str, Any]:
        """One node (``GET /api/v1/nodes/{id}``)."""
        return self._request("GET", f"/api/v1/nodes/{node_id}")  # type: ignore[no-any-return]

    def reputation(self, node_id: str, limit: Optional[int] = None) -> Dict[str, Any]:
        """A node's reputation and recent events (``GET /api/v1/nodes/{id}/reputation``)."""
        params = {"limit": str(limit)} if limit is not None else None
        return self._request(  # type: ignore[no-any-return]
            "GET", f"/api/v1/nodes/{node_id}/reputation", params=params
        )

    def health(self) -> Dict[str, Any]:
        """The coordinator's health (``GET /api/v1/health``, no key needed)."""
        return self._request("GET", "/api/v1/health")  # type: ignore[no-any-return]

    def wait_for_nodes(self, count: int, timeout: float = 60.0) -> List[Dict[str, Any]]:
        """Waits until ``count`` nodes are online and have reported health; returns them.

        Raises:
            TaskTimeoutError: fewer were online after ``timeout`` seconds.
        """
        backoff = Backoff(self.settings.poll_interval, self.settings.max_poll_interval, timeout)
        while True:
            online = [n for n in self.nodes() if n.get("state") == "online" and n.get("health")]
            if len(online) >= count:
                return online
            if backoff.expired():
                raise TaskTimeoutError(f"{len(online)} of {count} nodes online after {timeout} s")
            time.sleep(backoff.next_pause(False))

    # -- MQTT --------------------------------------------------------------------------------

    def mqtt(self, **kwargs: Any) -> MqttClient:
        """An :class:`MqttClient` on the broker of this client's ``connection`` (from
        :meth:`from_connection`), connected; ``kwargs`` go to its constructor."""
        if self.connection is None:
            raise ValueError("this client has no broker details: use Client.from_connection, "
                             "or build an MqttClient yourself")
        return MqttClient.from_connection(self.connection, **kwargs)

