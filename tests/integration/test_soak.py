"""The soak (bench/soak.py, issue 23) in small, under --runslow: two simulated days of cron over four clinics with
every fault mixed in, then every check the 90-day run makes."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def test_two_simulated_days_of_cron_with_faults_keep_every_promise(
    monkeypatch: pytest.MonkeyPatch, cli_env: dict[str, str]
) -> None:
    monkeypatch.syspath_prepend(str(ROOT))
    from bench.soak import FAKETIME_LIBRARY, Soak, run_soak

    if not FAKETIME_LIBRARY.exists():
        pytest.skip("the soak needs libfaketime (apt-get install libfaketime)")
    for name in ("CREDENTIALS_ENCRYPTION_KEY", "CLINIKO_SYNC_CONTACT_EMAIL"):
        monkeypatch.setenv(name, cli_env[name])
    soak = Soak(2, 4, timedelta(hours=4), prune=True, keep_sync_log=timedelta(days=1), keep_removed=timedelta(hours=6),
                warm_up_days=1)  # fmt: skip

    figures = run_soak(soak)

    assert figures["clinics_compared"] == 3  # one of the four was removed
    assert figures["active_unexplained_after_incremental"] == []
    assert figures["active_differences_after_full"] == {}
    assert (figures["leftover_locks"], figures["leftover_connections"]) == (0, 0)
    assert 1 <= figures["peak_connections"] <= 3  # sync --due --jobs 2: a lock connection and one per job
    assert figures["sync_log_older_than_period_max_per_org"] <= 9  # the latest runs of each kind, kept
    assert figures["removed_older_than_period"] == 0
    assert figures["runs"] > 20
    assert figures["claims_after_the_first_cron_minute"] == []  # the restart's wait aside (reported apart)
    assert figures["rss_flat"], figures["rss_mb"]  # the last readings within 10 % of day 1's (after the first fulls)
