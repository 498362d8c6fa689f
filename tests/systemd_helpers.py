"""Reading the units of contrib/systemd/ in tests: their settings, in order, as systemd would see them."""

from __future__ import annotations

from pathlib import Path

UNITS = Path(__file__).parents[1] / "contrib" / "systemd"
INSTALLED = "/usr/local/bin/cliniko-sync"  # where the units expect the tool (pipx with PIPX_BIN_DIR=/usr/local/bin)


def settings(unit: Path) -> list[tuple[str, str]]:
    """(key, value) of every setting, in order (comments and section headers left out)."""
    found = []
    for line in unit.read_text(encoding="utf-8").splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            found.append((key, value))
    return found


def values(unit: Path, key: str) -> list[str]:
    """Every value of `key`, in order."""
    return [value for name, value in settings(unit) if name == key]
