"""The exceptions the client raises. Every one is an :class:`AmbientError`."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional

if TYPE_CHECKING:
    from ._models import TaskInfo

__all__ = [
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
    "CODE_STATUS",
    "api_error",
]


class AmbientError(Exception):
    """Base class of every error this package raises.

    Attributes:
        code: the API's stable error code (``"invalid_wasm"``, ``"task_finished"``…), or a
            failure code such as ``"out_of_fuel"`` for a failed task; ``None`` when there is none
            (a connection that failed, a wait that timed out).
        message: the sentence that explains it.
        status: the HTTP status of the answer, or ``None`` when no HTTP answer came (an MQTT
            rejection, a transport error, a timeout).
        task_id: the task concerned, when one is.
    """

    def __init__(
        self,
        message: str,
        *,
        code: Optional[str] = None,
        status: Optional[int] = None,
        task_id: Optional[str] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.task_id = task_id

    def __str__(self) -> str:
        head = " ".join(str(p) for p in (self.status, self.code) if p is not None)
        return f"{head}: {self.message}" if head else self.message

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code!r}, status={self.status!r}, "
            f"message={self.message!r})"
        )


class ApiError(AmbientError):
    """The coordinator refused a request with its ``{"error", "message"}`` body.

    Over REST ``status`` is the HTTP status; over MQTT (a rejection published on
    ``ambient/v1/submitters/{submitter}/rejections``) it is ``None``, and the subclass is chosen
    from the code as the REST API would have answered it.

    Attributes:
        problems: for a refused submission, every field to add or change, each a dict with
            ``field``, ``problem`` (``missing``, ``unknown``, ``wrong_type``, ``invalid``,
            ``conflict``), ``expected``, and maybe ``got`` and ``example``; the message says the
            same in sentences. Empty for other errors.
    """

    problems: List[Dict[str, Any]]

    def __init__(self, message: str, *, problems: Optional[List[Dict[str, Any]]] = None,
                 **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.problems = list(problems or [])


class BadRequestError(ApiError):
    """400: the request is malformed or not a valid task (``invalid_wasm``, ``invalid_inputs``…)."""


class AuthenticationError(ApiError):
    """401: the API key is missing or wrong (``unauthorized``)."""


class NotFoundError(ApiError):
    """404: no such task, node or proof among the caller's (``task_not_found``…)."""


class ConflictError(ApiError):
    """409: ``task_finished`` (cancel of a finished task) or ``task_id_taken``."""


class PayloadTooLargeError(ApiError):
    """413: ``payload_too_large`` or ``module_too_large``."""


class UnprocessableError(ApiError):
    """422: ``proof_unsupported``: ``require_proof`` on a kind that makes no proofs."""


class ServerError(ApiError):
    """500 (``internal``) or another 5xx but 503."""


class UnavailableError(ServerError):
    """503: the scheduler is unavailable (``unavailable``, ``no_leader``); worth a retry, which
    the client already made ``retries`` times."""


class TransportError(AmbientError):
    """No answer from the coordinator or the broker (refused, reset, timed out, unreadable)."""


class TaskTimeoutError(AmbientError, TimeoutError):
    """A wait ended before the task did. The task goes on; wait again or cancel it."""


class TaskFailedError(AmbientError):
    """A task ended without a result: ``failed``, ``expired`` or ``cancelled``.

    ``code`` is the failure code read from the task's ``error`` text when it starts with one
    (``out_of_fuel``, ``memory_limit``, ``invalid_input``…), else the status. ``info`` is the
    task as it ended.
    """

    def __init__(self, info: "TaskInfo") -> None:
        text = info.error or info.status_reason or f"task {info.status}"
        super().__init__(
            f"task {info.task_id} {info.status}: {text}",
            code=info.error_code or str(info.status),
            task_id=info.task_id,
        )
        self.info = info


#: HTTP status of every error code the REST API documents (README, "REST API"): it picks the
#: exception class for an MQTT rejection, which carries the code only.
CODE_STATUS: Mapping[str, int] = {
    **dict.fromkeys(
        [
            "invalid_json", "json_too_deep", "unknown_task_type", "missing_module",
            "invalid_base64", "invalid_wasm", "invalid_requirements", "invalid_inputs",
            "unknown_model", "invalid_task_id", "invalid_query", "empty_blob", "bad_request",
            "invalid_request", "unsupported_circuit", "invalid_sha256",
        ],
        400,
    ),
    **dict.fromkeys(["unauthorized", "stale_request", "bad_signature", "replayed_request"], 401),
    **dict.fromkeys(["task_not_found", "node_not_found", "proof_not_found", "not_found"], 404),
    **dict.fromkeys(["task_id_taken", "task_finished"], 409),
    **dict.fromkeys(["payload_too_large", "module_too_large"], 413),
    "proof_unsupported": 422,
    "internal": 500,
    "unavailable": 503,
    "no_leader": 503,
}

_BY_STATUS = {
    400: BadRequestError,
    401: AuthenticationError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: UnprocessableError,
    503: UnavailableError,
}


def api_error(status: Optional[int], body: Any, *, text: str = "") -> ApiError:
    """The exception for an error answer: ``status`` is the HTTP status (``None`` over MQTT),
    ``body`` the decoded ``{"error", "message", "task_id"?}`` (or anything else, for an answer
    that is not one, such as a proxy's HTML page, whose ``text`` becomes the message)."""
    if isinstance(body, Mapping) and isinstance(body.get("error"), str):
        code: str = body["error"]
        message = str(body.get("message") or code)
        task_id = body.get("task_id")
        problems = body.get("problems") if isinstance(body.get("problems"), list) else []
    else:
        code = "http_error"
        message = text.strip()[:500] or f"HTTP {status}"
        task_id = None
        problems = []
    effective = status if status is not None else CODE_STATUS.get(code)
    if effective in _BY_STATUS:
        cls = _BY_STATUS[effective]
    elif effective is not None and effective >= 500:
        cls = ServerError
    else:
        cls = ApiError
    return cls(message, code=code, status=status, task_id=task_id, problems=problems)
