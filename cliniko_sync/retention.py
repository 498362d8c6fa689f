"""Retention (issue 23): the installation's periods for sync_log and for removed mirror rows, and the prune that
deletes what is older, in small batches (each its own short transaction) so that it never stalls a sync."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from psycopg import sql

from cliniko_sync.db import DictConnection, query

BATCH = 5000  # rows per transaction: milliseconds of row locks, never a long lock a sync would wait on
# The mirror tables whose removed rows are deleted. The reference lists (appointment types, practitioners,
# businesses) are kept: an appointment still mirrored may name a removed one in an active patient's details, and
# they are a few dozen rows a clinic.
PRUNED_MIRRORS = ("cliniko_patients", "cliniko_individual_appointments", "cliniko_group_appointments",
                  "cliniko_attendees")  # fmt: skip


@dataclass(frozen=True)
class Periods:
    keep_sync_log: timedelta
    keep_removed: timedelta


@dataclass
class Pruned:
    """What one prune deleted; `complete` is False when it stopped at its batch budget with rows still to go."""

    periods: Periods
    sync_log: int = 0
    removed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PRUNED_MIRRORS, 0))
    complete: bool = True

    def as_dict(self) -> dict[str, Any]:
        return {
            "keep_sync_log_seconds": int(self.periods.keep_sync_log.total_seconds()),
            "keep_removed_seconds": int(self.periods.keep_removed.total_seconds()),
            "sync_log_deleted": self.sync_log,
            **{f"{table}_deleted": count for table, count in self.removed.items()},
            "complete": self.complete,
        }


def periods(
    conn: DictConnection, *, keep_sync_log: timedelta | None = None, keep_removed: timedelta | None = None
) -> Periods:
    """The installation's retention periods, after storing those given (in the caller's transaction)."""
    row = conn.execute(
        query("retention_settings"), {"keep_sync_log": keep_sync_log, "keep_removed": keep_removed}
    ).fetchone()
    assert row is not None, "migration 010 writes the settings row"
    return Periods(row["keep_sync_log"], row["keep_removed"])


def prune(
    conn: DictConnection,
    *,
    batch: int = BATCH,
    max_batches: int | None = None,
) -> Pruned:
    """Delete sync_log rows and removed mirror rows older than the stored periods, `batch` rows per transaction.

    `conn` must be in autocommit mode: each batch commits on its own. With `max_batches`, at most that many batches
    per table (bounded work: what is left waits for the next prune).
    """
    if not conn.autocommit:
        raise ValueError("prune needs an autocommit connection: each batch is its own transaction")
    result = Pruned(periods(conn))

    def batches(statement: Any, keep: timedelta) -> int:
        deleted = 0
        for done in itertools.count():
            if max_batches is not None and done >= max_batches:
                result.complete = False
                return deleted
            row = conn.execute(statement, {"keep": keep, "batch": batch}).fetchone()
            count = int(row["deleted"]) if row else 0
            deleted += count
            if count < batch:
                return deleted
        raise AssertionError("unreachable")

    result.sync_log = batches(query("retention_sync_log"), result.periods.keep_sync_log)
    for table in PRUNED_MIRRORS:
        statement = sql.SQL(query("retention_removed")).format(table=sql.Identifier(table))
        result.removed[table] = batches(statement, result.periods.keep_removed)
    return result
