"""TLS to the database (issue 20): `sslmode=verify-full` with `sslrootcert` works against a server whose certificate
comes from a CA of its own; a certificate from another CA, or one that does not name the host connected to, is one
line and exit 78 (a configuration error: trying again would not help), never a traceback."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from conftest import CliResult, run_cli_in_process
from emulator_fixtures import EMULATOR_API_KEY
from psycopg.rows import dict_row
from server_fixtures import TlsCertificates, TlsServer
from sync_helpers import SYNC_ENV, setup_org

from cliniko_sync import db

pytestmark = pytest.mark.usefixtures("sync_environment")

DATABASE = "cliniko_sync_tls"


@pytest.fixture
def tls_database(tls_server: TlsServer) -> Iterator[str]:
    """A fresh, empty database on the TLS server; its verify-full URL."""
    with psycopg.connect(tls_server.url(), autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {DATABASE}")
    yield tls_server.url(dbname=DATABASE)
    with psycopg.connect(tls_server.url(), autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")


def cli(env: dict[str, str], url: str, *args: str) -> CliResult:
    return run_cli_in_process(list(args), {**env, **SYNC_ENV, "DATABASE_URL": url})


def assert_one_line(result: CliResult, code: int, *words: str) -> None:
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for word in words:
        assert word in lines[0], lines[0]


def upgrade_and_sync(env: dict[str, str], url: str, emulator: Any) -> None:
    assert "sslmode=verify-full" in url
    upgraded = cli(env, url, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        setup_org(conn, emulator.base_url, EMULATOR_API_KEY, "surf-rehab")
        for _ in range(2):  # full, then incremental
            synced = cli(env, url, "sync", "surf-rehab")
            assert synced.returncode == 0, synced.stderr
        rows = conn.execute("SELECT status, mode FROM sync_log ORDER BY id").fetchall()
        assert rows == [{"status": "success", "mode": "full"}, {"status": "success", "mode": "incremental"}]


def test_verify_full_upgrades_and_syncs_over_tls(tls_database: str, cli_env: dict[str, str], emulator: Any) -> None:
    with psycopg.connect(tls_database) as conn:
        # The server takes only TLS connections (pg_hba: hostssl), and says this one is encrypted.
        assert conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone() == (True,)
        problem = db.server_version_problem(conn.info.server_version)
    if problem:
        pytest.skip(f"the TLS test server is Debian's, which this version refuses: {problem}")
    upgrade_and_sync(cli_env, tls_database, emulator)


def test_verify_full_through_a_tls_pgbouncer(
    make_pgbouncer: Any, tls_certificates: TlsCertificates, empty_database_url: str, cli_env: dict[str, str],
    emulator: Any,
) -> None:  # fmt: skip
    """The same over TLS to a PgBouncer (session mode) in front of the test server, as a managed service's pooler."""
    bouncer = make_pgbouncer("session", certificates=tls_certificates)
    upgrade_and_sync(cli_env, bouncer.url(empty_database_url), emulator)


def test_a_certificate_from_another_ca_is_one_line_and_exit_78(
    tls_database: str, tls_server: TlsServer, cli_env: dict[str, str]
) -> None:
    url = tls_server.url(dbname=DATABASE, ca_file=tls_server.certificates.other_ca_file)
    for command in (["db", "upgrade"], ["status"], ["sync", "surf-rehab"]):
        assert_one_line(cli(cli_env, url, *command), 78, "not trusted over TLS", "not signed by the CA in sslrootcert")


def test_a_certificate_for_another_host_name_is_one_line_and_exit_78(
    tls_database: str, tls_server: TlsServer, cli_env: dict[str, str]
) -> None:
    # The certificate names localhost only; 127.0.0.1 is the same server under a name the certificate does not carry.
    url = tls_server.url(dbname=DATABASE, host="127.0.0.1")
    for command in (["db", "upgrade"], ["sync", "surf-rehab"]):
        assert_one_line(cli(cli_env, url, *command), 78, "not trusted over TLS", "does not name the host")


def test_a_missing_root_certificate_file_is_one_line_and_exit_78(
    tls_database: str, tls_server: TlsServer, cli_env: dict[str, str], tmp_path: Any
) -> None:
    url = tls_server.url(dbname=DATABASE, ca_file=tmp_path / "missing.crt")
    assert_one_line(cli(cli_env, url, "db", "upgrade"), 78, "sslrootcert file cannot be read")
