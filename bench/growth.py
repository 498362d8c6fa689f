"""`python -m bench.growth`: growth that stays flat (issue 23) — the commands cron and monitoring run every minute,
timed behind a long sync_log and behind a short one.

Five clinics, each synced a minute ago (so nothing is due), with 10,000 and then 1,000,000 older sync_log rows behind
them: a run every 15 minutes going back in time, a full one a day, about one in fifty failed, partial or skipped.
The rows come from one INSERT ... SELECT generate_series. Each command runs as a process, best of a few runs; the
target is the 1M time within 1.5 x the 10k time. `python -m bench` runs this too and adds its rows to the report.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

CLINICS = 5
SMALL, LARGE = 10_000, 1_000_000
RUNS = 5
TARGET_RATIO = 1.5
COMMANDS = {
    "status --format json": ("status", "--format", "json"),
    "status --format prometheus": ("status", "--format", "prometheus"),
    "sync --due, nothing due": ("sync", "--due"),
}

# Older runs of five clinics, newest first from 20 minutes ago: run n of a clinic started n × 15 minutes before that.
OLDER_RUNS = """
INSERT INTO sync_log (organization_id, status, mode, started_at, heartbeat_at, finished_at, as_of, window_days,
                      stats, error_class, error_message)
SELECT 'clinic-' || mod(n, %(clinics)s), r.status,
       CASE WHEN r.status = 'skipped' THEN NULL WHEN mod(r.run, 96) = 0 THEN 'full' ELSE 'incremental' END,
       r.started, r.started + interval '20 seconds', r.started + interval '20 seconds', r.started, 45,
       '{"requests": 7, "rate_limited": 0, "history_complete": true}',
       CASE WHEN r.status = 'failed' THEN 'ClinikoUnavailableError' END,
       CASE WHEN r.status = 'failed' THEN 'Cliniko did not answer' END
FROM generate_series(1, %(rows)s) AS n,
     LATERAL (SELECT n / %(clinics)s AS run) AS k,
     LATERAL (
         SELECT k.run,
                CASE mod(k.run, 100) WHEN 7 THEN 'failed' WHEN 37 THEN 'partial' WHEN 67 THEN 'skipped'
                                     ELSE 'success' END AS status,
                now() - interval '20 minutes' - k.run * interval '15 minutes' AS started
     ) AS r
"""
# What sync_log_skipped.sql counts as each skipped run is recorded.
SKIPPED_COUNTS = """
UPDATE organizations o
SET skipped_runs = (SELECT count(*) FROM sync_log s WHERE s.organization_id = o.id AND s.status = 'skipped')
"""
# Each clinic's latest run: a success a minute ago (so nothing is due), and a full one an hour ago.
RECENT_RUNS = """
INSERT INTO sync_log (organization_id, status, mode, started_at, heartbeat_at, finished_at, as_of, window_days, stats)
SELECT o.id, 'success', r.mode, now() - r.age, now() - r.age, now() - r.age + interval '5 seconds', now() - r.age,
       45, '{"requests": 7, "rate_limited": 0, "history_complete": true}'
