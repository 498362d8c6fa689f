"""contrib/prometheus/cliniko-sync.rules.yml against the metrics the tool really writes.

The organizations below are brought into each state an alert is about (a success, a rejected key, a broken API
assumption, an unreachable Cliniko, never synced, disabled); `status --format prometheus` writes their metrics; the
textfile becomes promtool's input series, held for three hours as a textfile that is no longer refreshed would hold
them (timestamps moved onto promtool's clock, which starts at 0 when the file was written); the expectations of
contrib/prometheus/cliniko-sync.rules.test.yml are checked against it with `promtool test rules`. That committed file
is the same test on a copy of such a textfile, and must name exactly the series the tool writes.

Needs promtool (Debian: `apt-get install prometheus`); skipped with that reason where it is missing.
Regenerate the committed file with CLINIKO_SYNC_WRITE_RULES_TEST=1 after changing the metrics or the rules."""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from emulator_fixtures import EMULATOR_API_KEY
from sync_helpers import SYNC_ENV, in_process_env, quick_retries, setup_org  # noqa: F401 (fixtures)

from cliniko_sync.emulator.quirks import Quirks

CONTRIB = Path(__file__).parents[2] / "contrib" / "prometheus"
RULES = CONTRIB / "cliniko-sync.rules.yml"
RULES_TEST = CONTRIB / "cliniko-sync.rules.test.yml"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (apt-get install prometheus)")
SAMPLE = re.compile(r"^(?P<series>[a-z_]+\{[^}]*\}) (?P<value>\S+)$")
TIMESTAMPS = ("cliniko_sync_last_success_timestamp_seconds",)
STEPS = 180  # three hours of one-minute samples
TIMING_DEPENDENT = {'cliniko_sync_oldest_cursor_age_seconds{organization="violated-clinic"}'}


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *map(str, args)], capture_output=True, text=True, timeout=120)


def input_series(textfile: str, written_at: float) -> list[dict[str, str]]:
    """Each sample of the textfile as a promtool series holding its value for STEPS minutes; a Unix timestamp moves
    onto promtool's clock (0 = when the file was written), 0 (never) stays 0."""
    series = []
    for line in textfile.splitlines():
        if line.startswith("#"):
            continue
        match = SAMPLE.match(line)
        assert match, line
        value = float(match["value"])
        if match["series"].startswith(TIMESTAMPS) and value:
            value = round(value - written_at, 3)
        series.append({"series": match["series"], "values": f"{value:g}+0x{STEPS}"})
    return series


def with_series(test_file: dict[str, Any], series: list[dict[str, str]]) -> dict[str, Any]:
    """The committed test file's expectations, over these input series."""
    generated = copy.deepcopy(test_file)
    generated["rule_files"] = [str(RULES)]
    (test,) = generated["tests"]
    test["input_series"] = series
    return generated


@pytest.fixture
def textfile(cli: Any, conn: psycopg.Connection, make_emulator: Any, quick_retries: None) -> tuple[str, float]:  # noqa: F811
    """The metrics of one organization in each state, and when they were written."""
    emulator = make_emulator()
    setup_org(conn, emulator.base_url, EMULATOR_API_KEY, "surf-rehab")
    setup_org(conn, emulator.base_url, "rejected-key-au1", "rejected-clinic")
    refusing = make_emulator(quirks=Quirks(refuse_filters=(("patients", "archived_at"),)))
    setup_org(conn, refusing.base_url, EMULATOR_API_KEY, "violated-clinic")
    setup_org(conn, "http://127.0.0.1:9/v1", EMULATOR_API_KEY, "failing-clinic")  # the discard port: refused
    setup_org(conn, emulator.base_url, EMULATOR_API_KEY, "never-synced")
    setup_org(conn, emulator.base_url, EMULATOR_API_KEY, "disabled-clinic")
    conn.execute("UPDATE organizations SET enabled = false WHERE id = 'disabled-clinic'")
    for org, exit_code in (("surf-rehab", 0), ("rejected-clinic", 77), ("violated-clinic", 1), ("failing-clinic", 69)):
        assert cli("sync", org, env=SYNC_ENV).returncode == exit_code, org
    result = cli("status", "--format", "prometheus")
    assert result.returncode == 0, result.stderr
    return result.stdout, time.time()


def test_the_new_failure_gauges_name_the_cause(textfile: tuple[str, float]) -> None:
    text, _ = textfile
    for gauge, org in (("credentials_rejected", "rejected-clinic"), ("assumption_violated", "violated-clinic")):
        firing = re.findall(rf'^cliniko_sync_last_run_{gauge}{{organization="([^"]+)"}} 1$', text, re.MULTILINE)
        assert firing == [org]
    assert 'cliniko_sync_last_run_status{organization="failing-clinic",status="failed"} 1' in text


@needs_promtool
def test_the_rules_are_valid() -> None:
    checked = promtool("check", "rules", RULES)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 4 rules found" in checked.stdout


@needs_promtool
def test_each_alert_fires_on_the_series_the_tool_writes(textfile: tuple[str, float], tmp_path: Path) -> None:
    committed = yaml.safe_load(RULES_TEST.read_text(encoding="utf-8"))
    series = input_series(*textfile)
    generated = with_series(committed, series)
    if os.environ.get("CLINIKO_SYNC_WRITE_RULES_TEST"):
        header = RULES_TEST.read_text(encoding="utf-8").split("\nrule_files:", 1)[0]
        generated["rule_files"] = ["cliniko-sync.rules.yml"]
        RULES_TEST.write_text(header + "\n" + yaml.safe_dump(generated, sort_keys=False, width=120))
        generated["rule_files"] = [str(RULES)]
    path = tmp_path / "rules.test.yml"
    path.write_text(yaml.safe_dump(generated, sort_keys=False))
    tested = promtool("test", "rules", path)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    # Each of the four alerts is expected to fire somewhere, on the real series.
    fired = {case["alertname"] for case in committed["tests"][0]["alert_rule_test"] if case.get("exp_alerts")}
    assert fired == {rule["alert"] for rule in yaml.safe_load(RULES.read_text())["groups"][0]["rules"]}

    # The committed file is the same test on the very series (names and labels) the tool writes today; but whether the
    # violated clinic's failed first run committed a page (and so has a cursor age) before its refused request came
    # back depends on which of its concurrent reads answered first.
    def stable(series: list[dict[str, str]]) -> list[str]:
        return sorted(s["series"] for s in series if s["series"] not in TIMING_DEPENDENT)

    assert stable(committed["tests"][0]["input_series"]) == stable(series)


@needs_promtool
def test_the_committed_rules_test_passes() -> None:
    tested = promtool("test", "rules", RULES_TEST)
    assert tested.returncode == 0, tested.stdout + tested.stderr
