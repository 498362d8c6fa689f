"""Pytest fixtures for the ways a database is reached in real use (registered from conftest.py): a PgBouncer in front
of the test server (`make_pgbouncer`), and a throwaway PostgreSQL that speaks TLS with a certificate from a CA of
the test's own (`tls_server`). Both skip, saying why, where the binaries they need are missing."""

from __future__ import annotations

import datetime
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

DEBIAN_POSTGRES = Path("/usr/lib/postgresql")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def with_params(url: str, **params: str | int | None) -> str:
    """The URL with these connection parameters replaced (None drops one)."""
    merged = {**psycopg.conninfo.conninfo_to_dict(url), **params}
    return psycopg.conninfo.make_conninfo(**{k: v for k, v in merged.items() if v is not None})


def _wait_until_accepting(url: str, process: subprocess.Popen[bytes] | None, log: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            with psycopg.connect(url, connect_timeout=2):
                return
        except psycopg.OperationalError:
            exited = process is not None and process.poll() is not None
            if exited or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start: {log.read_text() if log.exists() else ''}") from None
            time.sleep(0.1)


def _scratch_directory(prefix: str) -> Path:
    """A new directory that a server running as another user can reach (pytest's own are private to root)."""
    root = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else Path(tempfile.gettempdir())
    directory = Path(tempfile.mkdtemp(prefix=prefix, dir=root))
    directory.chmod(0o755)
    return directory


def _as_user(path: Path, user: str | None) -> None:
    """Hand a directory and what is in it to the (unprivileged) user a server runs as."""
    if user is None:
        return
    entry = pwd.getpwnam(user)
    for item in [path, *path.rglob("*")]:
        os.chown(item, entry.pw_uid, entry.pw_gid)


# --- PgBouncer -------------------------------------------------------------------------------------------------


@dataclass
class PgBouncer:
    port: int
    mode: str
    certificates: TlsCertificates | None = None  # clients connect over TLS (verify-full) to its certificate

    def url(self, database_url: str) -> str:
        """The same database, user and password, through this PgBouncer."""
        if self.certificates is None:
            return with_params(database_url, host="127.0.0.1", port=self.port, hostaddr=None)
        return with_params(database_url, host="localhost", port=self.port, hostaddr=None, sslmode="verify-full",
                           sslrootcert=str(self.certificates.ca_file))  # fmt: skip


@pytest.fixture
def make_pgbouncer(pg_admin_url: str) -> Iterator[Callable[..., PgBouncer]]:
    """`make_pgbouncer("session" | "transaction", certificates=None)` starts a PgBouncer on a free loopback port in
    front of the test server, for every database on it, authenticating the test URL's user (with its password, if it
    has one); with `certificates` (TlsCertificates), clients reach it over TLS only."""
    binary = shutil.which("pgbouncer") or next(
        (path for path in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.access(path, os.X_OK)), None
    )
    if binary is None:
        pytest.skip("pgbouncer is not installed (Debian: apt-get install pgbouncer)")
    server = psycopg.conninfo.conninfo_to_dict(pg_admin_url)
    host = str(server.get("host") or "127.0.0.1")
    user, password = str(server.get("user") or "postgres"), server.get("password")
    # PgBouncer refuses to run as root: as root, run it as the user whose socket directory it must reach.
    run_as = None
    if os.geteuid() == 0:
        run_as = pwd.getpwuid(os.stat(host).st_uid).pw_name if host.startswith("/") else "postgres"
    processes: list[subprocess.Popen[bytes]] = []
    directories: list[Path] = []

    def start(mode: str, certificates: TlsCertificates | None = None) -> PgBouncer:
        directory = _scratch_directory(f"cliniko-sync-pgbouncer-{mode}-")
        directories.append(directory)
        port = free_port()
        (directory / "users.txt").write_text(f'"{user}" "{password or ""}"\n')
        (directory / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"* = host={host} port={server.get('port') or 5432}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
            f"auth_type = {'scram-sha-256' if password else 'trust'}\nauth_file = {directory / 'users.txt'}\n"
            f"pool_mode = {mode}\nmax_client_conn = 200\ndefault_pool_size = 20\n"
            f"logfile = {directory / 'pgbouncer.log'}\npidfile = {directory / 'pgbouncer.pid'}\n"
        )
        if certificates is not None:
            certificate, key = certificates.install(directory, run_as)
            with (directory / "pgbouncer.ini").open("a") as ini:
                ini.write(f"client_tls_sslmode = require\nclient_tls_cert_file = {certificate}\n"
                          f"client_tls_key_file = {key}\n")  # fmt: skip
        _as_user(directory, run_as)
        command = [binary, *(["-u", run_as] if run_as else []), str(directory / "pgbouncer.ini")]
        with (directory / "stderr.log").open("wb") as errors:
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=errors)
        processes.append(process)
        bouncer = PgBouncer(port, mode, certificates)
        _wait_until_accepting(bouncer.url(pg_admin_url), process, directory / "stderr.log")
        return bouncer

    yield start
    for process in processes:
        process.terminate()
        process.wait(timeout=10)
    for directory in directories:
        shutil.rmtree(directory, ignore_errors=True)


