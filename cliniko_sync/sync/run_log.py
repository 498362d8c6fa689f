"""What a run records about itself: the organization's sync lock, its sync_log row from start to finish, and the
heartbeat that tells a live run from an abandoned one (DESIGN §3, §5)."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from cliniko_sync.db import (
    DictConnection,
    connect,
    describe_url,
    query,
    require_current_schema,
    require_session_pooling,
)
from cliniko_sync.errors import DatabaseUnavailableError

log = logging.getLogger(__name__)

LOCK_NAMESPACE = 0x434C5359  # first half of the two-int advisory lock key; the second is hashtext(org id)
HEARTBEAT_SECONDS = 15.0


# A host that dies without closing its connections: the server drops them (and the locks on them) after about
# idle + interval × count seconds instead of the operating system's default of two hours and more.
KEEPALIVE_SETTINGS = {"tcp_keepalives_idle": 60, "tcp_keepalives_interval": 10, "tcp_keepalives_count": 3}


class SyncLocks:
    """The process's one connection for its advisory locks (every organization's sync lock, and `sync --due`'s
    claims), the sync_log rows and their heartbeats, shared by its jobs under `guard`: one session holds many advisory
    locks, so a process syncing N organizations at once holds N work connections and this one (DESIGN §5).

    A lock is held until unlock() or until the connection ends, so a killed process holds nothing. A session's
    advisory locks are reentrant, so this process's own jobs are kept apart by the set of keys it holds. Before the
    first lock, check_pooling() makes sure the connection keeps its server session (no transaction-mode pooler)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.conn = connect(url, autocommit=True, application="cliniko-sync locks")
        self.guard = threading.Lock()
        self.lost = threading.Event()  # the connection failed: its locks are gone, and every run holding one stops
        self._held: set[tuple[int, str]] = set()
        self._pooling_checked = False
        try:
            # The schema is current, and (with --schema) the session kept its search_path: sync_log goes in the right
            # schema, and every command that syncs refuses an unready database before anything else.
            require_current_schema(self.conn)
            for setting, value in KEEPALIVE_SETTINGS.items():
                # Server-side settings for this connection; they apply over TCP and mean nothing on a Unix socket.
                self.conn.execute("SELECT set_config(%s, %s, false)", (setting, str(value)))
        except BaseException as exc:
            self.conn.close()
            if isinstance(exc, psycopg.OperationalError):  # the server went away just after the connection opened
                raise DatabaseUnavailableError(f"lost the database at {describe_url(url)}") from exc
            raise

    def __enter__(self) -> SyncLocks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def check_pooling(self, work: DictConnection) -> None:
        """Once, with a job's connection (idle, in no other thread's hands), before the first lock: refuse a pooler
        that would lend this connection's server session, and the locks on it, to other clients (exit 78)."""
        with self.guard:
            if not self._pooling_checked:
                require_session_pooling(self.conn, work)
                self._pooling_checked = True

    @contextlib.contextmanager
    def connection(self) -> Iterator[DictConnection]:
        """The shared connection, for one statement and its rows at a time (held by one thread meanwhile)."""
        with self.guard:
            try:
                yield self.conn
            except psycopg.Error:
                if self.conn.broken or self.conn.closed:  # not a statement's own error: the session is gone
                    self.lost.set()
                raise

    def execute(self, sql: str, params: Any = None) -> dict[str, Any] | None:
        """Run one statement; its first row, if it returns any."""
        with self.connection() as conn:
            cursor = conn.execute(sql.encode(), params)
            return cursor.fetchone() if cursor.description else None

    def try_lock(self, namespace: int, organization_id: str) -> bool:
        """Take the (namespace, organization) lock, unless anyone holds it: another process, or a job of this one."""
        key = (namespace, organization_id)
        with self.connection() as conn:
            if key in self._held:
                return False
            row = conn.execute("SELECT pg_try_advisory_lock(%s, hashtext(%s)) AS ok", key).fetchone()
            if row and row["ok"]:
                self._held.add(key)
                return True
            return False

    def unlock(self, namespace: int, organization_id: str) -> None:
        """Let the lock go (now: a sync started right after this one must not find it taken)."""
        key = (namespace, organization_id)
        with contextlib.suppress(psycopg.Error), self.connection() as conn:  # the connection gone, its locks went too
            self._held.discard(key)
            conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", key)

    def close(self) -> None:
        """Unlock before closing: a closed connection's backend lets go of its locks only once it has exited, which a
        sync started right after this one could still see as "another sync is running"."""
        with contextlib.suppress(psycopg.Error):
            self.execute("SELECT pg_advisory_unlock_all()")
        self.conn.close()


def try_lock(locks: SyncLocks, organization_id: str) -> bool:
    """Take the organization's sync lock (held until unlock() or the end of the process's lock connection)."""
    return locks.try_lock(LOCK_NAMESPACE, organization_id)


def unlock(locks: SyncLocks, organization_id: str) -> None:
    locks.unlock(LOCK_NAMESPACE, organization_id)


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


def log_skipped(locks: SyncLocks, organization_id: str, organization: Any, as_of: Any) -> None:
    locks.execute(query("sync_log_skipped"), _row(organization_id, organization, as_of))


def start_run(locks: SyncLocks, organization_id: str, organization: Any, as_of: Any, mode: str) -> int:
    """Close any abandoned run of the organization and open a 'running' row; its id (also the full-pass id)."""
    row = locks.execute(query("sync_log_start"), _row(organization_id, organization, as_of, mode))
    assert row is not None
    return int(row["id"])


def finish_run(locks: SyncLocks, sync_log_id: int, *, status: str, stats: dict[str, Any], error: str | None) -> None:
    from cliniko_sync.output import to_jsonable

    params = {
        "id": sync_log_id,
        "status": status,
        "stats": Jsonb(to_jsonable(stats)),
        "error_class": stats.get("error_class") if error else None,
        "error_message": error,
    }
    try:
        locks.execute(query("sync_log_finish"), params)
    except psycopg.Error:
        log.warning("could not record the end of sync %s; the next run will mark it abandoned", sync_log_id)


class Heartbeat:
    """Keeps sync_log.heartbeat_at fresh from a thread, on the connection that holds the lock, so `status` can tell
    a live run from one whose process is gone."""

    def __init__(self, locks: SyncLocks, sync_log_id: int) -> None:
        self._locks, self._id = locks, sync_log_id
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="sync-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._done.wait(HEARTBEAT_SECONDS):
            try:
                self._locks.execute("UPDATE sync_log SET heartbeat_at = now() WHERE id = %s", (self._id,))
            except psycopg.Error:
                return

    def stop(self) -> None:
        self._done.set()
        self._thread.join(timeout=5)
