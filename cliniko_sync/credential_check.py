"""Whether Cliniko accepts an organization's stored API key: one small request, its outcome recorded."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from cliniko_sync.errors import (
    EXIT_CONFIG,
    EXIT_CREDENTIALS_REJECTED,
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    ClinikoSyncError,
)
from cliniko_sync.orgs import SERVICE

if TYPE_CHECKING:
    from cliniko_sync.crypto import Credentials
    from cliniko_sync.db import DictConnection
    from cliniko_sync.orgs import Organization

# Under --all the exit code is the worst outcome, in this order: a local configuration problem first (the operator
# must act), then a key Cliniko rejected (the clinic must issue a new one), then an unexpected answer from Cliniko,
# then Cliniko unreachable (often transient).
SEVERITY = (EXIT_CONFIG, EXIT_CREDENTIALS_REJECTED, EXIT_FAILURE, EXIT_UNAVAILABLE)
# A check is interactive: fail within seconds rather than retrying for minutes as a sync would.
CHECK_CLIENT_OPTIONS: dict[str, Any] = {"max_attempts": 2, "max_wait": 2.0, "max_total_retry_seconds": 10.0}


@dataclass(frozen=True)
class CheckResult:
    organization_id: str
    ok: bool
    shard: str | None
    api_host: str | None
    key_hint: str | None
    patient_count: int | None
    latency_ms: int | None
    error: str | None
    exit_code: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


COLUMNS = tuple(CheckResult.__dataclass_fields__)


def worst_exit_code(codes: list[int]) -> int:
    """The exit code that stands for several checks: the most severe failure, 0 when every check passed."""
    failures = [code for code in codes if code != EXIT_OK]
    if not failures:
        return EXIT_OK
    return min(failures, key=lambda code: SEVERITY.index(code) if code in SEVERITY else len(SEVERITY))


def _call_cliniko(credentials: Credentials) -> tuple[int, int]:
    """One request for a single patient: the clinic's patient count and the round trip in milliseconds."""
    from cliniko_sync.cliniko.client import ClinikoClient
    from cliniko_sync.config import contact_email

    with ClinikoClient(
        credentials.api_key, contact_email=contact_email(), api_url=credentials.api_url, **CHECK_CLIENT_OPTIONS
    ) as client:
        started = time.monotonic()
        page = client.list_page("patients", per_page=1)
        latency_ms = round((time.monotonic() - started) * 1000)
    count = page.total_entries if page.total_entries is not None else len(page.records)
    return count, latency_ms


def check_credentials(conn: DictConnection, organization: Organization) -> CheckResult:
    """Decrypt the organization's key and ask Cliniko for one patient; record when and with what outcome.

    Every problem is reported in the result with its exit code.
    """
    from cliniko_sync.cliniko.client import base_url_for, key_hint
    from cliniko_sync.crypto import load_credentials
    from cliniko_sync.db import query

    org_id = organization.id
    shard = host = hint = None
    patient_count = latency_ms = None
    error: str | None = None
    exit_code = EXIT_OK
    try:
        credentials = load_credentials(conn, organization)
        shard, hint = credentials.shard, key_hint(credentials.api_key)
        host = urlsplit(base_url_for(credentials.api_key, credentials.api_url)).netloc
        patient_count, latency_ms = _call_cliniko(credentials)
    except ClinikoSyncError as exc:  # messages of the tool's errors are safe: at most the key's last 4 characters
        error, exit_code = str(exc), exc.exit_code
    with conn.transaction():
        conn.execute(query("credentials_checked"), {"org": org_id, "service": SERVICE, "error": error})
    return CheckResult(
        organization_id=org_id,
        ok=exit_code == EXIT_OK,
        shard=shard,
        api_host=host,
        key_hint=hint,
        patient_count=patient_count,
        latency_ms=latency_ms,
        error=error,
        exit_code=exit_code,
    )
