"""The naive sync the benchmarks compare against (never part of the package).

Every run fetches all patients and every individual appointment starting in the 45-day window, following pages, with
no incremental cursor, and writes one `INSERT … ON CONFLICT` per row. Prints one JSON line of figures.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime, timedelta
from typing import Any

import psycopg
import requests
from psycopg.types.json import Jsonb

SCHEMA = """
CREATE TABLE IF NOT EXISTS naive_patients (
    id text PRIMARY KEY, first_name text, last_name text, email text, updated_at timestamptz, raw jsonb
);
CREATE TABLE IF NOT EXISTS naive_appointments (
    id text PRIMARY KEY, patient_id text, starts_at timestamptz, cancelled_at timestamptz, updated_at timestamptz,
    raw jsonb
);
"""
UPSERT_PATIENT = """
INSERT INTO naive_patients (id, first_name, last_name, email, updated_at, raw) VALUES (%s, %s, %s, %s, %s, %s)
ON CONFLICT (id) DO UPDATE SET first_name = excluded.first_name, last_name = excluded.last_name,
    email = excluded.email, updated_at = excluded.updated_at, raw = excluded.raw
"""
UPSERT_APPOINTMENT = """
INSERT INTO naive_appointments (id, patient_id, starts_at, cancelled_at, updated_at, raw)
VALUES (%s, %s, %s, %s, %s, %s)
ON CONFLICT (id) DO UPDATE SET patient_id = excluded.patient_id, starts_at = excluded.starts_at,
    cancelled_at = excluded.cancelled_at, updated_at = excluded.updated_at, raw = excluded.raw
"""


class NaiveClient:
    """Pages by number until no `links.next`; on a 429 sleeps until the server says (no client-side limiter)."""

    def __init__(self, api_url: str, api_key: str) -> None:
        self.api_url = api_url
        self.session = requests.Session()
        self.session.auth = (api_key, "")
        self.session.headers.update({"Accept": "application/json", "User-Agent": "naive-baseline (bench@example.test)"})
        self.requests = 0
        self.rate_limited = 0

    def get(self, url: str, params: Any = None) -> dict[str, Any]:
        while True:
            self.requests += 1
            response = self.session.get(url, params=params, timeout=30)
            if response.status_code != 429:
                response.raise_for_status()
                return response.json()
            self.rate_limited += 1
            reset = response.headers.get("X-RateLimit-Reset")
            time.sleep(max(0.1, float(reset) - time.time()) if reset else 1.0)

    def pages(self, resource: str, filters: list[str]) -> Any:
        """Offset pages with its own parameters: Cliniko's next links may carry only the page number."""
        page = 1
        while True:
            body = self.get(f"{self.api_url}/{resource}", {"page": page, "per_page": 100, "q[]": filters})
            yield body[resource]
            if not body["links"].get("next"):
                return
            page += 1


def run(database_url: str, api_url: str, api_key: str, as_of: datetime, window_days: int = 45) -> dict[str, Any]:
    started = time.perf_counter()
    client = NaiveClient(api_url, api_key)
    write_seconds = 0.0
    rows = 0
    window = [f"starts_at:>={_iso(as_of - timedelta(days=window_days))}", f"starts_at:<={_iso(as_of)}"]
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(SCHEMA)
        for resource, filters in (("patients", []), ("individual_appointments", window)):
            for records in client.pages(resource, filters):
                began = time.perf_counter()
                for record in records:
                    conn.execute(*_upsert(resource, record))
                write_seconds += time.perf_counter() - began
                rows += len(records)
    return {
        "requests": client.requests,
        "rate_limited": client.rate_limited,
        "rows": rows,
        "db_write_seconds": round(write_seconds, 3),
        "wall_seconds": round(time.perf_counter() - started, 3),
    }


def _upsert(resource: str, record: dict[str, Any]) -> tuple[str, tuple[Any, ...]]:
    if resource == "patients":
        values = (record["id"], record["first_name"], record["last_name"], record["email"], record["updated_at"])
        return UPSERT_PATIENT, (*values, Jsonb(record))
    patient_id = record["patient"]["links"]["self"].rsplit("/", 1)[-1]
    values = (record["id"], patient_id, record["starts_at"], record["cancelled_at"], record["updated_at"])
    return UPSERT_APPOINTMENT, (*values, Jsonb(record))


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--api-url", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--as-of", required=True, type=datetime.fromisoformat)
    args = parser.parse_args()
    print(json.dumps(run(args.database_url, args.api_url, args.api_key, args.as_of)))


if __name__ == "__main__":
    main()
