"""`cliniko-sync list-active` and `status`."""

from __future__ import annotations


def list_active() -> None:
    """List an organization's active patients (being built)."""
    from cliniko_sync.errors import ClinikoSyncError

    raise ClinikoSyncError("list-active is not built yet")


def status() -> None:
    """Show sync status (being built)."""
    from cliniko_sync.errors import ClinikoSyncError

    raise ClinikoSyncError("status is not built yet")
