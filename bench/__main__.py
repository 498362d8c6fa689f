"""`python -m bench --size S|M|L`: measure the DESIGN §10 figures and a naive baseline's; print a markdown table.

Progress goes to stderr, the table to stdout. The sync and the baseline run as subprocesses (their peak RSS is read
with wait4), the emulator runs in a third process, PostgreSQL is a throwaway embedded server on /dev/shm unless
DATABASE_URL names a server (a scratch database is created on it and dropped afterwards).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from bench.emulator_process import API_KEY
from bench.harness import (
    CONTACT_EMAIL,
    Emulator,
    Measured,
    cliniko_sync_command,
    compiled_bytecode,
    run_measured,
    say,
    scratch_database,
    setup_organization,
)
from bench.many import measure_many, report_row
from cliniko_sync.emulator.quirks import BOOLEAN_QUIRKS
from cliniko_sync.sync.streams import STREAMS

SIZES = {"S": (1_000, 20_000), "M": (10_000, 200_000), "L": (100_000, 1_000_000)}
LIMIT_REQUESTS, LIMIT_SECONDS = 200, 6.0  # Cliniko's 200 per 60 s, scaled down tenfold in both directions
HELP_RUNS = 11


# --- the measurements --------------------------------------------------------------------------------------


def sync_run(env: dict[str, str], org_id: str, as_of: str, *extra: str) -> tuple[Measured, dict[str, Any]]:
    measured = run_measured(
        [*cliniko_sync_command(), "sync", org_id, "--as-of", as_of, "--format", "json", *extra], env
    )
    summary = measured.json()
    if summary["exit_code"] != 0:
        raise SystemExit(f"bench: sync of {org_id} ended {summary['status']}: {summary.get('error')}")
    return measured, summary


def baseline_run(env: dict[str, str], url: str, api_url: str, as_of: str) -> tuple[Measured, dict[str, Any]]:
    measured = run_measured(
        [sys.executable, "-m", "bench.baseline", "--database-url", url, "--api-url", api_url, "--api-key", API_KEY,
         "--as-of", as_of],
        env,
    )  # fmt: skip
    return measured, measured.json()


def active_list(url: str, org_id: str) -> list[tuple[Any, ...]]:
    """An organization's active_patients as readers see them, bookkeeping columns aside (to compare two runs)."""
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT cliniko_patient_id, recent_appointment_count, upcoming_appointment_count, total_appointment_count,"
            " last_appointment_date, next_appointment_date, recent_appointments::text, upcoming_appointments::text,"
            " history_complete FROM active_patients WHERE organization_id = %s ORDER BY cliniko_patient_id",
            (org_id,),
        ).fetchall()


def overlap_allowance(url: str, org_id: str, emulator: Emulator) -> dict[str, Any]:
    """What DESIGN §10 allows a no-change incremental sync, from the data rather than a fixed number: one request per
    endpoint, plus for each incremental stream the further pages of the records it re-reads, those Cliniko lists
    that changed inside the overlap (updated_at at or after the stream's cursor minus OVERLAP), 100 to a page.
    Counted in the emulator: for /attendees that includes the individual appointments' records, which the mirror
    leaves out but the crawl still meets."""
    from cliniko_sync.sync.stream_pass import OVERLAP

    allowed: dict[str, int] = {}
    in_overlap: dict[str, int] = {}
    with psycopg.connect(url) as conn:
        cursors = dict(
            conn.execute(
                "SELECT stream, cursor_updated_at FROM sync_state WHERE organization_id = %s", (org_id,)
            ).fetchall()
        )
    for stream in STREAMS:
        if not stream.incremental:
            allowed[stream.name] = sum(max(1, math.ceil(emulator.records.get(path, 0) / 100)) for path in stream.paths)
            continue
        cursor = cursors.get(stream.name)
        in_overlap[stream.name] = emulator.changed(stream.paths[0], cursor - OVERLAP) if cursor else 0
        allowed[stream.name] = max(1, math.ceil(in_overlap[stream.name] / 100))
    return {"incremental_allowed_requests": allowed, "incremental_overlap_records": in_overlap}


