"""`cliniko-sync emulator` and `demo`."""

from __future__ import annotations


def emulator() -> None:
    """Serve a synthetic Cliniko API on loopback (being built)."""
    from cliniko_sync.errors import ClinikoSyncError

    raise ClinikoSyncError("emulator is not built yet")


def demo() -> None:
    """Zero-configuration demo: embedded database, built-in emulator, a full sync, then the active patients."""
    from cliniko_sync.config import current_settings
    from cliniko_sync.demo import demo as run

    run(current_settings())
