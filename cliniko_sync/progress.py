"""Progress bars for long syncs: rich bars on stderr when it is a terminal, nothing otherwise."""

from __future__ import annotations

import sys
import threading
from typing import Any


class RichProgress:
    """One bar per (organization, stream); implements cliniko_sync.sync.pipeline.Progress."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(file=sys.stderr),
            transient=False,
        )
        self._tasks: dict[tuple[str, str], Any] = {}
        self._guard = threading.Lock()

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._progress.stop()

    def stream_started(self, organization_id: str, stream: str, mode: str) -> None:
        with self._guard:
            self._tasks[(organization_id, stream)] = self._progress.add_task(
                f"{organization_id} {stream} ({mode})", total=None
            )

    def page_done(self, organization_id: str, stream: str, fetched: int, total: int | None) -> None:
        with self._guard:
            task = self._tasks[(organization_id, stream)]
            self._progress.update(task, advance=fetched, total=total)

    def stream_finished(self, organization_id: str, stream: str) -> None:
        with self._guard:
            task = self._tasks[(organization_id, stream)]
            done = self._progress.tasks[task].completed
            self._progress.update(task, total=done, completed=done)


def wanted(quiet: bool) -> bool:
    return not quiet and sys.stderr.isatty()
