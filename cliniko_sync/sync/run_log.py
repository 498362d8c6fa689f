"""What a run records about itself: the organization's sync lock, its sync_log row from start to finish, and the
heartbeat that tells a live run from an abandoned one (DESIGN §3, §5)."""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from cliniko_sync.db import DictConnection, query

log = logging.getLogger(__name__)

LOCK_NAMESPACE = 0x434C5359  # first half of the two-int advisory lock key; the second is hashtext(org id)
HEARTBEAT_SECONDS = 15.0


def try_lock(conn: DictConnection, organization_id: str) -> bool:
    """Take the organization's sync lock on `conn` (held until release() or the connection ends)."""
    row = conn.execute("SELECT pg_try_advisory_lock(%s, hashtext(%s)) AS ok", (LOCK_NAMESPACE, organization_id))
    found = row.fetchone()
    return bool(found and found["ok"])


def release(conn: DictConnection) -> None:
    """Unlock before closing: a closed connection's backend lets go of its locks only once it has exited, which a
    sync started right after this one could still see as "another sync is running"."""
    try:
        conn.execute("SELECT pg_advisory_unlock_all()")
    except psycopg.Error:
        pass  # the connection is gone, and its locks with it
    finally:
        conn.close()


def _row(organization_id: str, organization: Any, as_of: Any, mode: str | None = None) -> dict[str, Any]:
    return {
        "org": organization_id,
        "mode": mode,
        "as_of": as_of,
        "window_days": organization.window_days,
        "include_upcoming": organization.include_upcoming,
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
    }


def log_skipped(conn: DictConnection, organization_id: str, organization: Any, as_of: Any) -> None:
    conn.execute(query("sync_log_skipped"), _row(organization_id, organization, as_of))


def start_run(conn: DictConnection, organization_id: str, organization: Any, as_of: Any, mode: str) -> int:
    """Close any abandoned run of the organization and open a 'running' row; its id (also the full-pass id)."""
    row = conn.execute(query("sync_log_start"), _row(organization_id, organization, as_of, mode)).fetchone()
    assert row is not None
    return int(row["id"])


def finish_run(
    conn: DictConnection, guard: threading.Lock, sync_log_id: int, *, status: str, stats: dict[str, Any],
    error: str | None,
) -> None:  # fmt: skip
    from cliniko_sync.output import to_jsonable

    params = {
        "id": sync_log_id,
        "status": status,
        "stats": Jsonb(to_jsonable(stats)),
        "error_class": stats.get("error_class") if error else None,
        "error_message": error,
    }
    try:
        with guard:
            conn.execute(query("sync_log_finish"), params)
    except psycopg.Error:
        log.warning("could not record the end of sync %s; the next run will mark it abandoned", sync_log_id)


class Heartbeat:
    """Keeps sync_log.heartbeat_at fresh from a thread, on the connection that holds the lock (shared under
    `guard`), so `status` can tell a live run from one whose process is gone."""

    def __init__(self, conn: DictConnection, guard: threading.Lock, sync_log_id: int) -> None:
        self._conn, self._guard, self._id = conn, guard, sync_log_id
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="sync-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._done.wait(HEARTBEAT_SECONDS):
            try:
                with self._guard:
                    self._conn.execute("UPDATE sync_log SET heartbeat_at = now() WHERE id = %s", (self._id,))
            except psycopg.Error:
                return

    def stop(self) -> None:
        self._done.set()
        self._thread.join(timeout=5)
