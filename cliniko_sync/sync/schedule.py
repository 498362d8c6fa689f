"""`sync --due`: claim the organizations whose next sync is due and sync them, so that any number of processes on any
number of hosts share the work with no list of who syncs what.

A claim is a session-level advisory lock (CLAIM_NAMESPACE, hashtext(org id)) on the process's lock connection
(run_log.SyncLocks, which also holds its syncs' locks). It ends with that connection, so a killed process holds nothing,
and it holds no transaction open while the sync runs (an open transaction would hold back vacuum on every table for as
long as a long full sync takes). The sync then takes its own lock (pipeline.LOCK_NAMESPACE) as it always does, which
keeps a `--due` run and a run started any other way (a cron line per organization, `--all`, a person) from overlapping.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import psycopg

from cliniko_sync import db
from cliniko_sync.cliniko.waits import join
from cliniko_sync.errors import (
    EXIT_FAILURE,
    EXIT_LOCKED,
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_UNAVAILABLE,
    ClinikoSyncError,
    DatabaseUnavailableError,
)
from cliniko_sync.sync.pipeline import LOCK_NAMESPACE, JobConnection, SyncResult
from cliniko_sync.sync.run_log import SyncLocks

CLAIM_NAMESPACE = 0x434C5344  # "CLSD": first half of the claim lock's key, beside the sync's LOCK_NAMESPACE
CANDIDATES = 16  # due organizations read per query; each is then claimed, or found taken, one by one

SyncOne = Callable[[str, bool, float | None, JobConnection], SyncResult]  # organization, full, runtime left, job


@dataclass(frozen=True)
class Claim:
    organization_id: str
    full: bool


class Claimer:
    """Finds and claims due organizations, one at a time, on the process's lock connection."""

    def __init__(self, locks: SyncLocks) -> None:
        self.locks = locks

    def due(self, *, exclude: list[str], organization_id: str | None = None, limit: int = CANDIDATES) -> list[Claim]:
        with self.locks.connection() as conn:
            rows = conn.execute(
                db.query("due_organizations"),
                {
                    "sync_namespace": LOCK_NAMESPACE,
                    "claim_namespace": CLAIM_NAMESPACE,
                    "organization_id": organization_id,
                    "exclude": exclude,
                    "limit": limit,
                },
            ).fetchall()
        return [Claim(row["organization_id"], row["full_due"]) for row in rows]

    def claim_next(self, exclude: list[str]) -> Claim | None:
        """Claim the longest-waiting due organization, or return None when nothing is due (or all of it is taken)."""
        while True:
            candidates = self.due(exclude=exclude)
            if not candidates:
                return None
            for candidate in candidates:
                if not self._lock(candidate.organization_id):
                    continue  # another worker, here or on another host, claimed it since the query
                # Read again now that the claim is ours: a process that just finished this organization committed
                # its sync_log row before letting its claim go, so this sees it and the organization is not due.
                fresh = self.due(exclude=exclude, organization_id=candidate.organization_id, limit=1)
                if fresh:
                    return fresh[0]
                self.release(candidate)
            # Every candidate was taken or done meanwhile: ask again (the next answer leaves them out).

    def _lock(self, organization_id: str) -> bool:
        return self.locks.try_lock(CLAIM_NAMESPACE, organization_id)

    def release(self, claim: Claim) -> None:
        self.locks.unlock(CLAIM_NAMESPACE, claim.organization_id)

    def record_failure_before_start(self, result: SyncResult, as_of: datetime | None) -> None:
        """A sync that failed before its run began left no sync_log row: write one, so that the organization waits
        its interval before the next try (instead of failing every minute) and `status` shows why."""
        self.locks.execute(
            db.query("due_failed_before_start"),
            {
                "organization_id": result.organization_id,
                "as_of": as_of,
                "hostname": socket.gethostname(),
                "pid": os.getpid(),
                "error_class": result.stats.get("error_class", "Failed"),
                "error_message": result.error,
            },
        )


@dataclass
class DueRun:
    """What one `sync --due` process did: a result per organization it claimed, in the order they finished."""

    results: list[SyncResult]
    runtime_spent: bool = False
    stopped: bool = False  # a signal asked the process to stop
    # A worker lost the database (or met a bug): the process reports it once and exits with its code.
    error: Exception | None = None

    def failures(self) -> list[SyncResult]:
        """The failed runs to report one line each: those the lost database cut short are said once, in `error`."""
        if isinstance(self.error, DatabaseUnavailableError):
            return [result for result in self.results if result.error and not _lost_the_database(result)]
        return [result for result in self.results if result.error]