# --- a PostgreSQL with TLS -------------------------------------------------------------------------------------


@dataclass
class TlsCertificates:
    """A test CA, a certificate it signed for `localhost` (and no other name), and a CA that signed nothing here."""

    ca_file: Path
    other_ca_file: Path
    server_certificate: bytes  # PEM
    server_key: bytes  # PEM, unencrypted

    def install(self, directory: Path, user: str | None) -> tuple[Path, Path]:
        """The server's certificate and key files in `directory`, the key readable by its owner only."""
        certificate, key = directory / "server.crt", directory / "server.key"
        certificate.write_bytes(self.server_certificate)
        key.write_bytes(self.server_key)
        key.chmod(0o600)
        _as_user(directory, user)
        return certificate, key

    def url(self, port: int, *, host: str = "localhost", ca_file: Path | None = None, dbname: str = "postgres",
            user: str = "postgres") -> str:  # fmt: skip
        """A verify-full URL for a server on this port (by default the one the certificate names, and its CA)."""
        return psycopg.conninfo.make_conninfo(
            host=host, port=port, user=user, dbname=dbname, sslmode="verify-full",
            sslrootcert=str(ca_file or self.ca_file),
        )  # fmt: skip


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    names: list[x509.GeneralName],
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def tls_certificates() -> Iterator[TlsCertificates]:
    directory = _scratch_directory("cliniko-sync-ca-")
    files = {}
    for name in ("test-ca", "other-ca"):
        key = ec.generate_private_key(ec.SECP256R1())
        certificate = _certificate(name, key, None, key, [])
        files[name] = (directory / f"{name}.crt", certificate, key)
        files[name][0].write_bytes(_pem(certificate))
        files[name][0].chmod(0o644)
    _, ca, ca_key = files["test-ca"]
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_certificate = _certificate("localhost", server_key, ca, ca_key, [x509.DNSName("localhost")])
    key_pem = server_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    yield TlsCertificates(files["test-ca"][0], files["other-ca"][0], _pem(server_certificate), key_pem)
    shutil.rmtree(directory, ignore_errors=True)


@dataclass
class TlsServer:
    port: int
    certificates: TlsCertificates

    def url(self, **options: Any) -> str:
        return self.certificates.url(self.port, **options)


def _server_binaries() -> tuple[Path, str | None] | None:
    """initdb and pg_ctl of a PostgreSQL built with SSL (the embedded package's is not): Debian's newest, run as user
    postgres when root."""
    debian = sorted(DEBIAN_POSTGRES.glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name))
    if not debian:
        return None
    return debian[-1].parent, "postgres" if os.geteuid() == 0 else None


@pytest.fixture(scope="module")
def tls_server(tls_certificates: TlsCertificates) -> Iterator[TlsServer]:
    """A throwaway PostgreSQL on a free loopback port that accepts only TLS connections (trust authentication), with
    the test CA's certificate for `localhost`."""
    binaries = _server_binaries()
    if binaries is None:
        pytest.skip(f"no PostgreSQL server built with SSL under {DEBIAN_POSTGRES} (apt-get install postgresql-15)")
    bindir, run_as = binaries
    directory = _scratch_directory("cliniko-sync-tls-")
    pgdata = directory / "pgdata"
    _as_user(directory, run_as)
    subprocess.run([str(bindir / "initdb"), "-D", str(pgdata), "-U", "postgres", "--auth=trust", "--no-sync"],
                   check=True, capture_output=True, user=run_as)  # fmt: skip
    port = free_port()
    with (pgdata / "postgresql.conf").open("a") as conf:
        conf.write(
            f"listen_addresses = 'localhost'\nport = {port}\nunix_socket_directories = '{pgdata}'\n"
            "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\nfsync = off\n"
        )
    (pgdata / "pg_hba.conf").write_text(
        "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostssl all all ::1/128 trust\n"
    )
    tls_certificates.install(pgdata, run_as)
    log = directory / "server.log"
    started = subprocess.run([str(bindir / "pg_ctl"), "-D", str(pgdata), "-l", str(log), "-w", "start"],
                             capture_output=True, text=True, user=run_as)  # fmt: skip
    if started.returncode != 0:
        said = log.read_text() if log.exists() else started.stderr
        shutil.rmtree(directory, ignore_errors=True)
        raise RuntimeError(f"the TLS test server did not start: {said}")
    server = TlsServer(port, tls_certificates)
    try:
        _wait_until_accepting(server.url(), None, log)
        yield server
    finally:
        subprocess.run([str(bindir / "pg_ctl"), "-D", str(pgdata), "-m", "immediate", "stop"],
                       capture_output=True, user=run_as)  # fmt: skip
        shutil.rmtree(directory, ignore_errors=True)
