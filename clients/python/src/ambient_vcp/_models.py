"""What the API returns, as typed Python objects: :class:`TaskInfo`, :class:`Progress`,
:class:`Connection`."""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Union

from ._errors import TaskFailedError

__all__ = ["TaskStatus", "TaskType", "Progress", "TaskInfo", "Connection", "TERMINAL"]


class TaskStatus(str, Enum):
    """A task's place in its lifecycle. Compares equal to its wire string
    (``TaskStatus.COMPLETED == "completed"``)."""

    PENDING = "pending"
    ASSIGNED = "assigned"
    RUNNING = "running"
    VERIFYING = "verifying"
    COMPLETED = "completed"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value


class TaskType(str, Enum):
    """The kinds of task (README, "Task kinds")."""

    WASM_EXECUTION = "wasm_execution"
    COMPUTATION = "computation"
    INFERENCE = "inference"
    ZK_PROOF = "zk_proof"
    FEDERATED_LEARNING = "federated_learning"

    def __str__(self) -> str:
        return self.value


#: The statuses a task never leaves.
TERMINAL = frozenset(
    {TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.EXPIRED, TaskStatus.CANCELLED}
)


class Progress(NamedTuple):
    """How far a task has come: shards of a ``computation``, rounds (round 0 included) of a
    ``federated_learning`` job."""

    done: int
    total: int


_TIME = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:?\d{2})?$"
)
_CODE = re.compile(r"^([a-z][a-z0-9_]*)(?::| on )")


def _parse_time(text: Optional[str]) -> Optional[datetime]:
    """RFC 3339 as the coordinator writes it (nanoseconds, ``Z``), on any Python >= 3.9."""
    if not text:
        return None
    m = _TIME.match(text)
    if not m:
        return None
    date, time, frac, tz = m.groups()
    micros = int((frac or "0")[:6].ljust(6, "0"))
    dt = datetime.fromisoformat(f"{date}T{time}").replace(microsecond=micros)
    if tz in (None, "Z"):
        return dt.replace(tzinfo=timezone.utc)
    sign = 1 if tz[0] == "+" else -1
    hh, mm = int(tz[1:3]), int(tz[-2:])
    return dt.replace(tzinfo=timezone(sign * timedelta(hours=hh, minutes=mm)))


def _enum(cls: Any, value: Any) -> Any:
    """``value`` as a member of ``cls``, or as the plain string a newer coordinator sent."""
    try:
        return cls(value)
    except ValueError:
        return value


@dataclass(frozen=True)
class TaskInfo:
    """A task as the coordinator reports it (``GET /api/v1/tasks/{id}``, or published on
    ``ambient/v1/submitters/{submitter}/tasks/{id}``).

    ``raw`` keeps the whole JSON object, so a field a newer coordinator adds is not lost.
    """

    task_id: str
    task_type: Union[TaskType, str]
    status: Union[TaskStatus, str]
    assigned_nodes: List[str] = field(default_factory=list)
    result: Optional[Dict[str, Any]] = None
    proof_id: Optional[str] = None
    created_at: Optional[datetime] = None
    updated_at: Optional[datetime] = None
    error: Optional[str] = None
    status_reason: Optional[str] = None
    attempts: int = 0
    progress: Optional[Progress] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> "TaskInfo":
        """A ``TaskInfo`` from its decoded JSON object."""
        p = obj.get("progress")
        progress = (
            Progress(int(p.get("done", 0)), int(p.get("total", 0)))
            if isinstance(p, Mapping)
            else None
        )
        return cls(
            task_id=str(obj["task_id"]),
            task_type=_enum(TaskType, obj.get("task_type")),
            status=_enum(TaskStatus, obj.get("status")),
            assigned_nodes=list(obj.get("assigned_nodes") or []),
            result=obj.get("result"),
            proof_id=obj.get("proof_id"),
            created_at=_parse_time(obj.get("created_at")),
            updated_at=_parse_time(obj.get("updated_at")),
            error=obj.get("error"),
            status_reason=obj.get("status_reason"),
            attempts=int(obj.get("attempts") or 0),
            progress=progress,
            raw=dict(obj),
        )

    @property
    def terminal(self) -> bool:
        """True once the task can change no more (completed, failed, expired, cancelled)."""
        return self.status in TERMINAL

    @property
    def completed(self) -> bool:
        """True when the task finished with a result."""
        return self.status == TaskStatus.COMPLETED

    @property
    def output(self) -> Any:
        """The result's ``output`` (a wasm module's stdout parsed as JSON, an inference's
        ``{"outputs", "device"}``, a proof's ``{"y", "proof", …}``…), or ``None`` before the task
        completed."""
        return self.result.get("output") if isinstance(self.result, Mapping) else None

    @property
    def nodes(self) -> List[str]:
        """The nodes whose answers made the result (empty before completion)."""
        r = self.result if isinstance(self.result, Mapping) else {}
        return list(r.get("nodes") or [])

    @property
    def error_code(self) -> Optional[str]:
        """The failure code that starts ``error`` (``out_of_fuel``, ``invalid_input``…), when it
        starts with one. Read from the text: the API has no separate field for it."""
        if not self.error:
            return None
        m = _CODE.match(self.error)
        return m.group(1) if m else None

    @property
    def tensors(self) -> Dict[str, Any]:
        """An ``inference`` result's output tensors as numpy arrays, by output name.

        Raises:
            ValueError: the task has no inference output (not completed, or another kind).
        """
        from .tensors import tensors_from_json

        out = self.output
        if not isinstance(out, Mapping) or not isinstance(out.get("outputs"), Mapping):
            raise ValueError(f"task {self.task_id} has no inference outputs (status {self.status})")
        return tensors_from_json(out["outputs"])

    def raise_for_status(self) -> "TaskInfo":
        """Returns ``self`` when completed; raises :class:`TaskFailedError` when it ended
        otherwise. A task still running passes."""
        if self.terminal and not self.completed:
            raise TaskFailedError(self)
        return self


@dataclass(frozen=True)
class Connection:
    """What a submitter needs to reach a network: the ``connection.json`` that ``ambient up``
    writes in its data directory (mode 0600)."""

    api_url: str
    api_key: str
    submitter: str = "local"
    mqtt_host: Optional[str] = None
    mqtt_port: Optional[int] = None
    mqtt_username: Optional[str] = None
    mqtt_password: Optional[str] = None

    @classmethod
    def load(cls, path: Union[str, "os.PathLike[str]"] = "ambient-data/connection.json") -> "Connection":
        """Reads a ``connection.json``.

        Raises:
            FileNotFoundError: there is none (start a network with ``ambient up``).
            ValueError: it is not a connection file.
        """
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
        try:
            return cls(
                api_url=str(obj["api_url"]),
                api_key=str(obj["api_key"]),
                submitter=str(obj.get("submitter") or obj.get("mqtt_username") or "local"),
                mqtt_host=obj.get("mqtt_host"),
                mqtt_port=int(obj["mqtt_port"]) if obj.get("mqtt_port") is not None else None,
                mqtt_username=obj.get("mqtt_username"),
                mqtt_password=obj.get("mqtt_password"),
            )
        except (KeyError, TypeError) as e:
            raise ValueError(f"{os.fspath(path)} is not a connection file: missing {e}") from None
