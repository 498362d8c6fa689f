"""`cliniko-sync emulator` and `demo`."""

from __future__ import annotations


def emulator() -> None:
    """Serve a synthetic Cliniko API on loopback (being built)."""
    from cliniko_sync.errors import ClinikoSyncError

    raise ClinikoSyncError("emulator is not built yet")


def demo() -> None:
    """Run the zero-configuration demo (being built)."""
    from cliniko_sync.errors import ClinikoSyncError

    raise ClinikoSyncError("demo is not built yet")
