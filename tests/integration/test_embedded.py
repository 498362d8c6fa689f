"""The embedded default database: started on demand, shared by concurrent processes, stopped by the last one,
and not kept alive forever by a process killed with SIGKILL."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from conftest import run_cli

HOLDER = """
import sys
from cliniko_sync import db
from cliniko_sync.config import Settings
url = db.database_url(Settings())
with db.connect(url) as conn:
    conn.execute("SELECT 1")
print(url, flush=True)
sys.stdin.readline()
"""


def _postmaster_pid(data_dir: Path) -> int | None:
    pid_file = data_dir / "pgdata" / "postmaster.pid"
    if not pid_file.exists():
        return None
    pid = int(pid_file.read_text().splitlines()[0])
    return pid if psutil.pid_exists(pid) else None


def _holder(env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def _wait_until(predicate, seconds: float = 30) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


@pytest.fixture
def embedded_env(cli_env: dict[str, str]) -> Iterator[dict[str, str]]:
    root = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    data_dir = tempfile.mkdtemp(prefix="cliniko-sync-embedded-", dir=root)
    env = {k: v for k, v in cli_env.items() if k != "DATABASE_URL"}
    env["CLINIKO_SYNC_DATA_DIR"] = data_dir
    yield env
    shutil.rmtree(data_dir, ignore_errors=True)


def test_upgrade_on_the_embedded_default_twice(embedded_env: dict[str, str]) -> None:
    first = run_cli(["db", "upgrade"], embedded_env)
    assert first.returncode == 0, first.stderr
    assert "applied 001_initial.sql" in first.stdout
    second = run_cli(["db", "upgrade"], embedded_env)
    assert second.returncode == 0, second.stderr
    assert "nothing pending" in second.stdout
    data_dir = Path(embedded_env["CLINIKO_SYNC_DATA_DIR"])
    assert _wait_until(lambda: _postmaster_pid(data_dir) is None), "the server outlived the last process"


def test_concurrent_processes_share_one_server_and_survive_a_sigkill(embedded_env: dict[str, str]) -> None:
    data_dir = Path(embedded_env["CLINIKO_SYNC_DATA_DIR"])
    first, url_first = _holder(embedded_env)
    second, url_second = _holder(embedded_env)
    try:
        assert url_first == url_second
        server = _postmaster_pid(data_dir)
        assert server is not None
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        # The next invocation still works, on the same server, and prunes the dead handle.
        result = run_cli(["db", "upgrade"], embedded_env)
        assert result.returncode == 0, result.stderr
        assert _postmaster_pid(data_dir) == server
    finally:
        assert second.stdin is not None
        second.stdin.write("\n")
        second.stdin.flush()
        second.wait(timeout=30)
        first.kill()
    assert _wait_until(lambda: _postmaster_pid(data_dir) is None), "the last process did not stop the server"


def test_a_killed_last_process_does_not_keep_the_server_forever(embedded_env: dict[str, str]) -> None:
    data_dir = Path(embedded_env["CLINIKO_SYNC_DATA_DIR"])
    holder, _ = _holder(embedded_env)
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=10)
    assert _postmaster_pid(data_dir) is not None  # orphaned until the next invocation
    result = run_cli(["db", "status"], embedded_env)
    assert result.returncode == 0, result.stderr
    assert _wait_until(lambda: _postmaster_pid(data_dir) is None), "the server outlived every live process"
