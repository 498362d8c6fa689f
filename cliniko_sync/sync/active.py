"""Recomputing an organization's active_patients from the mirror, set-based, in the caller's transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from cliniko_sync.db import DictConnection, query


@dataclass
class ActiveCounts:
    active: int = 0
    added: int = 0
    updated: int = 0
    removed: int = 0


def recompute_active_patients(
    conn: DictConnection, organization_id: str, *, as_of: datetime, window_days: int, include_upcoming: bool
) -> ActiveCounts:
    """Make active_patients hold exactly the patients active as of `as_of`; the caller commits."""
    params = {
        "org": organization_id,
        "as_of": as_of,
        "window_from": as_of - timedelta(days=window_days),
        "include_upcoming": include_upcoming,
    }
    conn.execute("SET LOCAL work_mem = '128MB'")  # the per-patient aggregate stays in memory
    conn.execute(query("active_counts"), params)
    conn.execute(query("active_details"), params)
    inserted = [row["inserted"] for row in conn.execute(query("active_apply"), params).fetchall()]
    removed = conn.execute(query("active_remove"), params).rowcount
    conn.execute("DROP TABLE active_now, active_details")
    added = sum(1 for flag in inserted if flag)
    return ActiveCounts(active=len(inserted), added=added, updated=len(inserted) - added, removed=removed)
