"""`cliniko-sync emulator` in a subprocess: it announces its URL on stderr, serves, and exits 0 on SIGTERM or Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest
import requests

USER_AGENT = "cliniko-sync tests (tests@cliniko-sync.example)"


def start(*args: str) -> tuple[subprocess.Popen[str], str]:
    """Start the command and read stderr until it says where it serves."""
    process = subprocess.Popen(
        [sys.executable, "-m", "cliniko_sync", "emulator", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert process.stderr is not None
    seen = []
    for line in process.stderr:
        seen.append(line)
        if line.startswith("Press Ctrl-C"):
            break
    text = "".join(seen)
    assert re.search(r"API: http://127\.0\.0\.1:\d+/v1 ", text), text
    return process, text


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


def base_url(announcement: str) -> str:
    match = re.search(r"API: (\S+)", announcement)
    assert match
    return match.group(1)


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_serves_the_clinic_until_a_signal_then_exits_0(
    processes: list[subprocess.Popen[str]], stop_signal: signal.Signals
) -> None:
    process, announcement = start("--patients", "40", "--appointments", "300", "--seed", "3")
    processes.append(process)
    url = base_url(announcement)
    assert "40 synthetic patients, 300 appointments" in announcement
    assert f"cliniko-sync credentials set ORG --api-url {url}" in announcement
    response = requests.get(
        f"{url}/patients",
        auth=("demo-key-au1", ""),
        headers={"User-Agent": USER_AGENT},
        params={"q[]": "archived_at:*"},
    )
    assert response.status_code == 200
    assert response.json()["total_entries"] <= 40
    process.send_signal(stop_signal)
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert stdout == ""
    assert "stopped" in stderr and "Traceback" not in stderr


def test_api_key_and_rate_limit_options(processes: list[subprocess.Popen[str]]) -> None:
    process, announcement = start("--patients", "10", "--api-key", "my-throwaway-key-au1", "--rate-limit", "2")
    processes.append(process)
    url = base_url(announcement)

    def status(key: str) -> int:
        return requests.get(f"{url}/patients", auth=(key, ""), headers={"User-Agent": USER_AGENT}).status_code

    assert status("demo-key-au1") == 401
    assert [status("my-throwaway-key-au1") for _ in range(3)] == [200, 200, 429]
    process.terminate()
    process.communicate(timeout=30)
    assert process.returncode == 0


def test_a_busy_port_is_one_error_line_and_exit_69() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "cliniko_sync", "emulator", "--port", str(port), "--patients", "5"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 69
    assert result.stderr.strip().splitlines()[-1].startswith(f"cliniko-sync: error: cannot listen on 127.0.0.1:{port}")
    assert "Traceback" not in result.stderr


def test_help_lists_every_option() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cliniko_sync", "emulator", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode == 0
    for option in (
        "--port",
        "--patients",
        "--appointments",
        "--seed",
        "--rate-limit",
        "--rate-window",
        "--latency-ms",
        "--api-key",
        "--quirk",
    ):
        assert option in result.stdout


def test_quirk_option_switches_a_behaviour_on_and_says_so(processes: list[subprocess.Popen[str]]) -> None:
    process, announcement = start(
        "--patients", "10", "--quirk", "accept_undocumented_filters", "--quirk", "ids_as_numbers"
    )
    processes.append(process)
    assert "Quirks on" in announcement and "accept_undocumented_filters, ids_as_numbers" in announcement
    response = requests.get(
        f"{base_url(announcement)}/practitioners",
        auth=("demo-key-au1", ""),
        headers={"User-Agent": USER_AGENT},
        params={"q[]": "archived_at:*"},
    )
    assert response.status_code == 200
    assert all(isinstance(record["id"], int) for record in response.json()["practitioners"])
    process.terminate()
    process.communicate(timeout=30)
    assert process.returncode == 0


def test_strict_by_default_without_quirks(processes: list[subprocess.Popen[str]]) -> None:
    process, announcement = start("--patients", "10")
    processes.append(process)
    assert "Quirks" not in announcement
    response = requests.get(
        f"{base_url(announcement)}/practitioners",
        auth=("demo-key-au1", ""),
        headers={"User-Agent": USER_AGENT},
        params={"q[]": "archived_at:*"},
    )
    assert response.status_code == 400
    assert response.json() == {"message": "This column is not searchable."}
    process.terminate()
    process.communicate(timeout=30)


@pytest.mark.parametrize("name", ["no_such_quirk", "ignore_filters", "refused_status"])
def test_an_unknown_or_non_boolean_quirk_is_a_usage_error(name: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cliniko_sync", "emulator", "--port", "0", "--quirk", name],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode == 2
    assert f"unknown quirk {name}" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_banner_count_is_what_a_sync_at_the_clinic_clock_computes(
    processes: list[subprocess.Popen[str]],
    cli,  # type: ignore[no-untyped-def]
) -> None:
    # The default clinic has a patient whose only recent appointment is on the window's start: one second later
    # they lapse, so only a sync at the banner's moment can agree with it.
    process, announcement = start("--rate-limit", "0")
    processes.append(process)
    match = re.search(r"Clinic clock: (\S+); (\d+) patients active in the 45 days up to it", announcement)
    assert match, announcement
    clock, announced = match.group(1), int(match.group(2))
    assert f"sync ORG --as-of {clock}" in announcement
    assert cli("org", "add", "try-out", "--name", "Trying the emulator").returncode == 0
    stored = cli("credentials", "set", "try-out", "--api-url", base_url(announcement), input="demo-key-au1\n")
    assert stored.returncode == 0, stored.stderr

    synced = cli("sync", "try-out", "--as-of", clock, "--format", "json", env={"CLINIKO_SYNC_RATE_LIMIT": "off"})

    assert synced.returncode == 0, synced.stderr
    assert json.loads(synced.stdout)["active_patients"] == announced
    listed = cli("list-active", "try-out", "--format", "json")
    assert len(json.loads(listed.stdout)) == announced
