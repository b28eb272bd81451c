"""A client for Ambient VCP, an open compute network: submit tasks to a coordinator over REST or
MQTT, follow them, and read their results.

::

    from ambient_vcp import Client

    client = Client.from_connection("ambient-data/connection.json")   # written by `ambient up`
    info = client.submit_wasm(open("sum.wasm", "rb").read(), {"numbers": [1, 2, 3]}).wait()
    print(info.status, info.output)                                      # completed {'sum': 6}

Layout:

* :class:`Client` / :class:`Task`: the blocking REST client and its task handles;
* :class:`AsyncClient` / :class:`AsyncTask`: the same for asyncio;
* :class:`MqttClient` / :class:`MqttTask` (and their ``Async`` twins): submission over the
  broker (paho-mqtt);
* :class:`TaskInfo`, :class:`Progress`, :class:`Connection`: what the API returns;
* :class:`AmbientError` and its subclasses: every error, with the API's ``code``, ``message`` and
  HTTP ``status``;
* :mod:`ambient_vcp.bodies`: the task bodies each ``submit_*`` helper sends;
* :mod:`ambient_vcp.tensors`: numpy arrays to and from the API's JSON tensors.
"""
from . import bodies
from . import tensors
from ._async import AsyncClient, AsyncMqttClient, AsyncMqttTask, AsyncTask
from .bodies import Range
from ._client import Client, Task
from ._common import Blob, __version__
from ._errors import (
    AmbientError,
    ApiError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    NotFoundError,
    PayloadTooLargeError,
    ServerError,
    TaskFailedError,
    TaskTimeoutError,
    TransportError,
    UnavailableError,
    UnprocessableError,
)
from ._models import TERMINAL, Connection, Progress, TaskInfo, TaskStatus, TaskType
from ._mqtt import MqttClient, MqttTask

__all__ = [
    "__version__",
    "Client",
    "Task",
    "AsyncClient",
    "AsyncTask",
    "MqttClient",
    "MqttTask",
    "AsyncMqttClient",
    "AsyncMqttTask",
    "TaskInfo",
    "TaskStatus",
    "TaskType",
    "TERMINAL",
    "Progress",
    "Connection",
    "Blob",
    "Range",
    "bodies",
    "tensors",
    "AmbientError",
    "ApiError",
    "BadRequestError",
    "AuthenticationError",
    "NotFoundError",
    "ConflictError",
    "PayloadTooLargeError",
    "UnprocessableError",
    "ServerError",
    "UnavailableError",
    "TransportError",
    "TaskTimeoutError",
    "TaskFailedError",
]
