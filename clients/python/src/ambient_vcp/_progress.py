"""Following a task while it runs: a tqdm bar, or a callback, fed with every :class:`TaskInfo`
a wait reads."""
from __future__ import annotations

import sys
from typing import Any, Callable, Optional, Tuple, Union

from ._models import TaskInfo, TaskType

#: What ``progress=`` takes: ``False`` (nothing), ``True`` (a tqdm bar on stderr), or a
#: function called with the task each time its status, reason or progress changes.
ProgressArg = Union[bool, Callable[[TaskInfo], Any], None]


class ProgressDisplay:
    """Shows a task's progress. The bar counts shards of a ``computation`` and rounds of a
    ``federated_learning`` job (round 0 included) once the API reports them; before that, and
    for kinds with no progress, it shows the status alone."""

    def __init__(self, progress: ProgressArg) -> None:
        self._arg = progress
        self._bar: Any = None
        self._last: Optional[Tuple[Any, ...]] = None

    def update(self, info: TaskInfo) -> bool:
        """Takes the latest state; returns whether anything the user sees changed."""
        key = (info.status, info.status_reason, info.progress)
        changed = key != self._last
        self._last = key
        if not changed or not self._arg:
            return changed
        if callable(self._arg):
            self._arg(info)
            return changed
        if self._bar is None:
            from tqdm.auto import tqdm  # type: ignore[import-untyped,unused-ignore]

            unit = "rounds" if info.task_type == TaskType.FEDERATED_LEARNING else "shards"
            self._bar = tqdm(
                total=None, unit=unit, desc=f"task {info.task_id[:8]}", file=sys.stderr,
                leave=True, dynamic_ncols=True,
            )
        bar = self._bar
        if info.progress is not None:
            if bar.total != info.progress.total:
                bar.total = info.progress.total
            bar.n = info.progress.done
        status = str(info.status)
        if info.status_reason and not info.terminal:
            status += f": {info.status_reason}"
        bar.set_postfix_str(status, refresh=False)
        bar.refresh()
        return changed

    def close(self) -> None:
        """Ends the bar, leaving its last line."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
