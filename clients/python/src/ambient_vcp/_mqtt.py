"""Submitting over MQTT (paho-mqtt): :class:`MqttClient` and the :class:`MqttTask` it returns.

A submitter publishes a ``TaskSubmission`` on ``ambient/v1/submit/{submitter}`` and reads the
answers under ``ambient/v1/submitters/{submitter}/#``: the task as JSON (``TaskInfo``) on
``…/tasks/{task_id}`` at each status change (``pending``, ``assigned``, ``verifying`` and the
final status, but not ``running``), and a refusal ``{"error", "message", "task_id"}`` on
``…/rejections``. Both travel bare, as the REST bodies do (no envelope). The submitter id is
the broker username.
"""
from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from typing import Any, Callable, Dict, List, Optional

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from . import bodies
from ._common import encode_json
from ._errors import ApiError, TaskTimeoutError, TransportError, api_error
from ._models import Connection, TaskInfo
from ._progress import ProgressArg, ProgressDisplay

__all__ = ["MqttClient", "MqttTask", "PREFIX", "submit_topic", "submitter_filter"]

#: Root of every topic of protocol version 1.
PREFIX = "ambient/v1"


def submit_topic(submitter: str) -> str:
    """``ambient/v1/submit/{submitter}``: where submissions go."""
    return f"{PREFIX}/submit/{submitter}"


def submitter_filter(submitter: str) -> str:
    """``ambient/v1/submitters/{submitter}/#``: everything a submitter may read."""
    return f"{PREFIX}/submitters/{submitter}/#"


class _TaskState:
    """What the broker said about one task; written by paho's thread, read by waiters."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.latest: Optional[TaskInfo] = None
        self.error: Optional[ApiError] = None
        self.version = 0
        self.listeners: List[Callable[[], None]] = []

    def push(self, info: Optional[TaskInfo] = None, error: Optional[ApiError] = None) -> None:
        with self.cond:
            if info is not None:
                # A redelivered or late message never takes a finished task back.
                if self.latest is None or not self.latest.terminal:
                    self.latest = info
            if error is not None and self.latest is None:
                self.error = error
            self.version += 1
            self.cond.notify_all()
            listeners = list(self.listeners)
        for fn in listeners:
            fn()

    @property
    def unanswered(self) -> bool:
        """Nothing has come back for it yet."""
        return self.latest is None and self.error is None

    @property
    def done(self) -> bool:
        return self.error is not None or (self.latest is not None and self.latest.terminal)


class MqttTask:
    """A task submitted over MQTT. Its state comes from the broker only."""

    def __init__(self, client: "MqttClient", task_id: str, state: _TaskState) -> None:
        self.client = client
        self.id = task_id
        self._state = state

    def __repr__(self) -> str:
        return f"MqttTask({self.id!r})"

    def info(self) -> Optional[TaskInfo]:
        """The latest state the coordinator published, or ``None`` before the first.

        Raises:
            ApiError: the coordinator refused the submission (on ``…/rejections``).
        """
        with self._state.cond:
            if self._state.error is not None:
                raise self._state.error
            return self._state.latest

    def wait(self, timeout: Optional[float] = None, progress: ProgressArg = False) -> TaskInfo:
        """Waits for the task's final status and returns it (check ``.status``).

        Raises:
            ApiError: the coordinator refused the submission; the subclass and ``code`` are
                those the REST API would have answered (``status`` is ``None``).
            TaskTimeoutError: ``timeout`` passed first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        display = ProgressDisplay(progress)
        seen = -1
        try:
            while True:
                with self._state.cond:
                    while self._state.version == seen:
                        left = None if deadline is None else deadline - time.monotonic()
                        if left is not None and left <= 0:
                            raise TaskTimeoutError(
                                f"no final status for task {self.id} over MQTT after {timeout} s",
                                task_id=self.id,
                            )
                        self._state.cond.wait(left)
                    seen = self._state.version
                    latest, error = self._state.latest, self._state.error
                if error is not None:
                    raise error
                if latest is not None:
                    display.update(latest)
                    if latest.terminal:
                        return latest
        finally:
            display.close()

    def result(self, timeout: Optional[float] = None, progress: ProgressArg = False) -> Any:
        """Waits, then returns the result's ``output``.

        Raises:
            TaskFailedError: the task failed, expired or was cancelled.
            ApiError: the submission was refused.
            TaskTimeoutError: ``timeout`` passed first.
        """
        return self.wait(timeout, progress).raise_for_status().output