def recompute_seconds(url: str, org_id: str, as_of: str, runs: int = 3) -> float:
    """Median time of the active-patient recompute alone, each in its own committed transaction."""
    from cliniko_sync.db import connect
    from cliniko_sync.sync.active import recompute_active_patients

    moment = datetime.fromisoformat(as_of)
    timings = []
    with connect(url, autocommit=True) as conn:
        for _ in range(runs):
            started = time.perf_counter()
            with conn.transaction():
                recompute_active_patients(conn, org_id, as_of=moment, window_days=45, include_upcoming=False)
            timings.append(time.perf_counter() - started)
    return statistics.median(timings)


INGEST_PAGES = 2_000  # pages of individual appointments pre-fetched for the ingest measurement (200,000 rows)


def ingest_figures(url: str, api_url: str) -> dict[str, Any]:
    """Ingest with the emulator idle: pre-fetch up to INGEST_PAGES pages of individual appointments into memory (as
    the client gives them: parsed, with the body's text), then time only what the sync's writer does with them
    (records.listing_row, write_pages, save_state), into a fresh organization, with `batch` pages and the cursor
    after the last one per transaction."""
    from cliniko_sync.cliniko import records
    from cliniko_sync.cliniko.client import ClinikoClient
    from cliniko_sync.db import connect
    from cliniko_sync.sync import crawl
    from cliniko_sync.sync.mirror import StreamState, page_rows, save_state, write_pages
    from cliniko_sync.sync.stream_pass import PAGES_PER_TRANSACTION
    from cliniko_sync.sync.streams import STREAMS_BY_NAME

    stream = STREAMS_BY_NAME["individual_appointments"]
    pages: list[tuple[list[dict[str, Any]], str | None, crawl.Position]] = []
    with ClinikoClient(API_KEY, contact_email=CONTACT_EMAIL, api_url=api_url, rate_limit=None) as client:
        listing = crawl.pages(
            stream, crawl.Position(),
            fetch=crawl.fetcher(client),
            parse=records.listing_row,
        )  # fmt: skip
        for page, step in listing:
            pages.append((page.records, page.text, step.position))
            if len(pages) >= INGEST_PAGES:
                break
        listing.close()
    time.sleep(1.0)  # the crawl's request for the next page, if any, ends before the clock starts
    rows = sum(len(records_) for records_, _, _ in pages)
    figures: dict[str, Any] = {"ingest_rows": rows, "ingest_pages_per_transaction": PAGES_PER_TRANSACTION}
    for batch in (1, PAGES_PER_TRANSACTION):
        org_id = f"bench-ingest-{batch}"
        setup_organization(url, org_id, api_url)
        with connect(url, autocommit=True) as conn:
            started = time.perf_counter()
            for first in range(0, len(pages), batch):
                chunk = pages[first : first + batch]
                with conn.transaction():
                    conn.execute("SET LOCAL synchronous_commit = off")  # as the sync's checkpoints do
                    written = [
                        page_rows(stream, [records.listing_row(raw) for raw in raws], text) for raws, text, _ in chunk
                    ]
                    write_pages(conn, stream, org_id, written, 1)
                    save_state(conn, org_id, stream, StreamState(1, "full", False, chunk[-1][2], None))
            figures["ingest_seconds_batch" if batch > 1 else "ingest_seconds_page"] = time.perf_counter() - started
    return figures