def _lost_the_database(result: SyncResult) -> bool:
    return result.stats.get("error_class") in ("DatabaseUnavailableError", "LockLost")


def sync_due(
    locks: SyncLocks,
    sync_one: SyncOne,
    *,
    jobs: int = 1,
    max_runtime: float | None = None,
    dry_run: bool = False,
    as_of: datetime | None = None,
    stop: threading.Event | None = None,
) -> DueRun:
    """Claim and sync due organizations with `jobs` workers until nothing is due, the runtime is spent, or a signal
    asks to stop. Each organization is synced at most once per process (the next process takes it if it is due again,
    and a run that records nothing, such as a dry run, cannot be claimed over and over). Claims and syncs' locks are
    all held on `locks`, and each worker syncs on one connection of its own: the process holds `jobs` + 1."""
    deadline = time.monotonic() + max_runtime if max_runtime else None
    run = DueRun(results=[])
    stop = stop or threading.Event()
    taken: list[str] = []  # claimed by this process, by any of its workers
    tally = threading.Lock()

    def remaining() -> float | None:
        return None if deadline is None else deadline - time.monotonic()

    claimer = Claimer(locks)

    def work(job: JobConnection) -> None:
        locks.check_pooling(job.get())
        while not stop.is_set():
            left = remaining()
            if left is not None and left <= 0:
                run.runtime_spent = True
                return
            with tally:
                claim = claimer.claim_next(list(taken))
                if claim is None:
                    return
                taken.append(claim.organization_id)
            try:
                result = sync_one(claim.organization_id, claim.full, remaining(), job)
                if result.sync_log_id is None and not dry_run and result.exit_code not in (
                    EXIT_OK, EXIT_LOCKED, EXIT_UNAVAILABLE,
                ):  # fmt: skip
                    claimer.record_failure_before_start(result, as_of)
            finally:
                claimer.release(claim)
            with tally:
                run.results.append(result)

    _run_workers(work, jobs, locks.url, run)
    run.stopped = stop.is_set()
    cut_short = [result.organization_id for result in run.results if _lost_the_database(result)]
    if isinstance(run.error, DatabaseUnavailableError) and cut_short:
        run.error = DatabaseUnavailableError(
            f"{run.error}; the syncs of {', '.join(cut_short)} stopped there (the next run resumes them)"
        )
    return run


def _run_workers(work: Callable[[JobConnection], None], jobs: int, url: str, run: DueRun) -> None:
    """`jobs` threads, each with a connection of its own. The first error any of them ends with is the run's, raised
    by the caller in the main thread (one line and its exit code, as for any command): never a thread's traceback."""

    def guarded() -> None:
        job = JobConnection(url)
        try:
            work(job)
        except psycopg.OperationalError:  # the database went away (restarted, say) under the lock connection
            run.error = run.error or DatabaseUnavailableError(f"lost the database at {db.describe_url(url)}")
        except Exception as exc:  # a worker's connection failed, the pooler cannot keep locks, or a bug
            run.error = run.error or exc
        finally:
            job.close()

    workers = [threading.Thread(target=guarded, name=f"due-{n}") for n in range(jobs)]
    for worker in workers:
        worker.start()
    for worker in workers:
        join(worker)


def exit_code_for_due(run: DueRun) -> int:
    """0 when every claimed organization succeeded (nothing due is success too), or stopped at --max-runtime after a
    checkpoint: under --due that is the plan, and the next claim resumes it. 3 when any failed, was skipped or was
    stopped by a signal. A worker that lost the database: that error's code (69)."""
    if run.error is not None:
        return run.error.exit_code if isinstance(run.error, ClinikoSyncError) else EXIT_FAILURE
    for result in run.results:
        if result.exit_code == EXIT_OK:
            continue
        if result.status == "partial" and not run.stopped:
            continue  # only --max-runtime stops a run early when no signal came
        return EXIT_PARTIAL
    return EXIT_OK


def summary_line(run: DueRun) -> str:
    """The one line logged when a --due process ends: what it did, for cron logs."""
    counts: dict[str, int] = {}
    for result in run.results:
        counts[result.status] = counts.get(result.status, 0) + 1
    if not counts:
        return "nothing was due"
    done = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    return f"synced {len(run.results)} due organizations ({done})" + (
        "; --max-runtime was spent" if run.runtime_spent else ""
    )
