"""`status --output FILE`: the report replaces FILE atomically (node_exporter's textfile collector must never read
half a file), readable by the collector's user, with nothing left behind when it fails."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest

from cliniko_sync.output import stdout_or_file


def test_the_textfile_is_what_stdout_would_be_and_world_readable(cli: Any, tmp_path: Path) -> None:
    assert cli("org", "add", "surf-rehab", "--name", "Surf Rehab").returncode == 0
    target = tmp_path / "cliniko_sync.prom"
    target.write_text("old\n")
    written = cli("status", "--format", "prometheus", "--output", str(target))
    assert written.returncode == 0 and written.stdout == "", written.stderr
    printed = cli("status", "--format", "prometheus").stdout
    assert target.read_text() == printed and 'cliniko_sync_enabled{organization="surf-rehab"} 1' in printed
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert [path.name for path in tmp_path.iterdir()] == ["cliniko_sync.prom"]


def test_with_max_age_the_file_is_written_and_the_exit_code_says_stale(cli: Any, tmp_path: Path) -> None:
    assert cli("org", "add", "surf-rehab", "--name", "Surf Rehab").returncode == 0
    target = tmp_path / "status.json"
    result = cli("status", "--max-age", "2h", "--format", "json", "--output", str(target))
    assert result.returncode == 1 and "stale: surf-rehab (never succeeded)" in result.stderr
    assert '"organization_id": "surf-rehab"' in target.read_text()


def test_a_missing_directory_is_one_line_and_exit_78(cli: Any, tmp_path: Path) -> None:
    result = cli("status", "--format", "prometheus", "--output", str(tmp_path / "missing" / "cliniko_sync.prom"))
    assert result.returncode == 78
    (line,) = result.stderr.splitlines()
    assert "cannot write" in line and "missing" in line


def test_a_failure_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "cliniko_sync.prom"
    target.write_text("old\n")
    with pytest.raises(RuntimeError), stdout_or_file(target):
        print("half a file")
        raise RuntimeError("the report failed")
    assert target.read_text() == "old\n"
    assert [path.name for path in tmp_path.iterdir()] == ["cliniko_sync.prom"]