def database_seconds(url: str) -> float:
    """Time PostgreSQL spent executing statements in this (scratch) database so far (pg_stat_database)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_force_next_flush()")
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute("SELECT active_time FROM pg_stat_database WHERE datname = current_database()").fetchone()
    return float(row[0]) / 1000 if row and row[0] is not None else 0.0


def help_seconds(env: dict[str, str]) -> float:
    timings = [run_measured([*cliniko_sync_command(), "--help"], env).wall_seconds for _ in range(HELP_RUNS)]
    return statistics.median(timings)


def minimum_requests(records: dict[str, int]) -> int:
    return sum(max(1, math.ceil(count / 100)) for count in records.values())


def machine(url: str) -> str:
    with psycopg.connect(url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    memory_kb = next(
        int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")
    )
    where = "DATABASE_URL" if os.environ.get("DATABASE_URL") else "embedded, on /dev/shm, default settings"
    return (
        f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), {memory_kb / 1024**2:.1f} GiB RAM, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}, "
        f"PostgreSQL {row[0] if row else '?'} ({where})"
    )


def measure(size: str, limited: bool, baseline: bool = True, quirks: tuple[str, ...] = ()) -> dict[str, Any]:
    from cryptography.fernet import Fernet

    patients, appointments = SIZES[size]
    figures: dict[str, Any] = {"size": size, "patients": patients, "appointments": appointments, "quirks": quirks}
    os.environ["CREDENTIALS_ENCRYPTION_KEY"] = Fernet.generate_key().decode()
    say(f"generating the {size} clinic ({patients:,} patients, {appointments:,} appointments) in the emulator")
    emulator = Emulator(patients, appointments, quirks)
    try:
        with scratch_database() as url:
            from cliniko_sync.db import upgrade

            upgrade(url)
            figures["machine"] = machine(url)
            env = {
                **{k: v for k, v in os.environ.items() if not k.startswith("CLINIKO_SYNC_")},
                "DATABASE_URL": url, "CLINIKO_SYNC_CONTACT_EMAIL": CONTACT_EMAIL, "CLINIKO_SYNC_RATE_LIMIT": "off",
            }  # fmt: skip
            figures["records"] = emulator.records
            figures["individual_attendees"] = emulator.individual_attendees
            figures["minimum_requests"] = minimum_requests(emulator.records)
            figures.update(_unlimited(env, url, emulator, baseline))
            if limited:
                figures.update(_limited(env, url, emulator))
            say("timing cliniko-sync --help")
            figures["help_seconds"] = help_seconds(env)
    finally:
        emulator.stop()
    return figures


def _unlimited(env: dict[str, str], url: str, emulator: Emulator, baseline: bool) -> dict[str, Any]:
    setup_organization(url, "bench", emulator.base_url)
    say("first sync (window first, then the history), limiter off")
    served = emulator.requests()
    first, first_summary = sync_run(env, "bench", emulator.now, "--full")
    first_served = emulator.requests() - served
    before = active_list(url, "bench")
    say("full sync again, the history complete (no window pass), limiter off")
    full, full_summary = sync_run(env, "bench", emulator.now, "--full")
    say("incremental sync with nothing changed")
    sync_run(env, "bench", emulator.now)  # the first incremental run after a full one drains its dirty patients
    allowance = overlap_allowance(url, "bench", emulator)
    database_before = database_seconds(url)
    incremental, incremental_summary = sync_run(env, "bench", emulator.now)
    incremental_database = database_seconds(url) - database_before
    say("incremental sync with nothing changed, as_of 15 minutes later (as cron runs it)")
    later = (datetime.fromisoformat(emulator.now) + timedelta(minutes=15)).strftime("%Y-%m-%dT%H:%M:%SZ")
    database_before = database_seconds(url)
    moved, moved_summary = sync_run(env, "bench", later)
    moved_database = database_seconds(url) - database_before
    say("active-patient recompute (everyone)")
    recompute = recompute_seconds(url, "bench", emulator.now)
    say(f"ingest of up to {INGEST_PAGES:,} pre-fetched pages of individual appointments, emulator idle")
    ingest = ingest_figures(url, emulator.base_url)
    stats = first_summary["stats"]
    window = stats["window"]
    figures = {
        "first_requests": first_summary["requests"],
        "first_requests_served": first_served,
        "first_active_requests": window["first_active_requests"],
        "first_active_seconds": window["first_active_seconds"],
        "window_equals_full": before == active_list(url, "bench"),
        "full_requests": full_summary["requests"],
        "full_wall_seconds": first.wall_seconds,
        "full_peak_rss_mb": first.peak_rss_mb,
        "records_written": stats["records_written"],
        "db_write_seconds": stats["db_write_seconds"],
        "db_write_wall_seconds": stats["db_write_wall_seconds"],
        "incremental_requests": incremental_summary["requests"],
        "incremental_stream_requests": {
            name: s["requests"] for name, s in incremental_summary["stats"]["streams"].items()
        },
        **allowance,
        "incremental_wall_seconds": incremental.wall_seconds,
        "incremental_database_seconds": incremental_database,
        "incremental_db_write_seconds": incremental_summary["stats"]["db_write_seconds"],
        "moved_wall_seconds": moved.wall_seconds,
        "moved_database_seconds": moved_database,
        "moved_recomputed": moved_summary["stats"]["recomputed"],
        "incremental_peak_rss_mb": incremental.peak_rss_mb,
        "active_patients": full_summary["active_patients"],
        "recompute_seconds": recompute,
        **ingest,
    }
    if not baseline:
        return {**figures, "baseline_skipped": True}
    say("naive baseline, twice")
    baseline_first, baseline_first_figures = baseline_run(env, url, emulator.base_url, emulator.now)
    _, baseline_repeat_figures = baseline_run(env, url, emulator.base_url, emulator.now)
    return {
        **figures,
        "baseline_requests": baseline_first_figures["requests"],
        "baseline_repeat_requests": baseline_repeat_figures["requests"],
        "baseline_wall_seconds": baseline_first_figures["wall_seconds"],
        "baseline_rows": baseline_first_figures["rows"],
        "baseline_db_write_seconds": baseline_first_figures["db_write_seconds"],
        "baseline_peak_rss_mb": baseline_first.peak_rss_mb,
    }


def _limited(env: dict[str, str], url: str, emulator: Emulator) -> dict[str, Any]:
    limited_env = {**env, "CLINIKO_SYNC_RATE_LIMIT": f"{LIMIT_REQUESTS}/{LIMIT_SECONDS:g}"}
    emulator.command(f"rate {LIMIT_REQUESTS} {LIMIT_SECONDS}")
    setup_organization(url, "bench-limited", emulator.base_url)
    say(f"first sync under {LIMIT_REQUESTS} requests per {LIMIT_SECONDS:g} s (window first, then the history)")
    full, summary = sync_run(limited_env, "bench-limited", emulator.now, "--full")
    time.sleep(LIMIT_SECONDS)  # let the emulator's window empty before the baseline's run
    say(f"naive baseline under {LIMIT_REQUESTS} requests per {LIMIT_SECONDS:g} s")
    _, baseline = baseline_run(env, url, emulator.base_url, emulator.now)
    time.sleep(LIMIT_SECONDS)
    say("incremental sync under the limit")
    incremental, incremental_summary = sync_run(limited_env, "bench-limited", emulator.now)
    emulator.command("rate off")
    return {
        "limited_requests": summary["requests"],
        "limited_wall_seconds": full.wall_seconds,
        "limited_first_active_seconds": summary["stats"]["window"]["first_active_seconds"],
        "limited_first_active_requests": summary["stats"]["window"]["first_active_requests"],
        "limited_rate_limited": summary["stats"]["rate_limited"],
        "limited_incremental_wall_seconds": incremental.wall_seconds,
        "limited_incremental_requests": incremental_summary["requests"],
        "baseline_limited_requests": baseline["requests"],
        "baseline_limited_wall_seconds": baseline["wall_seconds"],
        "baseline_limited_429s": baseline["rate_limited"],
    }


# --- the report --------------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "pass" if ok else "**MISS**"


def ratio(baseline: float, ours: float) -> str:
    return f"{baseline / ours:.1f}×" if ours else "–"


BASELINE_KEYS = ("baseline_requests", "baseline_repeat_requests", "baseline_wall_seconds", "baseline_rows",
                 "baseline_db_write_seconds", "baseline_peak_rss_mb")  # fmt: skip


def report(f: dict[str, Any]) -> str:
    skipped = f.get("baseline_skipped", False)
    if skipped:
        f = {**f, **dict.fromkeys(BASELINE_KEYS, 0)}
    endpoints = len(f["records"])
    minimum = f["minimum_requests"]
    # Streams write at once on their own connections: rows per second of the time any of them was writing.
    ingest = f["records_written"] / f["db_write_wall_seconds"] if f["db_write_wall_seconds"] else float("inf")
    baseline_ingest = f["baseline_rows"] / f["baseline_db_write_seconds"] if f["baseline_db_write_seconds"] else 0.0
    full_cap = 1.02 * minimum + 3
    # One request per endpoint (practitioners are read from two), plus the pages of records changed inside the overlap.
    allowed = f["incremental_allowed_requests"]
    over = {name: count for name, count in f["incremental_stream_requests"].items() if count > allowed.get(name, 1)}
    overlap_records = sum(f["incremental_overlap_records"].values())
    overlap_pages = sum(allowed.values()) - endpoints
    share = f["first_active_requests"] / f["first_requests"]
    rows = [
        ("API requests, first sync (window first)", f"{f['first_requests']:,} (minimum {minimum:,})", "–", "–",
         f"≤ {full_cap:,.0f} (1.02 × min + 3)", verdict(f["first_requests"] <= full_cap)),
        ("API requests, full sync", f"{f['full_requests']:,} (minimum {minimum:,})", f"{f['baseline_requests']:,}",
         "–", f"≤ {full_cap:,.0f} (1.02 × min + 3)", verdict(f["full_requests"] <= full_cap)),
        ("API requests to the first active list (window first)",
         f"{f['first_active_requests']:,} of the first sync's {f['first_requests']:,} ({share:.1%}); "
         f"after the backfill, equal to a plain full sync: {'yes' if f['window_equals_full'] else 'NO'}",
         "–", "–", "≤ 15 % of the full sync's at L",
         verdict(f["window_equals_full"] and (share <= 0.15 or f["size"] != "L"))),
        ("API requests, incremental sync, nothing changed",
         f"{f['incremental_requests']} ({endpoints} endpoints; {overlap_records:,} records changed inside the "
         f"overlap, {overlap_pages} more pages{', over: ' + str(over) if over else ''})",
         f"{f['baseline_repeat_requests']:,} (refetches)",
         ratio(f["baseline_repeat_requests"], f["incremental_requests"]),
         f"≤ {sum(allowed.values())} (1 per endpoint + the overlap's pages)",
         verdict(not over and f["incremental_requests"] <= sum(allowed.values()))),
    ]  # fmt: skip
    if "limited_wall_seconds" in f:
        rate = LIMIT_REQUESTS / LIMIT_SECONDS
        floor = f["limited_requests"] / rate
        rows += [
            (f"wall time, full sync under {LIMIT_REQUESTS}/{LIMIT_SECONDS:g} s",
             f"{f['limited_wall_seconds']:.1f} s for {f['limited_requests']:,} requests (floor {floor:.1f} s)",
             f"{f['baseline_limited_wall_seconds']:.1f} s for {f['baseline_limited_requests']:,} requests "
             f"({f['baseline_limited_429s']} × 429)", "–",
             f"≤ {1.05 * floor:.1f} s (1.05 × requests ÷ limit)", verdict(f["limited_wall_seconds"] <= 1.05 * floor)),
            (f"wall time to the first active list under {LIMIT_REQUESTS}/{LIMIT_SECONDS:g} s",
             f"{f['limited_first_active_seconds']:.1f} s ({f['limited_first_active_requests']:,} requests; the whole "
             f"history {f['limited_wall_seconds']:.1f} s, floor {floor:.1f} s)", "–", "–", "–", "–"),
            (f"wall time, incremental sync under {LIMIT_REQUESTS}/{LIMIT_SECONDS:g} s",
             f"{f['limited_incremental_wall_seconds']:.1f} s ({f['limited_incremental_requests']} requests)",
             f"{f['baseline_limited_wall_seconds']:.1f} s (every run is a full refetch)",
             ratio(f["baseline_limited_wall_seconds"], f["limited_incremental_wall_seconds"]), "–", "–"),
        ]  # fmt: skip
    rows += [
        ("ingest into PostgreSQL during the full sync (API waits excluded, emulator sharing the cores)",
         f"{ingest:,.0f} rows/s ({f['records_written']:,} rows in {f['db_write_wall_seconds']:.2f} s of writing; "
         f"{f['db_write_seconds']:.2f} s summed over the concurrent writers)",
         f"{baseline_ingest:,.0f} rows/s ({f['baseline_rows']:,} rows)", ratio(ingest, baseline_ingest),
         "≥ 50,000 rows/s", verdict(ingest >= 50_000)),
        ("ingest, pre-fetched pages, emulator idle (parse + write + cursor)",
         f"{f['ingest_rows'] / f['ingest_seconds_page']:,.0f} rows/s one page per transaction; "
         f"{f['ingest_rows'] / f['ingest_seconds_batch']:,.0f} rows/s {f['ingest_pages_per_transaction']} pages per "
         f"transaction, as the sync writes ({f['ingest_rows']:,} individual appointments)",
         "–", "–", "≥ 50,000 rows/s", verdict(f["ingest_rows"] / f["ingest_seconds_batch"] >= 50_000)),
        ("no-change incremental sync: wall time, database time",
         f"{f['incremental_wall_seconds']:.2f} s wall, {f['incremental_database_seconds']:.3f} s in PostgreSQL",
         "–", "–", "flat in size: L within 1.5 × S", "compare sizes"),
        ("  the writers' time on pages re-read inside the 5-minute overlap (Python + database, summed over streams)",
         f"{f['incremental_db_write_seconds']:.3f} s", "–", "–", "–", "–"),
        ("no-change incremental sync, as_of 15 minutes later (as cron runs it)",
         f"{f['moved_wall_seconds']:.2f} s wall, {f['moved_database_seconds']:.3f} s in PostgreSQL; "
         f"{f['moved_recomputed']['crossing']:,} patients crossed a window edge", "–", "–", "–", "–"),
        ("full sync wall time, limiter off", f"{f['full_wall_seconds']:.1f} s",
         f"{f['baseline_wall_seconds']:.1f} s (patients + 45-day window only)", "–", "–", "–"),
        (f"active-patient recompute ({f['active_patients']:,} active)", f"{f['recompute_seconds']:.2f} s", "–", "–",
         "≤ 2 s at 1M appointments", verdict(f["recompute_seconds"] <= 2.0)),
        ("peak RSS of the sync process",
         f"{f['full_peak_rss_mb']:.0f} MB (incremental {f['incremental_peak_rss_mb']:.0f} MB)",
         f"{f['baseline_peak_rss_mb']:.0f} MB", "–", "≤ 150 MB, flat in size", verdict(f["full_peak_rss_mb"] <= 150)),
        (f"`cliniko-sync --help` (median of {HELP_RUNS})", f"{f['help_seconds']:.2f} s", "–", "–", "≤ 0.3 s",
         verdict(f["help_seconds"] <= 0.3)),
    ]  # fmt: skip
    if "many_per_minute" in f:
        rows.append(report_row(f))
    if "growth_rows" in f:
        from bench.growth import report_rows

        rows.extend(report_rows(f))
    if skipped:
        rows = [
            (what, ours, "not run (--no-baseline)", "–", target, result) for what, ours, _, _, target, result in rows
        ]
    lines = [
        f"Size {f['size']}: {f['patients']:,} patients, {f['appointments']:,} appointments; "
        f"records listed per endpoint: {', '.join(f'{k} {v:,}' for k, v in f['records'].items())} (attendees: the "
        f"group-class ones; /attendees also lists {f['individual_attendees']:,} individual appointments' records, "
        "which the minimum leaves out).",
        *([f"Emulator quirks: {', '.join(f['quirks'])}."] if f.get("quirks") else []),
        f"Machine: {f['machine']}.",
        "",
        "| what | cliniko-sync | naive baseline | ours better by | target | result |",
        "|---|---|---|---|---|---|",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--size", choices=sorted(SIZES), default="S")
    parser.add_argument(
        "--limited", action=argparse.BooleanOptionalAction, default=None,
        help=f"also run under {LIMIT_REQUESTS}/{LIMIT_SECONDS:g} s (default: at S and M)",
    )  # fmt: skip
    parser.add_argument(
        "--baseline", action=argparse.BooleanOptionalAction, default=True,
        help="also measure the naive baseline (at L it takes long: the emulator scans for its window filters)",
    )  # fmt: skip
    parser.add_argument(
        "--many", action=argparse.BooleanOptionalAction, default=True,
        help="also measure many small clinics per host (`sync --all` over 200 organizations; see bench/many.py)",
    )  # fmt: skip
    parser.add_argument(
        "--growth", action=argparse.BooleanOptionalAction, default=True,
        help="also time the per-minute commands behind 1,000,000 and 10,000 sync_log rows (see bench/growth.py)",
    )  # fmt: skip
    parser.add_argument(
        "--quirk", action="append", choices=BOOLEAN_QUIRKS, default=[], metavar="NAME",
        help="run the emulator with this quirk on (repeatable), e.g. group_attendees_only: /attendees without "
        "individual appointments' records",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, help="also write the raw figures to this file")
    args = parser.parse_args()
    limited = args.limited if args.limited is not None else args.size in ("S", "M")
    with compiled_bytecode():
        figures = measure(args.size, limited and args.baseline, args.baseline, tuple(args.quirk))
        if args.many:
            figures.update(measure_many())
        if args.growth:
            from bench.growth import measure_growth

            figures.update(measure_growth())
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    sys.stdout.write(report(figures))


if __name__ == "__main__":
    main()
