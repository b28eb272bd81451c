"""What the blocking and the asyncio clients share: settings, request encoding, answer decoding
and the polling schedule. No I/O happens here."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Dict, Mapping, NamedTuple, Optional

import httpx

from ._errors import TransportError, api_error

__version__ = "0.1.0"

USER_AGENT = f"ambient-vcp-python/{__version__}"

#: Seconds one HTTP request may take (connect, read, write, pool) before it is abandoned.
DEFAULT_TIMEOUT = 30.0
#: Extra tries of a request that got no answer or 503 (the scheduler unavailable).
DEFAULT_RETRIES = 2
#: The first pause between two polls of a waiting task, in seconds; it grows by half each time
#: nothing changed, up to ``DEFAULT_MAX_POLL_INTERVAL``, and starts again after a change.
DEFAULT_POLL_INTERVAL = 0.25
DEFAULT_MAX_POLL_INTERVAL = 2.0


class Blob(NamedTuple):
    """An artifact stored on the coordinator (``PUT /api/v1/blobs``), named by content."""

    sha256: str
    size: int


@dataclass(frozen=True)
class Settings:
    """How a client talks to the coordinator."""

    api_url: str
    api_key: str
    timeout: float = DEFAULT_TIMEOUT
    retries: int = DEFAULT_RETRIES
    poll_interval: float = DEFAULT_POLL_INTERVAL
    max_poll_interval: float = DEFAULT_MAX_POLL_INTERVAL

    def __post_init__(self) -> None:
        if not self.api_url.startswith(("http://", "https://")):
            raise ValueError(f"api_url must start with http:// or https://, not {self.api_url!r}")
        if not self.api_key:
            raise ValueError("api_key is empty")
        if self.poll_interval <= 0 or self.max_poll_interval < self.poll_interval:
            raise ValueError("need 0 < poll_interval <= max_poll_interval")
        object.__setattr__(self, "api_url", self.api_url.rstrip("/"))

    def headers(self) -> Dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}", "User-Agent": USER_AGENT}


def encode_json(body: Any) -> bytes:
    """Strict JSON: NaN and infinities are refused here rather than sent as invalid JSON."""
    try:
        return json.dumps(body, allow_nan=False, separators=(",", ":")).encode("utf-8")
    except ValueError as e:
        raise ValueError(f"the body cannot be sent as JSON: {e}") from None


def decode(resp: httpx.Response) -> Any:
    """The JSON of a success, or the typed :class:`~ambient_vcp.ApiError` of a refusal."""
    if resp.is_success:
        try:
            return resp.json()
        except ValueError:
            raise TransportError(
                f"{resp.request.method} {resp.request.url} answered {resp.status_code} "
                f"with a body that is not JSON",
                status=resp.status_code,
            ) from None
    try:
        body: Any = resp.json()
    except ValueError:
        body = None
    raise api_error(resp.status_code, body, text=resp.text)


def retry_delay(attempt: int) -> float:
    """Seconds before try ``attempt + 1`` (0.5, 1, 2, … up to 5)."""
    return min(0.5 * float(2**attempt), 5.0)


def should_retry(resp: Optional[httpx.Response]) -> bool:
    """Worth another try: no answer (``None``), or 503, which the coordinator gives while no
    scheduler runs (a takeover between coordinators, a stop)."""
    return resp is None or resp.status_code == 503


def transport_error(method: str, url: str, exc: Exception) -> TransportError:
    return TransportError(f"{method} {url}: {type(exc).__name__}: {exc}" if str(exc) else
                          f"{method} {url}: {type(exc).__name__}")


def blob(obj: Mapping[str, Any]) -> Blob:
    return Blob(str(obj["sha256"]), int(obj["size"]))


class Backoff:
    """The polling schedule of a wait: pauses grow by half while nothing changes, from
    ``first`` up to ``most``, and never run past the deadline."""

    def __init__(self, first: float, most: float, timeout: Optional[float]) -> None:
        self.first, self.most = first, most
        self.delay = first
        self.deadline = None if timeout is None else time.monotonic() + timeout

    def expired(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def next_pause(self, changed: bool) -> float:
        """The pause before the next poll, given whether the last poll saw a change."""
        self.delay = self.first if changed else min(self.delay * 1.5, self.most)
        if self.deadline is None:
            return self.delay
        return max(0.0, min(self.delay, self.deadline - time.monotonic()))
