"""Durations as the options take them (`90s`, `15m`, `2h`, `1d`) and print them back: shared by orgs, reports and the
commands, below all of them (it imports only errors)."""

from __future__ import annotations

import re
from datetime import timedelta

from cliniko_sync.errors import UsageError

_DURATION = re.compile(r"(\d{1,9})([smhd])")
# Largest first: format_duration prints the largest unit that divides the value.
UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_duration(text: str) -> timedelta:
    """`90s`, `30m`, `2h`, `1d` → a timedelta; anything else is a usage error (exit 2)."""
    match = _DURATION.fullmatch(text.strip())
    if not match or int(match.group(1)) == 0:
        raise UsageError(f"invalid duration {text[:40]!r}: use a positive whole number and s, m, h or d (e.g. 2h)")
    return timedelta(seconds=int(match.group(1)) * UNIT_SECONDS[match.group(2)])


def format_duration(value: timedelta) -> str:
    """The largest whole unit of s, m, h, d: 900 s → `15m`, 86400 s → `1d`, 5400 s → `90m`."""
    seconds = int(value.total_seconds())
    unit = next(unit for unit, size in UNIT_SECONDS.items() if seconds % size == 0)
    return f"{seconds // UNIT_SECONDS[unit]}{unit}" if seconds else "0s"
