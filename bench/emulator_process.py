"""The emulator in its own process for the benchmarks, driven by one-line commands on stdin.

Prints one JSON line on start ({"base_url", "records": {endpoint: listed records}}), then answers each command with one
JSON line: `rate N SECONDS` / `rate off` sets the server's limit, `requests` counts requests served, `changed RESOURCE
EPOCH` counts the records RESOURCE lists that changed at or after EPOCH, `quit` stops.
"""

from __future__ import annotations

import argparse
import json
import sys

from cliniko_sync.emulator import EmulatorServer, generate_clinic
from cliniko_sync.emulator.quirks import BOOLEAN_QUIRKS, Quirks

API_KEY = "bench-key-au1"
STREAMS = (
    "appointment_types",
    "businesses",
    "practitioners",
    "patients",
    "individual_appointments",
    "group_appointments",
    "attendees",
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--patients", type=int, required=True)
    parser.add_argument("--appointments", type=int, required=True)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--quirk", action="append", choices=BOOLEAN_QUIRKS, default=[])
    args = parser.parse_args()
    clinic = generate_clinic(patients=args.patients, appointments=args.appointments, seed=args.seed)
    quirks = Quirks(**dict.fromkeys(args.quirk, True))
    server = EmulatorServer(clinic, api_keys=[API_KEY], rate_limit=None, quirks=quirks).start()
    # What a listing returns with archived, cancelled and deleted records included (deleted patients are never
    # listed): the length of each table's index of listed records.
    records = {name: len(clinic.tables[name]) for name in STREAMS}
    # Practitioners are listed by two endpoints: the active ones and /practitioners/inactive.
    inactive = sum(1 for practitioner in clinic.practitioners.iter_listed() if not practitioner.active)
    records["practitioners"] -= inactive
    records["practitioners/inactive"] = inactive
    # Individual appointments' own attendee records, listed by /attendees too (none under group_attendees_only): the
    # minimum number of requests counts the group-class attendees only (DESIGN §10).
    individual_attendees = len(clinic.appointment_attendees)
    _reply(
        {
            "base_url": server.base_url,
            "records": records,
            "individual_attendees": individual_attendees,
            "now": clinic.now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
    )
    for line in sys.stdin:
        command = line.split()
        if not command or command[0] == "quit":
            break
        if command[0] == "rate":
            server.rate_limit = None if command[1] == "off" else int(command[1])
            server.rate_window = float(command[2]) if len(command) > 2 else server.rate_window
            _reply({"rate_limit": server.rate_limit, "rate_window": server.rate_window})
        elif command[0] == "requests":
            _reply({"requests": len(server.request_log)})
        elif command[0] == "changed":
            # `changed RESOURCE EPOCH`: how many records RESOURCE's list holds (archived, cancelled and deleted ones
            # included) whose updated_at is at or after EPOCH, what `updated_at:>=` that moment lists.
            since = float(command[2])
            with clinic.lock:
                tables = clinic.listed_tables(command[1])
                count = sum(1 for table in tables for record in table.iter_listed() if record.updated_at >= since)
            _reply({"changed": count})
        else:
            _reply({"error": f"unknown command {command[0]}"})
    server.stop()


def _reply(payload: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
