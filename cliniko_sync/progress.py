"""What a sync shows while it runs: rich bars on stderr when it is a terminal, and log lines (-v) otherwise.

Both implement cliniko_sync.sync.pipeline.Progress, plus `waiting` (the client waits for the rate limit or before a
retry: the bars say so and count down) and `organization_failed` (the organization's bars stop and show why).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from cliniko_sync.cliniko.waits import Wait
from cliniko_sync.logs import log_extra

log = logging.getLogger("cliniko_sync.sync")

# -v logs a stream's progress once per this many pages (and at its end), so a log file shows what a run did
# without a line per request.
PAGES_PER_LOG_LINE = 10


def _status_text(fields: dict[str, Any], now: float) -> str:
    """The right-hand note of a bar: why it stopped, or what it waits for with a countdown."""
    if fields.get("failure"):
        return str(fields["failure"])
    wait: Wait | None = fields.get("wait")
    if wait is None:
        return ""
    remaining = wait.seconds - (now - fields.get("wait_since", now))
    if remaining <= 0 and wait.kind != "retry":
        return ""  # the wait is over; the request is on its way
    return wait.describe(remaining)


class RichProgress:
    """One bar per (organization, stream)."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
        from rich.text import Text

        class StatusColumn(ProgressColumn):
            def render(self, task: Any) -> Text:
                text = _status_text(task.fields, time.monotonic())
                return Text(text, style="red" if task.fields.get("failure") else "yellow")

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            StatusColumn(),
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
                f"{organization_id} {stream} ({mode})", total=None, wait=None, failure=None
            )

    def page_done(self, organization_id: str, stream: str, fetched: int, total: int | None) -> None:
        with self._guard:
            task = self._tasks[(organization_id, stream)]
            done = self._progress.tasks[task].completed + fetched
            # Cliniko's total counts what is left to list in this pass (a resumed pass, a re-read listing), not
            # what was already fetched: a bar never shows more done than its total.
            shown_total = None if total is None else max(total, done)
            self._progress.update(task, completed=done, total=shown_total, wait=None)

    def stream_finished(self, organization_id: str, stream: str) -> None:
        with self._guard:
            task = self._tasks[(organization_id, stream)]
            done = self._progress.tasks[task].completed
            self._progress.update(task, total=done, completed=done, wait=None)

    def waiting(self, organization_id: str, wait: Wait) -> None:
        """Every unfinished bar of the organization shows the wait: its streams share the key's rate limit."""
        with self._guard:
            for (org, _), task in self._tasks.items():
                if org == organization_id and not self._progress.tasks[task].finished:
                    self._progress.update(task, wait=wait, wait_since=time.monotonic())

    def organization_failed(self, organization_id: str, reason: str) -> None:
        """Stop the organization's bars at once and show why (under --all the others go on)."""
        with self._guard:
            tasks = [task for (org, _), task in self._tasks.items() if org == organization_id]
            if not tasks:
                tasks = [self._progress.add_task(organization_id, total=None, wait=None, failure=None)]
            for task in tasks:
                if not self._progress.tasks[task].finished or task == tasks[-1]:
                    self._progress.update(task, failure=reason, wait=None)
                self._progress.stop_task(task)


class LogProgress:
    """The same events as log lines: -v shows a line per stream per batch of pages and per wait."""

    def __init__(self) -> None:
        self._pages: dict[tuple[str, str], list[int]] = {}
        self._guard = threading.Lock()

    def stream_started(self, organization_id: str, stream: str, mode: str) -> None:
        with self._guard:
            self._pages[(organization_id, stream)] = [0, 0]
        log.info("%s: %s pass started", stream, mode, extra=log_extra(organization_id, "stream_started"))

    def page_done(self, organization_id: str, stream: str, fetched: int, total: int | None) -> None:
        with self._guard:
            counts = self._pages.setdefault((organization_id, stream), [0, 0])
            counts[0] += 1
            counts[1] += fetched
            pages, records = counts
        if pages % PAGES_PER_LOG_LINE == 0:
            of = f" of about {max(total, records)}" if total is not None else ""
            log.info(
                "%s: %d pages, %d records%s so far",
                stream,
                pages,
                records,
                of,
                extra=log_extra(organization_id, "pages"),
            )

    def stream_finished(self, organization_id: str, stream: str) -> None:
        with self._guard:
            pages, records = self._pages.get((organization_id, stream), [0, 0])
        log.info(
            "%s: done, %d pages, %d records", stream, pages, records, extra=log_extra(organization_id, "stream_done")
        )

    def waiting(self, organization_id: str, wait: Wait) -> None:
        event = "retry" if wait.kind == "retry" else "wait"
        log.info("%s", wait.describe(), extra=log_extra(organization_id, event))

    def organization_failed(self, organization_id: str, reason: str) -> None:
        pass  # the run's summary line and the final error line say it


class Both:
    """Bars and log lines at once."""

    def __init__(self, *parts: Any) -> None:
        self.parts = [part for part in parts if part is not None]

    def __getattr__(self, name: str) -> Callable[..., None]:
        def call(*args: Any) -> None:
            for part in self.parts:
                getattr(part, name)(*args)

        return call


def wait_reporter(organization_id: str, progress: Any) -> Callable[[Wait], None]:
    """The client's on_wait for one organization's run: the progress display hears of every wait."""

    def report(wait: Wait) -> None:
        if progress is not None and hasattr(progress, "waiting"):
            progress.waiting(organization_id, wait)

    return report


def wanted(quiet: bool) -> bool:
    """Bars only on a terminal, and not with -q or JSON logs (every stderr line is then one JSON object)."""
    from cliniko_sync.logs import json_logs

    return not quiet and not json_logs() and sys.stderr.isatty()
