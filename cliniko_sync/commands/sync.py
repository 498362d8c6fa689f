"""`cliniko-sync sync`."""

from __future__ import annotations


def sync() -> None:
    """Sync organizations from Cliniko (being built)."""
    from cliniko_sync.errors import ClinikoSyncError

    raise ClinikoSyncError("sync is not built yet")