FROM organizations o, (VALUES ('full', interval '1 hour'), ('incremental', interval '1 minute')) AS r (mode, age)
"""


def fill(url: str, rows: int) -> None:
    """Five clinics with `rows` older runs behind their latest ones (any earlier rows are replaced)."""
    from bench.harness import say
    from cliniko_sync.db import connect
    from cliniko_sync.orgs import add_organization

    with connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE sync_log")
        for n in range(CLINICS):
            if not conn.execute("SELECT 1 FROM organizations WHERE id = %s", (f"clinic-{n}",)).fetchone():
                add_organization(conn, f"clinic-{n}", name=f"Clinic {n}")
        say(f"growth: {rows:,} older sync_log rows behind {CLINICS} clinics")
        conn.execute(OLDER_RUNS, {"clinics": CLINICS, "rows": rows})
        conn.execute(SKIPPED_COUNTS)
        conn.execute(RECENT_RUNS)
        conn.execute("VACUUM ANALYZE sync_log")


def time_commands(env: dict[str, str], runs: int) -> dict[str, float]:
    """Best wall time of each per-minute command, as a process."""
    from bench.harness import cliniko_sync_command, run_measured

    best: dict[str, float] = {}
    for name, args in COMMANDS.items():
        timings = []
        for _ in range(runs):
            measured = run_measured([*cliniko_sync_command(), "-q", *args], env)
            if measured.returncode != 0:
                raise SystemExit(f"bench: {name} failed ({measured.returncode}): {measured.stderr.strip()[-2000:]}")
            if name.startswith("sync") and measured.stdout.strip():
                raise SystemExit(f"bench: {name} synced something: {measured.stdout[:500]}")
            timings.append(measured.wall_seconds)
        best[name] = min(timings)
    return best


def query_milliseconds(url: str, runs: int) -> dict[str, float]:
    """The server's own execution time (EXPLAIN ANALYZE, best of `runs`) of the queries those commands run: the
    process times above carry Python's start, which a busy machine makes noisy."""
    from cliniko_sync.db import connect, query
    from cliniko_sync.sync.pipeline import LOCK_NAMESPACE
    from cliniko_sync.sync.schedule import CANDIDATES, CLAIM_NAMESPACE

    due = {"sync_namespace": LOCK_NAMESPACE, "claim_namespace": CLAIM_NAMESPACE, "organization_id": None,
           "exclude": [], "limit": CANDIDATES}  # fmt: skip
    best = {}
    with connect(url, autocommit=True) as conn:
        for name, params in (("status", {"organization_id": None}), ("due_organizations", due)):
            timings = []
            for _ in range(runs):
                plan = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + query(name), params).fetchone()
                timings.append(plan["QUERY PLAN"][0]["Execution Time"])
            best[f"{name}.sql"] = min(timings)
    return best


def measure_growth(small: int = SMALL, large: int = LARGE, runs: int = RUNS) -> dict[str, Any]:
    from bench.harness import scratch_database
    from cliniko_sync.db import upgrade

    with scratch_database() as url:
        upgrade(url)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("CLINIKO_SYNC_")},
            "DATABASE_URL": url,
        }
        figures: dict[str, Any] = {"growth_rows": [small, large]}
        for rows in (small, large):
            fill(url, rows)
            figures[f"growth_{rows}"] = time_commands(env, runs)
            figures[f"growth_{rows}_query_ms"] = query_milliseconds(url, runs)
    return figures


def report_rows(f: dict[str, Any]) -> list[tuple[str, ...]]:
    """The rows `python -m bench` adds to its table: each command behind the short and the long sync_log."""
    small, large = f["growth_rows"]
    rows = []
    for name in COMMANDS:
        short, long = f[f"growth_{small}"][name], f[f"growth_{large}"][name]
        ratio = long / short
        rows.append(
            (
                f"`{name}` behind {large:,} sync_log rows vs {small:,}",
                f"{long:.2f} s vs {short:.2f} s ({ratio:.2f} ×)",
                "–",
                "–",
                f"≤ {TARGET_RATIO} ×",
                "pass" if ratio <= TARGET_RATIO else "**MISS**",
            )
        )
    for name, short in f[f"growth_{small}_query_ms"].items():
        long = f[f"growth_{large}_query_ms"][name]
        rows.append(
            (
                f"`{name}` in the server, behind {large:,} sync_log rows vs {small:,}",
                f"{long:.2f} ms vs {short:.2f} ms",
                "–",
                "–",
                "flat",
                "pass" if long <= TARGET_RATIO * short + 1 else "**MISS**",
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.growth", description=__doc__)
    parser.add_argument("--small", type=int, default=SMALL)
    parser.add_argument("--large", type=int, default=LARGE)
    parser.add_argument("--runs", type=int, default=RUNS)
    args = parser.parse_args()
    figures = measure_growth(args.small, args.large, args.runs)
    sys.stdout.write(json.dumps(figures) + "\n")
    for row in report_rows(figures):
        sys.stdout.write("| " + " | ".join(row) + " |\n")


if __name__ == "__main__":
    main()
