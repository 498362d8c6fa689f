"""A stream pass writes its pages in batches (stream_pass.PAGES_PER_TRANSACTION per transaction): a page that fails
still leaves every page read before it in the mirror, with the stream's position after the last of them."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest
from emulator_fixtures import EMULATOR_API_KEY
from sync_helpers import setup_org

from cliniko_sync import db
from cliniko_sync.cliniko.client import ClinikoClient
from cliniko_sync.emulator import generate_clinic
from cliniko_sync.errors import ClinikoUnavailableError
from cliniko_sync.sync import stream_pass
from cliniko_sync.sync.mirror import load_state
from cliniko_sync.sync.streams import STREAMS_BY_NAME

STREAM = STREAMS_BY_NAME["individual_appointments"]
pytestmark = pytest.mark.usefixtures("sync_environment")


class FailingAt:
    """A real client that fails for good at its `fail_at`-th page, and remembers the ids it handed over."""

    def __init__(self, client: ClinikoClient, fail_at: int) -> None:
        self.client, self.fail_at, self.calls = client, fail_at, 0
        self.served: set[str] = set()
        self.stats = client.stats

    def __enter__(self) -> FailingAt:
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()

    def list_page(self, path: str, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls >= self.fail_at:
            raise ClinikoUnavailableError(f"Cliniko did not answer GET /{path} (test)")
        page = self.client.list_page(path, **kwargs)
        self.served |= {str(record["id"]) for record in page.records}
        return page


@pytest.mark.parametrize("fail_at", [3, stream_pass.PAGES_PER_TRANSACTION + 3])
def test_a_failed_page_keeps_the_pages_read_before_it(conn: psycopg.Connection, database_url: str,
                                                      make_emulator: Any, fail_at: int) -> None:  # fmt: skip
    clinic = generate_clinic(patients=100, appointments=2_000, seed=3)
    emulator = make_emulator(clinic)
    org = setup_org(conn, emulator.base_url, EMULATOR_API_KEY, "batches")
    clients: list[FailingAt] = []

    def make_client() -> FailingAt:
        real = ClinikoClient(EMULATOR_API_KEY, contact_email="tests@cliniko-sync.example", api_url=emulator.base_url,
                             rate_limit=None)  # fmt: skip
        clients.append(FailingAt(real, fail_at))
        return clients[-1]

    context = stream_pass.RunContext(
        url=database_url, organization_id=org, country="AU", full=True, dry_run=False, pass_id=1,
        started=time.monotonic(), deadline=None, stop=threading.Event(), progress=None, make_client=make_client,
    )  # fmt: skip
    with db.connect(database_url, autocommit=True) as work:
        with pytest.raises(ClinikoUnavailableError):
            stream_pass.crawl_stream(context, stream_pass.RunTally(), STREAM, work)
        stored = {row["id"] for row in work.execute(f"SELECT id FROM {STREAM.table} WHERE organization_id = %s",
                                                     (org,)).fetchall()}  # fmt: skip
        state = load_state(work, org, STREAM)
    served = clients[0].served
    assert len(served) >= (fail_at - 1) * 50  # pages of records really came before the failure
    assert stored == served
    assert state.pass_id == 1 and not state.pass_complete
    # The saved position is past every record written: the next run carries on after them.
    assert state.position.updated_at is not None
