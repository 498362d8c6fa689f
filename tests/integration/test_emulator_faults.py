"""The emulator's rate limit and injected faults, seen from a client over loopback HTTP."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import timedelta

import pytest
import requests
from emulator_fixtures import EMULATOR_API_KEY, USER_AGENT
from emulator_fixtures import emulator_get as get

from cliniko_sync.emulator import Clinic, EmulatorServer, Faults
from cliniko_sync.emulator.records import iso

MakeEmulator = Callable[..., EmulatorServer]


def test_faults_are_all_off_by_default() -> None:
    faults = Faults()
    assert not any(
        (
            faults.rate_limit_burst_seconds,
            faults.error_rate,
            faults.hang_rate,
            faults.malformed_rate,
            faults.truncated_rate,
            faults.retry_after,
            faults.mutate_every,
            faults.clock_offset_seconds,
            faults.duplicate_rate,
            faults.shuffle,
        )
    )
    assert faults.reset_header


# --- rate limit -------------------------------------------------------------------------------------------------


def test_requests_over_the_limit_get_429_with_x_ratelimit_reset(make_emulator: MakeEmulator) -> None:
    server = make_emulator(rate_limit=5, rate_window=60)
    assert [get(server).status_code for _ in range(5)] == [200] * 5
    before = time.time()
    response = get(server)
    assert response.status_code == 429
    reset = int(response.headers["X-RateLimit-Reset"])
    assert before <= reset <= math.ceil(time.time()) + 60
    assert response.json()["message"]
    assert "Retry-After" not in response.headers
    accepted = [entry for entry in server.request_log if entry.status == 200]
    assert len(accepted) == 5


def test_the_limit_is_per_key_and_rejected_requests_do_not_count(make_emulator: MakeEmulator) -> None:
    server = make_emulator(rate_limit=3, rate_window=60, api_keys=[EMULATOR_API_KEY, "second-key-au1"])
    statuses = [get(server).status_code for _ in range(6)]
    assert statuses == [200, 200, 200, 429, 429, 429]
    assert get(server, key="second-key-au1").status_code == 200
    assert get(server, key="unknown-key").status_code == 401  # auth comes first


def test_the_window_slides(make_emulator: MakeEmulator) -> None:
    server = make_emulator(rate_limit=2, rate_window=0.3)
    assert [get(server).status_code for _ in range(3)] == [200, 200, 429]
    time.sleep(0.35)
    assert get(server).status_code == 200


def test_rate_limit_burst_answers_429_to_everything_until_it_ends(emulator: EmulatorServer) -> None:
    emulator.set_faults(rate_limit_burst_seconds=30)
    response = get(emulator)
    assert response.status_code == 429
    assert int(response.headers["X-RateLimit-Reset"]) >= time.time() + 25
    emulator.set_faults(rate_limit_burst_seconds=0)
    assert get(emulator).status_code == 200


def test_retry_after_instead_of_the_reset_header(emulator: EmulatorServer) -> None:
    emulator.set_faults(rate_limit_burst_seconds=20, retry_after=True, reset_header=False)
    response = get(emulator)
    assert response.status_code == 429
    assert "X-RateLimit-Reset" not in response.headers
    assert 1 <= int(response.headers["Retry-After"]) <= 20


# --- faults -----------------------------------------------------------------------------------------------------


def test_error_rate_one_answers_only_5xx(emulator: EmulatorServer) -> None:
    emulator.set_faults(Faults(error_rate=1.0))
    statuses = {get(emulator).status_code for _ in range(12)}
    assert statuses <= {500, 502, 503} and len(statuses) > 1


def test_partial_error_rate_is_seeded_and_mixed(make_emulator: MakeEmulator) -> None:
    runs = []
    for _ in range(2):
        server = make_emulator(faults=Faults(error_rate=0.3, seed=4))
        runs.append([get(server).status_code for _ in range(30)])
    assert runs[0] == runs[1]
    assert 200 in runs[0] and set(runs[0]) - {200}


def test_a_requests_faults_do_not_depend_on_the_requests_between(make_emulator: MakeEmulator) -> None:
    """The n-th request for one URL fails or not whatever other requests the server answered meanwhile (a sync's
    threads interleave differently on every run); another seed gives other outcomes."""

    def failed(server: EmulatorServer, between: int) -> list[bool]:
        outcomes = []
        for _ in range(30):
            outcomes.append(get(server, "/patients", per_page=5).status_code != 200)
            for _ in range(between):
                get(server, "/businesses")
        return outcomes

    alone = failed(make_emulator(faults=Faults(error_rate=0.3, seed=4)), 0)
    interleaved = failed(make_emulator(faults=Faults(error_rate=0.3, seed=4)), 2)
    assert alone == interleaved and any(alone) and not all(alone)
    assert failed(make_emulator(faults=Faults(error_rate=0.3, seed=5)), 0) != alone


def test_hang_outlasts_a_client_timeout(emulator: EmulatorServer) -> None:
    emulator.set_faults(hang_rate=1.0, hang_seconds=1.0)
    with pytest.raises(requests.Timeout):
        requests.get(
            emulator.base_url + "/patients",
            auth=(EMULATOR_API_KEY, ""),
            headers={"User-Agent": USER_AGENT},
            timeout=0.2,
        )
    emulator.set_faults(Faults())
    assert get(emulator).status_code == 200


def test_malformed_body_is_200_but_not_json(emulator: EmulatorServer) -> None:
    emulator.set_faults(malformed_rate=1.0)
    response = get(emulator)
    assert response.status_code == 200
    with pytest.raises(requests.JSONDecodeError):
        response.json()


def test_truncated_body_is_cut_with_or_without_content_length(emulator: EmulatorServer) -> None:
    emulator.set_faults(truncated_rate=1.0, seed=1)
    declared = set()
    for _ in range(8):
        response = get(emulator, per_page=20)
        assert response.status_code == 200
        declared.add("Content-Length" in response.headers)
        assert response.content.startswith(b'{"patients":[')
        with pytest.raises(requests.JSONDecodeError):
            response.json()
    assert declared == {True, False}


def test_mutate_every_moves_records_to_the_end_of_an_updated_at_crawl(emulator: EmulatorServer, clinic: Clinic) -> None:
    clinic.advance_clock(timedelta(minutes=1))
    now = iso(int(clinic.now.timestamp()))
    emulator.set_faults(mutate_every=2, seed=3)
    for page in range(1, 7):
        assert get(emulator, per_page=20, page=page, sort="updated_at,id").status_code == 200
    emulator.set_faults(Faults())
    touched = get(emulator, q=[f"updated_at:>={now}", "archived_at:*"], per_page=100).json()
    assert 1 <= touched["total_entries"] <= 3
    assert {record["updated_at"] for record in touched["patients"]} == {now}


def test_clock_offset_shifts_new_updated_at_values(emulator: EmulatorServer, clinic: Clinic) -> None:
    emulator.set_faults(clock_offset_seconds=3600)
    patient = next(p for p in clinic.patients.records.values() if p.archived_at is None and p.deleted_at is None)
    appointment_id = clinic.book(patient.id, clinic.now + timedelta(days=2))
    body = get(emulator, f"/individual_appointments/{appointment_id}").json()
    assert body["updated_at"] == iso(int(clinic.now.timestamp()) + 3600)
    emulator.set_faults(clock_offset_seconds=0)
    later = clinic.book(patient.id, clinic.now + timedelta(days=3))
    assert get(emulator, f"/individual_appointments/{later}").json()["updated_at"] == iso(int(clinic.now.timestamp()))


def test_duplicate_repeats_the_previous_pages_last_record(emulator: EmulatorServer) -> None:
    first = get(emulator, per_page=10).json()["patients"]
    emulator.set_faults(duplicate_rate=1.0)
    assert get(emulator, per_page=10).json()["patients"] == first  # page 1 has no previous page
    second = get(emulator, per_page=10, page=2).json()["patients"]
    assert second[0]["id"] == first[-1]["id"]
    emulator.set_faults(Faults())
    assert [r["id"] for r in get(emulator, per_page=10, page=2).json()["patients"]] == [r["id"] for r in second[1:]]


def test_shuffle_returns_the_same_page_out_of_order(emulator: EmulatorServer) -> None:
    ordered = [r["id"] for r in get(emulator, per_page=100, sort="id").json()["patients"]]
    emulator.set_faults(shuffle=1.0, seed=2)
    shuffled = [r["id"] for r in get(emulator, per_page=100, sort="id").json()["patients"]]
    assert shuffled != ordered and sorted(shuffled) == sorted(ordered)


def test_set_faults_changes_only_the_named_fields(emulator: EmulatorServer) -> None:
    emulator.set_faults(Faults(error_rate=0.5, retry_after=True))
    faults = emulator.set_faults(shuffle=0.25)
    assert (faults.error_rate, faults.retry_after, faults.shuffle) == (0.5, True, 0.25)
    assert emulator.faults == faults
