"""contrib/systemd/: the units pass `systemd-analyze verify` (and score OK in `systemd-analyze security`) wherever
systemd-analyze is installed (Debian: `apt-get install systemd`); everywhere, they keep secrets out of the unit, take
them as credentials, and their commands are ones the CLI accepts. tests/integration/test_libpq_passwords.py runs the
units' commands with the units' environment against a password-protected database."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_cli_in_process
from systemd_helpers import INSTALLED, UNITS, settings, values

from cliniko_sync.config import ENCRYPTION_KEY_CREDENTIAL

SERVICES = sorted(UNITS.glob("*.service"))
TIMERS = sorted(UNITS.glob("*.timer"))
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed (apt-get install systemd)"
)


def units_for_this_checkout(directory: Path) -> list[Path]:
    """The units with ExecStart= pointing at this environment's cliniko-sync (verify checks that it exists)."""
    script = Path(sys.executable).with_name("cliniko-sync")
    copies = []
    for unit in [*SERVICES, *TIMERS]:
        copy = directory / unit.name
        copy.write_text(unit.read_text(encoding="utf-8").replace(INSTALLED, str(script)))
        copies.append(copy)
    return copies


def test_a_service_and_a_timer_for_the_sync_and_for_the_metrics() -> None:
    assert [unit.name for unit in SERVICES] == ["cliniko-sync-metrics.service", "cliniko-sync.service"]
    for timer in TIMERS:
        assert values(timer, "Unit") == [timer.with_suffix(".service").name]
        assert values(timer, "WantedBy") == ["timers.target"]


@pytest.mark.parametrize("service", SERVICES, ids=lambda path: path.name)
def test_hardened_with_no_secret_in_the_unit(service: Path) -> None:
    given = dict(settings(service))
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes", "ProtectHome": "yes",
                       "User": "cliniko-sync", "CapabilityBoundingSet": ""}.items():  # fmt: skip
        assert given.get(key) == value, key
    environment = " ".join(values(service, "Environment"))
    assert "PGPASSFILE=%d/pgpass" in environment and "DATABASE_URL=service=cliniko-sync" in environment
    assert "pgpass:/etc/cliniko-sync/pgpass" in values(service, "LoadCredential")
    assert "PASSWORD" not in environment.upper() and "CREDENTIALS_ENCRYPTION_KEY=" not in environment


def test_the_sync_takes_the_encryption_key_as_a_credential() -> None:
    assert f"{ENCRYPTION_KEY_CREDENTIAL}:/etc/cliniko-sync/encryption.key" in values(
        UNITS / "cliniko-sync.service", "LoadCredential"
    )


@pytest.mark.parametrize("service", SERVICES, ids=lambda path: path.name)
def test_the_command_is_one_the_cli_accepts(service: Path) -> None:
    (command,) = values(service, "ExecStart")
    program, *args = command.split()
    assert program == INSTALLED
    result = run_cli_in_process([*args, "--help"], {"PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr


@needs_systemd_analyze
def test_systemd_analyze_verify_accepts_the_units(tmp_path: Path) -> None:
    assert SYSTEMD_ANALYZE is not None
    units = units_for_this_checkout(tmp_path)
    verified = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", "--man=no", *map(str, units)], capture_output=True, text=True, timeout=120
    )
    # Unknown keys and bad values are only warnings (exit 0): any output at all fails.
    assert (verified.returncode, verified.stdout, verified.stderr) == (0, "", "")


@needs_systemd_analyze
@pytest.mark.parametrize("service", SERVICES, ids=lambda path: path.name)
def test_systemd_analyze_security_rates_the_services_ok(service: Path, tmp_path: Path) -> None:
    assert SYSTEMD_ANALYZE is not None
    (copy,) = [unit for unit in units_for_this_checkout(tmp_path) if unit.name == service.name]
    rated = subprocess.run(
        [SYSTEMD_ANALYZE, "security", "--offline=true", "--no-pager", "--threshold=20", str(copy)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert rated.returncode == 0, rated.stdout[-1500:] + rated.stderr  # exposure at most 2.0 of 10
