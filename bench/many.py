"""`python -m bench.many`: many clinics per host (DESIGN §10) — `sync --all --jobs N` over many small organizations
with nothing changed and the rate limit off, in organizations synced per minute.

Every organization reads the same small emulator clinic (its own row set in the database, the same API key), after a
first full sync of all of them. `python -m bench` runs this too and adds its row to the report.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from bench.harness import (
    CONTACT_EMAIL,
    Emulator,
    cliniko_sync_command,
    run_measured,
    say,
    scratch_database,
    setup_organization,
)

ORGANIZATIONS = 200
JOBS = 4
PATIENTS, APPOINTMENTS = 40, 400  # a small clinic: one page per stream
TARGET_PER_MINUTE = 400


def measure_many(
    organizations: int = ORGANIZATIONS, jobs: int = JOBS, *, rounds: int = 2, profile: str | None = None
) -> dict[str, Any]:
    """Organizations per minute of the best of `rounds` no-change `sync --all` runs (the first fills the mirror)."""
    from cryptography.fernet import Fernet

    os.environ.setdefault("CREDENTIALS_ENCRYPTION_KEY", Fernet.generate_key().decode())
    emulator = Emulator(PATIENTS, APPOINTMENTS)
    try:
        with scratch_database() as url:
            from cliniko_sync.db import upgrade

            upgrade(url)
            say(f"many clinics: {organizations} organizations of {PATIENTS} patients, {APPOINTMENTS} appointments")
            for n in range(organizations):
                setup_organization(url, f"clinic-{n:04d}", emulator.base_url)
            env = {
                **{k: v for k, v in os.environ.items() if not k.startswith("CLINIKO_SYNC_")},
                "DATABASE_URL": url, "CLINIKO_SYNC_CONTACT_EMAIL": CONTACT_EMAIL, "CLINIKO_SYNC_RATE_LIMIT": "off",
            }  # fmt: skip
            command = [*cliniko_sync_command(), "-q", "sync", "--all", "--jobs", str(jobs), "--as-of", emulator.now,
                       "--format", "json"]  # fmt: skip
            say("many clinics: first (full) sync of every organization")
            _check(run_measured(command, env), organizations)
            timings = []
            for round_number in range(rounds):
                say(f"many clinics: sync --all --jobs {jobs}, nothing changed ({round_number + 1}/{rounds})")
                measured_command = command
                if profile and round_number == rounds - 1:
                    # py-spy sees every thread (cProfile only the main one); its raw output feeds flame graphs.
                    py_spy = str(Path(sys.executable).with_name("py-spy"))
                    measured_command = [py_spy, "record", "--format", "raw", "--rate", "250", "--output", profile,
                                        "--", *command]  # fmt: skip
                measured = run_measured(measured_command, env)
                _check(measured, organizations, mode="incremental")
                timings.append(measured.wall_seconds)
    finally:
        emulator.stop()
    best = min(timings)
    return {
        "many_organizations": organizations,
        "many_jobs": jobs,
        "many_wall_seconds": best,
        "many_per_minute": organizations / best * 60,
    }


def _check(measured: Any, organizations: int, mode: str | None = None) -> None:
    if measured.returncode != 0:
        raise SystemExit(f"bench: sync --all failed ({measured.returncode}): {measured.stderr.strip()[-2000:]}")
    text = measured.stdout
    # A profiler may print its own lines before and after the array.
    results, _ = json.JSONDecoder().raw_decode(text[text.index("[") :])
    assert len(results) == organizations and all(r["status"] == "success" for r in results)
    if mode:
        assert {r["mode"] for r in results} == {mode}


def report_row(f: dict[str, Any]) -> tuple[str, ...]:
    """The row `python -m bench` adds to its table."""
    per_minute = f["many_per_minute"]
    return (
        f"many clinics: `sync --all --jobs {f['many_jobs']}`, nothing changed, limiter off",
        f"{per_minute:,.0f} organizations/min ({f['many_organizations']} in {f['many_wall_seconds']:.1f} s)",
        "–",
        "–",
        f"≥ {TARGET_PER_MINUTE} organizations/min",
        "pass" if per_minute >= TARGET_PER_MINUTE else "**MISS**",
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.many", description=__doc__)
    parser.add_argument("--organizations", type=int, default=ORGANIZATIONS)
    parser.add_argument("--jobs", type=int, default=JOBS)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--profile", help="profile the last round with py-spy (pip install py-spy) into this file")
    args = parser.parse_args()
    figures = measure_many(args.organizations, args.jobs, rounds=args.rounds, profile=args.profile)
    sys.stdout.write(json.dumps(figures) + "\n")
    sys.stdout.write("| " + " | ".join(report_row(figures)) + " |\n")


if __name__ == "__main__":
    main()