class MqttClient:
    """Submits tasks over the broker, for backends that already speak MQTT.

    ::

        with Client.from_connection().mqtt() as mq:
            print(mq.submit_wasm(module, {"numbers": [1, 2]}).wait().output)

    It connects (MQTT 3.1.1, clean session) when made, subscribes to the submitter's answers
    and waits for the broker to confirm, so no answer to a later submission is missed. paho's
    network thread reconnects after a drop and subscribes again; what the coordinator published
    during the drop is not replayed, so a wait may then need the REST API
    (:meth:`Client.info`) to learn the outcome.

    Args:
        host, port: the broker.
        username, password: the submitter's broker account (its username is its submitter id).
        submitter: the submitter id, when it differs from ``username``.
        client_id: the MQTT client id (default: ``{username}:{random}``; two connections must
            not share one, and the embedded broker of ``ambient up`` admits only the username,
            or the username, ``:`` and a suffix).
        keepalive: seconds between pings.
        connect_timeout: seconds to wait for the connection and subscription.
    """

    def __init__(
        self,
        host: str,
        port: int = 1883,
        *,
        username: str,
        password: Optional[str] = None,
        submitter: Optional[str] = None,
        client_id: Optional[str] = None,
        keepalive: int = 30,
        connect_timeout: float = 10.0,
    ) -> None:
        self.submitter = submitter or username
        self._tasks: Dict[str, _TaskState] = {}
        self._lock = threading.Lock()
        self._ready = False
        self._settled = threading.Event()  # set once subscribed, or once refused
        self._refused: Optional[str] = None
        self._prefix = f"{PREFIX}/submitters/{self.submitter}/"
        #: Rejections that could not be matched to a submission (they named no task while
        #: several submissions were unanswered), newest last, at most 100.
        self.unattributed_rejections: List[ApiError] = []

        c = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"{username}:{uuid.uuid4().hex[:12]}",
            clean_session=True,
            protocol=paho.MQTTv311,
        )
        c.username_pw_set(username, password)
        c.reconnect_delay_set(min_delay=1, max_delay=30)
        c.on_socket_open = self._on_socket_open
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_subscribe = self._on_subscribe
        c.on_message = self._on_message
        self._c = c
        try:
            c.connect(host, port, keepalive)
        except OSError as e:
            raise TransportError(f"cannot reach the broker at {host}:{port}: {e}") from e
        c.loop_start()
        if not self._settled.wait(connect_timeout) or not self._ready:
            self.close()
            why = self._refused or f"no answer in {connect_timeout} s"
            raise TransportError(f"MQTT connection to {host}:{port} as {username}: {why}")

    @classmethod
    def from_connection(cls, conn: Connection, **kwargs: Any) -> "MqttClient":
        """A client on the broker a ``connection.json`` names."""
        if not conn.mqtt_host or not conn.mqtt_port or not conn.mqtt_username:
            raise ValueError("the connection has no broker details (mqtt_host, mqtt_port, "
                             "mqtt_username)")
        kwargs.setdefault("submitter", conn.submitter)
        return cls(conn.mqtt_host, conn.mqtt_port, username=conn.mqtt_username,
                   password=conn.mqtt_password, **kwargs)

    # -- paho callbacks (its network thread) -------------------------------------------------

    def _on_socket_open(self, client: Any, userdata: Any, sock: Any) -> None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError):
            pass

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        if reason.is_failure:
            self._refused = f"refused: {reason}"
            self._settled.set()
            return
        # Every (re)connection: a clean session forgets its subscriptions.
        client.subscribe(submitter_filter(self.submitter), qos=1)

    def _on_subscribe(self, client: Any, userdata: Any, mid: Any, reasons: Any,
                      properties: Any) -> None:
        if any(r.is_failure for r in reasons):
            self._refused = f"subscription to {submitter_filter(self.submitter)} refused"
        else:
            self._ready = True
        self._settled.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        if not self._settled.is_set():
            # A broker may close the socket instead of answering a wrong password.
            self._refused = f"the broker closed the connection ({reason}); wrong credentials?"
            self._settled.set()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        topic: str = msg.topic
        if not topic.startswith(self._prefix):
            return
        rest = topic[len(self._prefix):]
        try:
            body = json.loads(msg.payload)
        except ValueError:
            return
        if rest.startswith("tasks/"):
            with self._lock:
                state = self._tasks.get(rest[len("tasks/"):])
            if state is not None and isinstance(body, dict) and "task_id" in body:
                state.push(info=TaskInfo.from_json(body))
                if state.done:
                    self.forget(rest[len("tasks/"):])
        elif rest == "rejections":
            error = api_error(None, body, text=msg.payload.decode("utf-8", "replace"))
            with self._lock:
                if error.task_id:
                    state = self._tasks.get(str(error.task_id))
                else:
                    # The coordinator leaves task_id out of a refusal by its checks (a module
                    # that is not wasm, bad inputs…) even when the submission named one. With
                    # one submission unanswered, the refusal can only be that one's.
                    silent = [(i, s) for i, s in self._tasks.items() if s.unanswered]
                    state = silent[0][1] if len(silent) == 1 else None
                    if state is not None:
                        error.task_id = silent[0][0]
                if state is None:
                    self.unattributed_rejections.append(error)
                    del self.unattributed_rejections[:-100]
            if state is not None:
                state.push(error=error)
                self.forget(str(error.task_id))

    # -- submitting --------------------------------------------------------------------------

    def submit(self, task: Dict[str, Any], timeout: float = 10.0) -> MqttTask:
        """Publishes any ``TaskSubmission`` body (QoS 1) and returns its handle once the broker
        has acknowledged it. A ``task_id`` is added when the body has none: it names the
        topic that answers, and makes a redelivery harmless.

        Raises:
            TransportError: the broker did not acknowledge within ``timeout`` seconds.
        """
        body = bodies.with_task_id(task)
        task_id = str(body["task_id"])
        state = _TaskState()
        with self._lock:
            self._tasks[task_id] = state
        info = self._c.publish(submit_topic(self.submitter), encode_json(body), qos=1)
        try:
            info.wait_for_publish(timeout)
        except (RuntimeError, ValueError) as e:
            raise TransportError(f"publish of task {task_id} failed: {e}",
                                 task_id=task_id) from e
        if not info.is_published():
            raise TransportError(f"the broker did not acknowledge task {task_id} in {timeout} s",
                                 task_id=task_id)
        return MqttTask(self, task_id, state)

    def submit_wasm(self, module: bodies.BytesOrPath, inputs: Any = None,
                    **kwargs: Any) -> MqttTask:
        """A ``wasm_execution`` task, as :meth:`Client.submit_wasm` builds it."""
        return self.submit(bodies.wasm_task(module, inputs, **kwargs))

    def submit_computation(self, kernel: bodies.BytesOrPath, shards: Any = None,
                           **kwargs: Any) -> MqttTask:
        """A sharded ``computation``, as :meth:`Client.submit_computation` builds it."""
        return self.submit(bodies.computation_task(kernel, shards, **kwargs))

    def submit_inference(self, model: bodies.BytesOrPath, tensors: Dict[str, Any],
                         **kwargs: Any) -> MqttTask:
        """An ``inference`` task with the model inline (base64): the broker cannot upload
        blobs, so upload big models over REST and use :meth:`submit` with ``model_sha256``."""
        data = bodies.read_bytes(model, "model")
        return self.submit(bodies.inference_task(tensors, model_base64=bodies.b64(data),
                                                 **kwargs))

    def submit_zk(self, circuit: str = "hash_chain", **kwargs: Any) -> MqttTask:
        """A ``zk_proof`` task, as :meth:`Client.submit_zk` builds it."""
        return self.submit(bodies.zk_task(circuit, **kwargs))

    def submit_federated(self, dataset: str, **job: Any) -> MqttTask:
        """A ``federated_learning`` job, as :meth:`Client.submit_federated` builds it."""
        return self.submit(bodies.federated_task(dataset, **job))

    def forget(self, task_id: str) -> None:
        """Stops tracking a task (its handle then sees no more messages). Done for each task
        once its final status or its rejection has arrived."""
        with self._lock:
            self._tasks.pop(task_id, None)

    def close(self) -> None:
        """Disconnects and stops the network thread."""
        try:
            self._c.disconnect()
        finally:
            self._c.loop_stop()

    def __enter__(self) -> "MqttClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
