"""Pytest fixtures that run the Cliniko emulator on loopback (registered from conftest.py).

`clinic`: a fresh 200-patient synthetic clinic per test (mutate it freely); `emulator`: an EmulatorServer over it,
started, no rate limit, accepting EMULATOR_API_KEY; `make_emulator(**kwargs)`: more servers with other settings;
`emulator_get(server, path, **params)`: ask a server directly over HTTP.

Every server is strict (the real API's behaviour) unless a test passes `quirks=Quirks(...)` to make_emulator;
`Quirks(whole_second_storage=True)` truncates the `clinic` fixture's stored timestamps for the whole test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from cliniko_sync.emulator import Clinic, EmulatorServer, generate_clinic

EMULATOR_API_KEY = "emulator-test-key-au1"
USER_AGENT = "cliniko-sync tests (tests@cliniko-sync.example)"
CLINIC_PATIENTS = 200
CLINIC_SEED = 20240501


@pytest.fixture
def clinic() -> Clinic:
    """A small synthetic clinic (about 15 active patients at its `now`), the same data in every test."""
    return generate_clinic(patients=CLINIC_PATIENTS, seed=CLINIC_SEED)


@pytest.fixture
def make_emulator(clinic: Clinic) -> Iterator[Callable[..., EmulatorServer]]:
    """`make_emulator(clinic=None, **EmulatorServer kwargs)` starts a server (default: the `clinic` fixture's data,
    EMULATOR_API_KEY, no rate limit); every server it made is stopped after the test."""
    servers: list[EmulatorServer] = []

    def make(clinic_data: Clinic | None = None, **kwargs: Any) -> EmulatorServer:
        kwargs.setdefault("api_keys", [EMULATOR_API_KEY])
        kwargs.setdefault("rate_limit", None)
        server = EmulatorServer(clinic_data or clinic, **kwargs).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def emulator(make_emulator: Callable[..., EmulatorServer]) -> EmulatorServer:
    """A started emulator over `clinic`, with no rate limit."""
    return make_emulator()


def emulator_get(
    server: EmulatorServer, path: str = "/patients", *, key: str = EMULATOR_API_KEY, **params: Any
) -> requests.Response:
    """GET base_url+path as a well-behaved client does (Basic auth, User-Agent); `q=[...]` becomes repeated `q[]`."""
    query = {("q[]" if name == "q" else name): value for name, value in params.items()}
    return requests.get(
        server.base_url + path, params=query, auth=(key, ""), headers={"User-Agent": USER_AGENT}, timeout=10
    )
